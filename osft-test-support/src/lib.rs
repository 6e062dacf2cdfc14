//! Support shared by the osft tests (and the fuzz targets), so that every test binary uses the
//! same references, buffers and random generator:
//!
//! - [`mod@rng`]: the one random generator, seeded from `OSFT_TEST_SEED` (or fresh, the seed
//!   printed so that a failure can be replayed), or from a fixed seed for pinned inputs;
//! - [`matrix`]: the f64 dense reference matrix [`M`], Gaussian matrices, orthonormal bases;
//! - [`layout`]: a reference matrix stored in a host buffer ([`Buf`]) of any dtype and layout,
//!   with poisoned padding, and read back;
//! - [`svd`]: the f64 reference SVD (one-sided Jacobi) and the library's sign convention;
//! - [`rank`]: expected ranks computed exactly;
//! - [`capi`]: helpers of the C-ABI tests (descriptors, status checks, contexts, timeouts, RSS);
//! - [`fuzz`]: the structured fuzz harness over the C ABI.
//!
//! The references are naive f64 loops, independent of faer and of the code under test. The
//! modules other than [`capi`] and [`fuzz`] are re-exported at the root: `use
//! osft_test_support::*` brings in what the op-level tests use.

pub mod capi;
pub mod fuzz;
pub mod layout;
pub mod matrix;
pub mod rank;
pub mod rng;
pub mod svd;

pub use layout::*;
pub use matrix::*;
pub use rank::*;
pub use rng::*;
pub use svd::*;
