//! The index that finds the first node where a rank may fit in about
//! `O(log nodes)` instead of a scan over every node: a segment tree whose
//! every entry holds, over its range of nodes, the most free cores, the
//! most free memory, the most free units on one GPU and the most entirely
//! free GPUs of any one node.
//!
//! A leaf is exact (its node fits a rank iff the leaf's figures cover the
//! rank's needs); an inner entry can only rule a range out (its maxima may
//! come from different nodes), so a search descends only into ranges that
//! may fit and returns the leftmost leaf that does: the same node the
//! linear first fit chose. Benchmark: `benches/src/bin/sched_sim.rs`
//! (docs/benchmarks.md, "Scheduler at scale").

/// A node's (or a range's most) free capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Capacity {
    pub(super) cores: usize,
    pub(super) mem: u64,
    /// Free units on the GPU with the most left.
    pub(super) gpu_units: u32,
    /// GPUs with every unit free.
    pub(super) whole_gpus: usize,
}

impl Capacity {
    fn max(self, o: Capacity) -> Capacity {
        Capacity {
            cores: self.cores.max(o.cores),
            mem: self.mem.max(o.mem),
            gpu_units: self.gpu_units.max(o.gpu_units),
            whole_gpus: self.whole_gpus.max(o.whole_gpus),
        }
    }

    /// Whether this covers `need` in every dimension.
    fn covers(&self, need: &Capacity) -> bool {
        self.cores >= need.cores
            && self.mem >= need.mem
            && self.gpu_units >= need.gpu_units
            && self.whole_gpus >= need.whole_gpus
    }
}

/// The segment tree over `len` nodes (leaves padded to a power of two with
/// zero capacity).
#[derive(Debug, Clone)]
pub(super) struct FitTree {
    len: usize,
    leaves: usize,
    /// Entry 1 is the root; entry `i` covers entries `2i` and `2i + 1`;
    /// leaves start at `leaves`.
    max: Vec<Capacity>,
}

impl FitTree {
    pub(super) fn new(nodes: impl ExactSizeIterator<Item = Capacity>) -> Self {
        let len = nodes.len();
        let leaves = len.next_power_of_two().max(1);
        let mut max = vec![Capacity::default(); 2 * leaves];
        for (i, c) in nodes.enumerate() {
            max[leaves + i] = c;
        }
        for i in (1..leaves).rev() {
            max[i] = max[2 * i].max(max[2 * i + 1]);
        }
        Self { len, leaves, max }
    }

    /// Node `i` now has `c` free.
    pub(super) fn set(&mut self, i: usize, c: Capacity) {
        let mut k = self.leaves + i;
        self.max[k] = c;
        while k > 1 {
            k /= 2;
            let m = self.max[2 * k].max(self.max[2 * k + 1]);
            if self.max[k] == m {
                break;
            }
            self.max[k] = m;
        }
    }

    /// The first node at or after `from` whose free capacity covers `need`.
    pub(super) fn first_covering(&self, from: usize, need: &Capacity) -> Option<usize> {
        if from >= self.len {
            return None;
        }
        self.search(1, 0, self.leaves, from, need)
    }

    fn search(
        &self,
        k: usize,
        lo: usize,
        hi: usize,
        from: usize,
        need: &Capacity,
    ) -> Option<usize> {
        if hi <= from || lo >= self.len || !self.max[k].covers(need) {
            return None;
        }
        if hi - lo == 1 {
            return Some(lo);
        }
        let mid = (lo + hi) / 2;
        self.search(2 * k, lo, mid, from, need)
            .or_else(|| self.search(2 * k + 1, mid, hi, from, need))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(cores: usize, gpu_units: u32) -> Capacity {
        Capacity {
            cores,
            mem: 100,
            gpu_units,
            whole_gpus: 0,
        }
    }

    /// The tree's answer is the linear scan's, after any sequence of updates.
    #[test]
    fn finds_what_a_linear_scan_finds() {
        let mut state: Vec<Capacity> = (0..37).map(|i| cap(i % 5, (i as u32 * 7) % 11)).collect();
        let mut tree = FitTree::new(state.iter().copied());
        let mut x = 12345u64;
        for step in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (x >> 33) as usize % state.len();
            state[i] = cap((x >> 20) as usize % 6, (x >> 40) as u32 % 12);
            tree.set(i, state[i]);
            let need = cap((x >> 10) as usize % 6, (x >> 50) as u32 % 12);
            let from = (x >> 5) as usize % 40;
            let linear = (from..state.len()).find(|&j| state[j].covers(&need));
            assert_eq!(tree.first_covering(from, &need), linear, "step {step}");
        }
    }

    #[test]
    fn empty_and_single() {
        let t = FitTree::new(std::iter::empty());
        assert_eq!(t.first_covering(0, &cap(0, 0)), None);
        let mut t = FitTree::new([cap(2, 0)].into_iter());
        assert_eq!(t.first_covering(0, &cap(2, 0)), Some(0));
        assert_eq!(t.first_covering(1, &cap(0, 0)), None);
        t.set(0, cap(1, 0));
        assert_eq!(t.first_covering(0, &cap(2, 0)), None);
    }
}
