"""Stage ``train@<variant>``: train one of the four models and register it in MLflow.

Inputs: data/interim/{images.csv,pixels.npy}, data/processed/split.csv, reports/class_weights.json.
Outputs: ``models/<variant>.keras`` (best weights), ``reports/train/<variant>/``
(history.csv, history.png, metrics.json); an MLflow run and a version of ``mura-<variant>``.
Params: ``seed``, ``data.image_size``, ``data.train_datasets``, ``train``, ``augment``, ``models.<variant>``.
Interrupted runs resume from the last completed epoch (``models/checkpoints/<variant>``).
"""

from __future__ import annotations

import argparse

from mura.config import load_params
from mura.modeling.spec import TrainPaths, VariantSpec
from mura.stage import parse_stage_args, run_main, set_seed


def main() -> None:
    """Parse paths, load the variant's params, run the stage."""

    def model_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", required=True, help="variant name under models: in params.yaml")
        parser.add_argument(
            "--no-tracking",
            action="store_true",
            help="train and write the files without MLflow (a GPU node without it); the pipeline never sets it",
        )

    args, paths = parse_stage_args(__doc__.splitlines()[0], TrainPaths, model_option)
    params = load_params(args.params)
    set_seed(params.seed)
    spec = VariantSpec.from_params(params, args.model)
    from mura.modeling.train import run_train  # lazy: imports Keras, after the cheap checks and the seed

    run_train(spec, paths.for_variant(spec.name), tracking=not args.no_tracking)


if __name__ == "__main__":
    run_main(main)
