"""The ``phs`` command: parse arguments, run a command, turn errors into exit codes.

Exit codes (also in ``phs --help``):

===  ==========================================================================================
0    success
1    an error (the message says what and where)
2    bad usage (unknown command, bad option, no token given, an --area or --player that
     cannot be read)
3    not found: no store here, unknown snapshot or prefix, no such remote, session or member
4    damage: verify found missing or corrupt objects, a restore needs objects that are (phs
     repair heals them), the store's file itself is damaged (restore it from a backup), or
     an --area covers a damaged region file (kept whole, it cannot take chunks one by one)
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
import atexit
import contextlib
import importlib
import os
import platform
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from peerhost_store.errors import NotFound, PeerhostError

from .common import Parents, UsageError
from .output import err

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_VERIFY, EXIT_BUSY, EXIT_UNSAFE = 0, 1, 2, 3, 4, 5, 6
EXIT_UNAUTHORIZED, EXIT_UNREACHABLE = 7, 8
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141

EPILOG = """exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 damaged objects (verify, repair),
5 busy or conflict (world in use, lease held or lost, head moved, diverged),
6 unsafe path or tree refused, 7 token refused, 8 coordinator unreachable, 130 interrupted"""

# Errors by "module:Class". The command modules import the library lazily (phs --help and
# phs status start in well under 0.3 s), so the error classes are looked up in sys.modules:
# a module that was never imported cannot have raised anything.
#: Someone else got there first: the same code as a busy world.
_CONFLICTS = (
    "peerhost_store.lock:Locked", "peerhost_store.store:RefConflict",
    "peerhost_store.worldlock:WorldInUse",
    "peerhost_store.sync.client:LeaseHeld", "peerhost_store.sync.client:LeaseLost",
    "peerhost_store.sync.client:HeadMoved", "peerhost_store.sync.transfer:Diverged",
    "peerhost_store.sync.leasing:HeldElsewhere", "peerhost_cli.play.host:HostingEnded",
    "peerhost_store.pending:RestorePending", "peerhost_store.maintenance:GcBusy",
)
_USAGE = ("peerhost_store.sync.remotes:NoToken", "peerhost_store.sync.remotes:BadRemote",
          "peerhost_store.area:AreaError")
#: Damaged objects or a damaged store file: what verify finds (exit 4).
_DAMAGED = ("peerhost_store.errors:DamagedObjects", "peerhost_store.errors:StoreDamaged",
            "peerhost_store.area:GraftRefused")
#: A path or tree restore refuses (exit 6).
_UNSAFE = ("peerhost_store.worldfs:UnsafePath", "peerhost_store.bounds:TreeRefused")


#: The command modules, in the order ``phs --help`` lists their commands, each with the
#: commands it registers (tests/test_cli_start.py checks this against what they register).
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "cmd_history": ("init", "snapshot", "log"),
    "cmd_diff": ("diff",),
    "cmd_restore": ("checkout", "restore", "rollback"),
    "cmd_maintenance": ("verify", "gc", "repair"),
    "cmd_serve": ("serve", "session"),
    "cmd_remote": ("remote", "clone"),
    "cmd_sync": ("push", "pull", "status", "sync"),
    "cmd_lock": ("lock",),
    "cmd_host": ("host", "join"),
    "cmd_demo": ("demo",),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or, when ``argv`` names one (its first word), of the
    commands of that one's module only: building all ~40 parsers and importing every
    command module costs a command that starts in a few tens of milliseconds about as much
    again."""
    parents = Parents.make()
    parser = argparse.ArgumentParser(
        prog="phs", description="PeerHost: snapshots and sync of Minecraft Java worlds",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_ShowVersion)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    first = argv[0] if argv else None
    names = [name for name, owned in COMMAND_MODULES.items() if first in owned] or list(
        COMMAND_MODULES)
    for name in names:
        importlib.import_module(f"peerhost_cli.{name}").register(commands, parents)
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
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        err.line("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # phs log | head: the reader is gone. Stop quietly, as git does (128 + SIGPIPE), and
        # keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except (PeerhostError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        action = getattr(args, f"{args.command}_command", None)  # `phs lock renew`, ...
        name = f"{args.command} {action}" if action else args.command
        err.line(f"phs {name}: error: {exc}")
        return _exit_code(exc)


def _raised(exc: BaseException, names: Sequence[str]) -> bool:
    """Whether ``exc`` is an instance of one of ``names`` ("module:Class")."""
    for name in names:
        module_name, _, cls = name.partition(":")
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, cls)):
            return True
    return False


def _exit_code(exc: BaseException) -> int:
    client = sys.modules.get("peerhost_store.sync.client")
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if _raised(exc, _DAMAGED):
        return EXIT_VERIFY
    if _raised(exc, _CONFLICTS):
        return EXIT_BUSY
    if _raised(exc, _UNSAFE):
        return EXIT_UNSAFE
    if client is not None:
        if isinstance(exc, client.Unauthorized):
            return EXIT_UNAUTHORIZED
        if isinstance(exc, client.CoordinatorUnavailable):
            return EXIT_UNREACHABLE
        if isinstance(exc, client.CoordinatorError) and exc.status == 404:
            return EXIT_NOT_FOUND  # no such session, member or snapshot on the coordinator
    if isinstance(exc, UsageError) or _raised(exc, _USAGE):
        return EXIT_USAGE
    return EXIT_ERROR


def run() -> NoReturn:
    """The ``phs`` command: :func:`main`, then exit without tearing the interpreter down.

    Freeing every module and object at exit cost a short command about a tenth of its time
    (farm-bench -n 20, against the same tree exiting normally: phs status 0.90, a no-op
    phs push 0.88, a no-change phs snapshot 0.87, phs log 0.87) and does nothing for its
    data: every file is written, closed and fsynced where it must be before ``main``
    returns. What an exit does that matters still happens: stdout and stderr are flushed
    and the atexit handlers run (executor threads joined, logging flushed, temporary
    folders removed). While a non-daemon thread still runs, or when ``main`` raises, the
    exit is the normal one.
    """
    code = main()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream
            stream.flush()
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    run()
