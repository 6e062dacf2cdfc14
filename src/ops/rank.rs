//! Rank selection: how many top singular directions to freeze (`k`, `0 <= k <= R`).
//!
//! | rule | `k` | notes |
//! | --- | --- | --- |
//! | `Fixed(k)` | `k` | error if `k > R` |
//! | `Fraction(f)`, `f` in `[0, 1]` | `int(f * R)`: the f64 product, truncated | PEFT OSF's float `effective_rank`, rounding included (`0.29 * 100` is `28.999…` and gives 28; `0.7 * 10` rounds to `7.0` and gives 7); `f = 1` freezes all |
//! | `Energy(t)`, `t` in `[0, 1]` | smallest `k` with `sum_{i<k} s_i^2 >= t * sum s_i^2` | `t = 0` gives 0; zero matrix gives 0 |
//! | `EntropyEffective` | `round(exp(H(p)))`, `p = s / sum s` | Roy & Vetterli's effective rank, clamped to `[0, R]`; zero matrix gives 0 |
//!
//! **Adaptive rule** ([`adaptive_ranks`]), the seed's `auto_generate_target_svd_config`: layer
//! importance `I(W) = mean_x cos(x[:d], (W x)[:d])` over caller-given activations
//! ([`ImportancePlan`]), `d = min(N, M)`; per layer `I_n = I / (mean(I) + 1e-8)`,
//! `CR = mrr + I_n * (trr - mrr)` with `mrr = min_ratio * d`, `trr = target_ratio * d` (the seed:
//! `min_ratio = 0.5`, `target_ratio = 1`), and `k = clamp(round(CR), 1, d)` with `round` Python's
//! `round`, half to even. A layer of average importance keeps `trr`, a more important one more
//! (at most `d`), one of zero importance `mrr`, one of negative importance less (at least 1).
//! Where the seed has no sensible answer, osft refuses (`InvalidArgument`): a non-finite
//! importance, a mean importance that is not positive or not finite (the seed divides by
//! `mean + 1e-8`; a negative mean would reverse the order), and a non-finite `I_n`. A layer with
//! `d = 0` gets 0. The mean is summed in order (numpy sums pairwise), so a `CR` within rounding
//! of a half-integer may round the other way than the seed's.

use super::*;
use crate::exec::Vectors;

/// A rank-selection rule for one matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RankRule {
    Fixed(usize),
    Fraction(f64),
    Energy(f64),
    EntropyEffective,
}

fn check_s(s: &[f64]) -> Result<()> {
    if s.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Err(Error::InvalidArgument("singular values must be finite and non-negative".into()));
    }
    if s.windows(2).any(|w| w[0] < w[1]) {
        return Err(Error::InvalidArgument("singular values must be in descending order".into()));
    }
    Ok(())
}

fn check_unit(name: &str, v: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&v) {
        return Err(Error::InvalidArgument(format!("{name} = {v} must be in [0, 1]")));
    }
    Ok(())
}

/// The rank `k` the rule selects for singular values `s` (descending, `R = s.len()`).
pub fn select_rank(rule: RankRule, s: &[f64]) -> Result<usize> {
    check_s(s)?;
    let r = s.len();
    Ok(match rule {
        RankRule::Fixed(k) => {
            if k > r {
                return Err(Error::RankOutOfRange(format!("k = {k} exceeds R = {r}")));
            }
            k
        }
        RankRule::Fraction(f) => {
            check_unit("fraction", f)?;
            // PEFT's `int(min_dim * value)`: truncation of the rounded f64 product, no slack.
            ((r as f64 * f) as usize).min(r)
        }
        RankRule::Energy(t) => {
            check_unit("energy threshold", t)?;
            let total: f64 = s.iter().map(|v| v * v).sum();
            if total == 0.0 || t == 0.0 {
                return Ok(0);
            }
            let mut acc = 0.0;
            let mut k = r;
            for (i, v) in s.iter().enumerate() {
                acc += v * v;
                // Relative slack for the rounding of the running sum.
                if acc >= t * total * (1.0 - 4.0 * f64::EPSILON * r as f64) {
                    k = i + 1;
                    break;
                }
            }
            k
        }
        RankRule::EntropyEffective => {
            let l1: f64 = s.iter().sum();
            if l1 == 0.0 {
                return Ok(0);
            }
            let h: f64 = s.iter().filter(|v| **v > 0.0).map(|v| v / l1).map(|p| -p * p.ln()).sum();
            (h.exp().round() as usize).min(r)
        }
    })
}

/// Per-layer `k` from layer importances by the seed's rule (see the module docs). `full_ranks[i]`
/// is `d = min(N, M)` of layer `i`; `min_ratio = mrr / d` and `target_ratio = trr / d` (the seed:
/// 0.5 and 1), `0 <= min_ratio <= target_ratio <= 1`.
pub fn adaptive_ranks(
    importance: &[f64],
    full_ranks: &[usize],
    min_ratio: f64,
    target_ratio: f64,
) -> Result<Vec<usize>> {
    if importance.len() != full_ranks.len() {
        return Err(Error::InvalidArgument(format!(
            "{} importances for {} layers",
            importance.len(),
            full_ranks.len()
        )));
    }
    check_unit("min_ratio", min_ratio)?;
    check_unit("target_ratio", target_ratio)?;
    if min_ratio > target_ratio {
        return Err(Error::InvalidArgument(format!("min_ratio {min_ratio} > target_ratio {target_ratio}")));
    }
    if importance.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument("importances must be finite".into()));
    }
    if importance.is_empty() {
        return Ok(vec![]);
    }
    let mean = importance.iter().sum::<f64>() / importance.len() as f64;
    if !(mean > 0.0 && mean.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "mean layer importance {mean} is not positive and finite: the adaptive rule normalises by it \
             (importance is a mean cosine; check that the calibration inputs reach the layers)"
        )));
    }
    importance
        .iter()
        .zip(full_ranks)
        .map(|(i, &r)| {
            if r == 0 {
                return Ok(0);
            }
            let i_n = i / (mean + 1e-8);
            if !i_n.is_finite() {
                return Err(Error::InvalidArgument(format!("importance {i} over the mean {mean} is not finite")));
            }
            let d = r as f64;
            let (mrr, trr) = (min_ratio * d, target_ratio * d);
            let cr = mrr + i_n * (trr - mrr);
            // Python's round (half to even), then the seed's max(1, min(k, d)).
            Ok(cr.round_ties_even().clamp(1.0, d) as usize)
        })
        .collect()
}

fn importance_check(exec: &dyn Executor, w: &MatDesc, x: &MatDesc, compute: DType) -> Result<()> {
    w.validate("W", false)?;
    x.validate("activations", false)?;
    check_compute(compute)?;
    if x.cols != w.cols {
        return Err(Error::shape(
            "activations",
            format!("samples have {} features but W has {} columns", x.cols, w.cols),
        ));
    }
    crate::desc::check_batch(w.batch.max(x.batch), &[("W", w), ("activations", x)])?;
    check_device(exec, &[("W", w), ("activations", x)])
}

struct ImpScratch {
    xs: MatDesc,
    ws_: MatDesc,
    y: MatDesc,
}

fn importance_layout(ws: &mut Ws, w: &MatDesc, x: &MatDesc, compute: DType) -> Result<ImpScratch> {
    let r = w.rows.min(w.cols);
    let b = w.batch.max(x.batch);
    Ok(ImpScratch {
        xs: ws.mat(compute, x.rows, x.cols, x.batch)?,
        ws_: ws.mat(compute, r, w.cols, w.batch)?,
        y: ws.mat(compute, x.rows, r, b)?,
    })
}

/// A validated layer importance `mean over samples of cos(x[:R], (W x)[:R])`, one per batch
/// entry. `x` holds one sample per row (`S x M`, as a batch of activations is stored); `W` is
/// `N x M`.
#[derive(Clone, Copy, Debug)]
pub struct ImportancePlan {
    w: MatDesc,
    x: MatDesc,
    compute: DType,
    need: usize,
}

impl ImportancePlan {
    pub fn new(exec: &dyn Executor, w: &MatDesc, x: &MatDesc, compute: DType) -> Result<Self> {
        importance_check(exec, w, x, compute)?;
        let need = measure(exec.device(), |ws| importance_layout(ws, w, x, compute).map(drop))?;
        Ok(ImportancePlan { w: *w, x: *x, compute, need })
    }
}

impl Plan for ImportancePlan {
    type Output = Vec<f64>;

    fn synchronizes(&self) -> bool {
        true // the cosine sums are read back to the host.
    }

    fn workspace(&self) -> WorkspaceNeed {
        WorkspaceNeed::exact(self.need)
    }

    unsafe fn run(&self, exec: &dyn Executor, ws: &mut Ws) -> Result<Vec<f64>> {
        // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
        // contract of the primitives it calls.
        unsafe {
            let (w, x, compute) = (&self.w, &self.x, self.compute);
            let s = importance_layout(ws, w, x, compute)?;
            let r = w.rows.min(w.cols);
            copy(exec, x, &s.xs)?;
            copy(exec, &w.rows_range(0, r), &s.ws_)?;
            // Y (S x R) = X W[:R]^T
            gemm(exec, &s.y, 1.0, &s.xs, &s.ws_.t(), 0.0, compute_for(compute))?;
            let b = s.y.batch;
            let mut out = Vec::with_capacity(b);
            for i in 0..b {
                let xb = s.xs.batch_range(i.min(s.xs.batch - 1), 1);
                let yb = s.y.batch_range(i, 1);
                // Row v of X[:, :R] and of Y: element stride = column stride, vector stride = row stride.
                let a = Vectors {
                    addr: xb.addr,
                    dtype: compute,
                    len: r,
                    elem_stride: xb.col_stride,
                    vec_stride: xb.row_stride,
                    batch_stride: 0,
                };
                let c = Vectors {
                    addr: yb.addr,
                    dtype: compute,
                    len: r,
                    elem_stride: yb.col_stride,
                    vec_stride: yb.row_stride,
                    batch_stride: 0,
                };
                out.push(exec.cosine_sum(&a, &c, x.rows)? / x.rows as f64);
            }
            Ok(out)
        }
    }
}

/// A validated read of a vector (e.g. singular values) of `len = rows * cols` elements per batch
/// entry from executor memory to the host as f64, through a small scratch. The result is flat:
/// batch entry `b` is `[b * len, (b + 1) * len)`. Every check comes before the workspace is
/// sized from `v`: a matrix that is not a vector, or an invalid descriptor, gets its own error
/// rather than an allocation of its claimed size.
#[derive(Clone, Copy, Debug)]
pub struct ReadVectorPlan {
    v: MatDesc,
    need: usize,
}

impl ReadVectorPlan {
    pub fn new(exec: &dyn Executor, v: &MatDesc) -> Result<Self> {
        v.validate("vector", true)?;
        check_device(exec, &[("vector", v)])?;
        let len = v.rows * v.cols; // fits: validated (or empty)
        if len > 0 {
            as_column(v, len, "vector")?;
        }
        let need = measure(v.device, |ws| ws.mat(DType::F64, len, 1, v.batch).map(drop))?;
        Ok(ReadVectorPlan { v: *v, need })
    }
}

impl Plan for ReadVectorPlan {
    type Output = Vec<f64>;

    fn synchronizes(&self) -> bool {
        true // the vector is read back to the host.
    }

    fn workspace(&self) -> WorkspaceNeed {
        WorkspaceNeed::exact(self.need)
    }

    unsafe fn run(&self, exec: &dyn Executor, ws: &mut Ws) -> Result<Vec<f64>> {
        // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
        // contract of the primitives it calls.
        unsafe {
            let v = &self.v;
            let len = v.rows * v.cols;
            if len == 0 {
                return Ok(vec![]);
            }
            let col = as_column(v, len, "vector")?;
            let st = ws.mat(DType::F64, len, 1, v.batch)?;
            copy(exec, &col, &st)?;
            let n = len * v.batch; // fits: the scratch of n doubles was carved above
            let mut bytes = Vec::new();
            bytes.try_reserve_exact(n * 8).map_err(|_| Error::AllocationFailed { bytes: n * 8 })?;
            bytes.resize(n * 8, 0u8);
            exec.read_to_host(st.addr, &mut bytes)?;
            Ok(bytes.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().unwrap())).collect())
        }
    }
}
