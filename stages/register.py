"""Stage ``register``: log and register the ensemble as the MLflow pyfunc ``mura-ensemble``.

Inputs: ``models/<variant>.keras``, ``reports/thresholds.json``, ``reports/metrics.json``,
``reports/per_body_part.csv``, ``reports/predictions`` (the Keras reference of the optimized runtime's
check), images.csv, split.csv, pixels.npy (the input example and the validation images).
Outputs: an MLflow run and model version (alias ``champion`` when its validation kappa is not below
the current champion's, or ``register.force_champion``) holding the ``.keras`` variants and, unless
``register.runtime`` is ``keras``, their OpenVINO export; ``reports/register.json``.
Params: ``models`` (the variant names), ``register``, ``data.image_size``, ``data.resize``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mura.config import load_params
from mura.stage import run_main, set_seed, write_json


def main() -> None:
    """Parse paths, load params, run the stage, write its record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--thresholds", type=Path, default=Path("reports/thresholds.json"))
    parser.add_argument("--metrics", type=Path, default=Path("reports/metrics.json"))
    parser.add_argument("--images", type=Path, default=Path("data/interim/images.csv"))
    parser.add_argument("--split", type=Path, default=Path("data/processed/split.csv"))
    parser.add_argument("--pixels", type=Path, default=Path("data/interim/pixels.npy"))
    parser.add_argument("--per-body-part", type=Path, default=Path("reports/per_body_part.csv"))
    parser.add_argument("--predictions", type=Path, default=Path("reports/predictions"))
    parser.add_argument(
        "--figures",
        type=Path,
        nargs="*",
        default=[Path("reports/plots/reliability.png"), Path("reports/plots/reliability_per_body_part.png")],
        help="evaluation figures logged with the registered model",
    )
    parser.add_argument("--model-card", type=Path, default=Path("reports/model_card.md"))
    parser.add_argument("--out", type=Path, default=Path("reports/register.json"))
    args = parser.parse_args()
    params = load_params(args.params)
    set_seed(params.seed)
    from mura.serving.register import RegisterInputs, run_register

    inputs = RegisterInputs(
        models_dir=args.models_dir,
        thresholds=args.thresholds,
        metrics=args.metrics,
        images=args.images,
        split=args.split,
        pixels=args.pixels,
        per_body_part=args.per_body_part,
        predictions=args.predictions,
        figures=tuple(args.figures),
        model_card=args.model_card,
    )
    architectures = {name: spec.arch for name, spec in params.models.items()}
    result = run_register(list(params.models), params.register, params.data.image_size, params.data.resize, inputs, architectures)
    write_json(args.out, result)


if __name__ == "__main__":
    run_main(main)
