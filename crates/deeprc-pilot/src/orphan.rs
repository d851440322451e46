//! A worker process whose client is gone ends at once, even in the middle
//! of a task: without this, a worker of a client killed by SIGKILL (or by
//! the out-of-memory killer) ran its task to the end, an orphan holding its
//! cores, its memory and its GPU for as long as the task lasted.
//!
//! The client spawns its workers itself, so a worker's parent is the
//! client; when the client dies the kernel gives the worker another parent
//! (init or a subreaper). A thread notes the parent at start and exits the
//! process when it changes (checked every 50 ms). A worker started through
//! a wrapper that stays alive (a shell without `exec`) has the wrapper as
//! its parent and is not covered.

use std::{io, os::unix::process::parent_id, thread, time::Duration};

/// Starts the watch on this process's parent.
pub(crate) fn exit_when_orphaned() -> io::Result<()> {
    let parent = parent_id();
    thread::Builder::new()
        .name("deeprc-worker-watch".into())
        .spawn(move || {
            while parent_id() == parent {
                thread::sleep(Duration::from_millis(50));
            }
            eprintln!(
                "deeprc-pilot worker {}: its client (pid {parent}) is gone; exiting, a running \
                 task included",
                std::process::id()
            );
            std::process::exit(0);
        })?;
    Ok(())
}
