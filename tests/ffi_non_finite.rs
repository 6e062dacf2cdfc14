//! Non-finite input through the C ABI: SVD and decompose refuse NaN/Inf with
//! `OSFT_STATUS_NON_FINITE` and the batch index, and write nothing (every dtype, NaN, +Inf, -Inf,
//! first and last batch entries, both compute types, a caller workspace, single matrices and
//! lists); projection, two-phase, projectors, reconstruction and diagnostics propagate them as
//! IEEE arithmetic. Each test runs on a watchdog thread (`within`) and fails on a hang.

use std::ffi::c_void;
use std::ptr::{null, null_mut};

use osft::ffi::osft_status::*;
use osft::ffi::*;
use osft_test_support::capi::*;
use osft_test_support::{seeded, Draw};

fn put(dtype: i32, v: f64) -> Vec<u8> {
    match dtype {
        F32 => (v as f32).to_ne_bytes().to_vec(),
        F64 => v.to_ne_bytes().to_vec(),
        F16 => osft::f16::from_f64(v).to_bits().to_ne_bytes().to_vec(),
        _ => osft::bf16::from_f64(v).to_bits().to_ne_bytes().to_vec(),
    }
}

/// A batch of 3 row-major 5 x 4 matrices of `dtype` (as bytes in u64 storage) with `bad` at
/// element (1, 2) of entry `index`.
fn batch_with(dtype: i32, bad: f64, index: usize) -> Vec<u64> {
    let size = put(dtype, 0.0).len();
    let mut g = seeded(100 + index as u64);
    let mut bytes: Vec<u8> = (0..60).flat_map(|_| put(dtype, g.uniform())).collect();
    let at = (index * 20 + 6) * size;
    bytes[at..at + size].copy_from_slice(&put(dtype, bad));
    let mut v = vec![0u64; bytes.len().div_ceil(8)];
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr() as *mut u8, bytes.len()) };
    v
}

#[test]
fn non_finite_svd_and_decompose_are_refused() {
    within(120, "NaN/Inf through SVD and decompose", || {
        let c = Ctx::cpu();
        for dtype in [F32, F64, F16, BF16] {
            for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                for index in [0usize, 2] {
                    let w = batch_with(dtype, bad, index);
                    let wd = batched(mat(w.as_ptr() as *const u8, dtype, 5, 4, 4, 1), 3, 20);
                    let (u, s, vt) = (poisoned32(60), poisoned32(12), poisoned32(48));
                    let (ud, sd, vd) = (
                        batched(rm(&u, F32, 5, 4), 3, 20),
                        batched(rm(&s, F32, 4, 1), 3, 4),
                        batched(rm(&vt, F32, 4, 4), 3, 16),
                    );
                    let before = snap(&[&bytes_of(&w), &bytes_of(&u), &bytes_of(&s), &bytes_of(&vt)]);
                    for compute in [F32, F64] {
                        unsafe {
                            let m = expect(osft_svd(c.0, &wd, &ud, &sd, &vd, compute), OSFT_STATUS_NON_FINITE);
                            assert!(m.contains(&format!("matrix {index} of the batch")) && m.contains('W'), "{m}");
                            let m = expect(
                                osft_decompose(
                                    c.0,
                                    &wd,
                                    2,
                                    &batched(rm(&u, F32, 5, 2), 3, 10),
                                    &batched(rm(&s, F32, 2, 1), 3, 2),
                                    null(),
                                    &batched(rm(&vt, F32, 5, 2), 3, 10),
                                    null(),
                                    null(),
                                    compute,
                                ),
                                OSFT_STATUS_NON_FINITE,
                            );
                            assert!(m.contains(&format!("matrix {index}")), "{m}");
                            // Through a caller workspace of exactly the queried size: the same.
                            let mut need = 0usize;
                            expect(osft_svd_workspace_size(c.0, &wd, compute, &mut need), OSFT_STATUS_OK);
                            let mut ws = vec![0u64; need.div_ceil(8)];
                            expect(
                                osft_context_set_workspace(c.0, ws.as_mut_ptr() as *mut c_void, need),
                                OSFT_STATUS_OK,
                            );
                            expect(osft_svd(c.0, &wd, &ud, &sd, &vd, compute), OSFT_STATUS_NON_FINITE);
                            expect(osft_context_release_workspace(c.0), OSFT_STATUS_OK);
                            // Singular values only, and a single matrix.
                            let one = mat(
                                (w.as_ptr() as *const u8).add(index * 20 * put(dtype, 0.0).len()),
                                dtype,
                                5,
                                4,
                                4,
                                1,
                            );
                            let m = expect(
                                osft_svd(c.0, &one, null(), &rm(&s, F32, 4, 1), null(), compute),
                                OSFT_STATUS_NON_FINITE,
                            );
                            assert!(m.contains("matrix 0"), "{m}");
                        }
                    }
                    assert_eq!(
                        before,
                        snap(&[&bytes_of(&w), &bytes_of(&u), &bytes_of(&s), &bytes_of(&vt)]),
                        "{dtype} {bad} {index}: refused but wrote"
                    );
                    // The list form refuses too (which problem: the message names the matrix).
                    let ok = seeded(1).uniform_vec(12);
                    let lw = [rm(&ok, F64, 4, 3), wd];
                    let (s0, s1) = (poisoned64(3), poisoned64(12));
                    let ls = [rm(&s0, F64, 3, 1), batched(rm(&s1, F64, 4, 1), 3, 4)];
                    unsafe {
                        expect(
                            osft_svd_list(c.0, 2, lw.as_ptr(), null(), ls.as_ptr(), null(), F64),
                            OSFT_STATUS_NON_FINITE,
                        )
                    };
                    assert!(s1.iter().all(|v| v.to_bits() == 0x7ff8_0000_dead_beef));
                }
            }
        }
    });
}

/// Indices of the non-finite entries of a row-major `n x m` f64 matrix, as (rows, cols) sets.
fn nonfinite_lines(v: &[f64], n: usize, m: usize) -> (Vec<usize>, Vec<usize>) {
    let rows = (0..n).filter(|i| (0..m).all(|j| !v[i * m + j].is_finite())).collect();
    let cols = (0..m).filter(|j| (0..n).all(|i| !v[i * m + j].is_finite())).collect();
    (rows, cols)
}

#[test]
fn non_finite_propagates_through_projection_reconstruction_and_diagnostics() {
    within(120, "NaN/Inf through projection, reconstruction, diagnostics", || {
        let c = Ctx::cpu();
        let (n, m, k) = (7usize, 5usize, 2usize);
        let u = basis(&c, 21, n, k); // dense, orthonormal columns
        let vt = {
            let b = basis(&c, 22, m, k); // m x k, row-major
            (0..k).flat_map(|t| (0..m).map(move |j| (t, j))).map(|(t, j)| b[j * k + t]).collect::<Vec<f64>>()
        };
        let mut x = seeded(23).uniform_vec(n * m);
        x[3 * m + 1] = f64::NAN; // column 1, row 3
        x[m + 3] = f64::INFINITY; // column 3, row 1
        let clean: Vec<usize> = vec![0, 2, 4];
        let (ud, vd, xd) =
            (rm(&u, F64, n as i64, k as i64), rm(&vt, F64, k as i64, m as i64), rm(&x, F64, n as i64, m as i64));
        // Reference for the finite columns: X - U (U^T X).
        let reference = |j: usize, i: usize| {
            let coef = |t: usize| (0..n).map(|l| u[l * k + t] * x[l * m + j]).sum::<f64>();
            x[i * m + j] - (0..k).map(|t| u[i * k + t] * coef(t)).sum::<f64>()
        };
        unsafe {
            for strategy in [-1, 1, 2] {
                let out = poisoned64(n * m);
                let od = rm(&out, F64, n as i64, m as i64);
                if strategy < 0 {
                    expect(osft_project(c.0, LEFT, &ud, null(), &xd, &od), OSFT_STATUS_OK);
                } else {
                    let mut p = null_mut();
                    expect(osft_projector_create(c.0, LEFT, &ud, null(), strategy, &mut p), OSFT_STATUS_OK);
                    expect(osft_projector_apply(p, &xd, &od), OSFT_STATUS_OK);
                    osft_projector_destroy(p);
                }
                let (_, cols) = nonfinite_lines(&out, n, m);
                assert_eq!(
                    cols,
                    vec![1, 3],
                    "strategy {strategy}: the NaN/Inf columns, and only they, are non-finite: {out:?}"
                );
                for &j in &clean {
                    for i in 0..n {
                        assert!((out[i * m + j] - reference(j, i)).abs() < 1e-12, "strategy {strategy} ({i},{j})");
                    }
                }
            }
            // Right side: rows 1 and 3 become non-finite.
            let out = poisoned64(n * m);
            expect(osft_project(c.0, RIGHT, null(), &vd, &xd, &rm(&out, F64, n as i64, m as i64)), OSFT_STATUS_OK);
            let (rows, _) = nonfinite_lines(&out, n, m);
            assert_eq!(rows, vec![1, 3], "{out:?}");
            assert!((0..n).filter(|i| *i != 1 && *i != 3).all(|i| (0..m).all(|j| out[i * m + j].is_finite())));
            // In place, and both sides: everything the NaN touches.
            let y = x.clone();
            expect(osft_project(c.0, BOTH, &ud, &vd, &rm(&y, F64, n as i64, m as i64), null()), OSFT_STATUS_OK);
            assert!(y.iter().all(|v| !v.is_finite()), "{y:?}");
            // A NaN in the basis spoils every column.
            let mut ub = u.clone();
            ub[0] = f64::NAN;
            let xc = seeded(24).uniform_vec(n * m);
            let out = poisoned64(n * m);
            expect(
                osft_project(
                    c.0,
                    LEFT,
                    &rm(&ub, F64, n as i64, k as i64),
                    null(),
                    &rm(&xc, F64, n as i64, m as i64),
                    &rm(&out, F64, n as i64, m as i64),
                ),
                OSFT_STATUS_OK,
            );
            assert!(out.iter().all(|v| v.is_nan()));
            // Two-phase: partial coefficients of the NaN column are NaN; apply spreads it.
            let coef = poisoned64(k * m);
            expect(osft_project_partial(c.0, LEFT, &ud, &xd, &rm(&coef, F64, k as i64, m as i64)), OSFT_STATUS_OK);
            assert!((0..k).all(|t| coef[t * m + 1].is_nan() && !coef[t * m + 3].is_finite() && coef[t * m].is_finite()));
            let y = x.clone();
            expect(
                osft_project_apply(
                    c.0,
                    LEFT,
                    &ud,
                    &rm(&coef, F64, k as i64, m as i64),
                    &rm(&y, F64, n as i64, m as i64),
                ),
                OSFT_STATUS_OK,
            );
            assert_eq!(nonfinite_lines(&y, n, m).1, vec![1, 3]);
            // f32 and f16 data propagate the same way.
            let x32: Vec<f32> = x.iter().map(|v| *v as f32).collect();
            let u32_: Vec<f32> = u.iter().map(|v| *v as f32).collect();
            expect(
                osft_project(
                    c.0,
                    LEFT,
                    &rm(&u32_, F32, n as i64, k as i64),
                    null(),
                    &rm(&x32, F32, n as i64, m as i64),
                    null(),
                ),
                OSFT_STATUS_OK,
            );
            let back: Vec<f64> = x32.iter().map(|v| *v as f64).collect();
            assert_eq!(nonfinite_lines(&back, n, m).1, vec![1, 3]);
            let x16: Vec<osft::f16> = x.iter().map(|v| osft::f16::from_f64(*v)).collect();
            let u16: Vec<osft::f16> = u.iter().map(|v| osft::f16::from_f64(*v)).collect();
            expect(
                osft_project(
                    c.0,
                    LEFT,
                    &rm(&u16, F16, n as i64, k as i64),
                    null(),
                    &rm(&x16, F16, n as i64, m as i64),
                    null(),
                ),
                OSFT_STATUS_OK,
            );
            let back: Vec<f64> = x16.iter().map(|v| v.to_f64()).collect();
            assert_eq!(nonfinite_lines(&back, n, m).1, vec![1, 3]);

            // Reconstruction: a NaN singular value spoils every element, an Inf in V a column.
            let s = [f64::NAN, 1.0];
            let w = poisoned64(n * m);
            expect(
                osft_reconstruct(
                    c.0,
                    &ud,
                    &rm(&s, F64, 2, 1),
                    &vd,
                    null(),
                    null(),
                    null(),
                    &rm(&w, F64, n as i64, m as i64),
                    F64,
                ),
                OSFT_STATUS_OK,
            );
            assert!(w.iter().all(|v| v.is_nan()));
            let s = [2.0, 1.0];
            let mut vinf = vt.clone();
            vinf[2] = f64::INFINITY; // V(0, 2)
            expect(
                osft_reconstruct(
                    c.0,
                    &ud,
                    &rm(&s, F64, 2, 1),
                    &rm(&vinf, F64, k as i64, m as i64),
                    null(),
                    null(),
                    null(),
                    &rm(&w, F64, n as i64, m as i64),
                    F64,
                ),
                OSFT_STATUS_OK,
            );
            assert_eq!(nonfinite_lines(&w, n, m).1, vec![2]);
            assert!((0..n).all(|i| (0..m).filter(|j| *j != 2).all(|j| w[i * m + j].is_finite())));

            // Diagnostics: NaN per affected batch entry, finite for the others.
            let xb: Vec<f64> = seeded(25).uniform_vec(n * m).into_iter().chain(x.iter().copied()).collect();
            let xbd = batched(rm(&xb, F64, n as i64, m as i64), 2, (n * m) as i64);
            let mut r = [0.5f64; 3];
            expect(osft_leakage(c.0, LEFT, &ud, &xbd, r.as_mut_ptr(), 3), OSFT_STATUS_OK);
            assert!(r[0].is_finite() && r[1].is_nan() && r[2] == 0.5, "{r:?}");
            let mut r = [0.5f64; 1];
            expect(
                osft_orthonormality_error(c.0, LEFT, &rm(&ub, F64, n as i64, k as i64), r.as_mut_ptr(), 1),
                OSFT_STATUS_OK,
            );
            assert!(r[0].is_nan());
            let mut r = [0.5f64; 2];
            let s = [2.0, 1.0];
            expect(
                osft_reconstruction_error(
                    c.0,
                    &xbd,
                    &ud,
                    &rm(&s, F64, 2, 1),
                    &vd,
                    null(),
                    null(),
                    null(),
                    F64,
                    r.as_mut_ptr(),
                    2,
                ),
                OSFT_STATUS_OK,
            );
            assert!(r[0].is_finite() && r[1].is_nan(), "{r:?}");
            let mut r = [0.5f64; 2];
            expect(osft_read_vector(c.0, &rm(&s, F64, 2, 1), r.as_mut_ptr(), 2), OSFT_STATUS_OK);
            let nanv = [f64::NAN, 1.0];
            expect(osft_read_vector(c.0, &rm(&nanv, F64, 2, 1), r.as_mut_ptr(), 2), OSFT_STATUS_OK);
            assert!(r[0].is_nan() && r[1] == 1.0);
            // Layer importance of NaN activations: NaN (a cosine of NaN), not a hang or a status.
            let mut r = [0.5f64; 1];
            expect(
                osft_layer_importance(
                    c.0,
                    &rm(&u, F64, n as i64, k as i64),
                    &rm(&x[..n * k], F64, n as i64, k as i64),
                    F64,
                    r.as_mut_ptr(),
                    1,
                ),
                OSFT_STATUS_OK,
            );
        }
    });
}
