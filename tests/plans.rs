//! Every op's workspace-size query and its run agree: on random valid descriptors (shapes,
//! layouts, batches, dtypes), a caller workspace of exactly the queried size runs the op, one
//! byte less is `WorkspaceTooSmall` with every output untouched, and the result equals the one
//! computed with the context's own workspace. Ops that stream a batch (SVD, decomposition)
//! also run with their plan's minimum, the one-matrix share, and refuse one byte less.

use osft::ops::decompose::{DecomposePlan, Parts};
use osft::ops::project::Bases;
use osft::ops::reconstruct::Term;
use osft::ops::svd::{SvdListPlan, SvdOut, SvdPlan, SvdProblem};
use osft::ops::Plan;
use osft::{Context, DType, Error, Projector, Side, Strategy};
use osft_test_support::*;

/// Rounds of random descriptors per op.
const ROUNDS: usize = 12;

/// A CPU context whose caller workspace is exactly `bytes`, starting one byte past an aligned
/// address (the query must cover the worst alignment).
struct UserWs {
    ctx: Context,
    _mem: Vec<u8>,
}

fn user_ws(bytes: usize) -> UserWs {
    let ctx = Context::cpu();
    let mut mem = vec![0u8; bytes + 256];
    let base = mem.as_mut_ptr() as usize;
    let addr = base.div_ceil(256) * 256 + 1;
    // SAFETY: `mem` outlives the context in `UserWs` and nothing else uses it.
    unsafe { ctx.set_workspace(addr, bytes) }.unwrap();
    UserWs { ctx, _mem: mem }
}

/// Rayon pool sizes the SVD rounds run under, in turn.
const THREADS: [usize; 3] = [1, 3, 8];

/// `f` in a rayon pool of `threads` threads (the CPU executor's SVD lanes, hence the workspace
/// the SVD queries report: the query and the run happen in the same pool).
fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

fn too_small(r: osft::Result<impl std::fmt::Debug>, what: &str) {
    match r {
        Err(Error::WorkspaceTooSmall { .. }) => {}
        other => panic!("{what}: one byte less than needed gave {other:?}, not WorkspaceTooSmall"),
    }
}

fn pick<T: Copy>(rng: &mut StdRng, xs: &[T]) -> T {
    xs[rng.random_range(0..xs.len())]
}

fn shape(rng: &mut StdRng) -> (usize, usize) {
    (rng.random_range(1..=24), rng.random_range(1..=24))
}

fn batch_of(rng: &mut StdRng, r: usize, c: usize, b: usize) -> Vec<M> {
    (0..b).map(|_| randn(rng, r, c)).collect()
}

/// Runs with different workspaces stage matrices at different addresses, and faer's SIMD kernels
/// may take other paths for other alignments: the results agree to rounding, not bit for bit.
fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

/// `max |a - b| <= bound`: for two runs that each stay within a rounding bound of the exact
/// result, `bound` is the sum of theirs.
fn within(a: &[f64], b: &[f64], bound: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let err = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(err <= bound, "{what}: max difference {err} > {bound}");
}

/// As conftest.py's svd_tol: a backward-stable SVD of an `n x m` matrix (backward error
/// `10 max(n, m) u_compute`) with its factors stored in f32 (`4 sqrt(R) u_f32`), relative to `||W||_F`.
fn svd_bound(n: usize, m: usize, compute: DType) -> f64 {
    10.0 * n.max(m) as f64 * u(compute) + 4.0 * (n.min(m) as f64).sqrt() * u(DType::F32)
}

/// As conftest.py's project_tol: one side's projection of f32 data against `k` of `n` vectors in
/// f32 (coefficients and output rounded, two GEMMs), relative to `||X||_F`.
fn project_bound(n: usize, k: usize) -> f64 {
    2.0 * u(DType::F32) + 4.0 * (n + k) as f64 * u(DType::F32)
}

/// The Frobenius norm of a batch of matrices (or of their singular values).
fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn values(b: &Buf<f32>) -> Vec<f64> {
    (0..b.desc.batch.max(1)).flat_map(|i| b.get(i).d).collect()
}

#[test]
fn svd_and_decompose_query_min_and_run_agree() {
    let mut rng = rng();
    for round in 0..ROUNDS {
        // The SVD's lane count, so its workspace, is the CPU executor's thread count.
        let threads = THREADS[round % THREADS.len()];
        with_threads(threads, || {
            let (n, m) = shape(&mut rng);
            let r = n.min(m);
            let batch = rng.random_range(1..=3);
            let layout = pick(&mut rng, &LAYOUTS);
            let compute = pick(&mut rng, &[DType::F32, DType::F64]);
            let mut w = Buf::<f32>::from_batch(&batch_of(&mut rng, n, m, batch), layout);
            let wd = w.desc();
            let what = format!("round {round}: {batch} x {n} x {m} {layout:?} compute {compute:?}, {threads} threads");

            // SVD: the reference run on the context's own workspace.
            let run_svd = |ctx: &Context, s: &mut Buf<f32>| {
                let sd = s.desc();
                // SAFETY: host buffers alive for the call.
                unsafe { ctx.svd_raw(&wd, &SvdOut { u: None, s: &sd, vt: None }, compute) }
            };
            let mut s_ref = Buf::<f32>::poisoned(r, 1, batch, Layout::ColMajor);
            run_svd(&Context::cpu(), &mut s_ref).unwrap();
            let query = Context::cpu().svd_workspace_size(&wd, compute).unwrap();
            let mut s_probe = Buf::<f32>::poisoned(r, 1, batch, Layout::ColMajor);
            let sp = s_probe.desc();
            let min = SvdPlan::new(
                Context::cpu().executor(),
                &wd,
                &SvdOut { u: None, s: &sp, vt: None },
                compute,
                Default::default(),
            )
            .unwrap()
            .workspace()
            .min;
            assert!(min <= query && min > 0, "{what}: min {min}, query {query}");
            for bytes in [query, min] {
                let mut s = Buf::<f32>::poisoned(r, 1, batch, Layout::ColMajor);
                run_svd(&user_ws(bytes).ctx, &mut s).unwrap_or_else(|e| panic!("{what}: svd with {bytes} bytes: {e}"));
                // Weyl: each run's singular values within its backward error of the exact ones.
                let bound = 2.0 * svd_bound(n, m, compute) * norm(&values(&s_ref));
                within(&values(&s), &values(&s_ref), bound, &what);
            }
            let mut s = Buf::<f32>::poisoned(r, 1, batch, Layout::ColMajor);
            let before = s.bits();
            too_small(run_svd(&user_ws(min - 1).ctx, &mut s), &what);
            assert_eq!(s.bits(), before, "{what}: S written by a refused call");

            // Decompose at a random k, every part requested.
            let k = rng.random_range(0..=r);
            let bufs = |rows, cols| Buf::<f32>::poisoned(rows, cols, batch, Layout::RowMajor);
            let mut outs = [bufs(n, k), bufs(k, 1), bufs(k, m), bufs(n, r - k), bufs(r - k, 1), bufs(r - k, m)];
            let run_dec = |ctx: &Context, outs: &mut [Buf<f32>; 6]| {
                let d: Vec<_> = outs.iter_mut().map(|b| b.desc()).collect();
                let parts = Parts {
                    u_high: Some(&d[0]),
                    s_high: Some(&d[1]),
                    v_high: Some(&d[2]),
                    u_low: Some(&d[3]),
                    s_low: Some(&d[4]),
                    v_low: Some(&d[5]),
                };
                // SAFETY: host buffers alive for the call.
                unsafe { ctx.decompose_raw(&wd, k, &parts, compute) }
            };
            run_dec(&Context::cpu(), &mut outs).unwrap();
            let reference: Vec<Vec<f64>> = outs.iter().map(values).collect();
            let query = Context::cpu().decompose_workspace_size_k(&wd, k, compute).unwrap();
            let d: Vec<_> = outs.iter_mut().map(|b| b.desc()).collect();
            let parts = Parts {
                u_high: Some(&d[0]),
                s_high: Some(&d[1]),
                v_high: Some(&d[2]),
                u_low: Some(&d[3]),
                s_low: Some(&d[4]),
                v_low: Some(&d[5]),
            };
            let min = DecomposePlan::new(Context::cpu().executor(), &wd, k, &parts, compute, Default::default())
                .unwrap()
                .workspace()
                .min;
            assert!(min <= query && min > 0, "{what}: decompose min {min}, query {query}");
            for bytes in [query, min] {
                let mut o = [bufs(n, k), bufs(k, 1), bufs(k, m), bufs(n, r - k), bufs(r - k, 1), bufs(r - k, m)];
                run_dec(&user_ws(bytes).ctx, &mut o)
                    .unwrap_or_else(|e| panic!("{what}: decompose, {bytes} bytes: {e}"));
                // Singular values (parts 1 and 4) within Weyl's bound of two runs; the vectors'
                // worst-case bound (Wedin: that over the smallest gap, up to 1e-2 at these sizes)
                // is far above what two runs of one algorithm differ by, so they keep a fixed 1e-4.
                let s_bound = 2.0 * svd_bound(n, m, compute) * norm(&[&reference[1][..], &reference[4][..]].concat());
                for (i, (got, want)) in o.iter().zip(&reference).enumerate() {
                    if i == 1 || i == 4 {
                        within(&values(got), want, s_bound, &what);
                    } else {
                        close(&values(got), want, 1e-4, &what);
                    }
                }
            }
            let mut o = [bufs(n, k), bufs(k, 1), bufs(k, m), bufs(n, r - k), bufs(r - k, 1), bufs(r - k, m)];
            let before: Vec<_> = o.iter().map(|b| b.bits()).collect();
            too_small(run_dec(&user_ws(min - 1).ctx, &mut o), &what);
            assert_eq!(o.iter().map(|b| b.bits()).collect::<Vec<_>>(), before, "{what}: parts written");
            drop(w);
        });
    }
}

/// A caller workspace sized by the query in a 1-thread pool runs the SVD in an 8-thread pool,
/// whose query asks for more (a workspace slice per lane): the batch streams through it in
/// chunks, every singular value matching an independent f64 Jacobi SVD.
#[test]
fn an_svd_workspace_sized_in_a_smaller_pool_runs_in_a_larger_one() {
    let mut rng = rng();
    // 40 x 36 matrices take a per-matrix routine: min(batch, lanes) workspace slices.
    let (n, m, batch) = (40, 36, 6);
    let ws = batch_of(&mut rng, n, m, batch);
    let mut w = Buf::<f64>::from_batch(&ws, Layout::RowMajor);
    let wd = w.desc();
    let query_in = |threads| with_threads(threads, || Context::cpu().svd_workspace_size(&wd, DType::F64).unwrap());
    let (small, large) = (query_in(1), query_in(8));
    assert!(small < large, "one lane needs less workspace than eight: {small} vs {large}");
    let mut s = Buf::<f64>::poisoned(m, 1, batch, Layout::ColMajor);
    let sd = s.desc();
    with_threads(8, || {
        let user = user_ws(small);
        // SAFETY: host buffers alive for the call.
        unsafe { user.ctx.svd_raw(&wd, &SvdOut { u: None, s: &sd, vt: None }, DType::F64) }.unwrap();
    });
    for (b, wm) in ws.iter().enumerate() {
        let (_, s_ref, _) = jacobi_svd(wm);
        // A backward-stable SVD: each singular value within a few (n + m) u ||W||_2.
        let tol = 16.0 * (n + m) as f64 * u(DType::F64) * s_ref[0];
        let got = s.get(b).d;
        assert!(got.iter().zip(&s_ref).all(|(a, r)| (a - r).abs() <= tol), "matrix {b}: {got:?} vs {s_ref:?}");
    }
}

#[test]
fn svd_list_query_and_run_agree() {
    let mut rng = rng();
    for round in 0..ROUNDS / 2 {
        let threads = THREADS[round % THREADS.len()];
        with_threads(threads, || {
            let count = rng.random_range(1..=4);
            let mut ws: Vec<Buf<f32>> = (0..count)
                .map(|_| {
                    let (n, m) = shape(&mut rng);
                    let b = rng.random_range(1..=2);
                    let layout = pick(&mut rng, &LAYOUTS);
                    Buf::from_batch(&batch_of(&mut rng, n, m, b), layout)
                })
                .collect();
            let wd: Vec<_> = ws.iter_mut().map(|w| w.desc()).collect();
            let new_s = || -> Vec<Buf<f32>> {
                wd.iter().map(|w| Buf::poisoned(w.rows.min(w.cols), 1, w.batch, Layout::ColMajor)).collect()
            };
            let run = |ctx: &Context, s: &mut Vec<Buf<f32>>| {
                let sd: Vec<_> = s.iter_mut().map(|b| b.desc()).collect();
                let problems: Vec<_> =
                    wd.iter().zip(&sd).map(|(w, s)| SvdProblem { w, out: SvdOut { u: None, s, vt: None } }).collect();
                // SAFETY: host buffers alive for the call.
                unsafe { ctx.svd_list_raw(&problems, DType::F32) }
            };
            let mut reference = new_s();
            run(&Context::cpu(), &mut reference).unwrap();
            let refs: Vec<&osft::MatDesc> = wd.iter().collect();
            let query = Context::cpu().svd_list_workspace_size(&refs, DType::F32).unwrap();
            let mut s = new_s();
            let sd: Vec<_> = s.iter_mut().map(|b| b.desc()).collect();
            let problems: Vec<_> =
                wd.iter().zip(&sd).map(|(w, s)| SvdProblem { w, out: SvdOut { u: None, s, vt: None } }).collect();
            let min = SvdListPlan::new(Context::cpu().executor(), &problems, DType::F32, Default::default())
                .unwrap()
                .workspace()
                .min;
            assert!(min > 0 && min <= query, "round {round}: list min {min}, query {query}");
            for bytes in [query, min] {
                let mut s = new_s();
                run(&user_ws(bytes).ctx, &mut s)
                    .unwrap_or_else(|e| panic!("round {round}: list with {bytes} bytes: {e}"));
                for ((got, want), w) in s.iter().zip(&reference).zip(&wd) {
                    let bound = 2.0 * svd_bound(w.rows, w.cols, DType::F32) * norm(&values(want));
                    within(&values(got), &values(want), bound, &format!("round {round}"));
                }
            }
            let before: Vec<_> = s.iter().map(|b| b.bits()).collect();
            too_small(run(&user_ws(min - 1).ctx, &mut s), &format!("round {round}: list"));
            assert_eq!(s.iter().map(|b| b.bits()).collect::<Vec<_>>(), before, "round {round}: list wrote");
        });
    }
}

#[test]
fn projection_reconstruction_and_diagnostics_queries_and_runs_agree() {
    let mut rng = rng();
    for round in 0..ROUNDS {
        let (n, m) = shape(&mut rng);
        let batch = rng.random_range(1..=3);
        let layout = pick(&mut rng, &LAYOUTS);
        let ku = rng.random_range(0..=n);
        let kv = rng.random_range(0..=m);
        let what = format!("round {round}: {batch} x {n} x {m} {layout:?}, k = ({ku}, {kv})");
        let mut u = Buf::<f32>::from(&orthonormal(&mut rng, n, ku), pick(&mut rng, &LAYOUTS));
        let mut v = Buf::<f32>::from(&orthonormal(&mut rng, m, kv).t(), pick(&mut rng, &LAYOUTS));
        let xs = batch_of(&mut rng, n, m, batch);
        let (ud, vd) = (u.desc(), v.desc());
        let bases = Bases { u: Some(&ud), v: Some(&vd) };
        // Two projections of X on both sides, each within both sides' rounding bound.
        let x_norm = xs.iter().map(|x| x.fro().powi(2)).sum::<f64>().sqrt();
        let proj_bound = 2.0 * (project_bound(n, ku) + project_bound(m, kv)) * x_norm;

        // Projection, in place and into an output of another layout.
        for into in [false, true] {
            let fresh = || {
                let x = Buf::<f32>::from_batch(&xs, layout);
                let o = Buf::<f32>::poisoned(n, m, batch, Layout::PaddedCol(2));
                (x, o)
            };
            let run = |ctx: &Context, x: &mut Buf<f32>, o: &mut Buf<f32>| {
                let (xd, od) = (x.desc(), o.desc());
                // SAFETY: host buffers alive for the call.
                unsafe { ctx.project_raw(Side::Both, &bases, &xd, into.then_some(&od)) }
            };
            let (mut x, mut o) = fresh();
            run(&Context::cpu(), &mut x, &mut o).unwrap();
            let want = if into { values(&o) } else { values(&x) };
            let (xd, od) = fresh();
            let q =
                Context::cpu().project_workspace_size(Side::Both, &bases, &xd.desc, into.then_some(&od.desc)).unwrap();
            let (mut x, mut o) = fresh();
            run(&user_ws(q).ctx, &mut x, &mut o).unwrap();
            let got = if into { values(&o) } else { values(&x) };
            within(&got, &want, proj_bound, &what);
            if q > 0 {
                let (mut x, mut o) = fresh();
                let before = (x.bits(), o.bits());
                too_small(run(&user_ws(q - 1).ctx, &mut x, &mut o), &what);
                assert_eq!((x.bits(), o.bits()), before, "{what}: written by a refused projection");
            }
        }

        // A projector (the cached form where AUTO picks it), in place.
        {
            let ctx = Context::cpu();
            let strategy = pick(&mut rng, &[Strategy::Auto, Strategy::Coefficient]);
            // SAFETY: the bases outlive the projector.
            let p = unsafe { Projector::new(&ctx, Side::Both, Some(ud), Some(vd), strategy, 64 << 20) }.unwrap();
            let mut x = Buf::<f32>::from_batch(&xs, layout);
            let q = p.workspace_size(&ctx, &x.desc(), None).unwrap();
            let user = user_ws(q);
            // Applied through a second CPU context (same device: the projector checks it), whose
            // caller workspace has exactly the queried size.
            // SAFETY: host buffers alive for the call.
            unsafe { p.apply_raw(&user.ctx, &x.desc(), None) }.unwrap();
            let mut y = Buf::<f32>::from_batch(&xs, layout);
            // SAFETY: as above.
            unsafe { ctx.project_raw(Side::Both, &bases, &y.desc(), None) }.unwrap();
            within(&values(&x), &values(&y), proj_bound, &what);
            if q > 0 {
                let mut x = Buf::<f32>::from_batch(&xs, layout);
                let before = x.bits();
                // SAFETY: as above.
                too_small(unsafe { p.apply_raw(&user_ws(q - 1).ctx, &x.desc(), None) }, &what);
                assert_eq!(x.bits(), before, "{what}: written by a refused projector");
            }
        }

        // Diagnostics: leakage, orthonormality.
        let mut x = Buf::<f32>::from_batch(&xs, layout);
        let xd = x.desc();
        let leak = |ctx: &Context| unsafe { ctx.leakage_raw(Side::Left, &ud, &xd) };
        let q = Context::cpu().leakage_workspace_size(Side::Left, &ud, &xd).unwrap();
        close(&leak(&user_ws(q).ctx).unwrap(), &leak(&Context::cpu()).unwrap(), 1e-6, &what);
        if q > 0 {
            too_small(leak(&user_ws(q - 1).ctx), &what);
        }
        let ortho = |ctx: &Context| unsafe { ctx.orthonormality_error_raw(&vd, false) };
        let q = Context::cpu().orthonormality_error_workspace_size(&vd, false).unwrap();
        close(&ortho(&user_ws(q).ctx).unwrap(), &ortho(&Context::cpu()).unwrap(), 1e-6, &what);
        if q > 0 {
            too_small(ortho(&user_ws(q - 1).ctx), &what);
        }

        // Reconstruction and its error, from random factors of rank r.
        let r = rng.random_range(0..=n.min(m));
        let um = batch_of(&mut rng, n, r, batch);
        let mut fu = Buf::<f32>::from_batch(&um, pick(&mut rng, &LAYOUTS));
        let sm = batch_of(&mut rng, r, 1, batch);
        let mut fs = Buf::<f32>::from_batch(&sm, Layout::ColMajor);
        let vm = batch_of(&mut rng, r, m, batch);
        let mut fv = Buf::<f32>::from_batch(&vm, pick(&mut rng, &LAYOUTS));
        let (fud, fsd, fvd) = (fu.desc(), fs.desc(), fv.desc());
        let terms = [Term { u: &fud, s: &fsd, v: &fvd }];
        let compute = pick(&mut rng, &[DType::F32, DType::F64]);
        let run = |ctx: &Context, o: &mut Buf<f32>| {
            let od = o.desc();
            // SAFETY: host buffers alive for the call.
            unsafe { ctx.reconstruct_raw(&terms, &od, compute) }
        };
        let mut want = Buf::<f32>::poisoned(n, m, batch, layout);
        run(&Context::cpu(), &mut want).unwrap();
        let q = Context::cpu().reconstruct_workspace_size(&terms, &want.desc, compute).unwrap();
        let mut got = Buf::<f32>::poisoned(n, m, batch, layout);
        run(&user_ws(q).ctx, &mut got).unwrap();
        // Two runs of U diag(S) V (inner length r) in `compute`, each within `2 (r + 1) u_compute
        // ||U||_F max|S| ||V||_F` plus the output's rounding to f32, per matrix.
        let factors: f64 =
            (0..batch).map(|b| um[b].fro() * sm[b].d.iter().fold(0.0, |a: f64, x| a.max(x.abs())) * vm[b].fro()).sum();
        let bound = 2.0
            * (2.0 * (r + 1) as f64 * compute.unit_roundoff() * factors
                + DType::F32.unit_roundoff() * norm(&values(&want)));
        within(&values(&got), &values(&want), bound, &what);
        if q > 0 {
            let mut o = Buf::<f32>::poisoned(n, m, batch, layout);
            let before = o.bits();
            too_small(run(&user_ws(q - 1).ctx, &mut o), &what);
            assert_eq!(o.bits(), before, "{what}: written by a refused reconstruction");
        }
        let err = |ctx: &Context| unsafe { ctx.reconstruction_error_raw(&xd, &terms, compute) };
        let q = Context::cpu().reconstruction_error_workspace_size(&xd, &terms, compute).unwrap();
        close(&err(&user_ws(q).ctx).unwrap(), &err(&Context::cpu()).unwrap(), 1e-6, &what);
        too_small(err(&user_ws(q - 1).ctx), &what);

        // Layer importance and reading a vector.
        let samples = rng.random_range(1..=5);
        let acts_layout = pick(&mut rng, &LAYOUTS);
        let mut acts = Buf::<f32>::from(&randn(&mut rng, samples, m), acts_layout);
        let ad = acts.desc();
        let imp = |ctx: &Context| unsafe { ctx.layer_importance_raw(&xd, &ad, compute) };
        let q = Context::cpu().layer_importance_workspace_size(&xd, &ad, compute).unwrap();
        close(&imp(&user_ws(q).ctx).unwrap(), &imp(&Context::cpu()).unwrap(), 1e-6, &what);
        too_small(imp(&user_ws(q - 1).ctx), &what);
        let read = |ctx: &Context| unsafe { ctx.read_vector_raw(&fsd) };
        let q = Context::cpu().read_vector_workspace_size(&fsd).unwrap();
        assert_eq!(read(&user_ws(q).ctx).unwrap(), values(&fs), "{what}: read_vector");
        if q > 0 {
            too_small(read(&user_ws(q - 1).ctx), &what);
        }
        drop((u, v, x, fu, fv, acts));
    }
}

#[test]
fn sharded_projection_queries_and_runs_agree() {
    let mut rng = rng();
    for round in 0..ROUNDS {
        let (n, m) = shape(&mut rng);
        let k = rng.random_range(1..=n);
        let batch = rng.random_range(1..=3);
        let what = format!("round {round}: {batch} x {n} x {m}, k = {k}");
        let mut u = Buf::<osft::bf16>::from(&orthonormal(&mut rng, n, k), Layout::RowMajor);
        let xs = batch_of(&mut rng, n, m, batch);
        let mut coef = Buf::<f32>::poisoned(k, m, batch, Layout::RowMajor);
        let mut x = Buf::<osft::bf16>::from_batch(&xs, Layout::RowMajor);
        let (ud, cd) = (u.desc(), coef.desc());
        let ctx = Context::cpu();
        // SAFETY: host buffers alive for the call.
        unsafe { ctx.project_partial_raw(Side::Left, &ud, &x.desc(), &cd) }.unwrap();
        // An f32 coefficient for bf16 data is cast through the workspace.
        let q = ctx.project_apply_workspace_size(Side::Left, &ud, &cd, &x.desc()).unwrap();
        assert!(q > 0, "{what}: the cast copy of coef needs workspace");
        let mut want = Buf::<osft::bf16>::from_batch(&xs, Layout::RowMajor);
        // SAFETY: as above.
        unsafe { ctx.project_apply_raw(Side::Left, &ud, &cd, &want.desc()) }.unwrap();
        // SAFETY: as above.
        unsafe { user_ws(q).ctx.project_apply_raw(Side::Left, &ud, &cd, &x.desc()) }.unwrap();
        assert_eq!(x.bits(), want.bits(), "{what}: apply with the queried workspace");
        // The C query, which has no basis, agrees with the plan and refuses what the plan refuses.
        let q_c = osft::ops::project::apply_workspace_query(ctx.executor(), &cd, &x.desc()).unwrap();
        assert_eq!(q_c, q, "{what}: the basis-less query and the plan disagree");
        let mut c64 = Buf::<f64>::poisoned(k, m, batch, Layout::RowMajor);
        match osft::ops::project::apply_workspace_query(ctx.executor(), &c64.desc(), &x.desc()) {
            Err(Error::DtypeUnsupported(_)) => {}
            other => panic!("{what}: an f64 coef for bf16 data gave {other:?}"),
        }
        let mut y = Buf::<osft::bf16>::from_batch(&xs, Layout::RowMajor);
        let before = y.bits();
        // SAFETY: as above.
        too_small(unsafe { user_ws(q - 1).ctx.project_apply_raw(Side::Left, &ud, &cd, &y.desc()) }, &what);
        assert_eq!(y.bits(), before, "{what}: written by a refused apply");
        drop((u, coef));
    }
}

#[test]
fn an_empty_coefficient_needs_no_workspace_in_either_query() {
    // k = 0 (no frozen vectors): nothing to cast or apply, even when coef's dtype differs from
    // X's (which otherwise needs a cast copy), and the basis-less C query says so too.
    let mut rng = rng();
    for (n, m, batch) in [(5, 4, 2), (1, 7, 1), (6, 1, 3)] {
        let mut u = Buf::<osft::bf16>::from(&orthonormal(&mut rng, n, 1), Layout::RowMajor);
        let mut ud = u.desc();
        ud.cols = 0;
        let mut coef = Buf::<f32>::poisoned(0, m, batch, Layout::RowMajor);
        let mut x = Buf::<osft::bf16>::poisoned(n, m, batch, Layout::RowMajor);
        let (cd, xd) = (coef.desc(), x.desc());
        let ctx = Context::cpu();
        let q = ctx.project_apply_workspace_size(Side::Left, &ud, &cd, &xd).unwrap();
        let q_c = osft::ops::project::apply_workspace_query(ctx.executor(), &cd, &xd).unwrap();
        assert_eq!((q, q_c), (0, 0), "{batch} x {n} x {m}, k = 0");
        drop((u, coef, x));
    }
}
