"""The Markdown report: the seed's tables, the synthetic banner and provenance."""

from __future__ import annotations

import pandas as pd

from mura.evaluation.evaluate import evaluation_table
from mura.evaluation.report import render_report

PREDICTIONS = pd.DataFrame(
    {
        "split": ["test"] * 4,
        "dataset": ["mura"] * 4,
        "body_part": ["XR_HAND", "XR_HAND", "XR_FINGER", "XR_FINGER"],
        "patient_id": ["a", "a", "b", "c"],
        "study_id": ["s1", "s1", "s2", "s3"],
        "label": [1, 1, 0, 1],
        "p_v": [0.8, 0.6, 0.3, 0.4],
        "p_ensemble": [0.7, 0.65, 0.2, 0.55],
    }
)
PROVENANCE = {"synthetic": True, "fingerprint": "f" * 64, "git_commit": "abcdef1234567890", "ci_level": 0.9}


def _report(synthetic: bool) -> str:
    table = evaluation_table(PREDICTIONS, ["v", "ensemble"], {"default": 0.5, "high_sensitivity": 0.5}, 0, 0)
    return render_report(
        table, ["v", "ensemble"], {"default": 0.5, "high_sensitivity": 0.5}, {**PROVENANCE, "synthetic": synthetic}
    )


def test_synthetic_report_says_so_first() -> None:
    text = _report(True)
    assert text.splitlines()[2].startswith("> **SYNTHETIC DATA.**")
    assert "Data: synthetic phantoms; fingerprint `ffffffffffffffff`; code `abcdef123456`." in text
    assert "90% CIs" in text


def test_real_data_report_has_no_banner() -> None:
    text = _report(False)
    assert "SYNTHETIC" not in text and "Data: real datasets" in text


def test_tables_hold_the_models_and_body_parts() -> None:
    text = _report(True)
    # Study level, threshold 0.5: v -> s1 .7 (tp), s2 .3 (tn), s3 .4 (fn).
    assert "| v | 1 | 1 | 1 | 0 | 66.67 |" in text
    assert "| ensemble | 1 | 2 | 0 | 0 | 100.00 |" in text  # s1 .675, s2 .2, s3 .55
    parts = text.split("per body part")[1]
    assert parts.index("XR_FINGER") < parts.index("XR_HAND") < parts.index("All (combined)")
