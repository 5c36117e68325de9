"""Turning a world folder into a world tree (the I/O half of snapshot).

Files whose size, mtime, ctime and inode match the stat cache are not read at all; their
entry comes from the cache. Region-format files are split per chunk; every other file is one
blob. A region file that does not parse cleanly is kept whole as well, with a warning.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from .errors import PeerhostError
from .ids import ObjectId
from .objects import ChunkEntry, DirEntry, EntryKind, encode_blob
from .region import RegionError, external_name, parse_region, region_coords
from .tree import MAX_TREE_DEPTH, build_dir, build_region
from .worldfs import EXCLUDED_AT_ROOT, TEMP_PREFIX, UnsafePath, check_name, region_place
from .writer import ObjectWriter

__all__ = [
    "RACY_NS",
    "Progress",
    "ScanResult",
    "ScanWarning",
    "WorldReadError",
    "cached_ids",
    "encode_stat",
    "scan_world",
    "stat_key",
]

Progress = Callable[[int, int], None]

# A file modified this close to the scan may change again within the filesystem's timestamp
# granularity without its stat changing (git's "racy clean" problem): never cache it.
RACY_NS = 2_000_000_000


class WorldReadError(PeerhostError, OSError):
    """A file or folder of the world could not be listed or read."""


@dataclass(frozen=True, slots=True)
class ScanWarning:
    """Something in the world that was skipped or kept whole, with where it is."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class ScanResult:
    """A scanned world: its root tree id, counts, warnings and stat cache updates."""

    root: ObjectId
    summary: dict[str, int]
    warnings: list[ScanWarning]
    stats: dict[str, bytes | None]


@dataclass
class _File:
    rel: str
    st: os.stat_result
    cached: DirEntry | None = None


@dataclass
class _Dir:
    rel: str
    children: list[tuple[str, _File | _Dir]] = field(default_factory=list)


def stat_key(st: os.stat_result) -> list[int]:
    """The stat fields that must all match for a cached entry to be trusted."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def encode_stat(st: os.stat_result, entry: DirEntry) -> bytes:
    """A stat cache value: the file's stat key and its tree entry."""
    return msgpack.packb([*stat_key(st), int(entry.kind), entry.oid, entry.size, entry.raw])  # type: ignore[no-any-return]


def _decode_stat(value: bytes, name: str, st: os.stat_result) -> DirEntry | None:
    try:
        row = msgpack.unpackb(value)
        if row[:4] != stat_key(st):
            return None
        raw = ObjectId(row[7]) if row[7] is not None else None
        return DirEntry(name, EntryKind(row[4]), ObjectId(row[5]), row[6], raw)
    except (ValueError, TypeError, IndexError, msgpack.UnpackException):
        return None  # an unreadable cache entry only costs a re-read


def cached_ids(value: bytes) -> list[ObjectId]:
    """The object ids a stat cache value refers to (empty if it is unreadable)."""
    try:
        row = msgpack.unpackb(value)
        return [ObjectId(row[5])] + ([ObjectId(row[7])] if row[7] is not None else [])
    except (ValueError, TypeError, IndexError, msgpack.UnpackException):
        return []


class _Scanner:
    def __init__(
        self, world: Path, writer: ObjectWriter, cache: dict[str, bytes], progress: Progress | None
    ) -> None:
        self.world = world
        self.writer = writer
        self.cache = cache
        self.progress = progress
        self.warnings: list[ScanWarning] = []
        self.stats: dict[str, bytes | None] = {}
        self.seen: set[str] = set()
        self.summary = dict.fromkeys(
            ("files", "dirs", "regions", "chunks", "bytes", "read_bytes", "cached_files"), 0
        )
        self.total = 0
        self.done = 0
        self.racy_after = time.time_ns() - RACY_NS

    # phase 1: list the folder and look up the stat cache
    def walk(self, path: Path, rel: str) -> _Dir:
        folder = _Dir(rel)
        if rel.count("/") >= MAX_TREE_DEPTH:
            raise WorldReadError(f"{rel[:200]}...: folders nested deeper than {MAX_TREE_DEPTH}")
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            if (not rel and entry.name in EXCLUDED_AT_ROOT) or entry.name.startswith(TEMP_PREFIX):
                continue
            try:
                check_name(entry.name, child_rel)
                entry.name.encode()
            except (UnsafePath, UnicodeError):
                self.warn(child_rel, "skipped: the name cannot be stored portably")
                continue
            st = entry.stat(follow_symlinks=False)
            if entry.is_symlink() or getattr(entry, "is_junction", lambda: False)():
                self.warn(child_rel, "skipped: links are not followed")
            elif stat.S_ISDIR(st.st_mode):
                folder.children.append((entry.name, self.walk(Path(entry.path), child_rel)))
            elif stat.S_ISREG(st.st_mode):
                item = _File(child_rel, st)
                self.seen.add(child_rel)
                if child_rel in self.cache:
                    item.cached = _decode_stat(self.cache[child_rel], entry.name, st)
                if item.cached is None:
                    self.total += st.st_size
                folder.children.append((entry.name, item))
            else:
                self.warn(child_rel, "skipped: not a regular file or folder")
        return folder

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(ScanWarning(path, message))

    # phase 2: read what changed and build the tree bottom-up
    def build(self, folder: _Dir) -> ObjectId:
        place = region_place(folder.rel)
        consumed: set[str] = set()
        entries: dict[str, DirEntry] = {}
        # Region files first: they claim the external .mcc payload files beside them.
        for name, child in folder.children:
            if isinstance(child, _File) and place is not None and region_coords(name):
                entries[name] = self.file_entry(name, child, region=True, consumed=consumed)
        for name, child in folder.children:
            if name in entries or name in consumed:
                continue
            if isinstance(child, _Dir):
                self.summary["dirs"] += 1
                entries[name] = DirEntry(name, EntryKind.DIR, self.build(child))
            else:
                entries[name] = self.file_entry(name, child, region=False, consumed=consumed)
        return build_dir(self.writer.add, [entries[name] for name in sorted(entries)])

    def file_entry(self, name: str, item: _File, *, region: bool, consumed: set[str]) -> DirEntry:
        self.summary["bytes"] += item.st.st_size
        entry = item.cached
        if entry is not None:
            self.summary["cached_files"] += 1
        else:
            data = (self.world / item.rel).read_bytes()
            self.summary["read_bytes"] += len(data)
            cacheable = True
            if region and data:
                entry, cacheable = self.region_entry(name, item.rel, data, consumed)
            else:
                entry = DirEntry(name, EntryKind.FILE, self.writer.add(encode_blob(data)), len(data))
            if cacheable and item.st.st_mtime_ns < self.racy_after:
                self.stats[item.rel] = encode_stat(item.st, entry)
            self.done += item.st.st_size
            if self.progress is not None:
                self.progress(self.done, self.total)
        if entry.kind is EntryKind.REGION:
            self.summary["regions"] += 1
            self.summary["chunks"] += entry.size
        else:
            self.summary["files"] += 1
        return entry

    def region_entry(
        self, name: str, rel: str, data: bytes, consumed: set[str]
    ) -> tuple[DirEntry, bool]:
        coords = region_coords(name)
        assert coords is not None
        folder = (self.world / rel).parent
        externals: list[str] = []

        def load_external(slot: int) -> bytes | None:
            mcc = external_name(*coords, slot)
            try:
                payload = (folder / mcc).read_bytes()
            except FileNotFoundError:
                return None
            externals.append(mcc)
            return payload

        try:
            parsed = parse_region(data, load_external)
        except RegionError as exc:
            self.warn(rel, f"{exc}; stored whole as a plain file")
            return DirEntry(name, EntryKind.FILE, self.writer.add(encode_blob(data)), len(data)), True
        if parsed.clean:  # a damaged region is restored whole, so its .mcc files stay plain files
            consumed.update(externals)
        add = self.writer.add
        chunks = [
            ChunkEntry(c.slot, add(encode_blob(c.payload)), c.compression, c.timestamp, c.external)
            for c in parsed.chunks
        ]
        raw = None
        if parsed.problems:
            raw = add(encode_blob(data))
            for problem in parsed.problems:
                self.warn(rel, f"{problem}; the file is kept whole, its good chunks per chunk")
        entry = DirEntry(name, EntryKind.REGION, build_region(add, chunks), len(chunks), raw)
        # .mcc files are not in the stat key, so a region with external chunks is always re-read.
        return entry, not externals


def scan_world(
    world: Path,
    writer: ObjectWriter,
    cache: dict[str, bytes],
    *,
    progress: Progress | None = None,
) -> ScanResult:
    """Store the world folder's tree through ``writer`` and return its root.

    Args:
        world: the world folder (``level.dat`` lives here).
        writer: where new objects go.
        cache: the stat cache (``path -> value``), used to skip unchanged files.
        progress: called with ``(bytes read, bytes to read)``.
    """
    scanner = _Scanner(world, writer, cache, progress)
    try:
        root = scanner.build(scanner.walk(world, ""))
    except OSError as exc:
        raise WorldReadError(f"cannot read the world at {world}: {exc}") from exc
    # Forget cache entries of files that are gone, so the cache does not grow without bound.
    scanner.stats.update((path, None) for path in cache.keys() - scanner.seen)
    return ScanResult(root, scanner.summary, scanner.warnings, scanner.stats)
