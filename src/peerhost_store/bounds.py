"""Bounds on a world tree: which names it may hold and how far it may expand. Pure: it reads
nodes through a loader and returns values.

A tree is a DAG: two directory entries may point at one subtree, which is then stored once
but written twice. A "DAG bomb" is a few KB of nodes whose entries all point at one shared
subtree, level after level: millions of paths, tens of GB to write. Walking it path by path
(``iter_tree``, ``diff_trees``) is what hangs. Here every *distinct* node is read once and
summarised (:class:`Summary`: entries, chunks, bytes and folder depth of everything below it,
every copy of a shared subtree counted), so a bomb is refused in time proportional to its
stored size.

Two users:

* the coordinator, at every head move (:func:`check_snapshot`): exact. It reads every node the
  new snapshot adds, the stored size of every blob they reach, checks the sizes the entries
  declare, names (portable rules), case collisions, the order of keys across pages and what
  ``region.write_region`` would refuse. Summaries of nodes it accepted are stored with their
  completeness marks, so a later push reads only what it adds.
* the client, before it writes a tree (:func:`check_tree`): it reads directory nodes only
  (as ``iter_tree`` did) and counts sizes as the entries declare them: a lower bound of the
  coordinator's count, so a tree an honest coordinator accepted passes here too, and a bomb
  from a hostile one is refused before the first file is written. Restore checks while it
  writes that each file is as long as its entry says.

Errors::

    DecodeError
     +-- TreeRefused        a bound is exceeded, or the tree cannot be written as it is
    UnsafePath              a name that restore refuses (worldfs)
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Protocol, cast

import msgpack

from .errors import DecodeError, ObjectMissing
from .ids import ObjectId
from .objects import (
    DirEntry,
    DirLeaf,
    EntryKind,
    Index,
    Object,
    RegionLeaf,
    Snapshot,
    blob_length,
    decode,
)
from .region import COMPRESSIONS, HEADER_SIZE, SECTOR, region_coords
from .worldfs import EXCLUDED_AT_ROOT, UnsafePath, check_name, fold_name

__all__ = [
    "CLIENT_LIMITS",
    "PEEK_BYTES",
    "READ_BATCH",
    "Known",
    "NodeLoader",
    "SizedLoader",
    "SnapshotCheck",
    "Summary",
    "TreeLimits",
    "TreeRefused",
    "check_snapshot",
    "check_tree",
]

#: Objects read per store call by the coordinator's walk.
READ_BATCH = 1024
#: Bytes of a blob object's start that :func:`peerhost_store.objects.blob_length` needs.
PEEK_BYTES = 7
_MAX_INLINE_SECTORS = 255  # region.write_region refuses more (the sector count is one byte)


@dataclass(frozen=True)
class TreeLimits:
    """How far one snapshot's tree may expand, every copy of a shared subtree counted.

    The defaults are far above real worlds (the largest in ``worlds/``: 43 entries, 4,856
    chunks, 20 MB, 5 folders deep; a large multiplayer world: some 10,000 files, a few
    million chunks, tens of GB) and far below what a bomb reaches.

    Attributes:
        max_entries: files, folders and region files.
        max_chunks: chunk entries of all region files.
        max_bytes: bytes a restore writes (files, region files as laid out, ``.mcc`` files).
        max_depth: folders nested in folders (the world folder's children are depth 1).
    """

    max_entries: int = 200_000
    max_chunks: int = 8_000_000
    max_bytes: int = 32 << 30
    max_depth: int = 64

    @property
    def max_nodes(self) -> int:
        """Distinct new nodes one check reads at most: a tree within the limits needs far
        fewer (leaves hold up to 8 chunks or 32 names), so a walk past this is refused
        before it holds more in memory."""
        return self.max_entries + self.max_chunks


#: The bounds :func:`check_tree` applies unless given others (a client's restore).
CLIENT_LIMITS = TreeLimits()


class TreeRefused(DecodeError):
    """A tree that breaks a bound or could not be written as it is.

    Attributes:
        what: ``entries``, ``chunks``, ``bytes``, ``depth``, ``nodes`` (a bound) or
            ``shape`` (sizes that do not match, keys out of order, an unwritable region).
        path: where in the tree (``/`` for the root; the first path that reaches the node).
        value: the count that broke the bound (bounds only).
        limit: the bound (bounds only).
    """

    def __init__(self, what: str, path: str, message: str, value: int | None = None,
                 limit: int | None = None) -> None:
        self.what = what
        self.path = path
        self.value = value
        self.limit = limit
        super().__init__(message)


# -- summaries --------------------------------------------------------------------------------

DIR, REGION, SNAPSHOT = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Summary:
    """What a node expands to: for a map node, the entries below it; for a snapshot, its tree.

    Attributes:
        kind: :data:`DIR`, :data:`REGION` (a node of a region map) or :data:`SNAPSHOT`.
        level: 0 for a leaf, the index level otherwise.
        entries: files, folders and regions below, every copy counted.
        chunks: chunk entries below.
        size: bytes a restore writes for them (exact at the coordinator, a lower bound in
            :func:`check_tree`).
        depth: deepest folder nesting below (a folder holding only files is 1 for its parent).
        reserved: a directory node holding a name excluded at the world's root
            (``.peerhost``, ``session.lock``): that map may not be a snapshot's root.
        first, last: a region node's lowest and highest slot (-1 when it holds none).
        external: a region node holding a chunk stored in a ``.mcc`` file.
        unwritable: why ``write_region`` would refuse a region node's chunks ("" if it
            would not); only matters for a region file restored from its chunks.
    """

    kind: int
    level: int = 0
    entries: int = 0
    chunks: int = 0
    size: int = 0
    depth: int = 0
    reserved: bool = False
    first: int = -1
    last: int = -1
    external: bool = False
    unwritable: str = ""

    def to_bytes(self) -> bytes:
        """The stored form (the value of a completeness mark)."""
        return msgpack.packb([1, self.kind, self.level, self.entries, self.chunks,  # type: ignore[no-any-return]
                              self.size, self.depth, self.reserved, self.first, self.last,
                              self.external, self.unwritable])

    @classmethod
    def from_bytes(cls, data: bytes) -> Summary | None:
        """Read a stored summary; None for a mark written without one (or unreadable)."""
        try:
            (version, kind, level, entries, chunks, size, depth, reserved, first, last,
             external, unwritable) = msgpack.unpackb(data)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        if version != 1:
            return None
        return cls(int(kind), int(level), int(entries), int(chunks), int(size), int(depth),
                   bool(reserved), int(first), int(last), bool(external), str(unwritable))

    def within(self, limits: TreeLimits, path: str) -> None:
        """Refuse (:class:`TreeRefused`) a summary past ``limits``."""
        for what, value, limit, noun in (
            ("entries", self.entries, limits.max_entries, "files and folders"),
            ("chunks", self.chunks, limits.max_chunks, "chunks"),
            ("bytes", self.size, limits.max_bytes, "bytes"),
        ):
            if value > limit:
                raise TreeRefused(what, path, f"{path}: the tree expands to {value:,} {noun}; "
                                  f"at most {limit:,} are accepted", value, limit)
        if self.depth > limits.max_depth:
            raise TreeRefused("depth", path, f"{path}: folders nested deeper than "
                              f"{limits.max_depth} ({self.depth})", self.depth, limits.max_depth)


# -- the walk ---------------------------------------------------------------------------------


class NodeLoader(Protocol):
    """What the client's check reads through: a store, or a view of one."""

    def get_many(self, oids: list[ObjectId]) -> list[bytes]: ...


class SizedLoader(NodeLoader, Protocol):
    """What the coordinator's check reads through."""

    def peek(self, oids: list[ObjectId], n: int) -> list[tuple[int, bytes] | None]:
        """Each object's stored size and first ``n`` bytes; None when it is not stored."""
        ...


Known = Callable[[list[ObjectId]], list["Summary | None"]]


@dataclass
class SnapshotCheck:
    """The result of :func:`check_snapshot`.

    Attributes:
        missing: the first object found missing, or None when the snapshot is complete.
        where: what needed the missing object.
        summaries: every node and snapshot the check read and accepted, with its summary;
            the caller stores them with its completeness marks.
        summary: the snapshot's own summary (None when something is missing).
        checked: objects the check looked at (its cost).
    """

    missing: ObjectId | None = None
    where: str = ""
    summaries: dict[ObjectId, Summary] = field(default_factory=dict)
    summary: Summary | None = None
    checked: int = 0


class _Incomplete(Exception):
    def __init__(self, oid: ObjectId, where: str) -> None:
        self.oid, self.where = oid, where


def check_snapshot(store: SizedLoader, known: Known, root: ObjectId, limits: TreeLimits, *,
                   shallow: Container[ObjectId] = frozenset()) -> SnapshotCheck:
    """Check that snapshot ``root`` is complete and its tree (and that of every new snapshot
    it reaches) within ``limits``, as the coordinator must before the head moves to it.

    Nodes ``known`` gives a summary for (checked before) are not entered. Parents of
    ``shallow`` snapshots (history cut by retention) are not followed.

    Raises:
        TreeRefused: a bound is exceeded, sizes do not match, keys are out of order, or a
            region file could not be written.
        UnsafePath: a name restore refuses (portable rules), a case collision, or a name
            excluded at the root of a snapshot's tree.
        DecodeError: an object is malformed or not of the kind its reference expects.
    """
    walk = _Walk(store, limits, exact=True, known=known, shallow=shallow)
    result = SnapshotCheck()
    try:
        walk.read(root, "snapshot")
    except _Incomplete as exc:
        result.missing, result.where, result.checked = exc.oid, exc.where, walk.checked
        return result
    summary = walk.finish(root)
    result.summaries = {oid: walk.memo[oid] for oid in walk.nodes}
    result.summary, result.checked = summary, walk.checked
    return result


def check_tree(store: NodeLoader, root: ObjectId, limits: TreeLimits | None = None) -> Summary:
    """Check a world tree before writing it: names, case collisions, depth and what its
    entries declare (entries, chunks, a lower bound of the bytes), reading directory nodes
    only, each distinct one once.

    Raises:
        TreeRefused: a bound is exceeded.
        UnsafePath: a name restore refuses, a case collision, or a name excluded at the root.
        DecodeError: a node is malformed.
        ObjectMissing: a directory node is not stored.
    """
    walk = _Walk(store, limits or CLIENT_LIMITS, exact=False)
    walk.read(root, "dir")
    return walk.finish(root)


_KIND_OF = {"snapshot": SNAPSHOT, "dir": DIR, "region": REGION}


@dataclass
class _Node:
    kind: str
    obj: Object | None  # None for a region leaf: its summary (``local``) is all that is needed
    path: str
    local: Summary  # what the node's own entries add (files, blobs), before its children


class _Walk:
    """Reads the new nodes breadth-first, a level per batch, then summarises them bottom-up."""

    def __init__(self, store: NodeLoader, limits: TreeLimits, *, exact: bool,
                 known: Known | None = None, shallow: Container[ObjectId] = frozenset()) -> None:
        self.store = store
        self.limits = limits
        self.exact = exact
        self.known = known
        self.shallow = shallow
        self.nodes: dict[ObjectId, _Node] = {}
        self.memo: dict[ObjectId, Summary] = {}
        self.map_roots: dict[ObjectId, str] = {}  # directory maps (folders, tree roots): path
        self.checked = 0

    # phase 1: read what is new -----------------------------------------------------------

    def read(self, root: ObjectId, kind: str) -> None:
        seen = {root}
        frontier = [(root, kind, "/")]
        if kind == "dir":
            self.map_roots[root] = "/"
        while frontier:
            self.checked += len(frontier)
            todo = frontier
            if self.known is not None:
                hits = self.known([oid for oid, _, _ in frontier])
                todo = []
                for item, summary in zip(frontier, hits, strict=True):
                    if summary is None:
                        todo.append(item)
                    else:
                        self.memo[item[0]] = summary
            if len(self.nodes) + len(todo) > self.limits.max_nodes:
                raise TreeRefused("nodes", todo[0][2], f"{todo[0][2]}: the tree holds more "
                                  f"than {self.limits.max_nodes:,} distinct nodes",
                                  len(self.nodes) + len(todo), self.limits.max_nodes)
            after: list[tuple[ObjectId, str, str]] = []
            for start in range(0, len(todo), READ_BATCH):
                after += self._read_batch(todo[start : start + READ_BATCH])
            frontier = []
            for item in after:
                if item[0] not in seen:
                    seen.add(item[0])
                    frontier.append(item)

    def _read_batch(self, part: list[tuple[ObjectId, str, str]]) -> list[tuple[ObjectId, str, str]]:
        ids = [oid for oid, _, _ in part]
        try:
            datas = self.store.get_many(ids)
        except ObjectMissing as exc:
            if not self.exact:
                raise
            raise _Incomplete(exc.oid, next(p for o, _, p in part if o == exc.oid)) from None
        objs = [_decode(oid, data, kind) for (oid, kind, _), data in zip(part, datas, strict=True)]
        sizes = self._blob_sizes(part, objs)
        children: list[tuple[ObjectId, str, str]] = []
        for (oid, kind, path), obj in zip(part, objs, strict=True):
            local = self._local(oid, kind, path, obj, sizes)
            # Region leaves are most of a world's nodes: keep their summary, not their chunks.
            kept = None if isinstance(obj, RegionLeaf) else obj
            self.nodes[oid] = _Node(kind, kept, path, local)
            children += self._children(oid, kind, path, obj)
        return children

    def _children(self, oid: ObjectId, kind: str, path: str, obj: Object
                  ) -> list[tuple[ObjectId, str, str]]:
        if isinstance(obj, Snapshot):
            self.map_roots.setdefault(obj.root, "/")
            out = [(obj.root, "dir", "/")]
            if oid not in self.shallow:
                out += [(p, "snapshot", f"parent of snapshot {oid.hex()[:12]}")
                        for p in obj.parents]
            return out
        if isinstance(obj, Index):
            return [(e.oid, kind, path) for e in obj.entries]
        if isinstance(obj, RegionLeaf):
            return []
        assert isinstance(obj, DirLeaf)
        out = []
        for e in obj.entries:
            sub = _join(path, e.name)
            if e.kind is EntryKind.DIR:
                self.map_roots.setdefault(e.oid, sub + "/")
                out.append((e.oid, "dir", sub + "/"))
            elif e.kind is EntryKind.REGION and self.exact:
                out.append((e.oid, "region", sub))
        return out

    def _blob_sizes(self, part: list[tuple[ObjectId, str, str]], objs: list[Object]
                    ) -> dict[ObjectId, int]:
        """The payload size of every blob this batch's leaves point at (coordinator only)."""
        if not self.exact:
            return {}
        store = cast(SizedLoader, self.store)  # check_snapshot's contract
        wanted: dict[ObjectId, str] = {}
        for (_, _, path), obj in zip(part, objs, strict=True):
            if isinstance(obj, RegionLeaf):
                wanted.update((c.oid, f"{path} chunk slot {c.slot}") for c in obj.entries)
            elif isinstance(obj, DirLeaf):
                for e in obj.entries:
                    if e.kind is EntryKind.FILE:
                        wanted[e.oid] = _join(path, e.name)
                    elif e.raw is not None:
                        wanted[e.raw] = _join(path, e.name) + " (whole file)"
        ids = list(wanted)
        self.checked += len(ids)
        out: dict[ObjectId, int] = {}
        for start in range(0, len(ids), READ_BATCH):
            chunk = ids[start : start + READ_BATCH]
            for oid, peeked in zip(chunk, store.peek(chunk, PEEK_BYTES), strict=True):
                if peeked is None:
                    raise _Incomplete(oid, wanted[oid])
                length = blob_length(peeked[1], peeked[0])
                if length is None:
                    raise TreeRefused("shape", wanted[oid], f"{wanted[oid]}: object "
                                      f"{oid.hex()} is referenced as a blob but is not one")
                out[oid] = length
        return out

    def _local(self, oid: ObjectId, kind: str, path: str, obj: Object,
               sizes: dict[ObjectId, int]) -> Summary:
        if isinstance(obj, RegionLeaf):
            return _region_leaf(obj, sizes)
        if isinstance(obj, DirLeaf):
            return self._dir_leaf(obj, path, sizes)
        if isinstance(obj, Index):
            return Summary(_KIND_OF[kind], obj.level)
        return Summary(SNAPSHOT)

    def _dir_leaf(self, leaf: DirLeaf, path: str, sizes: dict[ObjectId, int]) -> Summary:
        total = 0
        reserved = False
        for e in leaf.entries:
            sub = _join(path, e.name)
            check_name(e.name, sub.lstrip("/"), portable=self.exact)
            reserved = reserved or e.name in EXCLUDED_AT_ROOT
            if e.kind is EntryKind.FILE:
                if self.exact and sizes[e.oid] != e.size:
                    raise TreeRefused("shape", sub, f"{sub}: the entry says {e.size} bytes, its "
                                      f"blob holds {sizes[e.oid]}")
                total += e.size
            elif e.kind is EntryKind.REGION and e.raw is not None and self.exact:
                total += sizes[e.raw]
            elif e.kind is EntryKind.REGION and not self.exact:
                # What the entry declares; each chunk takes one sector at least.
                total += 0 if e.raw is not None else HEADER_SIZE + SECTOR * e.size
        return Summary(DIR, 0, entries=len(leaf.entries), size=total, reserved=reserved)

    # phase 2: summarise bottom-up ---------------------------------------------------------

    def finish(self, root: ObjectId) -> Summary:
        for oid in self._post_order():
            node = self.nodes[oid]
            summary = self._combine(node)
            if summary.kind != REGION:
                summary.within(self.limits, node.path)
            self.memo[oid] = summary
            if summary.kind == SNAPSHOT:
                assert isinstance(node.obj, Snapshot)
                self._check_root(node.obj.root)
        for oid, path in self.map_roots.items():
            if oid in self.nodes:
                self._check_names(oid, path)
        summary = self.memo[root]
        summary.within(self.limits, "/")  # a root checked before, under other limits
        if summary.kind == DIR:
            self._check_root(root)
        elif summary.reserved:
            raise UnsafePath("/", "the snapshot's tree holds a name that is not part of a "
                             "world tree at its root")
        return summary

    def _check_root(self, tree: ObjectId) -> None:
        """A tree root may not hold ``.peerhost`` or ``session.lock`` (restore refuses them)."""
        if self.memo[tree].reserved:
            name = next(n for n in self._names(tree) if n in EXCLUDED_AT_ROOT)
            raise UnsafePath(name, f"{name!r} is not part of a world tree")

    def _post_order(self) -> Iterator[ObjectId]:
        """New nodes, children before parents (iterative: trees may be deep)."""
        done: set[ObjectId] = set()
        stack = [(oid, False) for oid in reversed(self.nodes)]
        while stack:
            oid, expanded = stack.pop()
            if oid in done or oid not in self.nodes:
                continue
            if expanded:
                done.add(oid)
                yield oid
                continue
            stack.append((oid, True))
            stack.extend((child, False) for child in self._child_ids(self.nodes[oid].obj)
                         if child not in done)

    def _child_ids(self, obj: Object | None) -> list[ObjectId]:
        if isinstance(obj, Snapshot):
            return [obj.root]  # parents are snapshots of their own: checked for themselves
        if isinstance(obj, Index):
            return [e.oid for e in obj.entries]
        if isinstance(obj, DirLeaf):
            return [e.oid for e in obj.entries if e.kind is EntryKind.DIR
                    or (e.kind is EntryKind.REGION and self.exact)]
        return []

    def _combine(self, node: _Node) -> Summary:
        obj, local = node.obj, node.local
        if isinstance(obj, Snapshot):
            tree = self.memo[obj.root]
            return Summary(SNAPSHOT, 0, tree.entries, tree.chunks, tree.size, tree.depth,
                           tree.reserved)
        if isinstance(obj, Index):
            return self._index(obj, node)
        if obj is None:  # a region leaf
            return local
        assert isinstance(obj, DirLeaf)
        entries, chunks, size, depth = local.entries, 0, local.size, 0
        for e in obj.entries:
            sub = _join(node.path, e.name)
            if e.kind is EntryKind.DIR:
                child = self._expect(e.oid, DIR, sub)
                entries += child.entries
                chunks += child.chunks
                size += child.size
                depth = max(depth, child.depth + 1)
            elif e.kind is EntryKind.REGION:
                chunks += self._region_entry(e, sub) if self.exact else e.size
                if self.exact and e.raw is None:
                    size += HEADER_SIZE + self.memo[e.oid].size
        return Summary(DIR, 0, entries, chunks, size, depth, local.reserved)

    def _region_entry(self, e: DirEntry, path: str) -> int:
        region = self._expect(e.oid, REGION, path)
        if region.chunks != e.size:
            raise TreeRefused("shape", path, f"{path}: the entry says {e.size} chunks, its "
                              f"region map holds {region.chunks}")
        if e.raw is None and region.unwritable:
            raise TreeRefused("shape", path, f"{path}: cannot be written as a region file: "
                              f"{region.unwritable}")
        if e.raw is None and region.external and region_coords(e.name) is None:
            raise TreeRefused("shape", path, f"{path}: external chunks in a file that is not "
                              "r.X.Z.mca")
        return region.chunks

    def _expect(self, oid: ObjectId, kind: int, path: str) -> Summary:
        summary = self.memo[oid]
        if summary.kind != kind:
            raise TreeRefused("shape", path, f"{path}: node {oid.hex()[:12]} is of the wrong kind")
        return summary

    def _index(self, obj: Index, node: _Node) -> Summary:
        kind = DIR if node.kind == "dir" else REGION
        kids = [self._expect(e.oid, kind, node.path) for e in obj.entries]
        if any(k.level != obj.level - 1 for k in kids):
            raise TreeRefused("shape", node.path, f"{node.path}: index node of level "
                              f"{obj.level} has children of another level")
        if kind == REGION:
            slots = [(k.first, k.last) for k in kids if k.first >= 0]
            if any(a[1] >= b[0] for a, b in pairwise(slots)):
                raise TreeRefused("shape", node.path, f"{node.path}: chunk slots out of order "
                                  "across the region map's pages")
        return Summary(
            kind, obj.level, sum(k.entries for k in kids), sum(k.chunks for k in kids),
            sum(k.size for k in kids), max(k.depth for k in kids),
            any(k.reserved for k in kids), min((k.first for k in kids if k.first >= 0), default=-1),
            max(k.last for k in kids), any(k.external for k in kids),
            next((k.unwritable for k in kids if k.unwritable), ""),
        )

    # phase 3: names across a directory's pages -------------------------------------------

    def _check_names(self, oid: ObjectId, path: str) -> None:
        """Names of one directory map: strictly increasing across its pages (restore and diff
        rely on it) and distinct once case and normalisation are folded (Windows, macOS)."""
        seen: dict[str, str] = {}
        previous: str | None = None
        for name in self._names(oid):
            if previous is not None and name <= previous:
                raise TreeRefused("shape", path, f"{path}: names out of order across the "
                                  f"directory's pages ({previous!r}, {name!r})")
            previous = name
            other = seen.setdefault(fold_name(name), name)
            if other != name:
                raise UnsafePath(_join(path, name).lstrip("/"), f"it is the same file as "
                                 f"{other!r} on a case-insensitive file system (Windows, macOS)")

    def _names(self, oid: ObjectId) -> Iterator[str]:
        stack = [oid]
        while stack:
            current = stack.pop()
            node = self.nodes.get(current)
            obj = node.obj if node is not None else decode(self.store.get_many([current])[0])
            if isinstance(obj, Index):
                stack.extend(e.oid for e in reversed(obj.entries))
            elif isinstance(obj, DirLeaf):
                yield from (e.name for e in obj.entries)


_EXPECTED: dict[str, tuple[type, ...]] = {
    "snapshot": (Snapshot,), "dir": (DirLeaf, Index), "region": (RegionLeaf, Index),
}


def _decode(oid: ObjectId, data: bytes, kind: str) -> Object:
    obj = decode(data)
    if not isinstance(obj, _EXPECTED[kind]):
        raise DecodeError(f"object {oid.hex()} is referenced as a {kind} but is a "
                          f"{type(obj).__name__}")
    return obj


def _join(path: str, name: str) -> str:
    return f"{path}{name}" if path.endswith("/") else f"{path}/{name}"


def _region_leaf(leaf: RegionLeaf, sizes: dict[ObjectId, int]) -> Summary:
    """A region leaf's chunks as ``region.write_region`` lays them out (coordinator only)."""
    total = 0
    external = False
    unwritable = ""
    for c in leaf.entries:
        payload = sizes[c.oid]
        if c.compression not in COMPRESSIONS and not unwritable:
            unwritable = f"chunk slot {c.slot}: unknown compression {c.compression}"
        if c.external:
            external = True
            total += SECTOR + payload  # a one-sector stub, the payload in its .mcc file
            continue
        sectors = -(-(5 + payload) // SECTOR)
        if sectors > _MAX_INLINE_SECTORS and not unwritable:
            unwritable = (f"chunk slot {c.slot}: {5 + payload} bytes need {sectors} sectors; at "
                          f"most {_MAX_INLINE_SECTORS} fit inline")
        total += sectors * SECTOR
    first = leaf.entries[0].slot if leaf.entries else -1
    last = leaf.entries[-1].slot if leaf.entries else -1
    return Summary(REGION, 0, chunks=len(leaf.entries), size=total, first=first, last=last,
                   external=external, unwritable=unwritable)
