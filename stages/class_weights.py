"""Stage ``class_weights``: the seed's class weights from the training split.

Inputs: ``--images`` (images.csv), ``--split`` (split.csv).
Outputs: ``--out`` (reports/class_weights.json as {"0": w0, "1": w1}).
Params: ``data.train_datasets``.
"""

from __future__ import annotations

from mura.config import load_params
from mura.data.class_weights import ClassWeightsPaths, run_class_weights
from mura.stage import parse_stage_args, run_main


def main() -> None:
    """Parse paths, load params, run the stage."""
    args, paths = parse_stage_args(__doc__.splitlines()[0], ClassWeightsPaths)
    run_class_weights(load_params(args.params).data.train_datasets, paths)


if __name__ == "__main__":
    run_main(main)
