//! Kept only for `examples/device_check.rs`, which includes this file by path: the test support
//! is the `osft-test-support` crate (a dev-dependency, which examples can use directly).
pub use osft_test_support::*;
