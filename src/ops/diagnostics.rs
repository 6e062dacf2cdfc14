//! Diagnostics, each returned per batch entry as f64 on the host (they synchronise; keep them off
//! the training hot path):
//! - leakage `||U_high^T X||_F / ||X||_F` (left) or `||X V_high^T||_F / ||X||_F` (right): 0 for a
//!   perfectly projected `X` (and 0 when `X` is zero);
//! - orthonormality error `||B^T B - I||_F` (columns of `B`) or `||B B^T - I||_F` (rows);
//! - reconstruction error `||W - U_h S_h V_h - U_l S_l V_l||_F / ||W||_F` (absolute when `W = 0`).
//!
//! Products are formed in the compute type (f32 for f32/f16/bf16 data, f64 for f64) and the norms
//! are accumulated in f64.

use super::project::Side;
use super::reconstruct::{self, Term};
use super::*;
use crate::desc::check_batch;

fn compute_out(dtype: DType) -> DType {
    dtype.default_compute()
}

fn stage_if_needed(ws: &mut Ws, d: &MatDesc) -> Result<Option<MatDesc>> {
    if is_blas(d) {
        Ok(None)
    } else {
        Ok(Some(ws.mat(d.dtype, d.rows, d.cols, d.batch)?))
    }
}

unsafe fn staged(exec: &dyn Executor, d: &MatDesc, st: Option<MatDesc>) -> Result<MatDesc> {
    // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
    // contract of the primitives it calls.
    unsafe {
        match st {
            Some(st) => {
                copy(exec, d, &st)?;
                Ok(st)
            }
            None => Ok(*d),
        }
    }
}

fn check_leakage(exec: &dyn Executor, side: Side, basis: &MatDesc, x: &MatDesc) -> Result<bool> {
    let left = match side {
        Side::Left => true,
        Side::Right => false,
        Side::Both => return Err(Error::InvalidArgument("leakage is measured one side at a time".into())),
    };
    x.validate("X", true)?;
    basis.validate("basis", true)?;
    if (left && basis.rows != x.rows) || (!left && basis.cols != x.cols) {
        return Err(Error::shape(
            "basis",
            format!("{} x {} basis does not fit a {} x {} X on this side", basis.rows, basis.cols, x.rows, x.cols),
        ));
    }
    if basis.dtype != x.dtype {
        return Err(Error::DtypeUnsupported("basis and X must share a dtype".into()));
    }
    check_batch(x.batch, &[("basis", basis)])?;
    check_device(exec, &[("X", x), ("basis", basis)])?;
    Ok(left)
}

fn leakage_layout(
    ws: &mut Ws,
    left: bool,
    basis: &MatDesc,
    x: &MatDesc,
) -> Result<(Option<MatDesc>, Option<MatDesc>, MatDesc)> {
    let sb = stage_if_needed(ws, basis)?;
    let sx = stage_if_needed(ws, x)?;
    let (r, c) = if left { (basis.cols, x.cols) } else { (x.rows, basis.rows) };
    let coef = ws.mat(compute_out(x.dtype), r, c, x.batch)?;
    Ok((sb, sx, coef))
}

/// A validated leakage measurement of `x` into the span of `basis` on one side, per batch entry.
#[derive(Clone, Copy, Debug)]
pub struct LeakagePlan {
    left: bool,
    basis: MatDesc,
    x: MatDesc,
    need: usize,
}

impl LeakagePlan {
    pub fn new(exec: &dyn Executor, side: Side, basis: &MatDesc, x: &MatDesc) -> Result<Self> {
        let left = check_leakage(exec, side, basis, x)?;
        let need = measure(exec.device(), |ws| leakage_layout(ws, left, basis, x).map(drop))?;
        Ok(LeakagePlan { left, basis: *basis, x: *x, need })
    }
}

impl Plan for LeakagePlan {
    type Output = Vec<f64>;

    fn synchronizes(&self) -> bool {
        true // the norms are read back to the host.
    }

    fn workspace(&self) -> WorkspaceNeed {
        WorkspaceNeed::exact(self.need)
    }

    unsafe fn run(&self, exec: &dyn Executor, ws: &mut Ws) -> Result<Vec<f64>> {
        // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
        // contract of the primitives it calls.
        unsafe {
            let (left, basis, x) = (self.left, &self.basis, &self.x);
            let (sb, sx, coef) = leakage_layout(ws, left, basis, x)?;
            let b = staged(exec, basis, sb)?;
            let xs = staged(exec, x, sx)?;
            let gc = compute_for(x.dtype);
            if coef.rows > 0 && coef.cols > 0 {
                if left {
                    gemm(exec, &coef, 1.0, &b.t(), &xs, 0.0, gc)?;
                } else {
                    gemm(exec, &coef, 1.0, &xs, &b.t(), 0.0, gc)?;
                }
            }
            let num = exec.sum_squares(coef.rows, coef.cols, coef.batch, &strided2d(&coef))?;
            let den = exec.sum_squares(x.rows, x.cols, x.batch, &strided2d(x))?;
            Ok(num.iter().zip(&den).map(|(n, d)| if *d == 0.0 { 0.0 } else { (n / d).sqrt() }).collect())
        }
    }
}

fn ortho_layout(ws: &mut Ws, basis: &MatDesc, columns: bool) -> Result<(Option<MatDesc>, MatDesc)> {
    let sb = stage_if_needed(ws, basis)?;
    let k = if columns { basis.cols } else { basis.rows };
    let g = ws.mat(compute_out(basis.dtype), k, k, basis.batch)?;
    Ok((sb, g))
}

/// A validated orthonormality measurement: `||B^T B - I||_F` (`columns`) or `||B B^T - I||_F`,
/// per batch entry.
#[derive(Clone, Copy, Debug)]
pub struct OrthonormalityPlan {
    basis: MatDesc,
    columns: bool,
    need: usize,
}

impl OrthonormalityPlan {
    pub fn new(exec: &dyn Executor, basis: &MatDesc, columns: bool) -> Result<Self> {
        basis.validate("basis", true)?;
        check_device(exec, &[("basis", basis)])?;
        let need = measure(exec.device(), |ws| ortho_layout(ws, basis, columns).map(drop))?;
        Ok(OrthonormalityPlan { basis: *basis, columns, need })
    }
}

impl Plan for OrthonormalityPlan {
    type Output = Vec<f64>;

    fn synchronizes(&self) -> bool {
        true // the norms are read back to the host.
    }

    fn workspace(&self) -> WorkspaceNeed {
        WorkspaceNeed::exact(self.need)
    }

    unsafe fn run(&self, exec: &dyn Executor, ws: &mut Ws) -> Result<Vec<f64>> {
        // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
        // contract of the primitives it calls.
        unsafe {
            let (basis, columns) = (&self.basis, self.columns);
            let (sb, g) = ortho_layout(ws, basis, columns)?;
            if g.rows == 0 {
                return Ok(vec![0.0; basis.batch]);
            }
            let b = staged(exec, basis, sb)?;
            let b = if columns { b } else { b.t() };
            gemm(exec, &g, 1.0, &b.t(), &b, 0.0, compute_for(basis.dtype))?;
            exec.add_diagonal(
                g.rows,
                &Strided { addr: g.addr, dtype: g.dtype, ld: g.rows, stride: g.batch_stride },
                g.batch,
                -1.0,
            )?;
            Ok(exec.sum_squares(g.rows, g.cols, g.batch, &strided2d(&g))?.into_iter().map(f64::sqrt).collect())
        }
    }
}

/// A validated relative reconstruction error of `w` by the given terms, per batch entry.
#[derive(Clone, Debug)]
pub struct ReconstructionErrorPlan {
    w: MatDesc,
    rec: reconstruct::ScratchReconstruction,
}

impl ReconstructionErrorPlan {
    pub fn new(exec: &dyn Executor, w: &MatDesc, terms: &[Term], compute: DType) -> Result<Self> {
        w.validate("W", false)?;
        check_device(exec, &[("W", w)])?;
        Ok(ReconstructionErrorPlan { w: *w, rec: reconstruct::ScratchReconstruction::new(exec, terms, w, compute)? })
    }
}

impl Plan for ReconstructionErrorPlan {
    type Output = Vec<f64>;

    fn synchronizes(&self) -> bool {
        true // the norms are read back to the host.
    }

    fn workspace(&self) -> WorkspaceNeed {
        WorkspaceNeed::exact(self.rec.need)
    }

    unsafe fn run(&self, exec: &dyn Executor, ws: &mut Ws) -> Result<Vec<f64>> {
        // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
        // contract of the primitives it calls.
        unsafe {
            let w = &self.w;
            let r = self.rec.run(exec, ws)?;
            // r <- W - r
            axpby(exec, 1.0, w, -1.0, &r)?;
            let num = exec.sum_squares(r.rows, r.cols, r.batch, &strided2d(&r))?;
            let den = exec.sum_squares(w.rows, w.cols, w.batch, &strided2d(w))?;
            Ok(num.iter().zip(&den).map(|(n, d)| if *d == 0.0 { n.sqrt() } else { (n / d).sqrt() }).collect())
        }
    }
}
