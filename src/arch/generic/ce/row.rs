//! `CePath::Rows`: rows of any length with class targets and every option, one row at a
//! time through the three passes of [`ce_row`] (see the module docs of [`super`]). The row loop
//! pipelines: the next row's maximum rides along this row's last sweep, and with a gradient
//! this row's last pass (the scaling) runs after the next row's kernel call, so that this
//! row's division and `ln` overlap that call.

use super::short::ce_short;
use super::{
    grad_factor, load_z, load_z_part, CeAcc, CeArgs, CeRowOut, CeRows, RowKernels, IGNORED,
};
use crate::arch::generic::exp::exp_nonpos;
use crate::arch::generic::mem::{load_upto, store_upto};
use crate::arch::generic::rows::{
    exp_sum, exp_sum_then_max, exp_sum_with, row_max, scale, scale_then_max, SHORT_VECS,
    SUM_BLOCK_VECS,
};
use crate::arch::vector::Simd;

/// Pass 1: the maximum of the (capped) logits and, when `argmax`, its first index.
///
/// # Safety
/// `x .. x + n` valid for reads.
#[inline(always)]
pub(crate) unsafe fn max_argmax<S: Simd, const CAP: bool>(
    s: S,
    x: *const f32,
    n: usize,
    argmax: bool,
    cap: S::V,
    icap: S::V,
) -> (f32, u32) {
    let w = S::LANES;
    let ninf = s.splat(f32::NEG_INFINITY);
    // SAFETY: all accesses inside `0..n` (full vectors while `i + w <= n`, then one partial).
    unsafe {
        if !argmax && !CAP {
            return (row_max(s, x, n), 0);
        }
        if !argmax {
            let (mut a0, mut a1) = (ninf, ninf);
            let mut i = 0;
            while i + 2 * w <= n {
                a0 = s.max(a0, load_z::<S, CAP>(s, x.add(i), cap, icap));
                a1 = s.max(a1, load_z::<S, CAP>(s, x.add(i + w), cap, icap));
                i += 2 * w;
            }
            if i + w <= n {
                a0 = s.max(a0, load_z::<S, CAP>(s, x.add(i), cap, icap));
                i += w;
            }
            if i < n {
                let v = load_z_part::<S, CAP>(s, x.add(i), n - i, f32::NEG_INFINITY, cap, icap);
                a1 = s.max(a1, v);
            }
            return (s.reduce_max(s.max(a0, a1)), 0);
        }
        // Indices ride in f32 lanes, exact below 2^24: a longer row is scanned in blocks of
        // `ARGMAX_BLOCK` elements with block-relative lane indices, and the blocks' winners are
        // merged as `usize` (a later block wins only with a strictly larger value, so the first
        // index of the maximum is kept).
        let (mut m, mut best) = (f32::NEG_INFINITY, 0usize);
        let mut start = 0;
        loop {
            let len = ARGMAX_BLOCK.min(n - start);
            let (bm, bi) = lane_argmax::<S, CAP>(s, x.add(start), len, cap, icap);
            if start == 0 || bm > m {
                m = bm;
                best = start + bi as usize;
            }
            start += len;
            if start >= n {
                break;
            }
        }
        // Callers validate `n <= MAX_CLASSES`, so the index fits a u32.
        (m, best as u32)
    }
}

/// Elements per block of [`max_argmax`]'s index scan: a multiple of every lane width, and far
/// below 2^24, where f32 lane indices stop being exact.
const ARGMAX_BLOCK: usize = 1 << 20;

/// The maximum of the (capped) `x[..n]` and its first index, for `n <= 2^24`: lane-wise
/// maxima with f32 lane indices, then the smallest index among the lanes holding the maximum.
/// Lanes' maxima ignore NaN; a NaN makes the row NaN later through the exp sum. An all-`-inf`
/// (or NaN) block reports index 0.
///
/// # Safety
/// `x .. x + n` valid for reads; `n <= 2^24`.
#[inline(always)]
unsafe fn lane_argmax<S: Simd, const CAP: bool>(
    s: S,
    x: *const f32,
    n: usize,
    cap: S::V,
    icap: S::V,
) -> (f32, u32) {
    debug_assert!(n <= 1 << 24);
    let w = S::LANES;
    let mut am = s.splat(f32::NEG_INFINITY);
    let mut ai = s.iota();
    let mut idx = s.iota();
    let step = s.splat(w as f32);
    let mut i = 0;
    // SAFETY: full vectors while `i + w <= n`, then one partial load of `n - i` elements.
    unsafe {
        while i + w <= n {
            let v = load_z::<S, CAP>(s, x.add(i), cap, icap);
            ai = s.select_gt(v, am, idx, ai);
            am = s.select_gt(v, am, v, am);
            idx = s.add(idx, step);
            i += w;
        }
        if i < n {
            let v = load_z_part::<S, CAP>(s, x.add(i), n - i, f32::NEG_INFINITY, cap, icap);
            ai = s.select_gt(v, am, idx, ai);
            am = s.select_gt(v, am, v, am);
        }
    }
    let (mut vm, mut vi) = ([0.0f32; 64], [0.0f32; 64]);
    // SAFETY: the buffers hold 64 >= LANES floats.
    unsafe {
        s.store(vm.as_mut_ptr(), am);
        s.store(vi.as_mut_ptr(), ai);
    }
    let (mut m, mut best) = (f32::NEG_INFINITY, 0.0f32);
    let mut found = false;
    for l in 0..w {
        if vm[l] > m || (vm[l] == m && (!found || vi[l] < best)) {
            m = vm[l];
            best = vi[l];
            found = true;
        }
    }
    (s.reduce_max(am).max(m), best as u32)
}

/// Pass 2 of [`ce_row`] with a cap or a dot product: returns `(sum exp(z - m), sum w (z - m))`.
///
/// # Safety
/// As [`ce_row`].
#[inline(always)]
unsafe fn ce_sweep<S: Simd, const CAP: bool>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    n: usize,
    m: f32,
    a: &CeArgs,
) -> (f64, f64) {
    let cap = s.splat(a.cap);
    let icap = s.splat(if CAP { 1.0 / a.cap } else { 0.0 });
    let w = S::LANES;
    let vm = s.splat(m);
    let store = !grad.is_null();
    let wp = a.weights;
    // SAFETY: every access is inside `0..n` of `x`, `grad` and `weights`, as in `ce_row`.
    unsafe {
        let zero = s.splat(0.0);
        // The dot uses (z - m) / 2 = z/2 - m/2, which cannot overflow for finite logits (a
        // plain z - m is -inf for z = -MAX, m = MAX, and a zero weight would turn it into NaN);
        // the total is doubled at the end, exactly.
        let half = s.splat(0.5);
        let nhm = s.splat(-0.5 * m);
        let mut total = 0.0f64;
        let mut dot = 0.0f64;
        let mut i = 0;
        let block = 2 * w * SUM_BLOCK_VECS;
        loop {
            let end = if i + block <= n { i + block } else { n };
            let (mut s0, mut s1, mut d0, mut d1) = (zero, zero, zero, zero);
            while i + 2 * w <= end {
                let z0 = load_z::<S, CAP>(s, x.add(i), cap, icap);
                let z1 = load_z::<S, CAP>(s, x.add(i + w), cap, icap);
                let (r0, r1) = (s.sub(z0, vm), s.sub(z1, vm));
                let e0 = exp_nonpos(s, r0);
                let e1 = exp_nonpos(s, r1);
                if store {
                    s.store(grad.add(i), if CAP { z0 } else { e0 });
                    s.store(grad.add(i + w), if CAP { z1 } else { e1 });
                }
                s0 = s.add(s0, e0);
                s1 = s.add(s1, e1);
                if a.dot {
                    let (h0, h1) = (s.fma(z0, half, nhm), s.fma(z1, half, nhm));
                    if wp.is_null() {
                        d0 = s.add(d0, h0);
                        d1 = s.add(d1, h1);
                    } else {
                        d0 = s.fma(s.load(wp.add(i)), h0, d0);
                        d1 = s.fma(s.load(wp.add(i + w)), h1, d1);
                    }
                }
                i += 2 * w;
            }
            if end == n {
                while i < n {
                    let k = (n - i).min(w);
                    let z = if k == w {
                        load_z::<S, CAP>(s, x.add(i), cap, icap)
                    } else {
                        load_z_part::<S, CAP>(s, x.add(i), k, f32::NEG_INFINITY, cap, icap)
                    };
                    let r = s.sub(z, vm);
                    let e = exp_nonpos(s, r);
                    if store {
                        let v = if CAP { z } else { e };
                        store_upto(s, grad.add(i), k, v);
                    }
                    s0 = s.add(s0, e);
                    if a.dot {
                        // Lanes past `k` hold -inf: zero them before they enter the dot.
                        let h = s.fma(z, half, nhm);
                        let zf = s.select_gt(s.splat(k as f32), s.iota(), h, zero);
                        if wp.is_null() {
                            d0 = s.add(d0, zf);
                        } else {
                            let wv = load_upto(s, wp.add(i), k);
                            d0 = s.fma(wv, zf, d0);
                        }
                    }
                    i += k;
                }
            }
            total += s.reduce_sum(s.add(s0, s1)) as f64;
            if a.dot {
                dot += s.reduce_sum(s.add(d0, d1)) as f64;
            }
            if i >= n {
                break;
            }
        }
        (total, 2.0 * dot)
    }
}

/// The cross-entropy of one row with class target; see the module docs. `grad` null: loss
/// only (no stores). `grad` may equal `x` (in place).
///
/// # Safety
/// `x .. x + n` valid for reads; `grad` null or valid for `n` writes and equal to `x` or not
/// overlapping it; `a.t < n`; `a.weights` null or valid for `n` reads.
#[inline(always)]
pub(crate) unsafe fn ce_row<S: Simd, const CAP: bool>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    n: usize,
    a: &CeArgs,
) -> CeRowOut {
    let w = S::LANES;
    let cap = s.splat(a.cap);
    let icap = s.splat(if CAP { 1.0 / a.cap } else { 0.0 });
    let store = !grad.is_null();
    let resume = a.keep || a.kept.is_some();
    if !CAP && !a.dot && !resume && n <= SHORT_VECS * w {
        // SAFETY: forwarded; `K` matches `n`.
        return unsafe {
            match n.div_ceil(w) {
                1 => ce_short::<S, 1>(s, x, grad, n, a),
                2 => ce_short::<S, 2>(s, x, grad, n, a),
                3 => ce_short::<S, 3>(s, x, grad, n, a),
                _ => ce_short::<S, 4>(s, x, grad, n, a),
            }
        };
    }
    // SAFETY: every access is inside `0..n` of `x`, `grad` and `weights` (full vectors while
    // `i + w <= n`, one partial access for the tail), as the caller guarantees; `t < n`. Each
    // element of `x` is read before the same element of `grad` is written.
    unsafe {
        // The target logit, capped by the same vector code as the row.
        let zt = if CAP {
            let v = load_z_part::<S, CAP>(s, x.add(a.t), 1, 0.0, cap, icap);
            let mut b = [0.0f32; 64];
            s.store(b.as_mut_ptr(), v);
            b[0]
        } else {
            *x.add(a.t)
        };
        if let Some((m, total)) = a.kept {
            // Pass 3 alone, on what a `keep` call left in `grad` (`m` is that call's f32
            // maximum).
            let ls = total.ln();
            let factor = grad_factor(a.g as f64, a.a0 as f64, a.zl2, m + ls, total);
            last_pass::<S, CAP>(s, grad, n, m as f32, factor, a, zt);
            return CeRowOut {
                m,
                ls,
                zt: zt as f64,
                ..CeRowOut::default()
            };
        }
        let (m, am) = match a.known_max {
            Some(km) if !CAP && !a.argmax => (km, 0),
            _ => max_argmax::<S, CAP>(s, x, n, a.argmax, cap, icap),
        };
        if !m.is_finite() {
            if store {
                crate::arch::special::fill(grad, n, f32::NAN);
            }
            return CeRowOut {
                m: m as f64,
                ls: f64::NAN,
                zt: zt as f64,
                dot: f64::NAN,
                argmax: am,
                next_max: None,
                deferred: None,
            };
        }
        // Pass 2. Without cap or smoothing it is softmax's exp-store-sum sweep.
        let plain = !CAP && !a.dot;
        let mut next_max = None;
        let defer = a.defer && plain && store && a.smooth == 0.0;
        let (total, dot) = if plain {
            let t = if defer && !a.next.is_null() && !a.argmax {
                // The last pass is the caller's: the next row's pass 1 rides along here.
                let (t, nm) = exp_sum_with::<S, true, true, false>(s, x, grad, n, m, a.next);
                next_max = Some(nm);
                t
            } else if store {
                exp_sum::<S, true>(s, x, grad, n, m)
            } else if a.next.is_null() || a.argmax {
                exp_sum::<S, false>(s, x, grad, n, m)
            } else {
                // Loss only: this row's last sweep is the sum; the next row's pass 1 rides
                // along.
                let (t, nm) = exp_sum_then_max(s, x, n, m, a.next);
                next_max = Some(nm);
                t
            };
            (t, 0.0)
        } else {
            ce_sweep::<S, CAP>(s, x, grad, n, m, a)
        };
        let out = CeRowOut {
            m: m as f64,
            ls: total.ln(),
            zt: zt as f64,
            dot,
            argmax: am,
            next_max,
            deferred: None,
        };
        if !store || a.keep {
            return out;
        }
        // Pass 3.
        let lse = m as f64 + out.ls;
        let factor = grad_factor(a.g as f64, a.a0 as f64, a.zl2, lse, total);
        if defer {
            return CeRowOut {
                deferred: Some(factor),
                ..out
            };
        }
        let nm = last_pass::<S, CAP>(s, grad, n, m, factor, a, zt);
        CeRowOut {
            next_max: nm.or(out.next_max),
            ..out
        }
    }
}

/// Pass 3 of [`ce_row`] on the row's pass-2 values in `grad` (`exp(z - m)`, or with a cap the
/// capped logits): `grad = factor e - smooth w` (times the cap's chain factor), then
/// `grad[t] -= fix_t` (times its chain factor, `zt` the capped target logit). Without a cap
/// or smoothing it is one scaling sweep, which computes the maximum of [`CeArgs::next`] when
/// given (returned).
///
/// # Safety
/// `grad .. grad + n` valid for reads and writes, holding pass 2's values; `a.t < n`;
/// `a.weights` null or valid for `n` reads; `a.next` null or valid for `n` reads and not
/// overlapping `grad`.
#[inline(always)]
unsafe fn last_pass<S: Simd, const CAP: bool>(
    s: S,
    grad: *mut f32,
    n: usize,
    m: f32,
    factor: f32,
    a: &CeArgs,
    zt: f32,
) -> Option<f32> {
    let w = S::LANES;
    let wp = a.weights;
    // SAFETY: every access is inside `0..n` of `grad`, `weights` and `next`, the contract.
    unsafe {
        if !CAP && a.smooth == 0.0 {
            let nm = if a.next.is_null() || a.argmax {
                scale(s, grad, n, factor);
                None
            } else {
                // The next row's pass 1 fused with this row's pass 3: its loads (from L2/L3)
                // overlap this sweep (in L1).
                Some(scale_then_max(s, grad, factor, a.next, n))
            };
            *grad.add(a.t) -= a.fix_t;
            return nm;
        }
        let vm = s.splat(m);
        let icap = s.splat(if CAP { 1.0 / a.cap } else { 0.0 });
        let vf = s.splat(factor);
        let vs = s.splat(a.smooth);
        let one = s.splat(1.0);
        let mut i = 0;
        while i < n {
            let k = (n - i).min(w);
            let v = load_upto(s, grad.add(i), k);
            let (e, chain) = if CAP {
                let e = exp_nonpos(s, s.sub(v, vm));
                let q = s.mul(v, icap);
                (e, s.sub(one, s.mul(q, q)))
            } else {
                (v, one)
            };
            let mut gv = s.mul(e, vf);
            if a.smooth != 0.0 {
                if wp.is_null() {
                    gv = s.sub(gv, vs);
                } else {
                    let wv = load_upto(s, wp.add(i), k);
                    gv = s.sub(gv, s.mul(vs, wv));
                }
            }
            if CAP {
                gv = s.mul(gv, chain);
            }
            store_upto(s, grad.add(i), k, gv);
            i += k;
        }
        let chain_t = if CAP {
            let q = zt / a.cap;
            1.0 - q * q
        } else {
            1.0
        };
        *grad.add(a.t) -= a.fix_t * chain_t;
        None
    }
}

/// The `CePath::Rows` entry: class targets, any row length, every option.
///
/// # Safety
/// The contract of [`super::CePathFn`].
#[inline(always)]
pub(crate) unsafe fn rows_path<R: RowKernels>(k: R, b: &CeRows<'_>, acc: &mut CeAcc) {
    // Locals, not loads through `b` after every store through the row pointers (which
    // may alias anything, for all the compiler knows).
    let (b, c) = (*b, *b.call);
    let b = &CeRows { call: &c, ..b };
    let cols = c.cols;
    // With a gradient, each row's last pass (scale and `- fix_t`) runs after the next row's
    // kernel call, so that the row's division and `ln` overlap that call.
    let defer = !b.grad.is_null();
    // The next row's max, when the kernel computed it in this row's last sweep.
    let mut pending_max: Option<f32> = None;
    // A deferred last pass: (gradient row, target, factor, fix_t).
    let mut deferred: Option<(*mut f32, usize, f32, f32)> = None;
    /// Runs a deferred last pass. (A function, not a closure: a closure is not compiled with
    /// the tier's target features unless it is inlined.)
    ///
    /// # Safety
    /// `p` is a gradient row of `cols` floats no other pass touches; `t < cols`.
    #[inline(always)]
    unsafe fn finish<R: RowKernels>(k: R, d: Option<(*mut f32, usize, f32, f32)>, cols: usize) {
        if let Some((p, t, f, fix)) = d {
            // SAFETY: the contract above.
            unsafe {
                k.scale(p, cols, f);
                *p.add(t) -= fix;
            }
        }
    }
    for r in 0..b.rows {
        // SAFETY: row `r < rows` lies inside `x` (and `grad`); its class is `< cols` unless
        // ignored; `weights` is null or `cols` floats (the contract of `CePathFn`).
        unsafe {
            let (xr, gr) = (b.x_row(r), b.grad_row(r));
            let class = *b.classes.add(r);
            if class == IGNORED {
                // A max computed for this row goes unused; the next row computes its own.
                pending_max = None;
                // Ignored row: loss 0, gradient 0; lse/argmax still reported if asked.
                let out = if b.lse.is_null() && !c.argmax {
                    CeRowOut::default()
                } else {
                    k.class_row(xr, std::ptr::null_mut(), cols, &c.ignored_args())
                };
                if !gr.is_null() {
                    crate::arch::special::fill(gr, cols, 0.0);
                }
                b.put(r, 0.0, out.lse(), out.argmax);
                continue;
            }
            let t = class as usize;
            let wt = c.weight_of(t);
            let args = CeArgs {
                // The next row of this run: the kernel computes its max during this row's
                // last sweep (without a cap or an argmax), and the next call reuses it.
                next: if r + 1 < b.rows {
                    b.x_row(r + 1)
                } else {
                    std::ptr::null()
                },
                known_max: pending_max.take(),
                defer,
                ..c.class_args(t, wt, b.row_g(r))
            };
            let out = k.class_row(xr, gr, cols, &args);
            finish(k, deferred.take(), cols);
            deferred = out.deferred.map(|f| (gr, t, f, args.fix_t));
            pending_max = out.next_max;
            let loss = c.class_loss(wt, &out);
            acc.0 += loss;
            acc.1 += (out.argmax == class) as usize;
            b.put(r, loss, out.lse(), out.argmax);
        }
    }
    // SAFETY: the last deferred row is a gradient row of this run.
    unsafe { finish(k, deferred, cols) };
}
