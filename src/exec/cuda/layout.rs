//! Workspace layout of one cuSOLVER SVD call (what the `*_buffer_size` queries report).

use super::*;

/// Workspace layout of one SVD call. Offsets are from the start of the workspace.
///
/// - `gesvdjBatched`: `[work (lwork elements) | U full m x m x batch | V full n x n x batch | info]`
/// - `gesvdaStridedBatched`: `[work (lwork elements) | V n x n x batch | info]`
/// - per-matrix routines (`Xgesvd`, `gesvdj`, `Xgesvdp`, `Xgesvdr`), spread over
///   `lanes = min(batch, SVD_STREAMS)` streams: `[lanes x work slice | V n x n x batch (not for
///   Xgesvd) | info]`, each stream's slice `align(lwork)` bytes.
///
/// Each region is 256-byte aligned; the total is what the `*_buffer_size` queries report.
pub(super) struct SvdLayout {
    pub(super) dev: usize,
    /// Elements of the routine's type for the 32-bit APIs, bytes for the 64-bit (`X*`) ones.
    pub(super) lwork: usize,
    pub(super) u_full: usize,
    pub(super) v_full: usize,
    /// V scratch (packed n x n per matrix).
    pub(super) v: usize,
    pub(super) lanes: usize,
    pub(super) lane_bytes: usize,
    pub(super) info: usize,
    pub(super) host_bytes: usize,
    pub(super) total: usize,
}

pub(super) fn align(x: usize) -> usize {
    x.div_ceil(256) * 256
}

/// Layout for `alg` (resolved, never `Auto`); `kpn = Some((k, p, niters))` for `Randomized`.
pub(super) unsafe fn svd_layout(
    h: &Handles,
    alg: SvdAlgorithm,
    m: usize,
    n: usize,
    dtype: DType,
    batch: usize,
    kpn: Option<(usize, usize, usize)>,
) -> Result<SvdLayout> {
    // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
    unsafe {
        let sz = dtype.size();
        let f64t = dtype == DType::F64;
        let dt = solver_type(dtype);
        let v_bytes = align(n * n * batch * sz);
        let mut l = SvdLayout {
            dev: 0,
            lwork: 0,
            u_full: 0,
            v_full: 0,
            v: 0,
            lanes: 1,
            lane_bytes: 0,
            info: 0,
            host_bytes: 0,
            total: 0,
        };
        match alg {
            SvdAlgorithm::JacobiBatched => {
                let mut lwork = 0i32;
                macro_rules! q {
                    ($f:ident) => {
                        cs::$f(
                            h.solver,
                            cs::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
                            m as i32,
                            n as i32,
                            std::ptr::null(),
                            m as i32,
                            std::ptr::null(),
                            std::ptr::null(),
                            m as i32,
                            std::ptr::null(),
                            n as i32,
                            &mut lwork,
                            h.gesvdj,
                            batch as i32,
                        )
                    };
                }
                let r = if f64t {
                    q!(cusolverDnDgesvdjBatched_bufferSize)
                } else {
                    q!(cusolverDnSgesvdjBatched_bufferSize)
                };
                cs_check(r, "gesvdjBatched_bufferSize")?;
                l.lwork = lwork as usize;
                l.u_full = align(l.lwork * sz);
                l.v_full = l.u_full + align(m * m * batch * sz);
                l.info = l.v_full + v_bytes;
            }
            SvdAlgorithm::ApproxBatched => {
                let mut lwork = 0i32;
                macro_rules! q {
                    ($f:ident) => {
                        cs::$f(
                            h.solver,
                            cs::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
                            n as i32,
                            m as i32,
                            n as i32,
                            std::ptr::null(),
                            m as i32,
                            (m * n) as i64,
                            std::ptr::null(),
                            n as i64,
                            std::ptr::null(),
                            m as i32,
                            (m * n) as i64,
                            std::ptr::null(),
                            n as i32,
                            (n * n) as i64,
                            &mut lwork,
                            batch as i32,
                        )
                    };
                }
                let r = if f64t {
                    q!(cusolverDnDgesvdaStridedBatched_bufferSize)
                } else {
                    q!(cusolverDnSgesvdaStridedBatched_bufferSize)
                };
                cs_check(r, "gesvdaStridedBatched_bufferSize")?;
                l.lwork = lwork as usize;
                l.v = align(l.lwork * sz);
                l.info = l.v + v_bytes;
            }
            SvdAlgorithm::Qr | SvdAlgorithm::Jacobi | SvdAlgorithm::Polar | SvdAlgorithm::Randomized => {
                let (mut d, mut hb) = (0usize, 0usize);
                // Queried on a pool stream's handle, parameters and Jacobi info: the kind that runs
                // the routine (every pool handle is configured alike).
                let lane = h.lanes.first().ok_or_else(|| Error::Internal("no SVD stream pool".into()))?;
                let (solver, params, gesvdj) = (lane.solver, lane.params, lane.gesvdj);
                match alg {
                    SvdAlgorithm::Qr => cs_check(
                        cs::cusolverDnXgesvd_bufferSize(
                            solver,
                            params,
                            b'S' as i8,
                            b'S' as i8,
                            m as i64,
                            n as i64,
                            dt,
                            std::ptr::null(),
                            m as i64,
                            dt,
                            std::ptr::null(),
                            dt,
                            std::ptr::null(),
                            m as i64,
                            dt,
                            std::ptr::null(),
                            n as i64,
                            dt,
                            &mut d,
                            &mut hb,
                        ),
                        "cusolverDnXgesvd_bufferSize",
                    )?,
                    SvdAlgorithm::Jacobi => {
                        let mut lwork = 0i32;
                        macro_rules! q {
                            ($f:ident) => {
                                cs::$f(
                                    solver,
                                    cs::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
                                    1,
                                    m as i32,
                                    n as i32,
                                    std::ptr::null(),
                                    m as i32,
                                    std::ptr::null(),
                                    std::ptr::null(),
                                    m as i32,
                                    std::ptr::null(),
                                    n as i32,
                                    &mut lwork,
                                    gesvdj,
                                )
                            };
                        }
                        cs_check(
                            if f64t { q!(cusolverDnDgesvdj_bufferSize) } else { q!(cusolverDnSgesvdj_bufferSize) },
                            "gesvdj_bufferSize",
                        )?;
                        // gesvdj takes lwork in elements; the slice holds that many.
                        d = lwork as usize * sz;
                    }
                    SvdAlgorithm::Polar => cs_check(
                        cs::cusolverDnXgesvdp_bufferSize(
                            solver,
                            params,
                            cs::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
                            1,
                            m as i64,
                            n as i64,
                            dt,
                            std::ptr::null(),
                            m as i64,
                            dt,
                            std::ptr::null(),
                            dt,
                            std::ptr::null(),
                            m as i64,
                            dt,
                            std::ptr::null(),
                            n as i64,
                            dt,
                            &mut d,
                            &mut hb,
                        ),
                        "cusolverDnXgesvdp_bufferSize",
                    )?,
                    _ => {
                        let (k, p, niters) = kpn.ok_or_else(|| Error::Internal("gesvdr layout without k".into()))?;
                        cs_check(
                            cs::cusolverDnXgesvdr_bufferSize(
                                solver,
                                params,
                                b'S' as i8,
                                b'S' as i8,
                                m as i64,
                                n as i64,
                                k as i64,
                                p as i64,
                                niters as i64,
                                dt,
                                std::ptr::null(),
                                m as i64,
                                dt,
                                std::ptr::null(),
                                dt,
                                std::ptr::null(),
                                m as i64,
                                dt,
                                std::ptr::null(),
                                n as i64,
                                dt,
                                &mut d,
                                &mut hb,
                            ),
                            "cusolverDnXgesvdr_bufferSize",
                        )?
                    }
                }
                l.lanes = batch.clamp(1, SVD_STREAMS);
                l.lane_bytes = align(d);
                l.lwork = if alg == SvdAlgorithm::Jacobi { d / sz } else { d };
                l.host_bytes = hb;
                l.v = l.lanes * l.lane_bytes;
                l.info = if alg == SvdAlgorithm::Qr { l.v } else { l.v + v_bytes };
            }
            SvdAlgorithm::Auto => return Err(Error::Internal("svd_layout needs a resolved algorithm".into())),
        }
        l.total = l.info + align(batch * 4);
        Ok(l)
    }
}
