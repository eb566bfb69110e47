//! The three places where the crate deliberately differs from PyTorch's `F.cross_entropy` /
//! `torch.argmax` (documented in `src/cross_entropy.rs`'s mapping table), each checked on
//! every tier against values derived by hand:
//!
//! * an ignored row holding NaN logits: loss 0 and gradient 0 (PyTorch's gradient is NaN);
//! * a `Mean` whose f32 row losses overflow when added: the rows are summed in f64, so the
//!   mean is finite (PyTorch: `inf`);
//! * the argmax output (and `stats.correct`) of a row holding NaN: the first index of the
//!   largest non-NaN logit (PyTorch's argmax returns the NaN's index).

mod common;

use softmax_kernels::{
    CrossEntropyOptions, CrossEntropyOutputs, Logits, OutputLayer, Reduction, SgdOptions, Targets,
};

#[test]
fn ignored_row_with_nan_has_zero_gradient() {
    // Row 0 is ignored and full of NaN; row 1 is [0, 0] with label 1: loss ln 2, gradient
    // (1/2, -1/2) for the mean over the one row used.
    for cols in [2usize, 37, 1000] {
        let mut x = vec![f32::NAN; 2 * cols];
        x[cols..].fill(0.0);
        let labels = [-100i64, 1];
        for k in common::tiers() {
            let mut g = vec![7.0f32; 2 * cols];
            let loss = k
                .cross_entropy_fwd_bwd(&x, &labels, &mut g, cols, &Default::default())
                .unwrap();
            let want = (cols as f64).ln();
            assert!(
                (loss as f64 - want).abs() <= 1e-6 * want,
                "[{}] cols {cols}: loss {loss}",
                k.isa()
            );
            assert!(
                g[..cols].iter().all(|&v| v == 0.0),
                "[{}] cols {cols}: ignored row's gradient {:?}",
                k.isa(),
                &g[..cols.min(8)]
            );
            let p = 1.0 / cols as f64;
            for (j, &v) in g[cols..].iter().enumerate() {
                let want = p - if j == 1 { 1.0 } else { 0.0 };
                assert!(
                    (v as f64 - want).abs() <= 1e-6,
                    "[{}] cols {cols}: grad[{j}] = {v}",
                    k.isa()
                );
            }
        }
    }
}

#[test]
fn mean_of_overflowing_row_losses_is_finite() {
    // Each row is [0, -3e38] with label 1: lse = 0 (exactly: exp(-3e38) underflows), so the
    // row's loss is 3e38. Two such rows sum to 6e38 > f32::MAX, but the mean is 3e38.
    let x = [0.0f32, -3e38, 0.0, -3e38];
    let labels = [1i64, 1];
    let want = 3e38f32 as f64;
    for k in common::tiers() {
        let mut rows = [0.0f32; 2];
        let mut out = CrossEntropyOutputs {
            row_loss: Some(&mut rows),
            ..Default::default()
        };
        let st = k
            .cross_entropy_with(
                Logits::Read(&x),
                Targets::Classes(&labels),
                2,
                &CrossEntropyOptions::default(),
                &mut out,
            )
            .unwrap();
        assert!(st.loss.is_finite(), "[{}] mean {}", k.isa(), st.loss);
        assert!(
            (st.loss_f64 - want).abs() <= 1e-6 * want,
            "[{}] mean {}",
            k.isa(),
            st.loss_f64
        );
        assert_eq!(rows, [3e38f32, 3e38], "[{}]", k.isa());
        // Sum is 6e38 in f64, which rounds to +inf in f32: the f64 result says what it was.
        let sum = CrossEntropyOptions::default().reduction(Reduction::Sum);
        let st = k
            .cross_entropy_with(
                Logits::Read(&x),
                Targets::Classes(&labels),
                2,
                &sum,
                &mut CrossEntropyOutputs::default(),
            )
            .unwrap();
        assert_eq!(st.loss, f32::INFINITY, "[{}]", k.isa());
        assert!((st.loss_f64 - 2.0 * want).abs() <= 1e-6 * want);
    }
}

#[test]
fn argmax_of_a_row_with_nan_is_the_largest_non_nan() {
    // (row, the first index of its largest non-NaN value)
    let short: [(&[f32], u32); 5] = [
        (&[1.0, f32::NAN, 3.0, 2.0], 2),
        (&[f32::NAN, f32::NAN], 0),
        (&[f32::NAN, 5.0, 5.0], 1),
        (&[f32::NAN, -1.0, f32::NEG_INFINITY], 1),
        (&[2.0, 1.0, f32::NAN], 0),
    ];
    let mut cases: Vec<(Vec<f32>, u32)> = short.iter().map(|(r, a)| (r.to_vec(), *a)).collect();
    // Long rows: NaN first, the maximum far away; NaN right after the maximum.
    for cols in [100usize, 1000, 70_000] {
        let mut r: Vec<f32> = (0..cols).map(|i| (i % 7) as f32).collect();
        r[0] = f32::NAN;
        r[cols / 2] = 50.0;
        r[cols / 2 + 1] = f32::NAN;
        cases.push((r, (cols / 2) as u32));
    }
    for (row, want) in &cases {
        let cols = row.len();
        for k in common::tiers() {
            let mut argmax = [u32::MAX];
            let mut out = CrossEntropyOutputs {
                argmax: Some(&mut argmax),
                ..Default::default()
            };
            let st = k
                .cross_entropy_with(
                    Logits::Read(row),
                    Targets::Classes(&[*want as i64]),
                    cols,
                    &CrossEntropyOptions::default(),
                    &mut out,
                )
                .unwrap();
            assert_eq!(argmax[0], *want, "[{}] cols {cols}", k.isa());
            assert_eq!(st.correct, Some(1), "[{}] cols {cols}", k.isa());
            assert!(st.loss.is_nan(), "[{}] a NaN row's loss is NaN", k.isa());
        }
    }
}

/// `OutputLayer::predict` follows the same rule: logits `[NaN, 5, 5]` (a NaN weight) predict
/// class 1, and `[-inf, NaN, -inf]` the first non-NaN maximum, class 0.
#[test]
fn layer_predict_skips_nan_logits() {
    for k in common::tiers() {
        let mut layer = OutputLayer::with_kernels(k, 1, 3, SgdOptions::new(0.1)).unwrap();
        layer.weight.copy_from_slice(&[f32::NAN, 5.0, 5.0]);
        let mut out = [u32::MAX; 2];
        layer.predict(&[1.0, -1.0], &mut out).unwrap();
        // Sample 2: logits [NaN, -5, -5]: class 1 again.
        assert_eq!(out, [1, 1], "[{}]", k.isa());
        layer
            .weight
            .copy_from_slice(&[f32::NEG_INFINITY, f32::NAN, f32::NEG_INFINITY]);
        layer.predict(&[1.0, 1.0], &mut out).unwrap();
        assert_eq!(out, [0, 0], "[{}]", k.isa());
    }
}
