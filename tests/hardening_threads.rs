//! Concurrency through the C ABI: many threads × many ops give results bitwise identical to a
//! serial run — with one context per thread, with one context shared by all threads (the docs
//! allow it: ops are serialised on the context's workspace lock), with a thread releasing the
//! shared context's workspace all the while, and with one projector shared by all threads.
//! Sizes include ones large enough for the CPU executor's multi-threaded (rayon) GEMM and SVD.
//!
//! `OSFT_THREADS_ROUNDS=N` sets the rounds per thread (default 25).

use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use osft::ffi::osft_status::*;
use osft::ffi::*;
use osft_test_support::capi::*;
use osft_test_support::{seeded, Draw};

const THREADS: usize = 8;

fn rounds() -> usize {
    std::env::var("OSFT_THREADS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(25)
}

/// Shared, read-only inputs.
struct Inputs {
    w32: Vec<f32>,  // 2 x 24 x 16
    w64: Vec<f64>,  // 40 x 32
    u32_: Vec<f32>, // 256 x 24, orthonormal
    x32: Vec<f32>,  // 3 x 256 x 192
    ub: Vec<f64>,   // 20 x 12, orthonormal
    vb: Vec<f64>,   // 10 x 24 (rows orthonormal)
    x64: Vec<f64>,  // 20 x 24
    big: Vec<f64>,  // 128 x 96
    acts: Vec<f32>, // 50 x 16
}

fn inputs() -> Inputs {
    let c = Ctx::cpu();
    let u = basis(&c, 1, 256, 24);
    let vt = basis(&c, 2, 24, 10);
    Inputs {
        w32: seeded(3).uniform_vec32(2 * 24 * 16),
        w64: seeded(4).uniform_vec(40 * 32),
        u32_: u.iter().map(|v| *v as f32).collect(),
        x32: seeded(5).uniform_vec32(3 * 256 * 192),
        ub: basis(&c, 6, 20, 12),
        vb: (0..10).flat_map(|t| (0..24).map(move |j| (t, j))).map(|(t, j)| vt[j * 10 + t]).collect(),
        x64: seeded(7).uniform_vec(20 * 24),
        big: seeded(8).uniform_vec(128 * 96),
        acts: seeded(9).uniform_vec32(50 * 16),
    }
}

type Op = fn(&Inputs, *mut osft_context) -> Vec<u8>;

fn ok(st: osft_status) {
    assert_eq!(st, OSFT_STATUS_OK, "{}", msg());
}

fn op_svd(i: &Inputs, c: *mut osft_context) -> Vec<u8> {
    let (u, s, vt) = (vec![0f32; 2 * 24 * 16], vec![0f32; 2 * 16], vec![0f32; 2 * 16 * 16]);
    unsafe {
        ok(osft_svd(
            c,
            &batched(rm(&i.w32, F32, 24, 16), 2, 384),
            &batched(cm(&u, F32, 24, 16), 2, 384),
            &batched(rm(&s, F32, 16, 1), 2, 16),
            &batched(rm(&vt, F32, 16, 16), 2, 256),
            F64,
        ));
    }
    [bytes_of(&u), bytes_of(&s), bytes_of(&vt)].concat()
}

fn op_svd_big(i: &Inputs, c: *mut osft_context) -> Vec<u8> {
    let (u, s) = (vec![0f64; 128 * 96], vec![0f64; 96]);
    unsafe { ok(osft_svd(c, &rm(&i.big, F64, 128, 96), &rm(&u, F64, 128, 96), &rm(&s, F64, 96, 1), null(), F64)) };
    [bytes_of(&u), bytes_of(&s)].concat()
}

fn op_decompose(i: &Inputs, c: *mut osft_context) -> Vec<u8> {
    let (uh, sh, vh, ul, sl, vl) = (
        vec![0f64; 40 * 8],
        vec![0f64; 8],
        vec![0f64; 8 * 32],
        vec![0f32; 40 * 24],
        vec![0f32; 24],
        vec![0f32; 24 * 32],
    );
    unsafe {
        ok(osft_decompose(
            c,
            &rm(&i.w64, F64, 40, 32),
            8,
            &rm(&uh, F64, 40, 8),
            &rm(&sh, F64, 8, 1),
            &cm(&vh, F64, 8, 32),
            &rm(&ul, F32, 40, 24),
            &rm(&sl, F32, 1, 24),
            &rm(&vl, F32, 24, 32),
            F64,
        ));
        // Reconstruct from the parts, into an f32 column-major W.
        let w = vec![0f32; 40 * 32];
        ok(osft_reconstruct(
            c,
            &rm(&uh, F64, 40, 8),
            &rm(&sh, F64, 8, 1),
            &cm(&vh, F64, 8, 32),
            &rm(&ul, F32, 40, 24),
            &rm(&sl, F32, 1, 24),
            &rm(&vl, F32, 24, 32),
            &cm(&w, F32, 40, 32),
            F32,
        ));
        [bytes_of(&uh), bytes_of(&sh), bytes_of(&vh), bytes_of(&ul), bytes_of(&sl), bytes_of(&vl), bytes_of(&w)]
            .concat()
    }
}

fn op_project_big(i: &Inputs, c: *mut osft_context) -> Vec<u8> {
    let out = vec![0f32; 3 * 256 * 192];
    unsafe {
        ok(osft_project(
            c,
            LEFT,
            &rm(&i.u32_, F32, 256, 24),
            null(),
            &batched(rm(&i.x32, F32, 256, 192), 3, 256 * 192),
            &batched(cm(&out, F32, 256, 192), 3, 256 * 192),
        ));
    }
    bytes_of(&out)
}

fn op_project_both_strided(i: &Inputs, c: *mut osft_context) -> Vec<u8> {
    // X staged: every other column of a 20 x 48 buffer.
    let x: Vec<f64> = i.x64.iter().flat_map(|v| [*v, -1.0]).collect();
    unsafe {
        ok(osft_project(
            c,
            BOTH,
            &rm(&i.ub, F64, 20, 12),
            &rm(&i.vb, F64, 10, 24),
            &mat(x.as_ptr(), F64, 20, 24, 48, 2),
            null(),
        ))
    };
    bytes_of(&x)
}

fn op_projectors(i: &Inputs, c: *mut osft_context) -> Vec<u8> {
    let mut all = vec![];
    for strategy in [1, 2] {
        let mut p = null_mut();
        let x = i.x64.clone();
        unsafe {
            ok(osft_projector_create(c, BOTH, &rm(&i.ub, F64, 20, 12), &rm(&i.vb, F64, 10, 24), strategy, &mut p));
            ok(osft_projector_apply(p, &rm(&x, F64, 20, 24), null()));
            osft_projector_destroy(p);
        }
        all.extend(bytes_of(&x));
    }
    all
}

fn op_two_phase(i: &Inputs, c: *mut osft_context) -> Vec<u8> {
    let x: Vec<f32> = i.x32[..256 * 192].to_vec();
    let (ca, cb) = (vec![0f32; 24 * 192], vec![0f32; 24 * 192]);
    unsafe {
        ok(osft_project_partial(
            c,
            LEFT,
            &rm(&i.u32_[..100 * 24], F32, 100, 24),
            &rm(&x[..100 * 192], F32, 100, 192),
            &rm(&ca, F32, 24, 192),
        ));
        ok(osft_project_partial(
            c,
            LEFT,
            &rm(&i.u32_[100 * 24..], F32, 156, 24),
            &rm(&x[100 * 192..], F32, 156, 192),
            &rm(&cb, F32, 24, 192),
        ));
        let sum: Vec<f32> = ca.iter().zip(&cb).map(|(a, b)| a + b).collect();
        ok(osft_project_apply(
            c,
            LEFT,
            &rm(&i.u32_[..100 * 24], F32, 100, 24),
            &rm(&sum, F32, 24, 192),
            &rm(&x[..100 * 192], F32, 100, 192),
        ));
        ok(osft_project_apply(
            c,
            LEFT,
            &rm(&i.u32_[100 * 24..], F32, 156, 24),
            &rm(&sum, F32, 24, 192),
            &rm(&x[100 * 192..], F32, 156, 192),
        ));
    }
    bytes_of(&x)
}

fn op_diagnostics(i: &Inputs, c: *mut osft_context) -> Vec<u8> {
    let mut r = [0f64; 8];
    unsafe {
        ok(osft_leakage(
            c,
            LEFT,
            &rm(&i.u32_, F32, 256, 24),
            &batched(rm(&i.x32, F32, 256, 192), 3, 256 * 192),
            r.as_mut_ptr(),
            3,
        ));
        ok(osft_orthonormality_error(c, LEFT, &rm(&i.ub, F64, 20, 12), r[3..].as_mut_ptr(), 1));
        ok(osft_orthonormality_error(c, RIGHT, &rm(&i.vb, F64, 10, 24), r[4..].as_mut_ptr(), 1));
        ok(osft_layer_importance(
            c,
            &batched(rm(&i.w32, F32, 24, 16), 2, 384),
            &rm(&i.acts, F32, 50, 16),
            F32,
            r[5..].as_mut_ptr(),
            2,
        ));
        // An error on the way: its message is per thread, and changes nothing.
        assert_eq!(osft_project(c, 9, null(), null(), null(), null()), OSFT_STATUS_INVALID_ARGUMENT);
        assert!(msg().contains("side"));
    }
    bytes_of(&r)
}

const OPS: [(&str, Op); 9] = [
    ("svd", op_svd),
    ("svd_big", op_svd_big),
    ("decompose+reconstruct", op_decompose),
    ("project_big", op_project_big),
    ("project_both_strided", op_project_both_strided),
    ("projectors", op_projectors),
    ("two_phase", op_two_phase),
    ("diagnostics", op_diagnostics),
    ("svd_again", op_svd),
];

fn serial(inp: &Inputs) -> Vec<Vec<u8>> {
    let c = Ctx::cpu();
    OPS.iter().map(|(_, f)| f(inp, c.0)).collect()
}

/// Run every op `rounds` times on each of `THREADS` threads (each in its own order), on
/// `ctx_for(thread)`, comparing each result with `want` bitwise.
fn stress(inp: &Arc<Inputs>, want: &Arc<Vec<Vec<u8>>>, shared: Option<Arc<Ctx>>, churn: bool) {
    let barrier = Arc::new(Barrier::new(THREADS));
    let stop = Arc::new(AtomicBool::new(false));
    let churner = if churn {
        let (ctx, stop) = (shared.clone().unwrap(), stop.clone());
        Some(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut b = 0usize;
                unsafe {
                    ok(osft_context_release_workspace(ctx.0));
                    ok(osft_context_workspace_bytes(ctx.0, &mut b));
                }
                n += 1;
                std::thread::yield_now();
            }
            n
        }))
    } else {
        None
    };
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (inp, want, shared, barrier) = (inp.clone(), want.clone(), shared.clone(), barrier.clone());
            std::thread::spawn(move || {
                let own = if shared.is_none() { Some(Ctx::cpu()) } else { None };
                let c = shared.as_ref().map_or_else(|| own.as_ref().unwrap().0, |s| s.0);
                barrier.wait();
                let mut done = 0;
                for r in 0..rounds() {
                    for q in 0..OPS.len() {
                        let k = (q * (t + 1) + r + t) % OPS.len();
                        let got = (OPS[k].1)(&inp, c);
                        assert!(got == want[k], "thread {t} round {r}: {} differs from the serial run", OPS[k].0);
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().expect("a worker failed")).sum();
    stop.store(true, Ordering::Relaxed);
    let churned = churner.map(|h| h.join().unwrap());
    eprintln!(
        "{total} ops on {THREADS} threads identical to the serial run{}",
        churned.map_or(String::new(), |n| format!(" ({n} workspace releases meanwhile)"))
    );
}

#[test]
fn threads_with_their_own_contexts_match_a_serial_run() {
    let inp = Arc::new(inputs());
    let want = Arc::new(serial(&inp));
    within(600, "own contexts", move || stress(&inp, &want, None, false));
}

#[test]
fn threads_sharing_one_context_match_a_serial_run() {
    let inp = Arc::new(inputs());
    let want = Arc::new(serial(&inp));
    let shared = Arc::new(Ctx::cpu());
    within(600, "shared context", move || stress(&inp, &want, Some(shared), false));
}

#[test]
fn shared_context_with_workspace_releases_in_between() {
    let inp = Arc::new(inputs());
    let want = Arc::new(serial(&inp));
    let shared = Arc::new(Ctx::cpu());
    within(600, "shared context, releases", move || stress(&inp, &want, Some(shared), true));
}

#[test]
fn one_projector_shared_by_threads() {
    let inp = Arc::new(inputs());
    let c = Ctx::cpu();
    for strategy in [1, 2] {
        let mut p = null_mut();
        unsafe {
            ok(osft_projector_create(c.0, BOTH, &rm(&inp.ub, F64, 20, 12), &rm(&inp.vb, F64, 10, 24), strategy, &mut p))
        };
        let want = {
            let x = inp.x64.clone();
            unsafe { ok(osft_projector_apply(p, &rm(&x, F64, 20, 24), null())) };
            x
        };
        let handle = p as usize;
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                let (inp, want) = (inp.clone(), want.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 * rounds() {
                        let x = inp.x64.clone();
                        let out = vec![0f64; 20 * 24];
                        unsafe {
                            ok(osft_projector_apply(
                                handle as *mut osft_projector,
                                &rm(&x, F64, 20, 24),
                                &cm(&out, F64, 20, 24),
                            ))
                        };
                        let back: Vec<f64> = (0..20 * 24).map(|t| out[(t % 24) * 20 + t / 24]).collect();
                        assert!(
                            back.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "a shared projector gave another result"
                        );
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        unsafe { osft_projector_destroy(p) };
    }
}
