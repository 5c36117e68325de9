"""The lease of one session: who may run the world and move its head. Pure: no I/O.

A lease is granted for ``ttl`` seconds and kept by renewing it. Each grant carries a fencing
token, an integer that strictly increases per session and is never reused (the caller
persists :attr:`SessionLease.fencing` before answering). The head moves only for the current,
unexpired fencing token, so a holder that stalled past its ttl is fenced out even if it wakes
up believing it still holds the lease.

Times are on the coordinator's monotonic clock. They are not persisted: after a restart every
lease is treated as granted at the restart (:meth:`SessionLease.from_json`), so a holder keeps
its lease if it renews within ``ttl`` of the restart.

Standby: a caller refused because the lease is held may queue; when the lease is released or
expires, the first in the queue gets a window during which only it may acquire. A window that
passes unused goes to the next in the queue.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from peerhost_store.errors import PeerhostError


@dataclass
class Lease:
    """A granted lease.

    Attributes:
        holder: the name the caller gave (a host or player name).
        member: the session member whose token acquired it; only that member renews it.
        fencing: the grant's fencing token.
        ttl: seconds the lease lasts after a grant or renewal.
        expires_at: monotonic time of expiry.
        address: where friends connect to the game, when the holder says.
        game: free-form JSON the holder reports (version, port, ...).
        sync_requested: someone asked the holder to push; reported once in a renewal.
    """

    holder: str
    member: str
    fencing: int
    ttl: float
    expires_at: float
    address: str | None = None
    game: Any = None
    sync_requested: bool = False

    def to_json(self, now: float) -> dict[str, Any]:
        """The lease as answered to clients."""
        return {
            "holder": self.holder,
            "member": self.member,
            "fencing": self.fencing,
            "ttl": self.ttl,
            "expires_in": round(max(0.0, self.expires_at - now), 3),
            "address": self.address,
            "game": self.game,
        }


class LeaseError(PeerhostError):
    """A lease request that cannot be granted; carries the state that refused it.

    Attributes:
        code: ``lease_held``, ``lease_reserved`` or ``lease_lost``.
        lease: the current lease (JSON) or None.
    """

    def __init__(self, code: str, message: str, lease: dict[str, Any] | None,
                 extra: dict[str, Any] | None = None) -> None:
        self.code = code
        self.lease = lease
        self.extra = extra or {}
        super().__init__(message)


@dataclass
class Queued:
    """The caller was put in (or already was in) the standby queue."""

    position: int


@dataclass
class SessionLease:
    """One session's lease state: the grant, the last fencing token, the standby queue.

    Every mutating method takes ``now`` and first :meth:`settle`\\ s expiries, so the state is
    judged lazily, whenever someone looks.
    """

    window: float
    fencing: int = 0
    lease: Lease | None = None
    standby: list[tuple[str, str]] = field(default_factory=list)  # (holder, member)
    reserved_for: tuple[str, str] | None = None
    reserved_until: float = 0.0

    def copy(self) -> SessionLease:
        """A copy to work on, sharing nothing mutable with this state (``game`` values are JSON
        that is replaced, never changed in place)."""
        lease = self.lease
        if lease is not None:  # field by field: a tenth of the cost of dataclasses.replace
            lease = Lease(lease.holder, lease.member, lease.fencing, lease.ttl, lease.expires_at,
                          lease.address, lease.game, lease.sync_requested)
        return SessionLease(self.window, self.fencing, lease, list(self.standby),
                            self.reserved_for, self.reserved_until)

    # -- time passing --------------------------------------------------------------------

    def settle(self, now: float) -> bool:
        """Expire the lease and lapsed reservations as of ``now``; return whether anything changed."""
        changed = False
        if self.lease is not None and now >= self.lease.expires_at:
            ended = self.lease.expires_at
            self.lease = None
            self._reserve_next(ended)
            changed = True
        while self.reserved_for is not None and now >= self.reserved_until:
            self._reserve_next(self.reserved_until)
            changed = True
        return changed

    def _reserve_next(self, start: float) -> None:
        if self.standby:
            self.reserved_for = self.standby.pop(0)
            self.reserved_until = start + self.window
        else:
            self.reserved_for = None

    def current(self, now: float) -> Lease | None:
        """The unexpired lease, if any (does not settle)."""
        if self.lease is not None and now < self.lease.expires_at:
            return self.lease
        return None

    # -- operations ----------------------------------------------------------------------

    def acquire(
        self,
        now: float,
        *,
        holder: str,
        member: str,
        ttl: float,
        address: str | None = None,
        game: Any = None,
        standby: bool = False,
    ) -> Lease | Queued:
        """Grant the lease, or queue the caller with ``standby``.

        The same holder and member acquiring again while it holds the lease gets a new grant
        (a restarted host that lost its fencing token); its old token is fenced out.

        Raises:
            LeaseError: ``lease_held`` or ``lease_reserved`` (without ``standby``).
        """
        self.settle(now)
        me = (holder, member)
        blocker = self._blocker(me)
        if blocker is not None:
            if standby:
                return Queued(self._queue(me))
            raise blocker
        # Never below the wall clock in milliseconds: a coordinator restored from an old backup
        # still hands out tokens above every token it issued after the backup was taken (as
        # long as it granted fewer than 1,000 leases a second, far above any real rate).
        self.fencing = max(self.fencing + 1, int(time.time() * 1000))
        self.lease = Lease(holder, member, self.fencing, ttl, now + ttl, address, game)
        self.standby = [entry for entry in self.standby if entry[1] != member]
        self.reserved_for = None
        return self.lease

    def _queue(self, me: tuple[str, str]) -> int:
        """Queue ``me``; a member holds one entry, renamed in place by a later request (else
        one token could queue thousands of made-up holders, each a reserved window)."""
        for i, entry in enumerate(self.standby):
            if entry[1] == me[1]:
                self.standby[i] = me
                return i + 1
        self.standby.append(me)
        return len(self.standby)

    def _blocker(self, me: tuple[str, str]) -> LeaseError | None:
        lease = self.lease
        if lease is not None and (lease.holder, lease.member) != me:
            return LeaseError("lease_held", f"the lease is held by {lease.holder}", None)
        # A window is reserved for a member, under whichever holder name it comes back.
        if lease is None and self.reserved_for is not None and self.reserved_for[1] != me[1]:
            return LeaseError("lease_reserved",
                              f"the lease is reserved for standby {self.reserved_for[0]}", None,
                              {"reserved_for": self.reserved_for[0]})
        return None

    def renew(self, now: float, *, fencing: int, member: str, address: str | None = None,
              game: Any = None) -> tuple[Lease, bool]:
        """Extend the current lease by its ttl; return it and whether a sync was requested
        (the request is then cleared).

        Raises:
            LeaseError: ``lease_lost``: ``fencing`` is not the current grant, it expired, or
                another member holds it.
        """
        self.settle(now)
        lease = self._held(fencing, member)
        lease.expires_at = now + lease.ttl
        if address is not None:
            lease.address = address
        if game is not None:
            lease.game = game
        requested, lease.sync_requested = lease.sync_requested, False
        return lease, requested

    def release(self, now: float, *, fencing: int, member: str, force: bool = False) -> None:
        """End the current lease; the first standby gets its window.

        Raises:
            LeaseError: ``lease_lost`` (unless ``force``, the owner's override).
        """
        self.settle(now)
        if force and self.lease is not None and self.lease.fencing == fencing:
            self.lease = None
        else:
            self._held(fencing, member)
            self.lease = None
        self._reserve_next(now)

    def drop_member(self, now: float, member: str) -> None:
        """Forget everything ``member`` holds (its token was revoked): its lease ends, its
        standby entry goes, and a window reserved for it passes to the next in the queue."""
        self.settle(now)
        self.standby = [entry for entry in self.standby if entry[1] != member]
        if self.lease is not None and self.lease.member == member:
            self.lease = None
            self._reserve_next(now)
        elif self.reserved_for is not None and self.reserved_for[1] == member:
            self._reserve_next(now)

    def reset(self, now: float, *, lease: bool = True, standby: bool = True
              ) -> tuple[Lease | None, list[str]]:
        """The owner's override: end the lease (``lease``) and empty the standby queue and
        its reservation (``standby``). Returns the ended lease and the dropped holders.

        With ``lease`` alone, the first standby gets its window as after a release.
        """
        self.settle(now)
        ended = self.lease if lease else None
        dropped: list[str] = []
        if standby:
            reserved = [] if self.reserved_for is None else [self.reserved_for[0]]
            dropped = reserved + [holder for holder, _ in self.standby]
            self.standby, self.reserved_for = [], None
        if ended is not None:
            self.lease = None
            self._reserve_next(now)
        return ended, dropped

    def check_fencing(self, now: float, *, fencing: int, member: str) -> Lease:
        """The lease, if ``fencing`` is its token and ``member`` holds it, unexpired.

        Raises:
            LeaseError: ``lease_lost``.
        """
        self.settle(now)
        return self._held(fencing, member)

    def _held(self, fencing: int, member: str) -> Lease:
        lease = self.lease
        if lease is None or lease.fencing != fencing or lease.member != member:
            raise LeaseError("lease_lost", f"fencing token {fencing} is not the current lease",
                             None)
        return lease

    # -- persistence ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """What survives a restart (times excepted, see the module docstring)."""
        lease = self.lease
        return {
            "fencing": self.fencing,
            "lease": None if lease is None else {
                "holder": lease.holder, "member": lease.member, "fencing": lease.fencing,
                "ttl": lease.ttl, "address": lease.address, "game": lease.game,
                "sync_requested": lease.sync_requested,
            },
            "standby": [list(x) for x in self.standby],
            "reserved_for": None if self.reserved_for is None else list(self.reserved_for),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], now: float, window: float) -> SessionLease:
        """Load persisted state; a lease expires ``ttl`` after ``now`` (the restart)."""
        state = cls(window=window, fencing=int(data["fencing"]))
        raw = data.get("lease")
        if raw is not None:
            state.lease = Lease(raw["holder"], raw["member"], int(raw["fencing"]),
                                float(raw["ttl"]), now + float(raw["ttl"]), raw.get("address"),
                                raw.get("game"), bool(raw.get("sync_requested")))
        for holder, member in data.get("standby", []):  # saved before one entry per member
            if all(m != member for _, m in state.standby):
                state.standby.append((holder, member))
        reserved = data.get("reserved_for")
        if reserved is not None:
            state.reserved_for = (reserved[0], reserved[1])
            state.reserved_until = now + window
        return state

    def status(self, now: float) -> dict[str, Any]:
        """The whole state as answered by ``GET .../lease`` (settled first)."""
        self.settle(now)
        lease = self.current(now)
        return {
            "held": lease is not None,
            "lease": None if lease is None else lease.to_json(now),
            "fencing": self.fencing,
            "standby": [holder for holder, _ in self.standby],
            "reserved_for": None if self.reserved_for is None else self.reserved_for[0],
            "reserved_for_seconds": (round(max(0.0, self.reserved_until - now), 3)
                                     if self.reserved_for is not None else None),
        }
