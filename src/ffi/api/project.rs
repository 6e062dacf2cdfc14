//! The C functions: projection, two-phase sharded projection, and cached projectors.

use super::*;

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
        let side = crate::ffi::boundary::side(side)?;
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
        let side = crate::ffi::boundary::side(side)?;
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
        let side = crate::ffi::boundary::side(side)?;
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
        let side = crate::ffi::boundary::side(side)?;
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
        let c = context(ctx)?;
        let b = out_ptr(bytes, "bytes")?;
        let k = desc(coef, "coef")?;
        let x = desc(x, "X")?;
        *b = project_op::apply_workspace_query(c.ctx.executor(), &k, &x)?;
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
        let side = crate::ffi::boundary::side(side)?;
        let u = opt_desc(u_high, "U_high")?;
        let v = opt_desc(v_high, "V_high")?;
        let strategy = crate::ffi::boundary::strategy(strategy)?;
        let proj = Projector::new(&c.ctx, side, u, v, strategy, project_op::DEFAULT_MAX_PROJECTOR_BYTES)?;
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
        let p = crate::ffi::boundary::projector(projector)?;
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
        let p = crate::ffi::boundary::projector(projector)?;
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
