//! Regression tests for crate bugs found by the fuzz targets (`fuzz/`) and the garbage test
//! (`tests/garbage.rs`). Each test is a minimized reproduction; it failed when the bug was
//! found and passes since the fix (every one is fixed in `src/`). While a bug is open, the
//! fuzz target carries a narrowly scoped exclusion for it (marked `KNOWN CRATE BUG`), so that
//! fuzzing keeps finding other problems; none is needed now. The minimized fuzz inputs are
//! committed under `fuzz/corpus/<target>/regress-*`.

#[path = "common/child.rs"]
mod child;

use softmax_kernels::{
    CrossEntropyOptions, CrossEntropyOutputs, Isa, Kernels, Logits, OutputLayer, SgdOptions,
    Targets,
};

fn tiers() -> Vec<&'static Kernels> {
    Isa::available()
        .into_iter()
        .map(|i| Kernels::for_isa(i).expect("available"))
        .collect()
}

/// Found by `fuzz/` target `cross_entropy` (seed `cap-1e-45`). FIXED (the crate now rejects
/// `cap < f32::MIN_POSITIVE` with `Error::InvalidOption`); kept as a regression test.
///
/// `softcap` accepted any finite `cap > 0`, but the SIMD tiers multiply by `1 / cap` computed
/// in f32, which overflows to `+inf` for `cap < 1 / f32::MAX` (about 2.9e-39): a zero logit
/// became `0 * inf = NaN`, and the chain factor `1 - (z / cap)^2` became `-inf`, while the
/// reference (f64) gave a finite loss and a zero gradient.
///
/// Reproduction: logits `[0, 0]` and `[-9, 3]`, labels `[0, 1]`, `softcap(1e-45)`, Mean,
/// gradient into a separate buffer. The portable, AVX2 and AVX-512 tiers gave a NaN loss and
/// NaN / `-inf` gradients. Either fix passes: the same clean error from every tier, or values
/// that match the reference.
#[test]
fn softcap_with_tiny_cap_matches_reference() {
    let x = [0.0f32, 0.0, -9.0, 3.0];
    let labels = [0i64, 1];
    for cap in [1e-45f32, 1e-40, 2.0e-39, 1.0e-38, f32::MIN_POSITIVE] {
        let opts = CrossEntropyOptions::default().softcap(cap);
        let r = Kernels::for_isa(Isa::Scalar).unwrap();
        let mut gr = [0.0f32; 4];
        let want = r.cross_entropy_fwd_bwd(&x, &labels, &mut gr, 2, &opts);
        for k in tiers() {
            let mut g = [0.0f32; 4];
            let got = k.cross_entropy_fwd_bwd(&x, &labels, &mut g, 2, &opts);
            match (&got, &want) {
                (Err(a), Err(b)) => assert_eq!(a, b, "[{}] cap {cap:e}", k.isa()),
                (Ok(l), Ok(lr)) => {
                    assert!(lr.is_finite(), "reference loss {lr}");
                    assert!(
                        (l - lr).abs() <= 1e-6 * lr.abs().max(1.0),
                        "[{}] cap {cap:e}: loss {l:e}, reference {lr:e}",
                        k.isa()
                    );
                    for j in 0..4 {
                        assert!(
                            (g[j] - gr[j]).abs() <= 1e-6,
                            "[{}] cap {cap:e}: grad {g:?}, reference {gr:?}",
                            k.isa()
                        );
                    }
                }
                _ => panic!("[{}] cap {cap:e}: {got:?}, reference {want:?}", k.isa()),
            }
        }
    }
}

/// Found by `fuzz/` target `cross_entropy` (minimized: `fuzz/corpus/cross_entropy/
/// regress-argmax-nan-row`). FIXED (the short-row kernel now scans for the first maximum
/// ignoring NaN).
///
/// `CrossEntropyOutputs::argmax` of a row that holds a NaN depends on the tier. The reference
/// (and the AVX-512 tier for rows of at most 16 classes) returns the first index of the
/// maximum ignoring NaN, as the reference's docs say the SIMD lanes do ("Max (ignoring NaN, as
/// the SIMD tiers' lanes do) and first argmax"). The 8-lane tiers (portable, AVX2) combine the
/// row's vectors lane-wise with `max` first: where one vector's lane holds a NaN, that lane's
/// value from the other vector is lost, and the argmax (and `CrossEntropyStats::correct`) can
/// point elsewhere. The loss of such a row is NaN in every tier (correct), but the training
/// accuracy computed from `argmax`/`correct` differs between tiers.
///
/// Reproduction: one row of 16 classes, `x[2] = 5`, `x[10] = NaN`, every other logit 0
/// (lane 2 of both 8-float vectors); label 2; argmax requested. Reference: argmax 2,
/// correct 1. Portable / AVX2: argmax 0 (the maximum of what is left), correct 0.
#[test]
fn argmax_of_a_row_with_nan_is_the_same_in_every_tier() {
    for (cols, big, nan) in [
        (16usize, 2usize, 10usize),
        (17, 3, 11),
        (32, 1, 25),
        (24, 6, 22),
    ] {
        let mut x = vec![0.0f32; cols];
        x[big] = 5.0;
        x[nan] = f32::NAN;
        let labels = [big as i64];
        let mut want = None;
        for k in tiers() {
            let mut am = [u32::MAX; 1];
            let mut out = CrossEntropyOutputs {
                argmax: Some(&mut am),
                ..Default::default()
            };
            let st = k
                .cross_entropy_with(
                    Logits::Read(&x),
                    Targets::Classes(&labels),
                    cols,
                    &CrossEntropyOptions::default(),
                    &mut out,
                )
                .unwrap();
            assert!(st.loss.is_nan(), "[{}] loss of a NaN row", k.isa());
            let got = (am[0], st.correct);
            let want = *want.get_or_insert(got);
            assert_eq!(
                got,
                want,
                "[{}] cols {cols}, 5 at {big}, NaN at {nan}: (argmax, correct) {got:?}, \
                 reference {want:?}",
                k.isa()
            );
            assert_eq!(am[0] as usize, big, "[{}] argmax ignoring NaN", k.isa());
        }
    }
}

/// Runs this test binary's test `name` in a child process and returns whether it exited
/// normally (a child that aborts is killed by SIGABRT).
fn child_exits_normally(name: &str) -> (bool, String) {
    let out = child::self_command()
        .args([name, "--exact", "--nocapture", "--include-ignored"])
        .env("FUZZ_REGRESSIONS_CHILD", "1")
        .output()
        .expect("spawn child");
    let code = out.status.code();
    let text = format!(
        "status {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    (code.is_some(), text)
}

/// The child half of [`output_layer_new_huge_shape_returns_an_error`]: must return, not abort.
#[test]
#[ignore = "run as a child process by output_layer_new_huge_shape_returns_an_error"]
fn child_output_layer_new_huge() {
    if std::env::var_os("FUZZ_REGRESSIONS_CHILD").is_none() {
        return;
    }
    // 2^30 x 2^30 = 2^60 floats: passes the SizeOverflow check (<= isize::MAX / 4), then
    // the allocation of 4 EiB fails; that must be an Err, not an abort.
    let r = OutputLayer::new(1 << 30, 1 << 30, SgdOptions::new(0.1));
    assert!(r.is_err(), "an absurd shape must be an Err");
    let r = OutputLayer::new(1 << 25, 1 << 26, SgdOptions::new(0.1));
    assert!(
        r.is_err(),
        "2^51 floats (8 PiB, beyond any address space) must be an Err"
    );
}

/// Found by `tests/garbage.rs` (the "never an abort" rule). FIXED (`OutputLayer` now
/// allocates with `try_reserve_exact` and returns `Error::SizeOverflow { arg: "weight" }`).
///
/// `OutputLayer::new(inputs, classes, ..)` (and `with_kernels`) rejected `inputs * classes`
/// only above `isize::MAX / 4`; any smaller product that does not fit in memory (say
/// `2^30 x 2^30`, 4 EiB) reached `vec![0.0; n]`, whose allocation failure aborts the process
/// (`handle_alloc_error`), so no `Result` reaches the caller. Expected: a typed error (for
/// instance `Error::SizeOverflow { arg: "weight" }` from a `try_reserve` failure).
///
/// Reproduction: `OutputLayer::new(1 << 30, 1 << 30, SgdOptions::new(0.1))` aborted with
/// "memory allocation of 4611686018427387904 bytes failed".
#[test]
fn output_layer_new_huge_shape_returns_an_error() {
    let (normal, text) = child_exits_normally("child_output_layer_new_huge");
    assert!(
        normal,
        "OutputLayer::new(2^30, 2^30) killed the process: {text}"
    );
}

/// Found by `.ci/fuzz.sh` (target `cross_entropy`, minimized:
/// `fuzz/corpus/cross_entropy/regress-smoothing-zero-weight-max-spread`).
///
/// With label smoothing, the SIMD tiers summed `w_c (z_c - m)` in f32; for logits spanning
/// `-f32::MAX .. f32::MAX`, `z_c - m` overflowed to `-inf`, and a zero class weight turned it
/// into `0 * -inf = NaN`, while the f64 reference gives 0 (every weight is 0, so every term is
/// 0). Fixed by summing `(z_c - m) / 2 = z_c / 2 - m / 2`, which cannot overflow for finite
/// logits, and doubling the total.
#[test]
fn smoothing_with_zero_weights_and_max_spread_logits() {
    let m = f32::MAX;
    let x = [1e30f32, -1e30, m, -m, 0.0, 1e30, 3.0, -m];
    let w = [0.0f32; 8];
    let opts = CrossEntropyOptions::default()
        .weight(&w)
        .label_smoothing(0.1)
        .reduction(softmax_kernels::Reduction::Sum);
    for k in tiers() {
        let mut g = [0.0f32; 8];
        let loss = k
            .cross_entropy_fwd_bwd(&x, &[2i64], &mut g, 8, &opts)
            .unwrap();
        assert_eq!(loss, 0.0, "[{}] loss", k.isa());
        assert!(g.iter().all(|v| v.is_finite()), "[{}] grad {g:?}", k.isa());
    }
}

/// Found by `.ci/fuzz.sh` (target `cross_entropy`, portable tier; the inputs:
/// `fuzz/corpus/cross_entropy/regress-prob-tiny-weight-neg-inf` and
/// `regress-prob-huge-weight-zero-target`).
///
/// With probability targets and class weights, the SIMD tiers summed `(w_c y'_c) (z_c - m)`
/// with the product `w_c y'_c` in f32. For a class of weight 1e-44 and target 3.57e-43 the
/// product underflows to 0, and at a `-inf` logit `0 * -inf` made the loss NaN, while the f64
/// reference (and PyTorch, which multiplies `log p * y * w` in that order) gives `+inf`. A
/// first fix summed `y'_c (w_c (z_c - m))` instead, and the next fuzz run found its mirror
/// image: a weight of -1.7e38 times `(z - m) / 2 = -5e29` overflows, and a zero target made
/// that `0 * inf = NaN` where the reference gives 0. The fix kept: `(w y') (z - m)` as before,
/// and at `-inf` logits alone, an underflowed product of two nonzero factors counts as the
/// smallest subnormal of its sign. A zero weight or a zero target at a `-inf` logit still gives
/// NaN, as `0 * -inf` in PyTorch and in the reference.
#[test]
fn prob_targets_tiny_weight_at_neg_inf_logit() {
    let r = Kernels::for_isa(Isa::Scalar).unwrap();
    let x = [1.0f32, 1.0, f32::NEG_INFINITY, 1.0, -1.25];
    for (w2, y2, want_nan) in [
        (1e-44f32, 3.57e-43f32, false),
        (1e-44, 1e-45, false),
        (f32::from_bits(1), f32::from_bits(1), false),
        (0.0, 3.57e-43, true),
        (1e-44, 0.0, true),
    ] {
        let w = [0.5f32, 0.0, w2, 0.0, 1.99];
        let y = [1.5f32, 5.5e-41, y2, 0.0, 0.0];
        let opts = CrossEntropyOptions::default().weight(&w);
        let mut gr = [0.0f32; 5];
        let want = r
            .cross_entropy_probs_fwd_bwd(&x, &y, &mut gr, 5, &opts)
            .unwrap();
        assert_eq!(
            want.is_nan(),
            want_nan,
            "reference loss {want:e} (w {w2:e}, y {y2:e})"
        );
        if !want_nan {
            assert_eq!(want, f32::INFINITY, "reference loss (w {w2:e}, y {y2:e})");
        }
        for k in tiers() {
            let mut g = [0.0f32; 5];
            let got = k
                .cross_entropy_probs_fwd_bwd(&x, &y, &mut g, 5, &opts)
                .unwrap();
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "[{}] w {w2:e} y {y2:e}: loss {got:e}, reference {want:e}",
                k.isa()
            );
            for j in 0..5 {
                assert!(
                    (g[j] - gr[j]).abs() <= 1e-6 || (g[j].is_nan() && gr[j].is_nan()),
                    "[{}] w {w2:e} y {y2:e}: grad {g:?}, reference {gr:?}",
                    k.isa()
                );
            }
        }
    }
    // Huge weights at finite logits with zero targets: each term is 0 (the reference's f64
    // product `w y'` is 0), not `0 * inf`.
    let x = [4.0f32, 1e30, 0.0, 0.0, 0.0];
    let y = [0.0f32, 8.3e-44, 0.0, 2.511e-42, 0.0];
    let w = [-1.7014118e38f32, -1.7146522e38, 1.83312e-40, 0.0, 0.0];
    let opts = CrossEntropyOptions::default()
        .weight(&w)
        .reduction(softmax_kernels::Reduction::Sum);
    let mut gr = [0.0f32; 5];
    let want = r
        .cross_entropy_probs_fwd_bwd(&x, &y, &mut gr, 5, &opts)
        .unwrap();
    assert!(want.is_finite(), "reference loss {want:e}");
    for k in tiers() {
        let mut g = [0.0f32; 5];
        let got = k
            .cross_entropy_probs_fwd_bwd(&x, &y, &mut g, 5, &opts)
            .unwrap();
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "[{}] huge weights: loss {got:e}, reference {want:e}",
            k.isa()
        );
    }
}
