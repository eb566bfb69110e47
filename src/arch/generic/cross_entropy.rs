//! The fused cross-entropy row kernels, written once over [`crate::arch::vector::Simd`] and
//! stamped per tier by [`stamp_ce!`].
//!
//! One row, class-index target `t` (the loss and gradient formulas are in `crate::cross_entropy`):
//!
//! 1. max (and, when asked, the first index of the max) of the (soft-capped) logits;
//! 2. `e = exp(z - m)` stored into the gradient buffer while summed (f32 lanes, f64 blocks),
//!    plus `sum_c w_c z_c` when label smoothing needs it;
//! 3. `grad = (g A / s) e - g (eps / C) w` (one multiply or FMA per element), then the scalar
//!    fix-up `grad[t] -= g (1 - eps) w_t`. No per-element label compare, no per-element divide,
//!    one exp per element.
//!
//! Short rows (at most 4 vectors, class targets, no smoothing or cap) stay in registers
//! ([`ce_short_rows`]); in a row loop the fix-up is the scalar one, one row later. A call of
//! one such row ([`ce_plain_one`]) subtracts `g` in the target's lane before the store instead
//! ([`Simd::sub_lane`]: on AVX-512 a one-bit mask from a shift, no compare), because the scalar
//! read-modify-write right after the masked store waits for the store to reach the cache.
//!
//! With soft-capping (`z = cap tanh(x / cap)`), pass 2 stores the capped logits instead and
//! pass 3 recomputes their exp and applies the chain rule `1 - (z / cap)^2`.

use super::exp::{exp_nonpos, softcap};
use super::softmax::{
    exp_short, exp_sum, exp_sum_then_max, exp_sum_with, lane_sum, load_padded, load_rows,
    load_short, row_max, scale, scale_then_max, store_short, SHORT_VECS, SUM_BLOCK_VECS,
    UNSHIFTED_CLAMP, UNSHIFTED_MAX,
};
use crate::arch::generic::mem::{load_upto, store_upto};
use crate::arch::vector::Simd;
use crate::ln::ln_group;

/// Per-row arguments of the class-target kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CeArgs {
    /// The target class, `< cols`.
    pub t: usize,
    /// `(1 - eps) w_t + (eps / C) sum_c w_c`: the coefficient of `p` in the gradient, before
    /// the z-loss term and the scale.
    pub a0: f32,
    /// `2 * z_loss`.
    pub zl2: f32,
    /// The row's gradient scale `g` (reduction, upstream scalar, per-row upstream).
    pub g: f32,
    /// `g * eps / C`: subtracted from every gradient element (times `w_c` with class weights).
    pub smooth: f32,
    /// `g * (1 - eps) * w_t`: subtracted at `t`.
    pub fix_t: f32,
    /// The class weights (`cols` floats) or null.
    pub weights: *const f32,
    /// The soft-cap, or 0 for none.
    pub cap: f32,
    /// Whether to compute `sum_c w_c z_c` (label smoothing).
    pub dot: bool,
    /// Whether to compute the argmax.
    pub argmax: bool,
    /// The next row's logits (`n` floats, not overlapping `grad`) or null: without a cap or
    /// an argmax, the last sweep also computes their maximum (bit for bit what pass 1 would)
    /// into [`CeRowOut::next_max`].
    pub next: *const f32,
    /// This row's maximum from the previous row's last sweep, if it computed it (pass 1 is
    /// then skipped; without a cap or an argmax only).
    pub known_max: Option<f32>,
    /// Without cap and smoothing, leave the last pass to the caller: the gradient row is left
    /// holding `exp(z - m)`, [`CeRowOut::deferred`] holds the factor, and the caller scales
    /// the row by it and subtracts `fix_t` at `t` ([`CeKernels::scale`]), after the next
    /// row's call, so that this row's division overlaps that work. The next row's maximum then
    /// comes from the exp pass.
    pub defer: bool,
}

/// Per-row arguments of the probability-target kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CeProbArgs {
    /// Label smoothing `eps`: targets become `(1 - eps) y + eps / C`.
    pub eps: f32,
    /// `2 * z_loss`.
    pub zl2: f32,
    /// The row's gradient scale.
    pub g: f32,
    /// The class weights (`cols` floats) or null.
    pub weights: *const f32,
    /// The soft-cap, or 0 for none.
    pub cap: f32,
    /// Whether to compute the argmax.
    pub argmax: bool,
}

/// What a row kernel reports.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CeRowOut {
    /// The row maximum (of the capped logits). Not finite: the row holds NaN, `+inf` or is all
    /// `-inf`, and nothing else in here is meaningful (the gradient was filled with NaN).
    pub m: f64,
    /// `ln sum exp(z - m)` (so `lse = m + ls`).
    pub ls: f64,
    /// Class targets: the (capped) target logit `z_t`. Probability targets: `sum w y'`.
    pub zt: f64,
    /// Class targets: `sum_c w_c (z_c - m)` (when asked). Probability targets:
    /// `sum w y' (z - m)`. Relative to `m`, so that huge logits keep the loss's small terms.
    pub dot: f64,
    /// The first index of the maximum (when asked).
    pub argmax: u32,
    /// The next row's maximum ([`CeArgs::next`]), when the last sweep computed it.
    pub next_max: Option<f32>,
    /// The factor of the deferred last pass ([`CeArgs::defer`]), when it was deferred.
    pub deferred: Option<f32>,
}

/// Loads `LANES` logits (capped when `CAP`).
///
/// # Safety
/// `p .. p + LANES` valid for reads.
#[inline(always)]
unsafe fn load_z<S: Simd, const CAP: bool>(s: S, p: *const f32, cap: S::V, icap: S::V) -> S::V {
    // SAFETY: forwarded.
    let v = unsafe { s.load(p) };
    if CAP {
        softcap(s, v, cap, icap)
    } else {
        v
    }
}

/// Loads the `n < LANES` logits at `p` (capped when `CAP`), `fill` in the other lanes.
///
/// # Safety
/// `p .. p + n` valid for reads.
#[inline(always)]
unsafe fn load_z_part<S: Simd, const CAP: bool>(
    s: S,
    p: *const f32,
    n: usize,
    fill: f32,
    cap: S::V,
    icap: S::V,
) -> S::V {
    if !CAP {
        // SAFETY: forwarded.
        return unsafe { s.load_partial(p, n, fill) };
    }
    // SAFETY: forwarded.
    let v = softcap(s, unsafe { s.load_partial(p, n, 0.0) }, cap, icap);
    // Lanes past `n` take `fill` after the cap (the cap would turn -inf into -cap).
    // SAFETY: a stack buffer of at least LANES floats, read and written in full.
    unsafe {
        let mut buf = [fill; 64];
        s.store_partial(buf.as_mut_ptr(), n, v);
        s.load(buf.as_ptr())
    }
}

/// The factor every gradient path multiplies `exp(z - m)` by: `g (head + 2 zl lse) / s`,
/// with `g` the row's scale, `head` the target's share (`(1 - eps) w_t + (eps / C) sum w`
/// for class targets, `sum w y'` for probabilities), `zl2 = 2 zl` and `s = sum exp(z - m)`,
/// in f64 and rounded once. (The plain short rows divide `g32 / s` in f32: the same
/// rounding for `head = 1`, `zl = 0`, since a quotient of two f32 values rounded from f64 is
/// the f32 quotient.)
#[inline(always)]
fn grad_factor(g: f64, head: f64, zl2: f32, lse: f64, total: f64) -> f32 {
    (g * (head + zl2 as f64 * lse) / total) as f32
}

/// Pass 1: the maximum of the (capped) logits and, when `argmax`, its first index.
///
/// # Safety
/// `x .. x + n` valid for reads.
#[inline(always)]
unsafe fn max_argmax<S: Simd, const CAP: bool>(
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
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn ce_sweep<S: Simd, const CAP: bool>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    n: usize,
    m: f32,
    a: &CeArgs,
    cap: S::V,
    icap: S::V,
) -> (f64, f64) {
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

/// The first index of the maximum of `x[0..n]` ignoring NaN (0 when nothing beats `-inf`), by
/// a scalar scan: short rows' lane-wise max may drop a value next to a NaN, the scan cannot.
///
/// # Safety
/// `x .. x + n` valid for reads.
#[inline(always)]
unsafe fn first_argmax(x: *const f32, n: usize) -> u32 {
    let (mut best, mut bv) = (0usize, f32::NEG_INFINITY);
    for i in 0..n {
        // SAFETY: `i < n`, inside the caller's range.
        let v = unsafe { *x.add(i) };
        if v > bv {
            best = i;
            bv = v;
        }
    }
    best as u32
}

/// [`ce_row`] for a row of `(K - 1) * LANES < n <= K * LANES` floats with no cap and no
/// smoothing: the row stays in registers from load to store, the sum is a plain f32 tree of at
/// most `4 * LANES` terms, and there are no loops.
///
/// # Safety
/// As [`ce_row`].
#[inline(always)]
unsafe fn ce_short<S: Simd, const K: usize>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    n: usize,
    a: &CeArgs,
) -> CeRowOut {
    // SAFETY: `load_short`/`store_short` touch exactly `0..n`; `a.t < n`; the scalar argmax
    // scan reads `0..n`.
    unsafe {
        let (v, m) = load_short::<S, K>(s, x, n);
        let zt = *x.add(a.t) as f64;
        // The first index of the maximum ignoring NaN, as the long-row path and the
        // reference (the lane-wise `max` above may have dropped a lane's value next to a NaN).
        let argmax = if a.argmax { first_argmax(x, n) } else { 0 };
        if !m.is_finite() {
            if !grad.is_null() {
                crate::arch::special::fill(grad, n, f32::NAN);
            }
            return CeRowOut {
                m: m as f64,
                ls: f64::NAN,
                zt,
                dot: f64::NAN,
                argmax,
                next_max: None,
                deferred: None,
            };
        }
        let (mut e, sum) = exp_short::<S, K>(s, &v, m);
        let total = sum as f64;
        let out = CeRowOut {
            m: m as f64,
            ls: total.ln(),
            zt,
            dot: 0.0,
            argmax,
            next_max: None,
            deferred: None,
        };
        if !grad.is_null() {
            let lse = m as f64 + out.ls;
            let factor = grad_factor(a.g as f64, a.a0 as f64, a.zl2, lse, total);
            let vf = s.splat(factor);
            for ej in e.iter_mut() {
                *ej = s.mul(*ej, vf);
            }
            store_short::<S, K>(s, grad, n, &e);
            *grad.add(a.t) -= a.fix_t;
        }
        out
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
    let wp = a.weights;
    if !CAP && !a.dot && n <= SHORT_VECS * w {
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
        let (m, am) = match a.known_max {
            Some(km) if !CAP && !a.argmax => (km, 0),
            _ => max_argmax::<S, CAP>(s, x, n, a.argmax, cap, icap),
        };
        // The target logit, capped by the same vector code as the row.
        let zt = if CAP {
            let v = load_z_part::<S, CAP>(s, x.add(a.t), 1, 0.0, cap, icap);
            let mut b = [0.0f32; 64];
            s.store(b.as_mut_ptr(), v);
            b[0]
        } else {
            *x.add(a.t)
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
        let vm = s.splat(m);
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
            ce_sweep::<S, CAP>(s, x, grad, n, m, a, cap, icap)
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
        if !store {
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
        if !CAP && a.smooth == 0.0 {
            let mut out = out;
            if a.next.is_null() || a.argmax {
                scale(s, grad, n, factor);
            } else {
                // The next row's pass 1 fused with this row's pass 3: its loads (from L2/L3)
                // overlap this sweep (in L1).
                out.next_max = Some(scale_then_max(s, grad, factor, a.next, n));
            }
            *grad.add(a.t) -= a.fix_t;
            return out;
        }
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
        out
    }
}

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

/// A batch of short rows with class targets, no label smoothing and no cap: the per-call
/// constants and the per-row inputs and outputs of [`ce_short_rows`]. Pointers to per-row data
/// start at the batch's first row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CeShortBatch {
    /// Each row's class, or `u32::MAX` for an ignored row.
    pub classes: *const u32,
    /// The class weights (`cols` floats) or null.
    pub weights: *const f32,
    /// The gradient scale (reduction and upstream scalar).
    pub base_g: f64,
    /// The per-row upstream gradient or null.
    pub row_scale: *const f32,
    /// z-loss coefficient, and `2 * z_loss` as the row kernel takes it.
    pub zl: f64,
    pub zl2: f32,
    /// Whether to compute the argmax.
    pub want_argmax: bool,
    /// Optional per-row outputs (null or `rows` entries).
    pub row_loss: *mut f32,
    pub lse: *mut f32,
    pub argmax: *mut u32,
}

/// Rows of `(K - 1) * LANES < n <= K * LANES` floats with class targets and neither smoothing
/// nor cap, one after another in one call: the same arithmetic, row for row, as [`ce_short`]
/// driven by `crate::cross_entropy`'s row loop (so the results are the same bits), without a
/// kernel call, an argument block and an output block per row. Adds the used rows' losses to
/// `acc.0` and their argmax hits to `acc.1`.
///
/// Without class weights and z-loss, a row's loss is `(m - z_t) + ln s`, and the rows of each
/// group of [`LOSS_GROUP`] (counted from the first row of the call) add to `acc.0` as
/// `sum (m - z_t) + ln prod s`, in every path (so the loss does not depend on the per-row
/// outputs asked for): one f64 `ln` per group instead of one per row, for the common case
/// ([`ce_short_rows_plain`]) none per row at all. Each `s` is in `[1, 4 LANES]`, so the
/// product of 16 stays below `2^96`, and its 15 roundings move its `ln` by at most `2^-48`.
/// With weights or z-loss, the rows' losses add one by one in row order.
///
/// # Safety
/// `x` valid for `rows * n` reads; `grad` null or valid for `rows * n` writes, equal to `x`
/// or not overlapping it; `b.classes` valid for `rows` reads, each `< n` or `u32::MAX`;
/// `b.weights` null or `n` floats; `b.row_scale` and the outputs null or `rows` entries.
#[inline(always)]
pub(crate) unsafe fn ce_short_rows<S: Simd, const K: usize>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    rows: usize,
    n: usize,
    b: &CeShortBatch,
    acc: &mut (f64, usize),
) {
    // The loss as `sum (m - z_t) + ln prod s` per group (no weights, no z-loss).
    let grouped = b.weights.is_null() && b.zl == 0.0;
    if grouped
        && b.row_scale.is_null()
        && !b.want_argmax
        && b.row_loss.is_null()
        && b.lse.is_null()
        && b.argmax.is_null()
    {
        // SAFETY: forwarded.
        unsafe { ce_short_rows_plain::<S, K>(s, x, grad, rows, n, b.base_g, b.classes, acc) };
        return;
    }
    let (mut lin, mut prod) = (0.0f64, 1.0f64);
    // The target entry of the last gradient row stored and its fix-up, not yet applied.
    let mut fix: Option<(*mut f32, f32)> = None;
    for r in 0..rows {
        if grouped && r > 0 && r % LOSS_GROUP == 0 {
            acc.0 += lin + ln_group(prod);
            (lin, prod) = (0.0, 1.0);
        }
        // SAFETY: row `r < rows` lies inside `x` (and `grad`); `t < n`; the per-row pointers
        // hold `rows` entries; `load_short`/`store_short` touch exactly `0..n` of the row.
        unsafe {
            let xr = x.add(r * n);
            let gr = if grad.is_null() {
                grad
            } else {
                grad.add(r * n)
            };
            let class = *b.classes.add(r);
            let used = class != u32::MAX;
            let t = if used { class as usize } else { 0 };
            let (v, mx) = load_rows::<S, K>(s, xr, n);
            let zt = *xr.add(t) as f64;
            // As in `ce_short`.
            let argmax = if b.want_argmax {
                first_argmax(xr, n)
            } else {
                0
            };
            // Shifted by the target's logit where `exp_from_target` takes the row (as
            // `ce_short_rows_plain`), else by the maximum; `m` is the shift.
            let from_target = if used {
                exp_from_target::<S, K>(s, &v, zt as f32)
            } else {
                None
            };
            let (m, e, total) = match from_target {
                Some((e, sum)) => (zt as f32, e, sum as f64),
                None => {
                    let m = s.reduce_max(mx);
                    if m.is_finite() {
                        let (e, sum) = exp_short::<S, K>(s, &v, m);
                        (m, e, sum as f64)
                    } else {
                        (m, v, f64::NAN)
                    }
                }
            };
            let mf = m as f64;
            let ls = if m.is_finite() { total.ln() } else { f64::NAN };
            let lse = if m.is_finite() { mf + ls } else { f64::NAN };
            if !used {
                if !gr.is_null() {
                    crate::arch::special::fill(gr, n, 0.0);
                }
                if !b.row_loss.is_null() {
                    *b.row_loss.add(r) = 0.0;
                }
                if !b.lse.is_null() {
                    *b.lse.add(r) = lse as f32;
                }
                if !b.argmax.is_null() {
                    *b.argmax.add(r) = argmax;
                }
                continue;
            }
            let wt = if b.weights.is_null() {
                1.0
            } else {
                *b.weights.add(t) as f64
            };
            let g = if b.row_scale.is_null() {
                b.base_g
            } else {
                b.base_g * *b.row_scale.add(r) as f64
            };
            if !gr.is_null() {
                if m.is_finite() {
                    let lse_k = mf + ls;
                    let factor =
                        grad_factor((g as f32) as f64, (wt as f32) as f64, b.zl2, lse_k, total);
                    let vf = s.splat(factor);
                    let mut e = e;
                    for ej in e.iter_mut() {
                        *ej = s.mul(*ej, vf);
                    }
                    store_short::<S, K>(s, gr, n, &e);
                    // One row later, as in `ce_short_rows_plain`.
                    if let Some((p, f)) = fix.replace((gr.add(t), (g * wt) as f32)) {
                        *p -= f;
                    }
                } else {
                    crate::arch::special::fill(gr, n, f32::NAN);
                }
            }
            let mut loss = wt * ((mf - zt) + ls);
            if grouped {
                // As `ce_short_rows_plain` (`total` is NaN for a non-finite max).
                lin += mf - zt;
                prod *= total;
            } else {
                if b.zl != 0.0 {
                    loss += b.zl * lse * lse;
                }
                acc.0 += loss;
            }
            acc.1 += (argmax == class) as usize;
            if !b.row_loss.is_null() {
                *b.row_loss.add(r) = loss as f32;
            }
            if !b.lse.is_null() {
                *b.lse.add(r) = lse as f32;
            }
            if !b.argmax.is_null() {
                *b.argmax.add(r) = argmax;
            }
        }
    }
    if grouped && rows > 0 {
        acc.0 += lin + ln_group(prod);
    }
    if let Some((p, f)) = fix {
        // SAFETY: `p` points into the last gradient row written above.
        unsafe { *p -= f };
    }
}

/// [`ce_short_rows`] without weights, row scales, z-loss, argmax or per-row outputs: no
/// per-row `ln` (the loss is grouped as there) and nothing but the gradient per row. The
/// gradient is the same bits as the general path's (`w_t = 1`, and `g (1 + 0 lse) / s` is
/// `g / s`). The `ln` and its latency were a third of a short row's time.
///
/// # Safety
/// As [`ce_short_rows`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn ce_short_rows_plain<S: Simd, const K: usize>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    rows: usize,
    n: usize,
    g: f64,
    classes: *const u32,
    acc: &mut (f64, usize),
) {
    if K == 1 && rows >= CE_DENSE_MIN_ROWS {
        // SAFETY: forwarded.
        unsafe { ce_plain_dense::<S, K>(s, x, grad, rows, n, g, classes, acc) };
    } else {
        // SAFETY: forwarded.
        unsafe { ce_plain_regs::<S, K>(s, x, grad, rows, n, g, classes, acc) };
    }
}

/// [`ce_short_rows_plain`]'s register path: each row's vectors stay in registers from the
/// load to the store.
///
/// # Safety
/// As [`ce_short_rows`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn ce_plain_regs<S: Simd, const K: usize>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    rows: usize,
    n: usize,
    g: f64,
    classes: *const u32,
    acc: &mut (f64, usize),
) {
    // Row `r`'s vectors and target logit (any logit for an ignored row). In place, a row read
    // right after the previous row's store (whose masked span covers the start of the next
    // row when `n < LANES`) waits for that store to reach the cache (three times slower in
    // place than out of place). So each row is read one row ahead, before the previous row is
    // stored.
    // (A function, not a closure: a closure is not compiled with the tier's target features
    // unless it is inlined.)
    /// # Safety
    /// `r < rows` of the caller's contract.
    #[inline(always)]
    unsafe fn read<S: Simd, const K: usize>(
        s: S,
        x: *const f32,
        classes: *const u32,
        r: usize,
        n: usize,
    ) -> ([S::V; K], f32) {
        // SAFETY: the row lies inside `x`; its class is `< n` or ignored (then entry 0 is
        // read); `load_padded` touches exactly `0..n` of the row.
        unsafe {
            let xr = x.add(r * n);
            let class = *classes.add(r);
            let t = if class == u32::MAX { 0 } else { class as usize };
            let v = load_padded::<S, K>(s, xr, n, f32::NEG_INFINITY);
            (v, *xr.add(t))
        }
    }
    if rows == 1 {
        // One row, straight: the loop's set-up (loss groups, the read-ahead) cost a 1x10 call
        // a fifth of its time. The same operations as the loop's first row.
        // SAFETY: forwarded (row 0 of the caller's contract).
        acc.0 += unsafe { ce_plain_one::<S, K>(s, x, grad, n, *classes, g) };
        return;
    }
    let mut st = PlainRows::new(g);
    let mut ahead = if rows > 0 {
        // SAFETY: `0 < rows`.
        unsafe { read::<S, K>(s, x, classes, 0, n) }
    } else {
        ([s.splat(0.0); K], 0.0)
    };
    let mut r0 = 0;
    while r0 < rows {
        // The loss group checked once per group, not per row (measurably slower for rows of
        // 2 to 4 vectors).
        let end = rows.min(r0 + LOSS_GROUP);
        st.start_row(r0, acc);
        for r in r0..end {
            let (v, zt) = ahead;
            if r + 1 < rows {
                // SAFETY: `r + 1 < rows`.
                ahead = unsafe { read::<S, K>(s, x, classes, r + 1, n) };
            }
            // SAFETY: row `r < rows` lies inside `x` (and `grad`); the class is `< n` unless
            // ignored; the row was read above, before anything was stored to it.
            unsafe {
                let class = *classes.add(r);
                let shifted = if class == u32::MAX {
                    None
                } else {
                    exp_from_target::<S, K>(s, &v, zt)
                };
                let (taken, e, sum) = match shifted {
                    Some((e, sum)) => (true, e, sum),
                    None => (false, v, 0.0),
                };
                let gr = row_of(grad, r, n);
                st.row::<S, K, false>(s, class, taken, e, sum, x.add(r * n), zt, gr, n);
            }
        }
        r0 = end;
    }
    // SAFETY: the rows above were all written.
    unsafe { st.finish(rows, acc) };
}

/// One row of the plain register path ([`ce_plain_regs`] with `rows == 1`): writes its
/// gradient and returns its loss term as the loss groups add it, `lin + ln prod` (one group of
/// one row), which is `+0.0`, positive or NaN (never `-0.0`: `lin = m - z_t >= 0` and
/// `prod >= 1`).
///
/// # Safety
/// `x` valid for `n` reads; `grad` null or valid for `n` writes, equal to `x` or not
/// overlapping it; `class < n` or `u32::MAX` (ignored); `(K - 1) * LANES < n <= K * LANES`.
#[inline(always)]
pub(crate) unsafe fn ce_plain_one<S: Simd, const K: usize>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    n: usize,
    class: u32,
    g: f64,
) -> f64 {
    let mut st = PlainRows::new(g);
    // SAFETY: the caller's contract; `load_padded` touches exactly `0..n`.
    unsafe {
        let t = if class == u32::MAX { 0 } else { class as usize };
        let v = load_padded::<S, K>(s, x, n, f32::NEG_INFINITY);
        let zt = *x.add(t);
        let shifted = if class == u32::MAX {
            None
        } else {
            exp_from_target::<S, K>(s, &v, zt)
        };
        let (taken, e, sum) = match shifted {
            Some((e, sum)) => (true, e, sum),
            None => (false, v, 0.0),
        };
        st.row::<S, K, true>(s, class, taken, e, sum, x, zt, grad, n);
    }
    st.lin + ln_group(st.prod)
}

/// [`ce_plain_one`] with `K = ceil(n / LANES)`; `None` (nothing done) when the row needs more
/// than [`SHORT_VECS`] vectors.
///
/// # Safety
/// As [`ce_plain_one`] without the bound on `n`.
#[inline(always)]
pub(crate) unsafe fn try_ce_plain_one<S: Simd>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    n: usize,
    class: u32,
    g: f64,
) -> Option<f64> {
    // SAFETY: forwarded; `K` matches `n`.
    unsafe {
        Some(match n.div_ceil(S::LANES) {
            1 => ce_plain_one::<S, 1>(s, x, grad, n, class, g),
            2 => ce_plain_one::<S, 2>(s, x, grad, n, class, g),
            3 => ce_plain_one::<S, 3>(s, x, grad, n, class, g),
            4 => ce_plain_one::<S, 4>(s, x, grad, n, class, g),
            _ => return None,
        })
    }
}

/// Row `r` of a `[rows, n]` gradient, or null for none.
#[inline(always)]
fn row_of(grad: *mut f32, r: usize, n: usize) -> *mut f32 {
    if grad.is_null() {
        grad
    } else {
        grad.wrapping_add(r * n)
    }
}

/// What the plain short-row paths ([`ce_short_rows_plain`] and [`ce_plain_dense`]) carry from
/// row to row: the current loss group's `sum (m - z_t)` and `prod s`, and the target entry of
/// the last gradient row stored, not yet fixed up.
struct PlainRows {
    /// The row scale in f32: the factor's numerator, and the target's fix-up (`g w_t`, `w_t = 1`).
    g32: f32,
    lin: f64,
    prod: f64,
    fix: *mut f32,
}

impl PlainRows {
    #[inline(always)]
    fn new(g: f64) -> Self {
        PlainRows {
            g32: g as f32,
            lin: 0.0,
            prod: 1.0,
            fix: std::ptr::null_mut(),
        }
    }

    /// Before row `r`: closes the loss group at every [`LOSS_GROUP`]-th row of the call.
    #[inline(always)]
    fn start_row(&mut self, r: usize, acc: &mut (f64, usize)) {
        if r > 0 && r.is_multiple_of(LOSS_GROUP) {
            acc.0 += self.lin + ln_group(self.prod);
            (self.lin, self.prod) = (0.0, 1.0);
        }
    }

    /// One row of class `class` (`u32::MAX`: ignored) with target logit `zt`: when `taken`,
    /// `e` and `sum` are its exps shifted by `zt` and their sum, else the row's logits at `xr`
    /// are shifted by their maximum. Adds the row to the loss group and writes its gradient to
    /// `gr` (null for none), the target's `- g`:
    /// * `FIX_IN_REGISTER`: in the register before the store ([`Simd::sub_lane`]), for a row
    ///   alone, where the scalar fix-up right after the masked store waited for the store to
    ///   reach the cache (it was on a 1x10 call's critical path);
    /// * else one row later as a scalar (in a row loop that costs nothing, and is cheaper than
    ///   `sub_lane` on every vector, which measured slower).
    ///
    /// The same bits either way (one f32 subtraction of `g32` from the stored product). When
    /// `FIX_IN_REGISTER`, nothing is left for [`PlainRows::finish`] to fix.
    ///
    /// # Safety
    /// `xr` valid for `n` reads and not yet overwritten by this row's gradient; `gr` null or
    /// valid for `n` writes (equal to `xr` or not overlapping it); `class < n` unless ignored.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn row<S: Simd, const K: usize, const FIX_IN_REGISTER: bool>(
        &mut self,
        s: S,
        class: u32,
        taken: bool,
        e: [S::V; K],
        sum: f32,
        xr: *const f32,
        zt: f32,
        gr: *mut f32,
        n: usize,
    ) {
        // SAFETY: the caller's contract; `load_rows`/`store_short` touch exactly `0..n`.
        unsafe {
            if class == u32::MAX {
                if !gr.is_null() {
                    crate::arch::special::fill(gr, n, 0.0);
                }
                return;
            }
            let (mut e, sum) = match taken {
                // The loss is `ln sum` (`m = z_t`).
                true => (e, sum),
                false => {
                    let (v, mx) = load_rows::<S, K>(s, xr, n);
                    let m = s.reduce_max(mx);
                    if !m.is_finite() {
                        self.lin = f64::NAN;
                        if !gr.is_null() {
                            crate::arch::special::fill(gr, n, f32::NAN);
                        }
                        return;
                    }
                    self.lin += m as f64 - zt as f64;
                    exp_short::<S, K>(s, &v, m)
                }
            };
            self.prod *= sum as f64;
            if !gr.is_null() {
                // `(g32 as f64 / sum as f64) as f32` in one f32 division: both are f32, and a
                // quotient rounded to f64 then to f32 is the correctly rounded f32 quotient
                // (53 >= 2 * 24 + 2 bits: the double rounding is innocuous), so the bits are
                // those of the general path's f64 division.
                let vf = s.splat(self.g32 / sum);
                if FIX_IN_REGISTER {
                    // The target's `- g32` in the register, in lane `class` of the row (one
                    // f32 subtraction, as the scalar fix-up below; the other vectors get lane
                    // indices past their end and are unchanged).
                    let t = class as usize;
                    for (j, ej) in e.iter_mut().enumerate() {
                        *ej = s.sub_lane(s.mul(*ej, vf), t.wrapping_sub(j * S::LANES), self.g32);
                    }
                    store_short::<S, K>(s, gr, n, &e);
                } else {
                    for ej in e.iter_mut() {
                        *ej = s.mul(*ej, vf);
                    }
                    store_short::<S, K>(s, gr, n, &e);
                    // The target's `- g32` one row later: right after the vector store, the
                    // scalar read of the same row waits for the store to reach the cache.
                    if !self.fix.is_null() {
                        *self.fix -= self.g32;
                    }
                    self.fix = gr.add(class as usize);
                }
            }
        }
    }

    /// After the last of `rows` rows: closes the last loss group, applies the last fix-up.
    ///
    /// # Safety
    /// The rows' gradient is still valid for writes.
    #[inline(always)]
    unsafe fn finish(self, rows: usize, acc: &mut (f64, usize)) {
        if rows > 0 {
            acc.0 += self.lin + ln_group(self.prod);
        }
        if !self.fix.is_null() {
            // SAFETY: `fix` points into the last gradient row written.
            unsafe { *self.fix -= self.g32 };
        }
    }
}

/// `exp(v - z_t)` lane-wise and its f32 sum for a short row (`-inf` past its end) whose target
/// logit is `zt`: the row shifted by its target's logit instead of its maximum, which spares
/// the maximum's reduction tree and its latency before the exponentials. `None` (the caller
/// shifts by the maximum) unless the sum is at most
/// `2^60`.
///
/// Why that is enough: the target's own term is `exp(0) = 1`, so the sum is at least 1 and
/// every other term at most `2^60`, so every argument is below `60 ln 2 = 41.6`, inside the
/// range where `exp_nonpos` is checked exhaustively (`tests/exp_exhaustive.rs`, `[0, 64]`;
/// larger arguments are clamped to 64, which pushes the sum past `2^60`). A NaN or infinite
/// logit, or a target of `-inf`, makes the sum NaN or infinite. The loss is then `ln s`, with
/// nothing to cancel (`z_t - z_t = 0`).
///
/// Unlike `z - m`, `z - z_t` can be inexact for the entries near the maximum, whose
/// probabilities are large: its rounding (up to `2^-24 (m - z_t)`, 2.5e-6 at a gap of 41)
/// would exceed the softmax contract there. So each lane also computes that rounding error
/// `r` exactly (Knuth's TwoSum) and takes `exp(d) (1 + r)`, correct to `r^2 / 2 < 2^-37`:
/// every argument is then exact to first order, closer than the maximum's shift. Lanes below
/// -80 (and `-inf`, NaN) and clamped lanes keep their plain `exp`.
#[inline(always)]
fn exp_from_target<S: Simd, const K: usize>(
    s: S,
    v: &[S::V; K],
    zt: f32,
) -> Option<([S::V; K], f32)> {
    let vt = s.splat(zt);
    let mut e = *v;
    for ej in e.iter_mut() {
        *ej = exp_shifted_exact(s, *ej, vt);
    }
    let sum = lane_sum(s, &e);
    (sum <= UNSHIFTED_MAX).then_some((e, sum))
}

/// `exp(x - t)` lane-wise with the rounding of `x - t` corrected, as [`exp_from_target`]
/// describes; arguments clamped to 64.
#[inline(always)]
fn exp_shifted_exact<S: Simd>(s: S, x: S::V, t: S::V) -> S::V {
    let (hi, lo) = (s.splat(UNSHIFTED_CLAMP), s.splat(-80.0));
    let zero = s.splat(0.0);
    let d = s.sub(x, t);
    // The rounding error of `d` (Knuth's TwoSum of `x` and `-t`), so that each `exp` gets its
    // exact argument to first order: `exp(d + r) = exp(d) (1 + r)`.
    let a = s.add(d, t);
    let r = s.sub(s.sub(x, a), s.add(t, s.sub(d, a)));
    // Only for arguments in (-80, 64), where `|r| <= 2^-19`: lanes of `-inf` (and NaN, and
    // underflowing ones) keep their plain `exp`, and so do clamped ones, whose `r` can be as
    // large as `t` (for `x = 1e30`, `t = 2`: `r = -2`, and `exp(64) (1 + r)` would be
    // negative).
    let r = s.select_gt(hi, d, s.select_gt(d, lo, r, zero), zero);
    let ed = exp_nonpos(s, s.ceil_at(d, hi));
    s.fma(ed, r, ed)
}

/// Floats per chunk of [`ce_plain_dense`].
const CE_DENSE: usize = 512;
/// Calls of fewer rows stay on [`ce_short_rows_plain`]'s register path. So do rows of more
/// than one vector: with fewer idle lanes, the passes cost more than they save (64x33 and
/// 64x64 were slower).
const CE_DENSE_MIN_ROWS: usize = 4;

/// [`ce_short_rows_plain`] a chunk of rows ([`CE_DENSE`] floats) at a time, in three passes:
/// each row's target logit spread over its entries in a buffer of shifts; `exp(z - z_t)`
/// (corrected as [`exp_from_target`]) over the chunk as one dense array; then, row by row, the
/// sum, the `2^60` test, the loss terms and the gradient. Rows the test rejects take the
/// maximum from their logits as before. The same bits as the register path: each lane's
/// operations are the same, and each row's lanes are summed in the same order with the lanes
/// past the row 0 (as `exp(-inf)` there). Why: a 10-class row is one 16-lane vector with 6
/// idle lanes, and its exp and its latency set the pace (as for softmax's `softmax_dense`).
/// The gradient rows are read from the buffer, never right after the previous row's masked
/// store, so in place needs no read-ahead.
///
/// # Safety
/// As [`ce_short_rows`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn ce_plain_dense<S: Simd, const K: usize>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    rows: usize,
    n: usize,
    g: f64,
    classes: *const u32,
    acc: &mut (f64, usize),
) {
    let w = S::LANES;
    let mut shift = std::mem::MaybeUninit::<[f32; CE_DENSE]>::uninit();
    let mut ebuf = std::mem::MaybeUninit::<[f32; CE_DENSE]>::uninit();
    let (sp, ep) = (
        shift.as_mut_ptr().cast::<f32>(),
        ebuf.as_mut_ptr().cast::<f32>(),
    );
    // Each row's target logit (the shift), for the rows of the current chunk.
    let mut zts = std::mem::MaybeUninit::<[f32; CE_DENSE]>::uninit();
    let zp = zts.as_mut_ptr().cast::<f32>();
    // `n <= SHORT_VECS * LANES <= 64`: a chunk holds at least 8 rows.
    let per = CE_DENSE / n;
    let mut st = PlainRows::new(g);
    let mut r0 = 0;
    // SAFETY: rows `r0 .. r0 + m` lie inside `x` (and `grad`); the buffers hold `m * n <=
    // CE_DENSE` floats and overlap neither; classes are `< n` or ignored; the dense passes
    // touch exactly `0 .. m * n` (one partial access for the tail), a row's `K` vectors
    // exactly its `n` floats; each row of `x` is read (passes 1, 2 and a rejected row's
    // fallback) before the same row of `grad` is written.
    unsafe {
        while r0 < rows {
            let m = per.min(rows - r0);
            let (xc, len) = (x.add(r0 * n), m * n);
            for i in 0..m {
                let class = *classes.add(r0 + i);
                let t = if class == u32::MAX { 0 } else { class as usize };
                let zt = *xc.add(i * n + t);
                *zp.add(i) = zt;
                store_short::<S, K>(s, sp.add(i * n), n, &[s.splat(zt); K]);
            }
            let mut i = 0;
            while i + w <= len {
                let e = exp_shifted_exact(s, s.load(xc.add(i)), s.load(sp.add(i)));
                s.store(ep.add(i), e);
                i += w;
            }
            if i < len {
                let k = len - i;
                let e = exp_shifted_exact(
                    s,
                    s.load_partial(xc.add(i), k, 0.0),
                    s.load_partial(sp.add(i), k, 0.0),
                );
                s.store_partial(ep.add(i), k, e);
            }
            for i in 0..m {
                let r = r0 + i;
                st.start_row(r, acc);
                let class = *classes.add(r);
                let e = load_padded::<S, K>(s, ep.add(i * n), n, 0.0);
                let sum = lane_sum(s, &e);
                // NaN fails the test too.
                let taken = class != u32::MAX && sum <= UNSHIFTED_MAX;
                let (xr, gr) = (x.add(r * n), row_of(grad, r, n));
                st.row::<S, K, false>(s, class, taken, e, sum, xr, *zp.add(i), gr, n);
            }
            r0 += m;
        }
        st.finish(rows, acc);
    }
}

/// Rows per `ln` of the grouped loss of [`ce_short_rows`].
const LOSS_GROUP: usize = 16;

/// Runs [`ce_short_rows`] with `K = ceil(n / LANES)`; returns false (doing nothing) when a row
/// needs more than [`SHORT_VECS`] vectors.
///
/// # Safety
/// As [`ce_short_rows`].
#[inline(always)]
pub(crate) unsafe fn try_ce_short_rows<S: Simd>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    rows: usize,
    n: usize,
    b: &CeShortBatch,
    acc: &mut (f64, usize),
) -> bool {
    // SAFETY: forwarded; `K` matches `n`.
    unsafe {
        match n.div_ceil(S::LANES) {
            1 => ce_short_rows::<S, 1>(s, x, grad, rows, n, b, acc),
            2 => ce_short_rows::<S, 2>(s, x, grad, rows, n, b, acc),
            3 => ce_short_rows::<S, 3>(s, x, grad, rows, n, b, acc),
            4 => ce_short_rows::<S, 4>(s, x, grad, rows, n, b, acc),
            _ => return false,
        }
    }
    true
}

/// The plain one-row kernel ([`try_ce_plain_one`]): (x, grad or null, n, class, gradient
/// scale) -> the row's loss term, or `None` when the row is too long.
pub(crate) type PlainOneFn = unsafe fn(*const f32, *mut f32, usize, u32, f64) -> Option<f64>;

/// The batched short-row kernel: (x, grad or null, rows, n, batch, accumulator) -> false
/// when `n` is too long for the tier's short-row path.
pub(crate) type ShortRowsFn =
    unsafe fn(*const f32, *mut f32, usize, usize, &CeShortBatch, &mut (f64, usize)) -> bool;

/// One tier's table of cross-entropy row kernels.
pub(crate) struct CeKernels {
    /// Class target: (x, grad or null, n, args) -> row results.
    pub(crate) row: unsafe fn(*const f32, *mut f32, usize, &CeArgs) -> CeRowOut,
    /// Probability targets: (x, y, grad or null, n, args) -> row results.
    pub(crate) prob_row:
        unsafe fn(*const f32, *const f32, *mut f32, usize, &CeProbArgs) -> CeRowOut,
    /// Short rows, class targets, no smoothing or cap: (x, grad or null, rows, n, batch,
    /// accumulator) -> false when `n` is too long for the tier's short-row path (the
    /// reference never takes it).
    pub(crate) short_rows: ShortRowsFn,
    /// One plain short row, its class and loss in registers (the shortest path for a 1-row
    /// call, whose time is the latency from the label to the loss).
    pub(crate) plain_one: PlainOneFn,
    /// A deferred last pass ([`CeArgs::defer`]): (gradient row, n, factor) scales the row.
    pub(crate) scale: unsafe fn(*mut f32, usize, f32),
}

/// Stamps the cross-entropy kernels out for one tier (called by `stamp_tier!`) and defines its
/// `CE` table.
macro_rules! stamp_ce {
    ([$(#[$attr:meta])*], $token:ty) => {
        /// # Safety
        /// The tier's CPU features; pointer contract of `generic::cross_entropy::ce_row`.
        $(#[$attr])*
        unsafe fn ce_row(
            x: *const f32,
            grad: *mut f32,
            n: usize,
            a: &$crate::arch::generic::cross_entropy::CeArgs,
        ) -> $crate::arch::generic::cross_entropy::CeRowOut {
            use $crate::arch::generic::cross_entropy as gce;
            // SAFETY: this function's contract includes the tier's CPU features, which is what
            // `new_unchecked` needs; the pointer contract is forwarded unchanged.
            unsafe {
                let s = <$token>::new_unchecked();
                if a.cap != 0.0 {
                    gce::ce_row::<_, true>(s, x, grad, n, a)
                } else {
                    gce::ce_row::<_, false>(s, x, grad, n, a)
                }
            }
        }

        /// # Safety
        /// The tier's CPU features; pointer contract of `generic::cross_entropy::ce_prob_row`.
        $(#[$attr])*
        unsafe fn ce_prob_row(
            x: *const f32,
            y: *const f32,
            grad: *mut f32,
            n: usize,
            a: &$crate::arch::generic::cross_entropy::CeProbArgs,
        ) -> $crate::arch::generic::cross_entropy::CeRowOut {
            use $crate::arch::generic::cross_entropy as gce;
            // SAFETY: as in `ce_row`.
            unsafe {
                let s = <$token>::new_unchecked();
                if a.cap != 0.0 {
                    gce::ce_prob_row::<_, true>(s, x, y, grad, n, a)
                } else {
                    gce::ce_prob_row::<_, false>(s, x, y, grad, n, a)
                }
            }
        }

        /// # Safety
        /// The tier's CPU features; `y .. y + n` valid for reads and writes.
        $(#[$attr])*
        unsafe fn ce_scale(y: *mut f32, n: usize, r: f32) {
            // SAFETY: as in `ce_row`; the range is forwarded.
            unsafe { $crate::arch::generic::softmax::scale(<$token>::new_unchecked(), y, n, r) }
        }

        /// # Safety
        /// The tier's CPU features; pointer contract of
        /// `generic::cross_entropy::ce_short_rows`.
        $(#[$attr])*
        unsafe fn ce_short_rows(
            x: *const f32,
            grad: *mut f32,
            rows: usize,
            n: usize,
            b: &$crate::arch::generic::cross_entropy::CeShortBatch,
            acc: &mut (f64, usize),
        ) -> bool {
            // SAFETY: as in `ce_row`.
            unsafe {
                let s = <$token>::new_unchecked();
                $crate::arch::generic::cross_entropy::try_ce_short_rows(s, x, grad, rows, n, b, acc)
            }
        }

        /// # Safety
        /// The tier's CPU features; pointer contract of
        /// `generic::cross_entropy::try_ce_plain_one`.
        $(#[$attr])*
        unsafe fn ce_plain_one(
            x: *const f32,
            grad: *mut f32,
            n: usize,
            class: u32,
            g: f64,
        ) -> Option<f64> {
            // SAFETY: as in `ce_row`.
            unsafe {
                let s = <$token>::new_unchecked();
                $crate::arch::generic::cross_entropy::try_ce_plain_one(s, x, grad, n, class, g)
            }
        }

        /// This tier's cross-entropy kernels.
        pub(crate) static CE: $crate::arch::generic::cross_entropy::CeKernels =
            $crate::arch::generic::cross_entropy::CeKernels {
                row: ce_row,
                prob_row: ce_prob_row,
                short_rows: ce_short_rows,
                plain_one: ce_plain_one,
                scale: ce_scale,
            };
    };
}
pub(crate) use stamp_ce;
