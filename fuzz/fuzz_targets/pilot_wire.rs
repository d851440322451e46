#![no_main]
//! See the entry point for what is decoded and checked.

libfuzzer_sys::fuzz_target!(
    init: deeprc_fuzz::seed_corpus(deeprc_pilot::fuzzing::seeds()),
    |data: &[u8]| {
        deeprc_pilot::fuzzing::worker_frames(data);
    }
);
