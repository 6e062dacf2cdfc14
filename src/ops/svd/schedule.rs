//! The SVD schedule: how a strided batch, a list of shapes (groups) or a randomized top-`k` SVD
//! becomes cuSOLVER-shaped routine calls on lanes, for every executor.
//!
//! Planned here, once: each group's workspace layout (over the routine's own workspace size,
//! [`Executor::svd_unit_workspace`]), the routine calls and the lane each runs on, the copies
//! after the join (thin `U` of `gesvdjBatched`, `VT = V^T`), the read-back of the convergence
//! flags and, only when asked for, of the routines' diagnostics. An executor runs the calls with
//! one primitive, [`Executor::svd_lanes`] (the CUDA executor: a fork onto its stream pool, the
//! cuSOLVER calls, a join; the CPU executor: one thread per lane), so the trace executor records
//! exactly what the GPU receives and the CPU runs the same plan.
//!
//! **Lanes.** Groups take the lanes round-robin: a batched routine (`gesvdjBatched`,
//! `gesvdaStridedBatched`) is one call on the next lane; a per-matrix routine (`Xgesvd`, `gesvdj`,
//! `Xgesvdp`, `Xgesvdr`) has `min(batch, L)` workspace slices, matrix `b` in slice `b % slices`
//! on the lane of that slice, so a list of single matrices spreads over every lane and matrices
//! that share a slice share a lane (which runs them in order). `L` is the executor's
//! [`Executor::svd_max_lanes`] (CUDA: its 4 streams; CPU: its threads), so a group's workspace
//! is sized for the executor that runs it.
//!
//! **Layout** of one group, each region 256-byte aligned:
//!
//! - `gesvdjBatched`: `[work | U full m x m x batch | V full n x n x batch | info]`
//! - `gesvdaStridedBatched`: `[work | V n x n x batch | info]`
//! - per-matrix routines: `[slices x work | V n x n x batch (not Xgesvd) | info]`

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::exec::{
    check_gesvd_calls, check_gesvdr_problem, in_group, Addr, AxpbyArgs, Executor, GesvdCall, GesvdrArgs, LaneSchedule,
    Strided, Strided2d, SvdAlgorithm, SvdReport, SvdRunOptions, SvdUnitArgs, SvdUnitShape, TopK,
};

fn align(x: usize) -> usize {
    x.div_ceil(256) * 256
}

/// Workspace layout of one group (offsets from the group's workspace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLayout {
    /// The routine (resolved).
    pub routine: SvdAlgorithm,
    /// Bytes of one routine call's workspace slice, and how many slices (1 for a batched routine).
    pub slice: usize,
    pub slices: usize,
    /// Full `U` (`gesvdjBatched`) and `V` scratch (every routine but `Xgesvd`, which writes `VT`).
    pub u_full: Option<usize>,
    pub v: Option<usize>,
    /// The `batch` convergence flags (`i32`).
    pub info: usize,
    pub total: usize,
}

/// The layout of a group of `batch` `m x n` matrices (`m >= n`) run by `routine` (resolved).
pub fn group_layout(
    exec: &(impl Executor + ?Sized),
    routine: SvdAlgorithm,
    m: usize,
    n: usize,
    dtype: DType,
    batch: usize,
    top: Option<TopK>,
) -> Result<GroupLayout> {
    let batched = routine.is_batched_routine();
    let shape = SvdUnitShape { routine, m, n, dtype, batch: if batched { batch } else { 1 }, top };
    let unit = exec.svd_unit_workspace(&shape)?;
    let overflow = || Error::overflow("workspace", format!("{} workspace for {batch} x {m} x {n}", routine.routine()));
    let bytes = |count: &[usize]| -> Result<usize> {
        count.iter().try_fold(dtype.size(), |a, b| a.checked_mul(*b)).map(align).ok_or_else(overflow)
    };
    let slices = if batched { 1 } else { batch.clamp(1, exec.svd_max_lanes().max(1)) };
    let slice = align(unit);
    let mut end = slice.checked_mul(slices).ok_or_else(overflow)?;
    let mut region = |b: usize| -> Result<usize> {
        let at = end;
        end = end.checked_add(b).ok_or_else(overflow)?;
        Ok(at)
    };
    let u_full = if routine == SvdAlgorithm::JacobiBatched { Some(region(bytes(&[m, m, batch])?)?) } else { None };
    let v = if routine != SvdAlgorithm::Qr { Some(region(bytes(&[n, n, batch])?)?) } else { None };
    let info = region(align(batch.checked_mul(4).ok_or_else(overflow)?))?;
    Ok(GroupLayout { routine, slice, slices, u_full, v, info, total: end })
}

/// Workspace bytes of a thin SVD of a strided batch ([`Executor::gesvd_buffer_size`]).
pub fn gesvd_workspace(
    exec: &(impl Executor + ?Sized),
    m: usize,
    n: usize,
    dtype: DType,
    batch: usize,
    algorithm: SvdAlgorithm,
) -> Result<usize> {
    algorithm.check_problem(m, n, dtype)?;
    Ok(group_layout(exec, algorithm.resolve(m, n), m, n, dtype, batch, None)?.total)
}

/// Workspace bytes of a randomized top-`k` SVD ([`Executor::gesvdr_buffer_size`]).
pub fn gesvdr_workspace(
    exec: &(impl Executor + ?Sized),
    m: usize,
    n: usize,
    top: TopK,
    dtype: DType,
    batch: usize,
) -> Result<usize> {
    check_gesvdr_problem(m, n, top.k, top.p, dtype)?;
    Ok(group_layout(exec, SvdAlgorithm::Randomized, m, n, dtype, batch, Some(top))?.total)
}

/// Which of `lanes` lanes each routine call runs on: for groups given as `(batched routine,
/// batch, slices)`, the calls `(lane, group, matrix)` in issue order (`matrix` is `None` for a
/// batched routine's one call).
pub fn assign_lanes(groups: &[(bool, usize, usize)], lanes: usize) -> Vec<(usize, usize, Option<usize>)> {
    let lanes = lanes.max(1);
    let mut out = vec![];
    let mut next = 0;
    for (k, &(batched, batch, slices)) in groups.iter().enumerate() {
        if batched {
            out.push((next % lanes, k, None));
            next += 1;
        } else {
            out.extend((0..batch).map(|b| ((next + b % slices) % lanes, k, Some(b))));
            next += slices;
        }
    }
    out
}

/// The routine call of group `c` (laid out by `l`) for matrix `b`, or for the whole batch;
/// `host` holds the group's host values (one per matrix, see [`SvdUnitArgs::host_values`]).
fn unit_args(
    c: &GesvdCall,
    l: &GroupLayout,
    top: Option<TopK>,
    b: Option<usize>,
    diagnostics: bool,
    host: &mut [f64],
) -> SvdUnitArgs {
    let g = &c.args;
    let (m, n, dtype) = (g.m, g.n, g.a.dtype);
    let sz = dtype.size();
    let scratch = |off: Option<usize>, ld: usize, cols: usize| Strided {
        addr: c.work + off.unwrap_or(0),
        dtype,
        ld,
        stride: ld * cols,
    };
    let unit = SvdUnitArgs {
        routine: l.routine,
        m,
        n,
        top,
        batch: g.batch,
        a: g.a,
        s: g.s,
        stride_s: g.stride_s,
        u: g.u,
        v: if l.routine == SvdAlgorithm::Qr { g.vt } else { scratch(l.v, n, n) },
        work: c.work,
        work_bytes: l.slice,
        info: c.work + l.info,
        diagnostics,
        host_values: if host.is_empty() { 0 } else { host.as_mut_ptr() as Addr },
    };
    match b {
        None if l.routine == SvdAlgorithm::JacobiBatched => SvdUnitArgs { u: scratch(l.u_full, m, m), ..unit },
        None => unit,
        Some(b) => {
            let at = |s: &Strided| Strided { addr: s.addr + b * s.stride * sz, ..*s };
            SvdUnitArgs {
                batch: 1,
                a: at(&unit.a),
                s: g.s + b * g.stride_s * sz,
                u: at(&unit.u),
                v: at(&unit.v),
                work: c.work + (b % l.slices) * l.slice,
                info: unit.info + 4 * b,
                host_values: if host.is_empty() { 0 } else { host[b..].as_mut_ptr() as Addr },
                ..unit
            }
        }
    }
}

/// Host memory for the values each group's routine writes to the host (see
/// [`SvdUnitArgs::host_values`]): one `f64` per matrix for gesvdp, and for gesvda with
/// diagnostics; none otherwise.
fn host_values(calls: &[(&GesvdCall, GroupLayout)], diagnostics: bool) -> Vec<Vec<f64>> {
    let wants = |r: SvdAlgorithm| r == SvdAlgorithm::Polar || (r == SvdAlgorithm::ApproxBatched && diagnostics);
    calls.iter().map(|(c, l)| if wants(l.routine) { vec![0.0; c.args.batch] } else { vec![] }).collect()
}

/// The schedule of `calls` (each with its layout) over at most `max_lanes` lanes: every group's
/// routine calls on their lanes, and for each call the group it belongs to. `host` (from
/// [`host_values`]) must outlive the run.
fn schedule(
    max_lanes: usize,
    calls: &[(&GesvdCall, GroupLayout)],
    top: Option<TopK>,
    diagnostics: bool,
    host: &mut [Vec<f64>],
) -> (LaneSchedule, Vec<usize>) {
    let shape: Vec<(bool, usize, usize)> =
        calls.iter().map(|(c, l)| (l.routine.is_batched_routine(), c.args.batch, l.slices)).collect();
    let assigned = assign_lanes(&shape, max_lanes);
    let lanes = assigned.iter().map(|(lane, _, _)| lane + 1).max().unwrap_or(0);
    let units = assigned
        .iter()
        .map(|&(lane, k, b)| (lane, unit_args(calls[k].0, &calls[k].1, top, b, diagnostics, &mut host[k])))
        .collect();
    (LaneSchedule { lanes, units }, assigned.iter().map(|(_, k, _)| *k).collect())
}

/// `VT (rows x n) = V^T` from the packed `n x n` `V` scratch at `v`, for a batch.
unsafe fn transpose_v(
    exec: &(impl Executor + ?Sized),
    rows: usize,
    n: usize,
    batch: usize,
    v: Addr,
    vt: &Strided,
) -> Result<()> {
    let s2 = |addr, rs, cs, bs| Strided2d { addr, dtype: vt.dtype, row_stride: rs, col_stride: cs, batch_stride: bs };
    // SAFETY: the caller's contract: `v` and `vt` are valid memory of the executor's device.
    unsafe {
        exec.axpby(&AxpbyArgs {
            rows,
            cols: n,
            batch,
            alpha: 1.0,
            src: s2(v, n, 1, n * n),
            beta: 0.0,
            dst: s2(vt.addr, 1, vt.ld, vt.stride),
        })
    }
}

/// The `batch` convergence flags at `info`, read to the host (on CUDA the first read waits for
/// the join; later groups' reads find the stream idle).
unsafe fn read_flags(exec: &(impl Executor + ?Sized), info: Addr, batch: usize) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; batch * 4];
    // SAFETY: the caller's contract: `info` holds `batch` flags on the executor's device.
    unsafe { exec.read_to_host(info, &mut bytes)? };
    Ok(bytes)
}

/// Map the info flags of a batch: 0 converged; > 0 not converged (`NotConverged` with the first
/// such index); < 0 a parameter the routine rejected (`Precondition`). `host` (gesvda's
/// `h_R_nrmF` with diagnostics on; gesvdp's `h_err_sigma` always), where given, must be
/// finite.
pub fn info_status(bytes: &[u8], routine: &'static str, host: &[f64]) -> Result<()> {
    for (i, c) in bytes.chunks_exact(4).enumerate() {
        let v = i32::from_ne_bytes(c.try_into().expect("chunks of 4"));
        if v < 0 {
            return Err(Error::precondition(
                routine,
                format!("the routine reports parameter {} invalid for matrix {i}", -v),
            ));
        }
        if v > 0 || host.get(i).is_some_and(|x| !x.is_finite()) {
            return Err(Error::NotConverged { problem: None, index: i });
        }
    }
    Ok(())
}

/// Run thin SVDs of strided batches ([`Executor::gesvd_scheduled`]): every call checked, then
/// ONE fork/join of all groups' routine calls, the copies after it, one read-back of each
/// group's flags, and the diagnostics only when `options.diagnostics`.
pub unsafe fn gesvd(exec: &(impl Executor + ?Sized), calls: &[GesvdCall], options: SvdRunOptions) -> Result<()> {
    let tag = |e: Error, g: usize| if options.grouped { in_group(e, g) } else { e };
    if options.grouped {
        check_gesvd_calls(exec, calls)?;
    } else {
        for c in calls {
            let a = &c.args;
            a.check()?;
            let needed = exec.gesvd_buffer_size(a.m, a.n, a.a.dtype, a.batch, a.algorithm)?;
            if c.work_bytes < needed {
                return Err(Error::WorkspaceTooSmall { needed, given: c.work_bytes });
            }
        }
    }
    exec.set_svd_report(None);
    // Groups with matrices in them, each with its layout.
    let mut groups: Vec<(usize, (&GesvdCall, GroupLayout))> = vec![];
    for (gi, c) in calls.iter().enumerate() {
        let g = &c.args;
        if g.batch > 0 {
            let l = group_layout(exec, g.algorithm.resolve(g.m, g.n), g.m, g.n, g.a.dtype, g.batch, None)?;
            groups.push((gi, (c, l)));
        }
    }
    if groups.is_empty() {
        return Ok(());
    }
    let laid: Vec<(&GesvdCall, GroupLayout)> = groups.iter().map(|(_, x)| *x).collect();
    let mut written = host_values(&laid, options.diagnostics);
    let (lanes, unit_group) = schedule(exec.svd_max_lanes(), &laid, None, options.diagnostics, &mut written);
    // SAFETY (block): the caller's contract: every call describes valid memory of the
    // executor's device, its workspace included.
    unsafe {
        exec.svd_lanes(&lanes)?;
        // After the join, on the caller's stream: thin U of gesvdjBatched, VT = V^T.
        for (c, l) in &laid {
            let g = &c.args;
            if let Some(u_full) = l.u_full {
                let s2 = |addr, cs, bs| Strided2d {
                    addr,
                    dtype: g.a.dtype,
                    row_stride: 1,
                    col_stride: cs,
                    batch_stride: bs,
                };
                exec.axpby(&AxpbyArgs {
                    rows: g.m,
                    cols: g.n,
                    batch: g.batch,
                    alpha: 1.0,
                    src: s2(c.work + u_full, g.m, g.m * g.m),
                    beta: 0.0,
                    dst: s2(g.u.addr, g.u.ld, g.u.stride),
                })?;
            }
            if let Some(v) = l.v {
                transpose_v(exec, g.n, g.n, g.batch, c.work + v, &g.vt)?;
            }
        }
        let mut flags = Vec::with_capacity(laid.len());
        for (c, l) in &laid {
            flags.push(read_flags(exec, c.work + l.info, c.args.batch)?);
        }
        // The report: the groups' common routine (None when they differ), and what the routines
        // measured where asked for.
        let first = laid[0].1.routine;
        let common = laid.iter().all(|(_, l)| l.routine == first).then_some(first);
        let mut report = SvdReport { algorithm: common, ..Default::default() };
        // gesvdp writes (and blocks for) `h_err_sigma` either way, into `written`: a non-finite
        // one fails the SVD whether or not diagnostics are on.
        let mut host: Vec<Vec<f64>> = laid
            .iter()
            .zip(&written)
            .map(|((_, l), w)| if l.routine == SvdAlgorithm::Polar { w.clone() } else { vec![] })
            .collect();
        if options.diagnostics {
            let measured = exec.svd_diagnostics(&lanes)?;
            let max = |a: Option<f64>, b: f64| Some(a.map_or(b, |a| a.max(b)));
            for (d, &k) in measured.iter().zip(&unit_group) {
                if laid[k].1.routine != SvdAlgorithm::Polar {
                    host[k].extend(&d.values);
                }
                if let Some((residual, sweeps)) = d.jacobi {
                    report.residual = max(report.residual, residual);
                    report.sweeps = Some(report.sweeps.map_or(sweeps, |s| s.max(sweeps)));
                }
            }
            for ((_, l), vals) in laid.iter().zip(&host) {
                let worst = vals.iter().cloned().fold(0.0, f64::max);
                match l.routine {
                    SvdAlgorithm::ApproxBatched => report.residual = max(report.residual, worst),
                    SvdAlgorithm::Polar => report.err_sigma = max(report.err_sigma, worst),
                    _ => {}
                }
            }
        }
        exec.set_svd_report(Some(report));
        for (((gi, (_, l)), bytes), vals) in groups.iter().zip(&flags).zip(&host) {
            info_status(bytes, l.routine.routine(), vals).map_err(|e| tag(e, *gi))?;
        }
        Ok(())
    }
}

/// Run a randomized top-`k` SVD ([`Executor::gesvdr_strided_batched`]): one `Xgesvdr` call per
/// matrix over the lanes, then `VT (k x n)` from `V` and the flags.
pub unsafe fn gesvdr(exec: &(impl Executor + ?Sized), g: &GesvdrArgs, work: Addr, work_bytes: usize) -> Result<()> {
    g.check()?;
    exec.set_svd_report(None);
    let top = TopK { k: g.k, p: g.p, niters: g.niters };
    let l = group_layout(exec, SvdAlgorithm::Randomized, g.m, g.n, g.a.dtype, g.batch, Some(top))?;
    if work_bytes < l.total {
        return Err(Error::WorkspaceTooSmall { needed: l.total, given: work_bytes });
    }
    if g.batch == 0 {
        return Ok(());
    }
    // As a thin-SVD call whose `VT` is the caller's (k x n): only `V` is copied to it.
    let call = GesvdCall {
        args: crate::exec::GesvdArgs {
            m: g.m,
            n: g.n,
            a: g.a,
            s: g.s,
            stride_s: g.stride_s,
            u: g.u,
            vt: g.vt,
            batch: g.batch,
            algorithm: SvdAlgorithm::Randomized,
        },
        work,
        work_bytes,
    };
    let (lanes, _) = schedule(exec.svd_max_lanes(), &[(&call, l)], Some(top), false, &mut [vec![]]);
    // SAFETY: the caller's contract: the arguments describe valid memory of the executor's device.
    unsafe {
        exec.svd_lanes(&lanes)?;
        transpose_v(exec, g.k, g.n, g.batch, work + l.v.unwrap_or(0), &g.vt)?;
        let flags = read_flags(exec, work + l.info, g.batch)?;
        exec.set_svd_report(Some(SvdReport { algorithm: Some(SvdAlgorithm::Randomized), ..Default::default() }));
        info_status(&flags, SvdAlgorithm::Randomized.routine(), &[])
    }
}
