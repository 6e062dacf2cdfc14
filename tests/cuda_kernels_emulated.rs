//! Every kernel of `kernels.cu` run on the CPU (the `osft-kernel-emu` host emulation: one thread
//! per CUDA thread, barriers that report divergence, poisoned shared memory) through the CUDA
//! executor's own launch code (`exec::cuda::launch`: grid/block computation, argument packing,
//! slicing), compared with the CPU executor's primitive on the same random memory. One file for
//! every kernel: the cases share the arena, the random inputs and the comparison.
//!
//! Each case fills an arena with random bits (so padding, gaps and specials are random), writes
//! inputs of random values into its matrices (powers of two from 2^-20 to 2^20, values at and next
//! to the f16/bf16 rounding midpoints, random bit patterns), runs the CPU executor on one copy and
//! the emulated kernels on another, and compares the whole arenas: outputs bit for bit (any NaN
//! matches any NaN: payloads are not part of the contract), every other byte unchanged. The
//! reductions return values: counts exactly, sums within their summation-order bound. Shapes
//! include empty problems, single rows and columns, sizes that are not multiples of the block;
//! layouts are column-major, row-major, padded and non-unit strided; batches up to 5. The launch
//! sizes are lowered (blocks of 1, 32, 64 and 96 threads, 1 to 5 blocks, slices of 1 to 3) to
//! reach grid-stride loops and slice boundaries, besides the executor's own sizes. The threads of
//! a block run concurrently, or one at a time forward, backward or shuffled between barriers, so a
//! missing `__syncthreads` changes results.
#![cfg(feature = "cuda")]

use std::collections::BTreeMap;
use std::ffi::c_void;

use osft::exec::cpu::CpuExecutor;
use osft::exec::cuda::launch::{self, Launcher, Limits};
use osft::exec::cuda::signatures;
use osft::exec::{AxpbyArgs, DgmmArgs, Executor, SignFixArgs, Strided, Strided2d, Vectors};
use osft::{bf16, f16, DType, Error, Result};
use osft_kernel_emu::Schedule;
use osft_test_support::{rng, strides, Rng, StdRng, LAYOUTS};

const ALL: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];
const COMPUTE: [DType; 2] = [DType::F32, DType::F64];

/// The launch sizes and schedules every kernel runs under.
fn configs() -> Vec<(Limits, Schedule)> {
    let lim = |block, max_blocks, reduce_blocks, max_grid| Limits { block, max_blocks, reduce_blocks, max_grid };
    vec![
        (Limits::CUDA, Schedule::Concurrent),
        (lim(32, 2, 2, 2), Schedule::Forward),
        (lim(96, 3, 1, 3), Schedule::Reverse),
        (lim(1, 1, 1, 2), Schedule::Forward),
        (lim(64, 5, 3, 65535), Schedule::Shuffled(7)),
        (lim(33, 2, 2, 4), Schedule::Concurrent),
    ]
}

/// The emulated device: launches by name, recording which kernels ran.
struct Emu {
    schedule: Schedule,
    launched: Vec<String>,
}

impl Launcher for Emu {
    unsafe fn launch(&mut self, name: &str, grid: [u32; 3], block: [u32; 3], params: &mut [*mut c_void]) -> Result<()> {
        self.launched.push(name.to_string());
        // SAFETY: the trait's contract.
        unsafe { osft_kernel_emu::launch(name, grid, block, params, self.schedule) }.map_err(Error::Internal)
    }
}

/// Random memory, in two copies: one for the CPU executor, one for the emulated kernels.
struct Arena {
    cpu: Vec<u64>,
    emu: Vec<u64>,
    used: usize,
}

impl Arena {
    fn new(rng: &mut StdRng, bytes: usize) -> Arena {
        let cpu: Vec<u64> = (0..bytes.div_ceil(8) + 1).map(|_| rng.random()).collect();
        Arena { emu: cpu.clone(), cpu, used: 0 }
    }
    fn base(&self) -> usize {
        self.cpu.as_ptr() as usize
    }
    /// The emulation copy's address of a CPU-copy address.
    fn emu_addr(&self, a: usize) -> usize {
        a - self.base() + self.emu.as_ptr() as usize
    }
    /// `bytes` more, 8-aligned, after a random gap.
    fn take(&mut self, rng: &mut StdRng, bytes: usize) -> usize {
        let at = (self.used + rng.random_range(0..3) * 8).next_multiple_of(8);
        self.used = at + bytes;
        assert!(self.used <= self.cpu.len() * 8, "arena too small");
        self.base() + at
    }
    fn put(&mut self, addr: usize, dtype: DType, v: Value) {
        let p = addr - self.base();
        let bytes = self.cpu.as_mut_ptr() as *mut u8;
        // SAFETY: `addr` is inside the CPU copy (checked by `take`'s callers' extents).
        unsafe {
            match (dtype, v) {
                (DType::F32, Value::Num(x)) => (bytes.add(p) as *mut f32).write_unaligned(x as f32),
                (DType::F64, Value::Num(x)) => (bytes.add(p) as *mut f64).write_unaligned(x),
                (DType::F16, Value::Num(x)) => (bytes.add(p) as *mut u16).write_unaligned(f16::from_f64(x).to_bits()),
                (DType::BF16, Value::Num(x)) => (bytes.add(p) as *mut u16).write_unaligned(bf16::from_f64(x).to_bits()),
                (_, Value::Bits(b)) => {
                    std::ptr::copy_nonoverlapping(b.to_ne_bytes().as_ptr(), bytes.add(p), dtype.size())
                }
            }
        }
        let (cpu, emu) = (self.cpu.as_ptr() as *const u8, self.emu.as_mut_ptr() as *mut u8);
        // SAFETY: the same offset in both copies.
        unsafe { std::ptr::copy_nonoverlapping(cpu.add(p), emu.add(p), dtype.size()) };
    }
}

#[derive(Clone, Copy)]
enum Value {
    Num(f64),
    Bits(u64),
}

/// An input value: mostly moderate numbers, some at or next to an f16/bf16 rounding midpoint,
/// some random bit patterns (NaN, infinities, subnormals, huge values).
fn value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..10) {
        0 => Value::Bits(rng.random()),
        1 | 2 => {
            let (lo, hi) = if rng.random::<bool>() {
                let h = rng.random_range(0..0x7bffu16);
                (f16::from_bits(h).to_f64(), f16::from_bits(h + 1).to_f64())
            } else {
                let h = rng.random_range(0..0x7f7fu16);
                (bf16::from_bits(h).to_f64(), bf16::from_bits(h + 1).to_f64())
            };
            let mid = (lo + hi) / 2.0;
            let x = match rng.random_range(0..3) {
                0 => mid,
                1 => f64::from_bits(mid.to_bits() + 1),
                _ => f64::from_bits(mid.to_bits() - 1),
            };
            Value::Num(if rng.random::<bool>() { -x } else { x })
        }
        _ => Value::Num(rng.random_range(-1.0..1.0) * 2f64.powi(rng.random_range(-20..=20))),
    }
}

/// A random batch of `rows x cols` matrices in a random layout: (addr, rs, cs, bs, element offsets).
fn matrix(
    rng: &mut StdRng,
    ar: &mut Arena,
    dtype: DType,
    rows: usize,
    cols: usize,
    batch: usize,
) -> (usize, usize, usize, usize) {
    let layout = LAYOUTS[rng.random_range(0..LAYOUTS.len())];
    let (rs, cs) = strides(layout, rows, cols);
    let span = if rows * cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 };
    let bs = span + rng.random_range(0..4);
    let addr = ar.take(rng, (bs * batch + 1) * dtype.size());
    for b in 0..batch {
        for i in 0..rows {
            for j in 0..cols {
                let v = value(rng);
                ar.put(addr + (b * bs + i * rs + j * cs) * dtype.size(), dtype, v);
            }
        }
    }
    (addr, rs, cs, bs)
}

/// Per-kernel pass counts and the comparison helpers.
struct Tally {
    passes: BTreeMap<String, usize>,
}

impl Tally {
    fn pass(&mut self, emu: &mut Emu, nonempty: bool, what: &str) {
        if nonempty {
            assert!(!emu.launched.is_empty(), "{what}: no kernel launched");
        } else {
            assert!(emu.launched.is_empty(), "{what}: an empty problem launched {:?}", emu.launched);
        }
        // One pass per kernel per case (a case may launch it once per slice).
        let mut ran: Vec<String> = emu.launched.drain(..).collect();
        ran.dedup();
        for k in ran {
            *self.passes.entry(k).or_default() += 1;
        }
    }
}

/// Compare the arenas: equal bytes everywhere, except that an output element (`outputs`: its
/// CPU-copy address) may hold two different NaNs.
fn same_memory(ar: &Arena, outputs: &[(usize, DType)], what: &str) {
    let (c, e) = (as_bytes(&ar.cpu), as_bytes(&ar.emu));
    if c == e {
        return;
    }
    let nan = |b: &[u8], d: DType| match d {
        DType::F32 => f32::from_ne_bytes(b.try_into().unwrap()).is_nan(),
        DType::F64 => f64::from_ne_bytes(b.try_into().unwrap()).is_nan(),
        DType::F16 => f16::from_bits(u16::from_ne_bytes(b.try_into().unwrap())).is_nan(),
        DType::BF16 => bf16::from_bits(u16::from_ne_bytes(b.try_into().unwrap())).is_nan(),
    };
    let mut out: BTreeMap<usize, DType> = BTreeMap::new();
    for &(a, d) in outputs {
        out.insert(a - ar.base(), d);
    }
    let mut p = 0;
    while p < c.len() {
        if c[p] == e[p] {
            p += 1;
            continue;
        }
        let hit = out.range(..=p).next_back().filter(|(&o, d)| p < o + d.size());
        match hit {
            Some((&o, &d)) if nan(&c[o..o + d.size()], d) && nan(&e[o..o + d.size()], d) => p = o + d.size(),
            Some((&o, &d)) => panic!(
                "{what}: output at byte {o} ({}) differs: CPU {:02x?}, kernel {:02x?}",
                d.name(),
                &c[o..o + d.size()],
                &e[o..o + d.size()]
            ),
            None => panic!("{what}: byte {p} outside the outputs changed (CPU {:#04x}, kernel {:#04x})", c[p], e[p]),
        }
    }
}

fn as_bytes(v: &[u64]) -> &[u8] {
    // SAFETY: plain integers viewed as bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 8) }
}

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

fn s2(addr: usize, dtype: DType, rs: usize, cs: usize, bs: usize) -> Strided2d {
    Strided2d { addr, dtype, row_stride: rs, col_stride: cs, batch_stride: bs }
}

fn axpby_cases(rng: &mut StdRng, t: &mut Tally, lim: &Limits, emu: &mut Emu, cases: usize) {
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

fn dgmm_cases(rng: &mut StdRng, t: &mut Tally, lim: &Limits, emu: &mut Emu, cases: usize) {
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

fn add_diagonal_cases(rng: &mut StdRng, t: &mut Tally, lim: &Limits, emu: &mut Emu, cases: usize) {
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

fn sign_fix_cases(rng: &mut StdRng, t: &mut Tally, lim: &Limits, emu: &mut Emu, cases: usize) {
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

fn reduction_cases(rng: &mut StdRng, t: &mut Tally, lim: &Limits, emu: &mut Emu, cases: usize) {
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

fn cosine_cases(rng: &mut StdRng, t: &mut Tally, lim: &Limits, emu: &mut Emu, cases: usize) {
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
fn fill_ptrs_cases(rng: &mut StdRng, t: &mut Tally, lim: &Limits, emu: &mut Emu, cases: usize) {
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

#[test]
fn every_kernel_matches_the_cpu_executor() {
    let mut rng = rng();
    // The emulation holds exactly the kernels the executor launches.
    let mut emulated = osft_kernel_emu::kernel_names();
    let mut table = signatures::kernel_names();
    emulated.sort();
    table.sort();
    assert_eq!(emulated, table, "the emulation's kernel table and signatures::FAMILIES differ");
    assert!(osft_kernel_emu::shared_bytes().is_some_and(|n| n > 0), "shared memory is not poisoned");
    let mut t = Tally { passes: BTreeMap::new() };
    let t0 = std::time::Instant::now();
    for (i, (lim, schedule)) in configs().into_iter().enumerate() {
        let mut emu = Emu { schedule, launched: vec![] };
        // Fewer cases with the executor's 256-thread blocks (slow to emulate).
        let n = if i == 0 { 2 } else { 5 };
        axpby_cases(&mut rng, &mut t, &lim, &mut emu, n);
        dgmm_cases(&mut rng, &mut t, &lim, &mut emu, 3 * n);
        add_diagonal_cases(&mut rng, &mut t, &lim, &mut emu, 3 * n);
        sign_fix_cases(&mut rng, &mut t, &lim, &mut emu, 3 * n);
        reduction_cases(&mut rng, &mut t, &lim, &mut emu, 2 * n);
        cosine_cases(&mut rng, &mut t, &lim, &mut emu, 3 * n);
        fill_ptrs_cases(&mut rng, &mut t, &lim, &mut emu, n);
    }
    let total: usize = t.passes.values().sum();
    let mut text =
        format!("cases per kernel that matched the CPU executor ({total} in {:.1} s):\n", t0.elapsed().as_secs_f64());
    for (k, n) in &t.passes {
        text += &format!("  {k:32} {n:4} passed\n");
    }
    text += &format!("KERNELS: {} of {} kernels passed, {total} kernel cases", t.passes.len(), table.len());
    eprintln!("{text}");
    for k in &table {
        assert!(t.passes.get(k).is_some_and(|&n| n > 0), "kernel {k} never ran");
    }
    report("kernels", &text);
}

/// Source values of `dtype` for the cast sweep: every bit pattern of the half types; for f32 and
/// f64, values at and next to every kind of f16/bf16 rounding boundary plus random patterns.
fn cast_sources(rng: &mut StdRng, dtype: DType, random: usize) -> Vec<u64> {
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
fn cast_both(emu: &mut Emu, src: DType, dst: DType, values: &[u64]) -> Vec<u64> {
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

/// Every cast pair on the same sources: the CPU executor and the kernels give the same bits. The
/// half types' every pattern, f32/f64 values at and next to every f16/bf16 rounding midpoint, and
/// random ones; with `OSFT_EXHAUSTIVE=1` also all 2^32 f32 values to f16 and bf16.
#[test]
fn every_cast_agrees_bit_for_bit() {
    let mut rng = rng();
    let mut emu = Emu { schedule: Schedule::Concurrent, launched: vec![] };
    let t0 = std::time::Instant::now();
    let mut compared = 0usize;
    for src in ALL {
        let values = cast_sources(&mut rng, src, 1 << 17);
        for dst in ALL {
            compared += cast_both(&mut emu, src, dst, &values).len();
        }
    }
    // The examples that rounding through f32 gets wrong, through the kernel.
    let f64s = |xs: &[f64]| xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let x = f64s(&[-65519.998, 1.0 + 2f64.powi(-11) + 2f64.powi(-40), 1.0 + 2f64.powi(-8) + 2f64.powi(-40)]);
    assert_eq!(cast_both(&mut emu, DType::F64, DType::F16, &x)[..2], [0xfbff, 0x3c01]);
    assert_eq!(cast_both(&mut emu, DType::F64, DType::BF16, &x)[2], 0x3f81);
    assert_eq!(cast_both(&mut emu, DType::F32, DType::BF16, &[0x3f80_8001])[0], 0x3f81);
    if std::env::var_os("OSFT_EXHAUSTIVE").is_some_and(|v| v == "1") {
        for chunk in 0..256u64 {
            let values: Vec<u64> = (chunk << 24..(chunk + 1) << 24).collect();
            for dst in [DType::F16, DType::BF16] {
                compared += cast_both(&mut emu, DType::F32, dst, &values).len();
            }
        }
        eprintln!("all 2^32 f32 values to f16 and bf16 compared");
    }
    let line =
        format!("casts: {compared} values over 16 type pairs bit-identical in {:.1} s", t0.elapsed().as_secs_f64());
    eprintln!("{line}");
    report("casts", &line);
}

/// Launch sizes out of the kernels' range are refused before anything runs; a launch that
/// bypassed that check traps in the kernel instead of writing past its shared arrays.
#[test]
fn launch_assumptions_are_checked() {
    let mut emu = Emu { schedule: Schedule::Concurrent, launched: vec![] };
    let data = [1.0f64, 2.0, 3.0, 4.0];
    let mut out = [0f64; 1];
    let x = s2(data.as_ptr() as usize, DType::F64, 1, 2, 4);
    let c = Limits::CUDA;
    for bad in [
        Limits { block: 257, ..c },
        Limits { block: 0, ..c },
        Limits { max_grid: 65536, ..c },
        Limits { max_grid: 0, ..c },
        Limits { max_blocks: 0, ..c },
        Limits { reduce_blocks: 0, ..c },
    ] {
        // SAFETY: `x` and `out` describe the local arrays.
        let r = unsafe { launch::sum_squares(&mut emu, &bad, 2, 2, 1, &x, out.as_mut_ptr() as usize) };
        assert!(matches!(r, Err(Error::Internal(_))), "{bad:?}: {r:?}");
    }
    assert!(emu.launched.is_empty() && out[0] == 0.0);
    // SAFETY: as above.
    unsafe { launch::sum_squares(&mut emu, &c, 2, 2, 1, &x, out.as_mut_ptr() as usize) }.unwrap();
    assert_eq!(out[0], 30.0);
    // Directly, with 512 threads: the kernel traps.
    let (mut rows, mut cols, mut xp, mut rs, mut cs, mut bs, mut op) =
        (2i64, 2i64, data.as_ptr() as usize, 1i64, 2i64, 4i64, out.as_mut_ptr() as usize);
    let mut params: Vec<*mut c_void> = vec![
        &mut rows as *mut i64 as *mut c_void,
        &mut cols as *mut i64 as *mut c_void,
        &mut xp as *mut usize as *mut c_void,
        &mut rs as *mut i64 as *mut c_void,
        &mut cs as *mut i64 as *mut c_void,
        &mut bs as *mut i64 as *mut c_void,
        &mut op as *mut usize as *mut c_void,
    ];
    for (name, block) in [("osft_sum_squares_f64", [512, 1, 1]), ("osft_sum_squares_f64", [16, 2, 1])] {
        // SAFETY: the parameters point at values of the kernel's types, addressing local arrays.
        let r = unsafe { osft_kernel_emu::launch(name, [1, 1, 1], block, &mut params, Schedule::Concurrent) };
        assert!(r.as_ref().is_err_and(|e| e.contains("__trap")), "{block:?}: {r:?}");
    }
    assert_eq!(out[0], 30.0, "a trapped launch wrote its output");
}

/// Write `text` where scripts/test.sh picks it up for its summary line (target/tmp).
fn report(name: &str, text: &str) {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cuda_kernels_emulated.{name}.txt"));
    std::fs::write(&path, format!("{text}\n")).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
