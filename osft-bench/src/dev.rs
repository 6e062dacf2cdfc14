//! Matrices in the executor's memory (host memory for the CPU executor, device memory for CUDA),
//! so that every measurement goes through the descriptor API and runs on any executor.

use osft::exec::{Buffer, Executor};
use osft::{Context, DType, Device, Element, MatDesc};
use rayon::prelude::*;

use crate::rawfile::{as_bytes, as_bytes_mut};

/// xorshift64*: uniform values in [-1, 1). Timing does not depend on the values; uniform values
/// avoid subnormals and cost far less to draw than normal ones for gigabytes of data.
#[derive(Clone, Copy)]
struct Rng(u64);

impl Rng {
    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }

    #[inline]
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32) * (2.0 / (1u64 << 24) as f32) - 1.0
    }
}

/// A row-major (batched) matrix in executor memory, freed on drop.
pub struct DevMat {
    pub desc: MatDesc,
    _buf: Buffer,
}

/// Elements per independently seeded chunk of random values.
const CHUNK: usize = 1 << 16;
/// Chunks staged on the host at a time when uploading to a device.
const STAGE_CHUNKS: usize = 256;

fn fill_chunks<T: Element>(out: &mut [T], seed: u64, first_chunk: usize) {
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| {
        let i = (first_chunk + i) as u64;
        let mut r = Rng((seed ^ 0x9E37_79B9_7F4A_7C15).wrapping_add((i + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)) | 1);
        for _ in 0..4 {
            r.next_u64();
        }
        for x in c.iter_mut() {
            *x = T::from_f32(r.uniform());
        }
    });
}

fn err(e: osft::Error) -> String {
    format!("osft: {e}")
}

impl DevMat {
    fn alloc(ctx: &Context, dtype: DType, batch: usize, rows: usize, cols: usize) -> Result<DevMat, String> {
        let exec = ctx.executor();
        let bytes = batch * rows * cols * dtype.size();
        let buf = exec.alloc(bytes).map_err(err)?;
        let desc =
            MatDesc::row_major(buf.addr, dtype, rows, cols).with_batch(batch, rows * cols).with_device(exec.device());
        Ok(DevMat { desc, _buf: buf })
    }

    fn len(&self) -> usize {
        self.desc.numel()
    }

    fn host_slice<T: Element>(&mut self) -> Option<&mut [T]> {
        if self.desc.device != Device::Host || self.len() == 0 {
            return None;
        }
        // SAFETY: a host buffer of exactly `len` elements of T, owned by `self`.
        Some(unsafe { std::slice::from_raw_parts_mut(self.desc.addr as *mut T, self.len()) })
    }

    /// Uniform random values in [-1, 1) (the same values on every executor for a seed).
    pub fn random<T: Element>(
        ctx: &Context,
        batch: usize,
        rows: usize,
        cols: usize,
        seed: u64,
    ) -> Result<DevMat, String> {
        let mut m = Self::alloc(ctx, T::DTYPE, batch, rows, cols)?;
        if let Some(s) = m.host_slice::<T>() {
            fill_chunks(s, seed, 0);
            return Ok(m);
        }
        let exec = ctx.executor();
        let mut stage: Vec<T> = vec![T::from_f32(0.0); (CHUNK * STAGE_CHUNKS).min(m.len())];
        let mut off = 0;
        while off < m.len() {
            let n = stage.len().min(m.len() - off);
            fill_chunks(&mut stage[..n], seed, off / CHUNK);
            // SAFETY: `n` elements at element offset `off` lie inside the buffer.
            unsafe { exec.write_from_host(as_bytes(&stage[..n]), m.desc.addr + off * T::DTYPE.size()) }.map_err(err)?;
            off += n;
        }
        Ok(m)
    }

    pub fn zeros(ctx: &Context, dtype: DType, batch: usize, rows: usize, cols: usize) -> Result<DevMat, String> {
        let m = Self::alloc(ctx, dtype, batch, rows, cols)?;
        let bytes = m.len() * dtype.size();
        if m.desc.device == Device::Host {
            // SAFETY: the buffer holds `bytes` bytes.
            unsafe { std::ptr::write_bytes(m.desc.addr as *mut u8, 0, bytes) };
        } else {
            let zero = vec![0u8; bytes.min(64 << 20)];
            let mut off = 0;
            while off < bytes {
                let n = zero.len().min(bytes - off);
                // SAFETY: `n` bytes at byte offset `off` lie inside the buffer.
                unsafe { ctx.executor().write_from_host(&zero[..n], m.desc.addr + off) }.map_err(err)?;
                off += n;
            }
        }
        Ok(m)
    }

    pub fn from_host<T: Element>(
        ctx: &Context,
        batch: usize,
        rows: usize,
        cols: usize,
        data: &[T],
    ) -> Result<DevMat, String> {
        let mut m = Self::alloc(ctx, T::DTYPE, batch, rows, cols)?;
        assert_eq!(data.len(), m.len());
        if let Some(s) = m.host_slice::<T>() {
            s.copy_from_slice(data);
        } else if !data.is_empty() {
            // SAFETY: the buffer holds exactly `data`'s bytes.
            unsafe { ctx.executor().write_from_host(as_bytes(data), m.desc.addr) }.map_err(err)?;
        }
        Ok(m)
    }

    pub fn to_host<T: Element>(&self, exec: &dyn Executor) -> Result<Vec<T>, String> {
        let mut v: Vec<T> = vec![T::from_f32(0.0); self.len()];
        let bytes = as_bytes_mut(&mut v);
        if !bytes.is_empty() {
            // SAFETY: the buffer holds exactly that many bytes.
            unsafe { exec.read_to_host(self.desc.addr, bytes) }.map_err(err)?;
        }
        Ok(v)
    }

    /// The singular-value layout: a column of `rows` per batch entry.
    pub fn column(ctx: &Context, dtype: DType, batch: usize, rows: usize) -> Result<DevMat, String> {
        Self::zeros(ctx, dtype, batch, rows, 1)
    }
}

/// `C = A B` on row-major matrices in executor memory (`A: n x k`, `B: k x m`, `C: n x m`,
/// strided batches), as the column-major `C^T = B^T A^T` the executor's GEMM takes.
pub fn gemm_row_major(exec: &dyn Executor, a: &DevMat, b: &DevMat, c: &DevMat) -> Result<(), String> {
    use osft::exec::{ComputeType, GemmArgs, Op, Strided};
    let (n, k, m) = (a.desc.rows, a.desc.cols, b.desc.cols);
    assert!(b.desc.rows == k && c.desc.rows == n && c.desc.cols == m);
    assert!(a.desc.batch == c.desc.batch && b.desc.batch == c.desc.batch);
    let dt = c.desc.dtype;
    let g = GemmArgs {
        transa: Op::N,
        transb: Op::N,
        m,
        n,
        k,
        alpha: 1.0,
        a: Strided { addr: b.desc.addr, dtype: dt, ld: m.max(1), stride: k * m },
        b: Strided { addr: a.desc.addr, dtype: dt, ld: k.max(1), stride: n * k },
        beta: 0.0,
        c: Strided { addr: c.desc.addr, dtype: dt, ld: m.max(1), stride: n * m },
        batch: c.desc.batch,
        compute: if dt == DType::F64 { ComputeType::F64 } else { ComputeType::F32 },
    };
    // SAFETY: the three descriptors are live buffers of the executor with these shapes.
    unsafe { exec.gemm_strided_batched(&g) }.map_err(err)
}
