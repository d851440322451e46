//! Small operating-system helpers: CPU affinity, signals, detection of the
//! machine's resources, random tokens, file tails.

use nix::{
    sched::{sched_getaffinity, sched_setaffinity, CpuSet},
    sys::signal::{kill, killpg, Signal},
    unistd::Pid,
};
use std::{
    io::{Read, Seek, SeekFrom},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// The CPUs this process may run on (at least one entry).
pub(crate) fn allowed_cpus() -> Vec<usize> {
    let cpus: Vec<usize> = match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    };
    if cpus.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n).collect()
    } else {
        cpus
    }
}

/// Pins the calling thread to `cpus` (children it spawns inherit the mask).
pub(crate) fn pin_current_thread(cpus: &[usize]) -> nix::Result<()> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c)?;
    }
    sched_setaffinity(Pid::from_raw(0), &set)
}

/// This machine's host name.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The GPUs visible to this process: `CUDA_VISIBLE_DEVICES` when set, else
/// the `/dev/nvidiaN` device files.
pub(crate) fn detect_gpus() -> usize {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        let v = v.trim();
        if v.is_empty() || v == "-1" || v.eq_ignore_ascii_case("NoDevFiles") {
            return 0;
        }
        return v.split(',').filter(|s| !s.trim().is_empty()).count();
    }
    std::fs::read_dir("/dev")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.strip_prefix("nvidia").is_some_and(|rest| {
                        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                    })
                })
                .count()
        })
        .unwrap_or(0)
}

/// Total memory from `/proc/meminfo` (0 when unknown).
pub(crate) fn total_memory() -> u64 {
    meminfo_field("/proc/meminfo", "MemTotal:").unwrap_or(0)
}

fn meminfo_field(path: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The resident set size of this process (`VmRSS` of `/proc/self/status`).
pub fn current_rss_bytes() -> Option<u64> {
    meminfo_field("/proc/self/status", "VmRSS:")
}

/// Sends `sig` to the process group `pgid` (falls back to the process).
pub(crate) fn signal_group(pgid: u32, sig: Signal) {
    let pid = Pid::from_raw(pgid as i32);
    if killpg(pid, sig).is_err() {
        let _ = kill(pid, sig);
    }
}

/// Sends `sig` to one process.
pub(crate) fn signal_process(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

/// A random hexadecimal token (128 bits from `/dev/urandom`, or hashed
/// entropy where that is unavailable).
pub(crate) fn random_token() -> String {
    let mut buf = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        use std::hash::{BuildHasher, Hasher};
        for chunk in buf.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(deeprc_core::now_ns());
            h.write_u32(std::process::id());
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The last `lines` lines of a file, reading at most its last 8 KiB.
pub(crate) fn tail_file(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(8192);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.trim_end().lines().collect();
    let from = all.len().saturating_sub(lines);
    all[from..].join("\n")
}

/// Whether `path` is a regular file with an execute bit.
pub(crate) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds a program: a path with a `/` as given, else on `path_var`
/// (`PATH`).
pub(crate) fn which(program: &str, path_var: Option<&str>) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_executable(&p).then_some(p);
    }
    let path = match path_var {
        Some(p) => p.to_string(),
        None => std::env::var("PATH").unwrap_or_default(),
    };
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| is_executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert!(!allowed_cpus().is_empty());
        assert!(current_rss_bytes().unwrap() > 0);
        assert_eq!(random_token().len(), 32);
        assert_ne!(random_token(), random_token());
        assert!(which("sh", None).is_some());
        assert!(which("/definitely/not/here", None).is_none());
        pin_current_thread(&allowed_cpus()).unwrap();
        let dir = std::env::temp_dir().join(format!("deeprc-pilot-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.txt");
        std::fs::write(&f, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail_file(&f, 2), "c\nd");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
