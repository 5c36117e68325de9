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

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import DecodeError
from ..ids import ObjectId
from ..objects import ChunkEntry, EntryKind
from ..region import chunk_coords, region_coords
from ..tree import ObjectLoader, diff_regions, diff_trees
from ..worldfs import region_place

__all__ = ["Budget", "ChunkKey", "ChunkRef", "Pair", "PairingCancelled", "PairingTooLarge",
           "chunk_key", "pair_chunks", "want_of"]

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


class PairingTooLarge(DecodeError):
    """Pairing two trees would take more work than its :class:`Budget` allows (a tree that
    shares subtrees can make a diff walk millions of paths from a few KB of nodes).

    A :class:`~peerhost_store.errors.DecodeError`, so callers that send or fetch whole
    objects when pairing fails do so here too.

    Attributes:
        what: ``nodes`` (tree nodes loaded) or ``chunks`` (chunk entries considered).
        limit: the budget that ran out.
    """

    def __init__(self, what: str, limit: int) -> None:
        self.what = what
        self.limit = limit
        super().__init__(f"pairing the two trees needs more than {limit:,} {what}; "
                         "send the chunks whole")


class PairingCancelled(Exception):
    """The caller gave up (a coordinator's client went away); nothing was produced."""


@dataclass
class Budget:
    """What one :func:`pair_chunks` may spend: tree nodes loaded (each at most as large as a
    node may be), chunk entries considered (each costs memory until the list is built), and
    a check, made at every node, that the caller still wants the answer.

    The defaults fit a client pairing a long play session (a few hundred thousand changed
    chunks); a coordinator passes its own, smaller ones per request.
    """

    nodes: int = 1_000_000
    chunks: int = 4_000_000
    cancelled: Callable[[], bool] = field(default=lambda: False)
    nodes_loaded: int = field(default=0, init=False)

    def spend_node(self) -> None:
        """Charge one node load (and look whether the caller gave up)."""
        if self.cancelled():
            raise PairingCancelled()
        self.nodes_loaded += 1
        if self.nodes_loaded > self.nodes:
            raise PairingTooLarge("nodes", self.nodes)

    def loader(self, store: ObjectLoader) -> ObjectLoader:
        """``store`` read through this budget: each node it loads is charged."""
        return _Budgeted(store, self)


class _Budgeted:
    """A loader that charges every node it loads to a :class:`Budget`."""

    def __init__(self, store: ObjectLoader, budget: Budget) -> None:
        self.store, self.budget = store, budget

    def get_raw(self, oid: ObjectId) -> bytes:
        self.budget.spend_node()
        return self.store.get_raw(oid)


def chunk_key(region_path: str, slot: int) -> ChunkKey | None:
    """The world place of ``slot`` in the region file at ``region_path`` (``/``-separated),
    or None when the file is not an ``r.X.Z.mca`` in a region-format folder."""
    return _key_of(_region_of(region_path), slot)


def _region_of(region_path: str) -> tuple[str, str, int, int] | None:
    """Dimension, kind and region coordinates of a region file (once per file, not chunk)."""
    folder, _, name = region_path.rpartition("/")
    place = region_place(folder)
    coords = region_coords(name)
    if place is None or coords is None:
        return None
    return place.dimension, place.kind, *coords


def _key_of(region: tuple[str, str, int, int] | None, slot: int) -> ChunkKey | None:
    if region is None:
        return None
    x, z = chunk_coords(region[2], region[3], slot)
    return region[0], region[1], x, z


def pair_chunks(store: ObjectLoader, old_root: ObjectId | None, new_root: ObjectId, *,
                budget: Budget | None = None) -> list[Pair]:
    """Every chunk blob of tree ``new_root`` not held at its place in ``old_root``, each with
    the blob ``old_root`` holds for that chunk (its previous version), in diff order.

    A blob listed once is not listed again (two chunks with equal payloads). A chunk whose
    blob equals its previous version (moved with its region file) is left out: the receiver
    has it. The list depends only on the two trees, so sender and receiver compute the same.

    Raises:
        ObjectMissing: a tree node of either tree is not in ``store`` (blobs are never read).
        DecodeError: a tree node is malformed.
        PairingTooLarge: past ``budget`` (default: :class:`Budget`'s).
        PairingCancelled: ``budget.cancelled()`` said so.
    """
    budget = budget or Budget()
    store = budget.loader(store)
    previous: dict[ChunkKey, ChunkRef] = {}
    changed: list[tuple[ChunkKey | None, ChunkEntry]] = []
    considered = 0
    for path, old, new in diff_trees(store, old_root, new_root):
        old_map = old.oid if old is not None and old.kind is EntryKind.REGION else None
        new_map = new.oid if new is not None and new.kind is EntryKind.REGION else None
        if old_map is None and new_map is None:
            continue
        region = _region_of(path)
        # Every old chunk must be indexed before any new one is resolved: a moved region
        # file is removed at one path and added at another, in either order.
        for a, b in diff_regions(store, old_map, new_map):
            considered += 1
            if considered > budget.chunks:
                raise PairingTooLarge("chunks", budget.chunks)
            slot = (b if b is not None else a).slot  # type: ignore[union-attr]
            key = _key_of(region, slot)
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
