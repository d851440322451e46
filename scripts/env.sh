# Environment shared by scripts/main.sh and scripts/test.sh (sourced).
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Build the MPI bindings against OpenMPI even when MPICH is installed too.
export MPICC="${MPICC:-mpicc.openmpi}"
# OpenMPI refuses to run as root without these (CI runs as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Real data is read in place, never copied into the repository.
export DEEPRC_DATA="${DEEPRC_DATA:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared/data}"
# libtorch / TensorFlow for deeprc-bridge's tch and tensorflow features.
source "$(dirname "${BASH_SOURCE[0]}")/env-ml.sh"
