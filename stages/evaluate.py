"""Stage ``evaluate``: metrics for every variant and the ensemble, overall, per dataset and body part.

Inputs: ``reports/predictions/{valid,test}.csv``, ``reports/thresholds.json``, images.csv, split.csv.
Outputs: ``reports/metrics.json`` (DVC metrics), ``reports/per_body_part.csv``,
``reports/plots/{roc,pr}.csv`` (DVC plots) and ``{roc,pr,confusion}.png``, ``reports/README.md``.
Params: ``seed``, ``models`` (the variant names), ``evaluate``.
"""

from __future__ import annotations

from mura.config import load_params
from mura.evaluation.evaluate import EvaluatePaths, run_evaluation
from mura.stage import parse_stage_args, run_main, set_seed


def main() -> None:
    """Parse paths, load params, run the stage."""
    args, paths = parse_stage_args(__doc__.splitlines()[0], EvaluatePaths)
    params = load_params(args.params)
    set_seed(params.seed)
    run_evaluation(list(params.models), params.evaluate, params.seed, paths, params.calibrate.bins)


if __name__ == "__main__":
    run_main(main)
