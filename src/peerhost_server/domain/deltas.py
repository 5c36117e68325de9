"""Chunk deltas: objects that travel as a delta against the previous version of their chunk.

* Push (:func:`accept`): the client sends a batch; each object is rebuilt from a base in *this
  session's* store and checked to hash to its id; what verified is stored, the ids that did not
  are answered (the client then uploads those whole).
* Pull (:func:`serve`): the client names the items it wants; a batch is built from the store,
  delta items where it holds the base, raw ones otherwise.

Nothing the client sends is trusted: ids of rebuilt objects are recomputed, bases are loaded
from the session's own store only, and a request's work is capped (items, decompressed
stream, NBT rebuilt, tree nodes loaded and chunk entries considered to pair the trees, whose
base, and a pull's target, must be trees the session accepted), and stops when ``cancelled()``
turns true (the client went away). Requests usually name two trees and positions in the
pairing list both ends derive from them (:class:`peerhost_store.sync.protocol.DeltaRequest`),
so no ids travel; an upload may instead carry its ids in the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import zstandard

from peerhost_store.bounds import DIR, TreeRefused, check_tree
from peerhost_store.errors import DecodeError, ObjectCorrupt, ObjectMissing
from peerhost_store.ids import ObjectId
from peerhost_store.sync.batches import (
    BatchLimits,
    NotABlob,
    Rebuilder,
    build_items,
    cut,
    encode,
)
from peerhost_store.sync.batches import Cancelled as BatchCancelled
from peerhost_store.sync.delta import DeltaError, decode_batch
from peerhost_store.sync.pairing import (
    Budget,
    Pair,
    PairingCancelled,
    PairingTooLarge,
    pair_chunks,
    want_of,
)
from peerhost_store.sync.protocol import (
    DeltaRequest,
    ProtocolError,
    expand_select,
)
from peerhost_store.worldfs import UnsafePath

from ..limits import Limits
from .coordinator import Coordinator
from .errors import (
    BadDelta,
    Cancelled,
    DeltaTooLarge,
    MalformedTree,
    ObjectNotStored,
    PairingRefused,
    RefusedTree,
    StoredObjectCorrupt,
    TooManyItems,
    TreeNotValidated,
)
from .objects import write_objects
from .pairings import KnownItem
from .protocols import SessionObjects

Cancel = Callable[[], bool]


def bad_delta(exc: ProtocolError | DeltaError) -> BadDelta:
    """The refusal of a delta request or batch that does not parse."""
    return BadDelta(str(exc), exc.index)


# -- the trees a request names -------------------------------------------------------------


def validated_tree(coord: Coordinator, session: str, oid: ObjectId) -> bool:
    """Whether ``oid`` is the root of a tree this session accepted at a head move (the tree of
    a head or of its history), within today's bounds."""
    summary = coord.summaries(session, [oid])[0]
    if summary is None or summary.kind != DIR or summary.reserved:
        return False
    try:
        summary.within(coord.limits.tree, "/")
    except TreeRefused:
        return False
    return True


def pairing(coord: Coordinator, session: str, base: ObjectId, target: ObjectId,
            cancelled: Cancel = lambda: False) -> list[Pair]:
    """``pair_chunks`` of two trees of the session's store, within the per-request budget,
    remembered for the next request (:class:`~.pairings.PairingMemo`).

    Raises:
        ObjectMissing: a node of either tree is not stored in this session.
        TreeRefused, UnsafePath: the target is not validated and fails
            :func:`peerhost_store.bounds.check_tree`.
        DecodeError: a node is malformed; PairingTooLarge past the budget.
        PairingCancelled: ``cancelled()`` turned true.
    """
    key = (session, base, target)
    known = coord.pairings.get(key)
    if known is not None:
        return known
    store = coord.store(session)
    try:
        if not validated_tree(coord, session, target):
            # A push's tree, not a head yet: the client's bounded check first (each distinct
            # directory node once), so a bomb costs its size, not the whole budget.
            check_tree(store, target, coord.limits.tree)
        budget = Budget(coord.limits.max_pairing_nodes, coord.limits.max_pairing_chunks,
                        cancelled)
        pairs = pair_chunks(store, base, target, budget=budget)
    except (TreeRefused, UnsafePath, PairingTooLarge) as exc:
        coord.pairings.put(key, exc)
        raise
    coord.pairings.put(key, pairs)
    return pairs


@contextmanager
def reading_trees(what: str) -> Iterator[None]:
    """The library's errors of reading this session's tree nodes as the domain's: a node not
    stored (404), damaged here, or malformed (``what`` is malformed)."""
    try:
        yield
    except ObjectMissing as exc:
        raise ObjectNotStored(exc.oid, f"tree node {exc.oid.hex()} is not stored in this "
                              "session") from None
    except ObjectCorrupt as exc:
        raise StoredObjectCorrupt(exc.expected, str(exc)) from None
    except DecodeError as exc:
        raise MalformedTree(f"{what} is malformed: {exc}") from None


def selected(coord: Coordinator, session: str, request: DeltaRequest, cancelled: Cancel, *,
             validated_target: bool) -> list[Pair]:
    """The pairs ``request`` selects from the pairing list of its two trees.

    The base must be a tree the session accepted (a head's or its history's); so must the
    target of a pull's request (``validated_target``). A push's target is a tree the head has
    not moved to yet: its pairing is bounded by the per-request budget alone.
    """
    lim = coord.limits
    if request.count > lim.max_delta_items:
        raise TooManyItems(request.count, lim.max_delta_items)
    for which, tree in (("base", request.base), ("target", request.target)):
        if (which == "base" or validated_target) and not validated_tree(coord, session, tree):
            raise TreeNotValidated(which, tree)
    with reading_trees("a tree named by the request"):
        try:
            pairs = pairing(coord, session, request.base, request.target, cancelled)
        except PairingCancelled:
            raise Cancelled() from None
        except PairingTooLarge as exc:
            raise PairingRefused(exc) from None
        except (TreeRefused, UnsafePath) as exc:
            raise RefusedTree(exc) from None
    try:
        return [pairs[i] for i in expand_select(request.select, len(pairs))]
    except ProtocolError as exc:
        raise bad_delta(exc) from None


# -- push: rebuild what the client sent ----------------------------------------------------


def _check_frame(batch: bytes, lim: Limits) -> None:
    try:
        size = zstandard.frame_content_size(batch)
    except zstandard.ZstdError:
        return  # not a frame: decode_batch says so, as a BadDelta
    if size > lim.max_delta_bytes:
        raise DeltaTooLarge(size, lim.max_delta_bytes)


def accept(coord: Coordinator, session: str, header: DeltaRequest | None, batch: bytes,
           cancelled: Cancel) -> dict[str, Any]:
    """Rebuild, verify and store a pushed batch (``header`` names its pairs, or None when
    the batch carries its ids); return ``{items, stored, new, failed}``."""
    lim = coord.limits
    _check_frame(batch, lim)
    pairs = None if header is None else selected(coord, session, header, cancelled,
                                                 validated_target=False)
    try:
        items = decode_batch(batch, max_items=lim.max_delta_items, max_bytes=lim.max_delta_bytes,
                             want=None if pairs is None else want_of(pairs))
    except DeltaError as exc:
        raise bad_delta(exc) from None
    store = coord.store(session)
    absent = set(store.missing(item.new_id for item in items))
    rebuilder = Rebuilder(store, lim.max_delta_rebuild, cancelled, where="in this session")
    todo = []
    for i, item in enumerate(items):
        if item.new_id not in absent:
            continue  # stored already (a resumed push): nothing to rebuild
        base = None if pairs is None else pairs[i].base
        todo.append((item, None if base is None else base.compression))
    try:
        blobs = rebuilder.add_many(todo)
    except BatchCancelled:
        raise Cancelled() from None
    verified = [(item, len(blob)) for (item, _), blob in zip(todo, blobs, strict=True)
                if blob is not None]
    new = write_objects(coord, session, hashed=rebuilder.verified) if rebuilder.verified else 0
    if header is not None and verified:
        # The pull of this push asks for the same pairs: it is served these, not rebuilt.
        key = (session, header.base, header.target)
        coord.pairings.keep_items(key, verified)
        if (len(verified) == len(items) and not rebuilder.failed
                and sum(size for _, size in verified) <= lim.max_response_bytes):
            # Every item rebuilt to its id, within what an answer may hold (the stream was
            # bounded by decode_batch): the very bytes answer a pull of the same selection.
            coord.pairings.keep_batch(key, header.select, len(items), batch)
    return {"items": len(items), "stored": len(items) - len(rebuilder.failed), "new": new,
            "failed": [{"id": oid.hex(), "reason": why} for oid, why in rebuilder.failed]}


# -- pull: build a batch for the client ----------------------------------------------------


def build_batch(store: SessionObjects, pairs: list[Pair], lim: Limits,
                cancelled: Cancel = lambda: False,
                known: dict[ObjectId, KnownItem] | None = None) -> tuple[int, bytes]:
    """Items for a prefix of ``pairs``: at least one, and stopping before they rebuild
    ``max_response_bytes`` of objects or their stream exceeds ``max_delta_bytes``. Items in
    ``known`` (verified when a push sent them) are not built again.

    Raises:
        Cancelled: ``cancelled()`` turned true (checked before each item: a few ms each).
        ObjectNotStored, StoredObjectCorrupt: a chunk the pairs name is not readable here.
    """
    limits = BatchLimits(lim.max_response_bytes, lim.max_delta_bytes, len(pairs))
    try:
        batch = next(cut(build_items(store, pairs, range(len(pairs)), cancelled=cancelled,
                                     known=known), limits), [])
    except BatchCancelled:
        raise Cancelled() from None
    except ObjectMissing as exc:
        raise ObjectNotStored(exc.oid) from None
    except ObjectCorrupt as exc:
        raise StoredObjectCorrupt(exc.expected, str(exc)) from None
    except NotABlob as exc:
        raise StoredObjectCorrupt(exc.oid, str(exc)) from None
    return len(batch), encode(batch, pairs)


def serve(coord: Coordinator, session: str, request: DeltaRequest, cancelled: Cancel
          ) -> tuple[int, bytes]:
    """The batch for a prefix of what a pull asks: how many items, and the batch."""
    pairs = selected(coord, session, request, cancelled, validated_target=True)
    key = (session, request.base, request.target)
    kept = coord.pairings.batch(key, request.select)
    if kept is not None:  # a push sent this selection, every item verified here
        return kept
    return build_batch(coord.store(session), pairs, coord.limits, cancelled,
                       coord.pairings.items(key))
