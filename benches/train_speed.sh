#!/usr/bin/env bash
# Training step time (issue 8): tch beside PyTorch on the same libtorch, the
# TensorFlow SavedModel beside Keras fit, interleaved in one run. Builds the
# benchmark venv (.venv-bench) if needed, builds train_speed and writes its
# Markdown table to stdout (progress on stderr). Options go to train_speed
# (see its documentation), e.g.
#   benches/train_speed.sh --cases dlinear,mlp --rounds 5
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
benches/setup-bench-venv.sh
cargo build --release -p deeprc-benches --features tch,tensorflow --bin train_speed >&2
bench_python="${DEEPRC_BENCH_PYTHON:-$PWD/.venv-bench/bin/python}"
echo "machine: $(nproc) cores; load before: $(uptime)" >&2
# The two libtorch builds: tch links the project venv's, PyTorch imports the
# benchmark venv's (the same torch wheel).
for lib in "$LIBTORCH/lib/libtorch_cpu.so" \
    "$("$bench_python" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib/libtorch_cpu.so"))')"; do
    echo "libtorch: $(md5sum "$lib")" >&2
done
DEEPRC_BENCH_PYTHON="$bench_python" "${CARGO_TARGET_DIR:-target}/release/train_speed" "$@"
echo "machine load after: $(uptime)" >&2
