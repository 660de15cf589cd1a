"""The reduced-precision guard (pure comparison and verdict), and the exported runner in each precision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mura.config import Precision
from mura.packaging.export import compare_runtimes, int8_variants, judge_precision
from mura.runtime.precision_check import PrecisionCheck, PrecisionLimits, RuntimeComparison

ROWS = pd.DataFrame({"study_id": ["a", "a", "b", "c"], "label": [1, 1, 0, 0]})
REFERENCE = np.array([[0.9, 0.7], [0.6, 0.5], [0.2, 0.4], [0.49, 0.52]])


def test_identical_runtimes_agree_fully() -> None:
    result = compare_runtimes(REFERENCE, REFERENCE.copy(), ROWS, [1.0, 1.0], {"default": 0.5, "high_sensitivity": 0.3})
    assert result == RuntimeComparison(
        max_abs_dp=0.0,
        agreement={"default": 1.0, "high_sensitivity": 1.0},
        studies=3,
        images=4,
        variant_max_abs_dp=(0.0, 0.0),
    )


def test_each_variant_has_its_own_largest_shift() -> None:
    candidate = REFERENCE.copy()
    candidate[0, 1] += 0.05  # only the second variant moves
    result = compare_runtimes(REFERENCE, candidate, ROWS, [1.0, 1.0], {"default": 0.5})
    assert result.variant_max_abs_dp == pytest.approx([0.0, 0.05]) and result.max_abs_dp == pytest.approx(0.05)


def test_a_small_shift_that_flips_one_study() -> None:
    # Study c: mean .505 -> .495 with a shift of -.01 on both variants: its label flips at 0.5.
    candidate = REFERENCE.copy()
    candidate[3] -= 0.01
    result = compare_runtimes(REFERENCE, candidate, ROWS, [1.0, 1.0], {"default": 0.5})
    assert result.max_abs_dp == pytest.approx(0.01)
    assert result.variant_max_abs_dp == pytest.approx([0.01, 0.01])
    assert result.agreement["default"] == pytest.approx(2 / 3) and result.worst_agreement == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "comparison,allowed",
    [
        (RuntimeComparison(0.003, {"default": 1.0, "high_sensitivity": 0.996}), True),
        (RuntimeComparison(0.02, {"default": 1.0}), False),  # |dp| too large
        (RuntimeComparison(0.003, {"default": 1.0, "high_sensitivity": 0.99}), False),  # a label flipped too often
        (None, False),  # could not run here (no native bf16, or no int8 export)
    ],
)
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_judge_precision(precision: str, comparison: RuntimeComparison | None, allowed: bool) -> None:
    ok, reason = judge_precision(precision, comparison, PrecisionLimits(0.01, 0.995))
    assert ok is allowed
    if comparison is None:
        assert reason.startswith(f"{precision}: not available")
    else:
        assert reason.startswith(f"{precision} {'allowed' if allowed else 'rejected'}: max |dp|")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two tiny variants exported to float32 and quantized to int8 on 16 calibration images, one worker process each."""
    import keras

    from mura.config import ModelSpec
    from mura.modeling.models import build_model
    from mura.packaging.export import export_optimized

    tmp = tmp_path_factory.mktemp("export")
    paths = {}
    for k, name in enumerate(("a", "b")):
        keras.utils.set_random_seed(k)
        paths[name] = tmp / f"{name}.keras"
        build_model(ModelSpec("simple_cnn", dense_units=8, dropout=0.1), 32, "none", None, seed=k).save(paths[name])
    calibration = np.random.default_rng(1).integers(0, 256, (16, 32, 32)).astype(np.uint8)
    export = export_optimized(paths, tmp / "optimized", calibration=calibration, workers=2)
    pixels = np.random.default_rng(0).integers(0, 256, (5, 32, 32)).astype(np.uint8)
    return {"paths": paths, "dir": export.dir, "export": export, "pixels": pixels}


def test_float32_runner_equals_keras(exported: dict, tmp_path, monkeypatch) -> None:
    from mura.modeling.inference import VariantRunner
    from mura.runtime.runners import OpenVinoRunner

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pixels = exported["pixels"]
    reference = VariantRunner.from_paths(exported["paths"]).predict(pixels)
    f32 = OpenVinoRunner(exported["dir"], ["a", "b"], batch_size=2)  # only float32 allowed: int8 is not used
    assert f32.precision == "f32"
    np.testing.assert_allclose(f32.predict(pixels), reference, atol=1e-5)
    probabilities, maps = f32.predict_with_features(pixels)
    assert probabilities.shape == (5, 2) and [m.shape[0] for m in maps] == [5, 5]
    assert not (tmp_path / "cache").exists()  # one candidate: nothing timed, nothing remembered


def test_int8_runs_close_to_float32_and_its_heatmaps_come_from_float32(exported: dict, tmp_path, monkeypatch) -> None:
    from mura.runtime.runners import OpenVinoRunner

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pixels = exported["pixels"]
    f32 = OpenVinoRunner(exported["dir"], ["a", "b"], batch_size=2)
    int8 = OpenVinoRunner(exported["dir"], ["a", "b"], batch_size=2, force="int8")
    assert int8.precision == "int8"
    delta = np.abs(int8.predict(pixels) - f32.predict(pixels))
    assert 0 < delta.max() < 0.05  # quantized (not the float graph), and close to it on a random tiny model
    # Grad-CAM reads the float32 feature maps: exact heatmaps whatever serves the probabilities.
    f32_probs, f32_maps = f32.predict_with_features(pixels)
    int8_probs, int8_maps = int8.predict_with_features(pixels)
    np.testing.assert_array_equal(int8_probs, f32_probs)
    for a, b in zip(f32_maps, int8_maps, strict=True):
        np.testing.assert_array_equal(a, b)


def test_compiled_models_are_cached_and_answer_alike(exported: dict, tmp_path, monkeypatch) -> None:
    from mura.runtime.runners import OpenVinoRunner, compile_cache_dir

    monkeypatch.setenv("MURA_OV_CACHE", str(tmp_path / "ov"))
    assert compile_cache_dir() == tmp_path / "ov"
    first = OpenVinoRunner(exported["dir"], ["a", "b"], batch_size=2).predict(exported["pixels"])
    blobs = sorted((tmp_path / "ov").glob("*.blob"))
    assert blobs  # OpenVINO wrote the compiled model
    again = OpenVinoRunner(exported["dir"], ["a", "b"], batch_size=2).predict(exported["pixels"])
    np.testing.assert_array_equal(first, again)  # imported from the cache, same numbers
    assert sorted((tmp_path / "ov").glob("*.blob")) == blobs  # nothing compiled twice
    monkeypatch.setenv("MURA_OV_CACHE", "off")
    assert compile_cache_dir() is None


def test_the_compile_cache_keeps_the_most_recent_models_within_its_budget(tmp_path, monkeypatch) -> None:
    import os

    from mura.errors import ConfigError
    from mura.runtime.runners import _cache_budget_bytes, prune_compile_cache

    mb = 2**20
    for age, name in enumerate(["newest", "recent", "old", "oldest"]):
        (tmp_path / f"{name}.blob").write_bytes(b"x" * mb)
        os.utime(tmp_path / f"{name}.blob", (1_000_000 - age * 100, 1_000_000 - age * 100))
    (tmp_path / "notes.txt").write_bytes(b"x" * 3 * mb)  # not OpenVINO's: never touched
    os.utime(tmp_path / "old.blob", (1_000_500, 1_000_000 - 200))  # read lately: as recent as its last access

    removed = prune_compile_cache(tmp_path, 2 * mb)
    assert sorted(p.name for p in removed) == ["oldest.blob", "recent.blob"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newest.blob", "notes.txt", "old.blob"]
    assert prune_compile_cache(tmp_path, 0, keep_since=999_999) == []  # both used since: a server's own entries stay
    assert prune_compile_cache(tmp_path, 0) == [tmp_path / "newest.blob"]  # the most recent stays, even over budget
    assert (tmp_path / "old.blob").exists() and prune_compile_cache(tmp_path, 0) == []

    monkeypatch.setenv("MURA_OV_CACHE_MAX_MB", "1.5")
    assert _cache_budget_bytes() == int(1.5 * mb)
    monkeypatch.setenv("MURA_OV_CACHE_MAX_MB", "lots")
    with pytest.raises(ConfigError, match="MURA_OV_CACHE_MAX_MB"):
        _cache_budget_bytes()


def test_a_server_start_keeps_the_cache_within_budget_and_registers_checks_write_nothing(
    exported: dict, tmp_path, monkeypatch
) -> None:
    import os

    from mura.modeling.inference import VariantRunner
    from mura.packaging.export import KerasReference, check_precision
    from mura.runtime.runners import OpenVinoRunner

    cache = tmp_path / "ov"
    monkeypatch.setenv("MURA_OV_CACHE", str(cache))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    pixels = exported["pixels"]
    reference = VariantRunner.from_paths(exported["paths"]).predict(pixels)
    predictions = pd.DataFrame({"study_id": ["s1", "s1", "s2", "s3", "s3"], "label": [1, 1, 0, 0, 0]})
    predictions = predictions.assign(p_a=reference[:, 0], p_b=reference[:, 1])
    keras = KerasReference(["a", "b"], predictions, pixels, [1.0, 1.0], {"default": 0.5})
    check = check_precision(exported["dir"], keras, PrecisionLimits(0.01, 0.995), 2)
    assert check.f32 is not None and check.f32.max_abs_dp < 1e-5 and check.int8 is not None  # both compiled and ran ...
    assert not list(cache.glob("*.blob"))  # ... without a blob left behind for a model this machine may never serve

    cache.mkdir()
    stale = cache / "0123.blob"
    stale.write_bytes(b"x" * 2**20)
    os.utime(stale, (1_000_000, 1_000_000))  # another model's entry, last used long ago
    monkeypatch.setenv("MURA_OV_CACHE_MAX_MB", "0.5")
    OpenVinoRunner(exported["dir"], ["a", "b"], batch_size=2, warm_up=False)
    assert not stale.exists() and len(list(cache.glob("*.blob"))) == 1  # this server's own compiled model stays


def test_the_fastest_allowed_precision_is_timed_once_and_remembered(exported: dict, tmp_path, monkeypatch) -> None:
    from mura.errors import ConfigError
    from mura.runtime.numeric_precision import available_precisions, cpu_has_bf16
    from mura.runtime.runners import OpenVinoRunner

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    allowed = ("f32", "bf16", "int8")
    expected = ["f32", "bf16", "int8"] if cpu_has_bf16() else ["f32", "int8"]
    assert available_precisions(exported["dir"], allowed) == expected
    first = OpenVinoRunner(exported["dir"], ["a", "b"], batch_size=2, allowed=allowed)
    cache = tmp_path / "cache" / "mura" / "precision.json"
    remembered = json.loads(cache.read_text())
    assert list(remembered.values()) == [first.precision] and first.precision in expected
    assert list(remembered)[0].endswith("/".join(expected))  # the key names the candidates
    again = OpenVinoRunner(exported["dir"], ["a", "b"], batch_size=2, allowed=allowed)
    assert again.precision == first.precision
    monkeypatch.setenv("MURA_PRECISION", "int8")
    assert OpenVinoRunner(exported["dir"], ["a", "b"], batch_size=2).precision == "int8"
    monkeypatch.setenv("MURA_PRECISION", "fp4")
    with pytest.raises(ConfigError, match="MURA_PRECISION='fp4'"):
        OpenVinoRunner(exported["dir"], ["a", "b"], batch_size=2)
    (exported["dir"] / "model_int8.xml").rename(tmp_path / "moved.xml")
    try:
        monkeypatch.setenv("MURA_PRECISION", "int8")
        with pytest.raises(ConfigError, match="no int8 export"):
            OpenVinoRunner(exported["dir"], ["a", "b"], batch_size=2)
        monkeypatch.delenv("MURA_PRECISION")
        assert available_precisions(exported["dir"], allowed) == expected[:-1]  # an export without int8 serves without it
    finally:
        (tmp_path / "moved.xml").rename(exported["dir"] / "model_int8.xml")


def test_inference_copies_drop_the_optimizer_state_and_predict_alike(tmp_path: Path) -> None:
    import keras

    from mura.config import ModelSpec
    from mura.modeling.models import build_model
    from mura.packaging.export import inference_copies

    model = build_model(ModelSpec("simple_cnn", dense_units=8, dropout=0.1), 32, "none", None, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    model.optimizer.build(model.trainable_variables)  # Adam's moments exist, as after training
    trained = tmp_path / "a.keras"
    model.save(trained)
    copy = inference_copies({"a": trained}, tmp_path / "served")["a"]
    assert copy.stat().st_size < 0.6 * trained.stat().st_size  # the two moments per weight are gone
    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1)).astype(np.uint8)
    original = keras.saving.load_model(trained, compile=False)
    served = keras.saving.load_model(copy, compile=False)
    np.testing.assert_array_equal(np.asarray(served(pixels, training=False)), np.asarray(original(pixels, training=False)))


def test_the_training_save_has_no_optimizer_state_and_its_serving_copy_is_the_same_file(tmp_path: Path) -> None:
    import keras

    from mura.config import ModelSpec
    from mura.modeling.callbacks import save_model_atomic
    from mura.modeling.models import build_model
    from mura.packaging.export import has_optimizer_state, inference_copies

    model = build_model(ModelSpec("simple_cnn", dense_units=8, dropout=0.1), 32, "none", None, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    model.optimizer.build(model.trainable_variables)
    with_state, trained = tmp_path / "with_state.keras", tmp_path / "a.keras"
    model.save(with_state)
    save_model_atomic(model, trained)  # what the training stage writes
    assert has_optimizer_state(with_state) and not has_optimizer_state(trained)
    assert trained.stat().st_size < 0.6 * with_state.stat().st_size
    assert model.optimizer is not None  # the model itself stays compiled: training goes on
    loaded = keras.saving.load_model(trained, compile=False)
    assert loaded.name == model.name and [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    original_config = keras.saving.load_model(with_state, compile=False).get_config()
    for key in ("input_layers", "output_layers"):  # one tensor in, one out: not one-element lists
        assert loaded.get_config()[key] == original_config[key]
    assert not isinstance(loaded(keras.Input((32, 32, 1), dtype="uint8")), (list, tuple))  # as inside the ensemble
    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1)).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(loaded(pixels, training=False)), np.asarray(model(pixels, training=False)))
    copy = inference_copies({"a": trained}, tmp_path / "served")["a"]
    assert copy.read_bytes() == trained.read_bytes()


def test_the_frozen_graph_holds_the_weights_as_constants_and_computes_what_tensorflows_public_freeze_does() -> None:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from mura.config import ModelSpec
    from mura.modeling.models import build_model
    from mura.packaging.export import _frozen_graph_def

    model = build_model(ModelSpec("simple_cnn", dense_units=8, dropout=0.1), 32, "none", None, seed=0)
    spec = tf.TensorSpec((None, 32, 32, 1), tf.uint8, name="image")
    function = tf.function(lambda image: model(image, training=False)).get_concrete_function(spec)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1)).astype(np.uint8)

    def run(graph_def: Any) -> np.ndarray:  # the GraphDef alone: no variables anywhere
        ops = {node.op for node in graph_def.node}
        assert not ops & {"VarHandleOp", "ReadVariableOp"} and "Const" in ops
        imported = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])
        pruned = imported.prune(imported.graph.get_tensor_by_name("image:0"), function.outputs[0].name)
        return np.asarray(pruned(tf.constant(pixels)))

    ours = _frozen_graph_def(function)
    public = convert_variables_to_constants_v2(function).graph.as_graph_def()
    np.testing.assert_array_equal(run(ours), run(public))
    np.testing.assert_allclose(run(ours), np.asarray(model(pixels, training=False)), atol=1e-6)


def _check(per_variant: list[float] | None, allowed: tuple[Precision, ...] = ("f32",)) -> PrecisionCheck:
    comparison = None if per_variant is None else RuntimeComparison(0.05, {"default": 0.9}, variant_max_abs_dp=tuple(per_variant))
    return PrecisionCheck(PrecisionLimits(0.01, 0.995), int8=comparison, allowed=allowed)


@pytest.mark.parametrize(
    "check,expected",
    [
        (_check([0.004, 0.03, 0.01]), ["a", "c"]),  # the variants within the limit alone (the limit included)
        (_check([0.02, 0.03, 0.05]), None),  # none: nothing to keep in int8
        (_check([0.001, 0.002, 0.003]), None),  # all within but rejected (labels flipped): a mix cannot help
        (_check([0.004, 0.03, 0.001], ("f32", "int8")), None),  # int8 allowed already
        (_check(None), None),  # no int8 export
    ],
)
def test_int8_variants_are_tried_only_when_some_but_not_all_keep_within_the_limit(
    check: PrecisionCheck, expected: list[str] | None
) -> None:
    assert int8_variants(check, ["a", "b", "c"]) == expected


def test_a_mixed_int8_export_quantizes_only_the_chosen_variants(exported: dict, tmp_path, monkeypatch) -> None:
    """write_int8(["a"]): variant a answers as the all-int8 model's a, variant b exactly as float32."""
    from mura.runtime.runners import OpenVinoRunner

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pixels, export = exported["pixels"], exported["export"]
    f32 = OpenVinoRunner(export.dir, ["a", "b"], batch_size=2).predict(pixels)
    all_int8 = OpenVinoRunner(export.dir, ["a", "b"], batch_size=2, force="int8").predict(pixels)
    try:
        export.write_int8(["a"])
        mixed = OpenVinoRunner(export.dir, ["a", "b"], batch_size=2, force="int8").predict(pixels)
    finally:
        export.write_int8(["a", "b"])  # the module's fixture again
    np.testing.assert_allclose(mixed[:, 0], all_int8[:, 0], atol=1e-6)
    assert np.abs(mixed[:, 0] - f32[:, 0]).max() > 0  # quantized
    np.testing.assert_allclose(mixed[:, 1], f32[:, 1], atol=1e-6)  # float32 graph
    with pytest.raises(KeyError):
        export.write_int8(["c"])
