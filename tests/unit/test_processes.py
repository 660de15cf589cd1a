"""Local server processes: a free port, waiting for one, and the supervisor every local server goes through."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from mura.deploy.processes import HOST, ServerError, Supervisor, free_port, wait_tcp, write_private


def test_a_supervised_process_is_logged_found_by_its_pidfile_and_stopped_with_its_children(tmp_path: Path) -> None:
    child = "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    child += "print('up', c.pid, flush=True); time.sleep(60)"
    first = Supervisor(tmp_path)
    proc = first.spawn("server", [sys.executable, "-c", child])
    deadline = time.monotonic() + 10
    while "up" not in first.log_path("server").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(first.log_path("server").read_text().split()[-1])
    assert first.alive("server") and int((tmp_path / "server.pid").read_text()) == proc.pid
    other = Supervisor(tmp_path)  # another process (``mura team down``) knows it by its pidfile
    assert other.alive("server")
    other.stop("server", timeout=2)
    assert proc.wait(timeout=5) is not None and not (tmp_path / "server.pid").exists()
    assert not other.alive("server")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the whole group got the signal: the grandchild too
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the server's child survived it")
    other.stop("server")  # stopping what is not running is a no-op


def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    supervisor = Supervisor(tmp_path)
    proc = supervisor.spawn("stubborn", [sys.executable, "-c", stubborn])
    deadline = time.monotonic() + 10
    while "up" not in supervisor.log_path("stubborn").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    supervisor.stop("stubborn", signal.SIGTERM, timeout=0.5)
    assert proc.poll() == -signal.SIGKILL and time.monotonic() - started < 5


def test_ports_and_waiting(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(ServerError, match=f"did not open {HOST}:{port}"):
        wait_tcp(port, 0.3, what="nothing")
    with socket.socket() as server:
        server.bind((HOST, port))
        server.listen()
        assert free_port(preferred=port) != port  # taken: another one
        wait_tcp(port, 5)
    write_private(tmp_path / "secret", "s3cr3t")
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
