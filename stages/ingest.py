"""Stage ``ingest``: decode both raw datasets into a checked listing and a pixel cache.

Inputs: the folders ``data.mura_dir`` and ``data.fracture_dir`` (an empty folder leaves that dataset out).
Outputs: ``--images`` (images.csv), ``--pixels`` (uint8 cache, row i = images.csv row i),
``--reports``/quarantine.csv, duplicates.csv, summary.json.
Params: ``seed``, ``data.{mura_dir,fracture_dir,image_size,resize}``, ``ingest``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mura.config import load_params
from mura.data.ingest import run_ingest
from mura.stage import run_main, set_seed


def main() -> None:
    """Parse paths, load params, run the stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", type=Path, default=Path("data/interim/images.csv"))
    parser.add_argument("--pixels", type=Path, default=Path("data/interim/pixels.npy"))
    parser.add_argument("--reports", type=Path, default=Path("reports/ingest"))
    args = parser.parse_args()
    params = load_params(args.params)
    set_seed(params.seed)
    run_ingest(params.data, params.ingest, args.images, args.pixels, args.reports)


if __name__ == "__main__":
    run_main(main)
