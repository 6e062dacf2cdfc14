//! Operand memory: every operand in one arena, in its own region between guards, filled with
//! input values (and poison elsewhere); the descriptors passed to the library; views for
//! reading results back.

use std::ffi::c_void;
use std::ptr::{null, null_mut};

use osft::ffi::osft_matrix;
use osft::{bf16, f16};

use super::input::Src;
use super::operands::*;

/// All operands' memory: regions between guards, in one allocation.
pub(super) struct Arena {
    pub(super) buf: Vec<u64>,
    pub(super) starts: Vec<usize>,
    pub(super) lens: Vec<usize>,
}

impl Arena {
    pub(super) fn bytes(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr() as *const u8, self.buf.len() * 8) }
    }
    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr() as *mut u8, self.buf.len() * 8) }
    }
    /// Byte offset of a descriptor's first element in the arena.
    pub(super) fn at(&self, d: &Desc) -> Option<usize> {
        match d.data {
            Data::Region { id, off } => Some(self.starts[id] + off),
            Data::Null => None,
        }
    }
}

pub(super) fn build(p: &Problem, src: &mut Src) -> Arena {
    let n = p.descs.len();
    let mut lens = vec![8usize; n];
    for d in &p.descs {
        if let (Data::Region { id, off }, Some(e)) = (d.data, extent(&d.m)) {
            if e.saturating_add(off as u128) <= CAP {
                lens[id] = lens[id].max(off + e as usize);
            }
        }
    }
    let mut starts = vec![0; n];
    let mut pos = GUARD;
    for i in 0..n {
        pos = pos.div_ceil(64) * 64;
        starts[i] = pos;
        pos += lens[i] + GUARD;
    }
    let total = (pos + GUARD).div_ceil(8);
    let mut a = Arena { buf: vec![0u64; total], starts, lens };
    a.bytes_mut().fill(POISON);
    // Input values, element by element (gaps keep the poison).
    for d in &p.descs {
        if d.role == Role::Out || !plausible(d) {
            continue;
        }
        let Some(base) = a.at(d) else { continue };
        for (_, _, _, off) in elements(&d.m) {
            let v = src.value();
            put(a.bytes_mut(), base + off, d.m.dtype, v);
        }
    }
    for &i in &p.nonfinite {
        let d = &p.descs[i];
        let els = elements(&d.m);
        if let (Some(base), false) = (a.at(d), els.is_empty()) {
            let (_, _, _, off) = els[src.below(els.len())];
            let v = src.pick(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY]);
            put(a.bytes_mut(), base + off, d.m.dtype, v);
        }
    }
    a
}

pub(super) fn put(bytes: &mut [u8], at: usize, dtype: i32, v: f64) {
    match dtype {
        F32 => bytes[at..at + 4].copy_from_slice(&(v as f32).to_ne_bytes()),
        F64 => bytes[at..at + 8].copy_from_slice(&v.to_ne_bytes()),
        F16 => bytes[at..at + 2].copy_from_slice(&f16::from_f64(v).to_bits().to_ne_bytes()),
        BF16 => bytes[at..at + 2].copy_from_slice(&bf16::from_f64(v).to_bits().to_ne_bytes()),
        _ => {}
    }
}

pub(super) fn get(bytes: &[u8], at: usize, dtype: i32) -> f64 {
    match dtype {
        F32 => f32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as f64,
        F64 => f64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap()),
        F16 => f16::from_bits(u16::from_ne_bytes(bytes[at..at + 2].try_into().unwrap())).to_f64(),
        BF16 => bf16::from_bits(u16::from_ne_bytes(bytes[at..at + 2].try_into().unwrap())).to_f64(),
        _ => f64::NAN,
    }
}

/// The descriptor as passed to the library (data pointer into the arena).
pub(super) fn cdesc(a: &mut Arena, d: &Desc) -> osft_matrix {
    let mut m = d.m;
    m.data = match a.at(d) {
        Some(off) => unsafe { (a.buf.as_mut_ptr() as *mut u8).add(off) as *mut c_void },
        None => null_mut(),
    };
    m
}

/// Descriptor pointers for a call: `None` descriptor or an absent one is NULL.
pub(super) struct Ptrs {
    pub(super) ms: Vec<osft_matrix>,
}
impl Ptrs {
    pub(super) fn new(a: &mut Arena, p: &Problem) -> Self {
        Ptrs { ms: p.descs.iter().map(|d| cdesc(a, d)).collect() }
    }
    pub(super) fn get(&self, p: &Problem, i: Option<usize>) -> *const osft_matrix {
        match i {
            Some(i) if !p.descs[i].absent => &self.ms[i],
            _ => null(),
        }
    }
}

/// Logical matrix view over a byte snapshot, for references.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    bytes: &'a [u8],
    base: usize,
    pub(super) m: osft_matrix,
}
impl View<'_> {
    pub(super) fn at(&self, b: usize, i: usize, j: usize) -> f64 {
        let b = if self.m.batch == 1 { 0 } else { b };
        let off = b * self.m.batch_stride as usize + i * self.m.row_stride as usize + j * self.m.col_stride as usize;
        get(self.bytes, self.base + off * esize(self.m.dtype), self.m.dtype)
    }
    pub(super) fn rows(&self) -> usize {
        self.m.rows as usize
    }
    pub(super) fn cols(&self) -> usize {
        self.m.cols as usize
    }
    /// Element `t` of a vector (`len x 1` or `1 x len`).
    pub(super) fn v(&self, b: usize, t: usize) -> f64 {
        if self.m.cols == 1 {
            self.at(b, t, 0)
        } else {
            self.at(b, 0, t)
        }
    }
    pub(super) fn dense(&self, b: usize) -> Vec<Vec<f64>> {
        (0..self.rows()).map(|i| (0..self.cols()).map(|j| self.at(b, i, j)).collect()).collect()
    }
}

pub(super) fn view<'a>(bytes: &'a [u8], a: &Arena, d: &Desc) -> View<'a> {
    View { bytes, base: a.at(d).unwrap(), m: d.m }
}
