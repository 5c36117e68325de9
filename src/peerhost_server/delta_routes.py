"""Chunk deltas (:mod:`.domain.deltas`): ``POST .../objects/delta`` pushes a batch,
``POST .../objects/delta/get`` pulls one; ``POST .../objects/tree`` pushes a tree as what
changed (:mod:`.domain.trees`), and ``POST .../objects/tree/get`` pulls one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from peerhost_store.sync.protocol import (
    ProtocolError,
    decode_delta_get,
    decode_delta_upload,
    encode_delta_answer,
    encode_objects,
)

from .auth import MEMBER, OWNER
from .domain import deltas, trees
from .observe import Metrics
from .web import (
    accepts_compressed,
    authorize,
    coordinator,
    msgpack_response,
    read_msgpack_body,
    read_want_have,
    run_cancellable,
    session_name,
)

PLAYERS = {MEMBER, OWNER}


async def upload_delta(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    body = await read_msgpack_body(request)
    coord = coordinator(request)

    def run(cancelled: Callable[[], bool]) -> dict[str, Any]:
        try:
            header, batch = decode_delta_upload(body)
        except ProtocolError as exc:
            raise deltas.bad_delta(exc) from None
        return deltas.accept(coord, session, header, batch, cancelled)

    answer = await run_cancellable(request, run)
    metrics: Metrics = request.app.state.metrics
    metrics.objects_stored.inc(answer["new"])
    return JSONResponse(answer)


async def download_delta(request: Request) -> Response:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    body = await read_msgpack_body(request)
    coord = coordinator(request)

    def run(cancelled: Callable[[], bool]) -> bytes:
        try:
            header = decode_delta_get(body)
        except ProtocolError as exc:
            raise deltas.bad_delta(exc) from None
        return encode_delta_answer(*deltas.serve(coord, session, header, cancelled))

    return msgpack_response(await run_cancellable(request, run))


async def upload_tree(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    body = await read_msgpack_body(request)
    coord = coordinator(request)
    answer = await run_cancellable(
        request, lambda cancelled: trees.accept(coord, session, body, cancelled))
    metrics: Metrics = request.app.state.metrics
    metrics.objects_stored.inc(answer["new"])
    return JSONResponse(answer)


async def download_tree(request: Request) -> Response:
    """``[want, have]``: ``[tree upload, snapshot]`` for a holder of ``have`` (want's parent),
    or ``[b""]`` (:func:`.domain.trees.serve`), as ``objects/get`` answers objects."""
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    want, have = await read_want_have(request)
    coord = coordinator(request)
    compress = accepts_compressed(request)
    answer = await run_cancellable(
        request, lambda cancelled: trees.serve(coord, session, want, have, cancelled))
    return msgpack_response(encode_objects(answer), compress=compress)


routes = [
    Route("/v1/sessions/{session}/objects/delta/get", download_delta, methods=["POST"]),
    Route("/v1/sessions/{session}/objects/delta", upload_delta, methods=["POST"]),
    Route("/v1/sessions/{session}/objects/tree", upload_tree, methods=["POST"]),
    Route("/v1/sessions/{session}/objects/tree/get", download_tree, methods=["POST"]),
]
