"""The reduced-precision guard: pure comparison and decision (the export itself runs in tests/e2e/test_runtime.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mura.serving.export import choose_precision, compare_runtimes

ROWS = pd.DataFrame({"study_id": ["a", "a", "b", "c"], "label": [1, 1, 0, 0]})
REFERENCE = np.array([[0.9, 0.7], [0.6, 0.5], [0.2, 0.4], [0.49, 0.52]])


def test_identical_runtimes_agree_fully() -> None:
    result = compare_runtimes(REFERENCE, REFERENCE.copy(), ROWS, [1.0, 1.0], {"default": 0.5, "high_sensitivity": 0.3})
    assert result == {"max_abs_dp": 0.0, "studies": 3, "images": 4, "agreement": {"default": 1.0, "high_sensitivity": 1.0}}


def test_a_small_shift_that_flips_one_study() -> None:
    # Study c: mean .505 -> .495 with a shift of -.01 on both variants: its label flips at 0.5.
    candidate = REFERENCE.copy()
    candidate[3] -= 0.01
    result = compare_runtimes(REFERENCE, candidate, ROWS, [1.0, 1.0], {"default": 0.5})
    assert result["max_abs_dp"] == pytest.approx(0.01)
    assert result["agreement"]["default"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "bf16,expected",
    [
        ({"max_abs_dp": 0.003, "agreement": {"default": 1.0, "high_sensitivity": 0.996}}, "bf16"),
        ({"max_abs_dp": 0.02, "agreement": {"default": 1.0}}, "f32"),  # |dp| too large
        ({"max_abs_dp": 0.003, "agreement": {"default": 1.0, "high_sensitivity": 0.99}}, "f32"),  # a label flipped too often
        (None, "f32"),  # no native bf16
    ],
)
def test_choose_precision(bf16: dict | None, expected: str) -> None:
    precision, reason = choose_precision(bf16, 0.01, 0.995)
    assert precision == expected and reason
    if bf16 is not None and expected == "f32":
        assert reason.startswith("bf16 rejected")


def test_export_runner_parity_and_the_remembered_precision(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two tiny variants exported: OpenVINO float32 equals Keras; a bf16-allowed load picks and remembers a precision."""
    import keras

    from mura.config import ModelSpec
    from mura.modeling.inference import VariantRunner
    from mura.modeling.models import build_model
    from mura.serving.export import export_optimized
    from mura.serving.runtime import MODEL_XML, OpenVinoRunner, cpu_has_bf16

    paths = {}
    for k, name in enumerate(("a", "b")):
        keras.utils.set_random_seed(k)
        paths[name] = tmp_path / f"{name}.keras"
        build_model(ModelSpec("simple_cnn", dense_units=8, dropout=0.1), 32, "none", None, seed=k).save(paths[name])
    out = export_optimized(paths, tmp_path / "optimized")
    pixels = np.random.default_rng(0).integers(0, 256, (5, 32, 32)).astype(np.uint8)
    reference = VariantRunner.from_paths(paths).predict(pixels)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    f32 = OpenVinoRunner(out / MODEL_XML, ["a", "b"], batch_size=2, precision="f32")
    np.testing.assert_allclose(f32.predict(pixels), reference, atol=1e-5)
    probabilities, maps = f32.predict_with_features(pixels)
    assert probabilities.shape == (5, 2) and [m.shape[0] for m in maps] == [5, 5]
    allowed = OpenVinoRunner(out / MODEL_XML, ["a", "b"], batch_size=2, precision="bf16")
    cache = tmp_path / "cache" / "mura" / "precision.json"
    if not cpu_has_bf16():
        assert allowed.precision == "f32" and not cache.exists()
        return
    remembered = json.loads(cache.read_text())
    assert list(remembered.values()) == [allowed.precision]
    again = OpenVinoRunner(out / MODEL_XML, ["a", "b"], batch_size=2, precision="bf16")
    assert again.precision == allowed.precision
    monkeypatch.setenv("MURA_PRECISION", "bf16")
    assert OpenVinoRunner(out / MODEL_XML, ["a", "b"], batch_size=2, precision="f32").precision == "bf16"
