//! Every kernel of `kernels.cu` run on the CPU (the `osft-kernel-emu` host emulation: one thread
//! per CUDA thread, barriers that report divergence, poisoned shared memory) through the CUDA
//! executor's own launch code (`exec::cuda::launch`: grid/block computation, argument packing,
//! slicing), compared with the CPU executor's primitive on the same random memory. One test
//! binary for every kernel: the cases share the arena, the random inputs and the comparison
//! (`harness.rs`); the cases of each kernel family are in `kernel_cases.rs`, the cast sweep's
//! sources in `casts.rs`, and the tests here.
//!
//! Each case fills an arena with random bits (so padding, gaps and specials are random), writes
//! inputs of random values into its matrices (powers of two from 2^-20 to 2^20, values at and next
//! to the f16/bf16 rounding midpoints, random bit patterns), runs the CPU executor on one copy and
//! the emulated kernels on another, and compares the whole arenas: outputs bit for bit (any NaN
//! matches any NaN: payloads are not part of the contract), every other byte unchanged. The
//! reductions return values: counts exactly, sums within their summation-order bound. Shapes
//! include empty problems, single rows and columns, sizes that are not multiples of the block;
//! layouts are column-major, row-major, padded and non-unit strided; batches up to 5. The launch
//! sizes are lowered (blocks of 1, 32, 64 and 96 threads, 1 to 5 blocks, slices of 1 to 3) to
//! reach grid-stride loops and slice boundaries, besides the executor's own sizes. The threads of
//! a block run concurrently, or one at a time forward, backward or shuffled between barriers, so a
//! missing `__syncthreads` changes results.
#![cfg(feature = "cuda")]

mod casts;
mod harness;
mod kernel_cases;

use std::collections::BTreeMap;
use std::ffi::c_void;

use osft::exec::cuda::launch::{self, Limits};
use osft::exec::cuda::signatures;
use osft::{DType, Error};
use osft_kernel_emu::Schedule;
use osft_test_support::rng;

use casts::*;
use harness::*;
use kernel_cases::*;

/// The launch sizes and schedules every kernel runs under.
fn configs() -> Vec<(Limits, Schedule)> {
    let lim = |block, max_blocks, reduce_blocks, max_grid| Limits { block, max_blocks, reduce_blocks, max_grid };
    vec![
        (Limits::CUDA, Schedule::Concurrent),
        (lim(32, 2, 2, 2), Schedule::Forward),
        (lim(96, 3, 1, 3), Schedule::Reverse),
        (lim(1, 1, 1, 2), Schedule::Forward),
        (lim(64, 5, 3, 65535), Schedule::Shuffled(7)),
        (lim(33, 2, 2, 4), Schedule::Concurrent),
    ]
}

#[test]
fn every_kernel_matches_the_cpu_executor() {
    let mut rng = rng();
    // The emulation holds exactly the kernels the executor launches.
    let mut emulated = osft_kernel_emu::kernel_names();
    let mut table = signatures::kernel_names();
    emulated.sort();
    table.sort();
    assert_eq!(emulated, table, "the emulation's kernel table and signatures::FAMILIES differ");
    assert!(osft_kernel_emu::shared_bytes().is_some_and(|n| n > 0), "shared memory is not poisoned");
    let mut t = Tally { passes: BTreeMap::new() };
    let t0 = std::time::Instant::now();
    for (i, (lim, schedule)) in configs().into_iter().enumerate() {
        let mut emu = Emu { schedule, launched: vec![] };
        // Fewer cases with the executor's 256-thread blocks (slow to emulate).
        let n = if i == 0 { 2 } else { 5 };
        axpby_cases(&mut rng, &mut t, &lim, &mut emu, n);
        dgmm_cases(&mut rng, &mut t, &lim, &mut emu, 3 * n);
        add_diagonal_cases(&mut rng, &mut t, &lim, &mut emu, 3 * n);
        sign_fix_cases(&mut rng, &mut t, &lim, &mut emu, 3 * n);
        reduction_cases(&mut rng, &mut t, &lim, &mut emu, 2 * n);
        cosine_cases(&mut rng, &mut t, &lim, &mut emu, 3 * n);
        fill_ptrs_cases(&mut rng, &mut t, &lim, &mut emu, n);
    }
    let total: usize = t.passes.values().sum();
    let mut text =
        format!("cases per kernel that matched the CPU executor ({total} in {:.1} s):\n", t0.elapsed().as_secs_f64());
    for (k, n) in &t.passes {
        text += &format!("  {k:32} {n:4} passed\n");
    }
    text += &format!("KERNELS: {} of {} kernels passed, {total} kernel cases", t.passes.len(), table.len());
    eprintln!("{text}");
    for k in &table {
        assert!(t.passes.get(k).is_some_and(|&n| n > 0), "kernel {k} never ran");
    }
    report("kernels", &text);
}

/// Every cast pair on the same sources: the CPU executor and the kernels give the same bits. The
/// half types' every pattern, f32/f64 values at and next to every f16/bf16 rounding midpoint, and
/// random ones; with `OSFT_EXHAUSTIVE=1` also all 2^32 f32 values to f16 and bf16.
#[test]
fn every_cast_agrees_bit_for_bit() {
    let mut rng = rng();
    let mut emu = Emu { schedule: Schedule::Concurrent, launched: vec![] };
    let t0 = std::time::Instant::now();
    let mut compared = 0usize;
    for src in ALL {
        let values = cast_sources(&mut rng, src, 1 << 17);
        for dst in ALL {
            compared += cast_both(&mut emu, src, dst, &values).len();
        }
    }
    // The examples that rounding through f32 gets wrong, through the kernel.
    let f64s = |xs: &[f64]| xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let x = f64s(&[-65519.998, 1.0 + 2f64.powi(-11) + 2f64.powi(-40), 1.0 + 2f64.powi(-8) + 2f64.powi(-40)]);
    assert_eq!(cast_both(&mut emu, DType::F64, DType::F16, &x)[..2], [0xfbff, 0x3c01]);
    assert_eq!(cast_both(&mut emu, DType::F64, DType::BF16, &x)[2], 0x3f81);
    assert_eq!(cast_both(&mut emu, DType::F32, DType::BF16, &[0x3f80_8001])[0], 0x3f81);
    if std::env::var_os("OSFT_EXHAUSTIVE").is_some_and(|v| v == "1") {
        for chunk in 0..256u64 {
            let values: Vec<u64> = (chunk << 24..(chunk + 1) << 24).collect();
            for dst in [DType::F16, DType::BF16] {
                compared += cast_both(&mut emu, DType::F32, dst, &values).len();
            }
        }
        eprintln!("all 2^32 f32 values to f16 and bf16 compared");
    }
    let line =
        format!("casts: {compared} values over 16 type pairs bit-identical in {:.1} s", t0.elapsed().as_secs_f64());
    eprintln!("{line}");
    report("casts", &line);
}

/// Launch sizes out of the kernels' range are refused before anything runs; a launch that
/// bypassed that check traps in the kernel instead of writing past its shared arrays.
#[test]
fn launch_assumptions_are_checked() {
    let mut emu = Emu { schedule: Schedule::Concurrent, launched: vec![] };
    let data = [1.0f64, 2.0, 3.0, 4.0];
    let mut out = [0f64; 1];
    let x = s2(data.as_ptr() as usize, DType::F64, 1, 2, 4);
    let c = Limits::CUDA;
    for bad in [
        Limits { block: 257, ..c },
        Limits { block: 0, ..c },
        Limits { max_grid: 65536, ..c },
        Limits { max_grid: 0, ..c },
        Limits { max_blocks: 0, ..c },
        Limits { reduce_blocks: 0, ..c },
    ] {
        // SAFETY: `x` and `out` describe the local arrays.
        let r = unsafe { launch::sum_squares(&mut emu, &bad, 2, 2, 1, &x, out.as_mut_ptr() as usize) };
        assert!(matches!(r, Err(Error::Internal(_))), "{bad:?}: {r:?}");
    }
    assert!(emu.launched.is_empty() && out[0] == 0.0);
    // SAFETY: as above.
    unsafe { launch::sum_squares(&mut emu, &c, 2, 2, 1, &x, out.as_mut_ptr() as usize) }.unwrap();
    assert_eq!(out[0], 30.0);
    // Directly, with 512 threads: the kernel traps.
    let (mut rows, mut cols, mut xp, mut rs, mut cs, mut bs, mut op) =
        (2i64, 2i64, data.as_ptr() as usize, 1i64, 2i64, 4i64, out.as_mut_ptr() as usize);
    let mut params: Vec<*mut c_void> = vec![
        &mut rows as *mut i64 as *mut c_void,
        &mut cols as *mut i64 as *mut c_void,
        &mut xp as *mut usize as *mut c_void,
        &mut rs as *mut i64 as *mut c_void,
        &mut cs as *mut i64 as *mut c_void,
        &mut bs as *mut i64 as *mut c_void,
        &mut op as *mut usize as *mut c_void,
    ];
    for (name, block) in [("osft_sum_squares_f64", [512, 1, 1]), ("osft_sum_squares_f64", [16, 2, 1])] {
        // SAFETY: the parameters point at values of the kernel's types, addressing local arrays.
        let r = unsafe { osft_kernel_emu::launch(name, [1, 1, 1], block, &mut params, Schedule::Concurrent) };
        assert!(r.as_ref().is_err_and(|e| e.contains("__trap")), "{block:?}: {r:?}");
    }
    assert_eq!(out[0], 30.0, "a trapped launch wrote its output");
}

/// Write `text` where scripts/test.sh picks it up for its summary line (target/tmp).
fn report(name: &str, text: &str) {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cuda_kernels_emulated.{name}.txt"));
    std::fs::write(&path, format!("{text}\n")).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
