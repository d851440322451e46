//! The communicator demo: the same distributed code on thread ranks and on
//! process ranks over TCP.
//!
//! Each rank draws a skewed set of keys, shuffles them by key with one
//! all-to-all (the primitive every keyed operator of deeprc-frame uses),
//! counts what it owns, and checks the global count with an all-reduce; a
//! split builds a sub-communicator of the even ranks.
//!
//! ```text
//! cargo run --release -p deeprc-examples --bin comm_demo -- [ranks]
//! ```

use bytes::Bytes;
use deeprc_comm::{
    local, pod_vec, tcp::TcpComm, CommError, Communicator, CommunicatorExt, ReduceOp,
};
use std::{
    process::{Command, Stdio},
    time::Instant,
};

const KEYS_PER_RANK: u64 = 1_000_000;

/// The distributed part, written once against `&dyn Communicator`.
fn shuffle_and_count(comm: &dyn Communicator) -> Result<String, CommError> {
    let (rank, n) = (comm.rank(), comm.size());
    let t = Instant::now();
    // Skewed keys: 90% of them are key 0.
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ rank as u64;
    let keys: Vec<u64> = (0..KEYS_PER_RANK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 10 < 9 {
                0
            } else {
                x % 1_000_000
            }
        })
        .collect();
    let mut buckets = vec![Vec::<u64>::new(); n];
    for k in keys {
        buckets[(k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % n].push(k);
    }
    let parts = buckets
        .iter()
        .map(|b| Bytes::copy_from_slice(bytemuck::cast_slice(b)))
        .collect();
    let received = comm.all_to_all_v(parts)?;
    let mut owned = 0u64;
    for part in &received {
        let keys: Vec<u64> = pod_vec(part)?;
        debug_assert!(keys
            .iter()
            .all(|k| (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % n == rank));
        owned += keys.len() as u64;
    }
    let total = comm.all_reduce_scalar(owned, ReduceOp::Sum)?;
    assert_eq!(total, KEYS_PER_RANK * n as u64, "no key lost or duplicated");
    let evens = comm.split(Some((rank % 2) as u32), rank as i64)?;
    let sub_size = evens.map(|c| c.size()).unwrap_or(0);
    let elapsed = comm.all_reduce_scalar(t.elapsed().as_secs_f64(), ReduceOp::Max)?;
    Ok(format!(
        "rank {rank}/{n} ({}) owns {owned:>8} keys of {total}; its split group has {sub_size} ranks; slowest rank {:.1} ms",
        comm.backend(),
        elapsed * 1e3
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--tcp-rank") {
        let comm = TcpComm::from_env()?;
        println!("{}", shuffle_and_count(&comm)?);
        return Ok(());
    }
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(4);

    println!("== {n} ranks as threads (local backend: buffers handed over, no copies)");
    for line in local::launch(n, |c| shuffle_and_count(&c))? {
        println!("{line}");
    }

    println!("== {n} ranks as processes (tcp backend, store in a temp directory)");
    let dir = std::env::temp_dir().join(format!("deeprc-comm-demo-{}", std::process::id()));
    let token = format!("demo-{}-{}", std::process::id(), deeprc_core::now_ns());
    let children: Vec<_> = (0..n)
        .map(|r| {
            Command::new(std::env::current_exe()?)
                .arg("--tcp-rank")
                .env("DEEPRC_RANK", r.to_string())
                .env("DEEPRC_WORLD_SIZE", n.to_string())
                .env("DEEPRC_STORE", &dir)
                .env("DEEPRC_TOKEN", &token)
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for c in children {
        let out = c.wait_with_output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            return Err(format!("a tcp rank failed: {}", out.status).into());
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
