"""End-to-end in a real browser: Debian's Chromium driven by Playwright against `mura serve-ui`.

Screenshots go to test-artifacts/ (kept as CI artifacts).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import REPO, png_bytes

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "browser-test-token"
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
def ui_url(registered: dict[str, Any]):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, MLFLOW_TRACKING_URI=registered["uri"])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mura.cli",
            "serve-ui",
            "--model",
            "models:/mura-ensemble@champion",
            "--token",
            TOKEN,
            "--port",
            str(port),
        ],
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


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright (what the ``browser`` fixture yields)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: run scripts/ensure-system.sh (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


def _open(browser, url: str, **kwargs: Any):
    """Open the page and give it the access token, checking the prompts on the way."""
    page = browser.new_page(**kwargs)
    page.goto(url)
    page.wait_for_selector("#token-label:not([hidden])")
    assert "requires an access token" in page.inner_text("#error")
    page.fill("#token", "wrong")
    page.press("#token", "Enter")
    page.wait_for_function("document.getElementById('error').textContent.includes('not valid')")
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    page.wait_for_function("document.getElementById('body-part').options.length === 8")
    assert page.inner_text("#error") == ""
    return page


def _files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(5)
    paths = []
    for i in range(2):
        path = tmp_path / f"view{i + 1}.png"
        path.write_bytes(png_bytes(rng.integers(0, 256, (120, 90)).astype(np.uint8)))
        paths.append(path)
    return paths


def test_upload_study_see_verdict_toggle_heatmap(ui_url: str, browser, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = _open(browser, ui_url, viewport={"width": 1200, "height": 1000})
    assert "Pre-screening aid, not a diagnosis" in page.inner_text("#notice")
    page.wait_for_selector("#synthetic-banner:not([hidden])")
    page.set_input_files("#file-input", [str(p) for p in _files(tmp_path)])
    assert page.inner_text("#files").count("view") == 2
    with page.expect_response(lambda r: r.url.endswith("/api/predict"), timeout=120_000) as answered:
        page.click("#analyze")
    answer = answered.value.json()
    page.wait_for_selector("#result:not([hidden])", timeout=120_000)
    # The page shows exactly the served answer: the label at the served threshold, and its probability.
    expected = "abnormal" if answer["probability"] >= answer["threshold"] else "normal"
    assert answer["verdict"] == expected
    assert page.inner_text("#verdict").startswith(f"Suggestion: {expected.upper()} (")
    assert "threshold" in page.inner_text("#summary")
    assert page.locator(".view img").count() == 2
    assert page.locator("#variants tbody tr").count() == 2
    assert page.is_visible("#result-synthetic")
    assert page.is_hidden("#result-warnings")  # PNG uploads carry no metadata to flag
    # The model line was fetched after the token was given (it read "Model ?." before).
    assert page.inner_text("#model-info").startswith("Model models:/mura-ensemble@champion")
    first = page.locator(".view img").first
    before = first.get_attribute("src")
    page.screenshot(path=str(ARTIFACTS / "browser-result.png"), full_page=True)
    # The answer carried no heatmap: each view's is drawn by the server when shown (token-protected like the rest).
    assert all(v["heatmap"] is None and v["heatmap_url"].startswith("/api/heatmap/") for v in answer["views"])
    with page.expect_response(lambda r: "/api/heatmap/" in r.url, timeout=120_000) as drawn:
        page.click("#toggle-heatmap")
    assert drawn.value.status == 200 and drawn.value.headers["content-type"] == "image/png"
    page.wait_for_selector(".view img[data-showing='heatmap']", timeout=120_000)
    assert first.get_attribute("data-showing") == "heatmap" and first.get_attribute("src").startswith("blob:")
    assert page.inner_text("#toggle-heatmap") == "Hide heatmaps"
    # Boxes where the model looks: dotted at the high-sensitivity point when the study passes its threshold (the
    # fixture's model has no high-specificity threshold, so no solid box), each inside its view.
    dotted = page.locator(".box.dotted")
    if answer["labels"]["high_sensitivity"] == "abnormal":
        assert dotted.count() >= 1 and page.is_visible("#box-legend")
        frame, box = page.locator(".frame").first.bounding_box(), dotted.first.bounding_box()
        assert frame is not None and box is not None and box["width"] > 0
        assert frame["x"] - 1 <= box["x"] and box["x"] + box["width"] <= frame["x"] + frame["width"] + 1
    else:
        assert dotted.count() == 0 and page.is_hidden("#box-legend")
    assert page.locator(".box.solid").count() == 0
    page.screenshot(path=str(ARTIFACTS / "browser-heatmap.png"), full_page=True)
    page.click("#toggle-heatmap")
    assert first.get_attribute("src") == before and page.locator(".box").count() == 0
    page.close()


def test_non_image_shows_plain_error(ui_url: str, browser, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = _open(browser, ui_url)
    notes = tmp_path / "notes.png"
    notes.write_text("this is a text file, not a radiograph")
    page.set_input_files("#file-input", str(notes))
    page.click("#analyze")
    page.wait_for_selector("#error", state="visible", timeout=60_000)
    assert "wrong file type" in page.inner_text("#error")
    assert page.is_hidden("#result")
    page.screenshot(path=str(ARTIFACTS / "browser-error.png"), full_page=True)
    page.close()


def test_out_of_scope_dicom_shows_a_visible_warning(ui_url: str, browser, tmp_path: Path) -> None:
    from tests.dicom_utils import make_dicom

    ARTIFACTS.mkdir(exist_ok=True)
    knee = tmp_path / "knee.dcm"
    knee.write_bytes(make_dicom(np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (48, 1)), body_part="KNEE"))
    page = _open(browser, ui_url)
    page.set_input_files("#file-input", str(knee))
    page.click("#analyze")
    page.wait_for_selector("#result:not([hidden])", timeout=120_000)
    assert page.is_visible("#result-warnings")
    assert "body part KNEE is outside the seven upper-extremity regions" in page.inner_text("#result-warnings")
    page.screenshot(path=str(ARTIFACTS / "browser-warning.png"), full_page=True)
    page.close()
