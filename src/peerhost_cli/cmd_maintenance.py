"""phs verify, phs gc, phs repair."""

from __future__ import annotations

import argparse
from contextlib import ExitStack

from peerhost_store.repair import ObjectSource, RepairReport, repair
from peerhost_store.sync.remotes import connect_remote, load_remotes, meta_dir
from peerhost_store.sync.transfer import CoordinatorSource

from .common import Subparsers, open_repo, short
from .output import emit_json, err, human_bytes, out


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("verify", parents=[common],
                            help="re-hash every object reachable from the refs")
    p.set_defaults(func=run_verify)
    p = commands.add_parser("gc", parents=[common],
                            help="delete objects that no retained snapshot reaches")
    p.add_argument("--keep-last", type=int, default=None, metavar="N",
                   help="retain only the newest N snapshots (default: all history)")
    p.set_defaults(func=run_gc)
    p = commands.add_parser(
        "repair", parents=[common],
        help="heal missing or corrupt objects from the world and the remotes; drop what is "
             "lost from the snapshots that hold it")
    p.set_defaults(func=run_repair)


def run_verify(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        report = repo.verify()
    if args.json:
        emit_json({"ok": report.ok, "objects": report.objects, "bytes": report.bytes,
                   "snapshots": report.snapshots, "problems": [str(p) for p in report.problems]})
    else:
        for problem in report.problems:
            err.print(f"problem: {problem}", markup=False)
        state = "ok" if report.ok else f"{len(report.problems)} problems"
        out.print(f"verify {state}: {report.objects} objects ({human_bytes(report.bytes)}) "
                  f"in {report.snapshots} snapshots re-hashed")
    return 0 if report.ok else 4


def run_gc(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        report = repo.gc(args.keep_last)
    if args.json:
        emit_json({"kept_snapshots": report.kept_snapshots, "kept_objects": report.kept_objects,
                   "deleted_objects": report.deleted_objects})
    else:
        out.print(f"gc: kept {report.kept_snapshots} snapshots ({report.kept_objects} objects), "
                  f"deleted {report.deleted_objects} objects")
    return 0


def run_repair(args: argparse.Namespace) -> int:
    with open_repo(args) as repo, ExitStack() as stack:
        sources: list[ObjectSource] = [
            CoordinatorSource(stack.enter_context(connect_remote(remote)), name)
            for name, remote in sorted(load_remotes(meta_dir(repo)).items())]
        report = repair(repo, sources)
    if args.json:
        emit_json(_repair_json(report))
        return 0
    if not report.damaged:
        out.print("repair: nothing is missing or corrupt", markup=False)
        return 0
    healed = ", ".join(f"{n} healed from {'remote ' if where != 'the live world' else ''}{where}"
                       for where, n in report.healed.items())
    out.print(f"repair: {report.damaged} damaged objects; {healed or 'none could be healed'}"
              f"; {len(report.lost)} paths lost", markup=False)
    for lost in report.lost:
        new = report.rewritten.get(lost.snapshot)
        out.print(f"  lost in snapshot {short(lost.snapshot)} (now {short(new)}): {lost.path}",
                  markup=False)
    for name, (old, new) in report.heads.items():
        out.print(f"  {name} moved from {short(old)} to {short(new)} (the old snapshots stay "
                  "until phs gc)", markup=False)
    return 0


def _repair_json(report: RepairReport) -> dict[str, object]:
    return {
        "damaged": report.damaged, "healed": report.healed,
        "lost": [{"snapshot": lost.snapshot.hex(), "path": lost.path} for lost in report.lost],
        "rewritten": {old.hex(): new.hex() for old, new in report.rewritten.items()},
        "heads": {name: {"old": old.hex(), "new": new.hex() if new else None}
                  for name, (old, new) in report.heads.items()},
    }
