//! Models by name.

use crate::{ForecastConfig, Forecaster, ModelError, Result};
use tch::nn;

/// Every forecaster this crate builds, by the name [`build`] takes.
pub const MODELS: &[&str] = &[
    "NLinear",
    "DLinear",
    "MLP",
    "NBEATS",
    "NHITS",
    "LSTM",
    "GRU",
    "PatchTST",
    "TiDE",
    "VanillaTransformer",
    "Autoformer",
    "TimesNet",
    "TFT",
    "DeepAR",
];

/// The 11 models of the paper's evaluation (Sarker et al. 2025, Table 3).
pub const PAPER_MODELS: &[&str] = &[
    "Autoformer",
    "DeepAR",
    "NLinear",
    "GRU",
    "NBEATS",
    "NHITS",
    "PatchTST",
    "TFT",
    "TimesNet",
    "VanillaTransformer",
    "LSTM",
];

/// Builds the model `name` (one of [`MODELS`], case-insensitive) with its
/// parameters under `p`.
///
/// # Errors
/// [`ModelError::UnknownModel`] for a name not in [`MODELS`];
/// [`ModelError::InvalidConfig`] when the configuration cannot build it
/// (for example an even DLinear kernel, or NBEATS' trend stack with a
/// horizon of 1).
pub fn build(name: &str, p: &nn::Path<'_>, cfg: &ForecastConfig) -> Result<Box<dyn Forecaster>> {
    if cfg.input_size < 1 || cfg.horizon < 1 {
        return Err(ModelError::InvalidConfig {
            model: "any",
            reason: format!(
                "input_size {} and horizon {} must both be at least 1",
                cfg.input_size, cfg.horizon
            ),
        });
    }
    let canonical = MODELS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(name))
        .ok_or_else(|| ModelError::UnknownModel {
            name: name.to_string(),
            known: MODELS.join(", "),
        })?;
    match *canonical {
        "NLinear" => crate::nlinear::build(p, cfg),
        "DLinear" => crate::dlinear::build(p, cfg),
        "MLP" => crate::mlp::build(p, cfg),
        "NBEATS" => crate::nbeats::build(p, cfg),
        "NHITS" => crate::nhits::build(p, cfg),
        "LSTM" => crate::rnn::build_lstm(p, cfg),
        "GRU" => crate::rnn::build_gru(p, cfg),
        "PatchTST" => crate::patchtst::build(p, cfg),
        "TiDE" => crate::tide::build(p, cfg),
        "VanillaTransformer" => crate::vanilla_transformer::build(p, cfg),
        "Autoformer" => crate::autoformer::build(p, cfg),
        "TimesNet" => crate::timesnet::build(p, cfg),
        "TFT" => crate::tft::build(p, cfg),
        "DeepAR" => crate::deepar::build(p, cfg),
        other => unreachable!("{other} is in MODELS but has no constructor"),
    }
}
