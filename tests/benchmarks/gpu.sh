#!/usr/bin/env bash
# GPU checks, run on a lent GPU machine from the repository root (see README, "Tests"):
# a smoke run of the FlowCam workflow on the GPU, then every GPU benchmark. Prints `name: value`.
# Needs a Python with the project installed: PYTHON=/path/to/python (default .venv/bin/python).
# GPU_STEPS picks steps (default: all of smoke bulk detect loader train); a failed step is
# reported as `step_failed: NAME` and the others still run; the exit status is then 1.
set -uo pipefail
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-$(mktemp -d)}
STEPS=" ${GPU_STEPS:-smoke bulk detect loader train} "
failed=0
echo "gpu: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)"
echo "date: $(date -u +%F)"
"$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print("torch_cuda:", torch.version.cuda)' || exit 1

step() { # step NAME COMMAND...: run it when NAME is in GPU_STEPS, time it, report a failure
    local name=$1 start
    shift
    [[ $STEPS == *" $name "* ]] || return 0
    start=$(date +%s)
    if "$@"; then echo "${name}_step_seconds: $(($(date +%s) - start))"; else
        echo "step_failed: $name"
        failed=1
    fi
}

# 1. Smoke run: the demo use case, tiny budget, training and inference on cuda.
smoke() {
    local work="$OUT/smoke"
    "$PY" - "$work" <<'PYEOF' || return 1
import sys
from pathlib import Path
sys.path.insert(0, ".")
from tests.conftest import tiny_usecase, write_workdir
uc = tiny_usecase()
uc["training"]["device"] = "cuda"
uc["inference"] = {"device": "cuda", "top_k": 3}
write_workdir(Path(sys.argv[1]), {"flowcam": uc})
PYEOF
    "$PY" -m snakemake --snakefile "$PWD/Snakefile" --directory "$work" --cores all --resources gpu=1 -q \
        >"$OUT/smoke.log" 2>&1 || { tail -40 "$OUT/smoke.log"; return 1; }
    "$PY" -c "import pandas as pd,sys; p=pd.read_parquet(sys.argv[1]); print('smoke_predictions:', len(p))" \
        "$work/results/flowcam/campaigns/demo/predictions.parquet"
}
step smoke smoke
# 2. Bulk inference throughput on the GPU (eager + bf16; batches of 256).
step bulk "$PY" tests/benchmarks/bulk_inference.py --n "${GPU_N:-20000}" --scatter 1 --backend eager
# 3. Detection: training seconds per epoch and images/s per task on cuda.
step detect "$PY" tests/benchmarks/detection.py --device cuda
# 4. Training loader on the GPU node's cores (decoding / cache, 0 and all workers; cores per GPU).
step loader "$PY" tests/benchmarks/loader.py --n "${LOADER_N:-6000}" --workers "$(nproc)"
# 5. Training throughput of the default model on the GPU (cache, AMP; images/s and GPU utilisation).
step train "$PY" tests/benchmarks/train_speed.py --n "${TRAIN_N:-8000}" --epochs 3 --device cuda --threads "$(nproc)"
exit $failed
