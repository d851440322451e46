//! The nccl backend. Every test detects at run time whether NCCL and a GPU
//! can be used here (`nccl::probe`): with a GPU it runs the real
//! collectives, without one it checks the typed `Unavailable` path on every
//! rank. Set `DEEPRC_EXPECT_GPU=1` on GPU machines to make a missing GPU or
//! library a failure instead of the Unavailable path.

#![cfg(feature = "nccl")]

use deeprc_comm::{
    conformance::{run_all, Sizes},
    local,
    nccl::{self, NcclComm, NcclOptions, NcclRoute, NcclVersion},
    Backend, CommError, CommOp, Communicator, CommunicatorExt, DType, ReduceOp,
};
use std::{
    sync::{mpsc, Arc},
    time::Duration,
};

/// Runs `f` on another thread and fails the test if it takes longer than
/// `secs` (a hang is a failure, not a stuck CI job).
fn within<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(r)) => r,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("hung for more than {secs} s"),
    }
}

fn gpu_expected() -> bool {
    std::env::var("DEEPRC_EXPECT_GPU").is_ok_and(|v| v == "1")
}

/// The GPUs NCCL can use here; `None` (after checking the error) when
/// there are none.
fn gpus() -> Option<usize> {
    match nccl::probe() {
        Ok(info) => {
            assert!(info.device_count >= 1);
            assert_eq!(info.nccl_version.major, 2, "{info:?}");
            assert!(info.cuda_driver_version >= 11_000, "{info:?}");
            eprintln!("NCCL path: {info:?}");
            Some(info.device_count)
        }
        Err(e) => {
            assert_unavailable(&e);
            assert!(
                !gpu_expected(),
                "DEEPRC_EXPECT_GPU=1 but NCCL is unavailable: {e}"
            );
            eprintln!("Unavailable path: {e}");
            None
        }
    }
}

fn assert_unavailable(e: &CommError) {
    match e {
        CommError::Unavailable { backend, reason } => {
            assert_eq!(*backend, Backend::Nccl);
            assert!(!reason.trim().is_empty(), "an empty reason");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// `from_host` on `n` thread ranks, rank `r` on device `device(r)`; `f`
/// runs on each communicator made. Returns every rank's outcome.
fn create_on_threads<R: Send + 'static>(
    n: usize,
    device: fn(usize) -> usize,
    f: fn(&NcclComm) -> Result<R, CommError>,
) -> Vec<Result<R, CommError>> {
    within(120, move || {
        local::launch(n, |host| {
            let r = host.rank();
            Ok::<_, CommError>(NcclComm::from_host(Arc::new(host), device(r)).and_then(|c| f(&c)))
        })
        .expect("the host communicator failed")
    })
}

#[test]
fn probe_reports_devices_or_unavailable() {
    let first = gpus();
    // Cached and consistent.
    assert_eq!(nccl::is_available(), first.is_some());
    assert_eq!(nccl::probe().ok().map(|i| i.device_count), first);
}

#[test]
fn nccl_version_codes_decode() {
    assert_eq!(
        NcclVersion::from_code(22_304),
        NcclVersion {
            major: 2,
            minor: 23,
            patch: 4
        }
    );
    assert_eq!(NcclVersion::from_code(2_804).to_string(), "2.8.4");
}

#[test]
fn two_ranks_one_per_gpu_or_unavailable_on_every_rank() {
    let n_gpus = gpus();
    // Rank r asks for GPU r: works with two GPUs; with one GPU, rank 1 has
    // no device and both ranks must fail alike.
    let out = create_on_threads(
        2,
        |r| r,
        |c| {
            assert_eq!(c.backend(), Backend::Nccl);
            run_all(c, Sizes::default())
        },
    );
    match n_gpus {
        Some(n) if n >= 2 => {
            for r in out {
                assert_eq!(r.expect("conformance on 2 GPUs").len(), 12);
            }
        }
        _ => {
            for r in &out {
                assert_unavailable(r.as_ref().expect_err("created without a GPU for each rank"));
            }
        }
    }
}

#[test]
fn one_rank_without_a_device_makes_every_rank_unavailable() {
    // Rank 0 may well have a GPU; rank 1 asks for one that cannot exist.
    gpus();
    let out = create_on_threads(2, |r| if r == 0 { 0 } else { 4096 }, |_| Ok(()));
    for r in &out {
        let e = r
            .as_ref()
            .expect_err("created although rank 1 has no device");
        assert_unavailable(e);
        if let CommError::Unavailable { reason, .. } = e {
            assert!(
                reason.contains("rank 1"),
                "the reason names the rank: {reason}"
            );
        }
    }
}

/// The real collectives on one GPU rank, or the Unavailable path.
#[test]
fn one_gpu_rank_collectives_and_conformance_or_unavailable() {
    let have = gpus().is_some();
    let out = create_on_threads(1, |_| 0, one_rank_checks);
    let r = out.into_iter().next().unwrap();
    if have {
        assert_eq!(r.expect("collectives on GPU 0"), 12);
    } else {
        assert_unavailable(&r.expect_err("created without a GPU"));
    }
}

#[test]
fn host_fallback_operations_are_reported() {
    // What the trait's `backend()` (always `Nccl`) does not say.
    let fallback = NcclComm::host_fallback_ops();
    assert_eq!(
        fallback,
        [
            CommOp::Send,
            CommOp::Recv,
            CommOp::Barrier,
            CommOp::Gather,
            CommOp::AllToAllV,
            CommOp::Split
        ]
    );
    assert_eq!(
        NcclComm::nccl_ops(),
        [CommOp::Broadcast, CommOp::AllGather, CommOp::AllReduce]
    );
    for op in CommOp::ALL {
        let want = if fallback.contains(&op) {
            NcclRoute::Host
        } else if NcclComm::nccl_ops().contains(&op) {
            NcclRoute::Nccl
        } else {
            NcclRoute::Unsupported
        };
        assert_eq!(NcclComm::route(op), want, "{op}");
    }
    assert_eq!(
        NcclComm::all_reduce_route(DType::F32, ReduceOp::Sum),
        NcclRoute::NcclGatherHostReduce
    );
    assert_eq!(
        NcclComm::all_reduce_route(DType::U32, ReduceOp::Sum),
        NcclRoute::Nccl
    );
}

fn one_rank_checks(c: &NcclComm) -> Result<usize, CommError> {
    assert_eq!((c.rank(), c.size(), c.device()), (0, 1, 0));
    assert!(!c.is_aborted());
    assert_eq!(c.backend(), Backend::Nccl);
    assert_eq!(c.backend_name(), "nccl+local", "the host fallback is named");
    let s = c.stream();

    // Device buffers.
    let mut f = s.clone_htod(&[1.5f32, -2.0, 3.25][..]).unwrap();
    c.all_reduce_device(&mut f, ReduceOp::Sum)?;
    assert_eq!(s.clone_dtoh(&f).unwrap(), vec![1.5f32, -2.0, 3.25]);
    let mut i = s.clone_htod(&[7i64, -9][..]).unwrap();
    c.all_reduce_device(&mut i, ReduceOp::Max)?;
    assert_eq!(s.clone_dtoh(&i).unwrap(), vec![7i64, -9]);

    let send = s.clone_htod(&[1u32, 2, 3][..]).unwrap();
    let mut recv = s.alloc_zeros::<u32>(3).unwrap();
    c.all_gather_device(&send, &mut recv)?;
    assert_eq!(s.clone_dtoh(&recv).unwrap(), vec![1u32, 2, 3]);
    let mut wrong = s.alloc_zeros::<u32>(4).unwrap();
    assert!(matches!(
        c.all_gather_device(&send, &mut wrong),
        Err(CommError::InvalidArgument { .. })
    ));

    let mut b = s.clone_htod(&[4u8, 5, 6][..]).unwrap();
    c.broadcast_device(0, &mut b)?;
    assert_eq!(s.clone_dtoh(&b).unwrap(), vec![4u8, 5, 6]);
    assert!(matches!(
        c.broadcast_device(1, &mut b),
        Err(CommError::InvalidRank { rank: 1, size: 1 })
    ));
    let mut empty = s.alloc_zeros::<f64>(0).unwrap();
    c.all_reduce_device(&mut empty, ReduceOp::Sum)?;

    // Host bytes, staged; unaligned and 16-bit.
    let mut v = [3u16, 65535];
    c.all_reduce(&mut v, ReduceOp::Sum)?;
    assert_eq!(v, [3, 65535]);
    let mut raw = [0u8; 9];
    raw[1..].copy_from_slice(&(-5i64).to_le_bytes());
    c.all_reduce_raw(&mut raw[1..], DType::I64, ReduceOp::Min)?;
    assert_eq!(i64::from_le_bytes(raw[1..].try_into().unwrap()), -5);
    assert_eq!(c.broadcast_pod(0, &[1.0f64, 2.0])?, vec![1.0, 2.0]);
    assert_eq!(c.all_gather_pod(&[9u16])?, vec![vec![9u16]]);
    assert!(!c.is_aborted());

    let passed = run_all(c, Sizes::default())?;
    Ok(passed.len())
}

/// The count check makes mismatched device buffers a typed error on every
/// rank instead of an NCCL hang (needs two GPUs).
#[test]
fn mismatched_device_lengths_are_size_mismatch_on_two_gpus_or_unavailable() {
    let n_gpus = gpus();
    let out = create_on_threads(
        2,
        |r| r,
        |c| {
            let mut buf = c.stream().alloc_zeros::<f32>(4 + c.rank()).unwrap();
            Ok(c.all_reduce_device(&mut buf, ReduceOp::Sum))
        },
    );
    for r in out {
        match n_gpus {
            Some(n) if n >= 2 => assert!(matches!(
                r.expect("created on 2 GPUs"),
                Err(CommError::SizeMismatch { .. })
            )),
            _ => assert_unavailable(&r.expect_err("created without a GPU for each rank")),
        }
    }
}

#[test]
fn options_come_from_the_config() {
    let o = NcclOptions::default();
    assert!(o.check_counts);
    assert!(!o.with_check_counts(false).check_counts);
}
