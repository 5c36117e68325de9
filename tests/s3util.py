"""An S3-protocol server for the tests: moto's, on 127.0.0.1 and a free port, started and
stopped by the tests (this module holds no tests).

Without moto (or when it cannot start) the tests that need it skip, except under CI=true,
where they fail: CI must exercise the S3 backend.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

#: What boto3 reads (the endpoint is the server's, set per server).
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "phs-test", "AWS_SECRET_ACCESS_KEY": "phs-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


def _unavailable(why: str) -> None:
    message = f"no S3 server for the tests: {why}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class S3Server:
    """moto's S3 server on ``127.0.0.1:port``. Its data lives in this process (moto's
    in-memory backend), so :meth:`stop` then :meth:`start` is a bucket that was unreachable
    for a while and comes back with everything it held."""

    def __init__(self, port: int | None = None) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            _unavailable(f"moto is not installed ({exc})")
        self._factory = ThreadedMotoServer
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._client: Any = None
        # One line per request on stderr otherwise.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    def start(self) -> None:
        self._server = self._factory(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        _unavailable(f"moto's server did not listen on port {self.port} within 10 s")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self) -> Any:
        """A client of this server (one, made once: making one takes ~0.3 s)."""
        import boto3

        if self._client is None:
            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint,
                aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                region_name=CREDENTIALS["AWS_DEFAULT_REGION"])
        return self._client

    def new_bucket(self) -> str:
        """A new, empty bucket of its own for one test."""
        name = f"phs-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    @property
    def env(self) -> dict[str, str]:
        """The environment a coordinator reads to reach this server."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}


class S3Process(S3Server):
    """moto's S3 server in a process of its own (``moto_server``): ~5 times the requests per
    second of the thread, which shares this process's GIL with its clients (for benchmarks).
    Its data dies with it."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        code = f"from moto.server import main; main(['-H', '127.0.0.1', '-p', '{self.port}'])"
        self._proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        _unavailable(f"moto_server did not listen on port {self.port} within 30 s")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=30)
            self._proc = None


@contextmanager
def s3_server(port: int | None = None, *, process: bool = False) -> Iterator[S3Server]:
    """A started :class:`S3Server` (:class:`S3Process` with ``process``), stopped on
    leaving."""
    server = S3Process(port) if process else S3Server(port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def s3_environment(server: S3Server) -> Iterator[None]:
    """``os.environ`` pointing boto3 at ``server`` while inside (what ``phs serve`` reads)."""
    saved = {key: os.environ.get(key) for key in server.env}
    os.environ.update(server.env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
