//! # deeprc-examples
//!
//! The paper's pipelines as a library, used by the binaries of this crate
//! and by the benchmarks:
//! - [`forecast`] (feature `tch`): ETTh1 forecasting with the model zoo of
//!   `deeprc-models`, trained data-parallel, under the standard protocol;
//! - [`hydrology`]: CAMELS-US streamflow with the LSTM of Kratzert et al.,
//!   from the frame's join to NSE per basin;
//! - [`plot`]: PNG line charts (plotters) for forecasts, hydrographs and
//!   learning curves.

#![warn(missing_docs)]

pub mod error;
#[cfg(feature = "tch")]
pub mod forecast;
pub mod hydrology;
#[cfg(feature = "tch")]
pub mod pipelines;
pub mod plot;
pub mod report;

pub use error::{PipelineError, Result};

/// Serialises model construction under a seed: concurrent thread ranks
/// share libtorch's random generator, so each builds its model alone,
/// right after seeding it, and rank 0's initial parameters (which every
/// rank then receives) depend only on the seed.
pub fn seeded<T>(seed: u64, build: impl FnOnce() -> T) -> T {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _lock = INIT.lock().unwrap_or_else(|p| p.into_inner());
    #[cfg(feature = "tch")]
    deeprc_bridge::tch::tch_crate::manual_seed(seed as i64);
    #[cfg(not(feature = "tch"))]
    let _ = seed;
    build()
}
