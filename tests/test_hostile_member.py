"""A member, or a stolen member token, must not be able to break a session for the others
(issue 11, items 6-9): trees an honest client would refuse, unbounded pairing work, unbounded
storage, and leases and standby entries that outlive a revocation."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from test_sync_support import Clock, make_session, running

from peerhost_server import Limits
from peerhost_store.sync.client import CoordinatorClient, Forbidden

FAST = Limits(rate=1e6, burst=10**6)


# -- item 9: revocation, one standby entry per member, the owner's reset ----------------------


def test_revoking_a_member_ends_its_lease_and_drops_its_standby(tmp_path: Path) -> None:
    clock = Clock()
    with running(tmp_path / "c", clock=clock, limits=FAST) as server:
        c = make_session(server, members=("alice", "bob", "mallory"))
        c["mallory"].acquire("mallory-pc", 3600)
        assert c["bob"].standby("bob-pc", 60) == 1
        c["owner"].remove_member("mallory")
        status = c["alice"].lease_status()
        assert status.lease is None, "the revoked member's lease ended with its token"
        assert status.reserved_for == "bob-pc", "the next standby got the window at once"
        c["bob"].acquire("bob-pc", 60)
        c["mallory2"] = server.client("s1", c["owner"].add_member("mallory2"))
        assert c["mallory2"].standby("m2", 60) == 1
        assert c["alice"].standby("alice-pc", 60) == 2
        c["owner"].remove_member("mallory2")
        status = c["alice"].lease_status()
        assert status.standby == ["alice-pc"], "the revoked member's standby entry is gone"


def test_revoking_the_member_a_window_is_reserved_for_passes_it_on(tmp_path: Path) -> None:
    clock = Clock()
    with running(tmp_path / "c", clock=clock, limits=FAST) as server:
        c = make_session(server, members=("alice", "bob", "mallory"))
        fencing = c["alice"].acquire("alice-pc", 60).fencing
        c["mallory"].standby("m", 60)
        c["bob"].standby("bob-pc", 60)
        c["alice"].release(fencing)
        assert c["bob"].lease_status().reserved_for == "m"
        c["owner"].remove_member("mallory")
        assert c["bob"].lease_status().reserved_for == "bob-pc"


def test_a_member_holds_one_standby_entry_whatever_holder_names_it_makes_up(
        tmp_path: Path) -> None:
    with running(tmp_path / "c", limits=FAST) as server:
        c = make_session(server, members=("alice", "bob", "mallory"))
        c["alice"].acquire("alice-pc", 3600)
        positions = {c["mallory"].standby(f"made-up-{i}", 60) for i in range(50)}
        assert positions == {1}
        assert c["bob"].standby("bob-pc", 60) == 2
        assert c["alice"].lease_status().standby == ["made-up-49", "bob-pc"]


def test_the_owner_clears_the_queue_and_force_releases(tmp_path: Path) -> None:
    with running(tmp_path / "c", limits=FAST) as server:
        c = make_session(server, members=("alice", "bob", "mallory"))
        c["mallory"].acquire("mallory-pc", 3600)
        c["bob"].standby("bob-pc", 60)
        c["alice"].standby("alice-pc", 60)
        with pytest.raises(Forbidden):
            c["alice"].reset_lease()
        answer = c["owner"].reset_lease(standby=False)
        assert answer["released"] == "mallory-pc" and answer["dropped"] == []
        status = c["alice"].lease_status()
        assert status.lease is None and status.reserved_for == "bob-pc"
        assert status.standby == ["alice-pc"]
        answer = c["owner"].reset_lease()
        assert answer["released"] is None and answer["dropped"] == ["bob-pc", "alice-pc"]
        status = c["alice"].lease_status()
        assert (status.lease, status.standby, status.reserved_for) == (None, [], None)
        c["alice"].acquire("alice-pc", 60)  # free for anyone again


def test_phs_session_reset_lease(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from peerhost_cli.cmd_serve import BackgroundCoordinator
    from peerhost_cli.main import main

    with BackgroundCoordinator(tmp_path / "c", limits=FAST) as coord:
        assert coord.admin_token is not None
        with httpx.Client(base_url=coord.url) as http:
            admin = CoordinatorClient(http, "s1", coord.admin_token)
            owner = CoordinatorClient(http, "s1", admin.create_session("s1"))
            mallory = CoordinatorClient(http, "s1", owner.add_member("mallory"))
            mallory.acquire("mallory-pc", 3600)
            owner_token = owner._token
            args = ["session", "reset-lease", "s1", "--url", coord.url, "--token", owner_token]
            assert main([*args, "--keep-lease", "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["released"] is None
            assert main(args) == 0
            assert "ended mallory-pc's lease" in capsys.readouterr().out
            assert mallory.lease_status().lease is None
            member_args = [*args[:-1], mallory._token]
            assert main(member_args) == 7, "a member may not reset the lease"
