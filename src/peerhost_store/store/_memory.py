"""The reference store: dicts in memory. Every other backend must behave like this one."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from ..errors import ObjectCorrupt, ObjectMissing
from ..ids import ObjectId, hash_bytes
from . import RefConflict, Update


class MemoryStore:
    """An in-memory :class:`~peerhost_store.store.ObjectStore`."""

    def __init__(self) -> None:
        self.objects: dict[ObjectId, bytes] = {}
        self.refs: dict[str, ObjectId] = {}
        self.stats: dict[str, bytes] = {}
        self.meta: dict[str, bytes] = {}
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
        with self._lock:
            for name, expected, _ in update.refs:
                actual = self.refs.get(name)
                if actual != expected:
                    raise RefConflict(name, expected, actual)
            new = 0
            for oid, data in [(hash_bytes(d), d) for d in update.objects] + update.hashed:
                if oid not in self.objects:
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
            return new

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
