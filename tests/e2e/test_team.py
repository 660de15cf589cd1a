"""The team deployment against real servers: PostgreSQL, SeaweedFS S3 and the MLflow tracking server (basic auth).

One stack (``mura.deploy.team.TeamStack``, what ``make team-up`` starts) serves the
whole module. A tiny two-variant pipeline runs against it as user alice; its data
and models go to the DVC remote ``team``; a fresh clone pulls them; the model is
served from a folder holding only ``.team.env``; bob logs a run beside alice's;
and each server fails once on purpose.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mura.config import SynthParams
from mura.data.synthetic import write_synthetic
from mura.deploy.processes import free_port
from mura.deploy.team import ARTIFACT_BUCKET, DVC_BUCKET, TeamError, TeamStack, write_env_file
from mura.tracking import FAIL_FAST, dataset_fingerprint
from mura.workspace import create_workspace, track_data
from tests.helpers import NO_SEED_VARIANTS, png_bytes, wait_http


def read_env_file(path: str | Path) -> dict[str, str]:
    """The ``KEY=value`` lines of a ``.team.env`` (comments and blank lines skipped)."""
    pairs = (line.strip().split("=", 1) for line in Path(path).read_text().splitlines())
    return {p[0].strip(): p[1].strip() for p in pairs if len(p) == 2 and not p[0].startswith("#")}


pytestmark = pytest.mark.slow

TINY = {"arch": "simple_cnn", "dense_units": 8, "dropout": 0.2}
OVERRIDE: dict[str, Any] = {
    "data": {"image_size": 32},
    "train": {"epochs": 2, "batch_size": 16, "learning_rate": 0.001, "pretrained": "none", "workers": 1},
    "evaluate": {"bootstrap_resamples": 10},
    "register": {"runtime": "keras"},  # the OpenVINO export is tested elsewhere; here the stores matter
    "serve": {"enabled": False},  # the serve stage is tested on a local store (test_train_pipeline, test_serve_stage)
    "models": {
        **NO_SEED_VARIANTS,
        "tiny_a": dict(TINY),
        "tiny_b": dict(TINY, oversample_abnormal=True),
    },
}


def _env(extra: dict[str, str], **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "AWS_", "MLFLOW_S3"))}
    env.update(DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true")
    env.update(extra)
    env.update(more)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], ok: bool = True, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    cmd = [shutil.which(cmd[0], path=env["PATH"]) or cmd[0], *cmd[1:]]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    team = TeamStack(tmp_path_factory.mktemp("team") / "state")
    started = time.monotonic()
    try:
        team.up("alice")
        team.add_user("bob")
        team.startup_s = time.monotonic() - started  # type: ignore[attr-defined]
        yield team
    finally:
        team.down(purge=True)


@pytest.fixture(scope="module")
def alice(stack: TeamStack) -> dict[str, str]:
    return stack.client_env("alice")


@pytest.fixture(scope="module")
def workspace(repo_root: Path, stack: TeamStack, alice: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = create_workspace(repo_root, tmp_path_factory.mktemp("alice") / "ws", OVERRIDE)
    write_synthetic(ws / "data/raw/synthetic", seed=3, sizes=SynthParams(patients=24, fracture_images=0))
    track_data(ws, "data/raw/synthetic")
    proc = _run(["dvc", "repro"], ws, _env(alice, MURA_GIT_COMMIT="commit-alice"))
    (ws.parent / "repro.log").write_text(proc.stdout + proc.stderr)
    return ws


def _pg(stack: TeamStack, sql: str, database: str = "mlflow") -> list[tuple[Any, ...]]:
    import psycopg2

    with (
        psycopg2.connect(
            host="127.0.0.1", port=stack.ports.postgres, user="mura", password=stack.secrets.pg_password, dbname=database
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(sql)
        return list(cur.fetchall())


def _keys(stack: TeamStack, bucket: str, prefix: str = "") -> dict[str, str]:
    client = stack.s3_client()
    out: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"][len(prefix) :]] = item["ETag"]
    return out


def test_stack_starts_in_seconds_and_is_closed_to_strangers(stack: TeamStack) -> None:
    assert stack.startup_s < 60  # type: ignore[attr-defined]
    # MLflow's API without credentials: 401; the bucket without keys: 403.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{stack.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert err.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{stack.s3_endpoint}/{ARTIFACT_BUCKET}/", timeout=10)
    assert err.value.code == 403
    # The filer behind S3 refuses anonymous reads too (security.toml's JWT keys).
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{stack.ports.weed_filer}/buckets/{ARTIFACT_BUCKET}/", timeout=10)
    assert err.value.code == 401


def test_runs_params_and_metrics_are_rows_in_postgresql(stack: TeamStack, workspace: Path) -> None:
    runs = _pg(stack, "SELECT run_uuid, name, status FROM runs")
    names = {name for _, name, _ in runs}
    assert {"tiny_a", "tiny_b", "ensemble"} <= names
    assert all(status == "FINISHED" for _, _, status in runs)
    join = "JOIN runs r ON r.run_uuid = x.run_uuid WHERE r.name = 'tiny_a'"
    params = dict(_pg(stack, f"SELECT x.key, x.value FROM params x {join}"))
    assert params["model.arch"] == "simple_cnn" and params["data.image_size"] == "32"
    steps = _pg(stack, f"SELECT x.step FROM metrics x {join} AND x.key = 'val_auc'")
    assert sorted(s for (s,) in steps) == [1, 2]
    # Where the experiment keeps its artifacts: the server's proxied store, not the client's disk.
    (location,) = _pg(stack, "SELECT artifact_location FROM experiments WHERE name = 'mura'")[0]
    assert location.startswith("mlflow-artifacts:")
    assert not (workspace / "mlartifacts").exists() and not (workspace / "mlflow.db").exists()


def test_models_are_objects_in_the_bucket_and_in_the_registry(stack: TeamStack, alice: dict[str, str], workspace: Path) -> None:
    import mlflow

    keys = _keys(stack, ARTIFACT_BUCKET)
    assert sum(k.endswith(".keras") for k in keys) >= 2 + 2  # each variant's model, and the ensemble's copies
    client = stack.s3_client()
    mlmodels = [client.get_object(Bucket=ARTIFACT_BUCKET, Key=k)["Body"].read().decode() for k in keys if k.endswith("/MLmodel")]
    # The mura-ensemble pyfunc: its MLmodel, configuration and the variants it carries, all in the bucket.
    assert any("python_function" in text and "ensemble_config.json" in text for text in mlmodels)
    assert any(k.endswith("/artifacts/tiny_a.keras") and "/models/" in k for k in keys)
    assert any(k.endswith("/ensemble_config.json") for k in keys)  # the mura-ensemble pyfunc's configuration
    registry = mlflow.MlflowClient(tracking_uri=stack.tracking_uri)
    os.environ.update(alice)
    try:
        version = registry.get_model_version_by_alias("mura-ensemble", "champion")
        assert version.version == "1" and version.tags["git_commit"] == "commit-alice"
        assert {"mura-tiny_a", "mura-tiny_b", "mura-ensemble"} <= {m.name for m in registry.search_registered_models()}
        source = registry.get_model_version_download_uri("mura-ensemble", "1")
        assert source.startswith("mlflow-artifacts:")
    finally:
        for key in alice:
            os.environ.pop(key, None)


def test_dvc_push_survives_s3_going_down_and_matches_an_uninterrupted_push(
    stack: TeamStack, alice: dict[str, str], workspace: Path, tmp_path: Path
) -> None:
    env = _env(alice)
    stack.stop_s3()
    try:
        failed = _run(["dvc", "push", "-r", "team"], workspace, env, ok=False, timeout=300)
    finally:
        stack.start_s3()
    assert failed.returncode != 0
    # DVC's own message, naming the endpoint it could not reach; no traceback, no key.
    assert f'Could not connect to the endpoint URL: "{stack.s3_endpoint}' in failed.stderr, failed.stderr[-2000:]
    assert "Traceback" not in failed.stderr and stack.secrets.s3_secret_key not in failed.stdout + failed.stderr
    _run(["dvc", "push", "-r", "team"], workspace, env)
    # The same workspace pushed without trouble to another prefix: the same objects, byte for byte.
    _run(["dvc", "remote", "add", "-f", "reference", f"s3://{DVC_BUCKET}/reference/"], workspace, env)
    _run(["dvc", "push", "-r", "reference"], workspace, env)
    team = {k: v for k, v in _keys(stack, DVC_BUCKET).items() if not k.startswith("reference/")}
    assert team and team == _keys(stack, DVC_BUCKET, "reference/")


def _clone(ws: Path, dest: Path) -> Path:
    """What `git clone` of the workspace would hold: everything but DVC's cache, its cached outputs and MLflow files."""
    from dvc.repo import Repo

    with Repo(str(ws)) as repo:
        cached = {Path(out.fs_path).resolve() for stage in repo.index.stages for out in stage.outs if out.use_cache}

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {"cache", "tmp"} if Path(folder).name == ".dvc" else set()
        return skip | {n for n in names if (Path(folder) / n).resolve() in cached or n in ("mlflow.db", "mlartifacts")}

    shutil.copytree(ws, dest, ignore=ignore)
    return dest


def test_fresh_clone_pulls_everything_and_reruns_nothing(
    stack: TeamStack, alice: dict[str, str], workspace: Path, tmp_path: Path
) -> None:
    env = _env(alice)
    _run(["dvc", "push", "-r", "team"], workspace, env)
    clone = _clone(workspace, tmp_path / "clone")
    assert not (clone / "data/raw/synthetic").exists() and not (clone / "models/tiny_a.keras").exists()
    _run(["dvc", "pull", "-r", "team"], clone, env)
    assert (clone / "data/raw/synthetic/MURA-v1.1").is_dir()
    assert (clone / "models/tiny_a.keras").read_bytes() == (workspace / "models/tiny_a.keras").read_bytes()
    status = _run(["dvc", "status"], clone, env).stdout
    assert "up to date" in status.lower(), status
    repro = _run(["dvc", "repro"], clone, env)
    assert "Running stage" not in repro.stdout and "up to date" in repro.stdout.lower(), repro.stdout[-2000:]


def _invoke(url: str, image: bytes) -> dict[str, Any]:
    body = json.dumps({"dataframe_records": [{"image": base64.b64encode(image).decode(), "study_id": "s1"}]}).encode()
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


@pytest.fixture(scope="module")
def empty_folder(stack: TeamStack, workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("newcomer")
    write_env_file(folder / ".team.env", stack.client_env("alice"))
    return folder


def _spawn(cmd: list[str], folder: Path, name: str) -> subprocess.Popen[bytes]:
    env = _env(read_env_file(folder / ".team.env"))
    cmd = [shutil.which(cmd[0], path=env["PATH"]) or cmd[0], *cmd[1:]]
    with open(folder / f"{name}.log", "wb") as log:
        return subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def test_serve_from_an_empty_folder_with_only_team_env_and_survive_a_postgres_restart(
    stack: TeamStack, empty_folder: Path
) -> None:
    assert [p.name for p in empty_folder.iterdir()] == [".team.env"]
    image = png_bytes(np.random.default_rng(1).integers(0, 256, (48, 40)).astype(np.uint8))
    port, ui_port = free_port(), free_port()
    model = ["-m", "models:/mura-ensemble/1", "--env-manager", "local"]
    serve = _spawn(["mlflow", "models", "serve", *model, "-h", "127.0.0.1", "-p", str(port)], empty_folder, "serve")
    ui = _spawn(["mura", "serve-ui", "--model", "models:/mura-ensemble@champion", "--port", str(ui_port)], empty_folder, "ui")
    try:
        url, ui_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
        wait_http(f"{url}/ping")
        wait_http(f"{ui_url}/healthz")
        first = _invoke(url, image)["predictions"][0]
        assert 0.0 <= first["probability"] <= 1.0
        with urllib.request.urlopen(f"{ui_url}/api/info", timeout=10) as response:
            info = json.loads(response.read())
        assert info["synthetic_data"] is True and info["variants"] == ["tiny_a", "tiny_b"]
        # PostgreSQL restarts under a running model server: it keeps answering (the model is loaded) ...
        stack.stop_postgres()
        assert _invoke(url, image)["predictions"][0]["probability"] == pytest.approx(first["probability"])
        stack.start_postgres()
        # ... and the tracking server recovers without a restart (its connection pool reconnects).
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=stack.tracking_uri)
        os.environ.update(read_env_file(empty_folder / ".team.env"))
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert client.get_experiment_by_name("mura") is not None
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
        finally:
            for key in read_env_file(empty_folder / ".team.env"):
                os.environ.pop(key, None)
    finally:
        _stop(serve)
        _stop(ui)


@pytest.fixture(scope="module")
def clone(stack: TeamStack, alice: dict[str, str], workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _run(["dvc", "push", "-r", "team"], workspace, _env(alice))
    folder = _clone(workspace, tmp_path_factory.mktemp("bob") / "ws")
    _run(["dvc", "pull", "-r", "team"], folder, _env(alice))
    return folder


def test_two_users_runs_side_by_side_in_one_experiment(stack: TeamStack, workspace: Path, clone: Path) -> None:
    import mlflow

    bob = stack.client_env("bob")
    _run(["dvc", "repro", "-f", "-s", "train@tiny_a"], clone, _env(bob, MURA_GIT_COMMIT="commit-bob"))
    os.environ.update(bob)
    try:
        mlflow.set_tracking_uri(stack.tracking_uri)
        runs = mlflow.search_runs(experiment_names=["mura"], filter_string="tags.variant = 'tiny_a'")
    finally:
        for key in bob:
            os.environ.pop(key, None)
    pairs = set(zip(runs["tags.mlflow.user"], runs["tags.mlflow.source.git.commit"], strict=True))
    assert {("alice", "commit-alice"), ("bob", "commit-bob")} <= pairs


def _stage(ws: Path, env: dict[str, str], variant: str = "tiny_a") -> list[str]:
    return [
        "python", "stages/train.py", "--model", variant, "--params", "params.yaml", "--images", "data/interim/images.csv",
        "--pixels", "data/interim/pixels.npy", "--split", "data/processed/split.csv",
        "--class-weights", "reports/class_weights.json", "--models-dir", "models", "--reports-dir", "reports/train",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def fault_ws(repo_root: Path, stack: TeamStack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose training lasts long enough to pull the tracking server out from under it."""
    override = dict(OVERRIDE, train=dict(OVERRIDE["train"], epochs=8, early_stopping_patience=8))
    ws = create_workspace(repo_root, tmp_path_factory.mktemp("faults") / "ws", override)
    write_synthetic(ws / "data/raw/synthetic", seed=4, sizes=SynthParams(patients=40, fracture_images=0))
    _run(["dvc", "repro", "class_weights"], ws, _env({}))
    return ws


def test_tracking_server_down_at_start_fails_in_seconds_with_one_line(stack: TeamStack, fault_ws: Path) -> None:
    stack.stop_mlflow()
    try:
        started = time.monotonic()
        proc = _run(_stage(fault_ws, {}), fault_ws, _env(stack.client_env("alice")), ok=False)
        elapsed = time.monotonic() - started
    finally:
        stack.start_mlflow()
    assert proc.returncode == 2 and elapsed < 60, (elapsed, proc.stderr[-2000:])
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: MLflow tracking server {stack.tracking_uri} is unreachable"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and " epoch " not in proc.stderr  # failed before any training
    assert not (fault_ws / "models/tiny_a.keras").exists()


def test_tracking_server_killed_during_training_loses_nothing_and_a_rerun_logs_without_retraining(
    stack: TeamStack, fault_ws: Path
) -> None:
    import signal

    import mlflow

    alice = stack.client_env("alice")
    env = _env(alice)
    log = fault_ws / "train.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            [shutil.which("python", path=env["PATH"]) or "python", *_stage(fault_ws, env)[1:]],
            cwd=fault_ws, env=env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "tiny_a epoch 1 " not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        stack.stop_mlflow(signal.SIGKILL)  # a crash, mid-training
        killed_at = log.read_text().count(" epoch ")
        code = proc.wait(timeout=600)
    finally:
        stack.start_mlflow()
    output = log.read_text()
    assert 1 <= killed_at < 8, output[-3000:]
    assert code == 2 and output.count("tiny_a epoch ") == 8, output[-3000:]  # training went on to its end
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"error: MLflow tracking server {stack.tracking_uri} is unreachable") and "without retraining" in last
    assert (fault_ws / "models/tiny_a.keras").stat().st_size > 0 and (fault_ws / "reports/train/tiny_a/metrics.json").exists()
    model_bytes = (fault_ws / "models/tiny_a.keras").read_bytes()

    rerun = _run(["dvc", "repro", "-s", "train@tiny_a"], fault_ws, env)
    assert "without retraining" in rerun.stderr and " epoch " not in rerun.stderr, rerun.stderr[-3000:]
    assert (fault_ws / "models/tiny_a.keras").read_bytes() == model_bytes
    os.environ.update(alice)
    try:
        client = mlflow.MlflowClient(tracking_uri=stack.tracking_uri)
        experiment = client.get_experiment_by_name("mura")
        assert experiment is not None
        fingerprint = dataset_fingerprint(fault_ws / "data/interim/images.csv", fault_ws / "data/processed/split.csv")
        runs = client.search_runs([experiment.experiment_id], f"tags.dataset_fingerprint = '{fingerprint}'")
        assert len(runs) == 1  # the rerun continued the interrupted run
        newest = runs[0]
        assert newest.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(newest.info.run_id, "val_loss")]
        assert sorted(steps) == list(range(1, 9))  # every epoch, those the dead server missed included
        assert "best_val_auc" in newest.data.metrics
    finally:
        for key in alice:
            os.environ.pop(key, None)


def test_a_failed_champion_lookup_promotes_nothing(stack: TeamStack, workspace: Path, alice: dict[str, str]) -> None:
    """Only "no champion alias" may mean no champion: a refused or unreachable server stops the promotion."""
    import mlflow

    from mura.config import PromotionParams
    from mura.errors import TrackingError
    from mura.packaging.register import CHAMPION, promote_version

    def never(champion: str) -> None:
        raise AssertionError(f"the lookup failed: nothing may be compared with version {champion}")

    name = "mura-ensemble"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**alice, **FAIL_FAST}.items():  # the stage's retries: seconds, not MLflow's minutes
            patch.setenv(key, value)
        mlflow.set_tracking_uri(stack.tracking_uri)
        client = mlflow.MlflowClient(tracking_uri=stack.tracking_uri)
        champion = client.get_model_version_by_alias(name, CHAMPION)
        # A new version, just registered
        assert champion.source is not None
        logged_model = champion.source.removeprefix("models:/")  # MLflow 3: a version's source is its logged model
        challenger = client.create_model_version(name, champion.source, champion.run_id, model_id=logged_model).version
        patch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password-0123456789")  # refused between registering and the lookup
        with pytest.raises(TrackingError, match=r"refused the credentials .* looking up the champion of mura-ensemble"):
            promote_version(name, challenger, never, PromotionParams(), force=False)
        patch.setenv("MLFLOW_TRACKING_PASSWORD", alice["MLFLOW_TRACKING_PASSWORD"])
        stack.stop_mlflow()  # down between registering and the lookup
        try:
            with pytest.raises(
                TrackingError, match=r"unreachable .* looking up the champion of mura-ensemble \(nothing promoted\)"
            ):
                promote_version(name, challenger, never, PromotionParams(), force=False)
        finally:
            stack.start_mlflow()
        assert client.get_model_version_by_alias(name, CHAMPION).version == champion.version
        client.delete_model_version(name, challenger)


def test_make_team_up_writes_a_private_env_file_that_works(stack: TeamStack, tmp_path: Path) -> None:
    # `make team-up` runs this; on a running stack it starts nothing and only adds the user.
    env_file = tmp_path / ".team.env"
    args = ["mura", "team", "up", "--state", str(stack.state), "--env-file", str(env_file), "--user", "carol"]
    out = _run(args, tmp_path, _env({})).stdout
    assert stack.tracking_uri in out and (env_file.stat().st_mode & 0o777) == 0o600
    settings = read_env_file(env_file)
    assert settings["MLFLOW_TRACKING_USERNAME"] == "carol" and settings["AWS_ENDPOINT_URL"] == stack.s3_endpoint
    request = urllib.request.Request(f"{stack.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1")
    token = base64.b64encode(f"carol:{settings['MLFLOW_TRACKING_PASSWORD']}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_wrong_credentials_are_one_line_naming_the_service(stack: TeamStack, workspace: Path, tmp_path: Path) -> None:
    wrong = "not-the-password-0123456789"
    # MLflow refuses a training before it starts ...
    env = _env(stack.client_env("alice"), MLFLOW_TRACKING_PASSWORD=wrong)
    proc = _run(_stage(workspace, env, "tiny_b"), workspace, env, ok=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last == (
        f"error: MLflow tracking server {stack.tracking_uri} refused the credentials of user 'alice' (HTTP 401) "
        "while opening experiment 'mura'"
    ), proc.stderr[-2000:]
    # ... and a model load (CLI, web UI, API) ...
    image = tmp_path / "view.png"
    image.write_bytes(png_bytes(np.zeros((40, 40), np.uint8)))
    proc = _run(["mura", "predict", str(image), "--model", "models:/mura-ensemble@champion"], tmp_path, env, ok=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
        f"error: MLflow tracking server {stack.tracking_uri} refused the credentials of user 'alice' (HTTP 401) while loading"
    ), proc.stderr[-2000:]
    for output in (proc.stdout, proc.stderr):
        assert wrong not in output and "Traceback" not in output
    # ... S3 refuses DVC with DVC's own message ...
    env = _env(stack.client_env("alice"), AWS_SECRET_ACCESS_KEY=wrong)
    proc = _run(["dvc", "push", "-r", "team"], workspace, env, ok=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and wrong not in proc.stderr
    refused = ("SignatureDoesNotMatch", "Forbidden", "AccessDenied", "403")
    assert any(word in proc.stderr for word in refused), proc.stderr[-2000:]
    # ... and PostgreSQL refusing the tracking server is named as such.
    (tmp_path / "impostor").mkdir()
    shutil.copy2(stack.state / "secrets.json", tmp_path / "impostor/secrets.json")
    impostor = TeamStack(tmp_path / "impostor")
    impostor.secrets.pg_password = wrong
    impostor.ports.mlflow = free_port()
    with pytest.raises(TeamError, match=r"^PostgreSQL .* refused the tracking server's credentials"):
        impostor.start_mlflow(timeout=60)


def test_secrets_never_reach_logs_params_or_reports(stack: TeamStack, workspace: Path) -> None:
    secret_values = [
        stack.secrets.pg_password,
        stack.secrets.s3_secret_key,
        stack.secrets.admin_password,
        *stack.secrets.users.values(),
    ]
    texts = [(workspace.parent / "repro.log").read_text()]
    for path in [*workspace.rglob("*.json"), *workspace.rglob("*.md"), *workspace.rglob("*.csv"), *workspace.rglob("*.yaml")]:
        if ".dvc" not in path.parts and "data" not in path.parts:
            texts.append(path.read_text(errors="replace"))
    texts.append((workspace / ".dvc/config").read_text())
    texts += [str(row) for row in _pg(stack, "SELECT key, value FROM params")]
    texts += [str(row) for row in _pg(stack, "SELECT key, value FROM tags")]
    texts += [str(row) for row in _pg(stack, "SELECT key, value FROM model_version_tags")]
    for log in (stack.state / "logs").iterdir():
        texts.append(log.read_text(errors="replace"))
    for secret in secret_values:
        assert not any(secret in text for text in texts)


def test_mlflow_run_of_the_container_project_logs_and_registers_on_the_server(
    stack: TeamStack, image: str, docker_api: str, repo_root: Path, tmp_path: Path
) -> None:
    """`mlflow run docker/mlproject -e main`: the whole pipeline in the image, runs and model on the server."""
    import mlflow

    user = "dave"
    stack.add_user(user)
    settings = stack.client_env(user)
    env_file = tmp_path / "container.env"  # credentials reach the container without appearing in MLflow's log
    write_env_file(env_file, {k: v for k, v in settings.items() if k != "MLFLOW_TRACKING_URI"})
    # One variant, one epoch, a small synthetic set (the image's default is the demo's 400 patients): what is
    # tested is where the runs and the model go, not the training.
    small = {"patients": 30, "fracture_images": 0}
    override = yaml.safe_dump(
        dict(OVERRIDE, models={**OVERRIDE["models"], "tiny_b": None}, train=dict(OVERRIDE["train"], epochs=1), synth=small)
    )
    proc = _run(
        ["mlflow", "run", str(repo_root / "docker/mlproject"), "-e", "main", "-A", "network=host",
         "-A", f"env-file={env_file}", "-P", f"override={override}"],
        tmp_path, _env(settings, DOCKER_HOST=docker_api),
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert "succeeded" in log and settings["MLFLOW_TRACKING_PASSWORD"] not in log
    assert stack.secrets.s3_secret_key not in log
    launcher = [line for line in log.splitlines() if "=== Run (ID '" in line][-1].split("'")[1]
    os.environ.update(settings)
    try:
        runs = mlflow.search_runs(experiment_names=["mura"], filter_string=f"tags.mlflow.parentRunId = '{launcher}'")
    finally:
        for key in settings:
            os.environ.pop(key, None)
    assert set(runs["tags.mlflow.runName"]) == {"tiny_a", "ensemble"} and set(runs["tags.mlflow.user"]) == {user}


def test_the_feedback_store_keeps_reviews_in_the_teams_postgresql(stack: TeamStack, tmp_path: Path) -> None:
    """The servers' feedback store on the stack's PostgreSQL (database mura_feedback): rows, a second reader, retention."""
    import datetime as dt
    import urllib.parse

    from mura.operations.feedback import Answer, FeedbackStore, Retention, Review

    password = urllib.parse.quote(stack.secrets.pg_password, safe="")
    url = f"postgresql+psycopg2://mura:{password}@127.0.0.1:{stack.ports.postgres}/mura_feedback"
    store = FeedbackStore(tmp_path / "web", url)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    for answer_id, when in (("fresh", dt.datetime.now(dt.UTC)), ("stale", old)):
        store.record_answer(Answer(answer_id, store.key(answer_id), "web", "mura-ensemble", "3", "default", 0.5, 0.8, "abnormal",
                                   "XR_WRIST", True, 1, when))  # fmt: skip
    store.record_review(Review("fresh", "web", "alice", "disagree", "normal"))
    rows = _pg(stack, "SELECT reviewer, assessment, radiologist_label FROM feedback", "mura_feedback")
    assert rows == [("alice", "disagree", "normal")]
    reader = FeedbackStore(tmp_path / "monitor", url, Retention(answer_days=30))  # another server, same database
    reviewed = reader.reviewed()
    assert list(reviewed["answer_id"]) == ["fresh"] and not reviewed["agreed"].iloc[0]
    assert reader.prune() == (1, 0) and reader.answer("stale") is None and reader.answer("fresh") is not None
    assert stack.secrets.pg_password not in repr(store.engine.url)  # SQLAlchemy masks it wherever the URL is shown
