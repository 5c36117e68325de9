"""phs remote add|list|remove|set-token|set-url, phs clone; where remotes and leases are kept.

A world's remotes live in ``WORLD/.peerhost/remotes.json`` (name, URL, session, and the id of
its token) and the leases taken with ``phs lock acquire`` in ``WORLD/.peerhost/lease.json``
(fencing token). Both are JSON files next to the LMDB store, never in it: the store is what
peers exchange. Tokens are kept out of the world folder altogether, in the user's config
folder (:mod:`.credentials`): people zip and share worlds. A ``remotes.json`` written by an
older phs, with tokens in it, is rewritten without them the first time it is read.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from peerhost_store.errors import NotFound, PeerhostError
from peerhost_store.repo import Repository
from peerhost_store.sync.client import CoordinatorClient
from peerhost_store.sync.transfer import Progress, PullReport, pull
from peerhost_store.worldfs import STORE_DIR

from .common import Subparsers, open_repo
from .credentials import Credential, Credentials, config_dir, read_json_file, write_private
from .output import emit_json, out, progress_bar, report

REMOTES_FILE = "remotes.json"
LEASE_FILE = "lease.json"
DEFAULT_REMOTE = "origin"
#: Seconds one HTTP request may take; an upload batch is 4-60 MiB, so slow links need room.
HTTP_TIMEOUT = 120.0


class UsageError(PeerhostError):
    """A command was given options that cannot work together, or is missing one."""


class RemoteExists(PeerhostError):
    """``phs remote add`` with a name already in use."""


class NoRemote(NotFound):
    """No remote of that name (or no remote at all) in this world."""


@dataclass(frozen=True)
class Remote:
    """A coordinator session this world syncs with.

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
        return {"name": self.name, "url": self.url, "session": self.session}


class NoToken(UsageError):
    """The remote has no token on this machine; the message says how to give it one."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        super().__init__(
            f"remote {remote.name!r} (session {remote.session} at {remote.url}) has no token on "
            f"this machine (tokens are kept in {config_dir()}, not in the world folder): give it "
            f"one with phs remote set-token {remote.name}, the token in PHS_TOKEN or --token")


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    remote = commands.add_parser("remote", help="the coordinator sessions this world syncs with")
    sub = remote.add_subparsers(dest="remote_command", metavar="ACTION", required=True)
    p = sub.add_parser("add", parents=[common],
                       help="remember a session (its token goes to your config folder, 0600)")
    p.add_argument("name", help="a short name, e.g. origin")
    p.add_argument("url", help="the coordinator, e.g. https://mc.example.org")
    add_session_options(p)
    p.set_defaults(func=run_remote_add)
    p = sub.add_parser("list", parents=[common], help="list remotes (never shows tokens)")
    p.set_defaults(func=run_remote_list)
    p = sub.add_parser("remove", parents=[common], help="forget a remote, its token and lease")
    p.add_argument("name")
    p.set_defaults(func=run_remote_remove)
    p = sub.add_parser("set-token", parents=[common],
                       help="give a remote its token (a world copied from another machine)")
    p.add_argument("name")
    p.add_argument("--token", default=None,
                   help="the token (default: $PHS_TOKEN; prefer the variable, a command line "
                        "is visible to other local users)")
    p.set_defaults(func=run_remote_set_token)
    p = sub.add_parser("set-url", parents=[common],
                       help="point a remote at another URL of its coordinator (the token goes along)")
    p.add_argument("name")
    p.add_argument("url")
    p.set_defaults(func=run_remote_set_url)

    p = commands.add_parser("clone", parents=[common],
                            help="create a world folder from a session: init, add origin, pull")
    p.add_argument("url", help="the coordinator URL")
    add_session_options(p)
    p.add_argument("folder", type=Path, help="a missing or empty folder")
    p.set_defaults(func=run_clone)


def add_session_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", required=True, help="the session name")
    p.add_argument("--token", default=None,
                   help="member or owner token (default: $PHS_TOKEN; prefer the variable, "
                        "a command line is visible to other local users)")


# -- files ----------------------------------------------------------------------------------


def meta_dir(repo: Repository) -> Path:
    """``WORLD/.peerhost``: where remotes.json and lease.json live."""
    return repo.world / STORE_DIR


def store_dir(args: argparse.Namespace) -> Path:
    """``WORLD/.peerhost`` of the world at ``-C`` (or its nearest parent that has one)."""
    with open_repo(args) as repo:
        return meta_dir(repo)


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


def save_remotes(base: Path, remotes: dict[str, Remote]) -> None:
    """Write ``remotes.json``: names, URLs, sessions and credential ids, never a token."""
    entries: dict[str, dict[str, str]] = {}
    for r in remotes.values():
        entries[r.name] = {"url": r.url, "session": r.session}
        if r.credential is not None:
            entries[r.name]["credential"] = r.credential
    write_private(base / REMOTES_FILE, {"version": 2, "remotes": entries})


def pick_remote(base: Path, name: str | None) -> Remote:
    """The named remote, or ``origin``, or the only one there is."""
    remotes = load_remotes(base)
    if name is not None:
        return _named(remotes, name)
    if DEFAULT_REMOTE in remotes:
        return remotes[DEFAULT_REMOTE]
    if len(remotes) == 1:
        return next(iter(remotes.values()))
    if not remotes:
        raise NoRemote("this world has no remote (phs remote add NAME URL --session S)")
    raise NoRemote(f"several remotes and none is {DEFAULT_REMOTE!r}: name one")


def _named(remotes: dict[str, Remote], name: str) -> Remote:
    if name not in remotes:
        raise NoRemote(f"no remote {name!r} (see phs remote list)")
    return remotes[name]


def _leases(base: Path) -> dict[str, Any]:
    leases = read_json_file(base / LEASE_FILE).get("leases")
    return leases if isinstance(leases, dict) else {}


def load_lease(base: Path, remote: Remote) -> dict[str, Any] | None:
    """The lease remembered for ``remote`` by ``phs lock acquire``, if it is for this session."""
    entry = _leases(base).get(remote.name)
    if not isinstance(entry, dict) or not isinstance(entry.get("fencing"), int):
        return None
    if entry.get("url") != remote.url or entry.get("session") != remote.session:
        return None  # the remote was re-pointed since: that token means nothing there
    return entry


def save_lease(base: Path, remote: Remote, entry: dict[str, Any] | None) -> None:
    leases = _leases(base)
    if entry is None:
        if leases.pop(remote.name, None) is None:
            return
    else:
        leases[remote.name] = {**entry, "url": remote.url, "session": remote.session}
    write_private(base / LEASE_FILE, {"version": 1, "leases": leases})


# -- talking to a coordinator --------------------------------------------------------------


def check_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UsageError(f"{url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"{url!r}: give an http:// or https:// URL of the coordinator")
    return url.rstrip("/")


def token_from(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get("PHS_TOKEN")
    if not token:
        raise UsageError("a token is needed: --token or the PHS_TOKEN environment variable")
    return str(token)


@contextlib.contextmanager
def connect(url: str, session: str, token: str) -> Iterator[CoordinatorClient]:
    with httpx.Client(base_url=check_url(url), timeout=HTTP_TIMEOUT) as http:
        yield CoordinatorClient(http, session, token)


def connect_remote(remote: Remote) -> contextlib.AbstractContextManager[CoordinatorClient]:
    """A client of ``remote``'s session. Raises NoToken when this machine has no token for it."""
    if remote.token is None:
        raise NoToken(remote)
    return connect(remote.url, remote.session, remote.token)


def holder_name() -> str:
    """``user@host``: how the lease names this machine unless ``--holder`` says otherwise."""
    try:
        user = os.environ.get("PHS_AUTHOR") or getpass.getuser()  # as snapshots name authors
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:128]


def wire_json(client: CoordinatorClient) -> dict[str, int]:
    s = client.stats
    return {"requests": s.requests, "bytes_sent": s.sent, "bytes_received": s.received,
            "bytes_total": s.sent + s.received}


# -- commands -------------------------------------------------------------------------------


def run_remote_add(args: argparse.Namespace) -> int:
    base = store_dir(args)
    remotes = load_remotes(base)
    if args.name in remotes:
        raise RemoteExists(f"remote {args.name!r} exists; phs remote remove {args.name} first")
    remote = Remote(args.name, check_url(args.url), args.session)
    remotes[remote.name] = remote = remember_token(base, remote, token_from(args))
    save_remotes(base, remotes)
    report(args.json, remote.public(), f"added remote {remote.name}: session {remote.session} "
           f"at {remote.url} (its token is kept in {config_dir()})")
    return 0


def run_remote_list(args: argparse.Namespace) -> int:
    remotes = load_remotes(store_dir(args))
    if args.json:
        emit_json([r.public() for r in remotes.values()])
        return 0
    table = Table("remote", "url", "session")
    for r in remotes.values():
        table.add_row(r.name, r.url, r.session)
    out.print(table if remotes else "no remotes (phs remote add NAME URL --session S)")
    return 0


def run_remote_remove(args: argparse.Namespace) -> int:
    base = store_dir(args)
    remotes = load_remotes(base)
    remote = remotes.pop(args.name, None)
    if remote is None:
        raise NoRemote(f"no remote {args.name!r}")
    save_remotes(base, remotes)
    forget_token(base, remote)
    save_lease(base, remote, None)
    report(args.json, {"removed": args.name}, f"removed remote {args.name}")
    return 0


def _update_remote(args: argparse.Namespace, change: Callable[[Path, Remote], Remote]) -> Remote:
    """Apply ``change`` to the remote ``args.name`` of the world at ``-C`` and save it."""
    base = store_dir(args)
    remotes = load_remotes(base)
    remote = remotes[args.name] = change(base, _named(remotes, args.name))
    save_remotes(base, remotes)
    return remote


def run_remote_set_token(args: argparse.Namespace) -> int:
    remote = _update_remote(args, lambda base, r: remember_token(base, r, token_from(args)))
    report(args.json, {**remote.public(), "token_stored": True},
           f"remote {remote.name}: token stored in {config_dir()}")
    return 0


def run_remote_set_url(args: argparse.Namespace) -> int:
    def repoint(base: Path, remote: Remote) -> Remote:
        remote = replace(remote, url=check_url(args.url))
        # Stored again for the new URL: a token is sent only where it was stored for.
        return remote if remote.token is None else remember_token(base, remote, remote.token)

    remote = _update_remote(args, repoint)
    report(args.json, remote.public(),
           f"remote {remote.name}: session {remote.session} at {remote.url}")
    return 0


def clone(folder: Path, remote: Remote, progress: Progress | None = None,
          credentials: Credentials | None = None) -> tuple[PullReport, dict[str, int]]:
    """Init ``folder`` (missing or empty), remember ``remote`` (its token in ``credentials``),
    pull it.

    Returns the pull report and the wire totals. On failure a folder this call created is
    removed again (a half-made world), and so is the token it stored.
    """
    created = not folder.exists()
    if not created and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{folder} is not an empty folder")
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
                report = pull(repo, client, progress=progress)
                return report, wire_json(client)
    except BaseException:
        credentials.remove(remote.credential)
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            shutil.rmtree(folder / STORE_DIR, ignore_errors=True)
        raise


def run_clone(args: argparse.Namespace) -> int:
    from .cmd_sync import print_pull, pull_json  # the pull report is printed like phs pull's

    folder: Path = args.world / args.folder
    remote = Remote(DEFAULT_REMOTE, check_url(args.url), args.session, token_from(args))
    with progress_bar("clone", enabled=not args.json, as_bytes=False) as bar:
        report, wire = clone(folder, remote, bar)
    if args.json:
        emit_json({"folder": str(folder.resolve()), **pull_json(remote, report, wire)})
    else:
        out.print(f"cloned session {remote.session} from {remote.url} into {folder}", markup=False)
        print_pull(remote, report, wire)
    return 0
