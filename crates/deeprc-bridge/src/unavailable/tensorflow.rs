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
        .unwrap_or_else(|| venv_dir().join("models/bridge_mlp"))
}

fn venv_dir() -> PathBuf {
    std::env::var_os("DEEPRC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"))
}

fn not_compiled<T>() -> Result<T> {
    Err(BridgeError::NotCompiled {
        feature: "tensorflow",
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
        not_compiled()
    }
}

/// The hydrology LSTM SavedModel that `scripts/setup-ml.sh` exports
/// (`$DEEPRC_TF_HYDRO_MODEL`, or `$DEEPRC_VENV/models/hydro_lstm`).
pub fn default_hydro_model_dir() -> PathBuf {
    std::env::var_os("DEEPRC_TF_HYDRO_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| venv_dir().join("models/hydro_lstm"))
}

/// The script that exports hydrology LSTM SavedModels
/// (`crates/deeprc-bridge/python/export_hydro.py`).
pub fn hydro_export_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/export_hydro.py")
}

/// The hyperparameters of a hydrology LSTM SavedModel (see the
/// `tensorflow` feature's documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct HydroModelConfig {
    /// Days per sample.
    pub seq_len: usize,
    /// Dynamic features per day.
    pub dyn_features: usize,
    /// Static attributes per sample.
    pub static_features: usize,
    /// LSTM cells.
    pub hidden: usize,
    /// Dropout on the last hidden state.
    pub dropout: f32,
    /// The Adam learning rate.
    pub learning_rate: f32,
    /// Global gradient norm clipped to (0: none).
    pub clip_norm: f32,
    /// Initial forget gate bias.
    pub forget_bias: f32,
    /// Parameters (`P`).
    pub num_params: usize,
}

impl HydroModelConfig {
    /// `P` of the LSTM and its head: `4H (I + H + 1) + H + 1`.
    pub fn params_for(dyn_features: usize, static_features: usize, hidden: usize) -> usize {
        4 * hidden * (dyn_features + static_features + hidden + 1) + hidden + 1
    }
}

/// The arguments of `export_hydro.py` (exporting needs the `tensorflow`
/// feature). [`Default`] is the paper's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct HydroExport {
    /// Days per sample.
    pub seq_len: usize,
    /// Dynamic features per day.
    pub dyn_features: usize,
    /// Static attributes per sample.
    pub static_features: usize,
    /// LSTM cells.
    pub hidden: usize,
    /// Dropout on the last hidden state.
    pub dropout: f32,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// Global gradient norm to clip to (0: none).
    pub clip_norm: f32,
    /// Initial forget gate bias.
    pub forget_bias: f32,
    /// Seed of the initial weights.
    pub seed: u64,
    /// The Python with TensorFlow.
    pub python: Option<PathBuf>,
}

impl Default for HydroExport {
    fn default() -> Self {
        HydroExport {
            seq_len: 270,
            dyn_features: 5,
            static_features: 27,
            hidden: 256,
            dropout: 0.4,
            learning_rate: 1e-3,
            clip_norm: 1.0,
            forget_bias: 5.0,
            seed: 0,
            python: None,
        }
    }
}

impl HydroExport {
    /// The paper's configuration (as [`Default`]).
    pub fn paper() -> Self {
        Self::default()
    }

    /// The number of parameters the exported model will have.
    pub fn num_params(&self) -> usize {
        HydroModelConfig::params_for(self.dyn_features, self.static_features, self.hidden)
    }

    /// Needs the `tensorflow` feature.
    ///
    /// # Errors
    /// Always [`BridgeError::NotCompiled`].
    pub fn export(&self, dir: impl AsRef<Path>) -> Result<()> {
        let _ = dir;
        not_compiled()
    }
}

/// The hydrology LSTM SavedModel trained through flat gradients (needs the
/// `tensorflow` feature).
#[derive(Debug)]
pub struct HydroGradientModel {
    config: HydroModelConfig,
}

impl HydroGradientModel {
    /// Needs the `tensorflow` feature.
    ///
    /// # Errors
    /// Always [`BridgeError::NotCompiled`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let _ = dir;
        not_compiled()
    }

    /// The SavedModel's directory.
    pub fn dir(&self) -> &Path {
        Path::new("")
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &HydroModelConfig {
        &self.config
    }

    /// `P`.
    pub fn num_params(&self) -> usize {
        self.config.num_params
    }

    /// Needs the `tensorflow` feature.
    ///
    /// # Errors
    /// Always [`BridgeError::NotCompiled`].
    pub fn gradients_into(
        &self,
        x_dyn: &[f32],
        x_static: &[f32],
        y: &[f32],
        grads: &mut [f32],
    ) -> Result<f32> {
        let _ = (x_dyn, x_static, y, grads);
        not_compiled()
    }

    /// Needs the `tensorflow` feature.
    ///
    /// # Errors
    /// Always [`BridgeError::NotCompiled`].
    pub fn gradients(&self, x_dyn: &[f32], x_static: &[f32], y: &[f32]) -> Result<(f32, Vec<f32>)> {
        let _ = (x_dyn, x_static, y);
        not_compiled()
    }

    /// Needs the `tensorflow` feature.
    ///
    /// # Errors
    /// Always [`BridgeError::NotCompiled`].
    pub fn nse_gradients_into(
        &self,
        x_dyn: &[f32],
        x_static: &[f32],
        y: &[f32],
        q_std: &[f32],
        grads: &mut [f32],
    ) -> Result<f32> {
        let _ = (x_dyn, x_static, y, q_std, grads);
        not_compiled()
    }

    /// Needs the `tensorflow` feature.
    ///
    /// # Errors
    /// Always [`BridgeError::NotCompiled`].
    pub fn nse_gradients(
        &self,
        x_dyn: &[f32],
        x_static: &[f32],
        y: &[f32],
        q_std: &[f32],
    ) -> Result<(f32, Vec<f32>)> {
        let _ = (x_dyn, x_static, y, q_std);
        not_compiled()
    }

    /// Needs the `tensorflow` feature.
    ///
    /// # Errors
    /// Always [`BridgeError::NotCompiled`].
    pub fn apply_gradients(&mut self, grads: &[f32]) -> Result<u64> {
        let _ = grads;
        not_compiled()
    }

    /// Needs the `tensorflow` feature.
    ///
    /// # Errors
    /// Always [`BridgeError::NotCompiled`].
    pub fn predict(&self, x_dyn: &[f32], x_static: &[f32]) -> Result<Vec<f32>> {
        let _ = (x_dyn, x_static);
        not_compiled()
    }

    /// Needs the `tensorflow` feature.
    ///
    /// # Errors
    /// Always [`BridgeError::NotCompiled`].
    pub fn weights(&self) -> Result<Vec<f32>> {
        not_compiled()
    }

    /// Needs the `tensorflow` feature.
    ///
    /// # Errors
    /// Always [`BridgeError::NotCompiled`].
    pub fn set_weights(&mut self, weights: &[f32]) -> Result<()> {
        let _ = weights;
        not_compiled()
    }

    /// Needs the `tensorflow` feature.
    ///
    /// # Errors
    /// Always [`BridgeError::NotCompiled`].
    pub fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        let _ = lr;
        not_compiled()
    }
}
