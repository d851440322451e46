#!/usr/bin/env bash
# The main job: the most complete end-to-end demo the crates support, on the
# embedded defaults (thread ranks, a local pilot, process ranks over TCP),
# on the real data in ../shared/data ($DEEPRC_DATA). Outputs go to out/ (or
# the directory given as the first argument).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
out="${1:-out}"
mkdir -p "$out"

cargo build --release -p deeprc-examples --features tch,tensorflow --bins
bin=target/release

echo "== 1. communicator: shuffle + all-reduce + split on threads and on tcp processes"
"$bin/comm_demo" 4
echo "== 2. frame: CAMELS-US forcing x streamflow join, group-by, sort; ETTh1 SQL (4 thread ranks)"
"$bin/frame_demo" 4
echo "== 3. pilot: mixed executable / function / multi-rank tasks, profile and trace"
"$bin/pilot_demo" "$out/pilot"
echo "== 4. bridge: ETTh1 windows -> loader -> tch training and TensorFlow SavedModel training"
"$bin/bridge_demo" "$out/bridge"
echo "== done: outputs in $out/ (pilot/trace.json opens in ui.perfetto.dev; bridge/forecast.svg)"
