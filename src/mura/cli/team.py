"""``mura team up|down``: the team stack on this machine."""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger(__name__)


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


def add_commands(sub: Any) -> None:
    """Add this group's commands to the ``mura`` parser's subparsers."""
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
