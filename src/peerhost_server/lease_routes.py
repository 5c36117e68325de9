"""Acquire, renew, release and inspect a session's lease; ask its holder to sync; the owner's
reset (end the lease, empty the standby queue)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .auth import ADMIN, MEMBER, OWNER
from .errors import ApiError
from .leases import LeaseError, Queued, SessionLease
from .observe import Metrics
from .web import (
    authorize,
    field,
    is_int,
    is_number,
    is_small_json,
    is_text,
    limits,
    on_lease,
    read_json,
    session_name,
)

PLAYERS = {MEMBER, OWNER}


def _lease_error(exc: LeaseError, state: SessionLease, now: float) -> ApiError:
    current = state.current(now)
    details: dict[str, Any] = {"lease": None if current is None else current.to_json(now),
                               **exc.extra}
    return ApiError(409, exc.code, str(exc), details)


def _optional_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "address": field(body, "address", is_text(256), "a host:port of at most 256 characters",
                         None),
        "game": field(body, "game", is_small_json, "JSON of at most 2 KiB", None),
    }


async def acquire(request: Request) -> JSONResponse:
    session = session_name(request)
    who = await authorize(request, PLAYERS, session)
    body = await read_json(request)
    lim = limits(request)
    ttl = float(field(body, "ttl", is_number, "a number of seconds"))
    if not lim.min_ttl <= ttl <= lim.max_ttl:
        raise ApiError(400, "bad_request", f"'ttl' must be in [{lim.min_ttl:g}, {lim.max_ttl:g}]")
    kwargs = {
        "holder": field(body, "holder", is_text(128), "a name of at most 128 characters"),
        "ttl": ttl,
        "standby": field(body, "standby", lambda v: type(v) is bool, "true or false", False),
        **_optional_fields(body),
    }

    def run(state: SessionLease, now: float) -> JSONResponse | dict[str, Any]:
        try:
            got = state.acquire(now, member=who.member, **kwargs)
        except LeaseError as exc:
            raise _lease_error(exc, state, now) from None
        if isinstance(got, Queued):
            return JSONResponse({"queued": True, "position": got.position,
                                 "holder": kwargs["holder"]}, 202)
        return got.to_json(now)

    # A grant always writes (the fencing token), and so does queuing, mostly: to a thread.
    answer = await on_lease(request, session, run, writes=True)
    if isinstance(answer, JSONResponse):
        return answer
    _metrics(request).leases_granted.inc()
    return JSONResponse(answer)


async def renew(request: Request) -> JSONResponse:
    session = session_name(request)
    who = await authorize(request, PLAYERS, session)
    body = await read_json(request)
    fencing = field(body, "fencing", is_int, "an integer")
    extra = _optional_fields(body)

    def run(state: SessionLease, now: float) -> JSONResponse:
        try:
            lease, requested = state.renew(now, fencing=fencing, member=who.member, **extra)
        except LeaseError as exc:
            raise _lease_error(exc, state, now) from None
        return JSONResponse({**lease.to_json(now), "sync_requested": requested})

    # On the event loop unless it clears sync_requested or changes address or game (a write).
    return await on_lease(request, session, run)


async def release(request: Request) -> JSONResponse:
    session = session_name(request)
    who = await authorize(request, PLAYERS, session)
    fencing = field(await read_json(request), "fencing", is_int, "an integer")

    def run(state: SessionLease, now: float) -> JSONResponse:
        try:
            # The owner may end a member's lease (a host that vanished with it).
            state.release(now, fencing=fencing, member=who.member, force=who.role == OWNER)
        except LeaseError as exc:
            raise _lease_error(exc, state, now) from None
        return JSONResponse({"released": True, "fencing": fencing})

    return await on_lease(request, session, run, writes=True)


async def reset(request: Request) -> JSONResponse:
    """The owner ends the lease, whoever holds it, and empties the standby queue."""
    session = session_name(request)
    await authorize(request, {OWNER}, session)
    body = await read_json(request)
    flags = {name: field(body, name, lambda v: type(v) is bool, "true or false", True)
             for name in ("lease", "standby")}

    def run(state: SessionLease, now: float) -> JSONResponse:
        ended, dropped = state.reset(now, **flags)
        return JSONResponse({"released": None if ended is None else ended.holder,
                             "dropped": dropped, "fencing": state.fencing})

    return await on_lease(request, session, run, writes=True)


async def status(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, PLAYERS, session)

    def run(state: SessionLease, now: float) -> JSONResponse:
        return JSONResponse(state.status(now))

    return await on_lease(request, session, run)


async def request_sync(request: Request) -> JSONResponse:
    session = session_name(request)
    who = await authorize(request, {MEMBER, OWNER, ADMIN}, session)

    def run(state: SessionLease, now: float) -> JSONResponse:
        state.settle(now)
        lease = state.current(now)
        if lease is None:
            raise ApiError(409, "no_lease", "nobody holds the lease; there is no one to ask")
        lease.sync_requested = True
        return JSONResponse({"requested": True, "holder": lease.holder, "by": who.member})

    return await on_lease(request, session, run)


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
