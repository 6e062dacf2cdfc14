//! SVD cases: the default routine over shapes, batches, layouts and dtypes; every explicit
//! algorithm against the f64 construction; the algorithms' preconditions; and `svd_list` on the
//! grouped path against the CPU executor.

use std::time::Instant;

use osft::exec::{GesvdrArgs, Strided, GESVDR_ITERATIONS};
use osft::ops::svd::{gesvdr_oversampling, SvdOut, SvdProblem};
use osft::{Context, DType, Device, Element, MatDesc, Status, SvdAlgorithm};
use osft_test_support::{ortho_err_cols, randn, Buf, Layout, M};

use crate::device_buffer::Dev;
use crate::reference::{orthonormal, u_of};
use crate::report::Report;

#[allow(clippy::too_many_arguments)] // one case of the sweep: shape, batch, layout, compute type
pub(crate) fn svd_case<TW: Element, TO: Element>(
    gpu: &Context,
    rng: &mut rand::rngs::StdRng,
    rep: &mut Report,
    n: usize,
    m: usize,
    batch: usize,
    lw: Layout,
    compute: DType,
) {
    let r = n.min(m);
    let ws: Vec<M> = (0..batch).map(|_| randn(rng, n, m).round::<TW>()).collect();
    let name = format!(
        "svd {}->{} compute {} {n}x{m} batch={batch} {lw:?}",
        TW::DTYPE.name(),
        TO::DTYPE.name(),
        compute.name()
    );
    let dw = Dev::up(gpu, Buf::<TW>::from_batch(&ws, lw));
    let (du, ds, dv) = (
        Dev::up(gpu, Buf::<TO>::poisoned(n, r, batch, Layout::RowMajor)),
        Dev::up(gpu, Buf::<TO>::poisoned(r, 1, batch, Layout::ColMajor)),
        Dev::up(gpu, Buf::<TO>::poisoned(r, m, batch, Layout::PaddedCol(1))),
    );
    let (ud, sd, vd) = (du.desc(), ds.desc(), dv.desc());
    let t = Instant::now();
    if let Err(e) = unsafe { gpu.svd_raw(&dw.desc(), &SvdOut { u: Some(&ud), s: &sd, vt: Some(&vd) }, compute) } {
        return rep.case(&name, false, format!("error {e}"));
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let (hu, hs, hv) = (du.down(gpu), ds.down(gpu), dv.down(gpu));
    let tol = 10.0 * n.max(m) as f64 * u_of(compute) + 4.0 * (r as f64).sqrt() * u_of(TO::DTYPE);
    let mut worst = 0.0f64;
    let mut ok = hu.padding_untouched() && hs.padding_untouched() && hv.padding_untouched();
    for (b, w) in ws.iter().enumerate() {
        let (u, s, vt) = (hu.get(b), hs.get(b).d, hv.get(b));
        ok &= s.windows(2).all(|p| p[0] >= p[1]) && s.iter().all(|x| *x >= 0.0);
        let rec = u.mul(&vt.scale_rows(&s)).sub(w).fro() / w.fro();
        worst = worst.max(rec).max(ortho_err_cols(&u)).max(ortho_err_cols(&vt.t()));
        for j in 0..r {
            let col: Vec<f64> = (0..n).map(|i| u.at(i, j)).collect();
            let maxabs = col.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            ok &= col.iter().fold(f64::MIN, |a, v| a.max(*v)) >= maxabs * (1.0 - 4.0 * u_of(TO::DTYPE));
        }
    }
    rep.case(&name, ok && worst <= tol, format!("certificate {worst:.2e} (tol {tol:.1e}), {ms:.2} ms"));
}

/// One explicit SVD algorithm on the GPU against the f64 certificate and the singular values the
/// matrix was built with. `W = Q1 diag(s) Q2^T` with `s` in `[1, 10]` (condition 10), so
/// the approximate `gesvdaStridedBatched` is held to a tolerance that reflects its Gram-matrix
/// error (`eps * cond^2`), the exact routines to the usual backward-error bound.
#[allow(clippy::too_many_arguments)]
pub(crate) fn algorithm_case(
    gpu: &Context,
    rng: &mut rand::rngs::StdRng,
    rep: &mut Report,
    alg: SvdAlgorithm,
    n: usize,
    m: usize,
    batch: usize,
    compute: DType,
) {
    let r = n.min(m);
    let s_true: Vec<f64> = (0..r).map(|i| 10.0 - 9.0 * i as f64 / (r.max(2) - 1) as f64).collect();
    let ws: Vec<M> =
        (0..batch).map(|_| orthonormal(rng, n, r).mul(&orthonormal(rng, m, r).t().scale_rows(&s_true))).collect();
    let name = format!("svd algorithm {alg:?} {} {n}x{m} batch={batch}", compute.name());
    gpu.set_svd_algorithm(alg);
    let dw = Dev::up(gpu, Buf::<f64>::from_batch(&ws, Layout::RowMajor));
    macro_rules! outs {
        ($t:ty) => {{
            let (du, ds, dv) = (
                Dev::up(gpu, Buf::<$t>::poisoned(n, r, batch, Layout::ColMajor)),
                Dev::up(gpu, Buf::<$t>::poisoned(r, 1, batch, Layout::ColMajor)),
                Dev::up(gpu, Buf::<$t>::poisoned(r, m, batch, Layout::RowMajor)),
            );
            let (ud, sd, vd) = (du.desc(), ds.desc(), dv.desc());
            let t = Instant::now();
            let res = unsafe { gpu.svd_raw(&dw.desc(), &SvdOut { u: Some(&ud), s: &sd, vt: Some(&vd) }, compute) };
            let ms = t.elapsed().as_secs_f64() * 1e3;
            res.map(|_| {
                let (hu, hs, hv) = (du.down(gpu), ds.down(gpu), dv.down(gpu));
                ((0..batch).map(|b| (hu.get(b), hs.get(b).d, hv.get(b))).collect::<Vec<_>>(), ms)
            })
        }};
    }
    let got = if compute == DType::F64 { outs!(f64) } else { outs!(f32) };
    gpu.set_svd_algorithm(SvdAlgorithm::Auto);
    let (got, ms) = match got {
        Ok(g) => g,
        Err(e) => return rep.case(&name, false, format!("error {e}")),
    };
    let eps = u_of(compute);
    // gesvda's Gram-matrix error grows with cond^2 = 100.
    let tol = 10.0 * n.max(m) as f64 * eps * if alg == SvdAlgorithm::ApproxBatched { 100.0 } else { 1.0 };
    let mut worst = 0.0f64;
    let mut ok = true;
    for (b, (u, s, vt)) in got.iter().enumerate() {
        ok &= s.windows(2).all(|p| p[0] >= p[1] * (1.0 - tol)) && s.iter().all(|x| *x >= 0.0);
        let rec = u.mul(&vt.scale_rows(s)).sub(&ws[b]).fro() / ws[b].fro();
        worst = worst.max(rec).max(ortho_err_cols(u)).max(ortho_err_cols(&vt.t()));
        for (a, t) in s.iter().zip(&s_true) {
            worst = worst.max((a - t).abs() / 10.0);
        }
    }
    let report = gpu.last_svd_report();
    rep.case(
        &name,
        ok && worst <= tol,
        format!("certificate and S vs f64 {worst:.2e} (tol {tol:.1e}), {ms:.2} ms, report {report:?}"),
    );
}

/// Preconditions refused on the GPU exactly as on the CPU, before anything runs.
pub(crate) fn algorithm_refusals_case(gpu: &Context, rep: &mut Report) {
    let w = Dev::up(gpu, Buf::<f32>::from(&M::zeros(40, 40).add(&M::eye(40)), Layout::RowMajor));
    let mut ok = true;
    let mut detail = String::new();
    for (alg, want) in
        [(SvdAlgorithm::JacobiBatched, Status::Precondition), (SvdAlgorithm::Randomized, Status::InvalidArgument)]
    {
        gpu.set_svd_algorithm(alg);
        let got = gpu.svd_workspace_size(&w.desc(), DType::F32).map_err(|e| e.status());
        ok &= got == Err(want);
        detail += &format!("{alg:?}: {got:?}; ");
    }
    gpu.set_svd_algorithm(SvdAlgorithm::Auto);
    rep.case("svd algorithm preconditions on the GPU", ok, detail);
}

/// `svd_list` over three shapes on the GPU against the CPU executor: one wave (the context's own
/// workspace) or, with `waves`, a caller workspace of exactly `svd_list_workspace_size`.
pub(crate) fn svd_list_case<T: Element>(
    gpu: &Context,
    cpu: &Context,
    rng: &mut rand::rngs::StdRng,
    rep: &mut Report,
    alg: SvdAlgorithm,
    waves: bool,
) {
    let shapes = [(70usize, 40usize, 2usize), (12, 20, 3), (24, 16, 1)];
    let name = format!(
        "svd_list {} {alg:?} {shapes:?} {}",
        T::DTYPE.name(),
        if waves { "caller workspace of the queried size (waves)" } else { "own workspace (one wave)" }
    );
    let ws: Vec<Vec<M>> =
        shapes.iter().map(|&(n, m, b)| (0..b).map(|_| randn(rng, n, m).round::<T>()).collect()).collect();
    type Factors<T> = Vec<(Buf<T>, Buf<T>, Buf<T>)>;
    let mut results: Vec<Factors<T>> = vec![];
    let mut ms = 0.0;
    for ctx in [gpu, cpu] {
        ctx.set_svd_algorithm(alg);
        let on_gpu = ctx.executor().device() != Device::Host;
        let mut bufs = vec![];
        for (w, &(n, m, b)) in ws.iter().zip(&shapes) {
            let r = n.min(m);
            let hosts = (
                Buf::<T>::from_batch(w, Layout::RowMajor),
                Buf::<T>::poisoned(n, r, b, Layout::ColMajor),
                Buf::<T>::poisoned(r, 1, b, Layout::ColMajor),
                Buf::<T>::poisoned(r, m, b, Layout::PaddedCol(1)),
            );
            bufs.push((Dev::up(ctx, hosts.0), Dev::up(ctx, hosts.1), Dev::up(ctx, hosts.2), Dev::up(ctx, hosts.3)));
        }
        let descs: Vec<(MatDesc, MatDesc, MatDesc, MatDesc)> =
            bufs.iter().map(|(w, u, s, v)| (w.desc(), u.desc(), s.desc(), v.desc())).collect();
        let problems: Vec<SvdProblem> =
            descs.iter().map(|(w, u, s, v)| SvdProblem { w, out: SvdOut { u: Some(u), s, vt: Some(v) } }).collect();
        let mut space = None;
        if waves {
            let need = match ctx.svd_list_workspace_size(&descs.iter().map(|d| &d.0).collect::<Vec<_>>(), T::DTYPE) {
                Ok(x) => x,
                Err(e) => return rep.case(&name, false, format!("workspace query: {e}")),
            };
            let buf = ctx.executor().alloc(need).expect("workspace alloc");
            unsafe { ctx.set_workspace(buf.addr, need) }.expect("set_workspace");
            space = Some(buf);
        }
        let t = Instant::now();
        let res = unsafe { ctx.svd_list_raw(&problems, T::DTYPE) };
        if on_gpu {
            ms = t.elapsed().as_secs_f64() * 1e3;
        }
        ctx.release_workspace();
        drop(space);
        ctx.set_svd_algorithm(SvdAlgorithm::Auto);
        if let Err(e) = res {
            return rep.case(&name, false, format!("error on {}: {e}", ctx.executor().name()));
        }
        results.push(bufs.iter().map(|(_, u, s, v)| (u.down(ctx), s.down(ctx), v.down(ctx))).collect());
    }
    let (mut ok, mut worst_cert, mut worst_cpu, mut tol_max) = (true, 0.0f64, 0.0f64, 0.0f64);
    for (i, &(n, m, _)) in shapes.iter().enumerate() {
        let ((gu, gs, gv), (cu, cs, cv)) = (&results[0][i], &results[1][i]);
        ok &= gu.padding_untouched() && gs.padding_untouched() && gv.padding_untouched();
        let tol = 10.0 * n.max(m) as f64 * u_of(T::DTYPE) + 4.0 * (n.min(m) as f64).sqrt() * u_of(T::DTYPE);
        tol_max = tol_max.max(tol);
        for (k, wk) in ws[i].iter().enumerate() {
            let (u, s, vt) = (gu.get(k), gs.get(k).d, gv.get(k));
            ok &= s.windows(2).all(|p| p[0] >= p[1]) && s.iter().all(|x| *x >= 0.0);
            let cert = (u.mul(&vt.scale_rows(&s)).sub(wk).fro() / wk.fro())
                .max(ortho_err_cols(&u))
                .max(ortho_err_cols(&vt.t()));
            ok &= cert <= tol;
            worst_cert = worst_cert.max(cert / tol);
            // The sign convention makes the factors comparable entrywise (well-separated random
            // spectra; vectors allowed 100x the certificate tolerance for their gap sensitivity).
            let ds = s.iter().zip(&cs.get(k).d).map(|(a, c)| (a - c).abs()).fold(0.0, f64::max) / s[0].max(1e-30);
            let dv = u.max_abs_diff(&cu.get(k)).max(vt.max_abs_diff(&cv.get(k)));
            ok &= ds <= tol && dv <= 100.0 * tol;
            worst_cpu = worst_cpu.max((ds / tol).max(dv / (100.0 * tol)));
        }
    }
    rep.case(&name, ok, format!("certificate {worst_cert:.2} x tol, vs cpu {worst_cpu:.2} x tol (tol up to {tol_max:.1e}), padding untouched, {ms:.2} ms"));
}

/// `cusolverDnXgesvdr` called directly, its outputs laid out as osft lays them out (`U`:
/// `m x n` per matrix, `S`: `n`, `VT`: `k x n`), each operand followed by a guard band of a
/// marker value: no routine may write past its operand (in particular past the last `U`, where an
/// `m x m` `Urand` would spill `m (m - n)` values). Also the top-`k` singular values against the
/// construction, and the orthonormality of `U`'s and `V`'s first `k` vectors. The detail records
/// how many of `U`'s columns and `S`'s entries beyond `k` the routine wrote.
pub(crate) fn gesvdr_bounds_case(gpu: &Context, rng: &mut rand::rngs::StdRng, rep: &mut Report, m: usize, n: usize) {
    let (k, batch) = (8usize, 2usize);
    let p = gesvdr_oversampling(n, k);
    let name = format!("gesvdr bounds {m}x{n} k={k} p={p} batch={batch}");
    let marker = f32::from_bits(0x7fc0_5a5a); // a NaN no routine produces
    let guard = m * (m - n) + 64;
    let s_true: Vec<f64> = (0..n).map(|i| 0.5f64.powi(i as i32)).collect();
    // Column-major A of each matrix: W = Q1 diag(s) Q2^T.
    let mut a = vec![];
    for _ in 0..batch {
        let w = orthonormal(rng, m, n).mul(&orthonormal(rng, n, n).t().scale_rows(&s_true));
        a.extend((0..n).flat_map(|j| (0..m).map(move |i| (j, i))).map(|(j, i)| w.at(i, j) as f32));
    }
    let exec = gpu.executor();
    // Each operand as one column of its length, mirrored in the context's memory.
    let dev = |data: Vec<f32>| {
        let desc = MatDesc::col_major(data.as_ptr() as usize, DType::F32, data.len(), 1);
        Dev::up(gpu, Buf { data, desc })
    };
    let (lu, ls, lv) = (m * n * batch, n * batch, k * n * batch);
    let da = dev(a);
    let du = dev(vec![marker; lu + guard]);
    let ds = dev(vec![marker; ls + guard]);
    let dv = dev(vec![marker; lv + guard]);
    let work_bytes = match exec.gesvdr_buffer_size(m, n, k, p, GESVDR_ITERATIONS, DType::F32, batch) {
        Ok(b) => b,
        Err(e) => return rep.case(&name, false, format!("workspace query: {e}")),
    };
    let work = exec.alloc(work_bytes.max(1)).expect("device alloc");
    let st = |addr, ld, stride| Strided { addr, dtype: DType::F32, ld, stride };
    let args = GesvdrArgs {
        m,
        n,
        k,
        p,
        niters: GESVDR_ITERATIONS,
        a: st(da.buf.addr, m, m * n),
        s: ds.buf.addr,
        stride_s: n,
        u: st(du.buf.addr, m, m * n),
        vt: st(dv.buf.addr, k, k * n),
        batch,
    };
    // SAFETY: every operand is a live allocation of the sizes the arguments describe.
    if let Err(e) = unsafe { exec.gesvdr_strided_batched(&args, work.addr, work_bytes) } {
        return rep.case(&name, false, format!("error {e}"));
    }
    let (hu, hs, hv) = (du.down(gpu).data, ds.down(gpu).data, dv.down(gpu).data);
    let untouched = |v: &[f32]| v.iter().all(|x| x.to_bits() == marker.to_bits());
    let guards_ok = untouched(&hu[lu..]) && untouched(&hs[ls..]) && untouched(&hv[lv..]);
    let tol = 1e3 * u_of(DType::F32);
    let mut worst = 0.0f64;
    for b in 0..batch {
        let u = M { r: m, c: k, d: (0..m * k).map(|x| hu[b * m * n + (x % k) * m + x / k] as f64).collect() };
        let vt = M { r: k, c: n, d: (0..k * n).map(|x| hv[b * k * n + (x % n) * k + x / n] as f64).collect() };
        let s_err = (0..k).map(|i| (hs[b * n + i] as f64 - s_true[i]).abs()).fold(0.0, f64::max);
        worst = worst.max(s_err).max(ortho_err_cols(&u)).max(ortho_err_cols(&vt.t()));
    }
    let u_cols = (k..n).filter(|j| !untouched(&hu[j * m..(j + 1) * m])).count();
    let s_extra = (k..n).filter(|i| !untouched(&hs[*i..i + 1])).count();
    rep.case(
        &name,
        guards_ok && worst <= tol,
        format!(
            "guard bands {}, top-k error {worst:.2e} (tol {tol:.1e}); U columns written beyond k: {u_cols} of {}, \
             S entries beyond k: {s_extra}",
            if guards_ok { "untouched" } else { "OVERWRITTEN" },
            n - k
        ),
    );
}
