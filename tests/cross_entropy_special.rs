//! The fused cross-entropy family on every available tier: hand-derived values, special values
//! (infinities, NaN, huge logits, empty and all-ignored batches, zero weight sums) and argument
//! errors (with nothing written on error).
//!
//! Expected values are derived by hand in the comments (or from a few lines of f64 written
//! here), never read from the crate.

// Several checks walk a row, its gradient and a hand-written expectation side by side by
// index, which reads more plainly than zipped iterators.
#![allow(clippy::needless_range_loop)]

use softmax_kernels::{
    AllIgnored, CrossEntropyOptions, CrossEntropyOutputs, CrossEntropyStats, Error, Isa, Kernels,
    Label, Logits, Reduction, Targets,
};

/// Output buffers start as this NaN (a pattern no kernel writes).
const UNWRITTEN: f32 = f32::from_bits(0x7FA5_5A5A);

fn tiers() -> Vec<&'static Kernels> {
    let av = Isa::available();
    assert!(av.starts_with(&[Isa::Scalar, Isa::Portable]), "{av:?}");
    av.into_iter()
        .map(|i| Kernels::for_isa(i).expect("available tier"))
        .collect()
}

/// What one call returned.
#[derive(Debug)]
struct Run {
    stats: CrossEntropyStats,
    grad: Vec<f32>,
    row_loss: Vec<f32>,
    lse: Vec<f32>,
    argmax: Vec<u32>,
}

/// `cross_entropy_with` with a separate gradient and every output.
fn fwd_bwd<L: Label>(
    k: &Kernels,
    x: &[f32],
    t: Targets<'_, L>,
    cols: usize,
    opts: &CrossEntropyOptions<'_>,
) -> Result<Run, Error> {
    let rows = x.len() / cols;
    let mut grad = vec![UNWRITTEN; x.len()];
    let mut row_loss = vec![UNWRITTEN; rows];
    let mut lse = vec![UNWRITTEN; rows];
    let mut argmax = vec![u32::MAX; rows];
    let stats = k.cross_entropy_with(
        Logits::Grad(x, &mut grad),
        t,
        cols,
        opts,
        &mut CrossEntropyOutputs {
            row_loss: Some(&mut row_loss),
            lse: Some(&mut lse),
            argmax: Some(&mut argmax),
        },
    )?;
    Ok(Run {
        stats,
        grad,
        row_loss,
        lse,
        argmax,
    })
}

fn classes<L: Label>(
    k: &Kernels,
    x: &[f32],
    labels: &[L],
    cols: usize,
    opts: &CrossEntropyOptions<'_>,
) -> Run {
    fwd_bwd(k, x, Targets::Classes(labels), cols, opts).unwrap()
}

fn near(got: f64, exp: f64, tol: f64) -> bool {
    (got - exp).abs() <= tol
}

fn assert_near(got: f64, exp: f64, tol: f64, ctx: &str) {
    assert!(
        near(got, exp, tol),
        "{ctx}: got {got:e}, expected {exp:e} (tol {tol:e}, err {:e})",
        (got - exp).abs()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Hand-derived values
// ---------------------------------------------------------------------------------------------

/// Equal logits: `p_c = 1 / C`, so `loss = -ln(1 / C) = ln C` for every row and the mean
/// gradient is `(1 / C - [c = t]) / N`. Every `exp(z - m)` is `exp(0) = 1` exactly, so the f32
/// results are near-exact: the loss within 1e-6 relative, the gradient within 2^-22 / N.
#[test]
fn uniform_logits_give_ln_c() {
    for k in tiers() {
        for cols in [1usize, 2, 5, 16, 17, 1000, 32000] {
            for value in [0.0f32, 3.75, -50.0, 1e4] {
                let rows = 3;
                let x = vec![value; rows * cols];
                let labels: Vec<i64> = (0..rows).map(|r| ((r * 7) % cols) as i64).collect();
                let r = classes(k, &x, &labels, cols, &CrossEntropyOptions::default());
                let ctx = format!("[{}] {rows}x{cols} all {value}", k.isa());
                let lnc = (cols as f64).ln();
                assert_near(r.stats.loss_f64, lnc, 1e-6 * lnc.max(1e-6), &ctx);
                let n = rows as f64;
                for (i, &g) in r.grad.iter().enumerate() {
                    let (row, c) = (i / cols, i % cols);
                    let onehot = if c as i64 == labels[row] { 1.0 } else { 0.0 };
                    let want = (1.0 / cols as f64 - onehot) / n;
                    assert_near(g as f64, want, 2.4e-7 / n, &format!("{ctx} grad[{i}]"));
                }
                for row in 0..rows {
                    assert_near(r.row_loss[row] as f64, lnc, 1e-6 * lnc.max(1e-6), &ctx);
                    // lse = value + ln C (the logsumexp contract: 1e-6 * max(1, |lse|)).
                    let lse = value as f64 + lnc;
                    assert_near(r.lse[row] as f64, lse, 1e-6 * lse.abs().max(1.0), &ctx);
                    // Every logit is the maximum: the first index is 0.
                    assert_eq!(r.argmax[row], 0, "{ctx} argmax");
                }
            }
        }
    }
}

/// Two classes, target 0: `p_0 = e^a / (e^a + e^b) = sigmoid(a - b)`, so
/// `loss = -ln sigmoid(a - b) = ln(1 + e^-(a - b))` and (Sum)
/// `dL/dz_0 = p_0 - 1 = -sigmoid(b - a)`, `dL/dz_1 = p_1 = sigmoid(b - a)`.
/// Tolerances: the loss within `1e-6 max(1, |a|, |b|)` (lse error) plus 1e-6 relative; the
/// non-target gradient `e^(b-a) / s` within 1e-6 relative (exp within 2 ULP, `b - a` exact
/// here), the target one `p_0 - 1` within 1e-7 absolute.
#[test]
fn two_classes_are_logistic() {
    let pairs: [(f32, f32); 9] = [
        (1.0, 0.0),
        (0.0, 1.0),
        (5.0, -3.0),
        (-3.0, 5.0),
        (0.25, 0.25),
        (-20.0, 20.0),
        (30.0, -30.0),
        (60.0, 0.0),
        (-7.5, 12.0),
    ];
    for k in tiers() {
        for (a, b) in pairs {
            for (x, t) in [([a, b], 0i32), ([b, a], 1i32)] {
                let opts = CrossEntropyOptions::default().reduction(Reduction::Sum);
                let r = classes(k, &x, &[t], 2, &opts);
                let ctx = format!("[{}] z {x:?} target {t}", k.isa());
                let d = (a - b) as f64; // z_t - z_other
                let loss = (-d).exp().ln_1p(); // ln(1 + e^-d)
                let tol = 1e-6 * loss + 1e-6 * (a.abs().max(b.abs()) as f64).max(1.0);
                assert_near(r.stats.loss_f64, loss, tol, &format!("{ctx} loss"));
                let sig = 1.0 / (1.0 + d.exp()); // sigmoid(b - a) = sigmoid(-d)
                let (gt, go) = (r.grad[t as usize] as f64, r.grad[1 - t as usize] as f64);
                assert_near(go, sig, 1e-6 * sig, &format!("{ctx} grad other"));
                assert_near(gt, -sig, 1e-7, &format!("{ctx} grad target"));
            }
        }
    }
}

/// Label smoothing `eps = 1`: the target is uniform, `loss = (1/C) sum_c -ln p_c`, whatever the
/// label. With `z_c = ln(c + 1)`, `c = 0..4`: `s = 1 + 2 + 3 + 4 = 10`, `p_c = (c + 1) / 10`,
/// `loss = ln 10 - ln(4!) / 4 = ln 10 - ln(24) / 4`, and the gradient is
/// `p_c - 1/4 = (c + 1) / 10 - 1/4` (one row, Mean over one row of weight 1). The label plays
/// no part (its coefficient `1 - eps` is 0), so every label gives the same bits.
#[test]
fn smoothing_one_is_the_uniform_target() {
    let x: Vec<f32> = (0..4).map(|c| ((c + 1) as f32).ln()).collect();
    let want_loss = 10f64.ln() - 24f64.ln() / 4.0;
    for k in tiers() {
        let opts = CrossEntropyOptions::default().label_smoothing(1.0);
        let first = classes(k, &x, &[0i64], 4, &opts);
        let ctx = format!("[{}]", k.isa());
        // z_c are f32 roundings of ln(c + 1): ~1e-7 absolute each.
        assert_near(
            first.stats.loss_f64,
            want_loss,
            1e-6,
            &format!("{ctx} loss"),
        );
        for c in 0..4 {
            let want = (c + 1) as f64 / 10.0 - 0.25;
            assert_near(
                first.grad[c] as f64,
                want,
                1e-6,
                &format!("{ctx} grad[{c}]"),
            );
        }
        for t in 1..4i64 {
            let r = classes(k, &x, &[t], 4, &opts);
            assert_eq!(
                r.stats.loss_f64.to_bits(),
                first.stats.loss_f64.to_bits(),
                "{ctx} label {t}: loss"
            );
            let same = r
                .grad
                .iter()
                .zip(&first.grad)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{ctx} label {t}: gradient {:?} vs {:?}",
                r.grad, first.grad
            );
        }
        // The same through a probability target that is already uniform (no smoothing).
        let p = k
            .cross_entropy_probs(&x, &[0.25; 4], 4, &CrossEntropyOptions::default())
            .unwrap();
        assert_near(p as f64, want_loss, 1e-6, &format!("{ctx} uniform probs"));
    }
}

/// A one-hot probability row is the class label: `sum_c w_c y'_c (lse - z_c)` with
/// `y = e_t` is `(1 - eps) w_t (lse - z_t) + (eps/C) sum_c w_c (lse - z_c)`, the class-target
/// row loss, and the gradients agree the same way. (Mean differs by definition: the class
/// mean divides by `sum w_t`, the probability mean by `N`; so Sum and None here, and Mean
/// without weights, where both denominators are N.) The two paths round differently: 1e-6
/// relative to the row's magnitude.
#[test]
fn one_hot_probs_equal_class_labels() {
    let (rows, cols) = (4usize, 19usize);
    let x: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
        .collect();
    let labels: Vec<i64> = vec![0, 18, 7, 3];
    let mut y = vec![0.0f32; rows * cols];
    for (r, &t) in labels.iter().enumerate() {
        y[r * cols + t as usize] = 1.0;
    }
    let w: Vec<f32> = (0..cols).map(|c| 0.5 + (c % 4) as f32 * 0.25).collect();
    let rl_none = vec![1.0f32; rows];
    let base = CrossEntropyOptions::default();
    let opts = [
        base,
        base.reduction(Reduction::Sum).weight(&w),
        base.reduction(Reduction::Sum)
            .weight(&w)
            .label_smoothing(0.2)
            .z_loss(1e-2)
            .softcap(4.0),
        base.label_smoothing(0.3).scale(2.0),
        base.reduction(Reduction::None)
            .row_scale(&rl_none)
            .weight(&w),
    ];
    for k in tiers() {
        for (oi, o) in opts.iter().enumerate() {
            let a = classes(k, &x, &labels, cols, o);
            let b = fwd_bwd::<i64>(k, &x, Targets::Probs(&y), cols, o).unwrap();
            let ctx = format!("[{}] options #{oi}", k.isa());
            let lmag = a.stats.loss_f64.abs().max(1.0);
            assert_near(
                b.stats.loss_f64,
                a.stats.loss_f64,
                1e-6 * lmag,
                &format!("{ctx} loss"),
            );
            for r in 0..rows {
                let m = (a.row_loss[r] as f64).abs().max(1.0);
                assert_near(b.row_loss[r] as f64, a.row_loss[r] as f64, 1e-6 * m, &ctx);
            }
            let gmax = a.grad.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
            for i in 0..x.len() {
                assert_near(
                    b.grad[i] as f64,
                    a.grad[i] as f64,
                    2e-6 * gmax,
                    &format!("{ctx} grad[{i}]"),
                );
            }
            assert_eq!(a.argmax, b.argmax, "{ctx} argmax");
        }
    }
}

/// One class: `p = 1`, `lse = z`, so the loss is `lse - z = 0` and the gradient `p - 1 = 0`
/// for any logit, weight, smoothing (`eps / C` spreads onto the same class) and cap. The loss
/// of plain targets is computed as `lse - z_t` with `lse = z + ln 1`: exactly 0. With
/// smoothing or probability targets the crate forms `W lse - sum w z` (products rounded in
/// f32): 0 within 1e-6 of `|w z|`. The gradient is 0 within 1e-6 of `|g w|`.
#[test]
fn one_class_gives_zero() {
    let xs = [0.0f32, 1.5, -40.0, 1e6, -1e30];
    for k in tiers() {
        for &v in &xs {
            for (eps, w, cap) in [
                (0.0f32, 1.0f32, None),
                (0.1, 1.0, None),
                (1.0, 2.5, None),
                (0.3, 0.7, Some(5.0f32)),
            ] {
                let wv = [w];
                let mut o = CrossEntropyOptions::default()
                    .label_smoothing(eps)
                    .weight(&wv)
                    .reduction(Reduction::Sum);
                o.softcap = cap;
                let x = [v, v];
                let ctx = format!("[{}] z {v} eps {eps} w {w} cap {cap:?}", k.isa());
                let z = cap.map_or(v as f64, |c| c as f64 * (v as f64 / c as f64).tanh());
                let tol_l = 1e-6 * (w as f64 * z).abs();
                let r = classes(k, &x, &[0u8, 0], 1, &o);
                if eps == 0.0 {
                    assert_eq!(r.stats.loss_f64, 0.0, "{ctx}: loss");
                } else {
                    assert_near(r.stats.loss_f64, 0.0, 2.0 * tol_l, &format!("{ctx} loss"));
                }
                for &g in &r.grad {
                    assert_near(g as f64, 0.0, 1e-6 * w as f64, &format!("{ctx} grad"));
                }
                assert_eq!(r.argmax, [0, 0], "{ctx} argmax");
                let p = fwd_bwd::<i64>(k, &x, Targets::Probs(&[0.7, 1.0]), 1, &o).unwrap();
                assert_near(
                    p.stats.loss_f64,
                    0.0,
                    2.0 * tol_l,
                    &format!("{ctx} probs loss"),
                );
                for &g in &p.grad {
                    assert_near(g as f64, 0.0, 1e-6 * w as f64, &format!("{ctx} probs grad"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Special values
// ---------------------------------------------------------------------------------------------

/// f64 loss and Sum-gradient of one plain row (no weights, no smoothing), from the finite
/// entries (a `-inf` logit has `p = 0`).
fn plain_row(x: &[f32], t: usize) -> (f64, Vec<f64>) {
    let m = x
        .iter()
        .map(|&v| v as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
    let lse = m + s.ln();
    let g = x
        .iter()
        .enumerate()
        .map(|(c, &v)| (v as f64 - lse).exp() - if c == t { 1.0 } else { 0.0 })
        .collect();
    (lse - x[t] as f64, g)
}

/// `-inf` logits away from the label: `p = 0` there, so the loss is that of the other classes
/// (finite) and the gradient there is exactly 0. Positions cover the first lane, the middle,
/// the vector tails. With a cap, `-inf` becomes `-cap` and its gradient `(..) * (1 - 1) = 0`.
/// With smoothing the loss is `+inf` (the smoothing term holds `-ln p_c = +inf`, as PyTorch)
/// while the gradient stays finite: `p_c - eps / C = -eps / C` at the `-inf` entry.
#[test]
fn neg_inf_off_the_label() {
    for k in tiers() {
        for cols in [3usize, 17, 33, 100, 1000] {
            let mut x: Vec<f32> = (0..cols)
                .map(|c| ((c * 13 % 7) as f32) * 0.5 - 1.0)
                .collect();
            let t = cols / 2;
            let holes = [0, 1, cols - 1, cols.saturating_sub(2), cols / 3];
            for &h in &holes {
                if h != t {
                    x[h] = f32::NEG_INFINITY;
                }
            }
            let ctx = format!("[{}] cols {cols}", k.isa());
            let sum = CrossEntropyOptions::default().reduction(Reduction::Sum);
            let r = classes(k, &x, &[t as i64], cols, &sum);
            let (loss, g) = plain_row(&x, t);
            assert!(r.stats.loss.is_finite(), "{ctx}: loss {}", r.stats.loss);
            assert_near(
                r.stats.loss_f64,
                loss,
                1e-6 * loss.max(1.0),
                &format!("{ctx} loss"),
            );
            for c in 0..cols {
                if x[c] == f32::NEG_INFINITY {
                    assert_eq!(r.grad[c], 0.0, "{ctx} grad[{c}] at -inf");
                } else {
                    assert_near(r.grad[c] as f64, g[c], 1e-6, &format!("{ctx} grad[{c}]"));
                }
            }
            // Under a cap the row is finite: -inf becomes -cap, whose chain factor
            // 1 - (z / cap)^2 is 0 (up to the f32 rounding of 1 / cap: 1e-6).
            let r = classes(k, &x, &[t as i64], cols, &sum.softcap(3.0));
            assert!(r.stats.loss.is_finite(), "{ctx} cap: loss {}", r.stats.loss);
            for c in 0..cols {
                if x[c] == f32::NEG_INFINITY {
                    assert_near(
                        r.grad[c] as f64,
                        0.0,
                        1e-6,
                        &format!("{ctx} cap: grad[{c}]"),
                    );
                }
            }
            // Smoothing: +inf loss, finite gradient (-eps/C at the -inf entries).
            let eps = 0.1f32;
            let r = classes(k, &x, &[t as i64], cols, &sum.label_smoothing(eps));
            assert_eq!(r.stats.loss, f32::INFINITY, "{ctx} eps: loss");
            for c in 0..cols {
                let want = (1.0 - eps as f64) * g[c]
                    + eps as f64 * (g[c] + if c == t { 1.0 } else { 0.0 } - 1.0 / cols as f64);
                assert_near(
                    r.grad[c] as f64,
                    want,
                    1e-6,
                    &format!("{ctx} eps: grad[{c}]"),
                );
            }
        }
    }
}

/// `-inf` at the label: `p_t = 0`, `loss = -ln 0 = +inf` (as PyTorch); the gradient is the
/// finite `p - onehot` (so -1 at the label, Sum). Mean: `+inf / N = +inf`.
#[test]
fn neg_inf_at_the_label() {
    for k in tiers() {
        for cols in [2usize, 9, 40] {
            let mut x: Vec<f32> = (0..cols).map(|c| (c % 5) as f32 * 0.3).collect();
            let t = cols - 1;
            x[t] = f32::NEG_INFINITY;
            let ctx = format!("[{}] cols {cols}", k.isa());
            let r = classes(k, &x, &[t as u32], cols, &CrossEntropyOptions::default());
            assert_eq!(r.stats.loss, f32::INFINITY, "{ctx}: mean loss");
            assert_eq!(r.row_loss[0], f32::INFINITY, "{ctx}: row loss");
            let (_, g) = plain_row(&x, t);
            for c in 0..cols {
                assert_near(r.grad[c] as f64, g[c], 1e-6, &format!("{ctx} grad[{c}]"));
            }
            assert_eq!(r.grad[t], -1.0, "{ctx}: grad at the label");
        }
    }
}

/// A NaN logit makes its row's loss and whole gradient NaN; under `Reduction::None` the other
/// rows are bit-identical to a batch where that row is finite; the Mean loss is NaN. Positions:
/// first, middle, vector tail, last, the label itself; with and without argmax, cap, smoothing;
/// class and probability targets.
#[test]
fn nan_logit_poisons_only_its_row() {
    for k in tiers() {
        for cols in [1usize, 5, 16, 17, 33, 1000] {
            let rows = 3;
            let base: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 29 % 31) as f32 - 15.0) * 0.2)
                .collect();
            let labels: Vec<i64> = (0..rows).map(|r| ((r * 5 + 1) % cols) as i64).collect();
            let y: Vec<f32> = (0..rows * cols).map(|i| (i % 3) as f32 * 0.4).collect();
            let bad_row = 1;
            let t = labels[bad_row] as usize;
            let mut positions = vec![0, cols / 2, cols - 1, t];
            if cols > 16 {
                positions.push(16);
            }
            let rl = vec![1.0f32; rows];
            let none = CrossEntropyOptions::default()
                .reduction(Reduction::None)
                .row_scale(&rl);
            for pos in positions {
                for (oi, o) in [
                    none,
                    none.softcap(6.0),
                    none.label_smoothing(0.2).z_loss(1e-3),
                ]
                .iter()
                .enumerate()
                {
                    let mut x = base.clone();
                    x[bad_row * cols + pos] = f32::NAN;
                    let ctx = format!("[{}] cols {cols} NaN at {pos} options #{oi}", k.isa());
                    for probs in [false, true] {
                        let tg = if probs {
                            Targets::Probs(&y)
                        } else {
                            Targets::Classes(&labels)
                        };
                        let ctx = format!("{ctx} probs {probs}");
                        let clean = fwd_bwd(k, &base, tg, cols, o).unwrap();
                        let r = fwd_bwd(k, &x, tg, cols, o).unwrap();
                        assert!(
                            r.row_loss[bad_row].is_nan(),
                            "{ctx}: row loss {}",
                            r.row_loss[bad_row]
                        );
                        assert!(r.stats.loss.is_nan(), "{ctx}: total {}", r.stats.loss);
                        let gr = &r.grad[bad_row * cols..(bad_row + 1) * cols];
                        assert!(gr.iter().all(|v| v.is_nan()), "{ctx}: gradient row {gr:?}");
                        for row in (0..rows).filter(|&row| row != bad_row) {
                            assert_eq!(
                                r.row_loss[row].to_bits(),
                                clean.row_loss[row].to_bits(),
                                "{ctx}: row {row} loss"
                            );
                            let (a, b) = (
                                &r.grad[row * cols..(row + 1) * cols],
                                &clean.grad[row * cols..(row + 1) * cols],
                            );
                            assert!(
                                a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()),
                                "{ctx}: row {row} gradient changed"
                            );
                            assert_eq!(r.argmax[row], clean.argmax[row], "{ctx}: row {row} argmax");
                        }
                        // Mean and Sum are NaN too; the loss-only path agrees.
                        for red in [Reduction::Mean, Reduction::Sum] {
                            let mut o2 = *o;
                            o2.reduction = red;
                            o2.row_scale = None;
                            let m = fwd_bwd(k, &x, tg, cols, &o2).unwrap();
                            assert!(m.stats.loss.is_nan(), "{ctx} {red:?}: {}", m.stats.loss);
                            let mut out = CrossEntropyOutputs::default();
                            let lo = k
                                .cross_entropy_with(Logits::Read(&x), tg, cols, &o2, &mut out)
                                .unwrap();
                            assert!(lo.loss.is_nan(), "{ctx} {red:?} loss only: {}", lo.loss);
                        }
                    }
                }
            }
        }
    }
}

/// `+inf` logit or an all `-inf` row: NaN loss and gradient (the crate's table, as PyTorch),
/// and a NaN `lse` output (as documented on `CrossEntropyOutputs::lse`).
#[test]
fn pos_inf_and_all_neg_inf_rows_are_nan() {
    for k in tiers() {
        for cols in [1usize, 4, 17, 64] {
            let ctx = format!("[{}] cols {cols}", k.isa());
            let mut x = vec![0.5f32; cols];
            x[cols - 1] = f32::INFINITY;
            let r = classes(k, &x, &[0i64], cols, &CrossEntropyOptions::default());
            assert!(r.stats.loss.is_nan(), "{ctx} +inf: loss {}", r.stats.loss);
            // The documented `lse` output of such a row.
            assert!(r.lse[0].is_nan(), "{ctx} +inf: lse {}", r.lse[0]);
            assert!(
                r.grad.iter().all(|v| v.is_nan()),
                "{ctx} +inf: grad {:?}",
                r.grad
            );
            let x = vec![f32::NEG_INFINITY; cols];
            let r = classes(k, &x, &[0i64], cols, &CrossEntropyOptions::default());
            assert!(
                r.stats.loss.is_nan(),
                "{ctx} all -inf: loss {}",
                r.stats.loss
            );
            assert!(r.lse[0].is_nan(), "{ctx} all -inf: lse {}", r.lse[0]);
            assert!(
                r.grad.iter().all(|v| v.is_nan()),
                "{ctx} all -inf: grad {:?}",
                r.grad
            );
        }
    }
}

/// Huge logits never overflow and give the right loss. Row `[1e30, -1e30, 0, 1e30]`: `m = 1e30`,
/// `s = 2 + e^-1e30 + e^-2e30 = 2`, so `lse = 1e30 + ln 2` and
/// `loss_t = lse - z_t = ln 2` for t = 0 or 3, `2e30 + ln 2` for t = 1 and `1e30 + ln 2` for
/// t = 2. The gradient is `p - onehot` with `p = [1/2, 0, 0, 1/2]`. (PyTorch, computing
/// `log_softmax = (z - m) - ln s`, gets `-ln 2` at t = 0 in f32.) What this guards against:
/// a loss formed as `(m + ln s) - z_t` in f64 loses `ln s` to rounding once `|m|` passes
/// ~1e11 (f64 spacing at 1e12 is 1.2e-4); `(m - z_t) + ln s` keeps it. Tied logits `M, M`
/// must give `ln 2` at every magnitude.
#[test]
fn huge_logits() {
    let x = [1e30f32, -1e30, 0.0, 1e30];
    let ln2 = 2f64.ln();
    let want = [ln2, 2e30 + ln2, 1e30 + ln2, ln2];
    let p = [0.5, 0.0, 0.0, 0.5];
    let mut failures = Vec::new();
    for k in tiers() {
        for t in 0..4usize {
            let sum = CrossEntropyOptions::default().reduction(Reduction::Sum);
            let r = classes(k, &x, &[t as i64], 4, &sum);
            let ctx = format!("[{}] z {x:?} target {t}", k.isa());
            assert!(r.stats.loss.is_finite(), "{ctx}: loss {}", r.stats.loss);
            // 1e-6 relative, at least 1e-6 absolute.
            if !near(r.stats.loss_f64, want[t], 1e-6 * want[t]) {
                failures.push(format!(
                    "{ctx}: loss {:e}, expected {:e}",
                    r.stats.loss_f64, want[t]
                ));
            }
            for c in 0..4 {
                let g = p[c] - if c == t { 1.0 } else { 0.0 };
                assert_near(r.grad[c] as f64, g, 1e-7, &format!("{ctx} grad[{c}]"));
            }
            assert_eq!(r.argmax[0], 0, "{ctx} argmax");
            // The same through a one-hot probability target.
            let mut y = [0.0f32; 4];
            y[t] = 1.0;
            let r = fwd_bwd::<i64>(k, &x, Targets::Probs(&y), 4, &sum).unwrap();
            assert!(
                r.stats.loss.is_finite(),
                "{ctx} probs: loss {}",
                r.stats.loss
            );
            if !near(r.stats.loss_f64, want[t], 1e-6 * want[t]) {
                failures.push(format!(
                    "{ctx} (one-hot probability target): loss {:e}, expected {:e}",
                    r.stats.loss_f64, want[t]
                ));
            }
            for c in 0..4 {
                let g = p[c] - y[c] as f64;
                assert_near(r.grad[c] as f64, g, 1e-7, &format!("{ctx} probs grad[{c}]"));
            }
        }
        // Two tied logits M: loss ln 2 exactly, at every magnitude (the loss is a difference
        // of logits plus ln s; it must not be rounded at the scale of M).
        for m in [1e4f32, 1e8, 1e11, 1e12, 1e16, 1e20, 1e30, -1e30] {
            let r = classes(k, &[m, m], &[1i64], 2, &CrossEntropyOptions::default());
            if !near(r.stats.loss_f64, ln2, 1e-5 * ln2) {
                failures.push(format!(
                    "[{}] z [{m:e}, {m:e}] target 1: loss {:e}, expected ln 2 = {ln2:e}",
                    k.isa(),
                    r.stats.loss_f64
                ));
            }
        }
        // A unique huge maximum at the label: loss ln(1 + e^-1e30 + ..) = 0, gradient 0.
        let r = classes(
            k,
            &[1e30f32, -1e30, 0.0],
            &[0i64],
            3,
            &CrossEntropyOptions::default(),
        );
        assert_eq!(r.stats.loss_f64, 0.0, "[{}] unique max", k.isa());
        assert!(
            r.grad.iter().all(|&g| g == 0.0),
            "[{}] unique max: {:?}",
            k.isa(),
            r.grad
        );
        // Under a cap huge logits are just +-cap: [c, -c, 0, c] with c = 5: lse =
        // 5 + ln(2 + e^-5 + e^-10), loss_0 = ln(2 + e^-5 + e^-10).
        let cap = CrossEntropyOptions::default().softcap(5.0);
        let r = classes(k, &x, &[0i64], 4, &cap);
        let w = (2.0 + (-5f64).exp() + (-10f64).exp()).ln();
        assert_near(
            r.stats.loss_f64,
            w,
            1e-5,
            &format!("[{}] capped huge", k.isa()),
        );
    }
    assert!(failures.is_empty(), "huge logits:\n{}", failures.join("\n"));
}

/// Label smoothing on logits near `f32::MAX`: the exact loss is finite. `C` equal logits
/// `f32::MAX`: `p = 1 / C`, so every `-ln p_c = ln C` and the loss is `ln C` whatever `eps`.
/// (PyTorch gets `ln C` too: `log_softmax = (z - m) - ln s = -ln C` in f32.) What this guards
/// against: the smoothing term `sum_c w_c z_c` accumulated in f32 overflows to `+inf` here
/// (two `f32::MAX` in one sum), which would make the loss `W lse - inf = -inf`.
#[test]
fn max_float_logits_with_smoothing() {
    let mut failures = Vec::new();
    for k in tiers() {
        for cols in [2usize, 16, 64] {
            for eps in [0.0f32, 0.1] {
                let x = vec![f32::MAX; cols];
                let o = CrossEntropyOptions::default().label_smoothing(eps);
                let r = classes(k, &x, &[0i64], cols, &o);
                let want = (cols as f64).ln();
                if !near(r.stats.loss_f64, want, 1e-6 * want) {
                    failures.push(format!(
                        "[{}] {cols} logits f32::MAX, label 0, eps {eps}: loss {:e}, expected ln {cols} = {want:e}",
                        k.isa(),
                        r.stats.loss_f64
                    ));
                }
                let g: Vec<f64> = (0..cols)
                    .map(|c| 1.0 / cols as f64 - if c == 0 { 1.0 } else { 0.0 })
                    .map(|v| v * (1.0 - eps as f64))
                    .collect();
                // With smoothing the uniform target's gradient p - 1/C is 0, so the gradient
                // is (1 - eps)(p - onehot).
                for c in 0..cols {
                    if !near(r.grad[c] as f64, g[c], 1e-6) {
                        failures.push(format!(
                            "[{}] {cols} logits f32::MAX, eps {eps}: grad[{c}] {:e}, expected {:e}",
                            k.isa(),
                            r.grad[c],
                            g[c]
                        ));
                        break;
                    }
                }
                // A uniform probability target: the same loss ln C, gradient p - 1/C = 0.
                let y = vec![1.0 / cols as f32; cols];
                let r = fwd_bwd::<i64>(k, &x, Targets::Probs(&y), cols, &o).unwrap();
                if !near(r.stats.loss_f64, want, 1e-6 * want) {
                    failures.push(format!(
                        "[{}] {cols} logits f32::MAX, uniform probability target, eps {eps}: \
                         loss {:e}, expected ln {cols} = {want:e}",
                        k.isa(),
                        r.stats.loss_f64
                    ));
                }
                assert!(
                    r.grad.iter().all(|g| g.abs() <= 1e-6),
                    "[{}] uniform probs grad {:?}",
                    k.isa(),
                    r.grad
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "f32::MAX logits:\n{}",
        failures.join("\n")
    );
}

/// No rows: Mean of nothing is `0 / 0 = NaN` by default and 0 under `AllIgnored::Zero`; Sum
/// and None are 0. Class and probability targets.
#[test]
fn zero_rows() {
    let cols = 5;
    let x: [f32; 0] = [];
    let labels: [i64; 0] = [];
    for k in tiers() {
        let ctx = format!("[{}]", k.isa());
        for probs in [false, true] {
            let tg = if probs {
                Targets::Probs(&x)
            } else {
                Targets::Classes(&labels)
            };
            let mean = CrossEntropyOptions::default();
            let r = fwd_bwd(k, &x, tg, cols, &mean).unwrap();
            assert!(
                r.stats.loss.is_nan(),
                "{ctx} probs {probs}: mean {}",
                r.stats.loss
            );
            assert_eq!(r.stats.rows_used, 0);
            let r = fwd_bwd(k, &x, tg, cols, &mean.all_ignored(AllIgnored::Zero)).unwrap();
            assert_eq!(r.stats.loss, 0.0, "{ctx} probs {probs}: mean, Zero");
            let r = fwd_bwd(k, &x, tg, cols, &mean.reduction(Reduction::Sum)).unwrap();
            assert_eq!(r.stats.loss, 0.0, "{ctx} probs {probs}: sum");
            let r = fwd_bwd(k, &x, tg, cols, &mean.reduction(Reduction::None)).unwrap();
            assert_eq!(r.stats.loss, 0.0, "{ctx} probs {probs}: none");
            let mut out = CrossEntropyOutputs::default();
            let lo = k
                .cross_entropy_with(Logits::Read(&x), tg, cols, &mean, &mut out)
                .unwrap();
            assert!(lo.loss.is_nan(), "{ctx} probs {probs}: loss-only mean");
        }
    }
}

/// Every row ignored: Mean `0 / 0 = NaN` by default, 0 with `AllIgnored::Zero`; Sum 0; the
/// gradient is all 0 (written over the sentinel), the row losses 0; lse and argmax still
/// describe the rows.
#[test]
fn all_rows_ignored() {
    let (rows, cols) = (3usize, 20usize);
    let x: Vec<f32> = (0..rows * cols).map(|i| (i % 7) as f32 - 3.0).collect();
    for k in tiers() {
        let ctx = format!("[{}]", k.isa());
        let labels = [-100i64; 3];
        let plain = CrossEntropyOptions::default();
        let w = vec![2.0f32; cols];
        for o in [
            plain,
            plain.label_smoothing(0.3).z_loss(0.1).weight(&w),
            plain.softcap(2.0),
        ] {
            let r = classes(k, &x, &labels, cols, &o);
            assert!(r.stats.loss.is_nan(), "{ctx}: mean {}", r.stats.loss);
            assert_eq!((r.stats.rows_used, r.stats.denominator), (0, 0.0), "{ctx}");
            assert!(r.grad.iter().all(|&g| g == 0.0), "{ctx}: grad {:?}", r.grad);
            assert!(
                r.row_loss.iter().all(|&l| l == 0.0),
                "{ctx}: {:?}",
                r.row_loss
            );
            assert!(
                r.lse.iter().all(|l| l.is_finite()),
                "{ctx}: lse {:?}",
                r.lse
            );
            // Row r holds (i % 7) - 3 for i in 20r..20r + 20: the first 3.0 is at i = 6, 20, 41.
            assert_eq!(r.argmax, [6, 0, 1], "{ctx}: argmax (first index of 3.0)");
            assert_eq!(r.stats.correct, Some(0), "{ctx}: correct");
            let r = classes(k, &x, &labels, cols, &o.all_ignored(AllIgnored::Zero));
            assert_eq!(r.stats.loss, 0.0, "{ctx}: mean, Zero");
            assert!(r.grad.iter().all(|&g| g == 0.0), "{ctx}: grad, Zero");
            let r = classes(k, &x, &labels, cols, &o.reduction(Reduction::Sum));
            assert_eq!(r.stats.loss, 0.0, "{ctx}: sum");
            let mut xi = x.clone();
            let l = k
                .cross_entropy_fwd_bwd_inplace(&mut xi, &labels, cols, &o)
                .unwrap();
            assert!(l.is_nan(), "{ctx}: in place");
            assert!(xi.iter().all(|&g| g == 0.0), "{ctx}: in-place grad");
        }
        // Unsigned labels with a non-negative ignore_index.
        let r = classes(k, &x, &[7u32, 7, 7], cols, &plain.ignore_index(Some(7)));
        assert!(
            r.stats.loss.is_nan() && r.grad.iter().all(|&g| g == 0.0),
            "{ctx}: u32"
        );
    }
}

/// Class weights summing to 0 over the rows used: Mean is `0 / 0 = NaN`, as PyTorch. The used
/// rows' gradients are NaN too: PyTorch's `nll_loss` backward writes
/// `-w_t * (1 / total_weight) = 0 * -inf = NaN` at the target, and log_softmax's backward
/// spreads it over the row; ignored rows keep gradient 0. Sum is an ordinary 0.
#[test]
fn zero_weight_sum_mean_is_nan() {
    let cols = 4;
    let x: Vec<f32> = (0..3 * cols).map(|i| (i % 5) as f32 * 0.5).collect();
    let w = [0.0f32, 1.0, 0.0, 3.0];
    let labels = [0i64, -100, 2];
    for k in tiers() {
        let ctx = format!("[{}]", k.isa());
        let o = CrossEntropyOptions::default().weight(&w);
        let r = classes(k, &x, &labels, cols, &o);
        assert!(r.stats.loss.is_nan(), "{ctx}: mean {}", r.stats.loss);
        assert_eq!((r.stats.rows_used, r.stats.denominator), (2, 0.0), "{ctx}");
        for row in [0, 2] {
            let g = &r.grad[row * cols..(row + 1) * cols];
            assert!(g.iter().all(|v| v.is_nan()), "{ctx}: row {row} grad {g:?}");
        }
        assert!(
            r.grad[cols..2 * cols].iter().all(|&g| g == 0.0),
            "{ctx}: ignored row"
        );
        let zero = o.all_ignored(AllIgnored::Zero);
        let r = classes(k, &x, &labels, cols, &zero);
        assert!(
            r.stats.loss.is_nan(),
            "{ctx}: rows were used, so Zero does not apply"
        );
        let r = classes(k, &x, &labels, cols, &o.reduction(Reduction::Sum));
        assert_eq!(r.stats.loss, 0.0, "{ctx}: sum");
        assert!(
            r.grad.iter().all(|&g| g == 0.0),
            "{ctx}: sum grad {:?}",
            r.grad
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Errors
// ---------------------------------------------------------------------------------------------

/// Calls `cross_entropy_with` in all three logit modes with every output, all buffers full of
/// sentinels, and checks that the call fails with `want` and writes nothing.
#[allow(clippy::too_many_arguments)]
fn expect_err<L: Label>(
    k: &Kernels,
    x: &[f32],
    t: Targets<'_, L>,
    cols: usize,
    opts: &CrossEntropyOptions<'_>,
    lens: (usize, usize, usize, usize),
    want: &dyn Fn(&Error) -> bool,
    ctx: &str,
) {
    let (glen, rl, ll, al) = lens;
    for mode in 0..3 {
        let mut grad = vec![UNWRITTEN; glen];
        let mut xi = x.to_vec();
        let mut row_loss = vec![UNWRITTEN; rl];
        let mut lse = vec![UNWRITTEN; ll];
        let mut argmax = vec![u32::MAX; al];
        let logits = match mode {
            0 => Logits::Read(x),
            1 => Logits::Grad(x, &mut grad),
            _ => Logits::InPlace(&mut xi),
        };
        let res = k.cross_entropy_with(
            logits,
            t,
            cols,
            opts,
            &mut CrossEntropyOutputs {
                row_loss: Some(&mut row_loss),
                lse: Some(&mut lse),
                argmax: Some(&mut argmax),
            },
        );
        let ctx = format!("[{}] {ctx} (mode {mode})", k.isa());
        match res {
            Err(e) => assert!(want(&e), "{ctx}: wrong error {e:?}"),
            Ok(s) => panic!("{ctx}: expected an error, got {s:?}"),
        }
        assert!(
            grad.iter().all(|v| v.to_bits() == UNWRITTEN.to_bits()),
            "{ctx}: grad written"
        );
        assert!(
            xi.iter().zip(x).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{ctx}: logits written in place"
        );
        assert!(
            row_loss.iter().all(|v| v.to_bits() == UNWRITTEN.to_bits()),
            "{ctx}: row_loss written"
        );
        assert!(
            lse.iter().all(|v| v.to_bits() == UNWRITTEN.to_bits()),
            "{ctx}: lse written"
        );
        assert!(
            argmax.iter().all(|&v| v == u32::MAX),
            "{ctx}: argmax written"
        );
    }
}

#[test]
fn bad_labels() {
    let (rows, cols) = (4usize, 3usize);
    let x: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.1).collect();
    let n = (rows * cols, rows, rows, rows);
    let bad = |row: usize, label: i128| {
        move |e: &Error| {
            *e == Error::BadLabel {
                row,
                label,
                classes: 3,
            }
        }
    };
    let w = [1.0f32, 2.0, 3.0];
    let rl = [1.0f32; 4];
    for k in tiers() {
        for (oi, o) in [
            CrossEntropyOptions::default(),
            CrossEntropyOptions::default()
                .reduction(Reduction::Sum)
                .weight(&w),
            CrossEntropyOptions::default()
                .reduction(Reduction::None)
                .row_scale(&rl)
                .label_smoothing(0.1),
        ]
        .iter()
        .enumerate()
        {
            let c = |s: &str| format!("{s}, options #{oi}");
            // Negative, not the ignore_index; the first bad row is named.
            let t = Targets::Classes(&[0i64, 1, -1, -7]);
            expect_err(k, &x, t, cols, o, n, &bad(2, -1), &c("label -1"));
            // >= C.
            let t = Targets::Classes(&[0i32, 3, 1, 2]);
            expect_err(k, &x, t, cols, o, n, &bad(1, 3), &c("label 3"));
            // -100 without an ignore_index.
            let t = Targets::Classes(&[0i64, 1, 2, -100]);
            let o2 = o.ignore_index(None);
            expect_err(k, &x, t, cols, &o2, n, &bad(3, -100), &c("-100, no ignore"));
            // Huge unsigned labels.
            let t = Targets::Classes(&[1u64, u64::MAX, 0, 0]);
            expect_err(
                k,
                &x,
                t,
                cols,
                o,
                n,
                &bad(1, u64::MAX as i128),
                &c("u64::MAX"),
            );
            let t = Targets::Classes(&[usize::MAX, 0, 0, 0]);
            expect_err(
                k,
                &x,
                t,
                cols,
                o,
                n,
                &bad(0, usize::MAX as i128),
                &c("usize::MAX"),
            );
            let t = Targets::Classes(&[0u32, 0, 0, u32::MAX]);
            expect_err(
                k,
                &x,
                t,
                cols,
                o,
                n,
                &bad(3, u32::MAX as i128),
                &c("u32::MAX"),
            );
            let t = Targets::Classes(&[i64::MIN, 0, 0, 0]);
            expect_err(
                k,
                &x,
                t,
                cols,
                o,
                n,
                &bad(0, i64::MIN as i128),
                &c("i64::MIN"),
            );
            // 2^32 + 1 must not wrap to class 1.
            let t = Targets::Classes(&[0u64, (1u64 << 32) + 1, 0, 0]);
            expect_err(
                k,
                &x,
                t,
                cols,
                o,
                n,
                &bad(1, (1i128 << 32) + 1),
                &c("2^32 + 1"),
            );
        }
        // The convenience wrappers report it too, with nothing written.
        let mut g = vec![UNWRITTEN; rows * cols];
        let e = k
            .cross_entropy_fwd_bwd(
                &x,
                &[0u8, 9, 0, 0],
                &mut g,
                cols,
                &CrossEntropyOptions::default(),
            )
            .unwrap_err();
        assert_eq!(
            e,
            Error::BadLabel {
                row: 1,
                label: 9,
                classes: 3
            }
        );
        assert!(g.iter().all(|v| v.to_bits() == UNWRITTEN.to_bits()));
    }
}

#[test]
fn length_and_shape_errors() {
    let (rows, cols) = (3usize, 5usize);
    let n = rows * cols;
    let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.1).collect();
    let labels = [0i64, 1, 2];
    let y = vec![0.2f32; n];
    let ok = (n, rows, rows, rows);
    let mismatch = |arg: &'static str, expected: usize, actual: usize| {
        move |e: &Error| {
            *e == Error::LengthMismatch {
                arg,
                expected,
                actual,
            }
        }
    };
    let d = CrossEntropyOptions::default();
    for k in tiers() {
        // targets
        let t = Targets::Classes(&labels[..2]);
        expect_err(
            k,
            &x,
            t,
            cols,
            &d,
            ok,
            &mismatch("targets", 3, 2),
            "short targets",
        );
        let t = Targets::Classes(&[0i64, 1, 2, 3]);
        expect_err(
            k,
            &x,
            t,
            cols,
            &d,
            ok,
            &mismatch("targets", 3, 4),
            "long targets",
        );
        let t = Targets::<i64>::Probs(&y[..n - 1]);
        expect_err(
            k,
            &x,
            t,
            cols,
            &d,
            ok,
            &mismatch("targets", n, n - 1),
            "short probs",
        );
        let yl = vec![0.2f32; n + cols];
        let t = Targets::<i64>::Probs(&yl);
        expect_err(
            k,
            &x,
            t,
            cols,
            &d,
            ok,
            &mismatch("targets", n, n + cols),
            "long probs",
        );
        let t = Targets::Classes(&labels[..]);
        // grad (checked only where a separate gradient is passed)
        let mut g = vec![UNWRITTEN; n + 1];
        let e = k
            .cross_entropy_with(
                Logits::Grad(&x, &mut g),
                t,
                cols,
                &d,
                &mut CrossEntropyOutputs::default(),
            )
            .unwrap_err();
        assert_eq!(
            e,
            Error::LengthMismatch {
                arg: "grad",
                expected: n,
                actual: n + 1
            }
        );
        assert!(g.iter().all(|v| v.to_bits() == UNWRITTEN.to_bits()));
        let mut g = vec![UNWRITTEN; n - 1];
        let e = k
            .cross_entropy_fwd_bwd(&x, &labels, &mut g, cols, &d)
            .unwrap_err();
        assert_eq!(
            e,
            Error::LengthMismatch {
                arg: "grad",
                expected: n,
                actual: n - 1
            }
        );
        assert!(g.iter().all(|v| v.to_bits() == UNWRITTEN.to_bits()));
        // weight
        let w = [1.0f32; 4];
        let o = d.weight(&w);
        expect_err(
            k,
            &x,
            t,
            cols,
            &o,
            ok,
            &mismatch("weight", cols, 4),
            "weight 4",
        );
        let w = [1.0f32; 6];
        let o = d.weight(&w);
        expect_err(
            k,
            &x,
            Targets::<i64>::Probs(&y),
            cols,
            &o,
            ok,
            &mismatch("weight", cols, 6),
            "weight 6 probs",
        );
        // row_scale length (None reduction)
        let rs = [1.0f32; 2];
        let o = d.reduction(Reduction::None).row_scale(&rs);
        expect_err(
            k,
            &x,
            t,
            cols,
            &o,
            ok,
            &mismatch("row_scale", rows, 2),
            "row_scale 2",
        );
        // outputs
        expect_err(
            k,
            &x,
            t,
            cols,
            &d,
            (n, rows + 1, rows, rows),
            &mismatch("row_loss", rows, rows + 1),
            "row_loss",
        );
        expect_err(
            k,
            &x,
            t,
            cols,
            &d,
            (n, rows, rows - 1, rows),
            &mismatch("lse", rows, rows - 1),
            "lse",
        );
        expect_err(
            k,
            &x,
            t,
            cols,
            &d,
            (n, rows, rows, 0),
            &mismatch("argmax", rows, 0),
            "argmax",
        );
        // cols == 0, and logits that are not whole rows
        expect_err(
            k,
            &x,
            t,
            0,
            &d,
            ok,
            &|e| *e == Error::ZeroDim { arg: "cols" },
            "cols 0",
        );
        let e = k.cross_entropy(&[], &[0i64; 0], 0, &d).unwrap_err();
        assert_eq!(e, Error::ZeroDim { arg: "cols" });
        expect_err(
            k,
            &x,
            t,
            4,
            &d,
            ok,
            &|e| {
                *e == Error::NotMultiple {
                    arg: "logits",
                    len: n,
                    cols: 4,
                }
            },
            "15 logits, cols 4",
        );
    }
}

#[test]
fn invalid_options() {
    let (rows, cols) = (2usize, 6usize);
    let n = rows * cols;
    let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.1).collect();
    let labels = [0i64, 5];
    let y = vec![1.0 / 6.0; n];
    let ok = (n, rows, rows, rows);
    let d = CrossEntropyOptions::default();
    let invalid = |name: &'static str| move |e: &Error| matches!(e, Error::InvalidOption { name: got, .. } if *got == name);
    let mut cases: Vec<(CrossEntropyOptions<'_>, &'static str)> = Vec::new();
    for eps in [-0.1f32, 1.0001, f32::NAN, f32::INFINITY, -0.0 - 1e-30] {
        cases.push((d.label_smoothing(eps), "label_smoothing"));
    }
    for zl in [-1e-3f32, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        cases.push((d.z_loss(zl), "z_loss"));
    }
    for cap in [
        0.0f32,
        -0.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ] {
        cases.push((d.softcap(cap), "softcap"));
    }
    for s in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        cases.push((d.scale(s), "scale"));
    }
    let rs = [1.0f32; 2];
    cases.push((d.row_scale(&rs), "row_scale")); // with Mean
    cases.push((d.reduction(Reduction::Sum).row_scale(&rs), "row_scale"));
    for k in tiers() {
        for (o, name) in &cases {
            let ctx = format!("{name} in {o:?}");
            expect_err(
                k,
                &x,
                Targets::Classes(&labels),
                cols,
                o,
                ok,
                &invalid(name),
                &ctx,
            );
            expect_err(
                k,
                &x,
                Targets::<i64>::Probs(&y),
                cols,
                o,
                ok,
                &invalid(name),
                &ctx,
            );
        }
        // Reduction::None without row_loss.
        let o = d.reduction(Reduction::None);
        let mut g = vec![UNWRITTEN; n];
        let e = k
            .cross_entropy_with(
                Logits::Grad(&x, &mut g),
                Targets::Classes(&labels),
                cols,
                &o,
                &mut CrossEntropyOutputs::default(),
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::MissingOutput {
                    arg: "row_loss",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(g.iter().all(|v| v.to_bits() == UNWRITTEN.to_bits()));
        let e = k.cross_entropy(&x, &labels, cols, &o).unwrap_err();
        assert!(
            matches!(
                e,
                Error::MissingOutput {
                    arg: "row_loss",
                    ..
                }
            ),
            "{e:?}"
        );
        // The edges of the domains are valid.
        for o in [
            d.label_smoothing(0.0),
            d.label_smoothing(1.0),
            d.z_loss(0.0),
            d.softcap(f32::MIN_POSITIVE),
            d.softcap(f32::MAX),
            d.scale(0.0),
            d.scale(-f32::MAX),
        ] {
            k.cross_entropy(&x, &labels, cols, &o)
                .unwrap_or_else(|e| panic!("[{}] {o:?}: {e:?}", k.isa()));
        }
    }
}

/// A NaN weight of a class that is no row's target, without label smoothing, touches neither
/// the loss nor the gradient (PyTorch gathers weights at the targets only): both equal the
/// run with that weight set to 1.
#[test]
fn nan_weight_of_an_unused_class_without_smoothing() {
    let z = [0.5f32, -1.0, 2.0, 0.0, 1.5, -0.5, 0.25, 3.0];
    let labels = [0i64, 3];
    for k in tiers() {
        let nan_w = [2.0f32, f32::NAN, 1.0, 0.5];
        let one_w = [2.0f32, 1.0, 1.0, 0.5];
        let mut g_nan = [0.0f32; 8];
        let mut g_one = [0.0f32; 8];
        let o_nan = CrossEntropyOptions::default().weight(&nan_w);
        let o_one = CrossEntropyOptions::default().weight(&one_w);
        let l_nan = k
            .cross_entropy_fwd_bwd(&z, &labels, &mut g_nan, 4, &o_nan)
            .unwrap();
        let l_one = k
            .cross_entropy_fwd_bwd(&z, &labels, &mut g_one, 4, &o_one)
            .unwrap();
        assert!(l_nan.is_finite(), "{:?}: loss {l_nan}", k.isa());
        assert_eq!(l_nan.to_bits(), l_one.to_bits(), "{:?}", k.isa());
        assert_eq!(
            g_nan.map(f32::to_bits),
            g_one.map(f32::to_bits),
            "{:?}",
            k.isa()
        );
    }
}
