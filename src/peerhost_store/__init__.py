"""PeerHost's library: region codec, objects, Merkle trees, stores, snapshots and sync.

``peerhost_store.__version__`` (also ``peerhost_cli.__version__`` and
``peerhost_server.__version__``) is the installed distribution's version, read from its metadata
when first asked for: ``pyproject.toml`` is the one place it is written.
"""

from __future__ import annotations

import functools

__all__ = ["distribution_version"]


def __getattr__(name: str) -> str:
    # Looked up lazily: importlib.metadata costs ~35 ms, and most imports never ask.
    if name == "__version__":
        return distribution_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def distribution_version() -> str:
    """The version of the installed ``peerhost`` distribution ("0+unknown" when these packages
    run from a source tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("peerhost")
    except PackageNotFoundError:
        return "0+unknown"
