"""The reference study a registered version must answer alike when served: chosen by ``register``, checked by ``serve``.

A typed, versioned contract between the two stages (in ``reports/register.json``): one validation
study, its images (by ``image_id`` in the cache), and the answer the ensemble stage's Keras
predictions give for it through the registered configuration (weights, calibration, thresholds).
The study is the first (by id) whose probability lies at least twice the tolerance away from
every threshold, so a served answer within the tolerance has the same label at each operating
point; when none does, the one farthest from its nearest threshold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mura.errors import DataError
from mura.modeling.averaging import average_probabilities, prob_column
from mura.runtime.served_config import ServingConfig

__all__ = ["SERVE_REFERENCE_SCHEMA", "ServeReference", "choose_serve_reference", "label_at"]

SERVE_REFERENCE_SCHEMA = 1


def label_at(probability: float, threshold: float) -> str:
    """The study label at one threshold (``abnormal`` when ``>=``, as the service decides)."""
    return "abnormal" if probability >= threshold else "normal"


@dataclass(frozen=True)
class ServeReference:
    """One validation study and the answer the registered version must give for it.

    Attributes:
        study_id: the validation study.
        image_ids: its images (rows of the pixel cache), in order.
        study_probability: the calibrated study probability from the Keras predictions.
        thresholds: operating point → threshold (the registered ones).
        labels: operating point → the label at that threshold.
        tolerance: the largest allowed |served − reference| (``register.reduced_max_abs_dp``).
        schema_version: this contract's version.
    """

    study_id: str
    image_ids: tuple[str, ...]
    study_probability: float
    thresholds: dict[str, float]
    labels: dict[str, str]
    tolerance: float
    schema_version: int = SERVE_REFERENCE_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``image_ids`` as a list)."""
        out = dataclasses.asdict(self)
        out["image_ids"] = list(self.image_ids)
        return out

    @classmethod
    def from_dict(cls, doc: Any, source: str = "reports/register.json") -> ServeReference:
        """Read it back; one clear line naming the file and the field when it is missing or from another version.

        Raises:
            DataError: not a mapping, a missing or mistyped field, or another schema version.
        """
        if not isinstance(doc, dict):
            raise DataError(
                f"{source}: no serve_reference (registered before the serve stage existed): rerun `dvc repro register`"
            )
        version = doc.get("schema_version")
        if version != SERVE_REFERENCE_SCHEMA:
            raise DataError(f"{source}: serve_reference.schema_version is {version!r}, this code reads {SERVE_REFERENCE_SCHEMA}")
        try:
            return cls(
                study_id=str(doc["study_id"]),
                image_ids=tuple(str(i) for i in doc["image_ids"]),
                study_probability=float(doc["study_probability"]),
                thresholds={str(k): float(v) for k, v in doc["thresholds"].items()},
                labels={str(k): str(v) for k, v in doc["labels"].items()},
                tolerance=float(doc["tolerance"]),
            )
        except KeyError as exc:
            raise DataError(f"{source}: serve_reference has no field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{source}: serve_reference has a field of the wrong type ({exc})") from None


def choose_serve_reference(valid: pd.DataFrame, config: ServingConfig, tolerance: float) -> ServeReference:
    """The reference study from the ensemble stage's validation predictions (pure).

    Args:
        valid: ``reports/predictions/valid.csv`` (``image_id``, ``study_id``, ``p_<variant>``).
        config: the registered configuration (variants, weights, calibration, thresholds).
        tolerance: the allowed |served − reference| probability difference.

    Returns:
        The chosen study and its expected answer.

    Raises:
        DataError: no validation prediction, or a variant's column missing.
    """
    columns = [prob_column(v) for v in config.variants]
    missing = [c for c in columns if c not in valid.columns]
    if valid.empty or missing:
        raise DataError(f"the validation predictions lack {missing or 'rows'}: rerun `dvc repro ensemble`")
    raw = average_probabilities(valid[columns].to_numpy(np.float64), config.weights_in_order)
    per_image = pd.DataFrame({"image_id": valid["image_id"].astype(str), "study_id": valid["study_id"].astype(str), "raw": raw})
    studies = per_image.groupby("study_id", sort=True)["raw"].mean()
    probability = config.calibration.apply(studies.to_numpy(np.float64))
    thresholds = np.array(list(config.thresholds.values()), np.float64)
    margin = np.abs(probability[:, None] - thresholds[None, :]).min(axis=1)
    clear = np.flatnonzero(margin >= 2 * tolerance)
    pick = int(clear[0]) if len(clear) else int(np.argmax(margin))
    study = str(studies.index[pick])
    p = float(probability[pick])
    return ServeReference(
        study_id=study,
        image_ids=tuple(per_image.loc[per_image["study_id"] == study, "image_id"]),
        study_probability=p,
        thresholds=dict(config.thresholds),
        labels={op: label_at(p, t) for op, t in config.thresholds.items()},
        tolerance=tolerance,
    )
