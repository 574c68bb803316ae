"""Shared browser helpers for the e2e tests: Debian's Chromium through playwright, gradio fields by
label, and what to keep when a test fails (screenshot + the UI's log under test-artifacts/)."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
IN_CI = os.environ.get("CI", "").lower() == "true"


def chromium() -> str:
    path = os.environ.get("FINETUNE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        msg = "Debian's chromium is not installed (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if IN_CI:
            pytest.fail("playwright is not installed (pip install -e '.[browser]')")
        pytest.skip("playwright is not installed (pip install -e '.[browser]')")
    return sync_playwright


def field(page, label: str):
    """A gradio field by its label (labels carry an info line, so match the start): text boxes
    are textareas named by their label, dropdowns are inputs labelled by it."""
    name = re.compile(rf"^{re.escape(label)}\b")
    box = page.get_by_role("textbox", name=name)
    return box.first if box.count() else page.get_by_label(name).first


def visible(locator):
    """The first of ``locator``'s matches on the open tab (every tab keeps its fields in the page)."""
    return locator.locator("visible=true").first


def wait_value(page, label: str, expected: str, timeout: float = 30.0) -> None:
    box = field(page, label)
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        try:
            value = box.input_value(timeout=2_000)
        except Exception:  # noqa: BLE001 - not attached yet
            value = None
        if value == expected:
            return
        time.sleep(0.3)
    raise AssertionError(f"{label!r} shows {value!r}, expected {expected!r}")


def wait_textbox(page, text: str, timeout: float = 60_000) -> None:
    """Wait until some text box holds ``text`` (gradio's info boxes are textareas: their value is
    not page text, so ``get_by_text`` never sees it)."""
    page.wait_for_function("s => [...document.querySelectorAll('textarea')].some(t => t.value.includes(s))",
                           arg=text, timeout=timeout)


def save_failure(page, name: str, log_path: Path | None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    if page is not None:
        try:
            shot = ARTIFACTS / f"{name}.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
        except Exception:  # noqa: BLE001 - the page may be gone
            pass
    if log_path is not None and Path(log_path).is_file():
        (ARTIFACTS / f"{name}.webui.log").write_bytes(Path(log_path).read_bytes())
