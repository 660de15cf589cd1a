"""Human-readable evaluation report (reports/README.md) and figures, laid out like the seed's tables."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from mura.evaluation.ensemble import ENSEMBLE


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.2f}" if pct else f"{value:.2f}"


def _ci(row: pd.Series, name: str) -> str:
    low, high = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return _fmt(row[name])
    return f"{row[name]:.2f} [{low:.2f}, {high:.2f}]"


def render_report(table: pd.DataFrame, models: list[str], thresholds: dict[str, float], provenance: dict[str, Any]) -> str:
    """Markdown report: per-model table (seed Tables 1–4), ensemble table (Table 5), per body part (Figure 13).

    Args:
        table: output of :func:`mura.evaluation.evaluate.evaluation_table`.
        models: variants then ``ensemble``.
        thresholds: operating points.
        provenance: ``synthetic`` (bool), ``fingerprint``, ``git_commit``, ``ci_level``.
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
        "Operating points (chosen on valid, study level): " + ", ".join(f"{k} = {v:.3f}" for k, v in thresholds.items()) + ".",
        f"Study probability = mean of its views' probabilities (MURA protocol). {provenance.get('ci_level', 0.95):.0%} CIs: "
        "bootstrap over patients.",
        "",
    ]
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
    ens = table[(table["split"] == "test") & (table["model"] == ENSEMBLE) & (table["group"] == "all")]
    lines += [
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
    parts = table[
        (table["split"] == "test")
        & (table["model"] == ENSEMBLE)
        & (table["level"] == "study")
        & (table["operating_point"] == "default")
        & ~table["group"].str.startswith("dataset:")
    ]
    lines += [
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
    lines += [
        "",
        "Figures: `reports/plots/roc.png`, `reports/plots/pr.png`, `reports/plots/confusion.png`;",
        "full table with confidence intervals: `reports/per_body_part.csv`.",
        "",
    ]
    return "\n".join(lines)


def plot_figures(roc: pd.DataFrame, pr: pd.DataFrame, table: pd.DataFrame, out_dir: Path, synthetic: bool) -> None:
    """ROC, precision-recall and confusion-matrix PNGs for the test split (study level)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
