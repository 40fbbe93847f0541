#!/usr/bin/env bash
# One-shot device run (ISSUE #5, #22): self-check, calibrate, validate (one GPU, one command).
# Validation measures each policy's capacity on the device first (a saturation probe) and runs
# the scenarios at 50/80/95% of it; the decoder pieces are compiled and every step kind is
# replayed from CUDA graphs (realexec/graphs.py).
#
# On the device (repo root, results under $OUT):
#   bash scripts/gpu_calibrate_validate.sh
# Carry .whl (simpy, pydantic, typer, plotly wheels for Python 3.12) when the image lacks them.
# PROFILE=path: skip calibration and validate under that (committed) profile: the repeat run
# on a second fresh machine. END_AT=epoch seconds: the validation deadline is set so that the
# whole call ends by then.
# CPU smoke test of the same script (tiny model, tiny grid):
#   DEVICE=cpu GPU=h100 QUICK=1 MODEL_CONFIG='{...HF fields...}' OUT=/tmp/o bash scripts/...
#
# Files written to $OUT (the device tool brings back at most 8): log.txt, env.txt,
# profile.json, calibration.csv, validation/results.json, validation/report.md,
# validation/report.html.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/servesim-out}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-llama-3.1-8b}
TARGET_S=${TARGET_S:-15}
DEADLINE_S=${DEADLINE_S:-330}   # validation starts no scenario after this (seconds)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1
mkdir -p "$OUT/validation"
exec > >(tee "$OUT/log.txt") 2>&1

if [ -d .whl ] && [ "$DEVICE" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD:/tmp/site
else
  export PYTHONPATH=$PWD:${PYTHONPATH:-}
fi

{
  date -u +"%Y-%m-%d %H:%M:%S UTC"
  nvidia-smi 2>/dev/null || echo "no nvidia-smi"
  python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
      "cuda", torch.version.cuda)'
  python3 -c 'import triton; print("triton", triton.__version__)' 2>&1 | tail -1
  python3 -c 'import flash_attn; print("flash_attn", flash_attn.__version__)' 2>&1 | tail -1
  python3 -c 'import simpy, pydantic, typer, pandas; print("simpy", simpy.__version__,
      "pydantic", pydantic.__version__, "typer", typer.__version__, "pandas", pandas.__version__)'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

EXTRA=()
[ -n "${GPU:-}" ] && EXTRA+=(--gpu "$GPU")
[ -n "${MODEL_CONFIG:-}" ] && EXTRA+=(--model-config "$MODEL_CONFIG")
CAL_EXTRA=()
[ -n "${QUICK:-}" ] && CAL_EXTRA+=(--quick --reps 2)

BACKEND=auto
GRAPHS=--graphs
python3 scripts/gpu_selfcheck.py
case $? in
  0) ;;
  3) echo "selfcheck: Triton kernel failed; falling back to the torch backend"; BACKEND=torch ;;
  4) echo "selfcheck: captured/compiled steps failed; running eager, no graphs"
     GRAPHS="--no-graphs --no-compile" ;;
  *) echo "selfcheck crashed; continuing with the torch backend, no graphs, not compiled"
     BACKEND=torch; GRAPHS="--no-graphs --no-compile" ;;
esac

t0=$(date +%s)
if [ -n "${PROFILE:-}" ]; then  # the repeat run: validate under a committed profile, no fit
  cp "$PROFILE" "$OUT/profile.json" || exit 1
  echo "profile: $PROFILE (given; no calibration)"
else
python3 -m sim.cli calibrate --device "$DEVICE" --model "$MODEL" --backend "$BACKEND" $GRAPHS \
  --out "$OUT/profile.json" --table "$OUT/calibration.csv" "${EXTRA[@]}" "${CAL_EXTRA[@]}" \
  || { echo "calibration failed"; exit 1; }
echo "calibration took $(( $(date +%s) - t0 )) s"
fi

t0=$(date +%s)
if [ -n "${END_AT:-}" ]; then  # epoch seconds by which the whole call must end
  # the last scenario may run up to 60 s past the deadline; 20 s more for the report
  DEADLINE_S=$(( END_AT - t0 - 80 ))
  echo "validation deadline ${DEADLINE_S} s (END_AT)"
fi
python3 -m sim.cli validate --device "$DEVICE" --model "$MODEL" --backend "$BACKEND" $GRAPHS \
  --profile "$OUT/profile.json" --out "$OUT/validation" --target-s "$TARGET_S" \
  --deadline-s "$DEADLINE_S" ${SCENARIOS:+--scenarios "$SCENARIOS"} "${EXTRA[@]}"
echo "validation took $(( $(date +%s) - t0 )) s"
