//! The C functions: contexts (create, destroy, backend, stream, workspace, SVD algorithm, math
//! mode).

use super::*;

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
        let b = crate::ffi::boundary::backend(backend)?;
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
/// every op needing scratch fails). While the context's stream is captured into a CUDA graph, a
/// context never allocates or frees its own workspace: a call needing more than it holds fails
/// with `OSFT_STATUS_INVALID_ARGUMENT`; set a workspace here before capturing. Only projection
/// and reconstruction can be captured: the ops that read results back to the host (SVD,
/// decomposition, diagnostics, layer importance, `osft_read_vector`) and building a cached
/// projector fail with `OSFT_STATUS_INVALID_ARGUMENT` during capture, before issuing anything.
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

/// Turn the SVD diagnostics of the context's later `osft_svd`, `osft_svd_list` and
/// `osft_decompose` calls on (`enabled = 1`) or off (`0`, the default). On, the SVD routine's
/// measurements beyond convergence are read back: `gesvdaStridedBatched`'s residual
/// (`h_R_nrmF`), `Xgesvdp`'s `h_err_sigma`, `gesvdj`'s residual and sweeps (a non-finite gesvda
/// residual is then reported as `OSFT_STATUS_NOT_CONVERGED`; a non-finite `h_err_sigma` is in
/// either setting). On CUDA, gesvda's
/// residual blocks the host per call, so those calls no longer overlap on the stream pool;
/// gesvdj's values are read once per stream after the join, and `Xgesvdp` writes its
/// `h_err_sigma` (which blocks) either way.
/// Convergence (the routines' info flags) is checked either way. Any other value is
/// `OSFT_STATUS_INVALID_ARGUMENT` and leaves the setting as it was.
#[no_mangle]
pub unsafe extern "C" fn osft_context_set_svd_diagnostics(ctx: *mut osft_context, enabled: i32) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let on = match enabled {
            0 => false,
            1 => true,
            v => return Err(Error::InvalidArgument(format!("svd diagnostics must be 0 (off) or 1 (on), got {v}"))),
        };
        c.ctx.set_svd_diagnostics(on);
        Ok(())
    })
}

/// Whether the context's SVD diagnostics are on (1) or off (0, the default) in `*out`.
#[no_mangle]
pub unsafe extern "C" fn osft_context_get_svd_diagnostics(ctx: *const osft_context, out: *mut i32) -> osft_status {
    // SAFETY: the pointers are valid as this module's "Safety" section requires of the C caller.
    guard(|| unsafe {
        let c = context(ctx)?;
        let out = out_ptr(out, "out")?;
        *out = c.ctx.svd_diagnostics() as i32;
        Ok(())
    })
}
