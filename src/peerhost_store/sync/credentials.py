"""Where phs keeps tokens: the user's config folder, never the world folder.

People zip and share world folders, so a world's ``remotes.json`` names each remote's
coordinator and session and refers to its token only by an opaque id (``credential``). The
token is ``CONFIG/credentials/ID.json``, with the URL and session it was given for: it is
sent only there, so a ``remotes.json`` edited to point elsewhere does not get it. One file per
credential: two phs processes adding remotes to different worlds never race on one file.

``CONFIG`` is ``$PHS_CONFIG_DIR`` when set, else the user's config folder (platformdirs):

* Linux: ``~/.config/peerhost`` (``$XDG_CONFIG_HOME/peerhost``)
* macOS: ``~/Library/Application Support/peerhost``
* Windows: ``%LOCALAPPDATA%\\peerhost`` (``C:\\Users\\NAME\\AppData\\Local\\peerhost``), in the
  user profile, whose ACL lets in only the user, SYSTEM and Administrators; not the roaming
  profile, which domain networks copy to a server.

Files are written 0600 in a 0700 folder (POSIX; Windows ignores the modes, the profile's ACL
applies), through a temporary file and ``os.replace``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from ..errors import PeerhostError

__all__ = [
    "APP_NAME",
    "CONFIG_ENV",
    "Credential",
    "Credentials",
    "config_dir",
    "read_json_file",
    "write_private",
]

CONFIG_ENV = "PHS_CONFIG_DIR"
APP_NAME = "peerhost"
#: A credential id: it names a file, and comes from a world folder anyone may have crafted.
_KEY = re.compile(r"[0-9a-f]{32}")


def config_dir() -> Path:
    """``$PHS_CONFIG_DIR``, else the user's config folder for peerhost (not created)."""
    configured = os.environ.get(CONFIG_ENV)
    if configured:
        return Path(configured)
    return platformdirs.user_config_path(APP_NAME, appauthor=False, roaming=False)


def read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``{}`` when the file does not exist.

    Raises:
        PeerhostError: not JSON, or not an object (the message names the file).
    """
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise PeerhostError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
    if not isinstance(value, dict):
        raise PeerhostError(f"{path} does not hold a JSON object; fix or delete it")
    return value


def write_private(path: Path, value: dict[str, Any]) -> None:
    """Write JSON readable by the owner only, atomically (temp file + ``os.replace``)."""
    # mkstemp creates the file with mode 0600 whatever the umask, so a token is never
    # readable by others, not even for a moment; os.replace keeps that mode.
    fd, tmp = tempfile.mkstemp(prefix=".phs-tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class Credential:
    """A token and the session it opens (``url`` as the remote names it)."""

    url: str
    session: str
    token: str = field(repr=False)


class Credentials:
    """The tokens in ``root/credentials`` (``root``: :func:`config_dir` by default)."""

    def __init__(self, root: Path | None = None) -> None:
        self.folder = (config_dir() if root is None else root) / "credentials"

    @staticmethod
    def new_key() -> str:
        return secrets.token_hex(16)

    def _path(self, key: str) -> Path | None:
        return self.folder / f"{key}.json" if _KEY.fullmatch(key) else None

    def get(self, key: str | None) -> Credential | None:
        """The credential ``key`` names; None when this machine has none (or ``key`` is junk)."""
        path = None if key is None else self._path(key)
        if path is None:
            return None
        raw = read_json_file(path)
        try:
            return Credential(str(raw["url"]), str(raw["session"]), str(raw["token"]))
        except KeyError:
            return None

    def world_of(self, key: str) -> Path | None:
        """The world folder ``key`` was stored for; None when there is no such credential."""
        path = self._path(key)
        world = None if path is None else read_json_file(path).get("world")
        return Path(world) if isinstance(world, str) else None

    def put(self, key: str, credential: Credential, *, remote: str, world: Path) -> None:
        """Store ``credential`` as ``key`` (``remote`` and ``world`` only say whose it is)."""
        path = self._path(key)
        if path is None:
            raise ValueError(f"not a credential id: {key!r}")
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(path, {"version": 1, "url": credential.url, "session": credential.session,
                             "token": credential.token, "remote": remote, "world": str(world)})

    def remove(self, key: str | None) -> None:
        path = None if key is None else self._path(key)
        if path is not None:
            path.unlink(missing_ok=True)
