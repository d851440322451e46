//! The cxx bridge to the C++ shim (`gloo-shim/shim.{h,cc}`) and the Rust side
//! of its rendezvous store.

use crate::{tcp::Store, CommError};
use deeprc_core::sync::lock;
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

// The items cxx generates are `pub`; the module keeps them crate-private.
#[allow(unreachable_pub)]
#[cxx::bridge(namespace = "deeprc_gloo")]
pub(crate) mod bridge {
    /// What the point-to-point receiver got: a header, or the order to stop.
    #[derive(Debug)]
    pub struct Header {
        pub aborted: bool,
        pub src: i32,
        pub tag: u64,
        pub len: u64,
    }

    extern "Rust" {
        type StoreBridge;
        fn set(self: &StoreBridge, key: &str, value: &[u8]) -> Result<()>;
        fn get(self: &StoreBridge, key: &str, timeout_ms: i64) -> Result<Vec<u8>>;
    }

    unsafe extern "C++" {
        include!("deeprc-comm/gloo-shim/shim.h");

        type GStore;
        type GDevice;
        type GCtx;

        fn bridge_store(bridge: Box<StoreBridge>, timeout_ms: u64) -> UniquePtr<GStore>;
        fn hash_store() -> UniquePtr<GStore>;
        fn tcp_device(hostname: &str) -> Result<UniquePtr<GDevice>>;
        fn connect(
            store: &GStore,
            prefix: &str,
            device: &GDevice,
            rank: i32,
            size: i32,
            connect_timeout_ms: u64,
            timeout_ms: u64,
        ) -> Result<UniquePtr<GCtx>>;

        fn barrier(self: &GCtx) -> Result<()>;
        fn broadcast_root(self: &GCtx, root: i32, data: &[u8]) -> Result<()>;
        fn broadcast_recv(self: &GCtx, root: i32, out: &mut [u8]) -> Result<()>;
        fn allgather(self: &GCtx, input: &[u8], out: &mut [u8]) -> Result<()>;
        fn gather(self: &GCtx, root: i32, input: &[u8], out: &mut [u8]) -> Result<()>;
        fn gatherv(
            self: &GCtx,
            root: i32,
            input: &[u8],
            out: &mut [u8],
            counts: &[u64],
        ) -> Result<()>;
        fn alltoall(self: &GCtx, input: &[u8], out: &mut [u8]) -> Result<()>;
        fn allgatherv(self: &GCtx, input: &[u8], out: &mut [u8], counts: &[u64]) -> Result<()>;
        fn alltoallv(
            self: &GCtx,
            input: &[u8],
            in_counts: &[u64],
            out: &mut [u8],
            out_counts: &[u64],
        ) -> Result<()>;
        fn allreduce_int(self: &GCtx, data: &mut [u8], dtype: u8, op: u8) -> Result<()>;

        fn p2p_send(
            self: &GCtx,
            dst: i32,
            header: &[u8],
            data: &[u8],
            timeout_ms: u64,
        ) -> Result<()>;
        fn p2p_wait_header(self: &GCtx) -> Result<Header>;
        fn p2p_recv_data(self: &GCtx, src: i32, out: &mut [u8], timeout_ms: u64) -> Result<bool>;
        fn p2p_abort(self: &GCtx);
    }
}

// SAFETY: a GStore is a shared_ptr to a store that is only read after
// construction; its implementations (the Rust bridge below, whose store is
// Send + Sync, and Gloo's mutex-protected HashStore) are thread-safe.
unsafe impl Send for bridge::GStore {}
// SAFETY: as above; every method of the stores locks what it touches.
unsafe impl Sync for bridge::GStore {}
// SAFETY: a GDevice only holds a shared_ptr to Gloo's tcp::Device, whose
// context creation and descriptor registration lock the device's loop.
unsafe impl Send for bridge::GDevice {}
// SAFETY: as above.
unsafe impl Sync for bridge::GDevice {}
// SAFETY: a GCtx owns a Gloo context and its header buffer; nothing in it is
// tied to the creating thread (Gloo's own tests drive contexts from any
// thread).
unsafe impl Send for bridge::GCtx {}
// SAFETY: shared use is disciplined by GlooComm: collectives run under one
// mutex, point-to-point sends under another; Gloo's pairs and unbound
// buffers lock their own state, the receiver alone uses the header buffer,
// and the abort flag and current data buffer are guarded by a C++ mutex.
unsafe impl Sync for bridge::GCtx {}

/// The Rust store behind the C++ `BridgeStore`: keys arrive already
/// namespaced by the prefix store. Store errors are also kept so that a
/// failed rendezvous reports the store's own typed error.
pub(crate) struct StoreBridge {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) last_error: Arc<Mutex<Option<CommError>>>,
}

impl StoreBridge {
    fn keep<T>(&self, r: crate::Result<T>) -> Result<T, String> {
        r.map_err(|e| {
            let msg = e.to_string();
            *lock(&self.last_error) = Some(e);
            msg
        })
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.keep(self.store.set(key, value))
    }

    fn get(&self, key: &str, timeout_ms: i64) -> Result<Vec<u8>, String> {
        let timeout = Duration::from_millis(timeout_ms.max(1) as u64);
        self.keep(self.store.get(key, timeout))
    }
}
