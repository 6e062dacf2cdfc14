//! The C functions: diagnostics, per batch entry, as doubles into a caller array (they
//! synchronise: keep them off the training hot path).

use super::*;

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
        let side = crate::ffi::boundary::side(side)?;
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
        let side = crate::ffi::boundary::side(side)?;
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
        let compute = crate::ffi::boundary::compute(compute)?;
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
        let compute = crate::ffi::boundary::compute(compute)?;
        *o = c.ctx.reconstruction_error_workspace_size(&w, &as_terms(&t), compute)?;
        Ok(())
    })
}
