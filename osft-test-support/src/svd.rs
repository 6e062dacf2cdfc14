//! The f64 reference SVD (one-sided Jacobi) and the library's sign convention.

use crate::matrix::M;

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
