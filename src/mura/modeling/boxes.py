"""Boxes where the model looks: connected regions of a heatmap above a level, at two operating points (pure).

What fracture-detection products show clinicians: a dotted box where only the high-sensitivity
threshold is passed, a solid box where the high-specificity one is too. Here, per view, the
ensemble's Grad-CAM map is cut at a heat level; each connected region (8-connectivity) above it
is a box, scored by the region's peak heat. A study below an operating point's threshold gets no
box at that point. Boxes are in the heatmap's pixel grid (the model's input square) until
:meth:`Box.scaled` maps them to an image's own pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["BOX_POINTS", "Box", "boxes_from_heatmap", "iou", "study_boxes"]

# The two operating points boxes are drawn at: dotted (sensitive) and solid (specific).
BOX_POINTS = ("high_sensitivity", "high_specificity")
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Box:
    """One region: ``x0, y0`` inclusive, ``x1, y1`` exclusive, in pixels of the grid it was found on; its peak heat."""

    x0: int
    y0: int
    x1: int
    y1: int
    score: float

    def contains(self, x: float, y: float) -> bool:
        """Whether the point (x right, y down) is inside."""
        return self.x0 <= x < self.x1 and self.y0 <= y < self.y1

    def scaled(self, from_shape: tuple[int, int], to_shape: tuple[int, int]) -> Box:
        """The same box on another grid (``(height, width)`` each): heatmap square → the image's pixels."""
        sy, sx = to_shape[0] / from_shape[0], to_shape[1] / from_shape[1]
        return Box(
            int(np.floor(self.x0 * sx)),
            int(np.floor(self.y0 * sy)),
            int(np.ceil(self.x1 * sx)),
            int(np.ceil(self.y1 * sy)),
            self.score,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    def fractions(self, shape: tuple[int, int]) -> dict[str, float]:
        """The box as fractions (0-1) of a ``(height, width)`` grid's width and height, with its score (JSON-ready)."""
        height, width = shape
        return {
            "x0": self.x0 / width,
            "y0": self.y0 / height,
            "x1": self.x1 / width,
            "y1": self.y1 / height,
            "score": round(self.score, 4),
        }


def iou(a: Box | tuple[float, float, float, float], b: Box | tuple[float, float, float, float]) -> float:
    """Intersection over union of two boxes (``Box`` or ``(x0, y0, x1, y1)``); 0 when either is empty."""
    ax0, ay0, ax1, ay1 = (a.x0, a.y0, a.x1, a.y1) if isinstance(a, Box) else a
    bx0, by0, bx1, by1 = (b.x0, b.y0, b.x1, b.y1) if isinstance(b, Box) else b
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return float(inter / union) if union > 0 else 0.0


def boxes_from_heatmap(heat: np.ndarray, level: float, min_area: float = 0.002, max_boxes: int = 3) -> list[Box]:
    """The connected regions of ``heat`` at or above ``level``, as boxes, best first (pure, deterministic).

    Args:
        heat: one view's heatmap (H, W), in [0, 1].
        level: the heat a pixel needs to belong to a region.
        min_area: regions smaller than this fraction of the map are dropped (specks).
        max_boxes: at most this many, by peak heat (ties: top-left first).
    """
    heat = np.asarray(heat, dtype=np.float64)
    labels, count = ndimage.label(heat >= level, structure=_EIGHT)
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    peaks = ndimage.maximum(heat, labels, index)
    sizes = ndimage.sum_labels(np.ones_like(heat), labels, index)
    boxes = []
    for (rows, cols), peak, size in zip(ndimage.find_objects(labels), peaks, sizes, strict=True):
        if size >= min_area * heat.size:
            boxes.append(Box(cols.start, rows.start, cols.stop, rows.stop, float(peak)))
    boxes.sort(key=lambda b: (-b.score, b.y0, b.x0))
    return boxes[:max_boxes]


def study_boxes(
    heatmaps: Sequence[np.ndarray],
    study_probability: float,
    thresholds: Mapping[str, float],
    levels: Mapping[str, float],
) -> dict[str, list[list[Box]]]:
    """Per box operating point, each view's boxes; none at a point whose threshold the study does not reach (pure).

    Args:
        heatmaps: the views' ensemble heatmaps, in view order.
        study_probability: the study's served (calibrated) probability.
        thresholds: operating point → study threshold (the served config's).
        levels: operating point → heat level of its boxes (chosen on valid: ``localize`` stage).

    Returns:
        ``{point: [boxes of view 1, boxes of view 2, …]}`` for the points of :data:`BOX_POINTS` in ``thresholds``.
    """
    out: dict[str, list[list[Box]]] = {}
    for point in BOX_POINTS:
        if point not in thresholds or point not in levels:
            continue
        passed = study_probability >= thresholds[point]
        out[point] = [boxes_from_heatmap(heat, levels[point]) if passed else [] for heat in heatmaps]
    return out
