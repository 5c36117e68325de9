"""Anvil region files (``r.X.Z.mca``) <-> chunk records. Pure: bytes in, values out.

A region file starts with an 8 KiB header: 1024 big-endian 4-byte locations (3 bytes sector
offset, 1 byte sector count) and 1024 big-endian 4-byte timestamps. A chunk at sector ``offset``
is a 4-byte length (counting the compression byte), the compression byte and the payload. When
the compression byte has bit 0x80 set, the payload lives in ``c.X.Z.mcc`` beside the region.

The reader is lenient where real files are (unpadded last sector, stale bytes in free sectors,
timestamps on empty slots) and reports everything else as a :class:`RegionProblem` per slot
instead of raising, so that a caller can keep every chunk that parsed.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import PeerhostError

__all__ = [
    "COMPRESSIONS",
    "CUSTOM",
    "EXTERNAL_FLAG",
    "GZIP",
    "HEADER_SIZE",
    "LZ4",
    "NONE",
    "SECTOR",
    "SLOTS",
    "ZLIB",
    "ChunkRecord",
    "ParsedRegion",
    "RegionError",
    "RegionProblem",
    "chunk_coords",
    "external_name",
    "parse_region",
    "region_coords",
    "region_parts",
    "write_region",
]

SECTOR = 4096
HEADER_SIZE = 2 * SECTOR
SLOTS = 1024
EXTERNAL_FLAG = 0x80

GZIP = 1
ZLIB = 2
NONE = 3
LZ4 = 4
CUSTOM = 127
COMPRESSIONS = frozenset({GZIP, ZLIB, NONE, LZ4, CUSTOM})

_HEADER = struct.Struct(">1024I1024I")
_CHUNK_HEAD = struct.Struct(">IB")
_REGION_NAME = re.compile(r"^r\.(-?\d+)\.(-?\d+)\.mca$")
_MAX_INLINE_SECTORS = 255  # the sector count is one byte
_ZEROS = bytes(SECTOR)


class RegionError(PeerhostError, ValueError):
    """A region file that cannot be parsed at all, or chunk records that cannot be written."""


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """One chunk slot of a region file, as stored.

    Attributes:
        slot: index in the region, ``x + 32 * z`` with local coordinates 0..31.
        compression: compression type without the external flag (1, 2, 3, 4 or 127).
        payload: the compressed payload exactly as the game wrote it (with
            :func:`parse_region`'s ``views``, a view of the file's bytes, not a copy).
        timestamp: the slot's modification time (seconds since the epoch) from the header.
        external: whether the payload lives in a ``c.X.Z.mcc`` file beside the region.
    """

    slot: int
    compression: int
    payload: bytes | memoryview
    timestamp: int
    external: bool = False


@dataclass(frozen=True, slots=True)
class RegionProblem:
    """Something wrong with one slot (or, with ``slot`` None, the file)."""

    slot: int | None
    message: str

    def __str__(self) -> str:
        if self.slot is None:
            return self.message
        return f"chunk slot {self.slot} (local x={self.slot % 32}, z={self.slot // 32}): {self.message}"


@dataclass(frozen=True, slots=True)
class ParsedRegion:
    """What :func:`parse_region` found: the chunks that parsed and the problems it saw."""

    chunks: list[ChunkRecord]
    problems: list[RegionProblem]

    @property
    def clean(self) -> bool:
        return not self.problems


def region_coords(name: str) -> tuple[int, int] | None:
    """Return ``(rx, rz)`` for a region file name such as ``r.-1.4.mca``, else None."""
    match = _REGION_NAME.match(name)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def chunk_coords(rx: int, rz: int, slot: int) -> tuple[int, int]:
    """World chunk coordinates of ``slot`` in region ``(rx, rz)``."""
    return rx * 32 + slot % 32, rz * 32 + slot // 32


def external_name(rx: int, rz: int, slot: int) -> str:
    """File name of the external payload of ``slot`` in region ``(rx, rz)``."""
    cx, cz = chunk_coords(rx, rz, slot)
    return f"c.{cx}.{cz}.mcc"


#: The first two bytes of every zlib stream (RFC 1950: deflate, header check bits right):
#: what nearly every chunk starts with, checked by one set lookup.
_ZLIB_HEADS = frozenset(bytes((cmf, flg)) for cmf in range(8, 256, 16) for flg in range(256)
                        if (cmf << 8 | flg) % 31 == 0)


def _payload_problem(compression: int, payload: bytes | memoryview) -> str | None:
    """A cheap check of the payload's first bytes; full decoding happens only in diff."""
    if compression == ZLIB and (
        len(payload) < 2 or payload[0] & 0x0F != 8 or (payload[0] << 8 | payload[1]) % 31
    ):
        return "undecodable payload: not a zlib stream"
    if compression == GZIP and payload[:2] != b"\x1f\x8b":
        return "undecodable payload: not a gzip stream"
    if compression == LZ4 and payload[:8] != b"LZ4Block":
        return "undecodable payload: not an lz4-java block stream"
    if compression == NONE and payload[:1] != b"\x0a":
        return "undecodable payload: uncompressed NBT does not start with a compound"
    return None


def parse_region(
    data: bytes, load_external: Callable[[int], bytes | None] | None = None, *,
    views: bool = False,
) -> ParsedRegion:
    """Parse a region file's bytes into chunk records.

    Args:
        data: the whole file. A 0-byte file is an empty region.
        load_external: returns the ``.mcc`` payload of a slot whose chunk is external, or
            None when that file is missing.
        views: inline payloads are views of ``data`` rather than copies (a snapshot hashes
            and packs them without copying each one first).

    Raises:
        RegionError: the file is shorter than its 8 KiB header (and not empty).
    """
    if not data:
        return ParsedRegion([], [])
    if len(data) < HEADER_SIZE:
        raise RegionError(f"truncated header: {len(data)} bytes, a region header has {HEADER_SIZE}")
    fields = _HEADER.unpack_from(data)
    locations, timestamps = fields[:SLOTS], fields[SLOTS:]
    size = len(data)
    source: bytes | memoryview = memoryview(data) if views else data
    chunks: list[ChunkRecord] = []
    problems: list[RegionProblem] = []
    used: list[tuple[int, int, int]] = []  # (first sector, end sector, slot)
    unpack_head = _CHUNK_HEAD.unpack_from
    zlib_heads = _ZLIB_HEADS
    for slot, location in enumerate(locations):
        if location == 0:
            continue
        # The checks of _check_location and _check_length, inlined (a snapshot parses every
        # changed region's 1,024 slots); their messages are built only for a slot that fails.
        offset, count = location >> 8, location & 0xFF
        start = offset * SECTOR
        if offset < 2 or count == 0 or start + 5 > size:
            problems.append(RegionProblem(slot, _check_location(offset, count, size) or "?"))
            continue
        length, ctype = unpack_head(data, start)
        compression = ctype & ~EXTERNAL_FLAG
        if (length == 0 or length + 4 > count * SECTOR or start + 4 + length > size
                or compression not in COMPRESSIONS):
            problem = _check_length(length, count, start, size)
            problems.append(RegionProblem(
                slot, problem or f"unknown compression type {compression}"))
            continue
        used.append((offset, offset + count, slot))
        external = bool(ctype & EXTERNAL_FLAG)
        payload: bytes | memoryview
        if external:
            loaded = load_external(slot) if load_external is not None else None
            if loaded is None:
                problems.append(RegionProblem(slot, "external payload file (.mcc) is missing"))
                continue
            payload = loaded
        else:
            payload = source[start + 5 : start + 4 + length]
            if compression == ZLIB and length > 2 and data[start + 5 : start + 7] in zlib_heads:
                chunks.append(ChunkRecord(slot, compression, payload, timestamps[slot], False))
                continue
        bad = _payload_problem(compression, payload)
        if bad is not None:
            problems.append(RegionProblem(slot, bad))
            continue
        chunks.append(ChunkRecord(slot, compression, payload, timestamps[slot], external))
    overlapping = _overlapping_slots(used)
    if overlapping:
        problems.extend(RegionProblem(s, "sectors overlap another chunk") for s in sorted(overlapping))
        chunks = [c for c in chunks if c.slot not in overlapping]
    problems.sort(key=lambda p: -1 if p.slot is None else p.slot)
    return ParsedRegion(chunks, problems)


def _check_location(offset: int, count: int, size: int) -> str | None:
    if offset < 2:
        return f"sector offset {offset} points into the header"
    if count == 0:
        return f"sector offset {offset} with a zero sector count"
    if offset * SECTOR + 5 > size:
        return f"sector offset {offset} is past the end of the file ({size} bytes)"
    return None


def _check_length(length: int, count: int, start: int, size: int) -> str | None:
    if length == 0:
        return "zero chunk length"
    if length + 4 > count * SECTOR:
        return f"chunk length {length} exceeds its {count} sectors"
    if start + 4 + length > size:
        return f"chunk length {length} runs past the end of the file ({size} bytes)"
    return None


def _overlapping_slots(used: list[tuple[int, int, int]]) -> set[int]:
    bad: set[int] = set()
    used.sort()
    furthest_end, furthest_slot = 0, -1
    for first, end, slot in used:
        if first < furthest_end:
            bad.update((slot, furthest_slot))
        if end > furthest_end:
            furthest_end, furthest_slot = end, slot
    return bad


def write_region(chunks: Iterable[ChunkRecord]) -> tuple[bytes, dict[int, bytes]]:
    """Lay out chunk records as a region file (:func:`region_parts`, joined)."""
    parts, externals = region_parts(chunks)
    return b"".join(parts), externals


def region_parts(
    chunks: Iterable[ChunkRecord],
) -> tuple[list[bytes | memoryview], dict[int, bytes]]:
    """Lay out chunk records as a region file, given as the parts that make it up in order
    (header, then each chunk's head, payload and padding): a restore writes them through one
    buffer rather than joining a copy of the whole file first.

    Chunks are packed in slot order from sector 2, each padded to whole sectors. External
    chunks get a 1-byte stub in the region and their payload in the returned mapping
    ``slot -> .mcc bytes``. A 0-chunk region is written as an 8 KiB header.

    Raises:
        RegionError: duplicate or out-of-range slots, unknown compression, or an inline
            payload too large for a region file.
    """
    records = sorted(chunks, key=lambda c: c.slot)
    locations = [0] * SLOTS
    timestamps = [0] * SLOTS
    externals: dict[int, bytes] = {}
    parts: list[bytes | memoryview] = [b""]  # the header goes first, once the locations are known
    pack = _CHUNK_HEAD.pack
    sector = 2
    previous = -1
    for record in records:
        if not 0 <= record.slot < SLOTS or record.slot == previous:
            raise RegionError(f"chunk slot {record.slot} is out of range or repeated")
        if not 0 <= record.timestamp < 2**32:
            raise RegionError(f"chunk slot {record.slot}: timestamp {record.timestamp} is out of range")
        if record.compression not in COMPRESSIONS:
            raise RegionError(f"chunk slot {record.slot}: unknown compression {record.compression}")
        previous = record.slot
        if record.external:
            externals[record.slot] = bytes(record.payload)
            parts.append(pack(1, record.compression | EXTERNAL_FLAG))
            size = 5
        else:
            size = 5 + len(record.payload)
            parts.append(pack(size - 4, record.compression))
            parts.append(record.payload)
        count = -(-size // SECTOR)
        parts.append(_ZEROS[: count * SECTOR - size])
        if count > _MAX_INLINE_SECTORS:
            raise RegionError(
                f"chunk slot {record.slot}: {size} bytes need {count} sectors; "
                f"at most {_MAX_INLINE_SECTORS} fit inline (store it as external)"
            )
        locations[record.slot] = sector << 8 | count
        timestamps[record.slot] = record.timestamp
        sector += count
    parts[0] = _HEADER.pack(*locations, *timestamps)
    return parts, externals
