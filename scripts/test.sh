#!/usr/bin/env bash
# Runs every check and test of the workspace, with every feature that can run
# on this machine (MPI under mpirun, Gloo, NCCL's no-GPU path).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
# A clean clone gains nothing from incremental caches but their disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy (all features, all targets, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== tests (all features)"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-features --no-fail-fast
else
    cargo test --workspace --all-features --no-fail-fast
fi
echo "== doc tests"
cargo test --workspace --all-features --doc
# Every fuzz target for a bounded time (10 targets x 30 s = 5 min; one
# build of fuzz/ shared by all; DEEPRC_FUZZ_SECONDS=0 skips, e.g. locally).
fuzz_secs="${DEEPRC_FUZZ_SECONDS:-30}"
if [ "$fuzz_secs" != 0 ]; then
    echo "== fuzz (every target, ${fuzz_secs}s each)"
    scripts/fuzz.sh "$fuzz_secs"
fi
