#!/usr/bin/env bash
# GPU checks, run on a lent GPU machine from the repository root (see README, "Tests"):
# a smoke run of the FlowCam workflow on the GPU, then every GPU benchmark. Prints `name: value`.
# Needs a Python with the project installed: PYTHON=/path/to/python (default .venv/bin/python).
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-$(mktemp -d)}
echo "gpu: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)"
echo "date: $(date -u +%F)"
"$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print("torch_cuda:", torch.version.cuda)'

# 1. Smoke run: the demo use case, tiny budget, training and inference on cuda.
WORK="$OUT/smoke"
"$PY" - "$WORK" <<'PYEOF'
import sys
from pathlib import Path
sys.path.insert(0, "tests")
from conftest import tiny_usecase, write_workdir
uc = tiny_usecase()
uc["training"]["device"] = "cuda"
uc["inference"] = {"device": "cuda", "top_k": 3}
write_workdir(Path(sys.argv[1]), {"flowcam": uc})
PYEOF
start=$(date +%s)
"$PY" -m snakemake --snakefile "$PWD/Snakefile" --directory "$WORK" --cores all --resources gpu=1 -q >"$OUT/smoke.log" 2>&1
echo "smoke_workflow_seconds: $(( $(date +%s) - start ))"
"$PY" -c "import pandas as pd,sys; p=pd.read_parquet(sys.argv[1]); print('smoke_predictions:', len(p))" \
    "$WORK/results/flowcam/campaigns/demo/predictions.parquet"

# 2. Bulk inference throughput on the GPU (eager + bf16; batches of 256).
"$PY" tests/benchmarks/bulk_inference.py --n "${GPU_N:-100000}" --scatter 1 --backend eager
# 3. Detection benchmark, when present.
if [ -f tests/benchmarks/detection.py ]; then "$PY" tests/benchmarks/detection.py --device cuda; fi
# 4. Training loader on the GPU node's cores (decoding / cache, 0 and all workers; cores per GPU).
"$PY" tests/benchmarks/loader.py --n "${LOADER_N:-6000}" --workers "$(nproc)"
# 5. Training throughput of the default model on the GPU (cache, AMP; images/s and GPU utilisation).
"$PY" tests/benchmarks/train_speed.py --n "${TRAIN_N:-20000}" --epochs 3 --device cuda --threads "$(nproc)"
