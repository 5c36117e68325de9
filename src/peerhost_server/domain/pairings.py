"""Pairing lists already computed, refusals already given, and delta items already verified.

A push or pull of a large change sends many delta requests for the same two trees, and each
would otherwise diff them again. Trees are content-addressed, so a list (or a refusal: a tree
out of bounds, a pairing over budget) computed once stays true for as long as the ids exist,
in this process or any other: the memo is no single-process assumption. It holds at most
:data:`PAIRINGS_KEPT` entries and twice ``max_pairing_chunks`` pairs together.

A pull of a push usually asks for the very items the push sent (same base and target trees,
so the same pairs): those the coordinator rebuilt and verified are kept too, by trees and
chunk id, within :data:`ITEM_BYTES_KEPT` bytes of item data, so the pull's batch is not built
again from the payloads (decompress, recompression check, zstd). An item is the same
whichever end built it: it rebuilds its chunk from the pair's base, and the puller checks the
id of what it rebuilds. A pushed batch whose every item was verified is kept whole as well
(within :data:`BATCH_BYTES_KEPT`), by trees and selection: a pull that asks for the same
selection is answered those bytes, not a batch compressed again (zstd level 19 took 0.13 s
of a 0.56 s push of 345 real chunks, and as long again for the pull's answer).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from peerhost_store.bounds import TreeRefused
from peerhost_store.ids import ObjectId
from peerhost_store.sync.delta import DeltaItem
from peerhost_store.sync.pairing import Pair, PairingTooLarge
from peerhost_store.sync.protocol import Range
from peerhost_store.worldfs import UnsafePath

PAIRINGS_KEPT = 8
#: Bytes of verified item data kept (the items of a few pushes of a play session: most are
#: deltas of tens of bytes).
ITEM_BYTES_KEPT = 64 << 20
#: Bytes of pushed batches kept whole, their keys counted (a play session's batch is tens to
#: hundreds of KB), and how many at most.
BATCH_BYTES_KEPT = 16 << 20
BATCHES_KEPT = 64

Key = tuple[str, ObjectId, ObjectId]  # session, base tree, target tree
Refusal = TreeRefused | UnsafePath | PairingTooLarge
#: A verified item and the size of the object it rebuilds.
KnownItem = tuple[DeltaItem, int]


class PairingMemo:
    """The last few pairing lists and refusals, by session and trees."""

    def __init__(self, max_chunks: int) -> None:
        self._max_pairs = 2 * max_chunks
        self._kept: OrderedDict[Key, list[Pair] | Callable[[], Exception]] = OrderedDict()
        self._items: OrderedDict[Key, dict[ObjectId, KnownItem]] = OrderedDict()
        self._item_bytes = 0
        self._batches: OrderedDict[tuple[Key, tuple[Range, ...]], tuple[int, bytes]] = \
            OrderedDict()
        self._batch_bytes = 0
        self._lock = threading.Lock()

    def keep_batch(self, key: Key, select: tuple[Range, ...], count: int, batch: bytes) -> None:
        """Keep a pushed batch of ``count`` items (for ``select`` of ``key``'s pairs), every
        one of them verified here, within what an answer may hold: a pull asking the same
        selection is answered it (:meth:`batch`). The oldest go past
        :data:`BATCH_BYTES_KEPT`."""
        if _batch_cost(select, batch) > BATCH_BYTES_KEPT:
            return
        with self._lock:
            old = self._batches.pop((key, select), None)
            if old is not None:
                self._batch_bytes -= _batch_cost(select, old[1])
            self._batches[(key, select)] = (count, batch)
            self._batch_bytes += _batch_cost(select, batch)
            while self._batch_bytes > BATCH_BYTES_KEPT or len(self._batches) > BATCHES_KEPT:
                (_, dropped_select), (_, dropped) = self._batches.popitem(last=False)
                self._batch_bytes -= _batch_cost(dropped_select, dropped)

    def batch(self, key: Key, select: tuple[Range, ...]) -> tuple[int, bytes] | None:
        """``(count, batch)`` kept for exactly this selection of ``key``'s pairs, or None."""
        with self._lock:
            kept = self._batches.get((key, select))
            if kept is not None:
                self._batches.move_to_end((key, select))
            return kept

    def keep_tree(self, key: Key, body: bytes) -> None:
        """Keep a tree upload's body that rebuilt its root here (``key``: its two trees): the
        pull of that push is answered it (:meth:`tree`). Kept as a batch for no selection."""
        self.keep_batch(key, (), 0, body)

    def tree(self, key: Key) -> bytes | None:
        """The tree upload kept for ``key``'s trees, or None."""
        kept = self.batch(key, ())
        return None if kept is None else kept[1]

    def items(self, key: Key) -> dict[ObjectId, KnownItem]:
        """The verified items kept for ``key``'s trees, by chunk id (a copy)."""
        with self._lock:
            known = self._items.get(key)
            if known is None:
                return {}
            self._items.move_to_end(key)
            return dict(known)

    def keep_items(self, key: Key, items: list[KnownItem]) -> None:
        """Keep items the coordinator verified for ``key``'s pairs, dropping the oldest past
        :data:`ITEM_BYTES_KEPT` (an entry larger than that is not kept at all)."""
        with self._lock:
            known = self._items.setdefault(key, {})
            self._items.move_to_end(key)
            for item, size in items:
                if item.new_id not in known:
                    known[item.new_id] = (item, size)
                    self._item_bytes += len(item.data)
            while self._item_bytes > ITEM_BYTES_KEPT and self._items:
                _, dropped = self._items.popitem(last=False)
                self._item_bytes -= sum(len(item.data) for item, _ in dropped.values())

    def get(self, key: Key) -> list[Pair] | None:
        """The list kept for ``key``, or None.

        Raises:
            TreeRefused, UnsafePath, PairingTooLarge: the refusal kept for it (a repeated
                request costs nothing again).
        """
        with self._lock:
            known = self._kept.get(key)
            if known is None:
                return None
            self._kept.move_to_end(key)
        if callable(known):
            raise known()
        return known

    def put(self, key: Key, value: list[Pair] | Refusal) -> None:
        """Keep a list or a refusal, dropping the oldest entries past the bounds."""
        kept = value if isinstance(value, list) else _refusal(value)
        with self._lock:
            self._kept[key] = kept
            while len(self._kept) > PAIRINGS_KEPT or (len(self._kept) > 1 and sum(
                    len(v) for v in self._kept.values() if isinstance(v, list)) > self._max_pairs):
                self._kept.popitem(last=False)

    def drop(self, session: str) -> None:
        """Forget the session's entries (gc deleted some of its objects)."""
        with self._lock:
            for key in [k for k in self._kept if k[0] == session]:
                del self._kept[key]
            for key in [k for k in self._items if k[0] == session]:
                self._item_bytes -= sum(len(item.data) for item, _ in self._items.pop(key).values())
            for kept in [k for k in self._batches if k[0][0] == session]:
                self._batch_bytes -= _batch_cost(kept[1], self._batches.pop(kept)[1])


def _batch_cost(select: tuple[Range, ...], batch: bytes) -> int:
    """What a kept batch takes: its bytes, and its key's selection (a fragmented one can
    hold tens of thousands of ranges), about 64 bytes a range."""
    return len(batch) + 64 * len(select)


def _refusal(exc: Refusal) -> Callable[[], Exception]:
    """A maker of the same error, holding its fields only: a kept exception would keep its
    traceback, and with it the frames of the refused walk (hundreds of MB of entries)."""
    if isinstance(exc, PairingTooLarge):
        what, limit = exc.what, exc.limit
        return lambda: PairingTooLarge(what, limit)
    if isinstance(exc, UnsafePath):
        path, reason = exc.path, exc.reason
        return lambda: UnsafePath(path, reason)
    fields = (exc.what, exc.path, str(exc), exc.value, exc.limit)
    return lambda: TreeRefused(*fields)
