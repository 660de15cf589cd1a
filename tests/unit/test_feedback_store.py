"""The feedback store (mura.operations.feedback): answers, reviews, kept views, retention."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mura.operations.feedback import Answer, FeedbackStore, Region, Retention, Review, agreed_label, case_image

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _answer(answer_id: str, label: str = "abnormal", when: dt.datetime = NOW, part: str | None = "XR_WRIST") -> Answer:
    return Answer(
        answer_id=answer_id,
        study_key="k-" + answer_id,
        entry_point="web",
        model_name="mura-ensemble",
        model_version="3",
        operating_point="default",
        threshold=0.5,
        probability=0.8 if label == "abnormal" else 0.2,
        label=label,  # type: ignore[arg-type]
        body_part=part,
        synthetic_model=True,
        views=2,
        answered_at=when,
    )


def test_labels_follow_the_assessment() -> None:
    assert agreed_label("abnormal", "agree", None) == "abnormal"
    assert agreed_label("abnormal", "accept", None) == "abnormal"
    assert agreed_label("abnormal", "reject", None) == "normal"
    assert agreed_label("normal", "reject", None) == "abnormal"
    assert agreed_label("normal", "modified", "abnormal") == "abnormal"
    with pytest.raises(ValueError, match="label"):
        agreed_label("normal", "disagree", None)
    with pytest.raises(ValueError, match="assessment"):
        agreed_label("normal", "maybe", None)


def test_a_region_is_checked_and_stored_as_fractions() -> None:
    assert Region(1, 0.1, 0.2, 0.5, 0.75).text() == "0.1000,0.2000,0.5000,0.7500"
    for bad in ((0, 0.5, 0.1, 0.4, 0.9), (0, 0.1, 0.1, 1.2, 0.5), (-1, 0.1, 0.1, 0.2, 0.2)):
        with pytest.raises(ValueError):
            Region(*bad)  # type: ignore[arg-type]


def test_a_review_is_read_back_joined_with_its_answer(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path)
    store.record_answer(_answer("a1"))
    store.record_answer(_answer("a2", label="normal"))
    store.record_answer(_answer("a1", label="normal"))  # the same answer again (a restart): the first row stays
    assert store.answer("a1") == _answer("a1") and store.answer("nope") is None
    store.record_review(Review("a1", "web", "alice", "agree", "abnormal"), now=NOW)
    store.record_review(Review("a2", "web", "bob", "disagree", "abnormal", Region(0, 0.1, 0.1, 0.3, 0.4), "a fracture"), now=NOW)
    store.record_review(Review("a2", "web", "bob", "agree", "normal"), now=NOW + dt.timedelta(minutes=1))  # changed mind
    latest = store.reviewed()
    assert list(latest["answer_id"]) == ["a1", "a2"] and list(latest["agreed"]) == [True, True]
    every = store.reviewed(latest_only=False)
    assert len(every) == 3 and every.iloc[1]["region"] == "0.1000,0.1000,0.3000,0.4000"
    assert every.iloc[1]["reason"] == "a fracture"
    assert not bool(every.iloc[1]["agreed"]) and every.iloc[1]["reviewer"] == "bob"
    assert len(store.reviewed(since=NOW + dt.timedelta(seconds=30))) == 1
    with pytest.raises(KeyError):
        store.record_review(Review("missing", "web", "alice", "agree", "normal"))


def test_keys_are_keyed_hashes_and_the_database_is_crash_safe(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path)
    uid = "1.2.826.0.1.3680043.8.498.1"
    assert store.key(uid) == store.key(uid) != FeedbackStore(tmp_path / "other").key(uid) and uid not in store.key(uid)
    assert (tmp_path / ".feedback-key").stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(tmp_path / "feedback.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_views_are_kept_as_header_less_pngs_at_most_512_pixels(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path)
    big = np.tile(np.arange(256, dtype=np.uint8), (700, 4))  # 700 x 1024
    store.record_answer(_answer("a1"), [big, None])
    kept = store.images_of("a1")
    assert [p.name for p in kept] == ["view-01.png"]
    with Image.open(kept[0]) as image:
        assert image.size == (512, 350) and image.mode == "L" and not image.info.get("exif")
    store.record_answer(_answer("a2"))
    assert store.keep_views("a2", [np.zeros((10, 10), np.uint8)] * 2) == 2 and len(store.images_of("a2")) == 2
    assert store.keep_views("a2", [np.zeros((10, 10), np.uint8)]) == 2  # kept once
    assert case_image(np.zeros((100, 40), np.uint8)).shape == (100, 40)


def test_retention_deletes_unreviewed_answers_first_and_reviewed_ones_later(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path, retention=Retention(answer_days=30, feedback_days=365))
    old = NOW - dt.timedelta(days=40)
    store.record_answer(_answer("stale", when=old), [np.zeros((8, 8), np.uint8)])
    store.record_answer(_answer("reviewed", when=old), [np.zeros((8, 8), np.uint8)])
    store.record_answer(_answer("fresh"))
    store.record_review(Review("reviewed", "web", "alice", "agree", "abnormal"), now=old)
    assert store.prune(NOW) == (1, 0)
    assert store.answer("stale") is None and store.images_of("stale") == [] and store.answer("fresh") is not None
    assert store.answer("reviewed") is not None and store.images_of("reviewed")
    assert store.prune(NOW + dt.timedelta(days=400)) == (1, 1)  # fresh (unreviewed) and reviewed are both past
    assert store.reviewed().empty and store.images_of("reviewed") == []
