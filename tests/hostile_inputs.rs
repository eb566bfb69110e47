//! Regression tests for the hostile-input audit (issue 16): each test failed (or aborted the
//! process) before its fix.
//!
//! * argmax past 2^24 classes: the SIMD tiers tracked indices in f32 lanes, so an index above
//!   2^24 came back rounded (`2^24 + 4` for `2^24 + 5`);
//! * a class count no buffer bounds (`D = 0` in the fused layer): `C = 2^60` aborted on an
//!   infallible allocation, `C = 2^40` ran for about 15 minutes; now `Error::TooManyClasses`;
//! * a failed `OutputLayer::train_step` changed the learning rate;
//! * `train_step_with` with `scale * B` overflowing reported `scale = inf`, a value the caller
//!   never passed.

mod common;

use softmax_kernels::{
    CrossEntropyOptions, CrossEntropyOutputs, Error, LinearCeOptions, LinearCeOutputs, Logits,
    MatrixLayout, OutputLayer, SgdOptions, Targets, MAX_CLASSES,
};

/// The first index of the maximum, by a plain scan (NaN-free input).
fn first_argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

const LONG: usize = (1 << 24) + 64;

/// Rows of `LONG` zeros with ones (the maxima) at the given places.
fn long_row(ones: &[usize]) -> Vec<f32> {
    let mut x = vec![0.0f32; LONG];
    for &i in ones {
        x[i] = 1.0;
    }
    x
}

/// The cross-entropy's argmax output and `stats.correct` on one long row, every tier.
#[test]
fn cross_entropy_argmax_past_2_pow_24_classes() {
    let cases: [&[usize]; 4] = [
        // The audit's reproducer.
        &[(1 << 24) + 5],
        // The last class.
        &[LONG - 1],
        // Ties: the first index wins, across the scan's blocks and within one.
        &[(1 << 20) + 3, 1 << 21, (1 << 24) + 5],
        &[(1 << 24) + 9, (1 << 24) + 17],
    ];
    for ones in cases {
        let x = long_row(ones);
        let want = first_argmax(&x);
        assert_eq!(want, ones[0]);
        for k in common::tiers() {
            for cap in [None, Some(30.0f32)] {
                let mut argmax = [0u32; 1];
                let mut out = CrossEntropyOutputs {
                    argmax: Some(&mut argmax),
                    ..Default::default()
                };
                let mut opts = CrossEntropyOptions::default();
                opts.softcap = cap;
                let labels = [want as i64];
                let st = k
                    .cross_entropy_with(
                        Logits::Read(&x),
                        Targets::Classes(&labels),
                        LONG,
                        &opts,
                        &mut out,
                    )
                    .unwrap();
                assert_eq!(
                    argmax[0] as usize,
                    want,
                    "[{}] ones at {ones:?}, cap {cap:?}",
                    k.isa()
                );
                assert_eq!(st.correct, Some(1), "[{}] ones at {ones:?}", k.isa());
            }
        }
    }
}

/// The fused layer's argmax in both chunking modes: `A = [1]`, `W` one column of zeros with
/// ones at the maxima, so the logits are `W`'s column.
#[test]
fn linear_cross_entropy_argmax_past_2_pow_24_classes() {
    let ones = [(1 << 24) + 5, (1 << 24) + 40];
    let w = long_row(&ones);
    let layout = MatrixLayout::new(LONG, 1);
    for k in common::tiers() {
        for (mode, opts) in [
            ("row chunks", LinearCeOptions::default().chunk_rows(1)),
            (
                "class blocks",
                LinearCeOptions::default().chunk_classes(1 << 22),
            ),
        ] {
            let mut argmax = [0u32; 1];
            let mut out = LinearCeOutputs::default();
            out.ce.argmax = Some(&mut argmax);
            let st = k
                .linear_cross_entropy(
                    &[1.0],
                    &w,
                    layout,
                    None,
                    Targets::Classes(&[ones[0] as i64]),
                    &opts,
                    &mut out,
                )
                .unwrap();
            assert_eq!(argmax[0] as usize, ones[0], "[{}] {mode}", k.isa());
            assert_eq!(st.correct, Some(1), "[{}] {mode}", k.isa());
        }
    }
}

/// `D = 0`: `A`, `W`, bias and outputs are all empty, so only the class bound stops `C`.
/// Before the fix `C = 2^60` aborted the process and `C = 2^40` ran for minutes.
#[cfg(target_pointer_width = "64")]
#[test]
fn fused_layer_with_no_features_rejects_class_counts_past_the_bound() {
    for c in [MAX_CLASSES + 1, 1 << 40, 1 << 60, usize::MAX] {
        let layout = MatrixLayout::new(c, 0);
        for k in common::tiers() {
            for opts in [
                LinearCeOptions::default(),
                LinearCeOptions::default().chunk_classes(1),
                LinearCeOptions::default().chunk_rows(1),
            ] {
                let r = k.linear_cross_entropy(
                    &[],
                    &[],
                    layout,
                    None,
                    Targets::Classes(&[0i64, 1]),
                    &opts,
                    &mut LinearCeOutputs::default(),
                );
                assert_eq!(
                    r.unwrap_err(),
                    Error::TooManyClasses {
                        classes: c,
                        max: MAX_CLASSES
                    },
                    "[{}] C = {c}",
                    k.isa()
                );
            }
            // The one-call SGD step takes the same road.
            let mut w: [f32; 0] = [];
            let mut opt = k.sgd(SgdOptions::new(0.1)).unwrap();
            let r = k.linear_cross_entropy_step(
                &[],
                &mut w,
                layout,
                None,
                Targets::Classes(&[0i64]),
                &LinearCeOptions::default(),
                &mut opt,
                None,
            );
            assert!(
                matches!(r, Err(Error::TooManyClasses { .. })),
                "[{}] step: {r:?}",
                k.isa()
            );
        }
    }
}

/// The same bound on the plain cross-entropy (no rows, so no buffer is needed) and on the
/// layer type; `MAX_CLASSES` itself is accepted.
#[cfg(target_pointer_width = "64")]
#[test]
fn cross_entropy_and_layer_reject_class_counts_past_the_bound() {
    for k in common::tiers() {
        for cols in [MAX_CLASSES + 1, 1 << 40] {
            let r = k.cross_entropy(&[], &[] as &[i64], cols, &CrossEntropyOptions::default());
            assert_eq!(
                r.unwrap_err(),
                Error::TooManyClasses {
                    classes: cols,
                    max: MAX_CLASSES
                },
                "[{}]",
                k.isa()
            );
        }
        let sum = CrossEntropyOptions::default().reduction(softmax_kernels::Reduction::Sum);
        assert_eq!(
            k.cross_entropy(&[], &[] as &[i64], MAX_CLASSES, &sum),
            Ok(0.0),
            "[{}] an empty batch of MAX_CLASSES classes",
            k.isa()
        );
    }
    let e = OutputLayer::new(1, MAX_CLASSES + 1, SgdOptions::new(0.1)).unwrap_err();
    assert_eq!(
        e,
        Error::TooManyClasses {
            classes: MAX_CLASSES + 1,
            max: MAX_CLASSES
        }
    );
    assert!(e.to_string().contains("u32"), "{e}");
}

/// A training step that fails leaves the layer as it was: weights, bias and learning rate.
#[test]
fn failed_train_step_leaves_the_learning_rate() {
    for k in common::tiers() {
        let mut layer = OutputLayer::with_kernels(k, 2, 3, SgdOptions::new(0.1)).unwrap();
        layer.init_xavier(7);
        let a = [1.0f32, -2.0, 0.5, 0.25];
        let (w0, b0) = (layer.weight.clone(), layer.bias.clone());
        // A bad label, a bad option, a bad output: each fails with lr = 0.5.
        let bad_label = layer.train_step(&a, &[0i64, 3], 0.5);
        assert!(matches!(bad_label, Err(Error::BadLabel { row: 1, .. })));
        let smooth = CrossEntropyOptions::default().label_smoothing(2.0);
        let bad_opt = layer.train_step_with(
            &a,
            &[0i64, 1],
            0.5,
            &smooth,
            &mut CrossEntropyOutputs::default(),
            None,
        );
        assert!(matches!(bad_opt, Err(Error::InvalidOption { .. })));
        let mut short = [0.0f32; 1];
        let bad_out = layer.train_step_with(
            &a,
            &[0i64, 1],
            0.5,
            &CrossEntropyOptions::default(),
            &mut CrossEntropyOutputs {
                row_loss: Some(&mut short),
                ..Default::default()
            },
            None,
        );
        assert!(matches!(bad_out, Err(Error::LengthMismatch { .. })));
        assert_eq!(layer.optimizer().options().lr, 0.1, "[{}]", k.isa());
        assert_eq!((&layer.weight, &layer.bias), (&w0, &b0), "[{}]", k.isa());
        // The next step runs with the old rate: the same result as a fresh layer's.
        let mut fresh = OutputLayer::with_kernels(k, 2, 3, SgdOptions::new(0.1)).unwrap();
        fresh.init_xavier(7);
        let l1 = layer.train_step(&a, &[0i64, 1], 0.1).unwrap();
        let l2 = fresh.train_step(&a, &[0i64, 1], 0.1).unwrap();
        assert_eq!(l1.to_bits(), l2.to_bits());
        assert_eq!(layer.weight, fresh.weight, "[{}]", k.isa());
    }
}

/// `scale * B` overflowing f32: the error names the scale as passed, and nothing changes.
#[test]
fn train_step_scale_overflow_reports_the_scale_passed() {
    for k in common::tiers() {
        let mut layer = OutputLayer::with_kernels(k, 1, 2, SgdOptions::new(0.1)).unwrap();
        let w0 = layer.weight.clone();
        let opts = CrossEntropyOptions::default().scale(1e38);
        let r = layer.train_step_with(
            &[1.0, 2.0, 3.0, 4.0],
            &[0i64, 1, 0, 1],
            0.5,
            &opts,
            &mut CrossEntropyOutputs::default(),
            None,
        );
        match r {
            Err(Error::InvalidOption { name, value, .. }) => {
                assert_eq!(name, "scale");
                assert_eq!(value, 1e38f32.to_string(), "[{}]", k.isa());
            }
            other => panic!("[{}] {other:?}", k.isa()),
        }
        assert_eq!(layer.optimizer().options().lr, 0.1);
        assert_eq!(layer.weight, w0);
        // A finite product still trains.
        let opts = CrossEntropyOptions::default().scale(1e30);
        assert!(layer
            .train_step_with(
                &[1.0, 2.0, 3.0, 4.0],
                &[0i64, 1, 0, 1],
                0.0,
                &opts,
                &mut CrossEntropyOutputs::default(),
                None,
            )
            .is_ok());
    }
}
