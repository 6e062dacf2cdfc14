//! Kernel mode: one operation (projection, SVD or GEMM) on one shape, timed, optionally on
//! inputs read from files and with outputs written back — what `benches/compare_peers.py` calls
//! so that osft and the peers run on the very same inputs.

use osft::ops::project::Bases;
use osft::ops::svd::SvdOut;
use osft::{Context, DType, Element};
use serde::Serialize;

use crate::cli::{side_name, Args, Kernel};
use crate::dev::{gemm_row_major, DevMat};
use crate::progress::Progress;
use crate::rawfile::{read_raw, write_raw};
use crate::stats::{human_time, time_reps, Stats, TimeSummary};

/// The JSON output of kernel mode.
#[derive(Serialize)]
struct KernelReport {
    tool: &'static str,
    kernel: &'static str,
    executor: String,
    threads: usize,
    dtype: &'static str,
    shape: [usize; 2],
    batch: usize,
    reps: usize,
    warmup: usize,
    /// The projection's frozen rank, the GEMM's inner dimension.
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    side: Option<&'static str>,
    time: TimeSummary,
    /// Null for the SVD, which has no standard flop count.
    gflops: f64,
}

pub fn run(a: &Args, kernel: Kernel, ctx: &Context) -> Result<(), String> {
    match a.dtype() {
        DType::F32 => run_t::<f32>(a, kernel, ctx),
        DType::F64 => run_t::<f64>(a, kernel, ctx),
        DType::F16 => run_t::<osft::f16>(a, kernel, ctx),
        DType::BF16 => run_t::<osft::bf16>(a, kernel, ctx),
    }
}

/// An input: read from `--load DIR/file`, or random.
fn input<T: Element>(
    a: &Args,
    ctx: &Context,
    file: &str,
    batch: usize,
    rows: usize,
    cols: usize,
    seed: u64,
) -> Result<DevMat, String> {
    match &a.load {
        Some(dir) => {
            DevMat::from_host::<T>(ctx, batch, rows, cols, &read_raw::<T>(&dir.join(file), batch * rows * cols)?)
        }
        None => DevMat::random::<T>(ctx, batch, rows, cols, seed),
    }
}

/// An output: written to `--save DIR/file` when asked.
fn save<T: Element>(a: &Args, ctx: &Context, file: &str, m: &DevMat) -> Result<(), String> {
    match &a.save {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            write_raw(&dir.join(file), &m.to_host::<T>(ctx.executor())?)
        }
        None => Ok(()),
    }
}

fn e(err: osft::Error) -> String {
    format!("osft: {err}")
}

/// Time `f`, synchronising the executor after each run.
fn timed(
    ctx: &Context,
    warmup: usize,
    reps: usize,
    prog: &Progress,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<Stats, String> {
    time_reps(warmup, reps, || f().and_then(|_| ctx.executor().synchronize().map_err(e)), || prog.tick())
}

fn run_t<T: Element>(a: &Args, kernel: Kernel, ctx: &Context) -> Result<(), String> {
    let &[(n, m)] = a.shapes.as_slice() else {
        return Err("kernel mode takes exactly one --shape NxM".into());
    };
    let b = a.batch;
    let reps = a.reps.unwrap_or(5);
    let warmup = a.warmup.unwrap_or(1);
    let prog = Progress::new(warmup + reps, a.progress_mode());
    prog.set_label(kernel.name());
    let mut k_out = None;
    let mut side_out = None;
    let (stats, flops, what): (Stats, f64, String) = match kernel {
        Kernel::Project => {
            let k = a.k.ok_or("--kernel project needs --k K")?;
            let side = a.side();
            if (side.left() && k > n) || (side.right() && k > m) {
                return Err(format!("--k {k} exceeds the dimension projected"));
            }
            let x = input::<T>(a, ctx, "x.bin", b, n, m, 1)?;
            let u = if side.left() { Some(input::<T>(a, ctx, "u.bin", b, n, k, 2)?) } else { None };
            let v = if side.right() { Some(input::<T>(a, ctx, "v.bin", b, k, m, 3)?) } else { None };
            let bases = Bases { u: u.as_ref().map(|d| &d.desc), v: v.as_ref().map(|d| &d.desc) };
            let stats = timed(ctx, warmup, reps, &prog, || {
                // SAFETY: descriptors over live executor buffers of the described sizes.
                unsafe { ctx.project_raw(side, &bases, &x.desc, None) }.map_err(e)
            })?;
            let sides = side.left() as usize + side.right() as usize;
            save::<T>(a, ctx, "out.bin", &x)?;
            k_out = Some(k);
            side_out = Some(side_name(side));
            (stats, (4 * n * m * k * sides * b) as f64, format!("project {} {n}x{m} k={k} batch {b}", side_name(side)))
        }
        Kernel::Svd => {
            let w = input::<T>(a, ctx, "w.bin", b, n, m, 4)?;
            let r = n.min(m);
            let u = DevMat::zeros(ctx, T::DTYPE, b, n, r)?;
            let s = DevMat::column(ctx, T::DTYPE, b, r)?;
            let vt = DevMat::zeros(ctx, T::DTYPE, b, r, m)?;
            let out = SvdOut { u: Some(&u.desc), s: &s.desc, vt: Some(&vt.desc) };
            let compute = T::DTYPE.default_compute();
            let stats = timed(ctx, warmup, reps, &prog, || {
                // SAFETY: descriptors over live executor buffers of the described sizes.
                unsafe { ctx.svd_raw(&w.desc, &out, compute) }.map_err(e)
            })?;
            save::<T>(a, ctx, "s.bin", &s)?;
            (stats, f64::NAN, format!("svd {n}x{m} batch {b}"))
        }
        Kernel::Gemm => {
            let k = a.k.ok_or("--kernel gemm needs --k K")?;
            let am = input::<T>(a, ctx, "a.bin", b, n, k, 5)?;
            let bm = input::<T>(a, ctx, "b.bin", b, k, m, 6)?;
            let c = DevMat::zeros(ctx, T::DTYPE, b, n, m)?;
            let stats = timed(ctx, warmup, reps, &prog, || gemm_row_major(ctx.executor(), &am, &bm, &c))?;
            save::<T>(a, ctx, "c.bin", &c)?;
            k_out = Some(k);
            (stats, (2 * n * m * k * b) as f64, format!("gemm {n}x{m}x{k} batch {b}"))
        }
    };
    prog.finish();
    let gflops = flops / stats.median() / 1e9;
    if a.json {
        let r = KernelReport {
            tool: "osft-bench",
            kernel: kernel.name(),
            executor: ctx.executor().name(),
            threads: rayon::current_num_threads(),
            dtype: T::DTYPE.name(),
            shape: [n, m],
            batch: b,
            reps,
            warmup,
            k: k_out,
            side: side_out,
            time: stats.summary(),
            gflops,
        };
        println!("{}", serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?);
    } else {
        let rate = if gflops.is_finite() { format!(", {gflops:.1} GFLOP/s") } else { String::new() };
        println!(
            "{what} ({}, {}): median {} (min {}, max {}) over {reps} runs{rate}",
            T::DTYPE.name(),
            ctx.executor().name(),
            human_time(stats.median()),
            human_time(stats.min()),
            human_time(stats.max())
        );
    }
    Ok(())
}
