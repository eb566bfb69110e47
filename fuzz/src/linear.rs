//! The output-layer family: `rank1_update`, `rank_k_update`, `weight_grad`, `bias_grad`,
//! `sgd_step`, `linear_forward`, `linear_backward_input`, with leading dimensions (padded and
//! trimmed `W` slices, `ld < D`, `ld` near `isize::MAX`), every batch size around the rank-k
//! crossover, the sgemm tiling, and BLAS's `alpha`/`beta` conventions; one tier against the
//! scalar reference.
//!
//! **Exact checks** (every input): the same `Ok`/`Err` and error; nothing written on error;
//! `W`'s padding (between `D` and `ld`) never written, by either tier.
//!
//! **Tolerance** (the crate's own test model, `tests/linear.rs`): an output that is `beta w +
//! alpha sum_i d_i a_i` over `k` terms, accumulated in f32 in any order with fused
//! multiply-adds, is within `(k + 3) 2^-23 M + 1e-30` of the exact value, `M = |alpha| sum_i
//! |d_i a_i| + |beta w|` (Higham 3.1 with a factor 2 for the epilogue's roundings); the
//! reference rounds its f64 result once (`2^-24` more). This assumes f32 neither overflows nor
//! underflows inside the kernel, so it is applied when every finite nonzero input (data,
//! `alpha`, `beta`, `lr / B`) lies in `[2^-30, 2^30]` (products of three stay within
//! `[2^-90, 2^90]`): there the NaN/infinity pattern must also match exactly (IEEE decides it the
//! same way in any order and either precision). Outside that range (`1e30`, `f32::MAX`,
//! subnormals) an f32 kernel may legitimately overflow or flush where the f64 reference does
//! not, so only NaN propagation is checked: an output fed by a NaN is NaN in both.

use softmax_kernels::{Error, Kernels, MatrixLayout};

use crate::input::{exact, perturb, split, Fill, Win, Words};
use crate::{close, pow2, reference, same_outcome, tier, unchanged, Report};

crate::header! {
    /// The linear target's header.
    pub struct LinHeader {
        /// The tier.
        pub tier: u8,
        /// `% 7`: the function (see [`Op`]).
        pub op: u8,
        /// `C` (rows of `W`) selector.
        pub c: u8,
        /// `D` (columns of `W`) selector.
        pub d: u16,
        /// `B` (batch) selector.
        pub b: u8,
        /// Leading dimension selector (see [`leading_dim`]).
        pub ld: u8,
        /// Bit 0: `W`'s slice leaves out the last row's padding.
        pub trim: u8,
        /// `alpha` (or `lr`) selector.
        pub alpha: u8,
        /// Its free bits.
        pub alpha_bits: u32,
        /// `beta` selector.
        pub beta: u8,
        /// Its free bits.
        pub beta_bits: u32,
        /// Bit 0: a bias; the rest perturbs its length.
        pub bias: u8,
        /// See `bias`.
        pub bias_delta: i8,
        /// Length perturbation of the first batch operand (`delta`, `x`, `a` of the forward).
        pub len1: u8,
        /// See `len1`.
        pub delta1: i8,
        /// Length perturbation of the second operand (`a`, `y`, `z`, `da`, `db`).
        pub len2: u8,
        /// See `len2`.
        pub delta2: i8,
        /// Length perturbation of `W`'s slice.
        pub wlen: u8,
        /// See `wlen`.
        pub wdelta: i8,
        /// Window of the first operand.
        pub win1: Win,
        /// Window of the second operand.
        pub win2: Win,
        /// Window of `W` (and the bias).
        pub winw: Win,
        /// Words past the input.
        pub fill: Fill,
    }
}

/// The functions, by `op % 7`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `rank1_update(alpha, x, y, w, [x.len(), y.len()] at stride ld)`
    Rank1,
    /// `rank_k_update(alpha, delta, a, w, layout)`
    RankK,
    /// `weight_grad(alpha, delta, a, beta, dw, layout)`
    WeightGrad,
    /// `bias_grad(alpha, delta, beta, db)`
    BiasGrad,
    /// `sgd_step(lr, delta, a, w, layout, bias)`
    SgdStep,
    /// `linear_forward(a, w, layout, b, z)`
    Forward,
    /// `linear_backward_input(delta, w, layout, da)`
    BackwardInput,
}

impl Op {
    /// In selector order.
    pub const ALL: [Op; 7] = [
        Op::Rank1,
        Op::RankK,
        Op::WeightGrad,
        Op::BiasGrad,
        Op::SgdStep,
        Op::Forward,
        Op::BackwardInput,
    ];
}

/// The padding of a strided `W`: a quiet NaN with a payload no kernel produces.
pub const PAD: u32 = 0x7FC0_0BAD;

/// `alpha`, `beta` or `lr` from a selector: mostly plain values, sometimes raw bits or specials.
pub fn scalar(sel: u8, bits: u32, plain: [f32; 3]) -> f32 {
    match sel % 8 {
        0..=2 => plain[sel as usize % 8],
        3 => 0.0,
        4 => -0.5,
        5 => f32::from_bits(bits),
        6 => [
            f32::NAN,
            f32::INFINITY,
            -0.0,
            1e-30,
            1e30,
            f32::MAX,
            f32::NEG_INFINITY,
            1e-45,
        ][bits as usize % 8],
        _ => (bits as i32) as f32 / (1 << 24) as f32,
    }
}

/// The leading dimension for `d` columns: mostly `d`, else `d` plus 1..=17, `d - 1` (an
/// error), or near `isize::MAX` / `usize::MAX` (overflow checks; only with a slice that needs
/// no such allocation).
pub fn leading_dim(sel: u8, d: usize) -> usize {
    match sel % 16 {
        0..=7 => d,
        8..=12 => d + 1 + (sel as usize >> 4),
        13 => d.wrapping_sub(1),
        14 => isize::MAX as usize,
        _ => usize::MAX - (sel as usize >> 4),
    }
}

/// Shapes `(C, D, B)`: small ones around the vector widths, rarely bigger (sgemm tiling) or a
/// long `D` with tiny `C` and `B`.
pub fn dims(h: &LinHeader) -> (usize, usize, usize) {
    if h.d >= 0xFF00 {
        return (
            h.c as usize % 3,
            crate::LONG_COLS[(h.d & 0xF) as usize],
            h.b as usize % 3,
        );
    }
    if h.d & 0x8000 != 0 && h.c & 0x80 != 0 {
        // Up to 300 x 300 x 40: past sgemm's single-call threshold (2^21 multiply-adds).
        let c = 1 + h.c as usize % 300;
        let d = 1 + (h.d & 0x7FFF) as usize % 300;
        return (c, d, h.b as usize % 41);
    }
    (h.c as usize % 40, h.d as usize % 70, h.b as usize % 24)
}

/// The checker (see the module docs).
pub fn check(data: &[u8]) -> Result<(), String> {
    let (h, rest) = split::<LinHeader>(data);
    let mut words = Words::new(rest, h.fill);
    let k = tier(h.tier);
    let r = reference();
    let op = Op::ALL[h.op as usize % Op::ALL.len()];
    let (c, d, b) = dims(&h);
    let ld = leading_dim(h.ld, d);
    let layout = MatrixLayout::new(c, d).with_ld(ld);
    let ctx = move || format!("[{}] {op:?} C {c} D {d} B {b} ld {ld}", k.isa());
    run_op(&h, &mut words, op, layout, b, k, r).map_err(|e| format!("{}\n{e}", ctx()))
}

/// `W`'s slice: `C * ld` or `(C - 1) * ld + D` floats (padding = [`PAD`]), or, when that is
/// not allocatable (a huge `ld`), `D` floats; then perturbed.
fn make_w(h: &LinHeader, words: &mut Words, lay: MatrixLayout) -> Vec<f32> {
    let MatrixLayout { rows, cols, ld } = lay;
    let len = if h.trim & 1 != 0 && rows > 0 {
        (rows - 1).checked_mul(ld).and_then(|v| v.checked_add(cols))
    } else {
        rows.checked_mul(ld)
    };
    let len = len.filter(|&l| l <= 1 << 22).unwrap_or(cols);
    let len = perturb(len, h.wlen, h.wdelta);
    let vals = words.floats(len, h.winw);
    let mut w = exact(&vals);
    if ld > 0 {
        for (i, v) in w.iter_mut().enumerate() {
            if i % ld >= cols {
                *v = f32::from_bits(PAD);
            }
        }
    }
    w
}

struct Outs {
    res: Result<(), Error>,
    /// The in/out matrix or vector (`W`, `dW`, `db`, `Z`, `dA`).
    out: Vec<f32>,
    /// The bias of `sgd_step`.
    bias: Option<Vec<f32>>,
}

/// `a b`, but 0 when either is 0 (a magnitude times an empty sum).
fn mul0(a: f64, b: f64) -> f64 {
    if a == 0.0 || b == 0.0 {
        0.0
    } else {
        a * b
    }
}

/// Is `v` zero, non-finite, or of magnitude in `[2^-30, 2^30]`?
fn in_range(v: f32) -> bool {
    let a = v.abs() as f64;
    v == 0.0 || !v.is_finite() || (pow2(-30)..=pow2(30)).contains(&a)
}

fn run_op(
    h: &LinHeader,
    words: &mut Words,
    op: Op,
    lay: MatrixLayout,
    b: usize,
    k: &Kernels,
    r: &Kernels,
) -> Result<(), String> {
    let (c0, d0) = (lay.rows, lay.cols);
    let alpha = scalar(h.alpha, h.alpha_bits, [1.0, 1.0, 2.0]);
    let beta = scalar(h.beta, h.beta_bits, [0.0, 1.0, 0.5]);
    // Operands. rank1: x (C), y (D). Forward: a (B x D), z (B x C). Backward: delta (B x C),
    // da (B x D). bias_grad: delta (B x C), db (C). Others: delta (B x C), a (B x D).
    let (n1, n2) = match op {
        Op::Rank1 => (c0, d0),
        Op::Forward => (b * d0, b * c0),
        Op::BackwardInput => (b * c0, b * d0),
        Op::BiasGrad => (b * c0, c0),
        _ => (b * c0, b * d0),
    };
    let v1 = words.floats(perturb(n1, h.len1, h.delta1), h.win1);
    let v2 = words.floats(perturb(n2, h.len2, h.delta2), h.win2);
    // rank1_update gets C and D from x and y (the layout is built from their lengths),
    // bias_grad takes C from db.
    let (c, d) = match op {
        Op::Rank1 => (v1.len(), v2.len()),
        Op::BiasGrad => (v2.len(), d0),
        _ => (c0, d0),
    };
    let lay = MatrixLayout::new(c, d).with_ld(lay.ld);
    let w = match op {
        Op::BiasGrad => Vec::new(),
        _ => make_w(h, words, lay),
    };
    let bias = (h.bias & 1 != 0 && matches!(op, Op::SgdStep | Op::Forward))
        .then(|| words.floats(perturb(c, h.bias >> 1, h.bias_delta), h.winw));
    // The in/out buffer's initial contents.
    let out0: Vec<f32> = match op {
        Op::Rank1 | Op::RankK | Op::WeightGrad | Op::SgdStep => w.clone(),
        Op::BiasGrad => v2.clone(),
        Op::Forward | Op::BackwardInput => vec![f32::from_bits(crate::UNWRITTEN); v2.len()],
    };
    let go = |kk: &Kernels| -> Outs {
        let mut out = exact(&out0);
        let mut bs = bias.as_deref().map(exact);
        let res = match op {
            Op::Rank1 => {
                let l1 = MatrixLayout::new(v1.len(), v2.len()).with_ld(lay.ld);
                kk.rank1_update(alpha, &v1, &v2, &mut out, l1)
            }
            Op::RankK => kk.rank_k_update(alpha, &v1, &v2, &mut out, lay),
            Op::WeightGrad => kk.weight_grad(alpha, &v1, &v2, beta, &mut out, lay),
            Op::BiasGrad => kk.bias_grad(alpha, &v1, beta, &mut out),
            Op::SgdStep => kk.sgd_step(alpha, &v1, &v2, &mut out, lay, bs.as_deref_mut()),
            Op::Forward => kk.linear_forward(&v1, &w, lay, bias.as_deref(), &mut out),
            Op::BackwardInput => kk.linear_backward_input(&v1, &w, lay, &mut out),
        };
        Outs { res, out, bias: bs }
    };
    let t = go(k);
    let rf = go(r);
    if !same_outcome("result", &t.res, &rf.res)? {
        for (who, o) in [("tier", &t), ("reference", &rf)] {
            unchanged(&format!("{who} output"), &out0, &o.out)?;
            if let (Some(b0), Some(b1)) = (&bias, &o.bias) {
                unchanged(&format!("{who} bias"), b0, b1)?;
            }
        }
        return Ok(());
    }
    let mut rep = Report::default();
    // The padding of W (in/out ops), never written.
    if matches!(op, Op::Rank1 | Op::RankK | Op::WeightGrad | Op::SgdStep) && lay.ld > 0 {
        for (who, o) in [("tier", &t), ("reference", &rf)] {
            if let Some(i) =
                (0..o.out.len()).find(|&i| i % lay.ld >= d && o.out[i].to_bits() != PAD)
            {
                rep.check(
                    || format!("{who} padding"),
                    Err(format!("W[{i}] (column {}) = {:e}", i % lay.ld, o.out[i])),
                );
            }
        }
    }
    // The batch really used (shapes were accepted).
    let bb = match op {
        Op::Rank1 => 1,
        Op::BiasGrad => v1.len().checked_div(c).unwrap_or(0),
        Op::Forward => v1
            .len()
            .checked_div(d)
            .unwrap_or_else(|| v2.len().checked_div(c).unwrap_or(0)),
        _ => v1
            .len()
            .checked_div(c)
            .unwrap_or_else(|| v2.len().checked_div(d).unwrap_or(0)),
    };
    let _ = b;
    // Effective alpha, beta (sgd_step folds lr / B into alpha with beta = 1).
    let (alpha_e, beta_e, active) = match op {
        // lr = 0 gives alpha = -0: W is left alone (BLAS's alpha = 0), as for an empty batch.
        Op::SgdStep => {
            let a = -(alpha / bb.max(1) as f32);
            (a, 1.0f32, bb > 0 && a != 0.0)
        }
        Op::Rank1 => (alpha, 1.0, alpha != 0.0),
        Op::RankK => (alpha, 1.0, alpha != 0.0 && bb > 0),
        Op::WeightGrad | Op::BiasGrad => (alpha, beta, true),
        Op::Forward | Op::BackwardInput => (1.0, 0.0, true),
    };
    let mut vals: Vec<f32> = vec![alpha_e, beta_e];
    vals.extend_from_slice(&v1);
    vals.extend_from_slice(&v2);
    vals.extend(w.iter().copied().filter(|v| v.to_bits() != PAD));
    if let Some(bv) = &bias {
        vals.extend_from_slice(bv);
    }
    let dom = vals.iter().all(|&v| in_range(v)) && bb <= 1 << 20;
    // Element (i, j) of the output: its exact value, its `M`, `k`, and whether a NaN feeds it.
    let elem = |i: usize, j: usize| -> Option<(f64, f64, usize, bool)> {
        match op {
            Op::Rank1 | Op::RankK | Op::WeightGrad | Op::SgdStep => {
                // Row i (class), column j (feature) of W.
                let w0 = out0[i * lay.ld + j];
                let reads_w = op != Op::WeightGrad || beta_e != 0.0;
                let (mut s, mut m, mut nan) = (0.0f64, 0.0f64, false);
                let kk = if op == Op::Rank1 { 1 } else { bb };
                if active && !(op == Op::WeightGrad && alpha_e == 0.0) {
                    for l in 0..kk {
                        let (p, q) = if op == Op::Rank1 {
                            (v1[i], v2[j])
                        } else {
                            (v1[l * c + i], v2[l * d + j])
                        };
                        s += p as f64 * q as f64;
                        m += (p as f64 * q as f64).abs();
                        nan |= p.is_nan() || q.is_nan();
                    }
                    nan |= alpha_e.is_nan() && kk > 0;
                } else if op != Op::WeightGrad {
                    // Untouched.
                    return Some((w0 as f64, 0.0, 0, w0.is_nan()));
                }
                let bw = if reads_w {
                    beta_e as f64 * w0 as f64
                } else {
                    0.0
                };
                nan |= reads_w && (w0.is_nan() || beta_e.is_nan());
                let exact_v = alpha_e as f64 * s + bw;
                Some((exact_v, mul0((alpha_e as f64).abs(), m) + bw.abs(), kk, nan))
            }
            Op::BiasGrad => {
                let w0 = out0[j];
                let reads = beta_e != 0.0;
                let mut s = 0.0f64;
                let mut m = 0.0f64;
                let mut nan = alpha_e.is_nan() && bb > 0;
                if alpha_e != 0.0 {
                    for l in 0..bb {
                        let p = v1[l * c + j];
                        s += p as f64;
                        m += (p as f64).abs();
                        nan |= p.is_nan();
                    }
                }
                let bw = if reads {
                    beta_e as f64 * w0 as f64
                } else {
                    0.0
                };
                nan |= reads && (w0.is_nan() || beta_e.is_nan());
                Some((
                    alpha_e as f64 * s + bw,
                    mul0((alpha_e as f64).abs(), m) + bw.abs(),
                    bb,
                    nan,
                ))
            }
            Op::Forward => {
                // z[i, j]: sample i, class j.
                let (mut s, mut m, mut nan) = (0.0f64, 0.0f64, false);
                for l in 0..d {
                    let (p, q) = (v1[i * d + l], w[j * lay.ld + l]);
                    s += p as f64 * q as f64;
                    m += (p as f64 * q as f64).abs();
                    nan |= p.is_nan() || q.is_nan();
                }
                let bj = bias.as_ref().map_or(0.0, |bv| bv[j]);
                nan |= bj.is_nan();
                Some((s + bj as f64, m + (bj as f64).abs(), d, nan))
            }
            Op::BackwardInput => {
                // da[i, j]: sample i, feature j.
                let (mut s, mut m, mut nan) = (0.0f64, 0.0f64, false);
                for l in 0..c {
                    let (p, q) = (v1[i * c + l], w[l * lay.ld + j]);
                    s += p as f64 * q as f64;
                    m += (p as f64 * q as f64).abs();
                    nan |= p.is_nan() || q.is_nan();
                }
                Some((s, m, c, nan))
            }
        }
    };
    let (orows, ocols, ostride) = match op {
        Op::Rank1 | Op::RankK | Op::WeightGrad | Op::SgdStep => (c, d, lay.ld),
        Op::BiasGrad => (1, c, c),
        Op::Forward => (bb, c, c),
        Op::BackwardInput => (bb, d, d),
    };
    for i in 0..orows {
        for j in 0..ocols {
            let idx = i * ostride + j;
            let (gt, gr) = (t.out[idx], rf.out[idx]);
            let Some((_, m, kk, nan)) = elem(i, j) else {
                continue;
            };
            let at = || format!("out[{i}, {j}]");
            if dom {
                let tol =
                    mul0((kk as f64 + 3.0) * pow2(-23), m) + pow2(-24) * (gr as f64).abs() + 1e-30;
                rep.check(at, close(gt, gr, tol));
            } else if nan && !(gt.is_nan() && gr.is_nan()) {
                rep.check(
                    at,
                    Err(format!(
                        "a NaN input must give NaN: tier {gt:e}, reference {gr:e}"
                    )),
                );
            }
        }
    }
    // sgd_step's bias: b + alpha_e sum_rows delta.
    if let (Op::SgdStep, true, Some(bt), Some(br), Some(b0)) =
        (op, active, &t.bias, &rf.bias, &bias)
    {
        for j in 0..c {
            let (mut m, mut nan) = (0.0f64, alpha_e.is_nan() || b0[j].is_nan());
            for l in 0..bb {
                m += (v1[l * c + j] as f64).abs();
                nan |= v1[l * c + j].is_nan();
            }
            let m = mul0((alpha_e as f64).abs(), m) + (b0[j] as f64).abs();
            let at = || format!("bias[{j}]");
            if dom {
                let tol = mul0((bb as f64 + 3.0) * pow2(-23), m)
                    + pow2(-24) * (br[j] as f64).abs()
                    + 1e-30;
                rep.check(at, close(bt[j], br[j], tol));
            } else if bb > 0 && nan && !(bt[j].is_nan() && br[j].is_nan()) {
                rep.check(
                    at,
                    Err(format!(
                        "NaN input: tier {:e}, reference {:e}",
                        bt[j], br[j]
                    )),
                );
            }
        }
    }
    if let (Op::SgdStep, false, Some(b0)) = (op, active, &bias) {
        for (who, o) in [("tier", &t), ("reference", &rf)] {
            if let Some(bv) = &o.bias {
                rep.check(
                    || format!("{who} bias (no step)"),
                    unchanged("bias", b0, bv),
                );
            }
        }
    }
    rep.finish(|| format!("in range: {dom}"))
}
