"""The session head (compare-and-swap, fenced), rollback and the head log.

A head moves only when (1) the caller's fencing token is the current, unexpired lease, (2) the
head still is what the caller expects, (3) the new snapshot is complete in the session store,
and its tree one an honest client would write (names, sizes, bounds on what it expands to:
:mod:`peerhost_store.bounds`), and (4) descends from the old head. (1) and (2) are checked again
in the transaction that moves it (:meth:`LeaseWork.move_head`). Completeness marks, which carry
each node's summary, make (3) cost what changed.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from peerhost_store.area import Area, GraftRefused
from peerhost_store.bounds import Summary, TreeRefused, check_snapshot
from peerhost_store.errors import DecodeError
from peerhost_store.graph import is_ancestor
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import Snapshot, decode, encode_snapshot
from peerhost_store.worldfs import UnsafePath

from ..auth import OWNER, Identity
from . import leasing, sessions
from .coordinator import Coordinator
from .errors import (
    AreaRefused,
    Forbidden,
    HeadMoved,
    Incomplete,
    MalformedTree,
    NoLease,
    NoSnapshot,
    NotASnapshot,
    NotFastForward,
    NothingToRollBack,
    RefusedTree,
)
from .objects import write_objects


def _hex(value: ObjectId | None) -> str | None:
    return None if value is None else value.hex()


@dataclass(frozen=True)
class HeadInfo:
    """The head, the current lease's fencing token and where gc cut the history."""

    head: ObjectId | None
    fencing: int | None
    shallow: set[ObjectId]


def head_info(coord: Coordinator, session: str, *, wait: bool = True) -> HeadInfo:
    """The session's head (see :mod:`.leasing` for ``wait``)."""
    fencing = leasing.current_fencing(coord, session, wait=wait)
    return HeadInfo(coord.backends.leases.head(session), fencing,
                    coord.backends.retention.shallow(session))


def commit_head(coord: Coordinator, session: str, who: Identity, old: ObjectId | None,
                new: ObjectId, *, fencing: int | None, verified: dict[ObjectId, Summary],
                entry: dict[str, Any]) -> None:
    """Move the head from ``old`` to ``new``, append ``entry`` to the log and mark ``verified``
    complete, in one transaction with the fencing check (when ``fencing`` is given), so no
    grant or release slips in between.

    Raises:
        Fenced, HeadMoved.
    """
    with coord.backends.leases.work(session) as work:
        if fencing is not None:
            leasing.check_fencing(work.state, work.now, who, fencing)
        work.move_head(old, new, entry=entry, marks=verified)


def set_head(coord: Coordinator, session: str, who: Identity, old: ObjectId | None,
             new: ObjectId, fencing: int) -> int:
    """Move the head from ``old`` to ``new``; return how many objects were checked.

    Raises:
        Fenced, HeadMoved, Incomplete, MalformedTree, RefusedTree, NotFastForward.
    """
    leases = coord.backends.leases
    with leases.head_lock(session):
        with leases.work(session) as work:  # early: the walk is the costly part
            leasing.check_fencing(work.state, work.now, who, fencing)
        current = leases.head(session)
        if current != old:
            raise HeadMoved(current)
        if current == new:
            return 0
        verified, checked, _ = verify(coord, session, new)
        if old is not None and not is_ancestor(coord.store(session), old, new,
                                               shallow=coord.backends.retention.shallow(session)):
            raise NotFastForward(old, new)
        entry = {"time": time.time(), "member": who.member, "kind": "push", "old": _hex(old),
                 "new": new.hex(), "fencing": fencing}
        commit_head(coord, session, who, old, new, fencing=fencing, verified=verified,
                    entry=entry)
        return checked


def verify(coord: Coordinator, session: str, root: ObjectId
           ) -> tuple[dict[ObjectId, Summary], int, Summary]:
    """Check that snapshot ``root`` is complete and its tree is one an honest client would
    write (:func:`peerhost_store.bounds.check_snapshot`), reading only what is not marked.
    Returns the summaries to mark, how many objects were checked and the root's summary.

    Raises:
        Incomplete, MalformedTree, RefusedTree.
    """
    try:
        check = check_snapshot(coord.store(session), lambda ids: coord.summaries(session, ids),
                               root, coord.limits.tree,
                               shallow=coord.backends.retention.shallow(session))
    except (TreeRefused, UnsafePath) as exc:
        raise RefusedTree(exc) from None
    except DecodeError as exc:
        raise MalformedTree(str(exc)) from None
    if check.missing is not None or check.summary is None:
        raise Incomplete(check.missing or root, check.where)
    return check.summaries, check.checked, check.summary


def rollback(coord: Coordinator, session: str, who: Identity, target: ObjectId,
             fencing: int | None, area: Area | None = None) -> tuple[ObjectId, ObjectId | None]:
    """Put a new snapshot holding ``target``'s tree on top of the head; return it and the
    old head. With ``area``, its tree is the head's except that area, which comes from
    ``target`` (tree surgery: the cost of the area), and the lease holder is asked to sync
    (it must take the change before its server saves over it). Nothing is deleted. The owner
    may do it without a lease (recovery); a member only where the owner allows the lease holder
    (:class:`SessionSettings` ``rollback``), with its current fencing token.

    Raises:
        Forbidden, Fenced, HeadMoved, NoSnapshot, NotASnapshot, Incomplete, RefusedTree,
        AreaRefused, NothingToRollBack.
    """
    if who.role != OWNER:
        check_rollback_allowed(coord, session, fencing)
    store = coord.store(session)
    leases = coord.backends.leases
    with leases.head_lock(session):
        if fencing is not None:
            with leases.work(session) as work:
                leasing.check_fencing(work.state, work.now, who, fencing)
        if target in set(store.missing([target])):
            raise NoSnapshot(target)
        snap = decode(store.get_raw(target))
        if not isinstance(snap, Snapshot):
            raise NotASnapshot(target)
        # Its tree must be whole, and within this session's bounds, to serve as the head.
        _, _, summary = verify(coord, session, target)
        current = leases.head(session)
        root, nodes = snap.root, list[tuple[ObjectId, bytes]]()
        if area is not None:
            root, nodes = _graft_area(coord, session, current, snap.root, area, target)
        what = "" if area is None else f" of {area.describe()}"
        data = encode_snapshot(Snapshot(
            root=root, parents=(current,) if current is not None else (),
            time=int(time.time()), author=who.member, host="coordinator",
            message=f"rollback{what} to {target.hex()[:12]}", summary={},
        ))
        oid = hash_bytes(data)
        write_objects(coord, session, hashed=[*nodes, (oid, data)], quota=False)  # recovery: no quota
        # Complete: its root is (verified above) and so is its parent, the current head; an
        # area's new nodes are checked now (the rest is marked).
        marks = {oid: summary} if area is None else verify(coord, session, oid)[0]
        entry = {"time": time.time(), "member": who.member, "kind": "rollback",
                 "old": _hex(current), "new": oid.hex(), "target": target.hex(),
                 "fencing": fencing, **({} if area is None else {"area": area.to_json()})}
        commit_head(coord, session, who, current, oid, fencing=fencing, verified=marks,
                    entry=entry)
    if area is not None:
        with contextlib.suppress(NoLease):  # nobody hosts: nobody to tell
            leasing.request_sync(coord, session)
    return oid, current


def _graft_area(coord: Coordinator, session: str, head: ObjectId | None, source: ObjectId,
                area: Area, target: ObjectId) -> tuple[ObjectId, list[tuple[ObjectId, bytes]]]:
    """The head's tree with ``area`` from tree ``source``, and the new nodes it needs."""
    store = coord.store(session)
    current = decode(store.get_raw(head)) if head is not None else None
    if not isinstance(current, Snapshot):
        raise NothingToRollBack(area.describe(), target)  # no head: nothing to keep around it
    made: dict[ObjectId, bytes] = {}

    def add(data: bytes) -> ObjectId:
        oid = hash_bytes(data)
        made.setdefault(oid, data)
        return oid

    try:
        root = area.graft(store, add, current.root, source)
    except GraftRefused as exc:
        raise AreaRefused(exc) from None
    except DecodeError as exc:
        raise MalformedTree(str(exc)) from None
    if root == current.root:
        raise NothingToRollBack(area.describe(), target)
    return root, list(made.items())


def check_rollback_allowed(coord: Coordinator, session: str, fencing: int | None) -> None:
    """Refuse a member's rollback unless the session lets the lease holder roll back and
    the member gave a fencing token (whose lease :func:`rollback` then checks).

    Raises:
        Forbidden.
    """
    allowed = sessions.settings(coord, session).rollback == "lease"
    if not allowed:
        raise Forbidden(f"only the owner of session {session} may roll it back (the owner "
                        "can let the lease holder do it: phs session settings "
                        f"{session} --rollback lease)")
    if fencing is None:
        raise Forbidden(f"rolling back session {session} needs the owner's token or the "
                        "lease: take it first (phs lock acquire)")


def log(coord: Coordinator, session: str, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` head moves, oldest first."""
    return coord.backends.log.entries(session, limit)
