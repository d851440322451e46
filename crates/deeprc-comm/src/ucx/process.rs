//! Who a UCX rank is on its host: the host's identity (host name and boot
//! id, so two hosts with one name, or one host rebooted, differ) and the
//! process (pid and start time, so a reused pid is not mistaken for the
//! rank). Peers on one host talk over shared memory, which UCX cannot
//! watch for failures; the progress thread watches their processes.

use std::time::Duration;

/// How often the progress thread looks at the processes of peers on this
/// host: a peer that exits fails receives from it within about this long.
pub const PROCESS_WATCH: Duration = Duration::from_millis(50);

/// A rank's host and process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Identity {
    pub(super) host: String,
    pub(super) pid: u32,
    start: u64,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A process's start time (clock ticks after boot, field 22 of
/// `/proc/<pid>/stat`) and whether it is still running (not a zombie);
/// `None` when no such process exists.
fn start_time(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields after it start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let running = !matches!(fields.first(), Some(&"Z") | Some(&"X"));
    Some((fields.get(19)?.parse().ok()?, running))
}

impl Identity {
    /// This process.
    pub(super) fn this() -> Self {
        let pid = std::process::id();
        Self {
            host: format!(
                "{}/{}",
                read_trimmed("/proc/sys/kernel/hostname"),
                read_trimmed("/proc/sys/kernel/random/boot_id")
            ),
            pid,
            start: start_time(pid).map_or(0, |(s, _)| s),
        }
    }

    pub(super) fn encode(&self) -> String {
        format!("{}\n{} {}", self.host, self.pid, self.start)
    }

    pub(super) fn decode(s: &str) -> Option<Self> {
        let (host, proc) = s.split_once('\n')?;
        let (pid, start) = proc.split_once(' ')?;
        Some(Self {
            host: host.to_string(),
            pid: pid.parse().ok()?,
            start: start.parse().ok()?,
        })
    }

    /// Whether the process is still running.
    pub(super) fn alive(&self) -> bool {
        start_time(self.pid).is_some_and(|(s, running)| s == self.start && running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_round_trips() {
        let me = Identity::this();
        assert!(me.alive());
        assert_eq!(Identity::decode(&me.encode()), Some(me.clone()));
        let reused = Identity {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(!reused.alive(), "a reused pid is another process");
        assert_eq!(Identity::decode("garbage"), None);
    }

    #[test]
    fn an_exited_process_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let them = Identity {
            host: String::new(),
            pid,
            start: start_time(pid).map_or(0, |(s, _)| s),
        };
        child.wait().unwrap();
        assert!(!them.alive());
    }
}
