//! The stable C ABI: `include/osft.h` is generated from this module by cbindgen (see `build.rs`
//! and `cbindgen.toml`) and committed; `tests/header_fresh.rs` fails when the two differ.
//!
//! Conventions (the header repeats them for C readers):
//! - every function returns an [`osft_status`] (except the version and string queries and the
//!   null-safe destructors), and on failure sets a thread-local message read with
//!   [`osft_last_error_message`];
//! - every exported function runs inside a panic boundary: a panic becomes
//!   `OSFT_STATUS_INTERNAL` with a message starting `panic: `, and never unwinds into C;
//! - every pointer argument is checked (a `NULL` handle, descriptor or output pointer is
//!   `OSFT_STATUS_NULL_POINTER`) and every descriptor converted with checked arithmetic before
//!   the core validates shapes, strides, overlap, dtypes, devices and ranks — all before anything
//!   is written: a rejected call leaves every caller buffer as it was;
//! - enum-valued parameters are plain `int32_t` (an unknown value is an error status, never
//!   undefined behaviour); the `osft_*` enums name the values.
//!
//! Layering, after cudarc: [`types`] (the C-visible types), [`boundary`] (panic boundary,
//! last-error message, checked conversions: all the `unsafe` pointer reading lives there), then
//! the exported functions in [`api`].

#![allow(non_camel_case_types)]

pub mod api;
pub mod boundary;
pub mod types;

pub use api::*;
pub use types::*;
