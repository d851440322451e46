//! The agent of a pilot: one scheduler thread that owns the slots, the
//! queue, the dependencies and the running tasks, and three executors
//! (rank threads, worker processes, spawned processes) that report back to
//! it over one channel.
//!
//! ```text
//!  TaskManager ──Submit──> ┌──────────── scheduler thread ────────────┐
//!  Task::cancel ─Cancel──> │ queue (priority, id) · deps · SlotMap     │
//!  other agents ─DepFinal> │ running tasks · timers                    │
//!                          └───┬───────────────┬───────────────┬───────┘
//!                    rank jobs │     Run frames│   spawn jobs  │
//!                    ┌─────────v──┐ ┌──────────v─────┐ ┌───────v────────┐
//!                    │rank threads│ │worker processes│ │spawner threads │
//!                    │(one a core)│ │(one a core)    │ │+ reaper thread │
//!                    └─────────┬──┘ └──────────┬─────┘ └───────┬────────┘
//!                              └── Rank / WorkerExited ────────┘──> scheduler
//! ```

use crate::ready::ReadyQueue;
use crate::{
    launch::{
        check_commands,
        pool::{PoolConfig, Started, WorkerPool},
        process::{ProcessExecutor, SpawnJob},
        threads::ThreadExecutor,
        CommEnv, CommandSpec, LaunchRequest,
    },
    profile::{PlacementRecord, RetryHistory, TaskRecord},
    sampler::Sampler,
    scheduler::{Shape, SlotMap},
    session::{PilotShared, SessionShared},
    sys,
    task::{current_transitions, TaskShared},
    usage::{RankUsage, ResourceUsage, UsageAcc},
    wire::CommSpec,
    ExecutableSpec, FailReason, FunctionLaunch, GpuShare, PilotError, Placement, Result, Task,
    TaskKind, TaskState, Timestamps,
};
use deeprc_core::sync::lock;
use deeprc_core::{now_ns, TaskId};
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, Sender},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Everything the scheduler thread reacts to.
pub(crate) enum AgentEvent {
    /// New tasks.
    Submit(Vec<Arc<TaskShared>>),
    /// Cancel a task.
    Cancel(TaskId),
    /// A task this agent waits for became final.
    DepFinal { dep: TaskId, state: TaskState },
    /// One or more ranks of a task ended.
    Rank(RankDone),
    /// A batch of worker processes connected, or could not start.
    WorkersStarted {
        batch: u64,
        result: std::result::Result<Vec<Started>, String>,
        elapsed: Duration,
    },
    /// A worker process ended.
    WorkerExited {
        core: usize,
        generation: u64,
        status: String,
        stderr: String,
    },
    /// Stop: cancel everything, wait for the running tasks, exit.
    Shutdown,
}

/// The end of `ranks` ranks of one attempt of a task.
pub(crate) struct RankDone {
    pub(crate) task: TaskId,
    pub(crate) attempt: u32,
    /// The first rank covered.
    pub(crate) rank: u32,
    /// How many ranks this report covers (all of them for `mpirun`).
    pub(crate) ranks: u32,
    pub(crate) exec_start: u64,
    pub(crate) exec_end: u64,
    pub(crate) comm_ns: u64,
    pub(crate) outcome: std::result::Result<Vec<u8>, FailReason>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) stderr_tail: Option<String>,
    /// What the rank used (none when it never ran or its process could not
    /// be measured).
    pub(crate) usage: Option<RankUsage>,
}

/// Where one rank runs, resolved to global core and CPU numbers.
#[derive(Debug, Clone)]
pub(crate) struct RankSlots {
    /// The rank's first core, numbered across the pilot's nodes.
    pub(crate) core: usize,
    pub(crate) node: usize,
    pub(crate) cpus: Vec<usize>,
    pub(crate) gpus: Vec<GpuShare>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Threads,
    Pool,
    Procs,
}

struct Running {
    task: Arc<TaskShared>,
    attempt: u32,
    placement: Arc<Placement>,
    placement_ns: u64,
    ranks: Vec<RankSlots>,
    route: Route,
    remaining: u32,
    outputs: Vec<Vec<u8>>,
    failure: Option<FailReason>,
    stderr_tail: Option<String>,
    exit_code: Option<i32>,
    kill_reason: Option<FailReason>,
    exec_start: u64,
    exec_end: u64,
    comm_ns: u64,
    cancel: Option<Arc<AtomicBool>>,
    store_dir: Option<PathBuf>,
    usage: UsageAcc,
}

struct Blocked {
    task: Arc<TaskShared>,
    remaining: usize,
}

struct Lingering {
    placement: Arc<Placement>,
    remaining: u32,
}

/// How an attempt ended, for [`Agent::finalize`].
struct Final {
    state: TaskState,
    reason: Option<FailReason>,
    outputs: Vec<Vec<u8>>,
    stderr_tail: Option<String>,
    exit_code: Option<i32>,
    exec: (u64, u64),
    comm_ns: u64,
    placement_ns: u64,
    usage: Option<Arc<ResourceUsage>>,
}

impl Final {
    fn early(state: TaskState, reason: Option<FailReason>) -> Self {
        Final {
            state,
            reason,
            outputs: Vec::new(),
            stderr_tail: None,
            exit_code: None,
            exec: (0, 0),
            comm_ns: 0,
            placement_ns: 0,
            usage: None,
        }
    }
}

/// Starts the scheduler thread of `pilot`.
pub(crate) fn start(
    pilot: Arc<PilotShared>,
    session: Arc<SessionShared>,
    rx: Receiver<AgentEvent>,
) -> Result<JoinHandle<()>> {
    let name = format!("deeprc-agent-{}", pilot.index);
    let mut agent = Agent::new(pilot, session, rx);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| agent.run())) {
                // A bug in the agent must not leave anyone waiting forever.
                agent.fail_everything(&crate::launch::threads::panic_message(&*p));
            }
            agent.threads.shutdown();
            agent.pool.shutdown();
            agent.procs.shutdown();
            if let Some(s) = &agent.sampler {
                s.stop();
            }
        })
        .map_err(|e| PilotError::io("starting the agent thread", e))
}

/// Makes a task final: its state, reason and outputs, its profile record,
/// its waiters and callbacks, its dependents (handed to `route` as
/// `(pilot, agent, task, state)`) and its task manager's count.
fn record_final(
    session: &SessionShared,
    pilot: u32,
    task: &Arc<TaskShared>,
    f: Final,
    mut route: impl FnMut(u32, &Sender<AgentEvent>, TaskId, TaskState),
) {
    let now = now_ns();
    let notify = {
        let mut g = task.lock();
        g.state = Some(f.state);
        g.ts.finished = now;
        if f.exec.0 != 0 {
            g.ts.exec_start = f.exec.0;
        }
        if f.exec.1 != 0 {
            g.ts.exec_end = f.exec.1;
        }
        g.comm_ns = f.comm_ns;
        g.outputs = f.outputs;
        // The reason of this, the last, attempt: none for DONE (earlier
        // attempts' reasons are kept in `failures`).
        g.reason = f.reason;
        g.stderr_tail = f.stderr_tail;
        g.exit_code = f.exit_code;
        g.usage.clone_from(&f.usage);
        if session.keep_records {
            let d = &task.desc;
            let record = TaskRecord {
                id: task.id,
                name: Arc::clone(&task.label),
                kind: Arc::clone(&task.kind),
                pilot,
                state: f.state,
                attempts: g.attempt + u32::from(g.ts.executing != 0),
                ranks: d.ranks as u32,
                cores: (d.ranks * d.cores_per_rank) as u32,
                gpus: (d.gpus_per_rank * d.ranks as f64) as f32,
                ts: g.ts,
                placement_ns: f.placement_ns,
                comm_ns: f.comm_ns,
                placement: PlacementRecord::from_placement(g.placement.as_ref()),
                usage: f.usage,
                history: (!g.history.is_empty()).then(|| {
                    Box::new(RetryHistory {
                        transitions: g.history.clone().into_boxed_slice(),
                        failures: g.failures.clone().into_boxed_slice(),
                    })
                }),
            };
            lock(&session.records).push(record);
        }
        g.waiters > 0
    };
    if notify {
        task.changed.notify_all();
    }
    Agent::callbacks(task, f.state);
    for (p, tx) in session.deps.publish(task.id, f.state) {
        route(p, &tx, task.id, f.state);
    }
    task.tmgr.task_finished(1);
}

/// Ends a task that its pilot never received (the pilot stopped while the
/// task was being submitted): CANCELED, like the tasks a stopping pilot
/// still holds.
pub(crate) fn cancel_unsent(session: &SessionShared, pilot: &PilotShared, task: &Arc<TaskShared>) {
    record_final(
        session,
        pilot.index,
        task,
        Final::early(TaskState::Canceled, Some(FailReason::Canceled)),
        |_, tx, dep, state| {
            let _ = tx.send(AgentEvent::DepFinal { dep, state });
        },
    );
}

struct Agent {
    pilot: Arc<PilotShared>,
    session: Arc<SessionShared>,
    rx: Receiver<AgentEvent>,
    tx: Sender<AgentEvent>,
    slots: SlotMap,
    core_base: Vec<usize>,
    ready: ReadyQueue,
    blocked: HashMap<u64, Blocked>,
    waiting_on: HashMap<u64, Vec<u64>>,
    dep_queue: VecDeque<(TaskId, TaskState)>,
    running: HashMap<u64, Running>,
    lingering: HashMap<(u64, u32), Lingering>,
    timers: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    threads: ThreadExecutor,
    pool: WorkerPool,
    procs: ProcessExecutor,
    dirty: bool,
    shutdown_deadline: Option<Instant>,
    sampler: Option<Arc<Sampler>>,
}

impl Agent {
    fn new(pilot: Arc<PilotShared>, session: Arc<SessionShared>, rx: Receiver<AgentEvent>) -> Self {
        let tx = pilot.tx.clone();
        let mut core_base = Vec::with_capacity(pilot.nodes.len());
        let mut cpu_of_core = Vec::new();
        for n in &pilot.nodes {
            core_base.push(cpu_of_core.len());
            cpu_of_core.extend(n.cpu_ids.iter().copied());
        }
        let pin = pilot.desc.pin_cpus;
        let sampler = pilot.desc.resource_sampling.and_then(|interval| {
            let started = Sampler::start(
                interval,
                pilot.sandbox.join("resources.jsonl"),
                pilot.index,
                pilot.id.clone(),
                pilot.session_events.clone(),
            );
            match started {
                Ok(s) => Some(s),
                Err(e) => {
                    pilot.session_events.push(
                        deeprc_core::ProfileRecord::now(pilot.id.clone(), "sampler.failed")
                            .with_attr("error", e),
                    );
                    None
                }
            }
        });
        let threads = ThreadExecutor::new(cpu_of_core.clone(), pin, tx.clone(), sampler.clone());
        let pool = WorkerPool::new(
            PoolConfig {
                exe: pilot.worker_exe.clone(),
                runtime: pilot.runtime.clone(),
                logs: pilot.sandbox.join("workers"),
                cpu_of_core,
                pin,
                start_timeout: pilot.desc.worker_start_timeout,
                max_frame: pilot.desc.max_message_bytes,
                profiler: pilot.session_events.clone(),
                pilot: pilot.id.clone(),
                sampler: sampler.clone(),
            },
            tx.clone(),
        );
        let spawners = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let procs = ProcessExecutor::new(tx.clone(), pin, spawners, sampler.clone());
        Agent {
            slots: SlotMap::new(&pilot.nodes),
            pilot,
            session,
            rx,
            tx,
            core_base,
            ready: ReadyQueue::default(),
            blocked: HashMap::new(),
            waiting_on: HashMap::new(),
            dep_queue: VecDeque::new(),
            running: HashMap::new(),
            lingering: HashMap::new(),
            timers: BinaryHeap::new(),
            threads,
            pool,
            procs,
            dirty: false,
            shutdown_deadline: None,
            sampler,
        }
    }

    fn run(&mut self) {
        loop {
            let wake = match (self.timers.peek(), self.shutdown_deadline) {
                (Some(Reverse((t, _, _))), Some(d)) => Some((*t).min(d)),
                (Some(Reverse((t, _, _))), None) => Some(*t),
                (None, d) => d,
            };
            let first = match wake {
                Some(t) => match self
                    .rx
                    .recv_timeout(t.saturating_duration_since(Instant::now()))
                {
                    Ok(ev) => Some(ev),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(AgentEvent::Shutdown),
                },
                None => Some(self.rx.recv().unwrap_or(AgentEvent::Shutdown)),
            };
            if let Some(ev) = first {
                self.handle(ev);
            }
            for _ in 0..4096 {
                match self.rx.try_recv() {
                    Ok(ev) => self.handle(ev),
                    Err(_) => break,
                }
            }
            self.expire_timers();
            loop {
                while let Some((dep, state)) = self.dep_queue.pop_front() {
                    self.on_dep_final(dep, state);
                }
                if self.dirty {
                    self.schedule();
                }
                if self.dep_queue.is_empty() && !self.dirty {
                    break;
                }
            }
            if let Some(d) = self.shutdown_deadline {
                if self.running.is_empty() {
                    break;
                }
                if Instant::now() >= d {
                    self.force_finish();
                    break;
                }
            }
        }
    }

    /// After a panic of the agent: the pilot is FAILED and every task it
    /// holds, or that still arrives, ends FAILED.
    fn fail_everything(&mut self, why: &str) {
        *lock(&self.pilot.state) = crate::PilotState::Failed;
        self.pilot.session_events.push(
            deeprc_core::ProfileRecord::now(self.pilot.id.clone(), "pilot.failed")
                .with_attr("panic", why),
        );
        let reason = FailReason::Launch(format!("the agent of {} failed: {why}", self.pilot.id));
        let mut tasks: Vec<Arc<TaskShared>> = Vec::new();
        tasks.extend(self.blocked.drain().map(|(_, b)| b.task));
        tasks.extend(self.ready.take_all());
        tasks.extend(self.running.drain().map(|(_, r)| r.task));
        while let Ok(ev) = self.rx.try_recv() {
            if let AgentEvent::Submit(ts) = ev {
                tasks.extend(ts);
            }
        }
        for t in tasks {
            if !t.lock().state.is_some_and(TaskState::is_final) {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    self.finalize(&t, Final::early(TaskState::Failed, Some(reason.clone())))
                }));
            }
        }
    }

    fn handle(&mut self, ev: AgentEvent) {
        match ev {
            AgentEvent::Submit(tasks) => self.on_submit(tasks),
            AgentEvent::Cancel(id) => self.on_cancel(id),
            AgentEvent::DepFinal { dep, state } => self.dep_queue.push_back((dep, state)),
            AgentEvent::Rank(rd) => self.on_rank(rd),
            AgentEvent::WorkersStarted {
                batch,
                result,
                elapsed,
            } => {
                self.pool.on_started(batch, result, elapsed);
                self.drain_pool();
            }
            AgentEvent::WorkerExited {
                core,
                generation,
                status,
                stderr,
            } => {
                let busy = self.pool.on_exit(core, generation);
                self.drain_pool();
                if let Some((task, attempt, rank)) = busy {
                    self.on_rank(RankDone {
                        task: TaskId(task),
                        attempt,
                        rank,
                        ranks: 1,
                        exec_start: 0,
                        exec_end: now_ns(),
                        comm_ns: 0,
                        outcome: Err(FailReason::WorkerCrashed {
                            worker: core,
                            status,
                        }),
                        exit_code: None,
                        stderr_tail: Some(stderr).filter(|s| !s.is_empty()),
                        usage: None,
                    });
                }
            }
            AgentEvent::Shutdown => self.on_shutdown(),
        }
    }

    // ----- state changes -------------------------------------------------

    fn callbacks(task: &Arc<TaskShared>, state: TaskState) {
        let cbs = task.tmgr.callbacks();
        if cbs.is_empty() {
            return;
        }
        let handle = Task {
            shared: Arc::clone(task),
        };
        for cb in cbs {
            // A panicking callback must not take the agent down.
            let _ = catch_unwind(AssertUnwindSafe(|| cb(&handle, state)));
        }
    }

    fn transition(task: &Arc<TaskShared>, state: TaskState) {
        {
            let mut g = task.lock();
            g.state = Some(state);
            g.ts.set(state, now_ns());
        }
        Self::callbacks(task, state);
    }

    fn finalize(&mut self, task: &Arc<TaskShared>, f: Final) {
        let own = self.pilot.index;
        let mut local = Vec::new();
        record_final(&self.session, own, task, f, |pilot, tx, dep, state| {
            if pilot == own {
                local.push((dep, state));
            } else {
                let _ = tx.send(AgentEvent::DepFinal { dep, state });
            }
        });
        self.dep_queue.extend(local);
    }

    // ----- submission and dependencies -----------------------------------

    fn on_submit(&mut self, tasks: Vec<Arc<TaskShared>>) {
        for t in tasks {
            Self::transition(&t, TaskState::Scheduling);
            if self.shutdown_deadline.is_some() {
                self.finalize(
                    &t,
                    Final::early(TaskState::Canceled, Some(FailReason::Canceled)),
                );
                continue;
            }
            if t.deps.is_empty() {
                self.enqueue(t);
                continue;
            }
            let mut remaining = 0;
            let mut failed = None;
            for &d in &t.deps {
                if let Some(list) = self.waiting_on.get_mut(&d.0) {
                    list.push(t.id.0);
                    remaining += 1;
                    continue;
                }
                match self.session.deps.watch(d, self.pilot.index, &self.tx) {
                    Some(TaskState::Done) => {}
                    Some(state) => {
                        failed = Some((d, state));
                        break;
                    }
                    None => {
                        self.waiting_on.insert(d.0, vec![t.id.0]);
                        remaining += 1;
                    }
                }
            }
            if let Some((dependency, state)) = failed {
                self.finalize(
                    &t,
                    Final::early(
                        TaskState::Failed,
                        Some(FailReason::DependencyFailed { dependency, state }),
                    ),
                );
            } else if remaining == 0 {
                self.enqueue(t);
            } else {
                self.blocked.insert(t.id.0, Blocked { task: t, remaining });
            }
        }
    }

    fn on_dep_final(&mut self, dep: TaskId, state: TaskState) {
        let Some(list) = self.waiting_on.remove(&dep.0) else {
            return;
        };
        for id in list {
            if state == TaskState::Done {
                let ready = match self.blocked.get_mut(&id) {
                    Some(b) => {
                        b.remaining -= 1;
                        b.remaining == 0
                    }
                    None => false,
                };
                if ready {
                    if let Some(b) = self.blocked.remove(&id) {
                        self.enqueue(b.task);
                    }
                }
            } else if let Some(b) = self.blocked.remove(&id) {
                self.finalize(
                    &b.task,
                    Final::early(
                        TaskState::Failed,
                        Some(FailReason::DependencyFailed {
                            dependency: dep,
                            state,
                        }),
                    ),
                );
            }
        }
    }

    fn enqueue(&mut self, t: Arc<TaskShared>) {
        self.ready.insert(t);
        self.dirty = true;
    }

    // ----- scheduling and launching --------------------------------------

    fn schedule(&mut self) {
        self.dirty = false;
        if self.ready.is_empty() || self.slots.free_cores() == 0 {
            return;
        }
        let mut placed: Vec<((Reverse<i32>, u64), Placement, u64)> = Vec::new();
        let mut failed: Vec<Shape> = Vec::new();
        let mut blocked_priority: Option<i32> = None;
        for (key, task) in self.ready.iter() {
            if self.slots.free_cores() == 0 {
                break;
            }
            let prio = key.0 .0;
            if blocked_priority.is_some_and(|b| prio < b) {
                break;
            }
            if failed.contains(&task.shape) {
                continue;
            }
            let t0 = Instant::now();
            match self.slots.try_place(&task.shape) {
                Some(p) => placed.push((*key, p, t0.elapsed().as_nanos() as u64)),
                None => {
                    failed.push(task.shape);
                    blocked_priority = Some(prio);
                    // Nothing later can be placed: lower priorities wait,
                    // and every shape of this one has failed.
                    if self.ready.all_shapes_failed(prio, &failed) {
                        break;
                    }
                }
            }
        }
        for (key, p, ns) in placed {
            if let Some(t) = self.ready.remove(&key) {
                self.launch(t, p, ns);
            }
        }
    }

    fn rank_slots(&self, p: &Placement) -> Vec<RankSlots> {
        p.ranks
            .iter()
            .map(|r| {
                let node = &self.pilot.nodes[r.node];
                RankSlots {
                    core: self.core_base[r.node] + r.cores[0],
                    node: r.node,
                    cpus: r.cores.iter().map(|&c| node.cpu_ids[c]).collect(),
                    gpus: r.gpus.clone(),
                }
            })
            .collect()
    }

    fn launch(&mut self, t: Arc<TaskShared>, placement: Placement, placement_ns: u64) {
        let placement = Arc::new(placement);
        let id = t.id;
        let sandbox = match &t.desc.kind {
            TaskKind::Executable(_) => Some(self.pilot.sandbox.join(id.to_string())),
            TaskKind::Function(f) if f.sandbox => Some(self.pilot.sandbox.join(id.to_string())),
            TaskKind::Function(_) => None,
        };
        let attempt = {
            let mut g = t.lock();
            g.state = Some(TaskState::Executing);
            g.ts.executing = now_ns();
            g.placement = Some(Arc::clone(&placement));
            if sandbox.is_some() {
                g.sandbox.clone_from(&sandbox);
            }
            g.attempt
        };
        Self::callbacks(&t, TaskState::Executing);
        let ranks = self.rank_slots(&placement);
        let size = ranks.len();
        let mut run = Running {
            task: Arc::clone(&t),
            attempt,
            placement: Arc::clone(&placement),
            placement_ns,
            ranks,
            route: Route::Procs,
            remaining: size as u32,
            outputs: Vec::new(),
            failure: None,
            stderr_tail: None,
            exit_code: None,
            kill_reason: None,
            exec_start: 0,
            exec_end: 0,
            comm_ns: 0,
            cancel: None,
            store_dir: None,
            usage: UsageAcc::default(),
        };
        let launched = match &t.desc.kind {
            TaskKind::Function(f) => {
                run.outputs = vec![Vec::new(); size];
                self.launch_function(&t, f.launch, &mut run, sandbox.as_deref())
            }
            TaskKind::Executable(e) => self.launch_executable(&t, e, &mut run, sandbox),
        };
        let failed = match launched {
            // Running now: its timeout starts now. Ranks waiting for their
            // workers start it when they are sent (`drain_pool`).
            Ok(true) => {
                self.start_timer(&t, attempt);
                None
            }
            Ok(false) => None,
            Err(reason) => Some(reason),
        };
        let immediate = failed.is_some();
        if let Some(reason) = failed {
            run.failure = Some(reason);
            run.remaining = 0;
        }
        self.running.insert(id.0, run);
        if immediate {
            self.complete(id.0, true);
        }
    }

    /// Arms the timeout of an attempt that started running (none for a
    /// timeout too long to represent).
    fn start_timer(&mut self, t: &TaskShared, attempt: u32) {
        if let Some(deadline) = t.desc.timeout.and_then(|to| Instant::now().checked_add(to)) {
            self.timers.push(Reverse((deadline, t.id.0, attempt)));
        }
    }

    /// Acts on what the worker pool did on its own: attempts sent to their
    /// workers start their timeouts; attempts whose workers did not start
    /// fail.
    fn drain_pool(&mut self) {
        let out = self.pool.take_outcome();
        for (task, attempt) in out.dispatched {
            let t = match self.running.get(&task) {
                Some(r) if r.attempt == attempt => Arc::clone(&r.task),
                _ => continue,
            };
            self.start_timer(&t, attempt);
        }
        for (task, attempt, ranks, why) in out.failed {
            self.on_rank(RankDone {
                task: TaskId(task),
                attempt,
                rank: 0,
                ranks,
                exec_start: 0,
                exec_end: now_ns(),
                comm_ns: 0,
                outcome: Err(why),
                exit_code: None,
                stderr_tail: None,
                usage: None,
            });
        }
    }

    /// Hands a function task's ranks to threads, workers or `mpirun`.
    /// Returns whether they run now (`false`: they wait for their workers
    /// to start).
    fn launch_function(
        &mut self,
        t: &Arc<TaskShared>,
        launch: FunctionLaunch,
        run: &mut Running,
        sandbox: Option<&Path>,
    ) -> std::result::Result<bool, FailReason> {
        if let Some(dir) = sandbox {
            std::fs::create_dir_all(dir).map_err(|e| {
                FailReason::Launch(format!("creating the sandbox {}: {e}", dir.display()))
            })?;
        }
        let attempt = run.attempt;
        if self.pilot.remote_nodes && launch != FunctionLaunch::Mpirun {
            // Its nodes are not this machine: every rank is a worker
            // process that srun starts on its node.
            run.route = Route::Procs;
            let placement = Arc::clone(&run.placement);
            return self
                .launch_remote_function(t, attempt, &placement, sandbox.map(Path::to_path_buf))
                .map(|()| true);
        }
        match launch {
            FunctionLaunch::Threads => {
                run.route = Route::Threads;
                let (cancel, comm_ns) = self.threads.launch(
                    t,
                    attempt,
                    &run.ranks,
                    sandbox,
                    &self.pilot.desc.comm_config,
                )?;
                run.cancel = Some(cancel);
                run.comm_ns = comm_ns;
                Ok(true)
            }
            FunctionLaunch::Processes => {
                run.route = Route::Pool;
                let comm = if run.ranks.len() > 1 {
                    let (dir, env) = self.comm_store(t.id, attempt);
                    run.store_dir = Some(dir);
                    let c = &self.pilot.desc.comm_config;
                    CommSpec::Tcp {
                        store: env.store,
                        token: env.token,
                        timeout_ms: c.timeout.as_millis() as u64,
                        connect_timeout_ms: c.connect_timeout.as_millis() as u64,
                        max_frame_bytes: c.max_frame_bytes,
                    }
                } else {
                    CommSpec::None
                };
                self.pool.launch(t, attempt, &run.ranks, sandbox, &comm)
            }
            FunctionLaunch::Mpirun => {
                run.route = Route::Procs;
                let placement = Arc::clone(&run.placement);
                self.launch_mpi_function(t, attempt, &placement, sandbox.map(Path::to_path_buf))
                    .map(|()| true)
            }
        }
    }

    /// Builds an executable's command lines with its launch method and hands
    /// them to the spawner threads.
    fn launch_executable(
        &mut self,
        t: &Arc<TaskShared>,
        e: &ExecutableSpec,
        run: &mut Running,
        sandbox: Option<PathBuf>,
    ) -> std::result::Result<bool, FailReason> {
        run.route = Route::Procs;
        let comm = if run.ranks.len() > 1 {
            let (dir, env) = self.comm_store(t.id, run.attempt);
            run.store_dir = Some(dir);
            Some(env)
        } else {
            None
        };
        let specs = self.commands(
            &e.launch_method,
            &LaunchRequest {
                task: t.id,
                argv: &e.argv,
                env: &e.env,
                placement: &run.placement,
                nodes: &self.pilot.nodes,
                comm: comm.as_ref(),
            },
        )?;
        let dir = sandbox.unwrap_or_else(|| self.pilot.sandbox.join(t.id.to_string()));
        self.procs.launch(SpawnJob {
            task: t.id,
            attempt: run.attempt,
            specs,
            cwd: e.cwd.clone().unwrap_or_else(|| dir.clone()),
            sandbox: dir,
            pre_exec: e.pre_exec.clone(),
            mpi_results: None,
            rank_nodes: crate::launch::process::rank_nodes(&run.placement),
        })?;
        Ok(true)
    }

    /// The command lines of the launch method `name` for `req`, checked: a
    /// launch method that fails, panics or returns commands that cannot run
    /// (an empty argv, ranks missing or repeated) fails the task, naming
    /// the method.
    fn commands(
        &self,
        name: &str,
        req: &LaunchRequest<'_>,
    ) -> std::result::Result<Vec<CommandSpec>, FailReason> {
        let failed = |reason: String| FailReason::LaunchMethod {
            method: name.to_string(),
            reason,
        };
        let method = self
            .pilot
            .methods
            .get(name)
            .ok_or_else(|| failed(format!("pilot {} does not know it", self.pilot.id)))?;
        let specs = catch_unwind(AssertUnwindSafe(|| method.commands(req)))
            .map_err(|p| {
                failed(format!(
                    "it panicked: {}",
                    crate::launch::threads::panic_message(&*p)
                ))
            })?
            .map_err(failed)?;
        check_commands(&specs, req.placement.ranks.len()).map_err(failed)?;
        Ok(specs)
    }

    /// A rendezvous directory and token for a multi-rank task.
    fn comm_store(&self, id: TaskId, attempt: u32) -> (PathBuf, CommEnv) {
        let dir = self.pilot.runtime.join(format!("c{}.{attempt}", id.0));
        (
            dir.clone(),
            CommEnv {
                store: dir.display().to_string(),
                token: sys::random_token(),
            },
        )
    }

    #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
    fn launch_mpi_function(
        &mut self,
        t: &Arc<TaskShared>,
        attempt: u32,
        placement: &Arc<Placement>,
        sandbox: Option<PathBuf>,
    ) -> std::result::Result<(), FailReason> {
        #[cfg(not(feature = "mpi"))]
        {
            Err(FailReason::Launch(
                "function tasks under mpirun need the cargo feature `mpi` of deeprc-pilot".into(),
            ))
        }
        #[cfg(feature = "mpi")]
        {
            self.launch_by_launcher(t, attempt, placement, sandbox, "mpirun", "mpi", Vec::new())
        }
    }

    /// A function task of a pilot whose nodes are not this machine (a
    /// Slurm job): one `srun` (the pilot's `fork` launch method, no MPI)
    /// starts one worker per rank on its node; the ranks meet in a tcp
    /// store that rank 0 serves on its node, with a fresh token.
    fn launch_remote_function(
        &mut self,
        t: &Arc<TaskShared>,
        attempt: u32,
        placement: &Arc<Placement>,
        sandbox: Option<PathBuf>,
    ) -> std::result::Result<(), FailReason> {
        let first = placement
            .ranks
            .first()
            .and_then(|r| self.pilot.nodes.get(r.node))
            .ok_or_else(|| FailReason::Launch("the task has no rank".into()))?;
        let addr = deeprc_comm::launcher::node_address(&first.name)
            .map_err(|e| FailReason::Launch(format!("the address of node {}: {e}", first.name)))?;
        // A port per task and attempt, so that concurrent tasks whose rank
        // 0 shares a node do not collide.
        let port = 20_000 + (t.id.0.wrapping_mul(7) + u64::from(attempt)) % 20_000;
        let c = &self.pilot.desc.comm_config;
        let env = vec![
            ("DEEPRC_BACKEND".to_string(), "tcp".to_string()),
            ("DEEPRC_STORE".to_string(), format!("{addr}:{port}")),
            ("DEEPRC_TOKEN".to_string(), sys::random_token()),
            (
                "DEEPRC_TIMEOUT_MS".to_string(),
                c.timeout.as_millis().to_string(),
            ),
            (
                "DEEPRC_CONNECT_TIMEOUT_MS".to_string(),
                c.connect_timeout.as_millis().to_string(),
            ),
            (
                "DEEPRC_MAX_FRAME_BYTES".to_string(),
                c.max_frame_bytes.to_string(),
            ),
        ];
        self.launch_by_launcher(t, attempt, placement, sandbox, "fork", "srun", env)
    }

    /// Starts a function task's ranks as worker processes in `mode`
    /// through the launch method `method` (one command for all ranks);
    /// each rank writes its result into the sandbox.
    #[allow(clippy::too_many_arguments)]
    fn launch_by_launcher(
        &mut self,
        t: &Arc<TaskShared>,
        attempt: u32,
        placement: &Arc<Placement>,
        sandbox: Option<PathBuf>,
        method: &str,
        mode: &str,
        mut env: Vec<(String, String)>,
    ) -> std::result::Result<(), FailReason> {
        let TaskKind::Function(f) = &t.desc.kind else {
            return Err(FailReason::Launch("not a function task".into()));
        };
        let dir = sandbox.unwrap_or_else(|| self.pilot.sandbox.join(t.id.to_string()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| FailReason::Launch(format!("creating {}: {e}", dir.display())))?;
        let spec_file = dir.join("launched-task.bin");
        crate::worker::write_mpi_task(
            &spec_file,
            t.id.0,
            attempt,
            placement.ranks.len(),
            &f.name,
            &f.args,
            &dir,
        )
        .map_err(|e| FailReason::Launch(format!("writing {}: {e}", spec_file.display())))?;
        let exe = self.pilot.worker_exe.display().to_string();
        let argv = vec![exe];
        env.extend([
            ("DEEPRC_PILOT_WORKER".to_string(), mode.to_string()),
            (
                "DEEPRC_PILOT_TASK_FILE".to_string(),
                spec_file.display().to_string(),
            ),
            (
                crate::launch::pool::ENV_MAX_FRAME.to_string(),
                self.pilot.desc.max_message_bytes.to_string(),
            ),
        ]);
        let specs = self.commands(
            method,
            &LaunchRequest {
                task: t.id,
                argv: &argv,
                env: &env,
                placement,
                nodes: &self.pilot.nodes,
                comm: None,
            },
        )?;
        self.procs.launch(SpawnJob {
            task: t.id,
            attempt,
            specs,
            cwd: dir.clone(),
            sandbox: dir,
            pre_exec: Vec::new(),
            mpi_results: Some((placement.ranks.len(), self.pilot.desc.max_message_bytes)),
            rank_nodes: crate::launch::process::rank_nodes(placement),
        })?;
        Ok(())
    }

    // ----- completion ------------------------------------------------------

    fn on_rank(&mut self, rd: RankDone) {
        let key = rd.task.0;
        let current = self
            .running
            .get(&key)
            .is_some_and(|r| r.attempt == rd.attempt);
        if !current {
            // A rank of an attempt that was already given up (threads past
            // their timeout or canceled): its cores are free now.
            if let Some(l) = self.lingering.get_mut(&(key, rd.attempt)) {
                l.remaining = l.remaining.saturating_sub(rd.ranks);
                if l.remaining == 0 {
                    if let Some(l) = self.lingering.remove(&(key, rd.attempt)) {
                        self.slots.release(&l.placement);
                        self.dirty = true;
                    }
                }
            }
            return;
        }
        let Some(run) = self.running.get_mut(&key) else {
            return;
        };
        if run.route == Route::Pool {
            if let Some(r) = run.ranks.get(rd.rank as usize) {
                self.pool.rank_done(r.core);
            }
        }
        run.remaining = run.remaining.saturating_sub(rd.ranks);
        if rd.exec_start != 0 && (run.exec_start == 0 || rd.exec_start < run.exec_start) {
            run.exec_start = rd.exec_start;
        }
        run.exec_end = run.exec_end.max(rd.exec_end);
        run.comm_ns = run.comm_ns.max(rd.comm_ns);
        if let Some(u) = &rd.usage {
            run.usage.add(u);
        }
        if rd.exit_code.is_some() && run.exit_code.is_none_or(|c| c == 0) {
            run.exit_code = rd.exit_code;
        }
        match rd.outcome {
            Ok(bytes) => {
                if let Some(slot) = run.outputs.get_mut(rd.rank as usize) {
                    *slot = bytes;
                }
            }
            Err(reason) => {
                let first = run.failure.is_none();
                // A panic or a crash explains more than the errors of the
                // peers that lost it.
                let secondary =
                    |r: &FailReason| matches!(r, FailReason::Error(_) | FailReason::Comm(_));
                let better = !secondary(&reason) && run.failure.as_ref().is_some_and(secondary);
                if first || better {
                    run.failure = Some(reason);
                    run.stderr_tail = rd.stderr_tail;
                }
                if first && run.remaining > 0 && run.route == Route::Procs {
                    self.procs.kill(key);
                }
            }
        }
        if run.remaining == 0 {
            self.complete(key, true);
        }
    }

    /// Ends the current attempt of a running task: frees its slots (unless
    /// `release` is false: threads that still run), then retries or
    /// finalizes it.
    fn complete(&mut self, key: u64, release: bool) {
        let Some(run) = self.running.remove(&key) else {
            return;
        };
        if release {
            self.slots.release(&run.placement);
            self.dirty = true;
        }
        if let Some(dir) = &run.store_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if run.route == Route::Procs {
            self.procs.forget(key);
        }
        let reason = run.kill_reason.clone().or(run.failure.clone());
        let task = Arc::clone(&run.task);
        let samples = self
            .sampler
            .as_ref()
            .and_then(|s| s.take(task.id, run.attempt));
        match reason {
            Some(r)
                if r.is_retryable()
                    && run.attempt < task.desc.retries
                    && self.shutdown_deadline.is_none() =>
            {
                self.retry(&task, r);
            }
            reason => {
                let state = match &reason {
                    None => TaskState::Done,
                    Some(FailReason::Canceled) => TaskState::Canceled,
                    Some(_) => TaskState::Failed,
                };
                self.finalize(
                    &task,
                    Final {
                        state,
                        reason,
                        outputs: run.outputs,
                        stderr_tail: run.stderr_tail,
                        exit_code: run.exit_code,
                        exec: (run.exec_start, run.exec_end),
                        comm_ns: run.comm_ns,
                        placement_ns: run.placement_ns,
                        usage: run.usage.finish(samples).map(Arc::new),
                    },
                );
            }
        }
    }

    fn retry(&mut self, task: &Arc<TaskShared>, reason: FailReason) {
        let now = now_ns();
        {
            let mut g = task.lock();
            let mut tr = current_transitions(&g);
            tr.push((TaskState::Failed, now));
            g.history.extend(tr);
            g.attempt += 1;
            g.ts = Timestamps {
                new: g.ts.new,
                scheduling: now,
                ..Timestamps::default()
            };
            g.state = Some(TaskState::Scheduling);
            g.placement = None;
            // The attempt's reason goes to the attempts' history: `reason()`
            // is about the attempt that ends the task.
            g.reason = None;
            g.failures.push(reason);
        }
        Self::callbacks(task, TaskState::Scheduling);
        self.enqueue(Arc::clone(task));
    }

    /// Stops a running attempt because of `reason` (timeout, cancel).
    fn stop(&mut self, key: u64, reason: FailReason) {
        let Some(run) = self.running.get_mut(&key) else {
            return;
        };
        if run.kill_reason.is_some() {
            return;
        }
        run.kill_reason = Some(reason);
        match run.route {
            Route::Procs => self.procs.kill(key),
            Route::Pool => {
                // Still waiting for its workers: nothing runs, it ends now.
                if self.pool.kill_task(key) {
                    run.remaining = 0;
                    self.complete(key, true);
                }
            }
            Route::Threads => {
                if let Some(c) = &run.cancel {
                    c.store(true, Ordering::Relaxed);
                }
                // Threads cannot be stopped: end the attempt now and keep
                // its cores busy until the function returns.
                if run.remaining > 0 {
                    self.lingering.insert(
                        (key, run.attempt),
                        Lingering {
                            placement: Arc::clone(&run.placement),
                            remaining: run.remaining,
                        },
                    );
                    self.complete(key, false);
                } else {
                    self.complete(key, true);
                }
            }
        }
    }

    fn expire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((deadline, key, attempt))) = self.timers.peek().copied() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            let timeout = match self.running.get(&key) {
                Some(r) if r.attempt == attempt => r.task.desc.timeout.unwrap_or_default(),
                _ => continue,
            };
            self.stop(key, FailReason::Timeout(timeout));
        }
    }

    fn on_cancel(&mut self, id: TaskId) {
        if let Some(b) = self.blocked.remove(&id.0) {
            self.finalize(
                &b.task,
                Final::early(TaskState::Canceled, Some(FailReason::Canceled)),
            );
            return;
        }
        if let Some(t) = self.ready.remove_id(id.0) {
            self.finalize(
                &t,
                Final::early(TaskState::Canceled, Some(FailReason::Canceled)),
            );
            return;
        }
        self.stop(id.0, FailReason::Canceled);
    }

    fn on_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(Instant::now() + Duration::from_secs(10));
        let blocked: Vec<Blocked> = self.blocked.drain().map(|(_, b)| b).collect();
        for b in blocked {
            self.finalize(
                &b.task,
                Final::early(TaskState::Canceled, Some(FailReason::Canceled)),
            );
        }
        for t in self.ready.take_all() {
            self.finalize(
                &t,
                Final::early(TaskState::Canceled, Some(FailReason::Canceled)),
            );
        }
        let keys: Vec<u64> = self.running.keys().copied().collect();
        for k in keys {
            self.stop(k, FailReason::Canceled);
        }
    }

    /// The shutdown deadline passed: whatever still runs ends CANCELED.
    fn force_finish(&mut self) {
        let keys: Vec<u64> = self.running.keys().copied().collect();
        for k in keys {
            if let Some(r) = self.running.get_mut(&k) {
                r.kill_reason.get_or_insert(FailReason::Canceled);
                r.remaining = 0;
            }
            self.complete(k, true);
        }
    }
}
