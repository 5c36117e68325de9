"""The ``phs`` command (``python -m peerhost_cli`` runs it too)."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    if name == "__version__":
        from peerhost_store import distribution_version

        return distribution_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
