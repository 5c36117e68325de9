"""The session head (compare-and-swap, fenced), rollback and the head log.

A head moves only when (1) the caller's fencing token is the current, unexpired lease, (2) the
head still is what the caller expects, (3) the new snapshot is complete in the session store,
and its tree one an honest client would write (names, sizes, bounds on what it expands to:
:mod:`peerhost_store.bounds`), and (4) descends from the old head. (1) and (2) are checked again
in the transaction that moves it. Completeness marks, which carry each node's summary, make (3)
cost what changed.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from peerhost_store.bounds import Summary, TreeRefused, check_snapshot
from peerhost_store.errors import DecodeError
from peerhost_store.graph import is_ancestor
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import Snapshot, decode, encode_snapshot
from peerhost_store.sync.protocol import (
    ProtocolError,
    parse_hex_id,
    parse_optional_hex_id,
)
from peerhost_store.worldfs import UnsafePath

from .auth import MEMBER, OWNER, Identity
from .errors import ApiError
from .leases import SessionLease
from .state import Coordinator, head_moved
from .storage import write_objects
from .web import authorize, coordinator, field, is_int, on_lease, read_json, session_name

PLAYERS = {MEMBER, OWNER}
MAX_LOG = 1000


def _hex(value: ObjectId | None) -> str | None:
    return None if value is None else value.hex()


async def get_head(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    coord = coordinator(request)

    def run(state: SessionLease, now: float) -> int | None:
        state.settle(now)
        lease = state.current(now)
        return None if lease is None else lease.fencing

    fencing = await on_lease(request, session, run)
    shallow = sorted(oid.hex() for oid in coord.shallow(session))
    return JSONResponse({"head": _hex(coord.head(session)), "fencing": fencing,
                         "shallow": shallow})


def _id(body: dict[str, Any], name: str, optional: bool = False) -> ObjectId | None:
    try:
        if optional:
            return parse_optional_hex_id(body.get(name), f"'{name}'")
        return parse_hex_id(body.get(name), f"'{name}'")
    except ProtocolError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


async def set_head(request: Request) -> JSONResponse:
    session = session_name(request)
    who = await authorize(request, PLAYERS, session)
    body = await read_json(request)
    if "old" not in body:
        raise ApiError(400, "bad_request", "'old' is required (null for a session without head)")
    old, new = _id(body, "old", optional=True), _id(body, "new")
    assert new is not None
    fencing = field(body, "fencing", is_int, "an integer")
    checked = await run_in_threadpool(_set_head, coordinator(request), session, who, old, new, fencing)
    return JSONResponse({"head": new.hex(), "old": _hex(old), "checked": checked})


def _set_head(coord: Coordinator, session: str, who: Identity, old: ObjectId | None,
              new: ObjectId, fencing: int) -> int:
    with coord.head_lock(session):
        coord.check_fencing(session, who, fencing)  # early: the walk is the costly part
        current = coord.head(session)
        if current != old:
            raise head_moved(current)
        if current == new:
            return 0
        verified, checked, _ = _verify(coord, session, new)
        if old is not None and not is_ancestor(coord.store(session), old, new,
                                               shallow=coord.shallow(session)):
            raise ApiError(409, "not_fast_forward",
                           f"{new.hex()[:12]} does not descend from the head {old.hex()[:12]}; "
                           "roll back or merge first", {"head": old.hex()})
        entry = {"time": time.time(), "member": who.member, "kind": "push", "old": _hex(old),
                 "new": new.hex(), "fencing": fencing}
        coord.commit_head(session, who, old, new, fencing=fencing, verified=verified, entry=entry)
        return checked


def _verify(coord: Coordinator, session: str, root: ObjectId
            ) -> tuple[dict[ObjectId, Summary], int, Summary]:
    """Check that snapshot ``root`` is complete and its tree is one an honest client would
    write (:func:`peerhost_store.bounds.check_snapshot`), reading only what is not marked."""
    store = coord.store(session)
    try:
        check = check_snapshot(store, lambda ids: coord.summaries(session, ids), root,
                               coord.limits.tree, shallow=coord.shallow(session))
    except (TreeRefused, UnsafePath) as exc:
        raise tree_refused(exc) from None
    except DecodeError as exc:
        raise ApiError(400, "malformed_tree", str(exc)) from None
    if check.missing is not None or check.summary is None:
        missing = (check.missing or root).hex()
        raise ApiError(400, "incomplete", f"object {missing} ({check.where}) is not "
                       "stored; upload it first", {"missing": missing, "where": check.where})
    return check.summaries, check.checked, check.summary


def tree_refused(exc: TreeRefused | UnsafePath) -> ApiError:
    """The 422 answer for a tree an honest client would refuse to write."""
    if isinstance(exc, UnsafePath):
        return ApiError(422, "tree_refused", str(exc), {"reason": "name", "path": exc.path})
    details: dict[str, Any] = {"reason": exc.what, "path": exc.path}
    if exc.limit is not None:
        details.update(value=exc.value, limit=exc.limit)
    return ApiError(422, "tree_refused", str(exc), details)


async def rollback(request: Request) -> JSONResponse:
    session = session_name(request)
    who = await authorize(request, PLAYERS, session)
    body = await read_json(request)
    target = _id(body, "target")
    assert target is not None
    fencing = field(body, "fencing", is_int, "an integer", None)
    if fencing is None and who.role != OWNER:
        raise ApiError(403, "forbidden", "rollback needs the owner token or the lease's fencing token")
    coord = coordinator(request)
    oid, old = await run_in_threadpool(_rollback, coord, session, who, target, fencing)
    return JSONResponse({"head": oid.hex(), "old": _hex(old), "target": target.hex()})


def _rollback(coord: Coordinator, session: str, who: Identity, target: ObjectId,
              fencing: int | None) -> tuple[ObjectId, ObjectId | None]:
    store = coord.store(session)
    with coord.head_lock(session):
        if fencing is not None:
            coord.check_fencing(session, who, fencing)
        if target in set(store.iter_missing([target])):
            raise ApiError(404, "no_snapshot", f"snapshot {target.hex()} is not stored here")
        snap = decode(store.get_raw(target))
        if not isinstance(snap, Snapshot):
            raise ApiError(400, "not_a_snapshot", f"object {target.hex()} is not a snapshot")
        # Its tree must be whole, and within this session's bounds, to serve as the head.
        _, _, summary = _verify(coord, session, target)
        current = coord.head(session)
        # Nothing is deleted: the new snapshot sits on top of the head, holding the old tree.
        data = encode_snapshot(Snapshot(
            root=snap.root, parents=(current,) if current is not None else (),
            time=int(time.time()), author=who.member, host="coordinator",
            message=f"rollback to {target.hex()[:12]}", summary={},
        ))
        oid = hash_bytes(data)
        write_objects(coord, session, hashed=[(oid, data)], quota=False)  # recovery: no quota
        entry = {"time": time.time(), "member": who.member, "kind": "rollback",
                 "old": _hex(current), "new": oid.hex(), "target": target.hex(), "fencing": fencing}
        # Complete: its root is (verified above) and so is its parent, the current head.
        coord.commit_head(session, who, current, oid, fencing=fencing, verified={oid: summary},
                          entry=entry)
        return oid, current


async def get_log(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LOG:
        raise ApiError(400, "bad_request", f"'limit' must be an integer in [1, {MAX_LOG}]")
    entries = await run_in_threadpool(coordinator(request).log, session, int(raw))
    return JSONResponse({"entries": entries})


routes = [
    Route("/v1/sessions/{session}/head", get_head, methods=["GET"]),
    Route("/v1/sessions/{session}/head", set_head, methods=["POST"]),
    Route("/v1/sessions/{session}/rollback", rollback, methods=["POST"]),
    Route("/v1/sessions/{session}/log", get_log, methods=["GET"]),
]
