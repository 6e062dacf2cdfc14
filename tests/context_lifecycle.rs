//! The context's workspace over its lifetime, on an executor that logs what happens to its
//! memory: the workspace is freed before the executor is dropped, and while the executor's
//! stream is being captured into a CUDA graph the context never allocates or frees (a call that
//! would need a larger workspace is refused with a message saying how to avoid it; one that
//! fits what the context holds runs). Ops that read results back to the host cannot be captured:
//! they are refused during capture before anything is issued, and the capturable ops issue no
//! primitive that waits for the device.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use osft::exec::cpu::CpuExecutor;
use osft::exec::*;
use osft::ops::svd::{SvdOut, SvdProblem};
use osft::{Context, DType, DecomposeOut, Device, Error, FactorsRef, MatMut, MatRef, Side, Strategy};

/// The CPU executor, with a switch that says the stream is capturing and a log of allocations,
/// frees and its own drop.
struct Probe {
    capturing: AtomicBool,
    log: Arc<Mutex<Vec<String>>>,
    /// The primitives issued while capturing.
    issued: Mutex<Vec<&'static str>>,
}

impl Probe {
    fn issue(&self, primitive: &'static str) {
        if self.capturing.load(Ordering::SeqCst) {
            self.issued.lock().unwrap().push(primitive);
        }
    }
}

/// The primitives that wait for the device (they return values to the host, or synchronise).
const WAITING: [&str; 6] = ["read_to_host", "synchronize", "svd_lanes", "sum_squares", "count_nonfinite", "cosine_sum"];

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
        self.issue("read_to_host");
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.read_to_host(src, dst) }
    }
    unsafe fn write_from_host(&self, src: &[u8], dst: Addr) -> osft::Result<()> {
        self.issue("write_from_host");
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.write_from_host(src, dst) }
    }
    fn synchronize(&self) -> osft::Result<()> {
        self.issue("synchronize");
        Ok(())
    }
    unsafe fn gemm_strided_batched(&self, a: &GemmArgs) -> osft::Result<()> {
        self.issue("gemm_strided_batched");
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.gemm_strided_batched(a) }
    }
    unsafe fn axpby(&self, a: &AxpbyArgs) -> osft::Result<()> {
        self.issue("axpby");
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.axpby(a) }
    }
    unsafe fn dgmm(&self, a: &DgmmArgs) -> osft::Result<()> {
        self.issue("dgmm");
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.dgmm(a) }
    }
    fn svd_unit_workspace(&self, shape: &SvdUnitShape) -> osft::Result<usize> {
        CpuExecutor.svd_unit_workspace(shape)
    }
    unsafe fn svd_lanes(&self, schedule: &LaneSchedule) -> osft::Result<()> {
        self.issue("svd_lanes");
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.svd_lanes(schedule) }
    }
    unsafe fn svd_sign_fix(&self, a: &SignFixArgs) -> osft::Result<()> {
        self.issue("svd_sign_fix");
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.svd_sign_fix(a) }
    }
    unsafe fn sum_squares(&self, r: usize, c: usize, b: usize, x: &Strided2d) -> osft::Result<Vec<f64>> {
        self.issue("sum_squares");
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.sum_squares(r, c, b, x) }
    }
    unsafe fn count_nonfinite(&self, r: usize, c: usize, b: usize, x: &Strided2d) -> osft::Result<Vec<u64>> {
        self.issue("count_nonfinite");
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.count_nonfinite(r, c, b, x) }
    }
    unsafe fn add_diagonal(&self, n: usize, a: &Strided, batch: usize, alpha: f64) -> osft::Result<()> {
        self.issue("add_diagonal");
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.add_diagonal(n, a, batch, alpha) }
    }
    unsafe fn cosine_sum(&self, a: &Vectors, b: &Vectors, count: usize) -> osft::Result<f64> {
        self.issue("cosine_sum");
        // SAFETY: forwarded contract.
        unsafe { CpuExecutor.cosine_sum(a, b, count) }
    }
}

fn probe() -> (Arc<Probe>, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(vec![]));
    (Arc::new(Probe { capturing: AtomicBool::new(false), log: log.clone(), issued: Mutex::new(vec![]) }), log)
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

/// Every op during capture: those that read back are refused before issuing anything, with
/// their outputs untouched; the others run (on a workspace sized before the capture) and issue
/// no primitive that waits for the device.
#[test]
fn ops_that_read_back_are_refused_during_capture() {
    let (exec, _log) = probe();
    let ctx = Context::with_executor(exec.clone());
    let (n, m, k) = (6usize, 4usize, 2usize);
    let w: Vec<f32> = (0..n * m).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
    let wv = MatRef::row_major(&w, n, m).unwrap();
    let (mut u, mut s, mut vt) = (vec![f32::NAN; n * m], vec![f32::NAN; m], vec![f32::NAN; m * m]);
    let (mut uh, mut sh, mut vh) = (vec![f32::NAN; n * k], vec![f32::NAN; k], vec![f32::NAN; k * m]);
    let (mut ul, mut sl, mut vl) = (vec![f32::NAN; n * (m - k)], vec![f32::NAN; m - k], vec![f32::NAN; (m - k) * m]);
    // The factors and a gradient, computed before the capture.
    ctx.decompose(
        &wv,
        k,
        &mut DecomposeOut {
            u_high: Some(MatMut::row_major(&mut uh, n, k).unwrap()),
            s_high: Some(MatMut::row_major(&mut sh, k, 1).unwrap()),
            v_high: Some(MatMut::row_major(&mut vh, k, m).unwrap()),
            u_low: Some(MatMut::row_major(&mut ul, n, m - k).unwrap()),
            s_low: Some(MatMut::row_major(&mut sl, m - k, 1).unwrap()),
            v_low: Some(MatMut::row_major(&mut vl, m - k, m).unwrap()),
        },
        DType::F32,
    )
    .unwrap();
    let (uhv, vhv) = (MatRef::row_major(&uh, n, k).unwrap(), MatRef::row_major(&vh, k, m).unwrap());
    let high = || FactorsRef { u: uhv, s: MatRef::row_major(&sh, k, 1).unwrap(), v: vhv };
    let low = || FactorsRef {
        u: MatRef::row_major(&ul, n, m - k).unwrap(),
        s: MatRef::row_major(&sl, m - k, 1).unwrap(),
        v: MatRef::row_major(&vl, m - k, m).unwrap(),
    };
    let mut g = w.clone();
    let mut rec = vec![0f32; n * m];
    let mut coef = vec![0f32; n * k];
    let capturable = |ctx: &Context, g: &mut [f32], rec: &mut [f32], coef: &mut [f32]| -> osft::Result<()> {
        let gv = MatRef::row_major(&w, n, m)?;
        ctx.project(Side::Both, Some(&uhv), Some(&vhv), &mut MatMut::row_major(g, n, m)?)?;
        ctx.reconstruct(Some(high()), Some(low()), &mut MatMut::row_major(rec, n, m)?, DType::F32)?;
        ctx.project_partial(Side::Left, &uhv, &gv, &mut MatMut::row_major(coef, k, m)?)?;
        ctx.project_apply(Side::Left, &uhv, &MatRef::row_major(coef, k, m)?, &mut MatMut::row_major(g, n, m)?)?;
        let p = ctx.projector(Side::Right, None, Some(&vhv), Strategy::Coefficient)?;
        p.apply(ctx, &mut MatMut::row_major(g, n, m)?)
    };
    // Before the capture: every capturable op once, so the context's workspace is large enough.
    capturable(&ctx, &mut g, &mut rec, &mut coef).unwrap();

    exec.capturing.store(true, Ordering::SeqCst);
    let refused = |what: &str, r: osft::Result<Vec<f64>>| match r {
        Err(Error::InvalidArgument(msg)) => {
            assert!(msg.contains("captured") && msg.contains("host"), "{what}: unclear message: {msg}")
        }
        other => panic!("{what} during capture gave {other:?}"),
    };
    let snapshot = [u.clone(), s.clone(), vt.clone()];
    refused(
        "svd",
        ctx.svd(
            &wv,
            Some(&mut MatMut::row_major(&mut u, n, m).unwrap()),
            &mut MatMut::row_major(&mut s, m, 1).unwrap(),
            Some(&mut MatMut::row_major(&mut vt, m, m).unwrap()),
            DType::F32,
        )
        .map(|_| vec![]),
    );
    assert!(snapshot
        .iter()
        .zip([&u, &s, &vt])
        .all(|(a, b)| a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits())));
    let (sd, wd) = (*MatMut::row_major(&mut s, m, 1).unwrap().desc(), *wv.desc());
    // SAFETY: host descriptors of live, borrow-free buffers.
    let list =
        unsafe { ctx.svd_list_raw(&[SvdProblem { w: &wd, out: SvdOut { u: None, s: &sd, vt: None } }], DType::F32) };
    refused("svd_list", list.map(|_| vec![]));
    let mut u2 = vec![f32::NAN; n * k];
    refused(
        "decompose",
        ctx.decompose(
            &wv,
            k,
            &mut DecomposeOut { u_high: Some(MatMut::row_major(&mut u2, n, k).unwrap()), ..Default::default() },
            DType::F32,
        )
        .map(|_| vec![]),
    );
    assert!(u2.iter().all(|x| x.is_nan()), "a refused decomposition wrote");
    refused("leakage", ctx.leakage(Side::Left, &uhv, &wv));
    refused("orthonormality_error", ctx.orthonormality_error(&uhv, true));
    refused("reconstruction_error", ctx.reconstruction_error(&wv, Some(high()), Some(low()), DType::F32));
    refused("layer_importance", ctx.layer_importance(&wv, &MatRef::row_major(&w[..2 * m], 2, m).unwrap(), DType::F32));
    // SAFETY: as above.
    refused("read_vector", unsafe { ctx.read_vector_raw(MatRef::row_major(&sh, k, 1).unwrap().desc()) });
    match ctx.projector(Side::Right, None, Some(&vhv), Strategy::CachedProjector) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("captured"), "unclear message: {msg}"),
        other => panic!("a cached projector built during capture gave {:?}", other.map(|_| ())),
    }
    assert_eq!(*exec.issued.lock().unwrap(), Vec::<&str>::new(), "a refused op issued work during capture");

    // The capturable ops run during capture, and wait for nothing.
    capturable(&ctx, &mut g, &mut rec, &mut coef).unwrap();
    let issued = exec.issued.lock().unwrap().clone();
    assert!(!issued.is_empty(), "the capturable ops issued nothing");
    assert!(issued.iter().all(|p| !WAITING.contains(p)), "a capturable op waited for the device: {issued:?}");
    exec.capturing.store(false, Ordering::SeqCst);
}
