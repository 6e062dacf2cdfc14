//! The context's workspace over its lifetime, on an executor that logs what happens to its
//! memory: the workspace is freed before the executor is dropped, and while the executor's
//! stream is being captured into a CUDA graph the context never allocates or frees (a call that
//! would need a larger workspace is refused with a message saying how to avoid it; one that
//! fits what the context holds runs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use osft::exec::cpu::CpuExecutor;
use osft::exec::*;
use osft::{Context, Device, Error, MatMut, MatRef, Side};

/// The CPU executor, with a switch that says the stream is capturing and a log of allocations,
/// frees and its own drop.
struct Probe {
    capturing: AtomicBool,
    log: Arc<Mutex<Vec<String>>>,
}

struct Logged {
    _inner: Buffer,
    bytes: usize,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.log.lock().unwrap().push(format!("free {}", self.bytes));
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.log.lock().unwrap().push("executor dropped".into());
    }
}

impl Executor for Probe {
    fn name(&self) -> String {
        "probe".into()
    }
    fn device(&self) -> Device {
        Device::Host
    }
    fn alloc(&self, bytes: usize) -> osft::Result<Buffer> {
        assert!(!self.capturing.load(Ordering::SeqCst), "allocation during capture");
        let inner = CpuExecutor.alloc(bytes)?;
        let addr = inner.addr;
        self.log.lock().unwrap().push(format!("alloc {bytes}"));
        Ok(Buffer::new(addr, bytes, Box::new(Logged { _inner: inner, bytes, log: self.log.clone() })))
    }
    fn is_capturing(&self) -> osft::Result<bool> {
        Ok(self.capturing.load(Ordering::SeqCst))
    }
    unsafe fn read_to_host(&self, src: Addr, dst: &mut [u8]) -> osft::Result<()> {
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.read_to_host(src, dst) }
    }
    unsafe fn write_from_host(&self, src: &[u8], dst: Addr) -> osft::Result<()> {
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.write_from_host(src, dst) }
    }
    fn synchronize(&self) -> osft::Result<()> {
        Ok(())
    }
    unsafe fn gemm_strided_batched(&self, a: &GemmArgs) -> osft::Result<()> {
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.gemm_strided_batched(a) }
    }
    unsafe fn axpby(&self, a: &AxpbyArgs) -> osft::Result<()> {
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.axpby(a) }
    }
    unsafe fn dgmm(&self, a: &DgmmArgs) -> osft::Result<()> {
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.dgmm(a) }
    }
    fn svd_unit_workspace(&self, shape: &SvdUnitShape) -> osft::Result<usize> {
        CpuExecutor.svd_unit_workspace(shape)
    }
    unsafe fn svd_lanes(&self, schedule: &LaneSchedule) -> osft::Result<()> {
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.svd_lanes(schedule) }
    }
    unsafe fn svd_sign_fix(&self, a: &SignFixArgs) -> osft::Result<()> {
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.svd_sign_fix(a) }
    }
    unsafe fn sum_squares(&self, r: usize, c: usize, b: usize, x: &Strided2d) -> osft::Result<Vec<f64>> {
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.sum_squares(r, c, b, x) }
    }
    unsafe fn count_nonfinite(&self, r: usize, c: usize, b: usize, x: &Strided2d) -> osft::Result<Vec<u64>> {
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.count_nonfinite(r, c, b, x) }
    }
    unsafe fn add_diagonal(&self, n: usize, a: &Strided, batch: usize, alpha: f64) -> osft::Result<()> {
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.add_diagonal(n, a, batch, alpha) }
    }
    unsafe fn cosine_sum(&self, a: &Vectors, b: &Vectors, count: usize) -> osft::Result<f64> {
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.cosine_sum(a, b, count) }
    }
}

fn probe() -> (Arc<Probe>, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(vec![]));
    (Arc::new(Probe { capturing: AtomicBool::new(false), log: log.clone() }), log)
}

/// A right-side projection of a row-major `n x m` gradient away from the first `k` unit rows.
fn project(ctx: &Context, n: usize, m: usize, k: usize, x: &mut [f32]) -> osft::Result<()> {
    let mut v = vec![0f32; k * m];
    for i in 0..k {
        v[i * m + i] = 1.0;
    }
    let v = MatRef::row_major(&v, k, m)?;
    ctx.project(Side::Right, None, Some(&v), &mut MatMut::row_major(x, n, m)?)
}

#[test]
fn workspace_is_freed_before_the_executor() {
    let (exec, log) = probe();
    let ctx = Context::with_executor(exec);
    let mut x = vec![1f32; 8 * 6];
    project(&ctx, 8, 6, 3, &mut x).unwrap();
    assert!(log.lock().unwrap().iter().any(|e| e.starts_with("alloc")), "the context allocated no workspace");
    drop(ctx);
    let log = log.lock().unwrap();
    let free = log.iter().position(|e| e.starts_with("free")).expect("workspace never freed");
    let gone = log.iter().position(|e| e == "executor dropped").expect("executor never dropped");
    assert!(free < gone, "the executor was dropped before its workspace was freed: {log:?}");
}

#[test]
fn no_allocation_while_capturing() {
    let (exec, log) = probe();
    let ctx = Context::with_executor(exec.clone());
    // Before capture: a small call sizes the cached workspace.
    let mut x = vec![1f32; 4 * 4];
    project(&ctx, 4, 4, 2, &mut x).unwrap();
    let held = ctx.workspace_bytes();
    assert!(held > 0);
    let allocs = log.lock().unwrap().len();

    exec.capturing.store(true, Ordering::SeqCst);
    // A call that fits what the context holds runs during capture, and allocates nothing.
    let mut y: Vec<f32> = (0..16).map(|i| i as f32).collect();
    project(&ctx, 4, 4, 2, &mut y).unwrap();
    assert_eq!(y[..2], [0.0, 0.0], "the frozen columns were not removed");
    // An op that needs no workspace runs on a fresh context during capture.
    let fresh = Context::with_executor(exec.clone());
    let (v, x) = (vec![1f32, 0.0, 0.0, 0.0], vec![1f32; 8]);
    let mut coef = vec![f32::NAN; 2];
    fresh
        .project_partial(
            Side::Right,
            &MatRef::row_major(&v, 1, 4).unwrap(),
            &MatRef::row_major(&x, 2, 4).unwrap(),
            &mut MatMut::row_major(&mut coef, 2, 1).unwrap(),
        )
        .unwrap();
    assert_eq!(coef, [1.0, 1.0]);
    // A call that needs more is refused before anything is written, saying how to avoid it.
    let mut big = vec![1f32; 64 * 48];
    let before = big.clone();
    match project(&ctx, 64, 48, 32, &mut big) {
        Err(Error::InvalidArgument(msg)) => {
            assert!(msg.contains("captured") && msg.contains("workspace"), "unclear message: {msg}")
        }
        other => panic!("a call needing a larger workspace during capture gave {other:?}"),
    }
    assert_eq!(big, before, "a refused call wrote");
    assert_eq!(log.lock().unwrap().len(), allocs, "the context allocated or freed during capture");
    assert_eq!(ctx.workspace_bytes(), held);

    // A caller workspace set before capture serves the larger call during capture.
    exec.capturing.store(false, Ordering::SeqCst);
    let mut mem = vec![0u8; 1 << 20];
    // SAFETY: `mem` outlives its use by the context below and nothing else uses it.
    unsafe { ctx.set_workspace(mem.as_mut_ptr() as usize, mem.len()) }.unwrap();
    let allocs = log.lock().unwrap().len();
    exec.capturing.store(true, Ordering::SeqCst);
    project(&ctx, 64, 48, 32, &mut big).unwrap();
    assert_eq!(log.lock().unwrap().len(), allocs, "the context allocated during capture");
    assert!(big.chunks(48).all(|row| row[..32].iter().all(|v| *v == 0.0)));
    exec.capturing.store(false, Ordering::SeqCst);
    ctx.release_workspace();
    drop(mem);
}
