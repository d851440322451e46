//! The worker host of deeprc-pilot's integration tests: it registers the
//! test functions (shared with the tests through `tests/common/functions.rs`)
//! and calls the worker-mode entry point first, as every host program does.
//!
//! Test hooks, set only by a test's own wrapper script on the worker's
//! command line (so they never reach other tests):
//! - `DEEPRC_PILOT_TEST_HOST_DELAY_MS` makes the host sleep that long
//!   before entering worker mode (a slow worker start);
//! - `DEEPRC_PILOT_TEST_HOST_OLD_HELLO=1` makes it a worker of protocol
//!   version 1: it introduces itself without a version and waits.
//!
//! As a task program: `deeprc-pilot-test-host alloc-mib N` allocates and
//! touches N MiB, then exits.

#[path = "../../tests/common/functions.rs"]
mod functions;

use std::io::Write;

/// A version-1 worker: its hello is `[len][kind 1][core][pid][token]`.
fn old_worker() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(var("DEEPRC_PILOT_SOCKET")) else {
        std::process::exit(3);
    };
    let core: u32 = var("DEEPRC_PILOT_CORE").parse().unwrap_or(0);
    let token = var("DEEPRC_PILOT_TOKEN");
    let mut body = vec![1u8];
    body.extend_from_slice(&core.to_le_bytes());
    body.extend_from_slice(&std::process::id().to_le_bytes());
    body.extend_from_slice(&(token.len() as u32).to_le_bytes());
    body.extend_from_slice(token.as_bytes());
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    let _ = s.write_all(&frame);
    std::thread::sleep(std::time::Duration::from_secs(30));
    std::process::exit(0);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("alloc-mib") {
        let mib = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
        println!("{}", functions::touch_mib(mib));
        return;
    }
    if std::env::var_os("DEEPRC_PILOT_TEST_HOST_OLD_HELLO").is_some() {
        old_worker();
    }
    if let Some(ms) = std::env::var("DEEPRC_PILOT_TEST_HOST_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let registry = functions::registry();
    deeprc_pilot::worker::run_if_worker(&registry);
    eprintln!(
        "deeprc-pilot-test-host: the worker host of deeprc-pilot's tests; functions: {}",
        registry.names().join(", ")
    );
}
