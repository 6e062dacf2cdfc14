//! osft-bench — the project's main job: projection and SVD throughput of osft on real model
//! shapes, on the default executor (CUDA where usable, else the CPU).
//!
//! `cargo run --release --bin osft-bench -- [--model llama-3.1-8b] [--quick] [--json] ...`;
//! `--help` lists every option. A kernel mode (`--kernel project|svd|gemm`) times one operation
//! on one shape, on inputs from files if asked: `benches/compare_peers.py` uses it to time osft
//! side by side with numpy and scipy on the same inputs.

mod cli;
mod dev;
mod kernel;
mod machine;
mod model;
mod models;
mod progress;
mod rawfile;
mod report;
mod stats;

use cli::{Args, ExecutorChoice};
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

/// `--list-models`: every preset and its target matrices.
fn list_models() {
    for name in models::PRESETS {
        let m = models::preset(name).expect("every listed preset exists");
        println!("{name:<14} {} target matrices: {}", m.count(), m.note);
        for s in &m.stacks {
            let t: Vec<String> = s.targets.iter().map(|t| format!("{} {}x{}", t.name, t.n, t.m)).collect();
            let which = if m.stacks.len() > 1 { format!("{} ", s.name) } else { String::new() };
            println!("{:<14}   each of {} {which}layers: {}", "", s.layers, t.join(", "));
        }
    }
}

fn main() {
    // Die quietly on a closed pipe (`osft-bench --list-models | head`), as command-line tools do.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let a = Args::from_env();
    if a.list_models {
        list_models();
        return;
    }
    let (ctx, note) = match context(a.executor) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("osft-bench: {msg}");
            std::process::exit(3);
        }
    };
    let r = match a.kernel {
        Some(k) => kernel::run(&a, k, &ctx),
        None => model::run(&a, &ctx, &note),
    };
    if let Err(msg) = r {
        eprintln!("osft-bench: {msg}");
        std::process::exit(1);
    }
}
