"""The model card that travels with every registered ``mura-ensemble`` version.

In the spirit of "Model Cards for Model Reporting" (Mitchell et al. 2019) and MONAI bundle
metadata: intended use and users, out-of-scope uses, training data, the model, its evaluation
(headline figures with CIs, per body part, calibration, operating points), limitations and
lineage. :func:`build_model_card` is pure and reads every number from the pipeline's own
outputs (``metrics.json``, ``per_body_part.csv``, ``thresholds.json``, images.csv/split.csv, the
served config); :func:`render_model_card` turns it into Markdown. ``register`` writes both to
``reports/model_card.{md,json}``, logs them with the registered version, and ships the JSON
inside the model, where the web UI's "About this model" and the DICOM results read it.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from mura.data.dicom import RADIOGRAPH_MODALITIES
from mura.data.sources import BODY_PARTS
from mura.modeling.averaging import ENSEMBLE
from mura.runtime.card_schema import CardModel, CardOperatingPoints, Evaluation, IntendedUse, ModelCard, TrainingData
from mura.runtime.served_config import ServingConfig

__all__ = ["build_model_card", "render_model_card"]

HEADLINE = ("accuracy", "recall", "specificity", "roc_auc", "kappa")
CALIBRATION = ("ece", "ece_adaptive", "brier", "log_loss")


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _with_ci(row: pd.Series, name: str) -> dict[str, float | None]:
    return {
        "value": _number(row.get(name)),
        "ci_low": _number(row.get(f"{name}_ci_low")),
        "ci_high": _number(row.get(f"{name}_ci_high")),
    }


def _data_section(images: pd.DataFrame, fingerprint: str) -> TrainingData:
    synthetic = bool(images.get("synthetic", pd.Series([False])).any())
    datasets = tuple(sorted(map(str, images["dataset"].unique()))) if "dataset" in images else ()
    per_part: dict[str, dict[str, int]] = {}
    if {"split", "body_part"} <= set(images.columns):
        counts = images.groupby(["split", "body_part"]).size()
        per_part = {
            str(split): {str(part): int(n) for part, n in counts.loc[split].items()}
            for split in counts.index.get_level_values(0).unique()
        }

    def per_split(column: str) -> dict[str, int]:
        if {"split", column} <= set(images.columns):
            return {str(k): int(v) for k, v in images.groupby("split")[column].nunique().items()}
        return {}

    return TrainingData(
        images=int(len(images)),
        synthetic=synthetic,
        dataset_fingerprint=fingerprint,
        datasets=datasets,
        images_per_split_and_body_part=per_part,
        studies_per_split=per_split("study_id"),
        patients_per_split=per_split("patient_id"),
    )


def _evaluation_section(table: pd.DataFrame) -> Evaluation | None:
    if table.empty:
        return None
    test = table[(table["split"] == "test") & (table["model"] == ENSEMBLE) & (table["level"] == "study")]
    points: dict[str, dict[str, Any]] = {}
    per_part: dict[str, dict[str, Any]] = {}
    calibration: dict[str, dict[str, dict[str, float | None]]] = {}
    for _, row in test[test["group"] == "all"].iterrows():
        points[str(row["operating_point"])] = {
            "threshold": _number(row["threshold"]),
            "n": int(row["n"]),
            **{m: _with_ci(row, m) for m in HEADLINE if m in row},
        }
    default = test[test["operating_point"] == "default"]
    for _, row in default[~default["group"].str.startswith("dataset:")].iterrows():
        group = str(row["group"])
        if group != "all":
            per_part[group] = {"n": int(row["n"]), **{m: _number(row.get(m)) for m in HEADLINE}}
        calibration[group] = {
            m: {"before": _number(row.get(f"{m}_uncalibrated")), "after": _number(row.get(m))} for m in CALIBRATION if m in row
        }
    return Evaluation(operating_points=points, per_body_part=per_part, calibration=calibration)


def build_model_card(
    config: ServingConfig,
    model_name: str,
    images: pd.DataFrame,
    table: pd.DataFrame,
    architectures: dict[str, str] | None = None,
    lineage: dict[str, Any] | None = None,
    localization: dict[str, Any] | None = None,
) -> ModelCard:
    """The card (pure).

    Long on purpose: one declarative constructor, section by section in the card's order; what a
    section computes is in its own function.

    Args:
        config: the served configuration (variants, weights, calibrator, operating points,
            precisions, synthetic flag, dataset fingerprint, commit).
        model_name: the registered model's name.
        images: images.csv merged with split.csv (counts per split and body part).
        table: the ``evaluate`` stage's ``per_body_part.csv``.
        architectures: variant → architecture (``models.<variant>.arch``), when known.
        lineage: run id, registered version and anything else that locates the model.
        localization: the ``localize`` stage's record (``reports/localization.json``).
    """
    localization = localization or {}
    parts = ", ".join(p.removeprefix("XR_").lower() for p in BODY_PARTS)
    return ModelCard(
        model_name=model_name,
        synthetic_data=config.synthetic_data,
        intended_use=IntendedUse(
            purpose="Pre-screening suggestion of whether an upper-extremity radiograph study is abnormal, "
            "with heatmaps, to help a radiologist prioritise and read; a complement to the radiologist, never a replacement.",
            users=("radiologists and reporting radiographers", "emergency and orthopaedic clinicians, as a second look"),
            inputs=f"one or more views of one study of {parts} (radiographs: {', '.join(sorted(RADIOGRAPH_MODALITIES))}); "
            "PNG, JPEG or DICOM",
        ),
        out_of_scope=(
            "diagnosis without a radiologist's reading, or any use that acts on the suggestion alone",
            "modalities other than radiographs (CT, MR, ultrasound, …): answered with a scope warning",
            f"body parts other than the seven upper-extremity regions ({parts}): answered with a scope warning",
            "children's radiographs, unless the training data included them (MURA's did not label age)",
            "localisation as a diagnosis: the boxes show where the model looked, measured only where annotated boxes exist",
            *(["ANY clinical use: this version was trained on synthetic phantoms"] if config.synthetic_data else []),
        ),
        training_data=_data_section(images, config.dataset_fingerprint),
        model=CardModel(
            variants={v: (architectures or {}).get(v, "unknown") for v in config.variants},
            variant_weights=config.variant_weights,
            average="weighted mean of the variants' probabilities",
            study_probability="mean of the views' ensemble probabilities, then calibrated",
            calibration=config.calibration.to_dict() | {"fitted_on": "validation studies"},
            image_size=config.image_size,
            runtime=config.runtime,
            allowed_precisions=tuple(config.allowed_precisions),
        ),
        operating_points=CardOperatingPoints(
            served=config.operating_point,
            thresholds=config.thresholds,
            chosen_on="validation studies, on the calibrated probability",
        ),
        evaluation=_evaluation_section(table),
        localization=localization,
        limitations=(
            "Evaluated on the test split of the same datasets it was trained on; performance on another "
            "hospital's equipment and population is unknown until measured there (watch the drift reports).",
            "Labels are study-level normal/abnormal from radiology reports (MURA), not a reference standard per finding.",
            "Calibrated on the validation split: the probabilities are frequencies for a population like it, not for others.",
            "Grad-CAM heatmaps show what drove the score, not where a lesion is.",
        ),
        lineage={
            "git_commit": config.git_commit,
            "mura_version": config.mura_version,
            "config_schema_version": config.schema_version,
            "dataset_fingerprint": config.dataset_fingerprint,
            **(lineage or {}),
        },
    )


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        low, high, v = value.get("ci_low"), value.get("ci_high"), value.get("value")
        if v is None:
            return "–"
        return f"{v:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _localization_lines(record: dict[str, Any]) -> list[str]:
    """The card's "Localisation" section: the box levels and, when measured, the test figures with CIs."""
    if not record:
        return []
    levels = ", ".join(f"{point} {level:.2f}" for point, level in record.get("levels", {}).items())
    lines = ["## Localisation", "", f"Boxes: connected regions of the ensemble's heatmap above a heat level ({levels}), "]
    if not record.get("measured"):
        lines[-1] += "set by default: no annotated boxes to choose or measure them on."
        return [*lines, ""]
    how = set(record.get("chosen_on", {}).values()) if isinstance(record.get("chosen_on"), dict) else {"valid"}
    lines[-1] += "chosen on the validation split's annotated boxes." if how == {"valid"} else f"chosen: {'; '.join(sorted(how))}."
    lines += [
        "",
        "| Operating point | Pointing game | Pointing ceiling | Box sensitivity (IoU ≥ 0.1) | False boxes per image | Mean IoU |",
    ]
    lines.append("|---|---|---|---|---|---|")
    sets = [("", record.get("test", {}))] + [(f", {name} (external)", rows) for name, rows in record.get("external", {}).items()]
    for where, points in sets:
        for point, row in points.items():

            def cell(name: str, row: dict[str, Any] = row) -> str:
                return _fmt({"value": row.get(name), "ci_low": row.get(f"{name}_ci_low"), "ci_high": row.get(f"{name}_ci_high")})

            names = ("pointing", "pointing_ceiling", "sensitivity_iou0.1", "fp_per_image_iou0.1", "mean_iou")
            lines.append(f"| {point}{where} | {' | '.join(cell(name) for name in names)} |")
    return [
        *lines,
        "",
        "Pointing ceiling: the pointing game's best possible score at the heatmaps' resolution (the backbone's grid, "
        "2 × 2 at 64 px, 10 × 10 at 320 px): a score near it is as good as the grid allows.",
        "",
    ]


def _training_data_lines(data: TrainingData) -> list[str]:
    """The card's "Training data" section: counts, fingerprint, and images per split and body part."""
    lines: list[str] = []
    lines += [
        "## Training data",
        "",
        f"- images: {data.images} ({'synthetic phantoms' if data.synthetic else 'real datasets'}); "
        f"datasets: {', '.join(data.datasets or ('?',))}",
        f"- dataset fingerprint: `{data.dataset_fingerprint}`",
    ]
    for key, counts in (("studies per split", data.studies_per_split), ("patients per split", data.patients_per_split)):
        if counts:
            lines.append(f"- {key}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    per_part = data.images_per_split_and_body_part
    if per_part:
        parts = sorted({p for split in per_part.values() for p in split})
        lines += ["", "| Images | " + " | ".join(parts) + " |", "|---|" + "---|" * len(parts)]
        lines += [f"| {split} | " + " | ".join(str(counts.get(p, 0)) for p in parts) + " |" for split, counts in per_part.items()]
    return lines


def _model_lines(model: CardModel) -> list[str]:
    """The card's "Model" section: variants, ensemble, calibrator, input and runtime."""
    lines: list[str] = []
    cal = model.calibration
    how = {
        "temperature": f"temperature scaling (T = {cal['temperature']:.3f})",
        "isotonic": f"isotonic regression ({len(cal['knots_x'])} knots)",
        "none": "none",
    }[cal["method"]]
    lines += [
        "",
        "## Model",
        "",
        "- variants: " + ", ".join(f"{v} ({a})" for v, a in model.variants.items()),
        f"- ensemble: {model.average}; weights {model.variant_weights}",
        f"- study probability: {model.study_probability}; calibrator: {how}, fitted on validation studies",
        f"- input: {model.image_size}² grayscale; runtime {model.runtime}, "
        f"precisions allowed {', '.join(model.allowed_precisions)}",
        "",
    ]
    return lines


def _operating_point_lines(points: CardOperatingPoints) -> list[str]:
    """The card's "Operating points" section."""
    lines: list[str] = []
    lines += [
        "## Operating points",
        "",
        f"Served: **{points.served}**. Chosen on {points.chosen_on}.",
        "",
        "| Operating point | Threshold |",
        "|---|---|",
        *(f"| {k} | {v:.3f} |" for k, v in points.thresholds.items()),
        "",
    ]
    return lines


def _evaluation_lines(ev: Evaluation | None) -> list[str]:
    """The card's "Evaluation" section: the test split at each operating point, per body part, calibration."""
    lines: list[str] = []
    if ev is not None:
        lines += [
            "## Evaluation (test split, study level, 95 % patient-bootstrap CIs)",
            "",
            "| Operating point | Threshold | Studies | Accuracy | Sensitivity | Specificity | AUC | Kappa |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for point, row in ev.operating_points.items():
            lines.append(
                f"| {point} | {_fmt(row['threshold'])} | {row['n']} | " + " | ".join(_fmt(row.get(m)) for m in HEADLINE) + " |"
            )
        if ev.per_body_part:
            lines += [
                "",
                "| Body part (default point) | Studies | Accuracy | Sensitivity | Specificity | AUC | Kappa |",
                "|---|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {part} | {row['n']} | " + " | ".join(_fmt(row.get(m)) for m in HEADLINE) + " |"
                for part, row in ev.per_body_part.items()
            ]
        if ev.calibration:
            lines += [
                "",
                "| Calibration (before → after) | " + " | ".join(CALIBRATION) + " |",
                "|---|" + "---|" * len(CALIBRATION),
            ]
            for group, values in ev.calibration.items():
                lines.append(
                    f"| {group} | "
                    + " | ".join(f"{_fmt(values[m]['before'])} → {_fmt(values[m]['after'])}" for m in CALIBRATION if m in values)
                    + " |"
                )
        lines.append("")
    return lines


def render_model_card(card: ModelCard) -> str:
    """The card as Markdown (``reports/model_card.md``)."""
    lines = [
        f"# Model card: {card.model_name}" + (f" version {card.lineage['version']}" if card.lineage.get("version") else ""),
        "",
    ]
    if card.synthetic_data:
        lines += [
            "> **SYNTHETIC TRAINING DATA.** This version was trained and evaluated on procedurally generated",
            "> phantoms. It has no clinical validity; every figure below is about phantoms.",
            "",
        ]
    use = card.intended_use
    lines += [
        "## Intended use",
        "",
        use.purpose,
        "",
        "Users: " + "; ".join(use.users) + ".",
        "",
        "Inputs: " + use.inputs + ".",
        "",
    ]
    lines += ["## Out of scope", "", *(f"- {item}" for item in card.out_of_scope), ""]
    lines += _training_data_lines(card.training_data)
    lines += _model_lines(card.model)
    lines += _operating_point_lines(card.operating_points)
    lines += _evaluation_lines(card.evaluation)
    lines += _localization_lines(card.localization)
    lines += ["## Limitations", "", *(f"- {item}" for item in card.limitations), ""]
    lines += ["## Lineage", "", *(f"- {k.replace('_', ' ')}: `{v}`" for k, v in card.lineage.items()), ""]
    return "\n".join(lines)
