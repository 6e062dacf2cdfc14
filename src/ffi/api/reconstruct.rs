//! The C functions: reconstruction of `W` from its factors.

use super::*;

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
        let compute = crate::ffi::boundary::compute(compute)?;
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
        let compute = crate::ffi::boundary::compute(compute)?;
        *b = c.ctx.reconstruct_workspace_size(&as_terms(&t), &o, compute)?;
        Ok(())
    })
}
