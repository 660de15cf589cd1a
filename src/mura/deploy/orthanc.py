"""A local Orthanc PACS on loopback: for trying the DICOM node, its tests and its benchmark.

Orthanc (Debian's ``orthanc`` and ``orthanc-dicomweb``) is started as our own
process with its own folder and ports, basic auth on, and the node registered as a
DICOM modality so that Orthanc can forward studies to it as a routing rule would.
Not a production PACS set-up: a stand-in for the hospital's.
"""

from __future__ import annotations

import base64
import json
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mura.deploy.processes import HOST, Supervisor, free_port, wait_tcp

__all__ = ["Orthanc", "orthanc_binary"]

PLUGINS = Path("/usr/share/orthanc/plugins")


def orthanc_binary() -> str | None:
    """The Orthanc executable, or None when it is not installed."""
    return shutil.which("Orthanc") or (str(Path("/usr/sbin/Orthanc")) if Path("/usr/sbin/Orthanc").exists() else None)


@dataclass
class Orthanc:
    """One Orthanc process (``start`` / ``stop``, or a ``with`` block).

    Attributes:
        folder: its storage, index, config and log.
        modalities: name → (AE, port on 127.0.0.1) of the nodes it may send to.
        http_port, dicom_port: its ports (free ones when 0).
        ae_title: its AE title.
    """

    folder: Path
    modalities: dict[str, tuple[str, int]]
    http_port: int = 0
    dicom_port: int = 0
    ae_title: str = "PACS"
    user: str = "mura"
    password: str = "mura-test-only"

    def __post_init__(self) -> None:
        self.http_port = self.http_port or free_port()
        self.dicom_port = self.dicom_port or free_port()
        self._processes = Supervisor(self.folder)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def address(self) -> str:
        """``AE@host:port`` as the node's ``--destination`` takes it."""
        return f"{self.ae_title}@{HOST}:{self.dicom_port}"

    def start(self, timeout: float = 30) -> Orthanc:
        binary = orthanc_binary()
        if binary is None:
            raise RuntimeError("Orthanc is not installed (Debian: apt-get install orthanc orthanc-dicomweb)")
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": self.ae_title,
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "DicomModalities": {name: [ae, HOST, port] for name, (ae, port) in self.modalities.items()},
            "Plugins": [str(PLUGINS)] if PLUGINS.exists() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 1,
        }
        (self.folder / "orthanc.json").write_text(json.dumps(config, indent=1))
        proc = self._processes.spawn("orthanc", [binary, str(self.folder / "orthanc.json")])
        wait_tcp(self.http_port, timeout, proc, "Orthanc")
        wait_tcp(self.dicom_port, timeout, proc, "Orthanc")
        return self

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 15 s), as every local server is stopped."""
        self._processes.stop("orthanc", timeout=15)

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- REST ------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        """One call of Orthanc's REST API (JSON in and out unless ``raw``)."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
        return payload if raw else json.loads(payload or b"null")

    def study_id(self, study_uid: str) -> str | None:
        """Orthanc's id of a study, None when it holds none with that UID."""
        for hit in self.request("POST", "/tools/lookup", study_uid.encode()):
            if hit["Type"] == "Study":
                return str(hit["ID"])
        return None

    def instances(self, study_uid: str) -> list[dict[str, Any]]:
        """The study's instances with their main tags (empty when Orthanc does not hold it)."""
        study = self.study_id(study_uid)
        if study is None:
            return []
        out = []
        for series in self.request("GET", f"/studies/{study}/series?expand"):
            for instance in series["Instances"]:
                out.append({"id": instance, "modality": series["MainDicomTags"].get("Modality"), "series": series["ID"]})
        return out

    def upload(self, data: bytes) -> str:
        """Store one DICOM file through the REST API; its instance id."""
        return str(self.request("POST", "/instances", data)["ID"])
