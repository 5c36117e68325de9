"""Chunk payloads <-> NBT bytes, and the checks that make untrusted NBT safe to load. Pure.

A chunk payload (see :mod:`peerhost_store.region`) is NBT compressed with gzip (1), zlib (2),
nothing (3), lz4-java's block stream (4) or a named custom algorithm (127). Payloads come from
other peers, so every step here treats them as hostile:

* :func:`decompress` refuses to inflate past ``limit`` bytes (a 1 KiB zlib stream can inflate to
  1 MiB, so a "small" chunk can exhaust memory);
* :func:`check_nbt` walks the NBT structure without recursion and refuses what Minecraft refuses
  (depth > 512) and what would crash amulet-nbt (which segfaults the whole process on very deep
  input) before :func:`load_nbt` hands the bytes to it;
* every failure is a :class:`ChunkDecodeError`, never a stray ``zlib.error`` or ``EOFError``.

Error hierarchy::

    PeerhostError
     +-- ChunkDecodeError (also ValueError)   payload or NBT refused
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Literal

import amulet_nbt
import lz4.block
import xxhash

from .errors import PeerhostError
from .region import CUSTOM, GZIP, LZ4, NONE, ZLIB

MAX_NBT_BYTES = 64 * 1024 * 1024
"""Default cap on decompressed NBT: real chunks inflate to well under 10 MiB."""

MAX_NBT_DEPTH = 512
"""Minecraft refuses NBT nested deeper than this (``NbtAccounter``)."""

VOLATILE_KEYS = ("LastUpdate", "InhabitedTime")
"""Root (or pre-1.18 ``Level``) keys the game rewrites on every save of a loaded chunk."""

COMPRESSION_NAMES = {GZIP: "gzip", ZLIB: "zlib", NONE: "uncompressed", LZ4: "lz4", CUSTOM: "custom"}


class ChunkDecodeError(PeerhostError, ValueError):
    """A chunk payload that cannot be decompressed, or NBT that is refused.

    Attributes:
        reason: what is wrong, without the location.
        compression: the payload's compression type, when the payload was being decompressed.
        offset: byte offset in the payload (decompressing) or in the NBT (checking), if known.
    """

    def __init__(
        self, reason: str, *, compression: int | None = None, offset: int | None = None
    ) -> None:
        self.reason = reason
        self.compression = compression
        self.offset = offset
        where = []
        if compression is not None:
            where.append(f"{COMPRESSION_NAMES.get(compression, f'type {compression}')} payload")
        else:
            where.append("NBT")
        if offset is not None:
            where.append(f"at byte {offset}")
        super().__init__(f"{' '.join(where)}: {reason}")


# --- decompression ----------------------------------------------------------------------------


def decompress(compression: int, payload: bytes, *, limit: int = MAX_NBT_BYTES) -> bytes:
    """Return the NBT bytes of a chunk payload.

    Bytes after the end of a gzip, zlib or LZ4 stream are ignored, as the game ignores them.

    Args:
        compression: the compression type, without the external flag.
        payload: the payload as stored (inline in the region or in a ``.mcc`` file).
        limit: the most decompressed bytes to accept. Larger output is refused without
            producing it, so a tiny payload cannot exhaust memory.

    Raises:
        ChunkDecodeError: corrupt, truncated or oversized payload; custom or unknown compression.
    """
    if compression == ZLIB:
        return _inflate(payload, 15, limit, compression)
    if compression == GZIP:
        return _inflate(payload, 16 + 15, limit, compression)
    if compression == NONE:
        if len(payload) > limit:
            raise ChunkDecodeError(_too_big(len(payload), limit), compression=compression)
        return payload
    if compression == LZ4:
        return _lz4_decompress(payload, limit)
    if compression == CUSTOM:
        raise ChunkDecodeError(
            f"custom compression {_custom_name(payload)} is not supported", compression=compression
        )
    raise ChunkDecodeError("unknown compression type", compression=compression)


def _too_big(size: int, limit: int) -> str:
    return f"decompresses to more than {limit} bytes ({size} or more)"


def _inflate(payload: bytes, wbits: int, limit: int, compression: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        # Asking for one byte more than allowed tells "exactly limit" from "more than limit"
        # without ever holding more than limit + 1 bytes.
        raw = inflater.decompress(payload, limit + 1)
    except zlib.error as exc:
        raise ChunkDecodeError(f"corrupt stream ({exc})", compression=compression) from exc
    if len(raw) > limit:
        raise ChunkDecodeError(_too_big(len(raw), limit), compression=compression)
    if not inflater.eof:
        raise ChunkDecodeError("truncated stream", compression=compression, offset=len(payload))
    return raw


def _custom_name(payload: bytes) -> str:
    if len(payload) < 2:
        return "(name missing)"
    (size,) = struct.unpack_from(">H", payload)
    name = payload[2 : 2 + size]
    if len(name) < size:
        return "(name truncated)"
    return repr(name.decode("utf-8", errors="replace"))


# lz4-java's LZ4BlockOutputStream, the format of compression type 4: a series of blocks, each
#   magic "LZ4Block" | token (method | level) | compressed length u32 LE |
#   decompressed length u32 LE | checksum u32 LE | data
# where the checksum is xxhash32 (seed 0x9747B28C) of the block's decompressed bytes, masked to
# 28 bits, and the stream ends with an empty block (both lengths and the checksum 0).
LZ4_MAGIC = b"LZ4Block"
LZ4_SEED = 0x9747B28C
LZ4_CHECKSUM_MASK = 0x0FFFFFFF
LZ4_METHOD_RAW = 0x10
LZ4_METHOD_LZ4 = 0x20
LZ4_BLOCK_SIZE = 64 * 1024  # LZ4BlockOutputStream's default, which Minecraft uses
_LZ4_LEVEL_BASE = 10  # a block's level nibble n bounds its size to 2 ** (10 + n)
_LZ4_HEADER = struct.Struct("<8sBIII")


def lz4_checksum(data: bytes) -> int:
    """The checksum lz4-java stores for a block whose decompressed bytes are ``data``."""
    return xxhash.xxh32_intdigest(data, seed=LZ4_SEED) & LZ4_CHECKSUM_MASK


def _lz4_decompress(payload: bytes, limit: int) -> bytes:
    # All headers are checked first, so declared sizes past the limit are refused before any
    # block is decompressed (python-lz4 allocates the declared size up front).
    blocks = list(_lz4_blocks(payload, limit))
    return b"".join(_lz4_block_data(payload, *block) for block in blocks)


def _lz4_blocks(payload: bytes, limit: int) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield ``(offset, method, compressed, decompressed, checksum)`` of each non-empty block."""
    pos, total = 0, 0
    while True:
        if len(payload) - pos < _LZ4_HEADER.size:
            raise _lz4_error("truncated block header (no empty end block)", pos)
        magic, token, packed, size, check = _LZ4_HEADER.unpack_from(payload, pos)
        method, level = token & 0xF0, token & 0x0F
        problem = _lz4_header_problem(magic, method, level, packed, size)
        if problem is not None:
            raise _lz4_error(problem, pos)
        if size == 0:
            if check != 0:
                raise _lz4_error("end block with a non-zero checksum", pos)
            return
        total += size
        if total > limit:
            raise ChunkDecodeError(_too_big(total, limit), compression=LZ4, offset=pos)
        data_at = pos + _LZ4_HEADER.size
        if len(payload) - data_at < packed:
            raise _lz4_error(f"block data truncated: {packed} bytes declared", pos)
        yield data_at, method, packed, size, check
        pos = data_at + packed


def _lz4_header_problem(
    magic: bytes, method: int, level: int, packed: int, size: int
) -> str | None:
    # The same checks as lz4-java's LZ4BlockInputStream.refill, so we accept what the game does.
    if magic != LZ4_MAGIC:
        return "bad block magic"
    if method not in (LZ4_METHOD_RAW, LZ4_METHOD_LZ4):
        return f"unknown block method 0x{method:02x}"
    if packed >= 1 << 31 or size >= 1 << 31:
        return "negative block length"
    if size > 1 << (_LZ4_LEVEL_BASE + level):
        return f"block of {size} bytes is larger than its level {level} allows"
    if (size == 0) != (packed == 0):
        return "one block length is zero and the other is not"
    if method == LZ4_METHOD_RAW and packed != size:
        return "raw block whose two lengths differ"
    return None


def _lz4_block_data(
    payload: bytes, at: int, method: int, packed: int, size: int, check: int
) -> bytes:
    data = payload[at : at + packed]
    if method == LZ4_METHOD_LZ4:
        try:
            data = lz4.block.decompress(data, uncompressed_size=size)
        except lz4.block.LZ4BlockError as exc:
            raise _lz4_error(f"corrupt block ({exc})", at) from exc
        # python-lz4 treats the size as an upper bound; lz4-java requires it exactly.
        if len(data) != size:
            raise _lz4_error(f"block decompresses to {len(data)} bytes, not {size}", at)
    if lz4_checksum(data) != check:
        raise _lz4_error("block checksum mismatch", at)
    return data


def _lz4_error(reason: str, offset: int) -> ChunkDecodeError:
    return ChunkDecodeError(reason, compression=LZ4, offset=offset)


# --- compression ------------------------------------------------------------------------------

# What java.util.zip.GZIPOutputStream writes (JDK 16+ sets the OS byte to 255, "unknown"). A fixed
# header rather than gzip.compress() keeps the output identical across Python versions and OSes.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def compress(compression: int, raw: bytes, *, level: int = 6) -> bytes:
    """Compress NBT bytes into a payload of the given type, in the form the game writes.

    ``zlib.compress(raw, 6)`` reproduces the game's zlib payloads byte for byte; LZ4 output is
    lz4-java's block stream in 64 KiB blocks, as Minecraft writes it.

    Args:
        compression: GZIP, ZLIB, NONE or LZ4.
        raw: the NBT bytes.
        level: zlib/gzip compression level (ignored for NONE and LZ4).

    Raises:
        ChunkDecodeError: custom or unknown compression (nothing can write those).
    """
    if compression == ZLIB:
        return zlib.compress(raw, level)
    if compression == GZIP:
        return _gzip(raw, level)
    if compression == NONE:
        return raw
    if compression == LZ4:
        return _lz4_compress(raw)
    raise ChunkDecodeError("cannot compress with this type", compression=compression)


def _gzip(raw: bytes, level: int) -> bytes:
    deflater = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = deflater.compress(raw) + deflater.flush()
    return _GZIP_HEADER + body + struct.pack("<II", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)


def _lz4_compress(raw: bytes, block_size: int = LZ4_BLOCK_SIZE) -> bytes:
    level = max(0, (block_size - 1).bit_length() - _LZ4_LEVEL_BASE)
    out = bytearray()
    for start in range(0, len(raw), block_size):
        block = raw[start : start + block_size]
        packed: bytes = lz4.block.compress(block, store_size=False)
        method = LZ4_METHOD_LZ4
        if len(packed) >= len(block):  # as lz4-java does: store what does not shrink
            packed, method = block, LZ4_METHOD_RAW
        out += _LZ4_HEADER.pack(
            LZ4_MAGIC, method | level, len(packed), len(block), lz4_checksum(block)
        )
        out += packed
    out += _LZ4_HEADER.pack(LZ4_MAGIC, LZ4_METHOD_RAW | level, 0, 0, 0)
    return bytes(out)


# --- NBT structure check ----------------------------------------------------------------------

TAG_END = 0
TAG_STRING = 8
TAG_LIST = 9
TAG_COMPOUND = 10
_MAX_TAG = 12
_FIXED_SIZE = {1: 1, 2: 2, 3: 4, 4: 8, 5: 4, 6: 8}  # byte, short, int, long, float, double
_ARRAY_ITEM = {7: 1, 11: 4, 12: 8}  # byte, int and long arrays: i32 count, then items
# The fewest bytes one list item of each type can take, to refuse absurd counts at once.
_MIN_ITEM = {**_FIXED_SIZE, 7: 4, 8: 2, 9: 5, 10: 1, 11: 4, 12: 4}
_I32 = struct.Struct(">i")
_COMPOUND = -1  # the "items left" of a compound frame: it ends at its End tag, not by count


def check_nbt(
    raw: bytes, *, max_depth: int = MAX_NBT_DEPTH, max_bytes: int = MAX_NBT_BYTES
) -> None:
    """Check the structure of big-endian (Java) NBT without building it.

    The scan uses an explicit stack, so hostile nesting cannot overflow any stack, and it
    visits each byte at most once (arrays are skipped by their declared length). Bytes after
    the root compound are ignored, as the game ignores them.

    Args:
        raw: decompressed NBT: a named root compound.
        max_depth: the deepest nesting of compounds and lists accepted; the root is depth 1.
        max_bytes: the largest input accepted.

    Raises:
        ChunkDecodeError: with ``offset`` and ``reason``: input too large, root not a
            compound, truncation, unknown tag id, negative or impossible length, too deep.
    """
    if len(raw) > max_bytes:
        raise ChunkDecodeError(f"{len(raw)} bytes exceed the limit of {max_bytes}", offset=0)
    if not raw or raw[0] != TAG_COMPOUND:
        raise ChunkDecodeError("the root tag is not a compound", offset=0)
    _scan_containers(raw, _skip_string(raw, 1), max_depth)


def _scan_containers(raw: bytes, pos: int, max_depth: int) -> int:
    """Scan from the root compound's payload at ``pos``; return the offset after it."""
    size = len(raw)
    # One frame per open compound or list: the item type (lists) and the items left.
    types = [TAG_COMPOUND]
    lefts = [_COMPOUND]
    while lefts:
        left = lefts[-1]
        at = pos
        if left == _COMPOUND:
            if pos >= size:
                raise ChunkDecodeError("truncated: compound without its End tag", offset=pos)
            tag = raw[pos]
            if tag == TAG_END:
                types.pop()
                lefts.pop()
                pos += 1
                continue
            if tag > _MAX_TAG:
                raise ChunkDecodeError(f"unknown tag id {tag}", offset=pos)
            pos = _skip_string(raw, pos + 1)
        elif left == 0:
            types.pop()
            lefts.pop()
            continue
        else:
            lefts[-1] = left - 1
            tag = types[-1]
        if tag == TAG_COMPOUND or tag == TAG_LIST:
            if len(lefts) >= max_depth:
                raise ChunkDecodeError(f"nested deeper than {max_depth}", offset=at)
            if tag == TAG_COMPOUND:
                types.append(TAG_COMPOUND)
                lefts.append(_COMPOUND)
                continue
            item, count, pos = _read_list_header(raw, pos)
            if item == TAG_COMPOUND or item == TAG_LIST:
                types.append(item)
                lefts.append(count)
            else:
                pos = _skip_items(raw, pos, item, count)
        else:
            pos = _skip_value(raw, pos, tag)
    return pos


def _need(raw: bytes, pos: int, count: int, what: str) -> None:
    if len(raw) - pos < count:
        raise ChunkDecodeError(
            f"truncated: {what} needs {count} bytes, {max(0, len(raw) - pos)} left", offset=pos
        )


def _skip_string(raw: bytes, pos: int) -> int:
    _need(raw, pos, 2, "string length")
    end = pos + 2 + (raw[pos] << 8 | raw[pos + 1])
    _need(raw, pos + 2, end - pos - 2, "string")
    return end


def _read_count(raw: bytes, pos: int, what: str) -> int:
    _need(raw, pos, 4, f"{what} length")
    (count,) = _I32.unpack_from(raw, pos)
    if count < 0:
        raise ChunkDecodeError(f"negative {what} length {count}", offset=pos)
    return int(count)


def _read_list_header(raw: bytes, pos: int) -> tuple[int, int, int]:
    """Return the item type, item count and payload offset of the list at ``pos``."""
    _need(raw, pos, 1, "list item type")
    item = raw[pos]
    count = _read_count(raw, pos + 1, "list")
    if count == 0:
        # The game reads an empty list without looking its item type up, so any type passes.
        return item, 0, pos + 5
    if item > _MAX_TAG:
        raise ChunkDecodeError(f"unknown list item tag id {item}", offset=pos)
    if item == TAG_END:
        # Minecraft: "Missing type on ListTag".
        raise ChunkDecodeError(f"list of {count} End tags", offset=pos)
    room = len(raw) - pos - 5
    if count > room // _MIN_ITEM[item]:
        raise ChunkDecodeError(
            f"list declares {count} items; {room} bytes cannot hold them", offset=pos
        )
    return item, count, pos + 5


def _skip_items(raw: bytes, pos: int, item: int, count: int) -> int:
    """Skip ``count`` list items of a type that contains no containers."""
    if count == 0:
        return pos
    fixed = _FIXED_SIZE.get(item)
    if fixed is not None:
        _need(raw, pos, fixed * count, "list")
        return pos + fixed * count
    for _ in range(count):
        pos = _skip_value(raw, pos, item)
    return pos


def _skip_value(raw: bytes, pos: int, tag: int) -> int:
    """Skip the payload of a tag that is neither a compound nor a list."""
    fixed = _FIXED_SIZE.get(tag)
    if fixed is not None:
        _need(raw, pos, fixed, "number")
        return pos + fixed
    if tag == TAG_STRING:
        return _skip_string(raw, pos)
    item = _ARRAY_ITEM[tag]
    count = _read_count(raw, pos, "array")
    _need(raw, pos + 4, count * item, "array")
    return pos + 4 + count * item


# --- loading and comparing --------------------------------------------------------------------


def load_nbt(
    compression: int, payload: bytes, *, limit: int = MAX_NBT_BYTES
) -> amulet_nbt.NamedTag:
    """Decompress (capped), check and parse a chunk payload.

    Strings are decoded as Java's ``DataInput.readUTF`` decodes them (modified UTF-8), so text
    the game cannot read is refused and text it reads the same compares equal.

    Args:
        compression: the compression type, without the external flag.
        payload: the payload as stored.
        limit: the most decompressed bytes to accept.

    Raises:
        ChunkDecodeError: the payload cannot be decompressed, fails :func:`check_nbt`, or
            amulet-nbt cannot parse it.
    """
    raw = decompress(compression, payload, limit=limit)
    check_nbt(raw, max_bytes=limit)
    try:
        return amulet_nbt.load(
            raw, compressed=False, little_endian=False, string_decoder=decode_java_utf
        )
    # amulet-nbt raises NBTLoadError, EOFError, UnicodeDecodeError and whatever the string
    # decoder raises; any of them means "cannot decode", which is the only thing callers handle.
    except Exception as exc:
        raise ChunkDecodeError(f"amulet-nbt cannot load it: {exc!r}") from exc


def decode_java_utf(data: bytes) -> str:
    """Decode a string as Java's ``DataInput.readUTF`` does ("modified UTF-8").

    Unlike standard UTF-8 it accepts ``C0 80`` and raw ``00`` for NUL, overlong forms and
    encoded surrogates (kept as lone surrogates when unpaired), and refuses 4-byte sequences.

    Raises:
        UnicodeDecodeError: bytes that ``readUTF`` refuses.
    """
    if data.isascii():
        return data.decode("ascii")
    units: list[int] = []
    i, size = 0, len(data)
    while i < size:
        first = data[i]
        width = (
            1 if first < 0x80 else 2 if first >> 5 == 0b110 else 3 if first >> 4 == 0b1110 else 0
        )
        rest = data[i + 1 : i + width]
        if width == 0 or len(rest) != width - 1 or any(b >> 6 != 0b10 for b in rest):
            raise UnicodeDecodeError("java-utf", data, i, i + 1, "malformed modified UTF-8")
        unit = first & (0x7F, 0x1F, 0x0F)[width - 1]
        for b in rest:
            unit = unit << 6 | b & 0x3F
        units.append(unit)
        i += width
    return struct.pack(f"<{len(units)}H", *units).decode("utf-16-le", "surrogatepass")


def classify_change(old: tuple[int, bytes], new: tuple[int, bytes]) -> Literal["content", "resave"]:
    """Tell a real change of a chunk from the game merely saving it again.

    Args:
        old: ``(compression, payload)`` of the previous version.
        new: ``(compression, payload)`` of the new version.

    Returns:
        "resave" when both decode to equal NBT once :data:`VOLATILE_KEYS` are removed from the
        root compound and from a pre-1.18 ``Level`` compound; "content" otherwise. Equality is
        by NBT value and type (compound key order does not matter; floats compare by bits).

    Raises:
        ChunkDecodeError: either side cannot be decoded.
    """
    trees = [load_nbt(*old), load_nbt(*new)]
    for tree in trees:
        _drop_volatile(tree.tag)
    if trees[0].name != trees[1].name or not tags_equal(trees[0].tag, trees[1].tag):
        return "content"
    return "resave"


def _drop_volatile(root: amulet_nbt.AbstractBaseTag) -> None:
    holders = [root]
    if isinstance(root, amulet_nbt.CompoundTag):
        level = root.get("Level")
        if isinstance(level, amulet_nbt.CompoundTag):
            holders.append(level)  # before 1.18 chunk data sits under "Level"
    for holder in holders:
        if isinstance(holder, amulet_nbt.CompoundTag):
            for key in VOLATILE_KEYS:
                holder.pop(key, None)


def tags_equal(a: amulet_nbt.AbstractBaseTag, b: amulet_nbt.AbstractBaseTag) -> bool:
    """Strict NBT equality; amulet-nbt's ``==`` is too loose to tell a change from a re-save.

    amulet-nbt 2.1 finds ``IntTag(1) == LongTag(1)`` and ``FloatTag(nan) != FloatTag(nan)``.
    Here tags are equal when they have the same type and value: compounds regardless of key
    order, lists item by item with the same item type (except that empty lists are equal
    whatever their declared type, which the game does not keep), floats by their bits.
    The walk is iterative; :func:`check_nbt` already bounds the depth of loaded trees.
    """
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, amulet_nbt.CompoundTag):
            assert isinstance(y, amulet_nbt.CompoundTag)
            if x.keys() != y.keys():
                return False
            pending.extend((x[key], y[key]) for key in x)
        elif isinstance(x, amulet_nbt.ListTag):
            assert isinstance(y, amulet_nbt.ListTag)
            if len(x) != len(y) or (len(x) and x.list_data_type != y.list_data_type):
                return False
            pending.extend(zip(x, y))
        elif not _leaves_equal(x, y):
            return False
    return True


def _leaves_equal(x: amulet_nbt.AbstractBaseTag, y: amulet_nbt.AbstractBaseTag) -> bool:
    if isinstance(x, amulet_nbt.AbstractBaseFloatTag):
        assert isinstance(y, amulet_nbt.AbstractBaseFloatTag)
        return struct.pack(">d", x.py_float) == struct.pack(">d", y.py_float)
    if isinstance(x, amulet_nbt.AbstractBaseArrayTag):
        assert isinstance(y, amulet_nbt.AbstractBaseArrayTag)
        return bool(x.np_array.tobytes() == y.np_array.tobytes())
    return bool(x.py_data == y.py_data)
