"""The README and docs/getting-started.md walk a new player from nothing to playing with
friends: this runs their shell blocks, in order, as the players would (issue 13).

Every ```sh block runs unless an ``<!-- example ... -->`` line stands right before it. Lines are
the commands a player types: ``phs ...``, ``cd``, ``mkdir``, ``export``; ``python3 dev.py`` and
``. .venv/bin/activate`` are the set-up this test already runs in. ``phs serve``, ``phs host``
and ``phs join`` keep running in the background, as in a player's terminal.

What differs from real life, and only that:

* the players are on one machine: each has their own home, config folder and name
  (``PHS_AUTHOR``), and the two ports a player would each have to themselves, the game server's
  and ``phs join``'s local one, are free ports here (``--port`` is added to ``phs join``);
* ``https://mc.example.org`` and ``127.0.0.1:8000`` are the coordinator the walkthrough started;
* the tokens (``<admin token>``, ...) and the snapshot id ``3fa2c1`` are what earlier commands
  printed, as a player would copy them;
* ``java`` and ``cloudflared`` are the stand-ins in tests/fakes, and a server folder holds what
  the player brings to it: ``server.jar`` (its ``version.json`` only), ``server.properties``, the
  ``peerhost.toml`` of the doc, and (for the first host) a real world.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playutil import FAKES, Proc, free_port
from test_host import read_greeting  # what Minecraft sees on 127.0.0.1:PORT
from worldutil import copy_world

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX shells and signals")

ROOT = Path(__file__).resolve().parents[1]
#: The world the first host brings, and the server jar's version that matches it.
WORLD, VERSION = "aviadbag-1.18.2-initial", {"id": "1.18.2", "name": "1.18.2",
                                             "world_version": 2975}
#: What a command prints that the next ones use, as a player copies it.
CAPTURES = [
    (re.compile(r"admin token \(shown once, keep it safe\): (\S+)"), "<admin token>"),
    (re.compile(r"owner token \(shown once\): (\S+)"), "<owner token>"),
    (re.compile(r"invited (\w+) to \w+; their token \(shown once\): (\S+)"), "<{0}'s token>"),
]


@dataclass
class Block:
    """A shell block of a doc: the section it is in, its lines."""

    section: str
    lines: list[str]


def blocks(doc: Path) -> tuple[list[Block], str]:
    """The doc's ```sh blocks that are not examples, and its peerhost.toml."""
    found: list[Block] = []
    toml = ""
    section = ""
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("## "):
            section = line[3:]
        fence = re.fullmatch(r"```(\w*)", line)
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            body = [x.strip() for x in lines[i + 1:end]]
            example = i > 0 and lines[i - 1].strip().startswith("<!-- example")
            if fence.group(1) == "sh" and not example:
                found.append(Block(section, body))
            elif fence.group(1) == "toml" and body and body[0].endswith("peerhost.toml"):
                toml = "\n".join(body) + "\n"
            i = end
        i += 1
    return found, toml


@dataclass
class Player:
    """One player's machine: a home folder, a config folder, a name, a terminal."""

    name: str
    home: Path
    cwd: Path
    env: dict[str, str]
    background: dict[str, Proc] = field(default_factory=dict)


class Walkthrough:
    """Runs doc blocks as the players; ``values`` are what earlier commands printed."""

    def __init__(self, tmp: Path, toml: str, real_world: Any) -> None:
        self.tmp = tmp
        self.toml = toml
        self.real_world = real_world
        self.port = free_port()
        self.values: dict[str, str] = {
            "https://mc.example.org": f"http://127.0.0.1:{self.port}",
            "http://127.0.0.1:8000": f"http://127.0.0.1:{self.port}",
            "127.0.0.1:8000": f"127.0.0.1:{self.port}",
        }
        self.players: dict[str, Player] = {}
        self.outputs: list[str] = []
        self.cloudflare = tmp / "cloudflare"

    def player(self, name: str) -> Player:
        if name not in self.players:
            home = self.tmp / name
            home.mkdir()
            env = {**os.environ, "HOME": str(home), "PHS_CONFIG_DIR": str(home / "config"),
                   "PHS_AUTHOR": name, "PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}",
                   "PEERHOST_FAKE_CLOUDFLARE_DIR": str(self.cloudflare), "COLUMNS": "200"}
            env.pop("PHS_TOKEN", None)
            self.players[name] = Player(name, home, home, env)
        return self.players[name]

    def run_block(self, who: str, block: Block) -> None:
        for line in block.lines:
            if line.startswith("# "):  # the README names who types what
                who = next((n for n in ("alice", "bob", "carol") if line[2:].startswith(n)),
                           "admin" if "coordinator" in line else who)
                continue
            if line and not line.startswith("#"):
                self.run_line(self.player(who), line)

    def run_line(self, player: Player, line: str) -> None:
        for key, value in self.values.items():
            line = line.replace(key, value)
        words = [str(player.home) + w[1:] if w.startswith("~/") else w
                 for w in shlex.split(line, comments=True)]
        if not words or words[:2] in (["python3", "dev.py"], [".", ".venv/bin/activate"]):
            return
        if words[0] == "export":
            key, _, value = words[1].partition("=")
            player.env[key] = value
        elif words[0] == "mkdir":
            (player.cwd / words[1]).mkdir(parents=True)
        elif words[0] == "cd":
            player.cwd = player.cwd / words[1]
            self.bring_server_files(player)
        else:
            assert words[0] == "phs", f"not a command a player types here: {line}"
            self.phs(player, words[1:], line)

    def bring_server_files(self, player: Player) -> None:
        """What a player brings to their server folder besides PeerHost (see the docstring)."""
        folder = player.cwd
        if not folder.exists():
            copy_world(self.real_world(WORLD), folder / "world")
        if (folder / "server.jar").exists():
            return
        with zipfile.ZipFile(folder / "server.jar", "w") as jar:
            jar.writestr("version.json", repr(VERSION).replace("'", '"'))
        (folder / "server.properties").write_text(
            f"#Minecraft server properties\nlevel-name=world\nserver-port={free_port()}\n")
        assert self.toml, "the doc shows no peerhost.toml"
        (folder / "peerhost.toml").write_text(self.toml)

    def phs(self, player: Player, args: list[str], line: str) -> None:
        command = args[0]
        if command == "join":  # a friend's local port is their own; here it is a free one
            args = ["join", "--port", str(free_port()), *args[1:]]
        if command in ("serve", "host", "join"):
            proc = Proc(args, cwd=player.cwd, env=player.env)
            player.background[command] = proc
            ready = {"serve": r"coordinator for .* on http://",
                     "host": r"published \S+ \((cloudflared|direct)\)",
                     "join": r"(standby for the lease, position \d+|hosts.* point Minecraft at)"}
            proc.wait_for(ready[command], timeout=60)
            self.capture(proc.text())
            return
        done = subprocess.run([sys.executable, "-m", "peerhost_cli.main", *args], cwd=player.cwd,
                              env=player.env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, f"{player.name}$ {line}\n{done.stdout}{done.stderr}"
        self.outputs.append(done.stdout)
        self.capture(done.stdout)
        if command == "log":  # the reader picks a snapshot from before the damage: the oldest
            self.values["3fa2c1"] = re.findall(r"\b[0-9a-f]{12}\b", done.stdout)[-1]

    def capture(self, text: str) -> None:
        for pattern, name in CAPTURES:
            for match in pattern.finditer(text):
                groups = match.groups()
                self.values[name.format(*groups[:-1])] = groups[-1]

    def stop(self, who: str, command: str) -> Proc:
        """Ctrl-C in ``who``'s terminal running ``command``; it must end cleanly."""
        proc = self.players[who].background.pop(command)
        proc.proc.send_signal(signal.SIGINT)
        assert proc.finish(60) == 0, proc.text()
        return proc

    def close(self) -> None:
        for player in self.players.values():
            for proc in player.background.values():
                proc.proc.send_signal(signal.SIGINT)
                try:
                    proc.finish(30)
                finally:
                    proc.kill()


def join_port(proc: Proc) -> int:
    """The local port ``phs join`` said to point Minecraft at (it said so when it started)."""
    pattern = r"point Minecraft at 127\.0\.0\.1:(\d+)"
    seen = re.search(pattern, proc.text())
    return int((seen or proc.wait_for(pattern, timeout=30)).group(1))


@pytest.fixture
def walk(tmp_path: Path, real_world: Any) -> Any:
    if shutil.which("python3") is None:
        pytest.skip("the stand-ins for java and cloudflared run under python3")

    def start(toml: str) -> Walkthrough:
        walkthrough.append(Walkthrough(tmp_path, toml, real_world))
        return walkthrough[0]

    walkthrough: list[Walkthrough] = []
    yield start
    for w in walkthrough:
        w.close()


def test_getting_started_from_nothing_to_playing_with_friends(walk: Any) -> None:
    found, toml = blocks(ROOT / "docs" / "getting-started.md")
    w: Walkthrough = walk(toml)
    who = {"1.": "alice", "2.": "admin", "3.": "alice", "4.": "bob", "5.": "carol", "6.": "alice"}
    sections = [b.section.split(" ")[0] for b in found]
    assert sections == ["1.", "2.", "2.", "3.", "4.", "5.", "6."], sections
    bob_port = 0
    for block in found:
        number = block.section.split(" ")[0]
        if number == "6.":
            # "Ask the host to stop first": carol, who took over, stops hosting.
            w.stop("carol", "join")
        w.run_block(who[number], block)
        if number == "4.":  # bob plays through the tunnel, on alice's server
            bob_port = join_port(w.players["bob"].background["join"])
            assert read_greeting(bob_port) == "fake minecraft server of my-server\n"
        if number == "5.":  # alice stops hosting; the standby, carol, takes over
            carol = w.players["carol"].background["join"]
            assert "standby for the lease, position 1" in carol.text()
            w.stop("alice", "host")
            carol.wait_for(r"the lease came to this standby: hosting now", timeout=40)
            at = carol.wait_for(r"published (\S+) \(cloudflared\)", timeout=40).group(1)
            bob = w.players["bob"].background["join"]
            bob.wait_for(rf"carol@\S+ hosts.* at {re.escape(at)}", timeout=40)
            assert read_greeting(bob_port) == "fake minecraft server of my-server\n"
    rolled = w.outputs[-1]
    assert "rolled back to" in rolled and "undo with: phs rollback" in rolled, rolled


def test_readme_from_nothing_to_playing_with_friends(walk: Any) -> None:
    readme = ROOT / "README.md"
    found, _ = blocks(readme)
    walkthrough = [b for b in found if b.section == "From nothing to playing with friends"]
    assert len(walkthrough) == 1
    _, toml = blocks(ROOT / "docs" / "getting-started.md")  # the peerhost.toml it points to
    w: Walkthrough = walk(toml)
    w.run_block("admin", walkthrough[0])
    bob = w.players["bob"].background["join"]
    assert read_greeting(join_port(bob)) == "fake minecraft server of my-server\n"
    w.stop("bob", "join")
    w.stop("alice", "host")
