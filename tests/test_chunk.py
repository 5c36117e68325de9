from __future__ import annotations

import contextlib
import functools
import gzip
import random
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import lz4.block
import pytest
import xxhash
from hypothesis import example, given
from hypothesis import strategies as st
from nbt_helpers import SAMPLE, deep_compounds, every_tag, named

from peerhost_store import nbt
from peerhost_store.chunk import (
    MAX_NBT_BYTES,
    VOLATILE_KEYS,
    ChunkDecodeError,
    classify_change,
    compress,
    decompress,
    load_nbt,
)
from peerhost_store.errors import PeerhostError
from peerhost_store.region import CUSTOM, GZIP, LZ4, NONE, ZLIB, chunk_coords, parse_region

CODECS = [GZIP, ZLIB, NONE, LZ4]
MIB = 1 << 20
GIB = 1 << 30
LZ4_END = b"LZ4Block\x16" + bytes(12)  # the empty block LZ4BlockOutputStream ends with


def lz4_block(data: bytes, *, raw: bool = False, level: int = 6) -> bytes:
    """One lz4-java block, built from the format description rather than by chunk.compress."""
    packed = data if raw else lz4.block.compress(data, store_size=False)
    token = (0x10 if raw else 0x20) | level
    check = xxhash.xxh32_intdigest(data, seed=0x9747B28C) & 0x0FFFFFFF
    return b"LZ4Block" + struct.pack("<BIII", token, len(packed), len(data), check) + packed


# --- round trips and formats ------------------------------------------------------------------


@given(st.sampled_from(CODECS), st.binary(max_size=5000))
@example(LZ4, b"")
@example(GZIP, b"")
def test_compress_round_trips(compression: int, raw: bytes) -> None:
    assert decompress(compression, compress(compression, raw)) == raw


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 65536 + 5])
@pytest.mark.parametrize("compressible", [True, False])
def test_lz4_round_trips_across_blocks(size: int, compressible: bool) -> None:
    raw = bytes(size) if compressible else random.Random(size).randbytes(size)
    payload = compress(LZ4, raw)
    assert decompress(LZ4, payload) == raw
    assert payload.count(b"LZ4Block") == -(-size // 65536) + 1
    assert payload.endswith(LZ4_END)


def test_lz4_block_layout() -> None:
    raw = bytes(1000)
    payload = compress(LZ4, raw)
    assert payload == lz4_block(raw) + LZ4_END  # method LZ4, level 6 (64 KiB blocks)
    noise = random.Random(1).randbytes(1000)
    assert compress(LZ4, noise) == lz4_block(noise, raw=True) + LZ4_END  # stored when it grows
    assert compress(LZ4, b"") == LZ4_END


def test_lz4_reads_what_lz4_java_writes() -> None:
    # other block sizes (level nibble), raw and compressed blocks mixed, trailing bytes ignored
    parts = [b"hello " * 50, random.Random(2).randbytes(100), b"\x00" * 1024]
    stream = lz4_block(parts[0], level=0) + lz4_block(parts[1], raw=True, level=0)
    stream += lz4_block(parts[2], level=0) + b"LZ4Block\x10" + bytes(12) + b"trailing"
    assert decompress(LZ4, stream) == b"".join(parts)


def test_lz4_checksum_mismatch_is_refused() -> None:
    payload = bytearray(compress(LZ4, SAMPLE))
    payload[17] ^= 0x01  # low byte of the first block's checksum
    with pytest.raises(ChunkDecodeError, match="checksum mismatch"):
        decompress(LZ4, bytes(payload))


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (lz4_block(SAMPLE), "no empty end block"),
        (lz4_block(SAMPLE) + LZ4_END[:-1], "no empty end block"),
        (b"LZ4Block\x16" + bytes(8) + b"\x01\x00\x00\x00", "non-zero checksum"),
        (b"LZ4Blocc\x16" + bytes(12), "bad block magic"),
        (b"LZ4Block\x36" + bytes(12), "unknown block method"),
        (b"LZ4Block\x26" + struct.pack("<III", 0, 5, 0), "one block length is zero"),
        (b"LZ4Block\x16" + struct.pack("<III", 4, 5, 0) + bytes(5), "raw block whose two lengths"),
        (b"LZ4Block\x20" + struct.pack("<III", 4, 2000, 0) + bytes(4), "larger than its level 0"),
        (b"LZ4Block\x26" + struct.pack("<III", 2**31, 5, 0), "negative block length"),
        (lz4_block(SAMPLE)[:-3], "block data truncated"),
        (b"LZ4Block\x26" + struct.pack("<III", 3, 3, 0) + b"\xff" * 3 + LZ4_END, "corrupt block"),
    ],
)
def test_lz4_format_errors(stream: bytes, reason: str) -> None:
    with pytest.raises(ChunkDecodeError, match=reason) as caught:
        decompress(LZ4, stream)
    assert caught.value.compression == LZ4 and caught.value.offset is not None


def test_lz4_block_that_lies_about_its_size_is_refused() -> None:
    data = lz4.block.compress(b"x" * 500, store_size=False)
    check = xxhash.xxh32_intdigest(b"x" * 500, seed=0x9747B28C) & 0x0FFFFFFF
    stream = b"LZ4Block\x26" + struct.pack("<III", len(data), 1000, check) + data + LZ4_END
    with pytest.raises(ChunkDecodeError, match="decompresses to 500 bytes, not 1000"):
        decompress(LZ4, stream)


def test_zlib_is_the_games_level_6() -> None:
    assert compress(ZLIB, SAMPLE) == zlib.compress(SAMPLE, 6)
    assert compress(ZLIB, SAMPLE, level=9) == zlib.compress(SAMPLE, 9)


def test_gzip_is_what_java_writes() -> None:
    payload = compress(GZIP, SAMPLE)
    assert payload[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no mtime, OS unknown
    assert gzip.decompress(payload) == SAMPLE
    assert decompress(GZIP, gzip.compress(SAMPLE, mtime=1)) == SAMPLE  # any gzip member reads


def test_trailing_bytes_after_a_stream_are_ignored() -> None:
    for compression in (GZIP, ZLIB, LZ4):
        assert decompress(compression, compress(compression, SAMPLE) + b"junk") == SAMPLE


def test_custom_and_unknown_compression() -> None:
    name = b"example:zstd"
    with pytest.raises(
        ChunkDecodeError, match="custom compression 'example:zstd' is not supported"
    ):
        decompress(CUSTOM, struct.pack(">H", len(name)) + name + b"data")
    with pytest.raises(ChunkDecodeError, match="custom compression"):
        decompress(CUSTOM, b"\x00")
    with pytest.raises(ChunkDecodeError, match="unknown compression type"):
        decompress(9, b"x")
    for compression in (CUSTOM, 9):
        with pytest.raises(ChunkDecodeError, match="cannot compress"):
            compress(compression, SAMPLE)


def test_error_carries_context() -> None:
    with pytest.raises(ChunkDecodeError) as caught:
        decompress(ZLIB, zlib.compress(SAMPLE)[:-1])
    error = caught.value
    assert isinstance(error, PeerhostError) and isinstance(error, ValueError)
    assert (error.compression, error.reason) == (ZLIB, "truncated stream")
    assert str(error).startswith("zlib payload")


@pytest.mark.parametrize("compression", [GZIP, ZLIB, LZ4])
def test_every_truncation_of_a_payload_is_refused(compression: int) -> None:
    payload = compress(compression, SAMPLE)
    for end in range(len(payload)):
        with pytest.raises(ChunkDecodeError):
            decompress(compression, payload[:end])


@given(st.sampled_from([*CODECS, CUSTOM, 0, 5, 200]), st.binary(max_size=400))
@example(ZLIB, b"\x78\x9c")
@example(ZLIB, b"\x78\xbb\x00\x00\x00\x00")  # preset dictionary
@example(GZIP, b"\x1f\x8b\x08\x04\x00")
@example(LZ4, b"LZ4Block")
def test_garbage_payloads_raise_only_chunk_decode_error(compression: int, payload: bytes) -> None:
    with contextlib.suppress(ChunkDecodeError):
        decompress(compression, payload)


@given(
    st.sampled_from([GZIP, ZLIB, LZ4]),
    st.lists(st.tuples(st.integers(0), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_damaged_payloads_raise_only_chunk_decode_error(
    compression: int, flips: list[tuple[int, int]]
) -> None:
    payload = bytearray(compress(compression, SAMPLE))
    for offset, value in flips:
        payload[offset % len(payload)] = value
    with contextlib.suppress(ChunkDecodeError):
        load_nbt(compression, bytes(payload))


# --- decompression bombs ----------------------------------------------------------------------


@functools.cache
def deflated_zeros(size: int) -> bytes:
    """Raw deflate of ``size`` zero bytes (whole MiBs), from one repeated piece: fast to build."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = bytes(MIB)
    pieces = [deflater.compress(mib) + deflater.flush(zlib.Z_FULL_FLUSH) for _ in range(3)]
    assert pieces[1] == pieces[2]  # after a full flush the deflater starts afresh
    return pieces[0] + pieces[1] * (size // MIB - 1) + deflater.flush()


@functools.cache
def zlib_zeros(size: int) -> bytes:
    adler = (size % 65521) << 16 | 1  # adler32 of zeros: a stays 1, b counts the bytes
    return b"\x78\xda" + deflated_zeros(size) + struct.pack(">I", adler)


@functools.cache
def gzip_zeros(size: int) -> bytes:
    crc, mib = 0, memoryview(bytes(MIB))
    for _ in range(size // MIB):
        crc = zlib.crc32(mib, crc)
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + deflated_zeros(size) + trailer


@functools.cache
def lz4_zeros(size: int) -> bytes:
    return lz4_block(bytes(65536)) * (size // 65536) + LZ4_END


BOMBS: dict[int, Callable[[int], bytes]] = {ZLIB: zlib_zeros, GZIP: gzip_zeros, LZ4: lz4_zeros}


@pytest.mark.parametrize("compression", sorted(BOMBS))
def test_bomb_builders_make_valid_streams(compression: int) -> None:
    payload = BOMBS[compression](4 * MIB)
    assert decompress(compression, payload, limit=4 * MIB) == bytes(4 * MIB)  # exactly at limit
    with pytest.raises(ChunkDecodeError, match="more than"):
        decompress(compression, payload, limit=4 * MIB - 1)


@pytest.mark.parametrize("compression", sorted(BOMBS))
def test_gigabyte_bomb_is_refused_quickly(compression: int) -> None:
    payload = BOMBS[compression](GIB)
    assert len(payload) < 5 * MIB
    started = time.perf_counter()
    with pytest.raises(ChunkDecodeError, match=f"more than {MAX_NBT_BYTES} bytes"):
        load_nbt(compression, payload)
    assert time.perf_counter() - started < 3


@pytest.mark.parametrize("compression", sorted(BOMBS))
def test_bomb_memory_is_bounded_by_the_limit(compression: int) -> None:
    payload = BOMBS[compression](GIB)
    tracemalloc.start()
    try:
        with pytest.raises(ChunkDecodeError):
            decompress(compression, payload, limit=MIB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB


def test_lz4_declared_sizes_are_refused_before_decompressing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("decompressed a block before checking the declared sizes")

    monkeypatch.setattr(lz4.block, "decompress", never)
    # three blocks of level 15 (up to 32 MiB each) with almost no data: 96 MiB declared
    lying = b"LZ4Block\x2f" + struct.pack("<III", 4, 32 * MIB, 0) + b"\x00" * 4
    with pytest.raises(ChunkDecodeError, match="more than"):
        decompress(LZ4, lying * 3 + LZ4_END)


def test_uncompressed_payload_over_the_limit_is_refused() -> None:
    with pytest.raises(ChunkDecodeError, match="more than 100 bytes"):
        decompress(NONE, bytes(101), limit=100)
    assert decompress(NONE, bytes(100), limit=100) == bytes(100)


# --- load_nbt ---------------------------------------------------------------------------------


def test_load_nbt_reads_every_codec() -> None:
    for compression in CODECS:
        loaded = load_nbt(compression, compress(compression, SAMPLE))
        assert loaded == nbt.NamedTag("root", every_tag())


def test_load_nbt_errors_name_the_offset_in_the_nbt() -> None:
    with pytest.raises(ChunkDecodeError, match="nested deeper than 512") as caught:
        load_nbt(ZLIB, zlib.compress(deep_compounds(513)))
    assert caught.value.offset == 3 * 512 and caught.value.compression is None
    assert str(caught.value) == "NBT at byte 1536: nested deeper than 512"
    with pytest.raises(ChunkDecodeError, match="string that readUTF refuses"):
        load_nbt(NONE, named(8, b"\x00\x02\xff\xfe"))


def test_200000_deep_nbt_is_refused_quickly() -> None:
    raw = b"\x0a\x00\x00" * 200_000 + b"\x00" * 200_000
    started = time.perf_counter()
    with pytest.raises(ChunkDecodeError, match="nested deeper than 512") as caught:
        load_nbt(ZLIB, zlib.compress(raw))
    assert time.perf_counter() - started < 1
    assert caught.value.offset == 3 * 512


# --- classify_change --------------------------------------------------------------------------


def chunk_tree(
    *, last_update: int = 100, inhabited: int = 5, stone: str = "stone", level: bool = False
) -> nbt.Compound:
    data: nbt.Compound = {
        "xPos": nbt.int_tag(1),
        "zPos": nbt.int_tag(2),
        "Status": "minecraft:full",
        "sections": nbt.ListTag(nbt.COMPOUND, [{"palette": f"minecraft:{stone}"}]),
        "LastUpdate": nbt.long_tag(last_update),
        "InhabitedTime": nbt.long_tag(inhabited),
    }
    if level:  # before 1.18 the chunk sits in a "Level" compound
        return {"DataVersion": nbt.int_tag(1343), "Level": data}
    return {"DataVersion": nbt.int_tag(3337), **data}


def side(tag: nbt.Compound, compression: int = ZLIB) -> tuple[int, bytes]:
    return compression, compress(compression, nbt.dump(tag))


@pytest.mark.parametrize("level", [False, True])
def test_volatile_keys_are_a_resave(level: bool) -> None:
    old = side(chunk_tree(level=level))
    assert (
        classify_change(old, side(chunk_tree(last_update=999, inhabited=77, level=level)))
        == "resave"
    )
    assert (
        classify_change(old, side(chunk_tree(stone="dirt", last_update=999, level=level)))
        == "content"
    )


def test_volatile_keys_count_only_at_the_root_or_level() -> None:
    def with_nested(value: int) -> nbt.Compound:
        tree = chunk_tree()
        tree["nested"] = {"LastUpdate": nbt.long_tag(value)}
        return tree

    assert classify_change(side(with_nested(1)), side(with_nested(2))) == "content"
    assert set(VOLATILE_KEYS) == {"LastUpdate", "InhabitedTime"}


def test_key_order_and_compression_do_not_matter() -> None:
    tree = chunk_tree()
    reordered = {key: tree[key] for key in reversed(list(tree.keys()))}
    assert nbt.dump(tree) != nbt.dump(reordered)
    assert classify_change(side(tree), side(reordered, LZ4)) == "resave"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (nbt.int_tag(1), nbt.long_tag(1), "content"),
        (nbt.float_tag(float("nan")), nbt.float_tag(float("nan")), "resave"),  # same bits
        (nbt.double_tag(0.0), nbt.double_tag(-0.0), "content"),
        (nbt.ListTag(nbt.BYTE), nbt.ListTag(nbt.COMPOUND), "resave"),  # the game drops this type
        (
            nbt.ListTag(nbt.INT, [nbt.int_tag(1)]),
            nbt.ListTag(nbt.LONG, [nbt.long_tag(1)]),
            "content",
        ),
        ((nbt.BYTE_ARRAY, b"\x01\x02"), nbt.int_array([1, 2]), "content"),
        ((nbt.LONG_ARRAY, bytes(16)), (nbt.LONG_ARRAY, bytes(15) + b"\x01"), "content"),
        ("a", "a", "resave"),
    ],
)
def test_classify_compares_types_and_bits(old: nbt.Value, new: nbt.Value, expected: str) -> None:
    def tree(value: nbt.Value) -> nbt.Compound:
        result = chunk_tree()
        result["value"] = value
        return result

    assert classify_change(side(tree(old)), side(tree(new))) == expected


def test_modified_utf8_spellings_of_one_string_are_a_resave() -> None:
    plain = named(8, b"\x00\x01A")
    overlong = named(8, b"\x00\x02\xc1\x81")  # what readUTF also reads as "A"
    assert classify_change((NONE, plain), (NONE, overlong)) == "resave"


def test_root_name_matters() -> None:
    tree = chunk_tree()
    assert classify_change((NONE, nbt.dump(tree, "a")), (NONE, nbt.dump(tree, "b"))) == "content"


def test_classify_raises_when_a_side_cannot_be_decoded() -> None:
    good = side(chunk_tree())
    for bad in [(ZLIB, b"\x78\x9cgarbage"), (CUSTOM, b"\x00\x01x"), (NONE, deep_compounds(1000))]:
        with pytest.raises(ChunkDecodeError):
            classify_change(good, bad)
        with pytest.raises(ChunkDecodeError):
            classify_change(bad, good)


# --- fixtures and real chunks -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["gzip.mca", "uncompressed.mca", "lz4.mca", "mixed.mca", "external/r.0.0.mca", "unpadded.mca"],
)
def test_fixture_chunks_decode(data_dir: Path, name: str) -> None:
    path = data_dir / name
    parsed = parse_region(path.read_bytes(), lambda slot: (path.parent / "c.1.1.mcc").read_bytes())
    assert parsed.chunks
    for record in parsed.chunks:
        if record.compression == CUSTOM:
            with pytest.raises(ChunkDecodeError, match="custom compression 'example:zstd'"):
                load_nbt(record.compression, bytes(record.payload))
            continue
        root = load_nbt(record.compression, bytes(record.payload)).root
        x, z = (nbt.as_int(root[key]) for key in ("xPos", "zPos"))
        assert (x, z) == chunk_coords(0, 0, record.slot)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("deep-nbt.mca", "nested deeper than 512"), ("zlib-bomb.mca", "more than 67108864 bytes")],
)
def test_hostile_fixture_chunks_are_refused(data_dir: Path, name: str, reason: str) -> None:
    chunks = {c.slot: c for c in parse_region((data_dir / name).read_bytes()).chunks}
    load_nbt(chunks[0].compression, bytes(chunks[0].payload))
    with pytest.raises(ChunkDecodeError, match=reason):
        load_nbt(chunks[1].compression, bytes(chunks[1].payload))


def test_real_resaves_are_recognised(real_world: Callable[[str], Path]) -> None:
    history = real_world("aviadbag-1.19-history")
    # r.-1.4 changes between these commits (it is byte-identical in 500ee47 and a082380)
    old, new = (
        parse_region((history / v / "region" / "r.-1.4.mca").read_bytes())
        for v in ("3195128", "500ee47")
    )
    assert old.clean and new.clean
    before = {c.slot: c for c in old.chunks}
    verdicts: dict[str, int] = {"content": 0, "resave": 0}
    for record in new.chunks:
        previous = before.get(record.slot)
        if previous is None or previous.payload == record.payload:
            continue
        verdicts[
            classify_change(
                (previous.compression, bytes(previous.payload)),
                (record.compression, bytes(record.payload)),
            )
        ] += 1
        # the game's zlib payloads are zlib level 6, byte for byte
        assert compress(ZLIB, decompress(ZLIB, bytes(record.payload))) == record.payload
    assert verdicts["resave"] > 0
    assert sum(verdicts.values()) > 20
