"""The DICOM objects the node returns into the source study (highdicom).

- A Comprehensive 3D SR following TID 1500 ("Imaging Measurement Report"): the device
  as observer, one measurement group with the algorithm's identification
  (``mura-ensemble`` and its registered version, the operating point and threshold
  as parameters), a qualitative evaluation (abnormal / normal at the registered
  operating point), the study probability and each view's probability as numeric
  measurements (each view's referencing its source image), the decision threshold,
  the uncalibrated study probability (for audit),
  the scope warnings and the "pre-screening aid, not a diagnosis" statement as
  text, and VerificationFlag UNVERIFIED.
- One Secondary Capture per view: the ensemble's Grad-CAM map blended over the
  image, with a burned-in legend (probability, model version, "AI result — not
  for diagnosis"), so any viewer shows it.

Both keep the source's patient and study modules (same StudyInstanceUID) with a
new series and new UIDs. Pure functions of their inputs: the node decides the
UIDs and where the objects go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from mura.modeling.averaging import ENSEMBLE
from mura.modeling.boxes import Box
from mura.modeling.gradcam import overlay
from mura.runtime.predictor import StudyResult, ViewResult

__all__ = [
    "DISCLAIMER",
    "MANUFACTURER",
    "ModelIdentity",
    "heatmap_capture",
    "legend_lines",
    "presentation_state",
    "structured_report",
    "view_boxes_of",
]

MANUFACTURER = "mura open-source project"
DISCLAIMER = "AI pre-screening aid, not a diagnosis: a radiologist must read the images."
SYNTHETIC_NOTE = "SYNTHETIC TRAINING DATA: this model was trained on synthetic phantoms and has no clinical validity."
SR_SERIES_DESCRIPTION = "AI result (mura): pre-screening report"
SC_SERIES_DESCRIPTION = "AI result (mura): heatmaps, not for diagnosis"
MAX_SIDE = 1024  # heatmap images are at most this many pixels on their long side

# Our own codes for what no standard terminology names; declared in the SR's
# CodingSchemeIdentificationSequence as DICOM asks of a private scheme.
SCHEME = "99MURA"
PROBABILITY = Code("P-ABN", SCHEME, "Probability of abnormality")
VIEW_PROBABILITY = Code("P-ABN-VIEW", SCHEME, "Probability of abnormality of one view")
RAW_PROBABILITY = Code("P-ABN-RAW", SCHEME, "Uncalibrated probability of abnormality")
THRESHOLD = Code("THRESHOLD", SCHEME, "Decision threshold")
ABNORMAL = Code("263654008", "SCT", "Abnormal")
NORMAL = Code("17621005", "SCT", "Normal")
FINDING_TYPE = Code("928000", "SCT", "Disorder of musculoskeletal system")
PROCEDURE = Code("363680008", "SCT", "Radiographic imaging procedure")
COMMENT = Code("121106", "DCM", "Comment")
NO_UNITS = Code("1", "UCUM", "no units")
BOX_POINT = Code("BOX-POINT", SCHEME, "Operating point of a box")
BOX_POINT_CODES = {
    "high_sensitivity": Code("HIGH-SENS", SCHEME, "High-sensitivity operating point (dotted box)"),
    "high_specificity": Code("HIGH-SPEC", SCHEME, "High-specificity operating point (solid box)"),
}
PEAK_HEAT = Code("PEAK-HEAT", SCHEME, "Peak Grad-CAM heat in the region")
REGION_FINDING = Code("REGION", SCHEME, "Region the model looks at")
PR_SERIES_DESCRIPTION = "AI result (mura): boxes on the images, not for diagnosis"
BOX_COLOR = (0, 229, 255)  # cyan: visible on gray and on the heatmap's colours

ViewBoxes = dict[str, list[Box]]  # box operating point → one view's boxes, in the view's own pixels


@dataclass(frozen=True)
class ModelIdentity:
    """What the results say about the model that produced them.

    Attributes:
        name: registered model name (``mura-ensemble``).
        version: its registered version.
        operating_point: the registered operating point's name.
        threshold: the study threshold at that point.
        synthetic_data: trained on synthetic phantoms (every object then says so).
        device_uid: a stable UID of this node (the SR's device observer).
        station: this node's AE title.
    """

    name: str
    version: str
    operating_point: str
    threshold: float
    synthetic_data: bool
    device_uid: str
    station: str = "MURA"

    @property
    def algorithm(self) -> hd.sr.AlgorithmIdentification:
        parameters = [f"operating point {self.operating_point}", f"threshold {self.threshold:.4f}"]
        return hd.sr.AlgorithmIdentification(name=self.name, version=self.version, parameters=parameters)


def view_boxes_of(result: StudyResult, index: int) -> ViewBoxes:
    """View ``index``'s boxes per box operating point (points without a box left out) (pure)."""
    found = {point: per_view[index] for point, per_view in result.boxes.items() if index < len(per_view)}
    return {point: boxes for point, boxes in found.items() if boxes}


def _rectangle(box: Box) -> np.ndarray:
    """The box as a closed polyline of (column, row) points, DICOM's order for 2D coordinates."""
    x0, y0, x1, y1 = float(box.x0), float(box.y0), float(box.x1), float(box.y1)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)


def _region_groups(sources: Sequence[Dataset], result: StudyResult, model: ModelIdentity) -> list[Any]:
    """One TID 1410 planar-ROI group per box: its rectangle on the source image, operating point and peak heat."""
    groups = []
    for index, source in enumerate(sources):
        for point, boxes in view_boxes_of(result, index).items():
            for number, box in enumerate(boxes, 1):
                region = hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=_rectangle(box),
                    source_image=hd.sr.SourceImageForRegion.from_source_image(source),
                )
                groups.append(
                    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                        tracking_identifier=hd.sr.TrackingIdentifier(
                            uid=hd.UID(), identifier=f"view {index + 1} {point} box {number}"
                        ),
                        referenced_region=region,
                        finding_type=REGION_FINDING,
                        algorithm_id=model.algorithm,
                        measurements=[
                            hd.sr.Measurement(
                                name=PEAK_HEAT, value=round(box.score, 4), unit=NO_UNITS, algorithm_id=model.algorithm
                            )
                        ],
                        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=BOX_POINT, value=BOX_POINT_CODES[point])],
                    )
                )
    return groups


def _text(value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=COMMENT, value=value[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _statements(result: StudyResult, model: ModelIdentity) -> list[str]:
    out = [DISCLAIMER]
    if model.synthetic_data:
        out.append(SYNTHETIC_NOTE)
    out.extend(
        f"Label at operating point {point} (threshold {result.thresholds[point]:.4f}): {label}"
        for point, label in result.labels.items()
    )
    out.extend(f"Scope warning: {w}" for w in result.warnings)
    return out


def structured_report(
    sources: Sequence[Dataset],
    result: StudyResult,
    model: ModelIdentity,
    series_uid: str,
    sop_uid: str,
    series_number: int = 9901,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report of one study; with boxes (``result.boxes``), one image-region group per box.

    Long on purpose: the report's content tree, built in document order (observer, per-view and
    study findings, the disclaimer), as highdicom's templates nest it.

    Args:
        sources: the scored images, in the order of ``result.views``.
        result: the study's answer (the served probabilities).
        model: the model's identity and operating point.
        series_uid: the new series' UID; ``sop_uid``: the report's.
        series_number: the new series' number.
    """
    if len(sources) != len(result.views):
        raise ValueError(f"{len(sources)} source images for {len(result.views)} scored views")
    label = result.labels[model.operating_point]
    measurements = [
        hd.sr.Measurement(name=PROBABILITY, value=round(result.probability, 6), unit=NO_UNITS, algorithm_id=model.algorithm),
        hd.sr.Measurement(name=THRESHOLD, value=round(model.threshold, 6), unit=NO_UNITS, algorithm_id=model.algorithm),
    ]
    if result.probability_raw is not None:  # the ensemble's average before calibration, for audit
        raw = round(result.probability_raw, 6)
        measurements.append(hd.sr.Measurement(name=RAW_PROBABILITY, value=raw, unit=NO_UNITS, algorithm_id=model.algorithm))
    for source, view in zip(sources, result.views, strict=True):
        image = hd.sr.SourceImageForMeasurement.from_source_image(source)
        measurements.append(
            hd.sr.Measurement(
                name=VIEW_PROBABILITY,
                value=round(view.probability, 6),
                unit=NO_UNITS,
                algorithm_id=model.algorithm,
                referenced_images=[image],
            )
        )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="study assessment"),
        finding_type=FINDING_TYPE,
        algorithm_id=model.algorithm,
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=codes.DCM.Finding, value=ABNORMAL if label == "abnormal" else NORMAL)
        ],
    )
    group[0].ContentSequence.extend(_text(s) for s in _statements(result, model))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=model.device_uid,
            name=model.station,
            manufacturer_name=MANUFACTURER,
            model_name=f"{model.name} v{model.version}",
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE,
        imaging_measurements=[group, *_region_groups(sources, result, model)],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(sources),
        content=report[0],
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=SR_SERIES_DESCRIPTION,
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "mura project codes"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def legend_lines(view: ViewResult, result: StudyResult, model: ModelIdentity) -> list[str]:
    """The legend burned into a heatmap image (pure; the synthetic warning first when it applies)."""
    label = result.labels[model.operating_point]
    lines = ["AI RESULT - NOT FOR DIAGNOSIS"]
    if model.synthetic_data:
        lines.append("SYNTHETIC TRAINING DATA - NO CLINICAL VALIDITY")
    lines += [
        f"P(abnormal) this view {view.probability:.2f}   study {result.probability:.2f}",
        f"study: {label} at {model.operating_point} (threshold {model.threshold:.2f})",
        f"{model.name} v{model.version}   Grad-CAM heatmap",
    ]
    return lines


def _burn_legend(rgb: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """A black band above the image with the legend in white; the image itself is never covered.

    The font shrinks until the longest line fits the image's width; an image too narrow even
    for the smallest font is centred on a wider canvas, so no line is ever cut.
    """
    height, width = rgb.shape[:2]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    size = max(9, min(28, width // 24))
    font = ImageFont.load_default(size=size)
    while size > 9 and max(probe.textlength(line, font=font) for line in lines) > width - size:
        size -= 1
        font = ImageFont.load_default(size=size)
    text_width = int(max(probe.textlength(line, font=font) for line in lines)) + size
    canvas_width = max(width, text_width)
    band = int(len(lines) * size * 1.35 + size)
    canvas = Image.new("RGB", (canvas_width, height + band))
    canvas.paste(Image.fromarray(rgb), ((canvas_width - width) // 2, band))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((size // 2, size // 2 + int(k * size * 1.35)), line, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def heatmap_capture(
    source: Dataset,
    view: ViewResult,
    result: StudyResult,
    model: ModelIdentity,
    series_uid: str,
    sop_uid: str,
    instance_number: int,
    series_number: int = 9902,
    boxes: ViewBoxes | None = None,
) -> hd.sc.SCImage:
    """One view's Secondary Capture: the ensemble heatmap over the image, its boxes and the legend burned in.

    Raises:
        ValueError: the view was scored without heatmaps.
    """
    if ENSEMBLE not in view.heatmaps:
        raise ValueError(f"{view.name} has no heatmap")
    gray = view.gray
    scale = MAX_SIDE / max(gray.shape)
    if scale < 1:
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        gray = np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BILINEAR))
    drawn = _draw_boxes(overlay(gray, view.heatmaps[ENSEMBLE]), boxes or {}, gray.shape[0] / view.gray.shape[0])
    lines = legend_lines(view, result, model) + (["boxes: dotted = high sensitivity, solid = high specificity"] if boxes else [])
    pixels = _burn_legend(drawn, lines)
    orientation = tuple(str(v) for v in source.get("PatientOrientation", []) or [])
    side = str(source.get("Laterality", "") or source.get("ImageLaterality", "") or "")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        patient_orientation=orientation if len(orientation) == 2 else ("", ""),
        laterality=side if side in ("R", "L") else None,
        series_description=SC_SERIES_DESCRIPTION,
    )
    if side not in ("R", "L"):
        sc.Laterality = ""  # type 2C: present and empty when the source does not say
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = "Grad-CAM heatmap of the mura ensemble blended over the source image"
    return sc


def _draw_boxes(rgb: np.ndarray, boxes: ViewBoxes, scale: float) -> np.ndarray:
    """Boxes drawn on an RGB image: dotted at the high-sensitivity point, solid (thicker) at the high-specificity one."""
    if not boxes:
        return rgb
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(rgb.shape[:2]) / 200))
    for point, found in boxes.items():
        for box in found:
            x0, y0 = box.x0 * scale, box.y0 * scale
            x1, y1 = max(x0, box.x1 * scale - 1), max(y0, box.y1 * scale - 1)
            if point == "high_specificity":
                draw.rectangle((x0, y0, x1, y1), outline=BOX_COLOR, width=width + 1)
                continue
            dash = 3 * width
            for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
                length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
                for start in np.arange(0.0, length, 2 * dash):
                    t0, t1 = start / length if length else 0.0, min(1.0, (start + dash) / length) if length else 1.0
                    draw.line(
                        (
                            a[0] + (b[0] - a[0]) * t0,
                            a[1] + (b[1] - a[1]) * t0,
                            a[0] + (b[0] - a[0]) * t1,
                            a[1] + (b[1] - a[1]) * t1,
                        ),
                        fill=BOX_COLOR,
                        width=width,
                    )
    return np.asarray(image)


def presentation_state(
    source: Dataset,
    boxes: ViewBoxes,
    model: ModelIdentity,
    series_uid: str,
    sop_uid: str,
    instance_number: int,
    series_number: int = 9903,
) -> hd.pr.GrayscaleSoftcopyPresentationState | None:
    """A Grayscale Softcopy Presentation State drawing one view's boxes on its original image (None without a box).

    One per view (a presentation state's images share their size). Viewers that support GSPS show
    the boxes over the source image itself: one graphic layer per box operating point
    (``MURA_SENSITIVE``, ``MURA_SPECIFIC``), each box a closed polyline in the image's pixels with
    a short label.
    """
    layers = {
        "high_sensitivity": hd.pr.GraphicLayer("MURA_SENSITIVE", 1, "AI boxes at the high-sensitivity operating point"),
        "high_specificity": hd.pr.GraphicLayer("MURA_SPECIFIC", 2, "AI boxes at the high-specificity operating point"),
    }
    annotations = []
    for point, found in boxes.items():
        if not found:
            continue
        objects = [hd.pr.GraphicObject(hd.pr.GraphicTypeValues.POLYLINE, _rectangle(b), "PIXEL") for b in found]
        labels = [
            hd.pr.TextObject(
                f"AI {point.replace('_', ' ')} {b.score:.2f}",
                "PIXEL",
                anchor_point=(float(b.x0), float(b.y0)),
                anchor_point_visible=False,
            )
            for b in found
        ]
        annotations.append(hd.pr.GraphicAnnotation([source], layers[point], graphic_objects=objects, text_objects=labels))
    if not annotations:
        return None
    used = {a.GraphicLayer for a in annotations}
    state = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[source],
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=f"{model.name} v{model.version}",
        software_versions=str(model.version),
        device_serial_number=model.station,
        content_label="MURA_BOXES",
        content_description=("SYNTHETIC MODEL: " if model.synthetic_data else "") + "AI boxes, not for diagnosis",
        graphic_annotations=annotations,
        graphic_layers=[layer for layer in layers.values() if layer.GraphicLayer in used],
        series_description=PR_SERIES_DESCRIPTION,
    )
    side = str(source.get("Laterality", "") or source.get("ImageLaterality", "") or "")
    state.Laterality = side if side in ("R", "L") else ""  # type 2C in the general series: the source's, or empty
    return state
