//! The CUDA executor: the primitives on device memory, on the caller's stream.
//!
//! Thin argument marshalling onto cuBLAS (`cublasGemmStridedBatchedEx_64`), cuSOLVER
//! (`gesvdjBatched` for matrices up to 32 x 32, `Xgesvd` otherwise) and the NVRTC kernels of
//! `kernels.cu` (strided copy/cast, dgmm, sign fix, reductions). All libraries are loaded at run
//! time through cudarc's `sys` layer: the crate builds and links without a CUDA toolkit, and a
//! missing driver, library or device is `Error::BackendUnavailable`, never a panic (presence is
//! checked first, and construction runs behind `catch_unwind`).
//!
//! Stream semantics: every primitive is enqueued on the context's stream (the caller's, set with
//! `set_stream`; the legacy default stream until then). GEMM, copy/cast and dgmm never synchronise
//! the host nor allocate, so the projection path can be captured in a CUDA graph. SVD,
//! reductions and `read_to_host` synchronise (they return results or convergence flags to the
//! host). cuBLAS runs in its default math mode: exact f32, no TF32.
//!
//! CUDA 12 libraries: cudarc's loader also finds `libcublas.so.12`, `libcusolver.so.11`-era names
//! are not searched; the functions used here have the same signatures in CUDA 12.x and 13.x.
//! Untested on 12.x.

#![allow(clippy::type_complexity)] // kernel argument tuples mirror the kernels' signatures

pub mod nvrtc;

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::Mutex;

use cudarc::cublas::sys as cb;
use cudarc::cusolver::sys as cs;
use cudarc::driver::sys as cu;

use super::*;

fn cu_check(r: cu::CUresult, what: &str) -> Result<()> {
    if r == cu::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::BackendUnavailable(format!("{what} failed: {r:?}")))
    }
}
fn cb_check(r: cb::cublasStatus_t, what: &str) -> Result<()> {
    if r == cb::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(Error::Internal(format!("{what} failed: {r:?}")))
    }
}
fn cs_check(r: cs::cusolverStatus_t, what: &str) -> Result<()> {
    if r == cs::cusolverStatus_t::CUSOLVER_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(Error::Internal(format!("{what} failed: {r:?}")))
    }
}

fn cublas_type(d: DType) -> cb::cudaDataType {
    match d {
        DType::F32 => cb::cudaDataType::CUDA_R_32F,
        DType::F64 => cb::cudaDataType::CUDA_R_64F,
        DType::F16 => cb::cudaDataType::CUDA_R_16F,
        DType::BF16 => cb::cudaDataType::CUDA_R_16BF,
    }
}
fn solver_type(d: DType) -> cs::cudaDataType {
    if d == DType::F64 {
        cs::cudaDataType::CUDA_R_64F
    } else {
        cs::cudaDataType::CUDA_R_32F
    }
}
fn op(o: Op) -> cb::cublasOperation_t {
    match o {
        Op::N => cb::cublasOperation_t::CUBLAS_OP_N,
        Op::T => cb::cublasOperation_t::CUBLAS_OP_T,
    }
}
fn sfx(d: DType) -> &'static str {
    d.name()
}

/// Raw handles. Used only with `lock` held and the context current.
struct Handles {
    ctx: cu::CUcontext,
    dev: cu::CUdevice,
    stream: cu::CUstream,
    cublas: cb::cublasHandle_t,
    solver: cs::cusolverDnHandle_t,
    params: cs::cusolverDnParams_t,
    gesvdj: cs::gesvdjInfo_t,
    module: cu::CUmodule,
    funcs: HashMap<String, cu::CUfunction>,
}

/// The CUDA executor for one device.
pub struct CudaExecutor {
    ordinal: u32,
    h: Mutex<Handles>,
}

// SAFETY: every use of the raw handles goes through the mutex, after making the context current
// on the calling thread; CUDA contexts and library handles may be used from any thread that way.
unsafe impl Send for CudaExecutor {}
unsafe impl Sync for CudaExecutor {}

/// Device memory freed on drop.
struct DeviceAlloc {
    ptr: cu::CUdeviceptr,
    ctx: cu::CUcontext,
}
// SAFETY: a device address and the context it belongs to; freeing makes that context current.
unsafe impl Send for DeviceAlloc {}
unsafe impl Sync for DeviceAlloc {}
impl Drop for DeviceAlloc {
    fn drop(&mut self) {
        // SAFETY: allocated by cuMemAlloc in `ctx`, freed once.
        unsafe {
            cu::cuCtxSetCurrent(self.ctx);
            cu::cuMemFree_v2(self.ptr);
        }
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into())
}

impl CudaExecutor {
    /// Open device `ordinal`: checks for the driver, a device, cuBLAS, cuSOLVER and NVRTC, then
    /// compiles the kernels for the device's architecture.
    pub fn new(ordinal: u32) -> Result<Self> {
        std::panic::catch_unwind(|| Self::open(ordinal))
            .unwrap_or_else(|p| Err(Error::BackendUnavailable(format!("CUDA initialisation failed: {}", panic_message(p)))))
    }

    fn open(ordinal: u32) -> Result<Self> {
        // SAFETY: presence checks only try to load libraries.
        if !unsafe { cu::is_culib_present() } {
            return Err(Error::BackendUnavailable("no NVIDIA driver: the CUDA driver library (libcuda.so.1) was not found".into()));
        }
        // SAFETY (block): CUDA driver/library C APIs called as documented, out-parameters local.
        unsafe {
            let r = cu::cuInit(0);
            if r != cu::CUresult::CUDA_SUCCESS {
                return Err(Error::BackendUnavailable(format!("cuInit failed ({r:?}): no usable NVIDIA GPU")));
            }
            let mut count = 0;
            cu_check(cu::cuDeviceGetCount(&mut count), "cuDeviceGetCount")?;
            if count <= 0 {
                return Err(Error::BackendUnavailable("no CUDA device".into()));
            }
            if ordinal as i32 >= count {
                return Err(Error::BackendUnavailable(format!("CUDA device {ordinal} requested, {count} present")));
            }
            for (present, lib) in [
                (cb::is_culib_present(), "cuBLAS (libcublas.so)"),
                (cs::is_culib_present(), "cuSOLVER (libcusolver.so)"),
                (nvrtc::available(), "NVRTC (libnvrtc.so)"),
            ] {
                if !present {
                    return Err(Error::BackendUnavailable(format!(
                        "{lib} not found: put the CUDA libraries (a toolkit's lib64, or PyTorch's site-packages/nvidia/*/lib) on LD_LIBRARY_PATH"
                    )));
                }
            }
            let mut dev = 0;
            cu_check(cu::cuDeviceGet(&mut dev, ordinal as i32), "cuDeviceGet")?;
            let mut ctx = std::ptr::null_mut();
            cu_check(cu::cuDevicePrimaryCtxRetain(&mut ctx, dev), "cuDevicePrimaryCtxRetain")?;
            cu_check(cu::cuCtxSetCurrent(ctx), "cuCtxSetCurrent")?;
            let (mut major, mut minor) = (0, 0);
            cu_check(cu::cuDeviceGetAttribute(&mut major, cu::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute")?;
            cu_check(cu::cuDeviceGetAttribute(&mut minor, cu::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute")?;
            let ptx = nvrtc::compile_ptx(&format!("{major}{minor}"))?;
            let mut module = std::ptr::null_mut();
            cu_check(cu::cuModuleLoadData(&mut module, ptx.as_ptr() as *const c_void), "cuModuleLoadData (is the NVRTC newer than the driver?)")?;
            let mut funcs = HashMap::new();
            for name in nvrtc::kernel_names() {
                let c = CString::new(name.clone()).unwrap();
                let mut f = std::ptr::null_mut();
                cu_check(cu::cuModuleGetFunction(&mut f, module, c.as_ptr()), &format!("cuModuleGetFunction({name})"))?;
                funcs.insert(name, f);
            }
            let mut cublas = std::ptr::null_mut();
            cb_check(cb::cublasCreate_v2(&mut cublas), "cublasCreate")?;
            cb_check(cb::cublasSetMathMode(cublas, cb::cublasMath_t::CUBLAS_DEFAULT_MATH), "cublasSetMathMode")?;
            let mut solver = std::ptr::null_mut();
            cs_check(cs::cusolverDnCreate(&mut solver), "cusolverDnCreate")?;
            let mut params = std::ptr::null_mut();
            cs_check(cs::cusolverDnCreateParams(&mut params), "cusolverDnCreateParams")?;
            let mut gesvdj = std::ptr::null_mut();
            cs_check(cs::cusolverDnCreateGesvdjInfo(&mut gesvdj), "cusolverDnCreateGesvdjInfo")?;
            let h = Handles { ctx, dev, stream: std::ptr::null_mut(), cublas, solver, params, gesvdj, module, funcs };
            Ok(CudaExecutor { ordinal, h: Mutex::new(h) })
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Handles>> {
        let h = self.h.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the context is alive for the executor's lifetime.
        cu_check(unsafe { cu::cuCtxSetCurrent(h.ctx) }, "cuCtxSetCurrent")?;
        Ok(h)
    }
}

impl Drop for CudaExecutor {
    fn drop(&mut self) {
        let h = self.h.get_mut().unwrap_or_else(|e| e.into_inner());
        // SAFETY: handles created in `open`, destroyed once.
        unsafe {
            cu::cuCtxSetCurrent(h.ctx);
            cs::cusolverDnDestroyGesvdjInfo(h.gesvdj);
            cs::cusolverDnDestroyParams(h.params);
            cs::cusolverDnDestroy(h.solver);
            cb::cublasDestroy_v2(h.cublas);
            cu::cuModuleUnload(h.module);
            cu::cuDevicePrimaryCtxRelease_v2(h.dev);
        }
    }
}

// `params` points at argument values that the caller keeps alive until cuLaunchKernel returns
// (it copies them).
unsafe fn launch_impl(h: &Handles, f: cu::CUfunction, grid: (u32, u32), block: u32, params: &mut [*mut c_void]) -> Result<()> {
    cu_check(
        cu::cuLaunchKernel(f, grid.0.max(1), grid.1.max(1), 1, block, 1, 1, 0, h.stream, params.as_mut_ptr(), std::ptr::null_mut()),
        "cuLaunchKernel",
    )
}

/// Blocks for a grid-stride loop over `n` items.
fn blocks(n: usize) -> u32 {
    n.div_ceil(256).clamp(1, 8192) as u32
}

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
        Ok(Buffer::new(ptr as usize, bytes, Box::new(DeviceAlloc { ptr, ctx: h.ctx })))
    }
    unsafe fn read_to_host(&self, src: Addr, dst: &mut [u8]) -> Result<()> {
        let h = self.lock()?;
        cu_check(cu::cuMemcpyDtoHAsync_v2(dst.as_mut_ptr() as *mut c_void, src as cu::CUdeviceptr, dst.len(), h.stream), "cuMemcpyDtoHAsync")?;
        cu_check(cu::cuStreamSynchronize(h.stream), "cuStreamSynchronize")
    }
    unsafe fn write_from_host(&self, src: &[u8], dst: Addr) -> Result<()> {
        let h = self.lock()?;
        cu_check(cu::cuMemcpyHtoDAsync_v2(dst as cu::CUdeviceptr, src.as_ptr() as *const c_void, src.len(), h.stream), "cuMemcpyHtoDAsync")?;
        cu_check(cu::cuStreamSynchronize(h.stream), "cuStreamSynchronize")
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

    unsafe fn gemm_strided_batched(&self, g: &GemmArgs) -> Result<()> {
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
        let compute = if g.compute == ComputeType::F64 { cb::cublasComputeType_t::CUBLAS_COMPUTE_64F } else { cb::cublasComputeType_t::CUBLAS_COMPUTE_32F };
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

    unsafe fn axpby(&self, a: &AxpbyArgs) -> Result<()> {
        if a.rows == 0 || a.cols == 0 || a.batch == 0 {
            return Ok(());
        }
        let h = self.lock()?;
        // Consecutive threads walk the destination's unit (smallest) stride.
        let (mut rows, mut cols, mut s, mut d) = (a.rows, a.cols, a.src, a.dst);
        if d.row_stride > d.col_stride {
            std::mem::swap(&mut rows, &mut cols);
            std::mem::swap(&mut s.row_stride, &mut s.col_stride);
            std::mem::swap(&mut d.row_stride, &mut d.col_stride);
        }
        let name = format!("osft_axpby_{}_{}", sfx(s.dtype), sfx(d.dtype));
        let args: (i64, i64, i64, f64, u64, i64, i64, i64, f64, u64, i64, i64, i64) = (
            rows as i64, cols as i64, a.batch as i64, a.alpha, s.addr as u64, s.row_stride as i64, s.col_stride as i64, s.batch_stride as i64,
            a.beta, d.addr as u64, d.row_stride as i64, d.col_stride as i64, d.batch_stride as i64,
        );
        let mut p: [*mut c_void; 13] = [
            &args.0 as *const _ as *mut c_void, &args.1 as *const _ as *mut c_void, &args.2 as *const _ as *mut c_void,
            &args.3 as *const _ as *mut c_void, &args.4 as *const _ as *mut c_void, &args.5 as *const _ as *mut c_void,
            &args.6 as *const _ as *mut c_void, &args.7 as *const _ as *mut c_void, &args.8 as *const _ as *mut c_void,
            &args.9 as *const _ as *mut c_void, &args.10 as *const _ as *mut c_void, &args.11 as *const _ as *mut c_void,
            &args.12 as *const _ as *mut c_void,
        ];
        launch_named(&h, &name, (blocks(rows * cols * a.batch), 1), &mut p)
    }

    unsafe fn dgmm(&self, d: &DgmmArgs) -> Result<()> {
        d.check()?;
        if d.m == 0 || d.n == 0 {
            return Ok(());
        }
        let h = self.lock()?;
        let args: (i32, i64, i64, u64, i64, i64, u64, i64, i64, u64, i64, i64, i64) = (
            d.left as i32, d.m as i64, d.n as i64, d.a.addr as u64, d.a.ld as i64, d.a.stride as i64, d.x as u64, d.incx as i64,
            d.stride_x as i64, d.c.addr as u64, d.c.ld as i64, d.c.stride as i64, d.batch as i64,
        );
        let mut p: [*mut c_void; 13] = [
            &args.0 as *const _ as *mut c_void, &args.1 as *const _ as *mut c_void, &args.2 as *const _ as *mut c_void,
            &args.3 as *const _ as *mut c_void, &args.4 as *const _ as *mut c_void, &args.5 as *const _ as *mut c_void,
            &args.6 as *const _ as *mut c_void, &args.7 as *const _ as *mut c_void, &args.8 as *const _ as *mut c_void,
            &args.9 as *const _ as *mut c_void, &args.10 as *const _ as *mut c_void, &args.11 as *const _ as *mut c_void,
            &args.12 as *const _ as *mut c_void,
        ];
        launch_named(&h, &format!("osft_dgmm_{}", sfx(d.a.dtype)), (blocks(d.m * d.n * d.batch), 1), &mut p)
    }

    fn gesvd_buffer_size(&self, m: usize, n: usize, dtype: DType, batch: usize) -> Result<usize> {
        if m < n || !dtype.is_compute() {
            return Err(Error::precondition("gesvd", format!("gesvd needs m >= n and f32/f64, got {m} x {n} {}", dtype.name())));
        }
        let h = self.lock()?;
        // SAFETY: size queries with null data pointers, as cuSOLVER allows.
        unsafe { gesvd_layout(&h, m, n, dtype, batch).map(|l| l.total) }
    }

    unsafe fn gesvd_strided_batched(&self, g: &GesvdArgs, work: Addr, work_bytes: usize) -> Result<()> {
        g.check()?;
        let h = self.lock()?;
        let l = gesvd_layout(&h, g.m, g.n, g.a.dtype, g.batch)?;
        if work_bytes < l.total {
            return Err(Error::WorkspaceTooSmall { needed: l.total, given: work_bytes });
        }
        let info = work + l.info;
        let (m, n, sz) = (g.m, g.n, g.a.dtype.size());
        if l.jacobi {
            // gesvdjBatched writes full U (m x m) and V (n x n); then thin U and VT = V^T by copy.
            let (uf, vf) = (work + l.u_full, work + l.v_full);
            let lwork = l.lwork as i32;
            let dev = work + l.dev;
            macro_rules! call {
                ($f:ident, $t:ty) => {
                    cs::$f(
                        h.solver, cs::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR, m as i32, n as i32,
                        g.a.addr as *mut $t, g.a.ld as i32, g.s as *mut $t, uf as *mut $t, m as i32, vf as *mut $t, n as i32,
                        dev as *mut $t, lwork, info as *mut i32, h.gesvdj, g.batch as i32,
                    )
                };
            }
            // gesvdjBatched needs packed batches (stride lda * n, stride n for S).
            if g.a.stride != g.a.ld * n || g.stride_s != n {
                return Err(Error::precondition("gesvd", "gesvdjBatched needs packed A and S batches"));
            }
            let r = if g.a.dtype == DType::F64 { call!(cusolverDnDgesvdjBatched, f64) } else { call!(cusolverDnSgesvdjBatched, f32) };
            cs_check(r, "gesvdjBatched")?;
            drop(h);
            let dt = g.a.dtype;
            let s2 = |addr, rs, cs, bs| Strided2d { addr, dtype: dt, row_stride: rs, col_stride: cs, batch_stride: bs };
            self.axpby(&AxpbyArgs { rows: m, cols: n, batch: g.batch, alpha: 1.0, src: s2(uf, 1, m, m * m), beta: 0.0, dst: s2(g.u.addr, 1, g.u.ld, g.u.stride) })?;
            self.axpby(&AxpbyArgs { rows: n, cols: n, batch: g.batch, alpha: 1.0, src: s2(vf, n, 1, n * n), beta: 0.0, dst: s2(g.vt.addr, 1, g.vt.ld, g.vt.stride) })?;
        } else {
            let dt = solver_type(g.a.dtype);
            let mut host = vec![0u8; l.host_bytes.max(1)];
            for b in 0..g.batch {
                cs_check(
                    cs::cusolverDnXgesvd(
                        h.solver, h.params, b'S' as i8, b'S' as i8, m as i64, n as i64,
                        dt, (g.a.addr + b * g.a.stride * sz) as *mut c_void, g.a.ld as i64,
                        dt, (g.s + b * g.stride_s * sz) as *mut c_void,
                        dt, (g.u.addr + b * g.u.stride * sz) as *mut c_void, g.u.ld as i64,
                        dt, (g.vt.addr + b * g.vt.stride * sz) as *mut c_void, g.vt.ld as i64,
                        dt, (work + l.dev) as *mut c_void, l.lwork, host.as_mut_ptr() as *mut c_void, l.host_bytes,
                        (info + b * 4) as *mut i32,
                    ),
                    "cusolverDnXgesvd",
                )?;
            }
            drop(h);
        }
        // Convergence: one int per matrix (0 ok, > 0 not converged, < 0 bad argument).
        let mut bytes = vec![0u8; g.batch * 4];
        self.read_to_host(info, &mut bytes)?;
        for (i, c) in bytes.chunks_exact(4).enumerate() {
            let v = i32::from_ne_bytes(c.try_into().unwrap());
            if v > 0 {
                return Err(Error::NotConverged { index: i });
            }
            if v < 0 {
                return Err(Error::precondition("gesvd", format!("cuSOLVER reports parameter {} invalid for matrix {i}", -v)));
            }
        }
        Ok(())
    }

    unsafe fn svd_sign_fix(&self, s: &SignFixArgs) -> Result<()> {
        if s.left.dtype != s.right.dtype || !s.left.dtype.is_compute() {
            return Err(Error::precondition("svd_sign_fix", "left and right vectors must share an f32/f64 type"));
        }
        if s.count == 0 || s.batch == 0 {
            return Ok(());
        }
        let h = self.lock()?;
        let (l, r) = (s.left, s.right);
        let args: (i64, u64, i64, i64, i64, i64, u64, i64, i64, i64) = (
            l.len as i64, l.addr as u64, l.elem_stride as i64, l.vec_stride as i64, l.batch_stride as i64,
            r.len as i64, r.addr as u64, r.elem_stride as i64, r.vec_stride as i64, r.batch_stride as i64,
        );
        let mut p: [*mut c_void; 10] = [
            &args.0 as *const _ as *mut c_void, &args.1 as *const _ as *mut c_void, &args.2 as *const _ as *mut c_void,
            &args.3 as *const _ as *mut c_void, &args.4 as *const _ as *mut c_void, &args.5 as *const _ as *mut c_void,
            &args.6 as *const _ as *mut c_void, &args.7 as *const _ as *mut c_void, &args.8 as *const _ as *mut c_void,
            &args.9 as *const _ as *mut c_void,
        ];
        let name = format!("osft_sign_fix_{}", sfx(l.dtype));
        for b0 in (0..s.batch).step_by(65535) {
            // Batches beyond gridDim.y's limit go in slices.
            let nb = (s.batch - b0).min(65535);
            let off = (b0 * l.batch_stride * l.dtype.size()) as u64;
            let roff = (b0 * r.batch_stride * r.dtype.size()) as u64;
            let (la, ra) = (args.1 + off, args.6 + roff);
            p[1] = &la as *const _ as *mut c_void;
            p[6] = &ra as *const _ as *mut c_void;
            launch_named(&h, &name, (s.count as u32, nb as u32), &mut p)?;
        }
        Ok(())
    }

    unsafe fn sum_squares(&self, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> Result<Vec<f64>> {
        Ok(self.per_matrix_reduce("osft_sum_squares", rows, cols, batch, x)?.into_iter().map(f64::from_ne_bytes).collect())
    }

    unsafe fn count_nonfinite(&self, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> Result<Vec<u64>> {
        Ok(self.per_matrix_reduce("osft_count_nonfinite", rows, cols, batch, x)?.into_iter().map(u64::from_ne_bytes).collect())
    }

    unsafe fn add_diagonal(&self, n: usize, a: &Strided, batch: usize, alpha: f64) -> Result<()> {
        if n == 0 || batch == 0 {
            return Ok(());
        }
        let h = self.lock()?;
        let args: (i64, u64, i64, i64, i64, f64) = (n as i64, a.addr as u64, a.ld as i64, a.stride as i64, batch as i64, alpha);
        let mut p: [*mut c_void; 6] = [
            &args.0 as *const _ as *mut c_void, &args.1 as *const _ as *mut c_void, &args.2 as *const _ as *mut c_void,
            &args.3 as *const _ as *mut c_void, &args.4 as *const _ as *mut c_void, &args.5 as *const _ as *mut c_void,
        ];
        launch_named(&h, &format!("osft_add_diagonal_{}", sfx(a.dtype)), (blocks(n * batch), 1), &mut p)
    }

    unsafe fn cosine_sum(&self, a: &Vectors, b: &Vectors, count: usize) -> Result<f64> {
        if a.len != b.len || a.dtype != b.dtype || !a.dtype.is_compute() {
            return Err(Error::precondition("cosine_sum", "vectors must have one length and one f32/f64 type"));
        }
        if count == 0 {
            return Ok(0.0);
        }
        let out = self.alloc(count * 8)?;
        {
            let h = self.lock()?;
            let args: (i64, u64, i64, i64, u64, i64, i64, u64) =
                (a.len as i64, a.addr as u64, a.elem_stride as i64, a.vec_stride as i64, b.addr as u64, b.elem_stride as i64, b.vec_stride as i64, out.addr as u64);
            let mut p: [*mut c_void; 8] = [
                &args.0 as *const _ as *mut c_void, &args.1 as *const _ as *mut c_void, &args.2 as *const _ as *mut c_void,
                &args.3 as *const _ as *mut c_void, &args.4 as *const _ as *mut c_void, &args.5 as *const _ as *mut c_void,
                &args.6 as *const _ as *mut c_void, &args.7 as *const _ as *mut c_void,
            ];
            launch_named(&h, &format!("osft_cosine_{}", sfx(a.dtype)), (count as u32, 1), &mut p)?;
        }
        let mut bytes = vec![0u8; count * 8];
        self.read_to_host(out.addr, &mut bytes)?;
        Ok(bytes.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().unwrap())).sum())
    }
}

impl CudaExecutor {
    /// Run a per-matrix reduction kernel `{kernel}_{dtype}(rows, cols, x, rs, cs, bs, out)` that
    /// accumulates one 8-byte value per matrix into a zeroed device array (grid: blocks x
    /// batch), and return the values' bytes. Synchronises.
    unsafe fn per_matrix_reduce(&self, kernel: &str, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> Result<Vec<[u8; 8]>> {
        if batch == 0 {
            return Ok(vec![]);
        }
        let out = self.alloc(batch * 8)?;
        {
            let h = self.lock()?;
            cu_check(cu::cuMemsetD8Async(out.addr as u64, 0, batch * 8, h.stream), "cuMemsetD8Async")?;
            if rows > 0 && cols > 0 {
                let name = format!("{kernel}_{}", sfx(x.dtype));
                // gridDim.y is limited to 65535: larger batches go in slices.
                for b0 in (0..batch).step_by(65535) {
                    let nb = (batch - b0).min(65535);
                    let args: (i64, i64, u64, i64, i64, i64, u64) = (
                        rows as i64, cols as i64, (x.addr + b0 * x.batch_stride * x.dtype.size()) as u64, x.row_stride as i64,
                        x.col_stride as i64, x.batch_stride as i64, (out.addr + b0 * 8) as u64,
                    );
                    let mut p: [*mut c_void; 7] = [
                        &args.0 as *const _ as *mut c_void, &args.1 as *const _ as *mut c_void, &args.2 as *const _ as *mut c_void,
                        &args.3 as *const _ as *mut c_void, &args.4 as *const _ as *mut c_void, &args.5 as *const _ as *mut c_void,
                        &args.6 as *const _ as *mut c_void,
                    ];
                    launch_named(&h, &name, (blocks(rows * cols).min(64), nb as u32), &mut p)?;
                }
            }
        }
        let mut bytes = vec![0u8; batch * 8];
        self.read_to_host(out.addr, &mut bytes)?;
        Ok(bytes.chunks_exact(8).map(|c| c.try_into().unwrap()).collect())
    }
}

unsafe fn launch_named(h: &Handles, name: &str, grid: (u32, u32), params: &mut [*mut c_void]) -> Result<()> {
    let f = *h.funcs.get(name).ok_or_else(|| Error::Internal(format!("kernel {name} missing")))?;
    launch_impl(h, f, grid, 256, params)
}

/// Workspace layout of one batched SVD call.
struct GesvdLayout {
    jacobi: bool,
    dev: usize,
    lwork: usize,
    u_full: usize,
    v_full: usize,
    info: usize,
    host_bytes: usize,
    total: usize,
}

fn align(x: usize) -> usize {
    x.div_ceil(256) * 256
}

unsafe fn gesvd_layout(h: &Handles, m: usize, n: usize, dtype: DType, batch: usize) -> Result<GesvdLayout> {
    let sz = dtype.size();
    if m <= 32 && n <= 32 {
        let mut lwork = 0i32;
        macro_rules! q {
            ($f:ident, $t:ty) => {
                cs::$f(h.solver, cs::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR, m as i32, n as i32, std::ptr::null(), m as i32, std::ptr::null(),
                    std::ptr::null(), m as i32, std::ptr::null(), n as i32, &mut lwork, h.gesvdj, batch as i32)
            };
        }
        let r = if dtype == DType::F64 { q!(cusolverDnDgesvdjBatched_bufferSize, f64) } else { q!(cusolverDnSgesvdjBatched_bufferSize, f32) };
        cs_check(r, "gesvdjBatched_bufferSize")?;
        let dev = 0;
        let u_full = align(lwork as usize * sz);
        let v_full = u_full + align(m * m * batch * sz);
        let info = v_full + align(n * n * batch * sz);
        Ok(GesvdLayout { jacobi: true, dev, lwork: lwork as usize, u_full, v_full, info, host_bytes: 0, total: info + align(batch * 4) })
    } else {
        let dt = solver_type(dtype);
        let (mut d, mut hb) = (0usize, 0usize);
        cs_check(
            cs::cusolverDnXgesvd_bufferSize(
                h.solver, h.params, b'S' as i8, b'S' as i8, m as i64, n as i64, dt, std::ptr::null(), m as i64, dt, std::ptr::null(),
                dt, std::ptr::null(), m as i64, dt, std::ptr::null(), n as i64, dt, &mut d, &mut hb,
            ),
            "cusolverDnXgesvd_bufferSize",
        )?;
        let info = align(d);
        Ok(GesvdLayout { jacobi: false, dev: 0, lwork: d, u_full: 0, v_full: 0, info, host_bytes: hb, total: info + align(batch * 4) })
    }
}
