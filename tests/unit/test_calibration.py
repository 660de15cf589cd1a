"""Calibration: the fitted map and the metrics that judge it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss

from mura.evaluation.metrics import calibration_metrics, reliability_curve
from mura.modeling.calibration import Calibrator, fit_calibrator, logit


def _miscalibrated(n: int = 20_000, scale: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z), scores sigmoid(scale * z): overconfident by a known temperature."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(int)
    return y, 1.0 / (1.0 + np.exp(-scale * z))


def test_temperature_scaling_recovers_a_known_temperature_and_cuts_ece() -> None:
    y, p = _miscalibrated()
    calibrator = fit_calibrator(y, p, "temperature")
    assert calibrator.method == "temperature"
    assert calibrator.temperature == pytest.approx(3.0, rel=0.05)
    before, after = calibration_metrics(y, p)["ece"], calibration_metrics(y, calibrator.apply(p))["ece"]
    assert after <= 0.2 * before, (before, after)
    # Monotone: the ranking (hence AUC) is unchanged.
    order = np.argsort(p)
    assert np.all(np.diff(calibrator.apply(p)[order]) >= 0)


def test_isotonic_is_monotone_within_unit_interval_and_cuts_ece() -> None:
    y, p = _miscalibrated(seed=1)
    calibrator = fit_calibrator(y, p, "isotonic")
    out = calibrator.apply(np.linspace(0, 1, 101))
    assert np.all(np.diff(out) >= 0) and out.min() >= 0 and out.max() <= 1
    assert calibration_metrics(y, calibrator.apply(p))["ece"] <= 0.2 * calibration_metrics(y, p)["ece"]


def test_none_and_one_class_are_the_identity_and_round_trip() -> None:
    y, p = _miscalibrated(n=200)
    assert fit_calibrator(y, p, "none") == Calibrator()
    assert fit_calibrator(np.ones(10), p[:10], "temperature") == Calibrator()
    np.testing.assert_array_equal(Calibrator().apply(p), p)
    for method in ("temperature", "isotonic"):
        fitted = fit_calibrator(y, p, method)  # type: ignore[arg-type]
        again = Calibrator.from_dict(fitted.to_dict())
        np.testing.assert_allclose(again.apply(p), fitted.apply(p), atol=1e-15)
    assert Calibrator.from_dict(None) == Calibrator()  # a model registered before calibration existed


def test_calibration_metrics_match_scikit_learn_and_hand_cases() -> None:
    y, p = _miscalibrated(n=3000, seed=2)
    m = calibration_metrics(y, p)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(y, p), abs=1e-9)
    # Perfect frequencies in every bin: ECE 0. One bin, all wrong by 0.3: ECE = MCE = 0.3.
    assert calibration_metrics(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5]))["ece"] == pytest.approx(0.0)
    wrong = calibration_metrics(np.array([0, 0, 0]), np.array([0.3, 0.3, 0.3]))
    assert (
        wrong["ece"] == pytest.approx(0.3) and wrong["mce"] == pytest.approx(0.3) and wrong["ece_adaptive"] == pytest.approx(0.3)
    )
    mean_prob, fraction = reliability_curve(y, p)
    assert len(mean_prob) == len(fraction) <= 15 and np.all((fraction >= 0) & (fraction <= 1))


def test_logit_is_clipped() -> None:
    assert np.isfinite(logit(np.array([0.0, 1.0]))).all()


def test_out_of_fold_check_keeps_a_map_that_helps_and_refuses_one_that_cannot_be_checked() -> None:
    from mura.evaluation.calibrate import out_of_fold_check

    y, p = _miscalibrated(n=3000, seed=5)
    check = out_of_fold_check(y, p, "temperature", folds=5)
    assert check["keep"] and check["ece"]["calibrated"] < check["ece"]["raw"]
    # Already calibrated scores: a fitted map cannot do better out of fold on both counts, or barely.
    y2, p2 = _miscalibrated(n=3000, scale=1.0, seed=6)
    honest = out_of_fold_check(y2, p2, "temperature", folds=5)
    assert honest["ece"]["calibrated"] >= 0.5 * honest["ece"]["raw"]
    assert not out_of_fold_check(np.array([0, 1, 0, 0, 0, 0]), np.linspace(0.1, 0.9, 6), "temperature", folds=5)["keep"]
    assert out_of_fold_check(y, p, "none", folds=5)["reason"] == "calibrate.method is none"
