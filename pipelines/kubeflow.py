"""The DVC pipeline as a Kubeflow Pipelines (KFP 2) pipeline: one container step per stage, in our image.

The DAG is derived from ``dvc.yaml`` (and ``params.yaml``'s ``models:``, through DVC's
own ``foreach`` expansion): one task per DVC stage, running that stage's own ``cmd``,
with the same dependency edges — ingest → split → class_weights → one train task per
variant, in parallel → ensemble → evaluate → register → serve. Adding a variant to ``models:``
adds a train task; nothing here changes.

Data between steps: a KFP workspace (``dsl.WorkspaceConfig``; on a cluster a
PersistentVolumeClaim, locally a folder) holds a pipeline workspace exactly like
``make demo``'s: the steps read and write the same relative paths as under ``dvc repro``,
so each stage's command runs unchanged. A first ``prepare`` step creates it from the
pipeline files baked into the image (``/opt/mura``) and fetches the raw data
(``prepare_command``: the synthetic phantoms by default, ``dvc pull -r team …`` for the
real data from the team's S3 remote). Why a volume and not S3 between steps: the stages'
inputs are large NumPy caches read with memory mapping, and a shared volume keeps every
command identical to its DVC form; the S3 remote is where results go for the team
(``dvc push -r team``, MLflow's artifact store).

Compile: ``make kfp`` (→ ``pipelines/mura.yaml``), or with a cluster's settings::

    python pipelines/kubeflow.py --image registry.example.org/mura:cpu --gpu-image registry.example.org/mura:gpu \\
        --accelerator nvidia.com/gpu --workspace-size 200Gi --secret mura-team --output pipelines/mura.yaml
"""

# No `from __future__ import annotations`: KFP reads the components' annotations as types.
import argparse
import shlex
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfp import compiler, dsl

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = "run"  # the pipeline workspace, inside the KFP workspace
PREPARE = "prepare"
DEPLOY = "deploy"  # the optional last step (--deploy kserve)
DEFAULT_PREPARE = "mura synth data/raw/synthetic"
# Environment variables a cluster gives the steps that talk to MLflow and S3 (from one Kubernetes secret).
SECRET_KEYS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
)


@dataclass(frozen=True)
class Stage:
    """One DVC stage: its name (``train@densenet169_a``), command and upstream stages."""

    name: str
    cmd: str
    upstream: tuple[str, ...]
    uses_mlflow: bool = False
    trains: bool = False


@dataclass
class ClusterSettings:
    """What a cluster user sets at compile time."""

    image: str = "localhost/mura:cpu"
    gpu_image: str = "localhost/mura:gpu"
    accelerator: str = "nvidia.com/gpu"
    gpus_per_train: int = 1
    train_cpu: str = "8"
    train_memory: str = "32G"
    stage_cpu: str = "2"
    stage_memory: str = "8G"
    workspace_size: str = "50Gi"
    secret: str | None = None  # Kubernetes secret holding SECRET_KEYS (None: no secret mounted)
    storage_class: str | None = None
    only: tuple[str, ...] = field(default_factory=tuple)  # a sub-DAG (e.g. the data stages); empty = all
    deploy: str = "none"  # "kserve": a last step applies the registered version's InferenceService (mura kserve)
    serve_image: str = "localhost/mura:serve"  # the predictor's image (docker/Dockerfile target serve)
    namespace: str = "default"  # where the InferenceService goes


def dvc_stages(root: Path = ROOT) -> list[Stage]:
    """The stages of ``root/dvc.yaml`` (``foreach`` expanded by DVC from params.yaml) and their upstream stages."""
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(root)) as repo:
        graph = repo.index.graph
        stages = [s for s in graph.nodes if isinstance(s, PipelineStage) and Path(s.path).name == "dvc.yaml"]
        out = []
        for stage in sorted(stages, key=lambda s: s.name):
            # DVC's graph points from a stage to the stages it depends on.
            upstream = sorted(d.name for d in graph.successors(stage) if d in stages)
            cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
            out.append(
                Stage(
                    name=stage.name,
                    cmd=" ".join(cmd.split()),
                    upstream=tuple(upstream),
                    uses_mlflow=any(f"stages/{name}.py" in cmd for name in ("train", "register", "serve")),
                    trains="stages/train.py" in cmd,
                )
            )
    return out


def task_name(stage: str) -> str:
    """A KFP-safe task name for a DVC stage (``train@densenet169_a`` → ``train-densenet169-a``)."""
    return stage.replace("@", "-").replace("_", "-").lower()


def _component(name: str, image: str, script: str) -> Callable[..., Any]:
    """A container component named ``name`` running ``script`` (sh) in the pipeline workspace."""

    def component(workspace: str, pipeline_run: str) -> dsl.ContainerSpec:
        # $0 workspace, $1 the KFP run's id: the stage's MLflow run is tagged with it (mura.pipeline_run)
        return dsl.ContainerSpec(
            image=image,
            command=["sh", "-ec"],
            args=[f'export MURA_PIPELINE_RUN_ID="kfp-$1" && cd "$0/{RUN_DIR}" && {script}', workspace, pipeline_run],
        )

    component.__name__ = name.replace("-", "_")
    return dsl.container_component(component)


def _prepare_component(image: str) -> Callable[..., Any]:
    def prepare(workspace: str, prepare_command: str, params_override: str) -> dsl.ContainerSpec:
        # $0 workspace, $1 the data command, $2 YAML merged over params.yaml (as params.demo.yaml is by make demo)
        script = (
            'printf "%s\\n" "$2" > /tmp/override.yaml && '
            f'mura workspace "$0/{RUN_DIR}" --repo /opt/mura --override /tmp/override.yaml >/dev/null && '
            f'cd "$0/{RUN_DIR}" && if [ ! -e data/raw/.prepared ]; then sh -ec "$1" && touch data/raw/.prepared; fi'
        )
        return dsl.ContainerSpec(image=image, command=["sh", "-ec"], args=[script, workspace, prepare_command, params_override])

    return dsl.container_component(prepare)


def deploy_command(settings: ClusterSettings) -> str:
    """The deploy step's command: the InferenceService of the version register just made, applied (mura kserve)."""
    words = ["mura", "kserve", "--image", settings.serve_image, "--namespace", settings.namespace]
    words += ["--secret", settings.secret or "", "--apply"]
    return shlex.join(words)


def _select(stages: list[Stage], only: Iterable[str]) -> list[Stage]:
    wanted = set(only)
    if not wanted:
        return stages
    unknown = wanted - {s.name for s in stages}
    if unknown:
        raise SystemExit(f"error: no such DVC stage: {', '.join(sorted(unknown))}")
    return [
        Stage(s.name, s.cmd, tuple(u for u in s.upstream if u in wanted), s.uses_mlflow, s.trains)
        for s in stages
        if s.name in wanted
    ]


def build_pipeline(settings: ClusterSettings, stages: list[Stage] | None = None) -> Callable[..., Any]:
    """The ``mura`` pipeline function for ``settings`` (compile it, or run it with ``kfp.local``)."""
    chosen = _select(stages if stages is not None else dvc_stages(), settings.only)
    prepare_op = _prepare_component(settings.image)
    ops = {s.name: _component(task_name(s.name), settings.gpu_image if s.trains else settings.image, s.cmd) for s in chosen}
    order = _topological(chosen)
    deploy_op = _component(DEPLOY, settings.image, deploy_command(settings))

    @dsl.pipeline(
        name="mura",
        description="MURA abnormality detection: the DVC pipeline's stages as container steps (docs/containers.md)",
        pipeline_config=dsl.PipelineConfig(
            workspace=dsl.WorkspaceConfig(
                size=settings.workspace_size,
                kubernetes=dsl.KubernetesWorkspaceConfig(
                    pvcSpecPatch={"storageClassName": settings.storage_class} if settings.storage_class else {}
                ),
            )
        ),
    )
    def mura(prepare_command: str = DEFAULT_PREPARE, params_override: str = "{}") -> None:
        prepared = prepare_op(
            workspace=dsl.WORKSPACE_PATH_PLACEHOLDER, prepare_command=prepare_command, params_override=params_override
        )
        prepared.set_display_name(PREPARE).set_caching_options(False)
        tasks: dict[str, Any] = {}
        for stage in order:
            task = ops[stage.name](workspace=dsl.WORKSPACE_PATH_PLACEHOLDER, pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
            task.set_display_name(stage.name).set_caching_options(False)
            upstream = [tasks[u] for u in stage.upstream] or [prepared]
            task.after(*upstream)
            if stage.trains:
                task.set_accelerator_type(settings.accelerator).set_accelerator_limit(settings.gpus_per_train)
                task.set_cpu_request(settings.train_cpu).set_memory_request(settings.train_memory)
                task.set_memory_limit(settings.train_memory)
            else:
                task.set_cpu_request(settings.stage_cpu).set_memory_request(settings.stage_memory)
            if stage.uses_mlflow and settings.secret:
                from kfp import kubernetes

                kubernetes.use_secret_as_env(task, secret_name=settings.secret, secret_key_to_env={k: k for k in SECRET_KEYS})
            tasks[stage.name] = task
        if settings.deploy == "kserve" and "register" in tasks:
            deploy = deploy_op(workspace=dsl.WORKSPACE_PATH_PLACEHOLDER, pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
            deploy.set_display_name(DEPLOY).set_caching_options(False)
            deploy.after(tasks.get("serve", tasks["register"]))
            deploy.set_cpu_request("0.5").set_memory_request("1G")

    return mura


def _topological(stages: list[Stage]) -> list[Stage]:
    done: list[Stage] = []
    seen: set[str] = set()
    by_name = {s.name: s for s in stages}

    def visit(stage: Stage) -> None:
        if stage.name in seen:
            return
        seen.add(stage.name)
        for up in stage.upstream:
            visit(by_name[up])
        done.append(stage)

    for stage in stages:
        visit(stage)
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = ClusterSettings()
    parser.add_argument("--output", default="pipelines/mura.yaml", help="compiled pipeline (KFP IR YAML)")
    parser.add_argument("--image", default=defaults.image, help="image of every step but train (push it to your registry)")
    parser.add_argument("--gpu-image", default=defaults.gpu_image, help="image of the train steps")
    parser.add_argument("--accelerator", default=defaults.accelerator, help="accelerator type of a train step")
    parser.add_argument("--gpus-per-train", type=int, default=defaults.gpus_per_train)
    parser.add_argument("--train-cpu", default=defaults.train_cpu)
    parser.add_argument("--train-memory", default=defaults.train_memory)
    parser.add_argument("--workspace-size", default=defaults.workspace_size, help="size of the shared volume (PVC)")
    parser.add_argument("--storage-class", default=None, help="storage class of the shared volume")
    parser.add_argument("--secret", default=None, help=f"Kubernetes secret with {', '.join(SECRET_KEYS)} for train/register")
    parser.add_argument("--only", nargs="*", default=[], help="compile only these DVC stages (a sub-DAG)")
    parser.add_argument(
        "--deploy", choices=("none", "kserve"), default="none", help="kserve: a last step applies the version's InferenceService"
    )
    parser.add_argument("--serve-image", default=defaults.serve_image, help="the InferenceService's predictor image")
    parser.add_argument("--namespace", default=defaults.namespace, help="the InferenceService's namespace")
    args = parser.parse_args(argv)
    settings = ClusterSettings(
        image=args.image,
        gpu_image=args.gpu_image,
        accelerator=args.accelerator,
        gpus_per_train=args.gpus_per_train,
        train_cpu=args.train_cpu,
        train_memory=args.train_memory,
        workspace_size=args.workspace_size,
        storage_class=args.storage_class,
        secret=args.secret,
        only=tuple(args.only),
        deploy=args.deploy,
        serve_image=args.serve_image,
        namespace=args.namespace,
    )
    compiler.Compiler().compile(build_pipeline(settings), package_path=args.output)
    print(f"compiled {args.output} ({shlex.quote(settings.image)}, train on {settings.accelerator})", file=sys.stderr)


if __name__ == "__main__":
    main()
