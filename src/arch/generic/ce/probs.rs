//! `CePath::Probs`: rows against probability targets, every option, one row at a time in the
//! three passes of [`super::row::ce_row`] with the target row read alongside.

use super::row::max_argmax;
use super::{grad_factor, load_z, load_z_part, CeAcc, CeProbArgs, CeRowOut, CeRows, RowKernels};
use crate::arch::generic::exp::exp_nonpos;
use crate::arch::generic::mem::{load_upto, store_upto};
use crate::arch::generic::rows::SUM_BLOCK_VECS;
use crate::arch::vector::Simd;

/// The cross-entropy of one row against probability targets `y` (`n` floats). Reports
/// `zt = sum_c w_c y'_c` and `dot = sum_c w_c y'_c (z_c - m)`; the gradient (when `grad` is not
/// null) is `g ((sum w y' + 2 z_loss lse) p - w y')`, chain rule applied under the cap.
///
/// # Safety
/// As [`ce_row`], with `y .. y + n` valid for reads (and not overlapping `grad`).
#[inline(always)]
pub(crate) unsafe fn ce_prob_row<S: Simd, const CAP: bool>(
    s: S,
    x: *const f32,
    y: *const f32,
    grad: *mut f32,
    n: usize,
    a: &CeProbArgs,
) -> CeRowOut {
    let w = S::LANES;
    let cap = s.splat(a.cap);
    let icap = s.splat(if CAP { 1.0 / a.cap } else { 0.0 });
    let store = !grad.is_null();
    let wp = a.weights;
    let keep = s.splat(1.0 - a.eps);
    let add = s.splat(a.eps / n as f32);
    // SAFETY: as in `ce_row`: every access inside `0..n` of each buffer.
    unsafe {
        let (m, am) = max_argmax::<S, CAP>(s, x, n, a.argmax, cap, icap);
        if !m.is_finite() {
            if store {
                crate::arch::special::fill(grad, n, f32::NAN);
            }
            return CeRowOut {
                m: m as f64,
                ls: f64::NAN,
                zt: f64::NAN,
                dot: f64::NAN,
                argmax: am,
                next_max: None,
                deferred: None,
            };
        }
        let vm = s.splat(m);
        let zero = s.splat(0.0);
        let (mut total, mut wy, mut wyz) = (0.0f64, 0.0f64, 0.0f64);
        let mut i = 0;
        let block = w * SUM_BLOCK_VECS;
        loop {
            let end = if i + block <= n { i + block } else { n };
            let (mut s0, mut a0, mut b0) = (zero, zero, zero);
            while i < end {
                let k = (end - i).min(w);
                let (z, yv) = if k == w {
                    (load_z::<S, CAP>(s, x.add(i), cap, icap), s.load(y.add(i)))
                } else {
                    (
                        load_z_part::<S, CAP>(s, x.add(i), k, f32::NEG_INFINITY, cap, icap),
                        s.load_partial(y.add(i), k, 0.0),
                    )
                };
                let r = s.sub(z, vm);
                let e = exp_nonpos(s, r);
                if store {
                    let v = if CAP { z } else { e };
                    store_upto(s, grad.add(i), k, v);
                }
                s0 = s.add(s0, e);
                // y' = (1 - eps) y + eps / C on the real lanes, 0 past the row.
                let mut ys = s.fma(yv, keep, add);
                if k < w {
                    let lanes = s.iota();
                    ys = s.select_gt(s.splat(k as f32), lanes, ys, zero);
                }
                // (z - m) / 2, which cannot overflow for finite logits (see `ce_sweep`); the
                // total is doubled at the end. Lanes past the row hold z = -inf and ys = 0:
                // zero them first (a real `-inf` logit with a zero target gives NaN, as
                // PyTorch's `0 * -inf`).
                let h = s.fma(z, s.splat(0.5), s.splat(-0.5 * m));
                let zf = if k < w {
                    s.select_gt(s.splat(k as f32), s.iota(), h, zero)
                } else {
                    h
                };
                let mut yz = ys;
                if !wp.is_null() {
                    let wv = load_upto(s, wp.add(i), k);
                    ys = s.mul(ys, wv);
                    // `w y'` can underflow to 0 in f32 for tiny nonzero `w` and `y'`; at a
                    // `-inf` logit `0 * -inf` then made the loss NaN where it is `+inf` (the
                    // f64 reference, and PyTorch, which multiplies `log p * y * w`). There
                    // alone, with both factors nonzero, the dot takes the smallest subnormal of
                    // the product's sign (an underflowed product keeps its sign), so the term
                    // is infinite; a zero `w` or `y'` still gives NaN (`0 * -inf`, as
                    // PyTorch). Elsewhere the dot is `(w y') (z - m) / 2` as before: weighting
                    // `(z - m) / 2` instead overflows for huge weights (1.7e38 * -5e29) and
                    // turns a zero target into `0 * inf = NaN` (fuzz, `regress-prob-huge-
                    // weight-zero-target`).
                    let tiny = s.copysign(s.splat(f32::from_bits(1)), ys);
                    let both =
                        s.select_gt(s.abs(yz), zero, s.select_gt(s.abs(wv), zero, tiny, ys), ys);
                    yz = s.select_gt(s.splat(-f32::MAX), zf, both, ys);
                }
                a0 = s.add(a0, ys);
                b0 = s.fma(yz, zf, b0);
                i += k;
            }
            total += s.reduce_sum(s0) as f64;
            wy += s.reduce_sum(a0) as f64;
            wyz += s.reduce_sum(b0) as f64;
            if i >= n {
                break;
            }
        }
        let out = CeRowOut {
            m: m as f64,
            ls: total.ln(),
            zt: wy,
            dot: 2.0 * wyz,
            argmax: am,
            next_max: None,
            deferred: None,
        };
        if !store {
            return out;
        }
        let lse = m as f64 + out.ls;
        let factor = grad_factor(a.g as f64, wy, a.zl2, lse, total);
        let vf = s.splat(factor);
        let vg = s.splat(a.g);
        let one = s.splat(1.0);
        let mut i = 0;
        while i < n {
            let k = (n - i).min(w);
            let (v, yv) = (load_upto(s, grad.add(i), k), load_upto(s, y.add(i), k));
            let (e, chain) = if CAP {
                let e = exp_nonpos(s, s.sub(v, vm));
                let q = s.mul(v, icap);
                (e, s.sub(one, s.mul(q, q)))
            } else {
                (v, one)
            };
            let mut ys = s.fma(yv, keep, add);
            if !wp.is_null() {
                let wv = load_upto(s, wp.add(i), k);
                ys = s.mul(ys, wv);
            }
            let mut gv = s.sub(s.mul(e, vf), s.mul(vg, ys));
            if CAP {
                gv = s.mul(gv, chain);
            }
            store_upto(s, grad.add(i), k, gv);
            i += k;
        }
        out
    }
}

/// The `CePath::Probs` entry.
///
/// # Safety
/// The contract of [`super::CePathFn`].
#[inline(always)]
pub(crate) unsafe fn probs_path<R: RowKernels>(k: R, b: &CeRows<'_>, acc: &mut CeAcc) {
    // Locals, not loads through `b` after every store through the row pointers (which
    // may alias anything, for all the compiler knows).
    let (b, c) = (*b, *b.call);
    let b = &CeRows { call: &c, ..b };
    let cols = c.cols;
    for r in 0..b.rows {
        // SAFETY: row `r < rows` lies inside `x`, `probs` (and `grad`), as the contract says.
        unsafe {
            let a = c.prob_args(b.row_g(r));
            let (xr, yr, gr) = (b.x_row(r), b.probs_row(r), b.grad_row(r));
            let out = k.prob_row(xr, yr, gr, cols, &a);
            let loss = c.prob_loss(&out);
            acc.0 += loss;
            b.put(r, loss, out.lse(), out.argmax);
        }
    }
}
