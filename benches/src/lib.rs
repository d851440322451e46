//! What the benchmark binaries share: the peers' Python, the machine's
//! load, medians.

use std::path::{Path, PathBuf};

/// The Python of the benchmark venv that runs the peers in `benches/peers/`
/// (`.venv-bench`, made by `benches/peers/setup.sh`; `DEEPRC_PEERS_PYTHON`
/// overrides).
///
/// ```
/// assert!(deeprc_benches::peers_python().ends_with("python"));
/// ```
pub fn peers_python() -> PathBuf {
    std::env::var_os("DEEPRC_PEERS_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-bench/bin/python"),
        PathBuf::from,
    )
}

/// The 1-minute load average (NaN where `/proc/loadavg` is unreadable),
/// recorded beside every figure.
///
/// ```
/// let load = deeprc_benches::load_average();
/// assert!(load.is_nan() || load >= 0.0);
/// ```
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The median of `v` (the upper one of an even count); `v` must not be
/// empty.
///
/// ```
/// assert_eq!(deeprc_benches::median(vec![3.0, 1.0, 2.0]), 2.0);
/// ```
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
