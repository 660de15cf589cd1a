"""The ``evaluate`` stage: metric tables for every model × level × group with patient-bootstrap CIs.

The ensemble is judged on its *calibrated* probability (the ``calibrate`` stage's map, applied
to each view and to each study's mean, as served); its calibration metrics are reported before
(``<metric>_uncalibrated``) and after calibration.

:func:`evaluation_table`, :func:`headline_metrics` and :func:`curves` are pure
(DataFrames in, values out); :func:`run_evaluation` reads the stage's inputs
and writes its metrics, plots and report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from mura.config import EvaluateParams
from mura.evaluation.metrics import (
    CALIBRATION_BINS,
    CALIBRATION_METRICS,
    METRICS,
    binary_metrics,
    bootstrap_ci,
    calibration_metrics,
    fast_metrics,
    reliability_curve,
)
from mura.evaluation.predict import PREDICTION_SPLITS
from mura.evaluation.report import plot_figures, plot_reliability, render_report
from mura.modeling.averaging import ENSEMBLE, aggregate_studies, prob_column
from mura.modeling.calibration import Calibrator
from mura.modeling.operating_points import OperatingPoints
from mura.stage import Layout, write_csv, write_json
from mura.tracking import dataset_provenance

__all__ = ["curves", "evaluation_table", "headline_metrics", "reliability_points", "run_evaluation"]

UNCALIBRATED = "_uncalibrated"  # suffix of the ensemble's metrics before calibration
RAW_ENSEMBLE = prob_column(ENSEMBLE) + UNCALIBRATED


def calibrate_frame(frame: pd.DataFrame, calibrator: Calibrator) -> pd.DataFrame:
    """Keep the ensemble's raw probability as ``p_ensemble_uncalibrated`` and calibrate ``p_ensemble`` (pure)."""
    column = prob_column(ENSEMBLE)
    if column not in frame.columns:
        return frame
    raw = frame[RAW_ENSEMBLE] if RAW_ENSEMBLE in frame.columns else frame[column]
    return frame.assign(**{RAW_ENSEMBLE: raw, column: calibrator.apply(raw.to_numpy(dtype=np.float64))})


def _calibration_row(
    labels: np.ndarray,
    probs: np.ndarray,
    patients: np.ndarray,
    bins: int,
    n_resamples: int,
    seed: int,
    ci_level: float,
    suffix: str = "",
) -> dict[str, float]:
    def metric(rows: np.ndarray) -> dict[str, float]:
        return calibration_metrics(labels[rows], probs[rows], bins)

    values = calibration_metrics(labels, probs, bins)
    ci = bootstrap_ci(patients, metric, CALIBRATION_METRICS, n_resamples, seed, ci_level)
    row: dict[str, float] = {f"{k}{suffix}": v for k, v in values.items()}
    for name, (low, high) in ci.items():
        row[f"{name}{suffix}_ci_low"], row[f"{name}{suffix}_ci_high"] = low, high
    return row


def evaluation_table(
    images: pd.DataFrame,
    models: Sequence[str],
    thresholds: dict[str, float],
    n_resamples: int,
    seed: int,
    ci_level: float = 0.95,
    calibrator: Calibrator | None = None,
    bins: int = CALIBRATION_BINS,
) -> pd.DataFrame:
    """Metrics for each split × model × level (image, study) × group × operating point.

    Groups: ``all``, each dataset (``dataset:mura``) and each body part.

    Args:
        images: per-image predictions (``split, dataset, body_part, patient_id, study_id, label, p_<model>``).
        models: model names (variants and ``ensemble``).
        thresholds: operating point name → threshold (e.g. ``{"0.5": 0.5, "high_sensitivity": 0.31}``).
        n_resamples: bootstrap replicates for the CIs.
        seed: bootstrap seed.
        ci_level: confidence level of the intervals.
        calibrator: the ensemble's calibration map (None: the identity).
        bins: bins of the calibration metrics.

    Returns:
        One row per combination with the metrics of :func:`mura.evaluation.metrics.binary_metrics`,
        the :data:`~mura.evaluation.metrics.CALIBRATION_METRICS` (the same on every operating
        point's row), ``<metric>_ci_low`` / ``<metric>_ci_high``, and for the ensemble the
        calibration metrics before calibration as ``<metric>_uncalibrated``.
    """
    rows: list[dict[str, Any]] = []
    columns = [prob_column(m) for m in models]
    calibrator = calibrator or Calibrator()
    for split, split_images in images.groupby("split", sort=True):
        # The map is applied to each view and to each study's mean of raw view probabilities, as served.
        raw_studies = aggregate_studies(split_images, columns)
        levels = {"image": calibrate_frame(split_images, calibrator), "study": calibrate_frame(raw_studies, calibrator)}
        for level, frame in levels.items():
            groups: list[tuple[str, pd.DataFrame]] = [("all", frame)]
            groups += [(f"dataset:{d}", f) for d, f in frame.groupby("dataset", sort=True)]
            groups += [(str(b), f) for b, f in frame.groupby("body_part", sort=True)]
            for group, sub in groups:
                labels, patients = sub["label"].to_numpy(), sub["patient_id"].to_numpy()
                for model, column in zip(models, columns, strict=True):
                    probs = sub[column].to_numpy(dtype=np.float64)
                    calibration = _calibration_row(labels, probs, patients, bins, n_resamples, seed, ci_level)
                    if model == ENSEMBLE and RAW_ENSEMBLE in sub.columns:
                        raw = sub[RAW_ENSEMBLE].to_numpy(dtype=np.float64)
                        calibration |= _calibration_row(labels, raw, patients, bins, n_resamples, seed, ci_level, UNCALIBRATED)
                    for point, threshold in thresholds.items():

                        def metric(
                            rows: np.ndarray, y: np.ndarray = labels, p: np.ndarray = probs, t: float = threshold
                        ) -> dict[str, float]:
                            return fast_metrics(y[rows], p[rows], t)

                        values = binary_metrics(labels, probs, threshold)
                        ci = bootstrap_ci(patients, metric, METRICS, n_resamples, seed, ci_level)
                        row = {
                            "split": split,
                            "model": model,
                            "level": level,
                            "group": group,
                            "operating_point": point,
                            "threshold": threshold,
                            **values,
                            **calibration,
                        }
                        for name, (low, high) in ci.items():
                            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = low, high
                        rows.append(row)
    return pd.DataFrame(rows)


def headline_metrics(table: pd.DataFrame) -> dict[str, Any]:
    """The nested dict for ``reports/metrics.json`` (DVC metrics): overall rows only.

    ``{split: {model: {level: {operating_point: {metric: value}}}}}``.
    """
    out: dict[str, Any] = {}
    overall = table[table["group"] == "all"]
    calibration = [*CALIBRATION_METRICS, *(f"{m}{UNCALIBRATED}" for m in CALIBRATION_METRICS)]
    keep = [k for k in (*METRICS, *calibration, "tn", "fp", "fn", "tp", "n", "threshold") if k in table.columns]
    for row in overall.itertuples(index=False):
        values = {
            k: (None if isinstance(getattr(row, k), float) and np.isnan(getattr(row, k)) else getattr(row, k)) for k in keep
        }
        out.setdefault(row.split, {}).setdefault(row.model, {}).setdefault(row.level, {})[row.operating_point] = values
    return out


def run_metrics(headline: dict[str, Any], model: str = "ensemble", default_point: str = "default") -> dict[str, float]:
    """One model's figures of :func:`headline_metrics` as flat MLflow metric names (pure).

    ``{split}_{level}_{metric}`` at the default operating point (``test_study_kappa``,
    ``valid_image_auc``, ...) and ``{split}_{level}_{metric}_{point}`` at the others, so the
    MLflow runs table and charts compare runs on the same numbers as ``reports/metrics.json``.
    Missing and undefined (None/NaN) values are left out.
    """
    out: dict[str, float] = {}
    for split, models in headline.items():
        for level, points in (models.get(model) or {}).items():
            for point, values in points.items():
                suffix = "" if point == default_point else f"_{point}"
                # Calibration does not depend on the operating point: logged once, with the default's figures.
                calibration = [*CALIBRATION_METRICS, *(f"{m}{UNCALIBRATED}" for m in CALIBRATION_METRICS)]
                for metric in (*METRICS, *(calibration if point == default_point else ())):
                    value = values.get(metric)
                    if isinstance(value, (int, float)) and not np.isnan(value):
                        out[f"{split}_{level}_{metric}{suffix}"] = float(value)
    return out


def curves(frame: pd.DataFrame, models: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROC and precision-recall curve points per model (long format for DVC plots)."""
    roc_rows, pr_rows = [], []
    y = frame["label"].to_numpy()
    if len(np.unique(y)) < 2:
        return pd.DataFrame(columns=["model", "fpr", "tpr"]), pd.DataFrame(columns=["model", "recall", "precision"])
    for model in models:
        prob = frame[prob_column(model)].to_numpy()
        fpr, tpr, _ = roc_curve(y, prob)
        precision, recall, _ = precision_recall_curve(y, prob)
        roc_rows += [{"model": model, "fpr": float(a), "tpr": float(b)} for a, b in zip(fpr, tpr, strict=True)]
        pr_rows += [{"model": model, "recall": float(a), "precision": float(b)} for a, b in zip(recall, precision, strict=True)]
    return pd.DataFrame(roc_rows), pd.DataFrame(pr_rows)


def training_curves(histories: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Every variant's training history in one long table (pure): a ``model`` column, then ``epoch`` and the metrics.

    One file whatever the variants, so ``dvc.yaml``'s Loss / Accuracy / AUC overlays (template
    ``by_model``: a line per model) need no edit when ``models:`` changes.
    """
    frames = [history.assign(model=variant) for variant, history in histories.items()]
    if not frames:
        return pd.DataFrame(columns=["model", "epoch"])
    table = pd.concat(frames, ignore_index=True)
    return table[["model", *(c for c in table.columns if c != "model")]]


def reliability_points(studies: pd.DataFrame, bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Reliability-diagram points of the ensemble, before and after calibration, overall and per body part (pure).

    Args:
        studies: study rows with ``label``, ``body_part``, ``p_ensemble`` (calibrated) and
            ``p_ensemble_uncalibrated`` (see :func:`calibrate_frame`).
        bins: equal-width bins.

    Returns:
        Long format: ``group, probability (calibrated | uncalibrated), mean_predicted, fraction_abnormal``.
    """
    rows = []
    groups = [("all", studies), *((str(b), f) for b, f in studies.groupby("body_part", sort=True))]
    for group, frame in groups:
        for kind, column in (("uncalibrated", RAW_ENSEMBLE), ("calibrated", prob_column(ENSEMBLE))):
            if column not in frame.columns or frame.empty:
                continue
            mean_prob, fraction = reliability_curve(frame["label"].to_numpy(), frame[column].to_numpy(), bins)
            rows += [
                {"group": group, "probability": kind, "mean_predicted": float(m), "fraction_abnormal": float(f)}
                for m, f in zip(mean_prob, fraction, strict=True)
            ]
    return pd.DataFrame(rows, columns=["group", "probability", "mean_predicted", "fraction_abnormal"])


@dataclass(frozen=True)
class EvaluatePaths:
    """What the ``evaluate`` stage reads and writes (defaults: the standard layout).

    Attributes:
        predictions: ``valid.csv`` and ``test.csv`` of the ``ensemble`` stage.
        thresholds: the operating points and the calibrator (``calibrate``).
        images: images.csv (the synthetic flag and the fingerprint).
        split: split.csv (the fingerprint).
        train_reports: the ``train`` stages' reports (``<variant>/history.csv``).
        reports: the output folder.
    """

    predictions: Path = Layout.PREDICTIONS
    thresholds: Path = Layout.THRESHOLDS
    images: Path = Layout.IMAGES
    split: Path = Layout.SPLIT
    train_reports: Path = Layout.TRAIN_REPORTS
    reports: Path = Path("reports")


def run_evaluation(
    variants: Sequence[str], params: EvaluateParams, seed: int, paths: EvaluatePaths, bins: int = CALIBRATION_BINS
) -> dict[str, Any]:
    """The ``evaluate`` stage: tables, DVC metrics and plots, figures and the Markdown report.

    Writes ``metrics.json``, ``per_body_part.csv``, ``plots/{roc,pr}.csv``, the reliability
    points (``plots/reliability_{calibrated,uncalibrated,per_body_part}.csv``), every variant's
    training curves in one file (``plots/training_curves.csv``), the figures and ``README.md``
    under ``reports``.

    Args:
        variants: the variant names (keys of ``models:``).
        params: the ``evaluate`` section.
        seed: the bootstrap seed.
        paths: what it reads and writes.
        bins: bins of the calibration metrics and reliability diagrams (``calibrate.bins``).

    Returns:
        The headline metrics written to ``metrics.json``.
    """

    reports = paths.reports
    # external: empty without FracAtlas / GRAZPEDWRI-DX (and absent in predictions made before it existed)
    frames = [pd.read_csv(f) for s in PREDICTION_SPLITS if (f := paths.predictions / f"{s}.csv").is_file()]
    predictions = pd.concat([f for f in frames if len(f)], ignore_index=True)
    chosen = OperatingPoints.load(paths.thresholds)
    thresholds, calibrator = chosen.thresholds, chosen.calibrator
    models = [*variants, ENSEMBLE]
    table = evaluation_table(predictions, models, thresholds, params.bootstrap_resamples, seed, params.ci_level, calibrator, bins)
    metrics = headline_metrics(table)
    write_json(reports / "metrics.json", metrics)
    write_csv(reports / "per_body_part.csv", table.round(6))
    test_studies = calibrate_frame(
        aggregate_studies(predictions[predictions["split"] == "test"], [prob_column(m) for m in models]), calibrator
    )
    roc, pr = curves(test_studies, models)
    write_csv(reports / "plots" / "roc.csv", roc.round(6))
    write_csv(reports / "plots" / "pr.csv", pr.round(6))
    histories = {v: pd.read_csv(paths.train_reports / v / "history.csv") for v in variants}
    write_csv(reports / "plots" / "training_curves.csv", training_curves(histories))
    reliability = reliability_points(test_studies, bins)
    write_csv(reports / "plots" / "reliability_per_body_part.csv", reliability.round(6))
    overall = reliability[reliability["group"] == "all"]
    for kind in ("calibrated", "uncalibrated"):  # DVC plots: one file per curve, the same x and y
        points = overall[overall["probability"] == kind][["mean_predicted", "fraction_abnormal"]]
        write_csv(reports / "plots" / f"reliability_{kind}.csv", points.round(6))
    source = dataset_provenance(paths.images, paths.split)
    provenance = {
        "synthetic": source.synthetic,
        "ci_level": params.ci_level,
        "fingerprint": source.fingerprint,
        "git_commit": source.git_commit,
    }
    plot_figures(roc, pr, table, reports / "plots", source.synthetic)
    plot_reliability(reliability, reports / "plots", source.synthetic)
    (reports / "README.md").write_text(
        render_report(table, models, thresholds, provenance, calibrator, chosen.calibration or None)
    )
    return metrics
