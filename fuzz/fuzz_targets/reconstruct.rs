//! Fuzz target `reconstruct`: the harness in `osft-test-support/src/fuzz.rs`, this target's driver in
//! `osft-test-support/src/fuzz/targets/reconstruct.rs`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| osft_fuzz::harness::run(4, data));
