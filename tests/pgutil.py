"""PostgreSQL for the tests: the server the machines run on 127.0.0.1:5432 (trust auth,
database ``test``), one schema per test, dropped afterwards.

Without a reachable server the tests that need one skip, except under ``CI=true``, where
they fail: CI must exercise the PostgreSQL deployment, not silently skip it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

#: The server and database (``PHS_TEST_POSTGRES`` overrides it).
SERVER = os.environ.get("PHS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def unreachable() -> str | None:
    """Why the test server cannot be used, or None when it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (the scale extra)"
    try:
        with psycopg.connect(SERVER, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL at {SERVER}: {str(exc).strip().splitlines()[0]}"
    return None


def require_postgres() -> None:
    """Skip (fail under CI=true) without a reachable server."""
    why = unreachable()
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def schema_url(schema: str) -> str:
    """The server's URL with ``schema`` first on the search path."""
    sep = "&" if "?" in SERVER else "?"
    return f"{SERVER}{sep}options={quote(f'-csearch_path={schema}')}"


def server_address() -> tuple[str, int]:
    """The test server's host and port."""
    parts = urlsplit(SERVER)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def via(url: str, port: int, application: str | None = None) -> str:
    """``url`` through 127.0.0.1:``port`` (a :class:`tcpproxy.Proxy`), its connections
    named ``application`` in pg_stat_activity."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    query = parts.query + (f"&application_name={application}" if application else "")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@contextmanager
def fresh_schema(migrate: bool = True) -> Iterator[str]:
    """A new, empty schema (migrated with ``migrate``); its URL. Dropped at the end."""
    import psycopg

    from peerhost_server.backends.postgres import migrate as apply

    require_postgres()
    schema = f"phs_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        url = schema_url(schema)
        if migrate:
            apply(url)
        yield url
    finally:
        with psycopg.connect(SERVER, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
