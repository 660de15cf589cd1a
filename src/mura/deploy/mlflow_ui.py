"""The MLflow UI for people: the runs table's address, and the experiment it opens on.

Kept apart from :mod:`mura.tracking` (which every training stage imports) so that these
helpers are no dependency of a pipeline stage.
"""

from __future__ import annotations

import os

from mura.tracking import DEFAULT_EXPERIMENT, server_errors, tracking_uri, use_tracking_uri

__all__ = ["UI_WORKFLOW_QUERY", "find_experiment_id", "runs_url"]


# MLflow 3's UI opens an experiment on its GenAI pages unless told otherwise; the workflow switch
# reads this query parameter (and remembers it in the browser), so our links open the runs table.
UI_WORKFLOW_QUERY = "workflowType=machine_learning"


def runs_url(base_url: str, experiment_id: str | None) -> str:
    """The MLflow UI address of an experiment's runs table, in model-training mode (pure).

    Without an experiment id (no run logged yet), the UI's experiment list.
    """
    base = base_url.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?{UI_WORKFLOW_QUERY}"
    return f"{base}/#/experiments/{experiment_id}/runs?{UI_WORKFLOW_QUERY}"


def find_experiment_id(name: str | None = None) -> str | None:
    """Id of the experiment ``name`` (default: ``$MLFLOW_EXPERIMENT_NAME`` or ``mura``) in the current store, or None."""
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store

    use_tracking_uri(tracking_uri())
    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    with server_errors(f"looking up experiment {name!r}"):
        found = mlflow.get_experiment_by_name(name)
    return None if found is None else str(found.experiment_id)
