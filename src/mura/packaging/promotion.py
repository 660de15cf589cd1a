"""Champion vs challenger on the same cases: which version ``register`` aliases ``champion``.

Both versions are scored by their served answers (each one's calibration and served threshold)
on the same held-out test studies of this pipeline's data; the difference in the chosen metric
(study-level Cohen's kappa, or AUC) gets a paired, patient-level bootstrap confidence interval
(the same resampled patients for both in every replicate). The challenger is promoted when it is
non-inferior: the interval's lower bound is above ``−margin`` (``register.promotion``). Comparing
recorded validation figures instead would compare two numbers measured on possibly different
data, with no notion of noise.

:func:`paired_comparison` and :func:`decide` are pure; :func:`served_study_scores` runs a loaded
model on cached test images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from mura.data.imaging import resize_gray
from mura.evaluation.metrics import bootstrap_ci, fast_metrics

__all__ = ["PairedComparison", "PromotionDecision", "decide", "paired_comparison", "served_study_scores"]


def served_study_scores(predictor: Any, pixels: np.ndarray, study_ids: list[str]) -> pd.DataFrame:
    """One model's served answer per study: calibrated ``probability`` and ``abnormal`` at its served threshold.

    Args:
        predictor: a loaded :class:`mura.runtime.predictor.Predictor`.
        pixels: the test images (N, S, S) uint8 from the cache; resized (from the cache) to the
            model's own input side when it was trained at another size.
        study_ids: each image's study.

    Returns:
        Indexed by ``study_id``: ``probability``, ``abnormal`` (bool).
    """
    size, resize = predictor.config.image_size, predictor.config.resize
    if pixels.shape[1:] != (size, size):
        pixels = np.stack([resize_gray(image, size, resize) for image in pixels])
    frame = predictor.service.predict_pixels(pixels, list(study_ids))
    studies = frame.groupby("study_id", sort=False).first()
    return pd.DataFrame(
        {"probability": studies["study_probability"].astype(float), "abnormal": studies["study_label"] == "abnormal"}
    )


@dataclass(frozen=True)
class PairedComparison:
    """The challenger against the champion on the same test studies.

    Attributes:
        metric: ``kappa`` (served labels) or ``roc_auc`` (served probabilities), study level.
        challenger, champion: each one's figure on those studies.
        difference: challenger − champion.
        ci_low, ci_high: the difference's paired patient-bootstrap interval (NaN when undefined).
        level: the interval's confidence level.
        studies, patients: what was compared.
        champion_version: the champion's registered version.
    """

    metric: str
    challenger: float
    champion: float
    difference: float
    ci_low: float
    ci_high: float
    level: float
    studies: int
    patients: int
    champion_version: str


def paired_comparison(
    studies: pd.DataFrame,
    metric: str,
    champion_version: str,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedComparison:
    """Both models' ``metric`` on the same studies, and the paired bootstrap CI of their difference (pure).

    Args:
        studies: one row per test study: ``patient_id``, ``label`` (1 abnormal), and per model
            ``p_new``/``abnormal_new`` and ``p_champion``/``abnormal_champion``.
        metric: ``kappa`` or ``roc_auc``.
        champion_version: recorded in the result.
        n_resamples: bootstrap replicates (patients drawn with replacement; both models see the same draw).
        seed: the bootstrap's seed.
        level: confidence level.
    """
    y = studies["label"].to_numpy(int)

    def figure(side: str, rows: np.ndarray) -> float:
        # kappa of the served labels (threshold 0.5 on the 0/1 label), AUC of the served probabilities
        values = studies[f"abnormal_{side}" if metric == "kappa" else f"p_{side}"].to_numpy(float)[rows]
        return float(fast_metrics(y[rows], values, 0.5)[metric])

    every = np.arange(len(studies))
    new, old = figure("new", every), figure("champion", every)
    ci = bootstrap_ci(
        studies["patient_id"].to_numpy(),
        lambda rows: {"difference": figure("new", rows) - figure("champion", rows)},
        names=("difference",),
        n_resamples=n_resamples,
        seed=seed,
        level=level,
    )["difference"]
    return PairedComparison(
        metric=metric,
        challenger=new,
        champion=old,
        difference=new - old,
        ci_low=ci[0],
        ci_high=ci[1],
        level=level,
        studies=len(studies),
        patients=int(studies["patient_id"].nunique()),
        champion_version=champion_version,
    )


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the new version becomes ``champion``, and why.

    Attributes:
        promote: alias it ``champion``.
        reason: one line with the figures.
        forced: ``register.force_champion`` decided it (an emergency, recorded as such).
        comparison: the paired comparison (None without a champion, or when a forced promotion could not compare).
        margin: the non-inferiority margin it was judged with.
    """

    promote: bool
    reason: str
    forced: bool = False
    comparison: PairedComparison | None = None
    margin: float = 0.0

    def tags(self) -> dict[str, str]:
        """The model version's and the run's tags (``promotion_*``)."""
        tags = {"promotion_decision": "promoted" if self.promote else "kept champion", "promotion_reason": self.reason[:5000]}
        tags["promotion_forced"] = str(self.forced).lower()
        if self.comparison is not None:
            tags["promotion_compared_with"] = self.comparison.champion_version
        return tags

    def metrics(self) -> dict[str, float]:
        """The run's metrics (``promotion_*``): both figures, the difference and its CI (finite ones only)."""
        if self.comparison is None:
            return {}
        c = self.comparison
        values = {"challenger": c.challenger, "champion": c.champion, "difference": c.difference}
        values |= {"difference_ci_low": c.ci_low, "difference_ci_high": c.ci_high, "margin": self.margin}
        return {f"promotion_{c.metric}_{k}": float(v) for k, v in values.items() if math.isfinite(v)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the model card's lineage, ``reports/register.json``)."""
        return asdict(self)


def decide(comparison: PairedComparison | None, margin: float, force: bool) -> PromotionDecision:
    """Promote when forced, when there is no champion, or when the challenger is non-inferior (pure).

    Non-inferior: the lower bound of the difference's interval is above ``−margin``. An interval
    that cannot be computed (too few studies, one class only) keeps the champion.
    """
    if comparison is None:
        reason = "forced (register.force_champion), without a comparison" if force else "no champion yet"
        return PromotionDecision(True, reason, forced=force, margin=margin)
    c = comparison
    figures = (
        f"{c.metric} {c.challenger:.3f} vs champion v{c.champion_version} {c.champion:.3f} on the same {c.studies} "
        f"test studies ({c.patients} patients): difference {c.difference:+.3f}, "
        f"{c.level:.0%} CI [{c.ci_low:+.3f}, {c.ci_high:+.3f}], margin {margin}"
    )
    if force:
        return PromotionDecision(True, f"forced (register.force_champion): {figures}", True, c, margin)
    if math.isnan(c.ci_low):
        return PromotionDecision(False, f"kept the champion: the difference's CI is undefined; {figures}", False, c, margin)
    if c.ci_low > -margin:
        return PromotionDecision(True, f"promoted: non-inferior; {figures}", False, c, margin)
    return PromotionDecision(False, f"kept the champion: not shown non-inferior; {figures}", False, c, margin)
