//! Strided matrix views: the rows of a row-major `[rows, cols]` matrix that start `ld` floats
//! apart (BLAS's leading dimension), so that a framework's slice of a larger tensor runs
//! without a copy.
//!
//! The last-token logits of a `[B, T, V]` tensor are `B` rows of `V` floats, `T * V` apart:
//!
//! ```
//! use softmax_kernels::{Kernels, MatMut, MatRef};
//! let (b, t, v) = (2, 3, 4);
//! let logits: Vec<f32> = (0..b * t * v).map(|i| i as f32 * 0.1).collect();
//! // Row `i` of the view is `logits[i][t - 1][..]`.
//! let last = MatRef::new(&logits[(t - 1) * v..], b, v, t * v).unwrap();
//! let mut p = vec![0.0f32; b * v];
//! Kernels::best()
//!     .softmax_strided(last, MatMut::dense(&mut p, v).unwrap(), Default::default())
//!     .unwrap();
//! // The same as the softmax of the copied rows.
//! let mut copy = Vec::new();
//! for i in 0..b {
//!     copy.extend_from_slice(&logits[(i * t + t - 1) * v..][..v]);
//! }
//! let mut q = vec![0.0f32; b * v];
//! Kernels::best().softmax(&copy, &mut q, v).unwrap();
//! assert_eq!(p, q);
//! ```

use crate::error::{rows_of, Error, Result};
use crate::linear::MatrixLayout;

/// A read-only view of a `[rows, cols]` matrix in `data`: row `r` is
/// `data[r * ld .. r * ld + cols]`. The floats between rows are never read.
///
/// `data` holds exactly `rows * ld` floats or `(rows - 1) * ld + cols` (without the last row's
/// padding), as for [`MatrixLayout`].
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    layout: MatrixLayout,
}

/// A mutable view of a `[rows, cols]` matrix in `data`, as [`MatRef`]. The floats between
/// rows are never read or written.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    layout: MatrixLayout,
}

/// The checks of both views' constructors.
fn layout(len: usize, rows: usize, cols: usize, ld: usize) -> Result<MatrixLayout> {
    let layout = MatrixLayout::new(rows, cols).with_ld(ld);
    layout.check("data", len)?;
    Ok(layout)
}

/// A dense layout for `len` floats in rows of `cols`.
fn dense(len: usize, cols: usize) -> Result<MatrixLayout> {
    Ok(MatrixLayout::new(rows_of("data", len, cols)?, cols))
}

impl<'a> MatRef<'a> {
    /// The view of `rows` rows of `cols` floats, `ld` apart, in `data`.
    ///
    /// # Errors
    /// [`Error::LeadingDim`] if `ld < cols`, [`Error::SizeOverflow`] if `rows * ld`
    /// overflows, [`Error::MatrixLength`] if `data` holds neither `rows * ld` nor
    /// `(rows - 1) * ld + cols` floats.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Result<Self> {
        Ok(MatRef {
            layout: layout(data.len(), rows, cols, ld)?,
            data,
        })
    }

    /// The dense view (`ld == cols`) of `data` in rows of `cols`.
    ///
    /// # Errors
    /// [`Error::ZeroDim`] if `cols == 0`, [`Error::NotMultiple`] if `data.len()` is not a
    /// multiple of `cols`.
    pub fn dense(data: &'a [f32], cols: usize) -> Result<Self> {
        Ok(MatRef {
            layout: dense(data.len(), cols)?,
            data,
        })
    }

    /// Rows, columns and leading dimension.
    pub fn layout(&self) -> MatrixLayout {
        self.layout
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.layout.rows
    }

    /// The row length.
    pub fn cols(&self) -> usize {
        self.layout.cols
    }

    /// The leading dimension (floats from one row's start to the next).
    pub fn ld(&self) -> usize {
        self.layout.ld
    }

    /// Row `r` (`None` past the last row).
    pub fn row(&self, r: usize) -> Option<&'a [f32]> {
        (r < self.layout.rows).then(|| &self.data[r * self.layout.ld..][..self.layout.cols])
    }

    /// The slice the view lies in.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }
}

impl<'a> MatMut<'a> {
    /// The view of `rows` rows of `cols` floats, `ld` apart, in `data`.
    ///
    /// # Errors
    /// As [`MatRef::new`].
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, ld: usize) -> Result<Self> {
        Ok(MatMut {
            layout: layout(data.len(), rows, cols, ld)?,
            data,
        })
    }

    /// The dense view (`ld == cols`) of `data` in rows of `cols`.
    ///
    /// # Errors
    /// As [`MatRef::dense`].
    pub fn dense(data: &'a mut [f32], cols: usize) -> Result<Self> {
        Ok(MatMut {
            layout: dense(data.len(), cols)?,
            data,
        })
    }

    /// Rows, columns and leading dimension.
    pub fn layout(&self) -> MatrixLayout {
        self.layout
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.layout.rows
    }

    /// The row length.
    pub fn cols(&self) -> usize {
        self.layout.cols
    }

    /// The leading dimension (floats from one row's start to the next).
    pub fn ld(&self) -> usize {
        self.layout.ld
    }

    /// A read-only view of the same matrix.
    pub fn as_ref(&self) -> MatRef<'_> {
        MatRef {
            data: self.data,
            layout: self.layout,
        }
    }

    /// A shorter-lived mutable view of the same matrix (to pass it on and use it again).
    pub fn reborrow(&mut self) -> MatMut<'_> {
        MatMut {
            data: self.data,
            layout: self.layout,
        }
    }

    /// Row `r`, mutable (`None` past the last row).
    pub fn row_mut(&mut self, r: usize) -> Option<&mut [f32]> {
        let MatrixLayout { rows, cols, ld } = self.layout;
        (r < rows).then(|| &mut self.data[r * ld..][..cols])
    }

    /// The slice the view lies in.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        self.data
    }
}

/// A checked view's pointer and layout, for the kernels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Raw {
    pub ptr: *mut f32,
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
}

impl MatRef<'_> {
    /// The raw parts.
    pub(crate) fn raw(&self) -> Raw {
        Raw {
            ptr: self.data.as_ptr().cast_mut(),
            rows: self.layout.rows,
            cols: self.layout.cols,
            ld: self.layout.ld,
        }
    }
}

impl MatMut<'_> {
    /// The raw parts.
    pub(crate) fn raw(&mut self) -> Raw {
        Raw {
            ptr: self.data.as_mut_ptr(),
            rows: self.layout.rows,
            cols: self.layout.cols,
            ld: self.layout.ld,
        }
    }
}

/// [`Error::ZeroDim`] for rows of no columns (as the contiguous functions report `cols == 0`).
pub(crate) fn nonzero_cols(m: Raw) -> Result<()> {
    if m.cols == 0 {
        return Err(Error::ZeroDim { arg: "cols" });
    }
    Ok(())
}

/// Checks that matrix `arg` has the shape of the first.
pub(crate) fn same_shape(arg: &'static str, expected: Raw, actual: Raw) -> Result<()> {
    if (expected.rows, expected.cols) != (actual.rows, actual.cols) {
        return Err(Error::ShapeMismatch {
            arg,
            expected: (expected.rows, expected.cols),
            actual: (actual.rows, actual.cols),
        });
    }
    Ok(())
}
