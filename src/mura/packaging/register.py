"""The ``register`` stage: log the ensemble as one pyfunc (models-from-code) and promote it.

The served configuration is a :class:`mura.runtime.served_config.ServingConfig`, an
artifact of the pyfunc beside the optimized runtime's export. The variants'
``.keras`` files (weights only) are the register run's ``keras/`` files, which
only the Keras runtime downloads; a model without an optimized export keeps
them among the pyfunc's artifacts.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from packaging.requirements import Requirement
from PIL import Image

import mura
from mura.config import PromotionParams, RegisterParams, ResizePolicy
from mura.data.imaging import cache_rows
from mura.errors import DataError
from mura.evaluation.evaluate import run_metrics
from mura.evaluation.predict import model_paths
from mura.modeling.averaging import ENSEMBLE
from mura.modeling.operating_points import OperatingPoints
from mura.operations.profile import REFERENCE_ARTIFACT, validation_profile
from mura.packaging.export import (
    KerasReference,
    check_precision,
    export_optimized,
    inference_copies,
    int8_variants,
)
from mura.packaging.model_card import build_model_card, render_model_card
from mura.packaging.promotion import PairedComparison, PromotionDecision, decide, paired_comparison, served_study_scores
from mura.packaging.serve_reference import choose_serve_reference
from mura.runtime.card_schema import ModelCard
from mura.runtime.precision_check import PrecisionCheck, PrecisionLimits
from mura.runtime.runners import OPTIMIZED_ARTIFACT
from mura.runtime.schema import ServedRow
from mura.runtime.served_config import CARD_ARTIFACT, CONFIG_ARTIFACT, ServingConfig, ValidationMetrics
from mura.stage import Layout
from mura.tracking import Provenance, dataset_provenance, log_datasets, server_errors, setup_mlflow, source_tags

logger = logging.getLogger(__name__)

__all__ = [
    "CHAMPION",
    "RegisterPaths",
    "champion_version",
    "compare_on_test",
    "promote_version",
    "run_register",
    "validation_by_body_part",
    "validation_kappa",
]

CHAMPION = "champion"
KERAS_RUN_PATH = "keras"  # the register run's folder of <variant>.keras files (ServingConfig.keras_variants_uri)


def _png_base64(pixels: np.ndarray) -> str:

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def validation_kappa(metrics: dict[str, Any]) -> float:
    """The ensemble's study-level Cohen's kappa on valid at threshold 0.5 (the promotion criterion)."""
    try:
        value = metrics["valid"][ENSEMBLE]["study"]["default"]["kappa"]
    except KeyError:
        raise DataError("reports/metrics.json has no valid/ensemble/study/default/kappa: rerun `dvc repro evaluate`") from None
    return float("nan") if value is None else float(value)


def validation_by_body_part(table: pd.DataFrame) -> dict[str, ValidationMetrics]:
    """Ensemble metrics on valid studies at threshold 0.5, per body part and ``all`` (shown in the web UI).

    Args:
        table: ``reports/per_body_part.csv`` (the evaluation table).

    Returns:
        Group → metrics; NaN (undefined) metrics become None.
    """
    rows = table[
        (table["split"] == "valid")
        & (table["model"] == ENSEMBLE)
        & (table["level"] == "study")
        & (table["operating_point"] == "default")
        & ~table["group"].astype(str).str.startswith("dataset:")
    ]
    out = {}
    for row in rows.to_dict("records"):
        values = {
            k: (None if math.isnan(float(row[k])) else float(row[k]))
            for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "kappa")
        }
        out[str(row["group"])] = ValidationMetrics(group=str(row["group"]), n=int(row["n"]), **values)
    return out


@dataclass(frozen=True)
class RegisterPaths:
    """What the ``register`` stage reads and writes (defaults: the standard layout).

    Attributes:
        models_dir: folder of the ``.keras`` files.
        thresholds: operating points and variant weights from ``ensemble``.
        metrics: headline metrics from ``evaluate`` (the promotion criterion).
        images: images.csv (synthetic flag, fingerprint, cache rows).
        split: split.csv (fingerprint).
        pixels: the cache (the model's input example; the validation images of the precision check).
        per_body_part: the evaluation table (validation metrics shown in the UI).
        predictions: the ``ensemble`` stage's predictions (Keras reference of the precision check).
        figures: ``evaluate`` figures logged with the model (the reliability diagrams).
        localization: the ``localize`` stage's record (box levels, test localisation); None or missing: none.
        model_card: where the model card's Markdown is written (its JSON beside it); None: not written.
        out: the stage's record (registered version, champion, precision), written by the stage script.
    """

    models_dir: Path = Layout.MODELS
    thresholds: Path = Layout.THRESHOLDS
    metrics: Path = Layout.METRICS
    images: Path = Layout.IMAGES
    split: Path = Layout.SPLIT
    pixels: Path = Layout.PIXELS
    per_body_part: Path | None = Layout.PER_BODY_PART
    predictions: Path | None = Layout.PREDICTIONS
    figures: tuple[Path, ...] = (
        Path("reports/plots/reliability.png"),
        Path("reports/plots/reliability_per_body_part.png"),
        Path("reports/plots/localization_cases.png"),
    )
    localization: Path | None = Path("reports/localization.json")
    model_card: Path | None = Path("reports/model_card.md")
    out: Path = Path("reports/register.json")


def run_register(
    variants: list[str],
    params: RegisterParams,
    image_size: int,
    resize: ResizePolicy,
    paths: RegisterPaths,
    architectures: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ``register`` stage: log ``mura-ensemble`` (the variants + its config), register it, maybe alias it ``champion``.

    With ``register.runtime`` other than ``keras``, the variants are also exported to
    the optimized runtime (float32 and, with ``register.int8``, int8) and checked against
    Keras on the validation split; bf16 and int8 are allowed only when that check passes
    (see :func:`mura.packaging.export.check_precision`).

    Args:
        variants: the variant names (keys of ``models:``), in ensemble order.
        params: the ``register`` section.
        image_size: ``data.image_size`` (the variants' input side).
        resize: ``data.resize`` (served uploads are resized as the cache was).
        paths: the files it reads and writes.
        architectures: variant → architecture, for the model card.

    Returns:
        What ``reports/register.json`` records: name, version, champion flag, val kappa, run id,
        runtime and precision.

    Raises:
        DataError: missing models, metrics or predictions.
    """
    setup_mlflow()  # a tracking server that is down or refuses us fails here, before minutes of export
    outputs = read_pipeline_outputs(variants, paths)
    settings = RegisterSettings(params, image_size, resize, architectures or {})
    name = params.model_name
    with tempfile.TemporaryDirectory(prefix="mura-register-") as tmp:  # the export and the config, logged then removed
        export = export_variants(outputs, params, Path(tmp))
        package = build_package(outputs, export, settings, Path(tmp))
        logged = log_package(name, package, outputs)
    decision = _register_version(name, logged.version, package, outputs, params)
    promoted = decision.promote
    _log_decision(logged.run_id, decision)
    tolerance = serve_tolerance(package.config, params.reduced_max_abs_dp)
    reference_study = choose_serve_reference(outputs.valid, package.config, tolerance) if outputs.valid is not None else None
    _publish_card(package.card.with_lineage(promotion=decision.reason), name, logged, promoted, paths.model_card)
    logger.info(
        "registered %s version %s (val kappa %.3f)%s", name, logged.version, outputs.kappa, ", alias champion" if promoted else ""
    )
    return {
        "model_name": name,
        "version": int(logged.version),
        "champion": promoted,
        "promotion": decision.to_dict(),
        "val_kappa": outputs.kappa,
        "run_id": logged.run_id,
        "synthetic_data": outputs.provenance.synthetic,
        "runtime": package.config.runtime,
        "optimized_precision": package.tags["optimized_precision"],
        "serve_reference": reference_study.to_dict() if reference_study is not None else None,
    }


@dataclass(frozen=True)
class RegisterSettings:
    """What the stage's params say about the package: the ``register`` section, the input side and resize, the architectures."""

    params: RegisterParams
    image_size: int
    resize: ResizePolicy
    architectures: dict[str, str]


@dataclass(frozen=True)
class PipelineOutputs:
    """What the earlier stages left for ``register``, read once.

    Attributes:
        variant_files: variant → its ``.keras`` file, in ensemble order.
        thresholds: ``reports/thresholds.json`` (operating points, calibration, variant weights).
        metrics: ``reports/metrics.json``; ``kappa``: its promotion figure.
        images: images.csv with the split column merged (the model card's data; image ids, synthetic flag).
        provenance: the dataset's fingerprint, synthetic flag and commit.
        table: the evaluation table (empty when absent).
        pixels: the cache (memory-mapped).
        valid: the ensemble stage's validation predictions (None when absent).
        paths: where they were read from (figures, model card).
        localization: the ``localize`` stage's record (empty when absent).
    """

    variant_files: dict[str, Path]
    thresholds: OperatingPoints
    metrics: dict[str, Any]
    kappa: float
    images: pd.DataFrame
    provenance: Provenance
    table: pd.DataFrame
    pixels: np.ndarray
    valid: pd.DataFrame | None
    paths: RegisterPaths
    localization: dict[str, Any] = field(default_factory=dict)

    def rows_of(self, image_ids: Sequence[str] | pd.Series) -> np.ndarray:
        """The cache rows of ``image_ids``, in their order."""
        row_of = pd.Series(np.arange(len(self.images)), index=self.images["image_id"])
        return cache_rows(self.pixels, row_of.loc[list(image_ids)].to_numpy())


def read_pipeline_outputs(variants: Sequence[str], paths: RegisterPaths) -> PipelineOutputs:
    """Read what ``register`` needs from the earlier stages' outputs.

    Raises:
        DataError: a model, the metrics or the thresholds are missing.
    """
    variant_files = model_paths(list(variants), paths.models_dir)
    if not paths.metrics.is_file():
        raise DataError(f"missing {paths.metrics}: run `dvc repro evaluate` first")
    metrics = json.loads(paths.metrics.read_text())
    table_path = paths.per_body_part
    valid_csv = paths.predictions / "valid.csv" if paths.predictions is not None else None
    return PipelineOutputs(
        variant_files=variant_files,
        thresholds=OperatingPoints.load(paths.thresholds),
        metrics=metrics,
        kappa=validation_kappa(metrics),
        images=pd.read_csv(paths.images).merge(pd.read_csv(paths.split), on="image_id", how="left"),
        provenance=dataset_provenance(paths.images, paths.split),
        table=pd.read_csv(table_path) if table_path is not None and table_path.exists() else pd.DataFrame(),
        pixels=np.load(paths.pixels, mmap_mode="r"),
        valid=pd.read_csv(valid_csv) if valid_csv is not None and valid_csv.is_file() else None,
        paths=paths,
        localization=json.loads(loc.read_text()) if (loc := paths.localization) is not None and loc.is_file() else {},
    )


@dataclass(frozen=True)
class ExportedVariants:
    """The variants as they will be served.

    Attributes:
        copies: folder of the ``<variant>.keras`` serving copies (weights without the optimizer's state).
        optimized: the optimized runtime's export (None: Keras serves).
        precision_check: the reduced-precision check's report (None without an export).
    """

    copies: Path
    optimized: Path | None
    precision_check: PrecisionCheck | None


@dataclass(frozen=True)
class Package:
    """What is logged as ``mura-ensemble``: its configuration, tags, model card and artifact files."""

    config: ServingConfig
    tags: dict[str, str]
    card: ModelCard
    artifacts: dict[str, str]
    keras_run_files: Path | None  # the .keras files logged beside the pyfunc (optimized runtime), else None


@dataclass(frozen=True)
class LoggedModel:
    """The register run and the registered version."""

    run_id: str
    version: str


def export_variants(outputs: PipelineOutputs, params: RegisterParams, folder: Path) -> ExportedVariants:
    """The serving copies, and the optimized export with its precision check unless ``register.runtime`` is keras."""
    copies = folder / "variants"
    if params.runtime == "keras":
        inference_copies(outputs.variant_files, copies)
        return ExportedVariants(copies, None, None)
    optimized, check = _export_and_check(outputs, params, folder / OPTIMIZED_ARTIFACT, copies)
    return ExportedVariants(copies, optimized, check)


def build_package(outputs: PipelineOutputs, export: ExportedVariants, settings: RegisterSettings, folder: Path) -> Package:
    """The served configuration, the tags, the model card and the artifact files (written into ``folder``)."""
    config = serving_config(outputs, export, settings)
    tags = version_tags(config, outputs.provenance, outputs.kappa)
    name, architectures = settings.params.model_name, settings.architectures
    card = build_model_card(config, name, outputs.images, outputs.table, architectures, localization=outputs.localization)
    artifacts = _write_artifacts(folder, config, card, _reference(outputs, config))
    if export.optimized is not None:  # the .keras files go beside the pyfunc, fetched only by the Keras runtime
        artifacts[OPTIMIZED_ARTIFACT] = str(export.optimized)
    else:
        artifacts |= {v: str(export.copies / f"{v}.keras") for v in outputs.variant_files}
    return Package(config, tags, card, artifacts, export.copies if export.optimized is not None else None)


FLOAT32_TOLERANCE = 1e-4  # float32 runtimes agree with Keras to ~1e-6 (OpenVINO vs Keras measured: 1.4e-07 / 5.4e-07)


def serve_tolerance(config: ServingConfig, reduced_max_abs_dp: float) -> float:
    """How far a served probability may be from Keras's: the reduced-precision guard's limit when bf16/int8 may serve."""
    reduced = any(p != "f32" for p in config.allowed_precisions)
    return max(reduced_max_abs_dp if reduced else 0.0, FLOAT32_TOLERANCE)


def serving_config(outputs: PipelineOutputs, export: ExportedVariants, settings: RegisterSettings) -> ServingConfig:
    """The served model's configuration from the pipeline's outputs (pure)."""
    params, check = settings.params, export.precision_check
    return ServingConfig(
        variants=tuple(outputs.variant_files),
        variant_weights=outputs.thresholds.variant_weights,
        thresholds=outputs.thresholds.thresholds,
        calibration=outputs.thresholds.calibrator,
        operating_point=params.operating_point,
        image_size=settings.image_size,
        resize=settings.resize,
        max_pixels=params.max_pixels,
        serve_batch_size=params.serve_batch_size,
        synthetic_data=outputs.provenance.synthetic,
        validation_per_body_part=validation_by_body_part(outputs.table) if not outputs.table.empty else {},
        metrics=outputs.metrics,
        dataset_fingerprint=outputs.provenance.fingerprint,
        git_commit=outputs.provenance.git_commit,
        mura_version=mura.__version__,
        runtime=params.runtime if export.optimized is not None else "keras",
        optimized_precision=check.precision if check is not None else "f32",
        allowed_precisions=check.allowed if check is not None else ("f32",),
        precision_check=check,
        box_levels=dict(outputs.localization.get("levels", {})),
    )


def version_tags(config: ServingConfig, provenance: Provenance, kappa: float) -> dict[str, str]:
    """The run's and the model version's tags: provenance, validation kappa, runtime and precision verdicts (pure)."""
    check = config.precision_check
    optimized = check is not None
    tags = {
        "dataset_fingerprint": provenance.fingerprint,
        "git_commit": provenance.git_commit,
        "synthetic_data": str(provenance.synthetic).lower(),
        "val_kappa": f"{kappa:.6f}",
        "config_schema_version": str(config.schema_version),
        "runtime": config.runtime,
        "optimized_precision": config.optimized_precision if optimized else "none",
    }
    if optimized:
        tags["allowed_precisions"] = ",".join(config.allowed_precisions)
    if check is None:
        return tags
    if check.int8_variants:  # int8 mixed with float32, variant by variant
        tags["int8_variants"] = ",".join(check.int8_variants)
    for reduced in ("bf16", "int8"):
        comparison = check.comparison(reduced)
        if comparison is not None:
            tags[f"{reduced}_max_abs_dp"] = f"{comparison.max_abs_dp:.3g}"
            tags[f"{reduced}_min_agreement"] = f"{comparison.worst_agreement:.4f}"
    return tags


def _write_artifacts(folder: Path, config: ServingConfig, card: ModelCard, reference: dict[str, Any]) -> dict[str, str]:
    """The config, the model card and the reference profile as files for the pyfunc's artifacts."""
    paths = {
        CONFIG_ARTIFACT: folder / f"{CONFIG_ARTIFACT}.json",
        CARD_ARTIFACT: folder / f"{CARD_ARTIFACT}.json",
        REFERENCE_ARTIFACT: folder / f"{REFERENCE_ARTIFACT}.json",
    }
    config.save(paths[CONFIG_ARTIFACT])
    paths[CARD_ARTIFACT].write_text(json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n")
    paths[REFERENCE_ARTIFACT].write_text(json.dumps(reference) + "\n")
    return {key: str(path) for key, path in paths.items()}


def log_package(name: str, package: Package, outputs: PipelineOutputs) -> LoggedModel:
    """Log the ensemble run and the pyfunc (registering a new version of ``name``).

    With ``package.keras_run_files`` (a folder of ``<variant>.keras``), the files are logged as the
    run's ``keras/`` artifacts and the pyfunc's config points at them (``keras_variants_uri``): a
    server on the optimized runtime never copies them.
    """
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store
    from mlflow.models import infer_signature  # lazy: heavy (~1 s): only when talking to the tracking store
    from mlflow.types import ColSpec, Schema  # lazy: heavy (~1 s): only when talking to the tracking store

    # One view: MLflow checks the example by loading and calling the model, and a
    # one-image batch is the shape the model's warm-up already traced (a second
    # shape would cost a second trace of all variants, ~13 s at demo size on 2 cores).
    config, tags, artifacts, paths = package.config, package.tags, package.artifacts, outputs.paths
    example = pd.DataFrame({"image": [_png_base64(outputs.pixels[0])], "study_id": ["example-study"]})
    # params: {"boxes": true} adds each image's boxes (column "boxes"); without it the answer is the same as ever.
    signature = infer_signature(example, ServedRow.example(list(config.variants)), params={"boxes": False})
    signature.inputs = Schema([ColSpec("string", "image"), ColSpec("string", "study_id", required=False)])
    code = Path(mura.__file__).parent
    run_tags = {**tags, **source_tags(), "mura.stage": "register"}
    with server_errors(f"logging {name}"), mlflow.start_run(run_name="ensemble", tags=run_tags) as run:
        mlflow.log_params(
            {
                "variants": ",".join(config.variants),
                "operating_point": config.operating_point,
                "threshold": config.threshold,
                "image_size": config.image_size,
                "resize": config.resize,
            }
        )
        # The data the ensemble was made, tuned and tested on as dataset inputs (the Dataset column).
        log_datasets(paths.images, paths.split, ("train", "valid", "test"), tags["dataset_fingerprint"])
        if package.keras_run_files is not None:
            mlflow.log_artifacts(str(package.keras_run_files), artifact_path=KERAS_RUN_PATH)
            config = replace(config, keras_variants_uri=f"runs:/{run.info.run_id}/{KERAS_RUN_PATH}")
            config.save(Path(artifacts[CONFIG_ARTIFACT]))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code / "runtime" / "pyfunc.py"),
            artifacts=artifacts,
            code_paths=[str(code)],
            signature=signature,
            input_example=example,
            # Load-time settings a server may change (mlflow.pyfunc.load_model(..., model_config=...)):
            # "streams", the studies the optimized runtime runs at once (mura serve-ui sets one per core);
            # "warm_up", run each batch size through at load (mura predict, one-shot, turns it off).
            model_config={"streams": 1, "warm_up": True},
            registered_model_name=name,
            pip_requirements=served_requirements(config.runtime),
        )
        # The headline figures as top-level metrics (the runs table and charts compare them), linked to
        # the logged model in the same call. Logged after the model: log_model links every metric the run
        # already has to the model by asking the server for each one's history (one request per metric,
        # ~125 in the tests: 66 s of the stage against a team server that hashed the password of every request).
        figures = {"val_kappa_study": outputs.kappa, **run_metrics(outputs.metrics), **localization_metrics(outputs.localization)}
        mlflow.log_metrics(figures, model_id=info.model_id)
        for figure in paths.figures:
            if figure.exists():
                mlflow.log_artifact(str(figure), artifact_path="evaluation")
    return LoggedModel(run.info.run_id, str(info.registered_model_version))


def localization_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The ``localize`` stage's figures as run metrics (pure; empty when not measured).

    ``loc_<point>_<metric>`` on test, ``loc_<dataset>_<point>_<metric>`` on each external dataset.
    """
    sets = [("loc_", record.get("test") or {})] + [
        (f"loc_{name}_", rows) for name, rows in (record.get("external") or {}).items()
    ]
    out = {}
    for prefix, points in sets:
        for point, figures in points.items():
            for name, value in figures.items():
                if isinstance(value, (int, float)) and not name.endswith(("_ci_low", "_ci_high")) and math.isfinite(value):
                    out[f"{prefix}{point}_{name}"] = float(value)
    return out


def _register_version(
    name: str, version: str, package: Package, outputs: PipelineOutputs, params: RegisterParams
) -> PromotionDecision:
    """Tag and describe the new version; alias it ``champion`` when the paired comparison on test says so."""
    kappa, n_variants, synthetic = outputs.kappa, len(outputs.variant_files), outputs.provenance.synthetic
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store

    with server_errors(f"registering {name}"):
        client = mlflow.MlflowClient()
        for key, value in package.tags.items():
            client.set_model_version_tag(name, version, key, value)
        client.update_model_version(
            name,
            version,
            description=(
                f"Average of {n_variants} variants; val study kappa {kappa:.3f}"
                + (" — trained on SYNTHETIC data, not a clinical model" if synthetic else "")
            ),
        )
    compare = partial(compare_on_test, outputs, name, version, params.promotion, params.force_champion)
    return promote_version(name, version, compare, params.promotion, params.force_champion)


def champion_version(client: Any, name: str) -> str | None:
    """The version aliased ``champion``; None only when ``name`` has no such alias.

    The registered model's aliases are read, never inferred from an exception: a tracking
    server that is down, refuses the credentials or times out raises, so a failed lookup can
    never be mistaken for "no champion yet".

    Raises:
        Exception: whatever the tracking client raised (the caller turns it into one line).
    """
    aliases = client.get_registered_model(name).aliases or {}
    return str(aliases[CHAMPION]) if CHAMPION in aliases else None


def compare_on_test(
    outputs: PipelineOutputs, name: str, version: str, promotion: PromotionParams, force: bool, champion: str
) -> PairedComparison | None:
    """The new version against ``champion``, both loaded as they serve, on this pipeline's test studies.

    Returns None only when a forced promotion could not load the champion (recorded as such).

    Raises:
        DataError: no test studies, or the champion cannot be loaded (nothing promoted; the line
            says how to promote without comparing).
    """
    from mura.runtime.predictor import Predictor

    test = outputs.images[outputs.images["split"] == "test"]
    if test.empty:
        raise DataError(f"no test studies to compare {name} version {version} with the champion on (nothing promoted)")
    try:
        old = Predictor.load(f"models:/{name}/{champion}", warm_up=False)
    except Exception as exc:  # noqa: BLE001 - any reason the champion cannot serve here: deleted files, newer schema, …
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if force:
            logger.warning("forced promotion without a comparison: champion version %s cannot be loaded: %s", champion, reason)
            return None
        raise DataError(
            f"cannot load the champion {name} version {champion} to compare with version {version} (nothing promoted): "
            f"{reason}; set register.force_champion: true to promote without comparing"
        ) from None
    new = Predictor.load(f"models:/{name}/{version}", warm_up=False)
    pixels, study_ids = outputs.rows_of(test["image_id"]), test["study_id"].astype(str).tolist()
    scores = {side: served_study_scores(model, pixels, study_ids) for side, model in (("new", new), ("champion", old))}
    studies = test.groupby("study_id", sort=False).agg(patient_id=("patient_id", "first"), label=("label", "first"))
    studies.index = studies.index.astype(str)
    for side, frame in scores.items():
        studies[f"p_{side}"] = frame["probability"].reindex(studies.index).to_numpy()
        studies[f"abnormal_{side}"] = frame["abnormal"].reindex(studies.index).to_numpy()
    return paired_comparison(studies, promotion.metric, champion, promotion.bootstrap, seed=0, level=promotion.level)


def promote_version(
    name: str, version: str, compare: Callable[[str], PairedComparison | None], promotion: PromotionParams, force: bool
) -> PromotionDecision:
    """Compare ``version`` with the champion (``compare(champion_version)``), decide, record it, alias when promoted.

    The decision's tags go on the new version (both figures, the difference, its CI, forced or not).

    Raises:
        TrackingError: the champion could not be looked up or the alias not set (nothing promoted).
    """
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store

    with server_errors(f"looking up the champion of {name} (nothing promoted)"):
        client = mlflow.MlflowClient()
        current = champion_version(client, name)
    comparison = compare(current) if current is not None and current != str(version) else None
    decision = decide(comparison, promotion.margin, force)
    with server_errors(f"recording the promotion decision of {name} version {version}"):
        for key, value in decision.tags().items():
            client.set_model_version_tag(name, version, key, value)
        if decision.promote:
            client.set_registered_model_alias(name, CHAMPION, version)
    logger.info("%s version %s: %s", name, version, decision.reason)
    return decision


def _log_decision(run_id: str, decision: PromotionDecision) -> None:
    """The promotion decision on the register run: its figures as metrics, the decision and reason as tags."""
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store

    with server_errors("logging the promotion decision"):
        client = mlflow.MlflowClient()
        for metric, figure in decision.metrics().items():
            client.log_metric(run_id, metric, figure)
        for tag, text in decision.tags().items():
            client.set_tag(run_id, tag, text)


def _publish_card(card: ModelCard, name: str, logged: LoggedModel, promoted: bool, out: Path | None) -> None:
    """The model card with its registered version and run: logged to the run, and written to ``out`` (+ its JSON)."""
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store

    run_id = logged.run_id
    card = card.with_lineage(version=logged.version, run_id=run_id, champion_when_registered=promoted)
    markdown = render_model_card(card)
    with server_errors(f"registering {name}"):
        client = mlflow.MlflowClient()
        client.log_text(run_id, markdown, "model_card/model_card.md")
        client.log_dict(run_id, card.to_dict(), "model_card/model_card.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown)
        out.with_suffix(".json").write_text(json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n")


def _reference(outputs: PipelineOutputs, config: ServingConfig) -> dict[str, Any]:
    """The validation split's profile the drift reports compare production with (empty without predictions)."""
    if outputs.valid is None:
        return {}
    rows = outputs.rows_of(outputs.valid["image_id"])
    return validation_profile(outputs.valid, outputs.images, rows, config.variants, config.weights_in_order, config.calibration)


def _export_and_check(
    outputs: PipelineOutputs, params: RegisterParams, out_dir: Path, copies_dir: Path
) -> tuple[Path, PrecisionCheck]:
    """Export to the optimized runtime (float32, and int8 calibrated on training images) and compare with Keras on valid.

    Each variant is loaded once, in a worker process: its serving copy
    (:func:`mura.packaging.export.inference_copies`) goes to ``copies_dir``.
    """
    if outputs.valid is None:
        raise DataError("register.runtime needs reports/predictions/valid.csv (the Keras reference): rerun `dvc repro ensemble`")
    variants = list(outputs.variant_files)
    calibration = None
    if params.int8:
        train_ids = outputs.images.loc[outputs.images["split"] == "train", "image_id"]
        picked = train_ids.sample(min(params.int8_calibration_images, len(train_ids)), random_state=0)
        calibration = outputs.rows_of(picked)
    export = export_optimized(
        outputs.variant_files, out_dir, copies_dir, calibration, params.serve_batch_size, params.export_workers
    )
    reference = KerasReference(
        variants=variants,
        predictions=outputs.valid,
        pixels=outputs.rows_of(outputs.valid["image_id"]),
        weights=[outputs.thresholds.variant_weights[v] for v in variants],
        thresholds=outputs.thresholds.thresholds,
        calibrator=outputs.thresholds.calibrator,
    )
    limits = PrecisionLimits(params.reduced_max_abs_dp, params.reduced_min_agreement)
    result = check_precision(out_dir, reference, limits, params.serve_batch_size)
    in_int8 = int8_variants(result, variants)
    if in_int8 is None:
        return out_dir, result
    # int8 for the variants that keep within the limit alone, float32 for the others
    rejected = result.verdicts["int8"]
    export.write_int8(in_int8)
    mixed = check_precision(out_dir, reference, limits, params.serve_batch_size)
    mix = f"int8 for {', '.join(in_int8)} only (the others float32; all in int8: {rejected})"
    verdicts = {**mixed.verdicts, "int8": f"{mixed.verdicts['int8']} — {mix}"}
    return out_dir, replace(mixed, verdicts=verdicts, reason=f"{mixed.reason}; {mix}", int8_variants=tuple(in_int8))


def served_requirements(runtime: str) -> list[str]:
    """The served model's pip requirements: mura's pins for serving (pyproject.toml's base list and ``serve`` extra).

    Read from the installed package's metadata, so the pins are written once, in pyproject.toml.
    A model served by Keras (``runtime`` keras: no optimized export) also needs Keras and
    TensorFlow: the ``keras`` pin and the TensorFlow build installed here (``cpu`` or ``gpu`` extra).
    """
    reqs, keras = [], []
    for line in requires("mura") or []:
        req = Requirement(line)
        pin = f"{req.name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}{req.specifier}"
        if req.marker is None or req.marker.evaluate({"extra": "serve"}):
            reqs.append(pin)
        elif req.name == "keras" and req.marker.evaluate({"extra": "train"}):
            keras.append(pin)
    if runtime != "keras":
        return reqs
    for build in ("tensorflow-cpu", "tensorflow"):
        try:
            return [*reqs, *keras, f"{build}=={version(build)}"]
        except PackageNotFoundError:
            continue
    return [*reqs, *keras]
