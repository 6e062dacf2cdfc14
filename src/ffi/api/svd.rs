//! The C functions: SVD of one matrix, a batch or a list of shapes, and the decomposition.

use super::*;

/// Workspace bytes `osft_svd` needs for `w` in `compute` with the context's SVD algorithm (an
/// algorithm that cannot serve `w` fails here already, with the status the SVD would return).
/// A batch's size holds a routine workspace per SVD lane (up to the batch size): 4 on a CUDA
/// context; on a CPU context one per thread of the library's thread pool (at most 64;
/// `RAYON_NUM_THREADS` sets it for the process). Any workspace that holds one matrix's share
/// runs the batch, in chunks.
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
        let n = c.ctx.svd_workspace_size(&w, crate::ffi::boundary::compute(compute)?)?;
        *out = n;
        Ok(())
    })
}

/// Thin SVD `W = U diag(S) Vt` of one matrix or a strided batch (`w->batch`), in any layout and
/// dtype, computed in `compute` (`OSFT_DTYPE_F32` or `OSFT_DTYPE_F64`). `U: N x R`, `S: R`
/// (an `R x 1` or `1 x R` descriptor, descending), `Vt: R x M`, `R = min(N, M)`, each in its own
/// layout and dtype, with the batch of `W`. `u` and `vt` may be NULL (singular values only).
/// Signs are deterministic: the largest-magnitude entry of each column of `U` is positive.
/// The outputs must not share memory with each other or with `W`, except that one output may be
/// exactly `W`'s descriptor (`W` is copied into the workspace before any output is written).
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
        let compute = crate::ffi::boundary::compute(compute)?;
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
        let compute = crate::ffi::boundary::compute(compute)?;
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
        let compute = crate::ffi::boundary::compute(compute)?;
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
        let n = c.ctx.decompose_workspace_size(&w, crate::ffi::boundary::compute(compute)?)?;
        *out = n;
        Ok(())
    })
}

/// Decompose `W` (`N x M`, one matrix or a strided batch, any dtype) and split at rank `k`
/// (`0 <= k <= R = min(N, M)`) into the frozen top-`k` part `U_high: N x k`, `S_high: k`,
/// `V_high: k x M` and the trainable rest `U_low: N x (R-k)`, `S_low: R-k`, `V_low: (R-k) x M`,
/// computed in `compute` and written in each part's own dtype and layout. Any part may be NULL
/// (not wanted); an empty part (`k = 0` or `k = R`) may be NULL or a 0-sized descriptor.
/// The parts must not share memory with each other or with `W`, except that one part may be
/// exactly `W`'s descriptor (`W` is copied into the workspace before any part is written).
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
        let compute = crate::ffi::boundary::compute(compute)?;
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
