//! Vocabulary-sharded token log-probs: each process holds the logits (or the output-layer
//! rows) of a range of classes, computes a per-row [`RowState`] for its range, the states are
//! combined by a collective (an all-gather of the states and a local [`merge_states`], or a
//! user-defined reduction that calls [`RowState::merge`]), every process finalizes the same
//! per-row `lse`, `logp` and entropy ([`finalize_states`]), and runs its range's backward
//! ([`Kernels::token_shard_backward`]) from them. This is Megatron's vocabulary-parallel
//! cross-entropy (its max all-reduce and sum all-reduce become one exchange of states); the
//! crate computes and merges, an existing communication engine moves the bytes.
//!
//! A state holds, in units of `z' = z / T` (`z` the soft-capped logits, `T` the temperature):
//!
//! | field | meaning | merge |
//! |---|---|---|
//! | `max` | `max z'` over the range (`-inf`: an empty range or all `-inf`; NaN: a `+inf` logit, or NaN with no finite logit) | max |
//! | `sum` | `sum exp(z' - max)` (NaN when the range holds a NaN) | rescaled to the common max, added |
//! | `dot` | `sum (z' - max) exp(z' - max)` (the entropy's) | rescaled and shifted, added |
//! | `target` | the token's `z'` when the range holds it, else 0 | added |
//! | `has_target` | 1 when the range holds the token, else 0 | added |
//! | `wdot` | cross-entropy with label smoothing: `sum w_c (z_c - max)` (else 0) | rescaled and shifted, added |
//! | `wsum` | cross-entropy: `sum w_c` over the range (`w_c = 1` without class weights; token states: 0) | added |
//! | `target_weight` | cross-entropy: `w_t` when the range holds the target, else 0 | added |
//!
//! It is `#[repr(C)]`, eight `f64` ([`RowState::LEN`]): a `[rows]` array of states is
//! `8 * rows` doubles for `MPI_Allgather` or `torch.distributed.all_gather`
//! ([`RowState::as_f64s`] and [`RowState::as_f64s_mut`] view it so, without a copy).
//!
//! The same states carry **vocabulary-sharded cross-entropy** (the [`ce`] functions:
//! [`Kernels::cross_entropy_shard_states`], [`finalize_ce_states`],
//! [`Kernels::cross_entropy_shard_backward`]) with every option that shards: class weights
//! (each shard passes its classes' weights), `ignore_index`, label smoothing with PyTorch's
//! formula over the whole vocabulary, z-loss, soft-cap, the reductions, `scale` and
//! `row_scale`. [`RowState::merge`] is commutative
//! exactly, and associative up to the f64 rounding of the rescaling (the result of a merge
//! tree depends on its shape by a few f64 ULP, far below the f32 outputs' rounding); with a
//! fixed split and a fixed order the bits are fixed, for any thread count. NaN and `-inf`
//! follow the unsharded kernels: a NaN or `+inf` logit in any range makes the row NaN, a range
//! of `-inf` contributes nothing, and a row that is `-inf` in every range is NaN.
//!
//! Collectives per step: one all-gather (or custom all-reduce) of the states in the forward;
//! in the backward none for `dlogits` (each range's own), and for the fused output layer
//! ([`Kernels::linear_token_shard_states`], [`Kernels::linear_token_shard_backward`]: a shard
//! of `W`'s rows, no logits held) a sum (all-reduce) of the partial `dA` over ranges.
//!
//! ```
//! use softmax_kernels::{finalize_states, merge_states, Kernels, RowState, Shard,
//!                       TokenLogprobOptions, TokenLogprobOutputs};
//! let k = Kernels::best();
//! let opts = TokenLogprobOptions::default();
//! // One row of 5 classes, split into classes 0..2 and 2..5.
//! let z = [1.0f32, 2.0, 3.0, 4.0, 5.0];
//! let tokens = [3i64];
//! let (mut a, mut b) = ([RowState::EMPTY], [RowState::EMPTY]);
//! let (mut ka, mut kb) = ([0.0f32; 2], [0.0f32; 3]);
//! k.token_shard_states(&z[..2], 2, Shard::new(0, 5), &tokens, &opts, &mut a, &mut ka)?;
//! k.token_shard_states(&z[2..], 3, Shard::new(2, 5), &tokens, &opts, &mut b, &mut kb)?;
//! merge_states(&mut a, &b)?;
//! let mut lp = [0.0f32];
//! finalize_states(&a, &tokens, 5, &opts, TokenLogprobOutputs::new(&mut lp))?;
//! let mut whole = [0.0f32];
//! k.token_logprobs(&z, &tokens, 5, &opts, TokenLogprobOutputs::new(&mut whole))?;
//! assert!((lp[0] - whole[0]).abs() < 1e-6);
//! # Ok::<(), softmax_kernels::Error>(())
//! ```

pub mod ce;
pub use ce::finalize_ce_states;

use crate::arch::generic::token::{TokPath, TokRowOut};
use crate::cross_entropy::{class_of, Label, MAX_CLASSES};
use crate::dispatch::Kernels;
use crate::error::{check_len, Error, Result};
use crate::token::{
    ShardArgs, TokLogits, TokenGrads, TokenLogprobOptions, TokenLogprobOutputs, TokenSaved,
};

/// A row's partial reduction over a range of classes (see the [module docs](crate::shard)).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowState {
    /// `max z'` over the range.
    pub max: f64,
    /// `sum exp(z' - max)`.
    pub sum: f64,
    /// `sum (z' - max) exp(z' - max)`.
    pub dot: f64,
    /// The token's `z'` (0 when the range does not hold it).
    pub target: f64,
    /// 1 when the range holds the token, else 0 (merged states: the count of ranges that
    /// did).
    pub has_target: f64,
    /// Cross-entropy with label smoothing: `sum w_c (z_c - max)` over the range (else 0).
    pub wdot: f64,
    /// Cross-entropy: `sum w_c` over the range (`w_c = 1` without class weights; 0 in token
    /// states).
    pub wsum: f64,
    /// Cross-entropy: the target's weight `w_t` when the range holds it, else 0.
    pub target_weight: f64,
}

const _: () = assert!(
    std::mem::size_of::<RowState>() == 8 * RowState::LEN
        && std::mem::align_of::<RowState>() == std::mem::align_of::<f64>()
);

impl Default for RowState {
    fn default() -> Self {
        RowState::EMPTY
    }
}

impl RowState {
    /// The state of an empty range: the identity of [`RowState::merge`].
    pub const EMPTY: RowState = RowState {
        max: f64::NEG_INFINITY,
        sum: 0.0,
        dot: 0.0,
        target: 0.0,
        has_target: 0.0,
        wdot: 0.0,
        wsum: 0.0,
        target_weight: 0.0,
    };

    /// The `f64` fields of a state, in order: a `[rows]` array of states is `LEN * rows`
    /// doubles.
    pub const LEN: usize = 8;

    /// The states as `LEN * states.len()` doubles (field by field, row by row), for a
    /// collective that moves `f64` buffers (`MPI_DOUBLE`, a float64 tensor).
    ///
    /// ```
    /// use softmax_kernels::RowState;
    /// let s = [RowState::EMPTY; 3];
    /// assert_eq!(RowState::as_f64s(&s).len(), 3 * RowState::LEN);
    /// assert_eq!(RowState::as_f64s(&s)[0], f64::NEG_INFINITY); // the first row's `max`
    /// ```
    pub fn as_f64s(states: &[RowState]) -> &[f64] {
        // SAFETY: `RowState` is `#[repr(C)]` of `LEN` f64 fields: size `8 * LEN`, alignment
        // that of f64, no padding (checked below at compile time), every bit pattern valid as
        // both types; the view borrows `states` for its lifetime.
        unsafe { std::slice::from_raw_parts(states.as_ptr().cast(), states.len() * Self::LEN) }
    }

    /// As [`RowState::as_f64s`], writable: the receive buffer of a gather.
    pub fn as_f64s_mut(states: &mut [RowState]) -> &mut [f64] {
        // SAFETY: as in `as_f64s`; the view borrows `states` mutably for its lifetime.
        unsafe {
            std::slice::from_raw_parts_mut(states.as_mut_ptr().cast(), states.len() * Self::LEN)
        }
    }

    /// The state of one row from the forward kernel's results.
    pub(crate) fn of_row(out: &TokRowOut, inv_t: f32, has_target: bool) -> RowState {
        let it = inv_t as f64;
        let target = if has_target { out.zt * it } else { 0.0 };
        let has_target = if has_target { 1.0 } else { 0.0 };
        if out.m == f64::NEG_INFINITY {
            return RowState {
                target,
                has_target,
                ..RowState::EMPTY
            };
        }
        if !out.m.is_finite() {
            return RowState {
                max: f64::NAN,
                sum: f64::NAN,
                dot: f64::NAN,
                target,
                has_target,
                ..RowState::EMPTY
            };
        }
        // `m` and `1 / T` are f32: their product is exact in f64 (the backward divides it
        // back to the same `m`).
        RowState {
            max: out.m * it,
            sum: out.total,
            dot: out.dot,
            target,
            has_target,
            ..RowState::EMPTY
        }
    }

    /// The state of the union of two disjoint ranges. Commutative (bit for bit); associative
    /// up to f64 rounding.
    ///
    /// ```
    /// use softmax_kernels::RowState;
    /// // exp(0) + exp(ln 3) = 4 at max 0 ...
    /// let a = RowState { max: 0.0, sum: 1.0, ..RowState::EMPTY };
    /// let b = RowState { max: 3f64.ln(), sum: 1.0, ..RowState::EMPTY };
    /// let m = a.merge(b);
    /// assert_eq!(m, b.merge(a));
    /// assert!((m.max + m.sum.ln() - 4f64.ln()).abs() < 1e-15);
    /// ```
    pub fn merge(self, other: RowState) -> RowState {
        // The fields that add whatever the maxima.
        let added = RowState {
            target: self.target + other.target,
            has_target: self.has_target + other.has_target,
            wsum: self.wsum + other.wsum,
            target_weight: self.target_weight + other.target_weight,
            ..RowState::EMPTY
        };
        if self.max.is_nan() || other.max.is_nan() {
            return RowState {
                max: f64::NAN,
                sum: f64::NAN,
                dot: f64::NAN,
                wdot: f64::NAN,
                ..added
            };
        }
        let m = self.max.max(other.max);
        // One side rescaled to the common max: sum e^(z - m) = f sum e^(z - max) with
        // f = e^(max - m), sum (z - m) e^(z - m) = f (dot + (max - m) sum), and
        // sum w (z - m) = wdot + (max - m) wsum. A side with no finite logit adds nothing to
        // the sums, and its `wdot` (`-inf`, NaN, or 0 for no classes) as it is.
        let part = |s: RowState| {
            if s.max == f64::NEG_INFINITY {
                (0.0, 0.0, s.wdot)
            } else {
                let f = (s.max - m).exp();
                (
                    f * s.sum,
                    f * (s.dot + (s.max - m) * s.sum),
                    s.wdot + (s.max - m) * s.wsum,
                )
            }
        };
        let (sa, da, wa) = part(self);
        let (sb, db, wb) = part(other);
        if m == f64::NEG_INFINITY {
            return RowState {
                wdot: wa + wb,
                ..added
            };
        }
        RowState {
            max: m,
            sum: sa + sb,
            dot: da + db,
            wdot: wa + wb,
            ..added
        }
    }

    /// `ln sum exp(z')` over the merged range (NaN for a NaN state or a range of no finite
    /// logit).
    pub fn lse(&self) -> f64 {
        if self.max.is_finite() {
            self.max + self.sum.ln()
        } else {
            f64::NAN
        }
    }

    /// `log p(token) = target - lse`.
    pub fn logp(&self) -> f64 {
        self.target - self.lse()
    }

    /// The entropy `ln sum - dot / sum`.
    pub fn entropy(&self) -> f64 {
        if self.max.is_finite() {
            self.sum.ln() - self.dot / self.sum
        } else {
            f64::NAN
        }
    }
}

/// A vocabulary shard: its first class `offset` within the `classes` of the whole vocabulary
/// (the shard's class count is its logits' `cols`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Shard {
    /// The global index of the shard's first class.
    pub offset: usize,
    /// The class count of the whole vocabulary.
    pub classes: usize,
}

impl Shard {
    /// Classes `offset ..` of a vocabulary of `classes`.
    pub fn new(offset: usize, classes: usize) -> Shard {
        Shard { offset, classes }
    }

    /// Checks that classes `offset .. offset + cols` lie in the vocabulary.
    pub(crate) fn check(&self, cols: usize) -> Result<()> {
        if self.classes > MAX_CLASSES {
            return Err(Error::TooManyClasses {
                classes: self.classes,
                max: MAX_CLASSES,
            });
        }
        if self
            .offset
            .checked_add(cols)
            .is_none_or(|e| e > self.classes)
        {
            return Err(Error::InvalidOption {
                name: "shard",
                value: format!("offset {} + cols {cols}", self.offset),
                expected: "a range of classes inside 0..classes",
            });
        }
        Ok(())
    }
}

/// Validates `tokens` against `classes` (as the kernels do) for the calls that read no logits.
fn check_tokens<L: Label>(tokens: &[L], classes: usize, ignore: Option<i64>) -> Result<()> {
    for (r, &l) in tokens.iter().enumerate() {
        if let Err(label) = class_of(l, classes, ignore) {
            return Err(Error::BadLabel {
                row: r,
                label,
                classes,
            });
        }
    }
    Ok(())
}

/// Merges `other` into `acc`, row by row ([`RowState::merge`]).
///
/// # Errors
/// [`Error::LengthMismatch`] when the lengths differ.
pub fn merge_states(acc: &mut [RowState], other: &[RowState]) -> Result<()> {
    check_len("other", other.len(), acc.len())?;
    for (a, &b) in acc.iter_mut().zip(other) {
        *a = a.merge(b);
    }
    Ok(())
}

/// The per-row outputs of the whole vocabulary from states merged over every shard: `logp`,
/// and when given the entropy and `lse` (what [`Kernels::token_shard_backward`] takes as
/// [`TokenSaved`]). Rows whose token is `ignore_index` get `logp = 0`, entropy 0 and a NaN
/// `lse` (a shard computes no state for them: [`RowState::EMPTY`]).
///
/// # Errors
/// [`Error::TooManyClasses`]; the option errors of [`Kernels::token_logprobs`] (the same
/// options as every shard's calls); [`Error::LengthMismatch`] for `states`, `tokens` or an
/// output; [`Error::BadLabel`] for a token outside `0..classes` that is not the
/// `ignore_index`; [`Error::InvalidOption`]
/// (`states`) when a row's merged state does not hold its token exactly once (a shard is
/// missing, or was merged twice). Nothing is written on an error.
pub fn finalize_states<L: Label>(
    states: &[RowState],
    tokens: &[L],
    classes: usize,
    opts: &TokenLogprobOptions,
    out: TokenLogprobOutputs<'_>,
) -> Result<()> {
    let rows = states.len();
    Shard::new(0, classes).check(0)?;
    opts.validate_pub()?;
    check_len("tokens", tokens.len(), rows)?;
    check_len("logp", out.logp.len(), rows)?;
    if let Some(h) = &out.entropy {
        check_len("entropy", h.len(), rows)?;
    }
    if let Some(l) = &out.lse {
        check_len("lse", l.len(), rows)?;
    }
    check_tokens(tokens, classes, opts.ignore_index)?;
    let ignored = |r: usize| {
        opts.ignore_index
            .is_some_and(|i| i as i128 == tokens[r].to_i128())
    };
    for (r, st) in states.iter().enumerate() {
        if !ignored(r) && st.has_target != 1.0 {
            return Err(Error::InvalidOption {
                name: "states",
                value: format!("row {r} holds its token {} times", st.has_target),
                expected: "states merged over every shard exactly once",
            });
        }
    }
    if out.top_k.is_some() {
        return Err(Error::InvalidOption {
            name: "top_k",
            value: "given".into(),
            expected: "none: the states of vocabulary shards carry no top-k",
        });
    }
    let TokenLogprobOutputs {
        logp,
        mut entropy,
        mut lse,
        ..
    } = out;
    for (r, st) in states.iter().enumerate() {
        let ign = ignored(r);
        logp[r] = if ign { 0.0 } else { st.logp() as f32 };
        if let Some(h) = entropy.as_deref_mut() {
            h[r] = if ign { 0.0 } else { st.entropy() as f32 };
        }
        if let Some(l) = lse.as_deref_mut() {
            l[r] = st.lse() as f32;
        }
    }
    Ok(())
}

impl Kernels {
    /// The states of a vocabulary shard: `logits` holds `rows` rows of this shard's `cols`
    /// classes (global classes `shard.offset ..`), `tokens` the global tokens. `keep` (the
    /// shard's gradient buffer, the length of `logits`) receives what
    /// [`Kernels::token_shard_backward`] needs, so that the backward is one pass without an
    /// exp: pass it there unchanged, as its `dlogits`. Two sweeps over the logits, one exp per
    /// element (plus one FMA for the entropy's `dot`).
    ///
    /// A shard of no classes (`cols == 0`, empty `logits`) is fine: its states are
    /// [`RowState::EMPTY`].
    ///
    /// # Errors
    /// As [`Kernels::token_logprobs`] (the tokens against `shard.classes`);
    /// [`Error::InvalidOption`] (`shard`) when the shard's classes leave the vocabulary;
    /// [`Error::LengthMismatch`] for `states` (one per row) and `keep`.
    #[allow(clippy::too_many_arguments)]
    pub fn token_shard_states<L: Label>(
        &self,
        logits: &[f32],
        cols: usize,
        shard: Shard,
        tokens: &[L],
        opts: &TokenLogprobOptions,
        states: &mut [RowState],
        keep: &mut [f32],
    ) -> Result<()> {
        shard.check(cols)?;
        if cols == 0 {
            check_len("logits", logits.len(), 0)?;
            check_len("keep", keep.len(), 0)?;
            check_len("states", states.len(), tokens.len())?;
            opts.validate_pub()?;
            check_tokens(tokens, shard.classes, opts.ignore_index)?;
            states.fill(RowState::EMPTY);
            return Ok(());
        }
        let sh = ShardArgs {
            offset: shard.offset,
            classes: shard.classes,
            states: states.as_mut_ptr(),
            states_len: states.len(),
        };
        self.token_call_sharded(
            TokLogits::Grad(logits, keep),
            tokens,
            cols,
            opts,
            TokPath::Forward,
            None,
            None,
            TokenGrads::default(),
            Some(sh),
        )
    }

    /// A vocabulary shard's gradient `dlogits` (this shard's classes) of
    /// `sum_b grads.logp[b] logp[b] + grads.entropy[b] H[b]`, from the finalized `saved.lse`
    /// (and entropy) of the whole vocabulary ([`finalize_states`]) and this shard's own
    /// `states` and kept values: `dlogits` must hold what [`Kernels::token_shard_states`]
    /// wrote to its `keep` for the same logits and options. One pass, no exp (with a cap, one
    /// exp per element). The same gradient as [`Kernels::token_logprobs_backward`] restricted
    /// to the shard's classes.
    ///
    /// # Errors
    /// As [`Kernels::token_logprobs_backward`] (the tokens against `shard.classes`);
    /// [`Error::InvalidOption`] (`shard`); [`Error::LengthMismatch`] for `states`.
    #[allow(clippy::too_many_arguments)]
    pub fn token_shard_backward<L: Label>(
        &self,
        logits: &[f32],
        cols: usize,
        shard: Shard,
        tokens: &[L],
        opts: &TokenLogprobOptions,
        states: &[RowState],
        saved: TokenSaved<'_>,
        grads: TokenGrads<'_>,
        dlogits: &mut [f32],
    ) -> Result<()> {
        shard.check(cols)?;
        if cols == 0 {
            check_len("logits", logits.len(), 0)?;
            check_len("dlogits", dlogits.len(), 0)?;
            check_len("states", states.len(), tokens.len())?;
            opts.validate_pub()?;
            check_tokens(tokens, shard.classes, opts.ignore_index)?;
            return Ok(());
        }
        let sh = ShardArgs {
            offset: shard.offset,
            classes: shard.classes,
            // Read only on the backward path.
            states: states.as_ptr().cast_mut(),
            states_len: states.len(),
        };
        self.token_call_sharded(
            TokLogits::Grad(logits, dlogits),
            tokens,
            cols,
            opts,
            TokPath::ShardBackward,
            None,
            Some(saved),
            grads,
            Some(sh),
        )
    }
}
