//! The cross-entropy family through `Kernels::cross_entropy_with` (which every other entry
//! point calls): every option of `CrossEntropyOptions`, class labels of every `Label` type
//! (out of range, negative, the ignore index, values that wrap in small types) and probability
//! targets, loss only / separate gradient / in place, every optional output; one tier against
//! the scalar reference.
//!
//! **Exact checks** (every input; tier and reference alike, as the module docs state them):
//! the same `Ok`/`Err` and error; nothing written on error; ignored rows have loss 0 and
//! gradient 0; a row whose (capped) logits hold a NaN, or (no cap) a `+inf` or only `-inf`, has
//! NaN loss and NaN gradient; the `lse` output is NaN exactly for those rows; `rows_used` and
//! the denominator are identical (shared code); without a cap the argmax is identical.
//!
//! **Error model** of an f32 tier for one finite row (what the tolerances below allow; `u` =
//! `2^-24`). The max `m` and the target logit are exact (no cap). `s = sum exp(z - m)`: each
//! exp within 2 ULP plus the rounding of `z - m` (`u |z - m|` relative), summed in f32 lanes
//! over short blocks and in f64 across blocks: `ln s`, hence `lse`, within the logsumexp
//! contract `1e-6 max(1, |lse|)` (`dlse`). Each `p_c` within `2e-6 + 2u |z_c - m|` relative
//! (the softmax contract plus the roundings of the scale factor), or `2^-125` absolute where
//! exp underflows. Sums of products (the smoothing dot `sum w z`, the probability targets'
//! `sum w y'` and `sum w y' z`) within `2e-6` of their sums of magnitudes (f32 lanes over at
//! most 16 terms, then f64). Every stored f32 (gradient element, row loss, the reference's
//! too) adds `2^-22` of its own magnitude. Under a soft-cap each capped logit may differ from
//! the f64 value by `dz` = 4 ULP of `cap` (the kernels' f32 tanh): `lse` and `z_t` move by
//! `dz`, each `p_c` by `2 dz` relative, the chain factor `1 - (z / cap)^2` by `2 dz / cap` plus
//! its own rounding; argmax may pick any index within `2 dz` of the maximum.
//!
//! The loss is a combination of these terms in f64 (shared code), so its tolerance is the sum
//! of `|coefficient| x error` over them, plus `1e-14` of the terms' magnitudes (f64 noise,
//! which matters when a huge loss cancels). The gradient element `g (A p_c - s_c) - f [c = t]`
//! (times the chain factor) gets `|g A| p_c (2e-6 + 2u |z_c - m|) + |g zl2| dlse p_c` plus the
//! roundings of its terms.
//!
//! **Domain.** The model assumes no f32 overflow inside the kernel: finite class weights and
//! probability targets, and `|g A|`, `|g s_c|`, `|fix|`, the sums of magnitudes above all below
//! `2^120`. Rows outside it (a weight of `1e30` times a logit of `1e30`, a `row_scale` of
//! `f32::MAX`) get only the exact checks: the contract says nothing about f32 intermediate
//! overflow there. Huge logits alone are inside (no products of logits are formed without
//! smoothing).

use softmax_kernels::{
    AllIgnored, CrossEntropyOptions, CrossEntropyOutputs, CrossEntropyStats, Error, Kernels, Label,
    Logits, Reduction, Targets,
};

use crate::input::{exact, perturb, split, Fill, Win, Words};
use crate::{close, close64, pow2, reference, same_outcome, shape, tier, unchanged, Report};

crate::header! {
    /// The cross-entropy target's header.
    pub struct CeHeader {
        /// The tier.
        pub tier: u8,
        /// Rows selector.
        pub rows: u8,
        /// Columns selector.
        pub cols: u16,
        /// `% 3`: loss only (`Logits::Read`), separate gradient, in place.
        pub mode: u8,
        /// `% 9`: labels of i64, i32, i16, u64, u32, u16, u8, usize; probability targets.
        pub target: u8,
        /// `% 3`: Mean, Sum, None.
        pub reduction: u8,
        /// Bit 0: class weights; the rest perturbs their length.
        pub weight: u8,
        /// See `weight`.
        pub weight_delta: i8,
        /// `% 8`: the ignore index (see [`ignore_index`]).
        pub ignore: u8,
        /// A free ignore index.
        pub ignore_val: i16,
        /// Label smoothing selector (see [`smoothing`]).
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
        /// `% 4`: 2, 3 give a `row_scale` (2 with a perturbed length).
        pub row_scale: u8,
        /// See `row_scale`.
        pub row_scale_delta: i8,
        /// Bit 0: `row_loss`, bit 1: `lse`, bit 2: `argmax`.
        pub outputs: u8,
        /// Length perturbation of one output (`(out_len >> 3) % 3` picks which).
        pub out_len: u8,
        /// See `out_len`.
        pub out_delta: i8,
        /// Length perturbation of the logits.
        pub logits_len: u8,
        /// See `logits_len`.
        pub logits_delta: i8,
        /// Length perturbation of the gradient buffer.
        pub grad_len: u8,
        /// See `grad_len`.
        pub grad_delta: i8,
        /// Length perturbation of the targets.
        pub targets_len: u8,
        /// See `targets_len`.
        pub targets_delta: i8,
        /// The logits' window.
        pub xwin: Win,
        /// The class weights' window.
        pub wwin: Win,
        /// The probability targets' window.
        pub ywin: Win,
        /// The row scales' window.
        pub rswin: Win,
        /// Words past the input.
        pub fill: Fill,
    }
}

const SPECIALS: [f32; 8] = [
    f32::NAN,
    -0.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MAX,
    1e-45,
    1e30,
    -1.0,
];

/// The option fields every target's header carries, as `(selector, bits)` pairs.
pub struct OptionBits {
    /// Label smoothing ([`smoothing`]).
    pub smoothing: (u8, u32),
    /// z-loss ([`z_loss`]).
    pub z_loss: (u8, u32),
    /// Soft cap ([`softcap`]).
    pub softcap: (u8, u32),
    /// `AllIgnored::Zero` when the low bit is set.
    pub all_ignored: u8,
    /// Gradient scale ([`scale`]).
    pub scale: (u8, u32),
}

impl OptionBits {
    /// The cross-entropy options these fields decode to, with the buffers and choices the
    /// target decoded itself. (The struct is `#[non_exhaustive]`: every field is set on the
    /// defaults.)
    pub fn options<'a>(
        &self,
        reduction: Reduction,
        weight: Option<&'a [f32]>,
        ignore: Option<i64>,
        row_scale: Option<&'a [f32]>,
    ) -> CrossEntropyOptions<'a> {
        let mut o = CrossEntropyOptions::default();
        o.reduction = reduction;
        o.weight = weight;
        o.ignore_index = ignore;
        o.label_smoothing = smoothing(self.smoothing.0, self.smoothing.1);
        o.z_loss = z_loss(self.z_loss.0, self.z_loss.1);
        o.softcap = softcap(self.softcap.0, self.softcap.1);
        o.all_ignored = if self.all_ignored & 1 != 0 {
            AllIgnored::Zero
        } else {
            AllIgnored::Nan
        };
        o.scale = scale(self.scale.0, self.scale.1);
        o.row_scale = row_scale;
        o
    }
}

/// Label smoothing: mostly 0 or valid, sometimes out of `[0, 1]` or NaN.
pub fn smoothing(sel: u8, bits: u32) -> f32 {
    match sel % 8 {
        0 | 1 => 0.0,
        2 => 0.1,
        3 => 1.0,
        4 => (bits % 1001) as f32 / 1000.0,
        5 => f32::from_bits(bits),
        6 => [
            f32::NAN,
            -0.0,
            1.000_000_1,
            -1e-45,
            f32::INFINITY,
            0.5,
            1e-7,
            0.999_999,
        ][bits as usize % 8],
        _ => 0.05,
    }
}

/// z-loss: mostly 0 or small, sometimes invalid.
pub fn z_loss(sel: u8, bits: u32) -> f32 {
    match sel % 8 {
        0..=2 => 0.0,
        3 => 1e-4,
        4 => (bits % 1000) as f32 * 1e-4,
        5 => f32::from_bits(bits),
        6 => SPECIALS[bits as usize % 8],
        _ => 1.0,
    }
}

/// Soft-cap: mostly none, else 30, a power of two, raw bits or a special value.
pub fn softcap(sel: u8, bits: u32) -> Option<f32> {
    match sel % 8 {
        0..=3 => None,
        4 => Some(30.0),
        5 => Some(pow2((bits % 40) as i32 - 10) as f32),
        6 => Some(f32::from_bits(bits)),
        _ => Some(
            [
                0.0,
                -0.0,
                -1.0,
                f32::INFINITY,
                f32::NAN,
                1e-45,
                f32::MAX,
                1e-3,
            ][bits as usize % 8],
        ),
    }
}

/// The upstream scale.
pub fn scale(sel: u8, bits: u32) -> f32 {
    match sel % 8 {
        0..=2 => 1.0,
        3 => 0.5,
        4 => -2.0,
        5 => f32::from_bits(bits),
        6 => [
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
            1e-30,
            f32::MAX,
        ][bits as usize % 8],
        _ => (bits as i32) as f32 / (1 << 20) as f32,
    }
}

/// The ignore index.
pub fn ignore_index(sel: u8, val: i16, cols: usize) -> Option<i64> {
    match sel % 8 {
        0..=2 => Some(-100),
        3 => None,
        4 => Some(0),
        5 => Some(val as i64),
        6 => Some(i64::MIN),
        _ => Some(cols as i64 - 1),
    }
}

/// A label from a data word: three times in four a class (`% cols`), else the ignore index,
/// `cols`, -1, `i64::MIN`, a small signed value, `u64::MAX` (as the type wraps it), -100 or
/// `i64::MAX`.
pub fn label_value(w: u32, cols: usize, ignore: Option<i64>) -> i128 {
    if w >> 30 != 3 {
        return ((w & 0x3FFF_FFFF) as usize % cols.max(1)) as i128;
    }
    match (w >> 24) & 7 {
        0 => ignore.unwrap_or(cols as i64) as i128,
        1 => cols as i128,
        2 => -1,
        3 => i64::MIN as i128,
        4 => (w & 0xFF_FFFF) as i128 - 0x80_0000,
        5 => u64::MAX as i128,
        6 => -100,
        _ => i64::MAX as i128,
    }
}

/// A label type that can be made from a wide value (wrapping, as `as` does).
pub trait FromWide: Label + std::fmt::Debug {
    /// `v as Self`.
    fn from_wide(v: i128) -> Self;
}

macro_rules! from_wide {
    ($($t:ty),*) => {$(
        impl FromWide for $t {
            fn from_wide(v: i128) -> Self {
                v as $t
            }
        }
    )*};
}
from_wide!(i64, i32, i16, u64, u32, u16, u8, usize);

/// One call's outputs.
struct Run {
    res: Result<CrossEntropyStats, Error>,
    /// The gradient buffer (`Grad`), or the logits buffer (`InPlace`, `Read`).
    grad: Vec<f32>,
    row_loss: Option<Vec<f32>>,
    lse: Option<Vec<f32>>,
    argmax: Option<Vec<u32>>,
}

/// Everything a call takes.
struct Case<'a, L: Label> {
    x: &'a [f32],
    mode: u8,
    grad_len: usize,
    targets: Targets<'a, L>,
    cols: usize,
    opts: CrossEntropyOptions<'a>,
    row_loss: Option<usize>,
    lse: Option<usize>,
    argmax: Option<usize>,
}

const UNW: f32 = f32::from_bits(crate::UNWRITTEN);

fn run<L: Label>(k: &Kernels, c: &Case<'_, L>) -> Run {
    let mut logits = exact(c.x);
    let mut grad = exact(&vec![UNW; c.grad_len]);
    let mut row_loss = c.row_loss.map(|n| exact(&vec![UNW; n]));
    let mut lse = c.lse.map(|n| exact(&vec![UNW; n]));
    let mut argmax = c.argmax.map(|n| exact(&vec![u32::MAX; n]));
    let mut out = CrossEntropyOutputs {
        row_loss: row_loss.as_deref_mut(),
        lse: lse.as_deref_mut(),
        argmax: argmax.as_deref_mut(),
    };
    let lg = match c.mode {
        0 => Logits::Read(&logits),
        1 => Logits::Grad(c.x, &mut grad),
        _ => Logits::InPlace(&mut logits),
    };
    let res = k.cross_entropy_with(lg, c.targets, c.cols, &c.opts, &mut out);
    Run {
        res,
        grad: if c.mode == 1 { grad } else { logits },
        row_loss,
        lse,
        argmax,
    }
}

/// The checker (see the module docs).
pub fn check(data: &[u8]) -> Result<(), String> {
    let (h, rest) = split::<CeHeader>(data);
    let mut words = Words::new(rest, h.fill);
    let (rows, cols) = shape(h.rows, h.cols, 24, true);
    match h.target % 9 {
        0 => typed::<i64>(&h, &mut words, rows, cols),
        1 => typed::<i32>(&h, &mut words, rows, cols),
        2 => typed::<i16>(&h, &mut words, rows, cols),
        3 => typed::<u64>(&h, &mut words, rows, cols),
        4 => typed::<u32>(&h, &mut words, rows, cols),
        5 => typed::<u16>(&h, &mut words, rows, cols),
        6 => typed::<u8>(&h, &mut words, rows, cols),
        7 => typed::<usize>(&h, &mut words, rows, cols),
        _ => typed::<i64>(&h, &mut words, rows, cols),
    }
}

fn typed<L: FromWide>(
    h: &CeHeader,
    words: &mut Words,
    rows: usize,
    cols: usize,
) -> Result<(), String> {
    let k = tier(h.tier);
    let r = reference();
    let probs = h.target % 9 == 8;
    let n = rows * cols;
    let xl = perturb(n, h.logits_len, h.logits_delta);
    let x = words.floats(xl, h.xwin);
    let ignore = ignore_index(h.ignore, h.ignore_val, cols);
    let tl = perturb(
        if probs { xl } else { rows },
        h.targets_len,
        h.targets_delta,
    );
    let (labels, y): (Vec<L>, Vec<f32>) = if probs {
        (Vec::new(), words.floats(tl, h.ywin))
    } else {
        let l: Vec<L> = words
            .raw(tl)
            .into_iter()
            .map(|w| L::from_wide(label_value(w, cols, ignore)))
            .collect();
        (exact(&l), Vec::new())
    };
    let weight = (h.weight & 1 != 0)
        .then(|| words.floats(perturb(cols, h.weight >> 1, h.weight_delta), h.wwin));
    let reduction = [Reduction::Mean, Reduction::Sum, Reduction::None][h.reduction as usize % 3];
    let row_scale = (h.row_scale % 4 >= 2).then(|| {
        let len = if h.row_scale % 4 == 2 {
            perturb(rows, 6, h.row_scale_delta)
        } else {
            rows
        };
        words.floats(len, h.rswin)
    });
    let bits = OptionBits {
        smoothing: (h.smoothing, h.smoothing_bits),
        z_loss: (h.z_loss, h.z_loss_bits),
        softcap: (h.softcap, h.softcap_bits),
        all_ignored: h.all_ignored,
        scale: (h.scale, h.scale_bits),
    };
    let opts = bits.options(reduction, weight.as_deref(), ignore, row_scale.as_deref());
    let which = (h.out_len >> 3) % 3;
    let out_len = |i: u8| {
        if i == which {
            perturb(rows, h.out_len, h.out_delta)
        } else {
            rows
        }
    };
    let mode = h.mode % 3;
    let case = Case {
        x: &x,
        mode,
        grad_len: if mode == 1 {
            perturb(xl, h.grad_len, h.grad_delta)
        } else {
            0
        },
        targets: if probs {
            Targets::Probs(&y)
        } else {
            Targets::Classes(&labels)
        },
        cols,
        opts,
        row_loss: (h.outputs & 1 != 0).then(|| out_len(0)),
        lse: (h.outputs & 2 != 0).then(|| out_len(1)),
        argmax: (h.outputs & 4 != 0).then(|| out_len(2)),
    };
    let t = run(k, &case);
    let rf = run(r, &case);
    compare(&case, &labels, &y, &t, &rf).map_err(|e| {
        format!(
            "[{}] rows {rows} cols {cols} mode {mode} target {} labels {:?} opts {:?}\n{e}",
            k.isa(),
            if probs {
                "probs"
            } else {
                std::any::type_name::<L>()
            },
            &labels[..labels.len().min(8)],
            case.opts
        )
    })
}

/// A row's (capped) logits in f64, as the reference computes them.
struct Shadow {
    z: Vec<f64>,
    /// NaN in the row.
    nan: bool,
    m: f64,
    s: f64,
    lse: f64,
}

impl Shadow {
    fn new(x: &[f32], cap: Option<f32>) -> Shadow {
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
        let (s, lse) = if m.is_finite() && !nan {
            let s: f64 = z.iter().map(|&v| (v - m).exp()).sum();
            (s, m + s.ln())
        } else {
            (f64::NAN, f64::NAN)
        };
        Shadow { z, nan, m, s, lse }
    }

    /// Finite maximum and no NaN: the row has finite results.
    fn finite(&self) -> bool {
        !self.nan && self.m.is_finite()
    }

    fn p(&self, c: usize) -> f64 {
        (self.z[c] - self.m).exp() / self.s
    }
}

const LIM: f64 = 1.329_227_995_784_916e36; // 2^120

fn ok_mag(v: f64) -> bool {
    v.is_finite() && v.abs() <= LIM
}

/// Per-row tolerances and whether the row is inside the domain (see the module docs).
struct RowTol {
    loss_ok: bool,
    loss_tol: f64,
    /// Magnitude of the loss terms (for the f64 noise of sums).
    loss_mag: f64,
    grad_ok: bool,
    grad_tol: Vec<f64>,
}

fn compare<L: FromWide>(
    c: &Case<'_, L>,
    labels: &[L],
    y: &[f32],
    t: &Run,
    r: &Run,
) -> Result<(), String> {
    if !same_outcome("result", &t.res, &r.res)? {
        // Nothing written on error.
        for (who, run) in [("tier", t), ("reference", r)] {
            let orig: Vec<f32> = if c.mode == 1 {
                vec![UNW; c.grad_len]
            } else {
                c.x.to_vec()
            };
            unchanged(&format!("{who} logits/grad"), &orig, &run.grad)?;
            for (name, o) in [("row_loss", &run.row_loss), ("lse", &run.lse)] {
                if let Some(o) = o {
                    unchanged(&format!("{who} {name}"), &vec![UNW; o.len()], o)?;
                }
            }
            if let Some(a) = &run.argmax {
                if a.iter().any(|&v| v != u32::MAX) {
                    return Err(format!("{who} argmax written on error"));
                }
            }
        }
        return Ok(());
    }
    let (st, sr) = (t.res.as_ref().unwrap(), r.res.as_ref().unwrap());
    let cols = c.cols;
    let rows = c.x.len() / cols;
    let o = &c.opts;
    let probs = matches!(c.targets, Targets::Probs(_));
    let mut rep = Report::default();
    if st.rows_used != sr.rows_used || st.denominator.to_bits() != sr.denominator.to_bits() {
        rep.check(
            || "stats".into(),
            Err(format!(
                "rows_used/denominator differ: tier {st:?}, reference {sr:?}"
            )),
        );
    }
    let cap = o.softcap;
    let dz = cap.map_or(0.0, |c| 4.0 * ulp(c));
    let eps = o.label_smoothing as f64;
    let cf = cols as f64;
    let w_of = |j: usize| o.weight.map_or(1.0, |w| w[j] as f64);
    let weights_finite = o.weight.is_none_or(|w| w.iter().all(|v| v.is_finite()));
    let wsum: f64 = o.weight.map_or(cf, |w| w.iter().map(|&v| v as f64).sum());
    let den = sr.denominator;
    let red = match o.reduction {
        Reduction::Mean => 1.0 / den,
        _ => 1.0,
    };
    let has_grad = c.mode != 0;
    // A cap whose f32 reciprocal overflows (once a crate bug, now rejected by the options'
    // validation; tests/fuzz_regressions.rs, `softcap_with_tiny_cap_matches_reference`): the
    // values of such a call are not compared, should validation ever accept one again (the
    // regression test then fails).
    let tiny_cap = cap.is_some_and(|c| (1.0f32 / c).is_infinite());
    let mut all_loss_ok = true;
    let (mut sum_tol, mut sum_mag) = (0.0f64, 0.0f64);
    for row in 0..rows {
        let xr = &c.x[row * cols..(row + 1) * cols];
        let sh = Shadow::new(xr, cap);
        let class = if probs {
            Some(0)
        } else {
            // Labels were validated (Ok): a class or the ignore index.
            let v = labels[row].to_i128();
            if o.ignore_index.is_some_and(|i| i as i128 == v) {
                None
            } else {
                Some(v as usize)
            }
        };
        let gt = &t.grad[(row * cols).min(t.grad.len())..((row + 1) * cols).min(t.grad.len())];
        let gr = &r.grad[(row * cols).min(r.grad.len())..((row + 1) * cols).min(r.grad.len())];
        let at = |what: &'static str| move || format!("row {row} {what}");
        // lse output: logits only (ignored rows included).
        if let (false, Some(lt), Some(lr)) = (tiny_cap, &t.lse, &r.lse) {
            let want = if sh.finite() { lr[row] } else { f32::NAN };
            for (who, v) in [("tier", lt[row]), ("reference", lr[row])] {
                if sh.finite() == v.is_nan() {
                    rep.check(
                        at("lse"),
                        Err(format!("{who} {v:e}, row finite: {}", sh.finite())),
                    );
                }
            }
            if sh.finite() {
                let l = sh.lse.abs();
                let tol = 1e-6 * l.max(1.0) + pow2(-22) * l + 2.0 * dz;
                rep.check(at("lse"), close(lt[row], want, tol));
            }
        }
        // argmax: identical without a cap; within 2 dz of the maximum with one.
        if let (false, Some(at_), Some(ar)) = (tiny_cap, &t.argmax, &r.argmax) {
            if cap.is_none() {
                if at_[row] != ar[row] {
                    rep.check(
                        at("argmax"),
                        Err(format!("tier {}, reference {}", at_[row], ar[row])),
                    );
                }
            } else if sh.finite() {
                let a = at_[row] as usize;
                let okay = a < cols && sh.z[a] >= sh.m - 2.0 * dz - pow2(-60);
                if !okay {
                    rep.check(
                        at("argmax"),
                        Err(format!("tier {a} not within 2 dz of the capped max")),
                    );
                }
            }
        }
        let Some(tc) = class else {
            // Ignored: loss 0, gradient 0, in both.
            for (who, run) in [("tier", t), ("reference", r)] {
                if let Some(rl) = &run.row_loss {
                    if rl[row] != 0.0 {
                        rep.check(at("ignored loss"), Err(format!("{who} {:e}", rl[row])));
                    }
                }
                if has_grad {
                    let g = &run.grad[row * cols..(row + 1) * cols];
                    if let Some(i) = g.iter().position(|&v| v != 0.0) {
                        rep.check(at("ignored grad"), Err(format!("{who} [{i}] = {:e}", g[i])));
                    }
                }
            }
            continue;
        };
        if tiny_cap {
            all_loss_ok = false;
            continue;
        }
        // Rows whose logits decide NaN.
        let nan_row = sh.nan || (cap.is_none() && !sh.m.is_finite());
        if nan_row {
            for (who, run) in [("tier", t), ("reference", r)] {
                if let Some(rl) = &run.row_loss {
                    if !rl[row].is_nan() {
                        rep.check(at("NaN-row loss"), Err(format!("{who} {:e}", rl[row])));
                    }
                }
                if has_grad {
                    let g = &run.grad[row * cols..(row + 1) * cols];
                    if let Some(i) = g.iter().position(|v| !v.is_nan()) {
                        rep.check(at("NaN-row grad"), Err(format!("{who} [{i}] = {:e}", g[i])));
                    }
                }
            }
            continue;
        }
        // A finite row: the numeric checks, inside the domain.
        let g = (red * o.scale as f64 * o.row_scale.map_or(1.0, |v| v[row] as f64)) as f32 as f64;
        let tol = if probs {
            prob_row_tol(
                &sh,
                &y[row * cols..(row + 1) * cols],
                o,
                g,
                dz,
                weights_finite,
            )
        } else {
            class_row_tol(&sh, tc, o, g, dz, eps, wsum, weights_finite, &w_of)
        };
        if tol.loss_ok {
            if let (Some(lt), Some(lr)) = (&t.row_loss, &r.row_loss) {
                rep.check(at("loss"), close(lt[row], lr[row], tol.loss_tol));
            }
            sum_tol += tol.loss_tol;
            sum_mag += tol.loss_mag;
        } else {
            all_loss_ok = false;
        }
        if has_grad && tol.grad_ok {
            for j in 0..cols {
                let t_ = tol.grad_tol[j] + pow2(-23) * (gr[j] as f64).abs();
                if let Err(e) = close(gt[j], gr[j], t_) {
                    rep.check(|| format!("row {row} grad[{j}] (z = {:e})", xr[j]), Err(e));
                }
            }
        }
    }
    if all_loss_ok {
        let scale = if o.reduction == Reduction::Mean {
            1.0 / den.abs()
        } else {
            1.0
        };
        let tol = if sum_tol + sum_mag == 0.0 {
            0.0
        } else {
            (sum_tol + 1e-14 * sum_mag) * scale
        };
        rep.check(|| "loss_f64".into(), close64(st.loss_f64, sr.loss_f64, tol));
        rep.check(
            || "loss".into(),
            close(st.loss, sr.loss, tol + pow2(-23) * (sr.loss as f64).abs()),
        );
    }
    if cap.is_none() && st.correct != sr.correct {
        rep.check(
            || "correct".into(),
            Err(format!("tier {:?}, reference {:?}", st.correct, sr.correct)),
        );
    }
    rep.finish(|| "cross_entropy".into())
}

/// `1 + max |w_c|` (1 without weights).
fn wmax(o: &CrossEntropyOptions<'_>) -> f64 {
    1.0 + o.weight.map_or(1.0, |w| {
        w.iter().fold(0.0f64, |a, &v| a.max((v as f64).abs()))
    })
}

/// The loss error from f32 operations whose results are subnormal (absolute error up to
/// `2^-150` each, relative error unbounded): about `cols` of them per sum, each multiplied by
/// at most `1 + max |w|` and by `|lse| + |m| + |z_c - m| + 1` in the loss.
fn underflow(sh: &Shadow, o: &CrossEntropyOptions<'_>) -> f64 {
    let zmax =
        sh.z.iter()
            .filter(|v| v.is_finite())
            .fold(0.0f64, |a, &v| a.max(v.abs()));
    sh.z.len() as f64 * pow2(-146) * wmax(o) * (sh.lse.abs() + 2.0 * sh.m.abs() + zmax + 1.0)
}

/// How far `p_c` may move when every capped logit moves by up to `dz`: `p_c` lies in
/// `[p e^-2dz, p e^2dz]` (and in `[0, 1]`), so `|dp| <= min(1, p (e^2dz - 1))`. For the usual
/// caps this is `~2 dz p`; for a cap near `f32::MAX` (whose f32 tanh has an absolute error far
/// above the logits' spread) it is 1.
fn dp_cap(p: f64, dz: f64) -> f64 {
    let e = (2.0 * dz).exp_m1();
    if e.is_finite() {
        (p * e).min(1.0)
    } else {
        1.0
    }
}

/// `ulp(x)`: the gap above `|x|`.
fn ulp(x: f32) -> f64 {
    let a = x.abs();
    if a == f32::MAX {
        return pow2(104);
    }
    (f32::from_bits(a.to_bits() + 1) - a) as f64
}

/// Tolerances of a finite row with class target `t` (see the module docs).
#[allow(clippy::too_many_arguments)]
fn class_row_tol(
    sh: &Shadow,
    t: usize,
    o: &CrossEntropyOptions<'_>,
    g: f64,
    dz: f64,
    eps: f64,
    wsum: f64,
    weights_finite: bool,
    w_of: &dyn Fn(usize) -> f64,
) -> RowTol {
    let cols = sh.z.len();
    let cf = cols as f64;
    let wt = w_of(t);
    let zl = o.z_loss as f64;
    let lse = sh.lse;
    let dlse = 1e-6 * lse.abs().max(1.0) + 2.0 * dz;
    // The smoothing dot `sum w z` over finite z (infinite z follow IEEE in any order). The
    // SIMD tiers may accumulate it as `sum w (z - m)` (plus `m sum w`), so its f32 terms are
    // bounded by `|w| (|z| + |m|)`.
    let dot_mag: f64 = (0..cols)
        .filter(|&c| sh.z[c].is_finite())
        .map(|c| w_of(c).abs() * (sh.z[c].abs() + sh.m.abs()))
        .sum();
    let wabs: f64 = (0..cols).map(|c| w_of(c).abs()).sum();
    let ddot = 2e-6 * dot_mag + wabs * dz;
    let loss_ok = weights_finite && (eps == 0.0 || dot_mag <= LIM);
    let k1 = ((1.0 - eps) * wt).abs();
    let zt = sh.z[t];
    let loss =
        k1 * (lse - zt).abs() + zl * lse * lse + eps / cf * (wsum * lse).abs() + eps / cf * dot_mag;
    let loss_mag =
        k1 * (lse.abs() + zt.abs()) + zl * lse * lse + eps / cf * ((wsum * lse).abs() + dot_mag);
    let under = underflow(sh, o);
    let loss_tol = under
        + k1 * (dlse + dz)
        + zl * (2.0 * lse.abs() * dlse + dlse * dlse)
        + eps / cf * (wsum.abs() * dlse + ddot)
        + pow2(-22) * loss
        + 1e-14 * loss_mag;
    // Gradient: g (a0 + zl2 lse) p_c - smooth w_c - fix_t [c = t], times the chain factor.
    let a0 = ((1.0 - eps) * wt + eps / cf * wsum) as f32 as f64;
    let zl2 = (2.0 * o.z_loss) as f64;
    let smooth = (g * eps / cf) as f32 as f64;
    let fix_t = (g * (1.0 - eps) * wt) as f32 as f64;
    let ga = (g * (a0 + zl2 * lse)).abs();
    let mut grad_ok = weights_finite && ok_mag(g) && ok_mag(ga) && ok_mag(fix_t) && a0.is_finite();
    let wm = wmax(o);
    let mut grad_tol = Vec::with_capacity(cols);
    for c in 0..cols {
        let p = sh.p(c);
        let sc = (smooth * w_of(c)).abs();
        grad_ok &= ok_mag(sc);
        let f = if c == t { fix_t.abs() } else { 0.0 };
        let terms = ga * p + sc + f;
        // `p |z - m|` (0 for `z = -inf`, whose exp is exactly 0 in every tier).
        let pzm = if p > 0.0 {
            p * (sh.z[c] - sh.m).abs()
        } else {
            0.0
        };
        let mut tol = ga * (2e-6 * p + pow2(-23) * pzm)
            + (g * zl2).abs() * dlse * p
            + ga * pow2(-125)
            + g.abs() * wm * pow2(-146)
            + pow2(-22) * terms
            + 1e-37;
        if let Some(cap) = o.softcap {
            tol += ga * dp_cap(p, dz) + terms * (4.0 * dz / cap.abs() as f64 + pow2(-21));
        }
        grad_tol.push(tol);
    }
    RowTol {
        loss_ok,
        loss_tol,
        loss_mag,
        grad_ok,
        grad_tol,
    }
}

/// Tolerances of a finite row against probability targets `y` (see the module docs).
fn prob_row_tol(
    sh: &Shadow,
    y: &[f32],
    o: &CrossEntropyOptions<'_>,
    g: f64,
    dz: f64,
    weights_finite: bool,
) -> RowTol {
    let cols = sh.z.len();
    let cf = cols as f64;
    let eps = o.label_smoothing as f64;
    let zl = o.z_loss as f64;
    let lse = sh.lse;
    let dlse = 1e-6 * lse.abs().max(1.0) + 2.0 * dz;
    let ys: Vec<f64> = (0..cols)
        .map(|c| o.weight.map_or(1.0, |w| w[c] as f64) * ((1.0 - eps) * y[c] as f64 + eps / cf))
        .collect();
    let y_finite = y.iter().all(|v| v.is_finite());
    let wy: f64 = ys.iter().sum();
    let wy_mag: f64 = ys.iter().map(|v| v.abs()).sum();
    let wyz_mag: f64 = (0..cols)
        .filter(|&c| sh.z[c].is_finite())
        .map(|c| ys[c].abs() * (sh.z[c].abs() + sh.m.abs()))
        .sum();
    let dwy = 2e-6 * wy_mag;
    let dwyz = 2e-6 * wyz_mag + wy_mag * dz;
    let loss_ok = weights_finite && y_finite && wy_mag <= LIM && wyz_mag <= LIM;
    let loss_mag = lse.abs() * wy_mag + wyz_mag + zl * lse * lse;
    let under = underflow(sh, o);
    let loss_tol = under
        + lse.abs() * dwy
        + wy.abs() * dlse
        + dwyz
        + zl * (2.0 * lse.abs() * dlse + dlse * dlse)
        + pow2(-22) * loss_mag
        + 1e-14 * loss_mag;
    let zl2 = (2.0 * o.z_loss) as f64;
    let ga = (g * (wy + zl2 * lse)).abs();
    let mut grad_ok = loss_ok && ok_mag(g) && ok_mag(ga);
    let wm = wmax(o);
    let mut grad_tol = Vec::with_capacity(cols);
    for (c, &ysc) in ys.iter().enumerate() {
        let p = sh.p(c);
        let gy = (g * ysc).abs();
        grad_ok &= ok_mag(gy);
        let terms = ga * p + gy;
        // `p |z - m|` (0 for `z = -inf`, whose exp is exactly 0 in every tier).
        let pzm = if p > 0.0 {
            p * (sh.z[c] - sh.m).abs()
        } else {
            0.0
        };
        let mut tol = ga * (2e-6 * p + pow2(-23) * pzm)
            + g.abs() * (dwy + zl2.abs() * dlse) * p
            + ga * pow2(-125)
            + g.abs() * wm * pow2(-146)
            + pow2(-22) * terms
            + pow2(-22) * gy
            + 1e-37;
        if let Some(cap) = o.softcap {
            tol += ga * dp_cap(p, dz) + terms * (4.0 * dz / cap.abs() as f64 + pow2(-21));
        }
        grad_tol.push(tol);
    }
    RowTol {
        loss_ok,
        loss_tol,
        loss_mag,
        grad_ok,
        grad_tol,
    }
}
