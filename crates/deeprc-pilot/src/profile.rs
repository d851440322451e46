//! Per-task profile records, their export (JSON Lines, CSV, Chrome trace)
//! and the session summary (throughput, overheads, utilisation).
//!
//! One compact [`TaskRecord`] is kept per finished task (about 160 bytes;
//! the full placement only for tasks with several ranks, cores or GPUs).
//! The exports expand it into one [`ProfileRecord`] per event:
//!
//! | event | when | duration |
//! |---|---|---|
//! | `state.new`, `state.scheduling`, `state.executing`, `state.done` / `state.failed` / `state.canceled` | each transition (every attempt) | – |
//! | `comm.create` | the communicator creation started | its creation time |
//! | `exec.start` (attr `placement`) | the payload started (its communicator made) | – |
//! | `exec.stop` (attrs: the [`ResourceUsage`]: `cpu_s`, `user_cpu_s`, `sys_cpu_s`, `thread_cpu_s`, `max_rss_kib`, `rss_scope`, `samples`, GPU figures) | the payload ended | from `exec.start` |
//! | `schedule.place` | the scheduler placed the task | its decision time |

use crate::{sampler::ResourceSample, FailReason, Placement, ResourceUsage, TaskState, Timestamps};
use deeprc_core::{ProfileRecord, TaskId};
use serde::Serialize;
use std::{
    fmt,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

/// Where a task ran, compactly.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum PlacementRecord {
    /// It never ran.
    None,
    /// One rank on one core, no GPU.
    Single {
        /// The node.
        node: u32,
        /// The core slot.
        core: u32,
    },
    /// Anything larger.
    Full(Arc<Placement>),
}

impl PlacementRecord {
    pub(crate) fn from_placement(p: Option<&Arc<Placement>>) -> Self {
        match p {
            None => PlacementRecord::None,
            Some(p)
                if p.ranks.len() == 1
                    && p.ranks[0].cores.len() == 1
                    && p.ranks[0].gpus.is_empty() =>
            {
                PlacementRecord::Single {
                    node: p.ranks[0].node as u32,
                    core: p.ranks[0].cores[0] as u32,
                }
            }
            Some(p) => PlacementRecord::Full(Arc::clone(p)),
        }
    }

    /// Every `(node, core)` used, rank by rank.
    pub fn cores(&self) -> Vec<(usize, usize)> {
        match self {
            PlacementRecord::None => Vec::new(),
            PlacementRecord::Single { node, core } => vec![(*node as usize, *core as usize)],
            PlacementRecord::Full(p) => p
                .ranks
                .iter()
                .flat_map(|r| r.cores.iter().map(move |&c| (r.node, c)))
                .collect(),
        }
    }
}

impl fmt::Display for PlacementRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlacementRecord::None => f.write_str("-"),
            PlacementRecord::Single { node, core } => write!(f, "r0@n{node}:c{core}"),
            PlacementRecord::Full(p) => write!(f, "{p}"),
        }
    }
}

/// The profile of one finished task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    /// The task.
    pub id: TaskId,
    /// Its function name or program file name.
    pub name: Arc<str>,
    /// `function.threads`, `function.processes`, `function.mpirun`,
    /// `executable.fork`, `executable.mpirun` ...
    pub kind: Arc<str>,
    /// The index of its pilot in the session.
    pub pilot: u32,
    /// Its final state.
    pub state: TaskState,
    /// How many times it ran.
    pub attempts: u32,
    /// Its ranks.
    pub ranks: u32,
    /// Its cores in total.
    pub cores: u32,
    /// Its GPUs in total.
    pub gpus: f32,
    /// The transitions of its last attempt.
    pub ts: Timestamps,
    /// The scheduler's decision time for its last placement.
    pub placement_ns: u64,
    /// Communicator creation time (multi-rank function tasks).
    pub comm_ns: u64,
    /// Where its last attempt ran.
    pub placement: PlacementRecord,
    /// What its last attempt used (out of line; `None` if it never ran).
    pub usage: Option<Arc<ResourceUsage>>,
    /// Its earlier attempts (retried tasks only).
    pub history: Option<Box<RetryHistory>>,
}

/// The earlier attempts of a retried task, kept beside its
/// [`TaskRecord`] (out of line: most tasks are never retried).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryHistory {
    /// The state transitions of the earlier attempts, in order.
    pub transitions: Box<[(TaskState, u64)]>,
    /// Why each earlier attempt failed, in order; the attempts'
    /// `state.failed` events carry it as their `reason`.
    pub failures: Box<[FailReason]>,
}

impl TaskRecord {
    /// Every state transition, earlier attempts included.
    pub fn transitions(&self) -> Vec<(TaskState, u64)> {
        let mut v: Vec<(TaskState, u64)> = self
            .history
            .as_deref()
            .map(|h| h.transitions.to_vec())
            .unwrap_or_default();
        if v.is_empty() && self.ts.new != 0 {
            v.push((TaskState::New, self.ts.new));
        }
        for (s, t) in [
            (TaskState::Scheduling, self.ts.scheduling),
            (TaskState::Executing, self.ts.executing),
            (self.state, self.ts.finished),
        ] {
            if t != 0 {
                v.push((s, t));
            }
        }
        v
    }

    /// The payload's run time (zero if it never ran).
    pub fn exec_time(&self) -> Duration {
        if self.ts.exec_start == 0 || self.ts.exec_end < self.ts.exec_start {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.ts.exec_end - self.ts.exec_start)
    }

    /// The profile events of this task (see the module docs).
    pub fn events(&self) -> Vec<ProfileRecord> {
        let entity = self.id.to_string();
        let mut out = Vec::with_capacity(8);
        let base = |ts: u64, event: &str| ProfileRecord {
            timestamp_ns: ts,
            entity: entity.clone(),
            event: event.to_string(),
            duration_ns: None,
            attrs: Vec::new(),
        };
        let mut failures = self
            .history
            .as_deref()
            .map(|h| &h.failures[..])
            .unwrap_or_default()
            .iter();
        for (i, (s, t)) in self.transitions().into_iter().enumerate() {
            let mut r = base(t, s.event());
            if s == TaskState::Failed {
                // Earlier attempts' failures, in order; the last attempt's
                // reason is not recorded.
                if let Some(why) = failures.next() {
                    r.attrs.push(("reason".into(), why.to_string()));
                }
            }
            if i == 0 {
                r.attrs = vec![
                    ("name".into(), self.name.to_string()),
                    ("kind".into(), self.kind.to_string()),
                    ("pilot".into(), self.pilot.to_string()),
                    ("ranks".into(), self.ranks.to_string()),
                    ("cores".into(), self.cores.to_string()),
                    ("gpus".into(), self.gpus.to_string()),
                ];
            }
            out.push(r);
        }
        if self.ts.executing != 0 {
            let mut r = base(self.ts.executing, "schedule.place");
            r.duration_ns = Some(self.placement_ns);
            out.push(r);
        }
        if self.ts.exec_start != 0 {
            let mut r = base(self.ts.exec_start, "exec.start");
            r.attrs
                .push(("placement".into(), self.placement.to_string()));
            out.push(r);
            if self.comm_ns != 0 {
                let mut c = base(
                    self.ts.exec_start.saturating_sub(self.comm_ns),
                    "comm.create",
                );
                c.duration_ns = Some(self.comm_ns);
                out.push(c);
            }
            if self.ts.exec_end != 0 {
                let mut r = base(self.ts.exec_end, "exec.stop");
                r.duration_ns = Some(self.ts.exec_end.saturating_sub(self.ts.exec_start));
                if let Some(u) = &self.usage {
                    r.attrs = u.attrs();
                }
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.timestamp_ns);
        out
    }
}

/// Mean, median, 95th percentile and maximum of a set of durations, in
/// seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stats {
    /// How many values.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Maximum.
    pub max: f64,
}

impl Stats {
    /// Statistics of `values_ns` (nanoseconds).
    pub fn from_ns(mut values_ns: Vec<u64>) -> Stats {
        if values_ns.is_empty() {
            return Stats::default();
        }
        values_ns.sort_unstable();
        let n = values_ns.len();
        let s = |v: u64| v as f64 * 1e-9;
        // Nearest-rank percentiles.
        let pick = |q: f64| s(values_ns[((q * n as f64).ceil() as usize).clamp(1, n) - 1]);
        Stats {
            count: n,
            mean: values_ns.iter().map(|&v| v as f64).sum::<f64>() / n as f64 * 1e-9,
            p50: pick(0.5),
            p95: pick(0.95),
            max: s(values_ns[n - 1]),
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return f.write_str("-");
        }
        write!(
            f,
            "mean {} p50 {} p95 {} max {} (n={})",
            human(self.mean),
            human(self.p50),
            human(self.p95),
            human(self.max),
            self.count
        )
    }
}

fn human(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.3}s")
    } else if secs >= 1e-3 {
        format!("{:.3}ms", secs * 1e3)
    } else {
        format!("{:.1}us", secs * 1e6)
    }
}

/// The analytics of a session.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Finished tasks.
    pub tasks: usize,
    /// ... of which DONE.
    pub done: usize,
    /// ... FAILED.
    pub failed: usize,
    /// ... CANCELED.
    pub canceled: usize,
    /// From the first submission to the last task's end, in seconds.
    pub span_s: f64,
    /// Finished tasks per second over the span.
    pub throughput: f64,
    /// SCHEDULING -> EXECUTING: waiting for dependencies and free slots.
    pub queue_wait: Stats,
    /// The scheduler's decision time per placement.
    pub scheduling_overhead: Stats,
    /// EXECUTING -> payload start: hand-off and launch.
    pub launch_overhead: Stats,
    /// Payload end -> final state: collection of the result.
    pub completion_overhead: Stats,
    /// Whole lifetime minus payload time (so communicator creation counts
    /// as overhead), DONE tasks.
    pub task_overhead: Stats,
    /// Communicator creation of multi-rank function tasks.
    pub comm_creation: Stats,
    /// Busy core-seconds over available core-seconds (0..1).
    pub core_utilization: f64,
    /// Busy GPU-seconds over available GPU-seconds (0..1; 0 without GPUs).
    pub gpu_utilization: f64,
    /// The tasks' CPU seconds added up ([`ResourceUsage::cpu_s`]: thread
    /// clocks for thread ranks, user + system time otherwise).
    pub cpu_s: f64,
    /// `cpu_s` over available core-seconds (0..1): how busy the cores
    /// really were, where `core_utilization` counts reserved cores.
    pub cpu_utilization: f64,
    /// The largest peak RSS of a task, in KiB.
    pub max_rss_kib: u64,
}

impl Summary {
    /// Computes the summary of `records` on pilots with `cores` cores and
    /// `gpus` GPUs in total.
    pub fn compute(records: &[TaskRecord], cores: usize, gpus: f64) -> Summary {
        if records.is_empty() {
            return Summary::default();
        }
        let first = records
            .iter()
            .map(|r| r.ts.new)
            .filter(|&t| t != 0)
            .min()
            .unwrap_or(0);
        let last = records.iter().map(|r| r.ts.finished).max().unwrap_or(0);
        let span = last.saturating_sub(first) as f64 * 1e-9;
        let count = |s: TaskState| records.iter().filter(|r| r.state == s).count();
        let ran: Vec<&TaskRecord> = records
            .iter()
            .filter(|r| r.ts.executing != 0 && r.ts.exec_start != 0)
            .collect();
        let diff = |a: u64, b: u64| b.saturating_sub(a);
        let busy_cores: f64 = ran
            .iter()
            .map(|r| r.exec_time().as_secs_f64() * f64::from(r.cores))
            .sum();
        let busy_gpus: f64 = ran
            .iter()
            .map(|r| r.exec_time().as_secs_f64() * f64::from(r.gpus))
            .sum();
        let cpu_s: f64 = records
            .iter()
            .filter_map(|r| r.usage.as_deref())
            .map(ResourceUsage::cpu_s)
            .sum();
        Summary {
            tasks: records.len(),
            done: count(TaskState::Done),
            failed: count(TaskState::Failed),
            canceled: count(TaskState::Canceled),
            span_s: span,
            throughput: if span > 0.0 {
                records.len() as f64 / span
            } else {
                0.0
            },
            queue_wait: Stats::from_ns(
                records
                    .iter()
                    .filter(|r| r.ts.executing != 0)
                    .map(|r| diff(r.ts.scheduling, r.ts.executing))
                    .collect(),
            ),
            scheduling_overhead: Stats::from_ns(ran.iter().map(|r| r.placement_ns).collect()),
            launch_overhead: Stats::from_ns(
                ran.iter()
                    .map(|r| diff(r.ts.executing, r.ts.exec_start))
                    .collect(),
            ),
            completion_overhead: Stats::from_ns(
                ran.iter()
                    .filter(|r| r.ts.exec_end != 0)
                    .map(|r| diff(r.ts.exec_end, r.ts.finished))
                    .collect(),
            ),
            task_overhead: Stats::from_ns(
                ran.iter()
                    .filter(|r| r.state == TaskState::Done)
                    .map(|r| {
                        diff(r.ts.new, r.ts.finished)
                            .saturating_sub(r.exec_time().as_nanos() as u64)
                    })
                    .collect(),
            ),
            comm_creation: Stats::from_ns(
                records
                    .iter()
                    .filter(|r| r.ranks > 1 && r.comm_ns != 0)
                    .map(|r| r.comm_ns)
                    .collect(),
            ),
            core_utilization: if span > 0.0 && cores > 0 {
                busy_cores / (span * cores as f64)
            } else {
                0.0
            },
            gpu_utilization: if span > 0.0 && gpus > 0.0 {
                busy_gpus / (span * gpus)
            } else {
                0.0
            },
            cpu_s,
            cpu_utilization: if span > 0.0 && cores > 0 {
                cpu_s / (span * cores as f64)
            } else {
                0.0
            },
            max_rss_kib: records
                .iter()
                .filter_map(|r| r.usage.as_deref())
                .map(|u| u.max_rss_kib)
                .max()
                .unwrap_or(0),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "tasks {} (done {}, failed {}, canceled {}) in {:.3}s: {:.0} tasks/s",
            self.tasks, self.done, self.failed, self.canceled, self.span_s, self.throughput
        )?;
        writeln!(f, "queue wait          {}", self.queue_wait)?;
        writeln!(f, "scheduling overhead {}", self.scheduling_overhead)?;
        writeln!(f, "launch overhead     {}", self.launch_overhead)?;
        writeln!(f, "completion overhead {}", self.completion_overhead)?;
        writeln!(f, "task overhead       {}", self.task_overhead)?;
        writeln!(f, "comm creation       {}", self.comm_creation)?;
        writeln!(
            f,
            "utilisation         cores {:.1}%, GPUs {:.1}%",
            self.core_utilization * 100.0,
            self.gpu_utilization * 100.0
        )?;
        write!(
            f,
            "CPU time            {:.3}s ({:.1}% of the cores), largest task peak RSS {:.1} MiB",
            self.cpu_s,
            self.cpu_utilization * 100.0,
            self.max_rss_kib as f64 / 1024.0
        )
    }
}

/// The files [`Session::write_profile`](crate::Session::write_profile)
/// wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileFiles {
    /// Every event as JSON Lines (`profile.jsonl`).
    pub jsonl: PathBuf,
    /// The same as CSV (`profile.csv`).
    pub csv: PathBuf,
    /// A Chrome trace / Perfetto timeline (`trace.json`): one track per
    /// core, one slice per task rank, counter tracks of the resource
    /// samples.
    pub chrome_trace: PathBuf,
    /// The resource samples of every pilot (`resources.jsonl`, one
    /// [`ResourceSample`] a line; empty without samples).
    pub resources: PathBuf,
    /// The [`Summary`] as JSON (`summary.json`).
    pub summary: PathBuf,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> crate::PilotError + '_ {
    move |e| crate::PilotError::io(format!("writing {}", path.display()), e)
}

/// Writes records (and session events) as JSON Lines.
pub(crate) fn write_jsonl(
    path: &Path,
    session: &[ProfileRecord],
    records: &[TaskRecord],
) -> crate::Result<()> {
    let err = io_err(path);
    let mut out = BufWriter::new(std::fs::File::create(path).map_err(&err)?);
    let mut line = |r: &ProfileRecord| -> std::io::Result<()> {
        serde_json::to_writer(&mut out, r).map_err(std::io::Error::other)?;
        out.write_all(b"\n")
    };
    for r in session {
        line(r).map_err(&err)?;
    }
    for t in records {
        for r in t.events() {
            line(&r).map_err(&err)?;
        }
    }
    out.flush().map_err(&err)
}

fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// Writes records (and session events) as CSV, in the columns of
/// `deeprc_core::Profiler::write_csv`.
pub(crate) fn write_csv(
    path: &Path,
    session: &[ProfileRecord],
    records: &[TaskRecord],
) -> crate::Result<()> {
    let err = io_err(path);
    let mut out = BufWriter::new(std::fs::File::create(path).map_err(&err)?);
    writeln!(out, "timestamp_ns,entity,event,duration_ns,attrs").map_err(&err)?;
    let mut row = |r: &ProfileRecord| -> std::io::Result<()> {
        let attrs: Vec<String> = r.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            out,
            "{},{},{},{},{}",
            r.timestamp_ns,
            csv_field(&r.entity),
            csv_field(&r.event),
            r.duration_ns.map(|d| d.to_string()).unwrap_or_default(),
            csv_field(&attrs.join(";"))
        )
    };
    for r in session {
        row(r).map_err(&err)?;
    }
    for t in records {
        for r in t.events() {
            row(&r).map_err(&err)?;
        }
    }
    out.flush().map_err(&err)
}

/// A pilot as the trace shows it.
pub(crate) struct TracePilot {
    pub(crate) id: String,
    pub(crate) nodes: Vec<(String, usize)>,
}

/// The trace arguments of a task's slices.
fn slice_args(r: &TaskRecord) -> serde_json::Value {
    let mut args = serde_json::json!({
        "state": r.state.as_str(),
        "attempts": r.attempts,
        "comm_us": r.comm_ns as f64 / 1000.0,
    });
    if let (Some(u), Some(m)) = (r.usage.as_deref(), args.as_object_mut()) {
        m.insert("cpu_s".into(), serde_json::json!(u.cpu_s()));
        m.insert("user_cpu_s".into(), serde_json::json!(u.user_cpu_s));
        m.insert("sys_cpu_s".into(), serde_json::json!(u.sys_cpu_s));
        if let Some(t) = u.thread_cpu_s {
            m.insert("thread_cpu_s".into(), serde_json::json!(t));
        }
        m.insert("max_rss_mib".into(), serde_json::json!(u.max_rss_mib()));
        m.insert("rss_scope".into(), serde_json::json!(u.rss_scope.as_str()));
        if let Some(g) = &u.gpu {
            m.insert(
                "gpu_max_memory_mib".into(),
                serde_json::json!(g.max_memory_kib as f64 / 1024.0),
            );
            m.insert(
                "gpu_mean_utilization_pct".into(),
                serde_json::json!(g.mean_utilization_pct),
            );
        }
    }
    args
}

/// Writes a Chrome trace (`chrome://tracing`, <https://ui.perfetto.dev>):
/// one process per pilot node, one thread per core, one complete event
/// per task rank and core from payload start to end (args: state,
/// attempts, communicator time, CPU time and peak memory), and counter
/// tracks (`"ph":"C"`) per sampled task rank: `<task> r<rank> cpu %`,
/// `<task> r<rank> rss MiB` (and GPU ones), in the process of its node,
/// dropping to 0 at the task's end.
pub(crate) fn write_chrome_trace(
    path: &Path,
    pilots: &[TracePilot],
    records: &[TaskRecord],
    samples: &[ResourceSample],
    origin_ns: u64,
) -> crate::Result<()> {
    let err = io_err(path);
    let mut out = BufWriter::new(std::fs::File::create(path).map_err(&err)?);
    let us = |ns: u64| ns.saturating_sub(origin_ns) as f64 / 1000.0;
    let pid = |pilot: usize, node: usize| pilot * 10_000 + node;
    let mut first = true;
    let mut ev =
        |out: &mut BufWriter<std::fs::File>, v: serde_json::Value| -> std::io::Result<()> {
            if !first {
                out.write_all(b",\n")?;
            }
            first = false;
            serde_json::to_writer(out, &v).map_err(std::io::Error::other)
        };
    out.write_all(b"{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n")
        .map_err(&err)?;
    for (pi, p) in pilots.iter().enumerate() {
        for (ni, (name, cores)) in p.nodes.iter().enumerate() {
            ev(
                &mut out,
                serde_json::json!({"name":"process_name","ph":"M","pid":pid(pi, ni),
                    "args":{"name":format!("{} node {ni} ({name})", p.id)}}),
            )
            .map_err(&err)?;
            for c in 0..*cores {
                ev(
                    &mut out,
                    serde_json::json!({"name":"thread_name","ph":"M","pid":pid(pi, ni),"tid":c,
                        "args":{"name":format!("core {c}")}}),
                )
                .map_err(&err)?;
            }
        }
    }
    for r in records {
        if r.ts.exec_start == 0 {
            continue;
        }
        let end = if r.ts.exec_end != 0 {
            r.ts.exec_end
        } else {
            r.ts.finished
        };
        let dur = us(end) - us(r.ts.exec_start);
        let args = slice_args(r);
        for (node, core) in r.placement.cores() {
            ev(
                &mut out,
                serde_json::json!({"name":format!("{} {}", r.id, r.name),"cat":&*r.kind,"ph":"X",
                    "ts":us(r.ts.exec_start),"dur":dur.max(0.0),"pid":pid(r.pilot as usize, node),"tid":core,
                    "args":&args}),
            )
            .map_err(&err)?;
        }
    }
    // Counter tracks: one per task rank and measure.
    let mut last: std::collections::BTreeMap<(String, u32, u32), (u32, u32, bool)> =
        std::collections::BTreeMap::new();
    for s in samples {
        let p = pid(s.pilot as usize, s.node as usize);
        let name = |what: &str| format!("{} r{} {what}", s.task, s.rank);
        let mut series: Vec<(String, f64)> = Vec::with_capacity(4);
        if let Some(c) = s.cpu_pct {
            series.push((name("cpu %"), c));
        }
        series.push((name("rss MiB"), s.rss_kib as f64 / 1024.0));
        if let Some(m) = s.gpu_memory_kib {
            series.push((name("gpu mem MiB"), m as f64 / 1024.0));
        }
        if let Some(u) = s.gpu_utilization_pct {
            series.push((name("gpu %"), u));
        }
        for (n, v) in series {
            ev(
                &mut out,
                serde_json::json!({"name":n,"ph":"C","ts":us(s.t_ns),"pid":p,"args":{"value":v}}),
            )
            .map_err(&err)?;
        }
        last.insert(
            (s.task.clone(), s.attempt, s.rank),
            (p as u32, s.pilot, s.gpu_memory_kib.is_some()),
        );
    }
    if !last.is_empty() {
        let ends: std::collections::HashMap<String, u64> = records
            .iter()
            .filter(|r| r.ts.exec_end != 0)
            .map(|r| (r.id.to_string(), r.ts.exec_end))
            .collect();
        for ((task, _attempt, rank), (p, _pilot, gpu)) in &last {
            let Some(&end) = ends.get(task) else {
                continue;
            };
            let mut names = vec!["cpu %", "rss MiB"];
            if *gpu {
                names.extend(["gpu mem MiB", "gpu %"]);
            }
            for what in names {
                ev(
                    &mut out,
                    serde_json::json!({"name":format!("{task} r{rank} {what}"),"ph":"C",
                        "ts":us(end),"pid":p,"args":{"value":0}}),
                )
                .map_err(&err)?;
            }
        }
    }
    out.write_all(b"\n]}\n").map_err(&err)?;
    out.flush().map_err(&err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, new: u64, exec: (u64, u64), fin: u64) -> TaskRecord {
        TaskRecord {
            id: TaskId(id),
            name: Arc::from("null"),
            kind: Arc::from("function.threads"),
            pilot: 0,
            state: TaskState::Done,
            attempts: 1,
            ranks: 1,
            cores: 1,
            gpus: 0.0,
            ts: Timestamps {
                new,
                scheduling: new + 10,
                executing: new + 20,
                exec_start: exec.0,
                exec_end: exec.1,
                finished: fin,
            },
            placement_ns: 5,
            comm_ns: 0,
            placement: PlacementRecord::Single { node: 0, core: 0 },
            usage: None,
            history: None,
        }
    }

    #[test]
    fn records_stay_compact() {
        assert!(
            std::mem::size_of::<TaskRecord>() <= 168,
            "{}",
            std::mem::size_of::<TaskRecord>()
        );
    }

    #[test]
    fn summary_and_events() {
        let rs = vec![
            rec(1, 1_000, (1_100, 1_000_000_000), 1_000_000_100),
            rec(2, 1_000, (1_100, 1_100), 2_000_000_000),
        ];
        let s = Summary::compute(&rs, 2, 0.0);
        assert_eq!(s.tasks, 2);
        assert!((s.span_s - 2.0).abs() < 1e-6);
        assert!((s.throughput - 1.0).abs() < 1e-6);
        assert!((s.core_utilization - 0.25).abs() < 1e-3);
        assert_eq!(s.queue_wait.count, 2);
        let ev = rs[0].events();
        let names: Vec<&str> = ev.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "state.new",
                "state.scheduling",
                "state.executing",
                "schedule.place",
                "exec.start",
                "exec.stop",
                "state.done"
            ]
        );
        assert!(s.to_string().contains("tasks/s"));
        assert_eq!(Stats::from_ns(vec![3, 1, 2]).p50, 2e-9);
    }
}
