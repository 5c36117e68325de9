"""Paged maps and the world tree. Pure: reads through ``get_raw``, writes through ``add``.

A directory or a region is a *paged map*: its sorted entries are cut into leaves, and the
leaves are gathered under index nodes, level by level, until one node remains. Directories cut
where a name's hash says so (about one name in 8; a run of 32 names without a cut is cut
anyway); regions cut at fixed slot boundaries (8 slots a leaf, 64 a level-1 node). Because cut
points depend on keys (and rarely on position), two versions of a map share every node the
change did not touch: one changed chunk re-stores a leaf of 8 slots, two index nodes and the
directories above it.

Diff never compares entries that live in shared nodes: it drops node ids present on both sides
and expands only the rest, so its cost grows with the change, not with the map.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

import blake3

from .errors import DecodeError
from .ids import ObjectId
from .objects import (
    ChunkEntry,
    DirEntry,
    DirLeaf,
    EntryKind,
    Index,
    IndexEntry,
    Node,
    RegionLeaf,
    decode,
    decode_blob,
    encode_dir_leaf,
    encode_index,
    encode_region_leaf,
)
from .worldfs import UnsafePath

__all__ = [
    "FANOUT",
    "MAX_PAGE",
    "MAX_TREE_DEPTH",
    "REGION_SHIFTS",
    "Add",
    "BatchLoader",
    "Entry",
    "NodeCache",
    "ObjectLoader",
    "build_dir",
    "build_map",
    "build_region",
    "diff_dirs",
    "diff_maps",
    "diff_regions",
    "diff_trees",
    "iter_dir",
    "iter_map",
    "iter_region",
    "iter_tree",
    "leaf_refs",
    "load_blob",
    "load_node",
    "lookup_map",
    "region_entries",
    "update_map",
]

FANOUT = 8
MAX_PAGE = 32
# Region maps have a fixed shape instead: slots are dense integers 0..1023, so leaves hold 8
# consecutive slots, level-1 nodes 8 leaves (two rows of the region), the root the rest.
REGION_SHIFTS = (3, 6)

Entry = DirEntry | ChunkEntry
Add = Callable[[bytes], ObjectId]


class ObjectLoader(Protocol):
    """The one thing tree reading needs from a store."""

    def get_raw(self, oid: ObjectId) -> bytes: ...


def _is_cut(level: int, key: str | int) -> bool:
    data = key.encode() if isinstance(key, str) else key.to_bytes(4, "big", signed=True)
    return blake3.blake3(bytes([level]) + data).digest(1)[0] < 256 // FANOUT


def _paginate(level: int, keys: Sequence[str | int]) -> list[tuple[int, int]]:
    """Split positions ``0..len(keys)`` into ``[start, end)`` pages."""
    if keys and isinstance(keys[0], int):
        shift = REGION_SHIFTS[level] if level < len(REGION_SHIFTS) else 64
        cuts = [i + 1 for i in range(len(keys) - 1)
                if keys[i] >> shift != keys[i + 1] >> shift]  # type: ignore[operator]
    else:
        cuts, start = [], 0
        for i, key in enumerate(keys[:-1]):
            if _is_cut(level, key) or i + 1 - start >= MAX_PAGE:
                cuts.append(i + 1)
                start = i + 1
    bounds = [0, *cuts, len(keys)]
    return list(itertools.pairwise(bounds))


def _key(entry: Entry) -> str | int:
    return entry.name if isinstance(entry, DirEntry) else entry.slot


def build_map(add: Add, entries: Sequence[DirEntry] | Sequence[ChunkEntry]) -> ObjectId:
    """Store a paged map of sorted ``entries`` through ``add``; return its root id."""
    return _build_index(add, _build_leaves(add, entries))


def _build_leaves(add: Add, entries: Sequence[Entry]) -> list[IndexEntry]:
    """Cut sorted ``entries`` into leaves (stored through ``add``); one empty leaf for none."""
    keys = [_key(e) for e in entries]
    encode = encode_dir_leaf if entries and isinstance(entries[0], DirEntry) else None
    nodes: list[IndexEntry] = []
    for start, end in _paginate(0, keys):
        page = list(entries[start:end])
        data = encode_dir_leaf(page) if encode else encode_region_leaf(page)  # type: ignore[arg-type]
        nodes.append(IndexEntry(keys[start] if start < end else "", add(data)))
    return nodes


def _build_index(add: Add, nodes: list[IndexEntry]) -> ObjectId:
    """Gather leaves (their first keys and ids) under index nodes until one remains."""
    level = 0
    while len(nodes) > 1:
        level += 1
        parents = []
        for start, end in _paginate(level, [n.key for n in nodes]):
            parents.append(IndexEntry(nodes[start].key, add(encode_index(level, nodes[start:end]))))
        nodes = parents
    return nodes[0].oid


def build_dir(add: Add, entries: Sequence[DirEntry]) -> ObjectId:
    """Store a directory map (an empty one is an empty dir leaf)."""
    if not entries:
        return add(encode_dir_leaf([]))
    return build_map(add, entries)


def build_region(add: Add, entries: Sequence[ChunkEntry]) -> ObjectId:
    """Store a region map (an empty one is an empty region leaf)."""
    if not entries:
        return add(encode_region_leaf([]))
    return build_map(add, entries)


def load_node(store: ObjectLoader, oid: ObjectId) -> Node:
    """Load and decode one node of a paged map (once per :class:`NodeCache`)."""
    if isinstance(store, NodeCache):
        return store.node(oid)
    return _decode_node(store.get_raw(oid), oid)


def _decode_node(data: bytes, oid: ObjectId) -> Node:
    obj = decode(data)
    if not isinstance(obj, (Index, DirLeaf, RegionLeaf)):
        raise DecodeError(f"object {oid.hex()} is not a tree node")
    return obj


class NodeCache:
    """An :class:`ObjectLoader` that keeps the tree nodes it decoded, for one piece of work.

    A push or pull reads the same paths of two trees several times over (the diff, the graft,
    the chunk lookups: each node 3 to 5 times), and one read of a node costs more than its
    decode. Nodes are immutable and content-addressed, so a node read (and checked) once is
    the node; the cache ends with the work, so it never answers for a store that changed
    (a node gc removed since, another store). At most ``limit`` nodes are kept: a play
    session's tree upload reads 120 to 500 distinct nodes on the real histories, and 2,048
    decoded pages of at most 32 entries hold about 20 MB at worst (a coordinator keeps one
    cache per request).
    """

    def __init__(self, store: ObjectLoader, limit: int = 2048) -> None:
        self.store = store
        self._nodes: dict[ObjectId, Node] = {}
        self._limit = limit

    def get_raw(self, oid: ObjectId) -> bytes:
        return self.store.get_raw(oid)

    def node(self, oid: ObjectId) -> Node:
        """The node ``oid``, read and decoded the first time it is asked for."""
        node = self._nodes.get(oid)
        if node is None:
            node = _decode_node(self.store.get_raw(oid), oid)
            if len(self._nodes) < self._limit:
                self._nodes[oid] = node
        return node


def iter_map(store: ObjectLoader, oid: ObjectId) -> Iterator[Entry]:
    """Yield a paged map's entries in key order."""
    node = load_node(store, oid)
    if isinstance(node, Index):
        for child in node.entries:
            yield from iter_map(store, child.oid)
    else:
        yield from node.entries


def iter_dir(store: ObjectLoader, oid: ObjectId) -> Iterator[DirEntry]:
    """Yield a directory map's entries in name order."""
    for entry in iter_map(store, oid):
        if not isinstance(entry, DirEntry):
            raise DecodeError(f"directory {oid.hex()} holds chunk entries")
        yield entry


def iter_region(store: ObjectLoader, oid: ObjectId) -> Iterator[ChunkEntry]:
    """Yield a region map's chunk entries in slot order."""
    for entry in iter_map(store, oid):
        if not isinstance(entry, ChunkEntry):
            raise DecodeError(f"region {oid.hex()} holds directory entries")
        yield entry


class BatchLoader(ObjectLoader, Protocol):
    """A store that also reads many objects at once."""

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]: ...


def region_entries(store: BatchLoader, oid: ObjectId) -> list[ChunkEntry]:
    """A region map's chunk entries in slot order, as :func:`iter_region` yields them, read
    one level of nodes per call to the store (a restore reads every region map it writes)."""
    level = [oid]
    entries: list[ChunkEntry] = []
    while level:
        below: list[ObjectId] = []
        for node_id, data in zip(level, store.get_many(level), strict=True):
            node = decode(data)
            if isinstance(node, Index):
                below += [child.oid for child in node.entries]
            elif isinstance(node, RegionLeaf):
                entries += node.entries
            else:
                raise DecodeError(f"region {node_id.hex()} holds directory entries"
                                  if isinstance(node, DirLeaf) else
                                  f"object {node_id.hex()} is not a tree node")
        level = below
    # Leaves of one level come in key order; a map has leaves at one depth only when it is
    # well formed, which the check below holds it to (iter_region's order, exactly).
    if any(a.slot >= b.slot for a, b in itertools.pairwise(entries)):
        return list(iter_region(store, oid))
    return entries
# -- surgery: change a few keys of a map, reusing every page the change does not touch ------


def leaf_refs(store: ObjectLoader, oid: ObjectId) -> list[IndexEntry]:
    """The leaves of a paged map, as ``(first key, id)`` in key order, reading only its index
    nodes (and the root, when it is a leaf). An empty map has no leaves."""
    node = load_node(store, oid)
    if not isinstance(node, Index):
        return [IndexEntry(_key(node.entries[0]), oid)] if node.entries else []
    out: list[IndexEntry] = []
    stack = [(node, oid)]
    while stack:
        index, at = stack.pop()
        if index.level == 1:
            out.extend(index.entries)
            continue
        children = []
        for child in index.entries:
            sub = load_node(store, child.oid)
            if not isinstance(sub, Index) or sub.level != index.level - 1:
                raise DecodeError(f"node {child.oid.hex()} under {at.hex()} is not an index of "
                                  f"level {index.level - 1}")
            children.append((sub, child.oid))
        stack.extend(reversed(children))
    return out


def _leaf_of(refs: Sequence[IndexEntry], key: str | int) -> int:
    """Which leaf holds ``key`` (or would): the last one starting at or before it."""
    return max(0, bisect.bisect_right([r.key for r in refs], key) - 1)


def _leaf(store: ObjectLoader, oid: ObjectId) -> list[Entry]:
    node = load_node(store, oid)
    if isinstance(node, Index):
        raise DecodeError(f"node {oid.hex()} should be a leaf")
    return list(node.entries)


def lookup_map(store: ObjectLoader, oid: ObjectId | None,
               keys: Iterable[str | int]) -> dict[str | int, Entry]:
    """The entries of ``keys`` that map ``oid`` holds (None: an empty map), reading its index
    nodes and only the leaves those keys fall in."""
    wanted = set(keys)
    if oid is None or not wanted:
        return {}
    refs = leaf_refs(store, oid)
    if not refs:
        return {}
    out: dict[str | int, Entry] = {}
    for i in sorted({_leaf_of(refs, key) for key in wanted}):
        out.update((k, e) for e in _leaf(store, refs[i].oid) if (k := _key(e)) in wanted)
    return out


def update_map(store: ObjectLoader, add: Add, oid: ObjectId | None,
               changes: Mapping[str | int, Entry | None], *, region: bool) -> ObjectId:
    """Store map ``oid`` (None: empty) with ``changes`` applied (a key to its new entry, or
    None to remove it) and return the new root: the same tree :func:`build_dir` or
    :func:`build_region` (``region``) makes of the changed entries, at the cost of the change.

    Only the leaves the changed keys fall in are read and cut again, with as many following
    leaves as it takes for the cuts to meet the old ones again (cut points depend on keys, and
    on how long a page has run since the last cut, so pagination after a meeting point is what
    it was); every other leaf is reused by id, and the index levels are rebuilt from the leaf
    list (they are few: one per 8 leaves).
    """
    refs = leaf_refs(store, oid) if oid is not None else []
    if not changes:
        return oid if oid is not None else _empty(add, region)
    todo = sorted({_leaf_of(refs, key) for key in changes}) if refs else [0]
    out: list[IndexEntry] = []
    done = 0  # refs[:done] are placed
    for first in todo:
        if first < done:
            continue  # absorbed by the previous run
        out.extend(refs[done:first])
        end = first + 1 if refs else 0  # refs[first:end] are in this run
        entries = _apply(_leaf(store, refs[first].oid) if refs else [], changes,
                         _bounds(refs, first))
        while True:
            keys = [_key(e) for e in entries]
            if not keys or end >= len(refs) or len(keys) in {stop for _, stop in
                                                 _paginate(0, [*keys, refs[end].key])}:
                break
            # The run's last page does not close where the next leaf starts: take that leaf in.
            entries += _apply(_leaf(store, refs[end].oid), changes, _bounds(refs, end))
            end += 1
        if entries:
            out.extend(_build_leaves(add, entries))
        done = end
    out.extend(refs[done:])
    return _build_index(add, out) if out else _empty(add, region)


def _empty(add: Add, region: bool) -> ObjectId:
    return add(encode_region_leaf([]) if region else encode_dir_leaf([]))


def _bounds(refs: Sequence[IndexEntry], i: int) -> tuple[str | int | None, str | int | None]:
    """The keys leaf ``i`` is responsible for: ``[low, high)``, None for open ends."""
    low = refs[i].key if i > 0 else None
    high = refs[i + 1].key if i + 1 < len(refs) else None
    return low, high


def _apply(entries: list[Entry], changes: Mapping[str | int, Entry | None],
           bounds: tuple[str | int | None, str | int | None]) -> list[Entry]:
    """A leaf's entries with the changes of its key range applied, in key order."""
    low, high = bounds
    mine = {k: v for k, v in changes.items()
            if (low is None or k >= low) and (high is None or k < high)}  # type: ignore[operator]
    merged = {_key(e): e for e in entries if _key(e) not in mine}
    merged.update((k, v) for k, v in mine.items() if v is not None)
    return [merged[k] for k in sorted(merged)]


def load_blob(store: ObjectLoader, oid: ObjectId) -> bytes:
    """Load a blob object's bytes."""
    try:
        return decode_blob(store.get_raw(oid))
    except DecodeError as exc:
        raise DecodeError(f"object {oid.hex()}: {exc}") from exc


def diff_maps(
    store: ObjectLoader, a: ObjectId | None, b: ObjectId | None
) -> Iterator[tuple[Entry | None, Entry | None]]:
    """Yield ``(old, new)`` for every key whose entry differs between maps ``a`` and ``b``.

    ``None`` stands for an empty map. Entries come in key order; ``old`` is None for an added
    key and ``new`` None for a removed one.
    """
    if a == b:
        return
    left = _roots(store, a)
    right = _roots(store, b)
    while True:
        shared = {oid for oid, _ in left} & {oid for oid, _ in right}
        left = [item for item in left if item[0] not in shared]
        right = [item for item in right if item[0] not in shared]
        top = max((level for _, level in left + right), default=0)
        if top == 0:
            break
        left = _expand(store, left, top)
        right = _expand(store, right, top)
    yield from _merge(_leaf_entries(store, left), _leaf_entries(store, right))


def _roots(store: ObjectLoader, oid: ObjectId | None) -> list[tuple[ObjectId, int]]:
    if oid is None:
        return []
    node = load_node(store, oid)
    return [(oid, node.level if isinstance(node, Index) else 0)]


def _expand(
    store: ObjectLoader, items: list[tuple[ObjectId, int]], top: int
) -> list[tuple[ObjectId, int]]:
    out: list[tuple[ObjectId, int]] = []
    for oid, level in items:
        if level != top:
            out.append((oid, level))
            continue
        node = load_node(store, oid)
        if not isinstance(node, Index) or node.level != level:
            raise DecodeError(f"node {oid.hex()} is not an index of level {level}")
        out.extend((child.oid, level - 1) for child in node.entries)
    return out


def _leaf_entries(store: ObjectLoader, items: list[tuple[ObjectId, int]]) -> list[Entry]:
    entries: list[Entry] = []
    for oid, _ in items:
        node = load_node(store, oid)
        if isinstance(node, Index):
            raise DecodeError(f"node {oid.hex()} should be a leaf")
        entries.extend(node.entries)
    return entries


def diff_dirs(
    store: ObjectLoader, a: ObjectId | None, b: ObjectId | None
) -> Iterator[tuple[DirEntry | None, DirEntry | None]]:
    """:func:`diff_maps` of two directory maps, refusing maps that hold other entries."""
    for old, new in diff_maps(store, a, b):
        if not isinstance(old, DirEntry | None) or not isinstance(new, DirEntry | None):
            raise DecodeError(f"directory {(b or a).hex()} holds chunk entries")  # type: ignore[union-attr]
        yield old, new


def diff_regions(
    store: ObjectLoader, a: ObjectId | None, b: ObjectId | None
) -> Iterator[tuple[ChunkEntry | None, ChunkEntry | None]]:
    """:func:`diff_maps` of two region maps, refusing maps that hold other entries."""
    for old, new in diff_maps(store, a, b):
        if not isinstance(old, ChunkEntry | None) or not isinstance(new, ChunkEntry | None):
            raise DecodeError(f"region {(b or a).hex()} holds directory entries")  # type: ignore[union-attr]
        yield old, new


def _merge(old: list[Entry], new: list[Entry]) -> Iterator[tuple[Entry | None, Entry | None]]:
    i = j = 0
    while i < len(old) or j < len(new):
        ko = _key(old[i]) if i < len(old) else None
        kn = _key(new[j]) if j < len(new) else None
        if kn is None or (ko is not None and ko < kn):  # type: ignore[operator]
            yield old[i], None
            i += 1
        elif ko is None or kn < ko:  # type: ignore[operator]
            yield None, new[j]
            j += 1
        else:
            if old[i] != new[j]:
                yield old[i], new[j]
            i += 1
            j += 1


# -- the world tree: directories of files, folders and regions ------------------------------


# Worlds nest a few folders deep; a tree nested deeper than this is hostile or broken, and
# refusing it keeps the recursive walks far from Python's recursion limit.
MAX_TREE_DEPTH = 128


def _check_depth(prefix: str) -> None:
    if prefix.count("/") >= MAX_TREE_DEPTH:
        raise DecodeError(f"{prefix[:200]}...: folders nested deeper than {MAX_TREE_DEPTH}")


def iter_tree(
    store: ObjectLoader, root: ObjectId, prefix: str = ""
) -> Iterator[tuple[str, DirEntry]]:
    """Yield ``(path, entry)`` for every entry under ``root`` (``/``-separated), folders first."""
    _check_depth(prefix)
    for entry in iter_dir(store, root):
        path = f"{prefix}{entry.name}"
        yield path, entry
        if entry.kind is EntryKind.DIR:
            yield from iter_tree(store, entry.oid, path + "/")


def diff_trees(
    store: ObjectLoader, a: ObjectId | None, b: ObjectId | None, prefix: str = ""
) -> Iterator[tuple[str, DirEntry | None, DirEntry | None]]:
    """Yield ``(path, old, new)`` for each differing entry of two world trees.

    Equal subtrees are skipped by id. A folder present on both sides is descended into and not
    reported itself; a folder added or removed is reported, followed by everything under it.
    """
    _check_depth(prefix)
    for old, new in diff_dirs(store, a, b):
        name = old.name if old is not None else new.name  # type: ignore[union-attr]
        path = prefix + name
        if "/" in name:  # a name is one component: "a/b" would pass restore's checks as a/b
            raise UnsafePath(path, f"component {name!r} contains '/'")
        old_dir = old.oid if old is not None and old.kind is EntryKind.DIR else None
        new_dir = new.oid if new is not None and new.kind is EntryKind.DIR else None
        if old_dir is not None and new_dir is not None:
            yield from diff_trees(store, old_dir, new_dir, path + "/")
            continue
        # Children go before their removed folder and after their added one, the order in
        # which restore can apply them.
        if old_dir is not None:
            yield from diff_trees(store, old_dir, None, path + "/")
        yield path, old, new
        if new_dir is not None:
            yield from diff_trees(store, None, new_dir, path + "/")
