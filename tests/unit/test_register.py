"""What register reads from the evaluation outputs (the champion rule: tests/unit/test_promotion.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mura.errors import DataError
from mura.packaging.register import validation_by_body_part, validation_kappa


def test_validation_kappa() -> None:
    assert validation_kappa({"valid": {"ensemble": {"study": {"default": {"kappa": 0.3}}}}}) == 0.3
    assert math.isnan(validation_kappa({"valid": {"ensemble": {"study": {"default": {"kappa": None}}}}}))
    with pytest.raises(DataError, match="rerun `dvc repro evaluate`"):
        validation_kappa({"test": {}})


def test_validation_by_body_part_keeps_valid_study_ensemble_rows() -> None:
    base = {
        "split": "valid",
        "model": "ensemble",
        "level": "study",
        "operating_point": "default",
        "accuracy": 0.5,
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "roc_auc": float("nan"),
        "kappa": 0.1,
        "n": 4,
    }
    table = pd.DataFrame(
        [
            {**base, "group": "all"},
            {**base, "group": "XR_WRIST", "n": 2},
            {**base, "group": "dataset:mura"},
            {**base, "group": "XR_HAND", "split": "test"},
            {**base, "group": "XR_HAND", "model": "v"},
            {**base, "group": "XR_HAND", "level": "image"},
            {**base, "group": "XR_HAND", "operating_point": "high_sensitivity"},
        ]
    )
    out = validation_by_body_part(table)
    assert set(out) == {"all", "XR_WRIST"}
    assert out["XR_WRIST"].n == 2 and out["XR_WRIST"].roc_auc is None and out["all"].kappa == 0.1


def test_the_served_model_requires_exactly_the_serving_pins_of_pyproject() -> None:
    import tomllib

    from mura.packaging.register import served_requirements
    from tests.helpers import REPO

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    serving = project["dependencies"] + project["optional-dependencies"]["serve"]
    keras = [r for r in project["optional-dependencies"]["train"] if r.startswith("keras==")]
    assert served_requirements("auto") == served_requirements("optimized") == serving  # one list of pins: pyproject.toml's
    with_keras = served_requirements("keras")
    assert with_keras[: len(serving) + 1] == serving + keras  # the Keras runtime: Keras and the TensorFlow build installed
    assert [r.split("==")[0] for r in with_keras[len(serving) + 1 :]] in (["tensorflow-cpu"], ["tensorflow"], [])
