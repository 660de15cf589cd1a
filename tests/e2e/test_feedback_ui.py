"""Radiologists' feedback from the web page: Chromium, reviewers' own tokens, kill -9, nothing identifying in the log."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mura.deploy.processes import free_port
from mura.operations.feedback import FeedbackStore
from mura.operations.reviewers import ReviewerFile
from tests.e2e.test_browser import ARTIFACTS, chromium
from tests.helpers import png_bytes, wait_http

pytestmark = pytest.mark.slow
REASON = "Fracture line missed; patient Jane Q. Doe"  # free text that must never reach a log


def _start(registered: dict[str, Any], work: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, MLFLOW_TRACKING_URI=registered["uri"])
    cmd = [sys.executable, "-m", "mura.cli", "serve-ui", "--model", "models:/mura-ensemble@champion", "--port", str(port)]
    cmd += ["--feedback-dir", str(work / "feedback"), "--reviewers", str(work / "reviewers"), "--audit-dir", str(work / "audit")]
    log = open(work / "server.log", "ab")  # noqa: SIM115  (closed with the process)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc


@pytest.fixture(scope="module")
def server(registered: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("feedback-ui")
    accounts = ReviewerFile(work / "reviewers")
    tokens = {"alice": accounts.add("alice"), "bob": accounts.add("bob")}
    port = free_port()
    state: dict[str, Any] = {"proc": _start(registered, work, port), "url": f"http://127.0.0.1:{port}", "work": work}
    state["tokens"] = tokens
    yield state
    os.killpg(state["proc"].pid, signal.SIGTERM)
    state["proc"].wait(timeout=30)


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read() or b"{}")


def _predict(url: str, views: int = 1, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    boundary = "mura-feedback"
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="v{k}.png"\r\n\r\n'.encode()
            + png_bytes(rng.integers(0, 256, (60, 50)).astype(np.uint8))
            + b"\r\n"
            for k in range(views)
        )
        + f'--{boundary}\r\nContent-Disposition: form-data; name="body_part"\r\n\r\nwrist\r\n--{boundary}--\r\n'.encode()
    )
    status, answer = _post(f"{url}/api/predict", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, answer
    return answer


def _feedback(url: str, answer: dict[str, Any], body: dict[str, Any], token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    return _post(url + answer["feedback_url"], json.dumps(body).encode(), headers)


def test_a_reviewer_disagrees_in_the_browser_with_a_label_a_box_and_a_reason(server: dict[str, Any], tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    views = []
    for k in range(2):
        views.append(tmp_path / f"view{k}.png")
        views[-1].write_bytes(png_bytes(np.random.default_rng(k).integers(0, 256, (120, 90)).astype(np.uint8)))
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 1100})
        page.goto(server["url"])
        page.wait_for_selector("#token-label:not([hidden])")  # feedback is on: the page asks for the reviewer's token
        page.fill("#token", server["tokens"]["alice"])
        page.press("#token", "Enter")
        page.wait_for_function("document.getElementById('fb-who').textContent.includes('alice')")
        page.set_input_files("#file-input", [str(p) for p in views])
        with page.expect_response(lambda r: r.url.endswith("/api/predict"), timeout=120_000) as answered:
            page.click("#analyze")
        answer = answered.value.json()
        page.wait_for_selector("#feedback:not([hidden])", timeout=120_000)
        assert answer["feedback_url"].startswith("/api/feedback/")
        page.click("#fb-disagree")
        other = "normal" if answer["verdict"] == "abnormal" else "abnormal"
        page.select_option("#fb-label", other)
        box = page.locator(".view img").first.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.3 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.7 * box["height"], steps=5)
        page.mouse.up()
        page.wait_for_selector(".region")
        page.fill("#fb-reason", REASON)
        with page.expect_response(lambda r: "/api/feedback/" in r.url) as sent:
            page.click("#fb-send")
        assert sent.value.status == 200
        page.wait_for_function("document.getElementById('fb-status').textContent.includes('Recorded for alice')")
        page.screenshot(path=str(ARTIFACTS / "browser-feedback.png"), full_page=True)
    store = FeedbackStore(server["work"] / "feedback")
    answer_id = answer["feedback_url"].rsplit("/", 1)[1]
    row = store.reviewed().set_index("answer_id").loc[answer_id]
    assert row["reviewer"] == "alice" and row["assessment"] == "disagree" and row["radiologist_label"] == other
    assert row["source"] == "web" and row["reason"] == REASON and row["body_part"] is None and not row["agreed"]
    x0, y0, x1, y1 = map(float, row["region"].split(","))
    assert int(row["region_view"]) == 0 and abs(x0 - 0.2) < 0.05 and abs(y0 - 0.3) < 0.05 and abs(x1 - 0.6) < 0.05
    assert len(store.images_of(answer_id)) == 2  # the reviewed study's views, kept for the next training


def test_feedback_needs_a_reviewers_own_token_and_an_existing_answer(server: dict[str, Any]) -> None:
    answer = _predict(server["url"], seed=1)
    assert _feedback(server["url"], answer, {"assessment": "agree"}, None)[0] == 401
    assert _feedback(server["url"], answer, {"assessment": "agree"}, "not-a-reviewer")[0] == 401
    status, body = _feedback(server["url"], answer, {"assessment": "disagree"}, server["tokens"]["bob"])
    assert status == 422 and "label" in body["error"]
    assert _feedback(server["url"], answer, {"assessment": "maybe"}, server["tokens"]["bob"])[0] == 422
    missing = dict(answer, feedback_url="/api/feedback/no-such-answer")
    assert _feedback(server["url"], missing, {"assessment": "agree"}, server["tokens"]["bob"])[0] == 404
    status, body = _feedback(server["url"], answer, {"assessment": "agree"}, server["tokens"]["bob"])
    assert status == 200 and body["reviewer"] == "bob" and body["agreed"] and body["views_kept"] == 1


def test_an_acknowledged_review_survives_kill_9_and_nothing_identifying_is_logged(
    server: dict[str, Any], registered: dict[str, Any]
) -> None:
    answer = _predict(server["url"], seed=2)
    status, body = _feedback(
        server["url"], answer, {"assessment": "disagree", "label": "abnormal", "reason": REASON}, server["tokens"]["alice"]
    )
    assert status == 200
    os.killpg(server["proc"].pid, signal.SIGKILL)  # right after the acknowledgement
    server["proc"].wait(timeout=30)
    with sqlite3.connect(server["work"] / "feedback" / "feedback.db") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = FeedbackStore(server["work"] / "feedback").reviewed(latest_only=False)
    assert body["feedback_id"] in set(rows["feedback_id"])
    port = int(server["url"].rsplit(":", 1)[1])
    server["proc"] = _start(registered, server["work"], port)  # the fixture stops this one
    log = (server["work"] / "server.log").read_text()
    assert "feedback" in log and "recorded" in log
    for secret in (REASON, "Jane", *server["tokens"].values(), answer["feedback_url"].rsplit("/", 1)[1]):
        assert secret not in log
