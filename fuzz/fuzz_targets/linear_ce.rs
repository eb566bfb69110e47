//! Fuzz target `linear_ce`: the fused linear cross-entropy (`Kernels::linear_cross_entropy`)
//! against the unfused composition on the same tier, and every SIMD tier's fused result against
//! the scalar tier's.
//!
//! The input decodes (header [`LceHeader`], then data words as every target's, see
//! `fuzz_common::input`) to a small problem: `B` in `0..=9` samples, `C` in `1..=40` classes,
//! `D` in `0..=12` features, `W` dense or strided (its slice trimmed or not, its padding a NaN
//! that must never be read or written), an optional bias, occasional specials (`-inf`, `+inf`,
//! NaN or huge values in the bias, NaN or huge values in `A`, NaN in `W`), class labels of
//! several integer types (the ignore index, out-of-range labels) or probability targets; every
//! cross-entropy option (reduction, class weights, smoothing, z-loss, soft-cap, scale,
//! `row_scale`, the all-ignored policy, invalid values included); any subset of the outputs
//! `dA`, `dW`, `db`, `row_loss`, `lse`, `argmax`; `accumulate`; and a chunking (automatic, rows,
//! rows and classes, classes, a tiny byte budget that gives class labels class blocks, a zero
//! size, huge sizes). One buffer's length may be perturbed.
//!
//! For every tier of `Isa::available()` it runs the fused call and the composition
//! `linear_forward` -> `cross_entropy_with` (in place, same options and outputs) ->
//! `linear_backward_input` -> `weight_grad(1, G, A, beta)` -> `bias_grad(1, G, beta)`
//! (`beta = 1` with `accumulate`, else 0), and compares:
//!
//! * **Outcome.** Both `Ok`, or both the same `Err` — except where only the fused call has the
//!   check: a zero chunk size, or `chunk_classes` below `C` with probability targets
//!   (`InvalidOption` from the fused call whatever the composition says); a bad length of `A`, the bias, `dA`, `dW`
//!   or `db` (the fused call must fail, naming the buffer where it is one of the last four;
//!   the composition's own checks differ). A fused error writes nothing. Every tier returns
//!   the same outcome as the scalar tier.
//! * **Exact checks** (every `Ok`): `rows_used` and the denominator are identical; `correct`
//!   is the number of rows whose `argmax` output equals the label; every requested output is
//!   written (no [`fuzz_common::UNWRITTEN`] left); `dW`'s padding is untouched.
//! * **Values** (inside the domain below): loss, `loss_f64`, `dA`, `dW`, `db`, `row_loss`, `lse`
//!   within the sum of the two results' error bounds, NaN exactly where the other result has
//!   NaN, infinities equal; `argmax` within the logits' error of the row maximum (the first
//!   maximum, ignoring NaN, when the logits are exact).
//!
//! **Error model** (one result against exact arithmetic; `u = 2^-24`). Each logit `z = a.w + b`
//! is an f32 GEMM output: within `ez = (D + 3) 2^-23 M` of the exact value, `M = sum |a w| + |b|`
//! (the crate's GEMM model); a soft-cap adds `4 ulp(cap)` (the f32 tanh) and shrinks the rest.
//! With `d = max ez` over the row, `ln p_j = z_j - lse` moves by at most
//! `log(p_j + q_j e^(d + ez_j))` (and symmetrically), `q_j = 1 - p_j` (exact: the logit errors
//! shift `p_j` against the other classes only), and the cross-entropy kernel adds a relative
//! `2e-6 + 2u (|z_j - m| + 5)` (the CE target's model, with `|z - lse_block| <= |z - m| + ln C`
//! in class blocks, and the rounding of the blocks' f32 scale factor).
//! `ln sum exp(z - m)` gets `2e-6 max(1, ls) + 2u sum p |z - m|`. The gradient of a row
//! `G_j = g (A0 + 2 zl lse) p_j - g eps/C w_j - g (1 - eps) w_t [j = t]` (probability targets:
//! `g (sum w y' + 2 zl lse) p_j - g w_j y'_j`) carries those errors times its coefficients,
//! `2^-22` of its terms (the f32 roundings of the coefficients and the result), and under a
//! soft-cap the chain factor's `2 ez / cap`. `dA = G W`, `dW = beta dW + G^T A` and `db` are
//! GEMM outputs of the perturbed `G`: `sum |dG| |W|` plus `(2k + 6) 2^-23` of their terms'
//! magnitudes (`k` terms, the chunks' partial sums and `beta = 1` additions included), plus
//! `(k + 2) 2^-147` for subnormal products. The loss: `-ln p_t` and the smoothing, z-loss and
//! probability terms from the same bounds, `2^-22` of their magnitudes (f32 intermediate
//! roundings), `1e-14` of them (f64 sums in another association), and the CE target's
//! underflow term.
//!
//! **Domain** (where values are compared): `A` and `W` hold no infinity; every logit's `M`, the
//! gradient coefficients and terms, and every GEMM output's sum of magnitudes are below
//! `2^110`; class weights, probability targets and (with `accumulate`) the initial `dW`, `db`
//! are finite; no `-inf` logit meets a probability-target term `w_c y'_c` that f32 flushes
//! (below `2^-120`: `0 * inf` is NaN in f32, `+inf` in f64). Outside it (`f32::MAX` inputs,
//! `inf * 0`, a `row_scale` of `1e30` on `1e30` logits) f32 may overflow or underflow where the
//! exact value does not, and only the outcome and the exact checks apply.
//!
//! **Regressions** (`regress-*` inputs and the `class-block-*` seeds): two bugs this target
//! found in the class-chunked mode, both fixed: the argmax of a row ignored a class block
//! holding a NaN or `+inf`, and the probabilities carried an extra relative error of about
//! `|m| 2^-52` (`m` the row maximum) from absolute f64 logsumexps.
//!
//! Under cargo-fuzz (`cfg(fuzzing)`) this is the libFuzzer target; built without it (stable
//! `cargo build`), it is a small program that replays the files named on its command line.
//! `fuzz/tests/corpus.rs` and `fuzz/examples/` include this file as a module (`check`,
//! [`LceHeader`] and the seeds in [`seeds`]).
#![cfg_attr(fuzzing, no_main)]

use fuzz_common::cross_entropy::{ignore_index, label_value, FromWide, OptionBits};
use fuzz_common::input::{encode_words, exact, perturb, split, Fill, Win, Words};
use fuzz_common::seeds::Seed;
use fuzz_common::{close, close64, has_unwritten, pow2, unchanged, Report, UNWRITTEN};
use softmax_kernels::{
    AllIgnored, CrossEntropyOptions, CrossEntropyOutputs, CrossEntropyStats, Error, Isa, Kernels,
    Label, LinearCeOptions, LinearCeOutputs, Logits, MatrixLayout, Reduction, Targets,
};

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_common::run_or_panic("linear_ce", check, data);
});

/// Without libFuzzer: replays the input files named on the command line through [`check`]
/// (`-v`: with a summary of each case).
#[cfg(not(fuzzing))]
#[allow(dead_code)]
fn main() {
    let mut bad = 0;
    let verbose = std::env::args().any(|a| a == "-v");
    for f in std::env::args().skip(1).filter(|a| a != "-v") {
        let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
        let res = check(&data);
        if verbose {
            println!("{f}: {}", SUMMARY.with(|s| s.borrow().clone()));
        }
        match res {
            Ok(()) => println!("{f}: ok"),
            Err(e) => {
                bad += 1;
                println!("{f}: DIVERGENCE\n{e}");
            }
        }
    }
    std::process::exit(if bad == 0 { 0 } else { 1 });
}

fuzz_common::header! {
    /// The linear cross-entropy target's header.
    pub struct LceHeader {
        /// `B = b % 10`.
        pub b: u8,
        /// `C = 1 + c % 40`.
        pub c: u8,
        /// `D = d % 13`; `d >= 0xF8` ([`WIDE_D`]): `D = 0` and `C` from [`wide_classes`]
        /// (`d & 7` and the first two data words) instead of `c`, up to `2^62`: above
        /// `MAX_CLASSES` every tier must return `TooManyClasses` quickly (see
        /// [`too_many_classes`]), at or below it the case runs as any other when `B * C` and
        /// `C` are at most [`WIDE_WORK`], else it is skipped.
        pub d: u8,
        /// `% 8`: 0..=4 `ld = D`; 5, 6 `D + 1 + (ld >> 3) % 5`; 7 `D - 1` (an error; `D + 1`
        /// for `D = 0`).
        pub ld: u8,
        /// Bit 0: `W`'s slice leaves out the last row's padding; bit 1: `dW`'s does.
        pub trim: u8,
        /// Bit 0: a bias.
        pub bias: u8,
        /// `% 16`: 0..=7 none; 8 bias `-inf`; 9 bias NaN; 10 bias `+inf`; 11 bias `+-1e30`;
        /// 12 NaN in `A`; 13 a huge value in `A`; 14 NaN in `W`; 15 an infinity in `A`.
        pub special: u8,
        /// Where the special goes (modulo the buffer's length).
        pub special_pos: u16,
        /// `% 8`: labels of i64 (0..=2), i32, u8, usize, u64; 7: probability targets.
        pub target: u8,
        /// `% 8`: the ignore index (see `fuzz_common::cross_entropy::ignore_index`).
        pub ignore: u8,
        /// A free ignore index.
        pub ignore_val: i16,
        /// `% 3`: Mean, Sum, None.
        pub reduction: u8,
        /// Bit 0: class weights.
        pub weight: u8,
        /// Label smoothing selector.
        pub smoothing: u8,
        /// Its free bits.
        pub smoothing_bits: u32,
        /// z-loss selector.
        pub z_loss: u8,
        /// Its free bits.
        pub z_loss_bits: u32,
        /// Soft-cap selector.
        pub softcap: u8,
        /// Its free bits.
        pub softcap_bits: u32,
        /// Bit 0: `AllIgnored::Zero`.
        pub all_ignored: u8,
        /// Upstream scale selector.
        pub scale: u8,
        /// Its free bits.
        pub scale_bits: u32,
        /// `% 4 >= 2`: a `row_scale` (with `Reduction::None`, or any reduction if bit 7).
        pub row_scale: u8,
        /// Bit 0 `dA`, 1 `dW`, 2 `db`, 3 `row_loss`, 4 `lse`, 5 `argmax`; bit 7: no `row_loss`
        /// even with `Reduction::None` (an error).
        pub outputs: u8,
        /// Bit 0: `accumulate`.
        pub accumulate: u8,
        /// `% 8`: 0, 1 automatic; 2 `chunk_rows`; 3 `chunk_rows` and `chunk_classes`;
        /// 4 `chunk_classes`; 5 a tiny `chunk_bytes`; 6 one size 0 (an error); 7 huge sizes.
        pub chunk: u8,
        /// Rows per chunk selector.
        pub chunk_rows: u8,
        /// Classes per block selector.
        pub chunk_classes: u8,
        /// Byte budget selector.
        pub chunk_bytes: u16,
        /// Bit 7: perturb one buffer's length, `((len >> 3) & 15) % 12` picks it (see [`Buf`]),
        /// the low bits as `fuzz_common::input::perturb`'s selector.
        pub len: u8,
        /// See `len`.
        pub len_delta: i8,
        /// Window of `A`.
        pub awin: Win,
        /// Window of `W`.
        pub wwin: Win,
        /// Window of the bias.
        pub bwin: Win,
        /// Window of the class weights.
        pub cwwin: Win,
        /// Window of the probability targets.
        pub ywin: Win,
        /// Window of `row_scale`.
        pub rswin: Win,
        /// Window of the initial `dW` and `db` (with `accumulate`).
        pub gwin: Win,
        /// Words past the input.
        pub fill: Fill,
    }
}

/// The buffers whose length can be perturbed, by `((len >> 3) & 15) % 12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buf {
    /// `A`.
    A,
    /// `W`.
    W,
    /// The bias.
    Bias,
    /// The targets (only with `D > 0`: with `D = 0` they give `B`).
    Targets,
    /// The class weights.
    Weight,
    /// `row_scale`.
    RowScale,
    /// `dA`.
    Da,
    /// `dW`.
    Dw,
    /// `db`.
    Db,
    /// `row_loss`.
    RowLoss,
    /// `lse`.
    Lse,
    /// `argmax`.
    Argmax,
}

impl Buf {
    /// In selector order.
    pub const ALL: [Buf; 12] = [
        Buf::A,
        Buf::W,
        Buf::Bias,
        Buf::Targets,
        Buf::Weight,
        Buf::RowScale,
        Buf::Da,
        Buf::Dw,
        Buf::Db,
        Buf::RowLoss,
        Buf::Lse,
        Buf::Argmax,
    ];
}

/// The padding of a strided `W` or `dW`: a quiet NaN with a payload no kernel produces.
pub const PAD: u32 = 0x7FC0_0BAD;

const UNW: f32 = f32::from_bits(UNWRITTEN);

thread_local! {
    /// A one-line summary of the last case checked on this thread (the replay program's `-v`).
    static SUMMARY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// `2^110`: the domain's bound on magnitudes (f32 overflows at `2^128`).
const LIM: f64 = 1.298_074_214_633_707e33;

/// The header's cross-entropy option fields.
fn option_bits(h: &LceHeader) -> OptionBits {
    OptionBits {
        smoothing: (h.smoothing, h.smoothing_bits),
        z_loss: (h.z_loss, h.z_loss_bits),
        softcap: (h.softcap, h.softcap_bits),
        all_ignored: h.all_ignored,
        scale: (h.scale, h.scale_bits),
    }
}

/// The fused call's options: `ce` with the decoded chunking (the struct is
/// `#[non_exhaustive]`: set on [`LinearCeOptions::new`]).
fn lce_options(
    ce: CrossEntropyOptions<'_>,
    (rows, classes, bytes): (Option<usize>, Option<usize>, usize),
    accumulate: bool,
) -> LinearCeOptions<'_> {
    let mut o = LinearCeOptions::new(ce);
    o.chunk_rows = rows;
    o.chunk_classes = classes;
    o.chunk_bytes = bytes;
    o.accumulate = accumulate;
    o
}

/// The chunking options from the header: `(chunk_rows, chunk_classes, chunk_bytes)`.
pub fn chunking(h: &LceHeader) -> (Option<usize>, Option<usize>, usize) {
    let def = softmax_kernels::tuning::DEFAULT_CHUNK_BYTES;
    let r = 1 + h.chunk_rows as usize % 10;
    let k = 1 + h.chunk_classes as usize % 41;
    match h.chunk % 8 {
        0 | 1 => (None, None, def),
        2 => (Some(r), None, def),
        3 => (Some(r), Some(k), def),
        4 => (None, Some(k), def),
        // 4 to 256 floats: below C * min(B, 96) floats, class blocks.
        5 => (None, None, 1 + h.chunk_bytes as usize % 1024),
        6 => match h.chunk_rows % 3 {
            0 => (Some(0), None, def),
            1 => (None, Some(0), def),
            _ => (None, None, 0),
        },
        _ => match h.chunk_rows % 4 {
            0 => (Some(usize::MAX), None, def),
            1 => (Some(usize::MAX), Some(usize::MAX), usize::MAX),
            2 => (None, Some(usize::MAX), usize::MAX),
            _ => (Some(r), None, 1 + h.chunk_bytes as usize % 64),
        },
    }
}

/// Whether the fused call works in class blocks: classes per block below `C`, given, or (no
/// size given, class labels) when the budget holds fewer than `min(B, ROW_MODE_MIN_ROWS)` whole
/// rows: then `Bc = budget / min(C, CLASS_BLOCK_MIN)` rows (at least 1, at most `B`) and
/// blocks of `budget / Bc` classes. Automatic chunking gives probability targets whole rows
/// whatever the budget (the documented chunk shape).
pub fn class_mode(
    (rows, classes, bytes): (Option<usize>, Option<usize>, usize),
    b: usize,
    c: usize,
    probs: bool,
) -> bool {
    use softmax_kernels::tuning::{CLASS_BLOCK_MIN, ROW_MODE_MIN_ROWS};
    let floats = (bytes / 4).max(1);
    let b1 = b.max(1);
    match (rows, classes) {
        (_, Some(k)) => k < c,
        (Some(_), None) => false,
        (None, None) => {
            if probs || floats / c >= ROW_MODE_MIN_ROWS.min(b1) {
                return false;
            }
            let bc = (floats / CLASS_BLOCK_MIN.min(c)).clamp(1, b1);
            (floats / bc).clamp(1, c) < c
        }
    }
}

/// A label from a data word: mostly a class, one in 16 the ignore index (when there is one),
/// one in 16 a special value of `label_value` (out of range, negative, wrapping, ...).
pub fn label_of(w: u32, c: usize, ignore: Option<i64>) -> i128 {
    match w >> 28 {
        0xE => ignore.map_or((w as usize % c) as i128, |i| i as i128),
        0xF => label_value(w | 0xC000_0000, c, ignore),
        _ => (w as usize % c) as i128,
    }
}

/// One call's results and output buffers.
struct Run {
    res: Result<CrossEntropyStats, Error>,
    da: Option<Vec<f32>>,
    dw: Option<Vec<f32>>,
    db: Option<Vec<f32>>,
    row_loss: Option<Vec<f32>>,
    lse: Option<Vec<f32>>,
    argmax: Option<Vec<u32>>,
}

/// Everything a call takes.
struct Case<'a, L: Label> {
    b: usize,
    c: usize,
    d: usize,
    layout: MatrixLayout,
    a: &'a [f32],
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    targets: Targets<'a, L>,
    opts: LinearCeOptions<'a>,
    da0: Option<Vec<f32>>,
    dw0: Option<Vec<f32>>,
    db0: Option<Vec<f32>>,
    row_loss: Option<usize>,
    lse: Option<usize>,
    argmax: Option<usize>,
}

impl<L: Label> Case<'_, L> {
    fn want_grad(&self) -> bool {
        self.da0.is_some() || self.dw0.is_some() || self.db0.is_some()
    }

    fn buffers(&self) -> Run {
        Run {
            res: Err(Error::ZeroDim { arg: "unset" }),
            da: self.da0.as_deref().map(exact),
            dw: self.dw0.as_deref().map(exact),
            db: self.db0.as_deref().map(exact),
            row_loss: self.row_loss.map(|n| exact(&vec![UNW; n])),
            lse: self.lse.map(|n| exact(&vec![UNW; n])),
            argmax: self.argmax.map(|n| exact(&vec![u32::MAX; n])),
        }
    }
}

/// The fused call.
fn fused<L: Label>(k: &Kernels, c: &Case<'_, L>) -> Run {
    let mut r = c.buffers();
    let mut out = LinearCeOutputs {
        da: r.da.as_deref_mut(),
        dw: r.dw.as_deref_mut(),
        db: r.db.as_deref_mut(),
        ce: CrossEntropyOutputs {
            row_loss: r.row_loss.as_deref_mut(),
            lse: r.lse.as_deref_mut(),
            argmax: r.argmax.as_deref_mut(),
        },
    };
    let res = k.linear_cross_entropy(c.a, c.w, c.layout, c.bias, c.targets, &c.opts, &mut out);
    r.res = res;
    r
}

/// The unfused composition on the same tier.
fn unfused<L: Label>(k: &Kernels, c: &Case<'_, L>) -> Run {
    let mut r = c.buffers();
    let beta = if c.opts.accumulate { 1.0 } else { 0.0 };
    let mut z = exact(&vec![UNW; c.b * c.c]);
    let res = (|| {
        k.linear_forward(c.a, c.w, c.layout, c.bias, &mut z)?;
        let mut out = CrossEntropyOutputs {
            row_loss: r.row_loss.as_deref_mut(),
            lse: r.lse.as_deref_mut(),
            argmax: r.argmax.as_deref_mut(),
        };
        let lg = if c.want_grad() {
            Logits::InPlace(&mut z)
        } else {
            Logits::Read(&z)
        };
        let st = k.cross_entropy_with(lg, c.targets, c.c, &c.opts.ce, &mut out)?;
        if let Some(da) = r.da.as_deref_mut() {
            k.linear_backward_input(&z, c.w, c.layout, da)?;
        }
        if let Some(dw) = r.dw.as_deref_mut() {
            k.weight_grad(1.0, &z, c.a, beta, dw, c.layout)?;
        }
        if let Some(db) = r.db.as_deref_mut() {
            k.bias_grad(1.0, &z, beta, db)?;
        }
        Ok(st)
    })();
    r.res = res;
    r
}

/// The checker (see the module docs).
pub fn check(data: &[u8]) -> Result<(), String> {
    let (h, rest) = split::<LceHeader>(data);
    let mut words = Words::new(rest, h.fill);
    match h.target % 8 {
        0..=2 => typed::<i64>(&h, &mut words, false),
        3 => typed::<i32>(&h, &mut words, false),
        4 => typed::<u8>(&h, &mut words, false),
        5 => typed::<usize>(&h, &mut words, false),
        6 => typed::<u64>(&h, &mut words, false),
        _ => typed::<i64>(&h, &mut words, true),
    }
}

/// `W`'s (or `dW`'s) slice length: `C * ld`, or `(C - 1) * ld + D` when trimmed.
fn matrix_len(c: usize, d: usize, ld: usize, trim: bool) -> usize {
    if trim {
        (c - 1) * ld + d
    } else {
        c * ld
    }
}

/// Sets the padding (columns `D..ld` of each row) to [`PAD`].
fn pad(v: &mut [f32], d: usize, ld: usize) {
    if ld > 0 {
        for (i, x) in v.iter_mut().enumerate() {
            if i % ld >= d {
                *x = f32::from_bits(PAD);
            }
        }
    }
}

/// `d >= WIDE_D` selects `D = 0` with a class count from [`wide_classes`] (see [`LceHeader`]).
pub const WIDE_D: u8 = 0xF8;

/// The largest `B * C` (and `C`) a `D = 0` case with a decoded class count runs with the full
/// comparison (the composition and the model hold several `[B, C]` and `C` buffers).
pub const WIDE_WORK: usize = 1 << 18;

/// How long a call that must fail with `TooManyClasses` may take (it checks before allocating
/// or computing anything, so microseconds; before the fix, `C = 2^40` ran for minutes).
pub const QUICK: std::time::Duration = std::time::Duration::from_secs(5);

/// The class count of a `d >= WIDE_D` header from the selector `d & 7` and the first two data
/// words (as they are, whatever the fill mode; 0 past the end of the input):
/// 0 just above `MAX_CLASSES` (`+1 ..= +16`), 1 at or just below it (`-15 ..= 0`), 2 a power of
/// two `2^0 ..= 2^62`, minus 1, exact or plus 1, 3 any 62-bit value (at least 1), 4..=7 up to
/// `2^(8 + w1 % 13)` (`2^20` at most: the full comparison when `B * C` is small).
pub fn wide_classes(sel: u8, w0: u32, w1: u32) -> usize {
    use softmax_kernels::MAX_CLASSES;
    match sel % 8 {
        0 => MAX_CLASSES + 1 + w0 as usize % 16,
        1 => MAX_CLASSES - w0 as usize % 16,
        2 => ((1usize << (w0 % 63)) + (w1 % 3) as usize)
            .saturating_sub(1)
            .max(1),
        3 => ((((w1 as u64) << 32 | w0 as u64) & ((1 << 62) - 1)) as usize).max(1),
        _ => 1 + w0 as usize % (1 << (8 + w1 % 13)),
    }
}

fn typed<L: FromWide>(h: &LceHeader, words: &mut Words, probs: bool) -> Result<(), String> {
    let b = h.b as usize % 10;
    let wide = h.d >= WIDE_D;
    let (c, d) = if wide {
        let w = words.take(2);
        (wide_classes(h.d, w[0], w[1]), 0)
    } else {
        (1 + h.c as usize % 40, h.d as usize % 13)
    };
    if c > softmax_kernels::MAX_CLASSES || (wide && c > WIDE_WORK && (b == 0 || probs)) {
        return wide_fused_only::<L>(h, words, b, c, probs);
    }
    if wide && (c > WIDE_WORK || b * c > WIDE_WORK) {
        // Too much work (or memory) for one fuzz iteration: skipped.
        return Ok(());
    }
    let ld = match h.ld % 8 {
        0..=4 => d,
        5 | 6 => d + 1 + (h.ld >> 3) as usize % 5,
        _ if d > 0 => d - 1,
        _ => 1,
    };
    let layout = MatrixLayout::new(c, d).with_ld(ld);
    let which = (h.len & 0x80 != 0).then(|| Buf::ALL[(h.len >> 3 & 0xF) as usize % 12]);
    let len_of = |buf: Buf, n: usize| {
        if which == Some(buf) && !(buf == Buf::Targets && d == 0) {
            perturb(n, h.len, h.len_delta)
        } else {
            n
        }
    };
    // Data, in this order: A, W, bias, targets, weights, row_scale, dW0, db0.
    let mut a = words.floats(len_of(Buf::A, b * d), h.awin);
    let w_ok_len = [matrix_len(c, d, ld, false), matrix_len(c, d, ld, true)];
    let mut w = words.floats(len_of(Buf::W, w_ok_len[(h.trim & 1) as usize]), h.wwin);
    pad(&mut w, d, ld);
    let mut bias = (h.bias & 1 != 0).then(|| words.floats(len_of(Buf::Bias, c), h.bwin));
    let ignore = ignore_index(h.ignore, h.ignore_val, c);
    let (labels, y): (Vec<L>, Vec<f32>) = if probs {
        (
            Vec::new(),
            words.floats(len_of(Buf::Targets, b * c), h.ywin),
        )
    } else {
        let l: Vec<L> = words
            .raw(len_of(Buf::Targets, b))
            .into_iter()
            .map(|w| L::from_wide(label_of(w, c, ignore)))
            .collect();
        (exact(&l), Vec::new())
    };
    let cweight = (h.weight & 1 != 0).then(|| words.floats(len_of(Buf::Weight, c), h.cwwin));
    let reduction = [Reduction::Mean, Reduction::Sum, Reduction::None][h.reduction as usize % 3];
    let row_scale = (h.row_scale % 4 >= 2
        && (reduction == Reduction::None || h.row_scale & 0x80 != 0))
        .then(|| words.floats(len_of(Buf::RowScale, b), h.rswin));
    let accumulate = h.accumulate & 1 != 0;
    let o = h.outputs;
    let dw_len = len_of(Buf::Dw, w_ok_len[(h.trim >> 1 & 1) as usize]);
    let (dw0, db0) = if accumulate {
        let mut dw = words.floats(dw_len, h.gwin);
        pad(&mut dw, d, ld);
        (dw, words.floats(len_of(Buf::Db, c), h.gwin))
    } else {
        let mut dw = vec![UNW; dw_len];
        pad(&mut dw, d, ld);
        (dw, vec![UNW; len_of(Buf::Db, c)])
    };
    // Specials.
    let pos = h.special_pos as usize;
    match h.special % 16 {
        8..=11 => {
            if let Some(bv) = bias.as_mut().filter(|v| !v.is_empty()) {
                let n = bv.len();
                bv[pos % n] = match h.special % 16 {
                    8 => f32::NEG_INFINITY,
                    9 => f32::NAN,
                    10 => f32::INFINITY,
                    _ if pos & 0x8000 != 0 => -1e30,
                    _ => 1e30,
                };
            }
        }
        12 | 13 | 15 if !a.is_empty() => {
            let n = a.len();
            a[pos % n] = match h.special % 16 {
                12 => f32::NAN,
                13 => [1e30, -1e20, 3e38, 1e15][pos >> 14],
                _ if pos & 0x8000 != 0 => f32::NEG_INFINITY,
                _ => f32::INFINITY,
            };
        }
        14 if d > 0 => {
            // A NaN in a row of W (not in the padding).
            let i = (pos % c) * ld + (pos >> 8) % d;
            if i < w.len() {
                w[i] = f32::NAN;
            }
        }
        _ => {}
    }
    let (chunk_rows, chunk_classes, chunk_bytes) = chunking(h);
    let ce = option_bits(h).options(reduction, cweight.as_deref(), ignore, row_scale.as_deref());
    let opts = lce_options(ce, (chunk_rows, chunk_classes, chunk_bytes), accumulate);
    let want_rl = o & 8 != 0 || (reduction == Reduction::None && o & 0x80 == 0);
    let case = Case {
        b,
        c,
        d,
        layout,
        a: &a,
        w: &w,
        bias: bias.as_deref(),
        targets: if probs {
            Targets::Probs(&y)
        } else {
            Targets::Classes(&labels)
        },
        opts,
        da0: (o & 1 != 0).then(|| vec![UNW; len_of(Buf::Da, b * d)]),
        dw0: (o & 2 != 0).then_some(dw0),
        db0: (o & 4 != 0).then_some(db0),
        row_loss: want_rl.then(|| len_of(Buf::RowLoss, b)),
        lse: (o & 16 != 0).then(|| len_of(Buf::Lse, b)),
        argmax: (o & 32 != 0).then(|| len_of(Buf::Argmax, b)),
    };
    let ctx = || {
        format!(
            "B {b} C {c} D {d} ld {ld} bias {} targets {} perturbed {which:?} outputs {o:#x} \
             chunks ({chunk_rows:?}, {chunk_classes:?}, {chunk_bytes}) accumulate {accumulate} \
             labels {:?}\nopts {:?}",
            bias.is_some(),
            if probs {
                "probs"
            } else {
                std::any::type_name::<L>()
            },
            &labels[..labels.len().min(10)],
            opts.ce,
        )
    };
    compare_all(&case, &labels, &y).map_err(|e| format!("{}\n{e}", ctx()))
}

/// `D = 0` with more than `MAX_CLASSES` classes, or more than [`WIDE_WORK`] and no rows (`B = 0`
/// or probability targets): only the fused call, on every tier. No buffer is sized by `C` (no
/// bias, class weights or `db`; probability targets with `B = 0`; `ld = 0`), the other options
/// and outputs as decoded, no length perturbed. Above `MAX_CLASSES` every tier must fail with
/// `TooManyClasses` (or the `InvalidOption` of a chunk size, which is checked first); at or
/// below it every tier must return the scalar tier's outcome (`Ok` with no rows used, or the
/// same error). An error writes nothing, and every call returns within [`QUICK`].
fn wide_fused_only<L: FromWide>(
    h: &LceHeader,
    words: &mut Words,
    b: usize,
    c: usize,
    probs: bool,
) -> Result<(), String> {
    use softmax_kernels::MAX_CLASSES;
    let b = if probs { 0 } else { b };
    let ignore = ignore_index(h.ignore, h.ignore_val, c);
    let labels: Vec<L> = if probs {
        Vec::new()
    } else {
        let l: Vec<L> = words
            .raw(b)
            .into_iter()
            .map(|w| L::from_wide(label_of(w, c, ignore)))
            .collect();
        exact(&l)
    };
    let y: Vec<f32> = Vec::new();
    let reduction = [Reduction::Mean, Reduction::Sum, Reduction::None][h.reduction as usize % 3];
    let row_scale = (h.row_scale % 4 >= 2
        && (reduction == Reduction::None || h.row_scale & 0x80 != 0))
        .then(|| words.floats(b, h.rswin));
    let (chunk_rows, chunk_classes, chunk_bytes) = chunking(h);
    let o = h.outputs;
    let ce = option_bits(h).options(reduction, None, ignore, row_scale.as_deref());
    let opts = lce_options(
        ce,
        (chunk_rows, chunk_classes, chunk_bytes),
        h.accumulate & 1 != 0,
    );
    let want_rl = o & 8 != 0 || (reduction == Reduction::None && o & 0x80 == 0);
    let case = Case {
        b,
        c,
        d: 0,
        layout: MatrixLayout::new(c, 0).with_ld(0),
        a: &[],
        w: &[],
        bias: None,
        targets: if probs {
            Targets::Probs(&y)
        } else {
            Targets::Classes(&labels)
        },
        opts,
        da0: (o & 1 != 0).then(Vec::new),
        dw0: (o & 2 != 0).then(Vec::new),
        db0: None,
        row_loss: want_rl.then_some(b),
        lse: (o & 16 != 0).then_some(b),
        argmax: (o & 32 != 0).then_some(b),
    };
    // The expected error, where the arguments decide it; else the scalar tier's outcome.
    let want: Option<Result<(), Error>> = match expectation(&case) {
        Expect::Same if c > MAX_CLASSES => Some(Err(Error::TooManyClasses {
            classes: c,
            max: MAX_CLASSES,
        })),
        Expect::Same => None,
        Expect::Option(name) => Some(Err(Error::InvalidOption {
            name,
            value: String::new(),
            expected: "",
        })),
        x => return Err(format!("linear_ce: C {c} D 0: the decoder made {x:?}")),
    };
    let same_err = |e: &Error, w: &Error| match (e, w) {
        (Error::InvalidOption { name: a, .. }, Error::InvalidOption { name: b, .. }) => a == b,
        _ => e == w,
    };
    let mut rep = Report::default();
    let mut scalar: Option<Result<CrossEntropyStats, Error>> = None;
    for isa in Isa::available() {
        let k = Kernels::for_isa(isa).expect("an available tier has a table");
        let t0 = std::time::Instant::now();
        let r = fused(k, &case);
        let took = t0.elapsed();
        let at = || {
            format!(
                "[{isa}] B {b} C {c} D 0 targets {} outputs {o:#x} chunks ({chunk_rows:?}, \
                 {chunk_classes:?}, {chunk_bytes}) opts {:?}",
                if probs {
                    "probs"
                } else {
                    std::any::type_name::<L>()
                },
                case.opts.ce
            )
        };
        let ok = match (&r.res, &want, &scalar) {
            (Err(e), Some(Err(w)), _) if same_err(e, w) => nothing_written(&case, &r),
            (got, Some(w), _) => Err(format!("{got:?}, expected {w:?}")),
            (got, None, None) => {
                // The scalar tier (first): no rows, so any `Ok` uses none.
                let ok = match got {
                    Ok(st) if st.rows_used != 0 => Err(format!("{st:?}: rows used")),
                    Ok(_) => Ok(()),
                    Err(_) => nothing_written(&case, &r),
                };
                scalar = Some(r.res.clone());
                ok
            }
            (got, None, Some(sr)) => match (got, sr) {
                (Ok(a), Ok(b))
                    if a.rows_used == b.rows_used
                        && a.loss.to_bits() == b.loss.to_bits()
                        && a.loss_f64.to_bits() == b.loss_f64.to_bits()
                        && a.denominator.to_bits() == b.denominator.to_bits()
                        && a.correct == b.correct =>
                {
                    Ok(())
                }
                (Err(a), Err(b)) if a == b => nothing_written(&case, &r),
                _ => Err(format!("{got:?}, scalar tier {sr:?}")),
            },
        };
        rep.check(at, ok);
        if took > QUICK {
            rep.check(
                at,
                Err(format!("took {took:?} to return (more than {QUICK:?})")),
            );
        }
    }
    SUMMARY.with(|x| *x.borrow_mut() = format!("B {b} C {c} D 0: expect {want:?}"));
    rep.finish(|| "linear_ce: D = 0, a wide C, the fused call only".into())
}

/// Which checks the fused call's own argument checks imply for this case.
#[derive(Debug)]
enum Expect {
    /// The same outcome as the composition.
    Same,
    /// `W`'s layout is bad: the same error from both (both check `W` first).
    SameError,
    /// A fused-only shape check fails (a bad length of `A`, the bias, `dA`, `dW` or `db`):
    /// an error, naming `name` if it is given.
    ShapeError(Option<&'static str>),
    /// This `InvalidOption` (by name) from the fused call.
    Option(&'static str),
}

fn arg_of(e: &Error) -> Option<&'static str> {
    match e {
        Error::NotMultiple { arg, .. }
        | Error::LengthMismatch { arg, .. }
        | Error::MatrixLength { arg, .. }
        | Error::LeadingDim { arg, .. }
        | Error::SizeOverflow { arg } => Some(arg),
        _ => None,
    }
}

fn expectation<L: Label>(c: &Case<'_, L>) -> Expect {
    let MatrixLayout { rows, cols, ld } = c.layout;
    let mat_ok = |n: usize| ld >= cols && (n == rows * ld || n == (rows - 1) * ld + cols);
    if !mat_ok(c.w.len()) {
        return Expect::SameError;
    }
    let bd = c.b * c.d;
    if c.a.len() != bd {
        return Expect::ShapeError(None);
    }
    if c.bias.is_some_and(|v| v.len() != c.c) {
        return Expect::ShapeError(Some("bias"));
    }
    if c.da0.as_ref().is_some_and(|v| v.len() != bd) {
        return Expect::ShapeError(Some("da"));
    }
    if c.dw0.as_ref().is_some_and(|v| !mat_ok(v.len())) {
        return Expect::ShapeError(Some("dw"));
    }
    if c.db0.as_ref().is_some_and(|v| v.len() != c.c) {
        return Expect::ShapeError(Some("db"));
    }
    let o = &c.opts;
    if o.chunk_rows == Some(0) {
        return Expect::Option("chunk_rows");
    }
    if o.chunk_classes == Some(0) {
        return Expect::Option("chunk_classes");
    }
    if o.chunk_bytes == 0 {
        return Expect::Option("chunk_bytes");
    }
    let chunks = (o.chunk_rows, o.chunk_classes, o.chunk_bytes);
    let probs = matches!(c.targets, Targets::Probs(_));
    if probs && class_mode(chunks, c.b, c.c, probs) {
        return Expect::Option("chunk_classes");
    }
    Expect::Same
}

/// Runs every tier and compares (see the module docs).
fn compare_all<L: FromWide>(c: &Case<'_, L>, labels: &[L], y: &[f32]) -> Result<(), String> {
    let expect = expectation(c);
    let tiers: Vec<&Kernels> = Isa::available()
        .into_iter()
        .map(|i| Kernels::for_isa(i).expect("an available tier has a table"))
        .collect();
    let runs: Vec<(Isa, Run, Run)> = tiers
        .iter()
        .map(|k| (k.isa(), fused(k, c), unfused(k, c)))
        .collect();
    let mut rep = Report::default();
    let mut bad = false;
    let mut note = |rep: &mut Report, at: &dyn Fn() -> String, r: Result<(), String>| {
        bad |= r.is_err();
        rep.check(at, r);
    };
    // Outcomes.
    for (isa, f, u) in &runs {
        let at = || format!("[{isa}] outcome");
        if let Err(e) = &f.res {
            note(&mut rep, &at, nothing_written(c, f));
            let ok = match &expect {
                Expect::Same | Expect::SameError => match &u.res {
                    Err(e2) if e2 == e => Ok(()),
                    other => Err(format!("fused Err({e:?}), composition {other:?}")),
                },
                Expect::ShapeError(None) => Ok(()),
                Expect::ShapeError(Some(name)) if arg_of(e) == Some(name) => Ok(()),
                Expect::Option(name) => match e {
                    Error::InvalidOption { name: n, .. } if n == name => Ok(()),
                    _ => Err(format!("fused Err({e:?}), expected InvalidOption({name})")),
                },
                x => Err(format!("fused Err({e:?}), expected {x:?}")),
            };
            note(&mut rep, &at, ok);
        } else {
            let ok = match (&expect, &u.res) {
                (Expect::Same, Ok(_)) => Ok(()),
                (x, ur) => Err(format!(
                    "fused Ok, expected {x:?} (composition {:?})",
                    ur.as_ref().err()
                )),
            };
            note(&mut rep, &at, ok);
        }
    }
    // Every tier's fused outcome is the scalar tier's.
    let (_, fs, _) = &runs[0];
    for (isa, f, _) in &runs[1..] {
        let ok = match (&f.res, &fs.res) {
            (Ok(_), Ok(_)) => Ok(()),
            (Err(a), Err(b)) if a == b => Ok(()),
            (a, b) => Err(format!(
                "{:?} vs scalar {:?}",
                a.as_ref().err(),
                b.as_ref().err()
            )),
        };
        note(&mut rep, &|| format!("[{isa}] fused outcome vs scalar"), ok);
    }
    let summary = |dom: Option<&str>| {
        let s = format!(
            "B {} C {} D {}, expect {expect:?}, scalar fused {:?}, in domain: {dom:?}",
            c.b,
            c.c,
            c.d,
            fs.res.as_ref().map(|s| s.loss)
        );
        SUMMARY.with(|x| *x.borrow_mut() = s);
    };
    if bad || fs.res.is_err() {
        summary(None);
        return rep.finish(|| "linear_ce: outcomes".into());
    }
    // Both Ok everywhere from here.
    let model = Model::new(c, labels, y);
    summary(Some(model.as_ref().err().copied().unwrap_or("yes")));
    let model = model.ok();
    for (isa, f, u) in &runs {
        rep.check(
            || format!("[{isa}] fused exact"),
            exact_checks(c, labels, f),
        );
        rep.check(
            || format!("[{isa}] composition exact"),
            exact_checks(c, labels, u),
        );
        if let Some(m) = &model {
            compare_values(
                &mut rep,
                &format!("[{isa}] fused vs composition"),
                c,
                m,
                f,
                u,
            );
        }
    }
    if let Some(m) = &model {
        for (isa, f, _) in &runs[1..] {
            compare_values(
                &mut rep,
                &format!("[{isa}] fused vs scalar fused"),
                c,
                m,
                f,
                fs,
            );
        }
    }
    rep.finish(|| format!("linear_ce: in domain: {}", model.is_some()))
}

/// Nothing of the fused call's outputs changed.
fn nothing_written<L: Label>(c: &Case<'_, L>, r: &Run) -> Result<(), String> {
    let pairs = [
        ("da", &c.da0, &r.da),
        ("dw", &c.dw0, &r.dw),
        ("db", &c.db0, &r.db),
    ];
    for (name, before, after) in pairs {
        if let (Some(b), Some(a)) = (before, after) {
            unchanged(name, b, a)?;
        }
    }
    for (name, o) in [("row_loss", &r.row_loss), ("lse", &r.lse)] {
        if let Some(o) = o {
            unchanged(name, &vec![UNW; o.len()], o)?;
        }
    }
    if let Some(am) = &r.argmax {
        if am.iter().any(|&v| v != u32::MAX) {
            return Err("argmax written on error".into());
        }
    }
    Ok(())
}

/// The checks that hold for every `Ok` result: padding, everything written, `correct`.
fn exact_checks<L: Label>(c: &Case<'_, L>, labels: &[L], r: &Run) -> Result<(), String> {
    let st = r.res.as_ref().map_err(|e| format!("{e:?}"))?;
    let (d, ld) = (c.d, c.layout.ld);
    if let Some(dw) = r.dw.as_ref().filter(|_| ld > 0) {
        if let Some(i) = (0..dw.len()).find(|&i| i % ld >= d && dw[i].to_bits() != PAD) {
            return Err(format!("dW padding [{i}] = {:e}", dw[i]));
        }
    }
    // Everything asked for is written (unless an input holds the UNWRITTEN bits itself).
    let inputs_unw = has_unwritten(c.a)
        || has_unwritten(c.w)
        || c.bias.is_some_and(has_unwritten)
        || matches!(c.targets, Targets::Probs(y) if has_unwritten(y))
        || c.opts.ce.weight.is_some_and(has_unwritten)
        || c.opts.ce.row_scale.is_some_and(has_unwritten);
    if !inputs_unw {
        let mut bufs: Vec<(&str, &[f32])> = Vec::new();
        if let Some(v) = &r.da {
            bufs.push(("da", v));
        }
        if !c.opts.accumulate {
            if let Some(v) = &r.dw {
                bufs.push(("dw", v));
            }
            if let Some(v) = &r.db {
                bufs.push(("db", v));
            }
        }
        if let Some(v) = &r.row_loss {
            bufs.push(("row_loss", v));
        }
        if let Some(v) = &r.lse {
            bufs.push(("lse", v));
        }
        for (name, v) in bufs {
            if let Some(i) = v.iter().position(|x| x.to_bits() == UNWRITTEN) {
                return Err(format!("{name}[{i}] not written"));
            }
        }
    }
    if let Some(am) = &r.argmax {
        if let Some(i) = am.iter().position(|&v| v as usize >= c.c) {
            return Err(format!("argmax[{i}] = {} out of range", am[i]));
        }
    }
    // correct: the rows whose argmax is their label.
    let want = match (&r.argmax, c.targets) {
        (Some(am), Targets::Classes(_)) => Some(
            (0..c.b)
                .filter(|&i| {
                    let v = labels[i].to_i128();
                    c.opts.ce.ignore_index.is_none_or(|x| x as i128 != v) && am[i] as i128 == v
                })
                .count(),
        ),
        _ => None,
    };
    if st.correct != want {
        return Err(format!(
            "correct {:?}, the argmax output says {want:?}",
            st.correct
        ));
    }
    Ok(())
}

/// What a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An ignored label: loss 0, gradient 0.
    Ignored,
    /// NaN in the (capped) logits, a `+inf` without a cap, or all `-inf`: NaN loss and
    /// gradient.
    Nan,
    /// A finite row.
    Finite,
}

/// A row's bounds (one result against exact arithmetic).
struct RowModel {
    kind: Kind,
    /// The (capped) logits in f64.
    z: Vec<f64>,
    /// The largest logit error of the row.
    dz: f64,
    /// The `lse` output's bound (finite rows).
    lse_tol: f64,
    /// The row loss's bound and magnitude (non-ignored finite rows).
    loss_tol: f64,
    loss_mag: f64,
}

/// The bounds of one call (one result against exact arithmetic).
struct Model {
    rows: Vec<RowModel>,
    /// The reduction's scale (`1 / denominator` for `Mean`).
    red: f64,
    /// `dA`, `[B, D]`; `dW`, `[C, D]` dense; `db`, `C`.
    da: Vec<f64>,
    dw: Vec<f64>,
    db: Vec<f64>,
}

/// `ln(e^a + e^b)`.
fn logaddexp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// For each `j`, `ln sum_{k != j} e^v_k`: directly for up to 64 values (the original
/// checker's arithmetic, bit for bit), else (the `D = 0` cases with a decoded `C`, up to
/// [`WIDE_WORK`] classes) in O(n) from prefix and suffix log-sums, within a few `n` f64 ulps
/// of the direct sum, far below every tolerance they feed.
fn others_lse(v: &[f64]) -> Vec<f64> {
    let n = v.len();
    if n <= 64 {
        return (0..n)
            .map(|j| logsumexp((0..n).filter(|&k| k != j).map(|k| v[k])))
            .collect();
    }
    // suf[j] = ln sum_{k >= j} e^v_k.
    let mut suf = vec![f64::NEG_INFINITY; n + 1];
    for j in (0..n).rev() {
        suf[j] = logaddexp(suf[j + 1], v[j]);
    }
    let mut pre = f64::NEG_INFINITY;
    (0..n)
        .map(|j| {
            let r = logaddexp(pre, suf[j + 1]);
            pre = logaddexp(pre, v[j]);
            r
        })
        .collect()
}

/// `ln sum e^v`.
fn logsumexp(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = v.clone().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY || m.is_nan() {
        return m;
    }
    m + v.map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// `ulp(x)`: the gap above `|x|`.
fn ulp(x: f32) -> f64 {
    let a = x.abs();
    if a == f32::MAX {
        return pow2(104);
    }
    (f32::from_bits(a.to_bits() + 1) - a) as f64
}

fn ok(v: f64) -> bool {
    v.is_finite() && v.abs() <= LIM
}

impl Model {
    /// The bounds, or why the case is outside the domain.
    fn new<L: Label>(c: &Case<'_, L>, labels: &[L], y: &[f32]) -> Result<Model, &'static str> {
        let (b, nc, d, ld) = (c.b, c.c, c.d, c.layout.ld);
        let o = &c.opts.ce;
        let u23 = pow2(-23);
        let wv = |j: usize, l: usize| c.w[j * ld + l];
        // A and W: no infinities.
        if c.a.iter().any(|v| v.is_infinite())
            || (0..nc).any(|j| (0..d).any(|l| wv(j, l).is_infinite()))
        {
            return Err("inf in A or W");
        }
        let cw: Vec<f64> = (0..nc)
            .map(|j| o.weight.map_or(1.0, |w| w[j] as f64))
            .collect();
        if !cw.iter().all(|&v| ok(v)) || !y.iter().all(|&v| ok(v as f64)) {
            return Err("class weights or targets");
        }
        for v in [&c.dw0, &c.db0].into_iter().flatten() {
            if c.opts.accumulate && v.iter().any(|x| x.is_infinite() || x.abs() as f64 > LIM) {
                return Err("initial dW/db");
            }
        }
        let cap = o.softcap;
        let dzcap = cap.map_or(0.0, |k| 4.0 * ulp(k));
        let eps = o.label_smoothing as f64;
        let cf = nc as f64;
        let zl = o.z_loss as f64;
        let wsum: f64 = cw.iter().sum();
        let wmax = 1.0 + cw.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let probs = matches!(c.targets, Targets::Probs(_));
        // The reduction's scale, as the plan computes it.
        let red = match o.reduction {
            Reduction::Mean if probs => 1.0 / b as f64,
            Reduction::Mean => {
                let den: f64 = (0..b)
                    .filter_map(|i| class(o.ignore_index, labels[i].to_i128()))
                    .map(|k| cw[k])
                    .sum();
                1.0 / den
            }
            _ => 1.0,
        };
        let mut rows = Vec::with_capacity(b);
        let mut gmag = vec![0.0f64; b * nc];
        let mut gtol = vec![0.0f64; b * nc];
        for i in 0..b {
            // Logits and their errors.
            let (mut z, mut ez) = (vec![0.0f64; nc], vec![0.0f64; nc]);
            for j in 0..nc {
                let (mut s, mut m) = (0.0f64, 0.0f64);
                for l in 0..d {
                    let p = c.a[i * d + l] as f64 * wv(j, l) as f64;
                    s += p;
                    if p.is_finite() {
                        m += p.abs();
                    }
                }
                let bj = c.bias.map_or(0.0, |bv| bv[j] as f64);
                s += bj;
                if bj.is_finite() {
                    m += bj.abs();
                }
                if m > LIM {
                    return Err("logit magnitude");
                }
                let e = if d == 0 || !s.is_finite() {
                    0.0
                } else {
                    (d as f64 + 3.0) * u23 * m + (d as f64 + 2.0) * pow2(-147)
                };
                (z[j], ez[j]) = match cap {
                    Some(k) => {
                        let k = k as f64;
                        (k * (s / k).tanh(), e + dzcap)
                    }
                    None => (s, e),
                };
            }
            let nan = z.iter().any(|v| v.is_nan());
            let m = z
                .iter()
                .filter(|v| !v.is_nan())
                .fold(f64::NEG_INFINITY, |a, &v| a.max(v));
            let dz = ez.iter().fold(0.0f64, |a, &v| a.max(v));
            let t = if probs {
                None
            } else {
                class(o.ignore_index, labels[i].to_i128())
            };
            let kind = if !probs && t.is_none() {
                Kind::Ignored
            } else if nan || !m.is_finite() {
                Kind::Nan
            } else {
                Kind::Finite
            };
            let mut row = RowModel {
                kind,
                z: z.clone(),
                dz,
                lse_tol: 0.0,
                loss_tol: 0.0,
                loss_mag: 0.0,
            };
            if nan || !m.is_finite() {
                rows.push(row);
                continue;
            }
            // A finite row (possibly ignored): lse, p and their bounds.
            // Relative to m: `m + ls` loses `ls` for huge logits.
            let ls = z.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
            let lse = m + ls;
            let lnp: Vec<f64> = z.iter().map(|&v| (v - m) - ls).collect();
            let p: Vec<f64> = lnp.iter().map(|v| v.exp()).collect();
            let dlse_z = logsumexp((0..nc).map(|k| lnp[k] + ez[k]))
                .max(-logsumexp((0..nc).map(|k| lnp[k] - ez[k])));
            let pzm: f64 = (0..nc)
                .filter(|&k| p[k] > 0.0)
                .map(|k| p[k] * (z[k] - m).abs())
                .sum();
            let dls = 2e-6 * ls.max(1.0) + pow2(-23) * pzm + cf * pow2(-140);
            let dlse = dlse_z + dls;
            row.lse_tol = dlse + pow2(-24) * lse.abs();
            // Per class: the bounds of ln p_j (logit errors) and of p_j (and the kernel's).
            let mut dlnp = vec![0.0f64; nc];
            let mut p_hi = vec![0.0f64; nc];
            let mut dp = vec![0.0f64; nc];
            let others = others_lse(&lnp);
            for j in 0..nc {
                if z[j] == f64::NEG_INFINITY {
                    dp[j] = pow2(-126);
                    continue;
                }
                let lq = others[j];
                let up = -logaddexp(lnp[j], lq - dz - ez[j]);
                let down = logaddexp(lnp[j], lq + dz + ez[j]);
                dlnp[j] = up.max(down);
                // The CE target's model (2e-6 + 2u |z - m|), `|z - m| + ln 40` for the class
                // blocks' `exp(z - lse_block)`, and the f32 rounding of their scale factor.
                let kern = 2e-6 + pow2(-23) * ((z[j] - m).abs() + 5.0);
                let hi = ((lnp[j] + up).exp() * (1.0 + kern)).min(1.0);
                let lo = (lnp[j] - down).exp() * (1.0 - kern).max(0.0);
                p_hi[j] = hi;
                dp[j] = (hi - p[j]).max(p[j] - lo) + pow2(-126);
            }
            if kind == Kind::Ignored {
                rows.push(row);
                continue;
            }
            let g = red * o.scale as f64 * o.row_scale.map_or(1.0, |v| v[i] as f64);
            let zmax = z
                .iter()
                .filter(|v| v.is_finite())
                .fold(0.0f64, |a, v| a.max(v.abs()));
            let under = cf * pow2(-146) * wmax * (lse.abs() + 2.0 * m.abs() + zmax + 1.0);
            let zl_err = zl * (2.0 * lse.abs() * dlse + dlse * dlse);
            let zl2 = 2.0 * o.z_loss as f64;
            let finite_z = |k: usize| z[k].is_finite();
            // Gradient row: coefficient of p and the constant terms; loss bound.
            let (coef, consts, coef_err): (f64, Vec<f64>, f64) = if let Some(t) = t {
                let wt = cw[t];
                let k1 = ((1.0 - eps) * wt).abs();
                // -ln p_t from (m - z_t) + ls; the smoothing sum relative to m.
                let dot_abs: f64 = (0..nc)
                    .filter(|&k| finite_z(k))
                    .map(|k| cw[k].abs() * (z[k] - m).abs())
                    .sum();
                let dot_err: f64 = (0..nc)
                    .filter(|&k| finite_z(k))
                    .map(|k| cw[k].abs() * (ez[k] + dz))
                    .sum::<f64>()
                    + 2e-6 * dot_abs;
                // A -inf logit at the target (or anywhere, with smoothing) makes the loss
                // infinite (or NaN), alike in every result: no bound.
                let smooth_inf = eps != 0.0 && (0..nc).any(|k| !finite_z(k));
                let main_inf = !finite_z(t);
                let main = if main_inf { 0.0 } else { k1 * lnp[t].abs() };
                let loss_mag =
                    main + zl * lse * lse + eps / cf * (wsum * ls).abs() + eps / cf * dot_abs;
                let zt = if main_inf { 0.0 } else { z[t].abs() };
                let mag64 = loss_mag + k1 * (m.abs() + zt) + eps / cf * wsum.abs() * m.abs();
                if !(ok(dot_abs) && ok(loss_mag)) {
                    return Err("class loss magnitude");
                }
                row.loss_mag = loss_mag;
                row.loss_tol = if main_inf || smooth_inf {
                    0.0
                } else {
                    k1 * (dlnp[t] + dls)
                        + zl_err
                        + eps / cf * (wsum.abs() * dls + dot_err)
                        + pow2(-22) * loss_mag
                        + 1e-14 * mag64
                        + under
                };
                let a0 = (1.0 - eps) * wt + eps / cf * wsum;
                let consts: Vec<f64> = (0..nc)
                    .map(|j| {
                        (g * eps / cf * cw[j]).abs()
                            + if j == t {
                                (g * (1.0 - eps) * wt).abs()
                            } else {
                                0.0
                            }
                    })
                    .collect();
                (g * (a0 + zl2 * lse), consts, 0.0)
            } else {
                let yr = &y[i * nc..(i + 1) * nc];
                let wy: Vec<f64> = (0..nc)
                    .map(|k| cw[k] * ((1.0 - eps) * yr[k] as f64 + eps / cf))
                    .collect();
                let wys: f64 = wy.iter().sum();
                let wy_mag: f64 = wy.iter().map(|v| v.abs()).sum();
                let wyz: f64 = (0..nc)
                    .filter(|&k| finite_z(k))
                    .map(|k| wy[k].abs() * (z[k] - m).abs())
                    .sum();
                let inf = (0..nc).any(|k| !finite_z(k) && wy[k] != 0.0);
                // A -inf logit whose `w y'` underflows f32 (the SIMD kernels form it in f32):
                // `0 * inf` is NaN there, `+inf` in f64 (the scalar tier).
                if (0..nc).any(|k| !finite_z(k) && wy[k] != 0.0 && wy[k].abs() < pow2(-120)) {
                    return Err("w y' underflow at a -inf logit");
                }
                let logit_err: f64 = (0..nc)
                    .filter(|&k| finite_z(k))
                    .map(|k| wy[k].abs() * dlnp[k])
                    .sum();
                let loss_mag = (0..nc)
                    .filter(|&k| finite_z(k))
                    .map(|k| wy[k].abs() * lnp[k].abs())
                    .sum::<f64>()
                    + zl * lse * lse;
                let mag64 = loss_mag + wy_mag * (m.abs() + zmax);
                if !(ok(wy_mag) && ok(wyz) && ok(loss_mag)) {
                    return Err("prob loss magnitude");
                }
                let dwy = 2e-6 * wy_mag;
                row.loss_mag = loss_mag;
                row.loss_tol = if inf {
                    0.0
                } else {
                    logit_err
                        + wys.abs() * dls
                        + ls.abs() * dwy
                        + 2e-6 * wyz
                        + zl_err
                        + pow2(-22) * loss_mag
                        + 1e-14 * mag64
                        + under
                };
                let consts: Vec<f64> = wy.iter().map(|v| (g * v).abs()).collect();
                (g * (wys + zl2 * lse), consts, g.abs() * dwy)
            };
            let ga = coef.abs();
            if !ok(g) || !ok(ga) || consts.iter().any(|&v| !ok(v)) {
                return Err("gradient coefficients");
            }
            for j in 0..nc {
                let terms = ga * p_hi[j] + consts[j];
                let mut tol = ga * dp[j]
                    + ((g * zl2).abs() * dlse + coef_err) * p_hi[j]
                    + pow2(-22) * terms
                    + g.abs() * wmax * pow2(-146)
                    + ga * pow2(-125)
                    + 1e-37;
                if let Some(k) = cap {
                    tol += terms * (2.0 * ez[j] / (k as f64).abs() + pow2(-21));
                }
                if !ok(terms) || !ok(tol) {
                    return Err("gradient terms");
                }
                gmag[i * nc + j] = terms;
                gtol[i * nc + j] = tol;
            }
            rows.push(row);
        }
        // The GEMM outputs.
        let mut da = vec![0.0f64; b * d];
        for i in 0..b {
            for l in 0..d {
                let (mut e, mut mag) = (0.0f64, 0.0f64);
                for j in 0..nc {
                    let wa = (wv(j, l) as f64).abs();
                    if wa.is_nan() {
                        continue;
                    }
                    e += gtol[i * nc + j] * wa;
                    mag += (gmag[i * nc + j] + gtol[i * nc + j]) * wa;
                }
                if !ok(mag) {
                    return Err("dA magnitude");
                }
                da[i * d + l] = e + (2.0 * cf + 6.0) * u23 * mag + (cf + 2.0) * pow2(-147);
            }
        }
        let acc = c.opts.accumulate;
        let bf = b as f64;
        let mut dw = vec![0.0f64; nc * d];
        let mut db = vec![0.0f64; nc];
        for j in 0..nc {
            for l in 0..d {
                let (mut e, mut mag) = (0.0f64, 0.0f64);
                for i in 0..b {
                    let aa = (c.a[i * d + l] as f64).abs();
                    if aa.is_nan() {
                        continue;
                    }
                    e += gtol[i * nc + j] * aa;
                    mag += (gmag[i * nc + j] + gtol[i * nc + j]) * aa;
                }
                if acc {
                    if let Some(w0) = &c.dw0 {
                        let v = (w0[j * ld + l] as f64).abs();
                        mag += if v.is_nan() { 0.0 } else { v };
                    }
                }
                if !ok(mag) {
                    return Err("dW magnitude");
                }
                dw[j * d + l] = e + (2.0 * bf + 6.0) * u23 * mag + (bf + 2.0) * pow2(-147);
            }
            let (mut e, mut mag) = (0.0f64, 0.0f64);
            for i in 0..b {
                e += gtol[i * nc + j];
                mag += gmag[i * nc + j] + gtol[i * nc + j];
            }
            if acc {
                if let Some(b0) = &c.db0 {
                    let v = (b0[j] as f64).abs();
                    mag += if v.is_nan() { 0.0 } else { v };
                }
            }
            if !ok(mag) {
                return Err("db magnitude");
            }
            db[j] = e + (2.0 * bf + 6.0) * u23 * mag + (bf + 2.0) * pow2(-147);
        }
        Ok(Model {
            rows,
            red,
            da,
            dw,
            db,
        })
    }
}

/// The class of a label that validation accepted: `None` for the ignore index.
fn class(ignore: Option<i64>, v: i128) -> Option<usize> {
    if ignore.is_some_and(|i| i as i128 == v) {
        None
    } else {
        Some(v as usize)
    }
}

/// Compares two `Ok` results `x` and `y` within the sum of their bounds.
fn compare_values<L: Label>(
    rep: &mut Report,
    what: &str,
    c: &Case<'_, L>,
    m: &Model,
    x: &Run,
    y: &Run,
) {
    let (Ok(sx), Ok(sy)) = (&x.res, &y.res) else {
        return;
    };
    let (b, nc, d, ld) = (c.b, c.c, c.d, c.layout.ld);
    if sx.rows_used != sy.rows_used || sx.denominator.to_bits() != sy.denominator.to_bits() {
        rep.check(
            || format!("{what}: stats"),
            Err(format!("rows_used/denominator: {sx:?} vs {sy:?}")),
        );
    }
    // The loss: every used finite row's bound (NaN and infinite rows compare exactly).
    let mean_zero = c.opts.ce.reduction == Reduction::Mean
        && sx.rows_used == 0
        && c.opts.ce.all_ignored == AllIgnored::Zero;
    let (mut tol, mut mag) = (0.0f64, 0.0f64);
    for r in &m.rows {
        if r.kind == Kind::Finite {
            tol += r.loss_tol;
            mag += r.loss_mag;
        }
    }
    let red = if mean_zero { 0.0 } else { m.red.abs() };
    let tol64 = if tol + mag == 0.0 {
        0.0
    } else {
        2.0 * red * (tol + 1e-14 * mag)
    };
    rep.check(
        || format!("{what}: loss_f64"),
        close64(sx.loss_f64, sy.loss_f64, tol64),
    );
    rep.check(
        || format!("{what}: loss"),
        close(sx.loss, sy.loss, tol64 + pow2(-23) * (sy.loss as f64).abs()),
    );
    for i in 0..b {
        let r = &m.rows[i];
        if let (Some(lx), Some(ly)) = (&x.row_loss, &y.row_loss) {
            let t = 2.0 * r.loss_tol + pow2(-23) * (ly[i] as f64).abs();
            rep.check(|| format!("{what}: row_loss[{i}]"), close(lx[i], ly[i], t));
        }
        if let (Some(lx), Some(ly)) = (&x.lse, &y.lse) {
            let t = 2.0 * r.lse_tol + pow2(-23) * (ly[i] as f64).abs();
            rep.check(|| format!("{what}: lse[{i}]"), close(lx[i], ly[i], t));
        }
        if let (Some(ax), Some(ay)) = (&x.argmax, &y.argmax) {
            let (a, b) = (ax[i] as usize, ay[i] as usize);
            rep.check(|| format!("{what}: argmax[{i}]"), argmax_ok(r, a, b));
            rep.check(|| format!("{what}: other argmax[{i}]"), argmax_ok(r, b, a));
        }
    }
    let shapes = [
        ("da", &x.da, &y.da, &m.da, b, d, d),
        ("dw", &x.dw, &y.dw, &m.dw, nc, d, ld),
        ("db", &x.db, &y.db, &m.db, 1, nc, nc),
    ];
    for (name, gx, gy, tol, rows, cols, stride) in shapes {
        let (Some(gx), Some(gy)) = (gx, gy) else {
            continue;
        };
        for i in 0..rows {
            for j in 0..cols {
                let k = i * stride + j;
                let t = 2.0 * tol[i * cols + j] + pow2(-23) * (gy[k] as f64).abs();
                rep.check(
                    || format!("{what}: {name}[{i}, {j}]"),
                    close(gx[k], gy[k], t),
                );
            }
        }
    }
}

/// An argmax against the row's logits: the first maximum ignoring NaN when the logits are
/// exact, else any index within twice the logits' error of the maximum; for a row with no
/// value above `-inf`, the same index as the other result.
fn argmax_ok(r: &RowModel, a: usize, other: usize) -> Result<(), String> {
    let mx =
        r.z.iter()
            .filter(|v| !v.is_nan())
            .fold(f64::NEG_INFINITY, |x, &v| x.max(v));
    if mx == f64::NEG_INFINITY {
        return if a == other {
            Ok(())
        } else {
            Err(format!("{a} vs {other} (no value above -inf)"))
        };
    }
    if r.dz == 0.0 {
        let first = r.z.iter().position(|&v| v == mx).unwrap_or(0);
        return if a == first {
            Ok(())
        } else {
            Err(format!("{a}, the first maximum (ignoring NaN) is {first}"))
        };
    }
    match r.z.get(a) {
        Some(&v) if !v.is_nan() && v >= mx - 2.0 * r.dz => Ok(()),
        v => Err(format!(
            "{a} (logit {v:?}) is not within {:e} of the maximum {mx:e}",
            2.0 * r.dz
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------------

/// A plain header: `B`, `C`, `D`, dense, bias, Mean, every output, automatic chunks, exponent
/// windows around 1 (so that the fuzzer's mutations of the data mostly stay inside the
/// domain), zero fill.
pub fn seed_header(b: u8, c: u8, d: u8) -> LceHeader {
    let win = |center: i8, spread: u8| Win { center, spread };
    LceHeader {
        b,
        c: c - 1,
        d,
        bias: 1,
        outputs: 0x3F,
        awin: win(0, 3),
        wwin: win(-1, 3),
        bwin: win(0, 2),
        cwwin: win(0, 1),
        ywin: win(-2, 2),
        rswin: win(0, 1),
        gwin: win(0, 3),
        fill: Fill {
            mode: 1,
            ..Fill::default()
        },
        ..LceHeader::default()
    }
}

/// [`seed_header`] with raw windows: the data words are the floats' exact bits.
pub fn seed_header_raw(b: u8, c: u8, d: u8) -> LceHeader {
    LceHeader {
        awin: Win::RAW,
        wwin: Win::RAW,
        bwin: Win::RAW,
        cwwin: Win::RAW,
        ywin: Win::RAW,
        rswin: Win::RAW,
        gwin: Win::RAW,
        ..seed_header(b, c, d)
    }
}

/// A label's data word (see [`label_of`]): a class, the ignore index, or `label_value`'s
/// special number `k` (1: `C`, 2: -1, ...).
pub enum SeedLabel {
    /// A class.
    Class(usize),
    /// The ignore index.
    Ignore,
    /// `label_value`'s special `k`.
    Special(u32),
}

/// The data words of a seed, in the order the checker reads them.
pub fn seed_words(h: &LceHeader, labels: &[SeedLabel], f: impl Fn(usize) -> f32) -> Vec<u32> {
    let (b, c, d) = (h.b as usize % 10, 1 + h.c as usize % 40, h.d as usize % 13);
    let ld = match h.ld % 8 {
        0..=4 => d,
        5 | 6 => d + 1 + (h.ld >> 3) as usize % 5,
        _ if d > 0 => d - 1,
        _ => 1,
    };
    let mut n = 0usize;
    let mut next = |out: &mut Vec<u32>| {
        out.push(f(n).to_bits());
        n += 1;
    };
    let mut v = Vec::new();
    for _ in 0..b * d {
        next(&mut v);
    }
    for _ in 0..matrix_len(c, d, ld, h.trim & 1 != 0) {
        next(&mut v);
    }
    if h.bias & 1 != 0 {
        for _ in 0..c {
            next(&mut v);
        }
    }
    if h.target % 8 == 7 {
        // Probability rows: a softmax-like distribution.
        for i in 0..b {
            for j in 0..c {
                let p = if j == i % c {
                    0.5
                } else {
                    0.5 / (c - 1).max(1) as f32
                };
                v.push(p.to_bits());
            }
        }
    } else {
        for l in labels {
            v.push(match l {
                SeedLabel::Class(k) => *k as u32,
                SeedLabel::Ignore => 0xE000_0000,
                SeedLabel::Special(k) => 0xF000_0000 | (k & 7) << 24,
            });
        }
    }
    if h.weight & 1 != 0 {
        for j in 0..c {
            v.push((0.5 + (j % 4) as f32 * 0.25).to_bits());
        }
    }
    v
}

/// A smooth pseudo-random value in about `[-1.5, 1.5]` for data word `n`.
pub fn seed_value(n: usize) -> f32 {
    let x = (n as u32).wrapping_mul(2_654_435_761) >> 20;
    (x as f32 / 4096.0 - 0.5) * 3.0
}

/// The seed corpus of this target.
pub fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let cls = |b: usize, c: usize| -> Vec<SeedLabel> {
        (0..b).map(|i| SeedLabel::Class((3 * i + 1) % c)).collect()
    };
    let mut add = |name: &str, h: LceHeader, labels: Vec<SeedLabel>| {
        let words = seed_words(&h, &labels, seed_value);
        out.push(Seed {
            target: "linear_ce",
            name: name.to_string(),
            bytes: encode_words(&h, &words),
        });
    };
    let base = seed_header(4, 7, 5);
    add("basic", base, cls(4, 7));
    add(
        "strided-trimmed",
        LceHeader {
            ld: 5 | 2 << 3,
            trim: 3,
            ..base
        },
        cls(4, 7),
    );
    add(
        "rows-1",
        LceHeader {
            chunk: 2,
            chunk_rows: 0,
            ..base
        },
        cls(4, 7),
    );
    add(
        "rows-2-classes-3",
        LceHeader {
            chunk: 3,
            chunk_rows: 1,
            chunk_classes: 2,
            ..base
        },
        cls(4, 7),
    );
    add(
        "classes-5",
        LceHeader {
            chunk: 4,
            chunk_classes: 4,
            ..base
        },
        cls(4, 7),
    );
    add(
        "tiny-bytes",
        LceHeader {
            chunk: 5,
            chunk_bytes: 15,
            ..base
        },
        cls(4, 7),
    );
    for (i, name) in ["zero-rows-opt", "zero-classes-opt", "zero-bytes-opt"]
        .iter()
        .enumerate()
    {
        add(
            name,
            LceHeader {
                chunk: 6,
                chunk_rows: i as u8,
                ..base
            },
            cls(4, 7),
        );
    }
    add(
        "huge-chunks",
        LceHeader {
            chunk: 7,
            chunk_rows: 1,
            ..base
        },
        cls(4, 7),
    );
    add("probs", LceHeader { target: 7, ..base }, Vec::new());
    add(
        "probs-class-blocks",
        LceHeader {
            target: 7,
            chunk: 4,
            chunk_classes: 2,
            ..base
        },
        Vec::new(),
    );
    add(
        "smoothing-weights-blocks",
        LceHeader {
            smoothing: 2,
            weight: 1,
            chunk: 3,
            chunk_rows: 2,
            chunk_classes: 2,
            ..base
        },
        cls(4, 7),
    );
    add(
        "zloss-softcap-blocks",
        LceHeader {
            z_loss: 3,
            softcap: 4,
            chunk: 4,
            chunk_classes: 3,
            ..base
        },
        cls(4, 7),
    );
    add(
        "none-row-scale",
        LceHeader {
            reduction: 2,
            row_scale: 3,
            ..base
        },
        cls(4, 7),
    );
    add(
        "sum-accumulate",
        LceHeader {
            reduction: 1,
            accumulate: 1,
            chunk: 3,
            chunk_rows: 2,
            chunk_classes: 3,
            ..base
        },
        cls(4, 7),
    );
    add(
        "bias-neginf-smoothing-blocks",
        LceHeader {
            special: 8,
            special_pos: 2,
            smoothing: 2,
            chunk: 4,
            chunk_classes: 2,
            ..base
        },
        cls(4, 7),
    );
    add(
        "bias-neginf-target",
        LceHeader {
            special: 8,
            special_pos: 1,
            chunk: 4,
            chunk_classes: 3,
            ..base
        },
        cls(4, 7),
    );
    add(
        "bias-nan",
        LceHeader {
            special: 9,
            special_pos: 3,
            ..base
        },
        cls(4, 7),
    );
    add(
        "bias-posinf",
        LceHeader {
            special: 10,
            special_pos: 5,
            ..base
        },
        cls(4, 7),
    );
    add(
        "bias-posinf-softcap-blocks",
        LceHeader {
            special: 10,
            special_pos: 5,
            softcap: 4,
            chunk: 4,
            chunk_classes: 2,
            ..base
        },
        cls(4, 7),
    );
    add(
        "bias-huge",
        LceHeader {
            special: 11,
            special_pos: 4,
            ..base
        },
        cls(4, 7),
    );
    add(
        "a-nan-blocks-argmax",
        LceHeader {
            special: 12,
            special_pos: 6,
            chunk: 4,
            chunk_classes: 3,
            ..base
        },
        cls(4, 7),
    );
    add(
        "a-huge",
        LceHeader {
            special: 13,
            special_pos: 7,
            ..base
        },
        cls(4, 7),
    );
    add(
        "w-nan",
        LceHeader {
            special: 14,
            special_pos: 0x0203,
            ..base
        },
        cls(4, 7),
    );
    add(
        "ignored-rows-blocks",
        LceHeader {
            chunk: 4,
            chunk_classes: 4,
            ..base
        },
        vec![
            SeedLabel::Ignore,
            SeedLabel::Class(2),
            SeedLabel::Ignore,
            SeedLabel::Class(6),
        ],
    );
    add(
        "all-ignored-zero",
        LceHeader {
            all_ignored: 1,
            ..base
        },
        (0..4).map(|_| SeedLabel::Ignore).collect(),
    );
    add(
        "bad-label",
        base,
        vec![
            SeedLabel::Class(0),
            SeedLabel::Special(1),
            SeedLabel::Class(1),
            SeedLabel::Class(2),
        ],
    );
    add("batch-0", seed_header(0, 7, 5), Vec::new());
    add("features-0", seed_header(3, 6, 0), cls(3, 6));
    add("one-class", seed_header(3, 1, 4), cls(3, 1));
    add(
        "big-blocks-16",
        LceHeader {
            chunk: 3,
            chunk_rows: 3,
            chunk_classes: 15,
            weight: 1,
            smoothing: 2,
            ..seed_header(9, 40, 12)
        },
        cls(9, 40),
    );
    add("bad-ld", LceHeader { ld: 7, ..base }, cls(4, 7));
    add(
        "da-short",
        LceHeader {
            len: 0x80 | 6 << 3 | 6,
            len_delta: -1,
            ..base
        },
        cls(4, 7),
    );
    add(
        "dw-trimmed-len",
        LceHeader {
            ld: 6,
            trim: 0,
            len: 0x80 | 7 << 3 | 6,
            len_delta: -1,
            ..base
        },
        cls(4, 7),
    );
    add("u8-labels", LceHeader { target: 4, ..base }, cls(4, 7));
    add(
        "usize-labels-blocks",
        LceHeader {
            target: 5,
            chunk: 4,
            chunk_classes: 1,
            ..base
        },
        cls(4, 7),
    );
    // The argmax of a row with NaN or +inf in a class block (D = 0: the logits are the bias).
    let blocks2 = LceHeader {
        chunk: 4,
        chunk_classes: 1,
        ..seed_header_raw(1, 4, 0)
    };
    for (name, v) in [
        ("class-block-argmax-nan", [1.0, 0.0, 5.0, f32::NAN]),
        ("class-block-argmax-posinf", [1.0, 0.0, f32::INFINITY, 3.0]),
        // Huge equal logits: each block's scale factor from absolute logsumexps.
        ("class-block-huge-logits", [-1e12; 4]),
    ] {
        let words: Vec<u32> = v.iter().map(|x| x.to_bits()).chain([2]).collect();
        out.push(Seed {
            target: "linear_ce",
            name: name.to_string(),
            bytes: encode_words(&blocks2, &words),
        });
    }
    // D = 0 with a decoded class count (`d >= WIDE_D`): the first two data words pick C (see
    // `wide_classes`), then the labels (`label_of`: `w % C`, 0xE... the ignore index, 0xF... a
    // special of `label_value`).
    let mut wide = |name: &str, h: LceHeader, words: &[u32]| {
        out.push(Seed {
            target: "linear_ce",
            name: name.to_string(),
            bytes: encode_words(&h, words),
        });
    };
    let w0 = seed_header(4, 7, 0);
    wide(
        "wide-c-max-plus-1",
        LceHeader { d: WIDE_D, ..w0 },
        &[0, 0, 3, 0xE000_0000, 0xF100_0000, 7],
    );
    wide(
        "wide-c-max-plus-16-blocks",
        LceHeader {
            d: WIDE_D,
            chunk: 4,
            chunk_classes: 5,
            ..w0
        },
        &[15, 0, 1, 2, 3, 4],
    );
    wide(
        "wide-c-2^62-u8-none",
        LceHeader {
            d: WIDE_D | 2,
            target: 4,
            reduction: 2,
            row_scale: 3,
            ..w0
        },
        &[
            62,
            1,
            9,
            8,
            7,
            6,
            0x3F80_0000,
            0x3F80_0000,
            0x3F80_0000,
            0x3F80_0000,
        ],
    );
    wide(
        "wide-c-2^40+1-probs",
        LceHeader {
            d: WIDE_D | 2,
            target: 7,
            ..w0
        },
        &[40, 2],
    );
    wide(
        "wide-c-2^32-i32",
        LceHeader {
            d: WIDE_D | 2,
            target: 3,
            ..w0
        },
        &[32, 1, 5, 0x8000_0000, 0xFFFF_FFFF, 0],
    );
    wide(
        "wide-c-max-batch-0",
        LceHeader {
            d: WIDE_D | 1,
            ..seed_header(0, 7, 0)
        },
        &[0, 0],
    );
    wide(
        "wide-c-max-zero-chunk",
        LceHeader {
            d: WIDE_D,
            chunk: 6,
            chunk_rows: 2,
            ..w0
        },
        &[3, 0, 1, 2, 3, 4],
    );
    // A moderate C (70001, B = 3): the bias is the logits, one value with ties of the maximum
    // far apart (the sparse fill: 3 overrides for the bias, then one per label).
    let mut h = LceHeader {
        d: WIDE_D | 4,
        b: 3,
        ..seed_header_raw(3, 7, 0)
    };
    h.fill = Fill {
        mode: 4,
        konst: 0.25f32.to_bits(),
        period: 2,
        ..Fill::default()
    };
    let two = 2.0f32.to_bits();
    wide(
        "wide-c-70001-bias-ties",
        h,
        &[
            70_000,
            12,
            5,
            two,
            69_999,
            two,
            40_000,
            1.5f32.to_bits(),
            0,
            69_999,
            1,
            5,
            2,
            1,
        ],
    );
    out
}
