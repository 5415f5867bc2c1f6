#!/usr/bin/env bash
# The speed benchmarks on a machine with an NVIDIA GPU, in one command:
#   bash benchmarks/gpu.sh            # from the repository root
# Creates a fresh virtual environment (.venv-gpu) with the [gpu] extra (TensorFlow with its CUDA
# libraries from pip), checks that TensorFlow sees the GPU, then prints the tables the README's GPU
# rows come from: LRP vs gradient x input (MLP, small CNN, VGG16, ResNet50 at batch 8), first-call
# times, and the mixed-precision accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-gpu}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
"$VENV/bin/python" -m pip install --quiet -e ".[gpu]"
"$VENV/bin/python" - <<'PY'
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print(f"TensorFlow {tf.__version__}; GPUs: {[g.name for g in gpus]}")
if not gpus:
    raise SystemExit("error: TensorFlow sees no GPU (is the NVIDIA driver installed? nvidia-smi)")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "## LRP vs gradient x input (wall-clock seconds, best of 7, same process)"
"$VENV/bin/python" benchmarks/bench_lrp.py --repeats 7 --no-memory
echo "## first call vs gradient x input (fresh processes)"
"$VENV/bin/python" benchmarks/first_call.py --repeats 3
echo "## mixed precision accuracy against float32"
"$VENV/bin/python" benchmarks/mixed_precision.py --vgg16
