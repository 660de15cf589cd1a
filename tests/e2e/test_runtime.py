"""The optimized runtime against the Keras reference, on a model registered for real (conftest `registered`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest

from mura.api import Predictor
from mura.runtime.runners import OpenVinoRunner
from tests.e2e.conftest import register_variants
from tests.helpers import SIZE

pytestmark = pytest.mark.slow


def _load(registered: dict[str, Any], version: int, runtime: str) -> Predictor:
    os.environ["MURA_RUNTIME"] = runtime
    try:
        return Predictor.load(f"models:/mura-ensemble/{version}", tracking_uri=registered["uri"])
    finally:
        os.environ.pop("MURA_RUNTIME")


@pytest.fixture(scope="module")
def runtimes(registered: dict[str, Any]) -> dict[str, Predictor]:
    # Version 2 was registered with an impossible reduced-precision limit: it serves float32.
    return {"keras": _load(registered, 2, "keras"), "optimized": _load(registered, 2, "optimized")}


def test_register_exports_and_records_the_precision_check(registered: dict[str, Any]) -> None:
    client = mlflow.MlflowClient(tracking_uri=registered["uri"])
    first, second = (client.get_model_version("mura-ensemble", str(v)) for v in (1, 2))
    assert first.tags["runtime"] == "auto" and first.tags["optimized_precision"] in ("bf16", "f32", "int8")
    assert first.tags["allowed_precisions"].startswith("f32") and "int8_max_abs_dp" in first.tags
    assert second.tags["optimized_precision"] == "f32" and second.tags["allowed_precisions"] == "f32"
    assert registered["second"]["optimized_precision"] == "f32"
    config = _load(registered, 2, "optimized").config
    check = config.precision_check
    assert check is not None and check.limits is not None and check.f32 is not None and check.int8 is not None
    assert config.optimized_precision == "f32" and check.precision == "f32" and config.allowed_precisions == ("f32",)
    assert check.f32.max_abs_dp <= 1e-4 and check.f32.images == 10 and check.f32.studies == 5
    # int8 was exported (register.int8), run on valid, measured and rejected by the impossible limit.
    assert check.int8.images == 10 and check.int8.max_abs_dp > 0
    assert check.verdicts["int8"].startswith("int8 rejected: max |dp|")
    assert "; max |dp| per variant: tiny_a " in check.verdicts["int8"] and len(check.int8.variant_max_abs_dp) == 2
    assert check.verdicts["bf16"].startswith(("bf16 rejected", "bf16: not available"))
    assert float(second.tags["int8_max_abs_dp"]) == pytest.approx(check.int8.max_abs_dp, rel=1e-2)


def test_the_keras_files_are_run_files_that_only_the_keras_runtime_fetches(
    registered: dict[str, Any], runtimes: dict[str, Predictor]
) -> None:
    """A server on the optimized runtime copies no ``.keras`` file; the Keras runtime downloads them from the run."""
    local = Path(mlflow.artifacts.download_artifacts("models:/mura-ensemble/2", tracking_uri=registered["uri"]))
    assert (local / "artifacts" / "optimized").is_dir() and not list(local.rglob("*.keras"))
    config = runtimes["optimized"].config
    run_id = registered["second"]["run_id"]
    assert config.keras_variants_uri == f"runs:/{run_id}/keras"
    files = mlflow.MlflowClient(tracking_uri=registered["uri"]).list_artifacts(run_id, "keras")
    assert sorted(Path(f.path).name for f in files) == ["tiny_a.keras", "tiny_b.keras"]
    assert runtimes["keras"].service.runner.description.startswith("Keras (")  # loaded from the downloaded files


def test_runtime_parity_probabilities_and_heatmaps(runtimes: dict[str, Predictor]) -> None:
    assert runtimes["optimized"].service.runtime == "optimized" and runtimes["keras"].service.runtime == "keras"
    views = [np.random.default_rng(k).integers(0, 256, (48, 40)).astype(np.uint8) for k in range(3)]
    keras_result = runtimes["keras"].predict_study(views, heatmaps=True)
    fast_result = runtimes["optimized"].predict_study(views, heatmaps=True)
    assert abs(keras_result.probability - fast_result.probability) <= 1e-4
    for a, b in zip(keras_result.views, fast_result.views, strict=True):
        assert max(abs(a.variants[n] - b.variants[n]) for n in a.variants) <= 1e-4
        assert set(a.heatmaps) == set(b.heatmaps) == {"tiny_a", "tiny_b", "ensemble"}
        for name in a.heatmaps:
            np.testing.assert_allclose(b.heatmaps[name], a.heatmaps[name], atol=1e-3, err_msg=name)


def test_a_reduced_precision_serves_only_when_allowed_and_stays_within_its_limit(registered: dict[str, Any]) -> None:
    predictor = _load(registered, 1, "optimized")
    reference = _load(registered, 1, "keras")
    config = predictor.config
    check = config.precision_check
    assert check is not None and check.limits is not None
    passed = [p for p in ("bf16", "int8") if check.verdicts[p].startswith(f"{p} allowed")]
    assert set(config.allowed_precisions) == {"f32", *passed}
    assert predictor.service.runner.precision in config.allowed_precisions
    if predictor.service.runner.precision == "f32":
        pytest.skip(f"version 1 serves float32 on this CPU: {check.reason}")
    views = [np.random.default_rng(10 + k).integers(0, 256, (32, 32)).astype(np.uint8) for k in range(4)]
    delta = abs(predictor.predict_study(views).probability - reference.predict_study(views).probability)
    assert delta <= check.limits.max_abs_dp


def test_int8_serves_probabilities_and_float32_the_heatmaps(registered: dict[str, Any], monkeypatch) -> None:
    """Forced int8 (exported even where rejected): heatmaps from the float32 pass equal Keras' Grad-CAM within 1e-3."""
    monkeypatch.setenv("MURA_PRECISION", "int8")
    fast = _load(registered, 2, "optimized")
    assert fast.service.runner.precision == "int8"
    monkeypatch.delenv("MURA_PRECISION")
    keras_predictor = _load(registered, 2, "keras")
    views = [np.random.default_rng(20 + k).integers(0, 256, (40, 40)).astype(np.uint8) for k in range(2)]
    fast_plain = fast.predict_study(views)
    fast_maps, reference = fast.predict_study(views, heatmaps=True), keras_predictor.predict_study(views, heatmaps=True)
    assert abs(fast_plain.probability - reference.probability) < 0.05
    # The served precision answers with or without heatmaps: every entry point gives one number.
    assert fast_maps.probability == pytest.approx(fast_plain.probability, abs=1e-6)
    for a, b in zip(reference.views, fast_maps.views, strict=True):
        for name in a.heatmaps:
            np.testing.assert_allclose(b.heatmaps[name], a.heatmaps[name], atol=1e-3, err_msg=name)


NO_TENSORFLOW = """
import json, sys
import mlflow, numpy as np
mlflow.set_tracking_uri(sys.argv[1])
from mura.api import Predictor
predictor = Predictor.load("models:/mura-ensemble/2")
result = predictor.predict_study([np.zeros((40, 40), np.uint8)], heatmaps=True)
print(json.dumps({"tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules,
                  "runtime": predictor.service.runtime, "probability": result.probability}))
"""


def test_serving_on_the_optimized_runtime_never_imports_tensorflow(registered: dict[str, Any]) -> None:
    proc = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, registered["uri"]], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {**report, "tensorflow": False, "keras": False, "runtime": "optimized"}
    assert 0.0 <= report["probability"] <= 1.0


def test_a_concurrent_server_gets_one_stream_per_study(registered: dict[str, Any]) -> None:
    """`mura serve-ui` loads with concurrent=N: OpenVINO then runs N streams instead of one on every core."""
    single = Predictor.load("models:/mura-ensemble/2", tracking_uri=registered["uri"])
    server = Predictor.load("models:/mura-ensemble/2", tracking_uri=registered["uri"], concurrent=2)
    assert single.thread_safe and server.thread_safe
    runners = [p.service.runner for p in (single, server)]
    assert all(isinstance(r, OpenVinoRunner) for r in runners)
    assert [int(r.compiled.get_property("NUM_STREAMS")) for r in runners if isinstance(r, OpenVinoRunner)] == [1, 2]


def _scaled_head(seed: int, scale: float, pixels: np.ndarray) -> Any:
    """A simple_cnn whose output logit is ``scale`` times the random one, centred on ``pixels`` (p spread around 0.5)."""
    import keras

    from mura.config import AugmentParams, ModelSpec
    from mura.modeling.models import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(ModelSpec("simple_cnn", dense_units=8, dropout=0.1), SIZE, "none", AugmentParams(), seed=seed)
    head = model.get_layer("abnormal")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * scale, bias])
    p = model.predict(pixels[..., None], verbose=0).ravel().astype(np.float64)
    logits = np.log(np.clip(p, 1e-12, 1) / np.clip(1 - p, 1e-12, 1))
    head.set_weights([kernel * scale, bias - np.float32(np.median(logits))])
    return model


def test_int8_serves_the_variants_that_keep_within_the_limit_and_float32_the_others(repo_root: Path, tmp_path: Path) -> None:
    """A variant whose output int8 moves too far blocks int8 for the ensemble; register then quantizes the others
    alone, checks the mix like any precision, and serves it: the calm variant in int8, the touchy one exact."""
    pixels = np.random.default_rng(0).integers(0, 256, (12, SIZE, SIZE)).astype(np.uint8)  # register_variants' images
    models = {"calm": _scaled_head(0, 0.01, pixels), "touchy": _scaled_head(1, 3000.0, pixels)}
    done = register_variants(repo_root, tmp_path, models)
    assert done["first"]["optimized_precision"] in ("int8", "f32", "bf16")
    client = mlflow.MlflowClient(tracking_uri=done["uri"])
    tags = client.get_model_version("mura-ensemble", "1").tags
    assert tags["int8_variants"] == "calm" and "int8" in tags["allowed_precisions"].split(",")
    predictor = _load({"uri": done["uri"]}, 1, "optimized")
    check = predictor.config.precision_check
    assert check is not None and check.limits is not None and check.f32 is not None and check.int8 is not None
    assert check.int8_variants == ("calm",)
    assert check.verdicts["int8"].startswith("int8 allowed") and "int8 for calm only" in check.verdicts["int8"]
    assert "touchy" in check.verdicts["int8"].split("all in int8: ")[1]  # why the full int8 was not kept
    calm_dp, touchy_dp = check.int8.variant_max_abs_dp
    assert touchy_dp <= 1e-4 and calm_dp <= check.limits.max_abs_dp  # the touchy variant ran in float32
    served = predictor.service.runner
    assert isinstance(served, OpenVinoRunner)
    runner = OpenVinoRunner(served.optimized_dir, ["calm", "touchy"], 8, warm_up=False, force="int8")
    exact = OpenVinoRunner(served.optimized_dir, ["calm", "touchy"], 8, warm_up=False, force="f32")
    np.testing.assert_allclose(runner.predict(pixels)[:, 1], exact.predict(pixels)[:, 1], atol=1e-4)
