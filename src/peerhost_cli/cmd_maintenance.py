"""phs verify, phs gc, phs repair."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from .common import Parents, Subparsers, open_repo, short
from .output import emit_json, err, human_bytes, out, progress_bar

if TYPE_CHECKING:
    from peerhost_store.repair import RepairReport


def register(commands: Subparsers, parents: Parents) -> None:
    common = parents("world", "json")
    p = commands.add_parser("verify", parents=common,
                            help="re-hash every object reachable from the refs")
    p.set_defaults(func=run_verify)
    p = commands.add_parser("gc", parents=common,
                            help="delete objects that no retained snapshot reaches")
    p.add_argument("--keep-last", type=int, default=None, metavar="N",
                   help="retain only the newest N snapshots (default: all history)")
    p.add_argument("--dry-run", action="store_true",
                   help="only say what would be deleted (objects and bytes); change nothing")
    p.set_defaults(func=run_gc)
    p = commands.add_parser(
        "repair", parents=common,
        help="heal missing or corrupt objects from the world and the remotes; drop what is "
             "lost from the snapshots that hold it")
    p.set_defaults(func=run_repair)


def run_verify(args: argparse.Namespace) -> int:
    with open_repo(args, readonly=True) as repo, progress_bar("verify", enabled=not args.json) as bar:
        on_read = None
        if bar is not None:
            # About the bytes verify reads: the store file (with its free pages) bounds them.
            size = (repo.world / ".peerhost" / "store" / "data.mdb").stat().st_size

            def on_read(done: int) -> None:
                bar(done, max(size, done))

        report = repo.verify(on_read=on_read)
    if args.json:
        emit_json({"ok": report.ok, "objects": report.objects, "bytes": report.bytes,
                   "snapshots": report.snapshots, "problems": [str(p) for p in report.problems]})
    else:
        for problem in report.problems:
            err.line(f"problem: {problem}")
        state = "ok" if report.ok else f"{len(report.problems)} problems"
        out.line(f"verify {state}: {report.objects} objects ({human_bytes(report.bytes)}) "
                 f"in {report.snapshots} snapshots re-hashed")
    return 0 if report.ok else 4


def run_gc(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        report = repo.gc(args.keep_last, dry_run=args.dry_run)
    if args.json:
        emit_json(dataclasses.asdict(report))
        return 0
    verb = "would delete" if report.dry_run else "deleted"
    out.line(f"gc{' (dry run)' if report.dry_run else ''}: kept {report.kept_snapshots} "
             f"snapshots ({report.kept_objects:,} objects, {report.kept_bytes:,} bytes), {verb} "
             f"{report.deleted_objects:,} objects ({report.deleted_bytes:,} bytes)")
    if report.file_bytes_before is not None and report.file_bytes_after is not None:
        if report.dry_run:
            out.line(f"store file: {report.file_bytes_before:,} bytes; nothing was changed")
        elif report.compacted:
            out.line(f"store file: {report.file_bytes_before:,} -> {report.file_bytes_after:,} "
                     "bytes (compacted)")
        else:
            out.line(f"store file: {report.file_bytes_after:,} bytes, not compacted "
                     f"({report.note}); its free pages are reused")
    return 0


def run_repair(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from peerhost_store.repair import ObjectSource, repair
    from peerhost_store.sync.remotes import connect_remote, load_remotes, meta_dir
    from peerhost_store.sync.transfer import CoordinatorSource

    with open_repo(args) as repo, ExitStack() as stack:
        sources: list[ObjectSource] = [
            CoordinatorSource(stack.enter_context(connect_remote(remote)), name)
            for name, remote in sorted(load_remotes(meta_dir(repo)).items())]
        report = repair(repo, sources)
    if args.json:
        emit_json(_repair_json(report))
        return 0
    if not report.damaged:
        out.line("repair: nothing is missing or corrupt")
        return 0
    healed = ", ".join(f"{n} healed from {'remote ' if where != 'the live world' else ''}{where}"
                       for where, n in report.healed.items())
    out.line(f"repair: {report.damaged} damaged objects; {healed or 'none could be healed'}"
             f"; {len(report.lost)} paths lost")
    for lost in report.lost:
        new = report.rewritten.get(lost.snapshot)
        out.line(f"  lost in snapshot {short(lost.snapshot)} (now {short(new)}): {lost.path}")
    for name, (old, new) in report.heads.items():
        out.line(f"  {name} moved from {short(old)} to {short(new)} (the old snapshots stay "
                 "until phs gc)")
    return 0


def _repair_json(report: RepairReport) -> dict[str, object]:
    return {
        "damaged": report.damaged, "healed": report.healed,
        "lost": [{"snapshot": lost.snapshot.hex(), "path": lost.path} for lost in report.lost],
        "rewritten": {old.hex(): new.hex() for old, new in report.rewritten.items()},
        "heads": {name: {"old": old.hex(), "new": new.hex() if new else None}
                  for name, (old, new) in report.heads.items()},
    }
