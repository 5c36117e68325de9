"""Batching object writes so a large snapshot costs a few durable transactions, not one per
object, and keeps bounded memory."""

from __future__ import annotations

from .ids import ObjectId, hash_bytes
from .store import ObjectStore, Update

BATCH_BYTES = 32 << 20


class ObjectWriter:
    """Collects encoded objects and hands them to the store in batches.

    Objects written before the ref moves are unreachable until then, so committing them early
    publishes nothing (invariant: a ref moves only when everything it reaches is stored).
    """

    def __init__(self, store: ObjectStore, batch_bytes: int = BATCH_BYTES) -> None:
        self.store = store
        self.batch_bytes = batch_bytes
        self._pending: list[tuple[ObjectId, bytes]] = []
        self._pending_ids: set[ObjectId] = set()
        self._pending_size = 0
        self.new_objects = 0
        self.new_bytes = 0
        self.added_bytes = 0

    def add(self, data: bytes) -> ObjectId:
        """Queue one encoded object; return its id."""
        oid = hash_bytes(data)
        if oid in self._pending_ids:
            return oid
        self._pending.append((oid, data))
        self._pending_ids.add(oid)
        self._pending_size += len(data)
        self.added_bytes += len(data)
        if self._pending_size >= self.batch_bytes:
            self.flush()
        return oid

    def take(self) -> list[bytes]:
        """Return the queued objects the store lacks (to go into a final :class:`Update`) and
        forget the queue."""
        pending, ids = self._pending, self._pending_ids
        self._pending, self._pending_ids, self._pending_size = [], set(), 0
        if not pending:
            return []
        missing = set(self.store.iter_missing(ids))
        fresh = [data for oid, data in pending if oid in missing]
        self.new_objects += len(fresh)
        self.new_bytes += sum(len(data) for data in fresh)
        return fresh

    def flush(self) -> None:
        """Store the queued objects now."""
        fresh = self.take()
        if fresh:
            self.store.apply(Update(objects=fresh))
