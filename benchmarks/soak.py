"""A soak on loopback: many sessions, one host each pushing play sessions, many readers pulling.

One coordinator (``python -m peerhost_server``, default limits) on a free port of 127.0.0.1.
Setup: a tiny synthesized world (one overworld region cut down to 64 chunks, ~0.7 MB) is
copied into ``--sessions`` sessions, each given one play session of its own, snapshotted and
pushed once. Then, for ``--seconds``:

* one **host** per session (its own member token) takes the lease (ttl ``--ttl``), renews it
  every ttl/3 and, every 5 to 15 s, applies a synthesized play session
  (:func:`peerhost_cli.synth.play_session`) to its world, snapshots it and pushes it with
  its fencing token;
* ``--readers`` **readers** (reader ``r`` follows session ``r % sessions``, its own member
  token and repository) pull, check that their head is the head the coordinator told them and,
  after a fast-forward, that the restored world scans to that snapshot's tree, then sleep 5 to
  10 s.

The 250 actors are threads spread over ``--workers`` processes (this file run with
``--worker``), each actor with its own keep-alive connection. Every operation's latency and
outcome is recorded; the coordinator's memory (``/proc/PID/status``: VmRSS, RssAnon, RssFile)
is sampled every second. At the end, with the coordinator stopped, every acknowledged head must
be in its session's log and reachable from the session head, and every session store must
verify clean (every object re-hashed).

Output: a table (rich) and JSON (``--out``, default ``benchmarks/results/soak.json``): ops by
kind, throughput, p50/p99 per kind, errors (must be 0), lost snapshots (must be 0), RSS first,
last, max and its growth over the second half (a least-squares slope; "flat" when under 5 %).

**Three coordinators** (``--pg``): the same soak against ``--coordinators`` processes
(``--db postgresql://...``, one fresh schema of the tests' server ``PHS_TEST_POSTGRES``,
migrated by the first one's ``--migrate``, dropped afterwards; the objects in the shared data
folder's LMDB, or with ``--s3`` in one bucket of moto's S3 server, a process of its own),
every client request sent to one of them at random (:class:`Spread`). At
``--kill-at`` seconds the last coordinator is SIGKILLed and, after ``--restart-after`` seconds
(stays down when negative), started again on its port. A request that finds no listener is
sent to another coordinator (``rerouted``, nothing was sent); a request in flight on the
killed process fails (CoordinatorUnavailable) and its operation is retried by the actor: such
a failure counts as ``expected`` only when the transport saw the killed coordinator's
connection break within that operation, in the seconds after the kill; every other failure is
an error. Memory and the canary are those of the first coordinator (never killed).

Run: ``.venv/bin/python benchmarks/soak.py [--sessions 50] [--readers 200] [--seconds 180]
[--pg [--s3] [--coordinators 3] [--kill-at 30] [--restart-after 5]]``. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from peerhost_cli import synth
from peerhost_store import region
from peerhost_store.graph import GraphLoader, walk
from peerhost_store.ids import from_hex
from peerhost_store.repo import Repository
from peerhost_store.store import LmdbStore
from peerhost_store.sync.client import CoordinatorClient, CoordinatorUnavailable
from peerhost_store.sync.transfer import pull, push

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
MiB = 1 << 20
KEEP_CHUNKS = 8  # the world keeps the first KEEP_CHUNKS x KEEP_CHUNKS chunks of region 0 0
EDIT_CHUNKS, RESAVE_CHUNKS = 2, 6  # one play session


@dataclass
class SoakConfig:
    sessions: int = 50
    readers: int = 200
    seconds: float = 180.0
    workers: int = 4
    ttl: float = 60.0  # what `phs host` takes by default
    push_every: tuple[float, float] = (5.0, 15.0)
    reader_sleep: tuple[float, float] = (5.0, 10.0)
    work: Path | None = None  # a temporary folder when None (removed afterwards)
    keep: bool = False
    db: str | None = None  # a PostgreSQL URL (an empty schema): ``coordinators`` processes on it
    coordinators: int = 1
    kill_at: float | None = None  # seconds into the run: SIGKILL the last coordinator
    restart_after: float | None = None  # seconds after the kill: start it again (None: stays down)
    objects: str | None = None  # every coordinator's --objects (s3://bucket/prefix), with db
    env: dict[str, str] = field(default_factory=dict)  # added to the coordinators' environment


# -- the coordinator -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m peerhost_server`` as a subprocess; its access log goes to a file (appended
    to across restarts). ``db``: its ``--db`` URL (``migrate``: with ``--migrate``);
    ``objects``: its ``--objects`` URL; ``env``: added to its environment."""

    def __init__(self, data: Path, log: Path, db: str | None = None,
                 migrate: bool = False, objects: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.data, self.log, self.port = data, log, free_port()
        self.db, self.migrate, self.objects, self.env = db, migrate, objects, env or {}
        self.url = f"http://{HOST}:{self.port}"
        self.admin_token = ""
        self.start()

    def start(self) -> None:
        command = [sys.executable, "-m", "peerhost_server", "--data", str(self.data),
                   "--host", HOST, "--port", str(self.port)]
        if self.db is not None:
            command += ["--db", self.db, *(["--migrate"] if self.migrate else [])]
            self.migrate = False  # once
        if self.objects is not None:
            command += ["--objects", self.objects]
        self._log_file = self.log.open("ab")
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log_file,
                                     text=True, env={**os.environ, **self.env})
        assert self.proc.stdout is not None
        # Printed before uvicorn starts: migrations, the admin token (first start of the
        # state only), then "coordinator for ...".
        for _ in range(50):
            line = _readline(self.proc, 60)
            if line.startswith("admin token"):
                self.admin_token = line.rsplit(" ", 1)[1].strip()
            if not line or line.startswith("coordinator for"):
                break
        if not line:
            self.stop()
            raise RuntimeError(f"the coordinator on {self.url} said nothing before serving")
        if self.db is None and not self.admin_token:
            self.stop()
            raise RuntimeError("the coordinator did not print its admin token")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the coordinator did not come up")

    def memory(self) -> dict[str, int] | None:
        """VmRSS, VmHWM (its peak), RssAnon and RssFile in bytes and CPU time (``cpu_ms``),
        None once the process is gone."""
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        out: dict[str, int] = {}
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            out["cpu_ms"] = (int(fields[11]) + int(fields[12])) * 1000 // ticks
        except (OSError, IndexError, ValueError):
            pass
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[name] = int(value.split()[0]) * 1024
        return out

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; what it acknowledged must survive."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_file.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_file.close()


class MemorySampler(threading.Thread):
    """Samples the coordinator's memory every ``every`` seconds until stopped."""

    def __init__(self, server: Server, every: float = 1.0, limit: float = 3600.0) -> None:
        super().__init__(daemon=True)
        self.server, self.every, self.limit = server, every, limit
        self.samples: list[dict[str, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stopped.is_set() and time.monotonic() - start < self.limit:
            memory = self.server.memory()
            if memory is None:
                return
            self.samples.append({"t": time.monotonic(), **memory})
            self.stopped.wait(self.every)


class Nemesis(threading.Thread):
    """SIGKILLs ``server`` ``after`` seconds past ``begin`` (monotonic) and, ``restart_after``
    seconds later (never when None), starts it again on its port."""

    def __init__(self, server: Server, begin: float, after: float,
                 restart_after: float | None) -> None:
        super().__init__(daemon=True)
        self.server, self.begin, self.restart_after = server, begin, restart_after
        self.at = begin + after
        self.killed: float | None = None
        self.restarted: float | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            time.sleep(max(0.0, self.at - time.monotonic()))
            self.killed = time.monotonic()
            self.server.kill()
            if self.restart_after is not None:
                time.sleep(self.restart_after)
                self.server.start()
                self.restarted = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - reported with the summary
            self.error = f"{type(exc).__name__}: {exc}"


class Canary(threading.Thread):
    """A lone client in the otherwise idle main process: renews a lease of its own session every
    ``every`` seconds. Beside the actors' figures, it tells the coordinator's own delay apart
    from queueing inside the crowded worker processes."""

    def __init__(self, url: str, token: str, every: float = 0.5, limit: float = 3600.0) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.every, self.limit = url, token, every, limit
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=120) as http:
            client = CoordinatorClient(http, "canary", self.token)
            fencing = client.acquire("canary", 60).fencing
            while not self.stopped.is_set() and time.monotonic() - start < self.limit:
                t0 = time.perf_counter()
                try:
                    client.renew(fencing)
                except Exception as exc:  # noqa: BLE001 - every failure is a finding
                    self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                else:
                    self.latencies.append(time.perf_counter() - t0)
                self.stopped.wait(self.every)


# -- worlds -----------------------------------------------------------------------------------


def seed_world(path: Path) -> int:
    """A tiny synthesized world: one region cut to KEEP_CHUNKS^2 chunks, no other dimension."""
    synth.synthesize_world(path, seed=20260501, regions=1, dimensions=False, workers=1)
    file = path / "region" / "r.0.0.mca"
    parsed = region.parse_region(file.read_bytes())
    keep = [c for c in parsed.chunks if c.slot % 32 < KEEP_CHUNKS and c.slot // 32 < KEEP_CHUNKS]
    data, external = region.write_region(keep)
    assert not external
    file.write_bytes(data)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def play(world: Path, seed: int) -> None:
    synth.play_session(world, seed=seed, edit_chunks=EDIT_CHUNKS, resave_chunks=RESAVE_CHUNKS)


# -- actors (in the worker processes) ---------------------------------------------------------


@dataclass
class Recorder:
    """Every operation of one worker process: ``[kind, actor, start, seconds, error]``."""

    ops: list[list[Any]] = field(default_factory=list)
    acked: dict[str, list[str]] = field(default_factory=dict)
    seen: dict[str, list[str]] = field(default_factory=dict)
    wire: dict[str, int] = field(default_factory=lambda: {"push_sent": 0, "push_received": 0,
                                                          "pull_sent": 0, "pull_received": 0})
    #: connections that broke with a request on them: ``[port, monotonic time, error type]``
    broken: list[list[Any]] = field(default_factory=list)
    rerouted: int = 0  # requests that found no listener and went to another coordinator
    lock: threading.Lock = field(default_factory=threading.Lock)

    def op(self, kind: str, actor: str, start: float, seconds: float, error: str | None) -> None:
        with self.lock:
            self.ops.append([kind, actor, start, seconds, error])


class Spread(httpx.BaseTransport):
    """Sends each request to one of ``urls`` at random (several coordinators behind one URL,
    as a load balancer does). A refused connection carried nothing, so the request goes to
    another one (bounded); a connection that breaks with the request on it is recorded in
    ``rec.broken`` and raised: whether it was handled is not known, so only the caller may
    retry the operation."""

    def __init__(self, urls: list[str], rng: random.Random, rec: Recorder) -> None:
        self._inner = httpx.HTTPTransport()
        self._targets = [httpx.URL(u) for u in urls]
        self._rng, self._rec = rng, rec

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(20):
            target = self._rng.choice(self._targets)
            request.url = request.url.copy_with(scheme=target.scheme, host=target.host,
                                                port=target.port)
            try:
                return self._inner.handle_request(request)
            except httpx.ConnectError:
                with self._rec.lock:
                    self._rec.rerouted += 1
                time.sleep(0.01 * attempt)
            except httpx.TransportError as exc:
                with self._rec.lock:
                    self._rec.broken.append([target.port, time.monotonic(), type(exc).__name__])
                raise
        raise httpx.ConnectError(f"no coordinator of {self._targets} took the request",
                                 request=request)

    def close(self) -> None:
        self._inner.close()


def _client(cfg: dict[str, Any], rec: Recorder, seed: int) -> httpx.Client:
    """A keep-alive client to the coordinator, or spread over the coordinators."""
    urls: list[str] = cfg["urls"]
    if len(urls) == 1:
        return httpx.Client(base_url=urls[0], timeout=120)
    return httpx.Client(base_url=urls[0], timeout=120,
                        transport=Spread(urls, random.Random(seed), rec))


def _timed(rec: Recorder, kind: str, actor: str, fn: Any, *args: Any, retries: int = 0,
           **kwargs: Any) -> Any:
    """Run ``fn``, record it; re-raise nothing (returns None on failure). With ``retries``,
    run it again (at most that many times) after a CoordinatorUnavailable: a coordinator that
    died with the request on it, which the next attempt reaches another one than."""
    for attempt in range(retries + 1):
        start = time.monotonic()
        t0 = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure is a finding
            rec.op(kind, actor, start, time.perf_counter() - t0,
                   f"{type(exc).__name__}: {exc}"[:300])
            if isinstance(exc, CoordinatorUnavailable) and attempt < retries:
                time.sleep(0.2)
                continue
            return None
        rec.op(kind, actor, start, time.perf_counter() - t0, None)
        return result if result is not None else True
    return None


class Host:
    """Takes the lease and renews it from its own thread every ttl/3 (as a real host does,
    whatever its pushes cost); plays, snapshots and pushes every few seconds."""

    def __init__(self, spec: dict[str, Any], rec: Recorder, cfg: dict[str, Any]) -> None:
        self.name = f"host-{spec['session']}"
        self.session, self.world, self.index = spec["session"], Path(spec["world"]), spec["index"]
        self.http = _client(cfg, rec, 20_000 + spec["index"])
        self.client = CoordinatorClient(self.http, self.session, spec["token"])
        self.repo = Repository.open(self.world)
        self.rec, self.cfg = rec, cfg
        self.rng = random.Random(spec["index"])
        self.retries = 3 if len(cfg["urls"]) > 1 else 0
        self.pushes = 0
        self.fencing: int | None = None
        self.lock = threading.Lock()
        self.done = threading.Event()

    def run(self, begin: float, end: float) -> None:
        ttl = float(self.cfg["ttl"])
        lo, hi = self.cfg["push_every"]
        renewer = threading.Thread(target=self._renew_loop, args=(ttl, end), daemon=True)
        try:
            self._acquire(ttl)
            renewer.start()
            next_push = begin + self.rng.uniform(0, hi)
            for _ in range(100_000):
                now = time.monotonic()
                if now >= end:
                    break
                if next_push > now:
                    time.sleep(min(next_push, end) - now)
                    continue
                with self.lock:
                    fencing = self.fencing
                if fencing is None:  # lost (an error already recorded): take it again
                    self._acquire(ttl)
                else:
                    self._push_once(fencing)
                next_push = time.monotonic() + self.rng.uniform(lo, hi)
        finally:
            self.done.set()
            if renewer.is_alive():
                renewer.join(timeout=130)
            with self.lock:
                fencing = self.fencing
            if fencing is not None:
                _timed(self.rec, "release", self.name, self.client.release, fencing,
                       retries=self.retries)
            self.repo.close()
            self.http.close()

    def _acquire(self, ttl: float) -> None:
        lease = _timed(self.rec, "acquire", self.name, self.client.acquire, self.name, ttl,
                       retries=self.retries)
        with self.lock:
            self.fencing = lease.fencing if lease else None

    def _renew_loop(self, ttl: float, end: float) -> None:
        for _ in range(100_000):
            if self.done.wait(ttl / 3) or time.monotonic() >= end:
                return
            with self.lock:
                fencing = self.fencing
            if fencing is None:
                continue
            if _timed(self.rec, "renew", self.name, self.client.renew, fencing,
                      retries=self.retries) is None:
                with self.lock:
                    if self.fencing == fencing:
                        self.fencing = None

    def _push_once(self, fencing: int) -> None:
        self.pushes += 1
        seed = self.index * 100_000 + self.pushes
        if _timed(self.rec, "play", self.name, play, self.world, seed) is None:
            return
        made = _timed(self.rec, "snapshot", self.name, self.repo.snapshot, f"play {seed}")
        if made is None:
            return
        before = self.client.stats.copy()
        report = _timed(self.rec, "push", self.name, push, self.repo, self.client, fencing=fencing,
                        retries=self.retries)
        if report is None:
            return
        with self.rec.lock:
            self.rec.acked.setdefault(self.session, []).append(report.head.hex())
            self.rec.wire["push_sent"] += self.client.stats.sent - before.sent
            self.rec.wire["push_received"] += self.client.stats.received - before.received


class Reader:
    def __init__(self, spec: dict[str, Any], rec: Recorder, cfg: dict[str, Any]) -> None:
        self.name = f"reader-{spec['index']}"
        self.session = spec["session"]
        world = Path(spec["world"])
        world.mkdir(parents=True, exist_ok=True)
        self.repo = Repository.init(world)
        self.http = _client(cfg, rec, 30_000 + spec["index"])
        self.client = CoordinatorClient(self.http, self.session, spec["token"])
        self.rec, self.cfg = rec, cfg
        self.rng = random.Random(10_000 + spec["index"])
        self.retries = 3 if len(cfg["urls"]) > 1 else 0

    def run(self, begin: float, end: float) -> None:
        lo, hi = self.cfg["reader_sleep"]
        try:
            first = begin + self.rng.uniform(0, hi)  # spread the first pulls (clones)
            if first > time.monotonic():
                time.sleep(first - time.monotonic())
            for _ in range(100_000):
                if time.monotonic() >= end:
                    break
                _timed(self.rec, "pull", self.name, self._pull_and_check, retries=self.retries)
                pause = min(self.rng.uniform(lo, hi), max(0.0, end - time.monotonic()))
                time.sleep(pause)
        finally:
            self.repo.close()
            self.http.close()

    def _pull_and_check(self) -> bool:
        before = self.client.stats.copy()
        report = pull(self.repo, self.client)
        told = report.remote
        if told is None:
            raise AssertionError("the session has no head")
        with self.rec.lock:
            self.rec.seen.setdefault(self.session, []).append(told.hex())
            self.rec.wire["pull_sent"] += self.client.stats.sent - before.sent
            self.rec.wire["pull_received"] += self.client.stats.received - before.received
        if report.outcome not in ("fast-forward", "up-to-date"):
            raise AssertionError(f"pull outcome {report.outcome!r}")
        if self.repo.head() != told:
            raise AssertionError(f"head {self.repo.head()!r} is not the told {told.hex()}")
        if report.outcome == "fast-forward":
            live = self.repo.scan().root
            want = self.repo.read_snapshot(told).root
            if live != want:
                raise AssertionError(f"the world scans to {live.hex()}, not {want.hex()}")
        return True


def worker_main(config_path: Path) -> None:
    """One worker process: build its actors, print ``ready``, wait for ``BEGIN END`` on stdin,
    run them in threads, write the results to the config's ``out``."""
    cfg = json.loads(config_path.read_text())
    rec = Recorder()
    actors: list[Host | Reader] = [Host(spec, rec, cfg) for spec in cfg["hosts"]]
    actors += [Reader(spec, rec, cfg) for spec in cfg["readers"]]
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    begin, end = float(line[0]), float(line[1])
    cpu = time.process_time()
    threads = [threading.Thread(target=a.run, args=(begin, end), daemon=True) for a in actors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, end - time.monotonic() + 120))
    stuck = sum(thread.is_alive() for thread in threads)
    with rec.lock:
        result = {"ops": rec.ops, "acked": rec.acked, "seen": rec.seen, "wire": rec.wire,
                  "broken": rec.broken, "rerouted": rec.rerouted, "stuck_threads": stuck, "cpu_seconds": time.process_time() - cpu}
    Path(cfg["out"]).write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # stuck daemon threads (if any) must not keep the process alive


# -- the run ----------------------------------------------------------------------------------


def _setup_session(url: str, admin_token: str, index: int, seed: Path, work: Path,
                   readers: list[int]) -> dict[str, Any]:
    name = f"s{index:03d}"
    with httpx.Client(base_url=url, timeout=120) as http:
        admin = CoordinatorClient(http, "", admin_token)
        owner = CoordinatorClient(http, name, admin.create_session(name))
        host_token = owner.add_member("host")
        reader_tokens = {r: owner.add_member(f"reader{r}") for r in readers}
        world = work / "hosts" / name
        shutil.copytree(seed, world)
        play(world, seed=index * 100_000)
        host = CoordinatorClient(http, name, host_token)
        with Repository.init(world) as repo:
            repo.snapshot("first")
            lease = host.acquire(f"setup-{name}", 60)
            report = push(repo, host, fencing=lease.fencing)
            host.release(lease.fencing)
        return {
            "session": name, "owner": owner._token,
            "host": {"session": name, "token": host_token, "world": str(world), "index": index},
            "readers": [{"session": name, "token": reader_tokens[r], "index": r,
                         "world": str(work / "readers" / f"r{r:04d}")} for r in readers],
            "first_head": report.head.hex(),
        }


def run_soak(config: SoakConfig, progress: bool = True) -> dict[str, Any]:
    """Run the soak; return its summary (see the module docstring)."""
    say = print if progress else (lambda *a, **k: None)
    work = config.work or Path(tempfile.mkdtemp(prefix="peerhost-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    t_setup = time.monotonic()
    seed = work / "seed-world"
    world_bytes = seed_world(seed)
    if config.db is None:
        servers = [Server(work / "coordinator", work / "coordinator.log")]
    else:  # the first one migrates the schema and makes the admin token
        servers = [Server(work / "coordinator", work / f"coordinator{i}.log", config.db,
                          migrate=i == 0, objects=config.objects, env=config.env)
                   for i in range(config.coordinators)]
    server = servers[0]
    nemesis: Nemesis | None = None
    workers: list[subprocess.Popen[str]] = []
    sampler = MemorySampler(server)
    canary: Canary | None = None
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            admin = CoordinatorClient(http, "", server.admin_token)
            owner = CoordinatorClient(http, "canary", admin.create_session("canary"))
            canary = Canary(server.url, owner.add_member("canary"))
        by_session: dict[int, list[int]] = {i: [] for i in range(config.sessions)}
        for r in range(config.readers):
            by_session[r % config.sessions].append(r)
        with ThreadPoolExecutor(max_workers=4) as pool:
            sessions = list(pool.map(
                lambda i: _setup_session(server.url, server.admin_token, i, seed, work,
                                         by_session[i]), range(config.sessions)))
        setup_seconds = time.monotonic() - t_setup
        say(f"setup: {config.sessions} sessions of a {world_bytes / MiB:.2f} MiB world "
            f"in {setup_seconds:.1f} s")

        # Spread hosts and readers over the worker processes.
        plans: list[dict[str, Any]] = [
            {"urls": [s.url for s in servers], "ttl": config.ttl, "push_every": list(config.push_every),
             "reader_sleep": list(config.reader_sleep), "hosts": [], "readers": [],
             "out": str(work / f"worker{w}.json")} for w in range(config.workers)]
        for i, s in enumerate(sessions):
            plans[i % config.workers]["hosts"].append(s["host"])
        all_readers = [r for s in sessions for r in s["readers"]]
        for i, r in enumerate(all_readers):
            plans[i % config.workers]["readers"].append(r)
        for w, plan in enumerate(plans):
            path = work / f"worker{w}.config.json"
            path.write_text(json.dumps(plan))
            workers.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker", str(path)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for proc in workers:
            assert proc.stdout is not None
            line = _readline(proc, 120)
            if line.strip() != "ready":
                raise RuntimeError(f"a worker did not get ready: {line!r}")

        sampler.start()
        canary.start()
        begin = time.monotonic() + 0.5
        end = begin + config.seconds
        if config.kill_at is not None and len(servers) > 1:
            nemesis = Nemesis(servers[-1], begin, config.kill_at, config.restart_after)
            nemesis.start()
        for proc in workers:
            assert proc.stdin is not None
            proc.stdin.write(f"{begin} {end}\n")
            proc.stdin.flush()
        say(f"soak: {len(all_readers)} readers and {config.sessions} hosts in "
            f"{config.workers} processes for {config.seconds:g} s")
        for proc in workers:
            proc.wait(timeout=max(10.0, end - time.monotonic()) + 180)
        if nemesis is not None:
            nemesis.join(timeout=60)
        sampler.stopped.set()
        sampler.join(timeout=5)
        canary.stopped.set()
        canary.join(timeout=130)
        results = [json.loads(Path(p["out"]).read_text()) for p in plans]

        # What the coordinator says, while it runs.
        logs: dict[str, list[dict[str, Any]]] = {}
        heads: dict[str, str | None] = {}
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for s in sessions:
                owner = CoordinatorClient(http, s["session"], s["owner"])
                logs[s["session"]] = owner.log(limit=1000)
                head = owner.head().head
                heads[s["session"]] = None if head is None else head.hex()
    finally:
        sampler.stopped.set()
        if canary is not None:
            canary.stopped.set()
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for each in servers:
            each.stop()

    verify = _verify(_opener(config, server.data), sessions, results, logs, heads)
    summary = _summarize(config, results, sampler.samples, begin, end, verify, setup_seconds,
                         world_bytes, nemesis, [s.port for s in servers])
    summary["server_side"] = server_latencies([s.log for s in servers])
    assert canary is not None
    ordered = sorted(canary.latencies)
    summary["canary_renew"] = {"n": len(ordered), "errors": len(canary.errors),
                               "error_samples": canary.errors[:5],
                               "p50_ms": round(_percentile(ordered, 0.5) * 1000, 1),
                               "p99_ms": round(_percentile(ordered, 0.99) * 1000, 1),
                               "max_ms": round((ordered[-1] if ordered else 0.0) * 1000, 1)}
    summary["errors"] += len(canary.errors)
    if not config.keep and config.work is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        summary["work"] = str(work)
    return summary


def server_latencies(logs: list[Path]) -> dict[str, dict[str, float]]:
    """p50/p99 per route from the coordinators' access logs (time spent inside the server,
    without the client's own queueing), and the count of each status."""
    times: dict[str, list[float]] = {}
    statuses: dict[str, int] = {}
    for raw in (raw for log in logs for raw in log.read_bytes().splitlines()):
        if b"peerhost_server.access" not in raw:
            continue
        parts = raw.decode("utf-8", "replace").split()
        try:
            at = parts.index("peerhost_server.access")
            method, path, status = parts[at + 1], parts[at + 2], parts[at + 3]
            ms = float(next(p for p in parts[at + 4:] if p.endswith("ms"))[:-2])
        except (ValueError, IndexError, StopIteration):
            continue
        tail = path.split("/", 4)[4] if path.startswith("/v1/sessions/") and path.count("/") >= 4 else path
        route = f"{method} {tail}"
        times.setdefault(route, []).append(ms)
        statuses[status] = statuses.get(status, 0) + 1
    out: dict[str, dict[str, float]] = {"statuses": {k: float(v) for k, v in sorted(statuses.items())}}
    for route, values in sorted(times.items()):
        values.sort()
        out[route] = {"n": float(len(values)), "p50_ms": round(_percentile(values, 0.5), 1),
                      "p99_ms": round(_percentile(values, 0.99), 1)}
    return out


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    stdout = proc.stdout
    assert stdout is not None
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


Opener = Callable[[str], AbstractContextManager[GraphLoader]]


def _opener(config: SoakConfig, data: Path) -> Opener:
    """How :func:`_verify` reads a session's objects: the LMDB store in the data folder, or
    (with ``config.objects``) the bucket through the index in the database, as every
    coordinator reads them; either way every object is re-hashed."""
    if config.objects is None:
        @contextmanager
        def lmdb_store(name: str) -> Iterator[GraphLoader]:
            store = LmdbStore(data / "sessions" / name / "store")
            try:
                yield store.objects
            finally:
                store.close()

        return lmdb_store
    from peerhost_server.backends import open_backends
    from peerhost_server.limits import Limits

    assert config.db is not None, "objects in a bucket are indexed in the database"
    db, objects = config.db, config.objects

    @contextmanager
    def bucket(name: str) -> Iterator[GraphLoader]:
        saved = os.environ.copy()
        os.environ.update(config.env)
        try:
            backends = open_backends(data.parent / "verify", clock=time.time, limits=Limits(),
                                     url=db, objects=objects)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        try:
            yield backends.objects.open(name)
        finally:
            backends.close()

    return bucket


def _verify(open_store: Opener, sessions: list[dict[str, Any]], results: list[dict[str, Any]],
            logs: dict[str, list[dict[str, Any]]], heads: dict[str, str | None]) -> dict[str, Any]:
    """Every acknowledged head in the log and reachable from the head; stores verify clean."""
    acked: dict[str, list[str]] = {s["session"]: [s["first_head"]] for s in sessions}
    seen: dict[str, set[str]] = {s["session"]: set() for s in sessions}
    for result in results:
        for name, values in result["acked"].items():
            acked[name] += values
        for name, values in result["seen"].items():
            seen[name].update(values)
    problems: list[str] = []
    lost_log = lost_chain = unknown_seen = 0
    objects = snapshots = 0
    for s in sessions:
        name = s["session"]
        logged = {e["new"] for e in logs[name]}
        missing = [h for h in acked[name] if h not in logged]
        lost_log += len(missing)
        if missing:
            problems.append(f"{name}: {len(missing)} acknowledged heads not in the log")
        strange = seen[name] - logged
        unknown_seen += len(strange)
        if strange:
            problems.append(f"{name}: readers were told {len(strange)} heads the log lacks")
        if heads[name] != acked[name][-1]:
            problems.append(f"{name}: the head {heads[name]} is not the last acknowledged "
                            f"{acked[name][-1]}")
        head = heads[name]
        if head is None:
            problems.append(f"{name}: no head")
            continue
        with open_store(name) as store:
            report = walk(store, [from_hex(head)])
        objects += report.objects
        snapshots += report.snapshots
        if not report.ok:
            problems.append(f"{name}: store problems: {report.problems[:3]}")
        unreachable = [h for h in acked[name] if from_hex(h) not in report.reachable]
        lost_chain += len(unreachable)
        if unreachable:
            problems.append(f"{name}: {len(unreachable)} acknowledged heads unreachable")
    return {"acknowledged": sum(len(v) for v in acked.values()),
            "lost_from_log": lost_log, "lost_from_chain": lost_chain,
            "reader_heads_unknown": unknown_seen, "stores_walked_objects": objects,
            "stores_walked_snapshots": snapshots, "problems": problems}


def _percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


def _growth(samples: list[dict[str, float]], key: str, start: float) -> dict[str, float]:
    """Least-squares slope of ``key`` over the samples from ``start``, as a % of its mean
    over that span."""
    points = [(s["t"], s[key]) for s in samples if s["t"] >= start and key in s]
    if len(points) < 3:
        return {"slope_bytes_per_s": 0.0, "growth_pct": 0.0}
    ts, vs = [p[0] for p in points], [p[1] for p in points]
    mt, mv = statistics.fmean(ts), statistics.fmean(vs)
    var = sum((t - mt) ** 2 for t in ts)
    slope = sum((t - mt) * (v - mv) for t, v in points) / var if var else 0.0
    span = ts[-1] - ts[0]
    return {"slope_bytes_per_s": round(slope, 1), "growth_pct": round(100 * slope * span / mv, 2)}


KILL_WINDOW = 10.0  # seconds after the kill in which a broken connection to it is expected


def _faults(results: list[dict[str, Any]], nemesis: Nemesis | None,
            ports: list[int]) -> tuple[list[list[Any]], dict[str, Any]]:
    """The connections that broke with a request on them that the kill explains (against
    the killed coordinator, within KILL_WINDOW after it), and a summary of the faults; a
    break it does not explain is an error of the summary's."""
    broken = [b for r in results for b in r.get("broken", [])]
    killed = nemesis.killed if nemesis is not None else None
    explained = [b for b in broken if killed is not None and b[0] == ports[-1]
                 and killed - 0.5 <= b[1] <= killed + KILL_WINDOW]
    info: dict[str, Any] = {
        "coordinators": len(ports),
        "killed_at_s": None, "restarted_after_s": None, "nemesis_error": None,
        "rerouted": sum(r.get("rerouted", 0) for r in results),
        "broken_connections": len(broken), "broken_explained": len(explained),
        "broken_unexplained": len(broken) - len(explained),
        "broken_unexplained_samples": [b for b in broken if b not in explained][:20],
    }
    if nemesis is not None:
        info["nemesis_error"] = nemesis.error
        info["killed_at_s"] = None if killed is None else round(killed - nemesis.begin, 2)
        if nemesis.restarted is not None and killed is not None:
            info["restarted_after_s"] = round(nemesis.restarted - killed, 2)
    return explained, info


def _summarize(config: SoakConfig, results: list[dict[str, Any]],
               samples: list[dict[str, float]], begin: float, end: float,
               verify: dict[str, Any], setup_seconds: float, world_bytes: int,
               nemesis: Nemesis | None = None, ports: list[int] | None = None) -> dict[str, Any]:
    ops = [op for r in results for op in r["ops"]]
    explained, faults = _faults(results, nemesis, ports or [])
    window = max(end, max((o[2] + o[3] for o in ops), default=end)) - begin
    kinds: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    expected: list[str] = []

    def was_expected(o: list[Any]) -> bool:
        """A CoordinatorUnavailable with a connection to the killed coordinator breaking
        during the operation (retried by the actor)."""
        return (str(o[4]).startswith("CoordinatorUnavailable")
                and any(o[2] - 0.05 <= b[1] <= o[2] + o[3] + 0.05 for b in explained))

    for kind in sorted({o[0] for o in ops}):
        mine = [o for o in ops if o[0] == kind]
        ok = sorted(o[3] for o in mine if o[4] is None)
        failed = [o for o in mine if o[4] is not None and not was_expected(o)]
        retried = [o for o in mine if o[4] is not None and was_expected(o)]
        errors += [f"{o[0]} {o[1]}: {o[4]}" for o in failed]
        expected += [f"{o[0]} {o[1]}: {o[4]}" for o in retried]
        kinds[kind] = {"ops": len(mine) - len(retried), "errors": len(failed),
                       "expected_errors": len(retried),
                       "per_s": round(len(mine) / config.seconds, 2),
                       "p50_ms": round(_percentile(ok, 0.5) * 1000, 1),
                       "p99_ms": round(_percentile(ok, 0.99) * 1000, 1),
                       "max_ms": round((ok[-1] if ok else 0.0) * 1000, 1)}
    wire = {k: sum(r["wire"][k] for r in results) for k in results[0]["wire"]} if results else {}
    mem: dict[str, Any] = {"samples": len(samples)}
    during = [s for s in samples if begin <= s["t"] <= end and "cpu_ms" in s]
    cpu = {"workers_seconds": round(sum(r["cpu_seconds"] for r in results), 1),
           "coordinator_seconds": round((during[-1]["cpu_ms"] - during[0]["cpu_ms"]) / 1000, 1)
           if len(during) > 1 else None,
           "cores": os.cpu_count()}
    half = begin + config.seconds / 2
    for key in ("VmRSS", "RssAnon", "RssFile"):
        values = [s[key] for s in samples if key in s and s["t"] >= begin]
        if not values:
            continue
        growth = _growth(samples, key, half)
        mem[key] = {"first_mib": round(values[0] / MiB, 1), "last_mib": round(values[-1] / MiB, 1),
                    "max_mib": round(max(values) / MiB, 1), **growth,
                    "flat": abs(growth["growth_pct"]) < 5.0}
    return {
        "config": {**{k: (str(v) if isinstance(v, Path) else v)
                      for k, v in asdict(config).items()}},
        "world_bytes": world_bytes,
        "setup_seconds": round(setup_seconds, 1),
        "window_seconds": round(window, 1),
        "kinds": kinds,
        "ops_total": len(ops),
        "errors": len(errors) + faults["broken_unexplained"]
        + (1 if faults["nemesis_error"] else 0),
        "error_samples": errors[:20],
        "expected_errors": len(expected),
        "expected_error_samples": expected[:10],
        "faults": faults,
        "stuck_threads": sum(r["stuck_threads"] for r in results),
        "wire_mib": {k: round(v / MiB, 2) for k, v in wire.items()},
        "wire_mib_per_s": {k: round(v / MiB / config.seconds, 3) for k, v in wire.items()},
        "verify": verify,
        "memory": mem,
        "cpu": cpu,
        "memory_series": [{"t": round(s["t"] - begin, 1),
                           **{k: round(v / MiB, 1) for k, v in s.items() if k.startswith(("Vm", "Rss"))}}
                          for s in samples],
    }


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"soak: {summary['config']['sessions']} sessions, "
                        f"{summary['config']['readers']} readers, "
                        f"{summary['config']['seconds']:g} s")
    for column in ("kind", "ops", "errors", "per s", "p50 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right" if column != "kind" else "left")
    for kind, row in summary["kinds"].items():
        table.add_row(kind, str(row["ops"]), str(row["errors"]), f"{row['per_s']:.2f}",
                      f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}", f"{row['max_ms']:.1f}")
    console.print(table)
    mem = Table(title="coordinator memory (MiB); growth over the second half")
    for column in ("", "first", "last", "max", "growth %", "flat"):
        mem.add_column(column, justify="right")
    for key in ("VmRSS", "RssAnon", "RssFile"):
        if key in summary["memory"]:
            m = summary["memory"][key]
            mem.add_row(key, f"{m['first_mib']:.1f}", f"{m['last_mib']:.1f}", f"{m['max_mib']:.1f}",
                        f"{m['growth_pct']:.2f}", "yes" if m["flat"] else "NO")
    console.print(mem)
    v = summary["verify"]
    if summary["faults"]["coordinators"] > 1:
        console.print(f"faults: {summary['faults']}; expected (retried) errors "
                      f"{summary['expected_errors']}")
    console.print(f"errors {summary['errors']}, acknowledged heads {v['acknowledged']}, lost from "
                  f"log {v['lost_from_log']}, lost from chain {v['lost_from_chain']}, stores "
                  f"walked: {v['stores_walked_objects']} objects, problems {len(v['problems'])}")
    console.print(f"wire MiB/s: {summary['wire_mib_per_s']}; CPU seconds: {summary['cpu']}")
    side = Table(title="inside the coordinator (access log)")
    for column in ("route", "n", "p50 ms", "p99 ms"):
        side.add_column(column, justify="right" if column != "route" else "left")
    for route, row in summary.get("server_side", {}).items():
        if route != "statuses" and row["n"] >= 10:
            side.add_row(route, f"{row['n']:.0f}", f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}")
    console.print(side)
    console.print(f"statuses: {summary.get('server_side', {}).get('statuses')}")
    console.print(f"canary renewals (a lone client in another process): {summary['canary_renew']}")
    for line in summary["error_samples"][:5] + v["problems"][:5]:
        console.print(f"  [red]{line}[/red]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--readers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--ttl", type=float, default=60.0)
    parser.add_argument("--work", type=Path, help="working folder (default: temporary)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--pg", action="store_true",
                        help="several coordinators on PostgreSQL (PHS_TEST_POSTGRES, a fresh schema)")
    parser.add_argument("--coordinators", type=int, default=3)
    parser.add_argument("--s3", action="store_true",
                        help="with --pg: the objects in one bucket of moto's S3 server")
    parser.add_argument("--kill-at", type=float, default=None,
                        help="seconds into the run: SIGKILL the last coordinator (--pg)")
    parser.add_argument("--restart-after", type=float, default=5.0,
                        help="seconds after the kill: start it again (negative: stays down)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON (default benchmarks/results/soak.json, soak_pg.json with --pg)")
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker_main(args.worker)
        return 0
    config = SoakConfig(sessions=args.sessions, readers=args.readers, seconds=args.seconds,
                        workers=args.workers, ttl=args.ttl, work=args.work, keep=args.keep)
    out = args.out or ROOT / "benchmarks" / "results" / ("soak_pg.json" if args.pg else "soak.json")
    if args.pg:
        sys.path.insert(0, str(ROOT / "tests"))
        from pgutil import fresh_schema, unreachable

        why = unreachable()
        if why is not None:
            print(why, file=sys.stderr)
            return 2
        config.coordinators, config.kill_at = args.coordinators, args.kill_at
        config.restart_after = args.restart_after if args.restart_after >= 0 else None
        from s3util import s3_server

        with fresh_schema(migrate=False) as url, \
                (s3_server(process=True) if args.s3 else nullcontext()) as s3:
            config.db = url
            if s3 is not None:
                config.objects, config.env = f"s3://{s3.new_bucket()}/phs", s3.env
            summary = run_soak(config)
    else:
        summary = run_soak(config)
    print_summary(summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    ok = (summary["errors"] == 0 and not summary["verify"]["problems"]
          and summary["stuck_threads"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
