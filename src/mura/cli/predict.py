"""``mura predict``: one study from the command line."""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from mura.cli.options import add_model_option, add_tracking_option
from mura.settings import runtime_settings

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


def _study_files(inputs: list[str]) -> list[Path]:
    """Files given directly, or the images inside given folders (sorted; macOS junk skipped)."""
    from mura.data.sources import is_junk
    from mura.errors import DataError

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(
                p for p in path.iterdir() if p.is_file() and not is_junk(p.name) and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"no such file or folder: {item}")
    if not files:
        raise DataError("no image files found (PNG, JPEG or DICOM)")
    return files


def cmd_predict(args: argparse.Namespace) -> None:
    """Predict one study from files or a study folder; print a table or JSON."""
    import json

    from mura.api import Predictor
    from mura.errors import DataError
    from mura.modeling.gradcam import overlay, png_bytes

    files = _study_files(args.inputs)
    predictor = Predictor.load(args.model, args.tracking_uri, warm_up=False)  # one study: no batch sizes to warm
    started = time.perf_counter()
    try:
        decoded = predictor.decode_views(files)
        result = predictor.predict_decoded(decoded, args.body_part, heatmaps=bool(args.heatmaps) or args.boxes)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    audit_dir = runtime_settings().audit_dir
    if audit_dir is not None:  # the same trail as the servers', when the operator asks for one
        from mura.operations.telemetry import AuditTrail

        identity = b"".join(hashlib.sha256(Path(f).read_bytes()).digest() for f in files)
        AuditTrail(Path(audit_dir)).record("cli", predictor, result, decoded, identity, time.perf_counter() - started)
    if args.heatmaps:
        out = Path(args.heatmaps)
        out.mkdir(parents=True, exist_ok=True)
        for index, view in enumerate(result.views, 1):
            for name, heat in view.heatmaps.items():
                (out / f"{index:02d}_{Path(view.name).stem}_{name}.png").write_bytes(png_bytes(overlay(view.gray, heat)))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    _print_table(result)


def _print_table(result: Any) -> None:
    """The study's answer as lines for a terminal: label, each view's probabilities, boxes, warnings."""
    if result.synthetic_data:
        print("NOTE: this model was trained on SYNTHETIC data; the output is not clinical.")
    print(
        f"study: {result.label.upper()}  probability {result.probability:.3f}  "
        f"(operating point {result.operating_point}, threshold {result.thresholds[result.operating_point]:.3f})"
    )
    names = list(result.variants)
    print("view".ljust(28) + "ensemble  " + "  ".join(n[:14].ljust(14) for n in names))
    for view in result.views:
        print(
            view.name[:27].ljust(28)
            + f"{view.probability:.3f}     "
            + "  ".join(f"{view.variants[n]:.3f}".ljust(14) for n in names)
        )
    for point, per_view in result.boxes.items():
        style = "dotted" if point == "high_sensitivity" else "solid"
        for view, boxes in zip(result.views, per_view, strict=True):
            for box in boxes:
                print(f"box ({point}, {style}) {view.name}: x {box.x0}-{box.x1}, y {box.y0}-{box.y1}, peak {box.score:.2f}")
    for warning in result.warnings:
        print(f"WARNING: {warning}")
    print("Pre-screening aid, not a diagnosis: a radiologist must review.")


def add_commands(sub: Any) -> None:
    """Add this group's commands to the ``mura`` parser's subparsers."""
    predict = sub.add_parser(
        "predict",
        help="pre-screen one study from image files or a study folder",
        description="Predict one study (all given views together): study probability and label, "
        "per-view and per-model probabilities. A pre-screening aid, not a diagnosis.",
    )
    predict.add_argument("inputs", nargs="+", help="PNG/JPEG/DICOM files or a folder holding a study's views")
    add_model_option(predict)
    add_tracking_option(predict)
    predict.add_argument("--body-part", default=None, help="e.g. XR_WRIST (default: DICOM tag when present)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    predict.add_argument(
        "--boxes",
        action="store_true",
        help="also the boxes where the model looks (dotted: high-sensitivity point, solid: high-specificity), per view",
    )
    predict.add_argument("--heatmaps", metavar="DIR", default=None, help="write Grad-CAM overlays (per model and ensemble) here")
    predict.set_defaults(func=cmd_predict)
