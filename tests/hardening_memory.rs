//! Memory through the C ABI: no RSS growth over 100 000 calls (after a warm-up), and the
//! context's cached workspace is bounded by the largest need seen and released on request.
//! One test function, so that nothing else runs in this process while RSS is measured.

use std::ffi::c_void;
use std::ptr::{null, null_mut};

use osft::ffi::osft_status::*;
use osft::ffi::*;
use osft_test_support::capi::*;
use osft_test_support::{seeded, Draw};

fn ok(st: osft_status) {
    assert_eq!(st, OSFT_STATUS_OK, "{}", msg());
}

fn held(c: &Ctx) -> usize {
    let mut b = usize::MAX;
    unsafe { ok(osft_context_workspace_bytes(c.0, &mut b)) };
    b
}

struct Small {
    u: Vec<f32>,
    x: Vec<f32>,
    out: Vec<f32>,
    w: Vec<f64>,
    s: Vec<f64>,
    uh: Vec<f64>,
    vh: Vec<f64>,
    rec: Vec<f64>,
    r: Vec<f64>,
}

/// One call of a rotating mix of ops (successes and failures); returns the calls made.
fn call(c: &Ctx, d: &mut Small, i: usize) -> usize {
    unsafe {
        match i % 12 {
            0 => {
                ok(osft_project(c.0, LEFT, &rm(&d.u, F32, 8, 2), null(), &rm(&d.x, F32, 8, 6), &rm(&d.out, F32, 8, 6)))
            }
            1 => ok(osft_svd(c.0, &rm(&d.w, F64, 6, 4), null(), &rm(&d.s, F64, 4, 1), null(), F64)),
            2 => ok(osft_decompose(
                c.0,
                &rm(&d.w, F64, 6, 4),
                2,
                &rm(&d.uh, F64, 6, 2),
                &rm(&d.s, F64, 2, 1),
                &rm(&d.vh, F64, 2, 4),
                null(),
                null(),
                null(),
                F64,
            )),
            3 => ok(osft_reconstruct(
                c.0,
                &rm(&d.uh, F64, 6, 2),
                &rm(&d.s, F64, 2, 1),
                &rm(&d.vh, F64, 2, 4),
                null(),
                null(),
                null(),
                &cm(&d.rec, F64, 6, 4),
                F32,
            )),
            4 => ok(osft_leakage(c.0, LEFT, &rm(&d.u, F32, 8, 2), &rm(&d.x, F32, 8, 6), d.r.as_mut_ptr(), 4)),
            5 => {
                // A failure: a message is allocated and replaced.
                assert_eq!(
                    osft_project(c.0, LEFT, &rm(&d.u, F32, 8, 2), null(), &rm(&d.x, F32, 7, 6), null()),
                    OSFT_STATUS_INVALID_SHAPE
                );
            }
            6 => {
                let mut k = 0i64;
                ok(osft_select_rank(d.s.as_ptr(), 2, 2, 0.9, &mut k));
            }
            7 => {
                let mut p = null_mut();
                ok(osft_projector_create(c.0, BOTH, &rm(&d.uh, F64, 6, 2), &rm(&d.vh, F64, 2, 4), 2, &mut p));
                ok(osft_projector_apply(p, &rm(&d.w, F64, 6, 4), &rm(&d.rec, F64, 6, 4)));
                osft_projector_destroy(p);
                return 3;
            }
            8 => {
                let mut c2 = null_mut();
                ok(osft_context_create(0, 0, &mut c2));
                ok(osft_read_vector(c2, &rm(&d.s, F64, 2, 1), d.r.as_mut_ptr(), 4));
                osft_context_destroy(c2);
                return 3;
            }
            9 => ok(osft_orthonormality_error(c.0, LEFT, &rm(&d.uh, F64, 6, 2), d.r.as_mut_ptr(), 4)),
            10 => ok(osft_context_release_workspace(c.0)),
            _ => {
                assert_eq!(osft_debug_panic(), OSFT_STATUS_INTERNAL);
            }
        }
    }
    1
}

#[test]
fn memory_is_bounded() {
    // The panic-boundary call prints through the panic hook every time: silence it.
    std::panic::set_hook(Box::new(|_| {}));
    workspace_is_bounded_and_released();
    no_rss_growth_over_100k_calls();
    let _ = std::panic::take_hook();
}

fn no_rss_growth_over_100k_calls() {
    let c = Ctx::cpu();
    let mut g = seeded(1);
    let mut d = Small {
        u: basis(&c, 2, 8, 2).iter().map(|v| *v as f32).collect(),
        x: g.uniform_vec32(48),
        out: vec![0.0; 48],
        w: g.uniform_vec(24),
        s: vec![0.0; 4],
        uh: vec![0.0; 12],
        vh: vec![0.0; 8],
        rec: vec![0.0; 24],
        r: vec![0.0; 4],
    };
    let mut calls = 0;
    let mut i = 0;
    while calls < 10_000 {
        calls += call(&c, &mut d, i);
        i += 1;
    }
    let before = rss_bytes();
    let t = std::time::Instant::now();
    calls = 0;
    let mut peak = before;
    while calls < 100_000 {
        calls += call(&c, &mut d, i);
        i += 1;
        if i % 5000 == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    let after = rss_bytes();
    eprintln!(
        "RSS after a 10 000-call warm-up: {} KiB; after {calls} more calls ({:.1} s): {} KiB (peak {} KiB)",
        before / 1024,
        t.elapsed().as_secs_f64(),
        after / 1024,
        peak / 1024
    );
    // Slack for allocator noise (thread arenas, the panic machinery): 1 MiB. A leak of even 16
    // bytes per call would be 1.6 MB.
    assert!(after <= before + (1 << 20), "RSS grew by {} KiB over {calls} calls", (after - before) / 1024);
}

fn workspace_is_bounded_and_released() {
    let c = Ctx::cpu();
    assert_eq!(held(&c), 0, "a new context holds no workspace");
    let mut g = seeded(3);
    // Ops of growing and shrinking needs: the cache is the largest need so far, never more.
    let sizes = [(16i64, 8i64), (64, 32), (8, 4), (200, 100), (32, 16), (200, 100), (4, 4)];
    let mut max_need = 0usize;
    for (n, m) in sizes {
        let w = g.uniform_vec((n * m) as usize);
        let s = vec![0f64; m as usize];
        let x = g.uniform_vec((n * m * 2) as usize);
        let u = basis(&c, 4, n as usize, 2);
        // Column-strided X: projection stages it through the workspace.
        let xd = mat(x.as_ptr(), F64, n, m, 2 * m, 2);
        unsafe {
            let (mut a, mut b) = (0usize, 0usize);
            ok(osft_svd_workspace_size(c.0, &rm(&w, F64, n, m), F64, &mut a));
            ok(osft_project_workspace_size(c.0, LEFT, &rm(&u, F64, n, 2), null(), &xd, null(), &mut b));
            ok(osft_svd(c.0, &rm(&w, F64, n, m), null(), &rm(&s, F64, m, 1), null(), F64));
            max_need = max_need.max(a);
            assert_eq!(held(&c), max_need, "after an SVD needing {a} bytes");
            ok(osft_project(c.0, LEFT, &rm(&u, F64, n, 2), null(), &xd, null()));
            max_need = max_need.max(b);
            assert_eq!(held(&c), max_need, "after a projection needing {b} bytes");
        }
    }
    // Repeating the largest op does not grow it.
    let (n, m) = (200i64, 100i64);
    let w = g.uniform_vec((n * m) as usize);
    let s = vec![0f64; m as usize];
    for _ in 0..50 {
        unsafe { ok(osft_svd(c.0, &rm(&w, F64, n, m), null(), &rm(&s, F64, m, 1), null(), F64)) };
    }
    assert_eq!(held(&c), max_need);
    // Release: nothing held; the next op allocates only what it needs.
    unsafe { ok(osft_context_release_workspace(c.0)) };
    assert_eq!(held(&c), 0);
    let small = g.uniform_vec(12);
    let ss = vec![0f64; 3];
    let mut need = 0usize;
    unsafe {
        ok(osft_svd_workspace_size(c.0, &rm(&small, F64, 4, 3), F64, &mut need));
        ok(osft_svd(c.0, &rm(&small, F64, 4, 3), null(), &rm(&ss, F64, 3, 1), null(), F64));
    }
    assert_eq!(held(&c), need);

    // A large workspace (> 64 MiB: always its own mapping) is returned to the system on release.
    let (n, m) = (1i64 << 17, 64i64);
    let big = g.uniform_vec32((n * m) as usize);
    let s = vec![0f32; m as usize];
    let mut need = 0usize;
    unsafe { ok(osft_svd_workspace_size(c.0, &rm(&big, F32, n, m), F64, &mut need)) };
    assert!(need > 64 << 20, "{need}");
    let r0 = rss_bytes();
    unsafe { ok(osft_svd(c.0, &rm(&big, F32, n, m), null(), &rm(&s, F32, m, 1), null(), F64)) };
    assert_eq!(held(&c), need);
    let r1 = rss_bytes();
    unsafe { ok(osft_context_release_workspace(c.0)) };
    let r2 = rss_bytes();
    assert_eq!(held(&c), 0);
    eprintln!(
        "workspace of {} MiB: RSS {} -> {} -> {} MiB (before, after the SVD, after release)",
        need >> 20,
        r0 >> 20,
        r1 >> 20,
        r2 >> 20
    );
    assert!(r1 >= r0 + need / 2, "the SVD did not use its workspace?");
    assert!(
        r2 + need * 3 / 4 <= r1,
        "release_workspace did not give the memory back: RSS {} -> {} MiB",
        r1 >> 20,
        r2 >> 20
    );

    // A caller workspace is reported as held and forgotten (not freed: it is the caller's).
    let mut mine = vec![0u64; 1 << 16];
    unsafe {
        ok(osft_context_set_workspace(c.0, mine.as_mut_ptr() as *mut c_void, 8 << 16));
        assert_eq!(held(&c), 8 << 16);
        ok(osft_svd(c.0, &rm(&small, F64, 4, 3), null(), &rm(&ss, F64, 3, 1), null(), F64));
        assert_eq!(held(&c), 8 << 16, "a caller workspace is never grown");
        ok(osft_context_release_workspace(c.0));
    }
    assert_eq!(held(&c), 0);
    mine[0] = 1; // still ours
}
