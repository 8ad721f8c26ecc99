"""Debian's headless Chromium driven by Playwright (no browser download), for the page tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"


def chromium(*extra_args: str) -> Iterator[object]:
    """Body of a browser fixture (``yield from chromium()``): a launched browser, closed afterwards;
    the test is skipped when chromium or playwright is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found (Debian package chromium; scripts/install-system-deps.sh installs it as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (the test extra)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", *extra_args])
        yield browser
        browser.close()
