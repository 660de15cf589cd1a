"""MLflow bookkeeping of one trained variant: its run (params, per-epoch metrics) and registered model.

Kept apart from :mod:`mura.modeling.train` so the training loop does not know
about the tracking server; the run id is kept in the variant's work folder so
an interrupted and resumed training continues the same MLflow run.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

    from mura.modeling.train import VariantSpec

logger = logging.getLogger(__name__)

__all__ = ["log_trained_variant", "registered_name", "variant_run"]

RUN_ID_FILE = "mlflow_run_id"


def registered_name(variant: str) -> str:
    """Name of a variant's registered model (``mura-<variant>``)."""
    return f"mura-{variant}"


@contextmanager
def variant_run(
    spec: VariantSpec, class_weights: dict[str, float], fingerprint: str, synthetic: bool, work_dir: Path
) -> Iterator[Any]:
    """Start (or, after an interruption, continue) the variant's MLflow run and log its params once.

    Args:
        spec: the variant's params (logged as MLflow params).
        class_weights: the class weights (logged as params).
        fingerprint: dataset fingerprint (tag).
        synthetic: trained on synthetic data (tag).
        work_dir: the variant's work folder (holds the run id while training is unfinished).

    Yields:
        The active ``mlflow.ActiveRun``.
    """
    import mlflow

    from mura.tracking import flatten_params, git_commit, setup_mlflow

    setup_mlflow()
    run_id_file = work_dir / RUN_ID_FILE
    run_id = run_id_file.read_text().strip() if run_id_file.exists() and (work_dir / "backup").exists() else None
    tags = {
        "variant": spec.name,
        "arch": spec.model.arch,
        "dataset_fingerprint": fingerprint,
        "git_commit": git_commit(),
        "synthetic_data": str(synthetic).lower(),
        "mura.stage": "train",
    }
    with mlflow.start_run(run_id=run_id, run_name=spec.name, tags=tags) as run:
        work_dir.mkdir(parents=True, exist_ok=True)
        run_id_file.write_text(run.info.run_id)
        if run_id is None:
            mlflow.log_params(
                {
                    "seed": spec.seed,
                    "data.image_size": spec.image_size,
                    "data.train_datasets": ",".join(spec.train_datasets),
                    **flatten_params("train", spec.train),
                    **flatten_params("augment", spec.augment),
                    **flatten_params("model", spec.model),
                    "class_weight.0": class_weights["0"],
                    "class_weight.1": class_weights["1"],
                }
            )
        yield run
    run_id_file.unlink(missing_ok=True)


def log_trained_variant(
    run: Any,
    spec: VariantSpec,
    model: keras.Model,
    metrics: dict[str, float],
    reports: Path,
    example: np.ndarray,
    synthetic: bool,
) -> str:
    """Log the best metrics, the history files and the Keras model, and register ``mura-<variant>``.

    Args:
        run: the active run from :func:`variant_run`.
        spec: the variant's params.
        model: the trained (best) model.
        metrics: its validation metrics.
        reports: folder holding ``history.png`` and ``history.csv``.
        example: a few input images (the model signature's example).
        synthetic: trained on synthetic data.

    Returns:
        The registered version.
    """
    import keras
    import mlflow
    from mlflow.models import infer_signature

    mlflow.log_metrics({f"best_{k}": float(v) for k, v in metrics.items()})
    mlflow.log_artifact(str(reports / "history.png"))
    mlflow.log_artifact(str(reports / "history.csv"))
    # The output is one probability per image; no need to trace predict() for it.
    signature = infer_signature(example, np.zeros((len(example), 1), np.float32))
    # mlflow.keras.log_model writes the input example before creating its folder
    # (MLflow 3.17), so save into a folder of ours, log it, and register that.
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "model"
        local.mkdir()
        mlflow.keras.save_model(
            model,
            str(local),
            signature=signature,
            input_example=example,
            pip_requirements=[f"keras=={keras.__version__}", "mura"],
        )
        mlflow.log_artifacts(str(local), artifact_path="model")
    name = registered_name(spec.name)
    tags = dict(run.data.tags) if hasattr(run, "data") else {}
    tags = {k: v for k, v in tags.items() if not k.startswith("mlflow.")}
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", name, tags=tags).version)
    mlflow.MlflowClient().update_model_version(
        name,
        version,
        description=(
            f"{spec.model.arch} variant {spec.name}, best val_auc {metrics.get('val_auc', float('nan')):.4f}"
            + (" — trained on SYNTHETIC data, not a clinical model" if synthetic else "")
        ),
    )
    logger.info("%s: registered %s version %s", spec.name, name, version)
    return version
