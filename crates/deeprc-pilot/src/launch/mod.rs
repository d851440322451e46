//! Launch methods: how the processes of an executable task are started.
//!
//! A [`LaunchMethod`] turns a placed task into the command lines to run:
//! [`Fork`] starts one process per rank, [`Mpirun`] one `mpirun` for all
//! ranks; `srun` will be one more implementation. The executor spawns the
//! commands (`posix_spawn` through `std::process::Command`), pins them by
//! spawning from a thread pinned to their CPUs, captures their output into
//! the task's sandbox and reaps them with one waiter thread.
//!
//! Function tasks do not go through a launch method unless they run under
//! `mpirun`: they run on the agent's rank threads or in its worker
//! processes.

pub(crate) mod pool;
pub(crate) mod process;
pub(crate) mod threads;

use crate::{resource::cuda_visible, NodeSpec, Placement};
use deeprc_core::TaskId;
use std::{fmt, sync::OnceLock};

/// The rendezvous a multi-rank task's processes use to build a `tcp`
/// communicator (`DEEPRC_STORE`, `DEEPRC_TOKEN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommEnv {
    /// The store (`host:port` or a directory).
    pub store: String,
    /// The per-task secret.
    pub token: String,
}

/// What a launch method is asked to start.
#[derive(Debug)]
pub struct LaunchRequest<'a> {
    /// The task.
    pub task: TaskId,
    /// The program and its arguments.
    pub argv: &'a [String],
    /// The task's own environment variables.
    pub env: &'a [(String, String)],
    /// Where each rank was placed.
    pub placement: &'a Placement,
    /// The pilot's nodes.
    pub nodes: &'a [NodeSpec],
    /// The rendezvous for multi-rank tasks (`None` for one rank).
    pub comm: Option<&'a CommEnv>,
}

impl LaunchRequest<'_> {
    /// The operating-system CPUs of rank `r`.
    pub fn cpus_of(&self, r: usize) -> Vec<usize> {
        let p = &self.placement.ranks[r];
        let node = &self.nodes[p.node];
        p.cores.iter().map(|&c| node.cpu_ids[c]).collect()
    }
}

/// One process to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Environment variables added to the inherited ones.
    pub env: Vec<(String, String)>,
    /// The ranks this process stands for (one for `fork`, all for
    /// `mpirun`).
    pub ranks: Vec<usize>,
    /// The CPUs the process is pinned to (empty: not pinned).
    pub cpus: Vec<usize>,
}

/// Builds the command lines of an executable task (see the module docs).
///
/// The agent checks what [`commands`](Self::commands) returns: at least
/// one command, each with a program (a non-empty `argv[0]`), and every rank
/// of the placement in exactly one command's `ranks`. A method that
/// returns anything else, an `Err` or panics fails the task with
/// [`FailReason::LaunchMethod`](crate::FailReason::LaunchMethod).
pub trait LaunchMethod: Send + Sync + fmt::Debug {
    /// The name task descriptions use (`fork`, `mpirun`).
    fn name(&self) -> &str;
    /// Checks, once per submission, that the method can run here.
    fn check(&self) -> Result<(), String>;
    /// Whether the ranks of one task may run on different nodes.
    fn spans_nodes(&self) -> bool {
        true
    }
    /// The processes to start.
    fn commands(&self, req: &LaunchRequest<'_>) -> Result<Vec<CommandSpec>, String>;
}

/// Why `specs` cannot start the `ranks` ranks of a task, if they cannot (see
/// [`LaunchMethod`]).
pub(crate) fn check_commands(specs: &[CommandSpec], ranks: usize) -> Result<(), String> {
    if specs.is_empty() {
        return Err("it returned no command".to_string());
    }
    let mut covered = vec![false; ranks];
    for (i, spec) in specs.iter().enumerate() {
        if spec.argv.first().is_none_or(|p| p.is_empty()) {
            return Err(format!("command {i} has an empty argv"));
        }
        if spec.ranks.is_empty() {
            return Err(format!("command {i} stands for no rank"));
        }
        for &r in &spec.ranks {
            match covered.get_mut(r) {
                None => return Err(format!("command {i} names rank {r} of {ranks}")),
                Some(true) => return Err(format!("rank {r} is in two commands")),
                Some(c) => *c = true,
            }
        }
    }
    match covered.iter().position(|c| !c) {
        Some(r) => Err(format!("no command runs rank {r} of {ranks}")),
        None => Ok(()),
    }
}

/// One process per rank, started directly. A multi-rank task's processes
/// find each other through `DEEPRC_RANK`, `DEEPRC_WORLD_SIZE`,
/// `DEEPRC_STORE` and `DEEPRC_TOKEN` (what `TcpComm::from_env` reads).
/// Ranks with GPUs get `CUDA_VISIBLE_DEVICES`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fork;

impl LaunchMethod for Fork {
    fn name(&self) -> &str {
        "fork"
    }

    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    fn commands(&self, req: &LaunchRequest<'_>) -> Result<Vec<CommandSpec>, String> {
        let size = req.placement.ranks.len();
        Ok((0..size)
            .map(|r| {
                let mut env = req.env.to_vec();
                if let Some(c) = req.comm {
                    env.push(("DEEPRC_RANK".into(), r.to_string()));
                    env.push(("DEEPRC_WORLD_SIZE".into(), size.to_string()));
                    env.push(("DEEPRC_STORE".into(), c.store.clone()));
                    env.push(("DEEPRC_TOKEN".into(), c.token.clone()));
                }
                let gpus = &req.placement.ranks[r].gpus;
                if !gpus.is_empty() {
                    env.push(("CUDA_VISIBLE_DEVICES".into(), cuda_visible(gpus)));
                }
                CommandSpec {
                    argv: req.argv.to_vec(),
                    env,
                    ranks: vec![r],
                    cpus: req.cpus_of(r),
                }
            })
            .collect())
    }
}

/// `mpirun -np N` for all ranks at once (OpenMPI or MPICH's hydra). The
/// process is pinned to the union of the ranks' CPUs and OpenMPI is told
/// `--bind-to none`, so the ranks inherit that mask.
#[derive(Debug, Default)]
pub struct Mpirun {
    /// The launcher (default `mpirun`).
    pub program: Option<String>,
    /// Extra arguments placed before the program.
    pub extra_args: Vec<String>,
    flavor: OnceLock<Result<MpiFlavor, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MpiFlavor {
    OpenMpi,
    Other,
}

impl Mpirun {
    /// `mpirun` from `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Another launcher (`mpiexec.mpich`, a full path).
    pub fn with_program(mut self, program: impl Into<String>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Adds launcher arguments placed before the program (e.g.
    /// `--allow-run-as-root` for OpenMPI).
    pub fn with_extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    fn program(&self) -> &str {
        self.program.as_deref().unwrap_or("mpirun")
    }

    fn flavor(&self) -> Result<MpiFlavor, String> {
        self.flavor
            .get_or_init(|| {
                let program = self.program();
                let found = crate::sys::which(program, None)
                    .ok_or_else(|| format!("{program} is not on PATH"))?;
                let out = std::process::Command::new(&found)
                    .arg("--version")
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map_err(|e| format!("running {} --version: {e}", found.display()))?;
                let text = String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr);
                Ok(if text.contains("Open MPI") || text.contains("OpenRTE") {
                    MpiFlavor::OpenMpi
                } else {
                    MpiFlavor::Other
                })
            })
            .clone()
    }
}

impl LaunchMethod for Mpirun {
    fn name(&self) -> &str {
        "mpirun"
    }

    fn check(&self) -> Result<(), String> {
        self.flavor().map(|_| ())
    }

    fn commands(&self, req: &LaunchRequest<'_>) -> Result<Vec<CommandSpec>, String> {
        let flavor = self.flavor()?;
        let size = req.placement.ranks.len();
        let mut argv = vec![self.program().to_string(), "-np".into(), size.to_string()];
        if flavor == MpiFlavor::OpenMpi {
            argv.extend(["--oversubscribe".into(), "--bind-to".into(), "none".into()]);
            for (k, _) in req.env {
                argv.extend(["-x".into(), k.clone()]);
            }
        }
        argv.extend(self.extra_args.iter().cloned());
        argv.extend(req.argv.iter().cloned());
        let mut env = req.env.to_vec();
        let gpus: Vec<_> = req
            .placement
            .ranks
            .iter()
            .flat_map(|r| r.gpus.iter().copied())
            .collect();
        if !gpus.is_empty() {
            let mut seen = Vec::new();
            let unique: Vec<_> = gpus
                .into_iter()
                .filter(|g| {
                    let new = !seen.contains(&g.device);
                    seen.push(g.device);
                    new
                })
                .collect();
            env.push(("CUDA_VISIBLE_DEVICES".into(), cuda_visible(&unique)));
        }
        let mut cpus: Vec<usize> = (0..size).flat_map(|r| req.cpus_of(r)).collect();
        cpus.sort_unstable();
        cpus.dedup();
        Ok(vec![CommandSpec {
            argv,
            env,
            ranks: (0..size).collect(),
            cpus,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GpuShare, RankPlacement};

    #[test]
    fn fork_sets_rank_env_and_gpus() {
        let nodes = vec![NodeSpec {
            name: "n".into(),
            cores: 2,
            gpus: 1,
            memory_bytes: 0,
            cpu_ids: vec![5, 7],
            gpu_ids: vec![3],
        }];
        let placement = Placement {
            ranks: (0..2)
                .map(|r| RankPlacement {
                    node: 0,
                    cores: vec![r],
                    gpus: vec![GpuShare {
                        gpu: 0,
                        device: 3,
                        fraction: 0.5,
                    }],
                    memory_bytes: 0,
                })
                .collect(),
        };
        let comm = CommEnv {
            store: "/tmp/s".into(),
            token: "tok".into(),
        };
        let argv = vec!["prog".to_string()];
        let req = LaunchRequest {
            task: TaskId(1),
            argv: &argv,
            env: &[],
            placement: &placement,
            nodes: &nodes,
            comm: Some(&comm),
        };
        let cmds = Fork.commands(&req).unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[1].cpus, vec![7]);
        assert!(cmds[1].env.contains(&("DEEPRC_RANK".into(), "1".into())));
        assert!(cmds[1]
            .env
            .contains(&("CUDA_VISIBLE_DEVICES".into(), "3".into())));
    }
}
