//! Fuzz target `svd`: see `osft-test-support/src/fuzz.rs`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| osft_fuzz::harness::run(0, data));
