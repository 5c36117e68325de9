"""Read-only use (issue 13): ``log``, ``diff``, ``verify`` and ``checkout`` work on a store they
cannot write (restic's ``--no-lock``), and never create or change anything in it.

The tests run as root, where a chmod stops no write: the store is made unwritable with a
read-only bind mount (skipped where mounting is not permitted, except under CI=true), and the
store folder's names, sizes and modification times are compared before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from worldfs_helpers import make_world

from peerhost_cli.main import main
from peerhost_store.errors import StoreError
from peerhost_store.repo import Repository
from peerhost_store.store import LmdbStore, ReadOnlyStore, Update

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="bind mounts")


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path below ``folder`` with its size and modification time (ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` bind-mounted read-only onto itself for the duration."""
    def refuse(why: str) -> None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs as root and must bind-mount the store read-only: {why}")
        pytest.skip(f"a read-only bind mount is not permitted here: {why}")

    if os.geteuid() != 0:
        refuse("not root")
    done = subprocess.run(["mount", "--bind", str(folder), str(folder)], check=False,
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        refuse(done.stderr.strip())
    try:
        done = subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=False,
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            refuse(done.stderr.strip())
        with pytest.raises(OSError, match="Read-only file system"):
            (folder / "probe").write_bytes(b"")  # really read-only
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=False, timeout=30)


def phs(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


FIRST_LEVEL = b"the first level.dat"


def world_with_play(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    """A world with two snapshots and unsnapshotted play since; returns it and the first id."""
    world = make_world(tmp_path / "w")
    (world / "level.dat").write_bytes(FIRST_LEVEL)
    w = str(world)
    assert phs(capsys, "init", "-C", w)[0] == 0
    first = json.loads(phs(capsys, "snapshot", "-C", w, "-m", "first", "--json")[1])["id"]
    (world / "level.dat").write_bytes(b"second")
    assert phs(capsys, "snapshot", "-C", w, "-m", "second")[0] == 0
    (world / "level.dat").write_bytes(b"play since")
    (world / "new.dat").write_bytes(b"new")
    return world, first


READ_ONLY_COMMANDS = [
    ["log", "--json"],
    ["log", "--graph"],
    ["verify", "--json"],
    ["diff", "--json"],  # head against the live world: scanned in memory
    ["diff", "head~1", "head", "--json"],
    ["diff", "head~1", "--json"],
]


def test_log_diff_verify_checkout_work_on_a_store_they_cannot_write(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world, first = world_with_play(tmp_path, capsys)
    w = str(world)
    base = world / ".peerhost"
    before = listing(base)
    got = {}
    with read_only(base):
        for args in READ_ONLY_COMMANDS:
            code, out, err = phs(capsys, *args, "-C", w)
            assert code == 0, (args, err)
            got[" ".join(args)] = out
        code, out, err = phs(capsys, "checkout", first[:8], str(tmp_path / "copy"), "-C", w,
                             "--json")
        assert code == 0, err
        assert json.loads(out)["snapshot"] == first
        assert (tmp_path / "copy" / "level.dat").read_bytes() == FIRST_LEVEL
        # Writing commands say clearly that they cannot, in one line.
        code, _, err = phs(capsys, "snapshot", "-C", w)
        assert code != 0 and err.count("\n") == 1 and "Traceback" not in err
    assert listing(base) == before, "nothing in the store folder was created or changed"
    diff = json.loads(got["diff --json"])
    assert {(c["path"], c["status"]) for c in diff["changes"]} == {
        ("level.dat", "modified"), ("new.dat", "added")}
    assert [s["message"] for s in json.loads(got["log --json"])] == ["second", "first"]
    assert json.loads(got["verify --json"])["ok"] is True
    # The same answers as on the writable store.
    for args in READ_ONLY_COMMANDS:
        if "--json" in args and args[0] != "verify":
            assert json.loads(phs(capsys, *args, "-C", w)[1]) == json.loads(got[" ".join(args)])


def test_read_only_commands_write_nothing_to_a_writable_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world, first = world_with_play(tmp_path, capsys)
    w = str(world)
    data = world / ".peerhost" / "store" / "data.mdb"
    before = listing(world / ".peerhost")
    for args in [["log"], ["verify"], ["diff", "head~1", "head"],
                 ["checkout", first[:8], str(tmp_path / "copy")]]:
        assert phs(capsys, *args, "-C", w)[0] == 0, args
    after = listing(world / ".peerhost")
    assert after["store/data.mdb"] == before["store/data.mdb"] and data.exists()
    # A reader writes only to lock files: LMDB's reader table (lock.mdb) and the gate a
    # compaction holds (open.lock).
    locks = {"store/lock.mdb", "store/open.lock"}
    assert {k: v for k, v in after.items() if k not in locks} == {
        k: v for k, v in before.items() if k not in locks}


def test_a_read_only_repository_diffs_the_live_world_in_memory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world, _ = world_with_play(tmp_path, capsys)
    with Repository.open(world, readonly=True) as repo:
        stats = repo.store.stats.load()
        ids = set(repo.store.objects.iter_ids())
        head = repo.head()
        changes = list(repo.diff(head, None))
        assert repo.store.stats.load() == stats and set(repo.store.objects.iter_ids()) == ids
    with Repository.open(world) as repo:
        assert list(repo.diff(head, None)) == changes  # the writable diff stores its scan
        assert set(repo.store.objects.iter_ids()) > ids


def test_a_read_only_store_refuses_writes_and_creates_nothing(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "store") as store:
        store.apply(Update(objects=[b"\x92\x01\xc4\x01x"], meta={"k": b"v"}))
    before = listing(tmp_path)
    with LmdbStore(tmp_path / "store", readonly=True) as store:
        assert store.meta.get("k") == b"v" and len(list(store.objects.iter_ids())) == 1
        with pytest.raises(ReadOnlyStore):
            store.apply(Update(meta={"k": None}))
        with pytest.raises(ReadOnlyStore):
            store.new_pin()
        assert store.meta.get("k") == b"v"
    after = listing(tmp_path)
    assert after["store/data.mdb"] == before["store/data.mdb"] and after.keys() == before.keys()
    with pytest.raises(StoreError, match="cannot open the store"):
        LmdbStore(tmp_path / "absent", readonly=True)
    assert not (tmp_path / "absent").exists()


def test_a_read_only_store_without_a_table_says_so(tmp_path: Path) -> None:
    import lmdb

    env = lmdb.open(str(tmp_path / "store"), max_dbs=5)
    for name in (b"objects", b"refs", b"stats", b"meta"):  # no pins: made before they were
        env.open_db(name)
    env.close()
    with pytest.raises(StoreError, match="has no 'pins' table: an older phs made it"):
        LmdbStore(tmp_path / "store", readonly=True)
    with LmdbStore(tmp_path / "store") as store:  # writable, it is added
        assert store.load_pins().ids == {}
    LmdbStore(tmp_path / "store", readonly=True).close()
