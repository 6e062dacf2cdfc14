//! The C functions: library and ABI versions, status names, the last error message.

use super::*;

/// Major version of the loaded library.
#[no_mangle]
pub extern "C" fn osft_version_major() -> u32 {
    MAJOR
}

/// Minor version of the loaded library.
#[no_mangle]
pub extern "C" fn osft_version_minor() -> u32 {
    MINOR
}

/// Patch version of the loaded library.
#[no_mangle]
pub extern "C" fn osft_version_patch() -> u32 {
    PATCH
}

/// ABI version of the loaded library; equal to `OSFT_ABI_VERSION` for a compatible header.
#[no_mangle]
pub extern "C" fn osft_abi_version() -> u32 {
    OSFT_ABI_VERSION
}

/// A static, human-readable name of a status ("ok", "null pointer", ...; "unknown status" for a
/// value that is not an `osft_status`). Never NULL, never freed.
#[no_mangle]
pub extern "C" fn osft_status_string(status: i32) -> *const c_char {
    crate::Status::from_code(status).map_or(c"unknown status", crate::Status::description).as_ptr()
}

/// The message of the last failed osft call on the calling thread, or "" when the last call
/// succeeded. Never NULL. The string is owned by osft and valid until the next osft call on this
/// thread (other than `osft_last_error_message`, `osft_status_string` and the version queries):
/// copy it to keep it.
#[no_mangle]
pub extern "C" fn osft_last_error_message() -> *const c_char {
    last_error_ptr()
}

/// Testing only: panics inside the panic boundary, to show that a panic becomes
/// `OSFT_STATUS_INTERNAL` with a message starting "panic: " instead of unwinding into C. Always
/// returns `OSFT_STATUS_INTERNAL`. Not for production use.
#[no_mangle]
pub extern "C" fn osft_debug_panic() -> osft_status {
    guard(|| panic!("osft_debug_panic called (testing the panic boundary)"))
}
