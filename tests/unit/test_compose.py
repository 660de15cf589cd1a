"""docker/compose.yaml (the team stack in containers) resolves, publishes only loopback ports and holds no secret."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"
EXAMPLE = COMPOSE.parent / ".env.example"


def _podman_compose() -> str:
    found = shutil.which("podman-compose", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found or not shutil.which("podman"):
        pytest.fail("podman-compose and podman are needed: make install, scripts/ensure-system.sh (make test does both)")
    return found


def _config(env_file: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_podman_compose(), "-f", str(COMPOSE), "--env-file", str(env_file), "config"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    proc = _config(EXAMPLE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc: dict[str, Any] = yaml.safe_load(proc.stdout)
    return doc


def test_services_healthchecks_and_loopback_ports(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert set(services) == {
        *("postgres", "seaweedfs", "buckets", "mlflow", "model-server", "webui", "dicom-node", "monitor", "prometheus")
    }
    for name, service in services.items():
        if name != "buckets":  # a one-shot job
            assert "healthcheck" in service, name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert "models:/mura-ensemble@champion" in services["model-server"]["command"]
    node = services["dicom-node"]["command"]
    assert node[:4] == ["mura", "--log-format", "json", "dicom-node"]
    assert node[node.index("--destination") + 1] == "PACS@pacs.example.org:104"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The model server logs in with the admin password from .env unless a service user is given.
    assert services["model-server"]["environment"]["MLFLOW_TRACKING_PASSWORD"] == "change-me-admin-12+"


def test_every_secret_comes_from_the_env_file() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = {line.split("=", 1)[0] for line in EXAMPLE.read_text().splitlines() if line and not line.startswith("#")}
    assert required and required <= example
    missing = _config(os.devnull)
    assert missing.returncode != 0 and "required variable POSTGRES_PASSWORD is missing" in missing.stderr
    assert "change-me" not in text  # no value in the compose file itself


def _flag_values(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, word in enumerate(command) if word == flag]


def test_prometheus_scrapes_every_server_and_the_monitor_reads_every_audit_trail(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    config = yaml.safe_load((COMPOSE.parent / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]}
    ports = {
        "model-server": _flag_values(services["model-server"]["command"], "-p"),
        "webui": _flag_values(services["webui"]["command"], "--port"),
        "dicom-node": _flag_values(services["dicom-node"]["command"], "--metrics-port"),
        "monitor": _flag_values(services["monitor"]["command"], "--metrics-port"),
    }
    assert sorted(targets.values()) == sorted(f"{name}:{port[0]}" for name, port in ports.items())
    written = {
        name: _flag_values(services[name]["command"], "--audit-dir")[0] for name in ("model-server", "webui", "dicom-node")
    }
    assert sorted(_flag_values(services["monitor"]["command"], "--audit-dir")) == sorted(written.values())
    assert len(set(written.values())) == 3  # one writer per trail (rotation is per process)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes with Debian's prometheus (ensure-system.sh)")
def test_prometheus_config_and_alert_rules_are_valid() -> None:
    checked = subprocess.run(
        ["promtool", "check", "config", str(COMPOSE.parent / "prometheus" / "prometheus.yml")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout + checked.stderr


def test_the_servers_share_one_feedback_store_in_the_teams_postgresql(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    folders = {name: _flag_values(services[name]["command"], "--feedback-dir") for name in ("webui", "dicom-node", "monitor")}
    assert all(found == ["/var/lib/mura/feedback"] for found in folders.values()), folders
    urls = {services[name]["environment"]["MURA_FEEDBACK_DB"] for name in folders}
    assert len(urls) == 1 and next(iter(urls)).endswith("@postgres:5432/mura_feedback")
    assert _flag_values(services["webui"]["command"], "--reviewers") == ["/var/lib/mura/feedback/reviewers"]
    for name in folders:
        assert any(str(v).startswith("feedback:/var/lib/mura/feedback") for v in services[name]["volumes"]), name
    assert "CREATE DATABASE mura_feedback" in (COMPOSE.parent / "initdb" / "20-feedback-db.sql").read_text()
