"""Acquire, renew, release and inspect a session's lease; ask its holder to sync; the owner's
reset (end the lease, empty the standby queue)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .auth import ADMIN, MEMBER, OWNER
from .domain import leasing
from .errors import ApiError
from .leases import Queued
from .observe import Metrics
from .web import (
    authorize,
    coordinator,
    field,
    is_int,
    is_number,
    is_small_json,
    is_text,
    limits,
    loop_first,
    read_json,
    session_name,
)

PLAYERS = {MEMBER, OWNER}


def _optional_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "address": field(body, "address", is_text(256), "a host:port of at most 256 characters",
                         None),
        "game": field(body, "game", is_small_json, "JSON of at most 2 KiB", None),
    }


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    return bool(field(body, name, lambda v: type(v) is bool, "true or false", default))


async def acquire(request: Request) -> JSONResponse:
    session = session_name(request)
    who = await authorize(request, PLAYERS, session)
    body = await read_json(request)
    lim = limits(request)
    ttl = float(field(body, "ttl", is_number, "a number of seconds"))
    if not lim.min_ttl <= ttl <= lim.max_ttl:
        raise ApiError(400, "bad_request", f"'ttl' must be in [{lim.min_ttl:g}, {lim.max_ttl:g}]")
    holder = field(body, "holder", is_text(128), "a name of at most 128 characters")
    standby = _flag(body, "standby", False)
    extra = _optional_fields(body)
    # A grant always writes (the fencing token), and so does queuing, mostly: to a thread.
    got = await run_in_threadpool(lambda: leasing.acquire(
        coordinator(request), session, who, holder=holder, ttl=ttl, standby=standby, **extra))
    if isinstance(got, Queued):
        return JSONResponse({"queued": True, "position": got.position, "holder": holder}, 202)
    _metrics(request).leases_granted.inc()
    return JSONResponse(got)


async def renew(request: Request) -> JSONResponse:
    session = session_name(request)
    who = await authorize(request, PLAYERS, session)
    body = await read_json(request)
    fencing = field(body, "fencing", is_int, "an integer")
    extra = _optional_fields(body)
    coord = coordinator(request)
    # On the event loop unless it clears sync_requested or changes address or game (a write).
    lease, requested = await loop_first(request, lambda wait: leasing.renew(
        coord, session, who, fencing, wait=wait, **extra))
    return JSONResponse({**lease, "sync_requested": requested})


async def release(request: Request) -> JSONResponse:
    session = session_name(request)
    who = await authorize(request, PLAYERS, session)
    fencing = field(await read_json(request), "fencing", is_int, "an integer")
    await run_in_threadpool(leasing.release, coordinator(request), session, who, fencing)
    return JSONResponse({"released": True, "fencing": fencing})


async def reset(request: Request) -> JSONResponse:
    """The owner ends the lease, whoever holds it, and empties the standby queue."""
    session = session_name(request)
    await authorize(request, {OWNER}, session)
    body = await read_json(request)
    flags = {name: _flag(body, name, True) for name in ("lease", "standby")}
    ended, dropped, fencing = await run_in_threadpool(
        lambda: leasing.reset(coordinator(request), session, **flags))
    return JSONResponse({"released": ended, "dropped": dropped, "fencing": fencing})


async def status(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    coord = coordinator(request)
    return JSONResponse(await loop_first(request, lambda wait: leasing.status(
        coord, session, wait=wait)))


async def request_sync(request: Request) -> JSONResponse:
    session = session_name(request)
    who = await authorize(request, {MEMBER, OWNER, ADMIN}, session)
    coord = coordinator(request)
    holder = await loop_first(request, lambda wait: leasing.request_sync(
        coord, session, wait=wait))
    return JSONResponse({"requested": True, "holder": holder, "by": who.member})


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


routes = [
    Route("/v1/sessions/{session}/lease/renew", renew, methods=["POST"]),  # the most frequent
    Route("/v1/sessions/{session}/lease", acquire, methods=["POST"]),
    Route("/v1/sessions/{session}/lease", status, methods=["GET"]),
    Route("/v1/sessions/{session}/lease/release", release, methods=["POST"]),
    Route("/v1/sessions/{session}/lease/reset", reset, methods=["POST"]),
    Route("/v1/sessions/{session}/sync-request", request_sync, methods=["POST"]),
]
