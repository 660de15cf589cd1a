"""``reports/thresholds.json`` through its one typed contract: written, read back, refused when wrong or old."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mura.errors import DataError
from mura.modeling.calibration import Calibrator
from mura.modeling.operating_points import OPERATING_POINTS_SCHEMA, OperatingPoints

POINTS = OperatingPoints(
    thresholds={"default": 0.5, "high_sensitivity": 0.3, "high_specificity": 0.7},
    variant_weights={"a": 1.0, "b": 2.0},
    calibration={**Calibrator("temperature", 2.0).to_dict(), "requested": "temperature", "n_studies": 40},
    target_recall=0.9,
    target_specificity=0.9,
)


def test_round_trip_and_the_calibrator(tmp_path: Path) -> None:
    POINTS.save(tmp_path / "thresholds.json")
    back = OperatingPoints.load(tmp_path / "thresholds.json")
    assert back == POINTS and json.loads((tmp_path / "thresholds.json").read_text())["schema_version"] == OPERATING_POINTS_SCHEMA
    assert back.calibrator == Calibrator("temperature", 2.0)
    np.testing.assert_allclose(back.calibrator.apply(0.5), 0.5)
    assert OperatingPoints({"default": 0.5}, {"a": 1.0}).calibrator == Calibrator()  # none kept: the identity


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("schema_version"), r"schema_version is None, this code reads 1: rerun `dvc repro calibrate`"),
        (lambda d: d.update(schema_version=99), r"schema_version is 99"),
        (lambda d: d.pop("variant_weights"), r"field 'variant_weights' is missing or empty"),
        (lambda d: d["thresholds"].pop("default"), r"'thresholds' has no 'default' operating point"),
        (lambda d: d["thresholds"].update(default="half"), r"a field has a wrong value"),
        (lambda d: d["calibration"].update(temperature=-1.0), r"a field has a wrong value \(temperature must be > 0"),
    ],
)
def test_a_wrong_or_older_file_is_one_line_naming_it(tmp_path: Path, change, message: str) -> None:
    doc = POINTS.to_dict()
    change(doc)
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=message) as failure:
        OperatingPoints.load(path)
    assert str(failure.value).startswith(str(path)) and "\n" not in str(failure.value)


def test_a_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="run `dvc repro calibrate` first"):
        OperatingPoints.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        OperatingPoints.load(tmp_path / "bad.json")
