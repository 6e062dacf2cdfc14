//! The cast sweep's sources (every half-type pattern; f32/f64 values at and next to every
//! f16/bf16 rounding midpoint, and random ones) and the comparison of one cast pair between the
//! CPU executor and the emulated kernel, bit for bit.

use osft::exec::cpu::CpuExecutor;
use osft::exec::cuda::launch::{self, Limits};
use osft::exec::{AxpbyArgs, Executor};
use osft::{bf16, f16, DType};
use osft_test_support::{Rng, StdRng};

use crate::harness::{s2, Emu};

/// Source values of `dtype` for the cast sweep: every bit pattern of the half types; for f32 and
/// f64, values at and next to every kind of f16/bf16 rounding boundary plus random patterns.
pub fn cast_sources(rng: &mut StdRng, dtype: DType, random: usize) -> Vec<u64> {
    let mut out: Vec<u64> = match dtype {
        DType::F16 | DType::BF16 => (0..1u64 << 16).collect(),
        _ => vec![],
    };
    if dtype.is_compute() {
        let f = |x: f64| if dtype == DType::F32 { (x as f32).to_bits() as u64 } else { x.to_bits() };
        let step = |x: f64, d: i64| {
            if dtype == DType::F32 {
                f32::from_bits(((x as f32).to_bits() as i64 + d) as u32) as f64
            } else {
                f64::from_bits((x.to_bits() as i64 + d) as u64)
            }
        };
        for h in 0..0x7bffu16 {
            for (lo, hi) in [
                (f16::from_bits(h).to_f64(), f16::from_bits(h + 1).to_f64()),
                (bf16::from_bits(h).to_f64(), bf16::from_bits(h + 1).to_f64()),
            ] {
                let mid = (lo + hi) / 2.0;
                for x in [mid, step(mid, 1), step(mid, -1)] {
                    out.push(f(x));
                    out.push(f(-x));
                }
            }
        }
        for _ in 0..random {
            out.push(if dtype == DType::F32 {
                rng.random::<u32>() as u64
            } else {
                // Exponents from far below the half types' subnormals to far above their range.
                rng.random::<u64>() & !(0x7ffu64 << 52) | (rng.random_range(850..1170u64) << 52)
            });
        }
        for x in [0.0, -0.0, 65519.998, -65519.998, 65520.0, f64::INFINITY, f64::NAN, 1e300, -1e-300, 5e-324] {
            out.push(f(x));
        }
    }
    out
}

/// `src` values (bits) cast to `dst` by the CPU executor and by the emulated kernel; the results'
/// bits. Asserts they are the same (any NaN matches any NaN).
pub fn cast_both(emu: &mut Emu, src: DType, dst: DType, values: &[u64]) -> Vec<u64> {
    let n = values.len();
    let bytes = |d: DType| n * d.size() + 8;
    let mut input = vec![0u8; bytes(src)];
    for (i, v) in values.iter().enumerate() {
        input[i * src.size()..(i + 1) * src.size()].copy_from_slice(&v.to_ne_bytes()[..src.size()]);
    }
    let (mut out_cpu, mut out_emu) = (vec![0u8; bytes(dst)], vec![0u8; bytes(dst)]);
    let args = |s: &[u8], d: &mut [u8]| AxpbyArgs {
        rows: n,
        cols: 1,
        batch: 1,
        alpha: 1.0,
        src: s2(s.as_ptr() as usize, src, 1, n, n),
        beta: 0.0,
        dst: s2(d.as_mut_ptr() as usize, dst, 1, n, n),
    };
    // SAFETY: the arguments describe the local vectors.
    unsafe {
        CpuExecutor.axpby(&args(&input, &mut out_cpu)).unwrap();
        // Few blocks: the grid-stride loop does the work (each emulated block starts its threads).
        launch::axpby(emu, &Limits { max_blocks: 4, ..Limits::CUDA }, &args(&input, &mut out_emu)).unwrap();
    }
    emu.launched.clear();
    let read = |b: &[u8], i: usize| {
        let mut w = [0u8; 8];
        w[..dst.size()].copy_from_slice(&b[i * dst.size()..(i + 1) * dst.size()]);
        u64::from_ne_bytes(w)
    };
    let is_nan = |bits: u64| match dst {
        DType::F32 => f32::from_bits(bits as u32).is_nan(),
        DType::F64 => f64::from_bits(bits).is_nan(),
        DType::F16 => f16::from_bits(bits as u16).is_nan(),
        DType::BF16 => bf16::from_bits(bits as u16).is_nan(),
    };
    let mut got = Vec::with_capacity(n);
    for (i, v) in values.iter().enumerate() {
        let (c, e) = (read(&out_cpu, i), read(&out_emu, i));
        assert!(
            c == e || (is_nan(c) && is_nan(e)),
            "{} -> {}: source bits {v:#x}: CPU {c:#x}, kernel {e:#x}",
            src.name(),
            dst.name()
        );
        got.push(e);
    }
    got
}
