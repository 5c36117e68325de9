"""The body of phs demo (:mod:`.cmd_demo` parses its options): snapshot, play, snapshot, diff, rollback, verify, on a synthesized world or a copy
of ``--source DIR``; then two peers sharing it through a coordinator served in this process on
127.0.0.1 (push, clone, play, push, pull, remote rollback), with what each step did and cost."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from peerhost_store.diff import ChunkChange, summarize
from peerhost_store.ids import ObjectId
from peerhost_store.repo import Repository
from peerhost_store.sync.credentials import Credentials
from peerhost_store.sync.leasing import PUSH_TTL, push_with_lease
from peerhost_store.sync.remotes import (
    DEFAULT_REMOTE,
    Remote,
    clone,
    connect,
    connect_remote,
    remember_token,
    save_remotes,
)
from peerhost_store.sync.reports import PullReport, PushReport
from peerhost_store.sync.transfer import pull
from peerhost_store.worldfs import STORE_DIR

from .common import import_extra, short
from .output import emit_json, err, human_bytes, out
from .reports import chunk_counts, chunks_text, wire_json

T = TypeVar("T")


class _Steps:
    """Runs the demo's steps; with ``live``, each is shown as it runs (a spinner on a
    terminal) and printed as soon as it is done."""

    def __init__(self, live: bool) -> None:
        self.rows: list[dict[str, Any]] = []
        self.live = live

    def run(self, name: str, fn: Callable[[], T], describe: Callable[[T], str]) -> T:
        started = time.perf_counter()
        if self.live and err.is_terminal:
            with err.console.status(f"{name} ...", spinner="dots"):
                value = fn()
        else:
            value = fn()
        seconds = time.perf_counter() - started
        row = {"step": name, "seconds": round(seconds, 3), "result": describe(value)}
        self.rows.append(row)
        if self.live:
            out.line(f"{name:<15} {row['result']} ({seconds:.2f} s)")
        return value


def _synth() -> ModuleType:
    return import_extra("peerhost_cli.synth", command="phs demo", extra="demo")


def run_demo(args: argparse.Namespace) -> int:
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        return _demo(args, args.keep)
    with tempfile.TemporaryDirectory(prefix="phs-demo-") as tmp:
        return _demo(args, Path(tmp))


def _demo(args: argparse.Namespace, base: Path) -> int:
    synthesize_world = _synth().synthesize_world

    world = base / "world"
    steps = _Steps(live=not args.json)
    if args.source is not None:
        steps.run("copy world", lambda: shutil.copytree(args.source, world,
                                                         ignore=shutil.ignore_patterns(STORE_DIR, "session.lock")),
                  lambda _: f"copied {args.source} into {world}")
    else:
        steps.run("synthesize", lambda: synthesize_world(world, seed=args.seed, regions=args.regions),
                  lambda i: f"{i.regions} regions, {i.chunks} chunks, {human_bytes(i.bytes)} "
                            "(1.21.1 format, deterministic)")
        # Snapshots never trust the stat of a file modified in the last 2 s (it could change
        # again unseen); date the fresh world an hour back, as if it had been played yesterday.
        hour_ago = time.time() - 3600
        for path in world.rglob("*"):
            os.utime(path, (hour_ago, hour_ago))
    with Repository.init(world) as repo:
        first = steps.run("snapshot", lambda: repo.snapshot("before play"),
                          lambda r: f"{short(r.oid)}: read {human_bytes(r.scan.summary['read_bytes'])}, "
                                    f"stored {human_bytes(r.new_bytes)} in {r.new_objects} objects")
        steps.run("play", lambda: _play(world, args.seed), lambda s: s)
        second = steps.run("snapshot", lambda: repo.snapshot("after play"),
                           lambda r: f"{short(r.oid)}: read {human_bytes(r.scan.summary['read_bytes'])} "
                                     f"({r.scan.summary['cached_files']} files unchanged, not read), "
                                     f"stored {human_bytes(r.new_bytes)} new")
        changes = steps.run("diff", lambda: list(repo.diff(first.oid, second.oid)), _describe_diff)
        steps.run("rollback", lambda: repo.rollback(first.oid),
                  lambda r: f"head {short(r.oid)} holds {short(first.oid)}'s world again: "
                            f"{r.restored.written} files rewritten ({human_bytes(r.restored.bytes_written)})")
        steps.run("check", lambda: repo.scan().root == first.snapshot.root,
                  lambda same: "re-scanned world has the first snapshot's root tree: "
                               + ("yes" if same else "NO"))
        report = steps.run("verify", repo.verify,
                           lambda r: f"{r.objects} objects ({human_bytes(r.bytes)}) re-hashed, "
                                     f"{len(r.problems)} problems")
        history = [f"{short(oid)} {snap.message}" for oid, snap in repo.log()]
    ok = report.ok and steps.rows[-2]["result"].endswith("yes") and bool(changes)
    result: dict[str, Any] = {"world": str(world)}
    if not args.local_only:
        peers = _demo_sync(args, base, world, first.oid, first.snapshot.root, steps)
        ok = ok and peers["ok"]
        result["peers"] = peers
        with Repository.open(world) as repo:
            history = [f"{short(oid)} {snap.message}" for oid, snap in repo.log()]
    if args.json:
        emit_json({"ok": ok, **result, "steps": steps.rows, "history": history})
    else:
        total = sum(row["seconds"] for row in steps.rows)
        out.line(f"{'all ok' if ok else 'SOMETHING FAILED'}: {len(steps.rows)} steps in "
                 f"{total:.1f} s")
        out.line("history (newest first): " + " <- ".join(history))
        if args.keep is not None:
            out.line(f"the world and its store are kept in {world}")
    return 0 if ok else 1


def _wire(wire: dict[str, int]) -> str:
    return f"{human_bytes(wire['bytes_total'])} on the wire in {wire['requests']} requests"


def _chunks(report: PushReport | PullReport) -> str:
    counts = chunk_counts(report)
    return chunks_text(counts)


def _demo_sync(args: argparse.Namespace, base: Path, world_a: Path, first: ObjectId,
               first_root: ObjectId, steps: _Steps) -> dict[str, Any]:
    """Peer A (the demo world, owner) and peer B (a member) share it through a coordinator."""
    background = import_extra("peerhost_server.background", command="phs demo", extra="server")
    BackgroundCoordinator = background.BackgroundCoordinator

    world_b = base / "peer-b"
    with BackgroundCoordinator(base / "coordinator") as coord:
        assert coord.admin_token is not None  # a fresh data folder
        steps.run("coordinator", lambda: coord.url,
                  lambda url: f"serving {url} from {base / 'coordinator'} (uvicorn, this process)")

        def make_session() -> tuple[str, str]:
            with connect(coord.url, "", coord.admin_token or "") as admin:
                owner = admin.create_session("demo")
            with connect(coord.url, "demo", owner) as as_owner:
                return owner, as_owner.add_member("bob")

        owner, bob = steps.run("session", make_session,
                               lambda _: "admin created session demo; its owner (peer A) invited "
                                         "member bob (peer B); tokens kept 0600 outside the "
                                         "worlds, in config/")
        # The demo's tokens die with its coordinator: kept beside the worlds, not in the
        # user's config folder.
        credentials = Credentials(base / "config")
        remote_a = remember_token(world_a / STORE_DIR, Remote(DEFAULT_REMOTE, coord.url, "demo"),
                                  owner, credentials)
        remote_b = Remote(DEFAULT_REMOTE, coord.url, "demo", bob)
        save_remotes(world_a / STORE_DIR, {remote_a.name: remote_a})

        def push_from(world: Path, remote: Remote, holder: str) -> tuple[PushReport, dict[str, int]]:
            with Repository.open(world) as repo, connect_remote(remote) as client:
                report, _ = push_with_lease(repo, client, fencing=None, holder=holder)
                return report, wire_json(client)

        def say_push(r: tuple[PushReport, dict[str, int]]) -> str:
            return (f"{short(r[0].head)}: {r[0].objects_sent} objects "
                    f"({human_bytes(r[0].object_bytes)}) sent{_chunks(r[0])}, {_wire(r[1])}; "
                    f"took a {PUSH_TTL:.0f} s lease, released it")

        steps.run("A push", lambda: push_from(world_a, remote_a, "peer-a"), say_push)
        def clone_b() -> tuple[PullReport, dict[str, int]]:
            report, client = clone(world_b, remote_b, credentials=credentials)
            return report, wire_json(client)

        steps.run("B clone", clone_b,
                  lambda r: f"{r[0].objects_received} objects ({human_bytes(r[0].object_bytes)}) "
                            f"received{_chunks(r[0])}, {_wire(r[1])}; "
                            f"{r[0].restored.written if r[0].restored else 0} files written")
        steps.run("B play", lambda: _play(world_b, args.seed + 1), lambda s: s)
        with Repository.open(world_b) as repo_b:
            steps.run("B snapshot", lambda: repo_b.snapshot("peer B played"),
                      lambda r: f"{short(r.oid)}: stored {human_bytes(r.new_bytes)} new")
        steps.run("B push", lambda: push_from(world_b, remote_b, "peer-b"), say_push)
        steps.run("A pull", lambda: _pull(world_a, remote_a),
                  lambda r: _say_pull(r, "B's root tree", _root(world_b)))

        def roll_back() -> ObjectId:
            with connect_remote(remote_a) as client:
                return client.rollback(first)  # A owns the session: no lease needed

        steps.run("remote rollback", roll_back,
                  lambda oid: f"owner A rolled the session back to {short(first)}: new head "
                              f"{short(oid)} on top (nothing deleted)")
        steps.run("A pull", lambda: _pull(world_a, remote_a),
                  lambda r: _say_pull(r, f"{short(first)}'s root tree", first_root))
        steps.run("B pull", lambda: _pull(world_b, remote_b),
                  lambda r: _say_pull(r, f"{short(first)}'s root tree", first_root))
    roots = {"a": _root(world_a), "b": _root(world_b)}
    checks = steps.run("verify peers",
                       lambda: {name: _verify(w) for name, w in (("a", world_a), ("b", world_b))},
                       lambda c: "; ".join(f"{n.upper()}: {o} objects re-hashed, {p} problems"
                                           for n, (o, p) in c.items()))
    same = roots["a"] == roots["b"] == first_root
    return {
        "ok": same and all(p == 0 for _, p in checks.values()),
        "roots_equal": roots["a"] == roots["b"],
        "a": {"world": str(world_a), "root": roots["a"].hex()},
        "b": {"world": str(world_b), "root": roots["b"].hex()},
    }


def _pull(world: Path, remote: Remote) -> tuple[PullReport, dict[str, int], ObjectId]:
    with Repository.open(world) as repo, connect_remote(remote) as client:
        report = pull(repo, client)
        return report, wire_json(client), repo.scan().root


def _say_pull(r: tuple[PullReport, dict[str, int], ObjectId], what: str, want: ObjectId) -> str:
    report, wire, live = r
    return (f"{report.outcome} to {short(report.head)}: {report.objects_received} objects "
            f"({human_bytes(report.object_bytes)}) received{_chunks(report)}, {_wire(wire)}; "
            f"world holds {what}: {'yes' if live == want else 'NO'}")


def _root(world: Path) -> ObjectId:
    with Repository.open(world) as repo:
        return repo.scan().root


def _verify(world: Path) -> tuple[int, int]:
    with Repository.open(world) as repo:
        report = repo.verify()
        return report.objects, len(report.problems)


def _play(world: Path, seed: int) -> str:
    synth = _synth()
    SynthError, play_session = synth.SynthError, synth.play_session

    try:
        info = play_session(world, seed=seed + 1, edit_chunks=20, resave_chunks=200, new_chunks=30)
    except SynthError as exc:
        return f"cannot play on this world ({exc}); nothing changed"
    return (f"edited blocks in {len(info.edited)} chunks, re-saved {len(info.resaved)} "
            f"(only LastUpdate/InhabitedTime), generated {len(info.added)}, "
            f"in {len(info.regions)} region files")


def _describe_diff(changes: list[Any]) -> str:
    totals = summarize(changes)
    where = {c.dimension for c in changes if isinstance(c, ChunkChange)}
    return (f"{totals.get('chunks_modified', 0)} chunks modified "
            f"({totals.get('chunks_content', 0)} content, {totals.get('chunks_resave', 0)} re-saves), "
            f"{totals.get('chunks_added', 0)} added, {totals.get('files_modified', 0)} files modified"
            + (f" in {', '.join(sorted(where))}" if where else ""))
