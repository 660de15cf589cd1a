"""Register-time export of the variants to the optimized runtime, and the reduced-precision guard.

Imports Keras (it reads the trained ``.keras`` files) and NNCF (int8
quantization); serving reads the result without either (:mod:`mura.serving.runtime`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mura.modeling.calibration import Calibrator
from mura.modeling.ensemble import aggregate_studies, average_probabilities, prob_column
from mura.modeling.gradcam import HeadWeights
from mura.serving.precision import INT8_XML, MODEL_XML, available_precisions
from mura.serving.runtime import HEADS_FILE, OpenVinoRunner

logger = logging.getLogger(__name__)

__all__ = [
    "check_precision",
    "compare_runtimes",
    "export_optimized",
    "inference_copies",
    "int8_variants",
    "judge_precision",
    "quantize_int8",
    "variant_operations",
]


def inference_copies(model_paths: dict[str, Path], out_dir: Path, models: dict[str, Any] | None = None) -> dict[str, Path]:
    """Each variant saved for serving: its weights without the optimizer's state.

    The training stage's ``.keras`` keeps Adam's two moments beside the weights (three times the
    weights' size); nothing that serves reads them, and every server start copies the registered
    files. On the demo's variants: 156 → 53 MB (DenseNet-169), 501 → 168 MB (ResNet-101).

    Args:
        model_paths: variant → the trained ``.keras`` file.
        out_dir: folder for ``<variant>.keras``.
        models: the variants already loaded (``compile=False``), to save without loading again.

    Returns:
        variant → the copy.
    """
    from mura.modeling.inference import load_variants  # lazy: imports Keras: only on the Keras path

    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = models if models is not None else load_variants(model_paths)
    copies = {name: out_dir / f"{name}.keras" for name in model_paths}
    for name, model in loaded.items():
        model.save(copies[name])
    return copies


def export_optimized(model_paths: dict[str, Path], out_dir: Path, copies_dir: Path | None = None) -> Path:
    """Export the variants (probabilities + feature maps) to OpenVINO IR, with their heads' weights.

    Args:
        model_paths: variant → ``.keras`` file, in ensemble order.
        out_dir: folder to write ``model.xml``, ``model.bin`` and ``heads.npz`` into.
        copies_dir: also write :func:`inference_copies` there (from the models loaded once).

    Returns:
        ``out_dir``.
    """
    import keras  # lazy: heavy (seconds): only when a model is built, trained or run

    from mura.modeling.inference import combine_with_features, load_variants  # lazy: imports Keras: only on the Keras path

    out_dir.mkdir(parents=True, exist_ok=True)
    models = load_variants(model_paths)
    if copies_dir is not None:  # before combining: combine() renames the models
        inference_copies(model_paths, copies_dir, models)
    start = time.perf_counter()
    combined = combine_with_features(models)
    if keras.backend.backend() == "tensorflow":
        _export_frozen(combined, out_dir / MODEL_XML)
    else:  # JAX/torch: Keras's own exporter (through jax2tf or TorchScript)
        combined.export(str(out_dir / MODEL_XML), format="openvino", verbose=False)
    HeadWeights.save_all({name: HeadWeights.from_model(model) for name, model in models.items()}, out_dir / HEADS_FILE)
    logger.info("exported %d variants to OpenVINO in %.1f s", len(models), time.perf_counter() - start)
    return out_dir


def _export_frozen(model: Any, xml: Path) -> None:
    """Trace ``model`` (uint8 NHWC image → its outputs), freeze its weights into constants, convert to IR.

    What ``model.export(format="openvino")`` does, minus its cost: OpenVINO's TensorFlow
    frontend looks every captured variable up by scanning the graph's whole variable list
    (quadratic in the number of variables), which made the four variants' conversion take
    126 s of a 156 s export on a 2-core EPYC; with the weights frozen into the graph first
    there is nothing to look up (trace + freeze + convert: 61 s, same float32 outputs).
    """
    import openvino as ov  # lazy: optional runtime: only when exporting or serving with it
    import tensorflow as tf  # the Keras backend in use

    # lazy: heavy (seconds): only when a model is exported
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    size = int(model.input_shape[1])
    spec = tf.TensorSpec((None, size, size, 1), tf.uint8, name="image")
    function = tf.function(lambda image: model(image, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(function)
    converted = ov.convert_model(frozen.graph.as_graph_def())
    # Keep the traced function's output order (the runtime reads outputs by position).
    wanted = [tensor.name for tensor in frozen.outputs]
    results = {next(n for n in r.input_value(0).get_names() if n in wanted): r for r in converted.get_results()}
    ordered = ov.Model([results[name] for name in wanted], converted.get_parameters(), "mura_variants_features")
    ordered.inputs[0].get_node().set_friendly_name("image")
    ordered.inputs[0].get_tensor().set_names({"image"})
    ov.save_model(ordered, str(xml), compress_to_fp16=False)


def compare_runtimes(
    reference: np.ndarray,
    candidate: np.ndarray,
    rows: pd.DataFrame,
    weights: Sequence[float],
    thresholds: dict[str, float],
    calibrator: Calibrator | None = None,
) -> dict[str, Any]:
    """How far a runtime's probabilities are from the Keras reference (pure).

    Args:
        reference: Keras per-variant probabilities (N, V).
        candidate: the runtime's (N, V).
        rows: ``study_id`` and ``label`` of the N images.
        weights: variant weights of the average.
        thresholds: operating point → study threshold (on the calibrated probability).
        calibrator: the served calibration map, applied to both study probabilities before the
            thresholds (None: the identity).

    Returns:
        ``max_abs_dp`` over variants and the ensemble, each variant's own (``variant_max_abs_dp``, in
        column order: which variants a reduced precision hurts), ``studies``, and per operating point
        the fraction of studies whose label agrees (``agreement.<point>``).
    """
    ref_ens = average_probabilities(reference, weights)
    new_ens = average_probabilities(candidate, weights)
    per_variant = np.abs(reference - candidate).max(axis=0, initial=0.0)  # zeros when there are no rows
    max_dp = float(max(per_variant.max(initial=0.0), np.abs(ref_ens - new_ens).max(initial=0.0)))
    frame = rows[["study_id", "label"]].assign(ref=ref_ens, new=new_ens)
    studies = aggregate_studies(frame, ["ref", "new"])
    if calibrator is not None:
        studies = studies.assign(ref=calibrator.apply(studies["ref"].to_numpy()), new=calibrator.apply(studies["new"].to_numpy()))
    agreement = {
        point: float(np.mean((studies["ref"] >= t) == (studies["new"] >= t))) if len(studies) else 1.0
        for point, t in thresholds.items()
    }
    return {
        "max_abs_dp": max_dp,
        "variant_max_abs_dp": [float(x) for x in per_variant],
        "studies": int(len(studies)),
        "images": int(len(rows)),
        "agreement": agreement,
    }


def variant_operations(model: Any, variants: Sequence[str]) -> dict[str, list[str]]:
    """Each variant's own operations in the exported model (friendly names), for NNCF's ignored scope.

    A variant's operations are those its probability (``<variant>/abnormal/Sigmoid``) depends on
    and no other variant's does: the input's cast and layout ops, which OpenVINO shares between
    the variants, belong to none. Found by walking the graph back from each sigmoid, because
    OpenVINO renames most convolutions (``Transpose_1067``), dropping the variant's prefix.

    Raises:
        ValueError: a variant's sigmoid is not in the model.
    """
    patterns = {v: re.compile(rf"/{re.escape(v)}(_\d+)?/abnormal(_\d+)?/Sigmoid$") for v in variants}
    ends: dict[str, Any] = {}
    for op in model.get_ops():
        if op.get_type_name() == "Sigmoid":
            ends |= {v: op for v, pattern in patterns.items() if pattern.search(op.get_friendly_name())}
    missing = [v for v in variants if v not in ends]
    if missing:
        raise ValueError(f"the exported model has no output sigmoid for variant {missing[0]!r}")
    reached: dict[str, set[str]] = {}
    for variant, end in ends.items():
        seen: set[str] = set()
        stack = [end]
        while stack:
            node = stack.pop()
            if node.get_friendly_name() in seen:
                continue
            seen.add(node.get_friendly_name())
            stack += [value.get_node() for value in node.input_values()]
        reached[variant] = seen
    return {v: sorted(reached[v].difference(*(reached[o] for o in variants if o != v))) for v in variants}


def quantize_int8(
    optimized_dir: Path,
    calibration: np.ndarray,
    batch_size: int = 8,
    keep_float: Sequence[str] = (),
    variants: Sequence[str] = (),
) -> Path:
    """Quantize the exported float32 IR to int8 with NNCF post-training quantization.

    NNCF reads the calibration images in batches of ``batch_size`` (the serving batch): on the
    demo's four variants at 64² on 2 cores, statistics collection took 14 s instead of 50 s
    one image at a time (quantization 62 s instead of 99 s), and the int8 model's largest
    |Δp| on valid fell from 0.26 to 0.19 (bench/RESULTS.md).

    Args:
        optimized_dir: the folder :func:`export_optimized` wrote.
        calibration: (N, S, S) uint8 training images NNCF collects activation statistics on.
        batch_size: images per calibration batch.
        keep_float: variants left in float32 (NNCF's ignored scope: :func:`variant_operations`); the
            int8 IR then mixes precisions per variant.
        variants: every variant, in output order (needed with ``keep_float``).

    Returns:
        The int8 IR (``model_int8.xml``, next to the float32 one).
    """
    import nncf  # lazy: optional runtime: only when exporting or serving with it
    import openvino as ov  # lazy: optional runtime: only when exporting or serving with it

    if len(calibration) == 0:
        raise ValueError("int8 quantization needs at least one calibration image")
    start = time.perf_counter()
    model = ov.Core().read_model(str(optimized_dir / MODEL_XML))
    batches = [
        np.ascontiguousarray(calibration[i : i + batch_size, ..., None], dtype=np.uint8)
        for i in range(0, len(calibration), batch_size)
    ]
    ignored = None
    if keep_float:
        own = variant_operations(model, variants)
        ignored = nncf.IgnoredScope(names=[name for v in keep_float for name in own[v]], validate=False)
    quantized = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches), ignored_scope=ignored)
    ov.save_model(quantized, str(optimized_dir / INT8_XML))
    kept = f" ({', '.join(keep_float)} kept in float32)" if keep_float else ""
    logger.info("quantized to int8%s on %d training images in %.1f s", kept, len(calibration), time.perf_counter() - start)
    return optimized_dir / INT8_XML


def judge_precision(name: str, comparison: dict[str, Any] | None, max_abs_dp: float, min_agreement: float) -> tuple[bool, str]:
    """Whether a reduced precision's comparison with Keras passes both limits, and why (pure).

    Args:
        name: ``bf16`` or ``int8``.
        comparison: :func:`compare_runtimes` of that precision, or None when it could not run here.
        max_abs_dp: largest |Δp| accepted (every variant and the ensemble).
        min_agreement: smallest study-label agreement accepted, at every operating point.
    """
    if comparison is None:
        return False, f"{name}: not available here (no native bf16, or not exported)"
    worst = min(comparison["agreement"].values(), default=1.0)
    figures = (
        f"max |dp| {comparison['max_abs_dp']:.2g} (limit {max_abs_dp}), "
        f"study labels agree {worst:.2%} (limit {min_agreement:.2%})"
    )
    if comparison["max_abs_dp"] <= max_abs_dp and worst >= min_agreement:
        return True, f"{name} allowed: {figures}"
    return False, f"{name} rejected: {figures}"


def check_precision(
    optimized_dir: Path,
    variants: list[str],
    predictions: pd.DataFrame,
    pixels: np.ndarray,
    weights: Sequence[float],
    thresholds: dict[str, float],
    batch_size: int,
    max_abs_dp: float,
    min_agreement: float,
    calibrator: Calibrator | None = None,
) -> dict[str, Any]:
    """Run the optimized model in every precision this machine can on the validation images, against Keras.

    Float32 is always allowed (it is the exported Keras graph); bf16 (native bf16 CPUs) and int8
    (when exported) are allowed only within the limits. The served precision on this machine is
    then timed among the allowed ones, as a server would.

    Args:
        optimized_dir: the exported model.
        variants: variant names in output order.
        predictions: the ``ensemble`` stage's valid predictions (Keras, per variant).
        pixels: their cache rows, (N, S, S) uint8, in the same order.
        weights: variant weights.
        thresholds: operating points.
        batch_size: the serving batch.
        max_abs_dp: largest reduced-precision |Δp| accepted.
        min_agreement: smallest reduced-precision study-label agreement accepted, at every operating point.
        calibrator: the served calibration map (the thresholds are on the calibrated probability).

    Returns:
        ``f32``, ``bf16`` and ``int8`` comparisons (None where not run), ``verdicts`` (precision →
        reason), ``allowed`` precisions, the ``precision`` served here, ``limits``.
    """
    reference = predictions[[prob_column(v) for v in variants]].to_numpy(np.float64)
    runnable = available_precisions(optimized_dir, ("bf16", "int8"))
    out: dict[str, Any] = {"bf16": None, "int8": None}
    verdicts: dict[str, str] = {}
    allowed = ["f32"]
    for precision in runnable:
        runner = OpenVinoRunner(optimized_dir, variants, batch_size, warm_up=False, force=precision)
        out[precision] = compare_runtimes(reference, runner.predict(pixels), predictions, weights, thresholds, calibrator)
        if precision != "f32":
            ok, verdicts[precision] = judge_precision(precision, out[precision], max_abs_dp, min_agreement)
            allowed += [precision] if ok else []
            if not ok:  # which variants it hurts: the figures a per-variant choice of precision would start from
                shifts = zip(variants, out[precision]["variant_max_abs_dp"], strict=True)
                verdicts[precision] += "; max |dp| per variant: " + ", ".join(f"{v} {d:.2g}" for v, d in shifts)
    for precision in ("bf16", "int8"):
        if precision not in runnable:
            verdicts[precision] = judge_precision(precision, None, max_abs_dp, min_agreement)[1]
    served = OpenVinoRunner(optimized_dir, variants, batch_size, allowed, warm_up=False, force="").precision
    limits = {"max_abs_dp": max_abs_dp, "min_agreement": min_agreement}
    out.update(verdicts=verdicts, allowed=allowed, precision=served, limits=limits)
    out["reason"] = "; ".join(verdicts.values()) + f"; fastest allowed here: {served}"
    logger.info("optimized runtime: float32 max |dp| %.2g vs Keras; %s", out["f32"]["max_abs_dp"], out["reason"])
    return out


def int8_variants(check: dict[str, Any], variants: Sequence[str]) -> list[str] | None:
    """When int8 was rejected for the whole ensemble: the variants whose own |Δp| is within the limit (pure).

    None when there is nothing to try per variant: int8 allowed already, not run, or no variant (or
    every variant) within the limit. Quantizing again with the others kept in float32
    (``quantize_int8(keep_float=…)``) and checking again decides whether that mix serves.
    """
    comparison = check.get("int8")
    if comparison is None or "int8" in check.get("allowed", []):
        return None
    limit = check["limits"]["max_abs_dp"]
    within = [v for v, dp in zip(variants, comparison["variant_max_abs_dp"], strict=True) if dp <= limit]
    return within if 0 < len(within) < len(variants) else None
