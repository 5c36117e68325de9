"""Snapshot, checkout, restore and diff on every real world in ../shared/worlds."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import WORLDS
from worldutil import HISTORIES, copy_world, replace_world, world_content, world_names

from peerhost_store.diff import ChunkChange, FileChange
from peerhost_store.region import chunk_coords, region_coords
from peerhost_store.repo import Repository

ALL_WORLDS = world_names(WORLDS) or ["(missing)"]
PAIRS = [(h, a, b) for h, versions in HISTORIES.items() for a, b in itertools.pairwise(versions)]


@pytest.mark.parametrize("name", ALL_WORLDS)
def test_round_trip(name: str, worlds_dir: Path, tmp_path: Path) -> None:
    source = worlds_dir / name
    if not source.is_dir():
        pytest.fail(f"{source} is missing")
    world = copy_world(source, tmp_path / "world")
    with Repository.init(world) as repo:
        result = repo.snapshot("original")
        assert result.scan.warnings == []
        repo.checkout(result.oid, tmp_path / "out")
        assert world_content(tmp_path / "out") == world_content(source)
        assert repo.verify().ok
    with Repository.init(tmp_path / "out") as again:
        assert again.snapshot("re-snapshot").snapshot.root == result.snapshot.root


def _expected_changes(a: Path, b: Path) -> tuple[set[tuple[str, str]], set[tuple[str, int, int, str]]]:
    old, new = world_content(a), world_content(b)
    files, chunks = set(), set()
    for path in old.keys() | new.keys():
        x, y = old.get(path), new.get(path)
        if x == y:
            continue
        files.add((path, "added" if x is None else "removed" if y is None else "modified"))
        if isinstance(x, dict) or isinstance(y, dict):
            xs = x if isinstance(x, dict) else {}
            ys = y if isinstance(y, dict) else {}
            coords = region_coords(path.rpartition("/")[2])
            assert coords is not None
            for slot in xs.keys() | ys.keys():
                if xs.get(slot) != ys.get(slot):
                    status = "added" if slot not in xs else "removed" if slot not in ys else "modified"
                    chunks.add((path, *chunk_coords(*coords, slot), status))
    return files, chunks


@pytest.mark.parametrize(("history", "a", "b"), PAIRS or [("(missing)", "", "")])
def test_diff_matches_slot_by_slot_ground_truth(
    history: str, a: str, b: str, worlds_dir: Path, tmp_path: Path
) -> None:
    src_a, src_b = worlds_dir / history / a, worlds_dir / history / b
    if not src_a.is_dir() or not src_b.is_dir():
        pytest.fail(f"{history} is missing")
    world = copy_world(src_a, tmp_path / "world")
    with Repository.init(world) as repo:
        snap_a = repo.snapshot("a").oid
        replace_world(world, src_b)
        live = list(repo.diff(snap_a, None, classify=False))
        snap_b = repo.snapshot("b").oid
        changes = list(repo.diff(snap_a, snap_b))
        assert [c for c in live if isinstance(c, ChunkChange)] == [
            c for c in repo.diff(snap_a, snap_b, classify=False) if isinstance(c, ChunkChange)
        ]
        files = {(c.path, c.status) for c in changes if isinstance(c, FileChange) and c.kind != "dir"}
        chunks = {(c.path, c.x, c.z, c.status) for c in changes if isinstance(c, ChunkChange)}
        expected_files, expected_chunks = _expected_changes(src_a, src_b)
        assert files == expected_files
        assert chunks == expected_chunks
        modified = [c for c in changes if isinstance(c, ChunkChange) and c.status == "modified"]
        assert all(c.change in ("content", "resave") for c in modified), [c.detail for c in modified if c.change == "unknown"][:3]
        assert all(c.dimension.startswith("minecraft:") for c in changes if isinstance(c, ChunkChange))

        # Restore a over b touches only what differs, and gives a's tree back.
        safety, restored = repo.restore(snap_a)
        assert safety is None
        assert restored.written + restored.removed <= sum(isinstance(c, FileChange) for c in changes)
        assert world_content(world) == world_content(src_a)
        assert repo.scan().root == repo.read_snapshot(snap_a).root
        assert repo.verify().ok


def test_resaves_are_told_from_content_changes(
    real_world: Callable[[str], Path], tmp_path: Path
) -> None:
    history = real_world("aviadbag-1.19-history")
    world = copy_world(history / "3195128", tmp_path / "world")
    with Repository.init(world) as repo:
        a = repo.snapshot("a").oid
        replace_world(world, history / "500ee47")
        b = repo.snapshot("b").oid
        kinds = [c.change for c in repo.diff(a, b) if isinstance(c, ChunkChange) and c.status == "modified"]
    assert kinds.count("resave") > 0 and kinds.count("content") > 0
