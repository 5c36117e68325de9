"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from peerhost_store.ids import ObjectId
from peerhost_store.objects import Snapshot
from peerhost_store.repo import Repository

Subparsers = Any  # argparse's _SubParsersAction is private


def open_repo(args: argparse.Namespace) -> Repository:
    return Repository.open(args.world)


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
