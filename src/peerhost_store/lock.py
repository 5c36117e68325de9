"""An exclusive, advisory, cross-process lock on a file (fcntl on POSIX, msvcrt on Windows).

Snapshot, restore, rollback and gc hold it, so gc never deletes the objects of a snapshot
that another process is still writing, and two snapshots never race on one world.

:class:`ByteLock` is the other kind: a lock on a file's first byte, of the sort LMDB holds
on its lock file (POSIX record locks, Windows ``LockFile``), for a store's compaction to
know that no other process has the store open.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from .errors import PeerhostError

__all__ = ["ByteLock", "FileLock", "Locked"]


class Locked(PeerhostError):
    """Another process holds the lock."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        self.holder = holder
        super().__init__(f"another phs process ({holder or 'unknown'}) is working on this world ({path})")


class FileLock:
    """``with FileLock(path):`` holds the lock or raises :class:`Locked` at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> Self:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            raise Locked(self.path, holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None

    def wait(self, seconds: float) -> FileLock:
        """Hold the lock, waiting up to ``seconds`` for its holder to let go (then
        :class:`Locked`)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                return self.__enter__()
            except Locked:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)


class ByteLock:
    """An exclusive lock on the first byte of an existing file, taken without waiting.

    LMDB holds a shared lock of this kind on its lock file (``lock.mdb``) for as long as a
    process has the environment open, so taking it tells that no other process has. On
    POSIX these are record locks (``fcntl``), which belong to the process, not to the file
    descriptor: closing *any* descriptor of the file drops all of the process's locks on it,
    LMDB's own included. Use it only while this process has the environment closed, and
    close the environment again before :meth:`release`.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def take(cls, path: Path) -> ByteLock | None:
        """The lock, or None when another process holds a lock on that byte."""
        fd = os.open(path, os.O_RDWR)
        try:
            _lock_byte(fd)
        except OSError:
            os.close(fd)
            return None
        return cls(fd)

    def release(self) -> None:
        _unlock_byte(self._fd)
        os.close(self._fd)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

    # LockFile on byte 0, which conflicts with the LockFileEx LMDB holds there.
    _lock_byte, _unlock_byte = _lock, _unlock

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

    # fcntl record locks (F_SETLK), LMDB's kind; flock locks do not conflict with them.
    def _lock_byte(fd: int) -> None:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)

    def _unlock_byte(fd: int) -> None:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
