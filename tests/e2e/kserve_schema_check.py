"""Check Kubernetes manifests against KServe's API models (run in a venv with the ``kserve`` SDK, not ours).

KServe's CRD (``serving.kserve.io_inferenceservices.yaml``) is published only in its repository;
its Python SDK is generated from the same OpenAPI definitions and ships on PyPI, with the
Kubernetes client's models for the core types (containers, probes, resources). This walks a
manifest through those models strictly — every key must be a field of its model, every value of
the field's type — and builds each model so its own required-field checks run.

Usage: python kserve_schema_check.py MANIFEST.yaml... → prints a JSON list of errors (empty: valid).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import kserve.models
import kubernetes.client.models
import yaml

SCALARS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "bool": (bool,), "float": (int, float)}
KINDS = {"InferenceService": "V1beta1InferenceService"}


def _model(name: str) -> Any:
    return getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name, None)


def _normal(kind: str) -> str:
    """One spelling of a type: the Kubernetes client's ``List[X]``/``Dict[str, X]`` as KServe's ``list[X]``/``dict(str, X)``."""
    kind = kind.strip()
    if kind.startswith("Optional[") and kind.endswith("]"):
        kind = kind[9:-1]
    if kind.startswith("List[") and kind.endswith("]"):
        return f"list[{_normal(kind[5:-1])}]"
    if kind.startswith("Dict[") and kind.endswith("]"):
        key, _, item = kind[5:-1].partition(",")
        return f"dict({key.strip()}, {_normal(item)})"
    return kind


def check(value: Any, kind: str, path: str, errors: list[str]) -> None:
    """Append to ``errors`` what in ``value`` does not fit the OpenAPI type ``kind``."""
    kind = _normal(kind)
    if kind.startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            check(item, kind[5:-1], f"{path}[{i}]", errors)
    elif kind.startswith("dict("):
        inner = re.fullmatch(r"dict\(([^,]+), (.+)\)", kind)
        if not isinstance(value, dict) or inner is None:
            errors.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return
        for key, item in value.items():
            check(item, inner.group(2), f"{path}.{key}", errors)
    elif kind in SCALARS:
        if not isinstance(value, SCALARS[kind]) or (kind != "bool" and isinstance(value, bool)):
            errors.append(f"{path}: expected {kind}, got {value!r}")
    elif kind in ("object", "datetime", "date", "ResourceQuantity"):
        return  # IntOrString, free-form objects, timestamps, quantities: any JSON value
    else:
        _check_model(value, kind, path, errors)


def _check_model(value: Any, kind: str, path: str, errors: list[str]) -> None:
    model = _model(kind)
    if model is None:
        errors.append(f"{path}: unknown type {kind}")
        return
    if not isinstance(value, dict):
        errors.append(f"{path}: expected a {kind} mapping, got {type(value).__name__}")
        return
    by_key = {key: attr for attr, key in model.attribute_map.items()}
    for key, item in value.items():
        if key not in by_key:
            errors.append(f"{path}.{key}: not a field of {kind}")
        else:
            check(item, model.openapi_types[by_key[key]], f"{path}.{key}", errors)
    try:  # the generated model's own client-side checks (required fields, enums)
        model(**{by_key[k]: v for k, v in value.items() if k in by_key})
    except (ValueError, TypeError) as exc:
        errors.append(f"{path}: {kind}: {exc}")


def main() -> None:
    errors: list[str] = []
    for path in sys.argv[1:]:
        for doc in yaml.safe_load_all(open(path)):
            kind = KINDS.get(doc.get("kind", ""))
            if kind is None or doc.get("apiVersion") != "serving.kserve.io/v1beta1":
                errors.append(f"{path}: not a serving.kserve.io/v1beta1 InferenceService")
                continue
            check(doc, kind, doc["kind"], errors)
    print(json.dumps(errors))


if __name__ == "__main__":
    main()
