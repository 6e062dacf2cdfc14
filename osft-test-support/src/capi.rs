//! Helpers of the C-ABI tests (`tests/ffi_*.rs`, `tests/hardening_*.rs`): descriptors over Rust
//! vectors, status checks, poisoned buffers, a timeout for calls that must not hang, RSS, and
//! address-space mappings.

use std::ffi::{c_void, CStr};
use std::ptr::null_mut;
use std::sync::mpsc;
use std::time::Duration;

use osft::ffi::osft_status::*;
use osft::ffi::*;

use crate::rng::{seeded, Draw};

pub const F32: i32 = osft_dtype::OSFT_DTYPE_F32 as i32;
pub const F64: i32 = osft_dtype::OSFT_DTYPE_F64 as i32;
pub const F16: i32 = osft_dtype::OSFT_DTYPE_F16 as i32;
pub const BF16: i32 = osft_dtype::OSFT_DTYPE_BF16 as i32;
pub const LEFT: i32 = osft_side::OSFT_SIDE_LEFT as i32;
pub const RIGHT: i32 = osft_side::OSFT_SIDE_RIGHT as i32;
pub const BOTH: i32 = osft_side::OSFT_SIDE_BOTH as i32;

pub fn msg() -> String {
    unsafe { CStr::from_ptr(osft_last_error_message()) }.to_string_lossy().into_owned()
}

/// Assert `st == want`, with a message exactly when failing; returns the message.
#[track_caller]
pub fn expect(st: osft_status, want: osft_status) -> String {
    let m = msg();
    assert_eq!(st, want, "status {st:?} (message: {m:?}), wanted {want:?}");
    assert_eq!(m.is_empty(), want == OSFT_STATUS_OK, "status {st:?} with message {m:?}");
    m
}

pub fn mat<T>(data: *const T, dtype: i32, rows: i64, cols: i64, rs: i64, cs: i64) -> osft_matrix {
    osft_matrix {
        data: data as *mut c_void,
        dtype,
        device: 0,
        device_ordinal: 0,
        _reserved: 0,
        rows,
        cols,
        row_stride: rs,
        col_stride: cs,
        batch: 1,
        batch_stride: 0,
    }
}

/// Row-major `rows x cols` over `v`.
pub fn rm<T>(v: &[T], dtype: i32, rows: i64, cols: i64) -> osft_matrix {
    assert!(v.len() as i64 >= rows * cols);
    mat(v.as_ptr(), dtype, rows, cols, cols, 1)
}

/// Column-major `rows x cols` over `v`.
pub fn cm<T>(v: &[T], dtype: i32, rows: i64, cols: i64) -> osft_matrix {
    assert!(v.len() as i64 >= rows * cols);
    mat(v.as_ptr(), dtype, rows, cols, 1, rows)
}

pub fn batched(mut m: osft_matrix, batch: i64, stride: i64) -> osft_matrix {
    m.batch = batch;
    m.batch_stride = stride;
    m
}

/// A CPU context, destroyed on drop.
pub struct Ctx(pub *mut osft_context);
impl Ctx {
    pub fn cpu() -> Self {
        let mut c = null_mut();
        expect(unsafe { osft_context_create(osft_backend::OSFT_BACKEND_CPU as i32, 0, &mut c) }, OSFT_STATUS_OK);
        Ctx(c)
    }
}
impl Drop for Ctx {
    fn drop(&mut self) {
        unsafe { osft_context_destroy(self.0) }
    }
}
// The handle is used from one thread at a time by these tests, or shared on purpose (the C ABI
// allows a context to be shared: its ops are serialised).
unsafe impl Send for Ctx {}
unsafe impl Sync for Ctx {}

pub fn bytes_of<T>(v: &[T]) -> Vec<u8> {
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }.to_vec()
}

/// Snapshot of several buffers, to show that a rejected call wrote nothing.
pub fn snap(bufs: &[&[u8]]) -> Vec<u8> {
    bufs.concat()
}

/// `len` f32 values with a NaN payload that no computation produces.
pub fn poisoned32(len: usize) -> Vec<f32> {
    vec![f32::from_bits(0x7fc0_dead); len]
}
pub fn poisoned64(len: usize) -> Vec<f64> {
    vec![f64::from_bits(0x7ff8_0000_dead_beef); len]
}

/// Run `f` on another thread; fail if it does not finish within `secs` (a hang).
pub fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => h.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still running after {secs} s (hang)"),
    }
}

/// Resident set size of this process, from /proc/self/statm.
pub fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// An orthonormal `n x k` basis (row-major f64), the top-`k` left singular vectors of a random
/// matrix (the fixed stream [`seeded`]`(seed)`) decomposed through the C ABI.
pub fn basis(ctx: &Ctx, seed: u64, n: usize, k: usize) -> Vec<f64> {
    let m = k.max(1) + 2;
    let w = seeded(seed).uniform_vec(n * m);
    let u = vec![0f64; n * k];
    unsafe {
        expect(
            osft_decompose(
                ctx.0,
                &rm(&w, F64, n as i64, m as i64),
                k as i64,
                &rm(&u, F64, n as i64, k as i64),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                F64,
            ),
            OSFT_STATUS_OK,
        );
    }
    u
}

/// An anonymous read-only mapping of `bytes` of zeros that reserves address space only
/// (`MAP_NORESERVE`; pages read are the shared zero page). `PROT_NONE` with `readable = false`:
/// any access faults.
pub struct Mapping {
    pub ptr: *mut c_void,
    pub len: usize,
}
impl Mapping {
    pub fn new(bytes: usize, readable: bool) -> Option<Self> {
        let prot = if readable { libc::PROT_READ } else { libc::PROT_NONE };
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then_some(Mapping { ptr: p, len: bytes })
    }
}
impl Drop for Mapping {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
