//! Fused linear cross-entropy: the loss of `softmax(A W^T + b)` against targets, and its
//! gradients `dA`, `dW`, `db`, without ever holding the `[B, C]` logits.
//!
//! For a language-model head the logits are the memory problem: 4096 tokens by 128256 classes
//! is 2 GiB of f32, written once, read and rewritten by the cross-entropy and read twice more
//! by the two backward GEMMs. [`Kernels::linear_cross_entropy`] works through the batch in
//! **row chunks** of `Bc` rows. For each chunk:
//!
//! ```text
//! Z_c  = A_c W^T + b          linear_forward (streaming kernel for Bc <= 64, else sgemm)
//! G_c  = dL/dZ_c              the fused cross-entropy, written in place over Z_c
//! dA_c = G_c W                linear_backward_input (streaming kernel, or sgemm)
//! dW  += G_c^T A_c            weight_grad, beta = 1 after the first chunk (rank-k or sgemm)
//! db  += colsum G_c           fixed-order column sums (bias_grad)
//! ```
//!
//! The only memory beyond the inputs and outputs is one chunk of logits (`Bc * C` floats,
//! shared by all threads: each step inside a chunk is itself split over rayon) plus the GEMM
//! packing buffers. The reduction's scale (`1 / sum of target weights` for `Mean`) comes from
//! one pass over the labels before the first chunk, so every chunk's gradient is final.
//!
//! **Chunk shape.** By default one chunk of logits takes at most
//! [`LinearCeOptions::chunk_bytes`] (16 MiB). Each row chunk reads `W` twice (forward and
//! `dA`) and reads and writes `dW` once, so what a chunk costs beyond its arithmetic depends on
//! how the GEMMs read `W`:
//!
//! * On the AVX2 and AVX-512 tiers, chunks of up to 64 rows take the streaming GEMMs of
//!   [`crate::linear`] (`W` read once from its rows, no packing, prefetched ahead of the
//!   micro-kernels), which hide that traffic behind their arithmetic from about
//!   [`STREAM_MIN_ROWS`] rows. So when the budget holds that many rows (or the whole batch),
//!   chunks are whole rows, at most 64 of them, a multiple of 16 when there are 16 or more.
//!   At `(B, C, D)` = `(1024, 128256, 256)` that is 32 rows, 16 MiB.
//! * Otherwise (the portable and reference tiers, or a budget below 16 rows), whole rows when
//!   the budget holds at least [`ROW_MODE_MIN_ROWS`] of them (or the whole batch): sgemm packs
//!   `W` again for each chunk, so short chunks of long rows would spend their time moving it.
//!   Below that, the **class-chunked** mode runs over as many rows as the budget allows with
//!   class blocks of at least [`CLASS_BLOCK_MIN`] classes: it reads `W` a fixed number of
//!   times and pays for it with one more forward GEMM.
//!
//! [`LinearCeOptions::chunk_rows`] and [`LinearCeOptions::chunk_classes`] set the shape by
//! hand.
//!
//! **Class chunks.** Each row chunk is cut into class blocks of `Ck` classes, in two passes:
//! pass 1 computes every block's logits and merges the rows' `(max, sum)` states online (the
//! logsumexp, the target logit, the smoothing sum, the argmax); pass 2 recomputes each block's
//! logits, turns them into the gradient with the row's final logsumexp, and accumulates `dA`,
//! `dW` and `db` from it (last block first, whose logits pass 1 left in the buffer). Memory
//! is `Bc * Ck` floats, at the price of a second forward GEMM over all but one block (four
//! GEMMs instead of three). Class chunks need class-index targets: probability targets are
//! themselves `[B, C]`, so whole rows cost no more than they do, and automatic chunking gives
//! them whole rows (at least one) whatever the budget.
//!
//! **Determinism.** The chunks and the class blocks are functions of the shape and the
//! options only, GEMM tiles never change a result (see [`crate::linear`]), and chunks are
//! accumulated in order, so loss and gradients are bit-identical for any number of threads.
//! They equal the unfused composition (forward, cross-entropy, the two backward GEMMs) up to
//! float rounding: the logits have the same bits (the streaming GEMMs form sgemm's sums), the
//! loss the same per-row values, and the `dW` and `db` sums are associated by chunk.

use crate::arch::generic::ce::{CeArgs, CeRowOut};
use crate::cross_entropy::{
    class_of, CePlan, CrossEntropyOptions, CrossEntropyOutputs, CrossEntropyStats, Label,
    RawLogits, Reduction, Targets,
};
use crate::dispatch::Kernels;
use crate::error::{check_len, Error, Result};
use crate::linear::{MatrixLayout, Sgd};
use crate::parallel::{for_each_row_block, SyncPtr};
use crate::tuning::{CLASS_BLOCK_MIN, DEFAULT_CHUNK_BYTES, ROW_MODE_MIN_ROWS, STREAM_MIN_ROWS};

/// Options of [`Kernels::linear_cross_entropy`]: the cross-entropy's options plus the
/// chunking.
///
/// ```
/// use softmax_kernels::{CrossEntropyOptions, LinearCeOptions, Reduction};
/// let opts = LinearCeOptions::new(CrossEntropyOptions::default().reduction(Reduction::Sum))
///     .chunk_rows(64)
///     .accumulate(true);
/// assert_eq!(opts.chunk_rows, Some(64));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct LinearCeOptions<'a> {
    /// The cross-entropy's options (reduction, weights, ignore_index, smoothing, z-loss,
    /// softcap, upstream scale), with the same meaning as for the unfused functions.
    pub ce: CrossEntropyOptions<'a>,
    /// Rows per chunk (`>= 1`); `None` sizes it from [`LinearCeOptions::chunk_bytes`].
    pub chunk_rows: Option<usize>,
    /// Classes per block (`>= 1`); `None` chooses: whole rows when
    /// [`LinearCeOptions::chunk_bytes`] holds at least [`STREAM_MIN_ROWS`] of them on a tier
    /// with streaming GEMMs (chunks of at most 64 rows then) or [`ROW_MODE_MIN_ROWS`] on
    /// another (or the whole batch), or [`LinearCeOptions::chunk_rows`] is set, or the targets
    /// are probabilities; class blocks otherwise (see the module docs). A value below `C` turns
    /// on the two-pass class-chunked mode.
    pub chunk_classes: Option<usize>,
    /// The budget in bytes for one chunk of logits (default [`DEFAULT_CHUNK_BYTES`]).
    pub chunk_bytes: usize,
    /// Add `dW` and `db` to the buffers' contents (as PyTorch accumulates `.grad`) instead of
    /// overwriting them. `dA` is always overwritten.
    pub accumulate: bool,
}

impl Default for LinearCeOptions<'_> {
    fn default() -> Self {
        LinearCeOptions::new(CrossEntropyOptions::default())
    }
}

impl<'a> LinearCeOptions<'a> {
    /// The given cross-entropy options with automatic chunking.
    pub fn new(ce: CrossEntropyOptions<'a>) -> Self {
        LinearCeOptions {
            ce,
            chunk_rows: None,
            chunk_classes: None,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            accumulate: false,
        }
    }
    /// Sets the rows per chunk.
    pub fn chunk_rows(mut self, rows: usize) -> Self {
        self.chunk_rows = Some(rows);
        self
    }
    /// Sets the classes per block (class-chunked mode when below `C`).
    pub fn chunk_classes(mut self, classes: usize) -> Self {
        self.chunk_classes = Some(classes);
        self
    }
    /// Sets the budget for one chunk of logits.
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes;
        self
    }
    /// Sets whether `dW` and `db` accumulate.
    pub fn accumulate(mut self, on: bool) -> Self {
        self.accumulate = on;
        self
    }

    /// The chunk shape `(rows, classes)` for a `[b, c]` problem.
    ///
    /// `stream` is the largest batch the tier's streaming GEMMs serve (`None` when it has
    /// none): automatic chunking then prefers whole rows in chunks of at most that many rows.
    fn chunks(
        &self,
        b: usize,
        c: usize,
        probs: bool,
        stream: Option<usize>,
    ) -> Result<(usize, usize)> {
        let bad = |name, v: usize| {
            Err(Error::InvalidOption {
                name,
                value: v.to_string(),
                expected: ">= 1",
            })
        };
        if self.chunk_rows == Some(0) {
            return bad("chunk_rows", 0);
        }
        if self.chunk_classes == Some(0) {
            return bad("chunk_classes", 0);
        }
        if self.chunk_bytes == 0 {
            return bad("chunk_bytes", 0);
        }
        let floats = (self.chunk_bytes / 4).max(1);
        let b1 = b.max(1);
        Ok(match (self.chunk_rows, self.chunk_classes) {
            (Some(r), Some(k)) => (r.min(b1), k.min(c)),
            // Rows given: whole rows, whatever the budget.
            (Some(r), None) => (r.min(b1), c),
            (None, Some(k)) => {
                let ck = k.min(c);
                ((floats / ck).clamp(1, b1), ck)
            }
            (None, None) => {
                let fit = floats / c;
                if probs {
                    // Probability targets are `[B, C]` themselves: whole rows, as many as fit
                    // (at least one).
                    (fit.clamp(1, b1), c)
                } else if let Some(bc) = stream_chunk_rows(fit, b1, stream) {
                    (bc, c)
                } else if fit >= ROW_MODE_MIN_ROWS.min(b1) {
                    (fit.min(b1), c)
                } else {
                    // Class blocks of at least CLASS_BLOCK_MIN classes over as many rows as
                    // the budget allows (the whole batch when it can).
                    let bc = (floats / CLASS_BLOCK_MIN.min(c)).clamp(1, b1);
                    (bc, (floats / bc).clamp(1, c))
                }
            }
        })
    }
}

/// The gradients [`Kernels::linear_cross_entropy`] computes, each optional, and the
/// cross-entropy's per-row outputs.
#[derive(Debug, Default)]
pub struct LinearCeOutputs<'a> {
    /// `dL/dA`, `[B, D]`, overwritten.
    pub da: Option<&'a mut [f32]>,
    /// `dL/dW`, in `W`'s layout (`[C, D]` with its leading dimension; the padding is
    /// untouched), overwritten unless [`LinearCeOptions::accumulate`].
    pub dw: Option<&'a mut [f32]>,
    /// `dL/db`, `C` floats, overwritten unless [`LinearCeOptions::accumulate`].
    pub db: Option<&'a mut [f32]>,
    /// Per-row loss, logsumexp and argmax, as [`Kernels::cross_entropy_with`].
    pub ce: CrossEntropyOutputs<'a>,
}

/// The problem's layout and its chunking.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// `W`: `[C, D]` and its leading dimension.
    layout: MatrixLayout,
    /// `dW`'s leading dimension.
    dw_ld: usize,
    /// Rows of the batch (`B`).
    b: usize,
    /// Rows per chunk.
    bc: usize,
    /// Classes per block (`C`: whole rows).
    ck: usize,
}

/// A row's state in the class-chunked mode, merged over class blocks.
#[derive(Clone, Copy, Debug)]
struct RowState {
    /// The running maximum of the (capped) logits.
    m: f64,
    /// `sum exp(z - m)` so far.
    s: f64,
    /// The (capped) target logit.
    zt: f64,
    /// `sum_c w_c (z_c - m)` so far (label smoothing).
    dot: f64,
    /// `sum_c w_c` over the classes merged so far (to move `dot` to a new maximum).
    wseen: f64,
    /// The first index of the maximum and the maximum it belongs to.
    arg: u32,
    argv: f64,
    /// A NaN or `+inf` was seen: the row's loss and gradient are NaN.
    nan: bool,
}

impl RowState {
    const EMPTY: RowState = RowState {
        m: f64::NEG_INFINITY,
        s: 0.0,
        zt: 0.0,
        dot: 0.0,
        wseen: 0.0,
        arg: 0,
        argv: f64::NEG_INFINITY,
        nan: false,
    };

    /// The row's logsumexp (NaN when the row is NaN or all `-inf`).
    fn lse(&self) -> f64 {
        if self.nan || !self.m.is_finite() {
            f64::NAN
        } else {
            self.m + self.s.ln()
        }
    }
}

/// A row's part in a class-chunked call: its class, weight and gradient scale.
#[derive(Clone, Copy, Debug)]
struct RowTarget {
    /// The target class, or `None` for an ignored row.
    class: Option<usize>,
    /// `w_t` (1 without weights).
    wt: f64,
    /// The gradient scale `g`.
    g: f64,
}

impl Kernels {
    /// Fused linear cross-entropy: the loss of `Z = A W^T + b` against `targets`, and any of
    /// `dA`, `dW`, `db` (asked for in `out`), without the `[B, C]` logits (see the module
    /// docs for the chunking).
    ///
    /// `a` is `[B, D]`, `w` is `layout` = `[C, D]` with its leading dimension, `bias` has `C`
    /// floats; `targets` has `B` labels or `B * C` probabilities. The loss, its reduction, the
    /// gradients' scale and every option mean exactly what they mean for
    /// [`Kernels::cross_entropy_with`] on the logits `Z`. With no gradient asked for, the
    /// logits are read once and nothing is written back (loss only).
    ///
    /// # Errors
    /// [`Error::ZeroDim`] if `C == 0`; the layout errors of [`Kernels::linear_forward`] for
    /// `w` and `dw`; [`Error::NotMultiple`] / [`Error::LengthMismatch`] for `a`, `bias`,
    /// `targets`, `da`, `db` and the per-row outputs; everything
    /// [`Kernels::cross_entropy_with`] reports (bad labels, options); [`Error::InvalidOption`]
    /// for a zero chunk size or class chunks with probability targets;
    /// [`Error::SizeOverflow`] when the chunk cannot be allocated. Nothing is written on an
    /// error.
    ///
    /// ```
    /// use softmax_kernels::{Kernels, LinearCeOptions, LinearCeOutputs, MatrixLayout, Targets};
    /// let k = Kernels::best();
    /// let a = [1.0f32, 0.0, /* sample 2 */ 0.0, 1.0]; // [B = 2, D = 2]
    /// let w = [0.0f32; 6]; // [C = 3, D = 2]: all logits 0
    /// let (mut dw, mut db) = ([0.0f32; 6], [0.0f32; 3]);
    /// let mut out = LinearCeOutputs { dw: Some(&mut dw), db: Some(&mut db), ..Default::default() };
    /// let st = k.linear_cross_entropy(&a, &w, MatrixLayout::new(3, 2), None,
    ///                                 Targets::Classes(&[0i64, 2]), &LinearCeOptions::default(),
    ///                                 &mut out)?;
    /// assert!((st.loss - 3f32.ln()).abs() < 1e-6); // uniform: ln C
    /// // db = mean over samples of (1/3 - onehot)
    /// assert!((db[0] - (1.0 / 3.0 - 0.5)).abs() < 1e-6 && (db[1] - 1.0 / 3.0).abs() < 1e-6);
    /// // dW[0] = ((1/3 - 1) * a_0 + (1/3) * a_1) / 2
    /// assert!((dw[0] + 1.0 / 3.0).abs() < 1e-6 && (dw[1] - 1.0 / 6.0).abs() < 1e-6);
    /// # Ok::<(), softmax_kernels::Error>(())
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn linear_cross_entropy<L: Label>(
        &self,
        a: &[f32],
        w: &[f32],
        layout: MatrixLayout,
        bias: Option<&[f32]>,
        targets: Targets<'_, L>,
        opts: &LinearCeOptions<'_>,
        out: &mut LinearCeOutputs<'_>,
    ) -> Result<CrossEntropyStats> {
        self.lce(a, w, layout, bias, targets, opts, out, layout.ld)
    }

    /// [`Kernels::linear_cross_entropy`] with `dW` at its own row stride `dw_ld >= D`.
    #[allow(clippy::too_many_arguments)]
    fn lce<L: Label>(
        &self,
        a: &[f32],
        w: &[f32],
        layout: MatrixLayout,
        bias: Option<&[f32]>,
        targets: Targets<'_, L>,
        opts: &LinearCeOptions<'_>,
        out: &mut LinearCeOutputs<'_>,
        dw_ld: usize,
    ) -> Result<CrossEntropyStats> {
        let MatrixLayout {
            rows: c, cols: d, ..
        } = layout;
        if c == 0 {
            return Err(Error::ZeroDim {
                arg: "w rows (classes)",
            });
        }
        layout.check("w", w.len())?;
        let b = match (d, targets) {
            (0, Targets::Classes(t)) => t.len(),
            (0, Targets::Probs(y)) => crate::error::rows_of("targets", y.len(), c)?,
            _ => crate::error::rows_of("a", a.len(), d)?,
        };
        check_len("a", a.len(), b * d)?;
        if let Some(bias) = bias {
            check_len("bias", bias.len(), c)?;
        }
        if let Some(da) = out.da.as_deref() {
            check_len("da", da.len(), a.len())?;
        }
        let dw_layout = layout.with_ld(dw_ld);
        if let Some(dw) = out.dw.as_deref() {
            dw_layout.check("dw", dw.len())?;
        }
        if let Some(db) = out.db.as_deref() {
            check_len("db", db.len(), c)?;
        }
        let probs = matches!(targets, Targets::Probs(_));
        let stream = self.linear.stream.map(|st| st.max_rows);
        let (bc, ck) = opts.chunks(b, c, probs, stream)?;
        if ck < c && probs {
            return Err(Error::InvalidOption {
                name: "chunk_classes",
                value: ck.to_string(),
                expected: "C (whole rows) with probability targets",
            });
        }
        let plan = self.ce_plan(targets, b, c, &opts.ce, &out.ce)?;
        let want_argmax = out.ce.argmax.is_some();
        if b == 0 {
            // No rows: the gradients of an empty sum, before anything is sized by `C`.
            if !opts.accumulate {
                if let Some(dw) = out.dw.as_deref_mut() {
                    self.weight_grad(1.0, &[], &[], 0.0, dw, dw_layout)?;
                }
                if let Some(db) = out.db.as_deref_mut() {
                    self.bias_grad(1.0, &[], 0.0, db)?;
                }
            }
            return Ok(plan.finish(&opts.ce, 0.0, 0, want_argmax, &targets));
        }
        let mut z = alloc_chunk(bc.min(b), ck)?;
        let sh = Shape {
            layout,
            dw_ld,
            b,
            bc,
            ck,
        };
        let (total, correct) = if ck < c {
            let Targets::Classes(t) = targets else {
                unreachable!("probability targets were rejected above")
            };
            self.lce_class_chunked(a, w, sh, bias, t, opts, &plan, out, &mut z)?
        } else {
            self.lce_row_chunked(a, w, sh, bias, targets, opts, &plan, out, &mut z)?
        };
        Ok(plan.finish(&opts.ce, total, correct, want_argmax, &targets))
    }

    /// The row-chunked mode: whole rows of logits, `bc` rows at a time, in `z`.
    #[allow(clippy::too_many_arguments)]
    fn lce_row_chunked<L: Label>(
        &self,
        a: &[f32],
        w: &[f32],
        sh: Shape,
        bias: Option<&[f32]>,
        targets: Targets<'_, L>,
        opts: &LinearCeOptions<'_>,
        plan: &CePlan,
        out: &mut LinearCeOutputs<'_>,
        z: &mut [f32],
    ) -> Result<(f64, usize)> {
        let Shape { layout, b, bc, .. } = sh;
        let dw_layout = layout.with_ld(sh.dw_ld);
        let MatrixLayout {
            rows: c, cols: d, ..
        } = layout;
        let want_grad = out.da.is_some() || out.dw.is_some() || out.db.is_some();
        let param_beta = |first: bool| if first && !opts.accumulate { 0.0 } else { 1.0 };
        debug_assert!(b > 0, "the caller handles an empty batch");
        let (mut total, mut correct) = (0.0f64, 0usize);
        let mut r0 = 0;
        while r0 < b {
            let n = bc.min(b - r0);
            let zc = &mut z[..n * c];
            let ac = &a[r0 * d..(r0 + n) * d];
            self.linear_forward(ac, w, layout, bias, zc)?;
            let (tc, ce_c) = chunk_targets(targets, &opts.ce, r0, n, c);
            let mut oc = sub_outputs(&mut out.ce, r0, n);
            let zp = zc.as_mut_ptr();
            let gp = if want_grad { zp } else { std::ptr::null_mut() };
            let z = RawLogits::dense(zp, gp, n, c);
            // SAFETY: `zc` holds `n * c` floats, the gradient is written in place over it (or
            // not at all); `ce_plan` accepted the whole call, and `chunk_targets` /
            // `sub_outputs` give the same arguments restricted to rows `r0 .. r0 + n`.
            let (t, k) = unsafe { self.ce_rows(z, tc, &ce_c, plan, &mut oc) };
            total += t;
            correct += k;
            if let Some(da) = out.da.as_deref_mut() {
                self.linear_backward_input(zc, w, layout, &mut da[r0 * d..(r0 + n) * d])?;
            }
            if let Some(dw) = out.dw.as_deref_mut() {
                self.weight_grad(1.0, zc, ac, param_beta(r0 == 0), dw, dw_layout)?;
            }
            if let Some(db) = out.db.as_deref_mut() {
                self.bias_grad(1.0, zc, param_beta(r0 == 0), db)?;
            }
            r0 += n;
        }
        Ok((total, correct))
    }

    /// The class-chunked mode: `bc` rows by `ck` classes at a time, two passes per row chunk.
    #[allow(clippy::too_many_arguments)]
    fn lce_class_chunked<L: Label>(
        &self,
        a: &[f32],
        w: &[f32],
        sh: Shape,
        bias: Option<&[f32]>,
        t: &[L],
        opts: &LinearCeOptions<'_>,
        plan: &CePlan,
        out: &mut LinearCeOutputs<'_>,
        z: &mut [f32],
    ) -> Result<(f64, usize)> {
        let Shape {
            layout,
            dw_ld,
            b,
            bc,
            ck,
        } = sh;
        let MatrixLayout {
            rows: c,
            cols: d,
            ld,
        } = layout;
        let o = &opts.ce;
        let eps = o.label_smoothing as f64;
        let want_grad = out.da.is_some() || out.dw.is_some() || out.db.is_some();
        let want_argmax = out.ce.argmax.is_some();
        let param_beta = |first: bool| if first && !opts.accumulate { 0.0 } else { 1.0 };
        // The per-block tables below are sized by the block count, which no buffer bounds when
        // `D = 0` and there is no bias: they are allocated fallibly.
        let mut blocks: Vec<(usize, usize)> = filled("class blocks", c.div_ceil(ck), (0, 0))?;
        for (i, bl) in blocks.iter_mut().enumerate() {
            *bl = (i * ck, ck.min(c - i * ck));
        }
        // Per block: the sum of its class weights (for the smoothing term).
        let mut block_wsum: Vec<f64> = filled("class blocks", blocks.len(), 0.0)?;
        for (ws, &(k0, kn)) in block_wsum.iter_mut().zip(&blocks) {
            *ws = o.weight.map_or(kn as f64, |wv| {
                wv[k0..k0 + kn].iter().map(|&v| v as f64).sum()
            });
        }
        // A block's rows of W (trimmed: the last row without its padding) and its layout.
        let w_block = |k0: usize, kn: usize| {
            let lay = MatrixLayout {
                rows: kn,
                cols: d,
                ld,
            };
            (&w[k0 * ld..(k0 + kn - 1) * ld + d], lay)
        };
        let b_block = |k0: usize, kn: usize| bias.map(|bv| &bv[k0..k0 + kn]);
        debug_assert!(b > 0, "the caller handles an empty batch");
        let wsp = SyncPtr(
            o.weight
                .map_or(std::ptr::null_mut(), |wv| wv.as_ptr() as *mut f32),
        );
        let cap = o.softcap.unwrap_or(0.0);
        let (mut total, mut correct) = (0.0f64, 0usize);
        let mut state = vec![RowState::EMPTY; bc];
        // Per row and block: the block's own logsumexp (pass 1), reused in pass 2.
        let nbl = bc.checked_mul(blocks.len()).ok_or(Error::SizeOverflow {
            arg: "class blocks",
        })?;
        let mut block_lse = filled("class blocks", nbl, (0.0f64, 0.0f64))?;
        let nb = blocks.len();
        let mut r0 = 0;
        while r0 < b {
            let n = bc.min(b - r0);
            let ac = &a[r0 * d..(r0 + n) * d];
            let rt: Vec<RowTarget> = (0..n)
                .map(|i| {
                    let class = class_of(t[r0 + i], c, o.ignore_index).ok().flatten();
                    let wt = match (class, o.weight) {
                        (Some(k), Some(wv)) => wv[k] as f64,
                        _ => 1.0,
                    };
                    let rs = o.row_scale.map_or(1.0, |g| g[r0 + i] as f64);
                    RowTarget {
                        class,
                        wt,
                        g: plan.red_scale * o.scale as f64 * rs,
                    }
                })
                .collect();
            state[..n].fill(RowState::EMPTY);
            // Pass 1: merge the blocks' (max, sum) states.
            for (bi, &(k0, kn)) in blocks.iter().enumerate() {
                let zc = &mut z[..n * kn];
                let (wk, lay) = w_block(k0, kn);
                self.linear_forward(ac, wk, lay, b_block(k0, kn), zc)?;
                let (zp, sp, lp) = (
                    SyncPtr(zc.as_mut_ptr()),
                    SyncPtr(state.as_mut_ptr()),
                    SyncPtr(block_lse.as_mut_ptr()),
                );
                let rtp = &rt;
                let wsum_k = block_wsum[bi];
                for_each_row_block(n, kn, move |rows| {
                    for i in rows {
                        let tgt = rtp[i];
                        let local_t = tgt.class.filter(|&k| k >= k0 && k < k0 + kn);
                        let wp = wsp.get().cast_const();
                        let wk = if wp.is_null() {
                            wp
                        } else {
                            wp.wrapping_add(k0)
                        };
                        let dot = eps != 0.0 && tgt.class.is_some();
                        let args = CeArgs {
                            t: local_t.map_or(0, |k| k - k0),
                            a0: 1.0,
                            zl2: 0.0,
                            g: 0.0,
                            smooth: 0.0,
                            fix_t: 0.0,
                            weights: wk,
                            cap,
                            dot,
                            argmax: want_argmax,
                            next: std::ptr::null(),
                            known_max: None,
                            defer: false,
                            keep: false,
                            kept: None,
                        };
                        // SAFETY: row `i < n` of the chunk lies inside `zc` (`n * kn` floats);
                        // `args.t < kn`; `wk` is null or `wv[k0..k0 + kn]`. Rows are disjoint
                        // across tasks, so each task writes its own state and block-lse
                        // entries.
                        unsafe {
                            let zr = zp.get().cast_const().add(i * kn);
                            let r = (self.ce.row)(zr, std::ptr::null_mut(), kn, &args);
                            let st = &mut *sp.get().add(i);
                            let has_t = local_t.is_some();
                            let lk = merge_block(st, &r, zr, wk, kn, k0, has_t, dot, wsum_k, cap);
                            *lp.get().add(i * nb + bi) = lk;
                        }
                    }
                });
            }
            // Row losses and outputs, in row order.
            for i in 0..n {
                let (st, tgt) = (&state[i], &rt[i]);
                let r = r0 + i;
                let lse = st.lse();
                let loss = match tgt.class {
                    None => 0.0,
                    Some(_) if st.nan || !st.m.is_finite() => f64::NAN,
                    Some(_) => {
                        let ls = st.s.ln();
                        let mut l = (1.0 - eps) * tgt.wt * ((st.m - st.zt) + ls)
                            + o.z_loss as f64 * lse * lse;
                        if eps != 0.0 {
                            l += eps / c as f64 * (plan.wsum * ls - st.dot);
                        }
                        l
                    }
                };
                total += loss;
                if let Some(k) = tgt.class {
                    correct += (st.arg as usize == k) as usize;
                }
                if let Some(rl) = out.ce.row_loss.as_deref_mut() {
                    rl[r] = loss as f32;
                }
                if let Some(lo) = out.ce.lse.as_deref_mut() {
                    lo[r] = lse as f32;
                }
                if let Some(am) = out.ce.argmax.as_deref_mut() {
                    am[r] = st.arg;
                }
            }
            if !want_grad {
                r0 += n;
                continue;
            }
            // Pass 2: each block's gradient from the rows' final logsumexp, last block
            // first: pass 1 left its logits in `z`, so it needs no second forward GEMM.
            for (step, (bi, &(k0, kn))) in blocks.iter().enumerate().rev().enumerate() {
                let zc = &mut z[..n * kn];
                let (wk, lay) = w_block(k0, kn);
                if step > 0 {
                    self.linear_forward(ac, wk, lay, b_block(k0, kn), zc)?;
                }
                let (zp, lp) = (SyncPtr(zc.as_mut_ptr()), SyncPtr(block_lse.as_mut_ptr()));
                let (stp, rtp) = (&state, &rt);
                for_each_row_block(n, kn, move |rows| {
                    for i in rows {
                        let (st, tgt) = (stp[i], rtp[i]);
                        // SAFETY: row `i < n` lies inside `zc`; rows are disjoint across
                        // tasks; `block_lse` holds `n * nb` entries written in pass 1.
                        unsafe {
                            let zr = zp.get().add(i * kn);
                            let lk = *lp.get().add(i * nb + bi);
                            let wp = wsp.get().cast_const();
                            let wk = if wp.is_null() {
                                wp
                            } else {
                                wp.wrapping_add(k0)
                            };
                            let row = MergedRow {
                                m: st.m,
                                s: st.s,
                                nan: st.nan,
                                target: tgt
                                    .class
                                    .map(|t| ((t >= k0 && t < k0 + kn).then(|| t - k0), tgt.wt)),
                                g: tgt.g,
                                c,
                                wsum: plan.wsum,
                            };
                            let blk = Block {
                                x: zr,
                                grad: zr,
                                n: kn,
                                weights: wk,
                                m: lk.0,
                                ls: lk.1,
                                kept: None,
                            };
                            block_grad(self, &blk, &row, o);
                        }
                    }
                });
                if let Some(da) = out.da.as_deref_mut() {
                    let dac = &mut da[r0 * d..(r0 + n) * d];
                    let beta = if step == 0 { 0.0 } else { 1.0 };
                    self.linear_backward_input_beta(zc, wk, lay, beta, dac)?;
                }
                if let Some(dw) = out.dw.as_deref_mut() {
                    let dwk = &mut dw[k0 * dw_ld..(k0 + kn - 1) * dw_ld + d];
                    let lay = lay.with_ld(dw_ld);
                    self.weight_grad(1.0, zc, ac, param_beta(r0 == 0), dwk, lay)?;
                }
                if let Some(db) = out.db.as_deref_mut() {
                    self.bias_grad(1.0, zc, param_beta(r0 == 0), &mut db[k0..k0 + kn])?;
                }
            }
            r0 += n;
        }
        Ok((total, correct))
    }

    /// One SGD step of a linear output layer trained with cross-entropy, fused and chunked:
    /// [`Kernels::linear_cross_entropy`] computes `dW` and `db` (into `opt`'s gradient
    /// buffers, one `[C, D]` and one `[C]` float buffer kept across calls) and, if asked,
    /// `da`, all with the weights before the step; then `opt` applies its update
    /// ([`Sgd::apply_grad`], [`Sgd::apply_bias_grad`]: momentum, weight decay, Nesterov as
    /// PyTorch). Returns the loss before the step.
    ///
    /// # Errors
    /// As [`Kernels::linear_cross_entropy`]; [`Error::StateShape`] if `opt`'s state belongs to
    /// another shape; [`Error::InvalidOption`] for `accumulate` (a step uses this batch's
    /// gradient). On an error nothing is changed.
    ///
    /// ```
    /// use softmax_kernels::{Kernels, LinearCeOptions, MatrixLayout, Sgd, SgdOptions, Targets};
    /// let k = Kernels::best();
    /// let a = [1.0f32, -1.0, /* sample 2 */ -1.0, 1.0]; // [B = 2, D = 2]
    /// let (mut w, mut b) = (vec![0.0f32; 4], vec![0.0f32; 2]); // C = 2
    /// let mut opt = Sgd::new(SgdOptions::new(0.5).momentum(0.9))?;
    /// let opts = LinearCeOptions::default();
    /// let mut losses = Vec::new();
    /// for _ in 0..20 {
    ///     let st = k.linear_cross_entropy_step(&a, &mut w, MatrixLayout::new(2, 2), Some(&mut b),
    ///                                          Targets::Classes(&[0i64, 1]), &opts, &mut opt,
    ///                                          None)?;
    ///     losses.push(st.loss);
    /// }
    /// assert!(losses[19] < 0.05 * losses[0]);
    /// # Ok::<(), softmax_kernels::Error>(())
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn linear_cross_entropy_step<L: Label>(
        &self,
        a: &[f32],
        w: &mut [f32],
        layout: MatrixLayout,
        bias: Option<&mut [f32]>,
        targets: Targets<'_, L>,
        opts: &LinearCeOptions<'_>,
        opt: &mut Sgd,
        da: Option<&mut [f32]>,
    ) -> Result<CrossEntropyStats> {
        if opts.accumulate {
            return Err(Error::InvalidOption {
                name: "accumulate",
                value: "true".into(),
                expected: "false for a training step",
            });
        }
        if opts.ce.reduction == Reduction::None {
            return Err(Error::InvalidOption {
                name: "reduction",
                value: "None".into(),
                expected: "Mean or Sum for a training step",
            });
        }
        layout.check("w", w.len())?;
        opt.check_state(layout, bias.as_deref().map(|b| b.len()))?;
        let (c, d) = (layout.rows, layout.cols);
        let n = c.checked_mul(d).ok_or(Error::SizeOverflow { arg: "w" })?;
        let (mut gw, mut gb) = opt.take_grad_buffers(n, if bias.is_some() { c } else { 0 })?;
        let res = {
            let mut out = LinearCeOutputs {
                da,
                dw: Some(&mut gw),
                db: bias.is_some().then_some(&mut gb[..]),
                ce: CrossEntropyOutputs::default(),
            };
            self.lce(a, w, layout, bias.as_deref(), targets, opts, &mut out, d)
        };
        let res = res.and_then(|st| {
            opt.apply_grad(w, layout, &gw)?;
            if let Some(bias) = bias {
                opt.apply_bias_grad(bias, &gb)?;
            }
            Ok(st)
        });
        opt.put_grad_buffers(gw, gb);
        res
    }
}

/// Whole-row chunks through the streaming GEMMs (`stream`: the most rows they serve, `None`
/// on a tier without them), when the budget holds `fit >= STREAM_MIN_ROWS` rows (or the whole
/// batch of `b1`): at most `stream` rows, a multiple of 16 (whole vector panels) when 16 or
/// more.
pub(crate) fn stream_chunk_rows(fit: usize, b1: usize, stream: Option<usize>) -> Option<usize> {
    let sm = stream.filter(|_| fit >= STREAM_MIN_ROWS.min(b1))?;
    let bc = fit.min(sm).min(b1);
    Some(if bc >= 16 { bc / 16 * 16 } else { bc })
}

/// A zeroed buffer of `rows * cols` floats, or [`Error::SizeOverflow`] (never an abort).
pub(crate) fn alloc_chunk(rows: usize, cols: usize) -> Result<Vec<f32>> {
    let n = rows.checked_mul(cols).ok_or(Error::SizeOverflow {
        arg: "logits chunk",
    })?;
    filled("logits chunk", n, 0.0)
}

/// `n` copies of `v`, or [`Error::SizeOverflow`] naming `arg` when they cannot be allocated
/// (never an abort).
fn filled<T: Clone>(arg: &'static str, n: usize, v: T) -> Result<Vec<T>> {
    let mut out = Vec::new();
    n.checked_mul(std::mem::size_of::<T>())
        .filter(|&bytes| bytes <= isize::MAX as usize)
        .ok_or(Error::SizeOverflow { arg })?;
    out.try_reserve_exact(n)
        .map_err(|_| Error::SizeOverflow { arg })?;
    out.resize(n, v);
    Ok(out)
}

/// The targets and options of rows `r0 .. r0 + n` of a call over `[B, c]`.
fn chunk_targets<'t, 'o, L: Label>(
    targets: Targets<'t, L>,
    opts: &CrossEntropyOptions<'o>,
    r0: usize,
    n: usize,
    c: usize,
) -> (Targets<'t, L>, CrossEntropyOptions<'o>) {
    let t = match targets {
        Targets::Classes(t) => Targets::Classes(&t[r0..r0 + n]),
        Targets::Probs(y) => Targets::Probs(&y[r0 * c..(r0 + n) * c]),
    };
    let mut o = *opts;
    o.row_scale = opts.row_scale.map(|g| &g[r0..r0 + n]);
    (t, o)
}

/// The per-row outputs of rows `r0 .. r0 + n`.
fn sub_outputs<'s>(
    out: &'s mut CrossEntropyOutputs<'_>,
    r0: usize,
    n: usize,
) -> CrossEntropyOutputs<'s> {
    CrossEntropyOutputs {
        row_loss: out.row_loss.as_deref_mut().map(|v| &mut v[r0..r0 + n]),
        lse: out.lse.as_deref_mut().map(|v| &mut v[r0..r0 + n]),
        argmax: out.argmax.as_deref_mut().map(|v| &mut v[r0..r0 + n]),
    }
}

/// Merges one class block's row results `r` (block `k0 .. k0 + kn`, logits at `zr`, class
/// weights at `wk` or null) into the row's state; returns the block's own `(max, ln sum)`
/// (the max `-inf` for a block of only `-inf`). `dot`: the smoothing sum is wanted.
///
/// # Safety
/// `zr .. zr + kn` valid for reads; `wk` null or valid for `kn` reads.
#[allow(clippy::too_many_arguments)]
unsafe fn merge_block(
    st: &mut RowState,
    r: &CeRowOut,
    zr: *const f32,
    wk: *const f32,
    kn: usize,
    k0: usize,
    has_t: bool,
    dot: bool,
    wsum_k: f64,
    cap: f32,
) -> (f64, f64) {
    if has_t {
        st.zt = r.zt;
    }
    // The first index of the maximum ignoring NaN, over the blocks in order, whatever else
    // the block holds (as the whole-row kernels report it). With a NaN in the block the
    // reported max is not reliable (the reference reports NaN; a SIMD lane-wise max may drop
    // the largest value next to a NaN, even down to -inf), while the argmax is (it skips NaN
    // lane by lane): take the value at the argmax then.
    let mv = if r.m.is_nan() || r.ls.is_nan() || !r.m.is_finite() {
        // SAFETY: the kernel's argmax is an index of the block.
        let v = unsafe { *zr.add(r.argmax as usize) } as f64;
        if cap != 0.0 {
            cap as f64 * (v / cap as f64).tanh()
        } else {
            v
        }
    } else {
        r.m
    };
    if mv > st.argv {
        st.argv = mv;
        st.arg = (k0 + r.argmax as usize) as u32;
    }
    if r.m == f64::NEG_INFINITY {
        // All -inf, or -inf and NaN (the kernels' max skips NaN): the block adds nothing to
        // the sum, a NaN makes the row NaN, and with smoothing each `w_c (-inf - m)` enters
        // the dot (as in the whole-row sweep, where a zero weight makes it NaN).
        // SAFETY: the caller's ranges.
        unsafe {
            st.nan |= (0..kn).any(|j| (*zr.add(j)).is_nan());
            if dot {
                for j in 0..kn {
                    let wj = if wk.is_null() { 1.0 } else { *wk.add(j) as f64 };
                    st.dot += wj * f64::NEG_INFINITY;
                }
            }
        }
        st.wseen += wsum_k;
        return (f64::NEG_INFINITY, f64::NAN);
    }
    if r.m.is_nan() || r.m == f64::INFINITY || r.ls.is_nan() {
        st.nan = true;
        return (f64::NAN, f64::NAN);
    }
    if st.m == f64::NEG_INFINITY {
        st.s = r.ls.exp();
        st.dot += r.dot;
        st.m = r.m;
    } else if r.m > st.m {
        // Move the running state to the new maximum.
        let shift = st.m - r.m;
        st.s = st.s * shift.exp() + r.ls.exp();
        st.dot += st.wseen * shift + r.dot;
        st.m = r.m;
    } else {
        st.s += (r.ls + (r.m - st.m)).exp();
        st.dot += r.dot + wsum_k * (r.m - st.m);
    }
    st.wseen += wsum_k;
    (r.m, r.ls)
}

/// What the gradient of one row over a block of its classes needs from the whole row: its
/// merged `(max, sum exp(z - max))` (`nan`: the row holds a NaN or `+inf`), its target (the
/// class inside the block, if there, and the target's weight; `None` for an ignored row), its
/// gradient scale `g`, and the class count `c` and weight sum `sum_c w_c` of the whole row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MergedRow {
    pub m: f64,
    pub s: f64,
    pub nan: bool,
    /// `Some((class inside the block or None, w_t))`, `None` when ignored.
    pub target: Option<(Option<usize>, f64)>,
    pub g: f64,
    pub c: usize,
    pub wsum: f64,
}

/// One row's block of classes for [`block_grad`]: its logits `x` and gradient row `grad`
/// (`n` of each; the same pointer in place), the classes' weights (null or `n` floats), and
/// the block's own maximum `m` and `ln sum exp(z - m)` `ls` as the class-target row kernel
/// computes them on these logits. `kept`: `grad` holds what that kernel left with
/// [`CeArgs::keep`] (its `sum exp(z - m)` is this), so only the last pass runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block {
    pub x: *const f32,
    pub grad: *mut f32,
    pub n: usize,
    pub weights: *const f32,
    pub m: f64,
    pub ls: f64,
    pub kept: Option<f64>,
}

/// The gradient of one row over a block of its classes ([`Block`]), written to the block's
/// gradient row, from the whole row's [`MergedRow`]. Used by the class-chunked fused linear
/// cross-entropy (in place, recomputing the block's exps) and by the vocabulary-sharded
/// cross-entropy (from the kept exps).
///
/// # Safety
/// `b.x .. b.x + b.n` valid for reads, `b.grad .. b.grad + b.n` for reads and writes (equal
/// to `b.x` or not overlapping it); `b.weights` null or `b.n` weights; the block class of
/// `row.target` `< b.n`; with `b.kept`, `b.grad` holds what the kernel left with
/// [`CeArgs::keep`] for these logits.
pub(crate) unsafe fn block_grad(
    k: &Kernels,
    b: &Block,
    row: &MergedRow,
    o: &CrossEntropyOptions<'_>,
) {
    use crate::arch::special::fill;
    let (zr, kn, wk, lk) = (b.grad, b.n, b.weights, (b.m, b.ls));
    let Some((local_t, wt)) = row.target else {
        // SAFETY: the caller's range.
        unsafe { fill(zr, kn, 0.0) };
        return;
    };
    if row.nan || !row.m.is_finite() {
        // SAFETY: the caller's range.
        unsafe { fill(zr, kn, f32::NAN) };
        return;
    }
    let (eps, c) = (o.label_smoothing as f64, row.c);
    let lse = row.m + row.s.ln();
    let g = row.g;
    // Without smoothing the weight sum plays no part (a NaN weight of an unused class stays
    // out, as in the whole-row kernels).
    let a0 = (1.0 - eps) * wt
        + if eps == 0.0 {
            0.0
        } else {
            eps / c as f64 * row.wsum
        };
    // The coefficient of `p` as the whole-row kernel forms it (`cross_entropy_with`): from
    // the f32 roundings of `g`, `a0` and `2 z_loss`. With a subnormal `g` (a tiny `row_scale`)
    // and huge class weights, `g` unrounded here against the rounded one there differed by
    // `2^-150 |a0|`, far above the f32 rounding of a gradient whose terms cancel.
    let coef = g as f32 as f64 * (a0 as f32 as f64 + (2.0 * o.z_loss) as f64 * lse);
    let smooth = (g * eps / c as f64) as f32;
    let fix_t = (g * (1.0 - eps) * wt) as f32;
    if lk.0 == f64::NEG_INFINITY {
        // Every probability of the block is 0: only the smoothing and target terms remain.
        // SAFETY: the caller's ranges.
        unsafe {
            for j in 0..kn {
                let wj = if wk.is_null() { 1.0 } else { *wk.add(j) };
                *zr.add(j) = if smooth == 0.0 { 0.0 } else { -(smooth * wj) };
            }
            if let Some(j) = local_t {
                *zr.add(j) -= fix_t;
            }
        }
        return;
    }
    let args = CeArgs {
        t: local_t.unwrap_or(0),
        a0: 1.0,
        zl2: 0.0,
        // The kernel scales `exp(z - lse_k)` by this, `lse_k = m_k + ls_k` the block's own
        // logsumexp: `coef exp(z - lse)` overall. Formed relative to the maxima, as
        // `(m_k - m) + (ls_k - ln s)`: absolute logsumexps of large logits would lose
        // `|m| 2^-52` in the difference.
        g: (coef * ((lk.0 - row.m) + (lk.1 - row.s.ln())).exp()) as f32,
        smooth,
        fix_t: if local_t.is_some() { fix_t } else { 0.0 },
        weights: wk,
        cap: o.softcap.unwrap_or(0.0),
        // The kernels' register-resident path for short rows has no smoothing term; asking
        // for the (unused) dot keeps smoothed rows on the general path.
        dot: smooth != 0.0,
        argmax: false,
        next: std::ptr::null(),
        // The block's maximum is known (the kernel's own on these logits, exact in f32):
        // without a cap the kernel skips its max pass.
        known_max: o.softcap.is_none().then_some(lk.0 as f32),
        defer: false,
        keep: false,
        kept: b.kept.map(|total| (lk.0, total)),
    };
    // SAFETY: the contract above; `args.t < kn`.
    unsafe { (k.ce.row)(b.x, zr, kn, &args) };
}

/// Fused linear cross-entropy on the active tier ([`Kernels::linear_cross_entropy`]).
///
/// ```
/// use softmax_kernels::{linear_cross_entropy, LinearCeOptions, LinearCeOutputs, MatrixLayout,
///                       Targets};
/// // One sample, D = 1, C = 2: logits [a w_0, a w_1] = [2, 0].
/// let mut da = [0.0f32];
/// let mut out = LinearCeOutputs { da: Some(&mut da), ..Default::default() };
/// let st = linear_cross_entropy(&[1.0], &[2.0, 0.0], MatrixLayout::new(2, 1), None,
///                               Targets::Classes(&[0u32]), &LinearCeOptions::default(),
///                               &mut out)?;
/// let p0 = 1.0 / (1.0 + (-2.0f32).exp());
/// assert!((st.loss + p0.ln()).abs() < 1e-6);
/// assert!((da[0] - (p0 - 1.0) * 2.0).abs() < 1e-6); // dz . W[:, 0] = (p0 - 1) 2 + p1 0
/// # Ok::<(), softmax_kernels::Error>(())
/// ```
///
/// # Errors
/// As [`Kernels::linear_cross_entropy`], and [`Error::BadIsaEnv`] from [`Kernels::active`].
pub fn linear_cross_entropy<L: Label>(
    a: &[f32],
    w: &[f32],
    layout: MatrixLayout,
    bias: Option<&[f32]>,
    targets: Targets<'_, L>,
    opts: &LinearCeOptions<'_>,
    out: &mut LinearCeOutputs<'_>,
) -> Result<CrossEntropyStats> {
    Kernels::active()?.linear_cross_entropy(a, w, layout, bias, targets, opts, out)
}
