#!/usr/bin/env bash
# One-shot GPU check (issue 20), meant to run unchanged the first time on a machine with CUDA, in under 6 min:
#   1. vfm-pose doctor
#   2. the learnability test (test/models/test_learnability.py) with training and inference on CUDA
#   3. fp16 vs fp32 poses of the shipped checkpoints on CUDA, beside fp32 on frames one grey level noisier
#      (scripts/precision_agreement.py)
#   4. DINOv2 ViT-B/14 at 224 and CLIP ViT-B/32, random real-size weights: fp16 batch 1 and 8, RGB-only and
#      RGB-D, per-stage times, and torch.compile on the backbone A/B (scripts/gpu_bench.py)
# Writes bench/gpu.json (and bench/gpu_*.log) and prints the table.
#
#   scripts/gpu_check.sh               on CUDA
#   scripts/gpu_check.sh --cpu-smoke   tiny configs on the CPU (checks the script end to end, ~1-3 min)
#
# Python: $PYTHON, else .venv/bin/python, else python3. Each step's status goes into bench/gpu.json; a failing
# step does not stop the others, and the script exits 1 when any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
OUT=bench/gpu.json
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu-smoke) SMOKE=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (--cpu-smoke, --out FILE)" >&2; exit 2 ;;
  esac
  shift
done

PY="${PYTHON:-}"
[[ -z "$PY" && -x .venv/bin/python ]] && PY=.venv/bin/python
[[ -z "$PY" ]] && PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
LOGDIR="$(dirname "$OUT")"
mkdir -p "$LOGDIR"
rm -f "$OUT"

if [[ $SMOKE == 1 ]]; then
  DEVICE=cpu
else
  DEVICE=cuda
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: torch sees no CUDA device; run with --cpu-smoke to check the script on the CPU" >&2
    exit 2
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
fi

declare -A STATUS SECONDS_TAKEN
step() {  # step NAME TIMEOUT_S COMMAND...: run with a time limit, log to bench/gpu_NAME.log
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit} s): $*"
  timeout --signal=INT --kill-after=10 "$limit" "$@" > "$LOGDIR/gpu_$name.log" 2>&1
  local rc=$?
  STATUS[$name]=$rc
  SECONDS_TAKEN[$name]=$((SECONDS - t0))
  tail -n 15 "$LOGDIR/gpu_$name.log"
  echo "== $name: exit $rc in ${SECONDS_TAKEN[$name]} s"
}

step doctor 60 "$PY" -m vfm_pose_ros.cli doctor
if [[ $SMOKE == 1 ]]; then  # the learnability tests (4 since the coords and anchors heads) train for minutes on a CPU: collect only
  step learnability 60 env VFM_TEST_DEVICE=cpu "$PY" -m pytest test/models/test_learnability.py -q --collect-only
  step precision 120 "$PY" scripts/precision_agreement.py --device cpu --frames 1 \
    --checkpoints models/clip_small.pt --json "$LOGDIR/gpu_precision.json"
  step bench 400 "$PY" scripts/gpu_bench.py --smoke --device cpu --repeats 2 --warmup 1 --out "$OUT"
else
  step learnability 200 env VFM_TEST_DEVICE=cuda "$PY" -m pytest test/models/test_learnability.py -q -x \
    -p no:cacheprovider
  step precision 90 "$PY" scripts/precision_agreement.py --device cuda --frames 12 --noise-draws 1 \
    --json "$LOGDIR/gpu_precision.json"
  step bench 180 "$PY" scripts/gpu_bench.py --device "$DEVICE" --repeats 20 --warmup 3 --out "$OUT"
fi

echo
sed -n '/^GPU check on/,$p' "$LOGDIR/gpu_bench.log"  # the whole table (the step printed only its tail)

failed=0
summary="{"
for name in doctor learnability precision bench; do
  rc=${STATUS[$name]:-127}
  [[ $rc != 0 ]] && failed=1
  summary+="\"$name\": {\"exit\": $rc, \"seconds\": ${SECONDS_TAKEN[$name]:-0}},"
done
summary="${summary%,}}"
"$PY" - "$OUT" "$summary" "$LOGDIR/gpu_precision.json" "$SMOKE" <<'EOF'
import json, sys
from pathlib import Path
out, steps, prec, smoke = Path(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
data = json.loads(out.read_text()) if out.is_file() else {}
data["steps"] = steps
data["smoke"] = smoke
if prec.is_file():
    data["precision_agreement"] = json.loads(prec.read_text())
out.write_text(json.dumps(data, indent=1))
print("\nsteps: " + ", ".join(f"{k} exit {v['exit']} ({v['seconds']} s)" for k, v in steps.items()))
print(f"wrote {out}")
EOF
exit $failed
