"""The one scoring path: ``Predictor.load(uri).predict_study(views)`` (re-exported as :mod:`mura.api`).

Uses the registered ``mura-ensemble`` (or a local pyfunc folder) through the
same :class:`mura.runtime.service.EnsembleService` as ``mlflow models serve``, so the
API, the CLI, the web UI, the DICOM node and the served model preprocess and predict alike.
A pre-screening suggestion for a radiologist, never a diagnosis.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from packaging.requirements import InvalidRequirement, Requirement

from mura.config import ResizePolicy
from mura.data.imaging import ImageDecodeError, heat_on_image, resize_gray
from mura.data.sources import normalize_body_part
from mura.data.uploads import DecodedUpload, decode_upload
from mura.modeling.averaging import ENSEMBLE, prob_column
from mura.modeling.boxes import Box, study_boxes
from mura.runtime.card_schema import ModelCard
from mura.runtime.served_config import ServingConfig
from mura.runtime.service import EnsembleService
from mura.tracking import server_errors, use_tracking_uri
from mura.tracking import tracking_uri as default_uri

logger = logging.getLogger(__name__)

__all__ = [
    "Predictor",
    "StudyResult",
    "ViewInput",
    "ViewResult",
    "registered_name",
    "registered_version",
    "resolve_model_uri",
    "study_result",
]

ViewInput = str | Path | bytes | np.ndarray


@dataclass(frozen=True)
class ViewResult:
    """One view: its ensemble and per-variant probabilities and optional heatmaps."""

    name: str
    probability: float
    variants: dict[str, float]
    kind: str
    gray: np.ndarray  # full-resolution 8-bit image (for display)
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)  # "ensemble" and each variant, [0, 1], over the image
    warnings: tuple[str, ...] = ()  # why the answer may not apply to this view (from its DICOM tags)
    probability_raw: float | None = None  # the uncalibrated ensemble average (audit); None: same as probability


@dataclass(frozen=True)
class StudyResult:
    """A study's pre-screening suggestion."""

    probability: float
    labels: dict[str, str]  # operating point -> "abnormal" | "normal"
    thresholds: dict[str, float]
    operating_point: str
    variants: dict[str, float]  # study mean per variant
    views: list[ViewResult]
    body_part: str | None
    synthetic_data: bool
    probability_raw: float | None = None  # the uncalibrated study probability (audit); None: same as probability
    # Box operating point -> each view's boxes in that view's own pixels (empty without heatmaps or box levels).
    boxes: dict[str, list[list[Box]]] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """Each view's scope warnings, prefixed with the view's name (empty when every view is in scope)."""
        return [f"{v.name}: {w}" for v in self.views for w in v.warnings]

    @property
    def label(self) -> str:
        """The label at the model's registered operating point."""
        return self.labels[self.operating_point]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no pixels)."""
        return {
            "probability": self.probability,
            "probability_raw": self.probability_raw,
            "label": self.label,
            "labels": self.labels,
            "thresholds": self.thresholds,
            "operating_point": self.operating_point,
            "variants": self.variants,
            "body_part": self.body_part,
            "synthetic_data": self.synthetic_data,
            "warnings": self.warnings,
            "views": [
                {
                    "name": v.name,
                    "probability": v.probability,
                    "probability_raw": v.probability_raw,
                    "variants": v.variants,
                    "kind": v.kind,
                    "warnings": list(v.warnings),
                }
                for v in self.views
            ],
            **(
                {"boxes": {p: [[b.to_dict() for b in view] for view in per_view] for p, per_view in self.boxes.items()}}
                if self.boxes
                else {}
            ),
        }


class Predictor:
    """Loaded ensemble for study-level predictions with optional Grad-CAM heatmaps."""

    def __init__(self, service: EnsembleService, uri: str, version: str = "local") -> None:
        self.service = service
        self.uri = uri
        self.version = version  # the registered version the URI resolved to ("local" for a folder)

    @classmethod
    def load(cls, uri: str, tracking_uri: str | None = None, concurrent: int = 1, warm_up: bool = True) -> Predictor:
        """Load ``models:/mura-ensemble@champion``, ``models:/mura-ensemble/1`` or a local model folder.

        Args:
            uri: model URI or path.
            tracking_uri: MLflow tracking store (default ``$MLFLOW_TRACKING_URI`` or ./mlflow.db).
            concurrent: studies that will be predicted at once (servers); the optimized runtime then
                gives each its own stream of cores instead of every core to each.
            warm_up: run each batch size through at load so no first request is slow (servers);
                a one-shot command (``mura predict``) skips it and starts sooner.
        """
        model, version = load_served_model(str(uri), tracking_uri, {"streams": concurrent, "warm_up": warm_up})
        return cls(model.unwrap_python_model().service, str(uri), version)

    def prepare_heatmaps(self) -> None:
        """Make the heatmap path ready now (servers call it at start, so the first study with heatmaps is not slower).

        On the optimized runtime, Grad-CAM reads the float32 model's feature maps; when a reduced
        precision serves the probabilities, that model is compiled here instead of at the first use.
        """
        self.service.runner.prepare_heatmaps()

    @property
    def thread_safe(self) -> bool:
        """Whether several studies may be predicted at once (the optimized runtime), or one at a time (Keras)."""
        return self.service.runner.thread_safe

    @property
    def model_card(self) -> ModelCard | None:
        """The registered model card (its lineage names the version this URI resolved to); None for older models."""
        card = self.service.model_card
        return None if card is None else card.with_lineage(version=self.version)

    @property
    def config(self) -> ServingConfig:
        """The registered configuration (variants, thresholds, preprocessing, metrics)."""
        config: ServingConfig = self.service.config
        return config

    def decode_view(self, view: ViewInput, index: int) -> tuple[str, DecodedUpload]:
        """One view's name and model pixels (``index`` names it when it has no file name).

        Raises:
            ImageDecodeError: an unreadable view.
        """
        config = self.config
        if isinstance(view, np.ndarray):
            gray = view if view.dtype == np.uint8 else np.clip(view, 0, 255).astype(np.uint8)
            if gray.ndim != 2:
                raise ValueError(f"view {index}: arrays must be 2-D grayscale, got shape {view.shape}")
            return f"view{index + 1}", DecodedUpload(resize_gray(gray, config.image_size, config.resize), gray, "array", None)
        name = Path(view).name if isinstance(view, (str, Path)) else f"view{index + 1}"
        data = Path(view).read_bytes() if isinstance(view, (str, Path)) else bytes(view)
        return name, decode_upload(data, config.image_size, config.resize, config.max_pixels)

    def predict_study(self, views: Sequence[ViewInput], body_part: str | None = None, heatmaps: bool = False) -> StudyResult:
        """Predict one study from its views (file paths, encoded bytes, or 2-D uint8 arrays).

        Args:
            views: 1 or more views of the same study (PNG, JPEG or DICOM; type detected by content).
            body_part: optional (``WRIST`` or ``XR_WRIST``); taken from the DICOM ``BodyPartExamined``
                tag when absent; normalized to MURA's ``XR_<PART>`` names.
            heatmaps: also compute Grad-CAM maps per variant and their mean.

        Returns:
            The study result.

        Raises:
            ValueError: no views, or an unreadable view (the message names it).
        """
        return self.predict_decoded(self.decode_views(views), body_part, heatmaps)

    def decode_views(self, views: Sequence[ViewInput]) -> list[tuple[str, DecodedUpload]]:
        """Every view's name and model pixels.

        Raises:
            ValueError: no views, or an unreadable view (the message names it and why).
        """
        if not views:
            raise ValueError("a study needs at least one view")
        decoded = []
        for i, view in enumerate(views):
            try:
                decoded.append(self.decode_view(view, i))
            except ImageDecodeError as exc:
                raise ValueError(f"view {i + 1}: {exc.reason.replace('_', ' ')}: {exc.detail}") from None
        return decoded

    def predict_decoded(
        self, decoded: Sequence[tuple[str, DecodedUpload]], body_part: str | None = None, heatmaps: bool = False
    ) -> StudyResult:
        """Predict one study from views already decoded by :meth:`decode_view` (see :meth:`predict_study`)."""
        if not decoded:
            raise ValueError("a study needs at least one view")
        pixels = np.stack([upload.pixels for _, upload in decoded])
        study_ids = ["study"] * len(pixels)
        if heatmaps:
            frame, maps = self.service.predict_with_heatmaps(pixels, study_ids)
        else:
            frame, maps = self.service.predict_pixels(pixels, study_ids), {}
        return study_result(self.config, frame, decoded, body_part, maps)

    def heatmaps(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Grad-CAM per variant and the ensemble's (mean of the variants' maps), each (N, S, S) in [0, 1]."""
        maps: dict[str, np.ndarray] = self.service.heatmaps(pixels)[1]
        return maps

    def with_heatmaps(self, result: StudyResult, decoded: Sequence[tuple[str, DecodedUpload]]) -> StudyResult:
        """``result`` (of :meth:`predict_decoded` on ``decoded``, without heatmaps) with its views' heatmaps added.

        Runs only the heatmap pass: a caller that answers first and draws later (the DICOM node
        sends its report, then the heatmap images) pays no second probability pass.
        """
        maps = self.heatmaps(np.stack([upload.pixels for _, upload in decoded]))
        views = [
            dataclasses.replace(view, heatmaps=_view_maps(maps, i, view.gray, self.config.resize))
            for i, view in enumerate(result.views)
        ]
        return dataclasses.replace(result, views=views, boxes=view_boxes(self.config, result.probability, views))


def _view_maps(maps: dict[str, np.ndarray], i: int, gray: np.ndarray, resize: ResizePolicy) -> dict[str, np.ndarray]:
    """The ``i``-th view's heatmaps (ensemble and variants) cropped to the part of the square that holds its image."""
    return {name: heat_on_image(batch[i], gray.shape[:2], resize) for name, batch in maps.items()}


def study_result(
    config: ServingConfig,
    frame: Any,
    decoded: Sequence[tuple[str, DecodedUpload]],
    body_part: str | None = None,
    maps: dict[str, np.ndarray] | None = None,
) -> StudyResult:
    """One study's result from its served rows (``EnsembleService`` frame, one row per view, in order) (pure).

    Args:
        config: the served model's configuration (variants, thresholds, operating point).
        frame: the study's rows as the service answers them.
        decoded: each view's name and decoded upload, in the rows' order.
        body_part: the caller's body part; else the first DICOM ``BodyPartExamined``.
        maps: heatmaps per variant and ensemble, each (N, S, S), when computed.
    """
    maps = maps or {}
    names = list(config.variants)
    view_results = [
        ViewResult(
            name=name,
            probability=float(frame["probability"].iloc[i]),
            variants={n: float(frame[prob_column(n)].iloc[i]) for n in names},
            kind=upload.kind,
            gray=upload.gray,
            heatmaps=_view_maps(maps, i, upload.gray, config.resize),
            warnings=upload.warnings,
            probability_raw=float(frame["probability_raw"].iloc[i]),
        )
        for i, (name, upload) in enumerate(decoded)
    ]
    probability = float(frame["study_probability"].iloc[0])
    thresholds = {k: float(v) for k, v in config.thresholds.items()}
    part = normalize_body_part(body_part or next((u.body_part for _, u in decoded if u.body_part), None))
    return StudyResult(
        boxes=view_boxes(config, probability, view_results),
        probability=probability,
        labels={k: "abnormal" if probability >= t else "normal" for k, t in thresholds.items()},
        thresholds=thresholds,
        operating_point=config.operating_point,
        variants={n: float(frame[prob_column(n)].mean()) for n in names},
        views=view_results,
        body_part=part,
        synthetic_data=config.synthetic_data,
        probability_raw=float(frame["study_probability_raw"].iloc[0]),
    )


def view_boxes(config: ServingConfig, probability: float, views: Sequence[ViewResult]) -> dict[str, list[list[Box]]]:
    """Each view's boxes at the box operating points, in the view's own pixels (empty without heatmaps or levels) (pure)."""
    if not config.box_levels or not views or any(ENSEMBLE not in v.heatmaps for v in views):
        return {}
    heat = [v.heatmaps[ENSEMBLE] for v in views]
    found = study_boxes(heat, probability, config.thresholds, config.box_levels)
    return {
        point: [[b.scaled(h.shape, v.gray.shape[:2]) for b in boxes] for boxes, h, v in zip(per_view, heat, views, strict=True)]
        for point, per_view in found.items()
    }


def load_served_model(uri: str, tracking_uri: str | None, model_config: dict[str, Any]) -> tuple[Any, str]:
    """Load the ``mura-ensemble`` pyfunc at ``uri`` (``model_config``: its load-time settings); the model and its version.

    MLflow's loader checks the model's requirements by mapping every installed package's files
    to its modules (~1.2 s of each start on a full environment): the model is loaded without it,
    and :func:`environment_mismatches` warns about the same requirements by name instead.

    Raises:
        TrackingError: the tracking server failed or refused (one line).
    """
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store

    store = use_tracking_uri(tracking_uri or default_uri())
    with server_errors(f"loading {uri}", store):
        # Resolved once: an alias that moves during the download (a promotion while a server
        # restarts) cannot make the server load one version and name another.
        concrete, version = resolve_model_uri(uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=concrete))
        for mismatch in environment_mismatches(local):
            logger.warning("the model at %s was logged with %s", uri, mismatch)
        model = mlflow.pyfunc.load_model(str(local), model_config=model_config, suppress_warnings=True)
    return model, version


def environment_mismatches(model_dir: Path) -> list[str]:
    """What the model was logged with that this environment lacks: its Python minor version, unmet pinned requirements.

    Reads ``MLmodel`` and ``requirements.txt`` of a downloaded pyfunc; each requirement is
    checked by its distribution name. Markers that do not apply here are skipped.
    """
    out = []
    meta = yaml.safe_load((model_dir / "MLmodel").read_text()) if (model_dir / "MLmodel").is_file() else {}
    logged = str((meta.get("flavors") or {}).get("python_function", {}).get("python_version") or "")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if logged and ".".join(logged.split(".")[:2]) != here:
        out.append(f"Python {logged} (this is Python {platform.python_version()})")
    requirements = model_dir / "requirements.txt"
    lines = requirements.read_text().splitlines() if requirements.is_file() else []
    for line in (raw.strip() for raw in lines):
        if not line or line.startswith(("#", "-")):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:  # a path or URL: nothing to compare
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            out.append(f"{line} (not installed here)")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            out.append(f"{line} (installed here: {installed})")
    return out


def resolve_model_uri(uri: str) -> tuple[str, str]:
    """The concrete URI and version ``uri`` names now: ``models:/name@alias`` → (``models:/name/N``, ``N``).

    A ``models:/name/N`` URI is already concrete; anything else (a local folder, ``runs:/``) is
    returned as it is, with the version ``local``. Resolve once and use both halves: resolving
    an alias twice can name two versions if it moves in between.
    """
    from mlflow import MlflowClient  # lazy: heavy (~1 s): only when talking to the tracking store

    if not uri.startswith("models:/"):
        return uri, "local"
    name, _, alias = uri.removeprefix("models:/").partition("@")
    if alias:
        version = str(MlflowClient().get_model_version_by_alias(name, alias.strip("/")).version)
        return f"models:/{name}/{version}", version
    return uri, uri.rstrip("/").rsplit("/", 1)[-1]


def registered_version(uri: str) -> str:
    """The registry version a ``models:/name/N`` or ``models:/name@alias`` URI names now ("local" otherwise)."""
    return resolve_model_uri(uri)[1]


def registered_name(uri: str) -> str:
    """``models:/mura-ensemble@champion`` or ``models:/mura-ensemble/1`` → ``mura-ensemble``; a local folder: its name."""
    if uri.startswith("models:/"):
        return uri.removeprefix("models:/").split("@")[0].split("/")[0]
    return Path(uri).name or "mura-ensemble"
