#![no_main]
//! See the entry point for what is decoded and checked.

libfuzzer_sys::fuzz_target!(
    init: deeprc_fuzz::seed_corpus(deeprc_frame::fuzzing::seeds("frame_peer_data")),
    |data: &[u8]| {
        deeprc_frame::fuzzing::peer_data(data);
    }
);
