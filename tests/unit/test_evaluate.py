"""Evaluation tables and headline metrics on a hand-made prediction table (no DVC run)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mura.evaluation.evaluate import curves, evaluation_table, headline_metrics, run_metrics, training_curves

# Two studies of patient a (wrist, abnormal: views .9 and .7; wrist, normal: .6 and .2),
# one study of patient b (elbow, normal: .1), on the valid split, one variant "m".
# Image level at 0.5: tp=2 (.9,.7), fp=1 (.6), tn=2 (.2,.1) -> accuracy 4/5, precision 2/3, recall 1.
# Study level: abnormal .8, normal .4, normal .1 -> all right at 0.5: accuracy 1, kappa 1.
PREDICTIONS = pd.DataFrame(
    {
        "split": ["valid"] * 5,
        "dataset": ["mura"] * 5,
        "body_part": ["XR_WRIST"] * 4 + ["XR_ELBOW"],
        "patient_id": ["a", "a", "a", "a", "b"],
        "study_id": ["s1", "s1", "s2", "s2", "s3"],
        "label": [1, 1, 0, 0, 0],
        "p_m": [0.9, 0.7, 0.6, 0.2, 0.1],
    }
)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return evaluation_table(PREDICTIONS, ["m"], {"default": 0.5, "high_sensitivity": 0.65}, n_resamples=0, seed=0)


def _row(table: pd.DataFrame, **where: str) -> pd.Series:
    mask = np.ones(len(table), bool)
    for key, value in where.items():
        mask &= (table[key] == value).to_numpy()
    assert mask.sum() == 1, where
    return table[mask].iloc[0]


def test_rows_cover_levels_groups_and_operating_points(table: pd.DataFrame) -> None:
    assert set(table["level"]) == {"image", "study"}
    assert set(table["group"]) == {"all", "dataset:mura", "XR_WRIST", "XR_ELBOW"}
    assert set(table["operating_point"]) == {"default", "high_sensitivity"}
    assert len(table) == 2 * 4 * 2  # levels x groups x operating points, one split and one model


def test_image_level_metrics_hand_computed(table: pd.DataFrame) -> None:
    row = _row(table, level="image", group="all", operating_point="default")
    assert (row.tp, row.fp, row.tn, row.fn, row.n) == (2, 1, 2, 0, 5)
    assert row.accuracy == pytest.approx(0.8) and row.precision == pytest.approx(2 / 3) and row.recall == 1.0
    # AUC: positives .9,.7 vs negatives .6,.2,.1 -> all 6 pairs ordered.
    assert row.roc_auc == 1.0


def test_study_level_is_the_mean_of_views(table: pd.DataFrame) -> None:
    row = _row(table, level="study", group="all", operating_point="default")
    assert (row.tp, row.fp, row.tn, row.fn, row.n) == (1, 0, 2, 0, 3)
    assert row.kappa == pytest.approx(1.0)
    high = _row(table, level="study", group="all", operating_point="high_sensitivity")
    assert high.threshold == 0.65 and (high.tp, high.fn) == (1, 0)  # study s1: .8 >= .65


def test_body_part_groups(table: pd.DataFrame) -> None:
    elbow = _row(table, level="image", group="XR_ELBOW", operating_point="default")
    assert (elbow.n, elbow.tn) == (1, 1) and np.isnan(elbow.roc_auc)  # one class: AUC undefined


def test_no_bootstrap_gives_nan_intervals(table: pd.DataFrame) -> None:
    assert table["kappa_ci_low"].isna().all() and table["accuracy_ci_high"].isna().all()


def test_bootstrap_intervals_contain_the_estimate() -> None:
    many = pd.concat(
        [
            PREDICTIONS.assign(patient_id=PREDICTIONS["patient_id"] + str(k), study_id=PREDICTIONS["study_id"] + str(k))
            for k in range(10)
        ]
    )
    table = evaluation_table(many, ["m"], {"default": 0.5}, n_resamples=50, seed=1)
    row = _row(table, level="image", group="all", operating_point="default")
    assert row.accuracy_ci_low <= row.accuracy <= row.accuracy_ci_high


def test_headline_metrics_nesting_and_nan_as_none(table: pd.DataFrame) -> None:
    metrics = headline_metrics(table)
    assert set(metrics) == {"valid"}
    study = metrics["valid"]["m"]["study"]["default"]
    assert study["accuracy"] == 1.0 and study["n"] == 3 and study["threshold"] == 0.5
    assert set(metrics["valid"]["m"]) == {"image", "study"}
    one_class = headline_metrics(table.assign(roc_auc=np.nan))
    assert one_class["valid"]["m"]["image"]["default"]["roc_auc"] is None


def test_run_metrics_flat_names_per_split_level_and_point(table: pd.DataFrame) -> None:
    flat = run_metrics(headline_metrics(table), model="m")
    # Study level at 0.5 is all right (accuracy 1, kappa 1); image level precision 2/3 (see PREDICTIONS).
    assert flat["valid_study_accuracy"] == 1.0 and flat["valid_study_kappa"] == 1.0
    assert flat["valid_image_precision"] == pytest.approx(2 / 3)
    # The other operating point carries its name; nothing but the metrics (no counts, no threshold);
    # calibration, which no threshold changes, is logged once (without a point's name).
    assert "valid_study_kappa_high_sensitivity" in flat and "valid_study_ece" in flat
    assert not any(k.endswith(("_n", "_tp", "_threshold")) for k in flat)
    assert not any(k.startswith(("valid_study_ece_high", "valid_study_brier_high")) for k in flat)
    assert {k.split("_", 2)[2].removesuffix("_high_sensitivity") for k in flat} == {
        "accuracy",
        "precision",
        "recall",
        "specificity",
        "f1",
        "roc_auc",
        "kappa",
        "ece",
        "ece_adaptive",
        "mce",
        "brier",
        "log_loss",
    }
    undefined = run_metrics(headline_metrics(table.assign(roc_auc=np.nan)), model="m")
    assert not any("roc_auc" in k for k in undefined)
    assert run_metrics(headline_metrics(table), model="absent") == {}


def test_curves_long_format() -> None:
    roc, pr = curves(PREDICTIONS, ["m"])
    assert list(roc.columns) == ["model", "fpr", "tpr"] and list(pr.columns) == ["model", "recall", "precision"]
    assert roc.iloc[0][["fpr", "tpr"]].tolist() == [0.0, 0.0] and roc.iloc[-1][["fpr", "tpr"]].tolist() == [1.0, 1.0]
    single = curves(PREDICTIONS.assign(label=0), ["m"])
    assert single[0].empty and single[1].empty


def test_training_curves_stack_every_variant_with_a_model_column() -> None:
    first = pd.DataFrame({"epoch": [0, 1], "loss": [0.7, 0.6], "val_loss": [0.8, 0.75]})
    second = pd.DataFrame({"epoch": [0, 1, 2], "loss": [0.9, 0.5, 0.4], "val_loss": [0.85, 0.7, 0.65]})
    table = training_curves({"a": first, "b": second})
    assert list(table.columns) == ["model", "epoch", "loss", "val_loss"]
    assert table["model"].tolist() == ["a", "a", "b", "b", "b"]
    assert table[table["model"] == "b"]["loss"].tolist() == [0.9, 0.5, 0.4]
    assert training_curves({}).columns.tolist() == ["model", "epoch"]
