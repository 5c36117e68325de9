"""Pairing lists already computed, and refusals already given.

A push or pull of a large change sends many delta requests for the same two trees, and each
would otherwise diff them again. Trees are content-addressed, so a list (or a refusal: a tree
out of bounds, a pairing over budget) computed once stays true for as long as the ids exist,
in this process or any other: the memo is no single-process assumption. It holds at most
:data:`PAIRINGS_KEPT` entries and twice ``max_pairing_chunks`` pairs together.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from peerhost_store.bounds import TreeRefused
from peerhost_store.ids import ObjectId
from peerhost_store.sync.pairing import Pair, PairingTooLarge
from peerhost_store.worldfs import UnsafePath

PAIRINGS_KEPT = 8

Key = tuple[str, ObjectId, ObjectId]  # session, base tree, target tree
Refusal = TreeRefused | UnsafePath | PairingTooLarge


class PairingMemo:
    """The last few pairing lists and refusals, by session and trees."""

    def __init__(self, max_chunks: int) -> None:
        self._max_pairs = 2 * max_chunks
        self._kept: OrderedDict[Key, list[Pair] | Callable[[], Exception]] = OrderedDict()
        self._lock = threading.Lock()

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
