"""Stage ``localize``: where the ensemble looks, against where the findings are, and the heat levels of its boxes.

For the valid and test images whose dataset has boxes (the phantoms' planted findings,
``synthetic_findings.coco.json`` beside MURA-v1.1's CSVs; FracAtlas's COCO file when present), the
ensemble's Grad-CAM map (the mean of the variants', as served) is computed on the cached image and
each true box is mapped onto the same grid. On **valid**, each box operating point's heat level is
chosen: the level whose boxes best match the true ones (threat score: matched true boxes at
IoU ≥ 0.1 over true boxes plus false boxes), boxes drawn only for studies that pass the point's
threshold, the high-sensitivity level never above the high-specificity one. On **test**, with those
levels: the pointing game (and its ceiling at the maps' resolution), box sensitivity and false positives
per image at IoU ≥ 0.1 and 0.3, mean IoU, per body part and overall with patient-bootstrap CIs
(:mod:`mura.evaluation.localization`).
The same figures, at the same levels, on each **external** dataset whose own boxes are present
(FracAtlas's COCO file, GRAZPEDWRI-DX's YOLO labels: :func:`mura.data.external.external_boxes`),
reported apart.

Outputs: ``reports/localization.json`` (DVC metrics: the levels and the test figures),
``reports/localization.csv`` (the table with CIs; ``evaluated_on``: test or an external dataset) and
``reports/plots/localization_cases.png`` (the best and worst test cases). Without boxes anywhere (MURA
itself has none) the levels are ``localize.default_levels`` and the report says that nothing was measured.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mura.config import EvaluateParams, LocalizeParams, ResizePolicy
from mura.data.annotations import BOX_COLUMNS, read_coco_boxes
from mura.data.external import EXTERNAL_SPLIT, external_boxes
from mura.data.imaging import box_to_grid, cache_rows
from mura.evaluation.localization import IOU_LEVELS, image_record, localization_summary, reachable_peaks
from mura.evaluation.predict import model_paths
from mura.modeling.averaging import average_probabilities, prob_column
from mura.modeling.boxes import BOX_POINTS, boxes_from_heatmap
from mura.modeling.operating_points import OperatingPoints
from mura.stage import Layout

logger = logging.getLogger(__name__)

__all__ = ["IOU_LEVELS", "LocalizePaths", "choose_level", "ensemble_heatmaps", "read_boxes", "run_localize", "true_boxes"]

Peaks = Sequence[tuple[float, float]]  # where a heatmap of the models' grid can have its maximum


@dataclass(frozen=True)
class Annotated:
    """Predicted images that have boxes: their rows, ensemble heatmaps, true boxes, and where such maps can peak."""

    frame: pd.DataFrame
    heat: np.ndarray
    truth: list[Any]
    peaks: Peaks = ()

    def subset(self, keep: np.ndarray) -> Annotated:
        """The images where ``keep`` (a boolean mask) holds."""
        truth = [t for t, k in zip(self.truth, keep, strict=True) if k]
        return Annotated(self.frame[keep].reset_index(drop=True), self.heat[keep], truth, self.peaks)


CANDIDATE_LEVELS = tuple(round(x, 2) for x in np.arange(0.2, 0.96, 0.05))


@dataclass(frozen=True)
class LocalizePaths:
    """What the ``localize`` stage reads and writes (defaults: the standard layout)."""

    images: Path = Layout.IMAGES
    split: Path = Layout.SPLIT
    pixels: Path = Layout.PIXELS
    models_dir: Path = Layout.MODELS
    predictions: Path = Layout.PREDICTIONS
    thresholds: Path = Layout.THRESHOLDS
    annotations: tuple[Path, ...] = ()
    external_dir: Path | None = None  # data.external_dir: FracAtlas's and GRAZPEDWRI-DX's own boxes
    report: Path = Path("reports/localization.json")
    table: Path = Path("reports/localization.csv")
    figure: Path = Path("reports/plots/localization_cases.png")


def read_boxes(annotation_files: Sequence[Path], external_dir: Path | None = None) -> pd.DataFrame:
    """Every annotated box: the COCO files that exist, and the external datasets' own (FracAtlas, GRAZPEDWRI-DX)."""
    listed = [read_coco_boxes(path) for path in annotation_files if Path(path).is_file()]
    if external_dir is not None:
        listed.append(external_boxes(external_dir))
    listed = [frame for frame in listed if len(frame)]
    return pd.concat(listed, ignore_index=True) if listed else pd.DataFrame(columns=list(BOX_COLUMNS))


def true_boxes(images: pd.DataFrame, boxes: pd.DataFrame, image_size: int, resize: ResizePolicy) -> pd.Series:
    """Each image's true boxes on the cache's grid, by ``image_id`` (only images the boxes list).

    Args:
        images: images.csv (``path``: as the image's dataset lists it).
        boxes: :func:`read_boxes`'s rows (``file_name``: that same path; a row without a box: an image without finding).
        image_size: the cache's side.
        resize: the cache's resize policy.
    """
    by_path = images.set_index("path")["image_id"]
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    for row in boxes.itertuples(index=False):
        image_id = by_path.get(row.file_name)
        if image_id is None:
            continue
        found = out.setdefault(str(image_id), [])
        if row.kind is not None and not pd.isna(row.kind):
            found.append(box_to_grid((row.x0, row.y0, row.x1, row.y1), (row.height, row.width), image_size, resize))
    return pd.Series(out, dtype=object)


def ensemble_heatmaps(paths: Mapping[str, Path], pixels: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, int]:
    """The mean of the variants' Grad-CAM maps (what the served ensemble shows), (N, S, S) float32, and the side
    of the feature grid they are upsampled from (the resolution they can point with; 0 when the variants' grids differ)."""
    from mura.modeling.gradcam import feature_model, gradcam  # lazy: Keras
    from mura.modeling.inference import load_variants

    if not len(pixels):
        return np.zeros(pixels.shape, np.float32), 0
    models = load_variants(paths)
    total = np.zeros(pixels.shape, np.float32)
    grids = set()
    for model in models.values():
        features = feature_model(model)
        grids.add(int(features.output.shape[1]))
        for start in range(0, len(pixels), batch_size):
            total[start : start + batch_size] += gradcam(model, np.asarray(pixels[start : start + batch_size]), features)
    return total / max(1, len(models)), grids.pop() if len(grids) == 1 else 0


def _records(
    heat: np.ndarray, truth: Sequence[list[Any]], passed: np.ndarray, level: float, frame: pd.DataFrame, peaks: Peaks = ()
) -> pd.DataFrame:
    rows = []
    for k in range(len(heat)):
        predicted = boxes_from_heatmap(heat[k], level) if passed[k] else []
        rows.append(image_record(heat[k], truth[k], predicted, peaks))
    return pd.concat([frame.reset_index(drop=True), pd.DataFrame(rows)], axis=1)


def choose_level(heat: np.ndarray, truth: Sequence[list[Any]], passed: np.ndarray, frame: pd.DataFrame) -> tuple[float, float]:
    """The candidate level with the best threat score on these images (ties: the higher level), and that score (pure)."""
    best = (CANDIDATE_LEVELS[-1], -1.0)
    for level in CANDIDATE_LEVELS:
        records = _records(heat, truth, passed, level, frame)
        matched, truths, false = (records[c].sum() for c in ("matched_iou0.1", "truths", "fp_iou0.1"))
        score = float(matched / (truths + false)) if truths + false else 0.0
        if score >= best[1]:
            best = (level, score)
    return best


def _study_passes(predictions: pd.DataFrame, points: OperatingPoints, variants: Sequence[str]) -> pd.DataFrame:
    """Per image: whether its study's calibrated probability reaches each box point's threshold."""
    weights = [points.variant_weights[v] for v in variants]
    raw = average_probabilities(predictions[[prob_column(v) for v in variants]].to_numpy(np.float64), weights)
    study_raw = pd.Series(raw, index=predictions.index).groupby(predictions["study_id"]).transform("mean")
    calibrated = points.calibrator.apply(study_raw.to_numpy(np.float64))
    return pd.DataFrame({p: calibrated >= points.thresholds[p] for p in BOX_POINTS if p in points.thresholds})


def run_localize(
    variants: Sequence[str],
    params: LocalizeParams,
    evaluate: EvaluateParams,
    image_size: int,
    resize: ResizePolicy,
    paths: LocalizePaths,
) -> dict[str, Any]:
    """The ``localize`` stage (see the module docstring). Returns what ``reports/localization.json`` holds."""
    images = pd.read_csv(paths.images).merge(pd.read_csv(paths.split), on="image_id")
    images["row"] = np.arange(len(images))
    truth_of = true_boxes(images, read_boxes(paths.annotations, paths.external_dir), image_size, resize)
    points = OperatingPoints.load(paths.thresholds)
    report: dict[str, Any] = {
        "levels": dict(params.default_levels),
        "measured": False,
        "chosen_on": dict.fromkeys(params.default_levels, "default (no annotated boxes)"),
    }
    summary = pd.DataFrame()
    if len(truth_of):
        pixels = np.load(paths.pixels, mmap_mode="r")
        weights_paths = model_paths(variants, paths.models_dir)
        by_id = images.set_index("image_id")

        def annotated(split: str) -> Annotated:
            """The split's predicted images that have boxes."""
            file = paths.predictions / f"{split}.csv"
            predictions = pd.read_csv(file) if file.is_file() else pd.DataFrame(columns=["image_id"])
            predictions = predictions[predictions["image_id"].astype(str).isin(truth_of.index)].reset_index(drop=True)
            rows = by_id.loc[predictions["image_id"], "row"].to_numpy()
            heat, grid = ensemble_heatmaps(weights_paths, cache_rows(pixels, rows))
            truth = [truth_of[str(i)] for i in predictions["image_id"]]
            return Annotated(predictions, heat, truth, reachable_peaks(image_size, grid))

        levels, scores, chosen_on = _choose_levels(annotated("valid"), points, variants, params)
        report = {"levels": levels, "measured": False, "chosen_on": chosen_on, "valid_threat_score": scores}
        tables, shown = [], None
        test = annotated("test")
        if len(test.frame):
            tables.append(_summary(test, levels, points, variants, evaluate).assign(evaluated_on="test"))
            report["test"], shown = _headline(tables[-1]), test
        external = annotated(EXTERNAL_SPLIT)
        for dataset, table in _per_dataset(external, levels, points, variants, evaluate).items():
            tables.append(table.assign(evaluated_on=dataset))
            report.setdefault("external", {})[dataset] = _headline(table)
            shown = shown or external
        report["measured"] = bool(tables)
        summary = pd.concat(tables, ignore_index=True) if tables else summary
        if shown is not None:
            _figure(shown, levels, paths.figure, bool(images["synthetic"].any()))
        else:
            _nothing_measured(paths.figure)
    else:
        logger.warning("localize: no annotated images (no boxes for this data): default box levels, nothing measured")
        _nothing_measured(paths.figure)
    paths.table.parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(paths.table, index=False)
    paths.report.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def _choose_levels(
    annotated: Annotated,
    points: OperatingPoints,
    variants: Sequence[str],
    params: LocalizeParams,
) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """Each box point's heat level chosen on valid (the default where no level matched a true box), its score, how chosen."""
    valid = annotated.frame
    if not len(valid):  # boxes only elsewhere (e.g. real MURA, which has none, and FracAtlas): the defaults
        kept = [p for p in BOX_POINTS if p in points.thresholds and p in params.default_levels]
        return (
            {p: params.default_levels[p] for p in kept},
            dict.fromkeys(kept, 0.0),
            dict.fromkeys(kept, "default (no annotated valid image)"),
        )
    passes = _study_passes(valid, points, variants)
    levels, scores, chosen_on = {}, {}, {}
    for point in passes.columns:
        passed = passes[point].to_numpy()
        levels[point], scores[point] = choose_level(annotated.heat, annotated.truth, passed, valid[["patient_id", "body_part"]])
        chosen_on[point] = "valid"
        if scores[point] <= 0.0 and point in params.default_levels:  # no level found a true box: nothing to choose from
            levels[point], chosen_on[point] = params.default_levels[point], "default (no level matched a true box on valid)"
    if "high_sensitivity" in levels and "high_specificity" in levels:
        levels["high_sensitivity"] = min(levels["high_sensitivity"], levels["high_specificity"])
    return levels, scores, chosen_on


def _summary(
    images: Annotated, levels: Mapping[str, float], points: OperatingPoints, variants: Sequence[str], evaluate: EvaluateParams
) -> pd.DataFrame:
    """The localisation table of these images at each point's level, per body part and overall, with CIs."""
    frame = images.frame
    passes = _study_passes(frame, points, variants)
    tables = []
    for point, level in levels.items():
        passed = passes[point].to_numpy()
        records = _records(images.heat, images.truth, passed, level, frame[["patient_id", "body_part"]], images.peaks)
        tables.append(records.assign(operating_point=point))
    return localization_summary(pd.concat(tables, ignore_index=True), evaluate.bootstrap_resamples, 0, evaluate.ci_level)


def _per_dataset(
    images: Annotated, levels: Mapping[str, float], points: OperatingPoints, variants: Sequence[str], evaluate: EvaluateParams
) -> dict[str, pd.DataFrame]:
    """Each dataset's localisation table (the external split: FracAtlas and GRAZPEDWRI-DX apart)."""
    datasets = sorted(set(images.frame["dataset"])) if len(images.frame) else []
    return {
        name: _summary(images.subset((images.frame["dataset"] == name).to_numpy()), levels, points, variants, evaluate)
        for name in datasets
    }


def _nothing_measured(out: Path) -> None:
    """The figure's place when no image has boxes: a note, so the stage's outputs always exist."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 1.2))
    ax.text(0.5, 0.5, "No annotated boxes in this data: localisation not measured", ha="center", va="center", fontsize=8)
    ax.axis("off")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _headline(summary: pd.DataFrame) -> dict[str, Any]:
    """``{point: {metric: value, metric_ci_low, metric_ci_high, images}}`` of the ``all`` rows (the DVC metrics)."""
    out: dict[str, Any] = {}
    for row in summary[summary["group"] == "all"].to_dict("records"):
        point = str(row.pop("operating_point"))
        out[point] = {k: v for k, v in row.items() if k != "group" and not pd.isna(v)}
    return out


def _figure(shown: Annotated, levels: Mapping[str, float], out: Path, synthetic: bool) -> None:
    """The three best and three worst test cases by IoU: heatmap, true box (green), boxes (dotted: sensitive, solid: specific)."""
    test, heat, truth = shown.frame, shown.heat, shown.truth
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    best_iou = []
    for k in range(len(heat)):
        boxes = boxes_from_heatmap(heat[k], min(levels.values()))
        records = image_record(heat[k], truth[k], boxes) if truth[k] else {"iou_sum": np.nan, "truths": 0}
        best_iou.append(records["iou_sum"] / records["truths"] if records["truths"] else np.nan)
    order = [k for k in np.argsort(-np.nan_to_num(np.asarray(best_iou), nan=-1.0)) if not np.isnan(best_iou[k])]
    cases = order[:3] + order[-3:] if len(order) > 6 else order
    fig, axes = plt.subplots(1, max(1, len(cases)), figsize=(2.6 * max(1, len(cases)), 2.8), squeeze=False)
    for ax, k in zip(axes[0], cases, strict=False):
        ax.imshow(heat[k], cmap="jet", vmin=0, vmax=1)
        for x0, y0, x1, y1 in truth[k]:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", linewidth=1.5))
        for point, style in (("high_sensitivity", ":"), ("high_specificity", "-")):
            for box in boxes_from_heatmap(heat[k], levels.get(point, 1.1)):
                rect = Rectangle((box.x0, box.y0), box.x1 - box.x0, box.y1 - box.y0, fill=False, color="white", linestyle=style)
                ax.add_patch(rect)
        ax.set_title(f"{test['body_part'].iloc[k].removeprefix('XR_').lower()} IoU {best_iou[k]:.2f}", fontsize=8)
        ax.axis("off")
    what = "SYNTHETIC phantoms" if synthetic else "test images"
    fig.suptitle(f"{what}: best and worst test cases (green: truth; dotted/solid: the two operating points)", fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, bbox_inches="tight")
    plt.close(fig)
