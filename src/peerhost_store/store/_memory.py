"""The reference stores: dicts in memory. Every other backend must behave like these."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence

from ..errors import ObjectMissing
from ..ids import ObjectId
from ._base import Compaction, Pins, PinsChanged, RefConflict, Update, Verified


class MemoryObjects:
    """An :class:`~peerhost_store.store.ObjectStore` in a dict (``data``)."""

    def __init__(self) -> None:
        self.data: dict[ObjectId, bytes] = {}
        self.lock = threading.Lock()

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]:
        try:
            return [self.data[oid] for oid in oids]
        except KeyError as exc:
            raise ObjectMissing(exc.args[0]) from None

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        return [oid for oid in oids if oid not in self.data]

    def put_many(self, objects: Sequence[tuple[ObjectId, bytes | memoryview]]) -> int:
        with self.lock:
            return self._put(objects)

    def _put(self, objects: Sequence[tuple[ObjectId, bytes | memoryview]]) -> int:
        written = 0
        for oid, data in objects:
            if self.data.get(oid) != data:  # absent, or corrupt: these bytes hash to oid
                self.data[oid] = bytes(data)
                written += 1
        return written

    def delete_many(self, oids: Sequence[ObjectId]) -> None:
        with self.lock:
            for oid in oids:
                self.data.pop(oid, None)

    def iter_ids(self) -> Iterator[ObjectId]:
        return iter(list(self.data))

    def sizes(self, oids: Sequence[ObjectId]) -> list[int | None]:
        return [None if (data := self.data.get(oid)) is None else len(data) for oid in oids]


class MemoryStore:
    """An in-memory :class:`~peerhost_store.store.Store` (objects in :class:`MemoryObjects`)."""

    def __init__(self) -> None:
        self.backend = MemoryObjects()
        self._objects = Verified(self.backend, "memory store")
        self.ref_map: dict[str, ObjectId] = {}
        self.stat_map: dict[str, bytes] = {}
        self.meta_map: dict[str, bytes] = {}
        self.pins: dict[str, dict[ObjectId, bool]] = {}
        self.pin_generation = 0
        #: Pins whose owner is alive (all of them, unless a test says otherwise).
        self.live_pins: set[str] = set()
        self._refs = _Refs(self)
        self._stats = _Stats(self)
        self._meta = _Meta(self)

    @property
    def objects(self) -> Verified:
        return self._objects

    @property
    def refs(self) -> _Refs:
        return self._refs

    @property
    def stats(self) -> _Stats:
        return self._stats

    @property
    def meta(self) -> _Meta:
        return self._meta

    def apply(self, update: Update) -> int:
        objects = update.all_objects()
        data = self.backend.data
        with self.backend.lock:
            for name, expected, _ in update.refs:
                actual = self.ref_map.get(name)
                if actual != expected:
                    raise RefConflict(name, expected, actual)
            if update.pins_at is not None and update.pins_at != self.pin_generation:
                raise PinsChanged(update.pins_at, self.pin_generation)
            # Checked before anything changes: this store has no transaction to roll back.
            written = {oid for oid, _ in objects}
            deleted = set(update.delete_objects)
            for oid in update.require:
                if oid in deleted or (oid not in data and oid not in written):
                    raise ObjectMissing(oid, "an update that requires it")
            new = self.backend._put(objects)
            for oid in update.delete_objects:
                data.pop(oid, None)
            for name, _, target in update.refs:
                if target is None:
                    self.ref_map.pop(name, None)
                else:
                    self.ref_map[name] = target
            if update.clear_stats:
                self.stat_map.clear()
            _put_all(self.stat_map, update.stats)
            _put_all(self.meta_map, update.meta)
            self._apply_pins(update)
            return new

    def _apply_pins(self, update: Update) -> None:
        for name, pinned in update.pins.items():
            if pinned is None:
                self.live_pins.discard(name)
                if self.pins.pop(name, None) is not None:
                    self.pin_generation += 1
            elif pinned:
                self.pins.setdefault(name, {}).update(pinned)
                self.pin_generation += 1

    def new_pin(self) -> str:
        name = uuid.uuid4().hex
        self.live_pins.add(name)
        return name

    def load_pins(self) -> Pins:
        with self.backend.lock:
            ids: dict[ObjectId, bool] = {}
            for name in self.live_pins & self.pins.keys():
                for oid, node in self.pins[name].items():
                    ids[oid] = ids.get(oid, False) or node
            stale = sorted(self.pins.keys() - self.live_pins)
            return Pins(self.pin_generation, ids, stale)

    def compact(self, *, dry_run: bool = False) -> Compaction | None:
        return None  # dicts keep no freed room

    def close(self) -> None:
        pass


class _Refs:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def get(self, name: str) -> ObjectId | None:
        return self._store.ref_map.get(name)

    def items(self) -> list[tuple[str, ObjectId]]:
        return sorted(self._store.ref_map.items())

    def set_if_equals(self, name: str, expected: ObjectId | None, new: ObjectId | None) -> None:
        self._store.apply(Update(refs=[(name, expected, new)]))


class _Stats:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def load(self) -> dict[str, bytes]:
        return dict(self._store.stat_map)

    def update(self, changes: Mapping[str, bytes | None], *, clear: bool = False) -> None:
        self._store.apply(Update(stats=dict(changes), clear_stats=clear))


class _Meta:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def get(self, key: str) -> bytes | None:
        return self._store.meta_map.get(key)

    def update(self, changes: Mapping[str, bytes | None]) -> None:
        self._store.apply(Update(meta=dict(changes)))


def _put_all(target: dict[str, bytes], changes: Mapping[str, bytes | None]) -> None:
    for key, value in changes.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
