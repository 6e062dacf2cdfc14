//! Storing a reference matrix into a host buffer of any dtype and layout ([`Buf`]), with poisoned
//! padding, and reading it back.

use osft::{DType, Element, MatDesc};

use crate::matrix::M;

/// Memory layouts the tests run through.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layout {
    RowMajor,
    ColMajor,
    /// Row-major with a padded leading dimension.
    PaddedRow(usize),
    /// Column-major with a padded leading dimension.
    PaddedCol(usize),
    /// General strides: no unit stride at all (elements spaced by 2 and 2 * rows + 1).
    Spaced,
}

pub const LAYOUTS: [Layout; 5] =
    [Layout::RowMajor, Layout::ColMajor, Layout::PaddedRow(3), Layout::PaddedCol(5), Layout::Spaced];

/// Strides for a `rows x cols` matrix in `layout`.
pub fn strides(layout: Layout, rows: usize, cols: usize) -> (usize, usize) {
    match layout {
        Layout::RowMajor => (cols, 1),
        Layout::ColMajor => (1, rows),
        Layout::PaddedRow(p) => (cols + p, 1),
        Layout::PaddedCol(p) => (1, rows + p),
        Layout::Spaced => (2, 2 * rows + 1),
    }
}

/// A host buffer holding a batch of matrices in some layout and dtype, with poisoned padding.
pub struct Buf<T: Element> {
    pub data: Vec<T>,
    pub desc: MatDesc,
}

/// Poison value: a NaN in every float type, so an unwritten output is noticed.
pub fn poison<T: Element>() -> T {
    T::from_f64(f64::NAN)
}

impl<T: Element> Buf<T> {
    /// Store `ms` (a batch) in `layout`, with a batch stride padded by 7 elements.
    pub fn from_batch(ms: &[M], layout: Layout) -> Self {
        let (r, c) = (ms[0].r, ms[0].c);
        let (rs, cs) = strides(layout, r, c);
        let span = if r * c == 0 { 0 } else { (r - 1) * rs + (c - 1) * cs + 1 };
        let bs = span + 7;
        let mut data = vec![poison::<T>(); bs * ms.len() + 3];
        for (b, m) in ms.iter().enumerate() {
            for i in 0..r {
                for j in 0..c {
                    data[b * bs + i * rs + j * cs] = T::from_f64(m.at(i, j));
                }
            }
        }
        let desc = MatDesc {
            addr: data.as_ptr() as usize,
            dtype: T::DTYPE,
            rows: r,
            cols: c,
            row_stride: rs,
            col_stride: cs,
            batch: ms.len(),
            batch_stride: if ms.len() > 1 { bs } else { 0 },
            device: osft::Device::Host,
        };
        Buf { data, desc }
    }
    pub fn from(m: &M, layout: Layout) -> Self {
        Self::from_batch(std::slice::from_ref(m), layout)
    }
    /// A poisoned output of `batch` matrices `rows x cols`.
    pub fn poisoned(rows: usize, cols: usize, batch: usize, layout: Layout) -> Self {
        let mut b = Self::from_batch(&vec![M::zeros(rows, cols); batch], layout);
        b.data.iter_mut().for_each(|x| *x = poison::<T>());
        b
    }
    pub fn get(&self, b: usize) -> M {
        let d = &self.desc;
        let mut m = M::zeros(d.rows, d.cols);
        for i in 0..d.rows {
            for j in 0..d.cols {
                m.set(i, j, self.data[b * d.batch_stride + i * d.row_stride + j * d.col_stride].to_f64());
            }
        }
        m
    }
    pub fn desc(&mut self) -> MatDesc {
        // Re-derive the address: the Vec may not move, but make the borrow explicit.
        MatDesc { addr: self.data.as_mut_ptr() as usize, ..self.desc }
    }
    /// The raw bytes, for "untouched" comparisons (NaN != NaN, so compare bits).
    pub fn bits(&self) -> Vec<u64> {
        self.data.iter().map(|x| x.to_f64().to_bits()).collect()
    }
    /// Elements outside the matrices (padding) are still poison.
    pub fn padding_untouched(&self) -> bool {
        let d = &self.desc;
        let mut inside = vec![false; self.data.len()];
        for b in 0..d.batch {
            for i in 0..d.rows {
                for j in 0..d.cols {
                    inside[b * d.batch_stride + i * d.row_stride + j * d.col_stride] = true;
                }
            }
        }
        self.data.iter().zip(inside).all(|(x, ins)| ins || x.to_f64().is_nan())
    }
}

pub fn dtype_of<T: Element>() -> DType {
    T::DTYPE
}

/// Unit roundoff of a dtype.
pub fn u(d: DType) -> f64 {
    d.unit_roundoff()
}
