"""Operators' view, checked with a real Prometheus (Debian's) scraping the web UI and the DICOM node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mura.data.dicom_phantoms import write_phantom_study
from mura.deploy.processes import free_port, wait_tcp
from mura.operations.reviewers import ReviewerFile
from tests.helpers import png_bytes, wait_http

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("prometheus") is None, reason="prometheus not installed (scripts/ensure-system.sh installs it)"
    ),
]
ANSWERED = 5  # at least MIN_SAMPLES studies, so the drift tests run on them
ALERTS = Path(__file__).resolve().parents[2] / "docker" / "prometheus" / "alerts.yml"
REVIEWED = 20  # the agreement alert's minimum of reviewed studies


def _post_study(url: str, files: list[bytes]) -> int:
    boundary = "mura-boundary"
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="v{k}.png"\r\n'.encode()
            + b"Content-Type: application/octet-stream\r\n\r\n"
            + data
            + b"\r\n"
            for k, data in enumerate(files)
        )
        + f"--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{url}/api/predict", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


@pytest.fixture(scope="module")
def servers(registered: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`mura serve-ui` (subprocess) and a DICOM node (in process), each with /metrics, and Prometheus scraping both."""
    from mura.api import Predictor
    from mura.integrations.dicom_node import DicomNode, NodeSettings

    work = tmp_path_factory.mktemp("monitoring")
    web_port, node_port, node_metrics, prom_port = free_port(), free_port(), free_port(), free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=registered["uri"])
    cmd = [sys.executable, "-m", "mura.cli", "serve-ui", "--model", "models:/mura-ensemble@champion", "--port", str(web_port)]
    ReviewerFile(work / "reviewers").add("alice")
    feedback = ["--feedback-dir", str(work / "feedback"), "--reviewers", str(work / "reviewers")]
    web = subprocess.Popen(
        [*cmd, "--audit-dir", str(work / "web-audit"), *feedback], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    predictor = Predictor.load("models:/mura-ensemble@champion", tracking_uri=registered["uri"])
    settings = NodeSettings(
        spool=work / "spool",
        port=node_port,
        destinations=(f"PACS@127.0.0.1:{free_port()}",),
        idle_seconds=0.5,
        metrics_port=node_metrics,
    )
    node = DicomNode(settings, predictor)
    node.start()
    monitor_port = free_port()
    monitor = subprocess.Popen(  # the scheduled drift report, every 3 s on the web UI's trail, its figures on /metrics
        [sys.executable, "-m", "mura.cli", "monitor", "--model", "models:/mura-ensemble@champion", "--every", "3s"]
        + ["--window", "1d", "--audit-dir", str(work / "web-audit"), "--out", str(work / "scheduled")]
        + ["--metrics-port", str(monitor_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "monitor.log", "wb"),  # noqa: SIM115
    )
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ALERTS}']\n"
        "scrape_configs:\n"
        f"  - {{job_name: web, static_configs: [{{targets: ['127.0.0.1:{web_port}']}}]}}\n"
        f"  - {{job_name: dicom, static_configs: [{{targets: ['127.0.0.1:{node_metrics}']}}]}}\n"
        f"  - {{job_name: monitor, static_configs: [{{targets: ['127.0.0.1:{monitor_port}']}}]}}\n"
    )
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "prometheus.log", "wb"),  # noqa: SIM115
    )
    try:
        wait_http(f"http://127.0.0.1:{web_port}/healthz")
        wait_tcp(prom_port, 60, prom, "prometheus")
        yield {"web": f"http://127.0.0.1:{web_port}", "node": node, "prometheus": f"http://127.0.0.1:{prom_port}", "work": work}
    finally:
        for proc in (web, prom, monitor):
            proc.terminate()
            proc.wait(timeout=30)
        node.stop()


def test_prometheus_sees_the_counts_and_a_latency_quantile(servers: dict[str, Any], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for _ in range(ANSWERED):
        assert _post_study(servers["web"], [png_bytes(rng.integers(0, 256, (40, 40)).astype(np.uint8))]) == 200
    assert _post_study(servers["web"], [b"not an image at all"]) == 415
    study = write_phantom_study(tmp_path / "study", 2, "WRIST", seed=3, size=48)
    sent = subprocess.run(
        ["/usr/bin/storescu", "-aec", "MURA", "127.0.0.1", str(servers["node"].settings.port), *map(str, study.files)],
        capture_output=True,
    )
    assert sent.returncode == 0, sent.stderr
    prometheus = servers["prometheus"]
    expected = {
        'sum(mura_studies_total{job="web",outcome="answered"})': ANSWERED,
        'sum(mura_studies_total{job="web",outcome="refused",reason="file_type"})': 1,
        'sum(mura_studies_total{job="dicom",outcome="answered"})': 1,
        'sum(mura_study_probability_count{job="web"})': ANSWERED,
    }
    deadline = time.monotonic() + 60
    values: dict[str, float | None] = {}
    while time.monotonic() < deadline:
        values = {q: (float(r[0]["value"][1]) if (r := _query(prometheus, q)) else None) for q in expected}
        if values == expected:
            break
        time.sleep(1)
    assert values == expected
    quantile = _query(prometheus, 'histogram_quantile(0.5, sum by (le) (mura_phase_seconds_bucket{job="web",phase="inference"}))')
    assert quantile and 0 < float(quantile[0]["value"][1]) < 60
    info = _query(prometheus, 'mura_model_info{job="web"}')
    assert info and info[0]["metric"]["version"] == "1" and info[0]["metric"]["synthetic_data"] == "true"
    # One audit line per answered web study, keyed, flushed.
    lines = (servers["work"] / "web-audit" / "audit.jsonl").read_text().splitlines()
    assert len(lines) == ANSWERED and all(json.loads(line)["entry_point"] == "web" for line in lines)
    node_lines = (servers["work"] / "spool" / "audit" / "audit.jsonl").read_text().splitlines()
    assert len(node_lines) == 1 and study.study_uid not in node_lines[0]
    # The scheduled monitor has reported on the web UI's answers, and Prometheus reads its figures.
    drift = {
        'mura_drift_studies{job="monitor"}': float(ANSWERED),
        'mura_drift_flagged{job="monitor",feature="pixel_std",group="all"} >= 0': 1.0,
    }
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        found = {q: [float(r["value"][1]) for r in _query(prometheus, q)] for q in drift}
        if found[next(iter(drift))] == [float(ANSWERED)] and found[list(drift)[1]]:
            break
        time.sleep(1)
    assert found[next(iter(drift))] == [float(ANSWERED)], (servers["work"] / "monitor.log").read_text()[-2000:]
    assert found[list(drift)[1]] and _query(prometheus, 'mura_drift_reports_total{job="monitor",outcome="written"} > 0')
    assert (servers["work"] / "scheduled" / "drift_report.html").exists()


def test_mura_monitor_reports_drift_against_the_validation_profile(
    servers: dict[str, Any], registered: dict[str, Any], tmp_path: Path
) -> None:
    """The audit trail of the requests above (random noise images) against the registered validation profile."""
    import mlflow

    from mura.operations.drift import run_monitor

    before = os.environ.get("MLFLOW_EXPERIMENT_ID")
    table = run_monitor(servers["work"] / "web-audit", "models:/mura-ensemble@champion", tmp_path, tracking_uri=registered["uri"])
    assert {"study_probability", "pixel_mean", "body_part_mix"} <= set(table["feature"])
    row = table[(table["feature"] == "pixel_std") & (table["group"] == "all")].iloc[0]
    assert row["n_current"] == ANSWERED and row["n_reference"] == 10  # the fixture's ten validation images
    assert (tmp_path / "drift_report.html").read_text().startswith("<!doctype html>") and (tmp_path / "drift.csv").exists()
    assert os.environ.get("MLFLOW_EXPERIMENT_ID") == before  # no process-wide experiment leaks to later runs or subprocesses
    client = mlflow.MlflowClient(registered["uri"])
    experiment = client.get_experiment_by_name("mura-monitoring")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert runs and runs[0].data.tags["mura.model_version"] == "1" and "psi_study_probability" in runs[0].data.metrics
    assert "flagged" in client.get_model_version("mura-ensemble", "1").tags["last_drift_report"]


def test_radiologists_disagreeing_shows_on_prometheus_and_raises_the_agreement_alert(servers: dict[str, Any]) -> None:
    """Reviews in the web UI's feedback store (as its page records them) → /metrics → Prometheus → the alert rule."""
    import datetime as dt

    from mura.operations.feedback import Answer, FeedbackStore, Review

    store = FeedbackStore(servers["work"] / "feedback")
    for k in range(REVIEWED):
        answer = Answer(f"seeded-{k}", store.key(str(k)), "web", "mura-ensemble", "1", "default", 0.5, 0.9, "abnormal",
                        None, True, 1, dt.datetime.now(dt.UTC))  # fmt: skip
        store.record_answer(answer)
        store.record_review(Review(answer.answer_id, "web", "alice", "disagree", "normal"))
    prometheus = servers["prometheus"]
    expected = {
        'mura_feedback_reviewed{job="web",window="7d",body_part="all",model_version="1"}': float(REVIEWED),
        'mura_feedback_agreement_ratio{job="web",window="7d",body_part="all",model_version="1"}': 0.0,
        'mura_feedback_specificity_ratio{job="web",window="30d",body_part="all",model_version="1"}': 0.0,
    }
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = {q: [float(r["value"][1]) for r in _query(prometheus, q)] for q in expected}
        alerts = _query(prometheus, 'ALERTS{alertname="MuraAgreementBelowValidation",body_part="all"}')
        if all(found[q] == [v] for q, v in expected.items()) and alerts:
            break
        time.sleep(1)
    assert all(found[q] == [v] for q, v in expected.items()), found
    floor = _query(prometheus, 'mura_validation_agreement_lower_ratio{job="web",body_part="all"}')
    assert floor and 0 < float(floor[0]["value"][1]) < 1  # the served model's validation accuracy, lower bound
    assert alerts and alerts[0]["metric"]["alertstate"] == "pending" and alerts[0]["metric"]["model_version"] == "1"


def test_mura_monitor_reports_live_performance_next_to_drift(
    servers: dict[str, Any], registered: dict[str, Any], tmp_path: Path
) -> None:
    """After the reviews above: `mura monitor --feedback-dir` adds agreement, sensitivity, specificity with CIs."""
    import mlflow

    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "mura.cli", "monitor", "--model", "models:/mura-ensemble@champion"]
        + ["--audit-dir", str(servers["work"] / "web-audit"), "--out", str(out)]
        + ["--feedback-dir", str(servers["work"] / "feedback")],
        env=dict(os.environ, MLFLOW_TRACKING_URI=registered["uri"]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"radiologists, all: {REVIEWED} reviewed, agreement 0.00 [0.00, 0." in done.stdout
    live = pd.read_csv(out / "live_performance.csv").set_index("body_part")
    assert live.loc["all", "n"] == REVIEWED and live.loc["all", "specificity"] == 0.0 and live.loc["all", "agreement_high"] < 0.2
    assert "Against radiologists" in (out / "drift_report.html").read_text()
    client = mlflow.MlflowClient(registered["uri"])
    experiment = client.get_experiment_by_name("mura-monitoring")
    assert experiment is not None
    # The scheduled monitor (no feedback store) logs a run every 3 s too: find this report's by its metric.
    runs = client.search_runs([experiment.experiment_id], "metrics.live_reviewed >= 0", order_by=["start_time DESC"])
    assert runs and runs[0].data.metrics["live_reviewed"] == REVIEWED and runs[0].data.metrics["live_agreement"] == 0.0


def test_every_dashboard_query_runs_on_prometheus(servers: dict[str, Any]) -> None:
    """docker/grafana/mura-dashboard.json: each panel's PromQL is valid, and those on the metrics above find them."""
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docker" / "grafana" / "mura-dashboard.json").read_text())
    with_data = (
        "Studies answered per minute",
        "Latency per phase (median)",
        "Model served",
        "Studies in flight",
        "Radiologists' agreement (7 days) vs the validation floor",
    )
    deadline = time.monotonic() + 30  # rate() needs two scrapes of a series: give Prometheus a few more seconds
    while True:
        found = {
            panel["title"]: [bool(_query(servers["prometheus"], target["expr"])) for target in panel["targets"]]
            for panel in dashboard["panels"]
        }
        ready = all(all(found[t]) for t in with_data) and any(found["Drift: features flagged (last report)"])
        if ready or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(found) == len(dashboard["panels"]) >= 14
    assert ready, found
