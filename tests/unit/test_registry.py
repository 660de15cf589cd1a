"""MLflow bookkeeping of a trained variant: the replay of epochs a dead tracking server missed.

Wherever the kill lands, the run must end with each epoch logged once. The three moments are
set up deterministically on a real (SQLite) tracking store instead of by timing a kill.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mura.modeling.registry import log_history, metrics_to_replay

EPOCHS = 5
HISTORY = pd.DataFrame({"epoch": range(EPOCHS), "loss": [0.9, 0.7, 0.6, 0.5, 0.45], "val_loss": [1.0, 0.8, 0.7, 0.65, 0.6]})


def test_metrics_to_replay_sends_only_the_missing_steps() -> None:
    logged = {"loss": {1, 2, 3}, "val_loss": {1, 2}}
    sent = metrics_to_replay(HISTORY, from_epoch=2, logged=logged)
    assert sent == [("val_loss", 0.7, 3), ("loss", 0.5, 4), ("val_loss", 0.65, 4), ("loss", 0.45, 5), ("val_loss", 0.6, 5)]
    assert metrics_to_replay(HISTORY, from_epoch=0, logged={"loss": set(range(1, 6)), "val_loss": set(range(1, 6))}) == []


# The epoch logger failed at epoch 3 (0-based 2); what the server had stored of that epoch when it died:
KILL_POINTS = {
    "before the epoch's logging": {},
    "during the epoch's logging": {"loss": 0.6},
    "after the epoch's logging (the answer lost)": {"loss": 0.6, "val_loss": 0.7},
}


@pytest.mark.parametrize("stored", list(KILL_POINTS.values()), ids=list(KILL_POINTS))
def test_replay_after_a_kill_logs_every_epoch_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stored: dict[str, float]
) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("replay")  # its own: an experiment another test made active is elsewhere
    failed_at = 2
    with mlflow.start_run(experiment_id=experiment) as run:
        for _, row in HISTORY[HISTORY["epoch"] < failed_at].iterrows():  # what the epoch logger got through
            mlflow.log_metrics({"loss": row["loss"], "val_loss": row["val_loss"]}, step=int(row["epoch"]) + 1)
        if stored:
            mlflow.log_metrics(stored, step=failed_at + 1)
        log_history(HISTORY, failed_at)
        log_history(HISTORY, failed_at)  # a second replay (a rerun after another failure) adds nothing either
    client = mlflow.MlflowClient(tracking_uri=uri)
    for key in ("loss", "val_loss"):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), key
        assert {m.step: m.value for m in history} == {e + 1: v for e, v in enumerate(HISTORY[key])}
