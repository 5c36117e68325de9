"""A coordinator served by uvicorn in a background thread of this process (the demo, tests,
benchmarks, and any program that embeds one)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import uvicorn

from .app import create_app
from .limits import Limits

__all__ = ["BackgroundCoordinator"]


class BackgroundCoordinator:
    """A coordinator served by uvicorn in a background thread, on a free port (demo, tests).

    >>> with BackgroundCoordinator(Path("data")) as c:   # doctest: +SKIP
    ...     print(c.url, c.admin_token)
    """

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int = 0,
                 limits: Limits | None = None) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.limits = limits
        self.admin_token: str | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._app: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> Self:
        self._app = create_app(self.data_dir, limits=self.limits or Limits())
        self.admin_token = self._app.state.admin_token
        # Bind here so the port is known (port 0: any free one) and nobody can take it first.
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        # log_config=None: leave the process's logging alone; no access log (ours has it).
        config = uvicorn.Config(self._app, log_config=None, access_log=False,
                                log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="phs-coordinator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._stop()
                raise OSError(f"the coordinator did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._app is not None:
            self._app.state.coordinator.close()  # idempotent; the lifespan normally did it
