//! Which samples each rank loads in an epoch, in which order.
//!
//! Like PyTorch's `DistributedSampler` with `set_epoch`: the order depends
//! only on the seed and the epoch, each rank gets distinct samples, and every
//! rank gets the same number, so that every rank runs the same number of
//! steps (a collective in a step never waits for a rank that has finished):
//!
//! - [`Sharding::Replicated`] (every rank has all samples): one global
//!   permutation of the `N` samples, padded by repeating its start to a
//!   multiple of the world size (or cut to one with [`ShardPolicy::DropLast`]);
//!   rank `r` takes positions `r, r + W, r + 2W, ...`, exactly as
//!   `DistributedSampler`.
//! - [`Sharding::Partitioned`] (each rank has its own samples, balanced at
//!   build time to `N / W` or one more): each rank permutes its own samples
//!   and pads by repeating them up to the largest count (or cuts to the
//!   smallest with [`ShardPolicy::DropLast`]).
//!
//! Padding repeats samples; each batch says how many of its samples, at its
//! start, are not repeats ([`Batch::valid`](crate::Batch::valid)).
//!
//! The permutation is a Fisher-Yates shuffle driven by SplitMix64, so the
//! order for a seed is fixed forever, independent of any crate version.

use crate::error::{BridgeError, Result};
use crate::source::Sharding;

/// How the per-rank counts are made equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShardPolicy {
    /// Repeat samples so every rank gets the largest count (the
    /// `DistributedSampler` default).
    #[default]
    Pad,
    /// Leave out samples so every rank gets the smallest count
    /// (`DistributedSampler(drop_last=True)`).
    DropLast,
}

/// How a dataset's samples are spread over the ranks (from the dataset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// This rank.
    pub rank: usize,
    /// The number of ranks.
    pub world: usize,
    /// How the rows relate.
    pub sharding: Sharding,
    /// Samples held by this rank.
    pub local: usize,
    /// Samples held by each rank (for replicated sources, every entry is
    /// the global count).
    pub counts: Vec<u64>,
}

impl ShardInfo {
    /// The number of distinct samples over all ranks.
    pub fn global(&self) -> u64 {
        match self.sharding {
            Sharding::Partitioned => self.counts.iter().sum(),
            _ => self.local as u64,
        }
    }

    /// Samples every rank loads per epoch under `policy`.
    pub fn per_rank(&self, policy: ShardPolicy) -> usize {
        let w = self.world.max(1);
        match self.sharding {
            Sharding::Partitioned => {
                let it = self.counts.iter().map(|&c| c as usize);
                match policy {
                    ShardPolicy::Pad => it.max().unwrap_or(0),
                    ShardPolicy::DropLast => it.min().unwrap_or(0),
                }
            }
            _ => match policy {
                ShardPolicy::Pad => self.local.div_ceil(w),
                ShardPolicy::DropLast => self.local / w,
            },
        }
    }
}

/// The sampler's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplerOptions {
    /// A new order every epoch (from `seed` and the epoch), or the stored
    /// order.
    pub shuffle: bool,
    /// The seed of the shuffle (the same on every rank).
    pub seed: u64,
    /// Samples per batch.
    pub batch_size: usize,
    /// How per-rank counts are made equal.
    pub policy: ShardPolicy,
    /// Leave out the last batch when it is incomplete (the `DataLoader`'s
    /// `drop_last`).
    pub drop_incomplete: bool,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            shuffle: true,
            seed: 0,
            batch_size: 32,
            policy: ShardPolicy::Pad,
            drop_incomplete: false,
        }
    }
}

impl SamplerOptions {
    /// Sequential (evaluation) order, no dropped batch.
    pub fn sequential(batch_size: usize) -> Self {
        SamplerOptions {
            shuffle: false,
            batch_size,
            ..Default::default()
        }
    }

    /// Shuffled with `seed`.
    pub fn shuffled(batch_size: usize, seed: u64) -> Self {
        SamplerOptions {
            shuffle: true,
            seed,
            batch_size,
            ..Default::default()
        }
    }
}

/// The samples of one epoch on this rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochPlan {
    /// Local sample indices, in loading order.
    pub samples: Vec<u32>,
    /// The first `valid` entries are distinct samples; the rest repeat
    /// earlier ones (padding).
    pub valid: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Batches in the epoch (the same on every rank).
    pub batches: usize,
}

impl EpochPlan {
    /// The positions in `samples` of batch `k`.
    pub fn batch_range(&self, k: usize) -> std::ops::Range<usize> {
        let lo = k * self.batch_size;
        lo..(lo + self.batch_size).min(self.samples.len())
    }
}

/// Samples of each epoch on this rank.
#[derive(Debug, Clone)]
pub struct Sampler {
    info: ShardInfo,
    options: SamplerOptions,
    per_rank: usize,
}

impl Sampler {
    /// A sampler over a dataset's samples.
    ///
    /// # Errors
    /// [`BridgeError::InvalidArgument`] for a zero batch size;
    /// [`BridgeError::EmptyPartition`] when the ranks would load nothing.
    pub fn new(info: ShardInfo, options: SamplerOptions) -> Result<Self> {
        if options.batch_size == 0 {
            return Err(BridgeError::invalid(
                "SamplerOptions::batch_size",
                "must be at least 1",
            ));
        }
        let per_rank = info.per_rank(options.policy);
        let some_rank_empty = info.sharding == Sharding::Partitioned && info.counts.contains(&0);
        if per_rank == 0 || some_rank_empty {
            let rank = match info.sharding {
                Sharding::Partitioned => info.counts.iter().position(|&c| c == 0).unwrap_or(0),
                _ => info.local.min(info.world.saturating_sub(1)),
            };
            return Err(BridgeError::EmptyPartition {
                rank,
                detail: format!(
                    " under {:?}: samples per rank {:?}, {} ranks",
                    options.policy, info.counts, info.world
                ),
            });
        }
        Ok(Sampler {
            info,
            options,
            per_rank,
        })
    }

    /// The options.
    pub fn options(&self) -> &SamplerOptions {
        &self.options
    }

    /// The shard information.
    pub fn info(&self) -> &ShardInfo {
        &self.info
    }

    /// Samples this rank loads per epoch (padding included).
    pub fn samples_per_epoch(&self) -> usize {
        let n = self.per_rank;
        if self.options.drop_incomplete {
            n - n % self.options.batch_size
        } else {
            n
        }
    }

    /// Batches per epoch (the same on every rank).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.per_rank, self.options.batch_size);
        if self.options.drop_incomplete {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The plan of epoch `epoch` on this rank.
    pub fn epoch(&self, epoch: u64) -> EpochPlan {
        let o = &self.options;
        let (mut samples, valid) = match self.info.sharding {
            Sharding::Partitioned => {
                let n = self.info.local;
                let mut order: Vec<u32> = (0..n as u32).collect();
                if o.shuffle {
                    shuffle(
                        &mut order,
                        mix(&[o.seed, epoch, self.info.rank as u64, 0x5eed]),
                    );
                }
                let valid = n.min(self.per_rank);
                let mut s: Vec<u32> = order.iter().copied().cycle().take(self.per_rank).collect();
                s.truncate(self.per_rank);
                (s, valid)
            }
            _ => {
                let n = self.info.local;
                let w = self.info.world.max(1);
                let r = self.info.rank;
                let mut order: Vec<u32> = (0..n as u32).collect();
                if o.shuffle {
                    shuffle(&mut order, mix(&[o.seed, epoch, 0x5eed]));
                }
                let total = self.per_rank * w;
                let s: Vec<u32> = (0..self.per_rank).map(|k| order[(r + k * w) % n]).collect();
                let valid = (0..self.per_rank)
                    .take_while(|k| r + k * w < n.min(total))
                    .count();
                (s, valid)
            }
        };
        let batches = self.batches_per_epoch();
        samples.truncate(self.samples_per_epoch());
        EpochPlan {
            valid: valid.min(samples.len()),
            samples,
            batch_size: o.batch_size,
            batches,
        }
    }
}

/// SplitMix64: a tiny, well-mixed generator with a fixed output forever.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32
    /// for n < 2^32).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// One seed from several words.
pub(crate) fn mix(words: &[u64]) -> u64 {
    let mut g = SplitMix64::new(0x243F_6A88_85A3_08D3);
    let mut acc = 0u64;
    for &w in words {
        g.0 ^= w;
        acc = acc.rotate_left(17) ^ g.next_u64();
    }
    acc
}

/// Fisher-Yates shuffle.
pub(crate) fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut g = SplitMix64::new(seed);
    for i in (1..v.len()).rev() {
        let j = g.below(i + 1);
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(sharding: Sharding, rank: usize, counts: &[u64]) -> ShardInfo {
        ShardInfo {
            rank,
            world: counts.len(),
            sharding,
            local: counts[rank] as usize,
            counts: counts.to_vec(),
        }
    }

    #[test]
    fn replicated_matches_distributed_sampler() {
        // N = 10, W = 4: padded to 12 by repeating the start; rank r takes r, r+4, r+8.
        let mut seen = [0; 10];
        for r in 0..4 {
            let s = Sampler::new(
                info(Sharding::Replicated, r, &[10; 4]),
                SamplerOptions::sequential(2),
            )
            .unwrap();
            let p = s.epoch(0);
            assert_eq!(p.samples.len(), 3);
            assert_eq!(p.batches, 2);
            assert_eq!(
                p.samples,
                (0..3)
                    .map(|k| ((r + 4 * k) % 10) as u32)
                    .collect::<Vec<_>>()
            );
            assert_eq!(p.valid, if r < 2 { 3 } else { 2 });
            for &i in &p.samples[..p.valid] {
                seen[i as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
    }

    #[test]
    fn partitioned_pads_and_drops() {
        let counts = [3u64, 2, 3];
        for policy in [ShardPolicy::Pad, ShardPolicy::DropLast] {
            for r in 0..3 {
                let o = SamplerOptions {
                    policy,
                    ..SamplerOptions::shuffled(2, 7)
                };
                let p = Sampler::new(info(Sharding::Partitioned, r, &counts), o)
                    .unwrap()
                    .epoch(3);
                let want = if policy == ShardPolicy::Pad { 3 } else { 2 };
                assert_eq!(p.samples.len(), want);
                assert_eq!(p.batches, 2.min(want.div_ceil(2)));
                let mut distinct = p.samples[..p.valid].to_vec();
                distinct.sort();
                distinct.dedup();
                assert_eq!(distinct.len(), p.valid);
            }
        }
    }

    #[test]
    fn deterministic_per_seed_and_epoch() {
        let i = info(Sharding::Replicated, 0, &[1000]);
        let s = Sampler::new(i, SamplerOptions::shuffled(10, 42)).unwrap();
        assert_eq!(s.epoch(1), s.epoch(1));
        assert_ne!(s.epoch(1).samples, s.epoch(2).samples);
        let mut sorted = s.epoch(5).samples;
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
    }

    #[test]
    fn empty_ranks_are_errors() {
        let e = Sampler::new(
            info(Sharding::Partitioned, 0, &[3, 0, 2]),
            SamplerOptions {
                policy: ShardPolicy::DropLast,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(e, BridgeError::EmptyPartition { rank: 1, .. }),
            "{e}"
        );
        // Padding cannot repeat samples a rank does not have.
        let e = Sampler::new(
            info(Sharding::Partitioned, 2, &[3, 0, 2]),
            SamplerOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(e, BridgeError::EmptyPartition { rank: 1, .. }),
            "{e}"
        );
        assert!(Sampler::new(
            info(Sharding::Replicated, 2, &[1, 1, 1]),
            SamplerOptions::default()
        )
        .is_ok());
    }
}
