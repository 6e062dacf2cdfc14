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
//! **Settings.** The SVD algorithm ([`Context::set_svd_algorithm`], default `Auto`), the SVD
//! diagnostics ([`Context::set_svd_diagnostics`], default off) and the math mode of the data
//! GEMMs ([`Context::set_math_mode`], default `Exact`) apply to the ops issued after they are set.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use crate::desc::MatDesc;
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::exec::cpu::CpuExecutor;
use crate::exec::{Buffer, Executor, MathMode, SvdAlgorithm, SvdReport};
use crate::ops::decompose::{self, DecomposePlan, Parts};
use crate::ops::diagnostics::{LeakagePlan, OrthonormalityPlan, ReconstructionErrorPlan};
use crate::ops::project::{self, ApplyPlan, Bases, PartialPlan, ProjectPlan, Side, Strategy};
use crate::ops::rank::{ImportancePlan, ReadVectorPlan};
use crate::ops::reconstruct::{ReconstructPlan, Term};
use crate::ops::svd::{self, SvdListPlan, SvdOut, SvdPlan, SvdProblem};
use crate::ops::{Plan, Ws};
use crate::projector::Projector;
use crate::view::{MatMut, MatRef};

enum Workspace {
    /// Allocated and grown by the context.
    Cached(Option<Buffer>),
    /// Set by the caller: never grown, never freed.
    User { addr: usize, bytes: usize },
}

/// An executor with its workspace.
pub struct Context {
    // Fields drop in declaration order: the workspace is freed while its executor (a CUDA
    // context) is still alive.
    ws: Mutex<Workspace>,
    exec: Arc<dyn Executor>,
    svd_algorithm: AtomicI32,
    svd_diagnostics: AtomicBool,
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
            ws: Mutex::new(Workspace::Cached(None)),
            exec,
            svd_algorithm: AtomicI32::new(0),
            svd_diagnostics: AtomicBool::new(false),
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

    /// Whether subsequent `svd`, `svd_list` and `decompose` calls read back what the SVD routine
    /// measures beyond convergence — gesvda's residual `h_R_nrmF`, gesvdp's `h_err_sigma`,
    /// gesvdj's residual and sweeps — into [`Context::last_svd_report`]. Off by default: on CUDA
    /// gesvda's residual blocks the host per call, so the stream pool would run those calls one
    /// after another (gesvdj's values are read once per stream after the join; `Xgesvdp` writes
    /// `h_err_sigma` either way). Convergence (the routines' `info` flags) is checked either way.
    pub fn set_svd_diagnostics(&self, on: bool) {
        self.svd_diagnostics.store(on, Ordering::Relaxed);
    }

    pub fn svd_diagnostics(&self) -> bool {
        self.svd_diagnostics.load(Ordering::Relaxed)
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

    /// Convergence information of the last SVD (CUDA: the routine, and with
    /// [`Context::set_svd_diagnostics`] on, residual, sweeps, `h_err_sigma` where the routine
    /// reports them; `None` on the CPU, whose SVD is exact).
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

    /// Run a plan built for this context's executor, with a workspace of at least
    /// `plan.workspace().min` bytes: a caller's workspace must hold that much; the context's own
    /// grows to `preferred`.
    ///
    /// # Safety
    /// The plan's descriptors must describe valid memory of the context's device, and the plan
    /// must have been built with [`Context::executor`].
    pub(crate) unsafe fn execute<P: Plan>(&self, plan: &P) -> Result<P::Output> {
        // Waiting for the device is illegal during capture and would invalidate the caller's
        // graph: refuse before issuing anything.
        if plan.synchronizes() && self.exec.is_capturing()? {
            return Err(Error::InvalidArgument(
                "this op reads results back to the host, which cannot be done while the context's stream is \
                 being captured into a CUDA graph: run it before or after the capture"
                    .into(),
            ));
        }
        let need = plan.workspace();
        let mut guard = self.lock();
        let dev = self.exec.device();
        let (addr, bytes) = match &mut *guard {
            Workspace::User { addr, bytes } => {
                if *bytes < need.min {
                    return Err(Error::WorkspaceTooSmall { needed: need.min, given: *bytes });
                }
                (*addr, *bytes)
            }
            Workspace::Cached(buf) => {
                if buf.as_ref().is_none_or(|b| b.bytes < need.preferred) {
                    // Allocating or freeing is illegal while the stream is captured into a CUDA
                    // graph: refuse before either, and say how to avoid it.
                    if self.exec.is_capturing()? {
                        let held = buf.as_ref().map_or(0, |b| b.bytes);
                        if held >= need.min {
                            // What the context holds (possibly nothing, for an op that needs
                            // none) is enough to run, streamed: use it.
                            let mut ws = buf.as_ref().map_or(Ws::over(0, 0, dev), |b| Ws::over(b.addr, b.bytes, dev));
                            // SAFETY: as below.
                            return unsafe { plan.run(&*self.exec, &mut ws) };
                        }
                        return Err(Error::InvalidArgument(format!(
                            "the context's workspace would have to grow from {held} to {} bytes, but its stream \
                             is being captured into a CUDA graph, where nothing may allocate: set a workspace of at \
                             least {} bytes (the op's workspace-size query) before capturing, or run the op once first",
                            need.preferred, need.min
                        )));
                    }
                    *buf = None; // free the old one before allocating the larger
                    *buf = Some(self.exec.alloc(need.preferred)?);
                }
                let b = buf.as_ref().expect("allocated above");
                (b.addr, b.bytes)
            }
        };
        let mut ws = Ws::over(addr, bytes, dev);
        // SAFETY: the caller vouches for the plan's memory; `ws` is the context's workspace
        // (caller-set or allocated on this device), at least `need.min` bytes, and held
        // exclusively under the lock for the whole run.
        unsafe { plan.run(&*self.exec, &mut ws) }
    }

    // -----------------------------------------------------------------------------------------
    // Raw (descriptor) API: each method builds the op's plan (every check) and runs it.

    /// Workspace bytes an SVD of `w` prefers (the whole batch at once, capped at
    /// [`svd::MAX_CHUNK_BYTES`]); any caller workspace holding one matrix's share also works.
    pub fn svd_workspace_size(&self, w: &MatDesc, compute: DType) -> Result<usize> {
        Ok(svd::workspace_query(&*self.exec, w, compute, self.svd_algorithm())?.preferred)
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn svd_raw(&self, w: &MatDesc, out: &SvdOut, compute: DType) -> Result<()> {
        let plan =
            SvdPlan::new(&*self.exec, w, out, compute, self.svd_algorithm())?.with_diagnostics(self.svd_diagnostics());
        // SAFETY: the caller's contract.
        unsafe { self.execute(&plan) }
    }

    /// Workspace bytes for [`Context::svd_list_raw`] over `ws`: the largest single problem's
    /// (its whole batch, capped at [`svd::MAX_CHUNK_BYTES`]), enough for the list to run. The list
    /// runs in waves of problems that fit the workspace side by side (see [`svd::SvdListPlan`]);
    /// a caller workspace of this size may need several waves. A context allocating its own
    /// workspace grows it to fit the whole list in one wave.
    pub fn svd_list_workspace_size(&self, ws: &[&MatDesc], compute: DType) -> Result<usize> {
        let mut need = 0;
        for w in ws {
            need = need.max(svd::workspace_query(&*self.exec, w, compute, self.svd_algorithm())?.preferred);
        }
        Ok(need)
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn svd_list_raw(&self, problems: &[SvdProblem], compute: DType) -> Result<()> {
        let plan = SvdListPlan::new(&*self.exec, problems, compute, self.svd_algorithm())?
            .with_diagnostics(self.svd_diagnostics());
        // SAFETY: the caller's contract.
        unsafe { self.execute(&plan) }
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn decompose_raw(&self, w: &MatDesc, k: usize, parts: &Parts, compute: DType) -> Result<()> {
        let plan = DecomposePlan::new(&*self.exec, w, k, parts, compute, self.svd_algorithm())?
            .with_diagnostics(self.svd_diagnostics());
        // SAFETY: the caller's contract.
        unsafe { self.execute(&plan) }
    }

    /// Workspace a decomposition of `w` prefers (the whole batch at once); any caller workspace
    /// holding one matrix's share also works, streamed. With the randomized algorithm the size
    /// depends on `k`; this query (which has no `k`) reports it for the largest subspace — use
    /// [`Context::decompose_workspace_size_k`] for the exact figure.
    pub fn decompose_workspace_size(&self, w: &MatDesc, compute: DType) -> Result<usize> {
        Ok(decompose::workspace_need(&*self.exec, w, compute, self.svd_algorithm(), None)?.preferred)
    }

    /// As [`Context::decompose_workspace_size`], for a split at `k`.
    pub fn decompose_workspace_size_k(&self, w: &MatDesc, k: usize, compute: DType) -> Result<usize> {
        Ok(decompose::workspace_need(&*self.exec, w, compute, self.svd_algorithm(), Some(k))?.preferred)
    }

    pub fn leakage_workspace_size(&self, side: Side, basis: &MatDesc, x: &MatDesc) -> Result<usize> {
        Ok(LeakagePlan::new(&*self.exec, side, basis, x)?.workspace().min)
    }

    pub fn orthonormality_error_workspace_size(&self, basis: &MatDesc, columns: bool) -> Result<usize> {
        Ok(OrthonormalityPlan::new(&*self.exec, basis, columns)?.workspace().min)
    }

    pub fn reconstruction_error_workspace_size(&self, w: &MatDesc, terms: &[Term], compute: DType) -> Result<usize> {
        Ok(ReconstructionErrorPlan::new(&*self.exec, w, terms, compute)?.workspace().min)
    }

    pub fn layer_importance_workspace_size(&self, w: &MatDesc, activations: &MatDesc, compute: DType) -> Result<usize> {
        Ok(ImportancePlan::new(&*self.exec, w, activations, compute)?.workspace().min)
    }

    pub fn read_vector_workspace_size(&self, v: &MatDesc) -> Result<usize> {
        Ok(ReadVectorPlan::new(&*self.exec, v)?.workspace().min)
    }

    pub fn reconstruct_workspace_size(&self, terms: &[Term], out: &MatDesc, compute: DType) -> Result<usize> {
        Ok(ReconstructPlan::new(&*self.exec, terms, out, compute, self.math_mode())?.workspace().min)
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn reconstruct_raw(&self, terms: &[Term], out: &MatDesc, compute: DType) -> Result<()> {
        let plan = ReconstructPlan::new(&*self.exec, terms, out, compute, self.math_mode())?;
        // SAFETY: the caller's contract.
        unsafe { self.execute(&plan) }
    }

    pub fn project_workspace_size(
        &self,
        side: Side,
        bases: &Bases,
        x: &MatDesc,
        out: Option<&MatDesc>,
    ) -> Result<usize> {
        Ok(ProjectPlan::new(&*self.exec, side, bases, x, out, self.math_mode())?.workspace().min)
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn project_raw(&self, side: Side, bases: &Bases, x: &MatDesc, out: Option<&MatDesc>) -> Result<()> {
        let plan = ProjectPlan::new(&*self.exec, side, bases, x, out, self.math_mode())?;
        // SAFETY: the caller's contract.
        unsafe { self.execute(&plan) }
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn project_partial_raw(&self, side: Side, basis: &MatDesc, x: &MatDesc, coef: &MatDesc) -> Result<()> {
        let plan = PartialPlan::new(&*self.exec, side, basis, x, coef, self.math_mode())?;
        // SAFETY: the caller's contract.
        unsafe { self.execute(&plan) }
    }

    pub fn project_apply_workspace_size(
        &self,
        side: Side,
        basis: &MatDesc,
        coef: &MatDesc,
        x: &MatDesc,
    ) -> Result<usize> {
        Ok(ApplyPlan::new(&*self.exec, side, basis, coef, x, self.math_mode())?.workspace().min)
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn project_apply_raw(&self, side: Side, basis: &MatDesc, coef: &MatDesc, x: &MatDesc) -> Result<()> {
        let plan = ApplyPlan::new(&*self.exec, side, basis, coef, x, self.math_mode())?;
        // SAFETY: the caller's contract.
        unsafe { self.execute(&plan) }
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn leakage_raw(&self, side: Side, basis: &MatDesc, x: &MatDesc) -> Result<Vec<f64>> {
        let plan = LeakagePlan::new(&*self.exec, side, basis, x)?;
        // SAFETY: the caller's contract.
        unsafe { self.execute(&plan) }
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn orthonormality_error_raw(&self, basis: &MatDesc, columns: bool) -> Result<Vec<f64>> {
        let plan = OrthonormalityPlan::new(&*self.exec, basis, columns)?;
        // SAFETY: the caller's contract.
        unsafe { self.execute(&plan) }
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn reconstruction_error_raw(&self, w: &MatDesc, terms: &[Term], compute: DType) -> Result<Vec<f64>> {
        let plan = ReconstructionErrorPlan::new(&*self.exec, w, terms, compute)?;
        // SAFETY: the caller's contract.
        unsafe { self.execute(&plan) }
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn layer_importance_raw(&self, w: &MatDesc, activations: &MatDesc, compute: DType) -> Result<Vec<f64>> {
        let plan = ImportancePlan::new(&*self.exec, w, activations, compute)?;
        // SAFETY: the caller's contract.
        unsafe { self.execute(&plan) }
    }

    /// Read singular values (any dtype, any device) to the host as f64; flat, batch entry after
    /// batch entry (`rows * cols` values each).
    ///
    /// # Safety
    /// The descriptor must describe valid memory of the context's device.
    pub unsafe fn read_vector_raw(&self, v: &MatDesc) -> Result<Vec<f64>> {
        let plan = ReadVectorPlan::new(&*self.exec, v)?;
        // SAFETY: the caller's contract.
        unsafe { self.execute(&plan) }
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
