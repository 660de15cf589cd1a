"""Stage ``calibrate``: fit the study-probability calibrator on valid and choose the three operating points.

Inputs: ``reports/predictions/valid.csv`` (the ``ensemble`` stage's).
Outputs: ``reports/thresholds.json`` (default 0.5, high_sensitivity, high_specificity on the calibrated
probability; the variant weights; the calibrator).
Params: ``models`` (the variant names), ``ensemble`` (weights, targets), ``calibrate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mura.config import load_params
from mura.stage import run_main


def main() -> None:
    """Parse paths, load params, run the stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--predictions", type=Path, default=Path("reports/predictions"))
    parser.add_argument("--thresholds", type=Path, default=Path("reports/thresholds.json"))
    args = parser.parse_args()
    params = load_params(args.params)
    from mura.evaluation.calibrate import run_calibrate

    run_calibrate(list(params.models), params.ensemble, params.calibrate, args.predictions, args.thresholds)


if __name__ == "__main__":
    run_main(main)
