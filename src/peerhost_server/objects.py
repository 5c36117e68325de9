"""Object transfer: which ids a session lacks, upload, download.

Uploaded bytes are decoded (malformed objects are refused, naming their index) and stored
under the blake3 of their bytes: ids are derived here, never taken from the client.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from peerhost_store.errors import DecodeError, ObjectCorrupt, ObjectMissing
from peerhost_store.ids import ObjectId
from peerhost_store.objects import blob_length, check
from peerhost_store.sync.protocol import (
    ProtocolError,
    encode_ids,
    encode_objects,
    encode_statuses,
    split_objects,
)

from .auth import MEMBER, OWNER
from .errors import ApiError
from .observe import Metrics
from .storage import write_objects
from .web import (
    authorize,
    coordinator,
    limits,
    msgpack_response,
    read_ids,
    read_msgpack_body,
    session_name,
)

PLAYERS = {MEMBER, OWNER}


async def missing(request: Request) -> Response:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    ids = await read_ids(request)
    store = coordinator(request).store(session)
    lacking = await run_in_threadpool(lambda: list(store.iter_missing(ids)))
    return msgpack_response(encode_ids(lacking))


async def status(request: Request) -> Response:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    ids = await read_ids(request)
    statuses = await run_in_threadpool(coordinator(request).object_status, session, ids)
    return msgpack_response(encode_statuses(statuses))


async def upload(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    body = await read_msgpack_body(request)
    coord = coordinator(request)
    node_limit = limits(request).max_node_bytes

    def run() -> tuple[int, int]:
        try:
            objects = split_objects(body)  # views: hashed and stored without a copy
        except ProtocolError as exc:
            raise ApiError(400, "bad_objects", str(exc), {"index": exc.index}) from None
        for i, data in enumerate(objects):
            if len(data) > node_limit and blob_length(bytes(data[:7]), len(data)) is None:
                raise ApiError(413, "node_too_large", f"object {i} is a tree node or snapshot "
                               f"of {len(data):,} bytes; at most {node_limit:,} are accepted",
                               {"index": i, "limit": node_limit})
            try:
                check(data)
            except DecodeError as exc:
                raise ApiError(400, "malformed_object", f"object {i} is malformed: {exc}",
                               {"index": i}) from None
        return len(objects), write_objects(coord, session, objects) if objects else 0

    stored, new = await run_in_threadpool(run)
    metrics: Metrics = request.app.state.metrics
    metrics.objects_stored.inc(new)
    return JSONResponse({"stored": stored, "new": new})


async def download(request: Request) -> Response:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    ids = await read_ids(request)
    store = coordinator(request).store(session)
    cap = limits(request).max_response_bytes

    def run() -> bytes:
        return encode_objects(prefix())

    def prefix() -> list[bytes]:
        absent = next(iter(store.iter_missing(ids)), None)
        if absent is not None:
            raise _missing(absent)
        out: list[bytes] = []
        total = 0
        # Stop before the cap (always sending one object); the client asks for the rest.
        for start in range(0, len(ids), 256):
            try:
                batch = store.get_many(ids[start : start + 256])
            except ObjectMissing as exc:
                raise _missing(exc.oid) from None
            except ObjectCorrupt as exc:
                raise ApiError(500, "object_corrupt", str(exc), {"id": exc.expected.hex()}) from None
            for data in batch:
                if out and total + len(data) > cap:
                    return out
                out.append(data)
                total += len(data)
        return out

    # Encoding tens of MiB is work too: off the event loop, which serves the other requests.
    return msgpack_response(await run_in_threadpool(run))


def _missing(oid: ObjectId) -> ApiError:
    return ApiError(404, "object_missing", f"object {oid.hex()} is not stored in this session",
                    {"id": oid.hex()})


routes = [
    Route("/v1/sessions/{session}/objects/missing", missing, methods=["POST"]),
    Route("/v1/sessions/{session}/objects/status", status, methods=["POST"]),
    Route("/v1/sessions/{session}/objects/get", download, methods=["POST"]),
    Route("/v1/sessions/{session}/objects", upload, methods=["POST"]),
]
