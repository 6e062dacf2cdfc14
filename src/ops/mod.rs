//! The OSFT algorithms, written once against the [`Executor`] primitives.
//!
//! Each op is planned before it runs, as cuFFT plans and cuBLASLt matmul descriptors are: a safe
//! constructor (`XxxPlan::new`) checks every descriptor and precondition — shapes, dtypes, strides,
//! overlap, device, rank, the SVD routine's limits — and measures the workspace the op needs
//! ([`WorkspaceNeed`]); [`Plan::run`] then only lays out its scratch with a [`Ws`] (the same layout
//! function measured it, so query and run cannot disagree) and issues primitive calls, with no
//! further checks. `run` is the one `unsafe` step: its only contract is that the described memory
//! is valid. Workspace queries, [`crate::Context`]'s op methods, cached projectors and the C
//! functions are all uses of plans.
#![allow(clippy::missing_safety_doc)] // the one contract above applies to every `unsafe fn` here

pub mod decompose;
pub mod diagnostics;
pub mod project;
pub mod projector;
pub mod rank;
pub mod reconstruct;
pub mod svd;

use crate::desc::MatDesc;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::exec::{Addr, AxpbyArgs, ComputeType, Executor, GemmArgs, Op, Strided, Strided2d};

/// The workspace an op needs: it runs with `min` bytes (streaming a batch through the workspace
/// where it can) and fastest with `preferred` (never less than `min`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkspaceNeed {
    pub min: usize,
    pub preferred: usize,
}

impl WorkspaceNeed {
    /// An op that needs exactly `bytes`, no more, no less.
    pub fn exact(bytes: usize) -> Self {
        WorkspaceNeed { min: bytes, preferred: bytes }
    }
}

/// A validated op, ready to run on the executor it was planned for.
pub trait Plan {
    /// What the op returns to the host (`()` for ops that only write the caller's buffers).
    type Output;

    /// Whether [`Plan::run`] waits for the device (it reads results or convergence flags back to
    /// the host). Such an op cannot be captured into a CUDA graph, so it is refused while the
    /// stream is being captured, before anything is issued.
    fn synchronizes(&self) -> bool;

    /// The workspace [`Plan::run`] needs.
    fn workspace(&self) -> WorkspaceNeed;

    /// Run the op. Every check was done when the plan was built; nothing is checked again.
    ///
    /// # Safety
    /// The descriptors the plan was built from must describe valid memory of `exec`'s device
    /// (readable inputs, writable outputs), `exec` must be the executor the plan was built with,
    /// and `ws` must carve valid workspace memory of that device, of at least
    /// `self.workspace().min` bytes.
    unsafe fn run(&self, exec: &dyn Executor, ws: &mut Ws) -> Result<Self::Output>;
}

/// Bytes the scratch laid out by `f` takes (a measuring [`Ws`]; nothing is allocated or run).
pub(crate) fn measure(device: crate::desc::Device, f: impl FnOnce(&mut Ws) -> Result<()>) -> Result<usize> {
    let mut ws = Ws::measure(device);
    f(&mut ws)?;
    Ok(ws.used())
}

/// Alignment of every scratch region (what cuBLAS wants for vectorised access).
const WS_ALIGN: usize = 256;

/// A bump allocator over a workspace, or a measurement of one (`base == None`).
#[derive(Clone)]
pub struct Ws {
    device: crate::desc::Device,
    base: Option<Addr>,
    bytes: usize,
    used: usize,
}

impl Ws {
    /// Counts what `take` calls would need; never fails.
    pub fn measure(device: crate::desc::Device) -> Self {
        Ws { device, base: None, bytes: usize::MAX, used: 0 }
    }
    /// Carves from `bytes` of executor memory at `base`.
    pub fn over(base: Addr, bytes: usize, device: crate::desc::Device) -> Self {
        Ws { device, base: Some(base), bytes, used: 0 }
    }
    /// Bytes needed so far (for `measure`) or used so far.
    pub fn used(&self) -> usize {
        self.used
    }
    pub fn available(&self) -> usize {
        self.bytes.saturating_sub(self.used)
    }
    pub fn is_measuring(&self) -> bool {
        self.base.is_none()
    }
    /// Reserve `bytes` at an address aligned to 256 bytes; returns it (0 while measuring).
    /// Alignment is absolute, so a caller's workspace may start anywhere: a measurement assumes
    /// the worst start (one byte past a boundary), so the queried size always suffices.
    pub fn take(&mut self, bytes: usize) -> Result<Addr> {
        let base = self.base.unwrap_or(1);
        let cur = base.checked_add(self.used).ok_or(Error::AllocationFailed { bytes })?;
        let start = cur.div_ceil(WS_ALIGN) * WS_ALIGN - base;
        let end = start.checked_add(bytes).ok_or(Error::AllocationFailed { bytes })?;
        if end > self.bytes {
            return Err(Error::WorkspaceTooSmall { needed: end, given: self.bytes });
        }
        self.used = end;
        Ok(self.base.map_or(0, |b| b + start))
    }
    /// A column-major `rows x cols` scratch matrix (batch `batch`, packed) of `dtype`.
    pub fn mat(&mut self, dtype: DType, rows: usize, cols: usize, batch: usize) -> Result<MatDesc> {
        let bytes = rows
            .checked_mul(cols)
            .and_then(|x| x.checked_mul(batch))
            .and_then(|x| x.checked_mul(dtype.size()))
            .ok_or_else(|| {
                Error::overflow("workspace", format!("a {batch} x {rows} x {cols} {} scratch matrix", dtype.name()))
            })?;
        let addr = self.take(bytes)?;
        Ok(MatDesc {
            addr,
            dtype,
            rows,
            cols,
            row_stride: 1,
            col_stride: rows.max(1),
            batch,
            batch_stride: rows * cols,
            device: self.device,
        })
    }
}

/// How a column-major BLAS sees a strided matrix: itself (`Op::N`) with leading dimension `ld`,
/// or the transpose of a column-major matrix (`Op::T`, i.e. row-major). `None`: neither (general
/// strides), the matrix must be staged.
pub fn blas_layout(d: &MatDesc) -> Option<(Op, usize)> {
    let (r, c) = (d.rows, d.cols);
    if r == 0 || c == 0 {
        // Nothing is read or written; any leading dimension that satisfies BLAS will do.
        return Some((Op::N, r.max(1)));
    }
    if (d.row_stride == 1 || r <= 1) && (c <= 1 || d.col_stride >= r.max(1)) {
        let ld = if c <= 1 { r.max(1) } else { d.col_stride };
        return Some((Op::N, ld));
    }
    if (d.col_stride == 1 || c <= 1) && (r <= 1 || d.row_stride >= c.max(1)) {
        let ld = if r <= 1 { c.max(1) } else { d.row_stride };
        return Some((Op::T, ld));
    }
    None
}

/// Whether `d` can be read as a GEMM operand (column-major or row-major).
pub fn is_blas(d: &MatDesc) -> bool {
    blas_layout(d).is_some()
}

/// Whether `d` can be the *output* of a strided-batched GEMM: a BLAS layout, and batch entries
/// that do not interleave (cuBLAS needs `strideC >= ldc * (n - 1) + m`). Other outputs are
/// staged through the workspace.
pub fn is_blas_out(d: &MatDesc) -> bool {
    if !is_blas(d) {
        return false;
    }
    if d.batch <= 1 || d.rows == 0 || d.cols == 0 {
        return true;
    }
    // Non-empty: validation bounded the extent, so this cannot overflow. (An empty matrix may
    // carry any strides: the fuzzer found `(cols - 1) * col_stride` overflowing for rows = 0.)
    let span = (d.rows - 1) * d.row_stride + (d.cols - 1) * d.col_stride; // within one matrix
    d.batch_stride > span
}

pub fn strided2d(d: &MatDesc) -> Strided2d {
    Strided2d {
        addr: d.addr,
        dtype: d.dtype,
        row_stride: d.row_stride,
        col_stride: d.col_stride,
        batch_stride: d.batch_stride,
    }
}

fn batch_stride(d: &MatDesc, batch: usize) -> usize {
    if d.batch == 1 && batch > 1 {
        0
    } else {
        d.batch_stride
    }
}

/// `C = alpha * A * B + beta * C` on logical matrices in any BLAS layout, as one strided-batched
/// GEMM. A row-major `C` is computed as `C^T = B^T A^T`. Operands with batch 1 are broadcast.
pub unsafe fn gemm(
    exec: &dyn Executor,
    c: &MatDesc,
    alpha: f64,
    a: &MatDesc,
    b: &MatDesc,
    beta: f64,
    compute: ComputeType,
) -> Result<()> {
    // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
    // contract of the primitives it calls.
    unsafe {
        let (cop, ldc) = blas_layout(c).ok_or_else(|| Error::Internal("gemm output is not BLAS-compatible".into()))?;
        if cop == Op::T {
            return gemm(exec, &c.t(), alpha, &b.t(), &a.t(), beta, compute);
        }
        let (aop, lda) =
            blas_layout(a).ok_or_else(|| Error::Internal("gemm operand A is not BLAS-compatible".into()))?;
        let (bop, ldb) =
            blas_layout(b).ok_or_else(|| Error::Internal("gemm operand B is not BLAS-compatible".into()))?;
        debug_assert!(a.rows == c.rows && b.cols == c.cols && a.cols == b.rows);
        // The reduced-precision compute types (the math mode) exist for all-f32 operands only.
        let all_f32 = a.dtype == DType::F32 && b.dtype == DType::F32 && c.dtype == DType::F32;
        let compute = if compute.is_f32() && !all_f32 { ComputeType::F32 } else { compute };
        exec.gemm_strided_batched(&GemmArgs {
            transa: aop,
            transb: bop,
            m: c.rows,
            n: c.cols,
            k: a.cols,
            alpha,
            a: Strided { addr: a.addr, dtype: a.dtype, ld: lda, stride: batch_stride(a, c.batch) },
            b: Strided { addr: b.addr, dtype: b.dtype, ld: ldb, stride: batch_stride(b, c.batch) },
            beta,
            c: Strided { addr: c.addr, dtype: c.dtype, ld: ldc, stride: c.batch_stride },
            batch: c.batch,
            compute,
        })
    }
}

/// `dst = alpha * src + beta * dst` element-wise with casting; `src` of batch 1 is broadcast.
pub unsafe fn axpby(exec: &dyn Executor, alpha: f64, src: &MatDesc, beta: f64, dst: &MatDesc) -> Result<()> {
    // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
    // contract of the primitives it calls.
    unsafe {
        let mut s = strided2d(src);
        s.batch_stride = batch_stride(src, dst.batch);
        exec.axpby(&AxpbyArgs {
            rows: dst.rows,
            cols: dst.cols,
            batch: dst.batch,
            alpha,
            src: s,
            beta,
            dst: strided2d(dst),
        })
    }
}

/// Copy (and cast) `src` into `dst`.
pub unsafe fn copy(exec: &dyn Executor, src: &MatDesc, dst: &MatDesc) -> Result<()> {
    // SAFETY: this function's contract (every descriptor describes valid memory of the executor's device) is the
    // contract of the primitives it calls.
    unsafe { axpby(exec, 1.0, src, 0.0, dst) }
}

/// GEMM compute type for data of `dtype`.
pub fn compute_for(dtype: DType) -> ComputeType {
    if dtype == DType::F64 {
        ComputeType::F64
    } else {
        ComputeType::F32
    }
}

/// A vector argument (singular values) as a descriptor of `len` elements: `len x 1` or `1 x len`
/// are both accepted and normalised to a column.
pub fn as_column(d: &MatDesc, len: usize, arg: &str) -> Result<MatDesc> {
    let col = if d.cols == 1 && d.rows == len {
        *d
    } else if d.rows == 1 && d.cols == len {
        d.t()
    } else {
        return Err(Error::shape(arg, format!("expected a vector of {len} elements, got {} x {}", d.rows, d.cols)));
    };
    Ok(col)
}

pub fn check_device(exec: &dyn Executor, args: &[(&str, &MatDesc)]) -> Result<()> {
    for (name, d) in args {
        if !d.is_empty() && d.device != exec.device() {
            return Err(Error::DeviceMismatch(format!(
                "{name}: buffer is on {:?} but the context executes on {:?} ({})",
                d.device,
                exec.device(),
                exec.name()
            )));
        }
    }
    Ok(())
}

pub fn check_shape(arg: &str, d: &MatDesc, rows: usize, cols: usize) -> Result<()> {
    if d.rows != rows || d.cols != cols {
        return Err(Error::shape(arg, format!("expected {rows} x {cols}, got {} x {}", d.rows, d.cols)));
    }
    Ok(())
}

pub fn check_compute(compute: DType) -> Result<()> {
    if !compute.is_compute() {
        return Err(Error::DtypeUnsupported(format!("compute type must be f32 or f64, not {}", compute.name())));
    }
    Ok(())
}

/// An output's batch must be the call's batch (a broadcast output would be written many times).
pub fn check_out_batch(arg: &str, d: &MatDesc, batch: usize) -> Result<()> {
    if d.batch != batch {
        return Err(Error::shape(arg, format!("output batch {} must equal the call's batch {batch}", d.batch)));
    }
    Ok(())
}
