"""phs init, phs snapshot, phs log."""

from __future__ import annotations

import argparse
from pathlib import Path

from peerhost_store.errors import NotFound

from .common import Parents, Subparsers, add_force, open_repo, short, snapshot_json, when
from .output import emit_json, err, human_bytes, out, progress_bar


def register(commands: Subparsers, parents: Parents) -> None:
    common = parents("world", "json")
    p = commands.add_parser("init", parents=common, help="create the store of a world folder")
    p.add_argument("path", nargs="?", type=str, help="world folder (default: -C or the current folder)")
    p.add_argument("--force", action="store_true",
                   help="create the store even though the folder has no level.dat")
    p.set_defaults(func=run_init)
    p = commands.add_parser("snapshot", parents=common, help="snapshot the world")
    p.add_argument("-m", "--message", default="", help="what happened since the last snapshot")
    p.add_argument("--allow-empty", action="store_true", help="snapshot even when nothing changed")
    add_force(p)
    p.set_defaults(func=run_snapshot)
    p = commands.add_parser("log", parents=common, help="list snapshots, newest first")
    p.add_argument("-n", "--limit", type=int, default=None, help="show at most N snapshots")
    p.set_defaults(func=run_log)


class NotAWorld(NotFound):
    """``phs init`` in a folder without ``level.dat``."""


def run_init(args: argparse.Namespace) -> int:
    from peerhost_store.repo import Repository

    folder = args.world / args.path if args.path else args.world
    if not args.force and folder.is_dir() and not (folder / "level.dat").is_file():
        raise NotAWorld(_not_a_world(folder))
    with Repository.init(folder) as repo:
        if args.json:
            emit_json({"world": str(repo.world), "store": str(repo.world / ".peerhost")})
        else:
            out.line(f"initialized a PeerHost store in {repo.world / '.peerhost'}")
    return 0


def _not_a_world(folder: Path) -> str:
    """What to say when ``folder`` has no level.dat: the world folders inside it, if any."""
    worlds = sorted(p.name for p in folder.iterdir() if (p / "level.dat").is_file())
    where = "here" if folder == Path(".") else f"in {folder}"
    if worlds:
        names = " or ".join(f"-C {folder / name if folder != Path('.') else name}"
                            for name in worlds[:3])
        return f"no level.dat {where}; did you mean {names}?"
    return (f"no level.dat {where}: this is not a Minecraft world folder (point -C at the "
            "folder that has level.dat; phs clone fills an empty folder from a session; "
            "--force creates the store anyway)")


def run_snapshot(args: argparse.Namespace) -> int:
    with open_repo(args) as repo, progress_bar("snapshot", enabled=not args.json) as progress:
        result = repo.snapshot(args.message, allow_empty=args.allow_empty, progress=progress)
    for warning in result.scan.warnings:
        err.print(f"warning: {warning}", markup=False)
    summary = result.scan.summary
    if args.json:
        emit_json({
            **snapshot_json(result.oid, result.snapshot),
            "created": result.created,
            "scan": summary,
            "warnings": [str(w) for w in result.scan.warnings],
            "new_objects": result.new_objects,
            "new_bytes": result.new_bytes,
            "seconds": round(result.seconds, 3),
        })
        return 0
    if not result.created:
        out.line(f"nothing changed since snapshot {short(result.oid)}")
        return 0
    out.print(
        f"snapshot [bold]{short(result.oid)}[/] (root {short(result.snapshot.root)}): "
        f"{summary['chunks']} chunks in {summary['regions']} regions, {summary['files']} files; "
        f"read {human_bytes(summary['read_bytes'])}, stored {human_bytes(result.new_bytes)} new "
        f"in {result.seconds:.2f} s"
    )
    return 0


def run_log(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        rows = []
        for i, (oid, snap) in enumerate(repo.log()):
            if args.limit is not None and i >= args.limit:
                break
            rows.append((oid, snap))
    if args.json:
        emit_json([snapshot_json(oid, snap) for oid, snap in rows])
        return 0
    from rich.table import Table

    table = Table("snapshot", "time", "author", "chunks", "message")
    for oid, snap in rows:
        table.add_row(short(oid), when(snap.time), f"{snap.author}@{snap.host}",
                      str(snap.summary.get("chunks", "")), snap.message)
    out.print(table)
    return 0
