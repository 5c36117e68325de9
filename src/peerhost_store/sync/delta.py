"""Chunk deltas, and batches of them in one compressed stream. Pure: bytes in, bytes out.

A play session re-saves many chunks whose NBT changes in a few bytes (``LastUpdate``,
``InhabitedTime``), and a game upgrade rewrites every chunk in the same few ways; but zlib turns
any change into a wholly different payload. So a changed chunk travels as a delta of its
*decompressed* NBT against the previous version of the same chunk, which the receiver already
has, and the receiver rebuilds the payload by compressing again. That is exact only where the
payload is what :func:`peerhost_store.chunk.compress` writes (true of every chunk the game
wrote with zlib level 6), so :func:`make_delta` checks it for each chunk and declines
otherwise, and :func:`apply_delta` checks the rebuilt object's id.

A changed chunk of the same length (the usual re-save) travels as the substitution delta below,
a few bytes that neighbouring chunks share; any other change travels as a zstd frame of the new
NBT with the base's NBT as a raw-content dictionary (:data:`KIND_ZSTD`), which finds moved and
inserted data at C speed (a Python copy finder took 70% of a push's time).

One zstd frame per chunk costs more in frame overhead than the changes themselves, so
:func:`encode_batch` puts every item of a push or pull in *one* zstd frame. There, chunks that
changed the same way (neighbours re-saved together, every chunk of an upgrade) have nearly
identical deltas and cost a few bytes each. That is why the delta format below is plain bytes,
not entropy-coded: the batch compressor matches them across items.

Delta format (:attr:`DeltaItem.data` of a :data:`KIND_DELTA` item; varints are unsigned LEB128,
signed values zigzag-encoded)::

    zigzag(len(new) - len(base))
    op*   where op = varint literal_length, literal bytes, zigzag(skip), varint copy_length

Each op appends its literal, then copies ``copy_length`` bytes of the base from ``cursor +
literal_length + skip``, and moves the base cursor (initially 0) past the copied bytes. A
substitution in place therefore has skip 0, an insertion ``-literal_length``.

Batch format: one zstd frame (content size and checksum written) of msgpack values: a header
``[1, count, digest]``, then ``count`` items, each ``[new_id, base_id, compression, kind,
data]`` or, in a batch for a want list (``digest``: 16 bytes of blake3 over that list, else
nil), ``[compression, kind, data]``. Ids cost 64 incompressible bytes per item, more than most
deltas, so a receiver that knows what it asked for can supply them (see :func:`encode_batch`).

Error hierarchy::

    PeerhostError
     +-- DeltaError (also ValueError)    a malformed batch or item
          +-- DeltaMismatch              an item does not rebuild its object from the given base
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

import blake3
import msgpack
import zstandard

from ..chunk import MAX_NBT_BYTES, ChunkDecodeError, compress, decompress
from ..errors import PeerhostError
from ..ids import ID_SIZE, ObjectId, hash_bytes
from ..objects import encode_blob
from ..region import COMPRESSIONS, ZLIB

__all__ = [
    "BASED_KINDS",
    "BATCH_VERSION",
    "DEFAULT_LEVEL",
    "KIND_DELTA",
    "KIND_RAW",
    "KIND_STORED",
    "KIND_ZSTD",
    "ZSTD_ITEM_LEVEL",
    "DeltaError",
    "DeltaItem",
    "DeltaMismatch",
    "Want",
    "apply_delta",
    "decode_batch",
    "diff_bytes",
    "encode_batch",
    "make_delta",
    "make_item",
    "patch_bytes",
    "zstd_delta",
    "zstd_output_size",
    "zstd_patch",
]

KIND_DELTA = 1
"""``data`` is a delta of the new NBT against the base's NBT; the payload is recompressed."""
KIND_RAW = 2
"""``data`` is the new NBT itself (no usable base); the payload is recompressed."""
KIND_STORED = 3
"""``data`` is the payload as stored: recompressing its NBT does not give it back."""
KIND_ZSTD = 4
"""``data`` is a zstd frame (its size declared) of the new NBT, compressed with the base's NBT as
a raw-content dictionary; the payload is recompressed."""
_KINDS = frozenset({KIND_DELTA, KIND_RAW, KIND_STORED, KIND_ZSTD})
BASED_KINDS = frozenset({KIND_DELTA, KIND_ZSTD})
"""The kinds rebuilt against a base."""
_BASED = BASED_KINDS

ZSTD_ITEM_LEVEL = 6
"""zstd level of a :data:`KIND_ZSTD` item: 0.27 ms a chunk on the real histories, 3% larger
than level 9 and 9% than 19, which cost 2.6 and 15 times as much."""

DEFAULT_LEVEL = 19
"""zstd level of a batch. Levels 19 to 22 differ by under 1% on real histories."""

BATCH_VERSION = 1
_DIGEST_SIZE = 16
_MAX_WINDOW = 1 << 27  # zstd's own default cap on a decoder's window

# Substitution runs (equal-length NBT) separated by at most this many unchanged bytes are
# merged: one op header costs more than two literal bytes (measured best of 0..32).
_RUN_GAP = 2
# Above this size a substitution delta is also tried as a zstd item (a reordered compound has
# the same length but is better described by copies); below it, a zstd frame never wins.
_TRY_ZSTD_ABOVE = 64
# A substitution delta is given up (for a zstd item) past this many comparisons, about one per
# differing byte: a chunk with changes all over (light recomputed) took 7 ms in Python, and
# its substitution delta would be hundreds of bytes, where zstd is smaller or close. On the 13
# real pairs the batches grow 0.04% over no limit (64: 180,331 bytes, 256: 180,262, none:
# 180,262) for 0.83 s of building instead of 6.0 s.
_MAX_SUBSTITUTION_STEPS = 64
# diff_bytes (the general encoder of this format, which make_delta no longer uses for a
# change of length) tries copies above the same size.
_TRY_COPY_ABOVE = _TRY_ZSTD_ABOVE
# Copy deltas: the base is indexed by the 16 bytes at every position, and a copy must be at
# least 48 bytes long: an op costs a few bytes that rarely recur, while a literal usually recurs
# in neighbouring items and compresses away in the batch. Both measured on the real histories
# (smallest batch over keys 6..32 and minimums 8..128).
_KEY = 16
_MIN_COPY = 48
_NEAR = 2  # index candidates tried on each side of the expected position
_MAX_INDEXED = 1 << 20  # base positions indexed at most (about 100 MB of index)
_MAX_VARINT_BYTES = 10


class DeltaError(PeerhostError, ValueError):
    """A batch or delta that is malformed, or an item that cannot be rebuilt.

    Attributes:
        reason: what is wrong.
        index: the item's position in its batch, when known.
        new_id: the id of the object the item should rebuild, when known.
    """

    def __init__(
        self, reason: str, *, index: int | None = None, new_id: ObjectId | None = None
    ) -> None:
        self.reason = reason
        self.index = index
        self.new_id = new_id
        where = []
        if index is not None:
            where.append(f"item {index}")
        if new_id is not None:
            where.append(f"object {new_id.hex()}")
        prefix = f"{' '.join(where)}: " if where else ""
        super().__init__(f"{prefix}{reason}")


class DeltaMismatch(DeltaError):
    """An item does not rebuild its object: the result hashes to another id, or the base cannot
    be decompressed, or the delta does not fit the base.

    The receiver should ask for the full object instead. Usually the base differs from the one
    the sender used (a wrong base and a corrupt delta cannot be told apart), or the payload was
    compressed by software whose output cannot be reproduced.

    Attributes:
        new_id: the expected id.
        got: the id of what was rebuilt, or None when nothing could be rebuilt.
    """

    def __init__(self, new_id: ObjectId, got: ObjectId | None, reason: str = "") -> None:
        self.got = got
        if not reason:
            reason = f"rebuilt object hashes to {got.hex() if got else None}"
        super().__init__(reason, new_id=new_id)


@dataclass(frozen=True, slots=True)
class DeltaItem:
    """One chunk payload in a batch: its blob id and how to rebuild the blob.

    Attributes:
        new_id: id of the blob object ``encode_blob(payload)`` the item rebuilds.
        base_id: id of the blob the delta applies to (:data:`BASED_KINDS`), else None.
        compression: the payload's compression type, used to recompress rebuilt NBT.
        kind: :data:`KIND_DELTA`, :data:`KIND_ZSTD`, :data:`KIND_RAW` or :data:`KIND_STORED`.
        data: the delta, the NBT or the payload, according to ``kind``.
    """

    new_id: ObjectId
    base_id: ObjectId | None
    compression: int
    kind: int
    data: bytes


# --- making items -----------------------------------------------------------------------------


def make_delta(
    base_payload: bytes,
    new_payload: bytes,
    compression: int,
    *,
    base_compression: int | None = None,
    limit: int = MAX_NBT_BYTES,
    trust_zlib: bool = False,
) -> tuple[int, bytes] | None:
    """Return ``(kind, data)`` of an item that rebuilds ``new_payload`` from ``base_payload``
    (:data:`KIND_DELTA` or :data:`KIND_ZSTD`, whichever is smaller), or None.

    None means "send the full payload": either payload cannot be decompressed (within
    ``limit``), ``compress(compression, nbt)`` does not give ``new_payload`` back byte for byte
    (other software, another zlib level), or the delta is not smaller than the new NBT.

    Args:
        base_payload: the previous version of the chunk, as stored; the receiver has it.
        new_payload: the new version, as stored.
        compression: ``new_payload``'s compression type.
        base_compression: ``base_payload``'s type, if it differs from ``compression``.
        limit: the most decompressed bytes to accept from either payload.
        trust_zlib: take a zlib payload to be what recompressing gives (skip the check, 60% of
            the work here); the receiver's id check catches one that is not, and it then
            travels whole (see :func:`make_item`).
    """
    base_type = compression if base_compression is None else base_compression
    try:
        new_raw = decompress(compression, new_payload, limit=limit)
        base_raw = decompress(base_type, base_payload, limit=limit)
    except ChunkDecodeError:
        return None
    if not _reproduces(compression, new_raw, new_payload, trust_zlib):
        return None
    best: tuple[int, bytes] | None = None
    if len(base_raw) == len(new_raw):
        ops = _substitution_ops(base_raw, new_raw, max_steps=_MAX_SUBSTITUTION_STEPS)
        if ops is not None:
            best = KIND_DELTA, _encode_ops(base_raw, new_raw, ops)
    if best is None or len(best[1]) > _TRY_ZSTD_ABOVE:
        framed = zstd_delta(base_raw, new_raw)
        if best is None or len(framed) < len(best[1]):
            best = KIND_ZSTD, framed
    return best if len(best[1]) < len(new_raw) else None


def zstd_delta(base: bytes, new: bytes, *, level: int = ZSTD_ITEM_LEVEL) -> bytes:
    """A zstd frame of ``new`` with ``base`` as a raw-content dictionary (its size declared,
    no checksum: the rebuilt object's id is checked instead)."""
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    compressor = zstandard.ZstdCompressor(level=level, dict_data=dictionary,
                                          write_checksum=False, write_dict_id=False)
    return compressor.compress(new)


def zstd_patch(base: bytes, frame: bytes, *, limit: int = MAX_NBT_BYTES) -> bytes:
    """Undo :func:`zstd_delta`; the frame must declare its size, at most ``limit``.

    Raises:
        DeltaError: not a frame, no or too large a declared size, or a corrupt frame.
    """
    size = zstd_output_size(frame)
    if size is None:
        raise DeltaError("a zstd item is not a frame that declares its size")
    if size > limit:
        raise DeltaError(f"declares {size} bytes of output (limit {limit})")
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    try:
        out = zstandard.ZstdDecompressor(dict_data=dictionary, max_window_size=_MAX_WINDOW
                                         ).decompress(frame, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise DeltaError(f"corrupt zstd item: {exc}") from exc
    if len(out) != size:
        raise DeltaError(f"rebuilt {len(out)} bytes, {size} declared")
    return out


def zstd_output_size(frame: bytes) -> int | None:
    """The size a :data:`KIND_ZSTD` frame declares, or None when it declares none (or is not
    a frame). The coordinator charges it against a request's rebuild budget first."""
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError:
        return None
    return size if size >= 0 else None


def make_item(
    new_payload: bytes,
    compression: int,
    *,
    base_id: ObjectId | None = None,
    base_payload: bytes | None = None,
    base_compression: int | None = None,
    limit: int = MAX_NBT_BYTES,
    trust_zlib: bool = False,
) -> DeltaItem:
    """Build the smallest item that rebuilds ``new_payload``: a delta when a base is given and
    :func:`make_delta` accepts it, else the NBT when recompressing reproduces the payload,
    else the payload itself.

    With ``trust_zlib``, a zlib payload is not recompressed to check that it reproduces: every
    chunk the game writes does (zlib level 6), and a sender that has seen a world's first
    chunks reproduce can skip the check for the rest. An item whose payload does not
    reproduce then fails the receiver's id check and is sent whole; nothing wrong is stored.

    Args:
        new_payload: the chunk payload to send, as stored.
        compression: its compression type.
        base_id: the blob id of the previous version, which the receiver has.
        base_payload: that previous version's payload (needed with ``base_id``).
        base_compression: the base's compression type, if it differs.
        limit: the most decompressed bytes to accept.
        trust_zlib: skip the recompression check of a zlib payload (see above).
    """
    new_id = hash_bytes(encode_blob(new_payload))
    if base_id is not None and base_payload is not None:
        made = make_delta(
            base_payload, new_payload, compression, base_compression=base_compression, limit=limit,
            trust_zlib=trust_zlib,
        )
        if made is not None:
            return DeltaItem(new_id, base_id, compression, *made)
    try:
        raw = decompress(compression, new_payload, limit=limit)
    except ChunkDecodeError:
        raw = None
    if raw is not None and _reproduces(compression, raw, new_payload, trust_zlib):
        return DeltaItem(new_id, None, compression, KIND_RAW, raw)
    return DeltaItem(new_id, None, compression, KIND_STORED, new_payload)


def _reproduces(compression: int, raw: bytes, payload: bytes, trust_zlib: bool) -> bool:
    if trust_zlib and compression == ZLIB:
        return True
    try:
        return compress(compression, raw) == payload
    except ChunkDecodeError:  # custom or unknown compression: nothing can write it
        return False


# --- applying items ---------------------------------------------------------------------------


def apply_delta(
    base_payload: bytes | None,
    item: DeltaItem,
    *,
    base_compression: int | None = None,
    limit: int = MAX_NBT_BYTES,
    check: bool = True,
) -> bytes:
    """Rebuild the blob object of ``item`` and check that it hashes to ``item.new_id``.

    Args:
        base_payload: the payload of ``item.base_id`` (only :data:`BASED_KINDS` use it).
        item: the item, from :func:`make_item` or :func:`decode_batch`.
        base_compression: the base's compression type, if it differs from the item's.
        limit: the most bytes of NBT to decompress or rebuild; a hostile delta cannot make
            this allocate more.
        check: False when the receiver does not know the id (a tree upload derives it:
            :mod:`peerhost_store.sync.edits`); the caller then hashes the blob and must check
            what it builds of it.

    Returns:
        ``encode_blob(payload)``: the bytes to store under ``item.new_id``.

    Raises:
        DeltaMismatch: the rebuilt blob hashes to another id, the base cannot be decompressed,
            or the delta does not fit the base (copies outside it, output over ``limit``);
            ask for the full payload.
        DeltaError: the item itself is unusable: unknown kind, no base for a delta, NBT over
            ``limit``, a compression type nothing can write.
    """
    if item.kind == KIND_STORED:
        payload = item.data
    elif item.kind == KIND_RAW:
        if len(item.data) > limit:
            raise DeltaError(f"NBT of {len(item.data)} bytes exceeds {limit}", new_id=item.new_id)
        payload = _recompress(item, item.data)
    elif item.kind in _BASED:
        if base_payload is None:
            raise DeltaError("a delta item needs its base payload", new_id=item.new_id)
        base_type = item.compression if base_compression is None else base_compression
        try:
            base_raw = decompress(base_type, base_payload, limit=limit)
        except ChunkDecodeError as exc:
            raise DeltaMismatch(item.new_id, None, f"base cannot be decompressed: {exc}") from exc
        try:
            if item.kind == KIND_DELTA:
                raw = patch_bytes(base_raw, item.data, limit=limit)
            else:
                raw = zstd_patch(base_raw, item.data, limit=limit)
        except DeltaError as exc:
            raise DeltaMismatch(item.new_id, None, exc.reason) from exc
        payload = _recompress(item, raw)
    else:
        raise DeltaError(f"unknown item kind {item.kind}", new_id=item.new_id)
    blob = encode_blob(payload)
    if not check:
        return blob
    got = hash_bytes(blob)
    if got != item.new_id:
        raise DeltaMismatch(item.new_id, got)
    return blob


def _recompress(item: DeltaItem, raw: bytes) -> bytes:
    try:
        return compress(item.compression, raw)
    except ChunkDecodeError as exc:
        raise DeltaError(
            f"cannot recompress with compression type {item.compression}", new_id=item.new_id
        ) from exc


# --- the byte delta ---------------------------------------------------------------------------

# An op: (literal, base position of the copy, copy length).
_Op = tuple[bytes, int, int]


def diff_bytes(base: bytes, new: bytes) -> bytes:
    """Return a delta (see the module docstring) that :func:`patch_bytes` turns into ``new``.

    Equal lengths are first described as substitution runs (the usual re-save); longer
    substitution deltas, and different lengths, are also tried as copies from anywhere in
    ``base``, and the shorter is kept.
    """
    ops: list[_Op] | None = None
    if len(base) == len(new):
        ops = _substitution_ops(base, new)
    encoded = _encode_ops(base, new, ops) if ops is not None else None
    if encoded is None or len(encoded) > _TRY_COPY_ABOVE:
        copied = _encode_ops(base, new, _copy_ops(base, new))
        if encoded is None or len(copied) < len(encoded):
            encoded = copied
    return encoded


def patch_bytes(base: bytes, delta: bytes, *, limit: int = MAX_NBT_BYTES) -> bytes:
    """Apply a delta from :func:`diff_bytes` to ``base``.

    Every length and offset is checked against ``base``, ``delta`` and ``limit`` before it is
    used, so the work is bounded by ``len(delta) + limit``.

    Raises:
        DeltaError: a malformed delta, a copy outside ``base``, or a result larger than
            ``limit`` or of another length than declared.
    """
    size_change, pos = _read_signed(delta, 0)
    size = len(base) + size_change
    if not 0 <= size <= limit:
        raise DeltaError(f"declares {size} bytes of output (limit {limit})")
    source = memoryview(base)
    out = bytearray()
    cursor = 0
    end = len(delta)
    while pos < end:
        literal, pos = _read_unsigned(delta, pos)
        if literal > end - pos or literal > size - len(out):
            raise DeltaError(f"literal of {literal} bytes overruns the delta or the output")
        out += delta[pos : pos + literal]
        pos += literal
        skip, pos = _read_signed(delta, pos)
        length, pos = _read_unsigned(delta, pos)
        start = cursor + literal + skip
        if start < 0 or start > len(base) or length > len(base) - start:
            raise DeltaError(f"copy of {length} bytes at {start} is outside the base")
        if length > size - len(out):
            raise DeltaError(f"copy of {length} bytes overruns the declared {size}")
        out += source[start : start + length]
        cursor = start + length
    if len(out) != size:
        raise DeltaError(f"rebuilt {len(out)} bytes, {size} declared")
    return bytes(out)


def _encode_ops(base: bytes, new: bytes, ops: list[_Op]) -> bytes:
    out = bytearray()
    _write_signed(len(new) - len(base), out)
    cursor = 0
    for literal, start, length in ops:
        _write_unsigned(len(literal), out)
        out += literal
        _write_signed(start - cursor - len(literal), out)
        _write_unsigned(length, out)
        cursor = start + length
    return bytes(out)


def _substitution_ops(base: bytes, new: bytes, *, max_steps: int | None = None
                      ) -> list[_Op] | None:
    """Ops replacing the differing runs of two equal-length strings in place; None when that
    takes more than ``max_steps`` comparisons (about one per differing byte)."""
    ops: list[_Op] = []
    size = len(new)
    literal = b""
    copy_from = 0  # where the equal bytes after the previous run start
    at = _common_length(base, 0, new, 0)
    steps = 0
    while at < size:
        run_end = at + 1
        while run_end < size:
            steps += 1
            if max_steps is not None and steps > max_steps:
                return None
            same = _common_length(base, run_end, new, run_end)
            if same > _RUN_GAP or run_end + same == size:
                break
            run_end += same + 1
        ops.append((literal, copy_from, at - copy_from))
        literal, copy_from = new[at:run_end], run_end
        at = run_end + _common_length(base, run_end, new, run_end)
    ops.append((literal, copy_from, size - copy_from))
    return ops


def _copy_ops(base: bytes, new: bytes) -> list[_Op]:
    """Greedy copy/insert ops: at each position of ``new``, take the longest match among the
    base bytes where the previous copy would continue and the indexed positions near there."""
    ops: list[_Op] = []
    index: dict[bytes, list[int]] | None = None  # built on the first miss: most deltas need none
    size = len(new)
    literal_start = cursor = at = 0
    while at <= size - _KEY:
        key = new[at : at + _KEY]
        # Where the base continues if the pending literal replaced base bytes, or was inserted.
        expected = cursor + (at - literal_start)
        near = [c for c in (expected, cursor) if base[c : c + _KEY] == key]
        start, length = _longest_match(base, new, at, near)
        if length < _MIN_COPY:
            if index is None:
                index = _index(base)
            jump, jump_length = _longest_match(base, new, at, _near(index, key, expected))
            if jump_length > length:
                start, length = jump, jump_length
        if not length:
            at += 1
            continue
        first, forward = at, length
        while at > literal_start and start > 0 and base[start - 1] == new[at - 1]:
            at, start, length = at - 1, start - 1, length + 1  # the literal's tail matches too
        if length < _MIN_COPY:
            at = first + forward  # its positions would find the same short match again
            continue
        ops.append((new[literal_start:at], start, length))
        at += length
        literal_start, cursor = at, start + length
    ops.append((new[literal_start:], cursor, 0))
    return ops


def _longest_match(base: bytes, new: bytes, at: int, candidates: Sequence[int]) -> tuple[int, int]:
    best, best_length = -1, 0
    for start in candidates:
        length = _common_length(base, start, new, at)
        if length > best_length:
            best, best_length = start, length
    return best, best_length


def _near(index: dict[bytes, list[int]], key: bytes, expected: int) -> list[int]:
    """The indexed positions of ``key`` nearest ``expected``."""
    positions = index.get(key)
    if not positions:
        return []
    # Runs of zeros and repeated tags are indexed in many places; the copy nearest the
    # expected position tends to continue furthest and keeps skips small and repetitive.
    middle = bisect_left(positions, expected)
    return positions[max(0, middle - _NEAR) : middle + _NEAR]


def _index(base: bytes) -> dict[bytes, list[int]]:
    index: dict[bytes, list[int]] = {}
    # Every position of a real chunk (well under a million bytes); a sparser index for a huge
    # one keeps memory bounded at the cost of missing some short matches.
    step = max(1, -(-len(base) // _MAX_INDEXED))
    for pos in range(0, len(base) - _KEY + 1, step):
        index.setdefault(base[pos : pos + _KEY], []).append(pos)
    return index


def _common_length(a: bytes, i: int, b: bytes, j: int) -> int:
    """Length of the common prefix of ``a[i:]`` and ``b[j:]``."""
    limit = min(len(a) - i, len(b) - j)
    # Most calls fall in changed regions where matches are short: compare bytes first, then
    # gallop with slice compares (memcmp) and bisect the block holding the first mismatch.
    low = 0
    while low < limit and low < 8:
        if a[i + low] != b[j + low]:
            return low
        low += 1
    step = 16
    while low + step <= limit and a[i + low : i + low + step] == b[j + low : j + low + step]:
        low += step
        step *= 2
    high = min(low + step, limit)  # the first mismatch lies in [low, high)
    while low < high:
        mid = (low + high + 1) // 2
        if a[i + low : i + mid] == b[j + low : j + mid]:
            low = mid
        else:
            high = mid - 1
    return low


# --- varints ----------------------------------------------------------------------------------


def _write_unsigned(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _write_signed(value: int, out: bytearray) -> None:
    _write_unsigned(value * 2 if value >= 0 else -value * 2 - 1, out)


def _read_unsigned(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for offset in range(_MAX_VARINT_BYTES):
        if pos + offset >= len(data):
            raise DeltaError(f"truncated varint at byte {pos}")
        byte = data[pos + offset]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + offset + 1
        shift += 7
    raise DeltaError(f"varint longer than {_MAX_VARINT_BYTES} bytes at byte {pos}")


def _read_signed(data: bytes, pos: int) -> tuple[int, int]:
    value, pos = _read_unsigned(data, pos)
    return (value >> 1) ^ -(value & 1), pos


# --- batches ----------------------------------------------------------------------------------

Want = Sequence[tuple[ObjectId, ObjectId | None]]
"""A receiver's ``(new_id, base_id)`` pairs, in batch order; ``base_id`` None for no base."""


def encode_batch(
    items: Sequence[DeltaItem], *, want: Want | None = None, level: int = DEFAULT_LEVEL
) -> bytes:
    """Encode items as one zstd frame.

    Put items that changed alike next to each other (e.g. in region and slot order): the
    frame compresses across items.

    Args:
        items: the items, in the order the receiver will get them.
        want: the receiver's list of ``(new_id, base_id)`` pairs, which it passes to
            :func:`decode_batch` as well. With it the ids are left out of the batch (only a
            16-byte digest of the list is sent): ``items[i]`` must rebuild ``want[i][0]`` and
            a delta item must use ``want[i][1]`` as its base. Without it, each item carries
            its 64 bytes of ids.
        level: zstd level.

    Raises:
        DeltaError: ``items`` does not match ``want``.
    """
    digest = None
    if want is not None:
        _check_against_want(items, want)
        digest = _want_digest(want)
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack([BATCH_VERSION, len(items), digest])]
    for item in items:
        fields: list[object] = [item.compression, item.kind, item.data]
        if want is None:
            fields[:0] = [item.new_id, item.base_id]
        parts.append(packer.pack(fields))
    stream = b"".join(parts)
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    return compressor.compress(stream)


def _check_against_want(items: Sequence[DeltaItem], want: Want) -> None:
    if len(items) != len(want):
        raise DeltaError(f"{len(items)} items for a want list of {len(want)}")
    for index, (item, (new_id, base_id)) in enumerate(zip(items, want, strict=True)):
        if item.new_id != new_id:
            raise DeltaError("item is not the wanted object", index=index, new_id=item.new_id)
        if item.kind in _BASED and item.base_id != base_id:
            raise DeltaError("delta against another base", index=index, new_id=item.new_id)


def _want_digest(want: Want) -> bytes:
    hasher = blake3.blake3()
    for new_id, base_id in want:
        hasher.update(new_id)
        hasher.update(base_id if base_id is not None else bytes(ID_SIZE))
    return hasher.digest(_DIGEST_SIZE)


def decode_batch(
    data: bytes, *, max_items: int, max_bytes: int, want: Want | None = None
) -> list[DeltaItem]:
    """Decode a batch from :func:`encode_batch`, which may come from a hostile peer.

    The frame must declare its decompressed size, which must be at most ``max_bytes``; nothing
    larger is ever allocated. Every field is type-checked. Items are not applied: pass each to
    :func:`apply_delta`, which checks its id.

    Args:
        data: the batch bytes.
        max_items: the most items to accept.
        max_bytes: the most decompressed bytes to accept.
        want: the ``(new_id, base_id)`` list the batch was encoded for, if it was; then the
            items take their ids from it. For a batch that carries ids it is checked instead.

    Raises:
        DeltaError: anything malformed, oversized, or not matching ``want``.
    """
    stream = _decompress_batch(data, max_bytes)
    unpacker = msgpack.Unpacker(
        raw=False,
        use_list=True,
        strict_map_key=True,
        max_buffer_size=max(len(stream), 1),
        max_str_len=0,
        max_map_len=0,
        max_ext_len=0,
        max_array_len=5,
    )
    unpacker.feed(stream)
    count, digest = _read_header(unpacker, max_items)
    if digest is not None:
        if want is None:
            raise DeltaError("the batch leaves out ids: pass the want list it was encoded for")
        if len(want) != count or _want_digest(want) != digest:
            raise DeltaError("the batch was encoded for another want list")
    elif want is not None and len(want) != count:
        raise DeltaError(f"{count} items for a want list of {len(want)}")
    items = [_read_item(unpacker, index, digest is not None, want) for index in range(count)]
    if unpacker.tell() != len(stream):
        raise DeltaError(f"{len(stream) - unpacker.tell()} bytes after the last item")
    return items


def _decompress_batch(data: bytes, max_bytes: int) -> bytes:
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise DeltaError(f"not a zstd frame: {exc}") from exc
    if size < 0:
        raise DeltaError("the zstd frame does not declare its size")
    if size > max_bytes:
        raise DeltaError(f"decompresses to {size} bytes, more than {max_bytes}")
    try:
        # With the size declared, decompress() allocates exactly that, and fails if the frame
        # produces more or less; trailing data (a second frame) is refused too.
        stream = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW).decompress(
            data, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise DeltaError(f"corrupt zstd frame: {exc}") from exc
    if len(stream) != size:
        raise DeltaError(f"decompressed {len(stream)} bytes, {size} declared")
    return stream


def _unpack(unpacker: msgpack.Unpacker, what: str) -> object:
    try:
        return unpacker.unpack()
    except msgpack.OutOfData as exc:
        raise DeltaError(f"truncated batch: {what} is missing") from exc
    # msgpack reports malformed and over-limit input as ValueError subclasses (FormatError,
    # StackError, ExtraData) or plain ValueError.
    except (ValueError, msgpack.UnpackException) as exc:
        raise DeltaError(f"malformed {what}: {exc}") from exc


def _read_header(unpacker: msgpack.Unpacker, max_items: int) -> tuple[int, bytes | None]:
    header = _unpack(unpacker, "header")
    if not isinstance(header, list) or len(header) != 3:
        raise DeltaError("the header is not [version, count, digest]")
    version, count, digest = header
    if type(version) is not int or version != BATCH_VERSION:
        raise DeltaError(f"unknown batch version {version!r}")
    if type(count) is not int or count < 0:
        raise DeltaError(f"bad item count {count!r}")
    if count > max_items:
        raise DeltaError(f"{count} items, more than {max_items}")
    if digest is not None and not (type(digest) is bytes and len(digest) == _DIGEST_SIZE):
        raise DeltaError("bad want-list digest")
    return count, digest


def _read_item(
    unpacker: msgpack.Unpacker, index: int, implicit: bool, want: Want | None
) -> DeltaItem:
    fields = _unpack(unpacker, f"item {index}")
    width = 3 if implicit else 5
    if not isinstance(fields, list) or len(fields) != width:
        raise DeltaError(f"not an array of {width} fields", index=index)
    if implicit:
        assert want is not None  # checked with the digest
        new_id, base_id = want[index]
    else:
        new_id, base_id = _check_id(fields[0], index), fields[1]
        if base_id is not None:
            base_id = _check_id(base_id, index)
    compression, kind, data = fields[-3:]
    if type(compression) is not int or compression not in COMPRESSIONS:
        raise DeltaError(f"bad compression {compression!r}", index=index, new_id=new_id)
    if type(kind) is not int or kind not in _KINDS:
        raise DeltaError(f"bad kind {kind!r}", index=index, new_id=new_id)
    if type(data) is not bytes:
        raise DeltaError("data is not bytes", index=index, new_id=new_id)
    if kind not in _BASED:
        base_id = None
    elif base_id is None:
        raise DeltaError("a delta item without a base", index=index, new_id=new_id)
    if (
        not implicit
        and want is not None
        and (new_id != want[index][0] or (kind in _BASED and base_id != want[index][1]))
    ):
        raise DeltaError("not the wanted object or base", index=index, new_id=new_id)
    return DeltaItem(new_id, base_id, compression, kind, data)


def _check_id(value: object, index: int) -> ObjectId:
    if type(value) is not bytes or len(value) != ID_SIZE:
        raise DeltaError(f"an id is not {ID_SIZE} bytes", index=index)
    return ObjectId(value)
