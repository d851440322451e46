#!/usr/bin/env bash
# The main job: the most complete end-to-end demo the crates support, on the
# embedded defaults (thread ranks, then process ranks over TCP).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
out="${1:-out}"
mkdir -p "$out"

cargo build --release -p deeprc-examples --bins
echo "== communicator: shuffle + all-reduce + split, threads and tcp processes"
target/release/comm_demo 4
