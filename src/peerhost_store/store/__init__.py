"""Object stores: where objects, refs and the stat cache live.

A store holds four things:

* objects, keyed by id, immutable (``add`` of a known object is a no-op);
* refs, named heads (``main``), changed only by compare-and-swap;
* the stat cache, ``path -> bytes`` written by snapshot so unchanged files are never re-read;
* meta, small ``key -> bytes`` settings;
* pins: ids that a running transfer wrote or relies on before any ref reaches them. gc treats
  live pins as roots; a pin whose owner is gone (its process died) is stale and ignored.

Every change goes through :meth:`ObjectStore.apply`, which applies an :class:`Update` atomically:
all of it or, when a ref's expected value does not match, none of it (:class:`RefConflict`).
Backends: :class:`MemoryStore` (the reference) and :class:`LmdbStore` (durable). Both pass the
contract suite in :mod:`peerhost_store.testing`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import PeerhostError, StoreError
from ..ids import ObjectId


class PinsChanged(PeerhostError):
    """An update made against the pins of an earlier moment (``Update.pins_at``) found them
    changed: what it deletes may now be needed. Nothing was applied."""

    def __init__(self, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"objects were pinned since generation {expected} (now {actual})")


@dataclass(frozen=True)
class Pins:
    """The live pins of a store (:meth:`ObjectStore.load_pins`).

    Attributes:
        generation: grows whenever pins change (an update can require it unchanged).
        ids: each pinned id, and whether it is a tree node (its subtree is protected too).
        stale: names of pins whose owner is gone; their ids are not in ``ids``.
    """

    generation: int
    ids: dict[ObjectId, bool]
    stale: list[str]


class RefConflict(PeerhostError):
    """A compare-and-swap on a ref lost: the ref did not hold the expected value."""

    def __init__(self, name: str, expected: ObjectId | None, actual: ObjectId | None) -> None:
        self.name = name
        self.expected = expected
        self.actual = actual
        exp = expected.hex()[:12] if expected else "nothing"
        act = actual.hex()[:12] if actual else "nothing"
        super().__init__(f"ref {name!r} moved: expected {exp}, found {act}")


@dataclass
class Update:
    """A set of changes that a store applies all at once or not at all.

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
    :meth:`ObjectStore.new_pin`, or drops the whole pin (None). With ``pins_at``, nothing is
    applied (:class:`PinsChanged`) if the pins changed after that generation (gc deletes only
    what no pin it has seen protects).
    """

    objects: Sequence[bytes | memoryview] = field(default_factory=list)
    hashed: list[tuple[ObjectId, bytes]] = field(default_factory=list)
    refs: list[tuple[str, ObjectId | None, ObjectId | None]] = field(default_factory=list)
    stats: dict[str, bytes | None] = field(default_factory=dict)
    meta: dict[str, bytes | None] = field(default_factory=dict)
    delete_objects: list[ObjectId] = field(default_factory=list)
    clear_stats: bool = False
    require: Sequence[ObjectId] = field(default_factory=list)
    pins: dict[str, Sequence[tuple[ObjectId, bool]] | None] = field(default_factory=dict)
    pins_at: int | None = None


class ObjectStore(Protocol):
    """What every backend provides. Reads verify ids; writes are atomic per :class:`Update`."""

    def __contains__(self, oid: object) -> bool: ...

    def get_raw(self, oid: ObjectId) -> bytes:
        """Return an object's bytes; raises ObjectMissing, or ObjectCorrupt if they do not hash to ``oid``."""
        ...

    def get_many(self, oids: list[ObjectId]) -> list[bytes]:
        """:meth:`get_raw` for several objects at once (one read transaction in LMDB)."""
        ...

    def add_raw(self, data: bytes) -> tuple[ObjectId, bool]:
        """Store one object durably; return its id and whether it was written (new, or in
        place of stored bytes that were corrupt)."""
        ...

    def iter_missing(self, oids: Iterable[ObjectId]) -> Iterator[ObjectId]:
        """Yield the ids in ``oids`` that this store does not hold."""
        ...

    def iter_ids(self) -> Iterator[ObjectId]:
        """Yield the id of every stored object."""
        ...

    def apply(self, update: Update) -> int:
        """Apply ``update`` atomically; return how many objects were written (new, or in
        place of corrupt bytes). Raises RefConflict, PinsChanged, or ObjectMissing for
        ``require``; then nothing was applied."""
        ...

    def get_ref(self, name: str) -> ObjectId | None: ...

    def iter_refs(self) -> Iterator[tuple[str, ObjectId]]: ...

    def load_stats(self) -> dict[str, bytes]:
        """Return the whole stat cache."""
        ...

    def get_meta(self, key: str) -> bytes | None: ...

    def new_pin(self) -> str:
        """A new pin name owned by this store handle: live until an update drops it, the
        store is closed, or the process ends."""
        ...

    def load_pins(self) -> Pins: ...

    def close(self) -> None: ...


from ._memory import MemoryStore  # noqa: E402
from ._lmdb import LmdbStore  # noqa: E402

__all__ = [
    "LmdbStore",
    "MemoryStore",
    "ObjectStore",
    "Pins",
    "PinsChanged",
    "RefConflict",
    "StoreError",
    "Update",
]
