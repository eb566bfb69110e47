//! Vocabulary shards (`softmax_kernels::shard`) and the top-k output of `token_logprobs`.
//!
//! The header picks an operation (`ShardHeader::op % 3`):
//!
//! * **token shards**: the `classes` columns split into 1..=6 shards (cut points chosen by the
//!   header: proportional, near either end, or repeated, so that empty shards and shards of one
//!   class occur), `Kernels::token_shard_states` per shard, `merge_states` in a header-chosen
//!   order (a left fold or a pairwise tree), `finalize_states`, then `token_shard_backward`
//!   per shard (from its `keep` buffer and the finalized `lse` and entropy); against the
//!   unsharded `token_logprobs` (`logp`, entropy, `lse`) and `token_logprobs_backward` (from
//!   the unsharded `lse` and entropy) of the same tier;
//! * **cross-entropy shards**: the same with `cross_entropy_shard_states` (each shard given its
//!   columns' class weights; its `keep` passed to the backward as `dlogits`),
//!   `finalize_ce_states` and `cross_entropy_shard_backward`, against
//!   `cross_entropy_with` (`Logits::Grad`: loss, row losses, `lse`, gradient), with label
//!   smoothing, z-loss, class weights, soft-cap, the reductions, `scale`, `row_scale`;
//! * **top-k**: `token_logprobs` with `TokenLogprobOutputs::top_k` (`k` in `1..=64`, or an
//!   invalid 65) against the same call without it.
//!
//! Each runs on one SIMD tier and on the scalar reference. **Exact checks** (every input):
//! tier and reference give the same `Ok`/`Err` and error for every call; the sharded calls
//! fail exactly when the unsharded one does (argument errors: a bad token, an invalid option),
//! and then write nothing (states start as a signalling-NaN sentinel, floats as
//! [`UNWRITTEN`]); an injected error (states of a wrong length, a shard leaving the vocabulary,
//! a vocabulary over `MAX_CLASSES`, `merge_states` of a wrong length) fails alike on both and
//! writes nothing; every sharded value is NaN exactly where the unsharded one is; ignored rows
//! give `logp` 0, entropy 0, row loss 0, a NaN `lse` (documented for the finalize functions)
//! and a zero gradient row; without a cap a masked (`-inf`) logit other than the token's gets a
//! gradient of exactly 0. Top-k: values non-increasing, indices distinct classes, the first an
//! argmax (no cap: exactly); entries past the row's `classes` `-inf` with index `u32::MAX`;
//! ignored rows all `-inf` / `u32::MAX`; NaN rows (as `logp`) all NaN.
//!
//! **Tolerances** (finite rows inside the domain of `crate::token`: `T` in `[1e-3, 1e3]`,
//! without a cap every logit `-inf` or below `1e30`, with a cap `dc = 8 ulp(cap) / T <= 2^-6`
//! for the entropy and gradients; weights below `2^20`; upstream gradients below `1e3`).
//! These are tolerances, not proven bounds: the f32 kernels' first-order error terms of
//! `crate::token` (`2u E_p|d| + 2^-22 + 20u` for `ln s`, `u = 2^-24`) with generous constants,
//! which is what the crate's own shard tests do (relative `1e-5` plus a floor):
//! `ln s` within `dls = 1e-5 (1 + E_p|d|) + dc`; `lse` within `dls + 2^-50 |m / T|`; `logp`
//! (and each top-k value) within `dls + dc + 2^-50 (|z_t / T| + |m / T|)` (the sharded `logp`
//! is `target - lse` in f64: its cancellation costs `2^-53 |lse|`); the entropy within
//! `1e-5 (1 + E_p|d| + E_p d^2) + 2 dc (1 + E_p|d|)`; a token gradient element within
//! `it p_k ((|g_l| + |g_h| |ln p_k + H|) dp + |g_h| (dlse + dH + 1e-5 (1 + |ln p_k|)))`, where
//! `dp = dlse + 1e-5 (1 + |ln p_k|) + 2 dc` and `dlse`, `dH` are the checked tolerances of the
//! saved values (the backward's `p` moves with its saved f32 `lse`), checked while `dp <=
//! 2^-6`; the cross-entropy row loss within `(1 - eps) |w_t| dls + eps / C (|sum w| dls + 2^-18
//! sum |w_c (z_c - m)|) + 2 zl |lse| dls`, the gradient within the same terms times `p_c` and
//! the reduction's factor; gradients also `2^-126` absolute (results below the normal range
//! have no relative accuracy, e.g. with a `scale` of `1e-38`). Each bound is multiplied by
//! 1.125, and every compared value adds `1e-5` of its magnitude (f32 rounding of both sides,
//! with slack) and `2^-140`. The NaN / infinity patterns are checked where they are defined:
//! `T` in `[1e-3, 1e3]`, no finite logit of `1e30` or more without a cap, for gradients
//! moderate upstream gradients and (finite rows) a saved `lse` below about `2^16`, for the
//! cross-entropy weights 0 or of magnitude in `[2^-60, 2^20)`, z-loss up to `1e3`, `|scale|` up to `1e30`.

use softmax_kernels::{
    finalize_ce_states, finalize_states, merge_states, AllIgnored, CrossEntropyOptions,
    CrossEntropyOutputs, CrossEntropyStats, Error, Kernels, Label, Logits, Reduction, RowState,
    Shard, Targets, TokenGrads, TokenLogprobOptions, TokenLogprobOutputs, TokenSaved, MAX_CLASSES,
};

use crate::cross_entropy::{self as ce, label_value, FromWide};
use crate::input::{exact, split, Fill, Win, Words};
use crate::token::{softcap, temperature};
use crate::{close, pow2, reference, same_outcome, tier, unchanged, Report, UNWRITTEN};

crate::header! {
    /// The shard target's header.
    pub struct ShardHeader {
        /// The tier.
        pub tier: u8,
        /// `% 9` rows (fewer for long rows, [`shape`]).
        pub rows: u8,
        /// Classes selector ([`shape`]).
        pub cols: u16,
        /// `% 3`: token shards, cross-entropy shards, top-k.
        pub op: u8,
        /// `% 4`: tokens of i64, i32, u32, u8.
        pub label: u8,
        /// The ignore index (`cross_entropy::ignore_index`).
        pub ignore: u8,
        /// A free ignore index.
        pub ignore_val: i16,
        /// Temperature (`token::temperature`; token and top-k).
        pub temp: u8,
        /// Its free bits.
        pub temp_bits: u32,
        /// Soft-cap (`token::softcap`).
        pub softcap: u8,
        /// Its free bits.
        pub softcap_bits: u32,
        /// `1 + % 6` shards.
        pub shards: u8,
        /// One byte per cut ([`split_vocab`]).
        pub cuts: u64,
        /// The merge order: 3 bits per step of a shuffle; bit 31 set: a pairwise tree.
        pub order: u32,
        /// Bit 0: `grads.logp` (token) or class weights (cross-entropy); bit 1:
        /// `grads.entropy` or `row_scale` (with `Reduction::None`).
        pub extras: u8,
        /// `% 3`: Mean, Sum, None; bit 4: `AllIgnored::Zero`.
        pub reduction: u8,
        /// Label smoothing (`cross_entropy::smoothing`).
        pub smoothing: u8,
        /// Its free bits.
        pub smoothing_bits: u32,
        /// z-loss (`cross_entropy::z_loss`).
        pub z_loss: u8,
        /// Its free bits.
        pub z_loss_bits: u32,
        /// Gradient scale (`cross_entropy::scale`).
        pub scale: u8,
        /// Its free bits.
        pub scale_bits: u32,
        /// Top-k: `k = 1 + % 64`; 255: 65 entries per row (an error).
        pub top_k: u8,
        /// `% 8`: 0..=4 none; an extra failing states call on shard `err_shard`: 5 states of a
        /// wrong length, 6 a shard leaving the vocabulary, 7 more than `MAX_CLASSES` classes.
        pub err: u8,
        /// See `err`; bit 7 picks the variant (shorter states, an overflowing offset).
        pub err_shard: u8,
        /// `% 4`: no mask; every third logit `-inf` (not the token's); all but the token's;
        /// every even-indexed one.
        pub mask: u8,
        /// `% 4`: none; `+1e3`; `+1e3` on odd rows; `-1e3`.
        pub offset: u8,
        /// `% 8`: 4 a NaN, 5 `+inf`, 6 `-inf` at `inject_pos`, 7 that row all `-inf`.
        pub inject: u8,
        /// See `inject`.
        pub inject_pos: u16,
        /// The logits' window.
        pub xwin: Win,
        /// The window of the upstream gradients, weights and row scales.
        pub gwin: Win,
        /// Words past the input.
        pub fill: Fill,
    }
}

/// `[rows, classes]`: bit 15 of `cols_sel` clear `1..=96` classes, set `1..=3000`; at most
/// `12 000` logits (rows dropped).
pub fn shape(rows_sel: u8, cols_sel: u16) -> (usize, usize) {
    let cols = if cols_sel & 0x8000 == 0 {
        1 + cols_sel as usize % 96
    } else {
        1 + (cols_sel & 0x7FFF) as usize % 3000
    };
    ((rows_sel as usize % 9).min(12_000 / cols), cols)
}

/// The selector of [`shape`] for `cols` in `1..=3000`.
pub fn cols_sel(cols: usize) -> u16 {
    if cols <= 96 {
        (cols - 1) as u16
    } else {
        0x8000 | (cols - 1) as u16
    }
}

/// The shards `(offset, len)` of `0..classes`: `1 + n % 6` of them, cut where the bytes of
/// `cuts` say (`b >> 6`: 0 at `(b & 63) / 63` of the way, 1 at `b & 63`, 2 at `classes - (b &
/// 63)`, 3 at the previous cut: an empty shard).
pub fn split_vocab(n: u8, cuts: u64, classes: usize) -> Vec<(usize, usize)> {
    let mut c = vec![0, classes];
    let mut prev = 0;
    for i in 0..n as usize % 6 {
        let b = (cuts >> (8 * i)) as u8;
        let v = (b & 63) as usize;
        prev = match b >> 6 {
            0 => v * classes / 63,
            1 => v.min(classes),
            2 => classes.saturating_sub(v),
            _ => prev,
        };
        c.push(prev);
    }
    c.sort_unstable();
    c.windows(2).map(|w| (w[0], w[1] - w[0])).collect()
}

/// A token: in seven of eight words a class, `0xE.......` the ignore index (class 0 without
/// one), `0xF.......` one of `label_value`'s specials (mostly invalid).
pub fn token_value(w: u32, cols: usize, ignore: Option<i64>) -> i128 {
    match w >> 28 {
        0xF => label_value(w, cols, ignore),
        0xE => ignore.map_or(0, |i| i as i128),
        _ => (w as usize % cols) as i128,
    }
}

const UNW: f32 = f32::from_bits(UNWRITTEN);
const SNAN: f64 = f64::from_bits(0x7FF5_5A5A_5A5A_5A5A);
/// States start as this (a signalling NaN in every field: no kernel writes it).
const SENT: RowState = RowState {
    max: SNAN,
    sum: SNAN,
    dot: SNAN,
    target: SNAN,
    has_target: SNAN,
    wdot: SNAN,
    wsum: SNAN,
    target_weight: SNAN,
};

fn blank(n: usize) -> Vec<f32> {
    exact(&vec![UNW; n])
}

fn states_unchanged(what: &str, s: &[RowState]) -> Result<(), String> {
    match RowState::as_f64s(s)
        .iter()
        .position(|v| v.to_bits() != SNAN.to_bits())
    {
        Some(i) => Err(format!("{what}: state field {i} written on error")),
        None => Ok(()),
    }
}

/// NaN pattern (and infinities) only with `None`, else [`close`] within the tolerance plus
/// `1e-5` of the compared value.
fn cmp(got: f32, want: f32, tol: Option<f64>) -> Result<(), String> {
    match tol.filter(|t| t.is_finite()) {
        Some(t) => {
            let w = if want.is_finite() {
                want.abs() as f64
            } else {
                0.0
            };
            close(got, want, 1.125 * t + 1e-5 * w + pow2(-140))
        }
        None => close(got, want, f64::INFINITY),
    }
}

/// The broken states call of `err`: the shard and the states length.
fn broken(h: &ShardHeader, off: usize, len: usize, classes: usize, rows: usize) -> (Shard, usize) {
    let alt = h.err_shard & 0x80 != 0;
    match h.err % 8 {
        5 if alt && rows > 0 => (Shard::new(off, classes), rows - 1),
        5 => (Shard::new(off, classes), rows + 1),
        6 if alt => (Shard::new(usize::MAX - len / 2, classes), rows),
        6 => (Shard::new(classes + 1 - len, classes), rows),
        _ => (Shard::new(off, MAX_CLASSES + 1 + off), rows),
    }
}

/// Merges every shard's states in the header's order.
fn merge_all(states: &[Vec<RowState>], order: u32) -> Result<Vec<RowState>, String> {
    let mut perm: Vec<usize> = (0..states.len()).collect();
    for i in (1..perm.len()).rev() {
        perm.swap(i, (order >> (3 * (i - 1))) as usize % (i + 1));
    }
    let mut acc: Vec<Vec<RowState>> = perm.iter().map(|&i| states[i].clone()).collect();
    let m = |a: &mut Vec<RowState>, b: &[RowState]| {
        merge_states(a, b).map_err(|e| format!("merge_states: {e:?}"))
    };
    while acc.len() > 1 {
        if order >> 31 != 0 {
            let mut next = Vec::new();
            for pair in acc.chunks(2) {
                let mut a = pair[0].clone();
                if let Some(b) = pair.get(1) {
                    m(&mut a, b)?;
                }
                next.push(a);
            }
            acc = next;
        } else {
            let b = acc.remove(1);
            m(&mut acc[0], &b)?;
        }
    }
    let out = acc.pop().unwrap_or_default();
    // A wrong length fails and leaves the states alone.
    if !out.is_empty() {
        let mut a = out.clone();
        let r = merge_states(&mut a, &out[1..]);
        let same = RowState::as_f64s(&a)
            .iter()
            .zip(RowState::as_f64s(&out))
            .all(|(x, y)| x.to_bits() == y.to_bits());
        if !matches!(r, Err(Error::LengthMismatch { .. })) || !same {
            return Err(format!(
                "merge_states of a wrong length: {r:?}, unchanged: {same}"
            ));
        }
    }
    Ok(out)
}

/// Everything a call takes.
struct Case<'a, L: Label> {
    h: &'a ShardHeader,
    x: &'a [f32],
    tokens: &'a [L],
    rows: usize,
    classes: usize,
    shards: Vec<(usize, usize)>,
    /// Each shard's columns.
    xs: Vec<Vec<f32>>,
    /// The shard of the injected error.
    err: Option<usize>,
}

impl<L: Label> Case<'_, L> {
    fn class(&self, r: usize, ignore: Option<i64>) -> Option<usize> {
        let v = self.tokens[r].to_i128();
        (ignore.is_none_or(|i| i as i128 != v) && (0..self.classes as i128).contains(&v))
            .then_some(v as usize)
    }
}

/// The injected failing call: its result, states and `keep`.
type ErrCall = (Result<(), Error>, Vec<RowState>, Vec<f32>);

/// A states call on shard `i`: `(i, shard, states, keep)`.
type StatesFn<'a> = dyn Fn(usize, Shard, &mut [RowState], &mut [f32]) -> Result<(), Error> + 'a;

/// One tier's results (token or cross-entropy shards).
#[derive(Default)]
struct Run {
    /// The unsharded call, and its backward (token).
    un: Option<Result<(), Error>>,
    ubwd: Option<Result<(), Error>>,
    /// Unsharded per-row outputs: `logp`, entropy, `lse` (token); row loss, `lse` (CE).
    u: Vec<Vec<f32>>,
    ugrad: Vec<f32>,
    ustats: Option<CrossEntropyStats>,
    st: Vec<Result<(), Error>>,
    states: Vec<Vec<RowState>>,
    keeps: Vec<Vec<f32>>,
    err: Option<ErrCall>,
    fin: Option<Result<(), Error>>,
    s: Vec<Vec<f32>>,
    sstats: Option<CrossEntropyStats>,
    bwd: Vec<Result<(), Error>>,
    sgrad: Vec<f32>,
    fail: Option<String>,
}

fn put_cols(full: &mut [f32], cols: usize, off: usize, len: usize, part: &[f32]) {
    for (r, p) in part.chunks(len.max(1)).enumerate().take(full.len() / cols) {
        full[r * cols + off..r * cols + off + len].copy_from_slice(&p[..len]);
    }
}

/// The sharded forward common to both families: states per shard (via `states`), the
/// injected failing call, the merge.
fn shard_states<L: Label>(
    c: &Case<'_, L>,
    run: &mut Run,
    states: &StatesFn<'_>,
) -> Option<Vec<RowState>> {
    for (i, &(off, len)) in c.shards.iter().enumerate() {
        let (mut s, mut keep) = (vec![SENT; c.rows], blank(c.rows * len));
        run.st
            .push(states(i, Shard::new(off, c.classes), &mut s, &mut keep));
        run.states.push(s);
        run.keeps.push(keep);
    }
    run.err = c.err.map(|i| {
        let (off, len) = c.shards[i];
        let (shard, sl) = broken(c.h, off, len, c.classes, c.rows);
        let (mut s, mut keep) = (vec![SENT; sl], blank(c.rows * len));
        (states(i, shard, &mut s, &mut keep), s, keep)
    });
    if run.st.iter().any(|r| r.is_err()) {
        return None;
    }
    match merge_all(&run.states, c.h.order) {
        Ok(m) => Some(m),
        Err(e) => {
            run.fail = Some(e);
            None
        }
    }
}

fn tok_outs(v: &mut [Vec<f32>]) -> TokenLogprobOutputs<'_> {
    let [a, b, l] = v else {
        unreachable!("three outputs")
    };
    TokenLogprobOutputs::new(a).entropy(b).lse(l)
}

fn ce_outs(v: &mut [Vec<f32>]) -> CrossEntropyOutputs<'_> {
    let [a, l] = v else {
        unreachable!("two outputs")
    };
    CrossEntropyOutputs {
        row_loss: Some(a),
        lse: Some(l),
        argmax: None,
    }
}

fn tok_run<L: Label>(
    k: &Kernels,
    c: &Case<'_, L>,
    o: &TokenLogprobOptions,
    g: TokenGrads<'_>,
) -> Run {
    let (rows, n) = (c.rows, c.classes);
    let mut run = Run {
        u: vec![blank(rows); 3],
        ugrad: blank(c.x.len()),
        s: vec![blank(rows); 3],
        sgrad: blank(c.x.len()),
        ..Run::default()
    };
    let outs = tok_outs;
    let un = k.token_logprobs(c.x, c.tokens, n, o, outs(&mut run.u));
    if un.is_ok() {
        let saved = TokenSaved {
            lse: &run.u[2],
            entropy: Some(&run.u[1]),
        };
        run.ubwd = Some(k.token_logprobs_backward(c.x, c.tokens, n, o, saved, g, &mut run.ugrad));
    }
    run.un = Some(un);
    let st = |i: usize, sh: Shard, s: &mut [RowState], keep: &mut [f32]| {
        k.token_shard_states(&c.xs[i], c.shards[i].1, sh, c.tokens, o, s, keep)
    };
    let Some(merged) = shard_states(c, &mut run, &st) else {
        return run;
    };
    let fin = finalize_states(&merged, c.tokens, n, o, outs(&mut run.s));
    let ok = fin.is_ok();
    run.fin = Some(fin);
    if !ok {
        return run;
    }
    for (i, &(off, len)) in c.shards.iter().enumerate() {
        let mut d = exact(&run.keeps[i]);
        let saved = TokenSaved {
            lse: &run.s[2],
            entropy: Some(&run.s[1]),
        };
        let sh = Shard::new(off, n);
        let r = k.token_shard_backward(
            &c.xs[i],
            len,
            sh,
            c.tokens,
            o,
            &run.states[i],
            saved,
            g,
            &mut d,
        );
        if r.is_ok() {
            put_cols(&mut run.sgrad, n, off, len, &d);
        }
        run.bwd.push(r);
    }
    run
}

fn ce_run<L: Label>(k: &Kernels, c: &Case<'_, L>, o: &CrossEntropyOptions<'_>) -> Run {
    let (rows, n) = (c.rows, c.classes);
    let mut run = Run {
        u: vec![blank(rows); 2],
        ugrad: blank(c.x.len()),
        s: vec![blank(rows); 2],
        sgrad: blank(c.x.len()),
        ..Run::default()
    };
    let outs = ce_outs;
    let logits = Logits::Grad(c.x, &mut run.ugrad);
    let un = k.cross_entropy_with(
        logits,
        Targets::Classes(c.tokens),
        n,
        o,
        &mut outs(&mut run.u),
    );
    run.ustats = un.as_ref().ok().copied();
    run.un = Some(un.map(|_| ()));
    let so = |off: usize, len: usize| {
        let mut s = *o;
        s.weight = o.weight.map(|w| &w[off..off + len]);
        s
    };
    let st = |i: usize, sh: Shard, s: &mut [RowState], keep: &mut [f32]| {
        let (off, len) = c.shards[i];
        k.cross_entropy_shard_states(&c.xs[i], len, sh, c.tokens, &so(off, len), s, keep)
    };
    let Some(merged) = shard_states(c, &mut run, &st) else {
        return run;
    };
    let fin = finalize_ce_states(&merged, c.tokens, n, o, outs(&mut run.s));
    run.sstats = fin.as_ref().ok().copied();
    let ok = fin.is_ok();
    run.fin = Some(fin.map(|_| ()));
    if !ok {
        return run;
    }
    for (i, &(off, len)) in c.shards.iter().enumerate() {
        let mut d = exact(&run.keeps[i]);
        let (sh, own) = (Shard::new(off, n), &run.states[i]);
        let r = k.cross_entropy_shard_backward(
            &c.xs[i],
            len,
            sh,
            c.tokens,
            &so(off, len),
            own,
            &merged,
            &mut d,
        );
        if r.is_ok() {
            put_cols(&mut run.sgrad, n, off, len, &d);
        }
        run.bwd.push(r);
    }
    run
}

/// Tier against reference outcomes, then each run's own consistency (see the module docs).
fn outcomes(t: &Run, r: &Run) -> Result<(), String> {
    let opt = |w: &str, a: &Option<Result<(), Error>>, b: &Option<Result<(), Error>>| match (a, b) {
        (Some(a), Some(b)) => same_outcome(w, a, b).map(|_| ()),
        (None, None) => Ok(()),
        _ => Err(format!("{w}: run on one side only")),
    };
    opt("unsharded", &t.un, &r.un)?;
    opt("unsharded backward", &t.ubwd, &r.ubwd)?;
    opt("finalize", &t.fin, &r.fin)?;
    for (i, (a, b)) in
        t.st.iter()
            .zip(&r.st)
            .chain(t.bwd.iter().zip(&r.bwd))
            .enumerate()
    {
        same_outcome(&format!("shard call {i}"), a, b)?;
    }
    if let (Some(a), Some(b)) = (&t.err, &r.err) {
        same_outcome("injected error", &a.0, &b.0)?;
    }
    for (who, run) in [("tier", t), ("reference", r)] {
        if let Some(f) = &run.fail {
            return Err(format!("{who}: {f}"));
        }
        let ok = matches!(run.un, Some(Ok(())));
        for (i, s) in run.st.iter().enumerate() {
            if s.is_ok() != ok {
                return Err(format!(
                    "{who}: unsharded {:?}, shard {i} states {s:?}",
                    run.un
                ));
            }
            if s.is_err() {
                states_unchanged(&format!("{who} shard {i}"), &run.states[i])?;
                unchanged(
                    &format!("{who} shard {i} keep"),
                    &blank(run.keeps[i].len()),
                    &run.keeps[i],
                )?;
            }
        }
        if !ok {
            for v in &run.u {
                unchanged(&format!("{who} unsharded outputs"), &blank(v.len()), v)?;
            }
        }
        let bad = [&run.ubwd, &run.fin]
            .into_iter()
            .flatten()
            .chain(&run.bwd)
            .find(|r| r.is_err());
        if let (true, Some(e)) = (ok, bad) {
            return Err(format!("{who}: unsharded Ok, a later call {e:?}"));
        }
        if let Some((res, s, keep)) = &run.err {
            if res.is_ok() {
                return Err(format!("{who}: the injected error gave Ok"));
            }
            states_unchanged(&format!("{who} injected error"), s)?;
            unchanged(
                &format!("{who} injected error keep"),
                &blank(keep.len()),
                keep,
            )?;
        }
    }
    Ok(())
}

/// A row in f64 (capped, times `it`), as `crate::token`'s shadow.
struct Shadow {
    z: Vec<f64>,
    finite: bool,
    m: f64,
    d: Vec<f64>,
    p: Vec<f64>,
    ls: f64,
    e1: f64,
    e2: f64,
    h: f64,
}

impl Shadow {
    fn new(x: &[f32], cap: Option<f32>, it: f64) -> Shadow {
        let z: Vec<f64> = x
            .iter()
            .map(|&v| cap.map_or(v as f64, |c| c as f64 * (v as f64 / c as f64).tanh()))
            .collect();
        let m = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let finite = m.is_finite() && !z.iter().any(|v| v.is_nan());
        let d: Vec<f64> = z.iter().map(|&v| (v - m) * it).collect();
        let s: f64 = d.iter().map(|v| v.exp()).sum();
        let p: Vec<f64> = d.iter().map(|v| v.exp() / s).collect();
        let (mut e1, mut e2, mut hd) = (0.0, 0.0, 0.0);
        for (&p, &d) in p.iter().zip(&d).filter(|(&p, _)| p > 0.0) {
            (e1, e2, hd) = (e1 + p * d.abs(), e2 + p * d * d, hd + p * d);
        }
        let ls = s.ln();
        Shadow {
            z,
            finite,
            m,
            d,
            p,
            ls,
            e1,
            e2,
            h: ls - hd,
        }
    }
}

/// The domain and the row tolerances shared by the three operations.
struct Dom {
    it: f64,
    dz: f64,
    dc: f64,
    t_ok: bool,
    lin: bool,
    cap: Option<f32>,
}

impl Dom {
    fn new(temp: f32, cap: Option<f32>) -> Dom {
        let it = (1.0f32 / temp) as f64;
        let dz = cap.map_or(0.0, |c| 4.0 * (f32::from_bits(c.to_bits() + 1) - c) as f64);
        let dc = 2.0 * dz * it;
        Dom {
            it,
            dz,
            dc,
            t_ok: (1e-3..=1e3).contains(&temp),
            lin: dc <= pow2(-6),
            cap,
        }
    }

    fn row_ok(&self, x: &[f32], sh: &Shadow) -> bool {
        sh.finite
            && self.t_ok
            && (self.cap.is_some() || x.iter().all(|&v| v == f32::NEG_INFINITY || v.abs() < 1e30))
    }

    /// Where even the NaN and infinity patterns are defined: valid `T` in `[1e-3, 1e3]`, and
    /// without a cap no finite logit of `1e30` or more (past it `z / T` and the saved f32 `lse`
    /// may overflow, differently in each path).
    fn exact_ok(&self, x: &[f32]) -> bool {
        self.t_ok && (self.cap.is_some() || x.iter().all(|&v| !v.is_finite() || v.abs() < 1e30))
    }

    fn dls(&self, sh: &Shadow) -> f64 {
        1e-5 * (1.0 + sh.e1) + self.dc
    }

    fn lse(&self, sh: &Shadow) -> f64 {
        self.dls(sh) + pow2(-50) * (sh.m * self.it).abs()
    }

    /// A log-prob of class `i`.
    fn logp(&self, sh: &Shadow, i: usize) -> f64 {
        let zi = if sh.z[i].is_finite() {
            sh.z[i].abs()
        } else {
            0.0
        };
        self.dls(sh) + self.dc + pow2(-50) * (zi + sh.m.abs()) * self.it
    }

    fn entropy(&self, sh: &Shadow) -> Option<f64> {
        self.lin
            .then_some(1e-5 * (1.0 + sh.e1 + sh.e2) + 2.0 * self.dc * (1.0 + sh.e1))
    }

    fn dchain(&self) -> f64 {
        self.cap
            .map_or(0.0, |c| 4.0 * self.dz / c as f64 + 8.0 * pow2(-24))
    }
}

const PAIRS: [&str; 3] = [
    "tier sharded vs unsharded",
    "reference sharded vs unsharded",
    "sharded tier vs reference",
];

/// The three comparisons: (tier S, tier U), (reference S, reference U), (tier S, reference S).
fn pairs<'a>(
    t: &'a Run,
    r: &'a Run,
    f: impl Fn(&'a Run) -> (&'a [f32], &'a [f32]),
) -> [(&'a [f32], &'a [f32]); 3] {
    let ((ts, tu), (rs, ru)) = (f(t), f(r));
    [(ts, tu), (rs, ru), (ts, rs)]
}

fn tok_values<L: Label>(
    c: &Case<'_, L>,
    o: &TokenLogprobOptions,
    gl: &[f32],
    gh: &[f32],
    t: &Run,
    r: &Run,
) -> Result<(), String> {
    let (n, d) = (c.classes, Dom::new(o.temperature, o.softcap));
    let mut rep = Report::default();
    for row in 0..c.rows {
        let xr = &c.x[row * n..(row + 1) * n];
        let span = row * n..(row + 1) * n;
        let Some(tc) = c.class(row, o.ignore_index) else {
            for (who, run) in [("tier", t), ("reference", r)] {
                let (lp, h, lse) = (run.s[0][row], run.s[1][row], run.s[2][row]);
                if lp != 0.0 || h != 0.0 || !lse.is_nan() {
                    rep.check(
                        || format!("row {row} {who} ignored"),
                        Err(format!("{lp:e} {h:e} {lse:e}")),
                    );
                }
                if let Some(j) = run.sgrad[span.clone()].iter().position(|&v| v != 0.0) {
                    rep.check(
                        || format!("row {row} {who} ignored grad"),
                        Err(format!("[{j}] {:e}", run.sgrad[row * n + j])),
                    );
                }
            }
            continue;
        };
        let sh = Shadow::new(xr, d.cap, d.it);
        let dom = d.row_ok(xr, &sh);
        if !d.exact_ok(xr) {
            continue;
        }
        let tols = [
            d.logp(&sh, tc),
            d.entropy(&sh).unwrap_or(f64::NAN),
            d.lse(&sh),
        ];
        for (j, name) in ["logp", "entropy", "lse"].into_iter().enumerate() {
            for (pn, (a, b)) in PAIRS
                .iter()
                .zip(pairs(t, r, |x| (&x.s[j][..], &x.u[j][..])))
            {
                let tol = dom.then_some(tols[j]).filter(|v| !v.is_nan());
                rep.check(
                    || format!("row {row} {pn} {name}"),
                    cmp(a[row], b[row], tol),
                );
            }
        }
        let (gl, gh) = (
            gl.get(row).copied().unwrap_or(0.0) as f64,
            gh.get(row).copied().unwrap_or(0.0) as f64,
        );
        let (dlse, dh) = (
            1.125 * tols[2] + 1e-5 * r.s[2][row].abs() as f64,
            1.125 * tols[1] + 1e-5 * r.s[1][row].abs() as f64,
        );
        // The gradients' NaN pattern too is only defined for moderate upstream gradients (a
        // NaN one times a zero probability) and temperatures (as in `crate::token`).
        // A finite row's backward also needs its saved f32 `lse` accurate enough (`|lse| <~
        // 2^16`): past it `exp(z / T - lse')` may overflow or vanish, NaN or not.
        let g_ok = gl.abs() < 1e3
            && gh.abs() < 1e3
            && d.t_ok
            && (!sh.finite || dlse + 2.0 * d.dc <= pow2(-6));
        let grad_dom = dom && d.lin && g_ok && dlse + 2.0 * d.dc <= pow2(-6);
        for (pn, (a, b)) in PAIRS
            .iter()
            .zip(pairs(t, r, |x| (&x.sgrad[..], &x.ugrad[..])))
            .filter(|_| g_ok)
        {
            for k in 0..n {
                let tol = grad_dom.then(|| {
                    let (p, u) = (sh.p[k], sh.d[k] - sh.ls);
                    let u = if p > 0.0 { u.abs() } else { 0.0 };
                    let inner = gl.abs() + gh.abs() * (u + sh.h.abs());
                    let dp = dlse + 1e-5 * (1.0 + u) + 2.0 * d.dc;
                    let fix = if k == tc { (gl * d.it).abs() } else { 0.0 };
                    d.it * p * (inner * dp + gh.abs() * (dlse + dh + 1e-5 * (1.0 + u)))
                        + pow2(-120) * d.it * (gl.abs() + gh.abs() * (110.0 + sh.h.abs()))
                        + pow2(-22) * fix
                        + pow2(-126)
                        + (d.it * p * inner + fix) * d.dchain()
                });
                rep.check(
                    || format!("row {row} {pn} grad[{k}] (x = {:e})", xr[k]),
                    cmp(a[row * n + k], b[row * n + k], tol),
                );
            }
        }
        if o.softcap.is_none() && dom && g_ok {
            for (who, run) in [("tier", t), ("reference", r)] {
                let g = &run.sgrad[span.clone()];
                if let Some(j) =
                    (0..n).find(|&j| j != tc && xr[j] == f32::NEG_INFINITY && g[j] != 0.0)
                {
                    rep.check(
                        || format!("row {row} {who} masked grad"),
                        Err(format!("[{j}] {:e}", g[j])),
                    );
                }
            }
        }
    }
    rep.finish(|| "token shards".into())
}

fn ce_values<L: Label>(
    c: &Case<'_, L>,
    o: &CrossEntropyOptions<'_>,
    t: &Run,
    r: &Run,
) -> Result<(), String> {
    let (n, d) = (c.classes, Dom::new(1.0, o.softcap));
    let (eps, zl) = (o.label_smoothing as f64, o.z_loss as f64);
    let wt = |j: usize| o.weight.map_or(1.0, |w| w[j] as f64);
    let wsum: f64 = (0..n).map(wt).sum();
    // Weights below 2^-60 make the kernels' f32 products `w (z - m)` subnormal (CI found
    // all-1e-45 weights with smoothing: the loss off by 0.7%): outside the value checks, as
    // results below the normal range are elsewhere.
    let w_ok = (0..n).all(|j| wt(j).abs() < pow2(20) && (wt(j) == 0.0 || wt(j).abs() >= pow2(-60)));
    let w_pos = (0..n).all(|j| wt(j) >= 0.0);
    let mut loss_exact = true;
    let (Some(tu), Some(ts), Some(ru), Some(rs)) = (&t.ustats, &t.sstats, &r.ustats, &r.sstats)
    else {
        return Err("cross-entropy: no stats".into());
    };
    let mut rep = Report::default();
    let mut loss_tol = Some(0.0);
    let mut wabs = 0.0;
    for (a, b) in [(ts, tu), (rs, ru), (ts, rs)] {
        if a.rows_used != b.rows_used {
            rep.check(
                || "rows used".into(),
                Err(format!("{} vs {}", a.rows_used, b.rows_used)),
            );
        }
    }
    let den = tu.denominator;
    let red = match o.reduction {
        Reduction::Mean if den != 0.0 => 1.0 / den.abs(),
        Reduction::Mean => f64::NAN,
        _ => 1.0,
    };
    for row in 0..c.rows {
        let xr = &c.x[row * n..(row + 1) * n];
        let span = row * n..(row + 1) * n;
        let Some(tc) = c.class(row, o.ignore_index) else {
            for (who, run) in [("tier", t), ("reference", r)] {
                if run.s[0][row] != 0.0 || !run.s[1][row].is_nan() {
                    rep.check(
                        || format!("row {row} {who} ignored"),
                        Err(format!("{:e} {:e}", run.s[0][row], run.s[1][row])),
                    );
                }
                if let Some(j) = run.sgrad[span.clone()].iter().position(|&v| v != 0.0) {
                    rep.check(
                        || format!("row {row} {who} ignored grad"),
                        Err(format!("[{j}] {:e}", run.sgrad[row * n + j])),
                    );
                }
            }
            continue;
        };
        wabs += wt(tc).abs();
        let sh = Shadow::new(xr, d.cap, 1.0);
        let dom = d.row_ok(xr, &sh) && d.lin && w_ok;
        // Outside these (huge or negative weights, z-loss or scale, huge logits) the f32 / f64
        // overflows differ between the paths: no value checks, not even NaN patterns.
        if !(d.exact_ok(xr) && w_ok && w_pos && zl <= 1e3 && o.scale.abs() <= 1e30) {
            loss_exact = false;
            continue;
        }
        let dls = d.dls(&sh);
        let dlse = dls + pow2(-50) * sh.m.abs();
        let lse = sh.m + sh.ls;
        let s1: f64 = (0..n).map(|j| wt(j).abs() * (sh.z[j] - sh.m).abs()).sum();
        let wtt = (1.0 - eps) * wt(tc).abs();
        let row_tol = wtt * (dls + pow2(-50) * (sh.m.abs() + sh.z[tc].abs()))
            + eps / n as f64 * (wsum.abs() * dlse + pow2(-18) * s1)
            + 2.0 * zl * lse.abs() * dlse;
        let row_tol = Some(row_tol).filter(|v| dom && v.is_finite());
        loss_tol = loss_tol.zip(row_tol).map(|(a, b)| a + b);
        for (j, (name, tol)) in [("row loss", row_tol), ("lse", dom.then_some(dlse))]
            .into_iter()
            .enumerate()
        {
            for (pn, (a, b)) in PAIRS
                .iter()
                .zip(pairs(t, r, |x| (&x.s[j][..], &x.u[j][..])))
            {
                rep.check(
                    || format!("row {row} {pn} {name}"),
                    cmp(a[row], b[row], tol),
                );
            }
        }
        let g = red * o.scale.abs() as f64 * o.row_scale.map_or(1.0, |v| v[row].abs() as f64);
        let a = (wtt + eps / n as f64 * wsum + 2.0 * zl * lse).abs();
        // (Weights and scales outside the domain: no gradient checks, as above.)
        let g_ok = w_ok && g.is_finite() && g < 1e30;
        for (pn, (ga, gb)) in PAIRS
            .iter()
            .zip(pairs(t, r, |x| (&x.sgrad[..], &x.ugrad[..])))
            .filter(|_| g_ok)
        {
            for k in 0..n {
                let tol = (dom && g.is_finite()).then(|| {
                    let p = sh.p[k];
                    let dk = if p > 0.0 { sh.d[k].abs() } else { 0.0 };
                    let lin = eps / n as f64 * wt(k).abs() + if k == tc { wtt } else { 0.0 };
                    g * (a * p * (dls + 1e-5 * dk + 2.0 * d.dc)
                        + 2.0 * zl * p * dlse
                        + pow2(-20) * (a * p + lin)
                        + pow2(-120) * (a + 1.0)
                        + pow2(-126) / g
                        + (a * p + lin) * d.dchain())
                });
                rep.check(
                    || format!("row {row} {pn} grad[{k}] (x = {:e})", xr[k]),
                    cmp(ga[row * n + k], gb[row * n + k], tol),
                );
            }
        }
    }
    let lt = loss_tol.map(|v| v * red);
    for (pn, (a, b)) in PAIRS.iter().zip([(ts, tu), (rs, ru), (ts, rs)]) {
        if loss_exact {
            rep.check(|| format!("{pn} loss"), cmp(a.loss, b.loss, lt));
        }
        let dd = (a.denominator - b.denominator).abs();
        let dd_ok = dd <= pow2(-45) * wabs || !w_ok;
        if !dd_ok && !(a.denominator.is_nan() && b.denominator.is_nan()) {
            rep.check(
                || format!("{pn} denominator"),
                Err(format!("{} vs {}", a.denominator, b.denominator)),
            );
        }
    }
    rep.finish(|| "cross-entropy shards".into())
}

/// Top-k: one tier's run of `token_logprobs` with and without it.
struct TopRun {
    plain: Result<(), Error>,
    p: Vec<Vec<f32>>,
    res: Result<(), Error>,
    o: Vec<Vec<f32>>,
    val: Vec<f32>,
    idx: Vec<u32>,
}

fn top_run<L: Label>(k: &Kernels, c: &Case<'_, L>, o: &TokenLogprobOptions, kk: usize) -> TopRun {
    let rows = c.rows;
    let (mut p, mut ot) = (vec![blank(rows); 3], vec![blank(rows); 3]);
    let (mut val, mut idx) = (blank(rows * kk), exact(&vec![0xDEAD_BEEFu32; rows * kk]));
    let [a, b, l] = &mut p[..] else {
        unreachable!()
    };
    let plain = k.token_logprobs(
        c.x,
        c.tokens,
        c.classes,
        o,
        TokenLogprobOutputs::new(a).entropy(b).lse(l),
    );
    let [a, b, l] = &mut ot[..] else {
        unreachable!()
    };
    let out = TokenLogprobOutputs::new(a)
        .entropy(b)
        .lse(l)
        .top_k(&mut val, &mut idx);
    let res = k.token_logprobs(c.x, c.tokens, c.classes, o, out);
    TopRun {
        plain,
        p,
        res,
        o: ot,
        val,
        idx,
    }
}

fn top_compare<L: Label>(
    c: &Case<'_, L>,
    o: &TokenLogprobOptions,
    kk: usize,
    t: &TopRun,
    r: &TopRun,
) -> Result<(), String> {
    same_outcome("plain", &t.plain, &r.plain)?;
    let ok = same_outcome("top-k", &t.res, &r.res)?;
    for (who, run) in [("tier", t), ("reference", r)] {
        if run.res.is_err() {
            for v in &run.o {
                unchanged(&format!("{who} outputs"), &blank(v.len()), v)?;
            }
            unchanged(
                &format!("{who} top-k values"),
                &blank(run.val.len()),
                &run.val,
            )?;
            if run.idx.iter().any(|&i| i != 0xDEAD_BEEF) {
                return Err(format!("{who}: top-k index written on error"));
            }
            if run.plain.is_ok() && !(c.h.top_k == 255 && c.rows > 0) {
                return Err(format!("{who}: top-k {:?}, plain Ok", run.res));
            }
        } else if run.plain.is_err() {
            return Err(format!("{who}: top-k Ok, plain {:?}", run.plain));
        }
    }
    if !ok {
        return Ok(());
    }
    let (n, d) = (c.classes, Dom::new(o.temperature, o.softcap));
    let mut rep = Report::default();
    for row in 0..c.rows {
        let xr = &c.x[row * n..(row + 1) * n];
        let sh = Shadow::new(xr, d.cap, d.it);
        let dom = d.row_ok(xr, &sh);
        let class = c.class(row, o.ignore_index);
        let tols = [
            class.map_or(0.0, |tc| d.logp(&sh, tc)),
            d.entropy(&sh).unwrap_or(f64::NAN),
            d.lse(&sh),
        ];
        for (j, name) in ["logp", "entropy", "lse"].into_iter().enumerate() {
            let tol = dom.then_some(tols[j]).filter(|v| !v.is_nan());
            for (pn, a, b) in [
                ("tier", t, t),
                ("reference", r, r),
                ("tier vs reference", t, r),
            ] {
                rep.check(
                    || format!("row {row} {pn} top-k vs plain {name}"),
                    cmp(a.o[j][row], b.p[j][row], tol),
                );
            }
        }
        // The log-probs of the shadow, sorted.
        let lp: Vec<f64> = sh.d.iter().map(|v| v - sh.ls).collect();
        let mut sorted = lp.clone();
        sorted.sort_unstable_by(|a, b| b.total_cmp(a));
        let m = n.min(kk);
        let tol = dom.then(|| d.logp(&sh, 0) + pow2(-50) * sh.m.abs() * d.it);
        for (who, run) in [("tier", t), ("reference", r)] {
            let (v, ix) = (
                &run.val[row * kk..(row + 1) * kk],
                &run.idx[row * kk..(row + 1) * kk],
            );
            let e = if class.is_none() {
                (0..kk)
                    .find(|&q| v[q] != f32::NEG_INFINITY || ix[q] != u32::MAX)
                    .map(|q| format!("ignored row [{q}]"))
            } else if !sh.finite {
                (0..kk)
                    .find(|&q| !v[q].is_nan() || (ix[q] as usize >= n && ix[q] != u32::MAX))
                    .map(|q| format!("NaN row [{q}]"))
            } else {
                let mut seen = vec![false; n];
                (0..kk).find_map(|q| {
                    let i = ix[q] as usize;
                    let bad = if q >= m {
                        v[q] != f32::NEG_INFINITY || ix[q] != u32::MAX
                    } else {
                        i >= n
                            || std::mem::replace(&mut seen[i], true)
                            || v[q].is_nan()
                            || q > 0 && v[q] > v[q - 1]
                            || q == 0 && d.cap.is_none() && sh.z[i] != sh.m
                    };
                    if bad {
                        return Some(format!("[{q}] = ({:e}, {})", v[q], ix[q]));
                    }
                    let t = tol.filter(|_| q < m)?;
                    let kth = sorted[m - 1];
                    let t2 = 1.125 * t + 1e-5 * if kth.is_finite() { kth.abs() } else { 0.0 };
                    // Its value matches its class, is the q-th largest, and the class is in
                    // the top k (up to near-ties).
                    let e = cmp(v[q], lp[i] as f32, Some(t))
                        .and_then(|_| cmp(v[q], sorted[q] as f32, Some(t)))
                        .err()
                        .or_else(|| (lp[i] < kth - 2.0 * t2).then(|| "not in the top k".into()));
                    e.map(|e| format!("[{q}] class {i}: {e}"))
                })
            };
            if let Some(e) = e {
                rep.check(|| format!("row {row} {who} top-k"), Err(e));
            }
        }
        if sh.finite && class.is_some() {
            for q in 0..m {
                rep.check(
                    || format!("row {row} top-k tier vs reference [{q}]"),
                    cmp(t.val[row * kk + q], r.val[row * kk + q], tol),
                );
            }
        }
    }
    rep.finish(|| format!("top-k k={kk}"))
}

/// The mask, offset and injection of the header on `x` (`[rows, cols]`).
fn shape_logits<L: Label>(
    h: &ShardHeader,
    x: &mut [f32],
    cols: usize,
    tokens: &[L],
    ignore: Option<i64>,
) {
    for (r, row) in x.chunks_exact_mut(cols).enumerate() {
        let v = tokens[r].to_i128();
        let t = (ignore.is_none_or(|i| i as i128 != v) && (0..cols as i128).contains(&v))
            .then_some(v as usize);
        for (j, v) in row.iter_mut().enumerate() {
            let masked = match h.mask % 4 {
                1 => j % 3 == 1 && Some(j) != t,
                2 => Some(j) != t,
                3 => j % 2 == 0,
                _ => false,
            };
            if masked {
                *v = f32::NEG_INFINITY;
            }
            *v += match h.offset % 4 {
                1 => 1e3,
                2 if r % 2 == 1 => 1e3,
                3 => -1e3,
                _ => 0.0,
            };
        }
    }
    if !x.is_empty() {
        let p = h.inject_pos as usize % x.len();
        match h.inject % 8 {
            4 => x[p] = f32::NAN,
            5 => x[p] = f32::INFINITY,
            6 => x[p] = f32::NEG_INFINITY,
            7 => x[p / cols * cols..(p / cols + 1) * cols].fill(f32::NEG_INFINITY),
            _ => {}
        }
    }
}

/// The checker (see the module docs).
pub fn check(data: &[u8]) -> Result<(), String> {
    let (h, rest) = split::<ShardHeader>(data);
    let mut words = Words::new(rest, h.fill);
    match h.label % 4 {
        0 => typed::<i64>(&h, &mut words),
        1 => typed::<i32>(&h, &mut words),
        2 => typed::<u32>(&h, &mut words),
        _ => typed::<u8>(&h, &mut words),
    }
}

fn typed<L: FromWide>(h: &ShardHeader, words: &mut Words) -> Result<(), String> {
    let (k, rf) = (tier(h.tier), reference());
    let (rows, n) = shape(h.rows, h.cols);
    let mut x = words.floats(rows * n, h.xwin);
    let ignore = ce::ignore_index(h.ignore, h.ignore_val, n);
    let tokens: Vec<L> = words
        .raw(rows)
        .into_iter()
        .map(|w| L::from_wide(token_value(w, n, ignore)))
        .collect();
    let tokens = exact(&tokens);
    shape_logits(h, &mut x, n, &tokens, ignore);
    let shards = split_vocab(h.shards, h.cuts, n);
    let xs = shards
        .iter()
        .map(|&(off, len)| {
            exact(
                &x.chunks(n)
                    .flat_map(|r| r[off..off + len].to_vec())
                    .collect::<Vec<f32>>(),
            )
        })
        .collect();
    let err = (h.err % 8 >= 5).then_some(h.err_shard as usize % shards.len());
    let c = Case {
        h,
        x: &x,
        tokens: &tokens,
        rows,
        classes: n,
        xs,
        shards,
        err,
    };
    let ctx = |op: &str, e: String| {
        format!(
            "[{}] {op}: rows {rows} classes {n} shards {:?} tokens {:?}\n{e}",
            k.isa(),
            c.shards,
            &tokens[..rows.min(8)]
        )
    };
    let mut to = TokenLogprobOptions::default();
    to.temperature = temperature(h.temp, h.temp_bits);
    to.softcap = softcap(h.softcap, h.softcap_bits);
    to.ignore_index = ignore;
    match h.op % 3 {
        0 => {
            let gl = (h.extras & 1 != 0).then(|| words.floats(rows, h.gwin));
            let gh = (h.extras & 2 != 0).then(|| words.floats(rows, h.gwin));
            let g = TokenGrads {
                logp: gl.as_deref(),
                entropy: gh.as_deref(),
            };
            let (t, r) = (tok_run(k, &c, &to, g), tok_run(rf, &c, &to, g));
            let res = outcomes(&t, &r).and_then(|_| {
                if t.fin.is_some() {
                    tok_values(
                        &c,
                        &to,
                        gl.as_deref().unwrap_or(&[]),
                        gh.as_deref().unwrap_or(&[]),
                        &t,
                        &r,
                    )
                } else {
                    Ok(())
                }
            });
            res.map_err(|e| ctx(&format!("token {to:?}"), e))
        }
        1 => {
            let w = (h.extras & 1 != 0).then(|| words.floats(n, h.gwin));
            let reduction =
                [Reduction::Mean, Reduction::Sum, Reduction::None][h.reduction as usize % 3];
            let rs = (h.extras & 2 != 0 && reduction == Reduction::None)
                .then(|| words.floats(rows, h.gwin));
            let mut o = CrossEntropyOptions::default();
            o.reduction = reduction;
            o.weight = w.as_deref();
            o.ignore_index = ignore;
            o.label_smoothing = ce::smoothing(h.smoothing, h.smoothing_bits);
            o.z_loss = ce::z_loss(h.z_loss, h.z_loss_bits);
            o.softcap = ce::softcap(h.softcap, h.softcap_bits);
            o.scale = ce::scale(h.scale, h.scale_bits);
            o.row_scale = rs.as_deref();
            o.all_ignored = if h.reduction & 16 != 0 {
                AllIgnored::Zero
            } else {
                AllIgnored::Nan
            };
            let (t, r) = (ce_run(k, &c, &o), ce_run(rf, &c, &o));
            let res = outcomes(&t, &r).and_then(|_| {
                if t.fin.is_some() {
                    ce_values(&c, &o, &t, &r)
                } else {
                    Ok(())
                }
            });
            res.map_err(|e| ctx(&format!("cross-entropy {o:?}"), e))
        }
        _ => {
            let kk = if h.top_k == 255 {
                65
            } else {
                1 + h.top_k as usize % 64
            };
            let (t, r) = (top_run(k, &c, &to, kk), top_run(rf, &c, &to, kk));
            top_compare(&c, &to, kk, &t, &r).map_err(|e| ctx(&format!("top-k {to:?}"), e))
        }
    }
}
