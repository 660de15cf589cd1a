"""Drift statistics: a shifted production is flagged, a like one is not."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mura.operations.drift import drift_table, psi, read_audit, render_report
from mura.operations.profile import current_profile, reference_profile


def _profile(rng: np.random.Generator, n: int, shift: float = 0.0, parts: tuple[str, ...] = ("XR_WRIST", "XR_HAND")) -> dict:
    studies = pd.DataFrame({"probability": np.clip(rng.beta(2, 3, n) + shift, 0, 1), "body_part": rng.choice(parts, n)})
    views = pd.DataFrame(
        {
            "pixel_mean": rng.normal(90 + 100 * shift, 10, 2 * n),
            "pixel_std": rng.normal(40, 5, 2 * n),
            "height": rng.integers(300, 400, 2 * n),
            "width": rng.integers(250, 350, 2 * n),
            "body_part": rng.choice(parts, 2 * n),
        }
    )
    return reference_profile(studies, views)


def test_like_data_is_not_flagged_and_a_shift_is() -> None:
    rng = np.random.default_rng(0)
    reference = _profile(rng, 2000)
    same = drift_table(reference, _profile(rng, 400))
    assert not same.loc[same["group"] == "all", "flagged"].any(), same
    moved = drift_table(reference, _profile(rng, 400, shift=0.3))
    flagged = set(moved.loc[moved["flagged"] & (moved["group"] == "all"), "feature"])
    assert {"study_probability", "pixel_mean"} <= flagged and "height" not in flagged
    # Per body part too, and a new body-part mix is caught by the chi-square test.
    assert {"XR_WRIST", "XR_HAND"} <= set(moved.loc[moved["feature"] == "study_probability", "group"])
    mix = drift_table(reference, _profile(rng, 400, parts=("XR_WRIST", "XR_SHOULDER")))
    assert bool(mix.loc[mix["feature"] == "body_part_mix", "flagged"].iloc[0])


def test_psi_of_identical_samples_is_zero_and_grows_with_shift() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, 5000)
    assert psi(ref, ref) == 0.0
    assert psi(ref, rng.normal(0.2, 1, 5000)) < psi(ref, rng.normal(1.0, 1, 5000))


def test_audit_records_become_a_profile_and_a_report(tmp_path: Path) -> None:
    now = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
    records = [
        {
            "time": (now + dt.timedelta(minutes=k)).isoformat(),
            "probability": 0.1 * (k % 10),
            "body_part": "XR_WRIST" if k % 2 else None,
            "views": [{"pixel_mean": 80.0 + k, "pixel_std": 30.0, "height": 320, "width": 300}],
            "model": {"version": "1"},
        }
        for k in range(12)
    ]
    (tmp_path / "audit.jsonl.1").write_text("".join(json.dumps(r) + "\n" for r in records[:6]))
    (tmp_path / "audit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[6:]))
    read = read_audit(tmp_path, since=now + dt.timedelta(minutes=2))
    assert [r["time"] for r in read] == [r["time"] for r in records[2:]]
    current = current_profile(read)
    assert current["study"]["body_part"].count("unknown") == 5 and len(current["views"]["pixel_mean"]) == 10
    reference = _profile(np.random.default_rng(2), 200)
    table = drift_table(reference, current)
    page = render_report(table, reference, current, {"model": "mura-ensemble version 1"})
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page and "mura-ensemble version 1" in page


def test_a_reference_without_a_feature_still_renders() -> None:
    rng = np.random.default_rng(3)
    reference = _profile(rng, 50)
    reference["views"]["height"] = [float("nan")] * len(reference["views"]["height"])
    current = _profile(rng, 20)
    table = drift_table(reference, current)
    assert np.isnan(table.loc[(table["feature"] == "height") & (table["group"] == "all"), "psi"]).all()
    assert "<!doctype html>" in render_report(table, reference, current, {})


def test_drift_metrics_carry_the_last_report(tmp_path: Path) -> None:
    from mura.operations.drift import DriftMetrics

    rng = np.random.default_rng(1)
    metrics = DriftMetrics()
    metrics.update(drift_table(_profile(rng, 2000), _profile(rng, 300, shift=0.3)))
    sample = metrics.registry.get_sample_value
    assert sample("mura_drift_flagged", {"feature": "pixel_mean", "group": "all"}) == 1.0
    assert sample("mura_drift_flagged", {"feature": "height", "group": "all"}) == 0.0
    assert (sample("mura_drift_psi", {"feature": "pixel_mean", "group": "all"}) or 0.0) > 0.2
    assert sample("mura_drift_studies", {}) == 300.0  # studies, not views
    # The next report replaces the figures: a feature no longer shifted is no longer flagged.
    metrics.update(drift_table(_profile(rng, 2000), _profile(rng, 300)))
    assert sample("mura_drift_flagged", {"feature": "pixel_mean", "group": "all"}) == 0.0


def test_a_line_still_being_written_is_left_for_the_next_read(tmp_path: Path) -> None:
    record = {"time": "2026-11-29T10:00:00.000+00:00", "probability": 0.4}
    (tmp_path / "audit.jsonl").write_text(json.dumps(record) + "\n" + '{"time": "2026-11-29T10:00:01')
    assert read_audit(tmp_path) == [record]
