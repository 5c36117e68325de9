"""Where the coordinator keeps its state: implementations of
:mod:`peerhost_server.domain.protocols`, one module each, chosen by a URL's scheme.

* ``lmdb:`` (:mod:`.lmdb`, the default): LMDB in the data folder, one process.
* ``postgresql://...`` (:mod:`.postgres`, the ``scale`` extra): the coordination state in
  PostgreSQL, shared by several coordinator processes; objects in the data folder.
* objects ``s3://bucket/prefix`` (:mod:`.s3`): each session's objects in S3-compatible
  storage, the rest in the coordination state (``phs serve --objects``).

A new backend is a module here with an opener ``(data_dir, *, clock, limits, url) ->
Backends``, and one line in :data:`OPENERS`; a new home for objects alone, an opener
``(data_dir, *, url, limits, backends) -> ObjectStores`` (with ``classify`` and ``close``;
``backends`` is the coordination state, which may keep an index of them) and a line in
:data:`OBJECT_OPENERS`. Modules are imported only when chosen, so a backend's client library
is needed only by those who use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..domain.errors import DomainError
from ..domain.protocols import Backends, Directory, HeadLog, LeaseStore, Marks, Retention
from ..limits import Limits

__all__ = ["OBJECT_OPENERS", "OPENERS", "SplitBackends", "describe_url", "migrate_backends",
           "open_backends"]

#: URL scheme -> ``module:function`` of its opener.
OPENERS = {
    "lmdb": "peerhost_server.backends.lmdb:open_lmdb",
    "postgresql": "peerhost_server.backends.postgres:open_postgres",
    "postgres": "peerhost_server.backends.postgres:open_postgres",
}

#: Objects URL scheme -> ``module:function`` of its opener.
OBJECT_OPENERS = {
    "s3": "peerhost_server.backends.s3:open_s3",
}


def _opener(table: dict[str, str], url: str, what: str) -> Callable[..., Any]:
    scheme = url.partition(":")[0]
    target = table.get(scheme)
    if target is None:
        raise ValueError(f"no {what} for {scheme!r} URLs; known: {', '.join(sorted(table))}")
    module, _, name = target.partition(":")
    opener: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return opener


def migrate_backends(url: str) -> list[str]:
    """Apply the schema migrations of the database ``url`` names; return those applied
    (none for a backend without a schema, like ``lmdb:``).

    Raises:
        ValueError: no backend for that scheme.
        StoreError: the database could not be migrated.
    """
    opener = _opener(OPENERS, url, "coordinator backend")
    migrate: Callable[[str], list[str]] | None = getattr(
        importlib.import_module(opener.__module__), "migrate", None)
    return [] if migrate is None else migrate(url)


def describe_url(url: str) -> str:
    """``url`` without what it may hold in secret (a database password): for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    where = rest.rpartition("@")[2].partition("?")[0]
    return f"{scheme}://{where}"


def open_backends(data_dir: Path, *, clock: Callable[[], float], limits: Limits,
                  url: str = "lmdb:", objects: str | None = None) -> Backends:
    """Open the backends ``url`` names (its scheme picks the module) over ``data_dir``; with
    ``objects`` (``s3://bucket/prefix``), the sessions' objects live there instead.

    Raises:
        ValueError: no backend for that scheme.
        StoreError: the backend could not be opened.
    """
    base: Backends = _opener(OPENERS, url, "coordinator backend")(
        data_dir, clock=clock, limits=limits, url=url)
    if objects is None:
        return base
    try:
        stores = _opener(OBJECT_OPENERS, objects, "object storage")(
            data_dir, url=objects, limits=limits, backends=base)
    except BaseException:
        base.close()
        raise
    return SplitBackends(base, stores)


class SplitBackends:
    """The coordination state of ``base`` with the objects of ``objects`` (an
    :class:`~peerhost_server.domain.protocols.ObjectStores` with ``classify(exc)``, the
    domain error a failure of its own means, and ``close()``)."""

    def __init__(self, base: Backends, objects: Any) -> None:
        self.base = base
        self.objects = objects

    @property
    def directory(self) -> Directory:
        return self.base.directory

    @property
    def leases(self) -> LeaseStore:
        return self.base.leases

    @property
    def log(self) -> HeadLog:
        return self.base.log

    @property
    def marks(self) -> Marks:
        return self.base.marks

    @property
    def retention(self) -> Retention:
        return self.base.retention

    @property
    def loop_safe(self) -> bool:
        return self.base.loop_safe  # lease renewals read the coordination state only

    def classify(self, exc: BaseException) -> DomainError | None:
        """The object storage failing is 503 ``unavailable``; the rest is ``base``'s."""
        mapped: DomainError | None = self.objects.classify(exc)
        return mapped if mapped is not None else self.base.classify(exc)

    def close(self) -> None:
        try:
            self.objects.close()
        finally:
            self.base.close()
