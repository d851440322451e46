//! The conformance suite and the all-reduce contract on the `ucx` backend:
//! ranks as threads of this process and as processes (one host; across
//! namespace hosts in `hosts.rs`), and its failures as errors.

#![cfg(feature = "ucx")]

mod common;

use deeprc_comm::{
    conformance::{all_reduce_rank_order, odd_lengths, run_all, Sizes},
    tcp::StoreSpec,
    ucx::{UcxComm, UcxOptions},
    CommConfig, CommError, Communicator,
};
use std::time::Duration;

fn sizes(n: usize) -> Sizes {
    Sizes {
        large_bytes: if n == 4 { (256 << 20) / n } else { 1 << 20 },
    }
}

/// ucx ranks as threads of this process, meeting in a folder store.
fn ucx_in_threads<R: Send>(
    n: usize,
    config: CommConfig,
    f: impl Fn(UcxComm) -> Result<R, CommError> + Sync,
) -> Vec<Result<R, CommError>> {
    let dir = common::temp_dir("ucx-threads");
    let out = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|r| {
                let (dir, config, f) = (&dir, &config, &f);
                s.spawn(move || {
                    let o = UcxOptions::new(r, n, StoreSpec::Dir(dir.clone()), "ucx-token")
                        .with_config(config.clone());
                    f(UcxComm::connect(o)?)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    std::fs::remove_dir_all(dir).unwrap();
    out
}

#[test]
fn ucx_conformance_in_threads_1_2_3_4_7() {
    for n in [1, 2, 3, 4, 7] {
        for r in ucx_in_threads(n, CommConfig::default(), |c| run_all(&c, sizes(n))) {
            assert_eq!(r.unwrap().len(), 12, "{n} ranks");
        }
    }
}

#[test]
fn ucx_all_reduce_rank_order_in_threads_1_to_7() {
    for n in 1..=7 {
        let lengths = odd_lengths(n, n <= 4);
        let results = ucx_in_threads(n, CommConfig::default(), |c| {
            all_reduce_rank_order(&c, &lengths)
        });
        for r in results {
            assert!(r.unwrap() > 0, "{n} ranks");
        }
    }
}

/// With peer error handling on this host too (tcp loopback instead of
/// shared memory) the suite passes as well.
#[test]
fn ucx_conformance_with_peer_errors_on_host() {
    let dir = common::temp_dir("ucx-shm");
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|r| {
                let dir = &dir;
                s.spawn(move || {
                    let o = UcxOptions::new(r, 3, StoreSpec::Dir(dir.clone()), "ucx-token")
                        .with_peer_errors_on_host(true);
                    run_all(&UcxComm::connect(o)?, sizes(3))
                })
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap().unwrap().len(), 12);
        }
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn ucx_conformance_in_processes_2_and_4() {
    for n in [2, 4] {
        let store = format!("127.0.0.1:{}", common::free_port());
        let env = [
            ("DEEPRC_TEST_N", n.to_string()),
            ("DEEPRC_BACKEND", "ucx".into()),
        ];
        let kids = common::spawn_ranks(n, "ucx_rank", &store, &env);
        for (r, k) in kids.into_iter().enumerate() {
            let (code, out, _) = common::wait_output(k, Duration::from_secs(300));
            assert_eq!(code, Some(0), "rank {r} of {n}: {out}");
            assert!(
                common::result_line(&out).starts_with("ok 12 rank-order"),
                "rank {r} of {n}: {out}"
            );
        }
    }
}

#[test]
#[ignore = "entry point of the rank processes of the ucx process tests"]
fn ucx_rank() {
    if !common::is_rank_process() {
        return;
    }
    let n: usize = std::env::var("DEEPRC_TEST_N").unwrap().parse().unwrap();
    let comm = deeprc_comm::from_env().unwrap();
    assert_eq!(
        (comm.size(), comm.backend()),
        (n, deeprc_comm::Backend::Ucx)
    );
    if std::env::var_os("DEEPRC_TEST_DIE").is_some() {
        // Rank 1 dies in the middle of an all-to-all; the others must fail
        // naming it, long before the 60 s timeout.
        comm.barrier().unwrap();
        if comm.rank() == 1 {
            // Sends are queued for the progress thread: give the barrier's
            // last message time to leave before dying.
            std::thread::sleep(Duration::from_millis(300));
            std::process::abort();
        }
        let start = std::time::Instant::now();
        let parts = (0..n)
            .map(|_| bytes::Bytes::from(vec![7u8; 1 << 20]))
            .collect();
        match comm.all_to_all_v(parts) {
            Err(e @ CommError::PeerLost { .. }) => {
                println!("RESULT lost {:?} {e}", start.elapsed())
            }
            other => println!("RESULT unexpected {:?}", other.map(|v| v.len())),
        }
        return;
    }
    let outcome = run_all(&*comm, sizes(n))
        .and_then(|p| all_reduce_rank_order(&*comm, &odd_lengths(n, true)).map(|k| (p.len(), k)));
    match outcome {
        Ok((p, k)) => println!("RESULT ok {p} rank-order {k}"),
        Err(e) => println!("RESULT err {e}"),
    }
}

#[test]
fn a_killed_ucx_rank_fails_its_peers_at_once() {
    let n = 3;
    let store = format!("127.0.0.1:{}", common::free_port());
    let kids = common::spawn_ranks(
        n,
        "ucx_rank",
        &store,
        &[
            ("DEEPRC_TEST_N", n.to_string()),
            ("DEEPRC_TEST_DIE", "1".into()),
            ("DEEPRC_TIMEOUT_MS", "60000".into()),
            ("DEEPRC_BACKEND", "ucx".into()),
        ],
    );
    for (r, k) in kids.into_iter().enumerate() {
        let (code, out, _) = common::wait_output(k, Duration::from_secs(120));
        println!("rank {r}: {}", common::result_line(&out));
        if r == 1 {
            assert_ne!(code, Some(0), "rank 1 aborted");
            continue;
        }
        assert_eq!(code, Some(0), "rank {r}: {out}");
        let line = common::result_line(&out);
        assert!(line.starts_with("lost "), "rank {r}: {line}");
        assert!(
            line.contains("rank 1"),
            "rank {r} names the dead rank: {line}"
        );
    }
}

#[test]
fn a_message_over_the_limit_is_refused() {
    let cfg = CommConfig::default().with_max_frame_bytes(1024);
    let out = ucx_in_threads(2, cfg, |c| {
        if c.rank() == 1 {
            c.send(0, 5, bytes::Bytes::from(vec![1u8; 4096]))?;
            return Ok(String::new());
        }
        match c.recv(1, 5) {
            Err(CommError::PeerLost { reason, .. }) => Ok(reason),
            other => Ok(format!("unexpected {:?}", other.map(|b| b.len()))),
        }
    });
    let reason = out.into_iter().next().unwrap().unwrap();
    assert!(reason.contains("over the 1024-byte limit"), "{reason}");
}
