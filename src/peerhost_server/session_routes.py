"""Sessions, members, status and health."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .auth import ADMIN, OWNER
from .domain import sessions
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
]
