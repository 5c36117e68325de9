"""Per-request limits at the HTTP edge: the request body's size and read deadline, and the
per-token rate (:class:`peerhost_server.limits.Limits` holds the figures)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.requests import ClientDisconnect, Request

from .errors import ApiError


class TokenBucket:
    """Per-key token buckets on an injected monotonic clock."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float) -> float:
        """Spend one token of ``key``; return 0, or the seconds until one is available."""
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate if self.rate > 0 else math.inf


def rate_limited(wait: float) -> ApiError:
    """The 429 answer for a caller who must wait ``wait`` seconds."""
    seconds = max(1, math.ceil(wait)) if math.isfinite(wait) else 3600
    return ApiError(429, "rate_limited", f"too many requests; retry after {seconds} s",
                    {"retry_after": seconds}, {"Retry-After": str(seconds)})


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """Read the request body, refusing more than ``limit`` bytes or more than ``timeout`` s."""
    return b"".join(await read_body_parts(request, limit, timeout))


async def read_body_parts(request: Request, limit: int, timeout: float) -> list[bytes]:
    """:func:`read_body` as the parts it arrived in: a caller that joins them in a worker
    thread keeps the event loop free (``bytes.join`` releases the GIL on large results, so on
    a second core the loop goes on receiving meanwhile)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    total = 0
    try:
        async with _deadline(timeout):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "body_timeout",
                       f"the request body did not arrive within {timeout:g} s",
                       headers=_CLOSE) from None
    except ClientDisconnect:
        raise ApiError(400, "disconnected", "the client went away mid-body",
                       headers=_CLOSE) from None
    return chunks


# A refused body is left unread: without this, uvicorn keeps the connection open and goes on
# parsing (and discarding) whatever the client still sends, with no deadline, so one slow
# sender past its 408 or one oversized upload past its 413 would hold a connection forever.
_CLOSE = {"Connection": "close"}


def _deadline(timeout: float) -> contextlib.AbstractAsyncContextManager[Any]:
    """A context raising TimeoutError after ``timeout`` s: ``asyncio.timeout`` under asyncio
    (what uvicorn runs; half the cost of an anyio cancel scope, which every request with a
    body pays), anyio's otherwise."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _anyio_deadline(timeout)
    return asyncio.timeout(timeout)


@contextlib.asynccontextmanager
async def _anyio_deadline(timeout: float) -> AsyncIterator[None]:
    with anyio.fail_after(timeout):
        yield


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request bodies are limited to {limit} bytes",
                    {"limit": limit}, _CLOSE)
