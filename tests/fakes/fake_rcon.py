"""A stand-in for a vanilla Minecraft server's RCON port (the Source RCON protocol).

The wire format is the one Minecraft Java implements (``net.minecraft.server.rcon``):

    packet = int32 length (of what follows) | int32 request id | int32 type | body | 0x00 0x00

all integers little-endian and signed. Types: 3 login (SERVERDATA_AUTH), 2 command
(SERVERDATA_EXECCOMMAND) and also the login answer (SERVERDATA_AUTH_RESPONSE), 0 a command's
answer (SERVERDATA_RESPONSE_VALUE). Like vanilla:

* a login with the right password is answered with the request's id, type 2 and an empty
  body; a wrong password (or a command before logging in) with id -1, type 2;
* a command's answer is type 0 with the request's id, its body cut into packets of at most
  4096 bytes; the feedback messages of a command are concatenated without separators (so
  ``save-all flush`` answers ``"Saving the game (this may take a moment!)Saved the game"``);
* another packet type is answered ``Unknown request <hex type>``;
* a packet longer than 1460 bytes or shorter than 10 closes the connection.

Everything listens on 127.0.0.1 only. Use it as a context manager::

    with FakeRcon(password="pw") as rcon:
        client = rcon.source.Client("127.0.0.1", rcon.port, passwd="pw", timeout=5)
        ...
        rcon.commands  # every command received, in order

``hook(command) -> str | None`` is called for every authenticated command (from the
connection's thread) before the built-in answer: return a string to answer with it instead,
None to keep the built-in answer; it may also sleep (to test client timeouts) or raise (the
connection is then closed without an answer).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

LOGIN = 3
COMMAND = 2
AUTH_RESPONSE = 2
RESPONSE = 0

MAX_INCOMING = 1460  # vanilla refuses bigger request packets
MAX_OUTGOING_BODY = 4096  # vanilla cuts answers into packets of this many bytes

SAVING_GAME = "Saving the game (this may take a moment!)"
SAVED_GAME = "Saved the game"
SAVE_OFF = "Automatic saving is now disabled"
SAVE_OFF_ALREADY = "Saving is already turned off"
SAVE_ON = "Automatic saving is now enabled"
SAVE_ON_ALREADY = "Saving is already turned on"
UNKNOWN = "Unknown or incomplete command, see below for error"

Hook = Callable[[str], "str | None"]


def encode_packet(request_id: int, kind: int, body: bytes) -> bytes:
    """One RCON packet: length, id, type, body, two NUL bytes."""
    payload = struct.pack("<ii", request_id, kind) + body + b"\x00\x00"
    return struct.pack("<i", len(payload)) + payload


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


class FakeRcon:
    """A threaded RCON server on 127.0.0.1 answering like vanilla Minecraft 1.21."""

    def __init__(
        self,
        password: str = "peerhost",
        *,
        port: int = 0,
        hook: Hook | None = None,
        max_players: int = 20,
    ) -> None:
        self.password = password
        self.hook = hook
        self.max_players = max_players
        self.commands: list[str] = []
        self.logins: list[bool] = []  # one entry per login attempt: was it accepted
        self.saving_enabled = True
        self.stopped = threading.Event()  # set by the "stop" command
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.host = "127.0.0.1"
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="fake-rcon-accept", daemon=True
        )
        self._acceptor.start()

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening, close every connection, join the threads (bounded)."""
        self._closing.set()
        self._acceptor.join(timeout=2)
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in list(self._threads):
            thread.join(timeout=2)

    def received(self) -> list[str]:
        """A copy of the commands received so far."""
        with self._lock:
            return list(self.commands)

    # -- serving ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self._connections.add(conn)
            thread = threading.Thread(
                target=self._serve, args=(conn,), name="fake-rcon-conn", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        authed = False
        try:
            while not self._closing.is_set():
                head = _read_exact(conn, 4)
                if head is None:
                    return
                (length,) = struct.unpack("<i", head)
                if length < 10 or length > MAX_INCOMING:
                    return  # vanilla drops the connection
                payload = _read_exact(conn, length)
                if payload is None:
                    return
                request_id, kind = struct.unpack("<ii", payload[:8])
                body = payload[8:].split(b"\x00", 1)[0].decode("utf-8", "replace")
                if kind == LOGIN:
                    ok = bool(body) and body == self.password
                    with self._lock:
                        self.logins.append(ok)
                    authed = ok
                    conn.sendall(encode_packet(request_id if ok else -1, AUTH_RESPONSE, b""))
                elif kind == COMMAND:
                    if not authed:
                        conn.sendall(encode_packet(-1, AUTH_RESPONSE, b""))
                        continue
                    answer = self._run(body)
                    self._send_response(conn, request_id, answer)
                else:
                    self._send_response(conn, request_id, f"Unknown request {kind & 0xFFFFFFFF:x}")
        except Exception:  # noqa: BLE001 - a raising hook or a reset connection ends it
            return
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _send_response(self, conn: socket.socket, request_id: int, answer: str) -> None:
        data = answer.encode("utf-8")
        parts = [
            data[i : i + MAX_OUTGOING_BODY] for i in range(0, len(data), MAX_OUTGOING_BODY)
        ] or [b""]
        for part in parts:
            conn.sendall(encode_packet(request_id, RESPONSE, part))

    def _run(self, command: str) -> str:
        with self._lock:
            self.commands.append(command)
        if self.hook is not None:
            custom = self.hook(command)
            if custom is not None:
                return custom
        return self.vanilla_answer(command)

    def vanilla_answer(self, command: str) -> str:
        """What vanilla 1.21 answers (feedback messages concatenated, as its RCON does)."""
        words = command.strip().lstrip("/").split()
        name = words[0] if words else ""
        if name == "save-all":
            return SAVING_GAME + SAVED_GAME
        if name == "save-off":
            if not self.saving_enabled:
                return SAVE_OFF_ALREADY
            self.saving_enabled = False
            return SAVE_OFF
        if name == "save-on":
            if self.saving_enabled:
                return SAVE_ON_ALREADY
            self.saving_enabled = True
            return SAVE_ON
        if name == "list":
            return f"There are 0 of a max of {self.max_players} players online: "
        if name == "say":
            return ""
        if name == "stop":
            self.stopped.set()
            return "Stopping the server"
        return UNKNOWN + f"{command.strip()}<--[HERE]"
