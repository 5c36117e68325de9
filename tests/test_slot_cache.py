"""The slot cache: a changed region file is read again, but only its changed chunks are
hashed and stored (scan.py). It must never hand back a stale id: it keys on the bytes read
now, so a same-size rewrite in the same second, a file too recent for its stat, a chunk moved
to another slot and a chunk whose object gc deleted are all seen."""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path

import pytest
from worldfs_helpers import make_world

from peerhost_store.ids import hash_bytes
from peerhost_store.objects import encode_blob
from peerhost_store.region import ZLIB, ChunkRecord, write_region
from peerhost_store.repo import Repository
from peerhost_store.scan import cached_ids

STAMP = 1_700_000_000


def chunk(slot: int, text: bytes) -> ChunkRecord:
    # Level 0 (stored): the length depends on the text's length only.
    return ChunkRecord(slot, ZLIB, zlib.compress(b"\x0a\x00\x00" + text * 50 + b"\x00", 0), STAMP)


def write(path: Path, chunks: list[ChunkRecord], *, age: float | None = 3600) -> None:
    data, _ = write_region(chunks)
    path.write_bytes(data)
    if age is not None:
        old = time.time() - age
        os.utime(path, (old, old))


def files(world: Path) -> dict[str, bytes]:
    return {p.relative_to(world).as_posix(): p.read_bytes() for p in sorted(world.rglob("*"))
            if p.is_file() and ".peerhost" not in p.parts and p.name != "session.lock"}


@pytest.fixture
def world(tmp_path: Path) -> Path:
    return make_world(tmp_path / "w")


def snapshot_round_trips(repo: Repository, tmp_path: Path, name: str) -> dict[str, int]:
    result = repo.snapshot(name)
    out = tmp_path / f"out-{name}"
    repo.checkout(result.oid, out)
    assert files(out) == files(repo.world), "the snapshot holds what the world holds"
    return result.scan.summary


def test_only_changed_chunks_are_hashed_and_a_same_size_rewrite_is_seen(
        world: Path, tmp_path: Path) -> None:
    region = world / "region" / "r.0.0.mca"
    chunks = [chunk(slot, b"%04d" % slot) for slot in range(40)]
    write(region, chunks)
    repo = Repository.init(world)
    assert snapshot_round_trips(repo, tmp_path, "a")["cached_chunks"] == 0
    # The same length, the same header timestamp, the same sectors: only the bytes differ.
    changed = [*chunks]
    changed[7] = chunk(7, b"XXXX")
    assert len(changed[7].payload) == len(chunks[7].payload)
    write(region, changed)
    summary = snapshot_round_trips(repo, tmp_path, "b")
    assert summary["cached_chunks"] == 39


def test_a_file_too_recent_for_its_stat_keeps_its_slot_cache(
        world: Path, tmp_path: Path) -> None:
    region = world / "region" / "r.0.0.mca"
    chunks = [chunk(slot, b"%04d" % slot) for slot in range(16)]
    write(region, chunks, age=None)  # written just now: its stat is not trusted
    repo = Repository.init(world)
    repo.snapshot("a")
    value = repo.store.stats.load()["region/r.0.0.mca"]
    assert len(cached_ids(value)) == 1 + 16, "the region map and each chunk"
    changed = [*chunks]
    changed[3] = chunk(3, b"now!")
    write(region, changed, age=None)  # again within the same second, same size
    summary = snapshot_round_trips(repo, tmp_path, "b")
    assert summary["cached_chunks"] == 15


def test_a_chunk_moved_to_another_slot_keeps_its_id(world: Path, tmp_path: Path) -> None:
    region = world / "region" / "r.0.0.mca"
    a, b = chunk(0, b"aaaa"), chunk(1, b"bbbb")
    write(region, [a, b])
    repo = Repository.init(world)
    repo.snapshot("a")
    write(region, [ChunkRecord(5, ZLIB, a.payload, STAMP), ChunkRecord(9, ZLIB, b.payload, STAMP)])
    assert snapshot_round_trips(repo, tmp_path, "b")["cached_chunks"] == 2


def test_ids_gc_deleted_are_never_reused(world: Path, tmp_path: Path) -> None:
    region = world / "region" / "r.0.0.mca"
    old = [chunk(0, b"old!"), chunk(1, b"same")]
    write(region, old)
    repo = Repository.init(world)
    repo.snapshot("a")
    write(region, [chunk(0, b"new!"), old[1]])
    repo.snapshot("b")
    repo.gc(keep_last=1)
    old_blob = hash_bytes(encode_blob(old[0].payload))
    assert old_blob not in repo.store.objects, "gc deleted the old chunk"
    for value in repo.store.stats.load().values():
        assert old_blob not in cached_ids(value)
    write(region, old)  # the old chunk comes back: it must be stored again
    snapshot_round_trips(repo, tmp_path, "c")
    assert old_blob in repo.store.objects
    assert repo.verify().ok
