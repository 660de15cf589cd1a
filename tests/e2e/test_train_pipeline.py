"""End-to-end: `dvc repro` through `train` with two tiny variants, MLflow, reruns and resume.

The seed's DenseNet-169/ResNet-101 are too slow to train in a test on 2 CPU
cores; this test swaps in two ``simple_cnn`` variants to exercise the stage
mechanics (foreach, params, outputs, tracking, registry, resume). The real
architectures are built and checked in tests/unit/test_models.py and trained by
`make demo`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mura.config import SynthParams
from mura.data.synthetic import write_synthetic
from mura.workspace import create_workspace
from tests.e2e.test_browser import ARTIFACTS, chromium
from tests.helpers import NO_SEED_VARIANTS

pytestmark = pytest.mark.slow

TINY = {"arch": "simple_cnn", "dense_units": 16, "dropout": 0.2, "learning_rate": None}
OVERRIDE = {
    "data": {"image_size": 32},
    "train": {"epochs": 2, "batch_size": 16, "learning_rate": 0.001, "pretrained": "none", "workers": 1},
    "evaluate": {"bootstrap_resamples": 20},
    "models": {
        **NO_SEED_VARIANTS,
        "tiny_a": dict(TINY),
        "tiny_b": dict(TINY, oversample_abnormal=True),
    },
}


def _env(ws: Path) -> dict[str, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", MURA_GIT_COMMIT="test-commit")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{ws / 'mlflow.db'}"
    return env


def _dvc(ws: Path, *args: str) -> str:
    proc = subprocess.run(["dvc", *args], cwd=ws, env=_env(ws), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def workspace(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = create_workspace(repo_root, tmp_path_factory.mktemp("train") / "ws", OVERRIDE)
    write_synthetic(ws / "data/raw/synthetic", seed=5, sizes=SynthParams(patients=30, fracture_images=0))
    _dvc(ws, "repro")  # ends with the serve stage: `mlflow models serve` on the new version, checked
    # Served once: the record is kept for its test, and the later reruns of this workspace (a variant changed,
    # a DVC experiment) skip the server's start-up (~40 s each on 2 cores).
    shutil.copy(ws / "reports/serve.json", ws / "served-once.json")
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["serve"] = {**params.get("serve", {}), "enabled": False}
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _dvc(ws, "repro", "serve")
    return ws


def test_train_outputs_and_metrics(workspace: Path) -> None:
    for variant in ("tiny_a", "tiny_b"):
        assert (workspace / f"models/{variant}.keras").stat().st_size > 0
        history = pd.read_csv(workspace / f"reports/train/{variant}/history.csv")
        assert history["epoch"].tolist() == [0, 1]
        assert {"loss", "val_loss", "auc", "val_auc", "accuracy", "val_accuracy"} <= set(history.columns)
        metrics = json.loads((workspace / f"reports/train/{variant}/metrics.json").read_text())
        assert 0.0 <= metrics["val_auc"] <= 1.0 and metrics["synthetic_data"] is True
        assert (workspace / f"reports/train/{variant}/history.png").stat().st_size > 1000
    assert "up to date" in _dvc(workspace, "status").lower()


def test_mlflow_runs_and_registry(workspace: Path) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = _env(workspace)["MLFLOW_TRACKING_URI"]
    import mlflow

    mlflow.set_tracking_uri(os.environ.pop("MLFLOW_TRACKING_URI"))
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(experiment_names=["mura"], output_format="list")
    by_name = {run.info.run_name: run for run in runs}
    assert {"tiny_a", "tiny_b"} <= set(by_name)
    run = by_name["tiny_b"]
    assert run.data.params["model.oversample_abnormal"] == "True"
    assert run.data.params["train.learning_rate"] == "0.001"
    assert run.data.tags["synthetic_data"] == "true" and run.data.tags["git_commit"] == "test-commit"
    assert len(client.get_metric_history(run.info.run_id, "val_auc")) == 2
    version = client.get_model_version("mura-tiny_b", "1")
    assert version.tags["synthetic_data"] == "true"
    assert len(version.tags["dataset_fingerprint"]) == 64
    assert "SYNTHETIC" in (version.description or "")


def _register_run_metrics(ws: Path) -> dict[str, float]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    version = client.get_model_version("mura-ensemble", "1")
    return dict(client.get_run(str(version.run_id)).data.metrics)


def test_ensemble_evaluate_register_outputs(workspace: Path) -> None:
    valid = pd.read_csv(workspace / "reports/predictions/valid.csv")
    assert {"p_tiny_a", "p_tiny_b", "p_ensemble"} <= set(valid.columns)
    assert ((valid["p_tiny_a"] + valid["p_tiny_b"]) / 2 - valid["p_ensemble"]).abs().max() < 1e-6
    metrics = json.loads((workspace / "reports/metrics.json").read_text())
    assert set(metrics) == {"valid", "test"} and {"tiny_a", "tiny_b", "ensemble"} <= set(metrics["test"])
    table = pd.read_csv(workspace / "reports/per_body_part.csv")
    assert {"XR_WRIST", "all", "dataset:mura"} & set(table["group"]) and "kappa_ci_low" in table
    report = (workspace / "reports/README.md").read_text()
    assert "SYNTHETIC DATA" in report and "per body part" in report
    for png in ("roc", "pr", "confusion"):
        assert (workspace / f"reports/plots/{png}.png").stat().st_size > 1000
    registered = json.loads((workspace / "reports/register.json").read_text())
    assert registered["model_name"] == "mura-ensemble" and registered["version"] == 1 and registered["champion"]
    shown = _dvc(workspace, "metrics", "show")
    assert "metrics.json" in shown and "serve.json" in shown
    assert json.loads((workspace / "reports/serve.json").read_text())["skipped"]  # serve.enabled: false, as set above
    # The last stage served that version with `mlflow models serve` and got the registered answer back.
    served = json.loads((workspace / "served-once.json").read_text())
    assert served["model_uri"] == "models:/mura-ensemble/1" and served["answer_check"]["ok"] and not served["skipped"]
    assert served["answer_check"]["study_id"] == registered["serve_reference"]["study_id"]
    assert served["startup_s"] > 0 and served["p50_ms"] <= served["p95_ms"]
    # Calibration: fitted on valid, three operating points on the calibrated probability, before/after figures.
    chosen = json.loads((workspace / "reports/thresholds.json").read_text())
    assert set(chosen["thresholds"]) == {"default", "high_sensitivity", "high_specificity"}
    calibration = chosen["calibration"]
    assert calibration["requested"] == "temperature" and calibration["fitted_on"] == "valid studies"
    # Served only if it helps out of fold on valid; else the raw probability (and the record says why).
    assert calibration["method"] == ("temperature" if calibration["out_of_fold_check"]["keep"] else "none")
    study = metrics["test"]["ensemble"]["study"]["default"]
    assert {"ece", "ece_uncalibrated", "brier", "brier_uncalibrated", "log_loss", "specificity"} <= set(study)
    assert {"ece_ci_low", "brier_uncalibrated_ci_high"} <= set(table.columns)
    assert "Calibration of the ensemble" in report and "high_specificity" in report
    for png in ("reliability", "reliability_per_body_part"):
        assert (workspace / f"reports/plots/{png}.png").stat().st_size > 1000
    assert "fraction_abnormal" in (workspace / "reports/plots/reliability_calibrated.csv").read_text()
    # The model card: from the pipeline's outputs, with the registered version.
    card = json.loads((workspace / "reports/model_card.json").read_text())
    assert card["lineage"]["version"] == "1" and card["synthetic_data"] is True
    kappa = metrics["test"]["ensemble"]["study"]["default"]["kappa"]
    assert card["evaluation"]["operating_points"]["default"]["kappa"]["value"] == pytest.approx(kappa)
    assert "# Model card: mura-ensemble version 1" in (workspace / "reports/model_card.md").read_text()
    # Localisation: the box levels chosen on valid against the phantoms' planted boxes, measured on test.
    located = json.loads((workspace / "reports/localization.json").read_text())
    assert located["measured"] and set(located["chosen_on"]) == {"high_sensitivity", "high_specificity"}
    assert all(how == "valid" or how.startswith("default") for how in located["chosen_on"].values())
    assert set(located["test"]) == {"high_sensitivity", "high_specificity"}
    assert "operating_point" not in located["test"]["high_sensitivity"]
    levels = located["levels"]
    assert set(levels) == {"high_sensitivity", "high_specificity"} and levels["high_sensitivity"] <= levels["high_specificity"]
    loc_table = pd.read_csv(workspace / "reports/localization.csv")
    assert {"pointing", "pointing_ci_low", "sensitivity_iou0.1", "fp_per_image_iou0.3", "mean_iou"} <= set(loc_table.columns)
    assert "all" in set(loc_table["group"]) and (workspace / "reports/plots/localization_cases.png").stat().st_size > 1000
    # the pointing game's ceiling at the tiny models' grid: what the best map of that resolution could score
    for point in located["test"].values():
        assert 0.0 <= point["pointing"] <= point["pointing_ceiling"] <= 1.0
    assert card["localization"]["levels"] == levels and "## Localisation" in (workspace / "reports/model_card.md").read_text()
    runs = _register_run_metrics(workspace)
    assert any(key.startswith("loc_high_sensitivity_pointing") for key in runs)


def test_dvc_plots_draw_a_line_per_model(workspace: Path) -> None:
    """``dvc plots show``: the training overlays hold every variant of the workspace's params (here tiny_a and
    tiny_b, which dvc.yaml never names), drawn with the project's template, and ROC has a line per model."""
    shown = json.loads(_plots_json(workspace))
    for title, metric in (("Loss", "loss"), ("Accuracy", "accuracy"), ("AUC", "auc")):
        (plot,) = shown["data"][title]
        rows = plot["content"]["data"]["values"]
        assert {r["model"] for r in rows} == {"tiny_a", "tiny_b"}, title
        assert {r["field"] for r in rows} == {metric, f"val_{metric}"}, title
        assert len(rows) == 2 * 2 * 2  # variants x epochs x (train, validation)
        assert plot["content"]["encoding"]["color"]["field"] == "line"
    (roc,) = shown["data"]["reports/plots/roc.csv"]
    assert {r["model"] for r in roc["content"]["data"]["values"]} == {"tiny_a", "tiny_b", "ensemble"}


def _plots_json(workspace: Path) -> str:
    proc = subprocess.run(
        ["dvc", "plots", "show", "--json"], cwd=workspace, env=_env(workspace), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def _mura_runs(workspace: Path) -> dict[str, Any]:
    import mlflow

    mlflow.set_tracking_uri(_env(workspace)["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["mura"], output_format="list", order_by=["attributes.start_time ASC"])
    return {run.info.run_name: run for run in runs}  # the latest run of each name


def test_runs_record_their_datasets_pipeline_run_and_headline_metrics(workspace: Path) -> None:
    from mura.tracking import dataset_fingerprint

    runs = _mura_runs(workspace)
    digest = dataset_fingerprint(workspace / "data/interim/images.csv", workspace / "data/processed/split.csv")[:32]

    def inputs(name: str) -> dict[str, str]:
        found = {}
        for item in runs[name].inputs.dataset_inputs:
            assert item.dataset.digest == digest and item.dataset.source_type == "local"
            context = {tag.key: tag.value for tag in item.tags}["mlflow.data.context"]
            found[item.dataset.name] = context
        return found

    for variant in ("tiny_a", "tiny_b"):
        assert inputs(variant) == {"synthetic-mura/train": "training", "synthetic-mura/valid": "validation"}
    assert inputs("ensemble") == {
        "synthetic-mura/train": "training",
        "synthetic-mura/valid": "validation",
        "synthetic-mura/test": "test",
    }
    # One `dvc repro`: one pipeline run id on every stage's run.
    pipeline = {runs[name].data.tags.get("mura.pipeline_run") for name in ("tiny_a", "tiny_b", "ensemble")}
    assert len(pipeline) == 1 and next(iter(pipeline)).startswith("dvc-repro-")
    # The ensemble's headline figures are top-level metrics, equal to reports/metrics.json.
    metrics = json.loads((workspace / "reports/metrics.json").read_text())
    study = metrics["test"]["ensemble"]["study"]["default"]
    logged = runs["ensemble"].data.metrics
    assert logged["test_study_kappa"] == pytest.approx(study["kappa"], abs=1e-12)
    assert logged["test_study_accuracy"] == pytest.approx(study["accuracy"], abs=1e-12)
    assert "valid_image_kappa" in logged and "test_study_kappa_high_sensitivity" in logged
    # ...and linked to the logged model (what the model's page and the registered version show).
    import mlflow

    outputs = runs["ensemble"].outputs.model_outputs
    assert len(outputs) == 1
    linked = {m.key: m.value for m in mlflow.get_logged_model(outputs[0].model_id).metrics or []}
    assert linked["test_study_kappa"] == pytest.approx(study["kappa"], abs=1e-12) and linked.keys() == logged.keys()


def test_dvc_experiment_runs_are_tagged_and_match_dvc_exp_show(workspace: Path, tmp_path: Path) -> None:
    """`dvc exp run -S ...` in a git checkout: the MLflow runs carry the experiment's name and
    baseline revision, and report the metrics `dvc exp show` reports for that experiment."""
    import shutil

    ws = tmp_path / "exp"
    shutil.copytree(workspace, ws, symlinks=True)
    env = dict(_env(ws), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@x")

    def run(*cmd: str) -> str:
        proc = subprocess.run(list(cmd), cwd=ws, env=env, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        return proc.stdout

    run("git", "init", "-q")
    run("dvc", "config", "core.no_scm", "false")
    # DVC-cached outputs and the local stores stay out of git; the reports (cache: false metrics and
    # plots) are committed, as in a real repository, so `dvc exp show` reads them from the experiment.
    (ws / ".gitignore").write_text("/data/\n/models/\n/mlflow.db\n/mlartifacts/\n")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "baseline")
    baseline = run("git", "rev-parse", "HEAD").strip()
    run("dvc", "exp", "run", "-n", "lr-up", "-S", "train.epochs=1", "-S", "models.tiny_a.learning_rate=0.002")
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    tagged = mlflow.search_runs(experiment_names=["mura"], filter_string="tags.`dvc.exp_name` = 'lr-up'", output_format="list")
    by_name = {r.info.run_name: r for r in tagged}
    assert set(by_name) == {"tiny_a", "tiny_b", "ensemble"}
    assert {r.data.tags["dvc.exp_baseline_rev"] for r in tagged} == {baseline}
    assert {r.data.tags["mura.pipeline_run"] for r in tagged} == {"dvc-exp-lr-up"}
    assert by_name["tiny_a"].data.params["train.learning_rate"] == "0.002"
    assert by_name["tiny_b"].data.params["train.learning_rate"] == "0.001"  # the shared rate
    assert by_name["tiny_a"].data.params["train.epochs"] == "1"

    def find(node: Any) -> dict[str, Any] | None:  # the experiment's entry, wherever `exp show` nests it
        if isinstance(node, dict):
            if node.get("name") == "lr-up" and "data" in node:
                return node
            node = list(node.values())
        if isinstance(node, list):
            for item in node:
                hit = find(item)
                if hit is not None:
                    return hit
        return None

    shown = find(json.loads(run("dvc", "exp", "show", "--json")))
    assert shown is not None
    files = shown["data"]["metrics"]
    for variant in ("tiny_a", "tiny_b"):
        dvc_auc = files[f"reports/train/{variant}/metrics.json"]["data"]["val_auc"]
        assert by_name[variant].data.metrics["best_val_auc"] == pytest.approx(dvc_auc, abs=1e-9)
    dvc_kappa = files["reports/metrics.json"]["data"]["test"]["ensemble"]["study"]["default"]["kappa"]
    assert by_name["ensemble"].data.metrics["test_study_kappa"] == pytest.approx(dvc_kappa, abs=1e-12)


def test_mlflow_ui_lands_on_the_runs_table_with_datasets(workspace: Path) -> None:
    """`mura mlflow-ui` (what `make mlflow-ui` runs) prints an address whose first screen, in a fresh
    browser profile, is the runs table of our experiment with the Dataset column filled.

    The browser is launched here, not taken from the ``browser`` fixture: pytest-playwright
    parametrizes the tests that use that fixture by browser name, and pytest then regrouped this
    test with the other module's browser tests, so the module's pipeline workspace was built twice
    (53 s of every `make test`)."""
    import threading

    from mura.deploy.processes import free_port

    port = free_port()
    uri = _env(workspace)["MLFLOW_TRACKING_URI"]
    # The venv's own `mura`, started by path with the venv *not* on PATH (as `.venv/bin/mura` by a
    # new user): everything it starts in turn must be found without PATH's help.
    cmd = [str(Path(sys.executable).parent / "mura"), "mlflow-ui", "--tracking-uri", uri, "--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        cwd=workspace,
        env=dict(_env(workspace), PATH="/usr/bin:/bin"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any("http://" in line for line in lines):
            assert proc.poll() is None, "mura mlflow-ui exited"
            time.sleep(0.3)
        url = next(line for line in lines if "http://" in line).split()[-1]
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/") and url.endswith("/runs?workflowType=machine_learning")
        with chromium() as browser:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})  # a fresh profile: empty storage
            page = context.new_page()
            page.goto(url)
            for name in ("tiny_a", "tiny_b", "ensemble"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
            page.get_by_text("synthetic-mura/train").first.wait_for(timeout=30_000)
            text = page.inner_text("body")
            assert "Detect issues in your traces" not in text  # not the GenAI overview
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "mlflow-runs.png"))
            context.close()
        telemetry = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/ajax-api/3.0/mlflow/ui-telemetry").read())
        assert telemetry["disable_ui_telemetry"] is True
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_pipeline_is_reproducible(workspace: Path, repo_root: Path, tmp_path: Path) -> None:
    """Run from clean twice: byte-identical data outputs, metrics equal within 1e-6 (the CI check)."""
    again = create_workspace(repo_root, tmp_path / "again", {**OVERRIDE, "serve": {"enabled": False}})  # served once above
    write_synthetic(again / "data/raw/synthetic", seed=5, sizes=SynthParams(patients=30, fracture_images=0))
    _dvc(again, "repro")
    for rel in ("data/interim/images.csv", "data/interim/pixels.npy", "data/processed/split.csv", "reports/class_weights.json"):
        assert (again / rel).read_bytes() == (workspace / rel).read_bytes(), rel

    def numbers(path: Path) -> dict[str, float]:
        flat = pd.json_normalize(json.loads(path.read_text())).iloc[0].to_dict()
        return {k: float(v) for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    for rel in ("reports/train/tiny_a/metrics.json", "reports/train/tiny_b/metrics.json", "reports/metrics.json"):
        a, b = numbers(workspace / rel), numbers(again / rel)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-6, nan_ok=True), (rel, key)
    assert "up to date" in _dvc(again, "status").lower()


def test_changing_one_variant_reruns_only_it(workspace: Path) -> None:
    params_file = workspace / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["models"]["tiny_b"]["dropout"] = 0.3
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    out = _dvc(workspace, "repro")
    assert "Running stage 'train@tiny_b'" in out
    assert "Running stage 'train@tiny_a'" not in out and "Running stage 'ingest'" not in out


def test_changing_the_calibration_method_reruns_only_what_depends_on_it(workspace: Path) -> None:
    params_file = workspace / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["calibrate"]["method"] = "isotonic"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    status = _dvc(workspace, "status")
    assert "calibrate:" in status and "ensemble:" not in status and "train@" not in status
    out = _dvc(workspace, "repro", "calibrate")
    assert "Running stage 'calibrate'" in out and "Running stage 'ensemble'" not in out
    assert json.loads((workspace / "reports/thresholds.json").read_text())["calibration"]["requested"] == "isotonic"


def test_bad_variant_param_is_one_line_error(workspace: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "stages/train.py", "--model", "nope"],
        cwd=workspace,
        env=_env(workspace),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: unknown model variant 'nope'")


def test_resume_after_kill(workspace: Path) -> None:
    params_file = workspace / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["train"]["epochs"] = 4
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    history = workspace / "models/checkpoints/tiny_a/history.csv"
    cmd = [sys.executable, "stages/train.py", "--model", "tiny_a"]
    proc = subprocess.Popen(
        cmd,
        cwd=workspace,
        env=_env(workspace),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(pd.read_csv(history))
    assert 2 <= done_before < 4
    again = subprocess.run(cmd, cwd=workspace, env=_env(workspace), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stderr
    final = pd.read_csv(workspace / "reports/train/tiny_a/history.csv")
    assert final["epoch"].tolist() == [0, 1, 2, 3]
    # Resumed from the last completed epoch (or the one before, if the kill corrupted the latest backup).
    output = again.stdout + again.stderr
    assert "Epoch 1/4" not in output
    assert f"Epoch {done_before + 1}/4" in output or f"Epoch {done_before}/4" in output


def test_radiologists_feedback_exported_with_dvc_is_trained_on_and_never_tested(workspace: Path, tmp_path: Path) -> None:
    """Reviewed answers → `mura feedback export --dvc` → `dvc repro` ingests them as train rows and trains on them."""
    import datetime as dt

    import numpy as np
    from PIL import Image

    from mura.operations.feedback import Answer, FeedbackStore, Review

    store = FeedbackStore(tmp_path / "feedback")
    views = sorted((workspace / "data/raw/synthetic").rglob("image1.png"))[:5]
    plan = [  # (model label, assessment, radiologist label, body part)
        ("abnormal", "agree", "abnormal", "XR_WRIST"),
        ("abnormal", "disagree", "normal", "XR_HAND"),
        ("normal", "reject", "abnormal", "XR_ELBOW"),
        ("normal", "agree", "normal", None),  # no body part: left out of the export
    ]
    for k, (label, assessment, truth, part) in enumerate(plan):
        answer = Answer(f"a{k}", store.key(f"study-{k}"), "web", "mura-ensemble", "1", "default", 0.5, 0.5, label,  # type: ignore[arg-type]
                        part, True, 1, dt.datetime.now(dt.UTC))  # fmt: skip
        store.record_answer(answer, [np.asarray(Image.open(views[k]).convert("L"))])
        store.record_review(Review(f"a{k}", "web", "alice", assessment, truth, reason="patient Jane Doe"))  # type: ignore[arg-type]
    store.record_answer(Answer("unreviewed", store.key("s"), "web", "m", "1", "default", 0.5, 0.5, "normal", "XR_HAND", True, 1,
                               dt.datetime.now(dt.UTC)), [np.asarray(Image.open(views[4]).convert("L"))])  # fmt: skip
    before = pd.read_csv(workspace / "data/processed/split.csv")
    exported = subprocess.run(
        [sys.executable, "-m", "mura.cli", "feedback", "export", "--feedback-dir", str(tmp_path / "feedback")]
        + ["--out", "data/feedback", "--name", "export-test", "--dvc"],
        cwd=workspace,
        env=_env(workspace),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "3 studies (3 images: 1 confirmations, 2 disagreements)" in exported.stdout and "left out: 1" in exported.stdout
    folder = workspace / "data/feedback/export-test"
    assert (workspace / "data/feedback/export-test.dvc").exists() and (folder / "SYNTHETIC_DATA_README.txt").exists()
    provenance = pd.read_csv(folder / "provenance.csv")
    assert sorted(provenance["assessment"]) == ["agree", "disagree", "reject"] and "reviewer" not in provenance.columns
    assert "Jane" not in (folder / "provenance.csv").read_text()
    assert "ingest" in _dvc(workspace, "status")
    _dvc(workspace, "repro", "train@tiny_a")
    images = pd.read_csv(workspace / "data/interim/images.csv")
    feedback = images[images["dataset"] == "feedback"]
    labelled = sorted(zip(feedback["body_part"], feedback["label"], strict=True))
    assert labelled == [("XR_ELBOW", 1), ("XR_HAND", 0), ("XR_WRIST", 1)]
    after = pd.read_csv(workspace / "data/processed/split.csv")
    assert set(after[after["image_id"].isin(feedback["image_id"])]["split"]) == {"train"}
    for name in ("valid", "test"):  # the held-out sets are what they were
        assert set(after[after["split"] == name]["image_id"]) == set(before[before["split"] == name]["image_id"])
    trained = json.loads((workspace / "reports/train/tiny_a/metrics.json").read_text())
    assert trained["train_images"] == int((before["split"] == "train").sum()) + 3


def test_external_test_sets_are_ingested_predicted_and_reported_apart(workspace: Path) -> None:
    """FracAtlas and GRAZPEDWRI-DX in their real layouts under data/external: the `external` split, evaluated, localised apart."""
    from tests.external_layouts import write_fracatlas, write_grazpedwri

    before = pd.read_csv(workspace / "data/processed/split.csv")
    write_fracatlas(workspace / "data/external")
    write_grazpedwri(workspace / "data/external")
    _dvc(workspace, "repro", "evaluate")
    after = pd.read_csv(workspace / "data/processed/split.csv")
    for name in ("train", "valid", "test"):  # MURA's splits are what they were
        assert set(after[after["split"] == name]["image_id"]) == set(before[before["split"] == name]["image_id"])
    assert (after["split"] == "external").sum() == 7  # 4 FracAtlas hand/shoulder images, 3 GRAZPEDWRI-DX wrists
    assert len(pd.read_csv(workspace / "reports/predictions/external.csv")) == 7
    table = pd.read_csv(workspace / "reports/per_body_part.csv")
    external = table[(table["split"] == "external") & (table["model"] == "ensemble") & (table["level"] == "study")]
    assert {"dataset:fracatlas", "dataset:grazpedwri", "XR_HAND", "XR_SHOULDER", "XR_WRIST"} <= set(external["group"])
    assert "external" in json.loads((workspace / "reports/metrics.json").read_text())
    report = (workspace / "reports/README.md").read_text()
    assert "## External test sets" in report and "| fracatlas | 4 |" in report and "| grazpedwri | 2 |" in report
    # their own boxes (FracAtlas's COCO file, GRAZPEDWRI-DX's YOLO labels): localisation on each, apart from test
    _dvc(workspace, "repro", "localize")
    localization = json.loads((workspace / "reports/localization.json").read_text())
    assert set(localization["external"]) == {"fracatlas", "grazpedwri"} and "test" in localization
    assert set(localization["external"]["fracatlas"]) == set(localization["levels"])
    evaluated_on = pd.read_csv(workspace / "reports/localization.csv")["evaluated_on"]
    assert set(evaluated_on) == {"test", "fracatlas", "grazpedwri"}
