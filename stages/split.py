"""Stage ``split``: patient-level train/valid/test assignment.

Inputs: ``--images`` (data/interim/images.csv).
Outputs: ``--split`` (data/processed/split.csv: image_id, split), ``--report`` (reports/split.json).
Params: ``seed``, ``split``.
"""

from __future__ import annotations

import argparse

import pandas as pd

from mura.config import load_params
from mura.errors import DataError
from mura.split import count_split, make_split
from mura.stage import run_main, set_seed, write_csv, write_json


def main() -> None:
    """Parse paths, split, write the declared outputs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", default="data/interim/images.csv")
    parser.add_argument("--split", default="data/processed/split.csv")
    parser.add_argument("--report", default="reports/split.json")
    args = parser.parse_args()
    params = load_params(args.params)
    set_seed(params.seed)
    try:
        images = pd.read_csv(args.images, dtype={"patient_id": str, "study_id": str})
    except (FileNotFoundError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{args.images}: cannot read the ingest listing ({exc})") from None
    split = make_split(images, params.split.test_fraction, params.seed)
    write_csv(args.split, split)
    write_json(args.report, count_split(images, split))


if __name__ == "__main__":
    run_main(main)
