//! The output-layer update kernels, written once over [`Simd`] and stamped per tier by
//! [`stamp_linear!`]:
//!
//! * [`rank1_rows`]: `W[r, :] += (alpha x[r]) y`, one fused multiply-add per element, W streamed
//!   once (memory-bound).
//! * [`rank_k_rows`]: `W[r, :] = beta W[r, :] + alpha sum_i delta[i, r] A[i, :]` for small `k`,
//!   W read and written once. Register tiles of `MR` rows of W by `NV` vectors of columns
//!   accumulate the `k` products in registers (an unpacked GEMM micro-kernel: the `MR`
//!   coefficients of one `i` are contiguous in `delta`, the `NV` vectors of `A[i, :]` are
//!   contiguous in A), so each tile's `k x NV` vectors of A are reused from L1 by `MR` rows.
//! * [`col_sums`]: `db = beta db + alpha sum_rows delta`, in column chunks down fixed blocks of
//!   rows (f32 lanes within a block of [`COLSUM_BLOCK`] rows, f64 across blocks).
//! * [`sgd_update`]: the element-wise part of `torch.optim.SGD` (weight decay, momentum,
//!   dampening, Nesterov).
//! * [`sgemm`]: one single-threaded `matrixmultiply::sgemm` call (the tiers' large GEMM).
//!
//! **Arithmetic does not depend on blocking.** In each of these kernels (sgemm aside) the
//! operations applied to one element (the order of the `k` products, the epilogue) are the same
//! whether the element lies in a full register tile, a row or column tail, or a masked partial
//! vector, and whichever row or column block it was handed in. So callers may cut the work into
//! any blocks (and run them on any threads) and get bit-identical results. (sgemm's result does
//! depend on its call's shape, so the GEMM tiling is a function of the problem's shape only.)

use crate::arch::generic::mem::{load_n, prefetch, store_n};
use crate::arch::vector::Simd;

/// Arguments of a rank-1 update over `rows` rows of W: `W[r, j] += (alpha x[r]) y[j]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rank1 {
    /// The scale.
    pub(crate) alpha: f32,
    /// `rows` floats, one coefficient per row of W.
    pub(crate) x: *const f32,
    /// `cols` floats.
    pub(crate) y: *const f32,
    /// Row `r` of W is `w[r * ld .. r * ld + cols]`.
    pub(crate) w: *mut f32,
    /// The row stride of W (`>= cols`).
    pub(crate) ld: usize,
    /// Rows of W.
    pub(crate) rows: usize,
    /// Columns of W.
    pub(crate) cols: usize,
}

/// Arguments of a rank-k update over `rows` rows of W:
/// `W[r, j] = beta W[r, j] + alpha sum_{i < k} delta[i * ldd + r] a[i * lda + j]`.
///
/// `beta == 0` does not read W (NaN in W is overwritten), as BLAS.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RankK {
    /// Scale of the product.
    pub(crate) alpha: f32,
    /// Scale of the old W.
    pub(crate) beta: f32,
    /// Rank (rows of `delta` and of `a`).
    pub(crate) k: usize,
    /// Element `(i, r)` at `delta[i * ldd + r]`, `r < rows`.
    pub(crate) delta: *const f32,
    /// Row stride of `delta`.
    pub(crate) ldd: usize,
    /// Element `(i, j)` at `a[i * lda + j]`, `j < cols`.
    pub(crate) a: *const f32,
    /// Row stride of `a`.
    pub(crate) lda: usize,
    /// Row `r` of W is `w[r * ld .. r * ld + cols]`.
    pub(crate) w: *mut f32,
    /// Row stride of W.
    pub(crate) ld: usize,
    /// Rows of W.
    pub(crate) rows: usize,
    /// Columns of W.
    pub(crate) cols: usize,
}

/// Arguments of column sums: `out[j] = beta out[j] + alpha sum_{r < rows} x[r * ldx + j]` for
/// `j < cols`. `beta == 0` does not read `out`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ColSums {
    /// Scale of the sums.
    pub(crate) alpha: f32,
    /// Scale of the old `out`.
    pub(crate) beta: f32,
    /// Element `(r, j)` at `x[r * ldx + j]`.
    pub(crate) x: *const f32,
    /// Row stride of `x`.
    pub(crate) ldx: usize,
    /// Rows summed.
    pub(crate) rows: usize,
    /// Columns (sums) computed.
    pub(crate) cols: usize,
    /// `cols` floats.
    pub(crate) out: *mut f32,
}

/// Hyper-parameters of one `torch.optim.SGD` element update (see [`sgd_update`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SgdParams {
    /// Learning rate.
    pub(crate) lr: f32,
    /// Momentum factor (0: no velocity buffer).
    pub(crate) momentum: f32,
    /// Dampening of the gradient in the velocity update.
    pub(crate) dampening: f32,
    /// L2 penalty.
    pub(crate) weight_decay: f32,
    /// Nesterov momentum.
    pub(crate) nesterov: bool,
    /// The velocity buffer is empty (first step): it is set to the gradient.
    pub(crate) first: bool,
}

/// One `torch.optim.SGD` update of `n` elements: `w`, the gradient `g`, the velocity `buf`
/// (read and written only when `momentum != 0`; it may be null otherwise).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SgdSlices {
    /// Parameters, updated in place.
    pub(crate) w: *mut f32,
    /// The gradient.
    pub(crate) g: *const f32,
    /// The velocity, updated in place (only when `momentum != 0`).
    pub(crate) buf: *mut f32,
    /// Elements.
    pub(crate) n: usize,
}

/// Arguments of one general matrix product `C = alpha A B + beta C` (`[m, k] x [k, n]`), with
/// arbitrary element strides (row stride `rs*`, column stride `cs*`), as
/// `matrixmultiply::sgemm`. `beta == 0` does not read C.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gemm {
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) alpha: f32,
    pub(crate) a: *const f32,
    pub(crate) rsa: isize,
    pub(crate) csa: isize,
    pub(crate) b: *const f32,
    pub(crate) rsb: isize,
    pub(crate) csb: isize,
    pub(crate) beta: f32,
    pub(crate) c: *mut f32,
    pub(crate) rsc: isize,
    pub(crate) csc: isize,
}

/// The rank-1 kernel.
pub(crate) type Rank1Fn = unsafe fn(&Rank1);
/// The rank-k kernel.
pub(crate) type RankKFn = unsafe fn(&RankK);
/// The column-sum kernel.
pub(crate) type ColSumsFn = unsafe fn(&ColSums);
/// The SGD element update.
pub(crate) type SgdUpdateFn = unsafe fn(&SgdSlices, &SgdParams);
/// A general matrix product.
pub(crate) type GemmFn = unsafe fn(&Gemm);

/// One tier's table of linear-algebra kernels.
pub(crate) struct LinearKernels {
    /// `W += alpha x y^T` over a row block.
    pub(crate) rank1: Rank1Fn,
    /// `W = beta W + alpha delta^T A` over a row block, streaming (small k).
    pub(crate) rank_k: RankKFn,
    /// Scaled column sums.
    pub(crate) col_sums: ColSumsFn,
    /// The SGD element update.
    pub(crate) sgd_update: SgdUpdateFn,
    /// A general matrix product, single-threaded.
    pub(crate) gemm: GemmFn,
    /// The batched weight gradient uses [`LinearKernels::rank_k`] for batches of at most this
    /// many rows and [`LinearKernels::gemm`] above (the measured crossover; `usize::MAX` for the
    /// reference tier, which always computes in f64).
    pub(crate) rank_k_max: usize,
    /// The streaming forward and input-gradient GEMMs for short batches (none for the
    /// reference tier).
    pub(crate) stream: Option<&'static crate::arch::generic::gemm_stream::StreamKernels>,
}

/// The batch size at and below which the AVX-512 tier's weight gradient uses the streaming
/// rank-k kernel instead of sgemm: measured on Zen 4 against `matrixmultiply`'s AVX-512
/// sgemm (`benches/linear.rs`, group `rank_k_vs_sgemm_1t`; the numbers are in
/// `docs/design-measurements.md`). sgemm pays for packing and for a C tile loaded and
/// stored per `k`-block, which a small `k` does not amortize; the streaming kernel is an
/// unpacked micro-kernel that runs near the FMA peak as soon as `k` is about 16.
pub(crate) const RANK_K_MAX_AVX512: usize = 64;

/// The same crossover for the AVX2 tier (8-lane tiles of 4 x 2 vectors; measured against the
/// same AVX-512 sgemm, which `matrixmultiply` picks on this CPU, so on an AVX2-only CPU the
/// crossover is at least this).
pub(crate) const RANK_K_MAX_AVX2: usize = 32;

/// The same crossover for the portable tier (`wide`: SSE2 without FMA on a default build, so
/// its streaming kernel is slower and sgemm, which dispatches at run time, wins earlier).
pub(crate) const RANK_K_MAX_PORTABLE: usize = 8;

/// Rows per block of [`col_sums`]: sums over a block are f32 lane sums, block totals are added
/// in f64.
pub(crate) const COLSUM_BLOCK: usize = 32;

/// The largest number of floats [`col_sums`] handles in one column chunk (16 lanes x 4).
const COLSUM_CHUNK_MAX: usize = 64;

/// `W[r, :] += (alpha x[r]) y` for every row of `p`, in strips of `ROWS` rows that share each
/// load of `y` (then single rows).
///
/// Why strips: the update of a W that does not fit in the caches is bound by how many cache
/// misses the core keeps in flight, and every load (hits included) holds a load-queue entry
/// until it retires behind the oldest miss. One load of `y` per line of W halves the lines in
/// flight (measured: `docs/design-measurements.md`); shared by 8 rows it costs almost nothing.
///
/// # Safety
/// `p.x` valid for `p.rows` reads, `p.y` for `p.cols` reads, and for each `r < p.rows`,
/// `p.w + r * p.ld .. + p.cols` valid for reads and writes and not overlapping `x` or `y`.
#[inline(always)]
pub(crate) unsafe fn rank1_rows<S: Simd, const ROWS: usize>(s: S, p: &Rank1) {
    let mut r = 0;
    // SAFETY: every strip's rows lie in `0..rows`; the rest is forwarded.
    unsafe {
        while r + ROWS <= p.rows {
            rank1_strip::<S, ROWS>(s, p, r);
            r += ROWS;
        }
        while r < p.rows {
            rank1_strip::<S, 1>(s, p, r);
            r += 1;
        }
    }
}

/// Rows `r0 .. r0 + MR` of the rank-1 update: `w = fma(alpha x[r], y, w)`, per element the same
/// operation whichever step (aligning head, main loop, tail) handles it.
///
/// # Safety
/// As [`rank1_rows`], with `r0 + MR <= p.rows`.
#[inline(always)]
unsafe fn rank1_strip<S: Simd, const MR: usize>(s: S, p: &Rank1, r0: usize) {
    let l = S::LANES;
    let n = p.cols;
    let y = p.y;
    // SAFETY: rows `r0 .. r0 + MR` and `x[r0 .. r0 + MR]` lie in the caller's ranges; every
    // access below is within `0..n` of each row and of `y`: a partial head of `j0 < l` floats,
    // full vectors while `j + l <= n`, then one partial access of `n - j < l` floats.
    unsafe {
        let mut c = [s.splat(0.0); MR];
        let mut w = [p.w; MR];
        for m in 0..MR {
            c[m] = s.splat(p.alpha * *p.x.add(r0 + m));
            w[m] = p.w.add((r0 + m) * p.ld);
        }
        // A partial head so that the main loop's accesses to the first row are vector-aligned
        // (a misaligned 64-byte access splits across two cache lines); the other rows follow
        // when `ld` is a multiple of the vector width.
        let mut j = head_to_align::<S>(w[0], n);
        if j > 0 {
            let yv = s.load_partial(y, j, 0.0);
            for m in 0..MR {
                let v = s.fma(c[m], yv, s.load_partial(w[m], j, 0.0));
                s.store_partial(w[m], j, v);
            }
        }
        while j + 2 * l <= n {
            let y0 = s.load(y.add(j));
            let y1 = s.load(y.add(j + l));
            for m in 0..MR {
                let v0 = s.fma(c[m], y0, s.load(w[m].add(j)));
                let v1 = s.fma(c[m], y1, s.load(w[m].add(j + l)));
                s.store(w[m].add(j), v0);
                s.store(w[m].add(j + l), v1);
            }
            j += 2 * l;
        }
        while j + l <= n {
            let yv = s.load(y.add(j));
            for m in 0..MR {
                s.store(w[m].add(j), s.fma(c[m], yv, s.load(w[m].add(j))));
            }
            j += l;
        }
        if j < n {
            let k = n - j;
            let yv = s.load_partial(y.add(j), k, 0.0);
            for m in 0..MR {
                let v = s.fma(c[m], yv, s.load_partial(w[m].add(j), k, 0.0));
                s.store_partial(w[m].add(j), k, v);
            }
        }
    }
}

/// The number of floats (`< LANES`, at most `n`) from `p` to the next address aligned to a
/// whole vector (0 when `p` is aligned or not even float-aligned).
#[inline(always)]
fn head_to_align<S: Simd>(p: *const f32, n: usize) -> usize {
    let bytes = S::LANES * 4;
    let off = (p as usize) % bytes;
    if off == 0 || !off.is_multiple_of(4) {
        return 0;
    }
    ((bytes - off) / 4).min(n)
}

/// How the rank-k epilogue treats the old W: overwrite (`beta == 0`, W not read), add
/// (`beta == 1`), or scale.
const OVERWRITE: u8 = 0;
const ADD: u8 = 1;
const SCALE: u8 = 2;

/// One register tile of the rank-k update: rows `r0 .. r0 + MR` of W, columns
/// `j .. j + NV * LANES` (or, when `TAIL`, `NV == 1` and the `m < LANES` columns `j .. j + m`),
/// with `a` pointing at row 0 of the matching columns of A (row stride `lda`: either A itself
/// or a packed copy of a panel of it).
///
/// Per element: `acc = 0; acc = fma(delta[i, r], a[i, j], acc)` for `i = 0, 1, .., k - 1`;
/// then `w = alpha * acc` (OVERWRITE), `fma(alpha, acc, w)` (ADD) or
/// `fma(alpha, acc, beta * w)` (SCALE): the same operations as a `matrixmultiply` micro-kernel
/// with `k <= 256`, whatever the tile.
///
/// # Safety
/// Rows `r0 .. r0 + MR` and the columns named lie inside `p`'s ranges of W and `delta`; `a`
/// is readable for `k` rows of stride `lda` over the same columns.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rank_k_tile<
    S: Simd,
    const MR: usize,
    const NV: usize,
    const TAIL: bool,
    const MODE: u8,
>(
    s: S,
    p: &RankK,
    a: *const f32,
    lda: usize,
    r0: usize,
    j: usize,
    m: usize,
) {
    let l = S::LANES;
    let zero = s.splat(0.0);
    let mut acc = [[zero; NV]; MR];
    // SAFETY: the caller's contract: rows `r0 .. r0 + MR`, columns `j .. j + NV * l` (or
    // `j .. j + m` for a tail) of W and `delta`, and `k` rows of `a` over those columns.
    unsafe {
        // The next strip's rows of this tile, needed one pass over the columns from now (the
        // hardware prefetcher does not follow `MR` rows of W at once).
        for r in 0..MR {
            let next =
                p.w.wrapping_add((r0 + MR + r).wrapping_mul(p.ld).wrapping_add(j));
            for v in 0..NV {
                prefetch(next.wrapping_add(v * l));
            }
        }
        let dp = p.delta.add(r0);
        for i in 0..p.k {
            let ai = a.add(i * lda);
            let mut av = [zero; NV];
            for (v, x) in av.iter_mut().enumerate() {
                *x = load_n::<S, TAIL>(s, ai.add(v * l), m);
            }
            let di = dp.add(i * p.ldd);
            for (r, accr) in acc.iter_mut().enumerate() {
                let d = s.splat(*di.add(r));
                for (x, a) in accr.iter_mut().zip(av.iter()) {
                    *x = s.fma(d, *a, *x);
                }
            }
        }
        let alpha = s.splat(p.alpha);
        let beta = s.splat(p.beta);
        for (r, accr) in acc.iter().enumerate() {
            let wr = p.w.add((r0 + r) * p.ld + j);
            for (v, x) in accr.iter().enumerate() {
                let wp = wr.add(v * l);
                let out = match MODE {
                    OVERWRITE => s.mul(alpha, *x),
                    ADD => s.fma(alpha, *x, load_n::<S, TAIL>(s, wp, m)),
                    _ => s.fma(alpha, *x, s.mul(load_n::<S, TAIL>(s, wp, m), beta)),
                };
                store_n::<S, TAIL>(s, wp, m, out);
            }
        }
    }
}

/// Columns `j0 .. j1` of the `MR` rows from `r0`: full tiles of `NV` vectors, then single
/// vectors, then one partial vector. `a` points at row 0, column `j0` of A (or of its packed
/// panel), row stride `lda`.
///
/// # Safety
/// As [`rank_k_tile`], for all the columns `j0 .. j1`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rank_k_strip<S: Simd, const MR: usize, const NV: usize, const MODE: u8>(
    s: S,
    p: &RankK,
    a: *const f32,
    lda: usize,
    r0: usize,
    j0: usize,
    j1: usize,
) {
    let l = S::LANES;
    let mut j = j0;
    // SAFETY: every tile named lies within columns `j0 .. j1` and rows `r0 .. r0 + MR`, which
    // the caller guarantees are inside `p`'s ranges (and `a`'s, at offset `j - j0`).
    unsafe {
        while j + NV * l <= j1 {
            rank_k_tile::<S, MR, NV, false, MODE>(s, p, a.add(j - j0), lda, r0, j, l);
            j += NV * l;
        }
        while j + l <= j1 {
            rank_k_tile::<S, MR, 1, false, MODE>(s, p, a.add(j - j0), lda, r0, j, l);
            j += l;
        }
        if j < j1 {
            rank_k_tile::<S, MR, 1, true, MODE>(s, p, a.add(j - j0), lda, r0, j, j1 - j);
        }
    }
}

/// All rows of `p` over the columns `j0 .. j1`, with A read at `a` (row 0, column `j0`), row
/// stride `lda`: strips of `MR` rows, then 4, 2 and 1.
///
/// # Safety
/// As [`rank_k_strip`] for every row of `p`.
#[inline(always)]
unsafe fn rank_k_panel<S: Simd, const MR: usize, const NV: usize, const MODE: u8>(
    s: S,
    p: &RankK,
    a: *const f32,
    lda: usize,
    j0: usize,
    j1: usize,
) {
    let mut r = 0;
    // SAFETY: rows `r .. r + MR <= rows` (or fewer) and columns `j0 .. j1`: the caller's.
    unsafe {
        while r + MR <= p.rows {
            rank_k_strip::<S, MR, NV, MODE>(s, p, a, lda, r, j0, j1);
            r += MR;
        }
        // The row tail in strips of 4, 2, 1 rows (fewer than MR are left).
        if MR > 4 && r + 4 <= p.rows {
            rank_k_strip::<S, 4, NV, MODE>(s, p, a, lda, r, j0, j1);
            r += 4;
        }
        if MR > 2 && r + 2 <= p.rows {
            rank_k_strip::<S, 2, NV, MODE>(s, p, a, lda, r, j0, j1);
            r += 2;
        }
        while r < p.rows {
            rank_k_strip::<S, 1, NV, MODE>(s, p, a, lda, r, j0, j1);
            r += 1;
        }
    }
}

/// The rank-k update with one epilogue `MODE`, over whole rows of W.
///
/// Whole rows, not column panels: each strip of `MR` rows of W streams through full rows while
/// the tile's `k` lines of A come from L1 (or L2, where the whole `k x D` block of A lives).
/// Column panels sized to keep all of A's panel in L1 cut W's stream into short row segments
/// and measured slower (`docs/design-measurements.md`). The caller pads A's row stride when it
/// would make the rows of A
/// collide in the same L1 sets (see `crate::linear`).
///
/// # Safety
/// As [`rank_k_rows`].
#[inline(always)]
unsafe fn rank_k_mode<S: Simd, const MR: usize, const NV: usize, const MODE: u8>(s: S, p: &RankK) {
    // SAFETY: forwarded: A read in place, all columns.
    unsafe { rank_k_panel::<S, MR, NV, MODE>(s, p, p.a, p.lda, 0, p.cols) };
}

/// `W[r, j] = beta W[r, j] + alpha sum_{i < k} delta[i, r] a[i, j]` over all rows and columns of
/// `p`, with register tiles of `MR` rows by `NV` vectors.
///
/// # Safety
/// For `i < k`: `p.delta + i * p.ldd .. + p.rows` and `p.a + i * p.lda .. + p.cols` valid for
/// reads; for `r < p.rows`: `p.w + r * p.ld .. + p.cols` valid for reads and writes; W does not
/// overlap `delta` or `a`.
#[inline(always)]
pub(crate) unsafe fn rank_k_rows<S: Simd, const MR: usize, const NV: usize>(s: S, p: &RankK) {
    // SAFETY: forwarded.
    unsafe {
        if p.beta == 0.0 {
            rank_k_mode::<S, MR, NV, OVERWRITE>(s, p)
        } else if p.beta == 1.0 {
            rank_k_mode::<S, MR, NV, ADD>(s, p)
        } else {
            rank_k_mode::<S, MR, NV, SCALE>(s, p)
        }
    }
}

/// Column sums over one chunk of `NV` vectors (or, when `TAIL`, `m < LANES` columns): f32 lane
/// sums over blocks of [`COLSUM_BLOCK`] rows, added to `tot` in f64.
///
/// # Safety
/// Columns `j .. j + NV * LANES` (or `j .. j + m`) of rows `0 .. p.rows` of `p.x` readable;
/// `tot` holds at least `NV * LANES` (or `m`) values.
#[inline(always)]
unsafe fn col_chunk<S: Simd, const NV: usize, const TAIL: bool>(
    s: S,
    p: &ColSums,
    j: usize,
    m: usize,
    tot: &mut [f64; COLSUM_CHUNK_MAX],
) {
    let l = S::LANES;
    let zero = s.splat(0.0);
    let width = if TAIL { m } else { NV * l };
    let mut r = 0;
    while r < p.rows {
        let end = p.rows.min(r + COLSUM_BLOCK);
        let mut acc = [zero; NV];
        // SAFETY: rows `r .. end <= rows`, columns inside the caller's chunk.
        unsafe {
            while r < end {
                let xr = p.x.add(r * p.ldx + j);
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = s.add(*a, load_n::<S, TAIL>(s, xr.add(v * l), m));
                }
                r += 1;
            }
        }
        let mut buf = [0.0f32; COLSUM_CHUNK_MAX];
        for (v, a) in acc.iter().enumerate() {
            // SAFETY: `(v + 1) * l <= NV * l <= COLSUM_CHUNK_MAX`, inside `buf`.
            unsafe { s.store(buf.as_mut_ptr().add(v * l), *a) };
        }
        for (t, b) in tot.iter_mut().zip(buf.iter()).take(width) {
            *t += *b as f64;
        }
    }
}

/// Writes `out[j + t] = beta out[j + t] + alpha tot[t]` (f64, rounded once) for `t < width`.
///
/// # Safety
/// `out + j .. + width` valid for reads and writes.
#[inline(always)]
unsafe fn col_finish(p: &ColSums, j: usize, width: usize, tot: &[f64; COLSUM_CHUNK_MAX]) {
    for (t, &sum) in tot.iter().enumerate().take(width) {
        // SAFETY: `j + t < j + width`, inside the caller's range.
        unsafe {
            let o = p.out.add(j + t);
            let v = p.alpha as f64 * sum;
            *o = if p.beta == 0.0 {
                v as f32
            } else {
                (v + p.beta as f64 * *o as f64) as f32
            };
        }
    }
}

/// `out[j] = beta out[j] + alpha sum_r x[r, j]` for every column of `p`, in chunks of `NV`
/// vectors (`NV * LANES <= 64`).
///
/// # Safety
/// For `r < p.rows`: `p.x + r * p.ldx .. + p.cols` readable; `p.out .. + p.cols` readable and
/// writable, not overlapping `x`.
#[inline(always)]
pub(crate) unsafe fn col_sums<S: Simd, const NV: usize>(s: S, p: &ColSums) {
    let l = S::LANES;
    debug_assert!(NV * l <= COLSUM_CHUNK_MAX);
    let mut j = 0;
    // SAFETY: each chunk's columns lie inside `0 .. cols`; `tot` has `COLSUM_CHUNK_MAX` slots.
    unsafe {
        while j + NV * l <= p.cols {
            let mut tot = [0.0f64; COLSUM_CHUNK_MAX];
            col_chunk::<S, NV, false>(s, p, j, l, &mut tot);
            col_finish(p, j, NV * l, &tot);
            j += NV * l;
        }
        while j + l <= p.cols {
            let mut tot = [0.0f64; COLSUM_CHUNK_MAX];
            col_chunk::<S, 1, false>(s, p, j, l, &mut tot);
            col_finish(p, j, l, &tot);
            j += l;
        }
        if j < p.cols {
            let m = p.cols - j;
            let mut tot = [0.0f64; COLSUM_CHUNK_MAX];
            col_chunk::<S, 1, true>(s, p, j, m, &mut tot);
            col_finish(p, j, m, &tot);
        }
    }
}

/// One vector of the SGD update (see [`sgd_update`]).
///
/// # Safety
/// `m` floats (`m == LANES` unless `TAIL`) at `x.w + i`, `x.g + i` and, when momentum is on,
/// `x.buf + i`, inside the caller's ranges.
#[inline(always)]
unsafe fn sgd_vec<S: Simd, const TAIL: bool>(
    s: S,
    x: &SgdSlices,
    q: &SgdParams,
    i: usize,
    m: usize,
) {
    // SAFETY: forwarded: every access is `m` floats at offset `i` of the caller's ranges.
    unsafe {
        let wp = x.w.add(i);
        let w = load_n::<S, TAIL>(s, wp, m);
        let mut d = load_n::<S, TAIL>(s, x.g.add(i), m);
        if q.weight_decay != 0.0 {
            d = s.fma(s.splat(q.weight_decay), w, d);
        }
        if q.momentum != 0.0 {
            let bp = x.buf.add(i);
            let b = if q.first {
                d
            } else {
                let old = load_n::<S, TAIL>(s, bp, m);
                s.fma(
                    s.splat(q.momentum),
                    old,
                    s.mul(s.splat(1.0 - q.dampening), d),
                )
            };
            store_n::<S, TAIL>(s, bp, m, b);
            d = if q.nesterov {
                s.fma(s.splat(q.momentum), b, d)
            } else {
                b
            };
        }
        store_n::<S, TAIL>(s, wp, m, s.fma(s.splat(-q.lr), d, w));
    }
}

/// `torch.optim.SGD`'s update of `x.n` elements, in PyTorch's order:
///
/// ```text
/// d = g + weight_decay * w                      (when weight_decay != 0)
/// buf = d (first step) | momentum * buf + (1 - dampening) * d      (when momentum != 0)
/// d = d + momentum * buf (nesterov) | buf                          (when momentum != 0)
/// w = w - lr * d
/// ```
///
/// # Safety
/// `x.w .. + x.n` readable and writable, `x.g .. + x.n` readable, and when `q.momentum != 0`
/// `x.buf .. + x.n` readable and writable; the three do not overlap.
#[inline(always)]
pub(crate) unsafe fn sgd_update<S: Simd>(s: S, x: &SgdSlices, q: &SgdParams) {
    let l = S::LANES;
    let mut i = 0;
    // SAFETY: full vectors while `i + l <= n`, then one partial vector of `n - i < l` floats.
    unsafe {
        while i + l <= x.n {
            sgd_vec::<S, false>(s, x, q, i, l);
            i += l;
        }
        if i < x.n {
            sgd_vec::<S, true>(s, x, q, i, x.n - i);
        }
    }
}

/// One single-threaded `matrixmultiply::sgemm` call (which picks its own micro-kernel at run
/// time: AVX-512, FMA/AVX2, AVX, SSE2 or NEON). Shared by every SIMD tier.
///
/// # Safety
/// The pointers and strides of `g` describe valid `[m, k]`, `[k, n]` and `[m, n]` matrices (C
/// writable, its elements distinct, not overlapping A or B), as `matrixmultiply::sgemm`
/// requires; `k > 0`.
pub(crate) unsafe fn sgemm(g: &Gemm) {
    // SAFETY: forwarded to the caller.
    unsafe {
        matrixmultiply::sgemm(
            g.m, g.k, g.n, g.alpha, g.a, g.rsa, g.csa, g.b, g.rsb, g.csb, g.beta, g.c, g.rsc, g.csc,
        )
    }
}

/// Stamps the linear kernels out for one tier (called by `stamp_tier!` with the tier's
/// `#[target_feature]` attributes and token type) and defines its `LINEAR` table.
///
/// The rank-k register tiles, `MR` rows x `NV` vectors: 8 x 3 with 32 vector registers
/// (AVX-512: 24 accumulators, 3 vectors of A, 1 broadcast; measured faster than 4 x 4 and
/// 6 x 4), 4 x 2 with 16 (AVX2); the portable tier (called with no attributes) uses 2 x 2
/// because each of `wide`'s 8-lane vectors takes two SSE registers on a default x86-64 build.
macro_rules! stamp_linear {
    ([], $token:ty) => {
        $crate::arch::generic::linear::stamp_linear!(
            @emit [], $token, true, $crate::arch::generic::linear::RANK_K_MAX_PORTABLE
        );
    };
    ([$(#[$attr:meta])+], $token:ty) => {
        $crate::arch::generic::linear::stamp_linear!(
            @emit [$(#[$attr])+], $token, false,
            if <$token as $crate::arch::vector::Simd>::LANES >= 16 {
                $crate::arch::generic::linear::RANK_K_MAX_AVX512
            } else {
                $crate::arch::generic::linear::RANK_K_MAX_AVX2
            }
        );
    };
    (@emit [$(#[$attr:meta])*], $token:ty, $portable:literal, $kmax:expr) => {
        /// # Safety
        /// The tier's CPU features; pointer contract of `generic::linear::rank1_rows`.
        $(#[$attr])*
        unsafe fn lin_rank1(p: &$crate::arch::generic::linear::Rank1) {
            // SAFETY: this function's contract includes the tier's CPU features, which is what
            // `new_unchecked` needs; the pointer contract is forwarded unchanged.
            // 8 rows per strip keep 8 broadcast coefficients in registers; `wide`'s 8-lane
            // vectors take two SSE registers each, so the portable tier uses 4.
            unsafe {
                let s = <$token>::new_unchecked();
                if $portable {
                    $crate::arch::generic::linear::rank1_rows::<_, 4>(s, p)
                } else {
                    $crate::arch::generic::linear::rank1_rows::<_, 8>(s, p)
                }
            }
        }

        /// # Safety
        /// The tier's CPU features; pointer contract of `generic::linear::rank_k_rows`.
        $(#[$attr])*
        unsafe fn lin_rank_k(p: &$crate::arch::generic::linear::RankK) {
            use $crate::arch::generic::linear as gl;
            use $crate::arch::vector::Simd as _;
            // SAFETY: as in `lin_rank1`.
            unsafe {
                let s = <$token>::new_unchecked();
                if $portable {
                    gl::rank_k_rows::<_, 2, 2>(s, p)
                } else if <$token>::LANES >= 16 {
                    gl::rank_k_rows::<_, 8, 3>(s, p)
                } else {
                    gl::rank_k_rows::<_, 4, 2>(s, p)
                }
            }
        }

        /// # Safety
        /// The tier's CPU features; pointer contract of `generic::linear::col_sums`.
        $(#[$attr])*
        unsafe fn lin_col_sums(p: &$crate::arch::generic::linear::ColSums) {
            use $crate::arch::generic::linear as gl;
            use $crate::arch::vector::Simd as _;
            // SAFETY: as in `lin_rank1`.
            unsafe {
                let s = <$token>::new_unchecked();
                if $portable || <$token>::LANES >= 16 {
                    gl::col_sums::<_, 4>(s, p)
                } else {
                    gl::col_sums::<_, 8>(s, p)
                }
            }
        }

        /// # Safety
        /// The tier's CPU features; pointer contract of `generic::linear::sgd_update`.
        $(#[$attr])*
        unsafe fn lin_sgd_update(
            x: &$crate::arch::generic::linear::SgdSlices,
            q: &$crate::arch::generic::linear::SgdParams,
        ) {
            // SAFETY: as in `lin_rank1`.
            unsafe { $crate::arch::generic::linear::sgd_update(<$token>::new_unchecked(), x, q) }
        }

        /// # Safety
        /// The tier's CPU features; pointer contract of `generic::gemm_stream::stream_nt`.
        $(#[$attr])*
        unsafe fn lin_stream_nt(p: &$crate::arch::generic::gemm_stream::StreamNt) {
            use $crate::arch::generic::gemm_stream as gs;
            use $crate::arch::vector::Simd as _;
            // SAFETY: as in `lin_rank1`. Tiles: 24 x 1 or 12 x 2 vectors with 32 registers
            // (24 accumulators), 12 x 1 or 6 x 2 with 16, 4 x 1 for `wide` (two SSE
            // registers a vector); each fits the kernel's 512-float buffer.
            unsafe {
                let s = <$token>::new_unchecked();
                if $portable {
                    gs::stream_nt::<_, 4, 2>(s, p)
                } else if <$token>::LANES >= 16 {
                    gs::stream_nt::<_, 24, 12>(s, p)
                } else {
                    gs::stream_nt::<_, 12, 6>(s, p)
                }
            }
        }

        /// # Safety
        /// The tier's CPU features; pointer contract of `generic::gemm_stream::stream_nn`.
        $(#[$attr])*
        unsafe fn lin_stream_nn(p: &$crate::arch::generic::gemm_stream::StreamNn) {
            use $crate::arch::generic::gemm_stream as gs;
            use $crate::arch::vector::Simd as _;
            // SAFETY: as in `lin_rank1`. Tiles of 8 x 3 vectors with 32 registers, 6 x 2
            // with 16, 2 x 2 for `wide`.
            unsafe {
                let s = <$token>::new_unchecked();
                if $portable {
                    gs::stream_nn::<_, 2, 2>(s, p)
                } else if <$token>::LANES >= 16 {
                    gs::stream_nn::<_, 8, 3>(s, p)
                } else {
                    gs::stream_nn::<_, 6, 2>(s, p)
                }
            }
        }

        /// This tier's streaming GEMMs.
        static STREAM: $crate::arch::generic::gemm_stream::StreamKernels =
            $crate::arch::generic::gemm_stream::StreamKernels {
                nt: lin_stream_nt,
                nn: lin_stream_nn,
                lanes: <$token as $crate::arch::vector::Simd>::LANES,
                pw_max: if $portable {
                    <$token as $crate::arch::vector::Simd>::LANES
                } else {
                    2 * <$token as $crate::arch::vector::Simd>::LANES
                },
                max_rows: $crate::arch::generic::gemm_stream::SIMD_MAX_ROWS,
                nn_max_rows: if <$token as $crate::arch::vector::Simd>::LANES >= 16 {
                    $crate::arch::generic::gemm_stream::SIMD_MAX_ROWS
                } else {
                    $crate::arch::generic::gemm_stream::AVX2_NN_MAX_ROWS
                },
            };

        /// This tier's linear kernels.
        pub(crate) static LINEAR: $crate::arch::generic::linear::LinearKernels =
            $crate::arch::generic::linear::LinearKernels {
                rank1: lin_rank1,
                rank_k: lin_rank_k,
                col_sums: lin_col_sums,
                sgd_update: lin_sgd_update,
                gemm: $crate::arch::generic::linear::sgemm,
                rank_k_max: $kmax,
                // `wide` without FMA cannot form sgemm's fused sums (see `gemm_stream`).
                stream: if $portable { None } else { Some(&STREAM) },
            };
    };
}
pub(crate) use stamp_linear;
