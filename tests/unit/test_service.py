"""The served rows contract: request parsing (400s naming the row) and study aggregation."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from mura.errors import ConfigError
from mura.modeling.calibration import Calibrator
from mura.runtime.schema import ServedRow
from mura.runtime.served_config import ServingConfig
from mura.runtime.service import DEFAULT_STUDY, keras_files, parse_rows, study_results

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nrest").decode()


def test_parse_rows_decodes_and_defaults_the_study() -> None:
    rows = parse_rows(pd.DataFrame({"image": [PNG, PNG], "study_id": ["s1", None]}))
    assert rows == [(b"\x89PNG\r\n\x1a\nrest", "s1"), (b"\x89PNG\r\n\x1a\nrest", DEFAULT_STUDY)]
    assert parse_rows(pd.DataFrame({"image": [PNG]}))[0][1] == DEFAULT_STUDY


@pytest.mark.parametrize(
    "frame,message",
    [
        (pd.DataFrame(), "empty request"),
        (pd.DataFrame({"picture": [PNG]}), "missing column 'image'"),
        (pd.DataFrame({"image": [PNG, 3]}), "row 1: 'image' must be a non-empty base64 string, got int"),
        (pd.DataFrame({"image": [""]}), "row 0: 'image' must be a non-empty"),
        (pd.DataFrame({"image": ["not base64!"]}), "row 0: 'image' is not valid base64"),
        (pd.DataFrame({"image": [PNG], "study_id": [7]}), "row 0: 'study_id' must be a string"),
    ],
)
def test_bad_requests_name_the_row(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(MlflowException, match=message) as info:
        parse_rows(frame)
    assert info.value.get_http_status_code() == 400


def test_study_results_mean_and_label() -> None:
    rows = pd.DataFrame({"row": [0, 1, 2], "study_id": ["a", "a", "b"], "probability_raw": [0.9, 0.3, 0.59]})
    out = study_results(rows, 0.6)
    np.testing.assert_allclose(out["study_probability"], [0.6, 0.6, 0.59])
    assert out["study_label"].tolist() == ["abnormal", "abnormal", "normal"]  # >= threshold is abnormal
    assert (out["threshold"] == 0.6).all()


def test_study_results_calibrate_the_mean_of_raw_views() -> None:
    rows = pd.DataFrame({"row": [0, 1], "study_id": ["a", "a"], "probability_raw": [0.9, 0.5]})
    calibrator = Calibrator("temperature", temperature=2.0)
    out = study_results(rows, 0.6, calibrator)
    np.testing.assert_allclose(out["study_probability_raw"], [0.7, 0.7])
    np.testing.assert_allclose(out["study_probability"], calibrator.apply(np.array([0.7, 0.7])))
    # 0.7 raw is 0.604 calibrated (T = 2): abnormal at 0.6, and the label reads the calibrated value.
    assert out["study_label"].tolist() == ["abnormal", "abnormal"]
    assert study_results(rows, 0.65, calibrator)["study_label"].tolist() == ["normal", "normal"]


def test_output_example_has_one_column_per_variant() -> None:
    columns = list(ServedRow.example(["x", "y"]).columns)
    assert columns == [
        "row",
        "study_id",
        "probability",
        "probability_raw",
        "p_x",
        "p_y",
        "study_probability",
        "study_probability_raw",
        "threshold",
        "study_label",
        "warnings",
    ]


def _config(uri: str = "") -> ServingConfig:
    return ServingConfig(
        variants=("a", "b"),
        variant_weights={"a": 1.0, "b": 1.0},
        thresholds={"default": 0.5},
        operating_point="default",
        image_size=32,
        resize="stretch",
        max_pixels=1_000_000,
        serve_batch_size=2,
        synthetic_data=True,
        keras_variants_uri=uri,
    )


def test_keras_files_come_from_the_artifacts_when_they_are_there() -> None:
    assert keras_files({"b": "/m/b.keras", "a": "/m/a.keras", "x": "/m/x"}, _config()) == {
        "a": "/m/a.keras",
        "b": "/m/b.keras",
    }


def test_keras_files_are_downloaded_from_the_run_else(tmp_path: Path) -> None:
    run_files = tmp_path / "run" / "keras"
    run_files.mkdir(parents=True)
    for name in ("a", "b"):
        (run_files / f"{name}.keras").write_bytes(b"weights")
    files = keras_files({}, _config(run_files.as_uri()))
    assert set(files) == {"a", "b"} and Path(files["a"]).read_bytes() == b"weights"


def test_keras_files_missing_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no .keras file for variant 'a'"):
        keras_files({}, _config())
    with pytest.raises(ConfigError, match=r"the Keras runtime needs the variants at file://.*nowhere") as err:
        keras_files({}, _config((tmp_path / "nowhere").as_uri()))
    assert "\n" not in str(err.value)
