//! The scalar reference: the oracle every other tier is tested and fuzzed against.
//!
//! Straightforward code, computed in f64 from the formulas and rounded to f32 once at the end;
//! never optimized for speed. Its special-value semantics (non-finite row maxima) are the same
//! code the SIMD tiers use. It is also the `scalar` tier of the dispatch table
//! ([`crate::Isa::Scalar`]), and every function here equals
//! `Kernels::for_isa(Isa::Scalar).unwrap().<function>`.
//!
//! ```
//! let z = [1.0f32, 2.0, 3.0];
//! let mut p = [0.0f32; 3];
//! softmax_kernels::reference::softmax(&z, &mut p, 3).unwrap();
//! let s: f64 = (1.0f64.exp() + 2.0f64.exp() + 3.0f64.exp());
//! assert!((p[2] as f64 - 3.0f64.exp() / s).abs() < 1e-7);
//! ```

use crate::arch::generic::softmax::{FwdArgs, FwdKind};
use crate::arch::special;
use crate::dispatch::{Isa, Kernels};
use crate::error::Result;
use crate::softmax::SoftmaxOptions;

/// The scalar tier's kernel table.
pub(crate) static KERNELS: Kernels = Kernels {
    isa: Isa::Scalar,
    // Every row length takes the one plain f64 row loop (`forward`), never the online path.
    short_cols: usize::MAX,
    online_min_cols: usize::MAX,
    fwd_short: forward,
    fwd_rows: forward,
    softmax_backward_rows,
    log_softmax_backward_rows,
    chunk_stats,
    scale,
    sub2,
    exp_nonpos: exp_map,
    exp_full: exp_map,
    linear: &linear::LINEAR,
    ce: &cross_entropy::CE,
    tok: &token::TOK,
};

mod cross_entropy;
mod linear;
mod token;

/// `(max, sum exp(x - max))` of a row in f64, the max ignoring NaN.
///
/// # Safety
/// `x .. x + n` valid for reads.
unsafe fn max_sum(x: *const f32, n: usize) -> (f32, f64) {
    // SAFETY: `i < n`, inside the caller's range.
    let at = |i: usize| unsafe { *x.add(i) };
    let m = (0..n).map(at).fold(f32::NEG_INFINITY, f32::max);
    let s = if m.is_finite() {
        (0..n).map(|i| (at(i) as f64 - m as f64).exp()).sum()
    } else {
        f64::NAN
    };
    (m, s)
}

/// Every forward path of the reference: whole rows in f64.
///
/// # Safety
/// As `generic::softmax::short_path`: `x` valid for reading `rows` rows of `cols` floats
/// `a.ldx` apart; `y` for writing as many `a.ldy` apart (equal, or not overlapping), or one
/// float per row for `LogSumExp`.
unsafe fn forward(x: *const f32, y: *mut f32, rows: usize, cols: usize, a: FwdArgs) {
    // SAFETY: forwarded.
    unsafe {
        match a.kind {
            FwdKind::Softmax => softmax_rows(x, y, rows, cols, a),
            FwdKind::LogSoftmax => log_softmax_rows(x, y, rows, cols, a),
            FwdKind::LogSumExp => logsumexp_rows(x, y, rows, cols, a.ldx),
        }
    }
}

/// # Safety
/// As `forward`.
unsafe fn softmax_rows(x: *const f32, y: *mut f32, rows: usize, cols: usize, a: FwdArgs) {
    let mz = a.masked_zero;
    for r in 0..rows {
        // SAFETY: row `r` lies inside the caller's ranges; each `x[i]` is read before `y[i]`
        // is written.
        unsafe {
            let (xr, yr) = (x.add(r * a.ldx), y.add(r * a.ldy));
            let (m, s) = max_sum(xr, cols);
            if !m.is_finite() {
                special::softmax_row(xr, yr, cols, m, mz);
                continue;
            }
            for i in 0..cols {
                *yr.add(i) = ((*xr.add(i) as f64 - m as f64).exp() / s) as f32;
            }
        }
    }
}

/// # Safety
/// As `forward`.
unsafe fn log_softmax_rows(x: *const f32, y: *mut f32, rows: usize, cols: usize, a: FwdArgs) {
    let mz = a.masked_zero;
    for r in 0..rows {
        // SAFETY: as in `softmax_rows`.
        unsafe {
            let (xr, yr) = (x.add(r * a.ldx), y.add(r * a.ldy));
            let (m, s) = max_sum(xr, cols);
            if !m.is_finite() {
                special::log_softmax_row(xr, yr, cols, m, mz);
                continue;
            }
            let ls = s.ln();
            for i in 0..cols {
                *yr.add(i) = ((*xr.add(i) as f64 - m as f64) - ls) as f32;
            }
        }
    }
}

/// # Safety
/// `x` valid for reading `rows` rows of `cols` floats `ldx` apart, `out` for `rows` writes.
unsafe fn logsumexp_rows(x: *const f32, out: *mut f32, rows: usize, cols: usize, ldx: usize) {
    for r in 0..rows {
        // SAFETY: row `r` and `out[r]` lie inside the caller's ranges.
        unsafe {
            let xr = x.add(r * ldx);
            let (m, s) = max_sum(xr, cols);
            *out.add(r) = if m.is_finite() {
                (m as f64 + s.ln()) as f32
            } else {
                special::logsumexp_row(xr, cols, m)
            };
        }
    }
}

/// # Safety
/// `y`, `dy` valid for reading `rows` rows of `cols` floats (`ld[0]`, `ld[1]` apart), `dx` for
/// writing as many (`ld[2]` apart; may equal `dy` with the same stride).
unsafe fn softmax_backward_rows(
    y: *const f32,
    dy: *const f32,
    dx: *mut f32,
    rows: usize,
    cols: usize,
    ld: [usize; 3],
) {
    for r in 0..rows {
        // SAFETY: row `r` of each buffer lies inside the caller's ranges; `dy[i]` is read
        // before `dx[i]` is written.
        unsafe {
            let (yr, dyr, dxr) = (y.add(r * ld[0]), dy.add(r * ld[1]), dx.add(r * ld[2]));
            let dot: f64 = (0..cols)
                .map(|i| *yr.add(i) as f64 * *dyr.add(i) as f64)
                .sum();
            for i in 0..cols {
                *dxr.add(i) = (*yr.add(i) as f64 * (*dyr.add(i) as f64 - dot)) as f32;
            }
        }
    }
}

/// # Safety
/// As `softmax_backward_rows`.
unsafe fn log_softmax_backward_rows(
    y: *const f32,
    dy: *const f32,
    dx: *mut f32,
    rows: usize,
    cols: usize,
    ld: [usize; 3],
) {
    for r in 0..rows {
        // SAFETY: as in `softmax_backward_rows`.
        unsafe {
            let (yr, dyr, dxr) = (y.add(r * ld[0]), dy.add(r * ld[1]), dx.add(r * ld[2]));
            let sum: f64 = (0..cols).map(|i| *dyr.add(i) as f64).sum();
            for i in 0..cols {
                *dxr.add(i) = (*dyr.add(i) as f64 - (*yr.add(i) as f64).exp() * sum) as f32;
            }
        }
    }
}

/// # Safety
/// `x` valid for `n` reads; `y` null or valid for `n` writes.
unsafe fn chunk_stats(x: *const f32, y: *mut f32, n: usize) -> (f32, f64) {
    // SAFETY: forwarded from the caller; `i < n`.
    unsafe {
        let (m, s) = max_sum(x, n);
        if !m.is_finite() {
            return special::chunk_stats(x, y, n, m);
        }
        if !y.is_null() {
            for i in 0..n {
                *y.add(i) = (*x.add(i) as f64 - m as f64).exp() as f32;
            }
        }
        (m, s)
    }
}

/// # Safety
/// `y` valid for `n` reads and writes.
unsafe fn scale(y: *mut f32, n: usize, r: f32) {
    for i in 0..n {
        // SAFETY: `i < n`.
        unsafe { *y.add(i) = (*y.add(i) as f64 * r as f64) as f32 };
    }
}

/// # Safety
/// `x` valid for `n` reads, `y` for `n` writes (equal or not overlapping).
unsafe fn sub2(x: *const f32, y: *mut f32, n: usize, m: f32, ls: f32) {
    for i in 0..n {
        // SAFETY: `i < n`.
        unsafe { *y.add(i) = ((*x.add(i) as f64 - m as f64) - ls as f64) as f32 };
    }
}

/// # Safety
/// `x` valid for `n` reads, `y` for `n` writes.
unsafe fn exp_map(x: *const f32, y: *mut f32, n: usize) {
    for i in 0..n {
        // SAFETY: `i < n`.
        unsafe { *y.add(i) = (*x.add(i) as f64).exp() as f32 };
    }
}

/// `exp(x)` computed in f64 and rounded once to f32: the correctly rounded reference (up to the
/// rare double-rounding case) that the vectorized exp is measured against.
pub fn exp(x: f32) -> f32 {
    (x as f64).exp() as f32
}

/// Reference [`crate::softmax()`].
pub fn softmax(x: &[f32], y: &mut [f32], cols: usize) -> Result<()> {
    KERNELS.softmax(x, y, cols)
}

/// Reference [`crate::softmax_with`].
pub fn softmax_with(x: &[f32], y: &mut [f32], cols: usize, opts: SoftmaxOptions) -> Result<()> {
    KERNELS.softmax_with(x, y, cols, opts)
}

/// Reference [`crate::log_softmax`].
pub fn log_softmax(x: &[f32], y: &mut [f32], cols: usize) -> Result<()> {
    KERNELS.log_softmax(x, y, cols)
}

/// Reference [`crate::log_softmax_with`].
pub fn log_softmax_with(x: &[f32], y: &mut [f32], cols: usize, opts: SoftmaxOptions) -> Result<()> {
    KERNELS.log_softmax_with(x, y, cols, opts)
}

/// Reference [`crate::logsumexp`].
pub fn logsumexp(x: &[f32], out: &mut [f32], cols: usize) -> Result<()> {
    KERNELS.logsumexp(x, out, cols)
}

/// Reference [`crate::softmax_backward`].
pub fn softmax_backward(y: &[f32], dy: &[f32], dx: &mut [f32], cols: usize) -> Result<()> {
    KERNELS.softmax_backward(y, dy, dx, cols)
}

/// Reference [`crate::log_softmax_backward`].
pub fn log_softmax_backward(y: &[f32], dy: &[f32], dx: &mut [f32], cols: usize) -> Result<()> {
    KERNELS.log_softmax_backward(y, dy, dx, cols)
}
