#!/usr/bin/env bash
# One command for a GPU node (the `gpu` image, or any machine with the package and a Keras backend):
# prints the accelerator, measures training throughput of DenseNet-169 and ResNet-101 at 320², bf16,
# batch 64, Keras's default set-up against our own feeding and augmentation (bench/train_throughput.py), then runs a two-epoch
# `train` of one variant at 320² on synthetic data through DVC; figures are appended to bench/RESULTS.md.
# Targets (shared anchors, H100): >= 1,000 img/s DenseNet-169, >= 1,370 img/s ResNet-101. Under 8 minutes.
#
#   podman run --rm --device nvidia.com/gpu=all -v "$PWD":/work localhost/mura:gpu bench/gpu_check.sh
#   KERAS_BACKEND=jax bench/gpu_check.sh          (a machine with JAX on CUDA and no TensorFlow)
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true PYTHONHASHSEED=0
BATCH=${BATCH:-64}
SIZE=${SIZE:-320}
echo "== accelerator"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi not found"
python - <<'PY'
import keras
print("keras", keras.__version__, "backend", keras.backend.backend())
PY
echo "== training throughput (${SIZE}², mixed_bfloat16, batch ${BATCH})"
python bench/train_throughput.py --archs densenet169,resnet101 --size "$SIZE" --batch "$BATCH" \
  --precision mixed_bfloat16 --steps 100 --epochs 2 --setups keras-default,project
ws=$(mktemp -d /tmp/mura-gpu-check.XXXXXX)
cat > "$ws/override.yaml" <<YAML
data: {image_size: ${SIZE}}
synth: {patients: 300, fracture_images: 0}
train: {epochs: 2, batch_size: ${BATCH}, pretrained: none, precision: auto, workers: 8}
models: {densenet169_b: null, resnet101_a: null, resnet101_b: null}
YAML
python -m mura.cli workspace "$ws/run" --override "$ws/override.yaml" --synth >/dev/null
start=$(date +%s)
if python -c "import dvc, mlflow" 2>/dev/null; then
  echo "== two-epoch train of densenet169_a at ${SIZE}² on synthetic data, through DVC and MLflow"
  (cd "$ws/run" && MLFLOW_TRACKING_URI="sqlite:///$ws/run/mlflow.db" dvc repro train@densenet169_a)
else
  # A GPU node with Keras only (no DVC, no MLflow): the same stage scripts, run in dvc.yaml's order,
  # the train stage without tracking (one warning says so).
  echo "== two-epoch train of densenet169_a at ${SIZE}² on synthetic data (no DVC or MLflow here: stage scripts, --no-tracking)"
  (cd "$ws/run" && python stages/ingest.py --params params.yaml && python stages/split.py --params params.yaml \
    && python stages/class_weights.py --params params.yaml \
    && python stages/train.py --params params.yaml --model densenet169_a --no-tracking)
fi
seconds=$(( $(date +%s) - start ))
python - "$ws/run/reports/train/densenet169_a/metrics.json" "$seconds" <<'PY'
import json, sys
sys.path.insert(0, "bench")
from _results import append
from train_throughput import device_name
metrics = json.load(open(sys.argv[1]))
line = (f"two-epoch train@densenet169_a at the check's size, synthetic data: {sys.argv[2]} s for ingest→train "
        f"(val_auc {metrics['val_auc']:.3f}, {metrics['train_images']} training images)")
print(line)
append("GPU check (bench/gpu_check.sh)", [f"- {line}"], device=device_name())
PY
rm -rf "$ws"
