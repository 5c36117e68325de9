"""Batching object writes so a large snapshot costs a few durable transactions, not one per
object, and keeps bounded memory."""

from __future__ import annotations

from .ids import ObjectId, hash_bytes
from .store import Store, Update

__all__ = ["BATCH_BYTES", "ObjectWriter"]

BATCH_BYTES = 32 << 20


class ObjectWriter:
    """Collects encoded objects and hands them to the store in batches.

    Objects written before the ref moves are unreachable until then, so committing them early
    publishes nothing (invariant: a ref moves only when everything it reaches is stored).
    (Committing batches on a background thread was measured slower: the GIL hand-offs cost
    more than the overlap gained.)
    """

    def __init__(self, store: Store, batch_bytes: int = BATCH_BYTES, *,
                 heal: frozenset[ObjectId] = frozenset()) -> None:
        self.store = store
        self.batch_bytes = batch_bytes
        #: Ids whose stored bytes are damaged: written again when produced (see ``healed``).
        self.heal = heal
        self.healed: set[ObjectId] = set()
        self._pending: list[tuple[ObjectId, bytes]] = []
        self._pending_ids: set[ObjectId] = set()
        self._pending_size = 0
        self.new_objects = 0
        self.new_bytes = 0

    def add(self, data: bytes) -> ObjectId:
        """Queue one encoded object; return its id."""
        oid = hash_bytes(data)
        if oid in self._pending_ids:
            return oid
        self._pending.append((oid, data))
        self._pending_ids.add(oid)
        self._pending_size += len(data)
        if self._pending_size >= self.batch_bytes:
            self.flush()
        return oid

    def take(self) -> list[tuple[ObjectId, bytes]]:
        """Return the queued objects the store lacks (for a final :class:`Update`'s ``hashed``)
        and forget the queue."""
        pending = self._pending
        self._pending, self._pending_ids, self._pending_size = [], set(), 0
        if not pending:
            return []
        missing = set(self.store.objects.missing(oid for oid, _ in pending))
        self.healed.update(oid for oid, _ in pending if oid in self.heal)
        fresh = [(oid, data) for oid, data in pending if oid in missing or oid in self.heal]
        self.new_objects += len(fresh)
        self.new_bytes += sum(len(data) for _, data in fresh)
        return fresh

    def flush(self) -> None:
        """Store everything queued now."""
        fresh = self.take()
        if fresh:
            # Staged: the store may index them with the final update (LMDB does, so its
            # early batches only append packs).
            self.store.apply(Update(hashed=fresh, staged=True))
