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
//! `V_high` and `X`), the coefficient matrix is a sum of per-shard partials: [`partial`] computes
//! this rank's `U_r^T X_r` (or `X_r V_r^T`), the caller all-reduces (sum) it, and [`apply`]
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
fn check(exec: &dyn Executor, side: Side, bases: &Bases, x: &MatDesc, out: Option<&MatDesc>) -> Result<MatDesc> {
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

/// Workspace bytes for [`project`].
pub fn workspace_size(
    exec: &dyn Executor,
    side: Side,
    bases: &Bases,
    x: &MatDesc,
    out: Option<&MatDesc>,
) -> Result<usize> {
    let target = check(exec, side, bases, x, out)?;
    let mut ws = Ws::measure(exec.device());
    layout(&mut ws, side, bases, x, &target)?;
    Ok(ws.used())
}

/// Project `x` (in place when `out` is `None` or the same descriptor) away from the bases.
///
/// # Safety
/// Every descriptor must describe valid memory of the executor's device; `ws` must be valid
/// workspace memory of the size it was created with.
pub unsafe fn project(
    exec: &dyn Executor,
    ws: &mut Ws,
    side: Side,
    bases: &Bases,
    x: &MatDesc,
    out: Option<&MatDesc>,
    math: MathMode,
) -> Result<()> {
    let target = check(exec, side, bases, x, out)?;
    let s = layout(ws, side, bases, x, &target)?;
    let compute = ComputeType::for_data(x.dtype, math);
    // Bring X to where the GEMMs can write it.
    let t = match s.stage {
        Some(st) => {
            copy(exec, x, &st)?;
            st
        }
        None => {
            if target != *x {
                copy(exec, x, &target)?;
            }
            target
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
    if side.left() {
        let u = staged(bases.u.unwrap(), s.u)?;
        project_left(exec, compute, &u, &t, s.coef)?;
    }
    if side.right() {
        let v = staged(bases.v.unwrap(), s.v)?;
        project_right(exec, compute, &v, &t, s.coef)?;
    }
    if s.stage.is_some() {
        copy(exec, &t, &target)?;
    }
    Ok(())
}

/// `t <- t - U (U^T t)`: two strided-batched GEMMs for the whole batch.
unsafe fn project_left(
    exec: &dyn Executor,
    compute: ComputeType,
    u: &MatDesc,
    t: &MatDesc,
    coef_addr: Addr,
) -> Result<()> {
    let k = u.cols;
    if k == 0 {
        return Ok(());
    }
    let coef = coef_like(t, coef_addr, k, t.cols);
    gemm(exec, &coef, 1.0, &u.t(), t, 0.0, compute)?;
    gemm(exec, t, -1.0, u, &coef, 1.0, compute)
}

/// `t <- t - (t V^T) V`.
unsafe fn project_right(
    exec: &dyn Executor,
    compute: ComputeType,
    v: &MatDesc,
    t: &MatDesc,
    coef_addr: Addr,
) -> Result<()> {
    let k = v.rows;
    if k == 0 {
        return Ok(());
    }
    let coef = coef_like(t, coef_addr, t.rows, k);
    gemm(exec, &coef, 1.0, t, &v.t(), 0.0, compute)?;
    gemm(exec, t, -1.0, &coef, v, 1.0, compute)
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

/// Phase 1: this shard's partial coefficients, `coef = U_r^T X_r` (left, `k x M`) or
/// `coef = X_r V_r^T` (right, `N x k`), overwriting `coef`. Sum them over shards, then [`apply`].
/// `coef` may be f32 for f16/bf16 data (recommended: the all-reduce then sums in f32).
///
/// # Safety
/// Every descriptor must describe valid memory of the executor's device.
pub unsafe fn partial(
    exec: &dyn Executor,
    side: Side,
    basis: &MatDesc,
    x: &MatDesc,
    coef: &MatDesc,
    math: MathMode,
) -> Result<()> {
    let left = one_side(side)?;
    check_shard(exec, left, basis, x, false)?;
    let (r, c) = coef_shape(left, basis, x);
    check_coef(x, coef, r, c, true)?;
    check_out_batch("coef", coef, x.batch)?;
    check_device(exec, &[("coef", coef)])?;
    check_disjoint(&[("coef", coef)], &[("X", x), ("basis", basis)])?;
    if r == 0 || c == 0 {
        return Ok(());
    }
    let compute = ComputeType::for_data(x.dtype, math);
    if left {
        gemm(exec, coef, 1.0, &basis.t(), x, 0.0, compute)
    } else {
        gemm(exec, coef, 1.0, x, &basis.t(), 0.0, compute)
    }
}

/// Workspace bytes for [`apply`] (a cast copy of `coef` when its dtype differs from `X`'s).
pub fn apply_workspace_size(coef: &MatDesc, x: &MatDesc) -> Result<usize> {
    if coef.dtype == x.dtype {
        Ok(0)
    } else {
        let mut ws = Ws::measure(x.device);
        ws.mat(x.dtype, coef.rows, coef.cols, coef.batch)?;
        Ok(ws.used())
    }
}

/// Every check of [`apply`], before any workspace is taken (a context sizes and allocates its
/// workspace only for a valid call: an invalid `coef` must get its own error, not an allocation
/// of its claimed size). `Ok(false)`: nothing to compute (an empty product).
pub fn check_shard_apply(
    exec: &dyn Executor,
    side: Side,
    basis: &MatDesc,
    coef: &MatDesc,
    x: &MatDesc,
) -> Result<bool> {
    let left = one_side(side)?;
    check_shard(exec, left, basis, x, true)?;
    let (r, c) = coef_shape(left, basis, x);
    check_coef(x, coef, r, c, false)?;
    check_batch(x.batch, &[("coef", coef)])?;
    check_device(exec, &[("coef", coef)])?;
    check_disjoint(&[("X", x)], &[("coef", coef), ("basis", basis)])?;
    Ok(r > 0 && c > 0)
}

/// Phase 2: with the all-reduced coefficients, `X_r <- X_r - U_r coef` (left) or
/// `X_r <- X_r - coef V_r` (right), in place.
///
/// # Safety
/// Every descriptor must describe valid memory of the executor's device.
pub unsafe fn apply(
    exec: &dyn Executor,
    ws: &mut Ws,
    side: Side,
    basis: &MatDesc,
    coef: &MatDesc,
    x: &MatDesc,
    math: MathMode,
) -> Result<()> {
    if !check_shard_apply(exec, side, basis, coef, x)? {
        return Ok(());
    }
    let left = one_side(side)?;
    let coef = if coef.dtype != x.dtype {
        let st = ws.mat(x.dtype, coef.rows, coef.cols, coef.batch)?;
        copy(exec, coef, &st)?;
        st
    } else {
        *coef
    };
    let compute = ComputeType::for_data(x.dtype, math);
    if left {
        gemm(exec, x, -1.0, basis, &coef, 1.0, compute)
    } else {
        gemm(exec, x, -1.0, &coef, basis, 1.0, compute)
    }
}

// ---------------------------------------------------------------------------------------------
// Cached projector.

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
/// when it is both cheaper by at least 10% (`2 n^2 < 0.9 * 4 n k`, i.e. `k > 0.556 n`), small
/// (`n^2` elements within `max_bytes`), and the data is f32/f64 (a rounded f16/bf16 projector
/// would leak more than the coefficient form).
pub fn choose(strategy: Strategy, dtype: DType, n: usize, k: usize, max_bytes: usize) -> Strategy {
    match strategy {
        Strategy::Auto => {
            let cheaper = 2.0 * (n as f64) * (n as f64) < 0.9 * 4.0 * (n as f64) * (k as f64);
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

/// Column (left) or row (right) panel width for in-place application of a cached projector.
fn panel(len: usize) -> usize {
    len.min(256.max(len.div_ceil(8)))
}

/// Workspace for [`apply_projector`].
pub fn apply_projector_workspace_size(left: bool, p: &MatDesc, x: &MatDesc, out: Option<&MatDesc>) -> Result<usize> {
    let in_place = out.is_none_or(|o| o == x);
    if !in_place {
        return Ok(0);
    }
    let mut ws = Ws::measure(x.device);
    let (r, c) = if left { (p.rows, panel(x.cols)) } else { (panel(x.rows), p.rows) };
    ws.mat(x.dtype, r, c, x.batch)?;
    Ok(ws.used())
}

/// `X <- P X` (left) or `X <- X P` (right) with a cached projector; out of place in one GEMM,
/// in place by panels through a small scratch (GEMM cannot write its own input). `x` and `out`
/// must already be validated by [`check`] and be BLAS-compatible.
///
/// # Safety
/// Descriptors must describe valid memory of the executor's device.
pub(crate) unsafe fn apply_projector(
    exec: &dyn Executor,
    ws: &mut Ws,
    left: bool,
    p: &MatDesc,
    x: &MatDesc,
    out: Option<&MatDesc>,
    math: MathMode,
) -> Result<()> {
    let compute = ComputeType::for_data(x.dtype, math);
    match out {
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

/// Validation for a cached-projector application (same rules as [`project`]).
pub(crate) fn check_apply(
    exec: &dyn Executor,
    side: Side,
    bases: &Bases,
    x: &MatDesc,
    out: Option<&MatDesc>,
) -> Result<MatDesc> {
    check(exec, side, bases, x, out)
}
