"""The model card reads every number from the pipeline's outputs: change one, the card follows."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from mura.errors import ConfigError
from mura.modeling.calibration import Calibrator
from mura.packaging.model_card import build_model_card, render_model_card
from mura.packaging.register import localization_metrics
from mura.runtime.card_schema import ModelCard
from mura.runtime.served_config import ServingConfig


def _config(synthetic: bool = True) -> ServingConfig:
    return ServingConfig(
        variants=("dn_a", "rn_a"),
        variant_weights={"dn_a": 1.0, "rn_a": 1.0},
        thresholds={"default": 0.5, "high_sensitivity": 0.31, "high_specificity": 0.77},
        operating_point="default",
        image_size=320,
        resize="stretch",
        max_pixels=10**7,
        serve_batch_size=8,
        synthetic_data=synthetic,
        calibration=Calibrator("temperature", temperature=1.7),
        dataset_fingerprint="f" * 64,
        git_commit="c0ffee" * 6,
    )


def _table(kappa: float = 0.41) -> pd.DataFrame:
    rows = []
    for group in ("all", "XR_WRIST", "dataset:mura"):
        for point, t in (("default", 0.5), ("high_sensitivity", 0.31), ("high_specificity", 0.77)):
            rows.append(
                {
                    "split": "test",
                    "model": "ensemble",
                    "level": "study",
                    "group": group,
                    "operating_point": point,
                    "threshold": t,
                    "n": 40,
                    "accuracy": 0.8,
                    "recall": 0.7,
                    "specificity": 0.9,
                    "roc_auc": 0.85,
                    "kappa": kappa,
                    "kappa_ci_low": kappa - 0.1,
                    "kappa_ci_high": kappa + 0.1,
                    "ece": 0.04,
                    "ece_uncalibrated": 0.12,
                    "brier": 0.15,
                    "brier_uncalibrated": 0.2,
                    "ece_adaptive": 0.05,
                    "ece_adaptive_uncalibrated": 0.11,
                    "log_loss": 0.45,
                    "log_loss_uncalibrated": 0.6,
                }
            )
    return pd.DataFrame(rows)


IMAGES = pd.DataFrame(
    {
        "image_id": ["a", "b", "c"],
        "synthetic": [True] * 3,
        "dataset": ["mura"] * 3,
        "split": ["train", "train", "test"],
        "body_part": ["XR_WRIST", "XR_HAND", "XR_WRIST"],
        "study_id": ["s1", "s2", "s3"],
        "patient_id": ["p1", "p1", "p2"],
    }
)


def test_the_card_follows_the_metrics_and_says_what_it_must() -> None:
    card = build_model_card(_config(), "mura-ensemble", IMAGES, _table(0.41), {"dn_a": "densenet169", "rn_a": "resnet101"})
    other = build_model_card(_config(), "mura-ensemble", IMAGES, _table(0.63), {"dn_a": "densenet169", "rn_a": "resnet101"})
    assert card.evaluation is not None and card.evaluation.operating_points["default"]["kappa"]["value"] == 0.41
    assert other.evaluation is not None and other.evaluation.operating_points["default"]["kappa"]["value"] == 0.63
    assert "0.410 [0.310, 0.510]" in render_model_card(card) and "0.630" in render_model_card(other)
    assert set(card.evaluation.operating_points) == {"default", "high_sensitivity", "high_specificity"}
    assert card.evaluation.calibration["all"]["ece"] == {"before": 0.12, "after": 0.04}
    assert card.evaluation.per_body_part["XR_WRIST"]["n"] == 40 and "dataset:mura" not in card.evaluation.per_body_part
    assert card.training_data.images_per_split_and_body_part == {
        "test": {"XR_WRIST": 1},
        "train": {"XR_HAND": 1, "XR_WRIST": 1},
    }
    assert card.model.variants == {"dn_a": "densenet169", "rn_a": "resnet101"}
    assert card.model.calibration["temperature"] == 1.7 and "T = 1.700" in render_model_card(card)
    assert card.lineage["git_commit"] == "c0ffee" * 6
    text = render_model_card(card)
    for needed in ("Intended use", "Out of scope", "Training data", "Operating points", "Limitations", "Lineage", "SYNTHETIC"):
        assert needed in text


def test_a_real_data_card_has_no_synthetic_warning_and_tolerates_missing_inputs() -> None:
    card = build_model_card(
        _config(synthetic=False), "mura-ensemble", IMAGES[["image_id"]].assign(synthetic=False), pd.DataFrame()
    )
    text = render_model_card(card)
    assert "SYNTHETIC" not in text and card.evaluation is None and card.model.variants["dn_a"] == "unknown"


def test_the_card_round_trips_through_its_json(tmp_path) -> None:
    card = build_model_card(_config(), "mura-ensemble", IMAGES, _table(0.41), {"dn_a": "densenet169"})
    path = tmp_path / "model_card.json"
    path.write_text(json.dumps(card.to_dict()))
    assert ModelCard.from_dict(json.loads(path.read_text())) == card


def test_a_card_written_before_it_was_typed_still_loads() -> None:
    """Cards registered before schema_version carried ``schema``, nested ``ensemble``/``runtimes`` and ``{}`` evaluations."""
    card = build_model_card(_config(), "mura-ensemble", IMAGES, pd.DataFrame())
    old = json.loads(json.dumps(card.to_dict()))
    model = old["model"]
    old["model"] = {k: v for k, v in model.items() if k not in ("average", "variant_weights", "runtime", "allowed_precisions")}
    old["model"] |= {
        "ensemble": {"average": model["average"], "variant_weights": model["variant_weights"]},
        "runtimes": {"runtime": model["runtime"], "allowed_precisions": model["allowed_precisions"]},
    }
    old |= {"schema": "mura-model-card/1", "evaluation": {}}
    del old["schema_version"], old["localization"]  # version 1 had no localisation
    assert ModelCard.from_dict(old) == dataclasses.replace(card, schema_version=1)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"intended_use": {"purpose": "x", "users": "all"}}, r"model card\.intended_use\.users' = 'all': expected a list"),
        ({"synthetic_data": "yes"}, r"model card\.synthetic_data"),
        ({"schema_version": 3}, "model card schema version 3: .* upgrade mura"),
    ],
)
def test_a_wrong_card_names_the_field(change: dict, message: str) -> None:
    card = build_model_card(_config(), "mura-ensemble", IMAGES, pd.DataFrame())
    with pytest.raises(ConfigError, match=message):
        ModelCard.from_dict({**json.loads(json.dumps(card.to_dict())), **change})


def test_the_card_says_how_well_the_boxes_point() -> None:
    record = {
        "levels": {"high_sensitivity": 0.45, "high_specificity": 0.7},
        "measured": True,
        "test": {"high_sensitivity": {"pointing": 0.72, "pointing_ci_low": 0.6, "pointing_ci_high": 0.8, "mean_iou": 0.31}},
        "external": {"fracatlas": {"high_sensitivity": {"pointing": 0.41, "pointing_ceiling": 0.9, "mean_iou": 0.12}}},
    }
    card = build_model_card(_config(), "mura-ensemble", IMAGES, pd.DataFrame(), localization=record)
    text = render_model_card(card)
    assert card.localization == record and "## Localisation" in text and "0.720 [0.600, 0.800]" in text
    assert "| high_sensitivity, fracatlas (external) | 0.410 | 0.900 |" in text and "Pointing ceiling" in text
    assert localization_metrics(record) == {
        "loc_high_sensitivity_pointing": 0.72,
        "loc_high_sensitivity_mean_iou": 0.31,
        "loc_fracatlas_high_sensitivity_pointing": 0.41,
        "loc_fracatlas_high_sensitivity_pointing_ceiling": 0.9,
        "loc_fracatlas_high_sensitivity_mean_iou": 0.12,
    }
    assert "chosen on the validation split" in text and "high_sensitivity 0.45" in text
    unmeasured = render_model_card(
        build_model_card(_config(), "m", IMAGES, pd.DataFrame(), localization={"levels": {"high_specificity": 0.7}})
    )
    assert "no annotated boxes" in unmeasured
