//! Decompose: thin SVD of `W`, split at rank `k` into the frozen top-`k` part
//! (`U_high: N x k`, `S_high: k`, `V_high: k x M`) and the trainable rest
//! (`U_low: N x (R-k)`, `S_low: R-k`, `V_low: (R-k) x M`), written to the caller's buffers in
//! their own layouts and dtypes. The SVD runs in the compute type (f32/f64) whatever `W`'s type.
//! `k = 0` (nothing frozen) and `k = R` (everything frozen) are valid; the empty parts may then
//! be passed as `0`-column / `0`-row descriptors or omitted.

use super::svd::{self, Factors, SvdRoutine};
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
                // An empty part of any 0-sized shape: nothing to write.
                if len == 0 && d.rows * d.cols == 0 {
                    return Ok(None);
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
pub fn routine(algorithm: SvdAlgorithm, k: usize, parts: &Parts) -> Result<SvdRoutine> {
    if algorithm != SvdAlgorithm::Randomized {
        return Ok(SvdRoutine::full(algorithm));
    }
    if wants_low(parts) {
        return Err(Error::InvalidArgument(
            "the randomized SVD (OSFT_SVD_RANDOMIZED) computes only the top k: pass NULL for U_low, S_low and V_low, or choose another algorithm".into(),
        ));
    }
    Ok(SvdRoutine { algorithm, top_k: Some(k), diagnostics: false })
}

/// The workspace of a decomposition of `w` by `algorithm`, before its outputs are known (the
/// workspace query). `k` matters to the randomized algorithm only; without it (`None`, the C
/// query has no `k`) its size is reported for the largest subspace it allows,
/// `k + p = min(N, M) - 1` (cuSOLVER's `Xgesvdr` workspace grows with `k + p`; a
/// [`DecomposePlan`] sizes exactly and refuses a workspace that is too small).
pub fn workspace_need(
    exec: &dyn Executor,
    w: &MatDesc,
    compute: DType,
    algorithm: SvdAlgorithm,
    k: Option<usize>,
) -> Result<WorkspaceNeed> {
    svd::check_input(exec, w, compute)?;
    if let Some(k) = k {
        check_k(w, k)?;
    }
    let routine = match (algorithm, k) {
        (SvdAlgorithm::Randomized, k) => {
            let n = w.rows.min(w.cols);
            let k = k.unwrap_or_else(|| n.saturating_sub(1 + crate::exec::GESVDR_OVERSAMPLING).max(1));
            SvdRoutine { algorithm, top_k: Some(k), diagnostics: false }
        }
        _ => SvdRoutine::full(algorithm),
    };
    svd::workspace_need(exec, w, compute, routine)
}

/// A validated decomposition of `w` (one matrix or a strided batch, any layout, any dtype),
/// split at `k`.
#[derive(Clone, Copy, Debug)]
pub struct DecomposePlan {
    w: MatDesc,
    k: usize,
    parts: [Option<MatDesc>; 6],
    compute: DType,
    routine: SvdRoutine,
    need: WorkspaceNeed,
}

impl DecomposePlan {
    pub fn new(
        exec: &dyn Executor,
        w: &MatDesc,
        k: usize,
        parts: &Parts,
        compute: DType,
        algorithm: SvdAlgorithm,
    ) -> Result<Self> {
        svd::check_input(exec, w, compute)?;
        check_k(w, k)?;
        let (s_high, s_low) = check_parts(exec, w, k, parts)?;
        let routine = routine(algorithm, k, parts)?;
        svd::check_routine(w, compute, routine)?;
        let need = svd::workspace_need(exec, w, compute, routine)?;
        let parts =
            [parts.u_high.copied(), s_high, parts.v_high.copied(), parts.u_low.copied(), s_low, parts.v_low.copied()];
        Ok(DecomposePlan { w: *w, k, parts, compute, routine, need })
    }

    /// Read back the SVD routine's diagnostics (see [`SvdRoutine::diagnostics`]).
    pub fn with_diagnostics(mut self, on: bool) -> Self {
        self.routine.diagnostics = on;
        self
    }
}

impl Plan for DecomposePlan {
    type Output = ();

    fn synchronizes(&self) -> bool {
        true // an SVD (its convergence flags are read back to the host).
    }

    fn workspace(&self) -> WorkspaceNeed {
        self.need
    }

    unsafe fn run(&self, exec: &dyn Executor, ws: &mut Ws) -> Result<()> {
        // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
        // contract of the primitives it calls.
        unsafe {
            let (w, k) = (&self.w, self.k);
            let [u_high, s_high, v_high, u_low, s_low, v_low] = &self.parts;
            let r = w.rows.min(w.cols);
            let full = self.routine.top_k.is_none();
            svd::factor(exec, ws, w, self.compute, self.routine, &mut |f: &Factors| {
                let put = |src: MatDesc, dst: &Option<MatDesc>| -> Result<()> {
                    match dst {
                        Some(d) if !src.is_empty() => copy(exec, &src, &d.batch_range(f.b0, f.nb)),
                        _ => Ok(()),
                    }
                };
                put(f.u.cols_range(0, k), u_high)?;
                put(f.vt.rows_range(0, k), v_high)?;
                put(f.s.rows_range(0, k), s_high)?;
                if full {
                    put(f.u.cols_range(k, r - k), u_low)?;
                    put(f.vt.rows_range(k, r - k), v_low)?;
                    put(f.s.rows_range(k, r - k), s_low)?;
                }
                Ok(())
            })
        }
    }
}
