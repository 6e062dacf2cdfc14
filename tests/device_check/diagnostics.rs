//! Diagnostic cases: leakage and orthonormality error against f64, layer importance against the
//! CPU executor.

use osft::{Context, DType, Side};
use osft_test_support::{ortho_err_cols, randn, Buf, Layout};

use crate::device_buffer::Dev;
use crate::reference::orthonormal;
use crate::report::Report;

pub(crate) fn diagnostics_case(gpu: &Context, rng: &mut rand::rngs::StdRng, rep: &mut Report) {
    let (n, m, k, s) = (80, 48, 20, 33);
    let u = orthonormal(rng, n, k).add(&randn(rng, n, k).scale(1e-3));
    let x = randn(rng, n, m);
    let (du, dx) =
        (Dev::up(gpu, Buf::<f64>::from(&u, Layout::RowMajor)), Dev::up(gpu, Buf::<f64>::from(&x, Layout::Spaced)));
    let leak = unsafe { gpu.leakage_raw(Side::Left, &du.desc(), &dx.desc()) }.map(|v| v[0]).unwrap_or(f64::NAN);
    let want = u.t().mul(&x).fro() / x.fro();
    rep.case("leakage f64", (leak - want).abs() <= 1e-12 * (1.0 + want), format!("{leak} vs {want}"));
    let orth = unsafe { gpu.orthonormality_error_raw(&du.desc(), true) }.map(|v| v[0]).unwrap_or(f64::NAN);
    let want = ortho_err_cols(&u);
    rep.case("orthonormality f64", (orth - want).abs() <= 1e-12 + 1e-9 * want, format!("{orth} vs {want}"));
    let w = randn(rng, n, m);
    let a = randn(rng, s, m);
    let (dw, da) =
        (Dev::up(gpu, Buf::<f32>::from(&w, Layout::ColMajor)), Dev::up(gpu, Buf::<f32>::from(&a, Layout::RowMajor)));
    let cpu = Context::cpu();
    let (mut hw, mut ha) = (Buf::<f32>::from(&w, Layout::ColMajor), Buf::<f32>::from(&a, Layout::RowMajor));
    let g = unsafe { gpu.layer_importance_raw(&dw.desc(), &da.desc(), DType::F32) }.map(|v| v[0]).unwrap_or(f64::NAN);
    let c = unsafe { cpu.layer_importance_raw(&hw.desc(), &ha.desc(), DType::F32) }.unwrap()[0];
    rep.case("layer importance f32", (g - c).abs() <= 1e-5, format!("gpu {g} cpu {c}"));
}
