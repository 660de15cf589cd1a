"""The registered version on Kubernetes: a KServe ``InferenceService`` that runs ``mlflow models serve`` in our serving image.

Why a custom predictor and not KServe's OpenVINO model server on the exported IR: the answer a
client gets is the ensemble's — the variants averaged, calibrated, aggregated per study and
thresholded at the operating points, with the scope warnings — and that logic lives in the
``mura-ensemble`` pyfunc, not in the IR (whose outputs are each variant's raw probability). So the
predictor is the serving image (``docker/Dockerfile`` target ``serve``, ``mura[serve]``: OpenVINO
inside, no TensorFlow) running MLflow's own scoring server on ``models:/<name>/<version>``, the exact
version ``register`` made: the same command the ``serve`` stage and the container tests run.

:func:`inference_service` builds the manifest (plain data, pure); :func:`write_manifest` writes it
as YAML; :func:`apply` creates or replaces it in a cluster with the Kubernetes client (the
Kubeflow pipeline's ``deploy`` step, behind ``--deploy kserve``). No cluster is reachable where
this project is tested: the manifest is validated against KServe's own API models and its
container command is run under podman; :func:`apply` has not run against a cluster.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

__all__ = ["KServeSettings", "apply", "container_command", "inference_service", "write_manifest"]

API_VERSION = "serving.kserve.io/v1beta1"
PORT = 8080  # KServe's default container port for a custom predictor


@dataclass(frozen=True)
class KServeSettings:
    """Where and how the predictor runs.

    Attributes:
        image: the serving image (``make image-serve`` → ``localhost/mura:serve``; push it to your registry).
        namespace: the Kubernetes namespace.
        name: the InferenceService's name (a DNS label); default: ``<model name>-v<version>``.
        tracking_secret: a Secret whose keys become the predictor's environment
            (``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, ``AWS_*`` for proxied
            artifacts: the team stack's ``.team.env``); empty: none.
        cpu, memory: requests (also the limits: a predictor gets what it asked for, no more).
        min_replicas, max_replicas: KServe's autoscaling bounds.
        startup_seconds: how long the model may take to download and load before liveness counts.
    """

    image: str = "localhost/mura:serve"
    namespace: str = "default"
    name: str = ""
    tracking_secret: str = "mura-team"
    cpu: str = "2"
    memory: str = "4Gi"
    min_replicas: int = 1
    max_replicas: int = 2
    startup_seconds: int = 300


def _dns_label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].rstrip("-")
    if not label:
        raise ValueError(f"cannot make a Kubernetes name from {text!r}")
    return label


def inference_service(model_name: str, version: int, settings: KServeSettings) -> dict[str, Any]:
    """The InferenceService serving ``models:/<model_name>/<version>`` (pure).

    Probes: a startup probe on ``/ping`` that allows ``startup_seconds`` for the download and load,
    then readiness and liveness on ``/ping`` (MLflow's scoring server answers it once the model is
    loaded). Resources: requests equal to limits. Runs as the image's non-root user.
    """
    model_uri = f"models:/{model_name}/{version}"
    name = _dns_label(settings.name or f"{model_name}-v{version}")
    probe = {"httpGet": {"path": "/ping", "port": PORT}, "periodSeconds": 10, "timeoutSeconds": 5}
    container: dict[str, Any] = {
        "name": "kserve-container",
        "image": settings.image,
        "command": ["mlflow", "models", "serve"],
        "args": ["-m", model_uri, "--env-manager", "local", "-h", "0.0.0.0", "-p", str(PORT)],
        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
        "env": [{"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"}],
        "startupProbe": {**probe, "failureThreshold": max(1, settings.startup_seconds // 10)},
        "readinessProbe": {**probe, "failureThreshold": 3},
        "livenessProbe": {**probe, "failureThreshold": 6},
        "resources": {
            "requests": {"cpu": settings.cpu, "memory": settings.memory},
            "limits": {"cpu": settings.cpu, "memory": settings.memory},
        },
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False},
    }
    if settings.tracking_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.tracking_secret}}]
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {
                "app.kubernetes.io/name": "mura",
                "app.kubernetes.io/component": "predictor",
                "mura/model-name": _dns_label(model_name),
                "mura/model-version": str(version),
            },
            "annotations": {"mura/model-uri": model_uri},
        },
        "spec": {
            "predictor": {
                "minReplicas": settings.min_replicas,
                "maxReplicas": settings.max_replicas,
                "containers": [container],
            }
        },
    }


def container_command(manifest: dict[str, Any]) -> list[str]:
    """The predictor container's command and arguments, as a container engine runs them."""
    (container,) = manifest["spec"]["predictor"]["containers"]
    return [*container["command"], *container["args"]]


def write_manifest(manifest: dict[str, Any], path: Path) -> None:
    """The manifest as YAML (``kubectl apply -f`` takes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))


def apply(manifest: dict[str, Any]) -> str:
    """Create the InferenceService, or replace the one of the same name, in the cluster this process runs in.

    Uses the in-cluster service account (a Kubeflow step) or ``~/.kube/config``. Returns what was done.
    """
    from kubernetes import client, config  # lazy: only the deploy step talks to a cluster

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.CustomObjectsApi()
    group, version = API_VERSION.split("/")
    meta = manifest["metadata"]
    where = {"group": group, "version": version, "namespace": meta["namespace"], "plural": "inferenceservices"}
    try:
        current = api.get_namespaced_custom_object(**where, name=meta["name"])
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        api.create_namespaced_custom_object(**where, body=manifest)
        return f"created InferenceService {meta['namespace']}/{meta['name']}"
    body = {**manifest, "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]}}
    api.replace_namespaced_custom_object(**where, name=meta["name"], body=body)
    return f"replaced InferenceService {meta['namespace']}/{meta['name']}"
