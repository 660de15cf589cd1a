"""``mura serve-model``, ``mura serve-ui``, ``mura mlflow-ui`` and ``mura kserve``: the servers people open, and the cluster's."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from mura.cli.options import add_audit_option, add_feedback_options, add_model_option, add_tracking_option, feedback_settings
from mura.settings import runtime_settings

logger = logging.getLogger(__name__)


def cmd_serve_model(args: argparse.Namespace) -> None:
    """MLflow's scoring server on the registered model, with /metrics."""
    from mura.apps.model_server import serve_model

    serve_model(args.model, args.host, args.port, args.tracking_uri, Path(args.audit_dir) if args.audit_dir else None)


def cmd_serve_ui(args: argparse.Namespace) -> None:
    """Start the web interface."""

    from mura.apps.web import WebSettings, serve

    settings = WebSettings(
        model_uri=args.model,
        tracking_uri=args.tracking_uri,
        forward_url=args.forward_url,
        token=args.token or runtime_settings().ui_token,
        max_file_bytes=args.max_file_mb * 2**20,
        concurrency=args.concurrency,
        audit_dir=Path(args.audit_dir) if args.audit_dir else None,
        reviewers_file=Path(args.reviewers) if args.reviewers else None,
        **feedback_settings(args),
    )
    serve(settings, host=args.host, port=args.port)


def cmd_mlflow_ui(args: argparse.Namespace) -> None:
    """Start the MLflow UI on a local store (or point at a tracking server's) and print the runs table's address."""
    import subprocess
    import webbrowser

    from mura.deploy.mlflow_ui import find_experiment_id, runs_url
    from mura.deploy.processes import venv_program, venv_program_env, wait_tcp
    from mura.tracking import is_server, redact, tracking_uri

    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    uri = tracking_uri()
    experiment = find_experiment_id(args.experiment)
    if is_server(uri):  # a tracking server is its own UI
        url = runs_url(redact(uri), experiment)
        print(f"MLflow UI (the tracking server): {url}")
        if args.open:
            webbrowser.open(url)
        return
    env = venv_program_env(dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true"))
    command = [*venv_program("mlflow"), "ui", "--backend-store-uri", uri, "-h", args.host, "-p", str(args.port)]
    server = subprocess.Popen(command, env=env)
    base = f"http://{args.host}:{args.port}"
    try:
        wait_tcp(args.port, 60, server, "`mlflow ui`")
        url = runs_url(base, experiment)
        print(f"MLflow UI, runs of experiment {args.experiment or 'mura'}: {url}", flush=True)
        if experiment is None:
            print("(no run logged in this store yet: run `dvc repro` or `make demo` first)", flush=True)
        if args.open:
            webbrowser.open(url)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)


def cmd_kserve(args: argparse.Namespace) -> None:
    """Write (and with --apply, apply) the KServe InferenceService of a registered version."""
    import json

    from mura.deploy.kserve import KServeSettings, apply, inference_service, write_manifest
    from mura.errors import DataError

    if args.version is None:
        report = Path(args.register_report)
        if not report.is_file():
            raise DataError(f"{report} is missing: give --version, or run `dvc repro register` first")
        record = json.loads(report.read_text())
        name, version = str(record["model_name"]), int(record["version"])
    else:
        name, version = args.model_name, args.version
    settings = KServeSettings(
        image=args.image,
        namespace=args.namespace,
        name=args.name,
        tracking_secret=args.secret,
        cpu=args.cpu,
        memory=args.memory,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
    )
    manifest = inference_service(name, version, settings)
    write_manifest(manifest, Path(args.out))
    print(f"InferenceService {manifest['metadata']['name']} for models:/{name}/{version} written to {args.out}")
    if args.apply:
        print(apply(manifest))


def add_commands(sub: Any) -> None:
    """Add this group's commands to the ``mura`` parser's subparsers."""
    sm = sub.add_parser(
        "serve-model",
        help="serve the registered model: MLflow's scoring server (same /invocations contract) plus /metrics",
        description="The app `mlflow models serve` runs (POST /invocations, GET /ping, /health, /version), built by "
        "MLflow on the loaded model, with Prometheus /metrics added. Binds 127.0.0.1 unless --host is given.",
    )
    add_model_option(sm, short=True)
    add_tracking_option(sm)
    sm.add_argument("--host", "-H", default="127.0.0.1")
    sm.add_argument("--port", "-p", type=int, default=5000)
    add_audit_option(sm)
    sm.set_defaults(func=cmd_serve_model)

    ui = sub.add_parser(
        "serve-ui",
        help="start the web interface for clinicians",
        description="Serve the upload page and its API (binds 127.0.0.1 unless --host is given).",
    )
    add_model_option(ui)
    add_tracking_option(ui)
    ui.add_argument(
        "--forward-url", default=None, help="use a running `mlflow models serve` at this URL instead of loading the model"
    )
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=8000)
    ui.add_argument("--token", default=None, help="require this bearer token (or set MURA_UI_TOKEN)")
    ui.add_argument("--max-file-mb", type=int, default=20)
    ui.add_argument(
        "--concurrency", type=int, default=0, help="studies analysed at once on the optimized runtime (default: one per core)"
    )
    add_audit_option(ui)
    add_feedback_options(ui)
    ui.add_argument(
        "--reviewers",
        default=None,
        metavar="FILE",
        help="reviewers' accounts (mura reviewers add NAME --file FILE): each signs in with their own token; required "
        "with --feedback-dir",
    )
    ui.set_defaults(func=cmd_serve_ui)

    mui = sub.add_parser(
        "mlflow-ui",
        help="open the MLflow UI on the runs table (make mlflow-ui)",
        description="Start `mlflow ui` on the local tracking store (telemetry off) and print the address of the "
        "experiment's runs table in model-training mode; with a tracking server, print its address only.",
    )
    add_tracking_option(mui)
    mui.add_argument("--experiment", default=None, help="experiment name (default $MLFLOW_EXPERIMENT_NAME or mura)")
    mui.add_argument("--host", default="127.0.0.1")
    mui.add_argument("--port", type=int, default=5001)
    mui.add_argument("--open", action="store_true", help="also open the address in the default browser")
    mui.set_defaults(func=cmd_mlflow_ui)
    _add_kserve(sub)


def _add_kserve(sub: Any) -> None:
    """``mura kserve``: the InferenceService of a registered version."""
    ks = sub.add_parser(
        "kserve",
        help="the KServe InferenceService of a registered version (mlflow models serve in the serving image)",
        description="Write the manifest of a KServe InferenceService whose predictor runs `mlflow models serve` on "
        "models:/<name>/<version> in the serving image, with probes on /ping and resources; --apply creates or "
        "replaces it in the cluster (in-cluster service account or ~/.kube/config). Default version: the one "
        "reports/register.json names (what the pipeline just registered).",
    )
    ks.add_argument("--register-report", default="reports/register.json", help="register's record (default version)")
    ks.add_argument("--model-name", default="mura-ensemble", help="with --version")
    ks.add_argument("--version", type=int, default=None, help="the registered version (default: from --register-report)")
    ks.add_argument("--image", default="localhost/mura:serve", help="the serving image in your registry (make image-serve)")
    ks.add_argument("--namespace", default="default")
    ks.add_argument("--name", default="", help="the InferenceService's name (default <model>-v<version>)")
    ks.add_argument("--secret", default="mura-team", help="Secret with MLFLOW_TRACKING_* (and AWS_*) for the predictor")
    ks.add_argument("--cpu", default="2", help="CPU request and limit (default 2)")
    ks.add_argument("--memory", default="4Gi", help="memory request and limit (default 4Gi)")
    ks.add_argument("--min-replicas", type=int, default=1)
    ks.add_argument("--max-replicas", type=int, default=2)
    ks.add_argument("--out", default="reports/inferenceservice.yaml", help="where the manifest is written")
    ks.add_argument("--apply", action="store_true", help="create or replace it in the cluster")
    ks.set_defaults(func=cmd_kserve)
