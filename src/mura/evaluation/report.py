"""Human-readable evaluation report (reports/README.md) and figures, laid out like the seed's tables."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mura.evaluation.metrics import CALIBRATION_METRICS
from mura.modeling.averaging import ENSEMBLE
from mura.modeling.calibration import Calibrator

UNCALIBRATED = "_uncalibrated"


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.2f}" if pct else f"{value:.2f}"


def _ci(row: pd.Series, name: str) -> str:
    low, high = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return _fmt(row[name])
    return f"{row[name]:.2f} [{low:.2f}, {high:.2f}]"


def _models_section(table: pd.DataFrame, models: list[str]) -> list[str]:
    """Every model on the test split at threshold 0.5, image and study level (the seed's Figure 12)."""
    lines: list[str] = []
    test = table[(table["split"] == "test") & (table["group"] == "all") & (table["operating_point"] == "default")]
    for level in ("image", "study"):
        rows = test[test["level"] == level].set_index("model")
        lines += [
            f"## All models, test split, {level} level, threshold 0.5 (seed Figure 12)",
            "",
            "| Model | TN | TP | FN | FP | Accuracy (%) | Precision | Recall | F1 | AUC | Kappa |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for model in models:
            if model not in rows.index:
                continue
            r = rows.loc[model]
            lines.append(
                f"| {model} | {r.tn} | {r.tp} | {r.fn} | {r.fp} | {_fmt(r.accuracy, True)} | {_ci(r, 'precision')} | "
                f"{_ci(r, 'recall')} | {_ci(r, 'f1')} | {_ci(r, 'roc_auc')} | {_ci(r, 'kappa')} |"
            )
        lines.append("")
    return lines


def _ensemble_section(ens: pd.DataFrame) -> list[str]:
    """The ensemble on the test split at both operating points (the seed's Table 5)."""
    lines = [
        "## Ensemble, test split, both operating points (seed Table 5)",
        "",
        "| Level | Operating point | Threshold | TN | TP | FN | FP | Accuracy (%) | Precision | Recall | F1 | Kappa |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ens.itertuples(index=False):
        lines.append(
            f"| {r.level} | {r.operating_point} | {r.threshold:.3f} | {r.tn} | {r.tp} | {r.fn} | {r.fp} | "
            f"{_fmt(r.accuracy, True)} | {_fmt(r.precision)} | {_fmt(r.recall)} | {_fmt(r.f1)} | {_fmt(r.kappa)} |"
        )
    lines.append("")
    return lines


def _body_part_section(table: pd.DataFrame) -> list[str]:
    """The ensemble per body part on the test split, study level, default point (the seed's Figure 13)."""
    parts = table[
        (table["split"] == "test")
        & (table["model"] == ENSEMBLE)
        & (table["level"] == "study")
        & (table["operating_point"] == "default")
        & ~table["group"].str.startswith("dataset:")
    ]
    lines = [
        "## Ensemble per body part, test split, study level (seed Figure 13)",
        "",
        "| Body part | Studies | Accuracy (%) | Precision | Recall | F1 | AUC | Kappa |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in parts.sort_values("group", key=lambda s: s.eq("all")).itertuples(index=False):
        name = "All (combined)" if r.group == "all" else r.group
        lines.append(
            f"| {name} | {r.n} | {_fmt(r.accuracy, True)} | {_fmt(r.precision)} | {_fmt(r.recall)} | "
            f"{_fmt(r.f1)} | {_fmt(r.roc_auc)} | {_fmt(r.kappa)} |"
        )
    return lines


def render_report(
    table: pd.DataFrame,
    models: list[str],
    thresholds: dict[str, float],
    provenance: dict[str, Any],
    calibrator: Calibrator | None = None,
    calibration: dict[str, Any] | None = None,
) -> str:
    """Markdown report: per-model table (seed Tables 1–4), ensemble table (Table 5), per body part (Figure 13).

    Args:
        table: output of :func:`mura.evaluation.evaluate.evaluation_table`.
        models: variants then ``ensemble``.
        thresholds: operating points.
        provenance: ``synthetic`` (bool), ``fingerprint``, ``git_commit``, ``ci_level``.
        calibrator: the ensemble's calibration map (its section says which, and what it did).
        calibration: ``thresholds.json``'s calibration record (the method tried and its out-of-fold check).
    """
    synthetic = bool(provenance.get("synthetic"))
    lines = ["# Evaluation report", ""]
    if synthetic:
        lines += [
            "> **SYNTHETIC DATA.** These figures come from procedurally generated phantoms, not patient",
            "> radiographs. They say nothing about clinical performance.",
            "",
        ]
    lines += [
        f"Data: {'synthetic phantoms' if synthetic else 'real datasets'}; "
        f"fingerprint `{provenance.get('fingerprint', '?')[:16]}`; "
        f"code `{provenance.get('git_commit', '?')[:12]}`.",
        "Operating points (chosen on valid, study level, on the ensemble's calibrated probability): "
        + ", ".join(f"{k} = {v:.3f}" for k, v in thresholds.items())
        + ".",
        f"Study probability = mean of its views' probabilities (MURA protocol). {provenance.get('ci_level', 0.95):.0%} CIs: "
        "bootstrap over patients.",
        "",
    ]
    lines += _models_section(table, models)
    ens = table[(table["split"] == "test") & (table["model"] == ENSEMBLE) & (table["group"] == "all")]
    lines += _ensemble_section(ens)
    lines += _operating_points_section(ens)
    lines += _calibration_section(table, calibrator or Calibrator(), calibration or {})
    lines += _body_part_section(table)
    lines += _external_section(table)
    lines += [
        "",
        "Figures: `reports/plots/roc.png`, `reports/plots/pr.png`, `reports/plots/confusion.png`,",
        "`reports/plots/reliability.png`, `reports/plots/reliability_per_body_part.png`;",
        "full table with confidence intervals: `reports/per_body_part.csv`.",
        "",
    ]
    return "\n".join(lines)


def _external_section(table: pd.DataFrame) -> list[str]:
    """The ensemble on the external test sets (FracAtlas, GRAZPEDWRI-DX), study level, apart from MURA's test."""
    ext = table[
        (table["split"] == "external")
        & (table["model"] == ENSEMBLE)
        & (table["level"] == "study")
        & (table["operating_point"] == "default")
        & (table["group"] != "all")
    ]
    if ext.empty:
        return []
    lines = [
        "## External test sets (fracture labels; never trained on or used to choose a threshold)",
        "",
        "The ensemble's abnormality score against each set's fracture label, at the default operating point, "
        "study level. A narrower question than MURA's \"abnormal\", on other hospitals' images.",
        "",
        "| Group | Studies | AUC | Sensitivity | Specificity | Kappa |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in ext.iterrows():
        cells = " | ".join(_ci(r, m) for m in ("roc_auc", "recall", "specificity", "kappa"))
        lines.append(f"| {str(r.group).removeprefix('dataset:')} | {int(r.n)} | {cells} |")
    return [*lines, ""]


def _operating_points_section(ens: pd.DataFrame) -> list[str]:
    lines = [
        "## Ensemble sensitivity and specificity at each operating point, test split",
        "",
        "| Level | Operating point | Threshold | Sensitivity | Specificity |",
        "|---|---|---|---|---|",
    ]
    for _, r in ens.iterrows():
        lines.append(f"| {r.level} | {r.operating_point} | {r.threshold:.3f} | {_ci(r, 'recall')} | {_ci(r, 'specificity')} |")
    return [*lines, ""]


def _calibration_section(table: pd.DataFrame, calibrator: Calibrator, record: dict[str, Any]) -> list[str]:
    """Before/after calibration per level and body part, and a plain statement of where it got worse."""
    how = {
        "temperature": f"temperature scaling, T = {calibrator.temperature:.3f}",
        "isotonic": f"isotonic regression ({len(calibrator.knots_x)} knots)",
        "none": "none (the raw ensemble probability is served)",
    }[calibrator.method]
    check = record.get("out_of_fold_check") or {}
    if "ece" in check:
        how += (
            f". Out-of-fold check of `{record.get('requested', calibrator.method)}` on valid ({check['folds']} folds): "
            f"ECE {check['ece']['raw']:.3f} → {check['ece']['calibrated']:.3f}, "
            f"Brier {check['brier']['raw']:.3f} → {check['brier']['calibrated']:.3f}: "
            + ("kept" if check["keep"] else "**not kept** (it would not improve both), so the raw probability is served")
        )
    elif check.get("reason"):
        how += f" ({check['reason']})"
    rows = table[
        (table["split"] == "test")
        & (table["model"] == ENSEMBLE)
        & (table["operating_point"] == "default")
        & ~table["group"].str.startswith("dataset:")
    ]
    lines = [
        "## Calibration of the ensemble's probability, test split",
        "",
        f"Calibrator: {how}; fitted on the valid split's studies (never on test). ECE: 15 equal-width bins;",
        "adaptive ECE: 15 equal-mass bins; MCE: the largest bin gap. Lower is better for all five. ECE and MCE are",
        "biased upward on small samples, so a bootstrap interval can lie above its point estimate.",
        "",
        "| Level | Group | ECE before → after | Adaptive ECE before → after | MCE before → after "
        "| Brier before → after | Log loss before → after |",
        "|---|---|---|---|---|---|---|",
    ]
    worse = []
    for _, r in rows.sort_values(["level", "group"], key=lambda c: c.eq("all") if c.name == "group" else c).iterrows():
        cells = [
            f"{_ci(r, m + UNCALIBRATED)} → {_ci(r, m)}" if f"{m}{UNCALIBRATED}" in r else _ci(r, m) for m in CALIBRATION_METRICS
        ]
        lines.append(f"| {r.level} | {'All' if r.group == 'all' else r.group} | " + " | ".join(cells) + " |")
        for m in ("ece", "brier"):
            before, after = r.get(m + UNCALIBRATED), r.get(m)
            if before is not None and after is not None and not pd.isna(before) and after > before + 1e-12:
                worse.append(f"{m} at {r.level} level, {r.group}: {before:.3f} → {after:.3f}")
    lines.append("")
    if worse:
        lines += ["Calibration made these **worse** on test (reported, not hidden): " + "; ".join(worse) + ".", ""]
    else:
        lines += ["Calibration did not make ECE or Brier worse on any row above.", ""]
    return lines


def plot_reliability(points: pd.DataFrame, out_dir: Path, synthetic: bool) -> None:
    """Reliability diagrams of the ensemble, before and after calibration: overall, and one panel per body part."""
    import matplotlib  # lazy: heavy: only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: heavy: only when plotting

    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = " — SYNTHETIC DATA" if synthetic else ""
    groups = [g for g in points["group"].unique() if g != "all"]
    for name, shown in (("reliability", ["all"]), ("reliability_per_body_part", groups or ["all"])):
        cols = min(len(shown), 4)
        rows = math.ceil(len(shown) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.1 * rows), squeeze=False)
        for ax in axes.ravel()[len(shown) :]:
            ax.axis("off")
        for ax, group in zip(axes.ravel(), shown, strict=False):
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
            for kind, style in (("uncalibrated", "--"), ("calibrated", "-")):
                curve = points[(points["group"] == group) & (points["probability"] == kind)]
                ax.plot(curve["mean_predicted"], curve["fraction_abnormal"], style, marker="o", markersize=3, label=kind)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_title("all test studies" if group == "all" else group, fontsize=8)
            ax.set_xlabel("mean predicted probability", fontsize=7)
            ax.set_ylabel("fraction abnormal", fontsize=7)
            ax.legend(fontsize=6)
        fig.suptitle(f"Reliability of the ensemble's study probability{suffix}", fontsize=9)
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=90)
        plt.close(fig)


def plot_figures(roc: pd.DataFrame, pr: pd.DataFrame, table: pd.DataFrame, out_dir: Path, synthetic: bool) -> None:
    """ROC, precision-recall and confusion-matrix PNGs for the test split (study level)."""
    import matplotlib  # lazy: heavy: only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: heavy: only when plotting

    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = " — SYNTHETIC DATA" if synthetic else ""
    for frame, x, y, name, title in ((roc, "fpr", "tpr", "roc", "ROC"), (pr, "recall", "precision", "pr", "Precision-recall")):
        fig, ax = plt.subplots(figsize=(5, 4.5))
        for model, points in frame.groupby("model", sort=False):
            ax.plot(points[x], points[y], label=model, linewidth=2.5 if model == ENSEMBLE else 1)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{title}, test studies{suffix}", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=90)
        plt.close(fig)
    rows = table[
        (table["split"] == "test")
        & (table["level"] == "study")
        & (table["group"] == "all")
        & (table["operating_point"] == "default")
    ]
    fig, axes = plt.subplots(1, max(len(rows), 1), figsize=(2.6 * max(len(rows), 1), 2.8))
    for ax, r in zip(np.atleast_1d(axes), rows.itertuples(index=False), strict=False):
        matrix = np.array([[r.tn, r.fp], [r.fn, r.tp]])
        ax.imshow(matrix, cmap="Blues")
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center")
        ax.set_xticks([0, 1], ["normal", "abnormal"], fontsize=7)
        ax.set_yticks([0, 1], ["normal", "abnormal"], fontsize=7)
        ax.set_title(r.model, fontsize=8)
    fig.suptitle(f"Confusion matrices (rows: truth, columns: prediction), test studies{suffix}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "confusion.png", dpi=90)
    plt.close(fig)
