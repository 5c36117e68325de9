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
from peerhost_store.sync.delta import DeltaError
from peerhost_store.sync.edits import (
    TreeNotRebuilt,
    build_upload,
    decode_tree_upload,
    derived_slots,
    rebuild_upload,
)
from peerhost_store.sync.pairing import Budget, PairingCancelled, PairingTooLarge
from peerhost_store.sync.protocol import ObjectStatus, ProtocolError

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


def _budget(coord: Coordinator, cancelled: Cancel) -> Budget:
    """The nodes one tree request may read and make (the pairing budget)."""
    lim = coord.limits
    return Budget(lim.max_pairing_nodes, lim.max_pairing_chunks, cancelled)


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
    budget = _budget(coord, cancelled)

    def add(data: bytes) -> ObjectId:
        budget.spend_node()  # a node made costs what a node read does
        return hash_bytes(data)

    with reading_trees("the base tree"):
        try:
            rebuilt = rebuild_upload(budget.loader(store), store, upload,
                                     max_bytes=lim.max_delta_bytes,
                                     rebuild=lim.max_delta_rebuild, cancelled=cancelled,
                                     where="in this session", add=add)
        except DeltaError as exc:
            raise bad_delta(exc) from None
        except (BatchCancelled, PairingCancelled):
            raise Cancelled() from None
        except PairingTooLarge as exc:
            raise PairingRefused(exc) from None
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
    try:
        data = store.get_raw(want)
        snapshot, base = decode(data), decode(store.get_raw(have))
        if not (isinstance(snapshot, Snapshot) and isinstance(base, Snapshot)
                and snapshot.parents[:1] == (have,)):
            return [b""]
        kept = coord.pairings.tree((session, base.root, snapshot.root))
        if kept is not None:  # the push of this snapshot sent it, and it rebuilt here
            return [kept, data]
        upload = build_upload(_budget(coord, cancelled).loader(store), store, base.root,
                              snapshot.root, max_items=lim.max_delta_items,
                              max_rebuilt=lim.max_response_bytes, max_stream=lim.max_delta_bytes,
                              known=coord.pairings.items((session, base.root, snapshot.root)),
                              cancelled=cancelled)
        return [b""] if upload is None else [upload.body, data]
    except (BatchCancelled, PairingCancelled):
        raise Cancelled() from None
    except PeerhostError:  # damaged or odd here, or past the budget (PairingTooLarge)
        return [b""]  # the client walks
