"""Register-time export of the variants to the optimized runtime, and the reduced-precision guard.

Imports Keras (it reads the trained ``.keras`` files); serving reads the result
without Keras (:mod:`mura.serving.runtime`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mura.evaluation.ensemble import aggregate_studies, average_probabilities, prob_column
from mura.modeling.gradcam import HeadWeights
from mura.serving.runtime import HEADS_FILE, MODEL_XML, OpenVinoRunner, cpu_has_bf16

logger = logging.getLogger(__name__)

__all__ = ["choose_precision", "compare_runtimes", "export_optimized"]


def export_optimized(model_paths: dict[str, Path], out_dir: Path) -> Path:
    """Export the variants (probabilities + feature maps) to OpenVINO IR, with their heads' weights.

    Args:
        model_paths: variant → ``.keras`` file, in ensemble order.
        out_dir: folder to write ``model.xml``, ``model.bin`` and ``heads.npz`` into.

    Returns:
        ``out_dir``.
    """
    from mura.modeling.inference import combine_with_features, load_variants

    out_dir.mkdir(parents=True, exist_ok=True)
    models = load_variants(model_paths)
    start = time.perf_counter()
    combine_with_features(models).export(str(out_dir / MODEL_XML), format="openvino", verbose=False)
    HeadWeights.save_all({name: HeadWeights.from_model(model) for name, model in models.items()}, out_dir / HEADS_FILE)
    logger.info("exported %d variants to OpenVINO in %.1f s", len(models), time.perf_counter() - start)
    return out_dir


def compare_runtimes(
    reference: np.ndarray,
    candidate: np.ndarray,
    rows: pd.DataFrame,
    weights: Sequence[float],
    thresholds: dict[str, float],
) -> dict[str, Any]:
    """How far a runtime's probabilities are from the Keras reference (pure).

    Args:
        reference: Keras per-variant probabilities (N, V).
        candidate: the runtime's (N, V).
        rows: ``study_id`` and ``label`` of the N images.
        weights: variant weights of the average.
        thresholds: operating point → study threshold.

    Returns:
        ``max_abs_dp`` over variants and the ensemble, ``studies``, and per operating point the
        fraction of studies whose label agrees (``agreement.<point>``).
    """
    ref_ens = average_probabilities(reference, weights)
    new_ens = average_probabilities(candidate, weights)
    max_dp = float(max(np.abs(reference - candidate).max(initial=0.0), np.abs(ref_ens - new_ens).max(initial=0.0)))
    frame = rows[["study_id", "label"]].assign(ref=ref_ens, new=new_ens)
    studies = aggregate_studies(frame, ["ref", "new"])
    agreement = {
        point: float(np.mean((studies["ref"] >= t) == (studies["new"] >= t))) if len(studies) else 1.0
        for point, t in thresholds.items()
    }
    return {"max_abs_dp": max_dp, "studies": int(len(studies)), "images": int(len(rows)), "agreement": agreement}


def choose_precision(bf16: dict[str, Any] | None, max_abs_dp: float, min_agreement: float) -> tuple[str, str]:
    """``("bf16", why)`` when the bf16 comparison passes both limits, else ``("f32", why)`` (pure)."""
    if bf16 is None:
        return "f32", "this CPU has no native bf16: float32"
    worst = min(bf16["agreement"].values(), default=1.0)
    if bf16["max_abs_dp"] <= max_abs_dp and worst >= min_agreement:
        return "bf16", f"bf16 max |dp| {bf16['max_abs_dp']:.2g} <= {max_abs_dp}, study labels agree {worst:.2%}"
    return "f32", (
        f"bf16 rejected: max |dp| {bf16['max_abs_dp']:.2g} (limit {max_abs_dp}), study-label agreement {worst:.2%} "
        f"(limit {min_agreement:.2%}): float32"
    )


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
) -> dict[str, Any]:
    """Run the optimized model in float32 and (if the CPU has it) bf16 on the validation images.

    Args:
        optimized_dir: the exported model.
        variants: variant names in output order.
        predictions: the ``ensemble`` stage's valid predictions (Keras, per variant).
        pixels: their cache rows, (N, S, S) uint8, in the same order.
        weights: variant weights.
        thresholds: operating points.
        batch_size: the serving batch.
        max_abs_dp: largest bf16 |Δp| accepted.
        min_agreement: smallest bf16 study-label agreement accepted, at every operating point.

    Returns:
        ``f32`` and ``bf16`` comparisons, the chosen ``precision`` and ``reason``.
    """
    reference = predictions[[prob_column(v) for v in variants]].to_numpy(np.float64)
    out: dict[str, Any] = {}
    for precision in ("f32", "bf16"):
        if precision == "bf16" and not cpu_has_bf16():
            out["bf16"] = None
            continue
        runner = OpenVinoRunner(optimized_dir / MODEL_XML, variants, batch_size, precision, warm_up=False, pick_faster=False)
        out[precision] = compare_runtimes(reference, runner.predict(pixels), predictions, weights, thresholds)
    out["precision"], out["reason"] = choose_precision(out["bf16"], max_abs_dp, min_agreement)
    out["limits"] = {"max_abs_dp": max_abs_dp, "min_agreement": min_agreement}
    logger.info("optimized runtime: float32 max |dp| %.2g vs Keras; %s", out["f32"]["max_abs_dp"], out["reason"])
    return out
