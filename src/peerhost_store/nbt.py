"""Java-edition NBT bytes <-> Python values, bounded for untrusted input. Pure.

NBT from other peers is hostile, so :func:`load` walks it with an explicit stack (hostile
nesting cannot overflow any stack), refuses what Minecraft refuses (nesting deeper than 512,
unknown tag ids, lists of End tags, strings ``DataInput.readUTF`` cannot read) and what cannot
be real (negative lengths, counts the remaining bytes cannot hold), caps the input size, and
visits each byte once. Every failure is an :class:`NbtError` with the offset.

Values are plain Python objects chosen so that ``==`` is strict NBT equality at C speed:

* a compound is a ``dict`` (``str`` keys; order kept for writing, ignored by ``==``);
* a list is a :class:`ListTag` (a ``list`` that remembers its item type for writing);
* a string is a ``str``, decoded as Java's ``readUTF`` decodes it, so different spellings of the
  same text (``C0 80`` or ``00`` for NUL) load equal;
* every other tag (numbers and arrays) is a :data:`Leaf`: ``(tag id, big-endian payload bytes)``.
  Equal leaves have the same type and the same bits: ``int 1`` is not ``long 1``, a float NaN
  equals the same NaN, ``0.0`` is not ``-0.0``.

Two lists of different item types are never equal unless both are empty (the game does not
keep an empty list's type): items of different types are different values.

Error hierarchy::

    PeerhostError
     +-- NbtError (also ValueError)   NBT refused, or a value of the wrong type
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple, TypeAlias, TypeVar, Union

from .errors import PeerhostError

__all__ = [
    "BYTE",
    "BYTE_ARRAY",
    "COMPOUND",
    "DOUBLE",
    "END",
    "FLOAT",
    "INT",
    "INT_ARRAY",
    "LIST",
    "LONG",
    "LONG_ARRAY",
    "MAX_NBT_BYTES",
    "MAX_NBT_DEPTH",
    "SHORT",
    "STRING",
    "Compound",
    "Leaf",
    "ListTag",
    "NamedTag",
    "NbtError",
    "Value",
    "as_compound",
    "as_float",
    "as_int",
    "as_list",
    "as_str",
    "byte_tag",
    "decode_java_utf",
    "double_tag",
    "dump",
    "encode_java_utf",
    "float_tag",
    "int_array",
    "int_tag",
    "load",
    "long_tag",
    "short_tag",
]

END, BYTE, SHORT, INT, LONG, FLOAT, DOUBLE, BYTE_ARRAY = 0, 1, 2, 3, 4, 5, 6, 7
STRING, LIST, COMPOUND, INT_ARRAY, LONG_ARRAY = 8, 9, 10, 11, 12

MAX_NBT_BYTES = 64 * 1024 * 1024
"""Default cap on NBT input: real chunks inflate to well under 10 MiB."""

MAX_NBT_DEPTH = 512
"""Minecraft refuses NBT nested deeper than this (``NbtAccounter``); the root is depth 1."""

Leaf: TypeAlias = tuple[int, bytes]
"""A number or an array: its tag id and its big-endian payload (arrays: the items, no count)."""

Value: TypeAlias = Union[Leaf, str, "ListTag", dict[str, "Value"]]
Compound: TypeAlias = dict[str, Value]

_TAG_NAMES = (
    "End",
    "Byte",
    "Short",
    "Int",
    "Long",
    "Float",
    "Double",
    "Byte_Array",
    "String",
    "List",
    "Compound",
    "Int_Array",
    "Long_Array",
)
_MAX_TAG = LONG_ARRAY
_FIXED_SIZE = {BYTE: 1, SHORT: 2, INT: 4, LONG: 8, FLOAT: 4, DOUBLE: 8}
_ARRAY_ITEM = {BYTE_ARRAY: 1, INT_ARRAY: 4, LONG_ARRAY: 8}
_LEAF_SIZE = {**_FIXED_SIZE, **_ARRAY_ITEM}
# The fewest bytes one list item of each type can take, to refuse absurd counts at once.
_MIN_ITEM = {
    **_FIXED_SIZE,
    BYTE_ARRAY: 4,
    STRING: 2,
    LIST: 5,
    COMPOUND: 1,
    INT_ARRAY: 4,
    LONG_ARRAY: 4,
}
_I32 = struct.Struct(">i")
_U16 = struct.Struct(">H")
_OPEN_COMPOUND = -1  # the "items left" of a compound frame: it ends at its End tag, not by count


class NbtError(PeerhostError, ValueError):
    """NBT that is refused, or a value that is not of the type asked for.

    Attributes:
        reason: what is wrong, without the location.
        offset: byte offset in the NBT, when reading bytes.
    """

    def __init__(self, reason: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        where = "NBT" if offset is None else f"NBT at byte {offset}"
        super().__init__(f"{where}: {reason}")


class ListTag(list[Value]):
    """An NBT list: a ``list`` of values that all have the tag type ``item_type``.

    ``==`` is ``list``'s: same items in the same order (item types are part of the items), and
    empty lists are equal whatever their item type.
    """

    __slots__ = ("item_type",)

    def __init__(self, item_type: int, items: Iterable[Value] = ()) -> None:
        super().__init__(items)
        self.item_type = item_type

    def __repr__(self) -> str:
        return f"ListTag({_list_type(self)}, {list.__repr__(self)})"


class NamedTag(NamedTuple):
    """What an NBT file holds: a named root compound."""

    name: str
    root: Compound


# --- reading ----------------------------------------------------------------------------------


def load(raw: bytes, *, max_depth: int = MAX_NBT_DEPTH, max_bytes: int = MAX_NBT_BYTES) -> NamedTag:
    """Parse big-endian (Java) NBT: a named root compound. Bytes after it are ignored, as the
    game ignores them.

    Args:
        raw: the decompressed NBT.
        max_depth: the deepest nesting of compounds and lists accepted; the root is depth 1.
        max_bytes: the largest input accepted.

    Raises:
        NbtError: with ``offset`` and ``reason``: input too large, root not a compound,
            truncation, unknown tag id, negative or impossible length, nesting too deep, a
            string ``readUTF`` refuses.
    """
    if len(raw) > max_bytes:
        raise NbtError(f"{len(raw)} bytes exceed the limit of {max_bytes}", 0)
    if not raw or raw[0] != COMPOUND:
        raise NbtError("the root tag is not a compound", 0)
    name, pos = _read_string(raw, 1)
    root: Compound = {}
    _read_containers(raw, pos, root, max_depth)
    return NamedTag(name, root)


def _read_containers(raw: bytes, pos: int, root: Compound, max_depth: int) -> int:
    """Fill ``root`` from its payload at ``pos``; return the offset after its End tag."""
    size = len(raw)
    # The open compounds and lists, innermost last; for lists of containers, the items left.
    containers: list[Compound | ListTag] = [root]
    lefts = [0]
    names: dict[bytes, str] = {}  # keys repeat ("Name" in every palette entry): decode once
    while containers:
        parent = containers[-1]
        if isinstance(parent, ListTag):  # a list of compounds or of lists
            if lefts[-1] == 0:
                containers.pop()
                lefts.pop()
                continue
            lefts[-1] -= 1
            if len(containers) >= max_depth:
                raise NbtError(f"nested deeper than {max_depth}", pos)
            child, pos = _open(raw, pos, parent.item_type, containers, lefts)
            parent.append(child)
            continue
        # A compound: read its entries up to its End tag or to the next container that opens.
        while True:
            if pos >= size:
                raise NbtError("truncated: compound without its End tag", pos)
            at = pos
            tag = raw[pos]
            if tag == END:
                containers.pop()
                lefts.pop()
                pos += 1
                break
            if tag > _MAX_TAG:
                raise NbtError(f"unknown tag id {tag}", pos)
            start = pos + 3
            end = start + (raw[pos + 1] << 8 | raw[pos + 2]) if start <= size else size + 1
            key = names.get(raw[start:end]) if end <= size else None
            if key is None:
                key, pos = _read_string(raw, pos + 1)
                names[raw[start:pos]] = key
            else:
                pos = end
            fixed = _FIXED_SIZE.get(tag)
            if fixed is not None and pos + fixed <= size:
                parent[key] = (tag, raw[pos : pos + fixed])
                pos += fixed
            elif tag == STRING:
                parent[key], pos = _read_string(raw, pos)
            elif tag in (COMPOUND, LIST):
                if len(containers) >= max_depth:
                    raise NbtError(f"nested deeper than {max_depth}", at)
                depth = len(containers)
                parent[key], pos = _open(raw, pos, tag, containers, lefts)
                if len(containers) > depth:
                    break
            else:
                parent[key], pos = _read_leaf(raw, pos, tag)
    return pos


def _open(
    raw: bytes, pos: int, tag: int, containers: list[Compound | ListTag], lefts: list[int]
) -> tuple[Compound | ListTag, int]:
    """Start the compound or list whose payload is at ``pos``: push a frame for it if its
    items are to be read by the caller, else read them here."""
    if tag == COMPOUND:
        compound: Compound = {}
        containers.append(compound)
        lefts.append(0)
        return compound, pos
    item, count, pos = _read_list_header(raw, pos)
    items = ListTag(item)
    if item in (COMPOUND, LIST):
        if count:
            containers.append(items)
            lefts.append(count)
    else:
        pos = _read_items(raw, pos, item, count, items)
    return items, pos


def _need(raw: bytes, pos: int, count: int, what: str) -> None:
    if len(raw) - pos < count:
        raise NbtError(f"truncated: {what} needs {count} bytes, {max(0, len(raw) - pos)} left", pos)


def _read_string(raw: bytes, pos: int) -> tuple[str, int]:
    start = pos + 2
    if start > len(raw):
        _need(raw, pos, 2, "string length")
    end = start + (raw[pos] << 8 | raw[pos + 1])
    if end > len(raw):
        _need(raw, start, end - start, "string")
    data = raw[start:end]
    if data.isascii():
        return data.decode("ascii"), end
    try:
        return decode_java_utf(data), end
    except UnicodeDecodeError as exc:
        raise NbtError(f"string that readUTF refuses ({exc.reason})", start + exc.start) from exc


def _read_count(raw: bytes, pos: int, what: str) -> int:
    _need(raw, pos, 4, f"{what} length")
    (count,) = _I32.unpack_from(raw, pos)
    if count < 0:
        raise NbtError(f"negative {what} length {count}", pos)
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
        raise NbtError(f"unknown list item tag id {item}", pos)
    if item == END:
        raise NbtError(f"list of {count} End tags", pos)  # Minecraft: "Missing type on ListTag"
    room = len(raw) - pos - 5
    if count > room // _MIN_ITEM[item]:
        raise NbtError(f"list declares {count} items; {room} bytes cannot hold them", pos)
    return item, count, pos + 5


def _read_items(raw: bytes, pos: int, item: int, count: int, into: ListTag) -> int:
    """Read ``count`` list items of a type that contains no containers into ``into``."""
    fixed = _FIXED_SIZE.get(item)
    if fixed is not None:
        end = pos + fixed * count
        _need(raw, pos, fixed * count, "list")
        into.extend([(item, raw[p : p + fixed]) for p in range(pos, end, fixed)])
        return end
    value: Value
    for _ in range(count):
        if item == STRING:
            value, pos = _read_string(raw, pos)
        else:
            value, pos = _read_leaf(raw, pos, item)
        into.append(value)
    return pos


def _read_leaf(raw: bytes, pos: int, tag: int) -> tuple[Leaf, int]:
    """Read the payload of a number or an array."""
    fixed = _FIXED_SIZE.get(tag)
    if fixed is not None:
        end = pos + fixed
        if end > len(raw):
            _need(raw, pos, fixed, "number")
        return (tag, raw[pos:end]), end
    count = _read_count(raw, pos, "array")
    start = pos + 4
    end = start + count * _ARRAY_ITEM[tag]
    if end > len(raw):
        _need(raw, start, end - start, "array")
    return (tag, raw[start:end]), end


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


# --- writing ----------------------------------------------------------------------------------


def dump(root: Compound, name: str = "") -> bytes:
    """Encode a named root compound as big-endian NBT, keys in their insertion order.

    Raises:
        NbtError: a value that is not NBT (a leaf of a bad size, a list item of another type
            than the list's, a string longer than 65535 encoded bytes).
    """
    out = bytearray(b"\x0a")
    out += _string_bytes(name)
    # An explicit stack of open containers, so deep values cannot overflow Python's stack.
    stack: list[Iterator[tuple[str | None, Value]]] = [iter(root.items())]
    ends = [True]  # whether the container needs an End tag (compounds do, lists do not)
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            if ends.pop():
                out.append(END)
            continue
        key, value = entry
        tag = _tag_of(value)
        if key is not None:
            out.append(tag)
            out += _string_bytes(key)
        if isinstance(value, dict):
            stack.append(iter(value.items()))
            ends.append(True)
        elif isinstance(value, ListTag):
            for item in value:
                if _tag_of(item) != value.item_type:
                    raise NbtError(f"a list of {_list_type(value)} tags holds {_describe(item)}")
            if not 0 <= value.item_type <= 0xFF:
                raise NbtError(f"list item type {value.item_type} does not fit in a byte")
            out.append(value.item_type)
            out += _I32.pack(len(value))
            stack.append((None, item) for item in value)
            ends.append(False)
        elif isinstance(value, str):
            out += _string_bytes(value)
        else:
            out += _leaf_bytes(value)
    return bytes(out)


def _tag_of(value: Value) -> int:
    if isinstance(value, tuple):
        return value[0]
    if isinstance(value, str):
        return STRING
    if isinstance(value, ListTag):
        return LIST
    if isinstance(value, dict):
        return COMPOUND
    raise NbtError(f"not an NBT value: {value!r}")


def _leaf_bytes(leaf: Leaf) -> bytes:
    tag, payload = leaf
    size = _LEAF_SIZE.get(tag)
    if size is None:
        raise NbtError(f"not a number or array tag id: {tag}")
    if tag in _FIXED_SIZE:
        if len(payload) != size:
            raise NbtError(f"a {_TAG_NAMES[tag]} payload of {len(payload)} bytes")
        return payload
    if len(payload) % size:
        raise NbtError(f"a {_TAG_NAMES[tag]} payload of {len(payload)} bytes")
    return _I32.pack(len(payload) // size) + payload


def _string_bytes(text: str) -> bytes:
    data = encode_java_utf(text)
    if len(data) > 0xFFFF:
        raise NbtError(f"a string of {len(data)} bytes (at most 65535 fit)")
    return _U16.pack(len(data)) + data


def encode_java_utf(text: str) -> bytes:
    """Encode a string as Java's ``DataOutput.writeUTF`` does ("modified UTF-8"): NUL as
    ``C0 80`` and characters beyond U+FFFF as two encoded surrogates."""
    if text.isascii() and "\x00" not in text:
        return text.encode("ascii")
    data = text.encode("utf-16-be", "surrogatepass")
    out = bytearray()
    for (unit,) in struct.iter_unpack(">H", data):
        if 0 < unit < 0x80:
            out.append(unit)
        elif unit < 0x800:
            out += bytes((0xC0 | unit >> 6, 0x80 | unit & 0x3F))
        else:
            out += bytes((0xE0 | unit >> 12, 0x80 | unit >> 6 & 0x3F, 0x80 | unit & 0x3F))
    return bytes(out)


# --- making and reading values ----------------------------------------------------------------


def byte_tag(value: int) -> Leaf:
    """A Byte tag (-128..127)."""
    return BYTE, struct.pack(">b", value)


def short_tag(value: int) -> Leaf:
    """A Short tag (16 bits, signed)."""
    return SHORT, struct.pack(">h", value)


def int_tag(value: int) -> Leaf:
    """An Int tag (32 bits, signed)."""
    return INT, _I32.pack(value)


def long_tag(value: int) -> Leaf:
    """A Long tag (64 bits, signed)."""
    return LONG, struct.pack(">q", value)


def float_tag(value: float) -> Leaf:
    """A Float tag: ``value`` rounded to 32 bits."""
    return FLOAT, struct.pack(">f", value)


def double_tag(value: float) -> Leaf:
    """A Double tag."""
    return DOUBLE, struct.pack(">d", value)


def int_array(values: Iterable[int]) -> Leaf:
    """An Int_Array tag."""
    items = list(values)
    return INT_ARRAY, struct.pack(f">{len(items)}i", *items)


_INT_FORMATS = {BYTE: ">b", SHORT: ">h", INT: ">i", LONG: ">q"}


def as_int(value: Value) -> int:
    """The number of a Byte, Short, Int or Long tag.

    Raises:
        NbtError: ``value`` is another kind of tag.
    """
    if isinstance(value, tuple) and value[0] in _INT_FORMATS:
        return int(struct.unpack(_INT_FORMATS[value[0]], value[1])[0])
    raise NbtError(f"expected an integer tag, found {_describe(value)}")


def as_float(value: Value) -> float:
    """The number of a Float or Double tag.

    Raises:
        NbtError: ``value`` is another kind of tag.
    """
    if isinstance(value, tuple) and value[0] in (FLOAT, DOUBLE):
        return float(struct.unpack(">f" if value[0] == FLOAT else ">d", value[1])[0])
    raise NbtError(f"expected a Float or Double tag, found {_describe(value)}")


def as_str(value: Value) -> str:
    """The text of a String tag.

    Raises:
        NbtError: ``value`` is another kind of tag.
    """
    return _expect(value, str, "a String")


def as_compound(value: Value) -> Compound:
    """``value`` as a compound.

    Raises:
        NbtError: ``value`` is another kind of tag.
    """
    return _expect(value, dict, "a Compound")


def as_list(value: Value) -> ListTag:
    """``value`` as a list.

    Raises:
        NbtError: ``value`` is another kind of tag.
    """
    return _expect(value, ListTag, "a List")


_T = TypeVar("_T")


def _expect(value: Value, kind: type[_T], name: str) -> _T:
    if isinstance(value, kind):
        return value
    raise NbtError(f"expected {name} tag, found {_describe(value)}")


def _list_type(items: ListTag) -> str:
    tag = items.item_type
    return _TAG_NAMES[tag] if 0 <= tag < len(_TAG_NAMES) else f"type {tag}"


def _describe(value: Value) -> str:
    try:
        return f"a {_TAG_NAMES[_tag_of(value)]} tag"
    except (NbtError, IndexError):
        return repr(value)
