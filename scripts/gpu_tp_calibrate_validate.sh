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
#
# Time: the device tool kills a command at 600 s and then keeps only what is under $OUT, so the
# script keeps its own budget (LIMIT_S): each step runs under `timeout` with what is left, its
# ranks dump their stacks just before (REALEXEC_TP_WATCHDOG_S), and the last validation's
# deadline shrinks to fit. SELFCHECK=0 skips step 1 (a second call on the same cards).
set -uo pipefail
START=$(date +%s)
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/servesim-tp-out}
TARGET_S=${TARGET_S:-8}   # MODELS=8b,70b40 picks the models (both by default)
LIMIT_S=${LIMIT_S:-570}   # wall-clock budget of the whole script, seconds
SELFCHECK=${SELFCHECK:-1}
TP=${TP:-2}               # tensor-parallel degree (the self-check is for TP=2: SELFCHECK=0 else)
SCENARIOS=${SCENARIOS:-continuous-paged-low,continuous-paged-high,chunked-paged-high,chunked-radix-high}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1
mkdir -p "$OUT/8b" "$OUT/70b40" "$OUT/70b"
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

left() { echo $(( LIMIT_S - ($(date +%s) - START) )); }

guarded() {  # guarded MARGIN_S CMD...: CMD under what is left of LIMIT_S, less MARGIN_S
  local budget=$(( $(left) - $1 )); shift
  if (( budget < 30 )); then echo "skipped, $budget s left: $*"; return 124; fi
  REALEXEC_TP_WATCHDOG_S=$(( budget - 10 )) timeout -k 5 "$budget" "$@"
}

GRAPHS=--graphs
if [ "$SELFCHECK" = 1 ]; then
  guarded 0 python3 scripts/gpu_tp_selfcheck.py
  case $? in
    0) ;;
    4) echo "tp selfcheck: graphs with all-reduce failed; running without graphs"
       GRAPHS=--no-graphs ;;
    *) echo "tp selfcheck: TP logits wrong, crashed or timed out; stopping"; exit 1 ;;
  esac
fi
echo "elapsed $(( $(date +%s) - START )) s"

run_model() {  # name, model, layers option, validation deadline (s)
  local name=$1 model=$2 layers=$3 deadline=$4 t0 fit
  t0=$(date +%s)
  guarded 0 python3 -m sim.cli calibrate --device cuda --tp "$TP" --model "$model" $layers $GRAPHS \
    --small --reps 3 --out "$OUT/$name-profile.json" --table "$OUT/$name-calibration.csv" \
    || { echo "$name: calibration failed"; return 1; }
  echo "$name: calibration took $(( $(date +%s) - t0 )) s"
  # a scenario may start until the deadline and then run up to 45 s; ~40 s to build and end
  fit=$(( $(left) - 45 - 40 ))
  (( fit < deadline )) && { echo "$name: validation deadline $deadline -> $fit s (time)"
                            deadline=$fit; }
  t0=$(date +%s)
  guarded 0 python3 -m sim.cli validate --device cuda --tp "$TP" --model "$model" $layers $GRAPHS \
    --profile "$OUT/$name-profile.json" --out "$OUT/$name" --target-s "$TARGET_S" \
    --deadline-s "$deadline" --scenarios "$SCENARIOS"
  echo "$name: validation ended with status $?"
  rm -f "$OUT/$name/report.md" "$OUT/$name/report.html"
  echo "$name: validation took $(( $(date +%s) - t0 )) s"
}

MODELS=${MODELS:-8b,70b40}
[[ ,$MODELS, == *,8b,* ]] && run_model 8b llama-3.1-8b "" 70
echo "elapsed $(( $(date +%s) - START )) s"
[[ ,$MODELS, == *,70b40,* ]] && run_model 70b40 llama-3.1-70b "--layers 40" 80
echo "elapsed $(( $(date +%s) - START )) s"
[[ ,$MODELS, == *,70b,* ]] && run_model 70b llama-3.1-70b "" 80  # all 80 layers (TP=4)
echo "elapsed $(( $(date +%s) - START )) s"
