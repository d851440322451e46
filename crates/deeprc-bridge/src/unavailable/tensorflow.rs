//! TensorFlow tensors and SavedModels through `tensorflow`: not compiled in
//! (build with the `tensorflow` feature). Every entry point returns
//! [`BridgeError::NotCompiled`].

use crate::error::{BridgeError, Result};
use std::path::{Path, PathBuf};

/// The SavedModel exported by `crates/deeprc-bridge/python/export_model.py`
/// (`$DEEPRC_TF_MODEL`, or `$DEEPRC_VENV/models/bridge_mlp`).
pub fn default_model_dir() -> PathBuf {
    super_model_dir()
}

fn super_model_dir() -> PathBuf {
    std::env::var_os("DEEPRC_TF_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let venv = std::env::var_os("DEEPRC_VENV")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
            venv.join("models/bridge_mlp")
        })
}

/// A SavedModel with `train`, `loss` and `predict` signatures (needs the
/// `tensorflow` feature).
#[derive(Debug)]
pub struct SavedModelTrainer {
    _private: (),
}

impl SavedModelTrainer {
    /// Needs the `tensorflow` feature.
    ///
    /// # Errors
    /// Always [`BridgeError::NotCompiled`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let _ = dir;
        Err(BridgeError::NotCompiled {
            feature: "tensorflow",
        })
    }
}
