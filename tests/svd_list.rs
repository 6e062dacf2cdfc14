//! A list of SVD problems of different shapes runs in waves: the problems whose whole batches
//! fit the workspace side by side are staged together and factored by ONE `gesvd_grouped` call
//! (on CUDA: one fork/join over the stream pool and one convergence read-back), then each is
//! sign-fixed and copied out. Recorded on the CPU through `exec::trace::Recording`, with every
//! result compared against an independent f64 reference (a one-sided Jacobi SVD in the test
//! support), and non-convergence injected per matrix to check that it names the right problem and
//! matrix.

use osft::desc::{Device, MatDesc};
use osft::exec::cpu::CpuExecutor;
use osft::exec::trace::{Call, Recording};
use osft::exec::*;
use osft::ops::svd::{SvdOut, SvdProblem};
use osft::{Context, DType, Element, Error, SvdAlgorithm};
use osft_test_support::*;
use std::sync::Arc;

/// The problems: one above 32 x 32 (`Qr` under `Auto`), a wide one and a square one that fit
/// `gesvdjBatched` (so `Auto` mixes routines within one grouped call).
const SHAPES: [(usize, usize, usize); 3] = [(40, 13, 2), (8, 20, 3), (16, 16, 1)];

fn inputs(seed_shift: usize) -> Vec<Vec<M>> {
    let mut rng = rng();
    for _ in 0..seed_shift {
        randn(&mut rng, 1, 1);
    }
    SHAPES.iter().map(|&(n, m, b)| (0..b).map(|_| randn(&mut rng, n, m)).collect()).collect()
}

type Triplets = Vec<(M, Vec<f64>, M)>;

/// `svd_list` over `problems` (each a batch of one shape) in `T`; `U` column-major, `Vt`
/// row-major, outputs poisoned. A failed call must not have written the outputs of the problem
/// it failed on.
fn list_with<T: Element>(ctx: &Context, problems: &[Vec<M>]) -> Result<Vec<Triplets>, Error> {
    let mut wbs: Vec<Buf<T>> = problems.iter().map(|ws| Buf::from_batch(ws, Layout::RowMajor)).collect();
    let dims: Vec<(usize, usize, usize)> = problems.iter().map(|ws| (ws[0].r, ws[0].c, ws.len())).collect();
    let mut ubs: Vec<Buf<T>> = dims.iter().map(|&(n, m, b)| Buf::poisoned(n, n.min(m), b, Layout::ColMajor)).collect();
    let mut sbs: Vec<Buf<T>> = dims.iter().map(|&(n, m, b)| Buf::poisoned(n.min(m), 1, b, Layout::ColMajor)).collect();
    let mut vbs: Vec<Buf<T>> = dims.iter().map(|&(n, m, b)| Buf::poisoned(n.min(m), m, b, Layout::RowMajor)).collect();
    let wd: Vec<MatDesc> = wbs.iter_mut().map(|b| b.desc()).collect();
    let ud: Vec<MatDesc> = ubs.iter_mut().map(|b| b.desc()).collect();
    let sd: Vec<MatDesc> = sbs.iter_mut().map(|b| b.desc()).collect();
    let vd: Vec<MatDesc> = vbs.iter_mut().map(|b| b.desc()).collect();
    let ps: Vec<SvdProblem> = (0..problems.len())
        .map(|i| SvdProblem { w: &wd[i], out: SvdOut { u: Some(&ud[i]), s: &sd[i], vt: Some(&vd[i]) } })
        .collect();
    unsafe { ctx.svd_list_raw(&ps, T::DTYPE) }?;
    Ok((0..problems.len())
        .map(|i| {
            assert!(
                ubs[i].padding_untouched() && sbs[i].padding_untouched() && vbs[i].padding_untouched(),
                "problem {i}: padding written"
            );
            (0..dims[i].2).map(|b| (ubs[i].get(b), sbs[i].get(b).d, vbs[i].get(b))).collect()
        })
        .collect())
}

/// The f64 reference: each matrix alone through the test support's one-sided Jacobi SVD in f64
/// (no library code), with the library's sign convention applied.
fn reference(problems: &[Vec<M>]) -> Vec<Triplets> {
    problems.iter().map(|ws| ws.iter().map(jacobi_svd).collect()).collect()
}

/// Agreement with the reference, from the compute type's unit roundoff `u`: a backward-stable
/// SVD is exact for `W + E` with `||E|| <= c (n + m) u ||W||` (c = 16 here), so each singular
/// value moves by at most that (Weyl) and each singular vector, in 2-norm, by that over its gap
/// to the rest of the spectrum and to 0 (Wedin), capped at 0.5 (a sign flip is off by 2).
fn assert_matches(got: &[Triplets], want: &[Triplets], u: f64, what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        for (b, ((gu, gs, gv), (wu, ws, wv))) in g.iter().zip(w).enumerate() {
            let (n, m) = (wu.r, wv.c);
            let backward = 16.0 * (n + m) as f64 * u * ws[0];
            let ds = gs.iter().zip(ws).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(ds <= backward, "{what}: problem {i} matrix {b}: S differs by {ds:e} > {backward:e}");
            assert!(sign_violations(gu).is_empty(), "{what}: problem {i} matrix {b}: sign convention");
            for t in 0..ws.len() {
                let gap = (0..ws.len()).filter(|&q| q != t).map(|q| (ws[q] - ws[t]).abs()).fold(ws[t], f64::min);
                let tol = (backward / gap.max(f64::MIN_POSITIVE)).min(0.5);
                let du = (0..n).map(|r| (gu.at(r, t) - wu.at(r, t)).powi(2)).sum::<f64>().sqrt();
                let dv = (0..m).map(|c| (gv.at(t, c) - wv.at(t, c)).powi(2)).sum::<f64>().sqrt();
                assert!(
                    du <= tol && dv <= tol,
                    "{what}: problem {i} matrix {b} vector {t}: U differs by {du:e}, Vt by {dv:e} (> {tol:e})"
                );
            }
        }
    }
}

fn grouped(calls: &[Call]) -> Vec<Vec<GesvdCall>> {
    calls.iter().filter_map(|c| if let Call::GesvdGrouped(g) = c { Some(g.clone()) } else { None }).collect()
}

fn strided(calls: &[Call]) -> Vec<GesvdArgs> {
    calls.iter().filter_map(|c| if let Call::Gesvd(g) = c { Some(*g) } else { None }).collect()
}

fn descs(problems: &[Vec<M>], dtype: DType) -> Vec<MatDesc> {
    problems
        .iter()
        .map(|ws| {
            let (n, m) = (ws[0].r, ws[0].c);
            MatDesc {
                addr: 64,
                dtype,
                rows: n,
                cols: m,
                row_stride: m,
                col_stride: 1,
                batch: ws.len(),
                batch_stride: n * m,
                device: Device::Host,
            }
        })
        .collect()
}

#[test]
fn a_list_that_fits_runs_as_one_grouped_call() {
    let rec = Arc::new(Recording::new(CpuExecutor));
    let ctx = Context::with_executor(rec.clone());
    let problems = inputs(0);
    let want = reference(&problems);
    for (f32_run, tol) in [(false, u(DType::F64)), (true, u(DType::F32))] {
        rec.take();
        let got = if f32_run { list_with::<f32>(&ctx, &problems) } else { list_with::<f64>(&ctx, &problems) }.unwrap();
        assert_matches(&got, &want, tol, if f32_run { "f32, one wave" } else { "f64, one wave" });
        let calls = rec.take();
        let g = grouped(&calls);
        assert_eq!(g.len(), 1, "one gesvd_grouped for the whole list: {calls:?}");
        assert!(strided(&calls).is_empty(), "no per-problem gesvd_strided_batched");
        let got: Vec<_> = g[0].iter().map(|c| (c.args.m, c.args.n, c.args.batch, c.args.algorithm)).collect();
        assert_eq!(
            got,
            vec![
                (40, 13, 2, SvdAlgorithm::Qr),
                (20, 8, 3, SvdAlgorithm::JacobiBatched),
                (16, 16, 1, SvdAlgorithm::JacobiBatched)
            ]
        );
        // Each group its own workspace slice, side by side.
        for p in g[0].windows(2) {
            assert!(p[0].work + p[0].work_bytes <= p[1].work, "workspace slices overlap");
        }
        // Copy-in of every problem before the grouped call; sign fix of every problem after it.
        let at = calls.iter().position(|c| matches!(c, Call::GesvdGrouped(_))).unwrap();
        let fixes: Vec<usize> =
            calls.iter().enumerate().filter(|(_, c)| matches!(c, Call::SignFix(_))).map(|(i, _)| i).collect();
        assert_eq!(fixes.len(), 3);
        assert!(fixes.iter().all(|i| *i > at));
        assert!(
            calls[..at].iter().filter(|c| matches!(c, Call::Axpby(_))).count() >= 3,
            "every problem staged before the call"
        );
    }
}

#[test]
fn a_workspace_that_fits_only_the_largest_problem_runs_in_waves_with_the_same_results() {
    let rec = Arc::new(Recording::new(CpuExecutor));
    let ctx = Context::with_executor(rec.clone());
    let problems = inputs(1);
    let want = reference(&problems);
    let need =
        ctx.svd_list_workspace_size(&descs(&problems, DType::F64).iter().collect::<Vec<_>>(), DType::F64).unwrap();
    // The query reports the largest single problem, not the whole list.
    let largest =
        descs(&problems, DType::F64).iter().map(|d| ctx.svd_workspace_size(d, DType::F64).unwrap()).max().unwrap();
    assert_eq!(need, largest);
    let mut space = vec![0u8; need];
    unsafe { ctx.set_workspace(space.as_mut_ptr() as usize, need) }.unwrap();
    rec.take();
    let got = list_with::<f64>(&ctx, &problems).unwrap();
    assert_matches(&got, &want, u(DType::F64), "f64, waves");
    let calls = rec.take();
    let g = grouped(&calls);
    assert!(g.len() >= 2, "a workspace of the largest problem's size takes several waves: {g:?}");
    // Every problem exactly once, in order, whole.
    let shapes: Vec<_> = g.iter().flatten().map(|c| (c.args.m, c.args.n, c.args.batch)).collect();
    assert_eq!(shapes, vec![(40, 13, 2), (20, 8, 3), (16, 16, 1)]);
    assert!(strided(&calls).is_empty());
    assert!(g
        .iter()
        .flatten()
        .all(|c| c.work >= space.as_ptr() as usize && c.work + c.work_bytes <= space.as_ptr() as usize + need));

    // Only the largest problem's one-matrix share: that problem is streamed in chunks (strided
    // calls of one matrix); the others go through gesvd_grouped where their whole batch fits
    // that share, else are chunked too (which depends on the routines' workspace sizes).
    let one = descs(&problems, DType::F64)
        .iter()
        .map(|d| ctx.svd_workspace_size(&MatDesc { batch: 1, ..*d }, DType::F64).unwrap())
        .max()
        .unwrap();
    assert!(one < need);
    unsafe { ctx.set_workspace(space.as_mut_ptr() as usize, one) }.unwrap();
    rec.take();
    let got = list_with::<f64>(&ctx, &problems).unwrap();
    assert_matches(&got, &want, u(DType::F64), "f64, minimum workspace");
    let calls = rec.take();
    let chunks: Vec<_> = strided(&calls).iter().map(|a| (a.m, a.n, a.batch)).collect();
    assert_eq!(chunks[..2], [(40, 13, 1), (40, 13, 1)], "the largest problem chunked");
    assert!(chunks.iter().all(|c| c.2 == 1), "chunks of one matrix: {chunks:?}");
    let rest: Vec<_> = grouped(&calls).iter().flatten().map(|c| (c.args.m, c.args.n, c.args.batch)).collect();
    // Every matrix of every problem factored exactly once, whole or in chunks.
    for (m, n, b) in [(40, 13, 2), (20, 8, 3), (16, 16, 1)] {
        let seen: usize = chunks.iter().chain(&rest).filter(|c| (c.0, c.1) == (m, n)).map(|c| c.2).sum();
        assert_eq!(seen, b, "{m} x {n}: {chunks:?} {rest:?}");
    }
    assert!(rest.iter().all(|c| c.2 > 1 || c.0 != 40), "{rest:?}");

    // Below the minimum: refused before anything is written.
    unsafe { ctx.set_workspace(space.as_mut_ptr() as usize, one - 1) }.unwrap();
    assert!(matches!(list_with::<f64>(&ctx, &problems), Err(Error::WorkspaceTooSmall { .. })));
}

#[test]
fn the_context_grows_its_own_workspace_to_one_wave() {
    let ctx = Context::cpu();
    let problems = inputs(2);
    let ds = descs(&problems, DType::F32);
    let refs: Vec<&MatDesc> = ds.iter().collect();
    let need = ctx.svd_list_workspace_size(&refs, DType::F32).unwrap();
    let sum: usize = ds.iter().map(|d| ctx.svd_workspace_size(d, DType::F32).unwrap()).sum();
    list_with::<f32>(&ctx, &problems).unwrap();
    assert!(
        ctx.workspace_bytes() >= sum && sum > need,
        "cached {} for a list of {sum} side by side (required {need})",
        ctx.workspace_bytes()
    );
}

// ---------------------------------------------------------------------------------------------
// Non-convergence: an executor that reports it for every matrix whose first staged entry is
// exactly 1000 (the CPU's faer SVD itself never fails on finite input).

struct Faulty(CpuExecutor);

const MARK: f64 = 1000.0;
/// A matrix whose gesvdp (`Polar`) reports a non-finite `h_err_sigma`.
const MARK_SIGMA: f64 = 2000.0;

impl Executor for Faulty {
    fn name(&self) -> String {
        "faulty".into()
    }
    fn device(&self) -> Device {
        self.0.device()
    }
    fn alloc(&self, bytes: usize) -> osft::Result<Buffer> {
        self.0.alloc(bytes)
    }
    unsafe fn read_to_host(&self, src: Addr, dst: &mut [u8]) -> osft::Result<()> {
        self.0.read_to_host(src, dst)
    }
    unsafe fn write_from_host(&self, src: &[u8], dst: Addr) -> osft::Result<()> {
        self.0.write_from_host(src, dst)
    }
    fn synchronize(&self) -> osft::Result<()> {
        self.0.synchronize()
    }
    unsafe fn gemm_strided_batched(&self, a: &GemmArgs) -> osft::Result<()> {
        self.0.gemm_strided_batched(a)
    }
    unsafe fn axpby(&self, a: &AxpbyArgs) -> osft::Result<()> {
        self.0.axpby(a)
    }
    unsafe fn dgmm(&self, a: &DgmmArgs) -> osft::Result<()> {
        self.0.dgmm(a)
    }
    fn svd_unit_workspace(&self, shape: &SvdUnitShape) -> osft::Result<usize> {
        self.0.svd_unit_workspace(shape)
    }
    fn svd_max_lanes(&self) -> usize {
        self.0.svd_max_lanes()
    }
    unsafe fn svd_lanes(&self, schedule: &LaneSchedule) -> osft::Result<()> {
        // Read before the SVD overwrites A; the routine's flag for a marked matrix says "not
        // converged", as cuSOLVER reports it.
        let (mut marked, mut sigma) = (vec![], vec![]);
        for (_, u) in &schedule.units {
            assert_eq!(u.a.dtype, DType::F64);
            for b in 0..u.batch {
                let a00 = unsafe { *((u.a.addr + b * u.a.stride * 8) as *const f64) };
                if a00 == MARK {
                    marked.push(u.info + 4 * b);
                }
                if a00 == MARK_SIGMA && u.routine == SvdAlgorithm::Polar && u.host_values != 0 {
                    sigma.push(u.host_values + 8 * b);
                }
            }
        }
        self.0.svd_lanes(schedule)?;
        for info in marked {
            unsafe { *(info as *mut i32) = 1 };
        }
        for h in sigma {
            unsafe { *(h as *mut f64) = f64::NAN };
        }
        Ok(())
    }
    unsafe fn svd_sign_fix(&self, a: &SignFixArgs) -> osft::Result<()> {
        self.0.svd_sign_fix(a)
    }
    unsafe fn sum_squares(&self, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> osft::Result<Vec<f64>> {
        self.0.sum_squares(rows, cols, batch, x)
    }
    unsafe fn count_nonfinite(&self, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> osft::Result<Vec<u64>> {
        self.0.count_nonfinite(rows, cols, batch, x)
    }
    unsafe fn add_diagonal(&self, n: usize, a: &Strided, batch: usize, alpha: f64) -> osft::Result<()> {
        self.0.add_diagonal(n, a, batch, alpha)
    }
    unsafe fn cosine_sum(&self, a: &Vectors, b: &Vectors, count: usize) -> osft::Result<f64> {
        self.0.cosine_sum(a, b, count)
    }
}

#[test]
fn non_convergence_names_the_problem_and_the_matrix() {
    let ctx = Context::with_executor(Arc::new(Faulty(CpuExecutor)));
    for (p, b) in [(1, 2), (0, 1), (2, 0)] {
        let mut problems = inputs(3);
        problems[p][b].set(0, 0, MARK);
        // One wave (the context's own workspace), then the minimum workspace (problem 0 chunked
        // one matrix at a time, the others in waves).
        ctx.release_workspace();
        let e = list_with::<f64>(&ctx, &problems).unwrap_err();
        assert_eq!(e, Error::NotConverged { problem: Some(p), index: b }, "one wave");
        assert!(e.to_string().contains(&format!("matrix {b} of the batch of problem {p}")), "{e}");
        let one = descs(&problems, DType::F64)
            .iter()
            .map(|d| ctx.svd_workspace_size(&MatDesc { batch: 1, ..*d }, DType::F64).unwrap())
            .max()
            .unwrap();
        let mut space = vec![0u8; one];
        unsafe { ctx.set_workspace(space.as_mut_ptr() as usize, one) }.unwrap();
        let e = list_with::<f64>(&ctx, &problems).unwrap_err();
        assert_eq!(e, Error::NotConverged { problem: Some(p), index: b }, "minimum workspace");
        assert_eq!(e.status(), osft::Status::NotConverged);
        ctx.release_workspace();
    }
    // A list of one problem names problem 0.
    let w = &inputs(3)[1];
    let mut ws = w.clone();
    ws[2].set(0, 0, MARK);
    let e = list_with::<f64>(&ctx, &[ws]).unwrap_err();
    assert_eq!(e, Error::NotConverged { problem: Some(0), index: 2 });
}

/// gesvdp writes its `h_err_sigma` whether or not diagnostics are on: a non-finite one fails the
/// SVD either way, naming the matrix (each matrix of a batch has its own host slot).
#[test]
fn a_non_finite_gesvdp_error_bound_fails_with_diagnostics_off_or_on() {
    let ctx = Context::with_executor(Arc::new(Faulty(CpuExecutor)));
    ctx.set_svd_algorithm(SvdAlgorithm::Polar);
    for diagnostics in [false, true] {
        ctx.set_svd_diagnostics(diagnostics);
        for (p, b) in [(1, 0), (1, 2), (0, 1), (2, 0)] {
            let mut problems = inputs(5);
            problems[p][b].set(0, 0, MARK_SIGMA);
            let e = list_with::<f64>(&ctx, &problems).unwrap_err();
            assert_eq!(e, Error::NotConverged { problem: Some(p), index: b }, "diagnostics {diagnostics}");
        }
        // Unmarked, the same list succeeds.
        list_with::<f64>(&ctx, &inputs(5)).unwrap();
    }
}

#[test]
fn the_default_grouped_primitive_checks_every_group_before_running_any() {
    let rec = Recording::new(CpuExecutor);
    let (m, n) = (6, 4);
    let mut a = vec![1.0f64; m * n * 2];
    let (mut s, mut u, mut vt) = (vec![0.0f64; n * 2], vec![0.0f64; m * n * 2], vec![0.0f64; n * n * 2]);
    let args = |i: usize, a: &mut [f64], s: &mut [f64], u: &mut [f64], vt: &mut [f64], alg| GesvdArgs {
        m,
        n,
        a: Strided { addr: a[i * m * n..].as_mut_ptr() as usize, dtype: DType::F64, ld: m, stride: m * n },
        s: s[i * n..].as_mut_ptr() as usize,
        stride_s: n,
        u: Strided { addr: u[i * m * n..].as_mut_ptr() as usize, dtype: DType::F64, ld: m, stride: m * n },
        vt: Strided { addr: vt[i * n * n..].as_mut_ptr() as usize, dtype: DType::F64, ld: n, stride: n * n },
        batch: 1,
        algorithm: alg,
    };
    let need = rec.gesvd_buffer_size(m, n, DType::F64, 1, SvdAlgorithm::Qr).unwrap();
    let mut work = vec![0u8; 2 * need + 512];
    let w0 = work.as_mut_ptr() as usize;
    let g0 = GesvdCall { args: args(0, &mut a, &mut s, &mut u, &mut vt, SvdAlgorithm::Qr), work: w0, work_bytes: need };
    // Group 1 overlaps group 0's workspace: refused, and group 0 did not run (S untouched).
    let g1 = GesvdCall {
        args: args(1, &mut a, &mut s, &mut u, &mut vt, SvdAlgorithm::Qr),
        work: w0 + need / 2,
        work_bytes: need,
    };
    let e = unsafe { rec.gesvd_grouped(&[g0, g1]) }.unwrap_err();
    assert!(matches!(e, Error::Precondition { .. }) && e.to_string().contains("groups 0 and 1 overlap"), "{e}");
    assert!(s.iter().all(|x| *x == 0.0));
    // Group 1 with too small a workspace.
    let g1 = GesvdCall { work: w0 + need + 256, work_bytes: need - 1, ..g1 };
    assert!(matches!(unsafe { rec.gesvd_grouped(&[g0, g1]) }, Err(Error::WorkspaceTooSmall { .. })));
    // Group 1 against its routine's preconditions (lda < m).
    let mut bad = GesvdCall { work_bytes: need, ..g1 };
    bad.args.a.ld = m - 1;
    let e = unsafe { rec.gesvd_grouped(&[g0, bad]) }.unwrap_err();
    assert!(e.to_string().contains("group 1"), "{e}");
    assert!(s.iter().all(|x| *x == 0.0));
    // Both valid: both run.
    let g1 = GesvdCall { work_bytes: need, ..g1 };
    unsafe { rec.gesvd_grouped(&[g0, g1]) }.unwrap();
    assert!(s[0] > 0.0 && s[n] > 0.0, "both groups ran: {s:?}");
    assert_eq!(rec.take().iter().filter(|c| matches!(c, Call::GesvdGrouped(_))).count(), 4);
}
