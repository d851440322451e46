//! The worker host of deeprc-pilot's integration tests: it registers the
//! test functions (shared with the tests through `tests/common/functions.rs`)
//! and calls the worker-mode entry point first, as every host program does.
//!
//! Test hook: `DEEPRC_PILOT_TEST_HOST_DELAY_MS` makes the host sleep that
//! long before entering worker mode (a slow worker start). Only a test's
//! own wrapper script sets it, on the worker's command line, so it never
//! reaches other tests.

#[path = "../../tests/common/functions.rs"]
mod functions;

fn main() {
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
