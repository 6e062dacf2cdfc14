//! Projection away from the frozen subspace.
//!
//! - left (`U` side): `X <- X - U_high (U_high^T X)`, `U_high: N x k` with orthonormal columns;
//! - right (`V` side): `X <- X - (X V_high^T) V_high`, `V_high: k x M` with orthonormal rows;
//! - both: `X <- (I - U_h U_h^T) X (I - V_h^T V_h)` (left, then right: the two commute).
//!
//! `X` is any `N x M` matrix — a gradient, an optimizer's update, or a trainable factor itself
//! (a retraction) — in any layout, in place or out of place, one matrix or a strided batch (the
//! bases may be one matrix broadcast over the batch, or a batch of their own, as for MoE experts).
//!
//! **Evaluation order and cost** (one side, `n` = the side's dimension: `N` for left, `M` for
//! right; flops of one `N x M` matrix):
//! - coefficient form `B (B^T X)`: two GEMMs, `4 N M k` flops, scratch = the coefficient matrix
//!   (`k x M` left, `N x k` right) — never a copy of `X`;
//! - cached projector `P = I - B B^T` (`n x n`, built once for `2 n^2 k` flops): one GEMM,
//!   `2 N M n` flops, but `n^2` elements of memory (the "Gram trap": `M x M` for a `down_proj`).
//!   It wins only when `k > n / 2`. See [`choose`].
//!
//! **Precision.** GEMMs accumulate in f32 (f64 for f64 data). For f16/bf16 data, the coefficient
//! matrix is stored in the data type (cuBLAS needs both GEMM operands of one type), so after
//! projection `|B^T X|` is of the order of the data type's rounding of the coefficients — the
//! same order as the rounding of `X` itself to that type, which no method avoids.
//!
//! **Two-phase sharded projection.** When the basis and `X` are split across ranks along the
//! contracted dimension (left: rows of `U_high` and `X`, FSDP's `Shard(0)`; right: columns of
//! `V_high` and `X`), the coefficient matrix is a sum of per-shard partials: [`PartialPlan`] computes
//! this rank's `U_r^T X_r` (or `X_r V_r^T`), the caller all-reduces (sum) it, and [`ApplyPlan`]
//! subtracts `U_r C` (or `C V_r`) locally.

use super::*;
use crate::desc::{check_batch, check_disjoint};
use crate::exec::MathMode;

/// Which side(s) to project. Values are part of the C ABI.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Left = 0,
    Right = 1,
    Both = 2,
}

impl Side {
    pub fn left(self) -> bool {
        matches!(self, Side::Left | Side::Both)
    }
    pub fn right(self) -> bool {
        matches!(self, Side::Right | Side::Both)
    }
}

/// The frozen bases: `u` is `U_high` (`N x k_u`), `v` is `V_high` (`k_v x M`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Bases<'a> {
    pub u: Option<&'a MatDesc>,
    pub v: Option<&'a MatDesc>,
}

fn need_basis<'a>(side: Side, b: &Bases<'a>) -> Result<(Option<&'a MatDesc>, Option<&'a MatDesc>)> {
    let u = if side.left() { Some(b.u.ok_or_else(|| Error::NullPointer { arg: "U_high".into() })?) } else { None };
    let v = if side.right() { Some(b.v.ok_or_else(|| Error::NullPointer { arg: "V_high".into() })?) } else { None };
    Ok((u, v))
}

/// `whole`: the basis spans the full dimension (not a shard), so it cannot have more vectors
/// than the dimension; a row shard of `U_high` may well have fewer rows than columns.
fn check_basis(name: &str, b: &MatDesc, x: &MatDesc, left: bool, whole: bool) -> Result<()> {
    b.validate(name, true)?;
    if left && b.rows != x.rows {
        return Err(Error::shape(name, format!("U_high has {} rows but X has {}", b.rows, x.rows)));
    }
    if !left && b.cols != x.cols {
        return Err(Error::shape(name, format!("V_high has {} columns but X has {}", b.cols, x.cols)));
    }
    let k = if left { b.cols } else { b.rows };
    let n = if left { x.rows } else { x.cols };
    if whole && k > n {
        return Err(Error::RankOutOfRange(format!("{name}: {k} basis vectors in dimension {n}")));
    }
    if b.dtype != x.dtype {
        return Err(Error::DtypeUnsupported(format!(
            "{name} is {} but X is {}: the basis must have the data's dtype (cast the frozen basis once)",
            b.dtype.name(),
            x.dtype.name()
        )));
    }
    Ok(())
}

/// Validate a projection call; returns the target (the matrix written).
pub(super) fn check(
    exec: &dyn Executor,
    side: Side,
    bases: &Bases,
    x: &MatDesc,
    out: Option<&MatDesc>,
) -> Result<MatDesc> {
    // An empty X (the gradient of an empty U_low when k = R) is a valid no-op.
    x.validate("X", true)?;
    let (u, v) = need_basis(side, bases)?;
    let mut ins: Vec<(&str, &MatDesc)> = vec![("X", x)];
    if let Some(u) = u {
        check_basis("U_high", u, x, true, true)?;
        ins.push(("U_high", u));
    }
    if let Some(v) = v {
        check_basis("V_high", v, x, false, true)?;
        ins.push(("V_high", v));
    }
    check_batch(x.batch, &ins)?;
    let target = match out {
        Some(o) => {
            o.validate("out", true)?;
            check_shape("out", o, x.rows, x.cols)?;
            check_out_batch("out", o, x.batch)?;
            if o.dtype != x.dtype {
                return Err(Error::DtypeUnsupported(format!("out is {} but X is {}", o.dtype.name(), x.dtype.name())));
            }
            *o
        }
        None => *x,
    };
    let mut all = ins.clone();
    all.push(("out", &target));
    check_device(exec, &all)?;
    // The target may be X itself (in place: the identical descriptor) but must not touch the
    // bases, which the GEMMs read while writing it.
    let bases_only: Vec<_> = ins.iter().filter(|(n, _)| *n != "X").cloned().collect();
    check_disjoint(&[("X (written)", &target)], &bases_only)?;
    if target != *x {
        check_disjoint(&[("out", &target)], &[("X", x)])?;
    }
    Ok(target)
}

/// Scratch of a coefficient-form projection.
struct Scratch {
    stage: Option<MatDesc>,
    u: Option<MatDesc>,
    v: Option<MatDesc>,
    coef: Addr,
}

fn layout(ws: &mut Ws, side: Side, bases: &Bases, x: &MatDesc, target: &MatDesc) -> Result<Scratch> {
    let (n, m, b) = (x.rows, x.cols, x.batch);
    let stage = if is_blas_out(target) { None } else { Some(ws.mat(x.dtype, n, m, b)?) };
    let mut stage_basis = |d: Option<&MatDesc>| -> Result<Option<MatDesc>> {
        match d {
            Some(d) if !is_blas(d) => Ok(Some(ws.mat(d.dtype, d.rows, d.cols, d.batch)?)),
            _ => Ok(None),
        }
    };
    let u = if side.left() { stage_basis(bases.u)? } else { None };
    let v = if side.right() { stage_basis(bases.v)? } else { None };
    let ku = if side.left() { bases.u.map_or(0, |u| u.cols) } else { 0 };
    let kv = if side.right() { bases.v.map_or(0, |v| v.rows) } else { 0 };
    let coef_elems = (ku * m).max(n * kv) * b;
    let coef = ws.take(coef_elems * x.dtype.size())?;
    Ok(Scratch { stage, u, v, coef })
}

/// A validated projection of `X` (in place, or into `out`) away from the bases, in the
/// coefficient form.
#[derive(Clone, Copy, Debug)]
pub struct ProjectPlan {
    side: Side,
    u: Option<MatDesc>,
    v: Option<MatDesc>,
    x: MatDesc,
    target: MatDesc,
    compute: ComputeType,
    need: usize,
}

impl ProjectPlan {
    /// Check a projection of `x` (into `out`, or in place when `out` is `None` or `x` itself).
    pub fn new(
        exec: &dyn Executor,
        side: Side,
        bases: &Bases,
        x: &MatDesc,
        out: Option<&MatDesc>,
        math: MathMode,
    ) -> Result<Self> {
        let target = check(exec, side, bases, x, out)?;
        let (u, v) = need_basis(side, bases)?;
        Self::checked(exec, side, u.copied(), v.copied(), x, &target, ComputeType::for_data(x.dtype, math))
    }

    /// The plan of a call [`check`] accepted (`target`: what it returned).
    pub(super) fn checked(
        exec: &dyn Executor,
        side: Side,
        u: Option<MatDesc>,
        v: Option<MatDesc>,
        x: &MatDesc,
        target: &MatDesc,
        compute: ComputeType,
    ) -> Result<Self> {
        let b = Bases { u: u.as_ref(), v: v.as_ref() };
        let need = measure(exec.device(), |ws| layout(ws, side, &b, x, target).map(drop))?;
        Ok(ProjectPlan { side, u, v, x: *x, target: *target, compute, need })
    }
}

impl Plan for ProjectPlan {
    type Output = ();

    fn synchronizes(&self) -> bool {
        false // it only issues work on the stream.
    }

    fn workspace(&self) -> WorkspaceNeed {
        WorkspaceNeed::exact(self.need)
    }

    unsafe fn run(&self, exec: &dyn Executor, ws: &mut Ws) -> Result<()> {
        // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
        // contract of the primitives it calls.
        unsafe {
            let (x, target, compute) = (&self.x, &self.target, self.compute);
            let s = layout(ws, self.side, &Bases { u: self.u.as_ref(), v: self.v.as_ref() }, x, target)?;
            // Bring X to where the GEMMs can write it.
            let t = match s.stage {
                Some(st) => {
                    copy(exec, x, &st)?;
                    st
                }
                None => {
                    if target != x {
                        copy(exec, x, target)?;
                    }
                    *target
                }
            };
            let staged = |d: &MatDesc, st: Option<MatDesc>| -> Result<MatDesc> {
                match st {
                    Some(st) => {
                        copy(exec, d, &st)?;
                        Ok(st)
                    }
                    None => Ok(*d),
                }
            };
            if let Some(u) = &self.u {
                let u = staged(u, s.u)?;
                project_left(exec, compute, &u, &t, s.coef)?;
            }
            if let Some(v) = &self.v {
                let v = staged(v, s.v)?;
                project_right(exec, compute, &v, &t, s.coef)?;
            }
            if s.stage.is_some() {
                copy(exec, &t, target)?;
            }
            Ok(())
        }
    }
}

/// `t <- t - U (U^T t)`: two strided-batched GEMMs for the whole batch.
unsafe fn project_left(
    exec: &dyn Executor,
    compute: ComputeType,
    u: &MatDesc,
    t: &MatDesc,
    coef_addr: Addr,
) -> Result<()> {
    // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
    // contract of the primitives it calls.
    unsafe {
        let k = u.cols;
        if k == 0 {
            return Ok(());
        }
        let coef = coef_like(t, coef_addr, k, t.cols);
        gemm(exec, &coef, 1.0, &u.t(), t, 0.0, compute)?;
        gemm(exec, t, -1.0, u, &coef, 1.0, compute)
    }
}

/// `t <- t - (t V^T) V`.
unsafe fn project_right(
    exec: &dyn Executor,
    compute: ComputeType,
    v: &MatDesc,
    t: &MatDesc,
    coef_addr: Addr,
) -> Result<()> {
    // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
    // contract of the primitives it calls.
    unsafe {
        let k = v.rows;
        if k == 0 {
            return Ok(());
        }
        let coef = coef_like(t, coef_addr, t.rows, k);
        gemm(exec, &coef, 1.0, t, &v.t(), 0.0, compute)?;
        gemm(exec, t, -1.0, &coef, v, 1.0, compute)
    }
}

/// The packed `rows x cols` coefficient matrix at `addr`, row-major when `t` is: then the GEMMs
/// see fewer transposed right operands, which BLAS kernels run slower (measured: the right
/// projection of a row-major X ran 1.17x faster on the CPU with a row-major coefficient).
fn coef_like(t: &MatDesc, addr: Addr, rows: usize, cols: usize) -> MatDesc {
    if blas_layout(t).is_some_and(|(op, _)| op == Op::T) {
        packed(addr, t.dtype, cols, rows, t.batch, t.device).t()
    } else {
        packed(addr, t.dtype, rows, cols, t.batch, t.device)
    }
}

/// A packed column-major batch at `addr`.
fn packed(addr: Addr, dtype: DType, rows: usize, cols: usize, batch: usize, device: crate::desc::Device) -> MatDesc {
    MatDesc {
        addr,
        dtype,
        rows,
        cols,
        row_stride: 1,
        col_stride: rows.max(1),
        batch,
        batch_stride: rows * cols,
        device,
    }
}

// ---------------------------------------------------------------------------------------------
// Two-phase sharded projection.

/// Which side a two-phase call is for (not `Both`: the two sides shard along different
/// dimensions; run them one after the other).
fn one_side(side: Side) -> Result<bool> {
    match side {
        Side::Left => Ok(true),
        Side::Right => Ok(false),
        Side::Both => {
            Err(Error::InvalidArgument("two-phase projection takes one side at a time (Left or Right)".into()))
        }
    }
}

fn coef_shape(left: bool, basis: &MatDesc, x: &MatDesc) -> (usize, usize) {
    if left {
        (basis.cols, x.cols)
    } else {
        (x.rows, basis.rows)
    }
}

/// `written`: `coef` is the output (phase 1), so its batch entries must not interleave either.
fn check_coef(x: &MatDesc, coef: &MatDesc, rows: usize, cols: usize, written: bool) -> Result<()> {
    coef.validate("coef", rows == 0 || cols == 0)?;
    check_shape("coef", coef, rows, cols)?;
    if !(if written { is_blas_out(coef) } else { is_blas(coef) }) {
        return Err(Error::stride(
            "coef",
            "the coefficient matrix must be row-major or column-major (one unit stride), batch entries not interleaved",
        ));
    }
    let ok = coef.dtype == x.dtype || (coef.dtype == DType::F32 && matches!(x.dtype, DType::F16 | DType::BF16));
    if !ok {
        let allowed = if matches!(x.dtype, DType::F16 | DType::BF16) {
            format!("{} or f32", x.dtype.name())
        } else {
            x.dtype.name().to_string()
        };
        return Err(Error::DtypeUnsupported(format!(
            "coef must be {allowed} for {} data, got {}",
            x.dtype.name(),
            coef.dtype.name()
        )));
    }
    Ok(())
}

/// `x_written`: phase 2 writes X, so its batch entries must not interleave either.
fn check_shard(exec: &dyn Executor, left: bool, basis: &MatDesc, x: &MatDesc, x_written: bool) -> Result<()> {
    x.validate("X", false)?;
    check_basis(if left { "U_high" } else { "V_high" }, basis, x, left, false)?;
    check_batch(x.batch, &[("basis", basis)])?;
    check_device(exec, &[("X", x), ("basis", basis)])?;
    let x_ok = if x_written { is_blas_out(x) } else { is_blas(x) };
    if !x_ok || !is_blas(basis) {
        return Err(Error::stride(
            "X",
            "two-phase projection needs row-major or column-major X and basis (batch entries of X not interleaved)",
        ));
    }
    Ok(())
}

/// Phase 1 of a sharded projection, validated: this shard's partial coefficients,
/// `coef = U_r^T X_r` (left, `k x M`) or `coef = X_r V_r^T` (right, `N x k`), overwriting `coef`.
/// Sum them over shards, then [`ApplyPlan`]. `coef` may be f32 for f16/bf16 data (recommended:
/// the all-reduce then sums in f32). Needs no workspace.
#[derive(Clone, Copy, Debug)]
pub struct PartialPlan {
    left: bool,
    basis: MatDesc,
    x: MatDesc,
    coef: MatDesc,
    compute: ComputeType,
}

impl PartialPlan {
    pub fn new(
        exec: &dyn Executor,
        side: Side,
        basis: &MatDesc,
        x: &MatDesc,
        coef: &MatDesc,
        math: MathMode,
    ) -> Result<Self> {
        let left = one_side(side)?;
        check_shard(exec, left, basis, x, false)?;
        let (r, c) = coef_shape(left, basis, x);
        check_coef(x, coef, r, c, true)?;
        check_out_batch("coef", coef, x.batch)?;
        check_device(exec, &[("coef", coef)])?;
        check_disjoint(&[("coef", coef)], &[("X", x), ("basis", basis)])?;
        Ok(PartialPlan { left, basis: *basis, x: *x, coef: *coef, compute: ComputeType::for_data(x.dtype, math) })
    }
}

impl Plan for PartialPlan {
    type Output = ();

    fn synchronizes(&self) -> bool {
        false // it only issues work on the stream.
    }

    fn workspace(&self) -> WorkspaceNeed {
        WorkspaceNeed::exact(0)
    }

    unsafe fn run(&self, exec: &dyn Executor, _ws: &mut Ws) -> Result<()> {
        // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
        // contract of the primitives it calls.
        unsafe {
            let (basis, x, coef) = (&self.basis, &self.x, &self.coef);
            if coef.is_empty() {
                return Ok(());
            }
            if self.left {
                gemm(exec, coef, 1.0, &basis.t(), x, 0.0, self.compute)
            } else {
                gemm(exec, coef, 1.0, x, &basis.t(), 0.0, self.compute)
            }
        }
    }
}

/// Workspace bytes for [`ApplyPlan`] (a cast copy of `coef` when its dtype differs from `X`'s).
pub fn apply_workspace_size(coef: &MatDesc, x: &MatDesc) -> Result<usize> {
    if coef.dtype == x.dtype {
        Ok(0)
    } else {
        let mut ws = Ws::measure(x.device);
        ws.mat(x.dtype, coef.rows, coef.cols, coef.batch)?;
        Ok(ws.used())
    }
}

/// The workspace of an [`ApplyPlan`] over `coef` and `x`, for a query that is not given the basis
/// (the C query): every check of the plan that does not involve the basis, then the size.
pub fn apply_workspace_query(exec: &dyn Executor, coef: &MatDesc, x: &MatDesc) -> Result<usize> {
    x.validate("X", false)?;
    if !is_blas_out(x) {
        return Err(Error::stride(
            "X",
            "two-phase projection needs row-major or column-major X (batch entries not interleaved)",
        ));
    }
    // coef's shape follows the basis, which the query does not see: checked against itself.
    check_coef(x, coef, coef.rows, coef.cols, false)?;
    check_batch(x.batch, &[("coef", coef)])?;
    check_device(exec, &[("X", x), ("coef", coef)])?;
    check_disjoint(&[("X", x)], &[("coef", coef)])?;
    if coef.rows == 0 || coef.cols == 0 {
        return Ok(0);
    }
    apply_workspace_size(coef, x)
}

/// Phase 2 of a sharded projection, validated: with the all-reduced coefficients,
/// `X_r <- X_r - U_r coef` (left) or `X_r <- X_r - coef V_r` (right), in place.
#[derive(Clone, Copy, Debug)]
pub struct ApplyPlan {
    left: bool,
    basis: MatDesc,
    coef: MatDesc,
    x: MatDesc,
    compute: ComputeType,
    /// Nothing to compute (an empty product).
    empty: bool,
    need: usize,
}

impl ApplyPlan {
    /// Every check before any workspace is measured: the workspace is sized from `coef`, so an
    /// invalid `coef` gets its own error, never an allocation of its claimed size.
    pub fn new(
        exec: &dyn Executor,
        side: Side,
        basis: &MatDesc,
        coef: &MatDesc,
        x: &MatDesc,
        math: MathMode,
    ) -> Result<Self> {
        let left = one_side(side)?;
        check_shard(exec, left, basis, x, true)?;
        let (r, c) = coef_shape(left, basis, x);
        check_coef(x, coef, r, c, false)?;
        check_batch(x.batch, &[("coef", coef)])?;
        check_device(exec, &[("coef", coef)])?;
        check_disjoint(&[("X", x)], &[("coef", coef), ("basis", basis)])?;
        let empty = r == 0 || c == 0;
        let need = if empty { 0 } else { apply_workspace_size(coef, x)? };
        let compute = ComputeType::for_data(x.dtype, math);
        Ok(ApplyPlan { left, basis: *basis, coef: *coef, x: *x, compute, empty, need })
    }
}

impl Plan for ApplyPlan {
    type Output = ();

    fn synchronizes(&self) -> bool {
        false // it only issues work on the stream.
    }

    fn workspace(&self) -> WorkspaceNeed {
        WorkspaceNeed::exact(self.need)
    }

    unsafe fn run(&self, exec: &dyn Executor, ws: &mut Ws) -> Result<()> {
        // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
        // contract of the primitives it calls.
        unsafe {
            if self.empty {
                return Ok(());
            }
            let (basis, x) = (&self.basis, &self.x);
            let coef = if self.coef.dtype != x.dtype {
                let st = ws.mat(x.dtype, self.coef.rows, self.coef.cols, self.coef.batch)?;
                copy(exec, &self.coef, &st)?;
                st
            } else {
                self.coef
            };
            if self.left {
                gemm(exec, x, -1.0, basis, &coef, 1.0, self.compute)
            } else {
                gemm(exec, x, -1.0, &coef, basis, 1.0, self.compute)
            }
        }
    }
}

// The cached-projector evaluation lives in `ops::projector`; its names stay reachable here.
pub use super::projector::{
    build_projector, choose, ProjectorPlan, ProjectorSide, SideChoice, Strategy, DEFAULT_MAX_PROJECTOR_BYTES,
};
