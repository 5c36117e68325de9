"""One damaged object: restore refuses before writing, snapshot and pull are not blocked by it,
and ``phs repair`` heals it from the live world or a remote, or drops what cannot be
recovered from the snapshots that need it and says what was lost."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_sync_support import Server, make_session, new_repo
from worldfs_helpers import make_world
from worldutil import HISTORIES, copy_world, replace_world

from peerhost_cli.main import main
from peerhost_store.errors import DamagedObjects
from peerhost_store.graph import walk
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import EntryKind, encode_blob
from peerhost_store.repair import repair
from peerhost_store.repo import Repository
from peerhost_store.store import LmdbStore
from peerhost_store.sync.transfer import CoordinatorSource, pull, push
from peerhost_store.tree import iter_region, iter_tree

HISTORY = "aviadbag-1.19-history"


def corrupt(store: object, oid: ObjectId) -> None:
    """Flip one bit of a stored object, as a bad disk sector would."""
    assert isinstance(store, LmdbStore)
    data = bytearray(store.objects.backend.get_many([oid])[0])
    data[len(data) // 2] ^= 0x10
    store.objects.backend.put_many([(oid, bytes(data))])


def files(world: Path) -> dict[str, bytes]:
    return {p.relative_to(world).as_posix(): p.read_bytes() for p in sorted(world.rglob("*"))
            if p.is_file() and ".peerhost" not in p.parts}


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    world = make_world(tmp_path / "world")
    (world / "playerdata" / "alice.dat").write_bytes(b"alice v1")
    (world / "playerdata" / "bob.dat").write_bytes(b"bob, unchanged")
    r = Repository.init(world)
    yield r
    r.close()


def two_versions(repo: Repository) -> tuple[ObjectId, ObjectId]:
    v1 = repo.snapshot("v1").oid
    (repo.world / "playerdata" / "alice.dat").write_bytes(b"alice v2")
    return v1, repo.snapshot("v2").oid


OLD_ALICE = hash_bytes(encode_blob(b"alice v1"))  # only in v1
BOB = hash_bytes(encode_blob(b"bob, unchanged"))  # in v1, v2 and the live world


def test_a_restore_needing_a_damaged_object_refuses_before_writing(repo: Repository) -> None:
    v1, v2 = two_versions(repo)
    (repo.world / "level.dat").write_bytes(b"a change that comes before alice.dat")
    repo.snapshot("v3")
    corrupt(repo.store, OLD_ALICE)
    before = files(repo.world)
    for attempt in (repo.restore, repo.rollback):
        head = repo.head()
        with pytest.raises(DamagedObjects) as info:
            attempt(v1)
        assert "playerdata/alice.dat" in str(info.value) and "phs repair" in str(info.value)
        assert files(repo.world) == before, "nothing was written"
        assert repo.head() == head and repo.pending_restore() is None
    (repo.world / "level.dat").write_bytes(b"play goes on")
    assert repo.snapshot("not blocked").created
    assert repo.restore(v2)[1].written == 1


def test_repair_heals_from_the_live_world(repo: Repository) -> None:
    v1, v2 = two_versions(repo)
    corrupt(repo.store, BOB)
    assert not repo.verify().ok
    report = repair(repo)
    assert report.healed == {"the live world": 1} and report.lost == []
    assert repo.verify().ok and repo.head() == v2, "no snapshot had to change"
    assert [oid for oid, _ in repo.log()] == [v2, v1]


def test_repair_drops_what_cannot_be_recovered_and_says_what(
        tmp_path: Path, real_world: Callable[[str], Path]) -> None:
    versions = [real_world(HISTORY) / name for name in HISTORIES[HISTORY][:2]]
    world = copy_world(versions[0], tmp_path / "world")
    with Repository.init(world) as repo:
        v0 = repo.snapshot("v0")
        replace_world(world, versions[1])
        v1 = repo.snapshot("v1")
        now = walk(repo.store.objects, [v1.oid], follow_parents=False).reachable
        path, slot, chunk = next((p, c.slot, c.oid) for p, e in iter_tree(repo.store.objects, v0.snapshot.root)
                                 if e.kind is EntryKind.REGION
                                 for c in iter_region(repo.store.objects, e.oid) if c.oid not in now)
        corrupt(repo.store, chunk)
        report = repair(repo)
        assert [(lost.path, lost.snapshot) for lost in report.lost] == [
            (f"{path} chunk slot {slot}", v0.oid)]
        assert repo.verify().ok
        log = list(repo.log())
        assert [s.message for _, s in log] == ["v1", "v0 (repaired: 1 lost)"]
        assert log[0][1].root == v1.snapshot.root, "v1 lost nothing: only its parent changed"
        assert report.heads == {"main": (v1.oid, log[0][0])}
        region = next(e for p, e in iter_tree(repo.store.objects, log[1][1].root) if p == path)
        assert slot not in {c.slot for c in iter_region(repo.store.objects, region.oid)}
        assert len(list(iter_region(repo.store.objects, region.oid))) == region.size
        repo.restore(log[1][0])  # the repaired snapshot restores; Minecraft regenerates the chunk


def test_repair_fetches_from_a_remote_and_pull_heals_what_it_needs(
        server: Server, tmp_path: Path) -> None:
    c = make_session(server)
    lease = c["alice"].acquire("alice-pc", 60)
    a = new_repo(tmp_path / "a")
    make_world(a.world)
    (a.world / "playerdata" / "alice.dat").write_bytes(b"alice v1")
    v1 = a.snapshot("v1").oid
    (a.world / "playerdata" / "alice.dat").write_bytes(b"alice v2")
    a.snapshot("v2")
    push(a, c["alice"], fencing=lease.fencing)
    b = new_repo(tmp_path / "b")
    pull(b, c["bob"])
    corrupt(b.store, OLD_ALICE)
    report = repair(b, [CoordinatorSource(c["bob"], "origin")])
    assert report.healed == {"origin": 1} and report.lost == [] and b.verify().ok
    corrupt(b.store, OLD_ALICE)  # again, and now the session rolls back to v1
    a.rollback(v1)
    push(a, c["alice"], fencing=lease.fencing)
    assert pull(b, c["bob"]).outcome == "fast-forward", "pull fetched the good copy it needed"
    assert (b.world / "playerdata" / "alice.dat").read_bytes() == b"alice v1"
    assert b.verify().ok


def test_phs_repair_says_what_it_did(repo: Repository, capsys: pytest.CaptureFixture[str]) -> None:
    two_versions(repo)
    corrupt(repo.store, BOB)
    corrupt(repo.store, OLD_ALICE)
    world = str(repo.world)
    repo.close()
    assert main(["verify", "-C", world]) == 4
    capsys.readouterr()
    assert main(["repair", "-C", world]) == 0
    out = capsys.readouterr().out
    assert "1 healed from the live world" in out and "playerdata/alice.dat" in out, out
    assert main(["verify", "-C", world]) == 0
    capsys.readouterr()
    assert main(["repair", "-C", world, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["damaged"] == 0


def test_pull_is_not_blocked_by_a_damaged_object_it_does_not_need(
        server: Server, tmp_path: Path, real_world: Callable[[str], Path]) -> None:
    versions = [real_world(HISTORY) / name for name in HISTORIES[HISTORY][:2]]
    c = make_session(server)
    lease = c["alice"].acquire("alice-pc", 60)
    a = new_repo(tmp_path / "a", versions[0])
    v0 = a.snapshot("v0")
    push(a, c["alice"], fencing=lease.fencing)
    b = new_repo(tmp_path / "b")
    pull(b, c["bob"])
    replace_world(a.world, versions[1])
    v1 = a.snapshot("v1")
    push(a, c["alice"], fencing=lease.fencing)
    old = {c.oid for _, e in iter_tree(b.store.objects, v0.snapshot.root) if e.kind is EntryKind.REGION
           for c in iter_region(b.store.objects, e.oid)}
    new = walk(a.store.objects, [v1.oid], follow_parents=False).reachable
    base = next(iter(sorted(old - new)))  # a chunk v1 changed: the delta base of its new version
    corrupt(b.store, base)
    report = pull(b, c["bob"])
    assert report.outcome == "fast-forward" and report.fallbacks > 0
    assert b.scan().root == v1.snapshot.root
    assert [p.oid for p in b.verify().problems] == [base], "v0 still holds it (phs repair)"
    assert repair(b, [CoordinatorSource(c["bob"], "origin")]).healed == {"origin": 1}
    assert b.verify().ok


def test_a_checkout_stops_at_a_damaged_chunk_names_every_one_and_runs_again(
        repo: Repository, tmp_path: Path) -> None:
    """A checkout checks each chunk as it reads it for writing (one pass): a damaged one
    stops it part-way, the error names every damaged chunk it needs, and once the store is
    healed the same checkout finishes into the same folder."""
    import zlib

    from peerhost_store.region import ZLIB, ChunkRecord, write_region
    from peerhost_store.restore import CHECKOUT_MARKER
    from peerhost_store.scan import scan_world
    from peerhost_store.store import MemoryStore
    from peerhost_store.writer import ObjectWriter

    for x in range(3):
        payloads = [zlib.compress(b"\x0a\x00\x00" + bytes([x, slot]) * 500, 6) for slot in range(8)]
        data, _ = write_region(ChunkRecord(slot, ZLIB, p, 1000 + slot) for slot, p in enumerate(payloads))
        (repo.world / "region" / f"r.{x}.0.mca").write_bytes(data)
    snap = repo.snapshot("three regions")
    chunks = {(p, c.slot): c.oid for p, e in iter_tree(repo.store.objects, snap.snapshot.root)
              if e.kind is EntryKind.REGION for c in iter_region(repo.store.objects, e.oid)}
    damaged = {("region/r.1.0.mca", 3), ("region/r.2.0.mca", 5)}
    good = {key: repo.store.objects.backend.get_many([chunks[key]])[0] for key in damaged}
    for key in damaged:
        corrupt(repo.store, chunks[key])
    out = tmp_path / "copy"
    with pytest.raises(DamagedObjects) as info:
        repo.checkout(snap.oid, out)
    assert {where for _, _, where in info.value.problems} == {
        f"{path} chunk slot {slot}" for path, slot in damaged}
    assert "region/r.1.0.mca chunk slot 3" in str(info.value)
    assert "stopped part-way" in str(info.value) and "nothing was written" not in str(info.value)
    assert (out / CHECKOUT_MARKER).is_file(), "a partial checkout keeps its marker"
    repo.store.objects.backend.put_many([(chunks[key], good[key]) for key in damaged])
    repo.checkout(snap.oid, out)  # the same checkout, run again into what it left
    assert not (out / CHECKOUT_MARKER).exists()
    with ObjectWriter(MemoryStore()) as writer:
        assert scan_world(out, writer, {}).root == snap.snapshot.root
