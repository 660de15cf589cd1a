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
from mura.modeling.spec import VariantSpec
from mura.stage import run_main, set_seed


def main() -> None:
    """Parse paths, load the variant's params, run the stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="variant name under models: in params.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", type=Path, default=Path("data/interim/images.csv"))
    parser.add_argument("--pixels", type=Path, default=Path("data/interim/pixels.npy"))
    parser.add_argument("--split", type=Path, default=Path("data/processed/split.csv"))
    parser.add_argument("--class-weights", type=Path, default=Path("reports/class_weights.json"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--reports-dir", type=Path, default=Path("reports/train"))
    args = parser.parse_args()
    params = load_params(args.params)
    set_seed(params.seed)
    from mura.modeling.train import VariantPaths, run_train  # imports Keras: after the cheap checks

    spec = VariantSpec.from_params(params, args.model)
    paths = VariantPaths(
        images=args.images,
        split=args.split,
        pixels=args.pixels,
        class_weights=args.class_weights,
        model=args.models_dir / f"{spec.name}.keras",
        reports=args.reports_dir / spec.name,
        work=args.models_dir / "checkpoints" / spec.name,
    )
    run_train(spec, paths)


if __name__ == "__main__":
    run_main(main)
