//! Kernel launches: a typed argument builder ([`Launch`]) checked against the kernel signatures
//! of [`signatures`](super::signatures), the raw `cuLaunchKernel` call, grid sizes, and the
//! per-matrix reductions built on them.

use super::signatures::{check_args, ArgType, KernelArg};
use super::*;

/// One kernel launch being built: the kernel's name and its arguments as typed values, in
/// order. The values are owned here (one 8-byte slot each), so they live until
/// `cuLaunchKernel` has returned (it copies them); their types are recorded and compared with
/// the kernel's parameter list before launching.
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

    /// Check the arguments, then launch on the context's stream with `grid` blocks of 256
    /// threads.
    ///
    /// # Safety
    /// The pointer arguments are device addresses of this context's device that the kernel may
    /// access as its parameter list says, for the extents the other arguments give.
    pub(super) unsafe fn run(mut self, h: &Handles, grid: (u32, u32)) -> Result<()> {
        self.check()?;
        let f = *h.funcs.get(&self.name).ok_or_else(|| Error::Internal(format!("kernel {} missing", self.name)))?;
        let mut params: Vec<*mut c_void> = self.slots.iter_mut().map(|s| s as *mut u64 as *mut c_void).collect();
        // SAFETY: `params` holds one pointer per kernel parameter (count and types checked above
        // against the signature table), each to an 8-byte slot owned by `self` that outlives the
        // call, holding the value's bytes at its start; cuLaunchKernel copies them before it
        // returns. The device memory the arguments address is this function's contract.
        unsafe {
            cu_check(
                cu::cuLaunchKernel(
                    f,
                    grid.0.max(1),
                    grid.1.max(1),
                    1,
                    256,
                    1,
                    1,
                    0,
                    h.stream,
                    params.as_mut_ptr(),
                    std::ptr::null_mut(),
                ),
                "cuLaunchKernel",
            )
        }
    }
}

/// Blocks for a grid-stride loop over `n` items.
pub(super) fn blocks(n: usize) -> u32 {
    n.div_ceil(256).clamp(1, 8192) as u32
}

// Each kernel's launch, as a builder from the primitive's arguments (no device access: the
// tests check every one against the signature table on the CPU). Byte offsets are in bytes;
// strides and sizes are in elements, as the kernels take them.

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

/// `osft_cosine_{t}`: the cosines of the vector pairs of `a` and `b` into `out` (`f64`s).
pub(super) fn cosine_launch(a: &Vectors, b: &Vectors, out: Addr) -> Launch {
    Launch::new(format!("osft_cosine_{}", sfx(a.dtype)))
        .arg(a.len as i64)
        .arg(a.addr as *const c_void)
        .arg(a.elem_stride as i64)
        .arg(a.vec_stride as i64)
        .arg(b.addr as *const c_void)
        .arg(b.elem_stride as i64)
        .arg(b.vec_stride as i64)
        .arg(out as *mut f64)
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

impl CudaExecutor {
    /// Run a per-matrix reduction kernel `{kernel}_{dtype}(rows, cols, x, rs, cs, bs, out)` that
    /// accumulates one 8-byte value of type `O` per matrix into a zeroed device array (grid:
    /// blocks x batch), and return the values' bytes. Synchronises.
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
                let h = self.lock()?;
                cu_check(cu::cuMemsetD8Async(out.addr as u64, 0, batch * 8, h.stream), "cuMemsetD8Async")?;
                if rows > 0 && cols > 0 {
                    // gridDim.y is limited to 65535: larger batches go in slices.
                    for b0 in (0..batch).step_by(65535) {
                        let nb = (batch - b0).min(65535);
                        reduce_launch::<O>(kernel, rows, cols, x, b0, out.addr)
                            .run(&h, (blocks(rows * cols).min(64), nb as u32))?;
                    }
                }
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
            cosine_launch(&v(t), &v(t), 0x60).check().unwrap();
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
