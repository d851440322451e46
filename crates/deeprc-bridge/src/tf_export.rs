//! What the TensorFlow side needs that is not TensorFlow itself, shared by
//! the `tensorflow` module and its stub without the feature: where the
//! SavedModels are, and the export of hydrology LSTM SavedModels (which
//! runs the venv's Python, not the TensorFlow C library).

use crate::error::{BridgeError, Result};
use std::path::{Path, PathBuf};

fn framework(e: impl std::fmt::Display) -> BridgeError {
    BridgeError::Framework {
        framework: "tensorflow",
        message: e.to_string(),
    }
}

/// The SavedModel exported by `crates/deeprc-bridge/python/export_model.py`
/// (`$DEEPRC_TF_MODEL`, or `$DEEPRC_VENV/models/bridge_mlp`, the venv
/// defaulting to `<workspace>/.venv`).
pub fn default_model_dir() -> PathBuf {
    std::env::var_os("DEEPRC_TF_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| venv_dir().join("models/bridge_mlp"))
}

/// The hydrology LSTM SavedModel that `scripts/setup-ml.sh` exports with
/// `crates/deeprc-bridge/python/export_hydro.py` at its paper defaults
/// (`$DEEPRC_TF_HYDRO_MODEL`, or `$DEEPRC_VENV/models/hydro_lstm`, the venv
/// defaulting to `<workspace>/.venv`).
pub fn default_hydro_model_dir() -> PathBuf {
    std::env::var_os("DEEPRC_TF_HYDRO_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| venv_dir().join("models/hydro_lstm"))
}

fn venv_dir() -> PathBuf {
    std::env::var_os("DEEPRC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"))
}

/// The script that exports hydrology LSTM SavedModels
/// (`crates/deeprc-bridge/python/export_hydro.py`; its docstring is the
/// reference for the model and its signatures).
pub fn hydro_export_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/export_hydro.py")
}

/// The hyperparameters of a hydrology LSTM SavedModel, as its `config` and
/// `num_params` signatures report them.
#[derive(Debug, Clone, PartialEq)]
pub struct HydroModelConfig {
    /// Days per sample (`T`): `x_dyn` is `[B, T, dyn_features]`.
    pub seq_len: usize,
    /// Dynamic (daily forcing) features per day.
    pub dyn_features: usize,
    /// Static catchment attributes per sample: `x_static` is
    /// `[B, static_features]` (0: none).
    pub static_features: usize,
    /// LSTM cells (`H`).
    pub hidden: usize,
    /// Dropout probability on the last hidden state in `gradients`.
    pub dropout: f32,
    /// The Adam learning rate now.
    pub learning_rate: f32,
    /// Global gradient norm `apply_gradients` clips to (0: none).
    pub clip_norm: f32,
    /// Initial forget gate bias.
    pub forget_bias: f32,
    /// Parameters (`P`): the length of the flat gradient and weight vectors.
    pub num_params: usize,
}

impl HydroModelConfig {
    /// `P` of an LSTM with `dyn_features + static_features` inputs and
    /// `hidden` cells plus its linear head: `4H (I + H + 1) + H + 1`.
    pub fn params_for(dyn_features: usize, static_features: usize, hidden: usize) -> usize {
        4 * hidden * (dyn_features + static_features + hidden + 1) + hidden + 1
    }
}

/// The arguments of `export_hydro.py`: a hydrology LSTM to export as a
/// SavedModel. [`Default`] is the paper's configuration (Kratzert et al.
/// 2019: 270 days, 5 Daymet forcings, 27 attributes, 256 cells, dropout 0.4,
/// Adam 1e-3, clipping at norm 1, forget bias 5).
#[derive(Debug, Clone, PartialEq)]
pub struct HydroExport {
    /// Days per sample.
    pub seq_len: usize,
    /// Dynamic features per day (at least 1).
    pub dyn_features: usize,
    /// Static attributes per sample (0: none).
    pub static_features: usize,
    /// LSTM cells (at least 1).
    pub hidden: usize,
    /// Dropout on the last hidden state, in `[0, 1)`.
    pub dropout: f32,
    /// Adam learning rate (positive).
    pub learning_rate: f32,
    /// Global gradient norm to clip to (0: none).
    pub clip_norm: f32,
    /// Initial forget gate bias.
    pub forget_bias: f32,
    /// Seed of the initial weights.
    pub seed: u64,
    /// The Python with TensorFlow (default `$DEEPRC_VENV/bin/python`).
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

    fn check(&self) -> Result<()> {
        let bad = |d: String| Err(BridgeError::invalid("HydroExport", d));
        if self.seq_len == 0 || self.dyn_features == 0 || self.hidden == 0 {
            return bad(format!(
                "seq_len ({}), dyn_features ({}) and hidden ({}) must be at least 1",
                self.seq_len, self.dyn_features, self.hidden
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "learning rate {} is not positive",
                self.learning_rate
            ));
        }
        let clip_ok = self.clip_norm.is_finite() && self.clip_norm >= 0.0;
        if !clip_ok || !self.forget_bias.is_finite() {
            return bad(format!(
                "clip_norm {} must be finite and non-negative, forget_bias {} finite",
                self.clip_norm, self.forget_bias
            ));
        }
        Ok(())
    }

    /// Runs `export_hydro.py` to write the SavedModel into `dir` (replaced
    /// atomically if it exists); takes a few seconds (TensorFlow's import).
    ///
    /// # Errors
    /// [`BridgeError::InvalidArgument`] for impossible hyperparameters;
    /// [`BridgeError::Framework`] when Python cannot be started or the
    /// export fails (with its error output).
    pub fn export(&self, dir: impl AsRef<Path>) -> Result<()> {
        self.check()?;
        let dir = dir.as_ref();
        let python = self
            .python
            .clone()
            .unwrap_or_else(|| venv_dir().join("bin/python"));
        let script = hydro_export_script();
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg(dir)
            .args(["--seq-len", &self.seq_len.to_string()])
            .args(["--dyn", &self.dyn_features.to_string()])
            .args(["--static", &self.static_features.to_string()])
            .args(["--hidden", &self.hidden.to_string()])
            .args(["--dropout", &self.dropout.to_string()])
            .args(["--lr", &self.learning_rate.to_string()])
            .args(["--clip-norm", &self.clip_norm.to_string()])
            .args(["--forget-bias", &self.forget_bias.to_string()])
            .args(["--seed", &self.seed.to_string()])
            .env("TF_CPP_MIN_LOG_LEVEL", "2")
            .output()
            .map_err(|e| {
                framework(format!(
                    "starting {} (scripts/setup-ml.sh makes the venv): {e}",
                    python.display()
                ))
            })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: String = {
                let lines: Vec<&str> = err.lines().collect();
                lines[lines.len().saturating_sub(15)..].join("\n")
            };
            return Err(framework(format!(
                "{} {} {} failed ({}):\n{tail}",
                python.display(),
                script.display(),
                dir.display(),
                out.status
            )));
        }
        Ok(())
    }
}
