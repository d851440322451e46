//! Profile records: named, time-stamped events written by the communicator
//! and the pilot runtime, exportable as JSON Lines or CSV.

use crate::sync::lock;
use crate::{CoreError, Result};
use serde::{Deserialize, Serialize};
use std::{
    io::Write,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// One event: `entity` (e.g. `task.000003`, `comm.rank.1`) did `event` at
/// `timestamp_ns` (nanoseconds since the Unix epoch), optionally taking
/// `duration_ns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// Wall-clock time of the event in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Who the event belongs to.
    pub entity: String,
    /// What happened, dotted lower-case (`state.executing`, `comm.create`).
    pub event: String,
    /// How long it took, if it is a span.
    pub duration_ns: Option<u64>,
    /// Free-form details.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attrs: Vec<(String, String)>,
}

impl ProfileRecord {
    /// A record stamped now.
    pub fn now(entity: impl Into<String>, event: impl Into<String>) -> Self {
        Self {
            timestamp_ns: now_ns(),
            entity: entity.into(),
            event: event.into(),
            duration_ns: None,
            attrs: Vec::new(),
        }
    }

    /// Adds a key/value detail.
    pub fn with_attr(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.attrs.push((key.into(), value.to_string()));
        self
    }

    /// Sets the duration.
    pub fn with_duration(mut self, d: Duration) -> Self {
        self.duration_ns = Some(d.as_nanos() as u64);
        self
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A thread-safe, cheaply cloneable collector of [`ProfileRecord`]s.
#[derive(Debug, Clone, Default)]
pub struct Profiler {
    records: Arc<Mutex<Vec<ProfileRecord>>>,
}

impl Profiler {
    /// An empty profiler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a record.
    pub fn push(&self, record: ProfileRecord) {
        lock(&self.records).push(record);
    }

    /// Appends a record stamped now.
    pub fn record(&self, entity: &str, event: &str, duration: Option<Duration>) {
        let mut r = ProfileRecord::now(entity, event);
        r.duration_ns = duration.map(|d| d.as_nanos() as u64);
        self.push(r);
    }

    /// A copy of all records so far, in insertion order.
    pub fn snapshot(&self) -> Vec<ProfileRecord> {
        lock(&self.records).clone()
    }

    /// Writes all records as JSON Lines.
    pub fn write_jsonl(&self, path: &Path) -> Result<()> {
        let io = |source| CoreError::ProfileIo {
            path: path.display().to_string(),
            source,
        };
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
        for r in self.snapshot() {
            serde_json::to_writer(&mut out, &r).map_err(|e| io(e.into()))?;
            out.write_all(b"\n").map_err(io)?;
        }
        out.flush().map_err(io)
    }

    /// Writes all records as CSV (`timestamp_ns,entity,event,duration_ns,attrs`).
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let io = |source| CoreError::ProfileIo {
            path: path.display().to_string(),
            source,
        };
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
        writeln!(out, "timestamp_ns,entity,event,duration_ns,attrs").map_err(io)?;
        for r in self.snapshot() {
            let attrs: Vec<String> = r.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(
                out,
                "{},{},{},{},{}",
                r.timestamp_ns,
                csv_field(&r.entity),
                csv_field(&r.event),
                r.duration_ns.map(|d| d.to_string()).unwrap_or_default(),
                csv_field(&attrs.join(";"))
            )
            .map_err(io)?;
        }
        out.flush().map_err(io)
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_exports() {
        let p = Profiler::new();
        p.push(ProfileRecord::now("task.000001", "state.done").with_attr("rank", 0));
        p.record("comm", "comm.create", Some(Duration::from_millis(2)));
        let dir = std::env::temp_dir().join(format!("deeprc-core-prof-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        p.write_jsonl(&dir.join("p.jsonl")).unwrap();
        p.write_csv(&dir.join("p.csv")).unwrap();
        let jsonl = std::fs::read_to_string(dir.join("p.jsonl")).unwrap();
        let back: Vec<ProfileRecord> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, p.snapshot());
        let csv = std::fs::read_to_string(dir.join("p.csv")).unwrap();
        assert_eq!(csv.lines().count(), 3);
        assert!(csv.contains("comm.create,2000000"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
