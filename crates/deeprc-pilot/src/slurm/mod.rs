//! Pilots on Slurm: the `slurm` resource provider and the `srun` launch
//! method.
//!
//! ```text
//!  this host (a login node, or the first node of the job)      Slurm
//!  ┌──────────────────────────────────────────────┐
//!  │ PilotManager::submit(PilotDescription::slurm) │── sbatch (or SLURM_* of the
//!  │   SlurmProvider ── one poller thread ─────────┼── squeue -j a,b,c   allocation
//!  │                    (every pilot of the session)│   we run in)
//!  │ Agent: scheduler places ranks on the job's     │
//!  │   nodes; srun launch method, one step per task │── srun --jobid=J --overlap
//!  │   (fork -> srun --mpi=none, mpirun -> --mpi=pmix)   --nodelist=dn1,dn2,..  ──> dn1 dn2 ...
//!  │ Pilot::cancel / Session::close ────────────────┼── scancel J
//!  └──────────────────────────────────────────────┘
//! ```
//!
//! - [`PilotDescription::slurm`] submits a job with `sbatch` ([`SlurmJob`]:
//!   nodes, cores and GPUs per node, memory, walltime, partition, account,
//!   extra directives) whose batch script only holds the allocation;
//!   `PilotManager::submit` returns once it runs (the pilot is then
//!   ACTIVE), or fails with [`PilotError::ResourceFailed`] and Slurm's
//!   reason when `sbatch` refuses it, it ends before it runs, or it pends
//!   for a reason that never clears (`PartitionNodeLimit`).
//! - [`PilotDescription::slurm_allocation`] uses the allocation this
//!   program runs in (`SLURM_JOB_ID`, `SLURM_JOB_NODELIST`,
//!   `SLURM_JOB_CPUS_PER_NODE`, `SLURM_GPUS_ON_NODE`), from `sbatch` or
//!   `salloc`.
//! - The session's one [`SlurmProvider`] polls all its jobs with one
//!   `squeue` call per poll; a job that is cancelled or reaches its
//!   walltime ends its pilot (FAILED, or DONE at the walltime) with Slurm's
//!   reason in `Pilot::end_reason`, and its tasks end with a final state.
//! - Executables run with [`Srun`]: one job step per task, each rank on the
//!   node the pilot's scheduler placed it on.
//!
//! - Function tasks run as worker processes that one `srun` starts on
//!   their ranks' nodes, with a tcp communicator across the nodes (or MPI
//!   under the pilot's `mpirun`); see docs/pilot-slurm.md.
//!
//! Not yet (issue 10): an agent per node (every task costs one `srun`; no
//! worker pools or thread ranks there), the TCP control plane, and node
//! faults beyond the job's own end.

mod cli;
mod provider;
mod srun;

pub use deeprc_core::hostlist::{expand_counts, expand_hostlist, MAX_HOSTS};
pub use provider::{SlurmProvider, SlurmStats};
pub use srun::Srun;

use crate::PilotDescription;
use std::{path::PathBuf, time::Duration};

/// What a Slurm pilot runs in, and how it launches
/// ([`PilotDescription::slurm`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmPilot {
    /// A job to submit with `sbatch`; `None`: the allocation this program
    /// runs in.
    pub job: Option<SlurmJob>,
    /// The MPI plugin of the pilot's `mpirun` and `srun` launch methods
    /// (`srun --mpi=`; default `pmix`, what OpenMPI needs; MPICH wants
    /// `pmi2`). `fork` uses `--mpi=none`.
    pub mpi: String,
    /// Extra `srun` arguments of every task (before the program).
    pub srun_args: Vec<String>,
}

impl Default for SlurmPilot {
    fn default() -> Self {
        Self {
            job: None,
            mpi: "pmix".into(),
            srun_args: Vec::new(),
        }
    }
}

/// A Slurm job to hold a pilot's nodes, submitted with `sbatch`.
///
/// ```
/// use deeprc_pilot::{slurm::SlurmJob, PilotDescription};
/// use std::time::Duration;
/// let desc = PilotDescription::slurm(
///     SlurmJob::nodes(2)
///         .cores_per_node(4)
///         .walltime(Duration::from_secs(30 * 60))
///         .partition("debug")
///         .directive("--qos=short"),
/// );
/// assert_eq!(desc.resource, "slurm");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmJob {
    /// Nodes (`--nodes`).
    pub nodes: usize,
    /// Cores per node (`--ntasks-per-node`); `None`: whole nodes
    /// (`--exclusive`).
    pub cores_per_node: Option<usize>,
    /// GPUs per node (`--gpus-per-node`).
    pub gpus_per_node: Option<usize>,
    /// Memory per node in bytes (`--mem`, rounded up to MiB).
    pub memory_per_node: Option<u64>,
    /// The walltime (`--time`, rounded up to whole minutes, Slurm's unit).
    pub walltime: Option<Duration>,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--job-name` (default `deeprc-pilot`).
    pub job_name: String,
    /// More `sbatch` options, one argument each (`--qos=debug`,
    /// `--constraint=gpu`, `--reservation=r1`).
    pub directives: Vec<String>,
    /// Where the batch script's output goes (`--output`; default
    /// `/dev/null`: the script only holds the allocation).
    pub output: Option<PathBuf>,
    /// How long to wait for the job to start before cancelling it and
    /// failing the pilot (default: as long as it takes).
    pub queue_timeout: Option<Duration>,
}

impl SlurmJob {
    /// A job of `n` nodes.
    pub fn nodes(n: usize) -> Self {
        Self {
            nodes: n,
            cores_per_node: None,
            gpus_per_node: None,
            memory_per_node: None,
            walltime: None,
            partition: None,
            account: None,
            job_name: "deeprc-pilot".into(),
            directives: Vec::new(),
            output: None,
            queue_timeout: None,
        }
    }

    /// Sets the cores per node.
    pub fn cores_per_node(mut self, n: usize) -> Self {
        self.cores_per_node = Some(n);
        self
    }

    /// Sets the GPUs per node.
    pub fn gpus_per_node(mut self, n: usize) -> Self {
        self.gpus_per_node = Some(n);
        self
    }

    /// Sets the memory per node in bytes.
    pub fn memory_per_node(mut self, bytes: u64) -> Self {
        self.memory_per_node = Some(bytes);
        self
    }

    /// Sets the walltime.
    pub fn walltime(mut self, d: Duration) -> Self {
        self.walltime = Some(d);
        self
    }

    /// Sets the partition.
    pub fn partition(mut self, p: impl Into<String>) -> Self {
        self.partition = Some(p.into());
        self
    }

    /// Sets the account.
    pub fn account(mut self, a: impl Into<String>) -> Self {
        self.account = Some(a.into());
        self
    }

    /// Sets the job name.
    pub fn job_name(mut self, n: impl Into<String>) -> Self {
        self.job_name = n.into();
        self
    }

    /// Adds an `sbatch` option (one argument, e.g. `--qos=debug`).
    pub fn directive(mut self, d: impl Into<String>) -> Self {
        self.directives.push(d.into());
        self
    }

    /// Sets where the batch script's output goes.
    pub fn output(mut self, path: impl Into<PathBuf>) -> Self {
        self.output = Some(path.into());
        self
    }

    /// Sets how long the job may wait in the queue.
    pub fn queue_timeout(mut self, d: Duration) -> Self {
        self.queue_timeout = Some(d);
        self
    }

    /// The `sbatch` arguments (the batch script comes on stdin).
    pub fn sbatch_args(&self) -> Result<Vec<String>, String> {
        if self.nodes == 0 {
            return Err("a Slurm job needs at least one node".into());
        }
        let mut a = vec![
            "--parsable".to_string(),
            format!("--job-name={}", self.job_name),
            format!("--nodes={}", self.nodes),
        ];
        match self.cores_per_node {
            Some(0) => return Err("cores_per_node must be at least 1".into()),
            Some(c) => a.push(format!("--ntasks-per-node={c}")),
            None => a.push("--exclusive".into()),
        }
        if let Some(g) = self.gpus_per_node.filter(|&g| g > 0) {
            a.push(format!("--gpus-per-node={g}"));
        }
        if let Some(m) = self.memory_per_node {
            a.push(format!("--mem={}M", m.div_ceil(1 << 20).max(1)));
        }
        if let Some(w) = self.walltime {
            a.push(format!("--time={}", w.as_secs().div_ceil(60).max(1)));
        }
        if let Some(p) = &self.partition {
            a.push(format!("--partition={p}"));
        }
        if let Some(acct) = &self.account {
            a.push(format!("--account={acct}"));
        }
        a.push(format!(
            "--output={}",
            self.output
                .as_ref()
                .map_or_else(|| "/dev/null".to_string(), |p| p.display().to_string())
        ));
        a.extend(self.directives.iter().cloned());
        Ok(a)
    }
}

/// The batch script of a submitted pilot: it holds the allocation until
/// the pilot cancels the job or the walltime ends it (tasks are launched
/// into the job with `srun --jobid` from the pilot's host).
pub(crate) const BATCH_SCRIPT: &str = "#!/bin/sh\n\
# deeprc-pilot: holds this allocation; the pilot launches its tasks into it with srun.\n\
while :; do sleep 3600; done\n";

impl PilotDescription {
    /// A pilot on a Slurm job submitted with `sbatch` (resource `slurm`).
    pub fn slurm(job: SlurmJob) -> Self {
        Self {
            resource: "slurm".into(),
            slurm: Some(SlurmPilot {
                job: Some(job),
                ..SlurmPilot::default()
            }),
            ..Self::local()
        }
    }

    /// A pilot on the Slurm allocation this program runs in (inside
    /// `sbatch` or `salloc`: `SLURM_JOB_ID` is set).
    pub fn slurm_allocation() -> Self {
        Self {
            resource: "slurm".into(),
            slurm: Some(SlurmPilot::default()),
            ..Self::local()
        }
    }

    /// Sets the MPI plugin of a Slurm pilot's `mpirun` and `srun` (see
    /// [`SlurmPilot::mpi`]).
    pub fn slurm_mpi(mut self, plugin: impl Into<String>) -> Self {
        self.slurm.get_or_insert_with(SlurmPilot::default).mpi = plugin.into();
        self
    }

    /// Adds `srun` arguments to every task of a Slurm pilot.
    pub fn srun_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.slurm
            .get_or_insert_with(SlurmPilot::default)
            .srun_args
            .extend(args.into_iter().map(Into::into));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_arguments() {
        let a = SlurmJob::nodes(2)
            .cores_per_node(4)
            .gpus_per_node(1)
            .memory_per_node(3 << 30)
            .walltime(Duration::from_secs(61))
            .partition("debug")
            .account("proj")
            .directive("--qos=short")
            .sbatch_args()
            .unwrap();
        assert_eq!(
            a,
            [
                "--parsable",
                "--job-name=deeprc-pilot",
                "--nodes=2",
                "--ntasks-per-node=4",
                "--gpus-per-node=1",
                "--mem=3072M",
                "--time=2",
                "--partition=debug",
                "--account=proj",
                "--output=/dev/null",
                "--qos=short"
            ]
        );
        let whole = SlurmJob::nodes(1).sbatch_args().unwrap();
        assert!(whole.contains(&"--exclusive".to_string()));
        assert!(SlurmJob::nodes(0).sbatch_args().is_err());
        assert!(SlurmJob::nodes(1).cores_per_node(0).sbatch_args().is_err());
    }

    #[test]
    fn descriptions() {
        let d = PilotDescription::slurm(SlurmJob::nodes(3)).slurm_mpi("pmi2");
        assert_eq!(d.resource, "slurm");
        let s = d.slurm.unwrap();
        assert_eq!(s.job.unwrap().nodes, 3);
        assert_eq!(s.mpi, "pmi2");
        let a = PilotDescription::slurm_allocation().srun_args(["--cpu-bind=cores"]);
        assert!(a.slurm.as_ref().unwrap().job.is_none());
        assert_eq!(a.slurm.unwrap().srun_args, ["--cpu-bind=cores"]);
    }
}
