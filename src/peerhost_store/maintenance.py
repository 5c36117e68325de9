"""Verify and garbage-collect a store: walk everything the retained snapshots reach."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgpack

from .errors import DecodeError, ObjectCorrupt, ObjectMissing, PeerhostError
from .ids import ObjectId
from .objects import DirEntry, EntryKind, Index, Object, Snapshot, decode
from .scan import cached_ids
from .store import ObjectStore, Pins, Update

#: Walks gc makes before it gives up while transfers keep pinning objects.
GC_TRIES = 5


class GcBusy(PeerhostError):
    """The pins changed during each of gc's walks (a pull kept running); nothing was
    deleted."""


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
    store: ObjectStore,
    snapshots: Iterable[ObjectId],
    *,
    shallow: set[ObjectId] = frozenset(),  # type: ignore[assignment]
    follow_parents: bool = True,
    read_blobs: bool = True,
    nodes: Iterable[ObjectId] = (),
) -> WalkReport:
    """Visit every object reachable from ``snapshots``, re-hashing each one read.

    Args:
        shallow: snapshots whose parents were pruned by gc (not reported missing).
        follow_parents: also walk the snapshots' ancestors.
        read_blobs: read (and so verify) blobs too; gc only needs their ids.
        nodes: tree nodes (of any kind) to walk from as well.
    """
    report = WalkReport()
    stack: list[tuple[ObjectId, str, str]] = [(oid, "snapshot", "ref") for oid in snapshots]
    stack += [(oid, "node", "pinned") for oid in nodes]
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


def collect_garbage(store: ObjectStore, retained: list[ObjectId], *,
                    keep: Iterable[ObjectId] = (), pins: Pins | None = None) -> GcReport:
    """Delete every object that the ``retained`` snapshots do not reach.

    Snapshots whose parents are not retained become shallow. Stat cache entries that point at
    deleted objects are dropped, so a later snapshot never reuses a deleted object. Live pins
    (objects a running pull wrote or relies on) are kept, with the subtrees of pinned nodes,
    and so are the trees in ``keep`` (a pending restore's); stale pins are dropped.

    Args:
        pins: the pins loaded before ``retained`` was read from the refs (default: now). A
            pull drops its pin in the transaction that moves its ref, so pins read first and
            refs read after cannot both miss what it stored.

    Raises:
        PinsChanged: pins changed since ``pins`` were loaded; nothing was deleted (walk again).
    """
    pins = store.load_pins() if pins is None else pins
    shallow = load_shallow(store)
    kept = set(retained)
    for oid in retained:
        snap = decode(store.get_raw(oid))
        if not isinstance(snap, Snapshot):
            raise DecodeError(f"gc: retained object {oid.hex()} is not a snapshot")
        if any(p not in kept for p in snap.parents):
            shallow.add(oid)
    shallow &= kept
    nodes = [oid for oid, node in pins.ids.items() if node] + list(keep)
    present = set(nodes) - set(store.iter_missing(nodes))  # pinned before it is stored
    report = walk(store, retained, shallow=shallow, follow_parents=False, read_blobs=False,
                  nodes=[oid for oid in nodes if oid in present])
    if not report.ok:
        raise DecodeError(f"gc stopped, the store has problems: {report.problems[0]}")
    protected = report.reachable | pins.ids.keys()
    garbage = [oid for oid in store.iter_ids() if oid not in protected]
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
            pins=dict.fromkeys(pins.stale),
            pins_at=pins.generation,
        )
    )
    return GcReport(len(retained), len(report.reachable), len(garbage))


def _stat_reachable(value: bytes, reachable: set[ObjectId]) -> bool:
    ids = cached_ids(value)
    return bool(ids) and all(oid in reachable for oid in ids)
