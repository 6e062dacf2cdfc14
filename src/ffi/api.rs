//! The exported functions. Each is a thin shell: check and convert the arguments (in
//! [`super::boundary`]), call the Rust API, copy a result out only on success.
//!
//! # Safety (all functions)
//! Pointers must be NULL or valid for what the function documents: handles from the matching
//! `*_create` and not destroyed, descriptors pointing to readable `osft_matrix` values whose
//! data is valid memory of the described extent on the context's device, result arrays of the
//! stated length. Invalid non-null pointers cannot be detected from C; everything else can.

#![allow(clippy::missing_safety_doc, clippy::too_many_arguments)]

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::boundary::*;
use super::types::*;
use crate::context::Context;
use crate::desc::MatDesc;
use crate::error::{Error, Result};
use crate::ops::decompose::Parts;
use crate::ops::project::{self, Bases};
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

// =============================================================================================
// Versions, statuses, messages.

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

// =============================================================================================
// Contexts.

/// Create a context on `backend` (an `osft_backend` value) and store it in `*out`.
///
/// - `OSFT_BACKEND_CPU`: host memory; `device_ordinal` must be 0.
/// - `OSFT_BACKEND_CUDA`: CUDA device `device_ordinal`, on its legacy default stream until
///   `osft_context_set_stream`. Without an NVIDIA driver, a device, or the CUDA libraries (found
///   at run time), or in a build without the `cuda` feature, this is
///   `OSFT_STATUS_BACKEND_UNAVAILABLE` with the reason in the message.
/// - `OSFT_BACKEND_AUTO`: CUDA device `device_ordinal` when it is usable, else the CPU (ask
///   `osft_context_backend` which one you got).
///
/// `*out` is written only on success. Free the context with `osft_context_destroy`.
#[no_mangle]
pub unsafe extern "C" fn osft_context_create(
    backend: i32,
    device_ordinal: i32,
    out: *mut *mut osft_context,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let out = out_ptr(out, "out")?;
        let b = super::boundary::backend(backend)?;
        let ordinal = u32::try_from(device_ordinal)
            .map_err(|_| Error::InvalidArgument(format!("device_ordinal = {device_ordinal} is negative")))?;
        let (ctx, chosen) = match b {
            osft_backend::OSFT_BACKEND_CPU => {
                if ordinal != 0 {
                    return Err(Error::InvalidArgument(format!("device_ordinal = {ordinal}: a CPU context takes 0")));
                }
                (Context::cpu(), osft_backend::OSFT_BACKEND_CPU)
            }
            osft_backend::OSFT_BACKEND_CUDA => {
                let c = Context::cuda(ordinal).map_err(|e| match e {
                    Error::BackendUnavailable(m) => Error::BackendUnavailable(format!(
                        "OSFT_BACKEND_CUDA (device {ordinal}) is unavailable: {m}; use OSFT_BACKEND_AUTO to fall back to the CPU"
                    )),
                    e => e,
                })?;
                (c, osft_backend::OSFT_BACKEND_CUDA)
            }
            osft_backend::OSFT_BACKEND_AUTO => match Context::cuda(ordinal) {
                Ok(c) => (c, osft_backend::OSFT_BACKEND_CUDA),
                Err(_) => (Context::cpu(), osft_backend::OSFT_BACKEND_CPU),
            },
        };
        *out = Box::into_raw(Box::new(osft_context { ctx: Arc::new(ctx), backend: chosen }));
        Ok(())
    })
}

/// Destroy a context (NULL is a no-op). Projectors created from it stay valid: the context's
/// resources are freed with the last of them.
#[no_mangle]
pub unsafe extern "C" fn osft_context_destroy(ctx: *mut osft_context) {
    guard_value((), || {
        if !ctx.is_null() {
            // SAFETY: a non-null handle came from its `*_create` and is destroyed once (the
            // caller's contract).
            drop(unsafe { Box::from_raw(ctx) });
        }
    })
}

/// The backend the context runs on (`OSFT_BACKEND_CPU` or `OSFT_BACKEND_CUDA`; never AUTO).
#[no_mangle]
pub unsafe extern "C" fn osft_context_backend(ctx: *mut osft_context, backend: *mut i32) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let out = out_ptr(backend, "backend")?;
        *out = c.backend as i32;
        Ok(())
    })
}

/// Issue the context's work on `stream` (a `cudaStream_t`, e.g. PyTorch's current stream) from
/// now on; NULL is the legacy default stream. A CPU context has no streams: it accepts NULL (a
/// no-op) and returns `OSFT_STATUS_INVALID_ARGUMENT` for anything else.
#[no_mangle]
pub unsafe extern "C" fn osft_context_set_stream(ctx: *mut osft_context, stream: *mut c_void) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        if c.backend == osft_backend::OSFT_BACKEND_CPU {
            if !stream.is_null() {
                return Err(Error::InvalidArgument(
                    "a CPU context has no streams: only NULL (the default stream) is accepted".into(),
                ));
            }
            return Ok(());
        }
        c.ctx.set_stream(stream as usize)
    })
}

/// The context's stream in `*stream` (NULL: the legacy default stream, and always for a CPU
/// context).
#[no_mangle]
pub unsafe extern "C" fn osft_context_get_stream(ctx: *mut osft_context, stream: *mut *mut c_void) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let out = out_ptr(stream, "stream")?;
        *out = c.ctx.stream() as *mut c_void;
        Ok(())
    })
}

/// Let the context use `bytes` of caller memory at `ptr` (on its device; aligned to at
/// least 8 bytes, 256 recommended) as its workspace, as with `cublasSetWorkspace`: it is never grown
/// or freed, and an op that needs more fails with `OSFT_STATUS_WORKSPACE_TOO_SMALL` before
/// writing anything. Size it with the `osft_*_workspace_size` queries. The memory must stay valid
/// and unused by anyone else until `osft_context_release_workspace`, another
/// `osft_context_set_workspace` or `osft_context_destroy`. `ptr = NULL` needs `bytes = 0` (then
/// every op needing scratch fails).
#[no_mangle]
pub unsafe extern "C" fn osft_context_set_workspace(
    ctx: *mut osft_context,
    ptr: *mut c_void,
    bytes: usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        if ptr.is_null() && bytes > 0 {
            return Err(Error::NullPointer { arg: "workspace".into() });
        }
        // Scratch regions are laid out at 256-byte offsets from `ptr`; 8 bytes keeps every
        // element type aligned.
        if (ptr as usize) % 8 != 0 {
            return Err(Error::Misaligned { arg: "workspace".into(), addr: ptr as usize, align: 8 });
        }
        c.ctx.set_workspace(ptr as usize, bytes)
    })
}

/// Forget a caller workspace, or free the one the context allocated; the next op that needs
/// scratch allocates (and caches) its own.
#[no_mangle]
pub unsafe extern "C" fn osft_context_release_workspace(ctx: *mut osft_context) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        context(ctx)?.ctx.release_workspace();
        Ok(())
    })
}

/// Bytes of workspace the context holds now (allocated by it or set by the caller).
#[no_mangle]
pub unsafe extern "C" fn osft_context_workspace_bytes(ctx: *mut osft_context, bytes: *mut usize) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let out = out_ptr(bytes, "bytes")?;
        *out = c.ctx.workspace_bytes();
        Ok(())
    })
}

/// Choose the SVD algorithm of the context's later `osft_svd`, `osft_svd_list` and
/// `osft_decompose` calls (an `osft_svd_algorithm` value; the default is `OSFT_SVD_AUTO`).
/// An unknown value is `OSFT_STATUS_INVALID_ARGUMENT` and leaves the setting as it was. An
/// explicit algorithm that cannot serve a later call's shape or outputs fails that call
/// (`OSFT_STATUS_PRECONDITION` or `OSFT_STATUS_INVALID_ARGUMENT`), never falls back silently.
#[no_mangle]
pub unsafe extern "C" fn osft_context_set_svd_algorithm(ctx: *mut osft_context, algorithm: i32) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let a = svd_algorithm(algorithm)?;
        c.ctx.set_svd_algorithm(a);
        Ok(())
    })
}

/// The context's SVD algorithm (an `osft_svd_algorithm` value) in `*out`.
#[no_mangle]
pub unsafe extern "C" fn osft_context_get_svd_algorithm(ctx: *const osft_context, out: *mut i32) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let out = out_ptr(out, "out")?;
        *out = c.ctx.svd_algorithm() as i32;
        Ok(())
    })
}

/// Choose the math mode of the context's later projection and reconstruction GEMMs on f32 data
/// (an `osft_math_mode` value; the default is `OSFT_MATH_EXACT`). An unknown value is
/// `OSFT_STATUS_INVALID_ARGUMENT` and leaves the setting as it was. A CPU context accepts every
/// mode and computes exactly.
#[no_mangle]
pub unsafe extern "C" fn osft_context_set_math_mode(ctx: *mut osft_context, mode: i32) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let m = math_mode(mode)?;
        c.ctx.set_math_mode(m);
        Ok(())
    })
}

/// The context's math mode (an `osft_math_mode` value) in `*out`.
#[no_mangle]
pub unsafe extern "C" fn osft_context_get_math_mode(ctx: *const osft_context, out: *mut i32) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let out = out_ptr(out, "out")?;
        *out = c.ctx.math_mode() as i32;
        Ok(())
    })
}

// =============================================================================================
// SVD and decomposition.

/// Workspace bytes `osft_svd` needs for `w` in `compute` with the context's SVD algorithm (an
/// algorithm that cannot serve `w` fails here already, with the status the SVD would return).
#[no_mangle]
pub unsafe extern "C" fn osft_svd_workspace_size(
    ctx: *mut osft_context,
    w: *const osft_matrix,
    compute: i32,
    bytes: *mut usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let out = out_ptr(bytes, "bytes")?;
        let w = desc(w, "W")?;
        let n = c.ctx.svd_workspace_size(&w, super::boundary::compute(compute)?)?;
        *out = n;
        Ok(())
    })
}

/// Thin SVD `W = U diag(S) Vt` of one matrix or a strided batch (`w->batch`), in any layout and
/// dtype, computed in `compute` (`OSFT_DTYPE_F32` or `OSFT_DTYPE_F64`). `U: N x R`, `S: R`
/// (an `R x 1` or `1 x R` descriptor, descending), `Vt: R x M`, `R = min(N, M)`, each in its own
/// layout and dtype, with the batch of `W`. `u` and `vt` may be NULL (singular values only).
/// Signs are deterministic: the largest-magnitude entry of each column of `U` is positive.
#[no_mangle]
pub unsafe extern "C" fn osft_svd(
    ctx: *mut osft_context,
    w: *const osft_matrix,
    u: *const osft_matrix,
    s: *const osft_matrix,
    vt: *const osft_matrix,
    compute: i32,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let w = desc(w, "W")?;
        let s = desc(s, "S")?;
        let u = opt_desc(u, "U")?;
        let vt = opt_desc(vt, "Vt")?;
        let compute = super::boundary::compute(compute)?;
        c.ctx.svd_raw(&w, &SvdOut { u: u.as_ref(), s: &s, vt: vt.as_ref() }, compute)
    })
}

/// Workspace bytes for `osft_svd_list` over the `count` matrices `w[0..count)`: the largest
/// single problem's (its whole batch at once, capped at 1 GiB), which is enough for the list.
/// The list runs in waves: consecutive problems that fit the workspace side by side are factored
/// together (concurrently on a CUDA context), so a workspace of exactly this size may take
/// several waves, a larger one fewer. A context that allocates its own workspace grows it to fit
/// the whole list in one wave (every problem's size side by side, capped at 1 GiB).
#[no_mangle]
pub unsafe extern "C" fn osft_svd_list_workspace_size(
    ctx: *mut osft_context,
    count: usize,
    w: *const osft_matrix,
    compute: i32,
    bytes: *mut usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let out = out_ptr(bytes, "bytes")?;
        let ws = desc_array(w, count, "W")?;
        let compute = super::boundary::compute(compute)?;
        let refs: Vec<&MatDesc> = ws.iter().collect();
        *out = c.ctx.svd_list_workspace_size(&refs, compute)?;
        Ok(())
    })
}

/// SVDs of `count` matrices of different shapes (a model's layers): problem `i` is
/// `w[i] = u[i] diag(s[i]) vt[i]` as in `osft_svd` (each may be a strided batch). `w` and `s` are
/// arrays of `count` descriptors; `u` and `vt` are arrays of `count` descriptors or NULL (then no
/// problem writes that factor). Every problem is validated before any output is written.
#[no_mangle]
pub unsafe extern "C" fn osft_svd_list(
    ctx: *mut osft_context,
    count: usize,
    w: *const osft_matrix,
    u: *const osft_matrix,
    s: *const osft_matrix,
    vt: *const osft_matrix,
    compute: i32,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        if count > 0 {
            if w.is_null() {
                return Err(Error::NullPointer { arg: "W".into() });
            }
            if s.is_null() {
                return Err(Error::NullPointer { arg: "S".into() });
            }
        }
        let ws = desc_array(w, count, "W")?;
        let ss = desc_array(s, count, "S")?;
        let us = if u.is_null() { None } else { Some(desc_array(u, count, "U")?) };
        let vts = if vt.is_null() { None } else { Some(desc_array(vt, count, "Vt")?) };
        let compute = super::boundary::compute(compute)?;
        let problems: Vec<SvdProblem> = (0..count)
            .map(|i| SvdProblem {
                w: &ws[i],
                out: SvdOut { u: us.as_ref().map(|v| &v[i]), s: &ss[i], vt: vts.as_ref().map(|v| &v[i]) },
            })
            .collect();
        c.ctx.svd_list_raw(&problems, compute)
    })
}

/// Workspace bytes `osft_decompose` needs (those of the SVD, with the context's algorithm).
/// For `OSFT_SVD_RANDOMIZED` the size depends on `k`, which this query does not take: it
/// reports the size for the largest subspace, `k + p = min(N, M) - 1` (cuSOLVER wants `k + p < min(N, M)`).
#[no_mangle]
pub unsafe extern "C" fn osft_decompose_workspace_size(
    ctx: *mut osft_context,
    w: *const osft_matrix,
    compute: i32,
    bytes: *mut usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let out = out_ptr(bytes, "bytes")?;
        let w = desc(w, "W")?;
        let n = c.ctx.decompose_workspace_size(&w, super::boundary::compute(compute)?)?;
        *out = n;
        Ok(())
    })
}

/// Decompose `W` (`N x M`, one matrix or a strided batch, any dtype) and split at rank `k`
/// (`0 <= k <= R = min(N, M)`) into the frozen top-`k` part `U_high: N x k`, `S_high: k`,
/// `V_high: k x M` and the trainable rest `U_low: N x (R-k)`, `S_low: R-k`, `V_low: (R-k) x M`,
/// computed in `compute` and written in each part's own dtype and layout. Any part may be NULL
/// (not wanted); an empty part (`k = 0` or `k = R`) may be NULL or a 0-sized descriptor.
/// The parts must not share memory with each other or with `W`.
#[no_mangle]
pub unsafe extern "C" fn osft_decompose(
    ctx: *mut osft_context,
    w: *const osft_matrix,
    k: i64,
    u_high: *const osft_matrix,
    s_high: *const osft_matrix,
    v_high: *const osft_matrix,
    u_low: *const osft_matrix,
    s_low: *const osft_matrix,
    v_low: *const osft_matrix,
    compute: i32,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let w = desc(w, "W")?;
        let k = count(k, "k")?;
        let uh = opt_desc(u_high, "U_high")?;
        let sh = opt_desc(s_high, "S_high")?;
        let vh = opt_desc(v_high, "V_high")?;
        let ul = opt_desc(u_low, "U_low")?;
        let sl = opt_desc(s_low, "S_low")?;
        let vl = opt_desc(v_low, "V_low")?;
        let compute = super::boundary::compute(compute)?;
        let parts = Parts {
            u_high: uh.as_ref(),
            s_high: sh.as_ref(),
            v_high: vh.as_ref(),
            u_low: ul.as_ref(),
            s_low: sl.as_ref(),
            v_low: vl.as_ref(),
        };
        c.ctx.decompose_raw(&w, k, &parts, compute)
    })
}

// =============================================================================================
// Rank selection.

/// The rank `k` that `rule` (an `osft_rank_rule` value) with parameter `param` selects for the
/// `len` singular values `s` (host memory, descending, finite, non-negative; `R = len`), in `*k`.
/// Host-only: read device singular values with `osft_read_vector` first.
#[no_mangle]
pub unsafe extern "C" fn osft_select_rank(
    s: *const f64,
    len: usize,
    rule: i32,
    param: f64,
    k: *mut i64,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let out = out_ptr(k, "k")?;
        let s = slice(s, len, "s")?;
        let rule = match rule {
            0 => {
                if !(param.is_finite() && param >= 0.0 && param.fract() == 0.0) {
                    return Err(Error::RankOutOfRange(format!(
                        "OSFT_RANK_FIXED: param = {param} is not a whole number >= 0"
                    )));
                }
                if param > usize::MAX as f64 {
                    return Err(Error::RankOutOfRange(format!("OSFT_RANK_FIXED: param = {param} exceeds R = {len}")));
                }
                RankRule::Fixed(param as usize)
            }
            1 => RankRule::Fraction(param),
            2 => RankRule::Energy(param),
            3 => RankRule::EntropyEffective,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "rule: unknown value {rule} (OSFT_RANK_FIXED = 0, FRACTION = 1, ENERGY = 2, ENTROPY_EFFECTIVE = 3)"
                )))
            }
        };
        let r = to_i64(crate::select_rank(rule, s)?, "k")?;
        *out = r;
        Ok(())
    })
}

/// The paper's adaptive rule: per-layer ranks from layer importances. For `count` layers with
/// importance `importance[i]` (from `osft_layer_importance`) and full rank `full_ranks[i]`
/// (`R = min(N, M)`), writes `k[i]` into `ranks[0..count)`: the retained fraction is
/// `clamp(I_i / mean(I) * (min_ratio + max_ratio) / 2, min_ratio, max_ratio)` of `R`, rounded.
/// `0 <= min_ratio <= max_ratio <= 1`.
#[no_mangle]
pub unsafe extern "C" fn osft_adaptive_ranks(
    importance: *const f64,
    full_ranks: *const i64,
    count: usize,
    min_ratio: f64,
    max_ratio: f64,
    ranks: *mut i64,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let imp = slice(importance, count, "importance")?;
        let fr = slice(full_ranks, count, "full_ranks")?;
        let out = out_slice(ranks, count, count, "ranks")?;
        let fr = fr
            .iter()
            .enumerate()
            .map(|(i, r)| super::boundary::count(*r, &format!("full_ranks[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        let ks = crate::adaptive_ranks(imp, &fr, min_ratio, max_ratio)?;
        let ks = ks.iter().map(|k| to_i64(*k, "ranks")).collect::<Result<Vec<_>>>()?;
        out.copy_from_slice(&ks);
        Ok(())
    })
}

/// Layer importance `mean over samples of cos(x[:R], (W x)[:R])`, one value per batch entry, into
/// `out[0..batch)` (`out_len >= batch`, `batch = max(W.batch, activations.batch)`). `activations`
/// holds one sample per row (`S x M`); `W` is `N x M`. Computed in `compute`.
#[no_mangle]
pub unsafe extern "C" fn osft_layer_importance(
    ctx: *mut osft_context,
    w: *const osft_matrix,
    activations: *const osft_matrix,
    compute: i32,
    out: *mut f64,
    out_len: usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let w = desc(w, "W")?;
        let x = desc(activations, "activations")?;
        let compute = super::boundary::compute(compute)?;
        let dst = out_slice(out, out_len, w.batch.max(x.batch), "out")?;
        let v = c.ctx.layer_importance_raw(&w, &x, compute)?;
        copy_out(dst, &v)
    })
}

/// Workspace bytes for `osft_layer_importance`.
#[no_mangle]
pub unsafe extern "C" fn osft_layer_importance_workspace_size(
    ctx: *mut osft_context,
    w: *const osft_matrix,
    activations: *const osft_matrix,
    compute: i32,
    bytes: *mut usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let out = out_ptr(bytes, "bytes")?;
        let w = desc(w, "W")?;
        let x = desc(activations, "activations")?;
        let n = c.ctx.layer_importance_workspace_size(&w, &x, super::boundary::compute(compute)?)?;
        *out = n;
        Ok(())
    })
}

/// Read a vector (e.g. singular values `S` from `osft_decompose`, on any device, any dtype) to
/// the host as doubles: batch entry `b`'s `len = rows * cols` elements go to
/// `out[b * len .. (b + 1) * len)`. `v` must be `len x 1` or `1 x len`; `out_len >= batch * len`.
#[no_mangle]
pub unsafe extern "C" fn osft_read_vector(
    ctx: *mut osft_context,
    v: *const osft_matrix,
    out: *mut f64,
    out_len: usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let d = desc(v, "vector")?;
        let need = d
            .rows
            .checked_mul(d.cols)
            .and_then(|x| x.checked_mul(d.batch))
            .ok_or_else(|| Error::Overflow { arg: "vector".into(), msg: "rows * cols * batch".into() })?;
        let dst = out_slice(out, out_len, need, "out")?;
        let flat = c.ctx.read_vector_raw(&d)?;
        copy_out(dst, &flat)
    })
}

/// Workspace bytes for `osft_read_vector`.
#[no_mangle]
pub unsafe extern "C" fn osft_read_vector_workspace_size(
    ctx: *mut osft_context,
    v: *const osft_matrix,
    bytes: *mut usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let out = out_ptr(bytes, "bytes")?;
        let d = desc(v, "vector")?;
        *out = c.ctx.read_vector_workspace_size(&d)?;
        Ok(())
    })
}

fn copy_out(dst: &mut [f64], v: &[f64]) -> Result<()> {
    if v.len() != dst.len() {
        return Err(Error::Internal(format!("{} results for {} slots", v.len(), dst.len())));
    }
    dst.copy_from_slice(v);
    Ok(())
}

// =============================================================================================
// Reconstruction.

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

/// Reconstruct `out = U_high diag(S_high) V_high + U_low diag(S_low) V_low` (`N x M`, any dtype
/// and layout) in `compute`. Each part is given by all three descriptors or omitted with three
/// NULLs; at least one part is needed. Parts may be batches or single matrices broadcast over
/// `out`'s batch.
#[no_mangle]
pub unsafe extern "C" fn osft_reconstruct(
    ctx: *mut osft_context,
    u_high: *const osft_matrix,
    s_high: *const osft_matrix,
    v_high: *const osft_matrix,
    u_low: *const osft_matrix,
    s_low: *const osft_matrix,
    v_low: *const osft_matrix,
    out: *const osft_matrix,
    compute: i32,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let t = terms(u_high, s_high, v_high, u_low, s_low, v_low)?;
        let o = desc(out, "W")?;
        let compute = super::boundary::compute(compute)?;
        c.ctx.reconstruct_raw(&as_terms(&t), &o, compute)
    })
}

/// Workspace bytes for `osft_reconstruct` (same arguments).
#[no_mangle]
pub unsafe extern "C" fn osft_reconstruct_workspace_size(
    ctx: *mut osft_context,
    u_high: *const osft_matrix,
    s_high: *const osft_matrix,
    v_high: *const osft_matrix,
    u_low: *const osft_matrix,
    s_low: *const osft_matrix,
    v_low: *const osft_matrix,
    out: *const osft_matrix,
    compute: i32,
    bytes: *mut usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let b = out_ptr(bytes, "bytes")?;
        let t = terms(u_high, s_high, v_high, u_low, s_low, v_low)?;
        let o = desc(out, "W")?;
        let compute = super::boundary::compute(compute)?;
        *b = c.ctx.reconstruct_workspace_size(&as_terms(&t), &o, compute)?;
        Ok(())
    })
}

// =============================================================================================
// Projection.

/// Project `x` away from the frozen subspace on `side` (an `osft_side` value):
/// left `X - U_high (U_high^T X)`, right `X - (X V_high^T) V_high`, both sides
/// `(I - U_h U_h^T) X (I - V_h^T V_h)`. `u_high` (`N x k`) is needed for LEFT and BOTH, `v_high`
/// (`k x M`) for RIGHT and BOTH (the other may be NULL); bases must have `x`'s dtype and
/// orthonormal columns / rows. The result goes to `out` (same shape and dtype as `x`; either
/// not overlapping `x` at all, or exactly `x`'s descriptor, which is in place), or over `x`
/// itself when `out` is NULL. `x` may be a gradient, an optimizer
/// update or a trainable factor; a strided batch with one basis broadcast or a basis per entry.
#[no_mangle]
pub unsafe extern "C" fn osft_project(
    ctx: *mut osft_context,
    side: i32,
    u_high: *const osft_matrix,
    v_high: *const osft_matrix,
    x: *const osft_matrix,
    out: *const osft_matrix,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let side = super::boundary::side(side)?;
        let x = desc(x, "X")?;
        let u = opt_desc(u_high, "U_high")?;
        let v = opt_desc(v_high, "V_high")?;
        let o = opt_desc(out, "out")?;
        c.ctx.project_raw(side, &Bases { u: u.as_ref(), v: v.as_ref() }, &x, o.as_ref())
    })
}

/// Workspace bytes for `osft_project` (same arguments).
#[no_mangle]
pub unsafe extern "C" fn osft_project_workspace_size(
    ctx: *mut osft_context,
    side: i32,
    u_high: *const osft_matrix,
    v_high: *const osft_matrix,
    x: *const osft_matrix,
    out: *const osft_matrix,
    bytes: *mut usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let b = out_ptr(bytes, "bytes")?;
        let side = super::boundary::side(side)?;
        let x = desc(x, "X")?;
        let u = opt_desc(u_high, "U_high")?;
        let v = opt_desc(v_high, "V_high")?;
        let o = opt_desc(out, "out")?;
        *b = c.ctx.project_workspace_size(side, &Bases { u: u.as_ref(), v: v.as_ref() }, &x, o.as_ref())?;
        Ok(())
    })
}

/// Sharded projection, phase 1 (`side` LEFT or RIGHT): this shard's partial coefficients,
/// `coef = U_r^T X_r` (left, `k x M`) or `coef = X_r V_r^T` (right, `N x k`), overwriting `coef`
/// (row- or column-major; `x`'s dtype, or F32 for F16/BF16 data). All-reduce (sum) `coef` over
/// the shards, then call `osft_project_apply`. Needs no workspace.
#[no_mangle]
pub unsafe extern "C" fn osft_project_partial(
    ctx: *mut osft_context,
    side: i32,
    basis: *const osft_matrix,
    x: *const osft_matrix,
    coef: *const osft_matrix,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let side = super::boundary::side(side)?;
        let b = desc(basis, "basis")?;
        let x = desc(x, "X")?;
        let k = desc(coef, "coef")?;
        c.ctx.project_partial_raw(side, &b, &x, &k)
    })
}

/// Sharded projection, phase 2: with the all-reduced `coef`, `X_r <- X_r - U_r coef` (left) or
/// `X_r <- X_r - coef V_r` (right), in place.
#[no_mangle]
pub unsafe extern "C" fn osft_project_apply(
    ctx: *mut osft_context,
    side: i32,
    basis: *const osft_matrix,
    coef: *const osft_matrix,
    x: *const osft_matrix,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let side = super::boundary::side(side)?;
        let b = desc(basis, "basis")?;
        let k = desc(coef, "coef")?;
        let x = desc(x, "X")?;
        c.ctx.project_apply_raw(side, &b, &k, &x)
    })
}

/// Workspace bytes for `osft_project_apply` (a cast copy of `coef` when its dtype differs from
/// `x`'s, otherwise 0).
#[no_mangle]
pub unsafe extern "C" fn osft_project_apply_workspace_size(
    ctx: *mut osft_context,
    coef: *const osft_matrix,
    x: *const osft_matrix,
    bytes: *mut usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        context(ctx)?;
        let b = out_ptr(bytes, "bytes")?;
        let k = desc(coef, "coef")?;
        let x = desc(x, "X")?;
        k.validate("coef", true)?;
        x.validate("X", false)?;
        let n = project::apply_workspace_size(&k, &x)?;
        if n == usize::MAX {
            return Err(Error::overflow("coef", "workspace size"));
        }
        *b = n;
        Ok(())
    })
}

/// Create a projector for repeated projection of many matrices against the same bases on `side`,
/// evaluated as `strategy` (an `osft_strategy` value) chooses, into `*out` (written only on
/// success). Bases as for `osft_project`; their memory is read on every apply (keep it alive and
/// unchanged). A cached projector (`n x n`) is built here. The projector holds a reference to
/// `ctx` and uses its workspace. Free it with `osft_projector_destroy`.
#[no_mangle]
pub unsafe extern "C" fn osft_projector_create(
    ctx: *mut osft_context,
    side: i32,
    u_high: *const osft_matrix,
    v_high: *const osft_matrix,
    strategy: i32,
    out: *mut *mut osft_projector,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let out = out_ptr(out, "out")?;
        let side = super::boundary::side(side)?;
        let u = opt_desc(u_high, "U_high")?;
        let v = opt_desc(v_high, "V_high")?;
        let strategy = super::boundary::strategy(strategy)?;
        let proj = Projector::new(&c.ctx, side, u, v, strategy, project::DEFAULT_MAX_PROJECTOR_BYTES)?;
        let handle = Box::new(osft_projector { ctx: Arc::clone(&c.ctx), proj, bases: (u, v) });
        *out = Box::into_raw(handle);
        Ok(())
    })
}

/// Project `x` with the projector, into `out`, or in place when `out` is NULL (rules as for
/// `osft_project`).
#[no_mangle]
pub unsafe extern "C" fn osft_projector_apply(
    projector: *mut osft_projector,
    x: *const osft_matrix,
    out: *const osft_matrix,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let p = super::boundary::projector(projector)?;
        let x = desc(x, "X")?;
        let o = opt_desc(out, "out")?;
        p.proj.apply_raw(&p.ctx, &x, o.as_ref())
    })
}

/// The strategy the projector uses for each side (`OSFT_STRATEGY_COEFFICIENT` or
/// `OSFT_STRATEGY_CACHED_PROJECTOR`; -1 for a side it does not project). Either output pointer
/// may be NULL.
#[no_mangle]
pub unsafe extern "C" fn osft_projector_strategies(
    projector: *mut osft_projector,
    left: *mut i32,
    right: *mut i32,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let p = super::boundary::projector(projector)?;
        let (l, r) = p.proj.strategies();
        let code = |s: Option<crate::Strategy>| s.map_or(-1, |s| s as i32);
        if !left.is_null() {
            *out_ptr(left, "left")? = code(l);
        }
        if !right.is_null() {
            *out_ptr(right, "right")? = code(r);
        }
        Ok(())
    })
}

/// Destroy a projector (NULL is a no-op).
#[no_mangle]
pub unsafe extern "C" fn osft_projector_destroy(projector: *mut osft_projector) {
    guard_value((), || {
        if !projector.is_null() {
            // SAFETY: a non-null handle came from its `*_create` and is destroyed once (the
            // caller's contract).
            drop(unsafe { Box::from_raw(projector) });
        }
    })
}

// =============================================================================================
// Diagnostics: per batch entry, as doubles into a caller array (they synchronise: keep them off
// the training hot path).

/// Leakage `||U_high^T X||_F / ||X||_F` (LEFT; `basis` is `U_high`, `N x k`) or
/// `||X V_high^T||_F / ||X||_F` (RIGHT; `basis` is `V_high`, `k x M`) of each batch entry of `x`,
/// into `out[0..x.batch)` (`out_len >= x.batch`). 0 for a perfectly projected (or zero) `x`.
#[no_mangle]
pub unsafe extern "C" fn osft_leakage(
    ctx: *mut osft_context,
    side: i32,
    basis: *const osft_matrix,
    x: *const osft_matrix,
    out: *mut f64,
    out_len: usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let side = super::boundary::side(side)?;
        let b = desc(basis, "basis")?;
        let x = desc(x, "X")?;
        let dst = out_slice(out, out_len, x.batch, "out")?;
        let v = c.ctx.leakage_raw(side, &b, &x)?;
        copy_out(dst, &v)
    })
}

/// Workspace bytes for `osft_leakage`.
#[no_mangle]
pub unsafe extern "C" fn osft_leakage_workspace_size(
    ctx: *mut osft_context,
    side: i32,
    basis: *const osft_matrix,
    x: *const osft_matrix,
    bytes: *mut usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let o = out_ptr(bytes, "bytes")?;
        let side = super::boundary::side(side)?;
        let b = desc(basis, "basis")?;
        let x = desc(x, "X")?;
        *o = c.ctx.leakage_workspace_size(side, &b, &x)?;
        Ok(())
    })
}

fn columns(side: i32) -> Result<bool> {
    match side {
        0 => Ok(true),
        1 => Ok(false),
        _ => Err(Error::InvalidArgument(format!(
            "side = {side}: orthonormality is of the columns of a U basis (OSFT_SIDE_LEFT = 0) or the rows of a V basis (OSFT_SIDE_RIGHT = 1)"
        ))),
    }
}

/// Orthonormality error of a basis, per batch entry, into `out[0..basis.batch)`:
/// `||B^T B - I||_F` of the columns of a U-side basis (`side = OSFT_SIDE_LEFT`) or `||B B^T - I||_F`
/// of the rows of a V-side basis (`side = OSFT_SIDE_RIGHT`).
#[no_mangle]
pub unsafe extern "C" fn osft_orthonormality_error(
    ctx: *mut osft_context,
    side: i32,
    basis: *const osft_matrix,
    out: *mut f64,
    out_len: usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let cols = columns(side)?;
        let b = desc(basis, "basis")?;
        let dst = out_slice(out, out_len, b.batch, "out")?;
        let v = c.ctx.orthonormality_error_raw(&b, cols)?;
        copy_out(dst, &v)
    })
}

/// Workspace bytes for `osft_orthonormality_error`.
#[no_mangle]
pub unsafe extern "C" fn osft_orthonormality_error_workspace_size(
    ctx: *mut osft_context,
    side: i32,
    basis: *const osft_matrix,
    bytes: *mut usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let o = out_ptr(bytes, "bytes")?;
        let cols = columns(side)?;
        let b = desc(basis, "basis")?;
        *o = c.ctx.orthonormality_error_workspace_size(&b, cols)?;
        Ok(())
    })
}

/// Relative reconstruction error `||W - U_h S_h V_h - U_l S_l V_l||_F / ||W||_F` (absolute when
/// `W = 0`) per batch entry of `w`, into `out[0..w.batch)`. Parts as for `osft_reconstruct`.
#[no_mangle]
pub unsafe extern "C" fn osft_reconstruction_error(
    ctx: *mut osft_context,
    w: *const osft_matrix,
    u_high: *const osft_matrix,
    s_high: *const osft_matrix,
    v_high: *const osft_matrix,
    u_low: *const osft_matrix,
    s_low: *const osft_matrix,
    v_low: *const osft_matrix,
    compute: i32,
    out: *mut f64,
    out_len: usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let w = desc(w, "W")?;
        let t = terms(u_high, s_high, v_high, u_low, s_low, v_low)?;
        let compute = super::boundary::compute(compute)?;
        let dst = out_slice(out, out_len, w.batch, "out")?;
        let v = c.ctx.reconstruction_error_raw(&w, &as_terms(&t), compute)?;
        copy_out(dst, &v)
    })
}

/// Workspace bytes for `osft_reconstruction_error`.
#[no_mangle]
pub unsafe extern "C" fn osft_reconstruction_error_workspace_size(
    ctx: *mut osft_context,
    w: *const osft_matrix,
    u_high: *const osft_matrix,
    s_high: *const osft_matrix,
    v_high: *const osft_matrix,
    u_low: *const osft_matrix,
    s_low: *const osft_matrix,
    v_low: *const osft_matrix,
    compute: i32,
    bytes: *mut usize,
) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let o = out_ptr(bytes, "bytes")?;
        let w = desc(w, "W")?;
        let t = terms(u_high, s_high, v_high, u_low, s_low, v_low)?;
        let compute = super::boundary::compute(compute)?;
        *o = c.ctx.reconstruction_error_workspace_size(&w, &as_terms(&t), compute)?;
        Ok(())
    })
}
