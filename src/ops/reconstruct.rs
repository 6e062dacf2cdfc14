//! Reconstruct `W = U_high diag(S_high) V_high + U_low diag(S_low) V_low` in a compute type
//! (f32/f64), written in the output's dtype and layout.
//!
//! Each term scales the smaller factor by `S` in scratch (`U` when `N <= M`, else `V`), then one
//! GEMM accumulates into `W` directly when it already has the compute type and a BLAS layout, or
//! into a compute-type scratch `N x M` that is cast into `W` at the end. Either part may be
//! omitted or have rank 0.

use super::*;
use crate::desc::{check_batch, check_disjoint};
use crate::exec::DgmmArgs;
use crate::exec::MathMode;

/// One term `U diag(S) V` (`U: N x r`, `S: r`, `V: r x M`).
#[derive(Clone, Copy, Debug)]
pub struct Term<'a> {
    pub u: &'a MatDesc,
    pub s: &'a MatDesc,
    pub v: &'a MatDesc,
}

/// Validated shapes of a term.
#[derive(Clone, Copy, Debug)]
struct Checked {
    u: MatDesc,
    s: MatDesc,
    v: MatDesc,
    r: usize,
}

fn check_term(i: usize, t: &Term, n: usize, m: usize) -> Result<Checked> {
    // Terms are positional (the high part, the low part, or just one of them): name them so.
    let names = [format!("U of term {i}"), format!("S of term {i}"), format!("V of term {i}")];
    let r = t.u.cols;
    t.u.validate(&names[0], true)?;
    t.v.validate(&names[2], true)?;
    t.s.validate(&names[1], true)?;
    check_shape(&names[0], t.u, n, r)?;
    check_shape(&names[2], t.v, r, m)?;
    let s = if r == 0 { MatDesc { rows: 0, cols: 1, ..*t.s } } else { as_column(t.s, r, &names[1])? };
    Ok(Checked { u: *t.u, s, v: *t.v, r })
}

struct Scratch {
    acc: MatDesc,
    scaled: Vec<MatDesc>,
    svec: Vec<MatDesc>,
    other: Vec<Option<MatDesc>>,
}

fn layout(ws: &mut Ws, terms: &[Checked], out: &MatDesc, compute: DType) -> Result<Scratch> {
    let (n, m, b) = (out.rows, out.cols, out.batch);
    let acc = if out.dtype == compute && is_blas_out(out) { *out } else { ws.mat(compute, n, m, b)? };
    let (mut scaled, mut svec, mut other) = (vec![], vec![], vec![]);
    for t in terms {
        let scale_u = n <= m;
        scaled.push(if scale_u { ws.mat(compute, n, t.r, b)? } else { ws.mat(compute, t.r, m, b)? });
        svec.push(ws.mat(compute, t.r, 1, b)?);
        let o = if scale_u { &t.v } else { &t.u };
        other.push(if o.dtype == compute && is_blas(o) {
            None
        } else {
            Some(ws.mat(compute, o.rows, o.cols, o.batch)?)
        });
    }
    Ok(Scratch { acc, scaled, svec, other })
}

/// `caller_out`: `out` is the caller's buffer (checked against aliasing the inputs), not scratch.
fn check_all(
    exec: &dyn Executor,
    terms: &[Term],
    out: &MatDesc,
    compute: DType,
    caller_out: bool,
) -> Result<Vec<Checked>> {
    out.validate("W", false)?;
    check_compute(compute)?;
    if terms.is_empty() {
        return Err(Error::InvalidArgument("reconstruct needs at least one of the high and low parts".into()));
    }
    let checked =
        terms.iter().enumerate().map(|(i, t)| check_term(i, t, out.rows, out.cols)).collect::<Result<Vec<_>>>()?;
    let mut ins: Vec<(&str, &MatDesc)> = vec![];
    for t in terms {
        ins.extend([("U", t.u), ("S", t.s), ("V", t.v)]);
    }
    check_batch(out.batch, &ins)?;
    let mut all = ins.clone();
    all.push(("W", out));
    check_device(exec, &all)?;
    if caller_out {
        check_disjoint(&[("W", out)], &ins)?;
    }
    Ok(checked)
}

/// A validated reconstruction into the caller's `out`.
#[derive(Clone, Debug)]
pub struct ReconstructPlan {
    terms: Vec<Checked>,
    out: MatDesc,
    compute: DType,
    math: MathMode,
    need: usize,
}

impl ReconstructPlan {
    pub fn new(exec: &dyn Executor, terms: &[Term], out: &MatDesc, compute: DType, math: MathMode) -> Result<Self> {
        let terms = check_all(exec, terms, out, compute, true)?;
        let need = measure(exec.device(), |ws| layout(ws, &terms, out, compute).map(drop))?;
        Ok(ReconstructPlan { terms, out: *out, compute, math, need })
    }
}

impl Plan for ReconstructPlan {
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
            let s = layout(ws, &self.terms, &self.out, self.compute)?;
            accumulate(exec, &self.terms, &s, &self.out, self.compute, self.math)?;
            if s.acc != self.out {
                copy(exec, &s.acc, &self.out)?;
            }
            Ok(())
        }
    }
}

unsafe fn accumulate(
    exec: &dyn Executor,
    terms: &[Checked],
    s: &Scratch,
    out: &MatDesc,
    compute: DType,
    math: MathMode,
) -> Result<()> {
    // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
    // contract of the primitives it calls.
    unsafe {
        let (n, m) = (out.rows, out.cols);
        let gc = ComputeType::for_data(compute, math);
        let mut beta = 0.0;
        for (i, t) in terms.iter().enumerate() {
            if t.r == 0 {
                continue;
            }
            let scale_u = n <= m;
            let sc = s.scaled[i];
            copy(exec, if scale_u { &t.u } else { &t.v }, &sc)?;
            copy(exec, &t.s, &s.svec[i])?;
            let sv = s.svec[i];
            exec.dgmm(&DgmmArgs {
                left: !scale_u,
                m: sc.rows,
                n: sc.cols,
                a: Strided { addr: sc.addr, dtype: compute, ld: sc.col_stride, stride: sc.batch_stride },
                x: sv.addr,
                incx: 1,
                stride_x: sv.batch_stride,
                c: Strided { addr: sc.addr, dtype: compute, ld: sc.col_stride, stride: sc.batch_stride },
                batch: sc.batch,
            })?;
            let other_src = if scale_u { &t.v } else { &t.u };
            let other = match s.other[i] {
                Some(st) => {
                    copy(exec, other_src, &st)?;
                    st
                }
                None => *other_src,
            };
            if scale_u {
                gemm(exec, &s.acc, 1.0, &sc, &other, beta, gc)?;
            } else {
                gemm(exec, &s.acc, 1.0, &other, &sc, beta, gc)?;
            }
            beta = 1.0;
        }
        if beta == 0.0 {
            // Every term had rank 0: W is zero.
            axpby(exec, 0.0, &s.acc, 0.0, &s.acc)?;
        }
        Ok(())
    }
}

/// A validated reconstruction into compute-type scratch shaped like `like` (for diagnostics,
/// always exact): the scratch comes first in the workspace, then the reconstruction's own.
#[derive(Clone, Debug)]
pub(crate) struct ScratchReconstruction {
    terms: Vec<Checked>,
    like: MatDesc,
    compute: DType,
    pub(crate) need: usize,
}

impl ScratchReconstruction {
    pub(crate) fn new(exec: &dyn Executor, terms: &[Term], like: &MatDesc, compute: DType) -> Result<Self> {
        let mut ws = Ws::measure(exec.device());
        let target = ws.mat(compute, like.rows, like.cols, like.batch)?;
        // Validate against a stand-in for the scratch: a non-null address aligned for any dtype
        // (measuring addresses are 0, and `like`'s own address need not suit the compute type);
        // it is scratch, so it is not checked for aliasing with the inputs.
        let probe = MatDesc { addr: WS_ALIGN, device: like.device, ..target };
        let terms = check_all(exec, terms, &probe, compute, false)?;
        layout(&mut ws, &terms, &target, compute)?;
        Ok(ScratchReconstruction { terms, like: *like, compute, need: ws.used() })
    }

    /// Reconstruct; returns the scratch descriptor holding the result.
    pub(crate) unsafe fn run(&self, exec: &dyn Executor, ws: &mut Ws) -> Result<MatDesc> {
        // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
        // contract of the primitives it calls.
        unsafe {
            let like = &self.like;
            let target = ws.mat(self.compute, like.rows, like.cols, like.batch)?;
            let s = layout(ws, &self.terms, &target, self.compute)?;
            accumulate(exec, &self.terms, &s, &target, self.compute, MathMode::Exact)?;
            Ok(target)
        }
    }
}
