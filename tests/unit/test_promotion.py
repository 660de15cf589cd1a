"""Champion vs challenger on the same test studies: the paired comparison and the decision (pure)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mura.packaging.promotion import PairedComparison, decide, paired_comparison


def _studies(champion_wrong: int, new_wrong: int, n: int = 40) -> pd.DataFrame:
    """``n`` studies of ``n`` patients, half abnormal; each model wrong on its first ``*_wrong`` studies."""
    label = np.arange(n) % 2
    new, old = label.copy(), label.copy()
    new[:new_wrong] = 1 - new[:new_wrong]
    old[:champion_wrong] = 1 - old[:champion_wrong]
    return pd.DataFrame(
        {
            "patient_id": [f"p{k}" for k in range(n)],
            "label": label,
            "abnormal_new": new.astype(bool),
            "p_new": np.where(new == 1, 0.8, 0.2),
            "abnormal_champion": old.astype(bool),
            "p_champion": np.where(old == 1, 0.7, 0.3),
        }
    )


def test_the_same_answers_differ_by_nothing() -> None:
    c = paired_comparison(_studies(4, 4), "kappa", "3", n_resamples=200)
    assert c.challenger == c.champion == pytest.approx(0.8) and c.difference == 0.0
    assert (c.ci_low, c.ci_high) == (0.0, 0.0)  # paired: every replicate resamples the same patients for both
    assert c.studies == 40 and c.patients == 40 and c.champion_version == "3"


def test_a_better_challenger_has_a_positive_difference_and_the_figures_are_each_models() -> None:
    c = paired_comparison(_studies(champion_wrong=12, new_wrong=2), "kappa", "1", n_resamples=300)
    assert c.challenger == pytest.approx(0.9) and c.champion == pytest.approx(0.4)
    assert c.difference == pytest.approx(0.5) and 0.0 < c.ci_low < 0.5 < c.ci_high
    auc = paired_comparison(_studies(12, 2), "roc_auc", "1", n_resamples=300)
    assert auc.challenger == pytest.approx(0.95) and auc.champion == pytest.approx(0.7)


def test_patients_are_resampled_whole() -> None:
    """Two studies of one patient move together: the CI is wider than with one study per patient."""
    one_each = _studies(10, 6)
    paired = one_each.assign(patient_id=[f"p{k // 2}" for k in range(len(one_each))])
    narrow = paired_comparison(one_each, "kappa", "1", n_resamples=400)
    wide = paired_comparison(paired, "kappa", "1", n_resamples=400)
    assert wide.patients == 20 and narrow.difference == wide.difference
    assert (wide.ci_high - wide.ci_low) > (narrow.ci_high - narrow.ci_low)


def _comparison(low: float, high: float = 0.1) -> PairedComparison:
    return PairedComparison("kappa", 0.5, 0.5, (low + high) / 2, low, high, 0.95, 100, 90, "2")


@pytest.mark.parametrize(
    "comparison,force,promote,start",
    [
        (None, False, True, "no champion yet"),
        (_comparison(-0.015), False, True, "promoted: non-inferior"),  # within the 0.02 margin
        (_comparison(-0.05), False, False, "kept the champion: not shown non-inferior"),
        (_comparison(float("nan"), float("nan")), False, False, "kept the champion: the difference's CI is undefined"),
        (_comparison(-0.05), True, True, "forced (register.force_champion): kappa"),  # emergencies: recorded as forced
        (None, True, True, "forced (register.force_champion), without a comparison"),
    ],
)
def test_decide(comparison: PairedComparison | None, force: bool, promote: bool, start: str) -> None:
    decision = decide(comparison, margin=0.02, force=force)
    assert decision.promote is promote and decision.forced is force and decision.reason.startswith(start)
    tags = decision.tags()
    assert tags["promotion_decision"] == ("promoted" if promote else "kept champion")
    assert tags["promotion_forced"] == str(force).lower()
    metrics = decision.metrics()
    if comparison is None:
        assert metrics == {} and "promotion_compared_with" not in tags
    else:
        assert tags["promotion_compared_with"] == "2" and metrics["promotion_kappa_margin"] == 0.02
        assert all(math.isfinite(v) for v in metrics.values())
        assert ("promotion_kappa_difference_ci_low" in metrics) is math.isfinite(comparison.ci_low)
