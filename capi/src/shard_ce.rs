//! Vocabulary-sharded cross-entropy (`int64_t` or `int32_t` class targets): a shard's per-row
//! states and kept values, the finalize of merged states into the whole vocabulary's loss
//! (and per-row loss and `lse`), and a shard's backward. The states are the `sk_row_state`s of
//! [`crate::shard`] (merged by its `sk_row_states_merge`); the options, outputs and stats are
//! the cross-entropy structs of [`crate::cross_entropy`].

use sk::{finalize_ce_states, CrossEntropyOutputs, Kernels, Label, Shard};

use crate::args::{arg, disjoint, opt_one, opt_slice_mut, put, slice, slice_mut, Arg};
use crate::cross_entropy::{read_options, read_outputs, SkCeOptions, SkCeOutputs, SkCeStats};
use crate::runtime::run;
use crate::shard::{states, states_mut, SkRowState};
use crate::status::{guard, CError, CResult, SkStatus};

/// A shard's cross-entropy states and kept values.
///
/// # Safety
/// `logits`, `targets` readable, `keep` and `states` writable, for their lengths; `opts` NULL
/// or a readable options struct (whose arrays are readable).
#[allow(clippy::too_many_arguments)]
unsafe fn shard_states<L: Label>(
    logits: *const f32,
    logits_len: usize,
    targets: *const L,
    targets_len: usize,
    keep: *mut f32,
    keep_len: usize,
    cols: usize,
    class_offset: usize,
    classes: usize,
    opts: *const SkCeOptions,
    states_p: *mut SkRowState,
    states_len: usize,
) -> CResult<()> {
    let la = arg("logits", logits, logits_len)?;
    let ta = arg("targets", targets, targets_len)?;
    let ka = arg("keep", keep.cast_const(), keep_len)?;
    let sa = arg("states", states_p.cast_const(), states_len)?;
    let opta = opt_one("opts", opts)?;
    // SAFETY: the caller's contract for `opts` and its arrays.
    let (opts, wa, ra) = unsafe { read_options(opts)? };
    let mut ins = vec![&la, &ta];
    ins.extend(wa.iter().chain(&ra).chain(&opta));
    disjoint(&[&ka, &sa], &ins)?;
    // SAFETY: every range checked, the outputs overlap nothing (the options' arrays
    // included); validity is the caller's contract.
    let (x, tg, keep, st) = unsafe {
        (
            slice(logits, logits_len),
            slice(targets, targets_len),
            slice_mut(keep, keep_len),
            states_mut(states_p, states_len),
        )
    };
    let shard = Shard::new(class_offset, classes);
    run(move |k: &'static Kernels| {
        k.cross_entropy_shard_states(x, cols, shard, tg, &opts, st, keep)
            .map_err(CError::from)
    })
}

/// The whole vocabulary's cross-entropy from merged states.
///
/// # Safety
/// `states`, `targets` readable for their lengths; `opts` NULL or a readable options struct
/// (whose arrays are readable); `outputs` NULL or a readable struct whose arrays are
/// writable; `stats` and `loss` NULL or writable.
#[allow(clippy::too_many_arguments)]
unsafe fn finalize<L: Label>(
    states_p: *const SkRowState,
    states_len: usize,
    targets: *const L,
    targets_len: usize,
    classes: usize,
    opts: *const SkCeOptions,
    outputs: *const SkCeOutputs,
    stats: *mut SkCeStats,
    loss: *mut f32,
) -> CResult<()> {
    let lossa = opt_one("loss", loss.cast_const())?;
    let statsa = opt_one("stats", stats.cast_const())?;
    let opta = opt_one("opts", opts)?;
    let outa = opt_one("outputs", outputs)?;
    let sa = arg("states", states_p, states_len)?;
    let ta = arg("targets", targets, targets_len)?;
    // SAFETY: the caller's contract for `opts` and its arrays.
    let (opts, wa, ra) = unsafe { read_options(opts)? };
    // SAFETY: the caller's contract for `outputs`.
    let (o, [rla, lsa, ama]) = unsafe { read_outputs(outputs)? };
    let mut outs: Vec<&Arg> = Vec::with_capacity(5);
    outs.extend(
        rla.iter()
            .chain(&lsa)
            .chain(&ama)
            .chain(&lossa)
            .chain(&statsa),
    );
    // The weights are not read here (the states carry them), but they are an argument.
    let mut ins: Vec<&Arg> = vec![&sa, &ta];
    ins.extend(wa.iter().chain(&ra).chain(&opta).chain(&outa));
    disjoint(&outs, &ins)?;
    // SAFETY: every range checked, the outputs overlap nothing; validity is the caller's
    // contract.
    let (st, tg, co) = unsafe {
        let co = CrossEntropyOutputs {
            row_loss: opt_slice_mut(rla, o.row_loss, o.row_loss_len),
            lse: opt_slice_mut(lsa, o.lse, o.lse_len),
            argmax: opt_slice_mut(ama, o.argmax, o.argmax_len),
        };
        (
            states(states_p, states_len),
            slice(targets, targets_len),
            co,
        )
    };
    let s = finalize_ce_states(st, tg, classes, &opts, co)?;
    // SAFETY: NULL or checked above (aligned, overlapping nothing); writable by the caller's
    // contract.
    unsafe {
        put("loss", loss, s.loss)?;
        put("stats", stats, SkCeStats::from(s))?;
    }
    Ok(())
}

/// A shard's cross-entropy backward.
///
/// # Safety
/// `logits`, `targets`, `own`, `merged` readable and `dlogits` readable and writable, for
/// their lengths; `opts` NULL or a readable options struct (whose arrays are readable).
#[allow(clippy::too_many_arguments)]
unsafe fn shard_backward<L: Label>(
    logits: *const f32,
    logits_len: usize,
    targets: *const L,
    targets_len: usize,
    dlogits: *mut f32,
    dlogits_len: usize,
    cols: usize,
    class_offset: usize,
    classes: usize,
    opts: *const SkCeOptions,
    own: *const SkRowState,
    own_len: usize,
    merged: *const SkRowState,
    merged_len: usize,
) -> CResult<()> {
    let la = arg("logits", logits, logits_len)?;
    let ta = arg("targets", targets, targets_len)?;
    let da = arg("dlogits", dlogits.cast_const(), dlogits_len)?;
    let oa = arg("own", own, own_len)?;
    let ma = arg("merged", merged, merged_len)?;
    let opta = opt_one("opts", opts)?;
    // SAFETY: the caller's contract for `opts` and its arrays.
    let (opts, wa, ra) = unsafe { read_options(opts)? };
    let mut ins: Vec<&Arg> = vec![&la, &ta, &oa, &ma];
    ins.extend(wa.iter().chain(&ra).chain(&opta));
    disjoint(&[&da], &ins)?;
    // SAFETY: every range checked, `dlogits` overlaps nothing; validity is the caller's
    // contract.
    let (x, tg, own, merged, d) = unsafe {
        (
            slice(logits, logits_len),
            slice(targets, targets_len),
            states(own, own_len),
            states(merged, merged_len),
            slice_mut(dlogits, dlogits_len),
        )
    };
    let shard = Shard::new(class_offset, classes);
    run(move |k: &'static Kernels| {
        k.cross_entropy_shard_backward(x, cols, shard, tg, &opts, own, merged, d)
            .map_err(CError::from)
    })
}

macro_rules! shard_ce_fns {
    ($label:ty, $states:ident, $fin:ident, $bwd:ident) => {
        /// A vocabulary shard's cross-entropy states, and its kept values into `keep` (the
        /// shard's gradient buffer, for its backward).
        ///
        /// # Safety
        /// `logits` and `targets` readable and `keep` and `states` writable for their
        /// lengths, `opts` NULL or a readable options struct (whose arrays are readable).
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $states(
            logits: *const f32,
            logits_len: usize,
            targets: *const $label,
            targets_len: usize,
            keep: *mut f32,
            keep_len: usize,
            cols: usize,
            class_offset: usize,
            classes: usize,
            opts: *const SkCeOptions,
            states: *mut SkRowState,
            states_len: usize,
        ) -> SkStatus {
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($states), || unsafe {
                shard_states(
                    logits,
                    logits_len,
                    targets,
                    targets_len,
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

        /// The whole vocabulary's cross-entropy loss (and per-row loss and `lse`, and stats)
        /// from states merged over every shard.
        ///
        /// # Safety
        /// `states` and `targets` readable for their lengths, `opts` NULL or a readable
        /// options struct, `outputs` NULL or a readable struct whose arrays are writable,
        /// `stats` and `loss` NULL or writable.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $fin(
            states: *const SkRowState,
            states_len: usize,
            targets: *const $label,
            targets_len: usize,
            classes: usize,
            opts: *const SkCeOptions,
            outputs: *const SkCeOutputs,
            stats: *mut SkCeStats,
            loss: *mut f32,
        ) -> SkStatus {
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($fin), || unsafe {
                finalize(
                    states,
                    states_len,
                    targets,
                    targets_len,
                    classes,
                    opts,
                    outputs,
                    stats,
                    loss,
                )
            })
        }

        /// A vocabulary shard's cross-entropy gradient into `dlogits`, which holds what the
        /// shard's states call kept.
        ///
        /// # Safety
        /// As the states call, `own` and `merged` readable, `dlogits` readable and writable
        /// for their lengths.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $bwd(
            logits: *const f32,
            logits_len: usize,
            targets: *const $label,
            targets_len: usize,
            dlogits: *mut f32,
            dlogits_len: usize,
            cols: usize,
            class_offset: usize,
            classes: usize,
            opts: *const SkCeOptions,
            own: *const SkRowState,
            own_len: usize,
            merged: *const SkRowState,
            merged_len: usize,
        ) -> SkStatus {
            // SAFETY: the caller's contract, forwarded.
            guard(stringify!($bwd), || unsafe {
                shard_backward(
                    logits,
                    logits_len,
                    targets,
                    targets_len,
                    dlogits,
                    dlogits_len,
                    cols,
                    class_offset,
                    classes,
                    opts,
                    own,
                    own_len,
                    merged,
                    merged_len,
                )
            })
        }
    };
}

shard_ce_fns!(
    i64,
    sk_cross_entropy_shard_states,
    sk_ce_states_finalize,
    sk_cross_entropy_shard_backward
);
shard_ce_fns!(
    i32,
    sk_cross_entropy_shard_states_i32,
    sk_ce_states_finalize_i32,
    sk_cross_entropy_shard_backward_i32
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{sk_row_state_empty, sk_row_states_merge};

    /// Two shards of one row through the C entry points: merged and finalized, the unsharded
    /// loss; a missing shard is `InvalidOption` with nothing written.
    #[test]
    fn two_shards_one_row() {
        let z = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        let t = [3i64];
        let (mut a, mut b) = ([sk_row_state_empty()], [sk_row_state_empty()]);
        let (mut ka, mut kb) = ([0.0f32; 2], [0.0f32; 3]);
        let mut loss = 7.0f32;
        let null: *const SkCeOptions = std::ptr::null();
        let nout: *const SkCeOutputs = std::ptr::null();
        let nullm = std::ptr::null_mut();
        // SAFETY: every pointer is a live local array of its length (or NULL).
        unsafe {
            let st = sk_cross_entropy_shard_states(
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
            let st = sk_ce_states_finalize(
                a.as_ptr(),
                1,
                t.as_ptr(),
                1,
                5,
                null,
                nout,
                nullm,
                &mut loss,
            );
            assert_eq!(st, SkStatus::InvalidOption);
            assert_eq!(loss, 7.0);
            let st = sk_cross_entropy_shard_states(
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
            assert_eq!(
                (b[0].has_target, b[0].wsum, b[0].target_weight),
                (1.0, 3.0, 1.0)
            );
            assert_eq!(
                sk_row_states_merge(a.as_mut_ptr(), 1, b.as_ptr(), 1),
                SkStatus::Ok
            );
            let st = sk_ce_states_finalize(
                a.as_ptr(),
                1,
                t.as_ptr(),
                1,
                5,
                null,
                nout,
                nullm,
                &mut loss,
            );
            assert_eq!(st, SkStatus::Ok);
        }
        let lse = z.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        assert!((loss as f64 - (lse - 4.0)).abs() < 1e-6, "{loss}");
    }
}
