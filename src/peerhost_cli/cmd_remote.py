"""phs remote add|list|remove|set-token|set-url, phs clone (see :mod:`peerhost_store.sync.remotes`
for where remotes, tokens and leases are kept)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .common import Parents, Subparsers, open_repo, token_from
from .output import emit_json, out, progress_bar, report

if TYPE_CHECKING:
    from peerhost_store.sync.client import CoordinatorClient
    from peerhost_store.sync.remotes import Remote


def register(commands: Subparsers, parents: Parents) -> None:
    common = parents("world", "json")
    remote = commands.add_parser("remote", help="the coordinator sessions this world syncs with")
    sub = remote.add_subparsers(dest="remote_command", metavar="ACTION", required=True)
    p = sub.add_parser("add", parents=common,
                       help="remember a session (its token goes to your config folder, 0600)")
    p.add_argument("name", help="a short name, e.g. origin")
    p.add_argument("url", help="the coordinator, e.g. https://mc.example.org")
    add_session_options(p)
    add_no_check(p)
    p.set_defaults(func=run_remote_add)
    p = sub.add_parser("list", parents=common, help="list remotes (never shows tokens)")
    p.set_defaults(func=run_remote_list)
    p = sub.add_parser("remove", parents=common, help="forget a remote, its token and lease")
    p.add_argument("name")
    p.set_defaults(func=run_remote_remove)
    p = sub.add_parser("set-token", parents=common,
                       help="give a remote its token (a world copied from another machine)")
    p.add_argument("name")
    p.add_argument("--token", default=None,
                   help="the token (default: $PHS_TOKEN; prefer the variable, a command line "
                        "is visible to other local users)")
    add_no_check(p)
    p.set_defaults(func=run_remote_set_token)
    p = sub.add_parser("set-url", parents=common,
                       help="point a remote at another URL of its coordinator (the token goes along)")
    p.add_argument("name")
    p.add_argument("url")
    add_no_check(p)
    p.set_defaults(func=run_remote_set_url)

    p = commands.add_parser("clone", parents=parents("json"),
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


def add_no_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-check", action="store_true",
                   help="save it without asking the coordinator whether URL, session and token "
                        "work (e.g. while it is down)")


def checked(args: argparse.Namespace, remote: Remote) -> Remote:
    """``remote``, once the coordinator accepted its URL, session and token (unless
    ``--no-check``)."""
    from peerhost_store.sync.remotes import check_remote

    if not args.no_check:
        check_remote(remote, f"phs remote {args.remote_command}")
    return remote


def store_dir(args: argparse.Namespace) -> Path:
    """``WORLD/.peerhost`` of the world at ``-C`` (or its nearest parent that has one)."""
    from peerhost_store.sync.remotes import meta_dir

    with open_repo(args) as repo:
        return meta_dir(repo)


# -- commands -------------------------------------------------------------------------------


def run_remote_add(args: argparse.Namespace) -> int:
    from peerhost_store.sync.credentials import config_dir
    from peerhost_store.sync.remotes import (
        Remote,
        RemoteExists,
        check_url,
        load_remotes,
        remember_token,
        save_remotes,
    )

    base = store_dir(args)
    remotes = load_remotes(base)
    if args.name in remotes:
        raise RemoteExists(f"remote {args.name!r} exists; phs remote remove {args.name} first")
    remote = checked(args, Remote(args.name, check_url(args.url), args.session, token_from(args)))
    remotes[remote.name] = remote = remember_token(base, remote, token_from(args))
    save_remotes(base, remotes)
    how = "not checked" if args.no_check else "the coordinator accepted its token"
    report(args.json, {**remote.public(), "checked": not args.no_check},
           f"added remote {remote.name}: session {remote.session} at {remote.url} ({how}; the "
           f"token is kept in {config_dir()})")
    return 0


def run_remote_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from peerhost_store.sync.remotes import load_remotes

    remotes = load_remotes(store_dir(args))
    if args.json:
        emit_json([r.public() for r in remotes.values()])
        return 0
    table = Table("remote", "url", "session")
    for r in remotes.values():
        table.add_row(r.name, r.url, r.session)
    if remotes:
        out.print(table)
    else:
        out.line("no remotes (phs remote add NAME URL --session S)")
    return 0


def run_remote_remove(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import (
        NoRemote,
        forget_token,
        load_remotes,
        save_lease,
        save_remotes,
    )

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
    from peerhost_store.sync.remotes import choose_remote, load_remotes, save_remotes

    base = store_dir(args)
    remotes = load_remotes(base)
    remote = remotes[args.name] = change(base, choose_remote(remotes, args.name))
    save_remotes(base, remotes)
    return remote


def run_remote_set_token(args: argparse.Namespace) -> int:
    from peerhost_store.sync.credentials import config_dir
    from peerhost_store.sync.remotes import remember_token

    def retoken(base: Path, remote: Remote) -> Remote:
        checked(args, replace(remote, token=token_from(args)))
        return remember_token(base, remote, token_from(args))

    remote = _update_remote(args, retoken)
    report(args.json, {**remote.public(), "token_stored": True},
           f"remote {remote.name}: token stored in {config_dir()}")
    return 0


def run_remote_set_url(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import check_url, remember_token

    def repoint(base: Path, remote: Remote) -> Remote:
        remote = replace(remote, url=check_url(args.url))
        if remote.token is not None:
            checked(args, remote)
        # Stored again for the new URL: a token is sent only where it was stored for.
        return remote if remote.token is None else remember_token(base, remote, remote.token)

    remote = _update_remote(args, repoint)
    report(args.json, remote.public(),
           f"remote {remote.name}: session {remote.session} at {remote.url}")
    return 0


def run_clone(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import DEFAULT_REMOTE, Remote, check_url, clone

    from .reports import print_pull, pull_json, wire_json

    folder: Path = args.folder
    remote = Remote(DEFAULT_REMOTE, check_url(args.url), args.session, token_from(args))
    clients: list[CoordinatorClient] = []
    with progress_bar("clone", enabled=not args.json, unit="objects",
                      moved=lambda: clients[0].stats.received if clients else 0) as bar:
        result, client = clone(folder, remote, bar, connected=clients.append)
    wire = wire_json(client)
    if args.json:
        emit_json({"folder": str(folder.resolve()), **pull_json(remote, result, wire)})
    else:
        out.line(f"cloned session {remote.session} from {remote.url} into {folder}")
        print_pull(remote, result, wire)
    return 0
