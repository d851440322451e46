//! Page-aligned host buffers, page-locked through CUDA when a GPU is there.
//!
//! This is the one module of the crate (besides the framework FFI) with
//! `unsafe` code: an owned allocation made with [`std::alloc`] at a 4096-byte
//! alignment, and the CUDA runtime's `cudaHostRegister` /
//! `cudaHostUnregister`, loaded at run time with `libloading` so that the
//! crate builds and runs on machines without CUDA.

#![allow(unsafe_code)]

use crate::error::{BridgeError, Result};
use std::alloc::{self, Layout};
use std::ffi::{c_int, c_uint, c_void};
use std::fmt;
use std::ptr::NonNull;
use std::sync::OnceLock;

/// The alignment of every staging buffer: one page.
pub const PAGE: usize = 4096;

/// An owned, zero-initialised, page-aligned byte buffer.
///
/// Optionally page-locked (registered with the CUDA runtime), which makes
/// host-to-device copies from it asynchronous and faster.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    pinned: bool,
}

// SAFETY: `AlignedBuf` owns its allocation exclusively (like `Vec<u8>`);
// shared references only read it.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above; `&AlignedBuf` gives only `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes (at least one page) at a page boundary.
    ///
    /// # Errors
    /// [`BridgeError::InvalidArgument`] when the size overflows a `Layout`.
    pub fn new(len: usize) -> Result<Self> {
        let cap = len.max(1).div_ceil(PAGE) * PAGE;
        let layout = Layout::from_size_align(cap, PAGE)
            .map_err(|e| BridgeError::invalid("AlignedBuf::new", format!("{len} bytes: {e}")))?;
        // SAFETY: `layout` has a non-zero size (at least one page).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Ok(AlignedBuf {
            ptr,
            len: cap,
            pinned: false,
        })
    }

    /// Allocates like [`AlignedBuf::new`] and tries to page-lock the buffer
    /// through the CUDA runtime; on failure the buffer stays ordinary memory
    /// and the reason comes back beside it.
    pub fn new_pinned(len: usize) -> Result<(Self, PinStatus)> {
        let mut buf = Self::new(len)?;
        let status = match cuda() {
            Err(reason) => PinStatus::Unpinned {
                reason: reason.clone(),
            },
            Ok(rt) => {
                // SAFETY: `buf` is a live allocation of `buf.len` bytes that
                // outlives the registration (`Drop` unregisters first).
                match unsafe { rt.register(buf.ptr.as_ptr(), buf.len) } {
                    Ok(()) => {
                        buf.pinned = true;
                        PinStatus::Pinned
                    }
                    Err(reason) => PinStatus::Unpinned { reason },
                }
            }
        };
        Ok((buf, status))
    }

    /// The capacity in bytes (a multiple of [`PAGE`]).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never empty: at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the buffer is page-locked.
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// The start of the buffer.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised (zeroed at allocation)
        // bytes owned by `self`, borrowed immutably for the slice's life.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.pinned {
            if let Ok(rt) = cuda() {
                // SAFETY: the buffer was registered by `new_pinned` and is
                // still allocated.
                unsafe { rt.unregister(self.ptr.as_ptr()) };
            }
        }
        // SAFETY: `ptr` was allocated in `new` with exactly this layout
        // (`len` is the rounded capacity, the alignment is PAGE).
        unsafe {
            alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.len, PAGE),
            )
        };
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("pinned", &self.pinned)
            .finish()
    }
}

/// Hints the CPU to load the cache line holding `ptr` (a no-op on other
/// architectures). Used by the copy kernels to start the next samples'
/// cache misses while the current one is copied.
#[inline(always)]
pub(crate) fn prefetch<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults, whatever the address,
    // and SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// Whether staging buffers are page-locked, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinStatus {
    /// Registered with the CUDA runtime (`cudaHostRegister`).
    Pinned,
    /// Ordinary page-aligned memory.
    Unpinned {
        /// Why: pinning not asked for, no CUDA runtime, no device, or the
        /// registration failed.
        reason: String,
    },
}

impl PinStatus {
    /// `true` for [`PinStatus::Pinned`].
    pub fn is_pinned(&self) -> bool {
        matches!(self, PinStatus::Pinned)
    }
}

impl fmt::Display for PinStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinStatus::Pinned => {
                f.write_str("page-aligned, page-locked (pinned through cudaHostRegister)")
            }
            PinStatus::Unpinned { reason } => {
                write!(f, "page-aligned, NOT page-locked ({reason})")
            }
        }
    }
}

type CudaGetDeviceCount = unsafe extern "C" fn(*mut c_int) -> c_int;
type CudaHostRegister = unsafe extern "C" fn(*mut c_void, usize, c_uint) -> c_int;
type CudaHostUnregister = unsafe extern "C" fn(*mut c_void) -> c_int;
type CudaGetErrorString = unsafe extern "C" fn(c_int) -> *const std::ffi::c_char;

/// The few functions of the CUDA runtime this crate calls.
struct CudaRt {
    _lib: libloading::Library,
    register: CudaHostRegister,
    unregister: CudaHostUnregister,
    error_string: CudaGetErrorString,
    devices: c_int,
}

impl CudaRt {
    fn describe(&self, code: c_int) -> String {
        // SAFETY: cudaGetErrorString returns a static NUL-terminated string
        // for every code (or NULL, handled).
        let p = unsafe { (self.error_string)(code) };
        if p.is_null() {
            format!("CUDA error {code}")
        } else {
            // SAFETY: non-null static C string from the runtime.
            let s = unsafe { std::ffi::CStr::from_ptr(p) };
            format!("CUDA error {code}: {}", s.to_string_lossy())
        }
    }

    /// # Safety
    /// `ptr..ptr+len` must be a live allocation that stays allocated until
    /// [`CudaRt::unregister`] is called on `ptr`.
    unsafe fn register(&self, ptr: *mut u8, len: usize) -> std::result::Result<(), String> {
        // SAFETY: the caller keeps the range allocated; flags 0 is
        // cudaHostRegisterDefault.
        let code = unsafe { (self.register)(ptr.cast(), len, 0) };
        if code == 0 {
            Ok(())
        } else {
            Err(format!("cudaHostRegister failed: {}", self.describe(code)))
        }
    }

    /// # Safety
    /// `ptr` must have been registered with [`CudaRt::register`].
    unsafe fn unregister(&self, ptr: *mut u8) {
        // SAFETY: per the contract; a failure leaves the memory as it was.
        unsafe { (self.unregister)(ptr.cast()) };
    }
}

/// The CUDA runtime, loaded once; `Err` says plainly why there is none.
fn cuda() -> std::result::Result<&'static CudaRt, &'static String> {
    static RT: OnceLock<std::result::Result<CudaRt, String>> = OnceLock::new();
    RT.get_or_init(load_cuda).as_ref()
}

/// Whether a CUDA device is usable for page-locking, and why not.
pub fn cuda_status() -> PinStatus {
    match cuda() {
        Ok(rt) if rt.devices > 0 => PinStatus::Pinned,
        Ok(_) => PinStatus::Unpinned {
            reason: "no CUDA device".into(),
        },
        Err(reason) => PinStatus::Unpinned {
            reason: reason.clone(),
        },
    }
}

fn load_cuda() -> std::result::Result<CudaRt, String> {
    let mut candidates: Vec<String> = Vec::new();
    if let Ok(p) = std::env::var("DEEPRC_CUDART") {
        candidates.push(p);
    }
    candidates.extend(["libcudart.so.13", "libcudart.so.12", "libcudart.so"].map(String::from));
    if let Some(dir) = option_env!("DEEPRC_CUDART_DIR") {
        candidates.push(format!("{dir}/libcudart.so.13"));
    }
    let mut tried = Vec::new();
    for name in &candidates {
        // SAFETY: loading the CUDA runtime runs its initialisers, which have
        // no preconditions; the library stays loaded in `CudaRt`.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => return init_cuda(lib, name),
            Err(e) => tried.push(format!("{name}: {e}")),
        }
    }
    Err(format!(
        "no CUDA runtime library could be loaded (tried {})",
        tried.join("; ")
    ))
}

fn init_cuda(lib: libloading::Library, name: &str) -> std::result::Result<CudaRt, String> {
    // SAFETY: the symbols have these C signatures in every CUDA runtime
    // since 4.0; the function pointers are used only while `lib` is alive
    // (it is stored beside them).
    let (count, register, unregister, error_string) = unsafe {
        let f = |s: &[u8]| -> std::result::Result<*const c_void, String> {
            lib.get::<*const c_void>(s)
                .map(|sym| *sym)
                .map_err(|e| format!("{name}: {e}"))
        };
        (
            std::mem::transmute::<*const c_void, CudaGetDeviceCount>(f(b"cudaGetDeviceCount\0")?),
            std::mem::transmute::<*const c_void, CudaHostRegister>(f(b"cudaHostRegister\0")?),
            std::mem::transmute::<*const c_void, CudaHostUnregister>(f(b"cudaHostUnregister\0")?),
            std::mem::transmute::<*const c_void, CudaGetErrorString>(f(b"cudaGetErrorString\0")?),
        )
    };
    let rt = CudaRt {
        _lib: lib,
        register,
        unregister,
        error_string,
        devices: 0,
    };
    let mut n: c_int = 0;
    // SAFETY: `n` is a valid out-pointer.
    let code = unsafe { count(&mut n) };
    if code != 0 {
        return Err(format!(
            "{name} loaded but cudaGetDeviceCount failed: {}",
            rt.describe(code)
        ));
    }
    if n == 0 {
        return Err(format!("{name} loaded but there is no CUDA device"));
    }
    Ok(CudaRt { devices: n, ..rt })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_aligned_and_zeroed() {
        let mut b = AlignedBuf::new(10_000).unwrap();
        assert_eq!(b.as_ptr() as usize % PAGE, 0);
        assert_eq!(b.len(), 12_288);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        b.as_mut_slice()[9_999] = 7;
        assert_eq!(b.as_slice()[9_999], 7);
    }

    #[test]
    fn pinning_falls_back_with_a_reason() {
        let (b, status) = AlignedBuf::new_pinned(100).unwrap();
        assert_eq!(b.as_ptr() as usize % PAGE, 0);
        match status {
            PinStatus::Pinned => assert!(b.is_pinned()),
            PinStatus::Unpinned { reason } => {
                assert!(!b.is_pinned());
                assert!(!reason.is_empty());
                eprintln!("no pinning here: {reason}");
            }
        }
    }
}
