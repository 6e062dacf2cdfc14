//! The SVD lanes on the stream pool: the fork, each routine call marshalled onto its lane's
//! cuSOLVER handle, the join, and the diagnostics read-back. What runs where is planned by
//! `ops::svd::schedule`; nothing here chooses.

use super::layout::*;
use super::*;

impl CudaExecutor {
    /// Run a checked schedule: the lanes wait for an event recorded on the caller's stream
    /// (fork); each call is issued on its lane's stream and handle; the caller's stream waits for
    /// an event recorded on each lane (join), so work issued before runs first and work issued
    /// after sees the results. The join is made even when a call fails; the host then waits for
    /// the caller's stream, so the host workspaces of the `X` routines (which cuSOLVER may use
    /// until the stream reaches them) outlive their use.
    pub(super) unsafe fn run_lanes(&self, s: &LaneSchedule) -> Result<()> {
        // SAFETY: this function's contract: the calls describe valid memory of this context's device.
        unsafe {
            let h = self.lock()?;
            if s.units.is_empty() {
                return Ok(());
            }
            let nl = s.lanes.min(h.lanes.len());
            if s.units.iter().any(|(l, _)| *l >= nl) {
                return Err(Error::Internal("SVD call assigned beyond the stream pool".into()));
            }
            // Host workspace per call (one query per distinct shape).
            let mut host_bytes: Vec<(SvdUnitShape, usize)> = vec![];
            let mut hosts: Vec<Vec<u8>> = Vec::with_capacity(s.units.len());
            for (_, u) in &s.units {
                let shape = u.shape();
                let hb = match host_bytes.iter().find(|(sh, _)| *sh == shape) {
                    Some((_, hb)) => *hb,
                    None => {
                        let hb = unit_work(&h, &shape)?.host;
                        host_bytes.push((shape, hb));
                        hb
                    }
                };
                hosts.push(vec![0u8; hb.max(1)]);
            }
            cu_check(cu::cuEventRecord(h.fork, h.stream), "cuEventRecord")?;
            for lane in &h.lanes[..nl] {
                cu_check(cu::cuStreamWaitEvent(lane.stream, h.fork, 0), "cuStreamWaitEvent")?;
            }
            let mut res = Ok(());
            for (i, (l, u)) in s.units.iter().enumerate() {
                res = issue(&h.lanes[*l], u, &mut hosts[i]);
                if res.is_err() {
                    break;
                }
            }
            // Join. A failed record/wait must not return before the pool streams are done: the X
            // routines take `bufferOnHost` with a stream-ordered call, and the cuSOLVER docs do not
            // say it is free when the call returns, so on any join error the pool streams are
            // synchronised directly before the host workspaces are dropped.
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

    /// What the calls of `s`, the schedule that ran last, measured: the host values they wrote
    /// (final: `run_lanes` synchronised), and for each lane's last gesvdj call made with
    /// diagnostics on, the residual and sweeps its lane's `gesvdjInfo` holds, queried now.
    pub(super) unsafe fn read_diagnostics(&self, s: &LaneSchedule) -> Result<Vec<UnitDiagnostics>> {
        // SAFETY: this function's contract: `host_values` of each call is live host memory of
        // `batch` values; the handles are live.
        unsafe {
            let h = self.lock()?;
            let mut out: Vec<UnitDiagnostics> = s
                .units
                .iter()
                .map(|(_, u)| {
                    let reported = u.diagnostics && u.host_values != 0 && u.routine != SvdAlgorithm::Jacobi;
                    let values = if reported {
                        std::slice::from_raw_parts(u.host_values as *const f64, u.batch).to_vec()
                    } else {
                        vec![]
                    };
                    UnitDiagnostics { values, jacobi: None }
                })
                .collect();
            let mut last = vec![None; s.lanes.min(h.lanes.len())];
            for (i, (l, u)) in s.units.iter().enumerate() {
                // A later gesvdjBatched call on the lane reuses its gesvdjInfo, whose residual
                // cuSOLVER does not report after a batched call: no value for that lane then.
                if *l < last.len() {
                    match u.routine {
                        SvdAlgorithm::Jacobi => last[*l] = u.diagnostics.then_some(i),
                        SvdAlgorithm::JacobiBatched => last[*l] = None,
                        _ => {}
                    }
                }
            }
            for (lane, i) in last.iter().enumerate() {
                if let Some(i) = i {
                    let l = &h.lanes[lane];
                    let (mut r, mut sw) = (0f64, 0i32);
                    cs_check(cs::cusolverDnXgesvdjGetResidual(l.solver, l.gesvdj, &mut r), "gesvdjGetResidual")?;
                    cs_check(cs::cusolverDnXgesvdjGetSweeps(l.solver, l.gesvdj, &mut sw), "gesvdjGetSweeps")?;
                    out[*i].jacobi = Some((r, sw));
                }
            }
            Ok(out)
        }
    }
}

/// One routine call on `lane`, as [`SvdUnitArgs`] describes it; `host` is its host workspace.
unsafe fn issue(lane: &Lane, u: &SvdUnitArgs, host: &mut [u8]) -> Result<()> {
    // SAFETY: this function's contract: the call describes valid memory of the lane's device.
    unsafe {
        let (m, n, dt) = (u.m, u.n, u.a.dtype);
        let (f64t, sdt, sz) = (dt == DType::F64, solver_type(dt), dt.size());
        let (a, s, uu, v, work) = (
            u.a.addr as *mut c_void,
            u.s as *mut c_void,
            u.u.addr as *mut c_void,
            u.v.addr as *mut c_void,
            u.work as *mut c_void,
        );
        let info = u.info as *mut i32;
        // The 32-bit APIs take lwork in elements of the routine's type.
        let lwork32 = (u.work_bytes / sz).min(i32::MAX as usize) as i32;
        let host_ptr = host.as_mut_ptr() as *mut c_void;
        match u.routine {
            SvdAlgorithm::JacobiBatched => {
                macro_rules! call {
                    ($f:ident, $t:ty) => {
                        cs::$f(
                            lane.solver,
                            cs::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
                            m as i32,
                            n as i32,
                            a as *mut $t,
                            u.a.ld as i32,
                            s as *mut $t,
                            uu as *mut $t,
                            u.u.ld as i32,
                            v as *mut $t,
                            u.v.ld as i32,
                            work as *mut $t,
                            lwork32,
                            info,
                            lane.gesvdj,
                            u.batch as i32,
                        )
                    };
                }
                let r = if f64t { call!(cusolverDnDgesvdjBatched, f64) } else { call!(cusolverDnSgesvdjBatched, f32) };
                cs_check(r, "gesvdjBatched")
            }
            SvdAlgorithm::ApproxBatched => {
                // rank = n (all pairs); the residuals only with diagnostics (null otherwise, as
                // PyTorch passes it: no host write to wait for).
                let res = if u.diagnostics { u.host_values as *mut f64 } else { std::ptr::null_mut() };
                macro_rules! call {
                    ($f:ident, $t:ty) => {
                        cs::$f(
                            lane.solver,
                            cs::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
                            n as i32,
                            m as i32,
                            n as i32,
                            a as *const $t,
                            u.a.ld as i32,
                            u.a.stride as i64,
                            s as *mut $t,
                            u.stride_s as i64,
                            uu as *mut $t,
                            u.u.ld as i32,
                            u.u.stride as i64,
                            v as *mut $t,
                            u.v.ld as i32,
                            u.v.stride as i64,
                            work as *mut $t,
                            lwork32,
                            info,
                            res,
                            u.batch as i32,
                        )
                    };
                }
                let r = if f64t {
                    call!(cusolverDnDgesvdaStridedBatched, f64)
                } else {
                    call!(cusolverDnSgesvdaStridedBatched, f32)
                };
                cs_check(r, "gesvdaStridedBatched")
            }
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
                    u.a.ld as i64,
                    sdt,
                    s,
                    sdt,
                    uu,
                    u.u.ld as i64,
                    sdt,
                    v,
                    u.v.ld as i64,
                    sdt,
                    work,
                    u.work_bytes,
                    host_ptr,
                    host.len(),
                    info,
                ),
                "cusolverDnXgesvd",
            ),
            SvdAlgorithm::Jacobi => {
                macro_rules! call {
                    ($f:ident, $t:ty) => {
                        cs::$f(
                            lane.solver,
                            cs::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
                            1,
                            m as i32,
                            n as i32,
                            a as *mut $t,
                            u.a.ld as i32,
                            s as *mut $t,
                            uu as *mut $t,
                            u.u.ld as i32,
                            v as *mut $t,
                            u.v.ld as i32,
                            work as *mut $t,
                            lwork32,
                            info,
                            lane.gesvdj,
                        )
                    };
                }
                cs_check(if f64t { call!(cusolverDnDgesvdj, f64) } else { call!(cusolverDnSgesvdj, f32) }, "gesvdj")
            }
            SvdAlgorithm::Polar => cs_check(
                cs::cusolverDnXgesvdp(
                    lane.solver,
                    lane.params,
                    cs::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
                    1,
                    m as i64,
                    n as i64,
                    sdt,
                    a,
                    u.a.ld as i64,
                    sdt,
                    s,
                    sdt,
                    uu,
                    u.u.ld as i64,
                    sdt,
                    v,
                    u.v.ld as i64,
                    sdt,
                    work,
                    u.work_bytes,
                    host_ptr,
                    host.len(),
                    info,
                    // Always written (the routine takes no null here); read only with diagnostics.
                    u.host_values as *mut f64,
                ),
                "cusolverDnXgesvdp",
            ),
            SvdAlgorithm::Randomized => {
                let top = u.top.ok_or_else(|| Error::Internal("gesvdr call without k".into()))?;
                cs_check(
                    cs::cusolverDnXgesvdr(
                        lane.solver,
                        lane.params,
                        b'S' as i8,
                        b'S' as i8,
                        m as i64,
                        n as i64,
                        top.k as i64,
                        top.p as i64,
                        top.niters as i64,
                        sdt,
                        a,
                        u.a.ld as i64,
                        sdt,
                        s,
                        sdt,
                        uu,
                        u.u.ld as i64,
                        sdt,
                        v,
                        u.v.ld as i64,
                        sdt,
                        work,
                        u.work_bytes,
                        host_ptr,
                        host.len(),
                        info,
                    ),
                    "cusolverDnXgesvdr",
                )
            }
            SvdAlgorithm::Auto => Err(Error::Internal("an SVD routine call needs a resolved algorithm".into())),
        }
    }
}
