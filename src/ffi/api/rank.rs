//! The C functions: rank selection, layer importance, reading vectors to the host.

use super::*;

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

/// The adaptive rule of the OSFT paper's reference implementation (`auto_generate_target_svd_config`
/// in its `notebooks/finetune_svd.py`): per-layer ranks from layer importances. For `count` layers with
/// importance `importance[i]` (from `osft_layer_importance`) and full rank `full_ranks[i]`
/// (`d = min(N, M)`), writes `k[i]` into `ranks[0..count)`: `I_n = I_i / (mean(I) + 1e-8)`,
/// `CR = mrr + I_n * (trr - mrr)` with `mrr = min_ratio * d`, `trr = target_ratio * d`, and
/// `k = clamp(round(CR), 1, d)`, `round` half to even (Python's `round`); `d = 0` gives 0. The
/// reference implementation's values are `min_ratio = 0.5`, `target_ratio = 1`; `0 <= min_ratio <= target_ratio <= 1`.
/// A layer of average importance keeps `trr`, more important ones more (up to `d`).
/// `OSFT_STATUS_INVALID_ARGUMENT` for a non-finite importance or a mean importance that is not
/// positive and finite.
#[no_mangle]
pub unsafe extern "C" fn osft_adaptive_ranks(
    importance: *const f64,
    full_ranks: *const i64,
    count: usize,
    min_ratio: f64,
    target_ratio: f64,
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
            .map(|(i, r)| crate::ffi::boundary::count(*r, &format!("full_ranks[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        let ks = crate::adaptive_ranks(imp, &fr, min_ratio, target_ratio)?;
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
        let compute = crate::ffi::boundary::compute(compute)?;
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
        let n = c.ctx.layer_importance_workspace_size(&w, &x, crate::ffi::boundary::compute(compute)?)?;
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
