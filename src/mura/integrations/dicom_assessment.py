"""A radiologist's assessment of our result, sent back as a DICOM SR (the IHE AIRAI idea).

The DICOM node accepts an SR (Basic Text, Enhanced, Comprehensive or Comprehensive 3D) that:

- is verified: ``VerificationFlag`` VERIFIED, with a ``VerifyingObserverSequence`` (the
  verifying observer is the reviewer; their identification code is preferred to their name);
- references the SOP Instance UID of the SR this node sent, in its
  ``CurrentRequestedProcedureEvidenceSequence`` or ``PertinentOtherEvidenceSequence`` (where
  highdicom puts its evidence), or in a COMPOSITE content item;
- carries, anywhere in its content tree, a CODE item named :data:`ASSESSMENT`
  (``99MURA`` / ``ASSESSMENT``) whose value is :data:`ACCEPTED`, :data:`REJECTED` or
  :data:`MODIFIED`; with MODIFIED, a CODE item named DCM 121071 "Finding" whose value is
  SCT "Abnormal" or "Normal" (the codes of our own SR) gives the radiologist's label;
  an optional TEXT item DCM 121106 "Comment" gives a reason.

:func:`read_assessment` reads one (pure; :class:`AssessmentError` says what is missing), and
:func:`assessment_report` writes one (highdicom), for a workstation integrator to copy and for
the tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as PydicomSequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import (
    UID,
    BasicTextSRStorage,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
)

from mura.integrations.dicom_results import ABNORMAL, COMMENT, MANUFACTURER, NORMAL, SCHEME

__all__ = [
    "ACCEPTED",
    "ASSESSMENT",
    "MODIFIED",
    "REJECTED",
    "SR_SOP_CLASSES",
    "AssessmentError",
    "ReadAssessment",
    "assessment_report",
    "read_assessment",
]

SR_SOP_CLASSES = frozenset({BasicTextSRStorage, EnhancedSRStorage, ComprehensiveSRStorage, Comprehensive3DSRStorage})
ASSESSMENT = Code("ASSESSMENT", SCHEME, "Assessment of an AI result")
ACCEPTED = Code("ACCEPTED", SCHEME, "AI result accepted")
REJECTED = Code("REJECTED", SCHEME, "AI result rejected")
MODIFIED = Code("MODIFIED", SCHEME, "AI result modified")
_ASSESSMENTS = {ACCEPTED.value: "accept", REJECTED.value: "reject", MODIFIED.value: "modified"}
_LABELS = {(ABNORMAL.scheme_designator, ABNORMAL.value): "abnormal", (NORMAL.scheme_designator, NORMAL.value): "normal"}
EVIDENCE_SEQUENCES = ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence")


class AssessmentError(ValueError):
    """An SR that is not an assessment this node can record (the message says why, without any UID)."""


@dataclass(frozen=True)
class ReadAssessment:
    """What an assessment SR says."""

    referenced: tuple[str, ...]  # SOP Instance UIDs it references (ours among them, if it is for us)
    assessment: str  # accept | reject | modified
    label: str | None  # the radiologist's label (normal | abnormal), when the SR states one
    reviewer: str  # the verifying observer's identification code, else their name
    reason: str


def _items(sequence: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in sequence:
        yield item
        yield from _items(item.get("ContentSequence", []))


def _code_of(item: Dataset, attribute: str) -> tuple[str, str] | None:
    found = item.get(attribute)
    if not found:
        return None
    return str(found[0].CodingSchemeDesignator), str(found[0].CodeValue)


def _referenced(ds: Dataset) -> tuple[str, ...]:
    uids = []
    for name in EVIDENCE_SEQUENCES:
        for study in ds.get(name, []):
            for series in study.get("ReferencedSeriesSequence", []):
                uids += [str(ref.ReferencedSOPInstanceUID) for ref in series.get("ReferencedSOPSequence", [])]
    for item in _items(ds.get("ContentSequence", [])):
        if item.get("ValueType") == "COMPOSITE":
            uids += [str(ref.ReferencedSOPInstanceUID) for ref in item.get("ReferencedSOPSequence", [])]
    return tuple(dict.fromkeys(uids))


def _reviewer(ds: Dataset) -> str:
    observers = ds.get("VerifyingObserverSequence", [])
    if str(ds.get("VerificationFlag", "")).upper() != "VERIFIED" or not observers:
        raise AssessmentError("not verified (VerificationFlag VERIFIED with a VerifyingObserverSequence)")
    observer = observers[0]
    codes_ = observer.get("VerifyingObserverIdentificationCodeSequence", [])
    if codes_ and codes_[0].get("CodeValue"):
        return f"dicom:{codes_[0].CodeValue}"
    name = str(observer.get("VerifyingObserverName", "") or "").strip()
    if not name:
        raise AssessmentError("the verifying observer has neither an identification code nor a name")
    return f"dicom:{name}"


def read_assessment(ds: Dataset) -> ReadAssessment:
    """Read a radiologist's assessment SR (pure).

    Raises:
        AssessmentError: not an SR, not verified, no assessment code, or MODIFIED without a finding.
    """
    if UID(str(ds.get("SOPClassUID", ""))) not in SR_SOP_CLASSES:
        raise AssessmentError("not a structured report")
    reviewer = _reviewer(ds)
    assessment = label = None
    reason = ""
    for item in _items(ds.get("ContentSequence", [])):
        name = _code_of(item, "ConceptNameCodeSequence")
        if item.get("ValueType") == "CODE" and name == (SCHEME, ASSESSMENT.value):
            value = _code_of(item, "ConceptCodeSequence")
            assessment = _ASSESSMENTS.get(value[1]) if value and value[0] == SCHEME else None
        elif item.get("ValueType") == "CODE" and name == ("DCM", codes.DCM.Finding.value):
            label = _LABELS.get(_code_of(item, "ConceptCodeSequence") or ("", ""))
        elif item.get("ValueType") == "TEXT" and name == (COMMENT.scheme_designator, COMMENT.value):
            reason = str(item.get("TextValue", ""))
    if assessment is None:
        raise AssessmentError(f"no {SCHEME} ASSESSMENT item with ACCEPTED, REJECTED or MODIFIED")
    if assessment == "modified" and label is None:
        raise AssessmentError("MODIFIED without a Finding (SCT Abnormal or Normal) giving the radiologist's label")
    return ReadAssessment(_referenced(ds), assessment, label, reviewer, reason)


def assessment_report(
    result_sr: Dataset,
    assessment: Code,
    reviewer_name: str,
    series_uid: str,
    sop_uid: str,
    label: Code | None = None,
    reason: str = "",
    organization: str = "Radiology",
) -> Dataset:
    """A verified Comprehensive SR assessing ``result_sr`` (our SR), referencing it as evidence.

    Args:
        result_sr: the SR the node sent (its patient and study modules are copied).
        assessment: :data:`ACCEPTED`, :data:`REJECTED` or :data:`MODIFIED`.
        reviewer_name: the verifying observer (a DICOM person name, ``Family^Given``).
        series_uid, sop_uid: the new object's UIDs.
        label: :data:`~mura.integrations.dicom_results.ABNORMAL` or ``NORMAL`` (required with MODIFIED).
        reason: an optional comment.
    """
    items: list[Dataset] = [hd.sr.CodeContentItem(name=ASSESSMENT, value=assessment, relationship_type="CONTAINS")]
    if label is not None:
        items.append(hd.sr.CodeContentItem(name=codes.DCM.Finding, value=label, relationship_type="CONTAINS"))
    if reason:
        items.append(hd.sr.TextContentItem(name=COMMENT, value=reason, relationship_type="CONTAINS"))
    container = hd.sr.ContainerContentItem(name=ASSESSMENT)
    container.ContentSequence = PydicomSequence(items)
    sr = hd.sr.ComprehensiveSR(
        evidence=[result_sr],
        content=container,
        series_instance_uid=series_uid,
        series_number=90,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=f"{MANUFACTURER} (assessment template)",
        is_complete=True,
        is_final=True,
        is_verified=True,
        verifying_observer_name=reviewer_name,
        verifying_organization=organization,
        series_description="AI result assessment",
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "mura project codes"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr
