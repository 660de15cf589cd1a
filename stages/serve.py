"""Stage ``serve``: the version ``register`` just made, served by ``mlflow models serve`` and checked.

Inputs: ``reports/register.json`` (name, version and the reference study), images.csv and
pixels.npy (the reference study's images). The MLflow tracking store holding the version
(``MLFLOW_TRACKING_URI``, as for ``register``).
Outputs: ``reports/serve.json`` (version, URI, start-up seconds, first answer, warm p50/p95 latency,
the answer check), a DVC metric. Fails with one line when the server does not start or its answer
differs from the registered reference; the server never outlives the stage.
Params: ``serve``.
"""

from __future__ import annotations

from mura.config import load_params
from mura.packaging.serve import ServePaths, run_serve
from mura.stage import parse_stage_args, run_main, write_json


def main() -> None:
    """Parse paths, load params, run the stage, write its record."""
    args, paths = parse_stage_args(__doc__.splitlines()[0], ServePaths)
    params = load_params(args.params)
    write_json(paths.out, run_serve(params.serve, paths))


if __name__ == "__main__":
    run_main(main)
