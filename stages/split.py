"""Stage ``split``: patient-level train/valid/test assignment.

Inputs: ``--images`` (data/interim/images.csv).
Outputs: ``--split`` (data/processed/split.csv: image_id, split), ``--report`` (reports/split.json).
Params: ``seed``, ``split``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mura.config import load_params
from mura.data.split import run_split
from mura.stage import run_main, set_seed


def main() -> None:
    """Parse paths, load params, run the stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", type=Path, default=Path("data/interim/images.csv"))
    parser.add_argument("--split", type=Path, default=Path("data/processed/split.csv"))
    parser.add_argument("--report", type=Path, default=Path("reports/split.json"))
    args = parser.parse_args()
    params = load_params(args.params)
    set_seed(params.seed)
    run_split(params.split, params.seed, args.images, args.split, args.report)


if __name__ == "__main__":
    run_main(main)
