"""Settings of ``phs host`` and ``phs join``: ``peerhost.toml`` and ``server.properties``.

A Minecraft server folder holds the world folder, ``server.properties`` and the server jar;
``peerhost.toml`` sits there too, beside the world, so it is not snapshotted with it (the
server command differs from one player's machine to the next)::

    # peerhost.toml
    [host]
    server = "java -Xmx2G -jar server.jar nogui"   # or a list of arguments
    remote = "origin"
    tunnel = "cloudflared"         # cloudflared | direct | none
    address = "192.168.1.20:25565" # with tunnel = "direct": what friends connect to
    snapshot_minutes = 10
    ttl = 60
    max_quiet_wait = 60            # without RCON: seconds a snapshot waits for quiet files
    console_save = true            # then: save-off / save-all flush / save-on on the console
    game_version = "1.21.4"        # when the server jar does not say (phs checks the world's)
    upgrade = false                # true: host even when the server would upgrade the world
    webhook = "https://discord.com/api/webhooks/..."  # told when hosting starts, moves, fails

Flags override the file; the file overrides the defaults.
"""

from __future__ import annotations

import shlex
import sys
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from peerhost_store.errors import PeerhostError

CONFIG_FILE = "peerhost.toml"
PROPERTIES_FILE = "server.properties"
DEFAULT_GAME_PORT = 25565


class ConfigError(PeerhostError):
    """``peerhost.toml`` or ``server.properties`` cannot be used; the message says where."""


@dataclass(frozen=True)
class HostConfig:
    """How ``phs host`` runs a session.

    Attributes:
        server: the server command (run in ``server_dir``); empty means none was given.
        server_dir: the folder the command runs in (default: the world's parent).
        remote: the remote (``phs remote add``) naming the coordinator session.
        tunnel: ``cloudflared``, ``direct`` or ``none``.
        address: with ``direct``, the host:port friends connect to.
        port: the game port (default: ``server-port`` of ``server.properties``, else 25565).
        snapshot_minutes: snapshot and push this often while hosting.
        ttl: seconds of the lease; it is renewed about every third of that.
        quiet_seconds: without RCON, snapshot only once the world files were this long unchanged.
        max_quiet_wait: without RCON, seconds a snapshot waits for quiet files; past that it is
            taken through the server console (``console_save``), else the host keeps waiting
            and says so (status panel, lease).
        console_save: the server reads console commands on its stdin (as a server started by
            ``phs host`` does) and answers ``save-all flush`` with ``Saved the game``.
        ready_timeout: seconds the server may take to become ready.
        stop_timeout: seconds the server may take to stop after ``stop`` before it is killed.
        cloudflared: the cloudflared executable.
        holder: the name on the lease (default: user@host).
        game_version: the server's Minecraft version (``1.21.4``) or data version (``4189``),
            when phs cannot read it from the server jar (:mod:`.guards`).
        upgrade: host even when the server is newer than the world (it upgrades the world).
        webhook: a chat webhook (Discord's JSON) told when hosting starts, moves or fails
            (:mod:`.notify`); a secret: never printed.
    """

    server: tuple[str, ...] = ()
    server_dir: Path | None = None
    remote: str | None = None
    tunnel: str = "cloudflared"
    address: str | None = None
    port: int | None = None
    snapshot_minutes: float = 10.0
    ttl: float = 60.0
    quiet_seconds: float = 5.0
    max_quiet_wait: float = 60.0
    console_save: bool = True
    ready_timeout: float = 300.0
    stop_timeout: float = 60.0
    cloudflared: str = "cloudflared"
    holder: str | None = None
    game_version: str | None = None
    upgrade: bool = False
    webhook: str | None = None

    def with_overrides(self, **values: Any) -> HostConfig:
        """A copy with every non-None value applied (command-line flags)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def split_command(value: str | list[str], where: str) -> tuple[str, ...]:
    """A command as a tuple: a string is split like a shell would (Windows rules on Windows)."""
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return tuple(value)
    if isinstance(value, str):
        return tuple(shlex.split(value, posix=sys.platform != "win32"))
    raise ConfigError(f"{where}: 'server' must be a string or a list of strings")


_KINDS: dict[str, type | tuple[type, ...]] = {
    "remote": str, "tunnel": str, "address": str, "port": int, "snapshot_minutes": (int, float),
    "ttl": (int, float), "quiet_seconds": (int, float), "max_quiet_wait": (int, float),
    "console_save": bool, "ready_timeout": (int, float),
    "stop_timeout": (int, float), "cloudflared": str, "holder": str, "server_dir": str,
    "game_version": str, "upgrade": bool, "webhook": str,
}


def load_host_config(path: Path) -> HostConfig:
    """The ``[host]`` table of ``path``; defaults when the file does not exist.

    Raises:
        ConfigError: not TOML, an unknown key, a value of the wrong type.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return HostConfig()
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    table = data.get("host", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [host] must be a table")
    known = {f.name for f in fields(HostConfig)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{path}: unknown key {key!r} in [host] "
                              f"(known: {', '.join(sorted(known))})")
        if name == "server":
            values[name] = split_command(value, str(path))
            continue
        kind = _KINDS[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ConfigError(f"{path}: [host] {key} has the wrong type ({type(value).__name__})")
        values[name] = Path(str(value)) if name == "server_dir" else value
    webhook = values.get("webhook")
    if webhook is not None and not webhook.startswith(("https://", "http://")):
        raise ConfigError(f"{path}: [host] webhook must be an https:// URL")
    if values.get("server_dir") is not None and not values["server_dir"].is_absolute():
        values["server_dir"] = path.parent / values["server_dir"]
    return HostConfig(**values)


@dataclass(frozen=True)
class ServerProperties:
    """What ``phs host`` reads from ``server.properties``."""

    port: int = DEFAULT_GAME_PORT
    rcon_enabled: bool = False
    rcon_port: int = 25575
    rcon_password: str = ""

    def __repr__(self) -> str:  # never show the password
        return (f"ServerProperties(port={self.port}, rcon_enabled={self.rcon_enabled}, "
                f"rcon_port={self.rcon_port})")


def parse_properties(text: str) -> dict[str, str]:
    """A Java ``.properties`` file, as Java reads it (``javaproperties``): ``key=value``,
    ``key: value`` or ``key value`` lines, ``#``/``!`` comments, backslash escapes
    (``rcon.password=p\\:ss`` is ``p:ss``), ``\\uXXXX``, continued lines.

    Raises:
        ValueError: a malformed ``\\u`` escape.
    """
    import javaproperties

    return dict(javaproperties.loads(text))


def load_properties(path: Path) -> ServerProperties:
    """``server.properties`` (defaults when absent).

    Raises:
        ConfigError: a port that is not a number in 1..65535.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ServerProperties()
    try:
        # Minecraft writes UTF-8 (1.18+); Java's own Properties.store writes ISO-8859-1.
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("iso-8859-1")
    try:
        values = parse_properties(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not a valid properties file: {exc}") from None

    def port(key: str, default: int) -> int:
        raw = values.get(key, "") or str(default)
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ConfigError(f"{path}: {key}={raw!r} is not a port number")
        return int(raw)

    return ServerProperties(
        port=port("server-port", DEFAULT_GAME_PORT),
        rcon_enabled=values.get("enable-rcon", "false").lower() == "true",
        rcon_port=port("rcon.port", 25575),
        rcon_password=values.get("rcon.password", ""),
    )
