"""Object transfer: which ids a session lacks, their status, upload, download
(:mod:`.domain.objects` checks and stores)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from peerhost_store.sync.protocol import (
    ZMSGPACK,
    ProtocolError,
    encode_ids,
    encode_objects,
    encode_statuses,
    split_upload,
)

from .auth import MEMBER, OWNER
from .domain import objects
from .errors import ApiError
from .observe import Metrics
from .web import (
    accepts_compressed,
    authorize,
    coordinator,
    media_type,
    msgpack_response,
    read_ids,
    read_msgpack_parts,
    read_want_have,
    run_bulk,
    session_name,
    unframe,
)

PLAYERS = {MEMBER, OWNER}


async def missing(request: Request) -> Response:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    ids = await read_ids(request)
    lacking = await run_in_threadpool(objects.missing, coordinator(request), session, ids)
    return msgpack_response(encode_ids(lacking))


async def status(request: Request) -> Response:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    ids = await read_ids(request)
    statuses = await run_in_threadpool(objects.status, coordinator(request), session, ids)
    return msgpack_response(encode_statuses(statuses))


async def upload(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    with_ids = request.query_params.get("ids") == "1"
    received = await read_msgpack_parts(request, compressed=True)
    compressed = media_type(request) == ZMSGPACK
    coord = coordinator(request)

    def run() -> tuple[int, int]:
        body = b"".join(received)  # here, not on the event loop: tens of MiB
        received.clear()
        if compressed:  # to no more than an uncompressed body may hold
            body = unframe(body, coord.limits.max_body_bytes)
        try:  # views: hashed and stored without a copy
            ids, parts = split_upload(body, with_ids=with_ids)
        except ProtocolError as exc:
            raise ApiError(400, "bad_objects", str(exc), {"index": exc.index}) from None
        return len(parts), objects.upload(coord, session, parts, ids)

    stored, new = await run_bulk(request, run)
    metrics: Metrics = request.app.state.metrics
    metrics.objects_stored.inc(new)
    return JSONResponse({"stored": stored, "new": new})


async def download(request: Request) -> Response:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    ids = await read_ids(request)
    coord = coordinator(request)
    compress = accepts_compressed(request)
    # Encoding tens of MiB is work too: off the event loop, which serves the other requests.
    return await run_bulk(request, lambda: msgpack_response(
        encode_objects(objects.download(coord, session, ids)), compress=compress))


async def changed(request: Request) -> Response:
    """``[want, have]``: the nodes of ``want`` that a holder of ``have`` lacks, as
    ``objects/get`` answers them (:func:`.domain.objects.changed`)."""
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    want, have = await read_want_have(request)
    coord = coordinator(request)
    compress = accepts_compressed(request)
    return await run_bulk(request, lambda: msgpack_response(
        encode_objects(objects.changed(coord, session, want, have)), compress=compress))


routes = [
    Route("/v1/sessions/{session}/objects/missing", missing, methods=["POST"]),
    Route("/v1/sessions/{session}/objects/status", status, methods=["POST"]),
    Route("/v1/sessions/{session}/objects/get", download, methods=["POST"]),
    Route("/v1/sessions/{session}/objects/changed", changed, methods=["POST"]),
    Route("/v1/sessions/{session}/objects", upload, methods=["POST"]),
]
