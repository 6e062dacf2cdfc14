//! The ops through the C ABI against float64 references computed here with naive loops:
//! decompose (row- and column-major, `k` at both edges) with projection, diagnostics and
//! `read_vector`; SVD single, batched and as a list; reconstruction; projection on both sides,
//! projectors of every strategy and the two-phase (sharded) projection; and the SVD's sign
//! convention against an independent f64 Jacobi SVD.

use std::ptr::{null, null_mut};

use osft::ffi::osft_status::*;
use osft::ffi::*;
use osft_test_support::capi::*;
use osft_test_support::{seeded, Draw};

/// Element (i, j) of a host descriptor, as f64.
fn at(m: &osft_matrix, i: i64, j: i64) -> f64 {
    let off = (i * m.row_stride + j * m.col_stride) as usize;
    unsafe {
        match m.dtype {
            0 => *(m.data as *const f32).add(off) as f64,
            1 => *(m.data as *const f64).add(off),
            _ => unreachable!(),
        }
    }
}

/// `W` (`n x m`) in row-major or column-major f32; decompose at `k`; check `U` orthonormal,
/// `S` descending, the reconstruction, the projection against `X - U (U^T X)` and the leakage.
fn decompose_and_project(n: i64, m: i64, k: i64, row_major: bool) {
    let c = Ctx::cpu();
    let r = n.min(m);
    let mut g = seeded(n as u64 * 1000 + m as u64 * 10 + row_major as u64);
    let w: Vec<f32> = g.uniform_vec((n * m) as usize).into_iter().map(|v| v as f32).collect();
    let lay =
        |v: &Vec<f32>, rows: i64, cols: i64| if row_major { rm(v, F32, rows, cols) } else { cm(v, F32, rows, cols) };
    let wd = lay(&w, n, m);
    let (uh, sh, vh) = (vec![0f32; (n * k) as usize], vec![0f32; k as usize], vec![0f32; (k * m) as usize]);
    let (ul, sl, vl) =
        (vec![0f32; (n * (r - k)) as usize], vec![0f32; (r - k) as usize], vec![0f32; ((r - k) * m) as usize]);
    let (uhd, shd, vhd) = (lay(&uh, n, k), lay(&sh, k, 1), lay(&vh, k, m));
    let (uld, sld, vld) = (lay(&ul, n, r - k), lay(&sl, 1, r - k), lay(&vl, r - k, m));
    unsafe {
        let mut ws = 0usize;
        expect(osft_decompose_workspace_size(c.0, &wd, F32, &mut ws), OSFT_STATUS_OK);
        assert!(ws > 0);
        expect(osft_decompose(c.0, &wd, k, &uhd, &shd, &vhd, &uld, &sld, &vld, F32), OSFT_STATUS_OK);
    }
    // S descending and non-negative.
    let s: Vec<f64> = sh.iter().chain(sl.iter()).map(|v| *v as f64).collect();
    assert!(s.windows(2).all(|p| p[0] >= p[1]) && s[s.len() - 1] >= 0.0, "{s:?}");
    // U = [U_high U_low] orthonormal columns; V rows orthonormal.
    let ucol = |j: i64, i: i64| if j < k { at(&uhd, i, j) } else { at(&uld, i, j - k) };
    let vrow = |i: i64, j: i64| if i < k { at(&vhd, i, j) } else { at(&vld, i - k, j) };
    for a in 0..r {
        for b in 0..r {
            let du: f64 = (0..n).map(|i| ucol(a, i) * ucol(b, i)).sum();
            let dv: f64 = (0..m).map(|j| vrow(a, j) * vrow(b, j)).sum();
            let want = if a == b { 1.0 } else { 0.0 };
            assert!((du - want).abs() < 1e-4, "U^T U[{a},{b}] = {du}");
            assert!((dv - want).abs() < 1e-4, "V V^T[{a},{b}] = {dv}");
        }
    }
    // Reconstruction in f64.
    let wn: f64 =
        (0..n).flat_map(|i| (0..m).map(move |j| (i, j))).map(|(i, j)| at(&wd, i, j).powi(2)).sum::<f64>().sqrt();
    let mut err = 0.0;
    for i in 0..n {
        for j in 0..m {
            let rec: f64 = (0..r).map(|t| ucol(t, i) * s[t as usize] * vrow(t, j)).sum();
            err += (rec - at(&wd, i, j)).powi(2);
        }
    }
    assert!(err.sqrt() / wn < 1e-5, "reconstruction error {}", err.sqrt() / wn);
    // The library's own diagnostics agree.
    unsafe {
        let mut e = [f64::NAN; 2];
        // f32 compute: see `reconstruction_error_f64_compute_of_f32_data` for why not f64.
        expect(
            osft_reconstruction_error(c.0, &wd, &uhd, &shd, &vhd, &uld, &sld, &vld, F32, e.as_mut_ptr(), 2),
            OSFT_STATUS_OK,
        );
        assert!(e[0] < 1e-5 && e[1].is_nan(), "{e:?}");
        if k > 0 {
            let mut o = [f64::NAN];
            expect(osft_orthonormality_error(c.0, LEFT, &uhd, o.as_mut_ptr(), 1), OSFT_STATUS_OK);
            assert!(o[0] < 1e-5, "{o:?}");
            expect(osft_orthonormality_error(c.0, RIGHT, &vhd, o.as_mut_ptr(), 1), OSFT_STATUS_OK);
            assert!(o[0] < 1e-5, "{o:?}");
        }
        // Read S_high back to the host.
        let mut sv = vec![f64::NAN; k as usize + 1];
        expect(osft_read_vector(c.0, &shd, sv.as_mut_ptr(), sv.len()), OSFT_STATUS_OK);
        for t in 0..k as usize {
            assert_eq!(sv[t], sh[t] as f64);
        }
        assert!(sv[k as usize].is_nan(), "wrote past the vector");
    }
    // Project a gradient of U_low (n x (r-k)) left, out of place, then in place.
    let cols = (r - k).max(1);
    let x: Vec<f32> = g.uniform_vec((n * cols) as usize).into_iter().map(|v| v as f32).collect();
    let xd = lay(&x, n, cols);
    let reference: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..cols)
                .map(|j| {
                    let coef = |t: i64| (0..n).map(|l| at(&uhd, l, t) * at(&xd, l, j)).sum::<f64>();
                    at(&xd, i, j) - (0..k).map(|t| at(&uhd, i, t) * coef(t)).sum::<f64>()
                })
                .collect()
        })
        .collect();
    let out = vec![f32::NAN; (n * cols) as usize];
    let od = lay(&out, n, cols);
    let x_before = bytes_of(&x);
    unsafe { expect(osft_project(c.0, LEFT, &uhd, null(), &xd, &od), OSFT_STATUS_OK) };
    assert_eq!(bytes_of(&x), x_before, "out-of-place projection wrote X");
    for i in 0..n {
        for j in 0..cols {
            assert!((at(&od, i, j) - reference[i as usize][j as usize]).abs() < 1e-5, "({i},{j})");
        }
    }
    unsafe { expect(osft_project(c.0, LEFT, &uhd, null(), &xd, null()), OSFT_STATUS_OK) };
    assert_eq!(bytes_of(&x), bytes_of(&out), "in-place and out-of-place differ");
    if k > 0 {
        let mut leak = [f64::NAN; 1];
        unsafe { expect(osft_leakage(c.0, LEFT, &uhd, &xd, leak.as_mut_ptr(), 1), OSFT_STATUS_OK) };
        assert!(leak[0] < 1e-5, "leakage {}", leak[0]);
    }
}

#[test]
fn decompose_project_row_major() {
    decompose_and_project(9, 6, 2, true);
    decompose_and_project(5, 8, 3, true);
}

#[test]
fn decompose_project_col_major() {
    decompose_and_project(9, 6, 2, false);
    decompose_and_project(5, 8, 3, false);
}

#[test]
fn decompose_k_edges() {
    decompose_and_project(6, 4, 0, true);
    decompose_and_project(6, 4, 4, false);
}

#[test]
fn svd_single_batched_and_list() {
    let c = Ctx::cpu();
    let mut g = seeded(3);
    // A batch of 3 row-major 5 x 3 matrices in f64.
    let (b, n, m) = (3i64, 5i64, 3i64);
    let w = g.uniform_vec((b * n * m) as usize);
    let mut wd = rm(&w, F64, n, m);
    wd.batch = b;
    wd.batch_stride = n * m;
    let s = vec![0f64; (b * m) as usize];
    let mut sd = cm(&s, F64, m, 1);
    sd.batch = b;
    sd.batch_stride = m;
    let u = vec![0f64; (b * n * m) as usize];
    let mut ud = rm(&u, F64, n, m);
    ud.batch = b;
    ud.batch_stride = n * m;
    unsafe { expect(osft_svd(c.0, &wd, &ud, &sd, null(), F64), OSFT_STATUS_OK) };
    // Singular values squared are the eigenvalues of W^T W: check the trace and, per entry,
    // that U^T W W^T U = diag(s^2).
    for e in 0..b {
        let wat = |i: i64, j: i64| w[(e * n * m + i * m + j) as usize];
        let uat = |i: i64, j: i64| u[(e * n * m + i * m + j) as usize];
        let frob: f64 = (0..n * m).map(|t| w[(e * n * m + t) as usize].powi(2)).sum();
        let ss: f64 = (0..m).map(|t| s[(e * m + t) as usize].powi(2)).sum();
        assert!((frob - ss).abs() < 1e-10 * frob, "entry {e}: {frob} vs {ss}");
        for a in 0..m {
            // ||W^T u_a|| = s_a
            let norm: f64 =
                (0..m).map(|j| (0..n).map(|i| uat(i, a) * wat(i, j)).sum::<f64>().powi(2)).sum::<f64>().sqrt();
            assert!((norm - s[(e * m + a) as usize]).abs() < 1e-10, "entry {e} vector {a}");
        }
    }
    // The list form over two shapes gives the same singular values as single calls.
    let w2 = g.uniform_vec(4 * 7);
    let w2d = cm(&w2, F64, 4, 7);
    let first = rm(&w[..(n * m) as usize], F64, n, m);
    let (s1, s2) = (vec![0f64; 3], vec![0f64; 4]);
    let ws = [first, w2d];
    let ss = [cm(&s1, F64, 3, 1), rm(&s2, F64, 1, 4)];
    unsafe {
        let mut bytes = 0usize;
        expect(osft_svd_list_workspace_size(c.0, 2, ws.as_ptr(), F64, &mut bytes), OSFT_STATUS_OK);
        assert!(bytes > 0);
        expect(osft_svd_list(c.0, 2, ws.as_ptr(), null(), ss.as_ptr(), null(), F64), OSFT_STATUS_OK);
        expect(osft_svd_list(c.0, 0, null(), null(), null(), null(), F64), OSFT_STATUS_OK);
        expect(osft_svd_list(c.0, 2, null(), null(), ss.as_ptr(), null(), F64), OSFT_STATUS_NULL_POINTER);
    }
    for t in 0..3 {
        assert!((s1[t] - s[t]).abs() < 1e-12);
    }
    let frob2: f64 = w2.iter().map(|v| v * v).sum();
    assert!((s2.iter().map(|v| v * v).sum::<f64>() - frob2).abs() < 1e-10 * frob2);
}

#[test]
fn reconstruct_matches_decomposition() {
    let c = Ctx::cpu();
    let mut g = seeded(11);
    let (n, m, k) = (7i64, 5i64, 2i64);
    let w = g.uniform_vec((n * m) as usize);
    let wd = rm(&w, F64, n, m);
    let (uh, sh, vh) = (vec![0f64; 14], vec![0f64; 2], vec![0f64; 10]);
    let (ul, sl, vl) = (vec![0f64; 21], vec![0f64; 3], vec![0f64; 15]);
    let (uhd, shd, vhd) = (rm(&uh, F64, n, k), rm(&sh, F64, k, 1), rm(&vh, F64, k, m));
    let (uld, sld, vld) = (cm(&ul, F64, n, 3), cm(&sl, F64, 3, 1), cm(&vl, F64, 3, m));
    let out = vec![f64::NAN; (n * m) as usize];
    let od = cm(&out, F64, n, m);
    unsafe {
        expect(osft_decompose(c.0, &wd, k, &uhd, &shd, &vhd, &uld, &sld, &vld, F64), OSFT_STATUS_OK);
        let mut bytes = 0usize;
        expect(
            osft_reconstruct_workspace_size(c.0, &uhd, &shd, &vhd, &uld, &sld, &vld, &od, F64, &mut bytes),
            OSFT_STATUS_OK,
        );
        expect(osft_reconstruct(c.0, &uhd, &shd, &vhd, &uld, &sld, &vld, &od, F64), OSFT_STATUS_OK);
    }
    for i in 0..n {
        for j in 0..m {
            assert!((at(&od, i, j) - w[(i * m + j) as usize]).abs() < 1e-12);
        }
    }
    // A partial triple is a NULL-pointer error naming the missing part; the output is untouched.
    let before = bytes_of(&out);
    let e = unsafe {
        expect(osft_reconstruct(c.0, &uhd, null(), &vhd, null(), null(), null(), &od, F64), OSFT_STATUS_NULL_POINTER)
    };
    assert!(e.contains("S_high"), "{e}");
    // No part at all.
    unsafe {
        expect(
            osft_reconstruct(c.0, null(), null(), null(), null(), null(), null(), &od, F64),
            OSFT_STATUS_INVALID_ARGUMENT,
        )
    };
    assert_eq!(bytes_of(&out), before);
}

#[test]
fn both_sides_projector_and_two_phase() {
    let c = Ctx::cpu();
    let mut g = seeded(5);
    let (n, m, k) = (8i64, 6i64, 3i64);
    let w = g.uniform_vec((n * m) as usize);
    let wd = rm(&w, F64, n, m);
    let (uh, vh) = (vec![0f64; (n * k) as usize], vec![0f64; (k * m) as usize]);
    let (uhd, vhd) = (rm(&uh, F64, n, k), rm(&vh, F64, k, m));
    unsafe { expect(osft_decompose(c.0, &wd, k, &uhd, null(), &vhd, null(), null(), null(), F64), OSFT_STATUS_OK) };
    let x = g.uniform_vec((n * m) as usize);
    let xd = rm(&x, F64, n, m);
    // Reference: (I - U U^T) X (I - V^T V), naive f64.
    let pu = |i: i64, l: i64| {
        (if i == l { 1.0 } else { 0.0 })
            - (0..k).map(|t| uh[(i * k + t) as usize] * uh[(l * k + t) as usize]).sum::<f64>()
    };
    let pv = |j: i64, l: i64| {
        (if j == l { 1.0 } else { 0.0 })
            - (0..k).map(|t| vh[(t * m + j) as usize] * vh[(t * m + l) as usize]).sum::<f64>()
    };
    let left: Vec<f64> = (0..n * m).map(|t| (0..n).map(|l| pu(t / m, l) * x[(l * m + t % m) as usize]).sum()).collect();
    let both: Vec<f64> =
        (0..n * m).map(|t| (0..m).map(|l| left[(t / m * m + l) as usize] * pv(l, t % m)).sum()).collect();
    let out = vec![0f64; (n * m) as usize];
    let od = cm(&out, F64, n, m);
    unsafe { expect(osft_project(c.0, BOTH, &uhd, &vhd, &xd, &od), OSFT_STATUS_OK) };
    for t in 0..n * m {
        assert!((at(&od, t / m, t % m) - both[t as usize]).abs() < 1e-12);
    }
    // Projectors, coefficient and cached, give the same; the projector outlives its context.
    for strategy in [
        osft_strategy::OSFT_STRATEGY_COEFFICIENT,
        osft_strategy::OSFT_STRATEGY_CACHED_PROJECTOR,
        osft_strategy::OSFT_STRATEGY_AUTO,
    ] {
        let c2 = Ctx::cpu();
        let mut p = null_mut();
        unsafe { expect(osft_projector_create(c2.0, BOTH, &uhd, &vhd, strategy as i32, &mut p), OSFT_STATUS_OK) };
        drop(c2);
        let (mut l, mut r) = (9, 9);
        unsafe { expect(osft_projector_strategies(p, &mut l, &mut r), OSFT_STATUS_OK) };
        if strategy != osft_strategy::OSFT_STRATEGY_AUTO {
            assert_eq!((l, r), (strategy as i32, strategy as i32));
        }
        let y = x.clone();
        let yd = rm(&y, F64, n, m);
        unsafe { expect(osft_projector_apply(p, &yd, null()), OSFT_STATUS_OK) };
        for t in 0..(n * m) as usize {
            assert!((y[t] - both[t]).abs() < 1e-12, "{strategy:?}");
        }
        unsafe { osft_projector_destroy(p) };
    }
    // A left-only projector reports -1 for the right side.
    let mut p = null_mut();
    unsafe {
        expect(osft_projector_create(c.0, LEFT, &uhd, null(), 1, &mut p), OSFT_STATUS_OK);
        let (mut l, mut r) = (9, 9);
        expect(osft_projector_strategies(p, &mut l, &mut r), OSFT_STATUS_OK);
        assert_eq!((l, r), (1, -1));
        expect(osft_projector_strategies(p, null_mut(), null_mut()), OSFT_STATUS_OK);
        osft_projector_destroy(p);
        let sentinel = 0x77 as *mut osft_projector;
        let mut p = sentinel;
        expect(osft_projector_create(c.0, LEFT, &uhd, null(), 3, &mut p), OSFT_STATUS_INVALID_ARGUMENT);
        expect(osft_projector_create(c.0, RIGHT, &uhd, null(), 1, &mut p), OSFT_STATUS_NULL_POINTER);
        assert_eq!(p, sentinel);
    }
    // Two-phase left projection over two row shards equals the unsharded left projection.
    let y = x.clone();
    let split = 5i64;
    let (ya, yb) = y.split_at((split * m) as usize);
    let (ua, ub) = uh.split_at((split * k) as usize);
    let (ca, cb) = (vec![0f64; (k * m) as usize], vec![0f64; (k * m) as usize]);
    unsafe {
        expect(
            osft_project_partial(c.0, LEFT, &rm(ua, F64, split, k), &rm(ya, F64, split, m), &rm(&ca, F64, k, m)),
            OSFT_STATUS_OK,
        );
        expect(
            osft_project_partial(
                c.0,
                LEFT,
                &rm(ub, F64, n - split, k),
                &rm(yb, F64, n - split, m),
                &rm(&cb, F64, k, m),
            ),
            OSFT_STATUS_OK,
        );
    }
    let sum: Vec<f64> = ca.iter().zip(&cb).map(|(a, b)| a + b).collect();
    unsafe {
        let mut bytes = 1usize;
        expect(
            osft_project_apply_workspace_size(c.0, &rm(&sum, F64, k, m), &rm(ya, F64, split, m), &mut bytes),
            OSFT_STATUS_OK,
        );
        assert_eq!(bytes, 0);
        expect(
            osft_project_apply(c.0, LEFT, &rm(ua, F64, split, k), &rm(&sum, F64, k, m), &rm(ya, F64, split, m)),
            OSFT_STATUS_OK,
        );
        expect(
            osft_project_apply(c.0, LEFT, &rm(ub, F64, n - split, k), &rm(&sum, F64, k, m), &rm(yb, F64, n - split, m)),
            OSFT_STATUS_OK,
        );
        expect(
            osft_project_partial(c.0, BOTH, &rm(ua, F64, split, k), &rm(ya, F64, split, m), &rm(&ca, F64, k, m)),
            OSFT_STATUS_INVALID_ARGUMENT,
        );
    }
    for t in 0..(n * m) as usize {
        assert!((y[t] - left[t]).abs() < 1e-12);
    }
}

/// The SVD's sign convention through the C ABI: in each column of U the entry of largest
/// magnitude is positive and the row of Vt flips with it, so that U diag(S) Vt is still W; and
/// U, S, Vt equal an independent f64 one-sided Jacobi SVD with the same convention applied.
#[test]
fn svd_sign_convention_against_f64_jacobi() {
    let c = Ctx::cpu();
    let mut g = seeded(0x51_6e_f1);
    for (n, m) in [(7usize, 4usize), (4, 7), (5, 5), (1, 6), (6, 1), (9, 3)] {
        let r = n.min(m);
        for dtype in [F32, F64] {
            for col_major in [false, true] {
                let wv = g.uniform_vec(n * m);
                let wref = osft_test_support::M { r: n, c: m, d: wv.clone() }; // row-major values
                let what = format!("{n}x{m} dtype {dtype} col_major {col_major}");
                // W in the requested layout; outputs row-major.
                let wl: Vec<f64> = if col_major { wref.t().d.clone() } else { wv.clone() };
                let wl32: Vec<f32> = wl.iter().map(|x| *x as f32).collect();
                let (u64v, s64v, vt64v) = (vec![f64::NAN; n * r], vec![f64::NAN; r], vec![f64::NAN; r * m]);
                let (u32v, s32v, vt32v) = (vec![f32::NAN; n * r], vec![f32::NAN; r], vec![f32::NAN; r * m]);
                let wd = match (dtype == F32, col_major) {
                    (true, false) => rm(&wl32, F32, n as i64, m as i64),
                    (true, true) => cm(&wl32, F32, n as i64, m as i64),
                    (false, false) => rm(&wl, F64, n as i64, m as i64),
                    (false, true) => cm(&wl, F64, n as i64, m as i64),
                };
                let (ud, sd, vtd) = if dtype == F32 {
                    (
                        rm(&u32v, F32, n as i64, r as i64),
                        rm(&s32v, F32, r as i64, 1),
                        rm(&vt32v, F32, r as i64, m as i64),
                    )
                } else {
                    (
                        rm(&u64v, F64, n as i64, r as i64),
                        rm(&s64v, F64, r as i64, 1),
                        rm(&vt64v, F64, r as i64, m as i64),
                    )
                };
                unsafe { expect(osft_svd(c.0, &wd, &ud, &sd, &vtd, dtype), OSFT_STATUS_OK) };
                let (u, s, vt) = if dtype == F32 {
                    let f = |v: &[f32]| v.iter().map(|x| *x as f64).collect::<Vec<f64>>();
                    (f(&u32v), f(&s32v), f(&vt32v))
                } else {
                    (u64v.clone(), s64v.clone(), vt64v.clone())
                };
                let um = osft_test_support::M { r: n, c: r, d: u };
                let vtm = osft_test_support::M { r, c: m, d: vt };
                // The f64 reference of the very matrix the library saw (f32-rounded for f32).
                let wseen = if dtype == F32 { wref.round::<f32>() } else { wref.clone() };
                let (ur, sr, vtr) = osft_test_support::jacobi_svd(&wseen);
                assert!(
                    osft_test_support::sign_violations(&um).is_empty(),
                    "{what}: columns of U with a negative largest entry: {:?}",
                    osft_test_support::sign_violations(&um)
                );
                // Rows of Vt flipped along: U diag(S) Vt is W.
                let rec = um.mul(&vtm.scale_rows(&s));
                let uc = if dtype == F32 { f32::EPSILON as f64 / 2.0 } else { f64::EPSILON / 2.0 };
                // Backward error of a one-sided SVD: O((n + m) u) ||W||.
                let scale = wseen.fro();
                assert!(rec.sub(&wseen).fro() <= 16.0 * (n + m) as f64 * uc * scale, "{what}: U S Vt is not W");
                for t in 0..r {
                    assert!(
                        (s[t] - sr[t]).abs() <= 16.0 * (n + m) as f64 * uc * scale,
                        "{what}: s[{t}] {} vs {}",
                        s[t],
                        sr[t]
                    );
                    // Singular vectors: perturbation O(u ||W|| / gap) (Wedin); a wrong sign is off by 2.
                    let gap = (0..r)
                        .filter(|&q| q != t)
                        .map(|q| (sr[q] - sr[t]).abs())
                        .fold(sr[t].max(scale * 1e-300), f64::min);
                    let gap = if r == 1 { scale } else { gap };
                    let tol = (16.0 * (n + m) as f64 * uc * scale / gap).min(0.5);
                    let du = (0..n).map(|i| (um.at(i, t) - ur.at(i, t)).abs()).fold(0.0, f64::max);
                    let dv = (0..m).map(|j| (vtm.at(t, j) - vtr.at(t, j)).abs()).fold(0.0, f64::max);
                    assert!(du <= tol && dv <= tol, "{what}: triplet {t}: |dU| {du:e}, |dVt| {dv:e}, tol {tol:e}");
                }
            }
        }
    }
}
