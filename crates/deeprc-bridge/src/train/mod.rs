//! Data-parallel training of `tch` models over any communicator (feature
//! `tch`).
//!
//! ```text
//!   DistributedTrainer::new(&vs, comm, optimizer, lr)   rank 0's parameters broadcast
//!   for batch in loader.epoch_from(pos.epoch, pos.batch):
//!       loss = model(batch)                              each rank its own shard
//!       trainer.step(&loss)?                             backward, bucketed all-reduce
//!                                                        (mean gradients and mean loss),
//!                                                        the same optimizer step everywhere
//!   trainer.save(dir, position)? / trainer.load(dir)?   parameters, optimizer, position
//! ```
//!
//! With the same global batch, training on `n` ranks with `B/n` samples
//! each gives the parameters of training on one rank with all `B`
//! (within floating-point rounding): the mean of the ranks' mean gradients
//! is the mean gradient of the whole batch. The tests check that on 1, 2
//! and 4 thread ranks and tcp processes.
//!
//! ```
//! use deeprc_bridge::train::{DistributedTrainer, OptimizerKind};
//! use deeprc_bridge::tch::tch_crate::{nn, nn::Module, Device, Kind, Reduction, Tensor};
//! use deeprc_comm::local;
//! use std::sync::Arc;
//!
//! let losses = local::launch(2, |comm| {
//!     let vs = nn::VarStore::new(Device::Cpu);
//!     let net = nn::linear(vs.root() / "fc", 4, 1, Default::default());
//!     let mut trainer = DistributedTrainer::new(&vs, Arc::new(comm), OptimizerKind::adam(), 1e-2)?;
//!     let x = Tensor::ones([8, 4], (Kind::Float, Device::Cpu));
//!     let y = Tensor::zeros([8, 1], (Kind::Float, Device::Cpu));
//!     let mut last = 0.0;
//!     for _ in 0..20 {
//!         last = trainer.step(&net.forward(&x).mse_loss(&y, Reduction::Mean))?;
//!     }
//!     trainer.check()?;
//!     Ok::<_, deeprc_bridge::BridgeError>(last)
//! })?;
//! assert_eq!(losses[0], losses[1]);
//! # Ok::<(), deeprc_bridge::BridgeError>(())
//! ```

mod checkpoint;
mod ddp;
mod optim;

pub use checkpoint::{CheckpointMeta, LoaderPosition};
pub use ddp::{DataParallel, DdpOptions};
pub use optim::{Optimizer, OptimizerKind};

use crate::error::{BridgeError, Result};
use deeprc_comm::Communicator;
use std::path::Path;
use std::sync::Arc;
use tch::nn::VarStore;
use tch::Tensor;

/// A model's parameters, their gradient exchange and their optimizer: one
/// per rank, all ranks stepping together.
#[derive(Debug)]
pub struct DistributedTrainer {
    ddp: DataParallel,
    opt: Optimizer,
    clip_norm: Option<f64>,
}

impl DistributedTrainer {
    /// A trainer of the trainable variables of `vs` on `comm`, with
    /// default [`DdpOptions`]. Every rank must call it (rank 0's parameters
    /// are broadcast).
    ///
    /// # Errors
    /// As [`DataParallel::new`].
    pub fn new(
        vs: &VarStore,
        comm: Arc<dyn Communicator>,
        kind: OptimizerKind,
        lr: f64,
    ) -> Result<Self> {
        Self::with_options(vs, comm, kind, lr, DdpOptions::default())
    }

    /// [`DistributedTrainer::new`] with explicit options.
    ///
    /// # Errors
    /// As [`DataParallel::new`].
    pub fn with_options(
        vs: &VarStore,
        comm: Arc<dyn Communicator>,
        kind: OptimizerKind,
        lr: f64,
        options: DdpOptions,
    ) -> Result<Self> {
        let ddp = DataParallel::new(vs, comm, options)?;
        let params = ddp.parameters().map(|(_, t)| t.shallow_clone()).collect();
        Ok(Self {
            ddp,
            opt: Optimizer::new(kind, lr, params),
            clip_norm: None,
        })
    }

    /// Clips the averaged gradients to this global L2 norm before each step.
    pub fn clip_grad_norm(mut self, max_norm: f64) -> Self {
        self.clip_norm = Some(max_norm);
        self
    }

    /// One training step on every rank: backward of this rank's `loss`,
    /// gradients averaged over the ranks, one optimizer step. Returns the
    /// mean loss over the ranks (the same on every rank).
    ///
    /// # Errors
    /// [`BridgeError::NonFiniteLoss`] on every rank when the mean loss is NaN
    /// or infinite (the parameters are left as they were); a communicator
    /// error when a peer fails; [`BridgeError::InvalidArgument`] when `loss`
    /// is not a scalar.
    pub fn step(&mut self, loss: &Tensor) -> Result<f64> {
        if loss.numel() != 1 {
            return Err(BridgeError::invalid(
                "DistributedTrainer::step",
                format!("the loss must be a scalar, got shape {:?}", loss.size()),
            ));
        }
        self.opt.zero_grad();
        loss.backward();
        let local = loss.double_value(&[]);
        let mean = self.ddp.all_reduce_gradients(local)?;
        if !mean.is_finite() {
            self.opt.zero_grad();
            return Err(BridgeError::NonFiniteLoss {
                step: self.opt.steps(),
                ranks: self.ddp.world_size(),
                loss: mean,
            });
        }
        if let Some(max) = self.clip_norm {
            self.clip(max);
        }
        self.opt.step();
        Ok(mean)
    }

    fn clip(&mut self, max: f64) {
        let _guard = tch::no_grad_guard();
        let sq: f64 = self
            .ddp
            .parameters()
            .map(|(_, t)| {
                let g = t.grad();
                if g.defined() {
                    g.square().sum(tch::Kind::Double).double_value(&[])
                } else {
                    0.0
                }
            })
            .sum();
        let norm = sq.sqrt();
        if norm > max {
            let scale = max / (norm + 1e-6);
            for (_, t) in self.ddp.parameters() {
                let mut g = t.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(scale);
                }
            }
        }
    }

    /// Checks that every rank holds the same parameters.
    ///
    /// # Errors
    /// [`BridgeError::Diverged`] naming every rank's checksum otherwise.
    pub fn check(&mut self) -> Result<()> {
        let step = self.opt.steps();
        self.ddp.check(step)
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.opt.steps()
    }

    /// The optimizer (learning rate, schedule).
    pub fn optimizer_mut(&mut self) -> &mut Optimizer {
        &mut self.opt
    }

    /// The gradient exchange.
    pub fn data_parallel(&self) -> &DataParallel {
        &self.ddp
    }

    /// The communicator.
    pub fn comm(&self) -> &Arc<dyn Communicator> {
        self.ddp.comm()
    }

    /// Writes a checkpoint of the parameters, the optimizer state and the
    /// loader's `position` into `dir` (replaced if it exists). Every rank
    /// calls it; rank 0 writes.
    ///
    /// # Errors
    /// [`BridgeError::Checkpoint`] when it cannot be written (on every rank).
    pub fn save(&mut self, dir: &Path, position: LoaderPosition) -> Result<CheckpointMeta> {
        checkpoint::save(dir, &mut self.ddp, &self.opt, position)
    }

    /// Restores a checkpoint written by [`DistributedTrainer::save`] and
    /// checks that every rank holds the same parameters; returns where the
    /// loader should resume.
    ///
    /// # Errors
    /// [`BridgeError::Checkpoint`] when it is missing, malformed, from
    /// another model (names or shapes) or another optimizer;
    /// [`BridgeError::Diverged`] if the ranks read different checkpoints.
    pub fn load(&mut self, dir: &Path) -> Result<CheckpointMeta> {
        let meta = checkpoint::load(dir, &mut self.ddp, &mut self.opt)?;
        self.check()?;
        Ok(meta)
    }
}
