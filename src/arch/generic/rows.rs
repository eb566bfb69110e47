//! Row passes shared by the softmax and cross-entropy kernels, written once over [`Simd`]: the
//! row maximum, the exp-store-sum sweep (with the next row's maximum riding along), the scaling
//! pass, the blocked sums, and the register-resident loads, stores and exps of short rows.
//!
//! Each pass takes raw pointers so that the same code serves the in-place forms (source and
//! destination the same buffer). All loops use independent accumulators over full vectors,
//! then single vectors, then one masked (partial) access for the tail, so no lane ever reads or
//! writes past the row.
//!
//! Sums of `exp` are accumulated in f32 lanes over blocks of [`SUM_BLOCK_VECS`] vectors per
//! accumulator and the block totals in f64: a lane never adds more than 8 terms in f32, which
//! keeps the row sum's relative error near `2^-21` even for rows of 128k+ classes.

use super::exp::exp_nonpos;
use crate::arch::vector::Simd;

/// Vectors each of the four accumulators adds in f32 before the block total moves to f64.
pub(crate) const SUM_BLOCK_VECS: usize = 8;

/// Maximum of `x[0..n]` (`-inf` for an empty row; unspecified which value wins with NaN).
///
/// # Safety
/// `x .. x + n` valid for reads.
#[inline(always)]
pub(crate) unsafe fn row_max<S: Simd>(s: S, x: *const f32, n: usize) -> f32 {
    let w = S::LANES;
    let ninf = s.splat(f32::NEG_INFINITY);
    let (mut a0, mut a1, mut a2, mut a3) = (ninf, ninf, ninf, ninf);
    let mut i = 0;
    // SAFETY: all accesses within `x .. x + n` (whole 4-vector steps, single vectors, one
    // partial tail), the caller's contract.
    unsafe {
        while i + 4 * w <= n {
            a0 = s.max(a0, s.load(x.add(i)));
            a1 = s.max(a1, s.load(x.add(i + w)));
            a2 = s.max(a2, s.load(x.add(i + 2 * w)));
            a3 = s.max(a3, s.load(x.add(i + 3 * w)));
            i += 4 * w;
        }
        while i + w <= n {
            a0 = s.max(a0, s.load(x.add(i)));
            i += w;
        }
        if i < n {
            a1 = s.max(a1, s.load_partial(x.add(i), n - i, f32::NEG_INFINITY));
        }
    }
    s.reduce_max(s.max(s.max(a0, a1), s.max(a2, a3)))
}

/// `sum_i exp(x_i - m)` over `x[0..n]`, storing each `exp(x_i - m)` to `y[i]` when `STORE`.
/// `m` must be finite (the kernels route rows with a non-finite maximum elsewhere).
///
/// # Safety
/// `x .. x + n` valid for reads; when `STORE`, `y .. y + n` valid for writes and either equal
/// to `x` or not overlapping it.
#[inline(always)]
pub(crate) unsafe fn exp_sum<S: Simd, const STORE: bool>(
    s: S,
    x: *const f32,
    y: *mut f32,
    n: usize,
    m: f32,
) -> f64 {
    // SAFETY: forwarded; without `NEXT` the next-row pointer is never read.
    unsafe { exp_sum_with::<S, STORE, false, false>(s, x, y, n, m, std::ptr::null()).0 }
}

/// [`exp_sum`] without stores over `x[0..n]`, fused with [`row_max`] of the next row
/// `next[0..n]`: the max is computed by exactly `row_max`'s operations (its 4-vector steps,
/// single-vector tail and partial tail fall on the same offsets as the sum's), so it is the
/// same value bit for bit. Returns `(sum, max of next)`.
///
/// # Safety
/// `x .. x + n` and `next .. next + n` valid for reads.
#[inline(always)]
pub(crate) unsafe fn exp_sum_then_max<S: Simd>(
    s: S,
    x: *const f32,
    n: usize,
    m: f32,
    next: *const f32,
) -> (f64, f32) {
    // SAFETY: forwarded; nothing is stored.
    unsafe { exp_sum_with::<S, false, true, false>(s, x, std::ptr::null_mut(), n, m, next) }
}

/// The exp pass of every softmax-family row: `sum_i exp(x_i - m)` over `x[0..n]` ([`exp_sum`]),
/// and
/// * with `STORE`, each `exp(x_i - m)` stored to `y[i]`, or with `STORE` and `SHIFTED` each
///   `x_i - m` (log_softmax: that brings its output row into L1 while the pass is bound by the
///   exps, and its last pass then works there instead of writing a cold `y`);
/// * with `NEXT`, the max of the next row `next[0..n]` by `row_max`'s exact operations on the
///   same offsets (the second result; `-inf` without `NEXT`), so a pipelined row loop gets the
///   next row's pass 1 from this pass.
///
/// # Safety
/// As [`exp_sum`]; when `NEXT`, `next .. next + n` valid for reads and not overlapping `y`.
#[inline(always)]
pub(crate) unsafe fn exp_sum_with<
    S: Simd,
    const STORE: bool,
    const NEXT: bool,
    const SHIFTED: bool,
>(
    s: S,
    x: *const f32,
    y: *mut f32,
    n: usize,
    m: f32,
    next: *const f32,
) -> (f64, f32) {
    let w = S::LANES;
    let vm = s.splat(m);
    let zero = s.splat(0.0);
    let ninf = s.splat(f32::NEG_INFINITY);
    let (mut b0, mut b1, mut b2, mut b3) = (ninf, ninf, ninf, ninf);
    let mut total = 0.0f64;
    let mut i = 0;
    let block = 4 * w * SUM_BLOCK_VECS;
    // SAFETY: every access is within `0..n` of `x` (and of `y` when storing, `next` when
    // `NEXT`); the loop bounds check a whole block, a whole 4-vector step or a whole vector
    // before touching it, and the tail is one partial access of `n - i < w` lanes. Each lane
    // of `y` is written after the same lane of `x` is read, so `y == x` is fine.
    unsafe {
        loop {
            let end = if i + block <= n { i + block } else { n };
            let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
            while i + 4 * w <= end {
                if NEXT {
                    b0 = s.max(b0, s.load(next.add(i)));
                    b1 = s.max(b1, s.load(next.add(i + w)));
                    b2 = s.max(b2, s.load(next.add(i + 2 * w)));
                    b3 = s.max(b3, s.load(next.add(i + 3 * w)));
                }
                let d0 = s.sub(s.load(x.add(i)), vm);
                let d1 = s.sub(s.load(x.add(i + w)), vm);
                let d2 = s.sub(s.load(x.add(i + 2 * w)), vm);
                let d3 = s.sub(s.load(x.add(i + 3 * w)), vm);
                let e0 = exp_nonpos(s, d0);
                let e1 = exp_nonpos(s, d1);
                let e2 = exp_nonpos(s, d2);
                let e3 = exp_nonpos(s, d3);
                if STORE {
                    let (o0, o1, o2, o3) = if SHIFTED {
                        (d0, d1, d2, d3)
                    } else {
                        (e0, e1, e2, e3)
                    };
                    s.store(y.add(i), o0);
                    s.store(y.add(i + w), o1);
                    s.store(y.add(i + 2 * w), o2);
                    s.store(y.add(i + 3 * w), o3);
                }
                a0 = s.add(a0, e0);
                a1 = s.add(a1, e1);
                a2 = s.add(a2, e2);
                a3 = s.add(a3, e3);
                i += 4 * w;
            }
            if end == n {
                while i + w <= n {
                    if NEXT {
                        b0 = s.max(b0, s.load(next.add(i)));
                    }
                    let d = s.sub(s.load(x.add(i)), vm);
                    let e = exp_nonpos(s, d);
                    if STORE {
                        s.store(y.add(i), if SHIFTED { d } else { e });
                    }
                    a0 = s.add(a0, e);
                    i += w;
                }
                if i < n {
                    if NEXT {
                        b1 = s.max(b1, s.load_partial(next.add(i), n - i, f32::NEG_INFINITY));
                    }
                    // The fill lanes hold -inf, whose exp is 0 (m is finite).
                    let v = s.load_partial(x.add(i), n - i, f32::NEG_INFINITY);
                    let d = s.sub(v, vm);
                    let e = exp_nonpos(s, d);
                    if STORE {
                        s.store_partial(y.add(i), n - i, if SHIFTED { d } else { e });
                    }
                    a1 = s.add(a1, e);
                    i = n;
                }
            }
            total += s.reduce_sum(s.add(s.add(a0, a1), s.add(a2, a3))) as f64;
            if i >= n {
                break;
            }
        }
    }
    let next_max = if NEXT {
        s.reduce_max(s.max(s.max(b0, b1), s.max(b2, b3)))
    } else {
        f32::NEG_INFINITY
    };
    (total, next_max)
}

/// `y[i] = y[i] * r` over `n` floats.
///
/// # Safety
/// `y .. y + n` valid for reads and writes.
#[inline(always)]
pub(crate) unsafe fn scale<S: Simd>(s: S, y: *mut f32, n: usize, r: f32) {
    let w = S::LANES;
    let vr = s.splat(r);
    let mut i = 0;
    // SAFETY: all accesses within `y .. y + n`, as in `row_max`.
    unsafe {
        while i + 4 * w <= n {
            let v0 = s.mul(s.load(y.add(i)), vr);
            let v1 = s.mul(s.load(y.add(i + w)), vr);
            let v2 = s.mul(s.load(y.add(i + 2 * w)), vr);
            let v3 = s.mul(s.load(y.add(i + 3 * w)), vr);
            s.store(y.add(i), v0);
            s.store(y.add(i + w), v1);
            s.store(y.add(i + 2 * w), v2);
            s.store(y.add(i + 3 * w), v3);
            i += 4 * w;
        }
        while i + w <= n {
            s.store(y.add(i), s.mul(s.load(y.add(i)), vr));
            i += w;
        }
        if i < n {
            let v = s.load_partial(y.add(i), n - i, 0.0);
            s.store_partial(y.add(i), n - i, s.mul(v, vr));
        }
    }
}

/// [`scale`] of `y[0..n]` by `r`, fused with [`row_max`] of the next row `x[0..n]`: the max by
/// `row_max`'s operations on the same offsets, so the same value bit for bit (its loop repeated
/// here rather than shared through a closure: a closure is a function of its own, compiled
/// without the tier's target features, so its intrinsics would be calls). Interleaving the next
/// row's first sweep (its first touch, from L2/L3) with this row's last one (in L1) lets the
/// loads of one overlap the work of the other.
///
/// # Safety
/// `y .. y + n` valid for reads and writes, `x .. x + n` for reads, not overlapping `y`.
#[inline(always)]
pub(crate) unsafe fn scale_then_max<S: Simd>(
    s: S,
    y: *mut f32,
    r: f32,
    x: *const f32,
    n: usize,
) -> f32 {
    let w = S::LANES;
    let vr = s.splat(r);
    let ninf = s.splat(f32::NEG_INFINITY);
    let (mut a0, mut a1, mut a2, mut a3) = (ninf, ninf, ninf, ninf);
    let mut i = 0;
    // SAFETY: all accesses within `0..n` of `x` and `y` (whole 4-vector steps, single
    // vectors, one partial tail), the caller's contract; `y` does not overlap `x`.
    unsafe {
        while i + 4 * w <= n {
            a0 = s.max(a0, s.load(x.add(i)));
            a1 = s.max(a1, s.load(x.add(i + w)));
            a2 = s.max(a2, s.load(x.add(i + 2 * w)));
            a3 = s.max(a3, s.load(x.add(i + 3 * w)));
            for j in 0..4 {
                let p = y.add(i + j * w);
                s.store(p, s.mul(s.load(p), vr));
            }
            i += 4 * w;
        }
        while i + w <= n {
            a0 = s.max(a0, s.load(x.add(i)));
            s.store(y.add(i), s.mul(s.load(y.add(i)), vr));
            i += w;
        }
        if i < n {
            a1 = s.max(a1, s.load_partial(x.add(i), n - i, f32::NEG_INFINITY));
            let v = s.load_partial(y.add(i), n - i, 0.0);
            s.store_partial(y.add(i), n - i, s.mul(v, vr));
        }
    }
    s.reduce_max(s.max(s.max(a0, a1), s.max(a2, a3)))
}

/// `y[i] = (x[i] - m) - ls` over `n` floats (the last pass of log_softmax).
///
/// # Safety
/// `x .. x + n` valid for reads, `y .. y + n` for writes, equal or not overlapping.
#[inline(always)]
pub(crate) unsafe fn sub2<S: Simd>(s: S, x: *const f32, y: *mut f32, n: usize, m: f32, ls: f32) {
    let w = S::LANES;
    let vm = s.splat(m);
    let vl = s.splat(ls);
    let mut i = 0;
    // SAFETY: all accesses within `0..n` of `x` and `y`, as in `row_max`; each lane is read
    // before it is written.
    unsafe {
        while i + 4 * w <= n {
            let v0 = s.sub(s.sub(s.load(x.add(i)), vm), vl);
            let v1 = s.sub(s.sub(s.load(x.add(i + w)), vm), vl);
            let v2 = s.sub(s.sub(s.load(x.add(i + 2 * w)), vm), vl);
            let v3 = s.sub(s.sub(s.load(x.add(i + 3 * w)), vm), vl);
            s.store(y.add(i), v0);
            s.store(y.add(i + w), v1);
            s.store(y.add(i + 2 * w), v2);
            s.store(y.add(i + 3 * w), v3);
            i += 4 * w;
        }
        while i + w <= n {
            s.store(y.add(i), s.sub(s.sub(s.load(x.add(i)), vm), vl));
            i += w;
        }
        if i < n {
            let v = s.load_partial(x.add(i), n - i, 0.0);
            s.store_partial(y.add(i), n - i, s.sub(s.sub(v, vm), vl));
        }
    }
}

/// `sum_i a[i] * b[i]` (`DOT`) or `sum_i a[i]` over `n` floats, f32 lanes in blocks, f64 across
/// blocks.
///
/// # Safety
/// `a .. a + n` (and `b .. b + n` when `DOT`) valid for reads.
#[inline(always)]
pub(crate) unsafe fn blocked_sum<S: Simd, const DOT: bool>(
    s: S,
    a: *const f32,
    b: *const f32,
    n: usize,
) -> f64 {
    let w = S::LANES;
    let zero = s.splat(0.0);
    let block = 4 * w * SUM_BLOCK_VECS;
    let mut total = 0.0f64;
    let mut i = 0;
    // SAFETY: all accesses within `0..n`, as in `exp_sum`.
    unsafe {
        loop {
            let end = if i + block <= n { i + block } else { n };
            let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
            while i + 4 * w <= end {
                if DOT {
                    a0 = s.fma(s.load(a.add(i)), s.load(b.add(i)), a0);
                    a1 = s.fma(s.load(a.add(i + w)), s.load(b.add(i + w)), a1);
                    a2 = s.fma(s.load(a.add(i + 2 * w)), s.load(b.add(i + 2 * w)), a2);
                    a3 = s.fma(s.load(a.add(i + 3 * w)), s.load(b.add(i + 3 * w)), a3);
                } else {
                    a0 = s.add(a0, s.load(a.add(i)));
                    a1 = s.add(a1, s.load(a.add(i + w)));
                    a2 = s.add(a2, s.load(a.add(i + 2 * w)));
                    a3 = s.add(a3, s.load(a.add(i + 3 * w)));
                }
                i += 4 * w;
            }
            if end == n {
                while i + w <= n {
                    if DOT {
                        a0 = s.fma(s.load(a.add(i)), s.load(b.add(i)), a0);
                    } else {
                        a0 = s.add(a0, s.load(a.add(i)));
                    }
                    i += w;
                }
                if i < n {
                    let va = s.load_partial(a.add(i), n - i, 0.0);
                    if DOT {
                        let vb = s.load_partial(b.add(i), n - i, 0.0);
                        a1 = s.fma(va, vb, a1);
                    } else {
                        a1 = s.add(a1, va);
                    }
                    i = n;
                }
            }
            total += s.reduce_sum(s.add(s.add(a0, a1), s.add(a2, a3))) as f64;
            if i >= n {
                break;
            }
        }
    }
    total
}

/// Rows of at most this many vectors are held in registers from load to store.
pub(crate) const SHORT_VECS: usize = 4;

/// Loads a row of `n` floats, `(K - 1) * LANES < n <= K * LANES`, into `K` vectors (`-inf` in
/// the lanes past `n`) and returns them with their lane-wise maximum (the row's maximum is its
/// `reduce_max`).
///
/// # Safety
/// `x .. x + n` valid for reads.
#[inline(always)]
pub(crate) unsafe fn load_rows<S: Simd, const K: usize>(
    s: S,
    x: *const f32,
    n: usize,
) -> ([S::V; K], S::V) {
    // SAFETY: forwarded.
    let v = unsafe { load_padded::<S, K>(s, x, n, f32::NEG_INFINITY) };
    let mut mx = v[0];
    for vj in v.iter().skip(1) {
        mx = s.max(mx, *vj);
    }
    (v, mx)
}

/// The row of `n` floats at `x`, `(K - 1) * LANES < n <= K * LANES`, as `K` vectors, lanes past
/// its end holding `fill`.
///
/// # Safety
/// `x .. x + n` valid for reads.
#[inline(always)]
pub(crate) unsafe fn load_padded<S: Simd, const K: usize>(
    s: S,
    x: *const f32,
    n: usize,
    fill: f32,
) -> [S::V; K] {
    let w = S::LANES;
    let mut v = [s.splat(fill); K];
    // SAFETY: vectors `0..K-1` are full and inside `0..n`; the last covers `(K-1)w .. n`,
    // a full load only when it ends exactly at `n`.
    unsafe {
        for (j, vj) in v.iter_mut().enumerate().take(K - 1) {
            *vj = s.load(x.add(j * w));
        }
        let rest = n - (K - 1) * w;
        v[K - 1] = if rest == w {
            s.load(x.add((K - 1) * w))
        } else {
            s.load_partial(x.add((K - 1) * w), rest, fill)
        };
    }
    v
}

/// The f32 sum of every lane of `e`: the vectors added lane-wise in order, then the lanes.
#[inline(always)]
pub(crate) fn lane_sum<S: Simd, const K: usize>(s: S, e: &[S::V; K]) -> f32 {
    let mut acc = s.splat(0.0);
    for ej in e.iter() {
        acc = s.add(acc, *ej);
    }
    s.reduce_sum(acc)
}

/// Stores `K` vectors to a row of `n` floats, `(K - 1) * LANES < n <= K * LANES`.
///
/// # Safety
/// `y .. y + n` valid for writes.
#[inline(always)]
pub(crate) unsafe fn store_short<S: Simd, const K: usize>(
    s: S,
    y: *mut f32,
    n: usize,
    v: &[S::V; K],
) {
    let w = S::LANES;
    // SAFETY: as in `load_padded`.
    unsafe {
        for (j, vj) in v.iter().enumerate().take(K - 1) {
            s.store(y.add(j * w), *vj);
        }
        let rest = n - (K - 1) * w;
        if rest == w {
            s.store(y.add((K - 1) * w), v[K - 1]);
        } else {
            s.store_partial(y.add((K - 1) * w), rest, v[K - 1]);
        }
    }
}

/// `exp(v - m)` lane-wise, and the f32 sum of all of it (at most `4 * LANES` terms).
#[inline(always)]
pub(crate) fn exp_short<S: Simd, const K: usize>(s: S, v: &[S::V; K], m: f32) -> ([S::V; K], f32) {
    let vm = s.splat(m);
    let mut e = *v;
    for ej in e.iter_mut() {
        *ej = exp_nonpos(s, s.sub(*ej, vm));
    }
    (e, lane_sum(s, &e))
}

/// The sums [`exp_unshifted`] accepts: `[2^-26, 2^60]`.
pub(crate) const UNSHIFTED_MIN: f32 = 1.0 / (1u64 << 26) as f32;
pub(crate) const UNSHIFTED_MAX: f32 = (1u64 << 60) as f32;
/// [`exp_unshifted`] clamps its arguments to at most this (`exp(64) > 2^60`), inside the range
/// where `exp_nonpos` is checked exhaustively.
pub(crate) const UNSHIFTED_CLAMP: f32 = 64.0;

/// `exp(v)` lane-wise and the f32 sum of all of it for a short row of `K` vectors (`-inf`
/// past its end), with no maximum subtracted; `None` unless the sum lies in
/// `[UNSHIFTED_MIN, UNSHIFTED_MAX]`, and then the caller takes the shifted path.
///
/// Why a sum in that range makes the maximum unnecessary: every term is at most the sum, so
/// every argument is below `60 ln 2 = 41.6`, where `exp_nonpos` is within 2 ULP
/// (`tests/exp_exhaustive.rs` checks every f32 of `[0, 64]`; arguments above 64 are clamped
/// to 64 and so push the sum past `2^60`); NaN or `+inf` make the sum NaN or infinite; a term
/// whose `exp` is subnormal (argument below -87.3) has a probability below
/// `2^-126 / 2^-26 < 1e-30`, outside the accuracy contract, and adds less than an ULP to the
/// sum. Skipping the maximum's reduction tree (and its latency before the exponentials) saves
/// about a tenth of a 10-class softmax row; without the rounding of
/// `z - m`, each `exp` is also one rounding closer. Softmax only: log_softmax and the
/// cross-entropy loss of a row dominated by one entry would lose `ln s - z_max` (small) to
/// cancellation, where `(z - m) - ln s'` keeps it.
#[inline(always)]
pub(crate) fn exp_unshifted<S: Simd, const K: usize>(
    s: S,
    v: &[S::V; K],
) -> Option<([S::V; K], f32)> {
    let hi = s.splat(UNSHIFTED_CLAMP);
    let mut e = *v;
    for ej in e.iter_mut() {
        *ej = exp_nonpos(s, s.ceil_at(*ej, hi));
    }
    let sum = lane_sum(s, &e);
    (UNSHIFTED_MIN..=UNSHIFTED_MAX)
        .contains(&sum)
        .then_some((e, sum))
}
