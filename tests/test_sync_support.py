"""Helpers and fixtures shared by the coordinator and sync tests (this module holds no tests)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

with warnings.catch_warnings():
    # starlette 1.x prefers httpx2; with httpx its TestClient still is an httpx.Client.
    # The tests import it from here, without the warning.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient as TestClient

import pytest
from starlette.applications import Starlette
from worldutil import copy_world, replace_world

from peerhost_server import Limits, create_app
from peerhost_server.domain.coordinator import Coordinator
from peerhost_store.ids import ObjectId
from peerhost_store.repo import Repository
from peerhost_store.sync.client import CoordinatorClient
from peerhost_store.sync.transfer import push

FAST = Limits(rate=1e6, burst=10**6)


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Server:
    http: TestClient
    admin: CoordinatorClient
    data_dir: Path
    admin_token: str
    clients: dict[str, CoordinatorClient] = field(default_factory=dict)

    def client(self, session: str, token: str) -> CoordinatorClient:
        return CoordinatorClient(self.http, session, token)

    @property
    def coordinator(self) -> Coordinator:
        """The app's domain object, which the routes call."""
        app = self.http.app
        assert isinstance(app, Starlette)
        coordinator: Coordinator = app.state.coordinator
        return coordinator


@contextmanager
def running(data_dir: Path, *, clock: Clock | None = None, limits: Limits = FAST,
            admin_token: str | None = None) -> Iterator[Server]:
    """An in-process coordinator on ``data_dir``; pass the admin token on a restart."""
    app = (create_app(data_dir, limits=limits) if clock is None
           else create_app(data_dir, limits=limits, clock=clock))
    token = app.state.admin_token or admin_token
    assert token is not None, "restarts must be given the admin token of the first start"
    with TestClient(app) as http:
        yield Server(http, CoordinatorClient(http, "", token), data_dir, token)


def make_session(server: Server, name: str = "s1",
                 members: tuple[str, ...] = ("alice", "bob")) -> dict[str, CoordinatorClient]:
    """Create a session; return clients for ``owner`` and each member."""
    owner = server.client(name, server.admin.create_session(name))
    clients = {"owner": owner}
    for member in members:
        clients[member] = server.client(name, owner.add_member(member))
    return clients


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """An in-process coordinator for one test (a plugin of tests/conftest.py)."""
    with running(tmp_path / "coordinator") as server:
        yield server


def new_repo(path: Path, source: Path | None = None) -> Repository:
    """A repository at ``path``, holding a copy of ``source`` or an empty world."""
    if source is not None:
        copy_world(source, path)
    else:
        path.mkdir(parents=True)
    return Repository.init(path)


def root_of(repo: Repository) -> ObjectId:
    head = repo.head()
    assert head is not None
    return repo.read_snapshot(head).root


def pushed_then_changed(server: Server, tmp_path: Path, history: Path, versions: Sequence[str]
                        ) -> tuple[dict[str, CoordinatorClient], Repository, int]:
    """A new session that alice's repository (``tmp_path / "a"``) pushed ``versions[0]`` of
    ``history`` to, the repository then holding ``versions[1]`` as its head, not pushed: the
    session's clients, the repository and alice's fencing token."""
    c = make_session(server)
    a = new_repo(tmp_path / "a", history / versions[0])
    a.snapshot("v1")
    lease = c["alice"].acquire("alice-pc", 300)
    push(a, c["alice"], fencing=lease.fencing)
    replace_world(a.world, history / versions[1])
    a.snapshot("v2")
    return c, a, lease.fencing
