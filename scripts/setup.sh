#!/usr/bin/env bash
# Installs what Deep RC's builds and tests need on a fresh Debian 12 machine.
# Idempotent: installs only what is missing.
set -euo pipefail

# Debian packages: OpenMPI (tests, mpirun launch method), MPICH (benchmark
# comparison), Gloo, libclang/pkg-config for the MPI bindings, and
# fontconfig/freetype with a font for the plots (plotters), and Slurm with munge and the
# namespace tools for the pilot's cluster tests (scripts/netns-slurm.sh starts the cluster).
# UCX (libucx-dev for the ucx backend, ucx-utils for ucx_perftest beside it).
packages=(pkg-config libclang-dev libopenmpi-dev openmpi-bin mpich libmpich-dev libgloo-dev
    libfontconfig1-dev libfreetype-dev fonts-dejavu-core
    slurm-wlm munge iproute2 util-linux procps libucx-dev ucx-utils)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# rsmpi builds against OpenMPI; MPICH is only used by the benchmark script.
echo "setup: Debian packages present (${packages[*]})"

# libtorch and TensorFlow's C library from PyPI wheels, and the SavedModel.
"$(dirname "${BASH_SOURCE[0]}")/setup-ml.sh"
