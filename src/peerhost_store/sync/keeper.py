"""The lease, renewed in the background while the host plays.

Renewals go out about every third of the ttl. When the coordinator does not answer, the
keeper retries every few seconds until its own deadline: the lease's expiry as measured from
when the last successful renewal was *sent*, so the keeper always believes the lease ends no
later than the coordinator does. Past that deadline, or when the coordinator says the fencing
token is no longer current, the lease is lost and :attr:`LeaseKeeper.lost` says why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from .client import CONTROL_SECONDS, CoordinatorClient, CoordinatorError, Lease, LeaseLost

__all__ = ["RETRY_SECONDS", "Connect", "LeaseKeeper"]

Connect = Callable[[], AbstractContextManager[CoordinatorClient]]

#: Retry pause while the coordinator is unreachable (bounded by the deadline).
RETRY_SECONDS = 2.0


class LeaseKeeper:
    """Renews ``lease`` from a daemon thread until :meth:`stop`.

    Args:
        connect: opens a client of its own (httpx clients are not shared across threads here).
        lease: the granted lease.
        sent_at: when the request that granted it was sent (monotonic).
    """

    def __init__(self, connect: Connect, lease: Lease, sent_at: float, *,
                 clock: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] = lambda _: None) -> None:
        self.connect = connect
        self.fencing = lease.fencing
        self.ttl = lease.ttl
        self.clock = clock
        self.log = log
        self.deadline = sent_at + lease.expires_in
        self.lost: str | None = None
        self.sync_requested = threading.Event()
        self.changed = threading.Event()  # set when lost or a sync was requested
        self.renewals = 0
        self._publish: dict[str, Any] = {}
        self._stop = threading.Event()
        self._poke = threading.Event()  # wakes the thread: publish() or stop()
        self._wake = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def publish(self, address: str | None, game: Any) -> None:
        """Put ``address`` and ``game`` on the lease with the next renewal, which is now."""
        with self._lock:
            self._publish = {"address": address, "game": game}
        self._wake = True
        self._poke.set()

    def seconds_left(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _lose(self, why: str) -> None:
        self.lost = why
        self.changed.set()

    def _run(self) -> None:
        with self.connect() as client:
            due = self.clock() + self.ttl / 3
            while not self._stop.is_set():
                now = self.clock()
                if now >= self.deadline:
                    self._lose(f"the lease expired at the coordinator while it could not be "
                               f"reached (no renewal for {self.ttl:g} s)")
                    return
                if now < due and not self._wake:
                    self._poke.wait(min(due, self.deadline) - now)
                    self._poke.clear()
                    continue
                self._wake = False
                with self._lock:
                    extra = dict(self._publish)
                sent = self.clock()
                # Never wait for an answer past the deadline: a coordinator that accepts and
                # never answers would otherwise hold the keeper past the lease's end.
                wait = max(1.0, min(CONTROL_SECONDS, self.deadline - sent))
                try:
                    renewal = client.renew(self.fencing, seconds=wait, **extra)
                except LeaseLost as exc:
                    self._lose(f"the coordinator says lease {self.fencing} is no longer current "
                               f"({exc.message}): someone else holds the session now")
                    return
                except CoordinatorError as exc:
                    # Unreachable, rate limited, or a coordinator error: try again soon; the
                    # deadline decides when to give up.
                    self.log(f"lease renewal failed: {exc}; retrying")
                    due = self.clock() + min(RETRY_SECONDS, self.ttl / 6)
                    continue
                self.renewals += 1
                self.deadline = sent + renewal.lease.expires_in
                if renewal.sync_requested:
                    self.sync_requested.set()
                    self.changed.set()
                due = sent + self.ttl / 3
