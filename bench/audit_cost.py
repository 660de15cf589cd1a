"""What the audit trail costs per answered study, against the study's own latency (same run, same study).

Baseline: ``Predictor.predict_study`` on a 3-view study with heatmaps (what the web UI does per
request; the node does the same work in two steps). Measured: ``AuditTrail.record`` of that
answer (JSON, one flushed line). Target: ≤ 2 % of the request's latency.

Usage: python bench/audit_cost.py [--size 320] [--repeats 10] [--tracking-uri URI --model URI]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _results import append  # noqa: E402
from web_load import _register_random  # noqa: E402

from mura.api import Predictor  # noqa: E402
from mura.operations.telemetry import AuditTrail  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mura-audit-bench-"))
    (work / "model").mkdir()
    uri, model = (args.tracking_uri, args.model) if args.model else _register_random(args.size, work / "model")
    predictor = Predictor.load(model, uri)
    predictor.prepare_heatmaps()
    rng = np.random.default_rng(0)
    views = [rng.integers(0, 256, (args.size + 17 * k, args.size)).astype(np.uint8) for k in range(3)]
    predictor.predict_study(views, heatmaps=True)  # warm
    trail = AuditTrail(work / "audit")
    request_s, audit_s = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        decoded = predictor.decode_views(views)
        result = predictor.with_heatmaps(predictor.predict_decoded(decoded), decoded)
        request_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        trail.record("web", predictor, result, decoded, hashlib.sha256(views[0].tobytes()).digest(), request_s[-1])
        audit_s.append(time.perf_counter() - started)
    request, audit = statistics.median(request_s), statistics.median(audit_s)
    append(
        f"audit trail cost: one record per 3-view study ({model}, {args.size}²)",
        [
            "| figure | median | target |",
            "|---|---|---|",
            f"| study with heatmaps (decode, inference, Grad-CAM), {args.repeats} runs | {request * 1000:.1f} ms | |",
            f"| `AuditTrail.record` (JSON line, flushed) | {audit * 1000:.3f} ms | |",
            f"| record / study | {100 * audit / request:.3f} % | ≤ 2 % |",
        ],
    )


if __name__ == "__main__":
    main()
