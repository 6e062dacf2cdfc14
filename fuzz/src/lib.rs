//! The fuzz targets' harness lives in the test-support crate (`osft-test-support/src/fuzz.rs`),
//! shared with the in-repo fuzzer `tests/hardening_fuzz.rs`.
pub use osft_test_support::fuzz as harness;
