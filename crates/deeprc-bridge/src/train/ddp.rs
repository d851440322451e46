//! Data parallelism over any [`Communicator`], in the spirit of PyTorch's
//! `DistributedDataParallel`.
//!
//! ```text
//!  rank 0 parameters --broadcast--> every rank            (at start)
//!  loss.backward() on each rank's shard of the batch
//!  gradients --pack--> few flat f32 buckets (+ the loss) --all-reduce(sum)--> / world --unpack--> .grad
//!  identical optimizer step on every rank
//! ```
//!
//! Parameters are taken from the [`VarStore`] sorted by name, so every rank
//! sees the same order whatever order the model created them in. Buckets
//! hold whole parameters up to [`DdpOptions::bucket_bytes`] (PyTorch's
//! default is 25 MiB): one all-reduce per bucket, not one per tensor. The
//! loss rides in the last bucket, so every rank learns the mean loss of the
//! step in the same collective and stops together on a non-finite one.
//!
//! The reduction is in rank order on every backend, so every rank computes
//! the same bits and the parameters stay identical; [`DataParallel::check`]
//! proves it by comparing a checksum of the parameters across ranks.
//!
//! Gradients are reduced after the backward pass, not overlapped with it:
//! tch 0.26 exposes no autograd hooks to start a bucket's reduction as soon
//! as its gradients are ready.

#![allow(unsafe_code)]

use crate::error::{BridgeError, Result};
use bytes::Bytes;
use deeprc_comm::{Communicator, CommunicatorExt, DType, ReduceOp};
use std::ops::Range;
use std::sync::Arc;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Options of [`DataParallel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdpOptions {
    /// Gradient bucket size in bytes (a parameter larger than this gets a
    /// bucket of its own). Default 25 MiB, as PyTorch's DDP.
    pub bucket_bytes: usize,
}

impl Default for DdpOptions {
    fn default() -> Self {
        Self {
            bucket_bytes: 25 << 20,
        }
    }
}

/// A trainable parameter: its name and the tensor shared with the model.
#[derive(Debug)]
pub(crate) struct Param {
    pub(crate) name: String,
    pub(crate) tensor: Tensor,
    /// Offset of its first element in its bucket.
    offset: usize,
    numel: usize,
}

/// The gradient and parameter exchange of one model over one
/// communicator.
#[derive(Debug)]
pub struct DataParallel {
    comm: Arc<dyn Communicator>,
    params: Vec<Param>,
    /// Parameter index ranges, one per bucket.
    buckets: Vec<Range<usize>>,
    /// Elements of each bucket.
    bucket_len: Vec<usize>,
    /// One flat CPU f32 tensor, as long as the largest bucket plus one (the
    /// loss slot); the all-reduce works on its memory in place.
    flat: Tensor,
    device: Device,
}

/// The flat buffer's memory as a slice.
fn flat_slice(flat: &mut Tensor, len: usize) -> &mut [f32] {
    debug_assert!(len <= flat.numel());
    // SAFETY: `flat` is a contiguous CPU float32 tensor of at least `len`
    // elements, created and owned by `DataParallel` and never shared, so
    // nothing else reads or writes its memory while the slice lives (the
    // slice borrows the tensor mutably).
    unsafe { std::slice::from_raw_parts_mut(flat.data_ptr() as *mut f32, len) }
}

impl DataParallel {
    /// Prepares the trainable variables of `vs` for data-parallel training
    /// on `comm`, and broadcasts rank 0's values to every rank.
    ///
    /// # Errors
    /// [`BridgeError::InvalidArgument`] if the store has no trainable
    /// variable or one that is not float32; a communicator error if a peer
    /// fails; [`BridgeError::Diverged`] if the ranks' models do not have the
    /// same parameters (names and shapes).
    pub fn new(vs: &VarStore, comm: Arc<dyn Communicator>, options: DdpOptions) -> Result<Self> {
        let trainable: Vec<Tensor> = vs.trainable_variables();
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        if named.is_empty() || named.len() != trainable.len() {
            return Err(BridgeError::invalid(
                "DataParallel::new",
                format!(
                    "the variable store has {} trainable variable(s), {} of them named",
                    trainable.len(),
                    named.len()
                ),
            ));
        }
        let device = named[0].1.device();
        let mut params = Vec::with_capacity(named.len());
        let mut buckets = Vec::new();
        let mut bucket_len = Vec::new();
        let cap = (options.bucket_bytes / 4).max(1);
        let (mut start, mut len) = (0usize, 0usize);
        for (i, (name, tensor)) in named.into_iter().enumerate() {
            if tensor.kind() != Kind::Float {
                return Err(BridgeError::invalid(
                    "DataParallel::new",
                    format!(
                        "parameter {name:?} is {:?}; only float32 is supported",
                        tensor.kind()
                    ),
                ));
            }
            let numel = tensor.numel();
            if len > 0 && len + numel > cap {
                buckets.push(start..i);
                bucket_len.push(len);
                (start, len) = (i, 0);
            }
            params.push(Param {
                name,
                tensor,
                offset: len,
                numel,
            });
            len += numel;
        }
        buckets.push(start..params.len());
        bucket_len.push(len);
        let largest = bucket_len.iter().copied().max().unwrap_or(0);
        let flat = Tensor::zeros([largest as i64 + 1], (Kind::Float, Device::Cpu));
        let mut ddp = Self {
            comm,
            params,
            buckets,
            bucket_len,
            flat,
            device,
        };
        ddp.define_gradients();
        ddp.check_same_layout()?;
        ddp.broadcast_parameters()?;
        Ok(ddp)
    }

    /// The communicator.
    pub fn comm(&self) -> &Arc<dyn Communicator> {
        &self.comm
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.comm.size()
    }

    /// The number of buckets (all-reduces per step).
    pub fn num_buckets(&self) -> usize {
        self.buckets.len()
    }

    /// The number of parameter elements.
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|p| p.numel).sum()
    }

    /// The parameters in their exchange order (sorted by name).
    pub fn parameters(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.params.iter().map(|p| (p.name.as_str(), &p.tensor))
    }

    pub(crate) fn params(&self) -> &[Param] {
        &self.params
    }

    /// A fingerprint of the names and shapes, equal on every rank of one
    /// model.
    pub fn layout_fingerprint(&self) -> u64 {
        let mut h = Fnv::new();
        for p in &self.params {
            h.bytes(p.name.as_bytes());
            for d in p.tensor.size() {
                h.bytes(&d.to_le_bytes());
            }
        }
        h.finish()
    }

    fn check_same_layout(&self) -> Result<()> {
        let mine = self.layout_fingerprint();
        let all = self.comm.all_gather_pod(&[mine])?;
        if all.iter().any(|v| v.first() != Some(&mine)) {
            return Err(BridgeError::Diverged {
                step: 0,
                checksums: format!(
                    "the ranks built different models (layout fingerprints {:x?})",
                    all.iter()
                        .map(|v| v.first().copied().unwrap_or(0))
                        .collect::<Vec<_>>()
                ),
            });
        }
        Ok(())
    }

    /// Packs the parameters (or their gradients, zero where undefined) of
    /// bucket `b` into the flat buffer.
    fn pack(&mut self, b: usize, grads: bool) {
        for p in &self.params[self.buckets[b].clone()] {
            let src = if grads {
                let g = p.tensor.grad();
                if !g.defined() {
                    let _ = self
                        .flat
                        .narrow(0, p.offset as i64, p.numel as i64)
                        .fill_(0.0);
                    continue;
                }
                g
            } else {
                p.tensor.detach()
            };
            let mut dst = self.flat.narrow(0, p.offset as i64, p.numel as i64);
            dst.copy_(&src.reshape([-1]).to_device(Device::Cpu));
        }
    }

    /// Copies bucket `b` of the flat buffer back into the parameters (or
    /// their gradients).
    fn unpack(&mut self, b: usize, grads: bool) {
        let _guard = tch::no_grad_guard();
        for p in &self.params[self.buckets[b].clone()] {
            let src = self
                .flat
                .narrow(0, p.offset as i64, p.numel as i64)
                .reshape(p.tensor.size())
                .to_device(self.device);
            let mut dst = if grads {
                // Defined for every parameter since `new` (see there).
                p.tensor.grad()
            } else {
                p.tensor.shallow_clone()
            };
            if !dst.defined() {
                continue;
            }
            dst.copy_(&src);
        }
    }

    /// Gives every parameter a (zero) gradient, so that a parameter the
    /// forward pass did not reach on one rank still takes part in the
    /// all-reduce and the optimizer steps it on every rank alike.
    fn define_gradients(&mut self) {
        let zero: Tensor = self
            .params
            .iter()
            .map(|p| p.tensor.sum(Kind::Float) * 0.0)
            .fold(Tensor::zeros([], (Kind::Float, self.device)), |a, b| a + b);
        zero.backward();
        for p in &mut self.params {
            p.tensor.zero_grad();
        }
    }

    /// Sends rank 0's parameters to every rank.
    ///
    /// # Errors
    /// A communicator error if a peer fails.
    pub fn broadcast_parameters(&mut self) -> Result<()> {
        if self.comm.size() == 1 {
            return Ok(());
        }
        for b in 0..self.buckets.len() {
            let n = self.bucket_len[b];
            let payload = if self.comm.rank() == 0 {
                self.pack(b, false);
                Bytes::copy_from_slice(bytemuck::cast_slice(flat_slice(&mut self.flat, n)))
            } else {
                Bytes::new()
            };
            let got = self.comm.broadcast(0, payload)?;
            if got.len() != n * 4 {
                return Err(BridgeError::Comm(deeprc_comm::CommError::MalformedFrame {
                    from: "rank 0".into(),
                    reason: format!(
                        "parameter bucket {b}: {} bytes, expected {}",
                        got.len(),
                        n * 4
                    ),
                }));
            }
            bytemuck::cast_slice_mut(flat_slice(&mut self.flat, n)).copy_from_slice(&got);
            self.unpack(b, false);
        }
        Ok(())
    }

    /// Averages every parameter's gradient over the ranks, in place, and
    /// returns the mean of the ranks' `local_loss`.
    ///
    /// # Errors
    /// A communicator error if a peer fails (within the communicator's
    /// deadline).
    pub fn all_reduce_gradients(&mut self, local_loss: f64) -> Result<f64> {
        let world = self.comm.size();
        let last = self.buckets.len() - 1;
        let mut mean_loss = local_loss;
        for b in 0..self.buckets.len() {
            self.pack(b, true);
            let n = self.bucket_len[b] + usize::from(b == last);
            if b == last {
                flat_slice(&mut self.flat, n)[n - 1] = local_loss as f32;
            }
            if world > 1 {
                let data = flat_slice(&mut self.flat, n);
                self.comm.all_reduce_raw(
                    bytemuck::cast_slice_mut(data),
                    DType::F32,
                    ReduceOp::Sum,
                )?;
                let scale = 1.0 / world as f32;
                for v in data.iter_mut() {
                    *v *= scale;
                }
            }
            if b == last {
                mean_loss = f64::from(flat_slice(&mut self.flat, n)[n - 1]);
                if world == 1 {
                    mean_loss = local_loss;
                }
            }
            self.unpack(b, true);
        }
        Ok(mean_loss)
    }

    /// A checksum of this rank's parameters (FNV-1a over their bits).
    pub fn checksum(&mut self) -> u64 {
        let mut h = Fnv::new();
        for b in 0..self.buckets.len() {
            self.pack(b, false);
            let n = self.bucket_len[b];
            h.bytes(bytemuck::cast_slice(flat_slice(&mut self.flat, n)));
        }
        h.finish()
    }

    /// Checks that every rank holds the same parameters, bit for bit.
    ///
    /// # Errors
    /// [`BridgeError::Diverged`] with every rank's checksum if they differ.
    pub fn check(&mut self, step: u64) -> Result<()> {
        let mine = self.checksum();
        let all = self.comm.all_gather_pod(&[mine])?;
        let sums: Vec<u64> = all
            .iter()
            .map(|v| v.first().copied().unwrap_or(0))
            .collect();
        if sums.iter().any(|&s| s != mine) {
            return Err(BridgeError::Diverged {
                step,
                checksums: format!("{sums:x?}"),
            });
        }
        Ok(())
    }
}

/// FNV-1a, 64 bits: a checksum that is the same on every platform.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}
