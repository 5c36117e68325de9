"""The coordinator application and the function that serves it."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from peerhost_store.errors import StoreError

from . import (
    dashboard,
    delta_routes,
    head_routes,
    lease_routes,
    object_routes,
    session_routes,
    storage_routes,
)
from .backends import describe_url, open_backends
from .domain.coordinator import Coordinator
from .domain.errors import DomainError
from .domain.protocols import Backends
from .domain.storage import GcThread
from .errors import (
    ApiError,
    handle_api_error,
    handle_domain_error,
    handle_http_exception,
    handle_store_error,
    handle_unexpected,
)
from .http_limits import TokenBucket
from .limits import Limits
from .observe import Metrics, ObserveMiddleware, metrics_endpoint

DEFAULT_LIMITS = Limits()  # frozen: safe to share as a default


def create_app(
    data_dir: Path,
    *,
    clock: Callable[[], float] = time.monotonic,
    limits: Limits = DEFAULT_LIMITS,
    wall: Callable[[], float] = time.time,
    backends: Backends | None = None,
    db: str = "lmdb:",
    objects: str | None = None,
) -> Starlette:
    """Build the coordinator over ``data_dir`` (created if needed).

    The state is opened here, so ``app.state.admin_token`` holds the admin token when this
    call created it (first start) and None otherwise. The state is closed when the app's
    lifespan ends; call ``app.state.coordinator.close()`` when running it without one.

    Args:
        clock: monotonic seconds; lease expiry and rate limits are judged on it.
        limits: request, rate, lease, tree and storage limits.
        wall: wall-clock seconds; upload times (gc's grace period) are judged on it.
        backends: where the state lives (default: what ``db`` names,
            :func:`peerhost_server.backends.open_backends`).
        db: the coordination state's URL: ``lmdb:`` (in ``data_dir``) or
            ``postgresql://...``, when ``backends`` is not given.
        objects: where the sessions' objects live instead of ``data_dir``, when ``backends``
            is not given (``s3://bucket/prefix``).
    """
    if backends is None:
        backends = open_backends(Path(data_dir), clock=clock, limits=limits, url=db,
                                 objects=objects)
    coordinator = Coordinator(backends, clock=clock, limits=limits, wall=wall)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gc = GcThread(coordinator)  # the coordinator's own gc, every gc_interval
        try:
            yield
        finally:
            gc.stop()
            coordinator.close()

    app = Starlette(
        routes=[
            # Lease routes first: renewals are the most frequent call, and Starlette tries the
            # routes in order (no two routes share a path and method, so order means nothing else).
            *lease_routes.routes,
            *session_routes.routes,
            *head_routes.routes,
            *object_routes.routes,
            *delta_routes.routes,
            *storage_routes.routes,
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *dashboard.routes,
        ],
        middleware=[Middleware(ObserveMiddleware, metrics=metrics)],
        exception_handlers={
            ApiError: handle_api_error,
            DomainError: handle_domain_error,
            HTTPException: handle_http_exception,
            StoreError: handle_store_error,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.coordinator = coordinator
    app.state.metrics = metrics
    app.state.limits = limits
    app.state.bucket = TokenBucket(limits.rate, limits.burst)
    app.state.dashboard = dashboard.Dashboard()
    app.state.admin_token = coordinator.initial_admin_token
    return app


#: How long an idle keep-alive connection stays open. Longer than clients keep theirs (httpx:
#: 5 s, uvicorn's default too): when both give up at the same moment, a client sends its next
#: request on a connection the server is closing, and gets a reset instead of an answer.
KEEP_ALIVE_SECONDS = 30


def serve(data_dir: Path, host: str = "127.0.0.1", port: int = 8765,
          limits: Limits = DEFAULT_LIMITS, *, db: str = "lmdb:", migrate: bool = False,
          objects: str | None = None) -> None:
    """Run the coordinator with uvicorn until interrupted, its state where ``db`` and
    ``objects`` say (:func:`create_app`); with ``migrate``, first apply the database's schema
    migrations.

    The address is bound first: a port in use is an ``OSError`` with a one-line message, and
    nothing else happens (no state is created, no admin token made). Then the admin token is
    printed, on the first start only; it is stored hashed and cannot be shown again.
    """
    import uvicorn  # the server extra; imported here so the package imports without it

    sock = _listen(host, port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if migrate:
        from .backends import migrate_backends

        for name in migrate_backends(db):
            print(f"applied migration {name}", flush=True)
    app = create_app(data_dir, limits=limits, db=db, objects=objects)
    if app.state.admin_token is not None:
        print(f"admin token (shown once, keep it safe): {app.state.admin_token}", flush=True)
    state = data_dir if db == "lmdb:" else describe_url(db)
    where = f" (objects in {data_dir})" if objects is None and db != "lmdb:" else (
        "" if objects is None else f" (objects in {objects})")
    print(f"coordinator for {state}{where} on http://{host}:{port}", flush=True)
    # uvicorn's own access log would duplicate ours (which names members, not addresses).
    # "auto" takes uvloop and httptools when installed (dependencies, but uvloop has no Windows
    # build), else asyncio and h11.
    config = uvicorn.Config(app, access_log=False, log_level="info", loop="auto", http="auto",
                            timeout_keep_alive=KEEP_ALIVE_SECONDS)
    uvicorn.Server(config).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, as uvicorn binds one. Raises OSError saying which
    address is taken and what to do."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    if sys.platform != "win32":  # on Windows SO_REUSEADDR would let two servers share a port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = (exc.strerror or str(exc)).lower()
        raise OSError(f"cannot listen on {host}:{port}: {why} (another coordinator or program "
                      "may use it: stop that one, or pick another address with --bind)") from None
    sock.set_inheritable(True)
    return sock
