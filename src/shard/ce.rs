//! Vocabulary-sharded cross-entropy: the loss and gradient of [`Kernels::cross_entropy_with`]
//! (class targets) when each process holds the logits of a range of classes.
//!
//! 1. [`Kernels::cross_entropy_shard_states`]: each shard's per-row [`RowState`]s (its
//!    maximum, `sum exp`, the target logit and weight when it holds the target, and with
//!    label smoothing `sum w_c (z_c - max)` and `sum w_c`), one exp per element, and into the
//!    shard's gradient buffer (`keep`) the exps its backward needs;
//! 2. one collective: an all-gather of the states (or a user-defined reduction calling
//!    [`RowState::merge`]), merged ([`crate::merge_states`]) into the same states everywhere;
//! 3. [`finalize_ce_states`]: the loss (reduced as asked), each row's loss and `lse`;
//! 4. [`Kernels::cross_entropy_shard_backward`]: each shard's gradient columns from the
//!    merged states, its own states and the kept exps, in the same buffer: one sweep, no exp
//!    (with a soft-cap, one exp per element), no collective.
//!
//! Every option of [`CrossEntropyOptions`] that shards is supported: class weights (each
//! shard passes its own classes' weights, `cols` floats), `ignore_index`, label smoothing with
//! PyTorch's formula over the whole vocabulary (`eps / C`, `C = shard.classes`), z-loss,
//! soft-cap, the reductions (`Mean` divides by the sum of the target weights, which the merged
//! states carry), `all_ignored`, `scale` and `row_scale`. The results equal the unsharded
//! call's up to the f64 rounding of the merge (the loss) and the f32 rounding of the gradient.
//! Rows whose target is the `ignore_index` get the empty state in every shard, loss 0, a NaN
//! `lse` and a zero gradient row.

use super::{check_tokens, RowState, Shard};
use crate::arch::generic::ce::{CeArgs, CeRowOut};
use crate::cross_entropy::{
    class_of, reduce_loss, CrossEntropyOptions, CrossEntropyOutputs, CrossEntropyStats, Label,
    Reduction,
};
use crate::dispatch::Kernels;
use crate::error::{check_len, rows_of, Error, Result};
use crate::linear_ce::{block_grad, Block, MergedRow};
use crate::parallel::{for_each_row_block, SyncPtr};

impl RowState {
    /// The cross-entropy state of one shard row from the class-target row kernel's results
    /// `r` on its logits `x[0..n]` (weights `wk`, null or `n` floats, summing to `wsum`);
    /// `target`: the target's weight when the shard holds it; `dot`: label smoothing.
    ///
    /// # Safety
    /// `x .. x + n` valid for reads; `wk` null or valid for `n` reads.
    unsafe fn of_ce_row(
        r: &CeRowOut,
        x: *const f32,
        n: usize,
        wk: *const f32,
        wsum: f64,
        target: Option<f64>,
        dot: bool,
    ) -> RowState {
        let base = RowState {
            target: if target.is_some() { r.zt } else { 0.0 },
            has_target: if target.is_some() { 1.0 } else { 0.0 },
            wsum,
            target_weight: target.unwrap_or(0.0),
            ..RowState::EMPTY
        };
        let nan = RowState {
            max: f64::NAN,
            sum: f64::NAN,
            dot: f64::NAN,
            wdot: f64::NAN,
            ..base
        };
        if r.m == f64::NEG_INFINITY {
            // All -inf, or -inf and NaN (the kernels' max skips NaN): a NaN makes the row NaN;
            // else the shard adds nothing to the sum, and with smoothing each `w_c (-inf - m)`
            // enters the dot (as in the whole-row kernel, where a zero weight makes it NaN).
            // SAFETY: the caller's ranges.
            unsafe {
                if (0..n).any(|j| (*x.add(j)).is_nan()) {
                    return nan;
                }
                let mut wdot = 0.0;
                if dot {
                    for j in 0..n {
                        let wj = if wk.is_null() { 1.0 } else { *wk.add(j) as f64 };
                        wdot += wj * f64::NEG_INFINITY;
                    }
                }
                return RowState { wdot, ..base };
            }
        }
        if r.m.is_nan() || r.m == f64::INFINITY || r.ls.is_nan() {
            return nan;
        }
        RowState {
            max: r.m,
            sum: r.ls.exp(),
            wdot: if dot { r.dot } else { 0.0 },
            ..base
        }
    }
}

/// Checks what the states and the backward share: the shard, the row count (from the logits,
/// or the targets for a shard of no classes), the options (weights: the shard's `cols`), the
/// targets against the whole vocabulary. Returns the row count.
fn check_shard_call<L: Label>(
    logits: usize,
    cols: usize,
    shard: Shard,
    targets: &[L],
    opts: &CrossEntropyOptions<'_>,
) -> Result<usize> {
    shard.check(cols)?;
    let rows = if cols == 0 {
        check_len("logits", logits, 0)?;
        targets.len()
    } else {
        rows_of("logits", logits, cols)?
    };
    opts.validate(rows, cols)?;
    check_len("targets", targets.len(), rows)?;
    check_tokens(targets, shard.classes, opts.ignore_index)?;
    Ok(rows)
}

/// Checks that every row not ignored holds its target exactly once in the merged `states`.
fn check_merged<L: Label>(states: &[RowState], targets: &[L], ignore: Option<i64>) -> Result<()> {
    for (r, (st, &l)) in states.iter().zip(targets).enumerate() {
        let ignored = ignore.is_some_and(|i| i as i128 == l.to_i128());
        if !ignored && st.has_target != 1.0 {
            return Err(Error::InvalidOption {
                name: "states",
                value: format!("row {r} holds its token {} times", st.has_target),
                expected: "states merged over every shard exactly once",
            });
        }
    }
    Ok(())
}

/// `Mean`'s denominator (the target weights of the rows used, from merged states) and the
/// rows used.
fn denominator<L: Label>(states: &[RowState], targets: &[L], ignore: Option<i64>) -> (f64, usize) {
    let mut den = 0.0;
    let mut used = 0;
    for (st, &l) in states.iter().zip(targets) {
        if ignore.is_none_or(|i| i as i128 != l.to_i128()) {
            den += st.target_weight;
            used += 1;
        }
    }
    (den, used)
}

impl Kernels {
    /// The cross-entropy states of a vocabulary shard: `logits` holds rows of this shard's
    /// `cols` classes (global classes `shard.offset ..` of `shard.classes`), `targets` the
    /// global class of each row, `opts.weight` (if any) this shard's `cols` class weights.
    /// `keep` (the shard's gradient buffer, the length of `logits`) receives what
    /// [`Kernels::cross_entropy_shard_backward`] needs, so that the backward is one sweep
    /// without an exp: pass it there unchanged, as its `dlogits`. Merge the states of every
    /// shard ([`crate::merge_states`]) and finalize them ([`finalize_ce_states`]); see the
    /// [module docs](crate::shard::ce). Two sweeps over the logits, one exp per element. A
    /// shard of no classes gives empty states (with `wsum` 0).
    ///
    /// # Errors
    /// As [`Kernels::cross_entropy_with`] (the targets against `shard.classes`, the options,
    /// `weight` with `cols` entries); [`Error::InvalidOption`] (`shard`) when the shard's
    /// classes leave the vocabulary; [`Error::LengthMismatch`] for `states` (one per row) and
    /// `keep`. Nothing is written on an error.
    ///
    /// ```
    /// use softmax_kernels::{finalize_ce_states, merge_states, CrossEntropyOptions,
    ///                       CrossEntropyOutputs, Kernels, RowState, Shard};
    /// let k = Kernels::best();
    /// let opts = CrossEntropyOptions::default().label_smoothing(0.1);
    /// // Two rows of 5 classes, split into classes 0..2 and 2..5.
    /// let z = [1.0f32, 2.0, 3.0, 4.0, 5.0, /* row 2 */ 0.5, 0.0, -1.0, 2.0, 1.0];
    /// let targets = [3i64, 0];
    /// let left: Vec<f32> = z.chunks(5).flat_map(|r| r[..2].to_vec()).collect();
    /// let right: Vec<f32> = z.chunks(5).flat_map(|r| r[2..].to_vec()).collect();
    /// let (mut a, mut b) = ([RowState::EMPTY; 2], [RowState::EMPTY; 2]);
    /// let (mut ka, mut kb) = ([0.0f32; 4], [0.0f32; 6]);
    /// k.cross_entropy_shard_states(&left, 2, Shard::new(0, 5), &targets, &opts, &mut a,
    ///                              &mut ka)?;
    /// k.cross_entropy_shard_states(&right, 3, Shard::new(2, 5), &targets, &opts, &mut b,
    ///                              &mut kb)?;
    /// merge_states(&mut a, &b)?;
    /// let sharded = finalize_ce_states(&a, &targets, 5, &opts, CrossEntropyOutputs::default())?;
    /// let whole = k.cross_entropy_with(softmax_kernels::Logits::Read(&z),
    ///     softmax_kernels::Targets::Classes(&targets), 5, &opts,
    ///     &mut CrossEntropyOutputs::default())?;
    /// assert!((sharded.loss - whole.loss).abs() < 1e-6);
    /// # Ok::<(), softmax_kernels::Error>(())
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_shard_states<L: Label>(
        &self,
        logits: &[f32],
        cols: usize,
        shard: Shard,
        targets: &[L],
        opts: &CrossEntropyOptions<'_>,
        states: &mut [RowState],
        keep: &mut [f32],
    ) -> Result<()> {
        let rows = check_shard_call(logits.len(), cols, shard, targets, opts)?;
        check_len("states", states.len(), rows)?;
        check_len("keep", keep.len(), logits.len())?;
        let wsum = opts
            .weight
            .map_or(cols as f64, |w| w.iter().map(|&v| v as f64).sum());
        if cols == 0 {
            states.fill(RowState {
                wsum,
                ..RowState::EMPTY
            });
            return Ok(());
        }
        let eps = opts.label_smoothing;
        let cap = opts.softcap.unwrap_or(0.0);
        let (lo, hi) = (shard.offset, shard.offset + cols);
        let sp = SyncPtr(states.as_mut_ptr());
        let kp = SyncPtr(keep.as_mut_ptr());
        let x = SyncPtr(logits.as_ptr().cast_mut());
        let wk = SyncPtr(
            opts.weight
                .map_or(std::ptr::null_mut(), |w| w.as_ptr().cast_mut()),
        );
        for_each_row_block(rows, cols, move |block| {
            for r in block {
                // Validated above: `Some` classes are `< shard.classes`.
                let class = class_of(targets[r], shard.classes, opts.ignore_index)
                    .ok()
                    .flatten();
                let st = match class {
                    None => RowState::EMPTY,
                    Some(t) => {
                        let local = (lo..hi).contains(&t).then(|| t - lo);
                        let wkp = wk.get().cast_const();
                        let args = CeArgs {
                            t: local.unwrap_or(0),
                            a0: 1.0,
                            zl2: 0.0,
                            g: 0.0,
                            smooth: 0.0,
                            fix_t: 0.0,
                            weights: wkp,
                            cap,
                            dot: eps != 0.0,
                            argmax: false,
                            next: std::ptr::null(),
                            known_max: None,
                            defer: false,
                            keep: true,
                            kept: None,
                        };
                        // SAFETY: row `r < rows` of `logits` and of `keep` (`rows * cols`
                        // floats each, separate slices; rows disjoint across blocks); `args.t
                        // < cols`; the weights are null or `cols` floats (validated).
                        unsafe {
                            let xr = x.get().cast_const().add(r * cols);
                            let kr = kp.get().add(r * cols);
                            let out = (self.ce.row)(xr, kr, cols, &args);
                            let wt = local.map(|j| {
                                if wkp.is_null() {
                                    1.0
                                } else {
                                    *wkp.add(j) as f64
                                }
                            });
                            RowState::of_ce_row(&out, xr, cols, wkp, wsum, wt, eps != 0.0)
                        }
                    }
                };
                // SAFETY: `r < rows == states.len()`; the row blocks are disjoint.
                unsafe { *sp.get().add(r) = st };
            }
        });
        Ok(())
    }

    /// A vocabulary shard's cross-entropy gradient (this shard's classes) from the `merged`
    /// states of every shard, this shard's `own` states and kept values: `dlogits` must hold
    /// what [`Kernels::cross_entropy_shard_states`] wrote to its `keep` for the same
    /// `logits`, targets and options (it is read, then overwritten by the gradient). The
    /// columns of [`Kernels::cross_entropy_with`]'s gradient that belong to the shard, up to
    /// rounding. One sweep, no exp (with a soft-cap one exp per element); no collective.
    ///
    /// # Errors
    /// As [`Kernels::cross_entropy_shard_states`]; [`Error::LengthMismatch`] for `own`,
    /// `merged` and `dlogits`; [`Error::InvalidOption`] (`states`) when a row's merged state
    /// does not hold its target exactly once. Nothing is written on an error.
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_shard_backward<L: Label>(
        &self,
        logits: &[f32],
        cols: usize,
        shard: Shard,
        targets: &[L],
        opts: &CrossEntropyOptions<'_>,
        own: &[RowState],
        merged: &[RowState],
        dlogits: &mut [f32],
    ) -> Result<()> {
        let rows = check_shard_call(logits.len(), cols, shard, targets, opts)?;
        check_len("own", own.len(), rows)?;
        check_len("merged", merged.len(), rows)?;
        check_len("dlogits", dlogits.len(), logits.len())?;
        check_merged(merged, targets, opts.ignore_index)?;
        if cols == 0 {
            return Ok(());
        }
        let (den, _) = denominator(merged, targets, opts.ignore_index);
        let red_scale = match opts.reduction {
            Reduction::Mean if den == 1.0 => 1.0,
            Reduction::Mean => 1.0 / den,
            Reduction::Sum | Reduction::None => 1.0,
        };
        let (lo, hi) = (shard.offset, shard.offset + cols);
        let x = SyncPtr(logits.as_ptr().cast_mut());
        let gp = SyncPtr(dlogits.as_mut_ptr());
        let wk = SyncPtr(
            opts.weight
                .map_or(std::ptr::null_mut(), |w| w.as_ptr().cast_mut()),
        );
        for_each_row_block(rows, cols, move |block| {
            for r in block {
                let class = class_of(targets[r], shard.classes, opts.ignore_index)
                    .ok()
                    .flatten();
                let (st, mine) = (merged[r], own[r]);
                let rs = opts.row_scale.map_or(1.0, |g| g[r] as f64);
                let row = MergedRow {
                    m: st.max,
                    s: st.sum,
                    nan: st.max.is_nan(),
                    target: class
                        .map(|t| ((lo..hi).contains(&t).then(|| t - lo), st.target_weight)),
                    g: red_scale * opts.scale as f64 * rs,
                    c: shard.classes,
                    wsum: st.wsum,
                };
                // SAFETY: row `r < rows` of `logits` and `dlogits` (`rows * cols` floats each,
                // separate slices; rows disjoint across blocks), `dlogits` holding what the
                // states call kept for these logits (the caller's contract, checked by its
                // length only); the weights are null or `cols` floats; the target's class in
                // the shard is `< cols`.
                unsafe {
                    let blk = Block {
                        x: x.get().cast_const().add(r * cols),
                        grad: gp.get().add(r * cols),
                        n: cols,
                        weights: wk.get().cast_const(),
                        m: mine.max,
                        ls: mine.sum.ln(),
                        kept: Some(mine.sum),
                    };
                    block_grad(self, &blk, &row, opts);
                }
            }
        });
        Ok(())
    }
}

/// The cross-entropy of the whole vocabulary from states merged over every shard: the loss
/// (reduced as `opts.reduction` says), and when given each row's loss and `lse` (NaN for
/// ignored rows). `opts.weight` is not read (the target weights and the weight sums are in the
/// states); `argmax` is not available from states.
///
/// # Errors
/// [`Error::LengthMismatch`] for `targets` and the outputs; [`Error::BadLabel`] for a target
/// outside `0..classes` that is not the `ignore_index`; the option errors of
/// [`Kernels::cross_entropy_with`]; [`Error::MissingOutput`] (`row_loss`) for
/// `Reduction::None` without it; [`Error::InvalidOption`] (`states`) when a row's merged state
/// does not hold its target exactly once, and (`argmax`) when an argmax output is given.
/// Nothing is written on an error.
pub fn finalize_ce_states<L: Label>(
    states: &[RowState],
    targets: &[L],
    classes: usize,
    opts: &CrossEntropyOptions<'_>,
    out: CrossEntropyOutputs<'_>,
) -> Result<CrossEntropyStats> {
    let rows = states.len();
    Shard::new(0, classes).check(0)?;
    CrossEntropyOptions {
        weight: None,
        ..*opts
    }
    .validate(rows, classes)?;
    check_len("targets", targets.len(), rows)?;
    if let Some(o) = &out.row_loss {
        check_len("row_loss", o.len(), rows)?;
    }
    if let Some(o) = &out.lse {
        check_len("lse", o.len(), rows)?;
    }
    if opts.reduction == Reduction::None && out.row_loss.is_none() {
        return Err(Error::MissingOutput {
            arg: "row_loss",
            reason: "Reduction::None returns the loss of every row there",
        });
    }
    if out.argmax.is_some() {
        return Err(Error::InvalidOption {
            name: "argmax",
            value: "given".into(),
            expected: "none: the states of vocabulary shards carry no argmax",
        });
    }
    check_tokens(targets, classes, opts.ignore_index)?;
    check_merged(states, targets, opts.ignore_index)?;
    let eps = opts.label_smoothing as f64;
    let zl = opts.z_loss as f64;
    let CrossEntropyOutputs {
        mut row_loss,
        mut lse,
        ..
    } = out;
    let mut total = 0.0f64;
    for (r, st) in states.iter().enumerate() {
        let ignored = opts
            .ignore_index
            .is_some_and(|i| i as i128 == targets[r].to_i128());
        // As the whole-row kernels (`CeCall::class_loss`), every term relative to the max.
        let loss = if ignored {
            0.0
        } else if !st.max.is_finite() {
            f64::NAN
        } else {
            let ls = st.sum.ln();
            let l = st.max + ls;
            let mut loss = (1.0 - eps) * st.target_weight * ((st.max - st.target) + ls);
            if zl != 0.0 {
                loss += zl * l * l;
            }
            if eps != 0.0 {
                loss += eps / classes as f64 * (st.wsum * ls - st.wdot);
            }
            loss
        };
        total += loss;
        if let Some(o) = row_loss.as_deref_mut() {
            o[r] = loss as f32;
        }
        if let Some(o) = lse.as_deref_mut() {
            o[r] = st.lse() as f32;
        }
    }
    let (den, used) = denominator(states, targets, opts.ignore_index);
    let loss = reduce_loss(opts, total, den, used);
    Ok(CrossEntropyStats {
        loss: loss as f32,
        loss_f64: loss,
        denominator: den,
        rows_used: used,
        correct: None,
    })
}
