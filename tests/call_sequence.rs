//! The primitive call sequences the algorithm layer issues — what the CUDA executor will receive.
//! Recorded on the CPU through `exec::trace::Recording`: a batched projection is two
//! strided-batched GEMMs with cuBLAS arguments, allocates nothing once the workspace exists, and
//! a batched SVD is one batched `gesvd`.

use osft::exec::cpu::CpuExecutor;
use osft::exec::trace::{Call, Recording};
use osft::exec::{ComputeType, Op};
use osft::ops::project::Bases;
use osft::ops::svd::SvdOut;
use osft::{Context, DType, Side};
use osft_test_support::*;
use std::sync::Arc;

fn recorded() -> (Arc<Recording<CpuExecutor>>, Context) {
    let rec = Arc::new(Recording::new(CpuExecutor));
    (rec.clone(), Context::with_executor(rec))
}

fn gemms(calls: &[Call]) -> Vec<osft::exec::GemmArgs> {
    calls.iter().filter_map(|c| if let Call::Gemm(g) = c { Some(*g) } else { None }).collect()
}

#[test]
fn left_projection_of_a_column_major_batch_is_two_cublas_gemms() {
    let (rec, ctx) = recorded();
    let mut rng = rng();
    let (n, m, k, b) = (10, 6, 4, 5);
    let mut u = Buf::<f32>::from(&orthonormal(&mut rng, n, k), Layout::ColMajor);
    let xs: Vec<M> = (0..b).map(|_| randn(&mut rng, n, m)).collect();
    let mut x = Buf::<f32>::from_batch(&xs, Layout::ColMajor);
    let (ud, xd) = (u.desc(), x.desc());
    unsafe { ctx.project_raw(Side::Left, &Bases { u: Some(&ud), v: None }, &xd, None) }.unwrap();
    let calls = rec.take();
    let g = gemms(&calls);
    assert_eq!(g.len(), 2, "{calls:?}");
    assert_eq!(
        calls.iter().filter(|c| matches!(c, Call::Gemm(_) | Call::Alloc(_))).count(),
        calls.len(),
        "only GEMMs and the first workspace allocation: {calls:?}"
    );
    // coef (k x m) = U^T X: cublasGemmStridedBatchedEx(T, N, k, m, n, 1, U, n, 0, X, n, xs, 0, C, k, k*m, b)
    let c0 = g[0];
    assert_eq!((c0.transa, c0.transb, c0.m, c0.n, c0.k), (Op::T, Op::N, k, m, n));
    assert_eq!(
        (c0.a.ld, c0.a.stride, c0.b.ld, c0.b.stride, c0.c.ld, c0.c.stride),
        (n, 0, n, xd.batch_stride, k, k * m)
    );
    assert_eq!((c0.alpha, c0.beta, c0.batch, c0.compute), (1.0, 0.0, b, ComputeType::F32));
    // X = X - U coef: (N, N, n, m, k, -1, U, n, 0, C, k, k*m, 1, X, n, xs, b)
    let c1 = g[1];
    assert_eq!((c1.transa, c1.transb, c1.m, c1.n, c1.k), (Op::N, Op::N, n, m, k));
    assert_eq!(
        (c1.a.ld, c1.a.stride, c1.b.ld, c1.b.stride, c1.c.ld, c1.c.stride),
        (n, 0, k, k * m, n, xd.batch_stride)
    );
    assert_eq!((c1.alpha, c1.beta, c1.batch), (-1.0, 1.0, b));
    assert_eq!(c1.b.addr, c0.c.addr, "the second GEMM reads the coefficients the first wrote");
    // A second call reuses the cached workspace: no allocation, same two GEMMs.
    unsafe { ctx.project_raw(Side::Left, &Bases { u: Some(&ud), v: None }, &xd, None) }.unwrap();
    let again = rec.take();
    assert!(again.iter().all(|c| matches!(c, Call::Gemm(_))) && again.len() == 2, "{again:?}");
}

#[test]
fn row_major_x_is_projected_as_its_transpose_without_copies() {
    // A row-major X (PyTorch's layout) is a column-major X^T: the GEMMs run on the transposed
    // problem, with no staging copy. X - U U^T X is X^T - (X^T U) U^T, then X - X V^T V is
    // X^T - V^T (V X^T); with U and V row-major, cuBLAS sees them as U^T (k x n, ld k) and
    // V^T (m x k, ld m).
    let (rec, ctx) = recorded();
    let mut rng = rng();
    let (n, m, k) = (9, 7, 3);
    let mut u = Buf::<osft::bf16>::from(&orthonormal(&mut rng, n, k), Layout::RowMajor);
    let mut v = Buf::<osft::bf16>::from(&orthonormal(&mut rng, m, k).t(), Layout::RowMajor);
    let mut x = Buf::<osft::bf16>::from(&randn(&mut rng, n, m), Layout::PaddedRow(3));
    let (ud, vd, xd) = (u.desc(), v.desc(), x.desc());
    unsafe { ctx.project_raw(Side::Both, &Bases { u: Some(&ud), v: Some(&vd) }, &xd, None) }.unwrap();
    let calls = rec.take();
    let without_alloc: Vec<&Call> = calls.iter().filter(|c| !matches!(c, Call::Alloc(_))).collect();
    assert_eq!(without_alloc.len(), 4, "exactly four GEMMs, no staging copy: {calls:?}");
    let g = gemms(&calls);
    assert_eq!(g.len(), 4, "{calls:?}");
    let ldx = m + 3;
    // (transa, transb, m, n, k, alpha, beta, A addr, lda, B addr, ldb, C addr, ldc), in order:
    // left side first, then the right side on the left side's result.
    let coef_l = g[0].c.addr;
    let coef_r = g[2].c.addr;
    let want = [
        // coef^T (m x k) = X^T U: (N, T, m, k, n, 1, X^T, ldx, U^T, k, 0, C, m)
        ((Op::N, Op::T, m, k, n, 1.0, 0.0), (xd.addr, ldx, ud.addr, k, coef_l, m)),
        // X^T = X^T - coef^T U^T: (N, N, m, n, k, -1, C, m, U^T, k, 1, X^T, ldx)
        ((Op::N, Op::N, m, n, k, -1.0, 1.0), (coef_l, m, ud.addr, k, xd.addr, ldx)),
        // coef (k x n) = V X^T: (T, N, k, n, m, 1, V^T, m, X^T, ldx, 0, C, k)
        ((Op::T, Op::N, k, n, m, 1.0, 0.0), (vd.addr, m, xd.addr, ldx, coef_r, k)),
        // X^T = X^T - V^T coef: (N, N, m, n, k, -1, V^T, m, C, k, 1, X^T, ldx)
        ((Op::N, Op::N, m, n, k, -1.0, 1.0), (vd.addr, m, coef_r, k, xd.addr, ldx)),
    ];
    for (i, (c, w)) in g.iter().zip(want).enumerate() {
        let got = (
            (c.transa, c.transb, c.m, c.n, c.k, c.alpha, c.beta),
            (c.a.addr, c.a.ld, c.b.addr, c.b.ld, c.c.addr, c.c.ld),
        );
        assert_eq!(got, w, "GEMM {i}: {c:?}");
        assert_eq!((c.batch, c.compute), (1, ComputeType::F32), "GEMM {i}");
        assert!([c.a.dtype, c.b.dtype, c.c.dtype].iter().all(|d| *d == DType::BF16), "GEMM {i}: {c:?}");
    }
    // The coefficients live in the workspace, not in any caller buffer.
    for a in [coef_l, coef_r] {
        for (d, len) in [(&ud, u.data.len()), (&vd, v.data.len()), (&xd, x.data.len())] {
            assert!(a + 2 * k * n.max(m) <= d.addr || a >= d.addr + 2 * len, "coefficients inside a caller buffer");
        }
    }
}

#[test]
fn batched_svd_is_one_batched_gesvd() {
    let (rec, ctx) = recorded();
    let mut rng = rng();
    let ws: Vec<M> = (0..6).map(|_| randn(&mut rng, 5, 8)).collect();
    let mut w = Buf::<f32>::from_batch(&ws, Layout::RowMajor);
    let mut s = Buf::<f32>::poisoned(5, 1, 6, Layout::ColMajor);
    let (wd, sd) = (w.desc(), s.desc());
    unsafe { ctx.svd_raw(&wd, &SvdOut { u: None, s: &sd, vt: None }, DType::F32) }.unwrap();
    let calls = rec.take();
    let seq: Vec<&Call> = calls.iter().filter(|c| !matches!(c, Call::Alloc(_))).collect();
    // In order: the non-finite scan of W, W staged (as W^T) into the workspace, ONE batched
    // gesvd — planned as one gesvdjBatched call on one lane between a fork and a join, then thin
    // U and VT copied out of the routine's full U and V, and its convergence flags read back —
    // the sign fix of its vectors, S copied out.
    assert_eq!(seq.len(), 11, "{calls:?}");
    assert!(matches!(seq[0], Call::CountNonfinite { rows: 5, cols: 8, batch: 6 }), "{calls:?}");
    let (Call::Axpby(stage), Call::Gesvd(g), Call::SignFix(f), Call::Axpby(out)) = (seq[1], seq[2], seq[9], seq[10])
    else {
        panic!("not stage, gesvd, sign fix, copy-out: {calls:?}");
    };
    let (Call::Fork { lanes: 1 }, Call::SvdUnit { lane: 0, args: unit }, Call::Join { lanes: 1 }) =
        (seq[3], seq[4], seq[5])
    else {
        panic!("not one routine call on one lane: {calls:?}");
    };
    assert_eq!((unit.routine, unit.m, unit.n, unit.batch), (osft::SvdAlgorithm::JacobiBatched, 8, 5, 6));
    assert_eq!((unit.a, unit.s, unit.stride_s), (g.a, g.s, g.stride_s));
    let (Call::Axpby(thin_u), Call::Axpby(vt), Call::ReadToHost(24)) = (seq[6], seq[7], seq[8]) else {
        panic!("not the U and VT copies and the flags' read-back: {calls:?}");
    };
    assert_eq!((thin_u.src.addr, thin_u.dst.addr, thin_u.rows, thin_u.cols), (unit.u.addr, g.u.addr, 8, 5));
    assert_eq!((vt.src.addr, vt.dst.addr, vt.src.row_stride, vt.dst.col_stride), (unit.v.addr, g.vt.addr, 5, 5));
    // 5 x 8 is wide: gesvd sees W^T, 8 x 5 (m >= n), staged from W's row-major storage.
    assert_eq!((g.m, g.n, g.batch), (8, 5, 6));
    assert_eq!((stage.rows, stage.cols, stage.batch, stage.alpha, stage.beta), (8, 5, 6, 1.0, 0.0));
    assert_eq!((stage.src.addr, stage.src.row_stride, stage.src.col_stride), (wd.addr, 1, 8));
    assert_eq!((stage.dst.addr, g.a.addr, g.a.ld), (g.a.addr, stage.dst.addr, 8));
    // The sign fix follows the SVD and works on its vectors, with the roles swapped back: U of W
    // is V' of W^T (the rows of gesvd's VT, length 5), Vt of W is U'^T (gesvd's U, length 8).
    assert_eq!((f.count, f.batch), (5, 6));
    assert_eq!((f.left.addr, f.left.len, f.left.elem_stride, f.left.vec_stride), (g.vt.addr, 5, g.vt.ld, 1));
    assert_eq!(f.left.batch_stride, g.vt.stride);
    assert_eq!((f.right.addr, f.right.len, f.right.elem_stride, f.right.vec_stride), (g.u.addr, 8, 1, g.u.ld));
    assert_eq!(f.right.batch_stride, g.u.stride);
    // S is copied out after the sign fix, from gesvd's S to the caller's.
    assert_eq!((out.rows, out.cols, out.batch), (5, 1, 6));
    assert_eq!(
        (out.src.addr, out.src.batch_stride, out.dst.addr, out.dst.batch_stride),
        (g.s, g.stride_s, sd.addr, sd.batch_stride)
    );
}
