"""The registered ``mura-ensemble`` pyfunc: request parsing, prediction, study aggregation.

Logged with MLflow's models-from-code (``mura/runtime/pyfunc.py``): no pickled
classes; ``ensemble_config.json`` (a :class:`mura.runtime.served_config.ServingConfig`)
and the optimized runtime's export are artifacts. The four Keras variants are
artifacts of the pyfunc only when the model has no optimized export; otherwise
they are files of the register run (``keras_variants_uri``), downloaded only
when the Keras runtime serves.

Request (``POST /invocations``, ``dataframe_records`` or ``dataframe_split``):
rows with ``image`` (base64 of PNG, JPEG or DICOM bytes) and optional
``study_id``; rows without a study id form one study. Response: one row per
image with its ensemble and per-variant probabilities, and its study's
probability and label at the registered threshold. The ensemble's
probabilities are calibrated (the registered map, ``calibrate`` stage); the
raw averages stay in ``probability_raw`` and ``study_probability_raw`` for audit. Bad input raises an
``MlflowException`` with ``INVALID_PARAMETER_VALUE`` naming the row, which the
scoring server turns into a 400 with a one-line JSON error; nothing about the
image (pixels, DICOM tags) is logged.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from PIL import Image

from mura.data.imaging import heat_on_image
from mura.data.uploads import DecodedUpload, ImageDecodeError, decode_upload
from mura.errors import ConfigError
from mura.modeling.averaging import ENSEMBLE, average_probabilities, prob_column
from mura.modeling.boxes import study_boxes
from mura.modeling.calibration import Calibrator
from mura.modeling.gradcam import HeadWeights, cam_from_features, feature_model, gradcam
from mura.runtime.card_schema import ModelCard
from mura.runtime.runners import HEADS_FILE, OPTIMIZED_ARTIFACT, OpenVinoRunner, Runner, resolve_runtime
from mura.runtime.schema import WARNING_SEPARATOR
from mura.runtime.served_config import CARD_ARTIFACT, CONFIG_ARTIFACT, ServingConfig

if TYPE_CHECKING:
    from mura.modeling.inference import VariantRunner

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_STUDY", "EnsembleService", "Observer", "bad_request", "keras_files", "parse_rows", "study_results"]

# Called after each answered request: its rows (bytes, study id), decoded views, served frame and seconds taken.
Observer = Callable[[list[tuple[bytes, str]], list[DecodedUpload], pd.DataFrame, float], None]

DEFAULT_STUDY = "study"


def bad_request(message: str) -> Exception:
    """An MLflow error the scoring server answers with HTTP 400."""
    # lazy: mlflow is heavy (~1 s) and only a bad request needs its error type
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _read_card(path: Path) -> ModelCard:
    """The model's card (``model_card`` artifact), checked against its contract."""
    return ModelCard.from_dict(json.loads(path.read_text()), f"model card {path.name}")


def parse_rows(frame: pd.DataFrame) -> list[tuple[bytes, str]]:
    """Validate a request frame and decode each row's base64 image.

    Returns:
        ``(image_bytes, study_id)`` per row, in order.

    Raises:
        MlflowException: empty request, missing ``image`` column, a non-string
            value, or invalid base64 (the message names the row).
    """
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise bad_request("empty request: send at least one row with an 'image' column")
    if "image" not in frame.columns:
        raise bad_request(f"missing column 'image' (got {sorted(map(str, frame.columns))})")
    rows = []
    for i, (value, study) in enumerate(
        zip(frame["image"], frame["study_id"] if "study_id" in frame else [None] * len(frame), strict=True)
    ):
        if not isinstance(value, str) or not value:
            raise bad_request(f"row {i}: 'image' must be a non-empty base64 string, got {type(value).__name__}")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f"row {i}: 'image' is not valid base64") from None
        if study is not None and not isinstance(study, str) and not (isinstance(study, float) and np.isnan(study)):
            raise bad_request(f"row {i}: 'study_id' must be a string, got {type(study).__name__}")
        rows.append((data, study if isinstance(study, str) and study else DEFAULT_STUDY))
    return rows


def study_results(per_image: pd.DataFrame, threshold: float, calibrator: Calibrator | None = None) -> pd.DataFrame:
    """Add each study's probability and label (``abnormal`` when ``>= threshold``).

    The study's raw probability is the mean of its views' raw ensemble probabilities (the MURA
    protocol); the served one is the calibration map applied to it.

    Args:
        per_image: rows with ``study_id`` and ``probability_raw`` (the ensemble's raw average).
        threshold: the served study threshold (on the calibrated probability).
        calibrator: the registered map (None: the identity).

    Returns:
        The rows with ``study_probability``, ``study_probability_raw``, ``threshold`` and ``study_label`` added.
    """
    calibrator = calibrator or Calibrator()
    raw = per_image.groupby("study_id", sort=False)["probability_raw"].transform("mean")
    out = per_image.assign(
        study_probability=calibrator.apply(raw.to_numpy(np.float64)), study_probability_raw=raw, threshold=threshold
    )
    out["study_label"] = np.where(out["study_probability"] >= threshold, "abnormal", "normal")
    return out


def keras_files(model_paths: dict[str, str], config: ServingConfig) -> dict[str, str]:
    """Each variant's ``.keras`` file: from ``model_paths``, else downloaded from ``config.keras_variants_uri``.

    Raises:
        ConfigError: a variant without a file and no URI, or the URI cannot be fetched (one line).
    """
    missing = [v for v in config.variants if v not in model_paths]
    if not missing:
        return {v: model_paths[v] for v in config.variants}
    if not config.keras_variants_uri:
        raise ConfigError(f"the served model has no .keras file for variant {missing[0]!r}")
    import mlflow  # lazy: heavy (~1 s): only when the Keras runtime serves a model whose variants are run files

    try:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=config.keras_variants_uri))
    except Exception as exc:  # an MLflow, network or storage error: one line naming what was fetched
        raise ConfigError(
            f"the Keras runtime needs the variants at {config.keras_variants_uri} (the register run's files): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    logger.info("downloaded the .keras variants from %s", config.keras_variants_uri)
    return {v: model_paths.get(v) or str(folder / f"{v}.keras") for v in config.variants}


class EnsembleService:
    """Loaded ensemble: decode uploads, run the variants in one call, aggregate per study.

    Args:
        model_paths: variant → ``.keras`` file (the Keras runtime; see :func:`keras_files` for what is missing).
        config: the served model's configuration.
        optimized_dir: the ``optimized`` artifact (OpenVINO IR and heads), when the model has one.
        streams: requests the optimized runtime runs at once (1: every core on one request).
        warm_up: run the batch sizes through at load (servers); a one-shot CLI skips it.
        model_card: the registered model card (``model_card`` artifact), when the model has one.
    """

    def __init__(
        self,
        model_paths: dict[str, str],
        config: ServingConfig,
        optimized_dir: str | Path | None = None,
        streams: int = 1,
        warm_up: bool = True,
        model_card: ModelCard | None = None,
    ) -> None:

        self.config = config
        self.observer: Observer | None = None  # set by a server that counts and audits its answers
        self.model_card = model_card  # the card register wrote (None for a model registered before cards)
        optimized = Path(optimized_dir) if optimized_dir is not None else None
        self.runtime = resolve_runtime(config.runtime, optimized)
        self.heads: dict[str, Any] = {}
        self._features: dict[str, Any] = {}
        self.runner: Runner
        if self.runtime == "optimized" and optimized is not None:
            names = list(config.variants)
            self.runner = OpenVinoRunner(
                optimized, names, config.serve_batch_size, config.allowed_precisions, warm_up=warm_up, streams=streams
            )
            self.heads = HeadWeights.load_all(optimized / HEADS_FILE)
        else:
            from mura.modeling.inference import VariantRunner  # lazy: imports Keras: only on the Keras path

            paths = keras_files(model_paths, config)
            self.runner = VariantRunner.from_paths(paths, batch_size=config.serve_batch_size)
            warm_up = True  # Keras traces at the first call: always at load
        if self.runner.image_size != config.image_size:
            raise ValueError(f"variants take {self.runner.image_size}-px images, the config says {config.image_size}")
        if warm_up:
            self._warm_up()
        logger.info("serving %d variants with %s", len(config.variants), self.runner.description)

    def _warm_up(self) -> None:
        """One small PNG through the whole request path (decode, resize, the model, the study table).

        The runner's own warm-up covers the model; the first decode and the first per-study
        aggregation also pay one-off set-up (measured at 64²: a first one-image request at 1.7× a warm one).
        """

        buffer = io.BytesIO()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, "PNG")
        self.predict_frame(pd.DataFrame({"image": [base64.b64encode(buffer.getvalue()).decode()], "study_id": ["warm-up"]}))

    @classmethod
    def from_artifacts(cls, artifacts: dict[str, str], model_config: dict[str, Any] | None = None) -> EnsembleService:
        """Build from an MLflow ``context.artifacts`` mapping (and the load-time ``model_config``)."""

        config = ServingConfig.load(artifacts[CONFIG_ARTIFACT])
        settings = model_config or {}
        paths = {name: artifacts[name] for name in config.variants if name in artifacts}
        warm_up = bool(settings.get("warm_up", True))
        card = _read_card(Path(artifacts[CARD_ARTIFACT])) if CARD_ARTIFACT in artifacts else None
        return cls(paths, config, artifacts.get(OPTIMIZED_ARTIFACT), int(settings.get("streams", 1)), warm_up, card)

    def decode(self, rows: list[tuple[bytes, str]]) -> list[DecodedUpload]:
        """Each row's model pixels, display image, scope warnings and non-identifying DICOM facts.

        Raises:
            MlflowException: a bad image (400 naming the row and, for DICOM, the transfer syntax).
        """
        uploads = []
        for i, (data, _study) in enumerate(rows):
            try:
                uploads.append(decode_upload(data, self.config.image_size, self.config.resize, self.config.max_pixels))
            except ImageDecodeError as exc:
                raise bad_request(f"row {i}: {exc.reason.replace('_', ' ')}: {exc.detail}") from None
        return uploads

    def predict_pixels(self, pixels: np.ndarray, study_ids: list[str], warnings: list[str] | None = None) -> pd.DataFrame:
        """Per-image results for already-decoded pixels (shared with the Python API)."""
        return self._frame(self.runner.predict(pixels), study_ids, warnings)

    def _frame(self, per_variant: np.ndarray, study_ids: list[str], warnings: list[str] | None) -> pd.DataFrame:
        ensemble = average_probabilities(per_variant, self.config.weights_in_order)
        frame = pd.DataFrame(
            {
                "row": np.arange(len(per_variant)),
                "study_id": study_ids,
                "probability": self.config.calibration.apply(ensemble),
                "probability_raw": ensemble,
            }
        )
        for k, name in enumerate(self.config.variants):
            frame[prob_column(name)] = per_variant[:, k]
        out = study_results(frame, self.config.threshold, self.config.calibration)
        out["warnings"] = warnings if warnings is not None else [""] * len(out)
        return out

    def _boxes_column(self, out: pd.DataFrame, heat: np.ndarray, uploads: Sequence[DecodedUpload]) -> list[str]:
        """Each image's boxes as JSON: box operating point → ``[{x0, y0, x1, y1, score}]`` in the image's own pixels.

        ``{}`` without box levels (a model registered before ``localize``); no box at a point whose
        threshold the image's study does not reach.
        """
        column = []
        for i, upload in enumerate(uploads):
            levels, probability = self.config.box_levels, float(out["study_probability"].iloc[i])
            shape = upload.gray.shape[:2]
            view_heat = heat_on_image(heat[i], shape, self.config.resize)  # without pad's black bands
            found = study_boxes([view_heat], probability, self.config.thresholds, levels) if levels else {}
            boxes = {p: [b.scaled(view_heat.shape, shape).to_dict() for b in per[0]] for p, per in found.items()}
            column.append(json.dumps(boxes))
        return column

    def predict_with_heatmaps(
        self, pixels: np.ndarray, study_ids: list[str], warnings: list[str] | None = None
    ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        """Per-image results and Grad-CAM maps (each variant's and the ensemble's mean), each (N, S, S) in [0, 1].

        On the optimized runtime one inference gives both (the exported model returns the feature
        maps); on Keras the feature models run next to the classifiers. The probabilities are
        always the served precision's, so every entry point answers alike: when a reduced
        precision serves, it gives the probabilities and the float32 pass only the maps.
        """
        per_variant, maps = self.heatmaps(pixels)
        if self.runner.precision != "f32":
            per_variant = self.runner.predict(pixels)
        return self._frame(per_variant, study_ids, warnings), maps

    def heatmaps(self, pixels: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Grad-CAM maps (each variant's and the ensemble's mean) and the float32 pass' per-variant probabilities.

        The probabilities are the float32 model's: a caller that also answers with them must use
        :meth:`predict_with_heatmaps`, which answers with the served precision.
        """

        names = list(self.config.variants)
        maps: dict[str, np.ndarray] = {}
        if isinstance(self.runner, OpenVinoRunner):  # one pass gives the probabilities and the feature maps
            per_variant, features = self.runner.predict_with_features(pixels)
            for name, feature_maps in zip(names, features, strict=True):
                maps[name] = cam_from_features(feature_maps, self.heads[name], self.config.image_size)
        else:  # Keras: gradients through each variant
            per_variant = self.runner.predict(pixels)
            variants = cast("VariantRunner", self.runner).variants or {}
            for name, model in variants.items():
                if name not in self._features:
                    self._features[name] = feature_model(model)
                maps[name] = gradcam(model, pixels, self._features[name])
        maps[ENSEMBLE] = np.mean(np.stack([maps[n] for n in names]), axis=0)
        return per_variant, maps

    def predict_frame(self, frame: pd.DataFrame, boxes: bool = False) -> pd.DataFrame:
        """The pyfunc ``predict``: request frame in, per-image result frame out (shown to :attr:`observer`).

        Args:
            frame: the request (``image``, optional ``study_id``).
            boxes: also draw the heatmaps and answer each image's boxes (column ``boxes``, see
                :meth:`_boxes_column`); the other columns are the same either way.
        """
        started = time.perf_counter()
        rows = parse_rows(frame)
        uploads = self.decode(rows)
        pixels = np.stack([upload.pixels for upload in uploads])
        warnings = [WARNING_SEPARATOR.join(upload.warnings) for upload in uploads]
        studies = [study for _, study in rows]
        if boxes:
            out, maps = self.predict_with_heatmaps(pixels, studies, warnings)
            out["boxes"] = self._boxes_column(out, maps[ENSEMBLE], uploads)
        else:
            out = self.predict_pixels(pixels, studies, warnings)
        if self.observer is not None:
            self.observer(rows, uploads, out, time.perf_counter() - started)
        return out
