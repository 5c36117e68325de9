"""What ``phs host`` and ``phs join`` show: the server console passed through, event lines,
and on a terminal a live status panel under them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..common import ago
from ..output import Stream, human_bytes, out
from .waiting import SyncWait


@dataclass
class HostStatus:
    """The state the status panel shows (updated by the host loop)."""

    session: str
    holder: str
    phase: str = "starting"
    fencing: int | None = None
    address: str | None = None
    via: str | None = None
    saving: str | None = None
    wait: SyncWait | None = None
    lease_left: Callable[[], float] | None = None
    last_snapshot: str | None = None
    last_snapshot_at: float | None = None
    last_push_at: float | None = None
    pushes: int = 0
    bytes_sent: int = 0


def _ago(at: float | None) -> str:
    return "never" if at is None else ago(at)


def render(status: HostStatus) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    left = status.lease_left() if status.lease_left is not None else None
    rows = [
        ("session", f"{status.session} ({status.phase})"),
        ("host", status.holder + (f", lease {status.fencing}" if status.fencing else "")),
        ("address", f"{status.address or '-'}" + (f" via {status.via}" if status.via else "")),
        ("lease", "-" if left is None else f"{left:.0f} s left"),
        ("saving", status.saving or "-"),
        *([("waiting", status.wait.describe())] if status.wait is not None else []),
        ("snapshot", f"{status.last_snapshot or '-'} ({_ago(status.last_snapshot_at)})"),
        ("push", (f"{status.pushes} pushes, last {_ago(status.last_push_at)}, "
                  f"{human_bytes(status.bytes_sent)} sent")),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


class View:
    """Lines from the server and from phs; a live panel when stdout is a terminal."""

    def __init__(self, console: Console | Stream = out) -> None:
        self.console = console.console if isinstance(console, Stream) else console
        self.status: HostStatus | None = None
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        """A server console line, as the server printed it."""
        with self._lock:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def event(self, text: str) -> None:
        """Something phs did or noticed."""
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            self.console.print(f"[phs {stamp}] {text}", markup=False, highlight=False,
                               soft_wrap=True)

    @contextmanager
    def live(self, status: HostStatus) -> Iterator[None]:
        """Show ``status`` under the scrolling lines while the block runs (terminals only)."""
        self.status = status
        if not self.console.is_terminal:
            yield
            return
        with Live(get_renderable=lambda: render(status), console=self.console,
                  refresh_per_second=2, transient=True, redirect_stdout=False,
                  redirect_stderr=False):
            yield
