//! Vocabulary-sharded token log-probs (`int64_t` or `int32_t` tokens): a shard's per-row
//! states and kept values, the merge of states, the finalize into the whole vocabulary's
//! `logp` / entropy / `lse`, and a shard's backward. The states are `sk_row_state`, the C
//! mirror of the crate's `#[repr(C)]` [`RowState`] (checked field by field at compile time);
//! the options, outputs, saved values and upstream gradients are the token log-prob structs of
//! [`crate::token`].

use std::mem::{align_of, offset_of, size_of};

use sk::{
    finalize_states, merge_states, Error, Kernels, Label, RowState, Shard, TokenGrads,
    TokenLogprobOutputs, TokenSaved,
};

use crate::args::{arg, disjoint, one_arg, opt_arg, opt_one, opt_slice, slice, slice_mut, Arg};
use crate::runtime::run;
use crate::status::{guard, CError, CResult, SkStatus};
use crate::token::{
    read_options, read_struct, SkTokenGrads, SkTokenOptions, SkTokenOutputs, SkTokenSaved,
};

/// `sk_row_state`: a row's partial reduction over a range of classes, in units of
/// `z' = z / T` (see the crate's `shard` module): the C mirror of [`RowState`], eight
/// doubles. A `[rows]` array of them is `8 * rows` doubles, what a collective exchanges.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SkRowState {
    /// `max z'` over the range (`-inf`: empty or all `-inf`; NaN: a NaN or `+inf` logit).
    pub max: f64,
    /// `sum exp(z' - max)`.
    pub sum: f64,
    /// `sum (z' - max) exp(z' - max)` (the entropy's).
    pub dot: f64,
    /// The token's `z'` when the range holds it, else 0.
    pub target: f64,
    /// 1 when the range holds the token, else 0 (merged: the count of ranges that did).
    pub has_target: f64,
    /// Cross-entropy with label smoothing: `sum w_c (z_c - max)` (else 0).
    pub wdot: f64,
    /// Cross-entropy: `sum w_c` over the range (0 in token states).
    pub wsum: f64,
    /// Cross-entropy: the target's weight when the range holds it, else 0.
    pub target_weight: f64,
}

// `SkRowState` and the crate's `RowState` have one layout, so that C arrays of one are slices
// of the other: the same size and alignment, and every field at the same offset (the
// conversions below check that the field sets and types are the same).
const _: () = {
    assert!(size_of::<SkRowState>() == size_of::<RowState>());
    assert!(align_of::<SkRowState>() == align_of::<RowState>());
    assert!(size_of::<SkRowState>() == 64);
    assert!(offset_of!(SkRowState, max) == offset_of!(RowState, max));
    assert!(offset_of!(SkRowState, sum) == offset_of!(RowState, sum));
    assert!(offset_of!(SkRowState, dot) == offset_of!(RowState, dot));
    assert!(offset_of!(SkRowState, target) == offset_of!(RowState, target));
    assert!(offset_of!(SkRowState, has_target) == offset_of!(RowState, has_target));
    assert!(offset_of!(SkRowState, wdot) == offset_of!(RowState, wdot));
    assert!(offset_of!(SkRowState, wsum) == offset_of!(RowState, wsum));
    assert!(offset_of!(SkRowState, target_weight) == offset_of!(RowState, target_weight));
};

impl From<RowState> for SkRowState {
    fn from(s: RowState) -> Self {
        // An exhaustive destructuring: a field added to `RowState` fails to compile here.
        let RowState {
            max,
            sum,
            dot,
            target,
            has_target,
            wdot,
            wsum,
            target_weight,
        } = s;
        SkRowState {
            max,
            sum,
            dot,
            target,
            has_target,
            wdot,
            wsum,
            target_weight,
        }
    }
}

impl From<SkRowState> for RowState {
    fn from(s: SkRowState) -> Self {
        RowState {
            max: s.max,
            sum: s.sum,
            dot: s.dot,
            target: s.target,
            has_target: s.has_target,
            wdot: s.wdot,
            wsum: s.wsum,
            target_weight: s.target_weight,
        }
    }
}

/// A checked `sk_row_state` array as the crate's states.
///
/// # Safety
/// As [`slice()`] (`arg` accepted `(p, len)`).
pub(crate) unsafe fn states<'a>(p: *const SkRowState, len: usize) -> &'a [RowState] {
    // SAFETY: the same layout (the assertions above); the rest is the caller's contract.
    unsafe { slice(p.cast::<RowState>(), len) }
}

/// A checked `sk_row_state` array as the crate's states, to write.
///
/// # Safety
/// As [`slice_mut()`] (`arg` accepted `(p, len)`).
pub(crate) unsafe fn states_mut<'a>(p: *mut SkRowState, len: usize) -> &'a mut [RowState] {
    // SAFETY: as in `states`.
    unsafe { slice_mut(p.cast::<RowState>(), len) }
}

/// The state of an empty range (`max = -INFINITY`, the rest 0): the identity of the merge.
#[no_mangle]
pub extern "C" fn sk_row_state_empty() -> SkRowState {
    RowState::EMPTY.into()
}

/// Merges `other` into `acc`, row by row.
///
/// # Safety
/// `acc` readable and writable for `acc_len` states, `other` readable for `other_len`.
#[no_mangle]
pub unsafe extern "C" fn sk_row_states_merge(
    acc: *mut SkRowState,
    acc_len: usize,
    other: *const SkRowState,
    other_len: usize,
) -> SkStatus {
    guard("sk_row_states_merge", || {
        let aa = arg("acc", acc.cast_const(), acc_len)?;
        let oa = arg("other", other, other_len)?;
        disjoint(&[&aa], &[&oa])?;
        // SAFETY: both ranges checked, `acc` overlaps nothing; validity is the caller's
        // contract.
        let (a, o) = unsafe { (states_mut(acc, acc_len), states(other, other_len)) };
        Ok(merge_states(a, o)?)
    })
}

/// A shard's states and kept values.
///
/// # Safety
/// `logits`, `tokens` readable, `keep` and `states` writable, for their lengths; `opts` NULL
/// or a readable options struct.
#[allow(clippy::too_many_arguments)]
unsafe fn shard_states<L: Label>(
    logits: *const f32,
    logits_len: usize,
    tokens: *const L,
    tokens_len: usize,
    keep: *mut f32,
    keep_len: usize,
    cols: usize,
    class_offset: usize,
    classes: usize,
    opts: *const SkTokenOptions,
    states: *mut SkRowState,
    states_len: usize,
) -> CResult<()> {
    let la = arg("logits", logits, logits_len)?;
    let ta = arg("tokens", tokens, tokens_len)?;
    let ka = arg("keep", keep.cast_const(), keep_len)?;
    let sa = arg("states", states.cast_const(), states_len)?;
    let opta = opt_one("opts", opts)?;
    // SAFETY: the caller's contract for `opts`.
    let opts = unsafe { read_options(opts)? };
    let mut ins = vec![&la, &ta];
    ins.extend(&opta);
    disjoint(&[&ka, &sa], &ins)?;
    // SAFETY: every range checked, the outputs overlap nothing; validity is the caller's
    // contract.
    let (x, tk, keep, st) = unsafe {
        (
            slice(logits, logits_len),
            slice(tokens, tokens_len),
            slice_mut(keep, keep_len),
            states_mut(states, states_len),
        )
    };
    let shard = Shard::new(class_offset, classes);
    run(move |k: &'static Kernels| {
        k.token_shard_states(x, cols, shard, tk, &opts, st, keep)
            .map_err(|e| match e {
                // The crate names the kept values' buffer after the gradient it becomes.
                Error::LengthMismatch {
                    arg: "dlogits",
                    expected,
                    actual,
                } => Error::LengthMismatch {
                    arg: "keep",
                    expected,
                    actual,
                },
                e => e,
            })
            .map_err(CError::from)
    })
}

/// The whole vocabulary's per-row outputs from merged states.
///
/// # Safety
/// `states`, `tokens` readable for their lengths, `opts` NULL or a readable options struct,
/// `outputs` a readable struct whose arrays are writable.
unsafe fn finalize<L: Label>(
    states_p: *const SkRowState,
    states_len: usize,
    tokens: *const L,
    tokens_len: usize,
    classes: usize,
    opts: *const SkTokenOptions,
    outputs: *const SkTokenOutputs,
) -> CResult<()> {
    let sa = arg("states", states_p, states_len)?;
    let ta = arg("tokens", tokens, tokens_len)?;
    let opta = opt_one("opts", opts)?;
    // SAFETY: the caller's contract for `opts`.
    let opts = unsafe { read_options(opts)? };
    let oa = one_arg("outputs", outputs)?;
    // SAFETY: accepted by `one_arg` (non-NULL, aligned); readable by the caller's contract.
    let o = unsafe { read_struct(outputs) };
    let lpa = arg("logp", o.logp.cast_const(), o.logp_len)?;
    let ha = opt_arg("entropy", o.entropy.cast_const(), o.entropy_len)?;
    let lsa = opt_arg("lse", o.lse.cast_const(), o.lse_len)?;
    let mut outs = vec![&lpa];
    outs.extend(ha.iter().chain(&lsa));
    let mut ins = vec![&sa, &ta, &oa];
    ins.extend(&opta);
    disjoint(&outs, &ins)?;
    // SAFETY: every range checked, the outputs overlap nothing; validity is the caller's
    // contract.
    let (st, tk, out) = unsafe {
        let mut out = TokenLogprobOutputs::new(slice_mut(o.logp, o.logp_len));
        if ha.is_some() {
            out = out.entropy(slice_mut(o.entropy, o.entropy_len));
        }
        if lsa.is_some() {
            out = out.lse(slice_mut(o.lse, o.lse_len));
        }
        (states(states_p, states_len), slice(tokens, tokens_len), out)
    };
    Ok(finalize_states(st, tk, classes, &opts, out)?)
}

/// A shard's backward.
///
/// # Safety
/// `logits`, `tokens`, `states` readable and `dlogits` readable and writable, for their
/// lengths; `opts` NULL or a readable options struct; `saved` a readable struct and `grads`
/// NULL or a readable struct, their arrays readable.
#[allow(clippy::too_many_arguments)]
unsafe fn shard_backward<L: Label>(
    logits: *const f32,
    logits_len: usize,
    tokens: *const L,
    tokens_len: usize,
    dlogits: *mut f32,
    dlogits_len: usize,
    cols: usize,
    class_offset: usize,
    classes: usize,
    opts: *const SkTokenOptions,
    states_p: *const SkRowState,
    states_len: usize,
    saved: *const SkTokenSaved,
    grads: *const SkTokenGrads,
) -> CResult<()> {
    let la = arg("logits", logits, logits_len)?;
    let ta = arg("tokens", tokens, tokens_len)?;
    let da = arg("dlogits", dlogits.cast_const(), dlogits_len)?;
    let sa = arg("states", states_p, states_len)?;
    let opta = opt_one("opts", opts)?;
    // SAFETY: the caller's contract for `opts`.
    let opts = unsafe { read_options(opts)? };
    let sva = one_arg("saved", saved)?;
    // SAFETY: accepted by `one_arg` (non-NULL, aligned); readable by the caller's contract.
    let s = unsafe { read_struct(saved) };
    let grada = opt_one("grads", grads)?;
    // SAFETY: accepted by `opt_one` when `Some`; readable by the caller's contract.
    let g = grada.map(|_| unsafe { read_struct(grads) });
    let sla = arg("saved.lse", s.lse, s.lse_len)?;
    let sha = opt_arg("saved.entropy", s.entropy, s.entropy_len)?;
    let (gla, gha) = match &g {
        Some(g) => (
            opt_arg("grads.logp", g.logp, g.logp_len)?,
            opt_arg("grads.entropy", g.entropy, g.entropy_len)?,
        ),
        None => (None, None),
    };
    let mut ins: Vec<&Arg> = vec![&la, &ta, &sa, &sla, &sva];
    ins.extend(
        sha.iter()
            .chain(&gla)
            .chain(&gha)
            .chain(&opta)
            .chain(&grada),
    );
    disjoint(&[&da], &ins)?;
    // SAFETY: every range checked, `dlogits` overlaps nothing; validity is the caller's
    // contract.
    let (x, tk, st, saved, grads, d) = unsafe {
        let saved = TokenSaved {
            lse: slice(s.lse, s.lse_len),
            entropy: opt_slice(sha, s.entropy, s.entropy_len),
        };
        let grads = g.map_or(TokenGrads::default(), |g| TokenGrads {
            logp: opt_slice(gla, g.logp, g.logp_len),
            entropy: opt_slice(gha, g.entropy, g.entropy_len),
        });
        (
            slice(logits, logits_len),
            slice(tokens, tokens_len),
            states(states_p, states_len),
            saved,
            grads,
            slice_mut(dlogits, dlogits_len),
        )
    };
    let shard = Shard::new(class_offset, classes);
    run(move |k: &'static Kernels| {
        k.token_shard_backward(x, cols, shard, tk, &opts, st, saved, grads, d)
            .map_err(CError::from)
    })
}

macro_rules! shard_fns {
    ($label:ty, $states:ident, $fin:ident, $bwd:ident) => {
        /// A vocabulary shard's per-row states, and its kept values into `keep` (the shard's
        /// gradient buffer, for its backward).
        ///
        /// # Safety
        /// `logits` and `tokens` readable and `keep` and `states` writable for their lengths,
        /// `opts` NULL or a readable options struct.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $states(
            logits: *const f32,
            logits_len: usize,
            tokens: *const $label,
            tokens_len: usize,
            keep: *mut f32,
            keep_len: usize,
            cols: usize,
            class_offset: usize,
            classes: usize,
            opts: *const SkTokenOptions,
            states: *mut SkRowState,
            states_len: usize,
        ) -> SkStatus {
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($states), || unsafe {
                shard_states(
                    logits,
                    logits_len,
                    tokens,
                    tokens_len,
                    keep,
                    keep_len,
                    cols,
                    class_offset,
                    classes,
                    opts,
                    states,
                    states_len,
                )
            })
        }

        /// The whole vocabulary's `logp` (and entropy and `lse`) from states merged over
        /// every shard.
        ///
        /// # Safety
        /// `states` and `tokens` readable for their lengths, `opts` NULL or a readable
        /// options struct, `outputs` a readable struct whose arrays are writable.
        #[no_mangle]
        pub unsafe extern "C" fn $fin(
            states: *const SkRowState,
            states_len: usize,
            tokens: *const $label,
            tokens_len: usize,
            classes: usize,
            opts: *const SkTokenOptions,
            outputs: *const SkTokenOutputs,
        ) -> SkStatus {
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($fin), || unsafe {
                finalize(
                    states, states_len, tokens, tokens_len, classes, opts, outputs,
                )
            })
        }

        /// A vocabulary shard's gradient into `dlogits`, which holds what the shard's states
        /// call kept.
        ///
        /// # Safety
        /// As the states call, `states` readable, `dlogits` readable and writable for their
        /// lengths, `saved` a readable struct and `grads` NULL or a readable struct (their
        /// arrays readable).
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $bwd(
            logits: *const f32,
            logits_len: usize,
            tokens: *const $label,
            tokens_len: usize,
            dlogits: *mut f32,
            dlogits_len: usize,
            cols: usize,
            class_offset: usize,
            classes: usize,
            opts: *const SkTokenOptions,
            states: *const SkRowState,
            states_len: usize,
            saved: *const SkTokenSaved,
            grads: *const SkTokenGrads,
        ) -> SkStatus {
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($bwd), || unsafe {
                shard_backward(
                    logits,
                    logits_len,
                    tokens,
                    tokens_len,
                    dlogits,
                    dlogits_len,
                    cols,
                    class_offset,
                    classes,
                    opts,
                    states,
                    states_len,
                    saved,
                    grads,
                )
            })
        }
    };
}

shard_fns!(
    i64,
    sk_token_shard_states,
    sk_row_states_finalize,
    sk_token_shard_backward
);
shard_fns!(
    i32,
    sk_token_shard_states_i32,
    sk_row_states_finalize_i32,
    sk_token_shard_backward_i32
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_state_is_the_crates() {
        let e = sk_row_state_empty();
        assert_eq!(RowState::from(e), RowState::EMPTY);
        assert!(e.max == f64::NEG_INFINITY && e.sum == 0.0 && e.has_target == 0.0);
    }

    /// Two shards of one row through the C entry points: merged and finalized, the same logp
    /// as the unsharded call; a missing shard is `InvalidOption` with nothing written.
    #[test]
    fn two_shards_one_row() {
        let z = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        let t = [3i64];
        let (mut a, mut b) = ([sk_row_state_empty()], [sk_row_state_empty()]);
        let (mut ka, mut kb) = ([0.0f32; 2], [0.0f32; 3]);
        let mut lp = [7.0f32];
        let out = SkTokenOutputs {
            logp: lp.as_mut_ptr(),
            logp_len: 1,
            entropy: std::ptr::null_mut(),
            entropy_len: 0,
            lse: std::ptr::null_mut(),
            lse_len: 0,
        };
        let null = std::ptr::null();
        // SAFETY: every pointer is a live local array of its length.
        unsafe {
            let st = sk_token_shard_states(
                z.as_ptr(),
                2,
                t.as_ptr(),
                1,
                ka.as_mut_ptr(),
                2,
                2,
                0,
                5,
                null,
                a.as_mut_ptr(),
                1,
            );
            assert_eq!(st, SkStatus::Ok);
            assert_eq!(
                sk_row_states_finalize(a.as_ptr(), 1, t.as_ptr(), 1, 5, null, &out),
                SkStatus::InvalidOption
            );
            assert_eq!(lp, [7.0]);
            let st = sk_token_shard_states(
                z[2..].as_ptr(),
                3,
                t.as_ptr(),
                1,
                kb.as_mut_ptr(),
                3,
                3,
                2,
                5,
                null,
                b.as_mut_ptr(),
                1,
            );
            assert_eq!(st, SkStatus::Ok);
            assert_eq!(b[0].has_target, 1.0);
            assert_eq!(
                sk_row_states_merge(a.as_mut_ptr(), 1, b.as_ptr(), 1),
                SkStatus::Ok
            );
            assert_eq!(
                sk_row_states_finalize(a.as_ptr(), 1, t.as_ptr(), 1, 5, null, &out),
                SkStatus::Ok
            );
        }
        let lse = z.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        assert!((lp[0] as f64 - (4.0 - lse)).abs() < 1e-6, "{}", lp[0]);
    }
}
