"""Sessions, members, status and health."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .auth import ADMIN, MEMBER, OWNER
from .domain import sessions
from .domain.protocols import ROLLBACK_BY, SessionSettings
from .errors import ApiError
from .web import authorize, coordinator, loop_first, read_json, session_name


async def create_session(request: Request) -> JSONResponse:
    await authorize(request, {ADMIN})
    name = sessions.require_name((await read_json(request)).get("name"), "session")
    token = await run_in_threadpool(sessions.create_session, coordinator(request), name)
    return JSONResponse({"session": name, "owner_token": token}, 201)


async def list_sessions(request: Request) -> JSONResponse:
    await authorize(request, {ADMIN})
    coord = coordinator(request)
    infos = await loop_first(request, lambda wait: sessions.list_sessions(coord))
    return JSONResponse({"sessions": [
        {"name": info.name, "created": info.created, "members": sorted(info.members)}
        for info in infos
    ]})


async def add_member(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, {OWNER}, session)
    name = sessions.require_name((await read_json(request)).get("name"), "member")
    token = await run_in_threadpool(sessions.add_member, coordinator(request), session, name)
    return JSONResponse({"session": session, "member": name, "token": token}, 201)


async def remove_member(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, {OWNER}, session)
    name = request.path_params["member"]
    await run_in_threadpool(sessions.remove_member, coordinator(request), session, name)
    return JSONResponse({"session": session, "revoked": name})


async def get_settings(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, {OWNER, MEMBER}, session)
    found = await run_in_threadpool(sessions.settings, coordinator(request), session)
    return JSONResponse({"session": session, **asdict(found)})


async def put_settings(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, {OWNER}, session)
    new = settings_from_json(await read_json(request))
    done = await run_in_threadpool(sessions.set_settings, coordinator(request), session, new)
    return JSONResponse({"session": session, **asdict(done)})


def settings_from_json(body: dict[str, Any]) -> SessionSettings:
    """Session settings from a request body (400 ``bad_request`` for anything else)."""
    unknown = set(body) - {"rollback"}
    if unknown:
        raise ApiError(400, "bad_request", f"unknown settings: {sorted(unknown)}")
    rollback = body.get("rollback", "owner")
    if rollback not in ROLLBACK_BY:
        raise ApiError(400, "bad_request", f"'rollback' must be one of {list(ROLLBACK_BY)}")
    return SessionSettings(rollback=rollback)


async def status(request: Request) -> JSONResponse:
    await authorize(request, {ADMIN})
    return JSONResponse({"sessions": await run_in_threadpool(sessions.status,
                                                             coordinator(request))})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


routes = [
    Route("/v1/health", health, methods=["GET"]),
    Route("/v1/status", status, methods=["GET"]),
    Route("/v1/sessions", create_session, methods=["POST"]),
    Route("/v1/sessions", list_sessions, methods=["GET"]),
    Route("/v1/sessions/{session}/members", add_member, methods=["POST"]),
    Route("/v1/sessions/{session}/members/{member}", remove_member, methods=["DELETE"]),
    Route("/v1/sessions/{session}/settings", get_settings, methods=["GET"]),
    Route("/v1/sessions/{session}/settings", put_settings, methods=["PUT"]),
]
