"""The DICOM node end to end against a real PACS (Orthanc) on 2 CPU cores.

(a) Latency: from the acknowledgement of a 3-view study's last instance (DCMTK storescu) to the
    study's SR stored in Orthanc, one study at a time; the target is idle time + 2 s.
(b) Throughput: 4 concurrent senders (storescu, one association per study) offering ``--rate``
    studies per minute in all for ``--seconds``; studies answered per minute (SRs stored in Orthanc
    from the first send to the last SR), studies lost (sent, and no SR in the PACS once the node's
    spool is empty), and the node's resident memory over the run (start, end, slope).

The model is a random-init ensemble of the demo's four variants at ``--size`` (registered as
``register`` does, int8 allowed: the node serves the fastest allowed runtime), or ``--model``.
Baseline in the same run: ``mura predict`` on one study, the scoring the node adds its DICOM work to.
Appends to bench/RESULTS.md.

Usage: python bench/dicom_node.py [--size 320] [--seconds 300] [--senders 4] [--idle 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).parent))
from _results import append  # noqa: E402
from web_load import _register_random  # noqa: E402

from mura.data.dicom_phantoms import write_phantom_study  # noqa: E402
from mura.deploy.orthanc import Orthanc  # noqa: E402
from mura.deploy.processes import free_port, wait_tcp  # noqa: E402

STORESCU = "/usr/bin/storescu"
MANUFACTURER = "mura open-source project"


def _send(port: int, files: list[Path], calling: str = "BENCH") -> None:
    subprocess.run(
        [STORESCU, "-aet", calling, "-aec", "MURA", "127.0.0.1", str(port), *map(str, files)], check=True, capture_output=True
    )


def _has_sr(pacs: Orthanc, study_uid: str) -> bool:
    study = pacs.study_id(study_uid)
    if study is None:
        return False
    return any(s["MainDicomTags"].get("Modality") == "SR" for s in pacs.request("GET", f"/studies/{study}/series?expand"))


def _spool_empty(spool: Path) -> bool:
    """Nothing received and not answered, nothing answered and not delivered."""
    incoming = any((spool / "incoming").glob("*/*.dcm"))
    outgoing = any(p for p in (spool / "outgoing").glob("*") if not p.name.startswith("."))
    return not incoming and not outgoing


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:  # noqa: C901, PLR0915 -- a benchmark's script: set up, offer load, measure, report, top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--rate", type=float, default=24.0, help="studies per minute offered by all senders together")
    parser.add_argument("--idle", type=float, default=2.0, help="the node's --idle-seconds")
    parser.add_argument("--latency-studies", type=int, default=5)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mura-dicom-bench-"))
    (work / "model").mkdir()
    logging.basicConfig(level=logging.INFO)
    uri, model = (args.tracking_uri, args.model) if args.model else _register_random(args.size, work / "model")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    # Enough studies for the senders at up to 60 studies/min, each with its own UIDs.
    pool_size = args.latency_studies + 1 + int(args.seconds / 60 * 60) + args.senders
    started = time.perf_counter()
    pool = [
        list(write_phantom_study(work / "studies" / f"s{k}", 3, "WRIST", k % 2 == 1, seed=k, size=args.size).files)
        for k in range(pool_size)
    ]
    print(f"{pool_size} studies written in {time.perf_counter() - started:.0f} s", flush=True)
    uids = {id(files): pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID for files in pool}

    # Baseline: `mura predict` on one study (process start to answer).
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mura.cli", "predict", "--model", model, *map(str, pool[0])],
        env=env,
        check=True,
        capture_output=True,
    )
    predict_s = time.perf_counter() - t0

    port = free_port()
    with Orthanc(work / "orthanc", {"mura": ("MURA", port)}) as pacs:
        cmd = [
            sys.executable,
            "-m",
            "mura.cli",
            "dicom-node",
            "--model",
            model,
            "--port",
            str(port),
            "--spool",
            str(work / "spool"),
            "--destination",
            pacs.address,
            "--idle-seconds",
            str(args.idle),
        ]
        log = open(work / "node.log", "wb")  # noqa: SIM115
        node = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        t0 = time.perf_counter()
        wait_tcp(port, 300, node, "mura dicom-node")
        start_s = time.perf_counter() - t0
        try:
            latencies = []
            for files in pool[1 : 1 + args.latency_studies]:
                _send(port, files)
                sent = time.perf_counter()
                while not _has_sr(pacs, uids[id(files)]):
                    time.sleep(0.05)
                latencies.append(time.perf_counter() - sent)
            rest = pool[1 + args.latency_studies :]
            lock = threading.Lock()
            sent_studies: list[str] = []
            stop_at = time.perf_counter() + args.seconds
            rss: list[tuple[float, float]] = []

            interval = 60.0 * args.senders / args.rate  # each sender's pace

            def sender(k: int) -> None:
                next_at = time.perf_counter() + k * interval / args.senders  # staggered starts
                while next_at < stop_at:
                    time.sleep(max(0.0, next_at - time.perf_counter()))
                    with lock:
                        if not rest:
                            return
                        files = rest.pop()
                    _send(port, files, f"BENCH{k}")
                    with lock:
                        sent_studies.append(uids[id(files)])
                    next_at += interval

            threads = [threading.Thread(target=sender, args=(k,)) for k in range(args.senders)]
            t_load = time.perf_counter()
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                rss.append((time.perf_counter() - t_load, _rss_mb(node.pid)))
                time.sleep(5)
            # Drain: until every sent study has its SR, or the node's spool is empty (what is
            # missing then is lost), or 10 minutes.
            drain_deadline = time.perf_counter() + 600
            pending = set(sent_studies)
            last_answer = time.perf_counter()
            while pending and time.perf_counter() < drain_deadline:
                answered_now = {u for u in pending if _has_sr(pacs, u)}
                if answered_now:
                    last_answer = time.perf_counter()
                pending -= answered_now
                if pending and _spool_empty(work / "spool"):
                    time.sleep(2)
                    pending = {u for u in pending if not _has_sr(pacs, u)}
                    break
                time.sleep(0.5)
            elapsed = last_answer - t_load
            rss.append((elapsed, _rss_mb(node.pid)))
        except BaseException:
            print((work / "node.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            node.terminate()
            try:
                node.wait(timeout=120)
            except subprocess.TimeoutExpired:
                node.kill()
    answered = len(sent_studies) - len(pending)
    per_min = answered / elapsed * 60
    half = len(rss) // 2
    slope = (statistics.mean(r for _, r in rss[half:]) - statistics.mean(r for _, r in rss[:half])) if half else 0.0
    p50 = statistics.median(latencies)
    append(
        f"DICOM node: {args.size}² 3-view studies, storescu → node → Orthanc ({model})",
        [
            "| figure | value | target |",
            "|---|---|---|",
            f"| baseline: `mura predict` one study, process start → answer | {predict_s:.1f} s | |",
            f"| node start (process → listening, model loaded) | {start_s:.1f} s | |",
            f"| latency, last instance acknowledged → SR in Orthanc, p50 of {len(latencies)} (max) "
            f"| {p50:.2f} s ({max(latencies):.2f} s) | ≤ idle {args.idle:.0f} s + 2 s |",
            f"| latency beyond the idle time, p50 | {p50 - args.idle:.2f} s | ≤ 2 s |",
            f"| throughput, {args.senders} concurrent senders offering {args.rate:.0f}/min for {args.seconds:.0f} s "
            f"| {per_min:.1f} studies/min answered ({answered} of {len(sent_studies)} sent; first send → last SR "
            f"{elapsed:.0f} s) | ≥ 20/min |",
            f"| lost (sent, no SR in the PACS once the spool is empty) | {len(pending)} | 0 |",
            f"| node RSS start → end (second half − first half mean) "
            f"| {rss[0][1]:.0f} → {rss[-1][1]:.0f} MB ({slope:+.0f} MB) | flat |",
        ],
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
