//! The namespace Slurm cluster of the multi-host tests
//! (`scripts/netns-slurm.sh up 3 4`: slurmctld on this host, one slurmd per
//! node in its own network namespace with its own hostname, address and
//! /tmp). Shared by deeprc-comm's `hosts.rs` and deeprc-pilot's `slurm.rs`
//! (which includes this file by path). Needs root, as CI has; without it
//! the tests fail and say why, and `DEEPRC_NO_SLURM=1` skips them
//! explicitly.

#![allow(dead_code, unreachable_pub)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Nodes of the test cluster.
pub const NODES: usize = 3;
/// CPUs of each node.
pub const CPUS: usize = 4;

/// Starts the cluster unless it is up (the script is idempotent and
/// serialised); `false` when `DEEPRC_NO_SLURM=1`.
pub fn cluster() -> bool {
    if std::env::var("DEEPRC_NO_SLURM").as_deref() == Ok("1") {
        eprintln!("DEEPRC_NO_SLURM=1: the Slurm cluster test is skipped");
        return false;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/netns-slurm.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["up", &NODES.to_string(), &CPUS.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "the Slurm test cluster did not start ({} up {NODES} {CPUS}: {}):\n{}\n{}\n\
         These tests need root and a real Slurm; set DEEPRC_NO_SLURM=1 to skip them.",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// A fresh folder on the file system every node shares.
pub fn scratch(name: &str) -> PathBuf {
    // The namespace cluster shares every file system but /tmp: each node
    // mounts its own there. A checkout under /tmp has its test binaries
    // and sandboxes where no node can see them, and the tests failed with
    // `couldn't chdir ... No such file or directory` from slurmstepd.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    assert!(
        !target.starts_with("/tmp"),
        "the target directory {} is under /tmp, which each node of the namespace Slurm \
         cluster mounts privately (scripts/netns-slurm.sh): check the repository out (or set \
         CARGO_TARGET_DIR) outside /tmp to run the Slurm tests",
        target.display()
    );
    let d = target
        .join("slurm")
        .join(format!("{name}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `srun` running the ignored test `entry` of this test binary as `ranks`
/// ranks, `per_node` on each node, in `dir`, with `DEEPRC_BACKEND` set to
/// `backend` and none of the `DEEPRC_*` placement variables (each rank
/// finds its place from Slurm's); `extra` goes to srun. Output is piped.
pub fn srun_self(
    entry: &str,
    ranks: usize,
    per_node: usize,
    backend: &str,
    extra: &[&str],
    dir: &Path,
) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("srun");
    cmd.arg(format!("--ntasks={ranks}"))
        .arg(format!("--ntasks-per-node={per_node}"))
        .args(["-t", "5", "--kill-on-bad-exit=1"])
        .args(extra)
        .arg(&exe)
        .args([
            entry,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .current_dir(dir)
        .env("DEEPRC_BACKEND", backend)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for v in [
        "DEEPRC_RANK",
        "DEEPRC_WORLD_SIZE",
        "DEEPRC_STORE",
        "DEEPRC_TOKEN",
    ] {
        cmd.env_remove(v);
    }
    cmd
}

/// This host's name as its UTS namespace says (a node's name under srun).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
