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

from peerhost_store.errors import PeerhostError
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import Snapshot, decode
from peerhost_store.sync.batches import Cancelled as BatchCancelled
from peerhost_store.sync.batches import build_items
from peerhost_store.sync.delta import DeltaError
from peerhost_store.sync.edits import (
    TreeNotRebuilt,
    decode_tree_upload,
    derived_slots,
    encode_derived,
    plan_tree,
    rebuild_upload,
)
from peerhost_store.sync.pairing import PairingTooLarge
from peerhost_store.sync.protocol import ObjectStatus, ProtocolError
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
from .objects import status, write_objects

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

    def add(data: bytes) -> ObjectId:
        loader.charge()  # a node made costs what a node read does
        return hash_bytes(data)

    with reading_trees("the base tree"):
        try:
            rebuilt = rebuild_upload(loader, store, upload, max_bytes=lim.max_delta_bytes,
                                     rebuild=lim.max_delta_rebuild, cancelled=cancelled,
                                     where="in this session", add=add)
        except DeltaError as exc:
            raise bad_delta(exc) from None
        except BatchCancelled:
            raise Cancelled() from None
        except TreeNotRebuilt as exc:
            raise TreeMismatch(exc.root, exc.got, exc.reason) from None
    new = write_objects(coord, session, hashed=[*((oid, blob) for _, oid, blob in rebuilt.chunks),
                                                *rebuilt.nodes.items()])
    # The pull of this push asks for the same two trees: it is answered this very body (it
    # rebuilt here), and a delta pull is served these items, not built again.
    key = (session, upload.base, upload.root)
    if sum(len(blob) for _, _, blob in rebuilt.chunks) <= lim.max_response_bytes:
        coord.pairings.keep_tree(key, body)
    coord.pairings.keep_items(key, [
        (replace(item, new_id=oid), len(blob)) for item, oid, blob in rebuilt.chunks])
    return {"nodes": len(rebuilt.nodes), "chunks": len(rebuilt.chunks), "new": new}


def serve(coord: Coordinator, session: str, want: ObjectId, have: ObjectId,
          cancelled: Cancel) -> list[bytes]:
    """The pull of snapshot ``want`` by a store holding snapshot ``have``, its parent: ``[tree
    upload, snapshot]``, the tree as what changed from ``have``'s (the client rebuilds its
    nodes and chunks and checks the root); or ``[b""]`` when it cannot be served so (not
    one snapshot apart, not both complete here, past a limit), and the client walks as
    usual.

    The work is bounded as a push's tree upload is (nodes read, items, the answer's size).
    """
    lim = coord.limits
    if status(coord, session, [want, have]) != [ObjectStatus.COMPLETE] * 2:
        return [b""]
    store = coord.store(session)
    loader = _Charged(store, [lim.max_pairing_nodes], lim.max_pairing_nodes, cancelled)
    try:
        data = store.get_raw(want)
        snapshot, base = decode(data), decode(store.get_raw(have))
        if not (isinstance(snapshot, Snapshot) and isinstance(base, Snapshot)
                and snapshot.parents[:1] == (have,)):
            return [b""]
        kept = coord.pairings.tree((session, base.root, snapshot.root))
        if kept is not None:  # the push of this snapshot sent it, and it rebuilt here
            return [kept, data]
        plan = plan_tree(loader, base.root, snapshot.root)
        if plan is None or len(plan.pairs) > lim.max_delta_items:
            return [b""]
        known = coord.pairings.items((session, base.root, snapshot.root))
        built = list(build_items(store, plan.pairs, range(len(plan.pairs)),
                                 cancelled=cancelled, known=known))
        if (sum(b.size for b in built) > lim.max_response_bytes
                or sum(len(b.item.data) for b in built) > lim.max_delta_bytes):
            return [b""]
        return [plan.upload(encode_derived(built, plan.pairs)), data]
    except BatchCancelled:
        raise Cancelled() from None
    except Cancelled:
        raise
    except PeerhostError:  # damaged or odd here, or past the budget (PairingRefused)
        return [b""]  # the client walks
