"""Stage ``evaluate``: metrics for every variant and the ensemble, overall, per dataset and body part.

Inputs: ``reports/predictions/{valid,test}.csv``, ``reports/thresholds.json``, images.csv, split.csv.
Outputs: ``reports/metrics.json`` (DVC metrics), ``reports/per_body_part.csv``,
``reports/plots/{roc,pr}.csv`` (DVC plots) and ``{roc,pr,confusion}.png``, ``reports/README.md``.
Params: ``seed``, ``models`` (the variant names), ``evaluate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mura.config import load_params
from mura.evaluation.evaluate import run_evaluation
from mura.stage import run_main, set_seed


def main() -> None:
    """Parse paths, load params, run the stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--predictions", type=Path, default=Path("reports/predictions"))
    parser.add_argument("--thresholds", type=Path, default=Path("reports/thresholds.json"))
    parser.add_argument("--images", type=Path, default=Path("data/interim/images.csv"))
    parser.add_argument("--split", type=Path, default=Path("data/processed/split.csv"))
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    args = parser.parse_args()
    params = load_params(args.params)
    set_seed(params.seed)
    run_evaluation(
        list(params.models),
        params.evaluate,
        params.seed,
        args.predictions,
        args.thresholds,
        args.images,
        args.split,
        args.reports,
        params.calibrate.bins,
    )


if __name__ == "__main__":
    run_main(main)
