"""Stage ``class_weights``: the seed's class weights from the training split.

Inputs: ``--images`` (images.csv), ``--split`` (split.csv).
Outputs: ``--out`` (reports/class_weights.json as {"0": w0, "1": w1}).
Params: ``data.train_datasets``.
"""

from __future__ import annotations

import argparse

import pandas as pd

from mura.config import load_params
from mura.stage import run_main, write_json
from mura.weights import compute_class_weights


def main() -> None:
    """Parse paths, compute weights over the selected training images, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", default="data/interim/images.csv")
    parser.add_argument("--split", default="data/processed/split.csv")
    parser.add_argument("--out", default="reports/class_weights.json")
    args = parser.parse_args()
    params = load_params(args.params)
    rows = pd.read_csv(args.images, usecols=["image_id", "dataset", "label"]).merge(pd.read_csv(args.split), on="image_id")
    train = rows[(rows["split"] == "train") & rows["dataset"].isin(params.data.train_datasets)]
    write_json(args.out, compute_class_weights(train["label"].to_numpy()))


if __name__ == "__main__":
    run_main(main)
