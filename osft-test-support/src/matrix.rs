//! The f64 dense reference matrix [`M`] (naive loops, independent of faer and of the code under
//! test) and random inputs: Gaussian matrices and orthonormal bases.

use osft::Element;

use crate::rng::{Rng, StdRng};

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
