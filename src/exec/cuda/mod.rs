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
//! **Lists of shapes** (`ops::svd::SvdListPlan`) reach the executor as `gesvd_grouped`: all
//! groups of a wave behind ONE fork and ONE join — each group's units take the next pool streams
//! round-robin (so a list of single matrices spreads over every stream, and the matrices that
//! share a workspace slice share a stream), each group in its own workspace slice (no scratch is
//! shared across streams) — then the thin-U / `VT` copies on the caller's stream and one
//! read-back of every group's convergence flags. A strided batch is the one-group case of the
//! same path. After the join the host waits for the caller's stream before the per-matrix host
//! workspaces of the `X` routines are dropped; the flags' read-back synchronises once more.
//!
//! **Kernel launches.** Each kernel is launched through a typed argument builder: the arguments
//! are Rust values (`i64`, `f64`, `*const c_void` / `*mut c_void` device addresses, ...) whose
//! types are compared, in order, with the kernel's parameter list in [`signatures::FAMILIES`]
//! before `cuLaunchKernel`; a mismatch is `Error::Internal` and nothing is launched. A test checks
//! that table against `kernels.cu`, and every launch's arguments against the table, on the CPU.
//! Each primitive's launch (grid and block sizes, argument packing, slicing of counts beyond the
//! grid limit) is written once in [`launch`], generic over a [`launch::Launcher`]: here
//! `cuLaunchKernel` on the context's stream; in the tests, the same kernels compiled for the host
//! under an emulation of the CUDA kernel environment (the `osft-kernel-emu` test crate), so the
//! launch code a GPU runs is the code the tests run. Casts round once, to nearest even, from the
//! exact value, in software, exactly as on the CPU executor.
//!
//! **Minimum GPU.** Compute capability 7.5 ([`MIN_COMPUTE_CAPABILITY`]), checked when the context
//! is created (an older device is `BackendUnavailable`, with its capability in the message).
//!
//! **Math mode.** The cuBLAS handle is in `CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION`
//! (the default math, except that a GEMM with f16/bf16 output never reduces partial sums in the
//! output type, which cuBLAS otherwise may and PyTorch allows by default); the mode reaches each GEMM
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
//! would be mixed. NVRTC must not be newer than the driver (its PTX version is refused), and
//! neither may cuBLAS's CUDA major version be ([`check_driver_supports`], checked when the
//! context is created). Only CUDA 13.0 with the 580 driver is the target; CUDA 12.x is untested.
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
//! (`ops::svd::factor`, `ops::decompose::DecomposePlan`). `svd_list` lays consecutive problems' `ws(B_i)` side by
//! side and factors each such wave with one `gesvd_grouped`; its workspace query reports the
//! largest single problem's `min(ws(B), 1 GiB)` (enough: waves of fewer problems, or one problem
//! in chunks), while a context allocating its own workspace grows it to
//! `max(largest, min(sum_i ws(B_i), 1 GiB))` to run the list as one wave. So decomposing a
//! whole model, matrix by matrix or group by group, holds at most
//! `max over its shapes of max(ws(1), min(ws(B), 1 GiB))` of workspace at once (1 GiB for a
//! list in the context's own workspace), not every intermediate. Example: the largest Llama-3.1-8B target, `14336 x 4096` in f32, needs
//! `ws(1) = 4 (2 * 14336 * 4096 + 4096^2 + 4096) ~ 537 MB` plus `Xgesvd`'s `lwork`.

pub mod nvrtc;
pub mod signatures;

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::Mutex;

use cudarc::cublas::sys as cb;
use cudarc::cusolver::sys as cs;
use cudarc::driver::sys as cu;

use super::*;
use current::Current;

mod current;
mod executor;
pub mod launch;
mod layout;
mod solver;

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

/// The executor's handles, locked, with its context current on this thread (restored after).
struct Locked<'a> {
    h: std::sync::MutexGuard<'a, Handles>,
    _current: Current,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Handles;
    fn deref(&self) -> &Handles {
        &self.h
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Handles {
        &mut self.h
    }
}

/// Device memory freed on drop. It holds a reference on its device's primary context, so a
/// buffer that outlives its executor still frees into a live context.
struct DeviceAlloc {
    ptr: cu::CUdeviceptr,
    ctx: cu::CUcontext,
    dev: cu::CUdevice,
}
// SAFETY: a device address and the context it belongs to; freeing makes that context current.
unsafe impl Send for DeviceAlloc {}
unsafe impl Sync for DeviceAlloc {}

impl DeviceAlloc {
    /// Take a reference on `dev`'s primary context for a buffer allocated in it.
    fn new(ptr: cu::CUdeviceptr, dev: cu::CUdevice) -> Result<Self> {
        let mut ctx = std::ptr::null_mut();
        // SAFETY: out-parameter; released in `drop`.
        cu_check(unsafe { cu::cuDevicePrimaryCtxRetain(&mut ctx, dev) }, "cuDevicePrimaryCtxRetain")?;
        Ok(DeviceAlloc { ptr, ctx, dev })
    }
}

impl Drop for DeviceAlloc {
    fn drop(&mut self) {
        // SAFETY: allocated by cuMemAlloc in `ctx`, which this buffer keeps alive; freed once,
        // then the buffer's reference on the context is released.
        unsafe {
            if let Ok(_current) = Current::make(self.ctx) {
                cu::cuMemFree_v2(self.ptr);
            }
            cu::cuDevicePrimaryCtxRelease_v2(self.dev);
        }
    }
}

/// The kernels as a module of the current context: a CUBIN for the device's `sm_XY` (no JIT,
/// and no dependence on the driver accepting this NVRTC's PTX version), else PTX for
/// `compute_XY`, JIT-compiled by the driver. Both failures are reported when neither loads.
///
/// # Safety
/// A CUDA context must be current on the calling thread.
unsafe fn load_kernels(arch: &str) -> Result<cu::CUmodule> {
    let load = |image: &[u8], what: &str| -> Result<cu::CUmodule> {
        let mut module = std::ptr::null_mut();
        // SAFETY: `image` is a complete CUBIN or NUL-terminated PTX image that outlives the call.
        cu_check(unsafe { cu::cuModuleLoadData(&mut module, image.as_ptr() as *const c_void) }, what)?;
        Ok(module)
    };
    let cubin = nvrtc::compile_cubin(arch).and_then(|c| load(&c, "cuModuleLoadData(CUBIN)"));
    match cubin {
        Ok(module) => Ok(module),
        Err(first) => nvrtc::compile_ptx(arch)
            .and_then(|ptx| load(&ptx, "cuModuleLoadData(PTX) (is the NVRTC newer than the driver?)"))
            .map_err(|second| {
                Error::BackendUnavailable(format!(
                    "osft's kernels for sm_{arch} load neither as a CUBIN ({first}) nor as PTX ({second})"
                ))
            }),
    }
}

/// The oldest GPU generation osft runs on: compute capability 7.5 (Turing), the oldest that CUDA
/// 13 compiles for. (The kernels themselves need 6.0, for `atomicAdd` on doubles.) Checked when a
/// context is created: an older device is `BackendUnavailable` with its capability in the message.
pub const MIN_COMPUTE_CAPABILITY: (i32, i32) = (7, 5);

/// `dev`'s compute capability, `(major, minor)`.
///
/// # Safety
/// `cuInit` has succeeded and `dev` is a device handle.
unsafe fn compute_capability(dev: cu::CUdevice) -> Result<(i32, i32)> {
    use cu::CUdevice_attribute::*;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: out-parameters; this function's contract.
    unsafe {
        cu_check(
            cu::cuDeviceGetAttribute(&mut major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev),
            "cuDeviceGetAttribute",
        )?;
        cu_check(
            cu::cuDeviceGetAttribute(&mut minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev),
            "cuDeviceGetAttribute",
        )?;
    }
    Ok((major, minor))
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Whether a driver of `driver_version` (`cuDriverGetVersion`: 1000 major + 10 minor) can run
/// the cuBLAS of major version `cublas_major` (its CUDA major version): minor-version
/// compatibility lets CUDA 13.x libraries run on any 13.x driver, never on a 12.x one, where
/// `cublasCreate` fails with a status that does not say why.
pub fn check_driver_supports(driver_version: i32, cublas_major: i32) -> Result<()> {
    let (major, minor) = (driver_version / 1000, driver_version % 1000 / 10);
    if cublas_major > major {
        return Err(Error::BackendUnavailable(format!(
            "the NVIDIA driver supports CUDA up to {major}.{minor}, but the cuBLAS found is from CUDA \
             {cublas_major}: update the driver, or put CUDA {major} libraries first on LD_LIBRARY_PATH"
        )));
    }
    Ok(())
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
            let (mut driver, mut cublas_major) = (0, 0);
            cu_check(cu::cuDriverGetVersion(&mut driver), "cuDriverGetVersion")?;
            cb_check(
                cb::cublasGetProperty(cb::libraryPropertyType::MAJOR_VERSION, &mut cublas_major),
                "cublasGetProperty",
            )?;
            check_driver_supports(driver, cublas_major)?;
            let mut dev = 0;
            cu_check(cu::cuDeviceGet(&mut dev, ordinal as i32), "cuDeviceGet")?;
            let (major, minor) = compute_capability(dev)?;
            if (major, minor) < MIN_COMPUTE_CAPABILITY {
                let (want_major, want_minor) = MIN_COMPUTE_CAPABILITY;
                return Err(Error::BackendUnavailable(format!(
                    "CUDA device {ordinal} has compute capability {major}.{minor}; osft needs {want_major}.{want_minor} or newer"
                )));
            }
            let mut ctx = std::ptr::null_mut();
            cu_check(cu::cuDevicePrimaryCtxRetain(&mut ctx, dev), "cuDevicePrimaryCtxRetain")?;
            // From here on the executor owns what is acquired: a failure drops it, which releases
            // every handle created so far and the context (null handles are skipped).
            use std::ptr::null_mut as null;
            let mut exec = CudaExecutor {
                ordinal,
                h: Mutex::new(Handles {
                    ctx,
                    dev,
                    stream: null(),
                    cublas: null(),
                    solver: null(),
                    params: null(),
                    gesvdj: null(),
                    module: null(),
                    funcs: HashMap::new(),
                    lanes: Vec::with_capacity(SVD_STREAMS),
                    fork: null(),
                    ptrs: None,
                    report: None,
                    cublas_version: 0,
                }),
            };
            let _current = Current::make(ctx)?;
            let h = exec.h.get_mut().unwrap_or_else(|e| e.into_inner());
            h.module = load_kernels(&format!("{major}{minor}"))?;
            for name in nvrtc::kernel_names() {
                let c = CString::new(name.clone()).unwrap();
                let mut f = null();
                cu_check(
                    cu::cuModuleGetFunction(&mut f, h.module, c.as_ptr()),
                    &format!("cuModuleGetFunction({name})"),
                )?;
                h.funcs.insert(name, f);
            }
            cb_check(cb::cublasCreate_v2(&mut h.cublas), "cublasCreate")?;
            // Split-K reductions of an f16/bf16-output GEMM stay in f32 (cuBLAS may otherwise
            // reduce in the output type), as `MathMode` promises.
            let math = cb::cublasMath_t::CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
            cb_check(cb::cublasSetMathMode(h.cublas, math), "cublasSetMathMode")?;
            cs_check(cs::cusolverDnCreate(&mut h.solver), "cusolverDnCreate")?;
            cs_check(cs::cusolverDnCreateParams(&mut h.params), "cusolverDnCreateParams")?;
            cs_check(cs::cusolverDnCreateGesvdjInfo(&mut h.gesvdj), "cusolverDnCreateGesvdjInfo")?;
            cb_check(cb::cublasGetVersion_v2(h.cublas, &mut h.cublas_version), "cublasGetVersion")?;
            let no_timing = cu::CUevent_flags_enum::CU_EVENT_DISABLE_TIMING as u32;
            cu_check(cu::cuEventCreate(&mut h.fork, no_timing), "cuEventCreate")?;
            for _ in 0..SVD_STREAMS {
                h.lanes.push(Lane { stream: null(), solver: null(), params: null(), gesvdj: null(), done: null() });
                let lane = h.lanes.last_mut().unwrap();
                // Non-blocking: no implicit ordering with the legacy default stream; the fork and
                // join events order the pool against the caller's stream explicitly.
                cu_check(
                    cu::cuStreamCreate(&mut lane.stream, cu::CUstream_flags_enum::CU_STREAM_NON_BLOCKING as u32),
                    "cuStreamCreate",
                )?;
                cs_check(cs::cusolverDnCreate(&mut lane.solver), "cusolverDnCreate")?;
                cs_check(cs::cusolverDnSetStream(lane.solver, lane.stream as cs::cudaStream_t), "cusolverDnSetStream")?;
                cs_check(cs::cusolverDnCreateParams(&mut lane.params), "cusolverDnCreateParams")?;
                cs_check(cs::cusolverDnCreateGesvdjInfo(&mut lane.gesvdj), "cusolverDnCreateGesvdjInfo")?;
                cu_check(cu::cuEventCreate(&mut lane.done, no_timing), "cuEventCreate")?;
            }
            Ok(exec)
        }
    }

    fn lock(&self) -> Result<Locked<'_>> {
        let h = self.h.lock().unwrap_or_else(|e| e.into_inner());
        let current = Current::make(h.ctx)?;
        Ok(Locked { h, _current: current })
    }
}

impl Drop for CudaExecutor {
    /// Releases every handle (those still null after a failed `open` are skipped), then the
    /// executor's reference on the primary context.
    fn drop(&mut self) {
        let h = self.h.get_mut().unwrap_or_else(|e| e.into_inner());
        // SAFETY: handles created in `open`, destroyed once; null ones were never created.
        unsafe {
            let _current = Current::make(h.ctx);
            for l in h.lanes.drain(..) {
                if !l.stream.is_null() {
                    cu::cuStreamSynchronize(l.stream);
                }
                if !l.gesvdj.is_null() {
                    cs::cusolverDnDestroyGesvdjInfo(l.gesvdj);
                }
                if !l.params.is_null() {
                    cs::cusolverDnDestroyParams(l.params);
                }
                if !l.solver.is_null() {
                    cs::cusolverDnDestroy(l.solver);
                }
                if !l.done.is_null() {
                    cu::cuEventDestroy_v2(l.done);
                }
                if !l.stream.is_null() {
                    cu::cuStreamDestroy_v2(l.stream);
                }
            }
            if !h.fork.is_null() {
                cu::cuEventDestroy_v2(h.fork);
            }
            if !h.gesvdj.is_null() {
                cs::cusolverDnDestroyGesvdjInfo(h.gesvdj);
            }
            if !h.params.is_null() {
                cs::cusolverDnDestroyParams(h.params);
            }
            if !h.solver.is_null() {
                cs::cusolverDnDestroy(h.solver);
            }
            if !h.cublas.is_null() {
                cb::cublasDestroy_v2(h.cublas);
            }
            // After cublasDestroy, which synchronises the device: no grouped GEMM still reads
            // the pointer arrays.
            if let Some((p, _)) = h.ptrs.take() {
                cu::cuMemFree_v2(p);
            }
            if !h.module.is_null() {
                cu::cuModuleUnload(h.module);
            }
            cu::cuDevicePrimaryCtxRelease_v2(h.dev);
        }
    }
}
