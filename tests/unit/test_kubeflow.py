"""pipelines/kubeflow.py compiles to the same DAG as dvc.yaml, in our image, with a GPU per training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mura.workspace import create_workspace
from tests.helpers import load_pipeline_module

REPO = Path(__file__).resolve().parents[2]


def _compile(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "mura.yaml"
    load_pipeline_module().main(["--output", str(out), *args])
    docs = list(yaml.safe_load_all(out.read_text()))
    return {"pipeline": docs[0], "platform": docs[1] if len(docs) > 1 else {}}


def _paths(entries: list[Any]) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries]


def expected_dag(root: Path) -> dict[str, set[str]]:
    """dvc.yaml's stages and edges, worked out here from deps and outs (independently of DVC's own graph)."""
    doc = yaml.safe_load((root / "dvc.yaml").read_text())
    models = yaml.safe_load((root / "params.yaml").read_text())["models"]
    stages: dict[str, dict[str, list[str]]] = {}
    for name, body in doc["stages"].items():
        if "foreach" in body:
            for key in models:
                do = yaml.safe_load(yaml.safe_dump(body["do"]).replace("${key}", key))
                stages[f"{name}@{key}"] = {"deps": _paths(do["deps"]), "outs": _paths(do.get("outs", []) + do.get("metrics", []))}
        else:
            outs = _paths(body.get("outs", []) + body.get("metrics", []) + body.get("plots", []))
            stages[name] = {"deps": _paths(body["deps"]), "outs": outs}

    def feeds(out: str, dep: str) -> bool:
        return out == dep or out.startswith(dep.rstrip("/") + "/") or dep.startswith(out.rstrip("/") + "/")

    return {
        name: {other for other, o in stages.items() if other != name and any(feeds(x, d) for x in o["outs"] for d in s["deps"])}
        for name, s in stages.items()
    }


def _compiled_dag(pipeline: dict[str, Any]) -> dict[str, set[str]]:
    tasks = pipeline["root"]["dag"]["tasks"]
    names = {key: task["taskInfo"]["name"] for key, task in tasks.items()}
    return {names[key]: {names[d] for d in task.get("dependentTasks", [])} for key, task in tasks.items()}


def test_compiled_dag_equals_dvc_yaml(tmp_path: Path) -> None:
    compiled = _compile(tmp_path)
    dag = _compiled_dag(compiled["pipeline"])
    assert dag.pop("prepare") == set()  # the workspace set-up, before ingest
    assert dag.pop("ingest") == {"prepare"}
    expected = expected_dag(REPO)
    expected.pop("ingest")
    assert dag == expected
    trains = {name for name in dag if name.startswith("train@")}
    assert len(trains) == 4 and dag["ensemble"] >= trains and all(dag[t] == {"ingest", "split", "class_weights"} for t in trains)


def test_every_executor_runs_our_image_and_every_training_gets_a_gpu(tmp_path: Path) -> None:
    pipeline = _compile(tmp_path, "--image", "reg.example/mura:cpu", "--gpu-image", "reg.example/mura:gpu")["pipeline"]
    tasks = pipeline["root"]["dag"]["tasks"]
    executors = pipeline["deploymentSpec"]["executors"]
    components = pipeline["components"]
    for task in tasks.values():
        executor = executors[components[task["componentRef"]["name"]]["executorLabel"]]["container"]
        if task["taskInfo"]["name"].startswith("train@"):
            assert executor["image"] == "reg.example/mura:gpu"
            assert executor["resources"]["accelerator"]["resourceCount"] == "1"
            assert executor["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert "stages/train.py --model" in executor["args"][0]
        else:
            assert executor["image"] == "reg.example/mura:cpu"
            assert "accelerator" not in executor.get("resources", {})
    assert "python stages/register.py" in str(executors)
    assert "python stages/serve.py" in str(executors)  # the DAG ends with serving the registered version
    serve = next(t for t in tasks.values() if t["taskInfo"]["name"] == "serve")
    assert sorted(serve["dependentTasks"]) == ["ingest", "register"]  # the version, and the reference images


def test_every_stage_step_tags_its_runs_with_the_kfp_run_id(tmp_path: Path) -> None:
    """Each stage's MLflow run gets mura.pipeline_run = kfp-<run uuid>, one value per pipeline run."""
    pipeline = _compile(tmp_path)["pipeline"]
    tasks = pipeline["root"]["dag"]["tasks"]
    executors = pipeline["deploymentSpec"]["executors"]
    components = pipeline["components"]
    stages = [t for t in tasks.values() if t["taskInfo"]["name"] != "prepare"]
    assert stages
    for task in stages:
        given = task["inputs"]["parameters"]["pipeline_run"]["runtimeValue"]["constant"]
        assert given == "{{$.pipeline_job_uuid}}"
        container = executors[components[task["componentRef"]["name"]]["executorLabel"]]["container"]
        assert container["args"][0].startswith('export MURA_PIPELINE_RUN_ID="kfp-$1" && ')
        assert container["args"][2] == "{{$.inputs.parameters['pipeline_run']}}"


def test_deploy_kserve_adds_a_last_step_that_applies_the_new_version(tmp_path: Path) -> None:
    args = ("--deploy", "kserve", "--serve-image", "reg.example/mura:serve", "--namespace", "radiology", "--secret", "mura-team")
    pipeline = _compile(tmp_path, *args)["pipeline"]
    dag = _compiled_dag(pipeline)
    assert dag["deploy"] == {"serve"} and not any("deploy" in upstream for upstream in dag.values())  # the last step
    tasks = pipeline["root"]["dag"]["tasks"]
    task = next(t for t in tasks.values() if t["taskInfo"]["name"] == "deploy")
    container = pipeline["deploymentSpec"]["executors"][pipeline["components"][task["componentRef"]["name"]]["executorLabel"]]
    script = container["container"]["args"][0]
    assert "mura kserve --image reg.example/mura:serve --namespace radiology --secret mura-team --apply" in script
    assert "deploy" not in _compiled_dag(_compile(tmp_path)["pipeline"])  # off unless asked


def test_secret_goes_to_the_tracking_steps_only(tmp_path: Path) -> None:
    platform = _compile(tmp_path, "--secret", "mura-team")["platform"]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert len(executors) == 6  # four train steps, register and serve
    assert all(e["secretAsEnv"][0]["secretName"] == "mura-team" for e in executors.values())


def test_a_new_variant_is_a_new_parallel_training_without_editing_the_pipeline(tmp_path: Path) -> None:
    ws = create_workspace(REPO, tmp_path / "ws", {"models": {"tiny_c": {"arch": "simple_cnn"}}})
    stages = load_pipeline_module().dvc_stages(ws)
    trains = [s for s in stages if s.trains]
    assert len(trains) == 5 and {"train@tiny_c"} <= {s.name for s in trains}


@pytest.mark.parametrize("bad", ["nope"])
def test_only_rejects_unknown_stages(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SystemExit, match="no such DVC stage: nope"):
        _compile(tmp_path, "--only", bad)


def test_committed_compiled_pipeline_is_current(tmp_path: Path) -> None:
    # `make kfp` output is in git for users who only upload it: it must match pipelines/kubeflow.py and dvc.yaml.
    out = tmp_path / "mura.yaml"
    load_pipeline_module().main(["--output", str(out)])
    assert out.read_text() == (REPO / "pipelines" / "mura.yaml").read_text(), "run `make kfp`"
