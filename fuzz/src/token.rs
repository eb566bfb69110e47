//! Token log-probs and entropy (`softmax_kernels::token`): `Kernels::token_logprobs`, the
//! backward from its saved `lse` and entropy (out of place and in place) and the fused
//! `token_logprobs_fwd_bwd` (out of place and in place), with tokens of every `Label` type (in
//! range, out of range, negative, the ignore index, values that wrap in small types), valid and
//! invalid temperatures and soft-caps, every optional output and upstream gradient (sometimes
//! of a wrong length); one tier against the scalar reference, each backward fed the `lse` and
//! entropy of its own tier's forward (the "prelude").
//!
//! **Exact checks** (every input, tier and reference alike): the same `Ok`/`Err` and error for
//! every call; on an error nothing written (outputs, gradient, in-place logits); a failing
//! prelude forward means a failing backward (its checks are a subset); ignored rows have `logp
//! = 0`, entropy 0 and an all-zero gradient row; a row whose (capped) logits hold a NaN, or (no
//! cap) a `+inf` or only `-inf`, has NaN `logp`, entropy and `lse` (ignored rows too for `lse`)
//! and an all-NaN gradient row, in the fused call and in the backward from its NaN `lse`; any
//! other row has no NaN `logp`, entropy or `lse`; without a cap a `-inf` token logit gives
//! `logp = -inf`, and (inside the domain below) a `-inf` logit other than the token's a
//! gradient of exactly 0; in-place results are bit for bit the out-of-place ones of the same
//! tier, and the `logp`, entropy and `lse` of the fused call bit for bit those of
//! `token_logprobs` with the same outputs (NaN taken equal to any NaN, as in [`crate::strided`];
//! an output still [`crate::UNWRITTEN`] where a value is due is an error).
//!
//! **Error model** of an f32 tier for one finite row of `n` logits (the tolerances below;
//! `u = 2^-24`; first order in every error; `p`, `d`, `ls` the f64 shadow's values). Every
//! tier and the reference share `it = 1 / T` rounded to f32, so only the kernel's f32 work
//! differs:
//!
//! * the cap: each capped logit within `dz` = 4 ULP of the cap of the f64 value (the kernels'
//!   `tanh`, as in [`crate::cross_entropy`]); so `m` moves by `dz`, each `d = (z - m) / T` by
//!   `dc = 2 dz it`, and `lse`, `z_t / T` by `dz it`;
//! * `d` is rounded twice in f32 (`2u |d|`), the exp adds `2^-22` relative (2 ULP), and
//!   `2^-125` absolute where it underflows (and where `d` is floored at -104: 0 against
//!   `e^d`); the f32 lane sums of `e` and of `d e` (blocks of at most 256 elements, then f64)
//!   add `20u` of their sums of magnitudes;
//! * hence `ls = ln s` within `dls = 2u E_p|d| + dc + 2^-22 + 20u + n 2^-117 / s`; `logp = d_t -
//!   ls` (f64, from the exact `z_t - m`) within `dc + dls`; `lse = m it + ls` within `dz it +
//!   dls`; `sum p d` within `dhd = 2u E_p|d| + dc + 2u E_p[d^2] + dc E_p|d| + (2^-22 + 20u +
//!   dls) E_p|d| + n 2^-117 / s`, and the entropy `ls - sum p d` within `dls + dhd`;
//! * the fused gradient `(g_l [k = t] - p_k (g_l + g_h (d_k - sum p d))) it` (times the chain
//!   factor `1 - (z_k / c)^2`): `p_k` within `2u |d_k| + dc + 2^-22 + dls` relative, the inner
//!   factor within `|g_h| (2u |d_k| + dc + dhd)` plus the f32 roundings of its coefficients,
//!   the product's and the fix's roundings (`u` each), the exp's underflow `2^-125 it (|g_l| +
//!   110 |g_h| + ...)`, and the chain factor within `4 dz / c + 8u`;
//! * the backward starts from the saved f32 `lse'` and entropy: `u_k = z_k it - lse'` in one
//!   f32 FMA, so `p_k` moves (relative) by `dz it + tol(lse) + u |u_k|` — the checked `lse`
//!   tolerance, which grows as `2^-22 |lse|` — and the inner factor `g_l + g_h (u_k + H)` by
//!   `|g_h| (dz it + tol(lse) + u |u_k| + tol(H))`, plus the same roundings as above.
//!
//! The reference's own f64 roundings count too: it forms the entropy gradient's `u_k + H` as
//! `(d_k - ls) + (ls - sum p d)`, which loses `d_k - sum p d` below `2^-53 ln s` (a row of
//! logits within `1e-34` of each other: the tiers, computing `d_k - sum p d` directly, are the
//! exact ones there), so the inner factor adds `|g_h| 2^-50 (|u_k| + ls + H + |m it|)`.
//! Every stored value (tier and reference) adds `2^-22` of its magnitude and `2^-148` absolute
//! (subnormal results), the coefficients' roundings `2^-142` absolute (subnormal `a`, `b`
//! times `|d| <= 104`), and the first-order sum is multiplied by `1.125`.
//!
//! **Domain** of the tolerance checks: valid options with `T` in `[1e-3, 1e3]`; without a cap
//! every logit `-inf` or of magnitude below `1e30` (with a cap any logit); for the entropy and
//! every gradient the cap's error in the linear regime, `dc <= 2^-6`; for the gradients every
//! upstream gradient of the row finite and below `1e3` in magnitude; for the backward also `dz
//! it + tol(lse) <= 2^-6` (so `|lse| <~ 2^16`: past it the saved f32 `lse` alone moves `p` by
//! more than 1.5 %). Outside it only the exact checks apply: the contract says nothing about f32
//! overflow of `(z - m) / T`, and a backward from an `lse` of `1e6` cannot be accurate.

use softmax_kernels::{
    Error, Kernels, Label, TokenGrads, TokenLogprobOptions, TokenLogprobOutputs, TokenSaved,
};

use crate::cross_entropy::{ignore_index, label_value, FromWide};
use crate::input::{exact, perturb, split, Fill, Win, Words};
use crate::{close, pow2, reference, same_outcome, tier, unchanged, Report, UNWRITTEN};

crate::header! {
    /// The token target's header.
    pub struct TokHeader {
        /// The tier.
        pub tier: u8,
        /// Rows selector ([`shape`]).
        pub rows: u8,
        /// Columns selector ([`shape`]).
        pub cols: u16,
        /// `% 5`: forward, backward, backward in place, fwd_bwd, fwd_bwd in place.
        pub mode: u8,
        /// `% 8`: tokens of i64, i32, i16, u64, u32, u16, u8, usize.
        pub label: u8,
        /// The ignore index (`cross_entropy::ignore_index`).
        pub ignore: u8,
        /// A free ignore index.
        pub ignore_val: i16,
        /// Temperature selector ([`temperature`]).
        pub temp: u8,
        /// Its free bits.
        pub temp_bits: u32,
        /// Soft-cap selector ([`softcap`]).
        pub softcap: u8,
        /// Its free bits.
        pub softcap_bits: u32,
        /// Bit 0: the entropy output; bit 1: the `lse` output (forward, fused); bit 2:
        /// `grads.logp`; bit 3: `grads.entropy`; bit 4 (backward): the saved entropy is given
        /// unless `grads.entropy` is (so set with bit 3: `MissingOutput`).
        pub outputs: u8,
        /// Length perturbation of one per-row buffer (`(out_len >> 3) % 7` picks which: logp,
        /// entropy, lse, grads.logp, grads.entropy, saved.lse, saved.entropy).
        pub out_len: u8,
        /// See `out_len`.
        pub out_delta: i8,
        /// Length perturbation of the logits.
        pub logits_len: u8,
        /// See `logits_len`.
        pub logits_delta: i8,
        /// Length perturbation of the out-of-place gradient.
        pub grad_len: u8,
        /// See `grad_len`.
        pub grad_delta: i8,
        /// Length perturbation of the tokens.
        pub tokens_len: u8,
        /// See `tokens_len`.
        pub tokens_delta: i8,
        /// `% 4`: no mask; every third logit `-inf` (never the token's); every logit but the
        /// token's `-inf`; every even-indexed logit `-inf` (the token's too).
        pub mask: u8,
        /// `% 4`: no offset; `+1e3` on every logit; `+1e3` on odd rows; `-1e3` on every logit.
        pub offset: u8,
        /// The logits' window.
        pub xwin: Win,
        /// The upstream gradients' window.
        pub gwin: Win,
        /// Words past the input.
        pub fill: Fill,
    }
}

/// A `[rows, cols]` shape: `rows_sel % 13` rows; `cols_sel == 0` gives 0 columns (an error),
/// bit 15 clear `1..=300` columns, set `1..=4100`; at most 40 000 floats (rows dropped).
pub fn shape(rows_sel: u8, cols_sel: u16) -> (usize, usize) {
    let rows = rows_sel as usize % 13;
    if cols_sel == 0 {
        return (rows, 0);
    }
    let cols = if cols_sel & 0x8000 == 0 {
        1 + cols_sel as usize % 300
    } else {
        1 + (cols_sel & 0x7FFF) as usize % 4100
    };
    (rows.min(40_000 / cols), cols)
}

/// The columns selector of [`shape`] for `cols` in `1..=4100`.
pub fn cols_sel(cols: usize) -> u16 {
    assert!((1..=4100).contains(&cols));
    if cols <= 300 {
        (cols - 1) as u16
    } else {
        0x8000 | (cols - 1) as u16
    }
}

/// The temperatures of `sel % 8 == 6`.
pub const SPECIAL_TEMPS: [f32; 16] = [
    0.0,
    -0.0,
    -1.0,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MIN_POSITIVE,
    f32::MIN_POSITIVE / 2.0,
    1e-45,
    f32::MAX,
    1e-3,
    1e3,
    1e-30,
    1e30,
    1.0 / 1024.0,
    0.999_999_9,
];

/// The temperature: mostly 1, else 0.5 .. 2, log-uniform in `[1e-3, 1e3]`, raw bits (mostly
/// invalid or outside the domain), a special value ([`SPECIAL_TEMPS`]) or `2^-10 ..= 2^10`.
pub fn temperature(sel: u8, bits: u32) -> f32 {
    match sel % 8 {
        0..=2 => 1.0,
        3 => [0.5, 2.0, 0.7, 1.5][bits as usize % 4],
        4 => 10f64.powf((bits % 6001) as f64 / 1000.0 - 3.0) as f32,
        5 => f32::from_bits(bits),
        6 => SPECIAL_TEMPS[bits as usize % 16],
        _ => pow2((bits % 21) as i32 - 10) as f32,
    }
}

/// The soft-caps of `sel % 8 == 7`.
pub const SPECIAL_CAPS: [f32; 12] = [
    0.0,
    -0.0,
    -1.0,
    f32::INFINITY,
    f32::NAN,
    1e-45,
    f32::MAX,
    1e-3,
    f32::MIN_POSITIVE,
    f32::MIN_POSITIVE / 2.0,
    1e30,
    5.0,
];

/// The soft-cap: mostly none, else 30, `2^-20 ..= 2^29`, raw bits or a special value
/// ([`SPECIAL_CAPS`]).
pub fn softcap(sel: u8, bits: u32) -> Option<f32> {
    match sel % 8 {
        0..=3 => None,
        4 => Some(30.0),
        5 => Some(pow2((bits % 50) as i32 - 20) as f32),
        6 => Some(f32::from_bits(bits)),
        _ => Some(SPECIAL_CAPS[bits as usize % 12]),
    }
}

const UNW: f32 = f32::from_bits(UNWRITTEN);

/// The forward's per-row outputs of one call.
#[derive(Clone, Debug)]
struct Outs {
    logp: Vec<f32>,
    entropy: Option<Vec<f32>>,
    lse: Option<Vec<f32>>,
}

impl Outs {
    /// Outputs of these lengths, every entry [`UNWRITTEN`].
    fn blank(l: OutLens) -> Outs {
        let b = |n: usize| exact(&vec![UNW; n]);
        Outs {
            logp: b(l.logp),
            entropy: l.entropy.map(b),
            lse: l.lse.map(b),
        }
    }

    fn outputs(&mut self) -> TokenLogprobOutputs<'_> {
        let mut o = TokenLogprobOutputs::new(&mut self.logp);
        if let Some(h) = &mut self.entropy {
            o = o.entropy(h);
        }
        if let Some(l) = &mut self.lse {
            o = o.lse(l);
        }
        o
    }

    /// Every buffer, named.
    fn all(&self) -> Vec<(&'static str, &[f32])> {
        let mut v = vec![("logp", &self.logp[..])];
        if let Some(h) = &self.entropy {
            v.push(("entropy", h));
        }
        if let Some(l) = &self.lse {
            v.push(("lse", l));
        }
        v
    }
}

/// The lengths of a call's outputs (`None`: not asked for).
#[derive(Clone, Copy, Debug)]
struct OutLens {
    logp: usize,
    entropy: Option<usize>,
    lse: Option<usize>,
}

/// The modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Forward,
    Backward,
    BackwardInPlace,
    FwdBwd,
    FwdBwdInPlace,
}

impl Mode {
    fn of(sel: u8) -> Mode {
        [
            Mode::Forward,
            Mode::Backward,
            Mode::BackwardInPlace,
            Mode::FwdBwd,
            Mode::FwdBwdInPlace,
        ][sel as usize % 5]
    }

    fn backward(self) -> bool {
        matches!(self, Mode::Backward | Mode::BackwardInPlace)
    }

    fn in_place(self) -> bool {
        matches!(self, Mode::BackwardInPlace | Mode::FwdBwdInPlace)
    }
}

/// Everything a call takes.
struct Case<'a, L: Label> {
    x: &'a [f32],
    tokens: &'a [L],
    cols: usize,
    opts: TokenLogprobOptions,
    mode: Mode,
    /// The call's outputs (forward, fused).
    out: OutLens,
    /// The prelude's outputs (backward): `xl / cols` rows (what a valid call needs), entropy
    /// when the saved entropy is given.
    pre: OutLens,
    g_logp: Option<&'a [f32]>,
    g_entropy: Option<&'a [f32]>,
    /// Backward: the saved `lse` length, the saved entropy's (`None`: not given).
    saved_lse: usize,
    saved_entropy: Option<usize>,
    /// The out-of-place gradient's length.
    grad_len: usize,
}

/// One tier's results.
struct Run {
    /// The call under test: the forward, the backward, or the fused call.
    res: Result<(), Error>,
    /// Its outputs (forward, fused) or the prelude's (backward).
    out: Outs,
    /// The gradient: `dlogits`, or the logits in place; empty for the forward.
    grad: Vec<f32>,
    /// Backward: the prelude's result.
    pre: Option<Result<(), Error>>,
    /// In place: the out-of-place call with the same arguments (result, gradient, outputs).
    alt: Option<(Result<(), Error>, Vec<f32>, Outs)>,
    /// Fused: `token_logprobs` with the same outputs (result, outputs).
    fwd: Option<(Result<(), Error>, Outs)>,
}

/// `v` resized to `n` (0.0 past its end), or NaN when the prelude failed.
fn resized(v: Option<&Vec<f32>>, ok: bool, n: usize) -> Vec<f32> {
    let mut out: Vec<f32> = match (ok, v) {
        (true, Some(v)) => v.iter().copied().take(n).collect(),
        _ => Vec::new(),
    };
    let fill = if ok { 0.0 } else { f32::NAN };
    out.resize(n, fill);
    exact(&out)
}

fn run<L: Label>(k: &Kernels, c: &Case<'_, L>) -> Run {
    let grads = TokenGrads {
        logp: c.g_logp,
        entropy: c.g_entropy,
    };
    let (x, tok, cols, o) = (c.x, c.tokens, c.cols, &c.opts);
    match c.mode {
        Mode::Forward => {
            let mut out = Outs::blank(c.out);
            let res = k.token_logprobs(x, tok, cols, o, out.outputs());
            Run {
                res,
                out,
                grad: Vec::new(),
                pre: None,
                alt: None,
                fwd: None,
            }
        }
        Mode::Backward | Mode::BackwardInPlace => {
            let mut out = Outs::blank(c.pre);
            let pre = k.token_logprobs(x, tok, cols, o, out.outputs());
            let lse = resized(out.lse.as_ref(), pre.is_ok(), c.saved_lse);
            let h = c
                .saved_entropy
                .map(|n| resized(out.entropy.as_ref(), pre.is_ok(), n));
            let saved = TokenSaved {
                lse: &lse,
                entropy: h.as_deref(),
            };
            let mut g = exact(&vec![UNW; c.grad_len]);
            if c.mode == Mode::Backward {
                let res = k.token_logprobs_backward(x, tok, cols, o, saved, grads, &mut g);
                Run {
                    res,
                    out,
                    grad: g,
                    pre: Some(pre),
                    alt: None,
                    fwd: None,
                }
            } else {
                let mut z = exact(x);
                let res = k.token_logprobs_backward_inplace(&mut z, tok, cols, o, saved, grads);
                let mut g2 = exact(&vec![UNW; x.len()]);
                let r2 = k.token_logprobs_backward(x, tok, cols, o, saved, grads, &mut g2);
                let blank = Outs::blank(c.pre);
                Run {
                    res,
                    out,
                    grad: z,
                    pre: Some(pre),
                    alt: Some((r2, g2, blank)),
                    fwd: None,
                }
            }
        }
        Mode::FwdBwd | Mode::FwdBwdInPlace => {
            let mut out = Outs::blank(c.out);
            let (res, grad, alt) = if c.mode == Mode::FwdBwd {
                let mut g = exact(&vec![UNW; c.grad_len]);
                let res = k.token_logprobs_fwd_bwd(x, tok, cols, o, grads, out.outputs(), &mut g);
                (res, g, None)
            } else {
                let mut z = exact(x);
                let res =
                    k.token_logprobs_fwd_bwd_inplace(&mut z, tok, cols, o, grads, out.outputs());
                let mut o2 = Outs::blank(c.out);
                let mut g2 = exact(&vec![UNW; x.len()]);
                let r2 = k.token_logprobs_fwd_bwd(x, tok, cols, o, grads, o2.outputs(), &mut g2);
                (res, z, Some((r2, g2, o2)))
            };
            let mut o3 = Outs::blank(c.out);
            let r3 = k.token_logprobs(x, tok, cols, o, o3.outputs());
            Run {
                res,
                out,
                grad,
                pre: None,
                alt,
                fwd: Some((r3, o3)),
            }
        }
    }
}

/// The checker (see the module docs).
pub fn check(data: &[u8]) -> Result<(), String> {
    let (h, rest) = split::<TokHeader>(data);
    let mut words = Words::new(rest, h.fill);
    let (rows, cols) = shape(h.rows, h.cols);
    match h.label % 8 {
        0 => typed::<i64>(&h, &mut words, rows, cols),
        1 => typed::<i32>(&h, &mut words, rows, cols),
        2 => typed::<i16>(&h, &mut words, rows, cols),
        3 => typed::<u64>(&h, &mut words, rows, cols),
        4 => typed::<u32>(&h, &mut words, rows, cols),
        5 => typed::<u16>(&h, &mut words, rows, cols),
        6 => typed::<u8>(&h, &mut words, rows, cols),
        _ => typed::<usize>(&h, &mut words, rows, cols),
    }
}

/// The class of token `l` (`None`: ignored), or `Err` for an invalid one.
fn class_of<L: Label>(l: L, cols: usize, ignore: Option<i64>) -> Result<Option<usize>, ()> {
    let v = l.to_i128();
    if ignore.is_some_and(|i| i as i128 == v) {
        Ok(None)
    } else if v >= 0 && v < cols as i128 {
        Ok(Some(v as usize))
    } else {
        Err(())
    }
}

/// Applies the header's mask and offset to the full rows of `x`.
fn shape_logits<L: Label>(
    x: &mut [f32],
    cols: usize,
    tokens: &[L],
    ignore: Option<i64>,
    mask: u8,
    offset: u8,
) {
    if cols == 0 {
        return;
    }
    for (r, row) in x.chunks_exact_mut(cols).enumerate() {
        let t = tokens
            .get(r)
            .and_then(|&l| class_of(l, cols, ignore).ok().flatten());
        for (j, v) in row.iter_mut().enumerate() {
            let masked = match mask % 4 {
                1 => j % 3 == 1 && Some(j) != t,
                2 => Some(j) != t,
                3 => j % 2 == 0,
                _ => false,
            };
            if masked {
                *v = f32::NEG_INFINITY;
            }
            match offset % 4 {
                1 => *v += 1e3,
                2 if r % 2 == 1 => *v += 1e3,
                3 => *v -= 1e3,
                _ => {}
            }
        }
    }
}

fn typed<L: FromWide>(
    h: &TokHeader,
    words: &mut Words,
    rows: usize,
    cols: usize,
) -> Result<(), String> {
    let k = tier(h.tier);
    let r = reference();
    let mode = Mode::of(h.mode);
    let n = rows * cols;
    let xl = perturb(n, h.logits_len, h.logits_delta);
    let mut x = words.floats(xl, h.xwin);
    let ignore = ignore_index(h.ignore, h.ignore_val, cols);
    let tl = perturb(rows, h.tokens_len, h.tokens_delta);
    let tokens: Vec<L> = words
        .raw(tl)
        .into_iter()
        .map(|w| L::from_wide(label_value(w, cols, ignore)))
        .collect();
    let tokens = exact(&tokens);
    shape_logits(&mut x, cols, &tokens, ignore, h.mask, h.offset);
    let which = (h.out_len >> 3) % 7;
    let len = |i: u8| {
        if i == which {
            perturb(rows, h.out_len, h.out_delta)
        } else {
            rows
        }
    };
    let bits = h.outputs;
    let g_logp = (bits & 4 != 0).then(|| words.floats(len(3), h.gwin));
    let g_entropy = (bits & 8 != 0).then(|| words.floats(len(4), h.gwin));
    let mut opts = TokenLogprobOptions::default();
    opts.temperature = temperature(h.temp, h.temp_bits);
    opts.softcap = softcap(h.softcap, h.softcap_bits);
    opts.ignore_index = ignore;
    // The prelude's rows: those of the logits when they divide (so that its outputs fit a
    // valid call), else the nominal ones.
    let pre_rows = if cols > 0 && xl.is_multiple_of(cols) {
        xl / cols
    } else {
        rows
    };
    let saved_entropy = (g_entropy.is_some() != (bits & 16 != 0)).then(|| len(6));
    let case = Case {
        x: &x,
        tokens: &tokens,
        cols,
        opts,
        mode,
        out: OutLens {
            logp: len(0),
            entropy: (bits & 1 != 0).then(|| len(1)),
            lse: (bits & 2 != 0).then(|| len(2)),
        },
        pre: OutLens {
            logp: pre_rows,
            entropy: saved_entropy.map(|_| pre_rows),
            lse: Some(pre_rows),
        },
        g_logp: g_logp.as_deref(),
        g_entropy: g_entropy.as_deref(),
        saved_lse: len(5),
        saved_entropy,
        grad_len: perturb(xl, h.grad_len, h.grad_delta),
    };
    let t = run(k, &case);
    let rf = run(r, &case);
    compare(&case, &t, &rf).map_err(|e| {
        format!(
            "[{}] rows {rows} cols {cols} {mode:?} tokens {} {:?} opts {:?} grads logp {} \
             entropy {}\n{e}",
            k.isa(),
            std::any::type_name::<L>(),
            &tokens[..tokens.len().min(8)],
            case.opts,
            g_logp.is_some(),
            g_entropy.is_some(),
        )
    })
}

/// A float's bits with every NaN but [`UNWRITTEN`] made one (Rust leaves NaN bits unspecified).
fn key(v: f32) -> u32 {
    match v.to_bits() {
        b if v.is_nan() && b != UNWRITTEN => 0x7FC0_0000,
        b => b,
    }
}

/// `got` bit for bit as `want` (up to [`key`]).
fn same_bits(what: &str, got: &[f32], want: &[f32]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: lengths {} and {}", got.len(), want.len()));
    }
    match (0..got.len()).find(|&i| key(got[i]) != key(want[i])) {
        Some(i) => Err(format!(
            "{what}[{i}]: {:e} ({:#010x}) vs {:e} ({:#010x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        )),
        None => Ok(()),
    }
}

/// Two output sets bit for bit.
fn same_outs(what: &str, a: &Outs, b: &Outs) -> Result<(), String> {
    for ((name, x), (_, y)) in a.all().into_iter().zip(b.all()) {
        same_bits(&format!("{what} {name}"), x, y)?;
    }
    Ok(())
}

/// Nothing written: every output still [`UNWRITTEN`].
fn outs_unchanged(what: &str, o: &Outs) -> Result<(), String> {
    for (name, v) in o.all() {
        unchanged(&format!("{what} {name}"), &vec![UNW; v.len()], v)?;
    }
    Ok(())
}

/// The exact checks across one tier's calls, and nothing written where its call failed.
fn self_consistent<L: Label>(c: &Case<'_, L>, who: &str, run: &Run) -> Result<(), String> {
    if let Some(pre) = &run.pre {
        if pre.is_err() {
            outs_unchanged(&format!("{who} prelude"), &run.out)?;
            if run.res.is_ok() {
                return Err(format!(
                    "{who}: the prelude forward failed ({pre:?}) but the backward is Ok"
                ));
            }
        }
    }
    if let Some((r2, g2, o2)) = &run.alt {
        if *r2 != run.res {
            return Err(format!(
                "{who}: in place {:?}, out of place {r2:?}",
                run.res
            ));
        }
        if r2.is_ok() {
            same_bits(
                &format!("{who} in place vs out of place: grad"),
                &run.grad,
                g2,
            )?;
            if c.mode == Mode::FwdBwdInPlace {
                same_outs(&format!("{who} in place vs out of place:"), &run.out, o2)?;
            }
        } else {
            unchanged(
                &format!("{who} out-of-place grad"),
                &vec![UNW; g2.len()],
                g2,
            )?;
            outs_unchanged(&format!("{who} out of place"), o2)?;
        }
    }
    if let Some((r3, o3)) = &run.fwd {
        if run.res.is_ok() {
            if let Err(e) = r3 {
                return Err(format!("{who}: fused Ok, token_logprobs Err({e:?})"));
            }
            same_outs(&format!("{who} fused vs token_logprobs:"), &run.out, o3)?;
        } else if r3.is_err() {
            outs_unchanged(&format!("{who} token_logprobs"), o3)?;
        }
    }
    if run.res.is_err() {
        if !c.mode.backward() {
            outs_unchanged(who, &run.out)?;
        }
        match c.mode {
            Mode::Forward => {}
            Mode::Backward | Mode::FwdBwd => {
                unchanged(&format!("{who} grad"), &vec![UNW; c.grad_len], &run.grad)?
            }
            _ => unchanged(&format!("{who} logits (in place)"), c.x, &run.grad)?,
        }
    }
    Ok(())
}

fn compare<L: Label>(c: &Case<'_, L>, t: &Run, r: &Run) -> Result<(), String> {
    if let (Some(pt), Some(pr)) = (&t.pre, &r.pre) {
        same_outcome("prelude forward", pt, pr)?;
    }
    if let (Some((a, _, _)), Some((b, _, _))) = (&t.alt, &r.alt) {
        same_outcome("out-of-place call", a, b)?;
    }
    if let (Some((a, _)), Some((b, _))) = (&t.fwd, &r.fwd) {
        same_outcome("token_logprobs", a, b)?;
    }
    let ok = same_outcome("result", &t.res, &r.res)?;
    self_consistent(c, "tier", t)?;
    self_consistent(c, "reference", r)?;
    // The forward outputs: the call's (forward, fused) or the prelude's (backward, checked
    // whenever the prelude succeeded).
    let fwd_ok = match (&t.pre, &r.pre) {
        (Some(pt), Some(_)) => pt.is_ok(),
        _ => ok,
    };
    if !fwd_ok {
        return Ok(());
    }
    let cols = c.cols;
    let rows = c.x.len() / cols;
    let o = &c.opts;
    let cap = o.softcap;
    let it = (1.0f32 / o.temperature) as f64;
    let dz = cap.map_or(0.0, |c| 4.0 * ulp(c));
    let dc = 2.0 * dz * it;
    let t_ok = (1e-3..=1e3).contains(&o.temperature);
    let lin = dc <= pow2(-6);
    let has_grad = ok && c.mode != Mode::Forward;
    let mut rep = Report::default();
    for row in 0..rows {
        let xr = &c.x[row * cols..(row + 1) * cols];
        let class = class_of(c.tokens[row], cols, o.ignore_index)
            .unwrap_or_else(|_| unreachable!("validated tokens"));
        let sh = Shadow::new(xr, cap, it);
        let at = |what: &'static str| move || format!("row {row} {what}");
        let x_ok = cap.is_some() || xr.iter().all(|&v| v == f32::NEG_INFINITY || v.abs() < 1e30);
        let dom = t_ok && x_ok;
        let ft = FwdTol::new(&sh, class.unwrap_or(0), dz, it);
        for (name, zero_on_ignored) in [("logp", true), ("entropy", true), ("lse", false)] {
            let pick = |run: &Run| -> Option<f32> {
                match name {
                    "logp" => Some(run.out.logp[row]),
                    "entropy" => run.out.entropy.as_ref().map(|v| v[row]),
                    _ => run.out.lse.as_ref().map(|v| v[row]),
                }
            };
            let (Some(vt), Some(vr)) = (pick(t), pick(r)) else {
                continue;
            };
            for (who, v) in [("tier", vt), ("reference", vr)] {
                if v.to_bits() == UNWRITTEN {
                    rep.check(at(name), Err(format!("{who}: not written")));
                } else if class.is_none() && zero_on_ignored {
                    if v != 0.0 {
                        rep.check(at(name), Err(format!("{who}: ignored row, {v:e}")));
                    }
                } else if sh.finite() == v.is_nan() {
                    rep.check(
                        at(name),
                        Err(format!("{who}: {v:e}, row finite: {}", sh.finite())),
                    );
                } else if let (true, None, true, Some(tc)) =
                    (name == "logp", cap, sh.finite(), class)
                {
                    // A masked token logit gives -inf (always); a finite one a finite logp
                    // (inside the domain: outside, `(z_t - m) / T` may overflow f32).
                    let masked = xr[tc] == f32::NEG_INFINITY;
                    let ninf = v == f32::NEG_INFINITY;
                    if masked && !ninf || !masked && ninf && dom {
                        rep.check(
                            at(name),
                            Err(format!("{who}: {v:e}, token logit {:e}", xr[tc])),
                        );
                    }
                }
            }
            if class.is_none() && zero_on_ignored || !sh.finite() || !dom {
                continue;
            }
            let tol = match name {
                "logp" => ft.logp,
                "entropy" if lin => ft.entropy,
                "entropy" => continue,
                _ => ft.lse,
            };
            rep.check(at(name), close(vt, vr, out_tol(tol, vr)));
        }
        if !has_grad {
            continue;
        }
        let gt = &t.grad[row * cols..(row + 1) * cols];
        let gr = &r.grad[row * cols..(row + 1) * cols];
        let Some(tc) = class else {
            for (who, g) in [("tier", gt), ("reference", gr)] {
                if let Some(i) = g.iter().position(|&v| v != 0.0) {
                    rep.check(at("ignored grad"), Err(format!("{who} [{i}] = {:e}", g[i])));
                }
            }
            continue;
        };
        if !sh.finite() {
            for (who, g) in [("tier", gt), ("reference", gr)] {
                let bad = (0..cols).find(|&i| {
                    !g[i].is_nan()
                        || (g[i].to_bits() == UNWRITTEN
                            && !(c.mode.in_place() && xr[i].to_bits() == UNWRITTEN))
                });
                if let Some(i) = bad {
                    rep.check(at("NaN-row grad"), Err(format!("{who} [{i}] = {:e}", g[i])));
                }
            }
            continue;
        }
        let up = |v: Option<&[f32]>| v.map_or(0.0, |v| v[row]);
        let (gl, gh) = (up(c.g_logp), up(c.g_entropy));
        let g_ok = [gl, gh].iter().all(|v| v.abs() < 1e3);
        if !(dom && lin && g_ok) {
            continue;
        }
        if cap.is_none() {
            for (who, g) in [("tier", gt), ("reference", gr)] {
                let bad = (0..cols).find(|&i| i != tc && xr[i] == f32::NEG_INFINITY && g[i] != 0.0);
                if let Some(i) = bad {
                    rep.check(at("masked grad"), Err(format!("{who} [{i}] = {:e}", g[i])));
                }
            }
        }
        let tol = if c.mode.backward() {
            // The checked tolerances of the saved values (the entropy's only matters, and is
            // only given, with an entropy gradient).
            let saved = |v: &Option<Vec<f32>>| v.as_ref().map_or(f32::NAN, |v| v[row]);
            let tlse = out_tol(ft.lse, saved(&r.out.lse));
            let th = out_tol(ft.entropy, saved(&r.out.entropy));
            if dz * it + tlse > pow2(-6) {
                continue;
            }
            bwd_tol(&sh, tc, cap, dz, it, tlse, th, gl as f64, gh as f64)
        } else {
            fused_tol(&sh, tc, cap, dz, it, &ft, gl as f64, gh as f64)
        };
        for j in 0..cols {
            if let Err(e) = close(gt[j], gr[j], out_tol(tol[j], gr[j])) {
                rep.check(|| format!("row {row} grad[{j}] (x = {:e})", xr[j]), Err(e));
            }
        }
    }
    rep.finish(|| "token".into())
}

/// The first-order model times 1.125, plus the stored value's rounding (`2^-22` of it) and
/// `2^-148` (subnormal results).
fn out_tol(model: f64, want: f32) -> f64 {
    let w = if want.is_finite() {
        want.abs() as f64
    } else {
        0.0
    };
    1.125 * model + pow2(-22) * w + pow2(-148)
}

/// `ulp(x)`: the gap above `|x|`.
fn ulp(x: f32) -> f64 {
    let a = x.abs();
    if a == f32::MAX {
        return pow2(104);
    }
    (f32::from_bits(a.to_bits() + 1) - a) as f64
}

/// `u`: the f32 unit roundoff.
const U: f64 = 5.960_464_477_539_063e-8; // 2^-24

/// A row in f64, as the reference computes it.
struct Shadow {
    /// The (capped) logits.
    z: Vec<f64>,
    nan: bool,
    m: f64,
    /// `(z - m) it`, `p`, `ls = ln sum exp(d)` (finite rows).
    d: Vec<f64>,
    p: Vec<f64>,
    s: f64,
    ls: f64,
    /// `E_p |d|`, `E_p d^2`, the entropy.
    ea: f64,
    eb: f64,
    h: f64,
}

impl Shadow {
    fn new(x: &[f32], cap: Option<f32>, it: f64) -> Shadow {
        let z: Vec<f64> = x
            .iter()
            .map(|&v| match cap {
                Some(c) => c as f64 * (v as f64 / c as f64).tanh(),
                None => v as f64,
            })
            .collect();
        let nan = z.iter().any(|v| v.is_nan());
        let m = z
            .iter()
            .filter(|v| !v.is_nan())
            .fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let mut sh = Shadow {
            z,
            nan,
            m,
            d: Vec::new(),
            p: Vec::new(),
            s: f64::NAN,
            ls: f64::NAN,
            ea: 0.0,
            eb: 0.0,
            h: f64::NAN,
        };
        if !sh.finite() {
            return sh;
        }
        sh.d = sh.z.iter().map(|&v| (v - m) * it).collect();
        sh.s = sh.d.iter().map(|v| v.exp()).sum();
        sh.ls = sh.s.ln();
        sh.p = sh.d.iter().map(|&v| v.exp() / sh.s).collect();
        let (mut ea, mut eb, mut hd) = (0.0, 0.0, 0.0);
        for (&p, &d) in sh.p.iter().zip(&sh.d) {
            if p > 0.0 {
                ea += p * d.abs();
                eb += p * d * d;
                hd += p * d;
            }
        }
        (sh.ea, sh.eb, sh.h) = (ea, eb, sh.ls - hd);
        sh
    }

    /// Finite maximum and no NaN: the row has finite results.
    fn finite(&self) -> bool {
        !self.nan && self.m.is_finite()
    }
}

/// The first-order forward error bounds of a finite row (see the module docs).
struct FwdTol {
    logp: f64,
    entropy: f64,
    lse: f64,
    /// Of `ls` (equally the relative error of `s`) and of `sum p d`.
    dls: f64,
    dhd: f64,
}

impl FwdTol {
    fn new(sh: &Shadow, t: usize, dz: f64, it: f64) -> FwdTol {
        if !sh.finite() {
            return FwdTol {
                logp: 0.0,
                entropy: 0.0,
                lse: 0.0,
                dls: 0.0,
                dhd: 0.0,
            };
        }
        let n = sh.z.len() as f64;
        let dc = 2.0 * dz * it;
        let under = n * pow2(-117) / sh.s;
        let ed = 2.0 * U * sh.ea + dc;
        let sum_rel = pow2(-22) + 20.0 * U;
        let dls = ed + sum_rel + under;
        let dt = sh.d[t];
        let logp = dc + dls + pow2(-50) * (if dt.is_finite() { dt.abs() } else { 0.0 } + sh.ls);
        let lse = dz * it + dls + pow2(-50) * ((sh.m * it).abs() + sh.ls);
        let dhd = ed + 2.0 * U * sh.eb + dc * sh.ea + (sum_rel + dls) * sh.ea + under;
        FwdTol {
            logp,
            entropy: dls + dhd + pow2(-50) * sh.ls,
            lse,
            dls,
            dhd,
        }
    }
}

/// The chain factor's error with a cap (0 without).
fn dchain(cap: Option<f32>, dz: f64) -> f64 {
    cap.map_or(0.0, |c| 4.0 * dz / c as f64 + 8.0 * U)
}

/// Per-element bounds of the fused call's gradient (see the module docs).
#[allow(clippy::too_many_arguments)]
fn fused_tol(
    sh: &Shadow,
    t: usize,
    cap: Option<f32>,
    dz: f64,
    it: f64,
    ft: &FwdTol,
    gl: f64,
    gh: f64,
) -> Vec<f64> {
    let dc = 2.0 * dz * it;
    let hd = sh.ls - sh.h;
    let dch = dchain(cap, dz);
    (0..sh.z.len())
        .map(|k| {
            let (p, d) = (sh.p[k], sh.d[k]);
            let dk = if d.is_finite() { d.abs() } else { 0.0 };
            let inner = gl + gh * (d - hd);
            let inner = if p > 0.0 { inner.abs() } else { 0.0 };
            let dd = 2.0 * U * dk + dc;
            let term = p * it * inner;
            let fix = if k == t { (gl * it).abs() } else { 0.0 };
            // The reference's own f64 error: it forms `u + H` as `(d - ls) + (ls - sum p d)`.
            let e64 = pow2(-50) * (dk + sh.ls + sh.h.abs());
            let dterm = it
                * (p * inner * (dd + pow2(-22) + ft.dls + 2.0 * U)
                    + p * (gh.abs() * (dd + ft.dhd + e64)
                        + U * (gl.abs() + gh.abs() * (hd.abs() + dk))))
                + pow2(-125) * it * (gl.abs() + gh.abs() * (110.0 + hd.abs()))
                + U * fix
                + pow2(-142);
            dterm + (term + fix) * dch
        })
        .collect()
}

/// Per-element bounds of the backward's gradient (see the module docs): `tlse`, `th` bound
/// the difference of the tier's saved `lse` and entropy from the reference's.
#[allow(clippy::too_many_arguments)]
fn bwd_tol(
    sh: &Shadow,
    t: usize,
    cap: Option<f32>,
    dz: f64,
    it: f64,
    tlse: f64,
    th: f64,
    gl: f64,
    gh: f64,
) -> Vec<f64> {
    let dch = dchain(cap, dz);
    let h = sh.h;
    (0..sh.z.len())
        .map(|k| {
            let p = sh.p[k];
            let u = sh.d[k] - sh.ls;
            let uk = if u.is_finite() { u.abs() } else { 0.0 };
            let inner = gl + gh * (u + h);
            let inner = if p > 0.0 { inner.abs() } else { 0.0 };
            let du = dz * it + tlse + U * uk;
            // The reference's own f64 error in `u = z it - lse'` and `u + H`.
            let e64 = pow2(-50) * (uk + (sh.m * it).abs() + sh.ls + h.abs());
            let term = p * it * inner;
            let fix = if k == t { (gl * it).abs() } else { 0.0 };
            let dterm = it
                * (p * inner * (du + e64 + pow2(-22) + 2.0 * U)
                    + p * (gh.abs() * (du + th + e64) + U * ((gl + gh * h).abs() + gh.abs() * uk)))
                + pow2(-125) * it * (gl.abs() + gh.abs() * (110.0 + h.abs()))
                + U * fix
                + pow2(-142);
            dterm + (term + fix) * dch
        })
        .collect()
}
