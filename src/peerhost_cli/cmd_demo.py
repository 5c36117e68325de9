"""phs demo: snapshot, play, snapshot, diff, rollback, verify, on a synthesized world or a copy
of ``--world DIR``, with what each step did and cost."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.table import Table

from peerhost_store.diff import ChunkChange, summarize
from peerhost_store.repo import Repository
from peerhost_store.worldfs import STORE_DIR

from .common import Subparsers, short
from .output import emit_json, human_bytes, out

T = TypeVar("T")


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("demo", parents=[common], help="a guided tour on a synthesized world")
    p.add_argument("--regions", type=int, default=4, help="full regions to synthesize (default 4)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--source", type=Path, default=None, metavar="DIR",
                   help="run on a copy of this world instead of a synthesized one")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="work in DIR (must not exist) and keep it afterwards")
    p.set_defaults(func=run_demo)


class _Steps:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def run(self, name: str, fn: Callable[[], T], describe: Callable[[T], str]) -> T:
        started = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - started
        self.rows.append({"step": name, "seconds": round(seconds, 3), "result": describe(value)})
        return value


def run_demo(args: argparse.Namespace) -> int:
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        return _demo(args, args.keep)
    with tempfile.TemporaryDirectory(prefix="phs-demo-") as tmp:
        return _demo(args, Path(tmp))


def _demo(args: argparse.Namespace, base: Path) -> int:
    from peerhost_store.synth import synthesize_world  # numpy: imported only for the demo

    world = base / "world"
    steps = _Steps()
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
    if args.json:
        emit_json({"ok": ok, "world": str(world), "steps": steps.rows, "history": history})
    else:
        table = Table("step", "what happened", "time", title="PeerHost demo")
        for row in steps.rows:
            table.add_row(row["step"], row["result"], f"{row['seconds']:.2f} s")
        out.print(table)
        out.print("history (newest first): " + " <- ".join(history))
        if args.keep is not None:
            out.print(f"the world and its store are kept in {world}")
    return 0 if ok else 1


def _play(world: Path, seed: int) -> str:
    from peerhost_store.synth import SynthError, play_session

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
