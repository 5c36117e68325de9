"""A world's remotes (the coordinator sessions it syncs with), their tokens, the leases it
remembers, and connecting to them.

A world's remotes live in ``WORLD/.peerhost/remotes.json`` (name, URL, session, and the id of
its token) and the leases taken with ``phs lock acquire`` in ``WORLD/.peerhost/lease.json``
(fencing token). Both are JSON files next to the LMDB store, never in it: the store is what
peers exchange. Tokens are kept out of the world folder altogether, in the user's config
folder (:mod:`.credentials`): people zip and share worlds. A ``remotes.json`` written by an
older phs, with tokens in it, is rewritten without them the first time it is read.

>>> remote = pick_remote(meta_dir(Path("saves/MyWorld")), None)  # doctest: +SKIP
>>> with connect_remote(remote) as client:                       # doctest: +SKIP
...     print(client.head())
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import NotFound, PeerhostError
from ..worldfs import STORE_DIR
from .client import (
    BULK_SECONDS,
    CoordinatorClient,
    CoordinatorUnavailable,
    Unauthorized,
    timeout_of,
)
from .credentials import Credential, Credentials, config_dir, read_json_file, write_private

if TYPE_CHECKING:  # the transfer machinery is imported by clone() only: phs status starts fast
    from ..repo import Repository
    from .reports import PullReport
    from .transfer import Progress

__all__ = [
    "DEFAULT_REMOTE",
    "LEASE_FILE",
    "REMOTES_FILE",
    "BadRemote",
    "NoRemote",
    "NoToken",
    "Remote",
    "RemoteExists",
    "check_remote",
    "check_url",
    "choose_remote",
    "clone",
    "connect",
    "connect_remote",
    "forget_token",
    "holder_name",
    "load_lease",
    "load_remotes",
    "meta_dir",
    "pick_remote",
    "remember_token",
    "save_lease",
    "save_remotes",
    "with_token",
]

REMOTES_FILE = "remotes.json"
LEASE_FILE = "lease.json"
DEFAULT_REMOTE = "origin"


class BadRemote(PeerhostError, ValueError):
    """A remote that cannot be used as given (not an http(s) URL, not an empty folder, ...)."""


class RemoteExists(PeerhostError):
    """A remote of that name exists already."""


class NoRemote(NotFound):
    """No remote of that name (or no remote at all) in this world."""


@dataclass(frozen=True)
class Remote:
    """A coordinator session a world syncs with.

    Attributes:
        token: never printed; None when this machine has none for it (a copied world).
        credential: the id of its token in the config folder (:mod:`.credentials`).
    """

    name: str
    url: str
    session: str
    token: str | None = field(default=None, repr=False)
    credential: str | None = None

    def public(self) -> dict[str, str]:
        """What may be shown: name, URL and session."""
        return {"name": self.name, "url": self.url, "session": self.session}


class NoToken(PeerhostError):
    """The remote has no token on this machine; the message says how to give it one."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        super().__init__(
            f"remote {remote.name!r} (session {remote.session} at {remote.url}) has no token on "
            f"this machine (tokens are kept in {config_dir()}, not in the world folder): give it "
            f"one with phs remote set-token {remote.name}, the token in PHS_TOKEN or --token")


# -- files ----------------------------------------------------------------------------------


def meta_dir(world: Repository | Path) -> Path:
    """``WORLD/.peerhost``: where remotes.json and lease.json live."""
    return (world if isinstance(world, Path) else world.world) / STORE_DIR


def load_remotes(base: Path, credentials: Credentials | None = None) -> dict[str, Remote]:
    """The remotes of the world whose ``.peerhost`` is ``base``, with their tokens when this
    machine has them; tokens still in ``remotes.json`` are moved to ``credentials`` first."""
    credentials = credentials or Credentials()
    raw = read_json_file(base / REMOTES_FILE).get("remotes", {})
    remotes: dict[str, Remote] = {}
    moved = False
    for name, r in raw.items() if isinstance(raw, dict) else ():
        try:
            key, token = r.get("credential"), r.get("token")
            remote = Remote(name, str(r["url"]), str(r["session"]), None,
                            key if isinstance(key, str) else None)
        except (KeyError, TypeError, AttributeError):
            raise PeerhostError(f"{base / REMOTES_FILE}: remote {name!r} is malformed") from None
        if isinstance(token, str) and token:
            # Written by an older phs. Stored first, then the file is rewritten: a crash in
            # between leaves the token in both places, and the next run moves it again.
            remote = remember_token(base, replace(remote, credential=None), token, credentials)
            moved = True
        remotes[name] = with_token(remote, credentials)
    if moved:
        save_remotes(base, remotes)
    return remotes


def with_token(remote: Remote, credentials: Credentials) -> Remote:
    """``remote`` with its stored token, if it was stored for this very URL and session (a
    token is sent only where it was given for, whatever a remotes.json says)."""
    stored = credentials.get(remote.credential)
    if stored is None or (stored.url, stored.session) != (remote.url, remote.session):
        return replace(remote, token=None)
    return replace(remote, token=stored.token)


def remember_token(base: Path, remote: Remote, token: str,
                   credentials: Credentials | None = None) -> Remote:
    """Store ``token`` for ``remote`` in the config folder; the remote with its credential id.

    The id is kept unless it was stored for another world folder: a copy of a world on the
    same machine gets a credential of its own rather than change the original's.
    """
    credentials = credentials or Credentials()
    world = base.parent.resolve()
    key = remote.credential
    if key is None or credentials.world_of(key) not in (None, world):
        key = Credentials.new_key()
    credentials.put(key, Credential(remote.url, remote.session, token),
                    remote=remote.name, world=world)
    return replace(remote, token=token, credential=key)


def forget_token(base: Path, remote: Remote, credentials: Credentials | None = None) -> None:
    """Delete ``remote``'s stored token, unless another world folder's copy refers to it."""
    credentials = credentials or Credentials()
    if remote.credential is not None and \
            credentials.world_of(remote.credential) in (None, base.parent.resolve()):
        credentials.remove(remote.credential)


def save_remotes(base: Path, remotes: Mapping[str, Remote]) -> None:
    """Write ``remotes.json``: names, URLs, sessions and credential ids, never a token."""
    entries: dict[str, dict[str, str]] = {}
    for r in remotes.values():
        entries[r.name] = {"url": r.url, "session": r.session}
        if r.credential is not None:
            entries[r.name]["credential"] = r.credential
    write_private(base / REMOTES_FILE, {"version": 2, "remotes": entries})


def pick_remote(base: Path, name: str | None, credentials: Credentials | None = None) -> Remote:
    """The remote called ``name`` of the world whose ``.peerhost`` is ``base``; without a name
    ``origin``, or the only one there is.

    Raises:
        NoRemote: there is no such remote, none at all, or several and none is ``origin``.
    """
    return choose_remote(load_remotes(base, credentials), name)


def choose_remote(remotes: Mapping[str, Remote], name: str | None) -> Remote:
    """:func:`pick_remote` among ``remotes``."""
    if name is not None:
        if name not in remotes:
            raise NoRemote(f"no remote {name!r} (see phs remote list)")
        return remotes[name]
    if DEFAULT_REMOTE in remotes:
        return remotes[DEFAULT_REMOTE]
    if len(remotes) == 1:
        return next(iter(remotes.values()))
    if not remotes:
        raise NoRemote("this world has no remote (phs remote add NAME URL --session S)")
    raise NoRemote(f"several remotes and none is {DEFAULT_REMOTE!r}: name one")


def _leases(base: Path) -> dict[str, Any]:
    leases = read_json_file(base / LEASE_FILE).get("leases")
    return leases if isinstance(leases, dict) else {}


def load_lease(base: Path, remote: Remote) -> dict[str, Any] | None:
    """The lease remembered for ``remote`` (by ``phs lock acquire``, a running host or a push
    in progress), if it is for this remote's URL and session."""
    entry = _leases(base).get(remote.name)
    if not isinstance(entry, dict) or not isinstance(entry.get("fencing"), int):
        return None
    if entry.get("url") != remote.url or entry.get("session") != remote.session:
        return None  # the remote was re-pointed since: that token means nothing there
    return entry


def save_lease(base: Path, remote: Remote, entry: dict[str, Any] | None) -> None:
    """Remember ``entry`` (``fencing``, ``holder``, ...) as ``remote``'s lease; None forgets it."""
    leases = _leases(base)
    if entry is None:
        if leases.pop(remote.name, None) is None:
            return
    else:
        leases[remote.name] = {**entry, "url": remote.url, "session": remote.session}
    write_private(base / LEASE_FILE, {"version": 1, "leases": leases})


# -- talking to a coordinator --------------------------------------------------------------


def check_url(url: str) -> str:
    """``url`` without a trailing slash. Raises BadRemote unless it is an http(s) URL."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise BadRemote(f"{url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BadRemote(f"{url!r}: give an http:// or https:// URL of the coordinator")
    return url.rstrip("/")


@contextlib.contextmanager
def connect(url: str, session: str, token: str) -> Iterator[CoordinatorClient]:
    """A client of ``session`` at ``url`` over a fresh ``httpx.Client``."""
    url = check_url(url)
    # An http:// coordinator has no TLS to verify: skip loading the CA bundle (~50 ms of the
    # 0.3 s phs status may take). The client follows no redirects, so it never leaves that URL.
    verify = not url.startswith("http://")
    # Each request sets its own timeout (CoordinatorClient: short for the lease, long for
    # object batches); this one is for anything else sent over the client.
    with httpx.Client(base_url=url, timeout=timeout_of(BULK_SECONDS), verify=verify) as http:
        yield CoordinatorClient(http, session, token)


def connect_remote(remote: Remote) -> contextlib.AbstractContextManager[CoordinatorClient]:
    """A client of ``remote``'s session. Raises NoToken when this machine has no token for it."""
    if remote.token is None:
        raise NoToken(remote)
    return connect(remote.url, remote.session, remote.token)


def check_remote(remote: Remote, command: str) -> None:
    """Ask the coordinator whether ``remote``'s URL, session and token work together (one
    ``GET head``), as ``phs remote add`` does before it saves a remote.

    Raises:
        CoordinatorUnavailable: nothing answers at the URL.
        Unauthorized: the token is not one of that coordinator's, or not of that session
            (:class:`~.client.Forbidden`).
        CoordinatorError: another error answer (404: no such session).
    """
    with connect_remote(remote) as client:
        try:
            client.head()
        except CoordinatorUnavailable as exc:
            raise CoordinatorUnavailable(
                exc.code, f"cannot reach the coordinator at {remote.url}: {exc.reason}; check "
                f"the URL and that the coordinator runs (or {command} --no-check to save it "
                "without asking)", 0, exc.details) from None
        except Unauthorized as exc:
            raise type(exc)(exc.code, f"{remote.url} refused this token for session "
                            f"{remote.session} ({exc.message}); check the token and the "
                            "session name", exc.status, exc.details) from None


def holder_name() -> str:
    """``user@host``: how the lease names this machine unless told otherwise."""
    try:
        user = os.environ.get("PHS_AUTHOR") or getpass.getuser()  # as snapshots name authors
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:128]


# -- clone ------------------------------------------------------------------------------------


def clone(folder: Path, remote: Remote, progress: Progress | None = None,
          credentials: Credentials | None = None, *,
          connected: Callable[[CoordinatorClient], None] | None = None,
          ) -> tuple[PullReport, CoordinatorClient]:
    """Init ``folder`` (missing or empty), remember ``remote`` (its token in ``credentials``),
    pull it. ``connected`` is told the client before the pull starts (to show its wire
    totals while it runs).

    Returns the pull report and the client it used (its ``stats`` are the wire totals). On
    failure a folder this call created is removed again (a half-made world), and so is the
    token it stored.

    Raises:
        BadRemote: ``folder`` is not empty.
        NoToken: ``remote`` has no token.
    """
    from ..repo import Repository
    from .transfer import pull

    created = not folder.exists()
    if not created and (not folder.is_dir() or any(folder.iterdir())):
        raise BadRemote(f"{folder} is not an empty folder")
    token = remote.token
    if token is None:
        raise NoToken(remote)
    folder.mkdir(parents=True, exist_ok=True)
    credentials = credentials or Credentials()
    remote = replace(remote, credential=None)
    try:
        with Repository.init(folder) as repo:
            remote = remember_token(meta_dir(repo), remote, token, credentials)
            save_remotes(meta_dir(repo), {remote.name: remote})
            with connect_remote(remote) as client:
                if connected is not None:
                    connected(client)
                return pull(repo, client, progress=progress), client
    except BaseException:
        credentials.remove(remote.credential)
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            shutil.rmtree(folder / STORE_DIR, ignore_errors=True)
        raise
