//! Splitting work across rayon, deterministically.
//!
//! Work is cut into row blocks of about [`BLOCK_BYTES`] of input; each block is computed by
//! exactly the same code whatever thread runs it, and no result ever depends on how blocks are
//! scheduled, so every function gives bit-identical results for any number of threads.
//! Everything runs in the caller's current rayon pool (`pool.install(..)` sets the thread
//! count); below [`INLINE_ELEMS`] elements, or on a one-thread pool, work runs inline on the
//! calling thread with no hand-off.

use std::ops::Range;

use rayon::prelude::*;

/// Input bytes per rayon task (one row block).
pub(crate) const BLOCK_BYTES: usize = 64 * 1024;

/// Below this many elements a call runs inline: a rayon hand-off costs a few microseconds,
/// more than such a call takes (a 64x10 softmax runs in a fraction of a microsecond inline).
pub(crate) const INLINE_ELEMS: usize = 16 * 1024;

/// A raw pointer that may cross threads. Users guarantee that concurrent tasks touch disjoint
/// parts of the buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SyncPtr<T>(pub(crate) *mut T);

impl<T> SyncPtr<T> {
    /// The pointer. (A method, so closures capture the whole `SyncPtr`, not its field.)
    #[inline(always)]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

// SAFETY: `SyncPtr` is only an address; every user derives disjoint per-task ranges from it
// (distinct rows or chunks), so sharing it across threads creates no data race.
unsafe impl<T> Send for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SyncPtr<T> {}

/// Whether work of `elems` elements should run inline on the calling thread.
pub(crate) fn run_inline(elems: usize) -> bool {
    elems <= INLINE_ELEMS || rayon::current_num_threads() <= 1
}

/// Calls `f` on row ranges covering `0..rows`: once with `0..rows` when the work is small,
/// else on blocks of about [`BLOCK_BYTES`] of input in parallel.
pub(crate) fn for_each_row_block<F>(rows: usize, cols: usize, f: F)
where
    F: Fn(Range<usize>) + Sync + Send,
{
    if rows <= 1 || run_inline(rows.saturating_mul(cols)) {
        f(0..rows);
        return;
    }
    let per = rows_per_block(cols);
    let blocks = rows.div_ceil(per);
    (0..blocks)
        .into_par_iter()
        .for_each(|b| f(b * per..rows.min((b + 1) * per)));
}

/// Calls `f(i)` for every `i` in `0..n`, in parallel unless `total_elems` is small.
pub(crate) fn for_each_index<F>(n: usize, total_elems: usize, f: F)
where
    F: Fn(usize) + Sync + Send,
{
    if n <= 1 || run_inline(total_elems) {
        (0..n).for_each(f);
    } else {
        (0..n).into_par_iter().for_each(f);
    }
}

/// Rows per block for a reduction over rows: a function of the shape only, never of the thread
/// count, so that sums over blocks are bit-identical however many threads run them.
pub(crate) fn rows_per_block(cols: usize) -> usize {
    (BLOCK_BYTES / cols.saturating_mul(4).max(1)).max(1)
}

/// Maps the fixed row blocks of [`rows_per_block`] with `f` (in parallel when the work is
/// large) and adds the results in block order: an f64 sum and a count.
pub(crate) fn sum_row_blocks<F>(rows: usize, cols: usize, f: F) -> (f64, usize)
where
    F: Fn(Range<usize>) -> (f64, usize) + Sync + Send,
{
    // One block (no division to find out): what the general code below would do.
    if cols > 0 && rows.saturating_mul(cols) <= BLOCK_BYTES / 4 {
        let (s, n) = if rows == 0 { (0.0, 0) } else { f(0..rows) };
        return (0.0 + s, n);
    }
    let per = rows_per_block(cols);
    let blocks = rows.div_ceil(per);
    let block = |b: usize| f(b * per..rows.min((b + 1) * per));
    let add = |(s, n): (f64, usize), (bs, bn): (f64, usize)| (s + bs, n + bn);
    if blocks <= 1 || run_inline(rows.saturating_mul(cols)) {
        (0..blocks).map(block).fold((0.0, 0), add)
    } else {
        let parts: Vec<(f64, usize)> = (0..blocks).into_par_iter().map(block).collect();
        parts.into_iter().fold((0.0, 0), add)
    }
}
