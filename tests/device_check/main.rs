//! The GPU device check (run by scripts/device-check.sh on a machine with an NVIDIA GPU): every
//! op on the CUDA executor against the CPU executor and an f64 reference, over shapes, layouts,
//! dtypes and batches, with outputs poisoned (NaN) beforehand and padding checked afterwards;
//! then the projection step captured in a CUDA graph and replayed. Prints one line per case and
//! a closing `N passed, M failed, K skipped`; exits non-zero on any failure.
//!
//! Also: every explicit SVD algorithm (certificate and S against the f64 construction, the
//! routines' preconditions, the randomized top-k decomposition against the optimal rank-k
//! residual, `cusolverDnXgesvdr`'s writes confined to osft's layout of its outputs), projection
//! in each math mode against f64 with a tolerance per mode, and `gemm_grouped` (grouped and
//! fallback) against the CPU executor.
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
//!
//! A test target with its own `main` (`harness = false`) that `cargo test` leaves alone
//! (`test = false`, Cargo.toml): `scripts/device-check.sh build` builds it with `cargo test
//! --release --test device_check --no-run`. This file holds the command line and the order of
//! the cases; the cases are in `projection`, `svd`, `decomposition`, `diagnostics` and `gemm`,
//! the run's record in `report`, the mirrored buffers in `device_buffer`, the shared f64
//! references in `reference`.

mod decomposition;
mod device_buffer;
mod diagnostics;
mod gemm;
mod projection;
mod reference;
mod report;
mod svd;

use std::path::PathBuf;
use std::process::ExitCode;

use osft::{bf16, f16, Context, DType, MathMode, Side, SvdAlgorithm};
use osft_test_support::{seeded, Layout};

use decomposition::{decompose_reconstruct_case, randomized_case};
use diagnostics::diagnostics_case;
use gemm::grouped_gemm_case;
use projection::{graph_case, math_mode_case, project_case, shard_case};
use report::{json_str, loaded_cuda_libraries, Report};
use svd::{algorithm_case, algorithm_refusals_case, gesvdr_bounds_case, svd_case, svd_list_case};

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
    rep.guard(gpu, "gesvdr bounds", |rep| gesvdr_bounds_case(gpu, rng, rep, 300, 64));
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
