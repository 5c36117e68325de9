"""The retention and gc routes (:mod:`.domain.storage` says what gc deletes)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from peerhost_store.retention import RetentionPolicy

from .auth import MEMBER, OWNER
from .domain import storage
from .errors import ApiError
from .web import authorize, coordinator, read_json, session_name

PLAYERS = {MEMBER, OWNER}
POLICY_FIELDS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly")


def policy_from_json(body: dict[str, Any]) -> RetentionPolicy:
    """A retention policy from a request body (400 ``bad_request`` for anything else)."""
    unknown = set(body) - set(POLICY_FIELDS)
    if unknown:
        raise ApiError(400, "bad_request", f"unknown retention fields: {sorted(unknown)}")
    values: dict[str, int | None] = {}
    for name in POLICY_FIELDS:
        value = body.get(name)
        if value is not None and (type(value) is not int or not 1 <= value <= 100_000):
            raise ApiError(400, "bad_request", f"{name!r} must be an integer in [1, 100000]")
        values[name] = value
    return RetentionPolicy(**values)


async def get_retention(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    return JSONResponse(await run_in_threadpool(storage.storage, coordinator(request), session))


async def put_retention(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, {OWNER}, session)
    policy = policy_from_json(await read_json(request))
    return JSONResponse(await run_in_threadpool(storage.set_retention, coordinator(request),
                                                session, policy))


async def run_gc(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, {OWNER}, session)
    return JSONResponse(await run_in_threadpool(storage.collect_garbage, coordinator(request),
                                                session))


routes = [
    Route("/v1/sessions/{session}/retention", get_retention, methods=["GET"]),
    Route("/v1/sessions/{session}/retention", put_retention, methods=["PUT"]),
    Route("/v1/sessions/{session}/gc", run_gc, methods=["POST"]),
]
