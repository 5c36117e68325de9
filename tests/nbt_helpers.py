"""NBT values and hand-made NBT bytes shared by the chunk, NBT and fuzz tests."""

from __future__ import annotations

import struct

from peerhost_store import nbt

I32 = struct.Struct(">i").pack


def every_tag() -> nbt.Compound:
    """A compound holding every tag type, nested lists and empty containers."""
    return {
        "byte": nbt.byte_tag(-1),
        "short": nbt.short_tag(300),
        "int": nbt.int_tag(70000),
        "long": nbt.long_tag(-(2**40)),
        "float": nbt.float_tag(0.5),
        "double": nbt.double_tag(-2.25),
        "bytes": (nbt.BYTE_ARRAY, bytes([1, 2, 3])),
        "string": "minecraft:stone",
        "list": nbt.ListTag(nbt.INT, [nbt.int_tag(1), nbt.int_tag(2)]),
        "strings": nbt.ListTag(nbt.STRING, ["a", ""]),
        "lists": nbt.ListTag(
            nbt.LIST, [nbt.ListTag(nbt.BYTE, [nbt.byte_tag(1)]), nbt.ListTag(nbt.BYTE)]
        ),
        "compounds": nbt.ListTag(nbt.COMPOUND, [{"x": nbt.byte_tag(1)}]),
        "empty": nbt.ListTag(nbt.BYTE),
        "compound": {"nested": {}},
        "ints": nbt.int_array([1, -1]),
        "longs": (nbt.LONG_ARRAY, struct.pack(">q", 2**62)),
    }


SAMPLE = nbt.dump(every_tag(), "root")


def named(tag: int, payload: bytes) -> bytes:
    """A root compound holding one tag named "t"."""
    return b"\x0a\x00\x00" + bytes([tag]) + b"\x00\x01t" + payload + b"\x00"


def deep_compounds(depth: int) -> bytes:
    """A root compound and ``depth - 1`` nested unnamed compounds: nesting depth ``depth``."""
    return b"\x0a\x00\x00" * depth + b"\x00" * depth


def deep_lists(depth: int) -> bytes:
    """A root compound holding lists of one list each: nesting depth ``depth``."""
    lists = b"\x09\x00\x00" + b"\x09\x00\x00\x00\x01" * (depth - 2) + b"\x00\x00\x00\x00\x00"
    return b"\x0a\x00\x00" + lists + b"\x00"


def deep_mixed(depth: int) -> bytes:
    """Compound -> list of one compound -> compound ... (two levels per step)."""
    steps = (depth - 1) // 2
    opening = b"\x09\x00\x01l\x0a\x00\x00\x00\x01" * steps
    return b"\x0a\x00\x00" + opening + b"\x00" * (steps + 1)
