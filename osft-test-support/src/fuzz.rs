//! Structured fuzz harness over the osft C ABI (CPU backend), shared by the cargo-fuzz targets in
//! `fuzz/fuzz_targets/` (the fuzz crate depends on this one) and by the deterministic in-repo
//! fuzzer `tests/hardening_fuzz.rs`. It uses nothing but `osft`, std, and, for the in-repo
//! fuzzer's inputs only ([`random_input`]), the test generator.
//!
//! One input (any byte string) is read as a sequence of choices: the op's shapes, dtypes, layouts
//! (row-/column-major, padded, strided with gaps, batch-innermost), batch counts and broadcasts,
//! `k`, the compute type, a caller workspace or none, then optional *mutations* (a field set to
//! an interesting value such as 0, -1, 2^62, i64::MIN; a NULL or misaligned pointer; a pointer
//! into another operand; an unknown enum value; a short result array). An exhausted input reads
//! as zeros, which selects the first (valid, unmutated) option everywhere, so the empty input is a
//! valid call.
//!
//! Every operand lives in one arena, each in its own region between 64-byte guards; bytes between
//! the elements of strided layouts stay poisoned too. After the call the harness checks:
//! - no crash, no panic across the boundary, never `OSFT_STATUS_PRECONDITION` or `INTERNAL`,
//!   a message exactly when the status is not OK;
//! - on a rejected call, not one byte of the arena, of the result arrays, or of `*bytes` changed;
//! - on success, only the elements of the outputs changed (guards, gaps and inputs intact);
//! - an accepted call had no output sharing memory with an input or another output, except an
//!   identical descriptor where the library takes one (in-place projection; `W` of the SVD and
//!   decomposition) — see `src/fuzz/aliasing.rs`;
//! - an unmutated call (valid by construction) succeeds — or reports `NON_FINITE` when NaN/Inf
//!   was injected into a matrix to be factored, `WORKSPACE_TOO_SMALL` for a short caller workspace;
//! - results match float64 references computed here (loose tolerances: the point is layouts).
//!
//! Descriptors are only given memory they describe: a mutation that would make a descriptor
//! plausible (one the library could accept) but larger than what the harness can allocate is
//! undone, so every accepted call touches harness memory only — except where the library
//! itself is wrong, which is what this is for.

#![allow(clippy::too_many_arguments, clippy::needless_range_loop, clippy::type_complexity)]
// `!(a <= b)` on purpose: NaN must fail the comparison.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use std::ffi::{c_void, CStr};
use std::ptr::{null, null_mut};

use osft::ffi::osft_status::*;
use osft::ffi::*;
use osft::{bf16, f16};

use crate::rng::{seeded, Draw, Rng};

mod aliasing;
use aliasing::{writable, Access};

/// The fuzzed operations (fuzz target names).
pub const OPS: [&str; 7] = ["svd", "decompose", "project", "two_phase", "reconstruct", "diagnostics", "desc"];

/// Run one input against op `op` (an index into [`OPS`]); panics with a description of the call
/// on any violation.
pub fn run(op: usize, data: &[u8]) {
    let mut src = Src::new(data);
    let r = CTX.with(|c| {
        let ctx = c.0;
        let r = match op {
            0 => op_svd(&mut src, ctx),
            1 => op_decompose(&mut src, ctx),
            2 => op_project(&mut src, ctx),
            3 => op_two_phase(&mut src, ctx),
            4 => op_reconstruct(&mut src, ctx),
            5 => op_diagnostics(&mut src, ctx),
            _ => op_desc(&mut src, ctx),
        };
        // Never leave a caller workspace behind (its memory is gone); sometimes drop the cache.
        unsafe { osft_context_release_workspace(ctx) };
        r
    });
    if let Err(e) = r {
        panic!("osft fuzz violation in `{}`: {e}", OPS[op.min(OPS.len() - 1)]);
    }
}

struct CtxHandle(*mut osft_context);
impl Drop for CtxHandle {
    fn drop(&mut self) {
        unsafe { osft_context_destroy(self.0) }
    }
}
thread_local! {
    static CTX: CtxHandle = {
        let mut c = null_mut();
        let st = unsafe { osft_context_create(osft_backend::OSFT_BACKEND_CPU as i32, 0, &mut c) };
        assert_eq!(st, OSFT_STATUS_OK);
        CtxHandle(c)
    };
}

type R = Result<(), String>;

// =============================================================================================
// Reading choices.

/// The input as a stream of choices; reads past the end give 0.
pub struct Src<'a> {
    d: &'a [u8],
    i: usize,
}

impl<'a> Src<'a> {
    pub fn new(d: &'a [u8]) -> Self {
        Src { d, i: 0 }
    }
    fn u8(&mut self) -> u8 {
        let v = self.d.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        v
    }
    /// Uniform-ish in `0..n` (0 when exhausted).
    fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        if n <= 256 {
            self.u8() as usize % n
        } else {
            (self.u8() as usize | (self.u8() as usize) << 8) % n
        }
    }
    /// True with probability `p / 256`; false when exhausted.
    fn chance(&mut self, p: u8) -> bool {
        (self.u8() as u16) + (p as u16) > 255
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    fn i64(&mut self) -> i64 {
        let mut v = 0u64;
        for _ in 0..8 {
            v = v << 8 | self.u8() as u64;
        }
        v as i64
    }
    /// A data value: a multiple of 1/64 in [-2, 2), exact in every dtype.
    fn value(&mut self) -> f64 {
        (self.u8() as i8) as f64 / 64.0
    }
}

// =============================================================================================
// Descriptors, regions, the arena.

const GUARD: usize = 64;
/// Largest region the harness allocates for one operand.
const CAP: u128 = 1 << 16;
/// Guards, gaps and outputs start as all-ones bytes: NaN in every dtype, so that an output read
/// before it is written shows.
const POISON: u8 = 0xFF;

const F32: i32 = 0;
const F64: i32 = 1;
const F16: i32 = 2;
const BF16: i32 = 3;

fn esize(dtype: i32) -> usize {
    match dtype {
        F32 => 4,
        F64 => 8,
        F16 | BF16 => 2,
        _ => 8,
    }
}

fn dname(dtype: i32) -> &'static str {
    match dtype {
        F32 => "f32",
        F64 => "f64",
        F16 => "f16",
        BF16 => "bf16",
        _ => "bad",
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    In,
    Out,
    /// Read and written (in-place projection's X, two-phase apply's X).
    InOut,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Data {
    /// Byte offset `off` into region `id`.
    Region {
        id: usize,
        off: usize,
    },
    Null,
}

#[derive(Clone, Copy, Debug)]
struct Desc {
    name: &'static str,
    role: Role,
    m: osft_matrix,
    data: Data,
    /// Passed as a NULL descriptor pointer.
    absent: bool,
}

fn mat(dtype: i32, rows: i64, cols: i64, rs: i64, cs: i64, batch: i64, bs: i64) -> osft_matrix {
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
fn extent(m: &osft_matrix) -> Option<u128> {
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
fn plausible(d: &Desc) -> bool {
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
fn elements(m: &osft_matrix) -> Vec<(usize, usize, usize, usize)> {
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
fn layout(src: &mut Src, rows: usize, cols: usize, batch: usize, dtype: i32, blas: bool) -> osft_matrix {
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
fn vector(src: &mut Src, len: usize, batch: usize, dtype: i32) -> osft_matrix {
    if src.chance(128) {
        layout(src, 1, len, batch, dtype, false)
    } else {
        layout(src, len, 1, batch, dtype, false)
    }
}

fn any_dtype(src: &mut Src) -> i32 {
    src.pick(&[F32, F64, F16, BF16])
}

fn compute_type(src: &mut Src) -> i32 {
    src.pick(&[F32, F64])
}

/// The operands of one call and what was done to them.
struct Problem {
    descs: Vec<Desc>,
    /// Some argument was made invalid on purpose (or may have been): no success expected.
    mutated: bool,
    log: Vec<String>,
    /// Indices of descriptors into which NaN/Inf was injected.
    nonfinite: Vec<usize>,
    /// Whether a mutation may pass a descriptor as NULL (not for arrays of descriptors).
    allow_absent: bool,
}

impl Problem {
    fn new() -> Self {
        Problem { descs: vec![], mutated: false, log: vec![], nonfinite: vec![], allow_absent: true }
    }

    fn add(&mut self, name: &'static str, role: Role, m: osft_matrix) -> usize {
        let id = self.descs.len();
        self.descs.push(Desc { name, role, m, data: Data::Region { id, off: 0 }, absent: false });
        id
    }

    fn note(&mut self, s: String) {
        self.mutated = true;
        self.log.push(s);
    }

    /// With probability `p / 256`, apply 1-2 mutations to the descriptors in `which`.
    fn mutate(&mut self, src: &mut Src, which: &[usize], p: u8) {
        if which.is_empty() || !src.chance(p) {
            return;
        }
        let n = 1 + src.below(2);
        for _ in 0..n {
            let i = src.pick(which);
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

    fn mutate_one(&mut self, src: &mut Src, i: usize) {
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

    /// Inject NaN or +-Inf into one element of descriptor `i` (done after `build`).
    fn want_nonfinite(&mut self, src: &mut Src, i: usize, p: u8) {
        if src.chance(p) {
            self.nonfinite.push(i);
        }
    }

    fn describe(&self) -> String {
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

/// All operands' memory: regions between guards, in one allocation.
struct Arena {
    buf: Vec<u64>,
    starts: Vec<usize>,
    lens: Vec<usize>,
}

impl Arena {
    fn bytes(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr() as *const u8, self.buf.len() * 8) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr() as *mut u8, self.buf.len() * 8) }
    }
    /// Byte offset of a descriptor's first element in the arena.
    fn at(&self, d: &Desc) -> Option<usize> {
        match d.data {
            Data::Region { id, off } => Some(self.starts[id] + off),
            Data::Null => None,
        }
    }
}

fn build(p: &Problem, src: &mut Src) -> Arena {
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

fn put(bytes: &mut [u8], at: usize, dtype: i32, v: f64) {
    match dtype {
        F32 => bytes[at..at + 4].copy_from_slice(&(v as f32).to_ne_bytes()),
        F64 => bytes[at..at + 8].copy_from_slice(&v.to_ne_bytes()),
        F16 => bytes[at..at + 2].copy_from_slice(&f16::from_f64(v).to_bits().to_ne_bytes()),
        BF16 => bytes[at..at + 2].copy_from_slice(&bf16::from_f64(v).to_bits().to_ne_bytes()),
        _ => {}
    }
}

fn get(bytes: &[u8], at: usize, dtype: i32) -> f64 {
    match dtype {
        F32 => f32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as f64,
        F64 => f64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap()),
        F16 => f16::from_bits(u16::from_ne_bytes(bytes[at..at + 2].try_into().unwrap())).to_f64(),
        BF16 => bf16::from_bits(u16::from_ne_bytes(bytes[at..at + 2].try_into().unwrap())).to_f64(),
        _ => f64::NAN,
    }
}

/// The descriptor as passed to the library (data pointer into the arena).
fn cdesc(a: &mut Arena, d: &Desc) -> osft_matrix {
    let mut m = d.m;
    m.data = match a.at(d) {
        Some(off) => unsafe { (a.buf.as_mut_ptr() as *mut u8).add(off) as *mut c_void },
        None => null_mut(),
    };
    m
}

/// Descriptor pointers for a call: `None` descriptor or an absent one is NULL.
struct Ptrs {
    ms: Vec<osft_matrix>,
}
impl Ptrs {
    fn new(a: &mut Arena, p: &Problem) -> Self {
        Ptrs { ms: p.descs.iter().map(|d| cdesc(a, d)).collect() }
    }
    fn get(&self, p: &Problem, i: Option<usize>) -> *const osft_matrix {
        match i {
            Some(i) if !p.descs[i].absent => &self.ms[i],
            _ => null(),
        }
    }
}

/// Logical matrix view over a byte snapshot, for references.
#[derive(Clone, Copy)]
struct View<'a> {
    bytes: &'a [u8],
    base: usize,
    m: osft_matrix,
}
impl View<'_> {
    fn at(&self, b: usize, i: usize, j: usize) -> f64 {
        let b = if self.m.batch == 1 { 0 } else { b };
        let off = b * self.m.batch_stride as usize + i * self.m.row_stride as usize + j * self.m.col_stride as usize;
        get(self.bytes, self.base + off * esize(self.m.dtype), self.m.dtype)
    }
    fn rows(&self) -> usize {
        self.m.rows as usize
    }
    fn cols(&self) -> usize {
        self.m.cols as usize
    }
    /// Element `t` of a vector (`len x 1` or `1 x len`).
    fn v(&self, b: usize, t: usize) -> f64 {
        if self.m.cols == 1 {
            self.at(b, t, 0)
        } else {
            self.at(b, 0, t)
        }
    }
    fn dense(&self, b: usize) -> Vec<Vec<f64>> {
        (0..self.rows()).map(|i| (0..self.cols()).map(|j| self.at(b, i, j)).collect()).collect()
    }
}

fn view<'a>(bytes: &'a [u8], a: &Arena, d: &Desc) -> View<'a> {
    View { bytes, base: a.at(d).unwrap(), m: d.m }
}

// =============================================================================================
// The checks.

fn msg() -> String {
    unsafe { CStr::from_ptr(osft_last_error_message()) }.to_string_lossy().into_owned()
}

thread_local! {
    /// Calls checked on this thread: (succeeded, rejected), by status code.
    static STATS: std::cell::RefCell<[u64; 18]> = const { std::cell::RefCell::new([0; 18]) };
}

/// Calls checked on this thread so far, by status code (index = `osft_status` value).
pub fn stats() -> [u64; 18] {
    STATS.with(|s| *s.borrow())
}

/// Status sanity: never a bug status; a message exactly when failing.
fn check_status(st: osft_status, what: &str) -> R {
    STATS.with(|s| s.borrow_mut()[(st as usize).min(17)] += 1);
    let m = msg();
    if matches!(st, OSFT_STATUS_PRECONDITION | OSFT_STATUS_INTERNAL) && known_bug(what, st, &m).is_none() {
        return Err(format!("{what}: {st:?} ({m})"));
    }
    if (st == OSFT_STATUS_OK) != m.is_empty() {
        return Err(format!("{what}: status {st:?} with message {m:?}"));
    }
    Ok(())
}

/// On a rejected call nothing may change — except the outputs when the rejection is a tolerated
/// known bug that strikes mid-call (see [`known_bug`]).
fn fail_mask(a: &Arena, p: &Problem, outs: &[usize], st: osft_status, what: &str) -> Option<Vec<bool>> {
    known_bug(what, st, &msg()).map(|_| writable(a, p, outs))
}

/// Compare the arena with its snapshot: only bytes in `mask` may differ.
fn check_writes(before: &[u8], a: &Arena, p: &Problem, mask: Option<&[bool]>, what: &str) -> R {
    let after = a.bytes();
    for (k, (x, y)) in before.iter().zip(after).enumerate() {
        if x != y && !mask.is_some_and(|m| m[k]) {
            // Name the place.
            let mut place = "a guard".to_string();
            for (id, (&s, &l)) in a.starts.iter().zip(&a.lens).enumerate() {
                if (s..s + l).contains(&k) {
                    let owner: Vec<_> = p
                        .descs
                        .iter()
                        .filter(|d| matches!(d.data, Data::Region { id: r, .. } if r == id))
                        .map(|d| d.name)
                        .collect();
                    place = format!("region {id} ({}) at byte {}", owner.join("/"), k - s);
                } else if (s + l..s + l + GUARD).contains(&k) {
                    place = format!("the guard after region {id} at byte {}", k - s - l);
                }
            }
            let kind = if mask.is_some() { "wrote outside its outputs" } else { "was rejected but wrote" };
            return Err(format!("{what} {kind}: {place} changed {x:#04x} -> {y:#04x}"));
        }
    }
    Ok(())
}

/// A caller workspace between guards, or none.
struct CallerWs {
    buf: Vec<u64>,
    bytes: usize,
}
const WS_GUARD: usize = 64;

impl CallerWs {
    fn new(bytes: usize) -> Self {
        let mut w = CallerWs { buf: vec![0; (bytes + 2 * WS_GUARD).div_ceil(8)], bytes };
        let all = unsafe { std::slice::from_raw_parts_mut(w.buf.as_mut_ptr() as *mut u8, w.buf.len() * 8) };
        all.fill(0xFF); // NaN in every dtype: scratch read before written shows
        w
    }
    fn ptr(&mut self) -> *mut c_void {
        unsafe { (self.buf.as_mut_ptr() as *mut u8).add(WS_GUARD) as *mut c_void }
    }
    fn guards_intact(&self) -> bool {
        let all = unsafe { std::slice::from_raw_parts(self.buf.as_ptr() as *const u8, self.buf.len() * 8) };
        all[..WS_GUARD].iter().chain(&all[WS_GUARD + self.bytes..]).all(|b| *b == 0xFF)
    }
}

/// How the workspace is provided: by the context (0), exactly the queried size (1), one byte
/// less (2), or none at all (3). Returns the caller workspace and whether it may be too small.
fn set_workspace(
    src: &mut Src,
    ctx: *mut osft_context,
    queried: Option<usize>,
) -> Result<(Option<CallerWs>, bool), String> {
    let mode = if src.chance(64) { 1 + src.below(3) } else { 0 };
    let Some(q) = queried else { return Ok((None, false)) };
    let (bytes, short) = match mode {
        0 => return Ok((None, false)),
        1 => (q, false),
        2 => (q.saturating_sub(1 + src.below(64)), q > 0),
        _ => (0, q > 0),
    };
    let mut ws = CallerWs::new(bytes);
    let p = if bytes == 0 && src.chance(128) { null_mut() } else { ws.ptr() };
    let st = unsafe { osft_context_set_workspace(ctx, p, bytes) };
    check_status(st, "osft_context_set_workspace")?;
    if st != OSFT_STATUS_OK {
        return Err(format!("set_workspace({bytes}) failed: {st:?} {}", msg()));
    }
    Ok((Some(ws), short))
}

fn ws_done(ws: &Option<CallerWs>, what: &str) -> R {
    if let Some(w) = ws {
        if !w.guards_intact() {
            return Err(format!("{what} wrote outside the caller workspace ({} bytes)", w.bytes));
        }
    }
    Ok(())
}

/// Run a workspace-size query: `bytes` must be untouched on failure.
fn query(what: &str, f: impl FnOnce(*mut usize) -> osft_status) -> Result<(osft_status, Option<usize>), String> {
    let sentinel = 0xDEAD_BEEF_usize;
    let mut b = sentinel;
    let st = f(&mut b);
    check_status(st, what)?;
    if st != OSFT_STATUS_OK && b != sentinel {
        return Err(format!("{what} failed ({st:?}) but wrote *bytes = {b}"));
    }
    Ok((st, (st == OSFT_STATUS_OK).then_some(b)))
}

/// Known library bugs, each with an `#[ignore = "bug: ..."]` test in `tests/hardening.rs`, are
/// tolerated (so that fuzzing goes on past them) unless `OSFT_FUZZ_STRICT=1`. Remove an entry
/// when its bug is fixed.
fn known_bug(what: &str, st: osft_status, m: &str) -> Option<&'static str> {
    if std::env::var("OSFT_FUZZ_STRICT").is_ok_and(|v| v == "1") {
        return None;
    }
    // No known bug at present (the ones found so far are guarded by the `regression_*` tests in
    // tests/hardening.rs). An entry:
    //     if st == OSFT_STATUS_PRECONDITION && m.contains("...") { return Some("what"); }
    let _ = (what, st, m);
    None
}

/// What an unmutated call must return.
fn expect_ok(st: osft_status, p: &Problem, short_ws: bool, nonfinite_ok: bool, what: &str) -> R {
    if p.mutated || st == OSFT_STATUS_OK || known_bug(what, st, &msg()).is_some() {
        return Ok(());
    }
    if short_ws && st == OSFT_STATUS_WORKSPACE_TOO_SMALL {
        return Ok(());
    }
    if nonfinite_ok && !p.nonfinite.is_empty() && st == OSFT_STATUS_NON_FINITE {
        return Ok(());
    }
    Err(format!("{what}: a valid call was rejected: {st:?} ({})", msg()))
}

/// A result array of `need` doubles plus a tail that must stay untouched.
struct Results {
    v: Vec<f64>,
    len: usize,
}
const RES_POISON: u64 = 0x7ff8_dead_beef_0001;
impl Results {
    fn new(src: &mut Src, p: &mut Problem, need: usize) -> Self {
        let extra = 3;
        let mut len = need + src.below(2);
        if src.chance(16) {
            len = need.saturating_sub(1);
            p.note(format!("out_len = {len} < {need}"));
        }
        Results { v: vec![f64::from_bits(RES_POISON); need + extra], len }
    }
    fn ptr(&mut self, p: &mut Problem, src: &mut Src) -> *mut f64 {
        if src.chance(8) {
            p.note("out = NULL".into());
            return null_mut();
        }
        self.v.as_mut_ptr()
    }
    /// Untouched entirely (`written = 0`) or beyond the first `written` entries.
    fn check(&self, written: usize, what: &str) -> R {
        for (i, x) in self.v.iter().enumerate().skip(written) {
            if x.to_bits() != RES_POISON {
                return Err(format!("{what}: result entry {i} written ({x}) beyond the {written} it may write"));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Numerical references (float64, naive).

type M = Vec<Vec<f64>>;

/// `a b` with `m` columns (explicit, so that an empty inner dimension gives zeros).
fn matmul(a: &M, b: &M, m: usize) -> M {
    let (n, k) = (a.len(), b.len());
    (0..n).map(|i| (0..m).map(|j| (0..k).map(|t| a[i][t] * b[t][j]).sum()).collect()).collect()
}
fn transpose(a: &M, cols: usize) -> M {
    (0..cols).map(|j| a.iter().map(|r| r[j]).collect()).collect()
}
fn sub(a: &M, b: &M) -> M {
    a.iter().zip(b).map(|(x, y)| x.iter().zip(y).map(|(p, q)| p - q).collect()).collect()
}
fn frob(a: &M) -> f64 {
    a.iter().flatten().map(|v| v * v).sum::<f64>().sqrt()
}

/// Unit roundoff of a dtype.
fn eps(dtype: i32) -> f64 {
    match dtype {
        F64 => 1.2e-16,
        F32 => 6e-8,
        F16 => 4.9e-4,
        _ => 3.9e-3,
    }
}

/// Smallest positive (subnormal) value of a dtype: below half of it, rounding gives 0.
fn tiny(dtype: i32) -> f64 {
    match dtype {
        F64 => f64::from_bits(1),
        F32 => f32::from_bits(1) as f64,
        F16 => 5.960464477539063e-8, // 2^-24
        _ => 9.183549615799121e-41,  // bf16: 2^-133
    }
}

fn close(got: &M, want: &M, scale: f64, tol: f64, what: &str) -> R {
    let d = frob(&sub(got, want));
    let spoiled = got.iter().flatten().zip(want.iter().flatten()).any(|(g, w)| !g.is_finite() && w.is_finite());
    if spoiled || d > tol * scale.max(1e-300) && d > 1e-300 {
        return Err(format!("{what}: result off by {d:.3e} (scale {scale:.3e}, tolerance {tol:.1e})\n      got  {got:?}\n      want {want:?}"));
    }
    Ok(())
}

fn nearly(got: f64, want: f64, tol: f64, what: &str) -> R {
    if !((got - want).abs() <= tol * want.abs().max(1.0)) {
        return Err(format!("{what}: {got} but the reference is {want} (tolerance {tol:.1e})"));
    }
    Ok(())
}

// =============================================================================================
// The ops.

/// SVD of one matrix or a strided batch, or a list of differently shaped problems.
fn op_svd(src: &mut Src, ctx: *mut osft_context) -> R {
    let count = if src.chance(48) { 1 + src.below(3) } else { 0 }; // 0: osft_svd
    let compute = compute_type(src);
    let mut p = Problem::new();
    p.allow_absent = count == 0;
    let (no_u, no_vt) = (count > 0 && src.chance(64), count > 0 && src.chance(64));
    let mut probs = vec![];
    for _ in 0..count.max(1) {
        let (n, m, b) = (1 + src.below(7), 1 + src.below(7), 1 + src.below(3));
        let r = n.min(m);
        let wdt = any_dtype(src);
        let lw = layout(src, n, m, b, wdt, false);
        let w = p.add("W", Role::In, lw);
        let with_u = if count > 0 { !no_u } else { src.chance(192) };
        let with_vt = if count > 0 { !no_vt } else { src.chance(192) };
        let dt = any_dtype(src);
        let lu = layout(src, n, r, b, dt, false);
        let u = p.add("U", Role::Out, lu);
        let dt = any_dtype(src);
        let ls = vector(src, r, b, dt);
        let s = p.add("S", Role::Out, ls);
        let dt = any_dtype(src);
        let lv = layout(src, r, m, b, dt, false);
        let vt = p.add("Vt", Role::Out, lv);
        p.want_nonfinite(src, w, 16);
        probs.push((w, with_u.then_some(u), s, with_vt.then_some(vt)));
    }
    let all: Vec<usize> = (0..p.descs.len()).collect();
    p.mutate(src, &all, 48);
    let mut compute = compute;
    if src.chance(8) {
        compute = src.pick(&[F16, BF16, -1, 7]);
        p.note(format!("compute = {compute}"));
    }
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let before = a.bytes().to_vec();
    let outs: Vec<usize> = probs.iter().flat_map(|(_, u, s, vt)| [*u, Some(*s), *vt]).flatten().collect();

    let (st, q) = if count == 0 {
        let (w, ..) = probs[0];
        query("osft_svd_workspace_size", |b| unsafe {
            osft_svd_workspace_size(ctx, ptrs.get(&p, Some(w)), compute, b)
        })?
    } else {
        // The list form takes arrays: copy the descriptors into contiguous arrays.
        let ws: Vec<osft_matrix> = probs.iter().map(|t| ptrs.ms[t.0]).collect();
        query("osft_svd_list_workspace_size", |b| unsafe {
            osft_svd_list_workspace_size(ctx, count, ws.as_ptr(), compute, b)
        })?
    };
    expect_ok(st, &p, false, false, "svd workspace query")?;
    let (ws, short) = set_workspace(src, ctx, q)?;
    let st = if count == 0 {
        let (w, u, s, vt) = probs[0];
        unsafe {
            osft_svd(ctx, ptrs.get(&p, Some(w)), ptrs.get(&p, u), ptrs.get(&p, Some(s)), ptrs.get(&p, vt), compute)
        }
    } else {
        let arr = |f: &dyn Fn(&(usize, Option<usize>, usize, Option<usize>)) -> usize| -> Vec<osft_matrix> {
            probs.iter().map(|t| ptrs.ms[f(t)]).collect()
        };
        let (ws_, ss) = (arr(&|t| t.0), arr(&|t| t.2));
        let (us, vts) =
            (if no_u { vec![] } else { arr(&|t| t.1.unwrap()) }, if no_vt { vec![] } else { arr(&|t| t.3.unwrap()) });
        unsafe {
            osft_svd_list(
                ctx,
                count,
                ws_.as_ptr(),
                if no_u { null() } else { us.as_ptr() },
                ss.as_ptr(),
                if no_vt { null() } else { vts.as_ptr() },
                compute,
            )
        }
    };
    let what = format!(
        "{} (compute {compute}){}",
        if count == 0 { "osft_svd".to_string() } else { format!("osft_svd_list of {count}") },
        p.describe()
    );
    check_status(st, &what)?;
    ws_done(&ws, &what)?;
    expect_ok(st, &p, short, true, &what)?;
    // An output may be the identical descriptor of its own problem's W (W is staged first).
    let mut access = Access::new(&outs, &probs.iter().map(|t| t.0).collect::<Vec<_>>());
    for &(w, u, s, vt) in &probs {
        for o in [u, Some(s), vt].into_iter().flatten() {
            access = access.same_ok(o, w);
        }
    }
    access.refused_if_aliased(st, &a, &p, &what)?;
    let partial = st == OSFT_STATUS_NON_FINITE && short;
    if st == OSFT_STATUS_OK {
        check_writes(&before, &a, &p, Some(&access.writable(&a, &p)), &what)?;
    } else if partial {
        check_writes(&before, &a, &p, Some(&writable(&a, &p, &outs)), &what)?;
    } else {
        check_writes(&before, &a, &p, fail_mask(&a, &p, &outs, st, &what).as_deref(), &what)?;
    }
    if st == OSFT_STATUS_OK && !p.mutated && count == 0 {
        let (w, u, s, vt) = probs[0];
        let after = a.bytes().to_vec();
        let dts: Vec<i32> = [u, Some(s), vt].iter().flatten().map(|i| p.descs[*i].m.dtype).collect();
        check_factors(&p, &a, &before, &after, w, u, s, vt, None, compute, &dts, &what)?;
    }
    Ok(())
}

/// Check `W = U diag(S) Vt` per batch entry, `S` descending and non-negative, `||S|| = ||W||`.
/// With `split`, the factors are `[U_high U_low]` etc. (decompose); `None` descriptors skip parts.
fn check_factors(
    p: &Problem,
    a: &Arena,
    before: &[u8],
    after: &[u8],
    w: usize,
    u: Option<usize>,
    s: usize,
    vt: Option<usize>,
    split: Option<(usize, Option<usize>, usize, Option<usize>)>,
    compute: i32,
    out_dtypes: &[i32],
    what: &str,
) -> R {
    let wv = view(before, a, &p.descs[w]);
    let (n, m, b) = (wv.rows(), wv.cols(), p.descs[w].m.batch as usize);
    let r = n.min(m);
    let tol =
        30.0 * (1.0 + r as f64) * out_dtypes.iter().chain([&compute]).map(|d| eps(*d)).fold(0.0, f64::max).max(1e-13);
    for e in 0..b {
        let wd = wv.dense(e);
        let wn = frob(&wd);
        // Gather S, U, Vt (concatenated for decompose).
        let vec_of = |i: usize| {
            let v = view(after, a, &p.descs[i]);
            let len = (v.m.rows * v.m.cols) as usize;
            (0..len).map(|t| v.v(e, t)).collect::<Vec<f64>>()
        };
        let mut sv = vec_of(s);
        // Where S_high and S_low end: the pair across it was rounded to two output dtypes.
        let boundary = sv.len();
        let mut um: Option<M> = u.map(|i| view(after, a, &p.descs[i]).dense(e));
        let mut vm: Option<M> = vt.map(|i| view(after, a, &p.descs[i]).dense(e));
        if let Some((_, ul, sl, vl)) = split {
            sv.extend(vec_of(sl));
            um = match (um, ul) {
                (Some(h), Some(l)) => {
                    let lo = view(after, a, &p.descs[l]).dense(e);
                    Some(
                        h.into_iter()
                            .zip(lo)
                            .map(|(mut x, y)| {
                                x.extend(y);
                                x
                            })
                            .collect(),
                    )
                }
                _ => None,
            };
            vm = match (vm, vl) {
                (Some(mut h), Some(l)) => {
                    h.extend(view(after, a, &p.descs[l]).dense(e));
                    Some(h)
                }
                _ => None,
            };
        }
        if sv.len() != r {
            return Err(format!("{what}: {} singular values for R = {r}", sv.len()));
        }
        // Descending, exactly within each part (rounding to one dtype keeps order); across the
        // split the two parts may have different output dtypes (e.g. S_high f16, S_low f32), and
        // rounding each side to its own dtype may invert the pair by at most both roundings:
        // a relative half-ulp each, plus each dtype's smallest subnormal (a tiny high value
        // flushed to 0 in f16 below a tiny low one kept in f32).
        let slack = |a: f64, b: f64| {
            let (dh, dl) = (p.descs[s].m.dtype, split.map_or(p.descs[s].m.dtype, |(_, _, sl, _)| p.descs[sl].m.dtype));
            2.0 * (eps(dh) + eps(dl)) * a.max(b) + tiny(dh) + tiny(dl)
        };
        let ordered = sv.windows(2).enumerate().all(|(i, x)| {
            if split.is_some() && i + 1 == boundary {
                x[0] >= x[1] - slack(x[0], x[1])
            } else {
                x[0] >= x[1]
            }
        });
        if !ordered || sv.iter().any(|x| !(*x >= 0.0)) {
            return Err(format!("{what}: batch {e}: singular values not descending and non-negative: {sv:?}"));
        }
        let ss = sv.iter().map(|x| x * x).sum::<f64>().sqrt();
        nearly(ss, wn, tol, &format!("{what}: batch {e}: ||S|| vs ||W||"))?;
        if let (Some(um), Some(vm)) = (um, vm) {
            let us: M = um.iter().map(|row| row.iter().zip(&sv).map(|(x, s)| x * s).collect()).collect();
            let rec = matmul(&us, &vm, m);
            close(&rec, &wd, wn, tol, &format!("{what}: batch {e}: U S Vt vs W"))?;
            let utu = matmul(&transpose(&um, r), &um, r);
            let eye: M = (0..r).map(|i| (0..r).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect();
            // Singular vectors of (near-)zero singular values are arbitrary but still orthonormal.
            close(&utu, &eye, 1.0, tol * 10.0, &format!("{what}: batch {e}: U^T U vs I"))?;
        }
    }
    Ok(())
}

/// Decompose at `k` into up to six parts.
fn op_decompose(src: &mut Src, ctx: *mut osft_context) -> R {
    let (n, m, b) = (1 + src.below(7), 1 + src.below(7), 1 + src.below(3));
    let r = n.min(m);
    let k = src.below(r + 1);
    let compute = compute_type(src);
    let mut p = Problem::new();
    let wdt = any_dtype(src);
    let lw = layout(src, n, m, b, wdt, false);
    let w = p.add("W", Role::In, lw);
    let part = |p: &mut Problem,
                src: &mut Src,
                name: &'static str,
                rows: usize,
                cols: usize,
                vecn: Option<usize>|
     -> Option<usize> {
        if !src.chance(200) {
            return None;
        }
        let dt = any_dtype(src);
        let l = match vecn {
            Some(len) => vector(src, len, b, dt),
            None => layout(src, rows, cols, b, dt, false),
        };
        Some(p.add(name, Role::Out, l))
    };
    let uh = part(&mut p, src, "U_high", n, k, None);
    let sh = part(&mut p, src, "S_high", 0, 0, Some(k));
    let vh = part(&mut p, src, "V_high", k, m, None);
    let ul = part(&mut p, src, "U_low", n, r - k, None);
    let sl = part(&mut p, src, "S_low", 0, 0, Some(r - k));
    let vl = part(&mut p, src, "V_low", r - k, m, None);
    p.want_nonfinite(src, w, 16);
    let all: Vec<usize> = (0..p.descs.len()).collect();
    p.mutate(src, &all, 48);
    let mut kk = k as i64;
    if src.chance(12) {
        kk = src.pick(&[-1, r as i64 + 1, i64::MAX, i64::MIN, (r + 5) as i64]);
        p.note(format!("k = {kk}"));
    }
    let mut compute = compute;
    if src.chance(8) {
        compute = src.pick(&[F16, BF16, -1, 7]);
        p.note(format!("compute = {compute}"));
    }
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let before = a.bytes().to_vec();
    let (st, q) = query("osft_decompose_workspace_size", |bp| unsafe {
        osft_decompose_workspace_size(ctx, ptrs.get(&p, Some(w)), compute, bp)
    })?;
    expect_ok(st, &p, false, false, "decompose workspace query")?;
    let (ws, short) = set_workspace(src, ctx, q)?;
    let g = |i| ptrs.get(&p, i);
    let st = unsafe { osft_decompose(ctx, g(Some(w)), kk, g(uh), g(sh), g(vh), g(ul), g(sl), g(vl), compute) };
    let what = format!("osft_decompose (k {kk}, compute {compute}){}", p.describe());
    check_status(st, &what)?;
    ws_done(&ws, &what)?;
    expect_ok(st, &p, short, true, &what)?;
    let outs: Vec<usize> = [uh, sh, vh, ul, sl, vl].into_iter().flatten().collect();
    // Any output may be the identical descriptor of W (W is staged first); nothing else aliases.
    let access = outs.iter().fold(Access::new(&outs, &[w]), |acc, &o| acc.same_ok(o, w));
    access.refused_if_aliased(st, &a, &p, &what)?;
    if st == OSFT_STATUS_OK {
        check_writes(&before, &a, &p, Some(&access.writable(&a, &p)), &what)?;
    } else if st == OSFT_STATUS_NON_FINITE && short {
        check_writes(&before, &a, &p, Some(&writable(&a, &p, &outs)), &what)?;
    } else {
        check_writes(&before, &a, &p, fail_mask(&a, &p, &outs, st, &what).as_deref(), &what)?;
    }
    if st == OSFT_STATUS_OK && !p.mutated {
        if let (Some(sh), Some(sl)) = (sh, sl) {
            let after = a.bytes().to_vec();
            let dts: Vec<i32> = outs.iter().map(|i| p.descs[*i].m.dtype).collect();
            let (u, v) = match (uh, vh, ul, vl) {
                (Some(_), Some(_), Some(_), Some(_)) => (uh, vh),
                _ => (None, None),
            };
            check_factors(&p, &a, &before, &after, w, u, sh, v, Some((0, ul, sl, vl)), compute, &dts, &what)?;
        }
    }
    Ok(())
}

/// Projection through `osft_project` or a projector, left / right / both, in or out of place.
fn op_project(src: &mut Src, ctx: *mut osft_context) -> R {
    let side = src.below(3) as i32;
    let use_projector = src.chance(80);
    let strategy = if use_projector { src.below(3) as i32 } else { 0 };
    let cached = strategy == 2;
    let dim = |src: &mut Src| if src.chance(16) { 0 } else { 1 + src.below(7) };
    let (n, m) = (dim(src), dim(src));
    let b = 1 + src.below(3);
    let dt = if cached { compute_type(src) } else { any_dtype(src) };
    let mut p = Problem::new();
    let lx = layout(src, n, m, b, dt, false);
    let x = p.add("X", Role::InOut, lx);
    let left = side != 1;
    let right = side != 0;
    let basis =
        |p: &mut Problem, src: &mut Src, name: &'static str, want: bool, rows: usize, cols: usize| -> Option<usize> {
            if !want && !src.chance(32) {
                return None; // an unused basis is sometimes passed anyway (it is ignored)
            }
            let bb = if cached || src.chance(128) { 1 } else { b };
            let l = layout(src, rows, cols, bb, dt, cached);
            Some(p.add(name, Role::In, l))
        };
    let ku = src.below(n + 1);
    let kv = src.below(m + 1);
    let u = basis(&mut p, src, "U_high", left, n, ku);
    let v = basis(&mut p, src, "V_high", right, kv, m);
    let out = if src.chance(128) {
        let l = layout(src, n, m, b, dt, false);
        Some(p.add("out", Role::Out, l))
    } else {
        None
    };
    if out.is_some() {
        p.descs[x].role = Role::In;
    }
    let all: Vec<usize> = (0..p.descs.len()).collect();
    p.mutate(src, &all, 48);
    let mut side_arg = side;
    if src.chance(8) {
        side_arg = src.pick(&[3, -1, i32::MAX]);
        p.note(format!("side = {side_arg}"));
    }
    let mut strategy_arg = strategy;
    if use_projector && src.chance(8) {
        strategy_arg = src.pick(&[3, -1]);
        p.note(format!("strategy = {strategy_arg}"));
    }
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let before = a.bytes().to_vec();
    let g = |i| ptrs.get(&p, i);
    // In place when `out` is absent (or was made a NULL descriptor by a mutation).
    let target = out.filter(|o| !p.descs[*o].absent).unwrap_or(x);
    let mut what = format!(
        "{} (side {side_arg}{}){}",
        if use_projector { "osft_projector_create/apply" } else { "osft_project" },
        if use_projector { format!(", strategy {strategy_arg}") } else { String::new() },
        p.describe()
    );
    let (st, short, ws) = if use_projector {
        let sentinel = 0x1234usize as *mut osft_projector;
        let mut h = sentinel;
        let st = unsafe { osft_projector_create(ctx, side_arg, g(u), g(v), strategy_arg, &mut h) };
        check_status(st, &what)?;
        if st != OSFT_STATUS_OK {
            if h != sentinel {
                return Err(format!("{what}: rejected projector_create wrote *out"));
            }
            expect_ok(st, &p, false, false, &what)?;
            return check_writes(&before, &a, &p, None, &what);
        }
        let (mut l, mut r) = (-7, -7);
        unsafe { osft_projector_strategies(h, &mut l, &mut r) };
        what += &format!("\n    strategies: left {l}, right {r}");
        // No workspace query for projectors: a caller workspace is not tried here.
        let st = unsafe { osft_projector_apply(h, g(Some(x)), g(out)) };
        unsafe { osft_projector_destroy(h) };
        (st, false, None)
    } else {
        let (st, q) = query("osft_project_workspace_size", |bp| unsafe {
            osft_project_workspace_size(ctx, side_arg, g(u), g(v), g(Some(x)), g(out), bp)
        })?;
        expect_ok(st, &p, false, false, &format!("project workspace query{what}"))?;
        let (ws, short) = set_workspace(src, ctx, q)?;
        let st = unsafe { osft_project(ctx, side_arg, g(u), g(v), g(Some(x)), g(out)) };
        (st, short, ws)
    };
    check_status(st, &what)?;
    ws_done(&ws, &what)?;
    expect_ok(st, &p, short, false, &what)?;
    // The bases the side reads (all of them for an unknown side, which is refused anyway), and X
    // when the result goes elsewhere: `out` may be X's identical descriptor (in place), nothing
    // else may share memory with what is written.
    let mut ins: Vec<usize> =
        [if side_arg != 1 { u } else { None }, if side_arg != 0 { v } else { None }].into_iter().flatten().collect();
    if target != x {
        ins.push(x);
    }
    let access = Access::new(&[target], &ins).same_ok(target, x);
    access.refused_if_aliased(st, &a, &p, &what)?;
    if st != OSFT_STATUS_OK {
        return check_writes(&before, &a, &p, fail_mask(&a, &p, &[target], st, &what).as_deref(), &what);
    }
    check_writes(&before, &a, &p, Some(&access.writable(&a, &p)), &what)?;
    if p.mutated {
        return Ok(());
    }
    // Reference: (I - U U^T) X (I - V^T V), per batch entry.
    let after = a.bytes().to_vec();
    let xv = view(&before, &a, &p.descs[x]);
    let ov = view(&after, &a, &p.descs[target]);
    for e in 0..b {
        let xd = xv.dense(e);
        let mut want = xd.clone();
        let mut scale = frob(&xd);
        if left {
            let ud = view(&before, &a, &p.descs[u.unwrap()]).dense(e);
            let coef = matmul(&transpose(&ud, ku), &want, m);
            want = sub(&want, &matmul(&ud, &coef, m));
            scale *= 1.0 + frob(&ud).powi(2);
        }
        if right {
            let vd = view(&before, &a, &p.descs[v.unwrap()]).dense(e);
            let coef = matmul(&want, &transpose(&vd, m), kv);
            want = sub(&want, &matmul(&coef, &vd, m));
            scale *= 1.0 + frob(&vd).powi(2);
        }
        let tol = 16.0 * (1.0 + n.max(m) as f64) * eps(dt).max(eps(F32).min(eps(dt)));
        close(&ov.dense(e), &want, scale, tol, &format!("{what}: batch {e}"))?;
    }
    Ok(())
}

/// Two-phase sharded projection: partial coefficients, then apply.
fn op_two_phase(src: &mut Src, ctx: *mut osft_context) -> R {
    let left = src.below(2) == 0;
    let (rows, cols, b) = (1 + src.below(7), 1 + src.below(7), 1 + src.below(3));
    let k = src.below(5);
    let dt = any_dtype(src);
    let cdt = if (dt == F16 || dt == BF16) && src.chance(160) { F32 } else { dt };
    let mut p = Problem::new();
    let lx = layout(src, rows, cols, b, dt, true);
    let x = p.add("X", Role::InOut, lx);
    let bb = if src.chance(128) { 1 } else { b };
    let (br, bc) = if left { (rows, k) } else { (k, cols) };
    let lb = layout(src, br, bc, bb, dt, true);
    let basis = p.add("basis", Role::In, lb);
    let (cr, cc) = if left { (k, cols) } else { (rows, k) };
    let lc = layout(src, cr, cc, b, cdt, true);
    let coef = p.add("coef", Role::Out, lc);
    let all: Vec<usize> = (0..p.descs.len()).collect();
    p.mutate(src, &all, 48);
    let side = if left { 0 } else { 1 };
    let mut side_arg = side;
    if src.chance(8) {
        side_arg = src.pick(&[2, 3, -1]);
        p.note(format!("side = {side_arg}"));
    }
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let (xp, bp, cp) = (ptrs.get(&p, Some(x)), ptrs.get(&p, Some(basis)), ptrs.get(&p, Some(coef)));
    let g = |i| {
        if i == x {
            xp
        } else if i == basis {
            bp
        } else {
            cp
        }
    };
    // Phase 1: coef is written, X and basis are inputs.
    p.descs[x].role = Role::In;
    let before = a.bytes().to_vec();
    let st = unsafe { osft_project_partial(ctx, side_arg, g(basis), g(x), g(coef)) };
    let what = format!("osft_project_partial (side {side_arg}){}", p.describe());
    check_status(st, &what)?;
    expect_ok(st, &p, false, false, &what)?;
    let access = Access::new(&[coef], &[x, basis]);
    access.refused_if_aliased(st, &a, &p, &what)?;
    if st != OSFT_STATUS_OK {
        check_writes(&before, &a, &p, fail_mask(&a, &p, &[coef], st, &what).as_deref(), &what)?;
    } else {
        check_writes(&before, &a, &p, Some(&access.writable(&a, &p)), &what)?;
        if !p.mutated {
            let after = a.bytes().to_vec();
            for e in 0..b {
                let xd = view(&before, &a, &p.descs[x]).dense(e);
                let bd = view(&before, &a, &p.descs[basis]).dense(e);
                let want =
                    if left { matmul(&transpose(&bd, k), &xd, cols) } else { matmul(&xd, &transpose(&bd, cols), k) };
                let got = view(&after, &a, &p.descs[coef]).dense(e);
                let scale = frob(&xd) * frob(&bd);
                close(
                    &got,
                    &want,
                    scale,
                    16.0 * (1.0 + rows.max(cols) as f64) * eps(dt).max(eps(cdt)),
                    &format!("{what}: batch {e}"),
                )?;
            }
        }
    }
    // Phase 2: X -= basis coef (left) or coef basis (right), with whatever coef now holds.
    p.descs[x].role = Role::InOut;
    p.descs[coef].role = Role::In;
    let before = a.bytes().to_vec();
    let (st, q) = query("osft_project_apply_workspace_size", |bp| unsafe {
        osft_project_apply_workspace_size(ctx, g(coef), g(x), bp)
    })?;
    let what = format!("osft_project_apply (side {side_arg}){}", p.describe());
    expect_ok(st, &p, false, false, &format!("apply workspace query: {what}"))?;
    let (ws, short) = set_workspace(src, ctx, q)?;
    let st = unsafe { osft_project_apply(ctx, side_arg, g(basis), g(coef), g(x)) };
    check_status(st, &what)?;
    ws_done(&ws, &what)?;
    expect_ok(st, &p, short, false, &what)?;
    let access = Access::new(&[x], &[basis, coef]);
    access.refused_if_aliased(st, &a, &p, &what)?;
    if st != OSFT_STATUS_OK {
        return check_writes(&before, &a, &p, fail_mask(&a, &p, &[x], st, &what).as_deref(), &what);
    }
    check_writes(&before, &a, &p, Some(&access.writable(&a, &p)), &what)?;
    if p.mutated {
        return Ok(());
    }
    let after = a.bytes().to_vec();
    for e in 0..b {
        let xd = view(&before, &a, &p.descs[x]).dense(e);
        let bd = view(&before, &a, &p.descs[basis]).dense(e);
        let cd = view(&before, &a, &p.descs[coef]).dense(e);
        // The coefficients are rounded to X's dtype before use.
        let cd: M = cd.iter().map(|r| r.iter().map(|v| round_to(*v, dt)).collect()).collect();
        let want = if left { sub(&xd, &matmul(&bd, &cd, cols)) } else { sub(&xd, &matmul(&cd, &bd, cols)) };
        let got = view(&after, &a, &p.descs[x]).dense(e);
        let scale = frob(&xd) + frob(&bd) * frob(&cd);
        close(&got, &want, scale, 16.0 * (1.0 + k as f64) * eps(dt), &format!("{what}: batch {e}"))?;
    }
    Ok(())
}

fn round_to(v: f64, dt: i32) -> f64 {
    match dt {
        F32 => v as f32 as f64,
        F16 => f16::from_f64(v).to_f64(),
        BF16 => bf16::from_f64(v).to_f64(),
        _ => v,
    }
}

/// One or two terms `U diag(S) V` for reconstruction (and the reconstruction error).
fn terms(src: &mut Src, p: &mut Problem, n: usize, m: usize, b: usize) -> Vec<(usize, usize, usize)> {
    let mut t = vec![];
    let hi = src.chance(220);
    let lo = !hi || src.chance(128);
    for (present, names) in [(hi, ["U_high", "S_high", "V_high"]), (lo, ["U_low", "S_low", "V_low"])] {
        if !present {
            continue;
        }
        let r = src.below(4);
        let tb = if src.chance(128) { 1 } else { b };
        let dt = any_dtype(src);
        let lu = layout(src, n, r, tb, dt, false);
        let u = p.add(names[0], Role::In, lu);
        let dt2 = if src.chance(192) { dt } else { any_dtype(src) };
        let ls = vector(src, r, tb, dt2);
        let s = p.add(names[1], Role::In, ls);
        let lv = layout(src, r, m, tb, dt, false);
        let v = p.add(names[2], Role::In, lv);
        t.push((u, s, v));
    }
    t
}

fn term_ptrs(
    p: &Problem,
    ptrs: &Ptrs,
    t: &[(usize, usize, usize)],
    src: &mut Src,
    note: &mut Vec<String>,
) -> [*const osft_matrix; 6] {
    let mut out = [null(); 6];
    for (u, s, v) in t {
        let base = if p.descs[*u].name == "U_high" { 0 } else { 3 };
        out[base] = ptrs.get(p, Some(*u));
        out[base + 1] = ptrs.get(p, Some(*s));
        out[base + 2] = ptrs.get(p, Some(*v));
    }
    if src.chance(8) {
        // A partial triple.
        let i = src.below(6);
        note.push(format!("term pointer {i} flipped"));
        out[i] = if out[i].is_null() { ptrs.get(p, Some(0)) } else { null() };
    }
    out
}

/// Reference `sum_t U_t diag(S_t) V_t` of batch entry `e`.
fn reference_sum(
    p: &Problem,
    a: &Arena,
    bytes: &[u8],
    t: &[(usize, usize, usize)],
    e: usize,
    n: usize,
    m: usize,
) -> (M, f64) {
    let mut acc: M = vec![vec![0.0; m]; n];
    let mut scale = 0.0;
    for (u, s, v) in t {
        let (uv, sv, vv) = (view(bytes, a, &p.descs[*u]), view(bytes, a, &p.descs[*s]), view(bytes, a, &p.descs[*v]));
        let r = uv.cols();
        let mut tn = 0.0;
        for i in 0..n {
            for j in 0..m {
                let x: f64 = (0..r).map(|q| uv.at(e, i, q) * sv.v(e, q) * vv.at(e, q, j)).sum();
                acc[i][j] += x;
                tn += (0..r).map(|q| (uv.at(e, i, q) * sv.v(e, q) * vv.at(e, q, j)).abs()).sum::<f64>().powi(2);
            }
        }
        scale += tn.sqrt();
    }
    (acc, scale)
}

fn op_reconstruct(src: &mut Src, ctx: *mut osft_context) -> R {
    let (n, m, b) = (1 + src.below(7), 1 + src.below(7), 1 + src.below(3));
    let compute = compute_type(src);
    let mut p = Problem::new();
    let wdt = any_dtype(src);
    let lw = layout(src, n, m, b, wdt, false);
    let w = p.add("W", Role::Out, lw);
    let t = terms(src, &mut p, n, m, b);
    let all: Vec<usize> = (0..p.descs.len()).collect();
    p.mutate(src, &all, 48);
    let mut compute_arg = compute;
    if src.chance(8) {
        compute_arg = src.pick(&[F16, BF16, -1, 7]);
        p.note(format!("compute = {compute_arg}"));
    }
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let mut notes = vec![];
    let tp = term_ptrs(&p, &ptrs, &t, src, &mut notes);
    for n_ in notes {
        p.note(n_);
    }
    let before = a.bytes().to_vec();
    let wp = ptrs.get(&p, Some(w));
    let what = format!("osft_reconstruct (compute {compute_arg}){}", p.describe());
    let (st, q) = query("osft_reconstruct_workspace_size", |bp| unsafe {
        osft_reconstruct_workspace_size(ctx, tp[0], tp[1], tp[2], tp[3], tp[4], tp[5], wp, compute_arg, bp)
    })?;
    expect_ok(st, &p, false, false, &format!("workspace query: {what}"))?;
    let (ws, short) = set_workspace(src, ctx, q)?;
    let st = unsafe { osft_reconstruct(ctx, tp[0], tp[1], tp[2], tp[3], tp[4], tp[5], wp, compute_arg) };
    check_status(st, &what)?;
    ws_done(&ws, &what)?;
    expect_ok(st, &p, short, false, &what)?;
    // The inputs are the descriptors actually passed as terms (a flipped term pointer may pass W
    // itself); none may share memory with W.
    let ins: Vec<usize> = (0..p.descs.len())
        .filter(|&i| {
            let q = ptrs.get(&p, Some(i));
            !q.is_null() && tp.contains(&q)
        })
        .collect();
    let access = Access::new(&[w], &ins);
    access.refused_if_aliased(st, &a, &p, &what)?;
    if st != OSFT_STATUS_OK {
        return check_writes(&before, &a, &p, fail_mask(&a, &p, &[w], st, &what).as_deref(), &what);
    }
    check_writes(&before, &a, &p, Some(&access.writable(&a, &p)), &what)?;
    if p.mutated {
        return Ok(());
    }
    let after = a.bytes().to_vec();
    for e in 0..b {
        let (want, scale) = reference_sum(&p, &a, &before, &t, e, n, m);
        let got = view(&after, &a, &p.descs[w]).dense(e);
        close(&got, &want, scale + frob(&want), 16.0 * (8.0 * eps(compute) + eps(wdt)), &format!("{what}: batch {e}"))?;
    }
    Ok(())
}

fn op_diagnostics(src: &mut Src, ctx: *mut osft_context) -> R {
    match src.below(5) {
        0 => diag_leakage(src, ctx),
        1 => diag_ortho(src, ctx),
        2 => diag_recon_error(src, ctx),
        3 => diag_importance(src, ctx),
        _ => diag_read_vector(src, ctx),
    }
}

/// Shared tail of the diagnostics: a query, the call into a result array, the checks.
fn diag_call(
    src: &mut Src,
    ctx: *mut osft_context,
    p: &mut Problem,
    a: &mut Arena,
    need: usize,
    what: &str,
    q: impl FnOnce(*mut usize) -> osft_status,
    call: impl FnOnce(*mut f64, usize) -> osft_status,
) -> Result<Option<Vec<f64>>, String> {
    let mut res = Results::new(src, p, need);
    let outp = res.ptr(p, src);
    let what = format!("{what}{}", p.describe());
    let before = a.bytes().to_vec();
    let (st, qb) = query("workspace query", q)?;
    expect_ok(st, p, false, false, &format!("workspace query of {what}"))?;
    let (ws, short) = set_workspace(src, ctx, qb)?;
    let st = call(outp, res.len);
    check_status(st, &what)?;
    ws_done(&ws, &what)?;
    expect_ok(st, p, short, false, &what)?;
    // Diagnostics write nothing but the result array.
    check_writes(&before, a, p, None, &what)?;
    if st != OSFT_STATUS_OK {
        res.check(0, &what)?;
        return Ok(None);
    }
    // A mutated batch count changes what may be written: never more than `out_len` entries.
    res.check(if p.mutated { res.len.max(need) } else { need }, &what)?;
    Ok(if p.mutated { None } else { Some(res.v[..need].to_vec()) })
}

fn diag_leakage(src: &mut Src, ctx: *mut osft_context) -> R {
    let left = src.chance(128);
    let (n, m, b) = (src.below(7) + 1, src.below(7) + 1, 1 + src.below(3));
    let k = src.below(5);
    let dt = any_dtype(src);
    let mut p = Problem::new();
    let lx = layout(src, n, m, b, dt, false);
    let x = p.add("X", Role::In, lx);
    let bb = if src.chance(128) { 1 } else { b };
    let (br, bc) = if left { (n, k) } else { (k, m) };
    let lb = layout(src, br, bc, bb, dt, false);
    let basis = p.add("basis", Role::In, lb);
    let all = [x, basis];
    p.mutate(src, &all, 48);
    let side = if left { 0 } else { 1 };
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let (bp, xp) = (ptrs.get(&p, Some(basis)), ptrs.get(&p, Some(x)));
    let need = b;
    let r = diag_call(
        src,
        ctx,
        &mut p,
        &mut a,
        need,
        &format!("osft_leakage (side {side})"),
        |q| unsafe { osft_leakage_workspace_size(ctx, side, bp, xp, q) },
        |o, l| unsafe { osft_leakage(ctx, side, bp, xp, o, l) },
    )?;
    if let Some(vals) = r {
        let bytes = a.bytes().to_vec();
        for e in 0..b {
            let xd = view(&bytes, &a, &p.descs[x]).dense(e);
            let bd = view(&bytes, &a, &p.descs[basis]).dense(e);
            let c = if left { matmul(&transpose(&bd, k), &xd, m) } else { matmul(&xd, &transpose(&bd, m), k) };
            let xn = frob(&xd);
            let want = if xn == 0.0 { 0.0 } else { frob(&c) / xn };
            nearly(
                vals[e],
                want,
                64.0 * eps(dt).max(eps(F32)) * (1.0 + frob(&bd)).powi(2),
                &format!("leakage batch {e}{}", p.describe()),
            )?;
        }
    }
    Ok(())
}

fn diag_ortho(src: &mut Src, ctx: *mut osft_context) -> R {
    let cols = src.chance(128);
    let (n, k, b) = (src.below(7) + 1, src.below(5), 1 + src.below(3));
    let dt = any_dtype(src);
    let mut p = Problem::new();
    let (r, c) = if cols { (n, k) } else { (k, n) };
    let lb = layout(src, r, c, b, dt, false);
    let basis = p.add("basis", Role::In, lb);
    p.mutate(src, &[basis], 48);
    let mut side = if cols { 0 } else { 1 };
    if src.chance(8) {
        side = src.pick(&[2, -1]);
        p.note(format!("side = {side}"));
    }
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let bp = ptrs.get(&p, Some(basis));
    let r = diag_call(
        src,
        ctx,
        &mut p,
        &mut a,
        b,
        &format!("osft_orthonormality_error (side {side})"),
        |q| unsafe { osft_orthonormality_error_workspace_size(ctx, side, bp, q) },
        |o, l| unsafe { osft_orthonormality_error(ctx, side, bp, o, l) },
    )?;
    if let Some(vals) = r {
        let bytes = a.bytes().to_vec();
        for e in 0..b {
            let bd = view(&bytes, &a, &p.descs[basis]).dense(e);
            let bd = if cols { bd } else { transpose(&bd, n) }; // n x k
            let g = matmul(&transpose(&bd, k), &bd, k);
            let eye: M = (0..k).map(|i| (0..k).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect();
            let want = frob(&sub(&g, &eye));
            nearly(
                vals[e],
                want,
                64.0 * eps(dt).max(eps(F32)) * (1.0 + frob(&bd).powi(2)),
                &format!("orthonormality batch {e}{}", p.describe()),
            )?;
        }
    }
    Ok(())
}

fn diag_recon_error(src: &mut Src, ctx: *mut osft_context) -> R {
    let (n, m, b) = (1 + src.below(7), 1 + src.below(7), 1 + src.below(3));
    let compute = compute_type(src);
    let mut p = Problem::new();
    let wdt = any_dtype(src);
    let lw = layout(src, n, m, b, wdt, false);
    let w = p.add("W", Role::In, lw);
    let t = terms(src, &mut p, n, m, b);
    let all: Vec<usize> = (0..p.descs.len()).collect();
    p.mutate(src, &all, 48);
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let mut notes = vec![];
    let tp = term_ptrs(&p, &ptrs, &t, src, &mut notes);
    for n_ in notes {
        p.note(n_);
    }
    let wp = ptrs.get(&p, Some(w));
    let r = diag_call(
        src,
        ctx,
        &mut p,
        &mut a,
        b,
        &format!("osft_reconstruction_error (compute {compute})"),
        |q| unsafe {
            osft_reconstruction_error_workspace_size(ctx, wp, tp[0], tp[1], tp[2], tp[3], tp[4], tp[5], compute, q)
        },
        |o, l| unsafe { osft_reconstruction_error(ctx, wp, tp[0], tp[1], tp[2], tp[3], tp[4], tp[5], compute, o, l) },
    )?;
    if let Some(vals) = r {
        let bytes = a.bytes().to_vec();
        for e in 0..b {
            let (rec, scale) = reference_sum(&p, &a, &bytes, &t, e, n, m);
            let wd = view(&bytes, &a, &p.descs[w]).dense(e);
            let wn = frob(&wd);
            let d = frob(&sub(&wd, &rec));
            let want = if wn == 0.0 { d } else { d / wn };
            let tol = 64.0 * eps(compute) * (1.0 + (scale + wn) / if wn == 0.0 { 1.0 } else { wn });
            if !((vals[e] - want).abs() <= tol * want.max(1.0)) {
                return Err(format!("reconstruction error batch {e}: {} vs reference {want}{}", vals[e], p.describe()));
            }
        }
    }
    Ok(())
}

fn diag_importance(src: &mut Src, ctx: *mut osft_context) -> R {
    let (n, m, s) = (1 + src.below(6), 1 + src.below(6), 1 + src.below(5));
    let b = 1 + src.below(3);
    let (bw, bx) = match src.below(3) {
        0 => (b, b),
        1 => (1, b),
        _ => (b, 1),
    };
    let compute = compute_type(src);
    let mut p = Problem::new();
    let (dw, dx) = (any_dtype(src), any_dtype(src));
    let lw = layout(src, n, m, bw, dw, false);
    let w = p.add("W", Role::In, lw);
    let lx = layout(src, s, m, bx, dx, false);
    let x = p.add("activations", Role::In, lx);
    p.mutate(src, &[w, x], 48);
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let (wp, xp) = (ptrs.get(&p, Some(w)), ptrs.get(&p, Some(x)));
    let need = bw.max(bx);
    let r = diag_call(
        src,
        ctx,
        &mut p,
        &mut a,
        need,
        &format!("osft_layer_importance (compute {compute})"),
        |q| unsafe { osft_layer_importance_workspace_size(ctx, wp, xp, compute, q) },
        |o, l| unsafe { osft_layer_importance(ctx, wp, xp, compute, o, l) },
    )?;
    if let Some(vals) = r {
        let bytes = a.bytes().to_vec();
        let rr = n.min(m);
        for e in 0..need {
            let wd = view(&bytes, &a, &p.descs[w]).dense(e);
            let xd = view(&bytes, &a, &p.descs[x]).dense(e);
            let mut sum = 0.0;
            let mut degenerate = false;
            for row in &xd {
                let y: Vec<f64> = (0..rr).map(|i| (0..m).map(|j| wd[i][j] * row[j]).sum()).collect();
                let dot: f64 = (0..rr).map(|i| row[i] * y[i]).sum();
                let (na, nb) =
                    ((0..rr).map(|i| row[i] * row[i]).sum::<f64>().sqrt(), y.iter().map(|v| v * v).sum::<f64>().sqrt());
                if na * nb < 1e-3 {
                    degenerate = true; // cos of a (near-)zero vector: convention-dependent
                }
                sum += if na * nb == 0.0 { 0.0 } else { dot / (na * nb) };
            }
            if degenerate {
                continue;
            }
            let want = sum / s as f64;
            nearly(vals[e], want, 1e-3, &format!("layer importance batch {e}{}", p.describe()))?;
        }
    }
    Ok(())
}

fn diag_read_vector(src: &mut Src, ctx: *mut osft_context) -> R {
    let (len, b) = (src.below(8), 1 + src.below(3));
    let dt = any_dtype(src);
    let mut p = Problem::new();
    let lv = vector(src, len, b, dt);
    let v = p.add("vector", Role::In, lv);
    p.mutate(src, &[v], 48);
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let vp = ptrs.get(&p, Some(v));
    let r = diag_call(
        src,
        ctx,
        &mut p,
        &mut a,
        len * b,
        "osft_read_vector",
        |q| unsafe { osft_read_vector_workspace_size(ctx, vp, q) },
        |o, l| unsafe { osft_read_vector(ctx, vp, o, l) },
    )?;
    if let Some(vals) = r {
        let bytes = a.bytes().to_vec();
        let vv = view(&bytes, &a, &p.descs[v]);
        for e in 0..b {
            for t in 0..len {
                let want = vv.v(e, t);
                if vals[e * len + t] != want {
                    return Err(format!(
                        "read_vector[{e}][{t}] = {} but the element is {want}{}",
                        vals[e * len + t],
                        p.describe()
                    ));
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Descriptor validation with raw fields, against a model of the documented rules.

/// Statuses the documented rules allow for one descriptor validated as an argument that may be
/// empty (`read_vector_workspace_size`). The data pointer is given as an address.
pub fn model_statuses(m: &osft_matrix, addr: usize) -> Vec<osft_status> {
    use osft_status::*;
    if !(0..=3).contains(&m.dtype) {
        return vec![OSFT_STATUS_DTYPE_UNSUPPORTED];
    }
    if m._reserved != 0
        || !(0..=1).contains(&m.device)
        || (m.device == 0 && m.device_ordinal != 0)
        || (m.device == 1 && m.device_ordinal < 0)
    {
        return vec![OSFT_STATUS_INVALID_ARGUMENT];
    }
    // Conversion order: rows, cols, row_stride, col_stride, batch, batch_stride.
    for (v, stride) in [
        (m.rows, false),
        (m.cols, false),
        (m.row_stride, true),
        (m.col_stride, true),
        (m.batch, false),
        (m.batch_stride, true),
    ] {
        if v < 0 {
            return vec![if stride { OSFT_STATUS_INVALID_STRIDE } else { OSFT_STATUS_INVALID_SHAPE }];
        }
    }
    if m.batch == 0 {
        return vec![OSFT_STATUS_INVALID_SHAPE];
    }
    if m.rows == 0 || m.cols == 0 {
        return vec![OSFT_STATUS_OK];
    }
    if addr == 0 {
        return vec![OSFT_STATUS_NULL_POINTER];
    }
    let size = esize(m.dtype);
    if addr % size != 0 {
        return vec![OSFT_STATUS_MISALIGNED];
    }
    let e = extent(m).unwrap();
    if e > isize::MAX as u128 || addr as u128 + e > usize::MAX as u128 {
        return vec![OSFT_STATUS_OVERFLOW];
    }
    // Injective? Zero strides over an extent > 1 certainly are not; small cases by brute force.
    let dims = [(m.rows, m.row_stride), (m.cols, m.col_stride), (m.batch, m.batch_stride)];
    if dims.iter().any(|(n, s)| *n > 1 && *s == 0) {
        return vec![OSFT_STATUS_OVERLAP];
    }
    // Saturating: three dimensions near 2^60 with unit strides pass the extent check above (for
    // 2-byte dtypes) yet their product exceeds u128 (the fuzzer found this: overflow panic).
    let count = (m.rows as u128).saturating_mul(m.cols as u128).saturating_mul(m.batch as u128);
    if count <= 4096 {
        let mut offs: Vec<u128> = vec![];
        for b in 0..m.batch as u128 {
            for i in 0..m.rows as u128 {
                for j in 0..m.cols as u128 {
                    offs.push(b * m.batch_stride as u128 + i * m.row_stride as u128 + j * m.col_stride as u128);
                }
            }
        }
        offs.sort_unstable();
        if offs.windows(2).any(|w| w[0] == w[1]) {
            return vec![OSFT_STATUS_OVERLAP];
        }
    }
    // Distinct addresses: accepted, or rejected by the (documented, conservative) overlap test.
    vec![OSFT_STATUS_OK, OSFT_STATUS_OVERLAP]
}

fn raw_field(src: &mut Src) -> i64 {
    match src.below(8) {
        0..=3 => src.below(6) as i64,
        4 => src.pick(&[-1, i64::MIN, i64::MAX, 1 << 62, 1 << 61, 1 << 31, 1 << 32, (1 << 40) + 1, -(1 << 62)]),
        5 => src.below(64) as i64,
        _ => src.i64(),
    }
}

fn op_desc(src: &mut Src, ctx: *mut osft_context) -> R {
    // A reserved, never touched address range to point descriptors at: the workspace queries
    // read no data, so any address is fair game; a real buffer for small extents regardless.
    let mut buf = vec![0u64; 64];
    let base = buf.as_mut_ptr() as usize;
    let raw = |src: &mut Src| -> (osft_matrix, usize) {
        let addr = match src.below(6) {
            0 | 1 => base,
            2 => 0,
            3 => base + src.pick(&[1usize, 2, 4]),
            4 => usize::MAX - src.below(64) * 8 - 7,
            _ => (src.i64() as usize) & !7,
        };
        let mut m = mat(
            src.pick(&[F32, F64, F16, BF16, F32, -1, 4]),
            raw_field(src),
            raw_field(src),
            raw_field(src),
            raw_field(src),
            raw_field(src),
            raw_field(src),
        );
        if src.chance(10) {
            m.device = src.pick(&[1, 2, -1]);
        }
        if src.chance(10) {
            m.device_ordinal = src.pick(&[1, -1]);
        }
        if src.chance(10) {
            m._reserved = 1;
        }
        m.data = addr as *mut c_void;
        (m, addr)
    };
    let (d1, a1) = raw(src);
    let (d2, a2) = raw(src);
    // Pairs whose scratch sizes pass 2^64 bytes (tests/hardening.rs:
    // regression_workspace_size_wraps_for_wide_bases) must get OVERFLOW / ALLOCATION_FAILED.
    let _ = a2;
    let compute = src.pick(&[F32, F64, F16, 5]);
    let side = src.pick(&[0, 1, 2, 3]);
    // The documented single-descriptor rules.
    let (st, q) =
        query("osft_read_vector_workspace_size", |b| unsafe { osft_read_vector_workspace_size(ctx, &d1, b) })?;
    let mut allowed = model_statuses(&d1, a1);
    // The query plans the read, so it refuses what the read refuses: a buffer on another device
    // (checked first), then a matrix that is not a vector.
    if let Some(ok) = allowed.iter().position(|s| *s == OSFT_STATUS_OK) {
        let empty = d1.rows == 0 || d1.cols == 0 || d1.batch == 0;
        if !empty && d1.device != 0 {
            allowed[ok] = OSFT_STATUS_DEVICE_MISMATCH;
        } else if d1.rows > 1 && d1.cols > 1 {
            allowed[ok] = OSFT_STATUS_INVALID_SHAPE;
        }
    }
    // A valid vector whose f64 copy cannot exist: the scratch size itself overflows.
    let count = (d1.rows as u128).saturating_mul(d1.cols as u128).saturating_mul(d1.batch as u128);
    if allowed.contains(&OSFT_STATUS_OK) && count.saturating_mul(8) > isize::MAX as u128 {
        allowed.extend([OSFT_STATUS_OVERFLOW, OSFT_STATUS_ALLOCATION_FAILED]);
    }
    if !allowed.contains(&st) {
        return Err(format!(
            "read_vector_workspace_size of {d1:?}: {st:?} ({}), the documented rules allow {allowed:?}",
            msg()
        ));
    }
    if let Some(bytes) = q {
        let len = (d1.rows as u128).saturating_mul(d1.cols as u128).saturating_mul(d1.batch as u128);
        if (bytes as u128) < len.saturating_mul(8) {
            return Err(format!("read_vector_workspace_size of {d1:?}: {bytes} bytes for {len} doubles"));
        }
    }
    // The other queries: no crash, no bug status, *bytes untouched on failure.
    let zero = std::ptr::null::<osft_matrix>();
    let (p1, p2) = (&d1 as *const osft_matrix, &d2 as *const osft_matrix);
    let opt = |c: bool, p: *const osft_matrix| if c { p } else { zero };
    let c1 = src.chance(200);
    let c2 = src.chance(128);
    let list = [d1, d2];
    let what = format!("\n    d1 = {d1:?}\n    d2 = {d2:?}");
    let checks: Vec<(&str, Box<dyn Fn(*mut usize) -> osft_status>)> = vec![
        ("svd_workspace_size", Box::new(|b| unsafe { osft_svd_workspace_size(ctx, p1, compute, b) })),
        (
            "svd_list_workspace_size",
            Box::new(|b| unsafe { osft_svd_list_workspace_size(ctx, 2, list.as_ptr(), compute, b) }),
        ),
        (
            "project_workspace_size",
            Box::new(|b| unsafe {
                osft_project_workspace_size(ctx, side, opt(c1, p2), opt(c2, p2), p1, opt(c2 && c1, p1), b)
            }),
        ),
        ("project_apply_workspace_size", Box::new(|b| unsafe { osft_project_apply_workspace_size(ctx, p2, p1, b) })),
        ("leakage_workspace_size", Box::new(|b| unsafe { osft_leakage_workspace_size(ctx, side, p2, p1, b) })),
        (
            "orthonormality_error_workspace_size",
            Box::new(|b| unsafe { osft_orthonormality_error_workspace_size(ctx, side, p1, b) }),
        ),
        (
            "layer_importance_workspace_size",
            Box::new(|b| unsafe { osft_layer_importance_workspace_size(ctx, p1, p2, compute, b) }),
        ),
        (
            "reconstruct_workspace_size",
            Box::new(|b| unsafe { osft_reconstruct_workspace_size(ctx, p2, p2, p2, zero, zero, zero, p1, compute, b) }),
        ),
        (
            "reconstruction_error_workspace_size",
            Box::new(|b| unsafe {
                osft_reconstruction_error_workspace_size(
                    ctx,
                    p1,
                    opt(c1, p2),
                    opt(c1, p2),
                    opt(c1, p2),
                    opt(!c1, p2),
                    opt(!c1, p2),
                    opt(!c1, p2),
                    compute,
                    b,
                )
            }),
        ),
    ];
    let pick = src.below(checks.len() + 1);
    for (i, (name, f)) in checks.iter().enumerate() {
        if pick < checks.len() && i != pick {
            continue;
        }
        query(name, f).map_err(|e| format!("{e}{what}"))?;
    }
    // A misaligned descriptor pointer.
    if src.chance(16) {
        let mut raw = [0u8; 80];
        let p = unsafe { raw.as_mut_ptr().add(1) } as *mut osft_matrix;
        unsafe { std::ptr::write_unaligned(p, d1) };
        let (st, _) = query("svd_workspace_size (misaligned descriptor)", |b| unsafe {
            osft_svd_workspace_size(ctx, p, compute, b)
        })?;
        if st != OSFT_STATUS_MISALIGNED && (p as usize) % 8 != 0 {
            return Err(format!("a misaligned descriptor pointer gave {st:?}"));
        }
    }
    drop(buf);
    Ok(())
}

/// A pseudo-random input of up to `len` bytes (uniform length, uniform bytes) from the fixed
/// stream [`seeded`]`(seed)`, for the in-repo fuzzer.
pub fn random_input(seed: u64, len: usize) -> Vec<u8> {
    let mut g = seeded(seed);
    let n = g.random_range(0..=len);
    g.bytes(n)
}
