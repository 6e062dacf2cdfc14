//! The main job: projection and decomposition throughput of osft on a model's real target shapes.

use std::time::Instant;

use osft::ops::decompose::Parts;
use osft::ops::project::Bases;
use osft::{Context, DType, Element, MatDesc, Side};

use crate::cli::{side_name, Args, DecomposeMode};
use crate::dev::{gemm_row_major, DevMat};
use crate::machine::{cpu_model, mem_available};
use crate::models::{self, Model};
use crate::progress::Progress;
use crate::report::{
    Decompose, DecomposeRow, GemmReference, Machine, Report, SameShapeGemm, SquareGemm, Step, TargetRow,
};
use crate::stats::{human_bytes, Stats};

/// One group of same-shape targets: `count` matrices `N x M` with `k` frozen, projected as one
/// strided batch per side.
struct Group {
    names: Vec<String>,
    n: usize,
    m: usize,
    count: usize,
    /// Count in the whole model (all layers), for extrapolation.
    count_full: usize,
    k: usize,
    lo: usize,
}

impl Group {
    fn flops(&self, side: Side) -> f64 {
        let (n, m, k, lo) = (self.n as f64, self.m as f64, self.k as f64, self.lo as f64);
        let mut f = 0.0;
        if side.left() {
            f += 4.0 * n * lo * k;
        }
        if side.right() {
            f += 4.0 * lo * m * k;
        }
        f * self.count as f64
    }

    /// Least memory traffic of a step: read the basis, read and write the gradient.
    fn bytes(&self, side: Side, size: usize) -> f64 {
        let (n, m, k, lo) = (self.n, self.m, self.k, self.lo);
        let mut e = 0;
        if side.left() {
            e += n * k + 2 * n * lo;
        }
        if side.right() {
            e += k * m + 2 * lo * m;
        }
        (e * size * self.count) as f64
    }

    /// Elements held for the projection of the whole group.
    fn elems(&self, side: Side) -> usize {
        let (n, m, k, lo) = (self.n, self.m, self.k, self.lo);
        let mut e = 0;
        if side.left() {
            e += n * k + n * lo;
        }
        if side.right() {
            e += k * m + lo * m;
        }
        e * self.count
    }

    /// The plain GEMMs `(m, n, k)` (C is m x n) that a projection of one matrix performs.
    fn gemm_shapes(&self, side: Side) -> Vec<(usize, usize, usize)> {
        let (n, m, k, lo) = (self.n, self.m, self.k, self.lo);
        let mut g = vec![];
        if k == 0 || lo == 0 {
            return g;
        }
        if side.left() {
            g.push((k, lo, n)); // coef = U_high^T dU
            g.push((n, lo, k)); // dU -= U_high coef
        }
        if side.right() {
            g.push((lo, k, m)); // coef = dV V_high^T
            g.push((lo, m, k)); // dV -= coef V_high
        }
        g
    }
}

/// What runs: the model, the part of it included, and how it is timed.
struct Plan {
    full: Model,
    model: Model,
    layers: usize,
    layers_note: String,
    side: Side,
    groups: Vec<Group>,
    reps: usize,
    warmup: usize,
    /// No `--warmup` on full-size shapes: one projection of the smallest group and one GEMM.
    light_warmup: bool,
    warmup_note: String,
    decompose: DecomposeMode,
    /// Side of the square reference GEMM.
    sq: usize,
}

const QUICK_NOTE: &str = "quick smoke run: every dimension divided by 8, 1 layer, 1 warm-up, 2 timed runs";

fn plan(a: &Args, on_cpu: bool) -> Result<Plan, String> {
    let full: Model = if a.shapes.is_empty() {
        let name = a.model.as_deref().unwrap_or("llama-3.1-8b");
        models::preset(name)
            .ok_or_else(|| format!("unknown model {name:?}; presets: {}", models::PRESETS.join(", ")))?
    } else {
        models::custom(&a.shapes)
    };
    let full = if a.quick { full.scaled(8) } else { full };
    let total_layers = full.stacks.iter().map(|s| s.layers).max().unwrap_or(1);
    let layers = if a.quick {
        1
    } else if a.all_layers {
        total_layers
    } else {
        a.layers.unwrap_or(if on_cpu { 1 } else { total_layers })
    };
    let mut model = full.clone();
    model.limit_layers(layers);
    let layers_note = if model.count() < full.count() {
        format!(
            "{} of {} layers per stack ({} of {} target matrices){}; whole-model figures are scaled from these",
            layers,
            total_layers,
            model.count(),
            full.count(),
            if a.layers.is_none() && !a.quick {
                " — the CPU default; --layers N or --all-layers for more"
            } else {
                ""
            }
        )
    } else if a.shapes.is_empty() {
        format!("all {} layers ({} target matrices)", total_layers, model.count())
    } else {
        format!("custom shapes ({} target matrices)", model.count())
    };
    // Warm-up: `--warmup N` full steps; by default (full-size shapes) a light one — one
    // projection of the smallest target group and one reference GEMM, which starts the thread
    // pool and allocates the workspace — since a full step of a 7-8B layer takes seconds.
    let light_warmup = a.warmup.is_none() && !a.quick;
    let warmup = a.warmup.unwrap_or(if a.quick { 1 } else { 0 });
    let warmup_note = if light_warmup {
        "light warm-up (one small projection and GEMM)".to_string()
    } else {
        format!("{warmup} warm-up step(s)")
    };
    let full_groups = full.groups();
    let groups = model
        .groups()
        .into_iter()
        .map(|(n, m, count, names)| {
            let r = n.min(m);
            let k = ((a.rank_ratio * r as f64).floor() as usize).min(r);
            let count_full = full_groups.iter().find(|g| g.0 == n && g.1 == m).map_or(count, |g| g.2);
            Group { names, n, m, count, count_full, k, lo: r - k }
        })
        .collect();
    let decompose = a.decompose.unwrap_or(if on_cpu { DecomposeMode::Sample } else { DecomposeMode::Full });
    Ok(Plan {
        full,
        model,
        layers,
        layers_note,
        side: a.side(),
        groups,
        reps: a.reps.unwrap_or(if a.quick { 2 } else { 3 }),
        warmup,
        light_warmup,
        warmup_note,
        decompose,
        sq: if a.quick { 1024 } else { 4096 },
    })
}

impl Plan {
    /// Distinct reference GEMM shapes `(m, n, k)`, each with how many times a step performs it.
    fn gemm_shapes(&self) -> Vec<((usize, usize, usize), usize)> {
        let mut shapes: Vec<((usize, usize, usize), usize)> = vec![];
        for g in &self.groups {
            for s in g.gemm_shapes(self.side) {
                match shapes.iter_mut().find(|x| x.0 == s) {
                    Some(x) => x.1 += g.count,
                    None => shapes.push((s, g.count)),
                }
            }
        }
        shapes
    }

    /// Progress steps of the whole run.
    fn progress_steps(&self) -> usize {
        let (w, r, g) = (self.warmup, self.reps, self.groups.len());
        let n_dec = if self.decompose == DecomposeMode::None { 0 } else { g };
        (w + r) * 2 * g + (w.min(1) + r) * (self.gemm_shapes().len() + 1) + n_dec + 1
    }
}

/// One group's frozen bases and trainable-factor gradients (`None` for a side not projected).
struct Buffers {
    u: Option<DevMat>,
    du: Option<DevMat>,
    v: Option<DevMat>,
    dv: Option<DevMat>,
}

/// Timed samples of the projection steps and the reference GEMMs (seconds).
struct Samples {
    per_group: Vec<Vec<f64>>,
    step: Vec<f64>,
    same: Vec<f64>,
    same_flops: f64,
    square: Vec<f64>,
}

pub fn run(a: &Args, ctx: &Context, executor_note: &str) -> Result<(), String> {
    match a.dtype() {
        DType::F32 => run_t::<f32>(a, ctx, executor_note),
        DType::F64 => run_t::<f64>(a, ctx, executor_note),
        DType::F16 => run_t::<osft::f16>(a, ctx, executor_note),
        DType::BF16 => run_t::<osft::bf16>(a, ctx, executor_note),
    }
}

fn e(err: osft::Error) -> String {
    format!("osft: {err}")
}

fn run_t<T: Element>(a: &Args, ctx: &Context, executor_note: &str) -> Result<(), String> {
    let t_start = Instant::now();
    let p = plan(a, ctx.executor().device() == osft::Device::Host)?;
    let proj_bytes: usize = p.groups.iter().map(|g| g.elems(p.side) * T::DTYPE.size()).sum();
    if let Some(avail) = mem_available() {
        if proj_bytes as f64 > 0.8 * avail as f64 {
            return Err(format!(
                "the projection buffers of {} matrices need {}, more than 80% of the {} available: use --layers N with a smaller N",
                p.model.count(),
                human_bytes(proj_bytes as f64),
                human_bytes(avail as f64)
            ));
        }
    }
    let prog = Progress::new(p.progress_steps(), a.progress_mode());
    let samples = time_projection::<T>(ctx, &p, &prog)?;
    let dec = if p.decompose == DecomposeMode::None { vec![] } else { time_decompose::<T>(ctx, &p, &prog)? };
    prog.finish();
    let r = report::<T>(a, ctx, executor_note, &p, samples, dec, t_start);
    if a.json {
        r.print_json()
    } else {
        r.print_table();
        Ok(())
    }
}

/// The first matrix of a batch.
fn first(d: &DevMat) -> MatDesc {
    MatDesc { batch: 1, ..d.desc }
}

/// Projection steps interleaved with the reference GEMMs (same-shape ones, then the square), so
/// that all three see the same machine load.
fn time_projection<T: Element>(ctx: &Context, p: &Plan, prog: &Progress) -> Result<Samples, String> {
    let side = p.side;
    // Inputs: random values (timing does not depend on them), in the executor's memory.
    prog.set_label("filling inputs");
    let mut bufs: Vec<Buffers> = vec![];
    for (i, g) in p.groups.iter().enumerate() {
        let (c, n, m, k, lo) = (g.count, g.n, g.m, g.k, g.lo);
        let s = 1000 * i as u64;
        let (l, r) = (side.left(), side.right());
        bufs.push(Buffers {
            u: if l { Some(DevMat::random::<T>(ctx, c, n, k, s + 1)?) } else { None },
            du: if l { Some(DevMat::random::<T>(ctx, c, n, lo, s + 2)?) } else { None },
            v: if r { Some(DevMat::random::<T>(ctx, c, k, m, s + 3)?) } else { None },
            dv: if r { Some(DevMat::random::<T>(ctx, c, lo, m, s + 4)?) } else { None },
        });
    }
    prog.tick();
    // Reference GEMM inputs: one matrix of each distinct GEMM shape the projection performs
    // (C = A B, all row-major), weighted by how many times a step performs it; and the square.
    let mut gemm_bufs: Vec<(usize, DevMat, DevMat, DevMat)> = vec![];
    for ((mm, nn, kk), count) in p.gemm_shapes() {
        gemm_bufs.push((
            count,
            DevMat::random::<T>(ctx, 1, mm, kk, 7)?,
            DevMat::random::<T>(ctx, 1, kk, nn, 8)?,
            DevMat::zeros(ctx, T::DTYPE, 1, mm, nn)?,
        ));
    }
    let sq = p.sq;
    let sq_a = DevMat::random::<T>(ctx, 1, sq, sq, 9)?;
    let sq_b = DevMat::random::<T>(ctx, 1, sq, sq, 10)?;
    let sq_c = DevMat::zeros(ctx, T::DTYPE, 1, sq, sq)?;

    let exec = ctx.executor();
    let sync = || exec.synchronize().map_err(e);
    let project = |b: &Buffers, one: bool| -> Result<(), String> {
        let d = |m: &DevMat| if one { first(m) } else { m.desc };
        if let (Some(u), Some(du)) = (&b.u, &b.du) {
            // SAFETY: descriptors over live executor buffers of the described sizes.
            unsafe { ctx.project_raw(Side::Left, &Bases { u: Some(&d(u)), v: None }, &d(du), None) }.map_err(e)?;
        }
        if let (Some(v), Some(dv)) = (&b.v, &b.dv) {
            // SAFETY: as above.
            unsafe { ctx.project_raw(Side::Right, &Bases { u: None, v: Some(&d(v)) }, &d(dv), None) }.map_err(e)?;
        }
        Ok(())
    };
    if p.light_warmup {
        prog.set_label("warm-up");
        if let Some((_, b)) = p.groups.iter().zip(&bufs).min_by_key(|(g, _)| g.elems(side) / g.count.max(1)) {
            project(b, true)?;
        }
        if let Some((_, ga, gb, gc)) = gemm_bufs.iter().min_by_key(|x| x.3.desc.numel() * x.1.desc.cols) {
            gemm_row_major(exec, ga, gb, gc)?;
        }
        sync()?;
    }
    let mut s = Samples {
        per_group: vec![vec![]; p.groups.len()],
        step: vec![],
        same: vec![],
        same_flops: 0.0,
        square: vec![],
    };
    let (warmup, reps) = (p.warmup, p.reps);
    for rep in 0..warmup + reps {
        let timed = rep >= warmup;
        prog.set_label(&if timed {
            format!("run {}/{reps}", rep - warmup + 1)
        } else {
            format!("warm-up {}/{warmup}", rep + 1)
        });
        let mut step = 0.0;
        for (i, b) in bufs.iter().enumerate() {
            let t = Instant::now();
            project(b, false)?;
            sync()?;
            prog.tick();
            prog.tick();
            let dt = t.elapsed().as_secs_f64();
            step += dt;
            if timed {
                s.per_group[i].push(dt);
            }
        }
        if timed {
            s.step.push(step);
        }
        if !timed && rep > 0 {
            continue;
        }
        // Same-shape reference: one matrix per GEMM shape, weighted by its count in a step.
        let mut same = 0.0;
        let mut fl = 0.0;
        for (count, ga, gb, gc) in &gemm_bufs {
            let t = Instant::now();
            gemm_row_major(exec, ga, gb, gc)?;
            sync()?;
            same += t.elapsed().as_secs_f64() * *count as f64;
            fl += 2.0 * (ga.desc.rows * gb.desc.cols * ga.desc.cols) as f64 * *count as f64;
            prog.tick();
        }
        if timed {
            s.same.push(same);
            s.same_flops = fl;
        }
        let t = Instant::now();
        gemm_row_major(exec, &sq_a, &sq_b, &sq_c)?;
        sync()?;
        if timed {
            s.square.push(t.elapsed().as_secs_f64());
        }
        prog.tick();
    }
    Ok(s)
}

/// Decomposition (SVD + split at k, every part written in the data type) of each group: one
/// matrix of each shape (`sample`) or all of them (`full`).
fn time_decompose<T: Element>(ctx: &Context, p: &Plan, prog: &Progress) -> Result<Vec<DecomposeRow>, String> {
    let sample = p.decompose == DecomposeMode::Sample;
    let mut rows: Vec<DecomposeRow> = vec![];
    for (i, g) in p.groups.iter().enumerate() {
        let names = g.names.join(",");
        // Sampling: a transposed shape costs the same (osft decomposes W^T when N < M).
        if let Some(t) = rows.iter().find(|r| sample && r.n == g.m && r.m == g.n && r.decomposed > 0) {
            let per = t.seconds_per_matrix;
            rows.push(DecomposeRow {
                names,
                n: g.n,
                m: g.m,
                decomposed: 0,
                seconds: 0.0,
                seconds_per_matrix: per,
                count_whole_model: g.count_full,
            });
            prog.tick();
            continue;
        }
        let nb = if sample { 1 } else { g.count };
        prog.set_label(&format!("decompose {}x{} x{nb}", g.n, g.m));
        let (n, m, k, lo) = (g.n, g.m, g.k, g.lo);
        let dt = T::DTYPE;
        let w = DevMat::random::<T>(ctx, nb, n, m, 100 + i as u64)?;
        let (uh, sh, vh) =
            (DevMat::zeros(ctx, dt, nb, n, k)?, DevMat::column(ctx, dt, nb, k)?, DevMat::zeros(ctx, dt, nb, k, m)?);
        let (ul, sl, vl) =
            (DevMat::zeros(ctx, dt, nb, n, lo)?, DevMat::column(ctx, dt, nb, lo)?, DevMat::zeros(ctx, dt, nb, lo, m)?);
        let some = |d: &DevMat| if d.desc.numel() > 0 { Some(d.desc) } else { None };
        let d = [some(&uh), some(&sh), some(&vh), some(&ul), some(&sl), some(&vl)];
        let parts = Parts {
            u_high: d[0].as_ref(),
            s_high: d[1].as_ref(),
            v_high: d[2].as_ref(),
            u_low: d[3].as_ref(),
            s_low: d[4].as_ref(),
            v_low: d[5].as_ref(),
        };
        let t = Instant::now();
        // SAFETY: descriptors over live executor buffers of the described sizes.
        unsafe { ctx.decompose_raw(&w.desc, k, &parts, dt.default_compute()) }.map_err(e)?;
        ctx.executor().synchronize().map_err(e)?;
        let secs = t.elapsed().as_secs_f64();
        rows.push(DecomposeRow {
            names,
            n,
            m,
            decomposed: nb,
            seconds: secs,
            seconds_per_matrix: secs / nb as f64,
            count_whole_model: g.count_full,
        });
        prog.tick();
    }
    Ok(rows)
}

/// The figures of a run.
fn report<T: Element>(
    a: &Args,
    ctx: &Context,
    executor_note: &str,
    p: &Plan,
    s: Samples,
    dec: Vec<DecomposeRow>,
    t_start: Instant,
) -> Report {
    let (side, size) = (p.side, T::DTYPE.size());
    let step = Stats::new(s.step);
    let flops: f64 = p.groups.iter().map(|g| g.flops(side)).sum();
    let bytes: f64 = p.groups.iter().map(|g| g.bytes(side, size)).sum();
    let gflops = flops / step.median() / 1e9;
    let same = Stats::new(s.same);
    let same_gflops = s.same_flops / same.median() / 1e9;
    let square = Stats::new(s.square);
    let sq_gflops = 2.0 * (p.sq as f64).powi(3) / square.median() / 1e9;
    let full_flops: f64 = p.groups.iter().map(|g| g.flops(side) / g.count as f64 * g.count_full as f64).sum();
    let targets = p
        .groups
        .iter()
        .zip(s.per_group)
        .map(|(g, samples)| {
            let t = Stats::new(samples);
            TargetRow {
                names: g.names.clone(),
                n: g.n,
                m: g.m,
                k: g.k,
                r_low: g.lo,
                count: g.count,
                count_whole_model: g.count_full,
                flops_per_step: g.flops(side),
                bytes_per_step: g.bytes(side, size),
                gflops: g.flops(side) / t.median() / 1e9,
                gbs: g.bytes(side, size) / t.median() / 1e9,
                time: t.summary(),
            }
        })
        .collect();
    let decompose = Decompose {
        mode: p.decompose.name(),
        measured_s: dec.iter().map(|r| r.seconds).sum(),
        matrices_decomposed: dec.iter().map(|r| r.decomposed).sum(),
        whole_model_s: dec.iter().map(|r| r.seconds_per_matrix * r.count_whole_model as f64).sum(),
        whole_model_extrapolated: dec.iter().any(|r| r.decomposed != r.count_whole_model),
        per_shape: dec,
    };
    Report {
        tool: "osft-bench",
        version: env!("CARGO_PKG_VERSION"),
        executor: ctx.executor().name(),
        executor_note: executor_note.to_string(),
        machine: Machine { cpu: cpu_model(), threads: rayon::current_num_threads() },
        model: p.full.name.clone(),
        model_note: p.full.note.clone(),
        quick: a.quick,
        quick_note: if a.quick { QUICK_NOTE } else { "" },
        layers: p.layers,
        layers_note: p.layers_note.clone(),
        target_matrices: p.model.count(),
        target_matrices_whole_model: p.full.count(),
        dtype: T::DTYPE.name(),
        rank_ratio: a.rank_ratio,
        side: side_name(side),
        warmup: p.warmup,
        warmup_note: p.warmup_note.clone(),
        reps: p.reps,
        targets,
        step: Step {
            gflops,
            gbs: bytes / step.median() / 1e9,
            whole_model_s: step.median() * full_flops / flops.max(f64::MIN_POSITIVE),
            time: step.summary(),
            flops,
            bytes,
        },
        gemm_reference: GemmReference {
            square: SquareGemm { n: p.sq, time: square.summary(), gflops: sq_gflops },
            same_shapes: SameShapeGemm { flops: s.same_flops, time: same.summary(), gflops: same_gflops },
        },
        fraction_of_square_gemm: gflops / sq_gflops,
        fraction_of_same_shape_gemm: gflops / same_gflops,
        decompose,
        wall_s: t_start.elapsed().as_secs_f64(),
    }
}
