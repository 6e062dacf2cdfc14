//! Decomposition cases: decompose into high/low parts and reconstruct (with the reconstruction
//! diagnostic), and the randomized top-k decomposition against the optimal rank-k residual.

use osft::ops::decompose::Parts;
use osft::ops::reconstruct::Term;
use osft::{bf16, Context, DType, MatDesc, SvdAlgorithm};
use osft_test_support::{ortho_err_cols, randn, Buf, Layout, M};

use crate::device_buffer::Dev;
use crate::reference::{orthonormal, u_of};
use crate::report::Report;

pub(crate) fn decompose_reconstruct_case(
    gpu: &Context,
    rng: &mut rand::rngs::StdRng,
    rep: &mut Report,
    n: usize,
    m: usize,
    k: usize,
) {
    let r = n.min(m);
    let w = randn(rng, n, m).round::<bf16>();
    let name = format!("decompose+reconstruct bf16 {n}x{m} k={k}");
    let dw = Dev::up(gpu, Buf::<bf16>::from(&w, Layout::RowMajor));
    let parts: Vec<Dev<f32>> = [(n, k), (k, 1), (k, m), (n, r - k), (r - k, 1), (r - k, m)]
        .iter()
        .map(|(a, b)| Dev::up(gpu, Buf::<f32>::poisoned(*a, *b, 1, Layout::RowMajor)))
        .collect();
    let d: Vec<MatDesc> = parts.iter().map(|p| p.desc()).collect();
    let p = Parts {
        u_high: Some(&d[0]),
        s_high: Some(&d[1]),
        v_high: Some(&d[2]),
        u_low: Some(&d[3]),
        s_low: Some(&d[4]),
        v_low: Some(&d[5]),
    };
    if let Err(e) = unsafe { gpu.decompose_raw(&dw.desc(), k, &p, DType::F32) } {
        return rep.case(&name, false, format!("decompose error {e}"));
    }
    let out = Dev::up(gpu, Buf::<f32>::poisoned(n, m, 1, Layout::ColMajor));
    let terms = [Term { u: &d[0], s: &d[1], v: &d[2] }, Term { u: &d[3], s: &d[4], v: &d[5] }];
    if let Err(e) = unsafe { gpu.reconstruct_raw(&terms, &out.desc(), DType::F32) } {
        return rep.case(&name, false, format!("reconstruct error {e}"));
    }
    let e = out.down(gpu).get(0).sub(&w).fro() / w.fro();
    let host: Vec<M> = parts.iter().map(|p| p.down(gpu).get(0)).collect();
    let cross = host[0].t().mul(&host[3]).fro();
    let diag =
        unsafe { gpu.reconstruction_error_raw(&dw.desc(), &terms, DType::F32) }.map(|v| v[0]).unwrap_or(f64::NAN);
    let tol = 10.0 * n.max(m) as f64 * u_of(DType::F32);
    rep.case(
        &name,
        e <= tol && cross <= tol && (diag - e).abs() <= tol,
        format!("reconstruction {e:.2e}, U_h^T U_l {cross:.2e}, diagnostic {diag:.2e}, tol {tol:.1e}"),
    );
}

/// Randomized top-k decomposition on the GPU against the exact top k of a matrix with singular
/// values 2^-i (well separated: the randomized range finder is accurate to ~eps here).
pub(crate) fn randomized_case(
    gpu: &Context,
    rng: &mut rand::rngs::StdRng,
    rep: &mut Report,
    n: usize,
    m: usize,
    k: usize,
    compute: DType,
) {
    let r = n.min(m);
    let s_true: Vec<f64> = (0..r).map(|i| 0.5f64.powi(i as i32)).collect();
    let w = orthonormal(rng, n, r).mul(&orthonormal(rng, m, r).t().scale_rows(&s_true));
    let name = format!("decompose RANDOMIZED top k={k} {} {n}x{m}", compute.name());
    gpu.set_svd_algorithm(SvdAlgorithm::Randomized);
    let dw = Dev::up(gpu, Buf::<f64>::from(&w, Layout::RowMajor));
    let (du, ds, dv) = (
        Dev::up(gpu, Buf::<f64>::poisoned(n, k, 1, Layout::ColMajor)),
        Dev::up(gpu, Buf::<f64>::poisoned(k, 1, 1, Layout::ColMajor)),
        Dev::up(gpu, Buf::<f64>::poisoned(k, m, 1, Layout::RowMajor)),
    );
    let (ud, sd, vd) = (du.desc(), ds.desc(), dv.desc());
    let res = unsafe {
        gpu.decompose_raw(
            &dw.desc(),
            k,
            &Parts { u_high: Some(&ud), s_high: Some(&sd), v_high: Some(&vd), ..Default::default() },
            compute,
        )
    };
    gpu.set_svd_algorithm(SvdAlgorithm::Auto);
    if let Err(e) = res {
        return rep.case(&name, false, format!("error {e}"));
    }
    let (u, s, vt) = (du.down(gpu).get(0), ds.down(gpu).get(0).d, dv.down(gpu).get(0));
    // The top-k part reproduces the best rank-k approximation: W_k = U_k S_k V_k.
    // The top-k part is the best rank-k approximation: ||W - U_k S_k V_k|| reaches its optimum
    // sqrt(sum_{i>=k} s_i^2).
    let rec = u.mul(&vt.scale_rows(&s));
    let resid = w.sub(&rec).fro();
    let opt = s_true[k..].iter().map(|x| x * x).sum::<f64>().sqrt();
    let tol = 1e3 * u_of(compute);
    let s_err = s.iter().zip(&s_true).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let ok =
        s_err <= tol && resid <= opt * (1.0 + tol) + tol && ortho_err_cols(&u) <= tol && ortho_err_cols(&vt.t()) <= tol;
    rep.case(&name, ok, format!("S error {s_err:.2e}, residual {resid:.3e} vs optimal {opt:.3e}, tol {tol:.1e}"));
}
