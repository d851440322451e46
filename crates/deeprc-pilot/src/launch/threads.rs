//! Function tasks on in-process threads: one long-lived rank thread per
//! core slot, pinned to its CPU, running the ranks placed on that core one
//! after the other. A multi-rank task gets a `local` communicator group,
//! made (and timed) before its ranks are handed out.

use crate::{
    agent::{AgentEvent, RankDone, RankSlots},
    registry::TaskContext,
    sampler::{Sampler, Target, Watch},
    sys,
    task::TaskShared,
    usage::{current_tid, ThreadMeter},
    FailReason, TaskKind,
};
use deeprc_comm::{CommConfig, Communicator};
use deeprc_core::now_ns;
use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    sync::{atomic::AtomicBool, mpsc, Arc, OnceLock},
    time::{Duration, Instant},
};

struct Job {
    task: Arc<TaskShared>,
    attempt: u32,
    rank: usize,
    size: usize,
    slots: RankSlots,
    sandbox: Option<PathBuf>,
    comm: Option<Arc<dyn Communicator>>,
    comm_ns: u64,
    comm_config: CommConfig,
    cancel: Arc<AtomicBool>,
}

/// The rank threads of a pilot.
pub(crate) struct ThreadExecutor {
    cpu_of_core: Vec<usize>,
    pin: bool,
    events: mpsc::Sender<AgentEvent>,
    cores: Vec<Option<mpsc::Sender<Job>>>,
    sampler: Option<Arc<Sampler>>,
}

impl ThreadExecutor {
    pub(crate) fn new(
        cpu_of_core: Vec<usize>,
        pin: bool,
        events: mpsc::Sender<AgentEvent>,
        sampler: Option<Arc<Sampler>>,
    ) -> Self {
        let n = cpu_of_core.len();
        Self {
            cpu_of_core,
            pin,
            events,
            cores: (0..n).map(|_| None).collect(),
            sampler,
        }
    }

    fn sender(&mut self, core: usize) -> Result<&mpsc::Sender<Job>, FailReason> {
        if self.cores[core].is_none() {
            let (tx, rx) = mpsc::channel();
            let home = vec![self.cpu_of_core[core]];
            let pin = self.pin;
            let events = self.events.clone();
            let sampler = self.sampler.clone();
            std::thread::Builder::new()
                .name(format!("deeprc-rank-{core}"))
                .spawn(move || rank_thread(rx, home, pin, events, sampler))
                .map_err(|e| FailReason::Launch(format!("starting a rank thread: {e}")))?;
            self.cores[core] = Some(tx);
        }
        self.cores[core]
            .as_ref()
            .ok_or_else(|| FailReason::Launch("no rank thread".into()))
    }

    /// Hands the ranks to their cores' threads. Returns the cancel flag
    /// and the communicator creation time.
    pub(crate) fn launch(
        &mut self,
        task: &Arc<TaskShared>,
        attempt: u32,
        ranks: &[RankSlots],
        sandbox: Option<&Path>,
        config: &CommConfig,
    ) -> Result<(Arc<AtomicBool>, u64), FailReason> {
        let cancel = Arc::new(AtomicBool::new(false));
        let size = ranks.len();
        let (comms, comm_ns): (Vec<Option<Arc<dyn Communicator>>>, u64) = if size > 1 {
            let t0 = Instant::now();
            let group = deeprc_comm::local::create(size, config.clone())
                .map_err(|e| FailReason::Comm(e.to_string()))?;
            let comms = group
                .into_iter()
                .map(|c| Some(Arc::new(c) as Arc<dyn Communicator>))
                .collect();
            (comms, t0.elapsed().as_nanos() as u64)
        } else {
            (vec![None], 0)
        };
        for (rank, (slots, comm)) in ranks.iter().zip(comms).enumerate() {
            let job = Job {
                task: Arc::clone(task),
                attempt,
                rank,
                size,
                slots: slots.clone(),
                sandbox: sandbox.map(Path::to_path_buf),
                comm,
                comm_ns,
                comm_config: config.clone(),
                cancel: Arc::clone(&cancel),
            };
            if let Err(mpsc::SendError(job)) = self.sender(slots.core)?.send(job) {
                // The thread is gone (it cannot be, short of a bug): start
                // another one.
                self.cores[slots.core] = None;
                self.sender(slots.core)?
                    .send(job)
                    .map_err(|_| FailReason::Launch("the rank thread is gone".into()))?;
            }
        }
        Ok((cancel, comm_ns))
    }

    /// Lets the rank threads end after their current job.
    pub(crate) fn shutdown(&mut self) {
        self.cores.clear();
    }
}

pub(crate) use deeprc_core::sync::panic_message;

fn rank_thread(
    rx: mpsc::Receiver<Job>,
    home: Vec<usize>,
    pin: bool,
    events: mpsc::Sender<AgentEvent>,
    sampler: Option<Arc<Sampler>>,
) {
    let tid = current_tid();
    let mut current = home;
    if pin {
        let _ = sys::pin_current_thread(&current);
    }
    while let Ok(job) = rx.recv() {
        if pin && job.slots.cpus != current {
            let _ = sys::pin_current_thread(&job.slots.cpus);
            current.clone_from(&job.slots.cpus);
        }
        let args: &[u8] = match &job.task.desc.kind {
            TaskKind::Function(f) => &f.args,
            TaskKind::Executable(_) => &[],
        };
        let comm = OnceLock::new();
        if let Some(c) = job.comm {
            let _ = comm.set(c);
        }
        let node = job.slots.node as u32;
        let gpus: Vec<u32> = job.slots.gpus.iter().map(|g| g.device as u32).collect();
        let ctx = TaskContext {
            task: job.task.id,
            attempt: job.attempt,
            rank: job.rank,
            size: job.size,
            node: job.slots.node,
            cpus: job.slots.cpus,
            gpus: job.slots.gpus,
            sandbox: job.sandbox,
            comm,
            comm_setup: Duration::from_nanos(job.comm_ns),
            comm_config: job.comm_config,
            canceled: Some(job.cancel),
        };
        let exec_start = now_ns();
        let meter = ThreadMeter::start();
        if let Some(s) = &sampler {
            s.watch(Watch {
                task: job.task.id,
                attempt: job.attempt,
                rank: job.rank as u32,
                node,
                target: Target::Thread(tid),
                gpus,
                baseline_cpu_ns: Some(meter.thread_start),
                start_ns: exec_start,
            });
        }
        let out = match &job.task.func {
            Some(f) => catch_unwind(AssertUnwindSafe(|| f(&ctx, args))),
            None => Ok(Err("not a function task".to_string())),
        };
        // Dropping the context drops this rank's communicator: peers still
        // waiting for it fail at once instead of timing out.
        drop(ctx);
        let usage = meter.stop();
        if let Some(s) = &sampler {
            s.unwatch(job.task.id, job.attempt, job.rank as u32);
        }
        let exec_end = now_ns();
        let outcome = match out {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(FailReason::Error(e)),
            Err(p) => Err(FailReason::Panic(panic_message(&*p))),
        };
        let _ = events.send(AgentEvent::Rank(RankDone {
            task: job.task.id,
            attempt: job.attempt,
            rank: job.rank as u32,
            ranks: 1,
            exec_start,
            exec_end,
            comm_ns: job.comm_ns,
            outcome,
            exit_code: None,
            stderr_tail: None,
            usage: Some(usage),
        }));
    }
}
