"""Crafted unusual and corrupt region files (tests/data) through snapshot, checkout and diff."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from worldfs_helpers import make_world

from peerhost_store.diff import ChunkChange
from peerhost_store.region import parse_region, write_region
from peerhost_store.repo import Repository

VALID = ["gzip", "uncompressed", "lz4", "mixed", "unpadded", "header-only", "empty", "stale-free-sectors",
         "deep-nbt", "zlib-bomb"]
CORRUPT = {
    "truncated-header": (None, "truncated header"),
    "offset-past-end": (1, "past the end of the file"),
    "overlapping": (1, "sectors overlap"),
    "zero-length": (1, "zero chunk length"),
    "oversized-length": (1, "exceeds its 1 sectors"),
    "unknown-compression": (1, "unknown compression type 5"),
    "bad-zlib": (1, "not a zlib stream"),
}


def _world(tmp_path: Path, data_dir: Path, fixture: str) -> Path:
    world = make_world(tmp_path / "world")
    shutil.copy(data_dir / f"{fixture}.mca", world / "region" / "r.0.0.mca")
    return world


@pytest.mark.parametrize("fixture", VALID)
def test_valid_unusual_files_round_trip_per_chunk(fixture: str, data_dir: Path, tmp_path: Path) -> None:
    world = _world(tmp_path, data_dir, fixture)
    with Repository.init(world) as repo:
        result = repo.snapshot()
        assert result.scan.warnings == []
        repo.checkout(result.oid, tmp_path / "out")
    original = (world / "region" / "r.0.0.mca").read_bytes()
    restored = (tmp_path / "out" / "region" / "r.0.0.mca").read_bytes()
    if not original:
        assert restored == b""
    else:
        assert parse_region(restored).chunks == parse_region(original).chunks
    with Repository.init(tmp_path / "out") as again:
        assert again.snapshot().snapshot.root == result.snapshot.root


@pytest.mark.parametrize("fixture", sorted(CORRUPT))
def test_corrupt_files_are_kept_whole_with_a_warning(fixture: str, data_dir: Path, tmp_path: Path) -> None:
    slot, message = CORRUPT[fixture]
    world = _world(tmp_path, data_dir, fixture)
    with Repository.init(world) as repo:
        result = repo.snapshot()
        warnings = [str(w) for w in result.scan.warnings]
        assert warnings and all(w.startswith("region/r.0.0.mca: ") for w in warnings)
        assert any(message in w for w in warnings), warnings
        if slot is not None:
            assert any(f"chunk slot {slot} " in w for w in warnings), warnings
            assert result.scan.summary["chunks"] >= 1  # the good chunk 0 is stored per chunk
        repo.checkout(result.oid, tmp_path / "out")
        assert repo.verify().ok
    # Nothing is lost: the file comes back byte for byte.
    assert (tmp_path / "out/region/r.0.0.mca").read_bytes() == (world / "region/r.0.0.mca").read_bytes()
    with Repository.init(tmp_path / "out") as again:
        assert again.snapshot().snapshot.root == result.snapshot.root


def test_external_chunks_round_trip(data_dir: Path, tmp_path: Path) -> None:
    world = make_world(tmp_path / "world")
    for f in (data_dir / "external").iterdir():
        shutil.copy(f, world / "region" / f.name)
    with Repository.init(world) as repo:
        result = repo.snapshot()
        assert result.scan.warnings == [] and result.scan.summary["chunks"] == 2
        repo.checkout(result.oid, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out/region").iterdir()) == ["c.1.1.mcc", "r.0.0.mca"]
    assert (tmp_path / "out/region/c.1.1.mcc").read_bytes() == (world / "region/c.1.1.mcc").read_bytes()
    with Repository.init(tmp_path / "out") as again:
        assert again.snapshot().snapshot.root == result.snapshot.root


def test_missing_mcc_is_reported_and_the_file_kept(data_dir: Path, tmp_path: Path) -> None:
    world = make_world(tmp_path / "world")
    shutil.copy(data_dir / "missing-mcc" / "r.0.0.mca", world / "region" / "r.0.0.mca")
    with Repository.init(world) as repo:
        result = repo.snapshot()
        assert any("chunk slot 33 " in str(w) and ".mcc" in str(w) for w in result.scan.warnings)


@pytest.mark.parametrize(("fixture", "reason"), [("deep-nbt", "deeper than 512"), ("zlib-bomb", "more than")])
def test_hostile_chunks_in_diff_are_unknown_not_a_crash(
    fixture: str, reason: str, data_dir: Path, tmp_path: Path
) -> None:
    world = _world(tmp_path, data_dir, fixture)
    with Repository.init(world) as repo:
        a = repo.snapshot().oid
        path = world / "region" / "r.0.0.mca"
        records = parse_region(path.read_bytes()).chunks
        # Touch the hostile chunk's payload (one extra trailing byte) so diff must decode it.
        bumped = [r if r.slot != 1 else r.__class__(r.slot, r.compression, bytes(r.payload) + b"\0", r.timestamp + 1)
                  for r in records]
        path.write_bytes(write_region(bumped)[0])
        changes = [c for c in repo.diff(a, None) if isinstance(c, ChunkChange)]
    assert [(c.x, c.z, c.status, c.change) for c in changes] == [(1, 0, "modified", "unknown")]
    assert reason in changes[0].detail
