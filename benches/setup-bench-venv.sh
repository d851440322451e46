#!/usr/bin/env bash
# The benchmark venv .venv-bench: PyTorch 2.13.0 with its CUDA wheels, so that
# `import torch` works (the project venv .venv has the same torch wheel
# without its CUDA dependencies: tch links its libtorch, but Python cannot
# import it). benches/train_speed.sh runs the PyTorch twins with it.
# Idempotent: does nothing when the venv already imports torch 2.13.0.
# Needs the network only the first time. DEEPRC_BENCH_VENV overrides the path.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DEEPRC_BENCH_VENV:-$PWD/.venv-bench}"
torch_version=2.13.0
have() {
    "$venv/bin/python" -c "import numpy, torch; assert torch.__version__.split('+')[0] == '$torch_version'" 2>/dev/null
}
if [ -x "$venv/bin/python" ] && have; then
    echo "setup-bench-venv: $venv has torch $torch_version" >&2
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "torch==$torch_version" numpy
have || { echo "setup-bench-venv: torch $torch_version does not import in $venv" >&2; exit 1; }
echo "setup-bench-venv: installed torch $torch_version into $venv" >&2
