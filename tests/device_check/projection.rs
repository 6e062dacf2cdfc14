//! Projection cases: every side, shape, layout, dtype and placement against the CPU executor and
//! f64; the sharded partial/apply path; the reduced math modes; and the projection step captured
//! in a CUDA graph and replayed.

use osft::exec::Buffer;
use osft::ops::project::Bases;
use osft::{bf16, Context, DType, Element, MathMode, Side};
use osft_test_support::{randn, Buf, Layout, M};

use crate::device_buffer::Dev;
use crate::reference::{orthonormal, u_of};
use crate::report::Report;

#[allow(clippy::too_many_arguments)] // one case of the sweep: side, shape, batch, layout, placement
pub(crate) fn project_case<T: Element>(
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

pub(crate) fn shard_case(gpu: &Context, rng: &mut rand::rngs::StdRng, rep: &mut Report) {
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

/// Projection of f32 data in a reduced math mode against the f64 reference: TF32 rounds inputs
/// to 10 mantissa bits (unit roundoff 2^-11), bf16 to 7 (2^-8); the error bound used is
/// `2 u_mode sqrt(n + k)` relative to `||X||`. The exact mode is held to f32's bound.
pub(crate) fn math_mode_case(
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

/// Capture one projection step in a CUDA graph on a caller stream with a caller workspace,
/// replay it, and compare with the reference; an op that reads back to the host (leakage), called
/// during the capture, must be refused without invalidating it. Everything it creates (stream, graph, its
/// instance, the workspace) is released before it returns, on success and on failure alike.
pub(crate) fn graph_case(rng: &mut rand::rngs::StdRng, rep: &mut Report) {
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
            // An op that reads back to the host is refused without touching the capture.
            let refused = gpu.leakage_raw(Side::Left, &ud, &xd);
            let p = gpu.project_raw(Side::Left, &bases, &xd, None);
            let r = cu::cuStreamEndCapture(stream, &mut graph);
            match refused {
                Err(osft::Error::InvalidArgument(_)) => {}
                other => return Err(format!("leakage during capture: {other:?}, expected InvalidArgument")),
            }
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
