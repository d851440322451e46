//! The worker host of deeprc-pilot's integration tests: it registers the
//! test functions (shared with the tests through `tests/common/functions.rs`)
//! and calls the worker-mode entry point first, as every host program does.

#[path = "../../tests/common/functions.rs"]
mod functions;

fn main() {
    let registry = functions::registry();
    deeprc_pilot::worker::run_if_worker(&registry);
    eprintln!(
        "deeprc-pilot-test-host: the worker host of deeprc-pilot's tests; functions: {}",
        registry.names().join(", ")
    );
}
