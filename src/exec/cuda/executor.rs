//! The [`Executor`] implementation: each primitive's arguments marshalled to cuBLAS, cuSOLVER or
//! an NVRTC kernel on the context's stream.

use super::launch::{self, Limits};
use super::layout::*;
use super::*;

impl Executor for CudaExecutor {
    fn name(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }
    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        let h = self.lock()?;
        let mut ptr = 0;
        // SAFETY: out-parameter; size at least 1.
        let r = unsafe { cu::cuMemAlloc_v2(&mut ptr, bytes.max(1)) };
        if r != cu::CUresult::CUDA_SUCCESS {
            return Err(Error::AllocationFailed { bytes });
        }
        let owner = DeviceAlloc::new(ptr, h.dev).inspect_err(|_| {
            // SAFETY: just allocated, never handed out.
            unsafe { cu::cuMemFree_v2(ptr) };
        })?;
        Ok(Buffer::new(ptr as usize, bytes, Box::new(owner)))
    }
    unsafe fn read_to_host(&self, src: Addr, dst: &mut [u8]) -> Result<()> {
        // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
        unsafe {
            let h = self.lock()?;
            cu_check(
                cu::cuMemcpyDtoHAsync_v2(dst.as_mut_ptr() as *mut c_void, src as cu::CUdeviceptr, dst.len(), h.stream),
                "cuMemcpyDtoHAsync",
            )?;
            cu_check(cu::cuStreamSynchronize(h.stream), "cuStreamSynchronize")
        }
    }
    unsafe fn write_from_host(&self, src: &[u8], dst: Addr) -> Result<()> {
        // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
        unsafe {
            let h = self.lock()?;
            cu_check(
                cu::cuMemcpyHtoDAsync_v2(dst as cu::CUdeviceptr, src.as_ptr() as *const c_void, src.len(), h.stream),
                "cuMemcpyHtoDAsync",
            )?;
            cu_check(cu::cuStreamSynchronize(h.stream), "cuStreamSynchronize")
        }
    }
    fn synchronize(&self) -> Result<()> {
        let h = self.lock()?;
        // SAFETY: the stream belongs to the caller and outlives its use by contract.
        cu_check(unsafe { cu::cuStreamSynchronize(h.stream) }, "cuStreamSynchronize")
    }
    fn set_stream(&self, stream: usize) -> Result<()> {
        let mut h = self.lock()?;
        let s = stream as cu::CUstream;
        // SAFETY: handles are valid; the caller guarantees the stream belongs to this device.
        unsafe {
            cb_check(cb::cublasSetStream_v2(h.cublas, s as cb::cudaStream_t), "cublasSetStream")?;
            cs_check(cs::cusolverDnSetStream(h.solver, s as cs::cudaStream_t), "cusolverDnSetStream")?;
        }
        h.stream = s;
        Ok(())
    }
    fn stream(&self) -> usize {
        self.h.lock().map(|h| h.stream as usize).unwrap_or(0)
    }
    fn is_capturing(&self) -> Result<bool> {
        let h = self.lock()?;
        let mut status = cu::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
        // SAFETY: the stream belongs to the caller and outlives its use by contract; `status` is
        // a local the call writes.
        match unsafe { cu::cuStreamIsCapturing(h.stream, &mut status) } {
            // The legacy default stream, queried while another stream captures: capturing too.
            cu::CUresult::CUDA_ERROR_STREAM_CAPTURE_IMPLICIT => Ok(true),
            r => {
                cu_check(r, "cuStreamIsCapturing")?;
                Ok(status != cu::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
            }
        }
    }

    unsafe fn gemm_strided_batched(&self, g: &GemmArgs) -> Result<()> {
        // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
        unsafe {
            g.check()?;
            if g.m == 0 || g.n == 0 {
                return Ok(());
            }
            let h = self.lock()?;
            let (a32, b32) = (g.alpha as f32, g.beta as f32);
            let (alpha, beta): (*const c_void, *const c_void) = if g.compute == ComputeType::F64 {
                (&g.alpha as *const f64 as *const c_void, &g.beta as *const f64 as *const c_void)
            } else {
                (&a32 as *const f32 as *const c_void, &b32 as *const f32 as *const c_void)
            };
            let compute = cublas_compute(g.compute);
            cb_check(
                cb::cublasGemmStridedBatchedEx_64(
                    h.cublas,
                    op(g.transa),
                    op(g.transb),
                    g.m as i64,
                    g.n as i64,
                    g.k as i64,
                    alpha,
                    g.a.addr as *const c_void,
                    cublas_type(g.a.dtype),
                    g.a.ld as i64,
                    g.a.stride as i64,
                    g.b.addr as *const c_void,
                    cublas_type(g.b.dtype),
                    g.b.ld as i64,
                    g.b.stride as i64,
                    beta,
                    g.c.addr as *mut c_void,
                    cublas_type(g.c.dtype),
                    g.c.ld as i64,
                    g.c.stride as i64,
                    g.batch as i64,
                    compute,
                    cb::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                ),
                "cublasGemmStridedBatchedEx",
            )
        }
    }

    /// `cublasGemmGroupedBatchedEx_64` (cuBLAS 12.5+) where every group shares one type
    /// combination it supports — (f32, f32, f32) with `CUBLAS_COMPUTE_32F` or
    /// `_FAST_TF32`, (f16|bf16 in and out) with `CUBLAS_COMPUTE_32F`, (f64) with
    /// `CUBLAS_COMPUTE_64F`; otherwise (e.g. bf16 in with f32 out, or the bf16 fast mode) the
    /// groups run as back-to-back strided-batched GEMMs on the same stream.
    ///
    /// Before cuBLAS 12.5 (`cublasGetVersion < 120500`, the routine does not exist) every call
    /// takes the fallback. The routine takes device arrays of device pointers. They live in a per-executor buffer of
    /// `3 x capacity` pointers, grown (after a stream synchronisation, so no in-flight call reads
    /// the old one) only when a call has more problems than any before (refused while the stream
    /// is captured into a CUDA graph: run the op once before capturing); a small NVRTC kernel
    /// fills them on the stream, one launch per group, so a call allocates nothing once the
    /// buffer is large enough, never synchronises the host then, and can be captured in a graph.
    /// Stream-ordering makes reuse safe on one stream; after switching streams with
    /// `set_stream`, order the old stream's work before the new one's (as with cuBLAS's own
    /// workspace).
    unsafe fn gemm_grouped(&self, groups: &[GemmArgs]) -> Result<()> {
        // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
        unsafe {
            for g in groups {
                g.check()?;
            }
            let live: Vec<&GemmArgs> = groups.iter().filter(|g| g.m > 0 && g.n > 0).collect();
            if live.is_empty() {
                return Ok(());
            }
            let g0 = live[0];
            let uniform = live.iter().all(|g| {
                g.a.dtype == g0.a.dtype && g.b.dtype == g0.b.dtype && g.c.dtype == g0.c.dtype && g.compute == g0.compute
            });
            use DType::*;
            let supported = matches!(
                (g0.compute, g0.a.dtype, g0.b.dtype, g0.c.dtype),
                (ComputeType::F32 | ComputeType::F32FastTf32, F32, F32, F32)
                    | (ComputeType::F32, F16, F16, F16)
                    | (ComputeType::F32, BF16, BF16, BF16)
                    | (ComputeType::F64, F64, F64, F64)
            );
            let grouped_available = self.h.lock().map(|h| h.cublas_version >= 120500).unwrap_or(false);
            if !uniform || !supported || live.len() == 1 || !grouped_available {
                for g in live {
                    self.gemm_strided_batched(g)?;
                }
                return Ok(());
            }
            let total = live.iter().try_fold(0usize, |t, g| t.checked_add(g.batch));
            let total = total.ok_or_else(|| Error::overflow("batch", "gemm_grouped's total batch"))?;
            let mut h = self.lock()?;
            let stream = h.stream;
            let capturing = || {
                let mut status = cu::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
                match cu::cuStreamIsCapturing(stream, &mut status) {
                    cu::CUresult::CUDA_ERROR_STREAM_CAPTURE_IMPLICIT => Ok(true),
                    r => {
                        cu_check(r, "cuStreamIsCapturing")?;
                        Ok(status != cu::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
                    }
                }
            };
            if let PtrBuffer::Grow { capacity } = ptr_buffer(total, h.ptrs.map(|(_, cap)| cap), capturing)? {
                if let Some((old, _)) = h.ptrs.take() {
                    cu_check(cu::cuStreamSynchronize(h.stream), "cuStreamSynchronize")?;
                    cu::cuMemFree_v2(old);
                }
                let mut p = 0;
                if cu::cuMemAlloc_v2(&mut p, 3 * capacity * 8) != cu::CUresult::CUDA_SUCCESS {
                    return Err(Error::AllocationFailed { bytes: 3 * capacity * 8 });
                }
                h.ptrs = Some((p, capacity));
            }
            let (base, cap) = h.ptrs.unwrap();
            let (pa, pb, pc) = (base, base + (cap * 8) as u64, base + (2 * cap * 8) as u64);
            let mut off = 0usize;
            for g in &live {
                launch::fill_ptrs(
                    &mut *h,
                    &Limits::CUDA,
                    g.batch,
                    &g.a,
                    &g.b,
                    &g.c,
                    pa + (off * 8) as u64,
                    pb + (off * 8) as u64,
                    pc + (off * 8) as u64,
                )?;
                off += g.batch;
            }
            // Host arrays, one entry per group (read by cuBLAS during the call).
            let ta: Vec<cb::cublasOperation_t> = live.iter().map(|g| op(g.transa)).collect();
            let tb: Vec<cb::cublasOperation_t> = live.iter().map(|g| op(g.transb)).collect();
            let dims = |f: &dyn Fn(&GemmArgs) -> usize| -> Vec<i64> { live.iter().map(|g| f(g) as i64).collect() };
            let (mm, nn, kk) = (dims(&|g| g.m), dims(&|g| g.n), dims(&|g| g.k));
            let (lda, ldb, ldc, size) = (dims(&|g| g.a.ld), dims(&|g| g.b.ld), dims(&|g| g.c.ld), dims(&|g| g.batch));
            let (al64, be64): (Vec<f64>, Vec<f64>) =
                (live.iter().map(|g| g.alpha).collect(), live.iter().map(|g| g.beta).collect());
            let (al32, be32): (Vec<f32>, Vec<f32>) =
                (al64.iter().map(|&x| x as f32).collect(), be64.iter().map(|&x| x as f32).collect());
            let (alpha, beta): (*const c_void, *const c_void) = if g0.compute == ComputeType::F64 {
                (al64.as_ptr() as *const c_void, be64.as_ptr() as *const c_void)
            } else {
                (al32.as_ptr() as *const c_void, be32.as_ptr() as *const c_void)
            };
            cb_check(
                cb::cublasGemmGroupedBatchedEx_64(
                    h.cublas,
                    ta.as_ptr(),
                    tb.as_ptr(),
                    mm.as_ptr(),
                    nn.as_ptr(),
                    kk.as_ptr(),
                    alpha,
                    pa as *const *const c_void,
                    cublas_type(g0.a.dtype),
                    lda.as_ptr(),
                    pb as *const *const c_void,
                    cublas_type(g0.b.dtype),
                    ldb.as_ptr(),
                    beta,
                    pc as *const *mut c_void,
                    cublas_type(g0.c.dtype),
                    ldc.as_ptr(),
                    live.len() as i64,
                    size.as_ptr(),
                    cublas_compute(g0.compute),
                ),
                "cublasGemmGroupedBatchedEx",
            )
        }
    }

    unsafe fn axpby(&self, a: &AxpbyArgs) -> Result<()> {
        a.check()?;
        // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
        unsafe {
            if a.rows == 0 || a.cols == 0 || a.batch == 0 {
                return Ok(());
            }
            launch::axpby(&mut *self.lock()?, &Limits::CUDA, a)
        }
    }

    unsafe fn dgmm(&self, d: &DgmmArgs) -> Result<()> {
        // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
        unsafe {
            d.check()?;
            if d.m == 0 || d.n == 0 || d.batch == 0 {
                return Ok(());
            }
            launch::dgmm(&mut *self.lock()?, &Limits::CUDA, d)
        }
    }

    fn svd_unit_workspace(&self, shape: &SvdUnitShape) -> Result<usize> {
        shape.check()?;
        let h = self.lock()?;
        // SAFETY: size queries with null data pointers, as cuSOLVER allows.
        unsafe { unit_work(&h, shape).map(|w| w.device) }
    }

    /// One lane per stream of the pool.
    fn svd_max_lanes(&self) -> usize {
        SVD_STREAMS
    }

    unsafe fn svd_lanes(&self, schedule: &LaneSchedule) -> Result<()> {
        schedule.check(self)?;
        // SAFETY: this function's contract: the calls describe valid memory of this context's device.
        unsafe { self.run_lanes(schedule) }
    }

    unsafe fn svd_diagnostics(&self, schedule: &LaneSchedule) -> Result<Vec<UnitDiagnostics>> {
        schedule.check_lanes(self.svd_max_lanes())?;
        // SAFETY: this function's contract: the schedule is the one that ran last, its host
        // values still live.
        unsafe { self.read_diagnostics(schedule) }
    }

    fn last_svd_report(&self) -> Option<SvdReport> {
        self.h.lock().ok().and_then(|h| h.report)
    }

    fn set_svd_report(&self, report: Option<SvdReport>) {
        self.h.lock().unwrap_or_else(|e| e.into_inner()).report = report;
    }

    unsafe fn svd_sign_fix(&self, s: &SignFixArgs) -> Result<()> {
        s.check()?;
        // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
        unsafe {
            if s.count == 0 || s.batch == 0 {
                return Ok(());
            }
            launch::sign_fix(&mut *self.lock()?, &Limits::CUDA, s)
        }
    }

    unsafe fn sum_squares(&self, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> Result<Vec<f64>> {
        // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
        unsafe {
            Ok(self
                .per_matrix_reduce::<f64>("osft_sum_squares", rows, cols, batch, x)?
                .into_iter()
                .map(f64::from_ne_bytes)
                .collect())
        }
    }

    unsafe fn count_nonfinite(&self, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> Result<Vec<u64>> {
        // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
        unsafe {
            Ok(self
                .per_matrix_reduce::<u64>("osft_count_nonfinite", rows, cols, batch, x)?
                .into_iter()
                .map(u64::from_ne_bytes)
                .collect())
        }
    }

    unsafe fn add_diagonal(&self, n: usize, a: &Strided, batch: usize, alpha: f64) -> Result<()> {
        check_add_diagonal(n, a, batch)?;
        // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
        unsafe {
            if n == 0 || batch == 0 {
                return Ok(());
            }
            launch::add_diagonal(&mut *self.lock()?, &Limits::CUDA, n, a, batch, alpha)
        }
    }

    unsafe fn cosine_sum(&self, a: &Vectors, b: &Vectors, count: usize) -> Result<f64> {
        check_cosine(a, b)?;
        // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
        unsafe {
            if count == 0 {
                return Ok(0.0);
            }
            let out = self.alloc(count * 8)?;
            launch::cosine(&mut *self.lock()?, &Limits::CUDA, a, b, count, out.addr)?;
            let mut bytes = vec![0u8; count * 8];
            self.read_to_host(out.addr, &mut bytes)?;
            Ok(bytes.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().unwrap())).sum())
        }
    }
}

/// What `gemm_grouped` does with its device pointer buffer (three arrays of `capacity` pointers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PtrBuffer {
    /// The buffer holds the call's pointers: use it (allocates nothing, so capture-safe).
    Reuse,
    /// Synchronise, free the old buffer and allocate one of `capacity` pointers per array.
    Grow { capacity: usize },
}

/// The pointer-buffer decision for a call of `needed` problems, given the buffer's `current`
/// capacity (`None`: none yet). Growing synchronises and allocates, both illegal while the
/// stream is captured into a CUDA graph: then it is refused, saying how to avoid it. `capturing`
/// is asked only when the buffer must grow. Capacities are powers of two, at least 256, so a
/// sequence of growing calls reallocates O(log n) times.
fn ptr_buffer(needed: usize, current: Option<usize>, capturing: impl FnOnce() -> Result<bool>) -> Result<PtrBuffer> {
    if current.is_some_and(|cap| cap >= needed) {
        return Ok(PtrBuffer::Reuse);
    }
    if capturing()? {
        return Err(Error::InvalidArgument(format!(
            "gemm_grouped would have to grow its pointer buffer to {needed} problems, but the stream is being \
             captured into a CUDA graph, where nothing may allocate: run the op once before capturing"
        )));
    }
    let capacity = needed.checked_next_power_of_two().map(|c| c.max(256)).filter(|c| c.checked_mul(24).is_some());
    let capacity =
        capacity.ok_or_else(|| Error::overflow("batch", format!("a pointer buffer for {needed} problems")))?;
    Ok(PtrBuffer::Grow { capacity })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> Result<bool> {
        panic!("the capture state is asked only when the buffer must grow")
    }

    #[test]
    fn a_buffer_large_enough_is_reused_without_asking_about_capture() {
        for (needed, cap) in [(1, 256), (256, 256), (300, 512), (0, 256)] {
            assert_eq!(ptr_buffer(needed, Some(cap), never).unwrap(), PtrBuffer::Reuse, "{needed} in {cap}");
        }
    }

    #[test]
    fn a_missing_or_short_buffer_grows_to_a_power_of_two_of_at_least_256_when_not_capturing() {
        let grow = |needed, current| ptr_buffer(needed, current, || Ok(false)).unwrap();
        assert_eq!(grow(1, None), PtrBuffer::Grow { capacity: 256 });
        assert_eq!(grow(256, None), PtrBuffer::Grow { capacity: 256 });
        assert_eq!(grow(257, Some(256)), PtrBuffer::Grow { capacity: 512 });
        assert_eq!(grow(5000, Some(4096)), PtrBuffer::Grow { capacity: 8192 });
    }

    #[test]
    fn growing_while_capturing_is_refused_with_how_to_avoid_it() {
        for current in [None, Some(256)] {
            let e = ptr_buffer(1000, current, || Ok(true)).unwrap_err();
            assert_eq!(e.status(), crate::Status::InvalidArgument, "{e}");
            let msg = e.to_string();
            assert!(msg.contains("1000 problems") && msg.contains("captured into a CUDA graph"), "{msg}");
            assert!(msg.contains("run the op once before capturing"), "{msg}");
        }
        // A failed capture query is passed on, nothing grown.
        let e = ptr_buffer(1, None, || Err(Error::Internal("query failed".into()))).unwrap_err();
        assert_eq!(e, Error::Internal("query failed".into()));
    }

    #[test]
    fn a_pointer_count_whose_buffer_would_overflow_is_refused() {
        for needed in [usize::MAX, usize::MAX / 2 + 2, usize::MAX / 16] {
            let e = ptr_buffer(needed, Some(256), || Ok(false)).unwrap_err();
            assert_eq!(e.status(), crate::Status::Overflow, "{needed}: {e}");
        }
    }
}
