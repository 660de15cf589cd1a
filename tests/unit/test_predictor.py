"""The served model's loader: its environment check (mura.runtime.predictor)."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import version
from pathlib import Path

import yaml

from mura.runtime.predictor import environment_mismatches


def _model(folder: Path, requirements: list[str], python: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    python = python or platform.python_version()
    (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": {"python_version": python}}}))
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return folder


def test_a_model_logged_with_this_environment_has_no_mismatch(tmp_path: Path) -> None:
    pins = [f"numpy=={version('numpy')}", f"pyyaml=={version('pyyaml')}", "-r extra.txt", "# comment", ""]
    assert environment_mismatches(_model(tmp_path, pins)) == []


def test_mismatches_name_the_requirement_and_what_is_installed(tmp_path: Path) -> None:
    folder = _model(
        tmp_path,
        ["numpy==0.0.1", "no-such-package-mura==1.0", 'pyyaml==0.1; python_version < "3.0"', "./local/path"],
        python="3.1.4",
    )
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert environment_mismatches(folder) == [
        f"Python 3.1.4 (this is Python {platform.python_version()})",
        f"numpy==0.0.1 (installed here: {version('numpy')})",
        "no-such-package-mura==1.0 (not installed here)",
    ]
    assert here in environment_mismatches(folder)[0]


def test_a_folder_without_metadata_has_nothing_to_check(tmp_path: Path) -> None:
    assert environment_mismatches(tmp_path) == []
