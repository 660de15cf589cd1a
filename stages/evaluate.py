"""Stage ``evaluate``: metrics for every variant and the ensemble, overall, per dataset and body part.

Inputs: ``reports/predictions/{valid,test}.csv``, ``reports/thresholds.json``, images.csv, split.csv.
Outputs: ``reports/metrics.json`` (DVC metrics), ``reports/per_body_part.csv``,
``reports/plots/{roc,pr}.csv`` (DVC plots) and ``{roc,pr,confusion}.png``, ``reports/README.md``.
Params: ``seed``, ``evaluate``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from mura.config import load_params
from mura.ensemble import aggregate_studies
from mura.evaluate import curves, evaluation_table, headline_metrics, prob_column
from mura.report import plot_figures, render_report
from mura.stage import run_main, set_seed, write_csv, write_json
from mura.tracking import dataset_fingerprint, git_commit


def main() -> None:
    """Parse paths, evaluate, write the declared outputs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--predictions", default="reports/predictions")
    parser.add_argument("--thresholds", default="reports/thresholds.json")
    parser.add_argument("--images", default="data/interim/images.csv")
    parser.add_argument("--split", default="data/processed/split.csv")
    parser.add_argument("--reports", default="reports")
    args = parser.parse_args()
    params = load_params(args.params)
    set_seed(params.seed)
    predictions = pd.concat([pd.read_csv(Path(args.predictions) / f"{s}.csv") for s in ("valid", "test")], ignore_index=True)
    thresholds = json.loads(Path(args.thresholds).read_text())["thresholds"]
    models = [*params.models, "ensemble"]
    table = evaluation_table(predictions, models, thresholds, params.evaluate.bootstrap_resamples, params.seed,
                             params.evaluate.ci_level)
    reports = Path(args.reports)
    metrics = headline_metrics(table)
    write_json(reports / "metrics.json", metrics)
    write_csv(reports / "per_body_part.csv", table.round(6))
    test_studies = aggregate_studies(predictions[predictions["split"] == "test"], [prob_column(m) for m in models])
    roc, pr = curves(test_studies, models)
    write_csv(reports / "plots" / "roc.csv", roc.round(6))
    write_csv(reports / "plots" / "pr.csv", pr.round(6))
    synthetic = bool(pd.read_csv(args.images, usecols=["synthetic"])["synthetic"].any())
    provenance = {"synthetic": synthetic, "ci_level": params.evaluate.ci_level, "fingerprint": dataset_fingerprint(args.images, args.split), "git_commit": git_commit()}
    plot_figures(roc, pr, table, reports / "plots", synthetic)
    (reports / "README.md").write_text(render_report(table, models, thresholds, provenance))


if __name__ == "__main__":
    run_main(main)
