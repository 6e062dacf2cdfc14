//! The in-repo structured fuzzer: the harness of the cargo-fuzz targets
//! (`osft_test_support::fuzz`) driven by seeded pseudo-random inputs, so that it runs in every `cargo test` on stable Rust
//! with no extra tools. It also replays the committed regression inputs in `fuzz/regressions/`
//! and, when present, the local cargo-fuzz corpus in `fuzz/corpus/`.
//!
//! `OSFT_FUZZ_ITERS=N` sets the inputs per op (default 2000); `OSFT_FUZZ_SEED=S` the first seed;
//! `OSFT_FUZZ_SECONDS=T` runs each op for `T` seconds instead (what `scripts/fuzz.sh` falls back to).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use osft_test_support::fuzz as harness;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Run `data` against `op`; returns the panic message on a violation.
fn one(op: usize, data: &[u8]) -> Option<String> {
    catch_unwind(AssertUnwindSafe(|| harness::run(op, data))).err().map(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

fn replay_dir(op: usize, dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in rd.flatten() {
        let data = std::fs::read(e.path()).unwrap();
        if let Some(m) = one(op, &data) {
            panic!("{}: {m}\n  input file {}", harness::OPS[op], e.path().display());
        }
        n += 1;
    }
    n
}

fn fuzz(op: usize) {
    let iters = env_u64("OSFT_FUZZ_ITERS", 2000);
    let seed0 = env_u64("OSFT_FUZZ_SEED", 0);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let name = harness::OPS[op];
    let replayed =
        replay_dir(op, &root.join("regressions").join(name)) + replay_dir(op, &root.join("corpus").join(name));
    // The empty input: the default (valid) call.
    if let Some(m) = one(op, &[]) {
        panic!("{name}: the empty input: {m}");
    }
    let deadline = std::env::var("OSFT_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map(|t| std::time::Instant::now() + std::time::Duration::from_secs_f64(t));
    let iters = if deadline.is_some() { u64::MAX - seed0 } else { iters };
    let mut ran = 0u64;
    for s in seed0..seed0.saturating_add(iters) {
        if deadline.is_some_and(|d| std::time::Instant::now() > d) {
            break;
        }
        ran += 1;
        let data = harness::random_input(s.wrapping_mul(7919) ^ ((op as u64) << 40), 1024);
        if let Some(m) = one(op, &data) {
            panic!("{name}: seed {s}: {m}\n  input ({} bytes): {}", data.len(), hex(&data));
        }
    }
    let st = harness::stats();
    let calls: u64 = st.iter().sum();
    let by: Vec<String> = st.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| format!("{i}:{n}")).collect();
    let _ = iters;
    eprintln!("{name}: {ran} random inputs and {replayed} corpus/regression inputs, {calls} calls checked (by status {}), no violation", by.join(" "));
    // The inputs must reach the computations, not only the validation.
    assert!(op == 6 || st[0] * 4 > calls, "{name}: too few successful calls: {by:?}");
}

#[test]
fn fuzz_svd() {
    fuzz(0);
}
#[test]
fn fuzz_decompose() {
    fuzz(1);
}
#[test]
fn fuzz_project() {
    fuzz(2);
}
#[test]
fn fuzz_two_phase() {
    fuzz(3);
}
#[test]
fn fuzz_reconstruct() {
    fuzz(4);
}
#[test]
fn fuzz_diagnostics() {
    fuzz(5);
}
#[test]
fn fuzz_desc() {
    fuzz(6);
}
