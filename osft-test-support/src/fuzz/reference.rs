//! Numerical references of the fuzz harness (float64, naive loops) and the tolerances they are
//! compared with: the point is layouts, so the tolerances are loose multiples of unit roundoff.

use osft::{bf16, f16};

use super::arena::{view, Arena};
use super::operands::*;
use super::R;

pub(super) type M = Vec<Vec<f64>>;

/// `a b` with `m` columns (explicit, so that an empty inner dimension gives zeros).
pub(super) fn matmul(a: &M, b: &M, m: usize) -> M {
    let (n, k) = (a.len(), b.len());
    (0..n).map(|i| (0..m).map(|j| (0..k).map(|t| a[i][t] * b[t][j]).sum()).collect()).collect()
}
pub(super) fn transpose(a: &M, cols: usize) -> M {
    (0..cols).map(|j| a.iter().map(|r| r[j]).collect()).collect()
}
pub(super) fn sub(a: &M, b: &M) -> M {
    a.iter().zip(b).map(|(x, y)| x.iter().zip(y).map(|(p, q)| p - q).collect()).collect()
}
pub(super) fn frob(a: &M) -> f64 {
    a.iter().flatten().map(|v| v * v).sum::<f64>().sqrt()
}

/// The `k x k` identity.
pub(super) fn identity(k: usize) -> M {
    (0..k).map(|i| (0..k).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect()
}

/// Unit roundoff of a dtype.
pub(super) fn eps(dtype: i32) -> f64 {
    match dtype {
        F64 => 1.2e-16,
        F32 => 6e-8,
        F16 => 4.9e-4,
        _ => 3.9e-3,
    }
}

/// Smallest positive (subnormal) value of a dtype: below half of it, rounding gives 0.
pub(super) fn tiny(dtype: i32) -> f64 {
    match dtype {
        F64 => f64::from_bits(1),
        F32 => f32::from_bits(1) as f64,
        F16 => 5.960464477539063e-8, // 2^-24
        _ => 9.183549615799121e-41,  // bf16: 2^-133
    }
}

pub(super) fn close(got: &M, want: &M, scale: f64, tol: f64, what: &str) -> R {
    let d = frob(&sub(got, want));
    let spoiled = got.iter().flatten().zip(want.iter().flatten()).any(|(g, w)| !g.is_finite() && w.is_finite());
    if spoiled || d > tol * scale.max(1e-300) && d > 1e-300 {
        return Err(format!("{what}: result off by {d:.3e} (scale {scale:.3e}, tolerance {tol:.1e})\n      got  {got:?}\n      want {want:?}"));
    }
    Ok(())
}

pub(super) fn nearly(got: f64, want: f64, tol: f64, what: &str) -> R {
    if !((got - want).abs() <= tol * want.abs().max(1.0)) {
        return Err(format!("{what}: {got} but the reference is {want} (tolerance {tol:.1e})"));
    }
    Ok(())
}

pub(super) fn round_to(v: f64, dt: i32) -> f64 {
    match dt {
        F32 => v as f32 as f64,
        F16 => f16::from_f64(v).to_f64(),
        BF16 => bf16::from_f64(v).to_f64(),
        _ => v,
    }
}

/// Check `W = U diag(S) Vt` per batch entry, `S` descending and non-negative, `||S|| = ||W||`.
/// With `split`, the factors are `[U_high U_low]` etc. (decompose); `None` descriptors skip parts.
pub(super) fn check_factors(
    p: &Problem,
    a: &Arena,
    before: &[u8],
    after: &[u8],
    w: usize,
    u: Option<usize>,
    s: usize,
    vt: Option<usize>,
    split: Option<(usize, Option<usize>, usize, Option<usize>)>,
    compute: i32,
    out_dtypes: &[i32],
    what: &str,
) -> R {
    let wv = view(before, a, &p.descs[w]);
    let (n, m, b) = (wv.rows(), wv.cols(), p.descs[w].m.batch as usize);
    let r = n.min(m);
    let tol =
        30.0 * (1.0 + r as f64) * out_dtypes.iter().chain([&compute]).map(|d| eps(*d)).fold(0.0, f64::max).max(1e-13);
    for e in 0..b {
        let wd = wv.dense(e);
        let wn = frob(&wd);
        // Gather S, U, Vt (concatenated for decompose).
        let vec_of = |i: usize| {
            let v = view(after, a, &p.descs[i]);
            let len = (v.m.rows * v.m.cols) as usize;
            (0..len).map(|t| v.v(e, t)).collect::<Vec<f64>>()
        };
        let mut sv = vec_of(s);
        // Where S_high and S_low end: the pair across it was rounded to two output dtypes.
        let boundary = sv.len();
        let mut um: Option<M> = u.map(|i| view(after, a, &p.descs[i]).dense(e));
        let mut vm: Option<M> = vt.map(|i| view(after, a, &p.descs[i]).dense(e));
        if let Some((_, ul, sl, vl)) = split {
            sv.extend(vec_of(sl));
            um = match (um, ul) {
                (Some(h), Some(l)) => {
                    let lo = view(after, a, &p.descs[l]).dense(e);
                    Some(
                        h.into_iter()
                            .zip(lo)
                            .map(|(mut x, y)| {
                                x.extend(y);
                                x
                            })
                            .collect(),
                    )
                }
                _ => None,
            };
            vm = match (vm, vl) {
                (Some(mut h), Some(l)) => {
                    h.extend(view(after, a, &p.descs[l]).dense(e));
                    Some(h)
                }
                _ => None,
            };
        }
        if sv.len() != r {
            return Err(format!("{what}: {} singular values for R = {r}", sv.len()));
        }
        // Descending, exactly within each part (rounding to one dtype keeps order); across the
        // split the two parts may have different output dtypes (e.g. S_high f16, S_low f32), and
        // rounding each side to its own dtype may invert the pair by at most both roundings:
        // a relative half-ulp each, plus each dtype's smallest subnormal (a tiny high value
        // flushed to 0 in f16 below a tiny low one kept in f32).
        let slack = |a: f64, b: f64| {
            let (dh, dl) = (p.descs[s].m.dtype, split.map_or(p.descs[s].m.dtype, |(_, _, sl, _)| p.descs[sl].m.dtype));
            2.0 * (eps(dh) + eps(dl)) * a.max(b) + tiny(dh) + tiny(dl)
        };
        let ordered = sv.windows(2).enumerate().all(|(i, x)| {
            if split.is_some() && i + 1 == boundary {
                x[0] >= x[1] - slack(x[0], x[1])
            } else {
                x[0] >= x[1]
            }
        });
        if !ordered || sv.iter().any(|x| !(*x >= 0.0)) {
            return Err(format!("{what}: batch {e}: singular values not descending and non-negative: {sv:?}"));
        }
        let ss = sv.iter().map(|x| x * x).sum::<f64>().sqrt();
        nearly(ss, wn, tol, &format!("{what}: batch {e}: ||S|| vs ||W||"))?;
        if let (Some(um), Some(vm)) = (um, vm) {
            let us: M = um.iter().map(|row| row.iter().zip(&sv).map(|(x, s)| x * s).collect()).collect();
            let rec = matmul(&us, &vm, m);
            close(&rec, &wd, wn, tol, &format!("{what}: batch {e}: U S Vt vs W"))?;
            let utu = matmul(&transpose(&um, r), &um, r);
            // Singular vectors of (near-)zero singular values are arbitrary but still orthonormal.
            close(&utu, &identity(r), 1.0, tol * 10.0, &format!("{what}: batch {e}: U^T U vs I"))?;
        }
    }
    Ok(())
}

/// Reference `sum_t U_t diag(S_t) V_t` of batch entry `e`.
pub(super) fn reference_sum(
    p: &Problem,
    a: &Arena,
    bytes: &[u8],
    t: &[(usize, usize, usize)],
    e: usize,
    n: usize,
    m: usize,
) -> (M, f64) {
    let mut acc: M = vec![vec![0.0; m]; n];
    let mut scale = 0.0;
    for (u, s, v) in t {
        let (uv, sv, vv) = (view(bytes, a, &p.descs[*u]), view(bytes, a, &p.descs[*s]), view(bytes, a, &p.descs[*v]));
        let r = uv.cols();
        let mut tn = 0.0;
        for i in 0..n {
            for j in 0..m {
                let x: f64 = (0..r).map(|q| uv.at(e, i, q) * sv.v(e, q) * vv.at(e, q, j)).sum();
                acc[i][j] += x;
                tn += (0..r).map(|q| (uv.at(e, i, q) * sv.v(e, q) * vv.at(e, q, j)).abs()).sum::<f64>().powi(2);
            }
        }
        scale += tn.sqrt();
    }
    (acc, scale)
}
