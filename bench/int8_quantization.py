"""int8 for trained variants: which quantization keeps each variant within register's guard (issue 17 §2).

Reads a workspace where ``dvc repro`` ran up to ``ensemble`` (``make demo``'s ``build/demo``, or one
trained on real data): the trained ``models/<variant>.keras``, the pixel cache, the split and the
Keras reference probabilities on valid (``reports/predictions/valid.csv``). Each variant is exported
to float32 IR as ``register`` does, then quantized by each strategy, and measured against the
guard's own figure: the variant's largest |Δp| vs Keras on the validation images (the guard asks
≤ ``register.reduced_max_abs_dp`` for every variant and the ensemble). Per strategy: the time it
took, the |Δp|, the quantized layers kept, and the variant's 8-image batch latency (what int8 is for).

Strategies:
  random        register's: ``int8_calibration_images`` training images drawn at random, batches of 8
  balanced      as many, drawn evenly from each body part × label of train
  all-train     every training image not held out
  head-float    random, the head's MatMul kept in float32 (``IgnoredScope(types=["MatMul"])``)
  full-bias     random, NNCF's full bias correction (``fast_bias_correction=False``)
  accuracy      NNCF's accuracy-aware quantization (``quantize_with_accuracy_control``): random
                calibration, then layers reverted to float32 until the largest |Δp| against the
                float32 IR on held-out *training* images is within ``--max-drop`` (the guard's
                validation images are never seen while quantizing)

Usage: python bench/int8_quantization.py --workspace build/demo [--strategies random,accuracy] [--variants d169_a]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _results import append  # noqa: E402

from mura.config import load_params  # noqa: E402
from mura.modeling.averaging import prob_column  # noqa: E402
from mura.stage import Layout  # noqa: E402

BATCH = 8  # register.serve_batch_size
# As the runtime compiles int8 and float32 (OpenVINO's CPU default is bf16 where the CPU has it).
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


@dataclass
class Data:
    """The images a strategy calibrates on, the held-out ones accuracy control checks, valid and its Keras reference."""

    random: np.ndarray
    balanced: np.ndarray
    all_train: np.ndarray
    held_out: np.ndarray
    valid: np.ndarray
    reference: pd.DataFrame


def rows_of(pixels: np.ndarray, images: pd.DataFrame, ids: pd.Series) -> np.ndarray:
    row = pd.Series(np.arange(len(images)), index=images["image_id"])
    return np.ascontiguousarray(pixels[np.sort(row.loc[ids].to_numpy())])


def balanced_ids(train: pd.DataFrame, n: int, seed: int = 0) -> pd.Series:
    """n training image ids, as even as the groups allow over body part × label."""
    groups = [g.sample(frac=1.0, random_state=seed)["image_id"].tolist() for _, g in train.groupby(["body_part", "label"])]
    picked: list[str] = []
    while len(picked) < n and any(groups):
        for g in groups:
            if g and len(picked) < n:
                picked.append(g.pop())
    return pd.Series(picked)


def load_data(workspace: Path, n_calibration: int, n_held_out: int) -> Data:
    images = pd.read_csv(workspace / Layout.IMAGES)
    split = pd.read_csv(workspace / Layout.SPLIT, usecols=["image_id", "split"])
    pixels = np.load(workspace / Layout.PIXELS, mmap_mode="r")
    table = images.merge(split, on="image_id")
    train = table[table["split"] == "train"]
    held_out = train.sample(min(n_held_out, len(train) // 3), random_state=1)["image_id"]
    rest = train[~train["image_id"].isin(held_out)]
    valid = pd.read_csv(workspace / Layout.PREDICTIONS / "valid.csv")
    row = pd.Series(np.arange(len(images)), index=images["image_id"])
    return Data(
        random=rows_of(pixels, images, rest["image_id"].sample(min(n_calibration, len(rest)), random_state=0)),
        balanced=rows_of(pixels, images, balanced_ids(rest, n_calibration)),
        all_train=rows_of(pixels, images, rest["image_id"]),
        held_out=rows_of(pixels, images, held_out),
        valid=np.ascontiguousarray(pixels[row.loc[valid["image_id"]].to_numpy()]),
        reference=valid,
    )


def batches(images: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(images[i : i + BATCH, ..., None]) for i in range(0, len(images), BATCH)]


def probabilities(model: Any, images: np.ndarray) -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", F32)
    out = compiled.output(0)
    return np.concatenate([np.asarray(compiled(b)[out], np.float64).reshape(-1) for b in batches(images)])


def batch_latency(model: Any, size: int) -> float:
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {**F32, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    batch = np.zeros((BATCH, size, size, 1), np.uint8)
    request.infer([batch])
    samples = []
    for _ in range(15):
        start = time.perf_counter()
        request.infer([batch])
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def quantized_layers(model: Any) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def ptq(images: np.ndarray, **options: Any) -> Callable[[Any], Any]:
    def run(model: Any) -> Any:
        import nncf

        data = batches(images)
        return nncf.quantize(model, nncf.Dataset(data), subset_size=len(data), **options)

    return run


def accuracy_control(calibration: np.ndarray, held_out: np.ndarray, max_drop: float, iterations: int) -> Callable[[Any], Any]:
    """Quantize, then revert layers (``iterations`` at most) until max |p_int8 − p_float32| on held-out images ≤ max_drop."""

    def run(model: Any) -> Any:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

        reference = probabilities(model, held_out)
        items = [(held_out[i][None, ..., None], reference[i]) for i in range(len(held_out))]

        def validate(compiled: Any, data: Any) -> tuple[float, list[float]]:
            out = compiled.output(0)
            shifts = [abs(float(np.asarray(compiled(image)[out]).reshape(-1)[0]) - ref) for image, ref in data]
            return -max(shifts, default=0.0), [-s for s in shifts]

        calib = batches(calibration)
        return nncf.quantize_with_accuracy_control(
            model,
            nncf.Dataset(calib),
            nncf.Dataset(items, lambda item: item[0]),
            validate,
            max_drop=max_drop,
            subset_size=len(calib),
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=iterations),
        )

    return run


def strategies(data: Data, max_drop: float, iterations: int) -> dict[str, Callable[[Any], Any]]:
    import nncf

    return {
        "random": ptq(data.random),
        "balanced": ptq(data.balanced),
        "all-train": ptq(data.all_train),
        "head-float": ptq(data.random, ignored_scope=nncf.IgnoredScope(types=["MatMul"])),
        "full-bias": ptq(data.random, fast_bias_correction=False),
        "accuracy": accuracy_control(data.random, data.held_out, max_drop, iterations),
    }


def export_float32(name: str, keras_path: Path, folder: Path) -> Path:
    from mura.packaging.export import export_variant

    return Path(export_variant(name, keras_path, folder).xml)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("build/demo"))
    parser.add_argument("--strategies", default="random,balanced,all-train,head-float,full-bias,accuracy")
    parser.add_argument("--variants", default="", help="comma-separated (default: all)")
    parser.add_argument("--held-out", type=int, default=200, help="training images accuracy control checks on")
    parser.add_argument("--max-drop", type=float, default=0.005, help="accuracy control's limit on held-out max |Δp|")
    parser.add_argument("--iterations", type=int, default=20, help="accuracy control: at most this many layers reverted")
    args = parser.parse_args()

    import openvino as ov

    params = load_params(args.workspace / "params.yaml")
    variants = [v for v in params.models if not args.variants or v in args.variants.split(",")]
    data = load_data(args.workspace, params.register.int8_calibration_images, args.held_out)
    chosen = {k: f for k, f in strategies(data, args.max_drop, args.iterations).items() if k in args.strategies.split(",")}
    limit = params.register.reduced_max_abs_dp
    rows = []
    with tempfile.TemporaryDirectory(prefix="mura-int8-") as tmp:
        for name in variants:
            xml = export_float32(name, args.workspace / Layout.MODELS / f"{name}.keras", Path(tmp))
            keras_p = data.reference[prob_column(name)].to_numpy(np.float64)
            float32 = ov.Core().read_model(str(xml))
            f32_dp = float(np.abs(probabilities(float32, data.valid) - keras_p).max())
            f32_ms = batch_latency(float32, data.valid.shape[1]) * 1000
            rows.append(f"| {name} | float32 IR | — | {f32_dp:.2g} | — | {f32_ms:.1f} ms |")
            for strategy, quantize in chosen.items():
                start = time.perf_counter()
                model = quantize(ov.Core().read_model(str(xml)))
                seconds = time.perf_counter() - start
                dp = float(np.abs(probabilities(model, data.valid) - keras_p).max())
                kept = quantized_layers(model)
                ms = batch_latency(model, data.valid.shape[1]) * 1000
                verdict = "passes" if dp <= limit else "fails"
                rows.append(f"| {name} | {strategy} | {seconds:.1f} s | {dp:.2g} ({verdict}) | {kept} | {ms:.1f} ms |")
                print(rows[-1], flush=True)
    header = [
        f"Workspace `{args.workspace}` ({len(data.random)} calibration images at random / {len(data.balanced)} balanced / "
        f"{len(data.all_train)} all-train; "
        + (
            f"{len(data.held_out)} held-out training images for accuracy control, max drop {args.max_drop}, "
            f"at most {args.iterations} iterations; "
            if "accuracy" in chosen
            else ""
        )
        + f"{len(data.valid)} validation images, the guard's limit {limit}). Time: quantization alone; "
        f"|Δp|: the variant's largest on valid vs Keras; FakeQuantize: quantized inputs left; latency: one {BATCH}-image "
        "batch, median of 15.",
        "",
        "| variant | strategy | time | max \\|Δp\\| on valid | FakeQuantize | batch latency |",
        "|---|---|---|---|---|---|",
    ]
    append("int8 quantization strategies on trained variants (issue 17 §2)", header + rows)
    print(json.dumps({"variants": variants, "strategies": list(chosen)}))


if __name__ == "__main__":
    main()
