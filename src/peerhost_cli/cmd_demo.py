"""phs demo: a guided tour on a synthesized world, then two peers syncing it (:mod:`.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import Parents, Subparsers


def register(commands: Subparsers, parents: Parents) -> None:
    p = commands.add_parser("demo", parents=parents("json"),
                            help="a guided tour on a synthesized world, then two peers syncing it")
    p.add_argument("--regions", type=int, default=4, help="full regions to synthesize (default 4)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--source", type=Path, default=None, metavar="DIR",
                   help="run on a copy of this world instead of a synthesized one")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="work in DIR (must not exist) and keep it afterwards")
    p.add_argument("--local-only", action="store_true",
                   help="skip the coordinator part (two peers syncing through it)")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo as run

    return run(args)
