#![no_main]
//! See the entry point for what is decoded and checked.

libfuzzer_sys::fuzz_target!(
    init: deeprc_fuzz::seed_corpus(deeprc_comm::tcp::fuzzing::seeds("store_requests")),
    |data: &[u8]| {
        deeprc_comm::tcp::fuzzing::store_requests(data);
    }
);
