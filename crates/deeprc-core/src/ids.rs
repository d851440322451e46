//! Identifiers shared by the crates.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The index of a participant of a communicator, `0..size`.
pub type Rank = usize;

/// The id of a task inside a pilot session (`task.000042` when displayed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task.{:06}", self.0)
    }
}

/// The index of one partition of a distributed table (equal to the owning
/// rank in a `DistTable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionId(pub usize);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "partition.{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_display() {
        assert_eq!(TaskId(42).to_string(), "task.000042");
        assert_eq!(PartitionId(3).to_string(), "partition.3");
    }
}
