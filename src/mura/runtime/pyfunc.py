"""Models-from-code definition of the ``mura-ensemble`` pyfunc (logged by the ``register`` stage).

MLflow executes this file when loading the model; it holds no weights and no
pickled objects: the variants and the config are ``context.artifacts``.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from mura.runtime.service import EnsembleService


class MuraEnsemble(PythonModel):
    """Average of the four variants' probabilities, per image and per study."""

    def load_context(self, context: Any) -> None:

        # model_config (mlflow.pyfunc.load_model(..., model_config=...)) may set "streams" and "warm_up" (EnsembleService).
        self.service = EnsembleService.from_artifacts(dict(context.artifacts), dict(context.model_config or {}))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        # params {"boxes": true} (declared in the signature, default false): each row also gets its image's boxes.
        return self.service.predict_frame(model_input, boxes=bool((params or {}).get("boxes", False)))


mlflow.models.set_model(MuraEnsemble())
