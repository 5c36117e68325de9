"""The high-level API: a world folder with its store.

>>> repo = Repository.init(Path("saves/MyWorld"))          # doctest: +SKIP
>>> result = repo.snapshot("before the raid")              # doctest: +SKIP
>>> for change in repo.diff(result.oid, None): print(change)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import getpass
import heapq
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self

from .errors import DecodeError, NotFound, ObjectCorrupt, ObjectMissing, PeerhostError
from .ids import ObjectId, hash_bytes
from .lock import FileLock
from .objects import GameValue, Snapshot, decode, encode_snapshot
from .pending import PENDING_RESTORE, PendingRestore, RestoreIncomplete, kept_notice, only_restored
from .region import RegionError
from .revspec import parse_revspec
from .revspec import walk as walk_revspec
from .scan import ScanResult, scan_world
from .store import LmdbStore, MemoryStore, Overlay, PinsChanged, Store, Update
from .tree import ObjectLoader
from .worldfs import STORE_DIR
from .worldinfo import game_fields, mods_in, read_world_info
from .worldlock import check_world_closed
from .writer import ObjectWriter

if TYPE_CHECKING:
    # Imported where used: a snapshot (phs snapshot, status) needs none of them, and they
    # cost a command that starts in tens of milliseconds a good part of that again.
    from .area import Area, Player, Selection
    from .diff import Change, ChunkChange
    from .graph import WalkReport
    from .maintenance import GcReport
    from .restore import ObjectReader, Progress, RestoreOp, RestoreResult

__all__ = [
    "HEAD",
    "AbortResult",
    "NotARepository",
    "NothingToRollBack",
    "OpenStore",
    "Repository",
    "RollbackResult",
    "SnapshotResult",
]

HEAD = "main"


class OpenStore(Protocol):
    """Opens a repository's store in its folder (``WORLD/.peerhost/store``), for reading
    only with ``readonly`` (every write then fails, and nothing in the folder is created
    or changed)."""

    def __call__(self, path: Path, *, readonly: bool = False) -> Store: ...


class NotARepository(NotFound):
    """The folder (and its parents) has no PeerHost store."""


class NothingToRollBack(PeerhostError):
    """A rollback to the world head already holds: it would only add an empty snapshot."""

    def __init__(self, target: ObjectId, head: ObjectId | None) -> None:
        self.target = target
        self.head = head
        at = f"head {head.hex()[:12]}" if head is not None else "the world"
        super().__init__(f"{at} already holds the world of {target.hex()[:12]}: nothing to "
                         "roll back")


@dataclass(frozen=True)
class SnapshotResult:
    """A snapshot that was taken (``created``) or found unchanged."""

    oid: ObjectId
    snapshot: Snapshot
    created: bool
    scan: ScanResult
    new_objects: int
    new_bytes: int
    seconds: float


@dataclass(frozen=True)
class RollbackResult:
    """A rollback: the safety snapshot (if one was needed), the new head, what was restored."""

    safety: ObjectId | None
    oid: ObjectId
    restored: RestoreResult
    #: Head before the rollback (after the safety snapshot): rolling back to it undoes this one.
    previous: ObjectId | None = None


@dataclass(frozen=True)
class AbortResult:
    """An interrupted restore dropped by :meth:`Repository.abort_restore`."""

    pending: PendingRestore
    head: ObjectId | None


class Repository:
    """A world folder and the store that keeps its snapshots (``WORLD/.peerhost``)."""

    def __init__(self, world: Path, store: Store, lock_path: Path,
                 notify: Callable[[str], None] | None = None, *, readonly: bool = False) -> None:
        self.world = world
        self.store = store
        self._lock_path = lock_path
        #: The store was opened for reading only: :meth:`diff` scans the live world in
        #: memory, and every command that writes fails.
        self.readonly = readonly
        #: Told, one line at a time, what a command did beyond its own work (it finished an
        #: interrupted restore, or kept play made after one).
        self.notify: Callable[[str], None] = notify or (lambda _: None)
        #: Refuse to snapshot or write a world Minecraft has open (it holds session.lock:
        #: :mod:`.worldlock`). ``phs host`` turns this off while the server it runs is up (it
        #: pauses the server's saving around each snapshot); ``--force`` turns it off.
        self.check_world = True
        #: The server folder the world is hosted from, whose mods each snapshot records
        #: (:mod:`.worldinfo`); None: the world's parent when it holds server.properties.
        self.server_dir: Path | None = None

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def init(cls, world: Path, *, notify: Callable[[str], None] | None = None,
             open_store: OpenStore = LmdbStore) -> Repository:
        """Create the store of ``world`` (an existing folder); open it if it exists."""
        world = world.resolve()
        if not world.is_dir():
            raise NotFound(f"{world} is not a folder")
        (world / STORE_DIR / "store").mkdir(parents=True, exist_ok=True)
        return cls.open(world, notify=notify, open_store=open_store)

    @classmethod
    def open(cls, start: Path, *, notify: Callable[[str], None] | None = None,
             open_store: OpenStore = LmdbStore, readonly: bool | None = False) -> Repository:
        """Open the store of the world at ``start`` or at its nearest parent that has one.

        Args:
            open_store: opens the store in the folder ``WORLD/.peerhost/store`` (default: an
                :class:`~peerhost_store.store.LmdbStore` there).
            readonly: open the store for reading only (``log``, ``diff``, ``verify``,
                ``checkout``: nothing in it is created or changed); None: only when this
                process cannot write its folder (a read-only mount, another user's world).
        """
        start = start.resolve()
        for folder in (start, *start.parents):
            if (folder / STORE_DIR / "store").is_dir():
                base = folder / STORE_DIR
                if readonly is None:
                    readonly = not _writable(base / "store")
                return cls(folder, open_store(base / "store", readonly=readonly), base / "lock",
                           notify, readonly=readonly)
        raise NotARepository(f"no PeerHost store in {start} or its parents (run 'phs init')")

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lock(self) -> FileLock:
        """The world's write lock (held by snapshot, restore, rollback and gc)."""
        return FileLock(self._lock_path)

    # -- reading history ------------------------------------------------------------------

    def head(self) -> ObjectId | None:
        return self.store.refs.get(HEAD)

    def read_snapshot(self, oid: ObjectId) -> Snapshot:
        obj = decode(self.store.objects.get_raw(oid))
        if not isinstance(obj, Snapshot):
            raise NotFound(f"{oid.hex()} is not a snapshot")
        return obj

    def log(self, start: ObjectId | None = None) -> Iterator[tuple[ObjectId, Snapshot]]:
        """Yield snapshots reachable from ``start`` (default: head), newest first."""
        from .maintenance import load_shallow

        first = start or self.head()
        if first is None:
            return
        shallow = load_shallow(self.store)
        seen = {first}
        queue = [(-self.read_snapshot(first).time, first)]
        while queue:
            _, oid = heapq.heappop(queue)
            snap = self.read_snapshot(oid)
            yield oid, snap
            if oid in shallow:
                continue
            for parent in snap.parents:
                if parent not in seen:
                    seen.add(parent)
                    heapq.heappush(queue, (-self.read_snapshot(parent).time, parent))

    def area_log(self, area: Area, start: ObjectId | None = None, *, classify: bool = True
                 ) -> Iterator[tuple[ObjectId, Snapshot, list[ChunkChange]]]:
        """The snapshots reachable from ``start`` (default: head) that changed chunks inside
        ``area``, newest first, each with those changes (from its first parent, or from
        nothing for the first snapshot). Each costs a lookup of the area's region files."""
        from .area import area_changes
        from .maintenance import load_shallow

        shallow = load_shallow(self.store)
        for oid, snap in self.log(start):
            parent = snap.parents[0] if snap.parents and oid not in shallow else None
            old = self.read_snapshot(parent).root if parent is not None else None
            changes = area_changes(self.store.objects, old, snap.root, area, classify=classify)
            if changes:
                yield oid, snap, changes

    def find_player(self, text: str) -> Player:
        """A player by UUID, or by name in the ``usercache.json`` of the server folder the
        world is hosted from (:attr:`server_dir`, or the world's parent).

        Raises:
            AreaError: neither a UUID nor a name the usercache knows.
        """
        from .area import AreaError, Player, player_from_usercache

        try:
            return Player.parse(text)
        except AreaError:
            pass
        for folder in (self.server_dir, self.world.parent):
            cache = None if folder is None else folder / "usercache.json"
            if cache is not None and cache.is_file():
                found = player_from_usercache(text, cache.read_bytes())
                if found is not None:
                    return found
        raise AreaError(text, "not a UUID, and no usercache.json beside the world knows that "
                              "name: give the player's UUID (the name of their file in "
                              "playerdata/)")

    def resolve(self, spec: str) -> ObjectId:
        """Resolve a snapshot name to its id: ``head`` or a unique hex prefix (4+ digits),
        followed by git's ``~N`` and ``^N`` steps (``head~``, ``head~3``, ``3fa2c1^2``; see
        :mod:`.revspec`)."""
        name = parse_revspec(spec)
        if name.base in ("head", HEAD):
            oid = self.head()
            if oid is None:
                raise NotFound("there are no snapshots yet")
        elif len(name.base) < 4 or any(c not in "0123456789abcdef" for c in name.base):
            raise NotFound(f"{spec!r} is not a snapshot id, a prefix of 4+ hex digits, or "
                           "head, head~N, head^")
        else:
            matches = {oid for oid, _ in self.log() if oid.hex().startswith(name.base)}
            if len(matches) != 1:
                raise NotFound(f"{spec!r} matches {len(matches)} snapshots" + (
                    ": give more digits" if matches else ""))
            oid = matches.pop()
        if not name.steps:
            return oid
        from .maintenance import load_shallow
        return walk_revspec(spec, oid, name.steps, lambda o: self.read_snapshot(o).parents,
                    load_shallow(self.store))

    # -- snapshot -------------------------------------------------------------------------

    def scan(self, progress: Progress | None = None) -> ScanResult:
        """Store the live world's tree (objects and stat cache, no ref) and return it."""
        with self.lock():  # gc must not delete what the new stat cache entries point at
            return self._scan(progress)

    def _scan(self, progress: Progress | None = None) -> ScanResult:
        with ObjectWriter(self.store) as writer:
            result = scan_world(self.world, writer, self.store.stats.load(), progress=progress)
            objects = writer.take()
        self.store.apply(Update(hashed=objects, stats=result.stats))
        return result

    def snapshot(
        self,
        message: str = "",
        *,
        allow_empty: bool = False,
        progress: Progress | None = None,
        author: str | None = None,
        tell_pending: bool = True,
    ) -> SnapshotResult:
        """Snapshot the world and move head to it.

        When the world equals head's tree and ``allow_empty`` is false, head is returned
        with ``created`` false. Durable once it returns. An interrupted restore is finished
        first, unless the world changed since: then the snapshot keeps that play and (with
        ``tell_pending``) :attr:`notify` says so, with the user's two choices.
        """
        with self.lock():
            result = self._snapshot(message, allow_empty, progress, author)
            if tell_pending and (pending := self.pending_restore()) is not None:
                self.notify(kept_notice(pending, result.oid))
            return result

    def _snapshot(
        self, message: str, allow_empty: bool, progress: Progress | None, author: str | None,
        *, replacing: bool = False,
    ) -> SnapshotResult:
        if self.check_world:
            check_world_closed(self.world)
        self._finish_restore(replacing=replacing)
        started = time.perf_counter()
        parent = self.head()
        with ObjectWriter(self.store) as writer:
            scan = scan_world(self.world, writer, self.store.stats.load(), progress=progress)
            objects = writer.take()
        if parent is not None and not allow_empty and self.read_snapshot(parent).root == scan.root:
            self.store.apply(Update(hashed=objects, stats=scan.stats))
            return SnapshotResult(parent, self.read_snapshot(parent), False, scan,
                                  writer.new_objects, writer.new_bytes, time.perf_counter() - started)
        summary = {k: v for k, v in scan.summary.items() if k in ("files", "dirs", "regions", "chunks", "bytes")}
        summary["warnings"] = len(scan.warnings)
        snap = Snapshot(
            root=scan.root,
            parents=(parent,) if parent is not None else (),
            time=int(time.time()),
            author=author or _author(),
            host=socket.gethostname(),
            message=message,
            summary=summary,
            game=self.game(),
        )
        data = encode_snapshot(snap)
        oid = hash_bytes(data)
        self.store.apply(
            Update(hashed=[*objects, (oid, data)], refs=[(HEAD, parent, oid)], stats=scan.stats)
        )
        return SnapshotResult(oid, snap, True, scan, writer.new_objects + 1,
                              writer.new_bytes + len(data), time.perf_counter() - started)

    def game(self) -> dict[str, GameValue]:
        """What a snapshot of the world now records of its game: level.dat's version and
        data packs, and the server folder's mods (:mod:`.worldinfo`)."""
        server = self.server_dir
        if server is None and (self.world.parent / "server.properties").is_file():
            server = self.world.parent
        return game_fields(read_world_info(self.world),
                           None if server is None else mods_in(server))

    def _commit_tree(self, root: ObjectId, message: str,
                     other_parents: tuple[ObjectId, ...] = (), *,
                     restoring: tuple[str, ObjectId, ObjectId] | None = None) -> ObjectId:
        """Commit ``root`` on top of head. With ``restoring`` (command, snapshot, source
        tree), the same transaction records the restore of ``root`` about to begin."""
        parent = self.head()
        parents = ((parent,) if parent else ()) + other_parents
        snap = Snapshot(root, parents, int(time.time()), _author(), socket.gethostname(),
                        message, {})
        data = encode_snapshot(snap)
        oid = hash_bytes(data)
        meta: dict[str, bytes | None] = {}
        if restoring is not None:
            command, snapshot, source = restoring
            mark = PendingRestore(root, source, parent, oid, snapshot, command)
            meta[PENDING_RESTORE] = mark.encode()
        self.store.apply(Update(objects=[data], refs=[(HEAD, parent, oid)], meta=meta))
        return oid

    def restore_moving_head(self, ops: list[RestoreOp], target: ObjectId,
                            refs: list[tuple[str, ObjectId | None, ObjectId | None]],
                            reader: ObjectReader | None = None,
                            progress: Progress | None = None, *, source: ObjectId,
                            command: str = "pull") -> RestoreResult:
        """Move ``refs`` (compare-and-swap) and write ``ops`` (from root tree ``source``
        towards ``target``) as one recoverable step: see :mod:`peerhost_store.pending`.
        Call under :meth:`lock`."""
        if self.check_world:
            check_world_closed(self.world)
        moves = {name: (old, new) for name, old, new in refs}
        before, after = moves.get(HEAD, (self.head(), self.head()))
        mark = PendingRestore(target, source, before, after, after, command)
        self.store.apply(Update(refs=refs, meta={PENDING_RESTORE: mark.encode()}))
        return self._apply_pending(ops, reader, progress, mark)

    def _apply_pending(self, ops: list[RestoreOp], reader: ObjectReader | None,
                       progress: Progress | None, mark: PendingRestore) -> RestoreResult:
        try:
            from .restore import apply_restore
            result = apply_restore(reader or self.store.objects, self.world, ops, progress=progress)
        except (OSError, ObjectMissing, ObjectCorrupt) as exc:
            raise RestoreIncomplete(mark, exc) from exc
        self.store.apply(Update(meta={PENDING_RESTORE: None}))
        return result

    def pending_restore(self) -> PendingRestore | None:
        """The restore that began writing the world and did not finish, if any."""
        raw = self.store.meta.get(PENDING_RESTORE)
        if raw is None:
            return None
        head = self.head()
        return PendingRestore.decode(raw, head, self.read_snapshot(head).root if head else None)

    def _finish_restore(self, *, replacing: bool = False) -> None:
        """Finish a restore that was interrupted, unless the world changed since: then leave
        it to the caller's snapshot and tell the user (see :mod:`peerhost_store.pending`).
        ``replacing``: the caller is about to write a restore of its own."""
        mark = self.pending_restore()
        if mark is None:
            return
        live = self._scan().root  # under the lock the caller holds
        if not only_restored(self.store.objects, mark, live):
            if replacing:
                self.notify(f"an interrupted {mark.describe()} is replaced by this command "
                            "(the world as it was is snapshotted first)")
            return
        from .restore import prepare_restore

        try:
            ops = prepare_restore(self.store.objects, self.world, live, mark.target)
            result = self._apply_pending(ops, None, None, mark)
        except (DecodeError, RegionError) as exc:
            # The target itself cannot be written: retrying on every command would lock the
            # world up. Give up on it once, loudly.
            self.store.apply(Update(meta={PENDING_RESTORE: None}))
            raise PeerhostError(f"an interrupted restore of {self.world} cannot be finished "
                                f"({exc}); the world is partly restored: restore or roll back "
                                "to a snapshot you trust") from exc
        self.notify(f"finished an interrupted {mark.describe()}: {result.written} files "
                    f"written, {result.removed} removed")

    def abort_restore(self) -> AbortResult:
        """Drop an interrupted restore: head goes back to where the restore found it, unless
        play was snapshotted on top since (head then stays: it holds that play); the world is
        not touched. Raises NotFound when no restore is pending."""
        with self.lock():
            mark = self.pending_restore()
            if mark is None:
                raise NotFound(f"there is no interrupted restore in {self.world} to abort")
            head = self.head()
            refs: list[tuple[str, ObjectId | None, ObjectId | None]] = []
            if head == mark.after and head != mark.before:
                refs, head = [(HEAD, head, mark.before)], mark.before
            self.store.apply(Update(refs=refs, meta={PENDING_RESTORE: None}))
            return AbortResult(mark, head)

    # -- diff, checkout, restore, rollback ------------------------------------------------

    def diff(
        self, old: ObjectId | None, new: ObjectId | None, *, classify: bool = True
    ) -> Iterator[Change]:
        """Changes from snapshot ``old`` to snapshot ``new`` (None: the live world, scanned
        into the store, or in memory when it is read-only)."""
        reader: ObjectLoader = self.store.objects
        live = None
        if old is None or new is None:
            live, reader = self._scan_live()
        old_tree, new_tree = (live if s is None else self.read_snapshot(s).root
                              for s in (old, new))
        from .diff import diff_worlds
        return diff_worlds(reader, old_tree, new_tree, classify=classify)

    def _scan_live(self) -> tuple[ObjectId, ObjectLoader]:
        """The live world's root and what reads its tree. A writable store keeps the scan
        (objects and stat cache, under the lock: the next snapshot reads less); a read-only
        one is left alone, and what the stat cache did not cover (changed files) is held in
        memory over it."""
        if not self.readonly:
            return self.scan().root, self.store.objects
        scratch = MemoryStore()
        with ObjectWriter(scratch) as writer:
            result = scan_world(self.world, writer, self.store.stats.load())
            objects = writer.take()
        scratch.apply(Update(hashed=objects))
        return result.root, Overlay(scratch.backend.data, self.store.objects)

    def checkout(self, snapshot: ObjectId, folder: Path, progress: Progress | None = None) -> RestoreResult:
        """Write a snapshot into ``folder``, which must be missing or empty."""
        from .restore import checkout_tree
        return checkout_tree(self.store.objects, self.read_snapshot(snapshot).root, folder, progress=progress)

    def restore(
        self, snapshot: ObjectId, progress: Progress | None = None, *,
        only: Selection | None = None,
    ) -> tuple[ObjectId | None, RestoreResult]:
        """Make the world hold ``snapshot`` (with ``only``: that part of it, an
        :class:`~peerhost_store.area.Area` or a :class:`~peerhost_store.area.Player`; the
        world keeps everything else), touching only files that differ.

        Unsnapshotted changes are snapshotted first (returned as the safety snapshot) so
        nothing is lost; head stays where it is otherwise.

        Raises:
            GraftRefused: with ``only``, a region file of the area is damaged.
        """
        with self.lock():
            safety, live = self._safety_snapshot(f"safety snapshot before restoring {snapshot.hex()[:12]}")
            target, objects = self._target(snapshot, live, only)
            self.store.apply(Update(hashed=objects))  # unreachable until the mark names them
            from .restore import prepare_restore
            ops = prepare_restore(self.store.objects, self.world, live, target)
            head = self.head()
            mark = PendingRestore(target, live, head, head, snapshot, "restore")
            self.store.apply(Update(meta={PENDING_RESTORE: mark.encode()}))
            return safety, self._apply_pending(ops, None, progress, mark)

    def rollback(self, snapshot: ObjectId, progress: Progress | None = None, *,
                 only: Selection | None = None) -> RollbackResult:
        """Make head a new snapshot holding ``snapshot``'s tree and restore the world to it.
        With ``only`` (an area or a player), the new snapshot holds head's tree except that
        part, which comes from ``snapshot`` (built by tree surgery: it costs the part, not the
        world).

        History is kept (the rollback itself can be rolled back); unsnapshotted changes are
        snapshotted first.

        Raises:
            NothingToRollBack: the world (head, once snapshotted) already holds that tree.
            GraftRefused: with ``only``, a region file of the area is damaged.
        """
        with self.lock():
            safety, live = self._safety_snapshot(f"safety snapshot before rollback to {snapshot.hex()[:12]}")
            target, objects = self._target(snapshot, live, only)
            if target == live:
                raise NothingToRollBack(snapshot, self.head())
            self.store.apply(Update(hashed=objects))  # unreachable until the head names them
            from .restore import prepare_restore
            ops = prepare_restore(self.store.objects, self.world, live, target)  # refuse before head moves
            previous = self.head()
            what = "" if only is None else f" of {only.describe()}"
            oid = self._commit_tree(target, f"rollback{what} to {snapshot.hex()[:12]}",
                                    restoring=("rollback", snapshot, live))
            restored = self._apply_pending(ops, None, progress, self._mark())
            return RollbackResult(safety, oid, restored, previous)

    def _target(self, snapshot: ObjectId, live: ObjectId, only: Selection | None
                ) -> tuple[ObjectId, list[tuple[ObjectId, bytes]]]:
        """The tree a restore of ``snapshot`` (or of its part ``only``) writes over ``live``,
        and the new nodes that tree needs."""
        source = self.read_snapshot(snapshot).root
        if only is None:
            return source, []
        with ObjectWriter(self.store) as writer:
            target = only.graft(self.store.objects, writer.add, live, source)
            return target, writer.take()

    def reconcile(self, other: ObjectId, *, keep_other: bool,
                  progress: Progress | None = None) -> RollbackResult:
        """End a divergence from ``other`` (a stored snapshot, e.g. a session's head): a new
        head whose parents are head and ``other``, holding ``other``'s world (``keep_other``)
        or head's. Both histories stay reachable from it, and a session whose head is
        ``other`` takes it as a fast-forward. Unsnapshotted changes are snapshotted first.

        Raises:
            NotFound: there is no head, or ``other`` is not stored.
        """
        with self.lock():
            if self.head() is None:
                raise NotFound("there is no local snapshot to reconcile")
            safety, live = self._safety_snapshot(f"safety snapshot before reconciling with "
                                                 f"{other.hex()[:12]}")
            head = self.head()
            assert head is not None
            kept = other if keep_other else head
            target = self.read_snapshot(kept).root
            from .restore import prepare_restore
            ops = prepare_restore(self.store.objects, self.world, live, target)  # refuse before head moves
            which = "theirs" if keep_other else "ours"
            oid = self._commit_tree(target, f"reconcile with {other.hex()[:12]}: kept "
                                    f"{kept.hex()[:12]} ({which})", (other,),
                                    restoring=("reconcile", kept, live))
            restored = self._apply_pending(ops, None, progress, self._mark())
            return RollbackResult(safety, oid, restored, head)

    def take_changes(self, theirs: ObjectId, base: ObjectId,
                     progress: Progress | None = None) -> RollbackResult:
        """Keep this world's play and take what ``theirs`` changed since ``base`` (a snapshot
        both descend from): a new head whose parents are head and ``theirs``, holding head's
        world with every chunk and file that changed from ``base`` to ``theirs`` as
        ``theirs`` has it (``theirs`` wins where both changed). A session whose head is
        ``theirs`` takes it as a fast-forward. A host uses it to take an area rollback made on
        the coordinator while it kept playing. Unsnapshotted changes are snapshotted first.

        Raises:
            NotFound: there is no head, or ``theirs`` or ``base`` is not stored.
        """
        with self.lock():
            if self.head() is None:
                raise NotFound("there is no local snapshot to take changes into")
            safety, live = self._safety_snapshot(f"safety snapshot before taking "
                                                 f"{theirs.hex()[:12]}")
            head = self.head()
            from .area import carry
            from .restore import prepare_restore
            with ObjectWriter(self.store) as writer:
                target = carry(self.store.objects, writer.add, live,
                               self.read_snapshot(base).root, self.read_snapshot(theirs).root)
                objects = writer.take()
            self.store.apply(Update(hashed=objects))  # unreachable until the head moves
            ops = prepare_restore(self.store.objects, self.world, live, target)
            oid = self._commit_tree(target, f"took the changes of {theirs.hex()[:12]} since "
                                    f"{base.hex()[:12]} (kept the play here)", (theirs,),
                                    restoring=("reconcile", theirs, live))
            restored = self._apply_pending(ops, None, progress, self._mark())
            return RollbackResult(safety, oid, restored, head)

    def _mark(self) -> PendingRestore:
        mark = self.pending_restore()
        assert mark is not None, "recorded with the head move just before"
        return mark

    def _safety_snapshot(self, message: str) -> tuple[ObjectId | None, ObjectId]:
        head = self.head()
        result = self._snapshot(message, False, None, None, replacing=True)
        return (result.oid if result.created and head is not None else None), result.snapshot.root

    # -- maintenance ----------------------------------------------------------------------

    def verify(self, on_read: Callable[[int], None] | None = None) -> WalkReport:
        """Re-hash every object reachable from every ref; report missing or corrupt ones.

        Args:
            on_read: told the bytes read so far, as the walk goes (a progress bar).
        """
        from .graph import walk
        from .maintenance import load_shallow
        return walk(self.store.objects, [oid for _, oid in self.store.refs.items()],
                    shallow=load_shallow(self.store), on_read=on_read)

    def gc(self, keep_last: int | None = None, *, dry_run: bool = False) -> GcReport:
        """Delete objects that no retained snapshot reaches, then compact the store's file
        (:meth:`~peerhost_store.store.Store.compact`) so that it shrinks.

        Args:
            keep_last: keep only the newest N snapshots of each ref (None keeps all history).
            dry_run: only report what would be deleted (objects and bytes).
        """
        if keep_last is not None and keep_last < 1:
            raise PeerhostError("gc keeps at least one snapshot")
        with self.lock():
            measured = self.store.compact(dry_run=True)
            report = self._collect(keep_last, dry_run)
            done = self.store.compact(dry_run=dry_run)
            if measured is None or done is None:
                return report
            return dataclasses.replace(report, file_bytes_before=measured.before,
                                       file_bytes_after=done.after, compacted=done.done,
                                       note=done.note)

    def _collect(self, keep_last: int | None, dry_run: bool) -> GcReport:
        """gc's deletion (under the lock), walked again while a pull keeps changing pins."""
        from .maintenance import GC_TRIES, GcBusy, collect_garbage
        for _ in range(GC_TRIES):
            pins = self.store.load_pins()  # before the refs: see collect_garbage
            retained: list[ObjectId] = []
            for _, ref in self.store.refs.items():  # noqa: PERF102 - a list of pairs, no dict
                for i, (oid, _) in enumerate(self.log(ref)):
                    if keep_last is not None and i >= keep_last:
                        break
                    if oid not in retained:
                        retained.append(oid)
            pending = self.pending_restore()
            keep = [pending.source, pending.target] if pending else []
            try:
                return collect_garbage(self.store, retained, keep=keep, pins=pins,
                                       dry_run=dry_run)
            except PinsChanged:
                continue  # a pull pinned objects or moved its ref meanwhile
        raise GcBusy(f"gc gave up after {GC_TRIES} walks: a pull kept changing what it "
                     "protects; nothing was deleted; run gc again when it has finished")


def _author() -> str:
    try:
        return os.environ.get("PHS_AUTHOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _writable(folder: Path) -> bool:
    """Whether this process may write ``folder`` and the files in it (false on a read-only
    file system, whoever we are)."""
    effective = os.access in os.supports_effective_ids
    return all(os.access(p, os.W_OK, effective_ids=effective)
               for p in (folder, *(f for f in folder.iterdir() if f.is_file())))
