from __future__ import annotations

import importlib.util
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from peerhost_store.region import (
    CUSTOM,
    GZIP,
    HEADER_SIZE,
    LZ4,
    NONE,
    SECTOR,
    ZLIB,
    ChunkRecord,
    ParsedRegion,
    RegionError,
    external_name,
    parse_region,
    region_coords,
    write_region,
)

# parse_region looks at the first bytes of each payload, so random payloads start like real ones.
PREFIX = {GZIP: b"\x1f\x8b", ZLIB: b"\x78\x9c", NONE: b"\x0a", LZ4: b"LZ4Block", CUSTOM: b""}


def external_loader(region_path: Path) -> Callable[[int], bytes | None]:
    coords = region_coords(region_path.name)
    assert coords is not None, region_path

    def load(slot: int) -> bytes | None:
        mcc = region_path.parent / external_name(*coords, slot)
        return mcc.read_bytes() if mcc.exists() else None

    return load


def parse_file(path: Path) -> ParsedRegion:
    loader = external_loader(path) if region_coords(path.name) else None
    return parse_region(path.read_bytes(), loader)


def round_trip(records: list[ChunkRecord]) -> ParsedRegion:
    data, externals = write_region(records)
    return parse_region(data, externals.get)


@st.composite
def chunk_records(draw: st.DrawFn) -> list[ChunkRecord]:
    slots = draw(st.lists(st.integers(0, 1023), unique=True, max_size=24))
    records = []
    for slot in slots:
        compression = draw(st.sampled_from(sorted(PREFIX)))
        # a random head and a run of one byte: cheap payloads that cross sector boundaries
        head = draw(st.binary(max_size=40))
        run = bytes([draw(st.integers(0, 255))]) * draw(st.integers(0, 3 * SECTOR))
        timestamp = draw(st.integers(0, 2**32 - 1))
        external = draw(st.booleans())
        payload = PREFIX[compression] + head + run
        records.append(ChunkRecord(slot, compression, payload, timestamp, external))
    return records


def record_of(size: int, slot: int = 0) -> ChunkRecord:
    return ChunkRecord(slot, ZLIB, PREFIX[ZLIB] + bytes(size - 2), 7)


@given(chunk_records())
@example([])
@example([record_of(SECTOR - 5)])  # chunk exactly fills one sector
@example([record_of(SECTOR - 4), record_of(SECTOR - 5, 1)])  # one byte into a second sector
@example([ChunkRecord(1023, CUSTOM, b"", 2**32 - 1, True), ChunkRecord(0, CUSTOM, b"", 0)])
def test_parse_inverts_write(records: list[ChunkRecord]) -> None:
    parsed = round_trip(records)
    assert parsed.problems == []
    assert parsed.chunks == sorted(records, key=lambda c: c.slot)


def test_write_lays_out_sectors() -> None:
    data, externals = write_region(
        [record_of(SECTOR - 5, 3), ChunkRecord(9, LZ4, b"LZ4Block", 1, True)]
    )
    assert len(data) == HEADER_SIZE + 2 * SECTOR
    assert struct.unpack_from(">I", data, 4 * 3) == (2 << 8 | 1,)
    assert struct.unpack_from(">I", data, 4 * 9) == (3 << 8 | 1,)
    assert data[3 * SECTOR : 3 * SECTOR + 5] == b"\x00\x00\x00\x01\x84"  # external stub
    assert externals == {9: b"LZ4Block"}


def test_write_region_refuses_bad_records() -> None:
    with pytest.raises(RegionError):
        write_region([record_of(10, 5), record_of(10, 5)])
    with pytest.raises(RegionError):
        write_region([record_of(10, 1024)])
    with pytest.raises(RegionError):
        write_region([ChunkRecord(0, 9, b"x", 0)])
    with pytest.raises(RegionError, match="external"):
        write_region([record_of(255 * SECTOR)])


@given(
    st.binary(max_size=3 * SECTOR),
    st.lists(st.tuples(st.integers(0, 3 * SECTOR - 1), st.integers(0, 255))),
)
def test_parse_never_raises_on_damage(tail: bytes, patches: list[tuple[int, int]]) -> None:
    data, _ = write_region(
        [record_of(100, 0), record_of(5000, 1), ChunkRecord(2, NONE, b"\x0a\x00", 0)]
    )
    damaged = bytearray(data + tail)
    for offset, value in patches:
        damaged[offset % len(damaged)] = value  # mostly hits the header's locations
    parsed = parse_region(bytes(damaged), lambda slot: None)
    problem_slots = {p.slot for p in parsed.problems}
    assert not problem_slots & {c.slot for c in parsed.chunks}
    assert all(c.payload in damaged for c in parsed.chunks)


def test_parse_refuses_short_header() -> None:
    with pytest.raises(RegionError, match="truncated header"):
        parse_region(bytes(HEADER_SIZE - 1))
    assert parse_region(b"") == ParsedRegion([], [])


# file -> (slots that parse, {slot: expected message substring}); see tests/data/README.md
EXPECTED: dict[str, tuple[list[int], dict[int, str]]] = {
    "gzip.mca": ([0, 1, 33], {}),
    "uncompressed.mca": ([0, 5, 1023], {}),
    "lz4.mca": ([0, 2, 64], {}),
    "mixed.mca": ([0, 1, 2, 3, 4], {}),
    "external/r.0.0.mca": ([0, 33], {}),
    "unpadded.mca": ([0, 1], {}),
    "header-only.mca": ([], {}),
    "empty.mca": ([], {}),
    "stale-free-sectors.mca": ([0, 1], {}),
    "offset-past-end.mca": ([0], {1: "is past the end of the file"}),
    "overlapping.mca": (
        [0],
        {1: "sectors overlap another chunk", 2: "sectors overlap another chunk"},
    ),
    "zero-length.mca": ([0], {1: "zero chunk length"}),
    "oversized-length.mca": ([0], {1: "exceeds its 1 sectors", 2: "runs past the end of the file"}),
    "unknown-compression.mca": ([0], {1: "unknown compression type 5"}),
    "missing-mcc/r.0.0.mca": ([0], {33: "external payload file (.mcc) is missing"}),
    "bad-zlib.mca": ([0], {1: "not a zlib stream"}),
    "deep-nbt.mca": ([0, 1], {}),
    "zlib-bomb.mca": ([0, 1], {}),
}
CLASSIC_ZLIB = bytes.fromhex("789c2b484d2dcac82f2e29a0120d0064ff2225")
COMPRESSIONS = {"gzip.mca": GZIP, "uncompressed.mca": NONE, "lz4.mca": LZ4}


def test_every_fixture_is_listed(data_dir: Path) -> None:
    on_disk = {p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*.mca")}
    assert on_disk == set(EXPECTED) | {"truncated-header.mca"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses_as_documented(data_dir: Path, name: str) -> None:
    kept, problems = EXPECTED[name]
    parsed = parse_file(data_dir / name)
    assert [c.slot for c in parsed.chunks] == kept
    assert {p.slot for p in parsed.problems} == set(problems)
    for problem in parsed.problems:
        assert problem.slot is not None and problems[problem.slot] in problem.message
    if name in COMPRESSIONS:
        assert {c.compression for c in parsed.chunks} == {COMPRESSIONS[name]}
    assert all(c.timestamp == 1_700_000_000 + c.slot for c in parsed.chunks)


def test_truncated_header_fixture(data_dir: Path) -> None:
    with pytest.raises(RegionError, match="truncated header: 5000 bytes"):
        parse_file(data_dir / "truncated-header.mca")


def test_external_fixture_payload_comes_from_mcc(data_dir: Path) -> None:
    chunks = {c.slot: c for c in parse_file(data_dir / "external/r.0.0.mca").chunks}
    assert chunks[33].external and not chunks[0].external
    assert chunks[33].payload == (data_dir / "external/c.1.1.mcc").read_bytes()


def test_mixed_fixture_has_every_compression(data_dir: Path) -> None:
    chunks = parse_file(data_dir / "mixed.mca").chunks
    assert [c.compression for c in chunks] == [GZIP, ZLIB, NONE, LZ4, CUSTOM]


def test_fixture_oddities_are_real(data_dir: Path) -> None:
    assert (data_dir / "unpadded.mca").stat().st_size % SECTOR != 0
    assert (data_dir / "header-only.mca").stat().st_size == HEADER_SIZE
    assert (data_dir / "empty.mca").stat().st_size == 0
    assert not (data_dir / "missing-mcc" / "c.1.1.mcc").exists()
    small = [p for p in data_dir.rglob("*.mc[ac]") if p.name != "zlib-bomb.mca"]
    assert all(p.stat().st_size < 40 * 1024 for p in small)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_chunks_survive_rewrite(data_dir: Path, name: str) -> None:
    parsed = parse_file(data_dir / name)
    assert round_trip(parsed.chunks).chunks == parsed.chunks


def test_make_fixtures_reproduces_committed_files(data_dir: Path, tmp_path: Path) -> None:
    if zlib.compress(b"peerhost" * 10, 6) != CLASSIC_ZLIB:
        pytest.skip("this zlib build (zlib-ng?) compresses differently from the one that made them")
    spec = importlib.util.spec_from_file_location("make_fixtures", data_dir / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    make_fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_fixtures)
    make_fixtures.main(tmp_path)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.mc[ac]"))
    assert made == sorted(p.relative_to(data_dir) for p in data_dir.rglob("*.mc[ac]"))
    for rel in made:
        assert (tmp_path / rel).read_bytes() == (data_dir / rel).read_bytes(), rel


def test_real_regions_parse_clean_and_round_trip(worlds_dir: Path) -> None:
    files = sorted(worlds_dir.rglob("*.mca"))
    assert files
    dirty: list[str] = []
    chunks = 0
    for path in files:
        parsed = parse_file(path)
        if parsed.problems:
            dirty.append(f"{path}: {[str(p) for p in parsed.problems[:3]]}")
            continue
        assert round_trip(parsed.chunks).chunks == parsed.chunks, path
        chunks += len(parsed.chunks)
    assert dirty == []
    assert chunks > 10_000
