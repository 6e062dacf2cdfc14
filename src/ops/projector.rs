//! The cached projector: for a basis of `k` vectors in dimension `n`, `P = I - B B^T` (`n x n`)
//! built once, then one GEMM per application (`2 N M n` flops) instead of the coefficient form's
//! two (`4 N M k`): it wins only when `k > n / 2` and `P` is small (see [`choose`]). The
//! [`Projector`](crate::Projector) picks per side; [`ProjectorPlan`] validates one application.

use super::project::{check, Bases, ProjectPlan, Side};
use super::*;
use crate::exec::MathMode;

/// How a [`Projector`](crate::Projector) evaluates.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Pick by flop count and memory (see [`choose`]).
    Auto = 0,
    /// `B (B^T X)`: `4 N M k` flops, `k`-sized scratch.
    Coefficient = 1,
    /// `P X` with `P = I - B B^T` cached: `2 N M n` flops, `n^2` memory.
    CachedProjector = 2,
}

/// Default cap on the memory of a cached projector (`n^2` elements).
pub const DEFAULT_MAX_PROJECTOR_BYTES: usize = 64 << 20;

/// The evaluation order for a basis of `k` vectors in dimension `n`: the cached projector only
/// when it is both cheaper by at least 10% (`2 n^2 < 0.9 * 4 n k`, i.e. `9 k > 5 n`,
/// `k > 0.5556 n`), small (`n^2` elements within `max_bytes`), and the data is f32/f64 (a
/// rounded f16/bf16 projector would leak more than the coefficient form).
pub fn choose(strategy: Strategy, dtype: DType, n: usize, k: usize, max_bytes: usize) -> Strategy {
    match strategy {
        Strategy::Auto => {
            // 2 n^2 < 0.9 * 4 n k is 5 n < 9 k, compared in integers: a tie (n = 9, k = 5) is
            // never a win, where floating-point products may round either way.
            let cheaper = 5 * (n as u128) < 9 * (k as u128);
            let small = n.saturating_mul(n).saturating_mul(dtype.size()) <= max_bytes;
            if cheaper && small && dtype.is_compute() {
                Strategy::CachedProjector
            } else {
                Strategy::Coefficient
            }
        }
        s => s,
    }
}

/// Build `P = I - B B^T` (left, `B = U_high`, `P: N x N`) or `P = I - V^T V` (right,
/// `V = V_high`, `P: M x M`) into `p` (packed column-major, the basis's dtype, f32/f64 only).
///
/// # Safety
/// Descriptors must describe valid memory of the executor's device.
pub unsafe fn build_projector(exec: &dyn Executor, left: bool, basis: &MatDesc, p: &MatDesc) -> Result<()> {
    // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
    // contract of the primitives it calls.
    unsafe {
        let compute = compute_for(basis.dtype);
        let b = if left { *basis } else { basis.t() }; // n x k, orthonormal columns
        gemm(exec, p, -1.0, &b, &b.t(), 0.0, compute)?;
        exec.add_diagonal(
            p.rows,
            &Strided { addr: p.addr, dtype: p.dtype, ld: p.rows.max(1), stride: p.batch_stride },
            p.batch,
            1.0,
        )
    }
}

/// Column (left) or row (right) panel width for in-place application of a cached projector.
fn panel(len: usize) -> usize {
    len.min(256.max(len.div_ceil(8)))
}

/// One side of a [`Projector`](crate::Projector) as requested, validated, with its evaluation
/// order chosen: `cached_bytes` is the size of its cached `n x n` projector when it uses one.
#[derive(Clone, Copy, Debug)]
pub struct SideChoice {
    pub basis: MatDesc,
    /// `n`: the side's dimension (`N` for `U_high`, `M` for `V_high`).
    pub dimension: usize,
    pub cached_bytes: Option<usize>,
}

impl SideChoice {
    /// The choice for the left (`U_high`) or right (`V_high`) side of a projector on `side`;
    /// `None` when `side` does not project that side.
    pub fn new(
        exec: &dyn Executor,
        side: Side,
        left: bool,
        basis: Option<MatDesc>,
        strategy: Strategy,
        max_bytes: usize,
    ) -> Result<Option<Self>> {
        if (left && !side.left()) || (!left && !side.right()) {
            return Ok(None);
        }
        let name = if left { "U_high" } else { "V_high" };
        let b = basis.ok_or_else(|| Error::NullPointer { arg: name.into() })?;
        b.validate(name, true)?;
        check_device(exec, &[(name, &b)])?;
        let (n, k) = if left { (b.rows, b.cols) } else { (b.cols, b.rows) };
        if k > n {
            return Err(Error::RankOutOfRange(format!("{name}: {k} basis vectors in dimension {n}")));
        }
        // AUTO takes the cached form only where it can: one basis, in a BLAS layout.
        let cacheable = b.batch == 1 && is_blas(&b);
        let chosen = match choose(strategy, b.dtype, n, k, max_bytes) {
            Strategy::CachedProjector if strategy == Strategy::Auto && !cacheable => Strategy::Coefficient,
            s => s,
        };
        let cached_bytes = if chosen == Strategy::CachedProjector {
            if !b.dtype.is_compute() {
                return Err(Error::DtypeUnsupported(format!(
                    "a cached projector needs f32 or f64 bases, not {}",
                    b.dtype.name()
                )));
            }
            if b.batch != 1 {
                return Err(Error::InvalidArgument("a cached projector takes one basis, not a batch".into()));
            }
            if !is_blas(&b) {
                return Err(Error::stride(name, "a cached projector needs a row- or column-major basis"));
            }
            let bytes = n
                .checked_mul(n)
                .and_then(|x| x.checked_mul(b.dtype.size()))
                .ok_or_else(|| Error::overflow(name, format!("a {n} x {n} {} projector", b.dtype.name())))?;
            Some(bytes)
        } else {
            None
        };
        Ok(Some(SideChoice { basis: b, dimension: n, cached_bytes }))
    }
}

/// One side of a [`Projector`](crate::Projector): its basis, and the cached `P = I - B B^T`
/// (built by [`build_projector`]) when that side uses the cached form.
#[derive(Clone, Copy, Debug)]
pub struct ProjectorSide {
    pub left: bool,
    pub basis: MatDesc,
    pub cached: Option<MatDesc>,
}

/// One step of a projector application: a side in the coefficient form, or by its cached `P`.
#[derive(Clone, Copy, Debug)]
enum Step {
    Coefficient(ProjectPlan),
    Cached(CachedPlan),
}

/// `X <- P X` (left) or `X <- X P` (right) with a cached projector; out of place in one GEMM,
/// in place by panels through a small scratch (GEMM cannot write its own input). Built only
/// for BLAS-compatible `x` and `out`, already validated.
#[derive(Clone, Copy, Debug)]
struct CachedPlan {
    left: bool,
    p: MatDesc,
    x: MatDesc,
    out: Option<MatDesc>,
    compute: ComputeType,
    need: usize,
}

impl CachedPlan {
    fn new(left: bool, p: MatDesc, x: MatDesc, out: Option<MatDesc>, compute: ComputeType) -> Result<Self> {
        let need = if out.is_some_and(|o| o != x) {
            0
        } else {
            let (r, c) = if left { (p.rows, panel(x.cols)) } else { (panel(x.rows), p.rows) };
            measure(x.device, |ws| ws.mat(x.dtype, r, c, x.batch).map(drop))?
        };
        Ok(CachedPlan { left, p, x, out, compute, need })
    }

    unsafe fn run(&self, exec: &dyn Executor, ws: &mut Ws) -> Result<()> {
        // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
        // contract of the primitives it calls.
        unsafe {
            let (left, p, x, compute) = (self.left, &self.p, &self.x, self.compute);
            match &self.out {
                Some(o) if o != x => {
                    if left {
                        gemm(exec, o, 1.0, p, x, 0.0, compute)
                    } else {
                        gemm(exec, o, 1.0, x, p, 0.0, compute)
                    }
                }
                _ => {
                    let len = if left { x.cols } else { x.rows };
                    let w = panel(len);
                    let (r, c) = if left { (p.rows, w) } else { (w, p.rows) };
                    let tmp = ws.mat(x.dtype, r, c, x.batch)?;
                    let mut s = 0;
                    while s < len {
                        let width = w.min(len - s);
                        let (xs, ts) = if left {
                            (x.cols_range(s, width), tmp.cols_range(0, width))
                        } else {
                            (x.rows_range(s, width), tmp.rows_range(0, width))
                        };
                        if left {
                            gemm(exec, &ts, 1.0, p, &xs, 0.0, compute)?;
                        } else {
                            gemm(exec, &ts, 1.0, &xs, p, 0.0, compute)?;
                        }
                        copy(exec, &ts, &xs)?;
                        s += width;
                    }
                    Ok(())
                }
            }
        }
    }
}

/// A validated application of a projector's sides to `X` (in place or into `out`): the same
/// checks as [`ProjectPlan`], then one step per side — the cached `P` where that side has one and
/// `X` and the target are in BLAS layouts, else the coefficient form. The steps run one after the
/// other over the same workspace.
#[derive(Clone, Debug)]
pub struct ProjectorPlan {
    steps: Vec<Step>,
}

impl ProjectorPlan {
    pub fn new(
        exec: &dyn Executor,
        side: Side,
        sides: &[ProjectorSide],
        x: &MatDesc,
        out: Option<&MatDesc>,
        math: MathMode,
    ) -> Result<Self> {
        let basis = |left: bool| sides.iter().find(|s| s.left == left).map(|s| &s.basis);
        let target = check(exec, side, &Bases { u: basis(true), v: basis(false) }, x, out)?;
        let blas = is_blas(x) && is_blas_out(&target);
        let compute = ComputeType::for_data(x.dtype, math);
        let mut steps = Vec::with_capacity(sides.len());
        let mut src = *x;
        for s in sides {
            let dst = if target != src { Some(target) } else { None };
            steps.push(match (s.cached, blas) {
                (Some(p), true) => Step::Cached(CachedPlan::new(s.left, p, src, dst, compute)?),
                _ => {
                    let (u, v, one) =
                        if s.left { (Some(s.basis), None, Side::Left) } else { (None, Some(s.basis), Side::Right) };
                    Step::Coefficient(ProjectPlan::checked(exec, one, u, v, &src, &target, compute)?)
                }
            });
            src = target;
        }
        Ok(ProjectorPlan { steps })
    }
}

impl Plan for ProjectorPlan {
    type Output = ();

    fn synchronizes(&self) -> bool {
        false // it only issues work on the stream.
    }

    fn workspace(&self) -> WorkspaceNeed {
        let need = self.steps.iter().map(|s| match s {
            Step::Coefficient(p) => p.workspace().min,
            Step::Cached(c) => c.need,
        });
        WorkspaceNeed::exact(need.max().unwrap_or(0))
    }

    unsafe fn run(&self, exec: &dyn Executor, ws: &mut Ws) -> Result<()> {
        // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
        // contract of the primitives it calls.
        unsafe {
            for step in &self.steps {
                // Each step carves from where `ws` stands: the steps run one after another and
                // reuse each other's scratch.
                let mut ws = ws.clone();
                match step {
                    Step::Coefficient(p) => p.run(exec, &mut ws)?,
                    Step::Cached(c) => c.run(exec, &mut ws)?,
                }
            }
            Ok(())
        }
    }
}
