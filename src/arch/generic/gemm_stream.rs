//! Streaming GEMMs for a short batch against a long weight matrix: `Z = A W^T (+ b)` and
//! `dA = beta dA + G W`, where `A`/`Z`/`G`/`dA` have a few rows (`m`, up to
//! [`SIMD_MAX_ROWS`]) and `W` is `[C, D]` with `C` large (a language-model head, or one chunk
//! of rows of the fused linear cross-entropy).
//!
//! A general GEMM (`matrixmultiply`) packs both operands per call: with a short batch its
//! work per call is small next to packing all of `W`, which is read, written to the packing
//! buffer and read again. These kernels read `W` once, from its rows:
//!
//! * [`stream_nt`] (`Z = A W^T + b`): `A` is packed once per call (transposed, in panels of
//!   one or two vectors of rows, zero-padded; a few KiB). For each tile of `NR` classes and
//!   block of [`GEMM_KC`] features, the tile's rows of `W` are copied to a stack buffer and
//!   every panel accumulates `acc[r][v] += A^T[l, panel v] * W[j + r, l]` (one broadcast of
//!   `W` per class, one vector load of the panel per `l`), while the tile two ahead is
//!   prefetched. The tile is written out transposed (`Z` is row-major).
//! * [`stream_nn`] (`dA = beta dA + G W`): register tiles of `MR` rows of `dA` by `NV` vectors
//!   of columns accumulate `acc[r][v] += G[r, j] * W[j, cols v]` over blocks of [`GEMM_KC`]
//!   classes and column chunks that keep the block of `W` in L2 while every row strip uses
//!   it, prefetching `W` some rows ahead; partial sums go back to `dA` between blocks.
//!
//! **The same bits as sgemm.** Each output element is formed exactly as `matrixmultiply`'s
//! sgemm forms it (see [`GEMM_KC`]): per block of `GEMM_KC` inner indices, one chain of fused
//! multiply-adds from zero in increasing order, added to the running value (the bias, or
//! `beta dA`, for the first block). So the result depends neither on the tiles, panels,
//! blocks or call ranges that hold an element (callers split the classes or the columns
//! over any number of threads) nor on whether [`crate::linear`] chose these kernels or sgemm
//! for the batch size.

use super::mem::{load_n, prefetch, store_n};
use crate::arch::vector::Simd;

/// Arguments of [`stream_nt`]: `z[i * ldz + j] = sum_{l < k} A[i, l] w[j * ldw + l]
/// (+ bias[j])` for `i < m`, `j < n`, with `A` given packed by [`pack_nt`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamNt {
    /// Rows of `A` and `Z`.
    pub(crate) m: usize,
    /// The inner dimension (`D`).
    pub(crate) k: usize,
    /// Classes (rows of `W`, columns of `Z`) in this call.
    pub(crate) n: usize,
    /// `A` packed by [`pack_nt`] with panel width `pw`: `m.div_ceil(pw) * k * pw` floats.
    pub(crate) pk: *const f32,
    /// The panel width of `pk`: one or two vectors (see [`StreamKernels::panel_width`]).
    pub(crate) pw: usize,
    /// Row `j` of `W` at `w + j * ldw`, `k` floats.
    pub(crate) w: *const f32,
    /// Row stride of `W`.
    pub(crate) ldw: usize,
    /// `n` floats added to each row of `Z`, or null.
    pub(crate) bias: *const f32,
    /// Element `(i, j)` of `Z` at `z + i * ldz + j`.
    pub(crate) z: *mut f32,
    /// Row stride of `Z`.
    pub(crate) ldz: usize,
}

/// Arguments of [`stream_nn`]: `da[i * ldda + l] = beta da[..] + sum_{j < n} g[i * ldg + j]
/// w[j * ldw + l]` for `i < m`, `l < cols` (`beta == 0` does not read `da`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamNn {
    /// Rows of `G` and `dA`.
    pub(crate) m: usize,
    /// The inner dimension: classes (columns of `G`, rows of `W`).
    pub(crate) n: usize,
    /// Columns of `dA` (and of `W`) in this call.
    pub(crate) cols: usize,
    /// Element `(i, j)` of `G` at `g + i * ldg + j`.
    pub(crate) g: *const f32,
    /// Row stride of `G`.
    pub(crate) ldg: usize,
    /// Element `(j, l)` of `W` at `w + j * ldw + l`.
    pub(crate) w: *const f32,
    /// Row stride of `W`.
    pub(crate) ldw: usize,
    /// Element `(i, l)` of `dA` at `da + i * ldda + l`.
    pub(crate) da: *mut f32,
    /// Row stride of `dA`.
    pub(crate) ldda: usize,
    /// Scale of the old `dA`.
    pub(crate) beta: f32,
}

/// [`stream_nt`] for one tier.
pub(crate) type StreamNtFn = unsafe fn(&StreamNt);
/// [`stream_nn`] for one tier.
pub(crate) type StreamNnFn = unsafe fn(&StreamNn);

/// One tier's streaming GEMMs and the batch sizes they serve.
#[derive(Debug)]
pub(crate) struct StreamKernels {
    /// `Z = A W^T + b` over a range of classes.
    pub(crate) nt: StreamNtFn,
    /// `dA = beta dA + G W` over a range of columns.
    pub(crate) nn: StreamNnFn,
    /// The tier's vector width in floats.
    pub(crate) lanes: usize,
    /// The widest panel of rows [`stream_nt`] handles (one or two vectors).
    pub(crate) pw_max: usize,
    /// The forward and input-gradient GEMMs use these kernels for batches of at most this
    /// many rows (sgemm above).
    pub(crate) max_rows: usize,
    /// [`stream_nn`] serves batches of at most this many rows (sgemm above):
    /// [`SIMD_MAX_ROWS`] on AVX-512, [`AVX2_NN_MAX_ROWS`] on AVX2.
    pub(crate) nn_max_rows: usize,
}

impl StreamKernels {
    /// The panel width [`pack_nt`] and [`stream_nt`] use for `m` rows: one vector when `m`
    /// fits it (or the tier has only one-vector panels), else the widest.
    pub(crate) fn panel_width(&self, m: usize) -> usize {
        if m <= self.lanes {
            self.lanes
        } else {
            self.pw_max
        }
    }

    /// Whether `dA = G W` with a batch of `m` rows takes [`stream_nn`].
    pub(crate) fn serves_nn(&self, m: usize) -> bool {
        m <= self.nn_max_rows
    }

    /// Whether `Z = A W^T + b` with a batch of `m` rows and `c` classes takes [`stream_nt`].
    pub(crate) fn serves_nt(&self, m: usize, c: usize) -> bool {
        m <= self.max_rows && c >= NT_MIN_CLASSES
    }
}

/// [`stream_nt`] packs all of `A` (`m * D` floats) per call, which few classes do not
/// amortize: at `m = 64`, `D = 784` it measured slower than sgemm up to `C = 64` (46 against 56
/// GFLOP/s) and faster from 96 (60 against 50), on Zen 4.
pub(crate) const NT_MIN_CLASSES: usize = 96;

/// The largest batch the AVX2 and AVX-512 tiers send to the streaming kernels (at 64 rows
/// they beat sgemm per multiply-add on the output layer's shapes, measured on Zen 4:
/// `docs/design-measurements.md`). [`stream_nt`] keeps the partial sums of a tile over
/// all panels in a stack buffer sized for it (checked below for the tiers' tiles).
pub(crate) const SIMD_MAX_ROWS: usize = 64;

/// The largest batch the AVX2 tier sends to [`stream_nn`]: with 16 registers its `dA` ran
/// below sgemm from 8 rows on at the output layer's shapes on Zen 3, while it still wins
/// where the GEMM is a matrix-vector product (`docs/design-measurements.md`). The streaming
/// forward keeps [`SIMD_MAX_ROWS`] on AVX2.
pub(crate) const AVX2_NN_MAX_ROWS: usize = 4;

// The partial sums of a tile (`panels * NR * pw` floats) fit `NT_ZBUF` for every batch of at
// most SIMD_MAX_ROWS rows: AVX-512 (one-vector panels of 24 classes up to 16 rows, two-vector
// panels of 12 classes above), AVX2 (12 x 8, 6 x 16).
const _: () = assert!(
    16 * 24 <= NT_ZBUF
        && SIMD_MAX_ROWS.div_ceil(32) * 12 * 32 <= NT_ZBUF
        && 8 * 12 <= NT_ZBUF
        && SIMD_MAX_ROWS.div_ceil(16) * 6 * 16 <= NT_ZBUF
);

/// Packs `A` (`m` rows of `k` floats at row stride `lda`) for [`stream_nt`]: panel `p` holds
/// rows `p * pw .. p * pw + pw` transposed, `out[(p * k + l) * pw + r] = a[(p * pw + r) * lda
/// + l]`, rows past `m` zero. Returns `m.div_ceil(pw) * k * pw` floats.
pub(crate) fn pack_nt(a: &[f32], lda: usize, m: usize, k: usize, pw: usize) -> Vec<f32> {
    let panels = m.div_ceil(pw);
    let mut out = vec![0.0f32; panels * k * pw];
    for (i, row) in a.chunks(lda).take(m).enumerate() {
        let (p, r) = (i / pw, i % pw);
        let base = p * k * pw + r;
        for (l, &x) in row[..k].iter().enumerate() {
            out[base + l * pw] = x;
        }
    }
    out
}

/// The inner-dimension block of `matrixmultiply`'s sgemm (its `S_KC`, 256 unless overridden
/// when it is compiled). sgemm sums each block of `KC` products as one chain of fused
/// multiply-adds from zero and adds it to the output (`ab + c`, the first block `ab + beta c`);
/// these kernels form the same sums in the same order, so an element of the output has the
/// same bits whichever of the two computed it, and [`crate::linear`] may pick one by batch
/// size without changing results. (`tests/linear.rs`, `streaming_and_sgemm_give_the_same_bits`,
/// and `tests/linear_ce.rs`, `forward_is_the_same_on_sub_problems`, check this on every
/// tier.)
pub(crate) const GEMM_KC: usize = 256;

/// The partial sums of one class tile over all panels, in floats: `panels * NR * pw` must fit
/// (at most 2 panels of 12 x 32 on AVX-512, 4 of 6 x 16 on AVX2, for 64 rows).
const NT_ZBUF: usize = 1024;

/// How many tiles ahead [`stream_nt`] prefetches `W`.
const PF_TILES: usize = 2;

/// The widest class tile (`NR`) [`stream_nt`] is instantiated with.
const NT_NR_MAX: usize = 24;

/// Lines for [`nt_block`] to prefetch as it goes, one per inner index: `rows` rows of `len`
/// floats from `p`, row stride `ld` (`rows == 0`: none).
#[derive(Clone, Copy)]
struct Prefetch {
    p: *const f32,
    ld: usize,
    len: usize,
    rows: usize,
}

/// One block of at most [`GEMM_KC`] inner indices of one register tile of [`stream_nt`]: `NR`
/// classes (their `kl` weights copied to `wb`, class `r` at `wb + r * GEMM_KC`) by one panel
/// of `MV` vectors of rows (`ap`: `kl` groups of `MV * LANES` floats). The block's sums join
/// the tile's partial sums `zb` (`NR` groups of `MV * LANES`) as sgemm's epilogue does:
/// `ab + c`, where for the first block `c` is the bias (`bias`, the tile's first class, or
/// null: then `ab`).
///
/// # Safety
/// `ap`, `wb` and `zb` hold what is described; `bias` is null or `nr` readable floats;
/// `0 < nr <= NR`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
// Index loops, not iterators: with `iter_mut().zip(..)` here LLVM kept the 24 accumulators on
// the stack (24 spills per step of the inner loop, seen in the AVX-512 disassembly); with
// indices they stay in registers.
#[allow(clippy::needless_range_loop)]
unsafe fn nt_block<S: Simd, const MV: usize, const NR: usize>(
    s: S,
    ap: *const f32,
    wb: *const f32,
    kl: usize,
    zb: *mut f32,
    first: bool,
    bias: *const f32,
    nr: usize,
    pf: Prefetch,
) {
    let l = S::LANES;
    let pw = MV * l;
    let zero = s.splat(0.0);
    let mut acc = [[zero; MV]; NR];
    let (mut pp, mut po, mut prow) = (pf.p, 0, 0);
    // SAFETY: the caller's contract: `li < kl`, `r < NR`, `v < MV` stay inside `ap`, `wb`
    // and `zb`; `bias` is read at `r.min(nr - 1) < nr`.
    unsafe {
        for li in 0..kl {
            if prow < pf.rows {
                prefetch(pp.wrapping_add(po));
                po += 16;
                if po >= pf.len {
                    po = 0;
                    prow += 1;
                    pp = pp.wrapping_add(pf.ld);
                }
            }
            let a = ap.add(li * pw);
            let mut av = [zero; MV];
            for v in 0..MV {
                av[v] = s.load(a.add(v * l));
            }
            for r in 0..NR {
                let wv = s.splat(*wb.add(r * GEMM_KC + li));
                for v in 0..MV {
                    acc[r][v] = s.fma(av[v], wv, acc[r][v]);
                }
            }
        }
        for r in 0..NR {
            // The first block's `c`: the class's bias, or nothing.
            let b = if first && !bias.is_null() {
                Some(s.splat(*bias.add(r.min(nr - 1))))
            } else {
                None
            };
            for v in 0..MV {
                let q = zb.add(r * pw + v * l);
                let out = match (first, b) {
                    (false, _) => s.add(acc[r][v], s.load(q)),
                    (true, Some(b)) => s.add(acc[r][v], b),
                    (true, None) => acc[r][v],
                };
                s.store(q, out);
            }
        }
    }
}

/// [`stream_nt`] with panels of `MV` vectors and tiles of `NR` classes. Per tile and block of
/// [`GEMM_KC`] inner indices, the tile's rows of `W` are first copied to a contiguous stack
/// buffer, so that the micro-kernel's broadcasts come from one pointer at fixed offsets
/// (`NR` row pointers would not fit the general registers), and the rows of the tile
/// [`PF_TILES`] ahead are prefetched. The panels of `A` come from L1 or L2.
///
/// # Safety
/// As [`stream_nt`], with `p.pw == MV * LANES`, `NR <= NT_NR_MAX` and `m.div_ceil(pw) * NR *
/// pw <= NT_ZBUF`.
#[inline(always)]
unsafe fn nt_panels<S: Simd, const MV: usize, const NR: usize>(s: S, p: &StreamNt) {
    let pw = MV * S::LANES;
    let panels = p.m.div_ceil(pw);
    debug_assert!(NR <= NT_NR_MAX && panels * NR * pw <= NT_ZBUF);
    let mut wb = [0.0f32; NT_NR_MAX * GEMM_KC];
    let mut zb = [0.0f32; NT_ZBUF];
    let mut j0 = 0;
    // SAFETY: the caller's contract: classes `j0 .. j0 + nr <= n` of W (`k` floats each; a
    // class past `nr` copies row `j0 + nr - 1` again and is never stored), panels `pi <
    // panels` of `pk` (`k * pw` floats each), rows `< m` and columns `j0 .. j0 + nr` of Z,
    // and `bias[j0 .. j0 + nr]`; the stack buffers hold `NR * GEMM_KC` and `panels * NR *
    // pw` floats. Prefetched addresses are only hints (never dereferenced).
    unsafe {
        while j0 < p.n {
            let nr = NR.min(p.n - j0);
            let bias = if p.bias.is_null() {
                p.bias
            } else {
                p.bias.add(j0)
            };
            let mut l0 = 0;
            while l0 < p.k {
                let kl = GEMM_KC.min(p.k - l0);
                for r in 0..NR {
                    let src = p.w.add((j0 + r.min(nr - 1)) * p.ldw + l0);
                    std::ptr::copy_nonoverlapping(src, wb.as_mut_ptr().add(r * GEMM_KC), kl);
                }
                // The first panel prefetches this block of the tile after next, a line per
                // inner index (a burst at the copy measured slower: its prefetches are lost).
                let ahead = Prefetch {
                    p: p.w
                        .wrapping_add((j0 + PF_TILES * NR).wrapping_mul(p.ldw).wrapping_add(l0)),
                    ld: p.ldw,
                    len: kl,
                    rows: if j0 + PF_TILES * NR < p.n { NR } else { 0 },
                };
                for pi in 0..panels {
                    let ap = p.pk.add((pi * p.k + l0) * pw);
                    let zt = zb.as_mut_ptr().add(pi * NR * pw);
                    let pf = if pi == 0 {
                        ahead
                    } else {
                        Prefetch { rows: 0, ..ahead }
                    };
                    nt_block::<S, MV, NR>(s, ap, wb.as_ptr(), kl, zt, l0 == 0, bias, nr, pf);
                }
                l0 += kl;
            }
            for pi in 0..panels {
                let rows = pw.min(p.m - pi * pw);
                let zt = zb.as_ptr().add(pi * NR * pw);
                for i in 0..rows {
                    let zr = p.z.add((pi * pw + i) * p.ldz + j0);
                    for r in 0..nr {
                        *zr.add(r) = *zt.add(r * pw + i);
                    }
                }
            }
            j0 += NR;
        }
    }
}

/// `Z = A W^T (+ b)` over the call's classes: tiles of `NR1` classes by one-vector panels
/// (`p.pw == LANES`) or `NR2` classes by two-vector panels (`p.pw == 2 LANES`).
///
/// # Safety
/// `p.pw` is `LANES` or `2 * LANES`, `NR1, NR2 <= 24` and the partial sums of a tile fit
/// 1024 floats (`m.div_ceil(pw) * NR * pw`: the callers' `m <= 64` with the tiers' tiles); `p.pk`
/// holds `m.div_ceil(pw) * k * pw` readable floats; for `j < n`, `p.w + j * ldw .. + k` is
/// readable; for `i < m`, `p.z + i * ldz .. + n` is writable and overlaps none of the inputs;
/// `p.bias` is null or `n` readable floats; `m, n, k > 0`.
#[inline(always)]
pub(crate) unsafe fn stream_nt<S: Simd, const NR1: usize, const NR2: usize>(s: S, p: &StreamNt) {
    // SAFETY: forwarded; the panel width matches the instantiation.
    unsafe {
        if p.pw == S::LANES {
            nt_panels::<S, 1, NR1>(s, p)
        } else {
            debug_assert_eq!(p.pw, 2 * S::LANES);
            nt_panels::<S, 2, NR2>(s, p)
        }
    }
}

/// The bytes of `W` in one block of [`stream_nn`] ([`GEMM_KC`] classes by a chunk of
/// columns): a quarter of a 1 MiB L2, leaving room for the rows of `G` and the tiles of `dA`.
const NN_BLOCK_BYTES: usize = 256 * 1024;

/// How many rows of `W` ahead [`stream_nn`] prefetches.
const NN_PF_ROWS: usize = 16;

/// How a tile of [`stream_nn`] starts: from 0 (`beta == 0`, first block), from `dA`
/// (`beta == 1` first block, or any later block), or from `beta dA`.
const FROM_ZERO: u8 = 0;
const FROM_DA: u8 = 1;
const FROM_SCALED: u8 = 2;

/// One register tile of [`stream_nn`]: rows `i0 .. i0 + MR` of `dA`, columns `c .. c + NV *
/// LANES` (or, when `TAIL`, `NV == 1` and the `mc < LANES` columns `c .. c + mc`), over one of
/// sgemm's blocks of classes, `j0 .. j1` (`j0` a multiple of [`GEMM_KC`], `j1 - j0 <=
/// GEMM_KC`): the block's products summed from zero, then added to `dA` as sgemm's epilogue
/// does (`INIT`: `ab` for `beta == 0`, `ab + beta dA` for the first block, `ab + dA` after).
/// Each step prefetches the tile's columns [`NN_PF_ROWS`] rows of `W` ahead: the first strip of
/// rows reads a new block of `W` from memory at a stride the hardware prefetcher does not
/// follow.
///
/// # Safety
/// As [`stream_nn`]; the rows, columns and classes lie inside `p`'s ranges.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn nn_tile<S: Simd, const MR: usize, const NV: usize, const TAIL: bool, const INIT: u8>(
    s: S,
    p: &StreamNn,
    i0: usize,
    c: usize,
    mc: usize,
    j0: usize,
    j1: usize,
) {
    let l = S::LANES;
    let zero = s.splat(0.0);
    // SAFETY: the caller's contract: rows `i0 .. i0 + MR` of `dA` and `G`, the tile's columns
    // of `dA` and `W`, classes `j0 .. j1 <= n`. Prefetched addresses are only hints.
    unsafe {
        let gp = p.g.add(i0 * p.ldg);
        let mut acc = [[zero; NV]; MR];
        for j in j0..j1 {
            let wj = p.w.add(j * p.ldw + c);
            let mut wv = [zero; NV];
            for (v, x) in wv.iter_mut().enumerate() {
                *x = load_n::<S, TAIL>(s, wj.add(v * l), mc);
                prefetch(wj.wrapping_add(NN_PF_ROWS.wrapping_mul(p.ldw).wrapping_add(v * l)));
            }
            for (r, accr) in acc.iter_mut().enumerate() {
                let g = s.splat(*gp.add(r * p.ldg + j));
                for (x, w) in accr.iter_mut().zip(wv.iter()) {
                    *x = s.fma(g, *w, *x);
                }
            }
        }
        let beta = s.splat(p.beta);
        for (r, accr) in acc.iter().enumerate() {
            let dr = p.da.add((i0 + r) * p.ldda + c);
            for (v, x) in accr.iter().enumerate() {
                let q = dr.add(v * l);
                let out = match INIT {
                    FROM_ZERO => *x,
                    FROM_DA => s.add(*x, load_n::<S, TAIL>(s, q, mc)),
                    _ => s.add(*x, s.mul(load_n::<S, TAIL>(s, q, mc), beta)),
                };
                store_n::<S, TAIL>(s, q, mc, out);
            }
        }
    }
}

/// Rows `i0 .. i0 + MR` of [`stream_nn`] over all the call's columns and the classes `j0 ..
/// j1`: full tiles of `NV` vectors, single vectors, one partial vector.
///
/// # Safety
/// As [`nn_tile`] for every column.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn nn_strip<S: Simd, const MR: usize, const NV: usize, const INIT: u8>(
    s: S,
    p: &StreamNn,
    i0: usize,
    j0: usize,
    j1: usize,
    c0: usize,
    c1: usize,
) {
    let l = S::LANES;
    let mut c = c0;
    // SAFETY: each tile's columns lie inside `c0 .. c1 <= p.cols`; rows and classes: the
    // caller's.
    unsafe {
        while c + NV * l <= c1 {
            nn_tile::<S, MR, NV, false, INIT>(s, p, i0, c, l, j0, j1);
            c += NV * l;
        }
        while c + l <= c1 {
            nn_tile::<S, MR, 1, false, INIT>(s, p, i0, c, l, j0, j1);
            c += l;
        }
        if c < c1 {
            nn_tile::<S, MR, 1, true, INIT>(s, p, i0, c, c1 - c, j0, j1);
        }
    }
}

/// Every row of [`stream_nn`] over the classes `j0 .. j1` and the columns `c0 .. c1`: strips
/// of `MR` rows, then 4, 2, 1.
///
/// # Safety
/// As [`stream_nn`]; `j0 < j1 <= n`, `c0 < c1 <= cols`.
#[inline(always)]
unsafe fn nn_block<S: Simd, const MR: usize, const NV: usize, const INIT: u8>(
    s: S,
    p: &StreamNn,
    j0: usize,
    j1: usize,
    c0: usize,
    c1: usize,
) {
    let mut i = 0;
    // SAFETY: rows `i .. i + MR <= m` (or the tail's fewer): the caller's ranges.
    unsafe {
        while i + MR <= p.m {
            nn_strip::<S, MR, NV, INIT>(s, p, i, j0, j1, c0, c1);
            i += MR;
        }
        if MR > 4 && i + 4 <= p.m {
            nn_strip::<S, 4, NV, INIT>(s, p, i, j0, j1, c0, c1);
            i += 4;
        }
        if MR > 2 && i + 2 <= p.m {
            nn_strip::<S, 2, NV, INIT>(s, p, i, j0, j1, c0, c1);
            i += 2;
        }
        while i < p.m {
            nn_strip::<S, 1, NV, INIT>(s, p, i, j0, j1, c0, c1);
            i += 1;
        }
    }
}

/// `dA = beta dA + G W` over the call's columns, with register tiles of `MR` rows by `NV`
/// vectors, class block by class block.
///
/// # Safety
/// For `i < m`: `p.g + i * ldg .. + n` readable and `p.da + i * ldda .. + cols` readable and
/// writable; for `j < n`: `p.w + j * ldw .. + cols` readable; `dA` overlaps neither input;
/// `m, n, cols > 0`.
#[inline(always)]
pub(crate) unsafe fn stream_nn<S: Simd, const MR: usize, const NV: usize>(s: S, p: &StreamNn) {
    // Blocks of `GEMM_KC` classes (sgemm's blocks) by column chunks of whole tiles that keep
    // the block of W within `NN_BLOCK_BYTES`.
    let tile = NV * S::LANES;
    let cw = (NN_BLOCK_BYTES / (4 * GEMM_KC) / tile).max(1) * tile;
    let mut j0 = 0;
    // SAFETY: forwarded, each block's classes inside `0 .. n`, columns inside `0 .. cols`.
    unsafe {
        while j0 < p.n {
            let j1 = p.n.min(j0 + GEMM_KC);
            let mut c0 = 0;
            while c0 < p.cols {
                let c1 = p.cols.min(c0 + cw);
                if j0 > 0 || p.beta == 1.0 {
                    nn_block::<S, MR, NV, FROM_DA>(s, p, j0, j1, c0, c1);
                } else if p.beta == 0.0 {
                    nn_block::<S, MR, NV, FROM_ZERO>(s, p, j0, j1, c0, c1);
                } else {
                    nn_block::<S, MR, NV, FROM_SCALED>(s, p, j0, j1, c0, c1);
                }
                c0 = c1;
            }
            j0 = j1;
        }
    }
}
