"""phs checkout, phs restore, phs rollback."""

from __future__ import annotations

import argparse
from pathlib import Path

from peerhost_store.restore import RestoreResult

from .cmd_remote import UsageError
from .common import Subparsers, open_repo, short
from .output import emit_json, err, human_bytes, out, progress_bar


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("checkout", parents=[common], help="write a snapshot into an empty folder")
    p.add_argument("snapshot", help="snapshot id, prefix or head~N")
    p.add_argument("folder", type=Path, help="an empty or missing folder")
    p.set_defaults(func=run_checkout)
    p = commands.add_parser(
        "restore", parents=[common],
        help="make the world hold a snapshot (unsnapshotted changes are snapshotted first)",
    )
    p.add_argument("snapshot", nargs="?")
    p.add_argument("--abort", action="store_true",
                   help="drop an interrupted restore or rollback: head goes back to where it "
                        "was, the world is not touched")
    p.set_defaults(func=run_restore)
    p = commands.add_parser(
        "rollback", parents=[common],
        help="make head an older snapshot's world, as a new snapshot, and restore it",
    )
    p.add_argument("snapshot")
    p.set_defaults(func=run_rollback)


def _restored(result: RestoreResult) -> dict[str, object]:
    return {"written": result.written, "removed": result.removed,
            "bytes_written": result.bytes_written, "warnings": result.warnings}


def _say(verb: str, result: RestoreResult) -> str:
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False)
    return (f"{verb}: {result.written} files written ({human_bytes(result.bytes_written)}), "
            f"{result.removed} removed")


def run_checkout(args: argparse.Namespace) -> int:
    with open_repo(args) as repo, progress_bar("checkout", enabled=not args.json, as_bytes=False) as bar:
        oid = repo.resolve(args.snapshot)
        result = repo.checkout(oid, args.folder, progress=bar)
    if args.json:
        emit_json({"snapshot": oid.hex(), "folder": str(args.folder), **_restored(result)})
    else:
        out.print(_say(f"checked out {short(oid)} into {args.folder}", result))
    return 0


def run_restore(args: argparse.Namespace) -> int:
    if args.abort == (args.snapshot is not None):
        raise UsageError("give a snapshot to restore, or --abort (not both)")
    if args.abort:
        return run_abort(args)
    with open_repo(args) as repo, progress_bar("restore", enabled=not args.json, as_bytes=False) as bar:
        oid = repo.resolve(args.snapshot)
        safety, result = repo.restore(oid, progress=bar)
    if args.json:
        emit_json({"snapshot": oid.hex(), "safety_snapshot": safety.hex() if safety else None,
                   **_restored(result)})
        return 0
    if safety is not None:
        out.print(f"unsnapshotted changes were saved first as snapshot {short(safety)}")
    out.print(_say(f"restored {short(oid)}", result))
    return 0


def run_abort(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        result = repo.abort_restore()
    kept = result.head != result.pending.before
    if args.json:
        emit_json({"aborted": result.pending.describe(), "head": result.head.hex() if result.head else None,
                   "before": result.pending.before.hex() if result.pending.before else None,
                   "kept": result.head.hex() if kept and result.head else None})
        return 0
    where = (f"head stays at {short(result.head)}, which holds the play kept since" if kept
             else f"head is back at {short(result.head)}")
    out.print(f"dropped the interrupted {result.pending.describe()}: {where}; the world was not "
              "touched (phs snapshot records it as it is)", markup=False)
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    with open_repo(args) as repo, progress_bar("rollback", enabled=not args.json, as_bytes=False) as bar:
        oid = repo.resolve(args.snapshot)
        result = repo.rollback(oid, progress=bar)
    if args.json:
        emit_json({"target": oid.hex(), "head": result.oid.hex(),
                   "safety_snapshot": result.safety.hex() if result.safety else None,
                   **_restored(result.restored)})
        return 0
    if result.safety is not None:
        out.print(f"unsnapshotted changes were saved first as snapshot {short(result.safety)}")
    out.print(_say(f"rolled back to {short(oid)}; head is now {short(result.oid)} "
                   f"(undo with: phs rollback {short(result.previous)})", result.restored))
    return 0
