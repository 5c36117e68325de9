"""Where the coordinator keeps its state: implementations of
:mod:`peerhost_server.domain.protocols`, one module each, chosen by name.

* ``lmdb`` (:mod:`.lmdb`, the default): LMDB in the data folder, one process.

A new backend is a module here whose opener takes the data folder, the clock and the limits
and returns a :class:`~peerhost_server.domain.protocols.Backends`, and one line in
:data:`OPENERS`. Modules are imported only when chosen, so a backend's client library is
needed only by those who use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from ..domain.protocols import Backends
from ..limits import Limits

__all__ = ["OPENERS", "open_backends"]

#: Backend name -> ``module:callable`` of its opener.
OPENERS = {
    "lmdb": "peerhost_server.backends.lmdb:LmdbBackends",
}


def open_backends(data_dir: Path, *, clock: Callable[[], float], limits: Limits,
                  kind: str = "lmdb") -> Backends:
    """Open the backends named ``kind`` over ``data_dir``.

    Raises:
        ValueError: no backend of that name.
        StoreError: the backend could not be opened.
    """
    target = OPENERS.get(kind)
    if target is None:
        raise ValueError(f"no coordinator backend {kind!r}; known: {', '.join(sorted(OPENERS))}")
    module, _, name = target.partition(":")
    opener: Callable[..., Backends] = getattr(importlib.import_module(module), name)
    return opener(data_dir, clock=clock, limits=limits)
