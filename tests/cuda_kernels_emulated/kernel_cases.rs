//! The random cases of each kernel family (axpby and casts, dgmm, add_diagonal, sign fix, the
//! reductions, cosine, the grouped GEMM's pointer arrays), each run by the CPU executor and by
//! the emulated kernels through `exec::cuda::launch` on copies of one arena, then compared.

use osft::exec::cpu::CpuExecutor;
use osft::exec::cuda::launch::{self, Limits};
use osft::exec::{AxpbyArgs, DgmmArgs, Executor, SignFixArgs, Strided, Vectors};
use osft::DType;
use osft_test_support::{Rng, StdRng};

use crate::harness::*;

fn shape(rng: &mut StdRng) -> (usize, usize, usize) {
    const SIZES: [usize; 8] = [0, 1, 2, 3, 7, 16, 33, 70];
    // Empty (0) in one draw of eight.
    let low = |rng: &mut StdRng| usize::from(rng.random_range(0..8) != 0);
    let pick = |rng: &mut StdRng| {
        let lo = low(rng);
        SIZES[rng.random_range(lo..SIZES.len())]
    };
    let lo = low(rng);
    let batch = [0, 1, 2, 3, 5][rng.random_range(lo..5)];
    (pick(rng), pick(rng), batch)
}

pub fn axpby_cases(rng: &mut StdRng, t: &mut Tally, lim: &Limits, emu: &mut Emu, cases: usize) {
    for src in ALL {
        for dst in ALL {
            for case in 0..cases {
                let (rows, cols, batch) = shape(rng);
                let mut ar = Arena::new(rng, (rows * 2 + 8) * (cols * 2 + 8) * (batch + 1) * 16 + 4096);
                let (sa, srs, scs, sbs) = matrix(rng, &mut ar, src, rows, cols, batch);
                let (da, drs, dcs, dbs) = matrix(rng, &mut ar, dst, rows, cols, batch);
                // Half the cases are plain casts (alpha 1, beta 0); the others scale and accumulate.
                let (alpha, beta) = match case % 4 {
                    0 | 1 => (1.0, 0.0),
                    2 => (rng.random_range(-2.0..2.0), rng.random_range(-2.0..2.0)),
                    _ => (0.0, rng.random_range(-2.0..2.0)),
                };
                let a = AxpbyArgs {
                    rows,
                    cols,
                    batch,
                    alpha,
                    src: s2(sa, src, srs, scs, sbs),
                    beta,
                    dst: s2(da, dst, drs, dcs, dbs),
                };
                let what = format!("axpby {}->{} {rows}x{cols}x{batch} {a:?} {lim:?}", src.name(), dst.name());
                // SAFETY: the arguments describe the arena's memory.
                unsafe { CpuExecutor.axpby(&a) }.unwrap_or_else(|e| panic!("{what}: {e}"));
                let mut b = a;
                b.src.addr = ar.emu_addr(sa);
                b.dst.addr = ar.emu_addr(da);
                // SAFETY: as above, in the emulation's copy.
                unsafe { launch::axpby(emu, lim, &b) }.unwrap_or_else(|e| panic!("{what}: {e}"));
                let mut outs = vec![];
                for bb in 0..batch {
                    for i in 0..rows {
                        for j in 0..cols {
                            outs.push((da + (bb * dbs + i * drs + j * dcs) * dst.size(), dst));
                        }
                    }
                }
                same_memory(&ar, &outs, &what);
                t.pass(emu, rows * cols * batch > 0, &what);
            }
        }
    }
}

pub fn dgmm_cases(rng: &mut StdRng, t: &mut Tally, lim: &Limits, emu: &mut Emu, cases: usize) {
    for dtype in COMPUTE {
        for case in 0..cases {
            let (m, n, batch) = shape(rng);
            let left = case % 2 == 0;
            let mut ar = Arena::new(rng, (m + 8) * (n + 8) * (batch + 1) * 3 * 8 + 4096);
            let pad = |rng: &mut StdRng| rng.random_range(0..3);
            let (lda, ldc) = (m.max(1) + pad(rng), m.max(1) + pad(rng));
            let (sa, sc) = (lda * n + pad(rng), ldc * n + pad(rng));
            let (xa, xr, xc, xbs) = matrix(rng, &mut ar, dtype, 1, if left { m } else { n }, batch);
            let _ = xr;
            let a_addr = ar.take(rng, (sa * batch + 1) * 8);
            for b in 0..batch {
                for j in 0..n {
                    for i in 0..m {
                        let v = value(rng);
                        ar.put(a_addr + (b * sa + i + j * lda) * dtype.size(), dtype, v);
                    }
                }
            }
            // In place (C = A) in a third of the cases.
            let in_place = case % 3 == 0;
            let (c_addr, ldc, sc) =
                if in_place { (a_addr, lda, sa) } else { (ar.take(rng, (sc * batch + 1) * 8), ldc, sc) };
            let d = DgmmArgs {
                left,
                m,
                n,
                a: Strided { addr: a_addr, dtype, ld: lda, stride: sa },
                x: xa,
                incx: xc,
                stride_x: xbs,
                c: Strided { addr: c_addr, dtype, ld: ldc, stride: sc },
                batch,
            };
            let what = format!("dgmm {} {d:?} {lim:?}", dtype.name());
            // SAFETY: the arguments describe the arena's memory.
            unsafe { CpuExecutor.dgmm(&d) }.unwrap_or_else(|e| panic!("{what}: {e}"));
            let mut e = d;
            e.a.addr = ar.emu_addr(a_addr);
            e.c.addr = ar.emu_addr(c_addr);
            e.x = ar.emu_addr(xa);
            // SAFETY: as above.
            unsafe { launch::dgmm(emu, lim, &e) }.unwrap_or_else(|e| panic!("{what}: {e}"));
            let mut outs = vec![];
            for b in 0..batch {
                for j in 0..n {
                    for i in 0..m {
                        outs.push((c_addr + (b * sc + i + j * ldc) * dtype.size(), dtype));
                    }
                }
            }
            same_memory(&ar, &outs, &what);
            t.pass(emu, m * n * batch > 0, &what);
        }
    }
}

pub fn add_diagonal_cases(rng: &mut StdRng, t: &mut Tally, lim: &Limits, emu: &mut Emu, cases: usize) {
    for dtype in COMPUTE {
        for _ in 0..cases {
            let (n, _, batch) = shape(rng);
            let ld = n.max(1) + rng.random_range(0..3);
            let stride = ld * n + rng.random_range(0..3);
            let mut ar = Arena::new(rng, (stride * batch + 8) * 8 + 4096);
            let addr = ar.take(rng, (stride * batch + 1) * 8);
            for b in 0..batch {
                for j in 0..n {
                    for i in 0..n {
                        let v = value(rng);
                        ar.put(addr + (b * stride + i + j * ld) * dtype.size(), dtype, v);
                    }
                }
            }
            let alpha = rng.random_range(-3.0..3.0);
            let a = Strided { addr, dtype, ld, stride };
            let what = format!("add_diagonal {} n={n} {a:?} batch={batch} {lim:?}", dtype.name());
            // SAFETY: the arguments describe the arena's memory.
            unsafe { CpuExecutor.add_diagonal(n, &a, batch, alpha) }.unwrap_or_else(|e| panic!("{what}: {e}"));
            let e = Strided { addr: ar.emu_addr(addr), ..a };
            // SAFETY: as above.
            unsafe { launch::add_diagonal(emu, lim, n, &e, batch, alpha) }.unwrap_or_else(|e| panic!("{what}: {e}"));
            let outs: Vec<_> = (0..batch)
                .flat_map(|b| (0..n).map(move |i| (addr + (b * stride + i + i * ld) * dtype.size(), dtype)))
                .collect();
            same_memory(&ar, &outs, &what);
            t.pass(emu, n * batch > 0, &what);
        }
    }
}

/// Vectors of one side of a sign fix / cosine: `count` vectors of `len` per batch entry, with
/// element and vector strides drawn from a matrix layout (vectors are its columns).
fn vectors(rng: &mut StdRng, ar: &mut Arena, dtype: DType, len: usize, count: usize, batch: usize) -> Vectors {
    let (addr, rs, cs, bs) = matrix(rng, ar, dtype, len, count, batch);
    Vectors { addr, dtype, len, elem_stride: rs, vec_stride: cs, batch_stride: bs }
}

fn vector_elems(v: &Vectors, count: usize, batch: usize) -> Vec<(usize, DType)> {
    let mut out = vec![];
    for b in 0..batch {
        for c in 0..count {
            for e in 0..v.len {
                out.push((
                    v.addr + (b * v.batch_stride + c * v.vec_stride + e * v.elem_stride) * v.dtype.size(),
                    v.dtype,
                ));
            }
        }
    }
    out
}

pub fn sign_fix_cases(rng: &mut StdRng, t: &mut Tally, lim: &Limits, emu: &mut Emu, cases: usize) {
    for dtype in COMPUTE {
        for case in 0..cases {
            let (llen, count, batch) = shape(rng);
            let rlen = if case % 3 == 0 { 0 } else { shape(rng).0 };
            let mut ar = Arena::new(rng, ((llen + 3) * 3 + (rlen + 3) * 3) * (count + 3) * (batch + 1) * 8 * 2 + 4096);
            let l = vectors(rng, &mut ar, dtype, llen, count, batch);
            let r = vectors(rng, &mut ar, dtype, rlen, count, batch);
            // Ties for the largest magnitude in some vectors: the first one decides.
            if llen >= 3 && case % 2 == 1 {
                for b in 0..batch {
                    for c in 0..count {
                        let at = |e: usize| {
                            l.addr + (b * l.batch_stride + c * l.vec_stride + e * l.elem_stride) * dtype.size()
                        };
                        let (x, y) = (at(0), at(llen - 1));
                        ar.put(x, dtype, Value::Num(1e9));
                        ar.put(y, dtype, Value::Num(-1e9));
                    }
                }
            }
            let s = SignFixArgs { count, batch, left: l, right: r };
            let what = format!("sign_fix {} {s:?} {lim:?}", dtype.name());
            // SAFETY: the arguments describe the arena's memory.
            unsafe { CpuExecutor.svd_sign_fix(&s) }.unwrap_or_else(|e| panic!("{what}: {e}"));
            let mut e = s;
            e.left.addr = ar.emu_addr(l.addr);
            e.right.addr = ar.emu_addr(r.addr);
            // SAFETY: as above.
            unsafe { launch::sign_fix(emu, lim, &e) }.unwrap_or_else(|e| panic!("{what}: {e}"));
            let mut outs = vector_elems(&l, count, batch);
            outs.extend(vector_elems(&r, count, batch));
            same_memory(&ar, &outs, &what);
            t.pass(emu, count * batch > 0, &what);
        }
    }
}

/// Floats equal, or both NaN, or within `tol` (relative to the CPU's).
fn close(cpu: f64, kernel: f64, tol: f64) -> bool {
    (cpu.is_nan() && kernel.is_nan()) || cpu == kernel || (cpu - kernel).abs() <= tol * cpu.abs().max(1e-300)
}

pub fn reduction_cases(rng: &mut StdRng, t: &mut Tally, lim: &Limits, emu: &mut Emu, cases: usize) {
    for dtype in ALL {
        for _ in 0..cases {
            let (rows, cols, batch) = shape(rng);
            let mut ar = Arena::new(rng, (rows * 2 + 8) * (cols * 2 + 8) * (batch + 1) * 8 + 4096);
            let (xa, rs, cs, bs) = matrix(rng, &mut ar, dtype, rows, cols, batch);
            let x = s2(xa, dtype, rs, cs, bs);
            let xe = s2(ar.emu_addr(xa), dtype, rs, cs, bs);
            let what = format!("sum_squares/count_nonfinite {} {rows}x{cols}x{batch} {x:?} {lim:?}", dtype.name());
            // SAFETY: the arguments describe the arena's memory; `out` holds `batch` values.
            let (cpu_sq, cpu_nf) = unsafe {
                (
                    CpuExecutor.sum_squares(rows, cols, batch, &x).unwrap(),
                    CpuExecutor.count_nonfinite(rows, cols, batch, &x).unwrap(),
                )
            };
            let mut sq = vec![0f64; batch];
            let mut nf = vec![0u64; batch];
            // SAFETY: as above.
            unsafe {
                launch::sum_squares(emu, lim, rows, cols, batch, &xe, sq.as_mut_ptr() as usize)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            let nonempty = rows * cols * batch > 0;
            t.pass(emu, nonempty, &what);
            // SAFETY: as above.
            unsafe {
                launch::count_nonfinite(emu, lim, rows, cols, batch, &xe, nf.as_mut_ptr() as usize)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            t.pass(emu, nonempty, &what);
            // Non-negative terms: two summation orders differ by at most 2 n u of the sum.
            let tol = 2.0 * (rows * cols + 2) as f64 * DType::F64.unit_roundoff();
            for b in 0..batch {
                assert!(close(cpu_sq[b], sq[b], tol), "{what}: sum of squares {b}: CPU {} kernel {}", cpu_sq[b], sq[b]);
            }
            assert_eq!(cpu_nf, nf, "{what}: non-finite counts");
            same_memory(&ar, &[], &what);
        }
    }
}

pub fn cosine_cases(rng: &mut StdRng, t: &mut Tally, lim: &Limits, emu: &mut Emu, cases: usize) {
    for dtype in COMPUTE {
        for _ in 0..cases {
            let (len, count, _) = shape(rng);
            let mut ar = Arena::new(rng, (len * 3 + 8) * (count * 3 + 8) * 8 * 2 + 4096);
            let a = vectors(rng, &mut ar, dtype, len, count, 1);
            let b = vectors(rng, &mut ar, dtype, len, count, 1);
            let what = format!("cosine {} len={len} count={count} {a:?} {b:?} {lim:?}", dtype.name());
            // SAFETY: the arguments describe the arena's memory.
            let cpu = unsafe { CpuExecutor.cosine_sum(&a, &b, count) }.unwrap_or_else(|e| panic!("{what}: {e}"));
            let mut out = vec![f64::NAN; count];
            let (ae, be) = (Vectors { addr: ar.emu_addr(a.addr), ..a }, Vectors { addr: ar.emu_addr(b.addr), ..b });
            // SAFETY: as above; `out` holds `count` values.
            unsafe { launch::cosine(emu, lim, &ae, &be, count, out.as_mut_ptr() as usize) }
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let kernel: f64 = out.iter().sum();
            // Each cosine is within about (2 len + 8) u of the exact one, whatever the order.
            let tol = count as f64 * (2 * len + 8) as f64 * DType::F64.unit_roundoff();
            assert!(
                (cpu.is_nan() && kernel.is_nan()) || (cpu - kernel).abs() <= tol,
                "{what}: CPU {cpu} kernel {kernel}"
            );
            same_memory(&ar, &[], &what);
            t.pass(emu, count > 0, &what);
        }
    }
}

/// The pointer arrays of `gemm_grouped` (no CPU primitive: checked against their definition).
pub fn fill_ptrs_cases(rng: &mut StdRng, t: &mut Tally, lim: &Limits, emu: &mut Emu, cases: usize) {
    for _ in 0..cases {
        let count = [0, 1, 2, 5, 70, 300][rng.random_range(0..6)];
        let mut words: Vec<u64> = (0..3 * count + 8).map(|_| rng.random()).collect();
        let before = words.clone();
        let m = |rng: &mut StdRng, dtype| Strided {
            addr: rng.random_range(0..1 << 40),
            dtype,
            ld: 1,
            stride: rng.random_range(0..1000),
        };
        let (a, b, c) = (m(rng, DType::F32), m(rng, DType::BF16), m(rng, DType::F64));
        let base = words.as_mut_ptr() as u64 + 8;
        let (pa, pb, pc) = (base, base + 8 * count as u64, base + 16 * count as u64);
        let what = format!("fill_ptrs count={count} {lim:?}");
        // SAFETY: the three arrays lie inside `words`.
        unsafe { launch::fill_ptrs(emu, lim, count, &a, &b, &c, pa, pb, pc) }.unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut want = before;
        for i in 0..count {
            for (k, s) in [a, b, c].iter().enumerate() {
                want[1 + k * count + i] = (s.addr + i * s.stride * s.dtype.size()) as u64;
            }
        }
        assert_eq!(words, want, "{what}");
        t.pass(emu, count > 0, &what);
    }
}
