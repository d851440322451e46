//! Reusable large buffers.
//!
//! Fresh multi-megabyte allocations are mapped page by page on first touch:
//! for a 64 MiB all-reduce the page faults cost more than the copies. Buffers
//! taken from a [`BufferPool`] and frozen into [`Bytes`] go back to the pool
//! when the last reference (possibly on another thread) is dropped.

use bytes::Bytes;
use deeprc_core::sync::lock;
use std::sync::{Arc, Mutex};

/// Idle bytes a communicator's pool keeps at most.
pub(crate) const POOL_BYTES: usize = 256 << 20;

/// Buffers smaller than this are not worth pooling.
const MIN_POOLED: usize = 64 << 10;

#[derive(Debug)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    max_bytes: usize,
}

impl BufferPool {
    /// A pool that keeps at most `max_bytes` of idle buffers.
    pub(crate) fn new(max_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(Vec::new()),
            max_bytes,
        })
    }

    /// An empty vector with capacity for at least `len` bytes.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        let mut v = self.reuse(len);
        v.clear();
        if v.capacity() >= len {
            v
        } else {
            Vec::with_capacity(len)
        }
    }

    /// An idle pooled buffer that fits `len` bytes, with its old contents
    /// (so that a reader can fill it without zeroing it first), or an empty
    /// vector that has allocated nothing (the caller reserves fallibly).
    pub(crate) fn reuse(&self, len: usize) -> Vec<u8> {
        if len >= MIN_POOLED {
            let mut free = lock(&self.free);
            // Best fit that wastes at most half of the buffer.
            let best = free
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= len && v.capacity() / 2 <= len)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                return free.swap_remove(i);
            }
        }
        Vec::new()
    }

    /// Copies `src` into a pooled buffer.
    pub(crate) fn copy(self: &Arc<Self>, src: &[u8]) -> Bytes {
        let mut v = self.take(src.len());
        v.extend_from_slice(src);
        self.freeze(v)
    }

    /// Wraps `v` so that it returns to this pool when the last `Bytes`
    /// viewing it is dropped.
    pub(crate) fn freeze(self: &Arc<Self>, v: Vec<u8>) -> Bytes {
        if v.capacity() < MIN_POOLED {
            return Bytes::from(v);
        }
        Bytes::from_owner(Pooled {
            buf: v,
            pool: Arc::clone(self),
        })
    }

    fn give_back(&self, v: Vec<u8>) {
        let mut free = lock(&self.free);
        free.push(v);
        // Drop the largest idle buffers while over budget.
        let mut total: usize = free.iter().map(Vec::capacity).sum();
        while total > self.max_bytes {
            let (i, _) = free
                .iter()
                .enumerate()
                .max_by_key(|(_, v)| v.capacity())
                .expect("non-empty while over budget");
            total -= free.swap_remove(i).capacity();
        }
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_budget_holds() {
        let pool = BufferPool::new(3 << 20);
        let a = pool.copy(&vec![7u8; 1 << 20]);
        let ptr = a.as_ptr();
        assert!(a.iter().all(|&b| b == 7));
        let other_thread = a.clone();
        drop(a);
        std::thread::spawn(move || drop(other_thread))
            .join()
            .unwrap();
        let again = pool.take(1 << 20);
        assert_eq!(again.as_ptr(), ptr, "the buffer was reused");
        // Over budget: idle buffers beyond 3 MiB are released.
        for _ in 0..5 {
            drop(pool.copy(&vec![1u8; 1 << 20]));
        }
        let b: Vec<Bytes> = (0..5).map(|_| pool.copy(&vec![1u8; 1 << 20])).collect();
        drop(b);
        let idle: usize = pool.free.lock().unwrap().iter().map(Vec::capacity).sum();
        assert!(idle <= 3 << 20, "{idle}");
        // Small buffers are not pooled.
        assert_eq!(pool.copy(b"xy"), Bytes::from_static(b"xy"));
    }
}
