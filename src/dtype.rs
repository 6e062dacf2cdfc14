//! Element types. Values are part of the C ABI.

use half::{bf16, f16};

/// Element type of a matrix.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32 = 0,
    F64 = 1,
    F16 = 2,
    BF16 = 3,
}

impl DType {
    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::F16 | DType::BF16 => 2,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
    /// Whether this type can be a compute (accumulation / factorisation) type.
    pub const fn is_compute(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
    /// The compute type osft uses by default for data of this type: f64 for f64, f32 otherwise.
    pub const fn default_compute(self) -> DType {
        match self {
            DType::F64 => DType::F64,
            _ => DType::F32,
        }
    }
    /// Unit roundoff (half the machine epsilon) of the type: the scale of one rounding error.
    pub const fn unit_roundoff(self) -> f64 {
        match self {
            DType::F64 => 1.1102230246251565e-16, // 2^-53
            DType::F32 => 5.960464477539063e-8,   // 2^-24
            DType::F16 => 4.8828125e-4,           // 2^-11
            DType::BF16 => 3.90625e-3,            // 2^-8
        }
    }
    pub fn from_i32(v: i32) -> Option<DType> {
        Some(match v {
            0 => DType::F32,
            1 => DType::F64,
            2 => DType::F16,
            3 => DType::BF16,
            _ => return None,
        })
    }
}

/// `v` rounded to f32 by round-to-odd: truncated toward zero, with the last bit set when the
/// result is inexact. f32 keeps at least two more bits than f16 and bf16, so rounding this value
/// to nearest even is the single correct rounding of `v` (the round-to-odd argument); rounding
/// `v` to f32 to nearest first could round twice and land on the wrong neighbour.
fn round_to_odd_f32(v: f64) -> f32 {
    let t = v as f32;
    if v.is_nan() || t as f64 == v {
        return t;
    }
    let mut bits = t.to_bits();
    if (t as f64).abs() > v.abs() {
        bits -= 1; // one step toward zero (the magnitude bits; the sign stays)
    }
    f32::from_bits(bits | 1)
}

/// A Rust element type osft can read and write.
pub trait Element: Copy + Send + Sync + 'static + std::fmt::Debug {
    const DTYPE: DType;
    fn to_f64(self) -> f64;
    /// Round to nearest (ties to even) from f64, once: every cast osft makes goes through this
    /// from the exact value (f32 and f64 sources are exact in f64).
    fn from_f64(v: f64) -> Self;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}
impl Element for f64 {
    const DTYPE: DType = DType::F64;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn from_f32(v: f32) -> Self {
        v as f64
    }
}
impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f32(round_to_odd_f32(v))
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}
impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        bf16::from_f32(round_to_odd_f32(v))
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}
