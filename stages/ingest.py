"""Stage ``ingest``: decode both raw datasets into a checked listing and a pixel cache.

Inputs: the folders ``data.mura_dir`` and ``data.fracture_dir`` (an empty folder leaves that dataset out).
Outputs: ``--images`` (images.csv), ``--pixels`` (uint8 cache, row i = images.csv row i),
``--reports``/quarantine.csv, duplicates.csv, summary.json.
Params: ``seed``, ``data.{mura_dir,fracture_dir,image_size,resize}``, ``ingest``.
"""

from __future__ import annotations

from mura.config import load_params
from mura.data.ingest import IngestPaths, run_ingest
from mura.stage import parse_stage_args, run_main, set_seed


def main() -> None:
    """Parse paths, load params, run the stage."""
    args, paths = parse_stage_args(__doc__.splitlines()[0], IngestPaths)
    params = load_params(args.params)
    set_seed(params.seed)
    run_ingest(params.data, params.ingest, paths)


if __name__ == "__main__":
    run_main(main)
