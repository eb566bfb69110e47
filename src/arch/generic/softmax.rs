//! The softmax family's row kernels, written once over [`Simd`].
//!
//! Each kernel takes raw pointers so that the same code serves the in-place forms (source and
//! destination the same buffer). All loops use four independent accumulators over full vectors,
//! then single vectors, then one masked (partial) access for the tail, so no lane ever reads or
//! writes past the row.
//!
//! Sums of `exp` are accumulated in f32 lanes over blocks of [`SUM_BLOCK_VECS`] vectors per
//! accumulator and the block totals in f64: a lane never adds more than 8 terms in f32, which
//! keeps the row sum's relative error near `2^-21` even for rows of 128k+ classes.

use super::exp::{exp_full, exp_nonpos};
use crate::arch::special;
use crate::arch::vector::Simd;

/// Vectors each of the four accumulators adds in f32 before the block total moves to f64.
pub(crate) const SUM_BLOCK_VECS: usize = 8;

/// Maximum of `x[0..n]` (`-inf` for an empty row; unspecified which value wins with NaN).
///
/// # Safety
/// `x .. x + n` valid for reads.
#[inline(always)]
pub(crate) unsafe fn row_max<S: Simd>(s: S, x: *const f32, n: usize) -> f32 {
    // SAFETY: forwarded; the closure touches nothing.
    unsafe { max_with(s, x, n, |_, _| {}) }
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

/// [`row_max`] of the row `x[0..n]`, computed by exactly the operations of `row_max` (same
/// accumulators, same order, so the same value bit for bit), fused with another row's last
/// sweep: `f(i, k)` is called once for each vector `i .. i + k` of `0..n` (`k == LANES`, or
/// the partial tail). Interleaving the next row's first sweep (its first touch, from L2/L3)
/// with this row's last one (in L1) lets the loads of one overlap the work of the other.
///
/// # Safety
/// `x .. x + n` valid for reads and not written by `f`.
#[inline(always)]
pub(crate) unsafe fn max_with<S: Simd, F: FnMut(usize, usize)>(
    s: S,
    x: *const f32,
    n: usize,
    mut f: F,
) -> f32 {
    let w = S::LANES;
    let ninf = s.splat(f32::NEG_INFINITY);
    let (mut a0, mut a1, mut a2, mut a3) = (ninf, ninf, ninf, ninf);
    let mut i = 0;
    // SAFETY: all accesses within `x .. x + n`, as in `row_max`.
    unsafe {
        while i + 4 * w <= n {
            a0 = s.max(a0, s.load(x.add(i)));
            a1 = s.max(a1, s.load(x.add(i + w)));
            a2 = s.max(a2, s.load(x.add(i + 2 * w)));
            a3 = s.max(a3, s.load(x.add(i + 3 * w)));
            f(i, w);
            f(i + w, w);
            f(i + 2 * w, w);
            f(i + 3 * w, w);
            i += 4 * w;
        }
        while i + w <= n {
            a0 = s.max(a0, s.load(x.add(i)));
            f(i, w);
            i += w;
        }
        if i < n {
            a1 = s.max(a1, s.load_partial(x.add(i), n - i, f32::NEG_INFINITY));
            f(i, n - i);
        }
    }
    s.reduce_max(s.max(s.max(a0, a1), s.max(a2, a3)))
}

/// [`scale`] of `y[0..n]` by `r`, fused with [`row_max`] of the next row `x[0..n]` (see
/// [`max_with`]).
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
    let vr = s.splat(r);
    // SAFETY: `max_with` calls the closure with vectors inside `0..n`; `y` does not overlap
    // `x`.
    unsafe {
        max_with(s, x, n, |i, k| {
            if k == S::LANES {
                s.store(y.add(i), s.mul(s.load(y.add(i)), vr));
            } else {
                let v = s.load_partial(y.add(i), k, 0.0);
                s.store_partial(y.add(i), k, s.mul(v, vr));
            }
        })
    }
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

/// [`load_rows`] and the row's maximum.
///
/// # Safety
/// `x .. x + n` valid for reads.
#[inline(always)]
pub(crate) unsafe fn load_short<S: Simd, const K: usize>(
    s: S,
    x: *const f32,
    n: usize,
) -> ([S::V; K], f32) {
    // SAFETY: forwarded.
    let (v, mx) = unsafe { load_rows::<S, K>(s, x, n) };
    (v, s.reduce_max(mx))
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
    // SAFETY: as in `load_short`.
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

/// What a short-row kernel computes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShortKind {
    Softmax,
    LogSoftmax,
    LogSumExp,
}

/// Rows of `(K - 1) * LANES < cols <= K * LANES` floats, each held in registers from load to
/// store with no loops (10 classes are one masked vector). `y` receives the rows (softmax,
/// log_softmax) or one value per row (logsumexp). Softmax rows that [`exp_unshifted`] accepts
/// skip the maximum, two at a time when both do.
///
/// # Safety
/// `x` valid for `rows * cols` reads; `y` for `rows * cols` writes (equal to `x` or not
/// overlapping), or `rows` writes for `LogSumExp`.
#[inline(always)]
unsafe fn short_rows<S: Simd, const K: usize>(
    s: S,
    kind: ShortKind,
    x: *const f32,
    y: *mut f32,
    rows: usize,
    cols: usize,
    masked_zero: bool,
) {
    if kind != ShortKind::Softmax || rows < DENSE_MIN_ROWS {
        // SAFETY: forwarded.
        unsafe { rows_in_registers::<S, K>(s, kind, x, y, 0..rows, cols, masked_zero) };
        return;
    }
    let mut buf = std::mem::MaybeUninit::<[f32; DENSE]>::uninit();
    let bp = buf.as_mut_ptr().cast::<f32>();
    // `cols <= SHORT_VECS * LANES <= 64`: a chunk holds at least 8 rows.
    let per = DENSE / cols;
    let mut r = 0;
    while r < rows {
        let n = per.min(rows - r);
        // SAFETY: rows `r .. r + n` lie inside the caller's ranges; `bp` holds
        // `n * cols <= DENSE` floats and overlaps neither.
        unsafe {
            if n >= DENSE_MIN_ROWS && unshifted_likely(*x.add(r * cols)) {
                softmax_dense::<S, K>(s, x, y, bp, r..r + n, cols, masked_zero);
            } else {
                rows_in_registers::<S, K>(s, kind, x, y, r..r + n, cols, masked_zero);
            }
        }
        r += n;
    }
}

/// Floats per chunk of [`softmax_dense`].
const DENSE: usize = 512;
/// Chunks of fewer rows stay in registers: for 1 or 2 rows of 10 the two passes cost more than
/// they save.
const DENSE_MIN_ROWS: usize = 4;

/// Softmax of the short rows `rows` (together at most [`DENSE`] floats) in two passes: `exp`
/// of every (clamped) logit of the chunk, as one dense array into `buf`, then, row by row, the
/// sum of the row's exps, [`exp_unshifted`]'s range test, the reciprocal and the scaling. Rows
/// that are not [`unshifted_likely`] or fail the test take [`short_row`]'s shifted path.
///
/// The same bits as [`short_row`] for every row: each lane's `exp` is the same operation, and
/// the row's vectors are summed lane-wise in the same order with the lanes past the row 0 (as
/// `exp(-inf)` there). Why: a 10-class row is one 16-lane vector with 6 idle lanes, and its
/// `exp` alone (about 15 instructions, each twice through Zen 4's 256-bit pipes) set the pace;
/// over the dense array 64 rows take 40 vectors instead of 64, and the per-row pass is short.
///
/// # Safety
/// As [`short_rows`] for rows `rows`; `buf` valid for `rows.len() * cols <= DENSE` writes and
/// reads, overlapping neither `x` nor `y`.
#[inline(always)]
unsafe fn softmax_dense<S: Simd, const K: usize>(
    s: S,
    x: *const f32,
    y: *mut f32,
    buf: *mut f32,
    rows: std::ops::Range<usize>,
    cols: usize,
    masked_zero: bool,
) {
    let w = S::LANES;
    let hi = s.splat(UNSHIFTED_CLAMP);
    // SAFETY: the chunk `x[rows.start * cols .. rows.end * cols]` and `buf[..len]` are in
    // range (full vectors while `i + w <= len`, one partial access for the tail); each row of
    // `buf` is read as `K` vectors covering exactly its `cols` floats.
    unsafe {
        let xc = x.add(rows.start * cols);
        let len = rows.len() * cols;
        let mut i = 0;
        while i + w <= len {
            s.store(buf.add(i), exp_nonpos(s, s.ceil_at(s.load(xc.add(i)), hi)));
            i += w;
        }
        if i < len {
            let v = s.load_partial(xc.add(i), len - i, 0.0);
            s.store_partial(buf.add(i), len - i, exp_nonpos(s, s.ceil_at(v, hi)));
        }
        for (i, r) in rows.enumerate() {
            let (xr, yr) = (x.add(r * cols), y.add(r * cols));
            if unshifted_likely(*xr) {
                let mut e = load_padded::<S, K>(s, buf.add(i * cols), cols, 0.0);
                let sum = lane_sum(s, &e);
                if (UNSHIFTED_MIN..=UNSHIFTED_MAX).contains(&sum) {
                    let inv = s.splat(1.0 / sum);
                    for ej in e.iter_mut() {
                        *ej = s.mul(*ej, inv);
                    }
                    store_short::<S, K>(s, yr, cols, &e);
                    continue;
                }
            }
            short_row::<S, K>(s, ShortKind::Softmax, x, y, r, cols, masked_zero, false);
        }
    }
}

/// The rows `rows` of [`short_rows`], each held in registers from load to store; softmax rows
/// two at a time where [`softmax_pair`] takes them.
///
/// # Safety
/// As [`short_rows`], for rows `rows` (inside `0..rows` of the caller's ranges).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn rows_in_registers<S: Simd, const K: usize>(
    s: S,
    kind: ShortKind,
    x: *const f32,
    y: *mut f32,
    rows: std::ops::Range<usize>,
    cols: usize,
    masked_zero: bool,
) {
    let mut r = rows.start;
    while r < rows.end {
        // Two softmax rows at a time, both unshifted or both shifted: their chains (exp, sum
        // tree, divide) are independent, so interleaving them doubles the work in flight.
        if kind == ShortKind::Softmax && r + 2 <= rows.end {
            // SAFETY: rows `r` and `r + 1` lie inside the caller's ranges; both are loaded
            // before anything is stored.
            let done = unsafe { softmax_pair::<S, K>(s, x.add(r * cols), y.add(r * cols), cols) };
            if done {
                r += 2;
                continue;
            }
        }
        // SAFETY: row `r` (and `y[r]` for logsumexp) lies inside the caller's ranges.
        unsafe {
            let attempt = kind == ShortKind::Softmax && unshifted_likely(*x.add(r * cols));
            short_row::<S, K>(s, kind, x, y, r, cols, masked_zero, attempt)
        };
        r += 1;
    }
}

/// Softmax of the two short rows at `x` (to `y`), both unshifted (when both are
/// [`unshifted_likely`] and [`exp_unshifted`] accepts both) or both shifted (when neither is
/// likely and both maxima are finite), with the same operations as [`short_row`] for each;
/// false, having stored nothing, otherwise.
///
/// # Safety
/// `x .. x + 2 cols` valid for reads, `y .. y + 2 cols` for writes, equal or not overlapping.
#[inline(always)]
unsafe fn softmax_pair<S: Simd, const K: usize>(
    s: S,
    x: *const f32,
    y: *mut f32,
    cols: usize,
) -> bool {
    // SAFETY: the caller's ranges; both rows are loaded before anything is stored.
    unsafe {
        let (xa, xb) = (x, x.add(cols));
        let (pa, pb) = (unshifted_likely(*xa), unshifted_likely(*xb));
        let (va, ma) = load_rows::<S, K>(s, xa, cols);
        let (vb, mb) = load_rows::<S, K>(s, xb, cols);
        let ((mut ea, sa), (mut eb, sb)) = if pa && pb {
            match (exp_unshifted::<S, K>(s, &va), exp_unshifted::<S, K>(s, &vb)) {
                (Some(a), Some(b)) => (a, b),
                _ => return false,
            }
        } else if !pa && !pb {
            let (ma, mb) = (s.reduce_max(ma), s.reduce_max(mb));
            if !(ma.is_finite() && mb.is_finite()) {
                return false;
            }
            (exp_short::<S, K>(s, &va, ma), exp_short::<S, K>(s, &vb, mb))
        } else {
            return false;
        };
        let (ia, ib) = (s.splat(1.0 / sa), s.splat(1.0 / sb));
        for (a, b) in ea.iter_mut().zip(eb.iter_mut()) {
            *a = s.mul(*a, ia);
            *b = s.mul(*b, ib);
        }
        store_short::<S, K>(s, y, cols, &ea);
        store_short::<S, K>(s, y.add(cols), cols, &eb);
    }
    true
}

/// Whether a short softmax row whose first entry is `x0` should try [`exp_unshifted`]: with
/// `x0` in `[-16, 40]` its maximum is at least -16 (so the sum is above `2^-26`) and likely
/// below 41.6. Rows outside go straight to the shifted path and pay nothing for the window
/// (without this test, logits around 100 made every row compute its exps twice). A function
/// of the row alone, so the path a row takes never depends on its neighbours or the threads.
#[inline(always)]
fn unshifted_likely(x0: f32) -> bool {
    (-16.0..=40.0).contains(&x0)
}

/// Row `r` of [`short_rows`]: unshifted when `attempt` (softmax only) and [`exp_unshifted`]
/// accepts it, else shifted by its maximum (or the special-value path when the maximum is not
/// finite).
///
/// # Safety
/// As [`short_rows`], `r < rows`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn short_row<S: Simd, const K: usize>(
    s: S,
    kind: ShortKind,
    x: *const f32,
    y: *mut f32,
    r: usize,
    cols: usize,
    masked_zero: bool,
    attempt: bool,
) {
    // SAFETY: row `r` (and `y[r]` for logsumexp) lies inside the caller's ranges; the row is
    // loaded before anything is stored.
    unsafe {
        // For logsumexp `y` holds one value per row: `yr` is only formed (with wrapping
        // arithmetic) and never dereferenced there.
        let (xr, yr) = (x.add(r * cols), y.wrapping_add(r * cols));
        let (v, mx) = load_rows::<S, K>(s, xr, cols);
        // The shift (0 when unshifted), `exp(v - shift)` and its sum.
        // Unshifted for softmax only: log_softmax and logsumexp of a row dominated by one
        // entry would lose the small `ln s - z` to cancellation (`(z - m) - ln s` keeps it).
        let unshifted = if attempt {
            exp_unshifted::<S, K>(s, &v)
        } else {
            None
        };
        let (m, e, sum) = if let Some((e, sum)) = unshifted {
            (0.0, e, sum)
        } else {
            let m = s.reduce_max(mx);
            if !m.is_finite() {
                match kind {
                    ShortKind::Softmax => special::softmax_row(xr, yr, cols, m, masked_zero),
                    ShortKind::LogSoftmax => special::log_softmax_row(xr, yr, cols, m, masked_zero),
                    ShortKind::LogSumExp => *y.add(r) = special::logsumexp_row(xr, cols, m),
                }
                return;
            }
            let (e, sum) = exp_short::<S, K>(s, &v, m);
            (m, e, sum)
        };
        match kind {
            ShortKind::Softmax => {
                let inv = s.splat(1.0 / sum);
                let mut e = e;
                for ej in e.iter_mut() {
                    *ej = s.mul(*ej, inv);
                }
                store_short::<S, K>(s, yr, cols, &e);
            }
            ShortKind::LogSoftmax => {
                // `(v - m) - ln s`; unshifted, `v - ln s` (`v - 0` is `v`).
                let (vm, ls) = (s.splat(m), s.splat(sum.ln()));
                let mut o = v;
                for oj in o.iter_mut() {
                    *oj = s.sub(s.sub(*oj, vm), ls);
                }
                store_short::<S, K>(s, yr, cols, &o);
            }
            ShortKind::LogSumExp => *y.add(r) = (m as f64 + (sum as f64).ln()) as f32,
        }
    }
}

/// Runs [`short_rows`] with `K = ceil(cols / LANES)`; returns false (doing nothing) if `cols`
/// needs more than [`SHORT_VECS`] vectors.
///
/// # Safety
/// As [`short_rows`].
#[inline(always)]
unsafe fn try_short<S: Simd>(
    s: S,
    kind: ShortKind,
    x: *const f32,
    y: *mut f32,
    rows: usize,
    cols: usize,
    masked_zero: bool,
) -> bool {
    let k = cols.div_ceil(S::LANES);
    if !(1..=SHORT_VECS).contains(&k) {
        return false;
    }
    // `K` matches `cols` as `short_rows` requires. (A macro, not a closure: a closure is not
    // compiled with the tier's target features, and the intrinsics would not inline.)
    macro_rules! run {
        ($x:expr, $y:expr, $rows:expr) => {
            match k {
                1 => short_rows::<S, 1>(s, kind, $x, $y, $rows, cols, masked_zero),
                2 => short_rows::<S, 2>(s, kind, $x, $y, $rows, cols, masked_zero),
                3 => short_rows::<S, 3>(s, kind, $x, $y, $rows, cols, masked_zero),
                _ => short_rows::<S, 4>(s, kind, $x, $y, $rows, cols, masked_zero),
            }
        };
    }
    // In place with a masked tail: a row's load right after the previous row's masked store,
    // whose span reaches into the next row, waits for that store to reach the cache (more
    // than twice as slow as out of place). So such rows go, a chunk at a time, to a buffer on
    // the stack and are copied back with plain stores. Rows of whole vectors do not overlap
    // the next row's loads and skip the copy (it made them slower). Both ways run the one inlined copy of `run!` below, so the results are
    // the same bits, NaN payloads included (two copies may order an operation's operands
    // differently, and x86 propagates the first NaN operand).
    // The buffer holds one chunk of `short_rows`'s dense softmax ([`DENSE`] floats), so that
    // in place and out of place cut the rows into the same chunks.
    const BUF: usize = DENSE;
    let via_buf = kind != ShortKind::LogSumExp
        && std::ptr::eq(x, y)
        && rows >= 2
        && !cols.is_multiple_of(S::LANES);
    let mut buf = std::mem::MaybeUninit::<[f32; BUF]>::uninit();
    let bp = buf.as_mut_ptr().cast::<f32>();
    // Through the buffer, `cols <= SHORT_VECS * LANES <= 64`, so a chunk holds at least 8
    // rows; else one chunk of every row, straight to `y`.
    let per = if via_buf { BUF / cols } else { rows.max(1) };
    let mut r = 0;
    while r < rows {
        let n = per.min(rows - r);
        // SAFETY: rows `r .. r + n` lie inside `x`. Through the buffer, `bp` holds
        // `n * cols <= BUF` floats, written by `run!` before the copy reads them, not
        // overlapping `y` (= `x`); else `r == 0` and `y` is the caller's.
        unsafe {
            let out = if via_buf { bp } else { y };
            run!(x.add(r * cols), out, n);
            if via_buf {
                std::ptr::copy_nonoverlapping(bp, y.add(r * cols), n * cols);
            }
        }
        r += n;
    }
    true
}

/// Softmax of `rows` rows of `cols` floats, `x` to `y` (`y` may equal `x`).
///
/// Rows of at most [`SHORT_VECS`] vectors (e.g. 10 classes) are held in registers from load to
/// store, with no loops and a plain f32 sum (at most 64 terms in a tree), so the per-row cost is
/// a few dozen instructions and consecutive rows overlap in the pipeline. Longer rows take
/// [`pipelined_rows`].
///
/// # Safety
/// `x .. x + rows * cols` valid for reads, `y .. y + rows * cols` for writes, equal or not
/// overlapping.
#[inline(always)]
pub(crate) unsafe fn softmax_rows<S: Simd>(
    s: S,
    x: *const f32,
    y: *mut f32,
    rows: usize,
    cols: usize,
    masked_zero: bool,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { pipelined_rows::<S, false>(s, x, y, rows, cols, masked_zero) }
}

/// Log-softmax of `rows` rows: `y = (x - m) - ln(sum exp(x - m))`, one exp per element, no
/// stores until the last pass.
///
/// # Safety
/// As [`softmax_rows`].
#[inline(always)]
pub(crate) unsafe fn log_softmax_rows<S: Simd>(
    s: S,
    x: *const f32,
    y: *mut f32,
    rows: usize,
    cols: usize,
    masked_zero: bool,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { pipelined_rows::<S, true>(s, x, y, rows, cols, masked_zero) }
}

/// The row loop of softmax (`LOG = false`) and log_softmax (`LOG = true`), for rows longer
/// than the short-row kernels take.
///
/// Per row: pass 1 is the max (fused into the previous row's exp pass); pass 2 stores
/// `exp(x - m)` (softmax) or `x - m` (log_softmax: that brings the output row into L1 while
/// the pass is bound by the exps) and sums the exps; the row's factor is `1 / sum` or
/// `ln(sum)`; pass 3 multiplies by `1 / sum` or subtracts `ln(sum)` (`(y - 0) - ls` gives the
/// same bits as `(x - m) - ls`). Software-pipelined: row r's exp pass (with row r + 1's max
/// fused in) and its factor come before row r - 1's last pass (its row still in L1), so the
/// division's or the `ln`'s latency overlaps that pass. Rows with a non-finite maximum take
/// the `special` module's scalar rules.
///
/// # Safety
/// As [`softmax_rows`].
#[inline(always)]
unsafe fn pipelined_rows<S: Simd, const LOG: bool>(
    s: S,
    x: *const f32,
    y: *mut f32,
    rows: usize,
    cols: usize,
    masked_zero: bool,
) {
    let kind = if LOG {
        ShortKind::LogSoftmax
    } else {
        ShortKind::Softmax
    };
    // SAFETY: forwarded from this function's contract.
    if unsafe { try_short(s, kind, x, y, rows, cols, masked_zero) } {
        return;
    }
    // Pass 3 of a row whose factor is known.
    let last_pass = |yp: *mut f32, factor: f32| {
        // SAFETY: `yp` is a row of `y` (`cols` floats), which the caller's contract makes
        // writable; see the loop for why no pending pass overlaps a row still being read.
        unsafe {
            if LOG {
                sub2(s, yp, yp, cols, 0.0, factor);
            } else {
                scale(s, yp, cols, factor);
            }
        }
    };
    let mut m_next = if rows > 0 {
        // SAFETY: row 0 lies inside the caller's range.
        unsafe { row_max(s, x, cols) }
    } else {
        0.0
    };
    // The row whose last pass is due, and its factor.
    let mut pending: Option<(*mut f32, f32)> = None;
    for r in 0..rows {
        // SAFETY: rows `r` and `r + 1 < rows` are `r * cols .. (r + 2) * cols`, inside the
        // ranges the caller guarantees; rows `r` and `r + 1` of `x` do not overlap row `r - 1`
        // of `y`, the only row the pending pass writes (`y` equals `x` or does not overlap it).
        unsafe {
            let xr = x.add(r * cols);
            let yr = y.add(r * cols);
            let m = m_next;
            let last = r + 1 == rows;
            let due = if !m.is_finite() {
                if LOG {
                    special::log_softmax_row(xr, yr, cols, m, masked_zero);
                } else {
                    special::softmax_row(xr, yr, cols, m, masked_zero);
                }
                if !last {
                    m_next = row_max(s, xr.add(cols), cols);
                }
                None
            } else {
                let sum = if last {
                    exp_sum_with::<S, true, false, LOG>(s, xr, yr, cols, m, std::ptr::null()).0
                } else {
                    let (sum, nm) =
                        exp_sum_with::<S, true, true, LOG>(s, xr, yr, cols, m, xr.add(cols));
                    m_next = nm;
                    sum
                };
                Some((
                    yr,
                    if LOG {
                        sum.ln() as f32
                    } else {
                        (1.0 / sum) as f32
                    },
                ))
            };
            if let Some((yp, factor)) = pending {
                last_pass(yp, factor);
            }
            pending = due;
        }
    }
    if let Some((yp, factor)) = pending {
        last_pass(yp, factor);
    }
}

/// `out[r] = ln(sum_j exp(x[r, j]))`, with no stores but the result.
///
/// # Safety
/// `x .. x + rows * cols` valid for reads, `out .. out + rows` for writes.
#[inline(always)]
pub(crate) unsafe fn logsumexp_rows<S: Simd>(
    s: S,
    x: *const f32,
    out: *mut f32,
    rows: usize,
    cols: usize,
) {
    // SAFETY: forwarded from this function's contract (`out` gets one value per row).
    if unsafe { try_short(s, ShortKind::LogSumExp, x, out, rows, cols, false) } {
        return;
    }
    for r in 0..rows {
        // SAFETY: as in `softmax_rows`; `out + r` is inside `out .. out + rows`.
        unsafe {
            let xr = x.add(r * cols);
            let m = row_max(s, xr, cols);
            let v = if !m.is_finite() {
                special::logsumexp_row(xr, cols, m)
            } else {
                let sum = exp_sum::<S, false>(s, xr, std::ptr::null_mut(), cols, m);
                (m as f64 + sum.ln()) as f32
            };
            *out.add(r) = v;
        }
    }
}

/// `dx = y * (dy - <dy, y>)` per row.
///
/// # Safety
/// `y`, `dy` valid for `rows * cols` reads, `dx` for as many writes; `dx` may equal `dy`
/// (each lane is read before it is written) but must not overlap `y` or `dy` otherwise.
#[inline(always)]
pub(crate) unsafe fn softmax_backward_rows<S: Simd>(
    s: S,
    y: *const f32,
    dy: *const f32,
    dx: *mut f32,
    rows: usize,
    cols: usize,
) {
    let w = S::LANES;
    for r in 0..rows {
        // SAFETY: row `r` of each buffer is inside the caller's ranges; accesses within
        // `0..cols` as in `row_max`.
        unsafe {
            let (yr, dyr, dxr) = (y.add(r * cols), dy.add(r * cols), dx.add(r * cols));
            let dot = blocked_sum::<S, true>(s, yr, dyr, cols) as f32;
            let vd = s.splat(dot);
            let mut i = 0;
            while i + w <= cols {
                let v = s.mul(s.load(yr.add(i)), s.sub(s.load(dyr.add(i)), vd));
                s.store(dxr.add(i), v);
                i += w;
            }
            if i < cols {
                let vy = s.load_partial(yr.add(i), cols - i, 0.0);
                let vdy = s.load_partial(dyr.add(i), cols - i, 0.0);
                s.store_partial(dxr.add(i), cols - i, s.mul(vy, s.sub(vdy, vd)));
            }
        }
    }
}

/// `dx = dy - exp(y) * sum(dy)` per row (`y` are log-probabilities).
///
/// # Safety
/// As [`softmax_backward_rows`].
#[inline(always)]
pub(crate) unsafe fn log_softmax_backward_rows<S: Simd>(
    s: S,
    y: *const f32,
    dy: *const f32,
    dx: *mut f32,
    rows: usize,
    cols: usize,
) {
    let w = S::LANES;
    for r in 0..rows {
        // SAFETY: as in `softmax_backward_rows`.
        unsafe {
            let (yr, dyr, dxr) = (y.add(r * cols), dy.add(r * cols), dx.add(r * cols));
            let sum = blocked_sum::<S, false>(s, dyr, dyr, cols) as f32;
            let vs = s.splat(sum);
            let mut i = 0;
            while i + w <= cols {
                let e = exp_full(s, s.load(yr.add(i)));
                let v = s.sub(s.load(dyr.add(i)), s.mul(e, vs));
                s.store(dxr.add(i), v);
                i += w;
            }
            if i < cols {
                let e = exp_full(s, s.load_partial(yr.add(i), cols - i, 0.0));
                let vdy = s.load_partial(dyr.add(i), cols - i, 0.0);
                s.store_partial(dxr.add(i), cols - i, s.sub(vdy, s.mul(e, vs)));
            }
        }
    }
}

/// One chunk of the online (long-row) softmax: returns the chunk's `(max, sum exp(x - max))`
/// and, when `y` is not null, stores `exp(x - max)` to it. A chunk whose maximum is not finite
/// returns a sum of 0 (all `-inf`, zeros stored) or NaN (a NaN or `+inf` in the chunk); the
/// merge turns those into the row's result.
///
/// # Safety
/// `x .. x + n` valid for reads; `y` null or valid for `n` writes, equal to `x` or not
/// overlapping it.
#[inline(always)]
pub(crate) unsafe fn chunk_stats<S: Simd>(
    s: S,
    x: *const f32,
    y: *mut f32,
    n: usize,
) -> (f32, f64) {
    // SAFETY: the caller's ranges are exactly what the helpers need.
    unsafe {
        let m = row_max(s, x, n);
        if !m.is_finite() {
            return special::chunk_stats(x, y, n, m);
        }
        let sum = if y.is_null() {
            exp_sum::<S, false>(s, x, y, n, m)
        } else {
            exp_sum::<S, true>(s, x, y, n, m)
        };
        (m, sum)
    }
}
