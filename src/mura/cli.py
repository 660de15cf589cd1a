"""The ``mura`` command line. ``mura <command> --help`` documents each command.

Each command imports what it runs inside its ``cmd_*`` function: ``mura --help`` and a
one-shot command load only their own part of the package (the servers pull in MLflow,
FastAPI, pynetdicom and OpenVINO; ``synth`` needs none of them).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time
from pathlib import Path

from mura.config import SynthParams, load_params
from mura.operations.logging_context import LOG_FORMATS, configure_service_logging
from mura.settings import runtime_settings
from mura.stage import run_main

logger = logging.getLogger(__name__)


def _synth_settings(params_path: str | Path, args: argparse.Namespace | None = None) -> tuple[int, SynthParams]:
    """Seed and ``synth`` sizes from a params file (defaults when it is absent), overridden by the command line."""
    path = Path(params_path)
    if path.is_file():
        params = load_params(path)
        seed, sizes = params.seed, params.synth
    else:
        seed, sizes = 0, SynthParams()
    if args is not None:
        seed = args.seed if args.seed is not None else seed
        sizes = SynthParams(
            patients=args.patients if args.patients is not None else sizes.patients,
            fracture_images=args.fracture_images if args.fracture_images is not None else sizes.fracture_images,
        )
    return seed, sizes


def cmd_synth(args: argparse.Namespace) -> None:
    """Write the synthetic phantom datasets."""
    from mura.data.synthetic import write_synthetic

    seed, sizes = _synth_settings(args.params, args)
    for name, path in write_synthetic(Path(args.out), seed=seed, sizes=sizes).items():
        print(f"{name}: {path}")


def cmd_synth_dicom(args: argparse.Namespace) -> None:
    """Write synthetic radiograph studies as DICOM files (to send to the DICOM node)."""
    from mura.data.dicom_phantoms import write_phantom_study

    for k in range(args.studies):
        study = write_phantom_study(
            Path(args.out) / f"study{k + 1}",
            views=args.views,
            body_part=args.body_part.upper().removeprefix("XR_"),
            abnormal=k % 2 == 1,
            seed=args.seed + k,
            modality=args.modality,
            syntaxes=tuple(args.syntax or ["explicit"]),
            size=args.size,
        )
        print(f"{study.files[0].parent}  ({len(study.files)} views, {'abnormal' if study.abnormal else 'normal'} phantom)")


def cmd_workspace(args: argparse.Namespace) -> None:
    """Create/refresh a pipeline workspace and (optionally) its synthetic data."""
    from mura.data.synthetic import write_synthetic
    from mura.workspace import create_workspace, load_override, load_override_text, track_data

    if args.override_yaml is not None:
        override = load_override_text(args.override_yaml)
        label = "--override-yaml"
    else:
        override, label = load_override(args.override), args.override or "override"
    dest = create_workspace(Path(args.repo), Path(args.dest), override, label)
    out = dest / "data" / "raw" / "synthetic"
    if args.synth and not (out / "MURA-v1.1").exists():
        seed, sizes = _synth_settings(dest / "params.yaml")  # the workspace's merged params
        write_synthetic(out, seed=seed, sizes=sizes)
    if args.synth and not out.with_suffix(".dvc").exists():
        track_data(dest, out.relative_to(dest))  # `dvc push` carries the raw data too; a clone pulls it
    print(dest)
    if args.repro:  # one command for container entry points (docker/mlproject): no shell needed
        import subprocess

        from mura.deploy.processes import venv_program

        raise SystemExit(subprocess.run([*venv_program("dvc"), "repro"], cwd=dest, check=False).returncode)


def cmd_team(args: argparse.Namespace) -> None:
    """Start or stop the team stack on this machine (PostgreSQL, S3, MLflow tracking server)."""
    import getpass

    from mura.deploy.team import TeamStack, write_env_file

    stack = TeamStack(args.state)
    if args.action == "down":
        stack.down(purge=args.purge)
        print(f"team stack stopped{' and its data deleted' if args.purge else f' (data kept in {stack.state})'}")
        return
    user = args.user or getpass.getuser()
    env = stack.up(user)
    write_env_file(args.env_file, env)
    print(f"MLflow tracking server: {stack.tracking_uri} (user {user}; MLflow UI in the browser, same address)")
    print(f"S3 (SeaweedFS): {stack.s3_endpoint}, buckets mlflow (artifacts) and mura-dvc (DVC remote team)")
    print(f"PostgreSQL: 127.0.0.1:{stack.ports.postgres}")
    print(f"Settings written to {args.env_file}: `set -a; . {args.env_file}; set +a`")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


def _study_files(inputs: list[str]) -> list[Path]:
    """Files given directly, or the images inside given folders (sorted; macOS junk skipped)."""
    from mura.data.sources import is_junk
    from mura.errors import DataError

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(
                p for p in path.iterdir() if p.is_file() and not is_junk(p.name) and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"no such file or folder: {item}")
    if not files:
        raise DataError("no image files found (PNG, JPEG or DICOM)")
    return files


def cmd_predict(args: argparse.Namespace) -> None:
    """Predict one study from files or a study folder; print a table or JSON."""
    import json

    from mura.api import Predictor
    from mura.errors import DataError
    from mura.modeling.gradcam import overlay, png_bytes

    files = _study_files(args.inputs)
    predictor = Predictor.load(args.model, args.tracking_uri, warm_up=False)  # one study: no batch sizes to warm
    started = time.perf_counter()
    try:
        decoded = predictor.decode_views(files)
        result = predictor.predict_decoded(decoded, args.body_part, heatmaps=bool(args.heatmaps))
    except ValueError as exc:
        raise DataError(str(exc)) from None
    audit_dir = runtime_settings().audit_dir
    if audit_dir is not None:  # the same trail as the servers', when the operator asks for one
        from mura.operations.telemetry import AuditTrail

        identity = b"".join(hashlib.sha256(Path(f).read_bytes()).digest() for f in files)
        AuditTrail(Path(audit_dir)).record("cli", predictor, result, decoded, identity, time.perf_counter() - started)
    if args.heatmaps:
        out = Path(args.heatmaps)
        out.mkdir(parents=True, exist_ok=True)
        for index, view in enumerate(result.views, 1):
            for name, heat in view.heatmaps.items():
                (out / f"{index:02d}_{Path(view.name).stem}_{name}.png").write_bytes(png_bytes(overlay(view.gray, heat)))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    if result.synthetic_data:
        print("NOTE: this model was trained on SYNTHETIC data; the output is not clinical.")
    print(
        f"study: {result.label.upper()}  probability {result.probability:.3f}  "
        f"(operating point {result.operating_point}, threshold {result.thresholds[result.operating_point]:.3f})"
    )
    names = list(result.variants)
    print("view".ljust(28) + "ensemble  " + "  ".join(n[:14].ljust(14) for n in names))
    for view in result.views:
        print(
            view.name[:27].ljust(28)
            + f"{view.probability:.3f}     "
            + "  ".join(f"{view.variants[n]:.3f}".ljust(14) for n in names)
        )
    for warning in result.warnings:
        print(f"WARNING: {warning}")
    print("Pre-screening aid, not a diagnosis: a radiologist must review.")


def cmd_dicom_node(args: argparse.Namespace) -> None:
    """Run the DICOM node until SIGTERM or Ctrl-C."""
    from mura.integrations.dicom_node import DicomNode, NodeSettings

    settings = NodeSettings(
        model_uri=args.model,
        spool=Path(args.spool),
        destinations=tuple(args.destination or ()),
        stow_urls=tuple(args.stow_url or ()),
        ae_title=args.ae_title,
        host=args.host,
        port=args.port,
        allow=tuple(args.allow or ()),
        idle_seconds=args.idle_seconds,
        retry_seconds=args.retry_seconds,
        retry_max_seconds=args.retry_max_seconds,
        tracking_uri=args.tracking_uri,
        metrics_port=args.metrics_port or None,
        audit_dir=Path(args.audit_dir) if args.audit_dir else None,
    )
    DicomNode(settings).serve_forever()


def cmd_monitor(args: argparse.Namespace) -> None:
    """Write and log a drift report of the audit trail against the model's validation profile."""
    import datetime as dt

    from mura.operations.drift import DriftLimits, DriftMetrics, monitor_every, run_monitor

    since = dt.datetime.fromisoformat(args.since) if args.since else None
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    limits = DriftLimits(psi=args.psi_limit, p_value=args.p_limit)
    folders = [Path(f) for f in args.audit_dir or [default_audit_dir()]]
    if args.every is not None:
        if since is not None:
            raise SystemExit("mura monitor: --since and --every exclude each other (--every uses --window)")
        metrics = DriftMetrics()
        if args.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(args.metrics_port, addr=args.host, registry=metrics.registry)
        logger.info("drift report every %.0f s on the last %.0f s of answers", args.every, args.window)
        monitor_every(folders, args.model, Path(args.out), args.every, args.window, limits, args.tracking_uri, metrics)
        return
    table = run_monitor(folders, args.model, Path(args.out), since, limits, args.tracking_uri)
    flagged = table[table["flagged"]]
    print(f"{len(flagged)} of {len(table)} features moved past the limits; report: {Path(args.out) / 'drift_report.html'}")
    for row in flagged.itertuples():
        print(f"  {row.feature} ({row.group}): PSI {row.psi:.3f}, {row.test} p {row.p_value:.2g}")


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
    )
    serve(settings, host=args.host, port=args.port)


def cmd_mlflow_ui(args: argparse.Namespace) -> None:
    """Start the MLflow UI on a local store (or point at a tracking server's) and print the runs table's address."""
    import os
    import subprocess
    import webbrowser

    from mura.deploy.mlflow_ui import find_experiment_id, runs_url
    from mura.deploy.processes import venv_program, wait_tcp
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
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # what `mlflow ui` starts in turn
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


def default_audit_dir() -> str:
    """The servers' audit trail folder: ``$MURA_AUDIT_DIR``, else ``~/.local/state/mura/audit``."""
    return str(runtime_settings().server_audit_dir)


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``6h`` or ``7d`` (argparse type)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 6h, 7d)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"a duration must be positive, got {text!r}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="mura", description="Musculoskeletal radiograph abnormality detection (pre-screening aid)."
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=None,
        help="text lines (default) or one JSON object per line with the request id (or set MURA_LOG_FORMAT)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser(
        "synth",
        help="write synthetic phantom datasets in the MURA and fracture layouts",
        description="Write SYNTHETIC radiograph phantoms (not patient data) in the exact MURA-v1.1 "
        "and Bone Fracture Multi-Region layouts, deterministic from --seed.",
    )
    synth.add_argument("out", help="destination folder (its name should say synthetic), e.g. data/raw/synthetic")
    synth.add_argument("--params", default="params.yaml", help="read defaults from this params file's seed and synth section")
    synth.add_argument("--seed", type=int, default=None)
    synth.add_argument("--patients", type=int, default=None, help="MURA patients (1-3 studies of 1-4 views each)")
    synth.add_argument("--fracture-images", type=int, default=None, help="fracture dataset images (0: skip)")
    synth.set_defaults(func=cmd_synth)

    ws = sub.add_parser(
        "workspace",
        help="create a self-contained pipeline workspace (used by make demo)",
        description="Copy the pipeline into DEST with params.yaml merged with --override, "
        "and a DVC project of its own; --synth also writes the synthetic data.",
    )
    ws.add_argument("dest")
    ws.add_argument("--repo", default=".", help="repository root to copy from")
    ws.add_argument("--override", default=None, help="YAML file merged over params.yaml, e.g. params.demo.yaml")
    ws.add_argument("--override-yaml", default=None, metavar="TEXT", help="the override as YAML text instead of a file")
    ws.add_argument("--synth", action="store_true", help="write the synthetic datasets into DEST/data/raw/synthetic if absent")
    ws.add_argument("--repro", action="store_true", help="then run `dvc repro` in DEST (its exit code is the command's)")
    ws.set_defaults(func=cmd_workspace)

    team = sub.add_parser(
        "team",
        help="start/stop the team stack on this machine (make team-up / team-down)",
        description="PostgreSQL, SeaweedFS S3 and the MLflow tracking server (basic auth) on 127.0.0.1, "
        "without containers; `up` writes the connection settings to --env-file.",
    )
    team.add_argument("action", choices=["up", "down"])
    team.add_argument("--state", default=".team", help="folder for the servers' data, configuration, secrets and logs")
    team.add_argument("--env-file", default=".team.env", help="where `up` writes the settings (mode 0600)")
    team.add_argument("--user", default=None, help="MLflow user created for you (default: your login name)")
    team.add_argument("--purge", action="store_true", help="with down: delete the servers' data too")
    team.set_defaults(func=cmd_team)

    model_help = "model URI (models:/mura-ensemble@champion, models:/mura-ensemble/1) or a local model folder"
    tracking_help = "MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)"
    audit_help = "audit trail folder: one JSON line per answer (default $MURA_AUDIT_DIR or ~/.local/state/mura/audit)"
    predict = sub.add_parser(
        "predict",
        help="pre-screen one study from image files or a study folder",
        description="Predict one study (all given views together): study probability and label, "
        "per-view and per-model probabilities. A pre-screening aid, not a diagnosis.",
    )
    predict.add_argument("inputs", nargs="+", help="PNG/JPEG/DICOM files or a folder holding a study's views")
    predict.add_argument("--model", default="models:/mura-ensemble@champion", help=model_help)
    predict.add_argument("--tracking-uri", default=None, help=tracking_help)
    predict.add_argument("--body-part", default=None, help="e.g. XR_WRIST (default: DICOM tag when present)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    predict.add_argument("--heatmaps", metavar="DIR", default=None, help="write Grad-CAM overlays (per model and ensemble) here")
    predict.set_defaults(func=cmd_predict)

    sdicom = sub.add_parser(
        "synth-dicom",
        help="write synthetic radiograph studies as DICOM (DX/CR) files, e.g. to send to the DICOM node",
        description="Synthetic phantoms (NOT patient data) written as DICOM studies, one folder per study.",
    )
    sdicom.add_argument("out", help="output folder")
    sdicom.add_argument("--studies", type=int, default=2)
    sdicom.add_argument("--views", type=int, default=3)
    sdicom.add_argument("--body-part", default="WRIST", help="DICOM BodyPartExamined (WRIST, HAND, ELBOW, ...)")
    sdicom.add_argument("--modality", choices=("DX", "CR"), default="DX")
    sdicom.add_argument(
        "--syntax",
        action="append",
        choices=("explicit", "deflated", "rle", "j2k"),
        default=None,
        help="transfer syntax (repeat: the views cycle through them; default explicit)",
    )
    sdicom.add_argument("--size", type=int, default=None, help="long side in pixels (default: as rendered)")
    sdicom.add_argument("--seed", type=int, default=0)
    sdicom.set_defaults(func=cmd_synth_dicom)

    node = sub.add_parser(
        "dicom-node",
        help="DICOM node: PACS forwards radiograph studies, results return into the same study",
        description=(
            "Receive radiograph studies by C-STORE, score each complete study with the registered model and send "
            "a TID 1500 structured report and heatmap secondary captures back into the study (C-STORE or STOW-RS). "
            "A pre-screening aid, never a diagnosis. Binds 127.0.0.1 unless --host is given."
        ),
    )
    node.add_argument("--model", default="models:/mura-ensemble@champion", help=model_help)
    node.add_argument("--tracking-uri", default=None, help=tracking_help)
    node.add_argument("--ae-title", default="MURA", help="this node's AE title (default MURA)")
    node.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    node.add_argument("--port", type=int, default=11112, help="DICOM port (default 11112)")
    node.add_argument(
        "--destination",
        action="append",
        metavar="AE@HOST:PORT",
        help="a PACS that receives the results by C-STORE (repeat for several)",
    )
    node.add_argument("--stow-url", action="append", metavar="URL", help="a DICOMweb base URL that receives them by STOW-RS")
    node.add_argument("--spool", required=True, help="folder for received instances and undelivered results (keep it)")
    node.add_argument("--allow", action="append", metavar="AE", help="calling AE titles allowed to send (default: any)")
    node.add_argument(
        "--idle-seconds", type=float, default=10.0, help="a study is complete after this long without a new instance"
    )
    node.add_argument("--retry-seconds", type=float, default=2.0, help="first retry delay of a failed delivery (doubles)")
    node.add_argument("--retry-max-seconds", type=float, default=300.0, help="longest retry delay")
    node.add_argument("--metrics-port", type=int, default=9112, help="Prometheus /metrics port on --host (0: off)")
    node.add_argument("--audit-dir", default=None, help="audit trail folder (default: <spool>/audit)")
    node.set_defaults(func=cmd_dicom_node)

    sm = sub.add_parser(
        "serve-model",
        help="serve the registered model: MLflow's scoring server (same /invocations contract) plus /metrics",
        description="The app `mlflow models serve` runs (POST /invocations, GET /ping, /health, /version), built by "
        "MLflow on the loaded model, with Prometheus /metrics added. Binds 127.0.0.1 unless --host is given.",
    )
    sm.add_argument("--model", "-m", default="models:/mura-ensemble@champion", help=model_help)
    sm.add_argument("--tracking-uri", default=None, help=tracking_help)
    sm.add_argument("--host", "-H", default="127.0.0.1")
    sm.add_argument("--port", "-p", type=int, default=5000)
    sm.add_argument("--audit-dir", default=default_audit_dir(), help=audit_help)
    sm.set_defaults(func=cmd_serve_model)

    mon = sub.add_parser(
        "monitor",
        help="drift report: the audit trail against the model's validation data (HTML, CSV, MLflow)",
        description="Compare what the model answered (the audit trail) with the data it was validated on: PSI and "
        "two-sample tests on the study probability, the image statistics and the body-part mix, per body part.",
    )
    mon.add_argument("--model", default="models:/mura-ensemble@champion", help=model_help)
    mon.add_argument("--tracking-uri", default=None, help=tracking_help)
    mon.add_argument(
        "--audit-dir",
        action="append",
        default=None,
        help="an audit trail's folder (a node's is <spool>/audit); repeat for several servers (default $MURA_AUDIT_DIR "
        "or ~/.local/state/mura/audit)",
    )
    mon.add_argument("--since", default=None, help="only answers at or after this ISO time, e.g. 2026-11-01")
    mon.add_argument(
        "--every",
        type=duration,
        default=None,
        metavar="DURATION",
        help="keep running: a report every DURATION (e.g. 1d) on the last --window of answers",
    )
    mon.add_argument("--window", type=duration, default=7 * 86400.0, metavar="DURATION", help="with --every (default 7d)")
    mon.add_argument(
        "--metrics-port", type=int, default=0, help="with --every: serve the last report's figures as Prometheus /metrics"
    )
    mon.add_argument("--host", default="127.0.0.1", help="address of --metrics-port")
    mon.add_argument("--out", default="reports/monitoring", help="folder for drift_report.html and drift.csv")
    mon.add_argument("--psi-limit", type=float, default=0.2, help="flag a feature whose PSI exceeds this")
    mon.add_argument("--p-limit", type=float, default=0.01, help="flag a feature whose test p-value is below this")
    mon.set_defaults(func=cmd_monitor)

    ui = sub.add_parser(
        "serve-ui",
        help="start the web interface for clinicians",
        description="Serve the upload page and its API (binds 127.0.0.1 unless --host is given).",
    )
    ui.add_argument("--model", default="models:/mura-ensemble@champion", help=model_help)
    ui.add_argument("--tracking-uri", default=None, help=tracking_help)
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
    ui.add_argument("--audit-dir", default=default_audit_dir(), help=audit_help)
    ui.set_defaults(func=cmd_serve_ui)

    mui = sub.add_parser(
        "mlflow-ui",
        help="open the MLflow UI on the runs table (make mlflow-ui)",
        description="Start `mlflow ui` on the local tracking store (telemetry off) and print the address of the "
        "experiment's runs table in model-training mode; with a tracking server, print its address only.",
    )
    mui.add_argument("--tracking-uri", default=None, help=tracking_help)
    mui.add_argument("--experiment", default=None, help="experiment name (default $MLFLOW_EXPERIMENT_NAME or mura)")
    mui.add_argument("--host", default="127.0.0.1")
    mui.add_argument("--port", type=int, default=5001)
    mui.add_argument("--open", action="store_true", help="also open the address in the default browser")
    mui.set_defaults(func=cmd_mlflow_ui)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mura`` command."""
    args = build_parser().parse_args(argv)
    if args.log_format:  # worker processes (the DICOM node's, register's export) inherit it
        os.environ["MURA_LOG_FORMAT"] = args.log_format
    configure_service_logging()
    run_main(lambda: args.func(args), logging_ready=True)


if __name__ == "__main__":
    main()
