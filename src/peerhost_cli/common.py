"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from peerhost_store.ids import ObjectId
from peerhost_store.objects import Snapshot
from peerhost_store.repo import Repository

from .output import err

Subparsers = Any  # argparse's _SubParsersAction is private


def open_repo(args: argparse.Namespace) -> Repository:
    return Repository.open(args.world, notify=notice)


def notice(text: str) -> None:
    """One line on stderr about what a command did beyond its own work."""
    err.print(f"phs: {text}", markup=False, soft_wrap=True)


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
