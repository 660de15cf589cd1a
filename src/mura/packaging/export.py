"""Register-time export of the variants to the optimized runtime, and the reduced-precision guard.

Imports Keras (it reads the trained ``.keras`` files) and NNCF (int8
quantization); serving reads the result without either (:mod:`mura.runtime.runners`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from mura.config import Precision
from mura.modeling.averaging import aggregate_studies, average_probabilities, prob_column
from mura.modeling.calibration import Calibrator
from mura.modeling.gradcam import HeadWeights
from mura.parallel import process_context, worker_count
from mura.runtime.numeric_precision import INT8_XML, MODEL_XML, available_precisions, one_image_seconds
from mura.runtime.precision_check import PrecisionCheck, PrecisionLimits, RuntimeComparison
from mura.runtime.runners import HEADS_FILE, OpenVinoRunner

logger = logging.getLogger(__name__)

__all__ = [
    "KerasReference",
    "OptimizedExport",
    "VariantIR",
    "check_precision",
    "compare_runtimes",
    "export_optimized",
    "export_variant",
    "has_optimizer_state",
    "inference_copies",
    "int8_variants",
    "judge_precision",
    "merge_variants",
    "serving_copy",
]


def has_optimizer_state(keras_path: Path) -> bool:
    """Whether a ``.keras`` file was saved from a compiled model (its config names a compile config).

    The training stage saves the weights alone (:func:`mura.modeling.callbacks.save_model_atomic`);
    files trained before 2026-11-30 keep Adam's two moments beside them (three times the weights).
    """
    with zipfile.ZipFile(keras_path) as archive:
        config = json.loads(archive.read("config.json"))
    return bool(config.get("compile_config"))


def serving_copy(keras_path: Path, copy_path: Path, model: Any | None = None) -> None:
    """Write a variant's serving copy: its ``.keras`` file without the optimizer's state.

    A file without it is copied as it is; one with it (an older training) is loaded, unless
    ``model`` is that file already loaded, and saved again without it (156 → 53 MB for
    DenseNet-169, 501 → 168 MB for ResNet-101): nothing that serves reads the state, and every
    server start copies the registered files.
    """
    copy_path.parent.mkdir(parents=True, exist_ok=True)
    if not has_optimizer_state(keras_path):
        shutil.copyfile(keras_path, copy_path)
        return
    if model is None:
        from mura.modeling.inference import load_variants  # lazy: imports Keras: only for an older file

        model = load_variants({keras_path.stem: keras_path})[keras_path.stem]
    model.save(copy_path)


def inference_copies(model_paths: dict[str, Path], out_dir: Path) -> dict[str, Path]:
    """Each variant's :func:`serving_copy` in ``out_dir`` (``<variant>.keras``); variant → the copy.

    :func:`export_optimized` writes the same copies beside its export.
    """
    copies = {name: out_dir / f"{name}.keras" for name in model_paths}
    for name, path in model_paths.items():
        serving_copy(Path(path), copies[name])
    return copies


@dataclass(frozen=True)
class VariantIR:
    """One variant exported alone: its float32 IR, its int8 IR (when quantized), its head's weights."""

    name: str
    xml: Path
    int8_xml: Path | None
    head: HeadWeights


@dataclass(frozen=True)
class OptimizedExport:
    """The served export (``dir``: the variants merged into one IR per precision) and each variant's own IRs."""

    dir: Path
    parts: dict[str, VariantIR]

    def write_int8(self, in_int8: Sequence[str]) -> Path:
        """Write ``model_int8.xml``: the variants in ``in_int8`` quantized, the others float32 (a mixed-precision ensemble)."""
        missing = [v for v in in_int8 if self.parts[v].int8_xml is None]
        if missing:
            raise ValueError(f"variant {missing[0]!r} was not quantized")
        chosen = [part.int8_xml if name in in_int8 else part.xml for name, part in self.parts.items()]
        merge_variants([xml for xml in chosen if xml is not None], self.dir / INT8_XML)
        return self.dir / INT8_XML


def export_variant(
    name: str,
    keras_path: Path,
    parts_dir: Path,
    copy_path: Path | None = None,
    calibration: np.ndarray | None = None,
    batch_size: int = 8,
) -> VariantIR:
    """Export one variant (probability + feature maps) to OpenVINO IR, and quantize it to int8 with NNCF.

    Runs in a worker process of :func:`export_optimized` (it imports Keras, OpenVINO and NNCF).
    NNCF reads the calibration images in batches of ``batch_size`` (the serving batch): on the
    demo's four variants at 64² on 2 cores, statistics collection took 14 s instead of 50 s one
    image at a time, and the int8 model's largest |Δp| on valid fell from 0.26 to 0.19
    (bench/RESULTS.md).

    Args:
        name: the variant.
        keras_path: its trained ``.keras`` file.
        parts_dir: folder for ``<name>.xml`` (float32) and ``<name>_int8.xml``.
        copy_path: also save the variant's serving copy there (:func:`inference_copies`).
        calibration: (N, S, S) uint8 training images NNCF collects activation statistics on; None: no int8.
        batch_size: images per calibration batch.
    """
    import keras  # lazy: heavy (seconds): only when a model is built, trained or run

    from mura.modeling.inference import combine_with_features, load_variants  # lazy: imports Keras

    start = time.perf_counter()
    parts_dir.mkdir(parents=True, exist_ok=True)
    model = load_variants({name: keras_path})[name]
    if copy_path is not None:  # before combining: the combined graph renames the model
        serving_copy(keras_path, copy_path, model)
    head = HeadWeights.from_model(model)
    combined = combine_with_features({name: model})
    xml = parts_dir / f"{name}.xml"
    if keras.backend.backend() == "tensorflow":
        _export_frozen(combined, xml)
    else:  # JAX/torch: Keras's own exporter (through jax2tf or TorchScript)
        combined.export(str(xml), format="openvino", verbose=False)
    exported = time.perf_counter()
    int8_xml, quantized = None, ""
    if calibration is not None:
        int8_xml = _quantize(xml, calibration, batch_size, parts_dir / f"{name}_int8.xml")
        quantized = f", quantized to int8 on {len(calibration)} images in {time.perf_counter() - exported:.1f} s"
    logger.info("%s: exported to OpenVINO in %.1f s%s", name, exported - start, quantized)
    return VariantIR(name, xml, int8_xml, head)


def export_optimized(
    model_paths: dict[str, Path],
    out_dir: Path,
    copies_dir: Path | None = None,
    calibration: np.ndarray | None = None,
    batch_size: int = 8,
    workers: int = 0,
    parts_dir: Path | None = None,
) -> OptimizedExport:
    """Export the variants to OpenVINO IR (float32, and int8 with ``calibration``), one worker process per core.

    Each variant is exported and quantized alone (:func:`export_variant`), the variants spread
    over ``workers`` processes: tracing, freezing, converting and NNCF's passes are mostly
    single-threaded Python, so on 2 cores two variants at a time take about half the time of
    one after the other (bench/RESULTS.md). The served IRs are then the variants merged into
    one model per precision (:func:`merge_variants`): ``model.xml`` and ``model_int8.xml``
    (every variant in int8; :meth:`OptimizedExport.write_int8` mixes precisions), with the
    heads' weights (``heads.npz``).

    Args:
        model_paths: variant → ``.keras`` file, in ensemble order.
        out_dir: folder for the served IRs (what is logged).
        copies_dir: also write each variant's :func:`inference_copies` there.
        calibration: (N, S, S) uint8 training images for int8; None: float32 only.
        batch_size: images per calibration batch (the serving batch).
        workers: processes (at most one per variant); 1: in this process; 0: one per core, or in this
            process when the variants are small (:func:`_auto_workers`).
        parts_dir: folder for each variant's own IRs (default: beside ``out_dir``, ``<out_dir>-variants``).
    """
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    parts_dir = parts_dir or out_dir.with_name(out_dir.name + "-variants")
    jobs = [
        (name, Path(path), parts_dir, copies_dir / f"{name}.keras" if copies_dir else None, calibration, batch_size)
        for name, path in model_paths.items()
    ]
    count = min(workers or _auto_workers(model_paths.values()), len(jobs))
    if count <= 1:
        done = [export_variant(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(count, mp_context=process_context(), initializer=_worker_logging) as pool:
            done = list(pool.map(export_variant, *zip(*jobs, strict=True)))
    parts = {part.name: part for part in done}
    merge_variants([part.xml for part in done], out_dir / MODEL_XML)
    HeadWeights.save_all({part.name: part.head for part in done}, out_dir / HEADS_FILE)
    export = OptimizedExport(out_dir, parts)
    if calibration is not None:
        export.write_int8(list(parts))
    logger.info(
        "exported %d variants to OpenVINO%s in %.1f s (%d process%s)",
        len(parts),
        " and int8" if calibration is not None else "",
        time.perf_counter() - start,
        count,
        "es" if count > 1 else "",
    )
    return export


SMALL_EXPORT_BYTES = 20_000_000  # below this much .keras in all, worker processes cost more than they save


def _auto_workers(paths: Iterable[Path]) -> int:
    """One process per core, or 1 (this process) for small variants.

    A worker spends ~7 s importing TensorFlow and NNCF before its first variant: the tests'
    tiny variants export in about a second each in the stage's own process.
    """
    total = sum(Path(path).stat().st_size for path in paths)
    return worker_count(0) if total >= SMALL_EXPORT_BYTES else 1


def _worker_logging() -> None:
    """A worker process logs as the stage does."""
    from mura.stage import configure_logging  # lazy: only in a worker process

    configure_logging()


def merge_variants(xmls: Sequence[Path], out: Path) -> None:
    """Merge variants exported alone into the served graph: one uint8 image input, outputs
    ``[probabilities (N, n_variants), features of variant 1, ...]`` (:func:`combine_with_features`' order).

    Args:
        xmls: each variant's IR (outputs: probability (N, 1), feature maps), in ensemble order.
        out: the merged IR.
    """
    import openvino as ov  # lazy: optional runtime: only when exporting or serving with it

    core = ov.Core()
    models = [core.read_model(str(xml)) for xml in xmls]
    first = models[0].get_parameters()[0]
    image = ov.opset13.parameter(first.get_partial_shape(), first.get_element_type(), name="image")
    image.output(0).get_tensor().set_names({"image"})
    probabilities, features = [], []
    for model in models:
        for target in model.get_parameters()[0].output(0).get_target_inputs():
            target.replace_source_output(image.output(0))
        outputs = [result.input_value(0) for result in model.get_results()]
        probabilities.append(outputs[0])
        features += outputs[1:]
    merged = ov.opset13.concat(probabilities, axis=1).output(0) if len(probabilities) > 1 else probabilities[0]
    ov.save_model(ov.Model([merged, *features], [image], "mura_variants_features"), str(out), compress_to_fp16=False)


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

    size = int(model.input_shape[1])
    spec = tf.TensorSpec((None, size, size, 1), tf.uint8, name="image")
    function = tf.function(lambda image: model(image, training=False)).get_concrete_function(spec)
    converted = ov.convert_model(_frozen_graph_def(function))
    # Keep the traced function's output order (the runtime reads outputs by position).
    wanted = [tensor.name for tensor in function.outputs]
    results = {next(n for n in r.input_value(0).get_names() if n in wanted): r for r in converted.get_results()}
    ordered = ov.Model([results[name] for name in wanted], converted.get_parameters(), "mura_variants_features")
    ordered.inputs[0].get_node().set_friendly_name("image")
    ordered.inputs[0].get_tensor().set_names({"image"})
    ov.save_model(ordered, str(xml), compress_to_fp16=False)


def _frozen_graph_def(function: Any) -> Any:
    """The traced function's graph with its variables replaced by constants (a ``GraphDef``; node names kept).

    ``convert_variables_to_constants_v2`` does the same and then wraps the result in a new
    concrete function, which re-imports and prunes the whole graph (ResNet-101: 5.7 of its 6.8 s,
    profiled) for a function nothing calls: only its ``GraphDef`` is converted. Its two steps are
    taken here without the third; a TensorFlow without them falls back to the public call.
    """
    # lazy: heavy (seconds): only when a model is exported
    from tensorflow.python.framework import convert_to_constants as freeze

    converter = getattr(freeze, "_FunctionConverterDataInEager", None)
    replace = getattr(freeze, "_replace_variables_by_constants", None)
    if converter is None or replace is None:  # renamed in another TensorFlow release
        return freeze.convert_variables_to_constants_v2(function).graph.as_graph_def()
    graph_def, _ = replace(converter_data=converter(func=function, lower_control_flow=True, aggressive_inlining=False))
    return graph_def


def compare_runtimes(
    reference: np.ndarray,
    candidate: np.ndarray,
    rows: pd.DataFrame,
    weights: Sequence[float],
    thresholds: dict[str, float],
    calibrator: Calibrator | None = None,
) -> RuntimeComparison:
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
        column order: which variants a reduced precision hurts), the studies and images compared, and
        per operating point the fraction of studies whose label agrees.
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
    return RuntimeComparison(
        max_abs_dp=max_dp,
        agreement=agreement,
        studies=int(len(studies)),
        images=int(len(rows)),
        variant_max_abs_dp=tuple(float(x) for x in per_variant),
    )


def _quantize(xml: Path, calibration: np.ndarray, batch_size: int, out: Path) -> Path:
    """NNCF post-training quantization of one float32 IR to int8, calibrated on serving-size batches."""
    import nncf  # lazy: optional runtime: only when exporting
    import openvino as ov  # lazy: optional runtime: only when exporting or serving with it

    if len(calibration) == 0:
        raise ValueError("int8 quantization needs at least one calibration image")
    batches = [
        np.ascontiguousarray(calibration[i : i + batch_size, ..., None], dtype=np.uint8)
        for i in range(0, len(calibration), batch_size)
    ]
    quantized = nncf.quantize(ov.Core().read_model(str(xml)), nncf.Dataset(batches), subset_size=len(batches))
    ov.save_model(quantized, str(out))
    return out


def judge_precision(name: str, comparison: RuntimeComparison | None, limits: PrecisionLimits) -> tuple[bool, str]:
    """Whether a reduced precision's comparison with Keras passes both limits, and why (pure).

    Args:
        name: ``bf16`` or ``int8``.
        comparison: :func:`compare_runtimes` of that precision, or None when it could not run here.
        limits: the largest |Δp| accepted (every variant and the ensemble) and the smallest
            study-label agreement accepted, at every operating point.
    """
    if comparison is None:
        return False, f"{name}: not available here (no native bf16, or not exported)"
    worst = comparison.worst_agreement
    figures = (
        f"max |dp| {comparison.max_abs_dp:.2g} (limit {limits.max_abs_dp}), "
        f"study labels agree {worst:.2%} (limit {limits.min_agreement:.2%})"
    )
    if comparison.max_abs_dp <= limits.max_abs_dp and worst >= limits.min_agreement:
        return True, f"{name} allowed: {figures}"
    return False, f"{name} rejected: {figures}"


@dataclass(frozen=True)
class KerasReference:
    """What the optimized runtime is checked against: Keras's validation predictions and what turns them into answers.

    Attributes:
        variants: variant names, in the export's output order.
        predictions: the ``ensemble`` stage's valid predictions (``p_<variant>``, ``study_id``).
        pixels: their cache rows, (N, S, S) uint8, in the same order.
        weights: variant weights.
        thresholds: operating points (on the calibrated probability).
        calibrator: the served calibration map.
    """

    variants: list[str]
    predictions: pd.DataFrame
    pixels: np.ndarray
    weights: Sequence[float]
    thresholds: dict[str, float]
    calibrator: Calibrator | None = None


def check_precision(optimized_dir: Path, reference: KerasReference, limits: PrecisionLimits, batch_size: int) -> PrecisionCheck:
    """Run the optimized model in every precision this machine can on the validation images, against Keras.

    Float32 is always allowed (it is the exported Keras graph); bf16 (native bf16 CPUs) and int8
    (when exported) are allowed only within the limits. The served precision on this machine is
    then timed among the allowed ones, as a server would.

    Args:
        optimized_dir: the exported model.
        reference: Keras's validation predictions and the ensemble's weights, thresholds and calibration.
        limits: largest reduced-precision |Δp| and smallest study-label agreement (every operating point) accepted.
        batch_size: the serving batch.

    Returns:
        Each precision's comparison (None where not run), the verdicts, the allowed precisions and
        the one served here.
    """
    variants, predictions, pixels = reference.variants, reference.predictions, reference.pixels
    weights, thresholds, calibrator = reference.weights, reference.thresholds, reference.calibrator
    keras_p = predictions[[prob_column(v) for v in variants]].to_numpy(np.float64)
    runnable = available_precisions(optimized_dir, ("bf16", "int8"))
    out: dict[str, RuntimeComparison] = {}
    verdicts: dict[str, str] = {}
    allowed: list[Precision] = ["f32"]
    runners = {}  # compiled without the cache: the machine that registers a model rarely serves it
    for precision in runnable:
        runners[precision] = OpenVinoRunner(
            optimized_dir, variants, batch_size, warm_up=False, force=precision, compile_cache=False
        )
        out[precision] = compare_runtimes(
            keras_p, runners[precision].predict(pixels), predictions, weights, thresholds, calibrator
        )
        if precision != "f32":
            ok, verdicts[precision] = judge_precision(precision, out[precision], limits)
            allowed += [cast(Precision, precision)] if ok else []
            if not ok:  # which variants it hurts: the figures a per-variant choice of precision would start from
                shifts = zip(variants, out[precision].variant_max_abs_dp, strict=True)
                verdicts[precision] += "; max |dp| per variant: " + ", ".join(f"{v} {d:.2g}" for v, d in shifts)
    for precision in ("bf16", "int8"):
        if precision not in runnable:
            verdicts[precision] = judge_precision(precision, None, limits)[1]
    # The fastest allowed one on this CPU, timed as a server times them (one image), on the models compiled above.
    served: Precision = min(allowed, key=lambda p: one_image_seconds(runners[p].compiled)) if len(allowed) > 1 else "f32"
    reason = "; ".join(verdicts.values()) + f"; fastest allowed here: {served}"
    logger.info("optimized runtime: float32 max |dp| %.2g vs Keras; %s", out["f32"].max_abs_dp, reason)
    return PrecisionCheck(
        limits=limits,
        f32=out["f32"],
        bf16=out.get("bf16"),
        int8=out.get("int8"),
        verdicts=verdicts,
        allowed=tuple(allowed),
        precision=served,
        reason=reason,
    )


def int8_variants(check: PrecisionCheck, variants: Sequence[str]) -> list[str] | None:
    """When int8 was rejected for the whole ensemble: the variants whose own |Δp| is within the limit (pure).

    None when there is nothing to try per variant: int8 allowed already, not run, or no variant (or
    every variant) within the limit. Their int8 IRs merged with the others' float32 ones
    (:meth:`OptimizedExport.write_int8`) and checked again decide whether that mix serves.
    """
    comparison = check.int8
    if comparison is None or check.limits is None or "int8" in check.allowed:
        return None
    limit = check.limits.max_abs_dp
    within = [v for v, dp in zip(variants, comparison.variant_max_abs_dp, strict=True) if dp <= limit]
    return within if 0 < len(within) < len(variants) else None
