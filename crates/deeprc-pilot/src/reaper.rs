//! The process-wide reaper: one thread that waits for every child process
//! the pilot starts (task processes, `mpirun`, worker processes) and calls
//! its exit callback.
//!
//! It blocks in `waitid(P_ALL, WEXITED | WNOWAIT)`, which reports an exited
//! child without reaping it; when the child is one of ours it is reaped
//! through its `std::process::Child`. Children the host program started
//! itself are never reaped here: while such a zombie waits for its owner,
//! the reaper polls its own children every half millisecond instead of
//! blocking. One reaper serves every session of the process.
//!
//! Children are reaped with `wait4` (not `Child::wait`), which also
//! returns their rusage: CPU time and peak RSS of the child and of the
//! descendants it waited for ([`ChildExit`]).

use crate::usage::{wait4, ChildExit};
use deeprc_core::sync::lock;
use nix::{
    errno::Errno,
    sys::{
        signal::Signal,
        wait::{waitid, Id, WaitPidFlag, WaitStatus},
    },
};
use std::{
    collections::HashMap,
    process::{Child, Command},
    sync::{Condvar, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

/// What to do when a child exits.
pub(crate) type OnExit = Box<dyn FnOnce(std::io::Result<ChildExit>) + Send>;

struct Watched {
    /// Kept for its pid and handles only: the child is reaped with `wait4`,
    /// never through it.
    child: Child,
    on_exit: OnExit,
    /// This process's peak RSS (KiB) when the child had been started: a
    /// bound on what Linux counts of the child's memory before its `exec`.
    spawner_max_rss_kib: u64,
}

#[derive(Default)]
struct State {
    children: HashMap<u32, Watched>,
    spawning: usize,
}

/// The reaper (see the module docs).
pub(crate) struct Reaper {
    state: Mutex<State>,
    changed: Condvar,
}

static REAPER: Mutex<Option<&'static Reaper>> = Mutex::new(None);

/// The process-wide reaper, started on first use.
pub(crate) fn reaper() -> std::io::Result<&'static Reaper> {
    let mut slot = lock(&REAPER);
    if let Some(r) = *slot {
        return Ok(r);
    }
    let r: &'static Reaper = Box::leak(Box::new(Reaper {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
    }));
    std::thread::Builder::new()
        .name("deeprc-reaper".to_string())
        .spawn(move || r.run())?;
    *slot = Some(r);
    Ok(r)
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Spawns `cmd` and calls `on_exit` from the reaper thread when it
    /// exits. Returns the child's pid.
    pub(crate) fn spawn(&self, cmd: &mut Command, on_exit: OnExit) -> std::io::Result<u32> {
        self.lock().spawning += 1;
        let spawned = cmd.spawn();
        // After the child's exec (`spawn` returns after it): see ChildExit.
        let spawner_max_rss_kib = crate::usage::self_usage().1;
        let mut st = self.lock();
        st.spawning -= 1;
        let out = spawned.map(|child| {
            let pid = child.id();
            st.children.insert(
                pid,
                Watched {
                    child,
                    on_exit,
                    spawner_max_rss_kib,
                },
            );
            pid
        });
        drop(st);
        self.changed.notify_all();
        out
    }

    /// Signals the process group led by `pid` if `pid` is still one of our
    /// unreaped children (so the pid cannot have been reused). Returns
    /// whether it was.
    pub(crate) fn signal_group(&self, pid: u32, sig: Signal) -> bool {
        let st = self.lock();
        if st.children.contains_key(&pid) {
            crate::sys::signal_group(pid, sig);
            true
        } else {
            false
        }
    }

    /// Signals the process `pid` if it is still one of our unreaped
    /// children.
    pub(crate) fn signal(&self, pid: u32, sig: Signal) -> bool {
        let st = self.lock();
        if st.children.contains_key(&pid) {
            crate::sys::signal_process(pid, sig);
            true
        } else {
            false
        }
    }

    fn run(&self) {
        loop {
            {
                let mut st = self.lock();
                while st.children.is_empty() {
                    st = self
                        .changed
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
            match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(ws) => {
                    if let Some(pid) = ws.pid() {
                        if !self.reap_if_ours(pid.as_raw() as u32) {
                            self.poll_until_no_foreign_zombie();
                        }
                    }
                }
                Err(Errno::EINTR) => {}
                // No child at all (ours were reaped by someone else), or
                // an unexpected error: poll ours.
                Err(_) => self.poll_until_no_foreign_zombie(),
            }
        }
    }

    /// Reaps `pid` if it is ours (waiting for a spawn in progress to
    /// register it). Returns `false` for a foreign child.
    fn reap_if_ours(&self, pid: u32) -> bool {
        let mut st = self.lock();
        loop {
            if let Some(w) = st.children.remove(&pid) {
                drop(st);
                Self::finish(w);
                return true;
            }
            if st.spawning == 0 {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, Duration::from_millis(5))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn finish(w: Watched) {
        let exit = wait4(w.child.id(), false)
            .and_then(|e| e.ok_or_else(|| std::io::Error::other("wait4 returned no child")));
        Self::report(w, exit);
    }

    fn report(w: Watched, exit: std::io::Result<ChildExit>) {
        // Reaped: dropping the `Child` only closes its handles.
        let Watched {
            child,
            on_exit,
            spawner_max_rss_kib,
        } = w;
        drop(child);
        on_exit(exit.map(|mut e| {
            e.spawner_max_rss_kib = spawner_max_rss_kib;
            e
        }));
    }

    /// A foreign zombie is present: poll our children until it is gone.
    fn poll_until_no_foreign_zombie(&self) {
        loop {
            std::thread::sleep(Duration::from_micros(500));
            let exited: Vec<(Watched, std::io::Result<ChildExit>)> = {
                let mut st = self.lock();
                let done: Vec<(u32, std::io::Result<ChildExit>)> = st
                    .children
                    .keys()
                    .filter_map(|&pid| match wait4(pid, true) {
                        Ok(None) => None,
                        Ok(Some(e)) => Some((pid, Ok(e))),
                        Err(e) => Some((pid, Err(e))),
                    })
                    .collect();
                done.into_iter()
                    .filter_map(|(pid, e)| st.children.remove(&pid).map(|w| (w, e)))
                    .collect()
            };
            for (w, e) in exited {
                Self::report(w, e);
            }
            match waitid(
                Id::All,
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG,
            ) {
                Ok(WaitStatus::StillAlive) => return,
                Ok(ws) => {
                    if let Some(pid) = ws.pid() {
                        if self.reap_if_ours(pid.as_raw() as u32) {
                            return;
                        }
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => {
                    if self.lock().children.is_empty() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn reaps_ours_and_tolerates_foreign_children() {
        let (tx, rx) = mpsc::channel();
        // A foreign child that exits and stays a zombie for a while.
        let mut foreign = Command::new("/bin/true").spawn().unwrap();
        for code in [0, 3] {
            let tx = tx.clone();
            reaper()
                .unwrap()
                .spawn(
                    Command::new("/bin/sh").args(["-c", &format!("exit {code}")]),
                    Box::new(move |st| tx.send(st.unwrap().status.code()).unwrap()),
                )
                .unwrap();
        }
        let mut got: Vec<Option<i32>> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, vec![Some(0), Some(3)]);
        // The foreign child is still ours to reap.
        assert!(foreign.wait().unwrap().success());
    }
}
