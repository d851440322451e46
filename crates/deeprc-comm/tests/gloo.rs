//! The gloo backend: the conformance suite over 1, 2, 3, 4 and 7 ranks as
//! threads with a directory store, a TCP store and Gloo's HashStore; ranks
//! as processes through `GlooComm::from_env`; and bounded failures when a
//! rank leaves or stops taking part.

#![cfg(feature = "gloo")]

mod common;

use deeprc_comm::{
    conformance::{all_reduce_rank_order, odd_lengths, run_all, Sizes},
    gloo::{GlooComm, GlooOptions, GlooStore, HashStore},
    tcp::StoreSpec,
    CommConfig, CommError, Communicator, CommunicatorExt, ReduceOp,
};
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

const TOTAL_LARGE: usize = 256 << 20;

fn sizes(n: usize) -> Sizes {
    // The 4-rank runs move 256 MiB in total through the large all-to-all.
    Sizes {
        large_bytes: if n == 4 { TOTAL_LARGE / n } else { 1 << 20 },
    }
}

/// Fails the whole test binary instead of letting a hang block CI.
struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    fn new(name: &'static str, limit: Duration) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        std::thread::spawn(move || {
            let start = Instant::now();
            while !flag.load(Ordering::SeqCst) {
                if start.elapsed() > limit {
                    eprintln!("{name}: still running after {limit:?}; aborting");
                    std::process::exit(101);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Dir,
    Tcp,
    Hash,
}

fn unique_token(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("gloo-{what}-{}-{nanos}", std::process::id())
}

/// `n` gloo ranks as threads of this process, each running `f`.
fn gloo_in_threads<R: Send>(
    n: usize,
    kind: Kind,
    config: CommConfig,
    f: impl Fn(GlooComm) -> Result<R, CommError> + Sync,
) -> Vec<Result<R, CommError>> {
    let dir = common::temp_dir("gloo-threads");
    let store: GlooStore = match kind {
        Kind::Dir => StoreSpec::Dir(dir.clone()).into(),
        Kind::Tcp => StoreSpec::Tcp(format!("127.0.0.1:{}", common::free_port())).into(),
        Kind::Hash => HashStore::new().into(),
    };
    let token = unique_token(&format!("{n}-{kind:?}"));
    let out = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|r| {
                let (store, token, config, f) = (&store, &token, &config, &f);
                s.spawn(move || {
                    let o = GlooOptions::new(r, n, store.clone(), token.clone())
                        .with_config(config.clone());
                    f(GlooComm::connect(o)?)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    std::fs::remove_dir_all(dir).unwrap();
    out
}

fn conformance(kind: Kind) {
    for n in [1, 2, 3, 4, 7] {
        let start = Instant::now();
        let out = gloo_in_threads(n, kind, CommConfig::default(), |c| {
            assert_eq!(c.size(), n);
            run_all(&c, sizes(n))
        });
        for (r, res) in out.into_iter().enumerate() {
            let passed = res.unwrap_or_else(|e| panic!("{kind:?} store, rank {r} of {n}: {e}"));
            assert_eq!(passed.len(), 12, "every case ran");
        }
        eprintln!("gloo {kind:?} store, {n} ranks: {:?}", start.elapsed());
    }
}

#[test]
fn gloo_conformance_dir_store_1_2_3_4_7() {
    let _w = Watchdog::new("dir store conformance", Duration::from_secs(600));
    conformance(Kind::Dir);
}

#[test]
fn gloo_conformance_tcp_store_1_2_3_4_7() {
    let _w = Watchdog::new("tcp store conformance", Duration::from_secs(600));
    conformance(Kind::Tcp);
}

/// Gloo reduces floats in rank order too: the same contract as local and tcp.
#[test]
fn gloo_all_reduce_rank_order_1_2_3_4_7() {
    let _w = Watchdog::new("rank-order all-reduce", Duration::from_secs(600));
    for n in [1, 2, 3, 4, 7] {
        let lengths = odd_lengths(n, false);
        let out = gloo_in_threads(n, Kind::Hash, CommConfig::default(), |c| {
            all_reduce_rank_order(&c, &lengths)
        });
        for (r, res) in out.into_iter().enumerate() {
            let cases = res.unwrap_or_else(|e| panic!("rank {r} of {n}: {e}"));
            assert_eq!(cases, 40 * lengths.len(), "rank {r} of {n}");
        }
    }
}

#[test]
fn gloo_hash_store_in_process() {
    let _w = Watchdog::new("hash store", Duration::from_secs(120));
    let out = gloo_in_threads(3, Kind::Hash, CommConfig::default(), |c| {
        let sub = c.split(Some(0), -(c.rank() as i64))?.unwrap();
        let x = sub.all_reduce_scalar(c.rank() as u64 + 1, ReduceOp::Prod)?;
        Ok((sub.rank(), x))
    });
    let got: Vec<_> = out.into_iter().map(Result::unwrap).collect();
    assert_eq!(got, vec![(2, 6), (1, 6), (0, 6)]);
}

#[test]
fn gloo_recv_timeout_leaves_the_communicator_usable() {
    let _w = Watchdog::new("recv timeout", Duration::from_secs(120));
    let timeout = Duration::from_millis(1000);
    let cfg = CommConfig::default().with_timeout(timeout);
    let out = gloo_in_threads(2, Kind::Dir, cfg, |c| {
        if c.rank() == 0 {
            let start = Instant::now();
            let e = c.recv(1, 9).unwrap_err();
            assert!(matches!(e, CommError::Timeout { peer: 1, .. }), "{e}");
            assert!(start.elapsed() < timeout * 3);
        } else {
            // Enter the barrier half a timeout after rank 0 does.
            std::thread::sleep(timeout * 3 / 2);
        }
        c.barrier()?;
        c.send(1 - c.rank(), 3, bytes::Bytes::from_static(b"after"))?;
        let b = c.recv(1 - c.rank(), 3)?;
        assert_eq!(&b[..], b"after");
        c.all_reduce_scalar(1u32, ReduceOp::Sum)
    });
    for r in out {
        assert_eq!(r.unwrap(), 2);
    }
}

#[test]
fn gloo_point_to_point_many_and_large() {
    let _w = Watchdog::new("p2p", Duration::from_secs(120));
    let out = gloo_in_threads(3, Kind::Dir, CommConfig::default(), |c| {
        let (r, n) = (c.rank(), c.size());
        let len = |i: usize| if i % 4 == 3 { 4 << 20 } else { i * 10 };
        // Everybody sends first (sends never wait for the receiver).
        for i in 0..24 {
            for d in (0..n).filter(|&d| d != r) {
                let tag = (i % 2) as u32;
                c.send(
                    d,
                    tag,
                    deeprc_comm::conformance::pattern(i as u64, r, d, len(i)),
                )?;
            }
        }
        for s in (0..n).filter(|&s| s != r) {
            // Tag 1 first: tags are independent queues, each in order.
            for i in (1..24).step_by(2).chain((0..24).step_by(2)) {
                let got = c.recv(s, (i % 2) as u32)?;
                assert_eq!(
                    got,
                    deeprc_comm::conformance::pattern(i as u64, s, r, len(i))
                );
            }
        }
        c.barrier()
    });
    for res in out {
        res.unwrap();
    }
}

/// Rank 2 of 3 leaves (`drop_comm`: drops its communicator; otherwise it
/// keeps it but stops taking part); ranks 0 and 1 must fail within about
/// the 2 s timeout.
fn one_rank_leaves(drop_comm: bool) {
    let timeout = Duration::from_secs(2);
    let cfg = CommConfig::default().with_timeout(timeout);
    let out = gloo_in_threads(3, Kind::Dir, cfg, |c| {
        if c.rank() == 2 {
            if drop_comm {
                drop(c);
            } else {
                std::thread::sleep(timeout * 3);
            }
            return Ok(Duration::ZERO);
        }
        let start = Instant::now();
        let mut v = vec![1.0f64; 1 << 10];
        loop {
            // Collectives keep failing (not hanging) once the peer is gone.
            if let Err(e) = c
                .all_reduce(&mut v, ReduceOp::Sum)
                .and_then(|_| c.barrier())
            {
                assert!(e.is_peer_failure(), "rank {}: {e}", c.rank());
                eprintln!("rank {} failed after {:?}: {e}", c.rank(), start.elapsed());
                return Ok(start.elapsed());
            }
            assert!(
                start.elapsed() < timeout * 5,
                "rank {} never failed",
                c.rank()
            );
        }
    });
    for (r, res) in out.into_iter().take(2).enumerate() {
        let took = res.unwrap();
        assert!(
            took < timeout + Duration::from_secs(3),
            "rank {r} failed only after {took:?}"
        );
    }
}

#[test]
fn gloo_peer_drops_its_communicator() {
    let _w = Watchdog::new("peer drops", Duration::from_secs(120));
    one_rank_leaves(true);
}

#[test]
fn gloo_peer_stops_participating() {
    let _w = Watchdog::new("peer stops", Duration::from_secs(120));
    one_rank_leaves(false);
}

#[test]
fn gloo_ranks_as_processes_from_env() {
    let _w = Watchdog::new("processes", Duration::from_secs(300));
    let n = 3;
    let store = format!("127.0.0.1:{}", common::free_port());
    let kids = common::spawn_ranks(n, "gloo_rank_process", &store, &[]);
    for (r, k) in kids.into_iter().enumerate() {
        let (code, out, _) = common::wait_output(k, Duration::from_secs(240));
        assert_eq!(code, Some(0), "rank {r}: {out}");
        assert!(
            common::result_line(&out).starts_with("ok 12"),
            "rank {r}: {out}"
        );
    }
}

#[test]
#[ignore = "entry point of the rank processes of gloo_ranks_as_processes_from_env"]
fn gloo_rank_process() {
    if !common::is_rank_process() {
        return;
    }
    let comm = GlooComm::from_env().unwrap();
    match run_all(&comm, Sizes::default()) {
        Ok(p) => println!("RESULT ok {} setup {:?}", p.len(), comm.setup_time()),
        Err(e) => println!("RESULT err {e}"),
    }
}

#[test]
fn gloo_options_checks() {
    let o = GlooOptions::new(3, 3, HashStore::new(), "t");
    assert!(matches!(
        GlooComm::connect(o),
        Err(CommError::InvalidRank { rank: 3, size: 3 })
    ));
    let o = GlooOptions::new(0, 1, HashStore::new(), "");
    assert!(matches!(
        GlooComm::connect(o),
        Err(CommError::Config { .. })
    ));
}
