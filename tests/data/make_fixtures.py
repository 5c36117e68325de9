"""Write the crafted region fixtures beside this script (see README.md for what each one is).

Run ``.venv/bin/python tests/data/make_fixtures.py`` after changing it and commit the outputs.
The output is deterministic for a given zlib and lz4 build: fixed timestamps, fixed NBT, no
randomness (the "garbage" is a fixed byte pattern).
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

from peerhost_store import nbt
from peerhost_store.chunk import compress
from peerhost_store.region import (
    CUSTOM,
    GZIP,
    LZ4,
    NONE,
    SECTOR,
    ZLIB,
    ChunkRecord,
    chunk_coords,
    external_name,
    write_region,
)

HERE = Path(__file__).resolve().parent
T0 = 1_700_000_000
DEEP = 200_000
BOMB_BYTES = 64 * 1024 * 1024 + 1024  # just past chunk.MAX_NBT_BYTES
GARBAGE = bytes((i * 131 + 7) & 0xFF for i in range(SECTOR))


def chunk_nbt(cx: int, cz: int, filler: int = 0) -> bytes:
    """A small 1.18+-style chunk; ``filler`` adds a long byte array (to make LZ4 use blocks)."""
    section: nbt.Compound = {
        "Y": nbt.byte_tag(0),
        "block_states": {"palette": nbt.ListTag(nbt.COMPOUND, [{"Name": "minecraft:stone"}])},
    }
    root: nbt.Compound = {
        "DataVersion": nbt.int_tag(3337),
        "xPos": nbt.int_tag(cx),
        "zPos": nbt.int_tag(cz),
        "yPos": nbt.int_tag(-4),
        "Status": "minecraft:full",
        "LastUpdate": nbt.long_tag(1000 + cx),
        "InhabitedTime": nbt.long_tag(20 * cz),
        "sections": nbt.ListTag(nbt.COMPOUND, [section]),
    }
    if filler:
        root["filler"] = (nbt.BYTE_ARRAY, bytes(i % 7 for i in range(filler)))
    return nbt.dump(root)


def record(slot: int, compression: int, *, external: bool = False, filler: int = 0) -> ChunkRecord:
    cx, cz = chunk_coords(0, 0, slot)
    payload = compress(compression, chunk_nbt(cx, cz, filler))
    return ChunkRecord(slot, compression, payload, T0 + slot, external)


def region(*records: ChunkRecord) -> bytearray:
    data, externals = write_region(records)
    assert not externals
    return bytearray(data)


def set_location(data: bytearray, slot: int, sector: int, count: int) -> None:
    struct.pack_into(">I", data, 4 * slot, sector << 8 | count)


def location(data: bytearray, slot: int) -> tuple[int, int]:
    (value,) = struct.unpack_from(">I", data, 4 * slot)
    return value >> 8, value & 0xFF


def deep_nbt(depth: int) -> bytes:
    """A root compound holding ``depth - 1`` nested unnamed compounds."""
    return b"\x0a\x00\x00" * depth + b"\x00" * depth


def bomb_payload() -> bytes:
    """zlib NBT whose one byte array holds BOMB_BYTES zeros, compressed piece by piece."""
    head = b"\x0a\x00\x00\x07\x00\x04bomb" + struct.pack(">i", BOMB_BYTES)
    deflater = zlib.compressobj(9)
    out = [deflater.compress(head)]
    piece = bytes(1 << 20)
    out += [deflater.compress(piece[: BOMB_BYTES - start])
            for start in range(0, BOMB_BYTES, len(piece))]
    out.append(deflater.compress(b"\x00"))  # End of the root compound
    out.append(deflater.flush())
    return b"".join(out)


# --- valid files ------------------------------------------------------------------------------


def make_gzip() -> bytes:
    return bytes(region(record(0, GZIP), record(1, GZIP), record(33, GZIP)))


def make_uncompressed() -> bytes:
    return bytes(region(record(0, NONE), record(5, NONE), record(1023, NONE)))


def make_lz4() -> bytes:
    # slot 64 inflates to more than one 64 KiB LZ4 block
    return bytes(region(record(0, LZ4), record(2, LZ4), record(64, LZ4, filler=100_000)))


def make_mixed() -> bytes:
    name = b"example:zstd"
    custom = ChunkRecord(
        4, CUSTOM, struct.pack(">H", len(name)) + name + b"\x28\xb5\x2f\xfd", T0 + 4
    )
    kinds = (GZIP, ZLIB, NONE, LZ4)
    return bytes(region(*(record(slot, kind) for slot, kind in enumerate(kinds)), custom))


def make_external(out: Path) -> None:
    data, externals = write_region([record(0, ZLIB), record(33, ZLIB, external=True, filler=3000)])
    folder = out / "external"
    folder.mkdir(exist_ok=True)
    (folder / "r.0.0.mca").write_bytes(data)
    for slot, payload in externals.items():
        (folder / external_name(0, 0, slot)).write_bytes(payload)


def make_unpadded() -> bytes:
    data = region(record(0, ZLIB), record(1, ZLIB))
    sector, _ = location(data, 1)
    (length,) = struct.unpack_from(">I", data, sector * SECTOR)
    return bytes(data[: sector * SECTOR + 4 + length])  # the last sector stops at the chunk's end


def make_header_only() -> bytes:
    data = bytearray(2 * SECTOR)
    for slot in (0, 7, 1023):  # stale timestamps of empty slots, as real files have
        struct.pack_into(">I", data, SECTOR + 4 * slot, T0 + slot)
    return bytes(data)


def make_stale_free_sectors() -> bytes:
    data = region(record(0, ZLIB), record(1, ZLIB))
    sector, count = location(data, 1)
    # Move slot 1 one sector on, leaving a garbage sector between the chunks and one after them.
    at = sector * SECTOR
    data[at:at] = GARBAGE
    set_location(data, 1, sector + 1, count)
    return bytes(data + GARBAGE)


# --- broken files: each keeps slot 0 good, so "what parses is kept" can be checked -------------


def make_truncated_header() -> bytes:
    return make_mixed()[:5000]


def make_offset_past_end() -> bytes:
    data = region(record(0, ZLIB), record(1, ZLIB))
    set_location(data, 1, 300, 1)
    return bytes(data)


def make_overlapping() -> bytes:
    data = region(record(0, ZLIB), record(1, ZLIB), record(2, ZLIB))
    set_location(data, 2, *location(data, 1))  # slots 1 and 2 share their sectors
    return bytes(data)


def make_zero_length() -> bytes:
    data = region(record(0, ZLIB), record(1, ZLIB))
    struct.pack_into(">I", data, location(data, 1)[0] * SECTOR, 0)
    return bytes(data)


def make_oversized_length() -> bytes:
    data = region(record(0, ZLIB), record(1, ZLIB), record(2, ZLIB))
    sector1, count1 = location(data, 1)
    struct.pack_into(">I", data, sector1 * SECTOR, count1 * SECTOR)  # more than its sectors hold
    # slot 2, the last chunk, claims 2 sectors and 5000 bytes, but the file ends after 1 sector
    sector2, _ = location(data, 2)
    set_location(data, 2, sector2, 2)
    struct.pack_into(">I", data, sector2 * SECTOR, 5000)
    return bytes(data)


def make_unknown_compression() -> bytes:
    data = region(record(0, ZLIB), record(1, ZLIB))
    data[location(data, 1)[0] * SECTOR + 4] = 5
    return bytes(data)


def make_missing_mcc(out: Path) -> None:
    data, externals = write_region([record(0, ZLIB), record(33, ZLIB, external=True)])
    assert list(externals) == [33]  # and the .mcc is deliberately not written
    folder = out / "missing-mcc"
    folder.mkdir(exist_ok=True)
    (folder / "r.0.0.mca").write_bytes(data)


def make_bad_zlib() -> bytes:
    garbage = ChunkRecord(1, ZLIB, GARBAGE[:300], T0 + 1)
    return bytes(region(record(0, ZLIB), garbage))


def make_deep_nbt() -> bytes:
    deep = ChunkRecord(1, ZLIB, zlib.compress(deep_nbt(DEEP), 9), T0 + 1)
    return bytes(region(record(0, ZLIB), deep))


def make_zlib_bomb() -> bytes:
    return bytes(region(record(0, ZLIB), ChunkRecord(1, ZLIB, bomb_payload(), T0 + 1)))


SIMPLE: dict[str, Callable[[], bytes]] = {
    "gzip.mca": make_gzip,
    "uncompressed.mca": make_uncompressed,
    "lz4.mca": make_lz4,
    "mixed.mca": make_mixed,
    "unpadded.mca": make_unpadded,
    "header-only.mca": make_header_only,
    "empty.mca": lambda: b"",
    "stale-free-sectors.mca": make_stale_free_sectors,
    "truncated-header.mca": make_truncated_header,
    "offset-past-end.mca": make_offset_past_end,
    "overlapping.mca": make_overlapping,
    "zero-length.mca": make_zero_length,
    "oversized-length.mca": make_oversized_length,
    "unknown-compression.mca": make_unknown_compression,
    "bad-zlib.mca": make_bad_zlib,
    "deep-nbt.mca": make_deep_nbt,
    "zlib-bomb.mca": make_zlib_bomb,
}


def main(out: Path = HERE) -> None:
    for name, make in SIMPLE.items():
        (out / name).write_bytes(make())
    make_external(out)
    make_missing_mcc(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
