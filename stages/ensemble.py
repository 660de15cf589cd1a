"""Stage ``ensemble``: predict valid and test with every variant and average them.

Inputs: images.csv, split.csv, pixels.npy, ``models/<variant>.keras`` for each variant in ``models:``.
Outputs: ``reports/predictions/{valid,test}.csv`` (per image: every variant's and the ensemble's
probability, uncalibrated: the ``calibrate`` stage follows).
Params: ``seed``, ``models`` (the variant names), ``ensemble.variant_weights``, ``ensemble.batch_size``,
``ensemble.max_studies``.
"""

from __future__ import annotations

from mura.config import load_params
from mura.evaluation.ensemble import EnsemblePaths, run_ensemble
from mura.stage import parse_stage_args, run_main, set_seed


def main() -> None:
    """Parse paths, load params, run the stage."""
    args, paths = parse_stage_args(__doc__.splitlines()[0], EnsemblePaths)
    params = load_params(args.params)
    set_seed(params.seed)
    run_ensemble(list(params.models), params.ensemble, paths, params.seed)


if __name__ == "__main__":
    run_main(main)
