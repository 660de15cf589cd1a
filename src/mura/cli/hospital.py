"""``mura dicom-node`` and ``mura monitor``: what runs in the hospital."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from mura.cli.options import (
    add_feedback_options,
    add_model_option,
    add_tracking_option,
    default_audit_dir,
    duration,
    feedback_settings,
)

logger = logging.getLogger(__name__)


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
        **feedback_settings(args),
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
    feedback = None
    if args.feedback_dir:
        from mura.operations.feedback import FeedbackStore
        from mura.settings import runtime_settings

        feedback = FeedbackStore(Path(args.feedback_dir), args.feedback_db or runtime_settings().feedback_db)
    if args.every is not None:
        if since is not None:
            raise SystemExit("mura monitor: --since and --every exclude each other (--every uses --window)")
        metrics = DriftMetrics()
        if args.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(args.metrics_port, addr=args.host, registry=metrics.registry)
        logger.info("drift report every %.0f s on the last %.0f s of answers", args.every, args.window)

        def report(since: dt.datetime) -> Any:
            return run_monitor(folders, args.model, Path(args.out), since, limits, args.tracking_uri, feedback)

        monitor_every(report, args.every, args.window, metrics)
        return
    table = run_monitor(folders, args.model, Path(args.out), since, limits, args.tracking_uri, feedback)
    flagged = table[table["flagged"]]
    print(f"{len(flagged)} of {len(table)} features moved past the limits; report: {Path(args.out) / 'drift_report.html'}")
    for row in flagged.itertuples():
        print(f"  {row.feature} ({row.group}): PSI {row.psi:.3f}, {row.test} p {row.p_value:.2g}")
    live = Path(args.out) / "live_performance.csv"
    if feedback is not None and live.exists():
        _print_live(live)


def _print_live(path: Path) -> None:
    """The agreement lines of ``live_performance.csv`` (all body parts, then each)."""
    import pandas as pd

    table = pd.read_csv(path)
    if table.empty:
        print("no study of this model version was reviewed by a radiologist in the window")
    for row in table.itertuples():
        print(
            f"  radiologists, {row.body_part}: {row.n} reviewed, agreement {row.agreement:.2f} "
            f"[{row.agreement_low:.2f}, {row.agreement_high:.2f}], sensitivity {row.sensitivity:.2f}, "
            f"specificity {row.specificity:.2f}"
        )


def add_commands(sub: Any) -> None:
    """Add this group's commands to the ``mura`` parser's subparsers.

    Long on purpose: one argparse declaration per option of ``dicom-node`` and ``monitor``, and nothing else.
    """
    node = sub.add_parser(
        "dicom-node",
        help="DICOM node: PACS forwards radiograph studies, results return into the same study",
        description=(
            "Receive radiograph studies by C-STORE, score each complete study with the registered model and send "
            "a TID 1500 structured report and heatmap secondary captures back into the study (C-STORE or STOW-RS). "
            "A pre-screening aid, never a diagnosis. Binds 127.0.0.1 unless --host is given."
        ),
    )
    add_model_option(node)
    add_tracking_option(node)
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
    add_feedback_options(node)
    node.set_defaults(func=cmd_dicom_node)

    mon = sub.add_parser(
        "monitor",
        help="drift report: the audit trail against the model's validation data (HTML, CSV, MLflow)",
        description="Compare what the model answered (the audit trail) with the data it was validated on: PSI and "
        "two-sample tests on the study probability, the image statistics and the body-part mix, per body part.",
    )
    add_model_option(mon)
    add_tracking_option(mon)
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
    mon.add_argument(
        "--feedback-dir",
        default=None,
        help="a server's feedback store: the report adds agreement, sensitivity and specificity against radiologists",
    )
    mon.add_argument("--feedback-db", default=None, help="its database URL (default $MURA_FEEDBACK_DB, else SQLite there)")
    mon.add_argument("--psi-limit", type=float, default=0.2, help="flag a feature whose PSI exceeds this")
    mon.add_argument("--p-limit", type=float, default=0.01, help="flag a feature whose test p-value is below this")
    mon.set_defaults(func=cmd_monitor)
