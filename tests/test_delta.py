from __future__ import annotations

import contextlib
import random
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import zstandard
from hypothesis import example, given
from hypothesis import strategies as st

from peerhost_store import nbt
from peerhost_store.chunk import compress
from peerhost_store.errors import PeerhostError
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import encode_blob
from peerhost_store.region import GZIP, LZ4, NONE, ZLIB, parse_region
from peerhost_store.sync.delta import (
    BASED_KINDS,
    KIND_DELTA,
    KIND_RAW,
    KIND_STORED,
    KIND_ZSTD,
    DeltaError,
    DeltaItem,
    DeltaMismatch,
    apply_delta,
    decode_batch,
    diff_bytes,
    encode_batch,
    make_delta,
    make_item,
    patch_bytes,
    zstd_delta,
    zstd_output_size,
    zstd_patch,
)

MIB = 1 << 20


def long_array(values: list[int]) -> nbt.Leaf:
    return nbt.LONG_ARRAY, struct.pack(f">{len(values)}q", *values)


def byte_array(values: list[int]) -> nbt.Leaf:
    return nbt.BYTE_ARRAY, struct.pack(f">{len(values)}b", *values)


def chunk_nbt(last_update: int = 1000, extra: int = 0, *, seed: int = 7) -> bytes:
    """A chunk-like NBT: volatile longs up front, bulky arrays, and ``extra`` list entries."""
    rng = random.Random(seed)
    sections = nbt.ListTag(
        nbt.COMPOUND,
        [
            {
                "Y": nbt.byte_tag(y),
                "BlockStates": long_array([rng.randrange(2**40) for _ in range(64)]),
                "SkyLight": byte_array([rng.randrange(-128, 128) for _ in range(256)]),
            }
            for y in range(4)
        ],
    )
    entities = nbt.ListTag(
        nbt.COMPOUND, [{"id": "minecraft:pig", "n": nbt.int_tag(i)} for i in range(extra)]
    )
    root: nbt.Compound = {
        "DataVersion": nbt.int_tag(3105),
        "LastUpdate": nbt.long_tag(last_update),
        "InhabitedTime": nbt.long_tag(last_update // 2),
        "sections": sections,
        "Entities": entities,
    }
    return nbt.dump(root)


def blob_id(payload: bytes) -> ObjectId:
    return hash_bytes(encode_blob(payload))


def round_trip(
    base_payload: bytes | None, new_payload: bytes, compression: int = ZLIB
) -> DeltaItem:
    item = make_item(
        new_payload,
        compression,
        base_id=blob_id(base_payload) if base_payload is not None else None,
        base_payload=base_payload,
    )
    assert apply_delta(base_payload, item) == encode_blob(new_payload)
    return item


# --- the byte delta ---------------------------------------------------------------------------

edits = st.lists(
    st.tuples(
        st.sampled_from(["set", "insert", "delete"]),
        st.integers(0, 10_000),
        st.binary(min_size=1, max_size=80),
    ),
    max_size=8,
)


@given(st.binary(max_size=2000), edits)
@example(b"", [])
@example(b"\x00" * 500, [("insert", 250, b"\x01" * 60)])
@example(b"abc" * 200, [("delete", 10, b"x" * 70), ("set", 300, b"zz")])
def test_diff_bytes_round_trips(base: bytes, changes: list[tuple[str, int, bytes]]) -> None:
    new = bytearray(base)
    for what, offset, data in changes:
        at = offset % (len(new) + 1)
        if what == "set":
            new[at : at + len(data)] = data[: len(new) - at] if at < len(new) else b""
        elif what == "insert":
            new[at:at] = data
        else:
            del new[at : at + len(data)]
    delta = diff_bytes(base, bytes(new))
    assert patch_bytes(base, delta) == new


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_diff_bytes_round_trips_unrelated_strings(base: bytes, new: bytes) -> None:
    assert patch_bytes(base, diff_bytes(base, new)) == new


def test_a_resave_costs_a_few_bytes() -> None:
    old, new = chunk_nbt(1000), chunk_nbt(1777)
    assert len(old) == len(new)
    made = make_delta(zlib.compress(old, 6), zlib.compress(new, 6), ZLIB)
    assert made is not None and made[0] == KIND_DELTA and len(made[1]) < 24


def test_equal_length_change_round_trips() -> None:
    item = round_trip(zlib.compress(chunk_nbt(1000), 6), zlib.compress(chunk_nbt(99999), 6))
    assert item.kind == KIND_DELTA and len(item.data) < 30


def test_different_length_change_round_trips() -> None:
    old, new = chunk_nbt(1000, extra=2), chunk_nbt(2000, extra=5)
    assert len(old) != len(new)
    item = round_trip(zlib.compress(old, 6), zlib.compress(new, 6))
    assert item.kind == KIND_ZSTD and len(item.data) < len(new) // 10


@pytest.mark.parametrize("compression", [GZIP, NONE, LZ4])
def test_other_compressions_round_trip(compression: int) -> None:
    old, new = compress(compression, chunk_nbt(1)), compress(compression, chunk_nbt(2, extra=1))
    assert round_trip(old, new, compression).kind in BASED_KINDS


def test_base_with_another_compression() -> None:
    base, new = compress(GZIP, chunk_nbt(1)), compress(ZLIB, chunk_nbt(2))
    made = make_delta(base, new, ZLIB, base_compression=GZIP)
    assert made is not None
    item = DeltaItem(blob_id(new), blob_id(base), ZLIB, *made)
    assert apply_delta(base, item, base_compression=GZIP) == encode_blob(new)


# --- declining what cannot be rebuilt ---------------------------------------------------------


def filtered(raw: bytes) -> bytes:
    deflater = zlib.compressobj(6, zlib.DEFLATED, 15, 8, zlib.Z_FILTERED)
    return deflater.compress(raw) + deflater.flush()


@pytest.mark.parametrize(
    "recompress", [lambda raw: zlib.compress(raw, 9), filtered], ids=["level9", "filtered"]
)
def test_payload_that_recompression_does_not_reproduce(
    recompress: Callable[[bytes], bytes],
) -> None:
    base, raw = zlib.compress(chunk_nbt(1), 6), chunk_nbt(2)
    payload = recompress(raw)
    assert payload != zlib.compress(raw, 6)  # the precondition of this test
    assert make_delta(base, payload, ZLIB) is None
    item = round_trip(base, payload)
    assert item.kind == KIND_STORED and item.data == payload


def test_undecodable_payloads_are_declined() -> None:
    good = zlib.compress(chunk_nbt(1), 6)
    assert make_delta(good, b"\x78\x9cjunk", ZLIB) is None
    assert make_delta(b"junk", good, ZLIB) is None
    assert make_delta(good, good, 127) is None  # custom compression: nothing can rebuild it
    bomb = zlib.compress(bytes(2 * MIB), 6)
    assert make_delta(good, bomb, ZLIB, limit=MIB) is None


def test_delta_no_smaller_than_the_nbt_is_declined() -> None:
    rng = random.Random(3)
    base = zlib.compress(chunk_nbt(1), 6)
    raw = bytes(rng.randrange(256) for _ in range(3000))  # unrelated to the base
    new = zlib.compress(raw, 6)
    assert make_delta(base, new, ZLIB) is None
    item = round_trip(base, new)
    assert item.kind == KIND_RAW and item.base_id is None and item.data == raw


def test_new_chunk_travels_as_nbt() -> None:
    item = round_trip(None, zlib.compress(chunk_nbt(5), 6))
    assert item.kind == KIND_RAW


# --- applying: mismatches and hostile deltas --------------------------------------------------


def test_wrong_base_raises_delta_mismatch() -> None:
    base, new = zlib.compress(chunk_nbt(1), 6), zlib.compress(chunk_nbt(2), 6)
    item = make_item(new, ZLIB, base_id=blob_id(base), base_payload=base)
    other = zlib.compress(chunk_nbt(1, seed=8), 6)
    with pytest.raises(DeltaMismatch) as caught:
        apply_delta(other, item)
    assert caught.value.new_id == item.new_id and caught.value.got not in (None, item.new_id)
    with pytest.raises(DeltaMismatch) as caught:
        apply_delta(b"not zlib", item)
    assert caught.value.new_id == item.new_id and caught.value.got is None
    assert isinstance(caught.value, DeltaError) and isinstance(caught.value, PeerhostError)
    with pytest.raises(DeltaError, match="needs its base"):
        apply_delta(None, item)


def test_tampered_item_raises_delta_mismatch() -> None:
    item = make_item(zlib.compress(chunk_nbt(3), 6), ZLIB)
    forged = DeltaItem(item.new_id, None, ZLIB, KIND_RAW, item.data[:-1] + b"\x01")
    with pytest.raises(DeltaMismatch):
        apply_delta(None, forged)


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def zigzag(n: int) -> bytes:
    return varint(n * 2 if n >= 0 else -n * 2 - 1)


@pytest.mark.parametrize(
    ("delta", "reason"),
    [
        (b"", "truncated varint"),
        (zigzag(1 << 40), "declares"),  # a huge output
        (zigzag(-200), "declares"),  # a negative length
        (b"\xff" * 11, "longer than"),
        (zigzag(0) + varint(5) + b"ab", "overruns"),  # literal past the end of the delta
        (zigzag(0) + varint(0) + zigzag(90) + varint(20), "outside the base"),
        (zigzag(0) + varint(0) + zigzag(-1) + varint(1), "outside the base"),
        (zigzag(-5) + varint(0) + zigzag(0) + varint(100), "overruns the declared"),
        (zigzag(0) + varint(0) + zigzag(0) + varint(10), "rebuilt 10 bytes, 100 declared"),
        (zigzag(0) + varint(0) + zigzag(0), "truncated varint"),
    ],
)
def test_hostile_deltas_are_refused(delta: bytes, reason: str) -> None:
    with pytest.raises(DeltaError, match=reason):
        patch_bytes(bytes(100), delta, limit=MIB)


def test_hostile_delta_in_an_item_is_a_mismatch() -> None:
    base = zlib.compress(chunk_nbt(1), 6)
    item = DeltaItem(blob_id(base), blob_id(base), ZLIB, KIND_DELTA, zigzag(1 << 30))
    with pytest.raises(DeltaMismatch, match="declares") as caught:
        apply_delta(base, item)
    assert caught.value.new_id == item.new_id and caught.value.got is None


def test_zstd_items_round_trip_and_declare_their_size() -> None:
    old, new = chunk_nbt(1000, extra=2), chunk_nbt(2000, extra=5)
    frame = zstd_delta(old, new)
    assert zstd_output_size(frame) == len(new) and len(frame) < len(new) // 10
    assert zstd_patch(old, frame) == new


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "declares its size"),
        (b"not a frame at all", "declares its size"),
        (zstandard.ZstdCompressor(write_content_size=False).compressobj().compress(bytes(50))
         + b"", "declares its size"),
        (zstandard.ZstdCompressor().compress(bytes(2 * MIB)), "limit"),
        (zstandard.ZstdCompressor().compress(b"abc" * 100)[:-4] + b"\xff\xff\xff\xff",
         "corrupt"),
    ],
)
def test_hostile_zstd_items_are_refused(frame: bytes, reason: str) -> None:
    with pytest.raises(DeltaError, match=reason):
        zstd_patch(bytes(100), frame, limit=MIB)


def test_hostile_zstd_item_is_a_mismatch() -> None:
    base = zlib.compress(chunk_nbt(1), 6)
    frame = zstandard.ZstdCompressor().compress(bytes(2 * MIB))
    item = DeltaItem(blob_id(base), blob_id(base), ZLIB, KIND_ZSTD, frame)
    with pytest.raises(DeltaMismatch, match="limit") as caught:
        apply_delta(base, item, limit=MIB)
    assert caught.value.got is None
    # Against another base, a sound frame rebuilds something else: the id check catches it.
    other = zlib.compress(chunk_nbt(2, extra=3), 6)
    made = make_item(other, ZLIB, base_id=blob_id(base), base_payload=base)
    assert made.kind == KIND_ZSTD
    with pytest.raises(DeltaMismatch):
        apply_delta(zlib.compress(chunk_nbt(1, seed=9), 6), made)


def test_many_tiny_ops_stay_fast() -> None:
    # Worst case per byte of delta: zero-length ops. The work is bounded by the delta's size.
    delta = (
        zigzag(0)
        + (varint(0) + zigzag(0) + varint(0)) * 300_000
        + varint(0)
        + zigzag(0)
        + varint(1000)
    )
    started = time.perf_counter()
    assert patch_bytes(bytes(1000), delta) == bytes(1000)
    assert time.perf_counter() - started < 5


# --- batches ----------------------------------------------------------------------------------


def sample_items() -> tuple[list[DeltaItem], list[bytes | None], list[bytes]]:
    bases: list[bytes | None] = []
    news: list[bytes] = []
    for i in range(6):
        bases.append(zlib.compress(chunk_nbt(100 + i, seed=i), 6))
        news.append(zlib.compress(chunk_nbt(900 + i, extra=i % 2, seed=i), 6))
    bases.append(None)
    news.append(zlib.compress(chunk_nbt(5, seed=99), 6))
    bases.append(None)
    news.append(zlib.compress(chunk_nbt(6), 9))  # cannot be rebuilt: sent as stored
    items = [
        make_item(new, ZLIB, base_id=blob_id(base) if base else None, base_payload=base)
        for base, new in zip(bases, news, strict=True)
    ]
    return items, bases, news


def test_batch_round_trips_with_ids() -> None:
    items, bases, news = sample_items()
    assert {item.kind for item in items} == {KIND_DELTA, KIND_ZSTD, KIND_RAW, KIND_STORED}
    decoded = decode_batch(encode_batch(items), max_items=100, max_bytes=MIB)
    assert decoded == items
    for item, base, new in zip(decoded, bases, news, strict=True):
        assert apply_delta(base, item) == encode_blob(new)


def test_batch_for_a_want_list_leaves_ids_out() -> None:
    items, bases, _ = sample_items()
    want = [
        (item.new_id, blob_id(base) if base else None)
        for item, base in zip(items, bases, strict=True)
    ]
    with_ids, for_want = encode_batch(items), encode_batch(items, want=want)
    assert len(for_want) < len(with_ids) - 50 * len(items)
    assert decode_batch(for_want, max_items=100, max_bytes=MIB, want=want) == items
    assert decode_batch(with_ids, max_items=100, max_bytes=MIB, want=want) == items
    with pytest.raises(DeltaError, match="pass the want list"):
        decode_batch(for_want, max_items=100, max_bytes=MIB)
    other = [*want[:-1], (blob_id(b"x"), None)]
    with pytest.raises(DeltaError, match="another want list"):
        decode_batch(for_want, max_items=100, max_bytes=MIB, want=other)
    with pytest.raises(DeltaError, match="not the wanted"):
        decode_batch(with_ids, max_items=100, max_bytes=MIB, want=other)
    with pytest.raises(DeltaError, match="not the wanted object"):
        encode_batch(items, want=other)
    with pytest.raises(DeltaError, match="another base"):
        encode_batch(items, want=[(new_id, blob_id(b"y")) for new_id, _ in want])


def test_many_similar_deltas_share_one_stream() -> None:
    # Like a game upgrade: every chunk changes the same way; batched, each costs a few bytes.
    items = []
    for i in range(200):
        old, new = chunk_nbt(1000 + i, seed=i), chunk_nbt(5000 + i, extra=1, seed=i)
        base = zlib.compress(old, 6)
        items.append(
            make_item(zlib.compress(new, 6), ZLIB, base_id=blob_id(base), base_payload=base)
        )
    want = [(item.new_id, item.base_id) for item in items]
    assert all(item.kind in BASED_KINDS for item in items)
    assert len(encode_batch(items, want=want)) < 10 * len(items)


def test_too_many_items_are_refused() -> None:
    items, _, _ = sample_items()
    with pytest.raises(DeltaError, match="more than 3"):
        decode_batch(encode_batch(items), max_items=3, max_bytes=MIB)


def test_decompression_bomb_is_refused() -> None:
    bomb = DeltaItem(blob_id(b"x"), None, NONE, KIND_STORED, bytes(64 * MIB))
    data = encode_batch([bomb], level=3)
    assert len(data) < 64 * 1024
    started = time.perf_counter()
    with pytest.raises(DeltaError, match="more than 1048576"):
        decode_batch(data, max_items=10, max_bytes=MIB)
    assert time.perf_counter() - started < 0.5


def test_frame_without_its_size_is_refused() -> None:
    stream = msgpack.packb([1, 0, None])
    compressor = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    frame = compressor.compress(stream) + compressor.flush()
    with pytest.raises(DeltaError, match="does not declare its size"):
        decode_batch(frame, max_items=10, max_bytes=MIB)


def frame(*values: object) -> bytes:
    return zstandard.ZstdCompressor().compress(
        b"".join(msgpack.packb(v, use_bin_type=True) for v in values)
    )


ID = bytes(32)


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        (([2, 0, None],), "unknown batch version"),
        (([1, True, None],), "bad item count"),
        (([1, -1, None],), "bad item count"),
        (([1, 0, b"short"],), "digest"),
        (([1, 0],), "not \\[version, count, digest\\]"),
        (({"a": 1},), "malformed header"),
        (("text",), "malformed header"),
        (([1, 1, None],), "item 0 is missing"),
        (([1, 1, None], [ID, None, ZLIB, KIND_RAW]), "array of 5"),
        (([1, 1, None], [ID[:31], None, ZLIB, KIND_RAW, b""]), "32 bytes"),
        (([1, 1, None], [ID, b"", ZLIB, KIND_RAW, b""]), "32 bytes"),
        (([1, 1, None], [ID, None, 9, KIND_RAW, b""]), "bad compression"),
        (([1, 1, None], [ID, None, True, KIND_RAW, b""]), "bad compression"),
        (([1, 1, None], [ID, None, ZLIB, 7, b""]), "bad kind"),
        (([1, 1, None], [ID, None, ZLIB, KIND_RAW, "text"]), "malformed item 0"),
        (([1, 1, None], [ID, None, ZLIB, KIND_RAW, 5]), "not bytes"),
        (([1, 1, None], [ID, None, ZLIB, KIND_DELTA, b""]), "without a base"),
        (([1, 1, None], [ID, None, ZLIB, KIND_RAW, b""], 0), "1 bytes after the last item"),
    ],
)
def test_malformed_batches_are_refused(values: tuple[object, ...], reason: str) -> None:
    with pytest.raises(DeltaError, match=reason):
        decode_batch(frame(*values), max_items=10, max_bytes=MIB)


def test_every_truncation_of_a_batch_is_refused() -> None:
    items, _, _ = sample_items()
    data = encode_batch(items)
    started = time.perf_counter()
    for size in range(len(data)):
        with pytest.raises(DeltaError):
            decode_batch(data[:size], max_items=100, max_bytes=MIB)
    assert time.perf_counter() - started < 10


@given(st.binary(max_size=4000))
@example(b"")
@example(b"\x28\xb5\x2f\xfd")  # the zstd magic alone
def test_random_bytes_raise_only_delta_error(data: bytes) -> None:
    with pytest.raises(DeltaError):
        decode_batch(data, max_items=100, max_bytes=MIB)


@given(st.binary(max_size=2000))
@example(b"\x91" * 2000)  # deep nesting
@example(b"\x93\x01\xce\xff\xff\xff\xff\xc0")  # a header claiming 4 billion items
def test_random_streams_in_a_valid_frame_raise_only_delta_error(stream: bytes) -> None:
    data = zstandard.ZstdCompressor().compress(stream)
    try:
        items = decode_batch(data, max_items=100, max_bytes=MIB)
    except DeltaError:
        return
    for item in items:  # the rare well-formed stream: applying must fail cleanly too
        with pytest.raises(DeltaError):
            apply_delta(b"", item, limit=MIB)


@given(st.data())
def test_damaged_batches_raise_only_delta_error(data: st.DataObject) -> None:
    items, bases, _ = sample_items()
    batch = bytearray(encode_batch(items, level=3))
    at = data.draw(st.integers(0, len(batch) - 1))
    batch[at] ^= data.draw(st.integers(1, 255))
    try:
        decoded = decode_batch(bytes(batch), max_items=100, max_bytes=MIB)
    except DeltaError:
        return
    for item, base in zip(decoded, bases, strict=False):
        with contextlib.suppress(DeltaError):
            apply_delta(base, item, limit=MIB)


# --- real worlds ------------------------------------------------------------------------------


def region_chunks(world: Path) -> dict[tuple[str, str, int], tuple[int, bytes]]:
    chunks = {}
    for kind in ("region", "entities", "poi"):
        for path in sorted((world / kind).glob("r.*.mca")):
            for record in parse_region(path.read_bytes()).chunks:
                chunks[(kind, path.name, record.slot)] = (record.compression, bytes(record.payload))
    return chunks


def test_real_play_session_round_trips(real_world: Callable[[str], Path]) -> None:
    history = real_world("aviadbag-1.19-history")
    old, new = region_chunks(history / "3195128"), region_chunks(history / "500ee47")
    changed = [key for key in sorted(new) if old.get(key) != new[key]]
    assert len(changed) > 100
    items, bases = [], []
    for key in changed:
        compression, payload = new[key]
        base = old.get(key)
        bases.append(base)
        items.append(
            make_item(
                payload,
                compression,
                base_id=blob_id(base[1]) if base else None,
                base_payload=base[1] if base else None,
                base_compression=base[0] if base else None,
            )
        )
    want = [(item.new_id, item.base_id) for item in items]
    batch = encode_batch(items, want=want)
    decoded = decode_batch(batch, max_items=len(items), max_bytes=64 * MIB, want=want)
    for item, base, key in zip(decoded, bases, changed, strict=True):
        assert apply_delta(base[1] if base else None, item) == encode_blob(new[key][1])
    changed_payloads = sum(len(new[key][1]) for key in changed)
    assert sum(item.kind in BASED_KINDS for item in items) > len(changed) // 2
    assert len(batch) < changed_payloads / 10
