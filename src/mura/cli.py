"""The ``mura`` command line. ``mura <command> --help`` documents each command."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import yaml

from mura.stage import configure_logging, run_main

logger = logging.getLogger(__name__)


def _synth_defaults(params_path: str) -> dict[str, Any]:
    path = Path(params_path)
    if not path.is_file():
        return {}
    doc = yaml.safe_load(path.read_text()) or {}
    return {"seed": doc.get("seed", 0), **(doc.get("synth") or {})}


def cmd_synth(args: argparse.Namespace) -> None:
    """Write the synthetic phantom datasets."""
    from mura.synth import write_synthetic

    defaults = _synth_defaults(args.params)
    paths = write_synthetic(
        Path(args.out),
        seed=args.seed if args.seed is not None else int(defaults.get("seed", 0)),
        patients=args.patients if args.patients is not None else int(defaults.get("patients", 60)),
        fracture_images=args.fracture_images if args.fracture_images is not None else int(defaults.get("fracture_images", 120)),
    )
    for name, path in paths.items():
        print(f"{name}: {path}")


def cmd_workspace(args: argparse.Namespace) -> None:
    """Create/refresh a pipeline workspace and (optionally) its synthetic data."""
    from mura.config import merge_params
    from mura.synth import write_synthetic
    from mura.workspace import create_workspace, load_override

    repo = Path(args.repo)
    override = load_override(args.override)
    dest = create_workspace(repo, Path(args.dest), override)
    if args.synth:
        merged = merge_params(yaml.safe_load((repo / "params.yaml").read_text()), override)
        out = dest / "data" / "raw" / "synthetic"
        if not (out / "MURA-v1.1").exists():
            synth = merged.get("synth") or {}
            write_synthetic(out, seed=int(merged.get("seed", 0)), patients=int(synth.get("patients", 60)),
                            fracture_images=int(synth.get("fracture_images", 120)))  # fmt: skip
    print(dest)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all subcommands."""
    parser = argparse.ArgumentParser(prog="mura", description="Musculoskeletal radiograph abnormality detection (pre-screening aid).")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write synthetic phantom datasets in the MURA and fracture layouts",
                           description="Write SYNTHETIC radiograph phantoms (not patient data) in the exact MURA-v1.1 "
                           "and Bone Fracture Multi-Region layouts, deterministic from --seed.")  # fmt: skip
    synth.add_argument("out", help="destination folder (its name should say synthetic), e.g. data/raw/synthetic")
    synth.add_argument("--params", default="params.yaml", help="read defaults from this params file's seed and synth section")
    synth.add_argument("--seed", type=int, default=None)
    synth.add_argument("--patients", type=int, default=None, help="MURA patients (1-3 studies of 1-4 views each)")
    synth.add_argument("--fracture-images", type=int, default=None, help="fracture dataset images (0: skip)")
    synth.set_defaults(func=cmd_synth)

    ws = sub.add_parser("workspace", help="create a self-contained pipeline workspace (used by make demo)",
                        description="Copy the pipeline into DEST with params.yaml merged with --override, "
                        "and a DVC project of its own; --synth also writes the synthetic data.")  # fmt: skip
    ws.add_argument("dest")
    ws.add_argument("--repo", default=".", help="repository root to copy from")
    ws.add_argument("--override", default=None, help="YAML file merged over params.yaml, e.g. params.demo.yaml")
    ws.add_argument("--synth", action="store_true", help="write the synthetic datasets into DEST/data/raw/synthetic if absent")
    ws.set_defaults(func=cmd_workspace)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mura`` command."""
    args = build_parser().parse_args(argv)
    configure_logging()
    run_main(lambda: args.func(args))


if __name__ == "__main__":
    main()
