//! [`Session`], [`PilotManager`], [`Pilot`] and [`TaskManager`].

use crate::{
    agent::{self, AgentEvent},
    launch::{Fork, LaunchMethod, Mpirun},
    profile::{self, ProfileFiles, Summary, TaskRecord, TracePilot},
    scheduler::{Shape, SlotMap},
    sys,
    task::{TaskInner, TaskShared},
    FunctionLaunch, LocalResources, NodeSpec, PilotDescription, PilotError, PilotState, Registry,
    ResourceProvider, Result, Task, TaskDescription, TaskKind, TaskRef, TaskState,
};
use deeprc_core::{now_ns, ProfileRecord, Profiler, Resources, TaskId};
use std::{
    collections::{HashMap, HashSet},
    fmt,
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{SendError, Sender},
        Arc, Condvar, Mutex, OnceLock, PoisonError, RwLock,
    },
    thread::{JoinHandle, ThreadId},
    time::{Duration, Instant},
};

use deeprc_core::sync::lock;

/// A state-change callback: called from the agent's scheduler thread with
/// the task and the state it just entered (NEW from the submitting
/// thread). Keep it short.
pub type Callback = Arc<dyn Fn(&Task, TaskState) + Send + Sync>;

/// Final states by task id, and who waits for which task (dependencies
/// across pilots go through here).
#[derive(Default)]
pub(crate) struct DepTable {
    inner: Mutex<DepInner>,
}

#[derive(Default)]
struct DepInner {
    finals: Vec<u8>,
    watchers: HashMap<u64, Vec<(u32, Sender<AgentEvent>)>>,
}

impl DepTable {
    /// The final state of `dep`, or registers `(pilot, tx)` to be told.
    pub(crate) fn watch(
        &self,
        dep: TaskId,
        pilot: u32,
        tx: &Sender<AgentEvent>,
    ) -> Option<TaskState> {
        let mut g = lock(&self.inner);
        let code = g.finals.get(dep.0 as usize).copied().unwrap_or(0);
        if code != 0 {
            return TaskState::from_index(code);
        }
        g.watchers
            .entry(dep.0)
            .or_default()
            .push((pilot, tx.clone()));
        None
    }

    /// Records a final state; returns who was waiting for it.
    pub(crate) fn publish(&self, id: TaskId, state: TaskState) -> Vec<(u32, Sender<AgentEvent>)> {
        let mut g = lock(&self.inner);
        let i = id.0 as usize;
        if g.finals.len() <= i {
            let n = (i + 1).max(g.finals.len() * 2);
            g.finals.resize(n, 0);
        }
        g.finals[i] = state.index() as u8;
        if g.watchers.is_empty() {
            return Vec::new();
        }
        g.watchers.remove(&id.0).unwrap_or_default()
    }
}

/// The task names of a session and its next task id, claimed together
/// (see [`TaskManager::submit_many`]).
pub(crate) struct NameTable {
    /// The id of the next task; every id below it is a submitted task.
    pub(crate) next: u64,
    /// Named tasks.
    pub(crate) ids: HashMap<String, TaskId>,
}

/// What every part of a session shares.
pub(crate) struct SessionShared {
    pub(crate) id: String,
    pub(crate) registry: Arc<Registry>,
    pub(crate) sandbox: PathBuf,
    pub(crate) runtime: PathBuf,
    pub(crate) profile_dir: Option<PathBuf>,
    pub(crate) keep_records: bool,
    pub(crate) next_tmgr: AtomicU64,
    pub(crate) deps: DepTable,
    pub(crate) names: Mutex<NameTable>,
    pub(crate) records: Mutex<Vec<TaskRecord>>,
    pub(crate) events: Profiler,
    pub(crate) pilots: Mutex<Vec<Arc<PilotShared>>>,
    pub(crate) providers: Mutex<HashMap<String, Arc<dyn ResourceProvider>>>,
    pub(crate) interned: Mutex<HashSet<Arc<str>>>,
    pub(crate) closed: AtomicBool,
    pub(crate) created_ns: u64,
}

impl SessionShared {
    pub(crate) fn intern(&self, s: &str) -> Arc<str> {
        let mut g = lock(&self.interned);
        if let Some(a) = g.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(s);
        g.insert(Arc::clone(&a));
        a
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PilotError::Closed {
                what: format!("session {}", self.id),
            });
        }
        Ok(())
    }
}

/// Where a session keeps its files, and what it records.
#[derive(Debug, Clone, Default)]
pub struct SessionBuilder {
    registry: Option<Registry>,
    sandbox: Option<PathBuf>,
    profile_dir: Option<PathBuf>,
    keep_records: Option<bool>,
}

impl SessionBuilder {
    /// The functions function tasks may call.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The directory under which the session's sandbox `<root>/<session
    /// id>` is made (default: `$TMPDIR/deeprc-pilot`); task sandboxes are
    /// `<root>/<session id>/<pilot id>/<task id>`.
    pub fn sandbox(mut self, dir: impl Into<PathBuf>) -> Self {
        self.sandbox = Some(dir.into());
        self
    }

    /// Write the profile into `dir` when the session closes (default: the
    /// directory in `DEEPRC_PILOT_PROFILE_DIR` if set, else none).
    pub fn profile_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.profile_dir = Some(dir.into());
        self
    }

    /// Keep a profile record per task (default `true`; without them the
    /// summary and the profile are empty).
    pub fn keep_task_records(mut self, keep: bool) -> Self {
        self.keep_records = Some(keep);
        self
    }

    /// Creates the session.
    pub fn build(self) -> Result<Session> {
        let created_ns = now_ns();
        // Unique across processes and runs: time, pid and a counter.
        static SESSIONS: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "deeprc.session.{}.{}.{:04}",
            created_ns / 1_000_000_000,
            std::process::id(),
            SESSIONS.fetch_add(1, Ordering::Relaxed)
        );
        let sandbox = self
            .sandbox
            .unwrap_or_else(|| std::env::temp_dir().join("deeprc-pilot"))
            .join(&id);
        std::fs::create_dir_all(&sandbox).map_err(|e| {
            PilotError::io(
                format!("creating the session sandbox {}", sandbox.display()),
                e,
            )
        })?;
        // Sockets and rendezvous stores: short paths, in memory when possible.
        let shm = Path::new("/dev/shm");
        let runtime_root = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let runtime = runtime_root.join(format!(
            "deeprc-{}",
            sys::random_token().get(..12).unwrap_or("x")
        ));
        std::fs::create_dir_all(&runtime).map_err(|e| {
            PilotError::io(
                format!("creating the runtime directory {}", runtime.display()),
                e,
            )
        })?;
        let mut providers: HashMap<String, Arc<dyn ResourceProvider>> = HashMap::new();
        providers.insert("local".to_string(), Arc::new(LocalResources));
        providers.insert(
            "slurm".to_string(),
            Arc::new(crate::slurm::SlurmProvider::new()),
        );
        let shared = Arc::new(SessionShared {
            id,
            registry: Arc::new(self.registry.unwrap_or_default()),
            sandbox,
            runtime,
            profile_dir: self
                .profile_dir
                .or_else(|| std::env::var_os("DEEPRC_PILOT_PROFILE_DIR").map(PathBuf::from)),
            keep_records: self.keep_records.unwrap_or(true),
            next_tmgr: AtomicU64::new(0),
            deps: DepTable::default(),
            names: Mutex::new(NameTable {
                next: 1,
                ids: HashMap::new(),
            }),
            records: Mutex::new(Vec::new()),
            events: Profiler::new(),
            pilots: Mutex::new(Vec::new()),
            providers: Mutex::new(providers),
            interned: Mutex::new(HashSet::new()),
            closed: AtomicBool::new(false),
            created_ns,
        });
        shared
            .events
            .push(ProfileRecord::now(shared.id.clone(), "session.start"));
        Ok(Session { shared })
    }
}

/// Owns the managers, the pilots and the profile; closing it stops the
/// pilots and writes the profile.
///
/// ```no_run
/// use deeprc_pilot::{PilotDescription, Registry, Session, TaskDescription, TaskState};
/// let mut registry = Registry::new();
/// registry.register_typed("square", |_ctx, x: u64| Ok::<_, String>(x * x));
/// // Worker processes re-execute this program: let them in first.
/// deeprc_pilot::worker::run_if_worker(&registry);
///
/// let session = Session::builder().registry(registry).profile_dir("out/pilot").build()?;
/// let pilot = session.pilot_manager().submit(PilotDescription::local())?;
/// let tmgr = session.task_manager();
/// tmgr.add_pilot(&pilot)?;
/// let t = tmgr.submit(TaskDescription::function("square").try_args(&7u64)?)?;
/// assert_eq!(t.wait(), TaskState::Done);
/// assert_eq!(t.result::<u64>()?, 49);
/// let summary = session.close()?;
/// println!("{summary}");
/// # Ok::<(), deeprc_pilot::PilotError>(())
/// ```
pub struct Session {
    shared: Arc<SessionShared>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session with an empty registry and default directories.
    pub fn new() -> Result<Session> {
        Self::builder().build()
    }

    /// Configures a session.
    pub fn builder() -> SessionBuilder {
        SessionBuilder::default()
    }

    /// The session id (`deeprc.session.<pid>.<n>`).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The registered functions.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// The session's sandbox (`<root>/<session id>`), parent of the pilots'.
    pub fn sandbox(&self) -> &Path {
        &self.shared.sandbox
    }

    /// A pilot manager of this session.
    pub fn pilot_manager(&self) -> PilotManager {
        PilotManager {
            session: Arc::clone(&self.shared),
        }
    }

    /// A new task manager of this session.
    pub fn task_manager(&self) -> TaskManager {
        let n = self.shared.next_tmgr.fetch_add(1, Ordering::Relaxed);
        TaskManager {
            shared: Arc::new(TmgrShared {
                id: format!("tmgr.{n:04}"),
                session: Arc::clone(&self.shared),
                pilots: Mutex::new(Vec::new()),
                counts: Mutex::new(Counts::default()),
                all_done: Condvar::new(),
                callbacks: RwLock::new(Vec::new()),
                has_callbacks: AtomicBool::new(false),
                rr: AtomicUsize::new(0),
            }),
        }
    }

    /// The profile records of the tasks finished so far.
    pub fn task_records(&self) -> Vec<TaskRecord> {
        lock(&self.shared.records).clone()
    }

    /// The session's own events (session and pilot start and stop, worker
    /// starts).
    pub fn events(&self) -> Vec<ProfileRecord> {
        self.shared.events.snapshot()
    }

    /// The analytics of the tasks finished so far.
    pub fn summary(&self) -> Summary {
        let (cores, gpus) = capacity(&lock(&self.shared.pilots));
        Summary::compute(&lock(&self.shared.records), cores, gpus)
    }

    /// Writes `profile.jsonl`, `profile.csv`, `trace.json` (Chrome trace),
    /// `resources.jsonl` (the resource samples) and `summary.json` into
    /// `dir`.
    pub fn write_profile(&self, dir: &Path) -> Result<ProfileFiles> {
        write_profile(&self.shared, dir)
    }

    /// Stops every pilot (tasks still waiting or running end CANCELED),
    /// writes the profile if a directory was configured and returns the
    /// summary.
    pub fn close(self) -> Result<Summary> {
        // Drop then finds the session closed and does nothing.
        close_session(&self.shared)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = close_session(&self.shared);
    }
}

/// The cores and GPUs of `pilots` together: what utilisation is over.
fn capacity(pilots: &[Arc<PilotShared>]) -> (usize, f64) {
    pilots
        .iter()
        .fold((0, 0.0), |(c, g), p| (c + p.total.cores, g + p.total.gpus))
}

fn write_profile(s: &SessionShared, dir: &Path) -> Result<ProfileFiles> {
    std::fs::create_dir_all(dir)
        .map_err(|e| PilotError::io(format!("creating {}", dir.display()), e))?;
    let files = ProfileFiles {
        jsonl: dir.join("profile.jsonl"),
        csv: dir.join("profile.csv"),
        chrome_trace: dir.join("trace.json"),
        resources: dir.join("resources.jsonl"),
        summary: dir.join("summary.json"),
    };
    let pilots: Vec<Arc<PilotShared>> = lock(&s.pilots).clone();
    let (cores, gpus) = capacity(&pilots);
    let records = lock(&s.records);
    let events = s.events.snapshot();
    profile::write_jsonl(&files.jsonl, &events, &records)?;
    profile::write_csv(&files.csv, &events, &records)?;
    let trace: Vec<TracePilot> = pilots
        .iter()
        .map(|p| TracePilot {
            id: p.id.clone(),
            nodes: p.nodes.iter().map(|n| (n.name.clone(), n.cores)).collect(),
        })
        .collect();
    // The pilots' resource samples, merged (each pilot's sampler appends to
    // its own file in the pilot sandbox as its tasks run).
    let mut samples = Vec::new();
    let mut merged = Vec::new();
    for p in &pilots {
        let path = p.sandbox.join("resources.jsonl");
        if let Ok(bytes) = std::fs::read(&path) {
            merged.extend_from_slice(&bytes);
            if !merged.is_empty() && !merged.ends_with(b"\n") {
                merged.push(b'\n');
            }
            samples.extend(crate::sampler::read_samples(&path));
        }
    }
    std::fs::write(&files.resources, &merged)
        .map_err(|e| PilotError::io(format!("writing {}", files.resources.display()), e))?;
    profile::write_chrome_trace(
        &files.chrome_trace,
        &trace,
        &records,
        &samples,
        s.created_ns,
    )?;
    let summary = Summary::compute(&records, cores, gpus);
    let text = serde_json::to_string_pretty(&summary).map_err(|source| PilotError::Encode {
        context: "encoding the summary".to_string(),
        source,
    })?;
    std::fs::write(&files.summary, text)
        .map_err(|e| PilotError::io(format!("writing {}", files.summary.display()), e))?;
    Ok(files)
}

fn close_session(s: &Arc<SessionShared>) -> Result<Summary> {
    if s.closed.swap(true, Ordering::AcqRel) {
        return Err(PilotError::Closed {
            what: format!("session {}", s.id),
        });
    }
    let pilots: Vec<Arc<PilotShared>> = lock(&s.pilots).clone();
    for p in &pilots {
        stop_pilot(p, PilotState::Done);
    }
    s.events
        .push(ProfileRecord::now(s.id.clone(), "session.close"));
    let written = match &s.profile_dir {
        Some(dir) => write_profile(s, dir).map(|_| ()),
        None => Ok(()),
    };
    let _ = std::fs::remove_dir_all(&s.runtime);
    // Sandboxes stay when tasks left files in them; empty ones go.
    for p in &pilots {
        let _ = std::fs::remove_dir(&p.sandbox);
        if let Some(parent) = p.sandbox.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    let _ = std::fs::remove_dir(&s.sandbox);
    let (cores, gpus) = capacity(&pilots);
    let summary = Summary::compute(&lock(&s.records), cores, gpus);
    written.map(|()| summary)
}

/// Stops a pilot and waits until its agent has ended (every caller does,
/// not only the first), then releases its resources (once).
///
/// Called from the agent's own thread (a callback stopping its pilot), it
/// only asks the agent to stop: the agent cannot wait for itself. The
/// session's close (or drop) waits for it later.
fn stop_pilot(p: &Arc<PilotShared>, end: PilotState) {
    {
        let mut st = lock(&p.state);
        if matches!(*st, PilotState::Active | PilotState::Launching) {
            *st = end;
            let _ = p.tx.send(AgentEvent::Shutdown);
        }
    }
    if p.agent_thread.get() == Some(&std::thread::current().id()) {
        return;
    }
    // Held while joining: a second caller waits for the first to be done.
    let mut thread = lock(&p.thread);
    if let Some(h) = thread.take() {
        let _ = h.join();
        p.provider.free(p.allocation_id.as_deref(), &p.nodes);
        p.session_events
            .push(ProfileRecord::now(p.id.clone(), "pilot.stop"));
    }
}

/// Ends a pilot for its resource provider (`PilotLink::end`): records why,
/// then stops it. `false` when it had already stopped.
pub(crate) fn end_pilot(p: &Arc<PilotShared>, end: PilotState, reason: String) -> bool {
    {
        let st = lock(&p.state);
        if !matches!(*st, PilotState::Active | PilotState::Launching) {
            return false;
        }
        *lock(&p.end_reason) = Some(reason.clone());
    }
    p.session_events.push(
        ProfileRecord::now(p.id.clone(), "pilot.end")
            .with_attr("state", end.to_string())
            .with_attr("reason", reason),
    );
    stop_pilot(p, end);
    true
}

/// A pilot as its agent, the managers and the tasks share it.
pub(crate) struct PilotShared {
    pub(crate) id: String,
    /// The id of the session it belongs to.
    pub(crate) session_id: String,
    pub(crate) index: u32,
    pub(crate) desc: PilotDescription,
    pub(crate) nodes: Vec<NodeSpec>,
    pub(crate) total: Resources,
    pub(crate) methods: HashMap<String, Arc<dyn LaunchMethod>>,
    pub(crate) tx: Sender<AgentEvent>,
    pub(crate) state: Mutex<PilotState>,
    pub(crate) thread: Mutex<Option<JoinHandle<()>>>,
    /// The agent thread's id (set once it runs).
    pub(crate) agent_thread: OnceLock<ThreadId>,
    pub(crate) sandbox: PathBuf,
    pub(crate) runtime: PathBuf,
    pub(crate) worker_exe: PathBuf,
    pub(crate) provider: Arc<dyn ResourceProvider>,
    /// The provider's id of its allocation (a Slurm job id).
    pub(crate) allocation_id: Option<String>,
    /// Its nodes are not this machine: function tasks run as worker
    /// processes that srun starts on their nodes.
    pub(crate) remote_nodes: bool,
    /// Why its provider ended it (`Pilot::end_reason`).
    pub(crate) end_reason: Mutex<Option<String>>,
    pub(crate) fits: Mutex<HashMap<Shape, Option<String>>>,
    pub(crate) session_events: Profiler,
}

impl PilotShared {
    fn never_fits(&self, s: &Shape) -> Option<String> {
        let mut g = lock(&self.fits);
        if let Some(v) = g.get(s) {
            return v.clone();
        }
        let v = SlotMap::never_fits(&self.nodes, s);
        g.insert(*s, v.clone());
        v
    }
}

/// Acquires pilots.
#[derive(Clone)]
pub struct PilotManager {
    session: Arc<SessionShared>,
}

impl fmt::Debug for PilotManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PilotManager")
            .field("session", &self.session.id)
            .finish()
    }
}

impl PilotManager {
    /// Makes a resource provider available under its name.
    pub fn register_provider(&self, provider: Arc<dyn ResourceProvider>) {
        lock(&self.session.providers).insert(provider.name().to_string(), provider);
    }

    /// Acquires the resources of `desc` and starts the pilot's agent.
    pub fn submit(&self, desc: PilotDescription) -> Result<Pilot> {
        let s = &self.session;
        s.check_open()?;
        let provider = {
            let g = lock(&s.providers);
            match g.get(&desc.resource) {
                Some(p) => Arc::clone(p),
                None => {
                    let mut known: Vec<&str> = g.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    return Err(PilotError::UnknownResource {
                        resource: desc.resource.clone(),
                        known: known.join(", "),
                    });
                }
            }
        };
        let frame = desc.max_message_bytes;
        if !(crate::wire::MIN_MAX_FRAME..=u64::from(u32::MAX)).contains(&frame) {
            return Err(PilotError::InvalidPilot {
                reason: format!(
                    "max_message_bytes must be from {} to {}, not {frame}",
                    crate::wire::MIN_MAX_FRAME,
                    u32::MAX
                ),
            });
        }
        let allocation = provider.allocate(&desc)?;
        let (alloc_id, nodes) = (allocation.id.clone(), allocation.nodes.clone());
        let mut pilots = lock(&s.pilots);
        let index = pilots.len() as u32;
        let shared = match new_pilot(s, desc, Arc::clone(&provider), allocation, index) {
            Ok(p) => p,
            Err(e) => {
                // What was acquired goes back.
                drop(pilots);
                provider.free(alloc_id.as_deref(), &nodes);
                return Err(e);
            }
        };
        // Checked under the lock that closing takes to find the pilots: a
        // session closed meanwhile does not leave this pilot running.
        if s.closed.load(Ordering::Acquire) {
            drop(pilots);
            stop_pilot(&shared, PilotState::Canceled);
            return Err(PilotError::Closed {
                what: format!("session {}", s.id),
            });
        }
        s.events.push(
            ProfileRecord::now(shared.id.clone(), "pilot.active")
                .with_attr("nodes", shared.nodes.len())
                .with_attr("resources", shared.total),
        );
        pilots.push(Arc::clone(&shared));
        drop(pilots);
        if let Some(id) = &shared.allocation_id {
            provider.watch(id, crate::resource::PilotLink::new(&shared));
        }
        Ok(Pilot { shared })
    }

    /// The pilots of the session.
    pub fn pilots(&self) -> Vec<Pilot> {
        lock(&self.session.pilots)
            .iter()
            .map(|p| Pilot {
                shared: Arc::clone(p),
            })
            .collect()
    }
}

/// Makes the directories of pilot `index` on `nodes` and starts its agent.
fn new_pilot(
    s: &Arc<SessionShared>,
    desc: PilotDescription,
    provider: Arc<dyn ResourceProvider>,
    allocation: crate::resource::Allocation,
    index: u32,
) -> Result<Arc<PilotShared>> {
    let crate::resource::Allocation {
        nodes,
        id: allocation_id,
        launch_methods: provided,
        remote: remote_nodes,
    } = allocation;
    let id = format!("pilot.{index:04}");
    let sandbox = match &desc.sandbox {
        Some(root) => root.join(&s.id),
        None => s.sandbox.clone(),
    }
    .join(&id);
    std::fs::create_dir_all(&sandbox).map_err(|e| {
        PilotError::io(
            format!("creating the pilot sandbox {}", sandbox.display()),
            e,
        )
    })?;
    let runtime = s.runtime.join(format!("p{index}"));
    std::fs::create_dir_all(&runtime)
        .map_err(|e| PilotError::io(format!("creating {}", runtime.display()), e))?;
    let worker_exe = match &desc.worker_executable {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| PilotError::io("finding the current executable", e))?,
    };
    let mut methods: HashMap<String, Arc<dyn LaunchMethod>> = HashMap::new();
    methods.insert("fork".into(), Arc::new(Fork));
    methods.insert("mpirun".into(), Arc::new(Mpirun::new()));
    for (name, m) in provided {
        methods.insert(name, m);
    }
    for m in &desc.launch_methods {
        methods.insert(m.name().to_string(), Arc::clone(m));
    }
    let total = nodes.iter().fold(Resources::default(), |acc, n| Resources {
        cores: acc.cores + n.cores,
        gpus: acc.gpus + n.gpus as f64,
        memory_bytes: acc.memory_bytes + n.memory_bytes,
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let shared = Arc::new(PilotShared {
        id: id.clone(),
        session_id: s.id.clone(),
        index,
        desc,
        nodes,
        total,
        methods,
        tx,
        state: Mutex::new(PilotState::Launching),
        thread: Mutex::new(None),
        agent_thread: OnceLock::new(),
        sandbox,
        runtime,
        worker_exe,
        provider,
        allocation_id,
        remote_nodes,
        end_reason: Mutex::new(None),
        fits: Mutex::new(HashMap::new()),
        session_events: s.events.clone(),
    });
    let handle = agent::start(Arc::clone(&shared), Arc::clone(s), rx)?;
    let _ = shared.agent_thread.set(handle.thread().id());
    *lock(&shared.thread) = Some(handle);
    *lock(&shared.state) = PilotState::Active;
    Ok(shared)
}

/// A placeholder of resources with an agent (scheduler + executor).
#[derive(Clone)]
pub struct Pilot {
    pub(crate) shared: Arc<PilotShared>,
}

impl fmt::Debug for Pilot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pilot")
            .field("id", &self.shared.id)
            .field("resources", &self.shared.total)
            .field("state", &self.state())
            .finish()
    }
}

impl Pilot {
    /// Its id (`pilot.0000`).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Its nodes.
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.shared.nodes
    }

    /// Its resources in total.
    pub fn resources(&self) -> Resources {
        self.shared.total
    }

    /// Its state.
    pub fn state(&self) -> PilotState {
        *lock(&self.shared.state)
    }

    /// The description it was submitted with.
    pub fn description(&self) -> &PilotDescription {
        &self.shared.desc
    }

    /// Where its task sandboxes go.
    pub fn sandbox(&self) -> &Path {
        &self.shared.sandbox
    }

    /// The id of its resource provider's allocation: the Slurm job id of a
    /// Slurm pilot, `None` for a local one.
    pub fn allocation(&self) -> Option<&str> {
        self.shared.allocation_id.as_deref()
    }

    /// Why its resource provider ended it, if it did (a Slurm pilot whose
    /// job was cancelled or reached its walltime: `Slurm job 12 is TIMEOUT
    /// (TimeLimit)`).
    pub fn end_reason(&self) -> Option<String> {
        lock(&self.shared.end_reason).clone()
    }

    /// Stops the pilot: its waiting and running tasks end CANCELED.
    pub fn cancel(&self) {
        stop_pilot(&self.shared, PilotState::Canceled);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counts {
    submitted: u64,
    finished: u64,
    waiters: u32,
}

/// What a task manager's tasks share with it.
pub(crate) struct TmgrShared {
    pub(crate) id: String,
    pub(crate) session: Arc<SessionShared>,
    pub(crate) pilots: Mutex<Vec<Arc<PilotShared>>>,
    pub(crate) counts: Mutex<Counts>,
    pub(crate) all_done: Condvar,
    pub(crate) callbacks: RwLock<Vec<Callback>>,
    pub(crate) has_callbacks: AtomicBool,
    pub(crate) rr: AtomicUsize,
}

impl TmgrShared {
    pub(crate) fn task_finished(&self, n: u64) {
        let mut c = lock(&self.counts);
        c.finished += n;
        if c.waiters > 0 && c.finished >= c.submitted {
            self.all_done.notify_all();
        }
    }

    pub(crate) fn callbacks(&self) -> Vec<Callback> {
        if !self.has_callbacks.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.callbacks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Submits tasks to its pilots, waits for them, cancels them.
#[derive(Clone)]
pub struct TaskManager {
    shared: Arc<TmgrShared>,
}

impl fmt::Debug for TaskManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskManager")
            .field("id", &self.shared.id)
            .finish()
    }
}

impl TaskManager {
    /// Its id (`tmgr.0000`).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Lets tasks run on `pilot`. With several pilots, each task goes to
    /// one that can hold it, in turn (see [`submit_many`](Self::submit_many)).
    /// Adding a pilot twice changes nothing.
    ///
    /// # Errors
    ///
    /// [`PilotError::ForeignPilot`] when the pilot belongs to another
    /// session (task ids, names and dependencies are the session's own).
    pub fn add_pilot(&self, pilot: &Pilot) -> Result<()> {
        let s = &self.shared.session;
        if pilot.shared.session_id != s.id {
            return Err(PilotError::ForeignPilot {
                pilot: pilot.shared.id.clone(),
                pilot_session: pilot.shared.session_id.clone(),
                session: s.id.clone(),
            });
        }
        let mut g = lock(&self.shared.pilots);
        if !g.iter().any(|p| Arc::ptr_eq(p, &pilot.shared)) {
            g.push(Arc::clone(&pilot.shared));
        }
        Ok(())
    }

    /// Calls `f` on every state change of this manager's tasks.
    pub fn register_callback(&self, f: impl Fn(&Task, TaskState) + Send + Sync + 'static) {
        self.shared
            .callbacks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(f));
        self.shared.has_callbacks.store(true, Ordering::Release);
    }

    /// Submits one task.
    pub fn submit(&self, desc: TaskDescription) -> Result<Task> {
        let mut v = self.submit_many(vec![desc])?;
        v.pop().ok_or(PilotError::NoPilot)
    }

    /// Submits a batch: all are accepted or none (the error names the first
    /// bad description). Dependencies may name tasks of the same batch.
    ///
    /// Each task goes to one of this manager's active pilots, taken in
    /// turn, that knows the task's launch method, can run it here and can
    /// hold the task. Names are claimed atomically: of concurrent
    /// submissions of one name, exactly one succeeds.
    ///
    /// A pilot that stops while the batch is handed to it ends the batch's
    /// tasks for it CANCELED (the handles are returned all the same).
    pub fn submit_many(&self, descs: Vec<TaskDescription>) -> Result<Vec<Task>> {
        let tm = &self.shared;
        let s = &tm.session;
        s.check_open()?;
        let pilots: Vec<Arc<PilotShared>> = {
            let g = lock(&tm.pilots);
            if g.is_empty() {
                return Err(PilotError::NoPilot);
            }
            let active: Vec<Arc<PilotShared>> = g
                .iter()
                .filter(|p| *lock(&p.state) == PilotState::Active)
                .cloned()
                .collect();
            if active.is_empty() {
                let what = match g.as_slice() {
                    [one] => format!("pilot {}", one.id),
                    all => format!(
                        "every pilot of {} ({})",
                        tm.id,
                        all.iter()
                            .map(|p| p.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                return Err(PilotError::Closed { what });
            }
            active
        };
        // Names: unique in the batch here, in the session below.
        let mut batch_names: HashMap<&str, usize> = HashMap::new();
        for (i, d) in descs.iter().enumerate() {
            if let Some(n) = &d.name {
                if batch_names.insert(n.as_str(), i).is_some() {
                    return Err(PilotError::DuplicateName { name: n.clone() });
                }
            }
        }
        check_cycles(&descs, &batch_names)?;
        let prepared = descs
            .iter()
            .enumerate()
            .map(|(i, d)| prepare(s, &pilots, tm, d, i))
            .collect::<Result<Vec<Prepared>>>()?;
        // One critical section checks the names against the session's,
        // resolves the dependencies and claims names and ids: two
        // submissions cannot both claim a name, and every id handed out is
        // a task that was submitted (so depending on any id below the next
        // one is safe).
        let n = descs.len() as u64;
        let (base, deps_of) = {
            let mut reg = lock(&s.names);
            for d in &descs {
                if let Some(nm) = &d.name {
                    if reg.ids.contains_key(nm) {
                        return Err(PilotError::DuplicateName { name: nm.clone() });
                    }
                }
            }
            let base = reg.next;
            let mut deps_of: Vec<Vec<TaskId>> = Vec::with_capacity(descs.len());
            for (i, d) in descs.iter().enumerate() {
                let mut deps = Vec::with_capacity(d.dependencies.len());
                for r in &d.dependencies {
                    let id = match r {
                        TaskRef::Id(id) if id.0 >= 1 && id.0 < base => Some(*id),
                        TaskRef::Id(_) => None,
                        TaskRef::Name(nm) => match batch_names.get(nm.as_str()) {
                            Some(&j) => Some(TaskId(base + j as u64)),
                            None => reg.ids.get(nm).copied(),
                        },
                    };
                    deps.push(id.ok_or_else(|| PilotError::UnknownDependency {
                        task: d.label(i),
                        dependency: r.to_string(),
                    })?);
                }
                deps_of.push(deps);
            }
            reg.next = base + n;
            for (i, d) in descs.iter().enumerate() {
                if let Some(nm) = &d.name {
                    reg.ids.insert(nm.clone(), TaskId(base + i as u64));
                }
            }
            (base, deps_of)
        };
        lock(&tm.counts).submitted += n;
        let now = now_ns();
        let mut by_pilot: Vec<Vec<Arc<TaskShared>>> = vec![Vec::new(); pilots.len()];
        let mut out = Vec::with_capacity(descs.len());
        for (i, ((desc, prep), deps)) in descs.into_iter().zip(prepared).zip(deps_of).enumerate() {
            let inner = TaskInner {
                state: Some(TaskState::New),
                ts: crate::Timestamps {
                    new: now,
                    ..Default::default()
                },
                ..Default::default()
            };
            let t = Arc::new(TaskShared {
                id: TaskId(base + i as u64),
                desc,
                label: prep.label,
                kind: prep.kind,
                shape: prep.shape,
                func: prep.func,
                deps,
                pilot: Arc::clone(&pilots[prep.pilot]),
                tmgr: Arc::clone(tm),
                inner: Mutex::new(inner),
                changed: Condvar::new(),
            });
            by_pilot[prep.pilot].push(Arc::clone(&t));
            out.push(Task { shared: t });
        }
        let cbs = tm.callbacks();
        if !cbs.is_empty() {
            for t in &out {
                for cb in &cbs {
                    // As on the agent's thread: a panicking callback must
                    // not stop the tasks (they have ids and count already).
                    let _ = catch_unwind(AssertUnwindSafe(|| cb(t, TaskState::New)));
                }
            }
        }
        for (p, tasks) in pilots.iter().zip(by_pilot) {
            if tasks.is_empty() {
                continue;
            }
            // Handed over under the pilot's state lock: a pilot that stops
            // either finds these tasks in its queue before its Shutdown, or
            // this finds it stopped. No task is left that nobody ends.
            let unsent = {
                let st = lock(&p.state);
                if *st == PilotState::Active {
                    match p.tx.send(AgentEvent::Submit(tasks)) {
                        Ok(()) => Vec::new(),
                        Err(SendError(AgentEvent::Submit(tasks))) => tasks,
                        Err(SendError(_)) => Vec::new(),
                    }
                } else {
                    tasks
                }
            };
            for t in &unsent {
                agent::cancel_unsent(s, p, t);
            }
        }
        Ok(out)
    }

    /// Blocks until every task submitted so far is final.
    pub fn wait_all(&self) {
        let mut c = lock(&self.shared.counts);
        while c.finished < c.submitted {
            c.waiters += 1;
            c = self
                .shared
                .all_done
                .wait(c)
                .unwrap_or_else(PoisonError::into_inner);
            c.waiters -= 1;
        }
    }

    /// Like [`wait_all`](Self::wait_all) for at most `timeout`; `true` when
    /// all are final. A timeout too long to represent waits forever.
    pub fn wait_all_timeout(&self, timeout: Duration) -> bool {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            self.wait_all();
            return true;
        };
        let mut c = lock(&self.shared.counts);
        while c.finished < c.submitted {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            c.waiters += 1;
            c = self
                .shared
                .all_done
                .wait_timeout(c, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            c.waiters -= 1;
        }
        true
    }

    /// Blocks until each of `tasks` is final; returns their final states.
    pub fn wait(&self, tasks: &[Task]) -> Vec<TaskState> {
        tasks.iter().map(Task::wait).collect()
    }

    /// Cancels a task (see [`Task::cancel`]).
    pub fn cancel(&self, task: &Task) {
        task.cancel();
    }

    /// How many tasks were submitted and how many are final.
    pub fn counts(&self) -> (u64, u64) {
        let c = lock(&self.shared.counts);
        (c.submitted, c.finished)
    }
}

/// A validated description.
struct Prepared {
    pilot: usize,
    label: Arc<str>,
    kind: Arc<str>,
    shape: Shape,
    func: Option<Arc<crate::registry::RawFn>>,
}

/// Validates a description and chooses its pilot: the first of `pilots`,
/// taken in turn, that knows its launch method, can run it here and can
/// hold it.
fn prepare(
    s: &SessionShared,
    pilots: &[Arc<PilotShared>],
    tm: &TmgrShared,
    d: &TaskDescription,
    index: usize,
) -> Result<Prepared> {
    let label = || d.label(index);
    if d.ranks == 0 {
        return Err(PilotError::invalid(label(), "ranks must be at least 1"));
    }
    if d.cores_per_rank == 0 {
        return Err(PilotError::invalid(
            label(),
            "cores_per_rank must be at least 1",
        ));
    }
    if d.ranks.checked_mul(d.cores_per_rank).is_none()
        || d.mem_per_rank.checked_mul(d.ranks as u64).is_none()
    {
        return Err(PilotError::invalid(
            label(),
            format!(
                "{} ranks of {} cores and {} bytes each: the totals overflow",
                d.ranks, d.cores_per_rank, d.mem_per_rank
            ),
        ));
    }
    let g = d.gpus_per_rank;
    if !(g.is_finite() && g >= 0.0) || (g > 1.0 && g.fract() != 0.0) {
        return Err(PilotError::invalid(
            label(),
            format!("gpus_per_rank must be a fraction up to 1 or a whole number, not {g}"),
        ));
    }
    if d.timeout.is_some_and(|t| t.is_zero()) {
        return Err(PilotError::invalid(
            label(),
            "a timeout must be longer than zero",
        ));
    }
    // What the task is, and the launch method (by name) and node spanning
    // it asks of a pilot.
    let (name, kind, func, method, span) = match &d.kind {
        TaskKind::Function(f) => {
            let entry = s
                .registry
                .get(&f.name)
                .ok_or_else(|| PilotError::UnknownFunction {
                    task: label(),
                    name: f.name.clone(),
                    known: s.registry.names().join(", "),
                })?;
            if f.launch == FunctionLaunch::Mpirun && !cfg!(feature = "mpi") {
                return Err(PilotError::NotCompiled {
                    what: format!("task {}: function tasks under mpirun", label()),
                    feature: "mpi",
                });
            }
            (
                Arc::clone(&entry.name),
                s.intern(f.launch.label()),
                Some(Arc::clone(&entry.func)),
                (f.launch == FunctionLaunch::Mpirun).then_some("mpirun"),
                f.launch != FunctionLaunch::Threads,
            )
        }
        TaskKind::Executable(e) => {
            let Some(program) = e.argv.first() else {
                return Err(PilotError::invalid(label(), "argv is empty"));
            };
            if e.pre_exec.is_empty() {
                let path_var = e
                    .env
                    .iter()
                    .rev()
                    .find(|(k, _)| k == "PATH")
                    .map(|(_, v)| v.as_str());
                let resolved = match (&e.cwd, program.contains('/') && !program.starts_with('/')) {
                    (Some(cwd), true) => sys::is_executable(&cwd.join(program)).then_some(()),
                    _ => sys::which(program, path_var).map(|_| ()),
                };
                if resolved.is_none() {
                    return Err(PilotError::ExecutableNotFound {
                        task: label(),
                        path: program.clone(),
                    });
                }
            }
            let base = Path::new(program)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| program.clone());
            (
                s.intern(&base),
                s.intern(&format!("executable.{}", e.launch_method)),
                None,
                Some(e.launch_method.as_str()),
                true,
            )
        }
    };
    let start = if pilots.len() > 1 {
        tm.rr.fetch_add(1, Ordering::Relaxed)
    } else {
        0
    };
    // Arguments that go to a process in a message must fit it.
    let wire_args = match &d.kind {
        TaskKind::Function(f) if f.launch != FunctionLaunch::Threads => Some(f),
        _ => None,
    };
    // Why no pilot would do: the first that lacked room, else the one with
    // the largest message limit when the arguments fit none, else the
    // first whose launch method cannot run here, else none knew the method.
    let mut no_room: Option<(usize, String)> = None;
    let mut too_large: Option<(usize, u64)> = None;
    let mut unavailable: Option<String> = None;
    for k in 0..pilots.len() {
        let i = (start + k) % pilots.len();
        let p = &pilots[i];
        if let Some(f) = wire_args {
            let limit = p
                .desc
                .max_message_bytes
                .saturating_sub(run_message_overhead(p, d, &f.name));
            if f.args.len() as u64 > limit {
                if too_large.is_none_or(|(_, l)| l < limit) {
                    too_large = Some((i, limit));
                }
                continue;
            }
        }
        let span_nodes = match method {
            None => span,
            Some(m) => match p.methods.get(m) {
                None => continue,
                // A launch method is the user's code: a panic in it is
                // the method being unavailable, not a panic of ours.
                Some(lm) => {
                    match catch_unwind(AssertUnwindSafe(|| lm.check().map(|()| lm.spans_nodes()))) {
                        Ok(Ok(spans)) => spans,
                        Ok(Err(reason)) => {
                            unavailable.get_or_insert(reason);
                            continue;
                        }
                        Err(p) => {
                            unavailable.get_or_insert(format!(
                                "its check panicked: {}",
                                crate::launch::threads::panic_message(&*p)
                            ));
                            continue;
                        }
                    }
                }
            },
        };
        let shape = Shape {
            ranks: d.ranks,
            cores: d.cores_per_rank,
            gpu_units: Shape::gpu_units(g),
            mem: d.mem_per_rank,
            span_nodes,
        };
        match p.never_fits(&shape) {
            None => {
                return Ok(Prepared {
                    pilot: i,
                    label: name,
                    kind,
                    shape,
                    func,
                })
            }
            Some(w) => {
                no_room.get_or_insert((i, w));
            }
        }
    }
    if let Some((i, detail)) = no_room {
        return Err(PilotError::InsufficientResources {
            task: label(),
            pilot: pilots[i].id.clone(),
            asked: d.total_resources(),
            available: pilots[i].total,
            detail,
        });
    }
    if let (Some((i, limit)), Some(f)) = (too_large, wire_args) {
        return Err(PilotError::ArgumentsTooLarge {
            task: label(),
            pilot: pilots[i].id.clone(),
            size: f.args.len() as u64,
            limit,
            max_message_bytes: pilots[i].desc.max_message_bytes,
        });
    }
    let method = method.map_or_else(|| kind.to_string(), str::to_string);
    if let Some(reason) = unavailable {
        return Err(PilotError::LauncherUnavailable {
            task: label(),
            method,
            reason,
        });
    }
    let mut known: Vec<&str> = pilots
        .iter()
        .flat_map(|p| p.methods.keys().map(String::as_str))
        .collect();
    known.sort_unstable();
    known.dedup();
    Err(PilotError::UnknownLaunchMethod {
        task: label(),
        method,
        known: known.join(", "),
    })
}

/// An upper bound of the bytes of a `Run` message to a worker besides the
/// task's arguments (see `wire::RunMsg`): the fixed fields, the function's
/// name, the rank's CPUs and GPUs, its sandbox path and its rendezvous.
fn run_message_overhead(p: &PilotShared, d: &TaskDescription, func: &str) -> u64 {
    let gpus = if d.gpus_per_rank > 0.0 {
        d.gpus_per_rank.ceil().max(1.0) as u64
    } else {
        0
    };
    // Paths under the pilot's directories, with room for the task's name.
    let sandbox = p.sandbox.as_os_str().len() as u64 + 64;
    let store = p.runtime.as_os_str().len() as u64 + 64;
    let fixed: u64 = 5 + 8 + 4 * 4 + 4 + 4 + 4 + 4 + 4 + 1 + 4 + 4 + 8 * 3 + 64;
    [
        func.len() as u64,
        (d.cores_per_rank as u64).saturating_mul(4),
        gpus.saturating_mul(16),
        sandbox,
        store,
    ]
    .into_iter()
    .fold(fixed, u64::saturating_add)
}

/// Rejects dependency cycles among the tasks of one batch (by name).
fn check_cycles(descs: &[TaskDescription], names: &HashMap<&str, usize>) -> Result<()> {
    let edges: Vec<Vec<usize>> = descs
        .iter()
        .map(|d| {
            d.dependencies
                .iter()
                .filter_map(|r| match r {
                    TaskRef::Name(n) => names.get(n.as_str()).copied(),
                    TaskRef::Id(_) => None,
                })
                .collect()
        })
        .collect();
    if edges.iter().all(Vec::is_empty) {
        return Ok(());
    }
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut mark = vec![0u8; descs.len()];
    for root in 0..descs.len() {
        if mark[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = 1;
        while let Some(&mut (v, ref mut next)) = stack.last_mut() {
            if let Some(&w) = edges[v].get(*next) {
                *next += 1;
                match mark[w] {
                    0 => {
                        mark[w] = 1;
                        stack.push((w, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|&(x, _)| x == w).unwrap_or(0);
                        let mut tasks: Vec<String> = stack[from..]
                            .iter()
                            .map(|&(x, _)| descs[x].label(x))
                            .collect();
                        tasks.push(descs[w].label(w));
                        return Err(PilotError::DependencyCycle { tasks });
                    }
                    _ => {}
                }
            } else {
                mark[v] = 2;
                stack.pop();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cycles() {
        let d = |n: &str, deps: &[&str]| {
            let mut t = TaskDescription::function("f").name(n);
            for x in deps {
                t = t.depends_on(*x);
            }
            t
        };
        let descs = vec![d("a", &["c"]), d("b", &["a"]), d("c", &["b"]), d("e", &[])];
        let names: HashMap<&str, usize> = [("a", 0), ("b", 1), ("c", 2), ("e", 3)]
            .into_iter()
            .collect();
        match check_cycles(&descs, &names) {
            Err(PilotError::DependencyCycle { tasks }) => assert_eq!(tasks.len(), 4),
            other => panic!("expected a cycle, got {other:?}"),
        }
        let ok = vec![d("a", &[]), d("b", &["a"]), d("c", &["a", "b"])];
        let names: HashMap<&str, usize> = [("a", 0), ("b", 1), ("c", 2)].into_iter().collect();
        assert!(check_cycles(&ok, &names).is_ok());
        let selfdep = vec![d("a", &["a"])];
        let names: HashMap<&str, usize> = [("a", 0)].into_iter().collect();
        assert!(check_cycles(&selfdep, &names).is_err());
    }
}
