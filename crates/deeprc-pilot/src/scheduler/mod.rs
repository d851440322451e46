//! Slot bookkeeping and placement: which (node, core, GPU share, memory)
//! slots are free, and where a task's ranks go.
//!
//! Placement is first fit. A multi-rank task is first tried on a single
//! node (keeping its ranks together); if no node can hold all of them and
//! its launch method can span nodes, each rank goes to the first node that
//! fits it. The first node that may fit is found with an index over the
//! nodes' free capacity ([`fit`]), not a scan, so placement stays fast on
//! a pilot of thousands of nodes. GPU shares are counted in units of 1/10000 of a GPU, so that
//! four 0.25 shares fill a GPU exactly; a rank with a fraction takes it
//! from the first GPU with enough left, a rank with whole GPUs takes
//! entirely free ones.
//!
//! Public so that placement can be simulated at scale without running
//! anything (`benches/src/bin/sched_sim.rs`: 10,000 nodes and a million
//! tasks of mixed shapes):
//!
//! ```
//! use deeprc_pilot::scheduler::{Shape, SlotMap};
//! use deeprc_pilot::NodeSpec;
//! let nodes: Vec<NodeSpec> = (0..2)
//!     .map(|i| NodeSpec {
//!         name: format!("n{i}"),
//!         cores: 4,
//!         gpus: 1,
//!         memory_bytes: 1 << 30,
//!         cpu_ids: (0..4).collect(),
//!         gpu_ids: vec![0],
//!     })
//!     .collect();
//! let mut slots = SlotMap::new(&nodes);
//! // 6 ranks of one core and a quarter GPU each: too many for one node,
//! // so they span both (4 + 2).
//! let shape = Shape { ranks: 6, cores: 1, gpu_units: Shape::gpu_units(0.25), mem: 0, span_nodes: true };
//! let p = slots.try_place(&shape).expect("fits");
//! assert_eq!(p.nodes(), vec![0, 1]);
//! assert_eq!(slots.free_cores(), 2);
//! slots.release(&p);
//! assert_eq!(slots.free_cores(), 8);
//! ```

mod fit;

use crate::{GpuShare, NodeSpec, Placement, RankPlacement};
use fit::{Capacity, FitTree};

/// GPU share units per GPU.
pub const GPU_UNITS: u32 = 10_000;

/// What one task needs, in the scheduler's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Ranks (processes or threads) of the task.
    pub ranks: usize,
    /// Cores per rank.
    pub cores: usize,
    /// GPU per rank, in units of 1/[`GPU_UNITS`] of a GPU.
    pub gpu_units: u32,
    /// Memory per rank in bytes.
    pub mem: u64,
    /// Whether the ranks may be spread over several nodes.
    pub span_nodes: bool,
}

impl Shape {
    /// Converts a fractional GPU amount to units.
    pub fn gpu_units(gpus: f64) -> u32 {
        (gpus * f64::from(GPU_UNITS)).round() as u32
    }
}

#[derive(Debug, Clone)]
struct NodeSlots {
    free: Vec<u64>,
    n_free: usize,
    gpus: Vec<u32>,
    gpu_ids: Vec<usize>,
    mem: u64,
}

impl NodeSlots {
    fn new(spec: &NodeSpec) -> Self {
        let words = spec.cores.div_ceil(64);
        let mut free = vec![u64::MAX; words];
        let rem = spec.cores % 64;
        if rem != 0 {
            free[words - 1] = (1u64 << rem) - 1;
        }
        Self {
            free,
            n_free: spec.cores,
            gpus: vec![GPU_UNITS; spec.gpus],
            gpu_ids: spec.gpu_ids.clone(),
            mem: spec.memory_bytes,
        }
    }

    /// Allocates one rank here, or returns `None` leaving the node as it was.
    fn alloc_rank(&mut self, node: usize, s: &Shape) -> Option<RankPlacement> {
        if self.n_free < s.cores || self.mem < s.mem {
            return None;
        }
        let mut gpus = Vec::new();
        if s.gpu_units > 0 && s.gpu_units < GPU_UNITS {
            let g = self.gpus.iter().position(|&free| free >= s.gpu_units)?;
            gpus.push(g);
        } else if s.gpu_units >= GPU_UNITS {
            let whole = (s.gpu_units / GPU_UNITS) as usize;
            gpus.extend(
                self.gpus
                    .iter()
                    .enumerate()
                    .filter(|(_, &f)| f == GPU_UNITS)
                    .map(|(i, _)| i)
                    .take(whole),
            );
            if gpus.len() < whole {
                return None;
            }
        }
        let per_gpu = s.gpu_units.min(GPU_UNITS);
        let shares = gpus
            .into_iter()
            .map(|g| {
                self.gpus[g] -= per_gpu;
                GpuShare {
                    gpu: g,
                    device: self.gpu_ids.get(g).copied().unwrap_or(g),
                    fraction: f64::from(per_gpu) / f64::from(GPU_UNITS),
                }
            })
            .collect();
        let mut cores = Vec::with_capacity(s.cores);
        'words: for (w, word) in self.free.iter_mut().enumerate() {
            while *word != 0 {
                if cores.len() == s.cores {
                    break 'words;
                }
                let bit = word.trailing_zeros() as usize;
                *word &= !(1u64 << bit);
                cores.push(w * 64 + bit);
            }
        }
        self.n_free -= s.cores;
        self.mem -= s.mem;
        Some(RankPlacement {
            node,
            cores,
            gpus: shares,
            memory_bytes: s.mem,
        })
    }

    /// What is free here, as the index sees it.
    fn capacity(&self) -> Capacity {
        Capacity {
            cores: self.n_free,
            mem: self.mem,
            gpu_units: self.gpus.iter().copied().max().unwrap_or(0),
            whole_gpus: self.gpus.iter().filter(|&&g| g == GPU_UNITS).count(),
        }
    }

    fn release_rank(&mut self, r: &RankPlacement) {
        for &c in &r.cores {
            self.free[c / 64] |= 1u64 << (c % 64);
        }
        self.n_free += r.cores.len();
        for g in &r.gpus {
            let units = (g.fraction * f64::from(GPU_UNITS)).round() as u32;
            self.gpus[g.gpu] = (self.gpus[g.gpu] + units).min(GPU_UNITS);
        }
        self.mem += r.memory_bytes;
    }
}

/// The free slots of a pilot.
#[derive(Debug, Clone)]
pub struct SlotMap {
    nodes: Vec<NodeSlots>,
    fit: FitTree,
    free_cores: usize,
}

/// What `ranks` ranks of `s` need of one node. Exact for one rank; for
/// several, a necessary condition (fractional GPU shares may not pack).
fn need(s: &Shape, ranks: usize) -> Capacity {
    let fractional = s.gpu_units > 0 && s.gpu_units < GPU_UNITS;
    Capacity {
        cores: s.cores * ranks,
        mem: s.mem * ranks as u64,
        gpu_units: if fractional { s.gpu_units } else { 0 },
        whole_gpus: if s.gpu_units >= GPU_UNITS {
            (s.gpu_units / GPU_UNITS) as usize * ranks
        } else {
            0
        },
    }
}

impl SlotMap {
    /// All slots of `nodes` free.
    pub fn new(nodes: &[NodeSpec]) -> Self {
        let nodes: Vec<NodeSlots> = nodes.iter().map(NodeSlots::new).collect();
        let free_cores = nodes.iter().map(|n| n.n_free).sum();
        let fit = FitTree::new(nodes.iter().map(NodeSlots::capacity));
        Self {
            nodes,
            fit,
            free_cores,
        }
    }

    /// Free cores over all nodes.
    pub fn free_cores(&self) -> usize {
        self.free_cores
    }

    /// Places a task, or returns `None` when it does not fit now.
    pub fn try_place(&mut self, s: &Shape) -> Option<Placement> {
        if s.ranks * s.cores > self.free_cores {
            return None;
        }
        // All ranks on the first node that can hold them together.
        let together = need(s, s.ranks);
        let mut from = 0;
        while let Some(i) = self.fit.first_covering(from, &together) {
            if let Some(p) = self.place_ranks(s, Some(i)) {
                return Some(p);
            }
            from = i + 1;
        }
        if !s.span_nodes || s.ranks == 1 {
            return None;
        }
        // Spread: each rank on the first node that fits it.
        self.place_ranks(s, None)
    }

    /// The index learns node `i`'s free capacity.
    fn refresh(&mut self, i: usize) {
        self.fit.set(i, self.nodes[i].capacity());
    }

    /// Allocates rank by rank, all on `node` or each on the first node that
    /// fits it. Rolls back on failure.
    fn place_ranks(&mut self, s: &Shape, node: Option<usize>) -> Option<Placement> {
        let one = need(s, 1);
        let mut ranks: Vec<RankPlacement> = Vec::with_capacity(s.ranks);
        for _ in 0..s.ranks {
            let got = match node {
                Some(i) => self.nodes[i].alloc_rank(i, s),
                None => self
                    .fit
                    .first_covering(0, &one)
                    .and_then(|i| self.nodes[i].alloc_rank(i, s)),
            };
            match got {
                Some(p) => {
                    if node.is_none() {
                        self.refresh(p.node);
                    }
                    ranks.push(p);
                }
                None => {
                    for p in &ranks {
                        self.nodes[p.node].release_rank(p);
                        self.refresh(p.node);
                    }
                    return None;
                }
            }
        }
        if let Some(i) = node {
            self.refresh(i);
        }
        self.free_cores -= s.ranks * s.cores;
        Some(Placement { ranks })
    }

    /// Frees a placement made by this map.
    pub fn release(&mut self, p: &Placement) {
        for r in &p.ranks {
            self.nodes[r.node].release_rank(r);
            self.free_cores += r.cores.len();
            self.refresh(r.node);
        }
    }

    /// Why `s` can never fit in an empty pilot of `nodes`, or `None` when
    /// it can.
    pub fn never_fits(nodes: &[NodeSpec], s: &Shape) -> Option<String> {
        let mut empty = SlotMap::new(nodes);
        if empty.try_place(s).is_some() {
            return None;
        }
        let max_cores = nodes.iter().map(|n| n.cores).max().unwrap_or(0);
        let max_gpus = nodes.iter().map(|n| n.gpus).max().unwrap_or(0);
        let max_mem = nodes.iter().map(|n| n.memory_bytes).max().unwrap_or(0);
        let total_cores: usize = nodes.iter().map(|n| n.cores).sum();
        Some(if s.cores > max_cores {
            format!(
                "a rank needs {} cores, the largest node has {max_cores}",
                s.cores
            )
        } else if s.gpu_units > 0 && max_gpus == 0 {
            "a rank needs a GPU, the pilot has none".to_string()
        } else if s.gpu_units > GPU_UNITS * max_gpus as u32 {
            format!(
                "a rank needs {} GPUs, the largest node has {max_gpus}",
                f64::from(s.gpu_units) / f64::from(GPU_UNITS)
            )
        } else if s.mem > max_mem {
            format!(
                "a rank needs {} bytes of memory, the largest node has {max_mem}",
                s.mem
            )
        } else if s.ranks * s.cores > total_cores {
            format!(
                "{} ranks x {} cores = {} cores, the pilot has {total_cores}",
                s.ranks,
                s.cores,
                s.ranks * s.cores
            )
        } else if !s.span_nodes {
            "its ranks must share one node (threads), and no node can hold them all".to_string()
        } else {
            "its ranks' GPU or memory needs cannot be met together".to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize, cores: usize, gpus: usize) -> Vec<NodeSpec> {
        (0..n)
            .map(|i| NodeSpec {
                name: format!("n{i}"),
                cores,
                gpus,
                memory_bytes: 1 << 30,
                cpu_ids: (0..cores).collect(),
                gpu_ids: (0..gpus).collect(),
            })
            .collect()
    }

    fn shape(ranks: usize, cores: usize, gpus: f64, span: bool) -> Shape {
        Shape {
            ranks,
            cores,
            gpu_units: Shape::gpu_units(gpus),
            mem: 0,
            span_nodes: span,
        }
    }

    #[test]
    fn first_fit_keeps_ranks_together() {
        let mut m = SlotMap::new(&nodes(2, 4, 0));
        let a = m.try_place(&shape(1, 1, 0.0, true)).unwrap();
        assert_eq!(a.ranks[0].node, 0);
        // 4 ranks do not fit on node 0 (3 free) but do on node 1.
        let b = m.try_place(&shape(4, 1, 0.0, true)).unwrap();
        assert!(b.ranks.iter().all(|r| r.node == 1));
        // 3 ranks fill node 0.
        let c = m.try_place(&shape(3, 1, 0.0, false)).unwrap();
        assert_eq!(
            c.ranks.iter().map(|r| r.cores[0]).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(m.free_cores(), 0);
        assert!(m.try_place(&shape(1, 1, 0.0, true)).is_none());
        m.release(&b);
        m.release(&a);
        assert_eq!(m.free_cores(), 5);
        // Spanning: 2 ranks of 2 cores over nodes with 1 and 4 free.
        let d = m.try_place(&shape(3, 1, 0.0, true)).unwrap();
        assert_eq!(d.nodes(), vec![1]);
    }

    #[test]
    fn spans_nodes_only_when_allowed() {
        let mut m = SlotMap::new(&nodes(2, 1, 0));
        assert!(m.try_place(&shape(2, 1, 0.0, false)).is_none());
        let p = m.try_place(&shape(2, 1, 0.0, true)).unwrap();
        assert_eq!(p.nodes(), vec![0, 1]);
        assert!(SlotMap::never_fits(&nodes(2, 1, 0), &shape(2, 1, 0.0, false)).is_some());
        assert!(
            SlotMap::never_fits(&nodes(2, 1, 0), &shape(1, 2, 0.0, true))
                .unwrap()
                .contains("largest node has 1")
        );
    }

    #[test]
    fn fractional_gpus_share_devices() {
        let mut m = SlotMap::new(&nodes(1, 8, 2));
        let quarter = shape(1, 1, 0.25, true);
        let ps: Vec<Placement> = (0..8).map(|_| m.try_place(&quarter).unwrap()).collect();
        let gpus: Vec<usize> = ps.iter().map(|p| p.ranks[0].gpus[0].gpu).collect();
        assert_eq!(gpus, vec![0, 0, 0, 0, 1, 1, 1, 1]);
        assert!((ps[0].gpus() - 0.25).abs() < 1e-12);
        // Cores are left but GPUs are full.
        let mut m2 = SlotMap::new(&nodes(1, 8, 2));
        for _ in 0..8 {
            m2.try_place(&quarter).unwrap();
        }
        m.release(&ps[5]);
        let again = m.try_place(&shape(1, 0, 0.25, true));
        assert_eq!(again.unwrap().ranks[0].gpus[0].gpu, 1);
        // A whole GPU needs a free one.
        let mut m3 = SlotMap::new(&nodes(1, 4, 1));
        m3.try_place(&shape(1, 1, 0.5, true)).unwrap();
        assert!(m3.try_place(&shape(1, 1, 1.0, true)).is_none());
        assert!(m3.try_place(&shape(1, 1, 0.5, true)).is_some());
        assert!(m3.try_place(&shape(1, 1, 0.1, true)).is_none());
    }

    #[test]
    fn many_cores_bitset() {
        let mut m = SlotMap::new(&nodes(1, 130, 0));
        let p = m.try_place(&shape(1, 129, 0.0, true)).unwrap();
        assert_eq!(p.ranks[0].cores.len(), 129);
        assert_eq!(*p.ranks[0].cores.last().unwrap(), 128);
        let q = m.try_place(&shape(1, 1, 0.0, true)).unwrap();
        assert_eq!(q.ranks[0].cores, vec![129]);
        assert!(m.try_place(&shape(1, 1, 0.0, true)).is_none());
        m.release(&p);
        assert_eq!(m.free_cores(), 129);
    }
}
