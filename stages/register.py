"""Stage ``register``: log and register the ensemble as the MLflow pyfunc ``mura-ensemble``.

Inputs: ``models/<variant>.keras``, ``reports/thresholds.json``, ``reports/metrics.json``,
``reports/per_body_part.csv``, ``reports/predictions`` (the Keras reference of the optimized runtime's
check), images.csv, split.csv, pixels.npy (the input example and the validation images).
Outputs: an MLflow run and model version (alias ``champion`` when its validation kappa is not below
the current champion's, or ``register.force_champion``) holding the ``.keras`` variants and, unless
``register.runtime`` is ``keras``, their OpenVINO export; ``reports/register.json``.
Params: ``models`` (the variant names), ``register``, ``data.image_size``, ``data.resize``.
"""

from __future__ import annotations

from mura.config import load_params
from mura.packaging.register import RegisterPaths, run_register
from mura.stage import parse_stage_args, run_main, set_seed, write_json


def main() -> None:
    """Parse paths, load params, run the stage, write its record."""
    args, paths = parse_stage_args(__doc__.splitlines()[0], RegisterPaths)
    params = load_params(args.params)
    set_seed(params.seed)
    architectures = {name: spec.arch for name, spec in params.models.items()}
    result = run_register(list(params.models), params.register, params.data.image_size, params.data.resize, paths, architectures)
    write_json(paths.out, result)


if __name__ == "__main__":
    run_main(main)
