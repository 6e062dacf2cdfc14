//! The CUDA executor: the primitives on device memory, on the caller's stream.
//!
//! Thin argument marshalling onto cuBLAS (`cublasGemmStridedBatchedEx_64`,
//! `cublasGemmGroupedBatchedEx_64`), cuSOLVER (the routine of each [`SvdAlgorithm`]) and the
//! NVRTC kernels of `kernels.cu` (strided copy/cast, dgmm, sign fix, reductions, pointer arrays).
//! All libraries are loaded at run time through cudarc's `sys` layer: the crate builds and links
//! without a CUDA toolkit, and a missing driver, library or device is
//! `Error::BackendUnavailable`, never a panic (presence is checked first, and construction runs
//! behind `catch_unwind`).
//!
//! **Streams.** Every primitive is enqueued on the context's stream (the caller's, set with
//! `set_stream`; the legacy default stream until then). GEMM, copy/cast and dgmm never
//! synchronise the host nor allocate, so the projection path can be captured in a CUDA graph.
//! SVD, reductions and `read_to_host` synchronise (they return results or convergence flags to
//! the host). Every SVD runs on a pool of [`SVD_STREAMS`] non-blocking streams created once per
//! executor, each with its own cuSOLVER handle bound to it: an event recorded on the caller's
//! stream is waited on by each pool stream (fork); the routines' calls are spread over the pool;
//! an event recorded on each pool stream is waited on by the caller's stream (join). Work the
//! caller issued before runs first, and work issued after sees the results: the caller's stream
//! order is preserved. A routine that takes one matrix per call (`Xgesvd`, `gesvdj`, `Xgesvdp`,
//! `Xgesvdr`) runs a batch's matrices concurrently, matrix `b` in workspace slice `b % lanes`;
//! a batched routine (`gesvdjBatched`, `gesvdaStridedBatched`) is one call on one pool stream.
//! **Lists of shapes** (`ops::svd::svd_list`) reach the executor as `gesvd_grouped`: all
//! groups of a wave behind ONE fork and ONE join — each group's units take the next pool streams
//! round-robin (so a list of single matrices spreads over every stream, and the matrices that
//! share a workspace slice share a stream), each group in its own workspace slice (no scratch is
//! shared across streams) — then the thin-U / `VT` copies on the caller's stream and one
//! read-back of every group's convergence flags. A strided batch is the one-group case of the
//! same path. After the join the host waits for the caller's stream before the per-matrix host
//! workspaces of the `X` routines are dropped; the flags' read-back synchronises once more.
//!
//! **Math mode.** The cuBLAS handle stays in `CUBLAS_DEFAULT_MATH`; the mode reaches each GEMM
//! as its compute type (`CUBLAS_COMPUTE_32F`, `_32F_FAST_TF32`, `_32F_FAST_16BF`; f64 data
//! `CUBLAS_COMPUTE_64F`), see [`MathMode`].
//!
//! **CUDA 12 and 13 libraries.** osft uses cudarc's CUDA 13.0 bindings (`cuda-13000`). cudarc's
//! loader tries, for each library, `lib<name>.so`, then versioned names down to
//! `lib<name>.so.13`, `.12`, `.11`, `.10`, `.9`, `.1` (and a few Windows-style names). So the
//! driver is `libcuda.so.1`; cuBLAS is `libcublas.so.13` (CUDA 13) or `libcublas.so.12` (CUDA
//! 12); cuSOLVER, whose soname runs one major behind, is `libcusolver.so.12` (CUDA 13) or
//! `libcusolver.so.11` (CUDA 12); NVRTC `libnvrtc.so.13` / `.12`. Every function called here has
//! the same C signature in CUDA 12.x and 13.x, and all exist since CUDA 11 except
//! `cublasGemmGroupedBatchedEx` (cuBLAS 12.5+: on an older cuBLAS, read with `cublasGetVersion`,
//! `gemm_grouped` takes its strided-batched fallback). Put one toolkit's libraries on the path:
//! the loader takes the first name that loads, so a CUDA 12 cuBLAS next to a CUDA 13 cuSOLVER
//! would be mixed. NVRTC must not be newer than the driver (its PTX version is refused). Only
//! CUDA 13.0 with the 580 driver is the target; CUDA 12.x is untested.
//!
//! **Device memory beyond the caller's buffers.** A context allocates its workspace (cached,
//! grown to the largest need, freed by `release_workspace`; none at all when the caller sets
//! one), small per-call arrays for reductions (`8 x batch` bytes), the `gemm_grouped` pointer
//! buffer (`3 x 8 x` the largest problem count, only if used), cached projectors (`n^2`
//! elements, only on request), and the handles (one cuBLAS, `1 + SVD_STREAMS` cuSOLVER). For an
//! SVD or a decomposition of a batch of `B` matrices `N x M` computed in a type of `c` bytes
//! (`m = max(N, M)`, `n = min(N, M)`), the workspace for a chunk of `b` matrices is
//!
//! ```text
//! ws(b) = b c (2 m n + n^2 + n)                 staged A, U, VT, S (ops::svd)
//!       + W_routine(b) + 4 b                    the routine's workspace, info flags
//! W_routine(b) = L align(lwork)                  Xgesvd        (L = min(b, SVD_STREAMS))
//!              = L align(lwork) + b c n^2        gesvdj, Xgesvdp, Xgesvdr (V scratch)
//!              = lwork c + b c (m^2 + n^2)       gesvdjBatched (full U and V)
//!              = lwork c + b c n^2               gesvdaStridedBatched
//! ```
//!
//! plus 256-byte alignment per region; `lwork` is the routine's `*_bufferSize` (cuSOLVER's
//! figure, `O(m n)` for the QR-based and polar routines). The context asks for `ws(b)` with the
//! largest `b <= B` whose `ws(b) <= 1 GiB` (`ops::svd::MAX_CHUNK_BYTES`), at least one matrix;
//! a caller workspace need only hold `ws(1)`. Chunks are factored one after another through the
//! same workspace and each chunk's factors are copied to the caller's outputs before the next
//! (`ops::svd::run`, `ops::decompose`). `svd_list` lays consecutive problems' `ws(B_i)` side by
//! side and factors each such wave with one `gesvd_grouped`; its workspace query reports the
//! largest single problem's `min(ws(B), 1 GiB)` (enough: waves of fewer problems, or one problem
//! in chunks), while a context allocating its own workspace grows it to
//! `max(largest, min(sum_i ws(B_i), 1 GiB))` to run the list as one wave. So decomposing a
//! whole model, matrix by matrix or group by group, holds at most
//! `max over its shapes of max(ws(1), min(ws(B), 1 GiB))` of workspace at once (1 GiB for a
//! list in the context's own workspace), not every intermediate. Example: the largest Llama-3.1-8B target, `14336 x 4096` in f32, needs
//! `ws(1) = 4 (2 * 14336 * 4096 + 4096^2 + 4096) ~ 537 MB` plus `Xgesvd`'s `lwork`.

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
/// The math mode reaches cuBLAS as the compute type (the handle's math mode stays
/// `CUBLAS_DEFAULT_MATH`): TF32 / bf16 tensor cores only where the `FAST` type asks for them.
fn cublas_compute(c: ComputeType) -> cb::cublasComputeType_t {
    match c {
        ComputeType::F64 => cb::cublasComputeType_t::CUBLAS_COMPUTE_64F,
        ComputeType::F32 => cb::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        ComputeType::F32FastTf32 => cb::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
        ComputeType::F32FastBf16 => cb::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF,
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

/// Streams in the pool that per-matrix SVD loops are spread over.
pub const SVD_STREAMS: usize = 4;

/// One stream of the pool with its own cuSOLVER handle (bound to it once), parameters, Jacobi
/// info and the event that joins it back to the caller's stream.
struct Lane {
    stream: cu::CUstream,
    solver: cs::cusolverDnHandle_t,
    params: cs::cusolverDnParams_t,
    gesvdj: cs::gesvdjInfo_t,
    done: cu::CUevent,
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
    /// The SVD stream pool (created once per executor) and the fork event.
    lanes: Vec<Lane>,
    fork: cu::CUevent,
    /// Device pointer arrays of `gemm_grouped`: address and capacity in pointers (per array).
    ptrs: Option<(cu::CUdeviceptr, usize)>,
    report: Option<SvdReport>,
    /// `cublasGetVersion` (e.g. 120502 for 12.5.2): `cublasGemmGroupedBatchedEx` needs 12.5+.
    cublas_version: i32,
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
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl CudaExecutor {
    /// Open device `ordinal`: checks for the driver, a device, cuBLAS, cuSOLVER and NVRTC, then
    /// compiles the kernels for the device's architecture.
    pub fn new(ordinal: u32) -> Result<Self> {
        std::panic::catch_unwind(|| Self::open(ordinal)).unwrap_or_else(|p| {
            Err(Error::BackendUnavailable(format!("CUDA initialisation failed: {}", panic_message(p))))
        })
    }

    fn open(ordinal: u32) -> Result<Self> {
        // SAFETY: presence checks only try to load libraries.
        if !unsafe { cu::is_culib_present() } {
            return Err(Error::BackendUnavailable(
                "no NVIDIA driver: the CUDA driver library (libcuda.so.1) was not found".into(),
            ));
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
            cu_check(
                cu::cuDeviceGetAttribute(
                    &mut major,
                    cu::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                    dev,
                ),
                "cuDeviceGetAttribute",
            )?;
            cu_check(
                cu::cuDeviceGetAttribute(
                    &mut minor,
                    cu::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                    dev,
                ),
                "cuDeviceGetAttribute",
            )?;
            let ptx = nvrtc::compile_ptx(&format!("{major}{minor}"))?;
            let mut module = std::ptr::null_mut();
            cu_check(
                cu::cuModuleLoadData(&mut module, ptx.as_ptr() as *const c_void),
                "cuModuleLoadData (is the NVRTC newer than the driver?)",
            )?;
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
            let mut cublas_version = 0;
            cb_check(cb::cublasGetVersion_v2(cublas, &mut cublas_version), "cublasGetVersion")?;
            let no_timing = cu::CUevent_flags_enum::CU_EVENT_DISABLE_TIMING as u32;
            let mut fork = std::ptr::null_mut();
            cu_check(cu::cuEventCreate(&mut fork, no_timing), "cuEventCreate")?;
            let mut lanes = Vec::with_capacity(SVD_STREAMS);
            for _ in 0..SVD_STREAMS {
                // Non-blocking: no implicit ordering with the legacy default stream; the fork and
                // join events order the pool against the caller's stream explicitly.
                let mut stream = std::ptr::null_mut();
                cu_check(
                    cu::cuStreamCreate(&mut stream, cu::CUstream_flags_enum::CU_STREAM_NON_BLOCKING as u32),
                    "cuStreamCreate",
                )?;
                let mut solver = std::ptr::null_mut();
                cs_check(cs::cusolverDnCreate(&mut solver), "cusolverDnCreate")?;
                cs_check(cs::cusolverDnSetStream(solver, stream as cs::cudaStream_t), "cusolverDnSetStream")?;
                let mut params = std::ptr::null_mut();
                cs_check(cs::cusolverDnCreateParams(&mut params), "cusolverDnCreateParams")?;
                let mut gesvdj = std::ptr::null_mut();
                cs_check(cs::cusolverDnCreateGesvdjInfo(&mut gesvdj), "cusolverDnCreateGesvdjInfo")?;
                let mut done = std::ptr::null_mut();
                cu_check(cu::cuEventCreate(&mut done, no_timing), "cuEventCreate")?;
                lanes.push(Lane { stream, solver, params, gesvdj, done });
            }
            let h = Handles {
                ctx,
                dev,
                stream: std::ptr::null_mut(),
                cublas,
                solver,
                params,
                gesvdj,
                module,
                funcs,
                lanes,
                fork,
                ptrs: None,
                report: None,
                cublas_version,
            };
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
            for l in h.lanes.drain(..) {
                cu::cuStreamSynchronize(l.stream);
                cs::cusolverDnDestroyGesvdjInfo(l.gesvdj);
                cs::cusolverDnDestroyParams(l.params);
                cs::cusolverDnDestroy(l.solver);
                cu::cuEventDestroy_v2(l.done);
                cu::cuStreamDestroy_v2(l.stream);
            }
            cu::cuEventDestroy_v2(h.fork);
            if let Some((p, _)) = h.ptrs.take() {
                cu::cuMemFree_v2(p);
            }
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
unsafe fn launch_impl(
    h: &Handles,
    f: cu::CUfunction,
    grid: (u32, u32),
    block: u32,
    params: &mut [*mut c_void],
) -> Result<()> {
    // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
    unsafe {
        cu_check(
            cu::cuLaunchKernel(
                f,
                grid.0.max(1),
                grid.1.max(1),
                1,
                block,
                1,
                1,
                0,
                h.stream,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            ),
            "cuLaunchKernel",
        )
    }
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
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
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
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
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

    unsafe fn gemm_strided_batched(&self, g: &GemmArgs) -> Result<()> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
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
    /// the old one) only when a call has more problems than any before; a small NVRTC kernel
    /// fills them on the stream, one launch per group, so a call allocates nothing once the
    /// buffer is large enough, never synchronises the host then, and can be captured in a graph.
    /// Stream-ordering makes reuse safe on one stream; after switching streams with
    /// `set_stream`, order the old stream's work before the new one's (as with cuBLAS's own
    /// workspace).
    unsafe fn gemm_grouped(&self, groups: &[GemmArgs]) -> Result<()> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
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
            let total: usize = live.iter().map(|g| g.batch).sum();
            let mut h = self.lock()?;
            if h.ptrs.is_none_or(|(_, cap)| cap < total) {
                if let Some((old, _)) = h.ptrs.take() {
                    cu_check(cu::cuStreamSynchronize(h.stream), "cuStreamSynchronize")?;
                    cu::cuMemFree_v2(old);
                }
                let cap = total.next_power_of_two().max(256);
                let mut p = 0;
                if cu::cuMemAlloc_v2(&mut p, 3 * cap * 8) != cu::CUresult::CUDA_SUCCESS {
                    return Err(Error::AllocationFailed { bytes: 3 * cap * 8 });
                }
                h.ptrs = Some((p, cap));
            }
            let (base, cap) = h.ptrs.unwrap();
            let (pa, pb, pc) = (base, base + (cap * 8) as u64, base + (2 * cap * 8) as u64);
            let mut off = 0usize;
            for g in &live {
                let (sa, sb, scc) = (g.a.dtype.size(), g.b.dtype.size(), g.c.dtype.size());
                let args: (i64, u64, i64, u64, i64, u64, i64, u64, u64, u64) = (
                    g.batch as i64,
                    g.a.addr as u64,
                    (g.a.stride * sa) as i64,
                    g.b.addr as u64,
                    (g.b.stride * sb) as i64,
                    g.c.addr as u64,
                    (g.c.stride * scc) as i64,
                    pa + (off * 8) as u64,
                    pb + (off * 8) as u64,
                    pc + (off * 8) as u64,
                );
                let mut p: [*mut c_void; 10] = [
                    &args.0 as *const _ as *mut c_void,
                    &args.1 as *const _ as *mut c_void,
                    &args.2 as *const _ as *mut c_void,
                    &args.3 as *const _ as *mut c_void,
                    &args.4 as *const _ as *mut c_void,
                    &args.5 as *const _ as *mut c_void,
                    &args.6 as *const _ as *mut c_void,
                    &args.7 as *const _ as *mut c_void,
                    &args.8 as *const _ as *mut c_void,
                    &args.9 as *const _ as *mut c_void,
                ];
                launch_named(&h, "osft_fill_ptrs", (blocks(g.batch), 1), &mut p)?;
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
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
        unsafe {
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
                rows as i64,
                cols as i64,
                a.batch as i64,
                a.alpha,
                s.addr as u64,
                s.row_stride as i64,
                s.col_stride as i64,
                s.batch_stride as i64,
                a.beta,
                d.addr as u64,
                d.row_stride as i64,
                d.col_stride as i64,
                d.batch_stride as i64,
            );
            let mut p: [*mut c_void; 13] = [
                &args.0 as *const _ as *mut c_void,
                &args.1 as *const _ as *mut c_void,
                &args.2 as *const _ as *mut c_void,
                &args.3 as *const _ as *mut c_void,
                &args.4 as *const _ as *mut c_void,
                &args.5 as *const _ as *mut c_void,
                &args.6 as *const _ as *mut c_void,
                &args.7 as *const _ as *mut c_void,
                &args.8 as *const _ as *mut c_void,
                &args.9 as *const _ as *mut c_void,
                &args.10 as *const _ as *mut c_void,
                &args.11 as *const _ as *mut c_void,
                &args.12 as *const _ as *mut c_void,
            ];
            launch_named(&h, &name, (blocks(rows * cols * a.batch), 1), &mut p)
        }
    }

    unsafe fn dgmm(&self, d: &DgmmArgs) -> Result<()> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
        unsafe {
            d.check()?;
            if d.m == 0 || d.n == 0 {
                return Ok(());
            }
            let h = self.lock()?;
            let args: (i32, i64, i64, u64, i64, i64, u64, i64, i64, u64, i64, i64, i64) = (
                d.left as i32,
                d.m as i64,
                d.n as i64,
                d.a.addr as u64,
                d.a.ld as i64,
                d.a.stride as i64,
                d.x as u64,
                d.incx as i64,
                d.stride_x as i64,
                d.c.addr as u64,
                d.c.ld as i64,
                d.c.stride as i64,
                d.batch as i64,
            );
            let mut p: [*mut c_void; 13] = [
                &args.0 as *const _ as *mut c_void,
                &args.1 as *const _ as *mut c_void,
                &args.2 as *const _ as *mut c_void,
                &args.3 as *const _ as *mut c_void,
                &args.4 as *const _ as *mut c_void,
                &args.5 as *const _ as *mut c_void,
                &args.6 as *const _ as *mut c_void,
                &args.7 as *const _ as *mut c_void,
                &args.8 as *const _ as *mut c_void,
                &args.9 as *const _ as *mut c_void,
                &args.10 as *const _ as *mut c_void,
                &args.11 as *const _ as *mut c_void,
                &args.12 as *const _ as *mut c_void,
            ];
            launch_named(&h, &format!("osft_dgmm_{}", sfx(d.a.dtype)), (blocks(d.m * d.n * d.batch), 1), &mut p)
        }
    }

    fn gesvd_buffer_size(
        &self,
        m: usize,
        n: usize,
        dtype: DType,
        batch: usize,
        algorithm: SvdAlgorithm,
    ) -> Result<usize> {
        algorithm.check_problem(m, n, dtype)?;
        let h = self.lock()?;
        // SAFETY: size queries with null data pointers, as cuSOLVER allows.
        unsafe { svd_layout(&h, algorithm.resolve(m, n), m, n, dtype, batch, None).map(|l| l.total) }
    }

    fn gesvdr_buffer_size(
        &self,
        m: usize,
        n: usize,
        k: usize,
        p: usize,
        niters: usize,
        dtype: DType,
        batch: usize,
    ) -> Result<usize> {
        check_gesvdr_problem(m, n, k, p, dtype)?;
        let h = self.lock()?;
        // SAFETY: as above.
        unsafe { svd_layout(&h, SvdAlgorithm::Randomized, m, n, dtype, batch, Some((k, p, niters))).map(|l| l.total) }
    }

    fn last_svd_report(&self) -> Option<SvdReport> {
        self.h.lock().ok().and_then(|h| h.report)
    }

    unsafe fn gesvd_strided_batched(&self, g: &GesvdArgs, work: Addr, work_bytes: usize) -> Result<()> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
        unsafe {
            g.check()?;
            // One group: the same path as a list (the routine's calls on the stream pool, joined).
            self.run_grouped(&[GesvdCall { args: *g, work, work_bytes }], false)
        }
    }

    unsafe fn gesvd_grouped(&self, calls: &[GesvdCall]) -> Result<()> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
        unsafe {
            check_gesvd_calls(self, calls)?;
            self.run_grouped(calls, true)
        }
    }

    unsafe fn gesvdr_strided_batched(&self, g: &GesvdrArgs, work: Addr, work_bytes: usize) -> Result<()> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
        unsafe {
            g.check()?;
            let mut h = self.lock()?;
            h.report = None;
            let l = svd_layout(&h, SvdAlgorithm::Randomized, g.m, g.n, g.a.dtype, g.batch, Some((g.k, g.p, g.niters)))?;
            if work_bytes < l.total {
                return Err(Error::WorkspaceTooSmall { needed: l.total, given: work_bytes });
            }
            let (info, vf) = (work + l.info, work + l.v);
            let (m, n, sz, dt) = (g.m, g.n, g.a.dtype.size(), g.a.dtype);
            let sdt = solver_type(dt);
            let units: Vec<(usize, usize)> = (0..g.batch).map(|b| (b % l.lanes, l.host_bytes)).collect();
            let res = fan_out(&mut h, &units, |lane, b, host| {
                let dev = work + (b % l.lanes) * l.lane_bytes;
                cs_check(
                    cs::cusolverDnXgesvdr(
                        lane.solver,
                        lane.params,
                        b'S' as i8,
                        b'S' as i8,
                        m as i64,
                        n as i64,
                        g.k as i64,
                        g.p as i64,
                        g.niters as i64,
                        sdt,
                        (g.a.addr + b * g.a.stride * sz) as *mut c_void,
                        g.a.ld as i64,
                        sdt,
                        (g.s + b * g.stride_s * sz) as *mut c_void,
                        sdt,
                        (g.u.addr + b * g.u.stride * sz) as *mut c_void,
                        g.u.ld as i64,
                        sdt,
                        (vf + b * n * n * sz) as *mut c_void,
                        n as i64,
                        sdt,
                        dev as *mut c_void,
                        l.lwork,
                        host.as_mut_ptr() as *mut c_void,
                        l.host_bytes,
                        (info + b * 4) as *mut i32,
                    ),
                    "cusolverDnXgesvdr",
                )
            });
            drop(h);
            res?;
            // VT (k x n) = the first k columns of V, transposed.
            let s2 = |addr, rs, cs, bs| Strided2d { addr, dtype: dt, row_stride: rs, col_stride: cs, batch_stride: bs };
            self.axpby(&AxpbyArgs {
                rows: g.k,
                cols: n,
                batch: g.batch,
                alpha: 1.0,
                src: s2(vf, n, 1, n * n),
                beta: 0.0,
                dst: s2(g.vt.addr, 1, g.vt.ld, g.vt.stride),
            })?;
            let checked = self.check_info(info, g.batch, "cusolverDnXgesvdr", &[]);
            self.h.lock().unwrap_or_else(|e| e.into_inner()).report =
                Some(SvdReport { algorithm: Some(SvdAlgorithm::Randomized), ..Default::default() });
            checked
        }
    }

    unsafe fn svd_sign_fix(&self, s: &SignFixArgs) -> Result<()> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
        unsafe {
            if s.left.dtype != s.right.dtype || !s.left.dtype.is_compute() {
                return Err(Error::precondition("svd_sign_fix", "left and right vectors must share an f32/f64 type"));
            }
            if s.count == 0 || s.batch == 0 {
                return Ok(());
            }
            let h = self.lock()?;
            let (l, r) = (s.left, s.right);
            let args: (i64, u64, i64, i64, i64, i64, u64, i64, i64, i64) = (
                l.len as i64,
                l.addr as u64,
                l.elem_stride as i64,
                l.vec_stride as i64,
                l.batch_stride as i64,
                r.len as i64,
                r.addr as u64,
                r.elem_stride as i64,
                r.vec_stride as i64,
                r.batch_stride as i64,
            );
            let mut p: [*mut c_void; 10] = [
                &args.0 as *const _ as *mut c_void,
                &args.1 as *const _ as *mut c_void,
                &args.2 as *const _ as *mut c_void,
                &args.3 as *const _ as *mut c_void,
                &args.4 as *const _ as *mut c_void,
                &args.5 as *const _ as *mut c_void,
                &args.6 as *const _ as *mut c_void,
                &args.7 as *const _ as *mut c_void,
                &args.8 as *const _ as *mut c_void,
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
    }

    unsafe fn sum_squares(&self, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> Result<Vec<f64>> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
        unsafe {
            Ok(self
                .per_matrix_reduce("osft_sum_squares", rows, cols, batch, x)?
                .into_iter()
                .map(f64::from_ne_bytes)
                .collect())
        }
    }

    unsafe fn count_nonfinite(&self, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> Result<Vec<u64>> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
        unsafe {
            Ok(self
                .per_matrix_reduce("osft_count_nonfinite", rows, cols, batch, x)?
                .into_iter()
                .map(u64::from_ne_bytes)
                .collect())
        }
    }

    unsafe fn add_diagonal(&self, n: usize, a: &Strided, batch: usize, alpha: f64) -> Result<()> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
        unsafe {
            if n == 0 || batch == 0 {
                return Ok(());
            }
            let h = self.lock()?;
            let args: (i64, u64, i64, i64, i64, f64) =
                (n as i64, a.addr as u64, a.ld as i64, a.stride as i64, batch as i64, alpha);
            let mut p: [*mut c_void; 6] = [
                &args.0 as *const _ as *mut c_void,
                &args.1 as *const _ as *mut c_void,
                &args.2 as *const _ as *mut c_void,
                &args.3 as *const _ as *mut c_void,
                &args.4 as *const _ as *mut c_void,
                &args.5 as *const _ as *mut c_void,
            ];
            launch_named(&h, &format!("osft_add_diagonal_{}", sfx(a.dtype)), (blocks(n * batch), 1), &mut p)
        }
    }

    unsafe fn cosine_sum(&self, a: &Vectors, b: &Vectors, count: usize) -> Result<f64> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
        unsafe {
            if a.len != b.len || a.dtype != b.dtype || !a.dtype.is_compute() {
                return Err(Error::precondition("cosine_sum", "vectors must have one length and one f32/f64 type"));
            }
            if count == 0 {
                return Ok(0.0);
            }
            let out = self.alloc(count * 8)?;
            {
                let h = self.lock()?;
                let args: (i64, u64, i64, i64, u64, i64, i64, u64) = (
                    a.len as i64,
                    a.addr as u64,
                    a.elem_stride as i64,
                    a.vec_stride as i64,
                    b.addr as u64,
                    b.elem_stride as i64,
                    b.vec_stride as i64,
                    out.addr as u64,
                );
                let mut p: [*mut c_void; 8] = [
                    &args.0 as *const _ as *mut c_void,
                    &args.1 as *const _ as *mut c_void,
                    &args.2 as *const _ as *mut c_void,
                    &args.3 as *const _ as *mut c_void,
                    &args.4 as *const _ as *mut c_void,
                    &args.5 as *const _ as *mut c_void,
                    &args.6 as *const _ as *mut c_void,
                    &args.7 as *const _ as *mut c_void,
                ];
                launch_named(&h, &format!("osft_cosine_{}", sfx(a.dtype)), (count as u32, 1), &mut p)?;
            }
            let mut bytes = vec![0u8; count * 8];
            self.read_to_host(out.addr, &mut bytes)?;
            Ok(bytes.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().unwrap())).sum())
        }
    }
}

impl CudaExecutor {
    /// Read the `batch` convergence flags at `info` (stream-ordered, then synchronised) and map
    /// them: 0 converged; > 0 not converged (`NotConverged` with the first such index; the
    /// routine's report says by how much); < 0 a parameter cuSOLVER rejected (`Precondition`).
    /// `host` (gesvda's `h_R_nrmF`, gesvdp's `h_err_sigma`), where given, must be finite.
    unsafe fn check_info(&self, info: Addr, batch: usize, routine: &'static str, host: &[f64]) -> Result<()> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
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
    unsafe fn run_grouped(&self, calls: &[GesvdCall], grouped: bool) -> Result<()> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
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
fn info_status(bytes: &[u8], routine: &'static str, host: &[f64]) -> Result<()> {
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

impl CudaExecutor {
    /// Run a per-matrix reduction kernel `{kernel}_{dtype}(rows, cols, x, rs, cs, bs, out)` that
    /// accumulates one 8-byte value per matrix into a zeroed device array (grid: blocks x
    /// batch), and return the values' bytes. Synchronises.
    unsafe fn per_matrix_reduce(
        &self,
        kernel: &str,
        rows: usize,
        cols: usize,
        batch: usize,
        x: &Strided2d,
    ) -> Result<Vec<[u8; 8]>> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
        unsafe {
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
                            rows as i64,
                            cols as i64,
                            (x.addr + b0 * x.batch_stride * x.dtype.size()) as u64,
                            x.row_stride as i64,
                            x.col_stride as i64,
                            x.batch_stride as i64,
                            (out.addr + b0 * 8) as u64,
                        );
                        let mut p: [*mut c_void; 7] = [
                            &args.0 as *const _ as *mut c_void,
                            &args.1 as *const _ as *mut c_void,
                            &args.2 as *const _ as *mut c_void,
                            &args.3 as *const _ as *mut c_void,
                            &args.4 as *const _ as *mut c_void,
                            &args.5 as *const _ as *mut c_void,
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
}

unsafe fn launch_named(h: &Handles, name: &str, grid: (u32, u32), params: &mut [*mut c_void]) -> Result<()> {
    // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
    unsafe {
        let f = *h.funcs.get(name).ok_or_else(|| Error::Internal(format!("kernel {name} missing")))?;
        launch_impl(h, f, grid, 256, params)
    }
}

/// Workspace layout of one SVD call. Offsets are from the start of the workspace.
///
/// - `gesvdjBatched`: `[work (lwork elements) | U full m x m x batch | V full n x n x batch | info]`
/// - `gesvdaStridedBatched`: `[work (lwork elements) | V n x n x batch | info]`
/// - per-matrix routines (`Xgesvd`, `gesvdj`, `Xgesvdp`, `Xgesvdr`), spread over
///   `lanes = min(batch, SVD_STREAMS)` streams: `[lanes x work slice | V n x n x batch (not for
///   Xgesvd) | info]`, each stream's slice `align(lwork)` bytes.
///
/// Each region is 256-byte aligned; the total is what the `*_buffer_size` queries report.
struct SvdLayout {
    dev: usize,
    /// Elements of the routine's type for the 32-bit APIs, bytes for the 64-bit (`X*`) ones.
    lwork: usize,
    u_full: usize,
    v_full: usize,
    /// V scratch (packed n x n per matrix).
    v: usize,
    lanes: usize,
    lane_bytes: usize,
    info: usize,
    host_bytes: usize,
    total: usize,
}

fn align(x: usize) -> usize {
    x.div_ceil(256) * 256
}

/// Layout for `alg` (resolved, never `Auto`); `kpn = Some((k, p, niters))` for `Randomized`.
unsafe fn svd_layout(
    h: &Handles,
    alg: SvdAlgorithm,
    m: usize,
    n: usize,
    dtype: DType,
    batch: usize,
    kpn: Option<(usize, usize, usize)>,
) -> Result<SvdLayout> {
    // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
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

/// Run `one(lane, u, host_work)` for every unit `u` of `units` (`(stream, host_bytes)`: the pool
/// stream it runs on and the bytes of its own host workspace). Units on one stream run in order,
/// so units that share a device workspace slice must share a stream (the caller's assignment).
/// The pool streams first wait on an event recorded on the caller's stream (fork); afterwards
/// the caller's stream waits on an event recorded on each pool stream (join), so the caller's
/// stream order is preserved: work it issued before runs first, work it issues after sees the
/// results. The join is made even when a call fails; the host then waits for the caller's
/// stream, so the host workspaces outlive their use.
unsafe fn fan_out(
    h: &mut Handles,
    units: &[(usize, usize)],
    mut one: impl FnMut(&Lane, usize, &mut [u8]) -> Result<()>,
) -> Result<()> {
    // SAFETY: the trait's contract: the arguments describe valid memory of this context's device.
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
        // directly before the host workspaces are dropped (previously an early `?` dropped them).
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
