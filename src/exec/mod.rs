//! The executor trait: BLAS/LAPACK-shaped primitives with cuBLAS / cuSOLVER semantics.
//!
//! Everything here is column-major with operation flags, leading dimensions and strided batches,
//! exactly as `cublasGemmStridedBatchedEx`, `cublas<t>dgmm` and `cusolverDnXgesvd` take them. The
//! algorithms in [`crate::ops`] are written once against this trait; the CPU executor runs them on
//! host memory and the CUDA executor (feature `cuda`) is argument marshalling onto cuBLAS,
//! cuSOLVER and a few NVRTC kernels. Each argument struct has a `check` that enforces the
//! routine's preconditions; every executor calls it first, so a call sequence that passes on the
//! CPU passes the same checks on the GPU.
//!
//! Addresses are plain integers: host pointers for the CPU executor, device pointers for CUDA.
//! Primitives are `unsafe`: the caller (the ops layer, after validating every descriptor)
//! guarantees that each described extent is valid memory of the executor's device.
#![allow(clippy::missing_safety_doc)] // one contract for every primitive, stated above

mod args;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod trace;

use crate::desc::{Device, MatDesc};
use crate::dtype::DType;
use crate::error::{Error, Result};

pub use args::*;

/// `Ok` when `ok`, else the `Precondition` error of `routine` with `msg`.
fn need(routine: &'static str, ok: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::precondition(routine, msg()))
    }
}

/// An address in the executor's memory space.
pub type Addr = usize;

/// Operation flag of a GEMM operand (`CUBLAS_OP_N` / `CUBLAS_OP_T`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    N,
    T,
}

impl Op {
    pub fn flip(self) -> Op {
        match self {
            Op::N => Op::T,
            Op::T => Op::N,
        }
    }
}

/// Accumulation type (`cublasComputeType_t`): `F32` is `CUBLAS_COMPUTE_32F`, `F64` is
/// `CUBLAS_COMPUTE_64F`; `F32FastTf32` and `F32FastBf16` are `CUBLAS_COMPUTE_32F_FAST_TF32` and
/// `CUBLAS_COMPUTE_32F_FAST_16BF` (f32 data only, tensor cores with inputs rounded to TF32 / bf16,
/// f32 accumulation; see [`MathMode`]). The CPU executor computes the fast types exactly in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComputeType {
    F32,
    F64,
    F32FastTf32,
    F32FastBf16,
}

impl ComputeType {
    /// The GEMM compute type for data of `dtype` under `math`: the reduced-precision modes apply
    /// to f32 data only (f64 stays `F64`; f16/bf16 data already runs on tensor cores with `F32`).
    pub fn for_data(dtype: DType, math: MathMode) -> ComputeType {
        match (dtype, math) {
            (DType::F64, _) => ComputeType::F64,
            (DType::F32, MathMode::Tf32) => ComputeType::F32FastTf32,
            (DType::F32, MathMode::Bf16) => ComputeType::F32FastBf16,
            _ => ComputeType::F32,
        }
    }
    /// Whether this compute type accumulates in f32 (every type but `F64`).
    pub fn is_f32(self) -> bool {
        self != ComputeType::F64
    }
}

/// Math mode of a context's data GEMMs (projection, reconstruction): `osft_math_mode`.
///
/// | mode | cuBLAS compute type (f32 data) | inputs rounded to | typical relative error per product |
/// | --- | --- | --- | --- |
/// | `Exact` | `CUBLAS_COMPUTE_32F` | f32 (24-bit significand) | ~1e-7 |
/// | `Tf32` | `CUBLAS_COMPUTE_32F_FAST_TF32` | TF32 (10-bit mantissa) | ~1e-3 |
/// | `Bf16` | `CUBLAS_COMPUTE_32F_FAST_16BF` | bf16 (7-bit mantissa) | ~1e-2 |
///
/// Accumulation is f32 in every mode; f64 data always computes exactly in f64, and f16/bf16 data
/// is unaffected (it already multiplies on tensor cores with f32 accumulation). Diagnostics,
/// rank selection and the SVD never use a reduced mode. The CPU executor ignores the reduced
/// modes and computes exactly: its results are at least as accurate as the GPU's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MathMode {
    #[default]
    Exact = 0,
    Tf32 = 1,
    Bf16 = 2,
}

impl MathMode {
    /// The mode with C value `v`, or `None` for a value outside the enum.
    pub fn from_raw(v: i32) -> Option<MathMode> {
        Some(match v {
            0 => MathMode::Exact,
            1 => MathMode::Tf32,
            2 => MathMode::Bf16,
            _ => return None,
        })
    }
}

/// SVD algorithm: `osft_svd_algorithm`. Each names the cuSOLVER routine the CUDA executor calls;
/// the CPU executor enforces the same routine's preconditions and then computes an exact SVD
/// with faer (so a CPU result is exact whatever the algorithm, including the approximate ones).
///
/// - `Auto`: `JacobiBatched` for matrices up to 32 x 32, else `Qr`. Never an approximate method.
/// - `Qr`: `cusolverDnXgesvd` (QR-based bidiagonalisation), one matrix at a time, any size.
/// - `Jacobi`: `cusolver<t>gesvdj`, one matrix at a time, any size; with SVD diagnostics on, the
///   residual and sweeps are read back with `cusolverDnXgesvdjGetResidual` / `GetSweeps`.
/// - `JacobiBatched`: `cusolver<t>gesvdjBatched`, the whole packed batch in one call; `m, n <= 32`.
/// - `ApproxBatched`: `cusolver<t>gesvdaStridedBatched`, **approximate**: it works on the Gram
///   matrix `A^T A`, so singular values much smaller than the largest (relative to the square
///   root of the working precision, e.g. `sigma_i / sigma_1 < ~3e-4` in f32) and their vectors are
///   inaccurate; with SVD diagnostics on, cuSOLVER returns the Frobenius residual
///   `||A - U S V^T||` per matrix.
/// - `Polar`: `cusolverDnXgesvdp` (polar decomposition), one matrix at a time; cuSOLVER reports
///   `h_err_sigma`, a bound on the perturbation of the singular values (read with SVD diagnostics on).
/// - `Randomized`: `cusolverDnXgesvdr`, **approximate**, only the top `k` singular triplets (a
///   decomposition that requests only `U_high`, `S_high`, `V_high`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SvdAlgorithm {
    #[default]
    Auto = 0,
    Qr = 1,
    Jacobi = 2,
    JacobiBatched = 3,
    ApproxBatched = 4,
    Polar = 5,
    Randomized = 6,
}

/// Largest `m` and `n` `gesvdjBatched` accepts.
pub const JACOBI_BATCHED_MAX: usize = 32;
/// Default oversampling `p` of the randomized SVD (capped at `n - k`).
pub const GESVDR_OVERSAMPLING: usize = 10;
/// Default number of power iterations of the randomized SVD.
pub const GESVDR_ITERATIONS: usize = 2;

impl SvdAlgorithm {
    /// The algorithm with C value `v`, or `None` for a value outside the enum.
    pub fn from_raw(v: i32) -> Option<SvdAlgorithm> {
        use SvdAlgorithm::*;
        Some(match v {
            0 => Auto,
            1 => Qr,
            2 => Jacobi,
            3 => JacobiBatched,
            4 => ApproxBatched,
            5 => Polar,
            6 => Randomized,
            _ => return None,
        })
    }
    /// The cuSOLVER routine's name, for messages.
    pub fn routine(self) -> &'static str {
        use SvdAlgorithm::*;
        match self {
            Auto => "auto",
            Qr => "cusolverDnXgesvd",
            Jacobi => "gesvdj",
            JacobiBatched => "gesvdjBatched",
            ApproxBatched => "gesvdaStridedBatched",
            Polar => "cusolverDnXgesvdp",
            Randomized => "cusolverDnXgesvdr",
        }
    }
    /// Whether the routine computes an approximation (never chosen by `Auto`).
    pub fn is_approximate(self) -> bool {
        matches!(self, SvdAlgorithm::ApproxBatched | SvdAlgorithm::Randomized)
    }
    /// `Auto`'s choice for an `m x n` problem (`m >= n`): `JacobiBatched` up to 32 x 32, else
    /// `Qr`. Explicit choices are returned as they are.
    pub fn resolve(self, m: usize, n: usize) -> SvdAlgorithm {
        match self {
            SvdAlgorithm::Auto if m <= JACOBI_BATCHED_MAX && n <= JACOBI_BATCHED_MAX => SvdAlgorithm::JacobiBatched,
            SvdAlgorithm::Auto => SvdAlgorithm::Qr,
            a => a,
        }
    }
    /// The shape and type preconditions of the algorithm's routine for an `m x n` problem in
    /// `dtype` (the full thin SVD primitive; `Randomized` has its own, see [`GesvdrArgs`]).
    pub fn check_problem(self, m: usize, n: usize, dtype: DType) -> Result<()> {
        let r = self.resolve(m, n).routine();
        need(r, m >= n, || format!("{r} needs m >= n, got m = {m} n = {n}"))?;
        need(r, n >= 1, || "n must be at least 1".into())?;
        need(r, dtype.is_compute(), || format!("{r} computes in f32 or f64, not {}", dtype.name()))?;
        match self.resolve(m, n) {
            SvdAlgorithm::JacobiBatched => need(r, m <= JACOBI_BATCHED_MAX && n <= JACOBI_BATCHED_MAX, || {
                format!("gesvdjBatched takes matrices up to {JACOBI_BATCHED_MAX} x {JACOBI_BATCHED_MAX}, got {m} x {n}; choose another SVD algorithm")
            }),
            SvdAlgorithm::Randomized => Err(Error::precondition(
                r,
                "the randomized SVD computes only the top k singular triplets: it serves a decomposition that requests only U_high, S_high and V_high",
            )),
            _ => {
                let int_max = i32::MAX as usize;
                need(r, !matches!(self, SvdAlgorithm::Jacobi | SvdAlgorithm::ApproxBatched) || m <= int_max, || {
                    format!("{r} takes 32-bit sizes, got m = {m}")
                })
            }
        }
    }
}

/// A workspace or owned allocation in an executor's memory. Dropping it frees it.
pub struct Buffer {
    pub addr: Addr,
    pub bytes: usize,
    _owner: Box<dyn std::any::Any + Send + Sync>,
}

impl Buffer {
    pub fn new(addr: Addr, bytes: usize, owner: Box<dyn std::any::Any + Send + Sync>) -> Self {
        Buffer { addr, bytes, _owner: owner }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer {{ addr: {:#x}, bytes: {} }}", self.addr, self.bytes)
    }
}

/// The primitives. See the module documentation for the conventions.
pub trait Executor: Send + Sync {
    /// Short name for messages ("cpu", "cuda:0").
    fn name(&self) -> String;
    /// The device whose memory the addresses refer to.
    fn device(&self) -> Device;
    /// Allocate `bytes` of executor memory (workspace, cached projectors).
    fn alloc(&self, bytes: usize) -> Result<Buffer>;
    /// Copy `dst.len()` bytes from executor memory at `src` to the host (stream-ordered, then
    /// synchronised: only diagnostics and rank selection use it, never projection).
    unsafe fn read_to_host(&self, src: Addr, dst: &mut [u8]) -> Result<()>;
    /// Copy host bytes to executor memory at `dst` (stream-ordered, then synchronised: for
    /// tests, device checks and small setup, never the projection path).
    unsafe fn write_from_host(&self, src: &[u8], dst: Addr) -> Result<()>;
    /// Wait for all work issued so far.
    fn synchronize(&self) -> Result<()>;
    /// Run on `stream` (a `cudaStream_t` / `CUstream` as an integer; 0 is the legacy default
    /// stream). Executors without streams refuse.
    fn set_stream(&self, stream: usize) -> Result<()> {
        let _ = stream;
        Err(Error::InvalidArgument(format!("the {} executor has no streams", self.name())))
    }
    /// Whether the stream work is issued on is being captured into a CUDA graph: nothing may then
    /// allocate, free or synchronise (executors without streams never capture).
    fn is_capturing(&self) -> Result<bool> {
        Ok(false)
    }
    /// The stream work is issued on (0 where there is none).
    fn stream(&self) -> usize {
        0
    }

    unsafe fn gemm_strided_batched(&self, args: &GemmArgs) -> Result<()>;
    /// Several independent strided-batched GEMMs (`cublasGemmGroupedBatchedEx` on CUDA).
    unsafe fn gemm_grouped(&self, groups: &[GemmArgs]) -> Result<()> {
        // SAFETY: the trait's contract: the arguments describe valid memory of this executor's device.
        unsafe {
            for g in groups {
                g.check()?;
            }
            for g in groups {
                self.gemm_strided_batched(g)?;
            }
            Ok(())
        }
    }
    /// `dst = alpha * src + beta * dst` with a cast (see [`AxpbyArgs`]): computed in f64 and
    /// rounded once, to nearest with ties to even, into `dst`'s type, on every executor (the CPU
    /// executor and the CUDA kernels give the same bits; never through f32 on the way to f16/bf16).
    unsafe fn axpby(&self, args: &AxpbyArgs) -> Result<()>;
    unsafe fn dgmm(&self, args: &DgmmArgs) -> Result<()>;
    /// Device workspace bytes one routine call of `shape` needs (the routine's `*_bufferSize`);
    /// refuses a problem the routine cannot take ([`SvdUnitShape::check`]).
    fn svd_unit_workspace(&self, shape: &SvdUnitShape) -> Result<usize>;
    /// Fork `schedule.lanes` lanes off the work issued so far, run each lane's routine calls in
    /// order, and join them back (see [`LaneSchedule`]). The one SVD primitive: which call runs
    /// where, in which workspace, is planned by `ops::svd::schedule`. Convergence is reported
    /// through each call's `info` flags (read by the caller), not as an error; an error here is
    /// a failed launch or a refused schedule ([`LaneSchedule::check`], checked first).
    unsafe fn svd_lanes(&self, schedule: &LaneSchedule) -> Result<()>;
    /// Most lanes a [`LaneSchedule`] may use on this executor: the SVD schedule plans this many
    /// (per-matrix routines get `min(batch, svd_max_lanes)` workspace slices, so workspace sizes
    /// depend on it) and [`LaneSchedule::check`] refuses more. The CUDA executor: its stream pool
    /// (4); the CPU executor: rayon's thread count where the call runs, capped. The default, 1,
    /// runs every call in order; a wrapping executor forwards its inner executor's.
    fn svd_max_lanes(&self) -> usize {
        1
    }
    /// What the calls of the last `svd_lanes`, run with `diagnostics` set, measured: one entry
    /// per call of `schedule` (the same schedule). The default measures nothing (empty entries).
    unsafe fn svd_diagnostics(&self, schedule: &LaneSchedule) -> Result<Vec<UnitDiagnostics>> {
        schedule.check_lanes(self.svd_max_lanes())?;
        Ok(vec![UnitDiagnostics::default(); schedule.units.len()])
    }
    /// Workspace bytes `gesvd_strided_batched` needs for this problem with `algorithm`;
    /// refuses a problem the algorithm's routine cannot take. The layout is
    /// `ops::svd::schedule`'s, over [`Executor::svd_unit_workspace`].
    fn gesvd_buffer_size(
        &self,
        m: usize,
        n: usize,
        dtype: DType,
        batch: usize,
        algorithm: SvdAlgorithm,
    ) -> Result<usize> {
        crate::ops::svd::schedule::gesvd_workspace(self, m, n, dtype, batch, algorithm)
    }
    /// A thin SVD of a strided batch: [`Executor::gesvd_scheduled`] with one call.
    unsafe fn gesvd_strided_batched(&self, args: &GesvdArgs, work: Addr, work_bytes: usize) -> Result<()> {
        // SAFETY: the trait's contract, passed on.
        unsafe { self.gesvd_scheduled(&[GesvdCall { args: *args, work, work_bytes }], SvdRunOptions::default()) }
    }
    /// Several independent strided-batched thin SVDs (a list of shapes), each group with its own
    /// workspace slice. Every group is checked first ([`check_gesvd_calls`]), nothing runs if
    /// one fails. Non-convergence of matrix `i` of group `g` is
    /// `Error::NotConverged { problem: Some(g), index: i }` (the first such group, then matrix).
    unsafe fn gesvd_grouped(&self, calls: &[GesvdCall]) -> Result<()> {
        // SAFETY: the trait's contract, passed on.
        unsafe { self.gesvd_scheduled(calls, SvdRunOptions { grouped: true, diagnostics: false }) }
    }
    /// The SVD calls as `ops::svd::schedule` plans them over the lane primitives: one fork/join
    /// for all groups, then the `VT` copies and one read-back of the convergence flags. Executors
    /// do not override it (a recording wrapper does, to note the call before running the plan
    /// on itself).
    unsafe fn gesvd_scheduled(&self, calls: &[GesvdCall], options: SvdRunOptions) -> Result<()> {
        // SAFETY: the trait's contract, passed on.
        unsafe { crate::ops::svd::schedule::gesvd(self, calls, options) }
    }
    /// Workspace bytes `gesvdr_strided_batched` needs.
    #[allow(clippy::too_many_arguments)] // the routine's own problem parameters
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
        crate::ops::svd::schedule::gesvdr_workspace(self, m, n, TopK { k, p, niters }, dtype, batch)
    }
    /// Randomized top-`k` SVD (see [`GesvdrArgs`]), planned by `ops::svd::schedule`.
    unsafe fn gesvdr_strided_batched(&self, args: &GesvdrArgs, work: Addr, work_bytes: usize) -> Result<()> {
        // SAFETY: the trait's contract, passed on.
        unsafe { crate::ops::svd::schedule::gesvdr(self, args, work, work_bytes) }
    }
    /// Convergence information of the last SVD (`None` where the executor keeps none).
    fn last_svd_report(&self) -> Option<SvdReport> {
        None
    }
    /// Keep `report` as the last SVD's (the SVD schedule sets it; executors without state drop it).
    fn set_svd_report(&self, report: Option<SvdReport>) {
        let _ = report;
    }
    unsafe fn svd_sign_fix(&self, args: &SignFixArgs) -> Result<()>;
    /// Sum of squares of each matrix of a batch, accumulated in f64, returned to the host.
    unsafe fn sum_squares(&self, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> Result<Vec<f64>>;
    /// Number of NaN or infinite entries of each matrix of a batch, returned to the host.
    unsafe fn count_nonfinite(&self, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> Result<Vec<u64>>;
    /// `A[b] += alpha * I` on the diagonal of a batch of square `n x n` column-major matrices.
    unsafe fn add_diagonal(&self, n: usize, a: &Strided, batch: usize, alpha: f64) -> Result<()>;
    /// Sum over `count` pairs of vectors of `cos(a_v, b_v)` (0 where either vector is zero),
    /// accumulated in f64 and returned to the host. Both vectors share one f32/f64 type.
    unsafe fn cosine_sum(&self, a: &Vectors, b: &Vectors, count: usize) -> Result<f64>;
}
