"""phs serve, phs session create|list|invite|revoke|reset-lease|retention|gc."""

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
    p.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                   help="change a limit: quota_bytes=4GiB, tree.max_entries=500000, "
                        "gc_grace=86400, ... (docs/operations.md)")
    p.add_argument("--db", default="lmdb:", metavar="URL",
                   help="where sessions, tokens, leases and heads live: lmdb: (the data "
                        "folder, the default) or postgresql://USER@HOST/DB, shared by several "
                        "coordinators (the scale extra; objects stay in --data)")
    p.add_argument("--migrate", action="store_true",
                   help="apply the database's schema migrations first (--db postgresql://...)")
    p.add_argument("--objects", default=None, metavar="s3://BUCKET/PREFIX",
                   help="keep the sessions' objects in S3-compatible storage (endpoint and "
                        "credentials from the environment: AWS_ENDPOINT_URL, "
                        "AWS_ACCESS_KEY_ID, ...; needs peerhost[server,scale]); default: the data "
                        "folder")
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
    _register_reset_lease(sub, common)
    _register_storage(sub, common)


def _register_reset_lease(sub: Subparsers, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("reset-lease", parents=common,
                       help="end the lease whoever holds it and empty the standby queue "
                            "(owner token)")
    p.add_argument("session")
    p.add_argument("--keep-lease", action="store_true", help="only empty the standby queue")
    p.add_argument("--keep-standby", action="store_true",
                   help="only end the lease (the first standby gets its window)")
    _server_options(p, "the session owner's")
    p.set_defaults(func=run_reset_lease)


def _register_storage(sub: Subparsers, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("retention", parents=common,
                       help="show or set what the coordinator keeps of a session's history "
                            "(setting it: owner token)")
    p.add_argument("session")
    rules = [("last", "the N newest snapshots"),
             ("hourly", "the newest of each of the last N hours with snapshots"),
             ("daily", "... of the last N days"), ("weekly", "... of the last N ISO weeks")]
    for rule, what in rules:
        p.add_argument(f"--keep-{rule}", type=_positive, metavar="N", help=f"keep {what}")
    p.add_argument("--keep-all", action="store_true", help="drop the policy: keep everything")
    _server_options(p, "a player's (the owner's to set it)")
    p.set_defaults(func=run_retention)
    p = sub.add_parser("gc", parents=common,
                       help="delete what the session no longer needs, now (owner token)")
    p.add_argument("session")
    _server_options(p, "the session owner's")
    p.set_defaults(func=run_gc)
    p = sub.add_parser("settings", parents=common,
                       help="show or set who may roll the session back (setting it: owner "
                            "token)")
    p.add_argument("session")
    p.add_argument("--rollback", choices=("owner", "lease"), default=None,
                   help="owner: only the owner (the default); lease: also the member holding "
                        "the lease")
    _server_options(p, "a player's (the owner's to set it)")
    p.set_defaults(func=run_settings)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number of 1 or more")
    return int(value)


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
    server = import_extra("peerhost_server", command="phs serve", extra="server")
    from peerhost_server.limits import override_limits

    Limits, serve = server.Limits, server.serve

    try:
        limits = override_limits(Limits(), args.limit)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    data: Path = args.data if args.data is not None else default_data_dir()
    host, port = args.bind
    if not _is_loopback(host):
        err.line(f"warning: serving plain HTTP on {host}; tokens cross the network in clear "
                 "unless a TLS reverse proxy fronts it (docs/operations.md)")
    if args.db != "lmdb:" and not args.db.startswith(("postgresql://", "postgres://")):
        raise UsageError(f"--db {args.db!r}: expected lmdb: or postgresql://USER@HOST/DB")
    if args.db != "lmdb:":
        import_extra("psycopg_pool", command="phs serve --db postgresql://...", extra="scale")
    if args.objects is not None:
        import_extra("boto3", command="phs serve --objects", extra="scale")
        from peerhost_server.backends.s3 import parse_s3_url

        try:
            parse_s3_url(args.objects)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    serve(data, host, port, limits, db=args.db, migrate=args.migrate, objects=args.objects)
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


def run_reset_lease(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import connect

    url, token = _client_args(args)
    with connect(url, args.session, token) as client:
        answer = client.reset_lease(lease=not args.keep_lease, standby=not args.keep_standby)
    if args.json:
        emit_json({"session": args.session, **answer})
        return 0
    released = answer["released"]
    out.print(f"{args.session}: " + (f"ended {released}'s lease" if released else "no lease ended")
              + f"; dropped {len(answer['dropped'])} standby entries", markup=False)
    return 0


_RULES = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly")


def run_retention(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import connect

    url, token = _client_args(args)
    rules = {name: getattr(args, name) for name in _RULES}
    with connect(url, args.session, token) as client:
        if args.keep_all or any(v is not None for v in rules.values()):
            answer = client.set_retention(**({} if args.keep_all else rules))
        else:
            answer = client.retention()
    if args.json:
        emit_json({"session": args.session, **answer})
        return 0
    policy = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in answer["policy"].items()
                       if v is not None) or "keep everything"
    out.print(f"{args.session}: {policy}; stores {answer['usage']:,} of {answer['quota']:,} "
              f"bytes; history cut at {len(answer['shallow'])} snapshots", markup=False)
    return 0


def run_gc(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import connect

    url, token = _client_args(args)
    with connect(url, args.session, token) as client:
        report = client.gc()
    if args.json:
        emit_json({"session": args.session, **report})
        return 0
    out.print(f"{args.session}: kept {report['kept_snapshots']} snapshots, dropped "
              f"{report['dropped_snapshots']}; deleted {report['deleted_objects']:,} objects "
              f"({report['freed_bytes']:,} bytes); stores {report['usage']:,} bytes",
              markup=False)
    return 0


def run_settings(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import connect

    url, token = _client_args(args)
    with connect(url, args.session, token) as client:
        if args.rollback is not None:
            answer = client.set_settings(rollback=args.rollback)
        else:
            answer = client.settings()
    if args.json:
        emit_json(answer)
        return 0
    who = "its owner" if answer["rollback"] == "owner" else "its owner and the lease holder"
    out.print(f"{args.session}: rollback by {who}", markup=False)
    return 0
