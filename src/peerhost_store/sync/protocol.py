"""The sync wire format and the pure halves of push, pull and the coordinator's checks.

No network and no files here: functions take bytes or a store and return values. The HTTP
side lives in :mod:`peerhost_store.sync.client` and in ``peerhost_server``.

Encodings (``application/x-msgpack``):

* a list of ids: a msgpack array of 32-byte ``bin`` values;
* a list of objects: a msgpack array of ``bin`` values, each the encoded bytes of one object
  (its id is the blake3 of those bytes: ids are always derived, never sent alongside);
* object statuses: one ``bin`` value holding one byte per asked id (:class:`ObjectStatus`);
* any of these bodies as one zstd frame (:data:`ZMSGPACK`, :func:`compress_body`): object
  uploads and ``objects/get`` answers, where the coordinator says it reads them
  (:data:`ENCODINGS`) and the client asks for them;
* chunk deltas (:class:`DeltaRequest`, :func:`encode_delta_upload`, :func:`encode_delta_answer`):
  a request names two trees and a selection of positions in the list
  :func:`peerhost_store.sync.pairing.pair_chunks` derives from them; the batch itself is a
  :mod:`peerhost_store.sync.delta` batch.

Completeness (see docs/protocol.md): an object is *complete* in a store when it and everything
it reaches (tree children, snapshot parents) are stored. A blob is complete once stored. The
coordinator records completeness explicitly, because peers upload objects in any order; a local
repository gets it for free, because snapshot and pull store children before their parents.
"""

from __future__ import annotations

import enum
import itertools
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

from ..errors import PeerhostError
from ..ids import ID_SIZE, ObjectId

__all__ = [
    "BATCH_BYTES",
    "BATCH_LEVEL",
    "DELTA_ANSWER_BYTES",
    "DELTA_BATCH_BYTES",
    "DELTA_BATCH_ITEMS",
    "DELTA_STREAM_BYTES",
    "ENCODINGS",
    "IDS_PER_REQUEST",
    "MSGPACK",
    "PIECE_BYTES",
    "READ_BATCH",
    "WIRE_LEVEL",
    "ZMSGPACK",
    "DeltaRequest",
    "FrameTooLarge",
    "ObjectStatus",
    "ProtocolError",
    "Range",
    "batch_by_size",
    "chunked",
    "compress_body",
    "decode_delta_answer",
    "decode_delta_get",
    "decode_delta_upload",
    "decode_ids",
    "decode_objects",
    "decode_statuses",
    "decompress_body",
    "delta_output_size",
    "encode_delta_answer",
    "encode_delta_get",
    "encode_delta_upload",
    "encode_ids",
    "encode_objects",
    "encode_statuses",
    "expand_select",
    "frame_objects",
    "parse_hex_id",
    "parse_optional_hex_id",
    "select_ranges",
    "split_objects",
    "split_upload",
]

MSGPACK = "application/x-msgpack"
#: A msgpack body as one zstd frame that declares its decompressed size. A media type, not a
#: ``Content-Encoding``: HTTP clients decode the latter themselves, unbounded.
ZMSGPACK = "application/x-msgpack+zstd"
#: What ``GET .../head`` lists under ``encodings`` when the coordinator reads :data:`ZMSGPACK`
#: uploads; a client sends them only to a coordinator that said so.
ENCODINGS = ("zstd",)
#: zstd level of compressed bodies over :data:`PIECE_BYTES`; smaller ones get level 6. On the
#: uploads of aviadbag-1.19-history (180 KiB, tree nodes and small files) level 1 left 0.844
#: of the bytes, 3 0.787, 6 0.776, 19 0.762; 6 takes twice as long as 3 (~100 MB/s here),
#: which only large bodies (bulk pushes and clones) would notice.
WIRE_LEVEL = 3
_SMALL_LEVEL = 6
#: A body is sent compressed only when its first :data:`PIECE_BYTES` shrink to this fraction:
#: batches of chunk payloads (zlib already) would cost CPU for nothing.
_WORTH = 0.9
#: Objects go up in batches of at least this many bytes (or the remainder): per-request
#: overhead stays small next to the payload, and a batch stays far below the body limit.
#: Each batch is one fsynced transaction on the coordinator, and an fsync that extends the
#: store file costs about the same (~15 ms here) for 4 MiB as for 16 MiB, so a full push
#: with 4 MiB batches spent most of its time waiting for the disk.
BATCH_BYTES = 16 << 20
#: How many ids one ``objects/missing``, ``objects/status`` or ``objects/get`` request asks
#: about (about 560 KiB of ids).
IDS_PER_REQUEST = 16384
#: How many objects a walk reads per store transaction.
READ_BATCH = 1024
#: A streamed body of objects (:func:`frame_objects`) goes out in pieces of about this many
#: bytes: no buffer of the whole body is built, and the HTTP client's socket writes stay
#: short (httpcore re-slices what a partial ``send`` left, a copy of the rest each time).
PIECE_BYTES = 1 << 20

#: A push sends its chunk deltas in batches that rebuild about this many bytes of objects:
#: big enough that a batch's one zstd stream finds what neighbouring chunks share, small
#: enough that an interrupted push loses little and the coordinator's work per request stays
#: bounded.
DELTA_BATCH_BYTES = 4 << 20
#: A batch is cut early rather than let its stream (NBT of new chunks, mostly) exceed this,
#: half the coordinator's default ``max_delta_bytes``.
DELTA_STREAM_BYTES = 32 << 20
#: Items a client puts in one batch at most (the coordinator's default cap is twice this).
DELTA_BATCH_ITEMS = 16384
#: The largest decompressed stream a client accepts in a ``delta/get`` answer.
DELTA_ANSWER_BYTES = 256 << 20
#: zstd level of a delta batch's frame. Measured on the 13 pairs of the three ``*-history``
#: worlds (each push's batch, best of 3): levels 17 to 19 (what streams up to 2 MiB had)
#: took 631 ms in all for 349.3 KiB, level 10 takes 93 ms for 365.6 KiB (+4.7%; +1% to
#: +1.5% on aviadbag and voidchains, +7% on 134arg, whose batches are mostly raw NBT of new
#: chunks): 41 ms of a push on average, where the bytes stay within issue 14's 1.5x bound.
#: Most of a batch is already compressed (KIND_ZSTD items) or few bytes (KIND_DELTA), which
#: a high level spends its time on for almost nothing.
BATCH_LEVEL = 10

T = TypeVar("T")
P = TypeVar("P", bytes, memoryview)


class ProtocolError(PeerhostError, ValueError):
    """A message that does not follow the sync protocol (malformed ids, lists, trees).

    Attributes:
        index: the position of the offending element in its list, when there is one.
    """

    def __init__(self, message: str, index: int | None = None) -> None:
        self.index = index
        super().__init__(message)


class FrameTooLarge(ProtocolError):
    """A zstd frame that declares more than ``limit`` decompressed bytes (``size``)."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{what}: the zstd frame declares {size} bytes, more than the "
                         f"limit of {limit}")


class ObjectStatus(enum.IntEnum):
    """What a store knows about an id."""

    MISSING = 0  #: not stored
    PRESENT = 1  #: stored, but what it reaches may not be
    COMPLETE = 2  #: stored with everything it reaches


# -- encodings ------------------------------------------------------------------------------


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack_list(data: bytes, what: str) -> list[Any]:
    try:
        value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise ProtocolError(f"{what}: not msgpack ({len(data)} bytes): {exc}") from exc
    if not isinstance(value, list):
        raise ProtocolError(f"{what}: expected a msgpack array, got {type(value).__name__}")
    return value


def encode_ids(ids: Iterable[ObjectId]) -> bytes:
    """Encode a list of ids."""
    return _pack(list(ids))


def decode_ids(data: bytes) -> list[ObjectId]:
    """Decode a list of ids, refusing anything that is not a 32-byte ``bin``.

    Raises:
        ProtocolError: with ``index`` set to the first bad element.
    """
    values = _unpack_list(data, "list of ids")
    for i, value in enumerate(values):
        if type(value) is not bytes or len(value) != ID_SIZE:
            raise ProtocolError(f"element {i} is not a {ID_SIZE}-byte id", index=i)
    return [ObjectId(v) for v in values]


def encode_objects(objects: Iterable[bytes]) -> bytes:
    """Encode a list of encoded objects.

    The same bytes as ``msgpack.packb(list(objects), use_bin_type=True)`` (an array of
    ``bin``), framed by hand so the objects are copied once, into the result: packb copies
    each into a growing buffer and then copies the buffer, twice the work on 32 MiB answers.
    """
    items = list(objects)
    parts = [_array_header(len(items))]
    for data in items:
        parts.append(_bin_header(len(data)))
        parts.append(data)
    return b"".join(parts)


def frame_objects(objects: Sequence[bytes], ids: Sequence[ObjectId] | None = None
                  ) -> tuple[int, Iterator[bytes]]:
    """The bytes of :func:`encode_objects` as their length and an iterator of pieces of about
    :data:`PIECE_BYTES` (each object is copied once, into its piece).

    With ``ids`` (one per object), the array starts with one more ``bin``: the ids, 32 bytes
    each, concatenated (an upload with ``?ids=1``, :func:`split_upload`).
    """
    head = [_array_header(len(objects) + (ids is not None))]
    if ids is not None:
        if len(ids) != len(objects):
            raise ValueError(f"{len(ids)} ids for {len(objects)} objects")
        joined = b"".join(ids)
        head += [_bin_header(len(joined)), joined]
    headers = [_bin_header(len(data)) for data in objects]
    length = sum(map(len, head)) + sum(map(len, headers)) + sum(map(len, objects))

    def pieces() -> Iterator[bytes]:
        parts: list[bytes] = head
        size = sum(map(len, head))
        for header, data in zip(headers, objects, strict=True):
            parts += (header, data)
            size += len(header) + len(data)
            if size >= PIECE_BYTES:
                yield b"".join(parts)
                parts, size = [], 0
        if parts:
            yield b"".join(parts)

    return length, pieces()


def compress_body(length: int, pieces: Iterable[P],
                  level: int | None = None) -> tuple[bool, int, Iterator[P | bytes]]:
    """A body of ``length`` bytes, given as ``pieces``, as one zstd frame that declares its
    size: ``(True, frame length, frame pieces)``; or ``(False, length, the same pieces)``
    when it does not shrink, or for a larger body when its first :data:`PIECE_BYTES` do not
    shrink to 90% (the rest is not compressed, so mostly compressed payloads cost one sample). Only the frame is held in memory. ``level``
    is 6 for bodies up to :data:`PIECE_BYTES` and :data:`WIRE_LEVEL` above, unless given."""
    import zstandard  # not for phs status

    if level is None:
        level = _SMALL_LEVEL if length <= PIECE_BYTES else WIRE_LEVEL
    # The checksum (4 bytes) tells damage in transit (400 bad_encoding) from a damaged object
    # read unchecked from the sender's store (400 id_mismatch).
    compressor = zstandard.ZstdCompressor(level=level, write_content_size=True,
                                          write_checksum=True)
    stream = compressor.compressobj(size=length)
    source = iter(pieces)
    taken: list[P] = []
    out: list[bytes] = []
    fed = 0
    for piece in source:
        taken.append(piece)
        fed += len(piece)
        out.append(stream.compress(piece))
        if fed >= PIECE_BYTES:
            break
    whole = fed >= length
    out.append(stream.flush() if whole else stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
    # A body of one piece is compressed already: keep the frame if it is any smaller.
    if sum(map(len, out)) >= (fed if whole else fed * _WORTH):
        return False, length, itertools.chain(taken, source)
    if not whole:
        out.extend(stream.compress(piece) for piece in source)
        out.append(stream.flush())
    return True, sum(map(len, out)), iter(out)


def decompress_body(data: bytes, limit: int, what: str) -> bytes:
    """The body a :func:`compress_body` frame holds, which may come from a hostile peer: the
    frame must declare its size, at most ``limit`` (nothing larger is allocated), and hold
    exactly that, with nothing after it.

    Raises:
        FrameTooLarge: it declares more than ``limit``.
        ProtocolError: not a zstd frame, no declared size, corrupt, or trailing bytes.
    """
    import zstandard  # not for phs status

    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise ProtocolError(f"{what}: not a zstd frame ({len(data)} bytes): {exc}") from None
    if size < 0:
        raise ProtocolError(f"{what}: the zstd frame does not declare its size")
    if size > limit:
        raise FrameTooLarge(what, size, limit)
    try:
        # With the size declared, decompress() allocates exactly that and fails if the frame
        # produces more or less; a second frame after it is refused too.
        body = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW).decompress(
            data, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise ProtocolError(f"{what}: corrupt zstd frame: {exc}") from None
    if len(body) != size:
        raise ProtocolError(f"{what}: the zstd frame holds {len(body)} bytes, {size} declared")
    return body


_MAX_WINDOW = 1 << 27  # zstd's own default cap on a decoder's window


def split_upload(data: bytes, *, with_ids: bool) -> tuple[list[ObjectId] | None, list[memoryview]]:
    """An upload's body (:func:`frame_objects`): the ids sent with the objects (None
    ``with_ids`` false) and views of the objects.

    Raises:
        ProtocolError: as :func:`split_objects`; or, ``with_ids``, a first element that is
            not 32 bytes per object that follows it.
    """
    parts = split_objects(data)
    if not with_ids:
        return None, parts
    if not parts or len(parts[0]) != ID_SIZE * (len(parts) - 1):
        raise ProtocolError(f"an upload with ids starts with {ID_SIZE} bytes per object",
                            index=0)
    ids = parts[0]
    return [ObjectId(bytes(ids[i:i + ID_SIZE])) for i in range(0, len(ids), ID_SIZE)], parts[1:]


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    return struct.pack(">BH", 0xDC, n) if n < 1 << 16 else struct.pack(">BI", 0xDD, n)


def _bin_header(n: int) -> bytes:
    if n < 1 << 8:
        return struct.pack(">BB", 0xC4, n)
    return struct.pack(">BH", 0xC5, n) if n < 1 << 16 else struct.pack(">BI", 0xC6, n)


def decode_objects(data: bytes) -> list[bytes]:
    """Decode a list of encoded objects (their contents are not checked here).

    Raises:
        ProtocolError: with ``index`` set to the first element that is not ``bin``.
    """
    values = _unpack_list(data, "list of objects")
    for i, value in enumerate(values):
        if type(value) is not bytes:
            raise ProtocolError(f"element {i} is not a bin value", index=i)
    return values


_BIN_HEADERS = {0xC4: 1, 0xC5: 2, 0xC6: 4}


def split_objects(data: bytes) -> list[memoryview]:
    """:func:`decode_objects` without copying: views of ``data`` (kept alive by them), one per
    object. An upload's objects are hashed and stored straight from the request body.

    Raises:
        ProtocolError: not an array of ``bin`` filling ``data`` exactly; ``index`` is set to
            the first bad element.
    """
    view = memoryview(data)
    size = len(view)
    if not size:
        raise ProtocolError("list of objects: empty body")
    head = view[0]
    if head & 0xF0 == 0x90:
        count, pos = head & 0x0F, 1
    elif head in (0xDC, 0xDD) and size >= (width := 2 if head == 0xDC else 4) + 1:
        count, pos = int.from_bytes(view[1 : 1 + width], "big"), 1 + width
    else:
        raise ProtocolError("list of objects: expected a msgpack array")
    if count > size:  # each element takes at least two bytes: refuse absurd counts early
        raise ProtocolError(f"list of objects: {count} elements cannot fit in {size} bytes")
    out: list[memoryview] = []
    for i in range(count):
        bin_width = _BIN_HEADERS.get(view[pos]) if pos < size else None
        if bin_width is None or pos + 1 + bin_width > size:
            raise ProtocolError(f"element {i} is not a bin value", index=i)
        start = pos + 1 + bin_width
        end = start + int.from_bytes(view[pos + 1 : start], "big")
        if end > size:
            raise ProtocolError(f"element {i} is cut short", index=i)
        out.append(view[start:end])
        pos = end
    if pos != size:
        raise ProtocolError(f"list of objects: {size - pos} bytes after the array")
    return out


def encode_statuses(statuses: Iterable[ObjectStatus]) -> bytes:
    """Encode one status byte per id as a single ``bin``."""
    return _pack(bytes(int(s) for s in statuses))


def decode_statuses(data: bytes, count: int) -> list[ObjectStatus]:
    """Decode the answer to a status request about ``count`` ids."""
    try:
        value = msgpack.unpackb(data)
    except Exception as exc:
        raise ProtocolError(f"status answer: not msgpack: {exc}") from exc
    if type(value) is not bytes or len(value) != count:
        raise ProtocolError(f"status answer: expected {count} status bytes")
    try:
        return [ObjectStatus(b) for b in value]
    except ValueError as exc:
        raise ProtocolError(f"status answer: {exc}") from exc


def parse_hex_id(value: object, what: str) -> ObjectId:
    """Parse 64 lowercase or uppercase hex digits into an id.

    Raises:
        ProtocolError: the value is not a string of 64 hex digits.
    """
    if not isinstance(value, str) or len(value) != 2 * ID_SIZE:
        raise ProtocolError(f"{what} must be {2 * ID_SIZE} hex digits")
    try:
        return ObjectId(bytes.fromhex(value))
    except ValueError:
        raise ProtocolError(f"{what} must be {2 * ID_SIZE} hex digits") from None


def parse_optional_hex_id(value: object, what: str) -> ObjectId | None:
    """:func:`parse_hex_id`, with JSON null meaning "no id"."""
    return None if value is None else parse_hex_id(value, what)


# -- batching -------------------------------------------------------------------------------


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Yield consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def batch_by_size(
    items: Iterable[T], size_of: Callable[[T], int], target: int, limit: int | None = None
) -> Iterator[list[T]]:
    """Group ``items`` in order into batches of at least ``target`` bytes (the last may be less).

    With ``limit``, a batch is cut early rather than grow past ``limit`` bytes; a single item
    larger than ``limit`` still forms a batch of its own (the caller decides whether to send it).
    """
    batch: list[T] = []
    total = 0
    for item in items:
        size = size_of(item)
        if batch and limit is not None and total + size > limit:
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += size
        if total >= target:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


# -- delta transfer -------------------------------------------------------------------------

Range = tuple[int, int]
"""``(start, count)``: positions ``start`` to ``start + count - 1`` of a pairing list."""


@dataclass(frozen=True)
class DeltaRequest:
    """Which chunk blobs a delta batch carries, without naming them.

    Both ends compute ``pair_chunks(store, base, target)``
    (:func:`peerhost_store.sync.pairing.pair_chunks`) from the same two content-addressed
    trees, so they agree on the list; the batch carries the items for the selected
    positions, in order, and leaves their 64 bytes of ids out.

    Attributes:
        base: root of the tree the previous versions (delta bases) come from; the receiver
            holds all of it.
        target: root of the tree the chunks belong to.
        select: increasing, non-overlapping ranges of list positions.
    """

    base: ObjectId
    target: ObjectId
    select: tuple[Range, ...]

    @property
    def count(self) -> int:
        """How many positions ``select`` names."""
        return sum(count for _, count in self.select)


def select_ranges(positions: Iterable[int]) -> tuple[Range, ...]:
    """Compress increasing positions into ranges (one range in the usual, gapless case)."""
    out: list[Range] = []
    for pos in positions:
        if out and out[-1][0] + out[-1][1] == pos:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((pos, 1))
    return tuple(out)


def expand_select(select: Sequence[Range], size: int) -> list[int]:
    """The positions ``select`` names in a list of ``size`` entries.

    Raises:
        ProtocolError: a range is empty, out of order, overlapping or past the end.
    """
    out: list[int] = []
    end = 0
    for i, (start, count) in enumerate(select):
        if start < end or count < 1 or start + count > size:
            raise ProtocolError(f"range {i} ({start}, {count}) is out of order, empty or past "
                                f"the {size} entries of the pairing list", index=i)
        out.extend(range(start, start + count))
        end = start + count
    return out


def _bin_id(value: object, what: str) -> ObjectId:
    if type(value) is not bytes or len(value) != ID_SIZE:
        raise ProtocolError(f"{what} is not a {ID_SIZE}-byte id")
    return ObjectId(value)


def _header(request: DeltaRequest | None) -> dict[str, Any]:
    if request is None:
        return {}
    return {"base": request.base, "target": request.target,
            "select": [list(r) for r in request.select]}


def _parse_header(value: object) -> DeltaRequest | None:
    if not isinstance(value, dict) or not set(value) <= {"base", "target", "select"}:
        raise ProtocolError("the delta header is not a map of base, target and select")
    if not value:
        return None
    if set(value) != {"base", "target", "select"}:
        raise ProtocolError("a delta header names base, target and select together")
    select = value["select"]
    if not isinstance(select, list):
        raise ProtocolError("select is not an array")
    ranges: list[Range] = []
    for i, item in enumerate(select):
        if (not isinstance(item, list) or len(item) != 2
                or not all(type(v) is int and v >= 0 for v in item)):
            raise ProtocolError(f"select range {i} is not [start, count]", index=i)
        ranges.append((item[0], item[1]))
    return DeltaRequest(_bin_id(value["base"], "base"), _bin_id(value["target"], "target"),
                        tuple(ranges))


def encode_delta_upload(request: DeltaRequest | None, batch: bytes) -> bytes:
    """The body of ``POST .../objects/delta``: ``[header, batch]``.

    With ``request`` None the header is an empty map and the batch must carry its ids
    (``encode_batch`` without ``want``).
    """
    return _pack([_header(request), batch])


def decode_delta_upload(data: bytes) -> tuple[DeltaRequest | None, bytes]:
    """Parse the body of ``POST .../objects/delta``.

    Raises:
        ProtocolError: anything but ``[header map, bin]``.
    """
    value = _unpack_list(data, "delta upload")
    if len(value) != 2 or type(value[1]) is not bytes:
        raise ProtocolError("a delta upload is [header, batch]")
    return _parse_header(value[0]), value[1]


def encode_delta_get(request: DeltaRequest) -> bytes:
    """The body of ``POST .../objects/delta/get``: the header map alone."""
    return _pack(_header(request))


def decode_delta_get(data: bytes) -> DeltaRequest:
    """Parse the body of ``POST .../objects/delta/get``.

    Raises:
        ProtocolError: not a header map naming base, target and select.
    """
    try:
        value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise ProtocolError(f"delta request: not msgpack: {exc}") from exc
    request = _parse_header(value)
    if request is None:
        raise ProtocolError("a delta request names base, target and select")
    return request


def encode_delta_answer(count: int, batch: bytes) -> bytes:
    """The answer to ``delta/get``: ``[count, batch]``, the batch for the first ``count``
    selected positions (the coordinator caps what it builds per answer)."""
    return _pack([count, batch])


def decode_delta_answer(data: bytes, asked: int) -> tuple[int, bytes]:
    """Parse a ``delta/get`` answer to a request for ``asked`` positions.

    Raises:
        ProtocolError: malformed, or a count outside 1..``asked``.
    """
    value = _unpack_list(data, "delta answer")
    if len(value) != 2 or type(value[0]) is not int or type(value[1]) is not bytes:
        raise ProtocolError("a delta answer is [count, batch]")
    if not 1 <= value[0] <= asked:
        raise ProtocolError(f"a delta answer for {value[0]} of {asked} items")
    return value[0], value[1]


def delta_output_size(base_size: int, delta: bytes) -> int | None:
    """The NBT size a delta declares it rebuilds from a base of ``base_size`` bytes, read from
    the delta's first field (a zigzag LEB128 varint of the size change, see
    :mod:`peerhost_store.sync.delta`), or None when that field is malformed.

    The coordinator charges it against a request's rebuild budget before rebuilding.
    """
    value = shift = 0
    for pos in range(min(len(delta), 10)):
        value |= (delta[pos] & 0x7F) << shift
        if delta[pos] < 0x80:
            return base_size + ((value >> 1) ^ -(value & 1))
        shift += 7
    return None
