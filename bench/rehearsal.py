"""Rehearsal at MURA's scale (issue 35 §1): the real pipeline on synthetic data with MURA-v1.1's counts, at 320².

Writes phantoms with MURA-v1.1's real counts (14,656 studies, 40,005 images, up to 512 px, per body
part, split and label) plus the fracture set at its real size (10,580 images), then runs the
pipeline's own stages through ``dvc repro -s`` in a workspace at 320²: ingest, split, class weights,
``train`` of the four variants limited to a few steps (``train.max_steps_per_epoch``) with a bounded
val_auc (``train.max_valid_images``), the ensemble on a bounded subset of studies
(``ensemble.max_studies``), calibrate and evaluate. For each step it records wall time, CPU time,
the machine's CPU time during it, the largest process's peak RSS, the process tree's peak RSS (sampled every 0.2 s, memory-mapped
pages included) and the disk it added; targets on 2 cores / 24 GB: every stage but training and
full evaluation under 15 minutes, peak RSS ≤ 8 GB. Figures are appended to bench/RESULTS.md.

Usage: python bench/rehearsal.py [--scale 1.0] [--dir /tmp/mura-rehearsal] [--keep]
(``--scale 0.02`` is a two-minute smoke run; the full one takes about an hour on 2 cores.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _results import append  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STAGES = [
    "ingest",
    "split",
    "class_weights",
    "train@densenet169_a",
    "train@densenet169_b",
    "train@resnet101_a",
    "train@resnet101_b",
    "ensemble",
    "calibrate",
    "evaluate",
]
EXEMPT = ("train@", "evaluate")  # training and full evaluation may take longer than 15 minutes
LIMIT_S, LIMIT_RSS = 15 * 60, 8 * 2**30
DATA_STEP = "data (phantoms at scale)"


@dataclass(frozen=True)
class Step:
    """What one step cost."""

    name: str
    wall_s: float
    cpu_s: float  # the machine's busy CPU seconds during the step
    max_rss: int  # bytes, the largest single process (getrusage of the waited children)
    tree_rss: int  # bytes, the sum over the process tree, sampled
    disk: int  # bytes added to the workspace (outside the raw data)


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(entry)] = int(line.split()[1]) * 1024
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (from /proc/stat): a step's own on a quiet machine.

    Not ``getrusage``: the pipeline's worker pools are children of a forkserver, not of the step.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _disk(path: Path, skip: Path) -> int:
    total = 0
    for folder, dirs, files in os.walk(path):
        if Path(folder) == skip.parent:
            dirs[:] = [d for d in dirs if Path(folder, d) != skip]
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                pass
    return total


def measure(name: str, command: list[str], cwd: Path, raw: Path) -> Step:
    """Run ``command`` and record its wall time, CPU time, peak RSS and the disk it added."""
    before_disk = _disk(cwd, raw)
    before = _busy_cpu_s()
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.2):
            peak = max(peak, _tree_rss(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"{name} failed ({process.returncode}): {' '.join(command)}")
    cpu = _busy_cpu_s() - before
    step = Step(name, wall, cpu, usage.ru_maxrss * 1024, peak, _disk(cwd, raw) - before_disk)
    print(
        f"== {name}: {wall:.0f} s wall, {cpu:.0f} s CPU, RSS {step.max_rss / 2**30:.2f} GiB (tree {peak / 2**30:.2f})", flush=True
    )
    return step


def _row(step: Step) -> str:
    exempt = step.name.startswith(EXEMPT)
    ok = step.max_rss <= LIMIT_RSS and (exempt or step.wall_s <= LIMIT_S)
    verdict = "not a stage (the download's stand-in)" if step.name == DATA_STEP else ("met" if ok else "**missed**")
    minutes = f"{int(step.wall_s // 60)}:{int(step.wall_s % 60):02d}"
    return (
        f"| {step.name} | {minutes} | {step.cpu_s / 60:.1f} min | {step.max_rss / 2**30:.2f} GiB | "
        f"{step.tree_rss / 2**30:.2f} GiB | {step.disk / 2**30:.2f} GiB | {verdict} |"
    )


def generate(out: Path, scale: float) -> None:
    """The data step (run in a child process, so that it is measured like a stage)."""
    from mura.data.synthetic_scale import write_fracture_at_scale, write_mura_at_scale

    write_mura_at_scale(out, seed=42, scale=scale)
    write_fracture_at_scale(out, seed=42, scale=scale)


def main() -> None:
    """Generate, run the stages, append the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0: MURA-v1.1's counts")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mura-rehearsal"))
    parser.add_argument("--steps", type=int, default=3, help="training steps per variant")
    parser.add_argument("--valid-images", type=int, default=256, help="valid images of each variant's val_auc")
    parser.add_argument("--eval-studies", type=int, default=150, help="studies per split the ensemble predicts")
    parser.add_argument("--keep", action="store_true", help="keep the workspace and data")
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)  # the child process of the data step
    args = parser.parse_args()
    if args.generate:
        generate(args.generate, args.scale)
        return
    shutil.rmtree(args.dir, ignore_errors=True)
    override = {
        "data": {"image_size": 320},
        "train": {
            "epochs": 1,
            "pretrained": "none",
            "max_steps_per_epoch": args.steps,
            "max_valid_images": args.valid_images,
        },
        "ensemble": {"max_studies": args.eval_studies},
    }
    args.dir.mkdir(parents=True)
    (args.dir / "override.yaml").write_text(yaml.safe_dump(override))
    ws = args.dir / "ws"
    subprocess.run(["mura", "workspace", str(ws), "--override", str(args.dir / "override.yaml")], check=True, cwd=REPO)
    raw = ws / "data" / "raw"
    env_python = sys.executable
    steps = [
        measure(
            DATA_STEP,
            [env_python, __file__, "--generate", str(raw / "synthetic"), "--scale", str(args.scale)],
            ws,
            raw,
        )
    ]
    images = sum(1 for line in (raw / "synthetic/MURA-v1.1/train_image_paths.csv").open()) + sum(
        1 for line in (raw / "synthetic/MURA-v1.1/valid_image_paths.csv").open()
    )
    raw_size = _disk(raw, raw / "nothing")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ws}/mlflow.db")
    for stage in STAGES:
        steps.append(measure(stage, ["dvc", "repro", "-s", stage], ws, raw))
    summary = json.loads((ws / "reports/ingest/summary.json").read_text())
    ingested = ", ".join(f"{name} {d['ingested']:,}" for name, d in summary["datasets"].items() if d["ingested"])
    lines = [
        f"Scale {args.scale:g} of MURA-v1.1 ({images:,} MURA images, {raw_size / 2**30:.1f} GiB of PNG/JPEG with the "
        f"fracture set) at 320², `dvc repro -s` per stage; train: {args.steps} steps per variant, val_auc on "
        f"{args.valid_images} valid images; the ensemble on {args.eval_studies} studies per split.",
        "",
        "| step | wall | CPU (machine) | peak RSS, largest process | peak RSS, process tree | disk added | target |",
        "|---|---|---|---|---|---|---|",
        *(_row(step) for step in steps),
        "",
        f"Targets: ≤ 15 min per stage except training and evaluation; peak RSS ≤ 8 GiB. ingest: {summary['ingested']:,} of "
        f"{summary['listed']:,} listed images cached ({ingested}), {summary['quarantined']} quarantined, "
        f"{summary['duplicates_dropped']} duplicates dropped.",
    ]
    append(f"Rehearsal at MURA's scale (bench/rehearsal.py, scale {args.scale:g})", lines)
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
