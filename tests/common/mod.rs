//! Test support: an f64 dense reference matrix, random inputs, and storing a reference matrix
//! into a buffer of any dtype and layout (and reading it back). The references here are naive
//! f64 loops, independent of faer and of the code under test.

use osft::{DType, Element, MatDesc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Row-major f64 matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct M {
    pub r: usize,
    pub c: usize,
    pub d: Vec<f64>,
}

impl M {
    pub fn zeros(r: usize, c: usize) -> M {
        M { r, c, d: vec![0.0; r * c] }
    }
    pub fn eye(n: usize) -> M {
        let mut m = M::zeros(n, n);
        for i in 0..n {
            m.d[i * n + i] = 1.0;
        }
        m
    }
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.d[i * self.c + j]
    }
    pub fn set(&mut self, i: usize, j: usize, v: f64) {
        self.d[i * self.c + j] = v;
    }
    pub fn t(&self) -> M {
        let mut o = M::zeros(self.c, self.r);
        for i in 0..self.r {
            for j in 0..self.c {
                o.set(j, i, self.at(i, j));
            }
        }
        o
    }
    pub fn mul(&self, b: &M) -> M {
        assert_eq!(self.c, b.r);
        let mut o = M::zeros(self.r, b.c);
        for i in 0..self.r {
            for l in 0..self.c {
                let a = self.at(i, l);
                if a == 0.0 {
                    continue;
                }
                for j in 0..b.c {
                    o.d[i * b.c + j] += a * b.at(l, j);
                }
            }
        }
        o
    }
    pub fn sub(&self, b: &M) -> M {
        assert_eq!((self.r, self.c), (b.r, b.c));
        M { r: self.r, c: self.c, d: self.d.iter().zip(&b.d).map(|(x, y)| x - y).collect() }
    }
    pub fn add(&self, b: &M) -> M {
        M { r: self.r, c: self.c, d: self.d.iter().zip(&b.d).map(|(x, y)| x + y).collect() }
    }
    pub fn scale(&self, s: f64) -> M {
        M { r: self.r, c: self.c, d: self.d.iter().map(|x| x * s).collect() }
    }
    pub fn fro(&self) -> f64 {
        self.d.iter().map(|x| x * x).sum::<f64>().sqrt()
    }
    pub fn cols(&self, c0: usize, n: usize) -> M {
        let mut o = M::zeros(self.r, n);
        for i in 0..self.r {
            for j in 0..n {
                o.set(i, j, self.at(i, c0 + j));
            }
        }
        o
    }
    pub fn rows(&self, r0: usize, n: usize) -> M {
        self.t().cols(r0, n).t()
    }
    /// `diag(s) * self`.
    pub fn scale_rows(&self, s: &[f64]) -> M {
        assert!(s.len() >= self.r);
        let mut o = self.clone();
        for (i, si) in s.iter().enumerate().take(self.r) {
            for j in 0..self.c {
                o.d[i * self.c + j] *= si;
            }
        }
        o
    }
    /// Every entry rounded through `T` (what storing in `T` does).
    pub fn round<T: Element>(&self) -> M {
        M { r: self.r, c: self.c, d: self.d.iter().map(|x| T::from_f64(*x).to_f64()).collect() }
    }
    pub fn max_abs_diff(&self, b: &M) -> f64 {
        self.d.iter().zip(&b.d).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }
}

/// A seeded RNG: fresh each run unless OSFT_TEST_SEED is set; the seed is printed so that a
/// failure can be replayed.
pub fn rng() -> StdRng {
    let seed = std::env::var("OSFT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    eprintln!("OSFT_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

pub fn randn(rng: &mut StdRng, r: usize, c: usize) -> M {
    // Box-Muller, so the test does not depend on rand_distr.
    let mut d = Vec::with_capacity(r * c);
    while d.len() < r * c {
        let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
        let rad = (-2.0 * u1.ln()).sqrt();
        d.push(rad * (2.0 * std::f64::consts::PI * u2).cos());
        d.push(rad * (2.0 * std::f64::consts::PI * u2).sin());
    }
    d.truncate(r * c);
    M { r, c, d }
}

/// `n x k` with orthonormal columns: modified Gram-Schmidt (twice) in f64 on a Gaussian matrix.
pub fn orthonormal(rng: &mut StdRng, n: usize, k: usize) -> M {
    assert!(k <= n);
    let mut q = randn(rng, n, k);
    for _pass in 0..2 {
        for j in 0..k {
            for p in 0..j {
                let dot: f64 = (0..n).map(|i| q.at(i, j) * q.at(i, p)).sum();
                for i in 0..n {
                    let v = q.at(i, j) - dot * q.at(i, p);
                    q.set(i, j, v);
                }
            }
            let nrm: f64 = (0..n).map(|i| q.at(i, j).powi(2)).sum::<f64>().sqrt();
            for i in 0..n {
                let v = q.at(i, j) / nrm;
                q.set(i, j, v);
            }
        }
    }
    q
}

/// `||Q^T Q - I||_F` for the columns of `q`.
pub fn ortho_err_cols(q: &M) -> f64 {
    q.t().mul(q).sub(&M::eye(q.c)).fro()
}

/// Memory layouts the tests run through.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layout {
    RowMajor,
    ColMajor,
    /// Row-major with a padded leading dimension.
    PaddedRow(usize),
    /// Column-major with a padded leading dimension.
    PaddedCol(usize),
    /// General strides: no unit stride at all (elements spaced by 2 and 2 * rows + 1).
    Spaced,
}

pub const LAYOUTS: [Layout; 5] =
    [Layout::RowMajor, Layout::ColMajor, Layout::PaddedRow(3), Layout::PaddedCol(5), Layout::Spaced];

/// Strides for a `rows x cols` matrix in `layout`.
pub fn strides(layout: Layout, rows: usize, cols: usize) -> (usize, usize) {
    match layout {
        Layout::RowMajor => (cols, 1),
        Layout::ColMajor => (1, rows),
        Layout::PaddedRow(p) => (cols + p, 1),
        Layout::PaddedCol(p) => (1, rows + p),
        Layout::Spaced => (2, 2 * rows + 1),
    }
}

/// A host buffer holding a batch of matrices in some layout and dtype, with poisoned padding.
pub struct Buf<T: Element> {
    pub data: Vec<T>,
    pub desc: MatDesc,
}

/// Poison value: a NaN in every float type, so an unwritten output is noticed.
pub fn poison<T: Element>() -> T {
    T::from_f64(f64::NAN)
}

impl<T: Element> Buf<T> {
    /// Store `ms` (a batch) in `layout`, with a batch stride padded by 7 elements.
    pub fn from_batch(ms: &[M], layout: Layout) -> Self {
        let (r, c) = (ms[0].r, ms[0].c);
        let (rs, cs) = strides(layout, r, c);
        let span = if r * c == 0 { 0 } else { (r - 1) * rs + (c - 1) * cs + 1 };
        let bs = span + 7;
        let mut data = vec![poison::<T>(); bs * ms.len() + 3];
        for (b, m) in ms.iter().enumerate() {
            for i in 0..r {
                for j in 0..c {
                    data[b * bs + i * rs + j * cs] = T::from_f64(m.at(i, j));
                }
            }
        }
        let desc = MatDesc {
            addr: data.as_ptr() as usize,
            dtype: T::DTYPE,
            rows: r,
            cols: c,
            row_stride: rs,
            col_stride: cs,
            batch: ms.len(),
            batch_stride: if ms.len() > 1 { bs } else { 0 },
            device: osft::Device::Host,
        };
        Buf { data, desc }
    }
    pub fn from(m: &M, layout: Layout) -> Self {
        Self::from_batch(std::slice::from_ref(m), layout)
    }
    /// A poisoned output of `batch` matrices `rows x cols`.
    pub fn poisoned(rows: usize, cols: usize, batch: usize, layout: Layout) -> Self {
        let mut b = Self::from_batch(&vec![M::zeros(rows, cols); batch], layout);
        b.data.iter_mut().for_each(|x| *x = poison::<T>());
        b
    }
    pub fn get(&self, b: usize) -> M {
        let d = &self.desc;
        let mut m = M::zeros(d.rows, d.cols);
        for i in 0..d.rows {
            for j in 0..d.cols {
                m.set(i, j, self.data[b * d.batch_stride + i * d.row_stride + j * d.col_stride].to_f64());
            }
        }
        m
    }
    pub fn desc(&mut self) -> MatDesc {
        // Re-derive the address: the Vec may not move, but make the borrow explicit.
        MatDesc { addr: self.data.as_mut_ptr() as usize, ..self.desc }
    }
    /// The raw bytes, for "untouched" comparisons (NaN != NaN, so compare bits).
    pub fn bits(&self) -> Vec<u64> {
        self.data.iter().map(|x| x.to_f64().to_bits()).collect()
    }
    /// Elements outside the matrices (padding) are still poison.
    pub fn padding_untouched(&self) -> bool {
        let d = &self.desc;
        let mut inside = vec![false; self.data.len()];
        for b in 0..d.batch {
            for i in 0..d.rows {
                for j in 0..d.cols {
                    inside[b * d.batch_stride + i * d.row_stride + j * d.col_stride] = true;
                }
            }
        }
        self.data.iter().zip(inside).all(|(x, ins)| ins || x.to_f64().is_nan())
    }
}

pub fn dtype_of<T: Element>() -> DType {
    T::DTYPE
}

/// Unit roundoff of a dtype.
pub fn u(d: DType) -> f64 {
    d.unit_roundoff()
}

/// Thin SVD `a = U diag(s) Vt` in f64 by one-sided Jacobi (Hestenes), independent of the library:
/// `U: n x r`, `s: r` descending, `Vt: r x m`, `r = min(n, m)`, with the library's sign convention
/// applied (in each column of `U` the entry of largest magnitude, the first on ties, is positive;
/// the row of `Vt` flips with it). Accurate to a few f64 ulps times the condition of each pair.
pub fn jacobi_svd(a: &M) -> (M, Vec<f64>, M) {
    if a.r < a.c {
        let (u, s, vt) = jacobi_svd(&a.t());
        let (mut u2, mut vt2) = (vt.t(), u.t());
        sign_fix(&mut u2, &mut vt2);
        return (u2, s, vt2);
    }
    let (n, m) = (a.r, a.c);
    let mut w = a.clone(); // columns are rotated towards orthogonality
    let mut v = M::eye(m);
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..m {
            for q in p + 1..m {
                let (mut al, mut be, mut ga) = (0.0, 0.0, 0.0);
                for i in 0..n {
                    al += w.at(i, p) * w.at(i, p);
                    be += w.at(i, q) * w.at(i, q);
                    ga += w.at(i, p) * w.at(i, q);
                }
                if ga == 0.0 || ga.abs() <= 1e-15 * (al * be).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (be - al) / (2.0 * ga);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for i in 0..n {
                    let (x, y) = (w.at(i, p), w.at(i, q));
                    w.set(i, p, c * x - s * y);
                    w.set(i, q, s * x + c * y);
                }
                for i in 0..m {
                    let (x, y) = (v.at(i, p), v.at(i, q));
                    v.set(i, p, c * x - s * y);
                    v.set(i, q, s * x + c * y);
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let norms: Vec<f64> = (0..m).map(|j| (0..n).map(|i| w.at(i, j).powi(2)).sum::<f64>().sqrt()).collect();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|x, y| norms[*y].partial_cmp(&norms[*x]).unwrap());
    let mut u = M::zeros(n, m);
    let mut vt = M::zeros(m, m);
    let mut s = Vec::with_capacity(m);
    for (t, &j) in order.iter().enumerate() {
        s.push(norms[j]);
        for i in 0..n {
            u.set(i, t, if norms[j] > 0.0 { w.at(i, j) / norms[j] } else { 0.0 });
        }
        for i in 0..m {
            vt.set(t, i, v.at(i, j));
        }
    }
    sign_fix(&mut u, &mut vt);
    (u, s, vt)
}

/// The library's sign convention applied to a reference factorization.
pub fn sign_fix(u: &mut M, vt: &mut M) {
    for j in 0..u.c {
        if !sign_convention_holds_col(u, j) {
            for i in 0..u.r {
                let x = u.at(i, j);
                u.set(i, j, -x);
            }
            for i in 0..vt.c {
                let x = vt.at(j, i);
                vt.set(j, i, -x);
            }
        }
    }
}

/// In column `j` of `u`, the entry of largest magnitude (the first on ties) is positive.
pub fn sign_convention_holds_col(u: &M, j: usize) -> bool {
    let mut best = 0usize;
    for i in 0..u.r {
        if u.at(i, j).abs() > u.at(best, j).abs() {
            best = i;
        }
    }
    u.r == 0 || u.at(best, j) >= 0.0
}

/// Columns of `u` that break the sign convention.
pub fn sign_violations(u: &M) -> Vec<usize> {
    (0..u.c).filter(|&j| !sign_convention_holds_col(u, j)).collect()
}

/// `floor(f * r + 1e-9)` evaluated exactly (the f64 `f` as the rational `mant / 2^s`, `1e-9` as
/// `1 / 10^9`), so that the expected rank does not come from the f64 arithmetic under test.
/// For `f` in `[2^-30, 1]` and `r < 2^20`, which keeps every product inside a `u128`.
pub fn exact_fraction_rank(f: f64, r: usize) -> usize {
    if f == 0.0 {
        return 0;
    }
    assert!((2f64.powi(-30)..=1.0).contains(&f) && r < 1 << 20);
    let bits = f.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1075; // f = mant * 2^exp
    let mant = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    let s = (-exp) as u32; // exp < 0 for f <= 1 with a 53-bit mantissa
    let num = mant as u128 * r as u128 * 1_000_000_000u128 + (1u128 << s);
    let den = 1_000_000_000u128 << s;
    (num / den) as usize
}
