//! Projection against an f64 reference `X - U (U^T X)`, `X - (X V^T) V`, both sides, over
//! shapes, layouts, dtypes, batches, in and out of place; the cached-projector strategy; the
//! two-phase sharded form against the unsharded result.

use osft::ops::project::{Bases, Strategy};
use osft::{bf16, f16, Context, DType, Element, Side};
use osft_test_support::*;

fn reference(side: Side, u: &M, v: &M, x: &M) -> M {
    let mut y = x.clone();
    if side != Side::Right {
        y = y.sub(&u.mul(&u.t().mul(&y)));
    }
    if side != Side::Left {
        y = y.sub(&y.mul(&v.t()).mul(v));
    }
    y
}

/// `||Y - Y_ref||_F <= tol * ||X||_F`: the output's rounding (`u_T`, twice for half types, whose
/// coefficients are rounded too) plus GEMM accumulation error `O((n + k) u_compute)` per side.
fn tol(dt: DType, n: usize, k: usize) -> f64 {
    3.0 * u(dt) + 4.0 * (n + k) as f64 * u(dt.default_compute())
}

struct Case {
    side: Side,
    n: usize,
    m: usize,
    ku: usize,
    kv: usize,
    batch: usize,
    batched_basis: bool,
    lx: Layout,
    lb: Layout,
    out: Option<Layout>,
}

fn run_case<T: Element>(ctx: &Context, rng: &mut StdRng, c: &Case) {
    let us: Vec<M> = (0..c.batch).map(|_| orthonormal(rng, c.n, c.ku).round::<T>()).collect();
    let vs: Vec<M> = (0..c.batch).map(|_| orthonormal(rng, c.m, c.kv).t().round::<T>()).collect();
    let xs: Vec<M> = (0..c.batch).map(|_| randn(rng, c.n, c.m).round::<T>()).collect();
    let nb = if c.batched_basis { c.batch } else { 1 };
    let mut ub = Buf::<T>::from_batch(&us[..nb], c.lb);
    let mut vb = Buf::<T>::from_batch(&vs[..nb], c.lb);
    let mut xb = Buf::<T>::from_batch(&xs, c.lx);
    let x_bits = xb.bits();
    let mut ob = c.out.map(|l| Buf::<T>::poisoned(c.n, c.m, c.batch, l));
    let (ud, vd, xd) = (ub.desc(), vb.desc(), xb.desc());
    let od = ob.as_mut().map(|o| o.desc());
    let bases = Bases { u: Some(&ud), v: Some(&vd) };
    unsafe { ctx.project_raw(c.side, &bases, &xd, od.as_ref()) }.unwrap();
    let what = format!(
        "{} {:?} {}x{} ku={} kv={} batch={} bb={} X {:?} basis {:?} out {:?}",
        T::DTYPE.name(),
        c.side,
        c.n,
        c.m,
        c.ku,
        c.kv,
        c.batch,
        c.batched_basis,
        c.lx,
        c.lb,
        c.out
    );
    let got = match &ob {
        Some(o) => {
            assert_eq!(x_bits, xb.bits(), "{what}: out-of-place modified X");
            assert!(o.padding_untouched(), "{what}: wrote outside out");
            o
        }
        None => {
            assert!(xb.padding_untouched(), "{what}: wrote outside X");
            &xb
        }
    };
    for (b, xb) in xs.iter().enumerate() {
        let bi = if c.batched_basis { b } else { 0 };
        let want = reference(c.side, &us[bi], &vs[bi], xb);
        let y = got.get(b);
        let k = c.ku.max(c.kv);
        let err = y.sub(&want).fro() / xb.fro();
        let t = tol(T::DTYPE, c.n.max(c.m), k);
        assert!(err <= t, "{what}: entry {b} error {err:e} > {t:e}");
        if c.side != Side::Right {
            let leak = us[bi].t().mul(&y).fro() / xb.fro();
            assert!(leak <= t, "{what}: left leakage {leak:e}");
        }
        if c.side != Side::Left {
            let leak = y.mul(&vs[bi].t()).fro() / xb.fro();
            assert!(leak <= t, "{what}: right leakage {leak:e}");
        }
    }
}

fn all_cases() -> Vec<Case> {
    let mut cases = vec![];
    for side in [Side::Left, Side::Right, Side::Both] {
        for (n, m) in [(1usize, 6usize), (6, 1), (12, 7), (7, 12), (24, 24)] {
            for (ku, kv) in [(0, 0), (n / 2, m / 2), (n, m), (1.min(n), m.saturating_sub(1))] {
                for lx in LAYOUTS {
                    cases.push(Case {
                        side,
                        n,
                        m,
                        ku,
                        kv,
                        batch: 1,
                        batched_basis: false,
                        lx,
                        lb: Layout::RowMajor,
                        out: None,
                    });
                }
                for lb in [Layout::ColMajor, Layout::Spaced] {
                    cases.push(Case {
                        side,
                        n,
                        m,
                        ku,
                        kv,
                        batch: 1,
                        batched_basis: false,
                        lx: Layout::RowMajor,
                        lb,
                        out: None,
                    });
                }
                for out in [Layout::RowMajor, Layout::PaddedCol(2), Layout::Spaced] {
                    cases.push(Case {
                        side,
                        n,
                        m,
                        ku,
                        kv,
                        batch: 1,
                        batched_basis: false,
                        lx: Layout::ColMajor,
                        lb: Layout::RowMajor,
                        out: Some(out),
                    });
                }
                for bb in [false, true] {
                    cases.push(Case {
                        side,
                        n,
                        m,
                        ku,
                        kv,
                        batch: 3,
                        batched_basis: bb,
                        lx: Layout::PaddedRow(1),
                        lb: Layout::ColMajor,
                        out: None,
                    });
                }
            }
        }
    }
    cases
}

#[test]
fn project_f64_and_f32_against_reference() {
    let ctx = Context::cpu();
    let mut rng = rng();
    for c in all_cases() {
        run_case::<f64>(&ctx, &mut rng, &c);
        run_case::<f32>(&ctx, &mut rng, &c);
    }
}

#[test]
fn project_half_types_against_reference() {
    let ctx = Context::cpu();
    let mut rng = rng();
    for c in all_cases().into_iter().step_by(3) {
        run_case::<bf16>(&ctx, &mut rng, &c);
        run_case::<f16>(&ctx, &mut rng, &c);
    }
}

#[test]
fn projector_strategies_agree_with_reference() {
    let ctx = Context::cpu();
    let mut rng = rng();
    for (n, m, ku, kv) in [(20, 30, 15, 25), (30, 20, 3, 2), (16, 16, 16, 0), (300, 260, 290, 200)] {
        let u = orthonormal(&mut rng, n, ku);
        let v = orthonormal(&mut rng, m, kv).t();
        let x = randn(&mut rng, n, m);
        let (mut ub, mut vb) = (Buf::<f64>::from(&u, Layout::RowMajor), Buf::<f64>::from(&v, Layout::ColMajor));
        for side in [Side::Left, Side::Right, Side::Both] {
            let want = reference(side, &u, &v, &x);
            for strategy in [Strategy::Auto, Strategy::Coefficient, Strategy::CachedProjector] {
                let p =
                    unsafe { osft::Projector::new(&ctx, side, Some(ub.desc()), Some(vb.desc()), strategy, usize::MAX) }
                        .unwrap();
                let (sl, sr) = p.strategies();
                if strategy == Strategy::CachedProjector {
                    assert!(
                        sl.is_none_or(|s| s == Strategy::CachedProjector)
                            && sr.is_none_or(|s| s == Strategy::CachedProjector)
                    );
                }
                for lx in [Layout::RowMajor, Layout::ColMajor, Layout::Spaced] {
                    // In place.
                    let mut xb = Buf::<f64>::from(&x, lx);
                    unsafe { p.apply_raw(&ctx, &xb.desc(), None) }.unwrap();
                    let err = xb.get(0).sub(&want).fro() / x.fro();
                    assert!(
                        err < tol(DType::F64, n.max(m), n.max(m)),
                        "{side:?} {strategy:?} {lx:?} in place: {err:e}"
                    );
                    // Out of place.
                    let mut xb = Buf::<f64>::from(&x, lx);
                    let mut ob = Buf::<f64>::poisoned(n, m, 1, Layout::PaddedRow(1));
                    unsafe { p.apply_raw(&ctx, &xb.desc(), Some(&ob.desc())) }.unwrap();
                    assert_eq!(xb.get(0), x, "X modified");
                    let err = ob.get(0).sub(&want).fro() / x.fro();
                    assert!(
                        err < tol(DType::F64, n.max(m), n.max(m)),
                        "{side:?} {strategy:?} {lx:?} out of place: {err:e}"
                    );
                    assert!(ob.padding_untouched());
                }
            }
        }
    }
}

#[test]
fn auto_strategy_follows_the_flop_count_and_memory_cap() {
    use osft::ops::project::choose;
    // Coefficient form costs 4 n k per column, the projector 2 n^2: the projector is chosen when
    // it is cheaper by at least 10%, 2 n^2 < 0.9 * 4 n k, i.e. 5 n < 9 k; the tie is no win.
    assert_eq!(choose(Strategy::Auto, DType::F32, 1000, 400, usize::MAX), Strategy::Coefficient);
    assert_eq!(choose(Strategy::Auto, DType::F32, 1000, 555, usize::MAX), Strategy::Coefficient);
    assert_eq!(choose(Strategy::Auto, DType::F32, 1000, 556, usize::MAX), Strategy::CachedProjector);
    for n in (9..=4000).step_by(9) {
        let tie = 5 * n / 9;
        assert_eq!(choose(Strategy::Auto, DType::F64, n, tie, usize::MAX), Strategy::Coefficient, "n = {n}, tie");
        assert_eq!(choose(Strategy::Auto, DType::F64, n, tie + 1, usize::MAX), Strategy::CachedProjector, "n = {n}");
    }
    // ...but not past the memory cap (the M x M Gram trap), nor for half-precision data.
    assert_eq!(choose(Strategy::Auto, DType::F32, 1000, 600, 1000 * 1000 * 4 - 1), Strategy::Coefficient);
    assert_eq!(choose(Strategy::Auto, DType::F32, 1000, 600, 1000 * 1000 * 4), Strategy::CachedProjector);
    // The default cap, 64 MiB: a 4096 x 4096 f32 projector fits it exactly, 4097 x 4097 does not.
    let cap = osft::ops::projector::DEFAULT_MAX_PROJECTOR_BYTES;
    assert_eq!(choose(Strategy::Auto, DType::F32, 4096, 4000, cap), Strategy::CachedProjector);
    assert_eq!(choose(Strategy::Auto, DType::F32, 4097, 4000, cap), Strategy::Coefficient);
    assert_eq!(choose(Strategy::Auto, DType::BF16, 1000, 600, usize::MAX), Strategy::Coefficient);
    assert_eq!(choose(Strategy::CachedProjector, DType::F32, 1000, 1, 0), Strategy::CachedProjector);
}

/// Split rows (left) or columns (right) of the basis and X across `shards`, compute partial
/// coefficients per shard, sum them (the all-reduce), apply per shard: equals the unsharded result.
fn sharded<T: Element, C: Element>(rng: &mut StdRng, side: Side, n: usize, m: usize, k: usize, shards: &[usize]) {
    let ctx = Context::cpu();
    let left = side == Side::Left;
    let basis = if left { orthonormal(rng, n, k) } else { orthonormal(rng, m, k).t() }.round::<T>();
    let x = randn(rng, n, m).round::<T>();
    assert_eq!(shards.iter().sum::<usize>(), if left { n } else { m });
    // Unsharded.
    let mut bb = Buf::<T>::from(&basis, Layout::RowMajor);
    let mut xb = Buf::<T>::from(&x, Layout::RowMajor);
    let bd = bb.desc();
    let bases = if left { Bases { u: Some(&bd), v: None } } else { Bases { u: None, v: Some(&bd) } };
    unsafe { ctx.project_raw(side, &bases, &xb.desc(), None) }.unwrap();
    let whole = xb.get(0);
    // Sharded.
    let (cr, cc) = if left { (k, m) } else { (n, k) };
    let mut total = M::zeros(cr, cc);
    let mut pieces = vec![];
    let mut off = 0;
    for &len in shards {
        let (bs, xs) =
            if left { (basis.rows(off, len), x.rows(off, len)) } else { (basis.cols(off, len), x.cols(off, len)) };
        off += len;
        let mut bsb = Buf::<T>::from(&bs, Layout::ColMajor);
        let mut xsb = Buf::<T>::from(&xs, Layout::RowMajor);
        let mut coef = Buf::<C>::poisoned(cr, cc, 1, Layout::RowMajor);
        unsafe { ctx.project_partial_raw(side, &bsb.desc(), &xsb.desc(), &coef.desc()) }.unwrap();
        total = total.add(&coef.get(0));
        pieces.push((bsb, xsb));
    }
    let mut result = M::zeros(n, m);
    let mut off = 0;
    for (mut bsb, mut xsb) in pieces {
        let mut coef = Buf::<C>::from(&total, Layout::ColMajor);
        unsafe { ctx.project_apply_raw(side, &bsb.desc(), &coef.desc(), &xsb.desc()) }.unwrap();
        let y = xsb.get(0);
        let len = if left { y.r } else { y.c };
        for i in 0..y.r {
            for j in 0..y.c {
                let (ri, rj) = if left { (off + i, j) } else { (i, off + j) };
                result.set(ri, rj, y.at(i, j));
            }
        }
        off += len;
    }
    let err = result.sub(&whole).fro() / x.fro();
    let t = 2.0 * tol(T::DTYPE, n.max(m), k);
    assert!(err <= t, "sharded {side:?} {} coef {}: {err:e} > {t:e}", T::DTYPE.name(), C::DTYPE.name());
    let (none_u, none_v) = (M::zeros(n, 0), M::zeros(0, m));
    let want = reference(side, if left { &basis } else { &none_u }, if left { &none_v } else { &basis }, &x);
    assert!(result.sub(&want).fro() / x.fro() <= t);
}

#[test]
fn sharded_projection_equals_unsharded() {
    let mut rng = rng();
    for side in [Side::Left, Side::Right] {
        sharded::<f64, f64>(&mut rng, side, 12, 10, 4, if side == Side::Left { &[3, 5, 4] } else { &[1, 6, 3] });
        sharded::<f32, f32>(&mut rng, side, 40, 30, 10, if side == Side::Left { &[20, 20] } else { &[7, 8, 15] });
        sharded::<bf16, f32>(&mut rng, side, 16, 24, 8, if side == Side::Left { &[5, 11] } else { &[12, 12] });
        sharded::<f16, f16>(&mut rng, side, 16, 24, 8, if side == Side::Left { &[16] } else { &[24] });
    }
}

#[test]
fn two_phase_rejects_both_and_wrong_coef_dtype() {
    let ctx = Context::cpu();
    let mut rng = rng();
    let mut ub = Buf::<f32>::from(&orthonormal(&mut rng, 8, 3), Layout::RowMajor);
    let mut xb = Buf::<f32>::from(&randn(&mut rng, 8, 5), Layout::RowMajor);
    let mut cb = Buf::<f64>::poisoned(3, 5, 1, Layout::RowMajor);
    let err = unsafe { ctx.project_partial_raw(Side::Left, &ub.desc(), &xb.desc(), &cb.desc()) }.unwrap_err();
    assert_eq!(err.status(), osft::Status::DtypeUnsupported, "{err}");
    let mut cb = Buf::<f32>::poisoned(3, 5, 1, Layout::RowMajor);
    let err = unsafe { ctx.project_partial_raw(Side::Both, &ub.desc(), &xb.desc(), &cb.desc()) }.unwrap_err();
    assert_eq!(err.status(), osft::Status::InvalidArgument, "{err}");
    let mut cb = Buf::<f32>::poisoned(5, 3, 1, Layout::RowMajor);
    let err = unsafe { ctx.project_partial_raw(Side::Left, &ub.desc(), &xb.desc(), &cb.desc()) }.unwrap_err();
    assert_eq!(err.status(), osft::Status::InvalidShape, "{err}");
    assert!(cb.data.iter().all(|v| v.is_nan()));
}

#[test]
fn diagnostics_against_reference() {
    let ctx = Context::cpu();
    let mut rng = rng();
    for (n, m, k) in [(10, 7, 3), (7, 10, 7), (30, 30, 0), (1, 5, 1)] {
        let u = orthonormal(&mut rng, n, k);
        // Perturb the basis so the orthonormality error is not zero.
        let up = u.add(&randn(&mut rng, n, k).scale(1e-3));
        let x = randn(&mut rng, n, m);
        let v = orthonormal(&mut rng, m, k.min(m)).t();
        for lx in [Layout::RowMajor, Layout::Spaced] {
            let (mut ub, mut xb, mut vb) =
                (Buf::<f64>::from(&up, lx), Buf::<f64>::from(&x, lx), Buf::<f64>::from(&v, lx));
            let got = unsafe { ctx.leakage_raw(Side::Left, &ub.desc(), &xb.desc()) }.unwrap()[0];
            let want = up.t().mul(&x).fro() / x.fro();
            assert!((got - want).abs() <= 1e-12 * (1.0 + want), "left leakage {got} vs {want}");
            let got = unsafe { ctx.leakage_raw(Side::Right, &vb.desc(), &xb.desc()) }.unwrap()[0];
            let want = x.mul(&v.t()).fro() / x.fro();
            assert!((got - want).abs() <= 1e-12 * (1.0 + want), "right leakage {got} vs {want}");
            let got = unsafe { ctx.orthonormality_error_raw(&ub.desc(), true) }.unwrap()[0];
            let want = ortho_err_cols(&up);
            assert!((got - want).abs() <= 1e-12 + 1e-9 * want, "ortho {got} vs {want}");
            let got = unsafe { ctx.orthonormality_error_raw(&vb.desc(), false) }.unwrap()[0];
            assert!(got <= 1e-13 * (1 + n) as f64, "rows of V: {got}");
        }
        // f32 data: diagnostics computed in f32, so compare at f32 accuracy.
        let (mut ub, mut xb) = (Buf::<f32>::from(&u, Layout::ColMajor), Buf::<f32>::from(&x, Layout::RowMajor));
        let got = unsafe { ctx.leakage_raw(Side::Left, &ub.desc(), &xb.desc()) }.unwrap()[0];
        let want = u.round::<f32>().t().mul(&x.round::<f32>()).fro() / x.round::<f32>().fro();
        assert!((got - want).abs() <= 1e-5 * (1.0 + want), "f32 leakage {got} vs {want}");
    }
}

#[test]
fn leakage_of_a_batch_is_per_entry_and_zero_x_gives_zero() {
    let ctx = Context::cpu();
    let mut rng = rng();
    let u = orthonormal(&mut rng, 9, 4);
    let xs = vec![randn(&mut rng, 9, 3), M::zeros(9, 3), u.cols(0, 3)];
    let (mut ub, mut xb) = (Buf::<f64>::from(&u, Layout::RowMajor), Buf::<f64>::from_batch(&xs, Layout::ColMajor));
    let got = unsafe { ctx.leakage_raw(Side::Left, &ub.desc(), &xb.desc()) }.unwrap();
    assert_eq!(got.len(), 3);
    assert!((got[0] - u.t().mul(&xs[0]).fro() / xs[0].fro()).abs() < 1e-12);
    assert_eq!(got[1], 0.0);
    assert!((got[2] - 1.0).abs() < 1e-12, "X inside span(U) leaks fully: {}", got[2]);
}

/// Half-type projection, one side at a time, against an f64 reference computed from the very
/// (rounded) values the library holds, with a bound derived from the dtype's unit roundoff `u`:
/// rounding elementwise to the dtype perturbs a matrix by at most `u` of its Frobenius norm, and
/// the projection rounds twice (the coefficients, kept in the data type, and the output), each
/// bounded by `||X||_F` (`||U^T X|| <= ||X||` and `||Y|| <= ||X||` up to the basis' own rounding);
/// plus f32 accumulation, `(n + k) u_f32` per GEMM. So `||Y - Y_ref||_F <= (2u + 4 (n + k)
/// u_f32) ||X||_F` — well below what removing 98% of the frozen part instead of all of it leaves
/// (`0.02 ||U U^T X||_F`, about `0.02 sqrt(k / n) ||X||_F`) at the shapes with `k >= n / 2`.
/// Shapes include `k = 0` (nothing removed: `Y = X`), `k = R` (everything in range), and `1 x N`
/// / `N x 1`; several fixed seeds plus the run's own.
#[test]
fn half_type_projection_is_complete_within_unit_roundoff() {
    let ctx = Context::cpu();
    let mut seeds: Vec<StdRng> = (1..=4u64).map(seeded).collect();
    seeds.push(rng());
    // (side, n, m, k): k columns of U (left) or rows of V (right).
    let shapes = [
        (Side::Left, 16, 24, 12),
        (Side::Left, 24, 16, 16),
        (Side::Left, 20, 20, 20), // k = R: U U^T = I, Y = 0
        (Side::Left, 9, 7, 0),    // k = 0: Y = X
        (Side::Left, 1, 32, 1),   // 1 x N, k = R = 1
        (Side::Left, 1, 32, 0),
        (Side::Right, 24, 16, 12),
        (Side::Right, 16, 24, 16),
        (Side::Right, 12, 12, 12),
        (Side::Right, 32, 1, 1), // N x 1, k = R = 1
        (Side::Right, 1, 32, 24),
        (Side::Right, 7, 9, 0),
    ];
    for rng in seeds.iter_mut() {
        for &(side, n, m, k) in &shapes {
            check_half_projection::<bf16>(&ctx, rng, side, n, m, k);
            check_half_projection::<f16>(&ctx, rng, side, n, m, k);
        }
    }
}

fn check_half_projection<T: Element>(ctx: &Context, rng: &mut StdRng, side: Side, n: usize, m: usize, k: usize) {
    let what = format!("{} {side:?} {n}x{m} k={k}", T::DTYPE.name());
    let x = randn(rng, n, m).round::<T>();
    let (basis, bshape) = if side == Side::Left {
        (orthonormal(rng, n, k).round::<T>(), (n, k))
    } else {
        (orthonormal(rng, m, k).t().round::<T>(), (k, m))
    };
    assert_eq!((basis.r, basis.c), bshape);
    let mut bb = Buf::<T>::from(&basis, Layout::RowMajor);
    let mut xb = Buf::<T>::from(&x, Layout::ColMajor);
    let mut ob = Buf::<T>::poisoned(n, m, 1, Layout::RowMajor);
    let (bd, xd, od) = (bb.desc(), xb.desc(), ob.desc());
    let bases = if side == Side::Left { Bases { u: Some(&bd), v: None } } else { Bases { u: None, v: Some(&bd) } };
    unsafe { ctx.project_raw(side, &bases, &xd, Some(&od)) }.unwrap();
    let got = ob.get(0);
    // f64 reference on the stored values.
    let want =
        if side == Side::Left { x.sub(&basis.mul(&basis.t().mul(&x))) } else { x.sub(&x.mul(&basis.t()).mul(&basis)) };
    let bound = (2.0 * u(T::DTYPE) + 4.0 * (n.max(m) + k) as f64 * u(DType::F32)) * x.fro();
    let err = got.sub(&want).fro();
    assert!(err <= bound, "{what}: ||Y - Y_ref||_F = {err:e} > {bound:e} (||X||_F = {:e})", x.fro());
    if k == 0 {
        assert_eq!(got, x, "{what}: an empty basis must leave X as it is");
    }
}
