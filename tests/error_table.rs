//! The error table: every bad input the public API rejects, and the exact error (variant,
//! fields and `Display` message) it gets. One test per row. `docs/errors.md` is generated from
//! the rows: `errors_md_is_current` fails if the file differs from what the rows give (by one
//! byte); `SOFTMAX_KERNELS_BLESS=1 cargo test --release --test error_table errors_md_is_current`
//! rewrites it.
//!
//! Calls through `Kernels` run on every available tier, which must agree; where a free
//! function or a `reference` function exists, the row calls it too. Rows that need a process
//! environment (`SOFTMAX_KERNELS_ISA`) run this test binary again as a child.

#[path = "common/child.rs"]
mod child;

use softmax_kernels::{
    finalize_ce_states, finalize_states, reference, CrossEntropyOptions, CrossEntropyOutputs,
    Error, Isa, Kernels, LinearCeOptions, LinearCeOutputs, LinearTokenOptions, Logits, MatMut,
    MatRef, MatrixLayout, OutputLayer, Reduction, RowState, Sgd, SgdOptions, Shard, StridedLogits,
    StridedTargets, Targets, TokenGrads, TokenLogprobOptions, TokenLogprobOutputs, TokenSaved,
};

/// Runs `f` on every available tier; all must return the same; returns that.
fn tiers<T: std::fmt::Debug>(
    f: impl Fn(&'static Kernels) -> Result<T, Error>,
) -> Result<(), Error> {
    let mut first: Option<Result<(), Error>> = None;
    for isa in Isa::available() {
        let r = f(Kernels::for_isa(isa).unwrap()).map(|_| ());
        match &first {
            None => first = Some(r),
            Some(p) => assert_eq!(&r, p, "tier {isa} disagrees"),
        }
    }
    first.unwrap()
}

/// Compares a row's error and message. `{tiers}` in a message stands for the tiers this CPU
/// runs (`scalar, portable, avx2` on an AVX2 machine), which the tier errors list.
fn check(id: &str, got: Result<(), Error>, want: Error, msg: &str) {
    assert_eq!(got, Err(want.clone()), "row {id}");
    let tiers: Vec<&str> = Isa::available().into_iter().map(Isa::name).collect();
    let msg = msg.replace("{tiers}", &tiers.join(", "));
    assert_eq!(want.to_string(), msg, "row {id}: Display");
}

/// `[rows, cols]` zeros.
fn z(n: usize) -> Vec<f32> {
    vec![0.0; n]
}

fn ce(
    k: &Kernels,
    x: &[f32],
    t: &[i64],
    cols: usize,
    o: &CrossEntropyOptions<'_>,
) -> Result<f32, Error> {
    k.cross_entropy(x, t, cols, o)
}

macro_rules! table {
    ($( $id:ident | $input:literal | $call:expr => $err:expr, $msg:literal; )*) => {
        $(
            #[test]
            fn $id() {
                let got: Result<(), Error> = $call;
                check(stringify!($id), got, $err, $msg);
            }
        )*

        /// `(test, bad input, error, message)` of every row.
        const ROWS: &[(&str, &str, &str, &str)] = &[
            $( (stringify!($id), $input, stringify!($err), $msg), )*
        ];
    };
}

table! {
    // ---- softmax family (same checks for softmax, log_softmax, their _with / _inplace
    // variants; logsumexp; the backward passes) ----
    softmax_cols_zero
        | "`cols == 0` (softmax, log_softmax, logsumexp, backward, cross-entropy)"
        | {
            let r = tiers(|k| k.softmax(&[1.0, 2.0], &mut z(2), 0));
            assert_eq!(softmax_kernels::softmax(&[1.0, 2.0], &mut z(2), 0), r);
            assert_eq!(reference::log_softmax(&[1.0, 2.0], &mut z(2), 0), r);
            assert_eq!(tiers(|k| k.logsumexp(&[1.0], &mut z(1), 0)), r);
            assert_eq!(tiers(|k| k.softmax_backward(&[], &[], &mut [], 0)), r);
            assert_eq!(tiers(|k| ce(k, &[], &[], 0, &Default::default())), r);
            r
        }
        => Error::ZeroDim { arg: "cols" }, "`cols` is 0; it must be at least 1";
    softmax_cols_zero_first
        | "`cols == 0` together with other bad lengths: `cols` is reported first"
        | tiers(|k| k.softmax(&z(7), &mut z(3), 0))
        => Error::ZeroDim { arg: "cols" }, "`cols` is 0; it must be at least 1";
    softmax_x_not_multiple
        | "`x.len()` not a multiple of `cols` (7 floats, cols 3)"
        | {
            let r = tiers(|k| k.softmax(&z(7), &mut z(7), 3));
            assert_eq!(tiers(|k| k.log_softmax_inplace(&mut z(7), 3)), r);
            assert_eq!(tiers(|k| k.logsumexp(&z(7), &mut z(2), 3)), r);
            r
        }
        => Error::NotMultiple { arg: "x", len: 7, cols: 3 },
        "`x` has length 7, which is not a multiple of cols = 3";
    softmax_y_length
        | "`y.len() != x.len()` (softmax, log_softmax)"
        | {
            let r = tiers(|k| k.softmax(&z(6), &mut z(5), 3));
            assert_eq!(tiers(|k| k.log_softmax(&z(6), &mut z(5), 3)), r);
            r
        }
        => Error::LengthMismatch { arg: "y", expected: 6, actual: 5 },
        "`y` has length 5, but the other arguments need length 6";
    logsumexp_out_length
        | "logsumexp: `out.len() != rows`"
        | tiers(|k| k.logsumexp(&z(6), &mut z(3), 3))
        => Error::LengthMismatch { arg: "out", expected: 2, actual: 3 },
        "`out` has length 3, but the other arguments need length 2";
    strided_view_leading_dim
        | "`MatRef::new` / `MatMut::new`: `ld < cols`"
        | {
            let r = MatRef::new(&z(6), 2, 3, 2).map(|_| ());
            assert_eq!(MatMut::new(&mut z(6), 2, 3, 2).map(|_| ()), r);
            r
        }
        => Error::LeadingDim { arg: "data", ld: 2, cols: 3 },
        "`data` has leading dimension 2, less than its row length 3";
    strided_view_length
        | "`MatRef::new` / `MatMut::new`: a slice of neither `rows * ld` nor `(rows - 1) * ld + cols` floats"
        | MatRef::new(&z(6), 2, 3, 4).map(|_| ())
        => Error::MatrixLength { arg: "data", rows: 2, cols: 3, ld: 4, actual: 6 },
        "`data` has length 6, but a [2, 3] matrix with leading dimension 4 needs 8 floats (7 without the last row's padding)";
    strided_shape_mismatch
        | "strided softmax family: an output (or `dy`, `dx`) view of another shape than the input"
        | {
            let x = z(6);
            let r = tiers(|k| {
                let mut y = z(9);
                k.softmax_strided(
                    MatRef::new(&x, 2, 3, 3).unwrap(),
                    MatMut::new(&mut y, 3, 3, 3).unwrap(),
                    Default::default(),
                )
            });
            assert_eq!(
                tiers(|k| {
                    let mut y = z(9);
                    k.log_softmax_strided(
                        MatRef::new(&x, 2, 3, 3).unwrap(),
                        MatMut::new(&mut y, 3, 3, 3).unwrap(),
                        Default::default(),
                    )
                }),
                r
            );
            r
        }
        => Error::ShapeMismatch { arg: "y", expected: (2, 3), actual: (3, 3) },
        "`y` is [3, 3], but the other arguments need [2, 3]";
    strided_ce_grad_shape
        | "`cross_entropy_strided`: a gradient (or probability-target) view of another shape than the logits"
        | {
            let x = z(6);
            tiers(|k| {
                let mut g = z(4);
                k.cross_entropy_strided(
                    StridedLogits::Grad(
                        MatRef::new(&x, 2, 3, 3).unwrap(),
                        MatMut::new(&mut g, 2, 2, 2).unwrap(),
                    ),
                    StridedTargets::Classes(&[0i64, 1]),
                    &CrossEntropyOptions::default(),
                    &mut CrossEntropyOutputs::default(),
                )
            })
        }
        => Error::ShapeMismatch { arg: "grad", expected: (2, 3), actual: (2, 2) },
        "`grad` is [2, 2], but the other arguments need [2, 3]";
    backward_y_not_multiple
        | "backward: `y.len()` not a multiple of `cols`"
        | {
            let r = tiers(|k| k.softmax_backward(&z(7), &z(7), &mut z(7), 3));
            assert_eq!(tiers(|k| k.log_softmax_backward(&z(7), &z(7), &mut z(7), 3)), r);
            r
        }
        => Error::NotMultiple { arg: "y", len: 7, cols: 3 },
        "`y` has length 7, which is not a multiple of cols = 3";
    backward_dy_length
        | "backward: `dy.len() != y.len()`"
        | tiers(|k| k.softmax_backward(&z(6), &z(5), &mut z(6), 3))
        => Error::LengthMismatch { arg: "dy", expected: 6, actual: 5 },
        "`dy` has length 5, but the other arguments need length 6";
    backward_dx_length
        | "backward: `dx.len() != y.len()`"
        | tiers(|k| k.log_softmax_backward(&z(6), &z(6), &mut z(9), 3))
        => Error::LengthMismatch { arg: "dx", expected: 6, actual: 9 },
        "`dx` has length 9, but the other arguments need length 6";
    exp_y_length
        | "`Kernels::exp` / `exp_nonpos`: `y.len() != x.len()`"
        | {
            let r = tiers(|k| k.exp(&z(3), &mut z(2)));
            assert_eq!(tiers(|k| k.exp_nonpos(&z(3), &mut z(2))), r);
            r
        }
        => Error::LengthMismatch { arg: "y", expected: 3, actual: 2 },
        "`y` has length 2, but the other arguments need length 3";

    // ---- cross-entropy (every entry point: cross_entropy, _fwd_bwd, _inplace, _probs, _ext) ----
    ce_logits_not_multiple
        | "cross-entropy: `logits.len()` not a multiple of `cols`"
        | tiers(|k| ce(k, &z(5), &[0, 0], 2, &CrossEntropyOptions::default()))
        => Error::NotMultiple { arg: "logits", len: 5, cols: 2 },
        "`logits` has length 5, which is not a multiple of cols = 2";
    ce_grad_length
        | "cross-entropy: `grad.len() != logits.len()`"
        | tiers(|k| k.cross_entropy_fwd_bwd(&z(4), &[0i64, 1], &mut z(3), 2, &CrossEntropyOptions::default()))
        => Error::LengthMismatch { arg: "grad", expected: 4, actual: 3 },
        "`grad` has length 3, but the other arguments need length 4";
    ce_label_smoothing_out_of_range
        | "`label_smoothing` outside `[0, 1]` (1.5)"
        | tiers(|k| ce(k, &z(2), &[0], 2, &CrossEntropyOptions::default().label_smoothing(1.5)))
        => Error::InvalidOption { name: "label_smoothing", value: "1.5".into(), expected: "in [0, 1]" },
        "option `label_smoothing` = 1.5 is invalid: it must be in [0, 1]";
    ce_label_smoothing_nan
        | "`label_smoothing` NaN"
        | tiers(|k| ce(k, &z(2), &[0], 2, &CrossEntropyOptions::default().label_smoothing(f32::NAN)))
        => Error::InvalidOption { name: "label_smoothing", value: "NaN".into(), expected: "in [0, 1]" },
        "option `label_smoothing` = NaN is invalid: it must be in [0, 1]";
    ce_z_loss_negative
        | "`z_loss` negative (-1)"
        | tiers(|k| ce(k, &z(2), &[0], 2, &CrossEntropyOptions::default().z_loss(-1.0)))
        => Error::InvalidOption { name: "z_loss", value: "-1".into(), expected: "finite and >= 0" },
        "option `z_loss` = -1 is invalid: it must be finite and >= 0";
    ce_z_loss_infinite
        | "`z_loss` infinite or NaN"
        | {
            let r = tiers(|k| ce(k, &z(2), &[0], 2, &CrossEntropyOptions::default().z_loss(f32::INFINITY)));
            assert!(matches!(
                tiers(|k| ce(k, &z(2), &[0], 2, &CrossEntropyOptions::default().z_loss(f32::NAN))),
                Err(Error::InvalidOption { name: "z_loss", .. })
            ));
            r
        }
        => Error::InvalidOption { name: "z_loss", value: "inf".into(), expected: "finite and >= 0" },
        "option `z_loss` = inf is invalid: it must be finite and >= 0";
    ce_softcap_zero
        | "`softcap` below `f32::MIN_POSITIVE` (0, 1e-45, ...), negative, infinite or NaN"
        | {
            let r = tiers(|k| ce(k, &z(2), &[0], 2, &CrossEntropyOptions::default().softcap(0.0)));
            for bad in [-1.0, f32::INFINITY, f32::NAN, -0.0, 1e-45, 1e-39] {
                assert!(matches!(
                    tiers(|k| ce(k, &z(2), &[0], 2, &CrossEntropyOptions::default().softcap(bad))),
                    Err(Error::InvalidOption { name: "softcap", .. })
                ));
            }
            r
        }
        => Error::InvalidOption {
            name: "softcap",
            value: "0".into(),
            expected: "finite and >= f32::MIN_POSITIVE (1.2e-38)",
        },
        "option `softcap` = 0 is invalid: it must be finite and >= f32::MIN_POSITIVE (1.2e-38)";
    ce_scale_not_finite
        | "`scale` NaN or infinite"
        | tiers(|k| ce(k, &z(2), &[0], 2, &CrossEntropyOptions::default().scale(f32::NAN)))
        => Error::InvalidOption { name: "scale", value: "NaN".into(), expected: "finite" },
        "option `scale` = NaN is invalid: it must be finite";
    ce_weight_length
        | "`weight.len() != cols`"
        | tiers(|k| ce(k, &z(4), &[0, 1], 2, &CrossEntropyOptions::default().weight(&[1.0; 3])))
        => Error::LengthMismatch { arg: "weight", expected: 2, actual: 3 },
        "`weight` has length 3, but the other arguments need length 2";
    ce_row_scale_without_none
        | "`row_scale` with a reduction other than `None`"
        | tiers(|k| ce(k, &z(4), &[0, 1], 2, &CrossEntropyOptions::default().row_scale(&[1.0; 2])))
        => Error::InvalidOption {
            name: "row_scale",
            value: "Some(<2 floats>)".into(),
            expected: "None unless reduction is Reduction::None",
        },
        "option `row_scale` = Some(<2 floats>) is invalid: it must be None unless reduction is Reduction::None";
    ce_row_scale_length
        | "`row_scale.len() != rows` (reduction `None`)"
        | tiers(|k| {
            let o = CrossEntropyOptions::default().reduction(Reduction::None).row_scale(&[1.0; 3]);
            let mut rl = z(2);
            let mut out = CrossEntropyOutputs { row_loss: Some(&mut rl), ..Default::default() };
            k.cross_entropy_with(Logits::Read(&z(4)), Targets::Classes(&[0i64, 1]), 2, &o, &mut out)
        })
        => Error::LengthMismatch { arg: "row_scale", expected: 2, actual: 3 },
        "`row_scale` has length 3, but the other arguments need length 2";
    ce_row_loss_length
        | "output `row_loss.len() != rows`"
        | tiers(|k| {
            let mut rl = z(3);
            let mut out = CrossEntropyOutputs { row_loss: Some(&mut rl), ..Default::default() };
            k.cross_entropy_with(Logits::Read(&z(4)), Targets::Classes(&[0i64, 1]), 2, &Default::default(), &mut out)
        })
        => Error::LengthMismatch { arg: "row_loss", expected: 2, actual: 3 },
        "`row_loss` has length 3, but the other arguments need length 2";
    ce_lse_length
        | "output `lse.len() != rows`"
        | tiers(|k| {
            let mut l = z(1);
            let mut out = CrossEntropyOutputs { lse: Some(&mut l), ..Default::default() };
            k.cross_entropy_with(Logits::Read(&z(4)), Targets::Classes(&[0i64, 1]), 2, &Default::default(), &mut out)
        })
        => Error::LengthMismatch { arg: "lse", expected: 2, actual: 1 },
        "`lse` has length 1, but the other arguments need length 2";
    ce_argmax_length
        | "output `argmax.len() != rows`"
        | tiers(|k| {
            let mut a = [0u32; 5];
            let mut out = CrossEntropyOutputs { argmax: Some(&mut a), ..Default::default() };
            k.cross_entropy_with(Logits::Read(&z(4)), Targets::Classes(&[0i64, 1]), 2, &Default::default(), &mut out)
        })
        => Error::LengthMismatch { arg: "argmax", expected: 2, actual: 5 },
        "`argmax` has length 5, but the other arguments need length 2";
    ce_none_without_row_loss
        | "`Reduction::None` without the `row_loss` output"
        | tiers(|k| ce(k, &z(4), &[0, 1], 2, &CrossEntropyOptions::default().reduction(Reduction::None)))
        => Error::MissingOutput {
            arg: "row_loss",
            reason: "Reduction::None returns the loss of every row there",
        },
        "`row_loss` must be given: Reduction::None returns the loss of every row there";
    ce_targets_length
        | "class targets: `targets.len() != rows`"
        | tiers(|k| ce(k, &z(4), &[0, 1, 1], 2, &Default::default()))
        => Error::LengthMismatch { arg: "targets", expected: 2, actual: 3 },
        "`targets` has length 3, but the other arguments need length 2";
    ce_probs_length
        | "probability targets: `probs.len() != logits.len()`"
        | tiers(|k| k.cross_entropy_probs(&z(4), &z(5), 2, &Default::default()))
        => Error::LengthMismatch { arg: "targets", expected: 4, actual: 5 },
        "`targets` has length 5, but the other arguments need length 4";
    ce_label_equal_to_cols
        | "label `== cols` (3 classes, row 1 has label 3)"
        | tiers(|k| ce(k, &z(6), &[0, 3], 3, &Default::default()))
        => Error::BadLabel { row: 1, label: 3, classes: 3 },
        "row 1 has label 3, which is neither a class in 0..3 nor the ignore_index";
    ce_label_negative
        | "negative label that is not the ignore index (-1)"
        | tiers(|k| ce(k, &z(6), &[-1, 0], 3, &Default::default()))
        => Error::BadLabel { row: 0, label: -1, classes: 3 },
        "row 0 has label -1, which is neither a class in 0..3 nor the ignore_index";
    ce_label_minus_100_without_ignore
        | "label -100 with `ignore_index: None`"
        | tiers(|k| ce(k, &z(6), &[0, -100], 3, &CrossEntropyOptions::default().ignore_index(None)))
        => Error::BadLabel { row: 1, label: -100, classes: 3 },
        "row 1 has label -100, which is neither a class in 0..3 nor the ignore_index";
    ce_label_unsigned_wrapped
        | "unsigned labels never equal a negative ignore index (`-100i64 as u8` = 156)"
        | tiers(|k| k.cross_entropy(&z(6), &[0u8, (-100i64) as u8], 3, &Default::default()))
        => Error::BadLabel { row: 1, label: 156, classes: 3 },
        "row 1 has label 156, which is neither a class in 0..3 nor the ignore_index";
    ce_label_u64_max
        | "label `u64::MAX` (reported exactly, as an i128)"
        | tiers(|k| k.cross_entropy(&z(3), &[u64::MAX], 3, &Default::default()))
        => Error::BadLabel { row: 0, label: u64::MAX as i128, classes: 3 },
        "row 0 has label 18446744073709551615, which is neither a class in 0..3 nor the ignore_index";
    ce_first_bad_label_nothing_written
        | "several bad labels: the first row is reported, and nothing is written"
        | tiers(|k| {
            let mut x = vec![1.0f32; 6];
            let mut out = [7.0f32; 3];
            let mut o = CrossEntropyOutputs { row_loss: Some(&mut out), ..Default::default() };
            let opts = CrossEntropyOptions::default().reduction(Reduction::None);
            let r = k.cross_entropy_with(Logits::InPlace(&mut x), Targets::Classes(&[0i32, 9, -5]), 2, &opts, &mut o);
            assert_eq!(x, [1.0; 6]);
            assert_eq!(out, [7.0; 3]);
            r
        })
        => Error::BadLabel { row: 1, label: 9, classes: 2 },
        "row 1 has label 9, which is neither a class in 0..2 nor the ignore_index";

    // ---- output layer updates ----
    linear_ld_less_than_cols
        | "`ld < D` (rank1_update: `ld = 2`, `y` of 3)"
        | {
            let r = tiers(|k| k.rank1_update(1.0, &[1.0; 2], &[1.0; 3], &mut z(6), MatrixLayout::new(2, 3).with_ld(2)));
            assert_eq!(softmax_kernels::rank1_update(1.0, &[1.0; 2], &[1.0; 3], &mut z(6), MatrixLayout::new(2, 3).with_ld(2)), r);
            r
        }
        => Error::LeadingDim { arg: "w", ld: 2, cols: 3 },
        "`w` has leading dimension 2, less than its row length 3";
    linear_w_length
        | "`W`'s slice neither `C * ld` nor `(C - 1) * ld + D` floats"
        | tiers(|k| k.rank1_update(1.0, &[1.0; 2], &[1.0; 3], &mut z(6), MatrixLayout::new(2, 3).with_ld(4)))
        => Error::MatrixLength { arg: "w", rows: 2, cols: 3, ld: 4, actual: 6 },
        "`w` has length 6, but a [2, 3] matrix with leading dimension 4 needs 8 floats (7 without the last row's padding)";
    linear_dw_length
        | "weight_grad: the same for `dw`"
        | tiers(|k| k.weight_grad(1.0, &z(2), &z(3), 0.0, &mut z(5), MatrixLayout::new(2, 3)))
        => Error::MatrixLength { arg: "dw", rows: 2, cols: 3, ld: 3, actual: 5 },
        "`dw` has length 5, but a [2, 3] matrix with leading dimension 3 needs 6 floats (6 without the last row's padding)";
    linear_size_overflow
        | "`C * ld` overflows usize (C = usize::MAX, ld = 2)"
        | tiers(|k| k.rank_k_update(1.0, &[], &[], &mut [], MatrixLayout::new(usize::MAX, 1).with_ld(2)))
        => Error::SizeOverflow { arg: "w" }, "the size of `w` overflows usize";
    linear_ld_above_isize_max
        | "`ld > isize::MAX` (strides go to sgemm as isize)"
        | tiers(|k| k.linear_forward(&[], &[0.0], MatrixLayout::new(1, 1).with_ld(isize::MAX as usize + 1), None, &mut []))
        => Error::SizeOverflow { arg: "w" }, "the size of `w` overflows usize";
    linear_delta_not_multiple
        | "`delta.len()` not a multiple of `C` (rank_k_update, weight_grad, sgd_step, bias_grad)"
        | {
            let r = tiers(|k| k.weight_grad(1.0, &z(5), &z(6), 0.0, &mut z(6), MatrixLayout::new(2, 3)));
            assert_eq!(tiers(|k| k.bias_grad(1.0, &z(5), 0.0, &mut z(2))), r);
            r
        }
        => Error::NotMultiple { arg: "delta", len: 5, cols: 2 },
        "`delta` has length 5, which is not a multiple of cols = 2";
    linear_a_length
        | "`a.len() != B * D` (B taken from `delta`)"
        | tiers(|k| k.rank_k_update(1.0, &z(4), &z(5), &mut z(6), MatrixLayout::new(2, 3)))
        => Error::LengthMismatch { arg: "a", expected: 6, actual: 5 },
        "`a` has length 5, but the other arguments need length 6";
    linear_c_zero_delta_nonempty
        | "`C == 0` and `delta` not empty (B taken from `a`)"
        | tiers(|k| k.weight_grad(1.0, &z(2), &z(6), 0.0, &mut [], MatrixLayout::new(0, 3)))
        => Error::LengthMismatch { arg: "delta", expected: 0, actual: 2 },
        "`delta` has length 2, but the other arguments need length 0";
    linear_bias_grad_empty_db
        | "bias_grad: `db` empty and `delta` not"
        | tiers(|k| k.bias_grad(1.0, &z(3), 0.0, &mut []))
        => Error::LengthMismatch { arg: "delta", expected: 0, actual: 3 },
        "`delta` has length 3, but the other arguments need length 0";
    linear_sgd_lr
        | "sgd_step: `lr` negative, NaN or infinite"
        | {
            let r = tiers(|k| k.sgd_step(-0.5, &z(2), &z(3), &mut z(6), MatrixLayout::new(2, 3), None));
            for bad in [f32::NAN, f32::INFINITY] {
                assert!(matches!(
                    tiers(|k| k.sgd_step(bad, &z(2), &z(3), &mut z(6), MatrixLayout::new(2, 3), None)),
                    Err(Error::InvalidOption { name: "lr", .. })
                ));
            }
            r
        }
        => Error::InvalidOption { name: "lr", value: "-0.5".into(), expected: "a finite number >= 0" },
        "option `lr` = -0.5 is invalid: it must be a finite number >= 0";
    linear_sgd_bias_length
        | "sgd_step: `bias.len() != C`"
        | tiers(|k| k.sgd_step(0.1, &z(2), &z(3), &mut z(6), MatrixLayout::new(2, 3), Some(&mut z(3))))
        => Error::LengthMismatch { arg: "bias", expected: 2, actual: 3 },
        "`bias` has length 3, but the other arguments need length 2";
    linear_forward_a_not_multiple
        | "linear_forward: `a.len()` not a multiple of `D`"
        | tiers(|k| k.linear_forward(&z(5), &z(6), MatrixLayout::new(2, 3), None, &mut z(2)))
        => Error::NotMultiple { arg: "a", len: 5, cols: 3 },
        "`a` has length 5, which is not a multiple of cols = 3";
    linear_forward_z_length
        | "linear_forward: `z.len() != B * C`"
        | tiers(|k| k.linear_forward(&z(6), &z(6), MatrixLayout::new(2, 3), None, &mut z(3)))
        => Error::LengthMismatch { arg: "z", expected: 4, actual: 3 },
        "`z` has length 3, but the other arguments need length 4";
    linear_forward_bias_length
        | "linear_forward: `b.len() != C`"
        | tiers(|k| k.linear_forward(&z(6), &z(6), MatrixLayout::new(2, 3), Some(&[0.0]), &mut z(4)))
        => Error::LengthMismatch { arg: "b", expected: 2, actual: 1 },
        "`b` has length 1, but the other arguments need length 2";
    linear_backward_da_length
        | "linear_backward_input: `da.len() != B * D`"
        | tiers(|k| k.linear_backward_input(&z(4), &z(6), MatrixLayout::new(2, 3), &mut z(5)))
        => Error::LengthMismatch { arg: "da", expected: 6, actual: 5 },
        "`da` has length 5, but the other arguments need length 6";

    // ---- fused linear cross-entropy (`linear_cross_entropy`, `Kernels::linear_cross_entropy`,
    // `Kernels::linear_cross_entropy_step`); A is [2, 2], W [3, 2] unless the row says ----
    lce_classes_zero
        | "fused linear cross-entropy: `W` with 0 rows (`C == 0`)"
        | {
            let r = tiers(|k| k.linear_cross_entropy(&z(4), &[], MatrixLayout::new(0, 2), None, Targets::Classes(&[0i64, 0]), &LinearCeOptions::default(), &mut LinearCeOutputs::default()));
            assert_eq!(softmax_kernels::linear_cross_entropy(&z(4), &[], MatrixLayout::new(0, 2), None, Targets::Classes(&[0i64, 0]), &LinearCeOptions::default(), &mut LinearCeOutputs::default()).map(|_| ()), r);
            r
        }
        => Error::ZeroDim { arg: "w rows (classes)" }, "`w rows (classes)` is 0; it must be at least 1";
    lce_chunk_zero
        | "fused linear cross-entropy: `chunk_rows`, `chunk_classes` or `chunk_bytes` 0"
        | {
            let lce = |o: LinearCeOptions<'static>| tiers(move |k| k.linear_cross_entropy(&z(4), &z(6), MatrixLayout::new(3, 2), None, Targets::Classes(&[0i64, 1]), &o, &mut LinearCeOutputs::default()));
            for (name, o) in [("chunk_classes", LinearCeOptions::default().chunk_classes(0)), ("chunk_bytes", LinearCeOptions::default().chunk_bytes(0))] {
                assert_eq!(lce(o), Err(Error::InvalidOption { name, value: "0".into(), expected: ">= 1" }));
            }
            lce(LinearCeOptions::default().chunk_rows(0))
        }
        => Error::InvalidOption { name: "chunk_rows", value: "0".into(), expected: ">= 1" },
        "option `chunk_rows` = 0 is invalid: it must be >= 1";
    lce_class_chunks_with_probs
        | "fused linear cross-entropy: class blocks (`chunk_classes` < C) with probability targets"
        | tiers(|k| k.linear_cross_entropy::<i64>(&z(4), &z(6), MatrixLayout::new(3, 2), None, Targets::Probs(&z(6)), &LinearCeOptions::default().chunk_classes(2), &mut LinearCeOutputs::default()))
        => Error::InvalidOption { name: "chunk_classes", value: "2".into(), expected: "C (whole rows) with probability targets" },
        "option `chunk_classes` = 2 is invalid: it must be C (whole rows) with probability targets";
    lce_a_not_multiple
        | "fused linear cross-entropy: `a.len()` not a multiple of `D`"
        | tiers(|k| k.linear_cross_entropy(&z(5), &z(6), MatrixLayout::new(3, 2), None, Targets::Classes(&[0i64, 1]), &LinearCeOptions::default(), &mut LinearCeOutputs::default()))
        => Error::NotMultiple { arg: "a", len: 5, cols: 2 },
        "`a` has length 5, which is not a multiple of cols = 2";
    lce_a_without_features
        | "fused linear cross-entropy: `D == 0` (B from the targets) and `a` not empty"
        | tiers(|k| k.linear_cross_entropy(&z(4), &[], MatrixLayout::new(3, 0), None, Targets::Classes(&[0i64, 1]), &LinearCeOptions::default(), &mut LinearCeOutputs::default()))
        => Error::LengthMismatch { arg: "a", expected: 0, actual: 4 },
        "`a` has length 4, but the other arguments need length 0";
    lce_bias_length
        | "fused linear cross-entropy: `bias.len() != C`"
        | tiers(|k| k.linear_cross_entropy(&z(4), &z(6), MatrixLayout::new(3, 2), Some(&z(2)), Targets::Classes(&[0i64, 1]), &LinearCeOptions::default(), &mut LinearCeOutputs::default()))
        => Error::LengthMismatch { arg: "bias", expected: 3, actual: 2 },
        "`bias` has length 2, but the other arguments need length 3";
    lce_da_length
        | "fused linear cross-entropy: output `da.len() != a.len()`"
        | tiers(|k| k.linear_cross_entropy(&z(4), &z(6), MatrixLayout::new(3, 2), None, Targets::Classes(&[0i64, 1]), &LinearCeOptions::default(), &mut LinearCeOutputs { da: Some(&mut z(3)), ..Default::default() }))
        => Error::LengthMismatch { arg: "da", expected: 4, actual: 3 },
        "`da` has length 3, but the other arguments need length 4";
    lce_dw_length
        | "fused linear cross-entropy: output `dw` not in `W`'s layout"
        | tiers(|k| k.linear_cross_entropy(&z(4), &z(6), MatrixLayout::new(3, 2), None, Targets::Classes(&[0i64, 1]), &LinearCeOptions::default(), &mut LinearCeOutputs { dw: Some(&mut z(5)), ..Default::default() }))
        => Error::MatrixLength { arg: "dw", rows: 3, cols: 2, ld: 2, actual: 5 },
        "`dw` has length 5, but a [3, 2] matrix with leading dimension 2 needs 6 floats (6 without the last row's padding)";
    lce_db_length
        | "fused linear cross-entropy: output `db.len() != C`"
        | tiers(|k| k.linear_cross_entropy(&z(4), &z(6), MatrixLayout::new(3, 2), None, Targets::Classes(&[0i64, 1]), &LinearCeOptions::default(), &mut LinearCeOutputs { db: Some(&mut z(4)), ..Default::default() }))
        => Error::LengthMismatch { arg: "db", expected: 3, actual: 4 },
        "`db` has length 4, but the other arguments need length 3";
    lce_bad_label_nothing_written
        | "fused linear cross-entropy: a bad label (nothing is written)"
        | tiers(|k| {
            let (mut da, mut dw, mut db) = (vec![7.0f32; 4], vec![7.0f32; 6], vec![7.0f32; 3]);
            let mut out = LinearCeOutputs { da: Some(&mut da), dw: Some(&mut dw), db: Some(&mut db), ..Default::default() };
            let r = k.linear_cross_entropy(&z(4), &z(6), MatrixLayout::new(3, 2), None, Targets::Classes(&[0i64, 3]), &LinearCeOptions::default(), &mut out);
            assert_eq!((da, dw, db), (vec![7.0; 4], vec![7.0; 6], vec![7.0; 3]));
            r
        })
        => Error::BadLabel { row: 1, label: 3, classes: 3 },
        "row 1 has label 3, which is neither a class in 0..3 nor the ignore_index";
    lce_step_accumulate
        | "`linear_cross_entropy_step` with `accumulate(true)` (W unchanged)"
        | tiers(|k| {
            let mut w = vec![0.5f32; 6];
            let mut opt = k.sgd(SgdOptions::new(0.1)).unwrap();
            let r = k.linear_cross_entropy_step(&z(4), &mut w, MatrixLayout::new(3, 2), None, Targets::Classes(&[0i64, 1]), &LinearCeOptions::default().accumulate(true), &mut opt, None);
            assert_eq!(w, [0.5; 6]);
            r
        })
        => Error::InvalidOption { name: "accumulate", value: "true".into(), expected: "false for a training step" },
        "option `accumulate` = true is invalid: it must be false for a training step";
    lce_step_reduction_none
        | "`linear_cross_entropy_step` with `Reduction::None`"
        | tiers(|k| {
            let mut opt = k.sgd(SgdOptions::new(0.1)).unwrap();
            let o = LinearCeOptions::new(CrossEntropyOptions::default().reduction(Reduction::None));
            k.linear_cross_entropy_step(&z(4), &mut z(6), MatrixLayout::new(3, 2), None, Targets::Classes(&[0i64, 1]), &o, &mut opt, None)
        })
        => Error::InvalidOption { name: "reduction", value: "None".into(), expected: "Mean or Sum for a training step" },
        "option `reduction` = None is invalid: it must be Mean or Sum for a training step";

    // ---- Sgd ----
    sgd_options_lr
        | "`SgdOptions::lr` negative / NaN / infinite (`Sgd::new`, `Kernels::sgd`, `OutputLayer::new`)"
        | Sgd::new(SgdOptions::new(-1.0)).map(|_| ())
        => Error::InvalidOption { name: "lr", value: "-1".into(), expected: "a finite number >= 0" },
        "option `lr` = -1 is invalid: it must be a finite number >= 0";
    sgd_options_momentum
        | "`momentum` negative or not finite"
        | SgdOptions::new(0.1).momentum(f32::NAN).validate()
        => Error::InvalidOption { name: "momentum", value: "NaN".into(), expected: "a finite number >= 0" },
        "option `momentum` = NaN is invalid: it must be a finite number >= 0";
    sgd_options_dampening
        | "`dampening` not finite"
        | SgdOptions::new(0.1).dampening(f32::NEG_INFINITY).validate()
        => Error::InvalidOption { name: "dampening", value: "-inf".into(), expected: "a finite number" },
        "option `dampening` = -inf is invalid: it must be a finite number";
    sgd_options_weight_decay
        | "`weight_decay` negative or not finite"
        | SgdOptions::new(0.1).weight_decay(-1e-4).validate()
        => Error::InvalidOption { name: "weight_decay", value: "-0.0001".into(), expected: "a finite number >= 0" },
        "option `weight_decay` = -0.0001 is invalid: it must be a finite number >= 0";
    sgd_options_nesterov
        | "`nesterov` without momentum, or with dampening"
        | {
            let r = SgdOptions::new(0.1).nesterov(true).validate();
            assert_eq!(SgdOptions::new(0.1).momentum(0.9).dampening(0.1).nesterov(true).validate(), r);
            r
        }
        => Error::InvalidOption {
            name: "nesterov",
            value: "true".into(),
            expected: "used with momentum > 0 and dampening = 0 (as PyTorch)",
        },
        "option `nesterov` = true is invalid: it must be used with momentum > 0 and dampening = 0 (as PyTorch)";
    sgd_set_lr
        | "`Sgd::set_lr` NaN"
        | Sgd::new(SgdOptions::new(0.1)).unwrap().set_lr(f32::NAN)
        => Error::InvalidOption { name: "lr", value: "NaN".into(), expected: "a finite number >= 0" },
        "option `lr` = NaN is invalid: it must be a finite number >= 0";
    sgd_state_shape
        | "momentum state built for one `W` shape, then a step on another"
        | {
            let mut o = Sgd::new(SgdOptions::new(0.1).momentum(0.9)).unwrap();
            o.apply_grad(&mut z(6), MatrixLayout::new(2, 3), &z(6)).unwrap();
            o.apply_grad(&mut z(6), MatrixLayout::new(3, 2), &z(6))
        }
        => Error::StateShape { arg: "w", expected: (2, 3), actual: (3, 2) },
        "`w` is [3, 2], but the optimizer's state was built for [2, 3] (call reset() to start over)";
    sgd_bias_state_shape
        | "momentum state built for one bias length, then another"
        | {
            let mut o = Sgd::new(SgdOptions::new(0.1).momentum(0.9)).unwrap();
            o.apply_bias_grad(&mut z(2), &z(2)).unwrap();
            o.apply_bias_grad(&mut z(3), &z(3))
        }
        => Error::StateShape { arg: "bias", expected: (1, 2), actual: (1, 3) },
        "`bias` is [1, 3], but the optimizer's state was built for [1, 2] (call reset() to start over)";
    sgd_apply_grad_length
        | "`Sgd::apply_grad` / `apply_bias_grad`: `grad` of the wrong length"
        | {
            let mut o = Sgd::new(SgdOptions::new(0.1)).unwrap();
            let r = o.apply_grad(&mut z(6), MatrixLayout::new(2, 3), &z(5));
            assert_eq!(o.apply_bias_grad(&mut z(6), &z(5)), r);
            r
        }
        => Error::LengthMismatch { arg: "grad", expected: 6, actual: 5 },
        "`grad` has length 5, but the other arguments need length 6";

    // ---- OutputLayer ----
    layer_inputs_zero
        | "`OutputLayer::new(0, classes, ..)`"
        | OutputLayer::new(0, 3, SgdOptions::new(0.1)).map(|_| ())
        => Error::ZeroDim { arg: "inputs" }, "`inputs` is 0; it must be at least 1";
    layer_classes_zero
        | "`OutputLayer::new(inputs, 0, ..)`"
        | OutputLayer::new(3, 0, SgdOptions::new(0.1)).map(|_| ())
        => Error::ZeroDim { arg: "classes" }, "`classes` is 0; it must be at least 1";
    layer_size_overflow
        | "`inputs * classes` overflows or exceeds `isize::MAX / 4`"
        | {
            let r = OutputLayer::new(usize::MAX, 2, SgdOptions::new(0.1)).map(|_| ());
            assert_eq!(OutputLayer::new(isize::MAX as usize / 4 + 1, 1, SgdOptions::new(0.1)).map(|_| ()), r);
            r
        }
        => Error::SizeOverflow { arg: "weight" }, "the size of `weight` overflows usize";
    layer_a_not_multiple
        | "`train_step` / `predict`: `a.len()` not a multiple of `inputs`"
        | OutputLayer::new(3, 2, SgdOptions::new(0.1)).unwrap().train_step(&z(4), &[0i64], 0.1).map(|_| ())
        => Error::NotMultiple { arg: "a", len: 4, cols: 3 },
        "`a` has length 4, which is not a multiple of cols = 3";
    layer_targets_length
        | "`train_step`: one label per sample"
        | OutputLayer::new(3, 2, SgdOptions::new(0.1)).unwrap().train_step(&z(6), &[0i64], 0.1).map(|_| ())
        => Error::LengthMismatch { arg: "targets", expected: 2, actual: 1 },
        "`targets` has length 1, but the other arguments need length 2";
    layer_lr
        | "`train_step`: `lr` invalid (the layer is unchanged)"
        | {
            let mut l = OutputLayer::new(3, 2, SgdOptions::new(0.1)).unwrap();
            l.init_xavier(1);
            let w = l.weight.clone();
            let r = l.train_step(&z(3), &[1i64], -1.0).map(|_| ());
            assert_eq!(l.weight, w);
            r
        }
        => Error::InvalidOption { name: "lr", value: "-1".into(), expected: "a finite number >= 0" },
        "option `lr` = -1 is invalid: it must be a finite number >= 0";
    layer_bad_label
        | "`train_step`: a label out of range (the layer is unchanged)"
        | {
            let mut l = OutputLayer::new(3, 2, SgdOptions::new(0.1)).unwrap();
            l.init_xavier(1);
            let (w, b) = (l.weight.clone(), l.bias.clone());
            let r = l.train_step(&[1.0; 3], &[2i64], 0.1).map(|_| ());
            assert_eq!((l.weight.clone(), l.bias.clone()), (w, b));
            r
        }
        => Error::BadLabel { row: 0, label: 2, classes: 2 },
        "row 0 has label 2, which is neither a class in 0..2 nor the ignore_index";
    layer_reduction_none
        | "`train_step_with` with `Reduction::None`"
        | OutputLayer::new(3, 2, SgdOptions::new(0.1)).unwrap()
            .train_step_with(&z(3), &[0i64], 0.1,
                &CrossEntropyOptions::default().reduction(Reduction::None),
                &mut CrossEntropyOutputs::default(), None)
            .map(|_| ())
        => Error::InvalidOption { name: "reduction", value: "None".into(), expected: "Mean or Sum for a training step" },
        "option `reduction` = None is invalid: it must be Mean or Sum for a training step";
    layer_da_length
        | "`train_step_with`: `da.len() != a.len()`"
        | OutputLayer::new(3, 2, SgdOptions::new(0.1)).unwrap()
            .train_step_with(&z(3), &[0i64], 0.1, &Default::default(),
                &mut CrossEntropyOutputs::default(), Some(&mut z(2)))
            .map(|_| ())
        => Error::LengthMismatch { arg: "da", expected: 3, actual: 2 },
        "`da` has length 2, but the other arguments need length 3";
    layer_predict_out_length
        | "`predict`: `out.len()` not one per sample"
        | OutputLayer::new(3, 2, SgdOptions::new(0.1)).unwrap().predict(&z(6), &mut [0u32; 3])
        => Error::LengthMismatch { arg: "out", expected: 2, actual: 3 },
        "`out` has length 3, but the other arguments need length 2";
    layer_forward_z_length
        | "`forward`: `z.len() != B * classes`"
        | OutputLayer::new(3, 2, SgdOptions::new(0.1)).unwrap().forward(&z(6), &mut z(3))
        => Error::LengthMismatch { arg: "z", expected: 4, actual: 3 },
        "`z` has length 3, but the other arguments need length 4";

    // ---- token log-probs ----
    token_temperature
        | "token log-probs: `temperature` 0, negative, NaN or infinite (forward, backward, fwd_bwd)"
        | {
            let o = TokenLogprobOptions::default().temperature(0.0);
            let r = tiers(|k| k.token_logprobs(&z(4), &[0i64, 1], 2, &o,
                TokenLogprobOutputs::new(&mut z(2))));
            assert_eq!(
                softmax_kernels::token_logprobs(&z(4), &[0i64, 1], 2, &o,
                    TokenLogprobOutputs::new(&mut z(2))),
                r
            );
            let saved = TokenSaved { lse: &[0.0; 2], entropy: None };
            assert_eq!(tiers(|k| k.token_logprobs_backward(&z(4), &[0i64, 1], 2, &o, saved,
                TokenGrads::default(), &mut z(4))), r);
            r
        }
        => Error::InvalidOption {
            name: "temperature",
            value: "0".into(),
            expected: "finite and >= f32::MIN_POSITIVE (1.2e-38)",
        },
        "option `temperature` = 0 is invalid: it must be finite and >= f32::MIN_POSITIVE (1.2e-38)";
    token_bad_label
        | "token log-probs: a token outside `0..cols` that is not the `ignore_index`"
        | tiers(|k| k.token_logprobs(&z(4), &[0i64, 2], 2, &TokenLogprobOptions::default(),
            TokenLogprobOutputs::new(&mut z(2))))
        => Error::BadLabel { row: 1, label: 2, classes: 2 },
        "row 1 has label 2, which is neither a class in 0..2 nor the ignore_index";
    token_output_length
        | "token log-probs: an output (`logp`, `entropy`, `lse`) without one entry per row"
        | tiers(|k| k.token_logprobs(&z(4), &[0i64, 1], 2, &TokenLogprobOptions::default(),
            TokenLogprobOutputs::new(&mut z(2)).entropy(&mut z(3))))
        => Error::LengthMismatch { arg: "entropy", expected: 2, actual: 3 },
        "`entropy` has length 3, but the other arguments need length 2";
    token_grads_length
        | "token log-probs backward / fwd_bwd: an upstream gradient without one entry per row"
        | tiers(|k| k.token_logprobs_fwd_bwd(&z(4), &[0i64, 1], 2,
            &TokenLogprobOptions::default(),
            TokenGrads { logp: Some(&[1.0]), entropy: None },
            TokenLogprobOutputs::new(&mut z(2)), &mut z(4)))
        => Error::LengthMismatch { arg: "grads.logp", expected: 2, actual: 1 },
        "`grads.logp` has length 1, but the other arguments need length 2";
    token_missing_saved_entropy
        | "token log-probs backward: an entropy gradient without the forward's entropy"
        | tiers(|k| k.token_logprobs_backward(&z(4), &[0i64, 1], 2,
            &TokenLogprobOptions::default(),
            TokenSaved { lse: &[0.0; 2], entropy: None },
            TokenGrads { logp: None, entropy: Some(&[1.0; 2]) }, &mut z(4)))
        => Error::MissingOutput {
            arg: "saved.entropy",
            reason: "the entropy's upstream gradient needs the forward's entropy",
        },
        "`saved.entropy` must be given: the entropy's upstream gradient needs the forward's entropy";

    // ---- vocabulary shards ----
    shard_outside_vocabulary
        | "vocabulary shards: classes `offset .. offset + cols` not inside `0..classes` (`token_shard_states`, `token_shard_backward`, `linear_token_shard_states`, `linear_token_shard_backward`, `cross_entropy_shard_states`, `cross_entropy_shard_backward`)"
        | {
            let o = TokenLogprobOptions::default();
            let r = tiers(|k| k.token_shard_states(&z(4), 2, Shard::new(3, 4), &[0i64, 1], &o,
                &mut [RowState::EMPTY; 2], &mut [0.0; 4]));
            assert_eq!(tiers(|k| k.linear_token_shard_states(&z(2), &z(4), MatrixLayout::new(2, 2),
                None, Shard::new(3, 4), &[0i64], &LinearTokenOptions::new(o), &mut [RowState::EMPTY])), r);
            assert_eq!(tiers(|k| k.cross_entropy_shard_states(&z(4), 2, Shard::new(3, 4), &[0i64, 1],
                &CrossEntropyOptions::default(), &mut [RowState::EMPTY; 2], &mut [0.0; 4])), r);
            r
        }
        => Error::InvalidOption {
            name: "shard",
            value: "offset 3 + cols 2".into(),
            expected: "a range of classes inside 0..classes",
        },
        "option `shard` = offset 3 + cols 2 is invalid: it must be a range of classes inside 0..classes";
    shard_states_length
        | "vocabulary shards: `states` without one entry per row"
        | tiers(|k| k.token_shard_states(&z(4), 2, Shard::new(0, 4), &[0i64, 1],
            &TokenLogprobOptions::default(), &mut [RowState::EMPTY; 3], &mut [0.0; 4]))
        => Error::LengthMismatch { arg: "states", expected: 2, actual: 3 },
        "`states` has length 3, but the other arguments need length 2";
    shard_states_not_merged_once
        | "`finalize_states`, `finalize_ce_states`, `cross_entropy_shard_backward`: a row whose merged state holds its target 0 or 2+ times (a shard missing or merged twice)"
        | {
            let r = finalize_states(&[RowState::EMPTY], &[1i64], 4, &TokenLogprobOptions::default(),
                TokenLogprobOutputs::new(&mut [0.0]));
            assert_eq!(finalize_ce_states(&[RowState::EMPTY], &[1i64], 4,
                &CrossEntropyOptions::default(), CrossEntropyOutputs::default()).map(|_| ()), r);
            r
        }
        => Error::InvalidOption {
            name: "states",
            value: "row 0 holds its token 0 times".into(),
            expected: "states merged over every shard exactly once",
        },
        "option `states` = row 0 holds its token 0 times is invalid: it must be states merged over every shard exactly once";

    // ---- the class bound ----
    too_many_classes
        | "more than `MAX_CLASSES` = `u32::MAX` classes: cross-entropy `cols` (here with no rows), the fused layer's `C` (here `D = 0`, every buffer empty), `OutputLayer::new`"
        | {
            let c = 1usize << 40;
            let r = tiers(|k| ce(k, &[], &[], c, &Default::default()));
            assert_eq!(
                tiers(|k| k.linear_cross_entropy(
                    &[],
                    &[],
                    MatrixLayout::new(c, 0),
                    None,
                    Targets::Classes(&[0i64]),
                    &LinearCeOptions::default(),
                    &mut LinearCeOutputs::default(),
                )),
                r
            );
            assert_eq!(OutputLayer::new(1, c, SgdOptions::new(0.1)).map(|_| ()), r);
            r
        }
        => Error::TooManyClasses { classes: 1 << 40, max: 4294967295 },
        "1099511627776 classes is more than the 4294967295 the kernels support (class indices are u32)";

    // ---- tiers and SOFTMAX_KERNELS_ISA ----
    isa_parse
        | "`\"avx9\".parse::<Isa>()`"
        | "avx9".parse::<Isa>().map(|_| ())
        => Error::InvalidOption {
            name: "isa",
            value: "\"avx9\"".into(),
            expected: "a tier name: scalar, portable, avx2 or avx512 (case and surrounding spaces are ignored)",
        },
        "option `isa` = \"avx9\" is invalid: it must be a tier name: scalar, portable, avx2 or avx512 (case and surrounding spaces are ignored)";
    isa_env_not_a_tier
        | "`SOFTMAX_KERNELS_ISA=avx9`: every free function (and `Kernels::active`, `OutputLayer::new`, `Sgd` steps)"
        | env_child("avx9")
        => Error::BadIsaEnv { value: "avx9".into(), reason: "not a tier name" },
        "SOFTMAX_KERNELS_ISA=\"avx9\" is rejected: not a tier name (this CPU runs {tiers}; names are case-insensitive, and an empty value means unset)";
    isa_env_not_utf8
        | "`SOFTMAX_KERNELS_ISA` not valid UTF-8 (bytes `ff fe`)"
        | env_child("\u{fffd}\u{fffd}")
        => Error::BadIsaEnv { value: "\u{fffd}\u{fffd}".into(), reason: "not valid UTF-8" },
        "SOFTMAX_KERNELS_ISA=\"\u{fffd}\u{fffd}\" is rejected: not valid UTF-8 (this CPU runs {tiers}; names are case-insensitive, and an empty value means unset)";
    isa_unavailable_display
        | "`Kernels::try_for_isa(Isa::Avx512)` on a CPU without AVX-512 (`{tiers}`: the tiers this CPU runs; on a CPU with AVX-512 only the message is checked)"
        | if Isa::Avx512.is_available() {
            Err(Error::IsaUnavailable { isa: Isa::Avx512 })
        } else {
            Kernels::try_for_isa(Isa::Avx512).map(|_| ())
        }
        => Error::IsaUnavailable { isa: Isa::Avx512 }, "the `avx512` tier is not available on this CPU (it runs {tiers})";
}

/// Runs the free functions in a child process with `SOFTMAX_KERNELS_ISA` set (to `value`, or
/// to the bytes `ff fe` for the non-UTF-8 row) and returns the error the child saw, which the
/// child checks is the same for every free function it calls.
fn env_child(value: &str) -> Result<(), Error> {
    use std::os::unix::ffi::OsStrExt;
    if std::env::var_os("ERROR_TABLE_CHILD").is_some() {
        return child_body();
    }
    let os: std::ffi::OsString = if value == "\u{fffd}\u{fffd}" {
        std::ffi::OsStr::from_bytes(&[0xff, 0xfe]).to_os_string()
    } else {
        value.into()
    };
    let out = child::self_command()
        .args([
            "child_reports_env_error",
            "--exact",
            "--nocapture",
            "--include-ignored",
        ])
        .env("ERROR_TABLE_CHILD", "1")
        .env("SOFTMAX_KERNELS_ISA", os)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The child prints the Debug of the error it saw on a line of its own.
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CHILD-ERROR "))
        .expect("child reported an error")
        .to_string();
    // Rebuild the expected error's Debug and compare through it.
    Err(parse_bad_isa(&line))
}

fn parse_bad_isa(debug: &str) -> Error {
    // `BadIsaEnv { value: "...", reason: "..." }`
    let value = debug
        .split("value: \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string();
    let reason = if debug.contains("not valid UTF-8") {
        "not valid UTF-8"
    } else if debug.contains("not a tier name") {
        "not a tier name"
    } else {
        "this CPU cannot run that tier"
    };
    Error::BadIsaEnv { value, reason }
}

fn child_body() -> Result<(), Error> {
    let e = softmax_kernels::softmax(&[0.0], &mut [0.0], 1).unwrap_err();
    let others = [
        softmax_kernels::log_softmax_inplace(&mut [0.0], 1).unwrap_err(),
        softmax_kernels::logsumexp(&[0.0], &mut [0.0], 1).unwrap_err(),
        softmax_kernels::cross_entropy(&[0.0], &[0i64], 1, &Default::default()).unwrap_err(),
        softmax_kernels::rank1_update(1.0, &[1.0], &[1.0], &mut [0.0], MatrixLayout::new(1, 1))
            .unwrap_err(),
        softmax_kernels::linear_forward(&[], &[], MatrixLayout::new(0, 0), None, &mut [])
            .unwrap_err(),
        Kernels::active().map(|_| ()).unwrap_err(),
        OutputLayer::new(1, 1, SgdOptions::new(0.1))
            .map(|_| ())
            .unwrap_err(),
        Sgd::new(SgdOptions::new(0.1))
            .unwrap()
            .apply_bias_grad(&mut [0.0], &[0.0])
            .unwrap_err(),
    ];
    for o in others {
        assert_eq!(o, e);
    }
    println!("CHILD-ERROR {e:?}");
    Err(e)
}

/// The child half of the environment rows.
#[test]
#[ignore = "run as a child process by the isa_env_* rows"]
fn child_reports_env_error() {
    if std::env::var_os("ERROR_TABLE_CHILD").is_some() {
        let _ = child_body();
    }
}

/// A tier this CPU lacks named in `SOFTMAX_KERNELS_ISA`: only checkable on such a CPU.
#[test]
fn isa_env_unavailable_tier_where_possible() {
    let Some(missing) = Isa::ALL.into_iter().find(|i| !i.is_available()) else {
        eprintln!("every tier is available here: the 'this CPU cannot run that tier' row is not checkable");
        return;
    };
    let got = env_child(missing.name());
    assert_eq!(
        got,
        Err(Error::BadIsaEnv {
            value: missing.name().into(),
            reason: "this CPU cannot run that tier"
        })
    );
}

/// The whole of `docs/errors.md`: a preamble and one Markdown row per [`ROWS`] entry.
fn errors_md() -> String {
    let mut md = String::from(ERRORS_MD_PREAMBLE);
    md.push_str("| bad input | error | message (`Display`) | test |\n");
    md.push_str("|---|---|---|---|\n");
    for (id, input, err, msg) in ROWS {
        let err = err.split_whitespace().collect::<Vec<_>>().join(" ");
        md.push_str(&format!("| {input} | `{err}` | {msg} | `{id}` |\n"));
    }
    md
}

const ERRORS_MD_PREAMBLE: &str = "\
# Errors

<!-- Generated by tests/error_table.rs; do not edit by hand. After changing a row there, run
     SOFTMAX_KERNELS_BLESS=1 cargo test --release --test error_table errors_md_is_current -->

Every public function of `softmax-kernels` checks its arguments before any kernel runs and
returns a typed `softmax_kernels::Error` naming the argument and the sizes; nothing is written
on an error, and no input makes a function panic (`tests/garbage.rs` drives every public
function with random garbage shapes, strides and options). Each row below is a test in
`tests/error_table.rs`, which also checks that this file is exactly what its rows generate.

";

/// `docs/errors.md` is exactly the table the rows generate (strict: any difference fails).
/// With `SOFTMAX_KERNELS_BLESS=1` the file is rewritten instead.
#[test]
fn errors_md_is_current() {
    assert!(ROWS.len() >= 50);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/errors.md");
    let want = errors_md();
    if std::env::var_os("SOFTMAX_KERNELS_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &want).expect("write docs/errors.md");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (generate it with SOFTMAX_KERNELS_BLESS=1)",
            path.display()
        )
    });
    if have != want {
        let line = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| have.lines().count().min(want.lines().count()));
        panic!(
            "docs/errors.md is not what tests/error_table.rs generates (first difference at line \
             {}):\n  file:      {:?}\n  generated: {:?}\nrun SOFTMAX_KERNELS_BLESS=1 cargo test \
             --release --test error_table errors_md_is_current to rewrite it",
            line + 1,
            have.lines().nth(line).unwrap_or("<end of file>"),
            want.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
}

/// Prints the table (Markdown) with `-- --nocapture`.
#[test]
fn table_markdown() {
    print!("{}", errors_md());
    assert!(ROWS.len() >= 50);
}
