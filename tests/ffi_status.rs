//! The C ABI's library-wide surface, called from Rust: version numbers against the package,
//! status codes equal to the Rust ones with a string for each, the panic boundary (a panic
//! becomes `OSFT_STATUS_INTERNAL` with its message, and the library keeps working), and the
//! thread-local last-error message.

use std::ffi::CStr;
use std::ptr::null_mut;

use osft::ffi::osft_status::*;
use osft::ffi::*;
use osft::Status;
use osft_test_support::capi::*;

#[test]
fn versions_match_the_package() {
    assert_eq!(osft_version_major().to_string(), env!("CARGO_PKG_VERSION_MAJOR"));
    assert_eq!(osft_version_minor().to_string(), env!("CARGO_PKG_VERSION_MINOR"));
    assert_eq!(osft_version_patch().to_string(), env!("CARGO_PKG_VERSION_PATCH"));
    assert_eq!(osft_abi_version(), OSFT_ABI_VERSION);
    assert_eq!(
        (OSFT_VERSION_MAJOR, OSFT_VERSION_MINOR, OSFT_VERSION_PATCH),
        (osft_version_major(), osft_version_minor(), osft_version_patch())
    );
}

#[test]
fn status_values_equal_the_rust_ones() {
    let all = [
        (OSFT_STATUS_OK, Status::Ok),
        (OSFT_STATUS_NULL_POINTER, Status::NullPointer),
        (OSFT_STATUS_INVALID_SHAPE, Status::InvalidShape),
        (OSFT_STATUS_INVALID_STRIDE, Status::InvalidStride),
        (OSFT_STATUS_OVERLAP, Status::Overlap),
        (OSFT_STATUS_OVERFLOW, Status::Overflow),
        (OSFT_STATUS_MISALIGNED, Status::Misaligned),
        (OSFT_STATUS_DTYPE_UNSUPPORTED, Status::DtypeUnsupported),
        (OSFT_STATUS_RANK_OUT_OF_RANGE, Status::RankOutOfRange),
        (OSFT_STATUS_INVALID_ARGUMENT, Status::InvalidArgument),
        (OSFT_STATUS_PRECONDITION, Status::Precondition),
        (OSFT_STATUS_NOT_CONVERGED, Status::NotConverged),
        (OSFT_STATUS_WORKSPACE_TOO_SMALL, Status::WorkspaceTooSmall),
        (OSFT_STATUS_DEVICE_MISMATCH, Status::DeviceMismatch),
        (OSFT_STATUS_BACKEND_UNAVAILABLE, Status::BackendUnavailable),
        (OSFT_STATUS_ALLOCATION_FAILED, Status::AllocationFailed),
        (OSFT_STATUS_INTERNAL, Status::Internal),
        (OSFT_STATUS_NON_FINITE, Status::NonFinite),
    ];
    for (i, (c, r)) in all.iter().enumerate() {
        assert_eq!(*c as i32, *r as i32);
        assert_eq!(*c as i32, i as i32);
        assert_eq!(osft_status::from(*r), *c);
        let s = unsafe { CStr::from_ptr(osft_status_string(*c as i32)) }.to_str().unwrap();
        assert!(!s.is_empty() && s != "unknown status", "{c:?}: {s:?}");
    }
    for bad in [-1, 18, i32::MAX, i32::MIN] {
        assert_eq!(unsafe { CStr::from_ptr(osft_status_string(bad)) }.to_str().unwrap(), "unknown status");
    }
    assert_eq!(osft_dtype::OSFT_DTYPE_BF16 as i32, osft::DType::BF16 as i32);
    assert_eq!(osft_side::OSFT_SIDE_BOTH as i32, osft::Side::Both as i32);
    assert_eq!(osft_strategy::OSFT_STRATEGY_CACHED_PROJECTOR as i32, osft::Strategy::CachedProjector as i32);
    assert_eq!(std::mem::size_of::<osft_matrix>(), 72);
}

#[test]
fn panic_becomes_internal_status_with_message() {
    let st = osft_debug_panic();
    let m = expect(st, OSFT_STATUS_INTERNAL);
    assert!(m.starts_with("panic: "), "{m:?}");
    // The library keeps working on this thread afterwards, and the message is cleared by the
    // next successful call.
    let c = Ctx::cpu();
    assert_eq!(msg(), "");
    let mut b = -1;
    expect(unsafe { osft_context_backend(c.0, &mut b) }, OSFT_STATUS_OK);
    assert_eq!(b, osft_backend::OSFT_BACKEND_CPU as i32);
}

#[test]
fn last_error_is_thread_local() {
    let mut out = null_mut();
    let st = unsafe { osft_context_create(7, 0, &mut out) };
    expect(st, OSFT_STATUS_INVALID_ARGUMENT);
    let other = std::thread::spawn(msg).join().unwrap();
    assert_eq!(other, "", "another thread sees this thread's message");
    assert!(msg().contains("backend"));
}
