//! Type-erased matrix descriptors: the one description of caller memory that every layer shares.
//!
//! A descriptor is what a DLPack `DLTensor` holds for a (batched) 2-D tensor: an address, a dtype,
//! the shape, element strides and a device. Strides are in elements, never bytes, and describe any
//! layout: row-major (`row_stride = cols`, `col_stride = 1`), column-major, a padded leading
//! dimension, or a transposed view (swap the strides). A strided batch adds a count and a stride.

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Where a buffer lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Host,
    Cuda(u32),
}

/// A (batched) strided matrix in caller memory. Element `(b, i, j)` is at byte address
/// `addr + (b * batch_stride + i * row_stride + j * col_stride) * dtype.size()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatDesc {
    pub addr: usize,
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
    pub batch: usize,
    pub batch_stride: usize,
    pub device: Device,
}

impl MatDesc {
    /// A single contiguous row-major matrix on the host.
    pub fn row_major(addr: usize, dtype: DType, rows: usize, cols: usize) -> Self {
        MatDesc {
            addr,
            dtype,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
            batch: 1,
            batch_stride: 0,
            device: Device::Host,
        }
    }

    /// A single contiguous column-major matrix on the host.
    pub fn col_major(addr: usize, dtype: DType, rows: usize, cols: usize) -> Self {
        MatDesc { row_stride: 1, col_stride: rows, ..Self::row_major(addr, dtype, rows, cols) }
    }

    pub fn with_device(self, device: Device) -> Self {
        MatDesc { device, ..self }
    }

    pub fn with_batch(self, batch: usize, batch_stride: usize) -> Self {
        MatDesc { batch, batch_stride, ..self }
    }

    /// The transposed view: same memory, rows and columns swapped.
    pub fn t(&self) -> Self {
        MatDesc { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..*self }
    }

    pub fn numel(&self) -> usize {
        self.rows * self.cols * self.batch
    }

    pub fn is_empty(&self) -> bool {
        self.numel() == 0
    }

    /// Largest element offset (in elements) touched, or `None` for an empty matrix.
    /// Only meaningful after `validate`, which checks it does not overflow.
    pub fn max_offset(&self) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        Some(
            (self.rows - 1) * self.row_stride
                + (self.cols - 1) * self.col_stride
                + (self.batch - 1) * self.batch_stride,
        )
    }

    /// Byte range `[start, end)` the matrix touches, `None` when empty.
    pub fn byte_span(&self) -> Option<(usize, usize)> {
        self.max_offset().map(|m| (self.addr, self.addr + (m + 1) * self.dtype.size()))
    }

    /// Whether the byte spans of `self` and `other` intersect (empty matrices touch nothing).
    pub fn overlaps(&self, other: &MatDesc) -> bool {
        match (self.byte_span(), other.byte_span()) {
            (Some((a0, a1)), Some((b0, b1))) => a0 < b1 && b0 < a1,
            _ => false,
        }
    }

    /// Check that the descriptor is well formed; `arg` names it in the error. Empty matrices
    /// (zero rows or columns) are allowed only where `allow_empty` says so: a `k = 0` frozen part
    /// is legitimate, an empty weight matrix is not.
    pub fn validate(&self, arg: &str, allow_empty: bool) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::shape(arg, "batch count must be at least 1"));
        }
        if self.rows == 0 || self.cols == 0 {
            if allow_empty {
                return Ok(());
            }
            return Err(Error::shape(
                arg,
                format!("{} x {} matrix: rows and columns must be at least 1", self.rows, self.cols),
            ));
        }
        if self.addr == 0 {
            return Err(Error::NullPointer { arg: arg.to_string() });
        }
        let size = self.dtype.size();
        if self.addr % size != 0 {
            return Err(Error::Misaligned { arg: arg.to_string(), addr: self.addr, align: size });
        }
        // Largest offset, with overflow checks at every step (a descriptor can come from C).
        let ovf = || {
            Error::overflow(
                arg,
                format!(
                    "{} x {} x {} {} elements with strides (row {}, col {}, batch {}) at {:#x}",
                    self.batch,
                    self.rows,
                    self.cols,
                    self.dtype.name(),
                    self.row_stride,
                    self.col_stride,
                    self.batch_stride,
                    self.addr
                ),
            )
        };
        let r = (self.rows - 1).checked_mul(self.row_stride).ok_or_else(ovf)?;
        let c = (self.cols - 1).checked_mul(self.col_stride).ok_or_else(ovf)?;
        let b = (self.batch - 1).checked_mul(self.batch_stride).ok_or_else(ovf)?;
        let max = r.checked_add(c).and_then(|x| x.checked_add(b)).ok_or_else(ovf)?;
        let bytes = max.checked_add(1).and_then(|x| x.checked_mul(size)).ok_or_else(ovf)?;
        // Keep offsets representable as isize (what pointer arithmetic and faer need).
        if bytes > isize::MAX as usize || self.addr.checked_add(bytes).is_none() {
            return Err(ovf());
        }
        self.check_no_self_overlap(arg)
    }

    /// Distinct elements must have distinct addresses. The test is the usual sufficient one: sort
    /// the dimensions of extent > 1 by stride; each stride must exceed the span of the smaller
    /// ones. (A zero stride — a broadcast — is rejected too: osft writes through descriptors.)
    fn check_no_self_overlap(&self, arg: &str) -> Result<()> {
        let mut dims: Vec<(usize, usize, &str)> = [
            (self.rows, self.row_stride, "row"),
            (self.cols, self.col_stride, "column"),
            (self.batch, self.batch_stride, "batch"),
        ]
        .into_iter()
        .filter(|d| d.0 > 1)
        .collect();
        dims.sort_by_key(|d| d.1);
        let mut span = 0usize; // largest offset reachable with the dims seen so far
        for (extent, stride, name) in dims {
            if stride <= span || stride == 0 {
                return Err(Error::overlap(
                    arg,
                    format!(
                        "{name} stride {stride} makes elements overlap (rows {} stride {}, cols {} stride {}, batch {} stride {})",
                        self.rows, self.row_stride, self.cols, self.col_stride, self.batch, self.batch_stride
                    ),
                ));
            }
            span += (extent - 1) * stride;
        }
        Ok(())
    }

    /// Columns `[c0, c0 + n)` of every matrix in the batch (a view into the same memory).
    pub fn cols_range(&self, c0: usize, n: usize) -> Self {
        debug_assert!(c0 + n <= self.cols);
        let addr =
            if n == 0 || self.rows == 0 { self.addr } else { self.addr + c0 * self.col_stride * self.dtype.size() };
        MatDesc { addr, cols: n, ..*self }
    }

    /// Rows `[r0, r0 + n)` of every matrix in the batch.
    pub fn rows_range(&self, r0: usize, n: usize) -> Self {
        self.t().cols_range(r0, n).t()
    }

    /// Matrices `[b0, b0 + n)` of the batch. A batch-1 descriptor broadcast over a larger batch
    /// (see `broadcast_ok`) stays itself.
    pub fn batch_range(&self, b0: usize, n: usize) -> Self {
        if self.batch == 1 {
            return *self;
        }
        debug_assert!(b0 + n <= self.batch);
        MatDesc { addr: self.addr + b0 * self.batch_stride * self.dtype.size(), batch: n, ..*self }
    }
}

/// Arguments an op writes must not share memory with anything else it touches. This is a
/// conservative byte-range test: two interleaved views of one buffer (say `U[:, :k]` and
/// `U[:, k:]` of a row-major `U`) are reported as overlapping; pass them as separate buffers.
/// (In-place ops pass the same descriptor as input and output and check the other arguments.)
pub fn check_disjoint(outputs: &[(&str, &MatDesc)], inputs: &[(&str, &MatDesc)]) -> Result<()> {
    check_disjoint_impl(outputs, inputs, false)
}

/// As [`check_disjoint`], but an output may be the very descriptor of an input: for ops that
/// copy every input into the workspace before writing any output (SVD, decompose).
pub fn check_disjoint_staged(outputs: &[(&str, &MatDesc)], inputs: &[(&str, &MatDesc)]) -> Result<()> {
    check_disjoint_impl(outputs, inputs, true)
}

fn check_disjoint_impl(outputs: &[(&str, &MatDesc)], inputs: &[(&str, &MatDesc)], identical_ok: bool) -> Result<()> {
    for (i, (name, out)) in outputs.iter().enumerate() {
        for (other, o) in outputs.iter().skip(i + 1) {
            if out.overlaps(o) {
                return Err(Error::overlap(name, format!("output shares memory with output {other}")));
            }
        }
        for (other, inp) in inputs {
            if out.overlaps(inp) && !(identical_ok && *out == *inp) {
                return Err(Error::overlap(name, format!("output shares memory with input {other}")));
            }
        }
    }
    Ok(())
}

/// The batch of a call: every operand must have either this batch count or 1 (broadcast: the
/// same matrix for every batch entry, e.g. one basis for a batch of gradients).
pub fn check_batch(batch: usize, args: &[(&str, &MatDesc)]) -> Result<()> {
    for (name, d) in args {
        if d.batch != batch && d.batch != 1 {
            return Err(Error::shape(name, format!("batch count {} does not match the call's batch {batch}", d.batch)));
        }
    }
    Ok(())
}
