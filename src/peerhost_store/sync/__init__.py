"""The sync client: remotes and credentials, push and pull, leases (see docs/protocol.md).

``import httpx`` also imports ``httpx._main``, its command-line tool, which pulls in click,
rich and pygments when they are installed (``rich`` always is, with phs): about 45 ms of the
0.3 s ``phs status`` may take to start (issue 13). httpx imports it inside ``try/except
ImportError``, so a ``None`` placed in ``sys.modules`` for the duration of the import makes it
fall back to its stub; the entry is removed at once, so an explicit ``import httpx._main``
later still works.
"""

from __future__ import annotations

import sys

if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx  # noqa: F401
    finally:
        del sys.modules["httpx._main"]
