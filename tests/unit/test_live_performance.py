"""Live performance against radiologists' labels, and reviewers' accounts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mura.errors import ConfigError
from mura.operations.live_performance import FeedbackCollector, live_performance, validation_agreement_lower, wilson
from mura.operations.reviewers import ReviewerFile
from mura.runtime.served_config import ServingConfig, ValidationMetrics


def _rows(pairs: list[tuple[str, str]], part: str = "XR_WRIST", version: str = "2") -> pd.DataFrame:
    frame = pd.DataFrame(pairs, columns=["label", "radiologist_label"])
    return frame.assign(model_version=version, body_part=part, agreed=frame["label"] == frame["radiologist_label"])


def test_wilson_interval_matches_the_textbook_value() -> None:
    rate, low, high = wilson(8, 10)
    assert rate == 0.8 and low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert all(np.isnan(x) for x in wilson(0, 0))


def test_agreement_sensitivity_and_specificity_per_body_part_and_version() -> None:
    rows = pd.concat(
        [
            _rows(
                [("abnormal", "abnormal")] * 3
                + [("normal", "abnormal")]
                + [("normal", "normal")] * 4
                + [("abnormal", "normal")] * 2
            ),
            _rows([("abnormal", "abnormal")], part="XR_HAND"),
            _rows([("normal", "normal")], version="3"),
        ]
    )
    table = live_performance(rows).set_index(["model_version", "body_part"])
    wrist = table.loc[("2", "XR_WRIST")]
    assert wrist["n"] == 10 and wrist["agreement"] == pytest.approx(0.7)
    assert wrist["sensitivity"] == pytest.approx(0.75) and wrist["n_abnormal"] == 4
    assert wrist["specificity"] == pytest.approx(4 / 6) and wrist["n_normal"] == 6
    assert wrist["agreement_low"] < 0.7 < wrist["agreement_high"]
    assert table.loc[("2", "all")]["n"] == 11 and table.loc[("3", "all")]["n"] == 1
    assert np.isnan(table.loc[("3", "XR_WRIST")]["sensitivity"])  # no abnormal study reviewed: no sensitivity
    assert live_performance(rows.iloc[:0]).empty
    with pytest.raises(ValueError, match="agreed"):
        live_performance(rows.drop(columns="agreed"))


def _config() -> ServingConfig:
    return ServingConfig(
        variants=("a",),
        variant_weights={"a": 1.0},
        thresholds={"default": 0.5},
        operating_point="default",
        image_size=32,
        resize="stretch",
        max_pixels=10**6,
        serve_batch_size=4,
        synthetic_data=True,
        validation_per_body_part={"all": ValidationMetrics(group="all", n=100, accuracy=0.8)},
    )


class _Store:
    def __init__(self, rows: pd.DataFrame) -> None:
        self.rows = rows

    def reviewed(self, since: dt.datetime) -> pd.DataFrame:
        return self.rows[self.rows["reviewed_at"] >= pd.Timestamp(since)]


def test_prometheus_gauges_per_window_and_the_validation_floor() -> None:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    rows = _rows([("abnormal", "normal")] * 3 + [("abnormal", "abnormal")])
    rows["reviewed_at"] = pd.to_datetime([now - dt.timedelta(days=d) for d in (1, 2, 10, 20)], utc=True)
    registry = CollectorRegistry()
    registry.register(FeedbackCollector(_Store(rows), _config(), clock=lambda: now))
    text = generate_latest(registry).decode()
    assert 'mura_feedback_reviewed{body_part="all",model_version="2",window="7d"} 2.0' in text
    assert 'mura_feedback_reviewed{body_part="all",model_version="2",window="30d"} 4.0' in text
    assert 'mura_feedback_agreement_ratio{body_part="all",model_version="2",window="30d"} 0.25' in text
    floor = validation_agreement_lower(_config())["all"]
    assert floor == pytest.approx(wilson(80, 100)[1])
    assert f'mura_validation_agreement_lower_ratio{{body_part="all"}} {floor}' in text


def test_reviewers_tokens_are_stored_hashed_and_the_file_is_reread(tmp_path: Path) -> None:
    accounts = ReviewerFile(tmp_path / "reviewers")
    alice, bob = accounts.add("alice"), accounts.add("dr.bob@example")
    text = (tmp_path / "reviewers").read_text()
    assert alice not in text and bob not in text and "alice:sha256:" in text
    assert (tmp_path / "reviewers").stat().st_mode & 0o777 == 0o600
    other = ReviewerFile(tmp_path / "reviewers")  # a server reading the same file
    assert other.who(alice) == "alice" and other.who(bob) == "dr.bob@example"
    assert other.who("guess") is None and other.who("") is None
    assert accounts.remove("alice") and not accounts.remove("alice")
    assert other.who(alice) is None and other.who(bob) == "dr.bob@example"
    with pytest.raises(ValueError):
        accounts.add("no spaces please")
    (tmp_path / "broken").write_text("alice:md5:abc\n")
    with pytest.raises(ConfigError, match="broken:1"):
        ReviewerFile(tmp_path / "broken").who("x")
