"""phs checkout, phs restore, phs rollback (of the world, or with --remote of the session)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from peerhost_store.errors import NotFound

from .common import (
    Parents,
    Subparsers,
    UsageError,
    add_area,
    add_force,
    area_of,
    fencing_of,
    open_repo,
    selection_of,
    short,
)
from .output import emit_json, err, human_bytes, out, progress_bar

if TYPE_CHECKING:
    from peerhost_store.ids import ObjectId
    from peerhost_store.repo import Repository
    from peerhost_store.restore import RestoreResult


def register(commands: Subparsers, parents: Parents) -> None:
    common = parents("world", "json")
    p = commands.add_parser("checkout", parents=common, help="write a snapshot into an empty folder")
    p.add_argument("snapshot", help="snapshot id, prefix or head~N")
    p.add_argument("folder", type=Path, help="an empty or missing folder")
    p.set_defaults(func=run_checkout)
    p = commands.add_parser(
        "restore", parents=common,
        help="make the world hold a snapshot (unsnapshotted changes are snapshotted first)",
    )
    p.add_argument("snapshot", nargs="?")
    p.add_argument("--abort", action="store_true",
                   help="drop an interrupted restore or rollback: head goes back to where it "
                        "was, the world is not touched")
    add_area(p, player=True)
    add_force(p)
    p.set_defaults(func=run_restore)
    p = commands.add_parser(
        "rollback", parents=common,
        help="make head an older snapshot's world, as a new snapshot, and restore it",
    )
    p.add_argument("snapshot")
    p.add_argument("--remote", nargs="?", const="", default=None, metavar="REMOTE",
                   help="roll back the session on the coordinator (owner or lease holder), "
                        "then pull")
    p.add_argument("--fencing", type=int, default=None,
                   help="with --remote: the fencing token of a lease you hold")
    add_area(p, player=True)
    add_force(p)
    p.set_defaults(func=run_rollback)


def _restored(result: RestoreResult) -> dict[str, object]:
    return {"written": result.written, "removed": result.removed,
            "bytes_written": result.bytes_written, "warnings": result.warnings}


def _say(verb: str, result: RestoreResult) -> str:
    for warning in result.warnings:
        err.line(f"warning: {warning}")
    return (f"{verb}: {result.written} files written ({human_bytes(result.bytes_written)}), "
            f"{result.removed} removed")


def run_checkout(args: argparse.Namespace) -> int:
    with open_repo(args, readonly=True) as repo, progress_bar("checkout", enabled=not args.json, unit="files") as bar:
        oid = repo.resolve(args.snapshot)
        result = repo.checkout(oid, args.folder, progress=bar)
    if args.json:
        emit_json({"snapshot": oid.hex(), "folder": str(args.folder), **_restored(result)})
    else:
        out.line(_say(f"checked out {short(oid)} into {args.folder}", result))
    return 0


def run_restore(args: argparse.Namespace) -> int:
    if args.abort == (args.snapshot is not None):
        raise UsageError("give a snapshot to restore, or --abort (not both)")
    if args.abort:
        if args.area or args.player:
            raise UsageError("--abort drops the whole interrupted restore: no --area or --player")
        return run_abort(args)
    with open_repo(args) as repo, progress_bar("restore", enabled=not args.json, unit="files") as bar:
        only = selection_of(args, repo)
        oid = repo.resolve(args.snapshot)
        safety, result = repo.restore(oid, progress=bar, only=only)
    if args.json:
        emit_json({"snapshot": oid.hex(), "safety_snapshot": safety.hex() if safety else None,
                   "only": None if only is None else only.describe(), **_restored(result)})
        return 0
    if safety is not None:
        out.line(f"unsnapshotted changes were saved first as snapshot {short(safety)}")
    what = "" if only is None else f" ({only.describe()}; the rest of the world is kept)"
    out.line(_say(f"restored {short(oid)}{what}", result))
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
    if args.remote is not None:
        if args.player is not None:
            raise UsageError("--remote rolls back the whole world or an --area, not a --player")
        return _run_remote_rollback(args)
    with open_repo(args) as repo, progress_bar("rollback", enabled=not args.json, unit="files") as bar:
        only = selection_of(args, repo)
        oid = repo.resolve(args.snapshot)
        result = repo.rollback(oid, progress=bar, only=only)
        # Undoing is rolling back to the head before this rollback (the safety snapshot if
        # one was taken): the rollback snapshot's parent, never its target.
        previous = repo.read_snapshot(result.oid).parents[0]
    if args.json:
        emit_json({"target": oid.hex(), "head": result.oid.hex(), "previous_head": previous.hex(),
                   "safety_snapshot": result.safety.hex() if result.safety else None,
                   "only": None if only is None else only.describe(),
                   **_restored(result.restored)})
        return 0
    if result.safety is not None:
        out.line(f"unsnapshotted changes were saved first as snapshot {short(result.safety)}")
    what = "" if only is None else f" {only.describe()}"
    out.line(_say(f"rolled back{what} to {short(oid)}; head is now {short(result.oid)} "
                  f"(undo with: phs rollback {short(result.previous)})", result.restored))
    return 0


def _target(repo: Repository, spec: str) -> ObjectId:
    from peerhost_store.ids import from_hex

    try:
        return repo.resolve(spec)
    except NotFound:
        text = spec.strip().lower()
        if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
            return from_hex(text)  # not here, but the coordinator may have it
        raise


def _refuse_a_no_op(repo: Repository, target: ObjectId, head: ObjectId | None) -> None:
    """A session rollback to the tree its head holds would only add an empty snapshot."""
    from peerhost_store.repo import NothingToRollBack

    if head is None:
        return
    same = head == target or (head in repo.store.objects and target in repo.store.objects
                              and repo.read_snapshot(head).root == repo.read_snapshot(target).root)
    if same:
        raise NothingToRollBack(target, head)


def _run_remote_rollback(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import connect_remote, meta_dir, pick_remote
    from peerhost_store.sync.transfer import pull

    from .reports import print_pull, pull_json, wire_json

    with open_repo(args) as repo:
        base = meta_dir(repo)
        remote = pick_remote(base, args.remote or None)
        target = _target(repo, args.snapshot)
        area = area_of(args)
        with connect_remote(remote) as client, \
                progress_bar("pull", enabled=not args.json, unit="objects",
                             moved=lambda: client.stats.received) as bar:
            previous = client.head().head
            if area is None:
                _refuse_a_no_op(repo, target, previous)
            # The owner needs no lease; a member, where the owner allows it, its own (never
            # a short one taken for this: the owner decides who may roll back).
            fencing = fencing_of(args, base, remote)
            new_head = client.rollback(target, fencing, area=area)
            report = pull(repo, client, progress=bar)
            wire = wire_json(client)
    if args.json:
        emit_json({"target": target.hex(), "session_head": new_head.hex(),
                   "lease": {"fencing": fencing},
                   "area": None if area is None else area.to_json(),
                   "previous_head": None if previous is None else previous.hex(),
                   "pull": pull_json(remote, report, wire)})
        return 0
    what = "" if area is None else f" {area.describe()}"
    out.line(f"session {remote.session} rolled back{what} to {short(target)}: its head is now "
             f"{short(new_head)} (nothing deleted; undo with: phs rollback {short(previous)} "
             "--remote)")
    print_pull(remote, report, wire)
    return 0
