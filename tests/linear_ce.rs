//! The fused linear cross-entropy (`softmax_kernels::linear_ce`) on every available tier.
//!
//! * `fused_matches_unfused_*`: [`Kernels::linear_cross_entropy`] against the unfused
//!   composition of the same tier's public kernels (`linear_forward`, `cross_entropy_with` in
//!   place, `linear_backward_input`, `weight_grad`, `bias_grad`): the loss, `dA`, `dW`, `db`,
//!   `row_loss`, `lse`, `argmax` and the stats, on `C` in {1, 2, 7, 8, 9, 15, 16, 17, 33, 1000},
//!   `D` in {1, ..., 24}, odd and even `B`, dense and strided `W` (with and without the last
//!   row's padding in the slice), with and without a bias; option combinations (default, Sum,
//!   None with `row_scale`, class weights, ignored rows, label smoothing, z-loss, soft-cap,
//!   `scale`, everything at once); every chunking (automatic, whole-row chunks of 1, 3 and `B`
//!   rows, row and class chunks together with class blocks of 1, 5, 16, `C - 1` and `C`,
//!   `chunk_bytes` small enough to make the automatic choice class blocks); and subsets of the
//!   outputs (loss only, one gradient), which must give the same bits as all of them.
//!   Probability targets in whole-row mode.
//! * `gradients_match_finite_differences`: `dA`, `dW`, `db` of the fused call against central
//!   differences of an f64 loss written here from the formulas of `src/cross_entropy.rs`'s
//!   module docs (weights, ignored rows, smoothing, z-loss, soft-cap, reductions, `scale`,
//!   `row_scale`, probability targets), and the fused loss against that f64 loss.
//! * `hand_derived_*`: `W = 0, b = 0` gives `ln C` and `db = mean(1/C - onehot)`; two classes
//!   give the logistic loss and its derivatives.
//! * `special_values_*`: `-inf`, `+inf`, NaN and `±1e30` biases, all rows ignored, `B = 0`,
//!   `D = 0`, in both modes, against the unfused composition (NaN positions equal) and the
//!   documented semantics.
//! * `thread_count_determinism`: bit-identical loss and gradients in rayon pools of 1, 2, 3 and
//!   8 threads, in row mode and class mode.
//! * `accumulate_and_strided_w`: `accumulate(true)` adds to `dW`/`db` and overwrites `dA`;
//!   strided `W` and `dW` leave the padding untouched.
//! * `step_*`: [`Kernels::linear_cross_entropy_step`] against the fused gradient followed by
//!   [`Sgd::apply_grad`] / [`Sgd::apply_bias_grad`] on a second optimizer, over 3 steps; its
//!   errors leave everything unchanged.
//! * `errors_*`: every typed error, and that nothing is written on an error.
//! * `argmax_ties_take_the_first_index`: equal maxima in different class blocks.
//! * `label_types_and_free_function`: i32 / usize / u8 labels give the bits of i64 labels; the
//!   free function is the active tier's method.
//! * `forward_is_the_same_on_sub_problems`: the premise of the tolerances below.
//! * `huge_class_count_returns`: `C` near `usize::MAX` with `D = 0` and no rows returns (in a
//!   child process, so that an abort fails the test instead of the binary).
//!
//! **Tolerances** (fused vs unfused; both are f32 computations with the same kernels). Both
//! see the same f32 logits (`forward_is_the_same_on_sub_problems` checks that `linear_forward`
//! gives the same bits on the row chunks and class blocks the fused call forms), so:
//!
//! * whole-row chunks: the module docs say the results equal the unfused composition up to the
//!   association of the `dW` and `db` sums; the per-row outputs and `dA` must be bit-identical,
//!   the loss equal up to the f64 sum of the row losses, `dW` and `db` within the rounding of a
//!   `B`-term f32 sum (`(2B + 3) 2^-22 sum |terms|`: the GEMM bound of `tests/linear.rs` on
//!   each side, with room for one extra rounding per chunk);
//! * every chunking (class blocks included), with bounds computed from an f64 evaluation of the
//!   case (`eval64`), never from the crate's outputs: a gradient element
//!   `dL/dz_c = g (P p_c - s_c - fix [c = t])` differs by at most `eG = 2e-6 R` with
//!   `R = |g| (|P| + max |s_c| + |fix|)` the row's largest term (the softmax contract's 1e-6
//!   relative error on each side: the class blocks reach `p_c` through the block's own
//!   logsumexp); `dA = G W` (`C` terms over at most `C` class blocks), `dW = G^T A` and
//!   `db = colsum G` (`B` terms over at most `B` row chunks) get `(2k + 3) 2^-22 sum |terms|`
//!   plus the propagated `eG`; a row's loss `2e-6 L max(1, |lse|, max |z|)`, `L` the sum of
//!   the magnitudes of its coefficients (as `tests/cross_entropy.rs`), `lse` `2e-6 max(1,
//!   |lse|)`; the reduced loss sums the rows' bounds;
//! * the argmax must be equal, or a tie: two logits within twice the f32 GEMM error
//!   `(D + 3) 2^-22 max_c (sum_j |a_j w_cj| + |b_c|)` of each other in f64;
//! * every element also gets one f32 ULP of the expected value.
//!
//! The largest error / tolerance ratio of each quantity is printed (`--nocapture`). Debug
//! builds skip the 67 x 1000 x 24 shape and run the determinism check on a smaller one.

mod common;

use std::collections::BTreeMap;

use common::{ok, rng, Guarded};
use rand::rngs::StdRng;
use rand::Rng;
use softmax_kernels::{
    AllIgnored, CrossEntropyOptions, CrossEntropyOutputs, CrossEntropyStats, Error, Kernels,
    LinearCeOptions, LinearCeOutputs, Logits, MatrixLayout, Reduction, SgdOptions, Targets,
};

/// Padding of strided matrices and the initial value of every output buffer: a quiet NaN with
/// a payload no kernel produces.
const PAD: f32 = f32::from_bits(0x7FC0_0BAD);

/// Debug builds (`cargo test` without `--release`) skip the largest shapes.
const DEBUG: bool = cfg!(debug_assertions);

/// `2^-22`: twice the f32 unit roundoff (the two sides of a fused-vs-unfused comparison).
const U2: f64 = 1.0 / 4_194_304.0;
/// Per-element relative error of a gradient of the logits, per unit of the row's magnitude.
const GREL: f64 = 2e-6;
/// Relative error of a row's loss terms.
const LREL: f64 = 2e-6;

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// The cross-entropy options of a case (the buffers they borrow live in [`Case`]).
#[derive(Clone, Copy, Debug)]
struct Combo {
    name: &'static str,
    reduction: Reduction,
    weight: bool,
    /// Every fourth row (from row 1) gets the ignored label -100.
    ignore: bool,
    eps: f32,
    z_loss: f32,
    softcap: Option<f32>,
    scale: f32,
    row_scale: bool,
}

const BASE: Combo = Combo {
    name: "default",
    reduction: Reduction::Mean,
    weight: false,
    ignore: false,
    eps: 0.0,
    z_loss: 0.0,
    softcap: None,
    scale: 1.0,
    row_scale: false,
};

const COMBOS: [Combo; 11] = [
    BASE,
    Combo {
        name: "sum",
        reduction: Reduction::Sum,
        ..BASE
    },
    Combo {
        name: "none+row_scale",
        reduction: Reduction::None,
        row_scale: true,
        ..BASE
    },
    Combo {
        name: "weights",
        weight: true,
        ..BASE
    },
    Combo {
        name: "ignore",
        ignore: true,
        ..BASE
    },
    Combo {
        name: "smoothing",
        eps: 0.1,
        ..BASE
    },
    Combo {
        name: "z_loss",
        z_loss: 1e-2,
        ..BASE
    },
    Combo {
        name: "softcap",
        softcap: Some(3.0),
        ..BASE
    },
    Combo {
        name: "scale",
        reduction: Reduction::Sum,
        scale: -0.5,
        ..BASE
    },
    Combo {
        name: "all(mean)",
        weight: true,
        ignore: true,
        eps: 0.2,
        z_loss: 1e-2,
        softcap: Some(4.0),
        scale: 0.75,
        ..BASE
    },
    Combo {
        name: "all(none)",
        reduction: Reduction::None,
        weight: true,
        ignore: true,
        eps: 0.3,
        z_loss: 3e-3,
        softcap: Some(2.5),
        scale: 1.5,
        row_scale: true,
    },
];

/// One problem: `A` `[B, D]`, `W` `[C, D]` with leading dimension `ld` (padding [`PAD`]), an
/// optional bias, targets and the options' buffers.
#[derive(Clone, Debug)]
struct Case {
    b: usize,
    c: usize,
    d: usize,
    ld: usize,
    a: Vec<f32>,
    w: Vec<f32>,
    bias: Option<Vec<f32>>,
    labels: Vec<i64>,
    /// Probability targets (`[B, C]`) instead of the labels.
    probs: Option<Vec<f32>>,
    weight: Vec<f32>,
    row_scale: Vec<f32>,
    combo: Combo,
    all_ignored: AllIgnored,
}

/// How a case is built.
#[derive(Clone, Copy, Debug)]
struct Spec {
    b: usize,
    c: usize,
    d: usize,
    /// `ld - d`.
    pad: usize,
    /// Leave the last row's padding out of `W`'s slice.
    trim: bool,
    bias: bool,
    probs: bool,
    /// The logits' standard deviation, roughly.
    zscale: f32,
}

impl Spec {
    fn new(b: usize, c: usize, d: usize) -> Spec {
        Spec {
            b,
            c,
            d,
            pad: 0,
            trim: false,
            bias: true,
            probs: false,
            zscale: 2.0,
        }
    }
}

fn uniform(r: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| r.gen_range(lo..hi)).collect()
}

impl Case {
    fn new(seed: u64, s: Spec, combo: Combo) -> Case {
        let mut r = rng(seed);
        let Spec { b, c, d, .. } = s;
        let ld = d + s.pad;
        let a = uniform(&mut r, b * d, -1.0, 1.0);
        // z has variance about D (1/3) (sw^2 / 3): sw = 3 zscale / sqrt(D) gives sd ~ zscale.
        let sw = 3.0 * s.zscale / (d.max(1) as f32).sqrt();
        let wlen = if s.trim && c > 0 {
            (c - 1) * ld + d
        } else {
            c * ld
        };
        let mut w = vec![PAD; wlen];
        for i in 0..c {
            for j in 0..d {
                w[i * ld + j] = r.gen_range(-sw..sw);
            }
        }
        let bias = s.bias.then(|| uniform(&mut r, c, -1.0, 1.0));
        let labels = (0..b)
            .map(|i| {
                if combo.ignore && i % 4 == 1 {
                    -100
                } else {
                    r.gen_range(0..c.max(1)) as i64
                }
            })
            .collect();
        let probs = s.probs.then(|| {
            let mut y = uniform(&mut r, b * c, 0.0, 1.0);
            for row in y.chunks_mut(c.max(1)) {
                let t: f32 = row.iter().sum();
                row.iter_mut().for_each(|v| *v /= t);
            }
            y
        });
        let weight = uniform(&mut r, c, 0.2, 2.0);
        let row_scale = uniform(&mut r, b, -1.0, 2.0);
        Case {
            b,
            c,
            d,
            ld,
            a,
            w,
            bias,
            labels,
            probs,
            weight,
            row_scale,
            combo,
            all_ignored: AllIgnored::Nan,
        }
    }

    fn layout(&self) -> MatrixLayout {
        MatrixLayout::new(self.c, self.d).with_ld(self.ld)
    }

    fn ce(&self) -> CrossEntropyOptions<'_> {
        let k = &self.combo;
        let mut o = CrossEntropyOptions::default()
            .reduction(k.reduction)
            .label_smoothing(k.eps)
            .z_loss(k.z_loss)
            .scale(k.scale)
            .all_ignored(self.all_ignored);
        if k.weight {
            o = o.weight(&self.weight);
        }
        if let Some(cap) = k.softcap {
            o = o.softcap(cap);
        }
        if k.row_scale {
            o = o.row_scale(&self.row_scale);
        }
        o
    }

    fn targets(&self) -> Targets<'_, i64> {
        match &self.probs {
            Some(y) => Targets::Probs(y),
            None => Targets::Classes(&self.labels),
        }
    }

    /// `A`, dense `W` and the bias (0 when absent) in f64.
    fn inputs64(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let a = self.a.iter().map(|&v| v as f64).collect();
        let mut w = vec![0.0; self.c * self.d];
        for i in 0..self.c {
            for j in 0..self.d {
                w[i * self.d + j] = self.w[i * self.ld + j] as f64;
            }
        }
        let b = match &self.bias {
            Some(b) => b.iter().map(|&v| v as f64).collect(),
            None => vec![0.0; self.c],
        };
        (a, w, b)
    }
}

/// A chunking of the fused call.
#[derive(Clone, Copy, Debug, Default)]
struct Chunking {
    rows: Option<usize>,
    classes: Option<usize>,
    bytes: Option<usize>,
}

impl Chunking {
    const AUTO: Chunking = Chunking {
        rows: None,
        classes: None,
        bytes: None,
    };
    fn rows(r: usize) -> Chunking {
        Chunking {
            rows: Some(r),
            ..Chunking::AUTO
        }
    }
    fn rc(r: usize, k: usize) -> Chunking {
        Chunking {
            rows: Some(r),
            classes: Some(k),
            bytes: None,
        }
    }
    fn classes(k: usize) -> Chunking {
        Chunking {
            classes: Some(k),
            ..Chunking::AUTO
        }
    }
    fn bytes(n: usize) -> Chunking {
        Chunking {
            bytes: Some(n),
            ..Chunking::AUTO
        }
    }

    fn apply<'a>(self, mut o: LinearCeOptions<'a>) -> LinearCeOptions<'a> {
        if let Some(r) = self.rows {
            o = o.chunk_rows(r);
        }
        if let Some(k) = self.classes {
            o = o.chunk_classes(k);
        }
        if let Some(n) = self.bytes {
            o = o.chunk_bytes(n);
        }
        o
    }
}

/// The chunkings of item 1 for a `[b, c]` problem; `big` keeps the count of GEMM calls down.
fn chunkings(b: usize, c: usize, big: bool) -> Vec<Chunking> {
    let mut v = vec![
        Chunking::AUTO,
        Chunking::rows(1),
        Chunking::rows(3),
        Chunking::rows(b.max(1)),
        Chunking::rc(b.max(1), c),
        Chunking::rc(2, c + 3),
        Chunking::classes(5),
        Chunking::rc(b.max(1), 16),
    ];
    if big {
        v.extend([
            Chunking::rc(b, 1),
            Chunking::rc(16, 5),
            Chunking::rc(5, 333),
        ]);
    } else {
        v.extend([Chunking::rc(2, 1), Chunking::rc(3, 5), Chunking::rc(1, 2)]);
    }
    if c > 1 {
        v.push(Chunking::rc(4, c - 1));
        // One row of logits does not fit: the automatic choice is class blocks (`1 x (C - 1)`
        // and `1 x C/3`).
        v.push(Chunking::bytes(4 * (c - 1)));
        v.push(Chunking::bytes(4 * (c / 3).max(1)));
    }
    // Room for two rows: whole rows when B <= 2, else the automatic class decision.
    v.push(Chunking::bytes(8 * c));
    v
}

// ---------------------------------------------------------------------------------------------
// Running the fused call and the unfused composition
// ---------------------------------------------------------------------------------------------

/// Which outputs a fused call asks for.
#[derive(Clone, Copy, Debug)]
struct Want {
    da: bool,
    dw: bool,
    db: bool,
    row_loss: bool,
    lse: bool,
    argmax: bool,
}

const ALL: Want = Want {
    da: true,
    dw: true,
    db: true,
    row_loss: true,
    lse: true,
    argmax: true,
};

/// Everything a call returned (absent outputs `None`).
#[derive(Clone, Debug)]
struct Res {
    st: CrossEntropyStats,
    da: Option<Vec<f32>>,
    dw: Option<Vec<f32>>,
    db: Option<Vec<f32>>,
    row_loss: Option<Vec<f32>>,
    lse: Option<Vec<f32>>,
    argmax: Option<Vec<u32>>,
}

/// The fused call with the outputs of `want` in guarded buffers filled with [`PAD`] (`dW` in
/// `W`'s layout; its padding must stay [`PAD`]). Panics if a guard was written.
fn fused(
    k: &Kernels,
    case: &Case,
    lo: &LinearCeOptions<'_>,
    want: Want,
    misalign: usize,
) -> Result<Res, Error> {
    let m = |o: usize| (misalign + o) % 16;
    let mut da = Guarded::filled(case.b * case.d, PAD, m(0));
    let mut dw = Guarded::filled(case.w.len(), PAD, m(3));
    let mut db = Guarded::filled(case.c, PAD, m(5));
    let mut rl = Guarded::filled(case.b, PAD, m(7));
    let mut ls = Guarded::filled(case.b, PAD, m(11));
    let mut am = vec![u32::MAX; case.b];
    let r = {
        let mut out = LinearCeOutputs {
            da: want.da.then_some(da.slice_mut()),
            dw: want.dw.then_some(dw.slice_mut()),
            db: want.db.then_some(db.slice_mut()),
            ce: CrossEntropyOutputs {
                row_loss: want.row_loss.then_some(rl.slice_mut()),
                lse: want.lse.then_some(ls.slice_mut()),
                argmax: want.argmax.then_some(&mut am[..]),
            },
        };
        k.linear_cross_entropy(
            &case.a,
            &case.w,
            case.layout(),
            case.bias.as_deref(),
            case.targets(),
            lo,
            &mut out,
        )
    };
    for (name, g) in [
        ("da", &da),
        ("dw", &dw),
        ("db", &db),
        ("row_loss", &rl),
        ("lse", &ls),
    ] {
        g.assert_guards(&format!("{} {name}", k.isa()));
    }
    let st = r?;
    Ok(Res {
        st,
        da: want.da.then(|| da.to_vec()),
        dw: want.dw.then(|| dw.to_vec()),
        db: want.db.then(|| db.to_vec()),
        row_loss: want.row_loss.then(|| rl.to_vec()),
        lse: want.lse.then(|| ls.to_vec()),
        argmax: want.argmax.then_some(am),
    })
}

/// The unfused composition on tier `k`: forward, cross-entropy in place, the backward GEMMs.
fn unfused(k: &Kernels, case: &Case) -> Res {
    let (b, c, d) = (case.b, case.c, case.d);
    let lay = case.layout();
    let mut z = vec![0.0f32; b * c];
    k.linear_forward(&case.a, &case.w, lay, case.bias.as_deref(), &mut z)
        .unwrap();
    let (mut rl, mut ls, mut am) = (vec![0.0f32; b], vec![0.0f32; b], vec![0u32; b]);
    let st = k
        .cross_entropy_with(
            Logits::InPlace(&mut z),
            case.targets(),
            c,
            &case.ce(),
            &mut CrossEntropyOutputs {
                row_loss: Some(&mut rl),
                lse: Some(&mut ls),
                argmax: Some(&mut am),
            },
        )
        .unwrap();
    let mut da = vec![0.0f32; b * d];
    k.linear_backward_input(&z, &case.w, lay, &mut da).unwrap();
    let mut dw = vec![PAD; case.w.len()];
    k.weight_grad(1.0, &z, &case.a, 0.0, &mut dw, lay).unwrap();
    let mut db = vec![0.0f32; c];
    k.bias_grad(1.0, &z, 0.0, &mut db).unwrap();
    Res {
        st,
        da: Some(da),
        dw: Some(dw),
        db: Some(db),
        row_loss: Some(rl),
        lse: Some(ls),
        argmax: Some(am),
    }
}

// ---------------------------------------------------------------------------------------------
// The f64 oracle
// ---------------------------------------------------------------------------------------------

/// A case evaluated in f64 from the formulas of `src/cross_entropy.rs`'s module docs.
#[derive(Clone, Debug)]
struct Eval {
    /// The capped logits `[B, C]`.
    zc: Vec<f64>,
    lse: Vec<f64>,
    /// Each row's loss (0 for ignored rows), without any scale.
    row_loss: Vec<f64>,
    /// The loss the call reports (reduced).
    loss: f64,
    /// `sum_r g_r loss_r` with `g_r` the row's gradient scale: the function whose gradient
    /// the call computes.
    objective: f64,
    /// `d objective / dz` (raw logits) `[B, C]`.
    g: Vec<f64>,
    /// Per row: the largest magnitude of a term of the row's gradient (0 for ignored rows).
    rmag: Vec<f64>,
    /// Per row: the sum of the magnitudes of the loss's coefficients.
    lcoef: Vec<f64>,
    /// Per row: `max(1, |lse|, max |z|)`.
    zmax: Vec<f64>,
    /// The reduction's scale (`1 / denominator` for `Mean`).
    red: f64,
    denominator: f64,
    rows_used: usize,
}

fn eval64(case: &Case, a: &[f64], w: &[f64], bias: &[f64]) -> Eval {
    let (b, c, d) = (case.b, case.c, case.d);
    let k = &case.combo;
    let eps = k.eps as f64;
    let zl = k.z_loss as f64;
    let cf = c as f64;
    let cap = k.softcap.map(|v| v as f64);
    let wv: Vec<f64> = (0..c)
        .map(|i| if k.weight { case.weight[i] as f64 } else { 1.0 })
        .collect();
    let wsum: f64 = wv.iter().sum();
    let wabs: f64 = wv.iter().map(|v| v.abs()).sum();
    let wmax = wv.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    // Class target (or None for ignored rows) per row.
    let class = |i: usize| -> Option<usize> {
        let l = case.labels[i];
        (l != -100).then_some(l as usize)
    };
    let (denominator, rows_used) = match &case.probs {
        Some(_) => (b as f64, b),
        None => (0..b)
            .filter_map(class)
            .fold((0.0, 0), |(s, n), t| (s + wv[t], n + 1)),
    };
    let red = match k.reduction {
        Reduction::Mean => 1.0 / denominator,
        _ => 1.0,
    };
    let mut e = Eval {
        zc: vec![0.0; b * c],
        lse: vec![0.0; b],
        row_loss: vec![0.0; b],
        loss: 0.0,
        objective: 0.0,
        g: vec![0.0; b * c],
        rmag: vec![0.0; b],
        lcoef: vec![0.0; b],
        zmax: vec![0.0; b],
        red,
        denominator,
        rows_used,
    };
    let mut total = 0.0;
    for i in 0..b {
        let mut z = vec![0.0f64; c];
        let mut dcap = vec![1.0f64; c];
        for cc in 0..c {
            let mut v = bias[cc];
            for j in 0..d {
                v += a[i * d + j] * w[cc * d + j];
            }
            if let Some(cap) = cap {
                let t = (v / cap).tanh();
                v = cap * t;
                dcap[cc] = 1.0 - t * t;
            }
            z[cc] = v;
        }
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|&v| (v - m).exp()).sum();
        let lse = m + s.ln();
        let p: Vec<f64> = z.iter().map(|&v| (v - lse).exp()).collect();
        e.zc[i * c..(i + 1) * c].copy_from_slice(&z);
        e.lse[i] = lse;
        e.zmax[i] = z
            .iter()
            .fold(1.0f64.max(lse.abs()), |mx, v| mx.max(v.abs()));
        let gi = red
            * k.scale as f64
            * if k.row_scale {
                case.row_scale[i] as f64
            } else {
                1.0
            };
        // (loss, dloss/dz_capped, magnitude of the gradient's terms, loss coefficients)
        let (loss, dl, rmag, lcoef) = match &case.probs {
            Some(y) => {
                let yp: Vec<f64> = (0..c)
                    .map(|cc| (1.0 - eps) * y[i * c + cc] as f64 + eps / cf)
                    .collect();
                let sw: f64 = (0..c).map(|cc| wv[cc] * yp[cc]).sum();
                let mut loss = zl * lse * lse;
                for cc in 0..c {
                    loss += wv[cc] * yp[cc] * (lse - z[cc]);
                }
                let coef = sw + 2.0 * zl * lse;
                let dl: Vec<f64> = (0..c).map(|cc| coef * p[cc] - wv[cc] * yp[cc]).collect();
                let wy = (0..c).fold(0.0f64, |mx, cc| mx.max((wv[cc] * yp[cc]).abs()));
                let wya: f64 = (0..c).map(|cc| (wv[cc] * yp[cc]).abs()).sum();
                let rmag = sw.abs() + 2.0 * zl * lse.abs() + wy;
                (loss, dl, rmag, wya + 2.0 * zl * lse.abs())
            }
            None => match class(i) {
                None => (0.0, vec![0.0; c], 0.0, 0.0),
                Some(t) => {
                    let wt = wv[t];
                    let mut loss = (1.0 - eps) * wt * (lse - z[t]) + zl * lse * lse;
                    for cc in 0..c {
                        loss += eps / cf * wv[cc] * (lse - z[cc]);
                    }
                    let coef = (1.0 - eps) * wt + eps / cf * wsum + 2.0 * zl * lse;
                    let dl: Vec<f64> = (0..c)
                        .map(|cc| {
                            coef * p[cc]
                                - eps / cf * wv[cc]
                                - if cc == t { (1.0 - eps) * wt } else { 0.0 }
                        })
                        .collect();
                    let rmag = coef.abs() + eps / cf * wmax + (1.0 - eps) * wt.abs();
                    let lcoef = (1.0 - eps) * wt.abs() + eps / cf * wabs + 2.0 * zl * lse.abs();
                    (loss, dl, rmag, lcoef)
                }
            },
        };
        e.row_loss[i] = loss;
        total += loss;
        e.objective += gi * loss;
        e.rmag[i] = gi.abs() * rmag;
        e.lcoef[i] = lcoef;
        for cc in 0..c {
            e.g[i * c + cc] = gi * dl[cc] * dcap[cc];
        }
    }
    e.loss = match k.reduction {
        Reduction::Mean if rows_used == 0 && case.all_ignored == AllIgnored::Zero => 0.0,
        Reduction::Mean => total / denominator,
        _ => total,
    };
    e
}

/// The tolerances of a fused-vs-unfused comparison of a case (see the module docs).
struct Tol {
    da: Vec<f64>,
    /// Dense `[C, D]`.
    dw: Vec<f64>,
    db: Vec<f64>,
    loss: f64,
    row_loss: Vec<f64>,
    lse: Vec<f64>,
    /// How close two capped logits must be to count as a tie of the argmax.
    tie: Vec<f64>,
    /// `dW` and `db` when only the association of their sums differs (whole-row chunks).
    dw_assoc: Vec<f64>,
    db_assoc: Vec<f64>,
}

fn tolerances(case: &Case, ev: &Eval) -> Tol {
    let (b, c, d) = (case.b, case.c, case.d);
    let (a, w, bias) = case.inputs64();
    // How far an f32 logit (sgemm) can be from the exact one: only for telling ties of the
    // argmax, whose candidates are compared in f64 here. Both sides compute the same f32
    // logits (`forward_is_the_same_on_sub_problems`), so the gradients and losses below carry
    // no logit term.
    let cap_err = case
        .combo
        .softcap
        .map_or(0.0, |cap| 8.0 * common::ulp(cap) as f64);
    let dz: Vec<f64> = (0..b)
        .map(|i| {
            let mut mx = 0.0f64;
            for cc in 0..c {
                let s: f64 = (0..d).map(|j| (a[i * d + j] * w[cc * d + j]).abs()).sum();
                mx = mx.max(s + bias[cc].abs());
            }
            (d as f64 + 3.0) * U2 * mx + cap_err
        })
        .collect();
    let eg: Vec<f64> = (0..b).map(|i| GREL * ev.rmag[i]).collect();
    let gabs = |i: usize, cc: usize| {
        if ev.rmag[i] == 0.0 {
            0.0
        } else {
            ev.g[i * c + cc].abs() + eg[i]
        }
    };
    let mut da = vec![0.0; b * d];
    for i in 0..b {
        for j in 0..d {
            let (mut s, mut e) = (0.0, 0.0);
            for cc in 0..c {
                s += gabs(i, cc) * w[cc * d + j].abs();
                e += eg[i] * w[cc * d + j].abs();
            }
            da[i * d + j] = (2.0 * c as f64 + 3.0) * U2 * s + e;
        }
    }
    let kb = (2.0 * b as f64 + 3.0) * U2;
    let mut dw = vec![0.0; c * d];
    let mut db = vec![0.0; c];
    let mut dw_assoc = vec![0.0; c * d];
    let mut db_assoc = vec![0.0; c];
    for cc in 0..c {
        for j in 0..d {
            let (mut s, mut e) = (0.0, 0.0);
            for i in 0..b {
                s += gabs(i, cc) * a[i * d + j].abs();
                e += eg[i] * a[i * d + j].abs();
            }
            dw[cc * d + j] = kb * s + e;
            dw_assoc[cc * d + j] = kb * s;
        }
        let s: f64 = (0..b).map(|i| gabs(i, cc)).sum();
        let e: f64 = eg.iter().sum();
        db[cc] = kb * s + e;
        db_assoc[cc] = kb * s;
    }
    let row_loss: Vec<f64> = (0..b).map(|i| LREL * ev.lcoef[i] * ev.zmax[i]).collect();
    let red = if ev.red.is_finite() { ev.red } else { 0.0 };
    let loss = red * row_loss.iter().sum::<f64>() + 1e-12 * ev.loss.abs();
    Tol {
        da,
        dw,
        db,
        loss,
        row_loss,
        lse: (0..b).map(|i| LREL * ev.lse[i].abs().max(1.0)).collect(),
        tie: dz.iter().map(|v| 2.0 * v + 1e-12).collect(),
        dw_assoc,
        db_assoc,
    }
}

// ---------------------------------------------------------------------------------------------
// Comparisons
// ---------------------------------------------------------------------------------------------

/// The largest error / tolerance ratio seen per quantity.
#[derive(Default)]
struct Worst(BTreeMap<&'static str, f64>);

impl Worst {
    fn note(&mut self, name: &'static str, ratio: f64) {
        let e = self.0.entry(name).or_insert(0.0);
        if ratio > *e {
            *e = ratio;
        }
    }
    fn print(&self, test: &str) {
        let v: Vec<String> = self.0.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        println!("{test}: largest error / tolerance: {}", v.join(", "));
    }
}

/// f32 ULP of `x` in f64 (0 for non-finite).
fn ulp64(x: f64) -> f64 {
    if x.is_finite() && x.abs() < f32::MAX as f64 {
        common::ulp(x as f32) as f64
    } else {
        0.0
    }
}

/// `got` against `want` element by element within `tol(i)` plus one ULP; NaN and infinities
/// must match exactly; with `finite`, every value must be finite.
fn close(
    name: &'static str,
    got: &[f32],
    want: &[f32],
    tol: impl Fn(usize) -> f64,
    finite: bool,
    worst: &mut Worst,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{name}: length {} vs {}", got.len(), want.len()));
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if finite && !(g.is_finite() && w.is_finite()) {
            return Err(format!("{name}[{i}]: not finite: got {g}, unfused {w}"));
        }
        if g.is_nan() || w.is_nan() {
            if g.is_nan() != w.is_nan() {
                return Err(format!("{name}[{i}]: got {g}, unfused {w} (NaN positions)"));
            }
            continue;
        }
        if g.is_infinite() || w.is_infinite() {
            if g != w {
                return Err(format!("{name}[{i}]: got {g}, unfused {w}"));
            }
            continue;
        }
        let t = tol(i) + ulp64(w as f64);
        let e = (g as f64 - w as f64).abs();
        worst.note(name, e / t.max(1e-300));
        if e > t {
            return Err(format!(
                "{name}[{i}]: got {g:e}, unfused {w:e}, error {e:e} > tolerance {t:e}"
            ));
        }
    }
    Ok(())
}

/// A strided `[C, D]` result: the padding must be [`PAD`] bit for bit; the elements within
/// `tol` (dense index).
#[allow(clippy::too_many_arguments)]
fn close_strided(
    name: &'static str,
    got: &[f32],
    want: &[f32],
    lay: MatrixLayout,
    tol: impl Fn(usize) -> f64,
    finite: bool,
    worst: &mut Worst,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{name}: length {} vs {}", got.len(), want.len()));
    }
    let (mut g, mut w) = (Vec::new(), Vec::new());
    for (i, &v) in got.iter().enumerate() {
        if i % lay.ld >= lay.cols {
            if v.to_bits() != PAD.to_bits() {
                return Err(format!("{name}: padding at {i} was written: {v}"));
            }
            continue;
        }
        g.push(v);
        w.push(want[i]);
    }
    close(name, &g, &w, tol, finite, worst)
}

/// The fused result `got` against the unfused `want` (every output `got` has).
fn compare(
    case: &Case,
    ev: &Eval,
    tol: &Tol,
    got: &Res,
    want: &Res,
    worst: &mut Worst,
) -> Result<(), String> {
    let (gs, ws) = (&got.st, &want.st);
    if gs.denominator.to_bits() != ws.denominator.to_bits() || gs.rows_used != ws.rows_used {
        return Err(format!("stats: got {gs:?}, unfused {ws:?}"));
    }
    if ev.rows_used != gs.rows_used || (ev.denominator - gs.denominator).abs() > 1e-9 {
        return Err(format!(
            "stats: got {gs:?}, oracle denominator {} rows_used {}",
            ev.denominator, ev.rows_used
        ));
    }
    // The loss (f64 and f32).
    let (l, lw) = (gs.loss_f64, ws.loss_f64);
    if l.is_nan() || lw.is_nan() {
        if l.is_nan() != lw.is_nan() {
            return Err(format!("loss: got {l}, unfused {lw}"));
        }
    } else {
        let e = (l - lw).abs();
        worst.note("loss", e / tol.loss.max(1e-300));
        if e > tol.loss {
            return Err(format!(
                "loss: got {l:e}, unfused {lw:e}, error {e:e} > {:e}",
                tol.loss
            ));
        }
        if gs.loss != l as f32 {
            return Err(format!("loss: f32 {} is not loss_f64 {l} rounded", gs.loss));
        }
    }
    if let Some(g) = &got.row_loss {
        close(
            "row_loss",
            g,
            want.row_loss.as_ref().unwrap(),
            |i| tol.row_loss[i],
            true,
            worst,
        )?;
    }
    if let Some(g) = &got.lse {
        close(
            "lse",
            g,
            want.lse.as_ref().unwrap(),
            |i| tol.lse[i],
            true,
            worst,
        )?;
    }
    let mut ties = false;
    if let Some(g) = &got.argmax {
        let w = want.argmax.as_ref().unwrap();
        for i in 0..case.b {
            if g[i] == w[i] {
                continue;
            }
            let (gi, wi) = (g[i] as usize, w[i] as usize);
            if gi >= case.c {
                return Err(format!("argmax[{i}] = {gi} is not a class"));
            }
            let c = case.c;
            let gap = (ev.zc[i * c + gi] - ev.zc[i * c + wi]).abs();
            if gap > tol.tie[i] {
                return Err(format!(
                    "argmax[{i}]: got {gi}, unfused {wi}, capped logits {} vs {} (no tie)",
                    ev.zc[i * c + gi],
                    ev.zc[i * c + wi]
                ));
            }
            ties = true;
        }
        if case.probs.is_none() {
            let hits = (0..case.b)
                .filter(|&i| case.labels[i] >= 0 && g[i] as i64 == case.labels[i])
                .count();
            if gs.correct != Some(hits) || (!ties && gs.correct != ws.correct) {
                return Err(format!(
                    "correct: got {:?}, argmax hits {hits}, unfused {:?}",
                    gs.correct, ws.correct
                ));
            }
        } else if gs.correct.is_some() {
            return Err(format!(
                "correct with probability targets: {:?}",
                gs.correct
            ));
        }
    } else if gs.correct.is_some() {
        return Err(format!("correct without argmax: {:?}", gs.correct));
    }
    if let Some(g) = &got.da {
        close(
            "da",
            g,
            want.da.as_ref().unwrap(),
            |i| tol.da[i],
            true,
            worst,
        )?;
    }
    if let Some(g) = &got.dw {
        close_strided(
            "dw",
            g,
            want.dw.as_ref().unwrap(),
            case.layout(),
            |i| tol.dw[i],
            true,
            worst,
        )?;
    }
    if let Some(g) = &got.db {
        close(
            "db",
            g,
            want.db.as_ref().unwrap(),
            |i| tol.db[i],
            true,
            worst,
        )?;
    }
    Ok(())
}

/// Whole-row chunks: the module docs say the fused call equals the unfused composition up to
/// the association of the `dW` and `db` sums (and of the f64 sum of the row losses), so the
/// per-row outputs and `dA` must be bit-identical and `dW`, `db` within the rounding of a
/// `B`-term sum.
fn exact_row_mode(
    case: &Case,
    tol: &Tol,
    got: &Res,
    want: &Res,
    worst: &mut Worst,
) -> Result<(), String> {
    let mut g = got.clone();
    g.dw = None;
    g.db = None;
    // The loss: the same row losses summed in f64 by chunk.
    let (l, w) = (got.st.loss_f64, want.st.loss_f64);
    let sum_abs: f64 = want
        .row_loss
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| v.abs() as f64)
        .sum();
    let red = match case.combo.reduction {
        Reduction::Mean => 1.0 / want.st.denominator,
        _ => 1.0,
    };
    let t = 1e-13 * sum_abs * red.abs() + 1e-300;
    if !(l.is_nan() && w.is_nan()) && (l - w).abs() > t {
        return Err(format!(
            "loss: got {l:e}, unfused {w:e} (row mode: association only)"
        ));
    }
    g.st.loss_f64 = w;
    g.st.loss = want.st.loss;
    same_bits(&g, want).map_err(|e| format!("row mode, not bit-identical: {e}"))?;
    if let Some(dw) = &got.dw {
        close_strided(
            "dw(rows)",
            dw,
            want.dw.as_ref().unwrap(),
            case.layout(),
            |i| tol.dw_assoc[i],
            true,
            worst,
        )?;
    }
    if let Some(db) = &got.db {
        close(
            "db(rows)",
            db,
            want.db.as_ref().unwrap(),
            |i| tol.db_assoc[i],
            true,
            worst,
        )?;
    }
    Ok(())
}

/// Two results with the same outputs are bit-identical (outputs absent from either are
/// skipped).
fn same_bits(a: &Res, b: &Res) -> Result<(), String> {
    let bits = |v: &Option<Vec<f32>>| {
        v.as_ref()
            .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
    };
    let st = |s: &CrossEntropyStats| {
        (
            s.loss.to_bits(),
            s.loss_f64.to_bits(),
            s.denominator.to_bits(),
            s.rows_used,
        )
    };
    if st(&a.st) != st(&b.st) {
        return Err(format!("stats differ: {:?} vs {:?}", a.st, b.st));
    }
    for (name, x, y) in [
        ("da", &a.da, &b.da),
        ("dw", &a.dw, &b.dw),
        ("db", &a.db, &b.db),
        ("row_loss", &a.row_loss, &b.row_loss),
        ("lse", &a.lse, &b.lse),
    ] {
        if let (Some(p), Some(q)) = (bits(x), bits(y)) {
            if p != q {
                let i = p.iter().zip(&q).position(|(u, v)| u != v).unwrap_or(0);
                return Err(format!(
                    "{name} differs at {i}: {} vs {}",
                    f32::from_bits(p[i]),
                    f32::from_bits(q[i])
                ));
            }
        }
    }
    if let (Some(p), Some(q)) = (&a.argmax, &b.argmax) {
        if p != q {
            return Err(format!("argmax differs: {p:?} vs {q:?}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Fused against unfused
// ---------------------------------------------------------------------------------------------

/// `(B, C, D)`: C = 1, C around the vector widths, D = 1, B = 1, odd B, one larger shape.
const SHAPES: [(usize, usize, usize); 11] = [
    (5, 1, 3),
    (4, 2, 6),
    (3, 7, 5),
    (9, 8, 1),
    (7, 9, 2),
    (1, 15, 4),
    (11, 16, 7),
    (13, 17, 1),
    (5, 33, 9),
    (6, 33, 24),
    (67, 1000, 24),
];

/// The output subsets that must reproduce the all-outputs run bit for bit.
const SUBSETS: [Want; 4] = [
    // Loss only (the per-row outputs stay, Reduction::None needs row_loss).
    Want {
        da: false,
        dw: false,
        db: false,
        row_loss: true,
        lse: false,
        argmax: false,
    },
    Want {
        da: true,
        dw: false,
        db: false,
        row_loss: true,
        lse: false,
        argmax: true,
    },
    Want {
        da: false,
        dw: true,
        db: false,
        row_loss: true,
        lse: true,
        argmax: false,
    },
    Want {
        da: false,
        dw: false,
        db: true,
        row_loss: true,
        lse: false,
        argmax: false,
    },
];

fn spec_of(si: usize, b: usize, c: usize, d: usize) -> Spec {
    Spec {
        pad: [0, 1, 3][si % 3],
        trim: si % 2 == 1,
        bias: si % 4 != 3,
        zscale: if si % 3 == 2 { 4.0 } else { 2.0 },
        ..Spec::new(b, c, d)
    }
}

fn run_matrix(test: &str, probs: bool) {
    let mut worst = Worst::default();
    let tiers = common::tiers();
    let mut calls = 0usize;
    for (si, &(b, c, d)) in SHAPES.iter().enumerate() {
        let big = c >= 1000;
        if big && DEBUG {
            continue;
        }
        let spec = Spec {
            probs,
            ..spec_of(si, b, c, d)
        };
        for (ci, &combo) in COMBOS.iter().enumerate() {
            if probs && combo.ignore {
                continue;
            }
            let case = Case::new(1000 + (si * 31 + ci) as u64, spec, combo);
            let (a64, w64, b64) = case.inputs64();
            let ev = eval64(&case, &a64, &w64, &b64);
            let tol = tolerances(&case, &ev);
            let chunks: Vec<Chunking> = if probs {
                vec![
                    Chunking::AUTO,
                    Chunking::rows(1),
                    Chunking::rows(3),
                    Chunking::rows(b),
                    Chunking::rc(2, c),
                    Chunking::rc(b, c + 7),
                    Chunking::bytes(8 * c),
                ]
            } else {
                chunkings(b, c, big)
            };
            for k in &tiers {
                let want = unfused(k, &case);
                for (hi, ch) in chunks.iter().enumerate() {
                    let lo = ch.apply(LinearCeOptions::new(case.ce()));
                    let ctx = || {
                        format!(
                            "{} B={b} C={c} D={d} ld={} bias={} combo={} probs={probs} {ch:?}",
                            k.isa(),
                            case.ld,
                            case.bias.is_some(),
                            combo.name
                        )
                    };
                    let got = fused(k, &case, &lo, ALL, hi + si)
                        .unwrap_or_else(|e| panic!("{}: {e}", ctx()));
                    calls += 1;
                    ok(ctx(), compare(&case, &ev, &tol, &got, &want, &mut worst));
                    if ch.bytes.is_none() && ch.classes.is_none_or(|k| k >= c) {
                        ok(ctx(), exact_row_mode(&case, &tol, &got, &want, &mut worst));
                    }
                    // Subsets of the outputs give the same bits (one row and one class
                    // chunking, and the automatic one).
                    if hi == 0 || hi == 2 || (!probs && hi == 6) {
                        for sub in SUBSETS {
                            let part = fused(k, &case, &lo, sub, hi + 1).unwrap();
                            calls += 1;
                            ok(format!("{} subset {sub:?}", ctx()), same_bits(&part, &got));
                        }
                    }
                }
            }
        }
    }
    println!("{test}: {calls} fused calls");
    worst.print(test);
}

#[test]
fn fused_matches_unfused_class_targets() {
    run_matrix("class targets", false);
}

#[test]
fn fused_matches_unfused_probability_targets() {
    run_matrix("probability targets", true);
}

/// The premise of the tolerances: `linear_forward` gives the same bits for an element of `Z`
/// whether it is computed with the whole batch and all classes or within a chunk of rows and a
/// block of classes (the sub-problems the fused call forms), so the fused call and the unfused
/// composition see the same logits.
#[test]
fn forward_is_the_same_on_sub_problems() {
    for (si, &(b, c, d)) in SHAPES.iter().enumerate() {
        let case = Case::new(300 + si as u64, spec_of(si, b, c, d), BASE);
        let lay = case.layout();
        for k in common::tiers() {
            let mut full = vec![0.0f32; b * c];
            k.linear_forward(&case.a, &case.w, lay, case.bias.as_deref(), &mut full)
                .unwrap();
            for (rows, classes) in [
                (1, c),
                (3, c),
                (b, 1),
                (2, 5),
                (16, 16),
                (5, 333),
                (b, c - c / 2),
            ] {
                let classes = classes.clamp(1, c);
                let mut r0 = 0;
                while r0 < b {
                    let n = rows.min(b - r0);
                    let mut k0 = 0;
                    while k0 < c {
                        let kn = classes.min(c - k0);
                        let wk = &case.w[k0 * case.ld..(k0 + kn - 1) * case.ld + d];
                        let bk = case.bias.as_deref().map(|v| &v[k0..k0 + kn]);
                        let lk = MatrixLayout::new(kn, d).with_ld(case.ld);
                        let mut z = vec![0.0f32; n * kn];
                        k.linear_forward(&case.a[r0 * d..(r0 + n) * d], wk, lk, bk, &mut z)
                            .unwrap();
                        for i in 0..n {
                            for j in 0..kn {
                                assert_eq!(
                                    z[i * kn + j].to_bits(),
                                    full[(r0 + i) * c + k0 + j].to_bits(),
                                    "{} B={b} C={c} D={d}: rows {r0}+{n}, classes {k0}+{kn}",
                                    k.isa()
                                );
                            }
                        }
                        k0 += kn;
                    }
                    r0 += n;
                }
            }
        }
    }
}

/// Every label type gives the bits of i64 labels; the free function is the active tier's
/// method.
#[test]
fn label_types_and_free_function() {
    let case = Case::new(
        7,
        Spec::new(9, 17, 5),
        Combo {
            ignore: true,
            ..COMBOS[9]
        },
    );
    for k in common::tiers() {
        for ch in [Chunking::AUTO, Chunking::rc(4, 5)] {
            let lo = ch.apply(LinearCeOptions::new(case.ce()));
            let base = fused(k, &case, &lo, ALL, 0).unwrap();
            // Ignored rows keep -100 as i32 / i64; unsigned types take the used rows only.
            let run = |t: Targets<'_, i32>| {
                let mut dw = vec![PAD; case.w.len()];
                let mut out = LinearCeOutputs {
                    dw: Some(&mut dw),
                    ..Default::default()
                };
                let st = k
                    .linear_cross_entropy(
                        &case.a,
                        &case.w,
                        case.layout(),
                        case.bias.as_deref(),
                        t,
                        &lo,
                        &mut out,
                    )
                    .unwrap();
                (
                    st.loss_f64.to_bits(),
                    dw.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                )
            };
            let l32: Vec<i32> = case.labels.iter().map(|&v| v as i32).collect();
            let (lb, dwb) = run(Targets::Classes(&l32));
            assert_eq!(lb, base.st.loss_f64.to_bits(), "{} i32 loss", k.isa());
            let want: Vec<u32> = base
                .dw
                .as_ref()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            assert_eq!(dwb, want, "{} i32 dw", k.isa());
        }
    }
    // usize / u8 labels without ignored rows.
    let case = Case::new(8, Spec::new(6, 9, 4), COMBOS[5]);
    let k = Kernels::active().unwrap();
    let lo = LinearCeOptions::new(case.ce());
    let base = fused(k, &case, &lo, ALL, 0).unwrap();
    let lu: Vec<usize> = case.labels.iter().map(|&v| v as usize).collect();
    let l8: Vec<u8> = case.labels.iter().map(|&v| v as u8).collect();
    let mut da = vec![0.0f32; case.b * case.d];
    let st = k
        .linear_cross_entropy(
            &case.a,
            &case.w,
            case.layout(),
            case.bias.as_deref(),
            Targets::Classes(&lu),
            &lo,
            &mut LinearCeOutputs {
                da: Some(&mut da),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(st.loss_f64.to_bits(), base.st.loss_f64.to_bits());
    assert_eq!(
        da.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        base.da
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
    // The free function on the active tier.
    let mut da2 = vec![0.0f32; case.b * case.d];
    let mut am = vec![0u32; case.b];
    let st2 = softmax_kernels::linear_cross_entropy(
        &case.a,
        &case.w,
        case.layout(),
        case.bias.as_deref(),
        Targets::Classes(&l8),
        &lo,
        &mut LinearCeOutputs {
            da: Some(&mut da2),
            ce: CrossEntropyOutputs {
                argmax: Some(&mut am),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(st2.loss_f64.to_bits(), base.st.loss_f64.to_bits());
    assert_eq!(st2.correct, base.st.correct);
    assert_eq!(&am, base.argmax.as_ref().unwrap());
    assert_eq!(
        da2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        base.da
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Finite differences of an f64 loss
// ---------------------------------------------------------------------------------------------

/// Central differences of the f64 objective with respect to every element of `A`, `W`, `b`.
fn finite_differences(case: &Case) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (a, w, b) = case.inputs64();
    let h = 1e-5;
    let f = |a: &[f64], w: &[f64], b: &[f64]| eval64(case, a, w, b).objective;
    let diff = |x: &[f64], which: usize| -> Vec<f64> {
        (0..x.len())
            .map(|i| {
                let (mut p, mut m) = (x.to_vec(), x.to_vec());
                p[i] += h;
                m[i] -= h;
                let (fp, fm) = match which {
                    0 => (f(&p, &w, &b), f(&m, &w, &b)),
                    1 => (f(&a, &p, &b), f(&a, &m, &b)),
                    _ => (f(&a, &w, &p), f(&a, &w, &m)),
                };
                (fp - fm) / (2.0 * h)
            })
            .collect()
    };
    (diff(&a, 0), diff(&w, 1), diff(&b, 2))
}

/// `got` (f32) within `rel * (|want| + max |want|) + 1e-7` of `want` (f64).
fn near(name: &str, got: &[f32], want: &[f64], rel: f64) -> Result<(), String> {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let mx = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let t = rel * (w.abs() + mx) + 1e-7;
        let e = (g as f64 - w).abs();
        if e.is_nan() || e > t {
            return Err(format!(
                "{name}[{i}]: got {g:e}, expected {w:e} (tolerance {t:e})"
            ));
        }
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences() {
    let (b, c, d) = (3, 5, 4);
    let tiers = common::tiers();
    for probs in [false, true] {
        for (ci, &combo) in COMBOS.iter().enumerate() {
            if probs && combo.ignore {
                continue;
            }
            let spec = Spec {
                pad: 2,
                probs,
                ..Spec::new(b, c, d)
            };
            let case = Case::new(500 + ci as u64, spec, combo);
            let (a, w, bias) = case.inputs64();
            let ev = eval64(&case, &a, &w, &bias);
            let (fa, fw, fb) = finite_differences(&case);
            // The oracle's own analytic gradient agrees with its differences (so the oracle's
            // gradient, which sizes the other tests' tolerances, is right).
            let mut ga = vec![0.0; b * d];
            let mut gw = vec![0.0; c * d];
            let mut gb = vec![0.0; c];
            for i in 0..b {
                for cc in 0..c {
                    let g = ev.g[i * c + cc];
                    gb[cc] += g;
                    for j in 0..d {
                        ga[i * d + j] += g * w[cc * d + j];
                        gw[cc * d + j] += g * a[i * d + j];
                    }
                }
            }
            for (name, x, y) in [("dA", &ga, &fa), ("dW", &gw, &fw), ("db", &gb, &fb)] {
                for (u, v) in x.iter().zip(y.iter()) {
                    assert!(
                        (u - v).abs() <= 1e-7 * (1.0 + v.abs()),
                        "oracle {name} {} {u} vs differences {v}",
                        combo.name
                    );
                }
            }
            let modes: &[Chunking] = if probs {
                &[Chunking::AUTO, Chunking::rows(1)]
            } else {
                &[
                    Chunking::AUTO,
                    Chunking::rows(2),
                    Chunking::rc(2, 2),
                    Chunking::rc(3, 1),
                ]
            };
            for k in &tiers {
                for &ch in modes {
                    let lo = ch.apply(LinearCeOptions::new(case.ce()));
                    let got = fused(k, &case, &lo, ALL, 2).unwrap();
                    let ctx = format!("{} {} probs={probs} {ch:?}", k.isa(), combo.name);
                    let l = got.st.loss_f64;
                    assert!(
                        (l - ev.loss).abs() <= 1e-5 * ev.loss.abs().max(1.0),
                        "{ctx}: loss {l} vs f64 {}",
                        ev.loss
                    );
                    let rl = got.row_loss.as_ref().unwrap();
                    let ls = got.lse.as_ref().unwrap();
                    for i in 0..b {
                        assert!(
                            (rl[i] as f64 - ev.row_loss[i]).abs()
                                <= 1e-5 * ev.row_loss[i].abs().max(1.0),
                            "{ctx}: row_loss[{i}] {} vs {}",
                            rl[i],
                            ev.row_loss[i]
                        );
                        assert!(
                            (ls[i] as f64 - ev.lse[i]).abs() <= 1e-5 * ev.lse[i].abs().max(1.0),
                            "{ctx}: lse[{i}] {} vs {}",
                            ls[i],
                            ev.lse[i]
                        );
                    }
                    ok(&ctx, near("dA", got.da.as_ref().unwrap(), &fa, 1e-5));
                    let dw: Vec<f32> = (0..c * d)
                        .map(|i| got.dw.as_ref().unwrap()[(i / d) * case.ld + i % d])
                        .collect();
                    ok(&ctx, near("dW", &dw, &fw, 1e-5));
                    ok(&ctx, near("db", got.db.as_ref().unwrap(), &fb, 1e-5));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Hand-derived cases
// ---------------------------------------------------------------------------------------------

/// The chunkings every small hand-made case runs under: whole rows, one row, class blocks.
const MODES: [Chunking; 4] = [
    Chunking::AUTO,
    Chunking {
        rows: Some(1),
        classes: None,
        bytes: None,
    },
    Chunking {
        rows: Some(2),
        classes: Some(2),
        bytes: None,
    },
    Chunking {
        rows: None,
        classes: Some(1),
        bytes: None,
    },
];

#[test]
fn hand_derived_uniform_logits() {
    // W = 0, b = 0: every logit 0, p = 1/C: loss ln C, dA = 0, db = mean over used rows of
    // (1/C - onehot), dW = mean over used rows of (1/C - onehot) a^T.
    let (b, c, d) = (7, 6, 3);
    let mut r = rng(3);
    let a = uniform(&mut r, b * d, -1.0, 1.0);
    let w = vec![0.0f32; c * d];
    let bias = vec![0.0f32; c];
    let labels: Vec<i64> = vec![0, -100, 5, 2, 2, -100, 3];
    let used: Vec<usize> = (0..b).filter(|&i| labels[i] >= 0).collect();
    let n = used.len() as f64;
    let mut edb = vec![0.0f64; c];
    let mut edw = vec![0.0f64; c * d];
    for &i in &used {
        for cc in 0..c {
            let g = (1.0 / c as f64 - (cc as i64 == labels[i]) as u8 as f64) / n;
            edb[cc] += g;
            for j in 0..d {
                edw[cc * d + j] += g * a[i * d + j] as f64;
            }
        }
    }
    for k in common::tiers() {
        for ch in MODES {
            let lo = ch.apply(LinearCeOptions::default());
            let (mut da, mut dw, mut db) = (vec![PAD; b * d], vec![PAD; c * d], vec![PAD; c]);
            let st = k
                .linear_cross_entropy(
                    &a,
                    &w,
                    MatrixLayout::new(c, d),
                    Some(&bias),
                    Targets::Classes(&labels),
                    &lo,
                    &mut LinearCeOutputs {
                        da: Some(&mut da),
                        dw: Some(&mut dw),
                        db: Some(&mut db),
                        ..Default::default()
                    },
                )
                .unwrap();
            let ctx = format!("{} {ch:?}", k.isa());
            assert!(
                (st.loss_f64 - (c as f64).ln()).abs() < 1e-6,
                "{ctx}: {st:?}"
            );
            assert_eq!((st.rows_used, st.denominator), (5, 5.0), "{ctx}");
            assert!(da.iter().all(|&v| v == 0.0), "{ctx}: dA {da:?}");
            for cc in 0..c {
                assert!(
                    (db[cc] as f64 - edb[cc]).abs() < 1e-6,
                    "{ctx}: db {db:?} vs {edb:?}"
                );
            }
            for i in 0..c * d {
                assert!(
                    (dw[i] as f64 - edw[i]).abs() < 1e-6,
                    "{ctx}: dw[{i}] {} vs {}",
                    dw[i],
                    edw[i]
                );
            }
        }
    }
}

/// Equal maxima in different class blocks: the argmax is the first of them (as the unfused
/// cross-entropy's "first argmax"), in every mode. Classes 3, 7 and 12 share their row of `W`
/// and their bias, so their logits are the same f32 values.
#[test]
fn argmax_ties_take_the_first_index() {
    let (b, c, d) = (6, 17, 5);
    let mut case = Case::new(12, Spec::new(b, c, d), BASE);
    let bias = case.bias.as_mut().unwrap();
    for cls in [3, 7, 12] {
        bias[cls] = 20.0;
        for j in 0..d {
            case.w[cls * case.ld + j] = case.w[3 * case.ld + j];
        }
    }
    case.labels = vec![7, 3, 12, 0, 3, 16];
    for combo in [BASE, COMBOS[7]] {
        case.combo = combo;
        for k in common::tiers() {
            let want = unfused(k, &case);
            assert!(
                want.argmax.as_ref().unwrap().iter().all(|&v| v == 3),
                "{} unfused",
                k.isa()
            );
            for ch in [
                Chunking::AUTO,
                Chunking::rc(2, 1),
                Chunking::rc(3, 4),
                Chunking::classes(5),
                Chunking::rc(1, 8),
                Chunking::bytes(4 * 9),
            ] {
                let lo = ch.apply(LinearCeOptions::new(case.ce()));
                let got = fused(k, &case, &lo, ALL, 0).unwrap();
                let ctx = format!("{} {} {ch:?}", k.isa(), combo.name);
                assert!(
                    got.argmax.as_ref().unwrap().iter().all(|&v| v == 3),
                    "{ctx}: {:?}",
                    got.argmax
                );
                assert_eq!(got.st.correct, Some(2), "{ctx}");
            }
        }
    }
}

#[test]
fn hand_derived_logistic() {
    // Two classes, D = 2: z_0 - z_1 = u = a . (w_0 - w_1) + (b_0 - b_1). Label 0: loss
    // ln(1 + e^-u), dL/dz_0 = -sigma(-u), dL/dz_1 = sigma(-u); label 1: ln(1 + e^u),
    // dL/dz_0 = sigma(u), dL/dz_1 = -sigma(u). Sum reduction.
    let a = [
        0.5f32, -1.0, /* row 2 */ 2.0, 0.25, /* row 3 */ -1.5, 1.0,
    ];
    let w = [1.0f32, 0.5, /* class 1 */ -0.5, 2.0];
    let bias = [0.25f32, -0.75];
    let labels = [0i64, 1, 0];
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let (mut loss, mut eda, mut edw, mut edb) = (0.0f64, [0.0f64; 6], [0.0f64; 4], [0.0f64; 2]);
    for i in 0..3 {
        let (a0, a1) = (a[2 * i] as f64, a[2 * i + 1] as f64);
        let z0 = a0 * w[0] as f64 + a1 * w[1] as f64 + bias[0] as f64;
        let z1 = a0 * w[2] as f64 + a1 * w[3] as f64 + bias[1] as f64;
        let u = z0 - z1;
        let (l, g0) = if labels[i] == 0 {
            ((1.0 + (-u).exp()).ln(), -sig(-u))
        } else {
            ((1.0 + u.exp()).ln(), sig(u))
        };
        let g1 = -g0;
        loss += l;
        eda[2 * i] = g0 * w[0] as f64 + g1 * w[2] as f64;
        eda[2 * i + 1] = g0 * w[1] as f64 + g1 * w[3] as f64;
        edw[0] += g0 * a0;
        edw[1] += g0 * a1;
        edw[2] += g1 * a0;
        edw[3] += g1 * a1;
        edb[0] += g0;
        edb[1] += g1;
    }
    for k in common::tiers() {
        for ch in MODES {
            let lo = ch.apply(LinearCeOptions::new(
                CrossEntropyOptions::default().reduction(Reduction::Sum),
            ));
            let (mut da, mut dw, mut db) = ([PAD; 6], [PAD; 4], [PAD; 2]);
            let st = k
                .linear_cross_entropy(
                    &a,
                    &w,
                    MatrixLayout::new(2, 2),
                    Some(&bias),
                    Targets::Classes(&labels),
                    &lo,
                    &mut LinearCeOutputs {
                        da: Some(&mut da),
                        dw: Some(&mut dw),
                        db: Some(&mut db),
                        ..Default::default()
                    },
                )
                .unwrap();
            let ctx = format!("{} {ch:?}", k.isa());
            assert!(
                (st.loss_f64 - loss).abs() < 1e-6 * loss,
                "{ctx}: {} vs {loss}",
                st.loss_f64
            );
            for (name, got, want) in [
                ("da", &da[..], &eda[..]),
                ("dw", &dw[..], &edw[..]),
                ("db", &db[..], &edb[..]),
            ] {
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        (*g as f64 - w).abs() < 2e-6 * (1.0 + w.abs()),
                        "{ctx}: {name} {got:?} vs {want:?}"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Special values
// ---------------------------------------------------------------------------------------------

/// `got` against `want`: NaN positions and infinities equal, finite values within
/// `1e-5 (|want| + max |want|)`.
fn close_special(name: &str, got: &[f32], want: &[f32]) -> Result<(), String> {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let mx = want
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs() as f64));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let bad = if g.is_nan() || w.is_nan() {
            g.is_nan() != w.is_nan()
        } else if g.is_infinite() || w.is_infinite() {
            g != w
        } else {
            (g as f64 - w as f64).abs() > 1e-5 * (w.abs() as f64 + mx) + 1e-30
        };
        if bad {
            return Err(format!("{name}[{i}]: got {g}, unfused {w}"));
        }
    }
    Ok(())
}

fn compare_special(got: &Res, want: &Res) -> Result<(), String> {
    let (l, w) = (got.st.loss_f64, want.st.loss_f64);
    let loss_ok = if l.is_nan() || w.is_nan() {
        l.is_nan() == w.is_nan()
    } else if l.is_infinite() || w.is_infinite() {
        l == w
    } else {
        (l - w).abs() <= 1e-5 * w.abs().max(1e-6)
    };
    if !loss_ok {
        return Err(format!("loss: got {l}, unfused {w}"));
    }
    if (got.st.rows_used, got.st.denominator.to_bits())
        != (want.st.rows_used, want.st.denominator.to_bits())
    {
        return Err(format!("stats: {:?} vs {:?}", got.st, want.st));
    }
    for (name, g, w) in [
        ("row_loss", &got.row_loss, &want.row_loss),
        ("lse", &got.lse, &want.lse),
        ("da", &got.da, &want.da),
        ("dw", &got.dw, &want.dw),
        ("db", &got.db, &want.db),
    ] {
        close_special(name, g.as_ref().unwrap(), w.as_ref().unwrap())?;
    }
    // The argmax of the rows with a finite logsumexp (elsewhere it means nothing), and the
    // correct count when every row has one.
    let (ga, wa, wl) = (
        got.argmax.as_ref().unwrap(),
        want.argmax.as_ref().unwrap(),
        want.lse.as_ref().unwrap(),
    );
    for i in 0..wa.len() {
        if wl[i].is_finite() && ga[i] != wa[i] {
            return Err(format!("argmax[{i}]: got {}, unfused {}", ga[i], wa[i]));
        }
    }
    if wl.iter().all(|v| v.is_finite()) && got.st.correct != want.st.correct {
        return Err(format!(
            "correct: got {:?}, unfused {:?}",
            got.st.correct, want.st.correct
        ));
    }
    Ok(())
}

/// A special-value case: random `A`, `W`, the given bias and labels.
fn special_case(
    b: usize,
    c: usize,
    d: usize,
    bias: Vec<f32>,
    labels: Vec<i64>,
    combo: Combo,
) -> Case {
    let mut case = Case::new(77, Spec::new(b, c, d), combo);
    case.bias = Some(bias);
    case.labels = labels;
    case
}

/// Runs `case` fused in both modes against the unfused composition; returns the fused
/// results.
fn both_modes(case: &Case, what: &str) -> Vec<(String, Res)> {
    let mut all = Vec::new();
    for k in common::tiers() {
        let want = unfused(k, case);
        for ch in [
            Chunking::AUTO,
            Chunking::rows(2),
            Chunking::rc(3, 2),
            Chunking::rc(8, 1),
            Chunking::bytes(4 * (case.c - 1).max(1)),
        ] {
            let lo = ch.apply(LinearCeOptions::new(case.ce()));
            let ctx = format!("{what}: {} {} {ch:?}", k.isa(), case.combo.name);
            let got = fused(k, case, &lo, ALL, 1).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            ok(&ctx, compare_special(&got, &want));
            all.push((ctx, got));
        }
    }
    all
}

#[test]
fn special_values_neg_inf_bias() {
    let (b, c, d) = (6, 9, 4);
    for combo in [BASE, COMBOS[5], COMBOS[3]] {
        // -inf off every label: probability 0 there, finite loss.
        let mut bias = vec![0.1f32; c];
        bias[2] = f32::NEG_INFINITY;
        bias[7] = f32::NEG_INFINITY;
        let labels = vec![0, 1, 3, 8, 4, 5];
        let case = special_case(b, c, d, bias.clone(), labels.clone(), combo);
        for (ctx, r) in both_modes(&case, "-inf off the labels") {
            if combo.eps == 0.0 {
                assert!(r.st.loss.is_finite(), "{ctx}: {:?}", r.st);
            } else {
                // The smoothing term holds -ln p_c = +inf (as PyTorch); the gradient stays
                // finite.
                assert_eq!(r.st.loss, f32::INFINITY, "{ctx}: {:?}", r.st);
                assert!(
                    r.row_loss
                        .as_ref()
                        .unwrap()
                        .iter()
                        .all(|&v| v == f32::INFINITY),
                    "{ctx}"
                );
            }
            for v in [&r.lse, &r.da, &r.dw, &r.db] {
                assert!(
                    v.as_ref().unwrap().iter().all(|x| x.is_finite()),
                    "{ctx}: {v:?}"
                );
            }
            if combo.eps == 0.0 {
                // p = 0 exactly: no gradient reaches those classes.
                let (db, dw) = (r.db.as_ref().unwrap(), r.dw.as_ref().unwrap());
                for cls in [2, 7] {
                    assert_eq!(db[cls], 0.0, "{ctx}: db");
                    assert!(
                        dw[cls * d..(cls + 1) * d].iter().all(|&v| v == 0.0),
                        "{ctx}: dw"
                    );
                }
            }
        }
        // -inf at row 2's label: that row's loss is +inf (as PyTorch); the others finite.
        let mut labels2 = labels.clone();
        labels2[2] = 2;
        let case = special_case(b, c, d, bias, labels2, combo);
        for (ctx, r) in both_modes(&case, "-inf at a label") {
            let rl = r.row_loss.as_ref().unwrap();
            assert_eq!(rl[2], f32::INFINITY, "{ctx}: {rl:?}");
            if combo.eps == 0.0 {
                assert!(
                    rl.iter().enumerate().all(|(i, v)| i == 2 || v.is_finite()),
                    "{ctx}: {rl:?}"
                );
            }
            for v in [&r.da, &r.dw, &r.db] {
                assert!(
                    v.as_ref().unwrap().iter().all(|x| x.is_finite()),
                    "{ctx}: {v:?}"
                );
            }
            assert_eq!(r.st.loss, f32::INFINITY, "{ctx}");
        }
    }
}

#[test]
fn special_values_nan_and_infinite_bias() {
    let (b, c, d) = (5, 9, 3);
    for (what, v) in [
        ("NaN bias", f32::NAN),
        ("+inf bias", f32::INFINITY),
        ("every bias -inf", f32::NEG_INFINITY),
    ] {
        for combo in [BASE, COMBOS[4], COMBOS[5], COMBOS[9]] {
            let mut bias = vec![0.0f32; c];
            if v == f32::NEG_INFINITY {
                // Every logit -inf: NaN loss and gradient (as PyTorch).
                bias.fill(v);
            } else {
                bias[4] = v;
            }
            let labels = vec![0, 1, 8, 3, 4];
            let mut case = special_case(b, c, d, bias, labels, combo);
            if combo.ignore {
                case.labels[1] = -100;
            }
            // Under a cap, +-inf becomes +-cap: the rows are finite.
            let capped = v.is_infinite() && combo.softcap.is_some();
            for (ctx, r) in both_modes(&case, what) {
                let rl = r.row_loss.as_ref().unwrap();
                let da = r.da.as_ref().unwrap();
                if capped {
                    assert!(r.st.loss.is_finite(), "{ctx}: {:?}", r.st);
                    assert!(da.iter().all(|x| x.is_finite()), "{ctx}: {da:?}");
                    continue;
                }
                assert!(r.st.loss.is_nan(), "{ctx}: {:?}", r.st);
                for i in 0..b {
                    if case.labels[i] < 0 {
                        assert_eq!(rl[i], 0.0, "{ctx}: ignored row {i}");
                        assert!(da[i * d..(i + 1) * d].iter().all(|&x| x == 0.0), "{ctx}");
                    } else {
                        assert!(rl[i].is_nan(), "{ctx}: row {i} {rl:?}");
                        assert!(da[i * d..(i + 1) * d].iter().all(|x| x.is_nan()), "{ctx}");
                    }
                }
            }
        }
    }
}

#[test]
fn special_values_huge_bias() {
    let (b, c, d) = (6, 11, 5);
    for combo in [BASE, COMBOS[5], COMBOS[1], COMBOS[7]] {
        let mut bias = vec![0.0f32; c];
        bias[1] = 1e30;
        bias[4] = -1e30;
        bias[9] = -1e30;
        let labels = vec![1, 0, 4, 1, 10, 9];
        let case = special_case(b, c, d, bias, labels, combo);
        for (ctx, r) in both_modes(&case, "+-1e30 bias") {
            assert!(r.st.loss_f64.is_finite(), "{ctx}: {:?}", r.st);
            for v in [&r.row_loss, &r.lse, &r.da, &r.dw, &r.db] {
                assert!(
                    v.as_ref().unwrap().iter().all(|x| x.is_finite()),
                    "{ctx}: {v:?}"
                );
            }
            if combo.softcap.is_none() && combo.eps == 0.0 {
                // Class 1 takes all the probability: rows labelled 1 lose ~0, the others
                // ~1e30 - z_t (2e30 for the -1e30 classes).
                let rl = r.row_loss.as_ref().unwrap();
                for i in 0..b {
                    let want = match case.labels[i] {
                        1 => 0.0,
                        4 | 9 => 2e30,
                        _ => 1e30,
                    };
                    assert!(
                        (rl[i] as f64 - want).abs() <= 1e-6 * want + 1e-6,
                        "{ctx}: {rl:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn special_values_all_rows_ignored() {
    let (b, c, d) = (4, 7, 3);
    for (red, policy, want) in [
        (Reduction::Mean, AllIgnored::Nan, f64::NAN),
        (Reduction::Mean, AllIgnored::Zero, 0.0),
        (Reduction::Sum, AllIgnored::Nan, 0.0),
    ] {
        let combo = Combo {
            reduction: red,
            ..COMBOS[9]
        };
        let mut case = special_case(b, c, d, vec![0.5; c], vec![-100; b], combo);
        case.all_ignored = policy;
        for (ctx, r) in both_modes(&case, "all ignored") {
            let l = r.st.loss_f64;
            assert!(
                l == want || (l.is_nan() && want.is_nan()),
                "{ctx}: {l} vs {want}"
            );
            assert_eq!(r.st.rows_used, 0, "{ctx}");
            for v in [&r.row_loss, &r.da, &r.db] {
                assert!(
                    v.as_ref().unwrap().iter().all(|&x| x == 0.0),
                    "{ctx}: {v:?}"
                );
            }
            assert!(r.dw.as_ref().unwrap().iter().all(|&x| x == 0.0), "{ctx}");
        }
    }
}

#[test]
fn special_values_empty_batch() {
    // B = 0: loss NaN (Mean, 0/0) or 0; dW and db are the gradients of an empty sum (0), or
    // unchanged with accumulate; the padding of dW untouched.
    let (c, d, ld) = (5, 3, 4);
    let lay = MatrixLayout::new(c, d).with_ld(ld);
    let w: Vec<f32> = (0..c * ld)
        .map(|i| if i % ld < d { 0.5 } else { PAD })
        .collect();
    for k in common::tiers() {
        for ch in [
            Chunking::AUTO,
            Chunking::rows(3),
            Chunking::rc(2, 2),
            Chunking::classes(1),
        ] {
            for (red, policy, accumulate, want) in [
                (Reduction::Mean, AllIgnored::Nan, false, f64::NAN),
                (Reduction::Mean, AllIgnored::Zero, false, 0.0),
                (Reduction::Sum, AllIgnored::Nan, true, 0.0),
            ] {
                let ce = CrossEntropyOptions::default()
                    .reduction(red)
                    .all_ignored(policy);
                let lo = ch.apply(LinearCeOptions::new(ce)).accumulate(accumulate);
                let mut dw: Vec<f32> = (0..c * ld)
                    .map(|i| if i % ld < d { 7.0 } else { PAD })
                    .collect();
                let mut db = vec![7.0f32; c];
                let mut da: Vec<f32> = vec![];
                let st = k
                    .linear_cross_entropy::<i64>(
                        &[],
                        &w,
                        lay,
                        Some(&[1.0; 5]),
                        Targets::Classes(&[]),
                        &lo,
                        &mut LinearCeOutputs {
                            da: Some(&mut da),
                            dw: Some(&mut dw),
                            db: Some(&mut db),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                let ctx = format!("{} {ch:?} {red:?} {policy:?} acc={accumulate}", k.isa());
                assert!(
                    st.loss_f64 == want || (want.is_nan() && st.loss_f64.is_nan()),
                    "{ctx}: {st:?}"
                );
                assert_eq!((st.rows_used, st.denominator), (0, 0.0), "{ctx}");
                let fill = if accumulate { 7.0 } else { 0.0 };
                for (i, v) in dw.iter().enumerate() {
                    if i % ld < d {
                        assert_eq!(*v, fill, "{ctx}: dw {dw:?}");
                    } else {
                        assert_eq!(v.to_bits(), PAD.to_bits(), "{ctx}: dw padding {dw:?}");
                    }
                }
                assert!(db.iter().all(|&v| v == fill), "{ctx}: db {db:?}");
            }
        }
    }
}

#[test]
fn special_values_no_features() {
    // D = 0: the logits are the bias (or 0). dA and dW are empty (dW's layout is all padding,
    // which must stay untouched); db is the column sum of the gradient.
    let (b, c) = (5, 6);
    let ld = 2;
    let w = vec![PAD; c * ld];
    let lay = MatrixLayout::new(c, 0).with_ld(ld);
    let bias = [0.5f32, -1.0, 2.0, 0.0, 0.25, -0.5];
    let labels = [0i64, 2, 5, -100, 3];
    let lse: f64 = bias.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
    let used: Vec<usize> = (0..b).filter(|&i| labels[i] >= 0).collect();
    let n = used.len() as f64;
    let eloss: f64 = used
        .iter()
        .map(|&i| lse - bias[labels[i] as usize] as f64)
        .sum::<f64>()
        / n;
    let edb: Vec<f64> = (0..c)
        .map(|cc| {
            let p = (bias[cc] as f64 - lse).exp();
            used.iter()
                .map(|&i| p - (labels[i] == cc as i64) as u8 as f64)
                .sum::<f64>()
                / n
        })
        .collect();
    for k in common::tiers() {
        for ch in MODES {
            for with_bias in [true, false] {
                let lo = ch.apply(LinearCeOptions::default());
                let mut dw = vec![PAD; c * ld];
                let mut db = vec![PAD; c];
                let mut da: Vec<f32> = vec![];
                let mut ls = vec![0.0f32; b];
                let st = k
                    .linear_cross_entropy(
                        &[],
                        &w,
                        lay,
                        with_bias.then_some(&bias[..]),
                        Targets::Classes(&labels),
                        &lo,
                        &mut LinearCeOutputs {
                            da: Some(&mut da),
                            dw: Some(&mut dw),
                            db: Some(&mut db),
                            ce: CrossEntropyOutputs {
                                lse: Some(&mut ls),
                                ..Default::default()
                            },
                        },
                    )
                    .unwrap();
                let ctx = format!("{} {ch:?} bias={with_bias}", k.isa());
                assert!(
                    dw.iter().all(|v| v.to_bits() == PAD.to_bits()),
                    "{ctx}: dw padding written"
                );
                if with_bias {
                    assert!(
                        (st.loss_f64 - eloss).abs() < 1e-6,
                        "{ctx}: {} vs {eloss}",
                        st.loss_f64
                    );
                    for cc in 0..c {
                        assert!(
                            (db[cc] as f64 - edb[cc]).abs() < 1e-6,
                            "{ctx}: db {db:?} vs {edb:?}"
                        );
                    }
                    assert!(
                        ls.iter().all(|&v| (v as f64 - lse).abs() < 1e-6),
                        "{ctx}: lse {ls:?}"
                    );
                } else {
                    assert!(
                        (st.loss_f64 - (c as f64).ln()).abs() < 1e-6,
                        "{ctx}: {st:?}"
                    );
                }
            }
        }
        // Against the unfused composition, with every option.
        let mut case = Case::new(9, Spec::new(b, c, 0), COMBOS[10]);
        case.bias = Some(bias.to_vec());
        case.labels = labels.to_vec();
        case.ld = ld;
        case.w = w.clone();
        let want = unfused(k, &case);
        for ch in MODES {
            let got = fused(k, &case, &ch.apply(LinearCeOptions::new(case.ce())), ALL, 0).unwrap();
            ok(
                format!("{} D=0 {ch:?}", k.isa()),
                compare_special(&got, &want),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Determinism across thread counts
// ---------------------------------------------------------------------------------------------

#[test]
fn thread_count_determinism() {
    // Debug builds: a smaller shape, still parallel (GEMM tiles above 2^21 multiply-adds,
    // row blocks) and still class-chunked under the 256 KiB budget.
    let (b, c, d) = if DEBUG {
        (150, 1500, 16)
    } else {
        (300, 3000, 64)
    };
    let spec = Spec {
        pad: 4,
        ..Spec::new(b, c, d)
    };
    let case = Case::new(5, spec, COMBOS[9]);
    let pools: Vec<rayon::ThreadPool> = [1, 2, 3, 8]
        .iter()
        .map(|&n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        })
        .collect();
    for k in common::tiers() {
        // Whole rows (one chunk, then chunks of 128 rows), and the automatic class mode
        // (256 KiB: 64 rows by 1024 classes).
        for ch in [
            Chunking::AUTO,
            Chunking::rows(128),
            Chunking::bytes(256 << 10),
        ] {
            let lo = ch.apply(LinearCeOptions::new(case.ce()));
            let runs: Vec<Res> = pools
                .iter()
                .map(|p| p.install(|| fused(k, &case, &lo, ALL, 0).unwrap()))
                .collect();
            for (i, r) in runs.iter().enumerate().skip(1) {
                ok(
                    format!("{} {ch:?}: pool {} vs 1 thread", k.isa(), [1, 2, 3, 8][i]),
                    same_bits(r, &runs[0]),
                );
            }
            assert_eq!(runs[0].argmax, runs[3].argmax);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. accumulate, strided W
// ---------------------------------------------------------------------------------------------

#[test]
fn accumulate_and_strided_w() {
    let mut worst = Worst::default();
    for (si, &(b, c, d, pad)) in [(9usize, 13usize, 6usize, 2usize), (50, 300, 20, 3)]
        .iter()
        .enumerate()
    {
        let spec = Spec {
            pad,
            ..Spec::new(b, c, d)
        };
        let case = Case::new(40 + si as u64, spec, COMBOS[9]);
        let (a64, w64, b64) = case.inputs64();
        let ev = eval64(&case, &a64, &w64, &b64);
        let tol = tolerances(&case, &ev);
        // The same W dense.
        let mut dense = case.clone();
        dense.ld = d;
        dense.w = (0..c * d)
            .map(|i| case.w[(i / d) * case.ld + i % d])
            .collect();
        let mut r = rng(99);
        let prev_dw: Vec<f32> = (0..case.w.len())
            .map(|i| {
                if i % case.ld < d {
                    r.gen_range(-1.0..1.0)
                } else {
                    PAD
                }
            })
            .collect();
        let prev_db = uniform(&mut r, c, -1.0, 1.0);
        for k in common::tiers() {
            for ch in [
                Chunking::AUTO,
                Chunking::rows(4),
                Chunking::rc(7, 5),
                Chunking::bytes(4 * (c / 2)),
            ] {
                let lo = ch.apply(LinearCeOptions::new(case.ce()));
                let ctx = format!("{} B={b} C={c} {ch:?}", k.isa());
                let fresh = fused(k, &case, &lo, ALL, 0).unwrap();
                // Strided W against the same W dense.
                let dres = fused(k, &dense, &lo, ALL, 0).unwrap();
                let mut as_strided = dres.clone();
                as_strided.dw = Some(
                    (0..case.w.len())
                        .map(|i| {
                            if i % case.ld < d {
                                dres.dw.as_ref().unwrap()[(i / case.ld) * d + i % case.ld]
                            } else {
                                PAD
                            }
                        })
                        .collect(),
                );
                ok(
                    format!("{ctx} strided vs dense"),
                    compare(&case, &ev, &tol, &fresh, &as_strided, &mut worst),
                );
                // accumulate: dW += , db += , dA overwritten (it starts as NaN).
                let mut dw = prev_dw.clone();
                let mut db = prev_db.clone();
                let mut da = vec![f32::NAN; b * d];
                let st = k
                    .linear_cross_entropy(
                        &case.a,
                        &case.w,
                        case.layout(),
                        case.bias.as_deref(),
                        case.targets(),
                        &lo.accumulate(true),
                        &mut LinearCeOutputs {
                            da: Some(&mut da),
                            dw: Some(&mut dw),
                            db: Some(&mut db),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                assert_eq!(st.loss_f64.to_bits(), fresh.st.loss_f64.to_bits(), "{ctx}");
                assert_eq!(
                    da.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    fresh
                        .da
                        .as_ref()
                        .unwrap()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>(),
                    "{ctx}: dA with accumulate"
                );
                let fdw = fresh.dw.as_ref().unwrap();
                let want_dw: Vec<f32> = (0..dw.len())
                    .map(|i| {
                        if i % case.ld < d {
                            prev_dw[i] + fdw[i]
                        } else {
                            PAD
                        }
                    })
                    .collect();
                let lay = case.layout();
                ok(
                    format!("{ctx} accumulate dW"),
                    close_strided(
                        "dw(acc)",
                        &dw,
                        &want_dw,
                        lay,
                        |i| {
                            2.0 * tol.dw[i] + 2.0 * ulp64(prev_dw[(i / d) * case.ld + i % d] as f64)
                        },
                        true,
                        &mut worst,
                    ),
                );
                let fdb = fresh.db.as_ref().unwrap();
                let want_db: Vec<f32> = (0..c).map(|i| prev_db[i] + fdb[i]).collect();
                ok(
                    format!("{ctx} accumulate db"),
                    close(
                        "db(acc)",
                        &db,
                        &want_db,
                        |i| 2.0 * tol.db[i] + 2.0 * ulp64(prev_db[i] as f64),
                        true,
                        &mut worst,
                    ),
                );
            }
        }
    }
    worst.print("accumulate_and_strided_w");
}

// ---------------------------------------------------------------------------------------------
// 7. The SGD step
// ---------------------------------------------------------------------------------------------

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn step_matches_gradient_then_sgd() {
    let (b, c, d) = (11, 23, 7);
    for k in common::tiers() {
        for (oi, so) in [
            SgdOptions::new(0.1).momentum(0.9).weight_decay(1e-2),
            SgdOptions::new(0.05)
                .momentum(0.5)
                .nesterov(true)
                .weight_decay(1e-3),
            SgdOptions::new(0.2).weight_decay(1e-2),
        ]
        .into_iter()
        .enumerate()
        {
            for (combo, ch, pad, with_bias) in [
                (COMBOS[9], Chunking::AUTO, 0, true),
                (COMBOS[1], Chunking::rc(4, 5), 0, true),
                (COMBOS[5], Chunking::rows(3), 2, false),
                (COMBOS[3], Chunking::classes(6), 3, true),
            ] {
                let spec = Spec {
                    pad,
                    bias: with_bias,
                    ..Spec::new(b, c, d)
                };
                let case = Case::new(60 + oi as u64, spec, combo);
                let lay = case.layout();
                let lo = ch.apply(LinearCeOptions::new(case.ce()));
                let ctx = format!("{} sgd {oi} {} {ch:?} ld={}", k.isa(), combo.name, case.ld);
                let mut opt1 = k.sgd(so).unwrap();
                let mut opt2 = k.sgd(so).unwrap();
                let (mut w1, mut w2) = (case.w.clone(), case.w.clone());
                let (mut b1, mut b2) = (case.bias.clone(), case.bias.clone());
                for step in 0..3 {
                    // The reference: the fused gradient with the weights before the step, then
                    // the optimizer (dense gradient).
                    let mut dw = vec![0.0f32; c * d];
                    let mut db = vec![0.0f32; c];
                    let mut da2 = vec![0.0f32; b * d];
                    let mut dws = vec![PAD; w2.len()];
                    let st2 = k
                        .linear_cross_entropy(
                            &case.a,
                            &w2,
                            lay,
                            b2.as_deref(),
                            case.targets(),
                            &lo,
                            &mut LinearCeOutputs {
                                da: Some(&mut da2),
                                dw: Some(&mut dws),
                                db: Some(&mut db),
                                ..Default::default()
                            },
                        )
                        .unwrap();
                    for i in 0..c * d {
                        dw[i] = dws[(i / d) * case.ld + i % d];
                    }
                    opt2.apply_grad(&mut w2, lay, &dw).unwrap();
                    if let Some(b2) = b2.as_deref_mut() {
                        opt2.apply_bias_grad(b2, &db).unwrap();
                    }
                    let mut da1 = vec![PAD; b * d];
                    let st1 = k
                        .linear_cross_entropy_step(
                            &case.a,
                            &mut w1,
                            lay,
                            b1.as_deref_mut(),
                            case.targets(),
                            &lo,
                            &mut opt1,
                            Some(&mut da1),
                        )
                        .unwrap();
                    let ctx = format!("{ctx} step {step}");
                    assert_eq!(
                        st1.loss_f64.to_bits(),
                        st2.loss_f64.to_bits(),
                        "{ctx}: loss"
                    );
                    assert_eq!(
                        bits(&da1),
                        bits(&da2),
                        "{ctx}: dA (weights before the step)"
                    );
                    assert_eq!(bits(&w1), bits(&w2), "{ctx}: W");
                    assert_eq!(
                        b1.as_deref().map(bits),
                        b2.as_deref().map(bits),
                        "{ctx}: bias"
                    );
                    assert_eq!(opt1.steps(), opt2.steps(), "{ctx}: steps");
                    assert_eq!(
                        opt1.velocity().map(bits),
                        opt2.velocity().map(bits),
                        "{ctx}: velocity"
                    );
                    assert_eq!(
                        opt1.bias_velocity().map(bits),
                        opt2.bias_velocity().map(bits),
                        "{ctx}: bias velocity"
                    );
                    assert!(
                        w1.iter()
                            .enumerate()
                            .all(|(i, v)| i % case.ld < d || v.to_bits() == PAD.to_bits()),
                        "{ctx}: W padding"
                    );
                }
                assert_ne!(bits(&w1), bits(&case.w), "{ctx}: W did not move");
            }
        }
    }
}

/// A failing step: what, its options, targets, `W` layout, `da` length, the error.
type StepError<'a> = (
    &'a str,
    LinearCeOptions<'a>,
    Targets<'a, i64>,
    MatrixLayout,
    usize,
    Error,
);

#[test]
fn step_errors_change_nothing() {
    let (b, c, d) = (5, 7, 3);
    let case = Case::new(70, Spec::new(b, c, d), BASE);
    let lay = case.layout();
    for k in common::tiers() {
        let mut opt = k.sgd(SgdOptions::new(0.1).momentum(0.9)).unwrap();
        let (mut w, mut bias) = (case.w.clone(), case.bias.clone().unwrap());
        // One good step, so there is momentum state to keep.
        k.linear_cross_entropy_step(
            &case.a,
            &mut w,
            lay,
            Some(&mut bias),
            case.targets(),
            &LinearCeOptions::default(),
            &mut opt,
            None,
        )
        .unwrap();
        let none = CrossEntropyOptions::default().reduction(Reduction::None);
        let bad_labels = [0i64, 1, 7, 2, 3];
        let cases: Vec<StepError<'_>> = vec![
            (
                "accumulate",
                LinearCeOptions::default().accumulate(true),
                case.targets(),
                lay,
                b * d,
                Error::InvalidOption {
                    name: "accumulate",
                    value: "true".into(),
                    expected: "false for a training step",
                },
            ),
            (
                "reduction None",
                LinearCeOptions::new(none),
                case.targets(),
                lay,
                b * d,
                Error::InvalidOption {
                    name: "reduction",
                    value: "None".into(),
                    expected: "Mean or Sum for a training step",
                },
            ),
            (
                "bad label",
                LinearCeOptions::default(),
                Targets::Classes(&bad_labels),
                lay,
                b * d,
                Error::BadLabel {
                    row: 2,
                    label: 7,
                    classes: 7,
                },
            ),
            (
                "da length",
                LinearCeOptions::default(),
                case.targets(),
                lay,
                b * d + 1,
                Error::LengthMismatch {
                    arg: "da",
                    expected: b * d,
                    actual: b * d + 1,
                },
            ),
            (
                "chunk_rows 0",
                LinearCeOptions::default().chunk_rows(0),
                case.targets(),
                lay,
                b * d,
                Error::InvalidOption {
                    name: "chunk_rows",
                    value: "0".into(),
                    expected: ">= 1",
                },
            ),
            (
                "state shape",
                LinearCeOptions::default(),
                case.targets(),
                MatrixLayout::new(d, c),
                b * d,
                Error::StateShape {
                    arg: "w",
                    expected: (c, d),
                    actual: (d, c),
                },
            ),
        ];
        for (what, lo, t, l, dal, want) in cases {
            let (w0, b0) = (w.clone(), bias.clone());
            let (steps, vel, bvel) = (
                opt.steps(),
                opt.velocity().map(bits),
                opt.bias_velocity().map(bits),
            );
            let mut da = vec![PAD; dal];
            let r = if what == "state shape" {
                // A [D, C] W needs D * C floats: the same slice, read as the other shape.
                k.linear_cross_entropy_step(
                    &case.a[..0],
                    &mut w,
                    l,
                    None,
                    Targets::<i64>::Classes(&[]),
                    &lo,
                    &mut opt,
                    None,
                )
            } else {
                k.linear_cross_entropy_step(
                    &case.a,
                    &mut w,
                    l,
                    Some(&mut bias),
                    t,
                    &lo,
                    &mut opt,
                    Some(&mut da),
                )
            };
            let ctx = format!("{} step error {what}", k.isa());
            assert_eq!(r, Err(want), "{ctx}");
            assert_eq!(bits(&w), bits(&w0), "{ctx}: W changed");
            assert_eq!(bits(&bias), bits(&b0), "{ctx}: bias changed");
            assert!(
                da.iter().all(|v| v.to_bits() == PAD.to_bits()),
                "{ctx}: da written"
            );
            assert_eq!(opt.steps(), steps, "{ctx}: steps");
            assert_eq!(opt.velocity().map(bits), vel, "{ctx}: velocity");
            assert_eq!(opt.bias_velocity().map(bits), bvel, "{ctx}: bias velocity");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Errors
// ---------------------------------------------------------------------------------------------

/// A call with every output in a buffer of sentinels, and its arguments as fields to break.
#[derive(Clone)]
struct Call {
    a: Vec<f32>,
    w: Vec<f32>,
    lay: MatrixLayout,
    bias: Option<Vec<f32>>,
    labels: Vec<i64>,
    probs: Option<Vec<f32>>,
    weight: Option<Vec<f32>>,
    reduction: Reduction,
    chunk: Chunking,
    da: Option<Vec<f32>>,
    dw: Option<Vec<f32>>,
    db: Option<Vec<f32>>,
    row_loss: Option<Vec<f32>>,
    lse: Option<Vec<f32>>,
    argmax: Option<Vec<u32>>,
}

impl Call {
    /// A valid call: B = 4, C = 3, D = 2.
    fn good() -> Call {
        let (b, c, d) = (4, 3, 2);
        Call {
            a: vec![0.5; b * d],
            w: vec![0.25; c * d],
            lay: MatrixLayout::new(c, d),
            bias: Some(vec![0.0; c]),
            labels: vec![0, 1, 2, 1],
            probs: None,
            weight: None,
            reduction: Reduction::Mean,
            chunk: Chunking::AUTO,
            da: Some(vec![PAD; b * d]),
            dw: Some(vec![PAD; c * d]),
            db: Some(vec![PAD; c]),
            row_loss: Some(vec![PAD; b]),
            lse: Some(vec![PAD; b]),
            argmax: Some(vec![u32::MAX; b]),
        }
    }

    fn run(&mut self, k: &Kernels, free: bool) -> Result<CrossEntropyStats, Error> {
        let mut ce = CrossEntropyOptions::default().reduction(self.reduction);
        if let Some(w) = &self.weight {
            ce = ce.weight(w);
        }
        let lo = self.chunk.apply(LinearCeOptions::new(ce));
        let t = match &self.probs {
            Some(y) => Targets::Probs(y),
            None => Targets::Classes(&self.labels),
        };
        let mut out = LinearCeOutputs {
            da: self.da.as_deref_mut(),
            dw: self.dw.as_deref_mut(),
            db: self.db.as_deref_mut(),
            ce: CrossEntropyOutputs {
                row_loss: self.row_loss.as_deref_mut(),
                lse: self.lse.as_deref_mut(),
                argmax: self.argmax.as_deref_mut(),
            },
        };
        if free {
            softmax_kernels::linear_cross_entropy(
                &self.a,
                &self.w,
                self.lay,
                self.bias.as_deref(),
                t,
                &lo,
                &mut out,
            )
        } else {
            k.linear_cross_entropy(
                &self.a,
                &self.w,
                self.lay,
                self.bias.as_deref(),
                t,
                &lo,
                &mut out,
            )
        }
    }

    /// Every output still holds its sentinels.
    fn untouched(&self) -> bool {
        let f = |v: &Option<Vec<f32>>| v.iter().flatten().all(|x| x.to_bits() == PAD.to_bits());
        f(&self.da)
            && f(&self.dw)
            && f(&self.db)
            && f(&self.row_loss)
            && f(&self.lse)
            && self.argmax.iter().flatten().all(|&x| x == u32::MAX)
    }
}

#[test]
fn errors_are_typed_and_write_nothing() {
    type Break = fn(&mut Call);
    let rows: Vec<(&str, Break, Error)> = vec![
        (
            "C == 0",
            |c| {
                c.lay = MatrixLayout::new(0, 2);
                c.w.clear();
            },
            Error::ZeroDim {
                arg: "w rows (classes)",
            },
        ),
        (
            "chunk_rows 0",
            |c| c.chunk = Chunking::rows(0),
            Error::InvalidOption {
                name: "chunk_rows",
                value: "0".into(),
                expected: ">= 1",
            },
        ),
        (
            "chunk_classes 0",
            |c| c.chunk = Chunking::classes(0),
            Error::InvalidOption {
                name: "chunk_classes",
                value: "0".into(),
                expected: ">= 1",
            },
        ),
        (
            "chunk_bytes 0",
            |c| c.chunk = Chunking::bytes(0),
            Error::InvalidOption {
                name: "chunk_bytes",
                value: "0".into(),
                expected: ">= 1",
            },
        ),
        (
            "class chunks with probability targets",
            |c| {
                c.probs = Some(vec![1.0 / 3.0; 12]);
                c.chunk = Chunking::rc(2, 2);
                c.argmax = None;
            },
            Error::InvalidOption {
                name: "chunk_classes",
                value: "2".into(),
                expected: "C (whole rows) with probability targets",
            },
        ),
        (
            "bad label",
            |c| c.labels[3] = 3,
            Error::BadLabel {
                row: 3,
                label: 3,
                classes: 3,
            },
        ),
        (
            "negative label",
            |c| c.labels[1] = -1,
            Error::BadLabel {
                row: 1,
                label: -1,
                classes: 3,
            },
        ),
        (
            "a not a multiple of D",
            |c| c.a.push(1.0),
            Error::NotMultiple {
                arg: "a",
                len: 9,
                cols: 2,
            },
        ),
        (
            "a not empty with D = 0",
            |c| {
                c.lay = MatrixLayout::new(3, 0);
                c.w.clear();
                c.dw = Some(vec![]);
                c.da = Some(vec![PAD; 8]);
            },
            Error::LengthMismatch {
                arg: "a",
                expected: 0,
                actual: 8,
            },
        ),
        (
            "bias length",
            |c| c.bias = Some(vec![0.0; 4]),
            Error::LengthMismatch {
                arg: "bias",
                expected: 3,
                actual: 4,
            },
        ),
        (
            "da length",
            |c| c.da = Some(vec![PAD; 7]),
            Error::LengthMismatch {
                arg: "da",
                expected: 8,
                actual: 7,
            },
        ),
        (
            "dw length",
            |c| c.dw = Some(vec![PAD; 5]),
            Error::MatrixLength {
                arg: "dw",
                rows: 3,
                cols: 2,
                ld: 2,
                actual: 5,
            },
        ),
        (
            "db length",
            |c| c.db = Some(vec![PAD; 2]),
            Error::LengthMismatch {
                arg: "db",
                expected: 3,
                actual: 2,
            },
        ),
        (
            "w length",
            |c| c.w.push(0.0),
            Error::MatrixLength {
                arg: "w",
                rows: 3,
                cols: 2,
                ld: 2,
                actual: 7,
            },
        ),
        (
            "w ld < D",
            |c| c.lay = MatrixLayout::new(3, 2).with_ld(1),
            Error::LeadingDim {
                arg: "w",
                ld: 1,
                cols: 2,
            },
        ),
        (
            "targets length",
            |c| c.labels.push(0),
            Error::LengthMismatch {
                arg: "targets",
                expected: 4,
                actual: 5,
            },
        ),
        (
            "probability targets length",
            |c| {
                c.probs = Some(vec![0.5; 11]);
                c.chunk = Chunking::AUTO;
            },
            Error::LengthMismatch {
                arg: "targets",
                expected: 12,
                actual: 11,
            },
        ),
        (
            "row_loss length",
            |c| c.row_loss = Some(vec![PAD; 3]),
            Error::LengthMismatch {
                arg: "row_loss",
                expected: 4,
                actual: 3,
            },
        ),
        (
            "lse length",
            |c| c.lse = Some(vec![PAD; 5]),
            Error::LengthMismatch {
                arg: "lse",
                expected: 4,
                actual: 5,
            },
        ),
        (
            "argmax length",
            |c| c.argmax = Some(vec![u32::MAX; 1]),
            Error::LengthMismatch {
                arg: "argmax",
                expected: 4,
                actual: 1,
            },
        ),
        (
            "weight length",
            |c| c.weight = Some(vec![1.0; 2]),
            Error::LengthMismatch {
                arg: "weight",
                expected: 3,
                actual: 2,
            },
        ),
        (
            "Reduction::None without row_loss",
            |c| {
                c.reduction = Reduction::None;
                c.row_loss = None;
            },
            Error::MissingOutput {
                arg: "row_loss",
                reason: "Reduction::None returns the loss of every row there",
            },
        ),
    ];
    // The good call works on every tier (so each row's error comes from its one change).
    for k in common::tiers() {
        let mut c = Call::good();
        c.run(k, false).unwrap();
        assert!(!c.untouched());
    }
    for (what, brk, want) in rows {
        for k in common::tiers() {
            for (ch, free) in [
                (None, false),
                (Some(Chunking::rc(1, 1)), false),
                (None, true),
            ] {
                let mut c = Call::good();
                if let Some(ch) = ch {
                    c.chunk = ch;
                }
                brk(&mut c);
                let r = c.run(k, free);
                let ctx = format!("{what} ({} {:?} free={free})", k.isa(), c.chunk);
                assert_eq!(r, Err(want.clone()), "{ctx}");
                assert!(c.untouched(), "{ctx}: an output was written");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shapes beyond any real size
// ---------------------------------------------------------------------------------------------

/// What the child process of [`huge_class_count_returns`] runs: `W` with `C` near `usize::MAX`
/// (or 2^40) classes and `D = 0` (an empty slice holds it), no rows: there is nothing to
/// compute, so the call must return at once, `Ok` (the loss of an empty batch) or a typed
/// `Err`. Every public function returns `Result` instead of panicking or aborting.
fn huge_class_count_body() {
    for k in common::tiers() {
        for (c, ch, with_dw) in [
            (usize::MAX, Chunking::AUTO, false),
            (usize::MAX, Chunking::AUTO, true),
            (1usize << 40, Chunking::classes(1), false),
            (1usize << 45, Chunking::rc(1, 1 << 20), true),
        ] {
            let lo = ch.apply(LinearCeOptions::default());
            let mut dw: Vec<f32> = vec![];
            let mut out = LinearCeOutputs {
                dw: with_dw.then_some(&mut dw[..]),
                ..Default::default()
            };
            let r = k.linear_cross_entropy::<i64>(
                &[],
                &[],
                MatrixLayout::new(c, 0),
                None,
                Targets::Classes(&[]),
                &lo,
                &mut out,
            );
            println!("{} C={c} {ch:?} dw={with_dw}: {r:?}", k.isa());
            if let Ok(st) = r {
                assert!(st.loss.is_nan() && st.rows_used == 0, "{st:?}");
            }
        }
    }
    println!("CHILD-DONE");
}

#[test]
#[ignore = "run as a child process by huge_class_count_returns"]
fn huge_class_count_child() {
    if std::env::var_os("LINEAR_CE_CHILD").is_some() {
        huge_class_count_body();
    }
}

/// Runs [`huge_class_count_body`] in a child process (an abort would end this one) and fails
/// if the child aborts, panics or takes more than 60 s.
#[test]
fn huge_class_count_returns() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = common::child::self_command()
        .args([
            "huge_class_count_child",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("LINEAR_CE_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("huge C, D = 0, B = 0: the call did not return within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.success() && text.contains("CHILD-DONE"),
        "huge C, D = 0, B = 0: the child process failed ({status}):\n{text}\n{err}"
    );
}

/// Two bugs the `linear_ce` fuzz target found in the class-chunked mode (D = 0: the bias is
/// the logits). 1: the argmax skipped a class block holding a NaN or `+inf`; the first maximum
/// ignoring NaN is class 2 here, as the whole-row mode and `cross_entropy_with` report it.
/// 2: the blocks' probabilities were rescaled by a difference of absolute f64 logsumexps,
/// which loses `|m| 2^-52`: four equal logits of -1e12 must give `db = p - onehot` with
/// `p = 1/4` exactly (Sum reduction), as the whole-row mode gives.
#[test]
fn class_blocks_regressions() {
    for k in common::tiers() {
        for bias in [[1.0f32, 0.0, 5.0, f32::NAN], [1.0, 0.0, f32::INFINITY, 3.0]] {
            for ch in [Some(2usize), None] {
                let mut argmax = [7u32];
                let mut out = LinearCeOutputs {
                    ce: CrossEntropyOutputs {
                        argmax: Some(&mut argmax),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let mut o = LinearCeOptions::default();
                o.chunk_classes = ch;
                let st = k
                    .linear_cross_entropy(
                        &[],
                        &[],
                        MatrixLayout::new(4, 0),
                        Some(&bias),
                        Targets::Classes(&[2i64]),
                        &o,
                        &mut out,
                    )
                    .unwrap();
                assert_eq!(argmax, [2], "{:?} {bias:?} {ch:?}", k.isa());
                assert_eq!(st.correct, Some(1), "{:?} {bias:?} {ch:?}", k.isa());
            }
        }
        for big in [-1e12f32, -1e15, 3e37] {
            let mut db = [0.0f32; 4];
            let mut out = LinearCeOutputs {
                db: Some(&mut db),
                ..Default::default()
            };
            let o = LinearCeOptions::new(CrossEntropyOptions::default().reduction(Reduction::Sum))
                .chunk_classes(2);
            k.linear_cross_entropy(
                &[],
                &[],
                MatrixLayout::new(4, 0),
                Some(&[big; 4]),
                Targets::Classes(&[1i64]),
                &o,
                &mut out,
            )
            .unwrap();
            assert_eq!(db, [0.25, -0.75, 0.25, 0.25], "{:?} {big}", k.isa());
        }
    }
}

/// CI's fuzz run found this: a subnormal gradient scale (`scale * row_scale`, here
/// `0.5 * 8.5352e-41`) with huge class weights and full smoothing. The class-block path formed
/// the coefficient of `p` from the unrounded `g`, the whole-row kernel from `g` rounded to f32
/// (`2^-150` absolute, 2e-5 relative here), and the gradient `g w (p_j - 1/C)` cancels, so
/// the two differed far beyond an f32 rounding. Both now use the rounded `g`; the class
/// blocks' gradient must equal the whole-row kernel's within a few f32 roundings of its terms.
#[test]
fn subnormal_row_scale_class_blocks_match_whole_rows() {
    let c = 7;
    let w = -9.204448e27f32;
    let weights = vec![w; c];
    let bias: Vec<f32> = (0..c).map(|j| 0.3 * j as f32).collect();
    for k in common::tiers() {
        for rs in [8.5352e-41f32, -6.8112e-41, 1.1447e-40, 3e-39] {
            let ce = CrossEntropyOptions::default()
                .reduction(Reduction::None)
                .weight(&weights)
                .label_smoothing(1.0)
                .z_loss(1e-4)
                .scale(0.5)
                .row_scale(std::slice::from_ref(&rs));
            // The whole-row kernel on the logits `bias` (D = 0), its gradient in place.
            let mut z = bias.clone();
            k.cross_entropy_with(
                Logits::InPlace(&mut z),
                Targets::Classes(&[3i64]),
                c,
                &ce,
                &mut CrossEntropyOutputs {
                    row_loss: Some(&mut [0.0f32]),
                    ..Default::default()
                },
            )
            .unwrap();
            let g = 0.5 * rs as f64;
            let tol = (g * w as f64).abs() * 2f64.powi(-20);
            for ch in [1usize, 2, 3] {
                let mut db = vec![0.0f32; c];
                let mut row_loss = [0.0f32];
                let mut out = LinearCeOutputs {
                    db: Some(&mut db),
                    ce: CrossEntropyOutputs {
                        row_loss: Some(&mut row_loss),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let o = LinearCeOptions::new(ce).chunk_classes(ch);
                k.linear_cross_entropy(
                    &[],
                    &[],
                    MatrixLayout::new(c, 0),
                    Some(&bias),
                    Targets::Classes(&[3i64]),
                    &o,
                    &mut out,
                )
                .unwrap();
                for j in 0..c {
                    let err = (db[j] as f64 - z[j] as f64).abs();
                    assert!(
                        err <= tol,
                        "{:?} row_scale {rs:e} chunk {ch} [{j}]: class blocks {:e}, whole rows {:e}, |err| {err:e} > {tol:e}",
                        k.isa(),
                        db[j],
                        z[j]
                    );
                }
            }
        }
    }
}
