"""Stage ``evaluate``: metrics for every variant and the ensemble, overall, per dataset and body part.

Inputs: ``reports/predictions/{valid,test}.csv``, ``reports/thresholds.json``, images.csv, split.csv.
Outputs: ``reports/metrics.json`` (DVC metrics), ``reports/per_body_part.csv``,
``reports/plots/{roc,pr}.csv`` (DVC plots) and ``{roc,pr,confusion}.png``, ``reports/README.md``.
Params: ``seed``, ``evaluate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mura.config import load_params
from mura.evaluate import run_evaluation
from mura.stage import run_main, set_seed


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
    run_evaluation(params, Path(args.predictions), Path(args.thresholds), Path(args.images), Path(args.split),
                   Path(args.reports))  # fmt: skip


if __name__ == "__main__":
    run_main(main)
