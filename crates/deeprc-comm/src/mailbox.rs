//! Per-rank queues of incoming messages, keyed by (source, context, tag),
//! with peer-failure tracking. Shared by the local and tcp transports.

use crate::{AnyBox, CommError, Result};
use bytes::Bytes;
use std::{
    collections::{HashMap, VecDeque},
    sync::{Condvar, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

/// A message: bytes, or (threads only) any `Send` value.
pub(crate) enum Payload {
    Bytes(Bytes),
    Object(AnyBox),
}

impl Payload {
    pub(crate) fn into_bytes(self, op: &'static str) -> Result<Bytes> {
        match self {
            Payload::Bytes(b) => Ok(b),
            Payload::Object(_) => Err(CommError::invalid(op, "expected bytes, got an object")),
        }
    }

    pub(crate) fn into_object(self, op: &'static str) -> Result<AnyBox> {
        match self {
            Payload::Object(o) => Ok(o),
            Payload::Bytes(_) => Err(CommError::invalid(op, "expected an object, got bytes")),
        }
    }
}

/// Context (communicator) and tag of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) ctx: u64,
    pub(crate) tag: u64,
}

#[derive(Default)]
struct State {
    queues: HashMap<(usize, Key), VecDeque<Payload>>,
    lost: HashMap<usize, String>,
}

/// Incoming messages of one rank.
#[derive(Default)]
pub(crate) struct Mailbox {
    state: Mutex<State>,
    arrived: Condvar,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").finish_non_exhaustive()
    }
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a message from `src`.
    pub(crate) fn push(&self, src: usize, key: Key, payload: Payload) {
        self.lock()
            .queues
            .entry((src, key))
            .or_default()
            .push_back(payload);
        self.arrived.notify_all();
    }

    /// Records that `src` is gone; waiting receivers from it fail once its
    /// queued messages are consumed. The first reason is kept.
    pub(crate) fn mark_lost(&self, src: usize, reason: String) {
        self.lock().lost.entry(src).or_insert(reason);
        self.arrived.notify_all();
    }

    /// The reason `src` was lost, if it was.
    pub(crate) fn lost_reason(&self, src: usize) -> Option<String> {
        self.lock().lost.get(&src).cloned()
    }

    /// Takes the next message from `src` with `key`, waiting at most `timeout`.
    pub(crate) fn pop(
        &self,
        op: &'static str,
        src: usize,
        key: Key,
        timeout: Duration,
    ) -> Result<Payload> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(q) = state.queues.get_mut(&(src, key)) {
                if let Some(p) = q.pop_front() {
                    if q.is_empty() {
                        state.queues.remove(&(src, key));
                    }
                    return Ok(p);
                }
            }
            if let Some(reason) = state.lost.get(&src) {
                return Err(CommError::PeerLost {
                    op,
                    peer: src,
                    reason: reason.clone(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CommError::Timeout {
                    op,
                    peer: src,
                    after: timeout,
                });
            }
            state = self
                .arrived
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: Key = Key { ctx: 1, tag: 2 };

    #[test]
    fn fifo_then_lost_then_timeout() {
        let m = Mailbox::default();
        m.push(0, K, Payload::Bytes(Bytes::from_static(b"a")));
        m.push(0, K, Payload::Bytes(Bytes::from_static(b"b")));
        m.mark_lost(0, "gone".into());
        let t = Duration::from_millis(10);
        assert_eq!(
            &m.pop("t", 0, K, t).unwrap().into_bytes("t").unwrap()[..],
            b"a"
        );
        assert_eq!(
            &m.pop("t", 0, K, t).unwrap().into_bytes("t").unwrap()[..],
            b"b"
        );
        assert!(matches!(
            m.pop("t", 0, K, t),
            Err(CommError::PeerLost { peer: 0, .. })
        ));
        assert!(matches!(
            m.pop("t", 1, K, t),
            Err(CommError::Timeout { peer: 1, .. })
        ));
    }
}
