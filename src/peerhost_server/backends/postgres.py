"""The coordination state in PostgreSQL, shared by several coordinator processes.

``postgresql://`` URLs (``phs serve --db postgresql://user@host/db``): sessions, members and
hashed tokens, lease state, heads, the head log, completeness marks and retention settings are
rows of the tables :data:`MIGRATIONS` create (in the first schema of the connection's
``search_path``). Objects stay in the embedded per-session stores of the data folder
(:class:`~.lmdb.LmdbObjectStores`) until an object backend shared by every coordinator is
chosen beside it.

Nothing is kept in this process that another could contradict:

* a lease work (:meth:`PgLeases.work`) is one transaction that starts by locking the
  session's ``leases`` row (``SELECT ... FOR UPDATE``) and reads the time from the database
  (``clock_timestamp()``) once it holds it. Grants, renewals, fencing checks and head moves of
  one session are so serialised across coordinators, fencing tokens only grow (the counter is
  in the locked row), and expiry is judged on one clock, the database's: a coordinator's clock
  does not matter, and a lease outlives the coordinator that granted it with its real expiry;
* the head compare-and-swap is in that transaction, with the fencing check;
* tokens are looked up on every request (no cache to invalidate);
* the dashboard's web sessions are rows (``web_sessions``, keyed by a hash of the cookie),
  their expiry judged on the database's clock: a browser signed in through one coordinator
  is signed in through all, and signed out of all at once;
* the head lock (gc against head moves) is a transaction-scoped advisory lock.

A failure of the database (down, restarting, a connection cut) is a
:class:`~peerhost_store.errors.StoreError` chained to psycopg's error; :meth:`classify` makes
it 503 ``unavailable`` with ``Retry-After``. A change is acknowledged only after its commit
returned, so an unanswered request may or may not have happened, and an answered one is
durable (PostgreSQL's ``synchronous_commit``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from peerhost_store.bounds import Summary
from peerhost_store.errors import StoreError
from peerhost_store.ids import ObjectId
from peerhost_store.retention import RetentionPolicy

from ..auth import ADMIN, MEMBER, OWNER, Identity, NewToken, same_digest
from ..domain.errors import (
    DomainError,
    HeadMoved,
    MemberExists,
    NoMember,
    NoSession,
    SessionExists,
    Unavailable,
)
from ..domain.protocols import (
    Indexed,
    LeaseWork,
    SessionInfo,
    SessionSettings,
    WebSession,
    WouldBlock,
)
from ..leases import SessionLease
from ..limits import Limits
from .lmdb import LmdbObjectStores

__all__ = ["MIGRATIONS", "PgBackends", "PgObjectIndex", "SchemaOutdated", "migrate",
           "open_postgres", "schema_version"]

T = TypeVar("T")

#: Seconds a request waits for a pooled connection before it is answered 503.
POOL_WAIT = 5.0
#: Seconds a new connection may take.
CONNECT_SECONDS = 3
#: libpq options of every pooled connection: a database that vanishes without closing its
#: connections (a host down, a network cut) fails a request within seconds rather than at
#: the operating system's TCP timeout, minutes later.
CONNECTION_OPTIONS: dict[str, Any] = {
    "connect_timeout": CONNECT_SECONDS, "keepalives": 1, "keepalives_idle": 5,
    "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 10_000,
}
#: Seconds the pool keeps retrying a connection that failed before it gives up (the next
#: request that needs one tries again at once).
RECONNECT_SECONDS = 2.0
#: Connections one coordinator keeps at most (three coordinators: 48 of PostgreSQL's 100).
POOL_MAX = 16
#: What a client is told to wait before retrying when the database is unavailable.
RETRY_AFTER = 2
#: The first key of the advisory locks this module takes (the second: the session's hash).
HEAD_LOCK_CLASS = 0x7068  # "ph"
MIGRATE_LOCK = (HEAD_LOCK_CLASS, 0)

#: What the database failing (rather than a bug) raises: connections refused or cut, the
#: server shutting down or terminating backends, a pool with no connection to give.
TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


def _migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of each ``migrations/NNNN_*.sql`` of the package, in order."""
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_[a-z0-9_]+\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


#: The schema migrations, (version, file name, SQL), oldest first.
MIGRATIONS = _migrations()
LATEST = MIGRATIONS[-1][0]


class SchemaOutdated(StoreError):
    """The database's schema is not the one this coordinator needs; nothing was changed."""

    def __init__(self, where: str, found: int) -> None:
        self.found = found
        super().__init__(f"the database {where} has schema version {found}, this coordinator "
                         f"needs {LATEST}: apply the migrations with phs serve --db ... "
                         "--migrate (once, from one coordinator)")


def describe(url: str) -> str:
    """Where ``url`` points, for messages: host, port, database, never a password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unreadable postgresql URL)"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def _failed(what: str, url: str, exc: BaseException) -> StoreError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreError(f"{what} at {describe(url)} failed: {first}")


def schema_version(url: str) -> int:
    """The schema version of the database ``url`` names (0: no schema yet).

    Raises:
        StoreError: it cannot be reached.
    """
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_SECONDS) as conn:
            return _version(conn)
    except psycopg.Error as exc:
        raise _failed("reading the schema version", url, exc) from exc


def _version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    got = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return 0 if got is None else int(got[0])


def migrate(url: str) -> list[str]:
    """Apply the migrations the database lacks, each in its own transaction with its
    ``schema_version`` row, under an advisory lock (two coordinators started with
    ``--migrate`` at once apply each one once). Returns the names applied.

    Raises:
        StoreError: the database cannot be reached, or a migration failed (that one and those
            after it are not applied).
    """
    applied: list[str] = []
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_SECONDS) as conn:
            conn.execute("SELECT pg_advisory_lock(%s, %s)", MIGRATE_LOCK)
            conn.commit()
            try:
                with conn.transaction():
                    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer "
                                 "PRIMARY KEY, name text NOT NULL, applied timestamptz NOT "
                                 "NULL DEFAULT now())")
                current = _version(conn)
                for version, name, sql in MIGRATIONS:
                    if version <= current:
                        continue
                    with conn.transaction():
                        conn.execute(sql.encode())  # no parameters: several statements
                        conn.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                                     (version, name))
                    applied.append(name)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", MIGRATE_LOCK)
                conn.commit()
    except psycopg.Error as exc:
        raise _failed("migrating the database", url, exc) from exc
    return applied


class _Pg:
    """The connection pool, and transactions whose database failures are StoreErrors."""

    def __init__(self, url: str, max_size: int = POOL_MAX, wait: float = POOL_WAIT) -> None:
        self.url = url
        # Each checkout is checked (one round trip), so a connection cut by a restart of
        # PostgreSQL is replaced instead of failing the request that draws it. A failed
        # reconnection is given up after a few seconds (psycopg's default: 5 minutes, backing
        # off to a minute between tries), so the first request after the database is back
        # connects at once instead of waiting out the backoff.
        self.pool = ConnectionPool(url, min_size=1, max_size=max_size, timeout=wait,
                                   reconnect_timeout=RECONNECT_SECONDS,
                                   kwargs=CONNECTION_OPTIONS,
                                   check=ConnectionPool.check_connection, open=False,
                                   name="peerhost")
        self.pool.open(wait=False)

    @contextmanager
    def tx(self) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor in a transaction, committed when the block ends, rolled back when it
        raises."""
        try:
            with self.pool.connection() as conn, conn.cursor() as cur:
                yield cur
        except (psycopg.Error, PoolTimeout) as exc:
            raise _failed("a transaction of the coordinator's database", self.url, exc
                          ) from exc

    def close(self) -> None:
        self.pool.close()


class PgBackends:
    """Every protocol of :mod:`peerhost_server.domain.protocols` in the database ``url``
    (its schema at :data:`LATEST`), with ``objects`` beside it.

    Args:
        now: the clock leases are judged on; None (the default, and what a deployment
            uses) for the database's ``clock_timestamp()``. Tests pass their fake clock.
        pool_max: connections kept at most.
        pool_wait: seconds a request waits for a connection (the database down: then 503).

    Raises:
        StoreError: the database cannot be reached; SchemaOutdated.
    """

    loop_safe = False  # every read is a round trip to the database

    def __init__(self, url: str, *, objects: LmdbObjectStores, limits: Limits,
                 now: Callable[[], float] | None = None, pool_max: int = POOL_MAX,
                 pool_wait: float = POOL_WAIT) -> None:
        found = schema_version(url)
        if found != LATEST:
            raise SchemaOutdated(describe(url), found)
        self._db = _Pg(url, pool_max, pool_wait)
        self.directory = PgDirectory(self._db, now)
        self.leases = PgLeases(self._db, limits.standby_window, now)
        self.log = self.leases
        self.marks = PgMarks(self._db)
        self.retention = PgRetention(self._db)
        self.objects = objects
        self._closed = False

    def object_index(self, session: str) -> PgObjectIndex:
        """The index of ``session``'s objects kept elsewhere (``--objects s3://...``), in the
        tables ``object_index`` and ``object_uploads``: shared by every coordinator."""
        return PgObjectIndex(self._db, session)

    def classify(self, exc: BaseException) -> DomainError | None:
        """The database down or failing a transaction it may retry: 503 with Retry-After.
        Nothing this request changed was acknowledged (commits return before the answer)."""
        if isinstance(exc, StoreError) and isinstance(exc.__cause__, TRANSIENT):
            return Unavailable("the coordinator's database is unavailable", RETRY_AFTER)
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._db.close()
        self.objects.close()


def open_postgres(data_dir: Path, *, clock: Callable[[], float], limits: Limits,
                  url: str) -> PgBackends:
    """The opener :func:`peerhost_server.backends.open_backends` calls for ``postgresql:``
    (and ``postgres:``) URLs: the coordination state there, the objects in ``data_dir``."""
    return PgBackends(url, objects=LmdbObjectStores(data_dir / "sessions"), limits=limits)


# -- sessions, members, tokens ----------------------------------------------------------------


def _put_token(cur: psycopg.Cursor[Any], token: NewToken, role: str, session: str | None,
               member: str) -> None:
    cur.execute("INSERT INTO tokens (token_id, digest, role, session, member) "
                "VALUES (%s, %s, %s, %s, %s)", (token.token_id, token.digest, role, session, member))


def _clock(cur: psycopg.Cursor[Any], now: Callable[[], float] | None) -> float:
    """``now()``, or (None: what a deployment uses) the database's clock, in seconds."""
    if now is not None:
        return now()
    cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
    row = cur.fetchone()
    assert row is not None
    return float(row[0])


class PgDirectory:
    """Tables ``admin``, ``tokens``, ``sessions``, ``members`` and ``web_sessions`` (their
    expiry on the clock ``now``, None: the database's)."""

    def __init__(self, db: _Pg, now: Callable[[], float] | None = None) -> None:
        self._db = db
        self._now = now

    def init_admin(self, token: NewToken) -> bool:
        with self._db.tx() as cur:
            cur.execute("INSERT INTO admin (token_id) VALUES (%s) ON CONFLICT DO NOTHING "
                        "RETURNING token_id", (token.token_id,))
            if cur.fetchone() is None:
                return False
            _put_token(cur, token, ADMIN, None, ADMIN)
            return True

    def identify(self, token_id: str, digest: str) -> Identity | None:
        with self._db.tx() as cur:
            cur.execute("SELECT digest, role, session, member FROM tokens WHERE token_id = %s",
                        (token_id,))
            row = cur.fetchone()
        if row is None or not same_digest(row[0], digest):
            return None
        return Identity(token_id, row[1], row[2], row[3])

    def session(self, name: str) -> SessionInfo | None:
        with self._db.tx() as cur:
            cur.execute("SELECT created, settings FROM sessions WHERE name = %s", (name,))
            row = cur.fetchone()
            if row is None:
                return None
            cur.execute("SELECT name FROM members WHERE session = %s ORDER BY seq", (name,))
            members = tuple(m for (m,) in cur.fetchall())
        return SessionInfo(name, int(row[0]), members, SessionSettings(**row[1]))

    def session_names(self) -> list[str]:
        with self._db.tx() as cur:
            cur.execute("SELECT name FROM sessions ORDER BY seq")
            return [name for (name,) in cur.fetchall()]

    def create_session(self, name: str, owner: NewToken, created: int) -> None:
        with self._db.tx() as cur:
            cur.execute("INSERT INTO sessions (name, created, owner_token) VALUES (%s, %s, %s) "
                        "ON CONFLICT DO NOTHING RETURNING name", (name, created, owner.token_id))
            if cur.fetchone() is None:
                raise SessionExists(name)
            _put_token(cur, owner, OWNER, name, OWNER)

    def add_member(self, session: str, name: str, token: NewToken) -> None:
        with self._db.tx() as cur:
            cur.execute("SELECT 1 FROM sessions WHERE name = %s FOR SHARE", (session,))
            if cur.fetchone() is None:
                raise NoSession(session)
            cur.execute("INSERT INTO members (session, name, token_id) VALUES (%s, %s, %s) "
                        "ON CONFLICT DO NOTHING RETURNING name", (session, name, token.token_id))
            if cur.fetchone() is None:
                raise MemberExists(session, name)
            _put_token(cur, token, MEMBER, session, name)

    def set_settings(self, session: str, settings: SessionSettings) -> None:
        with self._db.tx() as cur:
            cur.execute("UPDATE sessions SET settings = %s WHERE name = %s RETURNING name",
                        (Jsonb(asdict(settings)), session))
            if cur.fetchone() is None:
                raise NoSession(session)


    def create_web_session(self, key: str, token_id: str, digest: str, csrf: str, *,
                           seconds: float, keep: int) -> None:
        with self._db.tx() as cur:
            # One creation at a time across coordinators, so the count stays bounded (reads
            # are not blocked; a sign-in is rare).
            cur.execute("LOCK TABLE web_sessions IN SHARE ROW EXCLUSIVE MODE")
            now = _clock(cur, self._now)
            cur.execute("DELETE FROM web_sessions WHERE expires <= %s", (now,))
            cur.execute("DELETE FROM web_sessions WHERE key IN (SELECT key FROM web_sessions "
                        "ORDER BY seq DESC OFFSET %s)", (max(keep - 1, 0),))
            cur.execute("INSERT INTO web_sessions (key, token_id, digest, csrf, expires) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        (key, token_id, digest, csrf, now + seconds))

    def web_session(self, key: str) -> WebSession | None:
        with self._db.tx() as cur:
            cur.execute("SELECT token_id, digest, csrf, expires, "
                        "extract(epoch FROM clock_timestamp())::float8 "
                        "FROM web_sessions WHERE key = %s", (key,))
            row = cur.fetchone()
            if row is None:
                return None
            now = self._now() if self._now is not None else float(row[4])
            if float(row[3]) <= now:
                cur.execute("DELETE FROM web_sessions WHERE key = %s", (key,))
                return None
        return WebSession(row[0], row[1], row[2], float(row[3]))

    def drop_web_session(self, key: str) -> None:
        with self._db.tx() as cur:
            cur.execute("DELETE FROM web_sessions WHERE key = %s", (key,))


def _member_token(cur: psycopg.Cursor[Any], session: str, member: str, *, delete: bool) -> str:
    """The member's token id (deleting the member with ``delete``).

    Raises:
        NoSession, NoMember.
    """
    if delete:
        cur.execute("DELETE FROM members WHERE session = %s AND name = %s RETURNING token_id",
                    (session, member))
    else:
        cur.execute("SELECT token_id FROM members WHERE session = %s AND name = %s",
                    (session, member))
    row = cur.fetchone()
    if row is None:
        cur.execute("SELECT 1 FROM sessions WHERE name = %s", (session,))
        if cur.fetchone() is None:
            raise NoSession(session)
        raise NoMember(session, member)
    return str(row[0])


# -- leases, heads, the log -------------------------------------------------------------------


class _Work:
    """A :class:`~peerhost_server.domain.protocols.LeaseWork` inside the transaction that
    holds the session's lease row."""

    __slots__ = ("_cur", "head", "now", "revoked", "session", "state")

    def __init__(self, cur: psycopg.Cursor[Any], session: str, state: SessionLease,
                 now: float) -> None:
        self._cur, self.session, self.state, self.now = cur, session, state, now
        self.head: tuple[ObjectId | None, ObjectId, dict[str, Any], dict[ObjectId, Summary]] \
            | None = None
        self.revoked: str | None = None

    def move_head(self, old: ObjectId | None, new: ObjectId, *, entry: Mapping[str, Any],
                  marks: Mapping[ObjectId, Summary]) -> None:
        self.head = (old, new, dict(entry), dict(marks))

    def revoke(self, member: str) -> None:
        _member_token(self._cur, self.session, member, delete=False)  # refused now
        self.revoked = member


def _times(state: SessionLease) -> tuple[float, float]:
    return (0.0 if state.lease is None else state.lease.expires_at,
            state.reserved_until if state.reserved_for is not None else 0.0)


class PgLeases:
    """Tables ``leases`` (the state of :meth:`SessionLease.to_json` with its expiry and
    reservation times), ``heads`` and ``head_log``; also the :class:`HeadLog`."""

    def __init__(self, db: _Pg, window: float, now: Callable[[], float] | None) -> None:
        self._db, self._window, self._now = db, window, now

    def _lock_row(self, cur: psycopg.Cursor[Any], session: str) -> tuple[Any, ...]:
        select = ("SELECT state, expires_at, reserved_until FROM leases WHERE session = %s "
                  "FOR UPDATE")
        cur.execute(select, (session,))
        row = cur.fetchone()
        if row is None:  # the session's first work: a row to lock from now on
            cur.execute("INSERT INTO leases (session, state) VALUES (%s, %s) "
                        "ON CONFLICT DO NOTHING",
                        (session, Jsonb(SessionLease(window=self._window).to_json())))
            cur.execute(select, (session,))
            row = cur.fetchone()
            assert row is not None
        return tuple(row)

    def _clock(self, cur: psycopg.Cursor[Any]) -> float:
        # After the row lock is held: a time read before waiting for it would be stale.
        return _clock(cur, self._now)

    @contextmanager
    def work(self, session: str) -> Iterator[LeaseWork]:
        with self._db.tx() as cur:
            raw, expires_at, reserved_until = self._lock_row(cur, session)
            now = self._clock(cur)
            state = SessionLease.from_json(raw, now, self._window)
            if state.lease is not None:
                state.lease.expires_at = float(expires_at)
            if state.reserved_for is not None:
                state.reserved_until = float(reserved_until)
            before = (state.to_json(), _times(state))
            work = _Work(cur, session, state, now)
            yield work
            after = (work.state.to_json(), _times(work.state))
            if after != before:
                cur.execute("UPDATE leases SET state = %s, expires_at = %s, reserved_until = %s "
                            "WHERE session = %s", (Jsonb(after[0]), *after[1], session))
            if work.head is not None:
                self._move_head(cur, session, *work.head)
            if work.revoked is not None:
                token = _member_token(cur, session, work.revoked, delete=True)
                cur.execute("DELETE FROM tokens WHERE token_id = %s", (token,))

    def _move_head(self, cur: psycopg.Cursor[Any], session: str, old: ObjectId | None,
                   new: ObjectId, entry: dict[str, Any], marks: dict[ObjectId, Summary]) -> None:
        cur.execute("SELECT head FROM heads WHERE session = %s FOR UPDATE", (session,))
        row = cur.fetchone()
        actual = None if row is None else ObjectId(bytes(row[0]))
        if actual != old:
            raise HeadMoved(actual)  # the transaction rolls back: nothing written
        cur.execute("INSERT INTO heads (session, head) VALUES (%s, %s) ON CONFLICT (session) "
                    "DO UPDATE SET head = EXCLUDED.head", (session, new))
        cur.execute("INSERT INTO head_log (session, seq, entry) SELECT %s, coalesce(max(seq) + 1, "
                    "0), %s FROM head_log WHERE session = %s", (session, Jsonb(entry), session))
        if marks:
            cur.execute("INSERT INTO marks (session, oid, summary) SELECT %s, o, s FROM "
                        "unnest(%s::bytea[], %s::bytea[]) AS m(o, s) ON CONFLICT (session, oid) "
                        "DO UPDATE SET summary = EXCLUDED.summary",
                        (session, list(marks), [s.to_bytes() for s in marks.values()]))

    def try_work(self, session: str, fn: Callable[[SessionLease, float], T]) -> T:
        raise WouldBlock(session)  # every read is a round trip: never on the event loop

    def head(self, session: str) -> ObjectId | None:
        with self._db.tx() as cur:
            cur.execute("SELECT head FROM heads WHERE session = %s", (session,))
            row = cur.fetchone()
        return None if row is None else ObjectId(bytes(row[0]))

    @contextmanager
    def head_lock(self, session: str) -> Iterator[object]:
        # A transaction-scoped advisory lock on a connection of its own: released when the
        # transaction ends, or when the coordinator holding it dies and PostgreSQL drops its
        # connection. Ending it cannot fail what the body did (its own transactions).
        pool = self._db.pool
        try:
            conn = pool.getconn()
        except (psycopg.Error, PoolTimeout) as exc:
            raise _failed("taking a connection", self._db.url, exc) from exc
        try:
            try:
                conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema() || "
                             "'/' || %s))", (HEAD_LOCK_CLASS, session))
            except psycopg.Error as exc:
                raise _failed(f"locking the head of session {session}", self._db.url, exc
                              ) from exc
            yield conn
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            pool.putconn(conn)

    def entries(self, session: str, limit: int) -> list[dict[str, Any]]:
        with self._db.tx() as cur:
            cur.execute("SELECT entry FROM head_log WHERE session = %s ORDER BY seq DESC "
                        "LIMIT %s", (session, limit))
            return [entry for (entry,) in reversed(cur.fetchall())]


# -- marks, retention -------------------------------------------------------------------------


class PgMarks:
    """Table ``marks``: each node's summary (empty for marks without one)."""

    def __init__(self, db: _Pg) -> None:
        self._db = db

    def _read(self, session: str, oids: list[ObjectId]) -> dict[bytes, bytes]:
        if not oids:
            return {}
        with self._db.tx() as cur:
            cur.execute("SELECT oid, summary FROM marks WHERE session = %s "
                        "AND oid = ANY(%s::bytea[])", (session, list(oids)))
            return {bytes(oid): bytes(summary) for oid, summary in cur.fetchall()}

    def summaries(self, session: str, oids: list[ObjectId]) -> list[Summary | None]:
        found = self._read(session, oids)
        return [Summary.from_bytes(raw) if (raw := found.get(oid)) else None for oid in oids]

    def complete(self, session: str, oids: list[ObjectId]) -> list[bool]:
        found = self._read(session, oids)
        return [oid in found for oid in oids]


class PgRetention:
    """Table ``retention``: the policy's fields, the shallow and retained snapshots."""

    def __init__(self, db: _Pg) -> None:
        self._db = db

    def _row(self, session: str) -> tuple[Any, ...] | None:
        with self._db.tx() as cur:
            cur.execute("SELECT policy, shallow, retained FROM retention WHERE session = %s",
                        (session,))
            row = cur.fetchone()
        return None if row is None else tuple(row)

    def policy(self, session: str) -> RetentionPolicy:
        row = self._row(session)
        return RetentionPolicy(**(row[0] if row else {}))

    def set_policy(self, session: str, policy: RetentionPolicy) -> None:
        with self._db.tx() as cur:
            cur.execute("INSERT INTO retention (session, policy) VALUES (%s, %s) ON CONFLICT "
                        "(session) DO UPDATE SET policy = EXCLUDED.policy",
                        (session, Jsonb(asdict(policy))))

    def shallow(self, session: str) -> set[ObjectId]:
        row = self._row(session)
        return set() if row is None else {ObjectId(bytes(o)) for o in row[1]}

    def retained(self, session: str) -> list[ObjectId]:
        row = self._row(session)
        return [] if row is None else [ObjectId(bytes(o)) for o in row[2]]

    def forget(self, session: str, deleted: list[ObjectId], *, shallow: set[ObjectId],
               retained: set[ObjectId]) -> None:
        with self._db.tx() as cur:
            if deleted:
                cur.execute("DELETE FROM marks WHERE session = %s AND oid = ANY(%s::bytea[])",
                            (session, list(deleted)))
            cur.execute("INSERT INTO retention (session, shallow, retained) "
                        "VALUES (%s, %s::bytea[], %s::bytea[]) "
                        "ON CONFLICT (session) DO UPDATE SET shallow = EXCLUDED.shallow, "
                        "retained = EXCLUDED.retained",
                        (session, sorted(shallow), sorted(retained)))


# -- the index of objects kept elsewhere ------------------------------------------------------


class PgObjectIndex:
    """A :class:`~peerhost_server.domain.protocols.ObjectIndex` of one session: rows of
    ``object_index`` (id, size, first bytes, pack and offset) and ``object_uploads``
    (stamp, ids)."""

    def __init__(self, db: _Pg, session: str) -> None:
        self._db, self._session = db, session

    def locate(self, oids: Sequence[ObjectId]) -> list[Indexed | None]:
        if not oids:
            return []
        with self._db.tx() as cur:
            cur.execute("SELECT oid, size, head, pack, off FROM object_index WHERE session = %s "
                        "AND oid = ANY(%s::bytea[])", (self._session, list(oids)))
            found = {bytes(o): Indexed(int(size), bytes(head),
                                       None if pack is None else ObjectId(bytes(pack)), int(off))
                     for o, size, head, pack, off in cur.fetchall()}
        return [found.get(oid) for oid in oids]

    def sizes(self, oids: Sequence[ObjectId]) -> list[int | None]:
        return [None if e is None else e.size for e in self.locate(oids)]

    def ids(self) -> Iterator[ObjectId]:
        with self._db.tx() as cur:
            cur.execute("SELECT oid FROM object_index WHERE session = %s", (self._session,))
            found = [ObjectId(bytes(o)) for (o,) in cur.fetchall()]
        return iter(found)

    def packs(self) -> dict[ObjectId, int]:
        with self._db.tx() as cur:
            cur.execute("SELECT pack, sum(size) FROM object_index WHERE session = %s "
                        "AND pack IS NOT NULL GROUP BY pack", (self._session,))
            return {ObjectId(bytes(p)): int(used) for p, used in cur.fetchall()}

    def relocate(self, objects: Mapping[ObjectId, Indexed]) -> None:
        entries = [(oid, e) for oid, e in objects.items() if e.pack is not None]
        if not entries:
            return
        with self._db.tx() as cur:
            cur.execute("UPDATE object_index SET pack = i.p, off = i.f FROM unnest("
                        "%s::bytea[], %s::bytea[], %s::bigint[]) AS i(o, p, f) "
                        "WHERE session = %s AND oid = i.o",
                        ([o for o, _ in entries], [e.pack for _, e in entries],
                         [e.offset for _, e in entries], self._session))

    def used(self) -> int:
        with self._db.tx() as cur:
            cur.execute("SELECT coalesce(sum(size), 0) FROM object_index WHERE session = %s",
                        (self._session,))
            row = cur.fetchone()
        return 0 if row is None else int(row[0])

    def check_room(self, count: int, reserve: int) -> None:
        pass  # the database's disk is its operator's to watch, not this process's

    def add(self, objects: Mapping[ObjectId, Indexed], upload: Sequence[ObjectId],
            stamp: int) -> int:
        entries = list(objects.values())
        with self._db.tx() as cur:
            cur.execute("INSERT INTO object_index (session, oid, size, head, pack, off) "
                        "SELECT %s, o, s, h, p, f FROM unnest(%s::bytea[], %s::bigint[], "
                        "%s::bytea[], %s::bytea[], %s::bigint[]) AS i(o, s, h, p, f) "
                        "ON CONFLICT DO NOTHING RETURNING oid",
                        (self._session, list(objects), [e.size for e in entries],
                         [e.head for e in entries], [e.pack for e in entries],
                         [e.offset for e in entries]))
            new = len(cur.fetchall())
            cur.execute("INSERT INTO object_uploads (session, stamp, oids) "
                        "VALUES (%s, %s, %s::bytea[])", (self._session, stamp, list(upload)))
            return new

    def recent(self, horizon: float) -> set[ObjectId]:
        with self._db.tx() as cur:
            cur.execute("SELECT DISTINCT unnest(oids) FROM object_uploads WHERE session = %s "
                        "AND stamp >= %s", (self._session, horizon))
            return {ObjectId(bytes(o)) for (o,) in cur.fetchall()}

    def remove(self, oids: Sequence[ObjectId], horizon: float) -> None:
        with self._db.tx() as cur:
            if oids:
                cur.execute("DELETE FROM object_index WHERE session = %s "
                            "AND oid = ANY(%s::bytea[])", (self._session, list(oids)))
            cur.execute("DELETE FROM object_uploads WHERE session = %s AND stamp < %s",
                        (self._session, horizon))
