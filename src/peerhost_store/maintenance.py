"""Verify and garbage-collect a store: walk everything the retained snapshots reach."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgpack

from .errors import DecodeError, ObjectCorrupt, ObjectMissing
from .ids import ObjectId
from .objects import DirEntry, EntryKind, Index, Object, Snapshot, decode
from .scan import cached_ids
from .store import ObjectStore, Update
from .tree import ObjectLoader


@dataclass
class Problem:
    """A missing or corrupt object and the path of what needs it."""

    oid: ObjectId
    kind: str  #: "missing", "corrupt" or "malformed"
    where: str

    def __str__(self) -> str:
        return f"{self.kind} object {self.oid.hex()} ({self.where})"


@dataclass
class WalkReport:
    """What a walk over reachable objects saw."""

    objects: int = 0
    bytes: int = 0
    snapshots: int = 0
    problems: list[Problem] = field(default_factory=list)
    reachable: set[ObjectId] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.problems


def walk(
    store: ObjectLoader,
    snapshots: Iterable[ObjectId],
    *,
    shallow: set[ObjectId] = frozenset(),  # type: ignore[assignment]
    follow_parents: bool = True,
    read_blobs: bool = True,
) -> WalkReport:
    """Visit every object reachable from ``snapshots``, re-hashing each one read.

    Args:
        shallow: snapshots whose parents were pruned by gc (not reported missing).
        follow_parents: also walk the snapshots' ancestors.
        read_blobs: read (and so verify) blobs too; gc only needs their ids.
    """
    report = WalkReport()
    stack: list[tuple[ObjectId, str, str]] = [(oid, "snapshot", "ref") for oid in snapshots]
    while stack:
        oid, kind, where = stack.pop()
        if oid in report.reachable:
            continue
        report.reachable.add(oid)
        if kind == "blob" and not read_blobs:
            continue
        try:
            data = store.get_raw(oid)
            obj = decode(data)
        except ObjectMissing:
            report.problems.append(Problem(oid, "missing", where))
            continue
        except ObjectCorrupt:
            report.problems.append(Problem(oid, "corrupt", where))
            continue
        except DecodeError as exc:
            report.problems.append(Problem(oid, "malformed", f"{where}: {exc}"))
            continue
        report.objects += 1
        report.bytes += len(data)
        stack.extend(_children(oid, obj, kind, where, shallow, follow_parents, report))
    return report


def _children(
    oid: ObjectId,
    obj: Object,
    kind: str,
    where: str,
    shallow: set[ObjectId],
    follow_parents: bool,
    report: WalkReport,
) -> list[tuple[ObjectId, str, str]]:
    expected = {"snapshot": Snapshot, "blob": bytes}.get(kind)
    if expected is not None and not isinstance(obj, expected):
        report.problems.append(Problem(oid, "malformed", f"{where}: not a {kind}"))
        return []
    if isinstance(obj, Snapshot):
        report.snapshots += 1
        name = f"snapshot {oid.hex()[:12]}"
        out = [(obj.root, "dir", name + ":/")]
        if follow_parents and oid not in shallow:
            out += [(p, "snapshot", f"parent of {name}") for p in obj.parents]
        return out
    if isinstance(obj, Index):
        return [(child.oid, kind, where) for child in obj.entries]
    if isinstance(obj, bytes):
        return []
    out = []
    for entry in obj.entries:
        if isinstance(entry, DirEntry):
            path = f"{where}{entry.name}"
            if entry.kind is EntryKind.DIR:
                out.append((entry.oid, "dir", path + "/"))
            elif entry.kind is EntryKind.REGION:
                out.append((entry.oid, "region", path))
                if entry.raw is not None:
                    out.append((entry.raw, "blob", path + " (whole file)"))
            else:
                out.append((entry.oid, "blob", path))
        else:
            out.append((entry.oid, "blob", f"{where} chunk slot {entry.slot}"))
    return out


def load_shallow(store: ObjectStore) -> set[ObjectId]:
    """Snapshots whose parents gc pruned."""
    raw = store.get_meta("shallow")
    if not raw:
        return set()
    try:
        return {ObjectId(bytes(x)) for x in msgpack.unpackb(raw)}
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"the store's list of shallow snapshots is unreadable: {exc}") from exc


@dataclass
class GcReport:
    """What gc kept and deleted."""

    kept_snapshots: int
    kept_objects: int
    deleted_objects: int


def collect_garbage(store: ObjectStore, retained: list[ObjectId]) -> GcReport:
    """Delete every object that the ``retained`` snapshots do not reach.

    Snapshots whose parents are not retained become shallow. Stat cache entries that point at
    deleted objects are dropped, so a later snapshot never reuses a deleted object.
    """
    shallow = load_shallow(store)
    kept = set(retained)
    for oid in retained:
        snap = decode(store.get_raw(oid))
        if not isinstance(snap, Snapshot):
            raise DecodeError(f"gc: retained object {oid.hex()} is not a snapshot")
        if any(p not in kept for p in snap.parents):
            shallow.add(oid)
    shallow &= kept
    report = walk(store, retained, shallow=shallow, follow_parents=False, read_blobs=False)
    if not report.ok:
        raise DecodeError(f"gc stopped, the store has problems: {report.problems[0]}")
    garbage = [oid for oid in store.iter_ids() if oid not in report.reachable]
    stale = {
        path: None
        for path, value in store.load_stats().items()
        if not _stat_reachable(value, report.reachable)
    }
    store.apply(
        Update(
            delete_objects=garbage,
            stats=stale,  # type: ignore[arg-type]
            meta={"shallow": msgpack.packb(sorted(shallow))},
        )
    )
    return GcReport(len(retained), len(report.reachable), len(garbage))


def _stat_reachable(value: bytes, reachable: set[ObjectId]) -> bool:
    ids = cached_ids(value)
    return bool(ids) and all(oid in reachable for oid in ids)
