//! The conformance suite over every backend compiled in, for 1, 2, 3, 4
//! and 7 ranks, with 256 MiB in total through the large all-to-all.

mod common;

use deeprc_comm::{
    conformance::{run_all, Sizes},
    local,
    tcp::{StoreSpec, TcpComm, TcpOptions},
    CommConfig, CommError, Communicator,
};
use std::time::Duration;

const TOTAL_LARGE: usize = 256 << 20;

fn sizes(n: usize) -> Sizes {
    // The 4-rank runs move 256 MiB in total through the large all-to-all.
    Sizes {
        large_bytes: if n == 4 { TOTAL_LARGE / n } else { 1 << 20 },
    }
}

#[test]
fn local_conformance_1_2_3_4_7() {
    for n in [1, 2, 3, 4, 7] {
        let passed = local::launch(n, |c| run_all(&c, sizes(n))).unwrap();
        assert_eq!(passed.len(), n);
        assert_eq!(passed[0].len(), 12, "every case ran");
    }
}

/// tcp ranks as threads of this process: the full wire path, no launcher.
fn tcp_in_threads<R: Send>(
    n: usize,
    config: CommConfig,
    f: impl Fn(TcpComm) -> Result<R, CommError> + Sync,
) -> Vec<Result<R, CommError>> {
    let dir = common::temp_dir("tcp-threads");
    let token = format!("tok-{n}");
    let out = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|r| {
                let (dir, token, config, f) = (&dir, &token, &config, &f);
                s.spawn(move || {
                    let o = TcpOptions::new(r, n, StoreSpec::Dir(dir.clone()), token.clone())
                        .with_config(config.clone());
                    f(TcpComm::connect(o)?)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    std::fs::remove_dir_all(dir).unwrap();
    out
}

#[test]
fn tcp_conformance_in_threads_1_2_3_4_7() {
    for n in [1, 2, 3, 7] {
        for r in tcp_in_threads(n, CommConfig::default(), |c| run_all(&c, sizes(n))) {
            assert_eq!(r.unwrap().len(), 12);
        }
    }
}

#[test]
fn tcp_conformance_in_processes_2_and_4() {
    for n in [2, 4] {
        let port = common::free_port();
        let store = format!("127.0.0.1:{port}");
        let kids = common::spawn_ranks(
            n,
            "tcp_conformance_rank",
            &store,
            &[("DEEPRC_TEST_N", n.to_string())],
        );
        for (r, k) in kids.into_iter().enumerate() {
            let (code, out, _) = common::wait_output(k, Duration::from_secs(300));
            assert_eq!(code, Some(0), "rank {r} of {n}: {out}");
            assert!(
                common::result_line(&out).starts_with("ok 12"),
                "rank {r} of {n}: {out}"
            );
        }
    }
}

#[test]
#[ignore = "entry point of the rank processes of tcp_conformance_in_processes_2_and_4"]
fn tcp_conformance_rank() {
    if !common::is_rank_process() {
        return;
    }
    let n: usize = std::env::var("DEEPRC_TEST_N").unwrap().parse().unwrap();
    let comm = TcpComm::from_env().unwrap();
    assert_eq!(comm.size(), n);
    match run_all(&comm, sizes(n)) {
        Ok(p) => println!("RESULT ok {} setup {:?}", p.len(), comm.setup_time()),
        Err(e) => println!("RESULT err {e}"),
    }
}

#[test]
fn tcp_in_threads_timeout_is_bounded() {
    // Rank 1 never takes part: rank 0 must fail in about the timeout.
    let cfg = CommConfig::default().with_timeout(Duration::from_millis(300));
    let out = tcp_in_threads(2, cfg, |c| {
        if c.rank() == 1 {
            std::thread::sleep(Duration::from_millis(900));
            return Ok(());
        }
        c.barrier()
    });
    assert!(
        matches!(out[0], Err(CommError::Timeout { peer: 1, .. })),
        "{:?}",
        out[0]
    );
}
