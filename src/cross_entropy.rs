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
//! ## Paths
//!
//! A call is validated first (options, lengths, every label), then `CePlan::choose` picks its
//! path once, from the target kind, the options, the outputs asked for, the row count and the
//! tier's short-row width (`W`: 64 classes on AVX-512, 32 on AVX2). Each row block then runs
//! the path's kernel (`crate::arch::generic::ce`). The path depends on the call alone, never on
//! the thread count.
//!
//! | path | chosen when | what it saves |
//! |---|---|---|
//! | `Probs` | probability targets | - |
//! | `OneRow` | one row of at most `W` classes; no smoothing, cap, weights, row scales, z-loss or per-row outputs | the loop's set-up; the target's fix-up is in the register |
//! | `Dense` | as `OneRow`, from 4 dense rows (`ld == cols`: not a strided view) of one vector (16 classes on AVX-512, 8 on AVX2) | idle lanes: the exps of many rows as one dense array |
//! | `ShortPlain` | as `OneRow`, several rows | the per-row `ln`: the loss adds `ln prod s` once per 16 rows |
//! | `Short` | rows of at most `W` classes, no smoothing or cap | loops: each row in registers, shifted by its target logit when that is safe |
//! | `Rows` | every other class-target call | - (three passes per row, pipelined across rows) |
//!
//! The short paths (`OneRow`, `Dense`, `ShortPlain`, `Short`) compute each row with one
//! function, so they give the same bits; a short row shifted by its target logit (when
//! `sum_c exp(z_c - z_t) <= 2^60`, every argument below 41.6, each argument's rounding
//! corrected exactly) is at least as accurate as one shifted by its maximum. `Rows` shifts
//! every row by its maximum.

use crate::arch::generic::ce::{CeAcc, CeCall, CeRows, IGNORED};
use crate::dispatch::Kernels;
use crate::error::{check_len, rows_of, Error, Result};
use crate::linear::MatrixLayout;
use crate::parallel::{sum_row_blocks, BLOCK_BYTES};
use crate::view::{nonzero_cols, same_shape, MatMut, MatRef, Raw};

/// Labels converted to kernel classes at a time (on the stack) per row block.
const LABEL_BATCH: usize = 64;

/// `Dense` pays from this many rows on; fewer rows stay on `ShortPlain`.
const DENSE_MIN_ROWS: usize = 4;

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

    #[inline]
    pub(crate) fn validate(&self, rows: usize, cols: usize) -> Result<()> {
        // Out of line and cold: the checks of a valid call stay a few compares.
        #[cold]
        #[inline(never)]
        fn bad(name: &'static str, value: f32, expected: &'static str) -> Result<()> {
            Err(Error::InvalidOption {
                name,
                value: value.to_string(),
                expected,
            })
        }
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing", self.label_smoothing, "in [0, 1]");
        }
        // (NaN fails the comparisons too.)
        if !(self.z_loss >= 0.0 && self.z_loss < f32::INFINITY) {
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

/// The targets of a call on raw rows: labels, or probability rows in `data` with the layout
/// of the raw matrix.
pub(crate) enum RawTargets<'a, L: Label> {
    Classes(&'a [L]),
    Probs(&'a [f32], Raw),
}

/// Strided logits ([`Kernels::cross_entropy_strided`]): [`Logits`] over views whose rows
/// start `ld` floats apart.
#[derive(Debug)]
pub enum StridedLogits<'a> {
    /// Loss only.
    Read(MatRef<'a>),
    /// Loss and gradient into a separate view of the same shape (its own stride).
    Grad(MatRef<'a>, MatMut<'a>),
    /// Loss and gradient written over the logits.
    InPlace(MatMut<'a>),
}

/// Targets of a strided call: class labels (one per row), or probability rows in a view of
/// the logits' shape (its own stride).
#[derive(Clone, Copy, Debug)]
pub enum StridedTargets<'a, L: Label = i64> {
    /// One class label per row.
    Classes(&'a [L]),
    /// A probability distribution per row.
    Probs(MatRef<'a>),
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
        let rows = rows_of_call(len, cols, &targets)?;
        check_len("grad", grad_len, len)?;
        // SAFETY: `xp` holds `rows * cols` floats, `gp` is null or `rows * cols` floats equal
        // to `xp` or a distinct buffer (the borrows above).
        unsafe { self.ce_call(RawLogits::dense(xp, gp, rows, cols), targets, opts, outputs) }
    }

    /// Cross-entropy over strided rows ([`crate::view`]): [`Kernels::cross_entropy_with`]
    /// for logits, gradient and probability targets whose rows start `ld` floats apart, with
    /// the same bits as on the rows copied out (a NaN's sign and payload aside). The floats
    /// between rows are neither read nor
    /// written. (Short plain rows that are not dense take `ShortPlain` rather than `Dense`,
    /// which computes the same bits.)
    ///
    /// # Errors
    /// As [`Kernels::cross_entropy_with`]; [`Error::ShapeMismatch`] if the gradient or the
    /// probability targets have other rows or columns than the logits.
    ///
    /// ```
    /// use softmax_kernels::{CrossEntropyOptions, CrossEntropyOutputs, Kernels, MatMut, MatRef};
    /// use softmax_kernels::cross_entropy::{StridedLogits, StridedTargets};
    /// // The last position of a [B = 2, T = 3, V = 4] logits tensor, and its gradient.
    /// let (b, t, v) = (2, 3, 4);
    /// let z = vec![0.5f32; b * t * v];
    /// let mut g = vec![0.0f32; b * t * v];
    /// let last = MatRef::new(&z[(t - 1) * v..], b, v, t * v).unwrap();
    /// let grad = MatMut::new(&mut g[(t - 1) * v..], b, v, t * v).unwrap();
    /// let st = Kernels::best()
    ///     .cross_entropy_strided(
    ///         StridedLogits::Grad(last, grad),
    ///         StridedTargets::Classes(&[1i64, 3]),
    ///         &CrossEntropyOptions::default(),
    ///         &mut CrossEntropyOutputs::default(),
    ///     )
    ///     .unwrap();
    /// assert!((st.loss - 4f32.ln()).abs() < 1e-6);
    /// // Only the last position's rows were written: (1/4 - onehot) / 2.
    /// assert_eq!(g[(t - 1) * v + 1], (0.25 - 1.0) / 2.0);
    /// assert_eq!(g[..(t - 1) * v], vec![0.0; (t - 1) * v][..]);
    /// ```
    pub fn cross_entropy_strided<L: Label>(
        &self,
        logits: StridedLogits<'_>,
        targets: StridedTargets<'_, L>,
        opts: &CrossEntropyOptions<'_>,
        outputs: &mut CrossEntropyOutputs<'_>,
    ) -> Result<CrossEntropyStats> {
        let (x, grad) = match logits {
            StridedLogits::Read(x) => (x.raw(), None),
            StridedLogits::Grad(x, mut g) => (x.raw(), Some(g.raw())),
            StridedLogits::InPlace(mut x) => {
                let x = x.raw();
                (x, Some(x))
            }
        };
        let targets = match targets {
            StridedTargets::Classes(t) => RawTargets::Classes(t),
            StridedTargets::Probs(y) => RawTargets::Probs(y.as_slice(), y.raw()),
        };
        // SAFETY: checked views: the logits, and the gradient, a distinct mutable borrow or
        // the logits themselves (in place, one stride); the probability targets a view.
        unsafe { self.ce_raw(x, grad, targets, opts, outputs) }
    }

    /// [`Kernels::cross_entropy_strided`] on raw rows, after the shape checks.
    ///
    /// # Safety
    /// `x.ptr` valid for reading `x.rows` rows of `x.cols` floats `x.ld` apart; `grad` null
    /// or valid for writing its rows, equal to `x` (same stride) or overlapping none of `x`'s
    /// floats; probability targets: `data` is the slice the view `y` lies in.
    pub(crate) unsafe fn ce_raw<L: Label>(
        &self,
        x: Raw,
        grad: Option<Raw>,
        targets: RawTargets<'_, L>,
        opts: &CrossEntropyOptions<'_>,
        outputs: &mut CrossEntropyOutputs<'_>,
    ) -> Result<CrossEntropyStats> {
        nonzero_cols(x)?;
        if let Some(g) = grad {
            same_shape("grad", x, g)?;
        }
        let (targets, ldy) = match targets {
            RawTargets::Classes(t) => (Targets::Classes(t), x.cols),
            RawTargets::Probs(data, y) => {
                same_shape("targets", x, y)?;
                (Targets::Probs(data), y.ld)
            }
        };
        let z = RawLogits {
            x: x.ptr,
            grad: grad.map_or(std::ptr::null_mut(), |g| g.ptr),
            rows: x.rows,
            cols: x.cols,
            ldx: x.ld,
            ldg: grad.map_or(x.ld, |g| g.ld),
            ldy,
        };
        // SAFETY: the caller's contract; the plan checks the probability targets' slice
        // against their stride.
        unsafe { self.ce_call(z, targets, opts, outputs) }
    }

    /// The body of every cross-entropy call whose matrices are checked: validates the rest,
    /// plans and runs the rows.
    ///
    /// # Safety
    /// `z.x` valid for reading `z.rows` rows of `z.cols` floats `z.ldx` apart; `z.grad` null
    /// or valid for writing as many rows `z.ldg` apart, equal to `z.x` with the same stride or
    /// not overlapping it.
    #[inline(always)]
    unsafe fn ce_call<L: Label>(
        &self,
        z: RawLogits,
        targets: Targets<'_, L>,
        opts: &CrossEntropyOptions<'_>,
        outputs: &mut CrossEntropyOutputs<'_>,
    ) -> Result<CrossEntropyStats> {
        let rows = z.rows;
        // A call of at most one label batch keeps the kernel classes of its validation pass
        // (converting the labels a second time cost a 64x10 call a tenth of its time).
        let mut small = std::mem::MaybeUninit::<[u32; LABEL_BATCH]>::uninit();
        let keep = rows <= LABEL_BATCH && matches!(targets, Targets::Classes(_));
        let kp = if keep {
            small.as_mut_ptr().cast::<u32>()
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: `kp` is null or holds `LABEL_BATCH >= rows` entries.
        let plan = unsafe { self.ce_plan_keeping(targets, z.shape(), opts, outputs, kp)? };
        // SAFETY: with `keep`, `ce_plan_keeping` wrote the first `rows` entries.
        let pre = keep.then(|| unsafe { std::slice::from_raw_parts(kp.cast_const(), rows) });
        // SAFETY: the caller's contract for `z`; `ce_plan` checked the targets, options and
        // outputs for `rows` rows, and wrote `small`'s classes.
        let (total, correct) = unsafe { self.ce_rows_with(z, targets, pre, opts, &plan, outputs) };
        Ok(plan.finish(opts, total, correct, outputs.argmax.is_some(), &targets))
    }

    /// The path [`Kernels::cross_entropy_with`] takes for this call (after the same checks),
    /// for tests and reports that name it.
    ///
    /// # Errors
    /// As [`Kernels::cross_entropy_with`].
    #[doc(hidden)]
    pub fn cross_entropy_path<L: Label>(
        &self,
        logits: &[f32],
        targets: Targets<'_, L>,
        cols: usize,
        opts: &CrossEntropyOptions<'_>,
        outputs: &CrossEntropyOutputs<'_>,
    ) -> Result<CePath> {
        let rows = rows_of("logits", logits.len(), cols)?;
        Ok(self.ce_plan(targets, rows, cols, opts, outputs)?.path)
    }

    /// [`Kernels::cross_entropy_with`] on a chosen path instead of the planned one, for tests
    /// that compare the paths. `Ok(None)` (nothing computed or written) when `path` does not
    /// take this call ([`CePath::accepts`]).
    ///
    /// # Errors
    /// As [`Kernels::cross_entropy_with`].
    #[doc(hidden)]
    pub fn cross_entropy_on_path<L: Label>(
        &self,
        path: CePath,
        logits: Logits<'_>,
        targets: Targets<'_, L>,
        cols: usize,
        opts: &CrossEntropyOptions<'_>,
        outputs: &mut CrossEntropyOutputs<'_>,
    ) -> Result<Option<CrossEntropyStats>> {
        let (len, grad_len) = match &logits {
            Logits::Read(x) => (x.len(), x.len()),
            Logits::Grad(x, gr) => (x.len(), gr.len()),
            Logits::InPlace(x) => (x.len(), x.len()),
        };
        let rows = rows_of("logits", len, cols)?;
        check_len("grad", grad_len, len)?;
        let mut plan = self.ce_plan(targets, rows, cols, opts, outputs)?;
        let facts = CallFacts::of(self, Shape::dense(rows, cols), &targets, opts, outputs);
        if !path.accepts(&facts) {
            return Ok(None);
        }
        plan.path = path;
        let (xp, gp): (*const f32, *mut f32) = match logits {
            Logits::Read(x) => (x.as_ptr(), std::ptr::null_mut()),
            Logits::Grad(x, gr) => (x.as_ptr(), gr.as_mut_ptr()),
            Logits::InPlace(x) => (x.as_ptr(), x.as_mut_ptr()),
        };
        // SAFETY: as in `cross_entropy_with`; `path` accepts the call.
        let (total, correct) = unsafe {
            self.ce_rows(
                RawLogits::dense(xp, gp, rows, cols),
                targets,
                opts,
                &plan,
                outputs,
            )
        };
        Ok(Some(plan.finish(
            opts,
            total,
            correct,
            outputs.argmax.is_some(),
            &targets,
        )))
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

    /// Checks everything but the logits for a cross-entropy over `rows x cols` (options,
    /// target and output lengths), validates the labels in one pass over them and sums the
    /// weights of the rows used, then chooses the path ([`CePlan::choose`]).
    pub(crate) fn ce_plan<L: Label>(
        &self,
        targets: Targets<'_, L>,
        rows: usize,
        cols: usize,
        opts: &CrossEntropyOptions<'_>,
        outputs: &CrossEntropyOutputs<'_>,
    ) -> Result<CePlan> {
        let shape = Shape::dense(rows, cols);
        // SAFETY: nothing is kept.
        unsafe { self.ce_plan_keeping(targets, shape, opts, outputs, std::ptr::null_mut()) }
    }

    /// [`Kernels::ce_plan`], writing each row's kernel class (or [`IGNORED`]) to `keep[r]`
    /// unless `keep` is null (class targets only).
    ///
    /// # Safety
    /// `keep` null or valid for `rows` writes.
    unsafe fn ce_plan_keeping<L: Label>(
        &self,
        targets: Targets<'_, L>,
        shape: Shape,
        opts: &CrossEntropyOptions<'_>,
        outputs: &CrossEntropyOutputs<'_>,
        keep: *mut u32,
    ) -> Result<CePlan> {
        let (rows, cols) = (shape.rows, shape.cols);
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
                    let class = match class_of(l, cols, opts.ignore_index) {
                        Ok(Some(c)) => {
                            den += opts.weight.map_or(1.0, |w| w[c] as f64);
                            used += 1;
                            // `c < cols <= MAX_CLASSES` fits.
                            c as u32
                        }
                        Ok(None) => IGNORED,
                        Err(label) => {
                            return Err(Error::BadLabel {
                                row: r,
                                label,
                                classes: cols,
                            })
                        }
                    };
                    if !keep.is_null() {
                        // SAFETY: `r < rows`, which the caller's `keep` holds.
                        unsafe { keep.add(r).write(class) };
                    }
                }
                (den, used)
            }
            Targets::Probs(y) => {
                if shape.ldy == cols {
                    let need = rows
                        .checked_mul(cols)
                        .ok_or(Error::SizeOverflow { arg: "targets" })?;
                    check_len("targets", y.len(), need)?;
                } else {
                    MatrixLayout::new(rows, cols)
                        .with_ld(shape.ldy)
                        .check("targets", y.len())?;
                }
                (rows as f64, rows)
            }
        };
        let red_scale = match opts.reduction {
            // `1 / 1 == 1` exactly: a one-row call skips the division's latency.
            Reduction::Mean if denominator == 1.0 => 1.0,
            Reduction::Mean => 1.0 / denominator,
            Reduction::Sum | Reduction::None => 1.0,
        };
        Ok(CePlan {
            path: CePlan::choose(self, shape, &targets, opts, outputs),
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
    /// `z.x` valid for `rows * cols` reads; `z.grad` null or valid for `rows * cols` writes,
    /// equal to `z.x` or not overlapping it; [`Kernels::ce_plan`] accepted `targets`, `opts`
    /// and `outputs` for `rows` rows.
    pub(crate) unsafe fn ce_rows<L: Label>(
        &self,
        z: RawLogits,
        targets: Targets<'_, L>,
        opts: &CrossEntropyOptions<'_>,
        plan: &CePlan,
        outputs: &mut CrossEntropyOutputs<'_>,
    ) -> (f64, usize) {
        // SAFETY: forwarded.
        unsafe { self.ce_rows_with(z, targets, None, opts, plan, outputs) }
    }

    /// [`Kernels::ce_rows`] with, for class targets, the rows' kernel classes when the caller
    /// has them (`pre`: `rows` entries, each `< cols` or [`IGNORED`], from the validation pass).
    ///
    /// # Safety
    /// As [`Kernels::ce_rows`]; `pre` the classes of `targets`.
    unsafe fn ce_rows_with<L: Label>(
        &self,
        z: RawLogits,
        targets: Targets<'_, L>,
        pre: Option<&[u32]>,
        opts: &CrossEntropyOptions<'_>,
        plan: &CePlan,
        outputs: &mut CrossEntropyOutputs<'_>,
    ) -> (f64, usize) {
        let RawLogits {
            x: xp,
            grad: gp,
            rows,
            cols,
            ldx,
            ldg,
            ldy,
        } = z;
        let eps = opts.label_smoothing as f64;
        // (`0 / C` is 0: no division for the common case.)
        let eps_c = if eps == 0.0 { 0.0 } else { eps / cols as f64 };
        let call = CeCall {
            cols,
            weights: opts.weight.map_or(std::ptr::null(), |w| w.as_ptr()),
            base_g: plan.red_scale * opts.scale as f64,
            eps,
            keep: 1.0 - eps,
            eps_c,
            smooth_a0: if eps == 0.0 { 0.0 } else { eps_c * plan.wsum },
            wsum: plan.wsum,
            zl: opts.z_loss as f64,
            zl2: 2.0 * opts.z_loss,
            cap: opts.softcap.unwrap_or(0.0),
            argmax: outputs.argmax.is_some(),
        };
        let path = self.ce.entry(plan.path);
        // The whole call as one run of rows; `run` cuts the runs the tasks compute.
        let all = SyncRows(CeRows {
            call: &call,
            x: xp,
            grad: gp,
            rows,
            classes: std::ptr::null(),
            probs: std::ptr::null(),
            ldx,
            ldg,
            ldy,
            row_scale: opts.row_scale.map_or(std::ptr::null(), |v| v.as_ptr()),
            row_loss: opt_ptr(&mut outputs.row_loss),
            lse: opt_ptr(&mut outputs.lse),
            argmax: outputs
                .argmax
                .as_mut()
                .map_or(std::ptr::null_mut(), |a| a.as_mut_ptr()),
        });
        let all = &all;
        // Rows `r0 .. r0 + n` of the call, their classes at `classes` (or null).
        let run = move |r0: usize, n: usize, classes: *const u32, probs: *const f32| {
            all.0.run(r0, n, classes, probs)
        };
        if let (Some(pre), true) = (pre, rows.saturating_mul(cols) <= BLOCK_BYTES / 4) {
            // One row block (as `sum_row_blocks` would run it, `0.0 +` included), without
            // its closures.
            let mut acc: CeAcc = (0.0, 0);
            let b = CeRows {
                classes: pre.as_ptr(),
                ..all.0
            };
            // SAFETY: as below; `pre` holds the validated classes of every row.
            unsafe { path(&b, &mut acc) };
            return (0.0 + acc.0, acc.1);
        }
        let ignore = opts.ignore_index.map(|i| i as i128);
        match targets {
            Targets::Classes(t) => sum_row_blocks(rows, cols, |block| {
                let mut acc: CeAcc = (0.0, 0);
                if let Some(pre) = pre {
                    let cp = pre[block.start..].as_ptr();
                    // SAFETY: as below; `pre` holds the validated classes of every row.
                    unsafe {
                        path(
                            &run(block.start, block.len(), cp, std::ptr::null()),
                            &mut acc,
                        )
                    };
                    return acc;
                }
                let mut classes = [0u32; LABEL_BATCH];
                let mut r0 = block.start;
                while r0 < block.end {
                    let n = (block.end - r0).min(LABEL_BATCH);
                    for (c, l) in classes[..n].iter_mut().zip(&t[r0..r0 + n]) {
                        let v = l.to_i128();
                        // Labels were validated: anything but the ignored label is in
                        // `0..cols`, and `cols <= MAX_CLASSES` fits a u32.
                        *c = if ignore == Some(v) { IGNORED } else { v as u32 };
                    }
                    // SAFETY: rows `r0 .. r0 + n` lie inside `x` (and `g`) and belong to this
                    // task; the per-row outputs and row scales hold `rows` entries (checked by
                    // `ce_plan`); `classes` holds `n` validated classes; `plan.path` accepts
                    // the call.
                    unsafe { path(&run(r0, n, classes.as_ptr(), std::ptr::null()), &mut acc) };
                    r0 += n;
                }
                acc
            }),
            Targets::Probs(y) => sum_row_blocks(rows, cols, |block| {
                let mut acc: CeAcc = (0.0, 0);
                let yp = y.as_ptr().wrapping_add(block.start * ldy);
                // SAFETY: as above; `y` holds `rows` rows `ldy` apart (checked by `ce_plan`).
                unsafe {
                    path(
                        &run(block.start, block.len(), std::ptr::null(), yp),
                        &mut acc,
                    )
                };
                acc
            }),
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

/// The rows of a call, shared by the tasks that compute parts of it.
struct SyncRows<'a>(CeRows<'a>);

// SAFETY: the tasks read the pointers' addresses only to cut disjoint runs of rows
// (`CeRows::run`); what each run reads and writes is the contract of `Kernels::ce_rows`.
unsafe impl Sync for SyncRows<'_> {}

/// The logits and gradient of a checked call: `rows` rows of `cols` floats at `x`, `ldx`
/// apart, and at `grad`, `ldg` apart (null for the loss alone, `x` itself with `ldg == ldx`
/// in place, else a buffer not overlapping `x`); `ldy` is the row stride of probability
/// targets.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawLogits {
    pub x: *const f32,
    pub grad: *mut f32,
    pub rows: usize,
    pub cols: usize,
    pub ldx: usize,
    pub ldg: usize,
    pub ldy: usize,
}

impl RawLogits {
    /// Dense rows (every stride `cols`).
    pub(crate) fn dense(x: *const f32, grad: *mut f32, rows: usize, cols: usize) -> Self {
        RawLogits {
            x,
            grad,
            rows,
            cols,
            ldx: cols,
            ldg: cols,
            ldy: cols,
        }
    }

    /// The shape the plan needs.
    fn shape(&self) -> Shape {
        Shape {
            rows: self.rows,
            cols: self.cols,
            ldy: self.ldy,
            dense: self.ldx == self.cols && (self.grad.is_null() || self.ldg == self.cols),
        }
    }
}

/// What the plan reads of a call's matrices: rows, columns, the probability targets' row
/// stride, and whether the logits and gradient rows are dense (`ld == cols`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub rows: usize,
    pub cols: usize,
    pub ldy: usize,
    pub dense: bool,
}

impl Shape {
    /// A dense `[rows, cols]` call.
    pub(crate) fn dense(rows: usize, cols: usize) -> Self {
        Shape {
            rows,
            cols,
            ldy: cols,
            dense: true,
        }
    }
}

/// A cross-entropy path: how the rows of a call are computed (the table in the module docs).
/// Public only for tests that run a call on a chosen path
/// ([`Kernels::cross_entropy_on_path`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CePath {
    OneRow,
    Dense,
    ShortPlain,
    Short,
    Rows,
    Probs,
}

impl CePath {
    /// Every path.
    pub const ALL: [CePath; 6] = [
        CePath::OneRow,
        CePath::Dense,
        CePath::ShortPlain,
        CePath::Short,
        CePath::Rows,
        CePath::Probs,
    ];

    /// Whether the path computes calls with these facts correctly (it need not be the fastest).
    fn accepts(self, f: &CallFacts) -> bool {
        match self {
            CePath::Probs => f.probs,
            CePath::Rows => !f.probs,
            CePath::Short => !f.probs && f.short,
            CePath::ShortPlain => !f.probs && f.short && f.plain,
            CePath::Dense => !f.probs && f.short && f.plain && f.one_vector && f.dense,
            CePath::OneRow => !f.probs && f.short && f.plain && f.rows == 1,
        }
    }
}

/// What the path of a call depends on.
struct CallFacts {
    rows: usize,
    /// Probability targets.
    probs: bool,
    /// Rows the short paths take: at most the tier's short width, no smoothing, no cap.
    short: bool,
    /// No weights, row scales, z-loss or per-row outputs.
    plain: bool,
    /// Rows of one vector.
    one_vector: bool,
    /// Dense logits and gradient rows (`ld == cols`).
    dense: bool,
}

impl CallFacts {
    #[inline(always)]
    fn of<L: Label>(
        k: &Kernels,
        shape: Shape,
        targets: &Targets<'_, L>,
        opts: &CrossEntropyOptions<'_>,
        outputs: &CrossEntropyOutputs<'_>,
    ) -> CallFacts {
        let (rows, cols) = (shape.rows, shape.cols);
        CallFacts {
            rows,
            probs: matches!(targets, Targets::Probs(_)),
            short: cols <= k.ce.short_cols && opts.label_smoothing == 0.0 && opts.softcap.is_none(),
            plain: opts.weight.is_none()
                && opts.row_scale.is_none()
                && opts.z_loss == 0.0
                && outputs.row_loss.is_none()
                && outputs.lse.is_none()
                && outputs.argmax.is_none(),
            one_vector: cols <= k.ce.dense_cols,
            dense: shape.dense,
        }
    }
}

/// What [`Kernels::ce_plan`] found: the path, the reduction's denominator and scale, and the
/// weight sum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CePlan {
    /// How the rows are computed.
    pub path: CePath,
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
    /// The path of a valid call: the only place that reads the option flags, the tier's
    /// short-row widths, the row count and the outputs asked for: the fastest path that
    /// accepts the call ([`CePath::accepts`]), as the module docs' table says.
    #[inline]
    pub(crate) fn choose<L: Label>(
        k: &Kernels,
        shape: Shape,
        targets: &Targets<'_, L>,
        opts: &CrossEntropyOptions<'_>,
        outputs: &CrossEntropyOutputs<'_>,
    ) -> CePath {
        let f = CallFacts::of(k, shape, targets, opts, outputs);
        let rows = shape.rows;
        let path = if f.probs {
            CePath::Probs
        } else if !f.short {
            CePath::Rows
        } else if !f.plain {
            CePath::Short
        } else if rows == 1 {
            CePath::OneRow
        } else if f.one_vector && f.dense && rows >= DENSE_MIN_ROWS {
            CePath::Dense
        } else {
            CePath::ShortPlain
        };
        debug_assert!(path.accepts(&f));
        path
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
        let loss = reduce_loss(opts, total, self.denominator, self.rows_used);
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

/// The reduced loss from the sum of the row losses, `Mean`'s denominator and the rows used.
#[inline]
pub(crate) fn reduce_loss(
    opts: &CrossEntropyOptions<'_>,
    total: f64,
    denominator: f64,
    rows_used: usize,
) -> f64 {
    match opts.reduction {
        Reduction::Mean if rows_used == 0 && opts.all_ignored == AllIgnored::Zero => 0.0,
        // `x / 1 == x` exactly: a one-row call skips the division's latency.
        Reduction::Mean if denominator == 1.0 => total,
        Reduction::Mean => total / denominator,
        Reduction::Sum | Reduction::None => total,
    }
}

/// The row count of a call of `len` logits: the labels' count when it fits (no division:
/// a one-row call would wait on it), else [`rows_of`] with its errors.
#[inline]
fn rows_of_call<L: Label>(len: usize, cols: usize, targets: &Targets<'_, L>) -> Result<usize> {
    if let Targets::Classes(t) = targets {
        if cols != 0 && t.len().checked_mul(cols) == Some(len) {
            return Ok(t.len());
        }
    }
    rows_of("logits", len, cols)
}

#[inline(always)]
fn opt_ptr(o: &mut Option<&mut [f32]>) -> *mut f32 {
    o.as_mut().map_or(std::ptr::null_mut(), |s| s.as_mut_ptr())
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
