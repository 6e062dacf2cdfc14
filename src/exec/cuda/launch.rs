//! Kernel launches, shared by the CUDA executor and the host emulation of the kernel tests: each
//! primitive's grid/block computation, argument packing and slicing, written once and generic
//! over a [`Launcher`] (the executor's: `cuLaunchKernel` on its stream; the tests': the
//! kernels compiled for the host, run one thread per CUDA thread). Arguments go through a typed
//! builder checked against the kernel signatures of [`super::signatures`] before anything runs.
//!
//! Launch assumptions the kernels rely on are checked here ([`Limits::check`]): a 1-D block of at
//! most [`MAX_BLOCK`] threads (the block reductions' shared arrays; the kernels trap on a larger
//! one), and every grid dimension within [`MAX_GRID`] (larger counts go in slices, or through a
//! grid-stride loop over a bounded grid).

use super::signatures::{check_args, ArgType, KernelArg};
use super::*;

/// The largest block the block kernels take (the size of their shared arrays, `MAX_BLOCK` in
/// `kernels.cu`).
pub const MAX_BLOCK: u32 = 256;
/// The largest grid dimension a launch uses (CUDA's limit for `gridDim.y` and `gridDim.z`; used for
/// `gridDim.x` too, where the limit is larger).
pub const MAX_GRID: u32 = 65535;

/// Runs one checked kernel launch.
pub trait Launcher {
    /// Launch kernel `name` with `grid` blocks of `block` threads (x, y, z); `params` holds one
    /// pointer per kernel parameter to its value, as `cuLaunchKernel`'s `kernelParams`.
    ///
    /// # Safety
    /// The parameter values are the kernel's (types checked by the caller), and the addresses
    /// among them are memory the kernel may access as its parameter list says.
    unsafe fn launch(&mut self, name: &str, grid: [u32; 3], block: [u32; 3], params: &mut [*mut c_void]) -> Result<()>;
}

/// The sizes the launches use. [`Limits::CUDA`] is the executor's; the tests lower them to reach
/// grid-stride loops and slice boundaries with small problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Threads per block, `1..=MAX_BLOCK`.
    pub block: u32,
    /// Most blocks of an elementwise grid-stride launch.
    pub max_blocks: u32,
    /// Most blocks per matrix of a per-matrix reduction (its `gridDim.x`).
    pub reduce_blocks: u32,
    /// The slice size: most blocks along a dimension that indexes matrices or vectors,
    /// `1..=MAX_GRID`.
    pub max_grid: u32,
}

impl Limits {
    /// The CUDA executor's sizes.
    pub const CUDA: Limits = Limits { block: 256, max_blocks: 8192, reduce_blocks: 64, max_grid: MAX_GRID };

    /// `Error::Internal` unless every size is in range.
    pub fn check(&self) -> Result<()> {
        let ok = (1..=MAX_BLOCK).contains(&self.block)
            && self.max_blocks >= 1
            && self.reduce_blocks >= 1
            && (1..=MAX_GRID).contains(&self.max_grid);
        if ok {
            Ok(())
        } else {
            Err(Error::Internal(format!("kernel launch sizes out of range: {self:?}")))
        }
    }

    /// Blocks for a grid-stride loop over `n` items.
    pub fn blocks(&self, n: usize) -> u32 {
        n.div_ceil(self.block as usize).clamp(1, self.max_blocks as usize) as u32
    }

    /// `0..n` in slices of at most `max_grid`: `(start, len)`.
    fn slices(&self, n: usize) -> impl Iterator<Item = (usize, usize)> {
        let step = self.max_grid as usize;
        (0..n).step_by(step).map(move |s| (s, (n - s).min(step)))
    }
}

/// One kernel launch being built: the kernel's name and its arguments as typed values, in
/// order. The values are owned here (one 8-byte slot each), so they live until the launch has
/// returned (`cuLaunchKernel` copies them); their types are recorded and compared with the
/// kernel's parameter list before launching.
pub(super) struct Launch {
    name: String,
    slots: Vec<u64>,
    types: Vec<ArgType>,
}

impl Launch {
    /// A launch of kernel `name` with no arguments yet.
    pub(super) fn new(name: impl Into<String>) -> Launch {
        Launch { name: name.into(), slots: Vec::with_capacity(16), types: Vec::with_capacity(16) }
    }

    /// Append the next argument.
    pub(super) fn arg<T: KernelArg>(mut self, value: T) -> Launch {
        self.slots.push(value.to_slot());
        self.types.push(T::TYPE);
        self
    }

    /// `Error::Internal` unless the arguments' types are the kernel's parameter types, in order.
    pub(super) fn check(&self) -> Result<()> {
        check_args(&self.name, &self.types)
    }

    /// Check the arguments and the sizes, then launch `grid` (x, y) blocks of `lim.block` threads.
    ///
    /// # Safety
    /// The pointer arguments are addresses the kernel may access as its parameter list says, for
    /// the extents the other arguments give.
    unsafe fn run<L: Launcher + ?Sized>(mut self, l: &mut L, lim: &Limits, grid: (u32, u32)) -> Result<()> {
        self.check()?;
        lim.check()?;
        if grid.0 == 0 || grid.1 == 0 || grid.0 > MAX_GRID.max(lim.max_blocks) || grid.1 > MAX_GRID {
            return Err(Error::Internal(format!("launch of {} with grid {grid:?}", self.name)));
        }
        let mut params: Vec<*mut c_void> = self.slots.iter_mut().map(|s| s as *mut u64 as *mut c_void).collect();
        // SAFETY: `params` holds one pointer per kernel parameter (count and types checked above
        // against the signature table), each to an 8-byte slot owned by `self` that outlives the
        // call, holding the value's bytes at its start. The memory the arguments address is
        // this function's contract.
        unsafe { l.launch(&self.name, [grid.0, grid.1, 1], [lim.block, 1, 1], &mut params) }
    }
}

// Each kernel's launch as a builder from the primitive's arguments (no device access: the unit
// tests check every one against the signature table). Byte offsets are in bytes; strides and
// sizes are in elements, as the kernels take them.

/// `osft_fill_ptrs`: the pointer arrays `pa`, `pb`, `pc` (device addresses) of `count` entries.
pub(super) fn fill_ptrs_launch(
    count: usize,
    a: &Strided,
    b: &Strided,
    c: &Strided,
    pa: u64,
    pb: u64,
    pc: u64,
) -> Launch {
    Launch::new("osft_fill_ptrs")
        .arg(count as i64)
        .arg(a.addr as u64)
        .arg((a.stride * a.dtype.size()) as i64)
        .arg(b.addr as u64)
        .arg((b.stride * b.dtype.size()) as i64)
        .arg(c.addr as u64)
        .arg((c.stride * c.dtype.size()) as i64)
        .arg(pa as usize as *mut u64)
        .arg(pb as usize as *mut u64)
        .arg(pc as usize as *mut u64)
}

/// `osft_axpby_{src}_{dst}`: `dst = alpha * src + beta * dst` over `batch` matrices `rows x cols`.
pub(super) fn axpby_launch(
    rows: usize,
    cols: usize,
    batch: usize,
    alpha: f64,
    s: &Strided2d,
    beta: f64,
    d: &Strided2d,
) -> Launch {
    Launch::new(format!("osft_axpby_{}_{}", sfx(s.dtype), sfx(d.dtype)))
        .arg(rows as i64)
        .arg(cols as i64)
        .arg(batch as i64)
        .arg(alpha)
        .arg(s.addr as *const c_void)
        .arg(s.row_stride as i64)
        .arg(s.col_stride as i64)
        .arg(s.batch_stride as i64)
        .arg(beta)
        .arg(d.addr as *mut c_void)
        .arg(d.row_stride as i64)
        .arg(d.col_stride as i64)
        .arg(d.batch_stride as i64)
}

/// `osft_dgmm_{t}`.
pub(super) fn dgmm_launch(d: &DgmmArgs) -> Launch {
    Launch::new(format!("osft_dgmm_{}", sfx(d.a.dtype)))
        .arg(d.left as i32)
        .arg(d.m as i64)
        .arg(d.n as i64)
        .arg(d.a.addr as *const c_void)
        .arg(d.a.ld as i64)
        .arg(d.a.stride as i64)
        .arg(d.x as *const c_void)
        .arg(d.incx as i64)
        .arg(d.stride_x as i64)
        .arg(d.c.addr as *mut c_void)
        .arg(d.c.ld as i64)
        .arg(d.c.stride as i64)
        .arg(d.batch as i64)
}

/// `osft_sign_fix_{t}` on the vector pairs of `l` and `r`, starting `loff` / `roff` bytes in.
pub(super) fn sign_fix_launch(l: &Vectors, loff: usize, r: &Vectors, roff: usize) -> Launch {
    Launch::new(format!("osft_sign_fix_{}", sfx(l.dtype)))
        .arg(l.len as i64)
        .arg((l.addr + loff) as *mut c_void)
        .arg(l.elem_stride as i64)
        .arg(l.vec_stride as i64)
        .arg(l.batch_stride as i64)
        .arg(r.len as i64)
        .arg((r.addr + roff) as *mut c_void)
        .arg(r.elem_stride as i64)
        .arg(r.vec_stride as i64)
        .arg(r.batch_stride as i64)
}

/// `osft_add_diagonal_{t}`: `A[b] += alpha * I`.
pub(super) fn add_diagonal_launch(n: usize, a: &Strided, batch: usize, alpha: f64) -> Launch {
    Launch::new(format!("osft_add_diagonal_{}", sfx(a.dtype)))
        .arg(n as i64)
        .arg(a.addr as *mut c_void)
        .arg(a.ld as i64)
        .arg(a.stride as i64)
        .arg(batch as i64)
        .arg(alpha)
}

/// `osft_cosine_{t}`: the cosines of the vector pairs of `a` and `b` from pair `v0` on, into
/// `out` (`f64`s, from entry `v0`).
pub(super) fn cosine_launch(a: &Vectors, b: &Vectors, v0: usize, out: Addr) -> Launch {
    Launch::new(format!("osft_cosine_{}", sfx(a.dtype)))
        .arg(a.len as i64)
        .arg((a.addr + v0 * a.vec_stride * a.dtype.size()) as *const c_void)
        .arg(a.elem_stride as i64)
        .arg(a.vec_stride as i64)
        .arg((b.addr + v0 * b.vec_stride * b.dtype.size()) as *const c_void)
        .arg(b.elem_stride as i64)
        .arg(b.vec_stride as i64)
        .arg((out + v0 * 8) as *mut f64)
}

/// `{kernel}_{dtype}(rows, cols, x, rs, cs, bs, out)` from batch entry `b0` on, accumulating
/// into `out` (values of type `O`, one per matrix, from entry `b0`).
pub(super) fn reduce_launch<O>(kernel: &str, rows: usize, cols: usize, x: &Strided2d, b0: usize, out: Addr) -> Launch
where
    *mut O: KernelArg,
{
    Launch::new(format!("{kernel}_{}", sfx(x.dtype)))
        .arg(rows as i64)
        .arg(cols as i64)
        .arg((x.addr + b0 * x.batch_stride * x.dtype.size()) as *const c_void)
        .arg(x.row_stride as i64)
        .arg(x.col_stride as i64)
        .arg(x.batch_stride as i64)
        .arg((out + b0 * 8) as *mut O)
}

// The primitives' launches. Each takes arguments that passed the primitive's `check()`, returns
// at once for an empty problem, and otherwise enqueues its kernel(s) on `l`.

/// [`Executor::axpby`]'s kernel.
///
/// # Safety
/// The arguments describe memory the launcher's kernels may access.
pub unsafe fn axpby<L: Launcher + ?Sized>(l: &mut L, lim: &Limits, a: &AxpbyArgs) -> Result<()> {
    lim.check()?;
    if a.rows == 0 || a.cols == 0 || a.batch == 0 {
        return Ok(());
    }
    // Consecutive threads walk the destination's unit (smallest) stride.
    let (mut rows, mut cols, mut s, mut d) = (a.rows, a.cols, a.src, a.dst);
    if d.row_stride > d.col_stride {
        std::mem::swap(&mut rows, &mut cols);
        std::mem::swap(&mut s.row_stride, &mut s.col_stride);
        std::mem::swap(&mut d.row_stride, &mut d.col_stride);
    }
    let n = rows * cols * a.batch;
    // SAFETY: this function's contract.
    unsafe { axpby_launch(rows, cols, a.batch, a.alpha, &s, a.beta, &d).run(l, lim, (lim.blocks(n), 1)) }
}

/// [`Executor::dgmm`]'s kernel.
///
/// # Safety
/// As [`axpby`].
pub unsafe fn dgmm<L: Launcher + ?Sized>(l: &mut L, lim: &Limits, d: &DgmmArgs) -> Result<()> {
    lim.check()?;
    if d.m == 0 || d.n == 0 || d.batch == 0 {
        return Ok(());
    }
    // SAFETY: this function's contract.
    unsafe { dgmm_launch(d).run(l, lim, (lim.blocks(d.m * d.n * d.batch), 1)) }
}

/// [`Executor::add_diagonal`]'s kernel.
///
/// # Safety
/// As [`axpby`].
pub unsafe fn add_diagonal<L: Launcher + ?Sized>(
    l: &mut L,
    lim: &Limits,
    n: usize,
    a: &Strided,
    batch: usize,
    alpha: f64,
) -> Result<()> {
    lim.check()?;
    if n == 0 || batch == 0 {
        return Ok(());
    }
    // SAFETY: this function's contract.
    unsafe { add_diagonal_launch(n, a, batch, alpha).run(l, lim, (lim.blocks(n * batch), 1)) }
}

/// [`Executor::svd_sign_fix`]'s kernel: one block per vector pair, pairs and batch entries
/// beyond `lim.max_grid` in slices.
///
/// # Safety
/// As [`axpby`].
pub unsafe fn sign_fix<L: Launcher + ?Sized>(l: &mut L, lim: &Limits, s: &SignFixArgs) -> Result<()> {
    lim.check()?;
    let (left, right) = (s.left, s.right);
    for (b0, nb) in lim.slices(s.batch) {
        for (v0, nv) in lim.slices(s.count) {
            let loff = (b0 * left.batch_stride + v0 * left.vec_stride) * left.dtype.size();
            let roff = (b0 * right.batch_stride + v0 * right.vec_stride) * right.dtype.size();
            // SAFETY: this function's contract; the offsets stay inside the described vectors.
            unsafe { sign_fix_launch(&left, loff, &right, roff).run(l, lim, (nv as u32, nb as u32))? };
        }
    }
    Ok(())
}

/// A per-matrix reduction `{kernel}_{dtype}` accumulating one `O` per matrix into `out`
/// (`batch` values, zeroed by the caller): grid (blocks per matrix, matrices), batch entries
/// beyond `lim.max_grid` in slices.
///
/// # Safety
/// As [`axpby`]; `out` holds `batch` values of type `O`.
#[allow(clippy::too_many_arguments)] // the primitive's own arguments plus the launcher, sizes and output
pub unsafe fn reduce<O, L: Launcher + ?Sized>(
    l: &mut L,
    lim: &Limits,
    kernel: &str,
    rows: usize,
    cols: usize,
    batch: usize,
    x: &Strided2d,
    out: Addr,
) -> Result<()>
where
    *mut O: KernelArg,
{
    lim.check()?;
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let per_matrix = lim.blocks(rows * cols).min(lim.reduce_blocks);
    for (b0, nb) in lim.slices(batch) {
        // SAFETY: this function's contract.
        unsafe { reduce_launch::<O>(kernel, rows, cols, x, b0, out).run(l, lim, (per_matrix, nb as u32))? };
    }
    Ok(())
}

/// [`Executor::sum_squares`]'s kernel, into `out` (`batch` zeroed `f64`s).
///
/// # Safety
/// As [`reduce`].
pub unsafe fn sum_squares<L: Launcher + ?Sized>(
    l: &mut L,
    lim: &Limits,
    rows: usize,
    cols: usize,
    batch: usize,
    x: &Strided2d,
    out: Addr,
) -> Result<()> {
    lim.check()?;
    // SAFETY: this function's contract.
    unsafe { reduce::<f64, L>(l, lim, "osft_sum_squares", rows, cols, batch, x, out) }
}

/// [`Executor::count_nonfinite`]'s kernel, into `out` (`batch` zeroed `u64`s).
///
/// # Safety
/// As [`reduce`].
pub unsafe fn count_nonfinite<L: Launcher + ?Sized>(
    l: &mut L,
    lim: &Limits,
    rows: usize,
    cols: usize,
    batch: usize,
    x: &Strided2d,
    out: Addr,
) -> Result<()> {
    lim.check()?;
    // SAFETY: this function's contract.
    unsafe { reduce::<u64, L>(l, lim, "osft_count_nonfinite", rows, cols, batch, x, out) }
}

/// [`Executor::cosine_sum`]'s kernel: the `count` cosines into `out` (`count` `f64`s), one block
/// per pair, in slices of `lim.max_grid` pairs.
///
/// # Safety
/// As [`axpby`]; `out` holds `count` `f64`s.
pub unsafe fn cosine<L: Launcher + ?Sized>(
    l: &mut L,
    lim: &Limits,
    a: &Vectors,
    b: &Vectors,
    count: usize,
    out: Addr,
) -> Result<()> {
    lim.check()?;
    for (v0, nv) in lim.slices(count) {
        // SAFETY: this function's contract.
        unsafe { cosine_launch(a, b, v0, out).run(l, lim, (nv as u32, 1))? };
    }
    Ok(())
}

/// The pointer arrays of one group of `gemm_grouped`: entry `i` of `pa`, `pb`, `pc` is the
/// address of matrix `i` of `a`, `b`, `c` (`count` entries each).
///
/// # Safety
/// `pa`, `pb`, `pc` hold `count` `u64`s each.
#[allow(clippy::too_many_arguments)] // three matrices and their three pointer arrays
pub unsafe fn fill_ptrs<L: Launcher + ?Sized>(
    l: &mut L,
    lim: &Limits,
    count: usize,
    a: &Strided,
    b: &Strided,
    c: &Strided,
    pa: u64,
    pb: u64,
    pc: u64,
) -> Result<()> {
    lim.check()?;
    if count == 0 {
        return Ok(());
    }
    // SAFETY: this function's contract.
    unsafe { fill_ptrs_launch(count, a, b, c, pa, pb, pc).run(l, lim, (lim.blocks(count), 1)) }
}

/// The executor's launcher: `cuLaunchKernel` on the context's stream (handles locked, context
/// current).
impl Launcher for Handles {
    unsafe fn launch(&mut self, name: &str, grid: [u32; 3], block: [u32; 3], params: &mut [*mut c_void]) -> Result<()> {
        let f = *self.funcs.get(name).ok_or_else(|| Error::Internal(format!("kernel {name} missing")))?;
        // SAFETY: the trait's contract; cuLaunchKernel copies the parameter values before it returns.
        unsafe {
            cu_check(
                cu::cuLaunchKernel(
                    f,
                    grid[0],
                    grid[1],
                    grid[2],
                    block[0],
                    block[1],
                    block[2],
                    0,
                    self.stream,
                    params.as_mut_ptr(),
                    std::ptr::null_mut(),
                ),
                "cuLaunchKernel",
            )
        }
    }
}

impl CudaExecutor {
    /// Run a per-matrix reduction kernel (see [`reduce`]) into a zeroed device array and return
    /// the values' bytes. Synchronises.
    pub(super) unsafe fn per_matrix_reduce<O>(
        &self,
        kernel: &str,
        rows: usize,
        cols: usize,
        batch: usize,
        x: &Strided2d,
    ) -> Result<Vec<[u8; 8]>>
    where
        *mut O: KernelArg,
    {
        // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
        unsafe {
            if batch == 0 {
                return Ok(vec![]);
            }
            let out = self.alloc(batch * 8)?;
            {
                let mut h = self.lock()?;
                cu_check(cu::cuMemsetD8Async(out.addr as u64, 0, batch * 8, h.stream), "cuMemsetD8Async")?;
                reduce::<O, Handles>(&mut *h, &Limits::CUDA, kernel, rows, cols, batch, x, out.addr)?;
            }
            let mut bytes = vec![0u8; batch * 8];
            self.read_to_host(out.addr, &mut bytes)?;
            Ok(bytes.chunks_exact(8).map(|c| c.try_into().unwrap()).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_launch_matches_its_kernel() {
        use crate::exec::DType::*;
        let all = [F32, F64, F16, BF16];
        let st = |dtype| Strided { addr: 0x1000, dtype, ld: 4, stride: 16 };
        let s2 = |dtype| Strided2d { addr: 0x2000, dtype, row_stride: 1, col_stride: 4, batch_stride: 16 };
        let v = |dtype| Vectors { addr: 0x3000, dtype, len: 4, elem_stride: 1, vec_stride: 4, batch_stride: 16 };
        fill_ptrs_launch(3, &st(F32), &st(BF16), &st(F64), 0x10, 0x20, 0x30).check().unwrap();
        for s in all {
            for d in all {
                axpby_launch(2, 3, 4, 1.0, &s2(s), 0.5, &s2(d)).check().unwrap();
            }
            reduce_launch::<f64>("osft_sum_squares", 2, 3, &s2(s), 1, 0x40).check().unwrap();
            reduce_launch::<u64>("osft_count_nonfinite", 2, 3, &s2(s), 1, 0x40).check().unwrap();
            // Outputs of the other reduction's type are refused.
            assert!(reduce_launch::<u64>("osft_sum_squares", 2, 3, &s2(s), 1, 0x40).check().is_err());
            assert!(reduce_launch::<f64>("osft_count_nonfinite", 2, 3, &s2(s), 1, 0x40).check().is_err());
        }
        for t in [F32, F64] {
            let dg = DgmmArgs { left: true, m: 2, n: 3, a: st(t), x: 0x50, incx: 1, stride_x: 3, c: st(t), batch: 2 };
            dgmm_launch(&dg).check().unwrap();
            sign_fix_launch(&v(t), 8, &v(t), 16).check().unwrap();
            add_diagonal_launch(3, &st(t), 2, 1e-3).check().unwrap();
            cosine_launch(&v(t), &v(t), 2, 0x60).check().unwrap();
        }
        // No half-precision dgmm kernel: refused before any launch.
        let dg = DgmmArgs { left: false, m: 2, n: 3, a: st(F16), x: 0x50, incx: 1, stride_x: 3, c: st(F16), batch: 2 };
        assert!(matches!(dgmm_launch(&dg).check(), Err(Error::Internal(_))));
    }

    #[test]
    fn builder_records_types_and_values_in_order() {
        let l = Launch::new("osft_add_diagonal_f64")
            .arg(3i64)
            .arg(0x1000usize as *mut c_void)
            .arg(-4i64)
            .arg(9i64)
            .arg(2i64)
            .arg(1.5f64);
        l.check().unwrap();
        assert_eq!(l.types, [ArgType::I64, ArgType::MutPtr, ArgType::I64, ArgType::I64, ArgType::I64, ArgType::F64]);
        assert_eq!(l.slots[1], 0x1000);
        assert_eq!(l.slots[2] as i64, -4);
        assert_eq!(f64::from_bits(l.slots[5]), 1.5);
        // An i32 is the first four bytes of its slot.
        let s = Launch::new("osft_dgmm_f32").arg(-2i32).slots[0].to_ne_bytes();
        assert_eq!(i32::from_ne_bytes(s[..4].try_into().unwrap()), -2);
    }

    #[test]
    fn builder_refuses_wrong_types_before_launching() {
        let internal = |l: Launch| matches!(l.check(), Err(Error::Internal(_)));
        let base = || Launch::new("osft_add_diagonal_f32").arg(3i64);
        // `a` is written: a read-only pointer is refused, as is an f32 alpha or a missing one.
        assert!(internal(base().arg(std::ptr::null::<c_void>()).arg(1i64).arg(1i64).arg(1i64).arg(1.0f64)));
        assert!(internal(base().arg(std::ptr::null_mut::<c_void>()).arg(1i64).arg(1i64).arg(1i64).arg(1u64)));
        assert!(internal(base().arg(std::ptr::null_mut::<c_void>()).arg(1i64).arg(1i64).arg(1i64)));
        assert!(internal(Launch::new("osft_add_diagonal_f16")));
        // The reductions' outputs: double* for sum_squares, unsigned long long* for count_nonfinite.
        let mk = |name: &str| {
            Launch::new(name).arg(1i64).arg(1i64).arg(std::ptr::null::<c_void>()).arg(1i64).arg(1i64).arg(1i64)
        };
        mk("osft_sum_squares_bf16").arg(std::ptr::null_mut::<f64>()).check().unwrap();
        assert!(internal(mk("osft_sum_squares_bf16").arg(std::ptr::null_mut::<u64>())));
        mk("osft_count_nonfinite_f16").arg(std::ptr::null_mut::<u64>()).check().unwrap();
        assert!(internal(mk("osft_count_nonfinite_f16").arg(std::ptr::null_mut::<f64>())));
    }
}
