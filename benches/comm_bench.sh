#!/usr/bin/env bash
# Communicator benchmark with every process backend: tcp, gloo, and MPI built
# against MPICH (the fastest MPI measured on this machine) as the reference.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_MPICH:-target/mpich}"
MPICC=mpicc.mpich cargo build --release -p deeprc-benches --features mpi,gloo --bin comm_bench
DEEPRC_BENCH_MPIEXEC=mpiexec.mpich "$CARGO_TARGET_DIR/release/comm_bench"
