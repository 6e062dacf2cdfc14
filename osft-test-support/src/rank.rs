//! Expected ranks computed exactly, independent of the f64 arithmetic under test.

/// PEFT's `int(R * f)` evaluated in integers: the exact product of the f64 `f` (the rational
/// `mant / 2^s`) and `R`, rounded to 53 significant bits half to even as an IEEE multiply rounds
/// it, then truncated. So the expected rank does not come from the f64 multiply under test, and
/// the rounding of the product is part of the reference (0.7 * 10 is 7 - 2^-51 exactly, a tie
/// that rounds to 7.0, so PEFT gives 7 where the exact product's floor is 6).
/// For `f` in `[2^-30, 1]` and `r < 2^20`, which keeps every product inside a `u128`.
pub fn exact_fraction_rank(f: f64, r: usize) -> usize {
    if f == 0.0 || r == 0 {
        return 0;
    }
    assert!((2f64.powi(-30)..=1.0).contains(&f) && r < 1 << 20);
    let bits = f.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1075; // f = mant * 2^exp
    let mant = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    let s = (-exp) as u32; // exp < 0 for f <= 1 with a 53-bit mantissa
    let p = mant as u128 * r as u128; // f * r = p / 2^s exactly
    let width = 128 - p.leading_zeros();
    let rounded = if width <= 53 {
        p
    } else {
        let drop = width - 53;
        let (q, rem, half) = (p >> drop, p & ((1u128 << drop) - 1), 1u128 << (drop - 1));
        let q = if rem > half || (rem == half && q & 1 == 1) { q + 1 } else { q };
        q << drop
    };
    (rounded >> s) as usize
}
