"""``mura synth``, ``mura synth-dicom`` and ``mura workspace``: synthetic data and pipeline workspaces."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from mura.config import SynthParams, load_params

logger = logging.getLogger(__name__)


def _synth_settings(params_path: str | Path, args: argparse.Namespace | None = None) -> tuple[int, SynthParams]:
    """Seed and ``synth`` sizes from a params file (defaults when it is absent), overridden by the command line."""
    path = Path(params_path)
    if path.is_file():
        params = load_params(path)
        seed, sizes = params.seed, params.synth
    else:
        seed, sizes = 0, SynthParams()
    if args is not None:
        seed = args.seed if args.seed is not None else seed
        sizes = SynthParams(
            patients=args.patients if args.patients is not None else sizes.patients,
            fracture_images=args.fracture_images if args.fracture_images is not None else sizes.fracture_images,
            conspicuity=sizes.conspicuity,
        )
    return seed, sizes


def cmd_synth(args: argparse.Namespace) -> None:
    """Write the synthetic phantom datasets."""
    from mura.data.synthetic import write_synthetic

    seed, sizes = _synth_settings(args.params, args)
    for name, path in write_synthetic(Path(args.out), seed=seed, sizes=sizes).items():
        print(f"{name}: {path}")


def cmd_synth_dicom(args: argparse.Namespace) -> None:
    """Write synthetic radiograph studies as DICOM files (to send to the DICOM node)."""
    from mura.data.dicom_phantoms import write_phantom_study

    for k in range(args.studies):
        study = write_phantom_study(
            Path(args.out) / f"study{k + 1}",
            views=args.views,
            body_part=args.body_part.upper().removeprefix("XR_"),
            abnormal=k % 2 == 1,
            seed=args.seed + k,
            modality=args.modality,
            syntaxes=tuple(args.syntax or ["explicit"]),
            size=args.size,
        )
        print(f"{study.files[0].parent}  ({len(study.files)} views, {'abnormal' if study.abnormal else 'normal'} phantom)")


def cmd_workspace(args: argparse.Namespace) -> None:
    """Create/refresh a pipeline workspace and (optionally) its synthetic data."""
    from mura.data.synthetic import write_synthetic
    from mura.workspace import create_workspace, load_override, load_override_text, track_data

    if args.override_yaml is not None:
        override = load_override_text(args.override_yaml)
        label = "--override-yaml"
    else:
        override, label = load_override(args.override), args.override or "override"
    dest = create_workspace(Path(args.repo), Path(args.dest), override, label)
    out = dest / "data" / "raw" / "synthetic"
    if args.synth and not (out / "MURA-v1.1").exists():
        seed, sizes = _synth_settings(dest / "params.yaml")  # the workspace's merged params
        write_synthetic(out, seed=seed, sizes=sizes)
    if args.synth and not out.with_suffix(".dvc").exists():
        track_data(dest, out.relative_to(dest))  # `dvc push` carries the raw data too; a clone pulls it
    print(dest)
    if args.repro:  # one command for container entry points (docker/mlproject): no shell needed
        import subprocess

        from mura.deploy.processes import venv_program

        raise SystemExit(subprocess.run([*venv_program("dvc"), "repro"], cwd=dest, check=False).returncode)


def add_commands(sub: Any) -> None:
    """Add this group's commands to the ``mura`` parser's subparsers."""
    synth = sub.add_parser(
        "synth",
        help="write synthetic phantom datasets in the MURA and fracture layouts",
        description="Write SYNTHETIC radiograph phantoms (not patient data) in the exact MURA-v1.1 "
        "and Bone Fracture Multi-Region layouts, deterministic from --seed.",
    )
    synth.add_argument("out", help="destination folder (its name should say synthetic), e.g. data/raw/synthetic")
    synth.add_argument("--params", default="params.yaml", help="read defaults from this params file's seed and synth section")
    synth.add_argument("--seed", type=int, default=None)
    synth.add_argument("--patients", type=int, default=None, help="MURA patients (1-3 studies of 1-4 views each)")
    synth.add_argument("--fracture-images", type=int, default=None, help="fracture dataset images (0: skip)")
    synth.set_defaults(func=cmd_synth)

    sdicom = sub.add_parser(
        "synth-dicom",
        help="write synthetic radiograph studies as DICOM (DX/CR) files, e.g. to send to the DICOM node",
        description="Synthetic phantoms (NOT patient data) written as DICOM studies, one folder per study.",
    )
    sdicom.add_argument("out", help="output folder")
    sdicom.add_argument("--studies", type=int, default=2)
    sdicom.add_argument("--views", type=int, default=3)
    sdicom.add_argument("--body-part", default="WRIST", help="DICOM BodyPartExamined (WRIST, HAND, ELBOW, ...)")
    sdicom.add_argument("--modality", choices=("DX", "CR"), default="DX")
    sdicom.add_argument(
        "--syntax",
        action="append",
        choices=("explicit", "deflated", "rle", "j2k"),
        default=None,
        help="transfer syntax (repeat: the views cycle through them; default explicit)",
    )
    sdicom.add_argument("--size", type=int, default=None, help="long side in pixels (default: as rendered)")
    sdicom.add_argument("--seed", type=int, default=0)
    sdicom.set_defaults(func=cmd_synth_dicom)

    ws = sub.add_parser(
        "workspace",
        help="create a self-contained pipeline workspace (used by make demo)",
        description="Copy the pipeline into DEST with params.yaml merged with --override, "
        "and a DVC project of its own; --synth also writes the synthetic data.",
    )
    ws.add_argument("dest")
    ws.add_argument("--repo", default=".", help="repository root to copy from")
    ws.add_argument("--override", default=None, help="YAML file merged over params.yaml, e.g. params.demo.yaml")
    ws.add_argument("--override-yaml", default=None, metavar="TEXT", help="the override as YAML text instead of a file")
    ws.add_argument("--synth", action="store_true", help="write the synthetic datasets into DEST/data/raw/synthetic if absent")
    ws.add_argument("--repro", action="store_true", help="then run `dvc repro` in DEST (its exit code is the command's)")
    ws.set_defaults(func=cmd_workspace)
