"""phs diff [A [B]]: snapshots, or a snapshot and the live world."""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from .common import Parents, Subparsers, open_repo
from .output import emit_json, out

if TYPE_CHECKING:
    from peerhost_store.diff import Change, ChunkChange, FileChange


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

    # Against the live world, the scan is kept in the store where it can be written (the
    # next snapshot reads less); read-only otherwise, and between two snapshots always.
    with open_repo(args, readonly=None if args.new is None else True) as repo:
        old = repo.resolve(args.old or "head")
        new = repo.resolve(args.new) if args.new else None
        changes = list(repo.diff(old, new, classify=not args.no_classify))
    totals = summarize(changes)
    if args.json:
        emit_json({"totals": totals, "changes": [] if args.stat else [_json(c) for c in changes]})
        return 0
    if not args.stat:
        _print_changes(changes, every_chunk=not out.is_terminal)
    out.line(summary_text(totals))
    return 0


def _json(change: Change) -> dict[str, Any]:
    from peerhost_store.diff import FileChange

    if isinstance(change, FileChange):
        return {"type": "file", "path": change.path, "status": change.status, "kind": change.kind,
                "old_size": change.old_size, "new_size": change.new_size}
    return {"type": "chunk", "path": change.path, "dimension": change.dimension, "kind": change.kind,
            "x": change.x, "z": change.z, "status": change.status, "change": change.change,
            "detail": change.detail}


#: A terminal shows this many chunks of a group; a pipe gets every chunk, one per line.
SHOWN_CHUNKS = 6


def _print_changes(changes: list[Change], *, every_chunk: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    from peerhost_store.diff import ChunkChange, FileChange

    files = [c for c in changes if isinstance(c, FileChange)]
    chunks = [c for c in changes if isinstance(c, ChunkChange)]
    if files:
        # A region's entry counts chunks, not bytes: a column of its own.
        olds = column_sizes([f.old_size if f.kind != "region" else None for f in files])
        news = column_sizes([f.new_size if f.kind != "region" else None for f in files])
        table = Table("status", "path", "kind", "old size", "new size", "chunks", title="files")
        for f, old, new in zip(files, olds, news, strict=True):
            table.add_row(f.status, Text(f.path), f.kind, old, new, _chunk_counts(f))
        for column in table.columns[3:]:
            column.justify = "right"
        out.print(table)
    if chunks and every_chunk:
        table = Table("dimension", "kind", "status", "change", "chunk x,z", "blocks x, z",
                      "detail", title="chunks")
        for c in chunks:
            table.add_row(c.dimension, c.kind, c.status, c.change or "", f"{c.x},{c.z}",
                          blocks(c), Text(c.detail))
        out.print(table)
    elif chunks:
        groups: dict[tuple[str, str, str, str | None], list[ChunkChange]] = defaultdict(list)
        for c in chunks:
            groups[(c.dimension, c.kind, c.status, c.change)].append(c)
        table = Table("dimension", "kind", "status", "change", "chunks",
                      "where: chunk x,z (blocks x, z)", title="chunks")
        for (dim, kind, status, change), rows in sorted(groups.items(), key=lambda kv: str(kv[0])):
            where = ", ".join(f"{c.x},{c.z} ({blocks(c)})" for c in rows[:SHOWN_CHUNKS])
            if len(rows) > SHOWN_CHUNKS:
                where += f", and {len(rows) - SHOWN_CHUNKS:,} more (phs diff | less lists all)"
            table.add_row(dim, kind, status, change or "", f"{len(rows):,}", where)
        table.columns[4].justify = "right"
        out.print(table)


def _chunk_counts(f: FileChange) -> str:
    if f.kind != "region":
        return ""
    if f.old_size is not None and f.new_size is not None:
        return f"{f.old_size:,} -> {f.new_size:,}"
    return f"{f.old_size if f.new_size is None else f.new_size:,}"


def blocks(c: ChunkChange) -> str:
    """The blocks a chunk spans: ``48..63, -32..-17`` for chunk 3,-2."""
    return f"{c.x * 16}..{c.x * 16 + 15}, {c.z * 16}..{c.z * 16 + 15}"


_UNITS = ("B", "KiB", "MiB", "GiB")


def column_sizes(sizes: list[int | None]) -> list[str]:
    """Sizes of one column, all in the unit of the largest (so that they line up and compare
    at a glance): ``["1.5", "0.2", ""]`` plus the unit on each, e.g. ``"1.5 MiB"``."""
    largest = max((n for n in sizes if n is not None), default=0)
    power = 0
    while power < len(_UNITS) - 1 and largest >= 1024 ** (power + 1):
        power += 1
    unit = _UNITS[power]
    def text(n: int) -> str:
        if power == 0:
            return f"{n:,} B"
        value = n / 1024 ** power
        return f"<0.1 {unit}" if 0 < value < 0.05 else f"{value:,.1f} {unit}"

    return ["" if n is None else text(n) for n in sizes]


def summary_text(totals: dict[str, int]) -> str:
    """``phs diff``'s last line, from :func:`peerhost_store.diff.summarize`'s totals:
    ``2 files changed (1 added, 1 modified); 1,234 chunks changed (...)``."""
    parts = []
    for what in ("files", "chunks"):
        by_status = [(s, totals.get(f"{what}_{s}", 0)) for s in ("added", "modified", "removed")]
        count = sum(n for _, n in by_status)
        if not count:
            continue
        noun = what[:-1] if count == 1 else what
        text = f"{count:,} {noun} changed (" + ", ".join(
            f"{n:,} {s}" for s, n in by_status if n) + ")"
        if what == "chunks" and totals.get("chunks_modified"):
            kinds = [(totals.get("chunks_content", 0), "with new content"),
                     (totals.get("chunks_resave", 0), "only re-saved by the game"),
                     (totals.get("chunks_unknown", 0), "not classified")]
            text += ": of the modified, " + ", ".join(f"{n:,} {k}" for n, k in kinds if n)
        parts.append(text)
    return "; ".join(parts) or "no changes"
