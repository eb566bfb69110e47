//! Property tests (proptest) on every tier:
//!
//! * shift invariance: softmax(z + c) = softmax(z), log_softmax likewise, and
//!   logsumexp(z + c) = logsumexp(z) + c, with tolerances derived from the contract (exact
//!   shifts) and from the rounding of `z + c` (inexact shifts);
//! * permutation equivariance;
//! * probabilities are finite, in [0, 1], and each row sums to 1 within `cols * 2^-24`, for any
//!   finite logits (huge ones included);
//! * log_softmax = ln(softmax) within the two contracts' tolerances, and log_softmax <= 0;
//! * max(z) <= logsumexp(z) <= max(z) + ln C (within the contract).

mod common;

use common::oracle as o;
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Cases per property (each case runs every tier).
const CASES: u32 = 256;

fn config() -> Config {
    Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    }
}

/// `(cols, x)`: a `[rows, cols]` matrix, `cols` in `1..=max_cols` (crossing the short-row
/// limits at 32 and 64 classes), 1 to 3 rows, entries from `elem`.
fn matrix(
    max_cols: usize,
    elem: impl Strategy<Value = f32> + Clone,
) -> impl Strategy<Value = (usize, Vec<f32>)> {
    (1..=max_cols, 1usize..=3).prop_flat_map(move |(cols, rows)| {
        (Just(cols), prop::collection::vec(elem.clone(), rows * cols))
    })
}

/// Multiples of 1/64 in [-16, 16]: adding an integer |c| <= 1000 is exact in f32 (at most 10
/// integer and 6 fraction bits), and so is every difference of two shifted values.
fn exact_logit() -> impl Strategy<Value = f32> + Clone {
    (-1024i32..=1024).prop_map(|k| k as f32 / 64.0)
}

/// Any finite f32: ordinary magnitudes most of the time, and the whole finite range.
fn finite_logit() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![
        4 => -30.0f32..30.0,
        1 => -1e4f32..1e4,
        1 => any::<f32>().prop_filter("finite", |v| v.is_finite()),
    ]
}

fn run_fwd(k: &softmax_kernels::Kernels, x: &[f32], cols: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut p = vec![0.0f32; x.len()];
    k.softmax(x, &mut p, cols).unwrap();
    let mut l = vec![0.0f32; x.len()];
    k.log_softmax(x, &mut l, cols).unwrap();
    let mut s = vec![0.0f32; x.len() / cols];
    k.logsumexp(x, &mut s, cols).unwrap();
    (p, l, s)
}

/// Row maxima (f64).
fn maxima(x: &[f32], cols: usize) -> Vec<f64> {
    x.chunks(cols)
        .map(|r| {
            r.iter()
                .map(|&v| v as f64)
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    /// With `z + c` exact, the exact results of z and z + c are equal (shifted by c for
    /// logsumexp), so two results that each meet the contract differ by at most the sum of
    /// their tolerances: `2 (1e-6 + 2^-23 |z - max|) p` (every p here is above 1e-30:
    /// |z - max| <= 32), `2 * 2e-6 max(1, |v|)`, and `1e-6 (max(1, |lse|) + max(1, |lse + c|))`.
    #[test]
    fn shift_invariance_exact((cols, z) in matrix(80, exact_logit()), c in -1000i32..=1000) {
        let c = c as f32;
        let zc: Vec<f32> = z.iter().map(|&v| v + c).collect();
        for (&a, &b) in z.iter().zip(&zc) {
            prop_assert_eq!((a as f64) + c as f64, b as f64, "the shift must be exact");
        }
        let p = o::softmax(&z, cols, false);
        let l = o::log_softmax(&z, cols, false);
        let s = o::logsumexp(&z, cols);
        let m = maxima(&z, cols);
        for k in common::tiers() {
            let (p0, l0, s0) = run_fwd(k, &z, cols);
            let (p1, l1, s1) = run_fwd(k, &zc, cols);
            for i in 0..z.len() {
                let d = (z[i] as f64 - m[i / cols]).abs();
                let tol = 2.0 * (o::SOFTMAX_REL + o::Z_ROUND * d) * p[i];
                prop_assert!(
                    (p0[i] as f64 - p1[i] as f64).abs() <= tol,
                    "tier {} softmax[{}]: {} vs {} (tol {:e})", k.isa(), i, p0[i], p1[i], tol
                );
                let tol = 2.0 * o::LOG_SOFTMAX_REL * l[i].abs().max(1.0);
                prop_assert!(
                    (l0[i] as f64 - l1[i] as f64).abs() <= tol,
                    "tier {} log_softmax[{}]: {} vs {}", k.isa(), i, l0[i], l1[i]
                );
            }
            for r in 0..s.len() {
                let tol = o::LSE_REL * (s[r].abs().max(1.0) + (s[r] + c as f64).abs().max(1.0));
                prop_assert!(
                    (s1[r] as f64 - (s0[r] as f64 + c as f64)).abs() <= tol,
                    "tier {} logsumexp row {}: {} vs {} + {}", k.isa(), r, s1[r], s0[r], c
                );
            }
        }
    }

    /// With an inexact shift, `x = fl(z + c)` differs from `z + c` by `delta_j`, at most half
    /// an ulp of `|z_j + c|`: Delta = max |delta_j|. The exact softmax of x is softmax(z + delta),
    /// whose ratio to softmax(z) lies in [exp(-2 Delta), exp(2 Delta)]. So
    /// `|p(x) - p(z)| <= tol(x) + tol(z) + (exp(2 Delta) - 1) p(z)`, with the contract's
    /// tolerances taken at `exp(2 Delta) p(z)` and `|z - max| + 2 Delta`.
    #[test]
    fn shift_invariance_rounded((cols, z) in matrix(70, -20.0f32..20.0), c in -300.0f32..300.0) {
        let x: Vec<f32> = z.iter().map(|&v| v + c).collect();
        let p = o::softmax(&z, cols, false);
        let m = maxima(&z, cols);
        let mut delta = vec![0.0f64; z.len() / cols];
        for (i, (&a, &b)) in z.iter().zip(&x).enumerate() {
            let d = (b as f64 - (a as f64 + c as f64)).abs();
            delta[i / cols] = delta[i / cols].max(d);
        }
        for k in common::tiers() {
            let (p0, _, s0) = run_fwd(k, &z, cols);
            let (p1, _, s1) = run_fwd(k, &x, cols);
            for i in 0..z.len() {
                let dl = delta[i / cols];
                let grow = (2.0 * dl).exp();
                let d = (z[i] as f64 - m[i / cols]).abs() + 2.0 * dl;
                let each = |pv: f64| {
                    if pv >= o::SOFTMAX_TINY / grow {
                        (o::SOFTMAX_REL + o::Z_ROUND * d) * pv
                    } else {
                        o::SOFTMAX_TINY
                    }
                };
                let tol = each(p[i]) + each(p[i] * grow) + (grow - 1.0) * p[i];
                prop_assert!(
                    (p0[i] as f64 - p1[i] as f64).abs() <= tol,
                    "tier {} softmax[{}]: {} vs {} (tol {:e}, Delta {:e})",
                    k.isa(), i, p0[i], p1[i], tol, dl
                );
            }
            for r in 0..s0.len() {
                // lse(x) = lse(z) + c + something in [-Delta, Delta].
                let want = s0[r] as f64 + c as f64;
                let tol = delta[r]
                    + o::LSE_REL * ((s0[r] as f64).abs().max(1.0) + (s1[r] as f64).abs().max(1.0))
                    + 1e-6;
                prop_assert!(
                    (s1[r] as f64 - want).abs() <= tol,
                    "tier {} logsumexp row {}: {} vs {} + {}", k.isa(), r, s1[r], s0[r], c
                );
            }
        }
    }

    /// Reversing a row reverses its softmax: each result meets the contract against the same
    /// exact values, so they differ by at most twice the tolerance.
    #[test]
    fn permutation_equivariance((cols, z) in matrix(100, -30.0f32..30.0)) {
        let zr: Vec<f32> = z.chunks(cols).flat_map(|r| r.iter().rev().copied()).collect();
        let p = o::softmax(&z, cols, false);
        let m = maxima(&z, cols);
        for k in common::tiers() {
            let (p0, l0, s0) = run_fwd(k, &z, cols);
            let (p1, l1, s1) = run_fwd(k, &zr, cols);
            for r in 0..z.len() / cols {
                for j in 0..cols {
                    let (i, ir) = (r * cols + j, r * cols + cols - 1 - j);
                    let tol = if p[i] >= o::SOFTMAX_TINY {
                        2.0 * (o::SOFTMAX_REL + o::Z_ROUND * (z[i] as f64 - m[r]).abs()) * p[i]
                    } else {
                        2.0 * o::SOFTMAX_TINY
                    };
                    prop_assert!((p0[i] as f64 - p1[ir] as f64).abs() <= tol,
                        "tier {} row {} col {}: {} vs {}", k.isa(), r, j, p0[i], p1[ir]);
                    let tol = 2.0 * o::LOG_SOFTMAX_REL * (l0[i] as f64).abs().max(1.0) * 1.01;
                    prop_assert!((l0[i] as f64 - l1[ir] as f64).abs() <= tol,
                        "tier {} row {} col {}: {} vs {}", k.isa(), r, j, l0[i], l1[ir]);
                }
                let tol = 2.0 * o::LSE_REL * (s0[r] as f64).abs().max(1.0) * 1.01;
                prop_assert!((s0[r] as f64 - s1[r] as f64).abs() <= tol);
            }
        }
    }

    /// For any finite logits: probabilities finite, in [0, 1], rows summing to 1 within
    /// `cols * 2^-24`; log-probabilities <= 0 and never NaN; logsumexp finite.
    #[test]
    fn probabilities_in_unit_interval_and_sum_to_one((cols, z) in matrix(150, finite_logit())) {
        for k in common::tiers() {
            let (p, l, s) = run_fwd(k, &z, cols);
            for (r, row) in p.chunks(cols).enumerate() {
                for &v in row {
                    prop_assert!((0.0..=1.0).contains(&v), "tier {} row {}: p = {:e}", k.isa(), r, v);
                }
                let sum: f64 = row.iter().map(|&v| v as f64).sum();
                prop_assert!(
                    (sum - 1.0).abs() <= cols as f64 * o::U32,
                    "tier {} row {}: sum {} (cols {})", k.isa(), r, sum, cols
                );
            }
            for &v in &l {
                prop_assert!(!v.is_nan() && v <= 0.0, "tier {}: log p = {:e}", k.isa(), v);
            }
            for &v in &s {
                prop_assert!(v.is_finite(), "tier {}: lse = {:e}", k.isa(), v);
            }
        }
    }

    /// log_softmax = ln(softmax): for p >= 1e-30, `|ln p_got - v| <= |ln(p_got / p)|`, which the
    /// softmax contract bounds by ~`1.0001 (1e-6 + 2^-23 |z - max|)`, and
    /// `|l_got - v| <= 2e-6 max(1, |v|)`; the sum of both bounds the difference.
    #[test]
    fn log_softmax_is_ln_softmax((cols, z) in matrix(100, -40.0f32..40.0)) {
        let l = o::log_softmax(&z, cols, false);
        let m = maxima(&z, cols);
        for k in common::tiers() {
            let (p, lg, _) = run_fwd(k, &z, cols);
            for i in 0..z.len() {
                if l[i].exp() < o::SOFTMAX_TINY {
                    continue;
                }
                let rel = o::SOFTMAX_REL + o::Z_ROUND * (z[i] as f64 - m[i / cols]).abs();
                let tol = 1.0001 * rel + o::LOG_SOFTMAX_REL * l[i].abs().max(1.0);
                let lnp = (p[i] as f64).ln();
                prop_assert!(
                    (lg[i] as f64 - lnp).abs() <= tol,
                    "tier {} [{}]: log_softmax {} vs ln(softmax) {} (tol {:e})",
                    k.isa(), i, lg[i], lnp, tol
                );
            }
        }
    }

    /// `max(z) <= logsumexp(z)`, exactly: `lse - max = ln(sum_j exp(z_j - max)) >= ln 1 = 0`,
    /// the maximum's own term being exp(0) = 1, and rounding to f32 is monotone, so no correct
    /// implementation returns less than the maximum. Above: `lse <= max + ln C` within the
    /// contract.
    #[test]
    fn logsumexp_bounded_by_max((cols, z) in matrix(150, finite_logit())) {
        let m = maxima(&z, cols);
        for k in common::tiers() {
            let (_, _, s) = run_fwd(k, &z, cols);
            for r in 0..s.len() {
                prop_assert!(s[r] as f64 >= m[r], "tier {} row {}: lse {} < max {}", k.isa(), r, s[r], m[r]);
                let hi = m[r] + (cols as f64).ln();
                prop_assert!(
                    s[r] as f64 <= hi + o::LSE_REL * hi.abs().max(1.0),
                    "tier {} row {}: lse {} > max + ln C = {}", k.isa(), r, s[r], hi
                );
            }
        }
    }
}
