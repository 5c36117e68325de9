"""Terminal output for phs: plain lines, JSON with ``--json``, and rich tables, progress bars
and panels where a command needs them.

rich costs ~50 ms to import, which is most of what ``phs --help`` and ``phs status`` may take
(issue 13: under 0.3 s as whole processes), so :data:`out` and :data:`err` write plain lines
themselves and create their rich ``Console`` only when a table, a progress bar or a live panel
asks for it. Output that is not a terminal is never cut to a width: a rich console there is
as wide as its longest line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

#: The width of a rich console writing to a pipe or a file: wide enough never to fold a line.
UNCUT_WIDTH = 100_000


class Stream:
    """stdout or stderr. ``line`` writes a plain line; ``console`` is a rich Console of it,
    created on first use. Both look up ``sys.stdout``/``sys.stderr`` when they write (so that
    output captured by a test, or redirected, goes where the stream points now)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def file(self) -> IO[str]:
        return sys.stderr if self._stderr else sys.stdout

    @property
    def is_terminal(self) -> bool:
        isatty = getattr(self.file, "isatty", None)
        return bool(isatty and isatty())

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False,
                                    width=None if self.is_terminal else UNCUT_WIDTH)
        return self._console

    def line(self, text: str = "") -> None:
        """One plain line: no markup, no wrapping."""
        file = self.file
        file.write(text + "\n")
        file.flush()

    def print(self, *objects: Any, **options: Any) -> None:
        """rich's ``Console.print`` (tables, markup)."""
        self.console.print(*objects, **options)


out = Stream(stderr=False)
err = Stream(stderr=True)


def emit_json(value: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def report(as_json: bool, value: Any, text: str) -> None:
    """A command's result: ``value`` as JSON (``--json``), else the line ``text``."""
    if as_json:
        emit_json(value)
    else:
        out.line(text)


def human_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 MiB``, ``1.1 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


Progress = Callable[[int, int], None]


@contextmanager
def progress_bar(label: str, *, enabled: bool, unit: str = "bytes",
                 moved: Callable[[], int] | None = None) -> Iterator[Progress | None]:
    """Yield a ``progress(done, total)`` callback drawing a bar on stderr, or None when off
    (``--json``, or stderr is not a terminal).

    Args:
        unit: what ``done`` and ``total`` count: ``bytes`` (shown as sizes, with the rate and
            the time left), or a plural noun (``files``, ``objects``) shown as counts.
        moved: with a count unit, the bytes moved so far (a client's wire totals): shown with
            their rate beside the count, so a transfer always shows bytes and a rate.
    """
    if not enabled or not err.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.text import Text

    class Count(ProgressColumn):
        """``12/345 files`` (``12 files`` before the total is known)."""

        def render(self, task: Any) -> Text:
            total = "" if task.total is None else f"/{task.total:,.0f}"
            return Text(f"{task.completed:,.0f}{total} {unit}")

    columns: list[ProgressColumn | str] = [TextColumn(label), BarColumn()]
    if unit == "bytes":
        columns += [DownloadColumn(binary_units=True), TransferSpeedColumn()]
    else:
        columns.append(Count())
        if moved is not None:
            columns.append(TextColumn("{task.fields[moved]}"))
    columns.append(TimeRemainingColumn())
    with Progress(*columns, console=err.console, transient=True) as bar:
        task = bar.add_task(label, total=None, moved="")
        started = [0.0]

        def update(done: int, total: int) -> None:
            fields: dict[str, Any] = {}
            if moved is not None:
                fields["moved"] = _rate_text(moved(), bar.get_time(), started)
            bar.update(task, completed=done, total=total, **fields)

        started[0] = bar.get_time()
        yield update


def _rate_text(moved: int, now: float, started: list[float]) -> str:
    seconds = max(now - started[0], 1e-3)
    return f"{human_bytes(moved)} at {human_bytes(moved / seconds)}/s"
