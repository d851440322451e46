#!/usr/bin/env bash
# The main job: Deep RC's pipelines end to end on the embedded defaults (one
# local pilot, thread ranks), on the real data in ../shared/data
# ($DEEPRC_DATA): CAMELS-US hydrology (frame join -> bridge windows -> LSTM
# trained data-parallel in tch and in TensorFlow -> NSE per basin) and
# ETTh1 forecasting (the paper's 11 models trained data-parallel, each
# predicting as 10 parallel tasks, metrics by a frame group-by), under the
# pilot and on bare metal, with the overhead between them. Then three short
# demos of what the pipelines do not show (process ranks over TCP, SQL,
# executable tasks and failures).
#
#   scripts/main.sh [out_dir] [-- extra deeprc_pipelines flags, e.g. --paper]
#
# The report is <out_dir>/report.md (default out/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
out="out"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then out="$1"; shift; fi
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
# TensorFlow's C++ INFO lines would bury the summary.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

echo "== building (release, no debug info; the first build takes a while)"
cargo build --release -p deeprc-examples --features tch,tensorflow --bins
bin=target/release

echo "== demos: communicator on thread and tcp-process ranks; frame SQL; pilot executables and failures"
"$bin/comm_demo" 4 >"$out/comm_demo.txt"
"$bin/frame_demo" 4 >"$out/frame_demo.txt"
"$bin/pilot_demo" "$out/pilot_demo" >"$out/pilot_demo.txt"
echo "   (outputs in $out/comm_demo.txt, frame_demo.txt, pilot_demo.txt)"

echo "== pipelines: hydrology (tch and TensorFlow) and 11 forecasting models, under the pilot and on bare metal"
"$bin/deeprc_pipelines" --out "$out" "$@"
