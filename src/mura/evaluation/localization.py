"""Does the heatmap point at the finding? Localisation measured against true boxes (pure).

Per abnormal image with at least one true box (the phantoms' planted findings, FracAtlas's or
GRAZPEDWRI-DX's boxes, scaled to the heatmap's grid):

- pointing game: the heatmap's maximum (the centre of its plateau) falls inside a true box (a hit);
- pointing ceiling: the hit rate the best map of this resolution could reach. A map upsampled from
  the backbone's grid (stride 32: 2 x 2 at 64 px, 10 x 10 at 320 px) can peak only at a few places
  (:func:`reachable_peaks`); an image counts when one of them lies in a true box. It tells a model
  that points badly from a grid too coarse for the findings (0 at the demo's 64 px);
- box sensitivity at IoU ≥ t: the share of true boxes some predicted box overlaps by at least t;
- false positives per image at IoU ≥ t: predicted boxes that overlap no true box by t (normal
  images count here too: every box on them is a false positive);
- mean IoU: each true box's best IoU with a predicted box, averaged.

:func:`image_record` scores one image; :func:`localization_summary` aggregates records per body
part and overall with patient-level bootstrap CIs (:func:`mura.evaluation.metrics.bootstrap_ci`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd

from mura.evaluation.metrics import bootstrap_ci
from mura.modeling.boxes import Box, iou

__all__ = [
    "IOU_LEVELS",
    "LOCALIZATION_METRICS",
    "image_record",
    "localization_summary",
    "peak",
    "pointing_hit",
    "reachable_peaks",
]

IOU_LEVELS = (0.1, 0.3)
LOCALIZATION_METRICS = (
    "pointing",
    "pointing_ceiling",
    *(f"sensitivity_iou{t}" for t in IOU_LEVELS),
    *(f"fp_per_image_iou{t}" for t in IOU_LEVELS),
    "mean_iou",
)
TruthBox = tuple[float, float, float, float]


def peak(heat: np.ndarray) -> tuple[float, float]:
    """Where the heatmap's maximum is, ``(x, y)``: the centre of the plateau of maximal pixels around the first one.

    A Grad-CAM map upsampled from a coarse grid (2 x 2 at 64 px, 10 x 10 at 320 px) is flat around a
    border cell's maximum, out to the image's edge; the first pixel of that plateau in row order is
    its top-left corner, up to half a cell away from where the cell looks. The plateau's centre
    is not biased towards the top left.
    """
    from scipy import ndimage  # lazy: only when measuring

    first = np.unravel_index(int(np.argmax(heat)), heat.shape)
    components, _ = ndimage.label(heat >= heat[first])
    ys, xs = np.nonzero(components == components[first])
    return float(xs.mean()), float(ys.mean())


def pointing_hit(heat: np.ndarray, truth: Sequence[TruthBox]) -> bool:
    """Whether the heatmap's maximum (:func:`peak`, a pixel centre) lies inside one of the true boxes.

    A flat map (all zeros: nothing pushed the prediction up) points nowhere: a miss, not its plateau's
    centre, which would be the image's and would hit every central finding.
    """
    return bool(np.ptp(heat) > 0) and _inside(*peak(heat), truth)


def _inside(x: float, y: float, truth: Sequence[TruthBox]) -> bool:
    """Whether the pixel centred at ``(x, y)`` lies in one of the boxes."""
    return any(x0 <= x + 0.5 <= x1 and y0 <= y + 0.5 <= y1 for x0, y0, x1, y1 in truth)


def reachable_peaks(size: int, grid: int) -> list[tuple[float, float]]:
    """Every place a ``grid × grid`` map upsampled to ``size`` as the heatmaps are can have its :func:`peak` (pure).

    The peak of the upsampled map is that of its largest cell, so trying each cell alone finds them all
    (none for ``grid`` 0: an unknown grid).
    """
    from mura.modeling.gradcam import upsample  # lazy: PIL only

    found = []
    for cell in range(grid * grid):
        one = np.full(grid * grid, 0.5, np.float32)
        one[cell] = 1.0
        found.append(peak(upsample(one.reshape(grid, grid), size)))
    return found


def image_record(
    heat: np.ndarray, truth: Sequence[TruthBox], predicted: Sequence[Box], peaks: Sequence[tuple[float, float]] = ()
) -> dict[str, float]:
    """One image's counts: true boxes, hits of the pointing game, matched true boxes and false positives per IoU level.

    Args:
        heat: the image's heatmap (H, W).
        truth: its true boxes on the heatmap's grid (empty for a normal image).
        predicted: the boxes the model drew on it at one operating point.
        peaks: :func:`reachable_peaks` of the heatmap's grid (none: no ceiling).
    """
    record: dict[str, float] = {"truths": float(len(truth)), "boxes": float(len(predicted))}
    record["pointing"] = float(pointing_hit(heat, truth)) if truth else float("nan")
    reachable = any(_inside(x, y, truth) for x, y in peaks)
    record["pointing_ceiling"] = float(reachable) if truth and peaks else float("nan")
    best = [max((iou(p, t) for p in predicted), default=0.0) for t in truth]
    record["iou_sum"] = float(sum(best))
    for level in IOU_LEVELS:
        record[f"matched_iou{level}"] = float(sum(b >= level for b in best))
        record[f"fp_iou{level}"] = float(sum(all(iou(p, t) < level for t in truth) for p in predicted))
    return record


def _aggregate(records: pd.DataFrame, rows: np.ndarray) -> dict[str, float]:
    part = records.iloc[rows]
    truths = part["truths"].sum()
    with_truth = part[part["truths"] > 0]
    out = {name: float(with_truth[name].mean()) if len(with_truth) else float("nan") for name in ("pointing", "pointing_ceiling")}
    for level in IOU_LEVELS:
        out[f"sensitivity_iou{level}"] = float(part[f"matched_iou{level}"].sum() / truths) if truths else float("nan")
        out[f"fp_per_image_iou{level}"] = float(part[f"fp_iou{level}"].mean()) if len(part) else float("nan")
    out["mean_iou"] = float(part["iou_sum"].sum() / truths) if truths else float("nan")
    return out


def localization_summary(records: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Per ``body_part`` and ``all``: the :data:`LOCALIZATION_METRICS` with patient-bootstrap CIs (pure).

    Args:
        records: one row per image: ``patient_id``, ``body_part`` and :func:`image_record`'s columns
            (optionally ``operating_point``: then one summary per point).
        n_resamples, seed, level: the bootstrap's.

    Returns:
        One row per (operating point,) group: ``images``, ``truths`` and each metric with ``_ci_low``/``_ci_high``.
    """
    keys = ["operating_point"] if "operating_point" in records else []
    rows = []
    for point_key, by_point in records.groupby(keys, sort=True) if keys else [((), records)]:
        groups = [("all", by_point), *((str(part), frame) for part, frame in by_point.groupby("body_part", sort=True))]
        for group, frame in groups:
            frame = frame.reset_index(drop=True)
            row: dict[str, object] = dict(zip(keys, point_key if isinstance(point_key, tuple) else (point_key,), strict=True))
            row |= {"group": group, "images": len(frame), "truths": int(frame["truths"].sum())}
            row |= _aggregate(frame, np.arange(len(frame)))
            cis = bootstrap_ci(
                frame["patient_id"].to_numpy(),
                partial(_aggregate, frame),
                LOCALIZATION_METRICS,
                n_resamples,
                seed,
                level,
            )
            for name, (low, high) in cis.items():
                row[f"{name}_ci_low"], row[f"{name}_ci_high"] = low, high
            rows.append(row)
    return pd.DataFrame(rows)
