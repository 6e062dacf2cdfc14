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

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod trace;

use crate::desc::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};

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
/// `CUBLAS_COMPUTE_64F`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComputeType {
    F32,
    F64,
}

/// A column-major operand of a strided batch: element `(i, j)` of batch entry `b` is at
/// `addr + (b * stride + i + j * ld) * size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strided {
    pub addr: Addr,
    pub dtype: DType,
    pub ld: usize,
    pub stride: usize,
}

/// `C[b] = alpha * op(A[b]) * op(B[b]) + beta * C[b]` for `b < batch`
/// (`cublasGemmStridedBatchedEx`). `C` is `m x n`, `op(A)` is `m x k`, `op(B)` is `k x n`.
/// With `beta == 0`, `C` is not read (NaN in `C` does not propagate), as in cuBLAS.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmArgs {
    pub transa: Op,
    pub transb: Op,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f64,
    pub a: Strided,
    pub b: Strided,
    pub beta: f64,
    pub c: Strided,
    pub batch: usize,
    pub compute: ComputeType,
}

fn need(routine: &'static str, ok: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::precondition(routine, msg()))
    }
}

impl GemmArgs {
    /// cuBLAS's rules for `cublasGemmStridedBatchedEx`: leading dimensions, the supported type
    /// combinations for each compute type, and (our addition) that the batch entries of `C` do
    /// not overlap each other.
    pub fn check(&self) -> Result<()> {
        const R: &str = "gemm_strided_batched";
        let (ar, _ac) = if self.transa == Op::N { (self.m, self.k) } else { (self.k, self.m) };
        let (br, _bc) = if self.transb == Op::N { (self.k, self.n) } else { (self.n, self.k) };
        need(R, self.batch >= 1, || "batch must be at least 1".into())?;
        need(R, self.a.ld >= ar.max(1), || format!("lda = {} < max(1, {ar})", self.a.ld))?;
        need(R, self.b.ld >= br.max(1), || format!("ldb = {} < max(1, {br})", self.b.ld))?;
        need(R, self.c.ld >= self.m.max(1), || format!("ldc = {} < max(1, {})", self.c.ld, self.m))?;
        need(R, self.batch == 1 || self.m == 0 || self.n == 0 || self.c.stride >= self.c.ld * (self.n - 1) + self.m, || {
            format!("strideC = {} lets batch entries of C overlap", self.c.stride)
        })?;
        use DType::*;
        let ok = matches!(
            (self.compute, self.a.dtype, self.b.dtype, self.c.dtype),
            (ComputeType::F64, F64, F64, F64)
                | (ComputeType::F32, F32, F32, F32)
                | (ComputeType::F32, F16, F16, F16 | F32)
                | (ComputeType::F32, BF16, BF16, BF16 | F32)
        );
        need(R, ok, || {
            format!(
                "unsupported type combination A={} B={} C={} compute={:?}",
                self.a.dtype.name(),
                self.b.dtype.name(),
                self.c.dtype.name(),
                self.compute
            )
        })
    }
}

/// A strided 2-D matrix for the element-wise primitives (arbitrary strides, any dtype).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strided2d {
    pub addr: Addr,
    pub dtype: DType,
    pub row_stride: usize,
    pub col_stride: usize,
    pub batch_stride: usize,
}

/// `dst = alpha * src + beta * dst`, element-wise over a batch of `rows x cols` matrices with
/// arbitrary strides and a dtype conversion (round to nearest even). With `beta == 0`, `dst` is
/// not read; with `alpha == 0`, `src` is not read (so `alpha = beta = 0` writes zeros). This one primitive maps every layout onto column-major scratch and back, casts, and
/// subtracts. `src` and `dst` must not overlap unless they are the same matrix (in-place scale).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AxpbyArgs {
    pub rows: usize,
    pub cols: usize,
    pub batch: usize,
    pub alpha: f64,
    pub src: Strided2d,
    pub beta: f64,
    pub dst: Strided2d,
}

/// `C = A * diag(x)` (`Right`) or `C = diag(x) * A` (`Left`), batched (`cublas<t>dgmm` per
/// entry). All of `A`, `x`, `C` share one compute dtype (f32 or f64). `C` may be `A` (in place).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DgmmArgs {
    pub left: bool,
    pub m: usize,
    pub n: usize,
    pub a: Strided,
    pub x: Addr,
    pub incx: usize,
    pub stride_x: usize,
    pub c: Strided,
    pub batch: usize,
}

impl DgmmArgs {
    pub fn check(&self) -> Result<()> {
        const R: &str = "dgmm";
        need(R, self.a.dtype.is_compute() && self.a.dtype == self.c.dtype, || "A and C must share an f32/f64 type".into())?;
        need(R, self.a.ld >= self.m.max(1) && self.c.ld >= self.m.max(1), || "lda and ldc must be >= max(1, m)".into())?;
        need(R, self.incx >= 1, || "incx must be >= 1".into())
    }
}

/// Thin SVD of a strided batch of column-major `m x n` matrices with `m >= n`
/// (`cusolverDnXgesvd` with `jobu = jobvt = 'S'`): `A = U diag(S) VT`, `U: m x n`, `S: n`
/// descending, `VT: n x n`. `A` may be overwritten. Non-convergence of entry `i` is
/// `Error::NotConverged { index: i }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GesvdArgs {
    pub m: usize,
    pub n: usize,
    pub a: Strided,
    pub s: Addr,
    pub stride_s: usize,
    pub u: Strided,
    pub vt: Strided,
    pub batch: usize,
}

impl GesvdArgs {
    pub fn check(&self) -> Result<()> {
        const R: &str = "gesvd";
        need(R, self.m >= self.n, || format!("gesvd needs m >= n, got m = {} n = {}", self.m, self.n))?;
        need(R, self.n >= 1, || "n must be at least 1".into())?;
        need(R, self.a.dtype.is_compute() && self.u.dtype == self.a.dtype && self.vt.dtype == self.a.dtype, || {
            "A, U and VT must share an f32/f64 type".into()
        })?;
        need(R, self.a.ld >= self.m && self.u.ld >= self.m && self.vt.ld >= self.n, || {
            format!("lda = {}, ldu = {}, ldvt = {} too small for {} x {}", self.a.ld, self.u.ld, self.vt.ld, self.m, self.n)
        })
    }
}

/// Sign convention of a thin SVD: for each of `count` singular triplets, if the entry of largest
/// magnitude of the left vector (first such entry on ties) is negative, negate the left and the
/// right vector. Vectors are strided: element `e` of vector `v` of batch entry `b` is at
/// `addr + (b * batch_stride + v * vec_stride + e * elem_stride) * size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignFixArgs {
    pub count: usize,
    pub batch: usize,
    pub left: Vectors,
    pub right: Vectors,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vectors {
    pub addr: Addr,
    pub dtype: DType,
    pub len: usize,
    pub elem_stride: usize,
    pub vec_stride: usize,
    pub batch_stride: usize,
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
    /// The stream work is issued on (0 where there is none).
    fn stream(&self) -> usize {
        0
    }

    unsafe fn gemm_strided_batched(&self, args: &GemmArgs) -> Result<()>;
    /// Several independent strided-batched GEMMs (`cublasGemmGroupedBatchedEx` on CUDA).
    unsafe fn gemm_grouped(&self, groups: &[GemmArgs]) -> Result<()> {
        for g in groups {
            g.check()?;
        }
        for g in groups {
            self.gemm_strided_batched(g)?;
        }
        Ok(())
    }
    unsafe fn axpby(&self, args: &AxpbyArgs) -> Result<()>;
    unsafe fn dgmm(&self, args: &DgmmArgs) -> Result<()>;
    /// Workspace bytes `gesvd_strided_batched` needs for this problem (`*_bufferSize`).
    fn gesvd_buffer_size(&self, m: usize, n: usize, dtype: DType, batch: usize) -> Result<usize>;
    unsafe fn gesvd_strided_batched(&self, args: &GesvdArgs, work: Addr, work_bytes: usize) -> Result<()>;
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
