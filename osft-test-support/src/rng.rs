//! The one random generator of the tests: [`StdRng`], seeded either from `OSFT_TEST_SEED` (or
//! fresh, the seed printed so that a failure can be replayed) by [`rng`], or from a fixed seed by
//! [`seeded`] for inputs that must be the same in every run. [`Draw`] adds the uniform draws the
//! C-ABI tests use to any generator.

pub use rand::rngs::StdRng;
pub use rand::Rng;
use rand::SeedableRng;

/// A generator seeded from `OSFT_TEST_SEED`, or fresh when it is unset; the seed is printed
/// (`OSFT_TEST_SEED=...` on stderr, shown for a failing test) so that a failure can be replayed.
pub fn rng() -> StdRng {
    let seed = std::env::var("OSFT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    eprintln!("OSFT_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// A generator with a fixed seed: the same stream in every run, whatever `OSFT_TEST_SEED` says
/// (for inputs a test pins, such as the shared inputs of the concurrency tests).
pub fn seeded(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Uniform draws in `[-1, 1)` and random bytes, for any generator.
pub trait Draw: Rng {
    /// One value in `[-1, 1)`.
    fn uniform(&mut self) -> f64 {
        self.random::<f64>() * 2.0 - 1.0
    }
    /// `n` values in `[-1, 1)`.
    fn uniform_vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform()).collect()
    }
    /// `n` values in `[-1, 1)`, as f32.
    fn uniform_vec32(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform() as f32).collect()
    }
    /// `n` uniformly random bytes.
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.random::<u8>()).collect()
    }
}

impl<R: Rng + ?Sized> Draw for R {}
