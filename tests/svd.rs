//! SVD and decompose against properties that certify a thin SVD in f64: `U` has orthonormal
//! columns, `Vt` orthonormal rows, `S` is non-negative and descending, and `U diag(S) Vt`
//! reproduces `W`. Together these determine `S` uniquely, so no second SVD is needed as a
//! reference. Run over shapes, layouts, input/output dtypes and batches.

use osft::ops::decompose::Parts;
use osft::ops::svd::{SvdOut, SvdProblem};
use osft::{bf16, f16, Context, DType, Element};
use osft_test_support::*;

/// Tolerance for an SVD of an `n x m` matrix computed in `compute` and stored in `out`:
/// backward error `O(max(n, m) u_compute)` plus the rounding of the stored factors,
/// `||dU||_F <= u_out sqrt(R)` per factor.
fn tol(n: usize, m: usize, compute: DType, out: DType) -> f64 {
    10.0 * n.max(m) as f64 * u(compute) + 4.0 * (n.min(m) as f64).sqrt() * u(out)
}

struct Got {
    u: M,
    s: Vec<f64>,
    vt: M,
}

fn check_certificate(w: &M, g: &Got, t: f64, what: &str) {
    let r = w.r.min(w.c);
    assert_eq!((g.u.r, g.u.c, g.vt.r, g.vt.c, g.s.len()), (w.r, r, r, w.c, r), "{what}: shapes");
    let eu = ortho_err_cols(&g.u);
    let ev = ortho_err_cols(&g.vt.t());
    assert!(eu <= t, "{what}: U orthonormality {eu:e} > {t:e}");
    assert!(ev <= t, "{what}: Vt orthonormality {ev:e} > {t:e}");
    assert!(g.s.iter().all(|s| *s >= 0.0), "{what}: negative singular value {:?}", g.s);
    assert!(g.s.windows(2).all(|p| p[0] >= p[1]), "{what}: not descending {:?}", g.s);
    let rec = g.u.mul(&g.vt.scale_rows(&g.s));
    let e = rec.sub(w).fro() / w.fro().max(f64::MIN_POSITIVE);
    assert!(e <= t, "{what}: reconstruction {e:e} > {t:e}");
}

/// The documented sign convention: in each column of U the entry of largest magnitude is
/// positive (a tie within the storage rounding may go either way).
fn check_signs(g: &Got, out: DType, what: &str) {
    for j in 0..g.u.c {
        let col: Vec<f64> = (0..g.u.r).map(|i| g.u.at(i, j)).collect();
        let maxabs = col.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let maxpos = col.iter().fold(f64::MIN, |a, v| a.max(*v));
        assert!(maxpos >= maxabs * (1.0 - 4.0 * u(out)), "{what}: column {j} breaks the sign convention: {col:?}");
    }
}

fn run_svd<TW: Element, TO: Element>(ctx: &Context, ws: &[M], lw: Layout, lo: Layout, compute: DType) -> Vec<Got> {
    let (n, m, b) = (ws[0].r, ws[0].c, ws.len());
    let r = n.min(m);
    let mut wb = Buf::<TW>::from_batch(ws, lw);
    let mut ub = Buf::<TO>::poisoned(n, r, b, lo);
    let mut sb = Buf::<TO>::poisoned(r, 1, b, Layout::ColMajor);
    let mut vb = Buf::<TO>::poisoned(r, m, b, lo);
    let before = wb.bits();
    let (ud, sd, vd) = (ub.desc(), sb.desc(), vb.desc());
    unsafe { ctx.svd_raw(&wb.desc(), &SvdOut { u: Some(&ud), s: &sd, vt: Some(&vd) }, compute) }.unwrap();
    assert_eq!(before, wb.bits(), "input W was modified");
    assert!(ub.padding_untouched() && vb.padding_untouched() && sb.padding_untouched(), "wrote outside the outputs");
    (0..b).map(|i| Got { u: ub.get(i), s: sb.get(i).d, vt: vb.get(i) }).collect()
}

const SHAPES: [(usize, usize); 10] =
    [(1, 1), (1, 7), (7, 1), (5, 3), (3, 5), (16, 16), (40, 13), (13, 40), (64, 64), (100, 30)];

#[test]
fn svd_f32_f64_all_shapes_and_layouts() {
    let ctx = Context::cpu();
    let mut rng = rng();
    for (n, m) in SHAPES {
        let w = randn(&mut rng, n, m);
        for lw in LAYOUTS {
            for lo in [Layout::RowMajor, Layout::PaddedCol(2)] {
                let what = format!("{n}x{m} W {lw:?} out {lo:?}");
                let g = &run_svd::<f64, f64>(&ctx, std::slice::from_ref(&w), lw, lo, DType::F64)[0];
                check_certificate(&w, g, tol(n, m, DType::F64, DType::F64), &format!("f64 {what}"));
                check_signs(g, DType::F64, &what);
                let w32 = w.round::<f32>();
                let g = &run_svd::<f32, f32>(&ctx, std::slice::from_ref(&w32), lw, lo, DType::F32)[0];
                check_certificate(&w32, g, tol(n, m, DType::F32, DType::F32), &format!("f32 {what}"));
                check_signs(g, DType::F32, &what);
            }
        }
    }
}

#[test]
fn svd_half_inputs_are_upcast_and_outputs_rounded() {
    let ctx = Context::cpu();
    let mut rng = rng();
    for (n, m) in [(9, 6), (6, 9), (32, 32)] {
        let w = randn(&mut rng, n, m);
        // bf16 W -> f32 compute -> f32 outputs: W is exactly the bf16 values.
        let wb = w.round::<bf16>();
        let g =
            &run_svd::<bf16, f32>(&ctx, std::slice::from_ref(&wb), Layout::RowMajor, Layout::ColMajor, DType::F32)[0];
        check_certificate(&wb, g, tol(n, m, DType::F32, DType::F32), "bf16 -> f32");
        // f16 W -> f64 compute -> bf16 outputs.
        let wh = w.round::<f16>();
        let g =
            &run_svd::<f16, bf16>(&ctx, std::slice::from_ref(&wh), Layout::ColMajor, Layout::RowMajor, DType::F64)[0];
        check_certificate(&wh, g, tol(n, m, DType::F64, DType::BF16), "f16 -> f64 -> bf16");
        // f32 W -> f64 compute -> f16 outputs.
        let g = &run_svd::<f32, f16>(&ctx, &[w.round::<f32>()], Layout::Spaced, Layout::PaddedRow(1), DType::F64)[0];
        check_certificate(&w.round::<f32>(), g, tol(n, m, DType::F64, DType::F16), "f32 -> f64 -> f16");
    }
}

#[test]
fn svd_rank_deficient_has_zero_tail() {
    let ctx = Context::cpu();
    let mut rng = rng();
    for (n, m, r) in [(20, 12, 3), (12, 20, 5), (16, 16, 1), (8, 8, 0)] {
        let w = if r == 0 { M::zeros(n, m) } else { randn(&mut rng, n, r).mul(&randn(&mut rng, r, m)) };
        let g = &run_svd::<f64, f64>(&ctx, std::slice::from_ref(&w), Layout::RowMajor, Layout::RowMajor, DType::F64)[0];
        let t = tol(n, m, DType::F64, DType::F64);
        check_certificate(&w, g, t, &format!("rank {r} {n}x{m}"));
        let s0 = g.s[0].max(1.0);
        assert!(g.s[r..].iter().all(|s| *s <= t * s0), "tail not ~0: {:?}", g.s);
        if r > 0 {
            assert!(g.s[r - 1] > 1e3 * t * s0, "rank lost: {:?}", g.s);
        }
    }
}

#[test]
fn svd_strided_batch_matches_single_calls() {
    let ctx = Context::cpu();
    let mut rng = rng();
    for (n, m, b) in [(7, 5, 6), (5, 7, 3), (33, 33, 4), (1, 4, 5)] {
        let ws: Vec<M> = (0..b).map(|_| randn(&mut rng, n, m)).collect();
        for lw in [Layout::RowMajor, Layout::ColMajor, Layout::Spaced] {
            let batch = run_svd::<f64, f64>(&ctx, &ws, lw, Layout::RowMajor, DType::F64);
            for (i, (w, g)) in ws.iter().zip(&batch).enumerate() {
                let t = tol(n, m, DType::F64, DType::F64);
                check_certificate(w, g, t, &format!("batch entry {i} {n}x{m} {lw:?}"));
                let single = &run_svd::<f64, f64>(&ctx, std::slice::from_ref(w), lw, Layout::RowMajor, DType::F64)[0];
                let ds = g.s.iter().zip(&single.s).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                assert!(ds <= t * single.s[0], "batch entry {i}: singular values differ from a single call by {ds:e}");
            }
        }
    }
}

#[test]
fn svd_batch_is_streamed_through_a_small_workspace() {
    // A caller workspace that holds only part of the batch: the op processes it in chunks.
    let ctx = Context::cpu();
    let mut rng = rng();
    let ws: Vec<M> = (0..9).map(|_| randn(&mut rng, 12, 10)).collect();
    let wb = Buf::<f64>::from_batch(&ws, Layout::RowMajor);
    let full = ctx.svd_workspace_size(&wb.desc, DType::F64).unwrap();
    let one = ctx.svd_workspace_size(&osft::MatDesc { batch: 1, ..wb.desc }, DType::F64).unwrap();
    assert!(one < full);
    let mut space = vec![0u8; one * 2 + 512];
    unsafe { ctx.set_workspace(space.as_mut_ptr() as usize, space.len()).unwrap() };
    let got = run_svd::<f64, f64>(&ctx, &ws, Layout::RowMajor, Layout::ColMajor, DType::F64);
    for (w, g) in ws.iter().zip(&got) {
        check_certificate(w, g, tol(12, 10, DType::F64, DType::F64), "chunked batch");
    }
    // Too small for even one matrix: a clear error, nothing written.
    unsafe { ctx.set_workspace(space.as_mut_ptr() as usize, one / 2).unwrap() };
    let mut wb = Buf::<f64>::from_batch(&ws, Layout::RowMajor);
    let mut sb = Buf::<f64>::poisoned(10, 1, 9, Layout::ColMajor);
    let sd = sb.desc();
    let err = unsafe { ctx.svd_raw(&wb.desc(), &SvdOut { u: None, s: &sd, vt: None }, DType::F64) }.unwrap_err();
    assert!(matches!(err, osft::Error::WorkspaceTooSmall { .. }), "{err}");
    assert!(sb.data.iter().all(|x| x.is_nan()));
}

#[test]
fn svd_list_of_shapes() {
    let ctx = Context::cpu();
    let mut rng = rng();
    let shapes = [(10, 4), (4, 10), (16, 16), (3, 1)];
    let ws: Vec<M> = shapes.iter().map(|(n, m)| randn(&mut rng, *n, *m)).collect();
    let mut wbs: Vec<Buf<f32>> = ws.iter().map(|w| Buf::from(&w.round::<f32>(), Layout::RowMajor)).collect();
    let mut ubs: Vec<Buf<f32>> =
        shapes.iter().map(|(n, m)| Buf::poisoned(*n, *n.min(m), 1, Layout::ColMajor)).collect();
    let mut sbs: Vec<Buf<f32>> = shapes.iter().map(|(n, m)| Buf::poisoned(*n.min(m), 1, 1, Layout::ColMajor)).collect();
    let mut vbs: Vec<Buf<f32>> =
        shapes.iter().map(|(n, m)| Buf::poisoned(*n.min(m), *m, 1, Layout::RowMajor)).collect();
    let wd: Vec<_> = wbs.iter_mut().map(|b| b.desc()).collect();
    let ud: Vec<_> = ubs.iter_mut().map(|b| b.desc()).collect();
    let sd: Vec<_> = sbs.iter_mut().map(|b| b.desc()).collect();
    let vd: Vec<_> = vbs.iter_mut().map(|b| b.desc()).collect();
    let problems: Vec<SvdProblem> = (0..shapes.len())
        .map(|i| SvdProblem { w: &wd[i], out: SvdOut { u: Some(&ud[i]), s: &sd[i], vt: Some(&vd[i]) } })
        .collect();
    unsafe { ctx.svd_list_raw(&problems, DType::F32) }.unwrap();
    for i in 0..shapes.len() {
        let g = Got { u: ubs[i].get(0), s: sbs[i].get(0).d, vt: vbs[i].get(0) };
        check_certificate(
            &ws[i].round::<f32>(),
            &g,
            tol(shapes[i].0, shapes[i].1, DType::F32, DType::F32),
            &format!("list {i}"),
        );
    }
}

/// Decompose and check the split: the parts are the leading/trailing pieces of a certified SVD,
/// `U_high^T U_low = 0`, `V_low V_high^T = 0`, and the two terms add up to `W`.
fn check_decompose<TW: Element, TO: Element>(ctx: &Context, w: &M, k: usize, lw: Layout, lo: Layout, compute: DType) {
    let (n, m) = (w.r, w.c);
    let r = n.min(m);
    let w_in = w.round::<TW>();
    let mut wb = Buf::<TW>::from(&w_in, lw);
    let mut uh = Buf::<TO>::poisoned(n, k, 1, lo);
    let mut sh = Buf::<TO>::poisoned(k, 1, 1, Layout::ColMajor);
    let mut vh = Buf::<TO>::poisoned(k, m, 1, lo);
    let mut ul = Buf::<TO>::poisoned(n, r - k, 1, lo);
    let mut sl = Buf::<TO>::poisoned(1, r - k, 1, Layout::RowMajor);
    let mut vl = Buf::<TO>::poisoned(r - k, m, 1, lo);
    let d = [uh.desc(), sh.desc(), vh.desc(), ul.desc(), sl.desc(), vl.desc()];
    let parts = Parts {
        u_high: Some(&d[0]),
        s_high: Some(&d[1]),
        v_high: Some(&d[2]),
        u_low: Some(&d[3]),
        s_low: Some(&d[4]),
        v_low: Some(&d[5]),
    };
    unsafe { ctx.decompose_raw(&wb.desc(), k, &parts, compute) }.unwrap();
    for b in [&uh, &sh, &vh, &ul, &sl, &vl] {
        assert!(b.padding_untouched());
    }
    let u = uh.get(0).t().add(&M::zeros(k, n)).t(); // copy
    let u_full = concat_cols(&u, &ul.get(0));
    let vt_full = concat_cols(&vh.get(0).t(), &vl.get(0).t()).t();
    let mut s = sh.get(0).d;
    s.extend(sl.get(0).d);
    let what = format!("decompose {n}x{m} k={k} {lw:?}->{lo:?} {}->{}", TW::DTYPE.name(), TO::DTYPE.name());
    let t = tol(n, m, compute, TO::DTYPE);
    check_certificate(&w_in, &Got { u: u_full, s: s.clone(), vt: vt_full }, t, &what);
    let cross_u = uh.get(0).t().mul(&ul.get(0)).fro();
    let cross_v = vl.get(0).mul(&vh.get(0).t()).fro();
    assert!(cross_u <= t && cross_v <= t, "{what}: parts not orthogonal {cross_u:e} {cross_v:e}");
}

fn concat_cols(a: &M, b: &M) -> M {
    let mut o = M::zeros(a.r, a.c + b.c);
    for i in 0..a.r {
        for j in 0..a.c {
            o.set(i, j, a.at(i, j));
        }
        for j in 0..b.c {
            o.set(i, a.c + j, b.at(i, j));
        }
    }
    o
}

#[test]
fn decompose_all_k_shapes_layouts_dtypes() {
    let ctx = Context::cpu();
    let mut rng = rng();
    for (n, m) in [(1, 5), (5, 1), (12, 8), (8, 12), (20, 20)] {
        let w = randn(&mut rng, n, m);
        let r = n.min(m);
        for k in [0, r / 2, r] {
            for (lw, lo) in [
                (Layout::RowMajor, Layout::RowMajor),
                (Layout::ColMajor, Layout::PaddedRow(2)),
                (Layout::Spaced, Layout::PaddedCol(1)),
            ] {
                check_decompose::<f64, f64>(&ctx, &w, k, lw, lo, DType::F64);
                check_decompose::<f32, f32>(&ctx, &w, k, lw, lo, DType::F32);
            }
            check_decompose::<bf16, f32>(&ctx, &w, k, Layout::RowMajor, Layout::RowMajor, DType::F32);
            check_decompose::<f16, bf16>(&ctx, &w, k, Layout::RowMajor, Layout::ColMajor, DType::F32);
        }
    }
}

/// An empty singular-value part (`S_high` at `k = 0`, `S_low` at `k = R`) may be any 0-sized
/// descriptor (the header's promise), `0 x 0` included; the other parts are then written exactly
/// as with the `0 x 1` vector.
#[test]
fn an_empty_singular_value_part_may_be_any_0_sized_descriptor() {
    let ctx = Context::cpu();
    let (n, m) = (7, 5);
    let mut wb = Buf::<f64>::from(&randn(&mut rng(), n, m), Layout::RowMajor);
    let w = wb.desc();
    for (k, empty_is_high) in [(0, true), (m, false)] {
        let run = |s_rows: usize, s_cols: usize| {
            let mut u = Buf::<f64>::poisoned(n, m, 1, Layout::RowMajor);
            let mut s = Buf::<f64>::poisoned(m, 1, 1, Layout::ColMajor);
            let mut v = Buf::<f64>::poisoned(m, m, 1, Layout::RowMajor);
            let mut empty = Buf::<f64>::poisoned(s_rows, s_cols, 1, Layout::ColMajor);
            let (ud, sd, vd, ed) = (u.desc(), s.desc(), v.desc(), empty.desc());
            let parts = if empty_is_high {
                Parts { s_high: Some(&ed), u_low: Some(&ud), s_low: Some(&sd), v_low: Some(&vd), ..Default::default() }
            } else {
                Parts {
                    u_high: Some(&ud),
                    s_high: Some(&sd),
                    v_high: Some(&vd),
                    s_low: Some(&ed),
                    ..Default::default()
                }
            };
            unsafe { ctx.decompose_raw(&w, k, &parts, DType::F64) }
                .unwrap_or_else(|e| panic!("k = {k}, empty S {s_rows} x {s_cols}: {e}"));
            (u.bits(), s.bits(), v.bits(), empty.bits())
        };
        let want = run(0, 1);
        for (r, c) in [(0, 0), (1, 0), (3, 0), (0, 4)] {
            assert_eq!(run(r, c), want, "k = {k}, empty S {r} x {c}");
        }
    }
}

#[test]
fn decompose_rejects_k_above_rank_and_leaves_outputs() {
    let ctx = Context::cpu();
    let mut rng = rng();
    let w = randn(&mut rng, 6, 4);
    let mut wb = Buf::<f32>::from(&w, Layout::RowMajor);
    let mut uh = Buf::<f32>::poisoned(6, 5, 1, Layout::RowMajor);
    let d = uh.desc();
    let before = uh.bits();
    let err =
        unsafe { ctx.decompose_raw(&wb.desc(), 5, &Parts { u_high: Some(&d), ..Default::default() }, DType::F32) }
            .unwrap_err();
    assert_eq!(err.status(), osft::Status::RankOutOfRange, "{err}");
    assert_eq!(before, uh.bits());
}
