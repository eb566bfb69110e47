//! Output-layer updates: rank-1 and rank-k updates, weight and bias gradients, SGD, linear
//! forward/backward, and the `OutputLayer` train step.
//!
//! Matrices are row-major f32. The weight matrix `W` (and its gradient `dW`) is `[C, D]`
//! (classes by features) with a leading dimension (row stride) `ld >= D`, described by a
//! [`MatrixLayout`]; its slice holds either `C * ld` floats or `(C - 1) * ld + D` (the last row's
//! padding left out), and the padding is never read or written. The batch matrices are dense:
//! `delta` (the output error, `p - y`) is `[B, C]`, the activations `a` are `[B, D]`, the logits
//! `z` are `[B, C]`. The batch size `B` is taken from the slices' lengths.
//!
//! | function                  | computes                              | how                     |
//! |---------------------------|---------------------------------------|-------------------------|
//! | [`rank1_update`]          | `W += alpha x y^T`                    | streams W once          |
//! | [`rank_k_update`]         | `W += alpha delta^T A`                | streams W once          |
//! | [`weight_grad`]           | `dW = beta dW + alpha delta^T A`      | rank-k (small B), sgemm |
//! | [`bias_grad`]             | `db = beta db + alpha sum_rows delta` | column sums             |
//! | [`sgd_step`]              | `W -= (lr / B) delta^T A`, bias too   | one GEMM, beta = 1      |
//! | [`Sgd`]                   | `torch.optim.SGD` (momentum, ...)     | gradient + velocity     |
//! | [`linear_forward`]        | `Z = A W^T + b`                       | streaming (small B), sgemm |
//! | [`linear_backward_input`] | `dA = delta W`                        | streaming (small B), sgemm |
//!
//! **Parallelism and determinism.** Large calls are cut into blocks by rayon in the caller's
//! current pool: row blocks of W for the streaming kernels, tiles of the output (rows, and
//! columns where that packs less) for the GEMMs. The streaming blocks are a function of the
//! shape only, never of the thread count. A GEMM runs as one call on a one-thread pool and as
//! shape-determined tiles otherwise (each tile repacks its operands, which costs time on one
//! thread); a tile only partitions the output, and every output element is computed by
//! one sgemm call over the whole inner dimension in the same order whichever tile holds it,
//! so **results are bit-identical for any number of threads** (tested: pools of 1, 2, 3 and 8
//! threads). The GEMMs are single-threaded `matrixmultiply::sgemm` calls (its own threading
//! stays off); each call allocates its packing buffers inside `matrixmultiply`.
//!
//! **Small batches.** For `B` at most [`Kernels::rank_k_max`] (64 on AVX-512, 32 on AVX2, 8 on
//! the portable tier: the crossovers measured on Zen 4 against `matrixmultiply`'s sgemm),
//! [`weight_grad`], [`sgd_step`] and [`Sgd::step`] use the streaming rank-k kernel, which reads
//! and writes `W` once with no packing; above it, sgemm. Likewise [`linear_forward`] and
//! [`linear_backward_input`] use streaming kernels for `B <= 64` (the forward from 96 classes,
//! below which packing `A` costs more than it saves; `dA` on AVX2 only for `B <= 4`, where it
//! still beats sgemm with 16 registers) on the AVX2 and AVX-512 tiers
//! (`W` read once from its rows, no packing; `A` packed, a few KiB): these form every
//! output element with exactly sgemm's operations (blocks of 256 products, each a chain of
//! fused multiply-adds), so the choice never changes a bit, and a chunk of rows gets the
//! logits of the whole batch. The portable tier (no FMA on a default build) always uses
//! sgemm. The reference (`Scalar`) tier always
//! computes f64 dot products. When `D * 4` bytes is a multiple of a large power of two (as for
//! `D` = 1024, 2048, 4096) and `B > 4`, the rank-k path copies `A` to a padded row stride first
//! (one allocation of about `B * D` floats), so that its rows do not collide in the L1 sets.
//!
//! **Zero sizes and BLAS conventions.** `beta == 0` overwrites the output without reading it
//! (NaN there disappears); `alpha == 0` or `B == 0` gives `dW = beta dW` without reading `delta`
//! or `A` (as BLAS). Any zero dimension is valid: an empty `W` is left alone, an empty batch
//! leaves `W` unchanged in the updates, `D == 0` gives `Z = b` (or 0) in [`linear_forward`],
//! `C == 0` gives `dA = 0` in [`linear_backward_input`].

use std::ops::Range;

use crate::arch::generic::gemm_stream::{pack_nt, StreamKernels, StreamNn, StreamNt};
use crate::arch::generic::linear::{ColSums, Gemm, Rank1, RankK, SgdParams, SgdSlices};
use crate::dispatch::Kernels;
use crate::error::{check_len, Error, Result};
use crate::parallel::{for_each_index, SyncPtr};

/// The layout of a strided row-major matrix (the weight matrix `W` or its gradient): `rows`
/// rows (classes) of `cols` floats (features), row `r` starting at `r * ld`.
///
/// ```
/// use softmax_kernels::MatrixLayout;
/// let w = MatrixLayout::new(10, 784); // dense, ld = 784
/// assert_eq!(w.ld, 784);
/// let padded = MatrixLayout::new(10, 784).with_ld(800);
/// assert_eq!((padded.rows, padded.cols, padded.ld), (10, 784, 800));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatrixLayout {
    /// Rows (classes, `C`).
    pub rows: usize,
    /// Columns (features, `D`).
    pub cols: usize,
    /// Leading dimension: floats from the start of one row to the next (`>= cols`).
    pub ld: usize,
}

impl MatrixLayout {
    /// A dense `[rows, cols]` matrix (`ld = cols`).
    pub const fn new(rows: usize, cols: usize) -> Self {
        MatrixLayout {
            rows,
            cols,
            ld: cols,
        }
    }

    /// The same matrix with leading dimension `ld`.
    pub const fn with_ld(self, ld: usize) -> Self {
        MatrixLayout { ld, ..self }
    }

    /// Checks the layout and that a slice of `len` floats holds it: `ld >= cols`, no overflow,
    /// and `len` is `rows * ld` or `(rows - 1) * ld + cols`.
    pub(crate) fn check(self, arg: &'static str, len: usize) -> Result<()> {
        let MatrixLayout { rows, cols, ld } = self;
        if ld < cols {
            return Err(Error::LeadingDim { arg, ld, cols });
        }
        // Strides are handed to sgemm as isize.
        let full = rows
            .checked_mul(ld)
            .filter(|_| ld <= isize::MAX as usize)
            .ok_or(Error::SizeOverflow { arg })?;
        let trimmed = if rows == 0 { 0 } else { full - ld + cols };
        if len != full && len != trimmed {
            return Err(Error::MatrixLength {
                arg,
                rows,
                cols,
                ld,
                actual: len,
            });
        }
        Ok(())
    }
}

/// Bytes of W per rayon task in the streaming kernels (rank-1, rank-k, SGD element updates).
const STREAM_BLOCK_BYTES: usize = 256 * 1024;

/// A GEMM of at most this many multiply-adds runs as one sgemm call on the calling thread.
const GEMM_SINGLE_FMAS: usize = 1 << 21;

/// A larger GEMM is cut into about one tile per this many multiply-adds (some 100 us of work),
/// up to [`GEMM_MAX_TILES`].
const GEMM_TILE_FMAS: usize = 1 << 23;

/// The most tiles a GEMM is cut into: enough to balance 2, 4 or 8 threads, few enough that
/// the repacking each tile adds stays small.
const GEMM_MAX_TILES: usize = 8;

/// The batch size `B` of `[B, C]` and `[B, D]` matrices held in slices of `len_c` and `len_d`
/// floats (taken from the first non-empty row length; 0 when both are 0).
fn batch_of(
    arg_c: &'static str,
    len_c: usize,
    c: usize,
    arg_d: &'static str,
    len_d: usize,
    d: usize,
) -> Result<usize> {
    let b = if c > 0 {
        if !len_c.is_multiple_of(c) {
            return Err(Error::NotMultiple {
                arg: arg_c,
                len: len_c,
                cols: c,
            });
        }
        len_c / c
    } else if d > 0 {
        if !len_d.is_multiple_of(d) {
            return Err(Error::NotMultiple {
                arg: arg_d,
                len: len_d,
                cols: d,
            });
        }
        len_d / d
    } else {
        0
    };
    let need_c = b.checked_mul(c).ok_or(Error::SizeOverflow { arg: arg_c })?;
    check_len(arg_c, len_c, need_c)?;
    let need_d = b.checked_mul(d).ok_or(Error::SizeOverflow { arg: arg_d })?;
    check_len(arg_d, len_d, need_d)?;
    Ok(b)
}

/// Calls `f` on row blocks of a streaming update of `rows x cols` (about [`STREAM_BLOCK_BYTES`]
/// of W each, a multiple of 8 rows: the kernels' row strips), in parallel unless `work`
/// (multiply-adds) is small.
fn for_each_stream_block<F>(rows: usize, cols: usize, work: usize, f: F)
where
    F: Fn(Range<usize>) + Sync + Send,
{
    let per = (STREAM_BLOCK_BYTES / cols.max(1).saturating_mul(4)).max(8) / 8 * 8;
    let blocks = rows.div_ceil(per);
    for_each_index(blocks, work, |b| f(b * per..rows.min((b + 1) * per)));
}

/// Whether the `k` rows of a matrix with row stride `lda` floats fall into so few L1 sets
/// (32 KiB, 8 ways: addresses 4 KiB apart share a set) that more than 4 of them share one.
fn a_rows_collide(k: usize, lda: usize) -> bool {
    let bytes = lda.saturating_mul(4);
    if bytes == 0 {
        return false;
    }
    // Row offsets modulo 4 KiB are multiples of `g`: 4096 / g distinct sets per column.
    let g = 1usize << bytes.trailing_zeros().clamp(6, 12);
    k.saturating_mul(g) > 4 * 4096
}

/// A row stride of at least `cols` floats that is an odd multiple of 64 bytes.
fn padded_stride(cols: usize) -> usize {
    let lines = cols.div_ceil(16);
    16 * (lines | 1)
}

/// A partition of an `[m, n]` GEMM output into tiles, each computed by one single-threaded
/// sgemm call: one tile on a one-thread pool, else a function of `(m, n, k)` only. Tiling
/// never changes a result: each element of the output is computed by one call over the whole
/// `k`, with the same packed panels and the same micro-kernel order, wherever its tile starts.
#[derive(Clone, Copy, Debug)]
struct Tiles {
    m: usize,
    n: usize,
    mb: usize,
    nb: usize,
}

impl Tiles {
    /// About [`GEMM_MAX_TILES`] tiles (fewer for smaller products), shaped to minimise the
    /// packing that the split adds: each sgemm call packs its own `[k, nt]` block of B and, per
    /// 1024 columns, its `[mt, k]` block of A, so relative to one call the split costs about
    /// `1/mt + 1/nt` packed elements per multiply-add. Tile sides are multiples of 64
    /// (matrixmultiply's row blocking), and on a tie rows are split first.
    fn new(m: usize, n: usize, k: usize) -> Tiles {
        let fmas = m.saturating_mul(n).saturating_mul(k);
        let single = Tiles {
            m,
            n,
            mb: m.max(1),
            nb: n.max(1),
        };
        // One thread: a single call packs each operand once.
        if fmas <= GEMM_SINGLE_FMAS || rayon::current_num_threads() == 1 {
            return single;
        }
        let target = (fmas / GEMM_TILE_FMAS).clamp(2, GEMM_MAX_TILES);
        let side = |len: usize, parts: usize| (len.div_ceil(parts).div_ceil(64) * 64).min(len);
        let mut best = single;
        let mut best_cost = f64::INFINITY;
        for rows in 1..=target {
            let (mb, nb) = (side(m, rows), side(n, target.div_ceil(rows)));
            let t = Tiles { m, n, mb, nb };
            if t.count() < target.min(m.div_ceil(64) * n.div_ceil(64)) {
                continue;
            }
            let cost = 1.0 / mb as f64 + 1.0 / nb as f64;
            if cost < best_cost {
                best = t;
                best_cost = cost;
            }
        }
        best
    }

    fn count(&self) -> usize {
        self.m.div_ceil(self.mb) * self.n.div_ceil(self.nb)
    }

    /// Rows and columns of tile `t < count()`.
    fn tile(&self, t: usize) -> (Range<usize>, Range<usize>) {
        let cols = self.n.div_ceil(self.nb);
        let (i, j) = (t / cols, t % cols);
        (
            i * self.mb..self.m.min((i + 1) * self.mb),
            j * self.nb..self.n.min((j + 1) * self.nb),
        )
    }
}

/// Whether a streaming GEMM of `m x n x k` multiply-adds runs as one call on the calling
/// thread: as the sgemm tiles ([`Tiles::new`]), up to [`GEMM_SINGLE_FMAS`] or on a one-thread
/// pool. (A smaller split woke the second thread for every 64-row chunk of a fused linear
/// cross-entropy with 10 classes, which then ran slower on two threads than on one.)
fn stream_inline(m: usize, n: usize, k: usize) -> bool {
    m.saturating_mul(n).saturating_mul(k) <= GEMM_SINGLE_FMAS || rayon::current_num_threads() == 1
}

/// Classes per task of [`forward_stream`] at least (a multiple of every tier's tile).
const STREAM_NT_TASK_CLASSES: usize = 240;

/// [`Kernels::linear_forward`] on the streaming kernel: `A` packed once, the classes split
/// over rayon (about four ranges per thread; the split never changes a result, see
/// `arch::generic::gemm_stream`).
///
/// # Safety
/// `w` holds `layout`, `a` is `[nb, d]`, `z` is `[nb, c]`, `b` (if any) has `c` floats, and
/// `nb`, `c = layout.rows`, `d = layout.cols` are all positive.
unsafe fn forward_stream(
    st: &StreamKernels,
    a: &[f32],
    w: &[f32],
    layout: MatrixLayout,
    b: Option<&[f32]>,
    z: &mut [f32],
    nb: usize,
) {
    let MatrixLayout {
        rows: c,
        cols: d,
        ld,
    } = layout;
    let pw = st.panel_width(nb);
    let pk = pack_nt(a, d, nb, d, pw);
    let per = if stream_inline(nb, c, d) {
        c
    } else {
        c.div_ceil(4 * rayon::current_num_threads())
            .max(STREAM_NT_TASK_CLASSES)
            .div_ceil(STREAM_NT_TASK_CLASSES)
            * STREAM_NT_TASK_CLASSES
    };
    let (pkp, wp, zp) = (
        SyncPtr(pk.as_ptr() as *mut f32),
        SyncPtr(w.as_ptr() as *mut f32),
        SyncPtr(z.as_mut_ptr()),
    );
    let bp = SyncPtr(b.map_or(std::ptr::null_mut(), |b| b.as_ptr() as *mut f32));
    let nt = st.nt;
    let work = nb.saturating_mul(c).saturating_mul(d);
    for_each_index(c.div_ceil(per), work, move |t| {
        let j0 = t * per;
        let args = StreamNt {
            m: nb,
            k: d,
            n: per.min(c - j0),
            pk: pkp.get().cast_const(),
            pw,
            w: wp.get().cast_const().wrapping_add(j0 * ld),
            ldw: ld,
            bias: if bp.get().is_null() {
                std::ptr::null()
            } else {
                bp.get().cast_const().wrapping_add(j0)
            },
            z: zp.get().wrapping_add(j0),
            ldz: c,
        };
        // SAFETY: `pk` was packed for `nb` rows of `d` with panel width `pw`; classes `j0 ..
        // j0 + n <= c` of W (rows of `d` floats at stride `ld`, checked), of `b` and of the
        // rows of Z (`[nb, c]`); the ranges of distinct tasks are disjoint columns of Z, a
        // unique borrow that overlaps no input. The table proves the CPU features.
        unsafe { nt(&args) }
    });
}

/// [`Kernels::linear_backward_input`] on the streaming kernel: the columns of `dA` split over
/// rayon (whole vectors; one range per thread at most).
///
/// # Safety
/// `w` holds `layout`, `delta` is `[nb, c]`, `da` is `[nb, d]`, and `nb`, `c = layout.rows`,
/// `d = layout.cols` are all positive.
unsafe fn backward_input_stream(
    st: &StreamKernels,
    delta: &[f32],
    w: &[f32],
    layout: MatrixLayout,
    beta: f32,
    da: &mut [f32],
    nb: usize,
) {
    let MatrixLayout {
        rows: c,
        cols: d,
        ld,
    } = layout;
    let work = nb.saturating_mul(c).saturating_mul(d);
    let vecs = d.div_ceil(st.lanes);
    let tasks = if stream_inline(nb, c, d) {
        1
    } else {
        rayon::current_num_threads().min(vecs)
    };
    let per = vecs.div_ceil(tasks) * st.lanes;
    let (gp, wp, ap) = (
        SyncPtr(delta.as_ptr() as *mut f32),
        SyncPtr(w.as_ptr() as *mut f32),
        SyncPtr(da.as_mut_ptr()),
    );
    let nn = st.nn;
    for_each_index(d.div_ceil(per), work, move |t| {
        let c0 = t * per;
        let args = StreamNn {
            m: nb,
            n: c,
            cols: per.min(d - c0),
            g: gp.get().cast_const(),
            ldg: c,
            w: wp.get().cast_const().wrapping_add(c0),
            ldw: ld,
            da: ap.get().wrapping_add(c0),
            ldda: d,
            beta,
        };
        // SAFETY: rows of `delta` (`[nb, c]`), columns `c0 .. c0 + cols <= d` of W's `c` rows
        // (stride `ld`, checked) and of `dA`'s `nb` rows (`[nb, d]`); distinct tasks write
        // disjoint columns of `dA`, a unique borrow that overlaps no input. The table proves
        // the CPU features.
        unsafe { nn(&args) }
    });
}

/// `w[r, ..cols] *= beta` for every row (`beta == 0` writes zeros, `beta == 1` does nothing).
fn scale_rows(w: &mut [f32], layout: MatrixLayout, beta: f32) {
    if beta == 1.0 {
        return;
    }
    for r in 0..layout.rows {
        let row = &mut w[r * layout.ld..r * layout.ld + layout.cols];
        if beta == 0.0 {
            row.fill(0.0);
        } else {
            row.iter_mut().for_each(|v| *v *= beta);
        }
    }
}

impl Kernels {
    /// The largest batch for which [`Kernels::weight_grad`] (and the SGD steps) use the
    /// streaming rank-k kernel instead of sgemm on this tier: 64 on AVX-512, 32 on AVX2, 8 on
    /// the portable tier, `usize::MAX` on the reference tier (which never uses sgemm).
    ///
    /// ```
    /// let k = softmax_kernels::Kernels::for_isa(softmax_kernels::Isa::Scalar).unwrap();
    /// assert_eq!(k.rank_k_max(), usize::MAX);
    /// ```
    pub fn rank_k_max(&self) -> usize {
        self.linear.rank_k_max
    }

    /// Rank-1 update `W += alpha x y^T`: `W[c, j] += (alpha x[c]) y[j]`.
    ///
    /// `w` is `layout` = `[C, D]` with its leading dimension (its slice holds `C * ld` or
    /// `(C - 1) * ld + D` floats; the padding is untouched), as for
    /// [`Kernels::rank_k_update`]; `x` has `C` floats, `y` has `D`. W is streamed once: one
    /// fused multiply-add per element. `alpha == 0` returns at once (as BLAS `sger`).
    ///
    /// # Errors
    /// [`Error::LeadingDim`] if `ld < D`, [`Error::MatrixLength`] if `w` does not hold
    /// `[C, D]` with stride `ld`, [`Error::SizeOverflow`] if `C * ld` overflows,
    /// [`Error::LengthMismatch`] if `x` does not have `C` floats or `y` does not have `D`.
    ///
    /// ```
    /// use softmax_kernels::MatrixLayout;
    /// let k = softmax_kernels::Kernels::best();
    /// let mut w = [1.0f32; 6]; // [2, 3]
    /// k.rank1_update(0.5, &[1.0, 2.0], &[2.0, 4.0, 6.0], &mut w, MatrixLayout::new(2, 3))?;
    /// assert_eq!(w, [2.0, 3.0, 4.0, 3.0, 5.0, 7.0]);
    /// # Ok::<(), softmax_kernels::Error>(())
    /// ```
    pub fn rank1_update(
        &self,
        alpha: f32,
        x: &[f32],
        y: &[f32],
        w: &mut [f32],
        layout: MatrixLayout,
    ) -> Result<()> {
        layout.check("w", w.len())?;
        check_len("x", x.len(), layout.rows)?;
        check_len("y", y.len(), layout.cols)?;
        let (c, d, ld) = (layout.rows, layout.cols, layout.ld);
        if alpha == 0.0 || c == 0 || d == 0 {
            return Ok(());
        }
        let f = self.linear.rank1;
        let (xp, yp) = (
            SyncPtr(x.as_ptr() as *mut f32),
            SyncPtr(y.as_ptr() as *mut f32),
        );
        let wp = SyncPtr(w.as_mut_ptr());
        for_each_stream_block(c, d, c.saturating_mul(d), move |r| {
            let p = Rank1 {
                alpha,
                x: xp.get().cast_const().wrapping_add(r.start),
                y: yp.get().cast_const(),
                w: wp.get().wrapping_add(r.start * ld),
                ld,
                rows: r.len(),
                cols: d,
            };
            // SAFETY: `w` holds rows `0..c` of `d` floats at stride `ld` (checked above), `x`
            // has `c` floats and `y` has `d`; the rows `r` lie inside `0..c` and blocks are
            // disjoint; `w` is a unique borrow, so it overlaps neither `x` nor `y`. The table's
            // existence proves the CPU features.
            unsafe { f(&p) }
        });
        Ok(())
    }

    /// Rank-k update `W += alpha delta^T A`: `W[c, :] += alpha sum_i delta[i, c] A[i, :]`,
    /// streaming `W` once while the `k` rows of `A` stay in L1 (for small `k`: above
    /// [`Kernels::rank_k_max`], [`Kernels::weight_grad`] with `beta = 1` is faster).
    ///
    /// `delta` is `[k, C]`, `a` is `[k, D]`, `w` is `layout` = `[C, D]` with its leading
    /// dimension; `k` is taken from the lengths.
    ///
    /// # Errors
    /// As [`Kernels::weight_grad`].
    ///
    /// ```
    /// use softmax_kernels::{Kernels, MatrixLayout};
    /// let k = Kernels::best();
    /// let mut w = [0.0f32; 4]; // [2, 2]
    /// // two samples: delta rows [1, 0] and [0, 1], activations [1, 2] and [3, 4]
    /// k.rank_k_update(1.0, &[1.0, 0.0, 0.0, 1.0], &[1.0, 2.0, 3.0, 4.0], &mut w,
    ///                 MatrixLayout::new(2, 2)).unwrap();
    /// assert_eq!(w, [1.0, 2.0, 3.0, 4.0]);
    /// ```
    pub fn rank_k_update(
        &self,
        alpha: f32,
        delta: &[f32],
        a: &[f32],
        w: &mut [f32],
        layout: MatrixLayout,
    ) -> Result<()> {
        layout.check("w", w.len())?;
        let b = batch_of("delta", delta.len(), layout.rows, "a", a.len(), layout.cols)?;
        if alpha == 0.0 || b == 0 {
            return Ok(());
        }
        self.rank_k_checked(alpha, delta, a, b, 1.0, w, layout);
        Ok(())
    }

    /// The streaming rank-k kernel over all rows, after the checks.
    #[allow(clippy::too_many_arguments)]
    fn rank_k_checked(
        &self,
        alpha: f32,
        delta: &[f32],
        a: &[f32],
        k: usize,
        beta: f32,
        w: &mut [f32],
        layout: MatrixLayout,
    ) {
        let MatrixLayout { rows, cols, ld } = layout;
        if rows == 0 || cols == 0 {
            return;
        }
        debug_assert!(delta.len() == k * rows && a.len() == k * cols);
        // Rows of A whose stride is a multiple of a large power of two share a few L1 sets;
        // past the L1's ways they evict each other on every tile. Copy them to a stride that
        // spreads them (one small allocation, `k * D` floats, against `C * D * k` multiply-adds).
        let padded;
        let (a, lda) = if a_rows_collide(k, cols) {
            let pld = padded_stride(cols);
            let mut buf = Vec::with_capacity(k * pld);
            for row in a.chunks_exact(cols) {
                buf.extend_from_slice(row);
                buf.resize(buf.len() + pld - cols, 0.0);
            }
            padded = buf;
            (&padded[..], pld)
        } else {
            (a, cols)
        };
        let f = self.linear.rank_k;
        let (dp, ap, wp) = (
            SyncPtr(delta.as_ptr() as *mut f32),
            SyncPtr(a.as_ptr() as *mut f32),
            SyncPtr(w.as_mut_ptr()),
        );
        let work = rows.saturating_mul(cols).saturating_mul(k.max(1));
        for_each_stream_block(rows, cols, work, move |r| {
            let p = RankK {
                alpha,
                beta,
                k,
                delta: dp.get().cast_const().wrapping_add(r.start),
                ldd: rows,
                a: ap.get().cast_const(),
                lda,
                w: wp.get().wrapping_add(r.start * ld),
                ld,
                rows: r.len(),
                cols,
            };
            // SAFETY: the caller checked `w` against `layout` and that `delta` is `[k, rows]`
            // and `a` is `[k, cols]` (or its copy `[k, lda]`, `lda >= cols`); the rows `r` lie
            // inside `0..rows`, so row `i` of `delta`
            // is read at columns `r`, and blocks are disjoint; `w` is a unique borrow. The
            // table's existence proves the CPU features.
            unsafe { f(&p) }
        });
    }

    /// Runs one GEMM per tile of `tiles` on the tier's GEMM kernel; `g(rows, cols)` builds
    /// the arguments of a tile.
    ///
    /// # Safety
    /// Every `Gemm` that `g` returns must satisfy the GEMM kernel's contract, and the outputs
    /// of distinct tiles must not overlap.
    unsafe fn gemm_tiles<G>(&self, tiles: Tiles, k: usize, g: G)
    where
        G: Fn(Range<usize>, Range<usize>) -> Gemm + Sync + Send,
    {
        let f = self.linear.gemm;
        let work = tiles.m.saturating_mul(tiles.n).saturating_mul(k);
        for_each_index(tiles.count(), work, |t| {
            let (r, c) = tiles.tile(t);
            let args = g(r, c);
            // SAFETY: the caller's contract.
            unsafe { f(&args) }
        });
    }

    /// Weight gradient `dW = beta dW + alpha delta^T A`: `dW[c, j] = beta dW[c, j] + alpha
    /// sum_b delta[b, c] A[b, j]`.
    ///
    /// `delta` is `[B, C]`, `a` is `[B, D]`, `dw` is `layout` = `[C, D]` with its leading
    /// dimension (the padding is untouched); `B` is taken from the lengths. For `B` up to
    /// [`Kernels::rank_k_max`] this is the streaming rank-k kernel; above, one single-threaded
    /// `matrixmultiply::sgemm` per block of rows of `dW`, spread over rayon (`delta^T` is read
    /// through strides, never transposed in memory). `beta == 0` overwrites `dW` (NaN there
    /// disappears); `alpha == 0` or `B == 0` give `dW = beta dW`.
    ///
    /// # Errors
    /// [`Error::LeadingDim`], [`Error::MatrixLength`] for `dw`; [`Error::NotMultiple`] if
    /// `delta.len()` is not a multiple of `C`; [`Error::LengthMismatch`] if `a` is not
    /// `[B, D]`; [`Error::SizeOverflow`].
    ///
    /// ```
    /// use softmax_kernels::{Kernels, MatrixLayout};
    /// let k = Kernels::best();
    /// let delta = [1.0f32, -1.0, /* sample 2 */ 0.5, 0.5]; // [B = 2, C = 2]
    /// let a = [1.0f32, 2.0, 3.0, /* sample 2 */ 2.0, 2.0, 2.0]; // [B = 2, D = 3]
    /// let mut dw = [f32::NAN; 6]; // beta = 0 overwrites
    /// k.weight_grad(1.0, &delta, &a, 0.0, &mut dw, MatrixLayout::new(2, 3)).unwrap();
    /// assert_eq!(dw, [2.0, 3.0, 4.0, 0.0, -1.0, -2.0]);
    /// ```
    pub fn weight_grad(
        &self,
        alpha: f32,
        delta: &[f32],
        a: &[f32],
        beta: f32,
        dw: &mut [f32],
        layout: MatrixLayout,
    ) -> Result<()> {
        layout.check("dw", dw.len())?;
        let b = batch_of("delta", delta.len(), layout.rows, "a", a.len(), layout.cols)?;
        self.weight_grad_checked(alpha, delta, a, b, beta, dw, layout);
        Ok(())
    }

    /// [`Kernels::weight_grad`] after the checks.
    #[allow(clippy::too_many_arguments)]
    fn weight_grad_checked(
        &self,
        alpha: f32,
        delta: &[f32],
        a: &[f32],
        b: usize,
        beta: f32,
        dw: &mut [f32],
        layout: MatrixLayout,
    ) {
        let MatrixLayout { rows, cols, ld } = layout;
        if rows == 0 || cols == 0 {
            return;
        }
        if alpha == 0.0 || b == 0 {
            scale_rows(dw, layout, beta);
            return;
        }
        if b <= self.linear.rank_k_max {
            self.rank_k_checked(alpha, delta, a, b, beta, dw, layout);
            return;
        }
        let (dp, ap, wp) = (
            SyncPtr(delta.as_ptr() as *mut f32),
            SyncPtr(a.as_ptr() as *mut f32),
            SyncPtr(dw.as_mut_ptr()),
        );
        let tiles = Tiles::new(rows, cols, b);
        // SAFETY: `dw` was checked against `layout`, `delta` is `[b, rows]` and `a` is
        // `[b, cols]`; a tile (rows `r`, columns `c`) reads `delta^T[r, 0..b]` (element
        // `(i, l)` at `delta[l * rows + i]`, i.e. rsa = 1, csa = rows), `a[0..b, c]` and writes
        // `dw[r, c]` (rsc = ld >= cols, csc = 1: distinct elements); tiles are disjoint and
        // `dw` is a unique borrow. All strides are at most `rows * ld` or `b * cols`, which fit
        // isize (they index existing slices).
        unsafe {
            self.gemm_tiles(tiles, b, move |r, c| Gemm {
                m: r.len(),
                k: b,
                n: c.len(),
                alpha,
                a: dp.get().cast_const().wrapping_add(r.start),
                rsa: 1,
                csa: rows as isize,
                b: ap.get().cast_const().wrapping_add(c.start),
                rsb: cols as isize,
                csb: 1,
                beta,
                c: wp.get().wrapping_add(r.start * ld + c.start),
                rsc: ld as isize,
                csc: 1,
            })
        };
    }

    /// Bias gradient `db = beta db + alpha sum_rows delta`: `db[c] = beta db[c] + alpha sum_b
    /// delta[b, c]`.
    ///
    /// `delta` is `[B, C]` with `C = db.len()`. Each column is summed in f32 over fixed blocks
    /// of 32 rows and in f64 across blocks, and the result rounded once; work is split across
    /// threads by columns only, so the result is the same for any number of threads.
    /// `beta == 0` overwrites `db`; `B == 0` gives `db = beta db`.
    ///
    /// # Errors
    /// [`Error::NotMultiple`] if `delta.len()` is not a multiple of `C`;
    /// [`Error::LengthMismatch`] if `C == 0` and `delta` is not empty.
    ///
    /// ```
    /// let k = softmax_kernels::Kernels::best();
    /// let mut db = [10.0f32, 10.0];
    /// k.bias_grad(0.5, &[1.0, 2.0, 3.0, 4.0], 1.0, &mut db).unwrap();
    /// assert_eq!(db, [12.0, 13.0]);
    /// ```
    pub fn bias_grad(&self, alpha: f32, delta: &[f32], beta: f32, db: &mut [f32]) -> Result<()> {
        let c = db.len();
        let b = if c == 0 {
            check_len("delta", delta.len(), 0)?;
            0
        } else if !delta.len().is_multiple_of(c) {
            return Err(Error::NotMultiple {
                arg: "delta",
                len: delta.len(),
                cols: c,
            });
        } else {
            delta.len() / c
        };
        self.bias_grad_checked(alpha, delta, b, beta, db);
        Ok(())
    }

    /// [`Kernels::bias_grad`] after the checks.
    fn bias_grad_checked(&self, alpha: f32, delta: &[f32], b: usize, beta: f32, db: &mut [f32]) {
        let c = db.len();
        if c == 0 {
            return;
        }
        if alpha == 0.0 || b == 0 {
            scale_rows(db, MatrixLayout::new(1, c), beta);
            return;
        }
        debug_assert_eq!(delta.len(), b * c);
        // Column blocks of 1024 (a multiple of every chunk width), so that a task sums about
        // `b * 4 KiB` of `delta`.
        const COLS_PER_TASK: usize = 1024;
        let f = self.linear.col_sums;
        let (dp, op) = (
            SyncPtr(delta.as_ptr() as *mut f32),
            SyncPtr(db.as_mut_ptr()),
        );
        for_each_index(c.div_ceil(COLS_PER_TASK), b.saturating_mul(c), move |t| {
            let j = t * COLS_PER_TASK;
            let p = ColSums {
                alpha,
                beta,
                x: dp.get().cast_const().wrapping_add(j),
                ldx: c,
                rows: b,
                cols: COLS_PER_TASK.min(c - j),
                out: op.get().wrapping_add(j),
            };
            // SAFETY: `delta` is `[b, c]` and `db` has `c` floats (checked by the caller);
            // the columns `j .. j + p.cols` lie inside `0..c` and blocks are disjoint; `db` is
            // a unique borrow. The table's existence proves the CPU features.
            unsafe { f(&p) }
        });
    }

    /// Plain SGD on the output layer, folded into one GEMM:
    /// `W -= (lr / B) delta^T A` (the [`Kernels::weight_grad`] product, sgemm or the streaming
    /// rank-k kernel, with `alpha = -lr / B` and `beta = 1` directly on `W`: no gradient
    /// buffer), and `bias -= (lr / B) sum_rows delta` when a bias is given.
    ///
    /// `delta` is the per-sample error (`p - y` for softmax cross-entropy), `[B, C]`; the step
    /// follows the gradient of the batch-mean loss. (If your `delta` already carries the `1/B`
    /// of a mean-reduced loss, use [`Kernels::weight_grad`] with `alpha = -lr`, `beta = 1`.)
    /// For momentum, weight decay or Nesterov, use [`Sgd`]. An empty batch leaves `W` as is.
    ///
    /// # Errors
    /// As [`Kernels::weight_grad`] (for `w`); [`Error::LengthMismatch`] if the bias does not
    /// have `C` floats; [`Error::InvalidOption`] if `lr` is negative or not finite.
    ///
    /// ```
    /// use softmax_kernels::{Kernels, MatrixLayout};
    /// let k = Kernels::best();
    /// let mut w = [1.0f32, 1.0]; // [C = 1, D = 2]
    /// let mut b = [0.0f32];
    /// // B = 2 samples with error 1 and 3: mean gradient 2 * a
    /// k.sgd_step(0.5, &[1.0, 3.0], &[1.0, 2.0, 1.0, 2.0], &mut w, MatrixLayout::new(1, 2),
    ///            Some(&mut b)).unwrap();
    /// assert_eq!(w, [0.0, -1.0]);
    /// assert_eq!(b, [-1.0]);
    /// ```
    pub fn sgd_step(
        &self,
        lr: f32,
        delta: &[f32],
        a: &[f32],
        w: &mut [f32],
        layout: MatrixLayout,
        bias: Option<&mut [f32]>,
    ) -> Result<()> {
        check_option("lr", lr, lr >= 0.0, "a finite number >= 0")?;
        layout.check("w", w.len())?;
        let b = batch_of("delta", delta.len(), layout.rows, "a", a.len(), layout.cols)?;
        if let Some(bias) = bias.as_deref() {
            check_len("bias", bias.len(), layout.rows)?;
        }
        if b == 0 {
            return Ok(());
        }
        let alpha = -(lr / b as f32);
        self.weight_grad_checked(alpha, delta, a, b, 1.0, w, layout);
        if let Some(bias) = bias {
            self.bias_grad_checked(alpha, delta, b, 1.0, bias);
        }
        Ok(())
    }

    /// Applies the SGD element update to every row of `w` (`layout`), with the dense `[C, D]`
    /// gradient `g` and, when momentum is on, the dense velocity `buf`.
    fn sgd_rows(
        &self,
        w: &mut [f32],
        layout: MatrixLayout,
        g: &[f32],
        buf: Option<&mut [f32]>,
        q: &SgdParams,
    ) {
        let MatrixLayout { rows, cols, ld } = layout;
        if rows == 0 || cols == 0 {
            return;
        }
        debug_assert_eq!(g.len(), rows * cols);
        debug_assert!(q.momentum == 0.0 || buf.as_ref().is_some_and(|b| b.len() == rows * cols));
        let f = self.linear.sgd_update;
        let (wp, gp) = (SyncPtr(w.as_mut_ptr()), SyncPtr(g.as_ptr() as *mut f32));
        let bp = SyncPtr(buf.map_or(std::ptr::null_mut(), |b| b.as_mut_ptr()));
        let q = *q;
        for_each_stream_block(rows, cols, rows.saturating_mul(cols), move |r| {
            for row in r {
                let x = SgdSlices {
                    w: wp.get().wrapping_add(row * ld),
                    g: gp.get().cast_const().wrapping_add(row * cols),
                    buf: if bp.get().is_null() {
                        std::ptr::null_mut()
                    } else {
                        bp.get().wrapping_add(row * cols)
                    },
                    n: cols,
                };
                // SAFETY: `w` holds `rows` rows of `cols` floats at stride `ld`, `g` (and
                // `buf` when momentum is on) `rows * cols` dense floats (the callers' checks);
                // `row < rows`; rows of distinct blocks are disjoint; `w` and `buf` are unique
                // borrows. The table's existence proves the CPU features.
                unsafe { f(&x, &q) }
            }
        });
    }

    /// Linear forward `Z = A W^T + b`: `z[n, c] = sum_j a[n, j] W[c, j] + b[c]`.
    ///
    /// `a` is `[B, D]`, `w` is `layout` = `[C, D]` with its leading dimension, `b` (optional)
    /// has `C` floats, `z` is `[B, C]` and is overwritten. One single-threaded sgemm per tile
    /// of `Z` (rows of `Z` first, columns too when the batch is small), spread over rayon; for
    /// `B <= 64` and `C >= 96` on the AVX2 and AVX-512 tiers the streaming kernel over ranges
    /// of classes instead (same bits, see the module docs). Deterministic for any number of
    /// threads.
    ///
    /// # Errors
    /// [`Error::LeadingDim`], [`Error::MatrixLength`] for `w`; [`Error::NotMultiple`] if
    /// `a.len()` is not a multiple of `D`; [`Error::LengthMismatch`] for `z` and `b`;
    /// [`Error::SizeOverflow`].
    ///
    /// ```
    /// use softmax_kernels::{Kernels, MatrixLayout};
    /// let k = Kernels::best();
    /// let w = [1.0f32, 0.0, /* class 2 */ 1.0, 1.0]; // [C = 2, D = 2]
    /// let mut z = [0.0f32; 2];
    /// k.linear_forward(&[3.0, 4.0], &w, MatrixLayout::new(2, 2), Some(&[0.5, -0.5]), &mut z)
    ///     .unwrap();
    /// assert_eq!(z, [3.5, 6.5]);
    /// ```
    pub fn linear_forward(
        &self,
        a: &[f32],
        w: &[f32],
        layout: MatrixLayout,
        b: Option<&[f32]>,
        z: &mut [f32],
    ) -> Result<()> {
        layout.check("w", w.len())?;
        let MatrixLayout {
            rows: c,
            cols: d,
            ld,
        } = layout;
        let nb = batch_of("a", a.len(), d, "z", z.len(), c)?;
        if let Some(b) = b {
            check_len("b", b.len(), c)?;
        }
        if nb == 0 || c == 0 {
            return Ok(());
        }
        let fill = |z: &mut [f32]| {
            for row in z.chunks_exact_mut(c) {
                match b {
                    Some(b) => row.copy_from_slice(b),
                    None => row.fill(0.0),
                }
            }
        };
        if d == 0 {
            fill(z);
            return Ok(());
        }
        if let Some(st) = self.linear.stream.filter(|st| st.serves_nt(nb, c)) {
            // SAFETY: `w` was checked against `layout`, `a` is `[nb, d]`, `z` is `[nb, c]`,
            // `b` has `c` floats; `nb, c, d > 0`.
            unsafe { forward_stream(st, a, w, layout, b, z, nb) };
            return Ok(());
        }
        let tiles = Tiles::new(nb, c, d);
        let (ap, wp) = (
            SyncPtr(a.as_ptr() as *mut f32),
            SyncPtr(w.as_ptr() as *mut f32),
        );
        let zp = SyncPtr(z.as_mut_ptr());
        let bp = b.map(|b| SyncPtr(b.as_ptr() as *mut f32));
        let tile = move |r: Range<usize>, cc: Range<usize>| {
            let zt = zp.get().wrapping_add(r.start * c + cc.start);
            if let Some(bp) = bp {
                for i in 0..r.len() {
                    // SAFETY: row `r.start + i` of Z and columns `cc` lie inside `z` (`[nb, c]`,
                    // checked), `cc` inside the `c` floats of `b` (checked); the tile is this
                    // task's alone and `z` is a unique borrow, so nothing else touches it.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            bp.get().cast_const().add(cc.start),
                            zt.add(i * c),
                            cc.len(),
                        )
                    };
                }
            }
            Gemm {
                m: r.len(),
                k: d,
                n: cc.len(),
                alpha: 1.0,
                a: ap.get().cast_const().wrapping_add(r.start * d),
                rsa: d as isize,
                csa: 1,
                b: wp.get().cast_const().wrapping_add(cc.start * ld),
                rsb: 1,
                csb: ld as isize,
                beta: if bp.is_some() { 1.0 } else { 0.0 },
                c: zt,
                rsc: c as isize,
                csc: 1,
            }
        };
        // SAFETY: `w` was checked against `layout`, `a` is `[nb, d]`, `z` is `[nb, c]`; a tile
        // (rows `r` of Z, columns `cc`) reads `a[r, 0..d]` (rsa = d, csa = 1), `W^T[0..d, cc]`
        // (element `(l, j)` at `w[j * ld + l]`: rsb = 1, csb = ld) and writes `z[r, cc]`
        // (rsc = c, csc = 1: distinct elements); tiles are disjoint, `z` is a unique borrow.
        unsafe { self.gemm_tiles(tiles, d, tile) };
        Ok(())
    }

    /// Linear backward to the input: `dA = delta W`, `da[n, j] = sum_c delta[n, c] W[c, j]`.
    ///
    /// `delta` is `[B, C]`, `w` is `layout` = `[C, D]` with its leading dimension, `da` is
    /// `[B, D]` and is overwritten. sgemm tiles as in [`Kernels::linear_forward`], or for
    /// `B <= 64` on the AVX-512 tier (`B <= 4` on AVX2) the streaming kernel over ranges of
    /// columns.
    ///
    /// # Errors
    /// As [`Kernels::linear_forward`] (`delta` for `a`, `da` for `z`).
    ///
    /// ```
    /// use softmax_kernels::{Kernels, MatrixLayout};
    /// let k = Kernels::best();
    /// let w = [1.0f32, 2.0, /* class 2 */ 3.0, 4.0]; // [C = 2, D = 2]
    /// let mut da = [0.0f32; 2];
    /// k.linear_backward_input(&[1.0, -1.0], &w, MatrixLayout::new(2, 2), &mut da).unwrap();
    /// assert_eq!(da, [-2.0, -2.0]);
    /// ```
    pub fn linear_backward_input(
        &self,
        delta: &[f32],
        w: &[f32],
        layout: MatrixLayout,
        da: &mut [f32],
    ) -> Result<()> {
        self.linear_backward_input_beta(delta, w, layout, 0.0, da)
    }

    /// `dA = beta dA + delta W` ([`Kernels::linear_backward_input`] with an accumulation
    /// factor; `beta == 0` overwrites without reading).
    pub(crate) fn linear_backward_input_beta(
        &self,
        delta: &[f32],
        w: &[f32],
        layout: MatrixLayout,
        beta: f32,
        da: &mut [f32],
    ) -> Result<()> {
        layout.check("w", w.len())?;
        let MatrixLayout {
            rows: c,
            cols: d,
            ld,
        } = layout;
        let nb = batch_of("delta", delta.len(), c, "da", da.len(), d)?;
        if nb == 0 || d == 0 {
            return Ok(());
        }
        if c == 0 {
            scale_rows(da, MatrixLayout::new(1, da.len()), beta);
            return Ok(());
        }
        if let Some(st) = self.linear.stream.filter(|st| st.serves_nn(nb)) {
            // SAFETY: `w` was checked against `layout`, `delta` is `[nb, c]`, `da` is
            // `[nb, d]`; `nb, c, d > 0`.
            unsafe { backward_input_stream(st, delta, w, layout, beta, da, nb) };
            return Ok(());
        }
        let tiles = Tiles::new(nb, d, c);
        let (dp, wp, ap) = (
            SyncPtr(delta.as_ptr() as *mut f32),
            SyncPtr(w.as_ptr() as *mut f32),
            SyncPtr(da.as_mut_ptr()),
        );
        // SAFETY: `w` was checked against `layout`, `delta` is `[nb, c]`, `da` is `[nb, d]`;
        // a tile (rows `r` of dA, columns `cc`) reads `delta[r, 0..c]` (rsa = c, csa = 1),
        // `w[0..c, cc]` (rsb = ld, csb = 1) and writes `da[r, cc]` (rsc = d, csc = 1: distinct
        // elements); tiles are disjoint and `da` is a unique borrow.
        unsafe {
            self.gemm_tiles(tiles, c, move |r, cc| Gemm {
                m: r.len(),
                k: c,
                n: cc.len(),
                alpha: 1.0,
                a: dp.get().cast_const().wrapping_add(r.start * c),
                rsa: c as isize,
                csa: 1,
                b: wp.get().cast_const().wrapping_add(cc.start),
                rsb: ld as isize,
                csb: 1,
                beta,
                c: ap.get().wrapping_add(r.start * d + cc.start),
                rsc: d as isize,
                csc: 1,
            })
        };
        Ok(())
    }

    /// An [`Sgd`] optimizer that runs on this tier (see [`Sgd::new`]).
    ///
    /// # Errors
    /// As [`Sgd::new`].
    ///
    /// ```
    /// use softmax_kernels::{Isa, Kernels, SgdOptions};
    /// let k = Kernels::for_isa(Isa::Scalar).unwrap();
    /// let opt = k.sgd(SgdOptions::new(0.1).momentum(0.9)).unwrap();
    /// assert_eq!(opt.options().momentum, 0.9);
    /// ```
    pub fn sgd(&'static self, opts: SgdOptions) -> Result<Sgd> {
        let mut s = Sgd::new(opts)?;
        s.kernels = Some(self);
        Ok(s)
    }
}

/// Checks an optimizer option: finite and `ok`.
fn check_option(name: &'static str, v: f32, ok: bool, expected: &'static str) -> Result<()> {
    if v.is_finite() && ok {
        Ok(())
    } else {
        Err(Error::InvalidOption {
            name,
            value: v.to_string(),
            expected,
        })
    }
}

/// Options of [`Sgd`], exactly those of PyTorch's `torch.optim.SGD` (without `maximize`).
///
/// ```
/// use softmax_kernels::SgdOptions;
/// let o = SgdOptions::new(0.1).momentum(0.9).nesterov(true).weight_decay(5e-4);
/// assert!(o.validate().is_ok());
/// assert!(SgdOptions::new(0.1).nesterov(true).validate().is_err()); // needs momentum
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct SgdOptions {
    /// Learning rate (`>= 0`).
    pub lr: f32,
    /// Momentum factor (`>= 0`; 0 turns the velocity buffer off). Default 0.
    pub momentum: f32,
    /// Dampening of the gradient's share in the velocity (`buf = momentum buf + (1 -
    /// dampening) g`, not applied on the first step). Default 0.
    pub dampening: f32,
    /// L2 penalty (`>= 0`): `g += weight_decay * w`. Default 0.
    pub weight_decay: f32,
    /// Nesterov momentum (needs `momentum > 0` and `dampening == 0`). Default false.
    pub nesterov: bool,
}

impl Default for SgdOptions {
    /// PyTorch's defaults: `lr = 1e-3`, everything else off.
    fn default() -> Self {
        SgdOptions::new(1e-3)
    }
}

impl SgdOptions {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f32) -> Self {
        SgdOptions {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
    /// Sets [`SgdOptions::lr`].
    pub fn lr(mut self, lr: f32) -> Self {
        self.lr = lr;
        self
    }
    /// Sets [`SgdOptions::momentum`].
    pub fn momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }
    /// Sets [`SgdOptions::dampening`].
    pub fn dampening(mut self, dampening: f32) -> Self {
        self.dampening = dampening;
        self
    }
    /// Sets [`SgdOptions::weight_decay`].
    pub fn weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    /// Sets [`SgdOptions::nesterov`].
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// Checks the options as PyTorch does: `lr`, `momentum`, `weight_decay` finite and `>= 0`,
    /// `dampening` finite, Nesterov only with `momentum > 0` and `dampening == 0`.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the first bad option.
    pub fn validate(&self) -> Result<()> {
        check_option("lr", self.lr, self.lr >= 0.0, "a finite number >= 0")?;
        check_option(
            "momentum",
            self.momentum,
            self.momentum >= 0.0,
            "a finite number >= 0",
        )?;
        check_option("dampening", self.dampening, true, "a finite number")?;
        check_option(
            "weight_decay",
            self.weight_decay,
            self.weight_decay >= 0.0,
            "a finite number >= 0",
        )?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::InvalidOption {
                name: "nesterov",
                value: "true".to_string(),
                expected: "used with momentum > 0 and dampening = 0 (as PyTorch)",
            });
        }
        Ok(())
    }

    fn params(&self, first: bool) -> SgdParams {
        SgdParams {
            lr: self.lr,
            momentum: self.momentum,
            dampening: self.dampening,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
            first,
        }
    }
}

/// Stochastic gradient descent on the output layer (`W`, optional bias), exactly as PyTorch's
/// `torch.optim.SGD` defines it, per element:
///
/// ```text
/// g = grad + weight_decay * w                                 (if weight_decay != 0)
/// if momentum != 0:
///     buf = g                                  on the first step
///     buf = momentum * buf + (1 - dampening) * g   afterwards
///     g = g + momentum * buf   if nesterov,   else   g = buf
/// w = w - lr * g
/// ```
///
/// where `grad` is the gradient of the batch-mean loss, `(1/B) delta^T A` for `W` and
/// `(1/B) sum_rows delta` for the bias ([`Sgd::step`]), or a gradient you computed
/// ([`Sgd::apply_grad`], [`Sgd::apply_bias_grad`]).
///
/// **Buffers.** Without momentum, [`Sgd::step`] needs no buffer: the whole update is one GEMM
/// on `W` (`W = (1 - lr weight_decay) W - (lr / B) delta^T A`, as [`sgd_step`]). With momentum,
/// the optimizer holds a `[C, D]` gradient buffer and a `[C, D]` velocity buffer (and `C`
/// floats of each for the bias); they are allocated on the first step and reused afterwards
/// (no allocation per step). The state belongs to one parameter shape:
/// a `W` of another shape is an error until [`Sgd::reset`]. The bias state starts on the first
/// step that passes a bias.
///
/// ```
/// use softmax_kernels::{MatrixLayout, Sgd, SgdOptions};
/// let mut opt = Sgd::new(SgdOptions::new(0.1).momentum(0.9))?;
/// let layout = MatrixLayout::new(1, 1);
/// let mut w = [1.0f32];
/// opt.apply_grad(&mut w, layout, &[1.0])?; // buf = 1, w = 1 - 0.1
/// opt.apply_grad(&mut w, layout, &[1.0])?; // buf = 0.9 + 1, w = 0.9 - 0.19
/// assert!((w[0] - 0.71).abs() < 1e-6);
/// # Ok::<(), softmax_kernels::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Sgd {
    opts: SgdOptions,
    kernels: Option<&'static Kernels>,
    grad: Vec<f32>,
    velocity: Vec<f32>,
    bias_grad: Vec<f32>,
    bias_velocity: Vec<f32>,
    /// `[C, D]` of the parameter the state belongs to.
    shape: Option<(usize, usize)>,
    /// `C` of the bias the state belongs to.
    bias_len: Option<usize>,
    w_started: bool,
    bias_started: bool,
    steps: u64,
}

impl Sgd {
    /// A new optimizer (no state yet) that runs on the active tier ([`Kernels::active`]);
    /// [`Kernels::sgd`] makes one for a chosen tier.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] as [`SgdOptions::validate`].
    pub fn new(opts: SgdOptions) -> Result<Sgd> {
        opts.validate()?;
        Ok(Sgd {
            opts,
            kernels: None,
            grad: Vec::new(),
            velocity: Vec::new(),
            bias_grad: Vec::new(),
            bias_velocity: Vec::new(),
            shape: None,
            bias_len: None,
            w_started: false,
            bias_started: false,
            steps: 0,
        })
    }

    /// The options.
    pub fn options(&self) -> &SgdOptions {
        &self.opts
    }

    /// Changes the learning rate (for schedules); the state is kept.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] if `lr` is negative or not finite.
    pub fn set_lr(&mut self, lr: f32) -> Result<()> {
        Self::check_lr(lr)?;
        self.opts.lr = lr;
        Ok(())
    }

    /// [`Sgd::set_lr`]'s check, without the change.
    pub(crate) fn check_lr(lr: f32) -> Result<()> {
        check_option("lr", lr, lr >= 0.0, "a finite number >= 0")
    }

    /// Steps taken since creation or the last [`Sgd::reset`].
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The velocity (momentum buffer) of `W`, dense `[C, D]`, once a momentum step has run.
    pub fn velocity(&self) -> Option<&[f32]> {
        self.w_started.then_some(&self.velocity[..])
    }

    /// The velocity of the bias, once a momentum step with a bias has run.
    pub fn bias_velocity(&self) -> Option<&[f32]> {
        self.bias_started.then_some(&self.bias_velocity[..])
    }

    /// Forgets the state (velocities, shape, step count); the buffers' memory is kept.
    pub fn reset(&mut self) {
        self.shape = None;
        self.bias_len = None;
        self.w_started = false;
        self.bias_started = false;
        self.steps = 0;
    }

    fn kernels(&self) -> Result<&'static Kernels> {
        match self.kernels {
            Some(k) => Ok(k),
            None => Kernels::active(),
        }
    }

    fn check_shape(&mut self, layout: MatrixLayout) -> Result<()> {
        let actual = (layout.rows, layout.cols);
        match self.shape {
            Some(expected) if expected != actual => Err(Error::StateShape {
                arg: "w",
                expected,
                actual,
            }),
            _ => Ok(()),
        }
    }

    fn check_bias_len(&mut self, len: usize) -> Result<()> {
        match self.bias_len {
            Some(expected) if expected != len => Err(Error::StateShape {
                arg: "bias",
                expected: (1, expected),
                actual: (1, len),
            }),
            _ => Ok(()),
        }
    }

    /// Checks that the state (if any) belongs to `W` of `layout` and a bias of `bias` floats.
    pub(crate) fn check_state(&mut self, layout: MatrixLayout, bias: Option<usize>) -> Result<()> {
        self.check_shape(layout)?;
        if let Some(len) = bias {
            self.check_bias_len(len)?;
        }
        Ok(())
    }

    /// Lends out the gradient buffers, sized `n` (for `W`) and `nb` (for the bias), so a
    /// fused kernel can write the gradients there; [`Sgd::put_grad_buffers`] returns them.
    pub(crate) fn take_grad_buffers(
        &mut self,
        n: usize,
        nb: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut g = std::mem::take(&mut self.grad);
        let mut b = std::mem::take(&mut self.bias_grad);
        let grow = |v: &mut Vec<f32>, n: usize| -> Result<()> {
            if v.len() < n {
                v.try_reserve_exact(n - v.len())
                    .map_err(|_| Error::SizeOverflow {
                        arg: "gradient buffer",
                    })?;
            }
            v.resize(n, 0.0);
            Ok(())
        };
        let res = grow(&mut g, n).and_then(|_| grow(&mut b, nb));
        if let Err(e) = res {
            self.put_grad_buffers(g, b);
            return Err(e);
        }
        Ok((g, b))
    }

    /// Takes back the buffers of [`Sgd::take_grad_buffers`].
    pub(crate) fn put_grad_buffers(&mut self, g: Vec<f32>, b: Vec<f32>) {
        self.grad = g;
        self.bias_grad = b;
    }

    /// One step on the output layer from its batch error: `grad = (1/B) delta^T A` for `W`
    /// (`layout` = `[C, D]` with its leading dimension) and `(1/B) sum_rows delta` for the
    /// bias, then the update of the type docs. `delta` is `[B, C]` (per-sample `p - y`), `a` is
    /// `[B, D]`. An empty batch counts as a zero gradient (weight decay and momentum still
    /// act, as PyTorch with a zero gradient).
    ///
    /// # Errors
    /// As [`Kernels::weight_grad`] for `w`, [`Error::LengthMismatch`] for the bias,
    /// [`Error::StateShape`] if the state belongs to another shape, [`Error::BadIsaEnv`] from
    /// [`Kernels::active`].
    ///
    /// ```
    /// use softmax_kernels::{MatrixLayout, Sgd, SgdOptions};
    /// let mut opt = Sgd::new(SgdOptions::new(0.5).momentum(0.5))?;
    /// let (mut w, mut b) = ([0.0f32, 0.0], [0.0f32]);
    /// let layout = MatrixLayout::new(1, 2);
    /// opt.step(&[2.0], &[1.0, -1.0], &mut w, layout, Some(&mut b))?; // grad = [2, -2], [2]
    /// assert_eq!((w, b), ([-1.0, 1.0], [-1.0]));
    /// opt.step(&[2.0], &[1.0, -1.0], &mut w, layout, Some(&mut b))?; // buf = 1.5 * grad
    /// assert_eq!((w, b), ([-2.5, 2.5], [-2.5]));
    /// # Ok::<(), softmax_kernels::Error>(())
    /// ```
    pub fn step(
        &mut self,
        delta: &[f32],
        a: &[f32],
        w: &mut [f32],
        layout: MatrixLayout,
        bias: Option<&mut [f32]>,
    ) -> Result<()> {
        let k = self.kernels()?;
        layout.check("w", w.len())?;
        let nb = batch_of("delta", delta.len(), layout.rows, "a", a.len(), layout.cols)?;
        if let Some(bias) = bias.as_deref() {
            check_len("bias", bias.len(), layout.rows)?;
            self.check_bias_len(bias.len())?;
        }
        self.check_shape(layout)?;
        let has_bias = bias.is_some();
        let o = self.opts;
        let (c, d) = (layout.rows, layout.cols);
        let mean = if nb == 0 { 0.0 } else { 1.0 / nb as f32 };
        if o.momentum == 0.0 {
            // One GEMM: w - lr (grad + wd w) = (1 - lr wd) w - (lr / B) delta^T A.
            let beta = 1.0 - o.lr * o.weight_decay;
            let alpha = -(o.lr * mean);
            k.weight_grad_checked(alpha, delta, a, nb, beta, w, layout);
            if let Some(bias) = bias {
                k.bias_grad_checked(alpha, delta, nb, beta, bias);
            }
        } else {
            let n = c.checked_mul(d).ok_or(Error::SizeOverflow { arg: "w" })?;
            self.grad.resize(n, 0.0);
            self.velocity.resize(n, 0.0);
            let dense = MatrixLayout::new(c, d);
            k.weight_grad_checked(mean, delta, a, nb, 0.0, &mut self.grad, dense);
            let q = o.params(!self.w_started);
            k.sgd_rows(w, layout, &self.grad, Some(&mut self.velocity), &q);
            self.w_started = true;
            if let Some(bias) = bias {
                self.bias_grad.resize(c, 0.0);
                self.bias_velocity.resize(c, 0.0);
                k.bias_grad_checked(mean, delta, nb, 0.0, &mut self.bias_grad);
                let q = o.params(!self.bias_started);
                let bl = MatrixLayout::new(1, c);
                k.sgd_rows(bias, bl, &self.bias_grad, Some(&mut self.bias_velocity), &q);
                self.bias_started = true;
            }
        }
        if o.momentum != 0.0 {
            self.shape = Some((c, d));
            if has_bias {
                self.bias_len = Some(c);
            }
        }
        self.steps += 1;
        Ok(())
    }

    /// One step of `W` with a gradient you computed: `grad` is dense `[C, D]` (`layout` gives
    /// `C`, `D` and `W`'s leading dimension). The update of the type docs, in PyTorch's order.
    ///
    /// # Errors
    /// [`Error::LeadingDim`], [`Error::MatrixLength`] for `w`, [`Error::LengthMismatch`] for
    /// `grad`, [`Error::StateShape`], [`Error::BadIsaEnv`].
    ///
    /// ```
    /// use softmax_kernels::{MatrixLayout, Sgd, SgdOptions};
    /// let mut opt = Sgd::new(SgdOptions::new(0.1).weight_decay(1.0))?;
    /// let mut w = [2.0f32];
    /// opt.apply_grad(&mut w, MatrixLayout::new(1, 1), &[1.0])?; // w -= 0.1 * (1 + 2)
    /// assert!((w[0] - 1.7).abs() < 1e-6);
    /// # Ok::<(), softmax_kernels::Error>(())
    /// ```
    pub fn apply_grad(&mut self, w: &mut [f32], layout: MatrixLayout, grad: &[f32]) -> Result<()> {
        let k = self.kernels()?;
        layout.check("w", w.len())?;
        let (c, d) = (layout.rows, layout.cols);
        let n = c
            .checked_mul(d)
            .ok_or(Error::SizeOverflow { arg: "grad" })?;
        check_len("grad", grad.len(), n)?;
        self.check_shape(layout)?;
        let q = self.opts.params(!self.w_started);
        if self.opts.momentum == 0.0 {
            k.sgd_rows(w, layout, grad, None, &q);
        } else {
            self.velocity.resize(n, 0.0);
            k.sgd_rows(w, layout, grad, Some(&mut self.velocity), &q);
            self.w_started = true;
            self.shape = Some((c, d));
        }
        self.steps += 1;
        Ok(())
    }

    /// One step of a bias with a gradient you computed (`grad.len() == bias.len()`). It does
    /// not count as a step of its own in [`Sgd::steps`].
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for `grad`, [`Error::StateShape`], [`Error::BadIsaEnv`].
    ///
    /// ```
    /// use softmax_kernels::{Sgd, SgdOptions};
    /// let mut opt = Sgd::new(SgdOptions::new(0.5))?;
    /// let mut b = [1.0f32, 1.0];
    /// opt.apply_bias_grad(&mut b, &[1.0, -1.0])?;
    /// assert_eq!(b, [0.5, 1.5]);
    /// # Ok::<(), softmax_kernels::Error>(())
    /// ```
    pub fn apply_bias_grad(&mut self, bias: &mut [f32], grad: &[f32]) -> Result<()> {
        let k = self.kernels()?;
        let c = bias.len();
        check_len("grad", grad.len(), c)?;
        self.check_bias_len(c)?;
        let q = self.opts.params(!self.bias_started);
        let layout = MatrixLayout::new(1, c);
        if self.opts.momentum == 0.0 {
            k.sgd_rows(bias, layout, grad, None, &q);
        } else {
            self.bias_velocity.resize(c, 0.0);
            k.sgd_rows(bias, layout, grad, Some(&mut self.bias_velocity), &q);
            self.bias_started = true;
            self.bias_len = Some(c);
        }
        Ok(())
    }
}

macro_rules! free_fn {
    ($(#[$doc:meta])* $name:ident ( $($arg:ident : $ty:ty),* )) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) -> Result<()> {
            Kernels::active()?.$name($($arg),*)
        }
    };
}

free_fn!(
    /// Rank-1 update `W += alpha x y^T` on the active tier ([`Kernels::rank1_update`]).
    ///
    /// ```
    /// use softmax_kernels::MatrixLayout;
    /// let mut w = [0.0f32; 4]; // [2, 2]
    /// softmax_kernels::rank1_update(2.0, &[1.0, -1.0], &[1.0, 3.0], &mut w, MatrixLayout::new(2, 2))?;
    /// assert_eq!(w, [2.0, 6.0, -2.0, -6.0]);
    /// # Ok::<(), softmax_kernels::Error>(())
    /// ```
    rank1_update(alpha: f32, x: &[f32], y: &[f32], w: &mut [f32], layout: MatrixLayout)
);
free_fn!(
    /// Rank-k update `W += alpha delta^T A` on the active tier ([`Kernels::rank_k_update`]).
    ///
    /// ```
    /// use softmax_kernels::MatrixLayout;
    /// // W is [2, 2] inside rows of 3 floats (ld = 3); the padding stays untouched.
    /// let mut w = [0.0f32, 0.0, 9.0, 0.0, 0.0];
    /// softmax_kernels::rank_k_update(1.0, &[1.0, 2.0], &[3.0, 4.0], &mut w,
    ///                                MatrixLayout::new(2, 2).with_ld(3)).unwrap();
    /// assert_eq!(w, [3.0, 4.0, 9.0, 6.0, 8.0]);
    /// ```
    rank_k_update(alpha: f32, delta: &[f32], a: &[f32], w: &mut [f32], layout: MatrixLayout)
);
free_fn!(
    /// Weight gradient `dW = beta dW + alpha delta^T A` on the active tier
    /// ([`Kernels::weight_grad`]).
    ///
    /// ```
    /// use softmax_kernels::MatrixLayout;
    /// let mut dw = [1.0f32; 2]; // [C = 1, D = 2]
    /// softmax_kernels::weight_grad(1.0, &[2.0], &[3.0, 4.0], 1.0, &mut dw,
    ///                              MatrixLayout::new(1, 2)).unwrap();
    /// assert_eq!(dw, [7.0, 9.0]);
    /// ```
    weight_grad(
        alpha: f32,
        delta: &[f32],
        a: &[f32],
        beta: f32,
        dw: &mut [f32],
        layout: MatrixLayout
    )
);
free_fn!(
    /// Bias gradient `db = beta db + alpha sum_rows delta` on the active tier
    /// ([`Kernels::bias_grad`]).
    ///
    /// ```
    /// let mut db = [f32::NAN; 2];
    /// softmax_kernels::bias_grad(1.0, &[1.0, 2.0, 3.0, 4.0], 0.0, &mut db).unwrap();
    /// assert_eq!(db, [4.0, 6.0]);
    /// ```
    bias_grad(alpha: f32, delta: &[f32], beta: f32, db: &mut [f32])
);
free_fn!(
    /// Plain SGD step `W -= (lr / B) delta^T A` (one GEMM, no gradient buffer) on the active
    /// tier ([`Kernels::sgd_step`]).
    ///
    /// ```
    /// use softmax_kernels::MatrixLayout;
    /// let mut w = [1.0f32, 2.0]; // [C = 2, D = 1]
    /// softmax_kernels::sgd_step(1.0, &[1.0, -1.0], &[0.5], &mut w, MatrixLayout::new(2, 1),
    ///                           None).unwrap();
    /// assert_eq!(w, [0.5, 2.5]);
    /// ```
    sgd_step(
        lr: f32,
        delta: &[f32],
        a: &[f32],
        w: &mut [f32],
        layout: MatrixLayout,
        bias: Option<&mut [f32]>
    )
);
free_fn!(
    /// Linear forward `Z = A W^T + b` on the active tier ([`Kernels::linear_forward`]).
    ///
    /// ```
    /// use softmax_kernels::MatrixLayout;
    /// let mut z = [0.0f32; 1];
    /// softmax_kernels::linear_forward(&[1.0, 2.0], &[3.0, 4.0], MatrixLayout::new(1, 2), None,
    ///                                 &mut z).unwrap();
    /// assert_eq!(z, [11.0]);
    /// ```
    linear_forward(
        a: &[f32],
        w: &[f32],
        layout: MatrixLayout,
        b: Option<&[f32]>,
        z: &mut [f32]
    )
);
free_fn!(
    /// Linear backward to the input `dA = delta W` on the active tier
    /// ([`Kernels::linear_backward_input`]).
    ///
    /// ```
    /// use softmax_kernels::MatrixLayout;
    /// let mut da = [0.0f32; 2];
    /// softmax_kernels::linear_backward_input(&[2.0], &[3.0, 4.0], MatrixLayout::new(1, 2),
    ///                                        &mut da).unwrap();
    /// assert_eq!(da, [6.0, 8.0]);
    /// ```
    linear_backward_input(delta: &[f32], w: &[f32], layout: MatrixLayout, da: &mut [f32])
);
