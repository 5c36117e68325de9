"""Objects and their encoding. Pure: values <-> bytes, no I/O.

Every object is a msgpack array whose first element is its type; its id is the blake3 hash of
those bytes (:func:`peerhost_store.ids.hash_bytes`), so objects are immutable and deduplicated.

======  ===========  ==========================================================================
 type    name         body
======  ===========  ==========================================================================
 1       blob         ``[1, bytes]``: a chunk payload or the contents of a whole file
 2       dir leaf     ``[2, [DirEntry...]]``: entries sorted by name
 3       index        ``[3, level, [[first_key, child_id]...]]``: an inner node of a paged map
 4       region leaf  ``[4, [ChunkEntry...]]``: chunk slots sorted by slot
 5       snapshot     ``[5, root, [parents], time, author, host, message, {summary}(, {game})]``
======  ===========  ==========================================================================

Directories and regions are *paged maps* (see :mod:`peerhost_store.tree`): a small map is one
leaf, a large one is split into leaves under index nodes, so one changed entry re-stores only a
few small nodes.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack

from .errors import DecodeError
from .ids import ID_SIZE, ObjectId, hash_bytes

__all__ = [
    "BLOB",
    "DIR_LEAF",
    "INDEX",
    "MAX_LEVEL",
    "REGION_LEAF",
    "SNAPSHOT",
    "ChunkEntry",
    "DirEntry",
    "DirLeaf",
    "EntryKind",
    "GameValue",
    "Index",
    "IndexEntry",
    "Node",
    "Object",
    "RegionLeaf",
    "Snapshot",
    "blob_length",
    "blob_payload",
    "check",
    "decode",
    "decode_blob",
    "encode_blob",
    "encode_dir_leaf",
    "encode_index",
    "encode_region_leaf",
    "encode_snapshot",
    "object_id",
]

BLOB = 1
DIR_LEAF = 2
INDEX = 3
REGION_LEAF = 4
SNAPSHOT = 5

MAX_LEVEL = 16  # paged maps of 8-way nodes never get near this deep


class EntryKind(enum.IntEnum):
    """What a directory entry names."""

    FILE = 0  #: a plain file; ``oid`` is its blob
    DIR = 1  #: a folder; ``oid`` is its directory map
    REGION = 2  #: an Anvil region file split per chunk; ``oid`` is its region map


class DirEntry(NamedTuple):
    """One name in a directory map.

    For a FILE, ``size`` is the file's length. For a REGION, ``size`` is its chunk count and
    ``raw`` is set when the file could not be parsed cleanly: then ``raw`` is the blob of the
    whole file (what restore writes back) and the region map holds the chunks that did parse.
    """

    name: str
    kind: EntryKind
    oid: ObjectId
    size: int = 0
    raw: ObjectId | None = None


class ChunkEntry(NamedTuple):
    """One chunk slot of a region map; ``oid`` is the blob of its compressed payload."""

    slot: int
    oid: ObjectId
    compression: int
    timestamp: int
    external: bool = False


class IndexEntry(NamedTuple):
    """One child of an index node, with the first key it holds."""

    key: str | int
    oid: ObjectId


@dataclass(frozen=True)
class Snapshot:
    """A snapshot: a root directory map and where it came from."""

    root: ObjectId
    parents: tuple[ObjectId, ...]
    time: int  #: seconds since the epoch
    author: str
    host: str
    message: str
    summary: dict[str, int] = field(default_factory=dict)
    #: The game that saved the world (:mod:`peerhost_store.worldinfo`): ``version``,
    #: ``data_version``, ``datapacks``, ``mods``, ``world_mods``. Encoded only when not
    #: empty, so a snapshot without it has the bytes (and the id) it always had.
    game: dict[str, GameValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Index:
    """An inner node of a paged map: children ``level - 1`` deep, in key order."""

    level: int
    entries: tuple[IndexEntry, ...]


@dataclass(frozen=True)
class DirLeaf:
    entries: tuple[DirEntry, ...]


@dataclass(frozen=True)
class RegionLeaf:
    entries: tuple[ChunkEntry, ...]


Node = Index | DirLeaf | RegionLeaf
Object = bytes | Node | Snapshot
GameValue = int | str | tuple[str, ...]


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def encode_blob(data: bytes | memoryview) -> bytes:
    """Encode file or payload bytes as a blob object (what ``msgpack.packb([1, data])`` gives)."""
    # Written by hand: snapshot encodes one blob per chunk, and this is twice as fast.
    n = len(data)
    if n < 0x100:
        head = b"\x92\x01\xc4" + n.to_bytes(1, "big")
    elif n < 0x10000:
        head = b"\x92\x01\xc5" + n.to_bytes(2, "big")
    else:
        head = b"\x92\x01\xc6" + n.to_bytes(4, "big")
    return head + data


def encode_dir_leaf(entries: list[DirEntry]) -> bytes:
    """Encode a directory leaf; ``entries`` must be sorted by name."""
    return _pack([DIR_LEAF, [_dir_row(e) for e in entries]])


def _dir_row(e: DirEntry) -> list[Any]:
    row: list[Any] = [e.name, int(e.kind), e.oid, e.size]
    if e.raw is not None:
        row.append(e.raw)
    return row


def encode_region_leaf(entries: list[ChunkEntry]) -> bytes:
    """Encode a region leaf; ``entries`` must be sorted by slot."""
    return _pack(
        [REGION_LEAF, [[e.slot, e.oid, e.compression, e.timestamp, e.external] for e in entries]]
    )


def encode_index(level: int, entries: list[IndexEntry]) -> bytes:
    """Encode an index node whose children are ``level - 1`` deep."""
    return _pack([INDEX, level, [[e.key, e.oid] for e in entries]])


def encode_snapshot(s: Snapshot) -> bytes:
    """Encode a snapshot object (``game`` keys sorted, as decoding requires)."""
    fields: list[Any] = [SNAPSHOT, s.root, list(s.parents), s.time, s.author, s.host, s.message,
                         s.summary]
    if s.game:
        fields.append({k: list(v) if isinstance(v, tuple) else v
                       for k, v in sorted(s.game.items())})
    return _pack(fields)


_BIN_WIDTH = [0] * 256
_BIN_WIDTH[0xC4], _BIN_WIDTH[0xC5], _BIN_WIDTH[0xC6] = 1, 2, 4


def _blob_start(data: bytes | memoryview) -> int | None:
    """Where the payload of blob object ``data`` starts, or None when ``data`` is not a
    well-formed blob."""
    if data[:2] == b"\x92\x01" and len(data) >= 4:
        width = _BIN_WIDTH[data[2]]
        if width and len(data) == 3 + width + int.from_bytes(data[3 : 3 + width], "big"):
            return 3 + width
    return None


def blob_length(head: bytes, size: int) -> int | None:
    """The payload length of a blob object of ``size`` bytes whose encoding starts with
    ``head`` (its first 7 bytes or all of it), or None when it is not a blob as
    :func:`encode_blob` frames one. Lets a store size a blob without reading it."""
    if head[:2] != b"\x92\x01" or len(head) < 4:
        return None
    width = _BIN_WIDTH[head[2]]
    if not width or len(head) < 3 + width:
        return None
    length = int.from_bytes(head[3 : 3 + width], "big")
    return length if size == 3 + width + length else None


def blob_payload(data: bytes) -> bytes | memoryview:
    """:func:`decode_blob`, but the payload of a well-formed blob is a view of ``data``, not
    a copy (restore joins a region's payloads into the file it writes: one copy, not two)."""
    start = _blob_start(data)
    return decode_blob(data) if start is None else memoryview(data)[start:]


def decode_blob(data: bytes) -> bytes:
    """Decode a blob object without a general msgpack pass (restore reads one per chunk).

    Raises:
        DecodeError: the bytes are not exactly one blob object.
    """
    start = _blob_start(data)
    if start is not None:
        return data[start:]
    if data[:2] == b"\x92\x01":
        raise DecodeError(f"malformed blob object ({len(data)} bytes)")
    obj = decode(data)
    if not isinstance(obj, bytes):
        raise DecodeError(f"expected a blob, found {type(obj).__name__}")
    return obj


def check(data: bytes | memoryview) -> None:
    """Refuse ``data`` exactly when :func:`decode` would, without building the object: a
    blob's payload is not copied (the coordinator checks every uploaded object).

    Raises:
        DecodeError: the bytes are not a well-formed object.
    """
    if _blob_start(data) is None:
        decode(bytes(data))  # a tree node: small


def object_id(data: bytes) -> ObjectId:
    """The id of encoded object bytes."""
    return hash_bytes(data)


# -- decoding: strict, since bytes may come from disk or from a peer ------------------------


def decode(data: bytes) -> Object:
    """Decode object bytes, checking every field's type and the order of entries.

    Raises:
        DecodeError: the bytes are not a well-formed object.
    """
    if data[:2] == b"\x92\x01":  # a blob: skip the general msgpack pass and its copy
        return decode_blob(data)
    try:
        value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise DecodeError(f"not a msgpack object ({len(data)} bytes): {exc}") from exc
    if not isinstance(value, list) or not value or type(value[0]) is not int:
        raise DecodeError("an object is a msgpack array starting with its type")
    kind = value[0]
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise DecodeError(f"unknown object type {kind}")
    try:
        return decoder(value)
    except DecodeError:
        raise
    except (TypeError, ValueError, IndexError) as exc:
        raise DecodeError(f"malformed object of type {kind}: {exc}") from exc


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise DecodeError(what)


def _oid(value: Any, what: str) -> ObjectId:
    _expect(type(value) is bytes and len(value) == ID_SIZE, f"{what} is not a {ID_SIZE}-byte id")
    return ObjectId(value)


def _int(value: Any, what: str, lo: int = -(2**63), hi: int = 2**63 - 1) -> int:
    _expect(type(value) is int and lo <= value <= hi, f"{what} is not an integer in [{lo}, {hi}]")
    return int(value)


def _rows(value: list[Any], n: int) -> list[Any]:
    _expect(len(value) == n, f"expected {n} fields, got {len(value)}")
    _expect(isinstance(value[-1], list), "entries are not a list")
    return value[-1]  # type: ignore[no-any-return]


def _decode_blob(value: list[Any]) -> bytes:
    _expect(len(value) == 2 and type(value[1]) is bytes, "a blob holds one bytes field")
    return value[1]  # type: ignore[no-any-return]


def _decode_dir_leaf(value: list[Any]) -> DirLeaf:
    entries = []
    for row in _rows(value, 2):
        _expect(isinstance(row, list) and len(row) in (4, 5), "a dir entry has 4 or 5 fields")
        _expect(type(row[0]) is str and row[0] != "", "a dir entry name is a non-empty string")
        kind = EntryKind(_int(row[1], "entry kind", 0, 2))
        raw = _oid(row[4], "raw blob") if len(row) == 5 else None
        _expect(raw is None or kind is EntryKind.REGION, "only a region entry has a raw blob")
        entries.append(DirEntry(row[0], kind, _oid(row[2], "entry id"), _int(row[3], "size", 0), raw))
    _expect_sorted([e.name for e in entries])
    return DirLeaf(tuple(entries))


def _decode_region_leaf(value: list[Any]) -> RegionLeaf:
    entries = []
    for row in _rows(value, 2):
        # Checked inline: restore decodes one leaf per 8 chunks.
        if not (
            type(row) is list
            and len(row) == 5
            and type(row[0]) is int
            and 0 <= row[0] <= 1023
            and type(row[1]) is bytes
            and len(row[1]) == ID_SIZE
            and type(row[2]) is int
            and 0 <= row[2] <= 127
            and type(row[3]) is int
            and 0 <= row[3] < 2**32
            and type(row[4]) is bool
        ):
            raise DecodeError(f"malformed chunk entry {row!r:.200}")
        entries.append(ChunkEntry(row[0], ObjectId(row[1]), row[2], row[3], row[4]))
    _expect_sorted([e.slot for e in entries])
    return RegionLeaf(tuple(entries))


def _decode_index(value: list[Any]) -> Index:
    _expect(len(value) == 3, "an index has 3 fields")
    level = _int(value[1], "index level", 1, MAX_LEVEL)
    entries = []
    for row in _rows(value, 3):
        _expect(isinstance(row, list) and len(row) == 2, "an index entry has 2 fields")
        _expect(type(row[0]) in (str, int), "an index key is a string or an integer")
        entries.append(IndexEntry(row[0], _oid(row[1], "child id")))
    _expect(len(entries) > 0, "an index has at least one child")
    _expect(len({type(e.key) for e in entries}) == 1, "index keys are of one type")
    _expect_sorted([e.key for e in entries])
    return Index(level, tuple(entries))


def _decode_snapshot(value: list[Any]) -> Snapshot:
    _expect(len(value) in (8, 9), "a snapshot has 8 fields, or 9 with its game")
    _, root, parents, time, author, host, message, summary = value[:8]
    game = _decode_game(value[8]) if len(value) == 9 else {}
    _expect(isinstance(parents, list), "parents is a list")
    _expect(all(type(x) is str for x in (author, host, message)), "author, host, message are text")
    _expect(isinstance(summary, dict), "summary is a map")
    _expect(
        all(type(k) is str and type(v) is int for k, v in summary.items()),
        "summary maps names to integers",
    )
    return Snapshot(
        _oid(root, "root"),
        tuple(_oid(p, "parent") for p in parents),
        _int(time, "time"),
        author,
        host,
        message,
        summary,
        game,
    )


#: Bounds of a snapshot's ``game``: it describes a world, it is not a place to store one.
MAX_GAME_KEYS, MAX_GAME_KEY, MAX_GAME_TEXT, MAX_GAME_LIST = 32, 64, 256, 4096


def _decode_game(game: Any) -> dict[str, GameValue]:
    _expect(isinstance(game, dict) and 0 < len(game) <= MAX_GAME_KEYS,
            f"game is a map of 1 to {MAX_GAME_KEYS} entries")
    keys = list(game)
    _expect(all(type(k) is str and 0 < len(k) <= MAX_GAME_KEY for k in keys),
            f"game keys are names of 1 to {MAX_GAME_KEY} characters")
    _expect_sorted(keys)
    out: dict[str, GameValue] = {}
    for key, item in game.items():
        if type(item) is int:
            out[key] = _int(item, f"game {key}")
        elif type(item) is str:
            _expect(len(item) <= MAX_GAME_TEXT, f"game {key} is at most {MAX_GAME_TEXT} characters")
            out[key] = item
        else:
            _expect(type(item) is list and len(item) <= MAX_GAME_LIST
                    and all(type(x) is str and len(x) <= MAX_GAME_TEXT for x in item),
                    f"game {key} is an integer, a text or a list of at most {MAX_GAME_LIST} texts")
            out[key] = tuple(item)
    return out


def _expect_sorted(keys: list[Any]) -> None:
    # Sorted, unique entries let diff merge two nodes in one pass (restic: ErrTreeNotOrdered).
    _expect(all(a < b for a, b in itertools.pairwise(keys)), "entries are not sorted and unique")


_DECODERS: dict[int, Callable[[list[Any]], Object]] = {
    BLOB: _decode_blob,
    DIR_LEAF: _decode_dir_leaf,
    INDEX: _decode_index,
    REGION_LEAF: _decode_region_leaf,
    SNAPSHOT: _decode_snapshot,
}
