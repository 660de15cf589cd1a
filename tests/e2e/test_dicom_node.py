"""The DICOM node against real DICOM software: DCMTK's storescu and dsrdump, dciodvfy, Orthanc as the PACS."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from mura.data.dicom_phantoms import phantom_dataset, write_phantom_study
from mura.deploy.orthanc import Orthanc
from mura.deploy.processes import free_port, wait_tcp

pytestmark = pytest.mark.slow

PROBABILITY = "Probability of abnormality"
SIDE = 64  # phantom long side: tiny images keep the test fast
STORESCU = "/usr/bin/storescu"  # DCMTK's (pynetdicom puts its own `storescu` on the venv's PATH)


def _storescu(
    port: int, files: list[Path], calling: str = "STORESCU", propose: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """DCMTK's storescu: one association for all files (uncompressed unless ``propose`` says otherwise)."""
    cmd = [STORESCU, "-aet", calling, "-aec", "MURA", *propose, "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _storescu_each(port: int, files: list[Path], calling: str = "STORESCU") -> None:
    """One association per file, proposing the file's own syntax (storescu proposes one compressed syntax at a time)."""
    options = {pydicom.uid.RLELossless: ("-xr",), pydicom.uid.JPEG2000Lossless: ("-xv",)}
    for path in files:
        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        done = _storescu(port, [path], calling, options.get(syntax, ()))
        assert done.returncode == 0, done.stdout + done.stderr


def _count(views: int) -> int:
    """Result objects of a study: its SR, and per view a heatmap capture and a presentation state of its boxes.

    The fixture's model passes the high-sensitivity threshold on every study and its box level is 0 (tests/e2e/conftest.py):
    every view has a box.
    """
    return 1 + 2 * views


def _wait_results(pacs: Orthanc, study_uid: str, expected: int, timeout: float = 90) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ours = [i for i in pacs.instances(study_uid) if i["modality"] in ("SR", "OT", "PR") or _is_result(pacs, i)]
        if len(ours) >= expected:
            time.sleep(0.5)  # let a duplicate, if any, arrive too
            return [i for i in pacs.instances(study_uid) if _is_result(pacs, i)]
        time.sleep(0.5)
    raise AssertionError(f"no {expected} result objects in the PACS within {timeout} s: {pacs.instances(study_uid)}")


def _is_result(pacs: Orthanc, instance: dict[str, Any]) -> bool:
    if "manufacturer" not in instance:
        tags = pacs.request("GET", f"/instances/{instance['id']}/simplified-tags")
        instance["manufacturer"] = tags.get("Manufacturer", "")
        instance["sop_class"] = tags.get("SOPClassUID", "")
    return bool(instance["manufacturer"] == "mura open-source project")


def _download(pacs: Orthanc, instance: dict[str, Any], folder: Path) -> Path:
    path = folder / f"{instance['id']}.dcm"
    path.write_bytes(pacs.request("GET", f"/instances/{instance['id']}/file", raw=True))
    return path


def _sr_numbers(ds: pydicom.Dataset) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "NUM":
                name = item.ConceptNameCodeSequence[0].CodeMeaning
                out.setdefault(name, []).append(float(item.MeasuredValueSequence[0].NumericValue))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(ds.ContentSequence)
    return out


def _sr_texts(ds: pydicom.Dataset) -> list[str]:
    out: list[str] = []

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "TEXT":
                out.append(str(item.TextValue))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(ds.ContentSequence)
    return out


@pytest.fixture(scope="module")
def predictor(registered: dict[str, Any]):
    from mura.api import Predictor

    return Predictor.load("models:/mura-ensemble@champion", tracking_uri=registered["uri"])


@pytest.fixture(scope="module")
def node_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, node_port: int) -> Iterator[Orthanc]:
    with Orthanc(tmp_path_factory.mktemp("orthanc"), {"mura": ("MURA", node_port)}) as server:
        yield server


def _node(predictor: Any, spool: Path, port: int, **settings: Any) -> Any:
    from mura.integrations.dicom_node import DicomNode, NodeSettings

    # A study is complete after 4 s without a new instance: one association per view (storescu proposes one
    # compressed syntax at a time) can take over a second each on a loaded 2-core CI machine (seen: a 3-view
    # study answered as 2 + 1 views with 1 s).
    node = DicomNode(NodeSettings(spool=spool, port=port, **{"idle_seconds": 4.0, "retry_seconds": 0.5, **settings}), predictor)
    node.start()
    wait_tcp(port, 10, what="the DICOM node")
    return node


@pytest.fixture(scope="module")
def node(predictor, pacs: Orthanc, node_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    node = _node(
        predictor,
        tmp_path_factory.mktemp("spool"),
        node_port,
        destinations=(pacs.address,),
        allow=("STORESCU", "SENDER2", "PACS"),
        feedback_dir=tmp_path_factory.mktemp("feedback"),
    )
    yield node
    node.stop()


def test_a_study_from_storescu_comes_back_as_sr_and_heatmaps_in_the_same_study(
    node, pacs: Orthanc, predictor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # every logger: ours, pynetdicom's, highdicom's
    study = write_phantom_study(tmp_path / "study", 3, "WRIST", True, seed=1, syntaxes=("explicit", "rle", "j2k"), size=SIDE)
    for path in study.files:  # the PACS holds the originals, as in a department
        pacs.upload(path.read_bytes())
    _storescu_each(node.settings.port, list(study.files))
    results = _wait_results(pacs, study.study_uid, _count(3))
    classes = sorted(r["sop_class"] for r in results)
    gsps = pydicom.uid.GrayscaleSoftcopyPresentationStateStorage
    assert classes == sorted([pydicom.uid.Comprehensive3DSRStorage] + [pydicom.uid.SecondaryCaptureImageStorage, gsps] * 3)
    assert len(pacs.instances(study.study_uid)) == 3 + _count(3)  # originals + SR + 3 SC + 3 PR, one study
    files = [_download(pacs, r, tmp_path) for r in results]
    for path in files:  # every object we write is valid for its IOD
        check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"
    sr_path = next(p for p, r in zip(files, results, strict=True) if r["sop_class"] == pydicom.uid.Comprehensive3DSRStorage)
    sr = pydicom.dcmread(sr_path)
    assert sr.StudyInstanceUID == study.study_uid and sr.PatientID == "PHANTOM-0001"
    assert sr.VerificationFlag == "UNVERIFIED"
    expected = predictor.predict_study([str(p) for p in study.files])  # what `mura predict` answers
    numbers = _sr_numbers(sr)
    assert numbers[PROBABILITY] == [pytest.approx(expected.probability, abs=1e-6)]
    assert sorted(numbers[f"{PROBABILITY} of one view"]) == pytest.approx(sorted(v.probability for v in expected.views), abs=1e-6)
    texts = " ".join(_sr_texts(sr))
    assert "not a diagnosis" in texts and "SYNTHETIC TRAINING DATA" in texts
    tree = subprocess.run(["dsrdump", str(sr_path)], capture_output=True, text=True, check=True).stdout
    assert "Imaging Measurement Report" in tree and PROBABILITY in tree and "mura-ensemble" in tree
    evidence = {
        i.ReferencedSOPInstanceUID
        for s in sr.CurrentRequestedProcedureEvidenceSequence
        for r in s.ReferencedSeriesSequence
        for i in r.ReferencedSOPSequence
    }
    assert evidence == {pydicom.dcmread(p).SOPInstanceUID for p in study.files}
    # The boxes: image-region findings (SCOORD) on each source image in the SR, and a presentation state per view.
    assert "SCOORD" in tree and "POLYLINE" in tree
    states = [pydicom.dcmread(p) for p, r in zip(files, results, strict=True) if r["sop_class"] == gsps]
    on = {s.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID for s in states}
    assert on == evidence and all(
        s.GraphicAnnotationSequence[0].GraphicObjectSequence[0].GraphicType == "POLYLINE" for s in states
    )
    # Nothing identifying in the node's log: no UID, no patient data.
    logged = caplog.text
    assert "received an instance of study" in logged
    assert study.study_uid not in logged and "PHANTOM" not in logged
    assert not any(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID in logged for p in study.files)


def test_orthanc_forwards_a_study_to_the_node(node, pacs: Orthanc, tmp_path: Path) -> None:
    study = write_phantom_study(tmp_path / "study", 2, "HAND", False, seed=2, size=SIDE)
    ids = [pacs.upload(p.read_bytes()) for p in study.files]
    pacs.request("POST", "/modalities/mura/store", {"Resources": ids, "Synchronous": True})
    results = _wait_results(pacs, study.study_uid, _count(2))
    assert len(results) == _count(2)


def test_views_over_two_associations_and_a_resent_study_give_one_result_set(node, pacs: Orthanc, tmp_path: Path) -> None:
    study = write_phantom_study(tmp_path / "study", 3, "ELBOW", False, seed=3, size=SIDE)
    files = list(study.files)
    assert _storescu(node.settings.port, files[:2]).returncode == 0
    assert _storescu(node.settings.port, files[2:], calling="SENDER2").returncode == 0
    results = _wait_results(pacs, study.study_uid, _count(3))
    assert len(results) == _count(3)
    assert _storescu(node.settings.port, files).returncode == 0  # the same study again
    time.sleep(node.settings.idle_seconds + 2)
    assert len([i for i in pacs.instances(study.study_uid) if _is_result(pacs, i)]) == _count(3)


def test_refusals_unknown_ae_ct_and_a_corrupt_instance(node, pacs: Orthanc, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="mura")
    study = write_phantom_study(tmp_path / "study", 3, "FOREARM", False, seed=4, size=SIDE)
    files = list(study.files)
    refused = _storescu(node.settings.port, files[:1], calling="INTRUDER")
    assert refused.returncode != 0 and "Rejected" in (refused.stdout + refused.stderr)
    # A CT image: refused with "SOP class not supported" (0x0122), and the node keeps working.
    first = pydicom.dcmread(files[0])
    ct = phantom_dataset(np.full((SIDE, SIDE), 90, np.uint8), study.study_uid, first.SeriesInstanceUID, 9, modality="CT")
    ct_path = tmp_path / "ct.dcm"
    ct.save_as(ct_path, enforce_file_format=True)
    answered = subprocess.run(
        [STORESCU, "-v", "-aet", "STORESCU", "-aec", "MURA", "127.0.0.1", str(node.settings.port), str(ct_path)],
        capture_output=True,
        text=True,
    )
    assert answered.returncode != 0 and "Refused: SOPClassNotSupported" in answered.stderr  # status 0x0122
    # A corrupt instance (its pixel data cut short) in the study: skipped, the rest scored.
    broken = pydicom.dcmread(files[1])
    broken.PixelData = broken.PixelData[: len(broken.PixelData) // 3]
    broken_path = tmp_path / "broken.dcm"
    broken.save_as(broken_path, enforce_file_format=True)
    sent = _storescu(node.settings.port, [files[0], broken_path, files[2]])
    assert sent.returncode == 0, sent.stdout + sent.stderr
    results = _wait_results(pacs, study.study_uid, _count(2))
    assert len(results) == _count(2)  # the broken view was skipped
    assert "skipped" in caplog.text and broken.SOPInstanceUID not in caplog.text and "PHANTOM" not in caplog.text
    assert "INTRUDER" not in caplog.text or "refused" in caplog.text


def test_stow_rs_to_orthanc_dicomweb(predictor, pacs: Orthanc, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MURA_STOW_AUTH", f"{pacs.user}:{pacs.password}")
    port = free_port()
    node = _node(predictor, tmp_path / "spool", port, stow_urls=(f"{pacs.url}/dicom-web",))
    try:
        study = write_phantom_study(tmp_path / "study", 2, "SHOULDER", False, seed=5, size=SIDE)
        assert _storescu(port, list(study.files)).returncode == 0
        assert len(_wait_results(pacs, study.study_uid, _count(2))) == _count(2)
    finally:
        node.stop()


def test_a_destination_that_is_down_gets_the_results_when_it_is_back(predictor, tmp_path: Path) -> None:
    port = free_port()
    later = Orthanc(tmp_path / "later", {"mura": ("MURA", port)})  # its ports chosen now, started later
    node = _node(predictor, tmp_path / "spool", port, destinations=(later.address,))
    try:
        study = write_phantom_study(tmp_path / "study", 2, "HUMERUS", False, seed=6, size=SIDE)
        assert _storescu(port, list(study.files)).returncode == 0
        deadline = time.monotonic() + 60
        while not node.spool.undelivered() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # a few failed attempts
        assert node.spool.undelivered(), "the result should wait in the spool while the PACS is down"
        with later:
            assert len(_wait_results(later, study.study_uid, _count(2))) == _count(2)
            time.sleep(1)
            assert not node.spool.undelivered()
    finally:
        node.stop()


def test_kill_9_after_acknowledging_loses_and_repeats_nothing(registered: dict[str, Any], pacs: Orthanc, tmp_path: Path) -> None:
    """The node process is killed right after the C-STORE is acknowledged; the restarted node answers once."""
    port = free_port()
    spool = tmp_path / "spool"
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["uri"]}
    cmd = [
        sys.executable,
        "-m",
        "mura.cli",
        "dicom-node",
        "--port",
        str(port),
        "--spool",
        str(spool),
        "--destination",
        pacs.address,
        "--idle-seconds",
        "3",
    ]

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "node.log", "ab"))  # noqa: SIM115
        wait_tcp(port, 120, proc, "mura dicom-node")
        return proc

    proc = start()
    study = write_phantom_study(tmp_path / "study", 3, "FINGER", True, seed=7, size=SIDE)
    assert _storescu(port, list(study.files)).returncode == 0
    proc.send_signal(signal.SIGKILL)  # acknowledged, not yet scored (idle time not over)
    proc.wait()
    assert list((spool / "incoming").glob("*/*.dcm")), "acknowledged instances must be on disk"
    assert not [i for i in pacs.instances(study.study_uid) if _is_result(pacs, i)]
    proc = start()
    try:
        results = _wait_results(pacs, study.study_uid, _count(3))
        time.sleep(2)
        assert len(results) == _count(3) and len([i for i in pacs.instances(study.study_uid) if _is_result(pacs, i)]) == _count(3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_orthanc_explorer_shows_the_study_with_our_series(node, pacs: Orthanc, tmp_path: Path) -> None:
    """What a PACS user sees: the study with the originals, our report series and our heatmap series (screenshot)."""
    from playwright.sync_api import sync_playwright

    from tests.e2e.test_browser import ARGS, ARTIFACTS, CHROMIUM

    study = write_phantom_study(tmp_path / "study", 3, "WRIST", True, seed=8, size=256)
    for path in study.files:
        pacs.upload(path.read_bytes())
    _storescu(node.settings.port, list(study.files))
    _wait_results(pacs, study.study_uid, _count(3))
    study_id = pacs.study_id(study.study_uid)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(
                viewport={"width": 1100, "height": 800}, http_credentials={"username": pacs.user, "password": pacs.password}
            )
            page.goto(f"{pacs.url}/app/explorer.html#study?uuid={study_id}")
            page.get_by_text("AI result (mura): pre-screening report").first.wait_for(timeout=30_000)
            page.get_by_text("AI result (mura): heatmaps, not for diagnosis").first.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "orthanc-study.png"), full_page=True)
            # One heatmap as Orthanc renders it (its instance preview): the overlay and the burned-in legend.
            capture = next(
                i
                for i in _wait_results(pacs, study.study_uid, _count(3))
                if i["sop_class"] == pydicom.uid.SecondaryCaptureImageStorage
            )
            page.goto(f"{pacs.url}/instances/{capture['id']}/preview")
            page.wait_for_load_state()
            page.screenshot(path=str(ARTIFACTS / "orthanc-heatmap.png"))
        finally:
            browser.close()


def test_a_radiologists_assessment_comes_back_through_the_pacs_and_is_recorded(
    node, pacs: Orthanc, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Our SR → Orthanc; a verified assessment SR referencing it, stored in Orthanc and forwarded to the node."""
    from mura.integrations.dicom_assessment import REJECTED, assessment_report
    from mura.operations.feedback import FeedbackStore

    caplog.set_level(logging.INFO, logger="mura")
    study = write_phantom_study(tmp_path / "study", 2, "WRIST", True, seed=11, size=SIDE)
    assert _storescu(node.settings.port, list(study.files)).returncode == 0
    results = _wait_results(pacs, study.study_uid, _count(2))
    ours = pydicom.dcmread(_download(pacs, next(r for r in results if r["modality"] == "SR"), tmp_path))
    store = FeedbackStore(node.settings.feedback_dir)
    answer = store.answer(store.key(ours.SOPInstanceUID))
    assert answer is not None and answer.entry_point == "dicom" and len(store.images_of(answer.answer_id)) == 2
    assessment = assessment_report(
        ours, REJECTED, "Doe^Jane", pydicom.uid.generate_uid(), pydicom.uid.generate_uid(), reason="clearly normal"
    )
    path = tmp_path / "assessment.dcm"
    assessment.save_as(path, enforce_file_format=True)
    check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    assert not [line for line in check.stderr.splitlines() if line.startswith("Error")], check.stderr
    stored = pacs.upload(path.read_bytes())  # the workstation stores it in the PACS, which routes it to the node
    pacs.request("POST", "/modalities/mura/store", {"Resources": [stored], "Synchronous": True})
    reviewed = store.reviewed()
    row = reviewed[reviewed["answer_id"] == answer.answer_id].iloc[0]
    assert row["source"] == "dicom" and row["assessment"] == "reject" and row["reviewer"] == "dicom:Doe^Jane"
    assert row["radiologist_label"] != answer.label and not row["agreed"] and row["reason"] == "clearly normal"
    # An assessment of a result this node never sent, and an SR that is no assessment: refused, with why.
    other = ours.copy()
    other.SOPInstanceUID = pydicom.uid.generate_uid()
    stray = assessment_report(other, REJECTED, "Doe^Jane", pydicom.uid.generate_uid(), pydicom.uid.generate_uid())
    unverified = assessment_report(ours, REJECTED, "Doe^Jane", pydicom.uid.generate_uid(), pydicom.uid.generate_uid())
    unverified.VerificationFlag = "UNVERIFIED"
    del unverified.VerifyingObserverSequence
    for name, ds, status, why in (
        ("stray", stray, "0xc212", "references no result of this node"),
        ("unverified", unverified, "0xc211", "not an assessment: not verified"),
    ):
        file = tmp_path / f"{name}.dcm"
        ds.save_as(file, enforce_file_format=True)
        answered = subprocess.run(  # -d: the whole C-STORE response, its status and ErrorComment
            [STORESCU, "-d", "-aet", "STORESCU", "-aec", "MURA", "127.0.0.1", str(node.settings.port), str(file)],
            capture_output=True,
            text=True,
        )
        response = answered.stdout + answered.stderr
        assert answered.returncode != 0 and status in response.lower() and why in response, response[-3000:]
    assert len(store.reviewed(latest_only=False)) == 1
    assert ours.SOPInstanceUID not in caplog.text and study.study_uid not in caplog.text and "Doe" not in caplog.text
