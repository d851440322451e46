//! Sharding and shuffling: every sample exactly once per epoch across the
//! ranks, the same number of batches on every rank, determinism per seed.

use super::common::{launch, rows};
use deeprc_bridge::{
    Balance, DType, Dataset, Loader, LoaderOptions, RowSpec, SamplerOptions, ShardPolicy,
    WindowSpec,
};
use std::collections::BTreeSet;

/// Uneven partitions (one rank empty for 3 and 4 ranks): (lo, hi) per rank.
fn uneven(world: usize) -> Vec<(i64, i64)> {
    let sizes: &[i64] = match world {
        1 => &[53],
        2 => &[70, 3],
        3 => &[0, 41, 9],
        _ => &[37, 0, 5, 81],
    };
    let mut lo = 0;
    sizes
        .iter()
        .map(|&s| {
            let r = (lo, lo + s);
            lo += s;
            r
        })
        .collect()
}

/// Per rank and epoch: (batches, ids of valid samples, samples loaded).
type Seen = Vec<(usize, Vec<i64>, usize)>;

fn check(world: usize, total: i64, policy: ShardPolicy, out: &[Seen], what: &str) {
    for e in 0..out[0].len() {
        let batches: BTreeSet<usize> = out.iter().map(|r| r[e].0).collect();
        assert_eq!(
            batches.len(),
            1,
            "{what}: ranks ran different numbers of batches: {batches:?}"
        );
        let loaded: BTreeSet<usize> = out.iter().map(|r| r[e].2).collect();
        assert_eq!(
            loaded.len(),
            1,
            "{what}: ranks loaded different numbers of samples: {loaded:?}"
        );
        let mut ids: Vec<i64> = out.iter().flat_map(|r| r[e].1.iter().copied()).collect();
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(
            ids.len(),
            n,
            "{what}: a sample came twice in epoch {e} (world {world})"
        );
        match policy {
            ShardPolicy::Pad => {
                assert_eq!(
                    ids,
                    (0..total).collect::<Vec<_>>(),
                    "{what}: epoch {e} world {world}"
                );
                assert_eq!(*loaded.first().unwrap(), (total as usize).div_ceil(world));
            }
            ShardPolicy::DropLast => {
                assert_eq!(
                    n,
                    world * (total as usize / world),
                    "{what}: epoch {e} world {world}"
                );
            }
        }
    }
}

#[test]
fn rows_partitioned_every_sample_once_on_1_to_4_ranks() {
    for world in 1..=4 {
        let parts = uneven(world);
        let total = parts.last().unwrap().1;
        for policy in [ShardPolicy::Pad, ShardPolicy::DropLast] {
            let out = launch(world, |comm| {
                let (lo, hi) = parts[comm.rank()];
                let src = rows(lo, hi, 1000, 7).partitioned(comm);
                let ds = RowSpec::new(&["x"], &["id"])
                    .dtypes(DType::F32, DType::I64)
                    .build(src)?
                    .train;
                let sampler = SamplerOptions {
                    policy,
                    ..SamplerOptions::shuffled(4, 11)
                };
                let loader = Loader::new(ds, sampler, LoaderOptions::default())?;
                let mut seen = Vec::new();
                for e in 0..3 {
                    let (mut nb, mut ids, mut loaded) = (0, Vec::new(), 0);
                    for b in loader.epoch(e) {
                        let b = b?;
                        let x = b.inputs().to_vec::<f32>()?;
                        let y = b.targets().to_vec::<i64>()?;
                        for (i, &s) in b.samples().iter().enumerate() {
                            // The values are the sample's own row, wherever it came from.
                            assert_eq!(x[i], y[i] as f32 / 2.0);
                            assert_eq!(loader.dataset().meta(s).id, y[i] as u64);
                        }
                        ids.extend_from_slice(&y[..b.valid()]);
                        nb += 1;
                        loaded += b.len();
                    }
                    seen.push((nb, ids, loaded));
                }
                Ok(seen)
            })
            .unwrap();
            check(world, total, policy, &out, "rows");
        }
    }
}

#[test]
fn rows_replicated_split_like_distributed_sampler() {
    for world in 1..=4 {
        let total = 23;
        let out = launch(world, |comm| {
            let src = rows(0, total, 1000, 5).replicated(comm);
            let ds = RowSpec::new(&["x"], &["id"])
                .dtypes(DType::F32, DType::I64)
                .build(src)?
                .train;
            let loader = Loader::new(ds, SamplerOptions::shuffled(3, 5), LoaderOptions::default())?;
            let mut seen = Vec::new();
            for e in 0..2 {
                let (mut nb, mut ids, mut loaded) = (0, Vec::new(), 0);
                for b in loader.epoch(e) {
                    let b = b?;
                    ids.extend_from_slice(&b.targets().to_vec::<i64>()?[..b.valid()]);
                    nb += 1;
                    loaded += b.len();
                }
                seen.push((nb, ids, loaded));
            }
            Ok(seen)
        })
        .unwrap();
        check(world, total, ShardPolicy::Pad, &out, "replicated rows");
    }
}

#[test]
fn windows_partitioned_every_window_once_on_1_to_4_ranks() {
    // Series of 25 rows ("s0" = ids 0..25, ...); windows of 4 + 2 rows,
    // stride 3: starts 0, 3, ..., 18 in each series (7 per series).
    let (len, l, h, stride) = (25i64, 4usize, 2usize, 3usize);
    for world in 1..=4 {
        // Whole series per rank, uneven: rank r holds series counts[r].
        let counts: Vec<i64> = [3i64, 0, 1, 2][..world].to_vec();
        let counts = if world == 1 { vec![3] } else { counts };
        let total_series: i64 = counts.iter().sum();
        let expected: Vec<i64> = (0..total_series)
            .flat_map(|s| {
                (0..=(len as usize - l - h))
                    .step_by(stride)
                    .map(move |o| s * len + o as i64)
            })
            .collect();
        let out = launch(world, |comm| {
            let first: i64 = counts[..comm.rank()].iter().sum();
            let src =
                rows(first * len, (first + counts[comm.rank()]) * len, len, 10).partitioned(comm);
            let ds = WindowSpec::new(l, h, &["x"], &["x"])
                .stride(stride)
                .series("g")
                .build(src)?
                .train;
            let loader = Loader::new(ds, SamplerOptions::shuffled(5, 3), LoaderOptions::default())?;
            let mut seen = Vec::new();
            for e in 0..2 {
                let (mut nb, mut starts, mut loaded) = (0, Vec::new(), 0);
                for b in loader.epoch(e) {
                    let b = b?;
                    let x = b.inputs().to_vec::<f32>()?;
                    let y = b.targets().to_vec::<f32>()?;
                    for i in 0..b.len() {
                        let id0 = (x[i * l] * 2.0) as i64;
                        for k in 0..l {
                            assert_eq!(x[i * l + k], (id0 + k as i64) as f32 / 2.0);
                        }
                        for k in 0..h {
                            assert_eq!(y[i * h + k], (id0 + (l + k) as i64) as f32 / 2.0);
                        }
                        if i < b.valid() {
                            starts.push(id0);
                        }
                    }
                    nb += 1;
                    loaded += b.len();
                }
                seen.push((nb, starts, loaded));
            }
            Ok(seen)
        })
        .unwrap();
        for e in 0..2 {
            let mut all: Vec<i64> = out.iter().flat_map(|r| r[e].1.iter().copied()).collect();
            all.sort();
            assert_eq!(all, expected, "windows, world {world}, epoch {e}");
            let nb: BTreeSet<usize> = out.iter().map(|r| r[e].0).collect();
            assert_eq!(nb.len(), 1, "windows: batches per rank differ: {nb:?}");
        }
    }
}

#[test]
fn local_balance_pads_to_the_largest_rank() {
    let out = launch(2, |comm| {
        let (lo, hi) = if comm.rank() == 0 { (0, 10) } else { (10, 13) };
        let src = rows(lo, hi, 1000, 4).partitioned(comm);
        let ds = RowSpec::new(&["x"], &["id"])
            .dtypes(DType::F32, DType::I64)
            .balance(Balance::Local)
            .build(src)?
            .train;
        assert_eq!(ds.len(), (hi - lo) as usize);
        let loader = Loader::new(ds, SamplerOptions::shuffled(4, 1), LoaderOptions::default())?;
        let mut ids = Vec::new();
        let mut loaded = 0;
        for b in loader.epoch(0) {
            let b = b?;
            ids.extend_from_slice(&b.targets().to_vec::<i64>()?[..b.valid()]);
            loaded += b.len();
        }
        Ok((ids, loaded, loader.batches_per_epoch()))
    })
    .unwrap();
    assert_eq!(out[0].1, 10);
    assert_eq!(out[1].1, 10, "rank 1 pads its 3 samples to 10");
    assert_eq!(out[0].2, out[1].2);
    let mut all: Vec<i64> = out.iter().flat_map(|o| o.0.clone()).collect();
    all.sort();
    assert_eq!(all, (0..13).collect::<Vec<_>>());
}

#[test]
fn same_seed_same_batches_whatever_the_workers() {
    let ds = std::sync::Arc::new(
        WindowSpec::new(6, 2, &["x"], &["x"])
            .series("g")
            .build(rows(0, 500, 50, 33))
            .unwrap()
            .train,
    );
    let run = |seed: u64,
               epoch: u64,
               workers: usize,
               prefetch: usize|
     -> Vec<(Vec<u32>, Vec<f32>, Vec<f32>)> {
        let opts = LoaderOptions {
            workers,
            prefetch,
            ..Default::default()
        };
        let loader = Loader::new(
            std::sync::Arc::clone(&ds),
            SamplerOptions::shuffled(16, seed),
            opts,
        )
        .unwrap();
        loader
            .epoch(epoch)
            .map(|b| {
                let b = b.unwrap();
                (
                    b.samples().to_vec(),
                    b.inputs().to_vec().unwrap(),
                    b.targets().to_vec().unwrap(),
                )
            })
            .collect()
    };
    let a = run(7, 1, 0, 1);
    assert_eq!(a, run(7, 1, 3, 8));
    assert_eq!(a, run(7, 1, 1, 2));
    assert_ne!(a, run(8, 1, 2, 4), "another seed, another order");
    assert_ne!(a, run(7, 2, 2, 4), "another epoch, another order");
    let mut s: Vec<u32> = a.iter().flat_map(|b| b.0.clone()).collect();
    s.sort();
    assert_eq!(s, (0..ds.len() as u32).collect::<Vec<_>>());
}
