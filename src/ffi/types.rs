//! The types of the C ABI. Every enum is `int32_t`-sized with explicit values that never change
//! meaning; new values may be added. Functions take enum-valued arguments as `int32_t` and reject
//! unknown values with a status.

use std::ffi::c_void;
use std::sync::Arc;

use crate::context::Context;
use crate::desc::MatDesc;
use crate::error::Status;
use crate::projector::Projector;

/// ABI version of this header: bumped when an incompatible change is made — a removed function or
/// type, or a changed meaning of an existing function's arguments or results (version 2: the
/// rank conventions of `osft_select_rank`'s `OSFT_RANK_FRACTION` and `osft_adaptive_ranks`).
/// Compare with `osft_abi_version()` at run time.
pub const OSFT_ABI_VERSION: u32 = 2;
/// Version of the library this header was generated from (see `osft_version_major()` etc. for
/// the library actually loaded).
pub const OSFT_VERSION_MAJOR: u32 = 0;
pub const OSFT_VERSION_MINOR: u32 = 2;
pub const OSFT_VERSION_PATCH: u32 = 0;

/// Status of a call. `OSFT_STATUS_OK` is 0; any other value is a failure whose message
/// `osft_last_error_message()` returns. The values equal the Rust `osft::Status`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum osft_status {
    OSFT_STATUS_OK = 0,
    /// A required pointer (handle, descriptor, output, data) is NULL.
    OSFT_STATUS_NULL_POINTER = 1,
    /// Negative or inconsistent rows / cols / batch, or a wrong output length.
    OSFT_STATUS_INVALID_SHAPE = 2,
    /// A negative stride, or a layout an op cannot take.
    OSFT_STATUS_INVALID_STRIDE = 3,
    /// Distinct elements of one matrix, or an output and another argument, share memory.
    OSFT_STATUS_OVERLAP = 4,
    /// A size or offset overflows the address space.
    OSFT_STATUS_OVERFLOW = 5,
    /// A pointer is not aligned to its element size.
    OSFT_STATUS_MISALIGNED = 6,
    /// An unknown dtype, an unsupported compute type, or mismatched dtypes.
    OSFT_STATUS_DTYPE_UNSUPPORTED = 7,
    /// `k` (a rank) is negative or larger than `min(N, M)`.
    OSFT_STATUS_RANK_OUT_OF_RANGE = 8,
    /// Any other bad argument (an unknown enum value, a parameter out of its range).
    OSFT_STATUS_INVALID_ARGUMENT = 9,
    /// A routine's precondition does not hold: an explicit SVD algorithm (`osft_svd_algorithm`)
    /// that cannot serve the call, or else a bug in osft (please report it).
    OSFT_STATUS_PRECONDITION = 10,
    /// The SVD did not converge.
    OSFT_STATUS_NOT_CONVERGED = 11,
    /// The workspace set with `osft_context_set_workspace` is smaller than the op needs.
    OSFT_STATUS_WORKSPACE_TOO_SMALL = 12,
    /// A buffer is on another device than the context executes on.
    OSFT_STATUS_DEVICE_MISMATCH = 13,
    /// The requested backend is not available (no driver, no GPU, or not built in).
    OSFT_STATUS_BACKEND_UNAVAILABLE = 14,
    /// Memory (a workspace, a cached projector) could not be allocated.
    OSFT_STATUS_ALLOCATION_FAILED = 15,
    /// An internal error, including a caught panic (message `panic: ...`).
    OSFT_STATUS_INTERNAL = 16,
    /// A matrix to be factored (SVD, decompose) contains NaN or Inf.
    OSFT_STATUS_NON_FINITE = 17,
}

impl From<Status> for osft_status {
    fn from(s: Status) -> Self {
        use osft_status::*;
        match s {
            Status::Ok => OSFT_STATUS_OK,
            Status::NullPointer => OSFT_STATUS_NULL_POINTER,
            Status::InvalidShape => OSFT_STATUS_INVALID_SHAPE,
            Status::InvalidStride => OSFT_STATUS_INVALID_STRIDE,
            Status::Overlap => OSFT_STATUS_OVERLAP,
            Status::Overflow => OSFT_STATUS_OVERFLOW,
            Status::Misaligned => OSFT_STATUS_MISALIGNED,
            Status::DtypeUnsupported => OSFT_STATUS_DTYPE_UNSUPPORTED,
            Status::RankOutOfRange => OSFT_STATUS_RANK_OUT_OF_RANGE,
            Status::InvalidArgument => OSFT_STATUS_INVALID_ARGUMENT,
            Status::Precondition => OSFT_STATUS_PRECONDITION,
            Status::NotConverged => OSFT_STATUS_NOT_CONVERGED,
            Status::WorkspaceTooSmall => OSFT_STATUS_WORKSPACE_TOO_SMALL,
            Status::DeviceMismatch => OSFT_STATUS_DEVICE_MISMATCH,
            Status::BackendUnavailable => OSFT_STATUS_BACKEND_UNAVAILABLE,
            Status::AllocationFailed => OSFT_STATUS_ALLOCATION_FAILED,
            Status::Internal => OSFT_STATUS_INTERNAL,
            Status::NonFinite => OSFT_STATUS_NON_FINITE,
        }
    }
}

/// The other direction, exhaustive too: a status added to the C enum alone does not compile.
impl From<osft_status> for Status {
    fn from(s: osft_status) -> Self {
        use osft_status::*;
        match s {
            OSFT_STATUS_OK => Status::Ok,
            OSFT_STATUS_NULL_POINTER => Status::NullPointer,
            OSFT_STATUS_INVALID_SHAPE => Status::InvalidShape,
            OSFT_STATUS_INVALID_STRIDE => Status::InvalidStride,
            OSFT_STATUS_OVERLAP => Status::Overlap,
            OSFT_STATUS_OVERFLOW => Status::Overflow,
            OSFT_STATUS_MISALIGNED => Status::Misaligned,
            OSFT_STATUS_DTYPE_UNSUPPORTED => Status::DtypeUnsupported,
            OSFT_STATUS_RANK_OUT_OF_RANGE => Status::RankOutOfRange,
            OSFT_STATUS_INVALID_ARGUMENT => Status::InvalidArgument,
            OSFT_STATUS_PRECONDITION => Status::Precondition,
            OSFT_STATUS_NOT_CONVERGED => Status::NotConverged,
            OSFT_STATUS_WORKSPACE_TOO_SMALL => Status::WorkspaceTooSmall,
            OSFT_STATUS_DEVICE_MISMATCH => Status::DeviceMismatch,
            OSFT_STATUS_BACKEND_UNAVAILABLE => Status::BackendUnavailable,
            OSFT_STATUS_ALLOCATION_FAILED => Status::AllocationFailed,
            OSFT_STATUS_INTERNAL => Status::Internal,
            OSFT_STATUS_NON_FINITE => Status::NonFinite,
        }
    }
}

// The C values are the Rust ones: checked at compile time, variant by variant.
macro_rules! same_values {
    ($($c:expr => $r:expr),* $(,)?) => { $(const _: () = assert!($c as i32 == $r as i32);)* };
}
same_values!(
    osft_status::OSFT_STATUS_OK => Status::Ok,
    osft_status::OSFT_STATUS_NULL_POINTER => Status::NullPointer,
    osft_status::OSFT_STATUS_INVALID_SHAPE => Status::InvalidShape,
    osft_status::OSFT_STATUS_INVALID_STRIDE => Status::InvalidStride,
    osft_status::OSFT_STATUS_OVERLAP => Status::Overlap,
    osft_status::OSFT_STATUS_OVERFLOW => Status::Overflow,
    osft_status::OSFT_STATUS_MISALIGNED => Status::Misaligned,
    osft_status::OSFT_STATUS_DTYPE_UNSUPPORTED => Status::DtypeUnsupported,
    osft_status::OSFT_STATUS_RANK_OUT_OF_RANGE => Status::RankOutOfRange,
    osft_status::OSFT_STATUS_INVALID_ARGUMENT => Status::InvalidArgument,
    osft_status::OSFT_STATUS_PRECONDITION => Status::Precondition,
    osft_status::OSFT_STATUS_NOT_CONVERGED => Status::NotConverged,
    osft_status::OSFT_STATUS_WORKSPACE_TOO_SMALL => Status::WorkspaceTooSmall,
    osft_status::OSFT_STATUS_DEVICE_MISMATCH => Status::DeviceMismatch,
    osft_status::OSFT_STATUS_BACKEND_UNAVAILABLE => Status::BackendUnavailable,
    osft_status::OSFT_STATUS_ALLOCATION_FAILED => Status::AllocationFailed,
    osft_status::OSFT_STATUS_INTERNAL => Status::Internal,
    osft_status::OSFT_STATUS_NON_FINITE => Status::NonFinite,
    osft_dtype::OSFT_DTYPE_F32 => crate::DType::F32,
    osft_dtype::OSFT_DTYPE_F64 => crate::DType::F64,
    osft_dtype::OSFT_DTYPE_F16 => crate::DType::F16,
    osft_dtype::OSFT_DTYPE_BF16 => crate::DType::BF16,
    osft_side::OSFT_SIDE_LEFT => crate::Side::Left,
    osft_side::OSFT_SIDE_RIGHT => crate::Side::Right,
    osft_side::OSFT_SIDE_BOTH => crate::Side::Both,
    osft_strategy::OSFT_STRATEGY_AUTO => crate::Strategy::Auto,
    osft_strategy::OSFT_STRATEGY_COEFFICIENT => crate::Strategy::Coefficient,
    osft_strategy::OSFT_STRATEGY_CACHED_PROJECTOR => crate::Strategy::CachedProjector,
);

/// Element type of a matrix (`osft_matrix.dtype`) or a compute type (`compute` arguments:
/// F32 or F64 only). The values equal the Rust `osft::DType`. Every conversion into F32, F16 or
/// BF16, on the CPU and on CUDA alike, rounds once, to nearest with ties to even, from the exact
/// source value, so both executors give the same bits.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum osft_dtype {
    OSFT_DTYPE_F32 = 0,
    OSFT_DTYPE_F64 = 1,
    /// IEEE binary16.
    OSFT_DTYPE_F16 = 2,
    /// bfloat16.
    OSFT_DTYPE_BF16 = 3,
}

/// Where a buffer lives (`osft_matrix.device`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum osft_device {
    OSFT_DEVICE_HOST = 0,
    /// CUDA device memory of `osft_matrix.device_ordinal`.
    OSFT_DEVICE_CUDA = 1,
}

/// Which side(s) a projection acts on. The values equal the Rust `osft::Side`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum osft_side {
    /// U side: `X <- X - U_high (U_high^T X)`.
    OSFT_SIDE_LEFT = 0,
    /// V side: `X <- X - (X V_high^T) V_high`.
    OSFT_SIDE_RIGHT = 1,
    /// Both: `X <- (I - U_h U_h^T) X (I - V_h^T V_h)`.
    OSFT_SIDE_BOTH = 2,
}

/// Which executor a context runs on.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum osft_backend {
    /// Host memory, the embedded default.
    OSFT_BACKEND_CPU = 0,
    /// CUDA device memory on the caller's stream (cuBLAS, cuSOLVER, NVRTC, loaded at run time).
    /// Without a usable GPU (compute capability 7.5 or newer), `osft_context_create` returns
    /// `OSFT_STATUS_BACKEND_UNAVAILABLE`.
    OSFT_BACKEND_CUDA = 1,
    /// CUDA when it is available, otherwise the CPU (query the choice with
    /// `osft_context_backend`).
    OSFT_BACKEND_AUTO = 2,
}

/// How a projector evaluates. The values equal the Rust `osft::Strategy`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum osft_strategy {
    /// Pick by flop count and memory: the cached projector only when `9 k > 5 n`
    /// (`k > 0.5556 n`), its `n x n` matrix is at most 64 MiB, and the data is f32/f64.
    OSFT_STRATEGY_AUTO = 0,
    /// `B (B^T X)`: `4 N M k` flops, `k`-sized scratch.
    OSFT_STRATEGY_COEFFICIENT = 1,
    /// `P X` with `P = I - B B^T` cached (`n x n`, f32/f64 bases only).
    OSFT_STRATEGY_CACHED_PROJECTOR = 2,
}

/// A rank-selection rule for `osft_select_rank`; `param` is the rule's parameter.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum osft_rank_rule {
    /// `k = param` (a whole number in `[0, R]`).
    OSFT_RANK_FIXED = 0,
    /// `k = int(R * param)`, `param` in `[0, 1]`: the double product truncated, as PEFT OSF's
    /// float `effective_rank` (`0.29 * 100 = 28.999999999999996` gives 28).
    OSFT_RANK_FRACTION = 1,
    /// Smallest `k` whose energy `sum_{i<k} s_i^2` reaches `param * sum s_i^2`, `param` in `[0, 1]`.
    OSFT_RANK_ENERGY = 2,
    /// Entropy effective rank `round(exp(H(s / ||s||_1)))`; `param` is ignored.
    OSFT_RANK_ENTROPY_EFFECTIVE = 3,
}

/// SVD algorithm of a context (`osft_context_set_svd_algorithm`). The values equal the Rust
/// `osft::SvdAlgorithm`. Each names the cuSOLVER routine a CUDA context calls; a CPU context
/// enforces the same routine's preconditions and computes an exact SVD.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum osft_svd_algorithm {
    /// `gesvdjBatched` for matrices up to 32 x 32, `Xgesvd` above; never an approximate method.
    OSFT_SVD_AUTO = 0,
    /// QR-based `cusolverDnXgesvd`, one matrix at a time (concurrent streams), any size.
    OSFT_SVD_QR = 1,
    /// Jacobi `cusolverDn<t>gesvdj`, one matrix at a time (concurrent streams), any size.
    OSFT_SVD_JACOBI = 2,
    /// `cusolverDn<t>gesvdjBatched`: the whole batch in one call; `N, M <= 32`, else
    /// `OSFT_STATUS_PRECONDITION`.
    OSFT_SVD_JACOBI_BATCHED = 3,
    /// `cusolverDn<t>gesvdaStridedBatched`: APPROXIMATE (works on the Gram matrix: small
    /// singular values, below ~sqrt(eps) times the largest, and their vectors are inaccurate);
    /// cuSOLVER's residual norm is checked.
    OSFT_SVD_APPROX_BATCHED = 4,
    /// Polar-decomposition `cusolverDnXgesvdp`, one matrix at a time; its `h_err_sigma` is
    /// checked.
    OSFT_SVD_POLAR = 5,
    /// Randomized `cusolverDnXgesvdr`: APPROXIMATE, top `k` only. Valid only for
    /// `osft_decompose` with `U_low`, `S_low` and `V_low` NULL (else, and for `osft_svd` /
    /// `osft_svd_list`, `OSFT_STATUS_INVALID_ARGUMENT`) and `1 <= k < min(N, M)` (else
    /// `OSFT_STATUS_PRECONDITION`); the oversampling is `min(10, min(N, M) - k - 1)`.
    OSFT_SVD_RANDOMIZED = 6,
}

/// Math mode of a context's projection and reconstruction GEMMs on f32 data
/// (`osft_context_set_math_mode`). The values equal the Rust `osft::MathMode`. f32 accumulation
/// in every mode; f64 data is always exact; a CPU context computes exactly in every mode.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum osft_math_mode {
    /// `CUBLAS_COMPUTE_32F`: full f32 products (~1e-7 relative).
    OSFT_MATH_EXACT = 0,
    /// `CUBLAS_COMPUTE_32F_FAST_TF32`: inputs rounded to TF32 (10-bit mantissa), ~1e-3 relative
    /// error per product.
    OSFT_MATH_TF32 = 1,
    /// `CUBLAS_COMPUTE_32F_FAST_16BF`: inputs rounded to bf16 (7-bit mantissa), ~1e-2 relative
    /// error per product.
    OSFT_MATH_BF16 = 2,
}

/// A (batched) strided matrix in caller memory: the plain-C face of the Rust `osft::MatDesc`,
/// shaped so that a DLPack `DLTensor` maps onto it without a copy.
///
/// Element `(b, i, j)` is element number `b * batch_stride + i * row_stride + j * col_stride` of
/// the array at `data`: strides are in elements, never bytes. Row-major is `row_stride = cols`,
/// `col_stride = 1`; column-major `row_stride = 1`, `col_stride = rows`; a transposed view swaps
/// them. A single matrix has `batch = 1` (`batch_stride` is then ignored by the layout but must
/// not be negative). Negative sizes are `OSFT_STATUS_INVALID_SHAPE`, negative strides
/// `OSFT_STATUS_INVALID_STRIDE`; a zero stride over an extent > 1 (a broadcast) is
/// `OSFT_STATUS_OVERLAP`. Every field is explicit: no padding on 64-bit targets (72 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct osft_matrix {
    /// First element; host pointer for `OSFT_DEVICE_HOST`, device pointer for `OSFT_DEVICE_CUDA`.
    pub data: *mut c_void,
    /// An `osft_dtype` value.
    pub dtype: i32,
    /// An `osft_device` value: 0 host, 1 CUDA.
    pub device: i32,
    /// CUDA device ordinal (`>= 0`); must be 0 for host memory.
    pub device_ordinal: i32,
    /// Reserved for future use: must be 0.
    pub _reserved: i32,
    pub rows: i64,
    pub cols: i64,
    /// Elements between `(i, j)` and `(i + 1, j)`.
    pub row_stride: i64,
    /// Elements between `(i, j)` and `(i, j + 1)`.
    pub col_stride: i64,
    /// Number of matrices (at least 1).
    pub batch: i64,
    /// Elements between matrix `b` and `b + 1`.
    pub batch_stride: i64,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<osft_matrix>() == 72);
    assert!(std::mem::align_of::<osft_matrix>() == 8);
    assert!(std::mem::offset_of!(osft_matrix, rows) == 24);
    assert!(std::mem::offset_of!(osft_matrix, batch_stride) == 64);
};

/// An executor (CPU or CUDA) with its workspace and, for CUDA, the caller's stream.
/// Opaque: create with `osft_context_create`, free with `osft_context_destroy`. A context may
/// be used from several threads (its ops are serialised); use one per thread for parallelism.
pub struct osft_context {
    pub(crate) ctx: Arc<Context>,
    pub(crate) backend: osft_backend,
}

/// A projector for repeated projection against the same frozen bases. Opaque: create with
/// `osft_projector_create`, free with `osft_projector_destroy`. It keeps its context alive (a
/// context destroyed first is freed when its last projector is) and reads the caller's basis
/// memory on every apply: keep the bases alive and unchanged while the projector exists.
pub struct osft_projector {
    pub(crate) ctx: Arc<Context>,
    pub(crate) proj: Projector<'static>,
    /// The bases, for messages and for the Rust tests.
    #[allow(dead_code)]
    pub(crate) bases: (Option<MatDesc>, Option<MatDesc>),
}
