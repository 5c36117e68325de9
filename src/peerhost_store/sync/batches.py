"""Chunk delta batches, built and rebuilt: the one builder and the one rebuilder both ends of a
transfer use. A push builds on the client and rebuilds on the coordinator; a pull builds on the
coordinator and rebuilds on the client.

* :func:`build_items` makes a :class:`~.delta.DeltaItem` for each pair of a pairing list (a
  delta against the pair's base when this side holds it, the chunk's NBT otherwise), reading
  payloads and bases a batch at a time;
* :func:`cut` groups built items into batches that stay within :class:`BatchLimits`, and
  :func:`encode` makes the wire bytes of one;
* :class:`Rebuilder` turns received items back into objects against this side's bases, within
  a budget of decompressed bytes, checking every result against its id.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from ..chunk import MAX_NBT_BYTES, ChunkDecodeError, decompress
from ..errors import DecodeError, ObjectCorrupt, ObjectMissing
from ..ids import ObjectId, hash_bytes
from ..objects import decode_blob
from ..region import NONE, ZLIB
from .delta import (
    BASED_KINDS,
    KIND_DELTA,
    KIND_RAW,
    KIND_STORED,
    DeltaError,
    DeltaItem,
    apply_delta,
    encode_batch,
    make_item,
    zstd_output_size,
)
from .pairing import Pair, want_of
from .protocol import BATCH_LEVEL, READ_BATCH, delta_output_size

__all__ = [
    "IN_FLIGHT_NBT",
    "PARALLEL_FROM",
    "REBUILD_THREADS",
    "TRUST_AFTER",
    "BatchLimits",
    "Built",
    "Cancelled",
    "NotABlob",
    "PayloadReader",
    "Rebuilder",
    "build_items",
    "cut",
    "encode",
]

_Cancel = Callable[[], bool]

#: A builder checks that this many zlib chunks reproduce when recompressed (the game's own
#: output always does) before it trusts the rest to (see ``make_item(trust_zlib=...)``): the
#: check was 60% of building; a chunk that does not reproduce fails the receiver's id check
#: and travels whole.
TRUST_AFTER = 16
#: Worker threads of :meth:`Rebuilder.add_many`.
REBUILD_THREADS = min(4, os.cpu_count() or 1)
#: NBT bytes from which :meth:`Rebuilder.add_many` rebuilds an item on a worker thread.
PARALLEL_FROM = 16 << 10
#: Bytes of bases and NBT the items rebuilding on worker threads may hold together.
IN_FLIGHT_NBT = 16 << 20


class Cancelled(Exception):
    """The work was given up: ``cancelled()`` turned true (the client went away)."""


class NotABlob(DecodeError):
    """A chunk object a pairing list names is not a blob (a hostile or damaged tree)."""

    def __init__(self, oid: ObjectId, detail: str) -> None:
        self.oid = oid
        super().__init__(f"chunk object {oid.hex()} is not a blob: {detail}")


class PayloadReader(Protocol):
    """What building and rebuilding read through (a checked store)."""

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class Built:
    """One built item: its position in the caller's pairing list, the item, and the encoded
    size of the object it rebuilds."""

    position: int
    item: DeltaItem
    size: int


class BatchLimits(NamedTuple):
    """What one batch may hold: encoded bytes of the objects it rebuilds, bytes of its
    (decompressed) stream, items."""

    rebuilt: int
    stream: int
    items: int


def _tolerant(store: PayloadReader, oids: list[ObjectId]) -> list[bytes | None]:
    """Bases: a damaged or missing one is None (its chunk then travels as NBT, raw)."""
    try:
        return list(store.get_many(oids))
    except (ObjectMissing, ObjectCorrupt):
        out: list[bytes | None] = []
        for oid in oids:
            try:
                out.append(store.get_many([oid])[0])
            except (ObjectMissing, ObjectCorrupt):
                out.append(None)
        return out


def _blob(data: bytes | None) -> bytes | None:
    if data is None:
        return None
    try:
        return decode_blob(data)
    except DecodeError:
        return None


def build_items(store: PayloadReader, pairs: Sequence[Pair], positions: Iterable[int], *,
                cancelled: _Cancel | None = None,
                known: Mapping[ObjectId, tuple[DeltaItem, int]] | None = None) -> Iterator[Built]:
    """An item for each of ``positions`` of ``pairs``, in order.

    ``known`` holds items built (and checked) before for these pairs, by chunk id, with the
    size of the object each rebuilds: those are not built again. One is used only where it
    fits its pair (a delta against the pair's base, or no base at all).

    Raises:
        ObjectMissing, ObjectCorrupt: a new chunk's payload is not readable here.
        NotABlob: a new chunk's object is not a blob.
        Cancelled: ``cancelled()`` turned true (checked before each item).
    """
    wanted = list(positions)
    # zlib payloads seen to reproduce: from TRUST_AFTER on, the rest are trusted; -1 once
    # one did not (then every one is checked).
    checked = 0
    for start in range(0, len(wanted), READ_BATCH):
        part = wanted[start:start + READ_BATCH]
        ready = {i: known[pairs[i].new.oid] for i in part
                 if known and _fits(known.get(pairs[i].new.oid), pairs[i])}
        built = [i for i in part if i not in ready]
        news = dict(zip(built, store.get_many([pairs[i].new.oid for i in built]), strict=True))
        based = [i for i in built if pairs[i].base is not None]
        read = _tolerant(store, [pairs[i].base.oid for i in based])  # type: ignore[union-attr]
        bases = dict(zip(based, read, strict=True))
        for i in part:
            if cancelled is not None and cancelled():
                raise Cancelled()
            if i in ready:
                yield Built(i, *ready[i])
                continue
            pair, data = pairs[i], news[i]
            base = _blob(bases.get(i))
            try:
                payload = decode_blob(data)
            except DecodeError as exc:
                raise NotABlob(pair.new.oid, str(exc)) from None
            item = make_item(
                payload, pair.new.compression,
                base_id=None if base is None or pair.base is None else pair.base.oid,
                base_payload=base,
                base_compression=None if pair.base is None else pair.base.compression,
                trust_zlib=checked >= TRUST_AFTER,
            )
            if pair.new.compression == ZLIB and 0 <= checked < TRUST_AFTER:
                # A stored zlib chunk did not reproduce: check every one from here on.
                checked = -1 if item.kind == KIND_STORED else checked + 1
            yield Built(i, item, len(data))


def _fits(known: tuple[DeltaItem, int] | None, pair: Pair) -> bool:
    if known is None:
        return False
    item = known[0]
    if item.kind in BASED_KINDS:
        return pair.base is not None and item.base_id == pair.base.oid
    return item.compression == pair.new.compression


def cut(built: Iterable[Built], limits: BatchLimits) -> Iterator[list[Built]]:
    """Consecutive batches of ``built``, each as long as it can be within ``limits`` (and at
    least one item, whatever its size)."""
    batch: list[Built] = []
    rebuilt = stream = 0
    for one in built:
        if batch and (rebuilt + one.size > limits.rebuilt or len(batch) >= limits.items
                      or stream + len(one.item.data) > limits.stream):
            yield batch
            batch, rebuilt, stream = [], 0, 0
        batch.append(one)
        rebuilt += one.size
        stream += len(one.item.data)
    if batch:
        yield batch


def encode(batch: Sequence[Built], pairs: Sequence[Pair]) -> bytes:
    """The wire bytes of ``batch`` (ids left out: the receiver's pairing list names them)."""
    return encode_batch([b.item for b in batch], want=want_of([pairs[b.position] for b in batch]),
                        level=BATCH_LEVEL)


@dataclass
class Rebuilder:
    """Rebuilds received items into objects against bases read through ``store``, within a
    ``budget`` of NBT bytes decompressed and rebuilt (None: no budget). Each rebuilt object is
    checked against its id (:func:`~.delta.apply_delta` hashes it); an item that fails is
    reported, never stored.

    Attributes:
        verified: ``(id, object bytes)`` of each item rebuilt.
        failed: ``(id, reason)`` of each item that was not.
    """

    store: PayloadReader
    budget: int | None = None
    cancelled: _Cancel | None = None
    #: Where the bases are looked up, for messages ("here", "in this session").
    where: str = "here"
    #: The items' ids are not known (:mod:`.edits`): each rebuilt blob is hashed for its id,
    #: which :attr:`verified` holds, and whoever uses them checks what they build.
    derive: bool = False
    verified: list[tuple[ObjectId, bytes]] = field(default_factory=list)
    failed: list[tuple[ObjectId, str]] = field(default_factory=list)

    def add(self, item: DeltaItem, base_compression: int | None) -> bytes | None:
        """Rebuild ``item`` (whose base, if any, has ``base_compression``); the object, or
        None when it failed (see :attr:`failed`).

        Raises:
            Cancelled: ``cancelled()`` turned true.
        """
        return self.add_many([(item, base_compression)])[0]

    def add_many(self, items: Sequence[tuple[DeltaItem, int | None]]) -> list[bytes | None]:
        """:meth:`add` for each ``(item, base_compression)``, in order, the large ones on up
        to :data:`REBUILD_THREADS` worker threads.

        Bases are read and decompressed, and the budget charged, here, in order, so what
        fails for the budget is what would fail one by one. An item that rebuilds at least
        :data:`PARALLEL_FROM` bytes of NBT is patched, recompressed (zlib level 6: 0.5 ms a
        real 1.12 chunk, most of a rebuild) and hashed on a worker thread: zlib and zstd let
        go of the GIL, and the coordinator's rebuild of 345 such chunks went from 0.24 to
        0.15 s on two cores. Smaller ones are rebuilt here: for 1,255 chunks of a few KB a
        thread each cost more than it saved (0.09 -> 0.2 s).

        Memory stays what one item at a time needed, plus :data:`IN_FLIGHT_NBT`: items
        running hold at most that many bytes of bases and NBT together (at most twice as many
        items as threads), and a larger item runs here, alone, once the others finished. An
        item's outcome is settled as soon as it is known, so a failed one keeps no frames
        (and no decompressed base) alive.

        Raises:
            Cancelled: ``cancelled()`` turned true (what was rebuilt so far is kept).
        """
        outcomes: list[Future[bytes] | bytes | str] = []  # the blob, or why it failed
        running: deque[tuple[int, int]] = deque()  # (index in outcomes, bytes it holds)
        held = 0

        def settle_oldest() -> None:
            nonlocal held
            index, cost = running.popleft()
            held -= cost
            future = outcomes[index]
            assert isinstance(future, Future)
            try:
                outcomes[index] = future.result()
            except DeltaError as exc:
                outcomes[index] = exc.reason

        with ThreadPoolExecutor(REBUILD_THREADS, thread_name_prefix="phs-rebuild") as pool:
            try:
                for item, base_compression in items:
                    if self.cancelled is not None and self.cancelled():
                        raise Cancelled()
                    try:
                        base, limit, size = self._prepare(item, base_compression)
                        cost = size + (0 if base is None else len(base))
                        if size >= PARALLEL_FROM and cost <= IN_FLIGHT_NBT:
                            while running and (len(running) >= 2 * REBUILD_THREADS
                                               or held + cost > IN_FLIGHT_NBT):
                                settle_oldest()
                            running.append((len(outcomes), cost))
                            held += cost
                            outcomes.append(pool.submit(apply_delta, base, item,
                                                        base_compression=NONE, limit=limit,
                                                        check=not self.derive))
                            continue
                        if cost > IN_FLIGHT_NBT:
                            while running:
                                settle_oldest()
                        outcomes.append(apply_delta(base, item, base_compression=NONE,
                                                    limit=limit, check=not self.derive))
                    except DeltaError as exc:
                        outcomes.append(exc.reason)
                    finally:
                        base = None  # not held while the next base is decompressed
            finally:
                while running:
                    settle_oldest()
                # Also when cancelled: what was rebuilt so far is kept.
                out: list[bytes | None] = []
                for (item, _), outcome in zip(items, outcomes, strict=False):
                    if isinstance(outcome, bytes):
                        oid = hash_bytes(outcome) if self.derive else item.new_id
                        self.verified.append((oid, outcome))
                        out.append(outcome)
                    else:
                        assert isinstance(outcome, str)
                        self.failed.append((item.new_id, outcome))
                        out.append(None)
        return out

    def _prepare(self, item: DeltaItem, base_compression: int | None
                 ) -> tuple[bytes | None, int, int]:
        """The base (decompressed), the NBT limit to rebuild ``item`` with, and the NBT size
        it declares (or the base's), charged to the budget."""
        if item.kind == KIND_RAW:
            self._charge(item, len(item.data))
        if item.kind not in BASED_KINDS:
            return None, MAX_NBT_BYTES, len(item.data)
        base_raw = self._base(item, base_compression)
        if item.kind == KIND_DELTA:
            size = delta_output_size(len(base_raw), item.data)
        else:
            size = zstd_output_size(item.data)
        if size is not None:
            self._charge(item, size)
        # The base is passed decompressed (type NONE), so it is decompressed once, above.
        limit = min(MAX_NBT_BYTES, max(len(base_raw), size or 0))
        return base_raw, limit, len(base_raw) if size is None else size

    def _base(self, item: DeltaItem, compression: int | None) -> bytes:
        assert item.base_id is not None  # decode_batch refuses a delta item without a base
        base = item.base_id.hex()
        try:
            payload = decode_blob(self.store.get_many([item.base_id])[0])
        except ObjectMissing:
            raise DeltaError(f"base {base} is not stored {self.where}",
                             new_id=item.new_id) from None
        except (ObjectCorrupt, DecodeError):
            raise DeltaError(f"base {base} is not a blob", new_id=item.new_id) from None
        # Checked before and after: one base may overrun the budget by at most MAX_NBT_BYTES.
        self._charge(item, 0)
        try:
            raw = decompress(item.compression if compression is None else compression, payload)
        except ChunkDecodeError as exc:
            raise DeltaError(f"base {base} is not a chunk payload: {exc}",
                             new_id=item.new_id) from None
        self._charge(item, len(raw))
        return raw

    def _charge(self, item: DeltaItem, size: int) -> None:
        if self.budget is None:
            return
        if self.budget <= 0 or size > self.budget:
            self.budget = 0  # what was decompressed is spent either way
            raise DeltaError("over the request's rebuild budget", new_id=item.new_id)
        self.budget -= max(0, size)
