"""Tree uploads (:mod:`peerhost_store.sync.edits`): a push sends what changed from the session
head's tree, and the coordinator rebuilds the new tree's nodes and chunks itself.

Nothing the client sends is trusted. The base must be a tree the session accepted; the
changes are decoded within the delta limits; every node read and every node made is charged
to the per-request pairing budget; the chunks are rebuilt within the rebuild budget, each
blob hashed here for its id; and the whole is stored only when grafting the changes onto the
base gives the root the client named: a Merkle root that matches proves every node and every
derived id. Whatever fails stores nothing (:class:`~.errors.TreeMismatch` and the limits'
errors), and the client sends the nodes whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from peerhost_store.area import GraftRefused
from peerhost_store.errors import DecodeError
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.sync.batches import Cancelled as BatchCancelled
from peerhost_store.sync.batches import Rebuilder
from peerhost_store.sync.delta import DeltaError, decode_batch
from peerhost_store.sync.edits import (
    DERIVED,
    chunk_wants,
    decode_tree_upload,
    derived_slots,
    rebuild_tree,
)
from peerhost_store.sync.pairing import PairingTooLarge
from peerhost_store.sync.protocol import ProtocolError
from peerhost_store.tree import ObjectLoader

from .coordinator import Coordinator
from .deltas import bad_delta, reading_trees, validated_tree
from .errors import (
    Cancelled,
    MalformedTree,
    PairingRefused,
    TooManyItems,
    TreeMismatch,
    TreeNotValidated,
)
from .objects import write_objects

Cancel = Callable[[], bool]


class _Charged:
    """A loader that charges each node read to the request's budget."""

    def __init__(self, store: ObjectLoader, budget: list[int], limit: int,
                 cancelled: Cancel) -> None:
        self.store, self.budget, self.limit, self.cancelled = store, budget, limit, cancelled

    def charge(self) -> None:
        if self.cancelled():
            raise Cancelled()
        self.budget[0] -= 1
        if self.budget[0] < 0:
            raise PairingRefused(PairingTooLarge("nodes", self.limit))

    def get_raw(self, oid: ObjectId) -> bytes:
        self.charge()
        return self.store.get_raw(oid)


def accept(coord: Coordinator, session: str, body: bytes, cancelled: Cancel) -> dict[str, Any]:
    """Rebuild, verify and store a tree upload; return ``{nodes, chunks, new}``.

    Raises:
        MalformedTree, BadDelta: the body or its batch does not parse.
        TooManyItems, PairingRefused, DeltaTooLarge: past a limit.
        TreeNotValidated: the base is not a tree the session accepted.
        TreeMismatch: the changes do not give the root (nothing stored).
        QuotaExceeded, DiskFull: no room for what it rebuilt.
    """
    lim = coord.limits
    try:
        upload = decode_tree_upload(body, max_changes=lim.max_pairing_chunks,
                                    max_bytes=lim.max_delta_bytes)
    except ProtocolError as exc:
        raise MalformedTree(str(exc)) from None
    if not validated_tree(coord, session, upload.base):
        raise TreeNotValidated("base", upload.base)
    slots = derived_slots(upload.regions)
    if len(slots) > lim.max_delta_items:
        raise TooManyItems(len(slots), lim.max_delta_items)
    store = coord.store(session)
    loader = _Charged(store, [lim.max_pairing_nodes], lim.max_pairing_nodes, cancelled)
    nodes: dict[ObjectId, bytes] = {}

    def add(data: bytes) -> ObjectId:
        loader.charge()  # a node made costs what a node read does
        oid = hash_bytes(data)
        nodes[oid] = data
        return oid

    with reading_trees("the base tree"):
        try:
            wants = chunk_wants(loader, upload.base, slots)
            items = decode_batch(upload.batch, max_items=lim.max_delta_items,
                                 max_bytes=lim.max_delta_bytes,
                                 want=[(DERIVED, None if w.base is None else w.base.oid)
                                       for w in wants])
            rebuilder = Rebuilder(store, lim.max_delta_rebuild, cancelled,
                                  where="in this session", derive=True)
            rebuilder.add_many([(item, None if w.base is None else w.base.compression)
                                for item, w in zip(items, wants, strict=True)])
            if rebuilder.failed:
                _, reason = rebuilder.failed[0]
                raise TreeMismatch(upload.root, None, f"{len(rebuilder.failed)} of "
                                   f"{len(items)} chunks do not rebuild: {reason}")
            ids = [oid for oid, _ in rebuilder.verified]
            root = rebuild_tree(loader, add, upload, ids)
        except DeltaError as exc:
            raise bad_delta(exc) from None
        except BatchCancelled:
            raise Cancelled() from None
        except GraftRefused as exc:
            raise TreeMismatch(upload.root, None, str(exc)) from None
        except DecodeError:
            raise
        except ValueError as exc:  # from rebuild_tree: a kept chunk the base lacks
            raise TreeMismatch(upload.root, None, str(exc)) from None
    if root != upload.root:
        raise TreeMismatch(upload.root, root, "its root differs")
    new = write_objects(coord, session, hashed=[*rebuilder.verified, *nodes.items()])
    # The pull of this push pairs the same two trees: it is served these items, not rebuilt.
    coord.pairings.keep_items((session, upload.base, upload.root), [
        (replace(item, new_id=oid), len(blob))
        for item, (oid, blob) in zip(items, rebuilder.verified, strict=True)])
    return {"nodes": len(nodes), "chunks": len(ids), "new": new}
