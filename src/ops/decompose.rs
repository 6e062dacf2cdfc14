//! Decompose: thin SVD of `W`, split at rank `k` into the frozen top-`k` part
//! (`U_high: N x k`, `S_high: k`, `V_high: k x M`) and the trainable rest
//! (`U_low: N x (R-k)`, `S_low: R-k`, `V_low: (R-k) x M`), written to the caller's buffers in
//! their own layouts and dtypes. The SVD runs in the compute type (f32/f64) whatever `W`'s type.
//! `k = 0` (nothing frozen) and `k = R` (everything frozen) are valid; the empty parts may then
//! be passed as `0`-column / `0`-row descriptors or omitted.

use super::svd::{self, Factors, SvdPlan};
use super::*;
use crate::desc::check_disjoint_staged;
use crate::exec::SvdAlgorithm;

/// The six parts; any may be `None` when the caller does not want it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Parts<'a> {
    pub u_high: Option<&'a MatDesc>,
    pub s_high: Option<&'a MatDesc>,
    pub v_high: Option<&'a MatDesc>,
    pub u_low: Option<&'a MatDesc>,
    pub s_low: Option<&'a MatDesc>,
    pub v_low: Option<&'a MatDesc>,
}

/// Check `k` against `W`; `R = min(N, M)`.
pub fn check_k(w: &MatDesc, k: usize) -> Result<()> {
    let r = w.rows.min(w.cols);
    if k > r {
        return Err(Error::RankOutOfRange(format!(
            "k = {k} exceeds min(N, M) = {r} for a {} x {} matrix",
            w.rows, w.cols
        )));
    }
    Ok(())
}

/// Validate the parts for `W` split at `k`; returns the singular-value parts as columns.
pub(crate) fn check_parts(
    exec: &dyn Executor,
    w: &MatDesc,
    k: usize,
    p: &Parts,
) -> Result<(Option<MatDesc>, Option<MatDesc>)> {
    let (n, m, r) = (w.rows, w.cols, w.rows.min(w.cols));
    let lo = r - k;
    let mut outs: Vec<(&str, &MatDesc)> = Vec::new();
    for (name, d, rows, cols) in
        [("U_high", p.u_high, n, k), ("V_high", p.v_high, k, m), ("U_low", p.u_low, n, lo), ("V_low", p.v_low, lo, m)]
    {
        if let Some(d) = d {
            d.validate(name, rows == 0 || cols == 0)?;
            check_shape(name, d, rows, cols)?;
            check_out_batch(name, d, w.batch)?;
            outs.push((name, d));
        }
    }
    let vec = |name: &'static str, d: Option<&MatDesc>, len: usize| -> Result<Option<MatDesc>> {
        match d {
            None => Ok(None),
            Some(d) => {
                d.validate(name, len == 0)?;
                check_out_batch(name, d, w.batch)?;
                if len == 0 && d.rows * d.cols == 0 {
                    return Ok(Some(MatDesc { rows: 0, cols: 1, ..*d }));
                }
                as_column(d, len, name).map(Some)
            }
        }
    };
    let s_high = vec("S_high", p.s_high, k)?;
    let s_low = vec("S_low", p.s_low, lo)?;
    let mut all = outs.clone();
    if let Some(d) = p.s_high {
        all.push(("S_high", d));
    }
    if let Some(d) = p.s_low {
        all.push(("S_low", d));
    }
    check_device(exec, &all)?;
    check_disjoint_staged(&all, &[("W", w)])?;
    Ok((s_high, s_low))
}

/// Whether any trainable (low) part is requested: a non-empty descriptor.
pub fn wants_low(parts: &Parts) -> bool {
    [parts.u_low, parts.s_low, parts.v_low].into_iter().flatten().any(|d| d.rows > 0 && d.cols > 0)
}

/// The SVD a decomposition runs: the full thin SVD, or — for the randomized algorithm, which
/// serves only the frozen top-`k` part — the top `k`. Requesting a low part with the randomized
/// algorithm is `InvalidArgument` (never a silent fallback).
pub fn plan(algorithm: SvdAlgorithm, k: usize, parts: &Parts) -> Result<SvdPlan> {
    if algorithm != SvdAlgorithm::Randomized {
        return Ok(SvdPlan::full(algorithm));
    }
    if wants_low(parts) {
        return Err(Error::InvalidArgument(
            "the randomized SVD (OSFT_SVD_RANDOMIZED) computes only the top k: pass NULL for U_low, S_low and V_low, or choose another algorithm".into(),
        ));
    }
    Ok(SvdPlan { algorithm, top_k: Some(k) })
}

/// Workspace bytes for [`decompose`]: that of the SVD. `k` is needed by the randomized
/// algorithm only; without it (`None`, the C query has no `k`) its size is reported for the
/// largest subspace it allows, `k + p = min(N, M) - 1` (cuSOLVER's `Xgesvdr` workspace grows
/// with `k + p`; `decompose` itself sizes exactly and refuses a workspace that is too small).
pub fn workspace_size(
    exec: &dyn Executor,
    w: &MatDesc,
    compute: DType,
    algorithm: SvdAlgorithm,
    k: Option<usize>,
) -> Result<usize> {
    let plan = match (algorithm, k) {
        (SvdAlgorithm::Randomized, k) => {
            let n = w.rows.min(w.cols);
            let k = k.unwrap_or_else(|| n.saturating_sub(1 + crate::exec::GESVDR_OVERSAMPLING).max(1));
            SvdPlan { algorithm, top_k: Some(k) }
        }
        _ => SvdPlan::full(algorithm),
    };
    svd::workspace_size(exec, w, compute, plan)
}

/// Decompose `w` (one matrix or a strided batch, any layout, any dtype) and split at `k`.
///
/// # Safety
/// Every descriptor must describe valid memory of the executor's device.
pub unsafe fn decompose(
    exec: &dyn Executor,
    ws: &mut Ws,
    w: &MatDesc,
    k: usize,
    parts: &Parts,
    compute: DType,
    algorithm: SvdAlgorithm,
) -> Result<()> {
    svd::check_input(exec, w, compute)?;
    check_k(w, k)?;
    let (s_high, s_low) = check_parts(exec, w, k, parts)?;
    let plan = plan(algorithm, k, parts)?;
    let r = w.rows.min(w.cols);
    svd::run(exec, ws, w, compute, plan, &mut |f: &Factors| {
        let put = |src: MatDesc, dst: Option<&MatDesc>| -> Result<()> {
            match dst {
                Some(d) if !src.is_empty() => copy(exec, &src, &d.batch_range(f.b0, f.nb)),
                _ => Ok(()),
            }
        };
        put(f.u.cols_range(0, k), parts.u_high)?;
        put(f.vt.rows_range(0, k), parts.v_high)?;
        put(f.s.rows_range(0, k), s_high.as_ref())?;
        if plan.top_k.is_none() {
            put(f.u.cols_range(k, r - k), parts.u_low)?;
            put(f.vt.rows_range(k, r - k), parts.v_low)?;
            put(f.s.rows_range(k, r - k), s_low.as_ref())?;
        }
        Ok(())
    })
}
