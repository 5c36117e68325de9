"""A minimal world folder for tests that need one."""

from __future__ import annotations

import errno
import gzip
import os
from pathlib import Path

import pytest


def make_world(path: Path) -> Path:
    (path / "region").mkdir(parents=True)
    (path / "playerdata").mkdir()
    (path / "level.dat").write_bytes(gzip.compress(b"\x0a\x00\x00\x00", mtime=0))
    (path / "session.lock").write_bytes("\u2603".encode())
    return path


def refuse_writes_to(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make restore's writes of files called ``name`` fail as an unwritable file would (the
    tests run as root in CI, where a chmod does not stop a write). ``monkeypatch.undo()``
    lifts it."""
    from peerhost_store import restore, worldfs

    real = worldfs.atomic_write  # what restore imported

    def write(path: Path, data: bytes, *, durable: bool = True) -> os.stat_result:
        if path.name == name:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, data, durable=durable)

    monkeypatch.setattr(restore, "atomic_write", write)
