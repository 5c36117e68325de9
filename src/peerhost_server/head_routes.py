"""The session head (compare-and-swap, fenced), rollback and the head log
(:mod:`.domain.heads` says when a head moves)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from peerhost_store.area import Area, AreaError
from peerhost_store.ids import ObjectId
from peerhost_store.sync.protocol import (
    ENCODINGS,
    ProtocolError,
    parse_hex_id,
    parse_optional_hex_id,
)

from .auth import MEMBER, OWNER
from .domain import heads
from .errors import ApiError
from .web import authorize, coordinator, field, is_int, loop_first, read_json, session_name

PLAYERS = {MEMBER, OWNER}
MAX_LOG = 1000


def _hex(value: ObjectId | None) -> str | None:
    return None if value is None else value.hex()


async def get_head(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    coord = coordinator(request)
    info = await loop_first(request, lambda wait: heads.head_info(coord, session, wait=wait))
    return JSONResponse({"head": _hex(info.head), "fencing": info.fencing,
                         "shallow": sorted(oid.hex() for oid in info.shallow),
                         "encodings": list(ENCODINGS),  # object uploads it reads
                         "trees": True})  # it takes and serves tree uploads (objects/tree)


def _id(body: dict[str, Any], name: str, optional: bool = False) -> ObjectId | None:
    try:
        if optional:
            return parse_optional_hex_id(body.get(name), f"'{name}'")
        return parse_hex_id(body.get(name), f"'{name}'")
    except ProtocolError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


async def set_head(request: Request) -> JSONResponse:
    session = session_name(request)
    who = await authorize(request, PLAYERS, session)
    body = await read_json(request)
    if "old" not in body:
        raise ApiError(400, "bad_request", "'old' is required (null for a session without head)")
    old, new = _id(body, "old", optional=True), _id(body, "new")
    assert new is not None
    fencing = field(body, "fencing", is_int, "an integer")
    checked = await run_in_threadpool(heads.set_head, coordinator(request), session, who, old,
                                      new, fencing)
    return JSONResponse({"head": new.hex(), "old": _hex(old), "checked": checked})


async def rollback(request: Request) -> JSONResponse:
    session = session_name(request)
    who = await authorize(request, PLAYERS, session)
    body = await read_json(request)
    target = _id(body, "target")
    assert target is not None
    fencing = field(body, "fencing", is_int, "an integer", None)
    area = None
    if body.get("area") is not None:
        try:
            area = Area.from_json(body["area"])
        except AreaError as exc:
            raise ApiError(400, "bad_request", f"'area': {exc}") from None
    oid, old = await run_in_threadpool(heads.rollback, coordinator(request), session, who,
                                       target, fencing, area)
    return JSONResponse({"head": oid.hex(), "old": _hex(old), "target": target.hex(),
                         **({} if area is None else {"area": area.to_json()})})


async def get_log(request: Request) -> JSONResponse:
    session = session_name(request)
    await authorize(request, PLAYERS, session)
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LOG:
        raise ApiError(400, "bad_request", f"'limit' must be an integer in [1, {MAX_LOG}]")
    entries = await run_in_threadpool(heads.log, coordinator(request), session, int(raw))
    return JSONResponse({"entries": entries})


routes = [
    Route("/v1/sessions/{session}/head", get_head, methods=["GET"]),
    Route("/v1/sessions/{session}/head", set_head, methods=["POST"]),
    Route("/v1/sessions/{session}/rollback", rollback, methods=["POST"]),
    Route("/v1/sessions/{session}/log", get_log, methods=["GET"]),
]
