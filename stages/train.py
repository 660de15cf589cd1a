"""Stage ``train@<variant>``: train one of the four models and register it in MLflow.

Inputs: data/interim/{images.csv,pixels.npy}, data/processed/split.csv, reports/class_weights.json.
Outputs: ``models/<variant>.keras`` (best weights), ``reports/train/<variant>/``
(history.csv, history.png, metrics.json); an MLflow run and a version of ``mura-<variant>``.
Params: ``seed``, ``data.image_size``, ``data.train_datasets``, ``train``, ``augment``, ``models.<variant>``.
Interrupted runs resume from the last completed epoch (``models/checkpoints/<variant>``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mura.config import load_params
from mura.stage import run_main, set_seed


def main() -> None:
    """Parse paths, train and log one variant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="variant name under models: in params.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", default="data/interim/images.csv")
    parser.add_argument("--pixels", default="data/interim/pixels.npy")
    parser.add_argument("--split", default="data/processed/split.csv")
    parser.add_argument("--class-weights", default="reports/class_weights.json")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--reports-dir", default="reports/train")
    args = parser.parse_args()
    params = load_params(args.params)
    set_seed(params.seed)
    from mura.train import VariantPaths, run_variant  # imports Keras: after the cheap checks

    run_variant(
        params,
        args.model,
        VariantPaths(
            images=Path(args.images), split=Path(args.split), pixels=Path(args.pixels),
            class_weights=Path(args.class_weights), model=Path(args.models_dir) / f"{args.model}.keras",
            reports=Path(args.reports_dir) / args.model, work=Path(args.models_dir) / "checkpoints" / args.model,
        ),
    )  # fmt: skip


if __name__ == "__main__":
    run_main(main)
