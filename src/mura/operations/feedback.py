"""Radiologists' feedback: what the model answered, what the reviewer said, kept durably.

Two tables, one database (SQLite in the feedback folder by default; the team's PostgreSQL
with ``--feedback-db postgresql://…``), written through SQLAlchemy Core:

- ``answers``: one row per answered study — the model name and version, the operating point
  and its threshold, the calibrated probability, the label, the body part, whether the model
  is synthetic, and a *study key*: a keyed hash (HMAC-SHA256, key kept in the feedback folder)
  of what identifies the study. The row's ``answer_id`` is a random token (web page) or the
  keyed hash of the SOP Instance UID of the SR the DICOM node sent (so an assessment that
  references that SR finds it). No UID, name or file name is stored.
- ``feedback``: one row per review — the reviewer's account name, the assessment (``agree`` /
  ``disagree`` from the page; ``accept`` / ``reject`` / ``modified`` from a DICOM assessment),
  the radiologist's label, an optional region (fractions of the view's width and height), an
  optional free-text reason (stored, never logged or exported), and the time.

The reviewed study's views are kept as 8-bit PNG pixels (no header, so no DICOM tag survives;
views whose DICOM header says ``BurnedInAnnotation`` YES are not kept) under
``images/<answer_id>/`` for ``mura feedback export``. SQLite runs in WAL mode with
``synchronous=FULL``: a row acknowledged to the reviewer survives ``kill -9`` and power loss;
image files are written to a temporary name, fsynced and renamed before the row is committed.

Retention (:class:`Retention`): answers nobody reviewed are deleted after ``answer_days``
(with the views the node kept for them), reviewed ones with their feedback and images after
``feedback_days``; :meth:`FeedbackStore.prune` runs at start and hourly in the servers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import sqlalchemy as sa
from PIL import Image

from mura.data.uploads import DecodedUpload
from mura.errors import ConfigError
from mura.runtime.predictor import Predictor, StudyResult, registered_name

__all__ = [
    "ASSESSMENTS",
    "Answer",
    "FeedbackStore",
    "Region",
    "Retention",
    "Review",
    "agreed_label",
    "answer_of",
    "case_image",
    "keepable_views",
    "start_pruning",
]

logger = logging.getLogger(__name__)

Assessment = Literal["agree", "disagree", "accept", "reject", "modified"]
ASSESSMENTS: tuple[str, ...] = get_args(Assessment)
Label = Literal["normal", "abnormal"]
LABELS: tuple[str, ...] = get_args(Label)
KEY_FILE = ".feedback-key"
CASE_SIDE = 512  # kept views' long side: MURA's own image size
REASON_CHARS = 1000

_metadata = sa.MetaData()
ANSWERS = sa.Table(
    "answers",
    _metadata,
    sa.Column("answer_id", sa.String(64), primary_key=True),
    sa.Column("study_key", sa.String(64), nullable=False, index=True),
    sa.Column("entry_point", sa.String(16), nullable=False),
    sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("operating_point", sa.String(32), nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("label", sa.String(8), nullable=False),
    sa.Column("body_part", sa.String(32), nullable=True),
    sa.Column("synthetic_model", sa.Boolean, nullable=False),
    sa.Column("views", sa.Integer, nullable=False),
    sa.Column("views_kept", sa.Integer, nullable=False, default=0),
)
FEEDBACK = sa.Table(
    "feedback",
    _metadata,
    sa.Column("feedback_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("answer_id", sa.String(64), sa.ForeignKey("answers.answer_id"), nullable=False, index=True),
    sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("reviewer", sa.String(128), nullable=False),
    sa.Column("assessment", sa.String(16), nullable=False),
    sa.Column("radiologist_label", sa.String(8), nullable=False),
    sa.Column("region_view", sa.Integer, nullable=True),
    sa.Column("region", sa.String(96), nullable=True),  # "x0,y0,x1,y1" as fractions of the view
    sa.Column("reason", sa.Text, nullable=False, default=""),
)


@dataclass(frozen=True)
class Region:
    """A rectangle a reviewer drew on one view, as fractions (0-1) of the view's width and height."""

    view: int
    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        corners = (self.x0, self.y0, self.x1, self.y1)
        if self.view < 0 or not all(0.0 <= c <= 1.0 for c in corners) or self.x0 >= self.x1 or self.y0 >= self.y1:
            raise ValueError("a region is a view index >= 0 and 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1")

    def text(self) -> str:
        """``x0,y0,x1,y1`` rounded to 4 decimals (the stored form)."""
        return ",".join(f"{c:.4f}" for c in (self.x0, self.y0, self.x1, self.y1))


@dataclass(frozen=True)
class Answer:
    """What the model answered for one study (recorded when it answered)."""

    answer_id: str
    study_key: str
    entry_point: str
    model_name: str
    model_version: str
    operating_point: str
    threshold: float
    probability: float
    label: Label
    body_part: str | None
    synthetic_model: bool
    views: int
    answered_at: dt.datetime


@dataclass(frozen=True)
class Review:
    """One reviewer's assessment of an answer."""

    answer_id: str
    source: str  # web | dicom
    reviewer: str
    assessment: Assessment
    radiologist_label: Label
    region: Region | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.assessment not in ASSESSMENTS:
            raise ValueError(f"assessment {self.assessment!r}: one of {', '.join(ASSESSMENTS)}")
        if self.radiologist_label not in LABELS:
            raise ValueError(f"label {self.radiologist_label!r}: normal or abnormal")
        if not self.reviewer:
            raise ValueError("a review needs the reviewer's account")


@dataclass(frozen=True)
class Retention:
    """How long rows are kept: unreviewed answers ``answer_days``, reviewed ones ``feedback_days``."""

    answer_days: float = 30.0
    feedback_days: float = 730.0


def agreed_label(model_label: str, assessment: str, stated: str | None) -> str:
    """The radiologist's label from an assessment (pure).

    ``agree``/``accept``: the model's label; ``reject``: the other one; ``disagree``/``modified``:
    the label the reviewer stated (required).

    Raises:
        ValueError: an unknown assessment, or a stated label missing or not normal/abnormal.
    """
    if assessment in ("agree", "accept"):
        return model_label
    if assessment == "reject":
        return "normal" if model_label == "abnormal" else "abnormal"
    if assessment in ("disagree", "modified"):
        if stated not in LABELS:
            raise ValueError(f"{assessment}: give the radiologist's label (normal or abnormal)")
        return stated
    raise ValueError(f"assessment {assessment!r}: one of {', '.join(ASSESSMENTS)}")


def case_image(gray: np.ndarray, side: int = CASE_SIDE) -> np.ndarray:
    """A view as kept for export: 8-bit grayscale, long side at most ``side`` (pure)."""
    image = Image.fromarray(np.asarray(gray, dtype=np.uint8))
    image.thumbnail((side, side))
    return np.asarray(image)


def keepable_views(decoded: Sequence[DecodedUpload]) -> list[np.ndarray | None]:
    """The views that may be kept for training (pixels only), None for a DICOM with burned-in annotation."""
    return [None if upload.burned_in_annotation else case_image(upload.gray) for upload in decoded]


def answer_of(answer_id: str, study_key: str, entry_point: str, predictor: Predictor, result: StudyResult) -> Answer:
    """The :class:`Answer` row of a study the predictor just answered."""
    return Answer(
        answer_id=answer_id,
        study_key=study_key,
        entry_point=entry_point,
        model_name=registered_name(predictor.uri),
        model_version=str(predictor.version),
        operating_point=result.operating_point,
        threshold=float(result.thresholds[result.operating_point]),
        probability=float(result.probability),
        label=result.label,  # type: ignore[arg-type]  # "normal" | "abnormal"
        body_part=result.body_part,
        synthetic_model=bool(result.synthetic_data),
        views=len(result.views),
        answered_at=dt.datetime.now(dt.UTC),
    )


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (metrics) never block the writer
    cursor.execute("PRAGMA synchronous=FULL")  # a committed row is on disk before the reviewer hears "recorded"
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Write a PNG atomically: temporary name, fsync, rename."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


class FeedbackStore:
    """The feedback database and the kept views.

    Args:
        folder: holds the keyed-hash key, the kept views and (by default) ``feedback.db``.
        database_url: a SQLAlchemy URL (``postgresql://…`` in the team stack); default SQLite in ``folder``.
        retention: how long rows are kept.

    Raises:
        ConfigError: the database cannot be opened.
    """

    def __init__(self, folder: Path, database_url: str | None = None, retention: Retention | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.retention = retention or Retention()
        self._key = _key(self.folder / KEY_FILE)
        url = database_url or f"sqlite:///{(self.folder / 'feedback.db').resolve()}"
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            _metadata.create_all(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise ConfigError(f"cannot open the feedback database: {type(exc).__name__}") from None

    def key(self, identity: str | bytes) -> str:
        """A keyed hash of a study's or an SR's identity (never stored in clear)."""
        data = identity.encode() if isinstance(identity, str) else identity
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()[:40]

    def images_of(self, answer_id: str) -> list[Path]:
        """The kept views of an answer, in view order."""
        folder = self.folder / "images" / answer_id
        return sorted(folder.glob("view-*.png")) if folder.is_dir() else []

    def record_answer(self, answer: Answer, views: Sequence[np.ndarray | None] = ()) -> None:
        """Record an answer and keep its views (``None`` for a view that may not be kept).

        Idempotent: answering the same study again (a node restart) leaves the first row.
        """
        kept = self._keep_views(answer.answer_id, views)
        row = {**answer.__dict__, "views_kept": kept}
        with self.engine.begin() as connection:
            exists = connection.execute(sa.select(ANSWERS.c.answer_id).where(ANSWERS.c.answer_id == answer.answer_id)).first()
            if exists is None:
                connection.execute(ANSWERS.insert().values(**row))

    def keep_views(self, answer_id: str, views: Sequence[np.ndarray | None]) -> int:
        """Keep the views of an answer recorded without them (the web page keeps them only on review)."""
        if self.images_of(answer_id):
            return len(self.images_of(answer_id))
        kept = self._keep_views(answer_id, views)
        with self.engine.begin() as connection:
            connection.execute(ANSWERS.update().where(ANSWERS.c.answer_id == answer_id).values(views_kept=kept))
        return kept

    def _keep_views(self, answer_id: str, views: Sequence[np.ndarray | None]) -> int:
        if not any(v is not None for v in views):
            return 0
        folder = self.folder / "images" / answer_id
        folder.mkdir(parents=True, exist_ok=True)
        kept = 0
        for index, view in enumerate(views, 1):
            if view is not None:
                _write_png(folder / f"view-{index:02d}.png", case_image(view))
                kept += 1
        return kept

    def answer(self, answer_id: str) -> Answer | None:
        """The recorded answer, or None (unknown, or deleted by retention)."""
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(ANSWERS).where(ANSWERS.c.answer_id == answer_id)).mappings().first()
        if row is None:
            return None
        fields = {k: row[k] for k in Answer.__dataclass_fields__}
        fields["answered_at"] = _aware(fields["answered_at"])
        return Answer(**fields)

    def record_review(self, review: Review, now: dt.datetime | None = None) -> int:
        """Record a review (committed and on disk when this returns); its row id.

        Raises:
            KeyError: no answer ``review.answer_id`` is recorded.
        """
        if self.answer(review.answer_id) is None:
            raise KeyError(review.answer_id)
        values = {
            "answer_id": review.answer_id,
            "reviewed_at": now or dt.datetime.now(dt.UTC),
            "source": review.source,
            "reviewer": review.reviewer,
            "assessment": review.assessment,
            "radiologist_label": review.radiologist_label,
            "region_view": None if review.region is None else review.region.view,
            "region": None if review.region is None else review.region.text(),
            "reason": review.reason[:REASON_CHARS],
        }
        with self.engine.begin() as connection:
            result = connection.execute(FEEDBACK.insert().values(**values).returning(FEEDBACK.c.feedback_id))
            return int(result.scalar_one())

    def assess(
        self,
        answer_id: str,
        source: str,
        reviewer: str,
        assessment: str,
        stated_label: str | None = None,
        region: Region | None = None,
        reason: str = "",
    ) -> tuple[Answer, Review, int]:
        """Record a reviewer's assessment of a recorded answer (web page or PACS): the answer, the review, its row id.

        Raises:
            LookupError: no such answer (never recorded, or past retention).
            ValueError: a label missing for a disagreement, or a region on no view of the study.
        """
        answer = self.answer(answer_id)
        if answer is None:
            raise LookupError(answer_id)
        label = agreed_label(answer.label, assessment, stated_label)
        if region is not None and region.view >= answer.views:
            raise ValueError(f"the region names view {region.view + 1}; the study has {answer.views}")
        review = Review(answer_id, source, reviewer, assessment, label, region, reason)  # type: ignore[arg-type]
        return answer, review, self.record_review(review)

    def reviewed(self, since: dt.datetime | None = None, latest_only: bool = True) -> pd.DataFrame:
        """Reviewed answers joined with their feedback, one row per review (or the latest per answer).

        Columns: every answer column, then ``reviewed_at, source, reviewer, assessment,
        radiologist_label, region_view, region, reason, feedback_id``, and ``agreed`` (bool).
        """
        query = sa.select(ANSWERS, *[c for c in FEEDBACK.c if c.name != "answer_id"]).join(
            FEEDBACK, FEEDBACK.c.answer_id == ANSWERS.c.answer_id
        )
        if since is not None:
            query = query.where(FEEDBACK.c.reviewed_at >= since)
        with self.engine.connect() as connection:
            frame = pd.DataFrame(connection.execute(query.order_by(FEEDBACK.c.feedback_id)).mappings().all())
        if frame.empty:
            return pd.DataFrame(columns=[*ANSWERS.c.keys(), *[c for c in FEEDBACK.c.keys() if c != "answer_id"], "agreed"])
        if latest_only:  # a reviewer who changes their mind: the last word counts
            frame = frame.drop_duplicates("answer_id", keep="last").reset_index(drop=True)
        frame["agreed"] = frame["label"] == frame["radiologist_label"]
        for column in ("answered_at", "reviewed_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    def prune(self, now: dt.datetime | None = None) -> tuple[int, int]:
        """Apply the retention: ``(unreviewed answers deleted, reviewed answers deleted)``."""
        now = now or dt.datetime.now(dt.UTC)
        answer_cut = now - dt.timedelta(days=self.retention.answer_days)
        feedback_cut = now - dt.timedelta(days=self.retention.feedback_days)
        reviewed = sa.select(FEEDBACK.c.answer_id)
        with self.engine.begin() as connection:
            stale = (
                connection.execute(
                    sa.select(ANSWERS.c.answer_id).where(ANSWERS.c.answered_at < answer_cut, ANSWERS.c.answer_id.not_in(reviewed))
                )
                .scalars()
                .all()
            )
            old = (
                connection.execute(
                    sa.select(ANSWERS.c.answer_id).where(
                        ANSWERS.c.answer_id.in_(reviewed),
                        ANSWERS.c.answer_id.not_in(sa.select(FEEDBACK.c.answer_id).where(FEEDBACK.c.reviewed_at >= feedback_cut)),
                    )
                )
                .scalars()
                .all()
            )
            if old:
                connection.execute(FEEDBACK.delete().where(FEEDBACK.c.answer_id.in_(old)))
            if stale or old:
                connection.execute(ANSWERS.delete().where(ANSWERS.c.answer_id.in_([*stale, *old])))
        for answer_id in [*stale, *old]:
            shutil.rmtree(self.folder / "images" / answer_id, ignore_errors=True)
        if stale or old:
            logger.info("feedback retention: %d unreviewed and %d reviewed answers deleted", len(stale), len(old))
        return len(stale), len(old)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()


def start_pruning(store: FeedbackStore, every_s: float = 3600.0) -> threading.Event:
    """Apply the retention now and every ``every_s`` seconds in a daemon thread; set the event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                store.prune()
            except Exception:  # a database briefly down must not end the schedule
                logger.exception("feedback retention failed; retried in %.0f s", every_s)
            if stop.wait(every_s):
                return

    threading.Thread(target=loop, name="mura-feedback-retention", daemon=True).start()
    return stop


def _key(path: Path) -> bytes:
    """The folder's hashing key, created once (two servers sharing the folder may start together)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
            handle.flush()
            os.fsync(handle.fileno())
    for _ in range(50):  # the other server may be writing it this very moment
        key = path.read_bytes()
        if len(key) == 32:
            return key
        time.sleep(0.1)
    raise ConfigError(f"{path} is not a 32-byte key: remove it only if no feedback was ever recorded with it")


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back naive: they were written in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
