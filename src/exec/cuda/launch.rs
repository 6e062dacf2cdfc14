//! Kernel launches: the raw `cuLaunchKernel` call, grid sizes, launching a kernel by name, and
//! the per-matrix reductions built on them.

use super::*;

// `params` points at argument values that the caller keeps alive until cuLaunchKernel returns
// (it copies them).
pub(super) unsafe fn launch_impl(
    h: &Handles,
    f: cu::CUfunction,
    grid: (u32, u32),
    block: u32,
    params: &mut [*mut c_void],
) -> Result<()> {
    // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
    unsafe {
        cu_check(
            cu::cuLaunchKernel(
                f,
                grid.0.max(1),
                grid.1.max(1),
                1,
                block,
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

/// Blocks for a grid-stride loop over `n` items.
pub(super) fn blocks(n: usize) -> u32 {
    n.div_ceil(256).clamp(1, 8192) as u32
}

impl CudaExecutor {
    /// Run a per-matrix reduction kernel `{kernel}_{dtype}(rows, cols, x, rs, cs, bs, out)` that
    /// accumulates one 8-byte value per matrix into a zeroed device array (grid: blocks x
    /// batch), and return the values' bytes. Synchronises.
    pub(super) unsafe fn per_matrix_reduce(
        &self,
        kernel: &str,
        rows: usize,
        cols: usize,
        batch: usize,
        x: &Strided2d,
    ) -> Result<Vec<[u8; 8]>> {
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
                        let args: (i64, i64, u64, i64, i64, i64, u64) = (
                            rows as i64,
                            cols as i64,
                            (x.addr + b0 * x.batch_stride * x.dtype.size()) as u64,
                            x.row_stride as i64,
                            x.col_stride as i64,
                            x.batch_stride as i64,
                            (out.addr + b0 * 8) as u64,
                        );
                        let mut p: [*mut c_void; 7] = [
                            &args.0 as *const _ as *mut c_void,
                            &args.1 as *const _ as *mut c_void,
                            &args.2 as *const _ as *mut c_void,
                            &args.3 as *const _ as *mut c_void,
                            &args.4 as *const _ as *mut c_void,
                            &args.5 as *const _ as *mut c_void,
                            &args.6 as *const _ as *mut c_void,
                        ];
                        launch_named(&h, &name, (blocks(rows * cols).min(64), nb as u32), &mut p)?;
                    }
                }
            }
            let mut bytes = vec![0u8; batch * 8];
            self.read_to_host(out.addr, &mut bytes)?;
            Ok(bytes.chunks_exact(8).map(|c| c.try_into().unwrap()).collect())
        }
    }
}

pub(super) unsafe fn launch_named(h: &Handles, name: &str, grid: (u32, u32), params: &mut [*mut c_void]) -> Result<()> {
    // SAFETY: this function's contract: the arguments describe valid memory of this context's device.
    unsafe {
        let f = *h.funcs.get(name).ok_or_else(|| Error::Internal(format!("kernel {name} missing")))?;
        launch_impl(h, f, grid, 256, params)
    }
}
