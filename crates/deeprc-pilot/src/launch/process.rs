//! Spawning task processes: a few spawner threads create the sandbox, open
//! the output files, pin themselves to the rank's CPUs (the child inherits
//! the mask) and spawn; the process-wide reaper reports the exit.

use crate::{
    agent::{AgentEvent, RankDone},
    launch::CommandSpec,
    reaper::reaper,
    sampler::{Sampler, Target, Watch},
    sys,
    usage::ChildExit,
    FailReason, Placement,
};
use deeprc_core::sync::lock;
use deeprc_core::{now_ns, TaskId};
use nix::sys::signal::Signal;
use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    os::unix::process::{CommandExt, ExitStatusExt},
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex, MutexGuard},
    thread::JoinHandle,
};

/// One task's processes to start.
pub(crate) struct SpawnJob {
    pub(crate) task: TaskId,
    pub(crate) attempt: u32,
    pub(crate) specs: Vec<CommandSpec>,
    pub(crate) sandbox: PathBuf,
    pub(crate) cwd: PathBuf,
    pub(crate) pre_exec: Vec<String>,
    /// A function task under `mpirun`: read this many ranks' results, each
    /// of at most this many bytes, from the sandbox when the launcher exits.
    pub(crate) mpi_results: Option<(usize, u64)>,
    /// Each rank's node and CUDA devices (for the sampler).
    pub(crate) rank_nodes: Vec<(u32, Vec<u32>)>,
}

/// Each rank's node and CUDA devices.
pub(crate) fn rank_nodes(p: &Placement) -> Vec<(u32, Vec<u32>)> {
    p.ranks
        .iter()
        .map(|r| {
            (
                r.node as u32,
                r.gpus.iter().map(|g| g.device as u32).collect(),
            )
        })
        .collect()
}

#[derive(Default)]
struct ProcEntry {
    pids: Vec<u32>,
    killed: bool,
}

#[derive(Default)]
struct ProcTable {
    inner: Mutex<HashMap<u64, ProcEntry>>,
}

impl ProcTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, ProcEntry>> {
        lock(&self.inner)
    }
}

/// The spawner threads of a pilot.
pub(crate) struct ProcessExecutor {
    tx: Option<mpsc::Sender<SpawnJob>>,
    table: Arc<ProcTable>,
    threads: Vec<JoinHandle<()>>,
}

impl ProcessExecutor {
    pub(crate) fn new(
        events: mpsc::Sender<AgentEvent>,
        pin: bool,
        spawners: usize,
        sampler: Option<Arc<Sampler>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let rx = Arc::new(Mutex::new(rx));
        let table = Arc::new(ProcTable::default());
        let threads = (0..spawners)
            .filter_map(|i| {
                let rx = Arc::clone(&rx);
                let table = Arc::clone(&table);
                let events = events.clone();
                let sampler = sampler.clone();
                std::thread::Builder::new()
                    .name(format!("deeprc-spawn-{i}"))
                    .spawn(move || spawner(rx, table, events, pin, sampler))
                    .ok()
            })
            .collect();
        Self {
            tx: Some(tx),
            table,
            threads,
        }
    }

    /// Hands a task's processes to the spawner threads; fails when there
    /// is none to take them (none could be started).
    pub(crate) fn launch(&self, job: SpawnJob) -> Result<(), FailReason> {
        let task = job.task.0;
        self.table.lock().insert(task, ProcEntry::default());
        let sent = match &self.tx {
            Some(tx) if !self.threads.is_empty() => tx.send(job).is_ok(),
            _ => false,
        };
        if !sent {
            self.table.lock().remove(&task);
            return Err(FailReason::Launch(
                "no spawner thread could be started".to_string(),
            ));
        }
        Ok(())
    }

    /// Kills every process of the task (its process groups).
    pub(crate) fn kill(&self, task: u64) {
        kill_entry(&self.table, task);
    }

    pub(crate) fn forget(&self, task: u64) {
        self.table.lock().remove(&task);
    }

    pub(crate) fn shutdown(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn kill_entry(table: &ProcTable, task: u64) {
    let mut g = table.lock();
    if let Some(e) = g.get_mut(&task) {
        e.killed = true;
        for &pid in &e.pids {
            if let Ok(r) = reaper() {
                r.signal_group(pid, Signal::SIGKILL);
            }
        }
    }
}

fn spawner(
    rx: Arc<Mutex<mpsc::Receiver<SpawnJob>>>,
    table: Arc<ProcTable>,
    events: mpsc::Sender<AgentEvent>,
    pin: bool,
    sampler: Option<Arc<Sampler>>,
) {
    let all_cpus = sys::allowed_cpus();
    let mut pinned: Vec<usize> = Vec::new();
    loop {
        let job = {
            let g = lock(&rx);
            g.recv()
        };
        let Ok(job) = job else {
            return;
        };
        let (task, attempt, specs) = (job.task, job.attempt, job.specs.clone());
        let spawned = catch_unwind(AssertUnwindSafe(|| {
            spawn_job(
                job,
                &table,
                &events,
                pin,
                &all_cpus,
                &mut pinned,
                sampler.as_ref(),
            )
        }));
        if let Err(p) = spawned {
            // A bug, not a failure of the task's programs: fail the whole
            // attempt (its processes, if any started, are killed) and keep
            // this thread for the next task.
            let why = FailReason::Launch(format!(
                "the spawner thread failed: {}",
                crate::launch::threads::panic_message(&*p)
            ));
            kill_entry(&table, task.0);
            for spec in &specs {
                report(&events, task, attempt, spec, why.clone());
            }
        }
    }
}

fn report_failure(
    events: &mpsc::Sender<AgentEvent>,
    job: &SpawnJob,
    spec: &CommandSpec,
    reason: FailReason,
) {
    report(events, job.task, job.attempt, spec, reason);
}

fn report(
    events: &mpsc::Sender<AgentEvent>,
    task: TaskId,
    attempt: u32,
    spec: &CommandSpec,
    reason: FailReason,
) {
    let now = now_ns();
    let _ = events.send(AgentEvent::Rank(RankDone {
        task,
        attempt,
        rank: spec.ranks.first().copied().unwrap_or(0) as u32,
        ranks: spec.ranks.len().max(1) as u32,
        exec_start: 0,
        exec_end: now,
        comm_ns: 0,
        outcome: Err(reason),
        exit_code: None,
        stderr_tail: None,
        usage: None,
    }));
}

fn open_output(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn spawn_job(
    job: SpawnJob,
    table: &ProcTable,
    events: &mpsc::Sender<AgentEvent>,
    pin: bool,
    all_cpus: &[usize],
    pinned: &mut Vec<usize>,
    sampler: Option<&Arc<Sampler>>,
) {
    let made = match std::fs::create_dir(&job.sandbox) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(_) => std::fs::create_dir_all(&job.sandbox),
    };
    let stdout_path = job.sandbox.join("stdout");
    let stderr_path = job.sandbox.join("stderr");
    let files = made.and_then(|()| Ok((open_output(&stdout_path)?, open_output(&stderr_path)?)));
    let (out, err) = match files {
        Ok(f) => f,
        Err(e) => {
            let reason = FailReason::Launch(format!(
                "preparing the sandbox {}: {e}",
                job.sandbox.display()
            ));
            for spec in &job.specs {
                report_failure(events, &job, spec, reason.clone());
            }
            return;
        }
    };
    for spec in &job.specs {
        if table.lock().get(&job.task.0).is_some_and(|e| e.killed) {
            report_failure(events, &job, spec, FailReason::Canceled);
            continue;
        }
        let mut cmd = match build_command(&job, spec, &out, &err) {
            Ok(c) => c,
            Err(e) => {
                report_failure(
                    events,
                    &job,
                    spec,
                    FailReason::Launch(format!("preparing the command: {e}")),
                );
                continue;
            }
        };
        if pin {
            let want: &[usize] = if spec.cpus.is_empty() {
                all_cpus
            } else {
                &spec.cpus
            };
            if *pinned != want && sys::pin_current_thread(want).is_ok() {
                *pinned = want.to_vec();
            }
        }
        let on_exit = exit_handler(&job, spec, events.clone(), stderr_path.clone(), sampler);
        let start_ns = now_ns();
        let spawned = reaper().and_then(|r| r.spawn(&mut cmd, on_exit));
        match spawned {
            Ok(pid) => {
                if let Some(s) = sampler {
                    let rank = spec.ranks.first().copied().unwrap_or(0);
                    let (node, gpus) = job.rank_nodes.get(rank).cloned().unwrap_or_default();
                    // Its own process group: the task's process and every
                    // child it starts.
                    s.watch(Watch {
                        task: job.task,
                        attempt: job.attempt,
                        rank: rank as u32,
                        node,
                        target: Target::Group(pid),
                        gpus,
                        baseline_cpu_ns: Some(0),
                        start_ns,
                    });
                }
                let mut g = table.lock();
                if let Some(e) = g.get_mut(&job.task.0) {
                    e.pids.push(pid);
                    if e.killed {
                        if let Ok(r) = reaper() {
                            r.signal_group(pid, Signal::SIGKILL);
                        }
                    }
                }
            }
            Err(e) => report_failure(
                events,
                &job,
                spec,
                FailReason::Launch(format!(
                    "spawning {:?}: {e}",
                    spec.argv.first().map(String::as_str).unwrap_or("")
                )),
            ),
        }
    }
}

fn build_command(
    job: &SpawnJob,
    spec: &CommandSpec,
    out: &File,
    err: &File,
) -> std::io::Result<Command> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the command has an empty argv",
        ));
    };
    let mut cmd = if job.pre_exec.is_empty() {
        let mut c = Command::new(program);
        c.args(args);
        c
    } else {
        // set -e: a failing pre-exec command fails the task.
        let script = format!("set -e\n{}\nexec \"$@\"", job.pre_exec.join("\n"));
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(script)
            .arg("deeprc-pre-exec")
            .args(&spec.argv);
        c
    };
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&job.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(err.try_clone()?))
        .process_group(0);
    Ok(cmd)
}

/// What the reaper does when the process of `spec` exits.
fn exit_handler(
    job: &SpawnJob,
    spec: &CommandSpec,
    events: mpsc::Sender<AgentEvent>,
    stderr_path: PathBuf,
    sampler: Option<&Arc<Sampler>>,
) -> crate::reaper::OnExit {
    let sampler = sampler.cloned();
    let task = job.task;
    let attempt = job.attempt;
    let rank = spec.ranks.first().copied().unwrap_or(0) as u32;
    let ranks = spec.ranks.len().max(1) as u32;
    let mpi = job
        .mpi_results
        .map(|(n, max_frame)| (n, max_frame, job.sandbox.clone()));
    let start = now_ns();
    Box::new(move |exit: std::io::Result<ChildExit>| {
        let end = now_ns();
        if let Some(s) = &sampler {
            s.unwatch(task, attempt, rank);
        }
        let usage = exit.as_ref().ok().map(ChildExit::rank_usage);
        let (outcome, code) = outcome_of(exit.map(|e| e.status));
        if let Some((n, max_frame, dir)) = mpi {
            for r in 0..n {
                let rd = crate::worker::read_mpi_result(&dir, r, max_frame)
                    .map(|done| {
                        let mut rd = crate::launch::pool::rank_done_of(done, max_frame);
                        rd.exec_start = rd.exec_start.max(start);
                        rd
                    })
                    .unwrap_or_else(|| RankDone {
                        task,
                        attempt,
                        rank: r as u32,
                        ranks: 1,
                        exec_start: start,
                        exec_end: end,
                        comm_ns: 0,
                        outcome: Err(outcome.clone().err().unwrap_or_else(|| {
                            FailReason::Launch(format!("rank {r} wrote no result"))
                        })),
                        exit_code: code,
                        stderr_tail: Some(sys::tail_file(&stderr_path, 20)),
                        usage: None,
                    });
                let _ = events.send(AgentEvent::Rank(rd));
            }
            return;
        }
        let stderr_tail = outcome.is_err().then(|| sys::tail_file(&stderr_path, 20));
        let _ = events.send(AgentEvent::Rank(RankDone {
            task,
            attempt,
            rank,
            ranks,
            exec_start: start,
            exec_end: end,
            comm_ns: 0,
            outcome,
            exit_code: code,
            stderr_tail,
            usage,
        }));
    })
}

fn outcome_of(status: std::io::Result<ExitStatus>) -> (Result<Vec<u8>, FailReason>, Option<i32>) {
    match status {
        Ok(s) if s.success() => (Ok(Vec::new()), Some(0)),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => (Err(FailReason::ExitCode(c)), Some(c)),
            (None, Some(sig)) => (Err(FailReason::Signal(sig)), None),
            _ => (
                Err(FailReason::Launch(format!("unexpected exit status {s}"))),
                None,
            ),
        },
        Err(e) => (
            Err(FailReason::Launch(format!("waiting for the process: {e}"))),
            None,
        ),
    }
}

/// How a process ended, in words.
pub(crate) fn describe_status(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(sig)) => format!("killed by signal {sig} ({})", crate::signal_name(sig)),
            _ => format!("{s}"),
        },
        Err(e) => format!("unknown ({e})"),
    }
}
