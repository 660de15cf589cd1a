"""Live performance: the model against radiologists' labels, from the feedback store.

:func:`live_performance` is pure (reviewed rows in, a table out): per model version and body
part (and ``all``), the number of reviewed studies, the agreement rate (the model's label equal
to the radiologist's), the sensitivity and specificity taking the radiologist's label as the
truth, each with a Wilson interval (scipy's ``binomtest``). :class:`FeedbackCollector` serves
the same figures to Prometheus over sliding windows, computed from the store at each scrape,
next to the *validation agreement's lower bound* (the Wilson lower bound of the served model's
validation accuracy at its operating point): the alert ``MuraAgreementBelowValidation`` fires
when live agreement falls under it. A reviewer's feedback is not a reference standard: these
are signals for the operator, not a clinical study.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from scipy import stats

from mura.operations.feedback import FeedbackStore, Retention, start_pruning
from mura.runtime.served_config import ServingConfig

__all__ = ["WINDOWS", "FeedbackCollector", "live_performance", "open_feedback", "validation_agreement_lower", "wilson"]

WINDOWS = {"7d": 7.0, "30d": 30.0}  # the sliding windows served to Prometheus
COLUMNS = [
    "model_version",
    "body_part",
    "n",
    "agreement",
    "agreement_low",
    "agreement_high",
    "n_abnormal",
    "sensitivity",
    "sensitivity_low",
    "sensitivity_high",
    "n_normal",
    "specificity",
    "specificity_low",
    "specificity_high",
]


def wilson(successes: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """``(rate, low, high)``: a proportion and its Wilson interval; NaNs when ``n`` is 0."""
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    interval = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return successes / n, float(interval.low), float(interval.high)


def _figures(group: pd.DataFrame, level: float) -> dict[str, Any]:
    truth = group["radiologist_label"] == "abnormal"
    said = group["label"] == "abnormal"
    agreement = wilson(int(group["agreed"].sum()), len(group), level)
    sensitivity = wilson(int((said & truth).sum()), int(truth.sum()), level)
    specificity = wilson(int((~said & ~truth).sum()), int((~truth).sum()), level)
    return {
        "n": len(group),
        **dict(zip(("agreement", "agreement_low", "agreement_high"), agreement, strict=True)),
        "n_abnormal": int(truth.sum()),
        **dict(zip(("sensitivity", "sensitivity_low", "sensitivity_high"), sensitivity, strict=True)),
        "n_normal": int((~truth).sum()),
        **dict(zip(("specificity", "specificity_low", "specificity_high"), specificity, strict=True)),
    }


def live_performance(reviewed: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Agreement, sensitivity and specificity per model version × body part (and ``all``), with Wilson CIs.

    Args:
        reviewed: :meth:`mura.operations.feedback.FeedbackStore.reviewed` rows (``model_version,
            body_part, label, radiologist_label, agreed``).
        level: confidence level of the intervals.

    Returns:
        One row per group, columns :data:`COLUMNS` (empty when nothing was reviewed).

    Raises:
        ValueError: a column is missing.
    """
    missing = {"model_version", "body_part", "label", "radiologist_label", "agreed"} - set(reviewed.columns)
    if missing:
        raise ValueError(f"reviewed rows lack {sorted(missing)}")
    rows = []
    frame = reviewed.assign(body_part=reviewed["body_part"].fillna("unknown"))
    for version, by_version in frame.groupby("model_version", sort=True):
        rows.append({"model_version": str(version), "body_part": "all", **_figures(by_version, level)})
        for part, group in by_version.groupby("body_part", sort=True):
            rows.append({"model_version": str(version), "body_part": str(part), **_figures(group, level)})
    return pd.DataFrame(rows, columns=COLUMNS)


def validation_agreement_lower(config: ServingConfig, level: float = 0.95) -> dict[str, float]:
    """Body part → the Wilson lower bound of the served model's validation accuracy (its agreement with the truth)."""
    bounds = {}
    for part, figures in config.validation_per_body_part.items():
        if figures.accuracy is not None and figures.n > 0:
            bounds[part] = wilson(round(figures.accuracy * figures.n), figures.n, level)[1]
    return bounds


class FeedbackCollector(Collector):
    """Prometheus gauges of live performance, computed from the store at each scrape.

    Args:
        store: a :class:`mura.operations.feedback.FeedbackStore`.
        config: the served model's config (its validation figures give the alert's bound).
        clock: returns now (tests).
    """

    def __init__(self, store: Any, config: ServingConfig | None, clock: Any = None) -> None:
        self.store, self.config = store, config
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["window", "body_part", "model_version"]
        families = {
            "n": GaugeMetricFamily("mura_feedback_reviewed", "Studies reviewed by a radiologist in the window", labels=labels),
            "agreement": GaugeMetricFamily(
                "mura_feedback_agreement_ratio",
                "Share of reviewed studies where the radiologist's label is the model's",
                labels=labels,
            ),
            "sensitivity": GaugeMetricFamily(
                "mura_feedback_sensitivity_ratio", "Model sensitivity against radiologists' labels", labels=labels
            ),
            "specificity": GaugeMetricFamily(
                "mura_feedback_specificity_ratio", "Model specificity against radiologists' labels", labels=labels
            ),
        }
        now = self._clock()
        reviewed = self.store.reviewed(since=now - dt.timedelta(days=max(WINDOWS.values())))
        for window, days in WINDOWS.items():
            recent = reviewed[reviewed["reviewed_at"] >= pd.Timestamp(now - dt.timedelta(days=days))]
            for row in live_performance(recent).itertuples():
                values = [window, row.body_part, row.model_version]
                for key, family in families.items():
                    value = float(getattr(row, key))
                    if np.isfinite(value):
                        family.add_metric(values, value)
        yield from families.values()
        bound = GaugeMetricFamily(
            "mura_validation_agreement_lower_ratio",
            "Lower 95 % bound of the served model's validation accuracy (the live agreement's floor)",
            labels=["body_part"],
        )
        for part, value in validation_agreement_lower(self.config).items() if self.config is not None else ():
            bound.add_metric([part], value)
        yield bound


def open_feedback(
    folder: Path, database_url: str | None, retention: Retention, registry: Any, config: ServingConfig
) -> tuple[FeedbackStore, threading.Event]:
    """A server's feedback store: retention applied now and hourly, live-performance gauges on its ``/metrics``.

    Returns:
        The store and the event that stops the retention thread.
    """
    store = FeedbackStore(folder, database_url, retention)
    stop = start_pruning(store)
    registry.register(FeedbackCollector(store, config))
    return store, stop
