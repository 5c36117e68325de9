"""``phs repair``: heal missing or corrupt objects, and drop what cannot be healed.

1. Find the damaged objects: the verify walk over every ref (missing, corrupt, malformed).
2. Heal them: the live world is scanned whole (no stat cache), and every object it produces
   whose id is damaged is stored again (a store replaces bytes that do not hash to their id);
   then each source (a remote's coordinator) is asked for the rest. Walk again: a healed node
   can reveal damage below it. Stop when nothing more heals.
3. Drop the rest, as ``restic repair snapshots`` does: every snapshot whose tree reaches a
   damaged object gets a new tree without it (a damaged chunk leaves its region; a file,
   folder or region map that cannot be read leaves its folder), and every snapshot after it
   a new id (its parents changed). The refs move to the new heads in one update, with the
   stat cache rebuilt; what was lost is reported per snapshot. The old snapshots become
   unreachable (``phs gc`` deletes them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgpack

from .errors import DecodeError, NotFound, ObjectCorrupt, ObjectMissing, PeerhostError
from .graph import walk
from .ids import ObjectId
from .maintenance import load_shallow
from .objects import (
    ChunkEntry,
    DirEntry,
    DirLeaf,
    EntryKind,
    Index,
    Node,
    RegionLeaf,
    Snapshot,
    encode_snapshot,
)
from .repo import Repository
from .scan import scan_world
from .store import Update
from .tree import ObjectLoader, build_dir, build_region, load_node
from .writer import ObjectWriter

__all__ = [
    "MAX_ROUNDS",
    "WORLD",
    "Lost",
    "ObjectSource",
    "RepairReport",
    "repair",
]

WORLD = "the live world"
#: Rounds of walk-then-heal (a healed node can reveal damaged children; trees are shallow).
MAX_ROUNDS = 32


class ObjectSource(Protocol):
    """Somewhere good copies of objects may be found (a remote's coordinator)."""

    name: str

    def fetch(self, ids: list[ObjectId]) -> dict[ObjectId, bytes]:
        """The bytes of those of ``ids`` it holds, each checked against its id."""
        ...


@dataclass(frozen=True)
class Lost:
    """A path a snapshot held that could not be recovered (``... chunk slot N`` for a chunk)."""

    snapshot: ObjectId  #: the snapshot as it was (its repaired id is in ``rewritten``)
    path: str


@dataclass
class RepairReport:
    """What :func:`repair` found, healed and dropped."""

    damaged: int = 0
    healed: dict[str, int] = field(default_factory=dict)
    lost: list[Lost] = field(default_factory=list)
    rewritten: dict[ObjectId, ObjectId] = field(default_factory=dict)
    heads: dict[str, tuple[ObjectId, ObjectId | None]] = field(default_factory=dict)


def repair(repo: Repository, sources: Sequence[ObjectSource] = ()) -> RepairReport:
    """Heal the repository's damaged objects from the live world and ``sources``; drop what
    stays damaged from the snapshots that reach it.

    Raises:
        PeerhostError: a restore is pending (finish or drop it first).
        NotFound: a ref's own snapshot is lost (nothing was dropped).
    """
    report = RepairReport()
    with repo.lock():
        if (pending := repo.pending_restore()) is not None:
            raise PeerhostError(f"an interrupted {pending.describe()} is pending: "
                                f"{pending.choices(pending.finish_hint())}; then run phs repair")
        damaged = _damaged(repo)
        seen = set(damaged)
        offered: set[ObjectId] = set()  # ids the live world was scanned for
        for _ in range(MAX_ROUNDS):
            remaining = set(damaged)
            if remaining - offered:
                offered |= remaining
                remaining -= _count(report, WORLD, _heal_from_world(repo, remaining))
            for source in sources:
                if remaining:
                    got = source.fetch(sorted(remaining))
                    repo.store.apply(Update(objects=list(got.values())))
                    remaining -= _count(report, source.name, set(got))
            if remaining == set(damaged):
                break  # nothing healed: the rest is lost
            damaged = _damaged(repo)  # a healed node can reveal damage below it
            seen |= set(damaged)
        report.damaged = len(seen)
        if damaged:
            _drop(repo, set(damaged), report)
    return report


def _count(report: RepairReport, name: str, healed: set[ObjectId]) -> set[ObjectId]:
    if healed:
        report.healed[name] = report.healed.get(name, 0) + len(healed)
    return healed


def _damaged(repo: Repository) -> set[ObjectId]:
    walked = walk(repo.store.objects, [oid for _, oid in repo.store.refs.items()],
                  shallow=load_shallow(repo.store))
    return {p.oid for p in walked.problems}


def _heal_from_world(repo: Repository, damaged: set[ObjectId]) -> set[ObjectId]:
    # Every file is read (no stat cache): a cached region would not produce its chunks. The
    # cache is rebuilt from this scan, so it points at nothing damaged.
    with ObjectWriter(repo.store, heal=frozenset(damaged)) as writer:
        scan = scan_world(repo.world, writer, {})
        objects = writer.take()
    repo.store.apply(Update(hashed=objects, stats=scan.stats, clear_stats=True))
    return writer.healed


# -- dropping what is lost --------------------------------------------------------------------


def _drop(repo: Repository, damaged: set[ObjectId], report: RepairReport) -> None:
    store = repo.store
    refs = store.refs.items()
    order, unreadable = _snapshots(repo, [oid for _, oid in refs])
    damaged |= unreadable
    for name, oid in refs:
        if oid in unreadable and not name.startswith("remotes/"):
            raise NotFound(f"the snapshot ref {name!r} points at ({oid.hex()}) is lost and no "
                           "source has it: restore .peerhost from a backup, or clone the "
                           "session again")
    with ObjectWriter(store) as writer:
        trees = _Trees(store.objects, damaged, writer)
        new: dict[ObjectId, ObjectId] = {}
        for oid, snap in order:
            root, lost = trees.dir(snap.root)
            parents = tuple(new[p] for p in snap.parents if p in new)
            report.lost += [Lost(oid, path) for path in lost]
            if root == snap.root and parents == snap.parents:
                new[oid] = oid
                continue
            message = snap.message + (f" (repaired: {len(lost)} lost)" if lost else "")
            changed = dataclasses.replace(snap, root=root or trees.empty(), parents=parents,
                                          message=message)
            new[oid] = writer.add(encode_snapshot(changed))
            report.rewritten[oid] = new[oid]
        objects = writer.take()
    moves: list[tuple[str, ObjectId | None, ObjectId | None]] = []
    for name, oid in refs:
        if new.get(oid) != oid:
            moves.append((name, oid, new.get(oid)))  # a lost remotes/ ref: the next pull sets it
            report.heads[name] = (oid, new.get(oid))
    shallow = {new[s] for s in load_shallow(store) if s in new}
    store.apply(Update(hashed=objects, refs=moves,
                       meta={"shallow": msgpack.packb(sorted(shallow))}))


def _snapshots(repo: Repository, heads: list[ObjectId]) -> tuple[
        list[tuple[ObjectId, Snapshot]], set[ObjectId]]:
    """Every readable snapshot the heads reach, parents before children; and the unreadable
    ones (their history is cut there)."""
    shallow = load_shallow(repo.store)
    order: list[tuple[ObjectId, Snapshot]] = []
    unreadable: set[ObjectId] = set()
    done: set[ObjectId] = set()
    for head in heads:
        stack: list[tuple[ObjectId, Snapshot | None]] = [(head, None)]
        while stack:
            oid, expanded = stack.pop()
            if expanded is not None:
                order.append((oid, expanded))  # after all its parents
                continue
            if oid in done:
                continue
            done.add(oid)
            try:
                snap = repo.read_snapshot(oid)
            except (ObjectMissing, ObjectCorrupt, DecodeError, NotFound):
                unreadable.add(oid)
                continue
            stack.append((oid, snap))
            if oid not in shallow:
                stack += [(p, None) for p in snap.parents if p not in done]
    return order, unreadable


class _Trees:
    """Rebuilds trees without their damaged objects; each distinct node is visited once."""

    def __init__(self, store: ObjectLoader, damaged: set[ObjectId], writer: ObjectWriter) -> None:
        self.store = store
        self.damaged = damaged
        self.writer = writer
        self._dirs: dict[ObjectId, tuple[ObjectId | None, list[str]]] = {}

    def empty(self) -> ObjectId:
        return build_dir(self.writer.add, [])

    def dir(self, oid: ObjectId) -> tuple[ObjectId | None, list[str]]:
        """The repaired map (None: it cannot be read at all) and the paths lost under it."""
        if oid not in self._dirs:
            self._dirs[oid] = self._dir(oid)
        return self._dirs[oid]

    def _dir(self, oid: ObjectId) -> tuple[ObjectId | None, list[str]]:
        entries, gaps = self._entries(oid)
        if entries is None:
            return None, []
        lost = ["(entries under a damaged folder node)"] * gaps
        kept: list[DirEntry] = []
        for entry in entries:
            assert isinstance(entry, DirEntry)
            fixed, under = self._entry(entry)
            lost += [f"{entry.name}{'/' if entry.kind is EntryKind.DIR else ''}{p}" for p in under]
            if fixed is not None:
                kept.append(fixed)
        if not lost and len(kept) == len(entries):
            return oid, []
        return build_dir(self.writer.add, kept), lost

    def _entry(self, entry: DirEntry) -> tuple[DirEntry | None, list[str]]:
        if entry.kind is EntryKind.FILE:
            return (None, [""]) if entry.oid in self.damaged else (entry, [])
        if entry.kind is EntryKind.DIR:
            sub, lost = self.dir(entry.oid)
            if sub is None:
                return None, [""]
            return entry._replace(oid=sub), lost
        return self._region(entry)

    def _region(self, entry: DirEntry) -> tuple[DirEntry | None, list[str]]:
        raw = None if entry.raw in self.damaged else entry.raw
        lost = [" (whole file)"] if entry.raw is not None and raw is None else []
        chunks, gaps = self._entries(entry.oid)
        if chunks is None:
            if raw is None:
                return None, [""]  # neither the chunks nor the whole file can be read
            chunks, lost = [], [*lost, " (chunks; the whole file is kept)"]
        lost += [" (chunks under a damaged node)"] * gaps
        kept: list[ChunkEntry] = []
        for chunk in chunks:
            assert isinstance(chunk, ChunkEntry)
            if chunk.oid in self.damaged:
                lost.append(f" chunk slot {chunk.slot}")
            else:
                kept.append(chunk)
        if not lost:
            return entry, []
        region = build_region(self.writer.add, kept)
        return entry._replace(oid=region, size=len(kept), raw=raw), lost

    def _entries(self, oid: ObjectId) -> tuple[list[DirEntry | ChunkEntry] | None, int]:
        """A map's entries and how many of its nodes below the root could not be read;
        None when the root itself cannot be."""
        root = self._node(oid)
        if root is None:
            return None, 0
        entries: list[DirEntry | ChunkEntry] = []
        gaps = 0
        for leaf in self._leaves(root):
            if leaf is None:
                gaps += 1
            else:
                entries += leaf.entries
        return entries, gaps

    def _node(self, oid: ObjectId) -> Node | None:
        if oid in self.damaged:
            return None
        try:
            return load_node(self.store, oid)
        except (ObjectMissing, ObjectCorrupt, DecodeError):
            return None

    def _leaves(self, node: Node) -> Iterator[DirLeaf | RegionLeaf | None]:
        if not isinstance(node, Index):
            yield node
            return
        for child in node.entries:
            loaded = self._node(child.oid)
            if loaded is None:
                yield None
            else:
                yield from self._leaves(loaded)
