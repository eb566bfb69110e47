//! Fused cross-entropy: the loss and its gradient `dL/dz` in two sweeps over the logits, with
//! one exp per element, and PyTorch's `F.cross_entropy` semantics by default.
//!
//! For a row `z` (soft-capped first if asked: `z <- cap tanh(z / cap)`), `lse = m + ln sum exp(z - m)`
//! and `p = exp(z - lse)`. With a class target `t`, class weights `w` (all 1 by default),
//! label smoothing `eps` and z-loss coefficient `zl`:
//!
//! ```text
//! loss_r = (1 - eps) w_t (lse - z_t) + (eps / C) sum_c w_c (lse - z_c) + zl lse^2
//! dloss_r/dz_c = ((1 - eps) w_t + (eps / C) sum_k w_k + 2 zl lse) p_c - (eps / C) w_c - (1 - eps) w_t [c = t]
//! ```
//!
//! With probability targets `y` (rows of `C` floats), `y' = (1 - eps) y + eps / C`:
//!
//! ```text
//! loss_r = sum_c w_c y'_c (lse - z_c) + zl lse^2
//! dloss_r/dz_c = (sum_k w_k y'_k + 2 zl lse) p_c - w_c y'_c
//! ```
//!
//! Reductions: `Sum` adds the rows' losses; `Mean` divides the sum by the sum of `w_t` over
//! the rows that are not ignored (class targets, as PyTorch) or by the number of rows
//! (probability targets, as PyTorch); `None` returns every row's loss in
//! [`CrossEntropyOutputs::row_loss`]. The gradient is the reduction's scale (`1 / denominator`
//! for `Mean`, 1 otherwise) times [`CrossEntropyOptions::scale`] times, for `None`, the row's
//! entry of [`CrossEntropyOptions::row_scale`]. Ignored rows have loss 0 and gradient 0.
//!
//! | this crate | PyTorch `F.cross_entropy` |
//! |---|---|
//! | `reduction: Mean` (default), `Sum`, `None` | `reduction='mean'`, `'sum'`, `'none'` |
//! | `weight: Some(&w)` | `weight=w` |
//! | `ignore_index: Some(-100)` (default), `None` to disable | `ignore_index=-100` |
//! | `label_smoothing: eps` | `label_smoothing=eps` (`eps / C` spread, same weighting) |
//! | `z_loss: zl` | (PaLM's z-loss; not in PyTorch) |
//! | `softcap: Some(cap)` | (Gemma 2's logit soft-capping; not in PyTorch) |
//! | `all_ignored: Nan` (default) / `Zero` | NaN (`0 / 0`) / - |
//! | bad label: `Err(Error::BadLabel { row, label, .. })` | device assert / IndexError |
//! | NaN in a row: that row's loss and gradient NaN | same |
//! | `-inf` at the target: loss `+inf` | same |
//! | all `-inf` or a `+inf` logit in a row: NaN loss and gradient | same |
//! | **an ignored row holding NaN: loss 0, gradient 0** | gradient NaN (the NaN `p` times a zero weight) |
//! | **`Mean` whose f32 row losses overflow when added: finite (summed in f64)** | `inf` |
//! | **argmax output of a row holding NaN: the first index of the largest non-NaN logit** | `torch.argmax`: the NaN's index |
//!
//! The last three rows are deliberate differences (`tests/pytorch_differences.rs`): an ignored
//! row contributes nothing, so padding positions with garbage logits cannot poison a batch's
//! gradient; the f64 sum gives the exact mean where PyTorch's f32 sum overflows; and the
//! argmax is a prediction, which a NaN cannot be (the row's loss is NaN, so the NaN is not
//! hidden). [`CrossEntropyStats::correct`] counts with this argmax.
//!
//! Labels are validated in one pass over the `B` labels before any logit is read (`Mean` needs
//! the weight sum before the first gradient is scaled), so on a bad label nothing is written.
//! The row losses are summed in f64 over fixed row blocks, so the loss is bit-identical for any
//! number of threads.
//!
//! Rows of at most 4 vectors (64 classes on AVX-512, 32 on AVX2) without smoothing or cap are
//! held in registers and, when `sum_c exp(z_c - z_t) <= 2^60`, shifted by their target logit
//! instead of their maximum (the target's term is 1, so every argument is below 41.6; each
//! argument's rounding is corrected exactly, so the probabilities are at least as accurate as
//! with the maximum); the loss is then `ln s`. Other rows take the maximum. Without weights and
//! z-loss, each group of 16 such rows adds its loss as `sum (m - z_t) + ln prod s` (one `ln`
//! per group, inline: `crate::ln`). The path a row takes depends on the row alone.
//!
//! Small calls with class targets and default-like options (at most 64 short rows, no
//! weights, smoothing, z-loss, cap, row scales or per-row outputs) skip the general path's
//! plan and row blocks; a call of one row keeps its label, class and loss in registers and
//! skips the reduction's divisions by 1. The bits are those of the general path
//! (`one_row_calls_match_the_general_path` in `tests/cross_entropy.rs`).

use crate::arch::generic::cross_entropy::{CeArgs, CeProbArgs, CeRowOut, CeShortBatch};
use crate::dispatch::Kernels;
use crate::error::{check_len, rows_of, Error, Result};
use crate::parallel::{sum_row_blocks, SyncPtr, BLOCK_BYTES};

/// The most rows [`Kernels::ce_plain_small`] takes (one batch of the short-row kernel, as
/// [`Ctx::class_block_short`] calls it).
const PLAIN_ROWS: usize = 64;

/// The largest class count (`cols`, or `C` of the fused layer) the cross-entropy family
/// accepts: class indices are `u32` inside the kernels and in the argmax output. A larger
/// count is [`Error::TooManyClasses`], reported before anything is allocated or computed.
pub const MAX_CLASSES: usize = u32::MAX as usize;

/// How the rows' losses are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// Every row's loss, in [`CrossEntropyOutputs::row_loss`] (required); the returned loss is
    /// their sum.
    None,
    /// The sum of the rows' losses.
    Sum,
    /// The weighted mean (see the module docs).
    #[default]
    Mean,
}

/// What a `Mean` over a batch whose rows are all ignored returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AllIgnored {
    /// NaN (`0 / 0`), as PyTorch.
    #[default]
    Nan,
    /// 0.
    Zero,
}

/// A class label type: `i64` (PyTorch's), `i32`, `u32`, `usize`, `u8`, `u16`, `i16`, `u64`.
pub trait Label: Copy + Send + Sync + sealed::Sealed {
    /// The label as a wide integer (exact for every implementor).
    fn to_i128(self) -> i128;
}

/// Seals [`Label`]: the kernels validate labels through `to_i128`, so only the crate's own
/// integer types implement it.
mod sealed {
    pub trait Sealed {}
}

macro_rules! impl_label {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Label for $t {
            #[inline(always)]
            fn to_i128(self) -> i128 {
                self as i128
            }
        }
    )*};
}
impl_label!(i64, i32, i16, u64, u32, u16, u8, usize);

/// Options of the cross-entropy functions. `CrossEntropyOptions::default()` is PyTorch's
/// `F.cross_entropy` default (`reduction='mean'`, `ignore_index=-100`, no weights, no
/// smoothing).
///
/// ```
/// use softmax_kernels::{CrossEntropyOptions, Reduction};
/// let w = [1.0f32, 2.0, 0.5];
/// let opts = CrossEntropyOptions::default()
///     .reduction(Reduction::Sum)
///     .weight(&w)
///     .label_smoothing(0.1);
/// assert_eq!(opts.ignore_index, Some(-100));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct CrossEntropyOptions<'a> {
    /// How rows are combined.
    pub reduction: Reduction,
    /// Per-class weights (`C` floats).
    pub weight: Option<&'a [f32]>,
    /// A label that marks a row to skip (class targets only).
    pub ignore_index: Option<i64>,
    /// Label smoothing `eps` in `[0, 1]`.
    pub label_smoothing: f32,
    /// z-loss coefficient (`>= 0`): adds `z_loss * lse^2` per (non-ignored) row.
    pub z_loss: f32,
    /// Logit soft-capping `z <- cap tanh(z / cap)` (`cap` finite and at least
    /// `f32::MIN_POSITIVE`).
    pub softcap: Option<f32>,
    /// The `Mean` of an all-ignored batch.
    pub all_ignored: AllIgnored,
    /// Upstream gradient scalar multiplying the whole gradient (default 1).
    pub scale: f32,
    /// Per-row upstream gradient (`rows` floats), only with `Reduction::None`.
    pub row_scale: Option<&'a [f32]>,
}

impl Default for CrossEntropyOptions<'_> {
    fn default() -> Self {
        CrossEntropyOptions {
            reduction: Reduction::Mean,
            weight: None,
            ignore_index: Some(-100),
            label_smoothing: 0.0,
            z_loss: 0.0,
            softcap: None,
            all_ignored: AllIgnored::Nan,
            scale: 1.0,
            row_scale: None,
        }
    }
}

impl<'a> CrossEntropyOptions<'a> {
    /// Sets the reduction.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }
    /// Sets per-class weights.
    pub fn weight(mut self, w: &'a [f32]) -> Self {
        self.weight = Some(w);
        self
    }
    /// Sets (or, with `None`, disables) the ignored label.
    pub fn ignore_index(mut self, i: Option<i64>) -> Self {
        self.ignore_index = i;
        self
    }
    /// Sets label smoothing.
    pub fn label_smoothing(mut self, eps: f32) -> Self {
        self.label_smoothing = eps;
        self
    }
    /// Sets the z-loss coefficient.
    pub fn z_loss(mut self, zl: f32) -> Self {
        self.z_loss = zl;
        self
    }
    /// Sets logit soft-capping.
    pub fn softcap(mut self, cap: f32) -> Self {
        self.softcap = Some(cap);
        self
    }
    /// Sets the all-ignored policy.
    pub fn all_ignored(mut self, p: AllIgnored) -> Self {
        self.all_ignored = p;
        self
    }
    /// Sets the upstream gradient scalar.
    pub fn scale(mut self, g: f32) -> Self {
        self.scale = g;
        self
    }
    /// Sets the per-row upstream gradient (`Reduction::None` only).
    pub fn row_scale(mut self, g: &'a [f32]) -> Self {
        self.row_scale = Some(g);
        self
    }

    /// Valid options without weights, row scales, smoothing, z-loss or cap, and with a reduced
    /// loss (`Mean` or `Sum`): what [`Kernels::ce_plain_small`] serves.
    #[inline]
    fn is_plain(&self) -> bool {
        self.weight.is_none()
            && self.row_scale.is_none()
            && self.label_smoothing == 0.0
            && self.z_loss == 0.0
            && self.softcap.is_none()
            && self.scale.is_finite()
            && self.reduction != Reduction::None
    }

    fn validate(&self, rows: usize, cols: usize) -> Result<()> {
        let bad = |name, value: f32, expected| {
            Err(Error::InvalidOption {
                name,
                value: value.to_string(),
                expected,
            })
        };
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing", self.label_smoothing, "in [0, 1]");
        }
        if !(self.z_loss >= 0.0 && self.z_loss.is_finite()) {
            return bad("z_loss", self.z_loss, "finite and >= 0");
        }
        if let Some(cap) = self.softcap {
            // Below f32::MIN_POSITIVE, 1 / cap overflows f32 (and every logit is capped to
            // ±cap anyway).
            if !(cap >= f32::MIN_POSITIVE && cap.is_finite()) {
                return bad("softcap", cap, "finite and >= f32::MIN_POSITIVE (1.2e-38)");
            }
        }
        if !self.scale.is_finite() {
            return bad("scale", self.scale, "finite");
        }
        if let Some(w) = self.weight {
            check_len("weight", w.len(), cols)?;
        }
        if let Some(g) = self.row_scale {
            if self.reduction != Reduction::None {
                return Err(Error::InvalidOption {
                    name: "row_scale",
                    value: format!("Some(<{} floats>)", g.len()),
                    expected: "None unless reduction is Reduction::None",
                });
            }
            check_len("row_scale", g.len(), rows)?;
            if let Some(v) = g.iter().find(|v| !v.is_finite()) {
                return bad("row_scale entry", *v, "finite");
            }
        }
        Ok(())
    }
}

/// Optional per-row outputs, filled in the same sweeps as the loss.
#[derive(Debug, Default)]
pub struct CrossEntropyOutputs<'a> {
    /// Each row's loss (`rows` floats; 0 for ignored rows). Required by `Reduction::None`.
    pub row_loss: Option<&'a mut [f32]>,
    /// Each row's logsumexp of the (capped) logits (`rows` floats). NaN for a row whose
    /// maximum is not finite (a `+inf` or NaN logit, or every logit `-inf`): such a row's loss
    /// and gradient are NaN too. ([`Kernels::logsumexp`] gives `+inf` for a row holding
    /// `+inf` and no NaN, and `-inf` for an all `-inf` row, as PyTorch's `logsumexp`.)
    pub lse: Option<&'a mut [f32]>,
    /// Each row's first argmax (`rows` entries).
    pub argmax: Option<&'a mut [u32]>,
}

/// What a cross-entropy call reports beyond the loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropyStats {
    /// The reduced loss (the sum for `Reduction::None`).
    pub loss: f32,
    /// The same in f64, before rounding.
    pub loss_f64: f64,
    /// `Mean`'s denominator: the sum of the target weights of the rows not ignored (class
    /// targets) or the number of rows (probability targets).
    pub denominator: f64,
    /// The rows that were not ignored.
    pub rows_used: usize,
    /// Class targets with [`CrossEntropyOutputs::argmax`] given: how many rows' argmax equals
    /// their label.
    pub correct: Option<usize>,
}

/// Where the logits come from and where the gradient goes.
#[derive(Debug)]
pub enum Logits<'a> {
    /// Loss only: one read sweep, no stores.
    Read(&'a [f32]),
    /// Loss and gradient into a separate buffer of the same length.
    Grad(&'a [f32], &'a mut [f32]),
    /// Loss and gradient written over the logits.
    InPlace(&'a mut [f32]),
}

/// The targets.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a, L: Label = i64> {
    /// One class label per row.
    Classes(&'a [L]),
    /// One probability row per row (`rows * cols` floats).
    Probs(&'a [f32]),
}

impl Kernels {
    /// The general cross-entropy entry point: any target kind, loss only / separate gradient /
    /// in place, every option, every optional output. The other functions call this one.
    ///
    /// # Errors
    /// Shape errors as [`Kernels::softmax`] (`logits`, `grad`), [`Error::LengthMismatch`] for
    /// `targets`, `weight`, `row_scale` and the outputs; [`Error::BadLabel`];
    /// [`Error::InvalidOption`]; [`Error::MissingOutput`] when `Reduction::None` has no
    /// `row_loss`.
    ///
    /// ```
    /// use softmax_kernels::{CrossEntropyOptions, CrossEntropyOutputs, Kernels, Logits, Targets};
    /// let k = Kernels::best();
    /// let mut z = [2.0f32, 1.0, 0.0, /* row 2 */ 0.0, 0.0, 3.0];
    /// let mut argmax = [0u32; 2];
    /// let mut out = CrossEntropyOutputs { argmax: Some(&mut argmax), ..Default::default() };
    /// let labels = [0i64, 1];
    /// let st = k
    ///     .cross_entropy_with(Logits::InPlace(&mut z), Targets::Classes(&labels), 3,
    ///                        &CrossEntropyOptions::default(), &mut out)
    ///     .unwrap();
    /// assert_eq!(argmax, [0, 2]);
    /// assert_eq!(st.correct, Some(1));
    /// // z now holds the gradient of the mean loss: (softmax - onehot) / 2.
    /// assert!(z[0] < 0.0 && z[1] > 0.0 && z[4] < 0.0);
    /// ```
    pub fn cross_entropy_with<L: Label>(
        &self,
        logits: Logits<'_>,
        targets: Targets<'_, L>,
        cols: usize,
        opts: &CrossEntropyOptions<'_>,
        outputs: &mut CrossEntropyOutputs<'_>,
    ) -> Result<CrossEntropyStats> {
        let (len, grad_len) = match &logits {
            Logits::Read(x) => (x.len(), x.len()),
            Logits::Grad(x, gr) => (x.len(), gr.len()),
            Logits::InPlace(x) => (x.len(), x.len()),
        };
        let (xp, gp): (*const f32, *mut f32) = match logits {
            Logits::Read(x) => (x.as_ptr(), std::ptr::null_mut()),
            Logits::Grad(x, gr) => (x.as_ptr(), gr.as_mut_ptr()),
            Logits::InPlace(x) => (x.as_ptr(), x.as_mut_ptr()),
        };
        // A small call first, before the checks of the general path, which cost as much as
        // the kernel on a 1x10 call: the shape is checked here without a division (any call
        // this test turns away takes the general path and its errors).
        if let Targets::Classes(t) = targets {
            if t.len() <= PLAIN_ROWS
                && cols != 0
                && cols <= BLOCK_BYTES / 4
                // Neither product overflows: both factors are bounded above.
                && t.len() * cols == len
                && len <= BLOCK_BYTES / 4
                && grad_len == len
                && opts.is_plain()
                && outputs.row_loss.is_none()
                && outputs.lse.is_none()
                && outputs.argmax.is_none()
            {
                // SAFETY: `xp` holds `len = t.len() * cols` floats; `gp` is null, or `xp`
                // itself (in place), or a distinct buffer of `len` floats (the borrows above).
                if let Some(st) = unsafe { self.ce_plain_small(xp, gp, t.len(), cols, t, opts)? } {
                    return Ok(st);
                }
            }
        }
        let rows = rows_of("logits", len, cols)?;
        check_len("grad", grad_len, len)?;
        let plan = self.ce_plan(targets, rows, cols, opts, outputs)?;
        // SAFETY: `xp` holds `rows * cols` floats, `gp` is null or `rows * cols` floats equal
        // to `xp` or a distinct buffer (the borrows above); `ce_plan` checked the targets,
        // options and outputs for `rows` rows.
        let (total, correct) =
            unsafe { self.ce_rows(xp, gp, rows, cols, targets, opts, &plan, outputs) };
        Ok(plan.finish(opts, total, correct, outputs.argmax.is_some(), &targets))
    }

    /// The old name of [`Kernels::cross_entropy_with`].
    #[deprecated(since = "0.2.0", note = "renamed to `cross_entropy_with`")]
    pub fn cross_entropy_ext<L: Label>(
        &self,
        logits: Logits<'_>,
        targets: Targets<'_, L>,
        cols: usize,
        opts: &CrossEntropyOptions<'_>,
        outputs: &mut CrossEntropyOutputs<'_>,
    ) -> Result<CrossEntropyStats> {
        self.cross_entropy_with(logits, targets, cols, opts, outputs)
    }

    /// A small call (at most [`PLAIN_ROWS`] rows, one row block, short rows) with class
    /// targets, options that [`CrossEntropyOptions::is_plain`] accepts and no per-row outputs:
    /// the labels are validated and turned into the short-row kernel's classes in one pass, and
    /// the kernel is called directly, without the general path's plan, context and row-block
    /// set-up (which cost as much as the kernel on a 1x10 call). The same arithmetic as the
    /// general path (which takes one block and one short-row batch here), so the same bits.
    /// `Ok(None)` when the tier has no short-row kernel for `cols` (nothing was computed).
    ///
    /// # Safety
    /// `xp` valid for `rows * cols` reads; `gp` null or valid for `rows * cols` writes, equal to
    /// `xp` or not overlapping it; `t.len() == rows <= PLAIN_ROWS`.
    unsafe fn ce_plain_small<L: Label>(
        &self,
        xp: *const f32,
        gp: *mut f32,
        rows: usize,
        cols: usize,
        t: &[L],
        opts: &CrossEntropyOptions<'_>,
    ) -> Result<Option<CrossEntropyStats>> {
        debug_assert!(t.len() == rows && rows <= PLAIN_ROWS && opts.is_plain());
        if rows == 1 {
            // SAFETY: the caller's contract (one row).
            if let Some(st) = unsafe { self.ce_plain_one_row(xp, gp, cols, t, opts)? } {
                return Ok(Some(st));
            }
        }
        let mut classes = std::mem::MaybeUninit::<[u32; PLAIN_ROWS]>::uninit();
        let cp = classes.as_mut_ptr().cast::<u32>();
        let mut used = 0usize;
        for (r, &l) in t.iter().enumerate() {
            let c = match class_of(l, cols, opts.ignore_index) {
                // `c < cols <= BLOCK_BYTES / 4` fits a u32.
                Ok(Some(c)) => {
                    used += 1;
                    c as u32
                }
                Ok(None) => u32::MAX,
                Err(label) => {
                    return Err(Error::BadLabel {
                        row: r,
                        label,
                        classes: cols,
                    })
                }
            };
            // SAFETY: `r < rows <= PLAIN_ROWS`.
            unsafe { cp.add(r).write(c) };
        }
        // As `ce_plan` and `Ctx::class_block` (every target weight is 1).
        let plan = CePlan::plain(opts, used, cols);
        let base_g = plan.red_scale * opts.scale as f64;
        let mut acc = (0.0f64, 0usize);
        let b = CeShortBatch {
            classes: cp,
            weights: std::ptr::null(),
            base_g,
            row_scale: std::ptr::null(),
            zl: 0.0,
            zl2: 0.0,
            want_argmax: false,
            row_loss: std::ptr::null_mut(),
            lse: std::ptr::null_mut(),
            argmax: std::ptr::null_mut(),
        };
        // SAFETY: the caller's contract; `cp` holds `rows` validated classes (or `u32::MAX`
        // for ignored rows), written above; the batch has no per-row pointers.
        let done = unsafe { (self.ce.short_rows)(xp, gp, rows, cols, &b, &mut acc) };
        if !done {
            return Ok(None);
        }
        // `0.0 +` as `sum_row_blocks` (which turns a -0.0 sum into 0.0).
        let total = 0.0 + acc.0;
        Ok(Some(plan.finish(
            opts,
            total,
            acc.1,
            false,
            &Targets::Classes(t),
        )))
    }

    /// [`Kernels::ce_plain_small`] for one row: the label, the kernel's class and the loss stay
    /// in registers, and the reduction's divisions by 1 are skipped (`x / 1 == x`), since the
    /// time of a 1-row call is the latency from the label to the loss. The same bits as the
    /// batched path. `Ok(None)` when the tier has no one-row kernel for `cols`.
    ///
    /// # Safety
    /// As [`Kernels::ce_plain_small`] with one row.
    unsafe fn ce_plain_one_row<L: Label>(
        &self,
        xp: *const f32,
        gp: *mut f32,
        cols: usize,
        t: &[L],
        opts: &CrossEntropyOptions<'_>,
    ) -> Result<Option<CrossEntropyStats>> {
        let (class, used) = match class_of(t[0], cols, opts.ignore_index) {
            // `c < cols <= BLOCK_BYTES / 4` fits a u32.
            Ok(Some(c)) => (c as u32, 1),
            Ok(None) => (u32::MAX, 0),
            Err(label) => {
                return Err(Error::BadLabel {
                    row: 0,
                    label,
                    classes: cols,
                })
            }
        };
        // (An ignored row's gradient is zero whatever the scale.)
        let plan = CePlan::plain(opts, used, cols);
        let g = plan.red_scale * opts.scale as f64;
        // SAFETY: the caller's contract (one row); `class` is validated.
        let Some(v) = (unsafe { (self.ce.plain_one)(xp, gp, cols, class, g) }) else {
            return Ok(None);
        };
        // The other paths sum `0.0 + (0.0 + v)` (the accumulator, then `sum_row_blocks`'s
        // `0.0 +`), which is `v` itself, bit for bit: `v` is `+0.0`, positive or NaN
        // (`ce_plain_one`).
        debug_assert!(!(v.to_bits() == (-0.0f64).to_bits() || v < 0.0));
        Ok(Some(plan.finish(opts, v, 0, false, &Targets::Classes(t))))
    }

    /// Checks everything but the logits for a cross-entropy over `rows x cols` (options,
    /// target and output lengths), then validates the labels in one pass over them and sums
    /// the weights of the rows used.
    pub(crate) fn ce_plan<L: Label>(
        &self,
        targets: Targets<'_, L>,
        rows: usize,
        cols: usize,
        opts: &CrossEntropyOptions<'_>,
        outputs: &CrossEntropyOutputs<'_>,
    ) -> Result<CePlan> {
        if cols > MAX_CLASSES {
            return Err(Error::TooManyClasses {
                classes: cols,
                max: MAX_CLASSES,
            });
        }
        opts.validate(rows, cols)?;
        if let Some(o) = &outputs.row_loss {
            check_len("row_loss", o.len(), rows)?;
        }
        if let Some(o) = &outputs.lse {
            check_len("lse", o.len(), rows)?;
        }
        if let Some(o) = &outputs.argmax {
            check_len("argmax", o.len(), rows)?;
        }
        if opts.reduction == Reduction::None && outputs.row_loss.is_none() {
            return Err(Error::MissingOutput {
                arg: "row_loss",
                reason: "Reduction::None returns the loss of every row there",
            });
        }
        // Pass over the labels: validate, and sum the weights of the rows used.
        let (denominator, rows_used) = match targets {
            Targets::Classes(t) => {
                check_len("targets", t.len(), rows)?;
                let mut den = 0.0f64;
                let mut used = 0usize;
                for (r, &l) in t.iter().enumerate() {
                    match class_of(l, cols, opts.ignore_index) {
                        Ok(Some(c)) => {
                            den += opts.weight.map_or(1.0, |w| w[c] as f64);
                            used += 1;
                        }
                        Ok(None) => {}
                        Err(label) => {
                            return Err(Error::BadLabel {
                                row: r,
                                label,
                                classes: cols,
                            })
                        }
                    }
                }
                (den, used)
            }
            Targets::Probs(y) => {
                let need = rows
                    .checked_mul(cols)
                    .ok_or(Error::SizeOverflow { arg: "targets" })?;
                check_len("targets", y.len(), need)?;
                (rows as f64, rows)
            }
        };
        let red_scale = match opts.reduction {
            Reduction::Mean => 1.0 / denominator,
            Reduction::Sum | Reduction::None => 1.0,
        };
        Ok(CePlan {
            denominator,
            rows_used,
            red_scale,
            wsum: opts
                .weight
                .map_or(cols as f64, |w| w.iter().map(|&v| v as f64).sum()),
        })
    }

    /// The cross-entropy rows of a checked call: returns the f64 sum of the rows' losses (over
    /// the fixed blocks of [`sum_row_blocks`]) and the count of correct argmaxes. `targets`,
    /// `opts.row_scale` and `outputs` belong to these `rows` (sub-slices of a larger call are
    /// fine); `plan` may come from the larger call.
    ///
    /// # Safety
    /// `xp` valid for `rows * cols` reads; `gp` null or valid for `rows * cols` writes, equal
    /// to `xp` or not overlapping it; [`Kernels::ce_plan`] accepted `targets`, `opts` and
    /// `outputs` for `rows` rows.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn ce_rows<L: Label>(
        &self,
        xp: *const f32,
        gp: *mut f32,
        rows: usize,
        cols: usize,
        targets: Targets<'_, L>,
        opts: &CrossEntropyOptions<'_>,
        plan: &CePlan,
        outputs: &mut CrossEntropyOutputs<'_>,
    ) -> (f64, usize) {
        let want_argmax = outputs.argmax.is_some();
        let ctx = Ctx {
            k: self,
            x: SyncPtr(xp as *mut f32),
            g: SyncPtr(gp),
            cols,
            opts: *opts,
            red_scale: plan.red_scale,
            wsum: plan.wsum,
            row_loss: SyncPtr(opt_ptr(&mut outputs.row_loss)),
            lse: SyncPtr(opt_ptr(&mut outputs.lse)),
            argmax: SyncPtr(
                outputs
                    .argmax
                    .as_mut()
                    .map_or(std::ptr::null_mut(), |a| a.as_mut_ptr()),
            ),
            want_argmax,
        };
        match targets {
            Targets::Classes(t) => sum_row_blocks(rows, cols, |r| ctx.class_block(t, r)),
            Targets::Probs(y) => sum_row_blocks(rows, cols, |r| ctx.prob_block(y, r)),
        }
    }

    /// The mean (or as `opts` says) cross-entropy of `logits` (`[rows, cols]`) against class
    /// labels, loss only: one read sweep, no stores.
    ///
    /// # Errors
    /// As [`Kernels::cross_entropy_with`].
    ///
    /// ```
    /// use softmax_kernels::{CrossEntropyOptions, Kernels};
    /// let k = Kernels::best();
    /// // Uniform logits: the loss is ln C.
    /// let loss = k.cross_entropy(&[0.0f32; 8], &[3i64, 0], 4, &CrossEntropyOptions::default()).unwrap();
    /// assert!((loss - 4f32.ln()).abs() < 1e-6);
    /// ```
    pub fn cross_entropy<L: Label>(
        &self,
        logits: &[f32],
        targets: &[L],
        cols: usize,
        opts: &CrossEntropyOptions<'_>,
    ) -> Result<f32> {
        self.cross_entropy_with(
            Logits::Read(logits),
            Targets::Classes(targets),
            cols,
            opts,
            &mut CrossEntropyOutputs::default(),
        )
        .map(|s| s.loss)
    }

    /// Loss and gradient `dL/dz` (into `grad`, same shape as `logits`) against class labels.
    ///
    /// # Errors
    /// As [`Kernels::cross_entropy_with`].
    ///
    /// ```
    /// use softmax_kernels::{CrossEntropyOptions, Kernels};
    /// let k = Kernels::best();
    /// let mut g = [0.0f32; 4];
    /// let loss = k.cross_entropy_fwd_bwd(&[0.0f32; 4], &[1u32, 0], &mut g, 2,
    ///                                    &CrossEntropyOptions::default()).unwrap();
    /// assert!((loss - 2f32.ln()).abs() < 1e-6);
    /// // (softmax - onehot) / N = ([0.5, 0.5] - onehot) / 2
    /// assert_eq!(g, [0.25, -0.25, -0.25, 0.25]);
    /// ```
    pub fn cross_entropy_fwd_bwd<L: Label>(
        &self,
        logits: &[f32],
        targets: &[L],
        grad: &mut [f32],
        cols: usize,
        opts: &CrossEntropyOptions<'_>,
    ) -> Result<f32> {
        self.cross_entropy_with(
            Logits::Grad(logits, grad),
            Targets::Classes(targets),
            cols,
            opts,
            &mut CrossEntropyOutputs::default(),
        )
        .map(|s| s.loss)
    }

    /// Loss and gradient against class labels, the gradient written over the logits.
    ///
    /// # Errors
    /// As [`Kernels::cross_entropy_with`].
    ///
    /// ```
    /// use softmax_kernels::{CrossEntropyOptions, Kernels};
    /// let mut z = [0.0f32, 0.0];
    /// let opts = CrossEntropyOptions::default();
    /// let loss = Kernels::best().cross_entropy_fwd_bwd_inplace(&mut z, &[0i32], 2, &opts).unwrap();
    /// assert!((loss - 2f32.ln()).abs() < 1e-6);
    /// assert_eq!(z, [-0.5, 0.5]);
    /// ```
    pub fn cross_entropy_fwd_bwd_inplace<L: Label>(
        &self,
        logits: &mut [f32],
        targets: &[L],
        cols: usize,
        opts: &CrossEntropyOptions<'_>,
    ) -> Result<f32> {
        self.cross_entropy_with(
            Logits::InPlace(logits),
            Targets::Classes(targets),
            cols,
            opts,
            &mut CrossEntropyOutputs::default(),
        )
        .map(|s| s.loss)
    }

    /// Cross-entropy against probability (soft) targets `probs` (`[rows, cols]`), loss only.
    ///
    /// # Errors
    /// As [`Kernels::cross_entropy_with`]; `probs` must have the length of `logits`.
    ///
    /// ```
    /// use softmax_kernels::{CrossEntropyOptions, Kernels};
    /// // A one-hot probability target gives the same loss as the class label.
    /// let k = Kernels::best();
    /// let z = [1.0f32, 2.0, 3.0];
    /// let opts = CrossEntropyOptions::default();
    /// let soft = k.cross_entropy_probs(&z, &[0.0, 1.0, 0.0], 3, &opts).unwrap();
    /// let hard = k.cross_entropy(&z, &[1i64], 3, &opts).unwrap();
    /// assert!((soft - hard).abs() < 1e-6);
    /// ```
    pub fn cross_entropy_probs(
        &self,
        logits: &[f32],
        probs: &[f32],
        cols: usize,
        opts: &CrossEntropyOptions<'_>,
    ) -> Result<f32> {
        self.cross_entropy_with::<i64>(
            Logits::Read(logits),
            Targets::Probs(probs),
            cols,
            opts,
            &mut CrossEntropyOutputs::default(),
        )
        .map(|s| s.loss)
    }

    /// Loss and gradient against probability targets, gradient into `grad`.
    ///
    /// # Errors
    /// As [`Kernels::cross_entropy_probs`].
    ///
    /// ```
    /// use softmax_kernels::{CrossEntropyOptions, Kernels};
    /// let mut g = [0.0f32; 2];
    /// let opts = CrossEntropyOptions::default();
    /// Kernels::best().cross_entropy_probs_fwd_bwd(&[0.0, 0.0], &[0.25, 0.75], &mut g, 2, &opts).unwrap();
    /// assert_eq!(g, [0.25, -0.25]); // p - y
    /// ```
    pub fn cross_entropy_probs_fwd_bwd(
        &self,
        logits: &[f32],
        probs: &[f32],
        grad: &mut [f32],
        cols: usize,
        opts: &CrossEntropyOptions<'_>,
    ) -> Result<f32> {
        self.cross_entropy_with::<i64>(
            Logits::Grad(logits, grad),
            Targets::Probs(probs),
            cols,
            opts,
            &mut CrossEntropyOutputs::default(),
        )
        .map(|s| s.loss)
    }

    /// Loss and gradient against probability targets, the gradient written over the logits.
    ///
    /// # Errors
    /// As [`Kernels::cross_entropy_probs`].
    pub fn cross_entropy_probs_fwd_bwd_inplace(
        &self,
        logits: &mut [f32],
        probs: &[f32],
        cols: usize,
        opts: &CrossEntropyOptions<'_>,
    ) -> Result<f32> {
        self.cross_entropy_with::<i64>(
            Logits::InPlace(logits),
            Targets::Probs(probs),
            cols,
            opts,
            &mut CrossEntropyOutputs::default(),
        )
        .map(|s| s.loss)
    }
}

/// The class of label `l`: `Ok(Some(c))`, `Ok(None)` for the ignored label, `Err(label)` if it
/// is out of range.
#[inline]
pub(crate) fn class_of<L: Label>(
    l: L,
    cols: usize,
    ignore: Option<i64>,
) -> std::result::Result<Option<usize>, i128> {
    let v = l.to_i128();
    if ignore.is_some_and(|i| i as i128 == v) {
        Ok(None)
    } else if v >= 0 && v < cols as i128 {
        Ok(Some(v as usize))
    } else {
        Err(v)
    }
}

/// What [`Kernels::ce_plan`] found: the reduction's denominator and scale, and the weight sum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CePlan {
    /// `Mean`'s denominator (sum of the used rows' target weights, or the row count).
    pub denominator: f64,
    /// Rows not ignored.
    pub rows_used: usize,
    /// The reduction's gradient scale (`1 / denominator` for `Mean`, else 1).
    pub red_scale: f64,
    /// `sum_c w_c` (`C` without weights).
    pub wsum: f64,
}

impl CePlan {
    /// The plan of a call without weights (what [`Kernels::ce_plan`] finds then): `used` rows
    /// not ignored, each of weight 1. `1 / used` for Mean is skipped for one row (`1 / 1 == 1`
    /// exactly): a one-row call waits on it.
    fn plain(opts: &CrossEntropyOptions<'_>, used: usize, cols: usize) -> CePlan {
        CePlan {
            denominator: used as f64,
            rows_used: used,
            red_scale: match opts.reduction {
                Reduction::Mean if used == 1 => 1.0,
                Reduction::Mean => 1.0 / used as f64,
                Reduction::Sum | Reduction::None => 1.0,
            },
            wsum: cols as f64,
        }
    }

    /// The call's statistics from the summed row losses.
    pub(crate) fn finish<L: Label>(
        &self,
        opts: &CrossEntropyOptions<'_>,
        total: f64,
        correct: usize,
        want_argmax: bool,
        targets: &Targets<'_, L>,
    ) -> CrossEntropyStats {
        let loss = match opts.reduction {
            Reduction::Mean if self.rows_used == 0 && opts.all_ignored == AllIgnored::Zero => 0.0,
            // `x / 1 == x` exactly: a one-row call skips the division's latency.
            Reduction::Mean if self.denominator == 1.0 => total,
            Reduction::Mean => total / self.denominator,
            Reduction::Sum | Reduction::None => total,
        };
        let is_classes = matches!(targets, Targets::Classes(_));
        CrossEntropyStats {
            loss: loss as f32,
            loss_f64: loss,
            denominator: self.denominator,
            rows_used: self.rows_used,
            correct: (want_argmax && is_classes).then_some(correct),
        }
    }
}

fn opt_ptr(o: &mut Option<&mut [f32]>) -> *mut f32 {
    o.as_mut().map_or(std::ptr::null_mut(), |s| s.as_mut_ptr())
}

/// Everything a row block needs; shared by the parallel tasks.
struct Ctx<'a> {
    k: &'a Kernels,
    x: SyncPtr<f32>,
    g: SyncPtr<f32>,
    cols: usize,
    opts: CrossEntropyOptions<'a>,
    red_scale: f64,
    wsum: f64,
    row_loss: SyncPtr<f32>,
    lse: SyncPtr<f32>,
    argmax: SyncPtr<u32>,
    want_argmax: bool,
}

impl Ctx<'_> {
    /// The gradient scale of row `r`.
    fn row_g(&self, r: usize) -> f32 {
        let rs = self.opts.row_scale.map_or(1.0, |g| g[r] as f64);
        (self.red_scale * self.opts.scale as f64 * rs) as f32
    }

    /// Writes the optional per-row outputs of row `r`.
    ///
    /// # Safety
    /// `r < rows`; each row is written by one task only.
    unsafe fn put(&self, r: usize, loss: f64, out: &CeRowOut) {
        // SAFETY: the output pointers are null or valid for `rows` entries (checked by the
        // caller), and row `r` belongs to this task alone.
        unsafe {
            if !self.row_loss.get().is_null() {
                *self.row_loss.get().add(r) = loss as f32;
            }
            if !self.lse.get().is_null() {
                *self.lse.get().add(r) = lse_of(out) as f32;
            }
            if !self.argmax.get().is_null() {
                *self.argmax.get().add(r) = out.argmax;
            }
        }
    }

    /// Class targets over rows `rows`: returns the f64 sum of their losses and how many
    /// argmaxes hit the label.
    fn class_block<L: Label>(&self, t: &[L], rows: std::ops::Range<usize>) -> (f64, usize) {
        let (cols, o) = (self.cols, &self.opts);
        let ignore = o.ignore_index.map(|i| i as i128);
        let wp = o.weight.map_or(std::ptr::null(), |w| w.as_ptr());
        let base_g = self.red_scale * o.scale as f64;
        // Short rows without smoothing or cap first: they need none of what follows.
        if o.label_smoothing == 0.0 && o.softcap.is_none() {
            if let Some(acc) = self.class_block_short(t, rows.clone(), ignore, wp, base_g) {
                return acc;
            }
        }
        // Everything that does not depend on the row, hoisted (short rows spend as much time
        // here as in the kernel).
        let eps = o.label_smoothing as f64;
        let keep = 1.0 - eps;
        let eps_c = eps / cols as f64;
        // Without smoothing the weight sum plays no part (a NaN weight of a class that is no
        // row's target must not reach the gradient, as in PyTorch).
        let smooth_a0 = if eps == 0.0 { 0.0 } else { eps_c * self.wsum };
        let zl = o.z_loss as f64;
        let mut args = CeArgs {
            t: 0,
            a0: 0.0,
            zl2: 2.0 * o.z_loss,
            g: 0.0,
            smooth: 0.0,
            fix_t: 0.0,
            weights: wp,
            cap: o.softcap.unwrap_or(0.0),
            dot: eps != 0.0,
            argmax: self.want_argmax,
            next: std::ptr::null(),
            known_max: None,
            // With a gradient, each row's last pass (scale and `- fix_t`) runs after the next
            // row's kernel call, so that the row's division and `ln` overlap that call.
            defer: !self.g.get().is_null(),
        };
        let (mut sum, mut correct) = (0.0f64, 0usize);
        let end = rows.end;
        // The next row's max, when the kernel computed it in this row's last sweep.
        let mut pending_max: Option<f32> = None;
        // A deferred last pass: (gradient row, target, factor, fix_t).
        let mut deferred: Option<(*mut f32, usize, f32, f32)> = None;
        let k = self.k;
        let finish = |d: Option<(*mut f32, usize, f32, f32)>| {
            if let Some((p, tc, f, fix)) = d {
                // SAFETY: `p` is a gradient row of this task (`cols` floats), `tc < cols`,
                // and no other row's pass touches it.
                unsafe {
                    (k.ce.scale)(p, cols, f);
                    *p.add(tc) -= fix;
                }
            }
        };
        for r in rows {
            // SAFETY: `x` (and `g` when not null) hold `rows * cols` floats, row `r` belongs to
            // this task; `weights` is null or `cols` floats; labels were validated (so a label
            // that is not the ignored one is in `0..cols`).
            unsafe {
                let xr = self.x.get().add(r * cols);
                let gr = if self.g.get().is_null() {
                    std::ptr::null_mut()
                } else {
                    self.g.get().add(r * cols)
                };
                let v = t[r].to_i128();
                if ignore == Some(v) {
                    // A max computed for this row goes unused; the next row computes its own.
                    pending_max = None;
                    // Ignored row: loss 0, gradient 0; lse/argmax still reported if asked.
                    let out = if self.lse.get().is_null() && !self.want_argmax {
                        CeRowOut::default()
                    } else {
                        let a = self.args(0, 0.0, 0.0, false);
                        (self.k.ce.row)(xr, std::ptr::null_mut(), cols, &a)
                    };
                    if !gr.is_null() {
                        crate::arch::special::fill(gr, cols, 0.0);
                    }
                    self.put(r, 0.0, &out);
                    continue;
                }
                let c = v as usize;
                let wt = if wp.is_null() { 1.0 } else { *wp.add(c) as f64 };
                let g = match o.row_scale {
                    Some(rs) => base_g * rs[r] as f64,
                    None => base_g,
                };
                args.t = c;
                // The next row of this block: the kernel computes its max during this row's
                // last sweep (without a cap or an argmax), and the next call reuses it.
                args.next = if r + 1 < end {
                    xr.wrapping_add(cols)
                } else {
                    std::ptr::null()
                };
                args.known_max = pending_max.take();
                args.a0 = (keep * wt + smooth_a0) as f32;
                args.g = g as f32;
                args.smooth = (g * eps_c) as f32;
                args.fix_t = (g * keep * wt) as f32;
                let out = (self.k.ce.row)(xr, gr, cols, &args);
                finish(deferred.take());
                deferred = out.deferred.map(|f| (gr, c, f, args.fix_t));
                pending_max = out.next_max;
                // Every term relative to the row max `m`, so that huge logits keep `ln s`:
                // lse - z_t = (m - z_t) + ln s, sum_c w_c (lse - z_c) = W ln s - sum_c w_c (z_c - m).
                let mut loss = keep * wt * ((out.m - out.zt) + out.ls);
                if zl != 0.0 {
                    let lse = lse_of(&out);
                    loss += zl * lse * lse;
                }
                if eps != 0.0 {
                    loss += eps_c * (self.wsum * out.ls - out.dot);
                }
                sum += loss;
                correct += (out.argmax as usize == c) as usize;
                self.put(r, loss, &out);
            }
        }
        finish(deferred);
        (sum, correct)
    }

    /// [`Ctx::class_block`] without smoothing or cap through the tier's batched short-row
    /// kernel, 64 rows per call: the same arithmetic row for row (and the same order of the
    /// loss sum), without a kernel call and argument block per row. `None` when the rows are
    /// too long for the tier's short-row path (a function of `cols` only).
    fn class_block_short<L: Label>(
        &self,
        t: &[L],
        rows: std::ops::Range<usize>,
        ignore: Option<i128>,
        wp: *const f32,
        base_g: f64,
    ) -> Option<(f64, usize)> {
        const BATCH: usize = PLAIN_ROWS;
        let (cols, o) = (self.cols, &self.opts);
        let mut classes = [0u32; BATCH];
        let mut acc = (0.0f64, 0usize);
        let at = |p: *mut f32, r: usize| if p.is_null() { p } else { p.wrapping_add(r) };
        let mut r = rows.start;
        while r < rows.end {
            let n = (rows.end - r).min(BATCH);
            for (i, c) in classes[..n].iter_mut().enumerate() {
                let v = t[r + i].to_i128();
                // Labels were validated: anything but the ignored label is in `0..cols`.
                *c = if ignore == Some(v) {
                    u32::MAX
                } else {
                    v as u32
                };
            }
            let b = CeShortBatch {
                classes: classes.as_ptr(),
                weights: wp,
                base_g,
                row_scale: o.row_scale.map_or(std::ptr::null(), |g| g[r..].as_ptr()),
                zl: o.z_loss as f64,
                zl2: 2.0 * o.z_loss,
                want_argmax: self.want_argmax,
                row_loss: at(self.row_loss.get(), r),
                lse: at(self.lse.get(), r),
                argmax: if self.argmax.get().is_null() {
                    std::ptr::null_mut()
                } else {
                    self.argmax.get().wrapping_add(r)
                },
            };
            let g = at(self.g.get(), r * cols);
            // SAFETY: rows `r .. r + n` lie inside `x` (and `g`), belong to this task, and the
            // per-row outputs hold `rows` entries (checked by `ce_plan`), so every pointer above
            // is valid for the `n` rows it covers; `classes` holds `n` validated classes.
            let done = unsafe {
                (self.k.ce.short_rows)(self.x.get().add(r * cols), g, n, cols, &b, &mut acc)
            };
            if !done {
                debug_assert_eq!(r, rows.start, "the short path depends on cols only");
                return None;
            }
            r += n;
        }
        Some(acc)
    }

    fn args(&self, t: usize, wt: f64, g: f64, used: bool) -> CeArgs {
        let o = &self.opts;
        let eps = o.label_smoothing as f64;
        let c = self.cols as f64;
        CeArgs {
            t,
            a0: ((1.0 - eps) * wt + eps / c * self.wsum) as f32,
            zl2: 2.0 * o.z_loss,
            g: g as f32,
            smooth: (g * eps / c) as f32,
            fix_t: (g * (1.0 - eps) * wt) as f32,
            weights: o.weight.map_or(std::ptr::null(), |w| w.as_ptr()),
            cap: o.softcap.unwrap_or(0.0),
            dot: used && eps != 0.0,
            argmax: self.want_argmax,
            next: std::ptr::null(),
            known_max: None,
            defer: false,
        }
    }

    /// Probability targets over rows `rows`.
    fn prob_block(&self, y: &[f32], rows: std::ops::Range<usize>) -> (f64, usize) {
        let (cols, o) = (self.cols, &self.opts);
        let mut sum = 0.0f64;
        for r in rows {
            let a = CeProbArgs {
                eps: o.label_smoothing,
                zl2: 2.0 * o.z_loss,
                g: self.row_g(r),
                weights: o.weight.map_or(std::ptr::null(), |w| w.as_ptr()),
                cap: o.softcap.unwrap_or(0.0),
                argmax: self.want_argmax,
            };
            // SAFETY: as in `class_block`; `y` holds `rows * cols` floats (checked).
            unsafe {
                let xr = self.x.get().add(r * cols);
                let gr = if self.g.get().is_null() {
                    std::ptr::null_mut()
                } else {
                    self.g.get().add(r * cols)
                };
                let out = (self.k.ce.prob_row)(xr, y.as_ptr().add(r * cols), gr, cols, &a);
                // sum w y' (lse - z) = (sum w y') ln s - sum w y' (z - m).
                let lse = lse_of(&out);
                let loss = out.zt * out.ls - out.dot + o.z_loss as f64 * lse * lse;
                sum += loss;
                self.put(r, loss, &out);
            }
        }
        (sum, 0)
    }
}

/// A row's logsumexp from its kernel results (NaN for a non-finite maximum, as the loss).
fn lse_of(out: &CeRowOut) -> f64 {
    if out.m.is_finite() {
        out.m + out.ls
    } else {
        f64::NAN
    }
}

/// Cross-entropy loss against class labels on the active tier ([`Kernels::cross_entropy`]).
///
/// ```
/// use softmax_kernels::{cross_entropy, CrossEntropyOptions};
/// // Two classes: the logistic loss ln(1 + e^-(z_t - z_other)).
/// let loss = cross_entropy(&[1.0f32, 0.0], &[0i64], 2, &CrossEntropyOptions::default()).unwrap();
/// assert!((loss - (1.0f32 + (-1.0f32).exp()).ln()).abs() < 1e-6);
/// ```
pub fn cross_entropy<L: Label>(
    logits: &[f32],
    targets: &[L],
    cols: usize,
    opts: &CrossEntropyOptions<'_>,
) -> Result<f32> {
    Kernels::active()?.cross_entropy(logits, targets, cols, opts)
}

/// Loss and gradient into `grad` on the active tier ([`Kernels::cross_entropy_fwd_bwd`]).
///
/// ```
/// use softmax_kernels::{cross_entropy_fwd_bwd, CrossEntropyOptions};
/// let mut g = [0.0f32; 2];
/// cross_entropy_fwd_bwd(&[0.0f32, 0.0], &[1usize], &mut g, 2, &CrossEntropyOptions::default()).unwrap();
/// assert_eq!(g, [0.5, -0.5]);
/// ```
pub fn cross_entropy_fwd_bwd<L: Label>(
    logits: &[f32],
    targets: &[L],
    grad: &mut [f32],
    cols: usize,
    opts: &CrossEntropyOptions<'_>,
) -> Result<f32> {
    Kernels::active()?.cross_entropy_fwd_bwd(logits, targets, grad, cols, opts)
}

/// Loss and gradient over the logits on the active tier
/// ([`Kernels::cross_entropy_fwd_bwd_inplace`]).
///
/// ```
/// use softmax_kernels::{cross_entropy_fwd_bwd_inplace, CrossEntropyOptions};
/// let mut z = [0.0f32, 0.0];
/// cross_entropy_fwd_bwd_inplace(&mut z, &[1i64], 2, &CrossEntropyOptions::default()).unwrap();
/// assert_eq!(z, [0.5, -0.5]);
/// ```
pub fn cross_entropy_fwd_bwd_inplace<L: Label>(
    logits: &mut [f32],
    targets: &[L],
    cols: usize,
    opts: &CrossEntropyOptions<'_>,
) -> Result<f32> {
    Kernels::active()?.cross_entropy_fwd_bwd_inplace(logits, targets, cols, opts)
}

/// Loss against probability targets on the active tier ([`Kernels::cross_entropy_probs`]).
///
/// ```
/// use softmax_kernels::{cross_entropy_probs, CrossEntropyOptions};
/// let loss = cross_entropy_probs(&[0.0f32; 4], &[0.25; 4], 4, &CrossEntropyOptions::default()).unwrap();
/// assert!((loss - 4f32.ln()).abs() < 1e-6);
/// ```
pub fn cross_entropy_probs(
    logits: &[f32],
    probs: &[f32],
    cols: usize,
    opts: &CrossEntropyOptions<'_>,
) -> Result<f32> {
    Kernels::active()?.cross_entropy_probs(logits, probs, cols, opts)
}

/// Loss and gradient against probability targets on the active tier
/// ([`Kernels::cross_entropy_probs_fwd_bwd`]).
///
/// ```
/// use softmax_kernels::{cross_entropy_probs_fwd_bwd, CrossEntropyOptions};
/// let mut g = [0.0f32; 2];
/// cross_entropy_probs_fwd_bwd(&[0.0f32, 0.0], &[1.0, 0.0], &mut g, 2, &CrossEntropyOptions::default()).unwrap();
/// assert_eq!(g, [-0.5, 0.5]);
/// ```
pub fn cross_entropy_probs_fwd_bwd(
    logits: &[f32],
    probs: &[f32],
    grad: &mut [f32],
    cols: usize,
    opts: &CrossEntropyOptions<'_>,
) -> Result<f32> {
    Kernels::active()?.cross_entropy_probs_fwd_bwd(logits, probs, grad, cols, opts)
}

/// Loss and gradient against probability targets on the active tier, the gradient written
/// over the logits ([`Kernels::cross_entropy_probs_fwd_bwd_inplace`]).
///
/// ```
/// use softmax_kernels::{cross_entropy_probs_fwd_bwd_inplace, CrossEntropyOptions};
/// let mut z = [0.0f32, 0.0];
/// let loss = cross_entropy_probs_fwd_bwd_inplace(&mut z, &[1.0, 0.0], 2, &CrossEntropyOptions::default())?;
/// assert!((loss - 2f32.ln()).abs() < 1e-6);
/// assert_eq!(z, [-0.5, 0.5]);
/// # Ok::<(), softmax_kernels::Error>(())
/// ```
pub fn cross_entropy_probs_fwd_bwd_inplace(
    logits: &mut [f32],
    probs: &[f32],
    cols: usize,
    opts: &CrossEntropyOptions<'_>,
) -> Result<f32> {
    Kernels::active()?.cross_entropy_probs_fwd_bwd_inplace(logits, probs, cols, opts)
}

/// The general entry point on the active tier ([`Kernels::cross_entropy_with`]).
///
/// ```
/// use softmax_kernels::{cross_entropy_with, CrossEntropyOptions, CrossEntropyOutputs, Logits,
///                       Reduction, Targets};
/// let z = [0.0f32, 0.0, 5.0, 0.0];
/// let mut per_row = [0.0f32; 2];
/// let mut out = CrossEntropyOutputs { row_loss: Some(&mut per_row), ..Default::default() };
/// let opts = CrossEntropyOptions::default().reduction(Reduction::None);
/// cross_entropy_with(Logits::Read(&z), Targets::Classes(&[0i64, -100]), 2, &opts, &mut out).unwrap();
/// assert!((per_row[0] - 2f32.ln()).abs() < 1e-6);
/// assert_eq!(per_row[1], 0.0); // ignored
/// ```
pub fn cross_entropy_with<L: Label>(
    logits: Logits<'_>,
    targets: Targets<'_, L>,
    cols: usize,
    opts: &CrossEntropyOptions<'_>,
    outputs: &mut CrossEntropyOutputs<'_>,
) -> Result<CrossEntropyStats> {
    Kernels::active()?.cross_entropy_with(logits, targets, cols, opts, outputs)
}

/// The old name of [`cross_entropy_with`] (renamed so that every "with options" entry point
/// ends in `_with`, as the softmax family does).
#[deprecated(since = "0.2.0", note = "renamed to `cross_entropy_with`")]
pub fn cross_entropy_ext<L: Label>(
    logits: Logits<'_>,
    targets: Targets<'_, L>,
    cols: usize,
    opts: &CrossEntropyOptions<'_>,
    outputs: &mut CrossEntropyOutputs<'_>,
) -> Result<CrossEntropyStats> {
    cross_entropy_with(logits, targets, cols, opts, outputs)
}
