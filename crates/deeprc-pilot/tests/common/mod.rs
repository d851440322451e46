//! Helpers shared by the integration test binaries.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub(crate) mod functions;

use deeprc_pilot::{Pilot, PilotDescription, Session, TaskManager};
use std::path::{Path, PathBuf};

/// The worker host binary (the test functions + the worker entry point).
pub(crate) fn host() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deeprc-pilot-test-host"))
}

/// A fresh directory for one test, removed when dropped.
pub(crate) struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory for one test.
pub(crate) fn scratch(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("deeprc-pilot-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

/// A fresh directory in memory (`/dev/shm`) when there is one: sandboxes of
/// thousands of tasks are created and removed there much faster than on a
/// disk.
pub(crate) fn scratch_in_memory(name: &str) -> Scratch {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return scratch(name);
    }
    let d = shm.join(format!("deeprc-pilot-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

/// A session with the test functions, a pilot of `desc` (worker host set)
/// and a task manager using it.
pub(crate) fn setup(name: &str, desc: PilotDescription) -> (Session, Pilot, TaskManager, Scratch) {
    setup_in(scratch(name), desc)
}

/// [`setup`] in a given directory.
pub(crate) fn setup_in(
    dir: Scratch,
    desc: PilotDescription,
) -> (Session, Pilot, TaskManager, Scratch) {
    let (session, pilot, tmgr) = session_in(&dir.join("sandbox"), desc);
    (session, pilot, tmgr, dir)
}

/// A session with the test functions and its sandbox at `sandbox`, a pilot
/// of `desc` (the worker host set unless `desc` names one) and a task
/// manager using it.
pub(crate) fn session_in(sandbox: &Path, desc: PilotDescription) -> (Session, Pilot, TaskManager) {
    let session = Session::builder()
        .registry(functions::registry())
        .sandbox(sandbox)
        .build()
        .unwrap();
    let desc = if desc.worker_executable.is_none() {
        desc.worker_executable(host())
    } else {
        desc
    };
    let pilot = session.pilot_manager().submit(desc).unwrap();
    let tmgr = session.task_manager();
    tmgr.add_pilot(&pilot).unwrap();
    (session, pilot, tmgr)
}
