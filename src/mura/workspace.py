"""Self-contained pipeline workspaces (the demo, the end-to-end tests, CI checks).

A workspace is a folder holding a copy of the pipeline (``dvc.yaml``,
``stages/``, ``src/mura``, the plot templates of ``.dvc/plots``), its own ``params.yaml`` (the repository's merged
with an override such as ``params.demo.yaml``) and its own DVC project, so the
demo can run at a small image size without ever editing the real defaults.
It gets the repository's DVC remotes (``team``: docs/team.md), so
``dvc push -r team`` works in it without further set-up.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from mura.config import merge_params, parse_params
from mura.deploy.processes import venv_program
from mura.errors import ConfigError

logger = logging.getLogger(__name__)

PIPELINE_FILES = ("dvc.yaml", "MLproject")
PIPELINE_DIRS = ("stages", "src/mura")
PLOT_TEMPLATES = ".dvc/plots"  # dvc.yaml's custom plot templates (``template: by_model``)


def create_workspace(repo: Path, dest: Path, override: dict[str, Any] | None = None, override_name: str = "override") -> Path:
    """Create or refresh a workspace at ``dest`` from the repository at ``repo``.

    Code and params are (re)copied every time, so a changed stage makes DVC
    rerun it; data and outputs already in the workspace are kept.

    Args:
        repo: repository root (holds dvc.yaml, params.yaml, stages/, src/mura).
        dest: workspace folder, created if needed.
        override: partial params merged over the repository's params.yaml.
        override_name: how errors name the override (its file name).

    Returns:
        ``dest``.

    Raises:
        ConfigError: the merged params are invalid.
    """
    repo, dest = Path(repo).resolve(), Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        if (repo / name).exists():
            shutil.copy2(repo / name, dest / name)
    for name in PIPELINE_DIRS:
        target = dest / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(repo / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    merged = merge_params(params, override or {})
    try:
        parse_params(merged)  # validate before anything runs: an unknown key in either file is named
    except ConfigError as exc:
        raise ConfigError(f"params.yaml merged with {override_name}: {exc}") from None
    text = yaml.safe_dump(merged, sort_keys=False)
    if not (dest / "params.yaml").exists() or (dest / "params.yaml").read_text() != text:
        (dest / "params.yaml").write_text(text)
    (dest / "data" / "raw").mkdir(parents=True, exist_ok=True)
    for key, default in (("feedback_dir", "data/feedback"), ("external_dir", "data/external")):
        folder = Path(merged.get("data", {}).get(key) or default)
        (folder if folder.is_absolute() else dest / folder).mkdir(parents=True, exist_ok=True)  # a DVC dependency of ingest
    if importlib.util.find_spec("dvc") is None:  # a GPU node with Keras only: the stage scripts run by hand
        logger.warning("DVC is not installed: %s is a workspace without DVC (run its stages/*.py directly)", dest)
        return dest
    if not (dest / ".dvc").exists():
        subprocess.run([*venv_program("dvc"), "init", "--no-scm", "-q"], cwd=dest, check=True)
    copy_remotes(repo / ".dvc" / "config", dest / ".dvc" / "config")
    if (repo / PLOT_TEMPLATES).is_dir():
        shutil.copytree(repo / PLOT_TEMPLATES, dest / PLOT_TEMPLATES, dirs_exist_ok=True)
    return dest


def copy_remotes(source: Path, dest: Path) -> None:
    """Copy the ``remote "…"`` sections (and the default remote) of one DVC config into another."""

    if not source.exists():
        return
    from configobj import ConfigObj  # lazy: DVC's own dependency (a machine without DVC never gets here)

    src, out = ConfigObj(str(source)), ConfigObj(str(dest))
    changed = False
    for section in src.sections:
        if section.startswith("remote ") and out.get(section) != src[section]:
            out[section] = dict(src[section])
            changed = True
    remote = src.get("core", {}).get("remote")
    if remote and out.get("core", {}).get("remote") != remote:
        out.setdefault("core", {})["remote"] = remote
        changed = True
    if changed:
        out.write()


def track_data(dest: Path, folder: str | Path) -> None:
    """``dvc add`` a raw dataset folder, so a clone pulls the data its ``ingest`` stage reads (nothing without DVC)."""
    if not (Path(dest) / ".dvc").is_dir():  # a workspace made where DVC is not installed
        return
    subprocess.run([*venv_program("dvc"), "add", "-q", str(folder)], cwd=dest, check=True)


def load_override_text(text: str) -> dict[str, Any]:
    """Parse an override given as YAML text (``mura workspace --override-yaml``)."""
    doc = yaml.safe_load(text) or {}
    if not isinstance(doc, dict):
        raise ConfigError("--override-yaml must be a YAML mapping")
    return doc


def load_override(path: str | Path | None) -> dict[str, Any]:
    """Read an override YAML file (empty mapping when ``path`` is None)."""
    if path is None:
        return {}
    doc = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: override must be a YAML mapping")
    return doc
