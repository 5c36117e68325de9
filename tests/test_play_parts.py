"""The parts of the play loop one by one: settings, the server process, save control, tunnels,
the lease keeper."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fakes.fake_rcon import FakeRcon
from fakes.recorded_env import ENV_DIR, recorded
from playutil import FAKE_SERVER, FAKES, free_port, port_answers
from rich.console import Console

from peerhost_cli.play.config import (
    ConfigError,
    HostConfig,
    load_host_config,
    load_properties,
    parse_properties,
)
from peerhost_cli.play.game import GameServer, GameServerError
from peerhost_cli.play.saving import (
    ConsoleSaveControl,
    QuietFilesControl,
    RconSaveControl,
    SaveControlError,
    save_control,
)
from peerhost_cli.play.tunnel import Access, TunnelError, TunnelSettings, make_tunnel
from peerhost_cli.play.view import HostStatus, render
from peerhost_cli.play.waiting import SyncWait
from peerhost_store.sync.client import CoordinatorUnavailable, Lease, LeaseLost, Renewal
from peerhost_store.sync.keeper import LeaseKeeper

# -- settings ---------------------------------------------------------------------------------


def test_host_config_reads_toml_and_flags_override(tmp_path: Path) -> None:
    path = tmp_path / "peerhost.toml"
    path.write_text('[host]\nserver = "java -Xmx2G -jar \'my server.jar\' nogui"\n'
                    'tunnel = "direct"\naddress = "10.0.0.2:25565"\nsnapshot-minutes = 5\n'
                    'server_dir = "srv"\n')
    config = load_host_config(path)
    assert config.server == ("java", "-Xmx2G", "-jar", "my server.jar", "nogui")
    assert (config.tunnel, config.address, config.snapshot_minutes) == ("direct", "10.0.0.2:25565", 5)
    assert config.server_dir == tmp_path / "srv"
    assert config.with_overrides(tunnel="none", address=None).tunnel == "none"
    assert config.with_overrides(address=None).address == "10.0.0.2:25565"
    assert load_host_config(tmp_path / "absent.toml") == HostConfig()
    assert (HostConfig().max_quiet_wait, HostConfig().console_save) == (60.0, True)
    path.write_text("[host]\nmax_quiet_wait = 30\nconsole-save = false\n")
    assert (load_host_config(path).max_quiet_wait, load_host_config(path).console_save) == (30, False)


@pytest.mark.parametrize(("text", "needle"), [
    ("[host\n", "not valid TOML"),
    ("[host]\nsevrer = 'x'\n", "unknown key 'sevrer'"),
    ("[host]\nttl = 'long'\n", "ttl has the wrong type"),
    ("[host]\nserver = 3\n", "'server' must be a string or a list"),
    ("[host]\nport = true\n", "port has the wrong type"),
    ("[host]\nconsole_save = 'yes'\n", "console_save has the wrong type"),
    ("[host]\nmax_quiet_wait = true\n", "max_quiet_wait has the wrong type"),
])
def test_bad_host_config_names_the_file_and_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "peerhost.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_host_config(path)
    assert needle in str(info.value) and str(path) in str(info.value)


def test_server_properties(tmp_path: Path) -> None:
    text = ("#Minecraft server properties\n#Mon Nov 30\nenable-rcon=true\nrcon.port=25599\n"
            "rcon.password=s3cret=with=equals\nserver-port=25570\nmotd=A \\u00A7 world\n")
    assert parse_properties(text)["rcon.password"] == "s3cret=with=equals"
    path = tmp_path / "server.properties"
    path.write_text(text)
    props = load_properties(path)
    assert (props.port, props.rcon_enabled, props.rcon_port) == (25570, True, 25599)
    assert props.rcon_password == "s3cret=with=equals"
    assert "s3cret" not in repr(props)
    assert isinstance(save_control(props, 5), RconSaveControl)
    assert "s3cret" not in repr(save_control(props, 5))
    assert load_properties(tmp_path / "none").port == 25565
    path.write_text("server-port=70000\n")
    with pytest.raises(ConfigError, match="server-port='70000' is not a port"):
        load_properties(path)
    path.write_text("enable-rcon=true\nrcon.password=\n")
    assert isinstance(save_control(load_properties(path), 5), QuietFilesControl)


def test_quiet_files_waits_until_the_world_stops_changing(tmp_path: Path) -> None:
    (tmp_path / "region").mkdir()
    (tmp_path / "region" / "r.0.0.mca").write_bytes(b"x")
    now = [time.time()]
    quiet = QuietFilesControl(5.0, clock=lambda: now[0])
    assert not quiet.ready(tmp_path)
    now[0] += 6
    assert quiet.ready(tmp_path)


def test_rcon_pauses_saving_around_the_snapshot_and_always_resumes() -> None:
    with FakeRcon(password="pw") as rcon:
        control = RconSaveControl(rcon.port, "pw", timeout=5)
        with control.paused():
            assert not rcon.saving_enabled
        assert rcon.received() == ["save-off", "save-all flush", "save-on"]
        with pytest.raises(RuntimeError), control.paused():
            raise RuntimeError("the snapshot failed")
        assert rcon.received()[-1] == "save-on" and rcon.saving_enabled
    with (FakeRcon(password="pw") as rcon,
          pytest.raises(SaveControlError, match=r"RCON at 127\.0\.0\.1:\d+ refused")):
        RconSaveControl(rcon.port, "wrong", timeout=5).run("save-off")
    with pytest.raises(SaveControlError, match="save-off failed"):
        RconSaveControl(free_port(), "pw", timeout=2).run("save-off")


def test_console_save_pauses_saving_through_the_server_console(tmp_path: Path) -> None:
    lines: list[str] = []
    server = fake_server(tmp_path, lines=lines)
    server.start()
    try:
        server.wait_ready(20)
        control = ConsoleSaveControl(server, timeout=10)
        with control.paused():
            said = "\n".join(lines)
            assert "Automatic saving is now disabled" in said and "Saved the game" in said
            assert said.index("disabled") < said.index("Saved the game")
            assert (tmp_path / "world" / "level.dat").exists(), "not flushed before the snapshot"
        wait_until(lambda: any("Automatic saving is now enabled" in line for line in lines))
        with pytest.raises(RuntimeError), control.paused():
            raise RuntimeError("the snapshot failed")
        wait_until(lambda: sum("now enabled" in line for line in lines) == 2)
    finally:
        assert server.stop(10) == 0
    # A server that does not answer on its console: no snapshot, and saving is switched back on.
    lines.clear()
    muted = fake_server(tmp_path, "--mute-saves", lines=lines)
    muted.start()
    try:
        muted.wait_ready(20)
        with pytest.raises(SaveControlError, match="Saved the game"), \
                ConsoleSaveControl(muted, timeout=0.5).paused():
            pytest.fail("snapshot taken without a flushed world")
    finally:
        assert muted.stop(10) == 0


def test_a_sync_wait_is_shown_and_read_back_from_untrusted_lease_json() -> None:
    wait = SyncWait("sync requested", since=1000.0)
    assert wait.describe(now=1040.0) == "sync requested 40 s ago, waiting for quiet files"
    overdue = SyncWait("snapshot due", since=1000.0, overdue=True)
    assert "no RCON" in overdue.describe(now=1100.0)
    game = {"tunnel": "direct", "port": 1, "sync_wait": wait.to_json()}
    assert SyncWait.from_lease(Lease("A", "alice", 7, 60, 60, None, game)) == wait
    for junk in (None, "x", [1], {"sync_wait": 3}, {"sync_wait": {"reason": "x" * 5000, "since": 1}},
                 {"sync_wait": {"reason": "sync requested", "since": "soon"}},
                 {"sync_wait": {"reason": "sync requested", "since": float("nan")}}):
        assert SyncWait.from_lease(Lease("A", "alice", 7, 60, 60, None, junk)) is None
    status = HostStatus("s1", "A", saving="quiet files", wait=SyncWait("sync requested", time.time()))
    console = Console(record=True, width=120)
    console.print(render(status))
    assert "sync requested 0 s ago, waiting for quiet files" in console.export_text()


def test_the_server_and_cloudflared_never_see_a_token(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHS_TOKEN", "phs.0123456789abcdef.secret")
    monkeypatch.setenv("PEERHOST_TEST_KEPT", "kept")
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "env"))
    monkeypatch.setenv("PEERHOST_FAKE_CLOUDFLARE_DIR", str(tmp_path / "cloudflare"))
    server = fake_server(tmp_path)
    server.start()
    cloudflared = str(FAKES / "cloudflared")
    tunnel = make_tunnel("cloudflared", TunnelSettings(server.port, cloudflared=cloudflared))
    try:
        server.wait_ready(20)
        published = tunnel.start()
        assert published.address is not None
        access = Access(cloudflared, published.address, free_port())
        access.start()
        access.stop()
    finally:
        tunnel.stop()
        server.stop(10)
    envs = recorded(tmp_path / "env", "server") + recorded(tmp_path / "env", "cloudflared")
    assert len(envs) == 3
    for env in envs:
        assert not [name for name in env if name.upper().startswith("PHS_")], env
        assert "phs.0123456789abcdef.secret" not in str(env)
        assert env["PEERHOST_TEST_KEPT"] == "kept"  # cleaned, not emptied
        assert env["PEERHOST_FAKE_CLOUDFLARE_DIR"] == str(tmp_path / "cloudflare")


# -- the server process -----------------------------------------------------------------------


def fake_server(tmp: Path, *extra: str, lines: list[str] | None = None) -> GameServer:
    port = free_port()
    seen: list[str] = [] if lines is None else lines
    return GameServer([sys.executable, str(FAKE_SERVER), "--world", "world", "--port", str(port),
                       *extra], tmp, port, seen.append)


def test_game_server_ready_console_and_graceful_stop(tmp_path: Path) -> None:
    server = fake_server(tmp_path)
    server.start()
    server.wait_ready(20)
    assert port_answers(server.port)
    assert server.send("write note hello")
    assert server.stop(10) == 0
    assert (tmp_path / "world" / "data" / "note.txt").read_text() == "hello\n"
    assert (tmp_path / "world" / "level.dat").exists(), "stop did not let the server save"


def test_game_server_that_ignores_stop_is_terminated(tmp_path: Path) -> None:
    server = fake_server(tmp_path, "--ignore-stop")
    server.start()
    server.wait_ready(20)
    started = time.monotonic()
    assert server.stop(1.0) != 0
    assert time.monotonic() - started < 15
    assert not port_answers(server.port)


def test_game_server_errors_name_the_command(tmp_path: Path) -> None:
    with pytest.raises(GameServerError, match="no server command"):
        GameServer([], tmp_path, 1, print)
    with pytest.raises(GameServerError, match="cannot start the server command 'no-such-java'"):
        GameServer(["no-such-java"], tmp_path, 1, print).start()
    dying = GameServer([sys.executable, "-c", "print('Error: Unable to access jarfile'); exit(1)"],
                       tmp_path, free_port(), lambda _: None)
    dying.start()
    with pytest.raises(GameServerError, match=r"(?s)exited with code 1 before it was ready.*jarfile"):
        dying.wait_ready(20)
    stop = threading.Event()
    stop.set()
    slow = fake_server(tmp_path, "--start-delay", "30")
    slow.start()
    try:
        with pytest.raises(InterruptedError):
            slow.wait_ready(20, stop)
    finally:
        slow.kill()


# -- tunnels ----------------------------------------------------------------------------------


def test_tunnel_providers() -> None:
    with pytest.raises(TunnelError, match="unknown tunnel 'ngrok'"):
        make_tunnel("ngrok", TunnelSettings(25565))
    with pytest.raises(TunnelError, match="needs --address"):
        make_tunnel("direct", TunnelSettings(25565))
    assert make_tunnel("direct", TunnelSettings(1, "10.1.1.1:25565")).start().address == "10.1.1.1:25565"
    assert make_tunnel("none", TunnelSettings(1)).start().address is None
    with pytest.raises(TunnelError, match="cannot run 'no-such-cloudflared'"):
        make_tunnel("cloudflared", TunnelSettings(1, cloudflared="no-such-cloudflared")).start()


# -- the lease keeper -------------------------------------------------------------------------


class ScriptedClient:
    """Answers renewals from a script: a Renewal, or an exception to raise."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []
        self.waits: list[float] = []  # how long each renewal would wait for its answer

    def renew(self, fencing: int, *, seconds: float, **extra: Any) -> Renewal:
        self.calls.append({"fencing": fencing, **extra})
        self.waits.append(seconds)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, Renewal)
        return answer


def lease(ttl: float) -> Lease:
    return Lease("A", "alice", 7, ttl, ttl)


def keeper_for(client: ScriptedClient, ttl: float) -> LeaseKeeper:
    @contextmanager
    def connect() -> Iterator[Any]:
        yield client

    return LeaseKeeper(connect, lease(ttl), time.monotonic())


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_keeper_renews_publishes_and_reports_sync_requests() -> None:
    client = ScriptedClient([Renewal(lease(0.6), False), Renewal(lease(0.6), True),
                             Renewal(lease(0.6), False)])
    keeper = keeper_for(client, 0.6)
    keeper.start()
    try:
        keeper.publish("abc.trycloudflare.com", {"tunnel": "cloudflared"})
        wait_until(keeper.sync_requested.is_set)
        assert {"fencing": 7, "address": "abc.trycloudflare.com",
                "game": {"tunnel": "cloudflared"}} in client.calls
        wait_until(lambda: keeper.renewals >= 4)
        assert keeper.lost is None and keeper.seconds_left() > 0
    finally:
        keeper.stop()


def test_keeper_rides_out_an_outage_shorter_than_the_ttl_then_gives_up() -> None:
    down = CoordinatorUnavailable("unavailable", "connection refused", 0)
    client = ScriptedClient([down, Renewal(lease(0.9), False), down])
    keeper = keeper_for(client, 0.9)
    keeper.start()
    try:
        wait_until(lambda: keeper.renewals == 1)
        assert keeper.lost is None
        wait_until(lambda: keeper.lost is not None)
        assert "could not be reached" in (keeper.lost or "")
        assert keeper.changed.is_set()
    finally:
        keeper.stop()


def test_keeper_reports_a_fenced_lease_at_once() -> None:
    client = ScriptedClient([LeaseLost("lease_lost", "fencing token 7 is not the current lease", 409)])
    keeper = keeper_for(client, 0.6)
    keeper.start()
    try:
        wait_until(lambda: keeper.lost is not None, timeout=2)
        assert "no longer current" in (keeper.lost or "")
        assert len(client.calls) == 1
    finally:
        keeper.stop()
