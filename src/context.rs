//! [`Context`]: an executor plus its workspace, and the safe, typed Rust API.
//!
//! Every op has two faces here: a `*_raw` method over [`MatDesc`]s (what the C ABI calls; `unsafe`
//! because descriptors carry raw addresses) and a safe method over [`MatRef`]/[`MatMut`] views.
//!
//! **Workspace.** Ops that need scratch get it from the context: either a workspace the caller
//! set with [`Context::set_workspace`] (as with `cublasSetWorkspace`; an op whose need exceeds it
//! fails with `WorkspaceTooSmall` before writing anything), or one the context allocates, grows
//! and caches ([`Context::release_workspace`] frees it). Each op has a `*_workspace_size` query.
//!
//! **Threads.** A context may be shared between threads; its ops are serialised by the workspace
//! lock. For parallel work, use one context per thread.
//!
//! **Settings.** The SVD algorithm ([`Context::set_svd_algorithm`], default `Auto`) and the math
//! mode of the data GEMMs ([`Context::set_math_mode`], default `Exact`) apply to the ops issued
//! after they are set.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use crate::desc::MatDesc;
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::exec::cpu::CpuExecutor;
use crate::exec::{Buffer, Executor, MathMode, SvdAlgorithm, SvdReport};
use crate::ops::decompose::{self, Parts};
use crate::ops::project::{self, Bases, Side, Strategy};
use crate::ops::rank;
use crate::ops::reconstruct::{self, Term};
use crate::ops::svd::{self, SvdOut, SvdPlan};
use crate::ops::{diagnostics, Ws};
use crate::view::{MatMut, MatRef};

enum Workspace {
    /// Allocated and grown by the context.
    Cached(Option<Buffer>),
    /// Set by the caller: never grown, never freed.
    User { addr: usize, bytes: usize },
}

/// An executor with its workspace.
pub struct Context {
    exec: Arc<dyn Executor>,
    ws: Mutex<Workspace>,
    svd_algorithm: AtomicI32,
    math_mode: AtomicI32,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Context({})", self.exec.name())
    }
}

impl Context {
    /// A context on the CPU executor.
    pub fn cpu() -> Self {
        Self::with_executor(Arc::new(CpuExecutor))
    }

    /// A context on CUDA device `ordinal`, running on the legacy default stream until
    /// [`Context::set_stream`]. Without a driver, device or the CUDA libraries — or in a build
    /// without the `cuda` feature — this is `Error::BackendUnavailable` with the reason.
    pub fn cuda(ordinal: u32) -> Result<Self> {
        #[cfg(feature = "cuda")]
        {
            Ok(Self::with_executor(Arc::new(crate::exec::cuda::CudaExecutor::new(ordinal)?)))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = ordinal;
            Err(Error::BackendUnavailable("osft was built without the `cuda` feature".into()))
        }
    }

    /// CUDA device 0 where it is usable, else the CPU.
    pub fn auto() -> Self {
        Self::cuda(0).unwrap_or_else(|_| Self::cpu())
    }

    /// Run subsequent work on `stream` (a `cudaStream_t` as an integer, e.g. PyTorch's
    /// `torch.cuda.current_stream().cuda_stream`). CPU contexts refuse.
    pub fn set_stream(&self, stream: usize) -> Result<()> {
        let _guard = self.lock(); // no op runs while the stream changes
        self.exec.set_stream(stream)
    }

    /// The stream the context runs on (0: the legacy default stream, or no streams at all).
    pub fn stream(&self) -> usize {
        self.exec.stream()
    }

    pub fn with_executor(exec: Arc<dyn Executor>) -> Self {
        Context {
            exec,
            ws: Mutex::new(Workspace::Cached(None)),
            svd_algorithm: AtomicI32::new(0),
            math_mode: AtomicI32::new(0),
        }
    }

    /// The SVD algorithm of subsequent `svd`, `svd_list` and `decompose` calls (see
    /// [`SvdAlgorithm`]). `Auto` (the default) picks `JacobiBatched` up to 32 x 32 and `Qr`
    /// above, never an approximate method. An explicit choice that cannot serve a call's shape
    /// or outputs fails that call with `Precondition` / `InvalidArgument`; it never falls back.
    pub fn set_svd_algorithm(&self, algorithm: SvdAlgorithm) {
        self.svd_algorithm.store(algorithm as i32, Ordering::Relaxed);
    }

    pub fn svd_algorithm(&self) -> SvdAlgorithm {
        SvdAlgorithm::from_raw(self.svd_algorithm.load(Ordering::Relaxed)).unwrap_or_default()
    }

    /// The math mode of subsequent projection and reconstruction GEMMs on f32 data (see
    /// [`MathMode`] for the accuracy of each). Diagnostics, rank selection and the SVD stay exact;
    /// the CPU executor computes exactly in every mode.
    pub fn set_math_mode(&self, mode: MathMode) {
        self.math_mode.store(mode as i32, Ordering::Relaxed);
    }

    pub fn math_mode(&self) -> MathMode {
        MathMode::from_raw(self.math_mode.load(Ordering::Relaxed)).unwrap_or_default()
    }

    /// Convergence information of the last SVD (CUDA: residual, sweeps, `h_err_sigma` where
    /// the routine reports them; `None` on the CPU, whose SVD is exact).
    pub fn last_svd_report(&self) -> Option<SvdReport> {
        self.exec.last_svd_report()
    }

    pub fn executor(&self) -> &dyn Executor {
        &*self.exec
    }

    /// Use `bytes` of caller memory at `addr` (on the context's device) as the workspace.
    ///
    /// # Safety
    /// The memory must stay valid, and unused by anyone else, while the context uses it.
    pub unsafe fn set_workspace(&self, addr: usize, bytes: usize) -> Result<()> {
        if addr == 0 && bytes > 0 {
            return Err(Error::NullPointer { arg: "workspace".into() });
        }
        *self.lock() = Workspace::User { addr, bytes };
        Ok(())
    }

    /// Free the cached workspace (or forget the caller's); the next op allocates afresh.
    pub fn release_workspace(&self) {
        *self.lock() = Workspace::Cached(None);
    }

    /// Bytes of workspace currently held (allocated or set).
    pub fn workspace_bytes(&self) -> usize {
        match &*self.lock() {
            Workspace::Cached(b) => b.as_ref().map_or(0, |b| b.bytes),
            Workspace::User { bytes, .. } => *bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Workspace> {
        // A panic while holding the lock leaves nothing half-built: recover the guard.
        self.ws.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` with a workspace of at least `need` bytes (checked before `f` runs).
    fn with_ws<R>(&self, need: usize, f: impl FnOnce(&dyn Executor, &mut Ws) -> Result<R>) -> Result<R> {
        self.with_ws_range(need, need, f)
    }

    /// As `with_ws`, for ops that can stream through less than their preferred workspace: a
    /// caller's workspace must hold `min` bytes; the context's own grows to `preferred`.
    fn with_ws_range<R>(
        &self,
        min: usize,
        preferred: usize,
        f: impl FnOnce(&dyn Executor, &mut Ws) -> Result<R>,
    ) -> Result<R> {
        let mut guard = self.lock();
        let dev = self.exec.device();
        let (addr, bytes) = match &mut *guard {
            Workspace::User { addr, bytes } => {
                if *bytes < min {
                    return Err(Error::WorkspaceTooSmall { needed: min, given: *bytes });
                }
                (*addr, *bytes)
            }
            Workspace::Cached(buf) => {
                if buf.as_ref().is_none_or(|b| b.bytes < preferred) {
                    *buf = None; // free the old one before allocating the larger
                    *buf = Some(self.exec.alloc(preferred)?);
                }
                let b = buf.as_ref().unwrap();
                (b.addr, b.bytes)
            }
        };
        let mut ws = Ws::over(addr, bytes, dev);
        f(&*self.exec, &mut ws)
    }

    // -----------------------------------------------------------------------------------------
    // Raw (descriptor) API.

    pub fn svd_workspace_size(&self, w: &MatDesc, compute: DType) -> Result<usize> {
        svd::check_input(&*self.exec, w, compute)?;
        svd::workspace_size(&*self.exec, w, compute, SvdPlan::full(self.svd_algorithm()))
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn svd_raw(&self, w: &MatDesc, out: &SvdOut, compute: DType) -> Result<()> {
        svd::check_input(&*self.exec, w, compute)?;
        svd::check_outputs(&*self.exec, w, out)?;
        let alg = self.svd_algorithm();
        let (min, preferred) = svd_ws_range(&*self.exec, w, compute, SvdPlan::full(alg))?;
        self.with_ws_range(min, preferred, |e, ws| svd::svd(e, ws, w, out, compute, alg))
    }

    /// Workspace bytes for [`Context::svd_list_raw`] over `ws`: the largest single problem's
    /// (its whole batch, capped at `MAX_CHUNK_BYTES`), enough for the list to run. The list runs
    /// in waves of problems that fit the workspace side by side, each wave one concurrent
    /// grouped SVD; a caller workspace of this size may need several waves. A context
    /// allocating its own workspace grows it to fit the whole list in one wave (every problem's
    /// share side by side, capped at `MAX_CHUNK_BYTES`; [`svd::list_workspace_preferred`]).
    pub fn svd_list_workspace_size(&self, ws: &[&MatDesc], compute: DType) -> Result<usize> {
        for w in ws {
            svd::check_input(&*self.exec, w, compute)?;
        }
        svd::list_workspace_size(&*self.exec, ws, compute, self.svd_algorithm())
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn svd_list_raw(&self, problems: &[svd::SvdProblem], compute: DType) -> Result<()> {
        let mut min = 0;
        let alg = self.svd_algorithm();
        for p in problems {
            svd::check_input(&*self.exec, p.w, compute)?;
            let (a, _) = svd_ws_range(&*self.exec, p.w, compute, SvdPlan::full(alg))?;
            min = min.max(a);
        }
        // The context's own workspace grows to run the list as one wave (capped); a caller's
        // need only hold the largest problem's one-matrix share.
        let ws: Vec<&MatDesc> = problems.iter().map(|p| p.w).collect();
        let preferred = svd::list_workspace_preferred(&*self.exec, &ws, compute, alg)?.max(min);
        self.with_ws_range(min, preferred, |e, ws| svd::svd_list(e, ws, problems, compute, alg))
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn decompose_raw(&self, w: &MatDesc, k: usize, parts: &Parts, compute: DType) -> Result<()> {
        svd::check_input(&*self.exec, w, compute)?;
        decompose::check_k(w, k)?;
        decompose::check_parts(&*self.exec, w, k, parts)?;
        let alg = self.svd_algorithm();
        let plan = decompose::plan(alg, k, parts)?;
        let (min, preferred) = svd_ws_range(&*self.exec, w, compute, plan)?;
        self.with_ws_range(min, preferred, |e, ws| decompose::decompose(e, ws, w, k, parts, compute, alg))
    }

    /// Workspace a decomposition of `w` prefers (the whole batch at once); any caller workspace
    /// holding one matrix's share also works, streamed. With the randomized algorithm the size
    /// depends on `k`; this query (which has no `k`) reports it for the largest subspace — use
    /// [`Context::decompose_workspace_size_k`] for the exact figure.
    pub fn decompose_workspace_size(&self, w: &MatDesc, compute: DType) -> Result<usize> {
        svd::check_input(&*self.exec, w, compute)?;
        decompose::workspace_size(&*self.exec, w, compute, self.svd_algorithm(), None)
    }

    /// As [`Context::decompose_workspace_size`], for a split at `k`.
    pub fn decompose_workspace_size_k(&self, w: &MatDesc, k: usize, compute: DType) -> Result<usize> {
        svd::check_input(&*self.exec, w, compute)?;
        decompose::check_k(w, k)?;
        decompose::workspace_size(&*self.exec, w, compute, self.svd_algorithm(), Some(k))
    }

    pub fn leakage_workspace_size(&self, side: Side, basis: &MatDesc, x: &MatDesc) -> Result<usize> {
        diagnostics::leakage_workspace_size(&*self.exec, side, basis, x)
    }

    pub fn orthonormality_error_workspace_size(&self, basis: &MatDesc, columns: bool) -> Result<usize> {
        diagnostics::orthonormality_workspace_size(&*self.exec, basis, columns)
    }

    pub fn reconstruct_workspace_size(&self, terms: &[Term], out: &MatDesc, compute: DType) -> Result<usize> {
        reconstruct::workspace_size(&*self.exec, terms, out, compute)
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn reconstruct_raw(&self, terms: &[Term], out: &MatDesc, compute: DType) -> Result<()> {
        let need = reconstruct::workspace_size(&*self.exec, terms, out, compute)?;
        let math = self.math_mode();
        self.with_ws(need, |e, ws| reconstruct::reconstruct(e, ws, terms, out, compute, math))
    }

    pub fn project_workspace_size(
        &self,
        side: Side,
        bases: &Bases,
        x: &MatDesc,
        out: Option<&MatDesc>,
    ) -> Result<usize> {
        project::workspace_size(&*self.exec, side, bases, x, out)
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn project_raw(&self, side: Side, bases: &Bases, x: &MatDesc, out: Option<&MatDesc>) -> Result<()> {
        let need = project::workspace_size(&*self.exec, side, bases, x, out)?;
        let math = self.math_mode();
        self.with_ws(need, |e, ws| project::project(e, ws, side, bases, x, out, math))
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn project_partial_raw(&self, side: Side, basis: &MatDesc, x: &MatDesc, coef: &MatDesc) -> Result<()> {
        project::partial(&*self.exec, side, basis, x, coef, self.math_mode())
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn project_apply_raw(&self, side: Side, basis: &MatDesc, coef: &MatDesc, x: &MatDesc) -> Result<()> {
        // Validate first: the workspace is sized from `coef`, which must be known good.
        let need = if project::check_shard_apply(&*self.exec, side, basis, coef, x)? {
            project::apply_workspace_size(coef, x)?
        } else {
            0
        };
        let math = self.math_mode();
        self.with_ws(need, |e, ws| project::apply(e, ws, side, basis, coef, x, math))
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn leakage_raw(&self, side: Side, basis: &MatDesc, x: &MatDesc) -> Result<Vec<f64>> {
        let need = diagnostics::leakage_workspace_size(&*self.exec, side, basis, x)?;
        self.with_ws(need, |e, ws| diagnostics::leakage(e, ws, side, basis, x))
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn orthonormality_error_raw(&self, basis: &MatDesc, columns: bool) -> Result<Vec<f64>> {
        let need = diagnostics::orthonormality_workspace_size(&*self.exec, basis, columns)?;
        self.with_ws(need, |e, ws| diagnostics::orthonormality_error(e, ws, basis, columns))
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn reconstruction_error_raw(&self, w: &MatDesc, terms: &[Term], compute: DType) -> Result<Vec<f64>> {
        let need = diagnostics::reconstruction_workspace_size(&*self.exec, w, terms, compute)?;
        self.with_ws(need, |e, ws| diagnostics::reconstruction_error(e, ws, w, terms, compute))
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn layer_importance_raw(&self, w: &MatDesc, activations: &MatDesc, compute: DType) -> Result<Vec<f64>> {
        let need = rank::importance_workspace_size(&*self.exec, w, activations, compute)?;
        self.with_ws(need, |e, ws| rank::layer_importance(e, ws, w, activations, compute))
    }

    /// Read singular values (any dtype, any device) to the host as f64; flat, batch entry after
    /// batch entry (`rows * cols` values each).
    ///
    /// # Safety
    /// The descriptor must describe valid memory of the context's device.
    pub unsafe fn read_vector_raw(&self, v: &MatDesc) -> Result<Vec<f64>> {
        rank::check_read_vector(&*self.exec, v)?; // before the workspace is sized from `v`
        let need = rank::read_vector_workspace_size(v)?;
        self.with_ws(need, |e, ws| rank::read_vector(e, ws, v))
    }

    // -----------------------------------------------------------------------------------------
    // Typed API over views.

    /// Thin SVD of `w` (any layout, any dtype, one matrix or a batch) into `u`, `s`, `vt`,
    /// computed in `compute` (f32 or f64). See [`crate::ops::svd`] for the sign convention.
    pub fn svd<T: Element, O: Element>(
        &self,
        w: &MatRef<'_, T>,
        u: Option<&mut MatMut<'_, O>>,
        s: &mut MatMut<'_, O>,
        vt: Option<&mut MatMut<'_, O>>,
        compute: DType,
    ) -> Result<()> {
        let out = SvdOut { u: u.map(|m| m.desc()), s: s.desc(), vt: vt.map(|m| m.desc()) };
        // SAFETY: views are borrow-checked host slices, bounds checked at construction.
        unsafe { self.svd_raw(w.desc(), &out, compute) }
    }

    /// Decompose `w` and split at `k` into the parts given in `out` (any may be `None`).
    pub fn decompose<T: Element, O: Element>(
        &self,
        w: &MatRef<'_, T>,
        k: usize,
        out: &mut DecomposeOut<'_, O>,
        compute: DType,
    ) -> Result<()> {
        let d = |m: &Option<MatMut<'_, O>>| m.as_ref().map(|m| *m.desc());
        let (uh, sh, vh, ul, sl, vl) =
            (d(&out.u_high), d(&out.s_high), d(&out.v_high), d(&out.u_low), d(&out.s_low), d(&out.v_low));
        let parts = Parts {
            u_high: uh.as_ref(),
            s_high: sh.as_ref(),
            v_high: vh.as_ref(),
            u_low: ul.as_ref(),
            s_low: sl.as_ref(),
            v_low: vl.as_ref(),
        };
        // SAFETY: as for `svd`.
        unsafe { self.decompose_raw(w.desc(), k, &parts, compute) }
    }

    /// `out = U_high diag(S_high) V_high + U_low diag(S_low) V_low`; either part may be `None`.
    pub fn reconstruct<T: Element, O: Element>(
        &self,
        high: Option<FactorsRef<'_, T>>,
        low: Option<FactorsRef<'_, T>>,
        out: &mut MatMut<'_, O>,
        compute: DType,
    ) -> Result<()> {
        let terms: Vec<Term> = [high.as_ref(), low.as_ref()].into_iter().flatten().map(|f| f.term()).collect();
        // SAFETY: as for `svd`.
        unsafe { self.reconstruct_raw(&terms, out.desc(), compute) }
    }

    /// Project `x` in place away from `U_high` (left), `V_high` (right) or both.
    pub fn project<T: Element>(
        &self,
        side: Side,
        u_high: Option<&MatRef<'_, T>>,
        v_high: Option<&MatRef<'_, T>>,
        x: &mut MatMut<'_, T>,
    ) -> Result<()> {
        let bases = Bases { u: u_high.map(|m| m.desc()), v: v_high.map(|m| m.desc()) };
        // SAFETY: as for `svd`.
        unsafe { self.project_raw(side, &bases, x.desc(), None) }
    }

    /// Project `x` into `out`, leaving `x` as it is.
    pub fn project_into<T: Element>(
        &self,
        side: Side,
        u_high: Option<&MatRef<'_, T>>,
        v_high: Option<&MatRef<'_, T>>,
        x: &MatRef<'_, T>,
        out: &mut MatMut<'_, T>,
    ) -> Result<()> {
        let bases = Bases { u: u_high.map(|m| m.desc()), v: v_high.map(|m| m.desc()) };
        // SAFETY: as for `svd`.
        unsafe { self.project_raw(side, &bases, x.desc(), Some(out.desc())) }
    }

    /// Sharded projection, phase 1: this shard's partial coefficients into `coef`.
    pub fn project_partial<T: Element, C: Element>(
        &self,
        side: Side,
        basis: &MatRef<'_, T>,
        x: &MatRef<'_, T>,
        coef: &mut MatMut<'_, C>,
    ) -> Result<()> {
        // SAFETY: as for `svd`.
        unsafe { self.project_partial_raw(side, basis.desc(), x.desc(), coef.desc()) }
    }

    /// Sharded projection, phase 2: subtract with the all-reduced coefficients, in place.
    pub fn project_apply<T: Element, C: Element>(
        &self,
        side: Side,
        basis: &MatRef<'_, T>,
        coef: &MatRef<'_, C>,
        x: &mut MatMut<'_, T>,
    ) -> Result<()> {
        // SAFETY: as for `svd`.
        unsafe { self.project_apply_raw(side, basis.desc(), coef.desc(), x.desc()) }
    }

    /// Leakage `||B^T X|| / ||X||` (left) or `||X V^T|| / ||X||` (right), per batch entry.
    pub fn leakage<T: Element>(&self, side: Side, basis: &MatRef<'_, T>, x: &MatRef<'_, T>) -> Result<Vec<f64>> {
        // SAFETY: as for `svd`.
        unsafe { self.leakage_raw(side, basis.desc(), x.desc()) }
    }

    /// `||B^T B - I||_F` (`columns = true`, for `U`) or `||B B^T - I||_F` (for `V`), per batch entry.
    pub fn orthonormality_error<T: Element>(&self, basis: &MatRef<'_, T>, columns: bool) -> Result<Vec<f64>> {
        // SAFETY: as for `svd`.
        unsafe { self.orthonormality_error_raw(basis.desc(), columns) }
    }

    /// `||W - reconstruction|| / ||W||` per batch entry.
    pub fn reconstruction_error<T: Element, P: Element>(
        &self,
        w: &MatRef<'_, T>,
        high: Option<FactorsRef<'_, P>>,
        low: Option<FactorsRef<'_, P>>,
        compute: DType,
    ) -> Result<Vec<f64>> {
        let terms: Vec<Term> = [high.as_ref(), low.as_ref()].into_iter().flatten().map(|f| f.term()).collect();
        // SAFETY: as for `svd`.
        unsafe { self.reconstruction_error_raw(w.desc(), &terms, compute) }
    }

    /// Layer importance `mean cos(x[:R], (W x)[:R])` over the rows of `activations`.
    pub fn layer_importance<T: Element, A: Element>(
        &self,
        w: &MatRef<'_, T>,
        activations: &MatRef<'_, A>,
        compute: DType,
    ) -> Result<Vec<f64>> {
        // SAFETY: as for `svd`.
        unsafe { self.layer_importance_raw(w.desc(), activations.desc(), compute) }
    }

    /// A projector for repeated projection against the same frozen bases, with the evaluation
    /// order chosen by `strategy` (see [`project::choose`]).
    pub fn projector<'b, T: Element>(
        &self,
        side: Side,
        u_high: Option<&MatRef<'b, T>>,
        v_high: Option<&MatRef<'b, T>>,
        strategy: Strategy,
    ) -> Result<Projector<'b>> {
        // SAFETY: as for `svd`; the projector borrows the bases for 'b.
        unsafe {
            Projector::new(
                self,
                side,
                u_high.map(|m| *m.desc()),
                v_high.map(|m| *m.desc()),
                strategy,
                project::DEFAULT_MAX_PROJECTOR_BYTES,
            )
        }
    }
}

/// Workspace an SVD of `w` can stream through (one matrix at a time) and the one it prefers.
fn svd_ws_range(exec: &dyn Executor, w: &MatDesc, compute: DType, plan: SvdPlan) -> Result<(usize, usize)> {
    let one = svd::workspace_size(exec, &MatDesc { batch: 1, ..*w }, compute, plan)?;
    Ok((one, svd::workspace_size(exec, w, compute, plan)?))
}

/// Outputs of [`Context::decompose`].
#[derive(Debug, Default)]
pub struct DecomposeOut<'a, O: Element> {
    pub u_high: Option<MatMut<'a, O>>,
    pub s_high: Option<MatMut<'a, O>>,
    pub v_high: Option<MatMut<'a, O>>,
    pub u_low: Option<MatMut<'a, O>>,
    pub s_low: Option<MatMut<'a, O>>,
    pub v_low: Option<MatMut<'a, O>>,
}

/// One factor triple `U diag(S) V` for reconstruction.
#[derive(Clone, Copy, Debug)]
pub struct FactorsRef<'a, T: Element> {
    pub u: MatRef<'a, T>,
    pub s: MatRef<'a, T>,
    pub v: MatRef<'a, T>,
}

impl<T: Element> FactorsRef<'_, T> {
    fn term(&self) -> Term<'_> {
        Term { u: self.u.desc(), s: self.s.desc(), v: self.v.desc() }
    }
}

/// One side's evaluation: coefficient form over the caller's basis, or a cached `P = I - B B^T`.
struct SidePlan {
    left: bool,
    basis: MatDesc,
    cached: Option<(Buffer, MatDesc)>,
}

/// Repeated projection against fixed bases; see [`project::choose`] for when the cached form is
/// used. Borrows the caller's bases for `'b` (the coefficient form reads them on every call).
pub struct Projector<'b> {
    side: Side,
    plans: Vec<SidePlan>,
    _bases: std::marker::PhantomData<&'b ()>,
}

impl<'b> Projector<'b> {
    /// # Safety
    /// The basis descriptors must describe valid memory of the context's device for `'b`.
    pub unsafe fn new(
        ctx: &Context,
        side: Side,
        u: Option<MatDesc>,
        v: Option<MatDesc>,
        strategy: Strategy,
        max_bytes: usize,
    ) -> Result<Self> {
        let mut plans = vec![];
        for (left, b) in [(true, u), (false, v)] {
            if (left && !side.left()) || (!left && !side.right()) {
                continue;
            }
            let name = if left { "U_high" } else { "V_high" };
            let b = b.ok_or_else(|| Error::NullPointer { arg: name.into() })?;
            b.validate(name, true)?;
            crate::ops::check_device(ctx.executor(), &[(name, &b)])?;
            let (n, k) = if left { (b.rows, b.cols) } else { (b.cols, b.rows) };
            if k > n {
                return Err(Error::RankOutOfRange(format!("{name}: {k} basis vectors in dimension {n}")));
            }
            // AUTO takes the cached form only where it can: one basis, in a BLAS layout.
            let cacheable = b.batch == 1 && crate::ops::is_blas(&b);
            let chosen = match project::choose(strategy, b.dtype, n, k, max_bytes) {
                Strategy::CachedProjector if strategy == Strategy::Auto && !cacheable => Strategy::Coefficient,
                s => s,
            };
            let cached = if chosen == Strategy::CachedProjector {
                if !b.dtype.is_compute() {
                    return Err(Error::DtypeUnsupported(format!(
                        "a cached projector needs f32 or f64 bases, not {}",
                        b.dtype.name()
                    )));
                }
                if b.batch != 1 {
                    return Err(Error::InvalidArgument("a cached projector takes one basis, not a batch".into()));
                }
                if !crate::ops::is_blas(&b) {
                    return Err(Error::stride(name, "a cached projector needs a row- or column-major basis"));
                }
                let bytes = n
                    .checked_mul(n)
                    .and_then(|x| x.checked_mul(b.dtype.size()))
                    .ok_or_else(|| Error::overflow(name, format!("a {n} x {n} {} projector", b.dtype.name())))?;
                let buf = ctx.executor().alloc(bytes)?;
                let p = MatDesc::col_major(buf.addr, b.dtype, n, n).with_device(ctx.executor().device());
                project::build_projector(ctx.executor(), left, &b, &p)?;
                Some((buf, p))
            } else {
                None
            };
            plans.push(SidePlan { left, basis: b, cached });
        }
        Ok(Projector { side, plans, _bases: std::marker::PhantomData })
    }

    /// The strategy each side uses: `(left, right)`, `None` for a side not projected.
    pub fn strategies(&self) -> (Option<Strategy>, Option<Strategy>) {
        let get = |left: bool| {
            self.plans.iter().find(|p| p.left == left).map(|p| {
                if p.cached.is_some() {
                    Strategy::CachedProjector
                } else {
                    Strategy::Coefficient
                }
            })
        };
        (get(true), get(false))
    }

    fn bases(&self) -> Bases<'_> {
        Bases {
            u: self.plans.iter().find(|p| p.left).map(|p| &p.basis),
            v: self.plans.iter().find(|p| !p.left).map(|p| &p.basis),
        }
    }

    /// Workspace bytes [`Projector::apply_raw`] needs for `x` and `out` (a caller workspace set
    /// on the context must hold this much).
    pub fn workspace_size(&self, ctx: &Context, x: &MatDesc, out: Option<&MatDesc>) -> Result<usize> {
        let target = project::check_apply(ctx.executor(), self.side, &self.bases(), x, out)?;
        let blas = crate::ops::is_blas(x) && crate::ops::is_blas_out(&target);
        let mut need = 0;
        let mut src = *x;
        for plan in &self.plans {
            let dst = if target != src { Some(&target) } else { None };
            need = need.max(match (&plan.cached, blas) {
                (Some((_, p)), true) => project::apply_projector_workspace_size(plan.left, p, &src, dst)?,
                _ => {
                    let side = if plan.left { Side::Left } else { Side::Right };
                    project::workspace_size(
                        ctx.executor(),
                        side,
                        &Bases { u: Some(&plan.basis), v: Some(&plan.basis) },
                        &src,
                        dst,
                    )?
                }
            });
            src = target;
        }
        Ok(need)
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn apply_raw(&self, ctx: &Context, x: &MatDesc, out: Option<&MatDesc>) -> Result<()> {
        let bases = self.bases();
        let target = project::check_apply(ctx.executor(), self.side, &bases, x, out)?;
        let blas = crate::ops::is_blas(x) && crate::ops::is_blas_out(&target);
        let mut src = *x;
        for plan in &self.plans {
            let dst = if target != src { Some(&target) } else { None };
            match (&plan.cached, blas) {
                (Some((_, p)), true) => {
                    let need = project::apply_projector_workspace_size(plan.left, p, &src, dst)?;
                    let math = ctx.math_mode();
                    ctx.with_ws(need, |e, ws| project::apply_projector(e, ws, plan.left, p, &src, dst, math))?;
                }
                _ => {
                    let side = if plan.left { Side::Left } else { Side::Right };
                    let b = Bases { u: Some(&plan.basis), v: Some(&plan.basis) };
                    let need = project::workspace_size(ctx.executor(), side, &b, &src, dst)?;
                    let math = ctx.math_mode();
                    ctx.with_ws(need, |e, ws| project::project(e, ws, side, &b, &src, dst, math))?;
                }
            }
            src = target;
        }
        Ok(())
    }

    /// Project `x` in place.
    pub fn apply<T: Element>(&self, ctx: &Context, x: &mut MatMut<'_, T>) -> Result<()> {
        // SAFETY: borrow-checked host views.
        unsafe { self.apply_raw(ctx, x.desc(), None) }
    }

    /// Project `x` into `out`.
    pub fn apply_into<T: Element>(&self, ctx: &Context, x: &MatRef<'_, T>, out: &mut MatMut<'_, T>) -> Result<()> {
        // SAFETY: borrow-checked host views.
        unsafe { self.apply_raw(ctx, x.desc(), Some(out.desc())) }
    }
}
