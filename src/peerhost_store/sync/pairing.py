"""Pairing each changed chunk with its previous version, for delta transfer. Pure: it reads
tree nodes through ``get_raw`` and never touches the network or files.

A chunk travels as a delta against the previous version of *the same chunk*, which the
receiver already has. "The same chunk" is the same place in the world: dimension, kind
(``region``, ``entities``, ``poi``) and world chunk coordinates, never the file path, because
a game upgrade can move region files (26.1 moved ``region/`` to
``dimensions/minecraft/overworld/region/``) while the chunks stay where they were.

:func:`pair_chunks` diffs two world trees (equal subtrees are skipped by id, so it costs what
changed) and returns the ordered list of ``(new chunk blob, previous version or None)`` for
every chunk blob of the new tree that the old tree does not hold at that place. Both ends of
a transfer compute the same list from the same two trees (trees are content-addressed), so the
list itself never needs to travel: a request names the two trees and a selection of list
positions (:mod:`peerhost_store.sync.protocol`), and the delta batch leaves the ids out
(``want`` mode of :mod:`peerhost_store.sync.delta`).

The order is the diff's order (path, then slot), which keeps neighbouring chunks, which tend
to change alike, next to each other in the batch's single compressed stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ids import ObjectId
from ..objects import ChunkEntry, EntryKind
from ..region import chunk_coords, region_coords
from ..tree import ObjectLoader, diff_regions, diff_trees
from ..worldfs import region_place

__all__ = ["ChunkKey", "ChunkRef", "Pair", "chunk_key", "pair_chunks", "want_of"]

ChunkKey = tuple[str, str, int, int]
"""Where a chunk is in the world: dimension, kind (region/entities/poi), chunk x, chunk z."""


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """A chunk payload blob and the compression type its region entry gives it."""

    oid: ObjectId
    compression: int


@dataclass(frozen=True, slots=True)
class Pair:
    """A chunk blob the receiver may lack, and the previous version of that chunk (None when
    the chunk is new at its place, or its region file is not at a known region place)."""

    new: ChunkRef
    base: ChunkRef | None


def chunk_key(region_path: str, slot: int) -> ChunkKey | None:
    """The world place of ``slot`` in the region file at ``region_path`` (``/``-separated),
    or None when the file is not an ``r.X.Z.mca`` in a region-format folder."""
    folder, _, name = region_path.rpartition("/")
    place = region_place(folder)
    coords = region_coords(name)
    if place is None or coords is None:
        return None
    x, z = chunk_coords(*coords, slot)
    return place.dimension, place.kind, x, z


def pair_chunks(store: ObjectLoader, old_root: ObjectId | None, new_root: ObjectId) -> list[Pair]:
    """Every chunk blob of tree ``new_root`` not held at its place in ``old_root``, each with
    the blob ``old_root`` holds for that chunk (its previous version), in diff order.

    A blob listed once is not listed again (two chunks with equal payloads). A chunk whose
    blob equals its previous version (moved with its region file) is left out: the receiver
    has it. The list depends only on the two trees, so sender and receiver compute the same.

    Raises:
        ObjectMissing: a tree node of either tree is not in ``store`` (blobs are never read).
        DecodeError: a tree node is malformed.
    """
    previous: dict[ChunkKey, ChunkRef] = {}
    changed: list[tuple[ChunkKey | None, ChunkEntry]] = []
    for path, old, new in diff_trees(store, old_root, new_root):
        old_map = old.oid if old is not None and old.kind is EntryKind.REGION else None
        new_map = new.oid if new is not None and new.kind is EntryKind.REGION else None
        if old_map is None and new_map is None:
            continue
        # Every old chunk must be indexed before any new one is resolved: a moved region
        # file is removed at one path and added at another, in either order.
        for a, b in diff_regions(store, old_map, new_map):
            slot = (b if b is not None else a).slot  # type: ignore[union-attr]
            key = chunk_key(path, slot)
            if a is not None and key is not None:
                previous[key] = ChunkRef(a.oid, a.compression)
            if b is not None and (a is None or a.oid != b.oid):
                changed.append((key, b))
    pairs: list[Pair] = []
    listed: set[ObjectId] = set()
    for key, entry in changed:
        base = previous.get(key) if key is not None else None
        if entry.oid in listed or (base is not None and base.oid == entry.oid):
            continue
        listed.add(entry.oid)
        pairs.append(Pair(ChunkRef(entry.oid, entry.compression), base))
    return pairs


def want_of(pairs: list[Pair]) -> list[tuple[ObjectId, ObjectId | None]]:
    """The ``(new_id, base_id)`` want list of :mod:`peerhost_store.sync.delta` for ``pairs``."""
    return [(p.new.oid, None if p.base is None else p.base.oid) for p in pairs]
