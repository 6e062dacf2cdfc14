//! Every cast to f16 and bf16 rounds once, to nearest with ties to even, from the exact source
//! value (`Element::from_f64`, which the CPU executor's casts go through). The reference knows
//! nothing of the `half` crate: it decodes all 65 536 bit patterns of the target type itself and
//! picks the nearest value by exact f64 arithmetic (differences between a value and its two
//! neighbours are exact by Sterbenz's lemma), ties to the even pattern, and infinity from
//! `max + ulp / 2` on. f32 → bf16 is also checked against the integer formula for all 2^32 f32
//! values, and f32 → f16 against an integer formula (itself checked against the table) for all
//! 2^32. The CUDA kernels' conversions are compared with these, bit
//! for bit, in `tests/cuda_kernels_emulated/`.

use osft::{bf16, f16, Element};
use osft_test_support::{rng, Rng, StdRng};
use rayon::prelude::*;

/// The non-negative finite values of a 16-bit float format, indexed by bit pattern.
struct Format {
    values: Vec<f64>,
}

impl Format {
    fn new(exp_bits: u32, frac_bits: u32) -> Self {
        let bias = (1i32 << (exp_bits - 1)) - 1;
        let max_exp = (1u32 << exp_bits) - 1;
        let mut values = vec![];
        for bits in 0u32.. {
            let (e, f) = (bits >> frac_bits, bits & ((1 << frac_bits) - 1));
            if e == max_exp {
                break; // infinity and NaN
            }
            let frac = f as f64 / (1u64 << frac_bits) as f64;
            values.push(if e == 0 { frac * 2f64.powi(1 - bias) } else { (1.0 + frac) * 2f64.powi(e as i32 - bias) });
        }
        Format { values }
    }

    /// The bit pattern nearest to `x` (not NaN).
    fn round(&self, x: f64) -> u16 {
        let sign = if x.is_sign_negative() { 0x8000u16 } else { 0 };
        let a = x.abs();
        let v = &self.values;
        let max = v.len() - 1;
        let inf = (max + 1) as u16;
        let half_ulp_past_max = v[max] + (v[max] - v[max - 1]) / 2.0;
        if a >= half_ulp_past_max {
            return sign | inf;
        }
        // The largest pattern whose value is <= a.
        let i = v.partition_point(|&y| y <= a) - 1;
        if v[i] == a || i == max {
            return sign | i as u16;
        }
        let (below, above) = (a - v[i], v[i + 1] - a);
        let pick = if below < above || (below == above && i % 2 == 0) { i } else { i + 1 };
        sign | pick as u16
    }
}

fn check(fmt: &Format, x: f64, got: u16, what: &str) {
    if x.is_nan() {
        return;
    }
    let want = fmt.round(x);
    assert_eq!(got, want, "{what}: {x:e} ({:#018x}) gave {got:#06x}, nearest-even is {want:#06x}", x.to_bits());
}

fn f16_of(x: f64) -> u16 {
    <f16 as Element>::from_f64(x).to_bits()
}
fn bf16_of(x: f64) -> u16 {
    <bf16 as Element>::from_f64(x).to_bits()
}

/// f64 values that land near the target's rounding boundaries: midpoints of neighbouring values
/// nudged by a few f64 ulps either way, and the values themselves.
fn boundary_values(fmt: &Format, rng: &mut StdRng, count: usize) -> Vec<f64> {
    let v = &fmt.values;
    let mut out = vec![];
    for _ in 0..count {
        let i = rng.random_range(0..v.len() - 1);
        let mid = (v[i] + v[i + 1]) / 2.0;
        for x in [v[i], mid, f64::from_bits(mid.to_bits() + 1), f64::from_bits(mid.to_bits().saturating_sub(1))] {
            out.push(if rng.random::<bool>() { -x } else { x });
        }
    }
    out
}

#[test]
fn f64_to_half_types_rounds_once_to_nearest_even() {
    let mut rng = rng();
    let (h, b) = (Format::new(5, 10), Format::new(8, 7));
    // Just above the midpoint between 1 and the next f16: rounding to f32 to nearest first lands
    // exactly on the midpoint (2^-40 is below f32's precision), which then ties to even (1.0);
    // the single rounding goes up.
    let x = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
    assert_eq!((x as f32) as f64, 1.0 + 2f64.powi(-11), "the example must tie after rounding to f32");
    assert_eq!(f16_of(x), 0x3c01, "1 + 2^-11 + 2^-40 rounds up to 1 + 2^-10 in f16");
    check(&h, x, f16_of(x), "f64 -> f16");
    let y = 1.0 + 2f64.powi(-8) + 2f64.powi(-40); // the same for bf16 (7 fraction bits)
    assert_eq!(bf16_of(y), 0x3f81, "1 + 2^-8 + 2^-40 rounds up to 1 + 2^-7 in bf16");
    // Just below f16's overflow threshold (65520): the largest finite f16, not infinity.
    assert_eq!(f16_of(-65519.998), 0xfbff, "-65519.998 is -65504 in f16, not -inf");
    for x in boundary_values(&h, &mut rng, 50_000) {
        check(&h, x, f16_of(x), "f64 -> f16");
    }
    for x in boundary_values(&b, &mut rng, 50_000) {
        check(&b, x, bf16_of(x), "f64 -> bf16");
    }
    // Random f64 over the exponents that matter (subnormal to overflow), and exact specials.
    for _ in 0..500_000 {
        let x = f64::from_bits(rng.random::<u64>() & !(0x7ffu64 << 52) | ((rng.random_range(850..1170u64)) << 52));
        check(&h, x, f16_of(x), "f64 -> f16");
        check(&b, x, bf16_of(x), "f64 -> bf16");
    }
    for x in [0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, f64::MIN_POSITIVE, 5e-324, 1e300, -1e-300] {
        check(&h, x, f16_of(x), "f64 -> f16");
        check(&b, x, bf16_of(x), "f64 -> bf16");
    }
    assert!(<f16 as Element>::from_f64(f64::NAN).to_f64().is_nan());
    assert!(<bf16 as Element>::from_f64(f64::NAN).to_f64().is_nan());
}

#[test]
fn f32_to_f16_rounds_to_nearest_even_on_a_sample() {
    let mut rng = rng();
    let h = Format::new(5, 10);
    for _ in 0..2_000_000 {
        let x = f32::from_bits(rng.random()) as f64;
        check(&h, x, f16_of(x), "f32 -> f16");
    }
}

/// All 2^32 f32 values to bf16, against the integer rounding formula (and the table reference on
/// the example that mis-rounds through f64 truncation).
#[test]
fn f32_to_bf16_every_value() {
    let b = Format::new(8, 7);
    check(&b, f32::from_bits(0x3f80_8001) as f64, bf16_of(f32::from_bits(0x3f80_8001) as f64), "f32 -> bf16");
    assert_eq!(bf16_of(f32::from_bits(0x3f80_8001) as f64), 0x3f81);
    let bad = (0u64..1 << 16)
        .into_par_iter()
        .map(|hi| {
            let mut bad = 0u64;
            for lo in 0u64..1 << 16 {
                let bits = ((hi << 16) | lo) as u32;
                let x = f32::from_bits(bits);
                if x.is_nan() {
                    continue;
                }
                let want = ((bits as u64 + 0x7fff + ((bits as u64 >> 16) & 1)) >> 16) as u16;
                if bf16_of(x as f64) != want {
                    bad += 1;
                }
            }
            bad
        })
        .sum::<u64>();
    assert_eq!(bad, 0, "{bad} f32 values round to a bf16 other than the nearest-even one");
}

/// f32 → f16 with round to nearest even, in integers, independent of the table and of `half`:
/// the f32 is `m · 2^e` exactly; the f16 quantum at its binade is `2^(max(p, -14) - 10)` (`p` its
/// binary exponent, -14 the smallest normal's); `m · 2^e` is rounded to a multiple of the quantum
/// with ties to even; the multiple `q` then encodes as `(p + 15) << 10 | (q - 1024)` (as `q` in the
/// subnormal range), which carries into the next binade and into infinity on its own.
fn f16_of_f32_in_integers(bits: u32) -> u16 {
    let sign = ((bits >> 16) & 0x8000) as u16;
    let (exp, man) = ((bits >> 23) & 0xff, bits & 0x7f_ffff);
    if exp == 0xff {
        return sign | 0x7c00; // infinity (NaN is not asked for)
    }
    if exp == 0 && man == 0 {
        return sign;
    }
    let (m, e) = if exp == 0 { (man as u64, -149i32) } else { ((man | 0x80_0000) as u64, exp as i32 - 150) };
    let p = e + (63 - m.leading_zeros() as i32);
    let quantum = p.max(-14) - 10;
    let shift = quantum - e; // >= 13 for every f32: f16 keeps fewer bits
    let q = if shift > 40 {
        0
    } else {
        let (q, rem, half) = (m >> shift, m & ((1 << shift) - 1), 1u64 << (shift - 1));
        q + u64::from(rem > half || (rem == half && q & 1 == 1))
    };
    let magnitude = if p < -14 { q } else { (((p + 15) as u64) << 10) + q - 1024 };
    sign | magnitude.min(0x7c00) as u16
}

/// The integer reference agrees with hand-worked values and with the table reference on the
/// boundary values of every binade, so that it can stand in for the table on all 2^32 f32 values.
#[test]
fn f32_to_f16_integer_reference_is_right() {
    let p = |e: i32| 2f32.powi(e);
    let cases: [(f32, u16); 10] = [
        (1.0, 0x3c00),
        (-2.0, 0xc000),
        (65504.0, 0x7bff),
        (65520.0 - p(-8), 0x7bff), // just below max + ulp/2
        (65520.0, 0x7c00),         // max + ulp/2: a tie, to the even pattern, infinity
        (p(-24), 0x0001),          // the smallest subnormal
        (p(-25), 0x0000),          // a tie between 0 and 2^-24, to even 0
        (1.5 * p(-25), 0x0001),    // above that tie
        (1023.5 * p(-24), 0x0400), // largest subnormal + ulp/2: a tie, to the even 2^-14
        (1.0 + p(-11), 0x3c00),    // 1 + ulp/2: a tie, to even 1.0
    ];
    for (x, want) in cases {
        assert_eq!(f16_of_f32_in_integers(x.to_bits()), want, "{x:e}");
    }
    let h = Format::new(5, 10);
    let mut rng = rng();
    for x in boundary_values(&h, &mut rng, 200_000) {
        let y = x as f32;
        assert_eq!(f16_of_f32_in_integers(y.to_bits()), h.round(y as f64), "{y:e}");
    }
    for _ in 0..200_000 {
        let y = f32::from_bits(rng.random());
        if !y.is_nan() {
            assert_eq!(f16_of_f32_in_integers(y.to_bits()), h.round(y as f64), "{y:e}");
        }
    }
}

/// All 2^32 f32 values to f16, against the integer reference.
#[test]
fn f32_to_f16_every_value() {
    let t0 = std::time::Instant::now();
    let bad = (0u64..1 << 16)
        .into_par_iter()
        .map(|hi| {
            let mut bad = 0u64;
            for lo in 0u64..1 << 16 {
                let bits = ((hi << 16) | lo) as u32;
                let x = f32::from_bits(bits);
                if !x.is_nan() && f16_of(x as f64) != f16_of_f32_in_integers(bits) {
                    bad += 1;
                }
            }
            bad
        })
        .sum::<u64>();
    eprintln!("f32 -> f16: all 2^32 values checked in {:.1} s", t0.elapsed().as_secs_f64());
    assert_eq!(bad, 0, "{bad} f32 values round to an f16 other than the nearest-even one");
}
