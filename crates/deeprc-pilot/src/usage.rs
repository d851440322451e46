//! What a task used, as the operating system counts it: CPU time and peak
//! memory ([`ResourceUsage`], kept in each task's profile record), and the
//! system calls that measure it.
//!
//! | task | CPU time | peak memory ([`RssScope`]) |
//! |---|---|---|
//! | executable (`fork`) | `wait4` of each rank's process: user + system time of the process and of the descendants it waited for, summed over ranks | `ru_maxrss` of `wait4`: the largest of the process and its waited-for descendants, the largest over ranks (`Task`; `AtMost` when not above the host's peak at the spawn, which Linux may have counted) |
//! | executable (`mpirun`) | `wait4` of the launcher: `mpirun` and the daemons and ranks it waited for (on this node) | the largest single process among them (same) |
//! | function, threads | `thread_cpu_s`: `CLOCK_THREAD_CPUTIME_ID` of each rank's thread around the call, summed; `user_cpu_s` + `sys_cpu_s`: `getrusage(RUSAGE_SELF)` of the host process over the task (an upper bound: other tasks and threads count too, intra-op threads of libraries such as libtorch count only here) | the host's `ru_maxrss` at the end (`Process`: not separable per task) |
//! | function, worker processes / `mpirun` | the worker's `getrusage(RUSAGE_SELF)` around the call, summed over ranks | the worker's `VmHWM` after resetting it before the call (`/proc/self/clear_refs`), the largest over ranks (`Task`); `ru_maxrss` of the worker's life where the reset is refused (`Process`) |
//!
//! Only `wait4` needs `unsafe` (nix wraps `getrusage` and `clock_gettime`,
//! not `wait4`): it is the one unsafe block of the crate.

use deeprc_core::sync::lock;
use serde::Serialize;
use std::{
    fs::File,
    io::{Read, Seek, SeekFrom, Write},
    os::unix::process::ExitStatusExt,
    process::ExitStatus,
    sync::{Mutex, OnceLock},
};

/// What the peak memory of a [`ResourceUsage`] covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RssScope {
    /// The task's own processes: the largest single process of the task
    /// (its rank processes and the descendants they waited for), or the
    /// worker process during the call only.
    Task,
    /// The whole process the task ran in, over that process's life so far:
    /// thread ranks share the host's memory, so the host's peak is all
    /// there is (and a worker whose peak could not be reset reports its own
    /// life's peak).
    Process,
    /// An upper bound of the task's own peak: Linux's `ru_maxrss` of a
    /// spawned child also counts the memory it had before its `exec` (a
    /// copy or a share of the host's), and this figure is not above the
    /// host's peak at the spawn, so it may be the host's and not the
    /// task's. A figure above the host's peak is the task's (`Task`).
    AtMost,
}

impl RssScope {
    /// `task` or `process`.
    pub fn as_str(self) -> &'static str {
        match self {
            RssScope::Task => "task",
            RssScope::Process => "process",
            RssScope::AtMost => "at_most",
        }
    }
}

/// GPU memory and utilisation of a task with GPUs, from NVML samples
/// (cargo feature `nvml`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GpuUsage {
    /// The largest GPU memory the task's processes held in one sample, in
    /// KiB (summed over its devices).
    pub max_memory_kib: u64,
    /// The mean utilisation of the task's devices over its samples, in
    /// percent (device-wide: other processes on a shared GPU count too).
    pub mean_utilization_pct: f32,
    /// How many samples.
    pub samples: u32,
}

/// What a task used (its last attempt), as the operating system measured
/// it; see the module docs of each kind of task for what is counted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceUsage {
    /// User CPU time in seconds (for thread ranks: of the whole host process
    /// over the task, an upper bound).
    pub user_cpu_s: f64,
    /// System CPU time in seconds (same scope as `user_cpu_s`).
    pub sys_cpu_s: f64,
    /// Thread ranks only: the CPU time of the ranks' own threads, summed
    /// (the task's own figure, unless its libraries compute on threads of
    /// their own, which only `user_cpu_s` sees).
    pub thread_cpu_s: Option<f64>,
    /// Peak resident memory in KiB (see `rss_scope`).
    pub max_rss_kib: u64,
    /// What `max_rss_kib` covers.
    pub rss_scope: RssScope,
    /// How many utilisation samples were taken while it ran (0 for tasks
    /// shorter than the sampling interval, or without sampling).
    pub samples: u32,
    /// GPU figures (feature `nvml`, tasks with GPUs, NVML present).
    pub gpu: Option<GpuUsage>,
}

impl ResourceUsage {
    /// The task's CPU seconds: the thread clocks for thread ranks, user +
    /// system time otherwise.
    pub fn cpu_s(&self) -> f64 {
        self.thread_cpu_s
            .unwrap_or(self.user_cpu_s + self.sys_cpu_s)
    }

    /// The host process's CPU seconds over the task for thread ranks (the
    /// upper bound), user + system time otherwise.
    pub fn process_cpu_s(&self) -> f64 {
        self.user_cpu_s + self.sys_cpu_s
    }

    /// Peak resident memory in MiB.
    pub fn max_rss_mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }

    /// `(key, value)` pairs for profile events and trace arguments.
    pub(crate) fn attrs(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("cpu_s".to_string(), format!("{:.6}", self.cpu_s())),
            ("user_cpu_s".to_string(), format!("{:.6}", self.user_cpu_s)),
            ("sys_cpu_s".to_string(), format!("{:.6}", self.sys_cpu_s)),
        ];
        if let Some(t) = self.thread_cpu_s {
            v.push(("thread_cpu_s".to_string(), format!("{t:.6}")));
        }
        v.push(("max_rss_kib".to_string(), self.max_rss_kib.to_string()));
        v.push(("rss_scope".to_string(), self.rss_scope.as_str().to_string()));
        v.push(("samples".to_string(), self.samples.to_string()));
        if let Some(g) = &self.gpu {
            v.push((
                "gpu_max_memory_kib".to_string(),
                g.max_memory_kib.to_string(),
            ));
            v.push((
                "gpu_mean_utilization_pct".to_string(),
                format!("{:.1}", g.mean_utilization_pct),
            ));
        }
        v
    }
}

/// User and system CPU time, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    pub(crate) user_ns: u64,
    pub(crate) sys_ns: u64,
}

impl CpuTimes {
    fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user_ns: self.user_ns.saturating_sub(earlier.user_ns),
            sys_ns: self.sys_ns.saturating_sub(earlier.sys_ns),
        }
    }
}

/// What one rank (one report of an executor) used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RankUsage {
    /// CPU time of the rank's process(es) or, for thread ranks, nothing
    /// (see `thread`).
    pub(crate) cpu: CpuTimes,
    pub(crate) max_rss_kib: u64,
    pub(crate) rss_scope: RssScope,
    /// Thread ranks: the thread's CPU time and the host's CPU times at the
    /// start and end of the call.
    pub(crate) thread: Option<ThreadUsage>,
}

/// A thread rank's measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThreadUsage {
    pub(crate) cpu_ns: u64,
    pub(crate) process_start: CpuTimes,
    pub(crate) process_end: CpuTimes,
}

/// The usage of one attempt, added up from its ranks' reports.
#[derive(Debug, Default)]
pub(crate) struct UsageAcc {
    reports: u32,
    cpu: CpuTimes,
    max_rss_kib: u64,
    process_scope: bool,
    bound_scope: bool,
    thread_cpu_ns: Option<u64>,
    process_span: Option<(CpuTimes, CpuTimes)>,
}

impl UsageAcc {
    pub(crate) fn add(&mut self, u: &RankUsage) {
        self.reports += 1;
        self.max_rss_kib = self.max_rss_kib.max(u.max_rss_kib);
        self.process_scope |= u.rss_scope == RssScope::Process;
        self.bound_scope |= u.rss_scope == RssScope::AtMost;
        match &u.thread {
            None => {
                self.cpu.user_ns += u.cpu.user_ns;
                self.cpu.sys_ns += u.cpu.sys_ns;
            }
            Some(t) => {
                *self.thread_cpu_ns.get_or_insert(0) += t.cpu_ns;
                // The host's counters only grow: the earliest start and the
                // latest end span the whole task.
                let (s, e) = self
                    .process_span
                    .get_or_insert((t.process_start, t.process_end));
                s.user_ns = s.user_ns.min(t.process_start.user_ns);
                s.sys_ns = s.sys_ns.min(t.process_start.sys_ns);
                e.user_ns = e.user_ns.max(t.process_end.user_ns);
                e.sys_ns = e.sys_ns.max(t.process_end.sys_ns);
            }
        }
    }

    /// The attempt's usage, with the sampler's figures (`None` when no rank
    /// reported any).
    pub(crate) fn finish(&self, samples: Option<SampleSummary>) -> Option<ResourceUsage> {
        if self.reports == 0 {
            return None;
        }
        let mut cpu = self.cpu;
        if let Some((s, e)) = self.process_span {
            let d = e.since(s);
            cpu.user_ns += d.user_ns;
            cpu.sys_ns += d.sys_ns;
        }
        let samples = samples.unwrap_or_default();
        Some(ResourceUsage {
            user_cpu_s: cpu.user_ns as f64 * 1e-9,
            sys_cpu_s: cpu.sys_ns as f64 * 1e-9,
            thread_cpu_s: self.thread_cpu_ns.map(|n| n as f64 * 1e-9),
            max_rss_kib: self.max_rss_kib,
            rss_scope: if self.process_scope {
                RssScope::Process
            } else if self.bound_scope {
                RssScope::AtMost
            } else {
                RssScope::Task
            },
            samples: samples.count,
            gpu: samples.gpu(),
        })
    }
}

/// What the sampler saw of one attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct SampleSummary {
    pub(crate) count: u32,
    pub(crate) gpu_samples: u32,
    pub(crate) gpu_max_memory_kib: u64,
    pub(crate) gpu_utilization_sum: f64,
}

impl SampleSummary {
    fn gpu(&self) -> Option<GpuUsage> {
        (self.gpu_samples > 0).then(|| GpuUsage {
            max_memory_kib: self.gpu_max_memory_kib,
            mean_utilization_pct: (self.gpu_utilization_sum / f64::from(self.gpu_samples)) as f32,
            samples: self.gpu_samples,
        })
    }
}

fn timeval_ns(t: nix::sys::time::TimeVal) -> u64 {
    (t.tv_sec().max(0) as u64) * 1_000_000_000 + (t.tv_usec().max(0) as u64) * 1000
}

fn libc_timeval_ns(t: libc::timeval) -> u64 {
    (t.tv_sec.max(0) as u64) * 1_000_000_000 + (t.tv_usec.max(0) as u64) * 1000
}

/// This process's CPU times and peak RSS (KiB), from
/// `getrusage(RUSAGE_SELF)`.
pub(crate) fn self_usage() -> (CpuTimes, u64) {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => (
            CpuTimes {
                user_ns: timeval_ns(u.user_time()),
                sys_ns: timeval_ns(u.system_time()),
            },
            u.max_rss().max(0) as u64,
        ),
        Err(_) => (CpuTimes::default(), 0),
    }
}

/// The calling thread's CPU time in nanoseconds
/// (`CLOCK_THREAD_CPUTIME_ID`).
pub(crate) fn thread_cpu_ns() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| (t.tv_sec().max(0) as u64) * 1_000_000_000 + t.tv_nsec().max(0) as u64)
        .unwrap_or(0)
}

/// The calling thread's kernel id.
pub(crate) fn current_tid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}

/// The exit of a reaped child and what it used.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildExit {
    pub(crate) status: ExitStatus,
    pub(crate) cpu: CpuTimes,
    pub(crate) max_rss_kib: u64,
    /// The spawner's peak RSS once the child was started (set by the
    /// reaper; 0 when unknown).
    pub(crate) spawner_max_rss_kib: u64,
}

impl ChildExit {
    /// The usage of a task process: its peak is its own when above the
    /// spawner's peak at the spawn, else an upper bound (see
    /// [`RssScope::AtMost`]).
    pub(crate) fn rank_usage(&self) -> RankUsage {
        RankUsage {
            cpu: self.cpu,
            max_rss_kib: self.max_rss_kib,
            rss_scope: if self.max_rss_kib > self.spawner_max_rss_kib {
                RssScope::Task
            } else {
                RssScope::AtMost
            },
            thread: None,
        }
    }
}

/// Reaps the child `pid` with `wait4`, returning its status and rusage;
/// `Ok(None)` when `nohang` and it has not exited.
pub(crate) fn wait4(pid: u32, nohang: bool) -> std::io::Result<Option<ChildExit>> {
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero `rusage` is a valid value of this plain C
        // struct of integers and timevals.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `status` and `ru` are valid, writable and live for the
        // call; wait4 writes only into them.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, flags, &mut ru) };
        if r == 0 {
            return Ok(None);
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(Some(ChildExit {
            status: ExitStatus::from_raw(status),
            cpu: CpuTimes {
                user_ns: libc_timeval_ns(ru.ru_utime),
                sys_ns: libc_timeval_ns(ru.ru_stime),
            },
            max_rss_kib: ru.ru_maxrss.max(0) as u64,
            spawner_max_rss_kib: 0,
        }));
    }
}

/// Clock ticks per second of `/proc` CPU times.
pub(crate) fn clock_ticks() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(
        || match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
            Ok(Some(n)) if n > 0 => n as f64,
            _ => 100.0,
        },
    )
}

/// The page size in KiB (for `/proc` RSS pages).
pub(crate) fn page_kib() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(
        || match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
            Ok(Some(n)) if n >= 1024 => n as u64 / 1024,
            _ => 4,
        },
    )
}

/// The per-call peak of a worker process: `/proc/self/clear_refs` resets
/// the kernel's high-water mark of this process's RSS (`VmHWM`; Linux 4.0
/// and later), `/proc/self/status` reads it back. Both files stay open.
struct PeakRss {
    clear_refs: File,
    status: File,
    buf: Vec<u8>,
}

static PEAK: OnceLock<Option<Mutex<PeakRss>>> = OnceLock::new();

fn peak() -> Option<&'static Mutex<PeakRss>> {
    PEAK.get_or_init(|| {
        let clear_refs = std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/self/clear_refs")
            .ok()?;
        let status = File::open("/proc/self/status").ok()?;
        Some(Mutex::new(PeakRss {
            clear_refs,
            status,
            buf: Vec::with_capacity(2048),
        }))
    })
    .as_ref()
}

/// Resets this process's peak RSS to its current RSS; `false` when the
/// kernel refuses (then only the life's peak is known).
pub(crate) fn reset_peak_rss() -> bool {
    let Some(p) = peak() else {
        return false;
    };
    let mut p = lock(p);
    p.clear_refs.write_all(b"5").is_ok()
}

/// This process's peak RSS (`VmHWM`) in KiB.
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let p = peak()?;
    let mut g = lock(p);
    let PeakRss { status, buf, .. } = &mut *g;
    buf.clear();
    status.seek(SeekFrom::Start(0)).ok()?;
    status.read_to_end(buf).ok()?;
    let text = std::str::from_utf8(buf).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line["VmHWM:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Measures a function call in a worker process: its CPU time and peak
/// RSS (see the module docs).
pub(crate) struct CallMeter {
    start: CpuTimes,
    reset: bool,
}

impl CallMeter {
    pub(crate) fn start() -> Self {
        let reset = reset_peak_rss();
        CallMeter {
            start: self_usage().0,
            reset,
        }
    }

    pub(crate) fn stop(self) -> RankUsage {
        let (end, maxrss) = self_usage();
        let peak = if self.reset { peak_rss_kib() } else { None };
        RankUsage {
            cpu: end.since(self.start),
            max_rss_kib: peak.unwrap_or(maxrss),
            rss_scope: if peak.is_some() {
                RssScope::Task
            } else {
                RssScope::Process
            },
            thread: None,
        }
    }
}

/// Measures a function call on a rank thread.
pub(crate) struct ThreadMeter {
    pub(crate) thread_start: u64,
    process_start: CpuTimes,
}

impl ThreadMeter {
    pub(crate) fn start() -> Self {
        ThreadMeter {
            thread_start: thread_cpu_ns(),
            process_start: self_usage().0,
        }
    }

    pub(crate) fn stop(self) -> RankUsage {
        let cpu_ns = thread_cpu_ns().saturating_sub(self.thread_start);
        let (process_end, maxrss) = self_usage();
        RankUsage {
            cpu: CpuTimes::default(),
            max_rss_kib: maxrss,
            rss_scope: RssScope::Process,
            thread: Some(ThreadUsage {
                cpu_ns,
                process_start: self.process_start,
                process_end,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meters_see_cpu_and_memory() {
        let m = ThreadMeter::start();
        // 20 ms of this thread's CPU, however long that takes here.
        let mut x = 0u64;
        while thread_cpu_ns() < m.thread_start + 20_000_000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let u = m.stop();
        let t = u.thread.unwrap();
        assert!(t.cpu_ns >= 20_000_000, "{u:?}");
        assert!(t.process_end.user_ns >= t.process_start.user_ns);
        assert!(u.max_rss_kib > 0);
        let mut acc = UsageAcc::default();
        acc.add(&u);
        acc.add(&u);
        let r = acc.finish(None).unwrap();
        assert!((r.thread_cpu_s.unwrap() - 2.0 * t.cpu_ns as f64 * 1e-9).abs() < 1e-9);
        assert_eq!(r.rss_scope, RssScope::Process);
        assert!(clock_ticks() > 0.0 && page_kib() > 0);
    }

    #[test]
    // Reaped by `wait4`, which is what is tested.
    #[allow(clippy::zombie_processes)]
    fn wait4_reports_a_child() {
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let e = wait4(child.id(), false).unwrap().unwrap();
        assert_eq!(e.status.code(), Some(3));
        assert!(e.max_rss_kib > 0);
        // Not ours (any more): an error, not a hang.
        assert!(wait4(child.id(), true).is_err());
    }
}
