//! osft-bench — the project's main job: projection and SVD throughput of osft on real model
//! shapes, on the default executor (CUDA where usable, else the CPU).
//!
//! `cargo run --release --bin osft-bench -- [--model llama-3.1-8b] [--quick] [--json] ...`;
//! `--help` lists every option. A kernel mode (`--kernel project|svd|gemm`) times one operation
//! on one shape, on inputs from files if asked: `benches/compare_peers.py` uses it to time osft
//! side by side with numpy and scipy on the same inputs.

#[path = "osft_bench/args.rs"]
mod args;
#[path = "osft_bench/dev.rs"]
mod dev;
#[path = "osft_bench/kernel.rs"]
mod kernel;
#[path = "osft_bench/model.rs"]
mod model;
#[path = "osft_bench/models.rs"]
mod models;
#[path = "osft_bench/util.rs"]
mod util;

use args::ExecutorChoice;
use osft::Context;

/// The context for the chosen executor, and a note on how it was chosen.
fn context(choice: ExecutorChoice) -> Result<(Context, String), String> {
    match choice {
        ExecutorChoice::Cpu => Ok((Context::cpu(), String::new())),
        ExecutorChoice::Cuda => {
            Context::cuda(0).map(|c| (c, String::new())).map_err(|e| format!("--executor cuda: {e}"))
        }
        ExecutorChoice::Auto => match Context::cuda(0) {
            Ok(c) => Ok((c, "default executor: CUDA device 0".into())),
            Err(e) => Ok((Context::cpu(), format!("default executor: the CPU, as CUDA is not usable here ({e})"))),
        },
    }
}

fn main() {
    // Die quietly on a closed pipe (`osft-bench --list-models | head`), as command-line tools do.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let a = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("osft-bench: {msg}");
            std::process::exit(2);
        }
    };
    if a.help {
        print!("{}", args::USAGE);
        return;
    }
    if a.list_models {
        for name in models::PRESETS {
            let m = models::preset(name).unwrap();
            println!("{name:<14} {} target matrices: {}", m.count(), m.note);
            for s in &m.stacks {
                let t: Vec<String> = s.targets.iter().map(|t| format!("{} {}x{}", t.name, t.n, t.m)).collect();
                let which = if m.stacks.len() > 1 { format!("{} ", s.name) } else { String::new() };
                println!("{:<14}   each of {} {which}layers: {}", "", s.layers, t.join(", "));
            }
        }
        return;
    }
    let (ctx, note) = match context(a.executor) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("osft-bench: {msg}");
            std::process::exit(3);
        }
    };
    let r = if a.kernel.is_some() { kernel::run(&a, &ctx) } else { model::run(&a, &ctx, &note) };
    if let Err(msg) = r {
        eprintln!("osft-bench: {msg}");
        std::process::exit(1);
    }
}
