"""Object decoding is strict: anything malformed is a DecodeError, never another exception."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerhost_store.errors import DecodeError
from peerhost_store.ids import hash_bytes
from peerhost_store.objects import (
    ChunkEntry,
    DirEntry,
    DirLeaf,
    EntryKind,
    Index,
    IndexEntry,
    RegionLeaf,
    Snapshot,
    check,
    decode,
    encode_blob,
    encode_dir_leaf,
    encode_index,
    encode_region_leaf,
    encode_snapshot,
)

OID = hash_bytes(b"x")


def test_encodings_round_trip() -> None:
    assert decode(encode_blob(b"abc")) == b"abc"
    for n in (0, 255, 256, 65535, 65536):
        assert msgpack.unpackb(encode_blob(bytes(n))) == [1, bytes(n)]
    dirs = [DirEntry("a", EntryKind.FILE, OID, 3), DirEntry("b", EntryKind.REGION, OID, 2, OID)]
    leaf = decode(encode_dir_leaf(dirs))
    assert isinstance(leaf, DirLeaf) and leaf.entries == tuple(dirs)
    chunks = [ChunkEntry(0, OID, 2, 5, False), ChunkEntry(7, OID, 1, 6, True)]
    region_leaf = decode(encode_region_leaf(chunks))
    assert isinstance(region_leaf, RegionLeaf) and region_leaf.entries == tuple(chunks)
    index = decode(encode_index(1, [IndexEntry(0, OID), IndexEntry(8, OID)]))
    assert isinstance(index, Index) and index.level == 1
    snap = Snapshot(OID, (OID,), 1, "a", "h", "m", {"chunks": 3})
    assert decode(encode_snapshot(snap)) == snap


@pytest.mark.parametrize(
    "value",
    [
        [], [99], "x", [1], [1, "text"], [2, [["b", 0, OID, 1], ["a", 0, OID, 1]]],
        [2, [["a", 0, OID, 1], ["a", 0, OID, 1]]], [2, [["", 0, OID, 1]]], [2, [["a", 9, OID, 1]]],
        [2, [["a", 0, b"short", 1]]], [2, [["a", 0, OID, -1]]], [2, [["a", 0, OID, 1, OID]]],
        [4, [[1024, OID, 2, 0, False]]], [4, [[0, OID, 2, 2**32, False]]], [4, [[0, OID, 2, 0, 1]]],
        [3, 0, [[0, OID]]], [3, 1, []], [3, 1, [["a", OID], [1, OID]]], [3, 99, [[0, OID]]],
        [5, OID, [], 0, "a", "h", "m"], [5, OID, [b"x"], 0, "a", "h", "m", {}],
        [5, OID, [], 0, "a", "h", "m", {"k": "v"}], [5, OID, [], 0, 1, "h", "m", {}],
    ],
)
def test_malformed_objects_are_refused(value: object) -> None:
    with pytest.raises(DecodeError):
        decode(msgpack.packb(value, use_bin_type=True))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 6), json_like)
def test_wrong_typed_fields_raise_decode_error(kind: int, body: object) -> None:
    for value in ([kind, body], [kind, 1, body], [kind, OID, body, 0, "a", "h", "m", {}]):
        with contextlib.suppress(DecodeError):
            decode(msgpack.packb(value, use_bin_type=True))


def test_deep_nesting_is_refused() -> None:
    data = b"\x91" * 100_000 + b"\x01"
    with pytest.raises(DecodeError):
        decode(data)


@given(st.binary(max_size=40) | st.builds(
    lambda header, payload, junk: header + payload + junk,
    st.sampled_from([b"\x92\x01\xc4", b"\x92\x01\xc5\x00", b"\x92\x01\xc6\x00\x00\x00",
                     b"\x92\x02\xc4", b"\x93\x01\xc4"]),
    st.binary(max_size=300), st.binary(max_size=2)))
def test_check_refuses_exactly_what_decode_refuses(data: bytes) -> None:
    # The coordinator checks uploads with check() (no payload copy) but stores what decode
    # must later accept.
    try:
        decode(data)
        decodes = True
    except DecodeError:
        decodes = False
    try:
        check(memoryview(data))
        checks = True
    except DecodeError:
        checks = False
    assert checks == decodes
