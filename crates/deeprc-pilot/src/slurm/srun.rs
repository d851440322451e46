//! The `srun` launch method: every rank of an executable task on the node
//! the pilot's scheduler placed it on, as one job step of the pilot's job.

use crate::{launch::LaunchMethod, resource::cuda_visible, CommandSpec, LaunchRequest};

/// Variables of srun's own input environment that an enclosing `sbatch` or
/// `salloc` sets and that would constrain a step the pilot places itself
/// (`SLURM_NTASKS_PER_NODE=1` refuses two ranks on one node). The step gets
/// explicit options instead; these are removed from srun's environment.
const CONSTRAINING_VARS: &[&str] = &[
    "SLURM_NTASKS",
    "SLURM_NPROCS",
    "SLURM_NNODES",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_NTASKS_PER_CORE",
    "SLURM_NTASKS_PER_SOCKET",
    "SLURM_NTASKS_PER_GPU",
    "SLURM_NTASKS_PER_TRES",
    "SLURM_CPUS_PER_TASK",
    "SLURM_CPUS_PER_GPU",
    "SLURM_MEM_PER_CPU",
    "SLURM_MEM_PER_NODE",
    "SLURM_MEM_PER_GPU",
    "SLURM_GPUS",
    "SLURM_GPUS_PER_NODE",
    "SLURM_GPUS_PER_TASK",
    "SLURM_GPUS_PER_SOCKET",
    "SLURM_TRES_PER_TASK",
    "SLURM_HOSTFILE",
    "SLURM_DISTRIBUTION",
    "SLURM_EXCLUSIVE",
    "SLURM_EXACT",
    "SLURM_WHOLE",
    "SLURM_SPREAD_JOB",
    "SLURM_THREADS_PER_CORE",
    "SLURM_CPU_BIND",
];

/// `srun` into a Slurm job: one step per task, its ranks on exactly the
/// nodes the pilot placed them on.
///
/// The command is `srun --jobid=J --overlap --mpi=M --ntasks=N --nodes=K
/// --cpus-per-task=C --distribution=arbitrary --nodelist=n0,n1,...
/// --kill-on-bad-exit=1 --job-name=task.NNNNNN <extra args> <program>`: the
/// node list names rank `i`'s node at position `i`, so Slurm puts rank `i`
/// (`SLURM_PROCID`) there. `--overlap` lets the step share the job's CPUs
/// with the pilot's other steps: the pilot's scheduler already keeps them
/// apart, and a step then starts without waiting for Slurm to free the CPUs
/// of the one before. With `--mpi=pmix` (the pilot's `mpirun` on Slurm) an
/// MPI program's ranks form one world across the nodes.
///
/// GPUs: ranks that share the same devices get `CUDA_VISIBLE_DEVICES`;
/// ranks with different ones get theirs through a `/bin/sh` wrapper that
/// reads `SLURM_PROCID`.
///
/// ```
/// use deeprc_pilot::slurm::Srun;
/// let mpi = Srun::in_job("42").with_mpi("pmix").named("mpirun");
/// # let _ = mpi;
/// ```
#[derive(Debug, Clone)]
pub struct Srun {
    name: String,
    program: String,
    job: Option<String>,
    mpi: String,
    extra_args: Vec<String>,
    unset: Vec<String>,
}

impl Default for Srun {
    fn default() -> Self {
        Self::new()
    }
}

impl Srun {
    /// `srun` from `PATH` into the job this process runs in (no
    /// `--jobid`), without MPI (`--mpi=none`), named `srun`.
    pub fn new() -> Self {
        let unset = CONSTRAINING_VARS
            .iter()
            .filter(|v| std::env::var_os(v).is_some())
            .map(|v| v.to_string())
            .collect();
        Self {
            name: "srun".into(),
            program: "srun".into(),
            job: None,
            mpi: "none".into(),
            extra_args: Vec::new(),
            unset,
        }
    }

    /// Steps of job `job` (`--jobid`), from inside or outside of it.
    pub fn in_job(job: impl Into<String>) -> Self {
        Self {
            job: Some(job.into()),
            ..Self::new()
        }
    }

    /// The MPI plugin (`--mpi`: `pmix` for OpenMPI, `pmi2` for MPICH,
    /// `none`).
    pub fn with_mpi(mut self, plugin: impl Into<String>) -> Self {
        self.mpi = plugin.into();
        self
    }

    /// Another srun (a full path).
    pub fn with_program(mut self, program: impl Into<String>) -> Self {
        self.program = program.into();
        self
    }

    /// Arguments added before the program (e.g. `--cpu-bind=cores`).
    pub fn with_extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The name tasks use for it (default `srun`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The job it launches into, if it names one.
    pub fn job(&self) -> Option<&str> {
        self.job.as_deref()
    }

    /// The MPI plugin.
    pub fn mpi(&self) -> &str {
        &self.mpi
    }
}

impl LaunchMethod for Srun {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> Result<(), String> {
        match crate::sys::which(&self.program, None) {
            Some(_) => Ok(()),
            None => Err(format!("{} is not on PATH", self.program)),
        }
    }

    fn commands(&self, req: &LaunchRequest<'_>) -> Result<Vec<CommandSpec>, String> {
        let ranks = &req.placement.ranks;
        let size = ranks.len();
        if size == 0 {
            return Err("the task has no rank".into());
        }
        let mut hosts = String::new();
        let mut distinct: Vec<usize> = Vec::new();
        for (i, r) in ranks.iter().enumerate() {
            let node = req
                .nodes
                .get(r.node)
                .ok_or_else(|| format!("rank {i} is on node {}, which the pilot lacks", r.node))?;
            if i > 0 {
                hosts.push(',');
            }
            hosts.push_str(&node.name);
            if !distinct.contains(&r.node) {
                distinct.push(r.node);
            }
        }
        let cores = ranks[0].cores.len().max(1);
        let mut argv = Vec::with_capacity(16 + self.extra_args.len() + req.argv.len());
        if !self.unset.is_empty() {
            argv.push("env".to_string());
            for v in &self.unset {
                argv.push("-u".into());
                argv.push(v.clone());
            }
        }
        argv.push(self.program.clone());
        if let Some(j) = &self.job {
            argv.push(format!("--jobid={j}"));
        }
        argv.extend([
            "--overlap".to_string(),
            format!("--mpi={}", self.mpi),
            format!("--ntasks={size}"),
            format!("--nodes={}", distinct.len()),
            format!("--cpus-per-task={cores}"),
            "--distribution=arbitrary".to_string(),
            format!("--nodelist={hosts}"),
            "--kill-on-bad-exit=1".to_string(),
            format!("--job-name={}", req.task),
        ]);
        argv.extend(self.extra_args.iter().cloned());
        let mut env = req.env.to_vec();
        let gpu_sets: Vec<String> = ranks.iter().map(|r| cuda_visible(&r.gpus)).collect();
        if gpu_sets.iter().all(|g| g == &gpu_sets[0]) {
            if !gpu_sets[0].is_empty() {
                env.push(("CUDA_VISIBLE_DEVICES".into(), gpu_sets[0].clone()));
            }
        } else {
            // Each rank picks its own devices by its Slurm rank.
            for (i, g) in gpu_sets.iter().enumerate() {
                env.push((format!("DEEPRC_SRUN_GPUS_{i}"), g.clone()));
            }
            let script = "eval \"CUDA_VISIBLE_DEVICES=\\${DEEPRC_SRUN_GPUS_$SLURM_PROCID}\"; \
                          export CUDA_VISIBLE_DEVICES; exec \"$@\""
                .to_string();
            argv.extend(["/bin/sh".to_string(), "-c".into(), script, "sh".into()]);
        }
        argv.extend(req.argv.iter().cloned());
        Ok(vec![CommandSpec {
            argv,
            env,
            ranks: (0..size).collect(),
            // srun runs on this host; its ranks run on their nodes.
            cpus: Vec::new(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GpuShare, NodeSpec, Placement, RankPlacement};
    use deeprc_core::TaskId;

    fn node(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            cores: 2,
            gpus: 2,
            memory_bytes: 0,
            cpu_ids: vec![0, 1],
            gpu_ids: vec![0, 1],
        }
    }

    fn rank(node: usize, gpu: Option<usize>) -> RankPlacement {
        RankPlacement {
            node,
            cores: vec![0],
            gpus: gpu
                .map(|g| GpuShare {
                    gpu: g,
                    device: g,
                    fraction: 1.0,
                })
                .into_iter()
                .collect(),
            memory_bytes: 0,
        }
    }

    fn commands(srun: &Srun, ranks: Vec<RankPlacement>) -> CommandSpec {
        let nodes = vec![node("dn1"), node("dn2")];
        let placement = Placement { ranks };
        let argv = vec!["hostname".to_string()];
        let req = LaunchRequest {
            task: TaskId(7),
            argv: &argv,
            env: &[],
            placement: &placement,
            nodes: &nodes,
            comm: None,
        };
        let mut v = srun.commands(&req).unwrap();
        assert_eq!(v.len(), 1);
        v.pop().unwrap()
    }

    #[test]
    fn ranks_go_to_their_nodes() {
        let mut s = Srun::in_job("42").with_mpi("pmix");
        s.unset.clear();
        let c = commands(&s, vec![rank(0, None), rank(1, None), rank(1, None)]);
        assert_eq!(
            c.argv,
            [
                "srun",
                "--jobid=42",
                "--overlap",
                "--mpi=pmix",
                "--ntasks=3",
                "--nodes=2",
                "--cpus-per-task=1",
                "--distribution=arbitrary",
                "--nodelist=dn1,dn2,dn2",
                "--kill-on-bad-exit=1",
                "--job-name=task.000007",
                "hostname"
            ]
        );
        assert_eq!(c.ranks, [0, 1, 2]);
        assert!(c.cpus.is_empty());
    }

    #[test]
    fn gpus_and_inherited_constraints() {
        let mut s = Srun::in_job("1");
        s.unset = vec!["SLURM_NTASKS_PER_NODE".into()];
        let same = commands(&s, vec![rank(0, Some(1)), rank(1, Some(1))]);
        assert_eq!(&same.argv[..3], ["env", "-u", "SLURM_NTASKS_PER_NODE"]);
        assert!(same
            .env
            .contains(&("CUDA_VISIBLE_DEVICES".into(), "1".into())));
        let differ = commands(&s, vec![rank(0, Some(0)), rank(0, Some(1))]);
        assert!(differ.argv.contains(&"/bin/sh".to_string()));
        assert!(differ
            .env
            .contains(&("DEEPRC_SRUN_GPUS_1".into(), "1".into())));
        assert_eq!(differ.argv.last().unwrap(), "hostname");
    }
}
