//! The emulated device and the memory the cases compare: a `Launcher` that runs kernels in the
//! host emulation and records their names, an arena of random bits in two copies (one for the
//! CPU executor, one for the kernels), random input values and matrices in random layouts, and
//! the whole-arena comparison (outputs bit for bit, any NaN matching any NaN; every other byte
//! unchanged) with per-kernel pass counts.

use std::collections::BTreeMap;
use std::ffi::c_void;

use osft::exec::cuda::launch::Launcher;
use osft::exec::Strided2d;
use osft::{bf16, f16, DType, Error, Result};
use osft_kernel_emu::Schedule;
use osft_test_support::{strides, Rng, StdRng, LAYOUTS};

pub const ALL: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];
pub const COMPUTE: [DType; 2] = [DType::F32, DType::F64];

/// The emulated device: launches by name, recording which kernels ran.
pub struct Emu {
    pub schedule: Schedule,
    pub launched: Vec<String>,
}

impl Launcher for Emu {
    unsafe fn launch(&mut self, name: &str, grid: [u32; 3], block: [u32; 3], params: &mut [*mut c_void]) -> Result<()> {
        self.launched.push(name.to_string());
        // SAFETY: the trait's contract.
        unsafe { osft_kernel_emu::launch(name, grid, block, params, self.schedule) }.map_err(Error::Internal)
    }
}

/// Random memory, in two copies: one for the CPU executor, one for the emulated kernels.
pub struct Arena {
    pub cpu: Vec<u64>,
    pub emu: Vec<u64>,
    pub used: usize,
}

impl Arena {
    pub fn new(rng: &mut StdRng, bytes: usize) -> Arena {
        let cpu: Vec<u64> = (0..bytes.div_ceil(8) + 1).map(|_| rng.random()).collect();
        Arena { emu: cpu.clone(), cpu, used: 0 }
    }
    pub fn base(&self) -> usize {
        self.cpu.as_ptr() as usize
    }
    /// The emulation copy's address of a CPU-copy address.
    pub fn emu_addr(&self, a: usize) -> usize {
        a - self.base() + self.emu.as_ptr() as usize
    }
    /// `bytes` more, 8-aligned, after a random gap.
    pub fn take(&mut self, rng: &mut StdRng, bytes: usize) -> usize {
        let at = (self.used + rng.random_range(0..3) * 8).next_multiple_of(8);
        self.used = at + bytes;
        assert!(self.used <= self.cpu.len() * 8, "arena too small");
        self.base() + at
    }
    pub fn put(&mut self, addr: usize, dtype: DType, v: Value) {
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
pub enum Value {
    Num(f64),
    Bits(u64),
}

/// An input value: mostly moderate numbers, some at or next to an f16/bf16 rounding midpoint,
/// some random bit patterns (NaN, infinities, subnormals, huge values).
pub fn value(rng: &mut StdRng) -> Value {
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
pub fn matrix(
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
pub struct Tally {
    pub passes: BTreeMap<String, usize>,
}

impl Tally {
    pub fn pass(&mut self, emu: &mut Emu, nonempty: bool, what: &str) {
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
pub fn same_memory(ar: &Arena, outputs: &[(usize, DType)], what: &str) {
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

pub fn s2(addr: usize, dtype: DType, rs: usize, cs: usize, bs: usize) -> Strided2d {
    Strided2d { addr, dtype, row_stride: rs, col_stride: cs, batch_stride: bs }
}
