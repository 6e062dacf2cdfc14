//! Fuzz target `project`: see `osft-test-support/src/fuzz.rs`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| osft_fuzz::harness::run(2, data));
