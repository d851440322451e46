#![no_main]
//! See the entry point for what is decoded and checked.
//!
//! Arrow's schema decoder panics on some forged flatbuffers (unwraps in
//! `arrow-ipc`'s `convert.rs`); deeprc-frame catches those panics and
//! returns an error, and that is what this target checks. So the panic
//! hook here is silent and does not abort: a panic caught by the frame is
//! no crash, one that escapes still is (libfuzzer-sys aborts on it).

libfuzzer_sys::fuzz_target!(
    init: {
        std::panic::set_hook(Box::new(|_| {}));
        deeprc_fuzz::seed_corpus(deeprc_frame::fuzzing::seeds("frame_ipc"))
    },
    |data: &[u8]| {
        deeprc_frame::fuzzing::ipc_received(data);
    }
);
