"""Where the coordinator keeps its state: implementations of
:mod:`peerhost_server.domain.protocols`, one module each, chosen by a URL's scheme.

* ``lmdb:`` (:mod:`.lmdb`, the default): LMDB in the data folder, one process.

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

__all__ = ["OPENERS", "open_backends"]

#: URL scheme -> ``module:function`` of its opener.
OPENERS = {
    "lmdb": "peerhost_server.backends.lmdb:open_lmdb",
}


def open_backends(data_dir: Path, *, clock: Callable[[], float], limits: Limits,
                  url: str = "lmdb:") -> Backends:
    """Open the backends ``url`` names (its scheme picks the module) over ``data_dir``.

    Raises:
        ValueError: no backend for that scheme.
        StoreError: the backend could not be opened.
    """
    scheme = url.partition(":")[0]
    target = OPENERS.get(scheme)
    if target is None:
        raise ValueError(f"no coordinator backend for {scheme!r} URLs; known: "
                         f"{', '.join(sorted(OPENERS))}")
    module, _, name = target.partition(":")
    opener: Callable[..., Backends] = getattr(importlib.import_module(module), name)
    return opener(data_dir, clock=clock, limits=limits, url=url)
