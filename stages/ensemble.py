"""Stage ``ensemble``: predict valid and test with every variant and average them.

Inputs: images.csv, split.csv, pixels.npy, ``models/<variant>.keras`` for each variant in ``models:``.
Outputs: ``reports/predictions/{valid,test}.csv`` (per image: every variant's and the ensemble's
probability, uncalibrated: the ``calibrate`` stage follows).
Params: ``models`` (the variant names), ``ensemble.variant_weights``, ``ensemble.batch_size``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mura.config import load_params
from mura.stage import run_main, set_seed


def main() -> None:
    """Parse paths, load params, run the stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", type=Path, default=Path("data/interim/images.csv"))
    parser.add_argument("--pixels", type=Path, default=Path("data/interim/pixels.npy"))
    parser.add_argument("--split", type=Path, default=Path("data/processed/split.csv"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--predictions", type=Path, default=Path("reports/predictions"))
    args = parser.parse_args()
    params = load_params(args.params)
    set_seed(params.seed)
    from mura.evaluation.ensemble import run_ensemble

    run_ensemble(
        list(params.models),
        params.ensemble,
        args.images,
        args.split,
        args.pixels,
        args.models_dir,
        args.predictions,
    )


if __name__ == "__main__":
    run_main(main)
