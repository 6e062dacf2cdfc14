//! Every validation fault gets its own error, and a rejected call writes nothing: outputs are
//! poisoned beforehand and compared bit for bit afterwards (inputs too).

use osft::ops::decompose::Parts;
use osft::ops::project::Bases;
use osft::ops::svd::SvdOut;
use osft::{Context, DType, Device, MatDesc, Side, Status};
use osft_test_support::*;

struct Fixture {
    w: Buf<f32>,
    u: Buf<f32>,
    s: Buf<f32>,
    vt: Buf<f32>,
}

fn fixture() -> Fixture {
    let mut rng = rng();
    Fixture {
        w: Buf::from(&randn(&mut rng, 6, 4), Layout::RowMajor),
        u: Buf::poisoned(6, 4, 1, Layout::RowMajor),
        s: Buf::poisoned(4, 1, 1, Layout::ColMajor),
        vt: Buf::poisoned(4, 4, 1, Layout::RowMajor),
    }
}

/// Run an SVD with `w` and `u` replaced by the mutated descriptors; expect `status`; check that
/// no buffer changed.
fn svd_rejects(
    mutate_w: impl Fn(MatDesc) -> MatDesc,
    mutate_u: impl Fn(MatDesc) -> MatDesc,
    compute: DType,
    status: Status,
) {
    let ctx = Context::cpu();
    let mut f = fixture();
    let before = (f.w.bits(), f.u.bits(), f.s.bits(), f.vt.bits());
    let (w, u, s, vt) = (mutate_w(f.w.desc()), mutate_u(f.u.desc()), f.s.desc(), f.vt.desc());
    let err = unsafe { ctx.svd_raw(&w, &SvdOut { u: Some(&u), s: &s, vt: Some(&vt) }, compute) }.unwrap_err();
    assert_eq!(err.status(), status, "wrong status for: {err}");
    assert!(!err.to_string().is_empty());
    assert_eq!(before, (f.w.bits(), f.u.bits(), f.s.bits(), f.vt.bits()), "a rejected call wrote to a buffer ({err})");
}

fn id(d: MatDesc) -> MatDesc {
    d
}

#[test]
fn descriptor_faults() {
    svd_rejects(|d| MatDesc { addr: 0, ..d }, id, DType::F32, Status::NullPointer);
    svd_rejects(id, |d| MatDesc { addr: 0, ..d }, DType::F32, Status::NullPointer);
    svd_rejects(|d| MatDesc { rows: 0, ..d }, id, DType::F32, Status::InvalidShape);
    svd_rejects(|d| MatDesc { batch: 0, ..d }, id, DType::F32, Status::InvalidShape);
    svd_rejects(|d| MatDesc { row_stride: usize::MAX / 2, ..d }, id, DType::F32, Status::Overflow);
    svd_rejects(|d| MatDesc { batch: 3, batch_stride: usize::MAX / 3, ..d }, id, DType::F32, Status::Overflow);
    svd_rejects(|d| MatDesc { addr: (usize::MAX - 64) & !7, ..d }, id, DType::F32, Status::Overflow);
    // Row stride 2 < 4 columns: rows overlap. Zero stride: a broadcast, rejected for writing.
    svd_rejects(id, |d| MatDesc { row_stride: 2, ..d }, DType::F32, Status::Overlap);
    svd_rejects(id, |d| MatDesc { col_stride: 0, ..d }, DType::F32, Status::Overlap);
    svd_rejects(|d| MatDesc { addr: d.addr + 2, ..d }, id, DType::F32, Status::Misaligned);
    svd_rejects(id, |d| MatDesc { rows: 5, ..d }, DType::F32, Status::InvalidShape);
    svd_rejects(id, id, DType::F16, Status::DtypeUnsupported);
    svd_rejects(|d| d.with_device(Device::Cuda(0)), id, DType::F32, Status::DeviceMismatch);
    svd_rejects(id, |d| d.with_device(Device::Cuda(0)), DType::F32, Status::DeviceMismatch);
}

#[test]
fn aliasing_outputs_are_rejected() {
    let ctx = Context::cpu();
    let mut f = fixture();
    let before = (f.w.bits(), f.s.bits());
    let w = f.w.desc();
    // U written over W, shifted by one element (the identical descriptor is allowed: W is
    // staged into the workspace before anything is written).
    let u_on_w = MatDesc { addr: w.addr + 4, ..w };
    let s = f.s.desc();
    let err = unsafe { ctx.svd_raw(&w, &SvdOut { u: Some(&u_on_w), s: &s, vt: None }, DType::F32) }.unwrap_err();
    assert_eq!(err.status(), Status::Overlap, "{err}");
    // S over U.
    let u = f.u.desc();
    let s_on_u = MatDesc::col_major(u.addr, DType::F32, 4, 1);
    let err = unsafe { ctx.svd_raw(&w, &SvdOut { u: Some(&u), s: &s_on_u, vt: None }, DType::F32) }.unwrap_err();
    assert_eq!(err.status(), Status::Overlap, "{err}");
    assert_eq!(before, (f.w.bits(), f.s.bits()));
    assert!(f.u.data.iter().all(|x| x.is_nan()));
}

#[test]
fn decompose_faults() {
    let ctx = Context::cpu();
    let mut f = fixture();
    let mut uh = Buf::<f32>::poisoned(6, 2, 1, Layout::RowMajor);
    let mut sl = Buf::<f32>::poisoned(2, 1, 1, Layout::RowMajor);
    let before = (uh.bits(), sl.bits());
    let (w, u, s) = (f.w.desc(), uh.desc(), sl.desc());
    // k beyond R.
    let e =
        unsafe { ctx.decompose_raw(&w, 5, &Parts { u_high: Some(&u), ..Default::default() }, DType::F32) }.unwrap_err();
    assert_eq!(e.status(), Status::RankOutOfRange, "{e}");
    // U_high with the wrong number of columns for k.
    let e =
        unsafe { ctx.decompose_raw(&w, 3, &Parts { u_high: Some(&u), ..Default::default() }, DType::F32) }.unwrap_err();
    assert_eq!(e.status(), Status::InvalidShape, "{e}");
    // S_low of the wrong length (R - k = 2 expected, 3 given).
    let s3 = MatDesc { rows: 3, ..s };
    let e =
        unsafe { ctx.decompose_raw(&w, 2, &Parts { s_low: Some(&s3), ..Default::default() }, DType::F32) }.unwrap_err();
    assert_eq!(e.status(), Status::InvalidShape, "{e}");
    // A singular-value part must be a vector of exactly its length, as a column or a row: a row
    // of the wrong length, a matrix with as many columns as the length, and a non-empty part
    // where it is empty (S_high at k = 0) are shape faults.
    let mut spare = Buf::<f32>::poisoned(4, 4, 1, Layout::RowMajor);
    let spare_before = spare.bits();
    let g = spare.desc();
    let row3 = MatDesc { rows: 1, cols: 3, ..g };
    let square2 = MatDesc { rows: 2, cols: 2, ..g };
    let one = MatDesc { rows: 1, cols: 1, ..g };
    for (k, parts) in [
        (2, Parts { s_low: Some(&row3), ..Default::default() }),
        (2, Parts { s_low: Some(&square2), ..Default::default() }),
        (2, Parts { s_high: Some(&square2), ..Default::default() }),
        (0, Parts { s_high: Some(&one), ..Default::default() }),
        (4, Parts { s_low: Some(&one), ..Default::default() }),
    ] {
        let e = unsafe { ctx.decompose_raw(&w, k, &parts, DType::F32) }.unwrap_err();
        assert_eq!(e.status(), Status::InvalidShape, "k = {k}: {e}");
    }
    assert_eq!(spare_before, spare.bits());
    // A broadcast output in a batched call.
    let w3 = MatDesc { batch: 3, batch_stride: 0, ..w };
    let e = unsafe { ctx.decompose_raw(&w3, 2, &Parts { u_high: Some(&u), ..Default::default() }, DType::F32) }
        .unwrap_err();
    assert_eq!(e.status(), Status::Overlap, "{e}"); // W itself: batch stride 0 overlaps
    assert_eq!(before, (uh.bits(), sl.bits()));
}

#[test]
fn projection_faults() {
    let ctx = Context::cpu();
    let mut rng = rng();
    let mut u = Buf::<f32>::from(&orthonormal(&mut rng, 8, 3), Layout::RowMajor);
    let mut v = Buf::<f32>::from(&orthonormal(&mut rng, 5, 2).t(), Layout::RowMajor);
    let mut x = Buf::<f32>::from(&randn(&mut rng, 8, 5), Layout::RowMajor);
    let mut out = Buf::<f32>::poisoned(8, 5, 1, Layout::RowMajor);
    let mut ubf = Buf::<osft::bf16>::from(&orthonormal(&mut rng, 8, 3), Layout::RowMajor);
    let mut x3 = Buf::<f32>::from_batch(
        &[randn(&mut rng, 8, 5), randn(&mut rng, 8, 5), randn(&mut rng, 8, 5)],
        Layout::RowMajor,
    );
    let mut u2 = Buf::<f32>::from_batch(&[orthonormal(&mut rng, 8, 3), orthonormal(&mut rng, 8, 3)], Layout::RowMajor);
    let mut out64 = Buf::<f64>::poisoned(8, 5, 1, Layout::RowMajor);
    let before: Vec<Vec<u64>> = vec![u.bits(), v.bits(), x.bits(), out.bits(), x3.bits(), out64.bits()];
    let (ud, vd, xd, od, ubd, x3d, u2d, o64) =
        (u.desc(), v.desc(), x.desc(), out.desc(), ubf.desc(), x3.desc(), u2.desc(), out64.desc());
    let v6 = MatDesc { rows: 6, cols: 5, ..xd };
    // (what, side, bases, X, out, expected status)
    type Case<'a> = (&'a str, Side, Bases<'a>, MatDesc, Option<MatDesc>, Status);
    let cases: Vec<Case> = vec![
        ("missing V_high for Both", Side::Both, Bases { u: Some(&ud), v: None }, xd, None, Status::NullPointer),
        ("basis dtype differs", Side::Left, Bases { u: Some(&ubd), v: None }, xd, None, Status::DtypeUnsupported),
        ("basis rows differ", Side::Left, Bases { u: Some(&vd), v: None }, xd, None, Status::InvalidShape),
        (
            "more vectors than dimension",
            Side::Right,
            Bases { u: None, v: Some(&v6) },
            x3d,
            None,
            Status::RankOutOfRange,
        ),
        (
            "out shape",
            Side::Left,
            Bases { u: Some(&ud), v: None },
            xd,
            Some(MatDesc { rows: 7, ..od }),
            Status::InvalidShape,
        ),
        ("out dtype", Side::Left, Bases { u: Some(&ud), v: None }, xd, Some(o64), Status::DtypeUnsupported),
        (
            "out over basis",
            Side::Left,
            Bases { u: Some(&ud), v: None },
            xd,
            Some(MatDesc { addr: ud.addr, ..od }),
            Status::Overlap,
        ),
        (
            "out partly over X",
            Side::Left,
            Bases { u: Some(&ud), v: None },
            xd,
            Some(MatDesc { addr: xd.addr + 8, ..od }),
            Status::Overlap,
        ),
        ("batch mismatch", Side::Left, Bases { u: Some(&u2d), v: None }, x3d, None, Status::InvalidShape),
        (
            "X on another device",
            Side::Left,
            Bases { u: Some(&ud), v: None },
            xd.with_device(Device::Cuda(1)),
            None,
            Status::DeviceMismatch,
        ),
        ("X null", Side::Left, Bases { u: Some(&ud), v: None }, MatDesc { addr: 0, ..xd }, None, Status::NullPointer),
        (
            "X overlapping strides",
            Side::Left,
            Bases { u: Some(&ud), v: None },
            MatDesc { row_stride: 4, ..xd },
            None,
            Status::Overlap,
        ),
    ];
    for (what, side, bases, x, out_d, status) in cases {
        let e = unsafe { ctx.project_raw(side, &bases, &x, out_d.as_ref()) }.unwrap_err();
        assert_eq!(e.status(), status, "{what}: {e}");
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(
        before,
        vec![u.bits(), v.bits(), x.bits(), out.bits(), x3.bits(), out64.bits()],
        "a rejected projection wrote"
    );
}

/// A phase-2 call whose f32 coefficient (for f16 data: a cast copy in the workspace) claims a
/// huge wrong shape gets its shape error, before the context sizes and allocates a workspace
/// from it (not a multi-terabyte allocation attempt).
#[test]
fn two_phase_apply_validates_before_sizing_the_workspace() {
    let ctx = Context::cpu();
    let mut rng = rng();
    let mut u = Buf::<osft::f16>::from(&orthonormal(&mut rng, 8, 3), Layout::RowMajor);
    let mut x = Buf::<osft::f16>::from(&randn(&mut rng, 8, 5), Layout::RowMajor);
    let mut coef = Buf::<f32>::from(&randn(&mut rng, 3, 5), Layout::RowMajor);
    let before = (u.bits(), x.bits(), coef.bits());
    let (ud, xd, cd) = (u.desc(), x.desc(), coef.desc());
    // Right shape: served (the cast copy fits any context workspace).
    let ok = unsafe { ctx.project_apply_raw(Side::Left, &ud, &cd, &xd) };
    assert!(ok.is_ok(), "{ok:?}");
    let x_after = x.bits();
    // 2^20 x 2^20 f32 claimed (a 4 TiB cast copy), but the call needs 3 x 5.
    let huge = MatDesc { rows: 1 << 20, cols: 1 << 20, row_stride: 1 << 20, col_stride: 1, ..cd };
    let fresh = Context::cpu();
    let e = unsafe { fresh.project_apply_raw(Side::Left, &ud, &huge, &xd) }.unwrap_err();
    assert_eq!(e.status(), Status::InvalidShape, "{e}");
    assert_eq!(fresh.workspace_bytes(), 0, "a workspace was allocated for a rejected call");
    assert_eq!((before.0, x_after, before.2), (u.bits(), x.bits(), coef.bits()), "a rejected call wrote");
}

/// Reading a "vector" that is a 2^20 x 2^20 matrix is its shape error, before the context sizes
/// a workspace from it (not an 8 TiB allocation attempt).
#[test]
fn read_vector_validates_before_sizing_the_workspace() {
    let ctx = Context::cpu();
    let mut v = Buf::<f32>::from(&randn(&mut rng(), 4, 1), Layout::ColMajor);
    let vd = v.desc();
    let before = v.bits();
    let huge = MatDesc { rows: 1 << 20, cols: 1 << 20, row_stride: 1, col_stride: 1 << 20, ..vd };
    let e = unsafe { ctx.read_vector_raw(&huge) }.unwrap_err();
    assert_eq!(e.status(), Status::InvalidShape, "{e}");
    assert_eq!(ctx.workspace_bytes(), 0, "a workspace was allocated for a rejected call");
    assert_eq!(before, v.bits());
    assert_eq!(unsafe { ctx.read_vector_raw(&vd) }.unwrap().len(), 4);
}

#[test]
fn caller_workspace_too_small_is_reported_before_writing() {
    let ctx = Context::cpu();
    let mut rng = rng();
    let mut u = Buf::<f32>::from(&orthonormal(&mut rng, 30, 10), Layout::RowMajor);
    let mut x = Buf::<f32>::from(&randn(&mut rng, 30, 20), Layout::RowMajor);
    let (ud, xd) = (u.desc(), x.desc());
    let bases = Bases { u: Some(&ud), v: None };
    let need = ctx.project_workspace_size(Side::Left, &bases, &xd, None).unwrap();
    assert!(need >= 10 * 20 * 4, "needs the coefficient matrix: {need}");
    let mut space = vec![0u8; need];
    unsafe { ctx.set_workspace(space.as_mut_ptr() as usize, need - 1).unwrap() };
    let before = x.bits();
    let e = unsafe { ctx.project_raw(Side::Left, &bases, &xd, None) }.unwrap_err();
    assert_eq!(e.status(), Status::WorkspaceTooSmall, "{e}");
    assert_eq!(before, x.bits());
    // Exactly the queried size suffices.
    unsafe { ctx.set_workspace(space.as_mut_ptr() as usize, need).unwrap() };
    unsafe { ctx.project_raw(Side::Left, &bases, &xd, None) }.unwrap();
    assert!(unsafe { ctx.set_workspace(0, 10) }.is_err());
}

#[test]
fn typed_views_check_bounds() {
    let mut data = vec![0f32; 10];
    assert!(osft::MatRef::row_major(&data, 3, 4).is_err(), "12 elements do not fit in 10");
    assert!(osft::MatRef::strided(&data, 2, 5, 5, 1).is_ok());
    assert!(osft::MatRef::strided(&data, 2, 5, 6, 1).is_err());
    assert!(osft::MatMut::strided(&mut data, 3, 3, 1, 2).unwrap_err().status() == Status::Overlap);
    assert!(osft::MatRef::batched(&data, 2, 2, 2, 2, 1, 5).is_ok());
    assert!(osft::MatRef::batched(&data, 3, 2, 2, 2, 1, 5).is_err());
}

#[test]
fn rank_and_compute_argument_faults() {
    use osft::{adaptive_ranks, select_rank, RankRule};
    assert_eq!(select_rank(RankRule::Fixed(9), &[1.0, 0.5]).unwrap_err().status(), Status::RankOutOfRange);
    assert_eq!(select_rank(RankRule::Energy(-0.1), &[1.0]).unwrap_err().status(), Status::InvalidArgument);
    assert_eq!(select_rank(RankRule::Fraction(f64::NAN), &[1.0]).unwrap_err().status(), Status::InvalidArgument);
    assert_eq!(adaptive_ranks(&[f64::INFINITY], &[4], 0.1, 0.5).unwrap_err().status(), Status::InvalidArgument);
}

#[test]
fn a_caller_workspace_at_any_address_works_with_the_queried_size() {
    // Scratch regions are aligned absolutely; the query leaves room for the worst start.
    let ctx = Context::cpu();
    let mut rng = rng();
    let u = orthonormal(&mut rng, 17, 5);
    let x = randn(&mut rng, 17, 9);
    let want = x.sub(&u.mul(&u.t().mul(&x)));
    for offset in [0usize, 1, 3, 255] {
        let (mut ub, mut xb) = (Buf::<f64>::from(&u, Layout::RowMajor), Buf::<f64>::from(&x, Layout::Spaced));
        let (ud, xd) = (ub.desc(), xb.desc());
        let bases = Bases { u: Some(&ud), v: None };
        let need = ctx.project_workspace_size(Side::Left, &bases, &xd, None).unwrap();
        let mut space = vec![0u8; need + offset];
        unsafe { ctx.set_workspace(space.as_mut_ptr() as usize + offset, need).unwrap() };
        unsafe { ctx.project_raw(Side::Left, &bases, &xd, None) }.unwrap();
        assert!(xb.get(0).sub(&want).fro() < 1e-12 * x.fro(), "offset {offset}");
    }
}

#[test]
fn non_finite_input_policy() {
    // SVD and decompose refuse NaN/Inf (with the batch index) before factoring; projection and
    // reconstruction propagate them as IEEE arithmetic does; nothing hangs.
    let ctx = Context::cpu();
    let mut rng = rng();
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut ws = vec![randn(&mut rng, 7, 5), randn(&mut rng, 7, 5), randn(&mut rng, 7, 5)];
        ws[1].set(3, 2, bad);
        let mut wb = Buf::<f32>::from_batch(&ws, Layout::RowMajor);
        let mut sb = Buf::<f32>::poisoned(5, 1, 3, Layout::ColMajor);
        let sd = sb.desc();
        let e = unsafe { ctx.svd_raw(&wb.desc(), &SvdOut { u: None, s: &sd, vt: None }, DType::F32) }.unwrap_err();
        assert_eq!(e.status(), Status::NonFinite, "{e}");
        assert!(matches!(e, osft::Error::NonFinite { index: 1, .. }), "{e}");
        let e = unsafe { ctx.decompose_raw(&wb.desc(), 2, &Parts::default(), DType::F64) }.unwrap_err();
        assert_eq!(e.status(), Status::NonFinite, "{e}");
    }
    // Left projection: column j of the result depends only on column j of X, so a NaN stays in
    // its column and the other columns are unaffected.
    let u = orthonormal(&mut rng, 8, 3);
    let mut x = randn(&mut rng, 8, 4);
    x.set(5, 1, f64::NAN);
    let (mut ub, mut xb) = (Buf::<f64>::from(&u, Layout::RowMajor), Buf::<f64>::from(&x, Layout::RowMajor));
    let (ud, xd) = (ub.desc(), xb.desc());
    unsafe { ctx.project_raw(Side::Left, &Bases { u: Some(&ud), v: None }, &xd, None) }.unwrap();
    let y = xb.get(0);
    for i in 0..8 {
        assert!(y.at(i, 1).is_nan(), "NaN must propagate down its column");
        for j in [0, 2, 3] {
            assert!(y.at(i, j).is_finite(), "other columns stay finite");
        }
    }
}

/// Phase 2 of the sharded projection writes `X` and reads the basis and the coefficients: an `X`
/// that overlaps either (partly, or exactly where the shapes allow) is `Status::Overlap`, and no
/// element of the shared allocation changes. Each case keeps the two inputs apart from each
/// other, so the only fault is the one named.
#[test]
fn two_phase_apply_rejects_x_aliasing_its_inputs() {
    let ctx = Context::cpu();
    let mut rng = rng();
    let (n, m, k) = (6usize, 4usize, 4usize); // k == m, so X can alias the left basis exactly
    for side in [Side::Left, Side::Right] {
        // Left: basis U (n x k), coef (k x m). Right: basis V (k x m), coef (n x k).
        let (bshape, cshape) = if side == Side::Left { ((n, k), (k, m)) } else { ((k, m), (n, k)) };
        let (blen, clen, xlen) = (bshape.0 * bshape.1, cshape.0 * cshape.1, n * m);
        // (what, offset of basis, offset of coef, offset of X) in one f64 allocation.
        let total = blen + clen + xlen + 8;
        let cases = [
            ("X starts inside the basis", 0, total - clen, 3),
            ("X is the basis", 0, total - clen, 0),
            ("the basis starts inside X", xlen / 2, total - clen, 0),
            ("X starts inside the coefficients", total - blen, 0, clen - 2),
            ("X ends inside the coefficients", 0, blen + xlen - 1, blen + 1),
            ("X starts at the coefficients", total - blen, 0, 0),
        ];
        for (what, bo, co, xo) in cases {
            if what == "X is the basis" && bshape != (n, m) {
                continue;
            }
            let mut data: Vec<f64> = randn(&mut rng, 1, total).d;
            let before: Vec<u64> = data.iter().map(|v| v.to_bits()).collect();
            let base = data.as_mut_ptr() as usize;
            let desc = |off: usize, (r, c): (usize, usize)| MatDesc {
                addr: base + 8 * off,
                dtype: DType::F64,
                rows: r,
                cols: c,
                row_stride: c,
                col_stride: 1,
                batch: 1,
                batch_stride: 0,
                device: Device::Host,
            };
            assert!(bo + blen <= total && co + clen <= total && xo + xlen <= total, "{what}: bad case");
            let (b, c, x) = (desc(bo, bshape), desc(co, cshape), desc(xo, (n, m)));
            let res = unsafe { ctx.project_apply_raw(side, &b, &c, &x) };
            let err = res.expect_err(&format!("{side:?}, {what}: accepted"));
            assert_eq!(err.status(), Status::Overlap, "{side:?}, {what}: {err}");
            let after: Vec<u64> = data.iter().map(|v| v.to_bits()).collect();
            assert_eq!(before, after, "{side:?}, {what}: a rejected call wrote");
            // The same three matrices in disjoint places are accepted (the case is well formed).
            let mut ok = randn(&mut rng, 1, blen + clen + xlen).d;
            let base2 = ok.as_mut_ptr() as usize;
            let at = |d: MatDesc, off: usize| MatDesc { addr: base2 + 8 * off, ..d };
            let r = unsafe { ctx.project_apply_raw(side, &at(b, 0), &at(c, blen), &at(x, blen + clen)) };
            assert!(r.is_ok(), "{side:?}, {what}: disjoint control failed: {r:?}");
        }
    }
}

/// A descriptor whose byte extent fits a `usize` but exceeds `isize::MAX` (what pointer offsets
/// and faer need) is an overflow; one just inside is well formed. (The extent computation itself
/// does not overflow here, so only the `isize::MAX` bound can refuse it.)
#[test]
fn a_descriptor_spanning_more_than_isize_max_bytes_is_an_overflow() {
    let d = MatDesc {
        addr: 4096,
        dtype: DType::F32,
        rows: 2,
        cols: 1,
        row_stride: 1 << 61,
        col_stride: 1,
        batch: 1,
        batch_stride: 0,
        device: Device::Host,
    };
    // f32: (2^61 + 1) * 4 = 2^63 + 4 bytes; f64 with half the stride: 2^63 + 8 bytes.
    for big in [d, MatDesc { dtype: DType::F64, row_stride: 1 << 60, ..d }] {
        let e = big.validate("W", false).unwrap_err();
        assert_eq!(e.status(), Status::Overflow, "{big:?}: {e}");
    }
    // Half as far: 2^62 + 4 bytes, below isize::MAX.
    let ok = MatDesc { row_stride: 1 << 60, ..d };
    assert!(ok.validate("W", false).is_ok(), "{ok:?}");
}

/// Operands that touch without sharing an element are not an overlap: an output that starts
/// exactly where an input ends (or ends where it starts), in one allocation, is served.
#[test]
fn adjacent_operands_are_not_an_overlap() {
    let ctx = Context::cpu();
    let mut rng = rng();
    let (n, m, k) = (5usize, 4usize, 2usize);
    let mut u = Buf::<f64>::from(&orthonormal(&mut rng, n, k), Layout::RowMajor);
    let ud = u.desc();
    let x = randn(&mut rng, n, m);
    let um = u.get(0);
    let want = x.sub(&um.mul(&um.t().mul(&x))); // f64 reference: X - U (U^T X)
    for out_after_x in [true, false] {
        // X and out back to back in one buffer, dense row-major.
        let mut data = vec![0f64; 2 * n * m];
        let (xo, oo) = if out_after_x { (0, n * m) } else { (n * m, 0) };
        for i in 0..n {
            for j in 0..m {
                data[xo + i * m + j] = x.at(i, j);
            }
        }
        let base = data.as_mut_ptr() as usize;
        let at = |off: usize| MatDesc {
            addr: base + 8 * off,
            dtype: DType::F64,
            rows: n,
            cols: m,
            row_stride: m,
            col_stride: 1,
            batch: 1,
            batch_stride: 0,
            device: Device::Host,
        };
        let r = unsafe { ctx.project_raw(Side::Left, &Bases { u: Some(&ud), v: None }, &at(xo), Some(&at(oo))) };
        assert!(r.is_ok(), "out {} X: {r:?}", if out_after_x { "right after" } else { "right before" });
        for i in 0..n {
            for j in 0..m {
                let (got, w) = (data[oo + i * m + j], want.at(i, j));
                assert!((got - w).abs() <= 1e-13 * (1.0 + w.abs()), "({i}, {j}): {got} vs {w}");
            }
        }
    }
}
