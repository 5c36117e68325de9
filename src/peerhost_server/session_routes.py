"""Sessions, members, status and health."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .auth import ADMIN, OWNER, valid_name
from .errors import ApiError
from .web import authorize, coordinator, read_json, session_name

NAME_RULE = "1-64 letters, digits, '-' or '_', starting with a letter or digit"


def _name(value: object, what: str) -> str:
    if not valid_name(value):
        raise ApiError(400, "bad_name", f"a {what} name is {NAME_RULE}")
    assert isinstance(value, str)
    return value


async def create_session(request: Request) -> JSONResponse:
    await authorize(request, {ADMIN})
    name = _name((await read_json(request)).get("name"), "session")
    token = await run_in_threadpool(coordinator(request).create_session, name)
    return JSONResponse({"session": name, "owner_token": token}, 201)


async def list_sessions(request: Request) -> JSONResponse:
    await authorize(request, {ADMIN})
    coord = coordinator(request)
    records = [coord.session(name) for name in coord.session_names()]
    return JSONResponse({"sessions": [
        {"name": r["name"], "created": r["created"], "members": sorted(r["members"])}
        for r in records
    ]})


async def add_member(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, {OWNER}, session)
    name = _name((await read_json(request)).get("name"), "member")
    token = await run_in_threadpool(coordinator(request).add_member, session, name)
    return JSONResponse({"session": session, "member": name, "token": token}, 201)


async def remove_member(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, {OWNER}, session)
    name = request.path_params["member"]
    await run_in_threadpool(coordinator(request).remove_member, session, name)
    return JSONResponse({"session": session, "revoked": name})


async def status(request: Request) -> JSONResponse:
    await authorize(request, {ADMIN})
    sessions = await run_in_threadpool(coordinator(request).status)
    return JSONResponse({"sessions": sessions})


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
