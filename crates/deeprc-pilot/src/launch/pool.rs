//! Function tasks in worker processes: one long-lived worker per core slot
//! (the host binary re-executed in worker mode, pinned to its CPU), started
//! on first use, connected to the agent over a Unix socket. Their stdout
//! and stderr go to `<pilot sandbox>/workers/worker.<core>.{out,err}`
//! (empty ones are removed when the pilot stops). The scheduler
//! writes `Run` frames; a reader thread per worker turns `Done` frames into
//! rank reports and, when the worker dies, reports how (the reaper gives
//! the exit status, the worker's stderr file the last words).
//!
//! Workers start off the scheduler thread: a starter thread per batch of
//! cores spawns them, waits for each to connect to the batch's own socket
//! and reports the batch to the scheduler ([`AgentEvent::WorkersStarted`]).
//! Meanwhile the scheduler goes on (cancellations, timeouts, other tasks);
//! a task placed on cores whose workers are starting waits in the pool and
//! is sent to them once they are all connected.

use crate::{
    agent::{AgentEvent, RankDone, RankSlots},
    launch::process::describe_status,
    reaper::reaper,
    sampler::{Sampler, Target, Watch},
    sys,
    task::TaskShared,
    wire::{self, CommSpec, DoneMsg, Enc, RunMsg, Status},
    FailReason, TaskKind,
};
use deeprc_core::{ProfileRecord, Profiler, TaskId};
use nix::sys::signal::Signal;
use std::{
    fs::File,
    io::{BufReader, ErrorKind},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Environment variables of worker mode.
pub(crate) const ENV_MODE: &str = "DEEPRC_PILOT_WORKER";
pub(crate) const ENV_SOCKET: &str = "DEEPRC_PILOT_SOCKET";
pub(crate) const ENV_CORE: &str = "DEEPRC_PILOT_CORE";
pub(crate) const ENV_TOKEN: &str = "DEEPRC_PILOT_TOKEN";
pub(crate) const ENV_CPUS: &str = "DEEPRC_PILOT_CPUS";
pub(crate) const ENV_MAX_FRAME: &str = "DEEPRC_PILOT_MAX_FRAME";

struct Worker {
    pid: u32,
    generation: u64,
    stream: UnixStream,
    busy: Option<(u64, u32, u32)>,
    reader: Option<JoinHandle<()>>,
}

/// A core's worker.
enum Slot {
    /// None runs.
    Empty,
    /// One is starting, in this batch.
    Starting(u64),
    /// One is connected.
    Ready(Worker),
}

/// A task's ranks waiting for their workers to connect.
struct PendingRun {
    task: Arc<TaskShared>,
    attempt: u32,
    ranks: Vec<RankSlots>,
    sandbox: String,
    comm: CommSpec,
}

/// A worker a starter thread connected.
pub(crate) struct Started {
    core: usize,
    pid: u32,
    stream: UnixStream,
    exit_rx: mpsc::Receiver<std::io::Result<ExitStatus>>,
    stderr: PathBuf,
}

/// What the pool did on its own that the agent must act on.
#[derive(Default)]
pub(crate) struct PoolOutcome {
    /// Attempts `(task, attempt)` whose ranks were sent to their workers.
    pub(crate) dispatched: Vec<(u64, u32)>,
    /// Attempts `(task, attempt, ranks, why)` that cannot run: their
    /// workers did not start.
    pub(crate) failed: Vec<(u64, u32, u32, FailReason)>,
}

/// The worker processes of a pilot.
pub(crate) struct WorkerPool {
    exe: PathBuf,
    runtime: PathBuf,
    logs: PathBuf,
    cpu_of_core: Vec<usize>,
    pin: bool,
    events: mpsc::Sender<AgentEvent>,
    start_timeout: Duration,
    max_frame: u64,
    profiler: Profiler,
    pilot: String,
    workers: Vec<Slot>,
    generation: u64,
    batches: u64,
    starters: Vec<(u64, Arc<AtomicBool>, JoinHandle<()>)>,
    pending: Vec<PendingRun>,
    outcome: PoolOutcome,
    sampler: Option<Arc<Sampler>>,
}

/// Where the pool's workers come from and what they may send.
pub(crate) struct PoolConfig {
    pub(crate) exe: PathBuf,
    pub(crate) runtime: PathBuf,
    pub(crate) logs: PathBuf,
    pub(crate) cpu_of_core: Vec<usize>,
    pub(crate) pin: bool,
    pub(crate) start_timeout: Duration,
    pub(crate) max_frame: u64,
    pub(crate) profiler: Profiler,
    pub(crate) pilot: String,
    pub(crate) sampler: Option<Arc<Sampler>>,
}

impl WorkerPool {
    pub(crate) fn new(c: PoolConfig, events: mpsc::Sender<AgentEvent>) -> Self {
        let n = c.cpu_of_core.len();
        Self {
            exe: c.exe,
            runtime: c.runtime,
            logs: c.logs,
            cpu_of_core: c.cpu_of_core,
            pin: c.pin,
            events,
            start_timeout: c.start_timeout,
            max_frame: c.max_frame,
            profiler: c.profiler,
            pilot: c.pilot,
            workers: (0..n).map(|_| Slot::Empty).collect(),
            generation: 0,
            batches: 0,
            starters: Vec::new(),
            pending: Vec::new(),
            outcome: PoolOutcome::default(),
            sampler: c.sampler,
        }
    }

    /// Sends the ranks of a task to their cores' workers, or keeps them
    /// until workers that are not running yet have started (without
    /// waiting for them). Returns whether the ranks were sent now.
    pub(crate) fn launch(
        &mut self,
        task: &Arc<TaskShared>,
        attempt: u32,
        ranks: &[RankSlots],
        sandbox: Option<&Path>,
        comm: &CommSpec,
    ) -> Result<bool, FailReason> {
        if !matches!(task.desc.kind, TaskKind::Function(_)) {
            return Err(FailReason::Launch("not a function task".into()));
        }
        let run = PendingRun {
            task: Arc::clone(task),
            attempt,
            ranks: ranks.to_vec(),
            sandbox: sandbox.map(|p| p.display().to_string()).unwrap_or_default(),
            comm: comm.clone(),
        };
        let missing: Vec<usize> = run
            .ranks
            .iter()
            .map(|r| r.core)
            .filter(|&c| matches!(self.workers[c], Slot::Empty))
            .collect();
        if missing.is_empty() && self.ready(&run) {
            self.dispatch(&run)?;
            return Ok(true);
        }
        if !missing.is_empty() {
            self.start(missing)?;
        }
        self.pending.push(run);
        Ok(false)
    }

    /// What the pool did since the last call (see [`PoolOutcome`]).
    pub(crate) fn take_outcome(&mut self) -> PoolOutcome {
        std::mem::take(&mut self.outcome)
    }

    fn ready(&self, run: &PendingRun) -> bool {
        run.ranks
            .iter()
            .all(|r| matches!(self.workers[r.core], Slot::Ready(_)))
    }

    /// Writes a run's `Run` frames to its workers (all connected).
    fn dispatch(&mut self, run: &PendingRun) -> Result<(), FailReason> {
        let TaskKind::Function(f) = &run.task.desc.kind else {
            return Err(FailReason::Launch("not a function task".into()));
        };
        let mut frames = Vec::with_capacity(run.ranks.len());
        for (rank, r) in run.ranks.iter().enumerate() {
            let msg = RunMsg {
                task: run.task.id.0,
                attempt: run.attempt,
                rank: rank as u32,
                size: run.ranks.len() as u32,
                node: r.node as u32,
                func: &f.name,
                args: &f.args,
                cpus: if self.pin { r.cpus.clone() } else { Vec::new() },
                gpus: r.gpus.clone(),
                sandbox: &run.sandbox,
                comm: run.comm.clone(),
            };
            let mut e = Enc::new(wire::RUN);
            msg.encode(&mut e);
            if e.len() > self.max_frame {
                return Err(FailReason::Launch(format!(
                    "the task's message to its worker is {} bytes, over the pilot's limit of \
                     {} bytes (max_message_bytes)",
                    e.len(),
                    self.max_frame
                )));
            }
            frames.push(e);
        }
        for ((rank, r), mut e) in run.ranks.iter().enumerate().zip(frames) {
            let Slot::Ready(w) = &mut self.workers[r.core] else {
                return Err(FailReason::Launch(format!("no worker for core {}", r.core)));
            };
            w.busy = Some((run.task.id.0, run.attempt, rank as u32));
            if let Some(s) = &self.sampler {
                s.watch(Watch {
                    task: run.task.id,
                    attempt: run.attempt,
                    rank: rank as u32,
                    node: r.node as u32,
                    target: Target::Process(w.pid),
                    gpus: r.gpus.iter().map(|g| g.device as u32).collect(),
                    baseline_cpu_ns: None,
                    start_ns: deeprc_core::now_ns(),
                });
            }
            // A failed write means the worker died: its exit report fails
            // this rank.
            let _ = wire::write_frame(&mut w.stream, &mut e);
        }
        Ok(())
    }

    /// Sends the waiting runs whose workers are all connected; starts
    /// workers for waiting runs whose cores have none (a worker that died
    /// idle).
    fn advance(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for run in pending {
            if self.ready(&run) {
                let key = (run.task.id.0, run.attempt);
                match self.dispatch(&run) {
                    Ok(()) => self.outcome.dispatched.push(key),
                    Err(why) => {
                        self.outcome
                            .failed
                            .push((key.0, key.1, run.ranks.len() as u32, why))
                    }
                }
            } else {
                self.pending.push(run);
            }
        }
        let mut missing: Vec<usize> = self
            .pending
            .iter()
            .flat_map(|r| r.ranks.iter().map(|s| s.core))
            .filter(|&c| matches!(self.workers[c], Slot::Empty))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            if let Err(why) = self.start(missing) {
                self.fail_waiting(&why);
            }
        }
    }

    /// Fails the waiting runs that need a core without a worker.
    fn fail_waiting(&mut self, why: &FailReason) {
        let pending = std::mem::take(&mut self.pending);
        for run in pending {
            let orphan = run
                .ranks
                .iter()
                .any(|r| matches!(self.workers[r.core], Slot::Empty));
            if orphan {
                self.outcome.failed.push((
                    run.task.id.0,
                    run.attempt,
                    run.ranks.len() as u32,
                    why.clone(),
                ));
            } else {
                self.pending.push(run);
            }
        }
    }

    /// A starter thread's report: installs its workers and sends the runs
    /// that waited for them, or fails those runs.
    pub(crate) fn on_started(
        &mut self,
        batch: u64,
        result: Result<Vec<Started>, String>,
        elapsed: Duration,
    ) {
        if let Some(i) = self.starters.iter().position(|s| s.0 == batch) {
            let (_, _, h) = self.starters.swap_remove(i);
            let _ = h.join();
        }
        match result {
            Ok(started) => {
                let count = started.len();
                for w in started {
                    self.install(batch, w);
                }
                self.profiler.push(
                    ProfileRecord::now(self.pilot.clone(), "workers.started")
                        .with_attr("count", count)
                        .with_duration(elapsed),
                );
            }
            Err(why) => {
                for slot in &mut self.workers {
                    if matches!(slot, Slot::Starting(b) if *b == batch) {
                        *slot = Slot::Empty;
                    }
                }
                self.fail_waiting(&FailReason::Launch(why));
            }
        }
        self.advance();
    }

    fn install(&mut self, batch: u64, w: Started) {
        let Started {
            core,
            pid,
            stream,
            exit_rx,
            stderr,
        } = w;
        let kill = || {
            if let Ok(r) = reaper() {
                r.signal(pid, Signal::SIGKILL);
            }
        };
        if !matches!(self.workers.get(core), Some(Slot::Starting(b)) if *b == batch) {
            // Not expected here (a stale batch): it must not linger.
            kill();
            return;
        }
        let reader_stream = match stream.try_clone() {
            Ok(s) => s,
            Err(_) => {
                kill();
                self.workers[core] = Slot::Empty;
                return;
            }
        };
        self.generation += 1;
        let generation = self.generation;
        let events = self.events.clone();
        let max_frame = self.max_frame;
        let reader = std::thread::Builder::new()
            .name(format!("deeprc-worker-{core}"))
            .spawn(move || {
                reader_thread(
                    reader_stream,
                    core,
                    generation,
                    pid,
                    exit_rx,
                    stderr,
                    events,
                    max_frame,
                )
            });
        let Ok(reader) = reader else {
            kill();
            self.workers[core] = Slot::Empty;
            return;
        };
        self.workers[core] = Slot::Ready(Worker {
            pid,
            generation,
            stream,
            busy: None,
            reader: Some(reader),
        });
        self.profiler.push(
            ProfileRecord::now(self.pilot.clone(), "worker.start")
                .with_attr("core", core)
                .with_attr("pid", pid),
        );
    }

    /// The worker on `core` finished its rank.
    pub(crate) fn rank_done(&mut self, core: usize) {
        if let Some(Slot::Ready(w)) = self.workers.get_mut(core) {
            if let (Some((t, a, r)), Some(s)) = (w.busy.take(), &self.sampler) {
                s.unwatch(TaskId(t), a, r);
            }
        }
    }

    /// The worker on `core` of this generation exited: forget it and return
    /// the rank it was running.
    pub(crate) fn on_exit(&mut self, core: usize, generation: u64) -> Option<(u64, u32, u32)> {
        let slot = self.workers.get_mut(core)?;
        if !matches!(slot, Slot::Ready(w) if w.generation == generation) {
            return None;
        }
        let Slot::Ready(w) = std::mem::replace(slot, Slot::Empty) else {
            return None;
        };
        self.profiler.push(
            ProfileRecord::now(self.pilot.clone(), "worker.exit")
                .with_attr("core", core)
                .with_attr("pid", w.pid),
        );
        if let (Some((t, a, r)), Some(s)) = (w.busy, &self.sampler) {
            s.unwatch(TaskId(t), a, r);
        }
        // A run waiting for this core needs a new worker.
        self.advance();
        w.busy
    }

    /// Stops `task`: kills the workers running its ranks; a task still
    /// waiting for its workers is dropped at once (its workers go on
    /// starting, for later tasks). Returns `true` in that case: nothing of
    /// the task runs, no rank will report.
    pub(crate) fn kill_task(&mut self, task: u64) -> bool {
        if let Some(i) = self.pending.iter().position(|r| r.task.id.0 == task) {
            self.pending.swap_remove(i);
            return true;
        }
        for slot in &self.workers {
            if let Slot::Ready(w) = slot {
                if w.busy.is_some_and(|(t, _, _)| t == task) {
                    if let Ok(r) = reaper() {
                        r.signal(w.pid, Signal::SIGKILL);
                    }
                }
            }
        }
        false
    }

    /// Starts workers for `cores` on a starter thread.
    fn start(&mut self, cores: Vec<usize>) -> Result<(), FailReason> {
        self.batches += 1;
        let batch = self.batches;
        let abort = Arc::new(AtomicBool::new(false));
        let job = StartJob {
            batch,
            cores: cores
                .iter()
                .map(|&c| (c, self.pin.then(|| self.cpu_of_core[c])))
                .collect(),
            exe: self.exe.clone(),
            socket: self.runtime.join(format!("w{batch}.sock")),
            logs: self.logs.clone(),
            timeout: self.start_timeout,
            max_frame: self.max_frame,
            abort: Arc::clone(&abort),
            events: self.events.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("deeprc-worker-start-{batch}"))
            .spawn(move || job.run())
            .map_err(|e| FailReason::Launch(format!("starting a worker starter thread: {e}")))?;
        for c in cores {
            self.workers[c] = Slot::Starting(batch);
        }
        self.starters.push((batch, abort, handle));
        Ok(())
    }

    /// Stops starting workers, asks every worker to exit and kills those
    /// that do not within 2 s.
    pub(crate) fn shutdown(&mut self) {
        self.pending.clear();
        for (_, abort, _) in &self.starters {
            abort.store(true, Ordering::Relaxed);
        }
        for (_, _, h) in self.starters.drain(..) {
            let _ = h.join();
        }
        let mut e = Enc::new(wire::EXIT);
        let mut workers: Vec<Worker> = Vec::new();
        for slot in &mut self.workers {
            if let Slot::Ready(mut w) = std::mem::replace(slot, Slot::Empty) {
                let _ = wire::write_frame(&mut w.stream, &mut e);
                workers.push(w);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline
            && workers
                .iter()
                .any(|w| w.reader.as_ref().is_some_and(|r| !r.is_finished()))
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        for w in &mut workers {
            if w.reader.as_ref().is_some_and(|r| !r.is_finished()) {
                if let Ok(r) = reaper() {
                    r.signal(w.pid, Signal::SIGKILL);
                }
            }
            if let Some(r) = w.reader.take() {
                let _ = r.join();
            }
        }
        // Keep the logs that say something.
        if let Ok(dir) = std::fs::read_dir(&self.logs) {
            for e in dir.flatten() {
                if e.metadata().is_ok_and(|m| m.len() == 0) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.logs);
    }
}

/// One batch of workers to start, on its own thread and socket.
struct StartJob {
    batch: u64,
    /// `(core, CPU to pin to)`.
    cores: Vec<(usize, Option<usize>)>,
    exe: PathBuf,
    socket: PathBuf,
    logs: PathBuf,
    timeout: Duration,
    max_frame: u64,
    abort: Arc<AtomicBool>,
    events: mpsc::Sender<AgentEvent>,
}

/// A spawned worker that has not connected yet.
struct Spawned {
    core: usize,
    pid: u32,
    exit_rx: mpsc::Receiver<std::io::Result<ExitStatus>>,
    stderr: PathBuf,
}

impl StartJob {
    fn run(self) {
        let t0 = Instant::now();
        let mut spawned: Vec<Spawned> = Vec::new();
        let mut started: Vec<Started> = Vec::new();
        let result = self.start(&mut spawned, &mut started);
        let _ = std::fs::remove_file(&self.socket);
        let aborted = self.abort.load(Ordering::Relaxed);
        let result = match result {
            Ok(()) if !aborted => Ok(started),
            other => {
                // Nothing of a failed or abandoned batch may linger.
                if let Ok(r) = reaper() {
                    for pid in spawned
                        .iter()
                        .map(|s| s.pid)
                        .chain(started.iter().map(|s| s.pid))
                    {
                        r.signal(pid, Signal::SIGKILL);
                    }
                }
                match other {
                    Err(why) => Err(why),
                    Ok(()) => Err("the pilot is stopping".to_string()),
                }
            }
        };
        if !aborted {
            let _ = self.events.send(AgentEvent::WorkersStarted {
                batch: self.batch,
                result,
                elapsed: t0.elapsed(),
            });
        }
    }

    /// Spawns the workers and waits until each has connected (or one died,
    /// or the time is up, or the pool stops).
    fn start(&self, spawned: &mut Vec<Spawned>, started: &mut Vec<Started>) -> Result<(), String> {
        let _ = std::fs::remove_file(&self.socket);
        let listener = UnixListener::bind(&self.socket)
            .map_err(|e| format!("binding {}: {e}", self.socket.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("configuring {}: {e}", self.socket.display()))?;
        let token = sys::random_token();
        let reaper = reaper().map_err(|e| format!("starting the reaper: {e}"))?;
        std::fs::create_dir_all(&self.logs)
            .map_err(|e| format!("creating {}: {e}", self.logs.display()))?;
        for &(core, cpu) in &self.cores {
            let out = self.logs.join(format!("worker.{core}.out"));
            let err = self.logs.join(format!("worker.{core}.err"));
            let (o, e) = File::create(&out)
                .and_then(|o| Ok((o, File::create(&err)?)))
                .map_err(|e| format!("creating worker log files: {e}"))?;
            let mut cmd = Command::new(&self.exe);
            cmd.env(ENV_MODE, "pool")
                .env(ENV_SOCKET, &self.socket)
                .env(ENV_CORE, core.to_string())
                .env(ENV_TOKEN, token.as_str())
                .env(ENV_MAX_FRAME, self.max_frame.to_string())
                .stdin(Stdio::null())
                .stdout(o)
                .stderr(e);
            if let Some(cpu) = cpu {
                cmd.env(ENV_CPUS, cpu.to_string());
            }
            let (tx, rx) = mpsc::channel();
            let pid = reaper
                .spawn(
                    &mut cmd,
                    Box::new(move |st: std::io::Result<crate::usage::ChildExit>| {
                        let _ = tx.send(st.map(|e| e.status));
                    }),
                )
                .map_err(|e| {
                    format!("spawning the worker executable {}: {e}", self.exe.display())
                })?;
            spawned.push(Spawned {
                core,
                pid,
                exit_rx: rx,
                stderr: err,
            });
        }
        // No deadline when the timeout is too long to represent.
        let deadline = Instant::now().checked_add(self.timeout);
        let mut buf = Vec::new();
        while !spawned.is_empty() {
            if self.abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    let hello = stream
                        .set_nonblocking(false)
                        .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(5))))
                        .and_then(|()| read_hello(&stream, &mut buf, self.max_frame));
                    let Ok((core, _pid, their_token, version)) = hello else {
                        continue;
                    };
                    if !sys::constant_time_eq(their_token.as_bytes(), token.as_bytes()) {
                        continue;
                    }
                    if version != wire::PROTOCOL_VERSION {
                        return Err(format!(
                            "the worker executable {} speaks version {version} of the worker \
                             protocol, this agent version {}: build it with the same \
                             deeprc-pilot as the host",
                            self.exe.display(),
                            wire::PROTOCOL_VERSION
                        ));
                    }
                    let Some(i) = spawned.iter().position(|p| p.core == core) else {
                        continue;
                    };
                    let s = spawned.swap_remove(i);
                    let _ = stream.set_read_timeout(None);
                    started.push(Started {
                        core: s.core,
                        pid: s.pid,
                        stream,
                        exit_rx: s.exit_rx,
                        stderr: s.stderr,
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    for s in spawned.iter() {
                        if let Ok(st) = s.exit_rx.try_recv() {
                            return Err(format!(
                                "the worker for core {} ({}) {} before connecting; does its main \
                                 call deeprc_pilot::worker::run_if_worker first? stderr: {}",
                                s.core,
                                self.exe.display(),
                                describe_status(&st),
                                sys::tail_file(&s.stderr, 10)
                            ));
                        }
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(format!(
                            "{} worker(s) of {} did not connect within {:?}; does its main call \
                             deeprc_pilot::worker::run_if_worker first?",
                            spawned.len(),
                            self.exe.display(),
                            self.timeout
                        ));
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
                Err(e) => return Err(format!("accepting a worker: {e}")),
            }
        }
        Ok(())
    }
}

fn read_hello(
    stream: &UnixStream,
    buf: &mut Vec<u8>,
    max_frame: u64,
) -> std::io::Result<(usize, u32, String, u32)> {
    let mut r = stream;
    match wire::read_frame(&mut r, buf, max_frame)? {
        Some(wire::HELLO) => {
            let mut d = wire::Dec::new(buf);
            let core = d.u32()? as usize;
            let pid = d.u32()?;
            let token = d.str()?.to_string();
            // Version 1 had no version field.
            let version = d.u32().unwrap_or(1);
            Ok((core, pid, token, version))
        }
        _ => Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "expected a hello frame",
        )),
    }
}

/// A worker's `Done` frame, under a message limit of `max_frame` bytes, as
/// a rank report.
pub(crate) fn rank_done_of(d: DoneMsg, max_frame: u64) -> RankDone {
    let text = || String::from_utf8_lossy(&d.payload).into_owned();
    let outcome = match d.status {
        Status::Ok => Ok(d.payload.clone()),
        Status::Error => Err(FailReason::Error(text())),
        Status::Panic => Err(FailReason::Panic(text())),
        Status::Comm => Err(FailReason::Comm(text())),
        Status::TooLarge => Err(FailReason::ResultTooLarge {
            size: wire::Dec::new(&d.payload).u64().unwrap_or(0),
            limit: max_frame,
        }),
    };
    RankDone {
        task: TaskId(d.task),
        attempt: d.attempt,
        rank: d.rank,
        ranks: 1,
        exec_start: d.exec_start,
        exec_end: d.exec_end,
        comm_ns: d.comm_ns,
        outcome,
        exit_code: None,
        stderr_tail: None,
        usage: d.usage,
    }
}

#[allow(clippy::too_many_arguments)]
fn reader_thread(
    stream: UnixStream,
    core: usize,
    generation: u64,
    pid: u32,
    exit_rx: mpsc::Receiver<std::io::Result<ExitStatus>>,
    stderr: PathBuf,
    events: mpsc::Sender<AgentEvent>,
    max_frame: u64,
) {
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    let mut buf = Vec::new();
    while let Ok(Some(kind)) = wire::read_frame(&mut r, &mut buf, max_frame) {
        if kind != wire::DONE {
            continue;
        }
        let Ok(done) = DoneMsg::decode(&mut wire::Dec::new(&buf)) else {
            break;
        };
        if events
            .send(AgentEvent::Rank(rank_done_of(done, max_frame)))
            .is_err()
        {
            break;
        }
    }
    let status = match exit_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(st) => describe_status(&st),
        Err(_) => {
            if let Ok(r) = reaper() {
                r.signal(pid, Signal::SIGKILL);
            }
            exit_rx
                .recv_timeout(Duration::from_secs(5))
                .map(|st| describe_status(&st))
                .unwrap_or_else(|_| "closed its connection".to_string())
        }
    };
    let _ = events.send(AgentEvent::WorkerExited {
        core,
        generation,
        status,
        stderr: sys::tail_file(&stderr, 10),
    });
}
