//! Errors of the library and their stable status codes.
//!
//! Every fault has its own variant so that a caller (and the C ABI, which maps each variant to an
//! `OSFT_STATUS_*` code) can tell bad input from numerical failure from a missing backend.

/// Stable numeric status codes. The values are part of the C ABI and never change meaning.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Ok = 0,
    NullPointer = 1,
    InvalidShape = 2,
    InvalidStride = 3,
    Overlap = 4,
    Overflow = 5,
    Misaligned = 6,
    DtypeUnsupported = 7,
    RankOutOfRange = 8,
    InvalidArgument = 9,
    Precondition = 10,
    NotConverged = 11,
    WorkspaceTooSmall = 12,
    DeviceMismatch = 13,
    BackendUnavailable = 14,
    AllocationFailed = 15,
    Internal = 16,
    NonFinite = 17,
}

impl Status {
    /// Every status, in code order.
    pub const ALL: [Status; 18] = [
        Status::Ok,
        Status::NullPointer,
        Status::InvalidShape,
        Status::InvalidStride,
        Status::Overlap,
        Status::Overflow,
        Status::Misaligned,
        Status::DtypeUnsupported,
        Status::RankOutOfRange,
        Status::InvalidArgument,
        Status::Precondition,
        Status::NotConverged,
        Status::WorkspaceTooSmall,
        Status::DeviceMismatch,
        Status::BackendUnavailable,
        Status::AllocationFailed,
        Status::Internal,
        Status::NonFinite,
    ];

    /// The status with numeric code `code`, if there is one.
    pub fn from_code(code: i32) -> Option<Status> {
        Self::ALL.iter().copied().find(|s| *s as i32 == code)
    }

    /// A short human-readable name (what `osft_status_string` returns).
    pub fn description(self) -> &'static std::ffi::CStr {
        match self {
            Status::Ok => c"ok",
            Status::NullPointer => c"null pointer",
            Status::InvalidShape => c"invalid shape",
            Status::InvalidStride => c"invalid stride",
            Status::Overlap => c"overlapping memory",
            Status::Overflow => c"size overflow",
            Status::Misaligned => c"misaligned pointer",
            Status::DtypeUnsupported => c"unsupported dtype",
            Status::RankOutOfRange => c"rank out of range",
            Status::InvalidArgument => c"invalid argument",
            Status::Precondition => c"precondition violated",
            Status::NotConverged => c"SVD did not converge",
            Status::WorkspaceTooSmall => c"workspace too small",
            Status::DeviceMismatch => c"device mismatch",
            Status::BackendUnavailable => c"backend unavailable",
            Status::AllocationFailed => c"allocation failed",
            Status::Internal => c"internal error",
            Status::NonFinite => c"non-finite input",
        }
    }
}

// `ALL` holds the codes 0, 1, 2, ... in order, so `from_code` is the inverse of `as i32`.
const _: () = {
    let mut i = 0;
    while i < Status::ALL.len() {
        assert!(Status::ALL[i] as i32 == i as i32);
        i += 1;
    }
};

/// Everything that can go wrong. Messages name the offending argument.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("{arg}: null pointer")]
    NullPointer { arg: String },
    #[error("{arg}: {msg}")]
    InvalidShape { arg: String, msg: String },
    #[error("{arg}: {msg}")]
    InvalidStride { arg: String, msg: String },
    #[error("{arg}: {msg}")]
    Overlap { arg: String, msg: String },
    #[error("{arg}: size or offset overflows the address space ({msg})")]
    Overflow { arg: String, msg: String },
    #[error("{arg}: address {addr:#x} is not aligned to the {align}-byte element size")]
    Misaligned { arg: String, addr: usize, align: usize },
    #[error("{0}")]
    DtypeUnsupported(String),
    #[error("{0}")]
    RankOutOfRange(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// A routine's documented preconditions do not hold (cuBLAS/cuSOLVER rules such as `gesvd`'s
    /// `m >= n` or `lda >= max(1, m)`): an explicitly chosen SVD algorithm that cannot serve the
    /// call, or else a bug in osft.
    #[error("precondition of {routine} violated: {msg}")]
    Precondition { routine: &'static str, msg: String },
    /// Matrix `index` of a strided batch did not converge; `problem` names the problem of a
    /// list (`svd_list`) or the group of a grouped call (`Executor::gesvd_grouped`), `None` for
    /// a single SVD.
    #[error("SVD did not converge for matrix {index} of the batch{}", .problem.map(|p| format!(" of problem {p}")).unwrap_or_default())]
    NotConverged { problem: Option<usize>, index: usize },
    #[error("workspace too small: {needed} bytes needed, {given} given")]
    WorkspaceTooSmall { needed: usize, given: usize },
    #[error("{0}")]
    DeviceMismatch(String),
    #[error("{0}")]
    BackendUnavailable(String),
    #[error("allocation of {bytes} bytes failed")]
    AllocationFailed { bytes: usize },
    #[error("internal error: {0}")]
    Internal(String),
    /// NaN or Inf in a matrix an SVD would factor (checked before factoring: LAPACK-style SVDs
    /// may loop or return garbage on non-finite input).
    #[error("{arg}: matrix {index} of the batch contains NaN or Inf")]
    NonFinite { arg: String, index: usize },
}

impl Error {
    /// The stable status code of this error.
    pub fn status(&self) -> Status {
        match self {
            Error::NullPointer { .. } => Status::NullPointer,
            Error::InvalidShape { .. } => Status::InvalidShape,
            Error::InvalidStride { .. } => Status::InvalidStride,
            Error::Overlap { .. } => Status::Overlap,
            Error::Overflow { .. } => Status::Overflow,
            Error::Misaligned { .. } => Status::Misaligned,
            Error::DtypeUnsupported(_) => Status::DtypeUnsupported,
            Error::RankOutOfRange(_) => Status::RankOutOfRange,
            Error::InvalidArgument(_) => Status::InvalidArgument,
            Error::Precondition { .. } => Status::Precondition,
            Error::NotConverged { .. } => Status::NotConverged,
            Error::WorkspaceTooSmall { .. } => Status::WorkspaceTooSmall,
            Error::DeviceMismatch(_) => Status::DeviceMismatch,
            Error::BackendUnavailable(_) => Status::BackendUnavailable,
            Error::AllocationFailed { .. } => Status::AllocationFailed,
            Error::Internal(_) => Status::Internal,
            Error::NonFinite { .. } => Status::NonFinite,
        }
    }

    pub(crate) fn shape(arg: &str, msg: impl Into<String>) -> Self {
        Error::InvalidShape { arg: arg.to_string(), msg: msg.into() }
    }
    pub(crate) fn stride(arg: &str, msg: impl Into<String>) -> Self {
        Error::InvalidStride { arg: arg.to_string(), msg: msg.into() }
    }
    pub(crate) fn overlap(arg: &str, msg: impl Into<String>) -> Self {
        Error::Overlap { arg: arg.to_string(), msg: msg.into() }
    }
    pub(crate) fn overflow(arg: &str, msg: impl Into<String>) -> Self {
        Error::Overflow { arg: arg.to_string(), msg: msg.into() }
    }
    pub(crate) fn precondition(routine: &'static str, msg: impl Into<String>) -> Self {
        Error::Precondition { routine, msg: msg.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
