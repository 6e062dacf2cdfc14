//! Reading a fuzz input: any byte string as a stream of choices, zeros past its end (so that an
//! exhausted input picks the first, valid option everywhere).

/// The input as a stream of choices; reads past the end give 0.
pub struct Src<'a> {
    d: &'a [u8],
    i: usize,
}

impl<'a> Src<'a> {
    pub fn new(d: &'a [u8]) -> Self {
        Src { d, i: 0 }
    }
    pub(super) fn u8(&mut self) -> u8 {
        let v = self.d.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        v
    }
    /// Uniform-ish in `0..n` (0 when exhausted).
    pub(super) fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        if n <= 256 {
            self.u8() as usize % n
        } else {
            (self.u8() as usize | (self.u8() as usize) << 8) % n
        }
    }
    /// True with probability `p / 256`; false when exhausted.
    pub(super) fn chance(&mut self, p: u8) -> bool {
        (self.u8() as u16) + (p as u16) > 255
    }
    pub(super) fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    pub(super) fn i64(&mut self) -> i64 {
        let mut v = 0u64;
        for _ in 0..8 {
            v = v << 8 | self.u8() as u64;
        }
        v as i64
    }
    /// A data value: a multiple of 1/64 in [-2, 2), exact in every dtype.
    pub(super) fn value(&mut self) -> f64 {
        (self.u8() as i8) as f64 / 64.0
    }
}
