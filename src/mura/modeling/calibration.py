"""Post-hoc calibration of the ensemble's probability (a pure, serializable map).

The ensemble's probability is an average of four sigmoid outputs trained with class
weights and oversampling: a ranking, not a frequency. The ``calibrate`` stage fits a
map on the validation split's *study* probabilities (never on test) and every entry
point serves ``Calibrator.apply(p)``:

- ``temperature`` (default): ``sigmoid(logit(p) / T)``, fitted by scikit-learn's
  ``CalibratedClassifierCV(FrozenEstimator(...), method="temperature")``; one number,
  monotone, so the ranking (AUC) is unchanged.
- ``isotonic``: scikit-learn's ``IsotonicRegression`` (non-decreasing, clipped to
  [0, 1]); kept as its knots and served by linear interpolation, as scikit-learn does.
- ``none``: the identity.

The same map is applied to each view's probability and to the study's mean: it was fitted
on studies, and on views it is the same monotone transformation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mura.config import CalibrationMethod

__all__ = ["CalibrationMethod", "Calibrator", "fit_calibrator", "logit"]

EPS = 1e-7


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) with p clipped to [1e-7, 1 - 1e-7]."""
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    out: np.ndarray = np.log(q) - np.log1p(-q)
    return out


@dataclass(frozen=True)
class Calibrator:
    """A fitted calibration map (see the module docstring).

    Attributes:
        method: ``temperature``, ``isotonic`` or ``none``.
        temperature: T of temperature scaling (1 = identity).
        knots_x, knots_y: the isotonic map's knots (raw → calibrated probability).
    """

    method: CalibrationMethod = "none"
    temperature: float = 1.0
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.method == "temperature" and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.method == "isotonic" and (len(self.knots_x) != len(self.knots_y) or not self.knots_x):
            raise ValueError("an isotonic calibrator needs as many knots_y as knots_x (at least one)")

    def apply(self, p: np.ndarray | float) -> np.ndarray:
        """Calibrated probabilities (same shape as ``p``)."""
        raw = np.asarray(p, dtype=np.float64)
        if self.method == "temperature":
            out: np.ndarray = 1.0 / (1.0 + np.exp(-logit(raw) / self.temperature))
            return out
        if self.method == "isotonic":
            return np.asarray(np.interp(raw, self.knots_x, self.knots_y), dtype=np.float64)
        return raw.copy()

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "temperature": self.temperature,
            "knots_x": list(self.knots_x),
            "knots_y": list(self.knots_y),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> Calibrator:
        """From :meth:`to_dict`'s output; None (an older model) is the identity."""
        if not doc:
            return cls()
        return cls(
            method=doc.get("method", "none"),
            temperature=float(doc.get("temperature", 1.0)),
            knots_x=tuple(float(v) for v in doc.get("knots_x", ())),
            knots_y=tuple(float(v) for v in doc.get("knots_y", ())),
        )


def fit_calibrator(y_true: np.ndarray, p_raw: np.ndarray, method: CalibrationMethod) -> Calibrator:
    """Fit a calibrator on (label, raw probability) pairs, e.g. the validation split's studies.

    Args:
        y_true: 0/1 labels.
        p_raw: the ensemble's raw probabilities.
        method: see the module docstring.

    Returns:
        The fitted map (the identity for ``none``, or when the labels have one class only).
    """
    from sklearn.base import BaseEstimator, ClassifierMixin  # lazy: only to fit a map: serving applies it without scikit-learn
    from sklearn.calibration import CalibratedClassifierCV  # lazy: only to fit a map: serving applies it without scikit-learn
    from sklearn.frozen import FrozenEstimator  # lazy: only to fit a map: serving applies it without scikit-learn
    from sklearn.isotonic import IsotonicRegression  # lazy: only to fit a map: serving applies it without scikit-learn

    y = np.asarray(y_true).astype(int)
    p = np.asarray(p_raw, dtype=np.float64)
    if method == "none" or len(np.unique(y)) < 2:
        return Calibrator()
    if method == "isotonic":
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return Calibrator("isotonic", knots_x=tuple(map(float, iso.X_thresholds_)), knots_y=tuple(map(float, iso.y_thresholds_)))

    class _Logit(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
        """The ensemble as a fitted classifier whose decision function is its logit."""

        def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> _Logit:
            self.classes_ = np.array([0, 1])
            return self

        def decision_function(self, x: np.ndarray) -> np.ndarray:
            return np.asarray(x, dtype=np.float64)[:, 0]

        def predict(self, x: np.ndarray) -> np.ndarray:
            return (self.decision_function(x) >= 0).astype(int)

    z = logit(p)[:, None]
    fitted = CalibratedClassifierCV(FrozenEstimator(_Logit().fit(z)), method="temperature").fit(z, y)
    # The fitted map is sigmoid(z / T): read T back through the public API at z = 1.
    at_one = float(fitted.predict_proba(np.array([[1.0]]))[0, 1])
    return Calibrator("temperature", temperature=float(1.0 / logit(np.array(at_one))))
