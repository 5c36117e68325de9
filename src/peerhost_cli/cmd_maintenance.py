"""phs verify, phs gc."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, cast

from .common import Parents, Subparsers, open_repo
from .output import Progress, emit_json, err, human_bytes, out, progress_bar

if TYPE_CHECKING:
    from peerhost_store.ids import ObjectId
    from peerhost_store.store import ObjectStore


def register(commands: Subparsers, parents: Parents) -> None:
    common = parents("world", "json")
    p = commands.add_parser("verify", parents=common,
                            help="re-hash every object reachable from the refs")
    p.set_defaults(func=run_verify)
    p = commands.add_parser("gc", parents=common,
                            help="delete objects that no retained snapshot reaches")
    p.add_argument("--keep-last", type=int, default=None, metavar="N",
                   help="retain only the newest N snapshots (default: all history)")
    p.set_defaults(func=run_gc)


def run_verify(args: argparse.Namespace) -> int:
    with open_repo(args) as repo, progress_bar("verify", enabled=not args.json) as bar:
        store = repo.store
        if bar is not None:
            # About the bytes verify reads: the store file (with its free pages) bounds them.
            size = (repo.world / ".peerhost" / "store" / "data.mdb").stat().st_size
            repo.store = cast("ObjectStore", _Reading(store, bar, size))
        try:
            report = repo.verify()
        finally:
            repo.store = store
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


class _Reading:
    """A store that tells ``progress`` how many bytes were read from it (verify's bar)."""

    def __init__(self, store: ObjectStore, progress: Progress, total: int) -> None:
        self._store = store
        self._progress = progress
        self._total = total
        self._read = 0

    def get_raw(self, oid: ObjectId) -> bytes:
        data = self._store.get_raw(oid)
        self._read += len(data)
        self._progress(self._read, max(self._total, self._read))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def run_gc(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        report = repo.gc(args.keep_last)
    if args.json:
        emit_json({"kept_snapshots": report.kept_snapshots, "kept_objects": report.kept_objects,
                   "deleted_objects": report.deleted_objects})
    else:
        out.line(f"gc: kept {report.kept_snapshots} snapshots ({report.kept_objects} objects), "
                 f"deleted {report.deleted_objects} objects")
    return 0
