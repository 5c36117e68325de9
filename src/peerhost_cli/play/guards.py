"""What ``phs host`` checks before it hosts.

Before the lease (:func:`preflight`): everything that can be known on this machine: the
server command and its jar, the tunnel and its binary, the game port, a world Minecraft has open,
the server's version against the world's. The coordinator and the token are checked by the
first call the host makes (the lease status, asked before the lease), so a host that cannot
host never takes the lease from someone who can.

After the pull (:func:`check_version`, :func:`mods_warning`): the world is now the session's,
so its version is checked again before the server starts on it, and a host whose mods differ
from those of the last host is warned.

A server's version comes from ``game_version`` in ``peerhost.toml`` (``1.21.4``, or a data
version such as ``4189``), else from the ``version.json`` that vanilla and Paper server jars
carry (``name``, ``world_version``); unknown, nothing is refused before the server starts, and
the server's own ``Starting minecraft server version ...`` line is compared once it prints it.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from peerhost_store.errors import PeerhostError
from peerhost_store.worldinfo import PRE_1_9, describe
from peerhost_store.worldlock import check_world_closed

from .config import CONFIG_FILE, HostConfig
from .game import port_answers
from .tunnel import CloudflaredTunnel, TunnelSettings, make_tunnel

__all__ = [
    "HostRefused",
    "ServerVersion",
    "VersionRefused",
    "check_version",
    "mods_warning",
    "preflight",
    "server_version",
]

#: The line vanilla, Paper, Fabric and Forge servers print first.
STARTING = re.compile(r"Starting minecraft server version (\S+)")


class HostRefused(PeerhostError):
    """``phs host`` will not host as configured; the message says what and how to fix it."""


class VersionRefused(HostRefused):
    """The server would downgrade the world, or upgrade it unasked."""


@dataclass(frozen=True)
class ServerVersion:
    """A server's game version, and where phs learned it."""

    name: str | None
    data_version: int | None
    source: str

    def describe(self) -> str:
        return describe({"version": self.name, "data_version": self.data_version})


def server_version(config: HostConfig, server_dir: Path) -> ServerVersion | None:
    """The version the server will run, from ``game_version`` or the server jar; None when
    neither says."""
    if config.game_version:
        text = config.game_version.strip()
        if text.isdigit():
            return ServerVersion(None, int(text), f"game_version in {CONFIG_FILE}")
        return ServerVersion(text, None, f"game_version in {CONFIG_FILE}")
    jar = server_jar(config.server, server_dir)
    return None if jar is None else _jar_version(jar)


def server_jar(command: tuple[str, ...], server_dir: Path) -> Path | None:
    """The jar ``java -jar X`` runs (relative to the server folder)."""
    for flag, arg in itertools.pairwise(command):
        if flag == "-jar":
            path = Path(arg)
            return path if path.is_absolute() else server_dir / path
    return None


def _jar_version(jar: Path) -> ServerVersion | None:
    try:
        with zipfile.ZipFile(jar) as zf:
            info = zf.getinfo("version.json")
            if info.file_size > 1 << 20:
                return None
            data = json.loads(zf.read(info))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    if not isinstance(data, dict):
        return None
    name = data.get("name") or data.get("id")
    world = data.get("world_version")
    return ServerVersion(name if isinstance(name, str) else None,
                         world if isinstance(world, int) and not isinstance(world, bool) else None,
                         f"{jar.name}'s version.json")


def _release(name: str | None) -> tuple[int, ...] | None:
    """``1.21.4`` -> (1, 21, 4); None for a snapshot (``24w14a``) or anything else."""
    if name is None or not re.fullmatch(r"\d+(\.\d+)*", name):
        return None
    return tuple(int(part) for part in name.split("."))


def _order(world: Mapping[str, object], server: ServerVersion) -> int | None:
    """-1: the server is older than the world, 0 the same, 1 newer; None: cannot tell."""
    wdata, wname = world.get("data_version"), world.get("version")
    srel = _release(server.name)
    if wdata == PRE_1_9:  # a world from before DataVersion (1.9) existed
        if server.data_version is not None:
            return 1 if server.data_version > PRE_1_9 else 0
        return None if srel is None else int(srel >= (1, 9))
    if isinstance(wdata, int) and server.data_version is not None:
        return (server.data_version > wdata) - (server.data_version < wdata)
    wrel = _release(wname if isinstance(wname, str) else None)
    if wrel is not None and srel is not None:
        return (srel > wrel) - (srel < wrel)
    return 0 if server.name is not None and server.name == wname else None


def check_version(world: Mapping[str, object], server: ServerVersion | None, *,
                  upgrade: bool) -> str | None:
    """Refuse a server that would downgrade ``world`` (its game, as level.dat or a snapshot
    says), or upgrade it without ``upgrade``. Returns a line to show for an upgrade that was
    asked for, else None.

    Raises:
        VersionRefused: see above.
    """
    if server is None or (world.get("data_version") is None and world.get("version") is None):
        return None
    order = _order(world, server)
    have, runs = describe(world), f"{server.describe()} (from {server.source})"
    if order == 0:
        return None
    if order is not None and order < 0:
        raise VersionRefused(
            f"the world was saved by Minecraft {have} and this server is {runs}: an older "
            "server cannot load a newer world safely (what it does not know is lost). Run a "
            f"server of {world.get('version') or 'that version'}, or set game_version in "
            f"{CONFIG_FILE} if phs misread it")
    if upgrade:
        return f"upgrading the world from Minecraft {have} to {server.describe()}, as asked"
    if order is None:
        raise VersionRefused(
            f"this server is {runs} and the world was saved by Minecraft {have}; phs cannot "
            f"tell which is newer. Set game_version in {CONFIG_FILE}, or pass --upgrade if the "
            "server is the newer one and you mean to upgrade the world")
    raise VersionRefused(
        f"this server is {runs}, newer than the world (Minecraft {have}): hosting would upgrade "
        "the world, rewriting every chunk it loads, and friends on the old version could no "
        "longer join. To do it on purpose: phs host --upgrade (or upgrade = true in "
        f"{CONFIG_FILE})")


def mods_warning(previous: Mapping[str, object], mods: tuple[str, ...], who: str) -> str | None:
    """A warning when this server folder's ``mods`` differ from the mods the world was last
    hosted with (``previous``: a snapshot's game, by ``who``); None when they match or the
    snapshot recorded none."""
    before = previous.get("mods")
    if not isinstance(before, tuple) or set(before) == set(mods):
        return None
    missing, extra = sorted(set(before) - set(mods)), sorted(set(mods) - set(before))
    parts = []
    if missing:
        parts.append("not here: " + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
    if extra:
        parts.append("only here: " + ", ".join(extra[:8]) + (" ..." if len(extra) > 8 else ""))
    return (f"this server's mods differ from those {who} last hosted the world with ("
            + "; ".join(parts) + "): blocks and items of a mod that is not here are lost when "
            "the world is saved without it")


def preflight(config: HostConfig, server_dir: Path, world: Path, port: int,
              world_game: Mapping[str, object]) -> list[str]:
    """Check on this machine what hosting needs, before any lease is taken; lines to show.

    Raises:
        HostRefused: no server command or it is not found, an unknown tunnel or one whose
            binary is missing, the game port in use, a version the world must not get.
        WorldInUse: Minecraft has the world open.
    """
    _check_command(config, server_dir)
    _check_tunnel(config, port)
    check_world_closed(world)
    if port_answers(port):
        raise HostRefused(f"port {port} on this machine is in use already (another Minecraft "
                          "server?): stop it, or give this one another server-port in "
                          "server.properties")
    note = check_version(world_game, server_version(config, server_dir), upgrade=config.upgrade)
    return [note] if note else []


def _check_command(config: HostConfig, server_dir: Path) -> None:
    if not config.server:
        raise HostRefused(f"no server command: give --server or set server in {CONFIG_FILE} "
                          "(e.g. server = \"java -Xmx2G -jar server.jar nogui\")")
    program = config.server[0]
    found = shutil.which(program) or (
        ("/" in program or "\\" in program) and (server_dir / program).is_file())
    if not found:
        raise HostRefused(f"the server command {program!r} is not found (not on PATH, nor in "
                          f"{server_dir}): install it, or fix server in {CONFIG_FILE}")
    jar = server_jar(config.server, server_dir)
    if jar is not None and not jar.is_file():
        raise HostRefused(f"the server command runs {jar}, which does not exist: put the server "
                          f"jar there, or fix server in {CONFIG_FILE}")


def _check_tunnel(config: HostConfig, port: int) -> None:
    settings = TunnelSettings(port, config.address, config.cloudflared)
    try:
        tunnel = make_tunnel(config.tunnel, settings)
    except PeerhostError as exc:
        raise HostRefused(str(exc)) from None
    if isinstance(tunnel, CloudflaredTunnel) and shutil.which(config.cloudflared) is None:
        raise HostRefused(f"tunnel = cloudflared, but {config.cloudflared!r} is not found: install "
                          "cloudflared (docs/getting-started.md, section 1), give its path with "
                          "--cloudflared, or use tunnel = \"direct\" or \"none\"")
