//! Where a process rank learns its place in the job: Deep RC's own
//! variables (`DEEPRC_*`, set by deeprc-pilot), or those of the launcher
//! that started it (Slurm's `srun`, torchrun, OpenMPI's `mpirun`), so that
//! [`TcpComm::from_env`](crate::tcp::TcpComm::from_env) needs nothing else
//! under `srun`.
//!
//! | | rank, size | store | token |
//! |---|---|---|---|
//! | Deep RC | `DEEPRC_RANK`, `DEEPRC_WORLD_SIZE` | `DEEPRC_STORE` | `DEEPRC_TOKEN` |
//! | srun | `SLURM_PROCID`, `SLURM_NTASKS` | the step's first node, a port from the job and step ids | the user's token file |
//! | torchrun | `RANK`, `WORLD_SIZE` | `MASTER_ADDR`, `MASTER_PORT` + 1 | the user's token file |
//! | mpirun | `OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE` | `DEEPRC_STORE` (required) | the user's token file |
//!
//! A `DEEPRC_*` variable that is set always wins. The user's token file is
//! `DEEPRC_TOKEN_FILE` or `~/.deeprc/token`: created owner-only (a fresh
//! random secret) by the first rank that finds none, read by the others
//! through the shared home folder every cluster has; one that others may
//! read is refused. Each rank listens on, and advertises, the address of
//! the interface that routes to the store, unless `DEEPRC_BIND` or
//! `DEEPRC_ADVERTISE` say otherwise.

use crate::{CommError, Result};
use deeprc_core::hostlist::expand_hostlist;
use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
};

/// The launcher whose variables gave a rank its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// `DEEPRC_RANK` and `DEEPRC_WORLD_SIZE` (deeprc-pilot, or by hand).
    Deeprc,
    /// Slurm's `srun` (`SLURM_PROCID`, `SLURM_NTASKS`).
    Slurm,
    /// PyTorch's torchrun (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`).
    Torchrun,
    /// OpenMPI's `mpirun` (`OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`).
    OpenMpi,
}

/// A rank's place in its job, as its launcher described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Whose variables these are.
    pub launcher: Launcher,
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
    /// The rendezvous store (`host:port` or a shared folder).
    pub store: String,
    /// The job token.
    pub token: String,
}

/// Reads the environment variable `name`, `None` when unset or empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number(name: &str, value: &str) -> Result<usize> {
    value
        .trim()
        .parse()
        .map_err(|e| CommError::config(name, format!("cannot parse {value:?}: {e}")))
}

impl Placement {
    /// The place of this process, from its environment (see the module
    /// documentation for which variables each launcher sets).
    ///
    /// ```no_run
    /// // In a rank started by `srun -N2 -n4 ./prog`, with nothing else set:
    /// let p = deeprc_comm::launcher::Placement::from_env()?;
    /// println!("rank {} of {} via {:?}, store {}", p.rank, p.size, p.launcher, p.store);
    /// # Ok::<(), deeprc_comm::CommError>(())
    /// ```
    ///
    /// # Errors
    /// [`CommError::Config`] naming the variable that is missing or
    /// malformed, when no launcher's variables are complete; a first node
    /// whose address cannot be found; a token file that others may read.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(&var)
    }

    /// [`Placement::from_env`] over any variable lookup (tests).
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let (launcher, rank_var, size_var) = if env("DEEPRC_RANK").is_some() {
            (Launcher::Deeprc, "DEEPRC_RANK", "DEEPRC_WORLD_SIZE")
        } else if env("SLURM_PROCID").is_some() && env("SLURM_STEP_ID").is_some() {
            (Launcher::Slurm, "SLURM_PROCID", "SLURM_NTASKS")
        } else if env("RANK").is_some() && env("MASTER_ADDR").is_some() {
            (Launcher::Torchrun, "RANK", "WORLD_SIZE")
        } else if env("OMPI_COMM_WORLD_RANK").is_some() {
            (
                Launcher::OpenMpi,
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_SIZE",
            )
        } else {
            return Err(CommError::config(
                "DEEPRC_RANK",
                "is not set, and neither srun (SLURM_PROCID), torchrun (RANK, MASTER_ADDR) \
                 nor mpirun (OMPI_COMM_WORLD_RANK) started this process",
            ));
        };
        let required = |name: &str| env(name).ok_or_else(|| CommError::config(name, "is not set"));
        let rank = number(rank_var, &required(rank_var)?)?;
        let size = match (launcher, env(size_var)) {
            (_, Some(v)) => number(size_var, &v)?,
            (Launcher::Deeprc, None) => number(size_var, &required(size_var)?)?,
            (_, None) => number("DEEPRC_WORLD_SIZE", &required("DEEPRC_WORLD_SIZE")?)?,
        };
        let store = match (env("DEEPRC_STORE"), launcher) {
            (Some(s), _) => s,
            (None, Launcher::Slurm) => slurm_store(env)?,
            (None, Launcher::Torchrun) => {
                let port = number("MASTER_PORT", &required("MASTER_PORT")?)?;
                let port = u16::try_from(port + 1).map_err(|_| {
                    CommError::config("MASTER_PORT", "leaves no port above it for the store")
                })?;
                join_host_port(&required("MASTER_ADDR")?, port)
            }
            (None, _) => required("DEEPRC_STORE")?,
        };
        let token = match (env("DEEPRC_TOKEN"), launcher) {
            (Some(t), _) => t,
            (None, Launcher::Deeprc) => required("DEEPRC_TOKEN")?,
            (None, _) => user_token(&token_file(env)?)?,
        };
        Ok(Self {
            launcher,
            rank,
            size,
            store,
            token,
        })
    }
}

/// `host:port`, bracketing IPv6 literals.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The store of a Slurm job step: served by rank 0 on the step's first
/// node, at `DEEPRC_STORE_PORT` or a port derived from the job and step
/// ids (so concurrent steps of one job do not collide).
fn slurm_store(env: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let list = env("SLURM_STEP_NODELIST")
        .or_else(|| env("SLURM_JOB_NODELIST"))
        .or_else(|| env("SLURM_NODELIST"))
        .ok_or_else(|| CommError::config("SLURM_STEP_NODELIST", "is not set"))?;
    let first = expand_hostlist(&list)
        .map_err(|e| CommError::config("SLURM_STEP_NODELIST", e))?
        .into_iter()
        .next()
        .ok_or_else(|| CommError::config("SLURM_STEP_NODELIST", "names no node"))?;
    let port = match env("DEEPRC_STORE_PORT") {
        Some(p) => u16::try_from(number("DEEPRC_STORE_PORT", &p)?)
            .map_err(|_| CommError::config("DEEPRC_STORE_PORT", "is not a port"))?,
        None => {
            let job = number("SLURM_JOB_ID", &env("SLURM_JOB_ID").unwrap_or_default()).unwrap_or(0);
            let step =
                number("SLURM_STEP_ID", &env("SLURM_STEP_ID").unwrap_or_default()).unwrap_or(0);
            u16::try_from(20_000 + (job * 131 + step) % 20_000).expect("below 40000")
        }
    };
    Ok(join_host_port(&node_address(&first)?, port))
}

/// The address of Slurm node `name`: by name if it resolves, else the
/// `NodeAddr` that `scontrol show node` reports (clusters whose node
/// names are not in DNS, as the namespace test cluster's are not).
///
/// ```no_run
/// let addr = deeprc_comm::launcher::node_address("dn1")?; // "10.87.0.11"
/// # Ok::<(), deeprc_comm::CommError>(())
/// ```
///
/// # Errors
/// [`CommError::Config`] when the name neither resolves nor has a
/// `NodeAddr`; [`CommError::Io`] when `scontrol` cannot run.
pub fn node_address(name: &str) -> Result<String> {
    if (name, 0u16)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.next().is_some())
    {
        return Ok(name.to_string());
    }
    let out = Command::new("scontrol")
        .args(["show", "node", "-o", name])
        .output()
        .map_err(|e| CommError::io(format!("running `scontrol show node {name}`"), e))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|f| f.strip_prefix("NodeAddr="))
        .map(str::to_string)
        .ok_or_else(|| {
            CommError::config(
                "SLURM_STEP_NODELIST",
                format!(
                    "node {name} does not resolve and `scontrol show node` gives no NodeAddr: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )
        })
}

fn token_file(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf> {
    if let Some(f) = env("DEEPRC_TOKEN_FILE") {
        return Ok(PathBuf::from(f));
    }
    let home = env("HOME").ok_or_else(|| {
        CommError::config(
            "DEEPRC_TOKEN",
            "is not set, and HOME names no folder for a token file",
        )
    })?;
    Ok(Path::new(&home).join(".deeprc").join("token"))
}

/// Reads the user's token file, creating it (owner-only, a fresh random
/// secret) when it does not exist. Ranks racing to create it agree: the
/// secret is written to a private temporary file and hard-linked into
/// place, which fails for all but the first.
pub(crate) fn user_token(path: &Path) -> Result<String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CommError::io(format!("creating {}", dir.display()), e))?;
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret)
            .map_err(|e| CommError::config("DEEPRC_TOKEN", format!("no randomness: {e}")))?;
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = dir.join(format!(".token.{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| CommError::io(format!("creating {}", tmp.display()), e))?;
        f.write_all(hex.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| CommError::io(format!("writing {}", tmp.display()), e))?;
        // Only the first link succeeds; the others read the winner's.
        let _ = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
    }
    let meta = std::fs::metadata(path)
        .map_err(|e| CommError::io(format!("reading {}", path.display()), e))?;
    if meta.mode() & 0o077 != 0 {
        return Err(CommError::InsecureStore {
            path: path.display().to_string(),
            reason: format!(
                "the token file has mode {:o}: others may read the job secret (chmod 600 it)",
                meta.mode() & 0o777
            ),
        });
    }
    let token = std::fs::read_to_string(path)
        .map_err(|e| CommError::io(format!("reading {}", path.display()), e))?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(CommError::config(
            "DEEPRC_TOKEN_FILE",
            format!("{} is empty", path.display()),
        ));
    }
    Ok(token)
}

/// The local address of the interface that routes to `store` (`host:port`;
/// loopback for a store folder or a loopback store): what a rank binds and
/// advertises so that its peers on other hosts reach it.
pub(crate) fn route_to(store: &str) -> Result<IpAddr> {
    let Ok(mut addrs) = store.to_socket_addrs() else {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    };
    let Some(target) = addrs.next() else {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    };
    if target.ip().is_loopback() {
        return Ok(target.ip());
    }
    let any: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // Connecting a UDP socket sends nothing: the kernel only picks the
    // route and with it the source address.
    let sock = UdpSocket::bind(any).map_err(|e| CommError::io("binding a UDP probe", e))?;
    sock.connect(target)
        .map_err(|e| CommError::io(format!("finding the route to the store {store}"), e))?;
    Ok(sock
        .local_addr()
        .map_err(|e| CommError::io("reading the route's source address", e))?
        .ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn deeprc_variables_win() {
        let env = lookup(&[
            ("DEEPRC_RANK", "1"),
            ("DEEPRC_WORLD_SIZE", "2"),
            ("DEEPRC_STORE", "127.0.0.1:5000"),
            ("DEEPRC_TOKEN", "t"),
            ("SLURM_PROCID", "3"),
            ("SLURM_STEP_ID", "0"),
        ]);
        let p = Placement::from_lookup(&env).unwrap();
        assert_eq!(
            (
                p.launcher,
                p.rank,
                p.size,
                p.store.as_str(),
                p.token.as_str()
            ),
            (Launcher::Deeprc, 1, 2, "127.0.0.1:5000", "t")
        );
        let e = Placement::from_lookup(&lookup(&[("DEEPRC_RANK", "0")])).unwrap_err();
        assert!(e.to_string().contains("DEEPRC_WORLD_SIZE"), "{e}");
    }

    #[test]
    fn srun_needs_nothing_else() {
        let dir = std::env::temp_dir().join(format!("deeprc-launcher-{}", std::process::id()));
        let file = dir.join("token");
        let file_s = file.display().to_string();
        let env = lookup(&[
            ("SLURM_PROCID", "2"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_STEP_ID", "3"),
            ("SLURM_JOB_ID", "17"),
            ("SLURM_STEP_NODELIST", "localhost,dn[2-3]"),
            ("DEEPRC_TOKEN_FILE", &file_s),
        ]);
        let p = Placement::from_lookup(&env).unwrap();
        assert_eq!((p.launcher, p.rank, p.size), (Launcher::Slurm, 2, 4));
        assert_eq!(p.store, format!("localhost:{}", 20_000 + 17 * 131 + 3));
        // A second rank reads the same secret; the file is owner-only.
        let again = Placement::from_lookup(&env).unwrap();
        assert_eq!(again.token, p.token);
        assert_eq!(p.token.len(), 64);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Placement::from_lookup(&env).unwrap_err();
        assert!(matches!(e, CommError::InsecureStore { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torchrun_and_mpirun() {
        let env = lookup(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "8"),
            ("MASTER_ADDR", "10.0.0.5"),
            ("MASTER_PORT", "29500"),
            ("DEEPRC_TOKEN", "t"),
        ]);
        let p = Placement::from_lookup(&env).unwrap();
        assert_eq!(
            (p.launcher, p.size, p.store.as_str()),
            (Launcher::Torchrun, 8, "10.0.0.5:29501")
        );
        let env = lookup(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("DEEPRC_TOKEN", "t"),
        ]);
        let e = Placement::from_lookup(&env).unwrap_err();
        assert!(e.to_string().contains("DEEPRC_STORE"), "{e}");
        let e = Placement::from_lookup(&lookup(&[])).unwrap_err();
        assert!(e.to_string().contains("srun"), "{e}");
    }

    #[test]
    fn the_route_to_a_loopback_store_is_loopback() {
        assert!(route_to("127.0.0.1:1").unwrap().is_loopback());
        assert!(route_to("/shared/store").unwrap().is_loopback());
    }
}
