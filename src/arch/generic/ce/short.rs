//! The short-row paths: rows of at most [`SHORT_VECS`] vectors (64 classes on AVX-512, 32 on
//! AVX2) with class targets and neither smoothing nor cap. Each row stays in registers from
//! load to store, with no loops, and every path computes it with one function, [`short_row`],
//! so they give the same bits by construction:
//!
//! * [`short_path`] (`CePath::Short`): weights, row scales, z-loss, every per-row output;
//! * [`short_plain_path`] (`CePath::ShortPlain`): none of those, so no per-row `ln`;
//! * [`dense_path`] (`CePath::Dense`): as `ShortPlain` for one-vector rows, the exps of a
//!   chunk of rows computed as one dense array (a 10-class row fills 10 of 16 lanes);
//! * [`one_row_path`] (`CePath::OneRow`): as `ShortPlain` for a call of one row, the target's
//!   fix-up in the register before the store.
//!
//! A row is shifted by its target logit instead of its maximum when that is safe
//! ([`exp_from_target`]): the maximum's reduction tree and its latency go. Without class
//! weights and z-loss, a row's loss is `(m - z_t) + ln s` (`m` the shift), and the rows of each
//! group of [`LOSS_GROUP`] (counted from the first row of the run) add to the loss as
//! `sum (m - z_t) + ln prod s`, whatever outputs are asked for: one f64 `ln` per group instead of
//! one per row. Each `s` is in `[1, 4 LANES]`, so the product of 16 stays below `2^96`, and its
//! 15 roundings move its `ln` by at most `2^-48`. With weights or z-loss, the rows' losses add
//! one by one in row order.

use super::row::rows_path;
use super::{grad_factor, CeAcc, CeArgs, CeRowOut, CeRows, IGNORED};
use crate::arch::generic::exp::exp_nonpos;
use crate::arch::generic::rows::{
    exp_short, lane_sum, load_padded, load_rows, store_short, UNSHIFTED_CLAMP, UNSHIFTED_MAX,
};
use crate::arch::vector::Simd;
use crate::ln::ln_group;

/// Rows per `ln` of the grouped loss.
const LOSS_GROUP: usize = 16;
/// Floats per chunk of [`dense_path`].
const DENSE_CHUNK: usize = 512;

/// The first index of the maximum of `x[0..n]` ignoring NaN (0 when nothing beats `-inf`), by
/// a scalar scan: short rows' lane-wise max may drop a value next to a NaN, the scan cannot.
///
/// # Safety
/// `x .. x + n` valid for reads.
#[inline(always)]
pub(crate) unsafe fn first_argmax(x: *const f32, n: usize) -> u32 {
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

/// The target's fix-up `grad[t] -= g w_t` as a scalar right after the row's store.
const FIX_NOW: u8 = 0;
/// The fix-up one row later: right after the vector store, a scalar read of the same row
/// waits for the store to reach the cache; in a row loop, one row later costs nothing.
const FIX_LATER: u8 = 1;
/// The fix-up in the register before the store ([`Simd::sub_lane`]; on AVX-512 a one-bit mask
/// from a shift), for a row alone, where the scalar read-modify-write after the masked store
/// was on the critical path. The same bits as the others: one f32 subtraction from the
/// stored product.
const FIX_IN_REGISTER: u8 = 2;

/// The gradient coefficients of a short row: the factor of `exp(z - m)` is
/// `g (head + zl2 lse) / s` ([`grad_factor`]), and `fix` is subtracted at the target.
#[derive(Clone, Copy)]
struct RowGrad {
    g: f32,
    head: f32,
    zl2: f32,
    fix: f32,
}

impl RowGrad {
    /// The coefficients of the plain paths: no weights, no z-loss, the call's scale `g`.
    #[inline(always)]
    fn plain(g: f64) -> Self {
        let g = g as f32;
        RowGrad {
            g,
            head: 1.0,
            zl2: 0.0,
            fix: g,
        }
    }
}

/// A target fix-up not yet applied ([`FIX_LATER`]): the entry and the value.
type PendingFix = Option<(*mut f32, f32)>;

/// One short row of `(K - 1) * LANES < n <= K * LANES` floats, as [`short_row`] takes it.
struct ShortIn<S: Simd, const K: usize> {
    /// The row's logits.
    xr: *const f32,
    /// Its gradient row, or null.
    gr: *mut f32,
    n: usize,
    /// The target class (`< n`; any for a row without one, whose `fix` is 0).
    t: usize,
    /// The target logit.
    zt: f32,
    /// The row's exps shifted by `zt` and their sum, when [`exp_from_target`] accepted them.
    shifted: Option<([S::V; K], f32)>,
}

/// The one arithmetic of a short row: returns the shift `m` and `s = sum exp(z - m)` (f64,
/// exact from the f32 lane sum; NaN when the maximum is not finite), and, when `gr` is not
/// null, writes the gradient `g (head + zl2 lse) / s exp(z - m)` with the target's `- fix` as
/// `FIX` says (a non-finite maximum fills the row with NaN).
///
/// With `shifted`, the shift is `zt`; else the row is loaded from `xr` and shifted by its
/// maximum.
///
/// With `head = 1` and `zl2 = 0` the factor is the f32 quotient `g / s`: both are f32, and a
/// quotient rounded to f64 then to f32 is the correctly rounded f32 quotient (53 >= 2 * 24 + 2
/// bits: the double rounding is innocuous), so those are the bits of [`grad_factor`]'s f64
/// division, without its `ln`.
///
/// # Safety
/// `xr` valid for `n` reads and not yet overwritten by this row's gradient; `gr` null or
/// valid for `n` writes (equal to `xr` or not overlapping it); `t < n`.
#[inline(always)]
unsafe fn short_row<S: Simd, const K: usize, const FIX: u8>(
    s: S,
    row: ShortIn<S, K>,
    c: RowGrad,
    pending: &mut PendingFix,
) -> (f32, f64) {
    let ShortIn {
        xr,
        gr,
        n,
        t,
        zt,
        shifted,
    } = row;
    // SAFETY: the caller's contract; `load_rows`/`store_short` touch exactly `0..n`, `t < n`.
    unsafe {
        let (m, mut e, sum) = match shifted {
            Some((e, sum)) => (zt, e, sum),
            None => {
                let (v, mx) = load_rows::<S, K>(s, xr, n);
                let m = s.reduce_max(mx);
                if !m.is_finite() {
                    if !gr.is_null() {
                        crate::arch::special::fill(gr, n, f32::NAN);
                    }
                    return (m, f64::NAN);
                }
                let (e, sum) = exp_short::<S, K>(s, &v, m);
                (m, e, sum)
            }
        };
        let total = sum as f64;
        if gr.is_null() {
            return (m, total);
        }
        let factor = if c.head == 1.0 && c.zl2 == 0.0 {
            c.g / sum
        } else {
            let lse = m as f64 + total.ln();
            grad_factor(c.g as f64, c.head as f64, c.zl2, lse, total)
        };
        let vf = s.splat(factor);
        if FIX == FIX_IN_REGISTER {
            // Lane `t` of the row: the other vectors get lane indices past their end and are
            // unchanged.
            for (j, ej) in e.iter_mut().enumerate() {
                *ej = s.sub_lane(s.mul(*ej, vf), t.wrapping_sub(j * S::LANES), c.fix);
            }
            store_short::<S, K>(s, gr, n, &e);
        } else {
            for ej in e.iter_mut() {
                *ej = s.mul(*ej, vf);
            }
            store_short::<S, K>(s, gr, n, &e);
            if FIX == FIX_NOW {
                *gr.add(t) -= c.fix;
            } else if let Some((p, f)) = pending.replace((gr.add(t), c.fix)) {
                *p -= f;
            }
        }
        (m, total)
    }
}

/// Applies a pending fix-up (after a run's last row).
///
/// # Safety
/// The entry is still valid for writes.
#[inline(always)]
unsafe fn apply(pending: PendingFix) {
    if let Some((p, f)) = pending {
        // SAFETY: `p` points into the last gradient row written.
        unsafe { *p -= f };
    }
}

/// The grouped loss `sum (m - z_t) + ln prod s` of the rows of a run, one group of
/// [`LOSS_GROUP`] rows at a time.
struct LossGroups {
    lin: f64,
    prod: f64,
}

impl LossGroups {
    #[inline(always)]
    fn new() -> Self {
        LossGroups {
            lin: 0.0,
            prod: 1.0,
        }
    }

    /// Before row `r` of the run: closes the group at every [`LOSS_GROUP`]-th row.
    #[inline(always)]
    fn start_row(&mut self, r: usize, acc: &mut CeAcc) {
        if r > 0 && r.is_multiple_of(LOSS_GROUP) {
            acc.0 += self.lin + ln_group(self.prod);
            (self.lin, self.prod) = (0.0, 1.0);
        }
    }

    /// Adds a row shifted by `m` with target logit `zt` and sum `total` (NaN for a non-finite
    /// maximum, which makes the group NaN).
    #[inline(always)]
    fn add(&mut self, m: f32, zt: f32, total: f64) {
        self.lin += m as f64 - zt as f64;
        self.prod *= total;
    }

    /// After the last of `rows` rows: closes the last group.
    #[inline(always)]
    fn finish(self, rows: usize, acc: &mut CeAcc) {
        if rows > 0 {
            acc.0 += self.lin + ln_group(self.prod);
        }
    }
}

/// [`super::row::ce_row`] for a row of `(K - 1) * LANES < n <= K * LANES` floats with no cap
/// and no smoothing: [`short_row`] shifted by the maximum, the fix-up right after the store.
///
/// # Safety
/// As [`super::row::ce_row`].
#[inline(always)]
pub(crate) unsafe fn ce_short<S: Simd, const K: usize>(
    s: S,
    x: *const f32,
    grad: *mut f32,
    n: usize,
    a: &CeArgs,
) -> CeRowOut {
    // SAFETY: the caller's contract: `x` holds `n` floats, `grad` null or `n` floats, `a.t < n`.
    unsafe {
        let zt = *x.add(a.t) as f64;
        // The first index of the maximum ignoring NaN, as the long-row path and the
        // reference (the lane-wise `max` may drop a lane's value next to a NaN).
        let argmax = if a.argmax { first_argmax(x, n) } else { 0 };
        let c = RowGrad {
            g: a.g,
            head: a.a0,
            zl2: a.zl2,
            fix: a.fix_t,
        };
        let (m, total) = short_row::<S, K, FIX_NOW>(
            s,
            ShortIn {
                xr: x,
                gr: grad,
                n,
                t: a.t,
                zt: 0.0,
                shifted: None,
            },
            c,
            &mut None,
        );
        let finite = m.is_finite();
        CeRowOut {
            m: m as f64,
            ls: if finite { total.ln() } else { f64::NAN },
            zt,
            dot: if finite { 0.0 } else { f64::NAN },
            argmax,
            next_max: None,
            deferred: None,
        }
    }
}

/// The `CePath::Short` rows of `(K - 1) * LANES < n <= K * LANES` floats: weights, row
/// scales, z-loss and per-row outputs, each row through [`short_row`] (shifted by its target
/// logit when [`exp_from_target`] accepts), its fix-up one row later.
///
/// # Safety
/// The contract of [`super::CePathFn`], with `n = cols` in the bounds above.
#[inline(always)]
unsafe fn short_rows<S: Simd, const K: usize>(s: S, b: &CeRows<'_>, acc: &mut CeAcc) {
    // Locals, not loads through `b` after every store through the row pointers (which
    // may alias anything, for all the compiler knows).
    let (b, c) = (*b, *b.call);
    let b = &CeRows { call: &c, ..b };
    let n = c.cols;
    // The loss as `sum (m - z_t) + ln prod s` per group (no weights, no z-loss).
    let grouped = c.weights.is_null() && c.zl == 0.0;
    let mut groups = LossGroups::new();
    let mut pending: PendingFix = None;
    for r in 0..b.rows {
        if grouped {
            groups.start_row(r, acc);
        }
        // SAFETY: row `r < rows` lies inside `x` (and `grad`); its class is `< n` unless
        // ignored; the per-row pointers hold `rows` entries; `weights` is null or `n` floats.
        unsafe {
            let (xr, gr) = (b.x_row(r), b.grad_row(r));
            let class = *b.classes.add(r);
            let used = class != IGNORED;
            let t = if used { class as usize } else { 0 };
            let zt = *xr.add(t);
            let argmax = if c.argmax { first_argmax(xr, n) } else { 0 };
            if !used {
                // Loss 0, gradient 0; the lse (of the row shifted by its maximum) if asked.
                let lse = if b.lse.is_null() {
                    0.0
                } else {
                    let none = RowGrad {
                        g: 0.0,
                        head: 0.0,
                        zl2: 0.0,
                        fix: 0.0,
                    };
                    let (m, total) = short_row::<S, K, FIX_LATER>(
                        s,
                        ShortIn {
                            xr,
                            gr: std::ptr::null_mut(),
                            n,
                            t: 0,
                            zt: 0.0,
                            shifted: None,
                        },
                        none,
                        &mut None,
                    );
                    if m.is_finite() {
                        m as f64 + total.ln()
                    } else {
                        f64::NAN
                    }
                };
                if !gr.is_null() {
                    crate::arch::special::fill(gr, n, 0.0);
                }
                b.put(r, 0.0, lse, argmax);
                continue;
            }
            let shifted =
                exp_from_target::<S, K>(s, &load_padded::<S, K>(s, xr, n, f32::NEG_INFINITY), zt);
            let wt = if c.weights.is_null() {
                1.0
            } else {
                *c.weights.add(t) as f64
            };
            let g = b.row_g(r);
            let rg = RowGrad {
                g: g as f32,
                head: wt as f32,
                zl2: c.zl2,
                fix: (g * wt) as f32,
            };
            let (m, total) = short_row::<S, K, FIX_LATER>(
                s,
                ShortIn {
                    xr,
                    gr,
                    n,
                    t,
                    zt,
                    shifted,
                },
                rg,
                &mut pending,
            );
            let mf = m as f64;
            let (ls, lse) = if m.is_finite() {
                let ls = total.ln();
                (ls, mf + ls)
            } else {
                (f64::NAN, f64::NAN)
            };
            let mut loss = wt * ((mf - zt as f64) + ls);
            if grouped {
                groups.add(m, zt, total);
            } else {
                if c.zl != 0.0 {
                    loss += c.zl * lse * lse;
                }
                acc.0 += loss;
            }
            acc.1 += (argmax == class) as usize;
            b.put(r, loss, lse, argmax);
        }
    }
    if grouped {
        groups.finish(b.rows, acc);
    }
    // SAFETY: the entry lies in the last gradient row written above.
    unsafe { apply(pending) };
}

/// The `CePath::ShortPlain` rows: no weights, row scales, z-loss, argmax or per-row
/// outputs, so nothing per row but the gradient and the grouped loss. In place, a row read
/// right after the previous row's store (whose masked span covers the start of the next row
/// when `n < LANES`) waits for that store to reach the cache, so each row is read one row
/// ahead, before the previous row is stored.
///
/// # Safety
/// As [`short_rows`], with `b` plain as above.
#[inline(always)]
unsafe fn plain_rows<S: Simd, const K: usize>(s: S, b: &CeRows<'_>, acc: &mut CeAcc) {
    // Locals, not loads through `b` after every store through the row pointers (which
    // may alias anything, for all the compiler knows).
    let (b, c) = (*b, *b.call);
    let b = &CeRows { call: &c, ..b };
    // Row `r`'s vectors and target logit (any logit for an ignored row).
    // (A function, not a closure: a closure is not compiled with the tier's target features
    // unless it is inlined.)
    /// # Safety
    /// `r < rows` of the caller's contract.
    #[inline(always)]
    unsafe fn read<S: Simd, const K: usize>(
        s: S,
        b: &CeRows<'_>,
        r: usize,
        n: usize,
    ) -> ([S::V; K], f32) {
        // SAFETY: the row lies inside `x`; its class is `< n` or ignored (then entry 0 is
        // read); `load_padded` touches exactly `0..n` of the row.
        unsafe {
            let xr = b.x_row(r);
            let class = *b.classes.add(r);
            let t = if class == IGNORED { 0 } else { class as usize };
            (load_padded::<S, K>(s, xr, n, f32::NEG_INFINITY), *xr.add(t))
        }
    }
    let n = b.call.cols;
    let rows = b.rows;
    let rg = RowGrad::plain(b.call.base_g);
    let mut groups = LossGroups::new();
    let mut pending: PendingFix = None;
    let mut ahead = if rows > 0 {
        // SAFETY: `0 < rows`.
        unsafe { read::<S, K>(s, b, 0, n) }
    } else {
        ([s.splat(0.0); K], 0.0)
    };
    let mut r0 = 0;
    while r0 < rows {
        // The loss group checked once per group, not per row.
        let end = rows.min(r0 + LOSS_GROUP);
        groups.start_row(r0, acc);
        for r in r0..end {
            let (v, zt) = ahead;
            if r + 1 < rows {
                // SAFETY: `r + 1 < rows`.
                ahead = unsafe { read::<S, K>(s, b, r + 1, n) };
            }
            // SAFETY: row `r < rows` lies inside `x` (and `grad`); the class is `< n` unless
            // ignored; the row was read above, before anything was stored to it.
            unsafe {
                let class = *b.classes.add(r);
                let gr = b.grad_row(r);
                if class == IGNORED {
                    if !gr.is_null() {
                        crate::arch::special::fill(gr, n, 0.0);
                    }
                    continue;
                }
                let shifted = exp_from_target::<S, K>(s, &v, zt);
                let xr = b.x_row(r);
                let (m, total) = short_row::<S, K, FIX_LATER>(
                    s,
                    ShortIn {
                        xr,
                        gr,
                        n,
                        t: class as usize,
                        zt,
                        shifted,
                    },
                    rg,
                    &mut pending,
                );
                groups.add(m, zt, total);
            }
        }
        r0 = end;
    }
    groups.finish(rows, acc);
    // SAFETY: the entry lies in the last gradient row written above.
    unsafe { apply(pending) };
}

/// The `CePath::OneRow` row: [`plain_rows`] for one row, its fix-up in the register.
///
/// # Safety
/// As [`plain_rows`] with `rows == 1`.
#[inline(always)]
unsafe fn one_row<S: Simd, const K: usize>(s: S, b: &CeRows<'_>, acc: &mut CeAcc) {
    // Locals, not loads through `b` after every store through the row pointers (which
    // may alias anything, for all the compiler knows).
    let (b, c) = (*b, *b.call);
    let b = &CeRows { call: &c, ..b };
    let n = b.call.cols;
    let rg = RowGrad::plain(b.call.base_g);
    // SAFETY: row 0 of the caller's contract; `load_padded` touches exactly `0..n`.
    unsafe {
        let class = *b.classes;
        if class == IGNORED {
            if !b.grad.is_null() {
                crate::arch::special::fill(b.grad, n, 0.0);
            }
            // The group of one ignored row: `0 + ln 1`.
            acc.0 += 0.0 + ln_group(1.0);
            return;
        }
        let t = class as usize;
        let zt = *b.x.add(t);
        let v = load_padded::<S, K>(s, b.x, n, f32::NEG_INFINITY);
        let shifted = exp_from_target::<S, K>(s, &v, zt);
        let (m, total) = short_row::<S, K, FIX_IN_REGISTER>(
            s,
            ShortIn {
                xr: b.x,
                gr: b.grad,
                n,
                t,
                zt,
                shifted,
            },
            rg,
            &mut None,
        );
        let mut groups = LossGroups::new();
        groups.add(m, zt, total);
        groups.finish(1, acc);
    }
}

/// The `CePath::Dense` rows (one vector each): [`plain_rows`] a chunk of rows
/// ([`DENSE_CHUNK`] floats) at a time, in three passes: each row's target logit spread over its
/// entries in a buffer of shifts; `exp(z - z_t)` (corrected as [`exp_from_target`]) over the
/// chunk as one dense array; then, row by row, the sum, the `2^60` test and [`short_row`]. The
/// same bits as [`plain_rows`]: each lane's operations are the same, and each row's lanes are
/// summed in the same order with the lanes past the row 0 (as `exp(-inf)` there). Why: a
/// 10-class row is one 16-lane vector with 6 idle lanes, and its exp and its latency set the
/// pace (as for softmax's dense rows). The gradient rows are read from the buffer, never right
/// after the previous row's masked store, so in place needs no read-ahead.
///
/// # Safety
/// As [`plain_rows`], with `n <= LANES` and dense rows ([`CeRows::dense`]).
#[inline(always)]
unsafe fn dense_rows<S: Simd>(s: S, b: &CeRows<'_>, acc: &mut CeAcc) {
    debug_assert!(b.dense());
    // Locals, not loads through `b` after every store through the row pointers (which
    // may alias anything, for all the compiler knows).
    let (b, c) = (*b, *b.call);
    let b = &CeRows { call: &c, ..b };
    let w = S::LANES;
    let n = b.call.cols;
    let rows = b.rows;
    let rg = RowGrad::plain(b.call.base_g);
    let mut shift = std::mem::MaybeUninit::<[f32; DENSE_CHUNK]>::uninit();
    let mut ebuf = std::mem::MaybeUninit::<[f32; DENSE_CHUNK]>::uninit();
    let (sp, ep) = (
        shift.as_mut_ptr().cast::<f32>(),
        ebuf.as_mut_ptr().cast::<f32>(),
    );
    // Each row's target logit (the shift), for the rows of the current chunk.
    let mut zts = std::mem::MaybeUninit::<[f32; DENSE_CHUNK]>::uninit();
    let zp = zts.as_mut_ptr().cast::<f32>();
    // `n <= LANES <= 16`: a chunk holds at least 32 rows.
    let per = DENSE_CHUNK / n;
    let mut groups = LossGroups::new();
    let mut pending: PendingFix = None;
    let mut r0 = 0;
    // SAFETY: rows `r0 .. r0 + m` lie inside `x` (and `grad`); the buffers hold `m * n <=
    // DENSE_CHUNK` floats and overlap neither; classes are `< n` or ignored; the dense passes
    // touch exactly `0 .. m * n` (one partial access for the tail), a row's vector exactly
    // its `n` floats; each row of `x` is read (passes 1, 2 and a rejected row's fallback)
    // before the same row of `grad` is written.
    unsafe {
        while r0 < rows {
            let m = per.min(rows - r0);
            let (xc, len) = (b.x.add(r0 * n), m * n);
            for i in 0..m {
                let class = *b.classes.add(r0 + i);
                let t = if class == IGNORED { 0 } else { class as usize };
                let zt = *xc.add(i * n + t);
                *zp.add(i) = zt;
                store_short::<S, 1>(s, sp.add(i * n), n, &[s.splat(zt)]);
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
                groups.start_row(r, acc);
                let class = *b.classes.add(r);
                let gr = b.grad_row(r);
                if class == IGNORED {
                    if !gr.is_null() {
                        crate::arch::special::fill(gr, n, 0.0);
                    }
                    continue;
                }
                let e = load_padded::<S, 1>(s, ep.add(i * n), n, 0.0);
                let sum = lane_sum(s, &e);
                // NaN fails the test too.
                let shifted = (sum <= UNSHIFTED_MAX).then_some((e, sum));
                let (xr, zt) = (b.x_row(r), *zp.add(i));
                let (mm, total) = short_row::<S, 1, FIX_LATER>(
                    s,
                    ShortIn {
                        xr,
                        gr,
                        n,
                        t: class as usize,
                        zt,
                        shifted,
                    },
                    rg,
                    &mut pending,
                );
                groups.add(mm, zt, total);
            }
            r0 += m;
        }
        groups.finish(rows, acc);
        apply(pending);
    }
}

/// Runs `$f::<S, K>` with `K = ceil(cols / LANES)`, or [`rows_path`] when the rows are longer
/// than the short paths take (which the plan never asks for).
macro_rules! by_vectors {
    ($f:ident, $s:expr, $b:expr, $acc:expr) => {
        match $b.call.cols.div_ceil(S::LANES) {
            1 => $f::<S, 1>($s, $b, $acc),
            2 => $f::<S, 2>($s, $b, $acc),
            3 => $f::<S, 3>($s, $b, $acc),
            4 => $f::<S, 4>($s, $b, $acc),
            _ => rows_path($s, $b, $acc),
        }
    };
}

/// The `CePath::Short` entry.
///
/// # Safety
/// The contract of [`super::CePathFn`].
#[inline(always)]
pub(crate) unsafe fn short_path<S: Simd>(s: S, b: &CeRows<'_>, acc: &mut CeAcc) {
    // SAFETY: forwarded; `K` matches `cols`.
    unsafe { by_vectors!(short_rows, s, b, acc) }
}

/// The `CePath::ShortPlain` entry; the rows' options must be plain (see [`plain_rows`]).
///
/// # Safety
/// The contract of [`super::CePathFn`].
#[inline(always)]
pub(crate) unsafe fn short_plain_path<S: Simd>(s: S, b: &CeRows<'_>, acc: &mut CeAcc) {
    // SAFETY: forwarded; `K` matches `cols`.
    unsafe { by_vectors!(plain_rows, s, b, acc) }
}

/// The `CePath::OneRow` entry (a run of any other row count takes [`plain_rows`]).
///
/// # Safety
/// The contract of [`super::CePathFn`].
#[inline(always)]
pub(crate) unsafe fn one_row_path<S: Simd>(s: S, b: &CeRows<'_>, acc: &mut CeAcc) {
    // SAFETY: forwarded; `K` matches `cols`.
    unsafe {
        if b.rows == 1 {
            by_vectors!(one_row, s, b, acc)
        } else {
            by_vectors!(plain_rows, s, b, acc)
        }
    }
}

/// The `CePath::Dense` entry (rows longer than one vector take [`plain_rows`]).
///
/// # Safety
/// The contract of [`super::CePathFn`].
#[inline(always)]
pub(crate) unsafe fn dense_path<S: Simd>(s: S, b: &CeRows<'_>, acc: &mut CeAcc) {
    // SAFETY: forwarded; `dense_rows` needs `cols <= LANES` and dense rows.
    unsafe {
        if b.call.cols <= S::LANES && b.dense() {
            dense_rows(s, b, acc)
        } else {
            by_vectors!(plain_rows, s, b, acc)
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
