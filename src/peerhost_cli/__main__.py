"""``python -m peerhost_cli ARGS`` is ``phs ARGS``."""

from __future__ import annotations

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
