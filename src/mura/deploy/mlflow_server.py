"""The team's MLflow tracking server: PostgreSQL store, proxied S3 artifacts, MLflow's basic-auth app.

Clients need no S3 credentials for MLflow (the server proxies artifacts); the admin creates each
team member's user; an unauthenticated call gets 401. A logged-in member may edit (log to) every
experiment and model: a team shares its runs.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mura.deploy.processes import HOST, ServerError, Supervisor, venv_program_env

__all__ = ["ADMIN", "MlflowServer", "create_user"]

ADMIN = "admin"
NAME = "mlflow"  # its process' name under the supervisor


@dataclass(frozen=True)
class MlflowServer:
    """How the tracking server is run.

    Attributes:
        folder: its working folder (the auth app's ini).
        port: its loopback port.
        store_uri: the tracking store (PostgreSQL, no password in it).
        auth_uri: the auth app's user database.
        artifacts: where it stores artifacts (``s3://bucket/``).
        env: its environment (database password, S3 keys and endpoint, admin credentials).
    """

    folder: Path
    port: int
    store_uri: str
    auth_uri: str
    artifacts: str
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, processes: Supervisor, timeout: float = 90) -> None:
        """Start it and wait for ``/health``; a server that exits, or that PostgreSQL refuses, is one line."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "basic_auth.ini").write_text(
            "[mlflow]\n"
            "default_permission = EDIT\n"
            f"database_uri = {self.auth_uri}\n"
            f"admin_username = {ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "grant_default_workspace_access = true\n"
            # A credential that passed is remembered for 60 s instead of hashed again on every request
            # (PBKDF2 by design: 0.52 s per request on a 2-core EPYC, 19 ms with the cache); one worker, so a
            # password changed or a user removed through the API takes effect at once.
            "auth_cache_ttl_seconds = 60\n"
        )
        cmd = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            self.store_uri,
            "--artifacts-destination",
            self.artifacts,
            "--serve-artifacts",
            "--app-name",
            "basic-auth",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        log = processes.log_path(NAME)
        offset = log.stat().st_size if log.exists() else 0
        env = venv_program_env({**self.env, "MLFLOW_AUTH_CONFIG_PATH": str(self.folder / "basic_auth.ini")})
        proc = processes.spawn(NAME, cmd, env, self.folder)
        self._wait(proc, processes, log, offset, timeout)

    def _wait(self, proc: subprocess.Popen[bytes], processes: Supervisor, log: Path, offset: int, timeout: float) -> None:
        import requests  # lazy: the team extra: only for the team stack

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(log, "rb") as handle:
                handle.seek(offset)
                refused = b"password authentication failed" in handle.read()
            if refused or proc.poll() is not None:
                processes.stop(NAME, timeout=10)
                if refused:
                    database = self.store_uri.split("@", 1)[-1].split("/", 1)[0]
                    raise ServerError(f"PostgreSQL on {database} refused the tracking server's credentials (user mura)")
                raise ServerError(f"MLflow tracking server exited with code {proc.returncode}: see {log}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        processes.stop(NAME, timeout=10)
        raise ServerError(f"MLflow tracking server on {self.url} not healthy within {timeout:.0f} s: see {log}")


def create_user(url: str, admin_password: str, username: str) -> str:
    """Create a team member's MLflow user through the auth app's API; returns the generated password."""
    import requests  # lazy: the team extra: only for the team stack

    password = secrets.token_urlsafe(18)
    response = requests.post(
        f"{url}/api/2.0/mlflow/users/create",
        json={"username": username, "password": password},
        auth=(ADMIN, admin_password),
        timeout=30,
    )
    if response.status_code != 200:
        raise ServerError(f"creating MLflow user {username!r} failed: HTTP {response.status_code}")
    return password
