"""Drift reports: the audit trail of what the model answered, against the data it was validated on.

``register`` stores a *reference profile* with every model version (the validation split's
calibrated study probabilities and body parts, and per view the statistics the audit trail
records: pixel mean and standard deviation at model size, original height and width).
``mura monitor`` reads the audit trail since a date, builds the same profile of production,
and compares them per feature, overall and per body part:

- continuous features (study probability, pixel mean/std, height, width): the population
  stability index over the reference's deciles, and scipy's two-sample Kolmogorov-Smirnov test;
- the body-part mix: scipy's chi-square goodness-of-fit against the reference proportions,
  and its PSI.

A feature is flagged when its PSI exceeds ``psi_limit`` (0.2: the usual "significant shift")
or its test's p-value falls below ``p_limit`` (0.01). The report is HTML with the histograms,
a CSV of the table, and an MLflow run tagged with the model version. PSI is the one formula
written here (scipy and scikit-learn have none): Σ (c − r) · ln(c / r) over the bins' shares.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge
from scipy import stats

from mura.errors import DataError, MuraError
from mura.operations.live_performance import live_performance
from mura.operations.profile import REFERENCE_ARTIFACT, current_profile
from mura.runtime.predictor import registered_name, registered_version
from mura.tracking import server_errors, use_tracking_uri
from mura.tracking import tracking_uri as default_uri

__all__ = [
    "CONTINUOUS",
    "DriftLimits",
    "DriftMetrics",
    "drift_table",
    "psi",
    "read_audit",
    "monitor_every",
    "render_report",
    "run_monitor",
]

MONITORING_EXPERIMENT = "mura-monitoring"
CONTINUOUS = {  # feature -> the profile part holding it
    "study_probability": "study",
    "pixel_mean": "views",
    "pixel_std": "views",
    "height": "views",
    "width": "views",
}
MIN_SAMPLES = 5  # a group with fewer production samples is reported, not tested
EPS = 1e-4


@dataclass(frozen=True)
class DriftLimits:
    """When a feature is flagged: PSI above ``psi`` or the test's p-value below ``p_value``."""

    psi: float = 0.2
    p_value: float = 0.01


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` over the reference's quantile bins."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # a constant reference: one bin either side of it
        edges = np.array([ref[0] - 0.5, ref[0] + 0.5]) if len(ref) else np.array([0.0, 1.0])
    edges[0], edges[-1] = -np.inf, np.inf
    r = np.histogram(ref, edges)[0] / max(len(ref), 1)
    c = np.histogram(cur, edges)[0] / max(len(cur), 1)
    r, c = np.clip(r, EPS, None), np.clip(c, EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _category_psi(reference: Sequence[str], current: Sequence[str]) -> tuple[float, float, float]:
    """PSI, chi-square statistic and p-value of a categorical mix (scipy's goodness-of-fit test)."""
    categories = sorted(set(reference) | set(current))
    ref = pd.Series(list(reference)).value_counts().reindex(categories, fill_value=0).to_numpy(np.float64)
    cur = pd.Series(list(current)).value_counts().reindex(categories, fill_value=0).to_numpy(np.float64)
    r, c = np.clip(ref / ref.sum(), EPS, None), np.clip(cur / cur.sum(), EPS, None)
    index = float(np.sum((c - r) * np.log(c / r)))
    expected = r / r.sum() * cur.sum()
    statistic, p_value = stats.chisquare(cur, expected)
    return index, float(statistic), float(p_value)


def read_audit(folder: Path, since: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Audit records (``audit.jsonl`` and its rotated files) at or after ``since``, oldest first."""
    records = []
    for path in sorted(Path(folder).glob("audit.jsonl*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0):
        text = path.read_text()
        for line in text[: text.rfind("\n") + 1].splitlines():  # a line still being written (no newline yet) waits
            if not line.strip():
                continue
            record = json.loads(line)
            if since is None or dt.datetime.fromisoformat(record["time"]) >= since:
                records.append(record)
    return sorted(records, key=lambda r: r["time"])


def drift_table(reference: dict[str, Any], current: dict[str, Any], limits: DriftLimits = DriftLimits()) -> pd.DataFrame:
    """One row per feature × group (``all`` and each body part): sizes, PSI, test, p-value, flag (pure)."""
    rows: list[dict[str, Any]] = []
    mix = _category_psi(reference["study"]["body_part"], current["study"]["body_part"])
    n_cur = len(current["study"]["body_part"])
    rows.append(
        {
            "feature": "body_part_mix",
            "group": "all",
            "n_reference": len(reference["study"]["body_part"]),
            "n_current": n_cur,
            "psi": mix[0],
            "test": "chi-square",
            "statistic": mix[1],
            "p_value": mix[2],
        }
    )
    for feature, level in CONTINUOUS.items():
        key = "probability" if feature == "study_probability" else feature
        ref = pd.DataFrame({"value": reference[level][key], "body_part": reference[level]["body_part"]})
        cur = pd.DataFrame({"value": current[level][key], "body_part": current[level]["body_part"]})
        groups = ["all", *sorted(set(cur["body_part"]) & set(ref["body_part"]))]
        for group in groups:
            r = ref["value"] if group == "all" else ref.loc[ref["body_part"] == group, "value"]
            c = cur["value"] if group == "all" else cur.loc[cur["body_part"] == group, "value"]
            r, c = r.dropna().to_numpy(np.float64), c.dropna().to_numpy(np.float64)
            row: dict[str, Any] = {"feature": feature, "group": group, "n_reference": len(r), "n_current": len(c), "test": "ks"}
            if len(c) >= MIN_SAMPLES and len(r) >= MIN_SAMPLES:
                test = stats.ks_2samp(r, c)
                row |= {"psi": psi(r, c), "statistic": float(test.statistic), "p_value": float(test.pvalue)}
            else:
                row |= {"psi": np.nan, "statistic": np.nan, "p_value": np.nan}
            rows.append(row)
    table = pd.DataFrame(rows)
    table["flagged"] = (table["psi"] > limits.psi) | (table["p_value"] < limits.p_value)
    return table


def _histogram_png(reference: np.ndarray, current: np.ndarray, title: str) -> str:
    import matplotlib  # lazy: heavy: only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: heavy: only when plotting

    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    both = np.concatenate([reference, current])
    edges = np.histogram_bin_edges(both, bins=20).tolist() if len(both) else 10
    ax.hist(reference, bins=edges, density=True, alpha=0.5, label=f"validation (n={len(reference)})")
    ax.hist(current, bins=edges, density=True, alpha=0.5, label=f"production (n={len(current)})")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _live_section(live: pd.DataFrame | None) -> str:
    """The report's "against radiologists" section (empty without a feedback store)."""
    if live is None:
        return ""
    if live.empty:
        return "<h2>Against radiologists</h2><p>No study of this model version was reviewed in the window.</p>"
    rendered: str = live.round(3).to_html(index=False, classes="live", na_rep="–")
    return (
        "<h2>Against radiologists</h2><p>The model's label against the reviewing radiologist's, per body part, with "
        "95 % Wilson intervals. Reviewers choose what they review: a signal to look at, not a clinical study.</p>" + rendered
    )


def render_report(
    table: pd.DataFrame,
    reference: dict[str, Any],
    current: dict[str, Any],
    meta: dict[str, Any],
    live: pd.DataFrame | None = None,
) -> str:
    """A self-contained HTML page: what moved, the table, reference-vs-production histograms, and live performance."""
    flagged = table[table["flagged"]]
    head = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in meta.items())
    moved = (
        "<p><strong>Moved past the limits:</strong> "
        + ", ".join(html.escape(f"{r.feature} ({r.group})") for r in flagged.itertuples())
        + "</p>"
        if len(flagged)
        else "<p>Nothing moved past the limits.</p>"
    )
    figures = []
    for feature, level in CONTINUOUS.items():
        key = "probability" if feature == "study_probability" else feature
        ref = np.asarray(reference[level][key], dtype=np.float64)
        cur = np.asarray(current[level][key], dtype=np.float64)
        if not (np.isfinite(ref).any() or np.isfinite(cur).any()):  # e.g. no original sizes in the reference
            continue
        figures.append(f'<img alt="{feature}" src="data:image/png;base64,{_histogram_png(ref, cur, feature)}">')
    page: str = (
        "<!doctype html><html><head><meta charset='utf-8'><title>mura drift report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px}.flag{background:#fdd}</style></head><body><h1>Drift report</h1>"
        f"<ul>{head}</ul>{moved}"
        + table.round(4).to_html(index=False, classes="drift", na_rep="–").replace("<td>True</td>", "<td class='flag'>True</td>")
        + _live_section(live)
        + "<h2>Validation vs production</h2>"
        + "".join(figures)
        + "<p>A pre-screening aid's inputs and outputs, compared with the data it was validated on; "
        "a flag is a reason to look, not a verdict.</p></body></html>"
    )
    return page


def run_monitor(
    audit_dir: Path | Sequence[Path],
    model_uri: str,
    out_dir: Path,
    since: dt.datetime | None = None,
    limits: DriftLimits = DriftLimits(),
    tracking_uri: str | None = None,
    feedback: Any | None = None,
) -> pd.DataFrame:
    """``mura monitor``: compare the audit trail with the model's validation profile; write and log the report.

    Args:
        audit_dir: the audit trail's folder, or several (one per server: web UI, model server, DICOM node).
        model_uri: ``models:/name@alias`` or ``models:/name/N`` (its reference profile is read from the registry).
        out_dir: where ``drift_report.html`` and ``drift.csv`` are written.
        since: only records at or after this time (timezone-aware; all when None).
        limits: when a feature is flagged.
        tracking_uri: the MLflow tracking store (default ``$MLFLOW_TRACKING_URI`` or ./mlflow.db).
        feedback: a :class:`mura.operations.feedback.FeedbackStore`: the report then also has the model's
            agreement, sensitivity and specificity against radiologists' reviews since ``since``
            (``live_performance.csv``, ``live_*`` metrics).

    Returns:
        The drift table.

    Raises:
        DataError: no reference profile in this model version, or no audit record of it.
    """
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store

    store = use_tracking_uri(tracking_uri or default_uri())
    name = registered_name(model_uri)
    with server_errors(f"reading {model_uri}", store):
        version = registered_version(model_uri)
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}/artifacts/{REFERENCE_ARTIFACT}.json"
            )
        except Exception:  # MLflow raises several kinds for a missing artifact
            path = None
    reference = json.loads(Path(path).read_text()) if path else {}
    if not reference:
        raise DataError(
            f"{name} version {version} has no reference profile (registered before drift reports existed): re-register it"
        )
    folders = [Path(audit_dir)] if isinstance(audit_dir, (str, Path)) else [Path(f) for f in audit_dir]
    records = sorted(
        (r for f in folders for r in read_audit(f, since) if str(r.get("model", {}).get("version")) == version),
        key=lambda r: r["time"],
    )
    if not records:
        where = ", ".join(map(str, folders)) + (f" since {since.isoformat()}" if since else "")
        raise DataError(f"no audit record of {name} version {version} in {where}")
    current = current_profile(records)
    table = drift_table(reference, current, limits)
    meta = {
        "model": f"{name} version {version}",
        "audit records": f"{len(records)} studies, {records[0]['time']} → {records[-1]['time']}",
        "reference": f"{reference['source']}: {len(reference['study']['probability'])} studies",
        "limits": f"PSI > {limits.psi}, p < {limits.p_value}",
        "flagged": int(table["flagged"].sum()),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "drift.csv", index=False)
    live = _live_table(feedback, version, since)
    if live is not None:
        live.to_csv(out_dir / "live_performance.csv", index=False)
    (out_dir / "drift_report.html").write_text(render_report(table, reference, current, meta, live))
    _log_report(store, name, version, table, out_dir, live, meta)
    return table


def _log_report(
    store: str, name: str, version: str, table: pd.DataFrame, out_dir: Path, live: pd.DataFrame | None, meta: dict[str, Any]
) -> None:
    """The report as an MLflow run of the monitoring experiment, noted on the model version."""
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store

    with server_errors("logging the drift report", store):
        # Not mlflow.set_experiment: it exports MLFLOW_EXPERIMENT_ID to the whole process (and its children).
        client = mlflow.MlflowClient()
        found = client.get_experiment_by_name(MONITORING_EXPERIMENT)
        experiment = found.experiment_id if found else _create_experiment(client, MONITORING_EXPERIMENT)
        tags = {"mura.stage": "monitor", "mura.model_name": name, "mura.model_version": version}
        with mlflow.start_run(experiment_id=experiment, run_name=f"drift {name} v{version}", tags=tags) as run:
            overall = table[(table["group"] == "all") & table["psi"].notna()]
            mlflow.log_metrics(
                {f"psi_{feature}": float(value) for feature, value in zip(overall["feature"], overall["psi"], strict=True)}
                | {"flagged": float(table["flagged"].sum())}
                | _live_metrics(live)
            )
            mlflow.log_artifacts(str(out_dir), artifact_path="drift")
        client.set_model_version_tag(name, version, "last_drift_report", f"{run.info.run_id}: {meta['flagged']} flagged")


def _live_table(feedback: Any | None, version: str, since: dt.datetime | None) -> pd.DataFrame | None:
    """Live performance of this model version from the feedback store (None without a store)."""
    if feedback is None:
        return None
    reviewed = feedback.reviewed(since=since)
    return live_performance(reviewed[reviewed["model_version"].astype(str) == version])


def _live_metrics(live: pd.DataFrame | None) -> dict[str, float]:
    """``live_reviewed``, ``live_agreement``, ``live_sensitivity``, ``live_specificity`` over all body parts."""
    if live is None or live.empty:
        return {}
    row = live[live["body_part"] == "all"].iloc[0]
    values = {f"live_{k}": float(row[k]) for k in ("agreement", "sensitivity", "specificity")}
    return {"live_reviewed": float(row["n"])} | {k: v for k, v in values.items() if np.isfinite(v)}


def _create_experiment(client: Any, name: str) -> str:
    """Create ``name``, or read its id when another monitor created it a moment before."""
    from mlflow.exceptions import MlflowException  # lazy: heavy (~1 s): only when talking to the tracking store

    try:
        return str(client.create_experiment(name))
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


class DriftMetrics:
    """The last drift report's figures as Prometheus gauges (for alerting on drift like on latency).

    Labels are bounded: the feature names of :data:`CONTINUOUS` plus ``body_part_mix``, and the
    group (``all`` or one of the seven body parts).
    """

    def __init__(self) -> None:

        self.registry = CollectorRegistry()
        labels = ["feature", "group"]
        self.psi = Gauge("mura_drift_psi", "Population stability index of a feature", labels, registry=self.registry)
        self.flagged = Gauge(
            "mura_drift_flagged", "1 when the feature moved past the limits", ["feature", "group"], registry=self.registry
        )
        self.studies = Gauge("mura_drift_studies", "Audit records in the last report's window", registry=self.registry)
        self.last = Gauge("mura_drift_last_report_timestamp_seconds", "When the last report was written", registry=self.registry)
        self.runs = Counter("mura_drift_reports", "Scheduled reports, by outcome", ["outcome"], registry=self.registry)

    def update(self, table: pd.DataFrame) -> None:
        """Replace the gauges with one report's table."""
        self.psi.clear()
        self.flagged.clear()
        for row in table.itertuples():
            if pd.notna(row.psi):
                self.psi.labels(row.feature, row.group).set(float(row.psi))
            self.flagged.labels(row.feature, row.group).set(float(bool(row.flagged)))
        studies = table[(table["group"] == "all") & (table["feature"] == "study_probability")]
        self.studies.set(float(studies["n_current"].iloc[0]) if len(studies) else 0.0)
        self.last.set_to_current_time()


def monitor_every(
    report: Callable[[dt.datetime], pd.DataFrame],
    every_s: float,
    window_s: float,
    metrics: DriftMetrics | None = None,
    stop: Any = None,
) -> None:
    """``mura monitor --every``: a report every ``every_s`` seconds on the last ``window_s`` of answers, until ``stop``.

    A window without audit records of the model is logged and skipped (a quiet weekend is not an
    error); any other failure is logged and retried at the next tick, so the schedule survives a
    tracking server that is briefly down.

    Args:
        report: writes one report on the answers since the given time and returns its table
            (:func:`run_monitor` with everything but ``since`` bound).
        metrics: the gauges updated with each report's table.
        stop: a ``threading.Event`` ending the loop (None: run until the process is stopped).
    """

    logger = logging.getLogger(__name__)
    stop = stop or threading.Event()
    while not stop.is_set():
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=window_s)
        try:
            table = report(since)
        except MuraError as exc:
            logger.warning("drift report skipped: %s", exc)
            outcome = "skipped"
        except Exception:  # keep the schedule: the next tick may find the server back
            logger.exception("drift report failed")
            outcome = "failed"
        else:
            outcome = "written"
            flagged = table[table["flagged"]]
            logger.info("drift report: %d of %d features flagged", len(flagged), len(table))
            if metrics is not None:
                metrics.update(table)
        if metrics is not None:
            metrics.runs.labels(outcome).inc()
        stop.wait(every_s)
