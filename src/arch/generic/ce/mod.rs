//! The fused cross-entropy kernels, written once over [`crate::arch::vector::Simd`] and stamped
//! per tier by [`stamp_ce!`]: one entry per path of `CePath`, each taking a run of rows
//! ([`CeRows`]) with the call's constants ([`CeCall`]) and adding the rows' losses to an
//! accumulator. `crate::cross_entropy` validates the call, chooses the path once
//! (`CePlan::choose`), and hands each row block to the path's entry.
//!
//! | path | file | how a row is computed |
//! |---|---|---|
//! | `CePath::Rows` | [`row`] | the three passes below, pipelined across rows |
//! | `CePath::Probs` | [`probs`] | the three passes against a probability row |
//! | `CePath::Short` | [`short`] | in registers, shifted by the target logit when that is safe |
//! | `CePath::ShortPlain` | [`short`] | as `Short`, the loss grouped, no per-row outputs |
//! | `CePath::Dense` | [`short`] | as `ShortPlain`, the exps of many one-vector rows as one array |
//! | `CePath::OneRow` | [`short`] | as `ShortPlain` for one row, the target's fix-up in a register |
//!
//! One long row, class-index target `t` (the loss and gradient formulas are in
//! `crate::cross_entropy`):
//!
//! 1. max (and, when asked, the first index of the max) of the (soft-capped) logits;
//! 2. `e = exp(z - m)` stored into the gradient buffer while summed (f32 lanes, f64 blocks),
//!    plus `sum_c w_c z_c` when label smoothing needs it;
//! 3. `grad = (g A / s) e - g (eps / C) w` (one multiply or FMA per element), then the scalar
//!    fix-up `grad[t] -= g (1 - eps) w_t`. No per-element label compare, no per-element divide,
//!    one exp per element.
//!
//! With soft-capping (`z = cap tanh(x / cap)`), pass 2 stores the capped logits instead and
//! pass 3 recomputes their exp and applies the chain rule `1 - (z / cap)^2`.
//!
//! Every path computes the gradient factor with [`grad_factor`] and the short rows with one
//! function, `short::short_row`; the paths that must give the same bits share that code.

pub(crate) mod probs;
pub(crate) mod row;
pub(crate) mod short;

use super::exp::softcap;
use crate::arch::vector::Simd;
pub(crate) use crate::cross_entropy::CePath;

/// A class entry of [`CeRows::classes`] that marks an ignored row.
pub(crate) const IGNORED: u32 = u32::MAX;

/// The loss sum (f64, in row order) and the count of rows whose argmax hit their label.
pub(crate) type CeAcc = (f64, usize);

/// What every row of a call shares, fixed by the plan before the first row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CeCall {
    /// Classes per row.
    pub cols: usize,
    /// The class weights (`cols` floats) or null.
    pub weights: *const f32,
    /// The gradient scale of every row: the reduction's (`1 / denominator` for `Mean`) times
    /// the upstream scalar; a row's `row_scale` entry multiplies it.
    pub base_g: f64,
    /// Label smoothing `eps`, `1 - eps`, `eps / C`, and `(eps / C) sum_c w_c` (0 without
    /// smoothing: then the weight sum plays no part, and a NaN weight of a class that is no
    /// row's target must not reach the gradient, as in PyTorch).
    pub eps: f64,
    pub keep: f64,
    pub eps_c: f64,
    pub smooth_a0: f64,
    /// `sum_c w_c` (`cols` without weights).
    pub wsum: f64,
    /// z-loss coefficient, and `2 * z_loss` in f32 as the row kernels take it.
    pub zl: f64,
    pub zl2: f32,
    /// The soft-cap, or 0 for none.
    pub cap: f32,
    /// Whether to compute the argmax (the argmax output, or the count of hits).
    pub argmax: bool,
}

impl CeCall {
    /// The weight of class `t` (1 without weights).
    ///
    /// # Safety
    /// `t < cols`.
    #[inline(always)]
    pub(crate) unsafe fn weight_of(&self, t: usize) -> f64 {
        if self.weights.is_null() {
            1.0
        } else {
            // SAFETY: `weights` holds `cols` floats and `t < cols`.
            unsafe { *self.weights.add(t) as f64 }
        }
    }

    /// The row kernel's arguments for a row of class `t`, target weight `wt` and gradient
    /// scale `g`.
    #[inline(always)]
    pub(crate) fn class_args(&self, t: usize, wt: f64, g: f64) -> CeArgs {
        CeArgs {
            t,
            a0: (self.keep * wt + self.smooth_a0) as f32,
            zl2: self.zl2,
            g: g as f32,
            smooth: (g * self.eps_c) as f32,
            fix_t: (g * self.keep * wt) as f32,
            weights: self.weights,
            cap: self.cap,
            dot: self.eps != 0.0,
            argmax: self.argmax,
            next: std::ptr::null(),
            known_max: None,
            defer: false,
            keep: false,
            kept: None,
        }
    }

    /// The row kernel's arguments for an ignored row, whose lse and argmax alone are asked
    /// for (no gradient).
    #[inline(always)]
    pub(crate) fn ignored_args(&self) -> CeArgs {
        CeArgs {
            a0: (self.eps_c * self.wsum) as f32,
            g: 0.0,
            smooth: 0.0,
            fix_t: 0.0,
            dot: false,
            ..self.class_args(0, 0.0, 0.0)
        }
    }

    /// The loss of a row of target weight `wt` from its kernel results, every term relative
    /// to the row max `m` so that huge logits keep `ln s`: `lse - z_t = (m - z_t) + ln s`,
    /// `sum_c w_c (lse - z_c) = W ln s - sum_c w_c (z_c - m)`.
    #[inline(always)]
    pub(crate) fn class_loss(&self, wt: f64, out: &CeRowOut) -> f64 {
        let mut loss = self.keep * wt * ((out.m - out.zt) + out.ls);
        if self.zl != 0.0 {
            let lse = out.lse();
            loss += self.zl * lse * lse;
        }
        if self.eps != 0.0 {
            loss += self.eps_c * (self.wsum * out.ls - out.dot);
        }
        loss
    }

    /// The probability-target kernel's arguments for a row of gradient scale `g`.
    #[inline(always)]
    pub(crate) fn prob_args(&self, g: f64) -> CeProbArgs {
        CeProbArgs {
            eps: self.eps as f32,
            zl2: self.zl2,
            g: g as f32,
            weights: self.weights,
            cap: self.cap,
            argmax: self.argmax,
        }
    }

    /// The loss of a probability-target row from its kernel results:
    /// `sum w y' (lse - z) = (sum w y') ln s - sum w y' (z - m)`, plus the z-loss.
    #[inline(always)]
    pub(crate) fn prob_loss(&self, out: &CeRowOut) -> f64 {
        let lse = out.lse();
        out.zt * out.ls - out.dot + self.zl * lse * lse
    }
}

// SAFETY: the only pointer, `weights`, is read-only and points into a slice borrowed for the
// whole call, which the row-block tasks share.
unsafe impl Sync for CeCall {}

/// A run of consecutive rows of one call: every pointer starts at the run's first row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CeRows<'a> {
    pub call: &'a CeCall,
    /// `rows` rows of `cols` logits, `ldx` floats apart.
    pub x: *const f32,
    /// `rows` rows of `cols` gradient floats, `ldg` apart (equal to `x` with `ldg == ldx` in
    /// place), or null for the loss alone.
    pub grad: *mut f32,
    pub rows: usize,
    /// Class targets: one entry per row, `< cols` or [`IGNORED`]; null for probability targets.
    pub classes: *const u32,
    /// Probability targets: `rows` rows of `cols` floats, `ldy` apart; null for class targets.
    pub probs: *const f32,
    /// The row strides of `x`, `grad` and `probs` (`>= cols`).
    pub ldx: usize,
    pub ldg: usize,
    pub ldy: usize,
    /// The per-row upstream gradient (`rows` floats) or null.
    pub row_scale: *const f32,
    /// Optional per-row outputs (null or `rows` entries).
    pub row_loss: *mut f32,
    pub lse: *mut f32,
    pub argmax: *mut u32,
}

impl<'a> CeRows<'a> {
    /// Rows `r0 .. r0 + n` of this run, their classes at `classes` and probability targets at
    /// `probs` (either may be null). Pointer arithmetic only (wrapping): what the result may
    /// touch is the caller's contract, as for any `CeRows`.
    #[inline(always)]
    pub(crate) fn run(
        &self,
        r0: usize,
        n: usize,
        classes: *const u32,
        probs: *const f32,
    ) -> CeRows<'a> {
        fn at<T>(p: *mut T, k: usize) -> *mut T {
            if p.is_null() {
                p
            } else {
                p.wrapping_add(k)
            }
        }
        CeRows {
            call: self.call,
            x: self.x.wrapping_add(r0 * self.ldx),
            grad: at(self.grad, r0 * self.ldg),
            rows: n,
            classes,
            probs,
            ldx: self.ldx,
            ldg: self.ldg,
            ldy: self.ldy,
            row_scale: at(self.row_scale.cast_mut(), r0),
            row_loss: at(self.row_loss, r0),
            lse: at(self.lse, r0),
            argmax: at(self.argmax, r0),
        }
    }

    /// Row `r` of the logits (an address only: reading it is the caller's contract).
    #[inline(always)]
    pub(crate) fn x_row(&self, r: usize) -> *const f32 {
        self.x.wrapping_add(r * self.ldx)
    }

    /// Row `r` of the gradient, or null for none (an address only).
    #[inline(always)]
    pub(crate) fn grad_row(&self, r: usize) -> *mut f32 {
        if self.grad.is_null() {
            self.grad
        } else {
            self.grad.wrapping_add(r * self.ldg)
        }
    }

    /// Row `r` of the probability targets (an address only).
    #[inline(always)]
    pub(crate) fn probs_row(&self, r: usize) -> *const f32 {
        self.probs.wrapping_add(r * self.ldy)
    }

    /// Whether the logits and gradient rows are dense (`ld == cols`), as the `Dense` path
    /// needs.
    #[inline(always)]
    pub(crate) fn dense(&self) -> bool {
        self.ldx == self.call.cols && (self.grad.is_null() || self.ldg == self.call.cols)
    }

    /// The gradient scale of row `r`.
    ///
    /// # Safety
    /// `r < rows`.
    #[inline(always)]
    pub(crate) unsafe fn row_g(&self, r: usize) -> f64 {
        if self.row_scale.is_null() {
            self.call.base_g
        } else {
            // SAFETY: `row_scale` holds `rows` floats and `r < rows`.
            self.call.base_g * unsafe { *self.row_scale.add(r) } as f64
        }
    }

    /// Writes the optional per-row outputs of row `r` (each only where asked for).
    ///
    /// # Safety
    /// `r < rows`.
    #[inline(always)]
    pub(crate) unsafe fn put(&self, r: usize, loss: f64, lse: f64, argmax: u32) {
        // SAFETY: the output pointers are null or valid for `rows` entries, `r < rows`.
        unsafe {
            if !self.row_loss.is_null() {
                *self.row_loss.add(r) = loss as f32;
            }
            if !self.lse.is_null() {
                *self.lse.add(r) = lse as f32;
            }
            if !self.argmax.is_null() {
                *self.argmax.add(r) = argmax;
            }
        }
    }
}

/// A path's entry: adds the losses of the rows to `acc.0` in row order and their argmax hits
/// to `acc.1`, writes the gradient rows and the per-row outputs asked for.
///
/// # Safety
/// The tier's CPU features (the table proves them). `x` valid for `rows * cols` reads; `grad`
/// null or valid for `rows * cols` writes, equal to `x` or not overlapping it; `classes` (class
/// paths) valid for `rows` reads, each `< cols` or [`IGNORED`]; `probs` (`CePath::Probs`)
/// valid for `rows * cols` reads and not overlapping `grad`; `weights` null or `cols` floats;
/// `row_scale` and the outputs null or `rows` entries.
pub(crate) type CePathFn = unsafe fn(&CeRows<'_>, &mut CeAcc);

/// The one-row kernels the row loops ([`row::rows_path`], [`probs::probs_path`]) call: every
/// SIMD tier's through its [`Simd`] type, and the scalar reference's, so that the reference
/// runs the same loops with its f64 rows.
pub(crate) trait RowKernels: Copy {
    /// One row with a class target ([`row::ce_row`]).
    ///
    /// # Safety
    /// The contract of [`row::ce_row`] (and the implementor's CPU features).
    unsafe fn class_row(self, x: *const f32, grad: *mut f32, n: usize, a: &CeArgs) -> CeRowOut;
    /// One row against a probability row ([`probs::ce_prob_row`]).
    ///
    /// # Safety
    /// The contract of [`probs::ce_prob_row`] (and the implementor's CPU features).
    unsafe fn prob_row(
        self,
        x: *const f32,
        y: *const f32,
        grad: *mut f32,
        n: usize,
        a: &CeProbArgs,
    ) -> CeRowOut;
    /// `y[..n] *= f`: the last pass that [`CeArgs::defer`] leaves to the loop.
    ///
    /// # Safety
    /// `y .. y + n` valid for reads and writes (and the implementor's CPU features).
    unsafe fn scale(self, y: *mut f32, n: usize, f: f32);
}

impl<S: Simd> RowKernels for S {
    #[inline(always)]
    unsafe fn class_row(self, x: *const f32, grad: *mut f32, n: usize, a: &CeArgs) -> CeRowOut {
        // SAFETY: forwarded.
        unsafe {
            if a.cap != 0.0 {
                row::ce_row::<S, true>(self, x, grad, n, a)
            } else {
                row::ce_row::<S, false>(self, x, grad, n, a)
            }
        }
    }

    #[inline(always)]
    unsafe fn prob_row(
        self,
        x: *const f32,
        y: *const f32,
        grad: *mut f32,
        n: usize,
        a: &CeProbArgs,
    ) -> CeRowOut {
        // SAFETY: forwarded.
        unsafe {
            if a.cap != 0.0 {
                probs::ce_prob_row::<S, true>(self, x, y, grad, n, a)
            } else {
                probs::ce_prob_row::<S, false>(self, x, y, grad, n, a)
            }
        }
    }

    #[inline(always)]
    unsafe fn scale(self, y: *mut f32, n: usize, f: f32) {
        // SAFETY: forwarded.
        unsafe { crate::arch::generic::rows::scale(self, y, n, f) }
    }
}

/// One row of a column block, for the callers that split the vocabulary (the fused layer):
/// (x, grad or null, n, args) -> the row's results. See [`row::ce_row`].
pub(crate) type CeRowFn = unsafe fn(*const f32, *mut f32, usize, &CeArgs) -> CeRowOut;

/// One tier's table of cross-entropy kernels: one entry per path, all of one signature, and
/// the one-row primitive of the vocabulary-blocked callers.
pub(crate) struct CeKernels {
    /// The most classes the short paths take (their rows stay in registers).
    pub(crate) short_cols: usize,
    /// The most classes `CePath::Dense` takes (one vector).
    pub(crate) dense_cols: usize,
    pub(crate) one_row: CePathFn,
    pub(crate) dense: CePathFn,
    pub(crate) short_plain: CePathFn,
    pub(crate) short: CePathFn,
    pub(crate) rows: CePathFn,
    pub(crate) probs: CePathFn,
    /// One row of a column block.
    pub(crate) row: CeRowFn,
}

impl CeKernels {
    /// The entry of path `p`.
    pub(crate) fn entry(&self, p: CePath) -> CePathFn {
        match p {
            CePath::OneRow => self.one_row,
            CePath::Dense => self.dense,
            CePath::ShortPlain => self.short_plain,
            CePath::Short => self.short,
            CePath::Rows => self.rows,
            CePath::Probs => self.probs,
        }
    }
}

/// Per-row arguments of the class-target kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CeArgs {
    /// The target class, `< cols`.
    pub t: usize,
    /// `(1 - eps) w_t + (eps / C) sum_c w_c`: the coefficient of `p` in the gradient, before
    /// the z-loss term and the scale.
    pub a0: f32,
    /// `2 * z_loss`.
    pub zl2: f32,
    /// The row's gradient scale `g` (reduction, upstream scalar, per-row upstream).
    pub g: f32,
    /// `g * eps / C`: subtracted from every gradient element (times `w_c` with class weights).
    pub smooth: f32,
    /// `g * (1 - eps) * w_t`: subtracted at `t`.
    pub fix_t: f32,
    /// The class weights (`cols` floats) or null.
    pub weights: *const f32,
    /// The soft-cap, or 0 for none.
    pub cap: f32,
    /// Whether to compute `sum_c w_c z_c` (label smoothing).
    pub dot: bool,
    /// Whether to compute the argmax.
    pub argmax: bool,
    /// The next row's logits (`n` floats, not overlapping `grad`) or null: without a cap or
    /// an argmax, the last sweep also computes their maximum (bit for bit what pass 1 would)
    /// into [`CeRowOut::next_max`].
    pub next: *const f32,
    /// This row's maximum from the previous row's last sweep, if it computed it (pass 1 is
    /// then skipped; without a cap or an argmax only).
    pub known_max: Option<f32>,
    /// Without cap and smoothing, leave the last pass to the caller: the gradient row is left
    /// holding `exp(z - m)`, [`CeRowOut::deferred`] holds the factor, and the caller scales
    /// the row by it and subtracts `fix_t` at `t` (as [`row::rows_path`] does), after the next
    /// row's call, so that this row's division overlaps that work. The next row's maximum then
    /// comes from the exp pass.
    pub defer: bool,
    /// A vocabulary shard's forward: leave the gradient row holding pass 2's values
    /// (`exp(z - m)`, or with a cap the capped logits) for any options, and return before
    /// pass 3 (whose factor needs the whole vocabulary).
    pub keep: bool,
    /// A vocabulary shard's backward: the gradient row holds what a [`CeArgs::keep`] call
    /// left for these logits, whose maximum and `sum exp(z - m)` were these: run pass 3
    /// alone (the factor from `g`, `a0`, `zl2` and this `(m, total)`).
    pub kept: Option<(f64, f64)>,
}

/// Per-row arguments of the probability-target kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CeProbArgs {
    /// Label smoothing `eps`: targets become `(1 - eps) y + eps / C`.
    pub eps: f32,
    /// `2 * z_loss`.
    pub zl2: f32,
    /// The row's gradient scale.
    pub g: f32,
    /// The class weights (`cols` floats) or null.
    pub weights: *const f32,
    /// The soft-cap, or 0 for none.
    pub cap: f32,
    /// Whether to compute the argmax.
    pub argmax: bool,
}

/// What a row kernel reports.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CeRowOut {
    /// The row maximum (of the capped logits). Not finite: the row holds NaN, `+inf` or is all
    /// `-inf`, and nothing else in here is meaningful (the gradient was filled with NaN).
    pub m: f64,
    /// `ln sum exp(z - m)` (so `lse = m + ls`).
    pub ls: f64,
    /// Class targets: the (capped) target logit `z_t`. Probability targets: `sum w y'`.
    pub zt: f64,
    /// Class targets: `sum_c w_c (z_c - m)` (when asked). Probability targets:
    /// `sum w y' (z - m)`. Relative to `m`, so that huge logits keep the loss's small terms.
    pub dot: f64,
    /// The first index of the maximum (when asked).
    pub argmax: u32,
    /// The next row's maximum ([`CeArgs::next`]), when the last sweep computed it.
    pub next_max: Option<f32>,
    /// The factor of the deferred last pass ([`CeArgs::defer`]), when it was deferred.
    pub deferred: Option<f32>,
}

impl CeRowOut {
    /// The row's logsumexp (NaN for a non-finite maximum, as the loss).
    #[inline(always)]
    pub(crate) fn lse(&self) -> f64 {
        if self.m.is_finite() {
            self.m + self.ls
        } else {
            f64::NAN
        }
    }
}

/// Loads `LANES` logits (capped when `CAP`).
///
/// # Safety
/// `p .. p + LANES` valid for reads.
#[inline(always)]
pub(crate) unsafe fn load_z<S: Simd, const CAP: bool>(
    s: S,
    p: *const f32,
    cap: S::V,
    icap: S::V,
) -> S::V {
    // SAFETY: forwarded.
    let v = unsafe { s.load(p) };
    if CAP {
        softcap(s, v, cap, icap)
    } else {
        v
    }
}

/// Loads the `n < LANES` logits at `p` (capped when `CAP`), `fill` in the other lanes.
///
/// # Safety
/// `p .. p + n` valid for reads.
#[inline(always)]
pub(crate) unsafe fn load_z_part<S: Simd, const CAP: bool>(
    s: S,
    p: *const f32,
    n: usize,
    fill: f32,
    cap: S::V,
    icap: S::V,
) -> S::V {
    if !CAP {
        // SAFETY: forwarded.
        return unsafe { s.load_partial(p, n, fill) };
    }
    // SAFETY: forwarded.
    let v = softcap(s, unsafe { s.load_partial(p, n, 0.0) }, cap, icap);
    // Lanes past `n` take `fill` after the cap (the cap would turn -inf into -cap).
    // SAFETY: a stack buffer of at least LANES floats, read and written in full.
    unsafe {
        let mut buf = [fill; 64];
        s.store_partial(buf.as_mut_ptr(), n, v);
        s.load(buf.as_ptr())
    }
}

/// The factor every gradient path multiplies `exp(z - m)` by: `g (head + 2 zl lse) / s`,
/// with `g` the row's scale, `head` the target's share (`(1 - eps) w_t + (eps / C) sum w`
/// for class targets, `sum w y'` for probabilities), `zl2 = 2 zl` and `s = sum exp(z - m)`,
/// in f64 and rounded once. (The plain short rows divide `g32 / s` in f32: the same
/// rounding for `head = 1`, `zl = 0`, since a quotient of two f32 values rounded from f64 is
/// the f32 quotient.)
#[inline(always)]
pub(crate) fn grad_factor(g: f64, head: f64, zl2: f32, lse: f64, total: f64) -> f32 {
    (g * (head + zl2 as f64 * lse) / total) as f32
}

/// Stamps the cross-entropy kernels out for one tier (called by `stamp_tier!`) and defines its
/// `CE` table.
macro_rules! stamp_ce {
    ([$(#[$attr:meta])*], $token:ty) => {
        $crate::arch::generic::ce::stamp_ce!(@path [$(#[$attr])*], $token, ce_one_row, short::one_row_path);
        $crate::arch::generic::ce::stamp_ce!(@path [$(#[$attr])*], $token, ce_dense, short::dense_path);
        $crate::arch::generic::ce::stamp_ce!(@path [$(#[$attr])*], $token, ce_short_plain, short::short_plain_path);
        $crate::arch::generic::ce::stamp_ce!(@path [$(#[$attr])*], $token, ce_short, short::short_path);
        $crate::arch::generic::ce::stamp_ce!(@path [$(#[$attr])*], $token, ce_rows, row::rows_path);
        $crate::arch::generic::ce::stamp_ce!(@path [$(#[$attr])*], $token, ce_probs, probs::probs_path);

        /// # Safety
        /// The tier's CPU features; pointer contract of `generic::ce::row::ce_row`.
        $(#[$attr])*
        unsafe fn ce_row(
            x: *const f32,
            grad: *mut f32,
            n: usize,
            a: &$crate::arch::generic::ce::CeArgs,
        ) -> $crate::arch::generic::ce::CeRowOut {
            // SAFETY: this function's contract includes the tier's CPU features, which is what
            // `new_unchecked` needs; the pointer contract is forwarded unchanged.
            unsafe {
                $crate::arch::generic::ce::RowKernels::class_row(<$token>::new_unchecked(), x, grad, n, a)
            }
        }

        /// This tier's cross-entropy kernels.
        pub(crate) static CE: $crate::arch::generic::ce::CeKernels =
            $crate::arch::generic::ce::CeKernels {
                short_cols: $crate::arch::generic::rows::SHORT_VECS * <$token as $crate::arch::vector::Simd>::LANES,
                dense_cols: <$token as $crate::arch::vector::Simd>::LANES,
                one_row: ce_one_row,
                dense: ce_dense,
                short_plain: ce_short_plain,
                short: ce_short,
                rows: ce_rows,
                probs: ce_probs,
                row: ce_row,
            };
    };
    (@path [$(#[$attr:meta])*], $token:ty, $name:ident, $module:ident :: $f:ident) => {
        /// # Safety
        /// The tier's CPU features; the pointer contract of `generic::ce::CePathFn`.
        $(#[$attr])*
        unsafe fn $name(
            b: &$crate::arch::generic::ce::CeRows<'_>,
            acc: &mut $crate::arch::generic::ce::CeAcc,
        ) {
            // SAFETY: this function's contract includes the tier's CPU features, which is what
            // `new_unchecked` needs; the pointer contract is forwarded unchanged.
            unsafe { $crate::arch::generic::ce::$module::$f(<$token>::new_unchecked(), b, acc) }
        }
    };
}
pub(crate) use stamp_ce;
