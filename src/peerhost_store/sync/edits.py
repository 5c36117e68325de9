"""Tree uploads: the receiver rebuilds a snapshot's tree from what changed. Pure: it reads
through a store and never touches the network.

A play session changes a few chunks in many region files, and each changed chunk re-stores a
leaf of 8 slots, two index nodes and the folders above: mostly ids the receiver already holds,
which do not compress (32 random bytes each). The shape of a tree is deterministic
(:mod:`peerhost_store.tree`), so the receiver can build those nodes itself. A tree upload
carries only what changed from a *base* tree the receiver holds complete to the new *root*:

* ``files``: each entry that changed whole (a file, a damaged region kept whole, a folder
  added, removed or replaced, with its insides), as :func:`peerhost_store.area.tree_changes`
  gives it;
* ``regions``: for each region file both trees parse, its changed slots: emptied, or set to a
  chunk entry (compression, timestamp, external) whose blob id is sent, left to the batch, or
  the one the base holds at that slot (a chunk re-saved unchanged, its timestamp alone new);
* ``batch``: a :mod:`peerhost_store.sync.delta` batch, one item for each chunk whose id was
  left out, in path then slot order, each against the chunk the base holds at the same path
  and slot (a raw item where it holds none). A region file new at its path may name the
  path whose slots its items pair with instead: the file the change removed from the same
  place in the world (a game upgrade that moved the folder).

The receiver rebuilds each item's blob and hashes it for its id (:func:`chunk_wants` names
the bases), puts those ids into the chunk entries, grafts the changes onto the base
(:func:`peerhost_store.area.graft_changes`) and compares the root with the one sent. A Merkle
root that matches proves every node and every derived id (invariant 2); one that does not
refuses the whole upload, and the sender falls back to sending nodes whole. The sender runs the
same graft before it sends (:func:`plan_tree`), so a tree this cannot express is never sent.

Body (msgpack)::

    [1, base, root, changes, batch]

``changes`` is one zstd frame (its size declared) of the msgpack value ``[files, regions]``:
``files`` a list of ``[path, nil]`` (removed) or ``[path, kind, id, size]`` (with a fifth
field, the raw blob id, for a damaged region), sorted by path; ``regions`` a list of
``[path, [change...]]`` (or ``[path, [change...], base path]``) sorted by path, each change ``[slot]`` (emptied) or ``[slot, id,
compression, timestamp, external]`` with slots increasing, where the id is nil (the batch's
next item) or 0 (the base's blob at that slot).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from ..area import GraftRefused, graft_changes, lookup_paths, tree_changes
from ..errors import DecodeError, PeerhostError
from ..ids import ID_SIZE, ObjectId, hash_bytes
from ..objects import ChunkEntry, DirEntry, EntryKind
from ..tree import MAX_TREE_DEPTH, Add, NodeCache, ObjectLoader, diff_trees, lookup_map
from .batches import Built, PayloadReader, Rebuilder, build_items
from .delta import DeltaItem, decode_batch, encode_batch
from .pairing import ChunkRef, Pair, chunk_key
from .protocol import BATCH_LEVEL, ProtocolError, decompress_body

__all__ = [
    "DERIVED",
    "EDIT_VERSION",
    "KEPT",
    "BuiltUpload",
    "ChunkWant",
    "Rebuilt",
    "TreeNotRebuilt",
    "TreePlan",
    "TreeUpload",
    "build_upload",
    "chunk_wants",
    "decode_tree_upload",
    "derived_slots",
    "encode_derived",
    "encode_tree_upload",
    "plan_tree",
    "rebuild_tree",
    "rebuild_upload",
]

EDIT_VERSION = 1
DERIVED = ObjectId(bytes(ID_SIZE))
"""The id of a chunk entry whose blob the batch rebuilds (no object hashes to it), and the
new id of each item in the batch's want list."""
KEPT = ObjectId(b"\xff" * ID_SIZE)
"""The id of a chunk entry that keeps the blob the base holds at its slot (a chunk whose
timestamp alone changed)."""

_MAX_PATH = 1024  # characters; world paths are a few dozen
_LEVEL = 19

_Regions = dict[str, dict[int, ChunkEntry | None]]
_Files = dict[str, DirEntry | None]


class _Malformed(ProtocolError):
    pass


@dataclass(frozen=True)
class TreeUpload:
    """A decoded tree upload: the changes from tree ``base`` to tree ``root``, chunk entries
    with id :data:`DERIVED` for those ``batch`` rebuilds."""

    base: ObjectId
    root: ObjectId
    files: _Files
    regions: _Regions
    batch: bytes
    #: Region files new at their path whose items pair with another path's slots in the base
    #: (the same place in the world: a game upgrade moved the folder).
    moved: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkWant:
    """A chunk the batch rebuilds: where it is, and the chunk the base holds there."""

    path: str
    slot: int
    base: ChunkEntry | None


@dataclass(frozen=True)
class TreePlan:
    """What a sender sends for tree ``root`` against ``base`` (see :func:`plan_tree`).

    Attributes:
        files, regions: the changes, with real ids.
        derived: ``(path, slot)`` of each chunk left to the batch, in batch order.
        kept: ``(path, slot)`` of each chunk that keeps the base's blob there.
        pairs: for :func:`peerhost_store.sync.batches.build_items`, one per derived chunk.
        nodes: id -> bytes of every node the graft made: what the receiver will store.
        moved: as :attr:`TreeUpload.moved`.
    """

    base: ObjectId
    root: ObjectId
    files: _Files
    regions: _Regions
    derived: list[tuple[str, int]]
    kept: list[tuple[str, int]]
    pairs: list[Pair]
    nodes: dict[ObjectId, bytes]
    moved: dict[str, str] = field(default_factory=dict)

    def upload(self, batch: bytes) -> bytes:
        """The body that sends this plan with ``batch`` (its items in :attr:`pairs` order,
        encoded for the want list :func:`chunk_wants` gives the receiver)."""
        ids = dict.fromkeys(self.derived, DERIVED) | dict.fromkeys(self.kept, KEPT)
        regions = {path: {slot: (e if e is None or (path, slot) not in ids
                                 else e._replace(oid=ids[(path, slot)]))
                          for slot, e in slots.items()}
                   for path, slots in self.regions.items()}
        return encode_tree_upload(TreeUpload(self.base, self.root, self.files, regions, batch,
                                             self.moved))


def derived_slots(regions: Mapping[str, Mapping[int, ChunkEntry | None]], oid: ObjectId = DERIVED
                  ) -> list[tuple[str, int]]:
    """``(path, slot)`` of each chunk entry with id ``oid`` (:data:`DERIVED`: in batch
    order; or :data:`KEPT`)."""
    return [(path, slot) for path in sorted(regions) for slot in sorted(regions[path])
            if (e := regions[path][slot]) is not None and e.oid == oid]


def chunk_wants(store: ObjectLoader, base: ObjectId, slots: Sequence[tuple[str, int]],
                moved: Mapping[str, str] | None = None) -> list[ChunkWant]:
    """The chunk tree ``base`` holds at each ``(path, slot)``, or at that slot of
    ``moved[path]`` (None: none there, or the file is not a region map there), reading only
    the maps and pages on the way."""
    moved = moved or {}
    slots = [(moved.get(path, path), slot) for path, slot in slots]
    by_path: dict[str, set[int]] = {}
    for path, slot in slots:
        by_path.setdefault(path, set()).add(slot)
    found = lookup_paths(store, base, by_path)
    chunks: dict[tuple[str, int], ChunkEntry] = {}
    for path, wanted in by_path.items():
        entry = found.get(path)
        if entry is None or entry.kind is not EntryKind.REGION or entry.raw is not None:
            continue
        for key, chunk in lookup_map(store, entry.oid, wanted).items():
            assert isinstance(chunk, ChunkEntry)
            chunks[(path, int(key))] = chunk
    return [ChunkWant(path, slot, chunks.get((path, slot))) for path, slot in slots]


def _moved(store: ObjectLoader, base: ObjectId, root: ObjectId, regions: _Regions
           ) -> dict[str, str]:
    """Region files of ``regions`` new at their path, set beside the one ``base`` held for
    the same place in the world, where the change removed that one."""
    found = lookup_paths(store, base, regions)
    new = [path for path in regions if path not in found]
    if not new:
        return {}
    removed: dict[object, str] = {}
    for path, old, entry in diff_trees(store, base, root):
        if (old is not None and old.kind is EntryKind.REGION and old.raw is None
                and (entry is None or entry.kind is not EntryKind.REGION)):
            key = chunk_key(path, 0)
            if key is not None:
                removed.setdefault(key, path)
    return {path: removed[key] for path in new
            if (key := chunk_key(path, 0)) is not None and key in removed}


def plan_tree(store: ObjectLoader, base: ObjectId, root: ObjectId) -> TreePlan | None:
    """The tree upload of ``root`` against ``base`` (both complete in ``store``), or None when
    grafting the changes onto ``base`` does not give ``root`` back (a tree no scan makes).

    Each chunk blob the change introduces is left to the batch once, at its first place; a
    second place with the same blob sends its id.
    """
    files, regions = tree_changes(store, base, root, new_regions=True)
    moved = _moved(store, base, root, regions)
    nodes: dict[ObjectId, bytes] = {}

    def add(data: bytes) -> ObjectId:
        oid = hash_bytes(data)
        nodes[oid] = data
        return oid

    if graft_changes(store, add, base, files, regions) != root:
        return None
    changed = [(path, slot) for path in sorted(regions) for slot in sorted(regions[path])
               if regions[path][slot] is not None]
    seen: set[ObjectId] = set()
    derived: list[tuple[str, int]] = []
    kept: list[tuple[str, int]] = []
    pairs = []
    for (path, slot), want in zip(changed, chunk_wants(store, base, changed, moved),
                                  strict=True):
        entry = regions[path][slot]
        assert entry is not None
        old = want.base
        if old is not None and old.oid == entry.oid and path not in moved:
            kept.append((path, slot))
        elif entry.oid not in seen:
            seen.add(entry.oid)
            derived.append((path, slot))
            pairs.append(Pair(ChunkRef(entry.oid, entry.compression),
                              None if old is None else ChunkRef(old.oid, old.compression)))
    return TreePlan(base, root, files, regions, derived, kept, pairs, nodes, moved)


def rebuild_tree(store: ObjectLoader, add: Add, upload: TreeUpload,
                 chunk_ids: Sequence[ObjectId]) -> ObjectId:
    """Graft ``upload``'s changes onto its base, its derived chunk entries given
    ``chunk_ids`` (in batch order) and its kept ones the base's, storing nodes through
    ``add``; the root it makes.

    Raises:
        GraftRefused: the changes do not fit the base.
        ValueError: not one id per derived entry, or a kept entry where the base holds none.
    """
    slots = derived_slots(upload.regions)
    if len(slots) != len(chunk_ids):
        raise ValueError(f"{len(chunk_ids)} ids for {len(slots)} derived chunks")
    ids = list(chunk_ids)
    for want in chunk_wants(store, upload.base, derived_slots(upload.regions, KEPT)):
        if want.base is None:
            raise ValueError(f"{want.path} slot {want.slot} keeps a chunk the base lacks")
        slots.append((want.path, want.slot))
        ids.append(want.base.oid)
    regions = {path: dict(changes) for path, changes in upload.regions.items()}
    for (path, slot), oid in zip(slots, ids, strict=True):
        entry = regions[path][slot]
        assert entry is not None
        regions[path][slot] = entry._replace(oid=oid)
    return graft_changes(store, add, upload.base, upload.files, regions)


def encode_derived(built: Sequence[Built], pairs: Sequence[Pair]) -> bytes:
    """The batch of a tree upload: ``built`` items for every one of ``pairs`` (a
    :class:`TreePlan`'s), in order, encoded for the want list the receiver derives (new ids
    :data:`DERIVED`, bases those :func:`chunk_wants` finds)."""
    if [b.position for b in built] != list(range(len(pairs))):
        raise ValueError("a tree upload's batch holds every derived chunk, in order")
    want = [(DERIVED, None if p.base is None else p.base.oid) for p in pairs]
    items = [replace(b.item, new_id=DERIVED) for b in built]
    return encode_batch(items, want=want, level=BATCH_LEVEL)


@dataclass(frozen=True)
class BuiltUpload:
    """A tree upload ready to send (:func:`build_upload`): its plan, items, batch and body."""

    plan: TreePlan
    built: list[Built]
    batch: bytes
    body: bytes


def build_upload(store: ObjectLoader, payloads: PayloadReader, base: ObjectId, root: ObjectId,
                 *, max_items: int, max_rebuilt: int, max_stream: int,
                 known: Mapping[ObjectId, tuple[DeltaItem, int]] | None = None,
                 cancelled: Callable[[], bool] | None = None) -> BuiltUpload | None:
    """The tree upload of ``root`` against ``base`` (nodes read through ``store``, chunk
    payloads through ``payloads``): the sending half, on either end. ``known`` items are not
    built again (:func:`~.batches.build_items`). None when grafting does not give ``root``
    back (a tree no scan makes), or past ``max_items`` items, ``max_rebuilt`` bytes of
    rebuilt chunks or ``max_stream`` bytes of batch stream.

    Raises:
        Cancelled (of :mod:`.batches`): ``cancelled()`` turned true.
        ObjectMissing, ObjectCorrupt, NotABlob: a node or chunk is not readable.
    """
    try:
        plan = plan_tree(NodeCache(store), base, root)
    except (GraftRefused, DecodeError):
        return None  # a tree no scan makes: its nodes go whole
    if plan is None or len(plan.pairs) > max_items:
        return None
    built = list(build_items(payloads, plan.pairs, range(len(plan.pairs)), cancelled=cancelled,
                             known=known))
    if (sum(b.size for b in built) > max_rebuilt
            or sum(len(b.item.data) for b in built) > max_stream):
        return None
    batch = encode_derived(built, plan.pairs)
    return BuiltUpload(plan, built, batch, plan.upload(batch))


class TreeNotRebuilt(PeerhostError):
    """A tree upload's chunks or changes did not rebuild its root; nothing of it is usable.

    Attributes:
        root: the root it names; got: the root the graft gave (None when it stopped before).
    """

    def __init__(self, root: ObjectId, got: ObjectId | None, reason: str) -> None:
        self.root, self.got, self.reason = root, got, reason
        super().__init__(f"the tree upload does not rebuild tree {root.hex()}: {reason}")


@dataclass(frozen=True)
class Rebuilt:
    """What :func:`rebuild_upload` made: ``(item, id, blob)`` of each chunk, in batch
    order, and the nodes of the tree (id -> bytes)."""

    chunks: list[tuple[DeltaItem, ObjectId, bytes]]
    nodes: dict[ObjectId, bytes]


def rebuild_upload(loader: ObjectLoader, payloads: PayloadReader, upload: TreeUpload, *,
                   max_bytes: int, rebuild: int | None = None,
                   cancelled: Callable[[], bool] | None = None, where: str = "here",
                   add: Add | None = None) -> Rebuilt:
    """Rebuild ``upload``'s chunks against the base tree's (read through ``payloads``, each
    hashed for its id) and its tree (nodes read through ``loader``, made through ``add``,
    then kept), and check the root: the receiving half of a tree upload, on either end.

    Args:
        max_bytes: the most the batch may decompress to; rebuild: NBT bytes the rebuild may
            spend (None: no budget); where: where the bases are, for messages.

    Raises:
        TreeNotRebuilt: a chunk did not rebuild, the changes do not fit the base, or the root
            differs. DeltaError: the batch is malformed or made for other bases.
        Cancelled (of :mod:`.batches`): ``cancelled()`` turned true.
        ObjectMissing, ObjectCorrupt, DecodeError: a node of the base is not readable.
    """
    loader = NodeCache(loader)
    wants = chunk_wants(loader, upload.base, derived_slots(upload.regions), upload.moved)
    items = decode_batch(upload.batch, max_items=max(1, len(wants)), max_bytes=max_bytes,
                         want=[(DERIVED, None if w.base is None else w.base.oid) for w in wants])
    rebuilder = Rebuilder(payloads, rebuild, cancelled, where=where, derive=True)
    rebuilder.add_many([(item, None if w.base is None else w.base.compression)
                        for item, w in zip(items, wants, strict=True)])
    if rebuilder.failed:
        raise TreeNotRebuilt(upload.root, None, f"{len(rebuilder.failed)} of {len(items)} "
                             f"chunks do not rebuild: {rebuilder.failed[0][1]}")
    nodes: dict[ObjectId, bytes] = {}

    def keep(data: bytes) -> ObjectId:
        oid = hash_bytes(data) if add is None else add(data)
        nodes[oid] = data
        return oid

    try:
        root = rebuild_tree(loader, keep, upload, [oid for oid, _ in rebuilder.verified])
    except GraftRefused as exc:
        raise TreeNotRebuilt(upload.root, None, str(exc)) from None
    except DecodeError:
        raise
    except ValueError as exc:  # a kept chunk the base lacks
        raise TreeNotRebuilt(upload.root, None, str(exc)) from None
    if root != upload.root:
        raise TreeNotRebuilt(upload.root, root, "its root differs")
    return Rebuilt([(item, oid, blob) for item, (oid, blob)
                    in zip(items, rebuilder.verified, strict=True)], nodes)


# -- the body ----------------------------------------------------------------------------


def encode_tree_upload(upload: TreeUpload) -> bytes:
    """The body of a tree upload (see the module)."""
    import zstandard  # not for phs status

    files = []
    for path in sorted(upload.files):
        e = upload.files[path]
        row: list[Any] = [path]
        if e is not None:
            row += [int(e.kind), e.oid, e.size]
            if e.raw is not None:
                row.append(e.raw)
        files.append(row)
    regions = []
    for path in sorted(upload.regions):
        changes = []
        for slot in sorted(upload.regions[path]):
            c = upload.regions[path][slot]
            oid = None if c is None else {DERIVED: None, KEPT: 0}.get(c.oid, c.oid)
            changes.append([slot] if c is None else
                           [slot, oid, c.compression, c.timestamp, c.external])
        regions.append([path, changes, *([upload.moved[path]] if path in upload.moved else [])])
    stream = msgpack.packb([files, regions], use_bin_type=True)
    frame = zstandard.ZstdCompressor(level=_LEVEL, write_content_size=True).compress(stream)
    return bytes(msgpack.packb([EDIT_VERSION, upload.base, upload.root, frame, upload.batch],
                               use_bin_type=True))


def decode_tree_upload(data: bytes, *, max_changes: int, max_bytes: int) -> TreeUpload:
    """Parse a tree upload, which may come from a hostile peer: at most ``max_changes``
    entries and slots changed, their frame at most ``max_bytes`` decompressed, paths that are
    relative, of real names, and at most as deep as a tree may be.

    Raises:
        ProtocolError: naming what is malformed and where.
    """
    try:
        value = msgpack.unpackb(data, raw=False, max_array_len=5, max_map_len=0,
                                max_str_len=0, max_ext_len=0, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise _Malformed(f"tree upload: malformed body: {exc}") from None
    if not (isinstance(value, list) and len(value) == 5 and value[0] == EDIT_VERSION
            and all(type(v) is bytes for v in value[1:])):
        raise _Malformed(f"tree upload: not [{EDIT_VERSION}, base, root, changes, batch]")
    base, root = (_id(v, what) for v, what in ((value[1], "base"), (value[2], "root")))
    stream = decompress_body(value[3], max_bytes, "tree upload changes")
    try:
        changes = msgpack.unpackb(stream, raw=False, max_map_len=0, max_ext_len=0,
                                  max_array_len=max(max_changes, 5), strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise _Malformed(f"tree upload changes: malformed: {exc}") from None
    if not (isinstance(changes, list) and len(changes) == 2
            and all(isinstance(c, list) for c in changes)):
        raise _Malformed("tree upload changes: not [files, regions]")
    budget = [max_changes]
    files = _files(changes[0], budget)
    regions, moved = _regions(changes[1], budget)
    both = files.keys() & regions.keys()
    if both:
        raise _Malformed(f"tree upload: {min(both)!r} is both a file and a region change")
    return TreeUpload(base, root, files, regions, value[4], moved)


def _id(value: object, what: str) -> ObjectId:
    if type(value) is not bytes or len(value) != ID_SIZE:
        raise _Malformed(f"tree upload: {what} is not a {ID_SIZE}-byte id")
    return ObjectId(value)


def _spend(budget: list[int], n: int) -> None:
    budget[0] -= n
    if budget[0] < 0:
        raise _Malformed("tree upload: more changes than a request may hold")


def _path(value: object, last: str | None, what: str) -> str:
    if type(value) is not str or not 0 < len(value) <= _MAX_PATH:
        raise _Malformed(f"tree upload: a {what} path is not a string of 1 to {_MAX_PATH}")
    parts = value.split("/")
    if len(parts) > MAX_TREE_DEPTH or any(p in ("", ".", "..") for p in parts):
        raise _Malformed(f"tree upload: {what} path {value[:200]!r} is not a relative path "
                         "of names")
    if last is not None and value <= last:
        raise _Malformed(f"tree upload: {what} paths are not sorted at {value[:200]!r}")
    return value


def _files(rows: list[Any], budget: list[int]) -> _Files:
    _spend(budget, len(rows))
    out: _Files = {}
    last = None
    for row in rows:
        if not isinstance(row, list) or len(row) not in (1, 4, 5):
            raise _Malformed("tree upload: a file change is [path] or [path, kind, id, size]")
        path = last = _path(row[0], last, "file")
        if len(row) == 1:
            out[path] = None
            continue
        kind, oid, size = row[1:4]
        if type(kind) is not int or kind not in (0, 1, 2) or type(size) is not int \
                or not 0 <= size < 2**63:
            raise _Malformed(f"tree upload: file change {path[:200]!r}: bad kind or size")
        raw = _id(row[4], f"raw id of {path[:200]!r}") if len(row) == 5 else None
        if raw is not None and kind != EntryKind.REGION:
            raise _Malformed(f"tree upload: {path[:200]!r}: only a region has a raw blob")
        out[path] = DirEntry(path.rpartition("/")[2], EntryKind(kind),
                             _id(oid, f"id of {path[:200]!r}"), size, raw)
    return out


def _regions(rows: list[Any], budget: list[int]) -> tuple[_Regions, dict[str, str]]:
    out: _Regions = {}
    moved: dict[str, str] = {}
    last = None
    for row in rows:
        if not (isinstance(row, list) and len(row) in (2, 3) and isinstance(row[1], list)
                and row[1]):
            raise _Malformed("tree upload: a region change is [path, [slot change...]] or "
                             "[path, [slot change...], base path]")
        path = last = _path(row[0], last, "region")
        if len(row) == 3:
            moved[path] = _path(row[2], None, "base region")
        _spend(budget, len(row[1]))
        slots: dict[int, ChunkEntry | None] = {}
        previous = -1
        for c in row[1]:
            if not (type(c) is list and len(c) in (1, 5) and type(c[0]) is int
                    and previous < c[0] <= 1023):
                raise _Malformed(f"tree upload: region {path[:200]!r}: a slot change is not "
                                 "[slot] or [slot, id, compression, timestamp, external] in "
                                 "increasing slot order")
            previous = c[0]
            if len(c) == 1:
                slots[c[0]] = None
                continue
            _, oid, compression, timestamp, external = c
            if not (type(compression) is int and 0 <= compression <= 127
                    and type(timestamp) is int and 0 <= timestamp < 2**32
                    and type(external) is bool):
                raise _Malformed(f"tree upload: region {path[:200]!r} slot {c[0]}: malformed "
                                 "chunk entry")
            chunk = (DERIVED if oid is None else KEPT if oid == 0 and type(oid) is int
                     else _id(oid, f"chunk id in {path[:200]!r}"))
            if chunk in (DERIVED, KEPT) and type(oid) is bytes:
                raise _Malformed(f"tree upload: a reserved chunk id in {path[:200]!r}")
            slots[c[0]] = ChunkEntry(c[0], chunk, compression, timestamp, external)
        out[path] = slots
    return out, moved

