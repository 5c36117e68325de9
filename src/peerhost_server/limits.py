"""Request limits: body size and read deadline, per-token rate, lease bounds."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields, replace
from typing import Any

import anyio
from starlette.requests import ClientDisconnect, Request

from peerhost_store.bounds import TreeLimits

from .errors import ApiError


@dataclass(frozen=True)
class Limits:
    """What one request, one token and one lease may use.

    Attributes:
        max_body_bytes: largest request body (413 beyond; checked on Content-Length and
            again while streaming, so a body without a length cannot exceed it either).
        max_json_bytes: largest JSON request body.
        max_response_bytes: ``objects/get`` answers stop before this many bytes of objects,
            and ``objects/delta/get`` answers before they rebuild this many (always at least
            one object); the client asks again for the rest.
        max_delta_items: items in one delta batch (413 ``too_many_items`` beyond, when the
            request's selection names more; 400 ``bad_delta`` when a batch declares more).
        max_delta_bytes: what one delta batch may decompress to (413 ``delta_too_large``
            when its frame declares more), and what a ``delta/get`` answer's stream may hold.
        max_delta_rebuild: NBT bytes the coordinator decompresses and rebuilds for one
            ``objects/delta`` request; items past it are answered as failed, not rebuilt, so a
            hostile batch cannot buy unbounded work.
        max_pairing_nodes: tree nodes one delta request may load to pair its two trees (413
            ``pairing_too_large`` beyond; the client then sends or fetches those chunks whole).
        max_pairing_chunks: chunk entries one pairing may consider (the same 413).
        body_timeout: seconds to receive a whole request body (408 beyond).
        rate: requests per second per token, refilled continuously.
        burst: requests a token may make at once (the bucket's size).
        min_ttl: shortest lease in seconds.
        max_ttl: longest lease in seconds.
        standby_window: seconds during which only the first standby may take a lease that
            was released or expired.
        max_node_bytes: largest tree node or snapshot an upload may hold (413
            ``node_too_large``); honest nodes hold at most 32 entries, a few KiB. Bounds what
            one node costs every walk that decodes it.
        quota_bytes: what one session may store (LMDB pages of live data; 507
            ``quota_exceeded`` past it).
        min_free_bytes: free disk the coordinator keeps for its own small writes (leases,
            heads): uploads that would leave less are refused with 507 ``disk_full``.
        gc_grace: seconds an uploaded object is kept though no snapshot reaches it yet (a
            push under way, an interrupted one to be resumed).
        gc_interval: seconds between the coordinator's own gc runs over every session (0:
            only when the owner asks, ``POST .../gc``).
        tree: how far a snapshot's tree may expand (every head move is checked against it);
            keep it within the clients' own bounds (the same defaults), or their pulls refuse
            what the coordinator accepted.
    """

    max_body_bytes: int = 64 << 20
    max_json_bytes: int = 64 << 10
    max_response_bytes: int = 32 << 20
    max_delta_items: int = 32768
    max_delta_bytes: int = 64 << 20
    max_delta_rebuild: int = 256 << 20
    max_pairing_nodes: int = 20_000
    max_pairing_chunks: int = 50_000
    body_timeout: float = 60.0
    rate: float = 100.0
    burst: int = 400
    min_ttl: float = 1.0
    max_ttl: float = 3600.0
    standby_window: float = 15.0
    max_node_bytes: int = 1 << 20
    quota_bytes: int = 16 << 30
    min_free_bytes: int = 64 << 20
    gc_grace: float = 24 * 3600.0
    gc_interval: float = 3600.0
    tree: TreeLimits = field(default_factory=TreeLimits)


_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40}


def override_limits(limits: Limits, settings: list[str]) -> Limits:
    """``limits`` with ``NAME=VALUE`` settings applied (``phs serve --limit``): any field of
    :class:`Limits`, or ``tree.FIELD`` of its :class:`TreeLimits`; sizes take KiB, MiB, GiB
    or TiB (``quota_bytes=4GiB``).

    Raises:
        ValueError: an unknown name or a value that is not a number of the field's kind.
    """
    tree: dict[str, Any] = {}
    top: dict[str, Any] = {}
    for setting in settings:
        name, sep, text = setting.partition("=")
        name = name.strip()
        target, owner, field_name = (tree, limits.tree, name[5:]) if name.startswith("tree.") \
            else (top, limits, name)
        if not sep or field_name == "tree" or field_name not in {f.name for f in fields(owner)}:
            raise ValueError(f"{setting!r}: expected NAME=VALUE with NAME a limit "
                             "(docs/operations.md lists them)")
        target[field_name] = _number(text.strip(), type(getattr(owner, field_name)), setting)
    if tree:
        top["tree"] = replace(limits.tree, **tree)
    return replace(limits, **top)


def _number(text: str, kind: type, setting: str) -> int | float:
    digits = text.rstrip("kKmMgGtTiIbB")
    unit = _UNITS.get(text[len(digits):].lower())
    try:
        value = float(digits) * unit if unit is not None else None
    except ValueError:
        value = None
    if value is None or value < 0 or kind is int and value != int(value):
        raise ValueError(f"{setting!r}: not a {'whole ' if kind is int else ''}number")
    return int(value) if kind is int else value


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
    return b"".join(chunks)


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
