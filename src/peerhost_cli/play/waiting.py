"""A snapshot the host owes but cannot take yet: without RCON the world files must be quiet
first, and while people play they may never be.

The host shows it in its status panel and publishes it on the lease (``game.sync_wait``), so
that whoever asked for the sync sees why nothing comes (``phs status``, ``phs sync``,
``phs join``)::

    sync requested 40 s ago, waiting for quiet files

``since`` is the host's wall clock: the reader compares it with its own, so a clock that is
off shifts the figure, nothing else. The lease's ``game`` is whatever a member sent: it is
read back strictly (:meth:`SyncWait.from_lease`), never trusted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from peerhost_store.sync.client import Lease

from ..common import ago

#: Why a snapshot is owed.
REASONS = ("sync requested", "snapshot due")
#: The key on the lease's ``game`` JSON.
GAME_KEY = "sync_wait"


@dataclass(frozen=True)
class SyncWait:
    """A snapshot owed since ``since`` (wall clock) and not taken: the files are not quiet.

    Attributes:
        reason: one of :data:`REASONS`.
        since: when the host first had to wait (seconds since the epoch).
        overdue: waited past ``max_quiet_wait`` with no consistent save to fall back on.
    """

    reason: str
    since: float
    overdue: bool = False

    def describe(self, now: float | None = None) -> str:
        text = f"{self.reason} {ago(self.since, now)}, waiting for quiet files"
        if self.overdue:
            text += " (the server has no RCON and no console save to pause it)"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "since": self.since, "overdue": self.overdue}

    @classmethod
    def from_lease(cls, lease: Lease | None) -> SyncWait | None:
        """The wait published on ``lease``; None when there is none or it is malformed."""
        game = lease.game if lease is not None else None
        raw = game.get(GAME_KEY) if isinstance(game, dict) else None
        if not isinstance(raw, dict):
            return None
        reason, since, overdue = raw.get("reason"), raw.get("since"), raw.get("overdue", False)
        if reason not in REASONS or not isinstance(overdue, bool):
            return None
        if isinstance(since, bool) or not isinstance(since, (int, float)) or not math.isfinite(since):
            return None
        return cls(str(reason), float(since), overdue)
