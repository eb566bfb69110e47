//! Every cross-entropy path on every shape it accepts (`Kernels::cross_entropy_on_path`),
//! against the path the plan chooses and against the reference.
//!
//! * The short paths (`OneRow`, `Dense`, `ShortPlain`, `Short`) compute each row with one
//!   function: wherever two of them accept a call, they must give the same bits (loss, f64 loss,
//!   gradient, per-row outputs, argmax hits).
//! * Every path (`Rows` included, which shifts short rows by their maximum rather than their
//!   target logit) must meet the contract against the scalar reference: the loss within
//!   `1e-5` relative (`2e-5` absolute for losses below 1), each gradient entry within
//!   `2e-6 + 1e-5 |g|`.
//! * The plan's choice is checked against the module docs' table for a few calls whose path is
//!   known from the table alone.
//!
//! One test per tier, stamped by `common`'s `per_tier!`, so that a failure names its tier; a tier this CPU
//! lacks prints a note and passes.

#[macro_use]
mod common;

use common::rng;
use rand::Rng;
use softmax_kernels::cross_entropy::CePath;
use softmax_kernels::{
    CrossEntropyOptions, CrossEntropyOutputs, CrossEntropyStats, Isa, Kernels, Logits, Reduction,
    Targets,
};

/// What one run of a call produced.
#[derive(Debug)]
struct Run {
    stats: CrossEntropyStats,
    grad: Vec<f32>,
    row_loss: Vec<f32>,
    lse: Vec<f32>,
    argmax: Vec<u32>,
}

/// The option sets of the sweep: (options, with per-row outputs).
fn option_sets<'a>(
    weight: &'a [f32],
    row_scale: &'a [f32],
) -> Vec<(CrossEntropyOptions<'a>, bool)> {
    let d = CrossEntropyOptions::default();
    vec![
        (d, false),
        (d.reduction(Reduction::Sum).scale(0.25), false),
        (d, true),
        (d.reduction(Reduction::None).row_scale(row_scale), true),
        (d.weight(weight), false),
        (d.z_loss(1e-3), false),
        (d.label_smoothing(0.1), false),
        (d.softcap(8.0), true),
        (d.ignore_index(None), false),
    ]
}

/// Runs the call on `path` (`None`: the planned path) in mode 0 (loss only), 1 (gradient
/// buffer) or 2 (in place). `None` when the path does not take the call.
#[allow(clippy::too_many_arguments)]
fn run(
    k: &Kernels,
    path: Option<CePath>,
    x: &[f32],
    labels: &[i64],
    cols: usize,
    opts: &CrossEntropyOptions<'_>,
    outputs: bool,
    mode: usize,
) -> Option<Run> {
    let rows = labels.len();
    let (mut rl, mut lse, mut am) = (vec![0.0f32; rows], vec![0.0f32; rows], vec![0u32; rows]);
    let mut out = if outputs {
        CrossEntropyOutputs {
            row_loss: Some(&mut rl),
            lse: Some(&mut lse),
            argmax: Some(&mut am),
        }
    } else {
        CrossEntropyOutputs::default()
    };
    let mut g = vec![f32::NAN; x.len()];
    let mut z = x.to_vec();
    let logits = match mode {
        0 => Logits::Read(x),
        1 => Logits::Grad(x, &mut g),
        _ => Logits::InPlace(&mut z),
    };
    let t = Targets::Classes(labels);
    let stats = match path {
        None => Some(
            k.cross_entropy_with(logits, t, cols, opts, &mut out)
                .unwrap(),
        ),
        Some(p) => k
            .cross_entropy_on_path(p, logits, t, cols, opts, &mut out)
            .unwrap(),
    }?;
    let grad = match mode {
        0 => Vec::new(),
        1 => g,
        _ => z,
    };
    Some(Run {
        stats,
        grad,
        row_loss: rl,
        lse,
        argmax: am,
    })
}

fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn assert_same(ctx: &str, a: &Run, b: &Run) {
    assert!(
        a.stats.loss_f64.to_bits() == b.stats.loss_f64.to_bits()
            || (a.stats.loss_f64.is_nan() && b.stats.loss_f64.is_nan()),
        "{ctx}: loss {:e} vs {:e}",
        a.stats.loss_f64,
        b.stats.loss_f64
    );
    assert_eq!(a.stats.correct, b.stats.correct, "{ctx}: correct");
    assert_eq!(a.stats.rows_used, b.stats.rows_used, "{ctx}: rows used");
    for (name, u, v) in [
        ("grad", &a.grad, &b.grad),
        ("row_loss", &a.row_loss, &b.row_loss),
        ("lse", &a.lse, &b.lse),
    ] {
        if let Some(i) = (0..u.len()).find(|&i| !same_bits(u[i], v[i])) {
            panic!("{ctx}: {name}[{i}] {:e} vs {:e}", u[i], v[i]);
        }
    }
    assert_eq!(a.argmax, b.argmax, "{ctx}: argmax");
}

fn assert_close(ctx: &str, got: &Run, want: &Run) {
    let (l, r) = (got.stats.loss_f64, want.stats.loss_f64);
    let tol = 1e-5 * r.abs().max(2.0);
    assert!(
        (l - r).abs() <= tol || (l.is_nan() && r.is_nan()) || l == r,
        "{ctx}: loss {l:e}, reference {r:e}"
    );
    for (i, (&g, &w)) in got.grad.iter().zip(&want.grad).enumerate() {
        let ok = (g - w).abs() <= 2e-6 + 1e-5 * w.abs() || (g.is_nan() && w.is_nan());
        assert!(ok, "{ctx}: grad[{i}] {g:e}, reference {w:e}");
    }
    assert_eq!(
        got.stats.rows_used, want.stats.rows_used,
        "{ctx}: rows used"
    );
}

/// The sweep of one tier.
fn check_tier(k: &Kernels) {
    let reference = Kernels::for_isa(Isa::Scalar).unwrap();
    let mut g = rng(0xce_9a7f);
    let mut ran = [0usize; 6];
    let mut shapes = Vec::new();
    for cols in [
        1usize, 2, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 100, 1000,
    ] {
        for rows in [1usize, 2, 3, 4, 5, 16, 17, 64, 65, 70] {
            if cols < 100 || rows <= 5 {
                shapes.push((rows, cols));
            }
        }
    }
    for &(rows, cols) in &shapes {
        let mut x: Vec<f32> = (0..rows * cols)
            .map(|_| g.gen_range(-6.0f32..6.0))
            .collect();
        let labels: Vec<i64> = (0..rows)
            .map(|r| {
                if r % 5 == 3 {
                    -100
                } else {
                    g.gen_range(0..cols as i64)
                }
            })
            .collect();
        // A few rows far above their target (the shift by the target is refused), and a -inf.
        for r in (0..rows).filter(|r| r % 7 == 1) {
            let c = (labels[r].max(0) as usize + 1) % cols;
            if c as i64 != labels[r] {
                x[r * cols + c] = 70.0;
            }
        }
        if rows > 2 && cols > 1 {
            let c = (labels[2].max(0) as usize + 1) % cols;
            x[2 * cols + c] = f32::NEG_INFINITY;
        }
        let weight: Vec<f32> = (0..cols).map(|_| g.gen_range(0.5f32..2.0)).collect();
        let row_scale: Vec<f32> = (0..rows).map(|_| g.gen_range(0.0f32..1.0)).collect();
        for (set, (opts, outputs)) in option_sets(&weight, &row_scale).into_iter().enumerate() {
            // Without an ignored label, the ignored rows take class 0.
            let labels: Vec<i64> = if opts.ignore_index.is_none() {
                labels.iter().map(|&l| l.max(0)).collect()
            } else {
                labels.clone()
            };
            for mode in 0..3 {
                let ctx = format!("{} {rows}x{cols} set {set} mode {mode}", k.isa());
                let planned = run(k, None, &x, &labels, cols, &opts, outputs, mode).unwrap();
                let want = run(reference, None, &x, &labels, cols, &opts, outputs, mode).unwrap();
                assert_close(&format!("{ctx} planned"), &planned, &want);
                let short = run(
                    k,
                    Some(CePath::Short),
                    &x,
                    &labels,
                    cols,
                    &opts,
                    outputs,
                    mode,
                );
                for (pi, p) in CePath::ALL.into_iter().enumerate() {
                    let Some(got) = run(k, Some(p), &x, &labels, cols, &opts, outputs, mode) else {
                        continue;
                    };
                    ran[pi] += 1;
                    let ctx = format!("{ctx} {p:?}");
                    assert_close(&ctx, &got, &want);
                    if p != CePath::Rows {
                        let short = short.as_ref().unwrap_or_else(|| {
                            panic!("{ctx}: a short path took a call Short refused")
                        });
                        assert_same(&ctx, &got, short);
                    }
                }
            }
        }
    }
    // Every class path ran somewhere (Probs takes no class call).
    for (pi, p) in CePath::ALL.into_iter().enumerate() {
        if p != CePath::Probs {
            assert!(ran[pi] > 0, "{}: {p:?} never ran", k.isa());
        }
    }
    eprintln!("{}: calls per path {:?}", k.isa(), ran);
}

/// The plan's choice for calls whose path the module docs' table fixes.
fn check_plan(k: &Kernels) {
    let d = CrossEntropyOptions::default();
    let none = CrossEntropyOutputs::default();
    let path = |rows: usize,
                cols: usize,
                opts: &CrossEntropyOptions<'_>,
                out: &CrossEntropyOutputs<'_>| {
        let x = vec![0.0f32; rows * cols];
        let labels = vec![0i64; rows];
        k.cross_entropy_path(&x, Targets::Classes(&labels), cols, opts, out)
            .unwrap()
    };
    let y = vec![0.5f32; 4];
    assert_eq!(
        k.cross_entropy_path(&[0.0; 4], Targets::<i64>::Probs(&y), 2, &d, &none)
            .unwrap(),
        CePath::Probs
    );
    assert_eq!(path(1, 10, &d, &none), CePath::OneRow);
    assert_eq!(path(4, 1, &d, &none), CePath::Dense);
    assert_eq!(path(2, 1, &d, &none), CePath::ShortPlain);
    // The reference takes every class count on its "short" entries (all of them are its one
    // plain row loop).
    let long = if k.isa() == Isa::Scalar {
        CePath::OneRow
    } else {
        CePath::Rows
    };
    assert_eq!(path(1, 100_000, &d, &none), long);
    assert_eq!(path(8, 10, &d.label_smoothing(0.1), &none), CePath::Rows);
    assert_eq!(path(8, 10, &d.softcap(5.0), &none), CePath::Rows);
    let mut am = vec![0u32; 8];
    let with_argmax = CrossEntropyOutputs {
        argmax: Some(&mut am),
        ..Default::default()
    };
    assert_eq!(path(8, 2, &d, &with_argmax), CePath::Short);
    let w = vec![1.0f32; 2];
    assert_eq!(path(8, 2, &d.weight(&w), &none), CePath::Short);
    assert_eq!(path(8, 2, &d.z_loss(1e-4), &none), CePath::Short);
}

per_tier!(paths => |k| {
    check_plan(k);
    check_tier(k);
});
