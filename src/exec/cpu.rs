//! The CPU executor: the primitives on host memory. GEMM and SVD go to faer (blocked, SIMD,
//! multi-threaded through rayon); the element-wise primitives are simple strided loops (they are
//! memory-bound and O(rows * cols), never on the O(n^3) path).
//!
//! f16/bf16 GEMM operands are converted to f32 in column panels (the CPU has no half-precision
//! GEMM); results are rounded once to the output type, which is what cuBLAS's
//! `CUBLAS_COMPUTE_32F` does with half inputs.
//!
//! One file for all primitives (about 670 lines): each is a short loop over the same typed
//! accessors (`get`, `put`, `with_elem!`), which splitting would only scatter.

use std::alloc::Layout;
use std::mem::MaybeUninit;

use faer::dyn_stack::MemStack;
use faer::linalg::svd::{self, ComputeSvdVectors};
use faer::reborrow::ReborrowMut;
use faer::{Accum, MatMut, MatRef, Par};
use half::{bf16, f16};
use rayon::prelude::*;

use super::*;
use crate::dtype::Element;

/// The host executor. Stateless: one instance may be shared by any number of threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuExecutor;

/// Heap block aligned to 64 bytes (a cache line and an AVX-512 vector).
struct Aligned {
    ptr: *mut u8,
    layout: Layout,
}
// SAFETY: the block is plain bytes owned by this value; nothing else frees it.
unsafe impl Send for Aligned {}
unsafe impl Sync for Aligned {}
impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `alloc` with this very layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

const ALIGN: usize = 64;
/// Column-panel width for converting half-precision GEMM operands.
const HALF_PANEL: usize = 256;

macro_rules! with_elem {
    ($dt:expr, $T:ident, $body:block) => {
        match $dt {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            DType::F16 => {
                type $T = f16;
                $body
            }
            DType::BF16 => {
                type $T = bf16;
                $body
            }
        }
    };
}

#[inline(always)]
unsafe fn get<T: Element>(addr: Addr, off: usize) -> T {
    // SAFETY: this function's contract: the arguments describe valid host memory.
    unsafe { *(addr as *const T).add(off) }
}
#[inline(always)]
unsafe fn put<T: Element>(addr: Addr, off: usize, v: T) {
    // SAFETY: this function's contract: the arguments describe valid host memory.
    unsafe { *(addr as *mut T).add(off) = v }
}

/// Column-major view of a strided operand, transposed when `op == T`.
unsafe fn view<'a, T>(s: &Strided, b: usize, rows: usize, cols: usize, op: Op) -> MatRef<'a, T> {
    // SAFETY: this function's contract: the arguments describe valid host memory.
    unsafe {
        let p = (s.addr as *const T).add(b * s.stride);
        let m = MatRef::from_raw_parts(p, rows, cols, 1, s.ld as isize);
        if op == Op::T {
            m.transpose()
        } else {
            m
        }
    }
}

fn par_for(n: usize, work_per_item: usize, f: impl Fn(usize) + Send + Sync) {
    // Threads pay off only with enough work per call.
    if n > 1 && n.saturating_mul(work_per_item) >= 1 << 15 {
        (0..n).into_par_iter().for_each(f);
    } else {
        (0..n).for_each(f);
    }
}

impl CpuExecutor {
    unsafe fn gemm_native<T: Element + faer::traits::ComplexField>(&self, g: &GemmArgs) {
        // SAFETY: this function's contract: the arguments describe valid host memory.
        unsafe {
            let (ar, ac) = if g.transa == Op::N { (g.m, g.k) } else { (g.k, g.m) };
            let (br, bc) = if g.transb == Op::N { (g.k, g.n) } else { (g.n, g.k) };
            let flops = g.m * g.n * g.k.max(1);
            // Many small problems: threads across the batch. Few large ones: threads inside faer.
            let across = g.batch > 1 && flops < 1 << 21;
            let inner_par = if across { Par::Seq } else { Par::rayon(0) };
            let run = |b: usize| {
                let cptr = (g.c.addr as *mut T).add(b * g.c.stride);
                let mut c = MatMut::<T>::from_raw_parts_mut(cptr, g.m, g.n, 1, g.c.ld as isize);
                if g.k == 0 || g.alpha == 0.0 {
                    scale_mat(c.rb_mut(), g.beta);
                    return;
                }
                let a = view::<T>(&g.a, b, ar, ac, g.transa);
                let bm = view::<T>(&g.b, b, br, bc, g.transb);
                let accum = if g.beta == 0.0 {
                    Accum::Replace
                } else {
                    if g.beta != 1.0 {
                        scale_mat(c.rb_mut(), g.beta);
                    }
                    Accum::Add
                };
                faer::linalg::matmul::matmul(c, accum, a, bm, T::from_f64(g.alpha), inner_par);
            };
            if across {
                (0..g.batch).into_par_iter().for_each(run);
            } else {
                (0..g.batch).for_each(run);
            }
        }
    }

    /// Half-precision operands: convert `op(A)` once and `op(B)` / `C` by column panels to f32,
    /// multiply in f32, round the result once into `C`'s type.
    unsafe fn gemm_half(&self, g: &GemmArgs) -> Result<()> {
        // SAFETY: this function's contract: the arguments describe valid host memory.
        unsafe {
            let (ar, ac) = if g.transa == Op::N { (g.m, g.k) } else { (g.k, g.m) };
            let (br, bc) = if g.transb == Op::N { (g.k, g.n) } else { (g.n, g.k) };
            let (mut a32, mut b32, mut c32) = (
                zeroed_f32(g.m.checked_mul(g.k))?,
                zeroed_f32(g.k.checked_mul(HALF_PANEL.min(g.n)))?,
                zeroed_f32(g.m.checked_mul(HALF_PANEL.min(g.n)))?,
            );
            for b in 0..g.batch {
                // op(A) -> a32 (m x k, column-major)
                let _ = (ar, ac, br, bc);
                let (rs_a, cs_a) = if g.transa == Op::N { (1, g.a.ld) } else { (g.a.ld, 1) };
                convert_to_f32(g.a.dtype, g.a.addr, b * g.a.stride, rs_a, cs_a, g.m, g.k, &mut a32);
                let a = MatRef::<f32>::from_raw_parts(a32.as_ptr(), g.m, g.k, 1, g.m.max(1) as isize);
                let (rs_b, cs_b) = if g.transb == Op::N { (1, g.b.ld) } else { (g.b.ld, 1) };
                let mut j0 = 0;
                while j0 < g.n {
                    let p = HALF_PANEL.min(g.n - j0);
                    convert_to_f32(g.b.dtype, g.b.addr, b * g.b.stride + j0 * cs_b, rs_b, cs_b, g.k, p, &mut b32);
                    let bm = MatRef::<f32>::from_raw_parts(b32.as_ptr(), g.k, p, 1, g.k.max(1) as isize);
                    let c_off = b * g.c.stride + j0 * g.c.ld;
                    let accum = if g.beta == 0.0 {
                        Accum::Replace
                    } else {
                        convert_to_f32(g.c.dtype, g.c.addr, c_off, 1, g.c.ld, g.m, p, &mut c32);
                        for v in &mut c32[..g.m * p] {
                            *v *= g.beta as f32;
                        }
                        Accum::Add
                    };
                    let mut c = MatMut::<f32>::from_raw_parts_mut(c32.as_mut_ptr(), g.m, p, 1, g.m.max(1) as isize);
                    if g.k == 0 {
                        if g.beta == 0.0 {
                            c.fill(0.0);
                        }
                    } else {
                        faer::linalg::matmul::matmul(c.rb_mut(), accum, a, bm, g.alpha as f32, Par::rayon(0));
                    }
                    with_elem!(g.c.dtype, C, {
                        for j in 0..p {
                            for i in 0..g.m {
                                put::<C>(g.c.addr, c_off + i + j * g.c.ld, C::from_f32(c32[i + j * g.m]));
                            }
                        }
                    });
                    j0 += p;
                }
            }
            Ok(())
        }
    }
}

/// A zeroed f32 buffer of `n` elements, or `AllocationFailed` (never an abort).
fn zeroed_f32(n: Option<usize>) -> Result<Vec<f32>> {
    let n = n.ok_or(Error::AllocationFailed { bytes: usize::MAX })?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::AllocationFailed { bytes: n.saturating_mul(4) })?;
    v.resize(n, 0.0);
    Ok(v)
}

#[allow(clippy::too_many_arguments)]
unsafe fn convert_to_f32(
    dt: DType,
    addr: Addr,
    off: usize,
    rs: usize,
    cs: usize,
    rows: usize,
    cols: usize,
    out: &mut [f32],
) {
    // SAFETY: this function's contract: the arguments describe valid host memory.
    unsafe {
        with_elem!(dt, T, {
            for j in 0..cols {
                for i in 0..rows {
                    out[i + j * rows] = get::<T>(addr, off + i * rs + j * cs).to_f32();
                }
            }
        })
    }
}

fn scale_mat<T: Element + faer::traits::ComplexField>(mut c: MatMut<'_, T>, beta: f64) {
    let beta = T::from_f64(beta);
    for j in 0..c.ncols() {
        for i in 0..c.nrows() {
            // beta == 0 must give exact zeros, not 0 * NaN (cuBLAS does not read C then).
            let v = if beta == T::from_f64(0.0) { T::from_f64(0.0) } else { c[(i, j)] * beta };
            c[(i, j)] = v;
        }
    }
}

unsafe fn axpby_typed<S: Element, D: Element>(a: &AxpbyArgs) {
    // SAFETY: this function's contract: the arguments describe valid host memory.
    unsafe {
        let (src, dst) = (a.src, a.dst);
        // Inner loop along the destination's smaller stride.
        let rows_inner = dst.row_stride <= dst.col_stride;
        let (outer, inner) = if rows_inner { (a.cols, a.rows) } else { (a.rows, a.cols) };
        let f = |ob: usize| {
            let (b, o) = (ob / outer, ob % outer);
            for i in 0..inner {
                let (r, c) = if rows_inner { (i, o) } else { (o, i) };
                let so = b * src.batch_stride + r * src.row_stride + c * src.col_stride;
                let d_o = b * dst.batch_stride + r * dst.row_stride + c * dst.col_stride;
                let s = if a.alpha == 0.0 { 0.0 } else { a.alpha * get::<S>(src.addr, so).to_f64() };
                let v = if a.beta == 0.0 { s } else { s + a.beta * get::<D>(dst.addr, d_o).to_f64() };
                put::<D>(dst.addr, d_o, D::from_f64(v));
            }
        };
        par_for(a.batch * outer, inner, f);
    }
}

impl Executor for CpuExecutor {
    fn name(&self) -> String {
        "cpu".into()
    }
    fn device(&self) -> Device {
        Device::Host
    }
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        let layout = Layout::from_size_align(bytes.max(1), ALIGN).map_err(|_| Error::AllocationFailed { bytes })?;
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return Err(Error::AllocationFailed { bytes });
        }
        Ok(Buffer::new(ptr as usize, bytes, Box::new(Aligned { ptr, layout })))
    }
    unsafe fn read_to_host(&self, src: Addr, dst: &mut [u8]) -> Result<()> {
        // SAFETY: this function's contract: the arguments describe valid host memory.
        unsafe {
            std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len());
            Ok(())
        }
    }
    unsafe fn write_from_host(&self, src: &[u8], dst: Addr) -> Result<()> {
        // SAFETY: this function's contract: the arguments describe valid host memory.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len());
            Ok(())
        }
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    unsafe fn gemm_strided_batched(&self, g: &GemmArgs) -> Result<()> {
        // SAFETY: this function's contract: the arguments describe valid host memory.
        unsafe {
            g.check()?;
            if g.m == 0 || g.n == 0 {
                return Ok(());
            }
            // The reduced-precision compute types (TF32 / bf16 tensor cores on CUDA) are computed
            // exactly in f32 here: the CPU ignores the math mode, its results are at least as accurate.
            match g.c.dtype {
                DType::F64 => self.gemm_native::<f64>(g),
                DType::F32 if g.a.dtype == DType::F32 => self.gemm_native::<f32>(g),
                _ => self.gemm_half(g)?,
            }
            Ok(())
        }
    }

    unsafe fn axpby(&self, a: &AxpbyArgs) -> Result<()> {
        a.check()?;
        // SAFETY: this function's contract: the arguments describe valid host memory.
        unsafe {
            if a.rows == 0 || a.cols == 0 || a.batch == 0 {
                return Ok(());
            }
            with_elem!(a.src.dtype, S, {
                with_elem!(a.dst.dtype, D, {
                    axpby_typed::<S, D>(a);
                })
            });
            Ok(())
        }
    }

    unsafe fn dgmm(&self, d: &DgmmArgs) -> Result<()> {
        // SAFETY: this function's contract: the arguments describe valid host memory.
        unsafe {
            d.check()?;
            with_elem!(d.a.dtype, T, {
                for b in 0..d.batch {
                    for j in 0..d.n {
                        for i in 0..d.m {
                            let xi = if d.left { i } else { j };
                            let x = get::<T>(d.x, b * d.stride_x + xi * d.incx).to_f64();
                            let v = get::<T>(d.a.addr, b * d.a.stride + i + j * d.a.ld).to_f64() * x;
                            put::<T>(d.c.addr, b * d.c.stride + i + j * d.c.ld, T::from_f64(v));
                        }
                    }
                }
            });
            Ok(())
        }
    }

    /// faer's scratch for one routine call: per matrix, times the threads a batched routine's
    /// call runs its matrices on; the randomized SVD's also holds the full factors it truncates.
    fn svd_unit_workspace(&self, shape: &SvdUnitShape) -> Result<usize> {
        // The routine's own preconditions first (e.g. gesvdjBatched's 32 x 32), as on CUDA.
        shape.check()?;
        let (m, n, dtype) = (shape.m, shape.n, shape.dtype);
        let full_u = shape.routine == SvdAlgorithm::JacobiBatched;
        let scratch = faer_svd_scratch(m, n, dtype, full_u)?;
        let per_matrix = match shape.routine {
            // [U m x n | V n x n | S n | faer's stack]
            SvdAlgorithm::Randomized => m
                .checked_mul(n)
                .and_then(|x| x.checked_add(n * n + n))
                .and_then(|x| x.checked_mul(dtype.size()))
                .map(|x| x.next_multiple_of(ALIGN))
                .and_then(|x| x.checked_add(scratch.next_multiple_of(ALIGN)))
                .ok_or_else(|| Error::overflow("workspace", format!("gesvdr scratch for {m} x {n}")))?,
            _ => scratch.next_multiple_of(ALIGN),
        };
        per_matrix
            .checked_mul(lanes(shape.batch))
            .ok_or_else(|| Error::overflow("workspace", format!("SVD scratch for {m} x {n}")))
    }

    /// rayon's thread count where the call runs (its global pool, or the pool of an enclosing
    /// `ThreadPool::install`), so a batch of per-matrix SVDs keeps every thread busy; at most
    /// [`CPU_SVD_MAX_LANES`].
    fn svd_max_lanes(&self) -> usize {
        rayon::current_num_threads().clamp(1, CPU_SVD_MAX_LANES)
    }

    /// The lanes as threads (each lane's calls in order, on its own workspace slices). Every
    /// routine computes faer's exact SVD here, after the routine's preconditions
    /// ([`LaneSchedule::check`]) have been enforced exactly as on CUDA; non-convergence is
    /// reported in the call's `info` flags, as cuSOLVER reports it.
    unsafe fn svd_lanes(&self, schedule: &LaneSchedule) -> Result<()> {
        schedule.check(self)?;
        // One call alone may use every thread inside faer; several keep faer serial, so the
        // result of a call never depends on the schedule's threading.
        let par = if schedule.units.len() == 1 { Par::rayon(0) } else { Par::Seq };
        let results: Vec<Result<()>> = (0..schedule.lanes)
            .into_par_iter()
            .map(|lane| {
                for (_, u) in schedule.units.iter().filter(|(l, _)| *l == lane) {
                    // SAFETY: the trait's contract: the calls describe valid host memory; calls
                    // on different lanes use different workspace slices (checked above).
                    unsafe {
                        match u.a.dtype {
                            DType::F32 => svd_unit::<f32>(u, par)?,
                            DType::F64 => svd_unit::<f64>(u, par)?,
                            _ => unreachable!("checked above"),
                        }
                    }
                }
                Ok(())
            })
            .collect();
        results.into_iter().collect()
    }

    unsafe fn svd_sign_fix(&self, s: &SignFixArgs) -> Result<()> {
        s.check()?;
        // SAFETY: this function's contract: the arguments describe valid host memory.
        unsafe {
            with_elem!(s.left.dtype, T, {
                for b in 0..s.batch {
                    for v in 0..s.count {
                        let lo = b * s.left.batch_stride + v * s.left.vec_stride;
                        let (mut best, mut arg) = (-1.0f64, 0usize);
                        for e in 0..s.left.len {
                            let a = get::<T>(s.left.addr, lo + e * s.left.elem_stride).to_f64().abs();
                            if a > best {
                                best = a;
                                arg = e;
                            }
                        }
                        if s.left.len > 0 && get::<T>(s.left.addr, lo + arg * s.left.elem_stride).to_f64() < 0.0 {
                            for e in 0..s.left.len {
                                let o = lo + e * s.left.elem_stride;
                                put::<T>(s.left.addr, o, T::from_f64(-get::<T>(s.left.addr, o).to_f64()));
                            }
                            let ro = b * s.right.batch_stride + v * s.right.vec_stride;
                            for e in 0..s.right.len {
                                let o = ro + e * s.right.elem_stride;
                                put::<T>(s.right.addr, o, T::from_f64(-get::<T>(s.right.addr, o).to_f64()));
                            }
                        }
                    }
                }
            });
            Ok(())
        }
    }

    unsafe fn sum_squares(&self, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> Result<Vec<f64>> {
        // SAFETY: this function's contract: the arguments describe valid host memory.
        unsafe {
            let mut out = vec![0f64; batch];
            with_elem!(x.dtype, T, {
                for (b, o) in out.iter_mut().enumerate() {
                    let mut acc = 0f64;
                    for j in 0..cols {
                        for i in 0..rows {
                            let v = get::<T>(x.addr, b * x.batch_stride + i * x.row_stride + j * x.col_stride).to_f64();
                            acc += v * v;
                        }
                    }
                    *o = acc;
                }
            });
            Ok(out)
        }
    }

    unsafe fn count_nonfinite(&self, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> Result<Vec<u64>> {
        // SAFETY: this function's contract: the arguments describe valid host memory.
        unsafe {
            let mut out = vec![0u64; batch];
            with_elem!(x.dtype, T, {
                for (b, o) in out.iter_mut().enumerate() {
                    for j in 0..cols {
                        for i in 0..rows {
                            let v = get::<T>(x.addr, b * x.batch_stride + i * x.row_stride + j * x.col_stride).to_f64();
                            *o += (!v.is_finite()) as u64;
                        }
                    }
                }
            });
            Ok(out)
        }
    }

    unsafe fn add_diagonal(&self, n: usize, a: &Strided, batch: usize, alpha: f64) -> Result<()> {
        check_add_diagonal(n, a, batch)?;
        // SAFETY: this function's contract: the arguments describe valid host memory.
        unsafe {
            with_elem!(a.dtype, T, {
                for b in 0..batch {
                    for i in 0..n {
                        let o = b * a.stride + i + i * a.ld;
                        put::<T>(a.addr, o, T::from_f64(get::<T>(a.addr, o).to_f64() + alpha));
                    }
                }
            });
            Ok(())
        }
    }

    unsafe fn cosine_sum(&self, a: &Vectors, b: &Vectors, count: usize) -> Result<f64> {
        check_cosine(a, b)?;
        // SAFETY: this function's contract: the arguments describe valid host memory.
        unsafe {
            let mut total = 0f64;
            with_elem!(a.dtype, A, {
                with_elem!(b.dtype, B, {
                    for v in 0..count {
                        let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
                        for e in 0..a.len {
                            let x = get::<A>(a.addr, v * a.vec_stride + e * a.elem_stride).to_f64();
                            let y = get::<B>(b.addr, v * b.vec_stride + e * b.elem_stride).to_f64();
                            dot += x * y;
                            na += x * x;
                            nb += y * y;
                        }
                        if na > 0.0 && nb > 0.0 {
                            total += dot / (na.sqrt() * nb.sqrt());
                        }
                    }
                })
            });
            Ok(total)
        }
    }
}

/// Most lanes the CPU executor plans, and most SVDs a batched routine's call runs at once: each
/// holds one matrix's SVD scratch in the workspace, so the cap bounds the workspace of a large
/// batch on hosts with more threads.
pub const CPU_SVD_MAX_LANES: usize = 64;

/// How many SVDs of a batched routine's call run at once (one faer stack each).
fn lanes(batch: usize) -> usize {
    batch.min(rayon::current_num_threads()).clamp(1, CPU_SVD_MAX_LANES)
}

fn faer_svd_scratch(m: usize, n: usize, dtype: DType, full_u: bool) -> Result<usize> {
    let u = if full_u { ComputeSvdVectors::Full } else { ComputeSvdVectors::Thin };
    Ok(match dtype {
        DType::F32 => svd::svd_scratch::<f32>(m, n, u, ComputeSvdVectors::Thin, Par::rayon(0), Default::default()),
        DType::F64 => svd::svd_scratch::<f64>(m, n, u, ComputeSvdVectors::Thin, Par::rayon(0), Default::default()),
        _ => return Err(Error::precondition("gesvd", format!("gesvd computes in f32 or f64, not {}", dtype.name()))),
    }
    .unaligned_bytes_required())
}

/// One routine call (see [`SvdUnitArgs`] for what each routine writes where): faer's exact SVD
/// of each of its matrices, a batched routine's matrices spread over threads with a slice of
/// the call's workspace each; flag `b` is 1 where matrix `b` did not converge, else 0.
unsafe fn svd_unit<T: Element + faer::traits::RealField>(u: &SvdUnitArgs, par: Par) -> Result<()> {
    let (m, n) = (u.m, u.n);
    // Matrices of a batch run on threads of their own: faer stays serial inside each.
    let par = if u.batch > 1 { Par::Seq } else { par };
    let one = |b: usize, buf: &mut [MaybeUninit<u8>]| {
        // SAFETY: the trait's contract: the call's operands are valid host memory; `buf` is
        // this matrix's share of the call's workspace, sized by `svd_unit_workspace`.
        unsafe {
            let a = MatRef::<T>::from_raw_parts((u.a.addr as *const T).add(b * u.a.stride), m, n, 1, u.a.ld as isize);
            let s_at = (u.s as *mut T).add(b * u.stride_s);
            let u_at = (u.u.addr as *mut T).add(b * u.u.stride);
            let v_at = (u.v.addr as *mut T).add(b * u.v.stride);
            let ok = if let Some(top) = u.top {
                // The full thin SVD in scratch, truncated to the top k (exact, not randomized).
                let base = buf.as_mut_ptr() as *mut T;
                let (uf, vf, sf) = (base, base.add(m * n), base.add(m * n + n * n));
                let used = ((m * n + n * n + n) * std::mem::size_of::<T>()).next_multiple_of(ALIGN);
                let stack = MemStack::new(&mut buf[used..]);
                let s = faer::diag::DiagMut::<T>::from_raw_parts_mut(sf, n, 1);
                let uu = MatMut::<T>::from_raw_parts_mut(uf, m, n, 1, m as isize);
                let vv = MatMut::<T>::from_raw_parts_mut(vf, n, n, 1, n as isize);
                let ok = svd::svd(a, s, Some(uu), Some(vv), par, stack, Default::default()).is_ok();
                for j in 0..top.k {
                    *s_at.add(j) = *sf.add(j);
                    for i in 0..m {
                        *u_at.add(i + j * u.u.ld) = *uf.add(i + j * m);
                    }
                    for i in 0..n {
                        *v_at.add(i + j * u.v.ld) = *vf.add(i + j * n);
                    }
                }
                ok
            } else {
                let stack = MemStack::new(buf);
                let s = faer::diag::DiagMut::<T>::from_raw_parts_mut(s_at, n, 1);
                let u_cols = if u.routine == SvdAlgorithm::JacobiBatched { m } else { n };
                let uu = MatMut::<T>::from_raw_parts_mut(u_at, m, u_cols, 1, u.u.ld as isize);
                // Xgesvd writes VT: VT stored column-major is V stored row-major.
                let (rs, cs) = if u.routine == SvdAlgorithm::Qr { (u.v.ld as isize, 1) } else { (1, u.v.ld as isize) };
                let vv = MatMut::<T>::from_raw_parts_mut(v_at, n, n, rs, cs);
                svd::svd(a, s, Some(uu), Some(vv), par, stack, Default::default()).is_ok()
            };
            *(u.info as *mut i32).add(b) = if ok { 0 } else { 1 };
        }
    };
    // SAFETY: as above; the workspace holds `lanes(batch)` shares.
    unsafe {
        let nl = lanes(u.batch);
        let per = u.work_bytes / nl / ALIGN * ALIGN;
        (0..nl).into_par_iter().for_each(|lane| {
            let buf = std::slice::from_raw_parts_mut((u.work + lane * per) as *mut MaybeUninit<u8>, per);
            // Thread `lane` takes matrices lane, lane + nl, ...
            for b in (lane..u.batch).step_by(nl) {
                one(b, buf);
            }
        });
    }
    Ok(())
}
