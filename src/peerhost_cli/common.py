"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import importlib
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from peerhost_store.errors import PeerhostError

if TYPE_CHECKING:  # imported where used: phs --help must not load the library
    from peerhost_store.area import Area, Selection
    from peerhost_store.ids import ObjectId
    from peerhost_store.objects import Snapshot
    from peerhost_store.repo import Repository
    from peerhost_store.sync.remotes import Remote

from .output import err

Subparsers = Any  # argparse's _SubParsersAction is private


@dataclass(frozen=True)
class Parents:
    """The option groups commands share, each a parent parser. Every command takes
    ``--debug``; ``-C`` only those that work on a world folder, ``--json`` only those that
    print a result as JSON (``phs host --json`` is a usage error, not a silent no-op)."""

    debug: argparse.ArgumentParser
    world: argparse.ArgumentParser
    json: argparse.ArgumentParser

    @classmethod
    def make(cls) -> Parents:
        debug = argparse.ArgumentParser(add_help=False)
        debug.add_argument("--debug", action="store_true", help="show tracebacks on errors")
        world = argparse.ArgumentParser(add_help=False)
        world.add_argument("-C", "--world", type=Path, default=Path("."),
                           help="world folder (default: the current folder)")
        as_json = argparse.ArgumentParser(add_help=False)
        as_json.add_argument("--json", action="store_true", help="print the result as JSON")
        return cls(debug, world, as_json)

    def __call__(self, *groups: str) -> list[argparse.ArgumentParser]:
        """``--debug`` and the named groups (``"world"``, ``"json"``)."""
        return [self.debug, *(getattr(self, g) for g in groups)]


class MissingExtra(PeerhostError):
    """A command needs an optional part of PeerHost that is not installed."""

    def __init__(self, command: str, extra: str, missing: str) -> None:
        self.extra = extra
        self.missing = missing
        super().__init__(f"{command} needs PeerHost's {extra} extra ({missing} is not installed): "
                         f"pip install 'peerhost[{extra}]'")


def import_extra(module: str, *, command: str, extra: str) -> ModuleType:
    """``import module``, which needs the optional dependencies of ``extra``.

    Raises:
        MissingExtra: one of them is not installed (the message says how to install it).
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] in ("peerhost_store", "peerhost_cli",
                                                               "peerhost_server"):
            raise  # our own module is missing: a broken install, not an extra
        raise MissingExtra(command, extra, exc.name or "a dependency") from exc


class UsageError(PeerhostError):
    """A command was given options that cannot work together, or is missing one (exit 2)."""


def open_repo(args: argparse.Namespace, *, readonly: bool | None = False) -> Repository:
    """The repository at ``-C``; ``--force`` (snapshot, restore, rollback) lets it work on a
    world Minecraft has open. ``readonly`` (log, verify, checkout; diff where it can write
    nothing): see :meth:`~peerhost_store.repo.Repository.open`."""
    from peerhost_store.repo import Repository

    repo = Repository.open(args.world, notify=notice, readonly=readonly)
    repo.check_world = not getattr(args, "force", False)
    return repo


def notice(text: str) -> None:
    """One line on stderr about what a command did beyond its own work."""
    err.line(f"phs: {text}")


def add_area(p: argparse.ArgumentParser, *, player: bool = False) -> None:
    """``--area X1,Z1:X2,Z2`` and ``--dimension`` (and with ``player``, ``--player``)."""
    p.add_argument("--area", metavar="X1,Z1:X2,Z2",
                   help="only the chunks this box of block coordinates overlaps (their "
                        "blocks, entities and points of interest); write --area=-40,100:25,180 "
                        "when the box starts with a minus")
    p.add_argument("--dimension", default=None, metavar="DIM",
                   help="with --area: overworld (default), nether, end or NAMESPACE:NAME")
    if player:
        p.add_argument("--player", metavar="NAME|UUID",
                       help="only this player's files (playerdata, stats, advancements); a "
                            "name is looked up in the server's usercache.json")


def area_of(args: argparse.Namespace) -> Area | None:
    """The ``--area`` (in ``--dimension``) asked for, if any."""
    from peerhost_store.area import Area

    if args.area is None:
        if args.dimension is not None:
            raise UsageError("--dimension needs --area")
        return None
    return Area.parse(args.area, args.dimension or "overworld")


def selection_of(args: argparse.Namespace, repo: Repository) -> Selection | None:
    """``--area`` or ``--player`` (not both), if either."""
    area = area_of(args)
    player = getattr(args, "player", None)
    if area is not None and player is not None:
        raise UsageError("give --area or --player, not both")
    return area if player is None else repo.find_player(player)


def add_force(p: argparse.ArgumentParser) -> None:
    """``--force``: go ahead although Minecraft has the world open (session.lock is held)."""
    p.add_argument("--force", action="store_true",
                   help="go ahead although Minecraft has the world open (its session.lock is "
                        "held): the result may miss what the game has not saved yet")


def short(oid: ObjectId | None) -> str:
    return oid.hex()[:12] if oid is not None else "-"


def when(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def snapshot_json(oid: ObjectId, snap: Snapshot) -> dict[str, Any]:
    return {
        "id": oid.hex(),
        "root": snap.root.hex(),
        "parents": [p.hex() for p in snap.parents],
        "time": snap.time,
        "author": snap.author,
        "host": snap.host,
        "message": snap.message,
        "summary": snap.summary,
    }


def ago(seconds: float, now: float | None = None) -> str:
    """``40 s ago``, ``5 min ago``, ``3 h ago``: how long before ``now`` (default: the wall
    clock) the time ``seconds`` was."""
    delta = max(0, int((time.time() if now is None else now) - seconds))
    if delta < 120:
        return f"{delta} s ago"
    if delta < 7200:
        return f"{delta // 60} min ago"
    return f"{delta // 3600} h ago"


def fencing_of(args: argparse.Namespace, base: Path, remote: Remote) -> int | None:
    """``--fencing``, else the lease ``phs lock acquire`` remembered in the world's ``base``."""
    from peerhost_store.sync.leasing import remembered_fencing

    if args.fencing is not None:
        return int(args.fencing)
    return remembered_fencing(base, remote)


def token_from(args: argparse.Namespace) -> str:
    """``--token``, else ``$PHS_TOKEN``. Raises UsageError without either."""
    token = args.token or os.environ.get("PHS_TOKEN")
    if not token:
        raise UsageError("a token is needed: --token or the PHS_TOKEN environment variable")
    return str(token)
