//! Expected ranks computed exactly, independent of the f64 arithmetic under test.

/// `floor(f * r + 1e-9)` evaluated exactly (the f64 `f` as the rational `mant / 2^s`, `1e-9` as
/// `1 / 10^9`), so that the expected rank does not come from the f64 arithmetic under test.
/// For `f` in `[2^-30, 1]` and `r < 2^20`, which keeps every product inside a `u128`.
pub fn exact_fraction_rank(f: f64, r: usize) -> usize {
    if f == 0.0 {
        return 0;
    }
    assert!((2f64.powi(-30)..=1.0).contains(&f) && r < 1 << 20);
    let bits = f.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1075; // f = mant * 2^exp
    let mant = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    let s = (-exp) as u32; // exp < 0 for f <= 1 with a 53-bit mantissa
    let num = mant as u128 * r as u128 * 1_000_000_000u128 + (1u128 << s);
    let den = 1_000_000_000u128 << s;
    (num / den) as usize
}
