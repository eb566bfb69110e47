//! The softmax family: softmax, log_softmax (out of place or in place, with the masked-rows
//! option), logsumexp, the backward passes, and the tier's exp.

use sk::{Error, Kernels, MaskedRows, SoftmaxOptions};

use crate::args::{arg, disjoint, slice, slice_mut};
use crate::runtime::run;
use crate::status::{guard, CError, CResult, SkStatus};

/// `SK_MASKED_ROWS_NAN` (0) or `SK_MASKED_ROWS_ZERO` (1).
fn masked_rows(v: i32) -> CResult<SoftmaxOptions> {
    let m = match v {
        0 => MaskedRows::Nan,
        1 => MaskedRows::Zero,
        _ => {
            return Err(CError::Kernel(Error::InvalidOption {
                name: "masked_rows",
                value: v.to_string(),
                expected: "SK_MASKED_ROWS_NAN (0) or SK_MASKED_ROWS_ZERO (1)",
            }))
        }
    };
    Ok(SoftmaxOptions::default().masked_rows(m))
}

#[derive(Clone, Copy)]
enum Fwd {
    Softmax,
    LogSoftmax,
}

/// Softmax or log-softmax of `x` into `y`; in place when `y == x` with the same length.
///
/// # Safety
/// `x` readable and `y` writable for their lengths (or NULL with length 0).
unsafe fn forward(
    kind: Fwd,
    x: *const f32,
    x_len: usize,
    y: *mut f32,
    y_len: usize,
    cols: usize,
    masked: i32,
) -> CResult<()> {
    let opts = masked_rows(masked)?;
    let xa = arg("x", x, x_len)?;
    let ya = arg("y", y.cast_const(), y_len)?;
    if x_len > 0 && x == y.cast_const() && x_len == y_len {
        // SAFETY: `y` was checked and is writable for `y_len` floats; the only other argument
        // is the same range, which is not turned into a slice.
        let y = unsafe { slice_mut(y, y_len) };
        return inplace(kind, y, cols, opts);
    }
    disjoint(&[&ya], &[&xa])?;
    // SAFETY: checked by `arg`; `y` overlaps nothing (`disjoint`); the caller's contract.
    let (x, y) = unsafe { (slice(x, x_len), slice_mut(y, y_len)) };
    run(move |k: &'static Kernels| {
        match kind {
            Fwd::Softmax => k.softmax_with(x, y, cols, opts),
            Fwd::LogSoftmax => k.log_softmax_with(x, y, cols, opts),
        }
        .map_err(Into::into)
    })
}

fn inplace(kind: Fwd, x: &mut [f32], cols: usize, opts: SoftmaxOptions) -> CResult<()> {
    run(move |k: &'static Kernels| {
        match kind {
            Fwd::Softmax => k.softmax_inplace_with(x, cols, opts),
            Fwd::LogSoftmax => k.log_softmax_inplace_with(x, cols, opts),
        }
        .map_err(Into::into)
    })
}

/// # Safety
/// `x` readable and writable for `x_len` floats (or NULL with length 0).
unsafe fn forward_inplace(
    kind: Fwd,
    x: *mut f32,
    x_len: usize,
    cols: usize,
    masked: i32,
) -> CResult<()> {
    let opts = masked_rows(masked)?;
    arg("x", x.cast_const(), x_len)?;
    // SAFETY: checked by `arg`; the only array argument.
    let x = unsafe { slice_mut(x, x_len) };
    inplace(kind, x, cols, opts)
}

/// Softmax of each row of `x` (`[rows, cols]`) into `y`.
///
/// # Safety
/// `x` points to `x_len` readable floats and `y` to `y_len` writable floats (either may be
/// NULL with length 0); no other thread writes them during the call.
#[no_mangle]
pub unsafe extern "C" fn sk_softmax(
    x: *const f32,
    x_len: usize,
    y: *mut f32,
    y_len: usize,
    cols: usize,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_softmax", || unsafe {
        forward(Fwd::Softmax, x, x_len, y, y_len, cols, 0)
    })
}

/// [`sk_softmax`] with the result for all `-inf` rows (`masked_rows`).
///
/// # Safety
/// As [`sk_softmax`].
#[no_mangle]
pub unsafe extern "C" fn sk_softmax_ex(
    x: *const f32,
    x_len: usize,
    y: *mut f32,
    y_len: usize,
    cols: usize,
    masked_rows: i32,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_softmax_ex", || unsafe {
        forward(Fwd::Softmax, x, x_len, y, y_len, cols, masked_rows)
    })
}

/// Softmax in place over `x`.
///
/// # Safety
/// `x` points to `x_len` readable and writable floats (or is NULL with length 0); no other
/// thread accesses them during the call.
#[no_mangle]
pub unsafe extern "C" fn sk_softmax_inplace(x: *mut f32, x_len: usize, cols: usize) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_softmax_inplace", || unsafe {
        forward_inplace(Fwd::Softmax, x, x_len, cols, 0)
    })
}

/// Softmax in place, with `masked_rows`.
///
/// # Safety
/// As [`sk_softmax_inplace`].
#[no_mangle]
pub unsafe extern "C" fn sk_softmax_inplace_ex(
    x: *mut f32,
    x_len: usize,
    cols: usize,
    masked_rows: i32,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_softmax_inplace_ex", || unsafe {
        forward_inplace(Fwd::Softmax, x, x_len, cols, masked_rows)
    })
}

/// Log-softmax of each row of `x` into `y`.
///
/// # Safety
/// As [`sk_softmax`].
#[no_mangle]
pub unsafe extern "C" fn sk_log_softmax(
    x: *const f32,
    x_len: usize,
    y: *mut f32,
    y_len: usize,
    cols: usize,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_log_softmax", || unsafe {
        forward(Fwd::LogSoftmax, x, x_len, y, y_len, cols, 0)
    })
}

/// [`sk_log_softmax`] with `masked_rows`.
///
/// # Safety
/// As [`sk_softmax`].
#[no_mangle]
pub unsafe extern "C" fn sk_log_softmax_ex(
    x: *const f32,
    x_len: usize,
    y: *mut f32,
    y_len: usize,
    cols: usize,
    masked_rows: i32,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_log_softmax_ex", || unsafe {
        forward(Fwd::LogSoftmax, x, x_len, y, y_len, cols, masked_rows)
    })
}

/// Log-softmax in place over `x`.
///
/// # Safety
/// As [`sk_softmax_inplace`].
#[no_mangle]
pub unsafe extern "C" fn sk_log_softmax_inplace(
    x: *mut f32,
    x_len: usize,
    cols: usize,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_log_softmax_inplace", || unsafe {
        forward_inplace(Fwd::LogSoftmax, x, x_len, cols, 0)
    })
}

/// Log-softmax in place, with `masked_rows`.
///
/// # Safety
/// As [`sk_softmax_inplace`].
#[no_mangle]
pub unsafe extern "C" fn sk_log_softmax_inplace_ex(
    x: *mut f32,
    x_len: usize,
    cols: usize,
    masked_rows: i32,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_log_softmax_inplace_ex", || unsafe {
        forward_inplace(Fwd::LogSoftmax, x, x_len, cols, masked_rows)
    })
}

/// `out[r] = ln sum_k exp(x[r, k])`, one value per row.
///
/// # Safety
/// `x` points to `x_len` readable floats and `out` to `out_len` writable floats (either may be
/// NULL with length 0).
#[no_mangle]
pub unsafe extern "C" fn sk_logsumexp(
    x: *const f32,
    x_len: usize,
    out: *mut f32,
    out_len: usize,
    cols: usize,
) -> SkStatus {
    guard("sk_logsumexp", || {
        let xa = arg("x", x, x_len)?;
        let oa = arg("out", out.cast_const(), out_len)?;
        disjoint(&[&oa], &[&xa])?;
        // SAFETY: checked by `arg` and `disjoint`; the caller's contract.
        let (x, out) = unsafe { (slice(x, x_len), slice_mut(out, out_len)) };
        run(move |k: &'static Kernels| Ok(k.logsumexp(x, out, cols)?))
    })
}

#[derive(Clone, Copy)]
enum Bwd {
    Softmax,
    LogSoftmax,
}

/// # Safety
/// `y`, `dy` readable and `dx` writable for their lengths (or NULL with length 0).
#[allow(clippy::too_many_arguments)]
unsafe fn backward(
    kind: Bwd,
    y: *const f32,
    y_len: usize,
    dy: *const f32,
    dy_len: usize,
    dx: *mut f32,
    dx_len: usize,
    cols: usize,
) -> CResult<()> {
    let ya = arg("y", y, y_len)?;
    let dya = arg("dy", dy, dy_len)?;
    let dxa = arg("dx", dx.cast_const(), dx_len)?;
    disjoint(&[&dxa], &[&ya, &dya])?;
    // SAFETY: checked by `arg` and `disjoint`; the caller's contract.
    let (y, dy, dx) = unsafe { (slice(y, y_len), slice(dy, dy_len), slice_mut(dx, dx_len)) };
    run(move |k: &'static Kernels| {
        match kind {
            Bwd::Softmax => k.softmax_backward(y, dy, dx, cols),
            Bwd::LogSoftmax => k.log_softmax_backward(y, dy, dx, cols),
        }
        .map_err(Into::into)
    })
}

/// Softmax backward: `dx = y * (dy - <dy, y>)` per row.
///
/// # Safety
/// `y` and `dy` point to readable floats and `dx` to writable floats of the given lengths (any
/// may be NULL with length 0).
#[no_mangle]
pub unsafe extern "C" fn sk_softmax_backward(
    y: *const f32,
    y_len: usize,
    dy: *const f32,
    dy_len: usize,
    dx: *mut f32,
    dx_len: usize,
    cols: usize,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_softmax_backward", || unsafe {
        backward(Bwd::Softmax, y, y_len, dy, dy_len, dx, dx_len, cols)
    })
}

/// Log-softmax backward: `dx = dy - exp(y) * sum(dy)` per row.
///
/// # Safety
/// As [`sk_softmax_backward`].
#[no_mangle]
pub unsafe extern "C" fn sk_log_softmax_backward(
    y: *const f32,
    y_len: usize,
    dy: *const f32,
    dy_len: usize,
    dx: *mut f32,
    dx_len: usize,
    cols: usize,
) -> SkStatus {
    // SAFETY: the caller's contract, forwarded.
    guard("sk_log_softmax_backward", || unsafe {
        backward(Bwd::LogSoftmax, y, y_len, dy, dy_len, dx, dx_len, cols)
    })
}

/// `y[i] = exp(x[i])` with the tier's vectorized exp.
///
/// # Safety
/// `x` points to `x_len` readable floats and `y` to `y_len` writable floats (either may be
/// NULL with length 0).
#[no_mangle]
pub unsafe extern "C" fn sk_exp(
    x: *const f32,
    x_len: usize,
    y: *mut f32,
    y_len: usize,
) -> SkStatus {
    guard("sk_exp", || {
        let xa = arg("x", x, x_len)?;
        let ya = arg("y", y.cast_const(), y_len)?;
        disjoint(&[&ya], &[&xa])?;
        // SAFETY: checked by `arg` and `disjoint`; the caller's contract.
        let (x, y) = unsafe { (slice(x, x_len), slice_mut(y, y_len)) };
        run(move |k: &'static Kernels| Ok(k.exp(x, y)?))
    })
}
