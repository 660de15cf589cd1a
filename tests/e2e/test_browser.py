"""End-to-end in a real browser: Debian's Chromium driven by Playwright against `mura serve-ui`.

Screenshots go to test-artifacts/ (kept as CI artifacts).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import REPO, png_bytes

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def ui_url(registered: dict[str, Any]):  # type: ignore[no-untyped-def]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, MLFLOW_TRACKING_URI=registered["uri"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "mura.cli", "serve-ui", "--model", "models:/mura-ensemble@champion", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mura serve-ui did not start")
    yield url
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: run scripts/ensure-chromium.sh (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield launched
        launched.close()


def _files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(5)
    paths = []
    for i in range(2):
        path = tmp_path / f"view{i + 1}.png"
        path.write_bytes(png_bytes(rng.integers(0, 256, (120, 90)).astype(np.uint8)))
        paths.append(path)
    return paths


def test_upload_study_see_verdict_toggle_heatmap(ui_url: str, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    page.goto(ui_url)
    assert "Pre-screening aid, not a diagnosis" in page.inner_text("#notice")
    page.wait_for_selector("#synthetic-banner:not([hidden])")
    page.set_input_files("#file-input", [str(p) for p in _files(tmp_path)])
    assert page.inner_text("#files").count("view") == 2
    page.click("#analyze")
    page.wait_for_selector("#result:not([hidden])", timeout=120_000)
    verdict = page.inner_text("#verdict")
    assert verdict.startswith("Suggestion: ") and ("ABNORMAL" in verdict or "NORMAL" in verdict)
    assert "threshold" in page.inner_text("#summary")
    assert page.locator(".view img").count() == 2
    assert page.locator("#variants tbody tr").count() == 2
    assert page.is_visible("#result-synthetic")
    first = page.locator(".view img").first
    before = first.get_attribute("src")
    page.screenshot(path=str(ARTIFACTS / "browser-result.png"), full_page=True)
    page.click("#toggle-heatmap")
    assert first.get_attribute("data-showing") == "heatmap" and first.get_attribute("src") != before
    assert page.inner_text("#toggle-heatmap") == "Hide heatmaps"
    page.screenshot(path=str(ARTIFACTS / "browser-heatmap.png"), full_page=True)
    page.click("#toggle-heatmap")
    assert first.get_attribute("src") == before
    page.close()


def test_non_image_shows_plain_error(ui_url: str, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page()
    page.goto(ui_url)
    notes = tmp_path / "notes.png"
    notes.write_text("this is a text file, not a radiograph")
    page.set_input_files("#file-input", str(notes))
    page.click("#analyze")
    page.wait_for_selector("#error", state="visible", timeout=60_000)
    assert "wrong file type" in page.inner_text("#error")
    assert page.is_hidden("#result")
    page.screenshot(path=str(ARTIFACTS / "browser-error.png"), full_page=True)
    page.close()
