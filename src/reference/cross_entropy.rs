//! The scalar reference's cross-entropy kernels: f64 arithmetic straight from the formulas,
//! one row at a time. Every class path of the table is the same plain row loop ([`rows`]), so
//! the reference has no special paths to trust.

use crate::arch::generic::ce::{
    row_of, CeAcc, CeArgs, CeKernels, CeProbArgs, CeRowOut, CeRows, IGNORED,
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

/// Every class-target path: each row through [`ce_row`], its loss from
/// [`crate::arch::generic::ce::CeCall::class_loss`].
///
/// # Safety
/// The contract of `generic::ce::CePathFn`.
unsafe fn rows(b: &CeRows<'_>, acc: &mut CeAcc) {
    let c = b.call;
    let cols = c.cols;
    for r in 0..b.rows {
        // SAFETY: row `r < rows` lies inside `x` (and `grad`); its class is `< cols` unless
        // ignored (the contract of `CePathFn`).
        unsafe {
            let xr = b.x.add(r * cols);
            let gr = row_of(b.grad, r, cols);
            let class = *b.classes.add(r);
            if class == IGNORED {
                let out = if b.lse.is_null() && !c.argmax {
                    CeRowOut::default()
                } else {
                    ce_row(xr, std::ptr::null_mut(), cols, &c.ignored_args())
                };
                if !gr.is_null() {
                    crate::arch::special::fill(gr, cols, 0.0);
                }
                b.put(r, 0.0, out.lse(), out.argmax);
                continue;
            }
            let t = class as usize;
            let wt = c.weight_of(t);
            let out = ce_row(xr, gr, cols, &c.class_args(t, wt, b.row_g(r)));
            let loss = c.class_loss(wt, &out);
            acc.0 += loss;
            acc.1 += (out.argmax == class) as usize;
            b.put(r, loss, out.lse(), out.argmax);
        }
    }
}

/// The probability-target path: each row through [`ce_prob_row`].
///
/// # Safety
/// The contract of `generic::ce::CePathFn`.
unsafe fn probs(b: &CeRows<'_>, acc: &mut CeAcc) {
    let c = b.call;
    let cols = c.cols;
    for r in 0..b.rows {
        // SAFETY: row `r < rows` lies inside `x`, `probs` (and `grad`).
        unsafe {
            let (xr, yr) = (b.x.add(r * cols), b.probs.add(r * cols));
            let out = ce_prob_row(
                xr,
                yr,
                row_of(b.grad, r, cols),
                cols,
                &c.prob_args(b.row_g(r)),
            );
            let loss = c.prob_loss(&out);
            acc.0 += loss;
            b.put(r, loss, out.lse(), out.argmax);
        }
    }
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
        let (z, m, am, nan) = scan(x, n, a.cap);
        let w = |c: usize| {
            if a.weights.is_null() {
                1.0
            } else {
                *a.weights.add(c) as f64
            }
        };
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
        if !grad.is_null() {
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
