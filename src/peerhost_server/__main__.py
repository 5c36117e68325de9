"""``python -m peerhost_server --data DIR [--host H] [--port P] [--limit NAME=VALUE]...
[--db URL [--migrate]] [--objects s3://BUCKET/PREFIX]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .app import serve
from .limits import Limits, override_limits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m peerhost_server",
                                     description="Run a PeerHost coordinator.")
    parser.add_argument("--data", type=Path, required=True, help="the coordinator's data folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="port (default: %(default)s)")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help="change a limit (quota_bytes=4GiB, tree.max_entries=500000, ...)")
    parser.add_argument("--db", default="lmdb:", metavar="URL",
                        help="where the coordination state lives: lmdb: (the data folder, the "
                             "default) or postgresql://... (shared by several coordinators)")
    parser.add_argument("--migrate", action="store_true",
                        help="apply the database's schema migrations before serving")
    parser.add_argument("--objects", default=None, metavar="s3://BUCKET/PREFIX",
                        help="keep the sessions' objects in S3-compatible storage")
    args = parser.parse_args(argv)
    try:
        limits = override_limits(Limits(), args.limit)
    except ValueError as exc:
        parser.error(str(exc))
    serve(args.data, args.host, args.port, limits, db=args.db, migrate=args.migrate,
          objects=args.objects)


if __name__ == "__main__":
    main()
