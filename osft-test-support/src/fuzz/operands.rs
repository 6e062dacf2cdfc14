//! The operands of one call: descriptors over arena regions, the layouts generated for them,
//! and the mutations that make a call invalid on purpose.

use std::ptr::null_mut;

use osft::ffi::osft_matrix;

use super::input::Src;

/// Poisoned bytes before and after every region.
pub(super) const GUARD: usize = 64;
/// Largest region the harness allocates for one operand.
pub(super) const CAP: u128 = 1 << 16;
/// Guards, gaps and outputs start as all-ones bytes: NaN in every dtype, so that an output read
/// before it is written shows.
pub(super) const POISON: u8 = 0xFF;

/// The C dtype codes (`osft_dtype`).
pub(super) const F32: i32 = 0;
pub(super) const F64: i32 = 1;
pub(super) const F16: i32 = 2;
pub(super) const BF16: i32 = 3;

pub(super) fn esize(dtype: i32) -> usize {
    match dtype {
        F32 => 4,
        F64 => 8,
        F16 | BF16 => 2,
        _ => 8,
    }
}

pub(super) fn dname(dtype: i32) -> &'static str {
    match dtype {
        F32 => "f32",
        F64 => "f64",
        F16 => "f16",
        BF16 => "bf16",
        _ => "bad",
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Role {
    In,
    Out,
    /// Read and written (in-place projection's X, two-phase apply's X).
    InOut,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Data {
    /// Byte offset `off` into region `id`.
    Region {
        id: usize,
        off: usize,
    },
    Null,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Desc {
    pub(super) name: &'static str,
    pub(super) role: Role,
    pub(super) m: osft_matrix,
    pub(super) data: Data,
    /// Passed as a NULL descriptor pointer.
    pub(super) absent: bool,
}

pub(super) fn mat(dtype: i32, rows: i64, cols: i64, rs: i64, cs: i64, batch: i64, bs: i64) -> osft_matrix {
    osft_matrix {
        data: null_mut(),
        dtype,
        device: 0,
        device_ordinal: 0,
        _reserved: 0,
        rows,
        cols,
        row_stride: rs,
        col_stride: cs,
        batch,
        batch_stride: bs,
    }
}

/// Bytes from the first element to one past the last (0 when empty), or `None` when a field is
/// negative or the batch is 0 (such a descriptor is rejected by conversion or validation).
pub(super) fn extent(m: &osft_matrix) -> Option<u128> {
    if m.rows < 0 || m.cols < 0 || m.batch < 1 || m.row_stride < 0 || m.col_stride < 0 || m.batch_stride < 0 {
        return None;
    }
    if m.rows == 0 || m.cols == 0 {
        return Some(0);
    }
    let max = (m.rows as u128 - 1) * m.row_stride as u128
        + (m.cols as u128 - 1) * m.col_stride as u128
        + (m.batch as u128 - 1) * m.batch_stride as u128;
    Some((max + 1).saturating_mul(esize(m.dtype) as u128))
}

/// Could the library accept this descriptor (and then read or write what it describes)?
pub(super) fn plausible(d: &Desc) -> bool {
    let m = &d.m;
    if !(0..=3).contains(&m.dtype) || m.device != 0 || m.device_ordinal != 0 || m._reserved != 0 {
        return false;
    }
    match extent(m) {
        None => false,
        Some(0) => true,
        Some(e) => match d.data {
            Data::Null => false,
            Data::Region { off, .. } => off % esize(m.dtype) == 0 && e <= isize::MAX as u128,
        },
    }
}

/// Element byte offsets (from the data pointer) of a descriptor with a small extent.
pub(super) fn elements(m: &osft_matrix) -> Vec<(usize, usize, usize, usize)> {
    let mut v = vec![];
    if extent(m).is_none_or(|e| e == 0 || e > CAP) {
        return v;
    }
    // Zero strides keep the extent small for any count: such a descriptor overlaps itself and
    // is rejected; do not enumerate billions of aliases.
    if (m.rows as u128).saturating_mul(m.cols as u128).saturating_mul(m.batch as u128) > CAP {
        return v;
    }
    let s = esize(m.dtype);
    for b in 0..m.batch as usize {
        for i in 0..m.rows as usize {
            for j in 0..m.cols as usize {
                let off = b * m.batch_stride as usize + i * m.row_stride as usize + j * m.col_stride as usize;
                v.push((b, i, j, off * s));
            }
        }
    }
    v
}

/// A layout for a `rows x cols` batch: `blas` restricts to row-/column-major (padded or not).
pub(super) fn layout(src: &mut Src, rows: usize, cols: usize, batch: usize, dtype: i32, blas: bool) -> osft_matrix {
    let (r, c, b) = (rows as i64, cols as i64, batch as i64);
    let kind = src.below(if blas { 4 } else { 6 });
    let pad = src.below(3) as i64;
    let bpad = src.below(3) as i64;
    let (rs, cs, bs) = match kind {
        0 => (c, 1, r * c + bpad),
        1 => (1, r, r * c + bpad),
        2 => (c + pad, 1, r * (c + pad) + bpad),
        3 => (1, r + pad, c * (r + pad) + bpad),
        4 => {
            let cs = 2 + pad;
            (c * cs + 1, cs, r * (c * cs + 1) + bpad)
        }
        _ => (b * c, b, 1),
    };
    mat(dtype, r, c, rs, cs, b, bs)
}

/// A vector of `len` elements: `len x 1` or `1 x len`.
pub(super) fn vector(src: &mut Src, len: usize, batch: usize, dtype: i32) -> osft_matrix {
    if src.chance(128) {
        layout(src, 1, len, batch, dtype, false)
    } else {
        layout(src, len, 1, batch, dtype, false)
    }
}

pub(super) fn any_dtype(src: &mut Src) -> i32 {
    src.pick(&[F32, F64, F16, BF16])
}

pub(super) fn compute_type(src: &mut Src) -> i32 {
    src.pick(&[F32, F64])
}

/// A small `rows x cols` shape (1 to 7 each) and a batch count (1 to 3).
pub(super) fn small_shape(src: &mut Src) -> (usize, usize, usize) {
    (1 + src.below(7), 1 + src.below(7), 1 + src.below(3))
}

/// The operands of one call and what was done to them.
pub(super) struct Problem {
    pub(super) descs: Vec<Desc>,
    /// Some argument was made invalid on purpose (or may have been): no success expected.
    pub(super) mutated: bool,
    pub(super) log: Vec<String>,
    /// Indices of descriptors into which NaN/Inf was injected.
    pub(super) nonfinite: Vec<usize>,
    /// Whether a mutation may pass a descriptor as NULL (not for arrays of descriptors).
    pub(super) allow_absent: bool,
}

impl Problem {
    pub(super) fn new() -> Self {
        Problem { descs: vec![], mutated: false, log: vec![], nonfinite: vec![], allow_absent: true }
    }

    pub(super) fn add(&mut self, name: &'static str, role: Role, m: osft_matrix) -> usize {
        let id = self.descs.len();
        self.descs.push(Desc { name, role, m, data: Data::Region { id, off: 0 }, absent: false });
        id
    }

    pub(super) fn note(&mut self, s: String) {
        self.mutated = true;
        self.log.push(s);
    }

    /// With probability `p / 256`, apply 1-2 mutations to the descriptors.
    pub(super) fn mutate(&mut self, src: &mut Src, p: u8) {
        if self.descs.is_empty() || !src.chance(p) {
            return;
        }
        let n = 1 + src.below(2);
        for _ in 0..n {
            let i = src.below(self.descs.len());
            let before = self.descs[i];
            self.mutate_one(src, i);
            // Undo what would make a plausible descriptor bigger than the harness can allocate.
            let d = self.descs[i];
            let too_big = plausible(&d)
                && match d.data {
                    Data::Region { off, .. } => extent(&d.m).unwrap_or(0).saturating_add(off as u128) > CAP,
                    Data::Null => false,
                };
            if too_big {
                self.descs[i] = before;
                self.log.pop();
            }
        }
        self.mutated = !self.log.is_empty();
    }

    pub(super) fn mutate_one(&mut self, src: &mut Src, i: usize) {
        let interesting = |src: &mut Src, cur: i64| -> i64 {
            match src.below(14) {
                0 => 0,
                1 => -1,
                2 => 1,
                3 => cur.wrapping_add(1),
                4 => cur.wrapping_sub(1),
                5 => cur.wrapping_mul(2),
                6 => i64::MIN,
                7 => i64::MAX,
                8 => 1 << 62,
                9 => (1 << 62) + 1,
                10 => 1 << 32,
                11 => -(1 << 40),
                12 => src.below(9) as i64,
                _ => src.i64(),
            }
        };
        let name = self.descs[i].name;
        let kind = src.below(if self.allow_absent { 15 } else { 14 });
        let m = &mut self.descs[i].m;
        let what = match kind {
            0 => {
                m.rows = interesting(src, m.rows);
                format!("rows = {}", m.rows)
            }
            1 => {
                m.cols = interesting(src, m.cols);
                format!("cols = {}", m.cols)
            }
            2 => {
                m.row_stride = interesting(src, m.row_stride);
                format!("row_stride = {}", m.row_stride)
            }
            3 => {
                m.col_stride = interesting(src, m.col_stride);
                format!("col_stride = {}", m.col_stride)
            }
            4 => {
                m.batch = interesting(src, m.batch);
                format!("batch = {}", m.batch)
            }
            5 => {
                m.batch_stride = interesting(src, m.batch_stride);
                format!("batch_stride = {}", m.batch_stride)
            }
            6 => {
                m.dtype = src.pick(&[-1, 4, 0, 1, 2, 3, i32::MAX, i32::MIN]);
                format!("dtype = {}", m.dtype)
            }
            7 => {
                m.device = src.pick(&[1, 2, -1]);
                format!("device = {}", m.device)
            }
            8 => {
                m.device_ordinal = src.pick(&[1, -1, i32::MAX]);
                format!("device_ordinal = {}", m.device_ordinal)
            }
            9 => {
                m._reserved = src.pick(&[1, -1]);
                format!("_reserved = {}", m._reserved)
            }
            10 => {
                self.descs[i].data = Data::Null;
                "data = NULL".to_string()
            }
            11 => {
                let by = src.pick(&[1usize, 2, 4]);
                if let Data::Region { id, off } = self.descs[i].data {
                    self.descs[i].data = Data::Region { id, off: off + by };
                }
                format!("data misaligned by {by}")
            }
            12 => {
                // Point into another operand's memory (keeping this shape).
                let j = src.below(self.descs.len());
                let delta = src.below(4) * esize(self.descs[j].m.dtype);
                let target = match self.descs[j].data {
                    Data::Region { id, off } => Data::Region { id, off: off + delta },
                    Data::Null => Data::Null,
                };
                self.descs[i].data = target;
                format!("data = &{} + {delta} bytes", self.descs[j].name)
            }
            13 => {
                // The very same descriptor as another operand.
                let j = src.below(self.descs.len());
                let (m2, d2) = (self.descs[j].m, self.descs[j].data);
                self.descs[i].m = m2;
                self.descs[i].data = d2;
                format!("identical to {}", self.descs[j].name)
            }
            _ => {
                self.descs[i].absent = true;
                "NULL descriptor".to_string()
            }
        };
        self.log.push(format!("{name}: {what}"));
    }

    /// With probability `p / 256`, a scalar argument `name` set to one of `bad` instead of `cur`.
    pub(super) fn mutate_arg<T: Copy + std::fmt::Display>(
        &mut self,
        src: &mut Src,
        p: u8,
        name: &str,
        cur: T,
        bad: &[T],
    ) -> T {
        if !src.chance(p) {
            return cur;
        }
        let v = src.pick(bad);
        self.note(format!("{name} = {v}"));
        v
    }

    /// Inject NaN or +-Inf into one element of descriptor `i` (done after `build`).
    pub(super) fn want_nonfinite(&mut self, src: &mut Src, i: usize, p: u8) {
        if src.chance(p) {
            self.nonfinite.push(i);
        }
    }

    pub(super) fn describe(&self) -> String {
        let mut s = String::new();
        for d in &self.descs {
            let m = &d.m;
            s += &format!(
                "\n    {:8} {:?}{} {} {}x{} strides ({}, {}) batch {} stride {} dev {} ord {} res {} data {:?}",
                d.name,
                d.role,
                if d.absent { " (NULL)" } else { "" },
                dname(m.dtype),
                m.rows,
                m.cols,
                m.row_stride,
                m.col_stride,
                m.batch,
                m.batch_stride,
                m.device,
                m.device_ordinal,
                m._reserved,
                d.data
            );
        }
        if !self.log.is_empty() {
            s += &format!("\n    mutations: {}", self.log.join("; "));
        }
        if !self.nonfinite.is_empty() {
            let names: Vec<_> = self.nonfinite.iter().map(|i| self.descs[*i].name).collect();
            s += &format!("\n    NaN/Inf in: {}", names.join(", "));
        }
        s
    }
}
