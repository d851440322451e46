//! Integration tests of deeprc-bridge: one binary, one module per topic.
//! The real data sets are read in place from `$DEEPRC_DATA` (default
//! `<workspace>/../shared/data`); a missing file fails the test naming it.

mod common;
mod errors;
mod loader;
mod real_data;
mod sampling;
#[cfg(feature = "tensorflow")]
mod tensorflow;
#[cfg(feature = "tch")]
mod torch;
#[cfg(feature = "tch")]
mod training;
mod zero_copy;
