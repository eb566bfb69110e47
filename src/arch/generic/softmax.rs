//! The softmax family's row kernels, written once over [`Simd`] from the row passes of
//! [`super::rows`].
//!
//! Short rows (at most [`SHORT_VECS`] vectors) stay in registers, with a dense variant for
//! batches of one-vector rows and an unshifted try for softmax; longer rows take the
//! three-pass form, pipelined across rows (the next row's maximum rides along the last sweep).

use super::exp::{exp_full, exp_nonpos};
use super::rows::*;
use crate::arch::special;
use crate::arch::vector::Simd;

/// What a forward kernel computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FwdKind {
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
/// `x` valid for reading rows of `cols` floats `a.ldx` apart; `y` for writing rows `a.ldy`
/// apart (equal to `x` with the same stride, or not overlapping it), or one float per row
/// (`a.ldy == 1`) for `LogSumExp`.
#[inline(always)]
unsafe fn short_rows<S: Simd, const K: usize>(
    s: S,
    a: FwdArgs,
    x: *const f32,
    y: *mut f32,
    rows: usize,
    cols: usize,
) {
    let masked_zero = a.masked_zero;
    if a.kind != FwdKind::Softmax || rows < DENSE_MIN_ROWS || !a.dense(cols) {
        // SAFETY: forwarded.
        unsafe { rows_in_registers::<S, K>(s, a, x, y, 0..rows, cols) };
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
            if n >= DENSE_MIN_ROWS && unshifted_likely(*x.add(r * a.ldx)) {
                softmax_dense::<S, K>(s, x, y, bp, r..r + n, cols, masked_zero);
            } else {
                rows_in_registers::<S, K>(s, a, x, y, r..r + n, cols);
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
/// As [`short_rows`] for rows `rows`, with `x` and `y` dense (`ldx == ldy == cols`); `buf`
/// valid for `rows.len() * cols <= DENSE` writes and reads, overlapping neither `x` nor `y`.
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
            let a = FwdArgs {
                kind: FwdKind::Softmax,
                masked_zero,
                ldx: cols,
                ldy: cols,
            };
            short_row::<S, K>(s, a, x, y, r, cols, false);
        }
    }
}

/// The rows `rows` of [`short_rows`], each held in registers from load to store; softmax rows
/// two at a time where [`softmax_pair`] takes them.
///
/// # Safety
/// As [`short_rows`], for rows `rows` (inside `0..rows` of the caller's ranges).
#[inline(always)]
unsafe fn rows_in_registers<S: Simd, const K: usize>(
    s: S,
    a: FwdArgs,
    x: *const f32,
    y: *mut f32,
    rows: std::ops::Range<usize>,
    cols: usize,
) {
    let kind = a.kind;
    let mut r = rows.start;
    while r < rows.end {
        // Two softmax rows at a time, both unshifted or both shifted: their chains (exp, sum
        // tree, divide) are independent, so interleaving them doubles the work in flight.
        if kind == FwdKind::Softmax && r + 2 <= rows.end {
            // SAFETY: rows `r` and `r + 1` lie inside the caller's ranges; both are loaded
            // before anything is stored.
            let done =
                unsafe { softmax_pair::<S, K>(s, a, x.add(r * a.ldx), y.add(r * a.ldy), cols) };
            if done {
                r += 2;
                continue;
            }
        }
        // SAFETY: row `r` (and `y[r]` for logsumexp) lies inside the caller's ranges.
        unsafe {
            let attempt = kind == FwdKind::Softmax && unshifted_likely(*x.add(r * a.ldx));
            short_row::<S, K>(s, a, x, y, r, cols, attempt)
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
/// The rows at `x` and `x + a.ldx` valid for reads, at `y` and `y + a.ldy` for writes, equal
/// or not overlapping.
#[inline(always)]
unsafe fn softmax_pair<S: Simd, const K: usize>(
    s: S,
    a: FwdArgs,
    x: *const f32,
    y: *mut f32,
    cols: usize,
) -> bool {
    // SAFETY: the caller's ranges; both rows are loaded before anything is stored.
    unsafe {
        let (xa, xb) = (x, x.add(a.ldx));
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
        store_short::<S, K>(s, y.add(a.ldy), cols, &eb);
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
#[inline(always)]
unsafe fn short_row<S: Simd, const K: usize>(
    s: S,
    a: FwdArgs,
    x: *const f32,
    y: *mut f32,
    r: usize,
    cols: usize,
    attempt: bool,
) {
    let (kind, masked_zero) = (a.kind, a.masked_zero);
    // SAFETY: row `r` (and `y[r]` for logsumexp) lies inside the caller's ranges; the row is
    // loaded before anything is stored.
    unsafe {
        // For logsumexp `y` holds one value per row (`ldy == 1`), and `yr` is that value.
        let (xr, yr) = (x.add(r * a.ldx), y.add(r * a.ldy));
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
                    FwdKind::Softmax => special::softmax_row(xr, yr, cols, m, masked_zero),
                    FwdKind::LogSoftmax => special::log_softmax_row(xr, yr, cols, m, masked_zero),
                    FwdKind::LogSumExp => *yr = special::logsumexp_row(xr, cols, m),
                }
                return;
            }
            let (e, sum) = exp_short::<S, K>(s, &v, m);
            (m, e, sum)
        };
        match kind {
            FwdKind::Softmax => {
                let inv = s.splat(1.0 / sum);
                let mut e = e;
                for ej in e.iter_mut() {
                    *ej = s.mul(*ej, inv);
                }
                store_short::<S, K>(s, yr, cols, &e);
            }
            FwdKind::LogSoftmax => {
                // `(v - m) - ln s`; unshifted, `v - ln s` (`v - 0` is `v`).
                let (vm, ls) = (s.splat(m), s.splat(sum.ln()));
                let mut o = v;
                for oj in o.iter_mut() {
                    *oj = s.sub(s.sub(*oj, vm), ls);
                }
                store_short::<S, K>(s, yr, cols, &o);
            }
            FwdKind::LogSumExp => *yr = (m as f64 + (sum as f64).ln()) as f32,
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
    a: FwdArgs,
    x: *const f32,
    y: *mut f32,
    rows: usize,
    cols: usize,
) -> bool {
    let k = cols.div_ceil(S::LANES);
    if !(1..=SHORT_VECS).contains(&k) {
        return false;
    }
    // `K` matches `cols` as `short_rows` requires. (A macro, not a closure: a closure is not
    // compiled with the tier's target features, and the intrinsics would not inline.)
    macro_rules! run {
        ($a:expr, $x:expr, $y:expr, $rows:expr) => {
            match k {
                1 => short_rows::<S, 1>(s, $a, $x, $y, $rows, cols),
                2 => short_rows::<S, 2>(s, $a, $x, $y, $rows, cols),
                3 => short_rows::<S, 3>(s, $a, $x, $y, $rows, cols),
                _ => short_rows::<S, 4>(s, $a, $x, $y, $rows, cols),
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
    // (Dense rows only: strided rows in place keep their stride and go straight through.)
    let via_buf = a.kind != FwdKind::LogSumExp
        && std::ptr::eq(x, y)
        && a.dense(cols)
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
        // SAFETY: rows `r .. r + n` lie inside `x`. Through the buffer (dense rows, so
        // `ldx == ldy == cols`), `bp` holds `n * cols <= BUF` floats, written by `run!` before
        // the copy reads them, not overlapping `y` (= `x`); else `r == 0` and `y` is the
        // caller's.
        unsafe {
            let out = if via_buf { bp } else { y };
            run!(a, x.add(r * a.ldx), out, n);
            if via_buf {
                std::ptr::copy_nonoverlapping(bp, y.add(r * cols), n * cols);
            }
        }
        r += n;
    }
    true
}

/// The arguments of a forward entry beyond the rows: what it computes, whether a fully
/// masked (all `-inf`) row gives zeros instead of NaN, and the row strides in floats
/// (`ldx >= cols`; `ldy >= cols`, or 1 for `LogSumExp`'s one value per row).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FwdArgs {
    pub kind: FwdKind,
    pub masked_zero: bool,
    pub ldx: usize,
    pub ldy: usize,
}

impl FwdArgs {
    /// Whether the rows of `x` and `y` are dense (`ld == cols`), as the dense softmax of
    /// short rows needs.
    #[inline(always)]
    pub(crate) fn dense(&self, cols: usize) -> bool {
        self.ldx == cols && self.ldy == cols
    }
}

/// The `Short` entry: rows of at most [`SHORT_VECS`] vectors (e.g. 10 classes) held in
/// registers from load to store, with no loops and a plain f32 sum (at most 64 terms in a
/// tree), so the per-row cost is a few dozen instructions and consecutive rows overlap in the
/// pipeline. `y` receives the rows, or one value per row for `LogSumExp`. (Longer rows, which
/// the plan never sends here, take [`rows_path`].)
///
/// # Safety
/// `x` valid for reading `rows` rows of `cols` floats `a.ldx` apart; `y` for writing as many
/// rows `a.ldy` apart (one float per row, `a.ldy == 1`, for `LogSumExp`), equal to `x` with
/// the same stride or not overlapping it.
#[inline(always)]
pub(crate) unsafe fn short_path<S: Simd>(
    s: S,
    x: *const f32,
    y: *mut f32,
    rows: usize,
    cols: usize,
    a: FwdArgs,
) {
    // One inlined copy per kind, each with its kind a constant (a run-time kind in every
    // row's code cost a 1x10 log_softmax a fifth of its time).
    let kind = |kind| FwdArgs { kind, ..a };
    // SAFETY: forwarded from this function's contract.
    unsafe {
        let done = match a.kind {
            FwdKind::Softmax => try_short(s, kind(FwdKind::Softmax), x, y, rows, cols),
            FwdKind::LogSoftmax => try_short(s, kind(FwdKind::LogSoftmax), x, y, rows, cols),
            FwdKind::LogSumExp => try_short(s, kind(FwdKind::LogSumExp), x, y, rows, cols),
        };
        if !done {
            rows_path(s, x, y, rows, cols, a);
        }
    }
}

/// The `Rows` entry: rows of any length in three passes, pipelined across rows
/// ([`pipelined_rows`]), or for `LogSumExp` a max pass and a sum pass per row.
///
/// # Safety
/// As [`short_path`].
#[inline(always)]
pub(crate) unsafe fn rows_path<S: Simd>(
    s: S,
    x: *const f32,
    y: *mut f32,
    rows: usize,
    cols: usize,
    a: FwdArgs,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match a.kind {
            FwdKind::Softmax => pipelined_rows::<S, false>(s, x, y, rows, cols, a),
            FwdKind::LogSoftmax => pipelined_rows::<S, true>(s, x, y, rows, cols, a),
            FwdKind::LogSumExp => logsumexp_rows(s, x, y, rows, cols, a.ldx),
        }
    }
}

/// The row loop of softmax (`LOG = false`) and log_softmax (`LOG = true`).
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
/// As [`short_path`].
#[inline(always)]
unsafe fn pipelined_rows<S: Simd, const LOG: bool>(
    s: S,
    x: *const f32,
    y: *mut f32,
    rows: usize,
    cols: usize,
    a: FwdArgs,
) {
    let (masked_zero, ldx, ldy) = (a.masked_zero, a.ldx, a.ldy);
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
        // SAFETY: rows `r` and `r + 1 < rows` lie inside the ranges the caller guarantees;
        // rows `r` and `r + 1` of `x` do not overlap row `r - 1` of `y`, the only row the
        // pending pass writes (`y` equals `x` with the same stride, or does not overlap it).
        unsafe {
            let xr = x.add(r * ldx);
            let yr = y.add(r * ldy);
            let m = m_next;
            let last = r + 1 == rows;
            let due = if !m.is_finite() {
                if LOG {
                    special::log_softmax_row(xr, yr, cols, m, masked_zero);
                } else {
                    special::softmax_row(xr, yr, cols, m, masked_zero);
                }
                if !last {
                    m_next = row_max(s, xr.add(ldx), cols);
                }
                None
            } else {
                let sum = if last {
                    exp_sum_with::<S, true, false, LOG>(s, xr, yr, cols, m, std::ptr::null()).0
                } else {
                    let (sum, nm) =
                        exp_sum_with::<S, true, true, LOG>(s, xr, yr, cols, m, xr.add(ldx));
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

/// `out[r] = ln(sum_j exp(x[r, j]))`, with no stores but the result: per row a max pass and
/// a sum pass.
///
/// # Safety
/// `x` valid for reading `rows` rows of `cols` floats `ldx` apart, `out .. out + rows` for
/// writes.
#[inline(always)]
unsafe fn logsumexp_rows<S: Simd>(
    s: S,
    x: *const f32,
    out: *mut f32,
    rows: usize,
    cols: usize,
    ldx: usize,
) {
    for r in 0..rows {
        // SAFETY: row `r` lies inside `x`; `out + r` is inside `out .. out + rows`.
        unsafe {
            let xr = x.add(r * ldx);
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
/// `y`, `dy` valid for reading `rows` rows of `cols` floats (`ld[0]`, `ld[1]` apart), `dx` for
/// writing as many (`ld[2]` apart); `dx` may equal `dy` with the same stride (each lane is
/// read before it is written) but must not overlap `y` or `dy` otherwise.
#[inline(always)]
pub(crate) unsafe fn softmax_backward_rows<S: Simd>(
    s: S,
    y: *const f32,
    dy: *const f32,
    dx: *mut f32,
    rows: usize,
    cols: usize,
    ld: [usize; 3],
) {
    // SAFETY: forwarded.
    unsafe { backward_rows::<S, false>(s, y, dy, dx, rows, cols, ld) }
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
    ld: [usize; 3],
) {
    // SAFETY: forwarded.
    unsafe { backward_rows::<S, true>(s, y, dy, dx, rows, cols, ld) }
}

/// The backward passes, one sweep per row after its reduction: softmax's
/// `dx = y (dy - <dy, y>)`, or with `LOG` log_softmax's `dx = dy - exp(y) sum(dy)`.
///
/// # Safety
/// As [`softmax_backward_rows`].
#[inline(always)]
unsafe fn backward_rows<S: Simd, const LOG: bool>(
    s: S,
    y: *const f32,
    dy: *const f32,
    dx: *mut f32,
    rows: usize,
    cols: usize,
    ld: [usize; 3],
) {
    let w = S::LANES;
    /// One vector of the result from `y`, `dy` and the row's reduction `vr`. (A function, not
    /// a closure: a closure is not compiled with the tier's target features unless inlined.)
    #[inline(always)]
    fn lane<S: Simd, const LOG: bool>(s: S, vy: S::V, vdy: S::V, vr: S::V) -> S::V {
        if LOG {
            s.sub(vdy, s.mul(exp_full(s, vy), vr))
        } else {
            s.mul(vy, s.sub(vdy, vr))
        }
    }
    for r in 0..rows {
        // SAFETY: row `r` of each buffer is inside the caller's ranges; accesses within
        // `0..cols` as in `row_max`.
        unsafe {
            let (yr, dyr, dxr) = (y.add(r * ld[0]), dy.add(r * ld[1]), dx.add(r * ld[2]));
            let red = if LOG {
                blocked_sum::<S, false>(s, dyr, dyr, cols)
            } else {
                blocked_sum::<S, true>(s, yr, dyr, cols)
            };
            let vr = s.splat(red as f32);
            let mut i = 0;
            while i + w <= cols {
                s.store(
                    dxr.add(i),
                    lane::<S, LOG>(s, s.load(yr.add(i)), s.load(dyr.add(i)), vr),
                );
                i += w;
            }
            if i < cols {
                let vy = s.load_partial(yr.add(i), cols - i, 0.0);
                let vdy = s.load_partial(dyr.add(i), cols - i, 0.0);
                s.store_partial(dxr.add(i), cols - i, lane::<S, LOG>(s, vy, vdy, vr));
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
