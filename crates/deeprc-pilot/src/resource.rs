//! Acquiring resources ([`ResourceProvider`]: `local`, and `slurm` in
//! [`crate::slurm`]) and describing where a task runs ([`Placement`]).

use crate::{
    session::{end_pilot, PilotShared},
    sys, LaunchMethod, PilotDescription, PilotError, PilotState, Result,
};
use deeprc_core::Resources;
use serde::{Deserialize, Serialize};
use std::{
    fmt,
    sync::{Arc, Weak},
};

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

/// Acquires the nodes of a pilot. `local` (this machine) and `slurm` (an
/// allocation, or a job submitted with `sbatch`: [`crate::slurm`]) are
/// built in.
///
/// A provider implements [`acquire`](Self::acquire) and
/// [`release`](Self::release); one whose nodes are another machine's, or
/// that must end its pilots when its resources go away, implements
/// [`allocate`](Self::allocate), [`free`](Self::free) and
/// [`watch`](Self::watch) too (the pilot manager calls those three; their
/// defaults call the first two).
pub trait ResourceProvider: Send + Sync + fmt::Debug {
    /// The name pilot descriptions use in `resource`.
    fn name(&self) -> &str;
    /// Acquires the nodes described by `desc`, blocking until they are
    /// available.
    fn acquire(&self, desc: &PilotDescription) -> Result<Vec<NodeSpec>>;
    /// Gives the nodes back (nothing to do for `local`).
    fn release(&self, _nodes: &[NodeSpec]) {}
    /// Acquires the resources of one pilot: its nodes, and what comes with
    /// them (an id, launch methods). Blocks until they are available.
    fn allocate(&self, desc: &PilotDescription) -> Result<Allocation> {
        Ok(Allocation::local(self.acquire(desc)?))
    }
    /// Gives back what [`allocate`](Self::allocate) returned (its id and
    /// nodes), once, when the pilot stops.
    fn free(&self, _allocation: Option<&str>, nodes: &[NodeSpec]) {
        self.release(nodes)
    }
    /// Called once the pilot of an allocation with an id is active: the
    /// provider may end it through `pilot` when the resources go away (a
    /// batch job cancelled or out of time).
    fn watch(&self, _allocation: &str, _pilot: PilotLink) {}
}

/// What a provider acquired for one pilot.
#[derive(Debug, Default)]
pub struct Allocation {
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
    /// The allocation's id (a Slurm job id), given back to
    /// [`ResourceProvider::free`] and shown by `Pilot::allocation`.
    pub id: Option<String>,
    /// Launch methods the pilot gets under these names, in place of the
    /// built-in ones (a Slurm pilot's `fork` and `mpirun` are `srun`); a
    /// pilot description's own launch methods still replace these.
    pub launch_methods: Vec<(String, Arc<dyn LaunchMethod>)>,
    /// The nodes are not this machine: function tasks, whose ranks run in
    /// this process or its worker processes, are refused.
    pub remote: bool,
}

impl Allocation {
    /// Nodes of this machine, with nothing else.
    pub fn local(nodes: Vec<NodeSpec>) -> Self {
        Self {
            nodes,
            ..Self::default()
        }
    }
}

/// A provider's handle on a pilot it watches: ends it when its resources
/// go away. It does not keep the pilot alive.
#[derive(Clone)]
pub struct PilotLink {
    pilot: Weak<PilotShared>,
}

impl fmt::Debug for PilotLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PilotLink")
            .field("pilot", &self.pilot_id())
            .finish()
    }
}

impl PilotLink {
    pub(crate) fn new(pilot: &Arc<PilotShared>) -> Self {
        Self {
            pilot: Arc::downgrade(pilot),
        }
    }

    /// The pilot's id, while it exists.
    pub fn pilot_id(&self) -> Option<String> {
        self.pilot.upgrade().map(|p| p.id.clone())
    }

    /// Ends the pilot in `state` (`Done`, `Failed`, `Canceled`) with
    /// `reason` (`Pilot::end_reason`), as `Pilot::cancel` does: its waiting
    /// and running tasks end CANCELED. Blocks until its agent has stopped;
    /// `false` when the pilot had already stopped or is gone.
    pub fn end(&self, state: PilotState, reason: impl Into<String>) -> bool {
        match self.pilot.upgrade() {
            Some(p) => end_pilot(&p, state, reason.into()),
            None => false,
        }
    }
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
