//! Vocabulary-sharded cross-entropy (`softmax_kernels::shard::ce`) against the unsharded
//! `cross_entropy_with` of the same tier, on every tier: the vocabulary split into 1..8 shards
//! of random sizes (empty shards and shards of one class included), the states merged in a
//! random order, then the loss, each row's loss and `lse`, and every shard's gradient columns,
//! with every option that shards (class weights, `ignore_index`, label smoothing, z-loss,
//! soft-cap, the reductions, `scale`, `row_scale`) and special values (masked `-inf`
//! logits, a whole shard of `-inf`, NaN).

#[macro_use]
mod common;

use rand::rngs::StdRng;
use rand::Rng;
use softmax_kernels::{
    finalize_ce_states, merge_states, CrossEntropyOptions, CrossEntropyOutputs, Error, Kernels,
    Logits, Reduction, RowState, Shard, Targets,
};

/// Random split of `0..c` into `parts` ranges `(offset, len)` (some may be empty).
fn split(g: &mut StdRng, c: usize, parts: usize) -> Vec<(usize, usize)> {
    let mut cuts: Vec<usize> = (0..parts - 1).map(|_| g.gen_range(0..=c)).collect();
    cuts.push(0);
    cuts.push(c);
    cuts.sort_unstable();
    cuts.windows(2).map(|w| (w[0], w[1] - w[0])).collect()
}

/// Columns `off .. off + len` of every row.
fn columns(x: &[f32], c: usize, off: usize, len: usize) -> Vec<f32> {
    x.chunks(c)
        .flat_map(|r| r[off..off + len].to_vec())
        .collect()
}

/// `|x - y| <= tol * (|y| + floor)` elementwise; NaN only against NaN.
fn near(what: &str, x: &[f32], y: &[f32], tol: f32, floor: f32) {
    assert_eq!(x.len(), y.len(), "{what}: lengths");
    for (i, (&u, &v)) in x.iter().zip(y).enumerate() {
        let ok = if v.is_nan() || u.is_nan() {
            u.is_nan() && v.is_nan()
        } else if v.is_infinite() || u.is_infinite() {
            u == v
        } else {
            (u - v).abs() <= tol * (v.abs() + floor)
        };
        assert!(ok, "{what}[{i}]: {u} vs {v}");
    }
}

/// One sharded computation against the unsharded call: loss, row losses, lse, gradient.
#[allow(clippy::too_many_arguments)]
fn check(
    k: &Kernels,
    g: &mut StdRng,
    ctx: &str,
    z: &[f32],
    c: usize,
    targets: &[i64],
    opts: &CrossEntropyOptions<'_>,
    shards: &[(usize, usize)],
) {
    let rows = targets.len();
    // Unsharded.
    let mut grad = vec![0.0f32; z.len()];
    let (mut rl, mut lse) = (vec![0.0f32; rows], vec![0.0f32; rows]);
    let want = k
        .cross_entropy_with(
            Logits::Grad(z, &mut grad),
            Targets::Classes(targets),
            c,
            opts,
            &mut CrossEntropyOutputs {
                row_loss: Some(&mut rl),
                lse: Some(&mut lse),
                argmax: None,
            },
        )
        .unwrap();
    // Every shard's states, merged in a random order.
    let weights = opts.weight;
    let shard_opts = |off: usize, len: usize| {
        let mut o = *opts;
        o.weight = weights.map(|w| &w[off..off + len]);
        o
    };
    let mut keeps: Vec<Vec<f32>> = Vec::new();
    let own: Vec<Vec<RowState>> = shards
        .iter()
        .map(|&(off, len)| {
            let mut st = vec![RowState::EMPTY; rows];
            let zs = columns(z, c, off, len);
            let mut keep = vec![0.0f32; zs.len()];
            k.cross_entropy_shard_states(
                &zs,
                len,
                Shard::new(off, c),
                targets,
                &shard_opts(off, len),
                &mut st,
                &mut keep,
            )
            .unwrap();
            keeps.push(keep);
            st
        })
        .collect();
    let mut order: Vec<usize> = (0..shards.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, g.gen_range(0..=i));
    }
    let mut merged = own[order[0]].clone();
    for &i in &order[1..] {
        merge_states(&mut merged, &own[i]).unwrap();
    }
    let (mut rl2, mut lse2) = (vec![0.0f32; rows], vec![0.0f32; rows]);
    let got = finalize_ce_states(
        &merged,
        targets,
        c,
        opts,
        CrossEntropyOutputs {
            row_loss: Some(&mut rl2),
            lse: Some(&mut lse2),
            argmax: None,
        },
    )
    .unwrap();
    near(
        &format!("{ctx} loss"),
        &[got.loss],
        &[want.loss],
        2e-6,
        1e-6,
    );
    assert_eq!(got.rows_used, want.rows_used, "{ctx}: rows used");
    assert!(
        (got.denominator - want.denominator).abs() <= 1e-9 * want.denominator.abs().max(1.0),
        "{ctx}: denominator {} vs {}",
        got.denominator,
        want.denominator
    );
    near(&format!("{ctx} row loss"), &rl2, &rl, 2e-6, 1e-6);
    for r in 0..rows {
        if opts.ignore_index == Some(targets[r]) {
            assert!(lse2[r].is_nan(), "{ctx}: an ignored row's lse is NaN");
        } else {
            near(
                &format!("{ctx} lse row {r}"),
                &lse2[r..r + 1],
                &lse[r..r + 1],
                2e-6,
                1.0,
            );
        }
    }
    // Every shard's gradient columns.
    let gmax = grad
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f32, |a, v| a.max(v.abs()));
    for (i, &(off, len)) in shards.iter().enumerate() {
        let zs = columns(z, c, off, len);
        let mut d = keeps[i].clone();
        k.cross_entropy_shard_backward(
            &zs,
            len,
            Shard::new(off, c),
            targets,
            &shard_opts(off, len),
            &own[i],
            &merged,
            &mut d,
        )
        .unwrap();
        let want_cols = columns(&grad, c, off, len);
        near(
            &format!("{ctx} gradient of shard {off}+{len}"),
            &d,
            &want_cols,
            1e-5,
            gmax.max(1e-30),
        );
    }
}

per_tier! {
    matches_unsharded => |k: &Kernels| {
        let mut g = common::rng(2112);
        for &(rows, c) in &[(7usize, 10usize), (5, 1000), (3, 32000), (2, 128256)] {
            let z = common::logits(&mut g, rows * c, 6.0);
            let mut targets: Vec<i64> = (0..rows).map(|_| g.gen_range(0..c) as i64).collect();
            targets[rows / 2] = -100;
            let w: Vec<f32> = (0..c).map(|_| g.gen_range(0.1..2.0)).collect();
            let rs: Vec<f32> = (0..rows).map(|_| g.gen_range(-1.0..1.0)).collect();
            let base = CrossEntropyOptions::default();
            let options = [
                ("default", base),
                ("weights", base.weight(&w)),
                ("smoothing", base.label_smoothing(0.1)),
                ("weights+smoothing+z-loss", base.weight(&w).label_smoothing(0.2).z_loss(1e-3)),
                ("softcap", base.softcap(4.0).label_smoothing(0.05)),
                ("sum", base.reduction(Reduction::Sum).weight(&w).label_smoothing(0.1)),
                ("none+row_scale", base.reduction(Reduction::None).row_scale(&rs).z_loss(0.01)),
                ("scale", base.scale(0.5).label_smoothing(0.3)),
            ];
            for (name, opts) in &options {
                for parts in [1usize, 2, 3, 8] {
                    let shards = split(&mut g, c, parts);
                    let ctx = format!("{} {rows}x{c} {name} shards {shards:?}", k.isa());
                    check(k, &mut g, &ctx, &z, c, &targets, opts, &shards);
                }
            }
        }
    },

    special_values => |k: &Kernels| {
        let mut g = common::rng(77);
        let (rows, c) = (6usize, 40usize);
        let mut z = common::logits(&mut g, rows * c, 3.0);
        let targets: Vec<i64> = vec![3, 17, 25, 39, 0, 8];
        // Row 0: masked classes (-inf) spread over the vocabulary, not the target.
        for j in [0usize, 5, 20, 33] {
            z[j] = f32::NEG_INFINITY;
        }
        // Row 1: every class of 20..40 masked (a whole shard of -inf below).
        for j in 20..40 {
            z[c + j] = f32::NEG_INFINITY;
        }
        // Row 2: a NaN.
        z[2 * c + 30] = f32::NAN;
        // Row 3: a +inf.
        z[3 * c + 2] = f32::INFINITY;
        // Row 4: huge logits (the terms relative to the maximum).
        for v in &mut z[4 * c..5 * c] {
            *v += 3.0e4;
        }
        let shards = [(0usize, 20usize), (20, 0), (20, 20)];
        for opts in [
            CrossEntropyOptions::default(),
            CrossEntropyOptions::default().z_loss(1e-4),
        ] {
            let ctx = format!("{} special {opts:?}", k.isa());
            check(k, &mut g, &ctx, &z, c, &targets, &opts, &shards);
        }
        // With label smoothing a masked class makes the loss +inf, sharded or not.
        let opts = CrossEntropyOptions::default().label_smoothing(0.1);
        let zz = z[..c].to_vec();
        check(k, &mut g, "smoothing with -inf", &zz, c, &targets[..1], &opts, &shards);
    },
}

#[test]
fn errors() {
    let k = Kernels::best();
    let z = [0.0f32; 8];
    let opts = CrossEntropyOptions::default();
    let mut st = [RowState::EMPTY; 2];
    let mut kp = [0.0f32; 8];
    // The shard must lie in the vocabulary; the targets index the vocabulary.
    let e = k
        .cross_entropy_shard_states(&z, 4, Shard::new(2, 5), &[0i64, 1], &opts, &mut st, &mut kp)
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidOption { name: "shard", .. }),
        "{e}"
    );
    let e = k
        .cross_entropy_shard_states(&z, 4, Shard::new(0, 5), &[0i64, 5], &opts, &mut st, &mut kp)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadLabel {
                row: 1,
                label: 5,
                classes: 5
            }
        ),
        "{e}"
    );
    // The weights are the shard's.
    let w = [1.0f32; 5];
    let e = k
        .cross_entropy_shard_states(
            &z,
            4,
            Shard::new(0, 5),
            &[0i64, 1],
            &opts.weight(&w),
            &mut st,
            &mut kp,
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::LengthMismatch { arg: "weight", .. }),
        "{e}"
    );
    // The kept values: one per logit.
    let e = k
        .cross_entropy_shard_states(
            &z,
            4,
            Shard::new(0, 5),
            &[0i64, 1],
            &opts,
            &mut st,
            &mut kp[..7],
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::LengthMismatch { arg: "keep", .. }),
        "{e}"
    );
    assert!(kp.iter().all(|&v| v == 0.0), "nothing written on an error");
    assert!(
        st.iter().all(|s| *s == RowState::EMPTY),
        "nothing written on an error"
    );
    // States not merged over every shard: class 4 lies outside this shard.
    k.cross_entropy_shard_states(&z, 4, Shard::new(0, 5), &[0i64, 4], &opts, &mut st, &mut kp)
        .unwrap();
    let e =
        finalize_ce_states(&st, &[0i64, 4], 5, &opts, CrossEntropyOutputs::default()).unwrap_err();
    assert!(
        matches!(e, Error::InvalidOption { name: "states", .. }),
        "{e}"
    );
    let mut d = [9.0f32; 8];
    let e = k
        .cross_entropy_shard_backward(&z, 4, Shard::new(0, 5), &[0i64, 4], &opts, &st, &st, &mut d)
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidOption { name: "states", .. }),
        "{e}"
    );
    assert!(d.iter().all(|&v| v == 9.0), "nothing written on an error");
    // Reduction::None needs the row losses; no argmax from states.
    let none = opts.reduction(Reduction::None);
    let e =
        finalize_ce_states(&st, &[0i64, 1], 5, &none, CrossEntropyOutputs::default()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::MissingOutput {
                arg: "row_loss",
                ..
            }
        ),
        "{e}"
    );
    let mut am = [0u32; 2];
    let e = finalize_ce_states(
        &st,
        &[0i64, 1],
        5,
        &opts,
        CrossEntropyOutputs {
            argmax: Some(&mut am),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::InvalidOption { name: "argmax", .. }),
        "{e}"
    );
    // A shard of no classes: empty states carrying a zero weight sum.
    let mut st0 = [RowState::EMPTY; 2];
    k.cross_entropy_shard_states(
        &[],
        0,
        Shard::new(5, 5),
        &[0i64, 1],
        &opts,
        &mut st0,
        &mut [],
    )
    .unwrap();
    assert!(st0.iter().all(|s| *s == RowState::EMPTY));
}

/// By hand, from the formulas: one row, logits (0, ln 3 | ln 2) split 2 + 1, target 1,
/// weights (1, 2 | 4), smoothing 0.3, z-loss 0.1. `s = 1 + 3 + 2 = 6`, `lse = ln 6`;
/// loss = `(1 - eps) w_t (lse - z_t) + (eps / C) sum_c w_c (lse - z_c) + zl lse^2`.
#[test]
fn by_hand() {
    let k = Kernels::best();
    let (l3, l2, l6) = (3f64.ln(), 2f64.ln(), 6f64.ln());
    let w = [1.0f32, 2.0, 4.0];
    let (eps, zl) = (0.3f64, 0.1f64);
    let opts = CrossEntropyOptions::default()
        .label_smoothing(eps as f32)
        .z_loss(zl as f32)
        .reduction(Reduction::Sum);
    let t = [1i64];
    let (mut a, mut b) = ([RowState::EMPTY], [RowState::EMPTY]);
    // The second shard's kept values, then its gradient.
    let mut d = [0.0f32];
    k.cross_entropy_shard_states(
        &[0.0, l3 as f32],
        2,
        Shard::new(0, 3),
        &t,
        &opts.weight(&w[..2]),
        &mut a,
        &mut [0.0; 2],
    )
    .unwrap();
    k.cross_entropy_shard_states(
        &[l2 as f32],
        1,
        Shard::new(2, 3),
        &t,
        &opts.weight(&w[2..]),
        &mut b,
        &mut d,
    )
    .unwrap();
    merge_states(&mut a, &b).unwrap();
    let got = finalize_ce_states(&a, &t, 3, &opts, CrossEntropyOutputs::default()).unwrap();
    let want = (1.0 - eps) * 2.0 * (l6 - l3)
        + eps / 3.0 * (1.0 * l6 + 2.0 * (l6 - l3) + 4.0 * (l6 - l2))
        + zl * l6 * l6;
    assert!(
        (got.loss_f64 - want).abs() < 1e-6,
        "{} vs {want}",
        got.loss_f64
    );
    // Gradient of the second shard's class 2: p_2 (A + 2 zl lse) - (eps / C) w_2, with
    // A = (1 - eps) w_t + (eps / C) sum w, p_2 = 2 / 6.
    k.cross_entropy_shard_backward(
        &[l2 as f32],
        1,
        Shard::new(2, 3),
        &t,
        &opts.weight(&w[2..]),
        &b,
        &a,
        &mut d,
    )
    .unwrap();
    let a0 = (1.0 - eps) * 2.0 + eps / 3.0 * 7.0;
    let want = 2.0 / 6.0 * (a0 + 2.0 * zl * l6) - eps / 3.0 * 4.0;
    assert!((d[0] as f64 - want).abs() < 1e-6, "{} vs {want}", d[0]);
}
