"""phs remote add|list|remove, phs clone; where remotes and remembered leases are kept.

A world's remotes live in ``WORLD/.peerhost/remotes.json`` (URL, session, token) and the
leases taken with ``phs lock acquire`` in ``WORLD/.peerhost/lease.json`` (fencing token). Both
are JSON files next to the LMDB store, never in it: the store is what peers exchange, and a
token must not travel with it. They are written to a temporary file created with mode 0600,
then moved into place with ``os.replace``, so a reader sees the old or the new file, and
other local users cannot read the token (on POSIX; on Windows the mode is best effort).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
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
from .output import emit_json, out, progress_bar

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
    """A coordinator session this world syncs with. ``token`` is never printed."""

    name: str
    url: str
    session: str
    token: str

    def public(self) -> dict[str, str]:
        return {"name": self.name, "url": self.url, "session": self.session}


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    remote = commands.add_parser("remote", help="the coordinator sessions this world syncs with")
    sub = remote.add_subparsers(dest="remote_command", metavar="ACTION", required=True)
    p = sub.add_parser("add", parents=[common], help="remember a session (its token is stored 0600)")
    p.add_argument("name", help="a short name, e.g. origin")
    p.add_argument("url", help="the coordinator, e.g. https://mc.example.org")
    add_session_options(p)
    p.set_defaults(func=run_remote_add)
    p = sub.add_parser("list", parents=[common], help="list remotes (never shows tokens)")
    p.set_defaults(func=run_remote_list)
    p = sub.add_parser("remove", parents=[common], help="forget a remote and its lease")
    p.add_argument("name")
    p.set_defaults(func=run_remote_remove)

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


def read_json_file(path: Path) -> dict[str, Any]:
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
    # mkstemp creates the file with mode 0600 whatever the umask, so the token is never
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


def load_remotes(base: Path) -> dict[str, Remote]:
    raw = read_json_file(base / REMOTES_FILE).get("remotes", {})
    remotes = {}
    for name, r in raw.items() if isinstance(raw, dict) else ():
        try:
            remotes[name] = Remote(name, str(r["url"]), str(r["session"]), str(r["token"]))
        except (KeyError, TypeError):
            raise PeerhostError(f"{base / REMOTES_FILE}: remote {name!r} is malformed") from None
    return remotes


def save_remotes(base: Path, remotes: dict[str, Remote]) -> None:
    write_private(base / REMOTES_FILE, {"version": 1, "remotes": {
        r.name: {"url": r.url, "session": r.session, "token": r.token} for r in remotes.values()
    }})


def pick_remote(base: Path, name: str | None) -> Remote:
    """The named remote, or ``origin``, or the only one there is."""
    remotes = load_remotes(base)
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
    remote = Remote(args.name, check_url(args.url), args.session, token_from(args))
    remotes[remote.name] = remote
    save_remotes(base, remotes)
    if args.json:
        emit_json(remote.public())
    else:
        out.print(f"added remote {remote.name}: session {remote.session} at {remote.url}",
                  markup=False)
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
    save_lease(base, remote, None)
    if args.json:
        emit_json({"removed": args.name})
    else:
        out.print(f"removed remote {args.name}", markup=False)
    return 0


def clone(folder: Path, remote: Remote,
          progress: Progress | None = None) -> tuple[PullReport, dict[str, int]]:
    """Init ``folder`` (missing or empty), remember ``remote``, pull it.

    Returns the pull report and the wire totals. On failure a folder this call created is
    removed again (it would hold a token and a half-made world).
    """
    created = not folder.exists()
    if not created and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{folder} is not an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with Repository.init(folder) as repo:
            save_remotes(meta_dir(repo), {remote.name: remote})
            with connect_remote(remote) as client:
                report = pull(repo, client, progress=progress)
                return report, wire_json(client)
    except BaseException:
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
