//! Thin SVD of one matrix, a strided batch, or a list of shapes, in any layout.
//!
//! `W (N x M) = U diag(S) Vt`, `R = min(N, M)`, `U: N x R`, `S: R` descending, `Vt: R x M`.
//! `W` is staged (cast to the compute type, column-major) into the workspace as `W` when
//! `N >= M` and as `W^T` otherwise, so that `gesvd` always sees `m >= n`; for `W^T = U' S V'^T`
//! the roles swap: `U = V'`, `Vt = U'^T`, which are just transposed views of the workspace.
//!
//! **Sign convention** (deterministic, independent of the backend): for every `i`, the entry of
//! largest magnitude in column `i` of `U` (the first one on ties) is positive; row `i` of `Vt` is
//! negated along with it. Singular vectors of repeated or zero singular values are not unique;
//! the convention fixes signs, not the choice of basis within such a subspace.
//!
//! **Non-finite input**: a matrix with NaN or Inf is refused with `Error::NonFinite` (its batch
//! index) before anything is factored or written.
//!
//! Batches are processed in chunks that fit the workspace: the workspace-size query reports the
//! size for the whole batch at once (capped at [`MAX_CHUNK_BYTES`]); any workspace that holds one
//! matrix's scratch works, more is faster. A list of shapes ([`SvdListPlan`]) runs in waves of
//! problems that fit the workspace side by side, each wave one [`Executor::gesvd_grouped`].

pub mod list;
pub mod schedule;

pub use list::{SvdListPlan, SvdProblem};

use super::*;
use crate::exec::{
    GesvdArgs, GesvdrArgs, SignFixArgs, SvdAlgorithm, SvdRunOptions, Vectors, GESVDR_ITERATIONS, GESVDR_OVERSAMPLING,
};

/// Which routine an SVD runs: the algorithm (`Auto` resolved per shape by
/// [`SvdAlgorithm::resolve`]) and, for the randomized SVD only, the top `k` to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvdRoutine {
    pub algorithm: SvdAlgorithm,
    /// `Some(k)`: only the top `k` triplets are wanted (the randomized SVD's use; required for
    /// it). `None`: the full thin SVD.
    pub top_k: Option<usize>,
    /// Read back what the routine measures beyond convergence (residual, sweeps,
    /// `h_err_sigma`) into the executor's last SVD report. Off by default: on CUDA gesvda's
    /// residual blocks the host per call.
    pub diagnostics: bool,
}

impl SvdRoutine {
    pub fn full(algorithm: SvdAlgorithm) -> Self {
        SvdRoutine { algorithm, top_k: None, diagnostics: false }
    }
}

/// Oversampling of the randomized SVD for the top `k` of `n`: `min(GESVDR_OVERSAMPLING, n - k - 1)`
/// (cuSOLVER's `Xgesvdr` wants `k + p < min(m, n)`, strictly).
pub fn gesvdr_oversampling(n: usize, k: usize) -> usize {
    GESVDR_OVERSAMPLING.min(n.saturating_sub(k + 1))
}

/// Upper bound on the workspace an SVD asks for: larger batches are streamed in chunks.
pub const MAX_CHUNK_BYTES: usize = 1 << 30;

/// The compute-type factors of one chunk, as logical views into the workspace.
pub(crate) struct Factors {
    /// First batch index of the chunk and its size.
    pub b0: usize,
    pub nb: usize,
    pub u: MatDesc,
    pub s: MatDesc,
    pub vt: MatDesc,
}

/// Scratch layout for a chunk of `nb` matrices.
pub(crate) struct Layout {
    a: MatDesc,
    s: MatDesc,
    u: MatDesc,
    vt: MatDesc,
    work: Addr,
    work_bytes: usize,
}

/// The scratch does not depend on `k` (U and VT are laid out `m x n` and `n x n` for the
/// randomized SVD too); only the routine's own workspace does.
pub(crate) fn layout(
    exec: &dyn Executor,
    ws: &mut Ws,
    m: usize,
    n: usize,
    nb: usize,
    compute: DType,
    plan: SvdRoutine,
) -> Result<Layout> {
    let a = ws.mat(compute, m, n, nb)?;
    let s = ws.mat(compute, n, 1, nb)?;
    let u = ws.mat(compute, m, n, nb)?;
    let vt = ws.mat(compute, n, n, nb)?;
    let work_bytes = match plan.top_k {
        Some(k) => exec.gesvdr_buffer_size(m, n, k, gesvdr_oversampling(n, k), GESVDR_ITERATIONS, compute, nb)?,
        None => exec.gesvd_buffer_size(m, n, compute, nb, plan.algorithm.resolve(m, n))?,
    };
    let work = ws.take(work_bytes)?;
    Ok(Layout { a, s, u, vt, work, work_bytes })
}

/// The largest chunk of a batch of `batch` that fits `avail` bytes (at least 1, which may then
/// fail with `WorkspaceTooSmall`).
fn chunk(
    exec: &dyn Executor,
    ws: &Ws,
    m: usize,
    n: usize,
    batch: usize,
    compute: DType,
    plan: SvdRoutine,
) -> Result<usize> {
    let need = |nb: usize| -> Result<usize> {
        let mut w = Ws::measure(exec.device());
        layout(exec, &mut w, m, n, nb, compute, plan)?;
        Ok(w.used())
    };
    let avail = if ws.is_measuring() { MAX_CHUNK_BYTES } else { ws.available() };
    // One routine call takes at most a 32-bit batch count (cuSOLVER's batched routines).
    let (mut lo, mut hi) = (1usize, batch.min(i32::MAX as usize));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if need(mid)? <= avail {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// Validate `w` and `compute` for an SVD.
pub(crate) fn check_input(exec: &dyn Executor, w: &MatDesc, compute: DType) -> Result<()> {
    w.validate("W", false)?;
    check_compute(compute)?;
    check_device(exec, &[("W", w)])
}

/// Workspace bytes for the SVD of `w` by `routine` (shape and batch matter, not the address):
/// the whole batch at once, capped at [`MAX_CHUNK_BYTES`].
fn workspace_bytes(exec: &dyn Executor, w: &MatDesc, compute: DType, routine: SvdRoutine) -> Result<usize> {
    let mut ws = Ws::measure(exec.device());
    // SAFETY: a measuring workspace only lays out scratch; no primitive runs.
    unsafe { factor(exec, &mut ws, w, compute, routine, &mut |_| Ok(())) }?;
    Ok(ws.used())
}

/// The workspace an SVD of `w` by `routine` needs: one matrix's share (the batch then streams
/// through it) and the whole batch's (capped at [`MAX_CHUNK_BYTES`]).
pub(crate) fn workspace_need(
    exec: &dyn Executor,
    w: &MatDesc,
    compute: DType,
    routine: SvdRoutine,
) -> Result<WorkspaceNeed> {
    let min = workspace_bytes(exec, &MatDesc { batch: 1, ..*w }, compute, routine)?;
    let preferred = workspace_bytes(exec, w, compute, routine)?;
    Ok(WorkspaceNeed { min, preferred: preferred.max(min) })
}

/// The workspace query of an SVD of `w` by `algorithm`: every check of the input, then
/// the workspace it needs (one matrix's share, and the whole batch's).
pub fn workspace_query(
    exec: &dyn Executor,
    w: &MatDesc,
    compute: DType,
    algorithm: SvdAlgorithm,
) -> Result<WorkspaceNeed> {
    check_input(exec, w, compute)?;
    let routine = SvdRoutine::full(algorithm);
    check_routine(w, compute, routine)?;
    workspace_need(exec, w, compute, routine)
}

/// Check that `plan` can serve an SVD of `w`: the randomized SVD only with a top `k`, and its
/// `k` within `cusolverDnXgesvdr`'s range. The routines' other preconditions are the
/// executor's (reported by the workspace query, before anything runs).
pub fn check_routine(w: &MatDesc, compute: DType, plan: SvdRoutine) -> Result<()> {
    let (m, n) = (w.rows.max(w.cols), w.rows.min(w.cols));
    match (plan.algorithm, plan.top_k) {
        (SvdAlgorithm::Randomized, None) => Err(Error::InvalidArgument(
            "the randomized SVD (OSFT_SVD_RANDOMIZED, cusolverDnXgesvdr) computes only the top k singular triplets: use it for a decomposition that requests only U_high, S_high and V_high (the low parts NULL), or choose another algorithm".into(),
        )),
        (SvdAlgorithm::Randomized, Some(k)) => crate::exec::check_gesvdr_problem(m, n, k, gesvdr_oversampling(n, k), compute),
        (_, Some(_)) => Err(Error::Internal("a top-k SVD is only planned for the randomized algorithm".into())),
        _ => Ok(()),
    }
}

/// Run the factorisation chunk by chunk, handing each chunk's compute-type factors to `emit`
/// (with `plan.top_k = Some(k)`, only the top `k` triplets: `U` has `k` columns, `Vt` `k` rows).
/// With a measuring `ws`, only lays out scratch and calls nothing. `w` and `plan` must have
/// passed [`check_input`] and [`check_routine`]; non-finite input is refused here, before
/// anything is factored or written.
pub(crate) unsafe fn factor(
    exec: &dyn Executor,
    ws: &mut Ws,
    w: &MatDesc,
    compute: DType,
    plan: SvdRoutine,
    emit: &mut dyn FnMut(&Factors) -> Result<()>,
) -> Result<()> {
    // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
    // contract of the primitives it calls.
    unsafe {
        let (big, small) = (w.rows.max(w.cols), w.rows.min(w.cols));
        let transposed = w.rows < w.cols;
        let (m, n) = (big, small);
        let nb_max = chunk(exec, ws, m, n, w.batch, compute, plan)?;
        let l = layout(exec, ws, m, n, nb_max, compute, plan)?;
        let algorithm = plan.algorithm.resolve(m, n);
        // Triplets computed: all n, or the top k.
        let r = plan.top_k.unwrap_or(n);
        if ws.is_measuring() {
            return Ok(());
        }
        // Non-finite input is refused before anything is factored or written (documented policy).
        check_finite(exec, w, "W")?;
        let mut b0 = 0;
        while b0 < w.batch {
            let nb = nb_max.min(w.batch - b0);
            let wc = w.batch_range(b0, nb);
            match plan.top_k {
                Some(k) => {
                    let a = stage(exec, &l, &wc, compute)?;
                    let args = GesvdrArgs {
                        m,
                        n,
                        k,
                        p: gesvdr_oversampling(n, k),
                        niters: GESVDR_ITERATIONS,
                        a: a.a,
                        s: a.s,
                        stride_s: n,
                        u: a.u,
                        vt: a.vt,
                        batch: nb,
                    };
                    exec.gesvdr_strided_batched(&args, l.work, l.work_bytes)
                }
                None => {
                    let a = GesvdArgs { algorithm, ..stage(exec, &l, &wc, compute)? };
                    let call = crate::exec::GesvdCall { args: a, work: l.work, work_bytes: l.work_bytes };
                    let options = SvdRunOptions { grouped: false, diagnostics: plan.diagnostics };
                    exec.gesvd_scheduled(&[call], options)
                }
            }
            .map_err(|e| match e {
                Error::NotConverged { problem, index } => Error::NotConverged { problem, index: b0 + index },
                e => e,
            })?;
            emit(&finish(exec, &l, b0, nb, r, transposed, compute)?)?;
            b0 += nb;
        }
        Ok(())
    }
}

/// Copy the chunk `wc` (as `W`, or `W^T` when it is wide) into the scratch `A` of `l`, and
/// return the thin-SVD arguments over `l` (algorithm `Auto`: the caller sets it).
pub(crate) unsafe fn stage(exec: &dyn Executor, l: &Layout, wc: &MatDesc, compute: DType) -> Result<GesvdArgs> {
    // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
    // contract of the primitives it calls.
    unsafe {
        let transposed = wc.rows < wc.cols;
        let (m, n) = (wc.rows.max(wc.cols), wc.rows.min(wc.cols));
        let nb = wc.batch;
        let a = MatDesc { batch: nb, ..l.a };
        copy(exec, &if transposed { wc.t() } else { *wc }, &a)?;
        Ok(GesvdArgs {
            m,
            n,
            a: Strided { addr: a.addr, dtype: compute, ld: m, stride: m * n },
            s: l.s.addr,
            stride_s: n,
            u: Strided { addr: l.u.addr, dtype: compute, ld: m, stride: m * n },
            vt: Strided { addr: l.vt.addr, dtype: compute, ld: n, stride: n * n },
            batch: nb,
            algorithm: SvdAlgorithm::Auto,
        })
    }
}

/// After the routine: fix the signs of the `r` computed triplets of a chunk of `nb` matrices
/// in `l` and return their views (`U`, `Vt` of `W`, undoing the transposition).
pub(crate) unsafe fn finish(
    exec: &dyn Executor,
    l: &Layout,
    b0: usize,
    nb: usize,
    r: usize,
    transposed: bool,
    compute: DType,
) -> Result<Factors> {
    // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
    // contract of the primitives it calls.
    unsafe {
        // The computed triplets: U's first r columns (ld m), VT's first r rows (ld n).
        let u_r = MatDesc { batch: nb, cols: r, ..l.u };
        let vt_r = MatDesc { batch: nb, rows: r, ..l.vt };
        let (u, vt) = if transposed {
            // W^T = U' S V'^T  =>  U = V' = (VT')^T, Vt = U'^T
            (vt_r.t(), u_r.t())
        } else {
            (u_r, vt_r)
        };
        exec.svd_sign_fix(&SignFixArgs {
            count: r,
            batch: nb,
            left: Vectors {
                addr: u.addr,
                dtype: compute,
                len: u.rows,
                elem_stride: u.row_stride,
                vec_stride: u.col_stride,
                batch_stride: u.batch_stride,
            },
            right: Vectors {
                addr: vt.addr,
                dtype: compute,
                len: vt.cols,
                elem_stride: vt.col_stride,
                vec_stride: vt.row_stride,
                batch_stride: vt.batch_stride,
            },
        })?;
        Ok(Factors { b0, nb, u, s: MatDesc { batch: nb, rows: r, ..l.s }, vt })
    }
}

/// `Error::NonFinite` with the first batch index of `w` holding NaN or Inf.
pub(crate) unsafe fn check_finite(exec: &dyn Executor, w: &MatDesc, arg: &str) -> Result<()> {
    // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
    // contract of the primitives it calls.
    unsafe {
        let bad = exec.count_nonfinite(w.rows, w.cols, w.batch, &strided2d(w))?;
        match bad.iter().position(|c| *c > 0) {
            Some(index) => Err(Error::NonFinite { arg: arg.to_string(), index }),
            None => Ok(()),
        }
    }
}

/// Outputs of [`svd`]: `U` and `Vt` may be omitted (singular values only).
#[derive(Clone, Copy, Debug)]
pub struct SvdOut<'a> {
    pub u: Option<&'a MatDesc>,
    pub s: &'a MatDesc,
    pub vt: Option<&'a MatDesc>,
}

/// Validate the outputs of an SVD of `w`; returns `S` as a column.
pub(crate) fn check_outputs(exec: &dyn Executor, w: &MatDesc, out: &SvdOut) -> Result<MatDesc> {
    let r = w.rows.min(w.cols);
    out.s.validate("S", false)?;
    let s = as_column(out.s, r, "S")?;
    let mut outs = vec![("S", out.s)];
    if let Some(u) = out.u {
        u.validate("U", false)?;
        check_shape("U", u, w.rows, r)?;
        outs.push(("U", u));
    }
    if let Some(vt) = out.vt {
        vt.validate("Vt", false)?;
        check_shape("Vt", vt, r, w.cols)?;
        outs.push(("Vt", vt));
    }
    for (name, d) in &outs {
        check_out_batch(name, d, w.batch)?;
    }
    check_device(exec, &outs)?;
    // U may be exactly W: W is staged into the workspace before anything is written.
    check_disjoint_staged(&outs, &[("W", w)])?;
    Ok(s)
}

use crate::desc::{check_disjoint, check_disjoint_staged};

/// The outputs of one SVD, validated: `S` normalised to a column.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outputs {
    u: Option<MatDesc>,
    s: MatDesc,
    vt: Option<MatDesc>,
}

impl Outputs {
    fn checked(exec: &dyn Executor, w: &MatDesc, out: &SvdOut) -> Result<Self> {
        let s = check_outputs(exec, w, out)?;
        Ok(Outputs { u: out.u.copied(), s, vt: out.vt.copied() })
    }
}

/// A validated thin SVD of `w` (one matrix or a strided batch) into the caller's `U`, `S`, `Vt`,
/// each in any layout and dtype, computed in `compute` (f32 or f64).
#[derive(Clone, Copy, Debug)]
pub struct SvdPlan {
    w: MatDesc,
    out: Outputs,
    compute: DType,
    routine: SvdRoutine,
    need: WorkspaceNeed,
}

impl SvdPlan {
    pub fn new(
        exec: &dyn Executor,
        w: &MatDesc,
        out: &SvdOut,
        compute: DType,
        algorithm: SvdAlgorithm,
    ) -> Result<Self> {
        check_input(exec, w, compute)?;
        let out = Outputs::checked(exec, w, out)?;
        let routine = SvdRoutine::full(algorithm);
        check_routine(w, compute, routine)?;
        let need = workspace_need(exec, w, compute, routine)?;
        Ok(SvdPlan { w: *w, out, compute, routine, need })
    }

    /// Read back the routine's diagnostics (see [`SvdRoutine::diagnostics`]).
    pub fn with_diagnostics(mut self, on: bool) -> Self {
        self.routine.diagnostics = on;
        self
    }
}

impl Plan for SvdPlan {
    type Output = ();

    fn synchronizes(&self) -> bool {
        true // the input's finiteness and the routines' convergence flags are read back to the host.
    }

    fn workspace(&self) -> WorkspaceNeed {
        self.need
    }

    unsafe fn run(&self, exec: &dyn Executor, ws: &mut Ws) -> Result<()> {
        // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
        // contract of the primitives it calls.
        unsafe { factor(exec, ws, &self.w, self.compute, self.routine, &mut |f| write_out(exec, f, &self.out)) }
    }
}

/// Copy a chunk's factors to the caller's outputs.
pub(crate) unsafe fn write_out(exec: &dyn Executor, f: &Factors, out: &Outputs) -> Result<()> {
    // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
    // contract of the primitives it calls.
    unsafe {
        if let Some(u) = &out.u {
            copy(exec, &f.u, &u.batch_range(f.b0, f.nb))?;
        }
        copy(exec, &f.s, &out.s.batch_range(f.b0, f.nb))?;
        if let Some(vt) = &out.vt {
            copy(exec, &f.vt, &vt.batch_range(f.b0, f.nb))?;
        }
        Ok(())
    }
}
