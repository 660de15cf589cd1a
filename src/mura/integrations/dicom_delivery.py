"""Sending result objects to the hospital: DIMSE C-STORE (pynetdicom) or DICOMweb STOW-RS.

A destination is written ``AE@host:port`` (C-STORE) or given as a STOW-RS base URL.
A send either stores every object or raises :class:`DeliveryError`; the node keeps
the objects in its spool and tries again later (see :mod:`mura.integrations.dicom_node`).
"""

from __future__ import annotations

import base64
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from mura.settings import runtime_settings

__all__ = ["CStoreDestination", "DeliveryError", "Destination", "StowDestination", "parse_destination"]


_AE_ADDRESS = re.compile(r"^(?P<ae>[^@\s\\]{1,16})@(?P<host>[^:\s]+):(?P<port>\d{1,5})$")


class DeliveryError(RuntimeError):
    """A destination did not take the objects (unreachable, rejected, or a failure status)."""


@dataclass(frozen=True)
class CStoreDestination:
    """A DICOM node (PACS) that takes C-STORE: ``AE@host:port``."""

    ae_title: str
    host: str
    port: int
    calling_ae: str = "MURA"
    timeout: float = 30.0

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def send(self, files: Sequence[Path]) -> None:
        """Store every file in one association.

        Raises:
            DeliveryError: association refused or failed, or a store answered with a failure status.
        """
        datasets = [dcmread(path) for path in files]
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = ae.associate(self.host, self.port, ae_title=self.ae_title)
        if not assoc.is_established:
            raise DeliveryError(f"{self}: association not established")
        try:
            for k, ds in enumerate(datasets):
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None:
                    raise DeliveryError(f"{self}: object {k + 1}: no response (connection lost or timed out)")
                if code not in (0x0000, 0xB000, 0xB006, 0xB007):  # success and the warnings
                    raise DeliveryError(f"{self}: object {k + 1}: C-STORE status 0x{code:04X}")
        finally:
            assoc.release()


@dataclass(frozen=True)
class StowDestination:
    """A DICOMweb server: objects are POSTed to ``<url>/studies`` (STOW-RS, multipart/related)."""

    url: str
    timeout: float = 60.0

    def __str__(self) -> str:
        return self.url

    def send(self, files: Sequence[Path]) -> None:
        """POST every file in one STOW-RS request.

        Raises:
            DeliveryError: the server is unreachable or answers with an error.
        """
        boundary = uuid.uuid4().hex
        body = b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + Path(f).read_bytes() + b"\r\n"
            for f in files
        )
        body += b"--" + boundary.encode() + b"--\r\n"
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        auth = runtime_settings().stow_auth
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        request = urllib.request.Request(self.url.rstrip("/") + "/studies", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as err:
            raise DeliveryError(f"{self}: STOW-RS answered HTTP {err.code}") from None
        except OSError as err:
            raise DeliveryError(f"{self}: {err.__class__.__name__}: {err}") from None


Destination = CStoreDestination | StowDestination


def parse_destination(text: str, calling_ae: str = "MURA") -> CStoreDestination:
    """``AE@host:port`` → a C-STORE destination.

    Raises:
        ValueError: not of that form (the message shows the expected one).
    """
    match = _AE_ADDRESS.match(text.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"destination {text!r}: expected AE@host:port, e.g. PACS@10.0.0.5:104")
    return CStoreDestination(match["ae"], match["host"], int(match["port"]), calling_ae)
