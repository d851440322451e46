//! Checkpoints of a data-parallel training run: parameters, optimizer
//! state, step, and the loader's position, so that a resumed run takes the
//! same batches and steps as one that was never stopped (as torchdata's
//! `StatefulDataLoader` resumes mid-epoch).
//!
//! A checkpoint is a directory:
//! - `tensors.ot`: libtorch's named-tensor archive (`Tensor::save_multi`),
//!   `param/<name>` and `opt<k>/<name>` for each parameter;
//! - `checkpoint.json`: the step, the position, the optimizer, the world
//!   size, and the model's layout (names and shapes) that a load checks.
//!
//! Rank 0 writes it (into a temporary directory renamed into place, so a
//! crash never leaves half a checkpoint); every rank reads it, so `dir`
//! must be on a filesystem all ranks see.

use super::ddp::DataParallel;
use super::optim::Optimizer;
use crate::error::{BridgeError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Where the loader stands: the epoch and the next batch of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoaderPosition {
    /// The epoch.
    pub epoch: u64,
    /// The next batch of that epoch to train on.
    pub batch: usize,
}

/// What `checkpoint.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Format version (1).
    pub version: u32,
    /// Optimizer steps taken.
    pub step: u64,
    /// The loader's position.
    pub position: LoaderPosition,
    /// The optimizer and its hyperparameters, in words.
    pub optimizer: String,
    /// The learning rate at the time of saving.
    pub lr: f64,
    /// Ranks of the run that saved it.
    pub world_size: usize,
    /// Parameter names and shapes, in exchange order.
    pub layout: Vec<(String, Vec<i64>)>,
    /// The parameters' checksum (equal on every rank).
    pub checksum: u64,
}

fn err(path: &Path, reason: impl Into<String>) -> BridgeError {
    BridgeError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn layout(ddp: &DataParallel) -> Vec<(String, Vec<i64>)> {
    ddp.params()
        .iter()
        .map(|p| (p.name.clone(), p.tensor.size()))
        .collect()
}

/// Writes a checkpoint into `dir` (rank 0 writes; every rank waits for it).
pub(crate) fn save(
    dir: &Path,
    ddp: &mut DataParallel,
    opt: &Optimizer,
    position: LoaderPosition,
) -> Result<CheckpointMeta> {
    let checksum = ddp.checksum();
    let meta = CheckpointMeta {
        version: 1,
        step: opt.steps(),
        position,
        optimizer: opt.kind().label(),
        lr: opt.lr(),
        world_size: ddp.world_size(),
        layout: layout(ddp),
        checksum,
    };
    let comm = std::sync::Arc::clone(ddp.comm());
    let mut outcome = Ok(());
    if comm.rank() == 0 {
        outcome = write(dir, ddp, opt, &meta);
    }
    // Every rank learns whether rank 0 succeeded.
    let ok = deeprc_comm::CommunicatorExt::all_reduce_scalar(
        comm.as_ref(),
        u8::from(outcome.is_ok()),
        deeprc_comm::ReduceOp::Min,
    )?;
    outcome?;
    if ok == 0 {
        return Err(err(dir, "rank 0 could not write the checkpoint"));
    }
    Ok(meta)
}

fn write(dir: &Path, ddp: &DataParallel, opt: &Optimizer, meta: &CheckpointMeta) -> Result<()> {
    let name = dir
        .file_name()
        .ok_or_else(|| err(dir, "not a directory name"))?
        .to_string_lossy()
        .into_owned();
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| err(dir, format!("creating {}: {e}", parent.display())))?;
    let tmp: PathBuf = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .map_err(|e| err(dir, format!("creating {}: {e}", tmp.display())))?;
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (i, p) in ddp.params().iter().enumerate() {
        named.push((format!("param/{}", p.name), p.tensor.detach()));
        for (k, s) in opt.state()[i].iter().enumerate() {
            named.push((format!("opt{k}/{}", p.name), s.shallow_clone()));
        }
    }
    Tensor::save_multi(&named, tmp.join("tensors.ot"))
        .map_err(|e| err(dir, format!("writing tensors: {e}")))?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| err(dir, e.to_string()))?;
    std::fs::write(tmp.join("checkpoint.json"), json)
        .map_err(|e| err(dir, format!("writing checkpoint.json: {e}")))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir)
        .map_err(|e| err(dir, format!("renaming {} into place: {e}", tmp.display())))?;
    Ok(())
}

/// Reads the checkpoint in `dir` into the model and the optimizer; returns
/// its metadata.
pub(crate) fn load(
    dir: &Path,
    ddp: &mut DataParallel,
    opt: &mut Optimizer,
) -> Result<CheckpointMeta> {
    let json = std::fs::read(dir.join("checkpoint.json"))
        .map_err(|e| err(dir, format!("reading checkpoint.json: {e}")))?;
    let meta: CheckpointMeta = serde_json::from_slice(&json)
        .map_err(|e| err(dir, format!("checkpoint.json is malformed: {e}")))?;
    if meta.version != 1 {
        return Err(err(
            dir,
            format!("format version {} (this build reads 1)", meta.version),
        ));
    }
    let mine = layout(ddp);
    if meta.layout != mine {
        let diff = meta
            .layout
            .iter()
            .zip(&mine)
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("first difference: saved {a:?}, this model {b:?}"))
            .unwrap_or_else(|| {
                format!(
                    "saved {} parameters, this model has {}",
                    meta.layout.len(),
                    mine.len()
                )
            });
        return Err(err(dir, format!("saved from another model ({diff})")));
    }
    if meta.optimizer != opt.kind().label() {
        return Err(err(
            dir,
            format!(
                "saved with optimizer {}, this run uses {}",
                meta.optimizer,
                opt.kind().label()
            ),
        ));
    }
    let tensors = Tensor::load_multi(dir.join("tensors.ot"))
        .map_err(|e| err(dir, format!("reading tensors.ot: {e}")))?;
    let mut by_name: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut take = |key: String| {
        by_name
            .remove(&key)
            .ok_or_else(|| err(dir, format!("tensors.ot has no {key:?}")))
    };
    let slots = opt.kind().slots();
    let mut state = Vec::with_capacity(ddp.params().len());
    {
        let _guard = tch::no_grad_guard();
        for p in ddp.params() {
            let saved = take(format!("param/{}", p.name))?;
            if saved.size() != p.tensor.size() {
                return Err(err(
                    dir,
                    format!(
                        "{} has shape {:?}, expected {:?}",
                        p.name,
                        saved.size(),
                        p.tensor.size()
                    ),
                ));
            }
            let mut dst = p.tensor.shallow_clone();
            dst.copy_(&saved);
            let mut slots_of = Vec::with_capacity(slots);
            for k in 0..slots {
                slots_of.push(take(format!("opt{k}/{}", p.name))?);
            }
            state.push(slots_of);
        }
    }
    opt.restore(meta.step, state);
    opt.set_lr(meta.lr);
    if ddp.checksum() != meta.checksum {
        return Err(err(
            dir,
            "the parameters read do not match the saved checksum (corrupt file?)",
        ));
    }
    Ok(meta)
}
