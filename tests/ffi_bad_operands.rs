//! Operands that are each well formed but do not fit the call, through the C ABI: batch counts
//! that disagree, empty and vector arguments, outputs overlapping inputs or each other, the
//! two-phase projection's layout, shape and dtype rules, `svd_list` validating every problem
//! before writing, projector and layer-importance rejections, and bad rank-rule inputs. Every
//! rejected call leaves every buffer, result array and `*out` as it was.

use std::ptr::{null, null_mut};

use osft::ffi::osft_status::*;
use osft::ffi::*;
use osft_test_support::capi::*;
use osft_test_support::{seeded, Draw};

macro_rules! untouched {
    ($before:expr, $($b:expr),+) => {
        assert_eq!($before, snap(&[$(&bytes_of(&$b)),+]), "a rejected call wrote a buffer");
    };
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
