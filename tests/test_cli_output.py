"""How phs speaks (issue 13, "Speak like the tools players already know"): options only where
they do something, one JSON naming scheme, one-line errors that say what to check."""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_cli_remote import Phs, coordinator, phs  # noqa: F401

from peerhost_server.background import BackgroundCoordinator


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "peerhost_cli.main", *args],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("args", [
    ["host", "--json"], ["join", "--json"], ["serve", "--json"], ["serve", "-C", "w"],
    ["session", "list", "-C", "w"], ["clone", "http://x", "--session", "s", "f", "-C", "w"],
    ["demo", "-C", "w"],
])
def test_options_that_would_do_nothing_are_usage_errors(args: list[str]) -> None:
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    assert "unrecognized arguments" in proc.stderr


def test_every_command_takes_debug() -> None:
    proc = run("serve", "--debug", "--bind", "nonsense")
    assert proc.returncode == 2 and "expected HOST:PORT" in proc.stderr


def test_tokens_are_called_token_in_json(coordinator: BackgroundCoordinator,  # noqa: F811
                                         phs: Phs) -> None:  # noqa: F811
    created = phs.json("session", "create", "s1", "--url", coordinator.url,
                       "--token", coordinator.admin_token or "")
    invited = phs.json("session", "invite", "s1", "bob", "--url", coordinator.url,
                       "--token", created["token"])
    assert set(created) == {"session", "url", "token"} and len(created["token"]) > 20
    assert "token" in invited
