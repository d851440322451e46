//! The conformance suite over every backend compiled in, for 1, 2, 3, 4
//! and 7 ranks, with 256 MiB in total through the large all-to-all; and the
//! all-reduce contract (bitwise rank-order results, the same on every rank)
//! for 1 to 7 thread ranks, tcp ranks as threads and as processes.

mod common;

use deeprc_comm::{
    conformance::{all_reduce_rank_order, odd_lengths, run_all, Sizes},
    local,
    tcp::{StoreSpec, TcpComm, TcpOptions},
    CommConfig, CommError, Communicator, CommunicatorExt, DType, ReduceOp,
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

/// Cases [`all_reduce_rank_order`] checks for `lengths`.
fn rank_order_cases(lengths: &[usize]) -> usize {
    lengths
        .iter()
        .map(|&l| if l > 1 << 16 { 6 } else { 40 })
        .sum()
}

/// Large lengths (several pipeline segments per rank) up to 4 ranks.
fn rank_order_lengths(n: usize) -> Vec<usize> {
    odd_lengths(n, n <= 4)
}

#[test]
fn local_all_reduce_rank_order_1_to_7() {
    for n in 1..=7 {
        let lengths = rank_order_lengths(n);
        let cases = local::launch(n, |c| all_reduce_rank_order(&c, &lengths)).unwrap();
        assert_eq!(cases, vec![rank_order_cases(&lengths); n], "{n} ranks");
    }
}

#[test]
fn local_all_reduce_rank_order_on_sub_communicators() {
    // Two groups of 3 and 2 ranks reduce at the same time, then the world.
    let cases = local::launch(5, |c| {
        let sub = c.split(Some((c.rank() % 2) as u32), 0)?.unwrap();
        let k = all_reduce_rank_order(&*sub, &odd_lengths(sub.size(), false))?;
        Ok::<_, CommError>(k + all_reduce_rank_order(&c, &[0, 3, 1001])?)
    })
    .unwrap();
    assert!(cases.iter().all(|&k| k > 0));
}

#[test]
fn local_all_reduce_failures_are_errors() {
    let cfg = CommConfig::default().with_timeout(Duration::from_millis(300));
    // A rank that does not take part: the other times out, naming it.
    let out: Vec<Result<(), CommError>> = std::thread::scope(|s| {
        let hs: Vec<_> = local::create(2, cfg.clone())
            .unwrap()
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    if c.rank() == 1 {
                        std::thread::sleep(Duration::from_millis(900));
                        return Ok(());
                    }
                    let mut v = vec![1.0f32; 1 << 16];
                    c.all_reduce(&mut v, ReduceOp::Sum)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        matches!(out[0], Err(CommError::Timeout { peer: 1, .. })),
        "{:?}",
        out[0]
    );
    // A rank that left: the other fails at once.
    let out: Vec<Result<(), CommError>> = std::thread::scope(|s| {
        let hs: Vec<_> = local::create(3, cfg.clone())
            .unwrap()
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    if c.rank() == 2 {
                        return Ok(());
                    }
                    let mut v = vec![1u64; 1000];
                    c.all_reduce(&mut v, ReduceOp::Max)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // (A rank may also see the other survivor leave after its own failure.)
    for r in &out[..2] {
        assert!(matches!(r, Err(CommError::PeerLost { .. })), "{r:?}");
    }
    assert!(
        out[..2]
            .iter()
            .any(|r| matches!(r, Err(CommError::PeerLost { peer: 2, .. }))),
        "{out:?}"
    );
    // Disagreeing lengths or types are refused on every rank, and the
    // communicator still works afterwards.
    local::launch_with(3, cfg, |c| {
        let mut v = vec![0u8; 40 + 4 * c.rank()];
        let e = c.all_reduce_raw(&mut v, DType::F32, ReduceOp::Sum);
        assert!(matches!(e, Err(CommError::SizeMismatch { .. })), "{e:?}");
        let mut v = vec![0u8; 64];
        let dtype = if c.rank() == 0 {
            DType::U32
        } else {
            DType::I32
        };
        let e = c.all_reduce_raw(&mut v, dtype, ReduceOp::Sum);
        assert!(matches!(e, Err(CommError::InvalidArgument { .. })), "{e:?}");
        assert_eq!(c.all_reduce_scalar(c.rank() as u32, ReduceOp::Sum)?, 3);
        Ok::<_, CommError>(())
    })
    .unwrap();
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
fn tcp_all_reduce_rank_order_in_threads_1_to_7() {
    for n in 1..=7 {
        let lengths = rank_order_lengths(n);
        for r in tcp_in_threads(n, CommConfig::default(), |c| {
            all_reduce_rank_order(&c, &lengths)
        }) {
            assert_eq!(r.unwrap(), rank_order_cases(&lengths), "{n} ranks");
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
            let want = format!(
                "ok 12 rank-order {}",
                rank_order_cases(&rank_order_lengths(n))
            );
            assert!(
                common::result_line(&out).starts_with(&want),
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
    let outcome = run_all(&comm, sizes(n))
        .and_then(|p| all_reduce_rank_order(&comm, &rank_order_lengths(n)).map(|k| (p.len(), k)));
    match outcome {
        Ok((p, k)) => println!("RESULT ok {p} rank-order {k} setup {:?}", comm.setup_time()),
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
