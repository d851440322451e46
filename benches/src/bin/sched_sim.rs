//! Placement at scale (issue 10): the pilot's scheduler
//! ([`deeprc_pilot::scheduler::SlotMap`], the code every agent runs) over
//! simulated nodes of 128 cores, 8 GPUs and 512 GiB, from 100 to 10,000
//! nodes, placing and releasing a million tasks of mixed shapes. Nothing
//! is executed: each placed task holds its slots for a random simulated
//! duration, and when the next task does not fit, the earliest-ending one
//! is released (the simulated clock jumps to its end).
//!
//! ```text
//! cargo run --release -p deeprc-benches --bin sched_sim -- \
//!     [--nodes 100,300,1000,3000,10000] [--tasks 1000000] [--seconds 60] \
//!     [--out out/sched_sim]
//! ```
//!
//! The task mix (seeded, the same for every node count): 60% one rank of
//! one core; 15% one rank of 4 cores and a quarter GPU; 10% 8 ranks of one
//! core and one whole GPU each; 10% 4 to 64 ranks of 2 cores (MPI-like);
//! 4% one rank of 16 cores; 1% 128 to 512 ranks of one core. Every
//! multi-rank shape may span nodes except the 16-core one. Printed per
//! node count: tasks placed, placements and releases per second of wall
//! time (the goal is 100,000 placements/s at 10,000 nodes), the most tasks
//! live at once, the resident memory (`VmRSS`) per live task, and the
//! share of cores busy over the simulation. `--seconds` caps each node
//! count's run (the row then says how many tasks it reached). A plot of
//! placements/s against nodes goes to `<out>/placements.png`.

use deeprc_examples::plot::{line_chart, Line};
use deeprc_pilot::scheduler::{Shape, SlotMap, GPU_UNITS};
use deeprc_pilot::{NodeSpec, Placement};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error>;

const CORES: usize = 128;
const GPUS: usize = 8;

/// A small deterministic generator (xorshift64*): the same task mix on
/// every run and node count, without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn shape(rng: &mut Rng) -> Shape {
    let (ranks, cores, gpus, span) = match rng.unit() {
        u if u < 0.60 => (1, 1, 0.0, false),
        u if u < 0.75 => (1, 4, 0.25, false),
        u if u < 0.85 => (8, 1, 1.0, true),
        u if u < 0.95 => (rng.range(4, 64) as usize, 2, 0.0, true),
        u if u < 0.99 => (1, 16, 0.0, false),
        _ => (rng.range(128, 512) as usize, 1, 0.0, true),
    };
    Shape {
        ranks,
        cores,
        gpu_units: Shape::gpu_units(gpus),
        mem: 1 << 30,
        span_nodes: span,
    }
}

fn nodes(n: usize) -> Vec<NodeSpec> {
    (0..n)
        .map(|i| NodeSpec {
            name: format!("sim{i}"),
            cores: CORES,
            gpus: GPUS,
            memory_bytes: 512 << 30,
            cpu_ids: (0..CORES).collect(),
            gpu_ids: (0..GPUS).collect(),
        })
        .collect()
}

fn rss_kib() -> u64 {
    deeprc_pilot::current_rss_bytes().unwrap_or(0) / 1024
}

struct Run {
    nodes: usize,
    tasks: usize,
    placed: u64,
    released: u64,
    seconds: f64,
    peak_live: usize,
    rss_per_live_task: f64,
    busy: f64,
}

fn simulate(n: usize, tasks: usize, budget: Duration) -> Run {
    let spec = nodes(n);
    let mut slots = SlotMap::new(&spec);
    let total_cores = (n * CORES) as f64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // (end, slot) of the live tasks; their placements by slot.
    let mut live: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut held: Vec<Option<(Placement, usize)>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let (mut clock, mut placed, mut released, mut peak_live) = (0u64, 0u64, 0u64, 0usize);
    let (mut core_time, mut busy_cores) = (0f64, 0usize);
    let rss0 = rss_kib();
    let mut rss_peak = rss0;
    let t0 = Instant::now();
    let mut done = 0;
    while done < tasks {
        if done % 4096 == 0 && t0.elapsed() > budget {
            break;
        }
        let s = shape(&mut rng);
        let duration = rng.range(1, 1000);
        loop {
            if let Some(p) = slots.try_place(&s) {
                let slot = free.pop().unwrap_or_else(|| {
                    held.push(None);
                    held.len() - 1
                });
                held[slot] = Some((p, s.ranks * s.cores));
                live.push(Reverse((clock + duration, slot)));
                busy_cores += s.ranks * s.cores;
                placed += 1;
                if live.len() > peak_live {
                    peak_live = live.len();
                    if peak_live % 1024 == 0 {
                        rss_peak = rss_peak.max(rss_kib());
                    }
                }
                break;
            }
            let Some(Reverse((end, slot))) = live.pop() else {
                // Larger than the whole empty cluster: never placed.
                break;
            };
            core_time += busy_cores as f64 * (end - clock) as f64;
            clock = end;
            if let Some((p, c)) = held[slot].take() {
                slots.release(&p);
                busy_cores -= c;
            }
            free.push(slot);
            released += 1;
        }
        done += 1;
    }
    let seconds = t0.elapsed().as_secs_f64();
    rss_peak = rss_peak.max(rss_kib());
    Run {
        nodes: n,
        tasks: done,
        placed,
        released,
        seconds,
        peak_live,
        rss_per_live_task: (rss_peak.saturating_sub(rss0)) as f64 * 1024.0
            / peak_live.max(1) as f64,
        busy: if clock > 0 {
            core_time / (total_cores * clock as f64)
        } else {
            0.0
        },
    }
}

fn main() -> Result<(), Error> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1).cloned())
    };
    let counts: Vec<usize> = flag("--nodes")
        .unwrap_or_else(|| "100,300,1000,3000,10000".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let tasks: usize = flag("--tasks").map_or(Ok(1_000_000), |v| v.parse())?;
    let budget = Duration::from_secs(flag("--seconds").map_or(Ok(60), |v| v.parse())?);
    let out = PathBuf::from(flag("--out").unwrap_or_else(|| "out/sched_sim".into()));
    println!(
        "# scheduler simulation: nodes of {CORES} cores, {GPUS} GPUs ({GPU_UNITS} units each), 512 GiB; {tasks} tasks, at most {} s per node count\n",
        budget.as_secs()
    );
    println!("| nodes | tasks placed | placements/s | releases/s | ns per placement | most live tasks | VmRSS per live task (B) | cores busy |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut points = Vec::new();
    for &n in &counts {
        let r = simulate(n, tasks, budget);
        println!(
            "| {} | {}{} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.1}% |",
            r.nodes,
            r.tasks,
            if r.tasks < tasks { " (time cap)" } else { "" },
            r.placed as f64 / r.seconds,
            r.released as f64 / r.seconds,
            r.seconds * 1e9 / r.placed.max(1) as f64,
            r.peak_live,
            r.rss_per_live_task,
            100.0 * r.busy
        );
        points.push((r.nodes as f64, r.placed as f64 / r.seconds));
    }
    std::fs::create_dir_all(&out)?;
    let png = out.join("placements.png");
    line_chart(
        &png,
        "deeprc-pilot scheduler: placements per second",
        ("nodes", "placements/s"),
        &[Line {
            label: "SlotMap::try_place (mixed shapes)",
            points,
        }],
        false,
    )?;
    println!("\nplot: {}", png.display());
    Ok(())
}
