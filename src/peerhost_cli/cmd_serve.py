"""phs serve, phs session create|list|invite|revoke."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from .common import Parents, Subparsers, UsageError, import_extra, when
from .output import emit_json, err, out

DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_URL = "http://127.0.0.1:8000"


def default_data_dir() -> Path:
    """The per-user coordinator folder (what platformdirs' user_data_dir would pick)."""
    home = Path.home()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        return (Path(local) if local else home / "AppData" / "Local") / "PeerHost" / "coordinator"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "PeerHost" / "coordinator"
    xdg = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share"
    return base / "peerhost" / "coordinator"


def parse_bind(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT, e.g. {DEFAULT_BIND}")
    return host, int(port)


def register(commands: Subparsers, parents: Parents) -> None:
    p = commands.add_parser("serve", parents=parents(), help="run a coordinator")
    p.add_argument("--data", type=Path, default=None,
                   help=f"its data folder (default: {default_data_dir()})")
    p.add_argument("--bind", type=parse_bind, default=parse_bind(DEFAULT_BIND), metavar="HOST:PORT",
                   help=f"address to listen on (default: {DEFAULT_BIND}; anything else than "
                        "loopback belongs behind a TLS reverse proxy)")
    p.set_defaults(func=run_serve)

    session = commands.add_parser("session", help="create sessions and invite members")
    sub = session.add_subparsers(dest="session_command", metavar="ACTION", required=True)
    common = parents("json")
    p = sub.add_parser("create", parents=common, help="create a session (admin token)")
    p.add_argument("name")
    _server_options(p, "admin")
    p.set_defaults(func=run_create)
    p = sub.add_parser("list", parents=common, help="list sessions (admin token)")
    _server_options(p, "admin")
    p.set_defaults(func=run_list)
    p = sub.add_parser("invite", parents=common, help="add a member; prints its token (owner token)")
    p.add_argument("session")
    p.add_argument("member")
    _server_options(p, "the session owner's")
    p.set_defaults(func=run_invite)
    p = sub.add_parser("revoke", parents=common, help="revoke a member's token (owner token)")
    p.add_argument("session")
    p.add_argument("member")
    _server_options(p, "the session owner's")
    p.set_defaults(func=run_revoke)


def _server_options(p: argparse.ArgumentParser, whose: str) -> None:
    p.add_argument("--url", default=None,
                   help=f"the coordinator (default: $PHS_URL, else {DEFAULT_URL})")
    p.add_argument("--token", default=None, help=f"{whose} token (default: $PHS_TOKEN)")


def _client_args(args: argparse.Namespace) -> tuple[str, str]:
    from peerhost_store.sync.remotes import check_url

    url = check_url(args.url or os.environ.get("PHS_URL") or DEFAULT_URL)
    token = args.token or os.environ.get("PHS_TOKEN")
    if not token:
        raise UsageError("a token is needed: --token or the PHS_TOKEN environment variable")
    return url, str(token)


# -- serve ----------------------------------------------------------------------------------


def run_serve(args: argparse.Namespace) -> int:
    serve = import_extra("peerhost_server.app", command="phs serve", extra="server").serve

    data: Path = args.data if args.data is not None else default_data_dir()
    host, port = args.bind
    if not _is_loopback(host):
        err.line(f"warning: serving plain HTTP on {host}; tokens cross the network in clear "
                 "unless a TLS reverse proxy fronts it (docs/operations.md)")
    serve(data, host, port)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- sessions -------------------------------------------------------------------------------


def run_create(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import connect

    url, token = _client_args(args)
    with connect(url, "", token) as client:
        owner = client.create_session(args.name)
    if args.json:
        emit_json({"session": args.name, "url": url, "token": owner})
    else:
        out.line(f"created session {args.name}; owner token (shown once): {owner}")
        out.line(f"invite members with: phs session invite {args.name} NAME --token <owner token>")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from peerhost_store.sync.remotes import connect

    url, token = _client_args(args)
    with connect(url, "", token) as client:
        sessions = client.list_sessions()
    if args.json:
        emit_json(sessions)
        return 0
    table = Table("session", "created", "members")
    for s in sessions:
        table.add_row(s["name"], when(int(s["created"])), ", ".join(s["members"]) or "-")
    if sessions:
        out.print(table)
    else:
        out.line("no sessions (phs session create NAME)")
    return 0


def run_invite(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import connect

    url, token = _client_args(args)
    with connect(url, args.session, token) as client:
        member = client.add_member(args.member)
    if args.json:
        emit_json({"session": args.session, "member": args.member, "url": url, "token": member})
    else:
        out.line(f"invited {args.member} to {args.session}; their token (shown once): {member}")
        out.line(f"they join with: phs clone {url} --session {args.session} WORLD_FOLDER "
                 "(token in $PHS_TOKEN)")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import connect

    url, token = _client_args(args)
    with connect(url, args.session, token) as client:
        client.remove_member(args.member)
    if args.json:
        emit_json({"session": args.session, "revoked": args.member})
    else:
        out.line(f"revoked {args.member}'s token in {args.session}")
    return 0
