"""The coordinator as a real uvicorn process on 127.0.0.1, killed with SIGKILL mid-push."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
from worldutil import copy_world

from peerhost_store.graph import walk
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.repo import Repository
from peerhost_store.store import LmdbStore
from peerhost_store.sync.client import CoordinatorClient, CoordinatorUnavailable, UploadResult
from peerhost_store.sync.transfer import push

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Coordinator:
    """A coordinator subprocess on a fixed port and data folder."""

    def __init__(self, data: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.port = port
        self.env = env  # added to this process's environment
        self.proc: subprocess.Popen[str] | None = None
        self.admin_token: str | None = None

    def command(self) -> list[str]:
        """How the coordinator is started (its first line of output may be the admin token)."""
        return [sys.executable, "-m", "peerhost_server", "--data", str(self.data),
                "--host", "127.0.0.1", "--port", str(self.port)]

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True,
                                     env=None if self.env is None else {**os.environ, **self.env})
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if first.startswith("admin token"):
            self.admin_token = first.rsplit(" ", 1)[1].strip()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("the coordinator did not come up")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class KillingClient(CoordinatorClient):
    """Kills the coordinator after ``allowed`` uploads landed; records what it sent."""

    def __init__(self, base: CoordinatorClient, allowed: int, kill: Callable[[], None]) -> None:
        super().__init__(base.http, base.session, base._token)
        self.allowed = allowed
        self.kill = kill
        self.sent: list[ObjectId] = []

    def upload(self, objects: Sequence[bytes], ids: Sequence[ObjectId] | None = None,
               sent: Callable[[float], None] | None = None) -> UploadResult:
        if self.allowed == 0:
            self.kill()
        self.allowed -= 1
        result = super().upload(objects, ids, sent)
        self.sent += [hash_bytes(o) for o in objects]
        return result


def test_sigkill_mid_push_then_resume(tmp_path: Path, real_world: Callable[[str], Path]) -> None:
    world = copy_world(real_world("prismarine-fixtures"), tmp_path / "world")
    repo = Repository.init(world)
    head = repo.snapshot("all fixtures").oid
    total = walk(repo.store.objects, [head]).reachable
    server = Coordinator(tmp_path / "coordinator", free_port())
    server.start()
    try:
        assert server.admin_token is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as http:
            admin = CoordinatorClient(http, "", server.admin_token)
            owner = CoordinatorClient(http, "s1", admin.create_session("s1"))
            alice = CoordinatorClient(http, "s1", owner.add_member("alice"))
            lease = alice.acquire("alice-pc", 120)
            first = KillingClient(alice, allowed=2, kill=server.kill)
            with pytest.raises(CoordinatorUnavailable):  # small batches: several per push
                push(repo, first, fencing=lease.fencing, batch_bytes=1 << 20)
            assert len(first.sent) > 0
            store = LmdbStore(server.data / "sessions" / "s1" / "store")
            landed = set(store.objects.iter_ids())
            store.close()
            assert set(first.sent) <= landed < total

            server.start()  # same data folder and port; the admin token is not shown again
            assert alice.renew(lease.fencing).lease.fencing == lease.fencing  # persisted
            second = KillingClient(alice, allowed=10**6, kill=server.kill)
            report = push(repo, second, fencing=lease.fencing, batch_bytes=1 << 20)
            assert not landed & set(second.sent)
            assert report.objects_new == report.objects_sent == len(total - landed)
            log = alice.log()
            assert [e["new"] for e in log] == [head.hex()]
            assert alice.head().head == repo.head()
    finally:
        server.stop()
    store = LmdbStore(server.data / "sessions" / "s1" / "store")
    try:
        walked = walk(store.objects, [head])
        assert walked.ok and walked.reachable == total
    finally:
        store.close()
        repo.close()
