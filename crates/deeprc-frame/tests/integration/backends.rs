//! The distributed battery over process backends: tcp ranks as threads of
//! this process, tcp ranks as real processes (this test binary
//! re-executed, one process per rank, exchanging Arrow IPC), and ranks on
//! 3 hosts of the namespace Slurm cluster over tcp and UCX, started by
//! `srun` with nothing but the backend's name set.

use super::common::*;
use super::dist_ops::{battery, case};
use deeprc_comm::tcp::TcpComm;
use deeprc_comm::Communicator;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn every_operator_on_tcp_ranks_in_threads() {
    for n in [2, 3, 5] {
        let c = case(n as u64, n);
        for (r, res) in on_tcp_threads(n, |comm| {
            assert!(!comm.supports_objects());
            battery(comm, &c)
        })
        .into_iter()
        .enumerate()
        {
            res.unwrap_or_else(|e| panic!("{n} tcp ranks, rank {r}: {e}"));
        }
    }
}

#[test]
fn every_operator_on_tcp_rank_processes() {
    for n in [2, 3] {
        let dir = temp_dir("procs");
        let exe = std::env::current_exe().unwrap();
        let kids: Vec<_> = (0..n)
            .map(|r| {
                Command::new(&exe)
                    .args([
                        "backends::tcp_rank_process",
                        "--exact",
                        "--ignored",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env("DEEPRC_RANK", r.to_string())
                    .env("DEEPRC_WORLD_SIZE", n.to_string())
                    .env("DEEPRC_STORE", dir.display().to_string())
                    .env("DEEPRC_TOKEN", "frame-test-token-0123")
                    .env("DEEPRC_FRAME_TEST_RANK", "1")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (r, mut k) in kids.into_iter().enumerate() {
            let start = Instant::now();
            while k.try_wait().unwrap().is_none() {
                if start.elapsed() > Duration::from_secs(180) {
                    let _ = k.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let out = k.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stdout.contains("RESULT ok"),
                "rank {r} of {n}: {stdout}\n{stderr}"
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The entry point of the rank processes of the test above.
#[test]
#[ignore = "run by every_operator_on_tcp_rank_processes in child processes"]
fn tcp_rank_process() {
    if std::env::var_os("DEEPRC_FRAME_TEST_RANK").is_none() {
        return;
    }
    let comm: Arc<dyn Communicator> = Arc::new(TcpComm::from_env().unwrap());
    let n = comm.size();
    let c = case(n as u64 + 10, n);
    match battery(comm, &c) {
        Ok(k) => println!("RESULT ok {k}"),
        Err(e) => println!("RESULT err {e}"),
    }
}

/// Every operator on 3 ranks, one per host of the namespace cluster,
/// started by srun; each rank finds its place from Slurm's variables.
fn across_three_hosts(backend: &str) {
    if !super::cluster::cluster() {
        return;
    }
    let dir = super::cluster::scratch(&format!("frame-hosts-{backend}"));
    let mut cmd =
        super::cluster::srun_self("backends::hosts_rank_process", 3, 1, backend, &[], &dir);
    cmd.env("DEEPRC_FRAME_TEST_RANK", "1");
    let out = cmd.output().expect("srun runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let hosts: std::collections::BTreeSet<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once("RESULT ok ").map(|(_, r)| r))
        .filter_map(|r| r.split_whitespace().nth(1))
        .collect();
    assert!(
        out.status.success() && hosts.len() == 3,
        "{backend} on 3 hosts ({hosts:?}):\n{stdout}\n{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_operator_across_three_hosts_over_tcp() {
    across_three_hosts("tcp");
}

#[cfg(feature = "ucx")]
#[test]
fn every_operator_across_three_hosts_over_ucx() {
    across_three_hosts("ucx");
}

/// The entry point of the ranks srun starts for the tests above.
#[test]
#[ignore = "run by srun in every_operator_across_three_hosts_*"]
fn hosts_rank_process() {
    if std::env::var_os("DEEPRC_FRAME_TEST_RANK").is_none() {
        return;
    }
    let comm = deeprc_comm::from_env().unwrap();
    let n = comm.size();
    let c = case(n as u64 + 20, n);
    let backend = comm.backend();
    match battery(comm, &c) {
        Ok(k) => println!("RESULT ok {k} {} {backend}", super::cluster::hostname()),
        Err(e) => println!("RESULT err {e}"),
    }
}
