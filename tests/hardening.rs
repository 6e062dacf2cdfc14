//! Hardening through the C ABI: the input classes of RELIABILITY.md that tests/ffi.rs and
//! tests/c/test_errors.c do not already cover (each rejected call leaves every buffer, result
//! array and `*out` as it was), the non-finite policy (SVD/decompose refuse NaN/Inf with
//! `OSFT_STATUS_NON_FINITE`; projection, reconstruction and diagnostics propagate as IEEE
//! arithmetic; nothing hangs), allocation failure as a status, and regression tests of the bugs
//! found while hardening.

use std::ffi::c_void;
use std::ptr::{null, null_mut};

use osft::ffi::osft_status::*;
use osft::ffi::*;
use osft_test_support::capi::*;
use osft_test_support::{seeded, Draw};

/// Snapshot of several buffers, to show that a rejected call wrote nothing.
fn snap(bufs: &[&[u8]]) -> Vec<u8> {
    bufs.concat()
}

macro_rules! untouched {
    ($before:expr, $($b:expr),+) => {
        assert_eq!($before, snap(&[$(&bytes_of(&$b)),+]), "a rejected call wrote a buffer");
    };
}

// =============================================================================================
// Bad input, beyond tests/ffi.rs.

#[test]
fn workspace_too_small_for_every_op() {
    let c = Ctx::cpu();
    let mut g = seeded(1);
    let (n, m, k) = (8i64, 6i64, 2i64);
    let u = basis(&c, 2, n as usize, k as usize);
    let x = g.uniform_vec((n * m) as usize);
    // A column-strided X (every other column): staged through the workspace.
    let xs = g.uniform_vec((n * m * 2) as usize);
    let xsd = mat(xs.as_ptr(), F64, n, m, 2 * m, 2);
    let out = poisoned64((n * m) as usize);
    let mut res = poisoned64(4);
    let (ud, xd, od) = (rm(&u, F64, n, k), rm(&x, F64, n, m), rm(&out, F64, n, m));
    let s = vec![1.0f64, 0.5];
    let v = g.uniform_vec((k * m) as usize);
    let (sd, vd) = (rm(&s, F64, k, 1), rm(&v, F64, k, m));
    let coef32 = vec![0.5f32; (k * m) as usize];
    let x16: Vec<osft::f16> = x.iter().map(|v| osft::f16::from_f64(*v)).collect();
    let u16: Vec<osft::f16> = u.iter().map(|v| osft::f16::from_f64(*v)).collect();
    let mut ws = vec![0u64; 2]; // 16 bytes
    unsafe {
        type Call<'a> = Box<dyn Fn(*mut usize) -> (osft_status, osft_status) + 'a>;
        let resp = res.as_mut_ptr();
        // Each: (query, call) with the same arguments.
        let calls: Vec<(&str, Call)> = vec![
            (
                "svd",
                Box::new(|b| {
                    (
                        osft_svd_workspace_size(c.0, &xd, F64, b),
                        osft_svd(c.0, &xd, null(), &rm(&out, F64, m, 1), null(), F64),
                    )
                }),
            ),
            (
                "project",
                Box::new(|b| {
                    (
                        osft_project_workspace_size(c.0, LEFT, &ud, null(), &xd, &od, b),
                        osft_project(c.0, LEFT, &ud, null(), &xd, &od),
                    )
                }),
            ),
            (
                "project strided in place",
                Box::new(|b| {
                    (
                        osft_project_workspace_size(c.0, LEFT, &ud, null(), &xsd, null(), b),
                        osft_project(c.0, LEFT, &ud, null(), &xsd, null()),
                    )
                }),
            ),
            (
                "reconstruct",
                Box::new(|b| {
                    (
                        osft_reconstruct_workspace_size(c.0, &ud, &sd, &vd, null(), null(), null(), &od, F32, b),
                        osft_reconstruct(c.0, &ud, &sd, &vd, null(), null(), null(), &od, F32),
                    )
                }),
            ),
            (
                "leakage",
                Box::new(|b| {
                    (osft_leakage_workspace_size(c.0, LEFT, &ud, &xd, b), osft_leakage(c.0, LEFT, &ud, &xd, resp, 4))
                }),
            ),
            (
                "orthonormality",
                Box::new(|b| {
                    (
                        osft_orthonormality_error_workspace_size(c.0, LEFT, &ud, b),
                        osft_orthonormality_error(c.0, LEFT, &ud, resp, 4),
                    )
                }),
            ),
            (
                "reconstruction error",
                Box::new(|b| {
                    (
                        osft_reconstruction_error_workspace_size(
                            c.0,
                            &xd,
                            &ud,
                            &sd,
                            &vd,
                            null(),
                            null(),
                            null(),
                            F64,
                            b,
                        ),
                        osft_reconstruction_error(c.0, &xd, &ud, &sd, &vd, null(), null(), null(), F64, resp, 4),
                    )
                }),
            ),
            (
                "layer importance",
                Box::new(|b| {
                    (
                        osft_layer_importance_workspace_size(c.0, &xd, &xd, F64, b),
                        osft_layer_importance(c.0, &xd, &xd, F64, resp, 4),
                    )
                }),
            ),
            (
                "read vector",
                Box::new(|b| (osft_read_vector_workspace_size(c.0, &sd, b), osft_read_vector(c.0, &sd, resp, 4))),
            ),
            (
                "apply with a cast of coef",
                Box::new(|b| {
                    let (x16d, u16d, cd) = (rm(&x16, F16, n, m), rm(&u16, F16, n, k), rm(&coef32, F32, k, m));
                    (
                        osft_project_apply_workspace_size(c.0, &cd, &x16d, b),
                        osft_project_apply(c.0, LEFT, &u16d, &cd, &x16d),
                    )
                }),
            ),
        ];
        for (name, call) in &calls {
            let mut need = 0usize;
            let (q, _) = (call(&mut need), ());
            expect(q.0, OSFT_STATUS_OK);
            assert!(need > 16, "{name}: needs {need} bytes");
            let _ = q; // the query ran the call once with the context's own workspace; redo below
            let before = snap(&[&bytes_of(&out), &bytes_of(&res), &bytes_of(&x16), &bytes_of(&xs)]);
            expect(osft_context_set_workspace(c.0, ws.as_mut_ptr() as *mut c_void, 16), OSFT_STATUS_OK);
            let mut dummy = 0usize;
            let (_, st) = call(&mut dummy);
            let m = expect(st, OSFT_STATUS_WORKSPACE_TOO_SMALL);
            assert!(m.contains(&need.to_string()) || name.contains("svd"), "{name}: {m}");
            assert_eq!(
                before,
                snap(&[&bytes_of(&out), &bytes_of(&res), &bytes_of(&x16), &bytes_of(&xs)]),
                "{name}: rejected but wrote"
            );
            // Exactly the queried size is enough.
            let mut big = vec![0u64; need.div_ceil(8)];
            expect(osft_context_set_workspace(c.0, big.as_mut_ptr() as *mut c_void, need), OSFT_STATUS_OK);
            let (_, st) = call(&mut dummy);
            expect(st, OSFT_STATUS_OK);
            expect(osft_context_release_workspace(c.0), OSFT_STATUS_OK);
            res.fill(f64::from_bits(0x7ff8_0000_dead_beef));
        }
    }
}

#[test]
fn batch_counts_must_agree() {
    let c = Ctx::cpu();
    let mut g = seeded(3);
    let (n, m, k) = (5i64, 4i64, 2i64);
    let u = g.uniform_vec((2 * n * k) as usize);
    let x = g.uniform_vec((3 * n * m) as usize);
    let out = poisoned64((3 * n * m) as usize);
    let ud2 = batched(rm(&u, F64, n, k), 2, n * k);
    let xd3 = batched(rm(&x, F64, n, m), 3, n * m);
    let od1 = rm(&out, F64, n, m); // a batch-1 output for a batch-3 X: would be written 3 times
    let od3 = batched(rm(&out, F64, n, m), 3, n * m);
    let before = snap(&[&bytes_of(&x), &bytes_of(&out)]);
    unsafe {
        let e = expect(osft_project(c.0, LEFT, &ud2, null(), &xd3, &od3), OSFT_STATUS_INVALID_SHAPE);
        assert!(e.contains("batch"), "{e}");
        let e = expect(osft_project(c.0, LEFT, &batched(ud2, 1, 0), null(), &xd3, &od1), OSFT_STATUS_INVALID_SHAPE);
        assert!(e.contains("out") && e.contains("batch"), "{e}");
        // Decompose outputs with another batch than W.
        let w = batched(rm(&x, F64, n, m), 3, n * m);
        let s = poisoned64(12);
        expect(
            osft_decompose(c.0, &w, 2, null(), &batched(rm(&s, F64, 2, 1), 2, 2), null(), null(), null(), null(), F64),
            OSFT_STATUS_INVALID_SHAPE,
        );
        expect(osft_svd(c.0, &w, null(), &rm(&s, F64, 4, 1), null(), F64), OSFT_STATUS_INVALID_SHAPE);
        untouched!(before, x, out);
        assert!(s.iter().all(|v| v.to_bits() == 0x7ff8_0000_dead_beef));
        // A result array shorter than the batch.
        let mut r = poisoned64(3);
        expect(osft_leakage(c.0, LEFT, &batched(ud2, 1, 0), &xd3, r.as_mut_ptr(), 2), OSFT_STATUS_INVALID_SHAPE);
        assert!(r.iter().all(|v| v.to_bits() == 0x7ff8_0000_dead_beef));
        // The broadcast basis (batch 1) is fine.
        expect(osft_project(c.0, LEFT, &batched(ud2, 1, 0), null(), &xd3, &od3), OSFT_STATUS_OK);
    }
}

#[test]
fn two_phase_layout_shape_and_dtype_rules() {
    let c = Ctx::cpu();
    let mut g = seeded(4);
    let (n, m, k) = (6i64, 5i64, 2i64);
    let u = g.uniform_vec((n * k) as usize);
    let x = g.uniform_vec((n * m * 2) as usize);
    let coef = poisoned64((k * m * 2) as usize);
    let coef32 = poisoned32((k * m) as usize);
    let (ud, xd) = (rm(&u, F64, n, k), rm(&x, F64, n, m));
    let before = snap(&[&bytes_of(&x), &bytes_of(&coef), &bytes_of(&coef32)]);
    unsafe {
        // coef with general strides (neither row- nor column-major).
        expect(
            osft_project_partial(c.0, LEFT, &ud, &xd, &mat(coef.as_ptr(), F64, k, m, 2 * m, 2)),
            OSFT_STATUS_INVALID_STRIDE,
        );
        // X with general strides.
        expect(
            osft_project_partial(c.0, LEFT, &ud, &mat(x.as_ptr(), F64, n, m, 2 * m, 2), &rm(&coef, F64, k, m)),
            OSFT_STATUS_INVALID_STRIDE,
        );
        expect(
            osft_project_apply(c.0, LEFT, &ud, &rm(&coef, F64, k, m), &mat(x.as_ptr(), F64, n, m, 2 * m, 2)),
            OSFT_STATUS_INVALID_STRIDE,
        );
        // coef of the wrong shape, the wrong dtype (f32 coef is for f16/bf16 data only).
        expect(osft_project_partial(c.0, LEFT, &ud, &xd, &rm(&coef, F64, m, k)), OSFT_STATUS_INVALID_SHAPE);
        expect(osft_project_partial(c.0, LEFT, &ud, &xd, &rm(&coef32, F32, k, m)), OSFT_STATUS_DTYPE_UNSUPPORTED);
        expect(osft_project_apply(c.0, LEFT, &ud, &rm(&coef32, F32, k, m), &xd), OSFT_STATUS_DTYPE_UNSUPPORTED);
        // coef overlapping X; apply with X overlapping the basis.
        expect(osft_project_partial(c.0, LEFT, &ud, &xd, &rm(&x[3..], F64, k, m)), OSFT_STATUS_OVERLAP);
        // Basis rows must match X's rows (left) / columns (right).
        expect(
            osft_project_partial(c.0, LEFT, &rm(&u, F64, n - 1, k), &xd, &rm(&coef, F64, k, m)),
            OSFT_STATUS_INVALID_SHAPE,
        );
        expect(
            osft_project_partial(c.0, RIGHT, &rm(&u, F64, k, n), &xd, &rm(&coef, F64, n, k)),
            OSFT_STATUS_INVALID_SHAPE,
        );
        // An unknown side.
        expect(osft_project_apply(c.0, 7, &ud, &rm(&coef, F64, k, m), &xd), OSFT_STATUS_INVALID_ARGUMENT);
    }
    untouched!(before, x, coef, coef32);
    // A shard may have fewer rows than basis vectors (FSDP's Shard(0)); a whole basis may not.
    let xs = g.uniform_vec(m as usize);
    let coefs = vec![0f64; (3 * m) as usize];
    let us = g.uniform_vec(3);
    unsafe {
        expect(
            osft_project_partial(c.0, LEFT, &rm(&us, F64, 1, 3), &rm(&xs, F64, 1, m), &rm(&coefs, F64, 3, m)),
            OSFT_STATUS_OK,
        );
        let out = poisoned64((m) as usize);
        expect(
            osft_project(c.0, LEFT, &rm(&us, F64, 1, 3), null(), &rm(&xs, F64, 1, m), &rm(&out, F64, 1, m)),
            OSFT_STATUS_RANK_OUT_OF_RANGE,
        );
        let mut p = 0x99 as *mut osft_projector;
        expect(osft_projector_create(c.0, LEFT, &rm(&us, F64, 1, 3), null(), 0, &mut p), OSFT_STATUS_RANK_OUT_OF_RANGE);
        assert_eq!(p as usize, 0x99);
        assert!(out.iter().all(|v| v.to_bits() == 0x7ff8_0000_dead_beef));
    }
}

#[test]
fn empty_and_vector_arguments() {
    let c = Ctx::cpu();
    let mut g = seeded(5);
    let w = g.uniform_vec(20);
    let wd = rm(&w, F64, 5, 4);
    let s = poisoned64(8);
    let u = poisoned64(20);
    let before = snap(&[&bytes_of(&s), &bytes_of(&u)]);
    unsafe {
        // S must be a vector of R elements: 2 x 2 and the wrong length are shapes errors.
        expect(osft_svd(c.0, &wd, null(), &rm(&s, F64, 2, 2), null(), F64), OSFT_STATUS_INVALID_SHAPE);
        expect(osft_svd(c.0, &wd, null(), &rm(&s, F64, 5, 1), null(), F64), OSFT_STATUS_INVALID_SHAPE);
        // An empty W cannot be factored; an empty S for a non-empty W is a shape error.
        expect(osft_svd(c.0, &rm(&w, F64, 0, 4), null(), &rm(&s, F64, 0, 1), null(), F64), OSFT_STATUS_INVALID_SHAPE);
        expect(
            osft_decompose(c.0, &rm(&w, F64, 5, 0), 0, null(), null(), null(), null(), null(), null(), F64),
            OSFT_STATUS_INVALID_SHAPE,
        );
        // read_vector takes vectors only.
        let mut r = poisoned64(20);
        expect(osft_read_vector(c.0, &rm(&w, F64, 5, 4), r.as_mut_ptr(), 20), OSFT_STATUS_INVALID_SHAPE);
        assert!(r.iter().all(|v| v.to_bits() == 0x7ff8_0000_dead_beef));
        untouched!(before, s, u);
        // Empty X (the gradient of an empty U_low when k = R) is a valid no-op, even with NULL
        // data; k = 0 parts may be 0-sized descriptors with NULL data.
        let empty = mat(null::<f64>(), F64, 5, 0, 0, 1);
        expect(osft_project(c.0, LEFT, &rm(&w, F64, 5, 2), null(), &empty, null()), OSFT_STATUS_OK);
        let z = mat(null::<f64>(), F64, 5, 0, 0, 1);
        let zs = mat(null::<f64>(), F64, 0, 1, 1, 1);
        let (ul, sl) = (poisoned64(20), poisoned64(4));
        expect(
            osft_decompose(
                c.0,
                &wd,
                0,
                &z,
                &zs,
                &mat(null::<f64>(), F64, 0, 4, 4, 1),
                &rm(&ul, F64, 5, 4),
                &rm(&sl, F64, 4, 1),
                null(),
                F64,
            ),
            OSFT_STATUS_OK,
        );
        assert!(sl.windows(2).all(|p| p[0] >= p[1]) && sl[3] >= 0.0);
        // Zero-length result arrays may be NULL when nothing is written.
        expect(osft_read_vector(c.0, &mat(null::<f64>(), F64, 0, 1, 1, 1), null_mut(), 0), OSFT_STATUS_OK);
    }
}

#[test]
fn outputs_overlapping_inputs_or_each_other() {
    let c = Ctx::cpu();
    let mut g = seeded(6);
    let (n, m, k) = (6i64, 4i64, 2i64);
    let u = basis(&c, 7, n as usize, k as usize);
    let x = g.uniform_vec((n * m + 4) as usize);
    let xd = rm(&x, F64, n, m);
    let before = bytes_of(&x);
    unsafe {
        // out shifted by one element over X: partial overlap.
        expect(osft_project(c.0, LEFT, &rm(&u, F64, n, k), null(), &xd, &rm(&x[1..], F64, n, m)), OSFT_STATUS_OVERLAP);
        // out over the basis (the basis is the first 12 elements of `bu`, out starts at 6).
        let ub = bytes_of(&u);
        let bu: Vec<f64> = u.iter().copied().chain(std::iter::repeat_n(0.0, 24)).collect();
        let bb = bytes_of(&bu);
        expect(
            osft_project(c.0, LEFT, &rm(&bu, F64, n, k), null(), &xd, &rm(&bu[6..], F64, n, m)),
            OSFT_STATUS_OVERLAP,
        );
        assert_eq!(bytes_of(&bu), bb);
        assert_eq!(bytes_of(&u), ub);
        assert_eq!(bytes_of(&x), before);
        // Reconstruct into memory overlapping a factor (V is the first 8 elements of `big`,
        // W starts at element 4); SVD's U over its S.
        let s = vec![2.0f64, 1.0];
        let big = g.uniform_vec(40);
        let bb = bytes_of(&big);
        expect(
            osft_reconstruct(
                c.0,
                &rm(&u, F64, n, k),
                &rm(&s, F64, k, 1),
                &rm(&big, F64, k, m),
                null(),
                null(),
                null(),
                &rm(&big[4..], F64, n, m),
                F64,
            ),
            OSFT_STATUS_OVERLAP,
        );
        assert_eq!(bytes_of(&big), bb);
        let w = g.uniform_vec((n * m) as usize);
        let out = poisoned64((n * m + m) as usize);
        expect(
            osft_svd(
                c.0,
                &rm(&w, F64, n, m),
                &rm(&out, F64, n, m),
                &rm(&out[(n * m - 2) as usize..], F64, m, 1),
                null(),
                F64,
            ),
            OSFT_STATUS_OVERLAP,
        );
        assert!(out.iter().all(|v| v.to_bits() == 0x7ff8_0000_dead_beef));
        assert_eq!(bytes_of(&u), ub);
        // The identical descriptor twice is in place, and allowed.
        expect(osft_project(c.0, LEFT, &rm(&u, F64, n, k), null(), &xd, &xd), OSFT_STATUS_OK);
    }
}

#[test]
fn svd_list_validates_every_problem_before_writing() {
    let c = Ctx::cpu();
    let mut g = seeded(8);
    let (w1, w2) = (g.uniform_vec(12), g.uniform_vec(12));
    let (s1, s2) = (poisoned64(3), poisoned64(4));
    let ws = [rm(&w1, F64, 4, 3), rm(&w2, F64, 3, 4)];
    let before = snap(&[&bytes_of(&s1), &bytes_of(&s2)]);
    unsafe {
        // Problem 1 has an S of the wrong length: problem 0 must not be written either.
        let ss = [rm(&s1, F64, 3, 1), rm(&s2, F64, 4, 1)];
        let e = expect(osft_svd_list(c.0, 2, ws.as_ptr(), null(), ss.as_ptr(), null(), F64), OSFT_STATUS_INVALID_SHAPE);
        assert!(e.contains("problem 1"), "{e}");
        // Problem 1 with a W of the wrong... dtype for the compute: also nothing written.
        let ss = [rm(&s1, F64, 3, 1), rm(&s2, F64, 3, 1)];
        let mut bad = ws;
        bad[1].dtype = 9;
        expect(osft_svd_list(c.0, 2, bad.as_ptr(), null(), ss.as_ptr(), null(), F64), OSFT_STATUS_DTYPE_UNSUPPORTED);
        // A count larger than the arrays cannot be detected from C; a count of 0 is a no-op.
        expect(osft_svd_list(c.0, 0, null(), null(), null(), null(), F64), OSFT_STATUS_OK);
    }
    untouched!(before, s1, s2);
}

#[test]
fn projector_apply_rejections() {
    let c = Ctx::cpu();
    let mut g = seeded(9);
    let (n, m, k) = (6i64, 5i64, 4i64);
    let u = basis(&c, 10, n as usize, k as usize);
    let x = g.uniform_vec((n * m) as usize);
    let x32 = g.uniform_vec32((n * m) as usize);
    let out = poisoned64((n * m) as usize);
    let before = snap(&[&bytes_of(&x), &bytes_of(&x32), &bytes_of(&out)]);
    unsafe {
        for strategy in [0, 1, 2] {
            let mut p = null_mut();
            expect(osft_projector_create(c.0, LEFT, &rm(&u, F64, n, k), null(), strategy, &mut p), OSFT_STATUS_OK);
            expect(osft_projector_apply(p, &rm(&x, F64, n - 1, m), null()), OSFT_STATUS_INVALID_SHAPE);
            expect(osft_projector_apply(p, &rm(&x32, F32, n, m), null()), OSFT_STATUS_DTYPE_UNSUPPORTED);
            expect(osft_projector_apply(p, &rm(&x, F64, n, m), &rm(&out, F64, n, m - 1)), OSFT_STATUS_INVALID_SHAPE);
            expect(osft_projector_apply(p, &rm(&x, F64, n, m), &rm(&x[1..], F64, n, 4)), OSFT_STATUS_INVALID_SHAPE);
            expect(osft_projector_apply(p, null(), null()), OSFT_STATUS_NULL_POINTER);
            let mut bad = rm(&x, F64, n, m);
            bad.device = 1;
            expect(osft_projector_apply(p, &bad, null()), OSFT_STATUS_DEVICE_MISMATCH);
            osft_projector_destroy(p);
        }
        // A misaligned projector handle.
        expect(
            osft_projector_apply(std::ptr::without_provenance_mut::<osft_projector>(3), &rm(&x, F64, n, m), null()),
            OSFT_STATUS_MISALIGNED,
        );
        // A cached projector needs f32/f64 bases of batch 1.
        let u16: Vec<osft::f16> = u.iter().map(|v| osft::f16::from_f64(*v)).collect();
        let mut p = 0x40 as *mut osft_projector;
        expect(
            osft_projector_create(c.0, LEFT, &rm(&u16, F16, n, k), null(), 2, &mut p),
            OSFT_STATUS_DTYPE_UNSUPPORTED,
        );
        let u2: Vec<f64> = u.iter().chain(u.iter()).copied().collect();
        expect(
            osft_projector_create(c.0, LEFT, &batched(rm(&u2, F64, n, k), 2, n * k), null(), 2, &mut p),
            OSFT_STATUS_INVALID_ARGUMENT,
        );
        expect(
            osft_projector_create(c.0, LEFT, &batched(rm(&u, F64, n, k), 2, 0), null(), 2, &mut p),
            OSFT_STATUS_OVERLAP,
        );
        assert_eq!(p as usize, 0x40);
    }
    untouched!(before, x, x32, out);
}

#[test]
fn rank_rules_refuse_bad_singular_values_and_importances() {
    let mut k = 55i64;
    let mut ranks = [-3i64; 3];
    unsafe {
        for s in [[3.0, f64::NAN, 1.0], [3.0, 2.0, -1.0], [f64::INFINITY, 2.0, 1.0], [1.0, 2.0, 3.0]] {
            for rule in 0..4 {
                let st = osft_select_rank(s.as_ptr(), 3, rule, if rule == 0 { 1.0 } else { 0.5 }, &mut k);
                expect(st, OSFT_STATUS_INVALID_ARGUMENT);
            }
        }
        let good = [3.0, 2.0, 1.0];
        for (rule, param) in [(1, -0.1), (1, 1.5), (2, f64::NAN), (2, f64::INFINITY), (1, f64::NAN)] {
            expect(osft_select_rank(good.as_ptr(), 3, rule, param, &mut k), OSFT_STATUS_INVALID_ARGUMENT);
        }
        for param in [f64::NAN, f64::INFINITY, 0.5, 1e300] {
            let st = osft_select_rank(good.as_ptr(), 3, 0, param, &mut k);
            assert_ne!(st, OSFT_STATUS_OK);
            assert!(matches!(st, OSFT_STATUS_RANK_OUT_OF_RANGE | OSFT_STATUS_INVALID_ARGUMENT), "{st:?}");
        }
        assert_eq!(k, 55);
        let full = [10i64, 10, 10];
        for imp in [[1.0, f64::NAN, 1.0], [1.0, f64::INFINITY, 1.0]] {
            expect(
                osft_adaptive_ranks(imp.as_ptr(), full.as_ptr(), 3, 0.1, 0.9, ranks.as_mut_ptr()),
                OSFT_STATUS_INVALID_ARGUMENT,
            );
        }
        let imp = [1.0, 2.0, 3.0];
        for (lo, hi) in [(-0.1, 0.5), (0.2, 1.5), (f64::NAN, 0.5)] {
            expect(
                osft_adaptive_ranks(imp.as_ptr(), full.as_ptr(), 3, lo, hi, ranks.as_mut_ptr()),
                OSFT_STATUS_INVALID_ARGUMENT,
            );
        }
        expect(osft_adaptive_ranks(null(), full.as_ptr(), 3, 0.1, 0.9, ranks.as_mut_ptr()), OSFT_STATUS_NULL_POINTER);
        assert_eq!(ranks, [-3; 3]);
    }
}

#[test]
fn layer_importance_rejections() {
    let c = Ctx::cpu();
    let mut g = seeded(11);
    let w = g.uniform_vec(24);
    let x = g.uniform_vec(30);
    let mut r = poisoned64(4);
    unsafe {
        // Features of the activations must equal W's columns.
        expect(
            osft_layer_importance(c.0, &rm(&w, F64, 4, 6), &rm(&x, F64, 6, 5), F64, r.as_mut_ptr(), 4),
            OSFT_STATUS_INVALID_SHAPE,
        );
        // Batches 2 and 3 do not broadcast.
        let (wb, xb) = (batched(rm(&w, F64, 2, 6), 2, 12), batched(rm(&x, F64, 1, 6), 3, 6));
        expect(osft_layer_importance(c.0, &wb, &xb, F64, r.as_mut_ptr(), 4), OSFT_STATUS_INVALID_SHAPE);
        expect(
            osft_layer_importance(c.0, &rm(&w, F64, 4, 6), &rm(&x, F64, 5, 6), F16, r.as_mut_ptr(), 4),
            OSFT_STATUS_DTYPE_UNSUPPORTED,
        );
        expect(
            osft_layer_importance(c.0, &rm(&w, F64, 4, 6), &rm(&x, F64, 0, 6), F64, r.as_mut_ptr(), 4),
            OSFT_STATUS_INVALID_SHAPE,
        );
    }
    assert!(r.iter().all(|v| v.to_bits() == 0x7ff8_0000_dead_beef));
}

#[test]
fn addresses_near_the_end_of_the_address_space() {
    let c = Ctx::cpu();
    let mut bytes = 7usize;
    unsafe {
        // The extent from the data pointer wraps past the end of the address space.
        let top = (usize::MAX - 63) as *const f64;
        expect(osft_read_vector_workspace_size(c.0, &mat(top, F64, 16, 1, 1, 1), &mut bytes), OSFT_STATUS_OVERFLOW);
        expect(osft_svd_workspace_size(c.0, &mat(top, F64, 4, 4, 4, 1), F64, &mut bytes), OSFT_STATUS_OVERFLOW);
        // A batch stride that overflows int64 arithmetic, and sizes that do not fit isize.
        let v = [0f64; 4];
        expect(
            osft_svd_workspace_size(c.0, &batched(rm(&v, F64, 2, 2), i64::MAX, i64::MAX), F64, &mut bytes),
            OSFT_STATUS_OVERFLOW,
        );
        expect(
            osft_svd_workspace_size(c.0, &mat(v.as_ptr(), F64, 1 << 61, 1, 1, 1), F64, &mut bytes),
            OSFT_STATUS_OVERFLOW,
        );
        expect(
            osft_svd_workspace_size(c.0, &mat(v.as_ptr(), F16, 1 << 62, 1, 1, 1), F64, &mut bytes),
            OSFT_STATUS_OVERFLOW,
        );
    }
    assert_eq!(bytes, 7);
}

#[test]
fn allocation_failure_is_a_status() {
    // A cached projector of a 2^20-row basis is 2^40 elements (4 TiB): the allocation fails
    // (under the kernel's default heuristic overcommit; skipped where overcommit is unlimited).
    let overcommit = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap_or_default();
    if overcommit.trim() == "1" {
        eprintln!("skipped: vm.overcommit_memory = 1 would let a 4 TiB allocation succeed");
        return;
    }
    let c = Ctx::cpu();
    let n = 1i64 << 20;
    let u = vec![0f32; n as usize];
    let mut p = 0x88 as *mut osft_projector;
    unsafe {
        let m = expect(
            osft_projector_create(c.0, LEFT, &cm(&u, F32, n, 1), null(), 2, &mut p),
            OSFT_STATUS_ALLOCATION_FAILED,
        );
        assert!(m.contains("allocation"), "{m}");
        assert_eq!(p as usize, 0x88);
        // AUTO keeps to the coefficient form for such a basis (the projector would exceed 64 MiB).
        expect(osft_projector_create(c.0, LEFT, &cm(&u, F32, n, 1), null(), 0, &mut p), OSFT_STATUS_OK);
        osft_projector_destroy(p);
    }
}

// =============================================================================================
// Non-finite input.

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

// =============================================================================================
// Regressions: one test per bug found by the fuzzer, valgrind and review; each comment describes
// the faulty behaviour the test refuses.

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
