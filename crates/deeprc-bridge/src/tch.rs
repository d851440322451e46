//! Batches as PyTorch tensors through `tch` (feature `tch`).
//!
//! A tensor made here views the batch's memory (the reusable staging buffer,
//! or the Arrow buffer of a zero-copy part) and owns a reference to it
//! through libtorch's deleter: `tch::Tensor::from_blob` borrows without one,
//! so a view made with `shallow_clone`, `narrow` or `view` could outlive the
//! buffer; here the buffer lives until libtorch frees the last view, and
//! only then goes back to the loader's pool. The small C++ function that
//! makes such a tensor is `cpp/tch_blob.cpp` (built by `build.rs` against
//! the same libtorch headers as `torch-sys`).
//!
//! On a CUDA device the host tensors are copied with `non_blocking = true`
//! (asynchronous from page-locked staging buffers); the [`TchBatch`] keeps
//! the host tensors, and so the buffers, until the copies are done: its drop
//! synchronises the device before letting them go.

#![allow(unsafe_code)]

use crate::dataset::PartKind;
use crate::dtype::DType;
use crate::error::{BridgeError, Result};
use crate::loader::{Batch, BatchMemory, BatchOwner, PartSource};
use ::tch::{Kind, Tensor};
use deeprc_core::Device;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Arc;

pub use ::tch as tch_crate;

extern "C" {
    fn deeprc_tensor_from_blob(
        data: *mut c_void,
        sizes: *const i64,
        strides: *const i64,
        ndim: usize,
        scalar_type: c_int,
        ctx: *mut c_void,
        release: extern "C" fn(*mut c_void),
        err: *mut *mut c_char,
    ) -> *mut c_void;
    fn deeprc_free_cstr(s: *mut c_char);
}

extern "C" fn release<M: BatchMemory>(ctx: *mut c_void) {
    // SAFETY: `ctx` came from `Arc::into_raw` of an `Arc<BatchOwner<M>>` in
    // `tensor_over` and libtorch calls the deleter exactly once.
    drop(unsafe { Arc::from_raw(ctx as *const BatchOwner<M>) });
}

/// The ATen scalar type of a dtype (`c10::ScalarType`, stable since 1.0).
fn scalar_type(d: DType) -> (c_int, Kind) {
    match d {
        DType::U8 => (0, Kind::Uint8),
        DType::I8 => (1, Kind::Int8),
        DType::I16 => (2, Kind::Int16),
        DType::I32 => (3, Kind::Int),
        DType::I64 => (4, Kind::Int64),
        DType::F32 => (6, Kind::Float),
        DType::F64 => (7, Kind::Double),
    }
}

/// The tch device of a Deep RC device.
pub fn device(d: Device) -> ::tch::Device {
    match d {
        Device::Cpu => ::tch::Device::Cpu,
        Device::Cuda(i) => ::tch::Device::Cuda(i),
    }
}

/// Whether libtorch sees a CUDA device.
pub fn cuda_available() -> bool {
    ::tch::Cuda::is_available()
}

fn framework(e: impl std::fmt::Display) -> BridgeError {
    BridgeError::Framework {
        framework: "libtorch",
        message: e.to_string(),
    }
}

/// A CPU tensor over `ptr` that keeps `owner` alive.
fn tensor_over<M: BatchMemory>(
    ptr: *const u8,
    shape: &[usize],
    strides: &[usize],
    dtype: DType,
    owner: &Arc<BatchOwner<M>>,
) -> Result<Tensor> {
    let sizes: Vec<i64> = shape.iter().map(|&s| s as i64).collect();
    let strides: Vec<i64> = strides.iter().map(|&s| s as i64).collect();
    if ptr as usize % dtype.size() != 0 {
        return Err(BridgeError::Internal(format!(
            "unaligned {dtype} data at {ptr:p}"
        )));
    }
    let ctx = Arc::into_raw(Arc::clone(owner)) as *mut c_void;
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: `ptr` points to memory that `owner` keeps alive, holding
    // every element the sizes and strides address (checked by the loader
    // when it made the batch); the shape arrays outlive the call; `ctx` is
    // a leaked Arc reference that the deleter (`release::<M>`) reclaims.
    let raw = unsafe {
        deeprc_tensor_from_blob(
            ptr as *mut c_void,
            sizes.as_ptr(),
            strides.as_ptr(),
            sizes.len(),
            scalar_type(dtype).0,
            ctx,
            release::<M>,
            &mut err,
        )
    };
    if raw.is_null() {
        let msg = if err.is_null() {
            "tensor_from_blob failed".to_string()
        } else {
            // SAFETY: `err` is a NUL-terminated string from strdup, freed
            // right after by its allocator.
            let m = unsafe { CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: allocated by strdup in the shim.
            unsafe { deeprc_free_cstr(err) };
            m
        };
        return Err(framework(msg));
    }
    // SAFETY: `raw` is a fresh `new at::Tensor`, the pointee type of tch's
    // `C_tensor`; tch frees it with `delete` (at_free) when the Tensor drops.
    Ok(unsafe { Tensor::from_ptr(raw as *mut ::torch_sys::C_tensor) })
}

/// A batch as tch tensors: inputs and targets, on the device asked for.
///
/// The tensors own the memory they view (see the module docs); this guard
/// adds the batch's bookkeeping and, on CUDA, keeps the host tensors until
/// the asynchronous copies are done.
pub struct TchBatch {
    // Declared first: dropped first.
    inputs: Tensor,
    targets: Tensor,
    host: Option<(Tensor, Tensor)>,
    device: Device,
    index: usize,
    valid: usize,
    samples: Vec<u32>,
    zero_copy: [bool; 2],
}

impl std::fmt::Debug for TchBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TchBatch")
            .field("index", &self.index)
            .field("inputs", &self.inputs.size())
            .field("targets", &self.targets.size())
            .field("device", &self.device)
            .field("zero_copy", &self.zero_copy)
            .finish()
    }
}

impl TchBatch {
    /// The inputs.
    pub fn inputs(&self) -> &Tensor {
        &self.inputs
    }

    /// The targets.
    pub fn targets(&self) -> &Tensor {
        &self.targets
    }

    /// The batch's number in its epoch.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Samples that are not padding repeats (at the start of the batch).
    pub fn valid(&self) -> usize {
        self.valid
    }

    /// The local sample indices.
    pub fn samples(&self) -> &[u32] {
        &self.samples
    }

    /// Whether the inputs / targets (on the CPU) view Arrow memory.
    pub fn is_zero_copy(&self, part: PartKind) -> bool {
        self.zero_copy[part as usize]
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The two tensors, after any pending host-to-device copy is done.
    pub fn into_tensors(mut self) -> (Tensor, Tensor) {
        self.sync();
        let (i, t) = (self.inputs.shallow_clone(), self.targets.shallow_clone());
        (i, t)
    }

    fn sync(&mut self) {
        if let (Some(_), Device::Cuda(i)) = (&self.host, self.device) {
            ::tch::Cuda::synchronize(i as i64);
            self.host = None;
        }
    }
}

impl Drop for TchBatch {
    fn drop(&mut self) {
        self.sync();
    }
}

impl<M: BatchMemory> Batch<M> {
    /// The batch as tch tensors on `device`: zero-copy views of the batch's
    /// memory on the CPU (which they keep alive), moved with a non-blocking
    /// copy to a CUDA device.
    ///
    /// # Errors
    /// [`BridgeError::Framework`] when libtorch fails or has no such CUDA
    /// device.
    pub fn to_tch(self, device: Device) -> Result<TchBatch> {
        if let Device::Cuda(i) = device {
            let n = ::tch::Cuda::device_count();
            if (i as i64) >= n {
                return Err(framework(format!(
                    "CUDA device {i} requested; libtorch sees {n} CUDA device(s)"
                )));
            }
        }
        let d = self.detach();
        let zero_copy = d
            .parts
            .each_ref()
            .map(|(_, p)| matches!(p.source, PartSource::View(_)));
        let [(px, x), (py, y)] = &d.parts;
        let tx = tensor_over(*px, &x.shape, &x.strides, x.dtype, &d.owner)?;
        let ty = tensor_over(*py, &y.shape, &y.strides, y.dtype, &d.owner)?;
        let (inputs, targets, host) = match device {
            Device::Cpu => (tx, ty, None),
            Device::Cuda(_) => {
                let dev = self::device(device);
                let gx = tx
                    .f_to_device_(dev, scalar_type(x.dtype).1, true, false)
                    .map_err(framework)?;
                let gy = ty
                    .f_to_device_(dev, scalar_type(y.dtype).1, true, false)
                    .map_err(framework)?;
                (gx, gy, Some((tx, ty)))
            }
        };
        Ok(TchBatch {
            inputs,
            targets,
            host,
            device,
            index: d.index,
            valid: d.valid,
            samples: d.samples,
            zero_copy,
        })
    }
}
