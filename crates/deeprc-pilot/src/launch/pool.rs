//! Function tasks in worker processes: one long-lived worker per core slot
//! (the host binary re-executed in worker mode, pinned to its CPU), started
//! on first use, connected to the agent over a Unix socket. Their stdout
//! and stderr go to `<pilot sandbox>/workers/worker.<core>.{out,err}`
//! (empty ones are removed when the pilot stops). The scheduler
//! writes `Run` frames; a reader thread per worker turns `Done` frames into
//! rank reports and, when the worker dies, reports how (the reaper gives
//! the exit status, the worker's stderr file the last words).

use crate::{
    agent::{AgentEvent, RankDone, RankSlots},
    launch::process::describe_status,
    reaper::reaper,
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
    sync::{mpsc, Arc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Environment variables of worker mode.
pub(crate) const ENV_MODE: &str = "DEEPRC_PILOT_WORKER";
pub(crate) const ENV_SOCKET: &str = "DEEPRC_PILOT_SOCKET";
pub(crate) const ENV_CORE: &str = "DEEPRC_PILOT_CORE";
pub(crate) const ENV_TOKEN: &str = "DEEPRC_PILOT_TOKEN";
pub(crate) const ENV_CPUS: &str = "DEEPRC_PILOT_CPUS";

struct Worker {
    pid: u32,
    generation: u64,
    stream: UnixStream,
    busy: Option<(u64, u32, u32)>,
    reader: Option<JoinHandle<()>>,
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
    profiler: Profiler,
    pilot: String,
    listener: Option<(UnixListener, PathBuf, String)>,
    workers: Vec<Option<Worker>>,
    generation: u64,
}

impl WorkerPool {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        exe: PathBuf,
        runtime: PathBuf,
        logs: PathBuf,
        cpu_of_core: Vec<usize>,
        pin: bool,
        events: mpsc::Sender<AgentEvent>,
        start_timeout: Duration,
        profiler: Profiler,
        pilot: String,
    ) -> Self {
        let n = cpu_of_core.len();
        Self {
            exe,
            runtime,
            logs,
            cpu_of_core,
            pin,
            events,
            start_timeout,
            profiler,
            pilot,
            listener: None,
            workers: (0..n).map(|_| None).collect(),
            generation: 0,
        }
    }

    /// Sends the ranks of a task to their cores' workers, starting workers
    /// that are not running.
    pub(crate) fn launch(
        &mut self,
        task: &Arc<TaskShared>,
        attempt: u32,
        ranks: &[RankSlots],
        sandbox: Option<&Path>,
        comm: &CommSpec,
    ) -> Result<(), FailReason> {
        let missing: Vec<usize> = ranks
            .iter()
            .map(|r| r.core)
            .filter(|&c| self.workers[c].is_none())
            .collect();
        if !missing.is_empty() {
            self.start(&missing).map_err(FailReason::Launch)?;
        }
        let TaskKind::Function(f) = &task.desc.kind else {
            return Err(FailReason::Launch("not a function task".into()));
        };
        let sandbox = sandbox.map(|p| p.display().to_string()).unwrap_or_default();
        for (rank, r) in ranks.iter().enumerate() {
            let Some(w) = self.workers[r.core].as_mut() else {
                return Err(FailReason::Launch(format!("no worker for core {}", r.core)));
            };
            let msg = RunMsg {
                task: task.id.0,
                attempt,
                rank: rank as u32,
                size: ranks.len() as u32,
                node: r.node as u32,
                func: &f.name,
                args: &f.args,
                cpus: if self.pin { r.cpus.clone() } else { Vec::new() },
                gpus: r.gpus.clone(),
                sandbox: &sandbox,
                comm: comm.clone(),
            };
            let mut e = Enc::new(wire::RUN);
            msg.encode(&mut e);
            w.busy = Some((task.id.0, attempt, rank as u32));
            // A failed write means the worker died: its exit report fails
            // this rank.
            let _ = wire::write_frame(&mut w.stream, &mut e);
        }
        Ok(())
    }

    /// The worker on `core` finished its rank.
    pub(crate) fn rank_done(&mut self, core: usize) {
        if let Some(w) = self.workers.get_mut(core).and_then(Option::as_mut) {
            w.busy = None;
        }
    }

    /// The worker on `core` of this generation exited: forget it and return
    /// the rank it was running.
    pub(crate) fn on_exit(&mut self, core: usize, generation: u64) -> Option<(u64, u32, u32)> {
        let slot = self.workers.get_mut(core)?;
        if slot.as_ref().is_some_and(|w| w.generation == generation) {
            let w = slot.take()?;
            self.profiler.push(
                ProfileRecord::now(self.pilot.clone(), "worker.exit")
                    .with_attr("core", core)
                    .with_attr("pid", w.pid),
            );
            return w.busy;
        }
        None
    }

    /// Kills the workers running ranks of `task`.
    pub(crate) fn kill_task(&mut self, task: u64) {
        for w in self.workers.iter().flatten() {
            if w.busy.is_some_and(|(t, _, _)| t == task) {
                if let Ok(r) = reaper() {
                    r.signal(w.pid, Signal::SIGKILL);
                }
            }
        }
    }

    fn listener(&mut self) -> Result<(), String> {
        if self.listener.is_some() {
            return Ok(());
        }
        let path = self.runtime.join("workers.sock");
        let _ = std::fs::remove_file(&path);
        let l =
            UnixListener::bind(&path).map_err(|e| format!("binding {}: {e}", path.display()))?;
        l.set_nonblocking(true)
            .map_err(|e| format!("configuring {}: {e}", path.display()))?;
        self.listener = Some((l, path, sys::random_token()));
        Ok(())
    }

    /// Starts workers for `cores` and waits until each has connected.
    fn start(&mut self, cores: &[usize]) -> Result<(), String> {
        self.listener()?;
        let Some((listener, path, token)) = &self.listener else {
            return Err("no listener".into());
        };
        let t0 = Instant::now();
        let reaper = reaper().map_err(|e| format!("starting the reaper: {e}"))?;
        // core -> (pid, exit channel, stderr file)
        let mut pending: Vec<(
            usize,
            u32,
            mpsc::Receiver<std::io::Result<ExitStatus>>,
            PathBuf,
        )> = Vec::new();
        let fail = |pending: &[(
            usize,
            u32,
            mpsc::Receiver<std::io::Result<ExitStatus>>,
            PathBuf,
        )],
                    why: String| {
            for (_, pid, _, _) in pending {
                reaper.signal(*pid, Signal::SIGKILL);
            }
            why
        };
        std::fs::create_dir_all(&self.logs)
            .map_err(|e| format!("creating {}: {e}", self.logs.display()))?;
        for &core in cores {
            let out = self.logs.join(format!("worker.{core}.out"));
            let err = self.logs.join(format!("worker.{core}.err"));
            let files = File::create(&out).and_then(|o| Ok((o, File::create(&err)?)));
            let (o, e) =
                files.map_err(|e| fail(&pending, format!("creating worker log files: {e}")))?;
            let mut cmd = Command::new(&self.exe);
            cmd.env(ENV_MODE, "pool")
                .env(ENV_SOCKET, path)
                .env(ENV_CORE, core.to_string())
                .env(ENV_TOKEN, token.as_str())
                .stdin(Stdio::null())
                .stdout(o)
                .stderr(e);
            if self.pin {
                cmd.env(ENV_CPUS, self.cpu_of_core[core].to_string());
            }
            let (tx, rx) = mpsc::channel();
            let pid = reaper
                .spawn(
                    &mut cmd,
                    Box::new(move |st| {
                        let _ = tx.send(st);
                    }),
                )
                .map_err(|e| {
                    fail(
                        &pending,
                        format!("spawning the worker executable {}: {e}", self.exe.display()),
                    )
                })?;
            pending.push((core, pid, rx, err));
        }
        let deadline = Instant::now() + self.start_timeout;
        let mut buf = Vec::new();
        while !pending.is_empty() {
            match listener.accept() {
                Ok((stream, _)) => {
                    let hello = stream
                        .set_nonblocking(false)
                        .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(5))))
                        .and_then(|()| read_hello(&stream, &mut buf));
                    let Ok((core, _pid, their_token)) = hello else {
                        continue;
                    };
                    if !crate::sys::constant_time_eq(their_token.as_bytes(), token.as_bytes()) {
                        continue;
                    }
                    let Some(i) = pending.iter().position(|p| p.0 == core) else {
                        continue;
                    };
                    let (core, pid, exit_rx, err) = pending.swap_remove(i);
                    let _ = stream.set_read_timeout(None);
                    let reader_stream = stream
                        .try_clone()
                        .map_err(|e| fail(&pending, format!("cloning a worker socket: {e}")))?;
                    self.generation += 1;
                    let generation = self.generation;
                    let events = self.events.clone();
                    let reader = std::thread::Builder::new()
                        .name(format!("deeprc-worker-{core}"))
                        .spawn(move || {
                            reader_thread(
                                reader_stream,
                                core,
                                generation,
                                pid,
                                exit_rx,
                                err,
                                events,
                            )
                        })
                        .map_err(|e| fail(&pending, format!("starting a reader thread: {e}")))?;
                    self.workers[core] = Some(Worker {
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
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    for (core, _, rx, err) in &pending {
                        if let Ok(st) = rx.try_recv() {
                            let why = format!(
                                "the worker for core {core} ({}) {} before connecting; does its main call \
                                 deeprc_pilot::worker::run_if_worker first? stderr: {}",
                                self.exe.display(),
                                describe_status(&st),
                                sys::tail_file(err, 10)
                            );
                            return Err(fail(&pending, why));
                        }
                    }
                    if Instant::now() >= deadline {
                        let why = format!(
                            "{} worker(s) of {} did not connect within {:?}; does its main call \
                             deeprc_pilot::worker::run_if_worker first?",
                            pending.len(),
                            self.exe.display(),
                            self.start_timeout
                        );
                        return Err(fail(&pending, why));
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
                Err(e) => return Err(fail(&pending, format!("accepting a worker: {e}"))),
            }
        }
        self.profiler.push(
            ProfileRecord::now(self.pilot.clone(), "workers.started")
                .with_attr("count", cores.len())
                .with_duration(t0.elapsed()),
        );
        Ok(())
    }

    /// Asks every worker to exit, kills those that do not within 2 s.
    pub(crate) fn shutdown(&mut self) {
        let mut e = Enc::new(wire::EXIT);
        for w in self.workers.iter_mut().flatten() {
            let _ = wire::write_frame(&mut w.stream, &mut e);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut workers: Vec<Worker> = self.workers.iter_mut().filter_map(Option::take).collect();
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
        if let Some((_, path, _)) = self.listener.take() {
            let _ = std::fs::remove_file(path);
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

fn read_hello(stream: &UnixStream, buf: &mut Vec<u8>) -> std::io::Result<(usize, u32, String)> {
    let mut r = stream;
    match wire::read_frame(&mut r, buf)? {
        Some(wire::HELLO) => {
            let mut d = wire::Dec::new(buf);
            let core = d.u32()? as usize;
            let pid = d.u32()?;
            let token = d.str()?.to_string();
            Ok((core, pid, token))
        }
        _ => Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "expected a hello frame",
        )),
    }
}

/// A worker's `Done` frame as a rank report.
pub(crate) fn rank_done_of(d: DoneMsg) -> RankDone {
    let text = || String::from_utf8_lossy(&d.payload).into_owned();
    let outcome = match d.status {
        Status::Ok => Ok(d.payload.clone()),
        Status::Error => Err(FailReason::Error(text())),
        Status::Panic => Err(FailReason::Panic(text())),
        Status::Comm => Err(FailReason::Comm(text())),
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
    }
}

fn reader_thread(
    stream: UnixStream,
    core: usize,
    generation: u64,
    pid: u32,
    exit_rx: mpsc::Receiver<std::io::Result<ExitStatus>>,
    stderr: PathBuf,
    events: mpsc::Sender<AgentEvent>,
) {
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    let mut buf = Vec::new();
    while let Ok(Some(kind)) = wire::read_frame(&mut r, &mut buf) {
        if kind != wire::DONE {
            continue;
        }
        let Ok(done) = DoneMsg::decode(&mut wire::Dec::new(&buf)) else {
            break;
        };
        if events.send(AgentEvent::Rank(rank_done_of(done))).is_err() {
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
