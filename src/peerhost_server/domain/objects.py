"""A session's objects: which it lacks, their status, uploads (within the session's room) and
downloads.

Uploaded bytes are decoded (malformed objects are refused, naming their index) and stored
under the blake3 of their bytes: ids are derived here, never taken from the client.

**Room.** Every write of objects is refused before it starts when it would take the session
past its quota (``quota_exceeded``: what its live objects take, so what gc frees counts) or
leave less than ``min_free_bytes`` where objects are written (``disk_full``). The reserve keeps
the coordinator's own small writes (leases, heads) working on a nearly full disk; reads never
need room.
"""

from __future__ import annotations

from collections.abc import Sequence

from peerhost_store.counterparts import changed_nodes
from peerhost_store.errors import DecodeError, ObjectCorrupt, ObjectMissing
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import blob_length, check
from peerhost_store.sync.protocol import IDS_PER_REQUEST, ObjectStatus

from .coordinator import Coordinator
from .errors import (
    IdMismatch,
    MalformedObject,
    NodeTooLarge,
    ObjectNotStored,
    QuotaExceeded,
)
from .protocols import SessionObjects

#: Ids a download reads per batch.
READ_BATCH = 256


def write_objects(coord: Coordinator, session: str, objects: Sequence[bytes | memoryview] = (),
                  hashed: Sequence[tuple[ObjectId, bytes | memoryview]] = (), *,
                  quota: bool = True) -> int:
    """Store objects in the session (ids of ``objects`` are computed here, ``hashed`` were
    computed from their bytes in this process), as one upload; return how many were new.

    Raises:
        QuotaExceeded: (unless not ``quota``: an owner's rollback), or DiskFull, before
            anything is written.
    """
    pairs = [(hash_bytes(data), data) for data in objects] + list(hashed)
    store = coord.store(session)
    check_room(coord, session, store, sum(len(data) for _, data in pairs), quota=quota)
    return store.write(pairs, int(coord.wall()))


def check_room(coord: Coordinator, session: str, store: SessionObjects, incoming: int, *,
               quota: bool = True) -> None:
    """Refuse a write of ``incoming`` bytes past the quota or the free-space reserve.

    Raises:
        QuotaExceeded, DiskFull.
    """
    lim = coord.limits
    if quota:
        usage = store.used_bytes()
        if usage + incoming > lim.quota_bytes:
            raise QuotaExceeded(session, usage, incoming, lim.quota_bytes)
    store.check_room(incoming, lim.min_free_bytes)


def upload(coord: Coordinator, session: str, objects: Sequence[memoryview],
           ids: Sequence[ObjectId] | None = None) -> int:
    """Check and store uploaded objects; return how many were new. With ``ids`` (the ids the
    uploader expects, one per object), an object whose bytes hash to another id refuses the
    whole upload before anything is written: the uploader read it damaged.

    Raises:
        NodeTooLarge, MalformedObject (naming the object's index), IdMismatch, QuotaExceeded,
        DiskFull.
    """
    node_limit = coord.limits.max_node_bytes
    for i, data in enumerate(objects):
        if len(data) > node_limit and blob_length(bytes(data[:7]), len(data)) is None:
            raise NodeTooLarge(i, len(data), node_limit)
        try:
            check(data)
        except DecodeError as exc:
            raise MalformedObject(i, exc) from None
    if ids is not None and len(ids) != len(objects):
        raise MalformedObject(0, f"{len(ids)} ids for {len(objects)} objects")
    pairs = [(hash_bytes(data), data) for data in objects]  # ids derived here, always
    if ids is not None:
        for i, ((got, _), expected) in enumerate(zip(pairs, ids, strict=True)):
            if got != expected:
                raise IdMismatch(i, expected, got)
    return write_objects(coord, session, hashed=pairs) if pairs else 0


def missing(coord: Coordinator, session: str, ids: list[ObjectId]) -> list[ObjectId]:
    """The ids the session lacks."""
    return list(coord.store(session).missing(ids))


def status(coord: Coordinator, session: str, ids: list[ObjectId]) -> list[ObjectStatus]:
    """Missing, present or complete, for each id."""
    absent = set(coord.store(session).missing(ids))
    present = [oid for oid in ids if oid not in absent]
    complete = {oid for oid, c in zip(present, coord.backends.marks.complete(session, present),
                                      strict=True) if c}
    return [ObjectStatus.MISSING if oid in absent else
            ObjectStatus.COMPLETE if oid in complete else ObjectStatus.PRESENT for oid in ids]


def download(coord: Coordinator, session: str, ids: list[ObjectId]) -> list[bytes]:
    """The objects of a prefix of ``ids``: at least one, stopping before
    ``max_response_bytes`` (the client asks for the rest).

    They are read unhashed: the client hashes each against the id it asked for, the one
    check these bytes get between this store and its own (invariant 2). Every stored object
    was hashed here when it was written; damage since then is caught there, by that check.

    Raises:
        ObjectNotStored: an id the session lacks.
    """
    store = coord.store(session)
    cap = coord.limits.max_response_bytes
    absent = next(iter(store.missing(ids)), None)
    if absent is not None:
        raise ObjectNotStored(absent)
    out: list[bytes] = []
    total = 0
    for start in range(0, len(ids), READ_BATCH):
        try:
            batch = store.get_unchecked(ids[start : start + READ_BATCH])
        except ObjectMissing as exc:
            raise ObjectNotStored(exc.oid) from None
        for data in batch:
            if out and total + len(data) > cap:
                return out
            out.append(data)
            total += len(data)
    return out


def changed(coord: Coordinator, session: str, want: ObjectId, have: ObjectId) -> list[bytes]:
    """The snapshots and tree nodes of ``want`` that a client holding snapshot ``have`` most
    likely lacks (:func:`~peerhost_store.counterparts.changed_nodes`), so a pull fetches a
    play session's changed nodes in one answer, not one request per level of the tree.

    Both must be complete in the session; otherwise (or when something on the way is damaged
    here) the answer is empty and the client walks as usual. The work is that of an
    ``objects/get`` of as many ids: at most :data:`IDS_PER_REQUEST` nodes, each read with its
    counterpart, within ``max_response_bytes``. Read checked, as they are decoded here.
    """
    if status(coord, session, [want, have]) != [ObjectStatus.COMPLETE] * 2:
        return []
    try:
        return changed_nodes(coord.store(session), want, have, max_nodes=IDS_PER_REQUEST,
                             max_bytes=coord.limits.max_response_bytes)
    except (ObjectMissing, ObjectCorrupt, DecodeError):
        return []
