"""PostgreSQL for the team stack: Debian's server binaries, a data folder of our own, loopback, password auth.

Three databases: the tracking store (``mlflow``), the auth app's users (``mlflow_auth``) and the
servers' feedback store (``mura_feedback``, :mod:`mura.operations.feedback`). As
root, the server runs as the ``postgres`` user, which must own the data folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from mura.deploy.processes import HOST, ServerError, write_private

__all__ = ["DATABASES", "pg_bin", "start_postgres", "stop_postgres", "store_uri"]

PG_VERSIONS = ("17", "16", "15")
DATABASES = ("mlflow", "mlflow_auth", "mura_feedback")  # the tracking store, the auth app's users, radiologists' feedback


def pg_bin() -> Path:
    """The folder of PostgreSQL's server binaries (the newest Debian version installed)."""
    for version in PG_VERSIONS:
        path = Path(f"/usr/lib/postgresql/{version}/bin")
        if (path / "pg_ctl").exists():
            return path
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise ServerError("PostgreSQL server binaries not found: install Debian's `postgresql` package (scripts/ensure-system.sh)")


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(cmd: list[str], what: str, env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False, cwd="/")
    if proc.returncode != 0:
        raise ServerError(f"{what} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")


def start_postgres(data: Path, port: int, password: str) -> None:
    """Initialise ``data`` (the first time, user ``mura``) and start PostgreSQL on 127.0.0.1:``port``; create the databases."""
    pg = pg_bin()
    env = dict(os.environ, PGPASSWORD=password)
    fresh = not (data / "PG_VERSION").exists()
    if fresh:
        data.mkdir(parents=True, exist_ok=True)
        pwfile = data.parent / f".{data.name}.pw"
        write_private(pwfile, password + "\n")
        if os.geteuid() == 0:
            shutil.chown(data.parent, "postgres")
            shutil.chown(data, "postgres")
            shutil.chown(pwfile, "postgres")
        try:
            _run(
                [
                    *_as_postgres(),
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
    _run(
        [
            *_as_postgres(),
            str(pg / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(data / "server.log"),
            "-w",
            "-t",
            "30",
            "-o",
            f"-h {HOST} -p {port} -k {data}",
            "start",
        ],
        "pg_ctl start",
        env,
    )
    if fresh:
        for database in DATABASES:
            _run([str(pg / "createdb"), "-h", HOST, "-p", str(port), "-U", "mura", database], "createdb", env)


def stop_postgres(data: Path, mode: str = "fast") -> None:
    """Stop PostgreSQL (``pg_ctl stop -m mode``); nothing if it is not running."""
    if not (data / "postmaster.pid").exists():
        return
    subprocess.run(
        [*_as_postgres(), str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"],
        capture_output=True,
        timeout=60,
        check=False,
    )


def store_uri(port: int, database: str = "mlflow") -> str:
    """A database's SQLAlchemy URI; no password in it (the server gets ``PGPASSWORD``)."""
    return f"postgresql+psycopg2://mura@{HOST}:{port}/{database}"
