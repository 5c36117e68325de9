"""Fault injection: kill -9 at random points during snapshot, restore, gc, push and pull, and
of the coordinator during pushes and lease changes; a full disk and a full LMDB map.

Each round kills the operation (a child forked by :class:`faultutil.Zygote`, so the kill lands
in the work, not in interpreter start-up) after a delay drawn from a seeded RNG across the
operation's measured duration, then checks in-process: every acknowledged snapshot is still
there and ``verify`` is clean, files are wholly old or wholly new, and re-running the command
converges to what an uninterrupted run gives. Figures go to benchmarks/results/reliability/.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from faultutil import (
    COMPACTION_STEPS,
    Child,
    Coordinator,
    Figures,
    Timing,
    Zygote,
    mixed_problems,
    temp_files,
    world_files,
)
from test_server_uvicorn import free_port
from worldutil import HISTORIES, copy_world, replace_world

from peerhost_store.errors import StoreError
from peerhost_store.graph import walk
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import decode, encode_blob
from peerhost_store.repo import HEAD, Repository
from peerhost_store.restore import restore_tree
from peerhost_store.scan import scan_world
from peerhost_store.store import LmdbStore, MemoryStore, Update, _lmdb
from peerhost_store.sync.client import (
    CoordinatorClient,
    CoordinatorError,
    CoordinatorUnavailable,
    LeaseLost,
)
from peerhost_store.sync.transfer import push
from peerhost_store.writer import ObjectWriter

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork, SIGKILL and tmpfs")

ROUNDS = 30
#: Small durable batches: a kill lands between many transactions, not around one.
BATCH = 128 << 10
HISTORY = "aviadbag-1.19-history"
SEED = 20240501


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    try:
        yield z
    finally:
        z.close()


#: The files of each version kept: the changing ones, about 370 objects, so that verify after
#: every round stays cheap while snapshot and restore still take a fair fraction of a second.
KEEP = ("level.dat", "playerdata", "region", "entities/r.0.0.mca", "poi/r.0.0.mca")


@pytest.fixture(scope="module")
def versions(real_world: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Five real versions of one world, trimmed to the files in KEEP (about 2.2 MB each)."""
    source = real_world(HISTORY)
    out = []
    for name in HISTORIES[HISTORY]:
        dest = tmp_path_factory.mktemp(f"version-{name}")
        for rel in KEEP:
            if (source / name / rel).is_dir():
                copy_world(source / name / rel, dest / rel)
            else:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / name / rel, dest / rel)
        out.append(dest)
    return out


def tree_root(folder: Path) -> ObjectId:
    """The root a snapshot of ``folder`` would get, computed in memory (stores nothing)."""
    return scan_world(folder, ObjectWriter(MemoryStore()), {}).root


def oid(text: str) -> ObjectId:
    return ObjectId(bytes.fromhex(text))


def check_repo(world: Path, acked: list[ObjectId]) -> ObjectId:
    """Every acknowledged snapshot is in head's history and verify is clean; returns head."""
    with Repository.open(world) as repo:
        report = repo.verify()
        assert report.ok, [str(p) for p in report.problems[:5]]
        missing = set(acked) - {s for s, _ in repo.log()}
        assert not missing, f"acknowledged snapshots lost: {[m.hex()[:12] for m in missing]}"
        head = repo.head()
        assert head is not None
        return head


def run_ok(zygote: Zygote, argv: list[str], out: Path, *, batch_bytes: int | None = None,
           env: dict[str, str] | None = None) -> Child:
    child = zygote.phs(argv, out, batch_bytes=batch_bytes, env=env)
    status = zygote.wait(child)
    assert status == 0, f"phs {' '.join(argv)} exited {status}:\n{child.output()[-3000:]}"
    return child


def mutate(world: Path, version: Path, rng: random.Random) -> None:
    """Another real version plus fresh random files: every snapshot stores new objects."""
    replace_world(world, version)
    for k in range(4):
        (world / f"fault{k}.dat").write_bytes(rng.randbytes(192 << 10))


def slow_versions(versions: list[Path], i: int) -> Path:
    """A new version every 4th round: changed chunks travel as deltas, which cost CPU (about
    4 ms a chunk on each side); the other rounds change only whole blobs."""
    return versions[(i // 4) % len(versions)]


def tally(figures: Figures, landed: bool, checked: int = 1) -> None:
    figures.rounds += 1
    figures.kills_mid_way += landed
    figures.finished_before_kill += not landed
    figures.operations_checked += checked


def finish(figures: Figures) -> None:
    figures.write()
    # The delays span the measured duration, so most kills land mid-way; a few after it.
    assert figures.rounds >= ROUNDS and figures.kills_mid_way >= ROUNDS // 3, figures


# -- snapshot ---------------------------------------------------------------------------------


def test_kill_9_during_snapshot(tmp_path: Path, zygote: Zygote, versions: list[Path]) -> None:
    world = copy_world(versions[0], tmp_path / "world")
    rng = random.Random(SEED)
    with Repository.init(world) as repo:
        acked = [repo.snapshot("v0").oid]
    argv = ["snapshot", "--json", "-C", str(world), "-m", "round"]
    out = tmp_path / "out.txt"
    mutate(world, versions[1], rng)
    first = run_ok(zygote, argv, out, batch_bytes=BATCH)
    acked.append(oid(first.json()["id"]))
    timing = Timing(rng, first.seconds)
    figures = Figures("snapshot")
    after_commit = 0
    for i in range(ROUNDS):
        mutate(world, versions[(i + 2) % len(versions)], rng)
        root = tree_root(world)
        before = acked[-1]
        child = zygote.phs(argv, out, batch_bytes=BATCH)
        landed = zygote.kill_after(child, timing.delay())
        if (printed := child.json()) is not None:  # acknowledged before the kill
            acked.append(oid(printed["id"]))
        head = check_repo(world, acked)
        with Repository.open(world) as repo:  # old head, or one new snapshot on top of it
            assert head == acked[-1] or repo.read_snapshot(head).parents == (before,)
        after_commit += head != before
        again = run_ok(zygote, argv, out, batch_bytes=BATCH)
        result = again.json()
        assert result["root"] == root.hex(), "the re-run gives an uninterrupted run's root"
        assert result["created"] == (head == before), "a snapshot that landed is not taken twice"
        if result["created"]:
            timing.add(again.seconds)
        else:
            assert oid(result["id"]) == head
        acked.append(oid(result["id"]))
        tally(figures, landed, 2)
    check_repo(world, acked)
    figures.extra.update(acknowledged_snapshots=len(set(acked)), killed_after_commit=after_commit,
                         median_seconds=round(sorted(timing.runs)[len(timing.runs) // 2], 3))
    finish(figures)


# -- restore ----------------------------------------------------------------------------------


def test_kill_9_during_restore(tmp_path: Path, zygote: Zygote, versions: list[Path]) -> None:
    world = copy_world(versions[0], tmp_path / "world")
    rng = random.Random(SEED + 1)
    snaps: list[ObjectId] = []
    expected: list[dict[str, bytes]] = []
    roots: list[ObjectId] = []
    with Repository.init(world) as repo:
        for i, version in enumerate(versions):
            replace_world(world, version)
            result = repo.snapshot(f"v{i}")
            snaps.append(result.oid)
            roots.append(result.snapshot.root)
            # What an uninterrupted restore writes (regions are repacked, not byte-copied).
            repo.checkout(result.oid, tmp_path / f"co{i}")
            expected.append(world_files(tmp_path / f"co{i}"))
    # Start from what restore writes, so an unchanged file is byte-equal to its expected one.
    replace_world(world, tmp_path / f"co{len(versions) - 1}")
    acked = list(snaps)
    out = tmp_path / "out.txt"

    def argv(target: int) -> list[str]:
        return ["restore", "--json", "-C", str(world), snaps[target].hex()]

    first = run_ok(zygote, argv(0), out)
    current = 0
    timing = Timing(rng, first.seconds)
    figures = Figures("restore")
    left_temp = 0
    for _ in range(ROUNDS):
        target = rng.choice([v for v in range(len(versions)) if v != current])
        old = world_files(world)
        assert old == expected[current]
        child = zygote.phs(argv(target), out)
        landed = zygote.kill_after(child, timing.delay())
        if (printed := child.json()) is not None and printed["safety_snapshot"]:
            acked.append(oid(printed["safety_snapshot"]))
        problems = mixed_problems(world_files(world), old, expected[target])
        assert not problems, problems[:5]
        check_repo(world, acked)
        left = temp_files(world)
        left_temp += len(left)
        for path in left:  # counted once: the re-run does not remove them (reported)
            path.unlink()
        again = run_ok(zygote, argv(target), out)
        if (safety := again.json()["safety_snapshot"]) is not None:
            acked.append(oid(safety))
        else:
            timing.add(again.seconds)
        assert world_files(world) == expected[target], "the re-run converges"
        assert tree_root(world) == roots[target], "restore, then snapshot: the same root"
        current = target
        tally(figures, landed, 2)
    check_repo(world, acked)
    figures.extra.update(acknowledged_snapshots=len(set(acked)),
                         temp_files_after_kills=left_temp, temp_files_left_at_end=len(temp_files(world)))
    finish(figures)


def test_checkout_killed_mid_way_can_be_run_again(tmp_path: Path, zygote: Zygote,
                                                  versions: list[Path]) -> None:
    world = copy_world(versions[0], tmp_path / "world")
    with Repository.init(world) as repo:
        head = repo.snapshot("v0").oid
    argv = ["checkout", "-C", str(world), head.hex(), str(tmp_path / "copy")]
    child = zygote.phs(argv, tmp_path / "out.txt", die_after_writes=1)
    assert zygote.wait(child) == -signal.SIGKILL
    run_ok(zygote, argv, tmp_path / "out.txt")
    assert tree_root(tmp_path / "copy") == tree_root(world)


def test_snapshot_after_a_killed_rollback_keeps_newer_play(tmp_path: Path, zygote: Zygote,
                                                          versions: list[Path]) -> None:
    """A rollback killed mid-way, then (every other round) play on the half-restored world,
    then ``phs snapshot``: an interruption alone is finished; play is snapshotted and never
    overwritten, and then either the rollback is run again or ``phs restore --abort``."""
    rng = random.Random(SEED + 7)
    world = copy_world(versions[0], tmp_path / "world")
    snaps: list[ObjectId] = []
    expected: list[dict[str, bytes]] = []
    with Repository.init(world) as repo:
        for i, version in enumerate(versions):
            replace_world(world, version)
            snaps.append(repo.snapshot(f"v{i}").oid)
            repo.checkout(snaps[-1], tmp_path / f"co{i}")
            expected.append(world_files(tmp_path / f"co{i}"))
    replace_world(world, tmp_path / f"co{len(versions) - 1}")
    current, acked = len(versions) - 1, list(snaps)
    out = tmp_path / "out.txt"
    figures = Figures("pending_restore_snapshot")
    kept_play = finished_by_snapshot = aborted = 0
    for i in range(ROUNDS // 3):
        target = rng.choice([v for v in range(len(versions)) if v != current])
        rollback = ["rollback", "--json", "-C", str(world), snaps[target].hex()]
        child = zygote.phs(rollback, out, die_after_writes=rng.randint(1, 3))
        landed = zygote.wait(child) == -signal.SIGKILL
        with Repository.open(world) as repo:
            before = repo.head()
            pending = repo.pending_restore() is not None
        assert pending == landed
        play = i % 2 == 1
        if play:
            (world / "level.dat").write_bytes(rng.randbytes(4096))
            (world / f"play{i}.dat").write_bytes(rng.randbytes(64 << 10))
        now = world_files(world)
        snap = run_ok(zygote, ["snapshot", "--json", "-C", str(world)], out)
        result = snap.json()
        acked.append(oid(result["id"]))
        if play:
            assert world_files(world) == now, "play after the interrupted rollback was overwritten"
            assert result["created"] and result["root"] == tree_root(world).hex()
            assert not landed or "phs restore --abort" in snap.output(), snap.output()
            kept_play += landed
        else:
            assert world_files(world) == expected[target], "the interruption alone is finished"
            assert not result["created"] and oid(result["id"]) == before
            finished_by_snapshot += landed
        current = target
        if play and landed and rng.random() < 0.5:
            run_ok(zygote, ["restore", "--abort", "-C", str(world)], out)
            assert world_files(world) == now, "abort writes nothing"
            aborted += 1
        elif play and landed:
            run_ok(zygote, rollback, out)
            assert world_files(world) == expected[target], "running it again finishes it"
        with Repository.open(world) as repo:
            assert repo.pending_restore() is None, "every round ends with the choice made"
        if world_files(world) != expected[current]:  # the next round starts from a snapshot
            replace_world(world, tmp_path / f"co{current}")
            acked.append(oid(run_ok(zygote, ["snapshot", "--json", "-C", str(world)], out)
                             .json()["id"]))
        check_repo(world, acked)
        tally(figures, landed, 3)
    figures.extra.update(play_kept=kept_play, finished_by_snapshot=finished_by_snapshot,
                         aborted=aborted)
    figures.write()
    assert kept_play and finished_by_snapshot and aborted, figures


# -- gc ---------------------------------------------------------------------------------------


def garbage(world: Path, version: Path, rng: random.Random
            ) -> tuple[ObjectId, set[ObjectId], set[ObjectId]]:
    """A snapshot with random files, then one without: gc --keep-last 1 deletes them.
    Returns head, the ids before gc and the ids an uninterrupted gc keeps."""
    with Repository.open(world) as repo:
        mutate(world, version, rng)
        repo.snapshot("with garbage")
        for k in range(4):
            (world / f"fault{k}.dat").unlink()
        head = repo.snapshot("without").oid
        kept = walk(repo.store.objects, [head], follow_parents=False, read_blobs=False).reachable
        return head, set(repo.store.objects.iter_ids()), kept


def test_kill_9_during_gc(tmp_path: Path, zygote: Zygote, versions: list[Path]) -> None:
    world = copy_world(versions[0], tmp_path / "world")
    rng = random.Random(SEED + 2)
    with Repository.init(world) as repo:
        repo.snapshot("v0")
    argv = ["gc", "--json", "-C", str(world), "--keep-last", "1"]
    out = tmp_path / "out.txt"

    def make_garbage(i: int) -> tuple[ObjectId, set[ObjectId], set[ObjectId]]:
        return garbage(world, versions[i % len(versions)], rng)

    head, _, kept = make_garbage(1)
    first = run_ok(zygote, argv, out)
    timing = Timing(rng, first.seconds)
    figures = Figures("gc")
    deleted = 0
    for i in range(ROUNDS):
        head, before, kept = make_garbage(i + 2)
        child = zygote.phs(argv, out)
        landed = zygote.kill_after(child, timing.delay())
        assert check_repo(world, [head]) == head
        with Repository.open(world) as repo:
            ids = set(repo.store.objects.iter_ids())
        assert ids in (before, kept), "gc deletes all its garbage at once or nothing"
        again = run_ok(zygote, argv, out)
        timing.add(again.seconds)
        with Repository.open(world) as repo:
            assert set(repo.store.objects.iter_ids()) == kept, "the re-run converges"
            assert repo.head() == head
        deleted += len(before - kept)
        tally(figures, landed, 2)
    check_repo(world, [head])
    figures.extra["objects_deleted"] = deleted
    finish(figures)


#: The compaction rounds: at each step of the swap, killed; paused and killed while a reader
#: waits to open the store; paused while a reader waits. The rest are kills at random moments.
COMPACTION_FAULTS = [(step, pause, kill) for step in COMPACTION_STEPS
                     for pause, kill in ((0.0, True), (0.4, True), (0.4, False))]


def test_kill_9_during_the_compaction_swap(tmp_path: Path, zygote: Zygote,
                                          versions: list[Path]) -> None:
    """gc compacts the store's file after deleting (a copy swapped in); killed at random
    moments and at every step of the swap, with a reader (phs log) that starts while the
    gate is held: the store is never lost or half-swapped, the reader reads the history the
    deletion left, and the next gc converges."""
    world = copy_world(versions[0], tmp_path / "world")
    store = world / ".peerhost" / "store"
    rng = random.Random(SEED + 7)
    with Repository.init(world) as repo:
        repo.snapshot("v0")
    argv = ["gc", "--json", "-C", str(world), "--keep-last", "1"]
    out, reader_out, mark = tmp_path / "out.txt", tmp_path / "reader.txt", tmp_path / "mark"
    garbage(world, versions[1], rng)
    first = run_ok(zygote, argv, out)
    assert first.json()["compacted"], first.json()
    timing = Timing(rng, first.seconds)
    figures = Figures("gc_compaction")
    plans: list[tuple[str, float, bool] | None] = [*COMPACTION_FAULTS, *COMPACTION_FAULTS]
    plans += [None] * (ROUNDS - len(plans))
    rng.shuffle(plans)
    shrunk = readers = 0
    for i, plan in enumerate(plans):
        head, before, kept = garbage(world, versions[(i + 2) % len(versions)], rng)
        size = (store / "data.mdb").stat().st_size
        mark.unlink(missing_ok=True)
        if plan is None:
            child = zygote.phs(argv, out)
            landed = zygote.kill_after(child, timing.delay())
        else:
            step, pause, kill = plan
            child = zygote.phs(argv, out, compaction_fault={
                "step": step, "mark": str(mark), "pause": pause, "kill": kill})
            reader = None
            if pause:
                wait_for_file(mark, zygote, child)
                reader = zygote.phs(["log", "--json", "-C", str(world)], reader_out)
            status = zygote.wait(child)
            landed = status == -signal.SIGKILL
            assert status in ((-signal.SIGKILL,) if kill else (0,)), child.output()[-2000:]
            if reader is not None:
                assert zygote.wait(reader) == 0, reader.output()[-2000:]
                assert [e["id"] for e in reader.json()] == [head.hex()], "the reader read the store as gc left it"
                readers += 1
        assert check_repo(world, [head]) == head
        with Repository.open(world) as repo:
            ids = set(repo.store.objects.iter_ids())
            history = [oid for oid, _ in repo.log()]
        assert ids in (before, kept), "gc deletes all its garbage at once or nothing"
        assert ids == before or history == [head]
        shrunk += (store / "data.mdb").stat().st_size < size
        again = run_ok(zygote, argv, out)
        if plan is None:
            timing.add(again.seconds)
        assert not (store / "compact.tmp").exists(), "a killed compaction's copy is removed"
        with Repository.open(world) as repo:
            assert set(repo.store.objects.iter_ids()) == kept and repo.head() == head
            assert repo.verify().ok
        assert (store / "data.mdb").stat().st_size < size, "the file shrank by the re-run at last"
        tally(figures, landed, 2 + (plan is not None and plan[1] > 0))
    figures.extra.update(step_faults=len(COMPACTION_FAULTS) * 2, readers_during_swap=readers,
                         killed_rounds_already_compacted=shrunk)
    finish(figures)


def wait_for_file(path: Path, zygote: Zygote, child: Child, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert zygote.poll(child) is None, f"exited before the step: {child.output()[-2000:]}"
        assert time.monotonic() < deadline, "the fault's step was never reached"
        time.sleep(0.01)


# -- push and pull with a live coordinator ----------------------------------------------------


@dataclass
class Session:
    coordinator: Coordinator
    http: httpx.Client
    owner: CoordinatorClient
    alice: CoordinatorClient
    bob: CoordinatorClient
    tokens: dict[str, str]


@contextmanager
def coordinator_session(zygote: Zygote, data: Path, *, wall: float | None = None) -> Iterator[Session]:
    coordinator = Coordinator(zygote, data, free_port(), wall=wall)
    coordinator.start()
    try:
        assert coordinator.admin_token is not None
        with httpx.Client(base_url=coordinator.url, timeout=60) as http:
            admin = CoordinatorClient(http, "", coordinator.admin_token)
            owner_token = admin.create_session("s1")
            owner = CoordinatorClient(http, "s1", owner_token)
            tokens = {name: owner.add_member(name) for name in ("alice", "bob")}
            yield Session(coordinator, http, owner, CoordinatorClient(http, "s1", tokens["alice"]),
                          CoordinatorClient(http, "s1", tokens["bob"]), tokens)
    finally:
        coordinator.stop()


def session_store_report(data: Path, heads: list[ObjectId]) -> set[ObjectId]:
    """Walk the session's store (the coordinator is stopped); returns what ``heads`` reach."""
    with LmdbStore(data / "sessions" / "s1" / "store") as store:
        report = walk(store.objects, heads)
        assert report.ok, [str(p) for p in report.problems[:5]]
        return report.reachable


def test_kill_9_during_push(tmp_path: Path, zygote: Zygote, versions: list[Path]) -> None:
    """Even rounds push as ``phs push`` does by default (a short lease of its own), odd rounds
    with a lease the test holds (``--fencing``), as ``phs host`` does."""
    rng = random.Random(SEED + 3)
    world = copy_world(versions[0], tmp_path / "world")
    out = tmp_path / "out.txt"
    with coordinator_session(zygote, tmp_path / "coordinator") as s:
        with Repository.init(world) as repo:
            acked = [repo.snapshot("v0").oid]
        run_ok(zygote, ["remote", "add", "-C", str(world), "origin", s.coordinator.url,
                        "--session", "s1"], out, env={"PHS_TOKEN": s.tokens["alice"]})
        argv = ["push", "--json", "-C", str(world)]
        first = run_ok(zygote, argv, out, batch_bytes=BATCH)
        pushed = [acked[0]]
        timing = Timing(rng, first.seconds)
        figures = Figures("push")
        for i in range(ROUNDS):
            with Repository.open(world) as repo:
                mutate(world, slow_versions(versions, i + 1), rng)
                local = repo.snapshot(f"round {i}").oid
                acked.append(local)
            fencing = s.alice.acquire("alice-pc", 600).fencing if i % 2 else None
            args = argv if fencing is None else [*argv, "--fencing", str(fencing)]
            child = zygote.phs(args, out, batch_bytes=BATCH)
            landed = zygote.kill_after(child, timing.delay())
            if child.json() is not None:
                pushed.append(local)
            head = s.alice.head().head
            assert head in (pushed[-1], local), "the session head is an acknowledged one, or the new one"
            if fencing is not None:
                assert s.alice.renew(fencing).lease.fencing == fencing, "the kill cost no lease"
            check_repo(world, acked)
            again = run_ok(zygote, args, out, batch_bytes=BATCH)
            timing.add(again.seconds)
            assert s.alice.head().head == local, "the re-run converges"
            pushed.append(local)
            if fencing is not None:
                s.alice.release(fencing)
            assert s.alice.lease_status().lease is None, "the re-run left no lease behind"
            tally(figures, landed, 2)
        log = s.alice.log(limit=1000)
        assert {oid(e["new"]) for e in log} <= set(acked)
    reachable = session_store_report(tmp_path / "coordinator", [pushed[-1]])
    assert set(pushed) <= reachable
    figures.extra["session_heads"] = len(log)
    finish(figures)


def test_kill_9_during_pull(tmp_path: Path, zygote: Zygote, versions: list[Path]) -> None:
    rng = random.Random(SEED + 4)
    source = copy_world(versions[0], tmp_path / "source")
    world = tmp_path / "world"
    out = tmp_path / "out.txt"
    with coordinator_session(zygote, tmp_path / "coordinator") as s, \
            Repository.init(source) as pusher:
        fencing = s.alice.acquire("alice-pc", 600).fencing

        def publish(i: int) -> tuple[ObjectId, dict[str, bytes]]:
            """A new session head, and the files an uninterrupted pull writes for it."""
            mutate(source, slow_versions(versions, i), rng)
            head = pusher.snapshot(f"round {i}").oid
            push(pusher, s.alice, fencing=fencing)
            shutil.rmtree(tmp_path / "co", ignore_errors=True)
            pusher.checkout(head, tmp_path / "co")
            return head, world_files(tmp_path / "co")

        head, files = publish(0)
        run_ok(zygote, ["clone", s.coordinator.url, "--session", "s1", str(world)], out,
               env={"PHS_TOKEN": s.tokens["bob"]})
        acked = [head]
        argv = ["pull", "--json", "-C", str(world)]
        head, files = publish(1)
        first = run_ok(zygote, argv, out, batch_bytes=BATCH)
        acked.append(head)
        timing = Timing(rng, first.seconds)
        figures = Figures("pull")
        stuck = 0
        for i in range(ROUNDS):
            old = world_files(world)
            before = acked[-1]
            head, files = publish(i + 2)
            child = zygote.phs(argv, out, batch_bytes=BATCH)
            landed = zygote.kill_after(child, timing.delay())
            if child.json() is not None:
                acked.append(head)
            now = world_files(world)
            problems = mixed_problems(now, old, files)
            assert not problems, problems[:5]
            local = check_repo(world, acked)
            assert local in (before, head)
            half_done = local == head and now != files
            again = run_ok(zygote, argv, out, batch_bytes=BATCH)
            report = again.json()
            if half_done and report["outcome"] == "ahead":
                # Known bug (test_pull_killed_while_restoring_converges): the re-run snapshots
                # the half-restored world on top of the session head and leaves it. Undo that
                # so the next rounds start clean.
                stuck += 1
                check_repo(world, acked)
                undo_snapshot_on_top(world, head)
            else:
                assert report["head"] == head.hex(), report
                timing.add(again.seconds)
            assert world_files(world) == files, "the re-run converges"
            acked.append(head)
            tally(figures, landed, 2)
    check_repo(world, acked)
    figures.extra["rerun_left_world_half_restored"] = stuck
    finish(figures)


@dataclass
class Cloned:
    s: Session
    pusher: Repository
    fencing: int
    world: Path


@contextmanager
def cloned_session(zygote: Zygote, tmp_path: Path, versions: list[Path],
                   world: Path | None = None) -> Iterator[Cloned]:
    """A live coordinator whose session head (version 0) alice pushed from ``tmp_path /
    "source"``, cloned by bob (with ``phs clone``) into ``world``."""
    source = copy_world(versions[0], tmp_path / "source")
    world = world or tmp_path / "world"
    with coordinator_session(zygote, tmp_path / "coordinator") as s, \
            Repository.init(source) as pusher:
        fencing = s.alice.acquire("alice-pc", 600).fencing
        pusher.snapshot("v0")
        push(pusher, s.alice, fencing=fencing)
        run_ok(zygote, ["clone", s.coordinator.url, "--session", "s1", str(world)],
               tmp_path / "clone.txt", env={"PHS_TOKEN": s.tokens["bob"]})
        yield Cloned(s, pusher, fencing, world)


def test_gc_racing_pull(tmp_path: Path, zygote: Zygote, versions: list[Path]) -> None:
    """``phs gc`` run again and again while ``phs pull`` fetches in small batches: gc may be
    refused (the world is busy) but never deletes what the pull stored or relies on, and the
    head never moves onto missing objects."""
    rng = random.Random(SEED + 8)
    out, gc_out = tmp_path / "out.txt", tmp_path / "gc.txt"
    with cloned_session(zygote, tmp_path, versions) as c:
        s, pusher, fencing, world, source = c.s, c.pusher, c.fencing, c.world, c.pusher.world
        figures = Figures("gc_racing_pull")
        gcs = deleted = busy = 0
        for i in range(7):
            mutate(source, versions[(i + 1) % len(versions)], rng)
            head = pusher.snapshot(f"round {i}").oid
            push(pusher, s.alice, fencing=fencing)
            shutil.rmtree(tmp_path / "co", ignore_errors=True)
            pusher.checkout(head, tmp_path / "co")
            child = zygote.phs(["pull", "--json", "-C", str(world)], out, batch_bytes=BATCH)
            deadline = time.monotonic() + 60
            while zygote.poll(child) is None and time.monotonic() < deadline:
                collector = zygote.phs(["gc", "--json", "-C", str(world)], gc_out)
                status = zygote.wait(collector)
                assert status in (0, 5), f"gc exited {status}: {collector.output()[-2000:]}"
                gcs += 1
                deleted += (collector.json() or {}).get("deleted_objects", 0)
            status = zygote.wait(child)
            assert status in (0, 5), f"pull exited {status}: {child.output()[-2000:]}"
            busy += status == 5  # gc held the world's lock when the pull came to write it
            check_repo(world, [])
            report = run_ok(zygote, ["pull", "--json", "-C", str(world)], out).json()
            assert report["head"] == head.hex(), report
            assert world_files(world) == world_files(tmp_path / "co"), "the re-run converges"
            check_repo(world, [head])
            tally(figures, True, 2)
    figures.extra.update(gc_runs=gcs, objects_deleted=deleted, pulls_refused_busy=busy)
    figures.write()
    assert gcs > figures.rounds, figures


def flip_bit(store: LmdbStore, target: ObjectId, rng: random.Random) -> None:
    # Through the unchecked backend: it stores what it is given (packed or not).
    data = bytearray(store.objects.backend.get_many([target])[0])
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    store.objects.backend.put_many([(target, bytes(data))])


def test_corrupt_objects_are_repaired_from_the_world_and_the_coordinator(
        tmp_path: Path, zygote: Zygote, versions: list[Path]) -> None:
    """Bits flipped in stored objects (a chunk and a folder node of an old session snapshot,
    a blob the live world still holds, one of a local-only snapshot): the commands that do
    not need them go on, ``phs repair`` heals what the world or the coordinator has and drops
    the rest from the local snapshot, saying so."""
    rng = random.Random(SEED + 9)
    out = tmp_path / "out.txt"
    figures = Figures("corrupt_object_repair", rounds=1, operations_checked=6)
    with cloned_session(zygote, tmp_path, versions) as c:
        mutate(c.pusher.world, versions[1], rng)
        c.pusher.snapshot("v1")
        push(c.pusher, c.s.alice, fencing=c.fencing)
        run_ok(zygote, ["pull", "-C", str(c.world)], out)
        (c.world / "local.dat").write_bytes(rng.randbytes(1000))
        run_ok(zygote, ["snapshot", "-C", str(c.world), "-m", "local only"], out)
        (c.world / "local.dat").unlink()
        run_ok(zygote, ["snapshot", "-C", str(c.world), "-m", "after"], out)
        with Repository.open(c.world) as repo:
            log = list(repo.log())
            v0 = log[-1][1]
            now = walk(repo.store.objects, [log[0][0]], follow_parents=False).reachable
            old_only = sorted(walk(repo.store.objects, [log[-1][0]], follow_parents=False).reachable
                              - now - {log[-1][0]})
            node = next(o for o in old_only if not isinstance(decode(repo.store.objects.get_raw(o)), bytes))
            chunk = next(o for o in old_only if isinstance(decode(repo.store.objects.get_raw(o)), bytes))
            live = hash_bytes(encode_blob((c.world / "fault0.dat").read_bytes()))
            local = walk(repo.store.objects, [log[1][0]], follow_parents=False).reachable - now
            lost = next(o for o in local if isinstance(decode(repo.store.objects.get_raw(o)), bytes))
            damaged = [node, chunk, live, lost]
            for target in damaged:
                assert isinstance(repo.store, LmdbStore)
                flip_bit(repo.store, target, rng)
        verify = zygote.phs(["verify", "-C", str(c.world)], out)
        assert zygote.wait(verify) == 4
        (c.world / "level.dat").write_bytes(rng.randbytes(2000))  # play goes on
        run_ok(zygote, ["snapshot", "-C", str(c.world), "-m", "not blocked"], out)
        report = run_ok(zygote, ["repair", "--json", "-C", str(c.world)], out).json()
        assert report["damaged"] == 4, report
        assert report["healed"] == {"the live world": 1, "origin": 2}, report
        assert [x["path"] for x in report["lost"]] == ["local.dat"], report
        run_ok(zygote, ["verify", "-C", str(c.world)], out)
        run_ok(zygote, ["restore", "-C", str(c.world), log[-1][0].hex()], out)
        assert tree_root(c.world) == v0.root
        figures.kills_mid_way = len(damaged)
        figures.extra.update(healed=report["healed"], paths_dropped=len(report["lost"]))
        figures.write()


def undo_snapshot_on_top(world: Path, head: ObjectId) -> None:
    """Move head back from a snapshot taken on top of ``head`` and restore ``head``'s world."""
    with Repository.open(world) as repo:
        top = repo.head()
        assert top is not None and repo.read_snapshot(top).parents == (head,)
        restore_tree(repo.store.objects, world, repo.read_snapshot(top).root,
                     repo.read_snapshot(head).root)
        repo.store.apply(Update(refs=[(HEAD, top, head)]))


def test_pull_killed_while_restoring_converges(tmp_path: Path, zygote: Zygote,
                                               versions: list[Path]) -> None:
    out = tmp_path / "out.txt"
    with cloned_session(zygote, tmp_path, versions) as c:
        s, pusher, fencing, world, source = c.s, c.pusher, c.fencing, c.world, c.pusher.world
        replace_world(source, versions[1])
        head = pusher.snapshot("v1").oid
        push(pusher, s.alice, fencing=fencing)
        pusher.checkout(head, tmp_path / "co")
        files = world_files(tmp_path / "co")
        old = world_files(world)
        argv = ["pull", "--json", "-C", str(world)]
        child = zygote.phs(argv, out, die_after_writes=1)  # kill -9 after one file is written
        assert zygote.wait(child) == -signal.SIGKILL
        assert not mixed_problems(world_files(world), old, files)
        assert world_files(world) != files and check_repo(world, []) == head
        report = run_ok(zygote, argv, out).json()
        assert (report["outcome"], report["head"]) == ("up-to-date", head.hex())
        assert world_files(world) == files


# -- the coordinator killed -------------------------------------------------------------------


def offline_head(data: Path) -> tuple[ObjectId | None, int]:
    """The session head and fencing counter as persisted (the coordinator is stopped)."""
    with LmdbStore(data / "coordinator") as meta:
        lease = meta.meta.get("lease/s1")
        return meta.refs.get("head/s1"), json.loads(lease)["fencing"] if lease else 0


def test_coordinator_kill_9_during_pushes(tmp_path: Path, zygote: Zygote,
                                          versions: list[Path]) -> None:
    rng = random.Random(SEED + 5)
    world = copy_world(versions[0], tmp_path / "world")
    data = tmp_path / "coordinator"
    with coordinator_session(zygote, data) as s, Repository.init(world) as repo:
        fencing = s.alice.acquire("alice-pc", 600).fencing
        repo.snapshot("v0")
        started = time.monotonic()
        push(repo, s.alice, fencing=fencing, batch_bytes=BATCH)
        timing = Timing(rng, time.monotonic() - started)
        pushed = [repo.head()]
        figures = Figures("coordinator_push")
        for i in range(ROUNDS):
            mutate(world, slow_versions(versions, i + 1), rng)
            local = repo.snapshot(f"round {i}").oid
            killer = threading.Timer(timing.delay(), s.coordinator.kill)
            started = time.monotonic()
            killer.start()
            try:
                push(repo, s.alice, fencing=fencing, batch_bytes=BATCH)
                pushed.append(local)
                timing.add(time.monotonic() - started)
                landed = False
            except CoordinatorUnavailable:  # killed mid-request
                landed = True
            killer.join(timeout=60)
            assert not killer.is_alive()
            head, counter = offline_head(data)
            assert head in (pushed[-1], local), "the head is an acknowledged one, or the new one"
            assert counter == fencing, "the fencing counter survives"
            assert head is not None
            session_store_report(data, [head])
            s.coordinator.start()
            assert s.alice.renew(fencing).lease.fencing == fencing, "the lease was persisted"
            push(repo, s.alice, fencing=fencing, batch_bytes=BATCH)
            assert s.alice.head().head == local, "the push resumes"
            pushed.append(local)
            tally(figures, landed, 2)
    reachable = session_store_report(data, [local])
    assert {p for p in pushed if p is not None} <= reachable
    figures.extra["restarts"] = s.coordinator.starts
    finish(figures)


class LeaseChurn(threading.Thread):
    """Acquire, renew and release in a loop until the coordinator stops answering, recording
    what was acknowledged and what was in flight."""

    def __init__(self, clients: dict[str, CoordinatorClient], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.clients = clients
        self.rng = rng
        self.acked: list[tuple[str, str, int]] = []  # (member, op, fencing)
        self.in_flight: tuple[str, str] | None = None
        self.held: tuple[str, int] | None = None
        self.error: CoordinatorError | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                if self.held is None:
                    member = self.rng.choice(sorted(self.clients))
                    self.in_flight = (member, "acquire")
                    fencing = self.clients[member].acquire(f"{member}-pc", 600).fencing
                    self.held = (member, fencing)
                    self.acked.append((member, "acquire", fencing))
                else:
                    member, fencing = self.held
                    op = self.rng.choice(["renew", "renew", "release"])
                    self.in_flight = (member, op)
                    if op == "renew":
                        self.clients[member].renew(fencing)
                    else:
                        self.clients[member].release(fencing)
                        self.held = None
                    self.acked.append((member, op, fencing))
                self.in_flight = None
        except CoordinatorUnavailable:
            pass  # the coordinator was killed mid-request
        except CoordinatorError as exc:
            self.error = exc


def test_coordinator_kill_9_during_lease_changes(tmp_path: Path, zygote: Zygote) -> None:
    rng = random.Random(SEED + 6)
    data = tmp_path / "coordinator"
    # A frozen wall clock: tokens grow only through the persisted counter.
    with coordinator_session(zygote, data, wall=1000.0) as s:
        clients = {"alice": s.alice, "bob": s.bob}
        figures = Figures("coordinator_lease")
        highest = 0
        for _ in range(ROUNDS):
            churn = LeaseChurn(clients, rng)
            churn.start()
            time.sleep(rng.uniform(0.02, 0.3))
            s.coordinator.kill()
            churn.join(timeout=60)
            assert not churn.is_alive() and churn.error is None, churn.error
            _, counter = offline_head(data)
            acked = [f for _, _, f in churn.acked]
            assert counter >= max(acked, default=highest) >= highest, "tokens never go down"
            s.coordinator.start()
            status = s.owner.lease_status()
            if churn.held is not None and churn.in_flight is None:
                member, fencing = churn.held
                assert status.lease is not None and status.lease.fencing == fencing
                assert status.lease.member == member
            if status.lease is not None:  # the owner ends any lease, then a grant is fresh
                s.owner.release(status.lease.fencing)
                stale = status.lease.fencing
                with pytest.raises(LeaseLost):
                    clients[status.lease.member].renew(stale)
            fresh = s.alice.acquire("alice-pc", 600).fencing
            assert fresh > max(counter, highest), "a new grant is above every token issued"
            s.alice.release(fresh)
            highest = fresh
            tally(figures, churn.in_flight is not None, len(churn.acked) + 1)
        figures.extra["highest_token"] = highest  # a frozen wall clock: 1,000,000 + grants
    figures.write()
    assert figures.rounds >= ROUNDS and figures.kills_mid_way >= ROUNDS // 3, figures


# -- a damaged store file ---------------------------------------------------------------------


def main_db_root(data_file: Path) -> int:
    """The page number of LMDB's main database root (it names the others), from the newer of
    the two meta pages: page header 16 bytes, magic, version, address, map size, then two
    database records of 48 bytes each (free pages, main) whose last field is the root."""
    raw = data_file.read_bytes()
    metas = []
    for page in (0, 1):
        meta = raw[page * 4096 + 16:]
        root = int.from_bytes(meta[24 + 48 + 40:24 + 48 + 48], "little")
        txnid = int.from_bytes(meta[24 + 96 + 8:24 + 96 + 16], "little")
        metas.append((txnid, root))
    return max(metas)[1]


def test_a_damaged_store_file_gives_one_clear_line(tmp_path: Path, zygote: Zygote,
                                                   versions: list[Path]) -> None:
    """16-byte runs overwritten in data.mdb (the main database's root page, then seeded
    offsets in the middle): verify, log, diff and checkout each end with one line naming the
    store and what to do, never a traceback or a crash; verify exits 4 on a store error."""
    world = copy_world(versions[0], tmp_path / "world")
    with Repository.init(world) as repo:
        repo.snapshot("v0")
        replace_world(world, versions[1])
        repo.snapshot("v1")
    data = world / ".peerhost" / "store" / "data.mdb"
    pristine = data.read_bytes()
    rng = random.Random(SEED + 10)
    pages = len(pristine) // 4096
    cases = [("main database root", [main_db_root(data) * 4096])]  # its page header
    cases += [(f"seed {i}", [rng.randrange(pages // 4, 3 * pages // 4) * 4096 + rng.choice((0, 16, 24))
                             for _ in range(rng.randint(1, 3))]) for i in range(6)]
    out = tmp_path / "out.txt"
    outcomes: dict[str, int] = {}
    messages: dict[str, str] = {}
    store_errors = 0
    figures = Figures("damaged_store_file", rounds=len(cases), kills_mid_way=len(cases))
    for name, offsets in cases:
        damaged = bytearray(pristine)
        for offset in offsets:
            damaged[offset:offset + 16] = rng.randbytes(16)
        data.write_bytes(bytes(damaged))
        for argv in (["verify"], ["log"], ["diff", "head~1", "head"],
                     ["checkout", "head", str(tmp_path / f"co-{len(outcomes)}")]):
            child = zygote.phs([*argv, "-C", str(world)], out)
            status = zygote.wait(child)
            text = child.output()
            label = f"{name}: phs {argv[0]}"
            outcomes[label] = status
            assert status >= 0, f"{label} died of signal {-status}"
            assert "Traceback" not in text and status != 99, f"{label}:\n{text[-3000:]}"
            errors = [line for line in text.splitlines() if line.startswith("phs ")]
            assert status == 0 or errors or argv[0] == "verify", f"{label}: {text[-2000:]}"
            if errors:
                messages[label] = f"exit {status}: {errors[0][:160]}"
            if any("is damaged" in line for line in errors):
                store_errors += 1
                assert len(errors) == 1 and str(data.parent) in errors[0], f"{label}: {text}"
                assert "from a backup" in errors[0], errors[0]
                assert argv[0] != "verify" or status == 4, f"{label} exited {status}"
            if argv[0] == "verify":
                assert status in (0, 4), f"{label} exited {status}: {text[-2000:]}"
    assert outcomes["main database root: phs verify"] == 4
    assert store_errors >= 4, outcomes
    figures.operations_checked = len(outcomes)
    figures.extra.update(store_errors=store_errors, exit_codes={
        str(k): list(outcomes.values()).count(k) for k in sorted(set(outcomes.values()))},
        messages=messages)
    figures.write()


# -- a full disk and a full map ---------------------------------------------------------------


@contextmanager
def tmpfs(path: Path, mib: int) -> Iterator[Path]:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root and must mount a tmpfs for the disk-full tests")
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}M", "tmpfs", str(path)],
                           check=False, capture_output=True, text=True, timeout=30)
    if mount.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"mounting a tmpfs failed: {mount.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def record(name: str, message: str) -> None:
    """One refused operation: its message, the previous state checked intact, then a retry
    that succeeded (asserted after this call)."""
    Figures(name, rounds=1, operations_checked=2, extra={"faults": "no space" if "disk" in name
                                                         else "map limit", "message": message}).write()


def fill(folder: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of the file system holding ``folder``."""
    free = shutil.disk_usage(folder).free
    filler = folder / "filler.bin"
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_disk_full_during_snapshot(tmp_path: Path, zygote: Zygote, versions: list[Path]) -> None:
    with tmpfs(tmp_path / "disk", 16) as disk:
        world = copy_world(versions[0], disk / "world")
        with Repository.init(world) as repo:
            v0 = repo.snapshot("v0").oid
        (world / "big.dat").write_bytes(random.Random(SEED).randbytes(3 << 20))
        filler = fill(disk, leave=256 << 10)
        out = tmp_path / "out.txt"
        child = zygote.phs(["snapshot", "-C", str(world)], out)
        assert zygote.wait(child) == 1, child.output()
        message = child.output().strip()
        assert len(message.splitlines()) == 1, message
        assert f"the disk holding the store at {world / '.peerhost' / 'store'} is full" in message
        assert check_repo(world, [v0]) == v0, "the previous head is intact"
        record("disk_full_snapshot", message)
        filler.unlink()
        run_ok(zygote, ["snapshot", "-C", str(world)], out)
        with Repository.open(world) as repo:
            head = repo.head()
            assert head is not None and repo.read_snapshot(head).parents == (v0,)
            assert repo.read_snapshot(head).root == tree_root(world)
        check_repo(world, [v0, head])


def test_disk_full_during_restore(tmp_path: Path, zygote: Zygote, versions: list[Path]) -> None:
    with tmpfs(tmp_path / "disk", 16) as disk:
        world = copy_world(versions[0], disk / "world")
        with Repository.init(world) as repo:
            v0 = repo.snapshot("v0").oid
            repo.checkout(v0, tmp_path / "co")  # the expected bytes, off the small disk
            (world / "big.dat").write_bytes(random.Random(SEED).randbytes(3 << 20))
            replace_world(world, versions[2])
            v2 = repo.snapshot("v2").oid
        old, new = world_files(world), world_files(tmp_path / "co")
        filler = fill(disk, leave=768 << 10)  # room for the store's commit, not for the region
        out = tmp_path / "out.txt"
        child = zygote.phs(["restore", "-C", str(world), v0.hex()], out)
        assert zygote.wait(child) == 1, child.output()
        message = child.output().strip()
        assert len(message.splitlines()) == 1 and "No space left" in message, message
        assert str(world) in message, f"the error names the file: {message}"
        assert not mixed_problems(world_files(world), old, new)
        assert not temp_files(world), "a failed write leaves no temporary file"
        assert check_repo(world, [v0, v2]) == v2
        record("disk_full_restore", message)
        filler.unlink()
        run_ok(zygote, ["restore", "-C", str(world), v0.hex()], out)
        assert not mixed_problems(world_files(world), old, new)
        with Repository.open(world) as repo:
            assert tree_root(world) == repo.read_snapshot(v0).root, "the re-run converges"
        check_repo(world, [v0, v2])


def test_disk_full_during_pull(tmp_path: Path, zygote: Zygote, versions: list[Path]) -> None:
    source = copy_world(versions[0], tmp_path / "source")
    out = tmp_path / "out.txt"
    with tmpfs(tmp_path / "disk", 16) as disk, \
            coordinator_session(zygote, tmp_path / "coordinator") as s, \
            Repository.init(source) as pusher:
        world = disk / "world"
        fencing = s.alice.acquire("alice-pc", 600).fencing
        v0 = pusher.snapshot("v0").oid
        push(pusher, s.alice, fencing=fencing)
        run_ok(zygote, ["clone", s.coordinator.url, "--session", "s1", str(world)], out,
               env={"PHS_TOKEN": s.tokens["bob"]})
        mutate(source, versions[3], random.Random(SEED))
        v1 = pusher.snapshot("v1").oid
        push(pusher, s.alice, fencing=fencing)
        before = world_files(world)
        filler = fill(disk, leave=256 << 10)
        child = zygote.phs(["pull", "-C", str(world)], out)
        assert zygote.wait(child) == 1, child.output()
        message = child.output().strip()
        assert len(message.splitlines()) == 1, message
        assert f"the disk holding the store at {world / '.peerhost' / 'store'} is full" in message
        assert world_files(world) == before, "the world is untouched"
        assert check_repo(world, [v0]) == v0, "the previous head is intact"
        record("disk_full_pull", message)
        filler.unlink()
        report = run_ok(zygote, ["pull", "--json", "-C", str(world)], out).json()
        assert (report["outcome"], report["head"]) == ("fast-forward", v1.hex())
        assert tree_root(world) == pusher.read_snapshot(v1).root
        check_repo(world, [v0, v1])


def test_disk_full_during_the_restore_phase_of_a_pull(tmp_path: Path, zygote: Zygote,
                                                     versions: list[Path]) -> None:
    """The fetch lands and the head moves; then the disk fills before the first file is
    written: one clear line, no file half-written, and the next pull finishes the restore."""
    out = tmp_path / "out.txt"
    with tmpfs(tmp_path / "disk", 24) as disk, \
            cloned_session(zygote, tmp_path, versions, disk / "world") as c:
        mutate(c.pusher.world, versions[3], random.Random(SEED))
        v1 = c.pusher.snapshot("v1").oid
        push(c.pusher, c.s.alice, fencing=c.fencing)
        c.pusher.checkout(v1, tmp_path / "co")
        old, new = world_files(c.world), world_files(tmp_path / "co")
        child = zygote.phs(["pull", "-C", str(c.world)], out, fill_disk_at_first_write=disk)
        assert zygote.wait(child) == 1, child.output()
        message = child.output().strip()
        assert len(message.splitlines()) == 1 and "No space left" in message, message
        assert str(c.world) in message and "phs restore --abort" in message, message
        assert "run phs pull again" in message, message
        assert not mixed_problems(world_files(c.world), old, new)
        assert not temp_files(c.world), "a failed write leaves no temporary file"
        with Repository.open(c.world) as repo:
            assert repo.pending_restore() is not None and repo.head() == v1
        record("disk_full_pull_restore", message)
        (disk / "filler.bin").unlink()
        again = run_ok(zygote, ["pull", "--json", "-C", str(c.world)], out)
        assert (again.json()["outcome"], again.json()["head"]) == ("up-to-date", v1.hex())
        assert "finished an interrupted pull" in again.output(), again.output()
        assert world_files(c.world) == new
        check_repo(c.world, [v1])


def test_lmdb_map_full_is_a_clear_error(tmp_path: Path, versions: list[Path],
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from peerhost_cli.main import main

    world = copy_world(versions[0], tmp_path / "world")
    with Repository.init(world) as repo:
        v0 = repo.snapshot("v0").oid
    (world / "big.dat").write_bytes(random.Random(SEED).randbytes(12 << 20))
    # The map starts at twice the data file (rounded to 1 MiB) and may not grow past that.
    data = (world / ".peerhost" / "store" / "data.mdb").stat().st_size
    monkeypatch.setattr(_lmdb, "MIN_MAP_SIZE", 1 << 20)
    monkeypatch.setattr(_lmdb, "MAX_MAP_SIZE", -(-2 * data // (1 << 20)) * (1 << 20))
    with Repository.open(world) as repo, pytest.raises(StoreError, match="size limit") as caught:
        repo.snapshot("too big")
    assert str(world / ".peerhost" / "store") in str(caught.value)
    assert main(["snapshot", "-C", str(world)]) == 1
    message = capsys.readouterr().err.strip()
    assert message.startswith("phs snapshot: error: ") and "size limit" in message, message
    assert check_repo(world, [v0]) == v0, "the previous state is intact"
    record("lmdb_map_full", message)
    monkeypatch.undo()
    with Repository.open(world) as repo:
        result = repo.snapshot("fits now")
        assert result.snapshot.parents == (v0,) and result.snapshot.root == tree_root(world)
    check_repo(world, [v0, result.oid])
