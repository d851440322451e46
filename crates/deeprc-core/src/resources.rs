//! Resource amounts: cores, (fractional) GPUs and memory.

use crate::CoreError;
use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr};

/// An amount of compute resources: what a pilot holds, what a rank asks for.
///
/// GPUs are fractional so that several small trainings can share one device.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// CPU cores.
    pub cores: usize,
    /// GPUs, possibly fractional (`0.25` = a quarter of one device).
    pub gpus: f64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl Resources {
    /// Resources of `cores` cores, no GPU and no memory requirement.
    pub fn cores(cores: usize) -> Self {
        Self {
            cores,
            ..Self::default()
        }
    }

    /// Sets the GPU amount.
    pub fn with_gpus(mut self, gpus: f64) -> Self {
        self.gpus = gpus;
        self
    }

    /// Sets the memory amount in bytes.
    pub fn with_memory(mut self, bytes: u64) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// `true` when every amount of `self` is at most the one of `other`.
    pub fn fits_in(&self, other: &Resources) -> bool {
        self.cores <= other.cores
            && self.gpus <= other.gpus + 1e-9
            && self.memory_bytes <= other.memory_bytes
    }

    /// Multiplies every amount by `n` (e.g. per-rank amounts times ranks).
    pub fn times(&self, n: usize) -> Resources {
        Resources {
            cores: self.cores * n,
            gpus: self.gpus * n as f64,
            memory_bytes: self.memory_bytes * n as u64,
        }
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}c,{}g,{}B", self.cores, self.gpus, self.memory_bytes)
    }
}

/// Parses a byte amount such as `512`, `64KiB`, `8GiB`, `2GB` or `1.5G`.
fn parse_bytes(s: &str) -> Result<u64, CoreError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| CoreError::parse("memory", s, "expected a number"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        u => return Err(CoreError::parse("memory", s, format!("unknown unit {u:?}"))),
    };
    Ok((value * mult).round() as u64)
}

impl FromStr for Resources {
    type Err = CoreError;

    /// Parses a comma-separated list of `<n>c` (cores), `<x>g` (GPUs) and a
    /// byte amount with a unit (`8GiB`), e.g. `"4c,0.5g,8GiB"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut r = Resources::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let lower = part.to_ascii_lowercase();
            if let Some(n) = lower.strip_suffix('c') {
                r.cores = n.parse().map_err(|_| {
                    CoreError::parse("resources", s, format!("bad core count {part:?}"))
                })?;
            } else if let Some(n) = lower.strip_suffix('g').filter(|n| n.parse::<f64>().is_ok()) {
                r.gpus = n.parse().expect("checked by the filter");
                if !(r.gpus >= 0.0 && r.gpus.is_finite()) {
                    return Err(CoreError::parse("resources", s, "GPU amount must be >= 0"));
                }
            } else {
                r.memory_bytes = parse_bytes(part)?;
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let r: Resources = "2c, 0.25g, 512MiB".parse().unwrap();
        assert_eq!(
            r,
            Resources::cores(2).with_gpus(0.25).with_memory(512 << 20)
        );
        assert_eq!(parse_bytes("1.5G").unwrap(), 1_500_000_000);
        assert!("xc".parse::<Resources>().is_err());
        assert!("12parsecs".parse::<Resources>().is_err());
    }

    #[test]
    fn fits_and_times() {
        let need = Resources::cores(1).with_gpus(0.5).times(2);
        assert!(need.fits_in(&Resources::cores(2).with_gpus(1.0)));
        assert!(!need.fits_in(&Resources::cores(1).with_gpus(1.0)));
    }
}
