"""Repository operations: rollback, restore safety, gc, verify, locking, path safety."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from worldfs_helpers import make_world, refuse_writes_to

from peerhost_store.errors import NotFound, PeerhostError
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.lock import Locked
from peerhost_store.objects import DirEntry, EntryKind, Snapshot, encode_blob, encode_snapshot
from peerhost_store.pending import PENDING_RESTORE
from peerhost_store.repo import HEAD, Repository
from peerhost_store.store import LmdbStore, Update
from peerhost_store.tree import build_dir
from peerhost_store.worldfs import UnsafePath


def _files(world: Path) -> dict[str, bytes]:
    return {
        p.relative_to(world).as_posix(): p.read_bytes()
        for p in sorted(world.rglob("*"))
        if p.is_file() and p.relative_to(world).parts[0] not in (".peerhost", "session.lock")
    }


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    world = make_world(tmp_path / "world")
    (world / "playerdata" / "alice.dat").write_bytes(b"alice v1")
    r = Repository.init(world)
    yield r
    r.close()


def test_snapshot_unchanged_world_creates_nothing(repo: Repository) -> None:
    first = repo.snapshot("one")
    again = repo.snapshot("two")
    assert first.created and not again.created and again.oid == first.oid
    assert repo.snapshot("three", allow_empty=True).created


def test_rollback_keeps_history_and_can_be_undone(repo: Repository) -> None:
    world = repo.world
    v1 = repo.snapshot("v1").oid
    state_v1 = _files(world)
    (world / "playerdata" / "alice.dat").write_bytes(b"alice v2")
    (world / "playerdata" / "bob.dat").write_bytes(b"bob")
    v2 = repo.snapshot("v2").oid
    state_v2 = _files(world)
    (world / "griefed.txt").write_bytes(b"unsnapshotted")
    result = repo.rollback(v1)
    assert result.safety is not None  # the unsnapshotted change was saved first
    assert _files(world) == state_v1
    log = [oid for oid, _ in repo.log()]
    assert log[:3] == [result.oid, result.safety, v2] and v1 in log
    assert repo.read_snapshot(result.oid).root == repo.read_snapshot(v1).root
    undo = repo.rollback(result.safety)
    assert undo.safety is None
    assert _files(world) == {**state_v2, "griefed.txt": b"unsnapshotted"}
    assert repo.verify().ok


def test_restore_does_not_move_head(repo: Repository) -> None:
    v1 = repo.snapshot("v1").oid
    (repo.world / "level.dat").write_bytes(b"changed")
    v2 = repo.snapshot("v2").oid
    safety, restored = repo.restore(v1)
    assert safety is None and restored.written == 1 and repo.head() == v2


def test_resolve_prefixes_and_head_offsets(repo: Repository) -> None:
    v1 = repo.snapshot("v1").oid
    (repo.world / "level.dat").write_bytes(b"changed")
    v2 = repo.snapshot("v2").oid
    assert repo.resolve("head") == v2 and repo.resolve("HEAD~1") == v1
    assert repo.resolve(v1.hex()[:8]) == v1
    for bad in ("head~2", "zz", "abc", "head~x", "0000000000"):
        with pytest.raises(NotFound):
            repo.resolve(bad)


def test_gc_keep_last_deletes_old_objects_and_verify_stays_clean(repo: Repository) -> None:
    world = repo.world
    for i in range(4):
        (world / "playerdata" / "alice.dat").write_bytes(f"alice {i}".encode() * 1000)
        repo.snapshot(f"v{i}")
    before = len(list(repo.store.objects.iter_ids()))
    report = repo.gc(keep_last=2)
    assert report.kept_snapshots == 2 and report.deleted_objects > 0
    assert len(list(repo.store.objects.iter_ids())) == before - report.deleted_objects
    assert [s.message for _, s in repo.log()] == ["v3", "v2"]
    assert repo.verify().ok
    # The stat cache must not hand out deleted objects: the next snapshot is still complete.
    (world / "level.dat").write_bytes(b"after gc")
    repo.snapshot("after gc")
    assert repo.verify().ok


def _history_with_garbage(repo: Repository, versions: int = 4, size: int = 2 << 20) -> None:
    for i in range(versions):
        (repo.world / "playerdata" / "alice.dat").write_bytes(os.urandom(size))
        repo.snapshot(f"v{i}")


def _sizes(repo: Repository) -> dict[ObjectId, int]:
    return {oid: len(repo.store.objects.get_raw(oid)) for oid in repo.store.objects.iter_ids()}


def test_gc_dry_run_says_what_it_would_delete_in_bytes_and_deletes_nothing(
        repo: Repository) -> None:
    _history_with_garbage(repo)
    data = repo.world / ".peerhost" / "store" / "data.mdb"
    sizes, file_size, log = _sizes(repo), data.stat().st_size, list(repo.log())
    dry = repo.gc(keep_last=1, dry_run=True)
    assert dry.dry_run and not dry.compacted and dry.deleted_objects > 0
    assert _sizes(repo) == sizes and list(repo.log()) == log, "a dry run deletes nothing"
    assert data.stat().st_size == file_size == dry.file_bytes_before == dry.file_bytes_after
    real = repo.gc(keep_last=1)
    gone = sizes.keys() - _sizes(repo).keys()
    assert (real.deleted_objects, real.deleted_bytes) == (len(gone), sum(sizes[o] for o in gone))
    assert (dry.deleted_objects, dry.deleted_bytes) == (real.deleted_objects, real.deleted_bytes)
    assert dry.deleted_bytes > 3 * (2 << 20), "the three dropped versions of alice.dat"
    assert real.kept_bytes == dry.kept_bytes == sum(_sizes(repo).values())


def test_gc_gives_freed_pages_back_and_the_store_works_on(repo: Repository) -> None:
    _history_with_garbage(repo, versions=6)
    data = repo.world / ".peerhost" / "store" / "data.mdb"
    refs, stats = repo.store.refs.items(), repo.store.stats.load()
    before = data.stat().st_size
    report = repo.gc(keep_last=1)
    assert report.compacted and report.file_bytes_before == before
    assert report.file_bytes_after == data.stat().st_size < before - 5 * (2 << 20)
    assert repo.store.refs.items() == refs and repo.store.stats.load() == stats
    assert repo.verify().ok and [s.message for _, s in repo.log()] == ["v5"]
    assert sorted(p.name for p in data.parent.iterdir()) == sorted(
        ["data.mdb", "lock.mdb", "open.lock"] + (["pins"] if (data.parent / "pins").exists()
                                                 else [])), "no temporary file is left"
    (repo.world / "level.dat").write_bytes(b"after the compaction")
    assert repo.snapshot("after").created and repo.verify().ok
    again = repo.gc()
    assert not again.compacted and "free" in again.note, "nothing to give back"
    repo.close()
    with Repository.open(repo.world, readonly=True) as other:
        assert [s.message for _, s in other.log()] == ["after", "v5"]


READER = """
import sys
from peerhost_store.store import LmdbStore
store = LmdbStore(sys.argv[1], readonly=True)
print(store.refs.get("main").hex(), flush=True)
sys.stdin.readline()
print(store.refs.get("main").hex(), len(list(store.objects.iter_ids())), flush=True)
"""


def test_gc_leaves_a_store_another_process_has_open_uncompacted(repo: Repository) -> None:
    _history_with_garbage(repo)
    path = repo.world / ".peerhost" / "store"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None and reader.stdin is not None
        head = reader.stdout.readline().strip()
        report = repo.gc(keep_last=1)
        assert report.deleted_objects > 0 and not report.compacted
        assert "open in another process" in report.note
        assert report.file_bytes_after == (path / "data.mdb").stat().st_size
        assert report.file_bytes_before is not None
        assert report.file_bytes_after >= report.file_bytes_before  # freed pages stay in it
        out, _ = reader.communicate("go\n", timeout=30)
        assert out.split() == [head, str(len(list(repo.store.objects.iter_ids())))]
    finally:
        reader.kill()
        reader.wait()
    assert repo.gc().compacted, "once it is closed"


def test_verify_reports_missing_and_corrupt_objects(repo: Repository) -> None:
    repo.snapshot("v1")
    blob = hash_bytes(encode_blob(b"alice v1"))
    repo.store.apply(Update(delete_objects=[blob]))
    report = repo.verify()
    assert not report.ok
    assert [(p.kind, p.where.endswith("playerdata/alice.dat")) for p in report.problems] == [("missing", True)]


def test_a_second_writer_is_refused_while_one_works(repo: Repository) -> None:
    with repo.lock(), pytest.raises(Locked):
        repo.snapshot("concurrent")


def _hostile_snapshot(repo: Repository, name: str) -> ObjectId:
    def add(data: bytes) -> ObjectId:
        return repo.store.objects.put(data)[0]

    blob = add(encode_blob(b"evil"))
    inner = build_dir(add, [DirEntry("x", EntryKind.FILE, blob, 4)])
    root = build_dir(add, sorted([DirEntry("aaa.txt", EntryKind.FILE, blob, 4),
                                  DirEntry(name, EntryKind.FILE if name != "dir" else EntryKind.DIR,
                                           blob if name != "dir" else inner, 4)]))
    data = encode_snapshot(Snapshot(root, (), 0, "mallory", "evil", "", {}))
    repo.store.objects.put(data)
    return hash_bytes(data)


@pytest.mark.parametrize("name", ["..", "../escape", "/etc/passwd", "C:evil", "a\\b", "nul\0byte", ".peerhost", "session.lock"])
def test_restore_refuses_unsafe_names_before_writing(repo: Repository, name: str, tmp_path: Path) -> None:
    oid = _hostile_snapshot(repo, name)
    with pytest.raises(UnsafePath):
        repo.checkout(oid, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_restore_refuses_a_planted_link(repo: Repository, tmp_path: Path) -> None:
    oid = _hostile_snapshot(repo, "dir")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, repo.world / "dir")
    before = _files(repo.world)
    with pytest.raises(UnsafePath):
        repo.restore(oid)
    assert list(outside.iterdir()) == [] and _files(repo.world) == before


def test_kill_9_during_snapshot_keeps_the_previous_head(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world")
    (world / "playerdata" / "big.dat").write_bytes(os.urandom(1 << 20))
    with Repository.init(world) as repo:
        v1 = repo.snapshot("v1").oid
    for i in range(40):
        (world / "playerdata" / f"p{i}.dat").write_bytes(os.urandom(1 << 20))
    killed_midway = 0
    for delay in (0.05, 0.1, 0.2, 0.3, 0.5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "peerhost_cli.main", "-C", str(world), "snapshot", "-m", "v2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_midway += 1
        proc.wait(timeout=60)
        with Repository.open(world) as repo:
            assert repo.verify().ok
            head = repo.resolve("head")
            assert head == v1 or repo.read_snapshot(head).parents == (v1,)
            if head != v1:
                break
    assert killed_midway > 0
    with Repository.open(world) as repo:
        result = repo.snapshot("v2 again")
        assert repo.verify().ok
        assert {"p0.dat", "p39.dat"} <= {p.name for p in (world / "playerdata").iterdir()}
        assert result.oid == repo.head()


def test_refs_only_move_by_compare_and_swap(repo: Repository) -> None:
    v1 = repo.snapshot("v1").oid
    from peerhost_store.store import RefConflict

    with pytest.raises(RefConflict):
        repo.store.apply(Update(refs=[(HEAD, None, v1)]))
    assert repo.head() == v1


def test_verify_reports_a_corrupt_object(repo: Repository) -> None:
    repo.snapshot("v1")
    blob = hash_bytes(encode_blob(b"alice v1"))
    repo.store.objects.backend.put_many([(blob, encode_blob(b"alice v2"))])
    report = repo.verify()
    assert [(p.kind, p.where.endswith("playerdata/alice.dat")) for p in report.problems] == [("corrupt", True)]


def test_head_offsets_stop_at_history_pruned_by_gc(repo: Repository) -> None:
    for i in range(3):
        (repo.world / "level.dat").write_bytes(f"v{i}".encode())
        repo.snapshot(f"v{i}")
    repo.gc(keep_last=2)
    assert repo.read_snapshot(repo.resolve("head~1")).message == "v1"
    with pytest.raises(NotFound, match="not that long"):
        repo.resolve("head~2")


def test_folders_nested_absurdly_deep_are_refused_cleanly(repo: Repository) -> None:
    from peerhost_store.scan import WorldReadError

    deep = repo.world
    for _ in range(140):
        deep = deep / "d"
    deep.mkdir(parents=True)
    with pytest.raises(WorldReadError, match="nested deeper"):
        repo.snapshot("deep")
    assert repo.head() is None


def test_restore_keeps_a_folder_holding_untracked_entries(repo: Repository, tmp_path: Path) -> None:
    v1 = repo.snapshot("v1").oid
    (repo.world / "extra").mkdir()
    (repo.world / "extra" / "f").write_bytes(b"tracked")
    os.symlink(tmp_path, repo.world / "extra" / "link")  # scan skips links
    repo.snapshot("v2")
    _, result = repo.restore(v1)
    assert not (repo.world / "extra" / "f").exists()
    assert (repo.world / "extra" / "link").is_symlink()
    assert any("extra: folder kept" in w for w in result.warnings)


def test_damaged_region_with_external_chunks_keeps_its_mcc(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    world = make_world(tmp_path / "w")
    for f in (data / "external").iterdir():
        shutil.copy(f, world / "region" / f.name)
    region = world / "region" / "r.0.0.mca"
    region.write_bytes(region.read_bytes() + b"")
    damaged = bytearray(region.read_bytes())
    damaged[4:8] = damaged[0:4]  # slot 1 claims slot 0's sectors
    region.write_bytes(bytes(damaged))
    with Repository.init(world) as repo:
        result = repo.snapshot()
        assert result.scan.warnings
        repo.checkout(result.oid, tmp_path / "out")
    for name in ("r.0.0.mca", "c.1.1.mcc"):
        assert (tmp_path / "out/region" / name).read_bytes() == (world / "region" / name).read_bytes()
    with Repository.init(tmp_path / "out") as again:
        assert again.snapshot().snapshot.root == result.snapshot.root


def test_an_interrupted_restore_is_finished_before_the_world_is_snapshotted(tmp_path: Path) -> None:
    # As after a kill -9 between a rollback's head move and its last file: the next command
    # must not snapshot the half-restored world as if it were real.
    world = tmp_path / "w"
    make_world(world)
    with Repository.init(world) as repo:
        v1 = repo.snapshot("v1")
        (world / "extra.txt").write_text("only in v2")
        (world / "level.dat").write_bytes(b"v2 level")
        v2 = repo.snapshot("v2")
        repo._commit_tree(v1.snapshot.root, "rollback to v1 (killed before any file)",
                          restoring=("rollback", v1.oid, v2.snapshot.root))
        assert (world / "extra.txt").exists()
        result = repo.snapshot("next")
        assert not result.created, "the half-restored world was snapshotted"
        assert not (world / "extra.txt").exists()
        assert repo.scan().root == v1.snapshot.root
        assert repo.store.meta.get(PENDING_RESTORE) is None


# -- an interrupted restore and play made after it (issue 11, item 1) -------------------------


def _failed_rollback(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> tuple[
        list[str], dict[str, bytes], dict[str, bytes]]:
    """v1, then v2, then a rollback to v1 that fails on level.dat after head moved. Returns
    the notices, v1's files and v2's files."""
    notices: list[str] = []
    repo.notify = notices.append
    world = repo.world
    v1 = repo.snapshot("v1").oid
    state_v1 = _files(world)
    (world / "level.dat").write_bytes(b"v2 level")
    (world / "playerdata" / "alice.dat").write_bytes(b"alice v2")
    repo.snapshot("v2")
    state_v2 = _files(world)
    refuse_writes_to(monkeypatch, "level.dat")
    with pytest.raises((OSError, PeerhostError)) as failed:
        repo.rollback(v1)
    monkeypatch.undo()
    assert "Permission denied" in str(failed.value) and "level.dat" in str(failed.value)
    return notices, state_v1, state_v2


def _play_on(world: Path) -> dict[str, bytes]:
    (world / "level.dat").write_bytes(b"v3 level, played after the failed rollback")
    (world / "playerdata" / "bob.dat").write_bytes(b"bob joined")
    return _files(world)


def test_a_failed_rollback_is_never_finished_over_newer_play(
        repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    notices, _, _ = _failed_rollback(repo, monkeypatch)
    failed_head = repo.head()
    played = _play_on(repo.world)
    result = repo.snapshot("after play")
    assert _files(repo.world) == played, "the pending rollback overwrote newer play"
    assert result.created and result.snapshot.parents == (failed_head,)
    assert result.snapshot.root == repo.scan().root, "the play is in the snapshot"
    assert any("phs restore --abort" in n and "phs rollback" in n for n in notices), notices
    again = repo.snapshot("and again")  # still not finished behind the player's back
    assert not again.created and _files(repo.world) == played
    assert repo.verify().ok


def test_a_rollback_interrupted_by_newer_play_is_finished_by_running_it_again(
        repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    _, state_v1, _ = _failed_rollback(repo, monkeypatch)
    _play_on(repo.world)
    kept = repo.snapshot("after play").oid
    target = repo.resolve("head~3")  # v1: kept <- the failed rollback <- v2 <- v1
    assert repo.read_snapshot(target).message == "v1"
    result = repo.rollback(target)
    assert _files(repo.world) == state_v1
    assert repo.read_snapshot(result.oid).parents == (kept,), "the kept play stays in history"
    assert repo.store.meta.get(PENDING_RESTORE) is None
    assert repo.snapshot("after").created is False


def test_restore_abort_returns_to_the_pre_restore_head_and_leaves_the_world(
        repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    _, state_v1, _ = _failed_rollback(repo, monkeypatch)
    v2 = repo.resolve("head~1")
    partial = _files(repo.world)
    assert partial != state_v1
    aborted = repo.abort_restore()
    assert aborted.head == v2 and repo.head() == v2, "head is back where the rollback found it"
    assert _files(repo.world) == partial, "abort writes nothing"
    assert repo.store.meta.get(PENDING_RESTORE) is None
    with pytest.raises(NotFound, match="no interrupted restore"):
        repo.abort_restore()


def test_restore_abort_after_play_was_kept_keeps_it(
        repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    _failed_rollback(repo, monkeypatch)
    played = _play_on(repo.world)
    kept = repo.snapshot("after play").oid
    aborted = repo.abort_restore()
    assert aborted.head == kept == repo.head(), "the kept play stays head"
    assert _files(repo.world) == played
    assert repo.snapshot("after").created is False


def test_gc_keeps_what_live_pins_protect_and_drops_stale_pins(repo: Repository) -> None:
    from peerhost_store.graph import walk

    repo.snapshot("v1")
    (repo.world / "kept.dat").write_bytes(os.urandom(1000))
    kept_root = repo.scan().root  # unreachable from any ref, like a pull's found objects
    (repo.world / "kept.dat").unlink()
    (repo.world / "lost.dat").write_bytes(os.urandom(1000))
    lost_root = repo.scan().root
    (repo.world / "lost.dat").unlink()
    live, dead = repo.store.new_pin(), repo.store.new_pin()
    repo.store.apply(Update(pins={live: [(kept_root, True)], dead: [(lost_root, True)]}))
    assert isinstance(repo.store, LmdbStore)
    repo.store._pin_locks.pop(dead).__exit__(None, None, None)
    kept = walk(repo.store.objects, [], nodes=[kept_root]).reachable
    repo.gc()
    assert all(oid in repo.store.objects for oid in kept), "a pinned node keeps its whole subtree"
    assert lost_root not in repo.store.objects, "a stale pin protects nothing"
    assert repo.store.load_pins().stale == []
    assert repo.verify().ok
