//! Communicator benchmarks: creation time, all-to-all and all-reduce, per
//! backend, beside memcpy bandwidth measured in the same run.
//!
//! ```text
//! cargo run --release -p deeprc-benches --bin comm_bench            # local + tcp
//! DEEPRC_BENCH_MPIEXEC=mpiexec.mpich cargo run --release -p deeprc-benches \
//!     --features mpi --bin comm_bench                                # + MPI
//! benches/comm_bench.sh [OPTIONS]      # + Gloo, MPI and plain C MPI_Allreduce on MPICH
//! ```
//!
//! Options (default: everything):
//! - `--all-reduce-only`: only the all-reduce rows, no creation table;
//! - `--backends local,tcp,ucx,ucx-shm,gloo,mpi`: the backends to run (those
//!   compiled in; `ucx` with UCX's peer error handling, so over tcp
//!   loopback within a host, `ucx-shm` without it, over shared memory);
//! - `--ranks 2,4`: the rank counts of the collectives;
//! - `--hosts`: the process backends' ranks on distinct hosts of the
//!   namespace Slurm cluster (`scripts/netns-slurm.sh up 3 4`), one per
//!   node, started by `srun`, beside `ucx_perftest`'s tag bandwidth between
//!   two of the same hosts (MPI under `srun --mpi=pmix` needs an OpenMPI
//!   build of this benchmark: `--features mpi` without `MPICC`).
//!
//! With `DEEPRC_BENCH_MPI_C` naming a C program that times `MPI_Allreduce`
//! in place (`benches/comm_bench.sh` builds one against MPICH), its figure
//! is printed too (row `mpich-c`), run with `DEEPRC_BENCH_MPIEXEC`: MPICH's
//! own all-reduce without the Rust backend's copies.
//!
//! Sizes are totals over all ranks: "64 MiB between 2 ranks" means each rank
//! holds a 32 MiB send buffer, split evenly over the ranks (itself included).
//! The all-reduce is the exception: a 64 MiB all-reduce reduces a 64 MiB
//! buffer of f32 on every rank (the size of the gradients), and its
//! bandwidth is 64 MiB over the time (1 GiB too, up to 4 ranks, unless
//! `--all-reduce-only`). Times are the slowest rank's, median
//! over repetitions. memcpy is measured at the start and at the end of the
//! run (the machine may be shared); the ratios use the start figure.

use bytes::Bytes;
use deeprc_benches::median;
use deeprc_comm::{
    local,
    tcp::{StoreSpec, TcpComm, TcpOptions},
    CommConfig, CommError, Communicator, CommunicatorExt, ReduceOp,
};
use std::{
    process::{Command, Stdio},
    time::Instant,
};

const MIB: usize = 1 << 20;

/// memcpy bandwidth in GB/s over `bytes` bytes.
fn memcpy_gbps(bytes: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src);
    let times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            t.elapsed().as_secs_f64()
        })
        .collect();
    bytes as f64 / median(times) / 1e9
}

/// Times `f` on every rank; returns the median over `reps` of the slowest rank.
fn timed(
    comm: &dyn Communicator,
    reps: usize,
    mut f: impl FnMut() -> Result<(), CommError>,
) -> Result<f64, CommError> {
    f()?; // warm-up
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        comm.barrier()?;
        let t = Instant::now();
        f()?;
        let mine = t.elapsed().as_secs_f64();
        times.push(comm.all_reduce_scalar(mine, ReduceOp::Max)?);
    }
    Ok(median(times))
}

/// Half the round-trip time of an 8-byte message between ranks 0 and 1
/// (the others wait), median over 1,001 round trips.
fn ping_pong(comm: &dyn Communicator) -> Result<f64, CommError> {
    let msg = Bytes::from_static(&[7u8; 8]);
    let mut times = Vec::with_capacity(1001);
    comm.barrier()?;
    for _ in 0..1001 {
        let t = Instant::now();
        match comm.rank() {
            0 => {
                comm.send(1, 9, msg.clone())?;
                comm.recv(1, 9)?;
            }
            1 => {
                comm.recv(0, 9)?;
                comm.send(0, 9, msg.clone())?;
            }
            _ => {}
        }
        times.push(t.elapsed().as_secs_f64() / 2.0);
    }
    comm.barrier()?;
    let mine = median(times);
    comm.all_reduce_scalar(mine, ReduceOp::Max)
}

/// One result line: `op<TAB>total bytes<TAB>seconds`.
struct Row {
    op: &'static str,
    bytes: usize,
    secs: f64,
}

fn run_ops(
    comm: &dyn Communicator,
    big: bool,
    all_reduce_only: bool,
) -> Result<Vec<Row>, CommError> {
    let n = comm.size();
    let mut rows = Vec::new();
    let mut sizes = vec![64 * MIB];
    if big {
        sizes.push(1024 * MIB);
    }
    if all_reduce_only {
        sizes.clear();
    }
    for total in sizes {
        let per_rank = total / n;
        let part = per_rank / n;
        let parts: Vec<Bytes> = (0..n)
            .map(|_| Bytes::from(vec![comm.rank() as u8; part]))
            .collect();
        let reps = if total > 256 * MIB { 3 } else { 7 };
        let secs = timed(comm, reps, || comm.all_to_all_v(parts.clone()).map(|_| ()))?;
        rows.push(Row {
            op: "all_to_all_v",
            bytes: total,
            secs,
        });
    }
    rows.push(Row {
        op: "latency",
        bytes: 8,
        secs: ping_pong(comm)?,
    });
    let mut tiny = [1.0f64];
    let secs = timed(comm, 201, || comm.all_reduce(&mut tiny, ReduceOp::Sum))?;
    rows.push(Row {
        op: "all_reduce",
        bytes: 8,
        secs,
    });
    let mut reduce_sizes = vec![64 * MIB];
    if big && !all_reduce_only {
        reduce_sizes.push(1024 * MIB);
    }
    for bytes in reduce_sizes {
        let mut buf = vec![1.0f32; bytes / 4];
        let reps = if bytes > 256 * MIB { 3 } else { 7 };
        let secs = timed(comm, reps, || comm.all_reduce(&mut buf, ReduceOp::Sum))?;
        // Every element is n^(reps + 1) (exact in f32): the result is right.
        let want = (n as f32).powi(reps as i32 + 1);
        if buf.iter().any(|&x| x.to_bits() != want.to_bits()) {
            return Err(CommError::InvalidArgument {
                op: "comm_bench",
                reason: format!(
                    "{} all-reduce: wrong result, want {want} everywhere",
                    fmt_bytes(bytes)
                ),
            });
        }
        rows.push(Row {
            op: "all_reduce",
            bytes,
            secs,
        });
    }
    Ok(rows)
}

fn fmt_bytes(b: usize) -> String {
    if b >= 1 << 30 {
        format!("{} GiB", b >> 30)
    } else if b >= MIB {
        format!("{} MiB", b >> 20)
    } else {
        format!("{b} B")
    }
}

fn print_rows(backend: &str, n: usize, rows: &[Row], memcpy: f64) {
    for r in rows {
        if backend == "local" && r.op == "all_to_all_v" {
            // Thread ranks hand reference-counted buffers over: no byte moves.
            println!(
                "| {backend:<6} | {n} | {:<12} | {:>8} | {:>10.3} ms | zero-copy hand-over | - |",
                r.op,
                fmt_bytes(r.bytes),
                r.secs * 1e3
            );
            continue;
        }
        if r.op == "latency" {
            println!(
                "| {backend:<6} | {n} | {:<12} | {:>8} | {:>10.1} us | one way, ping-pong | - |",
                r.op,
                fmt_bytes(r.bytes),
                r.secs * 1e6
            );
            continue;
        }
        let gbps = r.bytes as f64 / r.secs / 1e9;
        println!(
            "| {backend:<6} | {n} | {:<12} | {:>8} | {:>10.3} ms | {:>6.2} GB/s | {:>5.1}% of memcpy |",
            r.op,
            fmt_bytes(r.bytes),
            r.secs * 1e3,
            gbps,
            100.0 * gbps / memcpy
        );
    }
}

/// Worker mode: one process rank of a process backend.
fn worker(backend: &str) -> Result<(), CommError> {
    let t = Instant::now();
    let comm: Box<dyn Communicator> = match backend {
        "tcp" => Box::new(TcpComm::from_env()?),
        #[cfg(feature = "ucx")]
        "ucx" | "ucx-lo" => Box::new(deeprc_comm::ucx::UcxComm::from_env()?),
        #[cfg(feature = "mpi")]
        "mpi" => Box::new(deeprc_comm::mpi::MpiComm::world()?),
        #[cfg(feature = "gloo")]
        "gloo" => Box::new(deeprc_comm::gloo::GlooComm::from_env()?),
        other => panic!("backend {other} not compiled into this benchmark"),
    };
    comm.barrier()?;
    let create = comm.all_reduce_scalar(t.elapsed().as_secs_f64(), ReduceOp::Max)?;
    if comm.rank() == 0 {
        println!("CREATE\t{create}");
    }
    if std::env::var("DEEPRC_BENCH_CREATE_ONLY").is_ok() {
        return Ok(());
    }
    let all_reduce_only = std::env::var_os("DEEPRC_BENCH_ALL_REDUCE_ONLY").is_some();
    let rows = run_ops(&*comm, comm.size() <= 4, all_reduce_only)?;
    if comm.rank() == 0 {
        for r in rows {
            println!("ROW\t{}\t{}\t{}", r.op, r.bytes, r.secs);
        }
    }
    Ok(())
}

/// Starts `n` worker processes of `backend` and collects rank 0's lines.
fn spawn_workers(
    backend: &str,
    n: usize,
    create_only: bool,
    all_reduce_only: bool,
    hosts: bool,
) -> (f64, Vec<Row>) {
    let exe = std::env::current_exe().expect("own path");
    let dir = std::env::temp_dir().join(format!(
        "deeprc-bench-{}-{n}-{}",
        std::process::id(),
        backend
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let children: Vec<_> = match backend {
        _ if hosts => {
            // One rank per node; each finds its place from Slurm's
            // variables (deeprc_comm::launcher), MPI from PMIx.
            let mut c = Command::new("srun");
            c.args(["-N", &n.to_string(), "--ntasks-per-node=1", "-t", "10"]);
            if backend == "mpi" {
                c.arg("--mpi=pmix");
            }
            c.arg(&exe)
                .args(["--worker", backend])
                .current_dir(std::env::current_dir().expect("working folder"))
                .env(
                    "DEEPRC_BACKEND",
                    if backend == "ucx-lo" { "ucx" } else { backend },
                )
                .env_remove("DEEPRC_STORE")
                .env_remove("DEEPRC_RANK");
            if create_only {
                c.env("DEEPRC_BENCH_CREATE_ONLY", "1");
            }
            if all_reduce_only {
                c.env("DEEPRC_BENCH_ALL_REDUCE_ONLY", "1");
            }
            vec![c.stdout(Stdio::piped()).spawn().expect("srun")]
        }
        "mpi" => {
            let mpiexec = std::env::var("DEEPRC_BENCH_MPIEXEC").unwrap_or("mpirun".into());
            let mut c = Command::new(mpiexec);
            c.args(["-n", &n.to_string()]);
            c.arg(&exe).args(["--worker", "mpi"]);
            if create_only {
                c.env("DEEPRC_BENCH_CREATE_ONLY", "1");
            }
            if all_reduce_only {
                c.env("DEEPRC_BENCH_ALL_REDUCE_ONLY", "1");
            }
            vec![c.stdout(Stdio::piped()).spawn().expect("mpiexec")]
        }
        _ => (0..n)
            .map(|r| {
                let mut c = Command::new(&exe);
                c.args(["--worker", backend])
                    .env("DEEPRC_RANK", r.to_string())
                    .env("DEEPRC_WORLD_SIZE", n.to_string())
                    .env("DEEPRC_STORE", dir.display().to_string())
                    .env("DEEPRC_TOKEN", format!("bench-{}-{n}", std::process::id()))
                    .env(
                        "DEEPRC_UCX_PEER_ERRORS",
                        if backend == "ucx-lo" { "1" } else { "0" },
                    )
                    .stdout(Stdio::piped());
                if create_only {
                    c.env("DEEPRC_BENCH_CREATE_ONLY", "1");
                }
                if all_reduce_only {
                    c.env("DEEPRC_BENCH_ALL_REDUCE_ONLY", "1");
                }
                c.spawn().expect("worker")
            })
            .collect(),
    };
    let mut create = f64::NAN;
    let mut rows = Vec::new();
    for c in children {
        let out = c.wait_with_output().expect("worker output");
        assert!(out.status.success(), "{backend} worker failed");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["CREATE", s] => create = s.parse().unwrap_or(f64::NAN),
                ["ROW", op, b, s] => rows.push(Row {
                    op: match *op {
                        "all_to_all_v" => "all_to_all_v",
                        "latency" => "latency",
                        _ => "all_reduce",
                    },
                    bytes: b.parse().unwrap_or(0),
                    secs: s.parse().unwrap_or(f64::NAN),
                }),
                _ => {}
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    (create, rows)
}

fn local_create_time(n: usize) -> f64 {
    let times: Vec<f64> = (0..50)
        .map(|_| {
            let t = Instant::now();
            let comms = local::create(n, CommConfig::default()).expect("create");
            let e = t.elapsed().as_secs_f64();
            drop(comms);
            e
        })
        .collect();
    median(times)
}

fn tcp_threads_create_time(n: usize) -> f64 {
    let dir = std::env::temp_dir().join(format!("deeprc-bench-tt-{}-{n}", std::process::id()));
    let t = Instant::now();
    std::thread::scope(|s| {
        for r in 0..n {
            let dir = dir.clone();
            s.spawn(move || {
                let o = TcpOptions::new(r, n, StoreSpec::Dir(dir), "bench-threads");
                TcpComm::connect(o).expect("tcp connect")
            });
        }
    });
    let e = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(dir);
    e
}

/// MPICH's own `MPI_Allreduce` of `bytes` of f32 in place on `n` ranks,
/// timed by the C program `prog` (see `benches/comm_bench.sh`).
fn mpi_c_all_reduce(prog: &str, n: usize, bytes: usize) -> Option<Row> {
    let mpiexec = std::env::var("DEEPRC_BENCH_MPIEXEC").unwrap_or("mpirun".into());
    let reps = if bytes > 256 * MIB { "3" } else { "7" };
    let out = Command::new(mpiexec)
        .args(["-n", &n.to_string(), prog, &bytes.to_string(), reps])
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("MPI_ALLREDUCE\t"))?;
    let f: Vec<&str> = line.split('\t').collect();
    Some(Row {
        op: "all_reduce",
        bytes: f.get(2)?.parse().ok()?,
        secs: f.get(3)?.parse().ok()?,
    })
}

/// Command-line options (see the module documentation).
struct Options {
    all_reduce_only: bool,
    hosts: bool,
    backends: Option<Vec<String>>,
    ranks: Vec<usize>,
}

fn options(args: &[String]) -> Options {
    let mut o = Options {
        all_reduce_only: false,
        hosts: false,
        backends: None,
        ranks: vec![2, 4],
    };
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--all-reduce-only" => o.all_reduce_only = true,
            "--hosts" => o.hosts = true,
            "--backends" => {
                let v = it.next().expect("--backends needs a list");
                o.backends = Some(v.split(',').map(str::to_string).collect());
            }
            "--ranks" => {
                let v = it.next().expect("--ranks needs a list");
                o.ranks = v
                    .split(',')
                    .map(|r| r.parse().expect("--ranks takes numbers"))
                    .collect();
            }
            other => panic!("unknown option {other} (see the source's documentation)"),
        }
    }
    o
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() >= 3 && args[1] == "--worker" {
        if let Err(e) = worker(&args[2]) {
            eprintln!("worker error: {e}");
            std::process::exit(1);
        }
        return;
    }
    let opts = options(&args);
    let wanted = |b: &str| {
        opts.backends
            .as_ref()
            .is_none_or(|l| l.iter().any(|x| x == b))
    };
    let mpi =
        cfg!(feature = "mpi") && std::env::var("DEEPRC_BENCH_MPIEXEC").is_ok() && wanted("mpi");
    let gloo = cfg!(feature = "gloo") && wanted("gloo");
    let mpi_c = std::env::var("DEEPRC_BENCH_MPI_C")
        .ok()
        .filter(|_| wanted("mpi"));
    let memcpy = memcpy_gbps(256 * MIB);
    println!("memcpy bandwidth (256 MiB, this run): {memcpy:.2} GB/s\n");
    let ucx = cfg!(feature = "ucx");
    if opts.hosts {
        hosts_run(&opts, memcpy, &wanted);
        return;
    }
    if !opts.all_reduce_only {
        creation_table(mpi, gloo, &wanted);
    }

    println!("\n## Collectives (sizes are totals over all ranks; all-reduce: per rank)\n");
    println!("| backend | ranks | op | size | time | bandwidth | vs memcpy |");
    println!("|---|---|---|---|---|---|---|");
    if wanted("local") {
        for &n in &opts.ranks {
            let rows =
                local::launch(n, |c| run_ops(&c, true, opts.all_reduce_only)).expect("local run");
            print_rows("local", n, &rows[0], memcpy);
        }
    }
    let mut backends = Vec::new();
    if wanted("tcp") {
        backends.push("tcp");
    }
    if ucx && wanted("ucx") {
        backends.push("ucx");
    }
    if ucx && wanted("ucx-lo") {
        backends.push("ucx-lo");
    }
    if gloo {
        backends.push("gloo");
    }
    if mpi {
        backends.push("mpi");
    }
    for b in &backends {
        for &n in &opts.ranks {
            let (_, rows) = spawn_workers(b, n, false, opts.all_reduce_only, false);
            print_rows(b, n, &rows, memcpy);
        }
    }
    if let Some(prog) = &mpi_c {
        for &n in &opts.ranks {
            let mut sizes = vec![64 * MIB];
            if n <= 4 && !opts.all_reduce_only {
                sizes.push(1024 * MIB);
            }
            for bytes in sizes {
                match mpi_c_all_reduce(prog, n, bytes) {
                    Some(row) => print_rows("mpich-c", n, &[row], memcpy),
                    None => println!("| mpich-c | {n} | all_reduce | (the C program failed) |"),
                }
            }
        }
    }
    let after = memcpy_gbps(256 * MIB);
    println!("\nmemcpy bandwidth at the end of the run: {after:.2} GB/s");
}

fn creation_table(mpi: bool, gloo: bool, wanted: &dyn Fn(&str) -> bool) {
    let ucx = cfg!(feature = "ucx") && wanted("ucx");
    println!("## Communicator creation (slowest rank, median)\n");
    println!("| backend | ranks | create |");
    println!("|---|---|---|");
    for n in [2, 4, 8] {
        println!(
            "| local (threads) | {n} | {:.1} us |",
            local_create_time(n) * 1e6
        );
    }
    for n in [2, 4, 8] {
        println!(
            "| tcp (threads, dir store) | {n} | {:.3} ms |",
            tcp_threads_create_time(n) * 1e3
        );
    }
    let mut backends = Vec::new();
    if wanted("tcp") {
        backends.push("tcp");
    }
    if ucx {
        backends.push("ucx");
    }
    if gloo {
        backends.push("gloo");
    }
    if mpi {
        backends.push("mpi");
    }
    for b in &backends {
        for n in [2, 4, 8] {
            let times: Vec<f64> = (0..5)
                .map(|_| spawn_workers(b, n, true, false, false).0)
                .collect();
            println!("| {b} (processes) | {n} | {:.3} ms |", median(times) * 1e3);
        }
    }
}

/// `--hosts`: every process backend with one rank per namespace node,
/// beside `ucx_perftest` between the first two nodes.
fn hosts_run(opts: &Options, memcpy: f64, wanted: &dyn Fn(&str) -> bool) {
    println!("## Across hosts of the namespace Slurm cluster (one rank per node, srun)\n");
    if let Some(mb) = ucx_perftest_mbps() {
        println!("ucx_perftest tag_bw 1 MiB messages, dn1 -> dn2 (UCX_TLS=tcp): {mb:.0} MB/s\n");
    }
    println!("| backend | ranks | op | size | time | bandwidth | vs memcpy |");
    println!("|---|---|---|---|---|---|---|");
    let mut backends = vec!["tcp"];
    if cfg!(feature = "ucx") {
        backends.push("ucx");
    }
    if cfg!(feature = "mpi") {
        backends.push("mpi");
    }
    for b in backends.into_iter().filter(|b| wanted(b)) {
        for &n in &opts.ranks {
            let (_, rows) = spawn_workers(b, n, false, opts.all_reduce_only, true);
            print_rows(b, n, &rows, memcpy);
        }
    }
}

/// `ucx_perftest -t tag_bw` with 1 MiB messages from namespace node dn2 to
/// dn1 (the server), in MB/s; `None` when it cannot run.
fn ucx_perftest_mbps() -> Option<f64> {
    let ns = |node: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", node, "ucx_perftest"])
            .env("UCX_TLS", "tcp,self")
            .env("UCX_NET_DEVICES", "eth0");
        c
    };
    let mut server = ns("dn1")
        .args(["-t", "tag_bw", "-s", "1048576", "-n", "2000", "-p", "13339"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = ns("dn2")
        .args([
            "10.87.0.11",
            "-t",
            "tag_bw",
            "-s",
            "1048576",
            "-n",
            "2000",
            "-p",
            "13339",
        ])
        .output()
        .ok();
    let _ = server.wait();
    let text = String::from_utf8_lossy(&out?.stdout).into_owned();
    // The final line: "Final: <iters> <lat avg..> ... <bw average MB/s> ..."
    let last = text.lines().rev().find(|l| l.contains("Final:"))?;
    let f: Vec<f64> = last
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // Columns after "Final:": iterations, 3 overheads (median, average,
    // overall, in us), 2 bandwidths (average, overall, MB/s), 2 rates.
    f.get(4).copied()
}
