//! The workspace one cuSOLVER SVD routine call needs (its `*_bufferSize` query). The layout of
//! a whole SVD around these calls is `ops::svd::schedule`'s.

use super::*;

/// Device and host workspace bytes of one routine call.
pub(super) struct UnitWork {
    /// Bytes of device workspace (the 32-bit APIs' `lwork` elements, in bytes).
    pub(super) device: usize,
    /// Bytes of host workspace (the 64-bit `X` APIs' `workspaceInBytesOnHost`).
    pub(super) host: usize,
}

/// The workspace of one call of `shape` (checked by the caller).
pub(super) unsafe fn unit_work(h: &Handles, shape: &SvdUnitShape) -> Result<UnitWork> {
    // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
    unsafe {
        let SvdUnitShape { routine: alg, m, n, dtype, batch, top } = *shape;
        let sz = dtype.size();
        let f64t = dtype == DType::F64;
        let dt = solver_type(dtype);
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
                Ok(UnitWork { device: lwork as usize * sz, host: 0 })
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
                Ok(UnitWork { device: lwork as usize * sz, host: 0 })
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
                        let TopK { k, p, niters } =
                            top.ok_or_else(|| Error::Internal("gesvdr workspace without k".into()))?;
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
                Ok(UnitWork { device: d, host: hb })
            }
            SvdAlgorithm::Auto => Err(Error::Internal("an SVD routine call needs a resolved algorithm".into())),
        }
    }
}
