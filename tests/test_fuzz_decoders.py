"""Property-based fuzzing of every decoder that reads bytes another peer or the coordinator sent:
the sync protocol's messages, delta batches, objects, region files, chunk payloads and the NBT
paths diff takes. Inputs are structured to be hostile (wrong types, headers declaring 2^32
elements or bytes over a short body, nesting 100,000 deep, truncations and damage of valid
encodings), not only random. Each input must give a value or the module's typed error, within a
per-example deadline; huge declared sizes must not allocate them (tracemalloc).

Decompression bombs in region files (snapshot and diff) and at the coordinator's delta and
object endpoints are checked at the end. The count of inputs tried per decoder is written to
``benchmarks/results/reliability/fuzz_decoders.json``.
"""

from __future__ import annotations

import json
import os
import struct
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_chunk import gzip_zeros, lz4_zeros, zlib_zeros
from test_sync_support import FAST, make_session, running
from worldfs_helpers import make_world

from peerhost_server import Limits
from peerhost_store import nbt
from peerhost_store.chunk import (
    MAX_NBT_BYTES,
    ChunkDecodeError,
    classify_change,
    compress,
    load_nbt,
)
from peerhost_store.diff import ChunkChange
from peerhost_store.errors import DecodeError
from peerhost_store.graph import Kind, decode_as
from peerhost_store.ids import hash_bytes
from peerhost_store.objects import (
    ChunkEntry,
    DirEntry,
    EntryKind,
    IndexEntry,
    Snapshot,
    check,
    decode,
    decode_blob,
    encode_blob,
    encode_dir_leaf,
    encode_index,
    encode_region_leaf,
    encode_snapshot,
)
from peerhost_store.region import (
    GZIP,
    HEADER_SIZE,
    LZ4,
    NONE,
    SECTOR,
    ZLIB,
    ChunkRecord,
    RegionError,
    parse_region,
    write_region,
)
from peerhost_store.repo import Repository
from peerhost_store.sync.delta import (
    KIND_DELTA,
    KIND_RAW,
    KIND_STORED,
    KIND_ZSTD,
    DeltaError,
    DeltaItem,
    apply_delta,
    decode_batch,
    encode_batch,
    patch_bytes,
    zstd_delta,
    zstd_patch,
)
from peerhost_store.sync.protocol import (
    MSGPACK,
    DeltaRequest,
    ObjectStatus,
    ProtocolError,
    decode_delta_answer,
    decode_delta_get,
    decode_delta_upload,
    decode_ids,
    decode_objects,
    decode_statuses,
    decompress_body,
    delta_output_size,
    encode_delta_answer,
    encode_delta_get,
    encode_delta_upload,
    encode_ids,
    encode_objects,
    encode_statuses,
    expand_select,
    parse_hex_id,
    split_objects,
)

MIB = 1 << 20
GIB = 1 << 30
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "reliability"
TRIED: Counter[str] = Counter()
# A per-example time bound, generous for a shared machine; it overrides the ci profile's None.
BOUNDED = settings(deadline=timedelta(seconds=3),
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def _write_summary() -> Iterator[None]:
    started = time.perf_counter()
    yield
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {
        "file": "tests/test_fuzz_decoders.py",
        "hypothesis_profile": "ci" if os.environ.get("CI") == "true" else "dev",
        "seconds": round(time.perf_counter() - started, 2),
        "inputs_tried": dict(sorted(TRIED.items())),
        "total": sum(TRIED.values()),
    }
    (RESULTS / "fuzz_decoders.json").write_text(json.dumps(summary, indent=2) + "\n")


def tried(target: str) -> None:
    TRIED[target] += 1


# -- hostile msgpack ----------------------------------------------------------------------

ID = hash_bytes(b"id")
ID2 = hash_bytes(b"id2")

# Headers declaring 2^32 - 1 (or 2^16 - 1) elements or bytes, over a body of a few bytes.
HUGE_HEADERS = [
    b"\xdd\xff\xff\xff\xff",  # array 32
    b"\xdc\xff\xff",  # array 16
    b"\xdf\xff\xff\xff\xff",  # map 32
    b"\xde\xff\xff",  # map 16
    b"\xc6\xff\xff\xff\xff",  # bin 32
    b"\xc5\xff\xff",  # bin 16
    b"\xdb\xff\xff\xff\xff",  # str 32
    b"\xc9\xff\xff\xff\xff\x01",  # ext 32
    b"\xc7\xff\x01",  # ext 8
]
DEEP = [
    b"\x91" * 100_000 + b"\xc0",  # arrays 100,000 deep
    b"\x81\xa1k" * 30_000 + b"\xc0",  # maps 30,000 deep
    b"\x92\x01" + b"\x91" * 50_000,  # a blob-like start, then deep and cut short
    b"\x93\x01" * 40_000,  # arrays of 3 holding an int and an unfinished array, unfinished
]


def _with_headers(header: bytes, tail: bytes, wrap: int) -> bytes:
    return b"\x92\x01" * wrap + header + tail  # inside arrays too, where decoders look


huge = st.builds(_with_headers, st.sampled_from(HUGE_HEADERS), st.binary(max_size=16),
                 st.integers(0, 2))
deep = st.sampled_from(DEEP)

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=12) | st.binary(max_size=40)
    | st.sampled_from([ID, ID2, bytes(32), bytes(31), bytes(33)]),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(
        st.text(max_size=6) | st.integers(-3, 3), inner, max_size=4),
    max_leaves=24,
)
packed_values = values.map(lambda v: msgpack.packb(v, use_bin_type=True))


def damaged(samples: list[bytes]) -> st.SearchStrategy[bytes]:
    """Truncations, flipped bytes and appended junk of valid encodings."""
    sample = st.sampled_from(samples)
    cut = sample.flatmap(lambda s: st.integers(0, max(0, len(s) - 1)).map(lambda k: s[:k]))
    flipped = st.tuples(sample, st.integers(0, 10**6), st.integers(1, 255)).map(
        lambda t: t[0][: t[1] % max(1, len(t[0]))]
        + bytes([t[0][t[1] % max(1, len(t[0]))] ^ t[2]]) + t[0][t[1] % max(1, len(t[0])) + 1:]
        if t[0] else b"\xff")
    junk = st.tuples(sample, st.binary(min_size=1, max_size=8)).map(lambda t: t[0] + t[1])
    return cut | flipped | junk


def hostile(samples: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=64), packed_values, huge, deep, damaged(samples))


def refuses(errors: type[Exception] | tuple[type[Exception], ...],
            fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, or None when it raises one of ``errors``; anything else
    escapes (and fails the test)."""
    try:
        return fn(*args, **kwargs)
    except errors as exc:
        # The call may also succeed, which pytest.raises would not allow.
        assert str(exc), "a typed error must say what is wrong"  # noqa: PT017
        return None


# -- the sync protocol --------------------------------------------------------------------

REQUEST = DeltaRequest(ID, ID2, ((0, 2), (5, 1)))
BATCH = encode_batch([DeltaItem(ID, None, ZLIB, KIND_STORED, b"payload")])
PROTOCOL_SAMPLES = [
    encode_ids([ID, ID2]),
    encode_objects([encode_blob(b"a"), encode_dir_leaf([])]),
    encode_statuses([ObjectStatus.MISSING, ObjectStatus.COMPLETE, ObjectStatus.PRESENT]),
    encode_delta_upload(REQUEST, BATCH),
    encode_delta_upload(None, BATCH),
    encode_delta_get(REQUEST),
    encode_delta_answer(2, BATCH),
    zstandard.ZstdCompressor().compress(encode_objects([encode_blob(b"a" * 300)])),
]
PROTOCOL_DECODERS: dict[str, Callable[[bytes], object]] = {
    "protocol.decode_ids": decode_ids,
    "protocol.decode_objects": decode_objects,
    "protocol.split_objects": split_objects,
    "protocol.decode_statuses": lambda data: decode_statuses(data, 3),
    "protocol.decode_delta_upload": decode_delta_upload,
    "protocol.decode_delta_get": lambda data: expand_select(decode_delta_get(data).select, 8),
    "protocol.decode_delta_answer": lambda data: decode_delta_answer(data, 4),
    # A compressed body: at most 64 KiB decompressed, whatever its frame claims.
    "protocol.decompress_body": lambda data: decode_objects(decompress_body(data, 1 << 16, "body")),
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_DECODERS))
@BOUNDED
@given(data=hostile(PROTOCOL_SAMPLES))
@example(data=b"")
@example(data=b"\xc1")
def test_protocol_messages_give_a_value_or_a_protocol_error(name: str, data: bytes) -> None:
    tried(name)
    value = refuses(ProtocolError, PROTOCOL_DECODERS[name], data)
    if name in ("protocol.decode_ids", "protocol.decode_objects") and value is not None:
        assert all(type(v) is bytes for v in value)
    if name == "protocol.split_objects" and value is not None:
        assert [bytes(v) for v in value] == decode_objects(data)


@BOUNDED
@given(st.one_of(values, st.sampled_from(["00" * 32, "0" * 63, "g" * 64, "\u0660" * 64])))
def test_hex_ids_give_an_id_or_a_protocol_error(value: object) -> None:
    tried("protocol.parse_hex_id")
    oid = refuses(ProtocolError, parse_hex_id, value, "head")
    assert oid is None or len(oid) == 32


@BOUNDED
@given(st.binary(max_size=16), st.integers(0, 1 << 40))
def test_declared_delta_sizes_never_raise(delta: bytes, base: int) -> None:
    tried("protocol.delta_output_size")
    size = delta_output_size(base, delta)
    assert size is None or isinstance(size, int)


OBJECT_SAMPLES = [
    encode_blob(b"chunk"),
    encode_blob(bytes(300)),
    encode_dir_leaf([DirEntry("a", EntryKind.FILE, ID, 3),
                     DirEntry("r.0.0.mca", EntryKind.REGION, ID, 2, ID2)]),
    encode_index(2, [IndexEntry("a", ID), IndexEntry("b", ID2)]),
    encode_index(1, [IndexEntry(0, ID), IndexEntry(8, ID2)]),
    encode_region_leaf([ChunkEntry(0, ID, ZLIB, 5, False), ChunkEntry(1023, ID2, LZ4, 2**32 - 1, True)]),
    encode_snapshot(Snapshot(ID, (ID2,), 1, "a", "h", "m", {"chunks": 3})),
]


@BOUNDED
@given(hostile(OBJECT_SAMPLES), st.sampled_from(list(Kind)))
@example(b"\x92\x01\xc6\xff\xff\xff\xff", Kind.BLOB)
@example(b"\x92\x02\xdd\xff\xff\xff\xff", Kind.DIR)
def test_objects_decode_or_raise_decode_error_and_check_agrees(data: bytes, kind: Kind) -> None:
    tried("objects.decode")
    obj = refuses(DecodeError, decode, data)
    tried("objects.check")
    assert (refuses(DecodeError, check, data) is None and obj is None) or obj is not None
    if obj is not None:
        check(data)
        check(memoryview(data))
    tried("objects.decode_blob")
    blob = refuses(DecodeError, decode_blob, data)
    assert blob is None or (isinstance(obj, bytes) and blob == obj)
    tried("graph.decode_as")
    refuses(DecodeError, decode_as, hash_bytes(data), data, kind)


# -- delta batches ------------------------------------------------------------------------

ITEMS = [DeltaItem(ID, ID2, ZLIB, KIND_DELTA, b"\x00\x00\x00\x05"),
         DeltaItem(ID, ID2, ZLIB, KIND_ZSTD, zstd_delta(b"base", b"base and more")),
         DeltaItem(ID2, None, GZIP, KIND_RAW, b"\x0a\x00\x00\x00")]
STREAM_SAMPLES = [
    msgpack.packb([1, 2, None]) + b"".join(
        msgpack.packb([i.new_id, i.base_id, i.compression, i.kind, i.data]) for i in ITEMS),
    msgpack.packb([1, 0, None]),
]


def _zstd(stream: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=1).compress(stream)


@BOUNDED
@given(hostile(STREAM_SAMPLES), st.booleans())
@example(b"\x93\x01\xce\xff\xff\xff\xff\xc0", True)  # a header claiming 4 billion items
def test_delta_batches_decode_or_raise_delta_error(stream: bytes, framed: bool) -> None:
    tried("delta.decode_batch")
    data = _zstd(stream) if framed else stream
    items = refuses(DeltaError, decode_batch, data, max_items=100, max_bytes=MIB)
    for item in items or ():
        tried("delta.apply_delta")
        refuses(DeltaError, apply_delta, b"base", item, limit=MIB)


@BOUNDED
@given(st.binary(max_size=64) | st.lists(st.sampled_from(
    [b"\x00", b"\x01", b"\x7f", b"\xff\xff\xff\xff\x0f", b"\x80" * 9 + b"\x01", b"a" * 8]),
    max_size=20).map(b"".join), st.binary(max_size=32))
def test_byte_deltas_patch_or_raise_delta_error(delta: bytes, base: bytes) -> None:
    tried("delta.patch_bytes")
    out = refuses(DeltaError, patch_bytes, base, delta, limit=4096)
    assert out is None or len(out) <= 4096


@BOUNDED
@given(hostile([zstd_delta(b"base" * 20, b"base" * 30), zstd_delta(b"", bytes(100))]),
       st.binary(max_size=32))
def test_zstd_items_patch_or_raise_delta_error(frame: bytes, base: bytes) -> None:
    tried("delta.zstd_patch")
    out = refuses(DeltaError, zstd_patch, base, frame, limit=4096)
    assert out is None or len(out) <= 4096


# -- region files ---------------------------------------------------------------------------


@st.composite
def region_files(draw: st.DrawFn) -> bytes:
    """A header whose locations point anywhere (into the header, past the end, overlapping),
    chunk heads declaring up to 2^32 - 1 bytes, and a body of a few sectors."""
    sectors = draw(st.integers(0, 4))
    body = bytearray(draw(st.binary(min_size=sectors * SECTOR, max_size=sectors * SECTOR)))
    header = bytearray(HEADER_SIZE)
    for _ in range(draw(st.integers(0, 8))):
        slot = draw(st.integers(0, 1023))
        offset = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 300, 2**24 - 1]))
        count = draw(st.sampled_from([0, 1, 2, 255]))
        struct.pack_into(">I", header, 4 * slot, offset << 8 | count)
        struct.pack_into(">I", header, 4096 + 4 * slot, draw(st.integers(0, 2**32 - 1)))
        at = (offset - 2) * SECTOR
        if at >= 0 and at + 5 <= len(body):
            length = draw(st.sampled_from([0, 1, 5, 4096, 2**31, 2**32 - 1]))
            ctype = draw(st.sampled_from([1, 2, 3, 4, 5, 127, 0x82, 0xFF]))
            struct.pack_into(">IB", body, at, length, ctype)
    return bytes(header + body)


@BOUNDED
@given(region_files() | st.binary(max_size=HEADER_SIZE + 64), st.booleans())
def test_region_files_parse_with_problems_never_an_exception(data: bytes, externals: bool) -> None:
    tried("region.parse_region")
    load = (lambda slot: b"\x78\x9c" + bytes(slot % 7)) if externals else None
    parsed = refuses(RegionError, parse_region, data, load)
    if parsed is None:
        assert 0 < len(data) < HEADER_SIZE
        return
    for chunk in parsed.chunks:
        assert 0 <= chunk.slot < 1024 and (chunk.external or len(chunk.payload) < len(data))
    assert all(str(p) for p in parsed.problems)


# -- NBT and chunk payloads (the paths diff takes) ------------------------------------------

NBT_PIECES = [
    b"\x09\x00\x01L\x0a\x7f\xff\xff\xff",  # a list of 2^31 - 1 compounds
    b"\x09\x00\x01L\x09\x00\x01\x00\x00",  # a list of 65,536 lists (cut short)
    b"\x07\x00\x01B\x7f\xff\xff\xff",  # a byte array of 2^31 - 1
    b"\x0b\x00\x00\x7f\xff\xff\xff",  # an int array of 2^31 - 1
    b"\x0c\x00\x00\x80\x00\x00\x00",  # a negative long array length
    b"\x08\x00\x01s\xff\xff",  # a string of 65,535 bytes (missing)
    b"\x08\xff\xff",  # a name of 65,535 bytes (missing)
    b"\x09\x00\x00\x00\x00\x00\x00\x05",  # a list of 5 End tags
    b"\x09\x00\x00\x0d\x00\x00\x00\x01",  # a list of unknown tags
    b"\x0a\x00\x00",  # a nested compound
    b"\x00",  # an End tag
    b"\x0d\x00\x00",  # an unknown tag id
    b"\x01\x00\x01b\x05",  # a byte
    b"\x03\x00\x01i\x00\x00\x00\x01",  # an int
    b"\x08\x00\x01t\x00\x02\xc0\x80",  # a string in modified UTF-8
    b"\x08\x00\x01u\x00\x01\xff",  # a string no Java reads
]


def _deep_lists(depth: int) -> bytes:
    return b"\x0a\x00\x00" + b"\x09\x00\x00\x09\x00\x00\x00\x01" * depth + b"\x00"


nbt_documents = st.one_of(
    st.lists(st.sampled_from(NBT_PIECES) | st.binary(max_size=6), max_size=24).map(
        lambda parts: b"\x0a\x00\x00" + b"".join(parts) + b"\x00"),
    st.sampled_from([_deep_lists(100_000), b"\x0a\x00\x00" * 100_000, b"\x0a" * 5]),
    st.binary(max_size=64),
)


@BOUNDED
@given(nbt_documents)
def test_nbt_is_loaded_or_refused_with_nbt_error(raw: bytes) -> None:
    tried("nbt.load")
    refuses(nbt.NbtError, nbt.load, raw)


@BOUNDED
@given(nbt_documents, st.sampled_from([GZIP, ZLIB, NONE, LZ4, 127, 9]), st.booleans())
def test_payloads_load_or_raise_chunk_decode_error(raw: bytes, compression: int,
                                                   cut: bool) -> None:
    tried("chunk.load_nbt")
    try:
        payload = compress(compression, raw)
    except ChunkDecodeError:
        payload = raw
    if cut:
        payload = payload[: len(payload) // 2]
    refuses(ChunkDecodeError, load_nbt, compression, payload, limit=4 * MIB)


@BOUNDED
@given(nbt_documents, nbt_documents, st.sampled_from([ZLIB, NONE]))
def test_classify_change_gives_a_verdict_or_chunk_decode_error(a: bytes, b: bytes,
                                                               compression: int) -> None:
    tried("chunk.classify_change")
    verdict = refuses(ChunkDecodeError, classify_change,
                      (compression, compress(compression, a)), (NONE, b))
    assert verdict in (None, "content", "resave")


@BOUNDED
@given(st.binary(max_size=40) | st.lists(st.sampled_from(
    [b"\xc0\x80", b"\xed\xa0\x80", b"\xe0", b"\xf0\x9f\x98\x80", b"a"]), max_size=8).map(b"".join))
def test_java_strings_decode_or_raise_unicode_decode_error(data: bytes) -> None:
    tried("nbt.decode_java_utf")
    refuses(UnicodeDecodeError, nbt.decode_java_utf, data)


# -- huge declared sizes allocate nothing ---------------------------------------------------

MEMORY_DECODERS: dict[str, Callable[[bytes], object]] = {
    **PROTOCOL_DECODERS,
    "objects.decode": decode,
    "objects.check": check,
    "delta.decode_batch": lambda data: decode_batch(_zstd(data), max_items=10, max_bytes=MIB),
}
MEMORY_ERRORS = (ProtocolError, DecodeError, DeltaError)


@pytest.mark.parametrize("name", sorted(MEMORY_DECODERS))
def test_huge_declared_sizes_and_deep_nesting_stay_small(name: str) -> None:
    inputs = [_with_headers(h, b"xy", wrap) for h in HUGE_HEADERS for wrap in (0, 1)] + DEEP
    tracemalloc.start()
    try:
        for data in inputs:
            tried(f"{name} (memory)")
            tracemalloc.reset_peak()
            started = time.perf_counter()
            refuses(MEMORY_ERRORS, MEMORY_DECODERS[name], data)
            peak = tracemalloc.get_traced_memory()[1]
            assert peak < 16 * MIB, (name, data[:8], peak)
            assert time.perf_counter() - started < 5, (name, data[:8])
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("piece", [p for p in NBT_PIECES if len(p) > 6][:7])
def test_nbt_declaring_gigabytes_allocates_nothing(piece: bytes) -> None:
    tracemalloc.start()
    try:
        for compression in (NONE, ZLIB, LZ4):
            tried("chunk.load_nbt (memory)")
            payload = compress(compression, b"\x0a\x00\x00" + piece)
            refuses(ChunkDecodeError, load_nbt, compression, payload)
        assert tracemalloc.get_traced_memory()[1] < 8 * MIB
    finally:
        tracemalloc.stop()


# -- decompression bombs in a world: snapshot and diff ---------------------------------------

BOMBS = {ZLIB: (zlib_zeros, GIB // 2), GZIP: (gzip_zeros, GIB // 2), LZ4: (lz4_zeros, GIB)}


def _nbt_chunk() -> bytes:
    return b"\x0a\x00\x00\x03\x00\x0bDataVersion\x00\x00\x0c\xa0\x00"


@pytest.mark.parametrize("compression", sorted(BOMBS))
def test_a_bomb_chunk_in_a_world_is_snapshotted_and_diffed_in_bounded_memory(
    tmp_path: Path, compression: int
) -> None:
    build, size = BOMBS[compression]
    bomb = build(size)
    world = make_world(tmp_path / "world")
    good = ChunkRecord(0, compression, compress(compression, _nbt_chunk()), 1)
    # A payload over ~1 MiB must live in its .mcc file, as the game stores it.
    external = len(bomb) > 255 * SECTOR - 5
    region = world / "region" / "r.0.0.mca"
    region.write_bytes(write_region([good, ChunkRecord(1, compression, compress(
        compression, _nbt_chunk() + b"\x00"), 1)])[0])
    with Repository.init(world) as repo:
        before = repo.snapshot("good").oid
        data, mcc = write_region([good, ChunkRecord(1, compression, bomb, 2, external)])
        region.write_bytes(data)
        for slot, payload in mcc.items():
            (world / "region" / f"c.{slot % 32}.{slot // 32}.mcc").write_bytes(payload)
        tracemalloc.start()
        started = time.perf_counter()
        try:
            after = repo.snapshot("bomb").oid
            tried(f"diff bomb {compression}")
            changes = [c for c in repo.diff(before, after) if isinstance(c, ChunkChange)]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert [(c.x, c.z, c.change) for c in changes] == [(1, 0, "unknown")]
    assert "more than" in changes[0].detail
    assert time.perf_counter() - started < 20
    # Inflating stops at the limit (64 MiB + 1 byte), held twice while zlib joins its output
    # blocks; the bomb's own bytes are a few MiB.
    assert peak < 2 * MAX_NBT_BYTES + len(bomb) * 3 + 16 * MIB, peak


# -- the coordinator's endpoints: hostile bodies, bombs -------------------------------------

MSGPACK_ROUTES = ["objects/missing", "objects/status", "objects", "objects/get",
                  "objects/changed", "objects/delta", "objects/delta/get", "objects/tree",
                  "objects/tree/get"]
BODIES = [b"", b"\xc1", *DEEP, *(_with_headers(h, b"xy", w) for h in HUGE_HEADERS for w in (0, 1)),
          msgpack.packb([{}, _zstd(b"\x91" * 10_000)]), msgpack.packb([["x"] * 3])]
JSON_BODIES = [b"[" * 60_000, b'{"a":' * 20_000, b"\xff\xfe", b'"\\ud800"', b"1e999999",
               b'{"holder": "h", "ttl": 1e308}', b'{"fencing": 99999999999999999999999999}']
JSON_ROUTES = ["lease", "lease/renew", "lease/release", "head", "rollback", "members",
               "sync-request"]


def test_coordinator_answers_hostile_bodies_with_4xx(tmp_path: Path) -> None:
    with running(tmp_path / "c") as server:
        alice = make_session(server)["alice"]
        headers = {"Authorization": f"Bearer {alice._token}"}
        bad: list[tuple[str, bytes, int, str]] = []
        for tail in MSGPACK_ROUTES:
            for body in BODIES:
                tried(f"coordinator POST {tail}")
                r = server.http.post(f"/v1/sessions/s1/{tail}", content=body,
                                     headers={**headers, "Content-Type": MSGPACK})
                if not 400 <= r.status_code < 500:
                    bad.append((tail, body[:12], r.status_code, r.text[:200]))
        for tail in JSON_ROUTES:
            for body in JSON_BODIES:
                tried(f"coordinator POST {tail} (json)")
                r = server.http.post(f"/v1/sessions/s1/{tail}", content=body,
                                     headers={**headers, "Content-Type": "application/json"})
                if not 200 <= r.status_code < 500:
                    bad.append((tail, body[:12], r.status_code, r.text[:200]))
        assert bad == []


def test_coordinator_refuses_delta_bombs_in_bounded_memory(tmp_path: Path) -> None:
    limits = Limits(rate=FAST.rate, burst=FAST.burst, max_delta_bytes=4 * MIB,
                    max_delta_rebuild=8 * MIB)
    with running(tmp_path / "c", limits=limits) as server:
        alice = make_session(server)["alice"]
        headers = {"Authorization": f"Bearer {alice._token}", "Content-Type": MSGPACK}
        # A base in the session's store that inflates to half a GiB, and a delta against it.
        base = encode_blob(zlib_zeros(GIB // 2))
        alice.upload([base])
        delta = DeltaItem(ID, hash_bytes(base), ZLIB, KIND_DELTA, b"\x00\x00\x00\x01")
        zdelta = DeltaItem(ID, hash_bytes(base), ZLIB, KIND_ZSTD, zstd_delta(b"", b"x"))
        header = msgpack.packb([1, 1, None])
        cases = {
            "declares a gigabyte": (_declare(_zstd(header + msgpack.packb(
                [ID, None, ZLIB, KIND_RAW, bytes(MIB)])), GIB), {413}),
            "stream of 5 MiB": (_zstd(header + msgpack.packb(
                [ID, None, ZLIB, KIND_RAW, bytes(5 * MIB)])), {413}),
            "no declared size": (_stream_without_size(header + msgpack.packb(
                [ID, None, ZLIB, KIND_RAW, bytes(MIB)])), {400}),
            "base is a bomb": (encode_batch([delta]), {200}),
            "base of a zstd item is a bomb": (encode_batch([zdelta]), {200}),
        }
        tracemalloc.start()
        try:
            for name, (batch, statuses) in cases.items():
                tried("coordinator POST objects/delta (bomb)")
                tracemalloc.reset_peak()
                r = server.http.post("/v1/sessions/s1/objects/delta",
                                     content=encode_delta_upload(None, batch), headers=headers)
                peak = tracemalloc.get_traced_memory()[1]
                assert r.status_code in statuses, (name, r.status_code, r.text)
                if r.status_code == 200:
                    failed = r.json()["failed"]
                    assert len(failed) == 1 and "more than" in failed[0]["reason"], failed
                # At most the 64 MiB NBT cap for a base (twice, while zlib joins its output),
                # plus the bytes of the bodies.
                assert peak < 2 * MAX_NBT_BYTES + 32 * MIB, (name, peak)
        finally:
            tracemalloc.stop()


def _declare(frame: bytes, size: int) -> bytes:
    """``frame`` with its header claiming ``size`` bytes of content (an 8-byte size field)."""
    descriptor = frame[4]  # frame header: magic, descriptor, [window], [dictionary id], [size]
    size_bytes = {0: 1 if descriptor & 0x20 else 0, 1: 2, 2: 4, 3: 8}[descriptor >> 6]
    at = 5 + (0 if descriptor & 0x20 else 1) + (0, 1, 2, 4)[descriptor & 3]
    return (frame[:4] + bytes([0xC0 | descriptor & 0x3F]) + frame[5:at]
            + size.to_bytes(8, "little") + frame[at + size_bytes:])


def _stream_without_size(stream: bytes) -> bytes:
    compressor = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    return compressor.compress(stream) + compressor.flush()


def test_coordinator_builds_delta_answers_from_bomb_chunks_as_stored_items(tmp_path: Path) -> None:
    """A pull's delta batch over a chunk whose payload (and base) is a bomb: the coordinator
    sends it as stored bytes, decompressing at most the NBT cap."""
    world = make_world(tmp_path / "world")
    region = world / "region" / "r.0.0.mca"
    region.write_bytes(write_region([ChunkRecord(0, ZLIB, compress(ZLIB, _nbt_chunk()), 1)])[0])
    bomb = zlib_zeros(GIB // 2)
    with running(tmp_path / "c") as server, Repository.init(world) as repo:
        owner = make_session(server)["owner"]
        first = repo.snapshot("v1")
        region.write_bytes(write_region([ChunkRecord(0, ZLIB, bomb, 2)])[0])
        second = repo.snapshot("v2")
        store = repo.store.objects
        objects = [store.get_raw(oid) for oid in store.iter_ids()]
        owner.upload(objects)
        fencing = owner.acquire("owner-pc", 60).fencing  # delta requests pair session trees
        owner.set_head(None, first.oid, fencing)
        owner.set_head(first.oid, second.oid, fencing)
        base = repo.read_snapshot(first.oid).root
        target = repo.read_snapshot(second.oid).root
        tracemalloc.start()
        try:
            count, batch = owner.download_delta(DeltaRequest(base, target, ((0, 1),)))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        tried("coordinator POST objects/delta/get (bomb)")
        old_blob = hash_bytes(encode_blob(compress(ZLIB, _nbt_chunk())))
        items = decode_batch(batch, max_items=1, max_bytes=64 * MIB,
                             want=[(hash_bytes(encode_blob(bomb)), old_blob)])
        assert count == 1 and items[0].kind == KIND_STORED and items[0].data == bomb
        assert peak < 2 * MAX_NBT_BYTES + 64 * MIB, peak
