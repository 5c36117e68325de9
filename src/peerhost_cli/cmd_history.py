"""phs init, phs snapshot, phs log."""

from __future__ import annotations

import argparse
import itertools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from peerhost_store.errors import NotFound, PeerhostError

from .common import (
    Parents,
    Subparsers,
    UsageError,
    add_area,
    add_force,
    area_of,
    open_repo,
    short,
    snapshot_json,
    when,
)
from .output import emit_json, err, human_bytes, out, progress_bar

if TYPE_CHECKING:
    from peerhost_store.area import Area
    from peerhost_store.ids import ObjectId
    from peerhost_store.objects import Snapshot
    from peerhost_store.repo import Repository


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
    p.add_argument("--graph", action="store_true",
                   help="draw the history graph (the parents of merge snapshots)")
    add_area(p)
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
    area = area_of(args)
    if area is not None:
        if args.graph:
            raise UsageError("--graph draws the whole history: not with --area")
        return _run_area_log(args, area)
    with open_repo(args, readonly=True) as repo:
        rows = []
        for i, (oid, snap) in enumerate(repo.log()):
            if args.limit is not None and i >= args.limit:
                break
            rows.append((oid, snap))
        refs = _ref_labels(repo)
        targets = {oid: _rollback_target(repo, snap) for oid, snap in rows}
    if args.json:
        emit_json([{**snapshot_json(oid, snap), "refs": refs.get(oid, []),
                    "rollback_target": _hex_of(targets[oid])} for oid, snap in rows])
        return 0
    from rich.table import Table
    from rich.text import Text

    from .loggraph import graph, topological

    columns = ["snapshot", "time", "author", "chunks", "message"]
    table = Table(*(["", *columns] if args.graph else columns), box=None, pad_edge=False)
    snaps = dict(rows)
    lines = graph(topological([(oid, snap.parents) for oid, snap in rows])) if args.graph else \
        [("", oid) for oid, _ in rows]
    for cell, key in lines:
        cells = ["", "", "", "", ""] if key is None else _log_cells(key, snaps[key], refs, targets)
        # Text: a message is the player's, and "[...]" in it is not rich markup.
        table.add_row(*map(Text, [cell, *cells] if args.graph else cells))
    out.print(table)
    return 0


def _run_area_log(args: argparse.Namespace, area: Area) -> int:
    """Which snapshots changed the area, by whom: the griefing question."""
    with open_repo(args, readonly=True) as repo:
        rows = list(itertools.islice(repo.area_log(area), args.limit))
    if args.json:
        emit_json([{**snapshot_json(oid, snap), "changes": [
            {"dimension": c.dimension, "kind": c.kind, "x": c.x, "z": c.z, "status": c.status,
             "change": c.change} for c in changes]} for oid, snap, changes in rows])
        return 0
    from rich.table import Table
    from rich.text import Text

    from peerhost_store.diff import summarize

    table = Table("snapshot", "time", "author", "chunks changed", "message", box=None,
                  pad_edge=False)
    for oid, snap, changes in rows:
        totals = summarize(changes)
        counts = ", ".join(f"{totals[k]} {label}" for k, label in (
            ("chunks_content", "content"), ("chunks_resave", "re-saved"),
            ("chunks_unknown", "unclassified"), ("chunks_added", "added"),
            ("chunks_removed", "removed")) if totals.get(k))
        table.add_row(*map(Text, [short(oid), when(snap.time), f"{snap.author}@{snap.host}",
                                  counts, snap.message]))
    if not rows:
        out.line(f"no snapshot changed {area.describe()}")
        return 0
    out.line(f"snapshots that changed {area.describe()} (chunks "
             f"{area.chunk_box[0]},{area.chunk_box[1]} to {area.chunk_box[2]},{area.chunk_box[3]}),"
             " newest first:")
    out.print(table)
    return 0


def _hex_of(target: tuple[ObjectId, Snapshot] | None) -> str | None:
    return None if target is None else target[0].hex()


def _log_cells(oid: ObjectId, snap: Snapshot, refs: dict[ObjectId, list[str]],
               targets: dict[ObjectId, tuple[ObjectId, Snapshot] | None]) -> list[str]:
    label = short(oid) + (f" ({', '.join(refs[oid])})" if oid in refs else "")
    message = snap.message
    target = targets[oid]
    if target is not None:  # say what the rollback restored, not only its id
        old = target[1]
        message += f": the world of {when(old.time)}" + (f' ("{old.message}")' if old.message
                                                         else "")
    if len(snap.parents) > 1:
        message += " [merge of " + " + ".join(short(p) for p in snap.parents) + "]"
    chunks = snap.summary.get("chunks")
    return [label, when(snap.time), f"{snap.author}@{snap.host}",
            "" if chunks is None else f"{chunks:,}", message]


def _ref_labels(repo: Repository) -> dict[ObjectId, list[str]]:
    """``head`` and ``session NAME`` (the session head as last fetched), by snapshot."""
    labels: dict[ObjectId, list[str]] = {}
    head = repo.head()
    if head is not None:
        labels[head] = ["head"]
    for name, oid in repo.store.refs.items():
        if name.startswith("remotes/"):
            labels.setdefault(oid, []).append(f"session {name.removeprefix('remotes/')}")
    return labels


_ROLLBACK = re.compile(r"rollback to ([0-9a-f]{12})\b")


def _rollback_target(repo: Repository, snap: Snapshot) -> tuple[ObjectId, Snapshot] | None:
    """The snapshot a rollback snapshot (``rollback to <id>``, made here or by the
    coordinator) rolled back to, when this store has it."""
    match = _ROLLBACK.match(snap.message) if not snap.summary else None
    if match is None:
        return None
    if not snap.parents or snap.parents[0] not in repo.store.objects:
        return None  # its history was cut by gc --keep-last
    # Bounded: a rollback older than this many snapshots is shown by its id only.
    try:
        for oid, old in itertools.islice(repo.log(snap.parents[0]), 5000):
            if oid.hex().startswith(match.group(1)):
                return oid, old
    except PeerhostError:  # a damaged history: phs verify says where; log still lists
        return None
    return None
