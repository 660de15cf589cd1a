"""The ``serve`` stage: the version ``register`` just made, served the way users serve it, answering as registered.

Starts ``mlflow models serve -m models:/<name>/<version> --env-manager local`` (MLflow's own
CLI, run by this interpreter) on 127.0.0.1, waits for ``/ping``, sends the reference study
``register`` chose (:mod:`mura.packaging.serve_reference`) as MLflow's scoring contract
(``dataframe_split`` of base64 PNGs), and checks the answer: the study probability within the
registered tolerance of the reference, the same label at every operating point. It records the
cold start (process start to the first ``/ping``), the first answer and the warm latency's p50/p95
in ``reports/serve.json``, and stops the server — with its whole process group, on success, on a
failed check, on Ctrl-C or on SIGTERM. ``serve.enabled: false`` records that the stage was skipped.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pandas as pd

from mura.config import ServeParams
from mura.deploy.processes import HOST, free_port, venv_program, venv_program_env
from mura.errors import DataError, MuraError
from mura.modeling.gradcam import png_bytes
from mura.packaging.serve_reference import ServeReference, label_at
from mura.stage import Layout

logger = logging.getLogger(__name__)

__all__ = ["ServeCheckError", "ServePaths", "check_answer", "run_serve", "served_model"]


class ServeCheckError(MuraError):
    """The registered version did not start, or did not answer as registered."""


@dataclass(frozen=True)
class ServePaths:
    """What the ``serve`` stage reads and writes.

    Attributes:
        register: ``register``'s record (name, version, the reference study).
        images: images.csv (the reference images' cache rows).
        pixels: the cache (the reference images, at model size).
        out: the stage's record, a DVC metric.
    """

    register: Path = Path("reports/register.json")
    images: Path = Layout.IMAGES
    pixels: Path = Layout.PIXELS
    out: Path = Path("reports/serve.json")


def check_answer(rows: list[dict[str, Any]], reference: ServeReference) -> dict[str, Any]:
    """Compare a served answer (``/invocations``' rows) with the reference (pure).

    Returns:
        ``ok``, the served and reference probabilities, their difference, the tolerance and each
        operating point's served and reference label.
    """
    served = float(rows[0]["study_probability"]) if rows else float("nan")
    labels = {op: {"served": label_at(served, t), "reference": reference.labels[op]} for op, t in reference.thresholds.items()}
    difference = abs(served - reference.study_probability)
    ok = bool(len(rows) == len(reference.image_ids) and difference <= reference.tolerance)
    ok = ok and all(v["served"] == v["reference"] for v in labels.values())
    return {
        "ok": ok,
        "study_id": reference.study_id,
        "views": len(rows),
        "served_probability": served,
        "reference_probability": reference.study_probability,
        "abs_difference": difference,
        "tolerance": reference.tolerance,
        "labels": labels,
    }


def _request_body(pixels: np.ndarray, study_id: str) -> bytes:
    """MLflow's scoring contract for one study: a ``dataframe_split`` of base64 PNGs."""
    data = [[base64.b64encode(png_bytes(view)).decode(), study_id] for view in pixels]
    return json.dumps({"dataframe_split": {"columns": ["image", "study_id"], "data": data}}).encode()


def _post(url: str, body: bytes, timeout: float) -> tuple[list[dict[str, Any]], float]:
    """POST to ``/invocations``; the answer's rows and the seconds it took."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise ServeCheckError(f"the served model refused the reference study (HTTP {exc.code}): {detail}") from None
    rows: list[dict[str, Any]] = answer.get("predictions", answer) if isinstance(answer, dict) else answer
    return rows, time.perf_counter() - started


class _Stopped(Exception):
    """SIGTERM while the server runs (turned into an exception so the server is stopped on the way out)."""


@contextmanager
def served_model(model_uri: str, port: int, timeout: float, log: Path) -> Iterator[tuple[str, float]]:
    """``mlflow models serve`` on ``model_uri`` for the block: its base URL and its cold start in seconds.

    The server runs in its own process group and is stopped with it (SIGTERM, then SIGKILL) when
    the block ends for any reason, SIGTERM to this process included.

    Raises:
        ServeCheckError: it exited or did not answer ``/ping`` within ``timeout`` seconds.
    """
    env = venv_program_env(dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true"))
    command = [*venv_program("mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", HOST, "-p", str(port)]
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        raise _Stopped()

    started = time.perf_counter()
    with open(log, "wb") as handle:
        proc = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    in_main = threading.current_thread() is threading.main_thread()  # signal handlers: main thread only
    if in_main:
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        base = f"http://{HOST}:{port}"
        _wait_ping(base, proc, timeout, log)
        yield base, time.perf_counter() - started
    except _Stopped:
        raise ServeCheckError("stopped by SIGTERM; the model server was stopped with it") from None
    finally:
        _stop_group(proc)
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _wait_ping(base: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServeCheckError(f"`mlflow models serve` exited with code {proc.returncode} while starting: {_last_line(log)}")
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise ServeCheckError(f"`mlflow models serve` did not answer {base}/ping within {timeout:.0f} s: {_last_line(log)}")


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.exists() else []
    return lines[-1][:300] if lines else "(no output)"


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 20) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``grace`` seconds; returns once no member is left.

    ``mlflow models serve`` runs uvicorn as its child in the same group: the leader's exit does not
    mean the port is closed, so the group itself is waited for (a member that is not ours to reap
    is gone when signal 0 finds no one).
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(proc):
            time.sleep(0.1)
        if not _group_alive(proc):
            break
    proc.poll()


def _group_alive(proc: subprocess.Popen[bytes]) -> bool:
    proc.poll()  # reap the leader (our child) so it does not count as alive
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _reference_pixels(reference: ServeReference, paths: ServePaths) -> np.ndarray:
    images = pd.read_csv(paths.images, usecols=["image_id"])
    row_of = pd.Series(np.arange(len(images)), index=images["image_id"].astype(str))
    missing = [i for i in reference.image_ids if i not in row_of.index]
    if missing:
        raise DataError(f"{paths.images} has no image {missing[0]!r} of the reference study: rerun `dvc repro register`")
    pixels = np.load(paths.pixels, mmap_mode="r")
    return np.asarray(pixels[row_of.loc[list(reference.image_ids)].to_numpy()])


def run_serve(params: ServeParams, paths: ServePaths) -> dict[str, Any]:
    """The ``serve`` stage: start the registered version, check its answer, measure it, stop it.

    Args:
        params: the ``serve`` section.
        paths: what it reads.

    Returns:
        What ``reports/serve.json`` records.

    Raises:
        DataError: ``register``'s record is missing or has no reference study.
        ServeCheckError: the server did not start, or its answer differs from the reference.
    """
    if not paths.register.is_file():
        raise DataError(f"missing {paths.register}: run `dvc repro register` first")
    record = json.loads(paths.register.read_text())
    uri = f"models:/{record['model_name']}/{record['version']}"
    base_record = {"model_name": record["model_name"], "version": int(record["version"]), "model_uri": uri}
    if not params.enabled:
        logger.info("serve.enabled is false: %s was not started", uri)
        return {**base_record, "skipped": True}
    reference = ServeReference.from_dict(record.get("serve_reference"), str(paths.register))
    body = _request_body(_reference_pixels(reference, paths), reference.study_id)
    port = params.port or free_port()
    with tempfile.TemporaryDirectory(prefix="mura-serve-") as tmp:
        log = Path(tmp) / "mlflow-models-serve.log"
        with served_model(uri, port, params.startup_timeout_s, log) as (base, startup_s):
            rows, first_s = _post(f"{base}/invocations", body, params.startup_timeout_s)
            warm = [_post(f"{base}/invocations", body, 120)[1] for _ in range(params.warm_requests)]
        check = check_answer(rows, reference)
    latencies_ms = np.array(warm) * 1000 if warm else np.array([first_s * 1000])
    result = {
        **base_record,
        "skipped": False,
        "startup_s": round(startup_s, 3),
        "first_request_s": round(first_s, 3),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 2),
        "p95_ms": round(float(np.percentile(latencies_ms, 95)), 2),
        "warm_requests": len(warm),
        "answer_check": check,
    }
    if not check["ok"]:
        raise ServeCheckError(
            f"{uri} served study {reference.study_id} as {check['served_probability']:.4f} over {check['views']} view(s), "
            f"the registered reference is {reference.study_probability:.4f} over {len(reference.image_ids)} "
            f"(tolerance {reference.tolerance}; labels {check['labels']}): the served model does not answer as registered"
        )
    logger.info(
        "%s served: started in %.1f s, first answer %.2f s, warm p50 %.0f ms; answer as registered (|dp| %.2g)",
        uri, startup_s, first_s, result["p50_ms"], check["abs_difference"],
    )  # fmt: skip
    return result
