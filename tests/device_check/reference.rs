//! Host-side f64 references shared by the cases: a fast orthonormal basis and the unit roundoff
//! of a dtype.

use osft::DType;
use osft_test_support::{randn, M};

/// `n x k` with orthonormal columns, as the test support's `orthonormal` (modified
/// Gram-Schmidt, twice, in f64 on a Gaussian matrix) but over the contiguous rows of the
/// transpose: the same arithmetic, many times faster at the sizes checked here, so that the
/// host-side references do not eat the device check's time.
pub(crate) fn orthonormal(rng: &mut rand::rngs::StdRng, n: usize, k: usize) -> M {
    assert!(k <= n);
    let mut q = randn(rng, k, n); // row j is column j of the result
    for _pass in 0..2 {
        for j in 0..k {
            let (done, rest) = q.d.split_at_mut(j * n);
            let col = &mut rest[..n];
            for prev in done.chunks_exact(n) {
                let dot: f64 = col.iter().zip(prev).map(|(a, b)| a * b).sum();
                col.iter_mut().zip(prev).for_each(|(a, b)| *a -= dot * b);
            }
            let nrm = col.iter().map(|a| a * a).sum::<f64>().sqrt();
            col.iter_mut().for_each(|a| *a /= nrm);
        }
    }
    q.t()
}

pub(crate) fn u_of(d: DType) -> f64 {
    d.unit_roundoff()
}
