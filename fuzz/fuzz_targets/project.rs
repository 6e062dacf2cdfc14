//! Fuzz target `project`: the harness in `osft-test-support/src/fuzz.rs`, this target's driver in
//! `osft-test-support/src/fuzz/targets/project.rs`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| osft_fuzz::harness::run(2, data));
