//! [`SlurmProvider`]: a pilot's nodes from a Slurm job, one `squeue` per
//! poll for every job of the session.

use super::{
    cli::{parse_job_nodes, parse_sacct_state, parse_sbatch, parse_scontrol_state, parse_squeue},
    cli::{Cli, JobStatus},
    cli::{NodeAlloc, HOPELESS_REASONS, SQUEUE_FORMAT},
    SlurmJob, SlurmPilot, Srun, BATCH_SCRIPT,
};
use crate::{
    resource::{Allocation, PilotLink},
    LaunchMethod, NodeSpec, PilotDescription, PilotError, PilotState, ResourceProvider, Result,
};
use deeprc_core::hostlist::{expand_counts, expand_hostlist, expand_ids};
use std::{
    collections::HashMap,
    fmt,
    path::PathBuf,
    sync::{Arc, Condvar, Mutex, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use deeprc_core::sync::lock;

/// Counts of the calls a [`SlurmProvider`] made to Slurm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlurmStats {
    /// `sbatch` calls (one per submitted pilot).
    pub sbatch_calls: u64,
    /// `squeue` calls (one per poll, for all the jobs being watched).
    pub squeue_calls: u64,
    /// The most jobs one `squeue` call asked about.
    pub most_jobs_per_squeue: usize,
    /// `scancel` calls.
    pub scancel_calls: u64,
}

/// The `slurm` resource provider: pilots on a job submitted with `sbatch`
/// ([`PilotDescription::slurm`]) or on the allocation this program runs in
/// ([`PilotDescription::slurm_allocation`]). Every session has one; one
/// poller thread (started with the first job) asks about all the session's
/// jobs with one `squeue` call per poll (default every second), and ends
/// the pilots whose jobs end. Dropping it cancels the jobs it submitted
/// that are still held.
///
/// Register your own to choose where Slurm's programs are, how often to
/// poll, or to read [`stats`](Self::stats):
///
/// ```no_run
/// use deeprc_pilot::{slurm::SlurmProvider, Session};
/// use std::{sync::Arc, time::Duration};
/// let session = Session::new()?;
/// let slurm = Arc::new(SlurmProvider::new().with_poll_interval(Duration::from_secs(5)));
/// session.pilot_manager().register_provider(Arc::clone(&slurm) as _);
/// # Ok::<(), deeprc_pilot::PilotError>(())
/// ```
pub struct SlurmProvider {
    inner: Arc<Inner>,
}

struct Inner {
    cli: Cli,
    poll: Duration,
    jobs: Mutex<Jobs>,
    /// A poll's results arrived.
    polled: Condvar,
    /// A job was added, or the provider closes.
    wake: Condvar,
    poller: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Jobs {
    map: HashMap<String, Job>,
    stats: SlurmStats,
    closed: bool,
}

struct Job {
    /// Submitted by this provider: cancelled when its pilot stops.
    ours: bool,
    /// What the last poll saw.
    status: Option<JobStatus>,
    /// The pilot to end when the job ends.
    link: Option<PilotLink>,
}

impl fmt::Debug for SlurmProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = lock(&self.inner.jobs);
        f.debug_struct("SlurmProvider")
            .field("poll", &self.inner.poll)
            .field("jobs", &g.map.keys().collect::<Vec<_>>())
            .field("stats", &g.stats)
            .finish()
    }
}

impl Default for SlurmProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl SlurmProvider {
    /// Slurm's programs from `PATH`, polling every second.
    pub fn new() -> Self {
        Self::build(Cli::default(), Duration::from_secs(1))
    }

    fn build(cli: Cli, poll: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                cli,
                poll,
                jobs: Mutex::new(Jobs::default()),
                polled: Condvar::new(),
                wake: Condvar::new(),
                poller: Mutex::new(None),
            }),
        }
    }

    /// Slurm's programs (`sbatch`, `squeue`, `scancel`, `scontrol`, `srun`)
    /// from this directory.
    pub fn with_bin_dir(self, dir: impl Into<PathBuf>) -> Self {
        let cli = Cli {
            bin_dir: Some(dir.into()),
        };
        Self::build(cli, self.inner.poll)
    }

    /// Polls every `interval` (at least 100 ms).
    pub fn with_poll_interval(self, interval: Duration) -> Self {
        Self::build(
            self.inner.cli.clone(),
            interval.max(Duration::from_millis(100)),
        )
    }

    /// The calls made to Slurm so far.
    pub fn stats(&self) -> SlurmStats {
        lock(&self.inner.jobs).stats
    }

    fn failed(reason: impl Into<String>) -> PilotError {
        PilotError::ResourceFailed {
            resource: "slurm".into(),
            reason: reason.into(),
        }
    }

    /// Adds a job to the poller (starting it the first time).
    fn track(&self, id: &str, ours: bool) {
        let mut g = lock(&self.inner.jobs);
        g.map.insert(
            id.to_string(),
            Job {
                ours,
                status: None,
                link: None,
            },
        );
        drop(g);
        self.inner.wake.notify_all();
        let mut p = lock(&self.inner.poller);
        if p.is_none() {
            let inner = Arc::clone(&self.inner);
            *p = std::thread::Builder::new()
                .name("deeprc-slurm-poll".into())
                .spawn(move || poll_loop(&inner))
                .ok();
        }
    }

    fn cancel(&self, id: &str) {
        lock(&self.inner.jobs).stats.scancel_calls += 1;
        // A job that already ended makes scancel complain; nothing to do.
        let _ = self.inner.cli.run("scancel", &[id.to_string()], None);
    }

    /// Submits `job` and waits until it runs; its id and nodes.
    fn submit(&self, job: &SlurmJob) -> Result<(String, Vec<NodeAlloc>)> {
        let args = job
            .sbatch_args()
            .map_err(|reason| PilotError::InvalidPilot { reason })?;
        lock(&self.inner.jobs).stats.sbatch_calls += 1;
        let out = self
            .inner
            .cli
            .run("sbatch", &args, Some(BATCH_SCRIPT))
            .map_err(|e| Self::failed(format!("sbatch refused the job: {e}")))?;
        let id = parse_sbatch(&out).map_err(Self::failed)?;
        self.track(&id, true);
        match self.wait_running(&id, job.queue_timeout) {
            Ok(status) => match self.job_nodes(&id, &status, job) {
                Ok(nodes) => Ok((id, nodes)),
                Err(e) => {
                    self.forget(&id);
                    self.cancel(&id);
                    Err(Self::failed(e))
                }
            },
            Err((reason, cancel)) => {
                self.forget(&id);
                if cancel {
                    self.cancel(&id);
                }
                Err(Self::failed(reason))
            }
        }
    }

    fn forget(&self, id: &str) {
        lock(&self.inner.jobs).map.remove(id);
    }

    /// Waits until job `id` runs: its status, or why it will not run and
    /// whether it must be cancelled.
    fn wait_running(
        &self,
        id: &str,
        queue_timeout: Option<Duration>,
    ) -> std::result::Result<JobStatus, (String, bool)> {
        let deadline = queue_timeout.and_then(|t| Instant::now().checked_add(t));
        let mut g = lock(&self.inner.jobs);
        loop {
            if g.closed {
                return Err(("the session's Slurm provider closed".into(), true));
            }
            let Some(job) = g.map.get(id) else {
                return Err((format!("Slurm job {id} was forgotten"), true));
            };
            if let Some(st) = &job.status {
                if st.is_running() {
                    return Ok(st.clone());
                }
                if !st.is_waiting() {
                    return Err((format!("{} before it ran", st.describe()), false));
                }
                if HOPELESS_REASONS.contains(&st.reason.as_str()) {
                    return Err((
                        format!(
                            "{}: Slurm will not run it as asked (the job was cancelled)",
                            st.describe()
                        ),
                        true,
                    ));
                }
            }
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => left.min(self.inner.poll * 2),
                    None => {
                        let what = job.status.as_ref().map_or_else(
                            || format!("Slurm job {id} did not start"),
                            JobStatus::describe,
                        );
                        return Err((
                            format!(
                                "{what} after the queue timeout of {:?} (the job was cancelled)",
                                queue_timeout.unwrap_or_default()
                            ),
                            true,
                        ));
                    }
                },
                None => self.inner.poll * 2,
            };
            g = self
                .inner
                .polled
                .wait_timeout(g, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The nodes of running job `id`: from `scontrol show job -d` (CPUs,
    /// GPUs and memory per node), else from its node list and the job's
    /// request.
    fn job_nodes(
        &self,
        id: &str,
        status: &JobStatus,
        job: &SlurmJob,
    ) -> std::result::Result<Vec<NodeAlloc>, String> {
        let detail = self
            .inner
            .cli
            .run(
                "scontrol",
                &["show".into(), "job".into(), "-d".into(), id.into()],
                None,
            )
            .and_then(|t| parse_job_nodes(&t));
        match detail {
            Ok(nodes) if !nodes.is_empty() => Ok(nodes),
            other => {
                let names = expand_hostlist(&status.nodelist)?;
                let cpus = job.cores_per_node.ok_or_else(|| {
                    format!(
                        "the CPUs of Slurm job {id}'s nodes are unknown ({})",
                        other.err().unwrap_or_else(|| "scontrol listed none".into())
                    )
                })?;
                Ok(names
                    .into_iter()
                    .map(|name| NodeAlloc {
                        name,
                        cpus,
                        gpus: (0..job.gpus_per_node.unwrap_or(0)).collect(),
                        mem_mib: 0,
                    })
                    .collect())
            }
        }
    }
}

impl Drop for SlurmProvider {
    fn drop(&mut self) {
        let ours: Vec<String> = {
            let mut g = lock(&self.inner.jobs);
            g.closed = true;
            g.map
                .drain()
                .filter(|(_, j)| j.ours)
                .map(|(id, _)| id)
                .collect()
        };
        self.inner.wake.notify_all();
        self.inner.polled.notify_all();
        if !ours.is_empty() {
            let _ = self.inner.cli.run("scancel", &ours, None);
        }
        if let Some(h) = lock(&self.inner.poller).take() {
            // The poller may drop the last provider itself (ending the last
            // pilot that held it): it then returns on its own.
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

/// The poller: one `squeue` for every tracked job, every `poll`; pilots
/// whose jobs ended are ended.
fn poll_loop(inner: &Inner) {
    loop {
        let ids: Vec<String> = {
            let mut g = lock(&inner.jobs);
            while g.map.is_empty() && !g.closed {
                g = inner.wake.wait(g).unwrap_or_else(PoisonError::into_inner);
            }
            if g.closed {
                return;
            }
            let ids: Vec<String> = g.map.keys().cloned().collect();
            g.stats.squeue_calls += 1;
            g.stats.most_jobs_per_squeue = g.stats.most_jobs_per_squeue.max(ids.len());
            ids
        };
        let args = [
            "-h".to_string(),
            "-t".into(),
            "all".into(),
            "-j".into(),
            ids.join(","),
            "-o".into(),
            SQUEUE_FORMAT.into(),
        ];
        let seen = match inner.cli.run("squeue", &args, None) {
            Ok(out) => Some(parse_squeue(&out)),
            // Every id unknown (squeue fails only when none is known).
            Err(e) if e.contains("Invalid job id") => Some(Vec::new()),
            // slurmctld busy or down: try again at the next poll.
            Err(_) => None,
        };
        let mut ended = Vec::new();
        if let Some(seen) = seen {
            let mut found: HashMap<String, JobStatus> =
                seen.into_iter().map(|s| (s.id.clone(), s)).collect();
            // A job squeue no longer lists (purged): scontrol, then sacct
            // (where accounting is on), else gone.
            for id in &ids {
                if !found.contains_key(id) {
                    let st = inner
                        .cli
                        .run("scontrol", &["show".into(), "job".into(), id.clone()], None)
                        .ok()
                        .and_then(|t| parse_scontrol_state(id, &t))
                        .or_else(|| {
                            let args = ["-n", "-X", "-P", "-o", "State", "-j", id.as_str()];
                            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                            inner
                                .cli
                                .run("sacct", &args, None)
                                .ok()
                                .and_then(|t| parse_sacct_state(id, &t))
                        })
                        .unwrap_or_else(|| JobStatus {
                            id: id.clone(),
                            state: "GONE".into(),
                            reason: "no longer known to Slurm".into(),
                            nodelist: String::new(),
                        });
                    found.insert(id.clone(), st);
                }
            }
            let mut g = lock(&inner.jobs);
            for (id, st) in found {
                let Some(job) = g.map.get_mut(&id) else {
                    continue; // freed meanwhile
                };
                let over = st.is_over();
                job.status = Some(st.clone());
                if over && job.link.is_some() {
                    if let Some(job) = g.map.remove(&id) {
                        ended.push((job.link, st));
                    }
                }
            }
            drop(g);
            inner.polled.notify_all();
        }
        // Outside the lock: ending a pilot frees its allocation (which
        // takes it).
        for (link, st) in ended {
            if let Some(link) = link {
                let (state, reason) = if st.is_timeout() {
                    (
                        PilotState::Done,
                        format!("{}: the walltime ran out", st.describe()),
                    )
                } else {
                    (PilotState::Failed, st.describe())
                };
                link.end(state, reason);
            }
        }
        let g = lock(&inner.jobs);
        if g.closed {
            return;
        }
        drop(
            inner
                .wake
                .wait_timeout(g, inner.poll)
                .unwrap_or_else(PoisonError::into_inner),
        );
    }
}

/// The job this program runs in, from Slurm's environment variables.
fn allocation_from_env(
    get: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<(String, Vec<NodeAlloc>), String> {
    let id = get("SLURM_JOB_ID").or_else(|| get("SLURM_JOBID")).ok_or(
        "SLURM_JOB_ID is not set: this program does not run inside a Slurm allocation \
         (start it under sbatch or salloc, or submit one with PilotDescription::slurm)",
    )?;
    let list = get("SLURM_JOB_NODELIST")
        .or_else(|| get("SLURM_NODELIST"))
        .ok_or("SLURM_JOB_NODELIST is not set")?;
    let names = expand_hostlist(&list)?;
    if names.is_empty() {
        return Err(format!("SLURM_JOB_NODELIST {list:?} names no node"));
    }
    let cpus = match get("SLURM_JOB_CPUS_PER_NODE") {
        Some(spec) => {
            let mut v = expand_counts(&spec)?;
            if v.len() == 1 && names.len() > 1 {
                v = vec![v[0]; names.len()];
            }
            if v.len() != names.len() {
                return Err(format!(
                    "SLURM_JOB_CPUS_PER_NODE {spec:?} has {} entries for {} nodes ({list})",
                    v.len(),
                    names.len()
                ));
            }
            v
        }
        None => {
            let on = get("SLURM_CPUS_ON_NODE")
                .ok_or("neither SLURM_JOB_CPUS_PER_NODE nor SLURM_CPUS_ON_NODE is set")?;
            let n: usize = on
                .trim()
                .parse()
                .map_err(|_| format!("SLURM_CPUS_ON_NODE {on:?} is not a number"))?;
            vec![n; names.len()]
        }
    };
    let gpus: Vec<usize> = match get("SLURM_GPUS_ON_NODE") {
        Some(g) => {
            let n: usize = g
                .trim()
                .parse()
                .map_err(|_| format!("SLURM_GPUS_ON_NODE {g:?} is not a number"))?;
            // The batch node's own indices when Slurm gives them.
            match get("SLURM_JOB_GPUS").map(|s| expand_ids(&s)) {
                Some(Ok(ids)) if ids.len() == n => ids,
                _ => (0..n).collect(),
            }
        }
        None => Vec::new(),
    };
    let mem_mib = get("SLURM_MEM_PER_NODE")
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(0);
    Ok((
        id,
        names
            .into_iter()
            .zip(cpus)
            .map(|(name, cpus)| NodeAlloc {
                name,
                cpus,
                gpus: gpus.clone(),
                mem_mib,
            })
            .collect(),
    ))
}

/// The pilot's nodes from what Slurm allocated.
fn node_specs(nodes: Vec<NodeAlloc>, desc: &PilotDescription) -> Vec<NodeSpec> {
    nodes
        .into_iter()
        .map(|n| NodeSpec {
            cores: n.cpus,
            gpus: n.gpus.len(),
            memory_bytes: if n.mem_mib > 0 {
                n.mem_mib << 20
            } else {
                desc.memory_bytes.unwrap_or(0)
            },
            // The node's own CPU numbers are Slurm's business (srun runs
            // the ranks there); these only count the slots.
            cpu_ids: (0..n.cpus).collect(),
            gpu_ids: n.gpus,
            name: n.name,
        })
        .collect()
}

impl ResourceProvider for SlurmProvider {
    fn name(&self) -> &str {
        "slurm"
    }

    /// Through the plain trait call the job has no pilot to end: it is held
    /// until the provider is dropped. The pilot manager calls
    /// [`allocate`](ResourceProvider::allocate).
    fn acquire(&self, desc: &PilotDescription) -> Result<Vec<NodeSpec>> {
        self.allocate(desc).map(|a| a.nodes)
    }

    fn allocate(&self, desc: &PilotDescription) -> Result<Allocation> {
        let spec = desc.slurm.clone().unwrap_or_default();
        let SlurmPilot {
            job,
            mpi,
            srun_args,
        } = spec;
        let (id, nodes) = match &job {
            Some(job) => self.submit(job)?,
            None => {
                let (id, nodes) =
                    allocation_from_env(&|k| std::env::var(k).ok()).map_err(Self::failed)?;
                self.track(&id, false);
                (id, nodes)
            }
        };
        if let Some(bad) = nodes.iter().find(|n| n.cpus == 0) {
            let reason = format!("Slurm job {id} gave node {} no CPU", bad.name);
            self.free(Some(&id), &[]);
            return Err(Self::failed(reason));
        }
        let srun = |name: &str, mpi: &str| -> Arc<dyn LaunchMethod> {
            Arc::new(
                Srun::in_job(id.clone())
                    .with_mpi(mpi)
                    .with_extra_args(srun_args.iter().cloned())
                    .named(name),
            )
        };
        Ok(Allocation {
            nodes: node_specs(nodes, desc),
            launch_methods: vec![
                ("fork".into(), srun("fork", "none")),
                ("srun".into(), srun("srun", &mpi)),
                ("mpirun".into(), srun("mpirun", &mpi)),
            ],
            id: Some(id),
            remote: true,
        })
    }

    fn free(&self, allocation: Option<&str>, _nodes: &[NodeSpec]) {
        let Some(id) = allocation else { return };
        let ours = lock(&self.inner.jobs).map.remove(id).map(|j| j.ours);
        if ours == Some(true) {
            self.cancel(id);
        }
    }

    fn watch(&self, allocation: &str, pilot: PilotLink) {
        let mut g = lock(&self.inner.jobs);
        if let Some(job) = g.map.get_mut(allocation) {
            job.link = Some(pilot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn allocation_env() {
        let (id, nodes) = allocation_from_env(&env(&[
            ("SLURM_JOB_ID", "77"),
            ("SLURM_JOB_NODELIST", "dn[1-3]"),
            ("SLURM_JOB_CPUS_PER_NODE", "4(x2),2"),
            ("SLURM_GPUS_ON_NODE", "2"),
            ("SLURM_MEM_PER_NODE", "1024"),
        ]))
        .unwrap();
        assert_eq!(id, "77");
        let names: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["dn1", "dn2", "dn3"]);
        assert_eq!(nodes.iter().map(|n| n.cpus).collect::<Vec<_>>(), [4, 4, 2]);
        assert_eq!(nodes[2].gpus, [0, 1]);
        let specs = node_specs(nodes, &PilotDescription::local());
        assert_eq!(specs[0].memory_bytes, 1 << 30);
        assert_eq!(specs[2].cpu_ids, [0, 1]);

        let (_, one) = allocation_from_env(&env(&[
            ("SLURM_JOBID", "5"),
            ("SLURM_NODELIST", "a,b"),
            ("SLURM_CPUS_ON_NODE", "8"),
        ]))
        .unwrap();
        assert_eq!(one.iter().map(|n| n.cpus).collect::<Vec<_>>(), [8, 8]);
        assert!(one[0].gpus.is_empty());
    }

    #[test]
    fn allocation_env_errors() {
        let e = allocation_from_env(&env(&[])).unwrap_err();
        assert!(e.contains("SLURM_JOB_ID is not set"), "{e}");
        let e = allocation_from_env(&env(&[
            ("SLURM_JOB_ID", "1"),
            ("SLURM_JOB_NODELIST", "dn[1-3]"),
            ("SLURM_JOB_CPUS_PER_NODE", "2(x2)"),
        ]))
        .unwrap_err();
        assert!(e.contains("2 entries for 3 nodes"), "{e}");
    }

    #[test]
    fn refusal_without_slurm() {
        // No sbatch here: the pilot fails with the reason, nothing hangs.
        let p = SlurmProvider::new().with_bin_dir("/nonexistent");
        let e = p
            .allocate(&PilotDescription::slurm(SlurmJob::nodes(1)))
            .unwrap_err();
        assert!(
            matches!(&e, PilotError::ResourceFailed { reason, .. } if reason.contains("sbatch refused")),
            "{e}"
        );
        assert_eq!(p.stats().sbatch_calls, 1);
    }
}
