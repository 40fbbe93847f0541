#!/usr/bin/env bash
# One-shot device run for ISSUE #11: tensor parallelism on two GPUs (nvidia-h100-x2).
#
#   bash scripts/gpu_tp_calibrate_validate.sh        (repo root; results under $OUT; carry .whl)
#
# 1. TP self-check (TP=2 logits vs one GPU; graph replay with NCCL all-reduces inside).
# 2. Llama-3.1-8B at tp=2: all-reduce benchmark + calibration (small grid), then validation.
# 3. A 40-layer Llama-3.1-70B-shaped model at tp=2: the same.
# Files back (at most 8): log.txt, env.txt, {8b,70b40}-profile.json, {8b,70b40}-calibration.csv,
# {8b,70b40}/results.json. Reports are rendered afterwards with python -m realexec.report.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/servesim-tp-out}
TARGET_S=${TARGET_S:-8}   # MODELS=8b,70b40 picks the models (both by default)
SCENARIOS=${SCENARIOS:-continuous-paged-low,continuous-paged-high,chunked-paged-high,chunked-radix-high}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1
mkdir -p "$OUT/8b" "$OUT/70b40"
exec > >(tee "$OUT/log.txt") 2>&1

if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD:/tmp/site
else
  export PYTHONPATH=$PWD:${PYTHONPATH:-}
fi
{ date -u +"%Y-%m-%d %H:%M:%S UTC"; nvidia-smi; nvidia-smi topo -m
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
      "gpus", torch.cuda.device_count(), "nccl", torch.cuda.nccl.version())'
  python3 -c 'import triton; print("triton", triton.__version__)'; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

GRAPHS=--graphs
python3 scripts/gpu_tp_selfcheck.py
case $? in
  0) ;;
  4) echo "tp selfcheck: graphs with all-reduce failed; running without graphs"; GRAPHS=--no-graphs ;;
  *) echo "tp selfcheck: TP logits wrong or crashed; stopping"; exit 1 ;;
esac

run_model() {  # name, model, layers option, validation deadline (s)
  local name=$1 model=$2 layers=$3 deadline=$4 t0
  t0=$(date +%s)
  python3 -m sim.cli calibrate --device cuda --tp 2 --model "$model" $layers $GRAPHS --small \
    --reps 3 --out "$OUT/$name-profile.json" --table "$OUT/$name-calibration.csv" \
    || { echo "$name: calibration failed"; return 1; }
  echo "$name: calibration took $(( $(date +%s) - t0 )) s"
  t0=$(date +%s)
  python3 -m sim.cli validate --device cuda --tp 2 --model "$model" $layers $GRAPHS \
    --profile "$OUT/$name-profile.json" --out "$OUT/$name" --target-s "$TARGET_S" \
    --deadline-s "$deadline" --scenarios "$SCENARIOS"
  rm -f "$OUT/$name/report.md" "$OUT/$name/report.html"
  echo "$name: validation took $(( $(date +%s) - t0 )) s"
}

MODELS=${MODELS:-8b,70b40}
START=$(date +%s)
[[ ,$MODELS, == *,8b,* ]] && run_model 8b llama-3.1-8b "" 70
echo "elapsed $(( $(date +%s) - START )) s"
[[ ,$MODELS, == *,70b40,* ]] && run_model 70b40 llama-3.1-70b "--layers 40" 80
echo "elapsed $(( $(date +%s) - START )) s"
