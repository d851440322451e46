#!/usr/bin/env bash
# The peers Deep RC's benchmarks measure in the same run, installed from PyPI
# into the benchmark venv (.venv-bench, beside PyTorch 2.13.0 with its CUDA
# wheels: benches/setup-bench-venv.sh). Pinned, so that a rerun measures the
# same versions. Idempotent; needs the network only the first time.
# DEEPRC_BENCH_VENV overrides the venv's path.
set -euo pipefail
cd "$(dirname "$0")/../.."
benches/setup-bench-venv.sh
venv="${DEEPRC_BENCH_VENV:-$PWD/.venv-bench}"
pins=(
    duckdb==2.0.1
    polars==2.1.0
    pandas==3.1.1
    pyarrow==26.0.1
    datafusion==55.0.0
    "dask[dataframe,distributed]==2026.8.0"
    ray==2.60.0
    radical.pilot==1.103.2
)
if "$venv/bin/python" - "${pins[@]}" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    name = name.split("[")[0]
    assert version(name) == want, (name, version(name), want)
PY
    echo "peers/setup.sh: $venv has every peer at its pinned version" >&2
    exit 0
fi
"$venv/bin/python" -m pip install --quiet "${pins[@]}"
echo "peers/setup.sh: installed ${pins[*]} into $venv" >&2
