//! Rank selection and the diagnostics through the C ABI: every rank rule and the adaptive ranks
//! against values worked out by hand (the fraction rule against PEFT's `int(R * f)` exactly),
//! layer importance against a float64 reference, and the reconstruction error for every pair of
//! data and compute types against float64.

use std::ptr::{null, null_mut};

use osft::ffi::osft_status::*;
use osft::ffi::*;
use osft_test_support::capi::*;
use osft_test_support::{seeded, Draw};

/// `OSFT_RANK_FRACTION` through the C ABI is PEFT's `int(R * f)` exactly: every percentage of
/// several `R` against the expression evaluated in integer arithmetic (the test support's
/// `exact_fraction_rank`, which rounds the exact product as an IEEE multiply does), and the cases
/// that tell it from other readings by hand.
#[test]
fn fraction_rank_through_the_abi_is_pefts_int_of_r_times_f() {
    let s = vec![1.0f64; 4096];
    let rank = |r: usize, f: f64| {
        let mut k = -1i64;
        unsafe {
            expect(
                osft_select_rank(s.as_ptr(), r, osft_rank_rule::OSFT_RANK_FRACTION as i32, f, &mut k),
                OSFT_STATUS_OK,
            )
        };
        k
    };
    for r in [3usize, 10, 50, 100, 1000, 4096] {
        for i in 0..=100 {
            let f = i as f64 / 100.0;
            assert_eq!(rank(r, f), osft_test_support::exact_fraction_rank(f, r) as i64, "f = {f:?}, R = {r}");
        }
    }
    // 100 * 0.29 is 28.999999999999996 in f64: truncated to 28, as PEFT. 10 * 0.7 is 7 - 2^-51
    // exactly, which the multiply rounds (half to even) to 7.0: 7.
    assert_eq!(rank(100, 0.29), 28);
    assert_eq!(rank(100, 0.57), 56);
    assert_eq!(rank(10, 0.7), 7);
    assert_eq!(rank(100, 0.25), 25);
}

#[test]
fn rank_selection() {
    let s = [4.0, 3.0, 2.0, 1.0];
    let mut k = -1i64;
    unsafe {
        expect(osft_select_rank(s.as_ptr(), 4, osft_rank_rule::OSFT_RANK_FIXED as i32, 3.0, &mut k), OSFT_STATUS_OK);
        assert_eq!(k, 3);
        expect(osft_select_rank(s.as_ptr(), 4, osft_rank_rule::OSFT_RANK_FRACTION as i32, 0.5, &mut k), OSFT_STATUS_OK);
        assert_eq!(k, 2);
        // Energy: 16 / 30 < 0.6 <= 25 / 30.
        expect(osft_select_rank(s.as_ptr(), 4, osft_rank_rule::OSFT_RANK_ENERGY as i32, 0.6, &mut k), OSFT_STATUS_OK);
        assert_eq!(k, 2);
        expect(
            osft_select_rank(s.as_ptr(), 4, osft_rank_rule::OSFT_RANK_ENTROPY_EFFECTIVE as i32, 0.0, &mut k),
            OSFT_STATUS_OK,
        );
        let l1: f64 = s.iter().sum();
        let h: f64 = s.iter().map(|v| -(v / l1) * (v / l1).ln()).sum();
        assert_eq!(k, h.exp().round() as i64);
        expect(osft_select_rank(null(), 0, 0, 0.0, &mut k), OSFT_STATUS_OK);
        assert_eq!(k, 0);
        k = 99;
        expect(osft_select_rank(s.as_ptr(), 4, 0, 5.0, &mut k), OSFT_STATUS_RANK_OUT_OF_RANGE);
        expect(osft_select_rank(s.as_ptr(), 4, 0, -1.0, &mut k), OSFT_STATUS_RANK_OUT_OF_RANGE);
        expect(osft_select_rank(s.as_ptr(), 4, 0, 1.5, &mut k), OSFT_STATUS_RANK_OUT_OF_RANGE);
        expect(osft_select_rank(s.as_ptr(), 4, 1, 1.5, &mut k), OSFT_STATUS_INVALID_ARGUMENT);
        expect(osft_select_rank(s.as_ptr(), 4, 2, f64::NAN, &mut k), OSFT_STATUS_INVALID_ARGUMENT);
        expect(osft_select_rank(s.as_ptr(), 4, 4, 0.0, &mut k), OSFT_STATUS_INVALID_ARGUMENT);
        expect(osft_select_rank(null(), 4, 1, 0.5, &mut k), OSFT_STATUS_NULL_POINTER);
        expect(osft_select_rank(s.as_ptr(), 4, 1, 0.5, null_mut()), OSFT_STATUS_NULL_POINTER);
        let unsorted = [1.0, 2.0];
        expect(osft_select_rank(unsorted.as_ptr(), 2, 1, 0.5, &mut k), OSFT_STATUS_INVALID_ARGUMENT);
        assert_eq!(k, 99);

        let imp = [1.0, 2.0, 3.0];
        let full = [10i64, 10, 10];
        let mut ranks = [-7i64; 4];
        // The seed's rule, mean 2: I_n = I / 2.00000001; mrr = 5, trr = 10: CR = 5 + I_n * 5 =
        // 7.4999999875 -> 7, 9.999999975 -> 10, 12.4999999625 -> clamped to d = 10.
        expect(osft_adaptive_ranks(imp.as_ptr(), full.as_ptr(), 3, 0.5, 1.0, ranks.as_mut_ptr()), OSFT_STATUS_OK);
        assert_eq!(ranks, [7, 10, 10, -7]);
        // mrr = 2, trr = 8: CR = 2 + I_n * 6 = 4.999999985 -> 5, 7.99999997 -> 8, 10.999999955 -> 10.
        expect(osft_adaptive_ranks(imp.as_ptr(), full.as_ptr(), 3, 0.2, 0.8, ranks.as_mut_ptr()), OSFT_STATUS_OK);
        assert_eq!(ranks, [5, 8, 10, -7]);
        // A negative importance (mean 0.5): CR = 5 - 0.99999998 * 5 = 1e-7 -> 0, raised to k = 1.
        let signed = [-0.5, 0.5, 1.5];
        expect(osft_adaptive_ranks(signed.as_ptr(), full.as_ptr(), 3, 0.5, 1.0, ranks.as_mut_ptr()), OSFT_STATUS_OK);
        assert_eq!(ranks, [1, 10, 10, -7]);
        let before = ranks;
        expect(
            osft_adaptive_ranks(imp.as_ptr(), full.as_ptr(), 3, 0.8, 0.2, ranks.as_mut_ptr()),
            OSFT_STATUS_INVALID_ARGUMENT,
        );
        // Mean importance 0 or below: refused, the ranks untouched.
        for bad in [[0.0, 0.0, 0.0], [-1.0, 0.5, 0.5], [-1.0, -2.0, -3.0]] {
            expect(
                osft_adaptive_ranks(bad.as_ptr(), full.as_ptr(), 3, 0.5, 1.0, ranks.as_mut_ptr()),
                OSFT_STATUS_INVALID_ARGUMENT,
            );
        }
        let neg = [10i64, -1, 10];
        expect(
            osft_adaptive_ranks(imp.as_ptr(), neg.as_ptr(), 3, 0.2, 0.8, ranks.as_mut_ptr()),
            OSFT_STATUS_RANK_OUT_OF_RANGE,
        );
        expect(osft_adaptive_ranks(imp.as_ptr(), full.as_ptr(), 3, 0.2, 0.8, null_mut()), OSFT_STATUS_NULL_POINTER);
        assert_eq!(ranks, before);
    }
}

#[test]
fn layer_importance_matches_reference() {
    let c = Ctx::cpu();
    let mut g = seeded(17);
    let (n, m, samples) = (4i64, 6i64, 5i64);
    let w = g.uniform_vec((n * m) as usize);
    let x = g.uniform_vec((samples * m) as usize);
    let r = n.min(m);
    let mut want = 0.0;
    for s in 0..samples {
        let xs = &x[(s * m) as usize..((s + 1) * m) as usize];
        let y: Vec<f64> = (0..r).map(|i| (0..m).map(|j| w[(i * m + j) as usize] * xs[j as usize]).sum()).collect();
        let xr = &xs[..r as usize];
        let dot: f64 = xr.iter().zip(&y).map(|(a, b)| a * b).sum();
        let na: f64 = xr.iter().map(|v| v * v).sum::<f64>().sqrt();
        let nb: f64 = y.iter().map(|v| v * v).sum::<f64>().sqrt();
        want += dot / (na * nb);
    }
    want /= samples as f64;
    let mut out = [f64::NAN; 1];
    unsafe {
        let mut bytes = 0usize;
        expect(
            osft_layer_importance_workspace_size(c.0, &rm(&w, F64, n, m), &rm(&x, F64, samples, m), F64, &mut bytes),
            OSFT_STATUS_OK,
        );
        expect(
            osft_layer_importance(c.0, &rm(&w, F64, n, m), &rm(&x, F64, samples, m), F64, out.as_mut_ptr(), 1),
            OSFT_STATUS_OK,
        );
    }
    assert!((out[0] - want).abs() < 1e-12, "{} vs {want}", out[0]);
}

/// Regression: the workspace query of the reconstruction-error diagnostic once validated a
/// compute-type stand-in at `W`'s address for aliasing, so with f32 `W` and f64 compute it ran
/// past `W` into the next allocation (here `S`) and gave a spurious `OSFT_STATUS_OVERLAP`.
#[test]
fn reconstruction_error_f64_compute_of_f32_data() {
    let c = Ctx::cpu();
    // One allocation: W (4 x 4 f32) directly followed by U (4 x 1), S (1), V (1 x 4).
    let mut buf = [0f32; 16 + 4 + 1 + 4];
    for (i, v) in buf.iter_mut().enumerate() {
        *v = (i % 7) as f32 - 3.0;
    }
    let (w, rest) = buf.split_at(16);
    let (u, rest) = rest.split_at(4);
    let (s, v) = rest.split_at(1);
    let mut e = [f64::NAN; 2];
    unsafe {
        expect(
            osft_reconstruction_error(
                c.0,
                &rm(w, F32, 4, 4),
                &rm(u, F32, 4, 1),
                &rm(s, F32, 1, 1),
                &rm(v, F32, 1, 4),
                null(),
                null(),
                null(),
                F64,
                e.as_mut_ptr(),
                1,
            ),
            OSFT_STATUS_OK,
        );
    }
    // The value, against f64 arithmetic on the same (exactly representable) entries: this rank-1
    // term is far from W, so the error is of order 1, and a result of 0 is wrong.
    let want = recon_error_f64(w, 4, 4, &[(u, s, v)]);
    assert!(want > 0.1, "{want}");
    // f64 compute of f32 data: the data are exact in f64, so only f64 rounding, a few ulps of the
    // O(1) result, separates the two.
    assert!((e[0] - want).abs() <= 64.0 * f64::EPSILON * want, "got {}, want {want}", e[0]);
    assert!(e[1].is_nan(), "wrote past out_len");
}

/// `||W - sum_t U_t diag(S_t) V_t||_F / ||W||_F` in f64 over row-major f32 operands.
fn recon_error_f64(w: &[f32], n: usize, m: usize, terms: &[(&[f32], &[f32], &[f32])]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for i in 0..n {
        for j in 0..m {
            let mut r = w[i * m + j] as f64;
            den += r * r;
            for (u, s, v) in terms {
                let k = s.len();
                for t in 0..k {
                    r -= u[i * k + t] as f64 * s[t] as f64 * v[t * m + j] as f64;
                }
            }
            num += r * r;
        }
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Reconstruction error with a compute type other than the data's, both ways (f32 data in f64,
/// f64 data in f32) and equal, over a batch of two, with a split into a high and a low term
/// that reconstructs W only approximately: each value against the f64 reference.
#[test]
fn reconstruction_error_value_for_every_compute_type() {
    let c = Ctx::cpu();
    let mut g = seeded(0x0005_eed0_fe77);
    let (n, m, kh, kl) = (6usize, 5usize, 2usize, 2usize);
    // Two batch entries of each operand, row-major, entries exact in f32.
    let w = g.uniform_vec32(2 * n * m);
    let uh = g.uniform_vec32(2 * n * kh);
    let sh: Vec<f32> = g.uniform_vec32(2 * kh).iter().map(|x| x.abs() + 0.5).collect();
    let vh = g.uniform_vec32(2 * kh * m);
    let ul = g.uniform_vec32(2 * n * kl);
    let sl: Vec<f32> = g.uniform_vec32(2 * kl).iter().map(|x| x.abs()).collect();
    let vl = g.uniform_vec32(2 * kl * m);
    let want: Vec<f64> = (0..2)
        .map(|b| {
            recon_error_f64(
                &w[b * n * m..][..n * m],
                n,
                m,
                &[
                    (&uh[b * n * kh..][..n * kh], &sh[b * kh..][..kh], &vh[b * kh * m..][..kh * m]),
                    (&ul[b * n * kl..][..n * kl], &sl[b * kl..][..kl], &vl[b * kl * m..][..kl * m]),
                ],
            )
        })
        .collect();
    assert!(want.iter().all(|v| *v > 0.1), "{want:?}");
    let to64 = |v: &[f32]| v.iter().map(|x| *x as f64).collect::<Vec<f64>>();
    let w64 = to64(&w);
    let (uh64, sh64, vh64, ul64, sl64, vl64) = (to64(&uh), to64(&sh), to64(&vh), to64(&ul), to64(&sl), to64(&vl));
    for (data, compute) in [(F32, F64), (F64, F32), (F32, F32), (F64, F64)] {
        let d = |v32: &[f32], v64: &[f64], r: usize, cc: usize| {
            let one = if data == F32 { rm(v32, F32, r as i64, cc as i64) } else { rm(v64, F64, r as i64, cc as i64) };
            batched(one, 2, (r * cc) as i64)
        };
        let (wd, uhd, shd, vhd) = (d(&w, &w64, n, m), d(&uh, &uh64, n, kh), d(&sh, &sh64, kh, 1), d(&vh, &vh64, kh, m));
        let (uld, sld, vld) = (d(&ul, &ul64, n, kl), d(&sl, &sl64, kl, 1), d(&vl, &vl64, kl, m));
        let mut e = [f64::NAN; 3];
        unsafe {
            expect(
                osft_reconstruction_error(c.0, &wd, &uhd, &shd, &vhd, &uld, &sld, &vld, compute, e.as_mut_ptr(), 2),
                OSFT_STATUS_OK,
            );
        }
        // The data are exact in either type, so the error comes from the compute type's rounding
        // of the products and sums: (kh + kl + 2) roundings of O(1) terms per element, relative.
        let uc = if compute == F32 { f32::EPSILON as f64 / 2.0 } else { f64::EPSILON / 2.0 };
        let tol = 8.0 * (kh + kl + 2) as f64 * uc;
        for b in 0..2 {
            assert!(
                (e[b] - want[b]).abs() <= tol * want[b].max(1.0),
                "data {data} compute {compute} batch {b}: got {}, want {}",
                e[b],
                want[b]
            );
        }
        assert!(e[2].is_nan(), "wrote past out_len");
    }
}
