"""Synthetic radiograph phantoms in the exact MURA-v1.1 and Bone Fracture layouts.

MURA is licence-gated and the fracture dataset lives on Kaggle, so the
project generates stand-ins that exercise the real loaders unchanged. The
pictures are procedurally rendered: soft tissue around bones drawn as
capsules with a bright cortex and a darker medulla, exposure, blur and noise
variation, random size and aspect ratio. Abnormal studies show a fracture
(gap, lateral displacement, angulation), a dislocated joint or orthopaedic
hardware. Image size, file format, mode and L/R markers are drawn
independently of the label, so no pixel, size or format reveals it.

THIS IS NOT PATIENT DATA. Every tree written here is under a folder with
``synthetic`` in its name and carries a ``SYNTHETIC_DATA_README.txt``.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from mura.config import SynthParams
from mura.data.sources import BODY_PARTS, SYNTHETIC_MARKER
from mura.parallel import process_context, worker_count

FRACTURE_DIR = "Bone_Fracture_Binary_Classification"

logger = logging.getLogger(__name__)

MARKER_TEXT = """SYNTHETIC DATA - NOT PATIENT DATA
Procedurally rendered radiograph-like phantoms written by `mura synth` in the
{layout} layout, for testing and demonstrating the pipeline only.
Any model trained on these images says nothing about clinical performance.
seed={seed}
"""

Segment = tuple[np.ndarray, np.ndarray, float]  # start, end (x, y in [0, 1]), radius


@dataclass(frozen=True)
class Anatomy:
    """Bone segments of a body part and which of them may fracture or dislocate."""

    bones: list[Segment]
    fragile: list[int]
    joints: list[int]  # indices of segments whose start is a joint that may dislocate


def _seg(x0: float, y0: float, x1: float, y1: float, r: float) -> Segment:
    return (np.array([x0, y0]), np.array([x1, y1]), r)


def _digit(x: float, y0: float, lengths: list[float], r: float, tilt: float) -> list[Segment]:
    segments, y, xx = [], y0, x
    for length in lengths:
        nx, ny = xx + tilt * length, y - length
        segments.append(_seg(xx, y, nx, ny, r))
        xx, y = nx, ny - 0.012
        r *= 0.85
    return segments


def anatomy(body_part: str, rng: np.random.Generator) -> Anatomy:
    """Bones of one body part in normalised coordinates, with random proportions.

    Args:
        body_part: one of :data:`mura.data.sources.BODY_PARTS`.
        rng: random generator.

    Returns:
        The anatomy.
    """
    j = lambda s=0.03: float(rng.normal(0, s))  # noqa: E731 - small jitter helper
    if body_part == "XR_HUMERUS":
        bones = [_seg(0.5 + j(), 0.1, 0.5 + j(), 0.9, 0.07 + j(0.01))]
        return Anatomy(bones, [0], [])
    if body_part == "XR_FOREARM":
        bones = [_seg(0.42 + j(), 0.08, 0.4 + j(), 0.92, 0.05), _seg(0.6 + j(), 0.1, 0.6 + j(), 0.9, 0.045)]
        return Anatomy(bones, [0, 1], [])
    if body_part == "XR_ELBOW":
        bones = [
            _seg(0.5 + j(), 0.05, 0.5, 0.47, 0.08),
            _seg(0.44 + j(), 0.55, 0.4 + j(), 0.95, 0.05),
            _seg(0.58 + j(), 0.55, 0.62 + j(), 0.95, 0.045),
        ]
        return Anatomy(bones, [0, 1, 2], [1, 2])
    if body_part == "XR_SHOULDER":
        bones = [
            _seg(0.55 + j(), 0.42, 0.6 + j(), 0.98, 0.08),  # humerus with the head at its start
            _seg(0.05, 0.18 + j(), 0.62, 0.22 + j(), 0.035),  # clavicle
            _seg(0.4, 0.3 + j(), 0.3, 0.85, 0.06),  # scapula border
        ]
        return Anatomy(bones, [0, 1], [0])
    if body_part == "XR_WRIST":
        bones = [_seg(0.4 + j(), 0.98, 0.42, 0.58, 0.06), _seg(0.62 + j(), 0.98, 0.6, 0.6, 0.045)]
        for cx, cy in ((0.4, 0.48), (0.5, 0.46), (0.6, 0.48), (0.45, 0.38), (0.55, 0.37), (0.65, 0.4)):
            x, y = cx + j(0.01), cy + j(0.01)
            bones.append(_seg(x, y, x + 0.01, y + 0.01, 0.035))
        for k, x in enumerate((0.36, 0.46, 0.55, 0.64)):
            bones.append(_seg(x, 0.3, x - 0.03 * (k - 1.5), 0.05, 0.025))
        return Anatomy(bones, [0, 1], [])
    if body_part == "XR_HAND":
        bones = []
        for k, x in enumerate((0.3, 0.42, 0.52, 0.62, 0.72)):
            tilt = 0.12 * (k - 2)
            bones.append(_seg(x + j(0.01), 0.85, x + tilt * 0.25, 0.58, 0.03))
            bones.extend(_digit(x + tilt * 0.25, 0.56, [0.16, 0.11, 0.08], 0.025, tilt))
        return Anatomy(bones, list(range(len(bones))), [])
    if body_part == "XR_FINGER":
        bones = _digit(0.5 + j(), 0.95, [0.36, 0.26, 0.18], 0.075, j(0.05))
        return Anatomy(bones, [0, 1, 2], [1, 2])
    raise ValueError(f"unknown body part {body_part!r}; expected one of {BODY_PARTS}")


def _capsule_field(
    h: int, w: int, p0: np.ndarray, p1: np.ndarray, r: float, out: np.ndarray, cortex: float, medulla: float, thickness: float
) -> None:
    """Draw one bone (capsule) into ``out`` (max-composited), touching only its bounding box."""
    x0 = max(0, int(min(p0[0], p1[0]) - r - 2))
    x1 = min(w, int(max(p0[0], p1[0]) + r + 3))
    y0 = max(0, int(min(p0[1], p1[1]) - r - 2))
    y1 = min(h, int(max(p0[1], p1[1]) + r + 3))
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = p1 - p0
    denom = float(d @ d) or 1e-6
    t = np.clip(((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / denom, 0.0, 1.0)
    dist = np.hypot(xx - (p0[0] + t * d[0]), yy - (p0[1] + t * d[1]))
    edge = np.clip(r - dist, 0.0, 1.0)  # anti-aliased boundary
    inner = np.clip((r - thickness) - dist, 0.0, 1.0)
    value = edge * (cortex * (1 - inner) + medulla * inner)
    region = out[y0:y1, x0:x1]
    np.maximum(region, value, out=region)


def _rotate(points: np.ndarray, centre: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    rotated: np.ndarray = (points - centre) @ rot.T + centre
    return rotated


FINDING_KINDS = ("fracture", "dislocation", "lytic_lesion", "hardware")  # COCO category ids 1-4, in this order


@dataclass(frozen=True)
class Finding:
    """One planted finding of an abnormal phantom: its kind and its box in the written image's pixels.

    Attributes:
        kind: one of :data:`FINDING_KINDS`.
        box: ``(x0, y0, x1, y1)``, pixels, x1/y1 exclusive, clipped to the image.
    """

    kind: str
    box: tuple[int, int, int, int]


def _box(points: list[np.ndarray], margin: float, h: int, w: int) -> tuple[int, int, int, int]:
    """The box around ``points`` widened by ``margin`` pixels, clipped to the image."""
    xy = np.array(points, dtype=np.float64)
    x0, y0 = np.floor(xy.min(axis=0) - margin)
    x1, y1 = np.ceil(xy.max(axis=0) + margin)
    return max(0, int(x0)), max(0, int(y0)), min(w, int(x1)), min(h, int(y1))


def render_phantom(body_part: str, abnormal: bool, rng: np.random.Generator, conspicuity: float = 1.0) -> np.ndarray:
    """Render one radiograph-like phantom (:func:`render_phantom_annotated` without its findings)."""
    return render_phantom_annotated(body_part, abnormal, rng, conspicuity)[0]


def render_phantom_annotated(  # noqa: C901, PLR0915
    body_part: str, abnormal: bool, rng: np.random.Generator, conspicuity: float = 1.0
) -> tuple[np.ndarray, list[Finding]]:
    """Render one radiograph-like phantom, and the box of each finding planted in it.

    Long on purpose: one picture drawn top to bottom, and every random draw must stay in the same
    order (the phantoms are a pure function of the generator's state, byte for byte across
    versions); splitting it would hide that order across helpers.

    Args:
        body_part: one of :data:`mura.data.sources.BODY_PARTS`.
        abnormal: draw a fracture, dislocation or hardware.
        rng: random generator (the picture is a pure function of its state).
        conspicuity: scales each finding's size and contrast (fracture gap, displacement and angulation,
            dislocation, lesion size and darkness, hardware thickness, swelling) without drawing any other
            random number: 1 draws the findings as always (byte for byte); the demo's 64-px images
            need about 2 to show them at all. Normal phantoms do not depend on it.

    Returns:
        uint8 array (H, W), H and W between 280 and 512, independent of the label; and the findings
        (none for a normal phantom). The boxes are computed from the drawn geometry and draw no
        random number, so the pixels are the same as before boxes existed.
    """
    h, w = int(rng.integers(300, 513)), int(rng.integers(280, 513))
    findings: list[Finding] = []
    scale = min(h, w)
    ana = anatomy(body_part, rng)
    angle = float(rng.uniform(-0.35, 0.35))
    shift = rng.uniform(-0.06, 0.06, size=2)
    zoom = float(rng.uniform(0.85, 1.1))
    centre = np.array([0.5, 0.5])

    def to_px(p: np.ndarray) -> np.ndarray:
        q = _rotate((p - centre) * zoom + centre + shift, centre, angle)
        return np.array([q[0] * w, q[1] * h])

    bones = [(to_px(a), to_px(b), r * scale * zoom) for a, b, r in ana.bones]
    hardware: list[Segment] = []
    swelling: list[Segment] = []  # soft-tissue swelling and callus around the lesion site
    lesions: list[Segment] = []  # lytic (dark) areas inside bone
    if abnormal:
        kinds = ["fracture", "fracture", "hardware", "lesion"] + (["dislocation"] if ana.joints else [])
        kind = rng.choice(kinds)
        idx = int(rng.choice(ana.fragile))
        p0, p1, r = bones[idx]
        axis = p1 - p0
        length = float(np.hypot(*axis)) or 1.0
        unit, normal = axis / length, np.array([-axis[1], axis[0]]) / length
        if kind == "fracture":
            t = float(rng.uniform(0.35, 0.65))
            gap = r * float(rng.uniform(0.35, 0.8)) * conspicuity
            pm = p0 + axis * t
            shift_px = normal * r * float(rng.uniform(0.7, 1.5)) * rng.choice([-1, 1]) * conspicuity
            tilt = min(0.9, float(rng.uniform(0.2, 0.5)) * conspicuity) * rng.choice([-1, 1])
            distal_start = pm + unit * gap + shift_px
            distal_end = _rotate(p1 + shift_px, distal_start, tilt)
            bones[idx] = (p0, pm, r)
            bones.append((distal_start, distal_end, r))
            findings.append(Finding("fracture", _box([pm, distal_start], r * 1.2, h, w)))
        elif kind == "dislocation":
            idx = int(rng.choice(ana.joints))
            p0, p1, r = bones[idx]
            offset = normal * r * float(rng.uniform(1.0, 1.8)) * rng.choice([-1, 1]) + unit * r * float(rng.uniform(0.3, 0.8))
            offset = offset * conspicuity
            bones[idx] = (p0 + offset, p1 + offset * 0.6, r)
            findings.append(Finding("dislocation", _box([p0, p0 + offset], r * 1.2, h, w)))
        elif kind == "lesion":  # a lytic lesion with a sclerotic rim
            centre_px = p0 + axis * float(rng.uniform(0.25, 0.75))
            end = centre_px + unit * r * float(rng.uniform(0.3, 1.2)) * conspicuity
            lesions.append((centre_px, end, r * min(0.9, float(rng.uniform(0.45, 0.7)) * conspicuity)))
            start, end, radius = lesions[-1]
            findings.append(Finding("lytic_lesion", _box([start, end], radius, h, w)))
        else:  # plate with screws along the bone
            start, end = p0 + axis * 0.25 + normal * r * 0.9, p0 + axis * 0.75 + normal * r * 0.9
            hardware.append((start, end, r * 0.3 * conspicuity))
            for s in np.linspace(0.3, 0.7, int(rng.integers(3, 6))):
                base = p0 + axis * s
                hardware.append((base + normal * r * 1.1, base - normal * r * 0.8, r * 0.09 * conspicuity))
            ends = [point for a, b, _ in hardware for point in (a, b)]
            findings.append(Finding("hardware", _box(ends, max(r * 0.3 * conspicuity, 1.5), h, w)))
        if kind != "hardware" or rng.random() < 0.5:
            # Swelling around the site: broad, so it survives downsampling (as in real studies).
            site = bones[idx][0] + (bones[idx][1] - bones[idx][0]) * 0.5
            swelling.append((site - unit * r * 1.5, site + unit * r * 1.5, r * float(rng.uniform(3.2, 4.2))))
    # Soft tissue: wide, soft capsules around the bones.
    tissue = np.zeros((h, w), np.float32)
    for p0, p1, r in bones:
        _capsule_field(h, w, p0, p1, r * 2.4, tissue, 1.0, 1.0, 1.0)
    for p0, p1, r in swelling:
        _capsule_field(h, w, p0, p1, r, tissue, 1.35**conspicuity, 1.35**conspicuity, 1.0)
    tissue_img = Image.fromarray((tissue * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(scale * 0.03))
    image = np.asarray(tissue_img, np.float32) / 255.0 * float(rng.uniform(0.15, 0.3))
    bone = np.zeros((h, w), np.float32)
    cortex, medulla = float(rng.uniform(0.55, 0.75)), float(rng.uniform(0.3, 0.45))
    for p0, p1, r in bones:
        _capsule_field(h, w, p0, p1, r, bone, cortex, medulla, max(1.5, r * float(rng.uniform(0.2, 0.35))))
    for p0, p1, r in lesions:  # carve the lesion, keep a thin sclerotic rim
        hole = np.zeros((h, w), np.float32)
        _capsule_field(h, w, p0, p1, r, hole, 1.0, 1.0, 1.0)
        bone = np.where(hole > 0.5, bone * 0.35 / conspicuity, bone)
    image = image + bone
    metal = np.zeros((h, w), np.float32)
    for p0, p1, r in hardware:
        _capsule_field(h, w, p0, p1, max(r, 1.5), metal, 1.0, 1.0, 1.0)
    image = np.maximum(image, metal * 0.97)
    # L/R marker in either class, so a bright square says nothing about the label.
    if rng.random() < 0.6:
        mx, my = int(rng.integers(5, max(6, w - 40))), int(rng.integers(5, max(6, h - 40)))
        size = int(rng.integers(14, 30))
        image[my : my + size, mx : mx + size] = 0.9
        image[my + size // 4 : my + 3 * size // 4, mx + size // 3 : mx + size // 2] = 0.2
    # Exposure, detector blur and noise.
    image = image + float(rng.uniform(0.02, 0.12)) + np.linspace(0, float(rng.uniform(-0.05, 0.05)), w)[None, :]
    image = np.clip(image, 0, 1) ** float(rng.uniform(0.75, 1.3))
    blurred = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.6)))
    )
    image = np.asarray(blurred, np.float32) / 255.0 + rng.normal(0, float(rng.uniform(0.01, 0.035)), (h, w))
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8), [
        f for f in findings if f.box[0] < f.box[2] and f.box[1] < f.box[3]
    ]


def encode(gray: np.ndarray, fmt: str, mode: str) -> bytes:
    """Encode a grayscale phantom as PNG/JPEG in the given PIL mode (L, LA, RGB, RGBA, P, I;16)."""
    image = Image.fromarray(gray)
    if mode == "I;16":
        # 12-bit content in a 16-bit container, as some exporters write.
        image = Image.fromarray((gray.astype(np.uint16) * 16 + 8).astype(np.uint16))
    elif mode == "P":
        image = image.convert("P")
    elif mode != "L":
        image = image.convert(mode)
    buffer = io.BytesIO()
    if fmt == "jpg":
        image.convert("L" if mode in ("L", "LA", "I;16", "P") else "RGB").save(buffer, "JPEG", quality=92)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def _write_encoded(path: Path, gray: np.ndarray, fmt: str, mode: str) -> None:
    path.write_bytes(encode(gray, fmt, mode))


@contextmanager
def _image_writer(workers: int = 0) -> Iterator[Callable[[Path, np.ndarray, str, str], None]]:
    """``write(path, gray, fmt, mode)``: encode and write an image in a pool of processes.

    The phantoms are drawn from one random stream, in order, by the caller; their PNG
    encoding (60 % of `mura synth`'s time, profiled) is a pure function of the pixels, so
    the other cores encode while the caller draws the next ones: same files, byte for byte.
    Every image is written when the ``with`` block ends.

    Args:
        workers: encoding processes; 0 = one per core (1: encode in this process).
    """
    count = worker_count(workers)
    if count <= 1:
        yield _write_encoded
        return
    pending: list[Future[None]] = []
    with ProcessPoolExecutor(count, mp_context=process_context()) as pool:

        def write(path: Path, gray: np.ndarray, fmt: str, mode: str) -> None:
            pending.append(pool.submit(_write_encoded, path, gray, fmt, mode))
            if len(pending) > 8 * count:  # bound the pixels waiting in memory
                pending.pop(0).result()

        yield write
        for future in pending:
            future.result()


def _pick_mode(rng: np.random.Generator) -> str:
    # Mostly L, like MURA; the other modes occur in both classes alike.
    return str(rng.choice(["L"] * 12 + ["RGB", "RGB", "LA", "RGBA", "P", "I;16"]))


def _mark(folder: Path, layout: str, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SYNTHETIC_MARKER).write_text(MARKER_TEXT.format(layout=layout, seed=seed))


FINDINGS_FILE = "synthetic_findings.coco.json"  # beside MURA-v1.1's CSV files


def write_coco(path: Path, images: list[tuple[str, tuple[int, int], list[Finding]]]) -> None:
    """The planted findings as COCO object-detection JSON (FracAtlas ships its boxes the same way).

    Args:
        path: the file to write.
        images: (file name as in the dataset's CSV, (height, width), findings) of every image;
            normal images are listed with no annotation, as COCO does.
    """
    import json

    doc: dict[str, list[dict[str, object]]] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": k + 1, "name": name, "supercategory": "finding"} for k, name in enumerate(FINDING_KINDS)],
    }
    for image_id, (name, (height, width), findings) in enumerate(images, 1):
        doc["images"].append({"id": image_id, "file_name": name, "height": int(height), "width": int(width)})
        for finding in findings:
            x0, y0, x1, y1 = finding.box
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": FINDING_KINDS.index(finding.kind) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    info = {"description": "SYNTHETIC phantoms (not patient data): boxes of the planted findings", "version": "1"}
    path.write_text(json.dumps({"info": info, **doc}, separators=(",", ":")) + "\n")


def write_mura(
    out_dir: Path,
    seed: int,
    patients: int,
    abnormal_rate: float = 0.4,
    valid_fraction: float = 0.15,
    defects: bool = True,
    workers: int = 0,
    conspicuity: float = 1.0,
) -> Path:
    """Write a synthetic dataset in the MURA-v1.1 layout.

    Args:
        out_dir: parent folder; the dataset goes to ``out_dir/MURA-v1.1``.
        seed: everything written is a function of this seed.
        patients: number of patients (each 1-3 studies of 1-4 views).
        abnormal_rate: share of abnormal studies.
        valid_fraction: share of patients in the ``valid`` split.
        defects: also write a few broken files (missing, empty, truncated,
            undecodable) and macOS junk, as found in real downloads.
        workers: PNG-encoding processes (0 = one per core; the files are the same whatever the number).
        conspicuity: size and contrast of the findings (:func:`render_phantom_annotated`).

    Returns:
        The ``MURA-v1.1`` folder.
    """
    rng = np.random.default_rng(seed)
    root = Path(out_dir) / "MURA-v1.1"
    _mark(root, "MURA-v1.1", seed)
    n_valid = max(1, round(patients * valid_fraction))
    listing: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "valid": ([], [])}
    annotated: list[tuple[str, tuple[int, int], list[Finding]]] = []  # (path, (height, width), findings)
    with _image_writer(workers) as write:
        for p in range(patients):
            split = "valid" if p >= patients - n_valid else "train"
            patient = f"patient{p + 1:05d}"
            parts = rng.choice(BODY_PARTS, size=int(rng.integers(1, 4)), replace=True)
            for s, part in enumerate(parts, 1):
                abnormal = bool(rng.random() < abnormal_rate)
                study = f"MURA-v1.1/{split}/{part}/{patient}/study{s}_{'positive' if abnormal else 'negative'}"
                folder = Path(out_dir) / study
                folder.mkdir(parents=True, exist_ok=True)
                listing[split][1].append(f"{study}/,{int(abnormal)}")
                for v in range(1, int(rng.integers(1, 5)) + 1):
                    rel = f"{study}/image{v}.png"
                    gray, findings = render_phantom_annotated(str(part), abnormal, rng, conspicuity)
                    write(Path(out_dir) / rel, gray, "png", _pick_mode(rng))
                    listing[split][0].append(rel)
                    annotated.append((rel, gray.shape, findings))
    if defects:
        paths = listing["train"][0]
        picks = rng.choice(len(paths), size=min(4, len(paths)), replace=False)
        damage = ["missing", "empty", "truncated", "undecodable"]
        for kind, i in zip(damage, sorted(int(k) for k in picks), strict=False):
            file = Path(out_dir) / paths[i]
            if kind == "missing":
                file.unlink()
            elif kind == "empty":
                file.write_bytes(b"")
            elif kind == "truncated":
                file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
            else:
                file.write_bytes(b"this is not an image\n" * 10)
        first_study = Path(out_dir) / paths[0]
        (first_study.parent / f"._{first_study.name}").write_bytes(b"\x00\x05\x16\x07macOS resource fork")
        (first_study.parent / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    for split, (images, studies) in listing.items():
        (root / f"{split}_image_paths.csv").write_text("".join(f"{p}\n" for p in images))
        (root / f"{split}_labeled_studies.csv").write_text("".join(f"{s}\n" for s in studies))
    write_coco(root / FINDINGS_FILE, annotated)
    logger.info("wrote synthetic MURA to %s", root)
    return root


def write_fracture(out_dir: Path, seed: int, images: int, leaked_copies: int = 4, conspicuity: float = 1.0) -> Path:
    """Write a synthetic dataset in the Bone Fracture Multi-Region layout.

    Like the real dataset, a few training images reappear in ``val``/``test``
    as exact or lightly edited copies (the known cross-split leak).

    Args:
        out_dir: parent folder; the dataset goes to
            ``out_dir/Bone_Fracture_Binary_Classification/Bone_Fracture_Binary_Classification``.
        seed: everything written is a function of this seed.
        images: number of distinct images (about 87/8/5 % train/val/test).
        leaked_copies: number of train images copied into val or test.
        conspicuity: size and contrast of the fractures (:func:`render_phantom_annotated`).

    Returns:
        The outer ``Bone_Fracture_Binary_Classification`` folder.
    """
    rng = np.random.default_rng(seed + 1)
    outer = Path(out_dir) / FRACTURE_DIR
    _mark(outer, "Bone Fracture Multi-Region X-ray (Bone_Fracture_Binary_Classification)", seed)
    inner = outer / "Bone_Fracture_Binary_Classification"
    train_files: list[tuple[Path, np.ndarray, str]] = []
    for i in range(images):
        u = rng.random()
        split = "train" if u < 0.87 else ("val" if u < 0.95 else "test")
        fractured = bool(rng.random() < 0.5)
        label_dir = inner / split / ("fractured" if fractured else "not fractured")
        label_dir.mkdir(parents=True, exist_ok=True)
        gray = render_phantom(str(rng.choice(BODY_PARTS)), fractured, rng, conspicuity)
        ext = str(rng.choice(["jpg", "png"]))
        file = label_dir / f"img{i:05d}.{ext}"
        file.write_bytes(encode(gray, ext, "L" if ext == "jpg" else _pick_mode(rng)))
        if split == "train":
            train_files.append((file, gray, ext))
    for split in ("train", "val", "test"):
        for label in ("fractured", "not fractured"):
            (inner / split / label).mkdir(parents=True, exist_ok=True)
    for k in range(min(leaked_copies, len(train_files))):
        file, gray, ext = train_files[int(rng.integers(len(train_files)))]
        target = inner / ("val" if k % 2 == 0 else "test") / file.parent.name
        if k % 2 == 0:  # exact copy under another name
            (target / f"aug_{k}_{file.name}").write_bytes(file.read_bytes())
        else:  # brightness-shifted copy: a near duplicate
            edited = np.clip(gray.astype(np.int16) + 6, 0, 255).astype(np.uint8)
            (target / f"aug_{k}_{file.stem}.png").write_bytes(encode(edited, "png", "L"))
    (inner / "train" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    logger.info("wrote synthetic fracture dataset to %s", outer)
    return outer


def write_synthetic(out_dir: Path, seed: int, sizes: SynthParams) -> dict[str, Path]:
    """Write both synthetic datasets under ``out_dir`` (whose name should say synthetic).

    Args:
        out_dir: destination, e.g. ``data/raw/synthetic``.
        seed: random seed.
        sizes: the ``synth`` section (MURA patients, fracture images, 0 images skips that dataset; conspicuity).

    Returns:
        ``{"mura": path, "fracture": path}`` of the written dataset roots.
    """
    out_dir = Path(out_dir)
    _mark(out_dir, "MURA-v1.1 and Bone Fracture Multi-Region", seed)
    paths = {"mura": write_mura(out_dir, seed=seed, patients=sizes.patients, conspicuity=sizes.conspicuity)}
    if sizes.fracture_images > 0:
        paths["fracture"] = write_fracture(out_dir, seed=seed, images=sizes.fracture_images, conspicuity=sizes.conspicuity)
    else:  # an empty folder: the configured dataset folder exists (a DVC dependency) and holds no dataset;
        # its dotfile (ignored by ingest) keeps it in DVC, which stores no empty folder, so a clone pulls it
        (out_dir / FRACTURE_DIR).mkdir(parents=True, exist_ok=True)
        (out_dir / FRACTURE_DIR / ".keep").write_text("left out: `mura synth --fracture-images 0`\n")
    return paths
