//! The main job: projection and decomposition throughput of osft on a model's real target shapes.

use std::time::Instant;

use osft::ops::decompose::Parts;
use osft::ops::project::Bases;
use osft::{Context, DType, Element, Side};

use super::args::{side_name, Args, DecomposeMode};
use super::dev::{gemm_row_major, DevMat};
use super::models::{self, Model};
use super::util::{cpu_model, human_bytes, human_time, mem_available, Json, Progress, Stats};

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

/// Decomposition timing of one group.
struct DecRow {
    names: String,
    n: usize,
    m: usize,
    /// Matrices decomposed (0: the time of the transposed shape is used).
    decomposed: usize,
    seconds: f64,
    per_matrix: f64,
    count_full: usize,
}

/// One group's frozen bases and trainable-factor gradients (`None` for a side not projected).
struct Buffers {
    u: Option<DevMat>,
    du: Option<DevMat>,
    v: Option<DevMat>,
    dv: Option<DevMat>,
}

pub fn run(a: &Args, ctx: &Context, executor_note: &str) -> Result<(), String> {
    match a.dtype {
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
    let on_cpu = ctx.executor().device() == osft::Device::Host;
    // The model and how much of it runs.
    let full: Model = if a.shapes.is_empty() {
        let name = a.model.as_deref().unwrap_or("llama-3.1-8b");
        models::preset(name)
            .ok_or_else(|| format!("unknown model {name:?}; presets: {}", models::PRESETS.join(", ")))?
    } else {
        models::custom(&a.shapes)
    };
    let full = if a.quick { full.scaled(8) } else { full };
    let total_layers_per_stack = full.stacks.iter().map(|s| s.layers).max().unwrap_or(1);
    let layers = if a.quick {
        1
    } else if a.all_layers {
        total_layers_per_stack
    } else {
        a.layers.unwrap_or(if on_cpu { 1 } else { total_layers_per_stack })
    };
    let mut model = full.clone();
    model.limit_layers(layers);
    let layers_note = if model.count() < full.count() {
        format!(
            "{} of {} layers per stack ({} of {} target matrices){}; whole-model figures are scaled from these",
            layers,
            total_layers_per_stack,
            model.count(),
            full.count(),
            if a.layers.is_none() && !a.quick {
                " — the CPU default; --layers N or --all-layers for more"
            } else {
                ""
            }
        )
    } else {
        if a.shapes.is_empty() {
            format!("all {} layers ({} target matrices)", total_layers_per_stack, model.count())
        } else {
            format!("custom shapes ({} target matrices)", model.count())
        }
    };
    let quick_note =
        if a.quick { "quick smoke run: every dimension divided by 8, 1 layer, 1 warm-up, 2 timed runs" } else { "" };
    let reps = a.reps.unwrap_or(if a.quick { 2 } else { 3 });
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
    let side = a.side;
    let size = T::DTYPE.size();

    let full_groups = full.groups();
    let groups: Vec<Group> = model
        .groups()
        .into_iter()
        .map(|(n, m, count, names)| {
            let r = n.min(m);
            let k = ((a.rank_ratio * r as f64).floor() as usize).min(r);
            let count_full = full_groups.iter().find(|g| g.0 == n && g.1 == m).map_or(count, |g| g.2);
            Group { names, n, m, count, count_full, k, lo: r - k }
        })
        .collect();

    // Memory: the projection buffers, plus the largest reference GEMM and decomposition.
    let proj_bytes: usize = groups.iter().map(|g| g.elems(side) * size).sum();
    if let Some(avail) = mem_available() {
        if proj_bytes as f64 > 0.8 * avail as f64 {
            return Err(format!(
                "the projection buffers of {} matrices need {}, more than 80% of the {} available: use --layers N with a smaller N",
                model.count(),
                human_bytes(proj_bytes as f64),
                human_bytes(avail as f64)
            ));
        }
    }

    let decompose = match a.decompose {
        DecomposeMode::Default => {
            if on_cpu {
                DecomposeMode::Sample
            } else {
                DecomposeMode::Full
            }
        }
        d => d,
    };
    let sq = if a.quick { 1024 } else { 4096 };
    let n_gemm_calls: usize = {
        let mut all: Vec<(usize, usize, usize)> = groups.iter().flat_map(|g| g.gemm_shapes(side)).collect();
        all.sort();
        all.dedup();
        all.len()
    };
    let n_dec = match decompose {
        DecomposeMode::Sample => groups.len(),
        DecomposeMode::Full => groups.len(),
        _ => 0,
    };
    let mut prog = Progress::new(
        (warmup + reps) * 2 * groups.len() + (warmup.min(1) + reps) * (n_gemm_calls + 1) + n_dec + 1,
        a.progress,
    );

    // Inputs: random values (timing does not depend on them), in the executor's memory.
    prog.set_label("filling inputs");
    let mut bufs: Vec<Buffers> = vec![];
    for (i, g) in groups.iter().enumerate() {
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
    let mut shapes: Vec<((usize, usize, usize), usize)> = vec![];
    for g in &groups {
        for s in g.gemm_shapes(side) {
            match shapes.iter_mut().find(|x| x.0 == s) {
                Some(x) => x.1 += g.count,
                None => shapes.push((s, g.count)),
            }
        }
    }
    let mut gemm_bufs: Vec<(usize, DevMat, DevMat, DevMat)> = vec![];
    for ((mm, nn, kk), count) in shapes {
        gemm_bufs.push((
            count,
            DevMat::random::<T>(ctx, 1, mm, kk, 7)?,
            DevMat::random::<T>(ctx, 1, kk, nn, 8)?,
            DevMat::zeros(ctx, T::DTYPE, 1, mm, nn)?,
        ));
    }
    let sq_a = DevMat::random::<T>(ctx, 1, sq, sq, 9)?;
    let sq_b = DevMat::random::<T>(ctx, 1, sq, sq, 10)?;
    let sq_c = DevMat::zeros(ctx, T::DTYPE, 1, sq, sq)?;

    // Interleaved repetitions: projection step, same-shape GEMMs, square GEMM, so that all three
    // see the same machine load.
    let mut proj_group_samples: Vec<Vec<f64>> = vec![vec![]; groups.len()];
    let mut step_samples = vec![];
    let mut same_samples = vec![];
    let mut same_flops = 0.0;
    let mut sq_samples = vec![];
    let exec = ctx.executor();
    let sync = || exec.synchronize().map_err(e);
    if light_warmup {
        prog.set_label("warm-up");
        if let Some(b) = groups.iter().zip(&bufs).min_by_key(|(g, _)| g.elems(side) / g.count.max(1)).map(|(_, b)| b) {
            if let (Some(u), Some(du)) = (&b.u, &b.du) {
                let one = |d: &DevMat| osft::MatDesc { batch: 1, ..d.desc };
                // SAFETY: the first matrix of live executor buffers.
                unsafe { ctx.project_raw(Side::Left, &Bases { u: Some(&one(u)), v: None }, &one(du), None) }
                    .map_err(e)?;
            }
            if let (Some(v), Some(dv)) = (&b.v, &b.dv) {
                let one = |d: &DevMat| osft::MatDesc { batch: 1, ..d.desc };
                // SAFETY: as above.
                unsafe { ctx.project_raw(Side::Right, &Bases { u: None, v: Some(&one(v)) }, &one(dv), None) }
                    .map_err(e)?;
            }
        }
        if let Some((_, ga, gb, gc)) = gemm_bufs.iter().min_by_key(|x| x.3.desc.numel() * x.1.desc.cols) {
            gemm_row_major(exec, ga, gb, gc)?;
        }
        sync()?;
    }
    for rep in 0..warmup + reps {
        let timed = rep >= warmup;
        prog.set_label(&format!(
            "{} {}/{}",
            if timed { "run" } else { "warm-up" },
            if timed { rep - warmup + 1 } else { rep + 1 },
            if timed { reps } else { warmup }
        ));
        let mut step = 0.0;
        for (i, b) in bufs.iter().enumerate() {
            let t = Instant::now();
            if let (Some(u), Some(du)) = (&b.u, &b.du) {
                // SAFETY: descriptors over live executor buffers of the described sizes.
                unsafe { ctx.project_raw(Side::Left, &Bases { u: Some(&u.desc), v: None }, &du.desc, None) }
                    .map_err(e)?;
            }
            prog.tick();
            if let (Some(v), Some(dv)) = (&b.v, &b.dv) {
                // SAFETY: as above.
                unsafe { ctx.project_raw(Side::Right, &Bases { u: None, v: Some(&v.desc) }, &dv.desc, None) }
                    .map_err(e)?;
            }
            sync()?;
            prog.tick();
            let dt = t.elapsed().as_secs_f64();
            step += dt;
            if timed {
                proj_group_samples[i].push(dt);
            }
        }
        if timed {
            step_samples.push(step);
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
            same_samples.push(same);
            same_flops = fl;
        }
        let t = Instant::now();
        gemm_row_major(exec, &sq_a, &sq_b, &sq_c)?;
        sync()?;
        if timed {
            sq_samples.push(t.elapsed().as_secs_f64());
        }
        prog.tick();
    }
    drop(bufs);
    drop(gemm_bufs);
    drop((sq_a, sq_b, sq_c));

    // Decomposition: SVD + split at k, every part written in the data type.
    let mut dec_rows: Vec<DecRow> = vec![];
    if decompose != DecomposeMode::None {
        for (i, g) in groups.iter().enumerate() {
            let names = g.names.join(",");
            let sample = decompose == DecomposeMode::Sample;
            // Sampling: a transposed shape costs the same (osft decomposes W^T when N < M).
            if let Some(p) = dec_rows.iter().find(|r| sample && r.n == g.m && r.m == g.n && r.decomposed > 0) {
                let per = p.per_matrix;
                dec_rows.push(DecRow {
                    names,
                    n: g.n,
                    m: g.m,
                    decomposed: 0,
                    seconds: 0.0,
                    per_matrix: per,
                    count_full: g.count_full,
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
            let (ul, sl, vl) = (
                DevMat::zeros(ctx, dt, nb, n, lo)?,
                DevMat::column(ctx, dt, nb, lo)?,
                DevMat::zeros(ctx, dt, nb, lo, m)?,
            );
            let some = |d: &DevMat| if d.desc.numel() > 0 { Some(d.desc) } else { None };
            let parts_d = [some(&uh), some(&sh), some(&vh), some(&ul), some(&sl), some(&vl)];
            let parts = Parts {
                u_high: parts_d[0].as_ref(),
                s_high: parts_d[1].as_ref(),
                v_high: parts_d[2].as_ref(),
                u_low: parts_d[3].as_ref(),
                s_low: parts_d[4].as_ref(),
                v_low: parts_d[5].as_ref(),
            };
            let t = Instant::now();
            // SAFETY: descriptors over live executor buffers of the described sizes.
            unsafe { ctx.decompose_raw(&w.desc, k, &parts, dt.default_compute()) }.map_err(e)?;
            sync()?;
            let secs = t.elapsed().as_secs_f64();
            dec_rows.push(DecRow {
                names,
                n,
                m,
                decomposed: nb,
                seconds: secs,
                per_matrix: secs / nb as f64,
                count_full: g.count_full,
            });
            prog.tick();
        }
    }
    prog.finish();

    // Figures.
    let step = Stats::new(step_samples);
    let flops: f64 = groups.iter().map(|g| g.flops(side)).sum();
    let bytes: f64 = groups.iter().map(|g| g.bytes(side, size)).sum();
    let gflops = flops / step.median() / 1e9;
    let gbs = bytes / step.median() / 1e9;
    let same = Stats::new(same_samples);
    let same_gflops = same_flops / same.median() / 1e9;
    let sqs = Stats::new(sq_samples);
    let sq_gflops = 2.0 * (sq as f64).powi(3) / sqs.median() / 1e9;
    let full_flops: f64 = groups.iter().map(|g| g.flops(side) / g.count as f64 * g.count_full as f64).sum();
    let full_step = step.median() * full_flops / flops.max(f64::MIN_POSITIVE);
    let dec_measured: f64 = dec_rows.iter().map(|r| r.seconds).sum();
    let dec_full: f64 = dec_rows.iter().map(|r| r.per_matrix * r.count_full as f64).sum();
    let dec_count: usize = dec_rows.iter().map(|r| r.decomposed).sum();
    let dec_extrapolated = dec_rows.iter().any(|r| r.decomposed != r.count_full);
    let gname = match T::DTYPE {
        DType::F32 => "SGEMM",
        DType::F64 => "DGEMM",
        _ => "GEMM (f32 compute)",
    };

    if a.json {
        let target_rows: Vec<Json> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let s = Stats::new(proj_group_samples[i].clone());
                Json::obj(vec![
                    ("names", Json::Arr(g.names.iter().map(|x| Json::str(x.clone())).collect())),
                    ("n", Json::int(g.n)),
                    ("m", Json::int(g.m)),
                    ("k", Json::int(g.k)),
                    ("r_low", Json::int(g.lo)),
                    ("count", Json::int(g.count)),
                    ("count_whole_model", Json::int(g.count_full)),
                    ("flops_per_step", Json::Num(g.flops(side))),
                    ("bytes_per_step", Json::Num(g.bytes(side, size))),
                    ("time", s.json()),
                    ("gflops", Json::Num(g.flops(side) / s.median() / 1e9)),
                    ("gbs", Json::Num(g.bytes(side, size) / s.median() / 1e9)),
                ])
            })
            .collect();
        let dec = Json::obj(vec![
            (
                "mode",
                Json::str(match decompose {
                    DecomposeMode::Sample => "sample",
                    DecomposeMode::Full => "full",
                    _ => "none",
                }),
            ),
            ("measured_s", Json::Num(dec_measured)),
            ("matrices_decomposed", Json::int(dec_count)),
            ("whole_model_s", Json::Num(dec_full)),
            ("whole_model_extrapolated", Json::Bool(dec_extrapolated)),
            (
                "per_shape",
                Json::Arr(
                    dec_rows
                        .iter()
                        .map(|r| {
                            Json::obj(vec![
                                ("names", Json::str(r.names.clone())),
                                ("n", Json::int(r.n)),
                                ("m", Json::int(r.m)),
                                ("decomposed", Json::int(r.decomposed)),
                                ("seconds", Json::Num(r.seconds)),
                                ("seconds_per_matrix", Json::Num(r.per_matrix)),
                                ("count_whole_model", Json::int(r.count_full)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]);
        let j = Json::obj(vec![
            ("tool", Json::str("osft-bench")),
            ("version", Json::str(env!("CARGO_PKG_VERSION"))),
            ("executor", Json::str(ctx.executor().name())),
            ("executor_note", Json::str(executor_note)),
            (
                "machine",
                Json::obj(vec![("cpu", Json::str(cpu_model())), ("threads", Json::int(rayon::current_num_threads()))]),
            ),
            ("model", Json::str(full.name.clone())),
            ("model_note", Json::str(full.note.clone())),
            ("quick", Json::Bool(a.quick)),
            ("quick_note", Json::str(quick_note)),
            ("layers", Json::int(layers)),
            ("layers_note", Json::str(layers_note.clone())),
            ("target_matrices", Json::int(model.count())),
            ("target_matrices_whole_model", Json::int(full.count())),
            ("dtype", Json::str(T::DTYPE.name())),
            ("rank_ratio", Json::Num(a.rank_ratio)),
            ("side", Json::str(side_name(side))),
            ("warmup", Json::int(warmup)),
            ("warmup_note", Json::str(warmup_note.clone())),
            ("reps", Json::int(reps)),
            ("targets", Json::Arr(target_rows)),
            (
                "step",
                Json::obj(vec![
                    ("time", step.json()),
                    ("flops", Json::Num(flops)),
                    ("bytes", Json::Num(bytes)),
                    ("gflops", Json::Num(gflops)),
                    ("gbs", Json::Num(gbs)),
                    ("whole_model_s", Json::Num(full_step)),
                ]),
            ),
            (
                "gemm_reference",
                Json::obj(vec![
                    (
                        "square",
                        Json::obj(vec![("n", Json::int(sq)), ("time", sqs.json()), ("gflops", Json::Num(sq_gflops))]),
                    ),
                    (
                        "same_shapes",
                        Json::obj(vec![
                            ("flops", Json::Num(same_flops)),
                            ("time", same.json()),
                            ("gflops", Json::Num(same_gflops)),
                        ]),
                    ),
                ]),
            ),
            ("fraction_of_square_gemm", Json::Num(gflops / sq_gflops)),
            ("fraction_of_same_shape_gemm", Json::Num(gflops / same_gflops)),
            ("decompose", dec),
            ("wall_s", Json::Num(t_start.elapsed().as_secs_f64())),
        ]);
        println!("{}", j.render());
        return Ok(());
    }

    // Human table.
    println!("osft-bench {} — projection of OSFT gradients on {}", env!("CARGO_PKG_VERSION"), full.name);
    println!(
        "executor     {} ({} threads; {}){}",
        ctx.executor().name(),
        rayon::current_num_threads(),
        cpu_model(),
        if executor_note.is_empty() { String::new() } else { format!(" — {executor_note}") }
    );
    println!("model        {} ({})", full.name, full.note);
    println!("layers       {layers_note}");
    if a.quick {
        println!("quick        {quick_note}");
    }
    println!(
        "setup        {}, rank ratio {} (k = floor(ratio * min(N, M)) frozen per target), side {} ({}), {} + {} timed runs, medians",
        T::DTYPE.name(),
        a.rank_ratio,
        side_name(side),
        match side {
            Side::Left => "dU_low against U_high",
            Side::Right => "dV_low against V_high",
            Side::Both => "dU_low against U_high and dV_low against V_high",
        },
        warmup_note,
        reps
    );
    println!();
    println!(
        "{:<32} {:>12} {:>6} {:>6} {:>6} {:>11} {:>10} {:>8}",
        "targets", "N x M", "k", "R-k", "count", "time/step", "GFLOP/s", "GB/s"
    );
    for (i, g) in groups.iter().enumerate() {
        let s = Stats::new(proj_group_samples[i].clone());
        let mut names = g.names.join(",");
        if names.len() > 32 {
            names.truncate(29);
            names.push_str("...");
        }
        println!(
            "{:<32} {:>12} {:>6} {:>6} {:>6} {:>11} {:>10.1} {:>8.1}",
            names,
            format!("{}x{}", g.n, g.m),
            g.k,
            g.lo,
            g.count,
            human_time(s.median()),
            g.flops(side) / s.median() / 1e9,
            g.bytes(side, size) / s.median() / 1e9
        );
    }
    println!(
        "{:<32} {:>12} {:>6} {:>6} {:>6} {:>11} {:>10.1} {:>8.1}",
        "step (all included targets)",
        "",
        "",
        "",
        model.count(),
        human_time(step.median()),
        gflops,
        gbs
    );
    println!();
    println!(
        "projection   {} per step ({:.3} TFLOP, {} moved at least), {:.1} GFLOP/s, {:.1} GB/s",
        human_time(step.median()),
        flops / 1e12,
        human_bytes(bytes),
        gflops,
        gbs
    );
    if model.count() < full.count() {
        println!(
            "             whole model ({} targets{}): {} per step (scaled by flops)",
            full.count(),
            if a.quick { ", of the 1/8-scale stand-in" } else { "" },
            human_time(full_step)
        );
    }
    println!("{gname:<12} {sq}x{sq}x{sq}: {sq_gflops:.1} GFLOP/s; on the projection's own GEMM shapes: {same_gflops:.1} GFLOP/s (same run, same executor)");
    println!(
        "fraction     projection = {:.0}% of {gname} ({sq}^3), {:.0}% of {gname} on the same shapes",
        100.0 * gflops / sq_gflops,
        100.0 * gflops / same_gflops
    );
    match decompose {
        DecomposeMode::None => println!("decompose    skipped (--decompose none)"),
        _ => {
            println!(
                "decompose    whole model ({} matrices{}): {}{}",
                full.count(),
                if a.quick { ", of the 1/8-scale stand-in" } else { "" },
                human_time(dec_full),
                if dec_extrapolated {
                    format!(
                        " — scaled from {} measured on {} matrices{}",
                        human_time(dec_measured),
                        dec_count,
                        if decompose == DecomposeMode::Sample {
                            " (one per distinct shape; --decompose full decomposes every included matrix)"
                        } else {
                            ""
                        }
                    )
                } else {
                    " (measured)".into()
                }
            );
            for r in &dec_rows {
                let how = if r.decomposed == 0 {
                    format!("as {}x{}", r.m, r.n)
                } else {
                    format!("{} measured", r.decomposed)
                };
                println!(
                    "             {:>12} {:>9} per matrix ({how}) x {:>4} in the whole model   ({})",
                    format!("{}x{}", r.n, r.m),
                    human_time(r.per_matrix),
                    r.count_full,
                    r.names
                );
            }
        }
    }
    println!("wall time    {}", human_time(t_start.elapsed().as_secs_f64()));
    Ok(())
}
