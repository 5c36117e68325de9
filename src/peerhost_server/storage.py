"""What a session may store, and what the coordinator deletes; the retention and gc routes.

* **Room.** Every write of objects is refused with 507 before it starts when it would take
  the session past its quota (``quota_exceeded``: LMDB pages of live data, so what gc frees
  counts) or the disk below ``min_free_bytes`` (``disk_full``). The reserve keeps the
  coordinator's own small writes (leases, heads) working on a nearly full disk, and reads
  never need room.
* **The upload log.** Each write also records, in the same transaction, the time and the ids
  it stored (``upload/<seq>`` in the session store's meta). gc deletes an object no retained
  snapshot reaches only once no upload newer than ``gc_grace`` names it, so the objects of a
  push under way (uploaded, head not yet moved) survive.
* **Retention.** The owner may set a policy like restic's ``forget``
  (:mod:`peerhost_store.retention`); gc keeps the head and what the policy selects from the
  history, deletes everything else, and records the kept snapshots whose parents it dropped
  as *shallow*: walks stop there, and ``GET .../head`` tells pulls where history was cut.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, cast

import msgpack
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from peerhost_store.errors import ObjectMissing
from peerhost_store.graph import walk
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import Snapshot, decode
from peerhost_store.retention import RetentionPolicy, select_snapshots
from peerhost_store.store import LmdbStore, Update

from .auth import MEMBER, OWNER
from .errors import ApiError
from .state import Coordinator
from .web import authorize, coordinator, read_json, session_name

PLAYERS = {MEMBER, OWNER}
_log = logging.getLogger("peerhost_server.gc")

NEXT, FIRST = "upload-next", "upload-first"


def write_objects(coord: Coordinator, session: str, objects: Sequence[bytes | memoryview] = (),
                  hashed: Sequence[tuple[ObjectId, bytes]] = (), *, quota: bool = True) -> int:
    """Store objects in the session (ids of ``objects`` are computed here, ``hashed`` were
    computed from their bytes in this process), logging them as one upload; return how many
    were new.

    Raises:
        ApiError: 507 ``quota_exceeded`` (unless not ``quota``: an owner's rollback) or
            ``disk_full``, before anything is written.
    """
    pairs = [(hash_bytes(data), data) for data in objects] + list(hashed)
    store = coord.store(session)
    check_room(coord, session, store, sum(len(data) for _, data in pairs), quota=quota)
    with coord.upload_lock(session):
        seq = _int(store.get_meta(NEXT))
        log = msgpack.packb([int(coord.wall()), [oid for oid, _ in pairs]])
        # Views of a request body are fine here: both backends copy what they store.
        return store.apply(Update(hashed=cast(list[tuple[ObjectId, bytes]], pairs), meta={
            f"upload/{seq:012d}": log, NEXT: str(seq + 1).encode()}))


def check_room(coord: Coordinator, session: str, store: LmdbStore, incoming: int, *,
               quota: bool = True) -> None:
    """Refuse (507) a write of ``incoming`` bytes past the quota or the free-space reserve."""
    lim = coord.limits
    if quota:
        usage = store.used_bytes()
        if usage + incoming > lim.quota_bytes:
            raise ApiError(507, "quota_exceeded", f"session {session!r} stores {usage:,} bytes; "
                           f"{incoming:,} more would pass its quota of {lim.quota_bytes:,}",
                           {"usage": usage, "limit": lim.quota_bytes, "incoming": incoming})
    free = shutil.disk_usage(store.path).free
    # LMDB writes each page anew (copy on write): room for the data twice, and the reserve.
    if free - 2 * incoming < lim.min_free_bytes:
        raise disk_full(free, 2 * incoming + lim.min_free_bytes)


def disk_full(free: int, needed: int | None = None) -> ApiError:
    """The 507 answer for a disk too full to write on."""
    return ApiError(507, "disk_full", f"the coordinator's disk is full ({free:,} bytes free); "
                    "nothing was written, reads still work", {"free": free, "needed": needed})


def _int(raw: bytes | None) -> int:
    return int(raw.decode()) if raw else 0


# -- gc ---------------------------------------------------------------------------------------


def collect_garbage(coord: Coordinator, session: str) -> dict[str, Any]:
    """Delete what the session no longer needs: objects no retained snapshot reaches and no
    upload within ``gc_grace`` names, and snapshots the retention policy drops.

    Holds the session's head lock throughout (no head moves meanwhile) and its upload lock for
    the deletion itself (an upload landing meanwhile is protected).
    """
    store = coord.store(session)
    with coord.head_lock(session):
        head = coord.head(session)
        shallow = coord.shallow(session)
        history = _history(store, ([head] if head else []) + coord.retained(session), shallow)
        policy = coord.retention(session)
        # Newest first; within one second, nearer the head first (history is in walk order).
        order = {oid: i for i, oid in enumerate(history)}
        newest = sorted(history, key=lambda oid: (-history[oid].time, order[oid]))
        kept = select_snapshots([(oid, history[oid].time) for oid in newest], policy)
        if head is not None:
            kept.add(head)
        cut = {oid for oid in kept if oid in shallow
               or any(p not in kept for p in history[oid].parents)}
        reach = walk(store, sorted(kept), shallow=cut, follow_parents=False, read_blobs=False)
        # Kept snapshots the head no longer reaches through parents (behind a dropped one):
        # remembered, or the next gc would not find them.
        orphans = kept - set(_history(store, [head] if head else [], cut))
        if not reach.ok:
            raise ApiError(500, "store_problem", f"gc stopped, nothing was deleted: "
                           f"{reach.problems[0]}", {"problems": len(reach.problems)})
        before = store.used_bytes()
        with coord.upload_lock(session):
            protected, expired = _recent_uploads(coord, store)
            garbage = [oid for oid in store.iter_ids()
                       if oid not in reach.reachable and oid not in protected]
            # Marks first: a mark left on a deleted object would let a head move onto it.
            coord.forget(session, garbage, shallow=cut, retained=orphans)
            store.apply(Update(delete_objects=garbage, meta=expired))
    dropped = [oid for oid in history if oid not in kept]
    return {"kept_snapshots": len(kept), "dropped_snapshots": len(dropped),
            "deleted_objects": len(garbage), "freed_bytes": max(0, before - store.used_bytes()),
            "usage": store.used_bytes(), "shallow": sorted(oid.hex() for oid in cut),
            "policy": asdict(policy)}


def _history(store: LmdbStore, roots: list[ObjectId], shallow: set[ObjectId]
             ) -> dict[ObjectId, Snapshot]:
    """Every stored snapshot reachable from ``roots`` through parents, stopping at
    ``shallow`` ones (and at parents gc dropped before), breadth first: nearer the roots
    first."""
    out: dict[ObjectId, Snapshot] = {}
    queue = deque(roots)
    while queue:
        oid = queue.popleft()
        if oid in out:
            continue
        try:
            snap = decode(store.get_raw(oid))
        except ObjectMissing:
            continue
        if not isinstance(snap, Snapshot):
            continue
        out[oid] = snap
        if oid not in shallow:
            queue.extend(snap.parents)
    return out


def _recent_uploads(coord: Coordinator, store: LmdbStore
                    ) -> tuple[set[ObjectId], dict[str, bytes | None]]:
    """Ids named by uploads within the grace period, and the meta changes that drop the log
    entries older than it (the log is in time order)."""
    horizon = coord.wall() - coord.limits.gc_grace
    first, end = _int(store.get_meta(FIRST)), _int(store.get_meta(NEXT))
    protected: set[ObjectId] = set()
    expired: dict[str, bytes | None] = {}
    for seq in range(first, end):
        raw = store.get_meta(f"upload/{seq:012d}")
        if raw is None:
            continue
        stamp, ids = msgpack.unpackb(raw)
        if stamp < horizon and not protected:
            expired[f"upload/{seq:012d}"] = None
            expired[FIRST] = str(seq + 1).encode()
        else:
            protected.update(ObjectId(bytes(oid)) for oid in ids)
    return protected, expired


def policy_from_json(body: dict[str, Any]) -> RetentionPolicy:
    """A retention policy from a request body (400 ``bad_request`` for anything else)."""
    names = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly")
    unknown = set(body) - set(names)
    if unknown:
        raise ApiError(400, "bad_request", f"unknown retention fields: {sorted(unknown)}")
    values: dict[str, int | None] = {}
    for name in names:
        value = body.get(name)
        if value is not None and (type(value) is not int or not 1 <= value <= 100_000):
            raise ApiError(400, "bad_request", f"{name!r} must be an integer in [1, 100000]")
        values[name] = value
    return RetentionPolicy(**values)



class GcThread:
    """Runs :func:`collect_garbage` over every session every ``gc_interval`` seconds, in a
    daemon thread, until :meth:`stop` (nothing runs when the interval is 0)."""

    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if coord.limits.gc_interval > 0:
            self._thread = threading.Thread(target=self._run, name="phs-gc", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.coord.limits.gc_interval):
            for session in self.coord.session_names():
                if self._stop.is_set():
                    return
                try:
                    report = collect_garbage(self.coord, session)
                    _log.info("gc %s: %s", session, report)
                except Exception:  # one session's problem must not stop the others' gc
                    _log.exception("gc %s failed", session)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


# -- routes -----------------------------------------------------------------------------------


async def get_retention(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    coord = coordinator(request)
    return JSONResponse(await run_in_threadpool(_storage_json, coord, session))


async def put_retention(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, {OWNER}, session)
    policy = policy_from_json(await read_json(request))
    coord = coordinator(request)
    await run_in_threadpool(coord.set_retention, session, policy)
    return JSONResponse(await run_in_threadpool(_storage_json, coord, session))


async def run_gc(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, {OWNER}, session)
    return JSONResponse(await run_in_threadpool(collect_garbage, coordinator(request), session))


def _storage_json(coord: Coordinator, session: str) -> dict[str, Any]:
    return {"policy": asdict(coord.retention(session)),
            "shallow": sorted(oid.hex() for oid in coord.shallow(session)),
            "usage": coord.store(session).used_bytes(), "quota": coord.limits.quota_bytes}


routes = [
    Route("/v1/sessions/{session}/retention", get_retention, methods=["GET"]),
    Route("/v1/sessions/{session}/retention", put_retention, methods=["PUT"]),
    Route("/v1/sessions/{session}/gc", run_gc, methods=["POST"]),
]
