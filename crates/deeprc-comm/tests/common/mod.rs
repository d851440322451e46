//! Launching test ranks as real processes: the test binary re-executes
//! itself, running one ignored test as the rank's entry point.

#![allow(dead_code, unreachable_pub)]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "deeprc-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts `n` processes running the ignored test `entry` of this binary
/// with `DEEPRC_*` set for rank r of n, plus `env`.
pub fn spawn_ranks(n: usize, entry: &str, store: &str, env: &[(&str, String)]) -> Vec<Child> {
    let exe = std::env::current_exe().unwrap();
    (0..n)
        .map(|r| {
            let mut cmd = Command::new(&exe);
            cmd.args([
                entry,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("DEEPRC_RANK", r.to_string())
            .env("DEEPRC_WORLD_SIZE", n.to_string())
            .env("DEEPRC_STORE", store)
            .env("DEEPRC_TOKEN", "test-token-0123456789")
            .env("DEEPRC_TEST_RANK_PROCESS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.spawn().unwrap()
        })
        .collect()
}

/// Waits for a child with a deadline; kills it if it overstays.
pub fn wait_output(child: Child, deadline: Duration) -> (Option<i32>, String, Duration) {
    let start = Instant::now();
    let mut child = child;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                start.elapsed(),
            );
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return (
                None,
                String::from_utf8_lossy(&out.stdout).into_owned(),
                start.elapsed(),
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `RESULT ...` line a rank printed.
pub fn result_line(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or("<no result line>")
        .to_string()
}

/// `true` inside a spawned rank process.
pub fn is_rank_process() -> bool {
    std::env::var_os("DEEPRC_TEST_RANK_PROCESS").is_some()
}
