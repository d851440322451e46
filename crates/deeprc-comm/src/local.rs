//! The `local` backend: ranks are threads of one process.
//!
//! Messages are [`Bytes`] (reference-counted) or boxed values
//! moved into the receiver's mailbox: nothing is serialized or copied.
//! Creating a communicator of `n` ranks allocates `n` mailboxes and nothing
//! else.
//!
//! All-reduce is a shared-memory reduce: each rank reduces its share of all
//! the ranks' buffers in place, in rank order, and writes the result into
//! every buffer, so each byte is read once and written once and no message
//! carries data (see the group layer's `all_reduce` module).
//!
//! ```
//! use deeprc_comm::{local, Communicator};
//! use bytes::Bytes;
//!
//! let got = local::launch(4, |comm| {
//!     let parts = (0..comm.size()).map(|j| Bytes::from(vec![comm.rank() as u8; j])).collect();
//!     comm.all_to_all_v(parts)
//! })
//! .unwrap();
//! // Rank 2 received j=2 bytes from every rank r, each holding r.
//! assert_eq!(got[2][3], Bytes::from(vec![3u8; 2]));
//! ```

use crate::{
    group::{Group, Transport},
    mailbox::{Key, Mailbox, Payload},
    pool::{BufferPool, POOL_BYTES},
    AnyBox, Backend, CommConfig, CommError, DType, ReduceOp, Result, Tag,
};
use bytes::Bytes;
use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

#[derive(Debug)]
struct Hub {
    mailboxes: Vec<Mailbox>,
    departed: Vec<AtomicBool>,
    config: CommConfig,
    pool: Arc<BufferPool>,
}

/// One thread rank's end of the hub. Dropping it (with every communicator
/// split from it) tells the other ranks this one is gone.
#[derive(Debug)]
struct Endpoint {
    hub: Arc<Hub>,
    rank: usize,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.hub.departed[self.rank].store(true, Ordering::SeqCst);
        let reason = format!(
            "rank {} left the group (its communicator was dropped)",
            self.rank
        );
        for (r, m) in self.hub.mailboxes.iter().enumerate() {
            if r != self.rank {
                m.mark_lost(self.rank, reason.clone());
            }
        }
    }
}

impl Transport for Endpoint {
    fn backend(&self) -> Backend {
        Backend::Local
    }

    fn world_rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.hub.mailboxes.len()
    }

    fn supports_objects(&self) -> bool {
        true
    }

    fn shares_memory(&self) -> bool {
        true
    }

    fn pool(&self) -> &Arc<BufferPool> {
        &self.hub.pool
    }

    fn send(&self, op: &'static str, dst: usize, key: Key, payload: Payload) -> Result<()> {
        if self.hub.departed[dst].load(Ordering::SeqCst) {
            return Err(CommError::PeerLost {
                op,
                peer: dst,
                reason: format!("rank {dst} left the group"),
            });
        }
        self.hub.mailboxes[dst].push(self.rank, key, payload);
        Ok(())
    }

    fn recv(&self, op: &'static str, src: usize, key: Key) -> Result<Payload> {
        self.hub.mailboxes[self.rank].pop(op, src, key, self.hub.config.timeout)
    }
}

/// A communicator whose ranks are threads of this process.
#[derive(Debug)]
pub struct LocalComm {
    group: Group,
}

/// Creates the `n` communicators of a thread group, one per rank, to be
/// moved into `n` threads.
///
/// ```
/// use deeprc_comm::{local, CommConfig, Communicator};
/// let comms = local::create(2, CommConfig::default()).unwrap();
/// let handles: Vec<_> = comms
///     .into_iter()
///     .map(|c| std::thread::spawn(move || c.barrier().map(|_| c.rank())))
///     .collect();
/// let ranks: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
/// assert_eq!(ranks, vec![0, 1]);
/// ```
pub fn create(n: usize, config: CommConfig) -> Result<Vec<LocalComm>> {
    if n == 0 {
        return Err(CommError::invalid(
            "local::create",
            "a group needs at least one rank",
        ));
    }
    let hub = Arc::new(Hub {
        mailboxes: (0..n)
            .map(|_| Mailbox::polling(crate::mailbox::THREAD_SPIN))
            .collect(),
        departed: (0..n).map(|_| AtomicBool::new(false)).collect(),
        config,
        pool: BufferPool::new(POOL_BYTES),
    });
    Ok((0..n)
        .map(|rank| {
            let ep: Arc<dyn Transport> = Arc::new(Endpoint {
                hub: Arc::clone(&hub),
                rank,
            });
            LocalComm {
                group: Group::world(ep),
            }
        })
        .collect())
}

/// Runs `f` on `n` threads, each with its rank's communicator, with the
/// default [`CommConfig`]; returns the results in rank order.
///
/// A panic in a rank becomes [`CommError::RankPanicked`]; the other ranks'
/// pending operations with it fail with [`CommError::PeerLost`]. When several
/// ranks fail, the error returned is the first one that is not a mere
/// consequence of another rank's failure.
pub fn launch<R, E, F>(n: usize, f: F) -> Result<Vec<R>, E>
where
    F: Fn(LocalComm) -> Result<R, E> + Sync,
    R: Send,
    E: From<CommError> + Send + AsPeerFailure,
{
    launch_with(n, CommConfig::default(), f)
}

/// Errors that can say whether they only report another rank's failure, so
/// that [`launch`] can return the root cause.
pub trait AsPeerFailure {
    /// `true` when this error only says that a peer failed.
    fn is_peer_failure(&self) -> bool;
}

impl AsPeerFailure for CommError {
    fn is_peer_failure(&self) -> bool {
        CommError::is_peer_failure(self)
    }
}

/// [`launch`] with an explicit configuration.
pub fn launch_with<R, E, F>(n: usize, config: CommConfig, f: F) -> Result<Vec<R>, E>
where
    F: Fn(LocalComm) -> Result<R, E> + Sync,
    R: Send,
    E: From<CommError> + Send + AsPeerFailure,
{
    let comms = create(n, config)?;
    let results: Vec<Result<R, E>> = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .enumerate()
            .map(|(rank, comm)| {
                let f = &f;
                std::thread::Builder::new()
                    .name(format!("deeprc-rank-{rank}"))
                    .spawn_scoped(s, move || {
                        catch_unwind(AssertUnwindSafe(|| f(comm))).unwrap_or_else(|p| {
                            Err(E::from(CommError::RankPanicked {
                                rank,
                                message: panic_message(&*p),
                            }))
                        })
                    })
                    .map_err(|e| CommError::io("spawning a rank thread", e))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().unwrap_or_else(|p| {
                    Err(E::from(CommError::RankPanicked {
                        rank: usize::MAX,
                        message: panic_message(&*p),
                    }))
                }),
                Err(e) => Err(E::from(e)),
            })
            .collect()
    });
    let mut first_peer_failure = None;
    let mut oks = Vec::with_capacity(n);
    for r in results {
        match r {
            Ok(v) => oks.push(v),
            Err(e) if e.is_peer_failure() => {
                first_peer_failure.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    match first_peer_failure {
        Some(e) => Err(e),
        None => Ok(oks),
    }
}

pub(crate) use deeprc_core::sync::panic_message;

crate::delegate_communicator!(LocalComm);
