//! Rows whose maximum is not finite, shared by every tier (the reference included), so the
//! special-value semantics are written once. These paths are rare and scalar.
//!
//! A row's maximum is `+inf`, `-inf` or NaN only when the row holds `+inf`, is entirely `-inf`,
//! or holds NaN. PyTorch's results, which we follow: any NaN makes the row NaN; a `+inf` logit
//! makes softmax and log_softmax NaN (`inf - inf`) and logsumexp `+inf`; an all `-inf` (fully
//! masked) row gives NaN from softmax and log_softmax (or, under [`crate::MaskedRows::Zero`],
//! probability 0 / log-probability `-inf`) and `-inf` from logsumexp.

/// Whether `x[0..n]` holds a NaN.
///
/// # Safety
/// `x .. x + n` valid for reads.
pub(crate) unsafe fn has_nan(x: *const f32, n: usize) -> bool {
    // SAFETY: the caller guarantees the range.
    (0..n).any(|i| unsafe { *x.add(i) }.is_nan())
}

/// Writes `v` to `y[0..n]`.
///
/// # Safety
/// `y .. y + n` valid for writes.
pub(crate) unsafe fn fill(y: *mut f32, n: usize, v: f32) {
    for i in 0..n {
        // SAFETY: `i < n`, inside the caller's range.
        unsafe { *y.add(i) = v };
    }
}

/// The value a fully masked row's outputs get, or NaN.
///
/// # Safety
/// `x .. x + n` valid for reads.
unsafe fn masked_or_nan(x: *const f32, n: usize, m: f32, masked_zero: bool, masked: f32) -> f32 {
    // SAFETY: forwarded from the caller.
    if m == f32::NEG_INFINITY && masked_zero && !unsafe { has_nan(x, n) } {
        masked
    } else {
        f32::NAN
    }
}

/// Softmax of a row whose maximum `m` is not finite.
///
/// # Safety
/// `x .. x + n` valid for reads, `y .. y + n` for writes (may equal `x`).
pub(crate) unsafe fn softmax_row(x: *const f32, y: *mut f32, n: usize, m: f32, masked_zero: bool) {
    // SAFETY: forwarded from the caller; `x` is read before `y` is written.
    unsafe { fill(y, n, masked_or_nan(x, n, m, masked_zero, 0.0)) }
}

/// Log-softmax of a row whose maximum `m` is not finite.
///
/// # Safety
/// As [`softmax_row`].
pub(crate) unsafe fn log_softmax_row(
    x: *const f32,
    y: *mut f32,
    n: usize,
    m: f32,
    masked_zero: bool,
) {
    // SAFETY: forwarded from the caller; `x` is read before `y` is written.
    unsafe { fill(y, n, masked_or_nan(x, n, m, masked_zero, f32::NEG_INFINITY)) }
}

/// Logsumexp of a row whose maximum `m` is not finite: NaN if the row holds NaN, else `m`.
///
/// # Safety
/// `x .. x + n` valid for reads.
pub(crate) unsafe fn logsumexp_row(x: *const f32, n: usize, m: f32) -> f32 {
    // SAFETY: forwarded from the caller.
    if m.is_nan() || unsafe { has_nan(x, n) } {
        f32::NAN
    } else {
        m
    }
}

/// Online-softmax chunk state for a chunk whose maximum `m` is not finite: `(NaN, NaN)` if it
/// holds a NaN; `(-inf, 0)` if it is all `-inf` (zeros stored when `y` is not null);
/// `(+inf, NaN)` if it holds `+inf` and no NaN.
///
/// # Safety
/// `x .. x + n` valid for reads; `y` null or valid for `n` writes.
pub(crate) unsafe fn chunk_stats(x: *const f32, y: *mut f32, n: usize, m: f32) -> (f32, f64) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if m.is_nan() || has_nan(x, n) {
            (f32::NAN, f64::NAN)
        } else if m == f32::NEG_INFINITY {
            if !y.is_null() {
                fill(y, n, 0.0);
            }
            (m, 0.0)
        } else {
            (f32::INFINITY, f64::NAN)
        }
    }
}
