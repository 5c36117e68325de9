"""The RCON stand-in speaks the protocol that the ``rcon`` package (conqp/rcon 2.4.x) expects."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from fakes.fake_rcon import (
    SAVE_OFF,
    SAVE_ON,
    SAVED_GAME,
    SAVING_GAME,
    UNKNOWN,
    FakeRcon,
    encode_packet,
)
from rcon.exceptions import WrongPassword
from rcon.source import Client

TIMEOUT = 5.0


def test_login_and_vanilla_answers() -> None:
    with FakeRcon(password="secret") as server:
        with Client("127.0.0.1", server.port, passwd="secret", timeout=TIMEOUT) as client:
            assert client.run("save-off") == SAVE_OFF
            assert client.run("save-all", "flush") == SAVING_GAME + SAVED_GAME
            assert client.run("save-on") == SAVE_ON
            assert client.run("frobnicate").startswith(UNKNOWN)
        assert server.received() == ["save-off", "save-all flush", "save-on", "frobnicate"]
        assert server.logins == [True]
        assert server.saving_enabled


def test_wrong_password_raises() -> None:
    with FakeRcon(password="secret") as server:
        with (
            pytest.raises(WrongPassword),
            Client("127.0.0.1", server.port, passwd="nope", timeout=TIMEOUT),
        ):
            pass
        assert server.logins == [False]
        assert server.received() == []


def test_hook_answers_and_records() -> None:
    seen: list[str] = []

    def hook(command: str) -> str | None:
        seen.append(command)
        return "custom" if command == "list" else None

    with FakeRcon(password="pw", hook=hook) as server:
        client = Client("127.0.0.1", server.port, timeout=TIMEOUT)
        try:
            client.connect()
            assert client.login("pw")
            assert client.run("list") == "custom"
            assert client.run("save-off") == SAVE_OFF
        finally:
            client.close()
    assert seen == ["list", "save-off"]


def test_slow_hook_hits_the_client_timeout() -> None:
    with FakeRcon(password="pw", hook=lambda command: time.sleep(1.0)) as server:
        client = Client("127.0.0.1", server.port, passwd="pw", timeout=0.3)
        try:
            client.connect(login=True)
            with pytest.raises(TimeoutError):
                client.run("save-all", "flush")
        finally:
            client.close()


def test_raw_protocol_details() -> None:
    """Unauthenticated commands and unknown packet types, at the byte level."""

    def read_packet(sock: socket.socket) -> tuple[int, int, bytes]:
        (length,) = struct.unpack("<i", sock.recv(4, socket.MSG_WAITALL))
        data = sock.recv(length, socket.MSG_WAITALL)
        request_id, kind = struct.unpack("<ii", data[:8])
        assert data[-2:] == b"\x00\x00"
        return request_id, kind, data[8:-2]

    with FakeRcon(password="pw") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(encode_packet(7, 2, b"list"))
            assert read_packet(sock) == (-1, 2, b"")  # not logged in: auth failure
            sock.sendall(encode_packet(8, 3, b"pw"))
            assert read_packet(sock) == (8, 2, b"")
            sock.sendall(encode_packet(9, 0, b""))
            assert read_packet(sock) == (9, 0, b"Unknown request 0")
            sock.sendall(encode_packet(10, 2, b"list"))
            assert read_packet(sock) == (10, 0, b"There are 0 of a max of 20 players online: ")
        assert server.received() == ["list"]
