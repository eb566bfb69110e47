//! The fused cross-entropy family (`softmax_kernels::cross_entropy`) on every available tier,
//! against an independent f64 implementation of PyTorch's `F.cross_entropy` semantics written
//! here from the formulas (plus the crate's documented extensions: z-loss, soft-capping, the
//! upstream `scale` and `row_scale`).
//!
//! * `class_targets_*` / `prob_targets_*`: every combination of reduction (None, None with
//!   `row_scale`, Sum, Mean), class weights, `ignore_index` (None, -100, 2), label smoothing
//!   (0, 0.1, 1), z-loss (0, 1e-3), soft-cap (None, 5) and `scale` (1, 0.5), with class labels
//!   cycling through i64, i32, u32 and usize, and probability targets both normalized and not;
//!   on rows of 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 1000 and 32000 classes (and
//!   every 11th combination at 128256 classes), random
//!   logits at scales 1 and 30. Each case checks the loss, the gradient into a separate
//!   buffer, the gradient in place (bit-identical to the separate one), the loss-only sweep
//!   (bit-identical loss), `row_loss`, `lse`, `argmax`, the correct count and the stats.
//! * `gradient_matches_finite_differences`: the crate's gradient against central differences of
//!   the f64 loss written here.
//! * `label_types_agree`: every `Label` type gives the same bits as i64.
//! * `wrappers_match_ext`: the convenience methods and free functions agree with
//!   `cross_entropy_with` bit for bit.
//! * `thread_count_determinism`: the same bits under rayon pools of 1, 2, 3 and 8 threads.
//! * `shift_invariance_and_zero_sum` (proptest): adding a constant to a row leaves the loss
//!   unchanged, and (mean, no weights, no z-loss, no cap) each gradient row sums to ~0.
//!
//! Nothing here reads an expected value from the crate: the oracle below is plain f64 code.
//! Debug builds (`cargo test` without `--release`) run a thinned-out matrix.

#[macro_use]
mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use softmax_kernels::{
    AllIgnored, CrossEntropyOptions, CrossEntropyOutputs, CrossEntropyStats, Error, Isa, Kernels,
    Label, Logits, Reduction, Targets,
};

// ---------------------------------------------------------------------------------------------
// Tolerances
// ---------------------------------------------------------------------------------------------
//
// Error model of an f32 kernel for one row (no cap): `m` is exact, every `exp(z - m)` is within
// 2 ULP (~2.4e-7 relative) plus the rounding of `z - m` to f32 (2^-24 |z - m| relative), the
// sums run in f32 lanes over short blocks and in f64 across blocks, `lse = m + ln s` in f64.
// So `lse` errs by ~3e-7 absolute (the softmax contract's `1e-6 * max(1, |lse|)` bound), the
// target logit is exact, and the smoothing dot `sum_c w_c z_c` (f32 lanes, short blocks) errs
// by ~1e-6 of `sum_c |w_c z_c|` at worst (typically far less). The loss is a combination of
// such terms, each bounded by `|coefficient| * max(1, |lse|, max |z|)`: `LOSS_MAG` = 1e-6
// times that sum is the absolute part of the tolerance, `LOSS_REL` = 1e-5 the relative part
// (the runs print the largest error / tolerance seen: a few percent). The absolute part
// matters where the loss cancels (a dominant target at logit scale 30 gives a loss ~1e-12,
// which no f32 kernel gets to 1e-5 relative). It scales with `max |z|` (the input's own ULP
// scale), so it cannot see a loss rounded at the scale of huge logits: that is checked
// separately with exact expectations in `tests/cross_entropy_special.rs` (`huge_logits`).
//
// Gradient: `g (P p_c - s_c) - fix [c = t]` with `P` the coefficient of `p`. `p_c` is within
// ~1e-6 relative (softmax contract), the factor `g P / s` is rounded to f32 once, the
// subtractions once more: at most ~1e-6 of `G = |g| (|P| + max |s_c| + |fix|)`, the largest
// magnitude any term of the row can have. `GRAD_ABS` = 1e-6 times `G` is the tolerance,
// checked on every element (observed: up to ~1/4 of it).
//
// Soft-cap: the SIMD tiers compute `cap tanh(x / cap)` in f32 with an absolute error of a few
// ULP of `cap` (the kernel's docs: below `cap 2^-22`, i.e. ~2.5 ULP of cap = 5); we allow
// `DZ_ULPS` = 4 ULP of `cap` per capped logit (`dz`). That moves `lse` and `z_t` by `dz` each
// (loss: `2 dz` per unit of coefficient; we allow `4 dz`), every `p_c` by `2 dz` relative, and the chain
// factor `1 - (z / cap)^2` by `2 dz / cap` (gradient: `+ G (2 dz + 2 dz / cap)`), and it can
// reorder capped logits closer than `2 dz` (argmax: any index within `2 dz` of the maximum).

/// Absolute loss tolerance per unit of `|coefficient| * max(1, |lse|, max |z|)`.
const LOSS_MAG: f64 = 1e-6;
/// Relative loss tolerance.
const LOSS_REL: f64 = 1e-5;
/// Gradient tolerance per unit of the row's gradient magnitude `G`.
const GRAD_ABS: f64 = 1e-6;
/// `lse` output: `LSE_REL * max(1, |lse|)` (the crate's logsumexp contract).
const LSE_REL: f64 = 1e-6;
/// Allowed error of one soft-capped logit, in ULP of `cap`.
const DZ_ULPS: f64 = 4.0;

/// Output buffers start as this NaN, so an element a call forgets to write fails its check.
const UNWRITTEN: f32 = f32::from_bits(0x7FA5_5A5A);

/// Is this a debug build (thin the matrix out)?
const DEBUG: bool = cfg!(debug_assertions);

fn ulp(x: f32) -> f64 {
    let a = x.abs();
    (f32::from_bits(a.to_bits() + 1) - a) as f64
}

/// The allowed error of one capped logit.
fn dz_of(cap: Option<f32>) -> f64 {
    cap.map_or(0.0, |c| DZ_ULPS * ulp(c))
}

// ---------------------------------------------------------------------------------------------
// Configuration of one case
// ---------------------------------------------------------------------------------------------

/// Which options a case uses (vectors are drawn per shape).
#[derive(Clone, Copy, Debug)]
struct Combo {
    reduction: Reduction,
    weight: bool,
    ignore: Option<i64>,
    eps: f32,
    zl: f32,
    cap: Option<f32>,
    scale: f32,
    row_scale: bool,
    all_ignored: AllIgnored,
}

/// A combo with its vectors.
#[derive(Clone, Debug)]
struct Cfg {
    c: Combo,
    weight: Option<Vec<f32>>,
    row_scale: Option<Vec<f32>>,
}

impl Cfg {
    fn new(c: Combo, rows: usize, cols: usize, rng: &mut StdRng) -> Cfg {
        let weight = c
            .weight
            .then(|| (0..cols).map(|_| rng.gen_range(0.25f32..2.0)).collect());
        let row_scale = c
            .row_scale
            .then(|| (0..rows).map(|_| rng.gen_range(-2.0f32..2.0)).collect());
        Cfg {
            c,
            weight,
            row_scale,
        }
    }

    fn opts(&self) -> CrossEntropyOptions<'_> {
        let mut o = CrossEntropyOptions::default();
        o.reduction = self.c.reduction;
        o.weight = self.weight.as_deref();
        o.ignore_index = self.c.ignore;
        o.label_smoothing = self.c.eps;
        o.z_loss = self.c.zl;
        o.softcap = self.c.cap;
        o.all_ignored = self.c.all_ignored;
        o.scale = self.c.scale;
        o.row_scale = self.row_scale.as_deref();
        o
    }
}

/// Every reduction, the `None` one with and without `row_scale`.
const REDUCTIONS: [(Reduction, bool); 4] = [
    (Reduction::None, false),
    (Reduction::None, true),
    (Reduction::Sum, false),
    (Reduction::Mean, false),
];

/// Every combination of options for class targets (576).
fn class_combos() -> Vec<Combo> {
    let mut v = Vec::new();
    for (reduction, row_scale) in REDUCTIONS {
        for weight in [false, true] {
            for ignore in [None, Some(-100), Some(2)] {
                for eps in [0.0f32, 0.1, 1.0] {
                    for zl in [0.0f32, 1e-3] {
                        for cap in [None, Some(5.0f32)] {
                            for scale in [1.0f32, 0.5] {
                                let all_ignored = if v.len() % 2 == 0 {
                                    AllIgnored::Nan
                                } else {
                                    AllIgnored::Zero
                                };
                                v.push(Combo {
                                    reduction,
                                    weight,
                                    ignore,
                                    eps,
                                    zl,
                                    cap,
                                    scale,
                                    row_scale,
                                    all_ignored,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    v
}

/// Every combination for probability targets (192; `ignore_index` does not apply).
fn prob_combos() -> Vec<Combo> {
    class_combos()
        .into_iter()
        .filter(|c| c.ignore == Some(-100))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The f64 oracle (PyTorch F.cross_entropy semantics + z-loss + soft-cap + upstream scales)
// ---------------------------------------------------------------------------------------------

/// Targets as the oracle sees them.
#[derive(Clone, Copy)]
enum OTargets<'a> {
    /// Label values (any integer type, widened).
    Classes(&'a [i128]),
    /// Probability rows.
    Probs(&'a [f32]),
}

/// Expected results and their tolerances.
#[derive(Clone, Debug)]
struct Oracle {
    loss: f64,
    loss_tol: f64,
    row_loss: Vec<f64>,
    row_tol: Vec<f64>,
    lse: Vec<f64>,
    lse_tol: Vec<f64>,
    /// The capped logits (f64), for the argmax check under the cap.
    z: Vec<f64>,
    /// First index of the maximum of the capped logits.
    argmax: Vec<usize>,
    grad: Vec<f64>,
    grad_tol: Vec<f64>,
    den: f64,
    rows_used: usize,
    correct: usize,
    /// The class of each row (None: ignored, or probability targets).
    class: Vec<Option<usize>>,
}

fn capz(x: f64, cap: Option<f32>) -> f64 {
    match cap {
        Some(c) => {
            let c = c as f64;
            c * (x / c).tanh()
        }
        None => x,
    }
}

/// `d capz / dx = 1 - tanh^2(x / cap)`.
fn dcapz(x: f64, cap: Option<f32>) -> f64 {
    match cap {
        Some(c) => {
            let t = (x / c as f64).tanh();
            1.0 - t * t
        }
        None => 1.0,
    }
}

/// The oracle on f64 logits `x` (`rows * cols`), straight from the definitions:
///
/// ```text
/// z = capz(x), lse = log sum exp z, logp = z - lse, p = exp(logp)
/// class t:  loss = (1 - eps) (-w_t logp_t) + (eps / C) (-sum_c w_c logp_c) + zl lse^2
/// probs y:  y' = (1 - eps) y + eps / C,  loss = -sum_c w_c y'_c logp_c + zl lse^2
/// Mean: sum / (sum of w_t over rows not ignored) (classes) or / rows (probs)
/// grad = d(reduced loss)/dx, times scale (and row_scale[r] for None).
/// ```
fn oracle(x: &[f64], cols: usize, t: OTargets<'_>, cfg: &Cfg) -> Oracle {
    let rows = x.len() / cols;
    let c = &cfg.c;
    let eps = c.eps as f64;
    let zl = c.zl as f64;
    let cf = cols as f64;
    let w = |k: usize| cfg.weight.as_ref().map_or(1.0, |w| w[k] as f64);
    let wsum: f64 = (0..cols).map(w).sum();
    let wabs_max = (0..cols).map(|k| w(k).abs()).fold(0.0, f64::max);
    let dz = dz_of(c.cap);

    // Classes of the rows and Mean's denominator.
    let class: Vec<Option<usize>> = match t {
        OTargets::Classes(l) => l
            .iter()
            .map(|&v| {
                if c.ignore.is_some_and(|i| i as i128 == v) {
                    None
                } else {
                    assert!(v >= 0 && v < cols as i128, "oracle got a bad label {v}");
                    Some(v as usize)
                }
            })
            .collect(),
        OTargets::Probs(_) => vec![None; rows],
    };
    let (den, rows_used) = match t {
        OTargets::Classes(_) => (
            class.iter().flatten().map(|&k| w(k)).sum::<f64>(),
            class.iter().flatten().count(),
        ),
        OTargets::Probs(_) => (rows as f64, rows),
    };
    let red = match c.reduction {
        Reduction::Mean => 1.0 / den,
        _ => 1.0,
    };

    let mut o = Oracle {
        loss: 0.0,
        loss_tol: 0.0,
        row_loss: vec![0.0; rows],
        row_tol: vec![0.0; rows],
        lse: vec![0.0; rows],
        lse_tol: vec![0.0; rows],
        z: Vec::with_capacity(x.len()),
        argmax: vec![0; rows],
        grad: vec![0.0; x.len()],
        grad_tol: vec![0.0; x.len()],
        den,
        rows_used,
        correct: 0,
        class: class.clone(),
    };
    let mut total = 0.0f64;
    let mut total_tol = 0.0f64;
    for r in 0..rows {
        let xr = &x[r * cols..(r + 1) * cols];
        let z: Vec<f64> = xr.iter().map(|&v| capz(v, c.cap)).collect();
        let mut m = f64::NEG_INFINITY;
        let mut am = 0;
        for (k, &v) in z.iter().enumerate() {
            if v > m {
                m = v;
                am = k;
            }
        }
        let lse = m + z.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
        let logp: Vec<f64> = z.iter().map(|&v| v - lse).collect();
        let p: Vec<f64> = logp.iter().map(|&v| v.exp()).collect();
        let zmax_abs = z.iter().fold(0.0f64, |a, &v| a.max(v.abs()));
        let lam = 1.0f64.max(lse.abs()).max(zmax_abs);
        o.argmax[r] = am;
        o.lse[r] = lse;
        o.lse_tol[r] = LSE_REL * lse.abs().max(1.0) + 2.0 * dz;
        let g_r = red * c.scale as f64 * cfg.row_scale.as_ref().map_or(1.0, |s| s[r] as f64);

        // (loss, coefficient magnitude A, dloss/dz, gradient magnitude G / |g|)
        let (loss, a_mag, dz_loss, g_mag) = match t {
            OTargets::Classes(_) => {
                let Some(tc) = class[r] else {
                    o.z.extend_from_slice(&z);
                    continue;
                };
                if am == tc {
                    o.correct += 1;
                }
                let wt = w(tc);
                let nll = -wt * logp[tc];
                let smooth: f64 = -(0..cols).map(|k| w(k) * logp[k]).sum::<f64>();
                let loss = (1.0 - eps) * nll + eps / cf * smooth + zl * lse * lse;
                let a_mag = (1.0 - eps) * wt.abs()
                    + eps / cf * (0..cols).map(|k| w(k).abs()).sum::<f64>()
                    + zl * lse.abs();
                // d/dz_c: (1-eps) w_t (p_c - [c=t]) + (eps/C) sum_k w_k (p_c - [c=k])
                //         + 2 zl lse p_c
                let pc = (1.0 - eps) * wt + eps / cf * wsum + 2.0 * zl * lse;
                let d: Vec<f64> = (0..cols)
                    .map(|k| {
                        let mut v = pc * p[k] - eps / cf * w(k);
                        if k == tc {
                            v -= (1.0 - eps) * wt;
                        }
                        v
                    })
                    .collect();
                let g_mag = pc.abs() + eps / cf * wabs_max + (1.0 - eps) * wt.abs();
                (loss, a_mag, d, g_mag)
            }
            OTargets::Probs(y) => {
                let yr = &y[r * cols..(r + 1) * cols];
                let ys: Vec<f64> = (0..cols)
                    .map(|k| w(k) * ((1.0 - eps) * yr[k] as f64 + eps / cf))
                    .collect();
                let sy: f64 = ys.iter().sum();
                let loss = -(0..cols).map(|k| ys[k] * logp[k]).sum::<f64>() + zl * lse * lse;
                let a_mag = ys.iter().map(|v| v.abs()).sum::<f64>() + zl * lse.abs();
                let pc = sy + 2.0 * zl * lse;
                let d: Vec<f64> = (0..cols).map(|k| pc * p[k] - ys[k]).collect();
                let g_mag = pc.abs() + ys.iter().fold(0.0f64, |a, v| a.max(v.abs()));
                (loss, a_mag, d, g_mag)
            }
        };
        let row_tol = LOSS_REL * loss.abs() + LOSS_MAG * a_mag * lam + 4.0 * dz * a_mag;
        o.row_loss[r] = loss;
        o.row_tol[r] = row_tol;
        total += loss;
        total_tol += row_tol;
        let gtol = GRAD_ABS * g_r.abs() * g_mag
            + c.cap.map_or(0.0, |cap| {
                g_r.abs() * g_mag * (2.0 * dz + 2.0 * dz / cap as f64)
            });
        for k in 0..cols {
            o.grad[r * cols + k] = g_r * dz_loss[k] * dcapz(xr[k], c.cap);
            o.grad_tol[r * cols + k] = gtol;
        }
        o.z.extend_from_slice(&z);
    }
    let (loss, tol) = match c.reduction {
        Reduction::Mean if rows_used == 0 && c.all_ignored == AllIgnored::Zero => (0.0, 0.0),
        Reduction::Mean => (total / den, total_tol / den.abs()),
        Reduction::Sum | Reduction::None => (total, total_tol),
    };
    o.loss = loss;
    o.loss_tol = tol + 1e-7 * loss.abs();
    o
}

// ---------------------------------------------------------------------------------------------
// Running the crate
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Read,
    Grad,
    InPlace,
}

/// What one call returned.
#[derive(Debug)]
struct Run {
    stats: CrossEntropyStats,
    grad: Vec<f32>,
    row_loss: Option<Vec<f32>>,
    lse: Option<Vec<f32>>,
    argmax: Option<Vec<u32>>,
}

/// One `cross_entropy_with` call. `outs`: ask for row_loss, lse and argmax (row_loss is always
/// passed under `Reduction::None`). Output buffers start as [`UNWRITTEN`].
fn run<L: Label>(
    k: &Kernels,
    x: &[f32],
    t: Targets<'_, L>,
    cols: usize,
    opts: &CrossEntropyOptions<'_>,
    mode: Mode,
    outs: bool,
) -> Result<Run, Error> {
    let rows = x.len() / cols.max(1);
    let mut row_loss = vec![UNWRITTEN; rows];
    let mut lse = vec![UNWRITTEN; rows];
    let mut argmax = vec![u32::MAX; rows];
    let want_rl = outs || opts.reduction == Reduction::None;
    let mut grad = match mode {
        Mode::Read => Vec::new(),
        Mode::Grad => vec![UNWRITTEN; x.len()],
        Mode::InPlace => x.to_vec(),
    };
    let stats = {
        let mut out = CrossEntropyOutputs {
            row_loss: want_rl.then_some(&mut row_loss[..]),
            lse: outs.then_some(&mut lse[..]),
            argmax: outs.then_some(&mut argmax[..]),
        };
        let logits = match mode {
            Mode::Read => Logits::Read(x),
            Mode::Grad => Logits::Grad(x, &mut grad),
            Mode::InPlace => Logits::InPlace(&mut grad),
        };
        k.cross_entropy_with(logits, t, cols, opts, &mut out)?
    };
    Ok(Run {
        stats,
        grad,
        row_loss: want_rl.then_some(row_loss),
        lse: outs.then_some(lse),
        argmax: outs.then_some(argmax),
    })
}

/// Collects failures (the first few in full) so that one run reports them all.
#[derive(Default)]
struct Failures {
    count: usize,
    msgs: Vec<String>,
    /// The largest `error / tolerance` seen per quantity (SIMD tiers), printed at the end to
    /// show how much of each tolerance is used.
    worst: std::collections::BTreeMap<&'static str, f64>,
}

impl Failures {
    /// Records `|got - exp| / tol` for a finite pair.
    fn ratio(&mut self, what: &'static str, got: f64, exp: f64, tol: f64) {
        if got.is_finite() && exp.is_finite() && tol > 0.0 {
            let r = (got - exp).abs() / tol;
            let e = self.worst.entry(what).or_insert(0.0);
            *e = e.max(r);
        }
    }

    fn add(&mut self, m: String) {
        self.count += 1;
        if self.msgs.len() < 25 {
            self.msgs.push(m);
        }
    }

    fn check(&mut self, ok: bool, m: impl FnOnce() -> String) {
        if !ok {
            self.add(m());
        }
    }

    fn finish(self, what: &str) {
        eprintln!("{what}: largest error / tolerance: {:?}", self.worst);
        if self.count > 0 {
            panic!(
                "{what}: {} failures; the first {}:\n{}",
                self.count,
                self.msgs.len(),
                self.msgs.join("\n")
            );
        }
    }
}

/// `got` within `tol` of `exp`; NaN must match NaN, an infinity the same infinity.
fn close(got: f64, exp: f64, tol: f64) -> bool {
    if exp.is_nan() || got.is_nan() {
        exp.is_nan() && got.is_nan()
    } else if exp.is_infinite() || got.is_infinite() {
        got == exp
    } else {
        (got - exp).abs() <= tol
    }
}

/// Stats equal bit for bit (NaN losses included).
fn same_stats(a: &CrossEntropyStats, b: &CrossEntropyStats) -> bool {
    a.loss.to_bits() == b.loss.to_bits()
        && a.loss_f64.to_bits() == b.loss_f64.to_bits()
        && a.denominator.to_bits() == b.denominator.to_bits()
        && a.rows_used == b.rows_used
        && a.correct == b.correct
}

fn same_bits(a: &[f32], b: &[f32]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(usize::MAX);
    }
    a.iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits())
}

/// Runs one case on tier `k` in all four ways and checks everything against `o`.
#[allow(clippy::too_many_arguments)]
fn check_case<L: Label>(
    f: &mut Failures,
    k: &Kernels,
    x: &[f32],
    t: Targets<'_, L>,
    cols: usize,
    cfg: &Cfg,
    o: &Oracle,
    ctx: &str,
) {
    let opts = cfg.opts();
    let ctx = format!("[{} {ctx}]", k.isa());
    let is_classes = matches!(t, Targets::Classes(_));
    let rows = x.len() / cols;
    let dz = dz_of(cfg.c.cap);

    // A: gradient into a separate buffer, every output.
    let a = match run(k, x, t, cols, &opts, Mode::Grad, true) {
        Ok(a) => a,
        Err(e) => return f.add(format!("{ctx} Grad: unexpected error {e:?}")),
    };
    let st = a.stats;
    let simd = k.isa() != Isa::Scalar;
    if simd {
        f.ratio("loss", st.loss_f64, o.loss, o.loss_tol);
    }
    f.check(close(st.loss_f64, o.loss, o.loss_tol), || {
        format!(
            "{ctx} loss_f64 {:e}, expected {:e} (tol {:e}, err {:e})",
            st.loss_f64,
            o.loss,
            o.loss_tol,
            (st.loss_f64 - o.loss).abs()
        )
    });
    f.check(st.loss.to_bits() == (st.loss_f64 as f32).to_bits(), || {
        format!("{ctx} loss {} != loss_f64 as f32 {}", st.loss, st.loss_f64)
    });
    f.check(
        close(st.denominator, o.den, 1e-12 * o.den.abs()) && st.rows_used == o.rows_used,
        || {
            format!(
                "{ctx} denominator {} rows_used {}, expected {} {}",
                st.denominator, st.rows_used, o.den, o.rows_used
            )
        },
    );
    // Correct count: exact without the cap; under the cap the argmax may legitimately pick
    // another index within 2 dz of the maximum, so it must agree with the reported argmax.
    let am = a.argmax.as_ref().expect("asked for argmax");
    let expected_correct = if cfg.c.cap.is_none() {
        Some(o.correct)
    } else {
        Some(
            (0..rows)
                .filter(|&r| o.class[r].is_some_and(|c| am[r] as usize == c))
                .count(),
        )
    };
    let expected_correct = if is_classes { expected_correct } else { None };
    f.check(st.correct == expected_correct, || {
        format!(
            "{ctx} correct {:?}, expected {:?}",
            st.correct, expected_correct
        )
    });
    // Gradient.
    let mut bad = 0;
    for i in 0..x.len() {
        let g = a.grad[i] as f64;
        if simd {
            f.ratio(
                if cfg.c.cap.is_some() {
                    "grad (cap)"
                } else {
                    "grad"
                },
                g,
                o.grad[i],
                o.grad_tol[i],
            );
        }
        if !close(g, o.grad[i], o.grad_tol[i]) {
            bad += 1;
            if bad <= 3 {
                f.add(format!(
                    "{ctx} grad[{i}] (row {}, col {}) = {:e}, expected {:e} (tol {:e})",
                    i / cols,
                    i % cols,
                    g,
                    o.grad[i],
                    o.grad_tol[i]
                ));
            }
        }
    }
    // Row outputs.
    let rl = a.row_loss.as_ref().expect("asked for row_loss");
    let ls = a.lse.as_ref().expect("asked for lse");
    for r in 0..rows {
        let ignored = is_classes && o.class[r].is_none();
        if ignored {
            f.check(rl[r].to_bits() == 0.0f32.to_bits(), || {
                format!("{ctx} row_loss[{r}] of an ignored row = {:e}", rl[r])
            });
        } else {
            if simd {
                f.ratio("row_loss", rl[r] as f64, o.row_loss[r], o.row_tol[r]);
            }
            f.check(close(rl[r] as f64, o.row_loss[r], o.row_tol[r]), || {
                format!(
                    "{ctx} row_loss[{r}] = {:e}, expected {:e} (tol {:e})",
                    rl[r], o.row_loss[r], o.row_tol[r]
                )
            });
        }
        if simd {
            f.ratio("lse", ls[r] as f64, o.lse[r], o.lse_tol[r]);
        }
        f.check(close(ls[r] as f64, o.lse[r], o.lse_tol[r]), || {
            format!(
                "{ctx} lse[{r}] = {:e}, expected {:e} (tol {:e})",
                ls[r], o.lse[r], o.lse_tol[r]
            )
        });
        let got = am[r] as usize;
        let ok = if cfg.c.cap.is_none() {
            got == o.argmax[r]
        } else {
            got < cols && o.z[r * cols + got] >= o.z[r * cols + o.argmax[r]] - 2.0 * dz
        };
        f.check(ok, || {
            format!(
                "{ctx} argmax[{r}] = {got}, expected {} (row {:?}...)",
                o.argmax[r],
                &x[r * cols..(r * cols + cols.min(8))]
            )
        });
    }

    // B: in place, no optional outputs: the same gradient and loss bits.
    match run(k, x, t, cols, &opts, Mode::InPlace, false) {
        Ok(b) => {
            if let Some(i) = same_bits(&b.grad, &a.grad) {
                f.add(format!(
                    "{ctx} in-place grad[{i}] = {:e} differs from the separate buffer's {:e}",
                    b.grad[i], a.grad[i]
                ));
            }
            f.check(b.stats.loss_f64.to_bits() == st.loss_f64.to_bits(), || {
                format!(
                    "{ctx} in-place loss {:e} != separate {:e}",
                    b.stats.loss_f64, st.loss_f64
                )
            });
        }
        Err(e) => f.add(format!("{ctx} InPlace: unexpected error {e:?}")),
    }
    // C: loss only, no optional outputs: the same loss bits.
    match run(k, x, t, cols, &opts, Mode::Read, false) {
        Ok(c) => f.check(c.stats.loss_f64.to_bits() == st.loss_f64.to_bits(), || {
            format!(
                "{ctx} loss-only loss {:e} != fwd_bwd loss {:e}",
                c.stats.loss_f64, st.loss_f64
            )
        }),
        Err(e) => f.add(format!("{ctx} Read: unexpected error {e:?}")),
    }
    // D: loss only with every output: the same bits as A.
    match run(k, x, t, cols, &opts, Mode::Read, true) {
        Ok(d) => {
            f.check(same_stats(&d.stats, &st), || {
                format!("{ctx} loss-only stats {:?} != fwd_bwd {:?}", d.stats, st)
            });
            for (name, p, q) in [
                ("row_loss", d.row_loss.as_ref(), a.row_loss.as_ref()),
                ("lse", d.lse.as_ref(), a.lse.as_ref()),
            ] {
                if let Some(i) = same_bits(p.unwrap(), q.unwrap()) {
                    f.add(format!(
                        "{ctx} loss-only {name}[{i}] differs from fwd_bwd's"
                    ));
                }
            }
            f.check(d.argmax == a.argmax, || {
                format!("{ctx} loss-only argmax differs from fwd_bwd's")
            });
        }
        Err(e) => f.add(format!("{ctx} Read+outputs: unexpected error {e:?}")),
    }
}

fn tiers() -> Vec<&'static Kernels> {
    let av = Isa::available();
    assert!(av.starts_with(&[Isa::Scalar, Isa::Portable]), "{av:?}");
    av.into_iter()
        .map(|i| {
            let k = Kernels::for_isa(i).expect("available tier");
            assert_eq!(k.isa(), i);
            k
        })
        .collect()
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn logits(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

/// Labels: the ignored value on about a quarter of the rows when the label type can hold it,
/// else a uniform class.
fn gen_labels(
    rng: &mut StdRng,
    rows: usize,
    cols: usize,
    ignore: Option<i64>,
    signed: bool,
) -> Vec<i128> {
    (0..rows)
        .map(|_| match ignore {
            Some(i) if (signed || i >= 0) && rng.gen_bool(0.25) => i as i128,
            _ => rng.gen_range(0..cols) as i128,
        })
        .collect()
}

fn conv<L: TryFrom<i128>>(v: &[i128]) -> Vec<L>
where
    L::Error: std::fmt::Debug,
{
    v.iter().map(|&l| L::try_from(l).unwrap()).collect()
}

/// Rows for case number `i` of a shape: 1..=5 for short rows, fewer for long ones.
fn rows_for(cols: usize, i: usize) -> usize {
    match cols {
        c if c >= 32000 => 1 + i % 2,
        c if c >= 1000 => 1 + i % 3,
        _ => 1 + i % 5,
    }
}

fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// The class-target matrix over `cols_list` on tier `k`.
fn class_matrix(k: &'static Kernels, cols_list: &[usize], what: &str) {
    class_matrix_strided(k, cols_list, 1, what)
}

/// The class-target matrix over `cols_list` on tier `k`, every `stride`-th combination.
fn class_matrix_strided(k: &'static Kernels, cols_list: &[usize], stride: usize, what: &str) {
    let ks = [k];
    let combos = class_combos();
    let mut f = Failures::default();
    let mut cases = 0usize;
    for &cols in cols_list {
        for (i, &combo) in combos.iter().enumerate() {
            if i % stride != 0 || (DEBUG && i % if cols >= 1000 { 37 } else { 7 } != 0) {
                continue;
            }
            for lscale in [1.0f32, 30.0] {
                let rows = rows_for(cols, i);
                let seed = (cols as u64) << 32 ^ (i as u64) << 8 ^ lscale as u64;
                let mut g = rng(seed);
                let x = logits(&mut g, rows * cols, lscale);
                let cfg = Cfg::new(combo, rows, cols, &mut g);
                let ty = i % 4; // 0 i64, 1 i32, 2 u32, 3 usize
                let lv = gen_labels(&mut g, rows, cols, combo.ignore, ty < 2);
                let o = oracle(&to64(&x), cols, OTargets::Classes(&lv), &cfg);
                let ctx = format!(
                    "classes {rows}x{cols} logit scale {lscale} labels {lv:?} ({}) {combo:?}",
                    ["i64", "i32", "u32", "usize"][ty]
                );
                for k in &ks {
                    match ty {
                        0 => check_case(
                            &mut f,
                            k,
                            &x,
                            Targets::Classes(&conv::<i64>(&lv)),
                            cols,
                            &cfg,
                            &o,
                            &ctx,
                        ),
                        1 => check_case(
                            &mut f,
                            k,
                            &x,
                            Targets::Classes(&conv::<i32>(&lv)),
                            cols,
                            &cfg,
                            &o,
                            &ctx,
                        ),
                        2 => check_case(
                            &mut f,
                            k,
                            &x,
                            Targets::Classes(&conv::<u32>(&lv)),
                            cols,
                            &cfg,
                            &o,
                            &ctx,
                        ),
                        _ => check_case(
                            &mut f,
                            k,
                            &x,
                            Targets::Classes(&conv::<usize>(&lv)),
                            cols,
                            &cfg,
                            &o,
                            &ctx,
                        ),
                    }
                    cases += 1;
                }
            }
        }
    }
    eprintln!("{what}: {cases} tier-cases checked");
    f.finish(what);
}

/// The probability-target matrix over `cols_list` on tier `k`.
fn prob_matrix(k: &'static Kernels, cols_list: &[usize], what: &str) {
    let ks = [k];
    let combos = prob_combos();
    let mut f = Failures::default();
    let mut cases = 0usize;
    for &cols in cols_list {
        for (i, &combo) in combos.iter().enumerate() {
            if DEBUG && i % if cols >= 1000 { 23 } else { 5 } != 0 {
                continue;
            }
            for normalized in [true, false] {
                for lscale in [1.0f32, 30.0] {
                    let rows = rows_for(cols, i + normalized as usize);
                    let seed = 0xB0B5
                        ^ (cols as u64) << 32
                        ^ (i as u64) << 8
                        ^ (normalized as u64) << 7
                        ^ lscale as u64;
                    let mut g = rng(seed);
                    let x = logits(&mut g, rows * cols, lscale);
                    let cfg = Cfg::new(combo, rows, cols, &mut g);
                    let mut y: Vec<f32> =
                        (0..rows * cols).map(|_| g.gen_range(0.0f32..2.0)).collect();
                    if normalized {
                        for r in y.chunks_mut(cols) {
                            let s: f32 = r.iter().sum();
                            r.iter_mut().for_each(|v| *v /= s);
                        }
                    }
                    let o = oracle(&to64(&x), cols, OTargets::Probs(&y), &cfg);
                    let ctx = format!(
                        "probs {rows}x{cols} logit scale {lscale} normalized {normalized} {combo:?}"
                    );
                    for k in &ks {
                        check_case::<i64>(&mut f, k, &x, Targets::Probs(&y), cols, &cfg, &o, &ctx);
                        cases += 1;
                    }
                }
            }
        }
    }
    eprintln!("{what}: {cases} tier-cases checked");
    f.finish(what);
}

const SMALL_COLS: [usize; 13] = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65];

// One test per tier and matrix (`class_targets_1000::avx2`, ...). The 128256-class matrix (an
// LM vocabulary, past the softmax family's online-chunking threshold) runs every 11th
// combination.
per_tier!(
    class_targets_short_rows => |k| class_matrix(k, &SMALL_COLS, "class targets, short rows"),
    class_targets_1000 => |k| class_matrix(k, &[1000], "class targets, 1000 classes"),
    class_targets_32000 => |k| class_matrix(k, &[32000], "class targets, 32000 classes"),
    class_targets_128256 => |k| {
        class_matrix_strided(k, &[128_256], 11, "class targets, 128256 classes")
    },
    prob_targets_short_rows => |k| prob_matrix(k, &SMALL_COLS, "probability targets, short rows"),
    prob_targets_1000 => |k| prob_matrix(k, &[1000], "probability targets, 1000 classes"),
    prob_targets_32000 => |k| prob_matrix(k, &[32000], "probability targets, 32000 classes"),
);

// ---------------------------------------------------------------------------------------------
// Finite differences of the f64 loss
// ---------------------------------------------------------------------------------------------

/// The scalar the crate differentiates: `scale * L` for Sum/Mean, `scale * sum_r rs_r loss_r`
/// for None (the crate's gradient is the upstream-weighted one).
fn objective(x: &[f64], cols: usize, t: OTargets<'_>, cfg: &Cfg) -> f64 {
    let o = oracle(x, cols, t, cfg);
    let s = cfg.c.scale as f64;
    match cfg.c.reduction {
        Reduction::None => {
            s * o
                .row_loss
                .iter()
                .enumerate()
                .map(|(r, &l)| cfg.row_scale.as_ref().map_or(1.0, |g| g[r] as f64) * l)
                .sum::<f64>()
        }
        _ => s * o.loss,
    }
}

/// Central differences with step 1e-3 in f64 (truncation error ~h^2/6 |f'''| ~ 2e-7 of the
/// gradient's scale, rounding ~1e-16 / 1e-3): the crate's f32 gradient must agree within
/// 1e-4 of the largest |gradient| plus 1e-4 relative (plus the f32 rounding allowance). This checks the crate's gradient
/// formulas (chain rule under the cap, z-loss, smoothing, weights, reductions, scales), not
/// just their consistency with the oracle's derivative.
#[test]
fn gradient_matches_finite_differences() {
    let ks = tiers();
    let base = Combo {
        reduction: Reduction::Mean,
        weight: false,
        ignore: Some(-100),
        eps: 0.0,
        zl: 0.0,
        cap: None,
        scale: 1.0,
        row_scale: false,
        // An all-ignored Mean is 0 (not NaN), so its finite differences are 0 too.
        all_ignored: AllIgnored::Zero,
    };
    let combos = [
        base,
        Combo {
            weight: true,
            eps: 0.1,
            ..base
        },
        Combo {
            reduction: Reduction::Sum,
            zl: 1e-3,
            cap: Some(5.0),
            ..base
        },
        Combo {
            reduction: Reduction::None,
            row_scale: true,
            scale: 0.5,
            cap: Some(3.0),
            eps: 0.3,
            ..base
        },
        Combo {
            weight: true,
            eps: 1.0,
            zl: 0.05,
            cap: Some(2.0),
            ignore: Some(2),
            ..base
        },
        Combo {
            reduction: Reduction::Sum,
            weight: true,
            eps: 0.2,
            zl: 0.01,
            scale: -1.5,
            ..base
        },
    ];
    let shapes = [(3usize, 5usize), (2, 17), (4, 2), (1, 33), (2, 1)];
    let h = 1e-3;
    let mut f = Failures::default();
    for (ci, &combo) in combos.iter().enumerate() {
        for (si, &(rows, cols)) in shapes.iter().enumerate() {
            for probs in [false, true] {
                let mut g = rng(0xFD00 + (ci * 10 + si) as u64 * 2 + probs as u64);
                let x = logits(&mut g, rows * cols, 3.0);
                let cfg = Cfg::new(combo, rows, cols, &mut g);
                let lv = gen_labels(&mut g, rows, cols, combo.ignore, true);
                let y: Vec<f32> = (0..rows * cols).map(|_| g.gen_range(0.0f32..1.5)).collect();
                let ot = if probs {
                    OTargets::Probs(&y)
                } else {
                    OTargets::Classes(&lv)
                };
                let x64 = to64(&x);
                let fd: Vec<f64> = (0..x.len())
                    .map(|i| {
                        let mut xp = x64.clone();
                        xp[i] += h;
                        let mut xm = x64.clone();
                        xm[i] -= h;
                        (objective(&xp, cols, ot, &cfg) - objective(&xm, cols, ot, &cfg))
                            / (2.0 * h)
                    })
                    .collect();
                let gmax = fd.iter().fold(0.0f64, |a, v| a.max(v.abs()));
                // The f32 rounding allowance of the oracle (matters where the gradient cancels
                // to 0 exactly, as for a single class).
                let otol = oracle(&x64, cols, ot, &cfg).grad_tol;
                let labels = conv::<i64>(&lv);
                let tg = if probs {
                    Targets::Probs(&y)
                } else {
                    Targets::Classes(&labels)
                };
                for k in &ks {
                    let r = run(k, &x, tg, cols, &cfg.opts(), Mode::Grad, false).unwrap();
                    for i in 0..x.len() {
                        let tol = 1e-4 * gmax + 1e-4 * fd[i].abs() + otol[i];
                        f.check((r.grad[i] as f64 - fd[i]).abs() <= tol, || {
                            format!(
                                "[{}] {rows}x{cols} probs {probs} {combo:?}: grad[{i}] = {:e}, \
                                 finite difference {:e} (tol {tol:e})",
                                k.isa(),
                                r.grad[i],
                                fd[i]
                            )
                        });
                    }
                }
            }
        }
    }
    f.finish("finite differences");
}

// ---------------------------------------------------------------------------------------------
// Label types, wrappers
// ---------------------------------------------------------------------------------------------

/// One ext call with class labels of type `L`: (loss bits, grad bits, row-loss bits, argmax).
fn bits_of<L: Label>(
    k: &Kernels,
    x: &[f32],
    labels: &[L],
    cols: usize,
    opts: &CrossEntropyOptions<'_>,
) -> (u64, Vec<u32>, Vec<u32>, Vec<u32>) {
    let r = run(k, x, Targets::Classes(labels), cols, opts, Mode::Grad, true).unwrap();
    (
        r.stats.loss_f64.to_bits(),
        r.grad.iter().map(|v| v.to_bits()).collect(),
        r.row_loss.unwrap().iter().map(|v| v.to_bits()).collect(),
        r.argmax.unwrap(),
    )
}

#[test]
fn label_types_agree() {
    for k in tiers() {
        for cols in [3usize, 17, 200] {
            let rows = 9;
            let mut g = rng(0x1AB + cols as u64);
            let x = logits(&mut g, rows * cols, 4.0);
            let lv: Vec<i128> = (0..rows)
                .map(|r| {
                    if r % 3 == 1 {
                        2
                    } else {
                        g.gen_range(0..cols) as i128
                    }
                })
                .collect();
            let w: Vec<f32> = (0..cols).map(|_| g.gen_range(0.5f32..1.5)).collect();
            let opts = CrossEntropyOptions::default()
                .ignore_index(Some(2))
                .weight(&w)
                .label_smoothing(0.05);
            let want = bits_of(k, &x, &conv::<i64>(&lv), cols, &opts);
            let ctx = format!("[{}] cols {cols}", k.isa());
            assert_eq!(
                bits_of(k, &x, &conv::<i32>(&lv), cols, &opts),
                want,
                "{ctx} i32"
            );
            assert_eq!(
                bits_of(k, &x, &conv::<i16>(&lv), cols, &opts),
                want,
                "{ctx} i16"
            );
            assert_eq!(
                bits_of(k, &x, &conv::<u64>(&lv), cols, &opts),
                want,
                "{ctx} u64"
            );
            assert_eq!(
                bits_of(k, &x, &conv::<u32>(&lv), cols, &opts),
                want,
                "{ctx} u32"
            );
            assert_eq!(
                bits_of(k, &x, &conv::<u16>(&lv), cols, &opts),
                want,
                "{ctx} u16"
            );
            assert_eq!(
                bits_of(k, &x, &conv::<u8>(&lv), cols, &opts),
                want,
                "{ctx} u8"
            );
            assert_eq!(
                bits_of(k, &x, &conv::<usize>(&lv), cols, &opts),
                want,
                "{ctx} usize"
            );
        }
    }
}

/// The convenience methods (and, for the active tier, the free functions) give the bits of
/// `cross_entropy_with`.
#[test]
fn wrappers_match_ext() {
    let (rows, cols) = (6usize, 37usize);
    let mut g = rng(0x3A9);
    let x = logits(&mut g, rows * cols, 5.0);
    let labels: Vec<i64> = vec![0, 36, -100, 5, 17, 2];
    let y: Vec<f32> = (0..rows * cols).map(|_| g.gen_range(0.0f32..1.0)).collect();
    let w: Vec<f32> = (0..cols).map(|_| g.gen_range(0.5f32..1.5)).collect();
    let opts = CrossEntropyOptions::default()
        .weight(&w)
        .label_smoothing(0.1)
        .z_loss(1e-3)
        .softcap(7.0)
        .scale(0.75);
    let active = Kernels::active().unwrap();
    for k in tiers() {
        let ctx = format!("[{}]", k.isa());
        let e = run(
            k,
            &x,
            Targets::Classes(&labels),
            cols,
            &opts,
            Mode::Grad,
            false,
        )
        .unwrap();
        let ep = run::<i64>(k, &x, Targets::Probs(&y), cols, &opts, Mode::Grad, false).unwrap();

        let l = k.cross_entropy(&x, &labels, cols, &opts).unwrap();
        assert_eq!(l.to_bits(), e.stats.loss.to_bits(), "{ctx} cross_entropy");
        let mut gr = vec![UNWRITTEN; x.len()];
        let l = k
            .cross_entropy_fwd_bwd(&x, &labels, &mut gr, cols, &opts)
            .unwrap();
        assert_eq!(l.to_bits(), e.stats.loss.to_bits(), "{ctx} fwd_bwd loss");
        assert_eq!(same_bits(&gr, &e.grad), None, "{ctx} fwd_bwd grad");
        let mut xi = x.clone();
        let l = k
            .cross_entropy_fwd_bwd_inplace(&mut xi, &labels, cols, &opts)
            .unwrap();
        assert_eq!(l.to_bits(), e.stats.loss.to_bits(), "{ctx} inplace loss");
        assert_eq!(same_bits(&xi, &e.grad), None, "{ctx} inplace grad");

        let l = k.cross_entropy_probs(&x, &y, cols, &opts).unwrap();
        assert_eq!(l.to_bits(), ep.stats.loss.to_bits(), "{ctx} probs");
        let mut gr = vec![UNWRITTEN; x.len()];
        let l = k
            .cross_entropy_probs_fwd_bwd(&x, &y, &mut gr, cols, &opts)
            .unwrap();
        assert_eq!(
            l.to_bits(),
            ep.stats.loss.to_bits(),
            "{ctx} probs fwd_bwd loss"
        );
        assert_eq!(same_bits(&gr, &ep.grad), None, "{ctx} probs fwd_bwd grad");
        let mut xi = x.clone();
        let l = k
            .cross_entropy_probs_fwd_bwd_inplace(&mut xi, &y, cols, &opts)
            .unwrap();
        assert_eq!(
            l.to_bits(),
            ep.stats.loss.to_bits(),
            "{ctx} probs inplace loss"
        );
        assert_eq!(same_bits(&xi, &ep.grad), None, "{ctx} probs inplace grad");

        if k.isa() == active.isa() {
            let l = softmax_kernels::cross_entropy(&x, &labels, cols, &opts).unwrap();
            assert_eq!(l.to_bits(), e.stats.loss.to_bits(), "free cross_entropy");
            let mut gr = vec![UNWRITTEN; x.len()];
            softmax_kernels::cross_entropy_fwd_bwd(&x, &labels, &mut gr, cols, &opts).unwrap();
            assert_eq!(same_bits(&gr, &e.grad), None, "free fwd_bwd");
            let mut xi = x.clone();
            softmax_kernels::cross_entropy_fwd_bwd_inplace(&mut xi, &labels, cols, &opts).unwrap();
            assert_eq!(same_bits(&xi, &e.grad), None, "free inplace");
            let l = softmax_kernels::cross_entropy_probs(&x, &y, cols, &opts).unwrap();
            assert_eq!(l.to_bits(), ep.stats.loss.to_bits(), "free probs");
            let mut gr = vec![UNWRITTEN; x.len()];
            softmax_kernels::cross_entropy_probs_fwd_bwd(&x, &y, &mut gr, cols, &opts).unwrap();
            assert_eq!(same_bits(&gr, &ep.grad), None, "free probs fwd_bwd");
            let mut out = CrossEntropyOutputs::default();
            let st = softmax_kernels::cross_entropy_with(
                Logits::Read(&x),
                Targets::Classes(&labels),
                cols,
                &opts,
                &mut out,
            )
            .unwrap();
            assert_eq!(
                st.loss_f64.to_bits(),
                e.stats.loss_f64.to_bits(),
                "free ext"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Determinism across thread counts
// ---------------------------------------------------------------------------------------------

#[test]
fn thread_count_determinism() {
    let pools: Vec<(usize, rayon::ThreadPool)> = [1usize, 2, 3, 8]
        .into_iter()
        .map(|n| {
            (
                n,
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .unwrap(),
            )
        })
        .collect();
    // (rows, cols, weights + smoothing + z-loss + ignored rows, probability targets)
    let shapes = [
        (64usize, 10usize, false, false),
        (256, 1000, false, false),
        (3, 32000, false, false),
        (300, 1000, true, false),
        (256, 1000, true, false),
        (3, 32000, true, false),
        (300, 1000, true, true),
    ];
    for k in tiers() {
        if DEBUG && k.isa() == Isa::Scalar {
            continue;
        }
        for &(rows, cols, fancy, probs) in &shapes {
            let mut g = rng(0xD0 + (rows * cols) as u64);
            let x = logits(&mut g, rows * cols, 8.0);
            let w: Vec<f32> = (0..cols).map(|_| g.gen_range(0.25f32..2.0)).collect();
            let labels: Vec<i64> = (0..rows)
                .map(|r| {
                    if fancy && r % 7 == 3 {
                        -100
                    } else {
                        g.gen_range(0..cols as i64)
                    }
                })
                .collect();
            let y: Vec<f32> = (0..rows * cols).map(|_| g.gen_range(0.0f32..1.0)).collect();
            let mut opts = CrossEntropyOptions::default();
            if fancy {
                opts = opts.weight(&w).label_smoothing(0.1).z_loss(1e-4);
            }
            let t = if probs {
                Targets::Probs(&y)
            } else {
                Targets::Classes(&labels)
            };
            let mut first: Option<(usize, Run)> = None;
            for (n, pool) in &pools {
                let r = pool.install(|| run(k, &x, t, cols, &opts, Mode::Grad, true).unwrap());
                let ctx = format!(
                    "[{}] {rows}x{cols} fancy {fancy} probs {probs}: {n} threads",
                    k.isa()
                );
                assert!(r.stats.loss.is_finite(), "{ctx}: loss {}", r.stats.loss);
                match &first {
                    None => first = Some((*n, r)),
                    Some((n0, r0)) => {
                        assert_eq!(
                            r.stats.loss_f64.to_bits(),
                            r0.stats.loss_f64.to_bits(),
                            "{ctx} vs {n0}: loss {:e} vs {:e}",
                            r.stats.loss_f64,
                            r0.stats.loss_f64
                        );
                        assert!(same_stats(&r.stats, &r0.stats), "{ctx} vs {n0}: stats");
                        assert_eq!(same_bits(&r.grad, &r0.grad), None, "{ctx} vs {n0}: grad");
                        assert_eq!(
                            same_bits(r.row_loss.as_ref().unwrap(), r0.row_loss.as_ref().unwrap()),
                            None,
                            "{ctx} vs {n0}: row_loss"
                        );
                        assert_eq!(
                            same_bits(r.lse.as_ref().unwrap(), r0.lse.as_ref().unwrap()),
                            None,
                            "{ctx} vs {n0}: lse"
                        );
                        assert_eq!(r.argmax, r0.argmax, "{ctx} vs {n0}: argmax");
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

mod props {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config;
    use rand::Rng;

    fn config() -> Config {
        Config {
            cases: if DEBUG { 16 } else { 64 },
            failure_persistence: None,
            ..Config::default()
        }
    }

    /// `(cols, rows, logits)`: logits are multiples of 1/64 in [-16, 16], so adding an integer
    /// `|c| <= 1000` is exact in f32 and the exact losses of `z` and `z + c` are equal.
    fn matrix() -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
        (1usize..=70, 1usize..=4).prop_flat_map(|(cols, rows)| {
            (
                Just(cols),
                Just(rows),
                prop::collection::vec((-1024i32..=1024).prop_map(|k| k as f32 / 64.0), rows * cols),
            )
        })
    }

    proptest! {
        #![proptest_config(config())]

        /// Shift invariance: `loss(z + c) = loss(z)` (the shift is exact, so the exact losses
        /// are equal; each computed loss is within `LOSS_REL |L| + LOSS_MAG A max(1, |lse|,
        /// max |z|)` of it, with `max |z|` up to 1016 after the shift and `A <= 1` here, so the
        /// two may differ by the sum of both tolerances). And with Mean, no weights, no
        /// z-loss and no cap, `sum_c dL/dz_c = (A - (1 - eps) - eps) / N = 0` for every row:
        /// each gradient row sums to 0 within `2^-23 C + 2e-6` of `1 / N` (the row's `p`
        /// sums to 1 within `C 2^-24`, plus one rounding per element).
        #[test]
        fn shift_invariance_and_zero_sum(
            (cols, rows, z) in matrix(),
            c in -1000i32..=1000,
            labels_seed in any::<u64>(),
            eps in prop_oneof![Just(0.0f32), Just(1.0f32), 0.0f32..=1.0],
        ) {
            let mut g = rng(labels_seed);
            let labels: Vec<i64> = (0..rows).map(|_| g.gen_range(0..cols as i64)).collect();
            let zc: Vec<f32> = z.iter().map(|&v| v + c as f32).collect();
            let opts = CrossEntropyOptions::default().label_smoothing(eps);
            for k in tiers() {
                let a = run(k, &z, Targets::Classes(&labels), cols, &opts, Mode::Grad, false).unwrap();
                let b = run(k, &zc, Targets::Classes(&labels), cols, &opts, Mode::Grad, false).unwrap();
                let la = a.stats.loss_f64;
                let lb = b.stats.loss_f64;
                let mag = |zz: &[f32]| zz.iter().fold(1.0f64, |m, &v| m.max((v as f64).abs() + 5.0));
                let tol = LOSS_REL * (la.abs() + lb.abs()) + LOSS_MAG * (mag(&z) + mag(&zc));
                prop_assert!(
                    (la - lb).abs() <= tol,
                    "[{}] {}x{} eps {} c {}: loss {:e} vs shifted {:e} (tol {:e})",
                    k.isa(), rows, cols, eps, c, la, lb, tol
                );
                let gtol = (cols as f64 / 8_388_608.0 + 2e-6) / rows as f64;
                for (r, gr) in a.grad.chunks(cols).enumerate() {
                    let s: f64 = gr.iter().map(|&v| v as f64).sum();
                    prop_assert!(
                        s.abs() <= gtol,
                        "[{}] {}x{} eps {}: gradient row {} sums to {:e} (tol {:e})",
                        k.isa(), rows, cols, eps, r, s, gtol
                    );
                }
            }
        }
    }
}

/// Short rows over many rows: the batched kernels add the loss of each group of 16 rows as
/// `sum (m - z_t) + ln prod s` (without weights and z-loss), so group and batch boundaries
/// (16, 64) and a row-block boundary (1638 rows of 10) must not show. On every tier: the `Sum`
/// loss within the f32 error of the f64 formula `sum (lse - z_t)`; the same loss bits with
/// and without per-row outputs and with and without a gradient; each row's gradient `p - y`
/// within the softmax contract; a NaN row makes the loss NaN and leaves the other rows'
/// gradients alone; 1 and 3 threads give the same bits.
#[test]
fn short_rows_grouped_loss_many_rows() {
    let mut g = StdRng::seed_from_u64(0x5eed_0016);
    let pool3 = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let pool1 = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for k in tiers() {
        for &cols in &[1usize, 3, 10, 16, 17, 33, 64] {
            for &rows in &[15usize, 16, 17, 40, 64, 65, 130, 1700] {
                let x: Vec<f32> = (0..rows * cols)
                    .map(|_| g.gen_range(-10.0f32..10.0))
                    .collect();
                let labels: Vec<i64> = (0..rows)
                    .map(|_| {
                        if g.gen_range(0..10) == 0 {
                            -100
                        } else {
                            g.gen_range(0..cols as i64)
                        }
                    })
                    .collect();
                let opts = CrossEntropyOptions::default().reduction(Reduction::Sum);
                let ctx = format!("{:?} {rows}x{cols}", k.isa());
                // The f64 formula.
                let (mut want, mut tol) = (0.0f64, 0.0f64);
                for (r, &l) in labels.iter().enumerate() {
                    if l < 0 {
                        continue;
                    }
                    let z = &x[r * cols..(r + 1) * cols];
                    let m = z.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
                    let lse = m + z.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
                    want += lse - z[l as usize] as f64;
                    tol += 2e-6 * lse.abs().max(1.0) + 2f64.powi(-24) * 20.0;
                }
                let mut grad = vec![0.0f32; rows * cols];
                let fwd = k
                    .cross_entropy_with(
                        Logits::Grad(&x, &mut grad),
                        Targets::Classes(&labels),
                        cols,
                        &opts,
                        &mut CrossEntropyOutputs::default(),
                    )
                    .unwrap();
                assert!(
                    (fwd.loss_f64 - want).abs() <= tol,
                    "{ctx}: loss {} vs f64 {want} (tol {tol:e})",
                    fwd.loss_f64
                );
                let only = k
                    .cross_entropy_with(
                        Logits::Read(&x),
                        Targets::Classes(&labels),
                        cols,
                        &opts,
                        &mut CrossEntropyOutputs::default(),
                    )
                    .unwrap();
                let (mut rl, mut ls, mut am) =
                    (vec![0.0f32; rows], vec![0.0f32; rows], vec![0u32; rows]);
                let outs = k
                    .cross_entropy_with(
                        Logits::Read(&x),
                        Targets::Classes(&labels),
                        cols,
                        &opts,
                        &mut CrossEntropyOutputs {
                            row_loss: Some(&mut rl),
                            lse: Some(&mut ls),
                            argmax: Some(&mut am),
                        },
                    )
                    .unwrap();
                assert_eq!(
                    fwd.loss_f64.to_bits(),
                    only.loss_f64.to_bits(),
                    "{ctx}: loss-only"
                );
                assert_eq!(
                    fwd.loss_f64.to_bits(),
                    outs.loss_f64.to_bits(),
                    "{ctx}: with outputs"
                );
                for (r, &l) in labels.iter().enumerate() {
                    let z = &x[r * cols..(r + 1) * cols];
                    let m = z.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
                    let s: f64 = z.iter().map(|&v| (v as f64 - m).exp()).sum();
                    for (c, &v) in z.iter().enumerate() {
                        let want = if l < 0 {
                            0.0
                        } else {
                            (v as f64 - m).exp() / s - (c as i64 == l) as u8 as f64
                        };
                        let got = grad[r * cols + c] as f64;
                        let p = (v as f64 - m).exp() / s;
                        let t = p * (1e-6 + 2f64.powi(-23) * (v as f64 - m).abs()) + 2e-7;
                        assert!(
                            (got - want).abs() <= t,
                            "{ctx}: grad[{r}, {c}] {got} vs {want}"
                        );
                    }
                }
                // Thread counts.
                let run = |p: &rayon::ThreadPool| {
                    let mut gr = vec![0.0f32; rows * cols];
                    let st = p.install(|| {
                        k.cross_entropy_with(
                            Logits::Grad(&x, &mut gr),
                            Targets::Classes(&labels),
                            cols,
                            &CrossEntropyOptions::default(),
                            &mut CrossEntropyOutputs::default(),
                        )
                        .unwrap()
                    });
                    (
                        st.loss_f64.to_bits(),
                        gr.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    )
                };
                assert_eq!(run(&pool1), run(&pool3), "{ctx}: 1 vs 3 threads");
                // A NaN row (row 20, or the last): the loss is NaN, the other rows unchanged.
                let bad = 20.min(rows - 1);
                let mut xn = x.clone();
                xn[bad * cols] = f32::NAN;
                let mut gn = vec![0.0f32; rows * cols];
                let st = k
                    .cross_entropy_with(
                        Logits::Grad(&xn, &mut gn),
                        Targets::Classes(&labels),
                        cols,
                        &opts,
                        &mut CrossEntropyOutputs::default(),
                    )
                    .unwrap();
                if labels[bad] >= 0 {
                    assert!(st.loss_f64.is_nan(), "{ctx}: NaN row, loss {}", st.loss_f64);
                    assert!(
                        gn[bad * cols..(bad + 1) * cols].iter().all(|v| v.is_nan()),
                        "{ctx}"
                    );
                }
                for r in (0..rows).filter(|&r| r != bad) {
                    assert_eq!(
                        gn[r * cols..(r + 1) * cols],
                        grad[r * cols..(r + 1) * cols],
                        "{ctx}: row {r} next to a NaN row"
                    );
                }
            }
        }
    }
}

/// Short rows are shifted by the target's logit when the shifted sum is at most `2^60` (every
/// other entry at most 41.6 above the target), else by the maximum. Rows whose target trails
/// one entry by 0 to 1e4, across that edge: the loss against `ln(sum exp(z - z_t))` in f64,
/// the gradient against f64 `p - y` within the softmax contract (`1e-6 + 2^-23 |z - m|`
/// relative), on the plain small-call path (8 rows) and the batch path (100 rows, and with
/// per-row outputs), whose loss bits must agree. Without the rounding correction of `z - z_t`
/// the entry just below the maximum is off by up to `2^-24 (m - z_t)` relative (2.5e-6 at
/// a gap of 41), which fails here.
#[test]
fn short_rows_target_shift_edges() {
    let gaps = [
        0.0f32, 1.0, 20.0, 41.0, 41.5, 41.6, 41.7, 42.0, 50.0, 63.9, 64.1, 88.0, 100.0, 1e4, 1e8,
        1e20, 1e30, 1e36,
    ];
    let mut g = StdRng::seed_from_u64(0x5eed_0017);
    for k in tiers() {
        for &cols in &[2usize, 3, 10, 17, 33, 64] {
            for &rows in &[8usize, 100] {
                let ctx = format!("{:?} {rows}x{cols}", k.isa());
                let mut x: Vec<f32> = (0..rows * cols)
                    .map(|_| g.gen_range(-1.0f32..1.0))
                    .collect();
                let labels: Vec<i64> = (0..rows).map(|_| g.gen_range(0..cols as i64)).collect();
                for (r, &l) in labels.iter().enumerate() {
                    // One entry `gap` above the target and, where there is room, a second
                    // one just below it: the two large probabilities must keep their ratio
                    // `exp(z_a - z_b)`, however far the target trails them.
                    let gap = gaps[r % gaps.len()];
                    // Target logits of 1 and above too: with a huge gap, `z - z_t` rounds by
                    // about `z_t`, so a rounding correction applied to a clamped argument
                    // would scale `exp(64)` by `1 - z_t`, 0 or negative.
                    let zt = [0.0, 1.0, 2.0, 5.0, -7.0][(r / gaps.len()) % 5];
                    if zt != 0.0 {
                        x[r * cols + l as usize] = zt;
                    }
                    let lead = (l as usize + 1 + r % (cols - 1).max(1)) % cols;
                    if lead != l as usize {
                        x[r * cols + lead] = x[r * cols + l as usize] + gap;
                        let second = (lead + 1) % cols;
                        if second != l as usize {
                            x[r * cols + second] = x[r * cols + lead] - 0.3;
                        }
                    }
                }
                let opts = CrossEntropyOptions::default().reduction(Reduction::Sum);
                let mut grad = vec![0.0f32; rows * cols];
                let fwd = k
                    .cross_entropy_fwd_bwd(&x, &labels, &mut grad, cols, &opts)
                    .unwrap();
                let mut rl = vec![0.0f32; rows];
                let outs = k
                    .cross_entropy_with(
                        Logits::Read(&x),
                        Targets::Classes(&labels),
                        cols,
                        &opts,
                        &mut CrossEntropyOutputs {
                            row_loss: Some(&mut rl),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                assert_eq!(fwd.to_bits(), outs.loss.to_bits(), "{ctx}: outputs");
                let mut want_sum = 0.0f64;
                for (r, &l) in labels.iter().enumerate() {
                    let z = &x[r * cols..(r + 1) * cols];
                    let zt = z[l as usize] as f64;
                    let m = z.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
                    let s: f64 = z.iter().map(|&v| (v as f64 - m).exp()).sum();
                    let want = (m - zt) + s.ln();
                    want_sum += want;
                    let tol = 2e-6 * want.abs().max(1.0);
                    assert!(
                        (rl[r] as f64 - want).abs() <= tol,
                        "{ctx}: row {r} loss {} vs {want} (gap {})",
                        rl[r],
                        m - zt
                    );
                    for (c, &v) in z.iter().enumerate() {
                        let p = (v as f64 - m).exp() / s;
                        let want = p - (c as i64 == l) as u8 as f64;
                        let got = grad[r * cols + c] as f64;
                        let tol = p * (1e-6 + 2f64.powi(-23) * (v as f64 - m).abs()) + 2e-7;
                        assert!(
                            (got - want).abs() <= tol,
                            "{ctx}: grad[{r}, {c}] {got} vs {want} (gap {})",
                            m - zt
                        );
                    }
                }
                assert!(
                    (fwd as f64 - want_sum).abs() <= 2e-6 * want_sum.abs().max(1.0),
                    "{ctx}: loss {fwd} vs {want_sum}"
                );
            }
        }
    }
}

/// One-row calls take their own path (`CePath::OneRow`: no row loop, the fix-up of the target
/// inside the vector). Every tier, every row length from 1 to 70 (past the short rows too), the target at
/// the first, a middle and the last class, and rows with special values: each 1-row call (out
/// of place, in place, loss only) must give the same loss and gradient bits as the same call
/// asking for an argmax (which takes `CePath::Short`), and, for finite rows, the f64 loss
/// and gradient written here.
#[test]
fn one_row_calls_match_the_general_path() {
    let mut g = StdRng::seed_from_u64(0x0001_0a11);
    let mut checked = 0usize;
    for k in tiers() {
        for cols in 1..=70usize {
            let mut targets = vec![0, cols / 2, cols - 1];
            targets.dedup();
            for &t in &targets {
                for case in 0..9 {
                    let mut x: Vec<f32> = (0..cols).map(|_| g.gen_range(-5.0f32..5.0)).collect();
                    let off = (t + 1) % cols;
                    let mut ignore = None;
                    match case {
                        1 => x.iter_mut().for_each(|v| *v *= 30.0),
                        // Far above the target: the sum passes 2^60, the row is shifted by its
                        // maximum instead.
                        2 if off != t => x[off] = x[t] + 50.0,
                        3 if off != t => x[off] = f32::NEG_INFINITY,
                        4 => x[t] = f32::NEG_INFINITY,
                        5 => x[off] = f32::NAN,
                        6 => x[off] = f32::INFINITY,
                        7 => x[t] = 1e30,
                        8 => ignore = Some(t as i64),
                        _ => {}
                    }
                    for (red, scale, all) in [
                        (Reduction::Mean, 1.0f32, AllIgnored::Nan),
                        (Reduction::Sum, 0.5, AllIgnored::Nan),
                        (Reduction::Mean, 2.0, AllIgnored::Zero),
                    ] {
                        let opts = CrossEntropyOptions::default()
                            .reduction(red)
                            .scale(scale)
                            .ignore_index(ignore)
                            .all_ignored(all);
                        let ctx =
                            format!("{:?} 1x{cols} t {t} case {case} {red:?} {scale}", k.isa());
                        let labels = [t as i64];
                        // `Short`: an argmax output turns the plain paths away (`tests/ce_paths.rs` names
                        // the paths directly).
                        let mut g_ref = vec![UNWRITTEN; cols];
                        let mut am = [0u32];
                        let want = k
                            .cross_entropy_with(
                                Logits::Grad(&x, &mut g_ref),
                                Targets::Classes(&labels),
                                cols,
                                &opts,
                                &mut CrossEntropyOutputs {
                                    argmax: Some(&mut am),
                                    ..Default::default()
                                },
                            )
                            .unwrap();
                        let mut g1 = vec![UNWRITTEN; cols];
                        let got = k
                            .cross_entropy_with(
                                Logits::Grad(&x, &mut g1),
                                Targets::Classes(&labels),
                                cols,
                                &opts,
                                &mut CrossEntropyOutputs::default(),
                            )
                            .unwrap();
                        let mut z = x.clone();
                        let inplace = k
                            .cross_entropy_with(
                                Logits::InPlace(&mut z),
                                Targets::Classes(&labels),
                                cols,
                                &opts,
                                &mut CrossEntropyOutputs::default(),
                            )
                            .unwrap();
                        let read = k
                            .cross_entropy_with(
                                Logits::Read(&x),
                                Targets::Classes(&labels),
                                cols,
                                &opts,
                                &mut CrossEntropyOutputs::default(),
                            )
                            .unwrap();
                        for (name, st) in [("grad", &got), ("in place", &inplace), ("read", &read)]
                        {
                            // NaN is NaN: the paths set a NaN loss's sign differently (an
                            // explicit NaN, or `-inf - -inf`).
                            assert!(
                                st.loss_f64.to_bits() == want.loss_f64.to_bits()
                                    || (st.loss_f64.is_nan() && want.loss_f64.is_nan()),
                                "{ctx} {name}: loss {:e} against {:e}",
                                st.loss_f64,
                                want.loss_f64
                            );
                            assert!(
                                st.loss.to_bits() == want.loss.to_bits()
                                    || (st.loss.is_nan() && want.loss.is_nan()),
                                "{ctx} {name}"
                            );
                            assert_eq!(
                                (st.rows_used, st.denominator.to_bits()),
                                (want.rows_used, want.denominator.to_bits()),
                                "{ctx} {name}"
                            );
                        }
                        assert_eq!(
                            same_bits(&g1, &g_ref),
                            None,
                            "{ctx}: gradient {g1:?} {g_ref:?}"
                        );
                        assert_eq!(
                            same_bits(&z, &g_ref),
                            None,
                            "{ctx}: in place {z:?} {g_ref:?}"
                        );
                        // f64 math for finite rows with a finite target logit.
                        if ignore.is_none() && x.iter().all(|v| v.is_finite()) {
                            let m = x.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
                            let s: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
                            let loss = (m - x[t] as f64) + s.ln();
                            let gs = scale as f64;
                            // One row used: Mean and Sum give the row's loss; `scale` moves
                            // only the gradient.
                            assert!(
                                (got.loss_f64 - loss).abs() <= 2e-6 * loss.abs().max(1.0),
                                "{ctx}: loss {:e}, f64 {loss:e}",
                                got.loss_f64
                            );
                            for (c, &v) in g1.iter().enumerate() {
                                let p = (x[c] as f64 - m).exp() / s;
                                let want = gs * (p - (c == t) as u8 as f64);
                                assert!(
                                    (v as f64 - want).abs() <= 2e-6 * gs,
                                    "{ctx}: grad[{c}] = {v:e}, f64 {want:e}"
                                );
                            }
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    eprintln!("one-row calls: {checked} cases");
}
