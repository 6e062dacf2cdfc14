//! Fuzz target `reconstruct`: see `osft-test-support/src/fuzz.rs`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| osft_fuzz::harness::run(4, data));
