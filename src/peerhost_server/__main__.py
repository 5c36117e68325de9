"""``python -m peerhost_server --data DIR [--host H] [--port P]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .app import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m peerhost_server",
                                     description="Run a PeerHost coordinator.")
    parser.add_argument("--data", type=Path, required=True, help="the coordinator's data folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="port (default: %(default)s)")
    args = parser.parse_args(argv)
    serve(args.data, args.host, args.port)


if __name__ == "__main__":
    main()
