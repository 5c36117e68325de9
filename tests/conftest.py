from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

# The coordinator fixtures (``server``) shared by the sync tests.
pytest_plugins = ("test_sync_support",)

# Real Minecraft worlds live outside the repository (never committed): ../shared/worlds.
WORLDS = Path(__file__).resolve().parents[2] / "shared" / "worlds"
DATA = Path(__file__).resolve().parent / "data"

# phs keeps tokens in the user's config folder: tests must never read or write the real one,
# nor may the phs processes they start (those inherit this environment). Set before anything
# is collected (module and session fixtures too); each test then gets a fresh one below.
os.environ["PHS_CONFIG_DIR"] = _SESSION_CONFIG = tempfile.mkdtemp(prefix="phs-config-")
atexit.register(shutil.rmtree, _SESSION_CONFIG, ignore_errors=True)

# CI runs the same examples every time; locally hypothesis explores.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


def _missing(what: Path) -> None:
    message = f"real-world data is missing: {what}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)  # CI must exercise real worlds, not silently skip them
    pytest.skip(message)


@pytest.fixture(scope="session")
def worlds_dir() -> Path:
    """The real worlds folder; skips the test when it is missing (fails when CI=true)."""
    if not WORLDS.is_dir():
        _missing(WORLDS)
    return WORLDS


@pytest.fixture(scope="session")
def real_world(worlds_dir: Path) -> Callable[[str], Path]:
    """``real_world("aviadbag-1.19-history")``: a folder of worlds_dir, skipped like it."""

    def get(name: str) -> Path:
        path = worlds_dir / name
        if not path.is_dir():
            _missing(path)
        return path

    return get


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """tests/data: the crafted fixtures."""
    return DATA


@pytest.fixture(autouse=True)
def _private_config_dir(monkeypatch: pytest.MonkeyPatch,
                        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A config folder of this test's own (``PHS_CONFIG_DIR``): no test sees another's tokens."""
    monkeypatch.setenv("PHS_CONFIG_DIR", str(tmp_path_factory.mktemp("phs-config")))
