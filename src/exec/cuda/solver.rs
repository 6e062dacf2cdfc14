//! The SVD routines over the stream pool: convergence flags, the grouped run (one fork/join for
//! a whole list of calls), and the fork/join itself.

use super::layout::*;
use super::*;

impl CudaExecutor {
    /// Read the `batch` convergence flags at `info` (stream-ordered, then synchronised) and map
    /// them: 0 converged; > 0 not converged (`NotConverged` with the first such index; the
    /// routine's report says by how much); < 0 a parameter cuSOLVER rejected (`Precondition`).
    /// `host` (gesvda's `h_R_nrmF`, gesvdp's `h_err_sigma`), where given, must be finite.
    pub(super) unsafe fn check_info(
        &self,
        info: Addr,
        batch: usize,
        routine: &'static str,
        host: &[f64],
    ) -> Result<()> {
        // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
        unsafe {
            let mut bytes = vec![0u8; batch * 4];
            self.read_to_host(info, &mut bytes)?;
            info_status(&bytes, routine, host)
        }
    }

    /// The groups of a grouped SVD (checked by the caller), all at once: one fork from the
    /// caller's stream onto the pool; every group's work spread over it (a batched routine,
    /// `gesvdjBatched` / `gesvdaStridedBatched`, as one unit on one pool stream; a per-matrix
    /// routine's matrices over the streams, those sharing a workspace slice on one stream);
    /// one join back (`fan_out`, which also keeps the host workspaces alive until the caller's
    /// stream has passed the join); then the thin-U / VT copies on the caller's stream and one
    /// read-back of every group's info flags. Each group uses only its own workspace slice, so
    /// groups on different streams never share scratch. `grouped`: errors name the group
    /// (`NotConverged { problem: Some(g) }`); otherwise (a single strided batch) they do not.
    pub(super) unsafe fn run_grouped(&self, calls: &[GesvdCall], grouped: bool) -> Result<()> {
        // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
        unsafe {
            let tag = |e: Error, g: usize| if grouped { in_group(e, g) } else { e };
            let mut h = self.lock()?;
            h.report = None;
            // Groups with matrices in them, with their routine and workspace layout.
            let mut groups: Vec<(usize, SvdAlgorithm, SvdLayout)> = Vec::with_capacity(calls.len());
            for (gi, c) in calls.iter().enumerate() {
                let g = &c.args;
                if g.batch == 0 {
                    continue;
                }
                let alg = g.algorithm.resolve(g.m, g.n);
                let l = svd_layout(&h, alg, g.m, g.n, g.a.dtype, g.batch, None)?;
                if c.work_bytes < l.total {
                    return Err(Error::WorkspaceTooSmall { needed: l.total, given: c.work_bytes });
                }
                groups.push((gi, alg, l));
            }
            if groups.is_empty() {
                return Ok(());
            }
            // The units of work, each with its pool stream and host workspace bytes: groups take
            // the pool round-robin, so a list of single matrices spreads over every stream.
            // `b % l.lanes` is matrix b's workspace slice; all matrices of one slice map to one
            // stream (l.lanes <= the pool size), which runs them in order.
            let np = h.lanes.len();
            let (mut units, mut kinds) = (vec![], vec![]);
            let mut next = 0;
            for (k, (_, alg, l)) in groups.iter().enumerate() {
                if matches!(alg, SvdAlgorithm::JacobiBatched | SvdAlgorithm::ApproxBatched) {
                    units.push((next % np, 0));
                    kinds.push((k, None));
                    next += 1;
                } else {
                    for b in 0..calls[groups[k].0].args.batch {
                        units.push(((next + b % l.lanes) % np, l.host_bytes));
                        kinds.push((k, Some(b)));
                    }
                    next += l.lanes;
                }
            }
            // Host outputs, one per matrix, written by the routine (gesvda's h_R_nrmF, gesvdp's
            // h_err_sigma); allocated before the fan-out and not resized, read after the join.
            let mut host_vals: Vec<Vec<f64>> = groups
                .iter()
                .map(|(gi, alg, _)| {
                    if matches!(alg, SvdAlgorithm::ApproxBatched | SvdAlgorithm::Polar) {
                        vec![0f64; calls[*gi].args.batch]
                    } else {
                        vec![]
                    }
                })
                .collect();
            let mut jacobi_lanes = vec![false; np];
            let res = fan_out(&mut h, &units, |lane, unit, host| {
                let (k, b) = kinds[unit];
                let (gi, alg, ref l) = groups[k];
                let (g, work) = (&calls[gi].args, calls[gi].work);
                let info = work + l.info;
                let (m, n, sz, dt) = (g.m, g.n, g.a.dtype.size(), g.a.dtype);
                let f64t = dt == DType::F64;
                let Some(b) = b else {
                    // A batched routine: the whole group in one call on this stream.
                    let dev = work + l.dev;
                    return if alg == SvdAlgorithm::JacobiBatched {
                        // Full U (m x m) and V (n x n) into scratch; thin U and VT copied after the join.
                        let (uf, vf) = (work + l.u_full, work + l.v_full);
                        macro_rules! call {
                            ($f:ident, $t:ty) => {
                                cs::$f(
                                    lane.solver,
                                    cs::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
                                    m as i32,
                                    n as i32,
                                    g.a.addr as *mut $t,
                                    g.a.ld as i32,
                                    g.s as *mut $t,
                                    uf as *mut $t,
                                    m as i32,
                                    vf as *mut $t,
                                    n as i32,
                                    dev as *mut $t,
                                    l.lwork as i32,
                                    info as *mut i32,
                                    lane.gesvdj,
                                    g.batch as i32,
                                )
                            };
                        }
                        cs_check(
                            if f64t {
                                call!(cusolverDnDgesvdjBatched, f64)
                            } else {
                                call!(cusolverDnSgesvdjBatched, f32)
                            },
                            "gesvdjBatched",
                        )
                    } else {
                        // rank = n (all pairs); U in place (packed, checked), V into scratch; one
                        // residual per matrix on the host (read after the join).
                        let (vf, res) = (work + l.v, host_vals[k].as_mut_ptr());
                        macro_rules! call {
                            ($f:ident, $t:ty) => {
                                cs::$f(
                                    lane.solver,
                                    cs::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
                                    n as i32,
                                    m as i32,
                                    n as i32,
                                    g.a.addr as *const $t,
                                    g.a.ld as i32,
                                    g.a.stride as i64,
                                    g.s as *mut $t,
                                    g.stride_s as i64,
                                    g.u.addr as *mut $t,
                                    g.u.ld as i32,
                                    g.u.stride as i64,
                                    vf as *mut $t,
                                    n as i32,
                                    (n * n) as i64,
                                    dev as *mut $t,
                                    l.lwork as i32,
                                    info as *mut i32,
                                    res,
                                    g.batch as i32,
                                )
                            };
                        }
                        cs_check(
                            if f64t {
                                call!(cusolverDnDgesvdaStridedBatched, f64)
                            } else {
                                call!(cusolverDnSgesvdaStridedBatched, f32)
                            },
                            "gesvdaStridedBatched",
                        )
                    };
                };
                // Matrix b of a per-matrix routine, in its group's workspace slice b % lanes.
                let dev = work + (b % l.lanes) * l.lane_bytes;
                let sdt = solver_type(dt);
                let a = (g.a.addr + b * g.a.stride * sz) as *mut c_void;
                let s = (g.s + b * g.stride_s * sz) as *mut c_void;
                let u = (g.u.addr + b * g.u.stride * sz) as *mut c_void;
                let v = (work + l.v + b * n * n * sz) as *mut c_void;
                let inf = (info + b * 4) as *mut i32;
                match alg {
                    SvdAlgorithm::Qr => cs_check(
                        cs::cusolverDnXgesvd(
                            lane.solver,
                            lane.params,
                            b'S' as i8,
                            b'S' as i8,
                            m as i64,
                            n as i64,
                            sdt,
                            a,
                            g.a.ld as i64,
                            sdt,
                            s,
                            sdt,
                            u,
                            g.u.ld as i64,
                            sdt,
                            (g.vt.addr + b * g.vt.stride * sz) as *mut c_void,
                            g.vt.ld as i64,
                            sdt,
                            dev as *mut c_void,
                            l.lwork,
                            host.as_mut_ptr() as *mut c_void,
                            l.host_bytes,
                            inf,
                        ),
                        "cusolverDnXgesvd",
                    ),
                    SvdAlgorithm::Jacobi => {
                        jacobi_lanes[units[unit].0] = true;
                        macro_rules! call {
                            ($f:ident, $t:ty) => {
                                cs::$f(
                                    lane.solver,
                                    cs::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
                                    1,
                                    m as i32,
                                    n as i32,
                                    a as *mut $t,
                                    g.a.ld as i32,
                                    s as *mut $t,
                                    u as *mut $t,
                                    g.u.ld as i32,
                                    v as *mut $t,
                                    n as i32,
                                    dev as *mut $t,
                                    l.lwork as i32,
                                    inf,
                                    lane.gesvdj,
                                )
                            };
                        }
                        cs_check(
                            if f64t { call!(cusolverDnDgesvdj, f64) } else { call!(cusolverDnSgesvdj, f32) },
                            "gesvdj",
                        )
                    }
                    _ => cs_check(
                        cs::cusolverDnXgesvdp(
                            lane.solver,
                            lane.params,
                            cs::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
                            1,
                            m as i64,
                            n as i64,
                            sdt,
                            a,
                            g.a.ld as i64,
                            sdt,
                            s,
                            sdt,
                            u,
                            g.u.ld as i64,
                            sdt,
                            v,
                            n as i64,
                            sdt,
                            dev as *mut c_void,
                            l.lwork,
                            host.as_mut_ptr() as *mut c_void,
                            l.host_bytes,
                            inf,
                            &mut host_vals[k][b],
                        ),
                        "cusolverDnXgesvdp",
                    ),
                }
            });
            // The algorithm of the report: the groups' common routine (None when they differ).
            let common = groups.iter().all(|(_, a, _)| *a == groups[0].1).then_some(groups[0].1);
            let mut report = SvdReport { algorithm: common, ..Default::default() };
            if jacobi_lanes.iter().any(|x| *x) {
                // Residual and sweeps of the last gesvdj each stream ran (gesvdjInfo holds the
                // latest call's); per-matrix convergence is the info flags below.
                let (mut res_max, mut sweeps_max) = (0f64, 0i32);
                for (lane, _) in h.lanes.iter().zip(&jacobi_lanes).filter(|(_, j)| **j) {
                    let (mut r, mut sw) = (0f64, 0i32);
                    if cs::cusolverDnXgesvdjGetResidual(lane.solver, lane.gesvdj, &mut r)
                        == cs::cusolverStatus_t::CUSOLVER_STATUS_SUCCESS
                    {
                        res_max = res_max.max(r);
                    }
                    if cs::cusolverDnXgesvdjGetSweeps(lane.solver, lane.gesvdj, &mut sw)
                        == cs::cusolverStatus_t::CUSOLVER_STATUS_SUCCESS
                    {
                        sweeps_max = sweeps_max.max(sw);
                    }
                }
                report.residual = Some(res_max);
                report.sweeps = Some(sweeps_max);
            }
            drop(h);
            res?;
            // After the join, on the caller's stream: thin U of gesvdjBatched, VT = V^T where V
            // (packed n x n) was written.
            for (gi, alg, l) in &groups {
                let (g, work) = (&calls[*gi].args, calls[*gi].work);
                let (m, n, dt) = (g.m, g.n, g.a.dtype);
                let s2 =
                    |addr, rs, cs, bs| Strided2d { addr, dtype: dt, row_stride: rs, col_stride: cs, batch_stride: bs };
                let v = match alg {
                    SvdAlgorithm::JacobiBatched => {
                        let uf = work + l.u_full;
                        self.axpby(&AxpbyArgs {
                            rows: m,
                            cols: n,
                            batch: g.batch,
                            alpha: 1.0,
                            src: s2(uf, 1, m, m * m),
                            beta: 0.0,
                            dst: s2(g.u.addr, 1, g.u.ld, g.u.stride),
                        })?;
                        Some(work + l.v_full)
                    }
                    SvdAlgorithm::Qr => None,
                    _ => Some(work + l.v),
                };
                if let Some(vf) = v {
                    self.axpby(&AxpbyArgs {
                        rows: n,
                        cols: n,
                        batch: g.batch,
                        alpha: 1.0,
                        src: s2(vf, n, 1, n * n),
                        beta: 0.0,
                        dst: s2(g.vt.addr, 1, g.vt.ld, g.vt.stride),
                    })?;
                }
            }
            // One read-back of every group's info flags (stream-ordered copies, one synchronise).
            let mut infos: Vec<Vec<u8>> =
                groups.iter().map(|(gi, _, _)| vec![0u8; calls[*gi].args.batch * 4]).collect();
            {
                let h = self.lock()?;
                let mut copied = Ok(());
                for ((gi, _, l), bytes) in groups.iter().zip(infos.iter_mut()) {
                    copied = copied.and_then(|_| {
                        cu_check(
                            cu::cuMemcpyDtoHAsync_v2(
                                bytes.as_mut_ptr() as *mut c_void,
                                (calls[*gi].work + l.info) as cu::CUdeviceptr,
                                bytes.len(),
                                h.stream,
                            ),
                            "cuMemcpyDtoHAsync",
                        )
                    });
                }
                // Synchronised even when a copy failed to enqueue: the host buffers outlive the copies.
                let synced = cu_check(cu::cuStreamSynchronize(h.stream), "cuStreamSynchronize");
                copied.and(synced)?;
            }
            // h_R_nrmF and h_err_sigma are read only now, after the stream synchronisation.
            for ((_, alg, _), vals) in groups.iter().zip(&host_vals) {
                let worst = vals.iter().cloned().fold(0.0, f64::max);
                match alg {
                    SvdAlgorithm::ApproxBatched => {
                        report.residual = Some(report.residual.map_or(worst, |r| r.max(worst)))
                    }
                    SvdAlgorithm::Polar => report.err_sigma = Some(report.err_sigma.map_or(worst, |r| r.max(worst))),
                    _ => {}
                }
            }
            let checked =
                groups.iter().zip(infos.iter().zip(&host_vals)).try_for_each(|((gi, alg, _), (bytes, vals))| {
                    info_status(bytes, alg.routine(), vals).map_err(|e| tag(e, *gi))
                });
            self.h.lock().unwrap_or_else(|e| e.into_inner()).report = Some(report);
            checked
        }
    }
}

/// Map the info flags of a batch: 0 converged; > 0 not converged (`NotConverged` with the first
/// such index); < 0 a parameter cuSOLVER rejected (`Precondition`). `host` (gesvda's
/// `h_R_nrmF`, gesvdp's `h_err_sigma`), where given, must be finite.
pub(super) fn info_status(bytes: &[u8], routine: &'static str, host: &[f64]) -> Result<()> {
    {
        for (i, c) in bytes.chunks_exact(4).enumerate() {
            let v = i32::from_ne_bytes(c.try_into().unwrap());
            if v < 0 {
                return Err(Error::precondition(
                    routine,
                    format!("cuSOLVER reports parameter {} invalid for matrix {i}", -v),
                ));
            }
            if v > 0 || host.get(i).is_some_and(|x| !x.is_finite()) {
                return Err(Error::NotConverged { problem: None, index: i });
            }
        }
        Ok(())
    }
}

/// Run `one(lane, u, host_work)` for every unit `u` of `units` (`(stream, host_bytes)`: the pool
/// stream it runs on and the bytes of its own host workspace). Units on one stream run in order,
/// so units that share a device workspace slice must share a stream (the caller's assignment).
/// The pool streams first wait on an event recorded on the caller's stream (fork); afterwards
/// the caller's stream waits on an event recorded on each pool stream (join), so the caller's
/// stream order is preserved: work it issued before runs first, work it issues after sees the
/// results. The join is made even when a call fails; the host then waits for the caller's
/// stream, so the host workspaces outlive their use.
pub(super) unsafe fn fan_out(
    h: &mut Handles,
    units: &[(usize, usize)],
    mut one: impl FnMut(&Lane, usize, &mut [u8]) -> Result<()>,
) -> Result<()> {
    // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
    unsafe {
        let nl = units.iter().map(|(i, _)| i + 1).max().unwrap_or(0).min(h.lanes.len());
        if units.iter().any(|(i, _)| *i >= nl) {
            return Err(Error::Internal("SVD unit assigned beyond the stream pool".into()));
        }
        cu_check(cu::cuEventRecord(h.fork, h.stream), "cuEventRecord")?;
        for lane in &h.lanes[..nl] {
            cu_check(cu::cuStreamWaitEvent(lane.stream, h.fork, 0), "cuStreamWaitEvent")?;
        }
        // One host workspace per unit: cuSOLVER may still use one after the call returns (it is
        // stream-ordered), so none is reused before the join below.
        let mut hosts: Vec<Vec<u8>> = units.iter().map(|(_, hb)| vec![0u8; (*hb).max(1)]).collect();
        let mut res = Ok(());
        for (u, (i, _)) in units.iter().enumerate() {
            res = one(&h.lanes[*i], u, &mut hosts[u]);
            if res.is_err() {
                break;
            }
        }
        // Join. A failed record/wait must not return before the pool streams are done: the X-API
        // routines take `bufferOnHost` with a stream-ordered call, and the cuSOLVER docs do not say
        // it is free when the call returns, so on any join error the pool streams are synchronised
        // directly before the host workspaces are dropped.
        let mut joined = Ok(());
        for lane in &h.lanes[..nl] {
            joined = joined
                .and_then(|_| cu_check(cu::cuEventRecord(lane.done, lane.stream), "cuEventRecord"))
                .and_then(|_| cu_check(cu::cuStreamWaitEvent(h.stream, lane.done, 0), "cuStreamWaitEvent"));
        }
        let synced = joined.and_then(|_| cu_check(cu::cuStreamSynchronize(h.stream), "cuStreamSynchronize"));
        if synced.is_err() {
            for lane in &h.lanes[..nl] {
                cu::cuStreamSynchronize(lane.stream);
            }
        }
        drop(hosts);
        res.and(synced)
    }
}
