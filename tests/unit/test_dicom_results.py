"""The node's result objects (SR and SC) are valid for their IODs and say what they must."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from mura.data.dicom_phantoms import write_phantom_study
from mura.integrations.dicom_results import (
    DISCLAIMER,
    ModelIdentity,
    heatmap_capture,
    legend_lines,
    structured_report,
)
from mura.runtime.predictor import StudyResult, ViewResult


def _result(n: int, warnings: tuple[str, ...] = ()) -> StudyResult:
    rng = np.random.default_rng(0)
    views = [
        ViewResult(
            f"v{k}",
            0.2 + 0.3 * k,
            {"a": 0.5},
            "dicom",
            np.full((90, 70), 100, np.uint8),
            {"ensemble": rng.random((8, 8))},
            warnings,
        )
        for k in range(n)
    ]
    probability = float(np.mean([v.probability for v in views]))
    thresholds = {"default": 0.5, "high_sensitivity": 0.3}
    labels = {k: "abnormal" if probability >= t else "normal" for k, t in thresholds.items()}
    return StudyResult(probability, labels, thresholds, "default", {"a": 0.5}, views, "XR_WRIST", True)


MODEL = ModelIdentity("mura-ensemble", "7", "default", 0.5, True, generate_uid())


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    study = write_phantom_study(tmp_path_factory.mktemp("src"), 2, size=64, syntaxes=("explicit", "rle"))
    return [pydicom.dcmread(p) for p in study.files]


def _content(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    out: list[pydicom.Dataset] = []
    stack = list(ds.ContentSequence)
    while stack:
        item = stack.pop()
        out.append(item)
        stack.extend(item.get("ContentSequence", []))
    return out


def test_report_keeps_the_study_and_carries_probability_label_and_statements(sources: list[pydicom.Dataset]) -> None:
    result = _result(2, warnings=("body part KNEE is outside",))
    sr = structured_report(sources, result, MODEL, generate_uid(), generate_uid())
    assert sr.StudyInstanceUID == sources[0].StudyInstanceUID and sr.PatientID == sources[0].PatientID
    assert sr.SeriesInstanceUID != sources[0].SeriesInstanceUID and sr.VerificationFlag == "UNVERIFIED"
    items = _content(sr)
    numbers = {
        i.ConceptNameCodeSequence[0].CodeMeaning: float(i.MeasuredValueSequence[0].NumericValue)
        for i in items
        if i.ValueType == "NUM" and "of one view" not in i.ConceptNameCodeSequence[0].CodeMeaning
    }
    assert numbers["Probability of abnormality"] == pytest.approx(result.probability, abs=1e-6)
    assert numbers["Decision threshold"] == 0.5
    finding = [
        i.ConceptCodeSequence[0].CodeMeaning
        for i in items
        if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeMeaning == "Finding"
    ]
    assert result.label.capitalize() in finding
    texts = [str(i.TextValue) for i in items if i.ValueType == "TEXT"]
    assert DISCLAIMER in texts and any("SYNTHETIC" in t for t in texts) and any("KNEE" in t for t in texts)
    assert any(str(i.TextValue) == "7" for i in items if i.ValueType == "TEXT")  # algorithm version


def test_report_needs_one_source_per_view(sources: list[pydicom.Dataset]) -> None:
    with pytest.raises(ValueError, match="source images"):
        structured_report(sources[:1], _result(2), MODEL, generate_uid(), generate_uid())


def test_heatmap_capture_is_rgb_with_a_legend_band(sources: list[pydicom.Dataset]) -> None:
    result = _result(2)
    sc = heatmap_capture(sources[0], result.views[0], result, MODEL, generate_uid(), generate_uid(), 1)
    assert sc.StudyInstanceUID == sources[0].StudyInstanceUID and sc.BurnedInAnnotation == "YES"
    # 70 px is too narrow for the legend: the canvas widens rather than cut a line.
    assert sc.PhotometricInterpretation == "RGB" and sc.Rows > 90 and sc.Columns > 70
    lines = legend_lines(result.views[0], result, MODEL)
    assert lines[0] == "AI RESULT - NOT FOR DIAGNOSIS" and "SYNTHETIC" in lines[1] and "v7" in lines[-1]
    with pytest.raises(ValueError, match="no heatmap"):
        heatmap_capture(sources[0], ViewResult("x", 0.1, {}, "dicom", np.zeros((4, 4), np.uint8)), result, MODEL, "1.2", "1.3", 1)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed (scripts/ensure-system.sh installs it)")
def test_dciodvfy_finds_no_errors(sources: list[pydicom.Dataset], tmp_path: Path) -> None:
    result = _result(2)
    objects: list[pydicom.Dataset] = [structured_report(sources, result, MODEL, generate_uid(), generate_uid())]
    objects += [
        heatmap_capture(s, v, result, MODEL, generate_uid(), generate_uid(), k)
        for k, (s, v) in enumerate(zip(sources, result.views, strict=True), 1)
    ]
    for k, ds in enumerate(objects):
        path = tmp_path / f"{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        assert not [line for line in check.stderr.splitlines() if line.startswith("Error")], check.stderr


def test_an_assessment_sr_is_read_back_with_its_reference_label_and_reviewer(
    sources: list[pydicom.Dataset], tmp_path: Path
) -> None:
    from mura.integrations.dicom_assessment import (
        ACCEPTED,
        MODIFIED,
        AssessmentError,
        assessment_report,
        read_assessment,
    )
    from mura.integrations.dicom_results import ABNORMAL

    ours = structured_report(sources, _result(2), MODEL, generate_uid(), generate_uid())
    modified = assessment_report(ours, MODIFIED, "Doe^Jane", generate_uid(), generate_uid(), ABNORMAL, "fracture of the radius")
    path = tmp_path / "assessment.dcm"
    modified.save_as(path, enforce_file_format=True)
    read = read_assessment(pydicom.dcmread(path))
    assert ours.SOPInstanceUID in read.referenced and read.assessment == "modified" and read.label == "abnormal"
    assert read.reviewer == "dicom:Doe^Jane" and read.reason == "fracture of the radius"
    accepted = read_assessment(assessment_report(ours, ACCEPTED, "Doe^Jane", generate_uid(), generate_uid()))
    assert accepted.assessment == "accept" and accepted.label is None
    with pytest.raises(AssessmentError, match="not verified"):
        read_assessment(ours)  # our own SR: UNVERIFIED
    with pytest.raises(AssessmentError, match="Finding"):
        read_assessment(assessment_report(ours, MODIFIED, "Doe^Jane", generate_uid(), generate_uid()))
    with pytest.raises(AssessmentError, match="structured report"):
        read_assessment(sources[0])
    if shutil.which("dciodvfy"):
        check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        assert not [line for line in check.stderr.splitlines() if line.startswith("Error")], check.stderr


def _with_boxes(result: StudyResult) -> StudyResult:
    import dataclasses

    from mura.modeling.boxes import Box

    return dataclasses.replace(
        result,
        boxes={
            "high_sensitivity": [[Box(10, 20, 40, 60, 0.8), Box(40, 5, 55, 15, 0.6)], []],
            "high_specificity": [[Box(12, 22, 30, 50, 0.9)], []],
        },
    )


def test_boxes_go_into_the_sr_as_regions_on_their_source_the_capture_and_a_presentation_state(
    sources: list[pydicom.Dataset], tmp_path: Path
) -> None:
    from mura.integrations.dicom_results import BOX_COLOR, presentation_state

    result = _with_boxes(_result(2))
    sr = structured_report(sources, result, MODEL, generate_uid(), generate_uid())
    regions = [item for item in _content(sr) if item.ValueType == "SCOORD"]
    assert len(regions) == 3 and all(r.GraphicType == "POLYLINE" and len(r.GraphicData) == 10 for r in regions)
    referenced = {r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in regions}
    assert referenced == {sources[0].SOPInstanceUID}  # every box on the first view, referencing it
    assert [float(v) for v in regions[0].GraphicData][:4] in ([10, 20, 40, 20], [40, 5, 55, 5], [12, 22, 30, 22])
    first = {point: per_view[0] for point, per_view in result.boxes.items()}
    capture = heatmap_capture(sources[0], result.views[0], result, MODEL, generate_uid(), generate_uid(), 1, boxes=first)
    cyan = (capture.pixel_array.reshape(-1, 3) == BOX_COLOR).all(axis=1).sum()
    assert cyan > 20
    plain = heatmap_capture(sources[0], result.views[0], result, MODEL, generate_uid(), generate_uid(), 1)
    assert (plain.pixel_array.reshape(-1, 3) == BOX_COLOR).all(axis=1).sum() < (
        capture.pixel_array.reshape(-1, 3) == BOX_COLOR
    ).all(axis=1).sum()
    gsps = presentation_state(sources[0], first, MODEL, generate_uid(), generate_uid(), 1)
    assert gsps is not None and gsps.StudyInstanceUID == sources[0].StudyInstanceUID and gsps.Modality == "PR"
    assert {layer.GraphicLayer for layer in gsps.GraphicLayerSequence} == {"MURA_SENSITIVE", "MURA_SPECIFIC"}
    objects = [o for a in gsps.GraphicAnnotationSequence for o in a.GraphicObjectSequence]
    assert len(objects) == 3 and all(o.GraphicType == "POLYLINE" and o.GraphicAnnotationUnits == "PIXEL" for o in objects)
    assert presentation_state(sources[1], {"high_sensitivity": []}, MODEL, generate_uid(), generate_uid(), 2) is None
    if shutil.which("dciodvfy"):
        for name, ds in (("sr", sr), ("gsps", gsps), ("sc", capture)):
            path = tmp_path / f"{name}.dcm"
            ds.save_as(path, enforce_file_format=True)
            check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
            assert not [line for line in check.stderr.splitlines() if line.startswith("Error")], (name, check.stderr)
