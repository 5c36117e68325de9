"""A consistent world on disk while the server runs.

With RCON (``enable-rcon=true`` in ``server.properties``) the server is told to flush
everything and stop writing (``save-off``, ``save-all flush``) for the moment of the snapshot,
and to write again (``save-on``) afterwards, also when the snapshot failed. Without RCON,
phs snapshots once the world's files have been unchanged for a while (and always after the
server has stopped); when they stay busy past ``max_quiet_wait`` (people play), the host types
the same commands on the server's console instead (:class:`ConsoleSaveControl`), if the
server reads it: ``console_save`` in ``peerhost.toml``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from rcon.exceptions import EmptyResponse, SessionTimeout, WrongPassword
from rcon.source import Client

from peerhost_store.errors import PeerhostError
from peerhost_store.worldfs import STORE_DIR

from .config import ServerProperties

#: What an RCON request may take: ``save-all flush`` of a big world takes seconds.
RCON_TIMEOUT = 60.0
#: What vanilla, Paper, Fabric and Forge print once ``save-all flush`` wrote the world (a chat
#: line reads ``]: <name> Saved the game`` and does not match).
SAVED = re.compile(r"\]: Saved the game\b")


class SaveControlError(PeerhostError):
    """RCON refused or failed; the message names the server and the command."""


class SaveControl(Protocol):
    """Makes the world folder consistent for the duration of a ``with`` block."""

    #: How it does it, for the status view: ``rcon`` or ``quiet files``.
    kind: str

    def ready(self, world: Path) -> bool:
        """Whether a snapshot can be taken now (without RCON: the files are quiet)."""

    def paused(self) -> contextlib.AbstractContextManager[None]:
        """A block during which the server does not write the world."""


class RconSaveControl:
    """``save-off`` + ``save-all flush`` ... ``save-on`` over RCON on 127.0.0.1."""

    kind = "rcon"

    def __init__(self, port: int, password: str, *, host: str = "127.0.0.1",
                 timeout: float = RCON_TIMEOUT, log: Callable[[str], None] = lambda _: None) -> None:
        self.host = host
        self.port = port
        self._password = password
        self.timeout = timeout
        self.log = log

    def __repr__(self) -> str:  # never show the password
        return f"RconSaveControl({self.host}:{self.port})"

    def ready(self, world: Path) -> bool:
        return True

    def run(self, *commands: str) -> list[str]:
        """Run console commands over one RCON connection; their answers.

        Raises:
            SaveControlError: cannot connect, wrong password, no answer.
        """
        where = f"RCON at {self.host}:{self.port}"
        try:
            with Client(self.host, self.port, passwd=self._password, timeout=self.timeout) as c:
                return [c.run(command) for command in commands]
        except WrongPassword:
            raise SaveControlError(f"{where} refused rcon.password from server.properties") from None
        except (OSError, EmptyResponse, SessionTimeout) as exc:
            raise SaveControlError(f"{where}: {' / '.join(commands)} failed: "
                                   f"{exc or type(exc).__name__}") from None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.run("save-off")
        try:
            # After save-off, so nothing is written between the flush and the snapshot.
            self.log("rcon: " + " ".join(self.run("save-all flush")).strip())
            yield
        finally:
            self._save_on()

    def _save_on(self) -> None:
        # Saving must come back on, or the world stops being saved at all: retry a few times.
        for attempt in range(3):
            try:
                self.run("save-on")
                return
            except SaveControlError as exc:
                self.log(f"rcon: save-on failed ({exc}); retrying")
                time.sleep(1 + attempt)
        self.log("rcon: could not re-enable saving: type save-on in the server console")


class Console(Protocol):
    """A server console phs can type on (:class:`~.game.GameServer`)."""

    def send(self, command: str) -> bool: ...

    def ask(self, command: str, answer: re.Pattern[str], timeout: float) -> bool: ...


class ConsoleSaveControl:
    """``save-off`` + ``save-all flush`` ... ``save-on`` typed on the server's console, for a
    server without RCON. The snapshot waits for ``Saved the game``: no answer, no snapshot."""

    kind = "server console"

    def __init__(self, console: Console, *, timeout: float = RCON_TIMEOUT) -> None:
        self.console = console
        self.timeout = timeout

    def ready(self, world: Path) -> bool:
        return True

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        try:
            # The server runs console commands in order: once save-all flush answers, saving
            # is off and everything is written.
            if not (self.console.send("save-off")
                    and self.console.ask("save-all flush", SAVED, self.timeout)):
                raise SaveControlError(f"the server console did not answer save-all flush with "
                                       f"'Saved the game' within {self.timeout:g} s")
            yield
        finally:
            self.console.send("save-on")  # also when save-off took effect but no answer came


class QuietFilesControl:
    """No RCON: a snapshot waits until no world file changed for ``quiet_seconds``."""

    kind = "quiet files"

    def __init__(self, quiet_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.quiet_seconds = quiet_seconds
        self.clock = clock

    def ready(self, world: Path) -> bool:
        newest = last_write(world)
        return newest is None or self.clock() - newest >= self.quiet_seconds

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        yield


def last_write(world: Path) -> float | None:
    """The newest modification time of a file in the world (the store excluded)."""
    newest: float | None = None
    for folder, dirs, files in os.walk(world):
        if Path(folder) == world and STORE_DIR in dirs:
            dirs.remove(STORE_DIR)
        for name in files:
            try:
                mtime = os.stat(os.path.join(folder, name)).st_mtime
            except OSError:
                continue  # deleted while we looked: it changed, but the next look sees that
            newest = mtime if newest is None or mtime > newest else newest
    return newest


def save_control(props: ServerProperties, quiet_seconds: float,
                 log: Callable[[str], None] = lambda _: None) -> SaveControl:
    """RCON when ``server.properties`` enables it with a password, else quiet files."""
    if props.rcon_enabled and props.rcon_password:
        return RconSaveControl(props.rcon_port, props.rcon_password, log=log)
    return QuietFilesControl(quiet_seconds)
