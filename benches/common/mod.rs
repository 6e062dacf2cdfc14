//! Shared by the criterion benches: the executors to run on, and device buffers filled with
//! random values.
//!
//! Benches go through the descriptor API (`*_raw`) on buffers the executor allocates, so the
//! same bench runs unchanged on every executor. Today that is the CPU executor; the CUDA one
//! plugs in by adding an entry to [`executors`] with an `upload` that copies host data to the
//! device.

#![allow(dead_code)]

use criterion::Criterion;
use osft::exec::Buffer;
use osft::{Context, DType, Element, MatDesc};

/// An executor to bench on.
pub struct Exec {
    pub name: String,
    pub ctx: Context,
    /// Allocate executor memory holding `data`.
    pub upload: fn(&Context, &[u8]) -> Buffer,
}

fn upload_host(ctx: &Context, data: &[u8]) -> Buffer {
    let buf = ctx.executor().alloc(data.len()).expect("host allocation");
    // SAFETY: the buffer holds `data.len()` bytes of host memory owned by `buf`.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf.addr as *mut u8, data.len()) };
    buf
}

/// Every executor usable on this machine.
pub fn executors() -> Vec<Exec> {
    // The CUDA executor joins here once it is in the tree (with an upload through the driver).
    vec![Exec { name: "cpu".into(), ctx: Context::cpu(), upload: upload_host }]
}

/// xorshift64*: uniform values in [-1, 1).
pub struct Rng(pub u64);
impl Rng {
    pub fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 40) as f32) * (2.0 / (1u64 << 24) as f32) - 1.0
    }
}

/// A (batched) row-major matrix of random values in executor memory.
pub struct DevMat {
    pub desc: MatDesc,
    _buf: Buffer,
}

pub fn random<T: Element>(e: &Exec, batch: usize, rows: usize, cols: usize, seed: u64) -> DevMat {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let host: Vec<T> = (0..batch * rows * cols).map(|_| T::from_f32(rng.uniform())).collect();
    // SAFETY: viewing plain-old-data elements as bytes.
    let bytes =
        unsafe { std::slice::from_raw_parts(host.as_ptr() as *const u8, std::mem::size_of_val(host.as_slice())) };
    let buf = (e.upload)(&e.ctx, bytes);
    let desc = MatDesc::row_major(buf.addr, T::DTYPE, rows, cols)
        .with_batch(batch, rows * cols)
        .with_device(e.ctx.executor().device());
    DevMat { desc, _buf: buf }
}

/// Uninitialised (zeroed on the host) output of the given dtype.
pub fn zeros(e: &Exec, dtype: DType, batch: usize, rows: usize, cols: usize) -> DevMat {
    let bytes = vec![0u8; batch * rows * cols * dtype.size()];
    let buf = (e.upload)(&e.ctx, &bytes);
    let desc = MatDesc::row_major(buf.addr, dtype, rows, cols)
        .with_batch(batch, rows * cols)
        .with_device(e.ctx.executor().device());
    DevMat { desc, _buf: buf }
}

/// Criterion sized for a 2-core machine: 10 samples, short warm-up and measurement.
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .configure_from_args()
}
