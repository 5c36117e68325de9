"""A :class:`~peerhost_store.store.Store` whose objects live in any object backend (a folder of
files, a bucket) and whose refs, stat cache, meta and pins live in a state store."""

from __future__ import annotations

from ..errors import ObjectMissing
from ._base import (
    Compaction,
    MetaStore,
    ObjectStore,
    Pins,
    RefStore,
    StatCache,
    Store,
    Update,
    Verified,
)


class Composed:
    """Objects in ``objects``; everything else in ``state`` (whose own objects go unused).

    An update writes its objects first (durably, in the backend), then checks ``require``,
    then applies refs, stats, meta and pins to ``state`` in one of its updates, then deletes.
    Nothing reaches new objects until the state update moves a ref, so a failure or a crash
    in between leaves unreachable objects, which gc removes; deletions come last, after the
    state update checked ``pins_at``, so gc never deletes what a pin protects. Unlike one
    transaction, ``require`` is checked before the state update: a concurrent gc could delete
    a required object in between, unless a live pin protects it (what transfers do).

    Args:
        objects: the object backend.
        state: a store for the rest (a :class:`~peerhost_store.store.MemoryStore`, an
            :class:`~peerhost_store.store.LmdbStore`, ...).
        where: names the backend in errors.
    """

    def __init__(self, objects: ObjectStore, state: Store, where: str = "object store") -> None:
        self.backend = objects
        self.state = state
        self._objects = Verified(objects, where)

    @property
    def objects(self) -> Verified:
        return self._objects

    @property
    def refs(self) -> RefStore:
        return self.state.refs

    @property
    def stats(self) -> StatCache:
        return self.state.stats

    @property
    def meta(self) -> MetaStore:
        return self.state.meta

    def apply(self, update: Update) -> int:
        pairs = update.all_objects()
        written = self.backend.put_many(pairs) if pairs else 0
        doomed = set(update.delete_objects)
        for oid in update.require:
            if oid in doomed:
                raise ObjectMissing(oid, "an update that requires it")
        absent = self.backend.missing(update.require) if update.require else []
        if absent:
            raise ObjectMissing(absent[0], "an update that requires it")
        self.state.apply(Update(refs=update.refs, stats=update.stats, meta=update.meta,
                                clear_stats=update.clear_stats, pins=update.pins,
                                pins_at=update.pins_at))
        if update.delete_objects:
            self.backend.delete_many(update.delete_objects)
        return written

    def new_pin(self) -> str:
        return self.state.new_pin()

    def load_pins(self) -> Pins:
        return self.state.load_pins()

    def compact(self, *, dry_run: bool = False) -> Compaction | None:
        # The state store's file; an object backend manages its own room (files, a bucket).
        return self.state.compact(dry_run=dry_run)

    def close(self) -> None:
        self.state.close()
