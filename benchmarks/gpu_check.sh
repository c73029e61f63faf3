#!/usr/bin/env bash
# GPU checks, run on a machine with an NVIDIA GPU (the paper's settings: 250 px wide, 236 crop):
#   1. our trainer against a bare PyTorch loop, DenseNet121 and ResNet50, bf16 autocast + channels_last
#      + fused AdamW (the GPU default); per-job fixed overhead. 2048 images x 2 epochs per timing: runs of
#      a few seconds were too noisy on an H200 (20% spread of the bare loop alone);
#   2. the trainer's tests that exercise one-cycle, transfer methods, TTA and model selection, on CUDA.
# Usage: bash benchmarks/gpu_check.sh [outdir]   (wheels of missing packages may sit in .whl/)
# A GPU machine without jsonschema (the lent ones have torch, timm, pandas): fetch its wheels here first,
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d .whl jsonschema==4.26.0 jsonschema-specifications==2025.9.1 \
#     referencing==0.37.0 rpds-py==2026.9.1
# and carry .whl/ along.
set -uo pipefail
OUTDIR=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUTDIR"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
common="--device cuda --width 250 --crop 236 --n 2048 --epochs 2 --batch 16 --threads 8"
python3 benchmarks/train_throughput.py $common --arch densenet121 2>&1 | tee "$OUTDIR/densenet121_bf16.txt"
python3 benchmarks/train_throughput.py $common --arch resnet50 2>&1 | tee "$OUTDIR/resnet50_bf16.txt"
SMALLDL_TEST_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider tests/unit/test_gpu.py 2>&1 | tee "$OUTDIR/gpu_tests.txt"
