"""Stage ``localize``: the ensemble's heatmaps against the annotated boxes; the box levels chosen on valid.

Inputs: images.csv, split.csv, pixels.npy, ``models/``, ``reports/predictions``, ``reports/thresholds.json``,
the phantoms' boxes (``data.mura_dir``/synthetic_findings.coco.json), ``localize.annotations`` and the external
datasets' own boxes (``data.external_dir``).
Outputs: ``reports/localization.json`` (metrics), ``reports/localization.csv``, ``reports/plots/localization_cases.png``.
Params: ``models``, ``data.image_size``, ``data.resize``, ``data.mura_dir``, ``data.external_dir``, ``localize``, ``evaluate``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mura.config import load_params
from mura.data.synthetic import FINDINGS_FILE
from mura.evaluation.localize import LocalizePaths, run_localize
from mura.stage import parse_stage_args, run_main


def main() -> None:
    """Parse paths, load params, run the stage."""
    args, paths = parse_stage_args(__doc__.splitlines()[0], LocalizePaths)
    params = load_params(args.params)
    annotations = (Path(params.data.mura_dir) / FINDINGS_FILE, *map(Path, params.localize.annotations), *paths.annotations)
    paths = dataclasses.replace(paths, annotations=annotations, external_dir=Path(params.data.external_dir))
    run_localize(list(params.models), params.localize, params.evaluate, params.data.image_size, params.data.resize, paths)


if __name__ == "__main__":
    run_main(main)
