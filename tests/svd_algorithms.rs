//! The SVD algorithm setting and the math mode on the CPU executor.
//!
//! Every explicit algorithm is checked against the f64 certificate of a thin SVD (orthonormal
//! factors, descending non-negative `S`, reconstruction) and against an f64 reference's singular
//! values, over shapes; each routine's preconditions are refused with the right status before
//! anything is written; recorded call sequences show which routine `Auto` picks per shape, that
//! an explicit choice is honoured, that the randomized SVD receives `k`, and that the math mode
//! reaches every data GEMM as its compute type (and no diagnostic GEMM).

use osft::exec::cpu::CpuExecutor;
use osft::exec::trace::{Call, Recording};
use osft::exec::{ComputeType, GESVDR_ITERATIONS};
use osft::ops::decompose::Parts;
use osft::ops::project::Bases;
use osft::ops::svd::{check_routine, SvdOut, SvdRoutine};
use osft::{Context, DType, Element, Error, MathMode, Side, Status, SvdAlgorithm};
use osft_test_support::*;
use std::sync::Arc;

const EXPLICIT: [SvdAlgorithm; 5] = [
    SvdAlgorithm::Qr,
    SvdAlgorithm::Jacobi,
    SvdAlgorithm::JacobiBatched,
    SvdAlgorithm::ApproxBatched,
    SvdAlgorithm::Polar,
];

fn tol(n: usize, m: usize, compute: DType) -> f64 {
    10.0 * n.max(m) as f64 * u(compute) + 4.0 * (n.min(m) as f64).sqrt() * u(compute)
}

/// `(U, S, Vt)` of every batch entry of `ws`, computed with `alg` in `T`.
fn svd_with<T: Element>(ctx: &Context, ws: &[M], alg: SvdAlgorithm) -> Result<Vec<(M, Vec<f64>, M)>, Error> {
    ctx.set_svd_algorithm(alg);
    let (n, m, b) = (ws[0].r, ws[0].c, ws.len());
    let r = n.min(m);
    let mut wb = Buf::<T>::from_batch(ws, Layout::RowMajor);
    let mut ub = Buf::<T>::poisoned(n, r, b, Layout::ColMajor);
    let mut sb = Buf::<T>::poisoned(r, 1, b, Layout::ColMajor);
    let mut vb = Buf::<T>::poisoned(r, m, b, Layout::RowMajor);
    let (ub0, sb0, vb0) = (ub.bits(), sb.bits(), vb.bits());
    let (ud, sd, vd) = (ub.desc(), sb.desc(), vb.desc());
    let res = unsafe { ctx.svd_raw(&wb.desc(), &SvdOut { u: Some(&ud), s: &sd, vt: Some(&vd) }, T::DTYPE) };
    if let Err(e) = res {
        assert!(ub0 == ub.bits() && sb0 == sb.bits() && vb0 == vb.bits(), "a rejected SVD ({e}) wrote an output");
        return Err(e);
    }
    assert!(ub.padding_untouched() && vb.padding_untouched() && sb.padding_untouched());
    Ok((0..b).map(|i| (ub.get(i), sb.get(i).d, vb.get(i))).collect())
}

fn certify(w: &M, (u, s, vt): &(M, Vec<f64>, M), t: f64, what: &str) {
    assert!(ortho_err_cols(u) <= t && ortho_err_cols(&vt.t()) <= t, "{what}: factors not orthonormal");
    assert!(s.iter().all(|x| *x >= 0.0) && s.windows(2).all(|p| p[0] >= p[1]), "{what}: S {s:?}");
    let e = u.mul(&vt.scale_rows(s)).sub(w).fro() / w.fro();
    assert!(e <= t, "{what}: reconstruction {e:e} > {t:e}");
}

/// `||u - u_ref||_2` allowed for singular vector `t` of a factorization with backward error
/// `t_rel * ||W||`: Wedin's bound `t_rel ||W|| / gap` with the gap to the other singular values
/// (and to 0, for the complement a thin factor leaves out), capped at 0.5 — a sign flip is off
/// by 2, so it never passes.
fn vector_tol(s_ref: &[f64], t: usize, t_rel: f64, w_norm: f64) -> f64 {
    let gap = (0..s_ref.len()).filter(|&q| q != t).map(|q| (s_ref[q] - s_ref[t]).abs()).fold(s_ref[t], f64::min);
    (4.0 * t_rel * w_norm / gap.max(f64::MIN_POSITIVE)).min(0.5)
}

fn col_dist(a: &M, b: &M, t: usize) -> f64 {
    (0..a.r).map(|i| (a.at(i, t) - b.at(i, t)).powi(2)).sum::<f64>().sqrt()
}

/// Every explicit algorithm against an independent f64 reference (a one-sided Jacobi SVD in the
/// test support, no library code): the f64 certificate (orthonormal factors, reconstruction),
/// the singular values, the sign convention, and each singular vector where its gap determines
/// it.
#[test]
fn every_explicit_algorithm_matches_the_f64_reference_over_shapes() {
    let ctx = Context::cpu();
    let mut rng = rng();
    for (n, m) in [(1, 1), (5, 3), (3, 5), (16, 16), (32, 32), (40, 13), (13, 40), (64, 48)] {
        let ws: Vec<M> = (0..3).map(|_| randn(&mut rng, n, m)).collect();
        let refs: Vec<(M, Vec<f64>, M)> = ws.iter().map(jacobi_svd).collect();
        for (w, (ur, sr, vtr)) in ws.iter().zip(&refs) {
            // The reference itself is an SVD of W to f64 accuracy.
            certify(w, &(ur.clone(), sr.clone(), vtr.clone()), tol(n, m, DType::F64), &format!("reference {n}x{m}"));
        }
        for alg in EXPLICIT {
            if alg == SvdAlgorithm::JacobiBatched && n.max(m) > 32 {
                continue; // refused: see the precondition test
            }
            for (got, what_t) in [
                (svd_with::<f32>(&ctx, &ws, alg).unwrap(), DType::F32),
                (svd_with::<f64>(&ctx, &ws, alg).unwrap(), DType::F64),
            ] {
                for (i, g) in got.iter().enumerate() {
                    let what = format!("{alg:?} {n}x{m} {} #{i}", what_t.name());
                    let t = tol(n, m, what_t);
                    certify(&ws[i], g, t, &what);
                    let (ur, sr, vtr) = &refs[i];
                    let smax = sr[0];
                    for (a, b) in g.1.iter().zip(sr) {
                        assert!((a - b).abs() <= t * smax, "{what}: S {a} vs f64 reference {b}");
                    }
                    assert!(
                        sign_violations(&g.0).is_empty(),
                        "{what}: sign convention broken in columns {:?}",
                        sign_violations(&g.0)
                    );
                    let vt_t = g.2.t();
                    let vtr_t = vtr.t();
                    for c in 0..n.min(m) {
                        let vt = vector_tol(sr, c, t, ws[i].fro());
                        let (du, dv) = (col_dist(&g.0, ur, c), col_dist(&vt_t, &vtr_t, c));
                        assert!(
                            du <= vt && dv <= vt,
                            "{what}: singular vectors {c}: |du| {du:e}, |dv| {dv:e} > {vt:e}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn jacobi_batched_refuses_matrices_above_32_before_writing() {
    let ctx = Context::cpu();
    let mut rng = rng();
    for (n, m) in [(33, 5), (5, 33), (40, 40)] {
        let e = svd_with::<f32>(&ctx, &[randn(&mut rng, n, m)], SvdAlgorithm::JacobiBatched).unwrap_err();
        assert_eq!(e.status(), Status::Precondition, "{e}");
        assert!(e.to_string().contains("gesvdjBatched") && e.to_string().contains("32"), "{e}");
    }
    // The workspace query refuses it too.
    ctx.set_svd_algorithm(SvdAlgorithm::JacobiBatched);
    let mut w = Buf::<f32>::from(&randn(&mut rng, 40, 13), Layout::ColMajor);
    assert_eq!(ctx.svd_workspace_size(&w.desc(), DType::F32).unwrap_err().status(), Status::Precondition);
    // At the limit it is served.
    svd_with::<f32>(&ctx, &[randn(&mut rng, 32, 32)], SvdAlgorithm::JacobiBatched).unwrap();
}

#[test]
fn randomized_serves_only_a_top_k_decomposition() {
    let ctx = Context::cpu();
    let mut rng = rng();
    let (n, m, k) = (24, 40, 5);
    // Singular values 2^-i: a well separated top k.
    let s: Vec<f64> = (0..n).map(|i| 0.5f64.powi(i as i32)).collect();
    let w = orthonormal(&mut rng, n, n).mul(&orthonormal(&mut rng, m, n).t().scale_rows(&s));
    // A plain SVD is refused.
    let e = svd_with::<f64>(&ctx, std::slice::from_ref(&w), SvdAlgorithm::Randomized).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument, "{e}");
    assert!(e.to_string().contains("top k"), "{e}");
    let mut wb = Buf::<f64>::from(&w, Layout::RowMajor);
    let wd = wb.desc();
    assert_eq!(ctx.svd_workspace_size(&wd, DType::F64).unwrap_err().status(), Status::InvalidArgument);
    // A decomposition that asks for a low part is refused before anything is written.
    let mut uh = Buf::<f64>::poisoned(n, k, 1, Layout::ColMajor);
    let mut sh = Buf::<f64>::poisoned(k, 1, 1, Layout::ColMajor);
    let mut vh = Buf::<f64>::poisoned(k, m, 1, Layout::RowMajor);
    let mut sl = Buf::<f64>::poisoned(n - k, 1, 1, Layout::ColMajor);
    let (uhd, shd, vhd, sld) = (uh.desc(), sh.desc(), vh.desc(), sl.desc());
    let before = (uh.bits(), sh.bits(), vh.bits(), sl.bits());
    let with_low =
        Parts { u_high: Some(&uhd), s_high: Some(&shd), v_high: Some(&vhd), s_low: Some(&sld), ..Default::default() };
    let e = unsafe { ctx.decompose_raw(&wd, k, &with_low, DType::F64) }.unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument, "{e}");
    assert_eq!(before, (uh.bits(), sh.bits(), vh.bits(), sl.bits()));
    // k = 0 cannot be served (cusolverDnXgesvdr needs k >= 1).
    let e = unsafe { ctx.decompose_raw(&wd, 0, &Parts::default(), DType::F64) }.unwrap_err();
    assert_eq!(e.status(), Status::Precondition, "{e}");
    // Nor k = R (it needs k + p < min(N, M)). A 0-sized low part (N x 0 at k = R) is no request
    // for one: the refusal names k, not the low part.
    let mut ul = Buf::<f64>::poisoned(n, 0, 1, Layout::ColMajor);
    let mut vl = Buf::<f64>::poisoned(0, m, 1, Layout::RowMajor);
    let (uld, vld) = (ul.desc(), vl.desc());
    for empty_low in
        [Parts { u_low: Some(&uld), ..Default::default() }, Parts { v_low: Some(&vld), ..Default::default() }]
    {
        let e = unsafe { ctx.decompose_raw(&wd, n, &empty_low, DType::F64) }.unwrap_err();
        assert_eq!(e.status(), Status::Precondition, "{e}");
    }
    // Only the high parts: served, and (on the CPU, exactly) equal to the full decomposition's.
    let high = Parts { u_high: Some(&uhd), s_high: Some(&shd), v_high: Some(&vhd), ..Default::default() };
    assert!(ctx.decompose_workspace_size_k(&wd, k, DType::F64).unwrap() > 0);
    assert!(ctx.decompose_workspace_size(&wd, DType::F64).unwrap() > 0);
    unsafe { ctx.decompose_raw(&wd, k, &high, DType::F64) }.unwrap();
    let reference = Context::cpu();
    let mut ru = Buf::<f64>::poisoned(n, k, 1, Layout::ColMajor);
    let mut rs = Buf::<f64>::poisoned(k, 1, 1, Layout::ColMajor);
    let mut rv = Buf::<f64>::poisoned(k, m, 1, Layout::RowMajor);
    let (rud, rsd, rvd) = (ru.desc(), rs.desc(), rv.desc());
    unsafe {
        reference.decompose_raw(
            &wd,
            k,
            &Parts { u_high: Some(&rud), s_high: Some(&rsd), v_high: Some(&rvd), ..Default::default() },
            DType::F64,
        )
    }
    .unwrap();
    let t = 1e-10;
    assert!(
        uh.get(0).max_abs_diff(&ru.get(0)) <= t
            && vh.get(0).max_abs_diff(&rv.get(0)) <= t
            && sh.get(0).max_abs_diff(&rs.get(0)) <= t
    );
    for (i, (got, want)) in sh.get(0).d.iter().zip(&s).enumerate() {
        assert!((got - want).abs() <= t, "S_high[{i}]");
    }
}

/// A top-`k` routine is the randomized SVD's alone: planned for any other algorithm it is an
/// internal error, never a full SVD silently read as the top `k`; the full routine passes.
#[test]
fn a_top_k_routine_is_refused_for_every_algorithm_but_the_randomized() {
    let mut wb = Buf::<f32>::from(&randn(&mut rng(), 12, 8), Layout::RowMajor);
    let w = wb.desc();
    use SvdAlgorithm::*;
    for algorithm in [Auto, Qr, Jacobi, JacobiBatched, ApproxBatched, Polar] {
        let top = SvdRoutine { algorithm, top_k: Some(3), diagnostics: false };
        let e = check_routine(&w, DType::F32, top).unwrap_err();
        assert_eq!(e.status(), Status::Internal, "{algorithm:?}: {e}");
        check_routine(&w, DType::F32, SvdRoutine::full(algorithm)).unwrap();
    }
    check_routine(&w, DType::F32, SvdRoutine { algorithm: Randomized, top_k: Some(3), diagnostics: false }).unwrap();
}

#[test]
fn settings_round_trip_and_default() {
    let ctx = Context::cpu();
    assert_eq!((ctx.svd_algorithm(), ctx.math_mode()), (SvdAlgorithm::Auto, MathMode::Exact));
    for v in 0..7 {
        let a = SvdAlgorithm::from_raw(v).unwrap();
        assert_eq!(a as i32, v);
        ctx.set_svd_algorithm(a);
        assert_eq!(ctx.svd_algorithm(), a);
    }
    assert!(SvdAlgorithm::from_raw(7).is_none() && SvdAlgorithm::from_raw(-1).is_none());
    for v in 0..3 {
        ctx.set_math_mode(MathMode::from_raw(v).unwrap());
        assert_eq!(ctx.math_mode() as i32, v);
    }
    assert!(MathMode::from_raw(3).is_none());
    // Auto never resolves to an approximate method.
    for (m, n) in [(1, 1), (32, 32), (33, 1), (4096, 4096)] {
        assert!(!SvdAlgorithm::Auto.resolve(m, n).is_approximate());
    }
}

// ---------------------------------------------------------------------------------------------
// Call sequences.

fn recorded() -> (Arc<Recording<CpuExecutor>>, Context) {
    let rec = Arc::new(Recording::new(CpuExecutor));
    (rec.clone(), Context::with_executor(rec))
}

fn gesvds(calls: &[Call]) -> Vec<osft::exec::GesvdArgs> {
    calls.iter().filter_map(|c| if let Call::Gesvd(g) = c { Some(*g) } else { None }).collect()
}

#[test]
fn auto_picks_gesvdj_batched_for_small_and_qr_for_large_and_overrides_are_honoured() {
    let (rec, ctx) = recorded();
    let mut rng = rng();
    for ((n, m), b, want) in [
        ((20, 12), 6, SvdAlgorithm::JacobiBatched),
        ((32, 32), 2, SvdAlgorithm::JacobiBatched),
        ((40, 13), 3, SvdAlgorithm::Qr),
        ((13, 40), 1, SvdAlgorithm::Qr),
    ] {
        let ws: Vec<M> = (0..b).map(|_| randn(&mut rng, n, m)).collect();
        svd_with::<f32>(&ctx, &ws, SvdAlgorithm::Auto).unwrap();
        let g = gesvds(&rec.take());
        assert_eq!(g.len(), 1, "one batched call for {n}x{m} x{b}");
        assert_eq!((g[0].algorithm, g[0].batch, g[0].m, g[0].n), (want, b, n.max(m), n.min(m)), "{n}x{m}");
    }
    for alg in [
        SvdAlgorithm::Qr,
        SvdAlgorithm::Jacobi,
        SvdAlgorithm::ApproxBatched,
        SvdAlgorithm::Polar,
        SvdAlgorithm::JacobiBatched,
    ] {
        let ws: Vec<M> = (0..4).map(|_| randn(&mut rng, 9, 7)).collect();
        svd_with::<f64>(&ctx, &ws, alg).unwrap();
        let g = gesvds(&rec.take());
        assert_eq!(g.iter().map(|g| g.algorithm).collect::<Vec<_>>(), vec![alg], "{alg:?} honoured");
        // Packed batch, as gesvdjBatched and gesvdaStridedBatched require.
        assert_eq!((g[0].a.ld, g[0].a.stride, g[0].stride_s, g[0].u.stride), (9, 63, 7, 63));
    }
    // A refused explicit choice issues no SVD at all (the query refuses it first).
    let _ = svd_with::<f32>(&ctx, &[randn(&mut rng, 50, 40)], SvdAlgorithm::JacobiBatched).unwrap_err();
    assert!(gesvds(&rec.take()).is_empty());
}

#[test]
fn randomized_decomposition_is_one_gesvdr_with_k() {
    let (rec, ctx) = recorded();
    ctx.set_svd_algorithm(SvdAlgorithm::Randomized);
    let mut rng = rng();
    let (n, m, k, b) = (30, 18, 4, 3);
    let ws: Vec<M> = (0..b).map(|_| randn(&mut rng, n, m)).collect();
    let mut wb = Buf::<f32>::from_batch(&ws, Layout::RowMajor);
    let mut uh = Buf::<f32>::poisoned(n, k, b, Layout::ColMajor);
    let mut vh = Buf::<f32>::poisoned(k, m, b, Layout::RowMajor);
    let (uhd, vhd) = (uh.desc(), vh.desc());
    unsafe {
        ctx.decompose_raw(
            &wb.desc(),
            k,
            &Parts { u_high: Some(&uhd), v_high: Some(&vhd), ..Default::default() },
            DType::F32,
        )
    }
    .unwrap();
    let calls = rec.take();
    let r: Vec<_> = calls.iter().filter_map(|c| if let Call::Gesvdr(g) = c { Some(*g) } else { None }).collect();
    assert_eq!(r.len(), 1, "{calls:?}");
    assert_eq!((r[0].m, r[0].n, r[0].k, r[0].p, r[0].niters, r[0].batch), (n, m, k, 10, GESVDR_ITERATIONS, b));
    assert!(gesvds(&calls).is_empty());
    // Near the top: the oversampling shrinks to keep k + p < min(m, n), as cuSOLVER requires.
    unsafe { ctx.decompose_raw(&wb.desc(), m - 3, &Parts::default(), DType::F32) }.unwrap();
    let r: Vec<_> =
        rec.take().into_iter().filter_map(|c| if let Call::Gesvdr(g) = c { Some(g) } else { None }).collect();
    assert_eq!((r[0].k, r[0].p), (m - 3, 2));
    // k = min(m, n) - 1 leaves no room for oversampling: p = 0 is still served.
    unsafe { ctx.decompose_raw(&wb.desc(), m - 1, &Parts::default(), DType::F32) }.unwrap();
    let r: Vec<_> =
        rec.take().into_iter().filter_map(|c| if let Call::Gesvdr(g) = c { Some(g) } else { None }).collect();
    assert_eq!((r[0].k, r[0].p), (m - 1, 0));
    // k = min(m, n) (nothing trainable) cannot be served by Xgesvdr: a precondition error,
    // before any gesvdr call.
    let e = unsafe { ctx.decompose_raw(&wb.desc(), m, &Parts::default(), DType::F32) }.unwrap_err();
    assert_eq!(e.status(), Status::Precondition, "{e}");
    assert!(e.to_string().contains("k < min(m, n)"), "{e}");
    assert!(rec.take().iter().all(|c| !matches!(c, Call::Gesvdr(_))));
}

fn gemm_computes(calls: &[Call]) -> Vec<ComputeType> {
    calls.iter().filter_map(|c| if let Call::Gemm(g) = c { Some(g.compute) } else { None }).collect()
}

#[test]
fn math_mode_reaches_every_data_gemm_and_no_diagnostic() {
    let (rec, ctx) = recorded();
    let mut rng = rng();
    let (n, m, k) = (12, 9, 3);
    let x0 = randn(&mut rng, n, m);
    let project = |ctx: &Context, dt: DType| -> Vec<f64> {
        macro_rules! run {
            ($t:ty) => {{
                let mut u = Buf::<$t>::from(&orthonormal(&mut seeded(1), n, k), Layout::ColMajor);
                let mut x = Buf::<$t>::from(&x0, Layout::RowMajor);
                let (ud, xd) = (u.desc(), x.desc());
                unsafe { ctx.project_raw(Side::Left, &Bases { u: Some(&ud), v: None }, &xd, None) }.unwrap();
                x.get(0).d
            }};
        }
        match dt {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            _ => run!(osft::bf16),
        }
    };
    let exact = project(&ctx, DType::F32);
    rec.take();
    for (mode, want) in [
        (MathMode::Tf32, ComputeType::F32FastTf32),
        (MathMode::Bf16, ComputeType::F32FastBf16),
        (MathMode::Exact, ComputeType::F32),
    ] {
        ctx.set_math_mode(mode);
        let got = project(&ctx, DType::F32);
        assert_eq!(gemm_computes(&rec.take()), vec![want, want], "{mode:?}");
        // The CPU computes every mode exactly: bit-identical results.
        assert_eq!(got, exact, "{mode:?} on the CPU is exact");
        // f64 stays exact; half data keeps CUBLAS_COMPUTE_32F.
        project(&ctx, DType::F64);
        assert_eq!(gemm_computes(&rec.take()), vec![ComputeType::F64; 2]);
        project(&ctx, DType::BF16);
        assert_eq!(gemm_computes(&rec.take()), vec![ComputeType::F32; 2]);
    }
    // Reconstruction follows the mode; diagnostics (leakage) never do.
    ctx.set_math_mode(MathMode::Tf32);
    let mut uu = Buf::<f32>::from(&orthonormal(&mut rng, n, k), Layout::ColMajor);
    let mut ss = Buf::<f32>::from(&M { r: k, c: 1, d: vec![3.0, 2.0, 1.0] }, Layout::ColMajor);
    let mut vv = Buf::<f32>::from(&orthonormal(&mut rng, m, k).t(), Layout::RowMajor);
    let mut out = Buf::<f32>::poisoned(n, m, 1, Layout::RowMajor);
    let term = osft::ops::reconstruct::Term { u: &uu.desc(), s: &ss.desc(), v: &vv.desc() };
    unsafe { ctx.reconstruct_raw(&[term], &out.desc(), DType::F32) }.unwrap();
    let c = gemm_computes(&rec.take());
    assert!(!c.is_empty() && c.iter().all(|c| *c == ComputeType::F32FastTf32), "{c:?}");
    let mut x = Buf::<f32>::from(&x0, Layout::RowMajor);
    unsafe { ctx.leakage_raw(Side::Left, &uu.desc(), &x.desc()) }.unwrap();
    let c = gemm_computes(&rec.take());
    assert!(!c.is_empty() && c.iter().all(|c| *c == ComputeType::F32), "diagnostics stay exact: {c:?}");
}

#[test]
fn the_cpu_executor_enforces_each_routines_preconditions() {
    use osft::exec::{Executor, GesvdArgs, GesvdrArgs, Strided};
    let cpu = CpuExecutor;
    let (m, n, b) = (8usize, 6usize, 2usize);
    let mut a = vec![0f64; 2 * m * n * b];
    let mut s = vec![0f64; 2 * n * b];
    let mut u = vec![0f64; 2 * m * n * b];
    let mut vt = vec![0f64; 2 * n * n * b];
    let mut work = vec![0u8; 1 << 20];
    let st = |p: &mut Vec<f64>, ld: usize, stride: usize| Strided {
        addr: p.as_mut_ptr() as usize,
        dtype: DType::F64,
        ld,
        stride,
    };
    let packed = GesvdArgs {
        m,
        n,
        a: st(&mut a, m, m * n),
        s: s.as_mut_ptr() as usize,
        stride_s: n,
        u: st(&mut u, m, m * n),
        vt: st(&mut vt, n, n * n),
        batch: b,
        algorithm: SvdAlgorithm::JacobiBatched,
    };
    let (wa, wl) = (work.as_mut_ptr() as usize, work.len());
    let run = |g: &GesvdArgs| unsafe { cpu.gesvd_strided_batched(g, wa, wl) };
    for alg in [
        SvdAlgorithm::Qr,
        SvdAlgorithm::Jacobi,
        SvdAlgorithm::JacobiBatched,
        SvdAlgorithm::ApproxBatched,
        SvdAlgorithm::Polar,
        SvdAlgorithm::Auto,
    ] {
        run(&GesvdArgs { algorithm: alg, ..packed }).unwrap();
    }
    let precondition = |r: osft::Result<()>| assert_eq!(r.unwrap_err().status(), Status::Precondition);
    // gesvdjBatched and gesvdaStridedBatched need packed batches; the per-matrix routines do not.
    let padded = GesvdArgs { a: st(&mut a, m + 1, (m + 1) * n), ..packed };
    precondition(run(&padded));
    precondition(run(&GesvdArgs { algorithm: SvdAlgorithm::ApproxBatched, ..padded }));
    precondition(run(&GesvdArgs { stride_s: n + 1, ..packed }));
    run(&GesvdArgs { algorithm: SvdAlgorithm::Qr, ..padded }).unwrap();
    run(&GesvdArgs { algorithm: SvdAlgorithm::Jacobi, stride_s: n + 1, ..padded }).unwrap();
    // m >= n for every routine; the randomized SVD is not the full-SVD primitive.
    precondition(run(&GesvdArgs { m: n - 1, n, algorithm: SvdAlgorithm::Polar, ..packed }));
    precondition(run(&GesvdArgs { algorithm: SvdAlgorithm::Randomized, ..packed }));
    precondition(cpu.gesvd_buffer_size(33, 4, DType::F32, 1, SvdAlgorithm::JacobiBatched).map(|_| ()));
    precondition(cpu.gesvd_buffer_size(4, 4, DType::BF16, 1, SvdAlgorithm::Qr).map(|_| ()));
    // gesvdr: 1 <= k < min(m, n), k + p < min(m, n) (strictly, as cuSOLVER's table says), room
    // for min(m, n) columns of U.
    let r = GesvdrArgs {
        m,
        n,
        k: 2,
        p: 3,
        niters: 2,
        a: packed.a,
        s: packed.s,
        stride_s: n,
        u: packed.u,
        vt: st(&mut vt, 2, 2 * n),
        batch: b,
    };
    let runr = |g: &GesvdrArgs| unsafe { cpu.gesvdr_strided_batched(g, wa, wl) };
    runr(&r).unwrap();
    precondition(runr(&GesvdrArgs { k: 0, ..r }));
    precondition(runr(&GesvdrArgs { p: 4, ..r }));
    precondition(runr(&GesvdrArgs { u: Strided { stride: m * 2, ..r.u }, ..r }));
    precondition(cpu.gesvdr_buffer_size(m, n, 7, 0, 2, DType::F64, 1).map(|_| ()));
    precondition(cpu.gesvdr_buffer_size(m, n, n, 0, 2, DType::F64, 1).map(|_| ()));
    cpu.gesvdr_buffer_size(m, n, n - 1, 0, 2, DType::F64, 1).unwrap();
}
