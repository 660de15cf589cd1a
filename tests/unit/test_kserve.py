"""The KServe InferenceService of a registered version (mura.deploy.kserve, ``mura kserve``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mura.cli import build_parser
from mura.deploy.kserve import PORT, KServeSettings, container_command, inference_service
from mura.errors import DataError


def test_the_predictor_serves_exactly_that_version_with_probes_and_resources() -> None:
    manifest = inference_service("mura-ensemble", 7, KServeSettings(image="reg.example/mura:serve", cpu="3", memory="6Gi"))
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1" and manifest["kind"] == "InferenceService"
    assert manifest["metadata"]["name"] == "mura-ensemble-v7" and manifest["metadata"]["labels"]["mura/model-version"] == "7"
    (container,) = manifest["spec"]["predictor"]["containers"]
    assert container_command(manifest) == [
        "mlflow", "models", "serve", "-m", "models:/mura-ensemble/7", "--env-manager", "local", "-h", "0.0.0.0", "-p", str(PORT),
    ]  # fmt: skip
    assert container["image"] == "reg.example/mura:serve" and container["ports"] == [{"containerPort": PORT, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ping", "port": PORT}
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 300
    assert container["resources"]["requests"] == container["resources"]["limits"] == {"cpu": "3", "memory": "6Gi"}
    assert container["envFrom"] == [{"secretRef": {"name": "mura-team"}}]
    assert container["securityContext"]["runAsNonRoot"] is True


def test_names_are_dns_labels_and_the_secret_is_optional() -> None:
    manifest = inference_service("MURA_Ensemble", 2, KServeSettings(tracking_secret=""))
    assert manifest["metadata"]["name"] == "mura-ensemble-v2" and "envFrom" not in manifest["spec"]["predictor"]["containers"][0]
    with pytest.raises(ValueError, match="Kubernetes name"):
        inference_service("mura", 1, KServeSettings(name="!!!"))


def test_mura_kserve_writes_the_version_register_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/register.json").write_text(json.dumps({"model_name": "mura-ensemble", "version": 4}))
    args = build_parser().parse_args(["kserve", "--namespace", "radiology", "--image", "reg.example/mura:serve"])
    args.func(args)
    manifest = yaml.safe_load((tmp_path / "reports/inferenceservice.yaml").read_text())
    assert manifest == inference_service(
        "mura-ensemble", 4, KServeSettings(image="reg.example/mura:serve", namespace="radiology")
    )
    (tmp_path / "reports/register.json").unlink()
    args = build_parser().parse_args(["kserve"])
    with pytest.raises(DataError, match="register.json is missing: give --version"):
        args.func(args)
