"""DVC must know everything a stage reads: its script's import closure in src/mura and every input in its cmd."""

from __future__ import annotations

import ast
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src"
# The served model runs code that the register stage's own imports do not reach: the
# models-from-code file, which MLflow executes when it validates and loads the model.
EXTRA_ROOTS = {"register": ["src/mura/runtime/pyfunc.py"]}


def _module_file(name: str) -> Path | None:
    """The file of module ``mura.x.y`` (a package's ``__init__.py``), or None outside the package."""
    if name != "mura" and not name.startswith("mura."):
        return None
    base = PACKAGE.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(file: Path) -> set[str]:
    """Every ``mura`` module a file imports, at any depth (lazy imports inside functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from mura.data import ingest`
    out: set[str] = set()
    for name in names:
        parts = name.split(".")
        out.update(".".join(parts[: i + 1]) for i in range(len(parts)))  # parent packages run their __init__
    return {n for n in out if _module_file(n) is not None}


def import_closure(roots: list[Path]) -> set[str]:
    """Repository-relative paths of the roots and every ``src/mura`` file they import, transitively."""
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        todo.extend(f for f in (_module_file(n) for n in _imports(file)) if f is not None)
    return {f.relative_to(REPO).as_posix() for f in seen}


def expand_stages(dvc: dict[str, Any], params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``dvc.yaml`` stages with ``foreach`` expanded over ``${key}`` and ``${data.x}``-style params substituted."""

    def substitute(value: Any, key: str | None) -> Any:
        if isinstance(value, str):
            if key is not None:
                value = value.replace("${key}", key)
            return re.sub(r"\$\{([\w.]+)\}", lambda m: str(_lookup(params, m.group(1))), value)
        if isinstance(value, list):
            return [substitute(v, key) for v in value]
        if isinstance(value, dict):
            return {substitute(k, key): substitute(v, key) for k, v in value.items()}
        return value

    stages = {}
    for name, stage in dvc["stages"].items():
        if "foreach" in stage:
            items = _lookup(params, stage["foreach"].strip("${}"))
            for key in items:
                stages[f"{name}@{key}"] = substitute(copy.deepcopy(stage["do"]), key)
        else:
            stages[name] = substitute(stage, None)
    return stages


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        value = value[part]
    return value


def _paths(entries: list[Any]) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else str(e) for e in entries or []}


def _covered(path: str, by: set[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in by)


def missing_deps(stage: dict[str, Any], name: str) -> list[str]:
    """What the stage reads but does not declare (empty when complete)."""
    deps = _paths(stage.get("deps", []))
    outs = set().union(*(_paths(stage.get(k, [])) for k in ("outs", "metrics", "plots")))
    tokens = stage["cmd"].split()
    script = next(t for t in tokens if t.startswith("stages/") and t.endswith(".py"))
    roots = [REPO / script, *(REPO / r for r in EXTRA_ROOTS.get(name.split("@")[0], []))]
    missing = sorted(f for f in import_closure(roots) if f not in deps)
    for token in tokens[tokens.index(script) + 1 :]:
        if token.startswith("-") or "/" not in token and "." not in token:
            continue
        if token == "params.yaml":
            if not stage.get("params"):
                missing.append(token)
            continue
        is_output = _covered(token, outs) or any(o.startswith(token.rstrip("/") + "/") for o in outs)
        if not is_output and not _covered(token, deps):
            missing.append(token)
    return missing


@pytest.fixture(scope="module")
def stages() -> dict[str, dict[str, Any]]:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    return expand_stages(dvc, params)


def test_every_stage_is_checked(stages: dict[str, dict[str, Any]]) -> None:
    names = {n.split("@")[0] for n in stages}
    assert names == {
        "ingest", "split", "class_weights", "train", "ensemble", "calibrate", "localize", "evaluate", "register", "serve",
    }  # fmt: skip
    assert sum(n.startswith("train@") for n in stages) == 4


def test_every_stage_declares_what_it_reads(stages: dict[str, dict[str, Any]]) -> None:
    problems = {name: missing for name, stage in stages.items() if (missing := missing_deps(stage, name))}
    assert not problems, f"dvc.yaml deps are missing: {problems}"


@pytest.mark.parametrize("stage_name", ["ingest", "train@resnet101_a", "register"])
def test_a_dropped_dependency_is_caught(stages: dict[str, dict[str, Any]], stage_name: str) -> None:
    stage = copy.deepcopy(stages[stage_name])
    module = next(d for d in stage["deps"] if isinstance(d, str) and d.startswith("src/mura/") and "__init__" not in d)
    stage["deps"].remove(module)
    assert missing_deps(stage, stage_name) == [module]


def test_an_input_missing_from_deps_is_caught(stages: dict[str, dict[str, Any]]) -> None:
    stage = copy.deepcopy(stages["evaluate"])
    stage["deps"].remove("data/processed/split.csv")
    assert missing_deps(stage, "evaluate") == ["data/processed/split.csv"]


def test_lazy_imports_count(tmp_path: Path) -> None:
    closure = import_closure([REPO / "stages/train.py"])
    assert "src/mura/modeling/registry.py" in closure  # imported inside run_train only
    assert "src/mura/modeling/__init__.py" in closure


def test_ingest_depends_on_the_configured_dataset_folders(stages: dict[str, dict[str, Any]]) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    deps = _paths(stages["ingest"]["deps"])
    assert {params["data"]["mura_dir"], params["data"]["fracture_dir"]} <= deps
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["ingest"]["deps"]
    assert "${data.mura_dir}" in raw and "${data.fracture_dir}" in raw


def test_the_training_overlays_read_one_file_drawn_per_model() -> None:
    """dvc.yaml's Loss/Accuracy/AUC overlays read the one file ``evaluate`` writes for every variant, drawn with the
    project's ``by_model`` template (a line per model), so adding a variant to params.yaml needs no edit there."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    overlays = {title: spec for plot in dvc["plots"] for title, spec in plot.items() if title in ("Loss", "Accuracy", "AUC")}
    assert set(overlays) == {"Loss", "Accuracy", "AUC"}
    for title, spec in overlays.items():
        assert list(spec["y"]) == ["reports/plots/training_curves.csv"], title
        assert spec["template"] == "by_model", title
    template = json.loads((REPO / ".dvc" / "plots" / "by_model.json").read_text())
    assert template["encoding"]["color"]["field"] == "line"
    assert "datum.model" in template["transform"][0]["calculate"]
    evaluate = dvc["stages"]["evaluate"]
    assert "reports/train" in evaluate["deps"]
    assert {"reports/plots/training_curves.csv": {"cache": False}} in evaluate["outs"]


# What a pipeline stage before register computes never includes the served process, the apps or
# what operators run: editing the web page, a log format or the drift report reruns no training.
NOT_FOR_TRAINING = (
    "src/mura/apps/",
    "src/mura/operations/",
    "src/mura/integrations/",
    "src/mura/packaging/",
    "src/mura/runtime/",
    "src/mura/deploy/mlflow_ui.py",
)


@pytest.mark.parametrize(
    "stage_name", ["ingest", "split", "class_weights", "train", "ensemble", "calibrate", "localize", "evaluate"]
)
def test_no_training_stage_depends_on_serving_apps_or_operations(stage_name: str) -> None:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stage = dvc["stages"][stage_name]
    cmd = (stage.get("do") or stage)["cmd"]
    script = next(t for t in cmd.split() if t.startswith("stages/") and t.endswith(".py"))
    closure = import_closure([REPO / script])
    declared = _paths((stage.get("do") or stage).get("deps", []))
    found = sorted(f for f in closure | declared if f.startswith(NOT_FOR_TRAINING))
    assert not found, f"{stage_name} depends on {found}"
    assert "src/mura/stage.py" in closure  # the check reads the real closure, not an empty one


def test_register_does_not_depend_on_the_drift_report_or_the_apps() -> None:
    closure = import_closure([REPO / "stages/register.py", *(REPO / r for r in EXTRA_ROOTS["register"])])
    assert "src/mura/operations/profile.py" in closure  # the reference profile it stores ...
    assert not {f for f in closure if f.endswith(("operations/drift.py", "operations/telemetry.py")) or "/apps/" in f}
