"""Writing a world tree into a folder: checkout into an empty one, or restore over a world,
touching only what differs. Every path is checked before anything is written; every file is
written to a temporary file and renamed into place."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from .bounds import check_tree
from .errors import DamagedObjects, DecodeError, ObjectCorrupt, ObjectMissing, PeerhostError
from .ids import ObjectId
from .objects import ChunkEntry, DirEntry, EntryKind, blob_payload, decode_blob
from .region import COMPRESSIONS, ChunkRecord, external_name, region_coords, region_parts
from .store import Verified
from .tree import diff_trees, iter_tree, region_entries
from .worldfs import (
    TEMP_PREFIX,
    atomic_write,
    check_rel_path,
    remove_path,
    resolve_inside,
)

__all__ = [
    "CHECKOUT_MARKER",
    "ObjectReader",
    "Progress",
    "RestoreError",
    "RestoreOp",
    "RestoreResult",
    "apply_restore",
    "check_objects",
    "checkout_tree",
    "plan",
    "prepare_restore",
    "restore_tree",
]

Progress = Callable[[int, int], None]


class ObjectReader(Protocol):
    """What a restore reads objects through: a store, or a view of one (a pull restores
    through one that knows which objects it has just fetched and checked). A reader may also
    have ``region_entries(oid) -> list[ChunkEntry]``, a region map's entries as
    :func:`iter_region` lists them, when it holds them decoded already, and
    ``checked(oid) -> bool``, true for objects it checked moments ago (not read again
    before the restore)."""

    def get_raw(self, oid: ObjectId) -> bytes: ...

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]: ...


class RestoreError(PeerhostError):
    """The target folder cannot take the tree (not empty, not a folder, ...)."""


@dataclass(frozen=True, slots=True)
class _Op:
    path: str
    old: DirEntry | None
    new: DirEntry | None
    #: The chunk entries of ``old`` and ``new`` when they are region maps, as
    #: :func:`check_objects` read them (so that writing does not decode them again).
    old_chunks: tuple[ChunkEntry, ...] | None = None
    new_chunks: tuple[ChunkEntry, ...] | None = None
    #: :func:`check_objects` read (and so hashed) every object this op writes, moments
    #: before it is written: writing reads them again from this process's store without
    #: hashing them a second time (as a pull reads back what it has just fetched).
    checked: bool = False


#: A planned step of a restore (opaque outside this module: plan, check, then apply).
RestoreOp = _Op


@dataclass
class RestoreResult:
    """What a restore changed on disk."""

    written: int = 0
    removed: int = 0
    bytes_written: int = 0
    warnings: list[str] = field(default_factory=list)


def plan(store: ObjectReader, current: ObjectId | None, target: ObjectId) -> list[_Op]:
    """The operations that turn tree ``current`` into tree ``target``, all paths checked.

    The target is checked first, each distinct node once (:func:`bounds.check_tree`: names,
    case collisions across the whole tree, depth, what it expands to): the diff below walks
    paths, which a tree sharing subtrees can make millions of.
    """
    check_tree(store, target)
    ops = [_Op(path, old, new) for path, old, new in diff_trees(store, current, target)]
    for op in ops:
        check_rel_path(op.path)
    return ops


def restore_tree(
    store: ObjectReader,
    world: Path,
    current: ObjectId | None,
    target: ObjectId,
    *,
    progress: Progress | None = None,
    durable: bool = True,
) -> RestoreResult:
    """Make ``world`` hold tree ``target``, given that it now holds tree ``current``.

    Raises:
        UnsafePath: a path in the tree, or a link on disk, would lead outside ``world``;
            raised before anything is written.
    """
    return apply_restore(store, world, prepare_restore(store, world, current, target),
                         progress=progress, durable=durable)


def prepare_restore(
    store: ObjectReader, world: Path, current: ObjectId | None, target: ObjectId
) -> list[_Op]:
    """Plan a restore and check every path, in the tree and on disk, before anything is written.

    Raises:
        UnsafePath: a path in the tree, or a link on disk, would lead outside ``world``.
        DamagedObjects: objects the restore needs are missing or corrupt.
    """
    return check_objects(store, _plan_inside(store, world, current, target, "the restore"))


def _plan_inside(store: ObjectReader, world: Path, current: ObjectId | None,
                 target: ObjectId, what: str) -> list[_Op]:
    """:func:`plan`, with every path checked to stay inside ``world`` on disk."""
    try:
        ops = plan(store, current, target)
    except (ObjectMissing, ObjectCorrupt) as exc:  # a tree node: the diff reads every one
        raise DamagedObjects([_problem(exc, "a folder of the trees compared")], what) from exc
    for op in ops:
        resolve_inside(world, op.path)  # links planted on disk are refused before any write
    return ops


def check_objects(store: ObjectReader, ops: list[_Op], batch: int = 256) -> list[_Op]:
    """Read every object ``ops`` will read (the store checks each against its id), so that a
    damaged one stops the restore before its first write rather than half-way. Returns the
    ops with the region maps' entries it read.

    Raises:
        DamagedObjects: each missing or corrupt object found, with the path that needs it.
    """
    checked = getattr(store, "checked", None)
    damaged: list[tuple[ObjectId, str, str]] = []
    #: Objects to read, each with where it goes: a path, or a region's path and a slot
    #: (its message is built only if the object is damaged). Read a batch at a time, so
    #: memory does not grow with the world (only the region maps' entries are kept).
    blobs: list[tuple[ObjectId, str, int | None]] = []

    # Hashed in place when the store can (Verified.check_many): nothing is copied out.
    check = getattr(store, "check_many", store.get_many)

    def read_blobs() -> None:
        if checked is not None:
            blobs[:] = [blob for blob in blobs if not checked(blob[0])]
        for start in range(0, len(blobs), batch):
            part = blobs[start : start + batch]
            try:
                check([oid for oid, _, _ in part])
            except (ObjectMissing, ObjectCorrupt):
                for oid, path, slot in part:  # find each one
                    try:
                        check([oid])
                    except (ObjectMissing, ObjectCorrupt) as exc:
                        where = path if slot is None else f"{path} chunk slot {slot}"
                        damaged.append(_problem(exc, where))
        blobs.clear()

    checked_ops = []
    for op in ops:
        read: list[tuple[ChunkEntry, ...] | None] = [None, None]  # old's, new's
        for side, entry in enumerate((op.old, op.new)):
            if entry is None or entry.kind is EntryKind.DIR:
                continue
            if side == 0 and (entry.kind is not EntryKind.REGION or entry.raw is not None):
                continue  # of the old side, restore reads only region maps (their externals)
            if entry.kind is EntryKind.REGION and entry.raw is None:
                try:
                    chunks = read[side] = tuple(_region(store, entry.oid))
                except (ObjectMissing, ObjectCorrupt) as exc:
                    damaged.append(_problem(exc, op.path))
                    continue
                if side == 1:
                    problem = _layout_problem(entry.name, chunks)
                    if problem is not None:  # before the head moves or a file is written
                        raise DecodeError(f"{op.path}: {problem}")
                    blobs += [(c.oid, op.path, c.slot) for c in chunks]
            else:
                blobs.append((entry.raw or entry.oid, op.path, None))
        checked_ops.append(replace(op, old_chunks=read[0], new_chunks=read[1], checked=True))
        if len(blobs) >= 8 * batch:
            read_blobs()
    read_blobs()
    if damaged:
        raise DamagedObjects(damaged)
    return checked_ops


def _layout_problem(name: str, chunks: Sequence[ChunkEntry]) -> str | None:
    """Why region ``name`` with these entries could not be laid out as a file, as far as the
    entries tell (a payload too large to fit inline is found only when it is read)."""
    external = region_coords(name) is not None
    for chunk in chunks:
        if chunk.compression not in COMPRESSIONS:
            return f"chunk slot {chunk.slot}: unknown compression {chunk.compression}"
        if chunk.external and not external:
            return "external chunks in a file that is not r.X.Z.mca"
    return None


def _problem(exc: ObjectMissing | ObjectCorrupt, where: str) -> tuple[ObjectId, str, str]:
    if isinstance(exc, ObjectMissing):
        return exc.oid, "missing", where
    return exc.expected, "corrupt", where


def apply_restore(
    store: ObjectReader,
    world: Path,
    ops: list[_Op],
    *,
    progress: Progress | None = None,
    durable: bool = True,
) -> RestoreResult:
    """Carry out the operations of :func:`prepare_restore`."""
    world.mkdir(parents=True, exist_ok=True)
    result = RestoreResult()
    with _Writer(durable) as writer:
        for done, op in enumerate(ops, 1):
            _apply(store, world, op, result, writer)
            if progress is not None:
                progress(done, len(ops))
    return result


class _Writer:
    """Writes files (:func:`atomic_write`) on background threads, so the next region file is
    read and assembled while earlier ones are written and fsynced: writing and fsync run in
    the kernel without the GIL, and cost more than the assembling (two writers finish a
    clone's files about twice as fast as one). Files are distinct paths, so their order does
    not matter. At most ``depth`` files wait; a failed write is raised by a later call, at
    the latest on exit."""

    def __init__(self, durable: bool, writers: int = 2, depth: int = 3) -> None:
        self.durable = durable
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="phs-restore")
        self._pending: deque[Future[object]] = deque()

    def write(self, path: Path, data: bytes | list[bytes | memoryview]) -> None:
        while len(self._pending) >= self.depth:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(atomic_write, path, data, durable=self.durable))

    def drain(self) -> None:
        """Wait until every queued file is written (before removing or replacing paths)."""
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if kind is None:
                self.drain()
        finally:
            self._pool.shutdown(wait=True)  # on an error, queued writes still finish


def checkout_tree(
    store: ObjectReader, target: ObjectId, folder: Path, *, progress: Progress | None = None
) -> RestoreResult:
    """Write tree ``target`` into ``folder``, which must be missing or empty, or hold what an
    interrupted checkout of the same tree left (its marker file, its paths, temp files).

    Files are not fsynced one by one: there is no older version to lose, and an interrupted
    checkout is simply run again (every file is rewritten, so a partly written one heals).
    For the same reason objects are checked as they are read for writing, in one pass, not
    all before the first write as a restore over a world does: a damaged one stops the
    checkout part-way (its marker left, so it can be run again once the store is repaired),
    and :class:`DamagedObjects` names every damaged object the checkout needs and where.
    One pass reads each chunk once and holds no region map longer than its file takes.

    Raises:
        RestoreError: ``folder`` is not a folder, or holds something else.
        UnsafePath: a path of the tree would lead outside ``folder`` (before any write).
        DamagedObjects: objects the checkout needs are missing or corrupt.
    """
    marker = folder / CHECKOUT_MARKER
    check_tree(store, target)  # before anything walks the tree path by path
    if folder.exists():
        if not folder.is_dir():
            raise RestoreError(f"{folder} is not a folder")
        if any(folder.iterdir()):
            if not marker.is_file() or marker.is_symlink() or marker.read_bytes() != target:
                raise RestoreError(f"{folder} is not an empty folder")
            _check_partial_checkout(store, target, folder)
    ops = _plan_inside(store, folder, None, target, "the checkout")
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_bytes(target)  # only a re-run of this checkout may write into it now
    try:
        result = apply_restore(store, folder, ops, progress=progress, durable=False)
    except (ObjectMissing, ObjectCorrupt):
        try:
            check_objects(store, ops)  # finds each damaged object and the path that needs it
        except DamagedObjects as exc:
            raise DamagedObjects(exc.problems, "the checkout", _CHECKOUT_STOPPED) from None
        raise
    marker.unlink()
    return result


#: What a checkout stopped by a damaged object says it did.
_CHECKOUT_STOPPED = ("it stopped part-way: once the store is repaired, run the same checkout "
                    "into the same folder to finish it")

#: Left in a folder while a checkout writes it (scans skip the temp prefix).
CHECKOUT_MARKER = f"{TEMP_PREFIX}checkout"


def _check_partial_checkout(store: ObjectReader, target: ObjectId, folder: Path) -> None:
    expected = {path for path, _ in iter_tree(store, target)}
    for path in sorted(folder.rglob("*")):
        if path.name == CHECKOUT_MARKER and path.parent == folder:
            continue
        if path.name.startswith(TEMP_PREFIX) and path.is_file() and not path.is_symlink():
            path.unlink()  # a file the interrupted checkout was writing
            continue
        rel = path.relative_to(folder).as_posix()
        if rel not in expected and not _is_external_of(rel, expected):
            raise RestoreError(f"{folder} is not an empty folder (it holds {rel}, which is not "
                               "part of this snapshot)")


def _is_external_of(rel: str, expected: set[str]) -> bool:
    """Whether ``rel`` is a ``c.X.Z.mcc`` beside an expected region (external chunks)."""
    folder, _, name = rel.rpartition("/")
    return name.startswith("c.") and name.endswith(".mcc") and any(
        p.rpartition("/")[0] == folder and p.endswith(".mca") for p in expected)


def _apply(store: ObjectReader, world: Path, op: _Op, result: RestoreResult,
           writer: _Writer) -> None:
    path = resolve_inside(world, op.path)
    old, new = op.old, op.new
    if new is None or new.kind is EntryKind.DIR:
        writer.drain()  # removals and folders come after every queued write, as planned
    if old is not None and old.kind is EntryKind.REGION:
        stale = _externals(store, op.path, old, op.old_chunks)
        if new is not None and new.kind is EntryKind.REGION:
            stale -= _externals(store, op.path, new, op.new_chunks)
        if stale:
            writer.drain()
        for name in stale:
            remove_path(path.parent / name)
    if new is None:
        try:
            remove_path(path)
            result.removed += 1
        except OSError as exc:
            if not path.is_dir():
                raise
            # It holds something the tree does not track (a link, a special file): keep it.
            result.warnings.append(f"{op.path}: folder kept, it holds untracked entries ({exc.strerror})")
        return
    if new.kind is EntryKind.DIR:
        if (old is not None and old.kind is not EntryKind.DIR) or path.is_symlink():
            remove_path(path)
        path.mkdir(exist_ok=True)
        return
    if (old is not None and old.kind is EntryKind.DIR) or (path.is_dir() and not path.is_symlink()):
        writer.drain()
        remove_path(path)  # a folder stands where a file goes: its children were removed first
    data: bytes | list[bytes | memoryview]
    if new.kind is EntryKind.REGION and new.raw is None:
        data, externals = region_parts(_records(store, new, op.new_chunks, op.checked))
        coords = region_coords(new.name)
        if externals and coords is None:
            raise DecodeError(f"{op.path}: external chunks in a file that is not r.X.Z.mca")
        for slot, payload in externals.items():
            assert coords is not None
            writer.write(path.parent / external_name(*coords, slot), payload)
            result.bytes_written += len(payload)
    else:
        oid = new.raw if new.raw is not None else new.oid
        try:
            data = decode_blob(_read(store, [oid], op.checked)[0])
        except DecodeError as exc:
            raise DecodeError(f"object {oid.hex()}: {exc}") from exc
        if new.raw is None and len(data) != new.size:
            # The bound checked before writing counted what entries declare; hold them to it.
            raise DecodeError(f"{op.path}: the entry says {new.size} bytes, its blob holds "
                              f"{len(data)}")
    writer.write(path, data)
    result.written += 1
    result.bytes_written += len(data) if isinstance(data, bytes) else sum(map(len, data))


def _region(store: ObjectReader, oid: ObjectId) -> list[ChunkEntry]:
    entries = getattr(store, "region_entries", None)
    return region_entries(store, oid) if entries is None else list(entries(oid))


class _Everything:
    def __contains__(self, item: object) -> bool:
        return True


def _read(store: ObjectReader, oids: list[ObjectId], checked: bool) -> list[bytes]:
    """Read objects to write; ``checked``: :func:`check_objects` hashed them moments ago."""
    if checked and isinstance(store, Verified):
        return store.get_many(oids, trusted=_Everything())
    return store.get_many(oids)


def _records(store: ObjectReader, entry: DirEntry,
             read: tuple[ChunkEntry, ...] | None, checked: bool = False) -> list[ChunkRecord]:
    chunks = _region(store, entry.oid) if read is None else read
    if len(chunks) != entry.size:
        raise DecodeError(f"{entry.name}: the entry says {entry.size} chunks, its region map "
                          f"holds {len(chunks)}")
    payloads = _read(store, [c.oid for c in chunks], checked and read is not None)
    return [
        ChunkRecord(c.slot, c.compression, blob_payload(payload), c.timestamp, c.external)
        for c, payload in zip(chunks, payloads, strict=True)
    ]


def _externals(store: ObjectReader, path: str, entry: DirEntry,
               read: tuple[ChunkEntry, ...] | None) -> set[str]:
    coords = region_coords(entry.name)
    if coords is None or entry.raw is not None:
        return set()
    chunks = _region(store, entry.oid) if read is None else read
    return {external_name(*coords, c.slot) for c in chunks if c.external}
