"""What every route needs: who is calling, its body, typed fields, msgpack answers."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from peerhost_store.ids import ObjectId
from peerhost_store.sync.protocol import (
    MSGPACK,
    PIECE_BYTES,
    ZMSGPACK,
    FrameTooLarge,
    ProtocolError,
    compress_body,
    decode_ids,
    decompress_body,
)

from .auth import ADMIN, Identity, bearer_token, valid_name
from .domain.coordinator import Coordinator
from .domain.errors import Cancelled
from .domain.protocols import WouldBlock
from .errors import ApiError
from .http_limits import TokenBucket, rate_limited, read_body, read_body_parts
from .limits import Limits

T = TypeVar("T")


def coordinator(request: Request) -> Coordinator:
    return cast(Coordinator, request.app.state.coordinator)


def limits(request: Request) -> Limits:
    return cast(Limits, request.app.state.limits)


async def authorize(request: Request, roles: set[str], session: str | None = None) -> Identity:
    """Authenticate the caller, spend one rate-limit token, and check its role and session.

    A token of another session is refused before the session is looked at, so the answer
    reveals nothing about that session (not even whether it exists).

    Runs on the event loop when the backends' reads never block (LMDB's are memory-mapped
    and never wait for a writer, so a thread hop would cost more than the read).

    Raises:
        ApiError: 401 ``unauthorized``, 429 ``rate_limited``, 403 ``forbidden``.
        NoSession: the admin named a session that does not exist.
    """
    coord = coordinator(request)
    bucket = cast(TokenBucket, request.app.state.bucket)
    token = bearer_token(request.headers.get("authorization"))
    who = None if token is None else await loop_first(
        request, lambda wait: coord.authenticate(token))
    if who is None:
        # Unknown callers share a bucket per address, so guessing tokens is slow too.
        client = request.client.host if request.client else "unknown"
        _spend(bucket, f"addr:{client}", coord.clock())
        raise ApiError(401, "unauthorized", "a valid 'Authorization: Bearer <token>' is required",
                       headers={"WWW-Authenticate": "Bearer"})
    request.state.identity = who
    _spend(bucket, f"token:{who.token_id}", coord.clock())
    if session is not None and who.role != ADMIN and who.session != session:
        raise ApiError(403, "forbidden", "this token belongs to another session")
    if who.role not in roles:
        raise ApiError(403, "forbidden", f"this needs the {' or '.join(sorted(roles))} token")
    if session is not None:
        if not valid_name(session):  # only the admin gets here with a name it did not create
            raise ApiError(404, "no_session", "there is no such session")
        if who.role == ADMIN:  # others' tokens exist only for sessions that do
            await loop_first(request, lambda wait: coord.session(session))  # 404
    return who


#: Worker threads the bulk routes (uploads, downloads, deltas) may hold at once, beside the
#: default pool's 40 that every other request runs in. Bulk work waiting on a slow object
#: store held all 40 once: lease renewals of every session then queued behind it for seconds
#: (the soak on a bucket: renew p99 7.6 s; with more threads for everyone, 0.18 s).
BULK_THREADS = 16


def _bulk_limiter(request: Request) -> anyio.CapacityLimiter:
    """The app's limiter of bulk work (made on first use, on its event loop)."""
    limiter = getattr(request.app.state, "bulk_limiter", None)
    if limiter is None:
        limiter = request.app.state.bulk_limiter = anyio.CapacityLimiter(BULK_THREADS)
    return cast(anyio.CapacityLimiter, limiter)


async def run_bulk(request: Request, fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread counted against :data:`BULK_THREADS`, not the default
    pool: an upload's, a download's or a delta's work, which may wait long on the object
    store, never keeps a lease renewal waiting for a thread."""
    return await anyio.to_thread.run_sync(fn, limiter=_bulk_limiter(request))


async def run_cancellable(request: Request, fn: Callable[[Callable[[], bool]], T]) -> T:
    """``fn(cancelled)`` in a bulk worker thread (:func:`run_bulk`), where ``cancelled()``
    turns true once the client disconnects: work that a gone client would never see stops at
    its next check (``fn`` raises :class:`~.domain.errors.Cancelled` or its own error). Call
    after the body was read.

    Raises:
        Cancelled: 499 ``cancelled`` (nobody reads it; the access log and metrics do).
    """
    gone = threading.Event()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone.set()

    failed: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            result = await run_bulk(request, lambda: fn(gone.is_set))
        except Exception as exc:  # noqa: BLE001  # raised below, outside the group (which would wrap it)
            failed = exc
        group.cancel_scope.cancel()
    if isinstance(failed, Cancelled):
        request.app.state.metrics.cancelled.inc()
    if failed is not None:
        raise failed
    return result


async def loop_first(request: Request, fn: Callable[[bool], T]) -> T:
    """``fn(False)`` on the event loop, if the backends' reads never block and ``fn`` needs no
    lock someone holds and no write (a lease renewal; see :mod:`.domain.leasing`); otherwise
    ``fn(True)`` in a worker thread, where waiting for a lock or an fsync blocks no other
    request."""
    if coordinator(request).backends.loop_safe:
        try:
            return fn(False)
        except WouldBlock:
            pass
    return await run_in_threadpool(fn, True)


def spend(request: Request, key: str) -> None:
    """Spend one rate-limit token of ``key`` (``token:<id>``, ``addr:<address>``).

    Raises:
        ApiError: 429 ``rate_limited``.
    """
    _spend(cast(TokenBucket, request.app.state.bucket), key, coordinator(request).clock())


def _spend(bucket: TokenBucket, key: str, now: float) -> None:
    wait = bucket.take(key, now)
    if wait > 0:
        raise rate_limited(wait)


def session_name(request: Request) -> str:
    # Not validated here: authorize() refuses any name but the token's own session (or, for
    # the admin, one that exists), and existing names were validated when created.
    return cast(str, request.path_params["session"])


async def read_json(request: Request) -> dict[str, Any]:
    """The JSON object body (at most ``max_json_bytes``)."""
    lim = limits(request)
    data = await read_body(request, lim.max_json_bytes, lim.body_timeout)
    try:
        value = json.loads(data) if data else {}
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # "[" * 60000 recurses
        raise ApiError(400, "bad_json", f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return value


async def read_msgpack_body(request: Request) -> bytes:
    """A msgpack body (at most ``max_body_bytes``)."""
    return b"".join(await read_msgpack_parts(request))


def media_type(request: Request) -> str:
    """The request body's media type, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_msgpack_parts(request: Request, *, compressed: bool = False) -> list[bytes]:
    """:func:`read_msgpack_body` as the parts it arrived in, for a worker thread to join
    (:func:`~.http_limits.read_body_parts`). With ``compressed``, a :data:`ZMSGPACK` body
    is taken too (as it came: :func:`unframe` it, in the worker thread)."""
    kind = media_type(request)
    if kind != MSGPACK and not (compressed and kind == ZMSGPACK):
        raise ApiError(415, "unsupported_media_type",
                       f"send {MSGPACK}" + (f" or {ZMSGPACK}" if compressed else ""))
    lim = limits(request)
    return await read_body_parts(request, lim.max_body_bytes, lim.body_timeout)


async def read_ids(request: Request) -> list[ObjectId]:
    """A msgpack list of ids."""
    data = await read_msgpack_body(request)
    try:
        return decode_ids(data)
    except ProtocolError as exc:
        raise ApiError(400, "bad_ids", str(exc), {"index": exc.index}) from None


async def read_want_have(request: Request) -> tuple[ObjectId, ObjectId]:
    """A msgpack list of two ids, ``[want, have]``."""
    ids = await read_ids(request)
    if len(ids) != 2:
        raise ApiError(400, "bad_ids", f"give two ids, [want, have], not {len(ids)}")
    return ids[0], ids[1]


def unframe(body: bytes, limit: int) -> bytes:
    """The msgpack body a :data:`ZMSGPACK` body holds, decompressed only when its frame
    declares at most ``limit`` bytes (invariant 7: never unbounded).

    Raises:
        ApiError: 413 ``body_too_large`` (``limit``, ``declared``), 400 ``bad_encoding``.
    """
    try:
        return decompress_body(body, limit, "the request body")
    except FrameTooLarge as exc:
        raise ApiError(413, "body_too_large", f"{exc}: request bodies are limited to {limit} "
                       "bytes, decompressed", {"limit": limit, "declared": exc.size}) from None
    except ProtocolError as exc:
        raise ApiError(400, "bad_encoding", str(exc)) from None


def accepts_compressed(request: Request) -> bool:
    """Whether the caller's ``Accept`` lists :data:`ZMSGPACK` (a client that reads it)."""
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == ZMSGPACK for part in accept.split(","))


def msgpack_response(data: bytes, *, compress: bool = False) -> Response:
    """A msgpack answer; with ``compress`` (the caller accepts it), as :data:`ZMSGPACK` when
    it shrinks. Call from a worker thread when compressing tens of MiB."""
    if compress:
        view = memoryview(data)
        packed, _, pieces = compress_body(len(view), (
            view[i:i + PIECE_BYTES] for i in range(0, len(view), PIECE_BYTES)))
        if packed:
            return Response(b"".join(pieces), media_type=ZMSGPACK)
    return Response(data, media_type=MSGPACK)


# -- fields of JSON bodies ----------------------------------------------------------------


def field(body: dict[str, Any], name: str, check: Callable[[Any], bool], what: str,
          default: Any = ...) -> Any:
    """``body[name]`` if ``check`` accepts it; ``default`` when absent (required without)."""
    if name not in body or body[name] is None:
        if default is ...:
            raise ApiError(400, "bad_request", f"{name!r} is required ({what})")
        return default
    value = body[name]
    if not check(value):
        raise ApiError(400, "bad_request", f"{name!r} must be {what}")
    return value


def is_int(value: Any) -> bool:
    return type(value) is int


def is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def is_text(limit: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and 0 < len(v) <= limit and v.isprintable()


def is_small_json(value: Any) -> bool:
    return len(json.dumps(value)) <= 2048
