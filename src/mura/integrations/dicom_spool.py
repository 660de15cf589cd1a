"""The DICOM node's spool: what was received, what is answered, what is still to deliver.

Everything the node has acknowledged lives on disk until it is done with, so a
crash (even ``kill -9``) loses nothing and repeats nothing:

- ``incoming/<study>/<instance>.dcm``: received instances, written to a temporary
  name, flushed and renamed before the C-STORE is acknowledged.
- ``outgoing/<result set>/``: the result objects of one scoring of a study, written
  in a temporary folder and renamed into place whole, with one ``pending-<n>``
  marker per destination still to receive them (removed once it has).
- ``done/<study>.json``: the instances already answered (a study sent again is
  acknowledged and not answered twice).

Folder and file names are keyed hashes (HMAC-SHA256 with a key kept in the spool),
never UIDs, so neither the names nor the node's logs identify a patient. A result
set's name is a hash of the study and its instances: scoring the same instances
again after a crash finds it already there, and the objects keep their UIDs
(derived from it), so a PACS that receives them twice stores them once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ResultSet", "Spool"]

logger = logging.getLogger(__name__)

KEY_FILE = ".key"
PENDING = "pending-"


@dataclass(frozen=True)
class ResultSet:
    """One study's answer waiting for delivery: its objects and the destinations still owed them."""

    name: str
    folder: Path
    pending: tuple[int, ...]  # indices into the node's destination list

    @property
    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.dcm"))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Spool:
    """The node's on-disk state (see the module docstring). Thread-safe for distinct studies.

    Args:
        root: the spool folder (created; keep it on a disk that survives restarts).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for sub in ("incoming", "outgoing", "done"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        key_file = self.root / KEY_FILE
        if not key_file.exists():
            _write_atomic(key_file, secrets.token_bytes(32))
            key_file.chmod(0o600)
        self._key = key_file.read_bytes()
        # Half-written result folders and files from a crash: their studies are still in incoming/.
        for stale in self.root.glob("outgoing/.*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in self.root.glob("incoming/*/.*.tmp"):
            stale.unlink(missing_ok=True)

    def key(self, uid: str) -> str:
        """A keyed hash of a UID: stable for this spool, meaningless outside it."""
        return hmac.new(self._key, uid.encode(), hashlib.sha256).hexdigest()[:24]

    # --- receiving -------------------------------------------------------------------------
    def answered(self, study: str) -> set[str]:
        """The instance keys of ``study`` (a key) already answered."""
        path = self.root / "done" / f"{study}.json"
        return set(json.loads(path.read_text())["instances"]) if path.exists() else set()

    def receive(self, study_uid: str, instance_uid: str, data: bytes) -> tuple[str, bool]:
        """Keep one received instance (flushed to disk before this returns).

        Returns:
            The study's key and whether the instance is new (False: already answered or held).
        """
        study, instance = self.key(study_uid), self.key(instance_uid)
        folder = self.root / "incoming" / study
        target = folder / f"{instance}.dcm"
        if instance in self.answered(study) or target.exists():
            return study, False
        folder.mkdir(exist_ok=True)
        _write_atomic(target, data)
        return study, True

    def waiting(self) -> list[str]:
        """Studies (keys) with received instances not yet answered."""
        return sorted(p.name for p in (self.root / "incoming").iterdir() if p.is_dir() and any(p.glob("*.dcm")))

    def instances(self, study: str) -> list[Path]:
        """A waiting study's instance files, in a stable order."""
        return sorted((self.root / "incoming" / study).glob("*.dcm"))

    # --- answering -------------------------------------------------------------------------
    def result_name(self, study: str, model_version: str) -> str:
        """The result set's name for the study's current instances (same instances, same name)."""
        names = ",".join(p.stem for p in self.instances(study))
        return hashlib.sha256(f"{study}|{model_version}|{names}".encode()).hexdigest()[:24]

    def has_result(self, name: str) -> bool:
        return (self.root / "outgoing" / name).exists()

    def store_result(self, name: str, objects: Iterable[tuple[str, bytes]], destinations: int) -> None:
        """Write a result set whole (temporary folder, then one rename) with its delivery markers."""
        tmp = self.root / "outgoing" / f".{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for filename, data in objects:
            _write_atomic(tmp / filename, data)
        for index in range(destinations):
            (tmp / f"{PENDING}{index}").touch()
        os.replace(tmp, self.root / "outgoing" / name)

    def finish(self, study: str, instance_files: Iterable[Path]) -> None:
        """Record the study's instances as answered and drop them from incoming/."""
        answered = self.answered(study) | {p.stem for p in instance_files}
        _write_atomic(self.root / "done" / f"{study}.json", json.dumps({"instances": sorted(answered)}).encode())
        for path in instance_files:
            path.unlink(missing_ok=True)
        folder = self.root / "incoming" / study
        if folder.exists() and not any(folder.iterdir()):
            folder.rmdir()

    # --- delivering ------------------------------------------------------------------------
    def undelivered(self) -> list[ResultSet]:
        """Result sets some destination has not received yet."""
        out = []
        for folder in sorted((self.root / "outgoing").iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            pending = tuple(sorted(int(p.name.removeprefix(PENDING)) for p in folder.glob(f"{PENDING}*")))
            if pending:
                out.append(ResultSet(folder.name, folder, pending))
            else:
                shutil.rmtree(folder, ignore_errors=True)
        return out

    def delivered(self, result: ResultSet, destination: int) -> None:
        """One destination has the result set; the folder goes when every destination has it."""
        (result.folder / f"{PENDING}{destination}").unlink(missing_ok=True)
        if not any(result.folder.glob(f"{PENDING}*")):
            shutil.rmtree(result.folder, ignore_errors=True)
