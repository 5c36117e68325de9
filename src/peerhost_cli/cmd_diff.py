"""phs diff [A [B]]: snapshots, or a snapshot and the live world."""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from .common import Parents, Subparsers, open_repo
from .output import emit_json, out

if TYPE_CHECKING:
    from peerhost_store.diff import Change, ChunkChange


def register(commands: Subparsers, parents: Parents) -> None:
    p = commands.add_parser(
        "diff", parents=parents("world", "json"),
        help="what changed: A..B, A..live world, or (no argument) head..live world",
    )
    p.add_argument("old", nargs="?", help="snapshot id, prefix or head~N (default: head)")
    p.add_argument("new", nargs="?", help="snapshot (default: the live world)")
    p.add_argument("--stat", action="store_true", help="totals only")
    p.add_argument("--no-classify", action="store_true",
                   help="do not decode chunks to tell content changes from re-saves")
    p.set_defaults(func=run_diff)


def run_diff(args: argparse.Namespace) -> int:
    from peerhost_store.diff import summarize

    with open_repo(args) as repo:
        old = repo.resolve(args.old or "head")
        new = repo.resolve(args.new) if args.new else None
        changes = list(repo.diff(old, new, classify=not args.no_classify))
    totals = summarize(changes)
    if args.json:
        emit_json({"totals": totals, "changes": [] if args.stat else [_json(c) for c in changes]})
        return 0
    if not args.stat:
        _print_changes(changes)
    out.line(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in totals.items()) or "no changes")
    return 0


def _json(change: Change) -> dict[str, Any]:
    from peerhost_store.diff import FileChange

    if isinstance(change, FileChange):
        return {"type": "file", "path": change.path, "status": change.status, "kind": change.kind,
                "old_size": change.old_size, "new_size": change.new_size}
    return {"type": "chunk", "path": change.path, "dimension": change.dimension, "kind": change.kind,
            "x": change.x, "z": change.z, "status": change.status, "change": change.change,
            "detail": change.detail}


def _print_changes(changes: list[Change]) -> None:
    from rich.table import Table

    from peerhost_store.diff import FileChange

    files = Table("status", "path", "kind", "size", title="files")
    chunks: dict[tuple[str, str, str, str | None], list[ChunkChange]] = defaultdict(list)
    for c in changes:
        if isinstance(c, FileChange):
            files.add_row(c.status, c.path, c.kind, _size(c))
        else:
            chunks[(c.dimension, c.kind, c.status, c.change)].append(c)
    if files.row_count:
        out.print(files)
    if chunks:
        table = Table("dimension", "kind", "status", "change", "chunks", "coordinates (x, z)", title="chunks")
        for (dim, kind, status, change), rows in sorted(chunks.items(), key=lambda kv: str(kv[0])):
            coords = " ".join(f"({c.x},{c.z})" for c in rows[:8]) + (" ..." if len(rows) > 8 else "")
            table.add_row(dim, kind, status, change or "", str(len(rows)), coords)
        out.print(table)


def _size(c: Any) -> str:
    if c.old_size is not None and c.new_size is not None:
        return f"{c.old_size} -> {c.new_size}"
    return str(c.new_size if c.new_size is not None else c.old_size or "")
