//! The resource sampler of a pilot: one thread that, every
//! [`resource_sampling`](crate::PilotDescription::resource_sampling)
//! interval, samples the CPU utilisation and resident memory of each rank
//! that has been running for at least one interval, and appends the
//! samples to `<pilot sandbox>/resources.jsonl` ([`ResourceSample`], one
//! JSON object a line, flushed after each round).
//!
//! | rank | what is read | `scope` |
//! |---|---|---|
//! | executable | `/proc/<pid>/stat` of every process in the rank's process group (the task's process and the children it started): utime + stime + the waited-for children's, and the resident pages, summed | `group` |
//! | function in a worker process | `/proc/<worker pid>/stat` | `process` |
//! | function on a thread rank | `/proc/self/task/<tid>/stat`: the rank thread's CPU time; its RSS is the host's | `thread` |
//!
//! (The resident pages are `stat`'s field 24, the second field of
//! `statm`: one file is read instead of two.) CPU utilisation is the CPU
//! time since the previous sample over the wall time since, in percent of
//! one core (a 4-thread rank may show 400 %); the first sample of a worker
//! rank has none, since the worker's earlier tasks are in its counters.
//!
//! With the cargo feature `nvml`, ranks with GPUs also get the GPU memory
//! their processes hold (NVML's running compute processes) and the
//! utilisation of their devices. Without NVML (no driver, no GPU) nothing
//! GPU-related is recorded, and the pilot says so once (a `nvml.unavailable`
//! session event and a line on stderr).
//!
//! Short tasks cost only an insertion into and a removal from a map: the
//! thread wakes at most once an interval and reads nothing for tasks that
//! have not been running an interval yet.

use crate::usage::{clock_ticks, page_kib, SampleSummary};
use deeprc_core::sync::lock;
use deeprc_core::{now_ns, ProfileRecord, Profiler, TaskId};
use serde::{Deserialize, Serialize};
use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{BufWriter, Write},
    path::PathBuf,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// The smallest sampling interval (shorter ones are raised to it).
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// One sample of one rank, as written to `resources.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceSample {
    /// When, in nanoseconds since the Unix epoch.
    pub t_ns: u64,
    /// The pilot's index in the session.
    pub pilot: u32,
    /// The rank's node.
    pub node: u32,
    /// The task (`task.000042`).
    pub task: String,
    /// The attempt (0 for the first).
    pub attempt: u32,
    /// The rank.
    pub rank: u32,
    /// What was read: `group` (an executable's process group), `process`
    /// (a worker process) or `thread` (a rank thread of the host).
    pub scope: String,
    /// CPU utilisation since the previous sample, in percent of one core
    /// (none on a worker rank's first sample).
    pub cpu_pct: Option<f64>,
    /// Resident memory in KiB (the host's for a thread rank).
    pub rss_kib: u64,
    /// GPU memory of the rank's processes in KiB (feature `nvml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_kib: Option<u64>,
    /// Mean utilisation of the rank's devices in percent (feature `nvml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_utilization_pct: Option<f64>,
}

/// What a rank runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A thread of this process.
    Thread(u32),
    /// A process group (an executable's).
    Group(u32),
    /// One process (a worker).
    Process(u32),
}

impl Target {
    fn scope(self) -> &'static str {
        match self {
            Target::Thread(_) => "thread",
            Target::Group(_) => "group",
            Target::Process(_) => "process",
        }
    }
}

/// A rank to sample.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    pub(crate) task: TaskId,
    pub(crate) attempt: u32,
    pub(crate) rank: u32,
    pub(crate) node: u32,
    pub(crate) target: Target,
    /// The CUDA device numbers of its GPUs (used as NVML indices).
    pub(crate) gpus: Vec<u32>,
    /// The rank's CPU time (ns) at `start_ns`, when known (a new process:
    /// 0; a rank thread: its thread clock).
    pub(crate) baseline_cpu_ns: Option<u64>,
    pub(crate) start_ns: u64,
}

struct Entry {
    watch: Watch,
    due: Instant,
    /// `(time, CPU seconds)` of the previous reading.
    prev: Option<(u64, f64)>,
    samples: u32,
}

type Key = (u64, u32, u32);

/// A due rank: its key, what to read and its previous reading.
type Due = (Key, Watch, Option<(u64, f64)>);

#[derive(Default)]
struct State {
    entries: HashMap<Key, Entry>,
    summaries: HashMap<(u64, u32), SampleSummary>,
    stop: bool,
}

/// The sampler of one pilot (see the module docs).
pub(crate) struct Sampler {
    interval: Duration,
    state: Mutex<State>,
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What a sampling round needs from outside the sampler's state.
struct Output {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    pilot: u32,
    pilot_id: String,
    events: Profiler,
    gpu: gpu::Gpu,
}

impl Sampler {
    /// Starts the sampling thread of pilot `pilot`, writing to `path`.
    pub(crate) fn start(
        interval: Duration,
        path: PathBuf,
        pilot: u32,
        pilot_id: String,
        events: Profiler,
    ) -> std::io::Result<Arc<Sampler>> {
        let s = Arc::new(Sampler {
            interval: interval.max(MIN_INTERVAL),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            thread: Mutex::new(None),
        });
        let out = Output {
            path,
            file: None,
            pilot,
            pilot_id,
            events,
            gpu: gpu::Gpu::new(),
        };
        let me = Arc::clone(&s);
        let h = std::thread::Builder::new()
            .name(format!("deeprc-sampler-{pilot}"))
            .spawn(move || me.run(out))?;
        *lock(&s.thread) = Some(h);
        Ok(s)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Samples this rank from one interval on, until [`unwatch`](Self::unwatch)
    /// or [`take`](Self::take).
    pub(crate) fn watch(&self, w: Watch) {
        let key = (w.task.0, w.attempt, w.rank);
        let prev = w.baseline_cpu_ns.map(|ns| (w.start_ns, ns as f64 * 1e-9));
        let entry = Entry {
            watch: w,
            due: Instant::now() + self.interval,
            prev,
            samples: 0,
        };
        self.lock().entries.insert(key, entry);
    }

    /// Stops sampling a rank (it ended).
    pub(crate) fn unwatch(&self, task: TaskId, attempt: u32, rank: u32) {
        self.lock().entries.remove(&(task.0, attempt, rank));
    }

    /// Stops sampling an attempt and returns what was seen of it.
    pub(crate) fn take(&self, task: TaskId, attempt: u32) -> Option<SampleSummary> {
        let mut st = self.lock();
        st.entries.retain(|k, _| !(k.0 == task.0 && k.1 == attempt));
        st.summaries.remove(&(task.0, attempt))
    }

    /// Stops the thread (after its current round).
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
        let h = lock(&self.thread).take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }

    fn run(&self, mut out: Output) {
        let mut st = self.lock();
        loop {
            if st.stop {
                return;
            }
            let now = Instant::now();
            let due: Vec<Due> = st
                .entries
                .iter()
                .filter(|(_, e)| e.due <= now)
                .map(|(k, e)| (*k, e.watch.clone(), e.prev))
                .collect();
            if !due.is_empty() {
                drop(st);
                let readings = self.read(&due, &mut out);
                st = self.lock();
                let mut lines = Vec::with_capacity(readings.len());
                for (key, sample, cpu_s) in readings {
                    // Gone meanwhile: the rank ended, its sample is stale.
                    let Some(e) = st.entries.get_mut(&key) else {
                        continue;
                    };
                    e.prev = Some((sample.t_ns, cpu_s));
                    e.due += self.interval;
                    if e.due <= now {
                        e.due = now + self.interval;
                    }
                    e.samples += 1;
                    let rank_samples = e.samples;
                    let sum = st.summaries.entry((key.0, key.1)).or_default();
                    // The rounds of the attempt (its most sampled rank).
                    sum.count = sum.count.max(rank_samples);
                    if let (Some(m), Some(u)) = (sample.gpu_memory_kib, sample.gpu_utilization_pct)
                    {
                        sum.gpu_samples += 1;
                        sum.gpu_max_memory_kib = sum.gpu_max_memory_kib.max(m);
                        sum.gpu_utilization_sum += u;
                    }
                    lines.push(sample);
                }
                // Entries that could not be read (the process is gone) wait
                // for their next turn.
                for (k, ..) in &due {
                    if let Some(e) = st.entries.get_mut(k) {
                        if e.due <= now {
                            e.due = now + self.interval;
                        }
                    }
                }
                drop(st);
                out.write(&lines);
                st = self.lock();
                continue;
            }
            let next = st
                .entries
                .values()
                .map(|e| e.due)
                .min()
                .unwrap_or(now + self.interval)
                .min(now + self.interval);
            st = self
                .wake
                .wait_timeout(st, next.saturating_duration_since(now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Reads the due ranks; returns a sample and the CPU seconds read for
    /// each rank that could be read.
    fn read(&self, due: &[Due], out: &mut Output) -> Vec<(Key, ResourceSample, f64)> {
        let groups: HashSet<u32> = due
            .iter()
            .filter_map(|(_, w, _)| match w.target {
                Target::Group(g) => Some(g),
                _ => None,
            })
            .collect();
        let members = if groups.is_empty() {
            HashMap::new()
        } else {
            scan_groups(&groups)
        };
        let ticks = clock_ticks();
        let page = page_kib();
        let mut res = Vec::with_capacity(due.len());
        for (key, w, prev) in due {
            let t = now_ns();
            let (cpu_ticks, rss_pages, pids) = match w.target {
                Target::Thread(tid) => match read_stat(&format!("/proc/self/task/{tid}/stat")) {
                    Some(s) => (s.utime + s.stime, s.rss_pages, vec![std::process::id()]),
                    None => continue,
                },
                Target::Process(pid) => match read_stat(&format!("/proc/{pid}/stat")) {
                    Some(s) => (
                        s.utime + s.stime + s.cutime + s.cstime,
                        s.rss_pages,
                        vec![pid],
                    ),
                    None => continue,
                },
                Target::Group(g) => match members.get(&g) {
                    Some(m) => (m.cpu_ticks, m.rss_pages, m.pids.clone()),
                    None => continue,
                },
            };
            let cpu_s = cpu_ticks as f64 / ticks;
            let cpu_pct = prev.and_then(|(pt, pc)| {
                let wall = t.saturating_sub(pt) as f64 * 1e-9;
                (wall > 0.0).then(|| ((cpu_s - pc).max(0.0) / wall * 100.0 * 10.0).round() / 10.0)
            });
            let (gpu_memory_kib, gpu_utilization_pct) = if w.gpus.is_empty() {
                (None, None)
            } else {
                match out.gpu.sample(&w.gpus, &pids) {
                    Ok(g) => g.map_or((None, None), |(m, u)| (Some(m), Some(u))),
                    Err(why) => {
                        out.events.push(
                            ProfileRecord::now(out.pilot_id.clone(), "nvml.unavailable")
                                .with_attr("error", &why),
                        );
                        gpu::log_once(&why);
                        (None, None)
                    }
                }
            };
            res.push((
                *key,
                ResourceSample {
                    t_ns: t,
                    pilot: out.pilot,
                    node: w.node,
                    task: w.task.to_string(),
                    attempt: w.attempt,
                    rank: w.rank,
                    scope: w.target.scope().to_string(),
                    cpu_pct,
                    rss_kib: rss_pages * page,
                    gpu_memory_kib,
                    gpu_utilization_pct,
                },
                cpu_s,
            ));
        }
        res
    }
}

impl Output {
    /// Appends samples to the file (created on the first sample) and
    /// flushes them.
    fn write(&mut self, lines: &[ResourceSample]) {
        if lines.is_empty() {
            return;
        }
        if self.file.is_none() {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => self.file = Some(BufWriter::new(f)),
                Err(e) => {
                    self.events.push(
                        ProfileRecord::now(self.pilot_id.clone(), "resources.unwritable")
                            .with_attr("path", self.path.display())
                            .with_attr("error", e),
                    );
                    return;
                }
            }
        }
        if let Some(f) = &mut self.file {
            for s in lines {
                if serde_json::to_writer(&mut *f, s).is_ok() {
                    let _ = f.write_all(b"\n");
                }
            }
            let _ = f.flush();
        }
    }
}

/// The fields of `/proc/<pid>/stat` the sampler uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stat {
    pgrp: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
    rss_pages: u64,
}

/// Parses a `stat` line: the fields after the command name, which is in
/// parentheses and may hold spaces and parentheses itself.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // f[0] is field 3 (state) of proc(5).
    let n = |i: usize| -> Option<u64> { f.get(i)?.parse::<i64>().ok().map(|v| v.max(0) as u64) };
    Some(Stat {
        pgrp: n(2)? as u32,
        utime: n(11)?,
        stime: n(12)?,
        cutime: n(13)?,
        cstime: n(14)?,
        rss_pages: n(21)?,
    })
}

fn read_stat(path: &str) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

#[derive(Debug, Default)]
struct Group {
    cpu_ticks: u64,
    rss_pages: u64,
    pids: Vec<u32>,
}

/// Every process of the process groups `groups`, from one pass over
/// `/proc`.
fn scan_groups(groups: &HashSet<u32>) -> HashMap<u32, Group> {
    let mut out: HashMap<u32, Group> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some(s) = read_stat(&format!("/proc/{pid}/stat")) else {
            continue;
        };
        if groups.contains(&s.pgrp) {
            let g = out.entry(s.pgrp).or_default();
            g.cpu_ticks += s.utime + s.stime + s.cutime + s.cstime;
            g.rss_pages += s.rss_pages;
            g.pids.push(pid);
        }
    }
    out
}

/// Reads the resource samples a pilot wrote (lines that do not parse, a
/// line being written for instance, are skipped).
pub(crate) fn read_samples(path: &std::path::Path) -> Vec<ResourceSample> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(feature = "nvml")]
mod gpu {
    use nvml_wrapper::{enums::device::UsedGpuMemory, Nvml};

    /// NVML, loaded on first use (`libnvidia-ml`, through `nvml-wrapper`).
    #[derive(Default)]
    pub(super) struct Gpu {
        nvml: Option<Nvml>,
        failed: bool,
    }

    impl Gpu {
        pub(super) fn new() -> Self {
            Self::default()
        }

        /// GPU memory of `pids` on `devices` (KiB) and the devices' mean
        /// utilisation (percent). `Err` the first time NVML cannot be
        /// loaded; `Ok(None)` afterwards and for devices it cannot read.
        pub(super) fn sample(
            &mut self,
            devices: &[u32],
            pids: &[u32],
        ) -> Result<Option<(u64, f64)>, String> {
            if self.failed {
                return Ok(None);
            }
            if self.nvml.is_none() {
                match Nvml::init() {
                    Ok(n) => self.nvml = Some(n),
                    Err(e) => {
                        self.failed = true;
                        return Err(e.to_string());
                    }
                }
            }
            let Some(nvml) = &self.nvml else {
                return Ok(None);
            };
            let (mut mem, mut util, mut n) = (0u64, 0f64, 0u32);
            for &d in devices {
                let Ok(dev) = nvml.device_by_index(d) else {
                    continue;
                };
                if let Ok(u) = dev.utilization_rates() {
                    util += f64::from(u.gpu);
                    n += 1;
                }
                if let Ok(procs) = dev.running_compute_processes() {
                    for p in procs.iter().filter(|p| pids.contains(&p.pid)) {
                        if let UsedGpuMemory::Used(b) = p.used_gpu_memory {
                            mem += b / 1024;
                        }
                    }
                }
            }
            Ok((n > 0).then(|| (mem, util / f64::from(n))))
        }
    }

    /// Says once per process that NVML is missing.
    pub(super) fn log_once(why: &str) {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            eprintln!(
                "deeprc-pilot: NVML is not available ({why}): GPU memory and utilisation are \
                 not sampled"
            );
        });
    }
}

#[cfg(not(feature = "nvml"))]
mod gpu {
    /// Without the feature `nvml`: no GPU samples.
    pub(super) struct Gpu;

    impl Gpu {
        pub(super) fn new() -> Self {
            Gpu
        }

        pub(super) fn sample(
            &mut self,
            _devices: &[u32],
            _pids: &[u32],
        ) -> Result<Option<(u64, f64)>, String> {
            Ok(None)
        }
    }

    pub(super) fn log_once(_why: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 1 0 100 1000 250 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            Stat {
                pgrp: 42,
                utime: 7,
                stime: 3,
                cutime: 2,
                cstime: 1,
                rss_pages: 250
            }
        );
        let me = read_stat("/proc/self/stat").unwrap();
        assert!(me.rss_pages > 0);
    }
}
