"""Jepsen-style lease testing: a client driver that records a history, and a pure checker.

Run as a script, this module is one client (``python jepsen.py URL SESSION TOKEN CONFIG``;
``URL`` may be several, comma-separated: each request then goes to one of them at random, as
behind a load balancer in front of several coordinators): it
acquires the session lease, renews it, pushes tiny snapshots (read the head, upload, set_head)
and releases it, for a bounded time, writing one JSON line per operation.

Every operation records two clocks:

* ``t0``/``t1``: ``time.monotonic()`` before sending and after the answer. On Linux that is
  CLOCK_MONOTONIC, one clock for every process of the machine, the coordinator included: the
  observer's clock (Jepsen's control node). Safety judgments use it only to order operations
  in real time (a grant acknowledged before a push started), which is sound whatever the
  clients believe.
* ``w0``/``w1``: the client's own, skewed clock (an offset and a rate). The client decides when
  to renew on it, so a slow clock acts on leases that expired; the checker only reports it.

The checker (:func:`check`) judges a history against the coordinator's own answers: its log of
head moves, the final head and the chain of snapshot parents read back from it.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx

from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import (
    DirEntry,
    EntryKind,
    Snapshot,
    encode_blob,
    encode_dir_leaf,
    encode_snapshot,
)
from peerhost_store.sync.client import (
    CoordinatorClient,
    CoordinatorError,
    CoordinatorUnavailable,
    Lease,
)

T = TypeVar("T")

#: Seconds of slack when judging that a lease had surely expired (float rounding, nothing else:
#: the judgment compares times that bound the coordinator's own clock readings).
STALE_SLACK = 0.05

OK, FAIL, INFO = "ok", "fail", "info"  # done; definitely not done; maybe done (no answer)


# -- history ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One operation of one client.

    Attributes:
        client: the client's number; its member is ``member_name(client)``.
        op: ``acquire``, ``renew``, ``release``, ``read_head``, ``upload`` or ``set_head``.
        t0: observer time (CLOCK_MONOTONIC) before the request was sent.
        t1: observer time after the answer (or the failure) came back.
        w0: the client's skewed clock at ``t0`` (reporting only).
        w1: the client's skewed clock at ``t1`` (reporting only).
        result: ``ok``, ``fail`` (refused: nothing happened) or ``info`` (no answer: it may
            or may not have happened).
        code: the error code when not ok.
        fencing: the token the operation used, or the one an acquire was granted.
        ttl: the lease's ttl (acquire and renew).
        old: set_head's expected head (hex or None); read_head's answer.
        new: set_head's new head (hex).
    """

    client: int
    op: str
    t0: float
    t1: float
    w0: float
    w1: float
    result: str
    code: str | None = None
    fencing: int | None = None
    ttl: float | None = None
    old: str | None = None
    new: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Op:
        return cls(**data)


@dataclass(frozen=True)
class Fault:
    """One fault the nemesis injected, on the observer's clock.

    Attributes:
        kind: ``pause`` (SIGSTOP then SIGCONT of ``client``) or ``restart`` (SIGKILL of the
            coordinator, then a new process on the same data and port; ``t1`` is when it
            answered again). With several coordinators on PostgreSQL (where lease expiry is
            persisted, so no fault hides it): ``kill`` (SIGKILL of coordinator ``client``
            while the others serve, restarted by ``t1``), ``db_down`` (the database cut
            off from every coordinator from ``t0`` to ``t1``) and ``bucket_down`` (the
            bucket the objects are in unreachable from ``t0`` to ``t1``).
    """

    kind: str
    t0: float
    t1: float
    client: int | None = None


@dataclass(frozen=True)
class Move:
    """A head move in the coordinator's log, in log order."""

    member: str
    old: str | None
    new: str
    fencing: int | None

    @classmethod
    def from_log(cls, entry: dict[str, Any]) -> Move:
        return cls(entry["member"], entry["old"], entry["new"], entry.get("fencing"))


def member_name(client: int) -> str:
    return f"c{client}"


def load_history(paths: Iterable[Path]) -> list[Op]:
    """Every client's operations, ordered by start on the observer's clock."""
    ops = [Op.from_json(json.loads(line)) for path in paths
           for line in path.read_text().splitlines() if line.strip()]
    return sorted(ops, key=lambda o: o.t0)


# -- checker ------------------------------------------------------------------------------


@dataclass
class Report:
    """What the checker looked at and what it found.

    Attributes:
        checks: check name -> how many facts it verified.
        violations: one line per broken rule (empty when the history is safe).
        stats: counts for the report (operations, results, faults, stale pushes...).
    """

    checks: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def expect(self, name: str, ok: bool, message: str) -> None:
        self.checks[name] += 1
        if not ok:
            self.violations.append(f"{name}: {message}")


def check(ops: list[Op], faults: list[Fault], log: list[Move], chain: list[str],
          final_head: str | None) -> Report:
    """Judge a history.

    Args:
        ops: every client operation.
        faults: every fault injected.
        log: the coordinator's log of head moves, oldest first (complete, not truncated).
        chain: snapshot ids from the root to the final head, following each snapshot's
            parent, as read back from the coordinator.
        final_head: the session head at the end.

    Rules:
        chain: the moves form one chain from no head to the final head, and the snapshots'
            parents agree with it.
        acked_kept: every acknowledged set_head is in the log (same old, new and token) and
            its snapshot is in the final chain: nothing acknowledged is lost.
        no_phantom: every logged move was attempted by the member the log names, with that
            token, and was not refused to it.
        tokens: granted tokens are unique, and a grant acknowledged before another was asked
            for has the smaller token.
        log_tokens: tokens of logged moves never decrease and were granted to that member.
        fenced_out: no move landed with a token if a larger token's grant was acknowledged
            before the move was sent (two holders' pushes never both land).
        stale_refused: no move landed when its token's last grant or renewal had answered
            more than ttl before the move was sent (paused or slow-clocked holders), unless a
            coordinator restart or an unanswered renewal leaves the expiry unknown.
    """
    report = Report()
    _check_chain(report, log, chain, final_head)
    attempts = {o.new: o for o in ops if o.op == "set_head" and o.new is not None}
    landed = _check_moves(report, ops, log, chain, attempts)
    grants = [o for o in ops if o.op == "acquire" and o.result == OK and o.fencing is not None]
    _check_tokens(report, grants, log)
    _check_fenced_out(report, grants, landed)
    stale = _check_stale(report, ops, faults, landed)
    report.stats = _stats(ops, faults, log, stale, landed)
    return report


def _check_chain(report: Report, log: list[Move], chain: list[str],
                 final_head: str | None) -> None:
    previous: str | None = None
    for i, move in enumerate(log):
        report.expect("chain", move.old == previous,
                      f"move {i} goes from {move.old} but the head was {previous}")
        previous = move.new
    report.expect("chain", final_head == previous,
                  f"the final head {final_head} is not the last move's {previous}")
    report.expect("chain", chain == [m.new for m in log],
                  "the snapshot parents do not follow the logged moves")


def _check_moves(report: Report, ops: list[Op], log: list[Move], chain: list[str],
                 attempts: dict[str, Op]) -> list[tuple[Move, Op]]:
    """acked_kept and no_phantom; return each logged move with the attempt that made it."""
    logged = {m.new: m for m in log}
    in_chain = set(chain)
    for o in ops:
        if o.op != "set_head" or o.result != OK or o.new is None:
            continue
        move = logged.get(o.new)
        report.expect("acked_kept", move is not None and (move.old, move.fencing, move.member)
                      == (o.old, o.fencing, member_name(o.client)),
                      f"acknowledged move to {o.new} by client {o.client} is not logged")
        report.expect("acked_kept", o.new in in_chain,
                      f"acknowledged snapshot {o.new} is not in the final chain")
    landed = []
    for move in log:
        attempt = attempts.get(move.new)
        report.expect("no_phantom", attempt is not None and attempt.result != FAIL
                      and (attempt.old, attempt.fencing, member_name(attempt.client))
                      == (move.old, move.fencing, move.member),
                      f"logged move to {move.new} matches no unrefused attempt "
                      f"({attempt})")
        if attempt is not None:
            landed.append((move, attempt))
    return landed


def _check_tokens(report: Report, grants: list[Op], log: list[Move]) -> None:
    tokens = Counter(g.fencing for g in grants)
    for token, n in tokens.items():
        report.expect("tokens", n == 1, f"token {token} was granted {n} times")
    by_end = sorted(grants, key=lambda g: g.t1)
    # For each grant, the largest token among grants acknowledged before it was asked for.
    best: int | None = None
    j = 0
    for g in sorted(grants, key=lambda g: g.t0):
        while j < len(by_end) and by_end[j].t1 < g.t0:
            token = by_end[j].fencing
            assert token is not None
            best = token if best is None else max(best, token)
            j += 1
        report.expect("tokens", best is None or (g.fencing or 0) > best,
                      f"token {g.fencing} (client {g.client}) granted after {best}")
    granted = {(member_name(g.client), g.fencing) for g in grants}
    previous = 0
    for move in log:
        token = move.fencing or 0
        report.expect("log_tokens", token >= previous,
                      f"move to {move.new} with token {token} after token {previous}")
        report.expect("log_tokens", (move.member, move.fencing) in granted,
                      f"move to {move.new}: token {move.fencing} never granted to "
                      f"{move.member}")
        previous = max(previous, token)


def _check_fenced_out(report: Report, grants: list[Op], landed: list[tuple[Move, Op]]) -> None:
    for move, attempt in landed:
        token = move.fencing or 0
        later = [g for g in grants if (g.fencing or 0) > token and g.t1 < attempt.t0]
        first = later[0] if later else None
        report.expect("fenced_out", first is None,
                      f"move to {move.new} with token {token} landed although token "
                      f"{first and first.fencing} was granted to client "
                      f"{first and first.client} before it was sent")


def _check_stale(report: Report, ops: list[Op], faults: list[Fault],
                 landed: list[tuple[Move, Op]]) -> dict[str, Any]:
    """stale_refused; return counts of stale attempts by how they were answered."""
    restarts = [f for f in faults if f.kind == "restart"]
    pauses = [f for f in faults if f.kind == "pause"]
    keeps = [o for o in ops if o.op in ("acquire", "renew") and o.result != FAIL]
    landed_new = {m.new for m, _ in landed}
    results: Counter[str] = Counter()
    after_pause: Counter[str] = Counter()
    for o in ops:
        if o.op != "set_head" or o.fencing is None:
            continue
        before = [k for k in keeps if k.client == o.client and k.fencing == o.fencing
                  and k.t0 < o.t0]
        if not before:
            continue
        last = max(before, key=lambda k: k.t0)
        if last.result != OK or last.ttl is None or o.t0 <= last.t1 + last.ttl + STALE_SLACK:
            continue
        if any(k.result == INFO for k in before):
            continue  # an unanswered renewal may have been applied at any time
        if any(r.t0 < o.t0 and r.t1 > last.t0 for r in restarts):
            continue  # a restart re-grants persisted leases for a ttl: expiry unknown
        results[o.code or o.result] += 1
        if any(p.client == o.client and last.t1 <= p.t0 and p.t1 <= o.t0 for p in pauses):
            after_pause[o.code or o.result] += 1
        report.expect("stale_refused", o.new not in landed_new,
                      f"client {o.client}'s move to {o.new} with token {o.fencing} "
                      f"landed {o.t0 - last.t1:.2f} s after its lease (ttl {last.ttl}) was "
                      "last renewed")
    return {"stale_attempts": dict(results), "stale_after_pause": dict(after_pause)}


def _stats(ops: list[Op], faults: list[Fault], log: list[Move], stale: dict[str, Any],
           landed: list[tuple[Move, Op]]) -> dict[str, Any]:
    by_op: dict[str, Counter[str]] = {}
    for o in ops:
        by_op.setdefault(o.op, Counter())[o.code or o.result] += 1
    moves = [o for o in ops if o.op == "set_head"]
    return {
        "operations": len(ops),
        "operations_by_kind": {k: dict(v) for k, v in sorted(by_op.items())},
        "head_moves_logged": len(log),
        "head_moves_acknowledged": sum(o.result == OK for o in moves),
        "head_moves_unanswered_landed": sum(a.result == INFO for _, a in landed),
        "head_moves_refused": dict(Counter(o.code for o in moves if o.result == FAIL)),
        "grants": sum(o.op == "acquire" and o.result == OK for o in ops),
        "faults": dict(Counter(f.kind for f in faults)),
        **stale,
    }


# -- client driver ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientConfig:
    """One client's behaviour.

    Attributes:
        client: its number (member ``c<client>``).
        out: the JSON-lines history file it writes.
        seed: its random seed.
        duration: seconds it runs (bounded: it stops starting operations afterwards).
        ttl: the lease ttl it asks for.
        skew: its clock's offset from the wall clock, in seconds.
        rate: how fast its clock runs (1.0 true; below 1 it renews late).
        stall: chance per step of stalling past the ttl before pushing (late on purpose).
    """

    client: int
    out: str
    seed: int
    duration: float
    ttl: float
    skew: float = 0.0
    rate: float = 1.0
    stall: float = 0.0


class SkewedClock:
    """The client's own clock: an offset, and a rate relative to real time."""

    def __init__(self, skew: float, rate: float) -> None:
        self.start_real = time.monotonic()
        self.start = time.time() + skew
        self.rate = rate

    def now(self) -> float:
        return self.start + (time.monotonic() - self.start_real) * self.rate


class Recorder:
    """Runs operations and appends each, answered or not, to the history file."""

    def __init__(self, cfg: ClientConfig, clock: SkewedClock) -> None:
        self.cfg = cfg
        self.clock = clock
        self.file = open(cfg.out, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def close(self) -> None:
        self.file.close()

    def call(self, op: str, fn: Callable[[], T], *,
             answered: Callable[[Any], dict[str, Any]] | None = None,
             **fields: Any) -> tuple[T | None, Op]:
        """Run ``fn`` and record it with ``fields``, and ``answered(value)`` when it succeeded."""
        t0, w0 = time.monotonic(), self.clock.now()
        value: T | None = None
        result, code = OK, None
        try:
            value = fn()
        except CoordinatorUnavailable as exc:
            result, code = INFO, exc.code
        except CoordinatorError as exc:
            # A 5xx may have been answered after the change was made: maybe done.
            result, code = (INFO if exc.status >= 500 else FAIL), exc.code
        except Exception as exc:  # noqa: BLE001 (recorded: a malformed answer is maybe-done)
            result, code = INFO, f"exception:{type(exc).__name__}"
        t1, w1 = time.monotonic(), self.clock.now()
        if value is not None and answered is not None:
            fields.update(answered(value))
        record = Op(self.cfg.client, op, t0, t1, w0, w1, result, code, **fields)
        self.file.write(json.dumps(asdict(record)) + "\n")
        self.file.flush()
        return value, record


def tiny_snapshot(client: int, n: int, parent: ObjectId | None,
                  salt: int) -> tuple[list[bytes], ObjectId]:
    """A one-file world whose snapshot's parent is ``parent``: (objects, snapshot id)."""
    data = f"client {client} push {n} salt {salt}".encode()
    blob = encode_blob(data)
    root = encode_dir_leaf([DirEntry("level.dat", EntryKind.FILE, hash_bytes(blob), len(data))])
    snap = encode_snapshot(Snapshot(hash_bytes(root), () if parent is None else (parent,),
                                    int(time.time()), member_name(client), f"host{client}",
                                    f"push {n}", {}))
    return [blob, root, snap], hash_bytes(snap)


class Spread(httpx.BaseTransport):
    """Sends each request to one of ``urls``, chosen at random (several coordinators behind
    one URL)."""

    def __init__(self, urls: list[str], rng: random.Random) -> None:
        self._inner = httpx.HTTPTransport()
        self._targets = [httpx.URL(u) for u in urls]
        self._rng = rng

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        target = self._rng.choice(self._targets)
        request.url = request.url.copy_with(scheme=target.scheme, host=target.host,
                                            port=target.port)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def _granted(lease: Lease) -> dict[str, Any]:
    return {"fencing": lease.fencing}


def run_client(url: str, session: str, token: str, cfg: ClientConfig) -> None:
    """Acquire, renew, push and release until ``cfg.duration`` has passed."""
    rng = random.Random(cfg.seed)
    clock = SkewedClock(cfg.skew, cfg.rate)
    rec = Recorder(cfg, clock)
    deadline = time.monotonic() + cfg.duration
    pushes = 0
    urls = url.split(",")
    spread = Spread(urls, random.Random(cfg.seed + 1)) if len(urls) > 1 else None
    with httpx.Client(base_url=urls[0], timeout=5.0, transport=spread) as http:
        client = CoordinatorClient(http, session, token)
        for _ in range(100_000):  # bounded in count as well as in time
            if time.monotonic() >= deadline:
                break
            lease, op = rec.call("acquire", partial(client.acquire, f"host{cfg.client}", cfg.ttl),
                                 answered=_granted, ttl=cfg.ttl)
            if not isinstance(lease, Lease):
                time.sleep(rng.uniform(0.05, 0.3))
                continue
            fencing = lease.fencing
            renewed_at = clock.now()
            for _step in range(rng.randint(2, 8)):
                if time.monotonic() >= deadline:
                    break
                if clock.now() - renewed_at >= cfg.ttl * 0.5:  # on its own (skewed) clock
                    renewal, op = rec.call("renew", partial(client.renew, fencing),
                                           fencing=fencing, ttl=cfg.ttl)
                    if op.result == FAIL:
                        break
                    if renewal is not None:
                        renewed_at = clock.now()
                # The world is saved between the lease check and the push: a pause or a stall
                # here makes the push act on a lease that may have expired.
                time.sleep(rng.uniform(0.05, 0.3))
                if rng.random() < cfg.stall:
                    time.sleep(cfg.ttl * rng.uniform(1.1, 1.6))  # late on purpose
                head, op = rec.call("read_head", client.head)
                if head is None:
                    time.sleep(0.2)
                    continue
                pushes += 1
                objects, new = tiny_snapshot(cfg.client, pushes, head.head, rng.getrandbits(32))
                _, op = rec.call("upload", partial(client.upload, objects))
                if op.result != OK:
                    time.sleep(0.2)
                    continue
                old = head.head
                _, op = rec.call("set_head", partial(client.set_head, old, new, fencing),
                                 fencing=fencing, old=None if old is None else old.hex(),
                                 new=new.hex())
                if op.code in ("fenced", "lease_lost"):
                    break
            rec.call("release", partial(client.release, fencing), fencing=fencing)
            time.sleep(rng.uniform(0.1, 0.5))  # let the others in
    rec.close()


def main(argv: list[str]) -> None:
    url, session, token, config = argv
    run_client(url, session, token, ClientConfig(**json.loads(config)))


if __name__ == "__main__":
    main(sys.argv[1:])
