"""A minimal world folder for tests that need one."""

from __future__ import annotations

import gzip
from pathlib import Path


def make_world(path: Path) -> Path:
    (path / "region").mkdir(parents=True)
    (path / "playerdata").mkdir()
    (path / "level.dat").write_bytes(gzip.compress(b"\x0a\x00\x00\x00", mtime=0))
    (path / "session.lock").write_bytes("\u2603".encode())
    return path
