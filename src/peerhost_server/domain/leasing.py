"""A session's lease: acquire, renew, release, the owner's reset, status, sync requests, and
the fencing check every head move makes.

Calls that take ``wait`` have a fast path: with ``wait=False`` they run only if that needs
neither a lock someone holds nor a write (:meth:`LeaseStore.try_work`), and raise
:class:`~.protocols.WouldBlock` otherwise; the caller then runs them again with ``wait=True``
in a worker thread. A renewal that changes nothing persisted takes the fast path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..auth import OWNER, Identity
from ..leases import Lease, LeaseError, Queued, SessionLease
from .coordinator import Coordinator
from .errors import Fenced, LeaseRefused, NoLease

T = TypeVar("T")


def on_lease(coord: Coordinator, session: str, fn: Callable[[SessionLease, float], T], *,
             wait: bool) -> T:
    """``fn(state, now)`` on the session's lease state: the fast path unless ``wait``."""
    leases = coord.backends.leases
    if not wait:
        return leases.try_work(session, fn)
    with leases.work(session) as work:
        return fn(work.state, work.now)


def _view(lease: Lease | None, now: float) -> dict[str, Any] | None:
    return None if lease is None else lease.to_json(now)


def refused(exc: LeaseError, state: SessionLease, now: float) -> LeaseRefused:
    """The domain error for a refusal of the lease state machine, with the current lease."""
    return LeaseRefused(exc.code, str(exc), _view(state.current(now), now), exc.extra)


def check_fencing(state: SessionLease, now: float, who: Identity, fencing: int) -> None:
    """Refuse unless ``fencing`` is ``who``'s current, unexpired lease.

    Raises:
        Fenced.
    """
    try:
        state.check_fencing(now, fencing=fencing, member=who.member)
    except LeaseError as exc:
        raise Fenced(fencing, _view(state.current(now), now)) from exc


def acquire(coord: Coordinator, session: str, who: Identity, *, holder: str, ttl: float,
            standby: bool = False, address: str | None = None, game: Any = None
            ) -> dict[str, Any] | Queued:
    """Grant the lease (its view) or, with ``standby``, queue the caller. A grant always
    writes (the fencing token), so there is no fast path.

    Raises:
        LeaseRefused: ``lease_held`` or ``lease_reserved``.
    """
    with coord.backends.leases.work(session) as work:
        try:
            got = work.state.acquire(work.now, holder=holder, member=who.member, ttl=ttl,
                                     standby=standby, address=address, game=game)
        except LeaseError as exc:
            raise refused(exc, work.state, work.now) from None
        return got if isinstance(got, Queued) else got.to_json(work.now)


def renew(coord: Coordinator, session: str, who: Identity, fencing: int, *,
          address: str | None = None, game: Any = None, wait: bool = True
          ) -> tuple[dict[str, Any], bool]:
    """Extend the lease; return its view and whether a sync was requested. The fast path
    refuses a renewal that clears ``sync_requested`` or changes address or game (a write).

    Raises:
        LeaseRefused: ``lease_lost``.
    """
    def run(state: SessionLease, now: float) -> tuple[dict[str, Any], bool]:
        try:
            lease, requested = state.renew(now, fencing=fencing, member=who.member,
                                           address=address, game=game)
        except LeaseError as exc:
            raise refused(exc, state, now) from None
        return lease.to_json(now), requested

    return on_lease(coord, session, run, wait=wait)


def release(coord: Coordinator, session: str, who: Identity, fencing: int) -> None:
    """End the lease; the owner may end a member's (a host that vanished with it).

    Raises:
        LeaseRefused: ``lease_lost``.
    """
    with coord.backends.leases.work(session) as work:
        try:
            work.state.release(work.now, fencing=fencing, member=who.member,
                               force=who.role == OWNER)
        except LeaseError as exc:
            raise refused(exc, work.state, work.now) from None


def reset(coord: Coordinator, session: str, *, lease: bool = True, standby: bool = True
          ) -> tuple[str | None, list[str], int]:
    """The owner's override: end the lease, whoever holds it, and empty the standby queue.
    Returns the ended lease's holder, the dropped standby holders and the fencing counter."""
    with coord.backends.leases.work(session) as work:
        ended, dropped = work.state.reset(work.now, lease=lease, standby=standby)
        return None if ended is None else ended.holder, dropped, work.state.fencing


def status(coord: Coordinator, session: str, *, wait: bool = True) -> dict[str, Any]:
    """The whole lease state (:meth:`SessionLease.status`)."""
    return on_lease(coord, session, lambda state, now: state.status(now), wait=wait)


def current_fencing(coord: Coordinator, session: str, *, wait: bool = True) -> int | None:
    """The fencing token of the unexpired lease, if any."""
    def run(state: SessionLease, now: float) -> int | None:
        state.settle(now)
        lease = state.current(now)
        return None if lease is None else lease.fencing

    return on_lease(coord, session, run, wait=wait)


def request_sync(coord: Coordinator, session: str, *, wait: bool = True) -> str:
    """Ask the holder to push (it learns at its next renewal); return its name.

    Raises:
        NoLease.
    """
    def run(state: SessionLease, now: float) -> str:
        state.settle(now)
        lease = state.current(now)
        if lease is None:
            raise NoLease()
        lease.sync_requested = True
        return lease.holder

    return on_lease(coord, session, run, wait=wait)
