"""The served answers' shapes, defined once (pydantic): the model server's rows and the web UI's study answer.

:class:`ServedRow` is one row of ``POST /invocations``' answer (one image, its study's probability
and label, each variant's ``p_<variant>``), as :meth:`mura.runtime.service.EnsembleService.predict_frame`
returns it; the registered model's signature is built from it. :class:`StudyAnswer` is what the web
UI's ``/api/predict`` answers — from the in-process model or from rows forwarded by a model server.
"""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from mura.modeling.averaging import prob_column

__all__ = ["WARNING_SEPARATOR", "FeedbackRequest", "RegionRequest", "ServedRow", "StudyAnswer", "ViewAnswer"]

WARNING_SEPARATOR = "; "  # a served row's warnings, joined into its one string column


class ServedRow(BaseModel):
    """One image of the model server's answer (the ``p_<variant>`` columns are the extra fields)."""

    model_config = ConfigDict(extra="allow")

    row: int
    study_id: str
    probability: float  # the ensemble's, calibrated
    probability_raw: float  # the ensemble's average before calibration (audit)
    study_probability: float  # the study's, calibrated: what the label is decided on
    study_probability_raw: float
    threshold: float  # the served operating point's
    study_label: Literal["normal", "abnormal"]
    warnings: str = ""  # scope warnings, WARNING_SEPARATOR-joined (empty when the image is in scope)
    # Only when asked with params {"boxes": true}: JSON of box operating point → [{x0, y0, x1, y1, score}] in the
    # image's own pixels (x1, y1 exclusive); "{}" for a model without box levels.
    boxes: str | None = None

    def variant_probabilities(self) -> dict[str, float]:
        """Each variant's probability, by variant name."""
        prefix = prob_column("")
        return {k[len(prefix) :]: float(v) for k, v in (self.model_extra or {}).items() if k.startswith(prefix)}

    def warning_list(self) -> list[str]:
        """The scope warnings, one per item."""
        return [w for w in self.warnings.split(WARNING_SEPARATOR) if w]

    @staticmethod
    def example(variants: list[str]) -> pd.DataFrame:
        """One served row (for the registered model's signature)."""
        row = ServedRow.model_validate(
            {
                "row": 0,
                "study_id": "example-study",
                "probability": 0.5,
                "probability_raw": 0.5,
                "study_probability": 0.5,
                "study_probability_raw": 0.5,
                "threshold": 0.5,
                "study_label": "abnormal",
                **{prob_column(v): 0.5 for v in variants},
            }
        )
        order = ["row", "study_id", "probability", "probability_raw", *(prob_column(v) for v in variants)]
        order += ["study_probability", "study_probability_raw", "threshold", "study_label", "warnings"]
        values = row.model_dump()
        return pd.DataFrame({k: [values[k]] for k in order})


class ViewAnswer(BaseModel):
    """One view of a study answer."""

    name: str
    kind: str  # png, jpeg, dicom, image (forwarded: unknown)
    probability: float
    variants: dict[str, float]
    warnings: list[str]
    image: str | None = None  # data: URL of the thumbnail (in-process only)
    heatmap: str | None = None  # data: URL of the ensemble's Grad-CAM overlay (in-process, heatmaps=inline)
    heatmap_url: str | None = None  # where that overlay is drawn when asked (in-process, heatmaps=lazy; a PNG)
    # Box operating point (high_sensitivity: dotted, high_specificity: solid) → boxes as fractions of the view
    # (x0, y0, x1, y1, score); with heatmaps=inline, else at boxes_url (drawn with the heatmap).
    boxes: dict[str, list[dict[str, float]]] | None = None
    boxes_url: str | None = None


class StudyAnswer(BaseModel):
    """The web UI's answer for one study."""

    verdict: Literal["normal", "abnormal"]
    probability: float
    probability_raw: float | None
    operating_point: str
    threshold: float
    labels: dict[str, str] = {}  # every operating point's label (in-process only)
    variants: dict[str, float]
    views: list[ViewAnswer]
    body_part: str | None
    synthetic_data: bool | None  # None: forwarded, the model server does not say
    warnings: list[str]
    validation: dict[str, Any] | None = None  # the body part's validation figures (in-process only)
    feedback_url: str | None = None  # where a reviewer posts a FeedbackRequest on this answer (feedback on)


class RegionRequest(BaseModel):
    """A rectangle drawn on one view, as fractions (0-1) of its width and height."""

    model_config = ConfigDict(extra="forbid")

    view: int = Field(ge=0)
    x0: float = Field(ge=0, le=1)
    y0: float = Field(ge=0, le=1)
    x1: float = Field(ge=0, le=1)
    y1: float = Field(ge=0, le=1)


class FeedbackRequest(BaseModel):
    """A reviewer's assessment of one answer (``POST`` to the answer's ``feedback_url``)."""

    model_config = ConfigDict(extra="forbid")

    assessment: Literal["agree", "disagree"]
    label: Literal["normal", "abnormal"] | None = None  # the radiologist's label; required to disagree
    region: RegionRequest | None = None  # where the finding is (optional)
    reason: str = Field(default="", max_length=1000)  # free text: stored, never logged or exported
