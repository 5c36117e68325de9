"""Chunk payloads <-> NBT bytes, and the checks that make untrusted NBT safe to load. Pure.

A chunk payload (see :mod:`peerhost_store.region`) is NBT compressed with gzip (1), zlib (2),
nothing (3), lz4-java's block stream (4) or a named custom algorithm (127). Payloads come from
other peers, so every step here treats them as hostile:

* :func:`decompress` refuses to inflate past ``limit`` bytes (a 1 KiB zlib stream can inflate to
  1 MiB, so a "small" chunk can exhaust memory);
* :func:`load_nbt` parses with :func:`peerhost_store.nbt.load`, which walks the NBT without
  recursion and refuses what Minecraft refuses (nesting deeper than 512, strings ``readUTF``
  cannot read) and what cannot be real (lengths past the end);
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

import lz4.block
import xxhash

from . import nbt
from .errors import PeerhostError
from .region import CUSTOM, GZIP, LZ4, NONE, ZLIB

__all__ = [
    "COMPRESSION_NAMES",
    "LZ4_BLOCK_SIZE",
    "LZ4_CHECKSUM_MASK",
    "LZ4_MAGIC",
    "LZ4_METHOD_LZ4",
    "LZ4_METHOD_RAW",
    "LZ4_SEED",
    "MAX_NBT_BYTES",
    "VOLATILE_KEYS",
    "ChunkDecodeError",
    "classify_change",
    "compress",
    "decompress",
    "load_nbt",
    "lz4_checksum",
]

MAX_NBT_BYTES = nbt.MAX_NBT_BYTES
"""Default cap on decompressed NBT (the NBT reader's size cap): real chunks inflate to well
under 10 MiB."""

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


# --- loading and comparing --------------------------------------------------------------------


def load_nbt(compression: int, payload: bytes, *, limit: int = MAX_NBT_BYTES) -> nbt.NamedTag:
    """Decompress (capped) and parse a chunk payload with the bounded reader :func:`nbt.load`.

    Strings are decoded as Java's ``DataInput.readUTF`` decodes them (modified UTF-8), so text
    the game cannot read is refused and text it reads the same compares equal.

    Args:
        compression: the compression type, without the external flag.
        payload: the payload as stored.
        limit: the most decompressed bytes to accept.

    Raises:
        ChunkDecodeError: the payload cannot be decompressed or its NBT is refused (too deep,
            truncated, malformed), with the offset in the NBT.
    """
    raw = decompress(compression, payload, limit=limit)
    try:
        return nbt.load(raw, max_bytes=limit)
    except nbt.NbtError as exc:
        raise ChunkDecodeError(exc.reason, offset=exc.offset) from exc


def classify_change(old: tuple[int, bytes], new: tuple[int, bytes]) -> Literal["content", "resave"]:
    """Tell a real change of a chunk from the game merely saving it again.

    Args:
        old: ``(compression, payload)`` of the previous version.
        new: ``(compression, payload)`` of the new version.

    Returns:
        "resave" when both decode to equal NBT once :data:`VOLATILE_KEYS` are removed from the
        root compound and from a pre-1.18 ``Level`` compound; "content" otherwise. Equality is
        :mod:`.nbt`'s ``==``: by value and type (compound key order does not matter, floats
        compare by bits, empty lists are equal whatever their item type).

    Raises:
        ChunkDecodeError: either side cannot be decoded.
    """
    trees = [load_nbt(*old), load_nbt(*new)]
    for tree in trees:
        _drop_volatile(tree.root)
    return "resave" if trees[0] == trees[1] else "content"


def _drop_volatile(root: nbt.Compound) -> None:
    holders = [root]
    level = root.get("Level")
    if isinstance(level, dict):
        holders.append(level)  # before 1.18 chunk data sits under "Level"
    for holder in holders:
        for key in VOLATILE_KEYS:
            holder.pop(key, None)
