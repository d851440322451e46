#!/usr/bin/env bash
# Communicator benchmark with every process backend: tcp, ucx, gloo, and MPI built
# against MPICH (the fastest MPI measured on this machine) as the reference,
# plus MPICH's own MPI_Allreduce timed by a small C program (no Rust copies),
# all in the same run. Options go to comm_bench (see its documentation), e.g.
#   benches/comm_bench.sh --all-reduce-only --ranks 2,4
# DEEPRC_SKIP_SETUP=1 skips scripts/setup.sh (packages already installed).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${DEEPRC_SKIP_SETUP:-}" ] || scripts/setup.sh
source scripts/env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_MPICH:-target/mpich}"
MPICC=mpicc.mpich cargo build --release -p deeprc-benches --features mpi,gloo,ucx --bin comm_bench

# MPI_Allreduce of f32 in place: median over reps of the slowest rank.
mpi_c="$CARGO_TARGET_DIR/release/mpich_allreduce"
cat >"$mpi_c.c" <<'EOF'
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    size_t bytes = argc > 1 ? strtoull(argv[1], 0, 10) : (size_t)64 << 20;
    int reps = argc > 2 ? atoi(argv[2]) : 7;
    size_t count = bytes / sizeof(float);
    float *buf = malloc(bytes);
    double *t = malloc(sizeof(double) * reps);
    for (size_t i = 0; i < count; i++) buf[i] = 1.0f;
    /* Warm-up, as for the Rust backends. */
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        double mine = MPI_Wtime() - t0;
        MPI_Allreduce(&mine, &t[r], 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    }
    qsort(t, reps, sizeof(double), cmp);
    if (rank == 0) printf("MPI_ALLREDUCE\t%d\t%zu\t%.9f\n", size, bytes, t[reps / 2]);
    free(t);
    free(buf);
    MPI_Finalize();
    return 0;
}
EOF
mpicc.mpich -O2 -o "$mpi_c" "$mpi_c.c"

echo "machine load: $(uptime)"
DEEPRC_BENCH_MPIEXEC=mpiexec.mpich DEEPRC_BENCH_MPI_C="$mpi_c" \
    "$CARGO_TARGET_DIR/release/comm_bench" "$@"
echo "machine load: $(uptime)"
