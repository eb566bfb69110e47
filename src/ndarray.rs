//! The kernels over [`ndarray`] 2-D views (feature `ndarray`), without a copy.
//!
//! A view whose rows are contiguous (stride 1 along the last axis) and do not overlap (row
//! stride at least the row length) maps straight onto the strided kernels: a standard array, a
//! slice of its rows, a slice of its columns (`s![.., a..b]`), every second row. Any other
//! layout (a transposed view, a column stride other than 1, negative or zero row strides) is
//! [`Error::UnsupportedLayout`]: copy it with `.as_standard_layout()` first. Results are the
//! same bits as the slice functions on the rows copied out (a NaN's sign and payload aside),
//! and the elements between rows
//! (other columns of a sliced array) are never read or written.
//!
//! ```
//! use ndarray::{s, Array2};
//! use softmax_kernels::{ndarray as nd, Kernels, SoftmaxOptions};
//! let k = Kernels::best();
//! let x = Array2::from_shape_fn((4, 6), |(i, j)| (i * 6 + j) as f32 * 0.1);
//! let mut p = Array2::<f32>::zeros((4, 3));
//! // The softmax of the first three columns of every row.
//! nd::softmax(k, x.slice(s![.., ..3]), p.view_mut(), SoftmaxOptions::default()).unwrap();
//! let row0: f32 = p.row(0).sum();
//! assert!((row0 - 1.0).abs() < 1e-6);
//! // A transposed view is refused, with the reason.
//! let err = nd::softmax(k, x.t(), Array2::zeros((6, 4)).view_mut(), Default::default());
//! assert!(matches!(err, Err(softmax_kernels::Error::UnsupportedLayout { arg: "x", .. })));
//! ```

use ::ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

use crate::cross_entropy::{
    CrossEntropyOptions, CrossEntropyOutputs, CrossEntropyStats, Label, RawTargets,
};
use crate::dispatch::Kernels;
use crate::error::{Error, Result};
use crate::softmax::{Fwd, SoftmaxOptions};
use crate::view::Raw;

/// The raw rows of a 2-D view, or [`Error::UnsupportedLayout`].
fn raw_parts(
    arg: &'static str,
    ptr: *mut f32,
    dim: (usize, usize),
    strides: &[isize],
) -> Result<Raw> {
    let (rows, cols) = dim;
    let (s0, s1) = (strides[0], strides[1]);
    let bad = || Error::UnsupportedLayout {
        arg,
        strides: strides.to_vec(),
    };
    // Along a row: contiguous (any stride is fine for rows of at most one element).
    if cols > 1 && s1 != 1 {
        return Err(bad());
    }
    // Between rows: forward, not overlapping (any stride is fine for at most one row).
    let ld = if rows > 1 {
        usize::try_from(s0)
            .ok()
            .filter(|&ld| ld >= cols)
            .ok_or_else(bad)?
    } else {
        cols
    };
    Ok(Raw {
        ptr,
        rows,
        cols,
        ld,
    })
}

fn raw_of(arg: &'static str, v: &ArrayView2<'_, f32>) -> Result<Raw> {
    raw_parts(arg, v.as_ptr().cast_mut(), v.dim(), v.strides())
}

fn raw_of_mut(arg: &'static str, v: &mut ArrayViewMut2<'_, f32>) -> Result<Raw> {
    let (dim, strides) = (v.dim(), v.strides().to_vec());
    raw_parts(arg, v.as_mut_ptr(), dim, &strides)
}

/// A 1-D view as a slice, or [`Error::UnsupportedLayout`].
fn slice_of<'a, T>(arg: &'static str, v: &'a ArrayView1<'_, T>) -> Result<&'a [T]> {
    v.as_slice().ok_or_else(|| Error::UnsupportedLayout {
        arg,
        strides: v.strides().to_vec(),
    })
}

/// Softmax of each row of `x` into `y` ([`Kernels::softmax_strided`]).
///
/// # Errors
/// [`Error::UnsupportedLayout`] for a view the kernels cannot read in place (see the module
/// docs); [`Error::ZeroDim`] for rows of no columns; [`Error::ShapeMismatch`] if `y`'s shape
/// differs from `x`'s.
pub fn softmax(
    k: &Kernels,
    x: ArrayView2<'_, f32>,
    mut y: ArrayViewMut2<'_, f32>,
    opts: SoftmaxOptions,
) -> Result<()> {
    let (xr, yr) = (raw_of("x", &x)?, raw_of_mut("y", &mut y)?);
    // SAFETY: the rows of two views of distinct borrows (`y` is mutable, so it overlaps no
    // element of `x`); the kernels touch the rows' elements only.
    unsafe { k.forward_raw(Fwd::Softmax, xr, yr, opts) }
}

/// Log-softmax of each row of `x` into `y` ([`softmax`]).
///
/// # Errors
/// As [`softmax`].
pub fn log_softmax(
    k: &Kernels,
    x: ArrayView2<'_, f32>,
    mut y: ArrayViewMut2<'_, f32>,
    opts: SoftmaxOptions,
) -> Result<()> {
    let (xr, yr) = (raw_of("x", &x)?, raw_of_mut("y", &mut y)?);
    // SAFETY: as in `softmax`.
    unsafe { k.forward_raw(Fwd::LogSoftmax, xr, yr, opts) }
}

/// Softmax in place over the rows of `x`.
///
/// # Errors
/// As [`softmax`].
pub fn softmax_inplace(
    k: &Kernels,
    mut x: ArrayViewMut2<'_, f32>,
    opts: SoftmaxOptions,
) -> Result<()> {
    let xr = raw_of_mut("x", &mut x)?;
    // SAFETY: one view's rows, in place with one stride.
    unsafe { k.forward_raw(Fwd::Softmax, xr, xr, opts) }
}

/// Log-softmax in place over the rows of `x`.
///
/// # Errors
/// As [`softmax`].
pub fn log_softmax_inplace(
    k: &Kernels,
    mut x: ArrayViewMut2<'_, f32>,
    opts: SoftmaxOptions,
) -> Result<()> {
    let xr = raw_of_mut("x", &mut x)?;
    // SAFETY: one view's rows, in place with one stride.
    unsafe { k.forward_raw(Fwd::LogSoftmax, xr, xr, opts) }
}

/// The logsumexp of each row of `x` into `out` (contiguous, one element per row).
///
/// # Errors
/// As [`softmax`]; [`Error::UnsupportedLayout`] if `out` is not contiguous,
/// [`Error::LengthMismatch`] if it does not hold one element per row.
pub fn logsumexp(
    k: &Kernels,
    x: ArrayView2<'_, f32>,
    mut out: ArrayViewMut1<'_, f32>,
) -> Result<()> {
    let xr = raw_of("x", &x)?;
    let strides = out.strides().to_vec();
    let out = out.as_slice_mut().ok_or(Error::UnsupportedLayout {
        arg: "out",
        strides,
    })?;
    // SAFETY: the rows of `x`; `out` is a distinct mutable slice.
    unsafe { k.logsumexp_raw(xr, out) }
}

/// Softmax backward over views ([`Kernels::softmax_backward`]): `dx = y (dy - <dy, y>)`.
///
/// # Errors
/// As [`softmax`], for `y`, `dy` and `dx`.
pub fn softmax_backward(
    k: &Kernels,
    y: ArrayView2<'_, f32>,
    dy: ArrayView2<'_, f32>,
    mut dx: ArrayViewMut2<'_, f32>,
) -> Result<()> {
    let (yr, dyr, dxr) = (
        raw_of("y", &y)?,
        raw_of("dy", &dy)?,
        raw_of_mut("dx", &mut dx)?,
    );
    // SAFETY: the rows of three views; `dx` is a distinct mutable borrow.
    unsafe { k.backward_checked(false, yr, dyr, dxr) }
}

/// Log-softmax backward over views ([`Kernels::log_softmax_backward`]).
///
/// # Errors
/// As [`softmax_backward`].
pub fn log_softmax_backward(
    k: &Kernels,
    y: ArrayView2<'_, f32>,
    dy: ArrayView2<'_, f32>,
    mut dx: ArrayViewMut2<'_, f32>,
) -> Result<()> {
    let (yr, dyr, dxr) = (
        raw_of("y", &y)?,
        raw_of("dy", &dy)?,
        raw_of_mut("dx", &mut dx)?,
    );
    // SAFETY: as in `softmax_backward`.
    unsafe { k.backward_checked(true, yr, dyr, dxr) }
}

/// The logits of a cross-entropy over views, and where its gradient goes.
#[derive(Debug)]
pub enum NdLogits<'a> {
    /// Loss only.
    Read(ArrayView2<'a, f32>),
    /// Loss and gradient into a separate view of the same shape.
    Grad(ArrayView2<'a, f32>, ArrayViewMut2<'a, f32>),
    /// Loss and gradient written over the logits.
    InPlace(ArrayViewMut2<'a, f32>),
}

/// The targets of a cross-entropy over views.
#[derive(Debug)]
pub enum NdTargets<'a, L: Label = i64> {
    /// One class label per row (a contiguous 1-D view).
    Classes(ArrayView1<'a, L>),
    /// A probability row per logits row (a standard-layout view).
    Probs(ArrayView2<'a, f32>),
}

/// Cross-entropy over views: [`Kernels::cross_entropy_with`] for every target kind, option
/// and output, the logits (and gradient) any layout the module docs accept.
///
/// # Errors
/// As [`Kernels::cross_entropy_strided`]; [`Error::UnsupportedLayout`] for a view the kernels
/// cannot read in place, labels that are not contiguous, or probability targets that are not
/// in standard layout.
///
/// ```
/// use ndarray::{array, s};
/// use softmax_kernels::ndarray::{cross_entropy_with, NdLogits, NdTargets};
/// use softmax_kernels::{CrossEntropyOptions, CrossEntropyOutputs, Kernels};
/// // Logits of [B = 2, T = 2, V = 3] as a [B, T * V] array; the last position of each row.
/// let z = array![[0.0f32, 0.0, 0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]];
/// let mut g = ndarray::Array2::<f32>::zeros((2, 3));
/// let st = cross_entropy_with(
///     Kernels::best(),
///     NdLogits::Grad(z.slice(s![.., 3..]), g.view_mut()),
///     NdTargets::Classes(array![0i64, 2].view()),
///     &CrossEntropyOptions::default(),
///     &mut CrossEntropyOutputs::default(),
/// )
/// .unwrap();
/// let l0 = -(1f32.exp() / (1f32.exp() + 2.0)).ln();
/// assert!((st.loss - (l0 + 3f32.ln()) / 2.0).abs() < 1e-6);
/// assert!(g[[0, 0]] < 0.0 && g[[1, 2]] < 0.0);
/// ```
pub fn cross_entropy_with<L: Label>(
    k: &Kernels,
    logits: NdLogits<'_>,
    targets: NdTargets<'_, L>,
    opts: &CrossEntropyOptions<'_>,
    outputs: &mut CrossEntropyOutputs<'_>,
) -> Result<CrossEntropyStats> {
    let (x, grad) = match logits {
        NdLogits::Read(x) => (raw_of("logits", &x)?, None),
        NdLogits::Grad(x, mut g) => (raw_of("logits", &x)?, Some(raw_of_mut("grad", &mut g)?)),
        NdLogits::InPlace(mut x) => {
            let x = raw_of_mut("logits", &mut x)?;
            (x, Some(x))
        }
    };
    let probs;
    let targets = match &targets {
        NdTargets::Classes(t) => RawTargets::Classes(slice_of("targets", t)?),
        NdTargets::Probs(y) => {
            probs = y.as_slice().ok_or_else(|| Error::UnsupportedLayout {
                arg: "targets",
                strides: y.strides().to_vec(),
            })?;
            let (rows, cols) = y.dim();
            RawTargets::Probs(
                probs,
                Raw {
                    ptr: probs.as_ptr().cast_mut(),
                    rows,
                    cols,
                    ld: cols,
                },
            )
        }
    };
    // SAFETY: the rows of the logits view; the gradient a distinct mutable view or the logits
    // themselves (in place, one stride); the probability targets a slice of their own.
    unsafe { k.ce_raw(x, grad, targets, opts, outputs) }
}

/// The mean (or as `opts` says) cross-entropy of `logits` against class labels, loss only.
///
/// # Errors
/// As [`cross_entropy_with`].
pub fn cross_entropy<L: Label>(
    k: &Kernels,
    logits: ArrayView2<'_, f32>,
    labels: ArrayView1<'_, L>,
    opts: &CrossEntropyOptions<'_>,
) -> Result<f32> {
    cross_entropy_with(
        k,
        NdLogits::Read(logits),
        NdTargets::Classes(labels),
        opts,
        &mut CrossEntropyOutputs::default(),
    )
    .map(|s| s.loss)
}

/// Loss and gradient against class labels, the gradient into `grad`.
///
/// # Errors
/// As [`cross_entropy_with`].
pub fn cross_entropy_fwd_bwd<L: Label>(
    k: &Kernels,
    logits: ArrayView2<'_, f32>,
    labels: ArrayView1<'_, L>,
    grad: ArrayViewMut2<'_, f32>,
    opts: &CrossEntropyOptions<'_>,
) -> Result<f32> {
    // (Views are invariant in their lifetime: reborrow all three to this call's.)
    cross_entropy_with(
        k,
        NdLogits::Grad(logits.reborrow(), grad.reborrow()),
        NdTargets::Classes(labels.reborrow()),
        opts,
        &mut CrossEntropyOutputs::default(),
    )
    .map(|s| s.loss)
}
