"""The object graph: what each object refers to, and the walks over it. Pure: reads through
``get_many`` and ``missing``, never writes.

Snapshots refer to their root directory and their parents; directory maps to directories,
region maps and blobs (a damaged region also to its whole file's blob); region maps to chunk
blobs; index nodes to children of their own map kind. :func:`edges` is the one place that says
so; every walk uses it: :func:`walk` (verify, gc, repair), :func:`is_ancestor` (push, pull,
the coordinator's fast-forward check), the transfers' level-by-level walks and the
coordinator's tree check (:mod:`peerhost_store.bounds`).

Kinds are what a reference expects (:class:`Kind`): an object that is not of that kind is
malformed where it is referenced (:class:`WrongKind`), whatever its own bytes say.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from .errors import DecodeError, ObjectCorrupt, ObjectMissing
from .ids import ObjectId
from .objects import DirEntry, DirLeaf, EntryKind, Index, Object, RegionLeaf, Snapshot, decode

__all__ = [
    "READ_BATCH",
    "Edge",
    "GraphLoader",
    "Kind",
    "Problem",
    "WalkReport",
    "WrongKind",
    "check_kind",
    "children",
    "decode_as",
    "edges",
    "history",
    "is_ancestor",
    "walk",
]

#: Objects a walk reads per call to the store.
READ_BATCH = 1024


class Kind(enum.Enum):
    """What a reference expects to find."""

    SNAPSHOT = "snapshot"
    DIR = "dir"
    REGION = "region"
    BLOB = "blob"
    #: A tree node of either map (a pinned node, whose referrer is not known).
    NODE = "node"


class WrongKind(DecodeError):
    """An object is not of the kind its reference expects (a directory entry that points at a
    region leaf, a snapshot whose root is a blob, ...)."""

    def __init__(self, oid: ObjectId, kind: Kind, obj: Object) -> None:
        self.oid = oid
        self.kind = kind
        super().__init__(f"object {oid.hex()} is referenced as a {kind.value} but is a "
                         f"{type(obj).__name__}")


class Edge(NamedTuple):
    """A reference from an object: the id, the kind it must have, and how it is named (a
    file or folder name, ``slot 5``, ``parent``), for messages."""

    oid: ObjectId
    kind: Kind
    label: str


_ACCEPTS: dict[Kind, tuple[type, ...]] = {
    Kind.SNAPSHOT: (Snapshot,),
    Kind.BLOB: (bytes,),
    Kind.DIR: (DirLeaf, Index),
    Kind.REGION: (RegionLeaf, Index),
    Kind.NODE: (DirLeaf, RegionLeaf, Index),
}


def check_kind(oid: ObjectId, obj: Object, kind: Kind) -> None:
    """Raise WrongKind unless ``obj`` is what a reference of ``kind`` expects."""
    if not isinstance(obj, _ACCEPTS[kind]):
        raise WrongKind(oid, kind, obj)


def edges(oid: ObjectId, obj: Object, kind: Kind, *, follow_parents: bool = True) -> list[Edge]:
    """The references of ``obj`` (reached as ``kind``), in order.

    Raises:
        WrongKind: ``obj`` is not of ``kind``, or a map node holds the other map's entries.
    """
    check_kind(oid, obj, kind)
    if isinstance(obj, Snapshot):
        out = [Edge(obj.root, Kind.DIR, "")]
        if follow_parents:
            out += [Edge(p, Kind.SNAPSHOT, "parent") for p in obj.parents]
        return out
    if isinstance(obj, bytes):
        return []
    if isinstance(obj, Index):
        return [Edge(e.oid, kind, "") for e in obj.entries]
    if isinstance(obj, RegionLeaf):
        if kind is Kind.DIR:
            raise WrongKind(oid, kind, obj)
        return [Edge(e.oid, Kind.BLOB, f"chunk slot {e.slot}") for e in obj.entries]
    if kind is Kind.REGION:
        raise WrongKind(oid, kind, obj)
    return [edge for entry in obj.entries for edge in _entry_edges(entry)]


def _entry_edges(entry: DirEntry) -> list[Edge]:
    if entry.kind is EntryKind.DIR:
        return [Edge(entry.oid, Kind.DIR, entry.name + "/")]
    if entry.kind is EntryKind.FILE:
        return [Edge(entry.oid, Kind.BLOB, entry.name)]
    out = [Edge(entry.oid, Kind.REGION, entry.name)]
    if entry.raw is not None:
        out.append(Edge(entry.raw, Kind.BLOB, entry.name + " (whole file)"))
    return out


def children(oid: ObjectId, obj: Object, kind: Kind, *,
             follow_parents: bool = True) -> list[tuple[ObjectId, Kind]]:
    """:func:`edges` without their labels."""
    return [(e.oid, e.kind) for e in edges(oid, obj, kind, follow_parents=follow_parents)]


def decode_as(oid: ObjectId, data: bytes, kind: Kind) -> Object:
    """Decode ``data`` and check it is of ``kind`` (DecodeError, WrongKind)."""
    try:
        obj = decode(data)
    except WrongKind:
        raise
    except DecodeError as exc:
        raise DecodeError(f"object {oid.hex()} is malformed: {exc}") from exc
    check_kind(oid, obj, kind)
    return obj


class GraphLoader(Protocol):
    """What the walks read through (a :class:`~peerhost_store.store.Verified` store, or a
    view of one)."""

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]: ...

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]: ...


def history(store: GraphLoader, start: ObjectId, *,
            shallow: Iterable[ObjectId] = ()) -> Iterator[tuple[ObjectId, Snapshot | None]]:
    """Snapshot ``start`` and its ancestors in ``store``, a generation at a time, each once,
    with the snapshot (None for one the store lacks: pruned history, which ends its branch;
    so do ``shallow`` snapshots). One read per generation of the history."""
    stop = set(shallow)
    seen = {start}
    frontier = [start]
    while frontier:
        absent = set(store.missing(frontier))
        present = [oid for oid in frontier if oid not in absent]
        read = dict(zip(present, store.get_many(present) if present else [], strict=True))
        parents: list[ObjectId] = []
        for oid in frontier:
            data = read.get(oid)
            if data is None:
                yield oid, None
                continue
            obj = decode_as(oid, data, Kind.SNAPSHOT)
            assert isinstance(obj, Snapshot)
            yield oid, obj
            if oid not in stop:
                parents += [p for p in obj.parents if p not in seen]
                seen.update(obj.parents)
        frontier = parents


def is_ancestor(store: GraphLoader, ancestor: ObjectId, descendant: ObjectId, *,
                shallow: Iterable[ObjectId] = ()) -> bool:
    """Whether snapshot ``ancestor`` is ``descendant`` or one of its ancestors in ``store``
    (:func:`history`: pruned parents and ``shallow`` snapshots end a branch)."""
    return any(oid == ancestor for oid, _ in history(store, descendant, shallow=shallow))


# -- walking everything reachable -------------------------------------------------------------


@dataclass
class Problem:
    """A missing, corrupt or malformed object and the path of what needs it."""

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
    store: GraphLoader,
    snapshots: Iterable[ObjectId],
    *,
    shallow: set[ObjectId] = frozenset(),  # type: ignore[assignment]
    follow_parents: bool = True,
    read_blobs: bool = True,
    nodes: Iterable[ObjectId] = (),
    on_read: Callable[[int], None] | None = None,
) -> WalkReport:
    """Visit every object reachable from ``snapshots`` (and tree ``nodes``), reading each
    through ``store`` (which re-hashes it) and decoding it; report what is missing, corrupt or
    malformed, with the path that needs it (``snapshot 3fa2c1...:/region/r.0.0.mca chunk
    slot 5``). Reads go a level at a time, :data:`READ_BATCH` objects a call.

    Args:
        shallow: snapshots whose parents were pruned by gc (not reported missing).
        follow_parents: also walk the snapshots' ancestors.
        read_blobs: read (and so verify) blobs too; gc only needs their ids.
        nodes: tree nodes (of either map) to walk from as well.
        on_read: told the bytes read so far after each read (a progress bar).
    """
    report = WalkReport()
    level = [(oid, Kind.SNAPSHOT, "ref") for oid in snapshots]
    level += [(oid, Kind.NODE, "pinned") for oid in nodes]
    while level:
        todo = []
        for oid, kind, where in level:
            if oid not in report.reachable:
                report.reachable.add(oid)
                if kind is not Kind.BLOB or read_blobs:
                    todo.append((oid, kind, where))
        level = []
        for start in range(0, len(todo), READ_BATCH):
            part = todo[start:start + READ_BATCH]
            for (oid, kind, where), data in zip(part, _read(store, part, report), strict=True):
                if data is not None:
                    level += _visit(oid, data, kind, where, report, shallow, follow_parents)
            if on_read is not None:
                on_read(report.bytes)
    return report


def _read(store: GraphLoader, part: list[tuple[ObjectId, Kind, str]],
          report: WalkReport) -> list[bytes | None]:
    """The bytes of each item, or None (its problem reported). One call when all is well."""
    try:
        return list(store.get_many([oid for oid, _, _ in part]))
    except (ObjectMissing, ObjectCorrupt):
        pass
    out: list[bytes | None] = []
    for oid, _, where in part:  # something is damaged: find out which, one at a time
        try:
            out.append(store.get_many([oid])[0])
        except ObjectMissing:
            report.problems.append(Problem(oid, "missing", where))
            out.append(None)
        except ObjectCorrupt:
            report.problems.append(Problem(oid, "corrupt", where))
            out.append(None)
    return out


def _visit(oid: ObjectId, data: bytes, kind: Kind, where: str, report: WalkReport,
           shallow: set[ObjectId], follow_parents: bool) -> list[tuple[ObjectId, Kind, str]]:
    try:
        obj = decode(data)
        refs = edges(oid, obj, kind, follow_parents=follow_parents and oid not in shallow)
    except DecodeError as exc:
        report.problems.append(Problem(oid, "malformed", f"{where}: {exc}"))
        return []
    report.objects += 1
    report.bytes += len(data)
    if isinstance(obj, Snapshot):
        report.snapshots += 1
        name = f"snapshot {oid.hex()[:12]}"
        return [(e.oid, e.kind, f"parent of {name}" if e.kind is Kind.SNAPSHOT else name + ":/")
                for e in refs]
    if isinstance(obj, RegionLeaf):
        return [(e.oid, e.kind, f"{where} {e.label}") for e in refs]
    return [(e.oid, e.kind, where + e.label) for e in refs]
