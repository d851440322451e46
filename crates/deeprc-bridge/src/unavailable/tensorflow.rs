//! TensorFlow tensors and SavedModels through `tensorflow`: not compiled in
//! (build with the `tensorflow` feature). Every entry point returns
//! [`BridgeError::NotCompiled`].

use crate::error::{BridgeError, Result};
pub use crate::tf_export::{
    default_hydro_model_dir, default_model_dir, hydro_export_script, HydroExport, HydroModelConfig,
};
use std::path::Path;

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

    /// Needs the `tensorflow` feature.
    ///
    /// # Errors
    /// Always [`BridgeError::NotCompiled`].
    pub fn load_with_threads(
        dir: impl AsRef<Path>,
        intra_op: usize,
        inter_op: usize,
    ) -> Result<Self> {
        let _ = (dir, intra_op, inter_op);
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
