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
                    let name = format!("{kernel}_{}", sfx(x.dtype));
                    // gridDim.y is limited to 65535: larger batches go in slices.
                    for b0 in (0..batch).step_by(65535) {
                        let nb = (batch - b0).min(65535);
                        Launch::new(name.as_str())
                            .arg(rows as i64)
                            .arg(cols as i64)
                            .arg((x.addr + b0 * x.batch_stride * x.dtype.size()) as *const c_void)
                            .arg(x.row_stride as i64)
                            .arg(x.col_stride as i64)
                            .arg(x.batch_stride as i64)
                            .arg((out.addr + b0 * 8) as *mut O)
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
