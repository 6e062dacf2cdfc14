//! The exported functions. Each is a thin shell: check and convert the arguments (in
//! [`super::boundary`]), call the Rust API, copy a result out only on success.
//!
//! # Safety (all functions)
//! Pointers must be NULL or valid for what the function documents: handles from the matching
//! `*_create` and not destroyed, descriptors pointing to readable `osft_matrix` values whose
//! data is valid memory of the described extent on the context's device, result arrays of the
//! stated length. Invalid non-null pointers cannot be detected from C; everything else can.

#![allow(clippy::missing_safety_doc, clippy::too_many_arguments)]

// In the order the header lists them (cbindgen follows the module order).
mod version;

mod context;

mod svd;

mod rank;

mod reconstruct;

mod project;

mod diagnostics;

pub use context::*;
pub use diagnostics::*;
pub use project::*;
pub use rank::*;
pub use reconstruct::*;
pub use svd::*;
pub use version::*;

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::types::*;
use crate::context::Context;
use crate::desc::MatDesc;
use crate::error::{Error, Result};
use crate::ffi::boundary::*;
use crate::ops::decompose::Parts;
use crate::ops::project::{self as project_op, Bases};
use crate::ops::reconstruct::Term;
use crate::ops::svd::{SvdOut, SvdProblem};
use crate::projector::Projector;
use crate::RankRule;

const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut v = 0u32;
    let mut i = 0;
    while i < b.len() {
        v = v * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    v
}
const MAJOR: u32 = parse_u32(env!("CARGO_PKG_VERSION_MAJOR"));
const MINOR: u32 = parse_u32(env!("CARGO_PKG_VERSION_MINOR"));
const PATCH: u32 = parse_u32(env!("CARGO_PKG_VERSION_PATCH"));
// The header's version macros must follow Cargo.toml.
const _: () = assert!(MAJOR == OSFT_VERSION_MAJOR && MINOR == OSFT_VERSION_MINOR && PATCH == OSFT_VERSION_PATCH);

// ---------------------------------------------------------------------------------------------
// Helpers shared by the sections.

fn copy_out(dst: &mut [f64], v: &[f64]) -> Result<()> {
    if v.len() != dst.len() {
        return Err(Error::Internal(format!("{} results for {} slots", v.len(), dst.len())));
    }
    dst.copy_from_slice(v);
    Ok(())
}

/// One term `U diag(S) V` from three optional descriptors: all NULL = absent, all set = present.
unsafe fn term(
    names: [&str; 3],
    u: *const osft_matrix,
    s: *const osft_matrix,
    v: *const osft_matrix,
) -> Result<Option<[MatDesc; 3]>> {
    // SAFETY: the C caller's contract (module docs): a non-null pointer is valid for what it describes.
    unsafe {
        let given = [u, s, v].iter().filter(|p| !p.is_null()).count();
        if given == 0 {
            return Ok(None);
        }
        if given < 3 {
            let missing = [u, s, v].iter().zip(names).find(|(p, _)| p.is_null()).map(|(_, n)| n).unwrap_or("?");
            return Err(Error::NullPointer {
                arg: format!("{missing} (give all of {}, {}, {} or none)", names[0], names[1], names[2]),
            });
        }
        Ok(Some([desc(u, names[0])?, desc(s, names[1])?, desc(v, names[2])?]))
    }
}

unsafe fn terms(
    u_high: *const osft_matrix,
    s_high: *const osft_matrix,
    v_high: *const osft_matrix,
    u_low: *const osft_matrix,
    s_low: *const osft_matrix,
    v_low: *const osft_matrix,
) -> Result<Vec<[MatDesc; 3]>> {
    // SAFETY: the C caller's contract (module docs): a non-null pointer is valid for what it describes.
    unsafe {
        let hi = term(["U_high", "S_high", "V_high"], u_high, s_high, v_high)?;
        let lo = term(["U_low", "S_low", "V_low"], u_low, s_low, v_low)?;
        Ok([hi, lo].into_iter().flatten().collect())
    }
}

fn as_terms(t: &[[MatDesc; 3]]) -> Vec<Term<'_>> {
    t.iter().map(|[u, s, v]| Term { u, s, v }).collect()
}

#[cfg(test)]
mod tests {
    use super::parse_u32;

    /// Multi-digit components too (today's version has single digits, which would hide a wrong
    /// place value).
    #[test]
    fn parse_u32_reads_decimal_version_components() {
        for (s, v) in [("0", 0), ("7", 7), ("10", 10), ("42", 42), ("205", 205), ("4294967295", u32::MAX)] {
            assert_eq!(parse_u32(s), v, "{s}");
        }
    }
}
