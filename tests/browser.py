"""A headless Chromium for the dashboard tests: Debian's ``chromium`` (``python3 dev.py test``
installs it when missing), driven by Playwright through ``executable_path`` (Playwright's own
browser download cannot be reached from everywhere). Importing this module skips the test
module when either is missing, except under CI=true, where it fails."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

EXECUTABLE = shutil.which("chromium") or shutil.which("chromium-browser")
#: Chromium as root, in a closed network: no sandbox (root), no GPU, and none of the
#: connections it makes by itself (each would be refused, and slow the start).
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-quic", "--disable-default-apps", "--disable-extensions"]
#: Screenshots are kept here after the run (test artifacts; docs/images has a few of them).
ARTIFACTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "dashboard"


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: CI must run the browser tests", pytrace=False)
    pytest.skip(why, allow_module_level=True)


try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:
    _unavailable("playwright is not installed (python3 dev.py test installs it)")
if EXECUTABLE is None:
    _unavailable("Debian's chromium is not installed (python3 dev.py test installs it)")


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium (Playwright gives it a fresh profile), closed afterwards."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=EXECUTABLE, headless=True,
                                             args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def shoot(page: Page, name: str, **options: Any) -> Path:
    """Save a screenshot of the page as a test artifact; return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), **options)
    return path
