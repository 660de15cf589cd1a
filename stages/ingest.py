"""Stage ``ingest``: decode both raw datasets into a checked listing and a pixel cache.

Inputs: the folders ``data.mura_dir`` and ``data.fracture_dir`` (either may be absent).
Outputs: ``--images`` (images.csv), ``--pixels`` (uint8 cache, row i = images.csv row i),
``--reports``/quarantine.csv, duplicates.csv, summary.json.
Params: ``seed``, ``data.{mura_dir,fracture_dir,image_size,resize}``, ``ingest``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mura.config import load_params
from mura.ingest import check_quarantine, ingest
from mura.stage import run_main, set_seed, write_csv, write_json


def main() -> None:
    """Parse paths, run ingest, write the declared outputs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", default="data/interim/images.csv")
    parser.add_argument("--pixels", default="data/interim/pixels.npy")
    parser.add_argument("--reports", default="reports/ingest")
    args = parser.parse_args()
    params = load_params(args.params)
    set_seed(params.seed)
    result = ingest(params.data, params.ingest, Path(args.pixels))
    reports = Path(args.reports)
    write_csv(args.images, result.images)
    write_csv(reports / "quarantine.csv", result.quarantine)
    write_csv(reports / "duplicates.csv", result.duplicates)
    write_json(reports / "summary.json", result.summary)
    check_quarantine(result.summary, params.ingest.max_quarantine_fraction)


if __name__ == "__main__":
    run_main(main)
