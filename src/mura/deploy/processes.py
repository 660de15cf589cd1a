"""Local servers started by us: free loopback ports, waiting for a port, and a supervisor for named processes.

The team stack (:mod:`mura.deploy.team`), the local PACS (:mod:`mura.deploy.orthanc`), the tests
and the benchmarks start real servers on 127.0.0.1; they all go through here, so every server
is started the same way (its own process group, its log under the folder, a pidfile another
process can stop it by) and stopped the same way (SIGTERM to the group, a grace period, SIGKILL).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mura.errors import MuraError

__all__ = ["HOST", "ServerError", "Supervisor", "free_port", "venv_program", "venv_program_env", "wait_tcp", "write_private"]

HOST = "127.0.0.1"


class ServerError(MuraError):
    """A local server could not be started or reached."""


def venv_program(module: str) -> list[str]:
    """The command that runs ``module``'s program with this interpreter (``python -m mlflow``, ``python -m dvc``).

    Started by path, never by bare name: ``.venv/bin/mura`` works without the venv on ``PATH``.
    """
    return [sys.executable, "-m", module]


def venv_program_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this interpreter's ``bin/`` first on ``PATH``: for programs (MLflow) that start others by bare name.

    ``mlflow models serve`` and ``mlflow server`` exec ``uvicorn``; started from ``.venv/bin/mura`` without the
    venv on ``PATH``, they would not find it.
    """
    return {**env, "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])}


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (mode 0600 from the start: secrets, passwords, keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None, twin: bool = False, taken: set[int] | None = None) -> int:
    """A free loopback port (``preferred`` when free); ``twin``: port + 10000 free too (SeaweedFS' gRPC)."""
    taken = taken or set()

    def ok(port: int) -> bool:
        return port not in taken and _port_free(port) and (not twin or (port + 10000 not in taken and _port_free(port + 10000)))

    if preferred and ok(preferred):
        return preferred
    rng = secrets.SystemRandom()
    for _ in range(500):
        port = rng.randrange(20000, 30000) if twin else rng.randrange(30000, 60000)
        if ok(port):
            return port
    raise ServerError("no free loopback port found")


def wait_tcp(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, what: str = "") -> None:
    """Wait until something listens on 127.0.0.1:``port``; one-line error if ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"{what} exited with code {proc.returncode} while starting")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise ServerError(f"{what} did not open {HOST}:{port} within {timeout:.0f} s")


class Supervisor:
    """Named server processes under one folder: ``logs/<name>.log`` and ``<name>.pid``.

    A process started here runs in its own session (process group), so stopping it stops its
    children too; its pidfile lets another process (``mura team down``) stop it later.

    Args:
        folder: where the logs and pidfiles live (created).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, name: str) -> Path:
        """The process' log (stdout and stderr, appended across starts)."""
        return self.folder / "logs" / f"{name}.log"

    def _pidfile(self, name: str) -> Path:
        return self.folder / f"{name}.pid"

    def spawn(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd`` as ``name`` (its log appended, its pid written)."""
        self.log_path(name).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "ab") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        self._pidfile(name).write_text(str(proc.pid))
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        """Send ``sig`` to the process group, wait up to ``timeout`` seconds, then SIGKILL it (no-op when not running)."""
        pidfile = self._pidfile(name)
        proc = self.procs.pop(name, None)
        pid = proc.pid if proc is not None else (int(pidfile.read_text()) if pidfile.exists() else None)
        pidfile.unlink(missing_ok=True)
        if pid is None:
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    return
            else:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
            time.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc is not None:
            proc.wait(5)

    def alive(self, name: str) -> bool:
        """Whether ``name`` runs (started by this object, or by another through its pidfile)."""
        proc = self.procs.get(name)
        if proc is not None:
            return proc.poll() is None
        pidfile = self._pidfile(name)
        if not pidfile.exists():
            return False
        try:
            os.kill(int(pidfile.read_text()), 0)
        except (ProcessLookupError, ValueError):
            return False
        return True
