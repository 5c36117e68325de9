"""A tree node set beside its *counterpart*: the node at the same place in another tree (the
same file or folder name, the same index key, the same chunk slot).

Trees are content-addressed, so a child equal to its counterpart's child is the same subtree,
complete wherever the other tree is; only children that differ need looking at. A push walks
its head beside the session head this way (what it cannot tell, it asks about), and the
coordinator walks a session head beside the tree a puller already has, to send the nodes
that changed in one answer (:func:`changed_nodes`). Pure: nodes are read through a
:class:`~peerhost_store.graph.GraphLoader`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .graph import READ_BATCH, GraphLoader, Kind, children, decode_as
from .ids import ObjectId
from .objects import DirLeaf, Index, Object, RegionLeaf, Snapshot

__all__ = ["Aligned", "align", "changed_nodes"]


@dataclass
class Aligned:
    """The children of a node told apart by its counterpart's.

    Attributes:
        same: children (and, for a region file, its raw blob; for a region map, chunk blobs)
            equal to the counterpart's child at the same place.
        differ: ``(child, counterpart's child)`` for node children at a place both have
            that differ (chunk blobs are not listed: they are nobody's node).
    """

    same: list[ObjectId] = field(default_factory=list)
    differ: list[tuple[ObjectId, ObjectId]] = field(default_factory=list)


def align(obj: object, base: object) -> Aligned:
    """Tell the children of ``obj`` from those of its counterpart ``base`` (nothing is told
    when the two are not nodes of one kind and level)."""
    out = Aligned()
    pairs: list[tuple[ObjectId, ObjectId]] = []
    if isinstance(obj, Index) and isinstance(base, Index) and obj.level == base.level:
        keyed = {entry.key: entry.oid for entry in base.entries}
        pairs = [(e.oid, keyed[e.key]) for e in obj.entries if e.key in keyed]
    elif isinstance(obj, DirLeaf) and isinstance(base, DirLeaf):
        named = {entry.name: entry for entry in base.entries}
        for entry in obj.entries:
            same = named.get(entry.name)
            if same is not None and same.kind is entry.kind:
                pairs.append((entry.oid, same.oid))
                if entry.raw is not None and entry.raw == same.raw:
                    out.same.append(entry.raw)
    elif isinstance(obj, RegionLeaf) and isinstance(base, RegionLeaf):
        slots = {chunk.slot: chunk.oid for chunk in base.entries}
        out.same = [chunk.oid for chunk in obj.entries if slots.get(chunk.slot) == chunk.oid]
    for new, old in pairs:
        if new == old:
            out.same.append(new)
        else:
            out.differ.append((new, old))
    return out


def changed_nodes(loader: GraphLoader, want: ObjectId, have: ObjectId, *,
                  max_nodes: int, max_bytes: int) -> list[bytes]:
    """The snapshots and tree nodes ``want`` reaches that a store holding snapshot ``have``
    (complete) most likely lacks, breadth-first, as stored: the snapshots back to ``have``
    and, in each one's tree, the nodes that differ from their counterpart in ``have``'s tree
    (all of a subtree with no counterpart). Blobs are not included.

    Stops before ``max_nodes`` objects or ``max_bytes`` bytes (at least one object is
    returned): what a receiver still lacks it fetches as usual. The receiver keys what it gets
    by the hash of its bytes and uses only what its own walk reaches, so this is a guess that
    saves round trips, never something it trusts.

    Raises:
        ObjectMissing, ObjectCorrupt, DecodeError: ``want`` or ``have`` or a node on the way
            is missing or damaged in ``loader``.
    """
    base = decode_as(have, loader.get_many([have])[0], Kind.SNAPSHOT)
    assert isinstance(base, Snapshot)
    seen = {want, have}
    #: (id, kind, counterpart or None)
    frontier: list[tuple[ObjectId, Kind, ObjectId | None]] = [(want, Kind.SNAPSHOT, None)]
    out: list[bytes] = []
    total = 0
    while frontier:
        after: list[tuple[ObjectId, Kind, ObjectId | None]] = []
        # A slice at a time, the bounds checked before each read: the work is about that of
        # an objects/get of max_nodes ids (each node read with its counterpart), never a
        # whole level past the bounds.
        for start in range(0, len(frontier), READ_BATCH):
            if out and (len(out) >= max_nodes or total >= max_bytes):
                return out
            part = frontier[start:start + min(READ_BATCH, max_nodes - len(out))]
            datas = loader.get_many([oid for oid, _, _ in part])
            others = [old for _, _, old in part if old is not None]
            bases = dict(zip(others, loader.get_many(others), strict=True)) if others else {}
            for (oid, kind, old), data in zip(part, datas, strict=True):
                if out and (len(out) >= max_nodes or total + len(data) > max_bytes):
                    return out
                out.append(data)
                total += len(data)
                obj: Object = decode_as(oid, data, kind)
                if isinstance(obj, Snapshot):  # its root beside have's; its parents back to have
                    told = Aligned(differ=[(obj.root, base.root)])
                    if obj.root == base.root:
                        told = Aligned(same=[obj.root])
                elif old is None:
                    told = Aligned()
                else:
                    told = align(obj, decode_as(old, bases[old], kind))
                same = set(told.same)
                counterpart = dict(told.differ)
                for child, child_kind in children(oid, obj, kind):
                    if child_kind is Kind.BLOB or child in same or child in seen:
                        continue
                    seen.add(child)
                    after.append((child, child_kind, counterpart.get(child)))
        frontier = after
    return out
