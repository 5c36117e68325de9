"""A lightweight HTTP/1.1 load generator for the lease benchmark (what wrk does, in asyncio).

One process, one event loop (uvloop when installed), one keep-alive connection per client.
Requests are prebuilt bytes; answers are read by ``Content-Length`` (no chunked bodies, which
the coordinator never sends), so a call costs the generator a few tens of microseconds and the
figures measure the coordinator, not the client. ``bench_sync.py`` runs it as a subprocess:

* argv[1]: JSON ``{"out", "host", "port", "call": "renew" | "health", "clients": [[session, token,
  fencing], ...], "rate_per_client": float | null, "seconds": float}``;
* it connects every client, makes one warm-up call on each, prints ``ready`` and waits for a
  line on stdin holding ``begin``, a ``time.monotonic()`` instant (the same clock in every
  process on Linux, macOS and Windows);
* then it calls from ``begin`` for ``seconds``: closed loop (``rate_per_client`` null, each
  client calls again as soon as it has its answer) or paced (each client calls at
  ``rate_per_client``, staggered; latency counts from when the call was due, so a late start
  counts against it, as in wrk2);
* and writes JSON to the file ``out`` names: ``latencies`` (seconds from when each call was
  due, per client), ``service`` (seconds from when it was sent: the same less any lateness of
  this process), ``limited`` (429s per client), ``errors``, ``cpu`` (its own CPU seconds during
  the window).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


class Connection:
    """One keep-alive HTTP/1.1 connection making one kind of request."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def call(self) -> tuple[int, bytes]:
        """Send the request; return the status and body of the answer."""
        if self.writer is None or self.reader is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = -1
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length < 0:
            raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")
        body = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def build_request(host: str, port: int, call: str, session: str, token: str,
                  fencing: int) -> bytes:
    if call == "health":
        return f"GET /v1/health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    body = json.dumps({"fencing": fencing}).encode()
    return (f"POST /v1/sessions/{session}/lease/renew HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def run(config: dict[str, Any]) -> dict[str, Any]:
    host, port, call = config["host"], int(config["port"]), config["call"]
    rate = config.get("rate_per_client")
    seconds = float(config["seconds"])
    clients = config["clients"]
    n = len(clients)
    conns = [Connection(host, port, build_request(host, port, call, s, t, f))
             for s, t, f in clients]
    latencies: list[list[float]] = [[] for _ in range(n)]
    service: list[list[float]] = [[] for _ in range(n)]
    limited = [0] * n
    errors: list[str] = []
    for conn in conns:  # connect and warm up every connection before the window
        await conn.connect()
        status, body = await conn.call()
        if status != 200:
            raise SystemExit(f"warm-up call answered {status}: {body[:200]!r}")
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    begin = float(line)
    end = begin + seconds

    async def client(i: int) -> None:
        conn, mine, served = conns[i], latencies[i], service[i]
        k = 0
        while True:
            now = time.monotonic()
            if rate:
                due = begin + (i / n + k) / rate
                k += 1
                if due >= end or now >= end + seconds:  # bounded when overloaded
                    break
                if due > now:
                    await asyncio.sleep(due - now)
            else:
                if now < begin:
                    await asyncio.sleep(begin - now)
                    now = time.monotonic()
                due = now
                if due >= end:
                    break
            sent = time.monotonic()
            try:
                status, body = await conn.call()
            except (OSError, asyncio.IncompleteReadError, RuntimeError, ValueError) as exc:
                errors.append(f"client {i}: {exc!r}")
                conn.close()
                await asyncio.sleep(0.01)
                continue
            if status == 429:
                limited[i] += 1
                await asyncio.sleep(0.01)
                continue
            if status != 200:
                errors.append(f"client {i}: {status} {body[:200]!r}")
                continue
            answered = time.monotonic()
            mine.append(answered - due)
            served.append(answered - sent)

    cpu = time.process_time()
    await asyncio.gather(*(client(i) for i in range(n)))
    cpu = time.process_time() - cpu
    for conn in conns:
        conn.close()
    return {"latencies": latencies, "service": service, "limited": limited, "errors": errors[:20],
            "error_count": len(errors), "cpu": cpu, "begin": begin,
            "elapsed": time.monotonic() - begin}


def main() -> None:
    config = json.loads(sys.argv[1])
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]  # none on Windows
    except ImportError:
        result = asyncio.run(run(config))
        result["loop"] = "asyncio"
    else:
        result = uvloop.run(run(config))
        result["loop"] = "uvloop"
    with open(config["out"], "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
