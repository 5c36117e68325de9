"""Turning a world folder into a world tree (the I/O half of snapshot).

Files whose size, mtime, ctime and inode match the stat cache are not read at all; their
entry comes from the cache. Region-format files are split per chunk; every other file is one
blob. A region file that does not parse cleanly is kept whole as well, with a warning.

A region file that changed is read again, but its chunks are not all hashed again: its stat
cache entry also keeps, per chunk, a 128-bit xxh3 fingerprint of the payload with the
payload's object id (the *slot cache*). A chunk whose payload has a fingerprint the entry
lists gets that id; any other is hashed and stored. The fingerprint is of the bytes read
now, so it needs no timestamp to be right (a same-size rewrite in the same second is seen);
it is kept even for a file too recent for its stat to be trusted. xxh3 runs about 15 times
faster than blake3 on a chunk; it is a check against accident, as the stat key is (a writer
that can forge it can write the world), and ids stay blake3 everywhere else.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import xxhash

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
    #: The file's stat cache value when its stat no longer matches (for its slot cache).
    previous: bytes | None = None


#: The stat key of an entry kept only for its slot cache: no file has it.
_NEVER = [-1, 0, 0, 0]
#: Slot cache records: the payload's fingerprint, its blob's id.
_SLOT = 16 + 32


@dataclass
class _Dir:
    rel: str
    children: list[tuple[str, _File | _Dir]] = field(default_factory=list)


def stat_key(st: os.stat_result) -> list[int]:
    """The stat fields that must all match for a cached entry to be trusted."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def encode_stat(st: os.stat_result | None, entry: DirEntry, slots: bytes = b"") -> bytes:
    """A stat cache value: the file's stat key (None: one no file matches), its tree entry
    and, for a region, its slot cache (records of a fingerprint and an id)."""
    key = _NEVER if st is None else stat_key(st)
    row = [*key, int(entry.kind), entry.oid, entry.size, entry.raw]
    return msgpack.packb([*row, slots] if slots else row)  # type: ignore[no-any-return]


def _fingerprint(payload: bytes | memoryview) -> bytes:
    return xxhash.xxh3_128_digest(payload)


def _decode_slots(value: bytes | None) -> dict[bytes, ObjectId]:
    """The slot cache of a stat cache value: fingerprint -> id (empty if there is none)."""
    if value is None:
        return {}
    try:
        row = msgpack.unpackb(value)
        slots = row[8] if len(row) > 8 else b""
        if not isinstance(slots, bytes) or len(slots) % _SLOT:
            return {}
        return {slots[i:i + 16]: ObjectId(slots[i + 16:i + _SLOT])
                for i in range(0, len(slots), _SLOT)}
    except (ValueError, TypeError, IndexError, msgpack.UnpackException):
        return {}


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
    """The object ids a stat cache value refers to, its slot cache's included (empty if it
    is unreadable)."""
    try:
        row = msgpack.unpackb(value)
        ids = [ObjectId(row[5])] + ([ObjectId(row[7])] if row[7] is not None else [])
    except (ValueError, TypeError, IndexError, msgpack.UnpackException):
        return []
    return ids + list(_decode_slots(value).values())


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
            ("files", "dirs", "regions", "chunks", "bytes", "read_bytes", "cached_files",
             "cached_chunks"), 0
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
                        item.previous = self.cache[child_rel]
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
            cacheable, slots = True, b""
            if region and data:
                entry, cacheable, slots = self.region_entry(name, item, data, consumed)
            else:
                entry = DirEntry(name, EntryKind.FILE, self.writer.add(encode_blob(data)), len(data))
            if cacheable and item.st.st_mtime_ns < self.racy_after:
                self.stats[item.rel] = encode_stat(item.st, entry, slots)
            elif slots:  # its stat cannot be trusted, its fingerprints can
                self.stats[item.rel] = encode_stat(None, entry, slots)
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
        self, name: str, item: _File, data: bytes, consumed: set[str]
    ) -> tuple[DirEntry, bool, bytes]:
        """The entry of a region file, whether it may be cached by its stat, its slot cache."""
        rel = item.rel
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
            parsed = parse_region(data, load_external, views=True)
        except RegionError as exc:
            self.warn(rel, f"{exc}; stored whole as a plain file")
            entry = DirEntry(name, EntryKind.FILE, self.writer.add(encode_blob(data)), len(data))
            return entry, True, b""
        if parsed.clean:  # a damaged region is restored whole, so its .mcc files stay plain files
            consumed.update(externals)
        add = self.writer.add
        known = _decode_slots(item.previous)
        chunks = []
        slots = []
        for c in parsed.chunks:
            fingerprint = _fingerprint(c.payload)
            oid = known.get(fingerprint)
            if oid is None:
                oid = add(encode_blob(c.payload))
            else:
                self.summary["cached_chunks"] += 1
            slots.append(fingerprint + oid)
            chunks.append(ChunkEntry(c.slot, oid, c.compression, c.timestamp, c.external))
        raw = None
        if parsed.problems:
            raw = add(encode_blob(data))
            for problem in parsed.problems:
                self.warn(rel, f"{problem}; the file is kept whole, its good chunks per chunk")
        entry = DirEntry(name, EntryKind.REGION, build_region(add, chunks), len(chunks), raw)
        # .mcc files are not in the stat key, so a region with external chunks is always re-read.
        return entry, not externals, b"".join(slots)


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
