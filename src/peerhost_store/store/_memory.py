"""The reference store: dicts in memory. Every other backend must behave like this one."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator

from ..errors import ObjectCorrupt, ObjectMissing
from ..ids import ObjectId, hash_bytes
from . import Pins, PinsChanged, RefConflict, Update


class MemoryStore:
    """An in-memory :class:`~peerhost_store.store.ObjectStore`."""

    def __init__(self) -> None:
        self.objects: dict[ObjectId, bytes] = {}
        self.refs: dict[str, ObjectId] = {}
        self.stats: dict[str, bytes] = {}
        self.meta: dict[str, bytes] = {}
        self.pins: dict[str, dict[ObjectId, bool]] = {}
        self.pin_generation = 0
        #: Pins whose owner is alive (all of them, unless a test says otherwise).
        self.live_pins: set[str] = set()
        self._lock = threading.Lock()

    def __contains__(self, oid: object) -> bool:
        return oid in self.objects

    def get_raw(self, oid: ObjectId) -> bytes:
        try:
            data = self.objects[oid]
        except KeyError:
            raise ObjectMissing(oid) from None
        got = hash_bytes(data)
        if got != oid:
            raise ObjectCorrupt(oid, got, "memory store")
        return data

    def get_many(self, oids: list[ObjectId]) -> list[bytes]:
        return [self.get_raw(oid) for oid in oids]

    def add_raw(self, data: bytes) -> tuple[ObjectId, bool]:
        oid = hash_bytes(data)
        return oid, self.apply(Update(objects=[data])) == 1

    def iter_missing(self, oids: Iterable[ObjectId]) -> Iterator[ObjectId]:
        return (oid for oid in oids if oid not in self.objects)

    def iter_ids(self) -> Iterator[ObjectId]:
        return iter(list(self.objects))

    def apply(self, update: Update) -> int:
        objects = [(hash_bytes(d), d) for d in update.objects] + update.hashed
        with self._lock:
            for name, expected, _ in update.refs:
                actual = self.refs.get(name)
                if actual != expected:
                    raise RefConflict(name, expected, actual)
            if update.pins_at is not None and update.pins_at != self.pin_generation:
                raise PinsChanged(update.pins_at, self.pin_generation)
            # Checked before anything changes: this store has no transaction to roll back.
            written = {oid for oid, _ in objects}
            deleted = set(update.delete_objects)
            for oid in update.require:
                if oid in deleted or oid not in self.objects and oid not in written:
                    raise ObjectMissing(oid, "an update that requires it")
            new = 0
            for oid, data in objects:
                if self.objects.get(oid) != data:  # absent, or corrupt: these bytes hash to oid
                    self.objects[oid] = bytes(data)
                    new += 1
            for oid in update.delete_objects:
                self.objects.pop(oid, None)
            for name, _, target in update.refs:
                if target is None:
                    self.refs.pop(name, None)
                else:
                    self.refs[name] = target
            if update.clear_stats:
                self.stats.clear()
            _put_all(self.stats, update.stats)
            _put_all(self.meta, update.meta)
            for name, pinned in update.pins.items():
                if pinned is None:
                    self.live_pins.discard(name)
                    if self.pins.pop(name, None) is not None:
                        self.pin_generation += 1
                elif pinned:
                    self.pins.setdefault(name, {}).update(pinned)
                    self.pin_generation += 1
            return new

    def new_pin(self) -> str:
        name = uuid.uuid4().hex
        self.live_pins.add(name)
        return name

    def load_pins(self) -> Pins:
        with self._lock:
            ids: dict[ObjectId, bool] = {}
            for name in self.live_pins & self.pins.keys():
                for oid, node in self.pins[name].items():
                    ids[oid] = ids.get(oid, False) or node
            stale = sorted(self.pins.keys() - self.live_pins)
            return Pins(self.pin_generation, ids, stale)

    def get_ref(self, name: str) -> ObjectId | None:
        return self.refs.get(name)

    def iter_refs(self) -> Iterator[tuple[str, ObjectId]]:
        return iter(sorted(self.refs.items()))

    def load_stats(self) -> dict[str, bytes]:
        return dict(self.stats)

    def get_meta(self, key: str) -> bytes | None:
        return self.meta.get(key)

    def close(self) -> None:
        pass


def _put_all(target: dict[str, bytes], changes: dict[str, bytes | None]) -> None:
    for key, value in changes.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
