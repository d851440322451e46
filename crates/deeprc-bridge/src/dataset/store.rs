//! The samples a rank holds: its own ("base") samples that stayed, and the
//! samples that moved here from other ranks when the dataset was built.
//!
//! Balancing ([`Balance::Move`]) treats the samples of all ranks as one list
//! in rank order and gives rank `r` the `r`-th of `W` nearly equal blocks
//! (as `DistTable::repartition` does for rows), so only the surplus moves.
//! A moving sample travels rendered: its input and target values exactly as
//! the loader would copy them (normalised, converted), with its metadata, in
//! one variable all-to-all.

use super::{PartKind, SampleLayout, SampleMeta, Splits};
use crate::error::{BridgeError, Result};
use crate::layout::ArrowView;
use crate::normalize::Scaler;
use crate::sampler::ShardInfo;
use crate::source::{DataSource, Sharding};
use crate::split::SplitKind;
use bytes::{BufMut, Bytes, BytesMut};
use deeprc_comm::{Communicator, CommunicatorExt};
use std::sync::Arc;

/// Whether samples move between ranks at build time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Move surplus samples so that every rank holds `N / W` samples or
    /// one more (fails with [`BridgeError::EmptyPartition`] when there are
    /// fewer samples than ranks).
    #[default]
    Move,
    /// Keep every sample on the rank that has its rows; the sampler then
    /// pads to the largest or cuts to the smallest count, and a rank without
    /// samples is an error ([`BridgeError::EmptyPartition`]).
    Local,
}

/// One rank's own samples, as a dataset kind stores them.
pub(crate) trait Base: Send + Sync + 'static {
    /// Own samples on this rank.
    fn base_len(&self) -> usize;
    /// Writes own samples `items[i].1` at batch positions `items[i].0`.
    fn fill_base(
        &self,
        items: &[(usize, u32)],
        inputs: Option<&mut [u8]>,
        targets: Option<&mut [u8]>,
    );
    /// A view of consecutive own samples, or why not.
    fn view_base(&self, bases: &[u32], part: PartKind) -> std::result::Result<ArrowView, String>;
    /// Series, time and local row of an own sample.
    fn meta_base(&self, b: u32) -> (Option<Arc<str>>, Option<i64>, Option<usize>);
}

/// Samples that moved here, rendered.
#[derive(Debug, Default)]
struct Imported {
    ids: Vec<u64>,
    series: Vec<Option<Arc<str>>>,
    times: Vec<Option<i64>>,
    inputs: Vec<u8>,
    targets: Vec<u8>,
}

/// The local samples of one dataset: kept own samples, then imported ones.
pub(crate) struct Store<B> {
    pub(crate) base: B,
    kept: Vec<u32>,
    base_offset: u64,
    imported: Imported,
    pub(crate) info: ShardInfo,
    pub(crate) layout: SampleLayout,
}

impl<B: Base> Store<B> {
    /// Builds the train, validation and test stores from their bases (in
    /// `SplitKind::ALL` order) and wraps each in its dataset type; only the
    /// training split must hold samples somewhere.
    pub(crate) fn build_splits<D>(
        bases: impl IntoIterator<Item = B>,
        layout: &SampleLayout,
        source: &DataSource,
        balance: Balance,
        scaler: Scaler,
        wrap: impl Fn(Self) -> D,
    ) -> Result<Splits<D>> {
        let mut out = Vec::new();
        for (kind, base) in SplitKind::ALL.into_iter().zip(bases) {
            let store = Self::build(
                base,
                layout.clone(),
                source.comm.as_ref(),
                source.sharding,
                balance,
                kind != SplitKind::Train,
                kind.name(),
            )?;
            out.push(store.map(&wrap));
        }
        Splits::from_ordered(out, scaler)
    }

    /// Builds the store; collective on a partitioned source. `Ok(None)`
    /// when no rank has a sample and `allow_empty` (a validation or test
    /// split that is empty everywhere).
    pub(crate) fn build(
        base: B,
        layout: SampleLayout,
        comm: Option<&Arc<dyn Communicator>>,
        sharding: Sharding,
        balance: Balance,
        allow_empty: bool,
        what: &str,
    ) -> Result<Option<Self>> {
        let n = base.base_len();
        let (rank, world) = comm.map_or((0, 1), |c| (c.rank(), c.size()));
        let store = |base, layout, kept: Vec<u32>, base_offset, imported: Imported, counts| {
            let local = kept.len() + imported.ids.len();
            Store {
                base,
                kept,
                base_offset,
                imported,
                info: ShardInfo {
                    rank,
                    world,
                    sharding,
                    local,
                    counts,
                },
                layout,
            }
        };
        let comm = match (sharding, comm) {
            (Sharding::Partitioned, Some(c)) => c,
            _ => {
                if n == 0 {
                    return if allow_empty {
                        Ok(None)
                    } else {
                        Err(BridgeError::EmptyPartition {
                            rank,
                            detail: format!(": the {what} split has no samples"),
                        })
                    };
                }
                return Ok(Some(store(
                    base,
                    layout,
                    (0..n as u32).collect(),
                    0,
                    Imported::default(),
                    vec![n as u64; world],
                )));
            }
        };
        let counts: Vec<u64> = comm
            .all_gather_pod(&[n as u64])?
            .into_iter()
            .map(|v| v[0])
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return if allow_empty {
                Ok(None)
            } else {
                Err(BridgeError::EmptyPartition {
                    rank: 0,
                    detail: format!(
                        ": the {what} split has no samples on any of the {world} ranks"
                    ),
                })
            };
        }
        let offsets: Vec<u64> = counts
            .iter()
            .scan(0u64, |acc, &c| {
                let o = *acc;
                *acc += c;
                Some(o)
            })
            .collect();
        let base_offset = offsets[rank];
        match balance {
            Balance::Local => {
                if let Some(r) = counts.iter().position(|&c| c == 0) {
                    return Err(BridgeError::EmptyPartition {
                        rank: r,
                        detail: format!(
                            ": the {what} split has samples per rank {counts:?} and Balance::Local keeps them where they are"
                        ),
                    });
                }
                Ok(Some(store(
                    base,
                    layout,
                    (0..n as u32).collect(),
                    base_offset,
                    Imported::default(),
                    counts,
                )))
            }
            Balance::Move => {
                let w = world as u64;
                let targets: Vec<u64> = (0..w)
                    .map(|r| total / w + u64::from(r < total % w))
                    .collect();
                if let Some(r) = targets.iter().position(|&t| t == 0) {
                    return Err(BridgeError::EmptyPartition {
                        rank: r,
                        detail: format!(": the {what} split has {total} samples for {world} ranks"),
                    });
                }
                let tstart: Vec<u64> = targets
                    .iter()
                    .scan(0u64, |acc, &c| {
                        let o = *acc;
                        *acc += c;
                        Some(o)
                    })
                    .collect();
                // My own samples [own_lo, own_hi) in the global order.
                let (own_lo, own_hi) = (base_offset, base_offset + n as u64);
                let mut parts = Vec::with_capacity(world);
                let mut kept = Vec::new();
                for q in 0..world {
                    let lo = own_lo.max(tstart[q]);
                    let hi = own_hi.min(tstart[q] + targets[q]);
                    let range = if lo < hi {
                        (lo - own_lo) as u32..(hi - own_lo) as u32
                    } else {
                        0..0
                    };
                    if q == rank {
                        kept = range.collect();
                        parts.push(Bytes::new());
                    } else {
                        parts.push(render(&base, &layout, range, base_offset));
                    }
                }
                let received = comm.all_to_all_v(parts)?;
                let mut imported = Imported::default();
                for (q, payload) in received.iter().enumerate() {
                    if q != rank && !payload.is_empty() {
                        parse_into(payload, &layout, &mut imported).map_err(|e| {
                            BridgeError::Internal(format!("balancing: payload from rank {q}: {e}"))
                        })?;
                    }
                }
                let local = kept.len() + imported.ids.len();
                if local as u64 != targets[rank] {
                    return Err(BridgeError::Internal(format!(
                        "balancing gave rank {rank} {local} samples, expected {}",
                        targets[rank]
                    )));
                }
                Ok(Some(store(
                    base,
                    layout,
                    kept,
                    base_offset,
                    imported,
                    targets,
                )))
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.kept.len() + self.imported.ids.len()
    }

    pub(crate) fn meta(&self, index: u32) -> SampleMeta {
        let i = index as usize;
        if i < self.kept.len() {
            let b = self.kept[i];
            let (series, time, row) = self.base.meta_base(b);
            SampleMeta {
                id: self.base_offset + u64::from(b),
                series,
                time,
                row,
            }
        } else {
            let j = i - self.kept.len();
            SampleMeta {
                id: self.imported.ids[j],
                series: self.imported.series[j].clone(),
                time: self.imported.times[j],
                row: None,
            }
        }
    }

    pub(crate) fn fill(
        &self,
        samples: &[u32],
        mut inputs: Option<&mut [u8]>,
        mut targets: Option<&mut [u8]>,
    ) -> Result<()> {
        let (ib, tb) = (self.layout.inputs.bytes(), self.layout.targets.bytes());
        let n = samples.len();
        if inputs.as_ref().is_some_and(|b| b.len() < n * ib)
            || targets.as_ref().is_some_and(|b| b.len() < n * tb)
        {
            return Err(BridgeError::Internal("fill: buffer too small".into()));
        }
        let k = self.kept.len();
        let mut items = Vec::with_capacity(n);
        for (pos, &s) in samples.iter().enumerate() {
            let s = s as usize;
            if s < k {
                items.push((pos, self.kept[s]));
            } else {
                let j = s - k;
                if j >= self.imported.ids.len() {
                    return Err(BridgeError::invalid(
                        "fill",
                        format!("sample {s} of {}", self.len()),
                    ));
                }
                if let Some(out) = inputs.as_deref_mut() {
                    out[pos * ib..(pos + 1) * ib]
                        .copy_from_slice(&self.imported.inputs[j * ib..(j + 1) * ib]);
                }
                if let Some(out) = targets.as_deref_mut() {
                    out[pos * tb..(pos + 1) * tb]
                        .copy_from_slice(&self.imported.targets[j * tb..(j + 1) * tb]);
                }
            }
        }
        self.base.fill_base(&items, inputs, targets);
        Ok(())
    }

    pub(crate) fn view(
        &self,
        samples: &[u32],
        part: PartKind,
    ) -> std::result::Result<ArrowView, String> {
        let k = self.kept.len();
        let mut bases = Vec::with_capacity(samples.len());
        for &s in samples {
            let s = s as usize;
            if s >= k {
                return Err("a sample of the batch moved here from another rank (it has no Arrow memory here)".into());
            }
            bases.push(self.kept[s]);
        }
        self.base.view_base(&bases, part)
    }
}

/// Renders own samples `range` for another rank.
fn render<B: Base>(
    base: &B,
    layout: &SampleLayout,
    range: std::ops::Range<u32>,
    base_offset: u64,
) -> Bytes {
    let n = range.len();
    if n == 0 {
        return Bytes::new();
    }
    let (ib, tb) = (layout.inputs.bytes(), layout.targets.bytes());
    let mut inputs = vec![0u8; n * ib];
    let mut targets = vec![0u8; n * tb];
    let items: Vec<(usize, u32)> = range.clone().enumerate().collect();
    base.fill_base(&items, Some(&mut inputs), Some(&mut targets));
    let mut out = BytesMut::with_capacity(8 + n * (ib + tb + 24));
    out.put_u64_le(n as u64);
    for b in range.clone() {
        out.put_u64_le(base_offset + u64::from(b));
    }
    out.put_slice(&inputs);
    out.put_slice(&targets);
    for b in range {
        let (series, time, _) = base.meta_base(b);
        out.put_i64_le(time.unwrap_or(i64::MIN));
        match series {
            Some(s) => {
                out.put_u32_le(s.len() as u32);
                out.put_slice(s.as_bytes());
            }
            None => out.put_u32_le(u32::MAX),
        }
    }
    out.freeze()
}

fn parse_into(
    payload: &[u8],
    layout: &SampleLayout,
    into: &mut Imported,
) -> std::result::Result<(), String> {
    let (ib, tb) = (layout.inputs.bytes(), layout.targets.bytes());
    let mut p = payload;
    let mut take = |k: usize| -> std::result::Result<&[u8], String> {
        if p.len() < k {
            return Err(format!("truncated: need {k} more bytes, have {}", p.len()));
        }
        let (a, b) = p.split_at(k);
        p = b;
        Ok(a)
    };
    let n = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")) as usize;
    for _ in 0..n {
        into.ids
            .push(u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")));
    }
    into.inputs.extend_from_slice(take(n * ib)?);
    into.targets.extend_from_slice(take(n * tb)?);
    for _ in 0..n {
        let t = i64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        into.times.push((t != i64::MIN).then_some(t));
        let len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
        if len == u32::MAX {
            into.series.push(None);
        } else {
            let s = std::str::from_utf8(take(len as usize)?).map_err(|e| e.to_string())?;
            into.series.push(Some(Arc::from(s)));
        }
    }
    Ok(())
}

/// Implements [`Dataset`](super::Dataset) for a newtype over `Store<B>`
/// (field `store`).
macro_rules! impl_dataset {
    ($t:ty) => {
        impl super::sealed::Sealed for $t {}
        impl super::Dataset for $t {
            fn len(&self) -> usize {
                self.store.len()
            }
            fn layout(&self) -> &super::SampleLayout {
                &self.store.layout
            }
            fn shard_info(&self) -> &crate::sampler::ShardInfo {
                &self.store.info
            }
            fn meta(&self, index: u32) -> super::SampleMeta {
                self.store.meta(index)
            }
            fn fill(
                &self,
                samples: &[u32],
                inputs: Option<&mut [u8]>,
                targets: Option<&mut [u8]>,
            ) -> crate::error::Result<()> {
                self.store.fill(samples, inputs, targets)
            }
            fn view(
                &self,
                samples: &[u32],
                part: super::PartKind,
            ) -> std::result::Result<crate::layout::ArrowView, String> {
                self.store.view(samples, part)
            }
        }
    };
}
pub(crate) use impl_dataset;

/// On a partitioned source, turns one rank's failure into a failure of
/// every rank (the failing rank returns its own error, the others
/// [`BridgeError::PeerFailed`]), so no rank waits in a collective for a
/// rank that has given up. Collective.
pub(crate) fn agree<T>(comm: Option<&dyn Communicator>, local: Result<T>) -> Result<T> {
    let Some(comm) = comm else { return local };
    let flags = comm.all_gather_pod(&[u8::from(local.is_err())])?;
    match local {
        Err(e) => Err(e),
        Ok(v) => match flags.iter().position(|f| f.first() == Some(&1)) {
            Some(rank) => Err(BridgeError::PeerFailed { rank }),
            None => Ok(v),
        },
    }
}
