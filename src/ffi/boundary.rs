//! The panic boundary, the thread-local last-error message, and checked conversions from C
//! arguments. All reading through caller pointers happens here, after a null and alignment check.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::types::*;
use crate::desc::{Device, MatDesc};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::project::{Side, Strategy};

thread_local! {
    /// The message of the last failed call on this thread ("" when none).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(msg: &str) {
    let clean: Vec<u8> = msg.bytes().map(|b| if b == 0 { b'?' } else { b }).collect();
    let c = CString::new(clean).unwrap_or_default();
    // `try_with`: during thread teardown the slot may be gone; then the message is dropped.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

pub(crate) fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|e| {
        let mut e = e.borrow_mut();
        if !e.as_bytes().is_empty() {
            *e = CString::default();
        }
    });
}

/// Pointer to the current message; valid until the next osft call on this thread.
pub(crate) fn last_error_ptr() -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    LAST_ERROR.try_with(|e| e.borrow().as_ptr()).unwrap_or(EMPTY.as_ptr() as *const c_char)
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic: (a non-string payload)".to_string()
    }
}

/// The boundary of every status-returning function: clears the last error, runs `f` under
/// `catch_unwind`, and turns an error or a panic into a status and a message.
pub(crate) fn guard(f: impl FnOnce() -> Result<()>) -> osft_status {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => osft_status::OSFT_STATUS_OK,
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            e.status().into()
        }
        Err(p) => {
            set_last_error(&panic_message(&*p));
            osft_status::OSFT_STATUS_INTERNAL
        }
    }
}

/// The boundary of functions that return a value instead of a status (version and string
/// queries, destructors): a panic yields `fallback` and leaves its message.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            set_last_error(&panic_message(&*p));
            fallback
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pointers.

fn null(arg: &str) -> Error {
    Error::NullPointer { arg: arg.to_string() }
}

fn check_ptr<T>(p: *const T, arg: &str) -> Result<()> {
    if p.is_null() {
        return Err(null(arg));
    }
    let align = std::mem::align_of::<T>();
    if (p as usize) % align != 0 {
        return Err(Error::Misaligned { arg: arg.to_string(), addr: p as usize, align });
    }
    Ok(())
}

/// A required output pointer: checked, not yet written.
pub(crate) fn out_ptr<T>(p: *mut T, arg: &str) -> Result<*mut T> {
    check_ptr(p as *const T, arg)?;
    Ok(p)
}

/// The context behind a handle.
///
/// # Safety
/// A non-null `ctx` must come from `osft_context_create` and not have been destroyed.
pub(crate) unsafe fn context<'a>(ctx: *const osft_context) -> Result<&'a osft_context> {
    // SAFETY: the C caller's contract (module docs of `ffi::api`): a non-null pointer is valid for what it describes.
    unsafe {
        check_ptr(ctx, "ctx")?;
        Ok(&*ctx)
    }
}

/// The projector behind a handle.
///
/// # Safety
/// A non-null `p` must come from `osft_projector_create` and not have been destroyed.
pub(crate) unsafe fn projector<'a>(p: *const osft_projector) -> Result<&'a osft_projector> {
    // SAFETY: the C caller's contract (module docs of `ffi::api`): a non-null pointer is valid for what it describes.
    unsafe {
        check_ptr(p, "projector")?;
        Ok(&*p)
    }
}

/// A host array of `len` elements (`NULL` allowed when `len == 0`).
///
/// # Safety
/// A non-null `p` must point to `len` readable elements.
pub(crate) unsafe fn slice<'a, T>(p: *const T, len: usize, arg: &str) -> Result<&'a [T]> {
    // SAFETY: the C caller's contract (module docs of `ffi::api`): a non-null pointer is valid for what it describes.
    unsafe {
        if len == 0 && p.is_null() {
            return Ok(&[]);
        }
        check_ptr(p, arg)?;
        if len > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
            return Err(Error::overflow(arg, format!("{len} elements")));
        }
        Ok(std::slice::from_raw_parts(p, len))
    }
}

/// Check a caller result array of `len` elements that must hold `need`; returns it as a slice
/// to be written only once the op has succeeded.
///
/// # Safety
/// A non-null `p` must point to `len` writable elements.
pub(crate) unsafe fn out_slice<'a, T>(p: *mut T, len: usize, need: usize, arg: &str) -> Result<&'a mut [T]> {
    // SAFETY: the C caller's contract (module docs of `ffi::api`): a non-null pointer is valid for what it describes.
    unsafe {
        if len < need {
            return Err(Error::shape(arg, format!("array of {len} elements is too short: {need} needed")));
        }
        if need == 0 {
            return Ok(&mut []);
        }
        check_ptr(p as *const T, arg)?;
        if need > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
            return Err(Error::overflow(arg, format!("{need} elements")));
        }
        Ok(std::slice::from_raw_parts_mut(p, need))
    }
}

// ---------------------------------------------------------------------------------------------
// Values.

fn to_usize(v: i64, arg: &str, field: &str, stride: bool) -> Result<usize> {
    if v < 0 {
        let msg = format!("{field} = {v} is negative");
        return Err(if stride { Error::stride(arg, msg) } else { Error::shape(arg, msg) });
    }
    usize::try_from(v).map_err(|_| Error::overflow(arg, format!("{field} = {v} does not fit the address space")))
}

pub(crate) fn dtype(v: i32, arg: &str) -> Result<DType> {
    DType::from_i32(v).ok_or_else(|| {
        Error::DtypeUnsupported(format!("{arg}: unknown dtype {v} (OSFT_DTYPE_F32 = 0, F64 = 1, F16 = 2, BF16 = 3)"))
    })
}

/// A compute type: `OSFT_DTYPE_F32` or `OSFT_DTYPE_F64`.
pub(crate) fn compute(v: i32) -> Result<DType> {
    let d = dtype(v, "compute")?;
    if !d.is_compute() {
        return Err(Error::DtypeUnsupported(format!(
            "compute type must be OSFT_DTYPE_F32 or OSFT_DTYPE_F64, not {}",
            d.name()
        )));
    }
    Ok(d)
}

pub(crate) fn side(v: i32) -> Result<Side> {
    Ok(match v {
        0 => Side::Left,
        1 => Side::Right,
        2 => Side::Both,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "side: unknown value {v} (OSFT_SIDE_LEFT = 0, RIGHT = 1, BOTH = 2)"
            )))
        }
    })
}

pub(crate) fn strategy(v: i32) -> Result<Strategy> {
    Ok(match v {
        0 => Strategy::Auto,
        1 => Strategy::Coefficient,
        2 => Strategy::CachedProjector,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "strategy: unknown value {v} (OSFT_STRATEGY_AUTO = 0, COEFFICIENT = 1, CACHED_PROJECTOR = 2)"
            )))
        }
    })
}

pub(crate) fn svd_algorithm(v: i32) -> Result<crate::SvdAlgorithm> {
    crate::SvdAlgorithm::from_raw(v).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "svd algorithm: unknown value {v} (OSFT_SVD_AUTO = 0, QR = 1, JACOBI = 2, JACOBI_BATCHED = 3, APPROX_BATCHED = 4, POLAR = 5, RANDOMIZED = 6)"
        ))
    })
}

pub(crate) fn math_mode(v: i32) -> Result<crate::MathMode> {
    crate::MathMode::from_raw(v).ok_or_else(|| {
        Error::InvalidArgument(format!("math mode: unknown value {v} (OSFT_MATH_EXACT = 0, TF32 = 1, BF16 = 2)"))
    })
}

pub(crate) fn backend(v: i32) -> Result<osft_backend> {
    Ok(match v {
        0 => osft_backend::OSFT_BACKEND_CPU,
        1 => osft_backend::OSFT_BACKEND_CUDA,
        2 => osft_backend::OSFT_BACKEND_AUTO,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "backend: unknown value {v} (OSFT_BACKEND_CPU = 0, CUDA = 1, AUTO = 2)"
            )))
        }
    })
}

/// Convert one descriptor with checked arithmetic. The core's `MatDesc::validate` then checks
/// null data, alignment, overflow of the extent and overlap, per op.
pub(crate) fn matrix(m: &osft_matrix, arg: &str) -> Result<MatDesc> {
    let dtype = dtype(m.dtype, arg)?;
    if m._reserved != 0 {
        return Err(Error::InvalidArgument(format!("{arg}: _reserved = {} must be 0", m._reserved)));
    }
    let device = match m.device {
        0 => {
            if m.device_ordinal != 0 {
                return Err(Error::InvalidArgument(format!(
                    "{arg}: device_ordinal = {} must be 0 for host memory",
                    m.device_ordinal
                )));
            }
            Device::Host
        }
        1 => {
            let o = u32::try_from(m.device_ordinal).map_err(|_| {
                Error::InvalidArgument(format!("{arg}: device_ordinal = {} is negative", m.device_ordinal))
            })?;
            Device::Cuda(o)
        }
        d => return Err(Error::InvalidArgument(format!("{arg}: unknown device {d} (OSFT_DEVICE_HOST = 0, CUDA = 1)"))),
    };
    Ok(MatDesc {
        addr: m.data as usize,
        dtype,
        rows: to_usize(m.rows, arg, "rows", false)?,
        cols: to_usize(m.cols, arg, "cols", false)?,
        row_stride: to_usize(m.row_stride, arg, "row_stride", true)?,
        col_stride: to_usize(m.col_stride, arg, "col_stride", true)?,
        batch: to_usize(m.batch, arg, "batch", false)?,
        batch_stride: to_usize(m.batch_stride, arg, "batch_stride", true)?,
        device,
    })
}

/// A required descriptor argument.
///
/// # Safety
/// A non-null `p` must point to a readable `osft_matrix`.
pub(crate) unsafe fn desc(p: *const osft_matrix, arg: &str) -> Result<MatDesc> {
    // SAFETY: the C caller's contract (module docs of `ffi::api`): a non-null pointer is valid for what it describes.
    unsafe {
        check_ptr(p, arg)?;
        matrix(&*p, arg)
    }
}

/// An optional descriptor argument (`NULL` = absent).
///
/// # Safety
/// As for [`desc`].
pub(crate) unsafe fn opt_desc(p: *const osft_matrix, arg: &str) -> Result<Option<MatDesc>> {
    // SAFETY: the C caller's contract (module docs of `ffi::api`): a non-null pointer is valid for what it describes.
    unsafe {
        if p.is_null() {
            Ok(None)
        } else {
            desc(p, arg).map(Some)
        }
    }
}

/// An array of `count` descriptors (`NULL` allowed when `count == 0`).
///
/// # Safety
/// A non-null `p` must point to `count` readable `osft_matrix` values.
pub(crate) unsafe fn desc_array(p: *const osft_matrix, count: usize, arg: &str) -> Result<Vec<MatDesc>> {
    // SAFETY: the C caller's contract (module docs of `ffi::api`): a non-null pointer is valid for what it describes.
    unsafe { slice(p, count, arg)?.iter().enumerate().map(|(i, m)| matrix(m, &format!("{arg}[{i}]"))).collect() }
}

/// A non-negative `int64_t` count or rank.
pub(crate) fn count(v: i64, arg: &str) -> Result<usize> {
    if v < 0 {
        return Err(Error::RankOutOfRange(format!("{arg} = {v} is negative")));
    }
    usize::try_from(v).map_err(|_| Error::overflow(arg, format!("{v} does not fit the address space")))
}

pub(crate) fn to_i64(v: usize, arg: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::overflow(arg, format!("{v} does not fit int64_t")))
}
