"""Stage ``class_weights``: the seed's class weights from the training split.

Inputs: ``--images`` (images.csv), ``--split`` (split.csv).
Outputs: ``--out`` (reports/class_weights.json as {"0": w0, "1": w1}).
Params: ``data.train_datasets``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mura.config import load_params
from mura.data.class_weights import run_class_weights
from mura.stage import run_main


def main() -> None:
    """Parse paths, load params, run the stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", type=Path, default=Path("data/interim/images.csv"))
    parser.add_argument("--split", type=Path, default=Path("data/processed/split.csv"))
    parser.add_argument("--out", type=Path, default=Path("reports/class_weights.json"))
    args = parser.parse_args()
    params = load_params(args.params)
    run_class_weights(params.data.train_datasets, args.images, args.split, args.out)


if __name__ == "__main__":
    run_main(main)
