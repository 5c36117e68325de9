"""The store protocols and the two wrappers every backend is used through (see the package's
docstring)."""


from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import ObjectCorrupt, ObjectMissing, PeerhostError
from ..ids import ObjectId, hash_bytes


class PinsChanged(PeerhostError):
    """An update made against the pins of an earlier moment (``Update.pins_at``) found them
    changed: what it deletes may now be needed. Nothing was applied."""

    def __init__(self, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"objects were pinned since generation {expected} (now {actual})")


@dataclass(frozen=True)
class Pins:
    """The live pins of a store (:meth:`Store.load_pins`).

    Attributes:
        generation: grows whenever pins change (an update can require it unchanged).
        ids: each pinned id, and whether it is a tree node (its subtree is protected too).
        stale: names of pins whose owner is gone; their ids are not in ``ids``.
    """

    generation: int
    ids: dict[ObjectId, bool]
    stale: list[str]


@dataclass(frozen=True)
class Compaction:
    """What :meth:`Store.compact` did: the store's file size before and after (bytes), and
    when it did not compact, why (``note``)."""

    before: int
    after: int
    done: bool
    note: str = ""


class RefConflict(PeerhostError):
    """A compare-and-swap on a ref lost: the ref did not hold the expected value."""

    def __init__(self, name: str, expected: ObjectId | None, actual: ObjectId | None) -> None:
        self.name = name
        self.expected = expected
        self.actual = actual
        exp = expected.hex()[:12] if expected else "nothing"
        act = actual.hex()[:12] if actual else "nothing"
        super().__init__(f"ref {name!r} moved: expected {exp}, found {act}")


# -- the protocols ------------------------------------------------------------------------------


class ObjectStore(Protocol):
    """Objects alone, keyed by id: what an object backend implements (restic's Save, Load,
    Stat, List, Remove). It stores the bytes it is given under the id it is given; ids are
    derived and checked by :class:`Verified`, never here."""

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]:
        """The stored bytes of each id, in order; ObjectMissing names the first absent one."""
        ...

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        """The ids in ``oids`` not stored, in order."""
        ...

    def put_many(self, objects: Sequence[tuple[ObjectId, bytes | memoryview]]) -> int:
        """Store each ``(id, bytes)`` durably; bytes stored under an id already are replaced
        only when they differ (they were corrupt: the caller's hash to the id). Returns how
        many were written."""
        ...

    def delete_many(self, oids: Sequence[ObjectId]) -> None:
        """Delete each id that is stored (absent ones are ignored)."""
        ...

    def iter_ids(self) -> Iterator[ObjectId]:
        """Every stored id."""
        ...

    def sizes(self, oids: Sequence[ObjectId]) -> list[int | None]:
        """Each id's stored size in bytes (None when absent), without reading the bytes
        where the backend can (restic's Stat)."""
        ...


class RefStore(Protocol):
    """Named snapshots (``main``, ``remotes/<session>``), changed only by compare-and-swap."""

    def get(self, name: str) -> ObjectId | None: ...

    def items(self) -> list[tuple[str, ObjectId]]:
        """Every ref, sorted by name."""
        ...

    def set_if_equals(self, name: str, expected: ObjectId | None, new: ObjectId | None) -> None:
        """Point ``name`` at ``new`` (None deletes it) if it holds ``expected`` (None: absent).

        Raises:
            RefConflict: it holds something else; nothing changed.
        """
        ...


class StatCache(Protocol):
    """``world-relative path -> value`` (see :mod:`peerhost_store.scan`)."""

    def load(self) -> dict[str, bytes]: ...

    def update(self, changes: Mapping[str, bytes | None], *, clear: bool = False) -> None:
        """Set (None deletes) each key; with ``clear`` everything else goes first."""
        ...


class MetaStore(Protocol):
    """Small named settings (``shallow``, ``pending-restore``, ...)."""

    def get(self, key: str) -> bytes | None: ...

    def update(self, changes: Mapping[str, bytes | None]) -> None:
        """Set (None deletes) each key."""
        ...


@dataclass
class Update:
    """A set of changes that a :class:`Store` applies all at once or not at all.

    ``objects`` are encoded object bytes (the store computes their ids); ``hashed`` are
    ``(id, bytes)`` pairs whose ids the caller computed from those very bytes in this process
    (:class:`~peerhost_store.writer.ObjectWriter` does, so a snapshot hashes each object once).
    Bytes that arrive from outside the process always go in ``objects``; they may be views of
    a larger buffer (an upload's body), which the store copies.
    ``refs`` are compare-and-swaps ``(name, expected, new)`` where None means absent;
    ``stats`` and ``meta`` map keys to new values (None deletes).

    ``require`` lists ids that must be stored once the update is applied (after its own
    objects and deletions), or nothing is applied (:class:`ObjectMissing`): a ref moves only
    onto objects that are there. ``pins`` adds ``(id, is_node)`` pairs under a pin name from
    :meth:`Store.new_pin`, or drops the whole pin (None). With ``pins_at``, nothing is
    applied (:class:`PinsChanged`) if the pins changed after that generation (gc deletes only
    what no pin it has seen protects).

    ``staged`` says that nothing reads these objects before the next update that is not
    staged (:class:`~peerhost_store.writer.ObjectWriter`'s early batches, which no ref
    reaches): a store may then index them lazily, once, in that next update, and until then
    report them missing. They are durable all the same: a crash in between loses nothing
    that the next update does not find.
    """

    objects: Sequence[bytes | memoryview] = field(default_factory=list)
    hashed: Sequence[tuple[ObjectId, bytes | memoryview]] = field(default_factory=list)
    refs: list[tuple[str, ObjectId | None, ObjectId | None]] = field(default_factory=list)
    stats: dict[str, bytes | None] = field(default_factory=dict)
    meta: dict[str, bytes | None] = field(default_factory=dict)
    delete_objects: list[ObjectId] = field(default_factory=list)
    clear_stats: bool = False
    require: Sequence[ObjectId] = field(default_factory=list)
    pins: dict[str, Sequence[tuple[ObjectId, bool]] | None] = field(default_factory=dict)
    pins_at: int | None = None
    staged: bool = False

    def all_objects(self) -> list[tuple[ObjectId, bytes | memoryview]]:
        """``objects`` with their ids (hashed here), then ``hashed``."""
        pairs: list[tuple[ObjectId, bytes | memoryview]] = [
            (hash_bytes(data), data) for data in self.objects]
        pairs += list(self.hashed)
        return pairs


class Store(Protocol):
    """What a repository keeps, changed together by :meth:`apply`."""

    @property
    def objects(self) -> Verified:
        """The objects, read and written through :class:`Verified`."""
        ...

    @property
    def refs(self) -> RefStore: ...

    @property
    def stats(self) -> StatCache: ...

    @property
    def meta(self) -> MetaStore: ...

    def apply(self, update: Update) -> int:
        """Apply ``update`` atomically; return how many objects were written (new, or in
        place of corrupt bytes). Raises RefConflict, PinsChanged, or ObjectMissing for
        ``require``; then nothing was applied."""
        ...

    def new_pin(self) -> str:
        """A new pin name owned by this store handle: live until an update drops it, the
        store is closed, or the process ends."""
        ...

    def load_pins(self) -> Pins: ...

    def compact(self, *, dry_run: bool = False) -> Compaction | None:
        """Give back to the file system the room that deleted data left (gc calls it), when
        enough of it is free and nothing else has the store open; with ``dry_run`` only
        measure. None: the backend keeps no such room (memory)."""
        ...

    def close(self) -> None: ...


# -- the one place ids are checked ------------------------------------------------------------


def check_read(oids: Sequence[ObjectId], datas: Sequence[bytes], where: str,
               trusted: Container[ObjectId] = frozenset()) -> None:
    """Check that each of ``datas`` hashes to its id in ``oids`` (those in ``trusted``
    excepted), as :class:`Verified` does for every read: for a reader that gets its bytes
    another way (a pack in a bucket).

    Raises:
        ObjectCorrupt: naming the first object that does not, and ``where``.
    """
    for oid, data in zip(oids, datas, strict=True):  # a short answer skips no check
        if oid not in trusted:
            got = hash_bytes(data)
            if got != oid:
                raise ObjectCorrupt(oid, got, where)


class Verified:
    """An :class:`ObjectStore` whose reads are checked and whose writes derive their ids.

    Every read re-hashes the bytes (:class:`ObjectCorrupt` when they do not hash to their id),
    except ids in a read's ``trusted``: bytes this process checked against their ids and
    stored itself moments ago (a pull restoring what it just fetched), which cross no boundary
    between that check and the read.

    Args:
        backend: the unchecked object store.
        where: names the store in errors (``store /path/to/it``).
    """

    def __init__(self, backend: ObjectStore, where: str) -> None:
        self.backend = backend
        self.where = where

    def __repr__(self) -> str:
        return f"Verified({self.where})"

    def get_raw(self, oid: ObjectId) -> bytes:
        """One object's checked bytes (ObjectMissing, ObjectCorrupt)."""
        return self.get_many([oid])[0]

    def get_many(self, oids: Sequence[ObjectId], *,
                 trusted: Container[ObjectId] = frozenset()) -> list[bytes]:
        """Checked bytes of each id, in order (ObjectMissing, ObjectCorrupt)."""
        datas = self.backend.get_many(oids)
        check_read(oids, datas, self.where, trusted)
        return datas

    def check_many(self, oids: Sequence[ObjectId]) -> None:
        """Check that each id is stored and that its bytes hash to it, as :meth:`get_many`
        does, without copying them out where the backend hashes them in place (it has
        ``hashes(oids) -> list[ObjectId | None]``) (ObjectMissing, ObjectCorrupt)."""
        hashes = getattr(self.backend, "hashes", None)
        if hashes is None:
            self.get_many(oids)
            return
        for oid, got in zip(oids, hashes(oids), strict=True):
            if got is None:
                raise ObjectMissing(oid)
            if got != oid:
                raise ObjectCorrupt(oid, got, self.where)

    def __contains__(self, oid: object) -> bool:
        return isinstance(oid, bytes) and not self.backend.missing([ObjectId(oid)])

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        """The ids not stored, in order."""
        return self.backend.missing(oids)

    def put(self, data: bytes) -> tuple[ObjectId, bool]:
        """Store one object durably; return its id and whether it was written (new, or in
        place of stored bytes that were corrupt)."""
        oid = hash_bytes(data)
        return oid, self.backend.put_many([(oid, data)]) == 1

    def put_many(self, objects: Sequence[bytes | memoryview]) -> int:
        """Store encoded objects (ids derived here); return how many were written."""
        return self.backend.put_many([(hash_bytes(data), data) for data in objects])

    def iter_ids(self) -> Iterator[ObjectId]:
        return self.backend.iter_ids()

    def sizes(self, oids: Sequence[ObjectId]) -> list[int | None]:
        """Each id's stored size (None when absent), unchecked: for reports."""
        return self.backend.sizes(oids)


class Overlay:
    """Objects held in memory (``top``, whose bytes were checked as they arrived) over a
    store: what a fetch in progress reads, before its nodes are stored."""

    def __init__(self, top: Mapping[ObjectId, bytes], base: Verified,
                 trusted: Container[ObjectId] = frozenset()) -> None:
        self.top = top
        self.base = base
        self.trusted = trusted

    def get_raw(self, oid: ObjectId) -> bytes:
        data = self.top.get(oid)
        return self.base.get_many([oid], trusted=self.trusted)[0] if data is None else data

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]:
        found = [self.top.get(oid) for oid in oids]
        rest = [oid for oid, data in zip(oids, found, strict=True) if data is None]
        read = iter(self.base.get_many(rest, trusted=self.trusted) if rest else ())
        return [next(read) if data is None else data for data in found]

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        return self.base.missing(oid for oid in oids if oid not in self.top)
