//! Running Slurm's commands (`sbatch`, `squeue`, `scancel`, `scontrol`) and
//! reading what they print.

use deeprc_core::hostlist::{count_ids, expand_hostlist, expand_ids};
use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

/// Where Slurm's programs are: on `PATH`, or in one directory.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cli {
    pub(crate) bin_dir: Option<PathBuf>,
}

impl Cli {
    /// The path (or bare name) of a Slurm program.
    pub(crate) fn program(&self, name: &str) -> String {
        match &self.bin_dir {
            Some(d) => d.join(name).display().to_string(),
            None => name.to_string(),
        }
    }

    /// Runs `name args`, with `stdin` fed to it; its stdout, or an error
    /// naming the command with its stderr.
    pub(crate) fn run(
        &self,
        name: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<String, String> {
        let prog = self.program(name);
        let shown = || format!("{prog} {}", args.join(" "));
        let mut child = Command::new(&prog)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running {}: {e}", shown()))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .map_err(|e| format!("writing to {}: {e}", shown()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for {}: {e}", shown()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let msg = stderr.trim();
            Err(if msg.is_empty() {
                format!("{} failed ({})", shown(), out.status)
            } else {
                msg.to_string()
            })
        }
    }
}

/// The `squeue -o` format the poller asks for, and [`parse_squeue`] reads.
pub(crate) const SQUEUE_FORMAT: &str = "%i|%T|%r|%N";

/// One job as `squeue` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobStatus {
    pub(crate) id: String,
    /// `PENDING`, `RUNNING`, `TIMEOUT`, ...
    pub(crate) state: String,
    /// The pending reason, or why it ended (`TimeLimit`, `None`).
    pub(crate) reason: String,
    /// Its nodes (a compressed host list; empty while pending).
    pub(crate) nodelist: String,
}

impl JobStatus {
    /// Pending or starting: not running yet, not ended.
    pub(crate) fn is_waiting(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PENDING"
                | "CONFIGURING"
                | "REQUEUED"
                | "REQUEUE_FED"
                | "REQUEUE_HOLD"
                | "RESIZING"
                | "SUSPENDED"
                | "RESV_DEL_HOLD"
                | "SIGNALING"
                | "STAGE_OUT"
        )
    }

    /// Running: its nodes can be used.
    pub(crate) fn is_running(&self) -> bool {
        self.state == "RUNNING"
    }

    /// `TIMEOUT` or `DEADLINE`, or completing for its time limit: it
    /// reached its time.
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self.state.as_str(), "TIMEOUT" | "DEADLINE")
            || (self.state == "COMPLETING" && self.reason == "TimeLimit")
    }

    /// Ended, and why is known: not running, not waiting, and not
    /// `COMPLETING` (squeue shows that, not the final state, while the
    /// job's processes are being killed) unless for its time limit.
    pub(crate) fn is_over(&self) -> bool {
        !self.is_running()
            && !self.is_waiting()
            && (self.state != "COMPLETING" || self.is_timeout())
    }

    /// Why it is not running, in words for a pilot's reason.
    pub(crate) fn describe(&self) -> String {
        if self.reason.is_empty() || self.reason == "None" {
            format!("Slurm job {} is {}", self.id, self.state)
        } else {
            format!("Slurm job {} is {} ({})", self.id, self.state, self.reason)
        }
    }
}

/// Pending reasons of a job that will not run unless an administrator
/// changes the cluster or the job: a pilot waiting for one fails at once.
pub(crate) const HOPELESS_REASONS: &[&str] = &[
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "PartitionConfig",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "AccountNotAllowed",
    "QOSNotAllowed",
    "DependencyNeverSatisfied",
    "FrontEndDown",
];

/// Reads `squeue -h -o "%i|%T|%r|%N"` lines.
pub(crate) fn parse_squeue(out: &str) -> Vec<JobStatus> {
    out.lines()
        .filter_map(|line| {
            let mut f = line.trim().splitn(4, '|');
            let id = f.next()?.trim();
            if id.is_empty() {
                return None;
            }
            Some(JobStatus {
                id: id.to_string(),
                state: f.next()?.trim().to_string(),
                reason: f.next().unwrap_or("").trim().to_string(),
                nodelist: f.next().unwrap_or("").trim().to_string(),
            })
        })
        .collect()
}

/// Reads `sbatch --parsable`'s answer: `12345` or `12345;cluster`.
pub(crate) fn parse_sbatch(out: &str) -> Result<String, String> {
    let id = out.trim().split(';').next().unwrap_or("").trim();
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        Ok(id.to_string())
    } else {
        Err(format!("sbatch answered {:?}, not a job id", out.trim()))
    }
}

/// One node of a running job, from `scontrol show job -d`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeAlloc {
    pub(crate) name: String,
    pub(crate) cpus: usize,
    /// The GPU indices Slurm gave the job there (`GRES=gpu:2(IDX:0-1)`).
    pub(crate) gpus: Vec<usize>,
    /// Memory in MiB (`Mem=`; 0 when not accounted).
    pub(crate) mem_mib: u64,
}

/// Reads the per-node lines of `scontrol show job -d` (`Nodes=dn[1-2]
/// CPU_IDs=0-1 Mem=0 GRES=gpu:1(IDX:0)`), one entry per node.
pub(crate) fn parse_job_nodes(text: &str) -> Result<Vec<NodeAlloc>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("Nodes=") else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let hosts = fields.next().unwrap_or("");
        let (mut cpus, mut gpus, mut mem) = (None, Vec::new(), 0);
        for f in fields {
            if let Some(ids) = f.strip_prefix("CPU_IDs=") {
                cpus = Some(count_ids(ids)?);
            } else if let Some(m) = f.strip_prefix("Mem=") {
                mem = m.parse().unwrap_or(0);
            } else if let Some(g) = f.strip_prefix("GRES=") {
                gpus = gres_gpu_indices(g)?;
            }
        }
        let cpus = cpus.ok_or_else(|| format!("no CPU_IDs in {line:?}"))?;
        for name in expand_hostlist(hosts)? {
            out.push(NodeAlloc {
                name,
                cpus,
                gpus: gpus.clone(),
                mem_mib: mem,
            });
        }
    }
    Ok(out)
}

/// The GPU indices of a `GRES=` field: `gpu:2(IDX:0-1)`,
/// `gpu:a100:1(IDX:3),shard:0`, or none.
fn gres_gpu_indices(gres: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    let mut rest = gres;
    while let Some(at) = rest.find("gpu") {
        let tail = &rest[at..];
        let Some(open) = tail.find("(IDX:") else {
            break;
        };
        let close = tail[open..]
            .find(')')
            .map(|c| open + c)
            .ok_or_else(|| format!("bad GRES {gres:?}"))?;
        let ids = &tail[open + 5..close];
        if ids != "N/A" {
            out.extend(expand_ids(ids)?);
        }
        rest = &tail[close..];
    }
    Ok(out)
}

/// `JobState=` and `Reason=` of `scontrol show job` (for a job `squeue` no
/// longer lists).
pub(crate) fn parse_scontrol_state(id: &str, text: &str) -> Option<JobStatus> {
    let field = |key: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    Some(JobStatus {
        id: id.to_string(),
        state: field("JobState=")?,
        reason: field("Reason=").unwrap_or_default(),
        nodelist: field("NodeList=")
            .filter(|n| n != "(null)")
            .unwrap_or_default(),
    })
}

/// The first line of `sacct -n -X -P -o State -j ID` (`CANCELLED by 0`,
/// `TIMEOUT`), for a job slurmctld has forgotten.
pub(crate) fn parse_sacct_state(id: &str, text: &str) -> Option<JobStatus> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let (state, reason) = line.split_once(' ').unwrap_or((line, ""));
    Some(JobStatus {
        id: id.to_string(),
        state: state.to_string(),
        reason: reason.trim().to_string(),
        nodelist: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines() {
        let v = parse_squeue(
            "12|RUNNING|None|dn[1-2]\n13|PENDING|PartitionNodeLimit|\n\n14|TIMEOUT|TimeLimit|dn3\n",
        );
        assert_eq!(v.len(), 3);
        assert!(v[0].is_running());
        assert_eq!(v[0].nodelist, "dn[1-2]");
        assert!(v[1].is_waiting());
        assert!(HOPELESS_REASONS.contains(&v[1].reason.as_str()));
        assert!(v[2].is_timeout() && v[2].is_over());
        let ending = |reason: &str| JobStatus {
            id: "1".into(),
            state: "COMPLETING".into(),
            reason: reason.into(),
            nodelist: String::new(),
        };
        assert!(!ending("None").is_over());
        assert!(ending("TimeLimit").is_over() && ending("TimeLimit").is_timeout());
        assert_eq!(v[2].describe(), "Slurm job 14 is TIMEOUT (TimeLimit)");
    }

    #[test]
    fn sbatch_answers() {
        assert_eq!(parse_sbatch("42\n").unwrap(), "42");
        assert_eq!(parse_sbatch("42;netns\n").unwrap(), "42");
        assert!(parse_sbatch("Submitted batch job 42").is_err());
    }

    #[test]
    fn job_nodes() {
        let text = "JobId=8 JobName=x\n   NumNodes=3 NumCPUs=5\n     Nodes=dn[1-2] CPU_IDs=0-1 Mem=0 GRES=\n     Nodes=dn3 CPU_IDs=0 Mem=512 GRES=gpu:2(IDX:0-1)\n";
        let n = parse_job_nodes(text).unwrap();
        assert_eq!(n.len(), 3);
        assert_eq!((n[0].name.as_str(), n[0].cpus), ("dn1", 2));
        assert_eq!(
            (n[2].name.as_str(), n[2].cpus, n[2].mem_mib),
            ("dn3", 1, 512)
        );
        assert_eq!(n[2].gpus, [0, 1]);
        assert_eq!(
            gres_gpu_indices("gpu:a100:1(IDX:3),gpu:v100:2(IDX:5-6)").unwrap(),
            [3, 5, 6]
        );
        assert!(gres_gpu_indices("(null)").unwrap().is_empty());
    }

    #[test]
    fn sacct_state() {
        let s = parse_sacct_state("3", "CANCELLED by 0\n").unwrap();
        assert_eq!((s.state.as_str(), s.reason.as_str()), ("CANCELLED", "by 0"));
        assert!(s.is_over());
        assert!(parse_sacct_state("3", "\n").is_none());
    }

    #[test]
    fn scontrol_state() {
        let s = parse_scontrol_state(
            "9",
            "JobId=9 JobName=x\n   JobState=TIMEOUT Reason=TimeLimit Dependency=(null)\n   NodeList=dn3",
        )
        .unwrap();
        assert_eq!(s.state, "TIMEOUT");
        assert_eq!(s.reason, "TimeLimit");
        assert_eq!(s.nodelist, "dn3");
    }
}
