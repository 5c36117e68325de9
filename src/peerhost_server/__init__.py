"""The PeerHost coordinator: sessions, leases with fencing tokens, object transfer and heads.

>>> app = create_app(Path("coordinator-data"))   # doctest: +SKIP
>>> serve(Path("coordinator-data"), "127.0.0.1", 8765)   # doctest: +SKIP
"""

from __future__ import annotations

from .app import create_app, serve
from .errors import ApiError
from .limits import Limits

__all__ = ["ApiError", "Limits", "create_app", "serve"]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from peerhost_store import distribution_version

        return distribution_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
