"""Stage ``calibrate``: fit the study-probability calibrator on valid and choose the three operating points.

Inputs: ``reports/predictions/valid.csv`` (the ``ensemble`` stage's).
Outputs: ``reports/thresholds.json`` (default 0.5, high_sensitivity, high_specificity on the calibrated
probability; the variant weights; the calibrator).
Params: ``models`` (the variant names), ``ensemble`` (weights, targets), ``calibrate``.
"""

from __future__ import annotations

from mura.config import load_params
from mura.evaluation.calibrate import CalibratePaths, run_calibrate
from mura.stage import parse_stage_args, run_main


def main() -> None:
    """Parse paths, load params, run the stage."""
    args, paths = parse_stage_args(__doc__.splitlines()[0], CalibratePaths)
    params = load_params(args.params)
    run_calibrate(list(params.models), params.ensemble, params.calibrate, paths)


if __name__ == "__main__":
    run_main(main)
