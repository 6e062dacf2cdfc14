//! Regression tests through the C ABI: one test per bug found by the fuzzer, valgrind and review
//! (RELIABILITY.md, "Bugs and the tests that guard them"); each comment describes the faulty
//! behaviour the test refuses. The tests of sizes that wrap or allocations that abort run their
//! calls in a child process (this test binary again, filtered to the one test).

use std::ffi::c_void;
use std::ptr::{null, null_mut};

use osft::ffi::osft_status::*;
use osft::ffi::*;
use osft_test_support::capi::*;
use osft_test_support::{seeded, Draw};

/// Reconstruction into an output whose batch entries interleave (batch innermost:
/// `batch_stride = 1`, `col_stride = batch`, `row_stride = batch * cols` — a valid layout with
/// distinct addresses, e.g. a `N x M x B` tensor viewed as a batch of B matrices). The output is
/// not staged, and the batched GEMM refuses `strideC = 1`: OSFT_STATUS_PRECONDITION ("a bug in
/// osft"). Same with in-place projection of such an X, and a projector's out.
#[test]
fn regression_interleaved_batch_output_precondition() {
    let c = Ctx::cpu();
    let (n, m, b) = (3i64, 1i64, 3i64);
    let u = vec![1.0f32; 9];
    let s = vec![1.0f32; 3];
    let v = vec![1.0f32; 3];
    let w = vec![0f32; 9];
    // W: 3 x 1, batch 3, element (e, i, 0) at e + 3 i.
    let wd = batched(mat(w.as_ptr(), F32, n, m, b * m, b), b, 1);
    unsafe {
        let st = osft_reconstruct(
            c.0,
            &batched(rm(&u, F32, 3, 1), 1, 0),
            &rm(&s, F32, 1, 1),
            &rm(&v, F32, 1, 1),
            null(),
            null(),
            null(),
            &wd,
            F32,
        );
        expect(st, OSFT_STATUS_OK);
    }
    assert!(w.iter().all(|x| *x == 1.0), "{w:?}");
    // In-place projection of such an X (rows 2, cols 3, batch 2 interleaved).
    let x = seeded(31).uniform_vec32(12);
    let xd = batched(mat(x.as_ptr(), F32, 2, 3, 6, 2), 2, 1);
    let ub = [1.0f32, 0.0];
    unsafe { expect(osft_project(c.0, LEFT, &rm(&ub, F32, 2, 1), null(), &xd, null()), OSFT_STATUS_OK) };
}

/// `OSFT_STRATEGY_AUTO` picks the cached projector by flops and size alone (`k > 0.556 n`,
/// f32/f64), then refuses a batched basis ("a cached projector takes one basis, not a batch")
/// or a non-BLAS one, which the coefficient form takes: AUTO should fall back to it.
#[test]
fn regression_auto_strategy_refuses_batched_basis() {
    let c = Ctx::cpu();
    let (n, k, m, b) = (5i64, 4i64, 6i64, 3i64);
    let v = seeded(41).uniform_vec((b * k * m) as usize);
    let vd = batched(rm(&v, F64, k, m), b, k * m);
    let x0 = seeded(43).uniform_vec((b * n * m) as usize);
    // X_b - (X_b V_b^T) V_b in f64, for row-major X_b (n x m) and V_b (k x m) at the given
    // element strides of V: the projection formula holds for any V, orthonormal or not.
    let reference = |x: &[f64], vb: &dyn Fn(i64, i64) -> f64| -> Vec<f64> {
        let mut y = x.to_vec();
        for i in 0..n {
            for t in 0..k {
                let c: f64 = (0..m).map(|j| x[(i * m + j) as usize] * vb(t, j)).sum();
                for j in 0..m {
                    y[(i * m + j) as usize] -= c * vb(t, j);
                }
            }
        }
        y
    };
    // f64 data and compute: each entry sums 2 k m products of O(1) terms.
    let tol = 8.0 * (2 * k * m) as f64 * f64::EPSILON;
    let mut p = null_mut();
    unsafe {
        for strategy in [osft_strategy::OSFT_STRATEGY_COEFFICIENT, osft_strategy::OSFT_STRATEGY_AUTO] {
            // The coefficient form takes this basis, and AUTO falls back to it.
            expect(osft_projector_create(c.0, RIGHT, null(), &vd, strategy as i32, &mut p), OSFT_STATUS_OK);
            let (mut l, mut r) = (-9, -9);
            expect(osft_projector_strategies(p, &mut l, &mut r), OSFT_STATUS_OK);
            assert_eq!((l, r), (-1, osft_strategy::OSFT_STRATEGY_COEFFICIENT as i32), "{strategy:?}");
            // Applying it projects each X_b against its own V_b.
            let x = x0.clone();
            let xd = batched(rm(&x, F64, n, m), b, n * m);
            expect(osft_projector_apply(p, &xd, null()), OSFT_STATUS_OK);
            for e in 0..b {
                let off = (e * n * m) as usize;
                let vb = |t: i64, j: i64| v[(e * k * m + t * m + j) as usize];
                let want = reference(&x0[off..off + (n * m) as usize], &vb);
                for (q, w) in want.iter().enumerate() {
                    assert!((x[off + q] - w).abs() <= tol, "{strategy:?} batch {e} element {q}: {} vs {w}", x[off + q]);
                }
            }
            osft_projector_destroy(p);
        }
        // A non-BLAS single basis (every other column): AUTO takes the coefficient form, and the
        // projection is right.
        let v2 = seeded(42).uniform_vec((2 * k * m) as usize);
        expect(
            osft_projector_create(
                c.0,
                RIGHT,
                null(),
                &mat(v2.as_ptr(), F64, k, m, 2 * m, 2),
                osft_strategy::OSFT_STRATEGY_AUTO as i32,
                &mut p,
            ),
            OSFT_STATUS_OK,
        );
        let x = x0[..(n * m) as usize].to_vec();
        expect(osft_projector_apply(p, &rm(&x, F64, n, m), null()), OSFT_STATUS_OK);
        let want = reference(&x0[..(n * m) as usize], &|t, j| v2[(t * 2 * m + 2 * j) as usize]);
        for (q, w) in want.iter().enumerate() {
            assert!((x[q] - w).abs() <= tol, "strided basis, element {q}: {} vs {w}", x[q]);
        }
        osft_projector_destroy(p);
    }
}

/// `osft_svd_list` factors problem after problem; when a later problem holds NaN/Inf it returns
/// OSFT_STATUS_NON_FINITE after the earlier problems' outputs were written. A single
/// `osft_svd` of a batch (context workspace) writes nothing on NON_FINITE, and the docs promise
/// "nothing is written on failure" with "every problem validated before any output is
/// written": scan every problem before factoring (or document the exception).
#[test]
fn regression_svd_list_non_finite_writes_earlier_problems() {
    let c = Ctx::cpu();
    let w0 = seeded(51).uniform_vec(12);
    let mut w1 = seeded(52).uniform_vec(12);
    w1[5] = f64::NAN;
    let (s0, s1) = (poisoned64(3), poisoned64(3));
    let ws = [rm(&w0, F64, 4, 3), rm(&w1, F64, 4, 3)];
    let ss = [rm(&s0, F64, 3, 1), rm(&s1, F64, 3, 1)];
    unsafe { expect(osft_svd_list(c.0, 2, ws.as_ptr(), null(), ss.as_ptr(), null(), F64), OSFT_STATUS_NON_FINITE) };
    assert!(s0.iter().all(|v| v.to_bits() == 0x7ff8_0000_dead_beef), "problem 0 was written: {s0:?}");
}

/// In-place projection of a basis onto itself: `X` is the very descriptor of `U_high` (or of
/// `V_high`) and `out = NULL`. The output (X) shares memory with an input (the basis), which the
/// docs call OSFT_STATUS_OVERLAP, but `check_disjoint` exempts identical descriptors (meant for
/// `out == X`), so the call is accepted and the second GEMM (`X -= U C`) writes the matrix it
/// reads as `U`. Here `U` is not orthonormal, so the right answer `U - U (U^T U)` is far from 0.
#[test]
fn regression_in_place_projection_of_the_basis_itself() {
    let c = Ctx::cpu();
    let (n, k) = (6usize, 2usize);
    let u = seeded(71).uniform_vec(n * k);
    let want: Vec<f64> = (0..n * k)
        .map(|t| {
            let (i, j) = (t / k, t % k);
            let coef = |q: usize| (0..n).map(|l| u[l * k + q] * u[l * k + j]).sum::<f64>();
            u[t] - (0..k).map(|q| u[i * k + q] * coef(q)).sum::<f64>()
        })
        .collect();
    let x = u.clone();
    let d = rm(&x, F64, n as i64, k as i64);
    let st = unsafe { osft_project(c.0, LEFT, &d, null(), &d, null()) };
    let err = x.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert_eq!(st, OSFT_STATUS_OVERLAP, "accepted; max error against U - U (U^T U): {err:.3e} (result {x:?})");
}

/// When every term has rank 0 (`k = 0` high part and nothing else, or both parts empty),
/// reconstruction writes `W = 0` as `axpby(0, acc, 0, acc)` (src/ops/reconstruct.rs,
/// `accumulate`), i.e. `0 * acc`, where `acc` is the caller's previous output or uninitialised
/// workspace: NaN/Inf there gives NaN instead of 0 (valgrind reports the uninitialised read
/// through osft_reconstruction_error). Write zeros instead (beta = 0 must not read C).
#[test]
fn regression_rank_zero_reconstruction_multiplies_garbage() {
    let c = Ctx::cpu();
    let (n, m) = (4i64, 3i64);
    let z = mat(null::<f64>(), F64, n, 0, 0, 1);
    let zs = mat(null::<f64>(), F64, 0, 1, 1, 1);
    let zv = mat(null::<f64>(), F64, 0, m, m, 1);
    // The caller's output held NaN: W must become 0.
    let w = vec![f64::NAN; (n * m) as usize];
    unsafe {
        expect(osft_reconstruct(c.0, &z, &zs, &zv, null(), null(), null(), &rm(&w, F64, n, m), F64), OSFT_STATUS_OK)
    };
    let bad_out = w.iter().filter(|v| **v != 0.0).count();
    // The reconstruction error of W by nothing is ||W|| / ||W|| = 1, with a workspace full of NaN.
    let wv = seeded(81).uniform_vec((n * m) as usize);
    let mut r = [0f64; 1];
    unsafe {
        let mut need = 0usize;
        expect(
            osft_reconstruction_error_workspace_size(
                c.0,
                &rm(&wv, F64, n, m),
                &z,
                &zs,
                &zv,
                null(),
                null(),
                null(),
                F64,
                &mut need,
            ),
            OSFT_STATUS_OK,
        );
        let mut ws = vec![f64::NAN; need.div_ceil(8) + 1];
        expect(osft_context_set_workspace(c.0, ws.as_mut_ptr() as *mut c_void, need), OSFT_STATUS_OK);
        expect(
            osft_reconstruction_error(
                c.0,
                &rm(&wv, F64, n, m),
                &z,
                &zs,
                &zv,
                null(),
                null(),
                null(),
                F64,
                r.as_mut_ptr(),
                1,
            ),
            OSFT_STATUS_OK,
        );
        expect(osft_context_release_workspace(c.0), OSFT_STATUS_OK);
    }
    assert!(
        bad_out == 0 && (r[0] - 1.0).abs() < 1e-12,
        "W by rank-0 terms: {bad_out} non-zero elements {w:?}; error by nothing: {} (want 1)",
        r[0]
    );
}

/// `osft_read_vector` of an empty vector (`0 x 1`, a valid descriptor: empty matrices need no
/// memory) with a huge batch count: `need = rows * cols * batch = 0`, so `out = NULL`,
/// `out_len = 0` pass, and then `read_vector` builds `vec![vec![]; batch]` (src/ops/rank.rs):
/// for `batch = 2^62` a capacity-overflow panic (OSFT_STATUS_INTERNAL), for `batch = 2^40` a
/// 24 TiB allocation whose failure aborts the process (SIGABRT). Found by the fuzzer
/// (`diagnostics`). Expected: OK (nothing to read), or an error status — not a panic or abort.
#[test]
fn regression_read_vector_empty_vector_huge_batch() {
    if let Ok(b) = std::env::var("OSFT_HARDENING_CHILD_BATCH") {
        let c = Ctx::cpu();
        let v = batched(mat(null::<f64>(), F64, 0, 1, 1, 1), b.parse().unwrap(), 0);
        let st = unsafe { osft_read_vector(c.0, &v, null_mut(), 0) };
        println!("child status {st:?}: {}", msg());
        assert!(st == OSFT_STATUS_OK || !matches!(st, OSFT_STATUS_INTERNAL | OSFT_STATUS_PRECONDITION), "{st:?}");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut failures = vec![];
    for batch in [1i64 << 62, 1i64 << 40] {
        let out = std::process::Command::new(&exe)
            .args(["--exact", "regression_read_vector_empty_vector_huge_batch", "--nocapture", "--test-threads=1"])
            .env("OSFT_HARDENING_CHILD_BATCH", batch.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains("child status") {
            failures.push(format!(
                "batch {batch}: child ended with {:?}: {}",
                out.status,
                stdout.lines().filter(|l| l.contains("child")).collect::<Vec<_>>().join(" ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `osft_svd_list` validates each problem on its own: outputs of different problems that share
/// memory, or an output of one problem over the input `W` of a later one, are not reported
/// (the docs: "Outputs must not share memory with each other or with inputs"). Problem 0 then
/// writes into problem 1's W before problem 1 is factored: a silently wrong result.
#[test]
fn regression_svd_list_cross_problem_overlap_not_detected() {
    let c = Ctx::cpu();
    let w0 = seeded(61).uniform_vec(12);
    let w1 = seeded(62).uniform_vec(12);
    let s1 = poisoned64(3);
    let before = snap(&[&bytes_of(&w1), &bytes_of(&s1)]);
    let ws = [rm(&w0, F64, 4, 3), rm(&w1, F64, 4, 3)];
    // Problem 0's S is the first row of problem 1's W.
    let ss = [rm(&w1, F64, 3, 1), rm(&s1, F64, 3, 1)];
    unsafe { expect(osft_svd_list(c.0, 2, ws.as_ptr(), null(), ss.as_ptr(), null(), F64), OSFT_STATUS_OVERLAP) };
    assert_eq!(before, snap(&[&bytes_of(&w1), &bytes_of(&s1)]));
}

/// Scratch sizes are `rows * cols * batch` elements (checked) times the element size
/// (unchecked, `Ws::mat` in src/ops/mod.rs): for a basis of `1 x 2^31` f16 (4 GiB, a valid
/// descriptor), the orthonormality Gram matrix is `2^31 x 2^31` f32 = 2^64 bytes, which wraps to
/// 0, and the workspace query reports a few hundred bytes. The leakage coefficient matrix
/// (`k x M` for a `1 x k` basis and a `1 x M` X) wraps the same way. The query reads no data:
/// the bases here are PROT_NONE reservations. Expected: OSFT_STATUS_OVERFLOW or
/// OSFT_STATUS_ALLOCATION_FAILED, as for any impossible size.
#[test]
fn regression_workspace_size_wraps_for_wide_bases() {
    let c = Ctx::cpu();
    let k = 1i64 << 31;
    let Some(map) = Mapping::new(2 * k as usize, false) else {
        eprintln!("skipped: cannot reserve 4 GiB of address space");
        return;
    };
    let wide = mat(map.ptr as *const osft::f16, F16, 1, k, k, 1); // 1 x 2^31 f16
    unsafe {
        let mut bytes = 0usize;
        let st = osft_orthonormality_error_workspace_size(c.0, LEFT, &wide, &mut bytes);
        assert!(
            st != OSFT_STATUS_OK || bytes as u128 >= (k as u128) * (k as u128) * 4,
            "orthonormality: {st:?}, {bytes} bytes for a 2^31 x 2^31 f32 Gram matrix"
        );
        let st = osft_leakage_workspace_size(c.0, LEFT, &wide, &wide, &mut bytes);
        assert!(
            st != OSFT_STATUS_OK || bytes as u128 >= (k as u128) * (k as u128) * 4,
            "leakage: {st:?}, {bytes} bytes for a 2^31 x 2^31 f32 coefficient matrix"
        );
        // read_vector of an f16 vector of 2^61 elements (2^62 bytes: a valid descriptor, but no
        // such mapping can exist, so only the query is affected): 2^61 doubles = 2^64 bytes.
        // The address is never dereferenced by a query.
        let v = mat(map.ptr as *const osft::f16, F16, 1 << 61, 1, 1, 1);
        let st = osft_read_vector_workspace_size(c.0, &v, &mut bytes);
        assert!(
            st != OSFT_STATUS_OK || bytes as u128 >= 8u128 << 61,
            "read_vector: {st:?}, {bytes} bytes for 2^61 doubles"
        );
    }
}

/// The same wrap, where it writes: `osft_projector_create(..., OSFT_STRATEGY_CACHED_PROJECTOR)`
/// with a `2^31 x 1` f32 basis (8 GiB, mapped read-only zeros) sizes `P` as `n * n * 4` bytes
/// (src/context.rs, unchecked) = 2^64, which wraps to 0: a 1-byte allocation, then the GEMM
/// writes `P = I - B B^T` (2^62 elements) through it — a heap overflow (SIGSEGV). Likewise
/// `osft_orthonormality_error` and `osft_leakage` with `1 x 2^31` f32 bases (the wrapped
/// workspace holds the `2^31 x 2^31` result: SIGSEGV). With an f16 basis the CPU executor's
/// half-precision GEMM first allocates its f32 copy of `A` with `vec!` (2 TiB), and a failed
/// `vec!` allocation aborts the process (SIGABRT: "memory allocation of ... bytes failed") instead
/// of returning OSFT_STATUS_ALLOCATION_FAILED. Each runs in a child process; expected: an error
/// status, not a signal.
#[test]
fn regression_scratch_size_wrap_overflows_the_heap() {
    if let Ok(which) = std::env::var("OSFT_HARDENING_CHILD") {
        let c = Ctx::cpu();
        let n = 1i64 << 31;
        let map = Mapping::new(4 * n as usize, true).expect("8 GiB of address space");
        let mut r = [0f64; 1];
        let st = unsafe {
            match which.as_str() {
                "projector" => {
                    let mut p = null_mut();
                    osft_projector_create(
                        c.0,
                        LEFT,
                        &cm(std::slice::from_raw_parts(map.ptr as *const f32, n as usize), F32, n, 1),
                        null(),
                        2,
                        &mut p,
                    )
                }
                "orthonormality" => osft_orthonormality_error(
                    c.0,
                    LEFT,
                    &mat(map.ptr as *const f32, F32, 1, n, n, 1),
                    r.as_mut_ptr(),
                    1,
                ),
                "orthonormality_f16" => osft_orthonormality_error(
                    c.0,
                    LEFT,
                    &mat(map.ptr as *const osft::f16, F16, 1, n, n, 1),
                    r.as_mut_ptr(),
                    1,
                ),
                _ => {
                    let wide = mat(map.ptr as *const f32, F32, 1, n, n, 1);
                    osft_leakage(c.0, LEFT, &wide, &wide, r.as_mut_ptr(), 1)
                }
            }
        };
        println!("child status {st:?}: {}", msg());
        assert_ne!(st, OSFT_STATUS_OK);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut failures = vec![];
    for which in ["projector", "orthonormality", "leakage", "orthonormality_f16"] {
        let out = std::process::Command::new(&exe)
            .args(["--exact", "regression_scratch_size_wrap_overflows_the_heap", "--nocapture", "--test-threads=1"])
            .env("OSFT_HARDENING_CHILD", which)
            .output()
            .unwrap();
        // A child that ran nothing (a filter matching no test) would pass silently.
        if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("child status") {
            failures.push(format!(
                "{which}: child ended with {:?}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.contains("child") || l.contains("panicked"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
