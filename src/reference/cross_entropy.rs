//! The scalar reference's cross-entropy kernels: f64 arithmetic straight from the formulas,
//! one row at a time, driven by the same row loops as the SIMD tiers' `Rows` and `Probs`
//! paths. Every class path of the table is that one loop ([`rows`]), so the reference has no
//! special paths to trust.

use crate::arch::generic::ce::probs::probs_path;
use crate::arch::generic::ce::row::rows_path;
use crate::arch::generic::ce::{
    CeAcc, CeArgs, CeKernels, CeProbArgs, CeRowOut, CeRows, RowKernels,
};

/// The scalar tier's cross-entropy kernels. The plan may choose any path for any class count
/// here (the short-row widths are unbounded); each runs [`rows`].
pub(crate) static CE: CeKernels = CeKernels {
    short_cols: usize::MAX,
    dense_cols: usize::MAX,
    one_row: rows,
    dense: rows,
    short_plain: rows,
    short: rows,
    rows,
    probs,
    row: ce_row,
};

/// The reference's one-row kernels, for the row loops the SIMD tiers run too.
#[derive(Clone, Copy)]
struct Reference;

impl RowKernels for Reference {
    unsafe fn class_row(self, x: *const f32, grad: *mut f32, n: usize, a: &CeArgs) -> CeRowOut {
        // SAFETY: forwarded.
        unsafe { ce_row(x, grad, n, a) }
    }

    unsafe fn prob_row(
        self,
        x: *const f32,
        y: *const f32,
        grad: *mut f32,
        n: usize,
        a: &CeProbArgs,
    ) -> CeRowOut {
        // SAFETY: forwarded.
        unsafe { ce_prob_row(x, y, grad, n, a) }
    }

    /// Never called: [`ce_row`] ignores [`CeArgs::defer`] and finishes every row itself.
    unsafe fn scale(self, y: *mut f32, n: usize, f: f32) {
        for i in 0..n {
            // SAFETY: `i < n`, inside the caller's range.
            unsafe { *y.add(i) *= f };
        }
    }
}

/// Every class-target path: the SIMD tiers' `Rows` loop over [`ce_row`].
///
/// # Safety
/// The contract of `generic::ce::CePathFn`.
unsafe fn rows(b: &CeRows<'_>, acc: &mut CeAcc) {
    // SAFETY: forwarded.
    unsafe { rows_path(Reference, b, acc) }
}

/// The probability-target path: the SIMD tiers' loop over [`ce_prob_row`].
///
/// # Safety
/// The contract of `generic::ce::CePathFn`.
unsafe fn probs(b: &CeRows<'_>, acc: &mut CeAcc) {
    // SAFETY: forwarded.
    unsafe { probs_path(Reference, b, acc) }
}

/// `cap * tanh(x / cap)` in f64 (or `x` when `cap == 0`).
fn capped(x: f32, cap: f32) -> f64 {
    if cap != 0.0 {
        cap as f64 * (x as f64 / cap as f64).tanh()
    } else {
        x as f64
    }
}

/// Max (ignoring NaN, as the SIMD tiers' lanes do) and first argmax of the capped row, whether
/// it holds a NaN, and the capped row itself.
///
/// # Safety
/// `x .. x + n` valid for reads.
unsafe fn scan(x: *const f32, n: usize, cap: f32) -> (Vec<f64>, f64, u32, bool) {
    // SAFETY: `i < n`.
    let z: Vec<f64> = (0..n).map(|i| capped(unsafe { *x.add(i) }, cap)).collect();
    let (mut m, mut am, mut nan) = (f64::NEG_INFINITY, 0u32, false);
    for (i, &v) in z.iter().enumerate() {
        nan |= v.is_nan();
        if v > m {
            m = v;
            am = i as u32;
        }
    }
    (z, m, am, nan)
}

/// # Safety
/// The contract of `generic::ce::ce_row`.
unsafe fn ce_row(x: *const f32, grad: *mut f32, n: usize, a: &CeArgs) -> CeRowOut {
    // SAFETY: forwarded; every index is `< n`, `a.t < n`.
    unsafe {
        let w = |c: usize| {
            if a.weights.is_null() {
                1.0
            } else {
                *a.weights.add(c) as f64
            }
        };
        if let Some((m, s)) = a.kept {
            // Pass 3 alone on what a `keep` call stored: `exp(z - m)`, or the capped logits.
            let lse = m + s.ln();
            let coef = a.a0 as f64 + a.zl2 as f64 * lse;
            for c in 0..n {
                let v = *grad.add(c) as f64;
                let (e, chain) = if a.cap != 0.0 {
                    let q = v / a.cap as f64;
                    ((v - m).exp(), 1.0 - q * q)
                } else {
                    (v, 1.0)
                };
                let mut gz = a.g as f64 * coef * e / s - a.smooth as f64 * w(c);
                if c == a.t {
                    gz -= a.fix_t as f64;
                }
                *grad.add(c) = (gz * chain) as f32;
            }
            return CeRowOut {
                m,
                ls: s.ln(),
                zt: capped(*x.add(a.t), a.cap),
                ..CeRowOut::default()
            };
        }
        let (z, m, am, nan) = scan(x, n, a.cap);
        if !m.is_finite() || nan {
            // A NaN (or +inf, or an all -inf row) makes the row NaN, as PyTorch.
            if !grad.is_null() {
                crate::arch::special::fill(grad, n, f32::NAN);
            }
            let mm = if nan { f64::NAN } else { m };
            return CeRowOut {
                m: mm,
                ls: f64::NAN,
                zt: z[a.t],
                dot: f64::NAN,
                argmax: am,
                next_max: None,
                deferred: None,
            };
        }
        let s: f64 = z.iter().map(|&v| (v - m).exp()).sum();
        let dot: f64 = if a.dot {
            z.iter().enumerate().map(|(c, &v)| w(c) * (v - m)).sum()
        } else {
            0.0
        };
        if a.keep && !grad.is_null() {
            // What pass 3 will read ([`CeArgs::kept`]).
            for (c, &v) in z.iter().enumerate() {
                *grad.add(c) = if a.cap != 0.0 {
                    v as f32
                } else {
                    (v - m).exp() as f32
                };
            }
        } else if !grad.is_null() {
            let lse = m + s.ln();
            let coef = a.a0 as f64 + a.zl2 as f64 * lse;
            for (c, &v) in z.iter().enumerate() {
                let p = (v - m).exp() / s;
                let mut gz = a.g as f64 * coef * p;
                if a.smooth != 0.0 {
                    gz -= a.smooth as f64 * w(c);
                }
                if c == a.t {
                    gz -= a.fix_t as f64;
                }
                if a.cap != 0.0 {
                    let q = v / a.cap as f64;
                    gz *= 1.0 - q * q;
                }
                *grad.add(c) = gz as f32;
            }
        }
        CeRowOut {
            m,
            ls: s.ln(),
            zt: z[a.t],
            dot,
            argmax: am,
            next_max: None,
            deferred: None,
        }
    }
}

/// # Safety
/// The contract of `generic::ce::ce_prob_row`.
unsafe fn ce_prob_row(
    x: *const f32,
    y: *const f32,
    grad: *mut f32,
    n: usize,
    a: &CeProbArgs,
) -> CeRowOut {
    // SAFETY: forwarded; every index is `< n`.
    unsafe {
        let (z, m, am, nan) = scan(x, n, a.cap);
        if !m.is_finite() || nan {
            if !grad.is_null() {
                crate::arch::special::fill(grad, n, f32::NAN);
            }
            return CeRowOut {
                m: if nan { f64::NAN } else { m },
                ls: f64::NAN,
                zt: f64::NAN,
                dot: f64::NAN,
                argmax: am,
                next_max: None,
                deferred: None,
            };
        }
        let eps = a.eps as f64;
        let ys = |c: usize| {
            let w = if a.weights.is_null() {
                1.0
            } else {
                *a.weights.add(c) as f64
            };
            w * ((1.0 - eps) * *y.add(c) as f64 + eps / n as f64)
        };
        let s: f64 = z.iter().map(|&v| (v - m).exp()).sum();
        let wy: f64 = (0..n).map(ys).sum();
        let wyz: f64 = z.iter().enumerate().map(|(c, &v)| ys(c) * (v - m)).sum();
        if !grad.is_null() {
            let lse = m + s.ln();
            for (c, &v) in z.iter().enumerate() {
                let p = (v - m).exp() / s;
                let mut gz = a.g as f64 * ((wy + a.zl2 as f64 * lse) * p - ys(c));
                if a.cap != 0.0 {
                    let q = v / a.cap as f64;
                    gz *= 1.0 - q * q;
                }
                *grad.add(c) = gz as f32;
            }
        }
        CeRowOut {
            m,
            ls: s.ln(),
            zt: wy,
            dot: wyz,
            argmax: am,
            next_max: None,
            deferred: None,
        }
    }
}
