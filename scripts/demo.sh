#!/usr/bin/env bash
# `make demo`: the main job. Generates the package's own default benchmark (synthetic scenes of the
# procedural objects, test seed), writes it as a rosbag2, replays it through the real ROS graph in lockstep
# once per backend (player -> pose node -> evaluator), and writes the CLIP-vs-DINOv2 comparison report.
#
# Variables: VENV (.venv), DEMO_OUT (out/demo), DEMO_FRAMES (30), DEMO_SEED (2: the test seed; training
# used seed 1), DEMO_BACKENDS (clip,dinov2,hybrid).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
OUT=${DEMO_OUT:-out/demo}
FRAMES=${DEMO_FRAMES:-30}
SEED=${DEMO_SEED:-2}
BACKENDS=${DEMO_BACKENDS:-clip,dinov2,hybrid}
VFM="$VENV/bin/vfm-pose"

export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
# A domain of its own, so the demo neither hears nor disturbs another graph on this host.
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((100 + RANDOM % 100))}

start=$SECONDS
echo "== 1/3 benchmark: $FRAMES synthetic test frames (driller_like, can_like; seed $SEED)"
"$VFM" synth --objects driller_like,can_like --split test --frames "$FRAMES" --test-frames "$FRAMES" \
  --seed "$SEED" --out "$OUT/dataset" --overwrite
echo "== 2/3 rosbag2: $OUT/benchmark.mcap"
rm -rf "$OUT/benchmark.mcap"
"$VFM" make-bag --dataset "$OUT/dataset" --split test --out "$OUT/benchmark.mcap"
echo "== 3/3 compare $BACKENDS through the ROS graph (lockstep replay, ROS_DOMAIN_ID=$ROS_DOMAIN_ID)"
rm -rf "$OUT/report"
# --score-threshold 0: score every pose the backends produce (as BOP evaluations do); on a robot the node's
# score_threshold (config/pose.yaml, 0.3) withholds low-confidence poses instead.
"$VFM" compare --bag "$OUT/benchmark.mcap" --backends "$BACKENDS" --score-threshold 0 --out "$OUT/report"
echo
echo "make demo: done in $((SECONDS - start)) s. Report: $OUT/report/report.md (also report.html, table.csv,"
echo "results.json and the figures beside them)."
