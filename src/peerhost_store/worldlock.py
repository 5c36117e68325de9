"""Whether Minecraft has a world open: the game and the server hold ``session.lock`` locked.

Minecraft (since 1.16) opens ``WORLD/session.lock`` and holds an exclusive lock on it with Java's
``FileChannel.tryLock`` while the world is loaded: a POSIX record lock (``fcntl``) on Linux and
macOS, ``LockFileEx`` on Windows. Another process that asks for a conflicting lock without
waiting is refused, which is the whole test: this module asks for a shared lock
(``fcntl.lockf``) or a one-byte lock (``msvcrt.locking``) and gives it back at once. Older
versions write a timestamp into the file and hold no lock, so a running 1.15 or older server
goes unseen.

A world that is open must not be snapshotted (the game writes regions while they are read, and
keeps unsaved chunks in memory) nor restored (the game would overwrite the restored files, or
crash on them). ``phs host`` runs the server itself and pauses its saving around each snapshot:
it is the way to snapshot a running server.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import PeerhostError

__all__ = ["SESSION_LOCK", "WorldInUse", "check_world_closed", "world_in_use"]

SESSION_LOCK = "session.lock"


class WorldInUse(PeerhostError):
    """Minecraft (a server or the game) has the world open: it holds ``session.lock``.

    Attributes:
        world: the world folder.
    """

    def __init__(self, world: Path) -> None:
        self.world = world
        super().__init__(
            f"{world} is open in Minecraft (a running server or game holds its {SESSION_LOCK}): "
            "stop it first; phs host snapshots a server it runs, safely (phs snapshot, restore "
            "and rollback take --force to go ahead anyway)")


def world_in_use(world: Path) -> bool:
    """Whether another process holds ``world/session.lock`` locked (the world is open in
    Minecraft). False when there is no such file or it cannot be opened."""
    try:
        fd = os.open(world / SESSION_LOCK, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return False
    try:
        return not _try_lock(fd)
    finally:
        os.close(fd)


def check_world_closed(world: Path) -> None:
    """Raise :class:`WorldInUse` when Minecraft has ``world`` open."""
    if world_in_use(world):
        raise WorldInUse(world)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        # The game locks the whole file (LockFileEx from offset 0): byte 0 is enough to ask.
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBRLCK, 1)
        except OSError:
            return False
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        # A shared lock conflicts with the game's exclusive one and needs only read access.
        # (Record locks belong to the process: this one holds none on the file, so closing
        # the descriptor afterwards releases nothing of ours.)
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return True
