"""A session's history as people read it: the snapshot timeline, what each snapshot changed
(per chunk, content or re-save, from the tree diff: the cost of the change), and what an area
rollback would change. Read-only; the dashboard renders it.

Every snapshot is read from the session's own store, so an id of another session's snapshot
is simply not found here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from peerhost_store.area import Area, area_changes
from peerhost_store.diff import ChunkChange, FileChange, diff_worlds
from peerhost_store.errors import DecodeError, ObjectMissing
from peerhost_store.ids import ObjectId
from peerhost_store.objects import Snapshot, decode

from .coordinator import Coordinator
from .errors import MalformedTree, NoSnapshot, NotASnapshot

#: A diff with more modified chunks than this is not classified (each one is decompressed and
#: parsed): its modified chunks count as ``unknown``.
MAX_CLASSIFIED = 5000


def read_snapshot(coord: Coordinator, session: str, oid: ObjectId) -> Snapshot:
    """A snapshot of the session.

    Raises:
        NoSnapshot, NotASnapshot.
    """
    store = coord.store(session)
    if oid in set(store.missing([oid])):
        raise NoSnapshot(oid)
    try:
        snap = decode(store.get_raw(oid))
    except DecodeError:
        raise NotASnapshot(oid) from None
    if not isinstance(snap, Snapshot):
        raise NotASnapshot(oid)
    return snap


def timeline(coord: Coordinator, session: str, limit: int) -> list[tuple[ObjectId, Snapshot]]:
    """Up to ``limit`` snapshots from the head back through parents, nearest first (breadth
    first, so both sides of a merge show), stopping where gc cut the history."""
    head = coord.backends.leases.head(session)
    shallow = coord.backends.retention.shallow(session)
    out: list[tuple[ObjectId, Snapshot]] = []
    seen: set[ObjectId] = set()
    queue = deque([head] if head is not None else [])
    while queue and len(out) < limit:
        oid = queue.popleft()
        if oid in seen:
            continue
        seen.add(oid)
        try:
            snap = read_snapshot(coord, session, oid)
        except (NoSnapshot, NotASnapshot):
            continue
        out.append((oid, snap))
        if oid not in shallow:
            queue.extend(snap.parents)
    return out


@dataclass
class Changes:
    """What one tree changed from another: chunk changes and file changes (of files that are
    not region files), and whether the modified chunks were classified."""

    chunks: list[ChunkChange] = field(default_factory=list)
    files: list[FileChange] = field(default_factory=list)
    classified: bool = True


def tree_changes(coord: Coordinator, session: str, old: ObjectId | None, new: ObjectId
                 ) -> Changes:
    """The changes from tree ``old`` (None: nothing) to tree ``new``; modified chunks are
    classified as content or re-save unless there are more than :data:`MAX_CLASSIFIED`.

    Raises:
        MalformedTree: a node of either tree does not decode.
    """
    store = coord.store(session)
    try:
        found = list(diff_worlds(store, old, new, classify=False))
        modified = sum(isinstance(c, ChunkChange) and c.status == "modified" for c in found)
        classified = modified <= MAX_CLASSIFIED
        if classified and modified:
            found = list(diff_worlds(store, old, new, classify=True))
    except (DecodeError, ObjectMissing) as exc:
        raise MalformedTree(f"cannot diff the trees: {exc}") from None
    out = Changes(classified=classified)
    for change in found:
        if isinstance(change, ChunkChange):
            out.chunks.append(change)
        elif change.kind != "region" and change.kind != "dir":
            out.files.append(change)
    return out


def snapshot_changes(coord: Coordinator, session: str, oid: ObjectId
                     ) -> tuple[Snapshot, ObjectId | None, Changes]:
    """A snapshot, the tree of its first parent (None for the first snapshot, or when gc
    dropped the parent) and what it changed from it."""
    snap = read_snapshot(coord, session, oid)
    parent_root = parent_tree(coord, session, snap)
    return snap, parent_root, tree_changes(coord, session, parent_root, snap.root)


def parent_tree(coord: Coordinator, session: str, snap: Snapshot) -> ObjectId | None:
    """The tree of ``snap``'s first parent, when the session still has it."""
    if not snap.parents:
        return None
    try:
        return read_snapshot(coord, session, snap.parents[0]).root
    except (NoSnapshot, NotASnapshot):
        return None


def area_preview(coord: Coordinator, session: str, target: ObjectId, area: Area
                 ) -> list[ChunkChange]:
    """What rolling ``area`` back to snapshot ``target`` would change in the head's world:
    the chunk changes from the head's tree to ``target``'s, inside the area."""
    snap = read_snapshot(coord, session, target)
    head = coord.backends.leases.head(session)
    if head is None:
        return []
    current = read_snapshot(coord, session, head)
    try:
        return area_changes(coord.store(session), current.root, snap.root, area)
    except (DecodeError, ObjectMissing) as exc:
        raise MalformedTree(f"cannot diff the trees: {exc}") from None
