//! The SVD schedule every executor runs (`ops::svd::schedule`), pinned on the trace executor:
//! the complete call sequence — fork, each routine call on its lane, join, the copies after it,
//! the convergence-flag read-backs — of a mixed-shape `svd_list`, a mixed-algorithm grouped
//! batch and a batched decomposition (what the CUDA executor receives with its 4 lanes: the CPU
//! executor in a 4-thread pool plans the same), and the CPU executor running that same plan with
//! results that match an independent f64 Jacobi SVD; on more threads, more lanes.

use osft::exec::cpu::CpuExecutor;
use osft::exec::trace::{Call, Recording};
use osft::exec::*;
use osft::ops::decompose::Parts;
use osft::ops::svd::{SvdOut, SvdProblem};
use osft::{Context, DType};
use osft_test_support::*;
use std::sync::Arc;

/// `f` run in a rayon pool of `threads` threads: the CPU executor plans that many SVD lanes
/// there ([`Executor::svd_max_lanes`]).
fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

fn recorded() -> (Arc<Recording<CpuExecutor>>, Context) {
    let rec = Arc::new(Recording::new(CpuExecutor));
    (rec.clone(), Context::with_executor(rec))
}

/// The calls without allocations (the context's workspace), as short names.
fn names(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| !matches!(c, Call::Alloc(_)))
        .map(|c| match c {
            Call::CountNonfinite { .. } => "scan".into(),
            Call::Axpby(_) => "copy".into(),
            Call::Gesvd(_) => "gesvd".into(),
            Call::GesvdGrouped(g) => format!("grouped({})", g.len()),
            Call::Fork { lanes } => format!("fork({lanes})"),
            Call::SvdUnit { lane, args } => format!("{}@{lane}", args.routine.routine()),
            Call::Join { lanes } => format!("join({lanes})"),
            Call::ReadToHost(n) => format!("flags({})", n / 4),
            Call::SvdDiagnostics { units } => format!("diagnostics({units})"),
            Call::SignFix(_) => "signfix".into(),
            c => format!("{c:?}"),
        })
        .collect()
}

fn units(calls: &[Call]) -> Vec<(usize, SvdUnitArgs)> {
    calls
        .iter()
        .filter_map(|c| if let Call::SvdUnit { lane, args } = c { Some((*lane, *args)) } else { None })
        .collect()
}

/// Each per-matrix routine call of group `c` addresses matrix `b` of the group, in workspace
/// slice `b % slices` of the group's own workspace, with its own convergence flag; a batched
/// routine's one call takes the whole packed group.
fn check_units_of_group(c: &GesvdCall, us: &[(usize, SvdUnitArgs)], slices: usize) {
    let g = &c.args;
    let sz = g.a.dtype.size();
    let inside = |a: Addr, bytes: usize| a >= c.work && a + bytes <= c.work + c.work_bytes;
    if us.len() == 1 && us[0].1.routine.is_batched_routine() {
        let u = us[0].1;
        assert_eq!((u.batch, u.a, u.s, u.stride_s), (g.batch, g.a, g.s, g.stride_s));
        assert!(inside(u.work, u.work_bytes) && inside(u.info, 4 * g.batch));
        return;
    }
    assert_eq!(us.len(), g.batch);
    let info0 = us[0].1.info;
    for (b, (_, u)) in us.iter().enumerate() {
        assert_eq!((u.m, u.n, u.batch), (g.m, g.n, 1));
        assert_eq!(u.a.addr, g.a.addr + b * g.a.stride * sz, "matrix {b}'s A");
        assert_eq!(u.s, g.s + b * g.stride_s * sz, "matrix {b}'s S");
        assert_eq!(u.u.addr, g.u.addr + b * g.u.stride * sz, "matrix {b}'s U");
        if u.routine == SvdAlgorithm::Qr {
            assert_eq!((u.v.addr, u.v.ld), (g.vt.addr + b * g.vt.stride * sz, g.vt.ld), "Xgesvd writes VT");
        } else {
            assert!(inside(u.v.addr, g.n * g.n * sz), "V scratch in the group's workspace");
        }
        assert_eq!(u.info, info0 + 4 * b, "one flag per matrix");
        assert!(inside(u.work, u.work_bytes) && inside(u.info, 4));
        assert_eq!(u.work, us[b % slices].1.work, "matrices b and b % {slices} share a slice");
        assert!(b >= slices || us[..b].iter().all(|(_, o)| o.work + o.work_bytes <= u.work), "distinct slices");
    }
}

#[test]
fn a_mixed_shape_svd_list_is_one_fork_join_over_the_lanes() {
    // The CUDA executor's 4 lanes: a CPU executor on 4 threads plans exactly what the GPU receives.
    with_threads(4, || {
        let (rec, ctx) = recorded();
        let mut rng = rng();
        // 40 x 13 (Qr, 3 matrices: 3 slices on lanes 0..2), 8 x 20 (gesvdjBatched, lane 3),
        // 50 x 9 (Qr, 1 matrix: back on lane 0).
        let shapes = [(40, 13, 3), (8, 20, 2), (50, 9, 1)];
        let ws: Vec<Vec<M>> = shapes.iter().map(|&(n, m, b)| (0..b).map(|_| randn(&mut rng, n, m)).collect()).collect();
        let mut wb: Vec<Buf<f64>> = ws.iter().map(|w| Buf::from_batch(w, Layout::RowMajor)).collect();
        let mut ub: Vec<Buf<f64>> =
            shapes.iter().map(|&(n, m, b)| Buf::poisoned(n, n.min(m), b, Layout::ColMajor)).collect();
        let mut sb: Vec<Buf<f64>> =
            shapes.iter().map(|&(n, m, b)| Buf::poisoned(n.min(m), 1, b, Layout::ColMajor)).collect();
        let mut vb: Vec<Buf<f64>> =
            shapes.iter().map(|&(n, m, b)| Buf::poisoned(n.min(m), m, b, Layout::RowMajor)).collect();
        let (wd, ud, sd, vd): (Vec<_>, Vec<_>, Vec<_>, Vec<_>) = (
            wb.iter_mut().map(|b| b.desc()).collect(),
            ub.iter_mut().map(|b| b.desc()).collect(),
            sb.iter_mut().map(|b| b.desc()).collect(),
            vb.iter_mut().map(|b| b.desc()).collect(),
        );
        let ps: Vec<SvdProblem> = (0..3)
            .map(|i| SvdProblem { w: &wd[i], out: SvdOut { u: Some(&ud[i]), s: &sd[i], vt: Some(&vd[i]) } })
            .collect();
        unsafe { ctx.svd_list_raw(&ps, DType::F64) }.unwrap();
        let calls = rec.take();
        let want: Vec<&str> = vec![
            "scan",
            "scan",
            "scan", // every problem's non-finite scan, before anything is written
            "copy",
            "copy",
            "copy", // each W staged into the workspace
            "grouped(3)",
            "fork(4)",
            "cusolverDnXgesvd@0",
            "cusolverDnXgesvd@1",
            "cusolverDnXgesvd@2",
            "gesvdjBatched@3",
            "cusolverDnXgesvd@0",
            "join(4)",
            "copy",
            "copy", // gesvdjBatched: thin U and VT out of its full U and V
            "flags(3)",
            "flags(2)",
            "flags(1)",
            "signfix",
            "copy",
            "copy",
            "copy", // problem 0: signs, then U, S, Vt out
            "signfix",
            "copy",
            "copy",
            "copy",
            "signfix",
            "copy",
            "copy",
            "copy",
        ];
        assert_eq!(names(&calls), want, "{calls:?}");
        let Some(Call::GesvdGrouped(groups)) = calls.iter().find(|c| matches!(c, Call::GesvdGrouped(_))) else {
            unreachable!()
        };
        let us = units(&calls);
        check_units_of_group(&groups[0], &us[0..3], 3);
        check_units_of_group(&groups[1], &us[3..4], 1);
        check_units_of_group(&groups[2], &us[4..5], 1);
        assert!(us.iter().all(|(_, u)| !u.diagnostics && u.host_values == 0), "diagnostics off by default");
        // The CPU ran that plan: every factorisation matches the f64 Jacobi reference.
        for (i, w) in ws.iter().enumerate() {
            for (b, wm) in w.iter().enumerate() {
                let (_, s_ref, _) = jacobi_svd(wm);
                let s = sb[i].get(b).d;
                let tol = 16.0 * (wm.r + wm.c) as f64 * u(DType::F64) * s_ref[0];
                assert!(
                    s.iter().zip(&s_ref).all(|(a, r)| (a - r).abs() <= tol),
                    "problem {i} matrix {b}: {s:?} {s_ref:?}"
                );
                let rec_w = ub[i].get(b).t().scale_rows(&s).t().mul(&vb[i].get(b));
                assert!(rec_w.sub(wm).fro() <= tol * (wm.c as f64).sqrt() * 4.0, "problem {i} matrix {b}: U S Vt != W");
            }
        }
    })
}

/// A packed f64 batch of `b` random `m x n` matrices (column-major) and room for its factors.
struct Group {
    a: Vec<f64>,
    s: Vec<f64>,
    u: Vec<f64>,
    vt: Vec<f64>,
    ws: Vec<M>,
}

/// The `rows x cols` column-major matrix at the start of `data` (leading dimension `rows`).
fn col_major(data: &[f64], rows: usize, cols: usize) -> M {
    M { r: cols, c: rows, d: data[..rows * cols].to_vec() }.t()
}

fn group(rng: &mut rand::rngs::StdRng, m: usize, n: usize, b: usize) -> Group {
    let ws: Vec<M> = (0..b).map(|_| randn(rng, m, n)).collect();
    let a = ws.iter().flat_map(|w| (0..n).flat_map(move |j| (0..m).map(move |i| w.at(i, j)))).collect();
    Group { a, s: vec![0.0; n * b], u: vec![0.0; m * n * b], vt: vec![0.0; n * n * b], ws }
}

/// The grouped SVD calls of `plan` (`(algorithm, m, n, batch)` per group) over the groups' buffers,
/// each with `needs[i]` bytes of its own 512-byte-aligned slice of the returned workspace (which
/// must outlive the calls).
fn grouped_calls(
    plan: &[(SvdAlgorithm, usize, usize, usize)],
    gs: &mut [Group],
    needs: &[usize],
) -> (Vec<u64>, Vec<GesvdCall>) {
    let mut work = vec![0u64; needs.iter().map(|n| n.div_ceil(8) + 64).sum()];
    let mut at = work.as_mut_ptr() as usize;
    let st = |v: &mut Vec<f64>, ld: usize, stride: usize| Strided {
        addr: v.as_mut_ptr() as usize,
        dtype: DType::F64,
        ld,
        stride,
    };
    let calls = plan
        .iter()
        .zip(gs.iter_mut())
        .zip(needs)
        .map(|((&(algorithm, m, n, batch), g), &need)| {
            let args = GesvdArgs {
                m,
                n,
                a: st(&mut g.a, m, m * n),
                s: g.s.as_mut_ptr() as usize,
                stride_s: n,
                u: st(&mut g.u, m, m * n),
                vt: st(&mut g.vt, n, n * n),
                batch,
                algorithm,
            };
            let c = GesvdCall { args, work: at, work_bytes: need };
            at += need.div_ceil(512) * 512;
            c
        })
        .collect();
    (work, calls)
}

/// Every matrix of every group factored exactly: S against the f64 Jacobi reference, U and V
/// orthonormal, U S V^T = W, each to a few multiples of the f64 unit roundoff times the size.
fn check_exact(plan: &[(SvdAlgorithm, usize, usize, usize)], gs: &[Group]) {
    for (gi, g) in gs.iter().enumerate() {
        let (_, m, n, _) = plan[gi];
        for (b, w) in g.ws.iter().enumerate() {
            let (_, s_ref, _) = jacobi_svd(w);
            let tol = 16.0 * (m + n) as f64 * u(DType::F64);
            let s = &g.s[b * n..(b + 1) * n];
            assert!(
                s.iter().zip(&s_ref).all(|(a, r)| (a - r).abs() <= tol * s_ref[0]),
                "group {gi} matrix {b}: {s:?} {s_ref:?}"
            );
            let um = col_major(&g.u[b * m * n..], m, n);
            let vt = col_major(&g.vt[b * n * n..], n, n);
            assert!(ortho_err_cols(&um) <= tol, "group {gi} matrix {b}: U not orthonormal");
            assert!(ortho_err_cols(&vt.t()) <= tol, "group {gi} matrix {b}: V not orthonormal");
            let rebuilt = um.t().scale_rows(s).t().mul(&vt);
            assert!(rebuilt.sub(w).fro() <= tol * s_ref[0] * (n as f64).sqrt(), "group {gi} matrix {b}: U S V^T != W");
        }
    }
}

#[test]
fn a_mixed_algorithm_grouped_batch_spreads_over_the_lanes_and_matches_the_reference() {
    // The CUDA executor's 4 lanes: a CPU executor on 4 threads plans exactly what the GPU receives.
    with_threads(4, || {
        let rec = Recording::new(CpuExecutor);
        let mut rng = rng();
        let plan = [
            (SvdAlgorithm::Qr, 30, 12, 2),
            (SvdAlgorithm::JacobiBatched, 10, 6, 3),
            (SvdAlgorithm::Polar, 20, 9, 1),
            (SvdAlgorithm::Jacobi, 15, 7, 2),
            (SvdAlgorithm::ApproxBatched, 12, 5, 2),
        ];
        let mut gs: Vec<Group> = plan.iter().map(|&(_, m, n, b)| group(&mut rng, m, n, b)).collect();
        let needs: Vec<usize> =
            plan.iter().map(|&(alg, m, n, b)| rec.gesvd_buffer_size(m, n, DType::F64, b, alg).unwrap()).collect();
        let (_work, calls) = grouped_calls(&plan, &mut gs, &needs);
        unsafe { rec.gesvd_grouped(&calls) }.unwrap();
        let got = rec.take();
        // Lanes round-robin: Qr's 2 slices on lanes 0, 1; gesvdjBatched on 2; gesvdp on 3; gesvdj's
        // 2 slices on 0, 1; gesvda on 2. Then the copies after the join: gesvdjBatched's thin U and
        // VT, and VT = V^T for every routine but Xgesvd; one flag read-back per group.
        let want: Vec<&str> = vec![
            "grouped(5)",
            "fork(4)",
            "cusolverDnXgesvd@0",
            "cusolverDnXgesvd@1",
            "gesvdjBatched@2",
            "cusolverDnXgesvdp@3",
            "gesvdj@0",
            "gesvdj@1",
            "gesvdaStridedBatched@2",
            "join(4)",
            "copy",
            "copy",
            "copy",
            "copy",
            "copy",
            "flags(2)",
            "flags(3)",
            "flags(1)",
            "flags(2)",
            "flags(2)",
        ];
        assert_eq!(names(&got), want, "{got:?}");
        let us = units(&got);
        check_units_of_group(&calls[0], &us[0..2], 2);
        check_units_of_group(&calls[1], &us[2..3], 1);
        check_units_of_group(&calls[2], &us[3..4], 1);
        check_units_of_group(&calls[3], &us[4..6], 2);
        check_units_of_group(&calls[4], &us[6..7], 1);
        // gesvdp always gets host memory for its h_err_sigma; gesvda's residuals only on request.
        assert!(us[3].1.host_values != 0 && us[6].1.host_values == 0);
        // Every group factored exactly (the CPU computes the exact SVD whatever the routine).
        check_exact(&plan, &gs);
    })
}

#[test]
fn a_batched_decomposition_runs_its_matrices_on_three_lanes() {
    // The CUDA executor's 4 lanes: a CPU executor on 4 threads plans exactly what the GPU receives.
    with_threads(4, || {
        let (rec, ctx) = recorded();
        let mut rng = rng();
        let (n, m, b, k) = (40, 36, 3, 10);
        let ws: Vec<M> = (0..b).map(|_| randn(&mut rng, n, m)).collect();
        let mut w = Buf::<f32>::from_batch(&ws, Layout::RowMajor);
        let mut uh = Buf::<f32>::poisoned(n, k, b, Layout::ColMajor);
        let mut sh = Buf::<f32>::poisoned(k, 1, b, Layout::ColMajor);
        let mut vh = Buf::<f32>::poisoned(k, m, b, Layout::RowMajor);
        let (uhd, shd, vhd) = (uh.desc(), sh.desc(), vh.desc());
        let parts = Parts { u_high: Some(&uhd), s_high: Some(&shd), v_high: Some(&vhd), ..Default::default() };
        unsafe { ctx.decompose_raw(&w.desc(), k, &parts, DType::F32) }.unwrap();
        let calls = rec.take();
        let want: Vec<&str> = vec![
            "scan",
            "copy",
            "gesvd",
            "fork(3)",
            "cusolverDnXgesvd@0",
            "cusolverDnXgesvd@1",
            "cusolverDnXgesvd@2",
            "join(3)",
            "flags(3)",
            "signfix",
            "copy",
            "copy",
            "copy",
        ];
        assert_eq!(names(&calls), want, "{calls:?}");
        let Some(Call::Gesvd(g)) = calls.iter().find(|c| matches!(c, Call::Gesvd(_))) else { unreachable!() };
        let us = units(&calls);
        let work = us[0].1.work;
        let total = us.iter().map(|(_, u)| u.info + 4).max().unwrap() - work;
        check_units_of_group(&GesvdCall { args: *g, work, work_bytes: total }, &us, 3);
        for (bi, wm) in ws.iter().enumerate() {
            let (_, s_ref, _) = jacobi_svd(wm);
            let s = sh.get(bi).d;
            let tol = 16.0 * (n + m) as f64 * u(DType::F32) * s_ref[0];
            assert!(s.iter().zip(&s_ref[..k]).all(|(a, r)| (a - r).abs() <= tol), "matrix {bi}: {s:?}");
        }
    })
}

#[test]
fn diagnostics_are_read_back_only_when_asked_for() {
    let (rec, ctx) = recorded();
    let mut rng = rng();
    let ws: Vec<M> = (0..2).map(|_| randn(&mut rng, 12, 7)).collect();
    let run = |alg: SvdAlgorithm| {
        ctx.set_svd_algorithm(alg);
        let mut w = Buf::<f64>::from_batch(&ws, Layout::ColMajor);
        let mut s = Buf::<f64>::poisoned(7, 1, 2, Layout::ColMajor);
        let (wd, sd) = (w.desc(), s.desc());
        unsafe { ctx.svd_raw(&wd, &SvdOut { u: None, s: &sd, vt: None }, DType::F64) }.unwrap();
        rec.take()
    };
    let read_backs = |calls: &[Call]| calls.iter().filter(|c| matches!(c, Call::SvdDiagnostics { .. })).count();
    // Off by default, on the batched-SVD path: no diagnostics read back, no call measures any.
    assert!(!ctx.svd_diagnostics());
    for alg in [SvdAlgorithm::Jacobi, SvdAlgorithm::ApproxBatched, SvdAlgorithm::Polar, SvdAlgorithm::Auto] {
        let calls = run(alg);
        assert_eq!(read_backs(&calls), 0, "{alg:?}: {calls:?}");
        assert!(units(&calls).iter().all(|(_, u)| !u.diagnostics), "{alg:?}");
    }
    // Nor on the projection path (GEMMs only).
    let mut basis = Buf::<f32>::from(&orthonormal(&mut rng, 12, 3), Layout::ColMajor);
    let mut x = Buf::<f32>::from(&randn(&mut rng, 12, 5), Layout::ColMajor);
    let (bd, xd) = (basis.desc(), x.desc());
    let bases = osft::ops::project::Bases { u: Some(&bd), v: None };
    unsafe { ctx.project_raw(osft::Side::Left, &bases, &xd, None) }.unwrap();
    assert!(rec.take().iter().all(|c| matches!(c, Call::Gemm(_) | Call::Alloc(_))));
    // On: one read-back after the flags, every call measuring.
    ctx.set_svd_diagnostics(true);
    for alg in [SvdAlgorithm::Jacobi, SvdAlgorithm::ApproxBatched, SvdAlgorithm::Polar] {
        let calls = run(alg);
        let n = names(&calls);
        let flags = n.iter().position(|c| c.starts_with("flags")).unwrap();
        assert_eq!(n[flags + 1], format!("diagnostics({})", units(&calls).len()), "{alg:?}: {n:?}");
        assert!(units(&calls)
            .iter()
            .all(|(_, u)| u.diagnostics && (alg == SvdAlgorithm::Jacobi || u.host_values != 0)));
    }
    // The CPU measures nothing: its report stays empty.
    assert_eq!(ctx.last_svd_report(), None);
}

/// The CPU executor plans as many lanes as the rayon pool it runs in has threads (a batch of
/// per-matrix SVDs keeps every core busy), sizes each group's workspace for them, and still
/// factors every matrix exactly; a workspace sized under another pool is refused, not overrun.
#[test]
fn a_cpu_executor_on_more_threads_schedules_that_many_lanes_with_exact_results() {
    let mut rng = rng();
    // Qr: 10 matrices on 8 slices (lanes 0..7, then 0, 1); gesvdj: 5 slices (lanes 0..4 after
    // the 8 taken); gesvdjBatched: one call on lane 5.
    let plan =
        [(SvdAlgorithm::Qr, 30, 12, 10), (SvdAlgorithm::Jacobi, 15, 7, 5), (SvdAlgorithm::JacobiBatched, 10, 6, 3)];
    let mut gs: Vec<Group> = plan.iter().map(|&(_, m, n, b)| group(&mut rng, m, n, b)).collect();
    let size_on = |threads: usize| {
        with_threads(threads, || {
            plan.iter()
                .map(|&(alg, m, n, b)| CpuExecutor.gesvd_buffer_size(m, n, DType::F64, b, alg).unwrap())
                .collect()
        })
    };
    let (needs4, needs8): (Vec<usize>, Vec<usize>) = (size_on(4), size_on(8));
    // More lanes, more slices: the per-matrix groups need more workspace on 8 threads; the
    // batched routine's one call does not change (its matrices share min(batch, threads) stacks).
    assert!(needs8[0] > needs4[0] && needs8[1] > needs4[1], "{needs4:?} {needs8:?}");
    assert_eq!(needs8[2], needs4[2], "gesvdjBatched's 3 matrices take 3 threads on either pool");
    let (_work, calls) = grouped_calls(&plan, &mut gs, &needs8);
    let rec = Recording::new(CpuExecutor);
    with_threads(8, || {
        assert_eq!(rec.svd_max_lanes(), 8, "the recording reports its CPU executor's lanes");
        // The 4-thread sizes are too small for the 8-lane plan: refused before anything runs.
        let short: Vec<GesvdCall> =
            calls.iter().zip(&needs4).map(|(c, &n)| GesvdCall { work_bytes: n, ..*c }).collect();
        // SAFETY: refused by the workspace check before anything is read or written.
        let e = unsafe { rec.gesvd_grouped(&short) }.unwrap_err();
        assert!(matches!(e, osft::Error::WorkspaceTooSmall { .. }), "{e}");
        assert!(units(&rec.take()).is_empty(), "nothing ran");
        // SAFETY: every call's buffers and workspace (sized on this pool) are alive host memory.
        unsafe { rec.gesvd_grouped(&calls) }.unwrap();
    });
    let got = rec.take();
    let want: Vec<String> = ["grouped(3)", "fork(8)"]
        .into_iter()
        .map(String::from)
        .chain((0..10).map(|b| format!("cusolverDnXgesvd@{}", b % 8)))
        .chain((0..5).map(|b| format!("gesvdj@{b}")))
        .chain(["gesvdjBatched@5", "join(8)"].map(String::from))
        .collect();
    assert_eq!(names(&got)[..want.len()], want[..], "{got:?}");
    let us = units(&got);
    check_units_of_group(&calls[0], &us[0..10], 8);
    check_units_of_group(&calls[1], &us[10..15], 5);
    check_units_of_group(&calls[2], &us[15..16], 1);
    check_exact(&plan, &gs);
}

/// On one thread the same decomposition is one lane running its matrices in order, with the
/// same results; a schedule over more lanes than the executor takes is refused before anything
/// runs; the CPU executor's lane count, and a batched routine's SVDs at once, stop at its cap
/// however many threads its pool has.
#[test]
fn one_thread_is_one_lane_and_more_lanes_than_the_executor_takes_are_refused() {
    let mut rng = rng();
    let (n, m, b, k) = (40, 36, 3, 10);
    let ws: Vec<M> = (0..b).map(|_| randn(&mut rng, n, m)).collect();
    let (rec, ctx) = recorded();
    let mut sh = Buf::<f64>::poisoned(k, 1, b, Layout::ColMajor);
    with_threads(1, || {
        let mut w = Buf::<f64>::from_batch(&ws, Layout::RowMajor);
        let mut uh = Buf::<f64>::poisoned(n, k, b, Layout::ColMajor);
        let mut vh = Buf::<f64>::poisoned(k, m, b, Layout::RowMajor);
        let (uhd, shd, vhd) = (uh.desc(), sh.desc(), vh.desc());
        let parts = Parts { u_high: Some(&uhd), s_high: Some(&shd), v_high: Some(&vhd), ..Default::default() };
        unsafe { ctx.decompose_raw(&w.desc(), k, &parts, DType::F64) }.unwrap();
    });
    let calls = rec.take();
    let n_calls = names(&calls);
    let fork = n_calls.iter().position(|c| c.starts_with("fork")).unwrap();
    assert_eq!(
        n_calls[fork..fork + 5],
        ["fork(1)", "cusolverDnXgesvd@0", "cusolverDnXgesvd@0", "cusolverDnXgesvd@0", "join(1)"],
        "{calls:?}"
    );
    for (bi, wm) in ws.iter().enumerate() {
        let (_, s_ref, _) = jacobi_svd(wm);
        let tol = 16.0 * (n + m) as f64 * u(DType::F64) * s_ref[0];
        let s = sh.get(bi).d;
        assert!(s.iter().zip(&s_ref[..k]).all(|(a, r)| (a - r).abs() <= tol), "matrix {bi}: {s:?}");
    }
    // The same calls spread over 2 lanes: refused on one thread, before any call runs.
    let us = units(&calls);
    let two = LaneSchedule { lanes: 2, units: us.iter().enumerate().map(|(i, (_, u))| (i % 2, *u)).collect() };
    // SAFETY: refused by the lane check before any call touches memory.
    let e = with_threads(1, || unsafe { CpuExecutor.svd_lanes(&two) }).unwrap_err();
    assert_eq!(e.status(), osft::Status::Precondition, "{e}");
    assert!(e.to_string().contains("takes 1 to 1 lanes, got 2"), "{e}");
    // A call assigned beyond the schedule's own lanes is refused too.
    let beyond = LaneSchedule { lanes: 1, units: vec![(1, us[0].1)] };
    // SAFETY: as above.
    let e = with_threads(4, || unsafe { CpuExecutor.svd_lanes(&beyond) }).unwrap_err();
    assert!(e.to_string().contains("beyond the lanes"), "{e}");
    // The cap: a pool larger than it plans CPU_SVD_MAX_LANES lanes.
    use osft::exec::cpu::CPU_SVD_MAX_LANES;
    assert_eq!(with_threads(CPU_SVD_MAX_LANES + 3, || CpuExecutor.svd_max_lanes()), CPU_SVD_MAX_LANES);
    assert_eq!(with_threads(3, || CpuExecutor.svd_max_lanes()), 3);
    // A batched routine's call runs at most that many of its SVDs at once (one faer stack each
    // in its workspace), so its workspace stops growing at the cap too.
    let batched = |threads| {
        with_threads(threads, || {
            CpuExecutor.gesvd_buffer_size(20, 20, DType::F64, 100, SvdAlgorithm::JacobiBatched).unwrap()
        })
    };
    assert_eq!(batched(CPU_SVD_MAX_LANES + 3), batched(CPU_SVD_MAX_LANES));
    assert!(batched(CPU_SVD_MAX_LANES) > batched(CPU_SVD_MAX_LANES / 2));
}
