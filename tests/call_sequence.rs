//! The primitive call sequences the algorithm layer issues — what the CUDA executor will receive.
//! Recorded on the CPU through `exec::trace::Recording`: a batched projection is two
//! strided-batched GEMMs with cuBLAS arguments, allocates nothing once the workspace exists, and
//! a batched SVD is one batched `gesvd`.

mod common;
use common::*;
use osft::exec::cpu::CpuExecutor;
use osft::exec::trace::{Call, Recording};
use osft::exec::{ComputeType, Op};
use osft::ops::project::Bases;
use osft::ops::svd::SvdOut;
use osft::{Context, DType, Side};
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
    // problem, with no staging copy.
    let (rec, ctx) = recorded();
    let mut rng = rng();
    let (n, m, k) = (9, 7, 3);
    let mut u = Buf::<osft::bf16>::from(&orthonormal(&mut rng, n, k), Layout::RowMajor);
    let mut v = Buf::<osft::bf16>::from(&orthonormal(&mut rng, m, k).t(), Layout::RowMajor);
    let mut x = Buf::<osft::bf16>::from(&randn(&mut rng, n, m), Layout::PaddedRow(3));
    let (ud, vd, xd) = (u.desc(), v.desc(), x.desc());
    unsafe { ctx.project_raw(Side::Both, &Bases { u: Some(&ud), v: Some(&vd) }, &xd, None) }.unwrap();
    let calls = rec.take();
    let g = gemms(&calls);
    assert_eq!(g.len(), 4);
    assert!(!calls.iter().any(|c| matches!(c, Call::Axpby(_))), "no staging copies: {calls:?}");
    // Every GEMM writing X writes it as the column-major m x n matrix with ld = row stride.
    for w in [g[1], g[3]] {
        assert_eq!((w.m, w.n, w.c.ld, w.c.dtype), (m, n, m + 3, DType::BF16));
    }
}

#[test]
fn batched_svd_is_one_batched_gesvd() {
    let (rec, ctx) = recorded();
    let mut rng = rng();
    let ws: Vec<M> = (0..6).map(|_| randn(&mut rng, 5, 8)).collect();
    let mut w = Buf::<f32>::from_batch(&ws, Layout::RowMajor);
    let mut s = Buf::<f32>::poisoned(5, 1, 6, Layout::ColMajor);
    let sd = s.desc();
    unsafe { ctx.svd_raw(&w.desc(), &SvdOut { u: None, s: &sd, vt: None }, DType::F32) }.unwrap();
    let calls = rec.take();
    let svds: Vec<_> = calls.iter().filter_map(|c| if let Call::Gesvd(g) = c { Some(*g) } else { None }).collect();
    assert_eq!(svds.len(), 1, "{calls:?}");
    // 5 x 8 is wide: gesvd sees W^T, 8 x 5 (m >= n).
    assert_eq!((svds[0].m, svds[0].n, svds[0].batch), (8, 5, 6));
    assert_eq!(calls.iter().filter(|c| matches!(c, Call::SignFix(_))).count(), 1);
}
