//! Typed, borrow-checked views over host slices: the safe Rust face of [`MatDesc`].
//!
//! A view is a descriptor plus a lifetime and an element type; building one checks that every
//! element it can reach lies inside the slice. Device memory (CUDA) has no slices: build views
//! with the `unsafe` `from_desc` constructors.

use std::marker::PhantomData;

use crate::desc::MatDesc;
use crate::dtype::Element;
use crate::error::{Error, Result};

/// A read-only strided (batched) matrix of `T`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T: Element> {
    desc: MatDesc,
    _p: PhantomData<&'a [T]>,
}

/// A writable strided (batched) matrix of `T`.
#[derive(Debug)]
pub struct MatMut<'a, T: Element> {
    desc: MatDesc,
    _p: PhantomData<&'a mut [T]>,
}

#[allow(clippy::too_many_arguments)]
fn describe<T: Element>(
    addr: usize,
    len: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    batch: usize,
    bs: usize,
) -> Result<MatDesc> {
    let d = MatDesc {
        addr,
        dtype: T::DTYPE,
        rows,
        cols,
        row_stride: rs,
        col_stride: cs,
        batch,
        batch_stride: bs,
        device: crate::desc::Device::Host,
    };
    d.validate("view", true)?;
    if let Some(max) = d.max_offset() {
        if max >= len {
            return Err(Error::shape(
                "view",
                format!("strided {batch} x {rows} x {cols} view reaches element {max} of a slice of {len}"),
            ));
        }
    }
    Ok(d)
}

macro_rules! constructors {
    ($slice:ty, $ptr:ident) => {
        /// A strided batch: element `(b, i, j)` is `data[b * batch_stride + i * row_stride + j * col_stride]`.
        #[allow(clippy::too_many_arguments)]
        pub fn batched(
            data: $slice,
            batch: usize,
            rows: usize,
            cols: usize,
            row_stride: usize,
            col_stride: usize,
            batch_stride: usize,
        ) -> Result<Self> {
            let d = describe::<T>(
                data.$ptr() as usize,
                data.len(),
                rows,
                cols,
                row_stride,
                col_stride,
                batch,
                batch_stride,
            )?;
            Ok(Self { desc: d, _p: PhantomData })
        }
        /// One matrix with element `(i, j)` at `data[i * row_stride + j * col_stride]`.
        pub fn strided(data: $slice, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Result<Self> {
            Self::batched(data, 1, rows, cols, row_stride, col_stride, 0)
        }
        /// One contiguous row-major matrix (a PyTorch/numpy tensor's default layout).
        pub fn row_major(data: $slice, rows: usize, cols: usize) -> Result<Self> {
            Self::strided(data, rows, cols, cols, 1)
        }
        /// One contiguous column-major matrix (BLAS's layout).
        pub fn col_major(data: $slice, rows: usize, cols: usize) -> Result<Self> {
            Self::strided(data, rows, cols, 1, rows)
        }
        /// The descriptor behind the view.
        pub fn desc(&self) -> &MatDesc {
            &self.desc
        }
        pub fn rows(&self) -> usize {
            self.desc.rows
        }
        pub fn cols(&self) -> usize {
            self.desc.cols
        }
        pub fn batch(&self) -> usize {
            self.desc.batch
        }
    };
}

impl<'a, T: Element> MatRef<'a, T> {
    constructors!(&'a [T], as_ptr);

    /// # Safety
    /// `desc` must describe memory valid for reads of `T` for `'a` (host or device).
    pub unsafe fn from_desc(desc: MatDesc) -> Result<Self> {
        if desc.dtype != T::DTYPE {
            return Err(Error::DtypeUnsupported(format!(
                "descriptor is {} but the view is {}",
                desc.dtype.name(),
                T::DTYPE.name()
            )));
        }
        Ok(Self { desc, _p: PhantomData })
    }

    /// The transposed view (same memory).
    pub fn t(self) -> Self {
        Self { desc: self.desc.t(), _p: PhantomData }
    }

    /// Element `(b, i, j)` of a host view.
    pub fn get(&self, b: usize, i: usize, j: usize) -> T {
        let d = &self.desc;
        assert!(b < d.batch && i < d.rows && j < d.cols && d.device == crate::desc::Device::Host);
        // SAFETY: in bounds of the slice checked at construction.
        unsafe { *(d.addr as *const T).add(b * d.batch_stride + i * d.row_stride + j * d.col_stride) }
    }
}

impl<'a, T: Element> MatMut<'a, T> {
    constructors!(&'a mut [T], as_mut_ptr);

    /// # Safety
    /// `desc` must describe memory valid for reads and writes of `T` for `'a`, not aliased.
    pub unsafe fn from_desc(desc: MatDesc) -> Result<Self> {
        if desc.dtype != T::DTYPE {
            return Err(Error::DtypeUnsupported(format!(
                "descriptor is {} but the view is {}",
                desc.dtype.name(),
                T::DTYPE.name()
            )));
        }
        Ok(Self { desc, _p: PhantomData })
    }

    /// A read-only view of the same memory for the duration of the borrow.
    pub fn as_ref(&self) -> MatRef<'_, T> {
        MatRef { desc: self.desc, _p: PhantomData }
    }

    /// Reborrow.
    pub fn rb(&mut self) -> MatMut<'_, T> {
        MatMut { desc: self.desc, _p: PhantomData }
    }

    /// The transposed view (same memory).
    pub fn t(self) -> Self {
        Self { desc: self.desc.t(), _p: PhantomData }
    }
}
