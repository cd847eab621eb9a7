"""Browser tests of the dashboard and the report (#16), in Debian's chromium driven by Playwright.

They run only when asked for (``pytest tests/browser``, a step of ``.ci/run``), never in the core
suite: a plain ``pytest`` leaves them out. Under CI a missing browser or Playwright fails them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("JOBTRACK_CHROMIUM", "/usr/bin/chromium")


def _asked_for(config: pytest.Config) -> bool:
    return any(Path(str(a).split("::")[0]).resolve().is_relative_to(HERE) for a in config.args)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name.startswith("test_") and not _asked_for(config):
        return True
    return None


def _missing(what: str) -> None:
    message = f"browser tests need {what}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI=true: a missing browser fails, never skips)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian chromium (never a downloaded one)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright: pip install -e '.[dev]'")
    if not os.path.exists(CHROMIUM):
        _missing(f"{CHROMIUM}: apt-get install -y chromium")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    p = context.new_page()
    p.set_default_timeout(15_000)
    yield p
    context.close()
