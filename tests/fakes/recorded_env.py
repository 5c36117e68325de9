"""The fakes record the environment they were started with, so that tests can check what a
helper process is given (no token may reach the game server or cloudflared).

With ``PEERHOST_FAKE_ENV_DIR`` set, a fake writes ``PROGRAM-PID.json`` there: its whole
environment as a JSON object, written before it does anything else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ENV_DIR = "PEERHOST_FAKE_ENV_DIR"


def record_environment(program: str) -> None:
    folder = os.environ.get(ENV_DIR)
    if not folder:
        return
    path = Path(folder) / f"{program}-{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(os.environ)))
    os.replace(tmp, path)


def recorded(folder: Path, program: str) -> list[dict[str, str]]:
    """The environments ``program`` was started with (one per process)."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"{program}-*.json"))]
