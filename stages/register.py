"""Stage ``register``: log and register the ensemble as the MLflow pyfunc ``mura-ensemble``.

Inputs: ``models/<variant>.keras``, ``reports/thresholds.json``, ``reports/metrics.json``,
``reports/per_body_part.csv``, images.csv, split.csv.
Outputs: an MLflow run and model version (alias ``champion`` when its validation kappa is not below
the current champion's, or ``register.force_champion``); ``reports/register.json``.
Params: ``register``, ``data.image_size``, ``data.resize``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mura.config import load_params
from mura.stage import run_main, set_seed, write_json


def main() -> None:
    """Parse paths, register, write the declared output."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--thresholds", default="reports/thresholds.json")
    parser.add_argument("--metrics", default="reports/metrics.json")
    parser.add_argument("--images", default="data/interim/images.csv")
    parser.add_argument("--split", default="data/processed/split.csv")
    parser.add_argument("--pixels", default="data/interim/pixels.npy")
    parser.add_argument("--per-body-part", default="reports/per_body_part.csv")
    parser.add_argument("--out", default="reports/register.json")
    args = parser.parse_args()
    params = load_params(args.params)
    set_seed(params.seed)
    from mura.register import register_ensemble

    result = register_ensemble(params, Path(args.models_dir), Path(args.thresholds), Path(args.metrics),
                               Path(args.images), Path(args.split), Path(args.pixels),
                               Path(args.per_body_part))  # fmt: skip
    write_json(args.out, result)


if __name__ == "__main__":
    run_main(main)
