//! The GPU device check (run by scripts/device-check.sh on a machine with an NVIDIA GPU): every
//! op on the CUDA executor against the CPU executor and an f64 reference, over shapes, layouts,
//! dtypes and batches, with outputs poisoned (NaN) beforehand and padding checked afterwards;
//! then the projection step captured in a CUDA graph and replayed. Prints one line per case and
//! a closing `N passed, M failed, K skipped`; exits non-zero on any failure.
//!
//! Also: every explicit SVD algorithm (certificate and S against the f64 construction, the
//! routines' preconditions, the randomized top-k decomposition against the optimal rank-k
//! residual), projection in each math mode against f64 with a tolerance per mode, and
//! `gemm_grouped` (grouped and fallback) against the CPU executor.
//!
//! And `svd_list` over three shapes (one above 32 x 32, two within `gesvdjBatched`'s range) on
//! the grouped path (`gesvd_grouped`: one fork/join over the stream pool per wave), once with the
//! context's own workspace (one wave) and once with a caller workspace of exactly the queried
//! size (several waves), against the CPU executor.
//!
//! `device_check [--quick] [--cpu] [--json PATH]`:
//! - `--quick`: a small subset, for compute-sanitizer;
//! - `--cpu`: the dry run on a machine without a GPU: the same cases with the CPU executor in the
//!   GPU's place, the CUDA-only ones (graph capture) reported as `SKIP ...: skipped: no GPU`;
//! - `--json PATH`: the results as one JSON document, rewritten (to `PATH.tmp`, then renamed)
//!   after every case, so a run that is stopped leaves every case it finished; `"state"` is
//!   `"running"` until the end, then `"complete"`. It also lists the CUDA libraries the process
//!   had loaded (from `/proc/self/maps`).
//!
//! Every case runs under a panic guard (a panic is one failed case, the rest still run), and the
//! contexts are dropped before the process exits (leak checkers see every buffer freed).

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use osft::exec::Buffer;
use osft::exec::{ComputeType, GemmArgs, Op, Strided};
use osft::ops::decompose::Parts;
use osft::ops::project::Bases;
use osft::ops::reconstruct::Term;
use osft::ops::svd::{SvdOut, SvdProblem};
use osft::{bf16, f16, Context, DType, Device, Element, MatDesc, MathMode, Side, Status, SvdAlgorithm};
use osft_test_support::*;

/// A host buffer mirrored in the context's memory (device memory; host memory for `--cpu`).
struct Dev<T: Element> {
    host: Buf<T>,
    buf: Buffer,
    device: Device,
}

impl<T: Element> Dev<T> {
    fn up(ctx: &Context, host: Buf<T>) -> Dev<T> {
        let bytes = host.data.len() * T::DTYPE.size();
        let buf = ctx.executor().alloc(bytes).expect("device alloc");
        // SAFETY: `buf` holds `bytes`; the host slice is that long.
        unsafe {
            ctx.executor().write_from_host(std::slice::from_raw_parts(host.data.as_ptr() as *const u8, bytes), buf.addr)
        }
        .expect("upload");
        Dev { host, buf, device: ctx.executor().device() }
    }
    fn desc(&self) -> MatDesc {
        MatDesc { addr: self.buf.addr, device: self.device, ..self.host.desc }
    }
    /// The device contents, as a host `Buf` with the same layout.
    fn down(&self, ctx: &Context) -> Buf<T> {
        let mut data = self.host.data.clone();
        let bytes = data.len() * T::DTYPE.size();
        // SAFETY: same size as uploaded.
        unsafe {
            ctx.executor()
                .read_to_host(self.buf.addr, std::slice::from_raw_parts_mut(data.as_mut_ptr() as *mut u8, bytes))
        }
        .expect("download");
        let desc = MatDesc { addr: data.as_ptr() as usize, ..self.host.desc };
        Buf { data, desc }
    }
}

/// The cases so far: printed one line each, and kept as JSON in `json` (rewritten after every
/// case).
struct Report {
    passed: usize,
    failed: usize,
    skipped: usize,
    cases: Vec<String>,
    json: Option<PathBuf>,
    /// The document's fixed fields, as JSON members.
    header: String,
    start: Instant,
    last: Instant,
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The CUDA libraries this process has mapped (`/proc/self/maps`), one path each, sorted: which
/// cuBLAS, cuSOLVER, NVRTC and driver were actually loaded. Empty where none was.
fn loaded_cuda_libraries() -> Vec<String> {
    const NAMES: [&str; 8] = [
        "libcuda.",
        "libcublas",
        "libcusolver",
        "libnvrtc",
        "libnvJitLink",
        "libcudart",
        "libcusparse",
        "libnvidia-ptxjit",
    ];
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut libs: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| {
            let file = p.rsplit('/').next().unwrap_or(p);
            NAMES.iter().any(|n| file.starts_with(n))
        })
        .map(str::to_string)
        .collect();
    libs.sort();
    libs.dedup();
    libs
}

impl Report {
    fn new(json: Option<PathBuf>, header: String) -> Report {
        let now = Instant::now();
        let rep = Report { passed: 0, failed: 0, skipped: 0, cases: vec![], json, header, start: now, last: now };
        rep.flush("running");
        rep
    }

    fn case(&mut self, name: &str, ok: bool, detail: String) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        println!("{} {name}: {detail}", if ok { "PASS" } else { "FAIL" });
        self.record(if ok { "pass" } else { "fail" }, name, &detail);
    }

    /// A case that cannot run here (`why` says so: "skipped: no GPU").
    fn skip(&mut self, name: &str, why: &str) {
        self.skipped += 1;
        println!("SKIP {name}: {why}");
        self.record("skip", name, why);
    }

    fn record(&mut self, status: &str, name: &str, detail: &str) {
        let secs = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        self.cases.push(format!(
            "{{\"status\": {}, \"name\": {}, \"detail\": {}, \"seconds\": {secs:.3}}}",
            json_str(status),
            json_str(name),
            json_str(detail)
        ));
        self.flush("running");
    }

    /// Writes the whole document (to `PATH.tmp`, renamed over `PATH`: never half a file).
    fn flush(&self, state: &str) {
        let Some(path) = &self.json else { return };
        let libs: Vec<String> = loaded_cuda_libraries().iter().map(|l| json_str(l)).collect();
        let doc = format!(
            "{{{}, \"state\": {}, \"passed\": {}, \"failed\": {}, \"skipped\": {}, \"seconds\": {:.3},\n \"loaded_libraries\": [{}],\n \"cases\": [\n  {}\n ]}}\n",
            self.header,
            json_str(state),
            self.passed,
            self.failed,
            self.skipped,
            self.start.elapsed().as_secs_f64(),
            libs.join(", "),
            self.cases.join(",\n  ")
        );
        let tmp = path.with_extension("json.tmp");
        if let Err(e) = std::fs::write(&tmp, doc).and_then(|_| std::fs::rename(&tmp, path)) {
            eprintln!("device_check: cannot write {}: {e}", path.display());
        }
    }

    /// Runs one group of cases; a panic in it is one failed case named `label`, and the context
    /// settings a case changes are put back.
    fn guard(&mut self, gpu: &Context, label: &str, f: impl FnOnce(&mut Report)) {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| f(self)));
        if let Err(p) = r {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            gpu.set_svd_algorithm(SvdAlgorithm::Auto);
            gpu.set_math_mode(MathMode::Exact);
            gpu.release_workspace();
            self.case(label, false, format!("panicked: {msg}"));
        }
    }
}

#[allow(clippy::too_many_arguments)] // one case of the sweep: side, shape, batch, layout, placement
fn project_case<T: Element>(
    gpu: &Context,
    cpu: &Context,
    rng: &mut rand::rngs::StdRng,
    rep: &mut Report,
    side: Side,
    n: usize,
    m: usize,
    k: usize,
    batch: usize,
    lx: Layout,
    out: bool,
) {
    let u = orthonormal(rng, n, k.min(n)).round::<T>();
    let v = orthonormal(rng, m, k.min(m)).t().round::<T>();
    let xs: Vec<M> = (0..batch).map(|_| randn(rng, n, m).round::<T>()).collect();
    let name = format!(
        "project {} {side:?} {n}x{m} k={k} batch={batch} {lx:?} {}",
        T::DTYPE.name(),
        if out { "out-of-place" } else { "in-place" }
    );
    // GPU
    let (du, dv, dx) = (
        Dev::up(gpu, Buf::<T>::from(&u, Layout::RowMajor)),
        Dev::up(gpu, Buf::<T>::from(&v, Layout::ColMajor)),
        Dev::up(gpu, Buf::<T>::from_batch(&xs, lx)),
    );
    let dout = out.then(|| Dev::up(gpu, Buf::<T>::poisoned(n, m, batch, Layout::PaddedRow(2))));
    let (ud, vd) = (du.desc(), dv.desc());
    let od = dout.as_ref().map(|o| o.desc());
    let r = unsafe { gpu.project_raw(side, &Bases { u: Some(&ud), v: Some(&vd) }, &dx.desc(), od.as_ref()) };
    if let Err(e) = r {
        return rep.case(&name, false, format!("error {e}"));
    }
    let got = match &dout {
        Some(o) => o.down(gpu),
        None => dx.down(gpu),
    };
    // CPU, same inputs.
    let (mut hu, mut hv, mut hx) =
        (Buf::<T>::from(&u, Layout::RowMajor), Buf::<T>::from(&v, Layout::ColMajor), Buf::<T>::from_batch(&xs, lx));
    let (hud, hvd, hxd) = (hu.desc(), hv.desc(), hx.desc());
    unsafe { cpu.project_raw(side, &Bases { u: Some(&hud), v: Some(&hvd) }, &hxd, None) }.unwrap();
    let tol = 3.0 * u_of(T::DTYPE) + 4.0 * (n.max(m) + k) as f64 * u_of(T::DTYPE.default_compute());
    let (mut worst_ref, mut worst_cpu) = (0.0f64, 0.0f64);
    for (b, x) in xs.iter().enumerate() {
        let mut want = x.clone();
        if side != Side::Right {
            want = want.sub(&u.mul(&u.t().mul(&want)));
        }
        if side != Side::Left {
            want = want.sub(&want.mul(&v.t()).mul(&v));
        }
        let y = got.get(b);
        worst_ref = worst_ref.max(y.sub(&want).fro() / x.fro());
        worst_cpu = worst_cpu.max(y.sub(&hx.get(b)).fro() / x.fro());
    }
    let pad = got.padding_untouched();
    rep.case(
        &name,
        worst_ref <= tol && worst_cpu <= 2.0 * tol && pad,
        format!("vs f64 {worst_ref:.2e}, vs cpu {worst_cpu:.2e}, tol {tol:.1e}, padding untouched {pad}"),
    );
}

/// `n x k` with orthonormal columns, as the test support's `orthonormal` (modified
/// Gram-Schmidt, twice, in f64 on a Gaussian matrix) but over the contiguous rows of the
/// transpose: the same arithmetic, many times faster at the sizes checked here, so that the
/// host-side references do not eat the device check's time.
fn orthonormal(rng: &mut rand::rngs::StdRng, n: usize, k: usize) -> M {
    assert!(k <= n);
    let mut q = randn(rng, k, n); // row j is column j of the result
    for _pass in 0..2 {
        for j in 0..k {
            let (done, rest) = q.d.split_at_mut(j * n);
            let col = &mut rest[..n];
            for prev in done.chunks_exact(n) {
                let dot: f64 = col.iter().zip(prev).map(|(a, b)| a * b).sum();
                col.iter_mut().zip(prev).for_each(|(a, b)| *a -= dot * b);
            }
            let nrm = col.iter().map(|a| a * a).sum::<f64>().sqrt();
            col.iter_mut().for_each(|a| *a /= nrm);
        }
    }
    q.t()
}

fn u_of(d: DType) -> f64 {
    d.unit_roundoff()
}

#[allow(clippy::too_many_arguments)] // one case of the sweep: shape, batch, layout, compute type
fn svd_case<TW: Element, TO: Element>(
    gpu: &Context,
    rng: &mut rand::rngs::StdRng,
    rep: &mut Report,
    n: usize,
    m: usize,
    batch: usize,
    lw: Layout,
    compute: DType,
) {
    let r = n.min(m);
    let ws: Vec<M> = (0..batch).map(|_| randn(rng, n, m).round::<TW>()).collect();
    let name = format!(
        "svd {}->{} compute {} {n}x{m} batch={batch} {lw:?}",
        TW::DTYPE.name(),
        TO::DTYPE.name(),
        compute.name()
    );
    let dw = Dev::up(gpu, Buf::<TW>::from_batch(&ws, lw));
    let (du, ds, dv) = (
        Dev::up(gpu, Buf::<TO>::poisoned(n, r, batch, Layout::RowMajor)),
        Dev::up(gpu, Buf::<TO>::poisoned(r, 1, batch, Layout::ColMajor)),
        Dev::up(gpu, Buf::<TO>::poisoned(r, m, batch, Layout::PaddedCol(1))),
    );
    let (ud, sd, vd) = (du.desc(), ds.desc(), dv.desc());
    let t = Instant::now();
    if let Err(e) = unsafe { gpu.svd_raw(&dw.desc(), &SvdOut { u: Some(&ud), s: &sd, vt: Some(&vd) }, compute) } {
        return rep.case(&name, false, format!("error {e}"));
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let (hu, hs, hv) = (du.down(gpu), ds.down(gpu), dv.down(gpu));
    let tol = 10.0 * n.max(m) as f64 * u_of(compute) + 4.0 * (r as f64).sqrt() * u_of(TO::DTYPE);
    let mut worst = 0.0f64;
    let mut ok = hu.padding_untouched() && hs.padding_untouched() && hv.padding_untouched();
    for (b, w) in ws.iter().enumerate() {
        let (u, s, vt) = (hu.get(b), hs.get(b).d, hv.get(b));
        ok &= s.windows(2).all(|p| p[0] >= p[1]) && s.iter().all(|x| *x >= 0.0);
        let rec = u.mul(&vt.scale_rows(&s)).sub(w).fro() / w.fro();
        worst = worst.max(rec).max(ortho_err_cols(&u)).max(ortho_err_cols(&vt.t()));
        for j in 0..r {
            let col: Vec<f64> = (0..n).map(|i| u.at(i, j)).collect();
            let maxabs = col.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            ok &= col.iter().fold(f64::MIN, |a, v| a.max(*v)) >= maxabs * (1.0 - 4.0 * u_of(TO::DTYPE));
        }
    }
    rep.case(&name, ok && worst <= tol, format!("certificate {worst:.2e} (tol {tol:.1e}), {ms:.2} ms"));
}

fn decompose_reconstruct_case(
    gpu: &Context,
    rng: &mut rand::rngs::StdRng,
    rep: &mut Report,
    n: usize,
    m: usize,
    k: usize,
) {
    let r = n.min(m);
    let w = randn(rng, n, m).round::<bf16>();
    let name = format!("decompose+reconstruct bf16 {n}x{m} k={k}");
    let dw = Dev::up(gpu, Buf::<bf16>::from(&w, Layout::RowMajor));
    let parts: Vec<Dev<f32>> = [(n, k), (k, 1), (k, m), (n, r - k), (r - k, 1), (r - k, m)]
        .iter()
        .map(|(a, b)| Dev::up(gpu, Buf::<f32>::poisoned(*a, *b, 1, Layout::RowMajor)))
        .collect();
    let d: Vec<MatDesc> = parts.iter().map(|p| p.desc()).collect();
    let p = Parts {
        u_high: Some(&d[0]),
        s_high: Some(&d[1]),
        v_high: Some(&d[2]),
        u_low: Some(&d[3]),
        s_low: Some(&d[4]),
        v_low: Some(&d[5]),
    };
    if let Err(e) = unsafe { gpu.decompose_raw(&dw.desc(), k, &p, DType::F32) } {
        return rep.case(&name, false, format!("decompose error {e}"));
    }
    let out = Dev::up(gpu, Buf::<f32>::poisoned(n, m, 1, Layout::ColMajor));
    let terms = [Term { u: &d[0], s: &d[1], v: &d[2] }, Term { u: &d[3], s: &d[4], v: &d[5] }];
    if let Err(e) = unsafe { gpu.reconstruct_raw(&terms, &out.desc(), DType::F32) } {
        return rep.case(&name, false, format!("reconstruct error {e}"));
    }
    let e = out.down(gpu).get(0).sub(&w).fro() / w.fro();
    let host: Vec<M> = parts.iter().map(|p| p.down(gpu).get(0)).collect();
    let cross = host[0].t().mul(&host[3]).fro();
    let diag =
        unsafe { gpu.reconstruction_error_raw(&dw.desc(), &terms, DType::F32) }.map(|v| v[0]).unwrap_or(f64::NAN);
    let tol = 10.0 * n.max(m) as f64 * u_of(DType::F32);
    rep.case(
        &name,
        e <= tol && cross <= tol && (diag - e).abs() <= tol,
        format!("reconstruction {e:.2e}, U_h^T U_l {cross:.2e}, diagnostic {diag:.2e}, tol {tol:.1e}"),
    );
}

fn shard_case(gpu: &Context, rng: &mut rand::rngs::StdRng, rep: &mut Report) {
    let (n, m, k) = (96, 64, 24);
    let u = orthonormal(rng, n, k).round::<bf16>();
    let x = randn(rng, n, m).round::<bf16>();
    let mut total = M::zeros(k, m);
    let mut shards = vec![];
    for (r0, len) in [(0, 40), (40, 56)] {
        let (du, dx) = (
            Dev::up(gpu, Buf::<bf16>::from(&u.rows(r0, len), Layout::RowMajor)),
            Dev::up(gpu, Buf::<bf16>::from(&x.rows(r0, len), Layout::RowMajor)),
        );
        let dc = Dev::up(gpu, Buf::<f32>::poisoned(k, m, 1, Layout::RowMajor));
        if let Err(e) = unsafe { gpu.project_partial_raw(Side::Left, &du.desc(), &dx.desc(), &dc.desc()) } {
            return rep.case("sharded projection", false, format!("{e}"));
        }
        total = total.add(&dc.down(gpu).get(0));
        shards.push((r0, du, dx));
    }
    let mut result = M::zeros(n, m);
    for (r0, du, dx) in &shards {
        let dc = Dev::up(gpu, Buf::<f32>::from(&total, Layout::ColMajor));
        if let Err(e) = unsafe { gpu.project_apply_raw(Side::Left, &du.desc(), &dc.desc(), &dx.desc()) } {
            return rep.case("sharded projection", false, format!("{e}"));
        }
        let y = dx.down(gpu).get(0);
        for i in 0..y.r {
            for j in 0..m {
                result.set(r0 + i, j, y.at(i, j));
            }
        }
    }
    let want = x.sub(&u.mul(&u.t().mul(&x)));
    let e = result.sub(&want).fro() / x.fro();
    let tol = 2.0 * (3.0 * u_of(DType::BF16) + 4.0 * (n + k) as f64 * u_of(DType::F32));
    rep.case("sharded projection bf16 (f32 coefficients)", e <= tol, format!("vs f64 {e:.2e}, tol {tol:.1e}"));
}

fn diagnostics_case(gpu: &Context, rng: &mut rand::rngs::StdRng, rep: &mut Report) {
    let (n, m, k, s) = (80, 48, 20, 33);
    let u = orthonormal(rng, n, k).add(&randn(rng, n, k).scale(1e-3));
    let x = randn(rng, n, m);
    let (du, dx) =
        (Dev::up(gpu, Buf::<f64>::from(&u, Layout::RowMajor)), Dev::up(gpu, Buf::<f64>::from(&x, Layout::Spaced)));
    let leak = unsafe { gpu.leakage_raw(Side::Left, &du.desc(), &dx.desc()) }.map(|v| v[0]).unwrap_or(f64::NAN);
    let want = u.t().mul(&x).fro() / x.fro();
    rep.case("leakage f64", (leak - want).abs() <= 1e-12 * (1.0 + want), format!("{leak} vs {want}"));
    let orth = unsafe { gpu.orthonormality_error_raw(&du.desc(), true) }.map(|v| v[0]).unwrap_or(f64::NAN);
    let want = ortho_err_cols(&u);
    rep.case("orthonormality f64", (orth - want).abs() <= 1e-12 + 1e-9 * want, format!("{orth} vs {want}"));
    let w = randn(rng, n, m);
    let a = randn(rng, s, m);
    let (dw, da) =
        (Dev::up(gpu, Buf::<f32>::from(&w, Layout::ColMajor)), Dev::up(gpu, Buf::<f32>::from(&a, Layout::RowMajor)));
    let cpu = Context::cpu();
    let (mut hw, mut ha) = (Buf::<f32>::from(&w, Layout::ColMajor), Buf::<f32>::from(&a, Layout::RowMajor));
    let g = unsafe { gpu.layer_importance_raw(&dw.desc(), &da.desc(), DType::F32) }.map(|v| v[0]).unwrap_or(f64::NAN);
    let c = unsafe { cpu.layer_importance_raw(&hw.desc(), &ha.desc(), DType::F32) }.unwrap()[0];
    rep.case("layer importance f32", (g - c).abs() <= 1e-5, format!("gpu {g} cpu {c}"));
}

/// Capture one projection step in a CUDA graph on a caller stream with a caller workspace,
/// replay it, and compare with the reference. Everything it creates (stream, graph, its
/// instance, the workspace) is released before it returns, on success and on failure alike.
fn graph_case(rng: &mut rand::rngs::StdRng, rep: &mut Report) {
    use cudarc::driver::sys as cu;
    const NAME: &str = "projection captured in a CUDA graph and replayed";
    let gpu = match Context::cuda(0) {
        Ok(c) => c,
        Err(e) => return rep.case(NAME, false, format!("cuda context: {e}")),
    };
    let (n, m, k) = (512, 384, 128);
    let u = orthonormal(rng, n, k).round::<f32>();
    let x = randn(rng, n, m).round::<f32>();
    let (du, dx) =
        (Dev::up(&gpu, Buf::<f32>::from(&u, Layout::RowMajor)), Dev::up(&gpu, Buf::<f32>::from(&x, Layout::RowMajor)));
    let (ud, xd) = (du.desc(), dx.desc());
    let bases = Bases { u: Some(&ud), v: None };
    let mut stream: cu::CUstream = std::ptr::null_mut();
    let mut graph: cu::CUgraph = std::ptr::null_mut();
    let mut exec: cu::CUgraphExec = std::ptr::null_mut();
    let mut ws: Option<Buffer> = None;
    let result = (|| -> Result<f64, String> {
        // SAFETY: plain driver calls on handles created here; the workspace buffer outlives its
        // use by the context (released below before it is freed).
        unsafe {
            if cu::cuStreamCreate(&mut stream, 1) != cu::CUresult::CUDA_SUCCESS {
                return Err("cuStreamCreate".into());
            }
            gpu.set_stream(stream as usize).map_err(|e| e.to_string())?;
            let need = gpu.project_workspace_size(Side::Left, &bases, &xd, None).map_err(|e| e.to_string())?;
            let buf = ws.insert(gpu.executor().alloc(need).map_err(|e| e.to_string())?);
            gpu.set_workspace(buf.addr, need).map_err(|e| e.to_string())?;
            let r = cu::cuStreamBeginCapture_v2(stream, cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
            if r != cu::CUresult::CUDA_SUCCESS {
                return Err(format!("cuStreamBeginCapture: {r:?}"));
            }
            let p = gpu.project_raw(Side::Left, &bases, &xd, None);
            let r = cu::cuStreamEndCapture(stream, &mut graph);
            p.map_err(|e| format!("project during capture: {e}"))?;
            if r != cu::CUresult::CUDA_SUCCESS {
                return Err(format!("cuStreamEndCapture: {r:?} (the projection did something not capturable)"));
            }
            if cu::cuGraphInstantiateWithFlags(&mut exec, graph, 0) != cu::CUresult::CUDA_SUCCESS {
                return Err("cuGraphInstantiate".into());
            }
            // Nothing ran during capture: X is still the input. Replay once, then check.
            if cu::cuGraphLaunch(exec, stream) != cu::CUresult::CUDA_SUCCESS
                || cu::cuStreamSynchronize(stream) != cu::CUresult::CUDA_SUCCESS
            {
                return Err("cuGraphLaunch".into());
            }
            let y = dx.down(&gpu).get(0);
            let want = x.sub(&u.mul(&u.t().mul(&x)));
            Ok(y.sub(&want).fro() / x.fro())
        }
    })();
    // Teardown, in dependency order: the context lets go of the caller workspace and stream
    // first, then the workspace, the graph instance, the graph and the stream are destroyed.
    gpu.release_workspace();
    drop(ws);
    let _ = gpu.set_stream(0);
    // SAFETY: each handle was created above (null where creation did not happen) and is no
    // longer used by the context.
    unsafe {
        if !exec.is_null() {
            cu::cuGraphExecDestroy(exec);
        }
        if !graph.is_null() {
            cu::cuGraphDestroy(graph);
        }
        if !stream.is_null() {
            cu::cuStreamSynchronize(stream);
            cu::cuStreamDestroy_v2(stream);
        }
    }
    drop((du, dx));
    match result {
        Ok(e) => rep.case(NAME, e <= 1e-5, format!("vs f64 {e:.2e}")),
        Err(e) => rep.case(NAME, false, e),
    }
}

/// One explicit SVD algorithm on the GPU against the f64 certificate and the singular values the
/// matrix was built with. `W = Q1 diag(s) Q2^T` with `s` in `[1, 10]` (condition 10), so
/// the approximate `gesvdaStridedBatched` is held to a tolerance that reflects its Gram-matrix
/// error (`eps * cond^2`), the exact routines to the usual backward-error bound.
#[allow(clippy::too_many_arguments)]
fn algorithm_case(
    gpu: &Context,
    rng: &mut rand::rngs::StdRng,
    rep: &mut Report,
    alg: SvdAlgorithm,
    n: usize,
    m: usize,
    batch: usize,
    compute: DType,
) {
    let r = n.min(m);
    let s_true: Vec<f64> = (0..r).map(|i| 10.0 - 9.0 * i as f64 / (r.max(2) - 1) as f64).collect();
    let ws: Vec<M> =
        (0..batch).map(|_| orthonormal(rng, n, r).mul(&orthonormal(rng, m, r).t().scale_rows(&s_true))).collect();
    let name = format!("svd algorithm {alg:?} {} {n}x{m} batch={batch}", compute.name());
    gpu.set_svd_algorithm(alg);
    let dw = Dev::up(gpu, Buf::<f64>::from_batch(&ws, Layout::RowMajor));
    macro_rules! outs {
        ($t:ty) => {{
            let (du, ds, dv) = (
                Dev::up(gpu, Buf::<$t>::poisoned(n, r, batch, Layout::ColMajor)),
                Dev::up(gpu, Buf::<$t>::poisoned(r, 1, batch, Layout::ColMajor)),
                Dev::up(gpu, Buf::<$t>::poisoned(r, m, batch, Layout::RowMajor)),
            );
            let (ud, sd, vd) = (du.desc(), ds.desc(), dv.desc());
            let t = Instant::now();
            let res = unsafe { gpu.svd_raw(&dw.desc(), &SvdOut { u: Some(&ud), s: &sd, vt: Some(&vd) }, compute) };
            let ms = t.elapsed().as_secs_f64() * 1e3;
            res.map(|_| {
                let (hu, hs, hv) = (du.down(gpu), ds.down(gpu), dv.down(gpu));
                ((0..batch).map(|b| (hu.get(b), hs.get(b).d, hv.get(b))).collect::<Vec<_>>(), ms)
            })
        }};
    }
    let got = if compute == DType::F64 { outs!(f64) } else { outs!(f32) };
    gpu.set_svd_algorithm(SvdAlgorithm::Auto);
    let (got, ms) = match got {
        Ok(g) => g,
        Err(e) => return rep.case(&name, false, format!("error {e}")),
    };
    let eps = u_of(compute);
    // gesvda's Gram-matrix error grows with cond^2 = 100.
    let tol = 10.0 * n.max(m) as f64 * eps * if alg == SvdAlgorithm::ApproxBatched { 100.0 } else { 1.0 };
    let mut worst = 0.0f64;
    let mut ok = true;
    for (b, (u, s, vt)) in got.iter().enumerate() {
        ok &= s.windows(2).all(|p| p[0] >= p[1] * (1.0 - tol)) && s.iter().all(|x| *x >= 0.0);
        let rec = u.mul(&vt.scale_rows(s)).sub(&ws[b]).fro() / ws[b].fro();
        worst = worst.max(rec).max(ortho_err_cols(u)).max(ortho_err_cols(&vt.t()));
        for (a, t) in s.iter().zip(&s_true) {
            worst = worst.max((a - t).abs() / 10.0);
        }
    }
    let report = gpu.last_svd_report();
    rep.case(
        &name,
        ok && worst <= tol,
        format!("certificate and S vs f64 {worst:.2e} (tol {tol:.1e}), {ms:.2} ms, report {report:?}"),
    );
}

/// Preconditions refused on the GPU exactly as on the CPU, before anything runs.
fn algorithm_refusals_case(gpu: &Context, rep: &mut Report) {
    let w = Dev::up(gpu, Buf::<f32>::from(&M::zeros(40, 40).add(&M::eye(40)), Layout::RowMajor));
    let mut ok = true;
    let mut detail = String::new();
    for (alg, want) in
        [(SvdAlgorithm::JacobiBatched, Status::Precondition), (SvdAlgorithm::Randomized, Status::InvalidArgument)]
    {
        gpu.set_svd_algorithm(alg);
        let got = gpu.svd_workspace_size(&w.desc(), DType::F32).map_err(|e| e.status());
        ok &= got == Err(want);
        detail += &format!("{alg:?}: {got:?}; ");
    }
    gpu.set_svd_algorithm(SvdAlgorithm::Auto);
    rep.case("svd algorithm preconditions on the GPU", ok, detail);
}

/// Randomized top-k decomposition on the GPU against the exact top k of a matrix with singular
/// values 2^-i (well separated: the randomized range finder is accurate to ~eps here).
fn randomized_case(
    gpu: &Context,
    rng: &mut rand::rngs::StdRng,
    rep: &mut Report,
    n: usize,
    m: usize,
    k: usize,
    compute: DType,
) {
    let r = n.min(m);
    let s_true: Vec<f64> = (0..r).map(|i| 0.5f64.powi(i as i32)).collect();
    let w = orthonormal(rng, n, r).mul(&orthonormal(rng, m, r).t().scale_rows(&s_true));
    let name = format!("decompose RANDOMIZED top k={k} {} {n}x{m}", compute.name());
    gpu.set_svd_algorithm(SvdAlgorithm::Randomized);
    let dw = Dev::up(gpu, Buf::<f64>::from(&w, Layout::RowMajor));
    let (du, ds, dv) = (
        Dev::up(gpu, Buf::<f64>::poisoned(n, k, 1, Layout::ColMajor)),
        Dev::up(gpu, Buf::<f64>::poisoned(k, 1, 1, Layout::ColMajor)),
        Dev::up(gpu, Buf::<f64>::poisoned(k, m, 1, Layout::RowMajor)),
    );
    let (ud, sd, vd) = (du.desc(), ds.desc(), dv.desc());
    let res = unsafe {
        gpu.decompose_raw(
            &dw.desc(),
            k,
            &Parts { u_high: Some(&ud), s_high: Some(&sd), v_high: Some(&vd), ..Default::default() },
            compute,
        )
    };
    gpu.set_svd_algorithm(SvdAlgorithm::Auto);
    if let Err(e) = res {
        return rep.case(&name, false, format!("error {e}"));
    }
    let (u, s, vt) = (du.down(gpu).get(0), ds.down(gpu).get(0).d, dv.down(gpu).get(0));
    // The top-k part reproduces the best rank-k approximation: W_k = U_k S_k V_k.
    // The top-k part is the best rank-k approximation: ||W - U_k S_k V_k|| reaches its optimum
    // sqrt(sum_{i>=k} s_i^2).
    let rec = u.mul(&vt.scale_rows(&s));
    let resid = w.sub(&rec).fro();
    let opt = s_true[k..].iter().map(|x| x * x).sum::<f64>().sqrt();
    let tol = 1e3 * u_of(compute);
    let s_err = s.iter().zip(&s_true).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let ok =
        s_err <= tol && resid <= opt * (1.0 + tol) + tol && ortho_err_cols(&u) <= tol && ortho_err_cols(&vt.t()) <= tol;
    rep.case(&name, ok, format!("S error {s_err:.2e}, residual {resid:.3e} vs optimal {opt:.3e}, tol {tol:.1e}"));
}

/// Projection of f32 data in a reduced math mode against the f64 reference: TF32 rounds inputs
/// to 10 mantissa bits (unit roundoff 2^-11), bf16 to 7 (2^-8); the error bound used is
/// `2 u_mode sqrt(n + k)` relative to `||X||`. The exact mode is held to f32's bound.
fn math_mode_case(
    gpu: &Context,
    rng: &mut rand::rngs::StdRng,
    rep: &mut Report,
    mode: MathMode,
    n: usize,
    m: usize,
    k: usize,
) {
    let u = orthonormal(rng, n, k).round::<f32>();
    let x = randn(rng, n, m).round::<f32>();
    let name = format!("project f32 Left math mode {mode:?} {n}x{m} k={k}");
    gpu.set_math_mode(mode);
    let (du, dx) =
        (Dev::up(gpu, Buf::<f32>::from(&u, Layout::RowMajor)), Dev::up(gpu, Buf::<f32>::from(&x, Layout::RowMajor)));
    let ud = du.desc();
    let res = unsafe { gpu.project_raw(Side::Left, &Bases { u: Some(&ud), v: None }, &dx.desc(), None) };
    gpu.set_math_mode(MathMode::Exact);
    if let Err(e) = res {
        return rep.case(&name, false, format!("error {e}"));
    }
    let got = dx.down(gpu).get(0);
    let want = x.sub(&u.mul(&u.t().mul(&x)));
    let err = got.sub(&want).fro() / x.fro();
    let unit = match mode {
        MathMode::Exact => u_of(DType::F32),
        MathMode::Tf32 => 2f64.powi(-11),
        MathMode::Bf16 => 2f64.powi(-8),
    };
    let tol = 2.0 * unit * ((n + k) as f64).sqrt() * if mode == MathMode::Exact { 4.0 } else { 1.0 };
    rep.case(&name, err <= tol, format!("vs f64 {err:.2e} (tol {tol:.1e})"));
}

/// `gemm_grouped` straight on the executors: three f32 groups of different shapes (one
/// cublasGemmGroupedBatchedEx) and a bf16-in/f32-out set (the strided-batched fallback), against
/// the CPU executor.
fn grouped_gemm_case(gpu: &Context, cpu: &Context, rep: &mut Report) {
    for (name, tin) in [
        ("gemm_grouped f32 (cublasGemmGroupedBatchedEx)", DType::F32),
        ("gemm_grouped bf16->f32 (strided-batched fallback)", DType::BF16),
    ] {
        let shapes = [(7usize, 5usize, 3usize, 4usize), (33, 17, 9, 2), (64, 64, 64, 3)];
        let mut results = vec![];
        for ctx in [gpu, cpu] {
            // The same operands on both executors.
            let mut rng2: rand::rngs::StdRng = rand::SeedableRng::seed_from_u64(42);
            let mut keep = vec![];
            let mut groups = vec![];
            for &(m, n, k, b) in &shapes {
                let a: Vec<M> = (0..b).map(|_| randn(&mut rng2, m, k)).collect();
                let bb: Vec<M> = (0..b).map(|_| randn(&mut rng2, k, n)).collect();
                macro_rules! up {
                    ($t:ty, $ms:expr) => {{
                        let host = Buf::<$t>::from_batch($ms, Layout::ColMajor);
                        if ctx.executor().device() == Device::Host {
                            (host.desc.addr, host.desc.batch_stride, Box::new(host) as Box<dyn std::any::Any>)
                        } else {
                            let d = Dev::up(ctx, host);
                            (d.buf.addr, d.host.desc.batch_stride, Box::new(d) as Box<dyn std::any::Any>)
                        }
                    }};
                }
                let (pa, sa, ka) = if tin == DType::F32 { up!(f32, &a) } else { up!(bf16, &a) };
                let (pb, sb, kb) = if tin == DType::F32 { up!(f32, &bb) } else { up!(bf16, &bb) };
                let zeros: Vec<M> = (0..b).map(|_| M::zeros(m, n)).collect();
                let (pc, sc, kc) = up!(f32, &zeros);
                groups.push(GemmArgs {
                    transa: Op::N,
                    transb: Op::N,
                    m,
                    n,
                    k,
                    alpha: 1.0,
                    a: Strided { addr: pa, dtype: tin, ld: m, stride: sa },
                    b: Strided { addr: pb, dtype: tin, ld: k, stride: sb },
                    beta: 0.0,
                    c: Strided { addr: pc, dtype: DType::F32, ld: m, stride: sc },
                    batch: b,
                    compute: ComputeType::F32,
                });
                keep.push((ka, kb, kc, b));
            }
            if let Err(e) = unsafe { ctx.executor().gemm_grouped(&groups) } {
                rep.case(name, false, format!("error {e}"));
                return;
            }
            // Read back each group's C.
            let mut cs = vec![];
            for (_, _, kc, b) in keep {
                let c: Buf<f32> = match kc.downcast::<Dev<f32>>() {
                    Ok(d) => d.down(ctx),
                    Err(other) => *other.downcast::<Buf<f32>>().unwrap(),
                };
                cs.push((0..b).map(|i| c.get(i)).collect::<Vec<M>>());
            }
            results.push(cs);
        }
        let mut worst = 0.0f64;
        for (g, c) in results[0].iter().zip(&results[1]) {
            for (x, y) in g.iter().zip(c) {
                worst = worst.max(x.sub(y).fro() / y.fro().max(1e-30));
            }
        }
        let tol = 1e-5;
        rep.case(name, worst <= tol, format!("vs cpu {worst:.2e} (tol {tol:.0e})"));
    }
}

/// `svd_list` over three shapes on the GPU against the CPU executor: one wave (the context's own
/// workspace) or, with `waves`, a caller workspace of exactly `svd_list_workspace_size`.
fn svd_list_case<T: Element>(
    gpu: &Context,
    cpu: &Context,
    rng: &mut rand::rngs::StdRng,
    rep: &mut Report,
    alg: SvdAlgorithm,
    waves: bool,
) {
    let shapes = [(70usize, 40usize, 2usize), (12, 20, 3), (24, 16, 1)];
    let name = format!(
        "svd_list {} {alg:?} {shapes:?} {}",
        T::DTYPE.name(),
        if waves { "caller workspace of the queried size (waves)" } else { "own workspace (one wave)" }
    );
    let ws: Vec<Vec<M>> =
        shapes.iter().map(|&(n, m, b)| (0..b).map(|_| randn(rng, n, m).round::<T>()).collect()).collect();
    type Factors<T> = Vec<(Buf<T>, Buf<T>, Buf<T>)>;
    let mut results: Vec<Factors<T>> = vec![];
    let mut ms = 0.0;
    for ctx in [gpu, cpu] {
        ctx.set_svd_algorithm(alg);
        let on_gpu = ctx.executor().device() != Device::Host;
        let mut bufs = vec![];
        for (w, &(n, m, b)) in ws.iter().zip(&shapes) {
            let r = n.min(m);
            let hosts = (
                Buf::<T>::from_batch(w, Layout::RowMajor),
                Buf::<T>::poisoned(n, r, b, Layout::ColMajor),
                Buf::<T>::poisoned(r, 1, b, Layout::ColMajor),
                Buf::<T>::poisoned(r, m, b, Layout::PaddedCol(1)),
            );
            bufs.push((Dev::up(ctx, hosts.0), Dev::up(ctx, hosts.1), Dev::up(ctx, hosts.2), Dev::up(ctx, hosts.3)));
        }
        let descs: Vec<(MatDesc, MatDesc, MatDesc, MatDesc)> =
            bufs.iter().map(|(w, u, s, v)| (w.desc(), u.desc(), s.desc(), v.desc())).collect();
        let problems: Vec<SvdProblem> =
            descs.iter().map(|(w, u, s, v)| SvdProblem { w, out: SvdOut { u: Some(u), s, vt: Some(v) } }).collect();
        let mut space = None;
        if waves {
            let need = match ctx.svd_list_workspace_size(&descs.iter().map(|d| &d.0).collect::<Vec<_>>(), T::DTYPE) {
                Ok(x) => x,
                Err(e) => return rep.case(&name, false, format!("workspace query: {e}")),
            };
            let buf = ctx.executor().alloc(need).expect("workspace alloc");
            unsafe { ctx.set_workspace(buf.addr, need) }.expect("set_workspace");
            space = Some(buf);
        }
        let t = Instant::now();
        let res = unsafe { ctx.svd_list_raw(&problems, T::DTYPE) };
        if on_gpu {
            ms = t.elapsed().as_secs_f64() * 1e3;
        }
        ctx.release_workspace();
        drop(space);
        ctx.set_svd_algorithm(SvdAlgorithm::Auto);
        if let Err(e) = res {
            return rep.case(&name, false, format!("error on {}: {e}", ctx.executor().name()));
        }
        results.push(bufs.iter().map(|(_, u, s, v)| (u.down(ctx), s.down(ctx), v.down(ctx))).collect());
    }
    let (mut ok, mut worst_cert, mut worst_cpu, mut tol_max) = (true, 0.0f64, 0.0f64, 0.0f64);
    for (i, &(n, m, _)) in shapes.iter().enumerate() {
        let ((gu, gs, gv), (cu, cs, cv)) = (&results[0][i], &results[1][i]);
        ok &= gu.padding_untouched() && gs.padding_untouched() && gv.padding_untouched();
        let tol = 10.0 * n.max(m) as f64 * u_of(T::DTYPE) + 4.0 * (n.min(m) as f64).sqrt() * u_of(T::DTYPE);
        tol_max = tol_max.max(tol);
        for (k, wk) in ws[i].iter().enumerate() {
            let (u, s, vt) = (gu.get(k), gs.get(k).d, gv.get(k));
            ok &= s.windows(2).all(|p| p[0] >= p[1]) && s.iter().all(|x| *x >= 0.0);
            let cert = (u.mul(&vt.scale_rows(&s)).sub(wk).fro() / wk.fro())
                .max(ortho_err_cols(&u))
                .max(ortho_err_cols(&vt.t()));
            ok &= cert <= tol;
            worst_cert = worst_cert.max(cert / tol);
            // The sign convention makes the factors comparable entrywise (well-separated random
            // spectra; vectors allowed 100x the certificate tolerance for their gap sensitivity).
            let ds = s.iter().zip(&cs.get(k).d).map(|(a, c)| (a - c).abs()).fold(0.0, f64::max) / s[0].max(1e-30);
            let dv = u.max_abs_diff(&cu.get(k)).max(vt.max_abs_diff(&cv.get(k)));
            ok &= ds <= tol && dv <= 100.0 * tol;
            worst_cpu = worst_cpu.max((ds / tol).max(dv / (100.0 * tol)));
        }
    }
    rep.case(&name, ok, format!("certificate {worst_cert:.2} x tol, vs cpu {worst_cpu:.2} x tol (tol up to {tol_max:.1e}), padding untouched, {ms:.2} ms"));
}

struct Args {
    quick: bool,
    cpu: bool,
    json: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args { quick: false, cpu: false, json: None };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--quick" => a.quick = true,
            "--cpu" => a.cpu = true,
            "--json" => a.json = Some(it.next().ok_or("--json needs a path")?.into()),
            _ => return Err(format!("unknown argument {x:?} (usage: device_check [--quick] [--cpu] [--json PATH])")),
        }
    }
    Ok(a)
}

/// The seed of this run: `OSFT_TEST_SEED` when set, else a fresh one (printed and recorded so a
/// failure can be replayed).
fn seed() -> u64 {
    std::env::var("OSFT_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        use rand::Rng;
        rand::rng().random::<u64>()
    })
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("device_check: {e}");
            return ExitCode::from(2);
        }
    };
    let seed = seed();
    eprintln!("OSFT_TEST_SEED={seed}");
    let mode = match (args.cpu, args.quick) {
        (false, false) => "full",
        (false, true) => "quick",
        (true, false) => "cpu dry run",
        (true, true) => "cpu dry run, quick",
    };
    let header = format!(
        "\"part\": \"device_check\", \"mode\": {}, \"seed\": {seed}, \"osft\": {}",
        json_str(mode),
        json_str(env!("CARGO_PKG_VERSION"))
    );
    let mut rep = Report::new(args.json.clone(), header);
    let gpu = if args.cpu {
        Context::cpu()
    } else {
        match Context::cuda(0) {
            Ok(c) => c,
            Err(e) => {
                rep.case("cuda context", false, e.to_string());
                println!("0 passed, 1 failed, 0 skipped");
                rep.flush("complete");
                return ExitCode::FAILURE;
            }
        }
    };
    println!("device_check: {mode}, executor under test: {}, seed {seed}", gpu.executor().name());
    let cpu = Context::cpu();
    run_cases(&gpu, &cpu, &mut rep, &args, seed);
    println!("{} passed, {} failed, {} skipped", rep.passed, rep.failed, rep.skipped);
    for lib in loaded_cuda_libraries() {
        println!("loaded: {lib}");
    }
    rep.flush("complete");
    let code = if rep.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    // The contexts go before the process exits, the CUDA one first: a leak checker then sees
    // every buffer and handle released.
    drop(gpu);
    drop(cpu);
    code
}

fn run_cases(gpu: &Context, cpu: &Context, rep: &mut Report, args: &Args, seed: u64) {
    let quick = args.quick;
    let mut rng: rand::rngs::StdRng = seeded(seed);
    let rng = &mut rng;
    let shapes: &[(usize, usize, usize)] = if quick {
        &[(64, 48, 16)]
    } else {
        &[(1, 9, 1), (9, 1, 1), (64, 48, 16), (48, 64, 48), (300, 200, 100), (1024, 512, 256)]
    };
    for &(n, m, k) in shapes {
        for side in [Side::Left, Side::Right, Side::Both] {
            for lx in [Layout::RowMajor, Layout::ColMajor, Layout::Spaced] {
                rep.guard(gpu, &format!("project {side:?} {n}x{m} k={k} {lx:?}"), |rep| {
                    project_case::<f32>(gpu, cpu, rng, rep, side, n, m, k, 1, lx, false);
                    if quick {
                        return;
                    }
                    project_case::<f64>(gpu, cpu, rng, rep, side, n, m, k, 3, lx, true);
                    project_case::<bf16>(gpu, cpu, rng, rep, side, n, m, k, 4, lx, false);
                    project_case::<f16>(gpu, cpu, rng, rep, side, n, m, k, 1, lx, true);
                });
            }
        }
    }
    let svd_shapes: &[(usize, usize, usize)] = if quick {
        &[(16, 12, 3), (70, 40, 1)]
    } else {
        &[(1, 1, 1), (16, 12, 5), (12, 16, 5), (32, 32, 64), (70, 40, 2), (40, 70, 1), (512, 512, 1), (2048, 1024, 1)]
    };
    for &(n, m, b) in svd_shapes {
        rep.guard(gpu, &format!("svd {n}x{m} batch={b}"), |rep| {
            svd_case::<f32, f32>(gpu, rng, rep, n, m, b, Layout::RowMajor, DType::F32);
            if !quick {
                svd_case::<f64, f64>(gpu, rng, rep, n, m, b, Layout::ColMajor, DType::F64);
                svd_case::<bf16, f32>(gpu, rng, rep, n, m, b, Layout::Spaced, DType::F32);
            }
        });
    }
    rep.guard(gpu, "decompose+reconstruct 96x64", |rep| decompose_reconstruct_case(gpu, rng, rep, 96, 64, 24));
    // Every explicit SVD algorithm, the reduced math modes, the grouped GEMM.
    let alg_shapes: &[(usize, usize, usize)] = if quick {
        &[(24, 16, 3)]
    } else {
        &[(24, 16, 5), (16, 24, 3), (32, 32, 8), (200, 120, 3), (120, 200, 2), (1024, 512, 1)]
    };
    for &(n, m, b) in alg_shapes {
        for alg in [
            SvdAlgorithm::Qr,
            SvdAlgorithm::Jacobi,
            SvdAlgorithm::JacobiBatched,
            SvdAlgorithm::ApproxBatched,
            SvdAlgorithm::Polar,
        ] {
            if alg == SvdAlgorithm::JacobiBatched && n.max(m) > 32 {
                continue;
            }
            rep.guard(gpu, &format!("svd algorithm {alg:?} {n}x{m} batch={b}"), |rep| {
                algorithm_case(gpu, rng, rep, alg, n, m, b, DType::F32);
                if !quick {
                    algorithm_case(gpu, rng, rep, alg, n, m, b, DType::F64);
                }
            });
        }
    }
    rep.guard(gpu, "svd algorithm preconditions", |rep| algorithm_refusals_case(gpu, rep));
    rep.guard(gpu, "randomized 300x200", |rep| randomized_case(gpu, rng, rep, 300, 200, 8, DType::F32));
    for mode in [MathMode::Exact, MathMode::Tf32, MathMode::Bf16] {
        rep.guard(gpu, &format!("math mode {mode:?}"), |rep| math_mode_case(gpu, rng, rep, mode, 1024, 512, 64));
    }
    rep.guard(gpu, "gemm_grouped", |rep| grouped_gemm_case(gpu, cpu, rep));
    // Lists of shapes on the grouped path: Auto mixes Xgesvd and gesvdjBatched in one wave.
    for waves in [false, true] {
        rep.guard(gpu, &format!("svd_list waves={waves}"), |rep| {
            svd_list_case::<f32>(gpu, cpu, rng, rep, SvdAlgorithm::Auto, waves);
            if !quick {
                svd_list_case::<f64>(gpu, cpu, rng, rep, SvdAlgorithm::Auto, waves);
                svd_list_case::<f64>(gpu, cpu, rng, rep, SvdAlgorithm::Jacobi, waves);
                svd_list_case::<f32>(gpu, cpu, rng, rep, SvdAlgorithm::Polar, waves);
            }
        });
    }
    if quick {
        return;
    }
    rep.guard(gpu, "randomized 1024x2048", |rep| randomized_case(gpu, rng, rep, 1024, 2048, 32, DType::F64));
    rep.guard(gpu, "decompose+reconstruct 300x700", |rep| decompose_reconstruct_case(gpu, rng, rep, 300, 700, 150));
    rep.guard(gpu, "sharded projection", |rep| shard_case(gpu, rng, rep));
    rep.guard(gpu, "diagnostics", |rep| diagnostics_case(gpu, rng, rep));
    if args.cpu {
        rep.skip("projection captured in a CUDA graph and replayed", "skipped: no GPU");
    } else {
        rep.guard(gpu, "graph capture", |rep| graph_case(rng, rep));
    }
}
