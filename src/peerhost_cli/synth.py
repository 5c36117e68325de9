"""Deterministic synthetic Minecraft Java 1.21.1 worlds, and "play sessions" that mutate them.

:func:`synthesize_world` writes a world folder in the 1.21.1 format (DataVersion 3955): full
1024-chunk regions of overworld terrain around the origin, a few entity and POI chunks,
``level.dat``, a player, ``data/raids.dat`` and, optionally, one small region per other
dimension. :func:`play_session` then mutates it like a session of play: it edits blocks in
some chunks, re-saves others with nothing but new ``LastUpdate``/``InhabitedTime`` values, and
can explore new chunks.

Everything derives from the ``seed``: the same seed and parameters give byte-identical files
(no wall-clock time, no ``hash()``, gzip headers with a zero mtime). Terrain heights use only
integer hashing and IEEE arithmetic, never ``sin``, so they do not depend on the platform's
libm; the other random choices come from numpy's PCG64 generators.

Speed matters because benchmarks want worlds of a gigabyte: block arrays are built with numpy
for a row of 32 chunks at a time, chunk NBT is emitted as bytes by a small writer with cached
fragments (no tag objects per chunk), and regions are generated in worker processes. Most of
the remaining time is zlib itself.

Error hierarchy::

    PeerhostError
     +-- SynthError (also ValueError)   bad arguments, or a world that cannot be mutated
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import math
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

from peerhost_store import nbt, region
from peerhost_store.errors import PeerhostError

__all__ = [
    "DATA_VERSION",
    "VERSION_NAME",
    "ChunkRef",
    "SessionInfo",
    "SynthError",
    "WorldInfo",
    "pack_indices",
    "play_session",
    "synthesize_world",
    "unpack_indices",
]

DATA_VERSION = 3955
VERSION_NAME = "1.21.1"
_SESSION_LOCK = "☃".encode()  # what vanilla writes into session.lock

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

_MASK64 = (1 << 64) - 1
_SEA = 63
_ZLIB_LEVEL = 6


class SynthError(PeerhostError, ValueError):
    """Arguments that cannot make a world, or a world that :func:`play_session` cannot mutate."""


@dataclass(frozen=True, slots=True)
class WorldInfo:
    """What :func:`synthesize_world` wrote.

    Attributes:
        regions: terrain region files (the overworld's full regions plus one per extra dimension).
        chunks: terrain chunks in those region files.
        bytes: total size of every file written.
    """

    regions: int
    chunks: int
    bytes: int


class ChunkRef(NamedTuple):
    """A chunk slot: region file relative to the world (``region/r.0.0.mca``) and slot."""

    region: str
    slot: int


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What :func:`play_session` changed; each tuple is sorted.

    Attributes:
        edited: chunks whose blocks changed (and their LastUpdate/InhabitedTime).
        resaved: chunks whose only change is LastUpdate/InhabitedTime.
        added: chunks generated into slots that were empty.
    """

    edited: tuple[ChunkRef, ...]
    resaved: tuple[ChunkRef, ...]
    added: tuple[ChunkRef, ...]

    @property
    def regions(self) -> tuple[str, ...]:
        """Region files that were rewritten, sorted."""
        return tuple(sorted({ref.region for ref in (*self.edited, *self.resaved, *self.added)}))


# --------------------------------------------------------------------------------------------
# Hashing: every random choice is a pure function of (seed, coordinates, purpose)


def _u64(value: int) -> int:
    return value & _MASK64


def _signed64(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >> 63 else value


def _mix(*values: int) -> int:
    """splitmix64 over a sequence of integers; for scalar decisions made outside numpy."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = _u64((state ^ _u64(value)) * 0xBF58476D1CE4E5B9)
        state ^= state >> 31
    state = _u64((state ^ (state >> 30)) * 0x94D049BB133111EB)
    return state ^ (state >> 31)


def _rng(seed: int, salt: int, *values: int) -> np.random.Generator:
    """A generator for one purpose (``salt``) and place (``values``) of a seed's world."""
    # Two 32-bit words per value: SeedSequence would otherwise confuse sequences that differ
    # only in trailing zeros or in how values split into words (negative coordinates).
    words = [w for v in (seed, salt, *values) for w in (_u64(v) & 0xFFFFFFFF, _u64(v) >> 32)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


# What a generator is for; each salt is always used with the same number of values.
_SALT_ROW, _SALT_CHUNK, _SALT_NETHER, _SALT_SESSION, _SALT_EDIT = 1, 2, 3, 4, 5
_SALT_ENTITIES, _SALT_EXTRA_SLOTS = 6, 7


def _mix_array(values: U64) -> U64:
    """splitmix64's finaliser, elementwise; uint64 arithmetic wraps, which is what we want."""
    values = values ^ (values >> np.uint64(30))
    values = values * np.uint64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> np.uint64(27))
    values = values * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


# --------------------------------------------------------------------------------------------
# Terrain height: value noise. Only integer hashing, + and * on floats: portable bit for bit.

_OCTAVES = ((256, 30.0), (96, 14.0), (32, 6.0), (12, 2.5))  # (wavelength in blocks, amplitude)
_BASE_HEIGHT = 70.0


def _lattice(seed: int, octave: int, xs: I64, zs: I64) -> F64:
    """Pseudo-random values in [-1, 1) at lattice points ``zs`` x ``xs``."""
    key = np.uint64(_mix(seed, octave))
    hx = _mix_array(xs.astype(np.uint64) ^ key)
    hashed = _mix_array(hx[None, :] + zs.astype(np.uint64)[:, None] * np.uint64(0x9E3779B97F4A7C15))
    return (hashed >> np.uint64(11)).astype(np.float64) * (2.0**-52) - 1.0


def _smooth_fractions(coords: I64, scale: int) -> tuple[I64, F64]:
    cells = coords // scale
    t = (coords - cells * scale).astype(np.float64) / scale
    return cells, t * t * (3.0 - 2.0 * t)


def _value_noise(seed: int, octave: int, xs: I64, zs: I64, scale: int) -> F64:
    """Smooth lattice noise on the grid ``zs`` x ``xs``: shape ``(len(zs), len(xs))``.

    Interpolates along x on the few lattice rows first, then along z: the same operations
    per point as the textbook bilinear form, in fewer passes over the grid.
    """
    cx, sx = _smooth_fractions(xs, scale)
    cz, sz = _smooth_fractions(zs, scale)
    x0, z0 = int(cx.min()), int(cz.min())
    grid = _lattice(
        seed, octave, np.arange(x0, int(cx.max()) + 2), np.arange(z0, int(cz.max()) + 2)
    )
    jx, jz = cx - x0, cz - z0
    along_x = grid[:, jx] + (grid[:, jx + 1] - grid[:, jx]) * sx
    near, far = along_x[jz], along_x[jz + 1]
    result: F64 = near + (far - near) * sz[:, None]
    return result


def _heights(seed: int, x0: int, z0: int, width: int, depth: int) -> I64:
    """Surface height (y of the first air block) for ``depth`` x ``width`` columns from (x0, z0).

    Each value depends only on its own column, so a region computed at once and a chunk
    computed alone agree exactly.
    """
    xs = np.arange(x0, x0 + width, dtype=np.int64)
    zs = np.arange(z0, z0 + depth, dtype=np.int64)
    total = np.full((depth, width), _BASE_HEIGHT)
    for octave, (scale, amplitude) in enumerate(_OCTAVES):
        total += amplitude * _value_noise(seed, octave, xs, zs, scale)
    heights: I64 = np.clip(np.floor(total), -40, 250).astype(np.int64)
    return heights


# --------------------------------------------------------------------------------------------
# Blocks

_NONAIR, _MOTION, _FLOOR = 1, 2, 4  # heightmap classes: WORLD_SURFACE, MOTION_BLOCKING, OCEAN_FLOOR
_SOLID = _NONAIR | _MOTION | _FLOOR
_FLUID = _NONAIR | _MOTION  # water, lava and waterlogged plants block motion but are no floor


class _Block(NamedTuple):
    name: str
    properties: tuple[tuple[str, str], ...] = ()
    flags: int = _SOLID


def _dripstone(thickness: str, direction: str) -> _Block:
    props = (("thickness", thickness), ("vertical_direction", direction), ("waterlogged", "false"))
    return _Block("minecraft:pointed_dripstone", props, _NONAIR)


_BLOCKS: tuple[_Block, ...] = (
    _Block("minecraft:air", flags=0),
    _Block("minecraft:stone"),
    _Block("minecraft:dirt"),
    _Block("minecraft:grass_block", (("snowy", "false"),)),
    _Block("minecraft:water", (("level", "0"),), _FLUID),
    _Block("minecraft:sand"),
    _Block("minecraft:gravel"),
    _Block("minecraft:clay"),
    _Block("minecraft:bedrock"),
    _Block("minecraft:deepslate", (("axis", "y"),)),
    _Block("minecraft:granite"),
    _Block("minecraft:diorite"),
    _Block("minecraft:andesite"),
    _Block("minecraft:tuff"),
    _Block("minecraft:coal_ore"),
    _Block("minecraft:iron_ore"),
    _Block("minecraft:copper_ore"),
    _Block("minecraft:gold_ore"),
    _Block("minecraft:redstone_ore", (("lit", "false"),)),
    _Block("minecraft:lapis_ore"),
    _Block("minecraft:diamond_ore"),
    _Block("minecraft:deepslate_coal_ore"),
    _Block("minecraft:deepslate_iron_ore"),
    _Block("minecraft:deepslate_copper_ore"),
    _Block("minecraft:deepslate_gold_ore"),
    _Block("minecraft:deepslate_redstone_ore", (("lit", "false"),)),
    _Block("minecraft:deepslate_lapis_ore"),
    _Block("minecraft:deepslate_diamond_ore"),
    _Block("minecraft:short_grass", flags=_NONAIR),
    _Block("minecraft:dandelion", flags=_NONAIR),
    _Block("minecraft:poppy", flags=_NONAIR),
    _Block("minecraft:seagrass", flags=_FLUID),  # always waterlogged
    _Block("minecraft:sandstone"),
    _Block("minecraft:netherrack"),
    _Block("minecraft:lava", (("level", "0"),), _FLUID),
    _Block("minecraft:soul_sand"),
    _Block("minecraft:nether_quartz_ore"),
    _Block("minecraft:nether_gold_ore"),
    _Block("minecraft:end_stone"),
    # Cave decoration; none of these emits light, so BlockLight stays empty.
    _Block("minecraft:cave_air", flags=0),
    _Block("minecraft:moss_block"),
    _Block("minecraft:moss_carpet"),
    _Block("minecraft:dripstone_block"),
    _dripstone("tip", "down"),
    _dripstone("frustum", "down"),
    _dripstone("base", "up"),
    _dripstone("tip", "up"),
    _Block("minecraft:rooted_dirt"),
    _Block("minecraft:azalea"),
    _Block("minecraft:flowering_azalea"),
    _Block("minecraft:hanging_roots", (("waterlogged", "false"),), _NONAIR),
    _Block("minecraft:calcite"),
    _Block("minecraft:smooth_basalt"),
    _Block("minecraft:cobbled_deepslate"),
    _Block("minecraft:cobweb", flags=_NONAIR),
    _Block("minecraft:big_dripleaf_stem", (("facing", "north"), ("waterlogged", "false"))),
    _Block(
        "minecraft:small_dripleaf",
        (("facing", "east"), ("half", "lower"), ("waterlogged", "false")),
        _NONAIR,
    ),
    _Block("minecraft:spore_blossom", flags=_NONAIR),
    _Block("minecraft:amethyst_block"),
    _Block("minecraft:budding_amethyst"),
    _Block("minecraft:raw_iron_block"),
    _Block("minecraft:raw_copper_block"),
)
_ID = {block.name.removeprefix("minecraft:"): index for index, block in enumerate(_BLOCKS)}
_AIR, _STONE, _DIRT, _GRASS, _WATER, _SAND, _GRAVEL, _CLAY, _BEDROCK, _DEEPSLATE = range(10)
_GRANITE, _DIORITE, _ANDESITE, _TUFF = _ID["granite"], _ID["diorite"], _ID["andesite"], _ID["tuff"]
_SHORT_GRASS, _DANDELION, _POPPY, _SEAGRASS = (
    _ID["short_grass"],
    _ID["dandelion"],
    _ID["poppy"],
    _ID["seagrass"],
)
_SANDSTONE, _NETHERRACK, _LAVA, _SOUL_SAND, _END_STONE = (
    _ID["sandstone"],
    _ID["netherrack"],
    _ID["lava"],
    _ID["soul_sand"],
    _ID["end_stone"],
)
_FLAGS = np.array([block.flags for block in _BLOCKS], dtype=np.uint8)

# 32 block states for dense cave sections, standing in for the busy caves of 1.18+ terrain.
# Only such dense content is cheap to compress: zlib at level 6 emits tens of MB/s on it but
# ~4 MB/s on sparse ores in stone (long hash chains of short matches), so these sections
# carry most of a chunk's compressed bytes and keep a gigabyte around a minute of work.
_CAVE_MIX = np.array(
    [
        _ID["cave_air"], _AIR, _WATER, _CLAY, _GRAVEL, _TUFF, _DEEPSLATE,
        *range(_ID["moss_block"], len(_BLOCKS)),
        _ID["deepslate_iron_ore"], _ID["deepslate_copper_ore"], _ID["deepslate_coal_ore"],
    ],
    dtype=np.uint8,
)
_CAVE_MIX.sort()  # so a cave block's index in _CAVE_MIX is its index in the section palette
assert len(_CAVE_MIX) == 32, "a full 5-bit palette"


def _lut(mapping: dict[int, int]) -> U8:
    table = np.arange(len(_BLOCKS), dtype=np.uint8)
    for old, new in mapping.items():
        table[old] = new
    return table


def _deepslate_mapping() -> dict[int, int]:
    mapping = {_STONE: _DEEPSLATE, _GRANITE: _TUFF, _DIORITE: _TUFF, _ANDESITE: _TUFF}
    for ore in ("coal", "iron", "copper", "gold", "redstone", "lapis", "diamond"):
        mapping[_ID[f"{ore}_ore"]] = _ID[f"deepslate_{ore}_ore"]
    return mapping


def _block_set(*blocks: int) -> npt.NDArray[np.bool_]:
    table = np.zeros(len(_BLOCKS), dtype=bool)
    table[list(blocks)] = True
    return table


_TO_DEEPSLATE = _lut(_deepslate_mapping())
_REPLACEABLE = _block_set(_STONE, _DEEPSLATE, _DIRT, _GRAVEL, _GRANITE, _DIORITE, _ANDESITE, _TUFF)
_CARVABLE = _REPLACEABLE | _block_set(
    *(_ID[f"{ore}_ore"] for ore in ("coal", "iron", "copper", "gold")),
    *(_ID[f"deepslate_{ore}_ore"] for ore in ("coal", "iron", "copper", "gold")),
)


# --------------------------------------------------------------------------------------------
# A minimal big-endian NBT writer: functions that return the bytes of one named tag

_BYTE, _INT, _LONG, _BYTE_ARRAY, _STRING, _LIST, _COMPOUND, _LONG_ARRAY = 1, 3, 4, 7, 8, 9, 10, 12
_END = b"\x00"


@functools.cache
def _head(tag: int, name: str) -> bytes:
    encoded = name.encode()
    return struct.pack(">BH", tag, len(encoded)) + encoded


def _str(value: str) -> bytes:
    encoded = value.encode()  # only ASCII here, where modified UTF-8 equals UTF-8
    return struct.pack(">H", len(encoded)) + encoded


def _t_byte(name: str, value: int) -> bytes:
    return _head(_BYTE, name) + struct.pack(">b", value)


def _t_int(name: str, value: int) -> bytes:
    return _head(_INT, name) + struct.pack(">i", value)


def _t_long(name: str, value: int) -> bytes:
    return _head(_LONG, name) + struct.pack(">q", value)


def _t_string(name: str, value: str) -> bytes:
    return _head(_STRING, name) + _str(value)


def _t_compound(name: str, parts: Iterable[bytes]) -> bytes:
    return _head(_COMPOUND, name) + b"".join(parts) + _END


def _t_list(name: str, item_tag: int, payloads: Sequence[bytes]) -> bytes:
    kind = item_tag if payloads else 0  # vanilla writes an empty list with element type END
    return _head(_LIST, name) + struct.pack(">Bi", kind, len(payloads)) + b"".join(payloads)


def _t_long_array(name: str, packed: bytes) -> bytes:
    return _head(_LONG_ARRAY, name) + struct.pack(">i", len(packed) // 8) + packed


# --------------------------------------------------------------------------------------------
# Packed long arrays (1.16+: an entry never spans two longs)


@functools.cache
def _shifts(bits: int) -> U64:
    return np.arange(64 // bits, dtype=np.uint64) * np.uint64(bits)


def _pack_rows(values: npt.NDArray[np.integer[Any]], bits: int) -> U8:
    """Pack each row of ``values``; returns the big-endian bytes of each row's longs."""
    rows, count = values.shape
    per_long = 64 // bits
    longs = -(-count // per_long)
    if bits == 4 and count % 16 == 0:
        return _pack_nibbles(values.astype(np.uint8), rows, longs)
    padded = np.zeros((rows, longs * per_long), dtype=np.uint64)
    padded[:, :count] = values
    grid = padded.reshape(rows, longs, per_long)
    if per_long > 16:  # biome cells: few longs, many entries per long
        packed = (grid << _shifts(bits)).sum(axis=2, dtype=np.uint64)
    else:  # one shift-or per position: numpy reduces a short last axis slowly
        packed = grid[:, :, 0].copy()
        for position in range(1, per_long):
            packed |= grid[:, :, position] << np.uint64(position * bits)
    result: U8 = packed.astype(">u8").view(np.uint8).reshape(rows, longs * 8)
    return result


def _pack_nibbles(small: U8, rows: int, longs: int) -> U8:
    # Byte j of a little-endian long holds entries 2j (low nibble) and 2j+1 (high nibble):
    # read pairs as little-endian uint16 b0 + 256 * b1, fold b1 down next to b0, then turn
    # each long big-endian.
    pairs = small.view("<u2")
    nibbles = (pairs | (pairs >> np.uint16(4))).astype(np.uint8)
    swapped: U8 = nibbles.view("<u8").byteswap().view(np.uint8)
    return swapped.reshape(rows, longs * 8)


def pack_indices(indices: npt.NDArray[np.integer[Any]], bits: int) -> bytes:
    """Pack small non-negative integers into big-endian longs, ``64 // bits`` per long.

    This is the 1.16+ layout of ``block_states.data``, ``biomes.data`` and heightmaps: entry
    ``i`` is in long ``i // (64 // bits)`` at bit ``bits * (i % (64 // bits))``; the top bits
    of each long stay unused rather than holding part of the next entry.

    Args:
        indices: the values, each below ``2 ** bits``.
        bits: bits per entry, 1 to 32.

    Returns:
        The longs as big-endian bytes, as they appear in an NBT long array.
    """
    return bytes(_pack_rows(np.asarray(indices).reshape(1, -1), bits)[0])


def unpack_indices(longs: bytes | npt.NDArray[np.integer[Any]], bits: int, count: int) -> I64:
    """Inverse of :func:`pack_indices`.

    Args:
        longs: big-endian bytes (a Long_Array tag's payload), or the longs themselves.
        bits: bits per entry.
        count: how many entries to return.
    """
    if isinstance(longs, bytes):
        values = np.frombuffer(longs, dtype=">u8").astype(np.uint64)
    else:
        values = np.asarray(longs).astype(np.int64).view(np.uint64)
    entries = (values[:, None] >> _shifts(bits)) & np.uint64((1 << bits) - 1)
    result: I64 = entries.reshape(-1)[:count].astype(np.int64)
    return result


def _block_bits(palette_size: int) -> int:
    return max(4, math.ceil(math.log2(palette_size)))


_BLOCK_BITS = np.array([4, 4] + [_block_bits(n) for n in range(2, len(_BLOCKS) + 1)])


# --------------------------------------------------------------------------------------------
# Chunk NBT, for a batch of chunks at once


@dataclass(frozen=True, slots=True)
class _Dimension:
    folder: str  # "" for the overworld, "DIM-1", "DIM1"
    min_section: int
    sections: int
    sky: bool

    @property
    def min_y(self) -> int:
        return self.min_section * 16


_OVERWORLD = _Dimension("", -4, 24, True)
_NETHER = _Dimension("DIM-1", 0, 16, False)
_THE_END = _Dimension("DIM1", 0, 16, False)


class _Clock(NamedTuple):
    timestamp: int  # region header, seconds since the epoch
    last_update: int  # game ticks
    inhabited: int  # ticks


@dataclass(frozen=True, slots=True)
class _Batch:
    """Chunks generated together: blocks ``(chunk, row, z, x)`` from the dimension's min_y.

    Rows above ``blocks.shape[1]`` (a multiple of 16) are air. Heightmaps hold the vanilla
    values (1 + y of the top block - min_y, 0 for an empty column) as ``(chunk, z, x)``.
    """

    coords: list[tuple[int, int]]
    blocks: U8
    motion: I64
    floor: I64
    surface: I64
    biomes: list[list[bytes]]  # per chunk, per section: the encoded ``biomes`` compound
    # Sections encoded while generating them, by index ``chunk * rows // 16 + section``.
    encoded: dict[int, tuple[tuple[int, ...], bytes]] = field(default_factory=dict)


@functools.cache
def _palette(ids: tuple[int, ...]) -> bytes:
    entries = []
    for block in ids:
        name, properties, _ = _BLOCKS[block]
        parts = [_t_string("Name", name)]
        if properties:
            parts.append(_t_compound("Properties", [_t_string(k, v) for k, v in properties]))
        entries.append(b"".join(parts) + _END)
    return _t_list("palette", _COMPOUND, entries)


@functools.cache
def _single_biome(name: str) -> bytes:
    return _t_compound("biomes", [_t_list("palette", _STRING, [_str(name)])])


_FULL_LIGHT = b"\xff" * 2048
_NO_LIGHT = bytes(2048)
_SKY_HEAD = _head(_BYTE_ARRAY, "SkyLight") + struct.pack(">i", 2048)
_DATA_HEAD = _head(_LONG_ARRAY, "data")


def _section(
    y: int, palette: tuple[int, ...], packed: bytes | None, biomes: bytes, sky: bytes | None
) -> bytes:
    """One entry of ``sections``; the hot path of the encoder, hence one join."""
    # No BlockLight: nothing generated emits light, and vanilla omits empty light layers.
    parts = [_Y_TAGS[y], _STATES_HEAD, _palette(palette)]
    if packed is not None:
        parts += [_DATA_HEAD, struct.pack(">i", len(packed) // 8), packed]
    parts += [_END, biomes]
    if sky is not None:
        parts += [_SKY_HEAD, sky]
    parts.append(_END)
    return b"".join(parts)


_Y_TAGS = {y: _t_byte("Y", y) for y in range(-64, 64)}
_STATES_HEAD = _head(_COMPOUND, "block_states")


@functools.lru_cache(maxsize=4096)
def _uniform_section(y: int, block: int, biomes: bytes, sky: bytes | None) -> bytes:
    """A section of one block type (air above ground, mostly), built once."""
    return _section(y, (block,), None, biomes, sky)


@functools.lru_cache(maxsize=1024)
def _air_sections(dim: _Dimension, first: int, lit: int, biomes: bytes) -> bytes:
    """The air sections from index ``first`` up, sky-lit below index ``lit``."""
    return b"".join(
        _uniform_section(
            dim.min_section + index, _AIR, biomes, _FULL_LIGHT if index < lit else None
        )
        for index in range(first, dim.sections)
    )


def _encode_sections(
    sections: U8, encoded: dict[int, tuple[tuple[int, ...], bytes]]
) -> list[tuple[tuple[int, ...], bytes | None]]:
    """Palette (block ids in id order) and packed data of every 4096-block section.

    Sections in ``encoded`` are taken from there, uniform ones need no data; for the rest,
    one bincount over (section, block) keys finds every palette, and a block's index in its
    section's palette is its rank among the blocks present there.
    """
    low, high = sections.min(axis=1), sections.max(axis=1)
    result: list[tuple[tuple[int, ...], bytes | None]] = [((int(b),), None) for b in low.tolist()]
    for at, known in encoded.items():
        result[at] = known
    todo = np.flatnonzero(low != high)
    todo = todo[~np.isin(todo, list(encoded))]
    count, kinds = len(todo), len(_BLOCKS)
    # Small keys make the passes below cheaper; uint16 holds them for all but huge batches.
    key_type = np.uint16 if count * kinds < 1 << 16 else np.uint32
    offsets: npt.NDArray[np.unsignedinteger[Any]] = np.arange(
        0, count * kinds, kinds, dtype=key_type
    )
    keys = sections[todo] + offsets[:, None]
    present = (np.bincount(keys.reshape(-1), minlength=count * kinds) > 0).reshape(count, kinds)
    ranks = (np.cumsum(present, axis=1) - 1).astype(np.uint8).reshape(-1)
    sizes = present.sum(axis=1)
    ids, ends = np.nonzero(present)[1].tolist(), np.cumsum(sizes).tolist()
    palettes = [
        tuple(ids[end - size : end]) for end, size in zip(ends, sizes.tolist(), strict=True)
    ]
    bits = _BLOCK_BITS[sizes]
    for width in np.unique(bits).tolist():
        rows = np.flatnonzero(bits == width)
        packed = _pack_rows(np.take(ranks, keys[rows]), width)
        for row, data in zip(rows.tolist(), packed, strict=True):
            result[int(todo[row])] = (palettes[row], data.tobytes())
    return result


def _sky_lights(motion: I64, filled: int) -> list[list[bytes]]:
    """Per chunk, the sky light of the first ``filled`` sections (those above are fully lit).

    15 at and above each column's motion-blocking top, 0 below: no spreading sideways. Only
    the few sections that the tops cross need arrays computed, for the whole batch at once.
    """
    chunks = len(motion)
    lows = (motion.reshape(chunks, -1).min(axis=1) // 16).tolist()  # below: wholly dark
    highs = (-(-motion.reshape(chunks, -1).max(axis=1) // 16)).tolist()  # from here: lit
    first, last = min(lows), min(max(highs), filled)
    rows = np.arange(first * 16, last * 16).reshape(1, -1, 1, 1)
    lit = (rows >= motion[:, None]).reshape(chunks, last - first, 2048, 2).astype(np.uint8)
    mixed = lit[..., 0] * np.uint8(0x0F) | lit[..., 1] * np.uint8(0xF0)
    result = []
    for chunk, (low, high) in enumerate(zip(lows, highs, strict=True)):
        top = min(high, filled)
        arrays = [mixed[chunk, index - first].tobytes() for index in range(low, top)]
        result.append([_NO_LIGHT] * low + arrays + [_FULL_LIGHT] * (filled - max(top, low)))
    return result


def _heightmaps(batch: _Batch) -> list[bytes]:
    """Every chunk's Heightmaps compound; the packing is done for the whole batch at once."""
    chunks = len(batch.coords)
    values = np.concatenate([batch.motion, batch.floor, batch.surface]).reshape(3 * chunks, 256)
    packed = _pack_rows(values, 9)
    result = []
    for chunk in range(chunks):
        motion, floor, surface = (packed[chunk + k * chunks].tobytes() for k in range(3))
        parts = [
            _t_long_array("MOTION_BLOCKING", motion),
            _t_long_array("MOTION_BLOCKING_NO_LEAVES", motion),  # no leaves are generated
            _t_long_array("OCEAN_FLOOR", floor),
            _t_long_array("WORLD_SURFACE", surface),
        ]
        result.append(_t_compound("Heightmaps", parts))
    return result


@functools.cache
def _chunk_tail(sections: int) -> bytes:
    post = _t_list("PostProcessing", _LIST, [struct.pack(">Bi", 0, 0)] * sections)
    structures = _t_compound(
        "structures", [_t_compound("References", []), _t_compound("starts", [])]
    )
    empty = [
        _t_list(name, _COMPOUND, []) for name in ("block_entities", "fluid_ticks", "block_ticks")
    ]
    return b"".join([*empty, post, structures])


def _chunk_head(dim: _Dimension, cx: int, cz: int, clock: _Clock) -> bytes:
    # LastUpdate and InhabitedTime come early and at a fixed place: a re-save changes 16 bytes.
    return b"".join(
        [
            b"\x0a\x00\x00",  # the root compound, named ""
            _t_int("DataVersion", DATA_VERSION),
            _t_int("xPos", cx),
            _t_int("zPos", cz),
            _t_int("yPos", dim.min_section),
            _t_string("Status", "minecraft:full"),
            _t_long("LastUpdate", clock.last_update),
            _t_long("InhabitedTime", clock.inhabited),
            _t_byte("isLightOn", 1),
            _head(_LIST, "sections") + struct.pack(">Bi", _COMPOUND, dim.sections),
        ]
    )


def _encode_batch(dim: _Dimension, batch: _Batch, clocks: Sequence[_Clock]) -> list[bytes]:
    """The uncompressed NBT of every chunk of ``batch``."""
    chunks, rows = batch.blocks.shape[:2]
    filled = rows // 16
    states = _encode_sections(batch.blocks.reshape(chunks * filled, 4096), batch.encoded)
    heightmaps = _heightmaps(batch)
    tail = _chunk_tail(dim.sections)
    # Like the game, keep light only for non-empty sections and the one above the highest.
    lit = ((batch.surface.reshape(chunks, -1).max(axis=1) - 1) // 16 + 2).tolist()
    skies: list[list[bytes | None]] = [[None] * filled for _ in range(chunks)]
    if dim.sky:
        skies = [[*lights] for lights in _sky_lights(batch.motion, filled)]
    raws = []
    for chunk, ((cx, cz), clock) in enumerate(zip(batch.coords, clocks, strict=True)):
        sky_above = lit[chunk] if dim.sky else 0
        skies[chunk][sky_above:] = [None] * (filled - min(sky_above, filled))
        biomes = batch.biomes[chunk]
        parts = [_chunk_head(dim, cx, cz, clock)]
        for index in range(filled):
            palette, packed = states[chunk * filled + index]
            y, sky = dim.min_section + index, skies[chunk][index]
            if packed is None:
                parts.append(_uniform_section(y, palette[0], biomes[index], sky))
            else:
                parts.append(_section(y, palette, packed, biomes[index], sky))
        if filled < dim.sections:
            parts.append(_air_sections(dim, filled, sky_above, biomes[filled]))
        parts += [heightmaps[chunk], tail, _END]
        raws.append(b"".join(parts))
    return raws


def _column_tops(blocks: U8, flag: int) -> I64:
    """Heightmap values from blocks ``(chunk, row, z, x)``: top block with ``flag``, plus 1."""
    rows = blocks.shape[1]
    mask = (_FLAGS[blocks] & flag).astype(bool)[:, ::-1]
    tops: I64 = np.where(mask.any(axis=1), rows - mask.argmax(axis=1), 0).astype(np.int64)
    return tops


# --------------------------------------------------------------------------------------------
# Overworld terrain, a batch of chunks at a time: numpy calls per batch, not per chunk


def _ball(radius: int) -> I64:
    """Offsets (drow, dz, dx) of a rounded ball."""
    r = np.arange(-radius, radius + 1)
    grid = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    ball: I64 = grid[(grid**2).sum(axis=1) <= radius * radius + radius]
    return ball


_BALLS = {r: _ball(r) for r in (1, 2, 3)}


class _Family(NamedTuple):
    """Features sharing a shape: (block, per chunk, lowest y, highest y) each."""

    shape: I64
    features: tuple[tuple[int, int, int, int], ...]


_BIG_BLOBS = _Family(
    _BALLS[3], ((_GRANITE, 1, -64, 320), (_DIORITE, 1, -64, 320), (_ANDESITE, 2, -64, 320))
)
_SMALL_BLOBS = _Family(
    _BALLS[2], ((_TUFF, 1, -64, 16), (_GRAVEL, 1, -64, 320), (_DIRT, 1, -64, 320))
)
# Roughly the 1.18+ ore heights, but sparse: scattered ores are what zlib is slowest on.
_ORES = _Family(
    _BALLS[1],
    (
        (_ID["coal_ore"], 6, 0, 160),
        (_ID["iron_ore"], 5, -24, 56),
        (_ID["copper_ore"], 3, -16, 112),
        (_ID["gold_ore"], 2, -64, 32),
        (_ID["redstone_ore"], 2, -64, 16),
        (_ID["lapis_ore"], 1, -32, 32),
        (_ID["diamond_ore"], 1, -64, -48),
    ),
)
_TUNNEL_STEPS = 8
_DENSE_SECTIONS = (1, 2, 2, 3)  # dense cave sections per chunk, drawn from these
_CAVE_SECTIONS = 4  # dense sections lie in sections 1..4 (y -48..15), always deep underground
_MIN_SURFACE = 24  # keeps every surface well above the dense sections


@dataclass(frozen=True, slots=True)
class _Volume:
    """A batch's block array seen flat, for scattering features into it."""

    flat: U8
    rows: int
    limit: I64  # per (chunk, z, x): features stay below this row
    deepslate_rows: int = 0

    def stamp(
        self,
        chunk: I64,
        centers: I64,
        offsets: I64,
        blocks: I64,
        allowed: npt.NDArray[np.bool_],
        rng: np.random.Generator,
        keep: float = 1.0,
    ) -> None:
        """Put ``blocks[i]`` around ``centers[i]`` (row, z, x) of ``chunk[i]``.

        Only inside the chunk, below ``limit``, where ``allowed[current block]``, and for a
        random ``keep`` fraction of the points.
        """
        # int32 throughout: tens of thousands of points per call, and indices stay < 2**31.
        count = len(offsets)
        points = (centers.astype(np.int32)[:, None, :] + offsets.astype(np.int32)).reshape(-1, 3)
        row, z, x = points[:, 0], points[:, 1], points[:, 2]
        ok = (((z | x) & -16) == 0) & (row >= 0)  # 0 <= z, x < 16 in one test
        if keep < 1.0:
            ok &= rng.random(len(ok)) < keep
        where = np.flatnonzero(ok)
        owner = chunk.astype(np.int32)[where // count]
        row, column = row[where], z[where] * 16 + x[where]
        below = row < self.limit.reshape(-1)[owner * 256 + column]
        index = ((owner * self.rows + row) * 256 + column)[below]
        fits = allowed[self.flat[index]]
        value = blocks[where // count][below][fits]
        # Below y=0, stone features take their deepslate variant.
        deep = row[below][fits] < self.deepslate_rows
        self.flat[index[fits]] = np.where(deep, _TO_DEEPSLATE[value], value)


def _centers(rng: np.random.Generator, counts: I64, low: I64, high: I64) -> tuple[I64, I64]:
    """``counts[i]`` random points for each slot i with rows in [low[i], high[i]).

    Slots whose range is empty get none. Returns the slot and the (row, z, x) of each point.
    """
    slot = np.repeat(np.arange(len(counts)), counts)
    bottom, top = low[slot], high[slot]
    fits = top > bottom
    slot, bottom, top = slot[fits], bottom[fits], top[fits]
    rows = bottom + (rng.random(len(slot)) * (top - bottom)).astype(np.int64)
    return slot, np.column_stack([rows, rng.integers(0, 16, size=(len(slot), 2))])


def _scatter(
    volume: _Volume, rng: np.random.Generator, ground: I64, family: _Family, keep: float = 1.0
) -> None:
    """Features of one shape for every chunk of the batch, in one stamp."""
    block, count, low, high = (
        np.array(column, dtype=np.int64) for column in zip(*family.features, strict=True)
    )
    min_y = _OVERWORLD.min_y
    tops = np.minimum(high[None, :] - min_y, ground[:, None] - 6)  # shape (chunk, feature)
    lows = np.broadcast_to(np.maximum(low - min_y, 5), tops.shape).reshape(-1)
    counts = np.broadcast_to(count, tops.shape).reshape(-1)
    slot, centers = _centers(rng, counts, lows, tops.reshape(-1))
    kinds = len(family.features)
    volume.stamp(slot // kinds, centers, family.shape, block[slot % kinds], _REPLACEABLE, rng, keep)


def _dig_tunnels(volume: _Volume, rng: np.random.Generator, ground: I64) -> None:
    """Random-walk tunnels, one of each width per chunk."""
    for radius in (1, 2):
        chunk, starts = _centers(
            rng, np.ones(len(ground), dtype=np.int64), np.full(len(ground), 8), ground - 10
        )
        steps = rng.integers(-2, 3, size=(len(chunk), _TUNNEL_STEPS, 3))
        steps[:, :, 0] //= 2  # mostly horizontal
        path = (starts[:, None, :] + np.cumsum(steps, axis=1)).reshape(-1, 3)
        owner = np.repeat(chunk, _TUNNEL_STEPS)
        volume.stamp(owner, path, _BALLS[radius], np.full(len(owner), _AIR), _CARVABLE, rng)


def _add_features(volume: _Volume, rng: np.random.Generator, ground: I64) -> None:
    """Stone variety, ore veins and tunnels below ``ground`` (each chunk's lowest surface row)."""
    _scatter(volume, rng, ground, _BIG_BLOBS)
    _scatter(volume, rng, ground, _SMALL_BLOBS)
    _scatter(volume, rng, ground, _ORES, keep=0.45)
    _dig_tunnels(volume, rng, ground)


def _surface_blocks(h: I64, rng: np.random.Generator) -> tuple[I64, I64]:
    """Top block and filler per column: grass on dirt, sand at the shore, mixed sea floors."""
    top = np.full(h.shape, _GRASS, dtype=np.int64)
    filler = np.full(h.shape, _DIRT, dtype=np.int64)
    shore = (h >= _SEA - 3) & (h <= _SEA + 1)
    top[shore], filler[shore] = _SAND, _SAND
    seabed = h < _SEA - 3
    choice = rng.integers(0, 6, size=h.shape)
    top[seabed] = np.array([_SAND, _SAND, _GRAVEL, _GRAVEL, _CLAY, _DIRT])[choice[seabed]]
    filler[seabed] = np.where(choice[seabed] < 2, _SANDSTONE, _GRAVEL)
    return top, filler


def _layers(h: I64, rows: int, rng: np.random.Generator) -> U8:
    """Deepslate, stone, dirt, grass, water and air from the surface heights ``h`` (chunk, z, x).

    Rows below the lowest surface of the batch are filled by slices; only the band above
    needs per-column work, done with int16 masks and ``copyto`` to stay cheap.
    """
    min_y = _OVERWORLD.min_y
    band = int(h.min()) - 8 - min_y  # >= 80 thanks to _MIN_SURFACE, so above the deepslate
    blocks = np.empty((len(h), rows, 16, 16), dtype=np.uint8)
    blocks[:, :-min_y] = _DEEPSLATE
    blocks[:, -min_y:band] = _STONE
    top_block, filler = _surface_blocks(h, rng)
    layer = blocks[:, band:]
    sea_rows = max(_SEA - min_y - band, 0)  # none when the whole batch is above sea level
    layer[:, :sea_rows] = _WATER
    layer[:, sea_rows:] = _AIR
    ys = np.arange(band + min_y, rows + min_y, dtype=np.int16).reshape(1, -1, 1, 1)
    top = h.astype(np.int16)[:, None]
    dirt = rng.integers(3, 6, size=h.shape).astype(np.int16)[:, None]
    np.copyto(layer, filler.astype(np.uint8)[:, None], where=ys < top - 1)
    np.copyto(layer, np.uint8(_STONE), where=ys < top - dirt)
    np.copyto(layer, top_block.astype(np.uint8)[:, None], where=ys == top - 1)
    return blocks


def _deepen(blocks: U8, rng: np.random.Generator) -> None:
    """A ragged stone-to-deepslate transition above y=0, and bedrock at the bottom."""
    transition = blocks[:, 64:72]
    chance = ((8 - np.arange(8)) / 9.0).reshape(1, 8, 1, 1)
    mask = rng.random(transition.shape) < chance
    transition[mask] = _TO_DEEPSLATE[transition[mask]]
    blocks[:, 0] = _BEDROCK
    chance = np.array([0.8, 0.6, 0.4, 0.2]).reshape(1, 4, 1, 1)
    blocks[:, 1:5][rng.random((len(blocks), 4, 16, 16)) < chance] = _BEDROCK


def _fill_caves(
    blocks: U8, rng: np.random.Generator
) -> tuple[list[set[int]], dict[int, tuple[tuple[int, ...], bytes]]]:
    """Turn 1 to 3 deep sections per chunk into dense caves.

    Returns each chunk's cave section indices, and those sections already encoded (their
    random draws are the palette indices), keyed like :attr:`_Batch.encoded`.
    """
    chunks, filled = len(blocks), blocks.shape[1] // 16
    counts = rng.choice(_DENSE_SECTIONS, size=chunks)
    order = np.argsort(rng.random((chunks, _CAVE_SECTIONS)), axis=1) + 1
    chosen = [order[c, : counts[c]].tolist() for c in range(chunks)]
    owner = np.repeat(np.arange(chunks), counts)
    section = np.concatenate([order[c, : counts[c]] for c in range(chunks)])
    # Raw random bytes masked to 5 bits: uniform over the 32 cave blocks, and cheap.
    draws = np.frombuffer(rng.bytes(len(owner) * 4096), dtype=np.uint8).reshape(-1, 4096) & 31
    # Every palette entry must be used: the game drops unused ones when it saves.
    draws[:, : len(_CAVE_MIX)] = np.arange(len(_CAVE_MIX), dtype=np.uint8)
    blocks.reshape(chunks, filled, 4096)[owner, section] = _CAVE_MIX[draws]
    palette = tuple(_CAVE_MIX.tolist())
    packed = _pack_rows(draws, _block_bits(len(palette)))
    keys = (owner * filled + section).tolist()
    encoded = {key: (palette, row.tobytes()) for key, row in zip(keys, packed, strict=True)}
    return [set(c) for c in chosen], encoded


def _add_plants(blocks: U8, h: I64, rng: np.random.Generator) -> npt.NDArray[np.bool_]:
    """Grass and flowers on grass blocks, seagrass on deeper sea floors; returns land plants."""
    chunk, z, x = np.nonzero(rng.random(h.shape) < 0.25)
    row = h[chunk, z, x] - _OVERWORLD.min_y
    kind = rng.random(len(row))
    land = blocks[chunk, row - 1, z, x] == _GRASS
    flower = np.where(kind < 0.06, _DANDELION, np.where(kind < 0.1, _POPPY, _SHORT_GRASS))
    blocks[chunk[land], row[land], z[land], x[land]] = flower[land]
    wet = ~land & (h[chunk, z, x] < _SEA - 2)
    blocks[chunk[wet], row[wet], z[wet], x[wet]] = _SEAGRASS
    planted = np.zeros(h.shape, dtype=bool)
    planted[chunk[land], z[land], x[land]] = True
    return planted


_LAND_BIOMES = (
    "minecraft:plains",
    "minecraft:meadow",
    "minecraft:savanna",
    "minecraft:sunflower_plains",
)
_CAVE_BIOMES = ("minecraft:dripstone_caves", "minecraft:lush_caves")


def _surface_biome(seed: int, cx: int, cz: int, mean_height: float) -> str:
    if mean_height < _SEA - 20:
        return "minecraft:deep_ocean"
    if mean_height < _SEA - 4:
        return "minecraft:ocean"
    if mean_height <= _SEA + 2:
        return "minecraft:beach"
    return _LAND_BIOMES[_mix(seed, cx >> 3, cz >> 3) % len(_LAND_BIOMES)]


@functools.cache
def _biome_palette(names: tuple[str, ...]) -> bytes:
    return _t_list("palette", _STRING, [_str(n) for n in names])


def _overworld_biomes(
    seed: int,
    coords: list[tuple[int, int]],
    h: I64,
    caves: list[set[int]],
    rng: np.random.Generator,
) -> list[list[bytes]]:
    """Surface biome everywhere; a cave biome in dense sections, bleeding into the one above."""
    means = h.reshape(len(h), -1).mean(axis=1).tolist()
    cells = _pack_rows((rng.random((len(h), 64)) < 0.4).astype(np.uint8), 1)
    result = []
    for (cx, cz), mean, dense, packed in zip(coords, means, caves, cells, strict=True):
        surface = _surface_biome(seed, cx, cz, mean)
        cave = _CAVE_BIOMES[(cx ^ cz) & 1]
        biomes = [_single_biome(surface)] * _OVERWORLD.sections
        for index in dense:
            biomes[index] = _single_biome(cave)
        mixed = [_biome_palette((surface, cave)), _t_long_array("data", packed.tobytes())]
        biomes[max(dense) + 1] = _t_compound("biomes", mixed)
        result.append(biomes)
    return result


def _overworld_batch(
    seed: int, coords: list[tuple[int, int]], h: I64, rng: np.random.Generator
) -> _Batch:
    """Chunks at ``coords`` with surface heights ``h`` (chunk, z, x)."""
    min_y = _OVERWORLD.min_y
    h = np.maximum(h, _MIN_SURFACE)
    rows = -(-(int(h.max()) + 2 - min_y) // 16) * 16  # room for plants on the highest column
    rows = max(rows, (_SEA + 2 - min_y + 15) // 16 * 16, (_CAVE_SECTIONS + 1) * 16)
    blocks = _layers(h, rows, rng)
    volume = _Volume(blocks.reshape(-1), rows, h - min_y - 6, -min_y)
    _add_features(volume, rng, h.reshape(len(h), -1).min(axis=1) - min_y)
    _deepen(blocks, rng)
    caves, encoded = _fill_caves(blocks, rng)
    planted = _add_plants(blocks, h, rng)
    motion = np.maximum(h, _SEA) - min_y
    biomes = _overworld_biomes(seed, coords, h, caves, rng)
    return _Batch(coords, blocks, motion, h - min_y, motion + planted, biomes, encoded)


# --------------------------------------------------------------------------------------------
# Nether and End: one small region each, simpler terrain


def _small_batch(blocks: U8, cx: int, cz: int, biome: str, sections: int) -> _Batch:
    blocks = blocks[None]
    tops = [_column_tops(blocks, flag) for flag in (_MOTION, _FLOOR, _NONAIR)]
    return _Batch(
        [(cx, cz)], blocks, tops[0], tops[1], tops[2], [[_single_biome(biome)] * sections]
    )


def _nether_chunk(seed: int, cx: int, cz: int) -> _Batch:
    rng = _rng(seed, _SALT_NETHER, cx, cz)
    floor = 32 + (_heights(seed ^ 0x4E, cx * 16, cz * 16, 16, 16) - 70) // 2
    ceiling = 100 + (_heights(seed ^ 0xCE, cx * 16, cz * 16, 16, 16) - 70) // 3
    ys = np.arange(256).reshape(-1, 1, 1)
    solid = (ys < floor[None]) | ((ys >= ceiling[None]) & (ys < 128))
    blocks = np.where(solid, _NETHERRACK, np.where(ys < 32, _LAVA, _AIR)).astype(np.uint8)
    blocks[0] = blocks[127] = _BEDROCK
    volume = _Volume(blocks.reshape(-1), 256, np.full((1, 16, 16), 127))
    kinds = np.array([_ID["nether_quartz_ore"], _ID["nether_gold_ore"], _SOUL_SAND])
    slot, centers = _centers(rng, np.array([12, 6, 3]), np.full(3, 8), np.full(3, 120))
    volume.stamp(
        np.zeros(len(slot), dtype=np.int64),
        centers,
        _BALLS[1],
        kinds[slot],
        _block_set(_NETHERRACK),
        rng,
    )
    return _small_batch(blocks, cx, cz, "minecraft:nether_wastes", _NETHER.sections)


def _end_chunk(seed: int, cx: int, cz: int) -> _Batch:
    xs = np.arange(cx * 16, cx * 16 + 16).reshape(1, 16)
    zs = np.arange(cz * 16, cz * 16 + 16).reshape(16, 1)
    distance = np.sqrt(xs * xs + zs * zs).astype(np.int64)
    top = 60 + (_heights(seed ^ 0xE0, cx * 16, cz * 16, 16, 16) - 70) // 4
    bottom = top - np.maximum(0, 40 - distance // 3)
    ys = np.arange(256).reshape(-1, 1, 1)
    island = (ys < top[None]) & (ys >= bottom[None])
    blocks = np.where(island, _END_STONE, _AIR).astype(np.uint8)
    return _small_batch(blocks, cx, cz, "minecraft:the_end", _THE_END.sections)


# --------------------------------------------------------------------------------------------
# Time: everything happened before the world's LastPlayed, all derived from the seed


@dataclass(frozen=True, slots=True)
class _WorldClock:
    last_played: int  # seconds since the epoch
    game_time: int  # ticks


def _world_clock(seed: int) -> _WorldClock:
    last_played = 1_704_067_200 + _mix(seed, 1) % (365 * 86_400)  # some time in 2024
    return _WorldClock(last_played, 24_000 * (20 + _mix(seed, 2) % 200) + _mix(seed, 3) % 24_000)


def _chunk_clock(seed: int, cx: int, cz: int) -> _Clock:
    world = _world_clock(seed)
    hashed = _mix(seed, cx, cz, 4)
    # Chunks near spawn were saved later and lived in longer, as in a played world.
    distance = math.isqrt(cx * cx + cz * cz)
    age = min(hashed % 48_000 + 40 * distance, world.game_time)
    inhabited = max(0, 90_000 - 1_500 * distance) + (hashed >> 20) % 1_200
    return _Clock(world.last_played - age // 20, world.game_time - age, inhabited)


# --------------------------------------------------------------------------------------------
# Regions


def _compress(raw: bytes) -> bytes:
    return zlib.compress(raw, _ZLIB_LEVEL)


def _records(
    dim: _Dimension, batch: _Batch, clocks: Sequence[_Clock], slots: Sequence[int]
) -> list[region.ChunkRecord]:
    raws = _encode_batch(dim, batch, clocks)
    return [
        region.ChunkRecord(slot, region.ZLIB, _compress(raw), clock.timestamp)
        for slot, raw, clock in zip(slots, raws, clocks, strict=True)
    ]


def _overworld_region(seed: int, rx: int, rz: int) -> list[region.ChunkRecord]:
    """All 1024 chunks of an overworld region, a row of 32 chunks per batch."""
    heights = _heights(seed, rx * 512, rz * 512, 512, 512)
    records = []
    for lz in range(32):
        coords = [(rx * 32 + lx, rz * 32 + lz) for lx in range(32)]
        h = heights[lz * 16 : lz * 16 + 16].reshape(16, 32, 16).transpose(1, 0, 2)
        batch = _overworld_batch(seed, coords, h, _rng(seed, _SALT_ROW, rx, rz, lz))
        clocks = [_chunk_clock(seed, cx, cz) for cx, cz in coords]
        records += _records(_OVERWORLD, batch, clocks, range(lz * 32, lz * 32 + 32))
    return records


def _overworld_chunk(seed: int, cx: int, cz: int, clock: _Clock) -> bytes:
    """One chunk generated alone: same terrain heights as in a region, other random details."""
    h = _heights(seed, cx * 16, cz * 16, 16, 16)[None]
    batch = _overworld_batch(seed, [(cx, cz)], h, _rng(seed, _SALT_CHUNK, cx, cz))
    return _encode_batch(_OVERWORLD, batch, [clock])[0]


_SMALL_REGION_SLOTS = tuple(z * 32 + x for z in range(4) for x in range(4))


def _dimension_region(seed: int, dim: _Dimension) -> list[region.ChunkRecord]:
    make = _nether_chunk if dim is _NETHER else _end_chunk
    records = []
    for slot in _SMALL_REGION_SLOTS:
        cx, cz = slot % 32, slot // 32
        clock = _chunk_clock(seed, cx, cz)
        records += _records(dim, make(seed, cx, cz), [clock], [slot])
    return records


@dataclass(frozen=True, slots=True)
class _RegionJob:
    folder: str
    seed: int
    rx: int
    rz: int


def _run_region_job(job: _RegionJob) -> tuple[int, int]:
    """Generate and write one full overworld region: (chunks, bytes). Runs in a worker."""
    records = _overworld_region(job.seed, job.rx, job.rz)
    data, _ = region.write_region(records)
    (Path(job.folder) / _region_name(job.rx, job.rz)).write_bytes(data)
    return len(records), len(data)


def _region_layout(count: int) -> list[tuple[int, int]]:
    """The first ``count`` regions around the origin, in a fixed order with (0, 0) first.

    Square rings around the point (0, 0), nearest first within a ring: 4, 16, 36, ...
    regions make full squares. The order never depends on ``count`` (a longer layout
    extends a shorter one), so regions can be generated before the count is known.
    """
    ring = 1
    while (2 * ring) ** 2 < count:
        ring += 1
    square = [(rx, rz) for rz in range(-ring, ring) for rx in range(-ring, ring)]
    square.sort(key=_layout_key)
    return square[:count]


def _layout_key(coords: tuple[int, int]) -> tuple[int, int, int, int, int]:
    x, z = 2 * coords[0] + 1, 2 * coords[1] + 1  # doubled distances from the origin corner
    return max(abs(x), abs(z)), x * x + z * z, abs(coords[0]) + abs(coords[1]), coords[1], coords[0]


def _region_name(rx: int, rz: int) -> str:
    return f"r.{rx}.{rz}.mca"


# --------------------------------------------------------------------------------------------
# The other files of a world (small: values of peerhost_store.nbt, easier to read than bytes)


def _gzip_nbt(tag: nbt.Compound) -> bytes:
    raw = nbt.dump(tag)
    return gzip.compress(raw, compresslevel=6, mtime=0)  # mtime=0 keeps the bytes reproducible


def _spawn(seed: int) -> tuple[int, int, int]:
    return 0, max(int(_heights(seed, 0, 0, 1, 1)[0, 0]), _SEA), 0


def _dimensions_setting() -> nbt.Compound:
    def noise(dimension: str, settings: str, source: nbt.Compound) -> nbt.Compound:
        generator: nbt.Compound = {
            "type": "minecraft:noise",
            "settings": settings,
            "biome_source": source,
        }
        return {"type": dimension, "generator": generator}

    def multi(preset: str) -> nbt.Compound:
        return {"type": "minecraft:multi_noise", "preset": preset}

    end_source: nbt.Compound = {"type": "minecraft:the_end"}
    return {
        "minecraft:overworld": noise(
            "minecraft:overworld", "minecraft:overworld", multi("minecraft:overworld")
        ),
        "minecraft:the_nether": noise(
            "minecraft:the_nether", "minecraft:nether", multi("minecraft:nether")
        ),
        "minecraft:the_end": noise("minecraft:the_end", "minecraft:end", end_source),
    }


def _level_dat(seed: int) -> bytes:
    clock = _world_clock(seed)
    x, y, z = _spawn(seed)
    version: nbt.Compound = {
        "Id": nbt.int_tag(DATA_VERSION),
        "Name": VERSION_NAME,
        "Series": "main",
        "Snapshot": nbt.byte_tag(0),
    }
    world_gen: nbt.Compound = {
        "seed": nbt.long_tag(_signed64(seed)),
        "generate_features": nbt.byte_tag(1),
        "bonus_chest": nbt.byte_tag(0),
        "dimensions": _dimensions_setting(),
    }
    game_rules: nbt.Compound = {
        "doDaylightCycle": "true",
        "keepInventory": "false",
        "doMobSpawning": "true",
    }
    data: nbt.Compound = {
        "DataVersion": nbt.int_tag(DATA_VERSION),
        "Version": version,
        "version": nbt.int_tag(19133),
        "LevelName": f"PeerHost synthetic world {seed}",
        "GameType": nbt.int_tag(0),
        "Difficulty": nbt.byte_tag(2),
        "DifficultyLocked": nbt.byte_tag(0),
        "hardcore": nbt.byte_tag(0),
        "allowCommands": nbt.byte_tag(0),
        "initialized": nbt.byte_tag(1),
        "SpawnX": nbt.int_tag(x),
        "SpawnY": nbt.int_tag(y),
        "SpawnZ": nbt.int_tag(z),
        "SpawnAngle": nbt.float_tag(0.0),
        "LastPlayed": nbt.long_tag(clock.last_played * 1000 + _mix(seed, 5) % 1000),
        "Time": nbt.long_tag(clock.game_time),
        "DayTime": nbt.long_tag(clock.game_time),
        "raining": nbt.byte_tag(0),
        "rainTime": nbt.int_tag(12_000 + _mix(seed, 6) % 100_000),
        "thundering": nbt.byte_tag(0),
        "thunderTime": nbt.int_tag(12_000 + _mix(seed, 7) % 100_000),
        "clearWeatherTime": nbt.int_tag(0),
        "WanderingTraderSpawnChance": nbt.int_tag(25),
        "WanderingTraderSpawnDelay": nbt.int_tag(24_000),
        "ServerBrands": nbt.ListTag(nbt.STRING, ["vanilla"]),
        "WasModded": nbt.byte_tag(0),
        "DataPacks": {
            "Enabled": nbt.ListTag(nbt.STRING, ["vanilla"]),
            "Disabled": nbt.ListTag(nbt.STRING),
        },
        "GameRules": game_rules,
        "WorldGenSettings": world_gen,
        "BorderCenterX": nbt.double_tag(0.0),
        "BorderCenterZ": nbt.double_tag(0.0),
        "BorderSize": nbt.double_tag(59_999_968.0),
        "BorderSafeZone": nbt.double_tag(5.0),
        "BorderWarningBlocks": nbt.double_tag(5.0),
        "BorderWarningTime": nbt.double_tag(15.0),
        "BorderDamagePerBlock": nbt.double_tag(0.2),
        "ScheduledEvents": nbt.ListTag(nbt.COMPOUND),
        "CustomBossEvents": {},
    }
    return _gzip_nbt({"Data": data})


def _player_uuid(seed: int) -> tuple[str, list[int]]:
    """A version-4 UUID derived from the seed, as a file name and as vanilla's 4-int array."""
    value = (_mix(seed, 8) << 64 | _mix(seed, 9)) & ~(0xF << 76) & ~(0x3 << 62)
    value |= 0x4 << 76 | 0x2 << 62
    text = f"{value:032x}"
    name = f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
    ints = [_signed32(value >> shift) for shift in (96, 64, 32, 0)]
    return name, ints


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


def _long_array(values: npt.NDArray[np.int64]) -> nbt.Leaf:
    return nbt.LONG_ARRAY, values.astype(">i8").tobytes()


def _longs(leaf: nbt.Value) -> bytes:
    """The big-endian payload of a Long_Array tag."""
    if not (isinstance(leaf, tuple) and leaf[0] == nbt.LONG_ARRAY):
        raise nbt.NbtError("expected a Long_Array tag")
    return leaf[1]


def _doubles(*values: float) -> nbt.ListTag:
    return nbt.ListTag(nbt.DOUBLE, [nbt.double_tag(v) for v in values])


def _floats(*values: float) -> nbt.ListTag:
    return nbt.ListTag(nbt.FLOAT, [nbt.float_tag(v) for v in values])


def _item(slot: int, item: str, count: int) -> nbt.Compound:
    return {"Slot": nbt.byte_tag(slot), "id": item, "count": nbt.int_tag(count)}


def _player(seed: int) -> bytes:
    x, y, z = _spawn(seed)
    _, uuid_ints = _player_uuid(seed)
    abilities: nbt.Compound = {
        "flying": nbt.byte_tag(0),
        "flySpeed": nbt.float_tag(0.05),
        "instabuild": nbt.byte_tag(0),
        "invulnerable": nbt.byte_tag(0),
        "mayBuild": nbt.byte_tag(1),
        "mayfly": nbt.byte_tag(0),
        "walkSpeed": nbt.float_tag(0.1),
    }
    inventory = [
        _item(0, "minecraft:stone_pickaxe", 1),
        _item(1, "minecraft:torch", 23),
        _item(2, "minecraft:cobblestone", 64),
        _item(3, "minecraft:oak_planks", 37),
        _item(4, "minecraft:bread", 9),
    ]
    player: nbt.Compound = {
        "DataVersion": nbt.int_tag(DATA_VERSION),
        "Pos": _doubles(x + 0.5, float(y), z + 0.5),
        "Motion": _doubles(0.0, -0.0784000015258789, 0.0),
        "Rotation": _floats(float(_mix(seed, 10) % 360) - 180.0, 12.5),
        "UUID": nbt.int_array(uuid_ints),
        "Dimension": "minecraft:overworld",
        "Health": nbt.float_tag(20.0),
        "foodLevel": nbt.int_tag(20),
        "foodSaturationLevel": nbt.float_tag(5.0),
        "foodExhaustionLevel": nbt.float_tag(0.0),
        "XpLevel": nbt.int_tag(int(_mix(seed, 11) % 30)),
        "XpP": nbt.float_tag(0.25),
        "XpTotal": nbt.int_tag(int(_mix(seed, 11) % 30) * 17),
        "Score": nbt.int_tag(0),
        "playerGameType": nbt.int_tag(0),
        "SelectedItemSlot": nbt.int_tag(0),
        "OnGround": nbt.byte_tag(1),
        "FallDistance": nbt.float_tag(0.0),
        "Air": nbt.short_tag(300),
        "Fire": nbt.short_tag(-20),
        "Invulnerable": nbt.byte_tag(0),
        "PortalCooldown": nbt.int_tag(0),
        "Inventory": nbt.ListTag(nbt.COMPOUND, inventory),
        "EnderItems": nbt.ListTag(nbt.COMPOUND),
        "abilities": abilities,
    }
    return _gzip_nbt(player)


def _raids(seed: int) -> bytes:
    data: nbt.Compound = {
        "Raids": nbt.ListTag(nbt.COMPOUND),
        "NextAvailableID": nbt.int_tag(1),
        "Tick": nbt.int_tag(_world_clock(seed).game_time),
    }
    return _gzip_nbt({"data": data, "DataVersion": nbt.int_tag(DATA_VERSION)})


_MOBS = ("minecraft:sheep", "minecraft:cow", "minecraft:pig", "minecraft:chicken")


def _entity(rng: np.random.Generator, cx: int, cz: int, heights: I64) -> nbt.Compound:
    lx, lz = (int(v) for v in rng.integers(0, 16, size=2))
    uuid = [_signed32(int(v)) for v in rng.integers(0, 1 << 32, size=4)]
    return {
        "id": _MOBS[int(rng.integers(0, len(_MOBS)))],
        "Pos": _doubles(
            cx * 16 + lx + 0.5, float(max(int(heights[lz, lx]), _SEA)), cz * 16 + lz + 0.5
        ),
        "Motion": _doubles(0.0, -0.0784000015258789, 0.0),
        "Rotation": _floats(float(rng.integers(0, 360)) - 180.0, 0.0),
        "UUID": nbt.int_array(uuid),
        "Health": nbt.float_tag(10.0),
        "Air": nbt.short_tag(300),
        "Fire": nbt.short_tag(-1),
        "FallDistance": nbt.float_tag(0.0),
        "OnGround": nbt.byte_tag(1),
        "Invulnerable": nbt.byte_tag(0),
        "PortalCooldown": nbt.int_tag(0),
        "PersistenceRequired": nbt.byte_tag(0),
        "Age": nbt.int_tag(0),
    }


def _entities_chunk(seed: int, cx: int, cz: int) -> bytes:
    rng = _rng(seed, _SALT_ENTITIES, cx, cz)
    heights = _heights(seed, cx * 16, cz * 16, 16, 16)
    entities = [_entity(rng, cx, cz, heights) for _ in range(int(rng.integers(1, 5)))]
    root: nbt.Compound = {
        "DataVersion": nbt.int_tag(DATA_VERSION),
        "Position": nbt.int_array([cx, cz]),
        "Entities": nbt.ListTag(nbt.COMPOUND, entities),
    }
    return nbt.dump(root)


def _poi_chunk(seed: int, cx: int, cz: int) -> bytes:
    section = _heights(seed, cx * 16, cz * 16, 1, 1)[0, 0] // 16
    sections: nbt.Compound = {
        str(int(section)): {"Valid": nbt.byte_tag(1), "Records": nbt.ListTag(nbt.COMPOUND)}
    }
    root: nbt.Compound = {"DataVersion": nbt.int_tag(DATA_VERSION), "Sections": sections}
    return nbt.dump(root)


def _extras_region(
    seed: int, rx: int, rz: int, count: int, make: Callable[[int, int, int], bytes]
) -> bytes:
    rng = _rng(seed, _SALT_EXTRA_SLOTS, rx, rz, count)
    records = []
    for slot in sorted(int(s) for s in rng.choice(region.SLOTS, size=count, replace=False)):
        cx, cz = region.chunk_coords(rx, rz, slot)
        timestamp = _chunk_clock(seed, cx, cz).timestamp
        records.append(
            region.ChunkRecord(slot, region.ZLIB, _compress(make(seed, cx, cz)), timestamp)
        )
    return region.write_region(records)[0]


# --------------------------------------------------------------------------------------------
# synthesize_world


def synthesize_world(
    path: Path,
    *,
    seed: int = 0,
    regions: int | None = None,
    target_bytes: int | None = None,
    dimensions: bool = True,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> WorldInfo:
    """Write a synthetic Minecraft 1.21.1 world into ``path``.

    Overworld regions are full (1024 chunks each), starting with ``r.0.0.mca`` and filling
    square rings around the origin (4, 16, 36, ... regions make full squares). Besides them:
    ``level.dat``, ``session.lock``, one player, ``data/raids.dat``, an empty
    ``datapacks/``, entity and POI region files (a few chunks each) for the first regions,
    and one 16-chunk region per other dimension. The bytes depend only on ``seed`` and the
    sizing arguments, never on ``workers``; about 11.5 MB per region.

    Args:
        path: the world folder; created if missing, and must be empty if it exists.
        seed: the world seed (any int; stored as a signed 64-bit long).
        regions: number of full overworld regions. Defaults to 1 when ``target_bytes``
            is not given either.
        target_bytes: instead of ``regions``, aim for about this total size: the count
            follows from the size of region (0, 0) and of the small files.
        dimensions: also write one small region in ``DIM-1/region`` and ``DIM1/region``.
        workers: processes generating regions; defaults to the CPU count, 1 stays in-process.
            Memory stays bounded: each region is written out as soon as it is made.
        progress: called with (regions done, regions in total) after each overworld region.

    Returns:
        The counts of what was written.

    Raises:
        SynthError: both ``regions`` and ``target_bytes`` given, a count below 1, or a
            non-empty ``path``.
    """
    if regions is not None and target_bytes is not None:
        raise SynthError("give regions or target_bytes, not both")
    if (regions is not None and regions < 1) or (target_bytes is not None and target_bytes < 1):
        raise SynthError("regions and target_bytes must be positive")
    path.mkdir(parents=True, exist_ok=True)
    if any(path.iterdir()):
        raise SynthError(f"{path} is not empty; synthesize_world only writes into an empty folder")
    seed, workers = _u64(seed), max(1, workers or os.cpu_count() or 1)
    if target_bytes is None:
        regions = regions or 1
    (path / "region").mkdir()
    (path / "datapacks").mkdir()
    with _executor(workers) as pool:
        # Sized by bytes, the first `workers` regions start before the count is known: only
        # the size of region (0, 0) decides it, and extra ones are deleted (tiny worlds only).
        started = regions or workers
        jobs = [_submit_region(pool, path, seed, c) for c in _region_layout(started)]
        written = _write_files(path, _small_files(seed, dimensions))
        if regions is None:
            regions = _count_regions(target_bytes or 0, written, jobs[0].result()[1])
            jobs += [_submit_region(pool, path, seed, c) for c in _region_layout(regions)[started:]]
        done = _wait(jobs[:regions], progress)
        _remove_surplus(path, jobs[regions:], _region_layout(started)[regions:])
    written += _write_files(path, _entity_files(seed, _region_layout(regions)[:_ENTITY_REGIONS]))
    extra = 2 if dimensions else 0
    return WorldInfo(
        regions=regions + extra,
        chunks=sum(chunks for chunks, _ in done) + extra * len(_SMALL_REGION_SLOTS),
        bytes=written + sum(size for _, size in done),
    )


_ENTITY_REGIONS = 4  # regions that get a few entity and POI chunks


def _count_regions(target_bytes: int, other_bytes: int, region_bytes: int) -> int:
    return max(1, round((target_bytes - other_bytes) / region_bytes))


_P = ParamSpec("_P")
_T = TypeVar("_T")


class _InlineExecutor(Executor):
    """Runs each job when it is submitted: ``workers=1`` without processes."""

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


@contextlib.contextmanager
def _executor(workers: int) -> Iterator[Executor]:
    # The platform's default start method, as for any ProcessPoolExecutor: fork on Linux up
    # to Python 3.13 (no re-import of the caller's script); spawn elsewhere, where callers
    # need the usual ``if __name__ == "__main__":`` guard.
    pool = _InlineExecutor() if workers == 1 else ProcessPoolExecutor(max_workers=workers)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # not a minute more of queued regions
        raise
    pool.shutdown(wait=True)


def _submit_region(
    pool: Executor, path: Path, seed: int, coords: tuple[int, int]
) -> Future[tuple[int, int]]:
    return pool.submit(_run_region_job, _RegionJob(str(path / "region"), seed, *coords))


def _wait(
    jobs: list[Future[tuple[int, int]]], progress: Callable[[int, int], None] | None
) -> list[tuple[int, int]]:
    """Each job's (chunks, bytes), in order, reporting progress as they finish."""
    results = []
    for job in jobs:
        results.append(job.result())
        if progress is not None:
            progress(len(results), len(jobs))
    return results


def _remove_surplus(
    path: Path, jobs: list[Future[tuple[int, int]]], coords: list[tuple[int, int]]
) -> None:
    for job, (rx, rz) in zip(jobs, coords, strict=True):
        job.result()
        (path / "region" / _region_name(rx, rz)).unlink()


def _small_files(seed: int, dimensions: bool) -> dict[str, bytes]:
    """level.dat, the player, raids and session lock, and the other dimensions' regions."""
    uuid, _ = _player_uuid(seed)
    files = {
        "level.dat": _level_dat(seed),
        "session.lock": _SESSION_LOCK,
        f"playerdata/{uuid}.dat": _player(seed),
        "data/raids.dat": _raids(seed),
    }
    if dimensions:
        for dim in (_NETHER, _THE_END):
            records = _dimension_region(seed, dim)
            files[f"{dim.folder}/region/r.0.0.mca"] = region.write_region(records)[0]
    return files


def _entity_files(seed: int, coords: Iterable[tuple[int, int]]) -> dict[str, bytes]:
    files = {}
    for rx, rz in coords:
        name = _region_name(rx, rz)
        files[f"entities/{name}"] = _extras_region(seed, rx, rz, 8, _entities_chunk)
        files[f"poi/{name}"] = _extras_region(seed, rx, rz, 4, _poi_chunk)
    return files


def _write_files(path: Path, files: dict[str, bytes]) -> int:
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return sum(len(data) for data in files.values())


# --------------------------------------------------------------------------------------------
# play_session

_BUILD_BLOCKS = (
    "minecraft:cobblestone",
    "minecraft:oak_planks",
    "minecraft:stone_bricks",
    "minecraft:bricks",
)
_EDIT, _RESAVE, _NEW = "edit", "resave", "new"


@dataclass(frozen=True, slots=True)
class _Session:
    seed: int
    world_seed: int
    start: int  # seconds since the epoch
    game_time: int  # ticks when the session started
    length: int  # ticks


def play_session(
    path: Path,
    *,
    seed: int,
    edit_chunks: int = 20,
    resave_chunks: int = 200,
    new_chunks: int = 0,
    near_spawn: int | None = None,
) -> SessionInfo:
    """Mutate a synthesized world in place the way a play session would.

    The session starts some hours after the world's ``LastPlayed`` and lasts 10 to 60
    minutes of game time. Chunks are picked uniformly over all overworld regions:

    * ``edit_chunks`` get a few blocks just under the surface replaced by building blocks
      (new palette entries and data), and new ``LastUpdate``/``InhabitedTime``;
    * ``resave_chunks`` others are decoded and re-encoded with nothing changed but
      ``LastUpdate`` and ``InhabitedTime`` (their NBT bytes differ in those 16 bytes only);
    * ``new_chunks`` are generated into empty slots, or into new regions next to the world.

    Touched slots get new header timestamps; each touched region is rewritten through a
    temporary file and :func:`os.replace`. ``level.dat`` (``LastPlayed``, ``Time``,
    ``DayTime``) and one player file are updated too. The result depends only on the
    world's bytes and ``seed``.

    Args:
        path: a world folder written by :func:`synthesize_world`.
        seed: chooses the chunks and the edits.
        edit_chunks: chunks whose blocks change.
        resave_chunks: chunks only re-saved.
        new_chunks: chunks generated into empty slots.
        near_spawn: pick edited and re-saved chunks only in this many overworld regions
            nearest region (0, 0), where players spend a session; None picks over the world.

    Returns:
        The (region file, slot) pairs edited, re-saved and added.

    Raises:
        SynthError: negative counts, more chunks asked for than the world has, a region file
            with problems (rewriting it could lose chunks), or a chunk that is not a 1.18+
            full chunk. Regions already rewritten by then stay rewritten.
    """
    if min(edit_chunks, resave_chunks, new_chunks) < 0:
        raise SynthError("chunk counts must not be negative")
    level = _read_gzip_nbt(path / "level.dat")
    rng = _rng(seed, _SALT_SESSION)
    session = _start_session(level, seed, rng)
    region_dir = path / "region"
    occupancy = _occupancy(region_dir)
    nearby = occupancy
    if near_spawn is not None:
        keys = sorted(occupancy, key=lambda k: (k[0] ** 2 + k[1] ** 2, k))[:near_spawn]
        nearby = {k: occupancy[k] for k in keys}
    edited, resaved = _pick_existing(nearby, edit_chunks, resave_chunks, rng)
    added = _pick_new(occupancy, new_chunks, rng)
    plan: dict[tuple[int, int], dict[int, str]] = {}
    for kind, picked in ((_EDIT, edited), (_RESAVE, resaved), (_NEW, added)):
        for rx, rz, slot in picked:
            plan.setdefault((rx, rz), {})[slot] = kind
    for (rx, rz), kinds in sorted(plan.items()):
        _replay_region(region_dir, rx, rz, kinds, session)
    _move_player(path, session.world_seed, rng)
    _bump_level(path / "level.dat", level, session, rng)
    return SessionInfo(_refs(edited), _refs(resaved), _refs(added))


def _start_session(level: nbt.NamedTag, seed: int, rng: np.random.Generator) -> _Session:
    """Some hours after the world was last played, for 10 to 60 minutes of game time."""
    try:
        data = nbt.as_compound(level.root["Data"])
        world_seed = nbt.as_int(nbt.as_compound(data["WorldGenSettings"])["seed"])
        last_played, game_time = nbt.as_int(data["LastPlayed"]), nbt.as_int(data["Time"])
    except (KeyError, nbt.NbtError) as exc:
        raise SynthError(f"level.dat lacks what a 1.16+ world has: {exc!r}") from exc
    return _Session(
        seed=_u64(seed),
        world_seed=_u64(world_seed),
        start=last_played // 1000 + int(rng.integers(3_600, 3 * 86_400)),
        game_time=game_time,
        length=int(rng.integers(12_000, 72_000)),
    )


def _refs(picked: Iterable[tuple[int, int, int]]) -> tuple[ChunkRef, ...]:
    return tuple(
        sorted(ChunkRef(f"region/{_region_name(rx, rz)}", slot) for rx, rz, slot in picked)
    )


def _read_gzip_nbt(path: Path) -> nbt.NamedTag:
    try:
        return nbt.load(gzip.decompress(path.read_bytes()))
    except (OSError, EOFError, nbt.NbtError) as exc:
        raise SynthError(f"{path}: not readable gzip NBT: {exc}") from exc


def _atomic_write(path: Path, data: bytes) -> None:
    # Readers (a snapshot running concurrently) see the old file or the new one, never half.
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _occupancy(region_dir: Path) -> dict[tuple[int, int], frozenset[int]]:
    """Occupied slots of every region file, from the location table alone."""
    occupancy: dict[tuple[int, int], frozenset[int]] = {}
    for entry in sorted(region_dir.iterdir()) if region_dir.is_dir() else []:
        coords = region.region_coords(entry.name)
        if coords is None:
            continue
        with entry.open("rb") as file:
            header = file.read(4 * region.SLOTS)
        used: frozenset[int] = frozenset()
        if len(header) == 4 * region.SLOTS:
            locations = struct.unpack(f">{region.SLOTS}I", header)
            used = frozenset(slot for slot, location in enumerate(locations) if location)
        occupancy[coords] = used
    return occupancy


def _pick_existing(
    occupancy: dict[tuple[int, int], frozenset[int]],
    edits: int,
    resaves: int,
    rng: np.random.Generator,
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Distinct chunks drawn uniformly from the whole world: (to edit, to re-save)."""
    candidates = [
        (rx, rz, slot) for (rx, rz), slots in sorted(occupancy.items()) for slot in sorted(slots)
    ]
    if edits + resaves > len(candidates):
        raise SynthError(
            f"the world has {len(candidates)} chunks; {edits + resaves} were asked for"
        )
    picked = [
        candidates[int(i)] for i in rng.choice(len(candidates), size=edits + resaves, replace=False)
    ]
    return picked[:edits], picked[edits:]


def _pick_new(
    occupancy: dict[tuple[int, int], frozenset[int]], count: int, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """Empty slots of existing regions first, then whole new regions beside the world."""
    empty = [
        (rx, rz, slot)
        for (rx, rz), slots in sorted(occupancy.items())
        for slot in range(region.SLOTS)
        if slot not in slots
    ]
    if count <= len(empty):
        return [empty[int(i)] for i in sorted(rng.choice(len(empty), size=count, replace=False))]
    picked, missing = empty, count - len(empty)
    fresh_needed = -(-missing // region.SLOTS)
    size = len(occupancy) + fresh_needed
    while len(fresh := [c for c in _region_layout(size) if c not in occupancy]) < fresh_needed:
        size *= 2
    for rx, rz in fresh[:fresh_needed]:
        take = min(missing, region.SLOTS)
        picked += [(rx, rz, slot) for slot in range(take)]
        missing -= take
    return picked


def _replay_region(
    region_dir: Path, rx: int, rz: int, kinds: dict[int, str], session: _Session
) -> None:
    """Apply one region's share of the session and rewrite the file."""
    path = region_dir / _region_name(rx, rz)
    data = path.read_bytes() if path.exists() else b""
    parsed = region.parse_region(data, lambda slot: _read_external(region_dir, rx, rz, slot))
    if parsed.problems:
        raise SynthError(f"{path}: {parsed.problems[0]}; not rewriting it")
    records = {record.slot: record for record in parsed.chunks}
    for slot, kind in sorted(kinds.items()):
        cx, cz = region.chunk_coords(rx, rz, slot)
        rng = _rng(session.seed, _SALT_EDIT, cx, cz)
        offset = int(rng.integers(1, session.length))  # when in the session the chunk was saved
        timestamp, last_update = session.start + offset // 20, session.game_time + offset
        if kind == _NEW:
            clock = _Clock(timestamp, last_update, int(rng.integers(0, offset + 1)))
            raw = _overworld_chunk(session.world_seed, cx, cz, clock)
        else:
            try:
                raw = _resave(records[slot], kind == _EDIT, last_update, rng)
            except (KeyError, IndexError, zlib.error, nbt.NbtError) as exc:
                # Not a 1.18+ full chunk (an old or proto chunk of a copied real world).
                raise SynthError(f"{path}: cannot re-save chunk slot {slot}: {exc!r}") from exc
        records[slot] = region.ChunkRecord(slot, region.ZLIB, _compress(raw), timestamp)
    # Untouched external chunks keep their .mcc files, which write_region leaves alone.
    blob, _ = region.write_region(records.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, blob)


def _read_external(region_dir: Path, rx: int, rz: int, slot: int) -> bytes | None:
    external = region_dir / region.external_name(rx, rz, slot)
    return external.read_bytes() if external.exists() else None


def _decompress(record: region.ChunkRecord) -> bytes:
    if record.compression in (region.ZLIB, region.GZIP):
        return zlib.decompress(record.payload, zlib.MAX_WBITS | 32)  # either header
    if record.compression == region.NONE:
        return bytes(record.payload)
    raise SynthError(f"chunk slot {record.slot}: compression {record.compression} is not supported")


def _resave(
    record: region.ChunkRecord, edit: bool, last_update: int, rng: np.random.Generator
) -> bytes:
    """The chunk's NBT re-encoded, optionally edited, with new LastUpdate and InhabitedTime.

    :func:`nbt.load` keeps key order, list item types and the bits of every number, so what is
    not changed re-encodes to the same bytes.
    """
    named = nbt.load(_decompress(record))
    chunk = named.root
    if edit:
        _edit_blocks(chunk, rng)
    previous_update = nbt.as_int(chunk["LastUpdate"])
    inhabited = nbt.as_int(chunk["InhabitedTime"])
    gained = int(rng.integers(1_200, 12_000)) if edit else int(rng.integers(1, 400))
    chunk["LastUpdate"] = nbt.long_tag(max(last_update, previous_update + 1))
    chunk["InhabitedTime"] = nbt.long_tag(inhabited + gained)
    return nbt.dump(chunk, named.name)


def _edit_blocks(chunk: nbt.Compound, rng: np.random.Generator) -> None:
    """Replace a few blocks at and just under the sea floor / ground by one building block.

    Solid for solid, so heightmaps and light stay right; the building blocks never occur in
    generated terrain, so the content always changes. Columns topped by a plant are left
    alone: it would stand on a block it cannot grow on.
    """
    min_y = nbt.as_int(chunk["yPos"]) * 16
    heightmaps = nbt.as_compound(chunk["Heightmaps"])
    floor, motion, surface = (
        unpack_indices(_longs(heightmaps[key]), 9, 256)
        for key in ("OCEAN_FLOOR", "MOTION_BLOCKING", "WORLD_SURFACE")
    )
    columns = rng.choice(256, size=int(rng.integers(4, 25)), replace=False)
    columns = columns[(floor[columns] > 3) & (surface[columns] == motion[columns])]
    if not len(columns):
        columns = np.array([int(np.argmax(floor))])
    ys = floor[columns] - 1 - rng.integers(0, 3, size=len(columns)) + min_y
    name = _BUILD_BLOCKS[int(rng.integers(0, len(_BUILD_BLOCKS)))]
    sections = [nbt.as_compound(section) for section in nbt.as_list(chunk["sections"])]
    by_y = {nbt.as_int(section["Y"]): i for i, section in enumerate(sections)}
    for section_y in sorted(set((ys >> 4).tolist())):
        here = (ys >> 4) == section_y
        positions = (ys[here] & 15) * 256 + columns[here]  # heightmap index is z * 16 + x
        _set_blocks(sections[by_y[section_y]], positions, name)


def _set_blocks(section: nbt.Compound, positions: I64, name: str) -> None:
    """Set ``positions`` of a section to the block ``name``, compacting the palette."""
    states = nbt.as_compound(section["block_states"])
    entries = [nbt.as_compound(entry) for entry in nbt.as_list(states["palette"])]
    if "data" in states:
        packed = _longs(states["data"])
        indices = unpack_indices(packed, _block_bits(len(entries)), 4096)
    else:
        indices = np.zeros(4096, dtype=np.int64)
    names = [nbt.as_str(e["Name"]) if "Properties" not in e else "" for e in entries]
    if name not in names:
        entries.append({"Name": name})
        names.append(name)
    indices[positions] = names.index(name)
    used = np.unique(indices)  # the game drops unused palette entries when it saves, too
    remap = np.zeros(len(entries), dtype=np.int64)
    remap[used] = np.arange(len(used))
    new_states: nbt.Compound = {
        "palette": nbt.ListTag(nbt.COMPOUND, [entries[int(i)] for i in used])
    }
    if len(used) > 1:
        longs = np.frombuffer(pack_indices(remap[indices], _block_bits(len(used))), dtype=">i8")
        new_states["data"] = _long_array(longs)
    section["block_states"] = new_states


def _move_player(path: Path, world_seed: int, rng: np.random.Generator) -> None:
    """The first player walks up to 200 blocks and ends the session on the ground."""
    players = sorted((path / "playerdata").glob("*.dat"))
    if not players:
        return
    player = _read_gzip_nbt(players[0])
    position = nbt.as_list(player.root["Pos"])
    x, z = (int(nbt.as_float(position[i])) + int(rng.integers(-200, 201)) for i in (0, 2))
    ground = max(int(_heights(world_seed, x, z, 1, 1)[0, 0]), _MIN_SURFACE, _SEA)
    player.root["Pos"] = _doubles(x + 0.5, float(ground), z + 0.5)
    _atomic_write(players[0], _gzip_nbt(player.root))


def _bump_level(
    path: Path, level: nbt.NamedTag, session: _Session, rng: np.random.Generator
) -> None:
    data = nbt.as_compound(level.root["Data"])
    end = session.start + session.length // 20
    data["LastPlayed"] = nbt.long_tag(end * 1000 + int(rng.integers(0, 1000)))
    data["Time"] = nbt.long_tag(session.game_time + session.length)
    data["DayTime"] = nbt.long_tag(nbt.as_int(data["DayTime"]) + session.length)
    _atomic_write(path, _gzip_nbt(level.root))
