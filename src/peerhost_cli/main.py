"""The ``phs`` command: parse arguments, run a command, turn errors into exit codes.

Exit codes (also in ``phs --help``):

===  ==========================================================================================
0    success
1    an error (the message says what and where)
2    bad usage (unknown command, bad option, no token given)
3    not found: no store here, unknown snapshot or prefix, no such remote, session or member
4    damage: verify found missing or corrupt objects, a restore needs objects that are (phs
     repair heals them), or the store's file itself is damaged (restore it from a backup)
5    busy or conflict: another phs works on this world, head moved, the session lease is held by
     someone else or yours was lost (fenced), local and session histories diverged, or hosting
     ended without its final push (the world is kept in a local snapshot)
6    refused: a path in a snapshot would leave the world folder, or its tree expands past the
     bounds a restore accepts (a DAG bomb)
7    the coordinator refused the token (missing, wrong, revoked, or lacking the role)
8    the coordinator is unreachable (no answer)
130  interrupted (Ctrl-C)
===  ==========================================================================================
"""

from __future__ import annotations

import argparse
import platform
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from peerhost_store.bounds import TreeRefused
from peerhost_store.errors import DamagedObjects, NotFound, PeerhostError, StoreDamaged
from peerhost_store.lock import Locked
from peerhost_store.maintenance import GcBusy
from peerhost_store.pending import RestorePending
from peerhost_store.store import RefConflict
from peerhost_store.sync.client import (
    CoordinatorError,
    CoordinatorUnavailable,
    HeadMoved,
    LeaseHeld,
    LeaseLost,
    Unauthorized,
)
from peerhost_store.sync.leasing import HeldElsewhere
from peerhost_store.sync.remotes import BadRemote, NoToken
from peerhost_store.sync.transfer import Diverged
from peerhost_store.worldfs import UnsafePath

from . import (
    cmd_diff,
    cmd_history,
    cmd_host,
    cmd_lock,
    cmd_maintenance,
    cmd_remote,
    cmd_restore,
    cmd_serve,
    cmd_sync,
)
from .common import UsageError
from .output import err
from .play.host import HostingEnded

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_VERIFY, EXIT_BUSY, EXIT_UNSAFE = 0, 1, 2, 3, 4, 5, 6
EXIT_UNAUTHORIZED, EXIT_UNREACHABLE = 7, 8
EXIT_INTERRUPTED = 130

EPILOG = """exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 damaged objects (verify, repair),
5 busy or conflict (world in use, lease held or lost, head moved, diverged),
6 unsafe path or tree refused, 7 token refused, 8 coordinator unreachable, 130 interrupted"""

#: Coordinator answers that mean "someone else got there first": the same code as a busy world.
_CONFLICTS = (Locked, RefConflict, LeaseHeld, LeaseLost, HeadMoved, Diverged, HostingEnded,
              HeldElsewhere, RestorePending, GcBusy)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-C", "--world", type=Path, default=Path("."),
                        help="world folder (default: the current folder)")
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser = argparse.ArgumentParser(
        prog="phs", description="PeerHost: snapshots and sync of Minecraft Java worlds",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_ShowVersion)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (cmd_history, cmd_diff, cmd_restore, cmd_maintenance, cmd_serve, cmd_remote,
                   cmd_sync, cmd_lock, cmd_host):
        module.register(commands, common)
    from . import cmd_demo

    cmd_demo.register(commands, common)
    return parser


class _ShowVersion(argparse.Action):
    """``phs --version``, read from the package metadata only when asked for (it costs ~35 ms)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version of PeerHost (and of Python) and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> NoReturn:
        from peerhost_store import distribution_version

        print(f"phs {distribution_version()} (Python {platform.python_version()}, {sys.platform})")
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED
    except (PeerhostError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        action = getattr(args, f"{args.command}_command", None)  # `phs lock renew`, ...
        name = f"{args.command} {action}" if action else args.command
        err.print(f"phs {name}: error: {exc}", markup=False, soft_wrap=True)
        return _exit_code(exc)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, (DamagedObjects, StoreDamaged)):
        return EXIT_VERIFY
    if isinstance(exc, _CONFLICTS):
        return EXIT_BUSY
    if isinstance(exc, (UnsafePath, TreeRefused)):
        return EXIT_UNSAFE
    if isinstance(exc, Unauthorized):
        return EXIT_UNAUTHORIZED
    if isinstance(exc, CoordinatorUnavailable):
        return EXIT_UNREACHABLE
    if isinstance(exc, CoordinatorError) and exc.status == 404:
        return EXIT_NOT_FOUND  # no such session, member or snapshot on the coordinator
    if isinstance(exc, (UsageError, NoToken, BadRemote)):
        return EXIT_USAGE
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
