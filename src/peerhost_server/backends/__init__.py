"""Where the coordinator keeps its state: implementations of
:mod:`peerhost_server.domain.protocols`, one module each, chosen by a URL's scheme.

* ``lmdb:`` (:mod:`.lmdb`, the default): LMDB in the data folder, one process.
* ``postgresql://...`` (:mod:`.postgres`, the ``scale`` extra): the coordination state in
  PostgreSQL, shared by several coordinator processes; objects in the data folder.

A new backend is a module here with an opener ``(data_dir, *, clock, limits, url) ->
Backends``, and one line in :data:`OPENERS`. Modules are imported only when chosen, so a
backend's client library is needed only by those who use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from ..domain.protocols import Backends
from ..limits import Limits

__all__ = ["OPENERS", "describe_url", "migrate_backends", "open_backends"]

#: URL scheme -> ``module:function`` of its opener.
OPENERS = {
    "lmdb": "peerhost_server.backends.lmdb:open_lmdb",
    "postgresql": "peerhost_server.backends.postgres:open_postgres",
    "postgres": "peerhost_server.backends.postgres:open_postgres",
}


def _module(url: str) -> tuple[str, str]:
    scheme = url.partition(":")[0]
    target = OPENERS.get(scheme)
    if target is None:
        raise ValueError(f"no coordinator backend for {scheme!r} URLs; known: "
                         f"{', '.join(sorted(OPENERS))}")
    module, _, name = target.partition(":")
    return module, name


def migrate_backends(url: str) -> list[str]:
    """Apply the schema migrations of the database ``url`` names; return those applied
    (none for a backend without a schema, like ``lmdb:``).

    Raises:
        ValueError: no backend for that scheme.
        StoreError: the database could not be migrated.
    """
    module = importlib.import_module(_module(url)[0])
    migrate: Callable[[str], list[str]] | None = getattr(module, "migrate", None)
    return [] if migrate is None else migrate(url)


def describe_url(url: str) -> str:
    """``url`` without what it may hold in secret (a database password): for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    where = rest.rpartition("@")[2].partition("?")[0]
    return f"{scheme}://{where}"


def open_backends(data_dir: Path, *, clock: Callable[[], float], limits: Limits,
                  url: str = "lmdb:") -> Backends:
    """Open the backends ``url`` names (its scheme picks the module) over ``data_dir``.

    Raises:
        ValueError: no backend for that scheme.
        StoreError: the backend could not be opened.
    """
    module, name = _module(url)
    opener: Callable[..., Backends] = getattr(importlib.import_module(module), name)
    return opener(data_dir, clock=clock, limits=limits, url=url)
