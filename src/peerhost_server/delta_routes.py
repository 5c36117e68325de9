"""Chunk deltas: objects that travel as a delta against the previous version of their chunk.

* ``POST .../objects/delta`` (push): the client sends a batch; the coordinator rebuilds each
  object from a base in *this session's* store, checks that it hashes to its id, stores what
  verified and answers the ids that did not (the client then uploads those whole).
* ``POST .../objects/delta/get`` (pull): the client names the items it wants; the coordinator
  builds a batch from its store, delta items where it holds the base, raw ones otherwise.

Nothing the client sends is trusted: ids of rebuilt objects are recomputed, bases are loaded
from the session's own store only, and a request's work is capped (items, decompressed
stream, NBT rebuilt, tree nodes loaded and chunk entries considered to pair the trees, whose
base, and a pull's target, must be trees the session accepted), and stops when the client
goes away. Requests usually name two trees and positions in the pairing list both
ends derive from them (:class:`peerhost_store.sync.protocol.DeltaRequest`), so no ids travel;
an upload may instead carry its ids in the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zstandard
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from peerhost_store.bounds import TreeRefused
from peerhost_store.chunk import MAX_NBT_BYTES, ChunkDecodeError, decompress
from peerhost_store.errors import DecodeError, ObjectCorrupt, ObjectMissing
from peerhost_store.ids import ObjectId
from peerhost_store.objects import decode_blob
from peerhost_store.region import NONE
from peerhost_store.store import LmdbStore
from peerhost_store.sync.delta import (
    KIND_DELTA,
    KIND_RAW,
    DeltaError,
    DeltaItem,
    apply_delta,
    decode_batch,
    encode_batch,
    make_item,
)
from peerhost_store.sync.pairing import Pair, PairingCancelled, PairingTooLarge, want_of
from peerhost_store.sync.protocol import (
    DeltaRequest,
    ProtocolError,
    batch_level,
    decode_delta_get,
    decode_delta_upload,
    delta_output_size,
    encode_delta_answer,
    expand_select,
)
from peerhost_store.worldfs import UnsafePath

from .auth import MEMBER, OWNER
from .errors import ApiError
from .head_routes import tree_refused
from .limits import Limits
from .observe import Metrics
from .state import Coordinator
from .storage import write_objects
from .web import (
    Cancelled,
    authorize,
    coordinator,
    limits,
    msgpack_response,
    read_msgpack_body,
    run_cancellable,
    session_name,
)

PLAYERS = {MEMBER, OWNER}


def _bad(exc: ProtocolError | DeltaError) -> ApiError:
    return ApiError(400, "bad_delta", str(exc), {"index": exc.index})


def _selected(coord: Coordinator, session: str, request: DeltaRequest, lim: Limits,
              cancelled: Callable[[], bool], *, validated_target: bool) -> list[Pair]:
    """The pairs ``request`` selects from the pairing list of its two trees.

    The base must be a tree the session accepted (a head's or its history's); so must the
    target of a pull's request (``validated_target``). A push's target is a tree the head has
    not moved to yet: its pairing is bounded by the per-request budget alone.
    """
    if request.count > lim.max_delta_items:
        raise ApiError(413, "too_many_items", f"{request.count} items asked; a delta batch "
                       f"holds at most {lim.max_delta_items}", {"limit": lim.max_delta_items})
    for which, tree in (("base", request.base), ("target", request.target)):
        if (which == "base" or validated_target) and not coord.validated_tree(session, tree):
            raise ApiError(422, "tree_not_validated", f"the {which} tree {tree.hex()} is not "
                           "the tree of a head or of its history in this session",
                           {"id": tree.hex(), "which": which})
    try:
        pairs = coord.pairing(session, request.base, request.target, cancelled)
    except PairingCancelled:
        raise Cancelled() from None
    except PairingTooLarge as exc:
        raise ApiError(413, "pairing_too_large", str(exc), {"what": exc.what,
                                                             "limit": exc.limit}) from None
    except (TreeRefused, UnsafePath) as exc:
        raise tree_refused(exc) from None
    except ObjectMissing as exc:
        raise ApiError(404, "object_missing", f"tree node {exc.oid.hex()} is not stored in "
                       "this session", {"id": exc.oid.hex()}) from None
    except ObjectCorrupt as exc:
        raise ApiError(500, "object_corrupt", str(exc), {"id": exc.expected.hex()}) from None
    except DecodeError as exc:
        raise ApiError(400, "malformed_tree", f"a tree named by the request is malformed: {exc}")
    try:
        return [pairs[i] for i in expand_select(request.select, len(pairs))]
    except ProtocolError as exc:
        raise _bad(exc) from None


# -- push: rebuild what the client sent ----------------------------------------------------


@dataclass
class _Rebuilder:
    """Rebuilds items against bases of one session's store, within a budget of NBT bytes."""

    store: LmdbStore
    budget: int
    cancelled: Callable[[], bool]
    verified: list[tuple[ObjectId, bytes]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    def add(self, item: DeltaItem, base_compression: int | None) -> None:
        if self.cancelled():
            raise Cancelled()
        try:
            blob = self._rebuild(item, base_compression)
        except DeltaError as exc:
            self.failed.append({"id": item.new_id.hex(), "reason": exc.reason})
            return
        self.verified.append((item.new_id, blob))  # apply_delta hashed it and checked the id

    def _rebuild(self, item: DeltaItem, base_compression: int | None) -> bytes:
        if item.kind == KIND_RAW:
            self._charge(item, len(item.data))
        if item.kind != KIND_DELTA:
            return apply_delta(None, item)
        base_raw = self._base(item, base_compression)
        size = delta_output_size(len(base_raw), item.data)
        if size is not None:
            self._charge(item, size)
        # The base is passed decompressed (type NONE), so it is decompressed once, above.
        return apply_delta(base_raw, item, base_compression=NONE,
                           limit=min(MAX_NBT_BYTES, max(len(base_raw), size or 0)))

    def _base(self, item: DeltaItem, compression: int | None) -> bytes:
        assert item.base_id is not None  # decode_batch refuses a delta item without a base
        base = item.base_id.hex()
        try:
            payload = decode_blob(self.store.get_raw(item.base_id))
        except ObjectMissing:
            raise DeltaError(f"base {base} is not stored in this session",
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
        if self.budget <= 0 or size > self.budget:
            self.budget = 0  # what was decompressed is spent either way
            raise DeltaError("over the request's rebuild budget", new_id=item.new_id)
        self.budget -= max(0, size)


def _check_frame(batch: bytes, lim: Limits) -> None:
    try:
        size = zstandard.frame_content_size(batch)
    except zstandard.ZstdError:
        return  # not a frame: decode_batch says so, as a 400
    if size > lim.max_delta_bytes:
        raise ApiError(413, "delta_too_large", f"the batch decompresses to {size} bytes; at "
                       f"most {lim.max_delta_bytes} are accepted", {"limit": lim.max_delta_bytes})


async def upload_delta(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    body = await read_msgpack_body(request)
    coord, lim = coordinator(request), limits(request)

    def run(cancelled: Callable[[], bool]) -> dict[str, Any]:
        try:
            header, batch = decode_delta_upload(body)
        except ProtocolError as exc:
            raise _bad(exc) from None
        _check_frame(batch, lim)
        pairs = None if header is None else _selected(coord, session, header, lim, cancelled,
                                                      validated_target=False)
        try:
            items = decode_batch(batch, max_items=lim.max_delta_items,
                                 max_bytes=lim.max_delta_bytes,
                                 want=None if pairs is None else want_of(pairs))
        except DeltaError as exc:
            raise _bad(exc) from None
        store = coord.store(session)
        absent = set(store.iter_missing(item.new_id for item in items))
        rebuilder = _Rebuilder(store, lim.max_delta_rebuild, cancelled)
        for i, item in enumerate(items):
            if item.new_id not in absent:
                continue  # stored already (a resumed push): nothing to rebuild
            base = None if pairs is None else pairs[i].base
            rebuilder.add(item, None if base is None else base.compression)
        new = write_objects(coord, session, hashed=rebuilder.verified) if rebuilder.verified else 0
        return {"items": len(items), "stored": len(items) - len(rebuilder.failed), "new": new,
                "failed": rebuilder.failed}

    answer = await run_cancellable(request, run)
    metrics: Metrics = request.app.state.metrics
    metrics.objects_stored.inc(answer["new"])
    return JSONResponse(answer)


# -- pull: build a batch for the client ----------------------------------------------------


def _load_blob(store: LmdbStore, oid: ObjectId) -> bytes:
    try:
        return decode_blob(store.get_raw(oid))
    except ObjectMissing:
        raise ApiError(404, "object_missing", f"object {oid.hex()} is not stored in this "
                       "session", {"id": oid.hex()}) from None
    except ObjectCorrupt as exc:
        raise ApiError(500, "object_corrupt", str(exc), {"id": oid.hex()}) from None
    except DecodeError:
        raise ApiError(500, "object_corrupt", f"chunk object {oid.hex()} is not a blob",
                       {"id": oid.hex()}) from None


def _load_base(store: LmdbStore, oid: ObjectId) -> bytes | None:
    try:
        return decode_blob(store.get_raw(oid))
    except (ObjectMissing, ObjectCorrupt, DecodeError):
        return None  # then the item goes raw: the client rebuilds it without a base


def build_batch(store: LmdbStore, pairs: list[Pair], lim: Limits,
                cancelled: Callable[[], bool] = lambda: False) -> tuple[int, bytes]:
    """Items for a prefix of ``pairs``: at least one, and stopping before they rebuild
    ``max_response_bytes`` of objects or their stream exceeds ``max_delta_bytes``.

    Raises:
        Cancelled: ``cancelled()`` turned true (checked before each item: a few ms each).
    """
    items: list[DeltaItem] = []
    rebuilt = stream = 0
    for pair in pairs:
        if cancelled():
            raise Cancelled()
        payload = _load_blob(store, pair.new.oid)
        if items and rebuilt + len(payload) > lim.max_response_bytes:
            break
        base = None if pair.base is None else _load_base(store, pair.base.oid)
        item = make_item(
            payload, pair.new.compression,
            base_id=None if base is None or pair.base is None else pair.base.oid,
            base_payload=base,
            base_compression=None if pair.base is None else pair.base.compression,
        )
        if items and stream + len(item.data) > lim.max_delta_bytes:
            break
        items.append(item)
        rebuilt += len(payload)
        stream += len(item.data)
    count = len(items)
    return count, encode_batch(items, want=want_of(pairs[:count]), level=batch_level(stream))


async def download_delta(request: Request) -> Response:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    body = await read_msgpack_body(request)
    coord, lim = coordinator(request), limits(request)

    def run(cancelled: Callable[[], bool]) -> bytes:
        try:
            header = decode_delta_get(body)
        except ProtocolError as exc:
            raise _bad(exc) from None
        pairs = _selected(coord, session, header, lim, cancelled, validated_target=True)
        return encode_delta_answer(*build_batch(coord.store(session), pairs, lim, cancelled))

    return msgpack_response(await run_cancellable(request, run))


routes = [
    Route("/v1/sessions/{session}/objects/delta/get", download_delta, methods=["POST"]),
    Route("/v1/sessions/{session}/objects/delta", upload_delta, methods=["POST"]),
]
