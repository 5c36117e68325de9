"""Metrics (one Prometheus registry per app) and the access log.

The access log names the caller by session and member, never by token; paths carry session
and member names only, and tokens travel in a header that is never logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("peerhost_server.access")


class Metrics:
    """The coordinator's metrics, in a registry of their own (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("peerhost_requests", "HTTP requests", ["route", "method", "status"],
                                registry=r)
        self.latency = Histogram("peerhost_request_seconds", "Request latency", ["route"], registry=r)
        self.leases_granted = Counter("peerhost_leases_granted", "Leases granted", registry=r)
        self.objects_stored = Counter("peerhost_objects_stored", "New objects stored", registry=r)
        self.bytes_received = Counter("peerhost_bytes_received", "Request body bytes", registry=r)
        self.bytes_sent = Counter("peerhost_bytes_sent", "Response body bytes", registry=r)
        self.cancelled = Counter("peerhost_requests_cancelled",
                                 "Requests whose work stopped because the client went away",
                                 registry=r)


class ObserveMiddleware:
    """Counts, times and logs every HTTP request (pure ASGI, so bodies stream through)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # The labelled children, looked up once per (route, method, status), not per request.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen = {"in": 0, "out": 0, "status": 500}

        async def counting_receive() -> Message:
            message = await receive()
            seen["in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            self._record(scope, seen, time.perf_counter() - started)

    def _record(self, scope: Scope, seen: dict[str, int], elapsed: float) -> None:
        # Label by route template, never by concrete path: session names would explode the
        # label space. Older starlette does not set scope["route"]; fall back to the endpoint.
        route: Any = scope.get("route")
        endpoint: Any = scope.get("endpoint")
        name = (route.path if isinstance(route, Route)
                else getattr(endpoint, "__name__", "unmatched"))
        m = self.metrics
        key = (name, scope["method"], seen["status"])
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (m.requests.labels(name, key[1], str(key[2])),
                                              m.latency.labels(name))
        children[0].inc()
        children[1].observe(elapsed)
        m.bytes_received.inc(seen["in"])
        m.bytes_sent.inc(seen["out"])
        identity = scope.get("state", {}).get("identity")
        access_log.info("%s %s %d in=%d out=%d %.1fms by=%s", scope["method"], scope["path"],
                        seen["status"], seen["in"], seen["out"], elapsed * 1000,
                        identity.label if identity is not None else "-")


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
