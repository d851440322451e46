# Environment for deeprc-bridge's `tch` and `tensorflow` features (sourced;
# harmless when sourced twice). scripts/setup-ml.sh installs what it names.
#   LIBTORCH           libtorch of the venv's torch 2.13.0 wheel (torch-sys)
#   DEEPRC_VENV        the venv (default <workspace>/.venv)
#   DEEPRC_TF_MODEL    the SavedModel exported by crates/deeprc-bridge/python/export_model.py
#   DEEPRC_TF_HYDRO_MODEL  the hydrology LSTM SavedModel exported by
#                      crates/deeprc-bridge/python/export_hydro.py (paper defaults)
#   LD_LIBRARY_PATH    + libtorch and TensorFlow: binaries of crates without an
#                      rpath of their own (examples, benches) find them at run time.
# deeprc-bridge's own tests carry an rpath (its build.rs), so they do not need it.
_deeprc_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DEEPRC_VENV="${DEEPRC_VENV:-$_deeprc_root/.venv}"
_deeprc_site="$(ls -d "$DEEPRC_VENV"/lib/python3*/site-packages 2>/dev/null | head -n1)"
if [ -n "$_deeprc_site" ]; then
    export LIBTORCH="$_deeprc_site/torch"
    export DEEPRC_TF_MODEL="${DEEPRC_TF_MODEL:-$DEEPRC_VENV/models/bridge_mlp}"
    export DEEPRC_TF_HYDRO_MODEL="${DEEPRC_TF_HYDRO_MODEL:-$DEEPRC_VENV/models/hydro_lstm}"
    # 'import torch' fails without the CUDA wheels: never let torch-sys ask Python.
    unset LIBTORCH_USE_PYTORCH
    for _deeprc_dir in "$_deeprc_site/tensorflow" "$LIBTORCH/lib"; do
        case ":${LD_LIBRARY_PATH:-}:" in
        *":$_deeprc_dir:"*) ;;
        *) export LD_LIBRARY_PATH="$_deeprc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
        esac
    done
else
    echo "env-ml.sh: no venv at $DEEPRC_VENV; run scripts/setup-ml.sh" >&2
fi
unset _deeprc_root _deeprc_site _deeprc_dir
