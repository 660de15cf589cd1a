"""Stage ``split``: patient-level train/valid/test assignment.

Inputs: ``--images`` (data/interim/images.csv).
Outputs: ``--split`` (data/processed/split.csv: image_id, split), ``--report`` (reports/split.json).
Params: ``seed``, ``split``.
"""

from __future__ import annotations

from mura.config import load_params
from mura.data.split import SplitPaths, run_split
from mura.stage import parse_stage_args, run_main, set_seed


def main() -> None:
    """Parse paths, load params, run the stage."""
    args, paths = parse_stage_args(__doc__.splitlines()[0], SplitPaths)
    params = load_params(args.params)
    set_seed(params.seed)
    run_split(params.split, params.seed, paths)


if __name__ == "__main__":
    run_main(main)
