"""``mura reviewers`` and ``mura feedback export``: who may give feedback, and feedback into training."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from mura.settings import runtime_settings

logger = logging.getLogger(__name__)


def cmd_reviewers(args: argparse.Namespace) -> None:
    """Add, remove or list reviewers' accounts."""
    from mura.operations.reviewers import ReviewerFile

    accounts = ReviewerFile(Path(args.file))
    if args.action == "add":
        token = accounts.add(args.name)
        print(f"reviewer {args.name}: token {token}")
        print("Give it to them privately; it is shown only now (the file keeps its SHA-256). Running servers see it at once.")
    elif args.action == "remove":
        if not accounts.remove(args.name):
            raise SystemExit(f"mura reviewers: no account {args.name!r} in {args.file}")
        print(f"reviewer {args.name} removed")
    else:
        for name in sorted(accounts.accounts()):
            print(name)


def cmd_feedback_export(args: argparse.Namespace) -> None:
    """Export the reviewed studies in MURA's layout (optionally `dvc add` it)."""
    from mura.operations.feedback import FeedbackStore
    from mura.operations.feedback_export import export_feedback

    since = dt.datetime.fromisoformat(args.since) if args.since else None
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    store = FeedbackStore(Path(args.feedback_dir), args.feedback_db or runtime_settings().feedback_db)
    summary = export_feedback(store, Path(args.out), since, args.name)
    print(
        f"{summary.studies} studies ({summary.images} images: {summary.confirmations} confirmations, "
        f"{summary.disagreements} disagreements) → {summary.folder}"
    )
    for reason, count in summary.skipped.items():
        if count:
            print(f"  left out: {count} ({reason})")
    if args.dvc:
        subprocess.run([sys.executable, "-m", "dvc", "add", str(summary.folder)], check=True)
        print(f"tracked with DVC: commit {summary.folder}.dvc, then `dvc repro` retrains with it")


def add_commands(sub: Any) -> None:
    """Add this group's commands to the ``mura`` parser's subparsers."""
    rev = sub.add_parser(
        "reviewers",
        help="reviewers' accounts for feedback in the web page (one token each, kept hashed)",
        description="Manage the file `mura serve-ui --reviewers FILE` reads: `add NAME` prints a new token once.",
    )
    rev.add_argument("action", choices=("add", "remove", "list"))
    rev.add_argument("name", nargs="?", default="", help="the account (letters, digits, . _ @ -)")
    rev.add_argument("--file", required=True, help="the accounts file (created with mode 0600)")
    rev.set_defaults(func=_checked_reviewers)

    fb = sub.add_parser(
        "feedback",
        help="radiologists' feedback: export it as a labelled dataset for the next training",
        description="`export` writes every reviewed study with kept views (confirmations and disagreements) in MURA's "
        "layout, train split only, labelled by the radiologist, with provenance.csv; `dvc repro` then trains on it.",
    )
    actions = fb.add_subparsers(dest="action", required=True)
    export = actions.add_parser("export", help="write the reviewed studies under --out (data.feedback_dir)")
    export.add_argument("--feedback-dir", required=True, help="the servers' feedback store folder")
    export.add_argument("--feedback-db", default=None, help="its database URL (default $MURA_FEEDBACK_DB, else SQLite there)")
    export.add_argument("--out", default="data/feedback", help="where exports go (params.yaml data.feedback_dir)")
    export.add_argument("--since", default=None, help="only reviews at or after this ISO time")
    export.add_argument("--name", default=None, help="the export's folder name (default export-<UTC time>)")
    export.add_argument("--dvc", action="store_true", help="track the export with `dvc add`")
    export.set_defaults(func=cmd_feedback_export)


def _checked_reviewers(args: argparse.Namespace) -> None:
    if args.action in ("add", "remove") and not args.name:
        raise SystemExit(f"mura reviewers {args.action}: give the account NAME")
    cmd_reviewers(args)
