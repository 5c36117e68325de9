"""The durable store: one LMDB environment. The only module that imports lmdb.

Durability: every :meth:`LmdbStore.apply` is one LMDB write transaction committed with fsync
(LMDB's default ``sync=True``), so once it returns its effects survive kill -9 and power loss,
and a crash before it returns leaves the previous state intact (LMDB is copy-on-write).
The memory map starts small (it is preallocated on Windows) and doubles whenever a
transaction finds it full; the failed transaction is retried, never half-applied.

Layout. Objects are *packed* (with ``pack_min``, only those at least that long; shorter ones
are values of the ``objects`` database, keyed by id): the objects one update writes are
concatenated into packs of about :data:`PACK_BYTES`, each one value of ``packs`` (keyed by an
8-byte number that only grows), and ``packed`` maps each id to ``(pack, offset, length)``. A
value longer than a page takes whole overflow pages, so a chunk of 9 KB stored alone takes
12 KiB; a pack of 1 MiB wastes under 4 KiB. Packs are never changed: ``packlive`` counts the
objects and bytes of each that are still indexed; a pack is deleted with its last object, and
one less than half alive is rewritten (its live objects go to a new pack) when a deletion
leaves it so. Stores written before packing (every object in ``objects``) are read as they
are; their objects stay where they are until gc deletes them.

A staged update (:attr:`Update.staged`: a snapshot's early batches) writes its packs and,
instead of index entries, one ``staged`` row per pack listing what it holds; the next update
that is not staged indexes them first (an object found indexed already, a copy written by
two batches, is released). So those commits only append, and the index, whose random keys
would make every commit rewrite most of its pages, is written once per snapshot.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import os
import shutil
import struct
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Self, TypeVar

import lmdb

from ..errors import ObjectMissing, StoreDamaged, StoreError
from ..ids import ObjectId, hash_bytes
from ..lock import ByteLock, FileLock, Locked
from ._base import Compaction, Pins, PinsChanged, RefConflict, Update, Verified

T = TypeVar("T")

MIN_MAP_SIZE = 256 << 20
MAX_MAP_SIZE = 1 << 44  # 16 TiB of address space: far beyond any world
#: Meta key of the pin generation (8 bytes, big-endian).
PIN_GENERATION = "pins/generation"
#: Meta key of the next pack number (8 bytes, big-endian).
PACK_NEXT = "packs/next"
#: Objects at least this long are packed: all of them, so that staged commits only append
#: (tree nodes, in LMDB's leaf pages, would be rewritten by each).
PACK_MIN = 0
#: A pack is closed once it holds this much.
PACK_BYTES = 1 << 20
#: ``staged`` rows: id, offset, length of each object of the pack.
_STAGED = struct.Struct(">32sII")
#: ``packed`` values: pack number, offset, length.
_LOCATION = struct.Struct(">QII")
#: ``packlive`` values: objects and bytes of the pack still indexed.
_LIVE = struct.Struct(">IQ")
#: The databases of the environment. Pins' keys: pin name, "/", object id; their values
#: b"\x01" for a tree node, b"\x00" otherwise.
DATABASES = (b"objects", b"refs", b"stats", b"meta", b"pins", b"packed", b"packs", b"packlive",
             b"staged")
#: What LMDB raises when its file's pages do not hold what they should.
DAMAGE = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError, lmdb.BadDbiError,
          lmdb.BadValsizeError, lmdb.PageFullError, lmdb.VersionMismatchError)


class ReadOnlyStore(StoreError):
    """A write was asked of a store opened read-only; nothing was written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"the store at {path} is open read-only; nothing was written")


class LmdbStore:
    """A :class:`~peerhost_store.store.Store` in an LMDB environment folder: objects (indexed
    or packed), refs, stat cache, meta and pins in the databases of one environment, each
    :meth:`apply` one transaction.

    Args:
        readonly: open it for reading only: nothing in the folder is created, and every
            write raises :class:`ReadOnlyStore`. Where LMDB's lock file can be written, the
            reader registers in it as usual, so writers in other processes never reuse
            pages it reads. Where it cannot (a read-only mount, a folder of another user),
            the store is read without it (LMDB's ``lock=False``): then a writer elsewhere
            (through another mount) could reuse pages under a long read, which reads would
            see as damaged or corrupt objects (every object is re-hashed on read), never as
            good data.
        map_size: the initial size of the memory map (default: from the file's size).
        pack_min: objects at least this long are packed; None packs nothing (the layout of
            stores written before packing, which tests use to make one).
    """

    def __init__(self, path: Path | str, *, map_size: int | None = None,
                 pack_min: int | None = PACK_MIN, readonly: bool = False) -> None:
        self.path = Path(path)
        self.pack_min = pack_min
        self.readonly = readonly
        self._map_size = map_size
        self._lock = threading.Lock()  # one write transaction at a time
        self._gate = _ResizeGate()
        #: Pins this handle owns, each with the lock on its file that says its owner lives.
        self._pin_locks: dict[str, FileLock] = {}
        self._open()
        self._key = os.path.realpath(self.path)
        with _HANDLES_LOCK:
            _HANDLES[self._key] = _HANDLES.get(self._key, 0) + 1
        self._closed = False
        self.backend = _Objects(self)
        self._verified = Verified(self.backend, f"store {self.path}")
        self._views = (_Refs(self), _Stats(self), _Meta(self))

    def _open(self, *, gated: bool = True) -> None:
        """Open the environment and its databases (``_env``, ``_objects``, ...), holding the
        store's gate while LMDB opens it unless the caller holds it (see :meth:`compact`)."""
        readonly = self.readonly
        gate: FileLock | None = None
        try:
            if not readonly:
                self.path.mkdir(parents=True, exist_ok=True)
            data_file = self.path / "data.mdb"
            on_disk = data_file.stat().st_size if data_file.exists() else 0
            size = self._map_size or max(MIN_MAP_SIZE, _round_up(2 * on_disk))
            locking = not readonly or _writable(self.path / "lock.mdb")
            if locking:
                _back_lock_file(self.path / "lock.mdb")
                # Never wait inside LMDB's own open while a compaction swaps the file: a
                # waiter there would read LMDB's lock file as it was before the swap.
                gate = _enter_gate(self.path, readonly) if gated else None
            self._env = lmdb.open(str(self.path), map_size=size, max_dbs=len(DATABASES),
                                  subdir=True, sync=True, metasync=True, readonly=readonly,
                                  lock=locking, create=not readonly)
        except DAMAGE as exc:
            raise StoreDamaged(self.path, str(exc)) from exc
        except (OSError, lmdb.Error) as exc:
            what = f"cannot open the store at {self.path}"
            if not readonly and getattr(exc, "errno", None) in (errno.EROFS, errno.EACCES):
                what += (" for writing (phs log, diff, verify and checkout still work: they "
                         "open it read-only)")
            raise StoreError(_describe(self.path, exc, what)) from exc
        finally:
            if gate is not None:
                gate.__exit__(None, None, None)
        name = b""
        try:
            dbs = []
            for name in DATABASES:  # a write on a new store; read-only, each must be there
                dbs.append(self._env.open_db(name, create=not readonly))
            (self._objects, self._refs, self._stats, self._meta, self._pins, self._packed, self._packs,
             self._packlive, self._staged) = dbs
        except lmdb.NotFoundError as exc:
            self._env.close()
            raise StoreError(f"the store at {self.path} has no {name.decode()!r} table: an "
                             "older phs made it (open it once where it can be written, with "
                             "phs snapshot), or it is damaged") from exc
        except lmdb.Error as exc:
            self._env.close()
            if isinstance(exc, DAMAGE) or not _is_disk_full(self.path, exc):
                # The main database names the others: a damaged page.
                raise StoreDamaged(self.path, str(exc)) from exc
            raise StoreError(_describe(self.path, exc, f"cannot open the store at {self.path}")
                             ) from exc
        self._size = on_disk

    @property
    def objects(self) -> Verified:
        return self._verified

    @property
    def refs(self) -> _Refs:
        return self._views[0]

    @property
    def stats(self) -> _Stats:
        return self._views[1]

    @property
    def meta(self) -> _Meta:
        return self._views[2]

    # -- reads --------------------------------------------------------------------------

    def _read(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        for _ in range(3):
            try:
                # buffers: values are views of the map until copied, so a damaged length is
                # seen (_value) before any byte past the end of the file is touched (SIGBUS).
                with self._gate.shared(), self._env.begin(buffers=True) as txn:
                    return fn(txn)
            except lmdb.MapResizedError:
                # Another process grew the map; adopt its size and read again.
                with self._gate.exclusive():
                    self._env.set_mapsize(0)
            except (*DAMAGE, UnicodeDecodeError) as exc:
                raise StoreDamaged(self.path, str(exc)) from exc
            except lmdb.Error as exc:
                raise StoreError(f"reading the store at {self.path} failed: {exc}") from exc
        raise StoreError(f"the store at {self.path} keeps being resized under us")

    def _value(self, value: memoryview | bytes | None) -> bytes | None:
        """A value read in :meth:`_read`, copied out of the map once its length is sane."""
        if value is None:
            return None
        self._check_length(value)
        return bytes(value)

    def _check_length(self, value: memoryview | bytes) -> None:
        if len(value) > self._size:
            # The file has grown since we last looked, or the length is damaged.
            with contextlib.suppress(OSError):
                self._size = (self.path / "data.mdb").stat().st_size
            if len(value) > self._size:
                raise StoreDamaged(self.path, f"a value claims {len(value)} bytes, more than "
                                   "the file holds")

    def _object(self, txn: lmdb.Transaction, oid: bytes | memoryview,
                packs: dict[int, bytes | memoryview] | None = None
                ) -> bytes | memoryview | None:
        """An object's stored bytes as a view of the map (not copied), or None. ``packs``
        keeps the packs this transaction has looked up (neighbours share one)."""
        where = txn.get(oid, db=self._packed)
        if where is None:
            value: bytes | memoryview | None = txn.get(oid, db=self._objects)
            return value
        number, offset, length = self._location(where)
        pack: bytes | memoryview | None = None if packs is None else packs.get(number)
        if pack is None:
            pack = txn.get(number.to_bytes(8, "big"), db=self._packs)
            if pack is None:
                raise StoreDamaged(self.path, f"object {bytes(oid).hex()} is in pack "
                                   f"{number}, which is missing")
            self._check_length(pack)
            if packs is not None:
                packs[number] = pack
        if offset + length > len(pack):
            raise StoreDamaged(self.path, f"object {bytes(oid).hex()} runs past the end of "
                               f"pack {number}")
        return pack[offset:offset + length]

    def _location(self, value: memoryview | bytes) -> tuple[int, int, int]:
        if len(value) != _LOCATION.size:
            raise StoreDamaged(self.path, f"a pack location of {len(value)} bytes")
        number, offset, length = _LOCATION.unpack(value)
        return number, offset, length

    def _has(self, txn: lmdb.Transaction, oid: bytes) -> bool:
        return (txn.get(oid, db=self._packed) is not None
                or txn.get(oid, db=self._objects) is not None)

    def read_objects(self, oids: Sequence[ObjectId]) -> list[bytes | None]:
        """The stored bytes of each id (None when absent), unchecked."""
        def run(txn: lmdb.Transaction) -> list[bytes | None]:
            # The loop of _object written out: a restore reads every chunk through here
            # (twice: checked, then written), and the calls cost more than the copies.
            packs: dict[int, bytes | memoryview] = {}
            out: list[bytes | None] = []
            get, packed, unpack = txn.get, self._packed, _LOCATION.unpack
            for oid in oids:
                where = get(oid, db=packed)
                if where is None or len(where) != _LOCATION.size:
                    value = self._object(txn, oid, packs)  # inline, or a damaged location
                    if value is not None and len(value) > self._size:
                        self._check_length(value)
                    out.append(None if value is None else bytes(value))
                    continue
                number, offset, length = unpack(where)
                pack = packs.get(number)
                if pack is None or offset + length > len(pack):
                    value = self._object(txn, oid, packs)  # looks the pack up, or raises
                    assert value is not None
                    out.append(bytes(value))
                    continue
                out.append(bytes(pack[offset:offset + length]))
            return out

        return self._read(run)

    def hash_objects(self, oids: Sequence[ObjectId]) -> list[ObjectId | None]:
        """The blake3 id of each object's stored bytes (None when absent), hashed where they
        lie in the map, not copied out: a restore checks every object before it writes."""
        def run(txn: lmdb.Transaction) -> list[ObjectId | None]:
            packs: dict[int, bytes | memoryview] = {}
            out: list[ObjectId | None] = []
            for oid in oids:
                value = self._object(txn, oid, packs)
                if value is not None and len(value) > self._size:
                    self._check_length(value)
                out.append(None if value is None else hash_bytes(value))
            return out

        return self._read(run)

    def peek(self, oids: list[ObjectId], n: int) -> list[tuple[int, bytes] | None]:
        """Each object's stored size and first ``n`` bytes (None when absent), not hashed:
        the coordinator sizes every blob a new tree reaches (one at a time, so a batch of
        large files is never in memory at once; neighbours share their pack's lookup)."""
        def run(txn: lmdb.Transaction) -> list[tuple[int, bytes] | None]:
            packs: dict[int, bytes | memoryview] = {}  # views of the map, not copies
            out: list[tuple[int, bytes] | None] = []
            for oid in oids:
                value = self._object(txn, oid, packs)
                if value is not None:
                    self._check_length(value)
                out.append(None if value is None else (len(value), bytes(value[:n])))
            return out

        return self._read(run)

    def _ref(self, name: str, value: bytes) -> ObjectId:
        if len(value) != 32:
            raise StoreDamaged(self.path, f"ref {name!r} holds {len(value)} bytes, not an id")
        return ObjectId(value)

    # -- writes -------------------------------------------------------------------------

    def apply(self, update: Update) -> int:
        if self.readonly:
            raise ReadOnlyStore(self.path)
        # Hash outside the transaction: the write lock is held only for the puts.
        objects = update.all_objects()
        with self._lock:
            for _ in range(64):
                try:
                    with self._gate.shared(), self._env.begin(write=True) as txn:
                        new = self._apply(txn, update, objects)
                    self._release_pins(name for name, ids in update.pins.items() if ids is None)
                    return new
                except lmdb.MapFullError:
                    self._grow()
                except lmdb.MapResizedError:
                    with self._gate.exclusive():
                        self._env.set_mapsize(0)
                except DAMAGE as exc:
                    raise StoreDamaged(self.path, f"{exc}; nothing was written") from exc
                except lmdb.Error as exc:
                    raise StoreError(_describe(self.path, exc)) from exc
        raise StoreError(f"the store at {self.path} could not grow its map")

    def _apply(
        self, txn: lmdb.Transaction, update: Update,
        objects: list[tuple[ObjectId, bytes | memoryview]],
    ) -> int:
        for name, expected, _ in update.refs:
            raw = txn.get(name.encode(), db=self._refs)
            actual = None if raw is None else ObjectId(bytes(raw))
            if actual != expected:
                raise RefConflict(name, expected, actual)
        generation = _generation(txn.get(PIN_GENERATION.encode(), db=self._meta))
        if update.pins_at is not None and update.pins_at != generation:
            raise PinsChanged(update.pins_at, generation)
        packer = _Packer(self, txn, staged=update.staged)
        if not update.staged:
            packer.index_staged()
        # Nothing indexed (a first snapshot, up to its last update): no object is looked up.
        empty = self._index_empty(txn)
        new = sum(1 for oid, data in objects if self._put_object(txn, oid, data, packer, empty))
        packer.close()
        packer.flush()
        for oid in update.delete_objects:
            self._delete_object(txn, oid, packer)
        packer.repack_sparse()
        for oid in update.require:  # an exception here aborts the whole transaction
            if not self._has(txn, oid):
                raise ObjectMissing(oid, "an update that requires it")
        if self._apply_pins(txn, update.pins):
            txn.put(PIN_GENERATION.encode(), (generation + 1).to_bytes(8, "big"), db=self._meta)
        for name, _, target in update.refs:
            if target is None:
                txn.delete(name.encode(), db=self._refs)
            else:
                txn.put(name.encode(), target, db=self._refs)
        if update.clear_stats:
            txn.drop(self._stats, delete=False)
        _put_all(txn, self._stats, update.stats)
        _put_all(txn, self._meta, update.meta)
        return new

    def _index_empty(self, txn: lmdb.Transaction) -> bool:
        """Whether no object is indexed (staged ones are not, until the next update)."""
        return not (txn.stat(self._packed)["entries"] or txn.stat(self._objects)["entries"])

    def _put_object(self, txn: lmdb.Transaction, oid: ObjectId, data: bytes | memoryview,
                    packer: _Packer, empty: bool = False) -> bool:
        if oid in packer.placed:
            return False  # in a pack this transaction wrote, from bytes hashed to ``oid``
        stored = packer.pending.get(oid)
        if stored is None and not empty:
            stored = self._object(txn, oid)
        if stored is not None:
            if stored == data:
                return False
            # The stored bytes differ from these, which hash to ``oid``: they are corrupt.
            if oid in packer.pending:
                packer.replace(oid, data)
                return True
            self._delete_object(txn, oid, packer)
        if self.pack_min is not None and len(data) >= self.pack_min:
            packer.add(oid, data)
        else:
            txn.put(oid, data, db=self._objects)
        return True

    def _delete_object(self, txn: lmdb.Transaction, oid: ObjectId, packer: _Packer) -> None:
        if txn.delete(oid, db=self._objects):
            return
        where = txn.get(oid, db=self._packed)
        if where is not None:
            number, _, length = self._location(where)
            txn.delete(oid, db=self._packed)
            packer.release(number, length)

    def _apply_pins(self, txn: lmdb.Transaction,
                    pins: dict[str, Sequence[tuple[ObjectId, bool]] | None]) -> bool:
        """Add or drop pins; return whether anything changed."""
        changed = False
        for name, pinned in pins.items():
            prefix = name.encode() + b"/"
            if pinned is None:
                cursor = txn.cursor(db=self._pins)
                found = cursor.set_range(prefix)
                while found and bytes(cursor.key()).startswith(prefix):
                    found = cursor.delete()
                    changed = True
                continue
            for oid, node in pinned:
                txn.put(prefix + oid, b"\x01" if node else b"\x00", db=self._pins)
                changed = True
        return changed

    # -- pins -----------------------------------------------------------------------------

    def new_pin(self) -> str:
        if self.readonly:
            raise ReadOnlyStore(self.path)
        name = uuid.uuid4().hex
        lock = FileLock(self._pin_file(name))
        try:
            self._pin_file(name).parent.mkdir(exist_ok=True)
            lock.__enter__()
        except OSError as exc:
            raise StoreError(f"cannot create a pin in the store at {self.path}: {exc}") from exc
        self._pin_locks[name] = lock
        return name

    def load_pins(self) -> Pins:
        def read(txn: lmdb.Transaction) -> tuple[int, dict[str, dict[ObjectId, bool]]]:
            pins: dict[str, dict[ObjectId, bool]] = {}
            for key, value in txn.cursor(db=self._pins):
                name, oid = bytes(key[:-33]).decode(), ObjectId(bytes(key[-32:]))
                pins.setdefault(name, {})[oid] = value == b"\x01"
            return _generation(txn.get(PIN_GENERATION.encode(), db=self._meta)), pins

        generation, pins = self._read(read)
        ids: dict[ObjectId, bool] = {}
        stale = []
        for name, pinned in sorted(pins.items()):
            if name not in self._pin_locks and not self._pin_owner_lives(name):
                stale.append(name)
                continue
            for oid, node in pinned.items():
                ids[oid] = ids.get(oid, False) or node
        return Pins(generation, ids, stale)

    def _pin_file(self, name: str) -> Path:
        return self.path / "pins" / f"{name}.lock"

    def _pin_owner_lives(self, name: str) -> bool:
        """Whether another handle (another process) holds the lock on the pin's file."""
        path = self._pin_file(name)
        if not path.exists():
            return False
        try:
            with FileLock(path):
                return False
        except Locked:
            return True
        except OSError:
            return True  # cannot tell: keep protecting what it pins

    def _release_pins(self, names: Iterable[str]) -> None:
        for name in names:
            lock = self._pin_locks.pop(name, None)
            if lock is not None:
                lock.__exit__(None, None, None)
            try:
                with FileLock(self._pin_file(name)):
                    self._pin_file(name).unlink()
            except (Locked, OSError):
                pass  # still owned elsewhere, or gone already

    def _grow(self) -> None:
        current = self._env.info()["map_size"]
        if current >= MAX_MAP_SIZE:
            raise StoreError(f"the store at {self.path} reached its size limit ({current} bytes)")
        with self._gate.exclusive():
            self._env.set_mapsize(min(MAX_MAP_SIZE, current * 2))

    def used_bytes(self) -> int:
        """Bytes of the pages live data takes (pages gc freed are not counted: the file does
        not shrink, but they are reused)."""
        def run(txn: lmdb.Transaction) -> int:
            total = 0
            for db in (self._objects, self._refs, self._stats, self._meta, self._packed,
                       self._packs, self._packlive, self._staged):
                st = txn.stat(db)
                total += (st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]) * st["psize"]
            return total

        return self._read(run)

    def map_size(self) -> int:
        """The current size of the memory map in bytes."""
        return int(self._env.info()["map_size"])

    def disk_usage(self) -> int:
        """Bytes the store's data file takes."""
        return (self.path / "data.mdb").stat().st_size

    # -- compaction -----------------------------------------------------------------------

    def live_bytes(self) -> int:
        """What a compacted copy of the file would take: the pages of every database and
        the two meta pages (free pages, and the free list itself, are not copied)."""
        def run(txn: lmdb.Transaction) -> int:
            stats = [self._env.stat()] + [txn.stat(db) for db in self._dbs()]
            pages = sum(st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
                        for st in stats)
            return (pages + 2) * int(stats[0]["psize"])

        return self._read(run)

    def _dbs(self) -> tuple[lmdb._Database, ...]:
        return (self._objects, self._refs, self._stats, self._meta, self._pins, self._packed,
                self._packs, self._packlive, self._staged)

    def compact(self, *, dry_run: bool = False) -> Compaction:
        """Copy the environment without its free pages and swap the copy in (LMDB's file
        never shrinks by itself), when at least :data:`COMPACT_FREE` of the file is free.

        Only while no other process has the store open (LMDB's lock on its lock file says
        so) and no other handle in this one; otherwise nothing changes and ``note`` says
        why. Call it under the world's lock (gc does). What a kill -9 at any moment leaves:
        the old file untouched, or the complete, fsynced copy in its place (``os.replace``
        of a file in the same folder); a half-written copy (``compact.tmp``) is removed by
        the next compaction. Other ``LmdbStore`` handles opening meanwhile wait at the
        store's gate (``open.lock``) until LMDB's lock file describes the new file.
        """
        before = self.disk_usage()
        if dry_run or self.readonly:
            return Compaction(before, before, False, "dry run" if dry_run else "read-only")
        free = before - self.live_bytes()
        with self._lock, self._gate.exclusive():  # no transaction of ours meanwhile
            try:
                gate = FileLock(self.path / GATE).wait(OPEN_WAIT)
            except Locked:
                return Compaction(before, before, False, "another process is opening it")
            try:
                (self.path / COMPACT_TMP).unlink(missing_ok=True)  # a killed one's
                with _HANDLES_LOCK:
                    others = _HANDLES.get(self._key, 0) > 1
                if free < before * COMPACT_FREE:
                    return Compaction(before, before, False,
                                      f"{free} of {before} bytes free: not worth a copy")
                if others:
                    return Compaction(before, before, False, "open elsewhere in this process")
                return self._swap_in_compacted(before)
            finally:
                gate.__exit__(None, None, None)

    def _swap_in_compacted(self, before: int) -> Compaction:
        """:meth:`compact` once the gate is held: the steps, in order."""
        self._env.close()  # on POSIX this also drops our process's lock on lock.mdb
        lock = ByteLock.take(self.path / "lock.mdb")
        if lock is None:
            self._open(gated=False)
            return Compaction(before, before, False, "the store is open in another process")
        tmp = self.path / COMPACT_TMP
        try:
            _write_compacted(self.path, tmp)
            os.replace(tmp, self.path / "data.mdb")  # the one step: old file, or new
        except (OSError, lmdb.Error, StoreError) as exc:
            tmp.unlink(missing_ok=True)
            lock.release()
            self._open(gated=False)
            return Compaction(before, before, False, f"not compacted: {exc}")
        _sync_folder(self.path)
        _reinit_lock_file(self, lock)
        self._size = after = self.disk_usage()
        return Compaction(before, after, True)

    def close(self) -> None:
        for lock in self._pin_locks.values():
            lock.__exit__(None, None, None)  # what it pinned is stale from now on
        self._pin_locks.clear()
        self._env.close()
        if not self._closed:
            self._closed = True
            with _HANDLES_LOCK:
                _HANDLES[self._key] -= 1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Objects:
    """The objects database as an :class:`~peerhost_store.store.ObjectStore` (unchecked)."""

    def __init__(self, store: LmdbStore) -> None:
        self._store = store

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]:
        datas = self._store.read_objects(oids)
        for oid, data in zip(oids, datas, strict=True):
            if data is None:
                raise ObjectMissing(oid)
        return datas  # type: ignore[return-value]  # no None left

    def hashes(self, oids: Sequence[ObjectId]) -> list[ObjectId | None]:
        """Each object's id as its stored bytes hash (None when absent), without copying
        them (:meth:`Verified.check_many`)."""
        return self._store.hash_objects(oids)

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        store, wanted = self._store, list(oids)
        return store._read(lambda txn: wanted if store._index_empty(txn)
                           else [oid for oid in wanted if not store._has(txn, oid)])

    def put_many(self, objects: Sequence[tuple[ObjectId, bytes | memoryview]]) -> int:
        return self._store.apply(Update(hashed=list(objects)))

    def delete_many(self, oids: Sequence[ObjectId]) -> None:
        self._store.apply(Update(delete_objects=list(oids)))

    def iter_ids(self) -> Iterator[ObjectId]:
        store = self._store

        def keys(txn: lmdb.Transaction, db: lmdb._Database) -> list[ObjectId]:
            return [ObjectId(bytes(k)) for k in txn.cursor(db=db).iternext(values=False)]

        inline, packed = store._read(lambda txn: (keys(txn, store._objects),
                                                  keys(txn, store._packed)))
        return heapq.merge(inline, packed)

    def sizes(self, oids: Sequence[ObjectId]) -> list[int | None]:
        store = self._store

        def run(txn: lmdb.Transaction) -> list[int | None]:
            out: list[int | None] = []
            for oid in oids:
                where = txn.get(oid, db=store._packed)
                if where is not None:  # a packed object: its index entry has its length
                    out.append(store._location(where)[2])
                    continue
                # A view of the map: its length is known without touching its pages.
                value = txn.get(oid, db=store._objects)
                out.append(None if value is None else len(value))
            return out

        return store._read(run)


class _Refs:
    def __init__(self, store: LmdbStore) -> None:
        self._store = store

    def get(self, name: str) -> ObjectId | None:
        store = self._store
        value = store._read(lambda txn: store._value(txn.get(name.encode(), db=store._refs)))
        return None if value is None else store._ref(name, value)

    def items(self) -> list[tuple[str, ObjectId]]:
        store = self._store
        rows = store._read(lambda txn: [(bytes(k).decode(), store._value(v))
                                        for k, v in txn.cursor(db=store._refs)])
        return [(name, store._ref(name, value)) for name, value in rows if value is not None]

    def set_if_equals(self, name: str, expected: ObjectId | None, new: ObjectId | None) -> None:
        self._store.apply(Update(refs=[(name, expected, new)]))


class _Stats:
    def __init__(self, store: LmdbStore) -> None:
        self._store = store

    def load(self) -> dict[str, bytes]:
        store = self._store
        return store._read(lambda txn: {bytes(k).decode(): store._value(v) or b""
                                        for k, v in txn.cursor(db=store._stats)})

    def update(self, changes: Mapping[str, bytes | None], *, clear: bool = False) -> None:
        self._store.apply(Update(stats=dict(changes), clear_stats=clear))


class _Meta:
    def __init__(self, store: LmdbStore) -> None:
        self._store = store

    def get(self, key: str) -> bytes | None:
        store = self._store
        return store._read(lambda txn: store._value(txn.get(key.encode(), db=store._meta)))

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Each key's value (None: absent), read in one transaction."""
        store = self._store
        return store._read(lambda txn: [store._value(txn.get(key.encode(), db=store._meta))
                                        for key in keys])

    def update(self, changes: Mapping[str, bytes | None]) -> None:
        self._store.apply(Update(meta=dict(changes)))

    def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every ``(key, value)`` whose key starts with ``prefix``, in key order."""
        store = self._store
        start = prefix.encode()

        def read(txn: lmdb.Transaction) -> list[tuple[str, bytes]]:
            out = []
            cursor = txn.cursor(db=store._meta)
            found = cursor.set_range(start)
            while found and bytes(cursor.key()).startswith(start):
                out.append((bytes(cursor.key()).decode(), store._value(cursor.value()) or b""))
                found = cursor.next()
            return out

        return store._read(read)


class _Packer:
    """Packs the long objects of one transaction (see the module's docstring)."""

    def __init__(self, store: LmdbStore, txn: lmdb.Transaction, *, staged: bool) -> None:
        self.store = store
        self.txn = txn
        self.staged = staged
        #: Objects added and not yet written, by id.
        self.pending: dict[ObjectId, bytes | memoryview] = {}
        #: Index rows of the packs written and not yet indexed, by id (see :meth:`flush`).
        self.placed: dict[ObjectId, bytes] = {}
        self._size = 0
        self._sparse: set[int] = set()

    def add(self, oid: ObjectId, data: bytes | memoryview) -> None:
        self.pending[oid] = data
        self._size += len(data)
        if self._size >= PACK_BYTES:
            self.close()

    def replace(self, oid: ObjectId, data: bytes | memoryview) -> None:
        self._size += len(data) - len(self.pending[oid])
        self.pending[oid] = data

    def close(self) -> None:
        """Write the pending objects as one pack."""
        if not self.pending:
            return
        store, txn = self.store, self.txn
        meta = txn.get(PACK_NEXT.encode(), db=store._meta)
        number = 0 if meta is None else int.from_bytes(meta, "big")
        cursor = txn.cursor(db=store._packs)
        if cursor.last():  # never reuse a number, whatever meta says
            number = max(number, int.from_bytes(cursor.key(), "big") + 1)
        key = number.to_bytes(8, "big")
        offset = 0
        rows = []
        for oid, data in self.pending.items():
            if self.staged:
                rows.append(_STAGED.pack(oid, offset, len(data)))
            else:
                self.placed[oid] = _LOCATION.pack(number, offset, len(data))
            offset += len(data)
        if rows:  # sorted by id (their first bytes): index_staged merges the packs' lists
            rows.sort()
            txn.put(key, b"".join(rows), db=store._staged, append=True)
        txn.put(key, b"".join(self.pending.values()), db=store._packs, append=True)
        txn.put(key, _LIVE.pack(len(self.pending), offset), db=store._packlive)
        txn.put(PACK_NEXT.encode(), (number + 1).to_bytes(8, "big"), db=store._meta)
        self.pending = {}
        self._size = 0

    def flush(self) -> None:
        """Index the objects of the packs written since the last flush, in id order.

        Once per transaction rather than per pack: index rows put between the puts of packs
        made LMDB write about 300 MiB per 16 MiB commit once the index held 10^5 ids (its
        page allocation for each pack's overflow pages, amid the index's freed pages); the
        same rows put after the packs cost a fifth of that, sorted less."""
        if self.placed:
            rows = sorted(self.placed.items())
            self.txn.cursor(db=self.store._packed).putmulti(rows)
            self.placed = {}

    def index_staged(self) -> None:
        """Index the objects of staged packs (see the module's docstring): each pack's list
        is sorted by id (:meth:`close` writes it so), so one merge of all of them gives every
        id in order, a row at a time (memory does not grow with the snapshot), written with
        MDB_APPEND when the index is empty (a first snapshot), which fills its pages."""
        store, txn = self.store, self.txn
        if not txn.stat(store._staged)["entries"]:
            return
        lists = []
        for key, value in txn.cursor(db=store._staged):
            number = int.from_bytes(key, "big")
            if len(value) % _STAGED.size:
                raise StoreDamaged(store.path, f"the staged list of pack {number} is damaged")
            rows = bytes(value)  # a copy only if LMDB gave a view
            lists.append((number, rows if _sorted_rows(rows) else _sort_rows(rows)))
        empty = store._index_empty(txn)
        released: list[tuple[int, int]] = []

        def fresh() -> Iterator[tuple[bytes, bytes]]:
            previous = None
            rows = heapq.merge(*(_staged_rows(number, value) for number, value in lists))
            for oid, number, offset, length in rows:
                if oid == previous or (not empty and store._has(txn, oid)):
                    released.append((number, length))  # another copy is indexed already
                    continue
                previous = oid
                yield oid, _LOCATION.pack(number, offset, length)

        consumed, added = txn.cursor(db=store._packed).putmulti(fresh(), append=empty)
        if added != consumed:  # an id out of order for MDB_APPEND: never index half of them
            raise StoreError(f"indexing the staged objects of the store at {store.path} "
                             f"added {added} of {consumed}; nothing was written")
        for number, length in released:
            self.release(number, length)
        txn.drop(store._staged, delete=False)

    def release(self, number: int, length: int) -> None:
        """One object of pack ``number`` is no longer indexed."""
        store, txn = self.store, self.txn
        key = number.to_bytes(8, "big")
        live = txn.get(key, db=store._packlive)
        if live is None or len(live) != _LIVE.size:
            raise StoreDamaged(store.path, f"pack {number} has no count of its live objects")
        count, size = _LIVE.unpack(live)
        if count <= 1:
            txn.delete(key, db=store._packs)
            txn.delete(key, db=store._packlive)
            self._sparse.discard(number)
            return
        size = max(0, size - length)
        txn.put(key, _LIVE.pack(count - 1, size), db=store._packlive)
        pack = txn.get(key, db=store._packs)
        if pack is not None and 2 * size < len(pack):
            self._sparse.add(number)

    def repack_sparse(self) -> None:
        """Move the live objects of packs deletions left less than half alive into new packs,
        and delete those packs: the space of what gc deleted is reused."""
        if not self._sparse:
            return
        store, txn = self.store, self.txn
        moving: list[tuple[ObjectId, bytes]] = []
        for key, where in txn.cursor(db=store._packed):
            if store._location(where)[0] in self._sparse:
                stored = store._object(txn, key)
                assert stored is not None
                moving.append((ObjectId(bytes(key)), bytes(stored)))
        for number in self._sparse:
            txn.delete(number.to_bytes(8, "big"), db=store._packs)
            txn.delete(number.to_bytes(8, "big"), db=store._packlive)
        self._sparse = set()
        for oid, data in moving:
            self.add(oid, data)
        self.close()
        self.flush()  # over their old places


class _ResizeGate:
    """Transactions share it; resizing the map takes it alone.

    Resizing invalidates every transaction open in the process (a reader in another thread
    would fail with "closed/deleted/dropped object"), and the coordinator reads in several
    threads while an upload grows the map. Not fair: threads that read back to back without
    pausing can keep a resize waiting (request handlers pause between reads).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = 0
        self._resizing = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._resizing)
            self._open += 1
        try:
            yield
        finally:
            with self._cond:
                self._open -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._resizing)
            self._resizing = True  # new transactions wait from now on
            self._cond.wait_for(lambda: self._open == 0)
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


#: The gate: held while LMDB opens the environment, and by a compaction throughout.
GATE = "open.lock"
#: How long an open waits for a compaction (a copy of the live data) to finish.
OPEN_WAIT = 600.0
#: The compacted copy, written beside ``data.mdb`` before it replaces it.
COMPACT_TMP = "compact.tmp"
#: A compaction is worth its copy once this share of the file is free.
COMPACT_FREE = 1 / 8
#: Open handles in this process, by real path of the store folder: a compaction swaps the
#: file only under the one handle (LMDB: never open one environment twice in a process).
_HANDLES: dict[str, int] = {}
_HANDLES_LOCK = threading.Lock()


def _enter_gate(folder: Path, readonly: bool) -> FileLock | None:
    try:
        return FileLock(folder / GATE).wait(OPEN_WAIT)
    except OSError:
        if readonly:
            return None  # lock.mdb is writable but the folder is not: nothing to gate
        raise


def _write_compacted(folder: Path, tmp: Path) -> None:
    """Write a compacted copy of the environment in ``folder`` to ``tmp`` and fsync it,
    then check it holds what the original holds. Call only while no process has the
    environment open (it is read without LMDB's lock file, which stays untouched)."""
    size = max(MIN_MAP_SIZE, _round_up((folder / "data.mdb").stat().st_size))
    src = lmdb.open(str(folder), map_size=size, max_dbs=len(DATABASES), subdir=True,
                    readonly=True, lock=False)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0),
                     0o644)
        try:
            src.copyfd(fd, compact=True)  # one read transaction: a consistent copy
            os.fsync(fd)  # LMDB does not: the copy must be on disk before it is swapped in
        finally:
            os.close(fd)
        copy = lmdb.open(str(tmp), map_size=size, max_dbs=len(DATABASES), subdir=False,
                         readonly=True, lock=False)
        try:
            if _entries(copy) != _entries(src):
                raise StoreError(f"the compacted copy of {folder} does not hold what the "
                                 "store holds")
        finally:
            copy.close()
    finally:
        src.close()


def _entries(env: lmdb.Environment) -> list[int]:
    """The entry count of the main database and of each of ours."""
    with env.begin() as txn:
        return [env.stat()["entries"]] + [
            txn.stat(env.open_db(name, txn=txn, create=False))["entries"] for name in DATABASES]


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open a folder, and its
    renames are on disk when they return)."""
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass  # the rename is done; only its durability across a power cut is at stake


def _reinit_lock_file(store: LmdbStore, lock: ByteLock) -> None:
    """Make LMDB's lock file describe the swapped-in file before any other process reads it,
    then reopen ``store``. The lock file records the last transaction id, from which
    readers and writers pick a meta page: one that still held the old file's would pick the
    compacted copy's empty one. LMDB rewrites it when it opens the environment first and
    alone; holding ``lock``, this process's first open is exactly that (POSIX locks are the
    process's, so LMDB's own lock attempt succeeds). Closing that environment drops every
    lock this process has on the file (POSIX), so it is closed before ``lock`` is released,
    and opened again for good after. Windows locks are per handle: there LMDB would wait for
    ``lock`` forever, so it is released first and the reopen follows at once (a process of
    another program waiting in LMDB's open at that moment could slip in; ours wait at the
    gate)."""
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        lock.release()
        store._open(gated=False)
        return
    store._open(gated=False)
    store._env.close()
    lock.release()
    store._open(gated=False)


def _generation(raw: bytes | memoryview | None) -> int:
    return 0 if raw is None else int.from_bytes(raw, "big")


def _put_all(txn: lmdb.Transaction, db: lmdb._Database, changes: dict[str, bytes | None]) -> None:
    for key, value in changes.items():
        if value is None:
            txn.delete(key.encode(), db=db)
        else:
            txn.put(key.encode(), value, db=db)


def _round_up(n: int) -> int:
    return -(-n // MIN_MAP_SIZE) * MIN_MAP_SIZE


#: Bytes of LMDB's lock file for its default 126 readers (what it creates on Linux/macOS).
LOCK_FILE_BYTES = 8192


def _back_lock_file(path: Path) -> None:
    """Give LMDB's lock file real blocks before it maps it. LMDB creates it with ftruncate, a
    file with holes; its first touch of a page (the first reader slot of a new thread) then
    needs a block, and on a full disk (tmpfs above all) that is a SIGBUS that kills the
    process, not an error. posix_fallocate keeps the content (other processes may have the
    file open) and fails with ENOSPC up front instead. Windows has no call for it, and LMDB
    allocates its files there itself."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fallocate(fd, 0, max(LOCK_FILE_BYTES, os.fstat(fd).st_size))
    finally:
        os.close(fd)


def _writable(path: Path) -> bool:
    """Whether this process may write ``path`` (or create it, if it does not exist): false on
    a read-only file system whoever we are, and for files of others."""
    target = path if path.exists() else path.parent
    return os.access(target, os.W_OK, effective_ids=os.access in os.supports_effective_ids)


def _is_disk_full(path: Path, exc: lmdb.Error | OSError) -> bool:
    code = getattr(exc, "errno", None) or (exc.args[0] if exc.args else None)
    return code == errno.ENOSPC or "No space left" in str(exc) or _disk_full(path)


def _describe(path: Path, exc: lmdb.Error | OSError,
              what: str | None = None) -> str:
    if _is_disk_full(path, exc):
        return f"the disk holding the store at {path} is full; nothing was written ({exc})"
    if what is not None:
        return f"{what}: {exc}"
    return f"writing the store at {path} failed; nothing was written: {exc}"


def _disk_full(path: Path) -> bool:
    # LMDB reports a page write cut short by a full disk as EIO ("Input/output error").
    try:
        return shutil.disk_usage(path).free < 1 << 20
    except OSError:
        return False


def _sorted_rows(value: bytes) -> bool:
    """Whether a staged list's rows are sorted by id (lists written before they were are not)."""
    size = _STAGED.size
    return all(value[i:i + 32] <= value[i + size:i + size + 32]
               for i in range(0, len(value) - size, size))


def _sort_rows(value: bytes) -> bytes:
    size = _STAGED.size
    return b"".join(sorted(value[i:i + size] for i in range(0, len(value), size)))


def _staged_rows(number: int, value: bytes) -> Iterator[tuple[bytes, int, int, int]]:
    """The rows of pack ``number``'s staged list: id, pack, offset, length."""
    for oid, offset, length in _STAGED.iter_unpack(value):
        yield oid, number, offset, length

