//! Acquiring resources ([`ResourceProvider`]: `local` now, Slurm later) and
//! describing where a task runs ([`Placement`]).

use crate::{sys, PilotDescription, PilotError, Result};
use deeprc_core::Resources;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One node of a pilot: a placeholder of cores, whole GPUs and memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// The node's name (host name, or `localhost.1` for a local layout).
    pub name: String,
    /// Core slots.
    pub cores: usize,
    /// Whole GPUs (shared by fractions between tasks).
    pub gpus: usize,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// The operating-system CPU that each core slot is pinned to
    /// (`cpu_ids[core]`).
    pub cpu_ids: Vec<usize>,
    /// The CUDA device number of each GPU slot (`gpu_ids[gpu]`).
    pub gpu_ids: Vec<usize>,
}

impl NodeSpec {
    /// The node's resources.
    pub fn resources(&self) -> Resources {
        Resources {
            cores: self.cores,
            gpus: self.gpus as f64,
            memory_bytes: self.memory_bytes,
        }
    }
}

/// Acquires the nodes of a pilot. `local` (this machine) is built in; a
/// Slurm provider (an allocation, `sbatch`) plugs in the same way.
pub trait ResourceProvider: Send + Sync + fmt::Debug {
    /// The name pilot descriptions use in `resource`.
    fn name(&self) -> &str;
    /// Acquires the nodes described by `desc`, blocking until they are
    /// available.
    fn acquire(&self, desc: &PilotDescription) -> Result<Vec<NodeSpec>>;
    /// Gives the nodes back (nothing to do for `local`).
    fn release(&self, _nodes: &[NodeSpec]) {}
}

/// This machine. Without a layout it is one node with the detected CPUs
/// (those this process may run on), the visible GPUs and the memory; with
/// `nodes(n, per_node)` it is `n` nodes whose core slots map onto the
/// machine's CPUs in turn, so that placement across nodes can be exercised
/// on a laptop.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalResources;

impl ResourceProvider for LocalResources {
    fn name(&self) -> &str {
        "local"
    }

    fn acquire(&self, desc: &PilotDescription) -> Result<Vec<NodeSpec>> {
        let cpus = sys::allowed_cpus();
        let host = sys::hostname();
        let detected_gpus = sys::detect_gpus();
        let (count, per) = match desc.nodes {
            Some((n, per)) => (n, per),
            None => (
                1,
                Resources {
                    cores: desc.cores.unwrap_or(cpus.len()),
                    gpus: desc.gpus.unwrap_or(detected_gpus) as f64,
                    memory_bytes: desc.memory_bytes.unwrap_or_else(sys::total_memory),
                },
            ),
        };
        if count == 0 || per.cores == 0 {
            return Err(PilotError::InvalidPilot {
                reason: format!("{count} nodes of {per}: a pilot needs at least one core"),
            });
        }
        if per.gpus.fract() != 0.0 || per.gpus < 0.0 {
            return Err(PilotError::InvalidPilot {
                reason: format!("nodes hold whole GPUs, not {}", per.gpus),
            });
        }
        let gpus = per.gpus as usize;
        Ok((0..count)
            .map(|n| NodeSpec {
                name: if count == 1 {
                    host.clone()
                } else {
                    format!("{host}.{n}")
                },
                cores: per.cores,
                gpus,
                memory_bytes: per.memory_bytes,
                cpu_ids: (0..per.cores)
                    .map(|c| cpus[(n * per.cores + c) % cpus.len()])
                    .collect(),
                gpu_ids: (0..gpus)
                    .map(|g| {
                        let i = n * gpus + g;
                        if detected_gpus > 0 {
                            i % detected_gpus
                        } else {
                            i
                        }
                    })
                    .collect(),
            })
            .collect())
    }
}

/// A share of one GPU given to a rank.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GpuShare {
    /// The GPU slot on the node.
    pub gpu: usize,
    /// Its CUDA device number (what `CUDA_VISIBLE_DEVICES` lists).
    pub device: usize,
    /// The fraction of it (1.0 for a whole GPU).
    pub fraction: f64,
}

/// Where one rank runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankPlacement {
    /// The node index in the pilot.
    pub node: usize,
    /// The core slots on that node.
    pub cores: Vec<usize>,
    /// The GPU shares on that node.
    pub gpus: Vec<GpuShare>,
    /// The memory reserved on that node.
    pub memory_bytes: u64,
}

/// Where every rank of a task runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// One entry per rank, in rank order.
    pub ranks: Vec<RankPlacement>,
}

impl Placement {
    /// The nodes used, without repetition, in rank order.
    pub fn nodes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = Vec::new();
        for r in &self.ranks {
            if !v.contains(&r.node) {
                v.push(r.node);
            }
        }
        v
    }

    /// Total cores.
    pub fn cores(&self) -> usize {
        self.ranks.iter().map(|r| r.cores.len()).sum()
    }

    /// Total GPU amount.
    pub fn gpus(&self) -> f64 {
        self.ranks
            .iter()
            .flat_map(|r| r.gpus.iter().map(|g| g.fraction))
            .sum()
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranks.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "r{i}@n{}:c", r.node)?;
            for (j, c) in r.cores.iter().enumerate() {
                write!(f, "{}{c}", if j > 0 { "," } else { "" })?;
            }
            for g in &r.gpus {
                write!(f, ":g{}x{}", g.gpu, g.fraction)?;
            }
        }
        Ok(())
    }
}

/// `CUDA_VISIBLE_DEVICES` for a list of GPU shares.
pub(crate) fn cuda_visible(gpus: &[GpuShare]) -> String {
    let mut s = String::new();
    for g in gpus {
        if !s.is_empty() {
            s.push(',');
        }
        s.push_str(&g.device.to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_layout() {
        let nodes = LocalResources
            .acquire(&PilotDescription::local().nodes(2, "1c,1g,1GiB".parse().unwrap()))
            .unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].cores, 1);
        assert_eq!(nodes[1].gpus, 1);
        assert_eq!(nodes[1].gpu_ids.len(), 1);
        let bad =
            LocalResources.acquire(&PilotDescription::local().nodes(1, "1c,0.5g".parse().unwrap()));
        assert!(matches!(bad, Err(PilotError::InvalidPilot { .. })));
        let one = LocalResources
            .acquire(&PilotDescription::local().cores(3))
            .unwrap();
        assert_eq!(one[0].cores, 3);
    }
}
