"""Working under a session's lease: pushing with it, taking it for a world, ending what a
killed push left behind.

A push needs the current fencing token. A caller that holds the lease (``phs lock acquire``
remembered it, or a host keeps it) passes its token or its :class:`~.keeper.LeaseKeeper`;
otherwise :func:`push_with_lease` takes a short lease of its own when nobody holds one and
releases it afterwards. Either way one keeper renews the lease while the push runs, so a long
push never outlives it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PeerhostError
from ..repo import Repository
from .client import CoordinatorClient, CoordinatorError, Lease, LeaseHeld, LeaseLost
from .keeper import LeaseKeeper
from .remotes import Remote, load_lease, save_lease
from .reports import PushReport

if TYPE_CHECKING:
    from .transfer import Progress

__all__ = [
    "ACQUIRING",
    "PUSH_TTL",
    "HeldElsewhere",
    "PushLease",
    "acquire_for_world",
    "end_killed_push",
    "lease_held",
    "lease_lost",
    "push_with_lease",
    "remembered_fencing",
]

#: The lease a push takes when nobody holds one; renewed while the push runs.
PUSH_TTL = 120.0
#: The fencing token remembered while a push's own short lease is being asked for (real
#: tokens are at least the wall clock in milliseconds).
ACQUIRING = 0


@dataclasses.dataclass(frozen=True)
class PushLease:
    """The lease a push ran under.

    Attributes:
        fencing: its fencing token.
        holder: the holder name on it.
        temporary: the push took it for itself and released it.
        sync_requested: someone asked for a sync while the push ran (the push may not hold
            what they wait for); always False when the caller's keeper renewed the lease (the
            caller reads its own keeper).
    """

    fencing: int
    holder: str
    temporary: bool
    sync_requested: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def lease_held(lease: Lease) -> LeaseHeld:
    """The one-line refusal when someone else runs the world."""
    return LeaseHeld(
        "lease_held",
        f"the lease is held by {lease.holder} (member {lease.member}) for {lease.expires_in:.0f} s "
        "more; pull instead, ask them to push (phs sync), or pass --fencing if it is yours",
        409, {"lease": dataclasses.asdict(lease)})


def lease_lost(client: CoordinatorClient, exc: LeaseLost) -> LeaseLost:
    """``exc`` with who holds the session now (a host that crashed and came back)."""
    with suppress(CoordinatorError):
        current = client.lease_status().lease
        now = (f"{current.holder} (member {current.member}) holds it now" if current
               else "nobody holds it now")
        return LeaseLost(exc.code, f"{exc.message}: the lease this world used has ended and "
                         f"{now}; nothing was pushed, your snapshots stay local (phs pull "
                         "shows how the session moved on)", exc.status, exc.details)
    return exc


@contextlib.contextmanager
def _kept(client: CoordinatorClient, lease: Lease, sent: float) -> Iterator[LeaseKeeper]:
    # The keeper renews over the push's own client: httpx clients serve several threads (the
    # transfer's uploads run on workers too).
    keeper = LeaseKeeper(lambda: contextlib.nullcontext(client), lease, sent)
    keeper.start()
    try:
        yield keeper
    finally:
        keeper.stop()


def push_with_lease(repo: Repository, client: CoordinatorClient, *, holder: str,
                    fencing: int | None = None, keeper: LeaseKeeper | None = None,
                    progress: Progress | None = None,
                    remember: Callable[[Lease | None], None] | None = None,
                    ) -> tuple[PushReport, PushLease]:
    """Push the repository's head under a lease.

    With ``keeper`` (a host's), its lease is used and it alone renews it. With ``fencing``
    (a lease remembered by ``phs lock acquire``) the lease is renewed first, so a lost one is
    refused before anything is sent, and kept renewed while the push runs. With neither, a
    short lease is taken when nobody holds one, renewed, and released afterwards;
    ``remember`` is told it once taken, and None once released.

    Raises:
        LeaseHeld: someone else holds (or has reserved) the lease.
        LeaseLost: the lease is not the current one of this member.
    """
    from .transfer import push  # not for a push with nothing to send (see .reports)

    if keeper is not None:
        report = push(repo, client, fencing=keeper.fencing, progress=progress)
        return report, PushLease(keeper.fencing, holder, temporary=False)
    if fencing is not None:
        sent = time.monotonic()
        renewal = client.renew(fencing)
        with _kept(client, renewal.lease, sent) as own:
            report = push(repo, client, fencing=fencing, progress=progress)
        asked = renewal.sync_requested or own.sync_requested.is_set()
        return report, PushLease(fencing, renewal.lease.holder, False, asked)
    # Look first: acquiring while our own long lease is held would re-grant it and fence out
    # the host process that holds it.
    current = client.lease_status().lease
    if current is not None:
        raise lease_held(current)
    sent = time.monotonic()
    lease = client.acquire(holder, PUSH_TTL)
    if remember is not None:
        remember(lease)
    try:
        with _kept(client, lease, sent) as own:
            report = push(repo, client, fencing=lease.fencing, progress=progress)
    finally:
        with suppress(CoordinatorError):  # it lapses after PUSH_TTL anyway
            client.release(lease.fencing)
            if remember is not None:
                remember(None)
    return report, PushLease(lease.fencing, holder, True, own.sync_requested.is_set())


def remembered_fencing(base: Path, remote: Remote) -> int | None:
    """The fencing token of the lease ``phs lock acquire`` remembered for ``remote`` in the
    world whose ``.peerhost`` is ``base`` (not a push's own short lease); None without one."""
    remembered = load_lease(base, remote)
    if remembered is None or remembered.get("temporary"):
        return None
    return int(remembered["fencing"])


def end_killed_push(client: CoordinatorClient, base: Path, remote: Remote) -> None:
    """A push killed mid-way left its short lease held (and remembered in ``base``): end it,
    or a re-run would be refused as someone else's until the lease lapses."""
    remembered = load_lease(base, remote)
    if remembered is None or not remembered.get("temporary"):
        return
    fencing = int(remembered["fencing"])
    if fencing == ACQUIRING:
        # Killed between asking for the lease and remembering it: if our holder name holds
        # a lease now, it is that one (a push of this world by another phs of ours would be
        # refused too: its lease would end and it would stop, fenced, moving nothing).
        current = client.lease_status().lease
        fencing = current.fencing if current and current.holder == remembered["holder"] else 0
    if fencing:
        with suppress(LeaseLost):
            client.release(fencing)
    save_lease(base, remote, None)


class HeldElsewhere(PeerhostError):
    """Taking the lease for a world would fence out a lease its holder name holds elsewhere.

    Attributes:
        lease: that lease.
    """

    def __init__(self, remote: Remote, lease: Lease) -> None:
        self.lease = lease
        super().__init__(
            f"{lease.holder} (member {lease.member}) already holds the lease of session "
            f"{remote.session} elsewhere (another world, or a running phs host), "
            f"{lease.expires_in:.0f} s left; taking it would fence that one out: pass --force "
            f"to take it anyway")


def acquire_for_world(client: CoordinatorClient, base: Path, remote: Remote, holder: str,
                      ttl: float, *, address: str | None = None, standby: bool = False,
                      force: bool = False) -> Lease | int:
    """Take the lease (or, with ``standby``, queue for it: the position) for the world whose
    ``.peerhost`` is ``base``, and remember a granted one there.

    The coordinator grants the lease again to the holder name that holds it (a host that
    restarted and lost its token), fencing out the old grant; so unless ``force`` this
    refuses when ``holder`` holds the lease and this world did not take it with a plain
    acquire: that is another world's lease, or a running ``phs host`` (both default to
    ``user@host``). A standby request is granted outright in that case too, so it is refused
    alike.

    Raises:
        HeldElsewhere: see above.
        LeaseHeld: someone else holds or has reserved it (without ``standby``).
    """
    if not force:
        current = client.lease_status().lease
        remembered = load_lease(base, remote)
        # Ours only if this world took it with phs lock acquire: a lease remembered by a
        # running phs host or by a push in progress belongs to that process.
        ours = (current is not None and remembered is not None
                and remembered["fencing"] == current.fencing
                and not remembered.get("temporary") and not remembered.get("host"))
        if current is not None and current.holder == holder and not ours:
            raise HeldElsewhere(remote, current)
    got = (client.standby(holder, ttl, address=address) if standby
           else client.acquire(holder, ttl, address=address))
    if isinstance(got, Lease):
        save_lease(base, remote, {"fencing": got.fencing, "holder": got.holder, "ttl": got.ttl})
    return got
