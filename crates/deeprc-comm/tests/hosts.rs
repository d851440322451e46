//! Communicators between real hosts: the conformance suite and the
//! all-reduce contract on 4 ranks over 2 nodes of the namespace Slurm
//! cluster (each node its own network namespace, address and hostname),
//! started by `srun` with nothing but the backend's name in the
//! environment: each rank finds its place, the store and its address from
//! Slurm's variables ([`deeprc_comm::launcher`]). tcp, UCX (feature `ucx`)
//! and MPI under `srun --mpi=pmix` (feature `mpi`).

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use deeprc_comm::conformance::{all_reduce_rank_order, odd_lengths, run_all, Sizes};
use std::{collections::BTreeSet, time::Duration};

const RANKS: usize = 4;

/// Runs the entry `hosts_rank` of this binary as 4 ranks on 2 nodes with
/// `srun` (plus `extra` arguments and `env`) and checks that every rank
/// passed, on 2 distinct hosts.
fn across_two_nodes(backend: &str, extra: &[&str], env: &[(&str, &str)]) {
    if !cluster::cluster() {
        return;
    }
    let dir = cluster::scratch(&format!("hosts-{backend}"));
    let mut cmd = cluster::srun_self("hosts_rank", RANKS, 2, backend, extra, &dir);
    cmd.env("DEEPRC_TEST_RANK_PROCESS", "1");
    cmd.envs(env.iter().copied());
    let child = cmd.spawn().expect("srun runs");
    let (code, out, took) = common::wait_output(child, Duration::from_secs(300));
    let results: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .collect();
    assert_eq!(code, Some(0), "srun ({backend}) after {took:?}:\n{out}");
    assert_eq!(
        results.len(),
        RANKS,
        "one result per rank ({backend}):\n{out}"
    );
    let mut hosts = BTreeSet::new();
    for r in &results {
        let f: Vec<&str> = r.split_whitespace().collect();
        assert_eq!(f.first(), Some(&"ok"), "{backend}: {r}");
        assert_eq!(f.get(1), Some(&backend), "{backend}: {r}");
        hosts.insert(f[2].to_string());
    }
    assert_eq!(hosts.len(), 2, "ranks on two hosts ({backend}): {hosts:?}");
    println!("{backend}: 4 ranks on {hosts:?} passed in {took:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tcp_across_two_nodes_under_srun() {
    across_two_nodes("tcp", &[], &[]);
}

#[cfg(feature = "ucx")]
#[test]
fn ucx_across_two_nodes_under_srun() {
    across_two_nodes("ucx", &[], &[]);
}

#[cfg(feature = "mpi")]
#[test]
fn mpi_across_two_nodes_under_srun_pmix() {
    across_two_nodes("mpi", &["--mpi=pmix"], &[]);
}

#[test]
#[ignore = "entry point of the ranks srun starts in the tests of this file"]
fn hosts_rank() {
    if !common::is_rank_process() {
        return;
    }
    let comm = deeprc_comm::from_env().unwrap();
    assert_eq!(comm.size(), RANKS);
    // MPI reduces in its own order (its results are the same on every
    // rank, not bitwise the sequential fold), so only our own backends are
    // held to the rank-order contract.
    let ours = comm.backend() != deeprc_comm::Backend::Mpi;
    let outcome = run_all(
        &*comm,
        Sizes {
            large_bytes: 4 << 20,
        },
    )
    .and_then(|p| {
        let k = if ours {
            all_reduce_rank_order(&*comm, &odd_lengths(RANKS, true))?
        } else {
            0
        };
        Ok((p.len(), k))
    });
    match outcome {
        Ok((cases, k)) => println!(
            "RESULT ok {} {} rank {} cases {cases} rank-order {k}",
            comm.backend(),
            cluster::hostname(),
            comm.rank()
        ),
        Err(e) => println!("RESULT err {} {e}", comm.backend()),
    }
}
