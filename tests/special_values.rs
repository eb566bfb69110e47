//! Special values on every tier, for short rows (at most 64 classes: the register-resident
//! path), medium rows, and long rows past `ONLINE_MIN_COLS` (the chunked online path):
//!
//! * NaN anywhere (every position, tails included) makes exactly that row NaN;
//! * `-inf` logits give probability exactly 0 and log-probability `-inf`;
//! * all `-inf` rows: NaN by default; 0 / `-inf` under `MaskedRows::Zero`; logsumexp `-inf`;
//! * `+inf` makes softmax/log_softmax NaN and logsumexp `+inf`; with a NaN too, NaN;
//! * huge finite logits never overflow; subnormal logits and `-0.0` work;
//! * hand-derived values (uniform rows, `[0, ln 2]`, `ln C`, backward examples).
//!
//! Every forward result is also checked against the f64 oracle, whose special-value semantics
//! are written independently in `tests/common/oracle.rs`.

mod common;

use common::ok;
use common::oracle as o;
use rand::Rng;
use softmax_kernels::tuning::{ONLINE_CHUNK, ONLINE_MIN_COLS};
use softmax_kernels::{Kernels, MaskedRows, SoftmaxOptions};

const NINF: f32 = f32::NEG_INFINITY;
const PINF: f32 = f32::INFINITY;

/// NaNs of different signs and payloads.
const NANS: [f32; 3] = [
    f32::NAN,
    f32::from_bits(0xFFC0_0000),
    f32::from_bits(0x7F80_0001),
];

/// The row lengths: every short length (the SIMD tiers' register-resident path ends at 32 or 64
/// classes), the short/long boundary, a medium row, and long rows on the online path.
fn short_cols() -> Vec<usize> {
    (1..=40).chain([63, 64, 65]).collect()
}
const LONG: usize = ONLINE_MIN_COLS + ONLINE_CHUNK + 1; // 69633

/// Positions worth testing in a row of `cols`: all of them for short rows, else the vector,
/// chunk and row boundaries.
fn positions(cols: usize) -> Vec<usize> {
    if cols <= 1000 {
        return (0..cols).collect();
    }
    let mut v: Vec<usize> = [
        0,
        1,
        7,
        8,
        15,
        16,
        17,
        63,
        64,
        ONLINE_CHUNK - 1,
        ONLINE_CHUNK,
        ONLINE_CHUNK + 1,
        5 * ONLINE_CHUNK + 77,
        ONLINE_MIN_COLS - 1,
        ONLINE_MIN_COLS,
        cols - 17,
        cols - 2,
        cols - 1,
    ]
    .into_iter()
    .filter(|&p| p < cols)
    .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// All forward results of one tier for `x`.
struct Fwd {
    softmax: Vec<f32>,
    log_softmax: Vec<f32>,
    lse: Vec<f32>,
}

/// The oracle's forward results for `x` under both masked-row policies (computed once, checked
/// against every tier).
struct Oracle {
    softmax: [Vec<f64>; 2],
    log_softmax: [Vec<f64>; 2],
    lse: Vec<f64>,
}

fn oracle(x: &[f32], cols: usize) -> Oracle {
    Oracle {
        softmax: [o::softmax(x, cols, false), o::softmax(x, cols, true)],
        log_softmax: [
            o::log_softmax(x, cols, false),
            o::log_softmax(x, cols, true),
        ],
        lse: o::logsumexp(x, cols),
    }
}

/// Runs softmax, log_softmax (out of place and in place) and logsumexp on tier `k` under
/// `masked`, checks them against the oracle and checks that in place equals out of place.
fn forward_checked(
    k: &Kernels,
    x: &[f32],
    cols: usize,
    masked: MaskedRows,
    want: &Oracle,
    ctx: &str,
) -> Fwd {
    let opts = SoftmaxOptions::default().masked_rows(masked);
    let mz = usize::from(masked == MaskedRows::Zero);
    let rows = x.len() / cols;
    let ctx = format!(
        "tier {}, {masked:?}, cols {cols}, rows {rows}: {ctx}",
        k.isa()
    );

    let mut softmax = vec![0.5f32; x.len()];
    k.softmax_with(x, &mut softmax, cols, opts).unwrap();
    ok(
        format!("{ctx}: softmax"),
        o::check_softmax(x, cols, &softmax, &want.softmax[mz], 0.0),
    );
    let mut inplace = x.to_vec();
    k.softmax_inplace_with(&mut inplace, cols, opts).unwrap();
    ok(
        format!("{ctx}: softmax_inplace"),
        o::check_bits("in place vs out of place", &inplace, &softmax),
    );

    let mut log_softmax = vec![0.5f32; x.len()];
    k.log_softmax_with(x, &mut log_softmax, cols, opts).unwrap();
    ok(
        format!("{ctx}: log_softmax"),
        o::check_log_softmax(x, cols, &log_softmax, &want.log_softmax[mz], 0.0),
    );
    let mut inplace = x.to_vec();
    k.log_softmax_inplace_with(&mut inplace, cols, opts)
        .unwrap();
    ok(
        format!("{ctx}: log_softmax_inplace"),
        o::check_bits("in place vs out of place", &inplace, &log_softmax),
    );

    if masked == MaskedRows::Nan {
        // The plain functions use the default policy, `Nan`.
        let mut y = vec![0.5f32; x.len()];
        k.softmax(x, &mut y, cols).unwrap();
        ok(
            &ctx,
            o::check_bits("softmax vs softmax_with(Nan)", &y, &softmax),
        );
        k.log_softmax(x, &mut y, cols).unwrap();
        ok(
            &ctx,
            o::check_bits("log_softmax vs log_softmax_with(Nan)", &y, &log_softmax),
        );
    }

    let mut lse = vec![0.5f32; rows];
    k.logsumexp(x, &mut lse, cols).unwrap();
    ok(
        format!("{ctx}: logsumexp"),
        o::check_logsumexp(&lse, &want.lse, 0.0),
    );
    Fwd {
        softmax,
        log_softmax,
        lse,
    }
}

/// Both masked-row policies.
fn forward_both(k: &Kernels, x: &[f32], cols: usize, want: &Oracle, ctx: &str) -> [Fwd; 2] {
    [
        forward_checked(k, x, cols, MaskedRows::Nan, want, ctx),
        forward_checked(k, x, cols, MaskedRows::Zero, want, ctx),
    ]
}

fn row(v: &[f32], cols: usize, r: usize) -> &[f32] {
    &v[r * cols..(r + 1) * cols]
}

/// NaN at each position makes exactly that row NaN. Rows alternate: even rows hold one NaN
/// (position `p`), odd rows are clean and must stay finite and within the contract.
fn nan_rows(cols: usize) {
    let pos = positions(cols);
    let mut rng = common::rng(cols as u64);
    let mut x = Vec::with_capacity(2 * pos.len() * cols);
    for (i, &p) in pos.iter().enumerate() {
        let mut r = common::logits(&mut rng, cols, 10.0);
        r[p] = NANS[i % NANS.len()];
        x.extend_from_slice(&r);
        x.extend(common::logits(&mut rng, cols, 10.0));
    }
    let want = oracle(&x, cols);
    for k in common::tiers() {
        for f in forward_both(k, &x, cols, &want, "NaN rows") {
            for (i, &p) in pos.iter().enumerate() {
                let ctx = format!("tier {} cols {cols} NaN at {p}", k.isa());
                let r = 2 * i;
                assert!(
                    row(&f.softmax, cols, r).iter().all(|v| v.is_nan()),
                    "{ctx}: softmax row not all NaN"
                );
                assert!(
                    row(&f.log_softmax, cols, r).iter().all(|v| v.is_nan()),
                    "{ctx}: log_softmax row not all NaN"
                );
                assert!(f.lse[r].is_nan(), "{ctx}: logsumexp {}", f.lse[r]);
                assert!(
                    row(&f.softmax, cols, r + 1).iter().all(|v| v.is_finite()),
                    "{ctx}: the next (clean) row is not finite"
                );
            }
        }
        // The clean rows met the contract in `forward_both` (checked against the oracle) and
        // are finite. (Bit-identity with the rows computed alone is not part of the contract: a
        // kernel may process groups of rows together and fall back to per-row code for a group
        // holding a NaN row; only thread-count independence is promised, see determinism.rs.)
    }
}

#[test]
fn nan_at_every_position_short_rows() {
    for cols in short_cols() {
        nan_rows(cols);
    }
}

#[test]
fn nan_at_every_position_1000() {
    nan_rows(1000);
}

#[test]
fn nan_at_boundary_positions_long_rows() {
    nan_rows(LONG);
}

/// `-inf` at each position (one at a time) and at random subsets: probability exactly 0,
/// log-probability exactly `-inf` (enforced by the oracle checks), the rest correct.
fn neg_inf_rows(cols: usize) {
    let pos = positions(cols);
    let mut rng = common::rng(1000 + cols as u64);
    let mut x = Vec::new();
    for &p in &pos {
        let mut r = common::logits(&mut rng, cols, 10.0);
        r[p] = NINF;
        x.extend_from_slice(&r);
    }
    // Random subsets, about half -inf, at least one finite.
    for _ in 0..4 {
        let mut r = common::logits(&mut rng, cols, 10.0);
        for v in r.iter_mut() {
            if rng.gen_bool(0.5) {
                *v = NINF;
            }
        }
        let keep = rng.gen_range(0..cols);
        r[keep] = 1.0;
        x.extend_from_slice(&r);
    }
    let want = oracle(&x, cols);
    for k in common::tiers() {
        for f in forward_both(k, &x, cols, &want, "-inf logits") {
            for (i, (xv, (p, l))) in x
                .iter()
                .zip(f.softmax.iter().zip(&f.log_softmax))
                .enumerate()
            {
                let fully_masked = row(&x, cols, i / cols).iter().all(|&v| v == NINF);
                if *xv == NINF && !fully_masked {
                    assert!(
                        *p == 0.0 && *l == NINF,
                        "tier {} cols {cols} index {i}: -inf logit gave p {p:e}, log p {l:e}",
                        k.isa()
                    );
                }
            }
            for (r, v) in f.lse.iter().enumerate() {
                let fully_masked = row(&x, cols, r).iter().all(|&v| v == NINF);
                assert!(
                    v.is_finite() || fully_masked,
                    "tier {} cols {cols} row {r}: lse {v}",
                    k.isa()
                );
            }
        }
    }
}

#[test]
fn neg_inf_logits_short_rows() {
    for cols in short_cols() {
        neg_inf_rows(cols);
    }
}

#[test]
fn neg_inf_logits_medium_and_long_rows() {
    neg_inf_rows(1000);
    neg_inf_rows(LONG);
}

/// Fully masked rows between ordinary ones, and rows where only some online chunks are masked.
fn masked_rows(cols: usize) {
    let mut rng = common::rng(2000 + cols as u64);
    let mut x = common::logits(&mut rng, cols, 5.0);
    x.extend(std::iter::repeat_n(NINF, cols)); // row 1: fully masked
    x.extend(common::logits(&mut rng, cols, 5.0));
    x.extend(std::iter::repeat_n(NINF, cols)); // row 3: fully masked
                                               // Row 4: masked except the last logit (the tail lane / last online chunk).
    let mut r = vec![NINF; cols];
    r[cols - 1] = -3.0;
    x.extend_from_slice(&r);
    // Row 5: masked except the first logit.
    let mut r = vec![NINF; cols];
    r[0] = 7.5;
    x.extend_from_slice(&r);
    // Row 6: -inf and NaN only: NaN under both policies.
    let mut r = vec![NINF; cols];
    r[cols / 2] = f32::NAN;
    x.extend_from_slice(&r);
    if cols >= 3 * ONLINE_CHUNK {
        // Row 7: whole chunks masked (the first three), the rest finite.
        let mut r = common::logits(&mut rng, cols, 5.0);
        r[..3 * ONLINE_CHUNK].fill(NINF);
        x.extend_from_slice(&r);
        // Row 8: every other chunk masked.
        let mut r = common::logits(&mut rng, cols, 5.0);
        for c in (0..cols.div_ceil(ONLINE_CHUNK)).step_by(2) {
            let hi = ((c + 1) * ONLINE_CHUNK).min(cols);
            r[c * ONLINE_CHUNK..hi].fill(NINF);
        }
        x.extend_from_slice(&r);
    }
    let rows = x.len() / cols;
    let want = oracle(&x, cols);
    for k in common::tiers() {
        let ctx = format!("tier {} cols {cols}", k.isa());
        let [nan, zero] = forward_both(k, &x, cols, &want, "masked rows");
        for r in [1, 3] {
            assert!(
                row(&nan.softmax, cols, r).iter().all(|v| v.is_nan()),
                "{ctx}: masked row {r}, default policy: softmax must be NaN"
            );
            assert!(
                row(&nan.log_softmax, cols, r).iter().all(|v| v.is_nan()),
                "{ctx}: masked row {r}, default policy: log_softmax must be NaN"
            );
            assert!(
                row(&zero.softmax, cols, r)
                    .iter()
                    .all(|v| v.to_bits() == 0.0f32.to_bits()),
                "{ctx}: masked row {r}, Zero policy: softmax must be +0.0"
            );
            assert!(
                row(&zero.log_softmax, cols, r).iter().all(|&v| v == NINF),
                "{ctx}: masked row {r}, Zero policy: log_softmax must be -inf"
            );
            assert_eq!(nan.lse[r], NINF, "{ctx}: logsumexp of a masked row");
        }
        // One finite logit: probability 1 there (within the contract), 0 elsewhere.
        for (r, at) in [(4, cols - 1), (5, 0)] {
            for f in [&nan, &zero] {
                let p = row(&f.softmax, cols, r);
                assert!((p[at] - 1.0).abs() <= 1e-6, "{ctx}: row {r} p {}", p[at]);
                let l = row(&f.log_softmax, cols, r);
                assert!(l[at].abs() <= 2e-6, "{ctx}: row {r} log p {}", l[at]);
            }
        }
        for f in [&nan, &zero] {
            assert!(
                row(&f.softmax, cols, 6).iter().all(|v| v.is_nan()),
                "{ctx}: row 6"
            );
            assert!(f.lse[6].is_nan(), "{ctx}: row 6 logsumexp");
            // Unmasked rows are the same under both policies.
            for r in (0..rows).filter(|r| ![1, 3, 6].contains(r)) {
                ok(
                    format!("{ctx} row {r}"),
                    o::check_bits(
                        "policy changes an unmasked row",
                        row(&nan.softmax, cols, r),
                        row(&zero.softmax, cols, r),
                    ),
                );
            }
        }
    }
}

#[test]
fn fully_masked_rows_short() {
    for cols in short_cols() {
        masked_rows(cols);
    }
}

#[test]
fn fully_masked_rows_medium_and_long() {
    masked_rows(1000);
    masked_rows(LONG);
}

/// `+inf` at each position: softmax and log_softmax NaN (also under `MaskedRows::Zero`),
/// logsumexp `+inf`; with `-inf` elsewhere the same; with a NaN anywhere, logsumexp NaN.
fn pos_inf_rows(cols: usize) {
    let mut pos = positions(cols);
    if cols > 1000 {
        // Five rows per position: keep the chunk and row boundaries only.
        pos.retain(|&p| {
            [
                0,
                15,
                ONLINE_CHUNK - 1,
                ONLINE_CHUNK,
                ONLINE_MIN_COLS,
                cols - 1,
            ]
            .contains(&p)
        });
    }
    let mut rng = common::rng(3000 + cols as u64);
    let mut x = Vec::new();
    // Kinds: 0 = +inf alone, 1 = +inf and -inf, 2 = +inf then NaN, 3 = NaN then +inf,
    // 4 = two +inf.
    let mut kinds = Vec::new();
    for &p in &pos {
        for kind in 0..5 {
            let mut r = common::logits(&mut rng, cols, 10.0);
            let q = (p + cols / 2 + 1) % cols; // another position (the same when cols == 1)
            match kind {
                1 => r[q] = NINF,
                2 => r[q] = f32::NAN,
                4 => r[q] = PINF,
                _ => {}
            }
            r[p] = PINF;
            if kind == 3 {
                r[q] = f32::NAN;
                if q == p {
                    continue;
                }
            }
            x.extend_from_slice(&r);
            kinds.push((p, kind, q != p));
        }
    }
    let want = oracle(&x, cols);
    for k in common::tiers() {
        for f in forward_both(k, &x, cols, &want, "+inf logits") {
            for (r, &(p, kind, distinct)) in kinds.iter().enumerate() {
                let ctx = format!("tier {} cols {cols} +inf at {p} kind {kind}", k.isa());
                assert!(
                    row(&f.softmax, cols, r).iter().all(|v| v.is_nan()),
                    "{ctx}: softmax"
                );
                assert!(
                    row(&f.log_softmax, cols, r).iter().all(|v| v.is_nan()),
                    "{ctx}: log_softmax"
                );
                let nan = (kind == 2 || kind == 3) && distinct;
                if nan {
                    assert!(
                        f.lse[r].is_nan(),
                        "{ctx}: logsumexp {} (want NaN)",
                        f.lse[r]
                    );
                } else {
                    assert_eq!(f.lse[r], PINF, "{ctx}: logsumexp");
                }
            }
        }
    }
}

#[test]
fn pos_inf_logits_short_rows() {
    for cols in short_cols() {
        pos_inf_rows(cols);
    }
}

#[test]
fn pos_inf_logits_medium_and_long_rows() {
    pos_inf_rows(1000);
    pos_inf_rows(LONG);
}

/// Huge finite logits: never NaN or infinity from softmax, correct values everywhere.
fn huge_rows(cols: usize) {
    let big = [1e30f32, -1e30, f32::MAX, -f32::MAX, 3e38, -3e38, 1e38];
    let mut rng = common::rng(4000 + cols as u64);
    let mut x = Vec::new();
    for kind in 0..6 {
        let r: Vec<f32> = (0..cols)
            .map(|_| match kind {
                // Only huge values, random signs.
                0 => big[rng.gen_range(0..big.len())],
                // Huge and ordinary values mixed.
                1 if rng.gen_bool(0.3) => big[rng.gen_range(0..big.len())],
                1 => rng.gen_range(-10.0..10.0),
                // Everything near f32::MAX: differences of many orders of magnitude.
                2 => f32::MAX * rng.gen_range(0.5f32..1.0),
                // Everything near -f32::MAX.
                3 => -f32::MAX * rng.gen_range(0.5f32..1.0),
                // Two values only: the maximum and the minimum finite f32.
                4 => {
                    if rng.gen_bool(0.5) {
                        f32::MAX
                    } else {
                        -f32::MAX
                    }
                }
                // 1e30 plus small offsets (they vanish in f32: uniform row).
                _ => 1e30 + rng.gen_range(-1.0f32..1.0),
            })
            .collect();
        x.extend_from_slice(&r);
    }
    let want = oracle(&x, cols);
    for k in common::tiers() {
        for f in forward_both(k, &x, cols, &want, "huge logits") {
            let ctx = format!("tier {} cols {cols}", k.isa());
            assert!(
                f.softmax.iter().all(|v| v.is_finite()),
                "{ctx}: softmax of huge finite logits must be finite"
            );
            assert!(
                f.lse.iter().all(|v| v.is_finite()),
                "{ctx}: logsumexp of huge finite logits must be finite: {:?}",
                f.lse
            );
        }
    }
}

#[test]
fn huge_finite_logits() {
    for cols in short_cols() {
        huge_rows(cols);
    }
    huge_rows(1000);
    huge_rows(LONG);
}

#[test]
fn huge_finite_logits_hand_derived() {
    let m = f32::MAX;
    for k in common::tiers() {
        let isa = k.isa();
        let mut p = [9.0f32; 2];
        let mut l = [9.0f32; 2];
        let mut s = [9.0f32; 1];
        // [MAX, 0] -> [1, 0]: exp(-MAX) is 0 and the sum is exactly 1.
        k.softmax(&[m, 0.0], &mut p, 2).unwrap();
        assert_eq!(p, [1.0, 0.0], "{isa}: softmax([MAX, 0])");
        k.log_softmax(&[m, 0.0], &mut l, 2).unwrap();
        assert_eq!(l[0], 0.0, "{isa}");
        assert!(
            l[1] <= -3.4e38,
            "{isa}: log_softmax([MAX, 0])[1] = {}",
            l[1]
        );
        // [MAX, -MAX]: the gap overflows f32, so log p = -(2 MAX) rounds to -inf.
        k.softmax(&[m, -m], &mut p, 2).unwrap();
        assert_eq!(p, [1.0, 0.0], "{isa}: softmax([MAX, -MAX])");
        k.log_softmax(&[m, -m], &mut l, 2).unwrap();
        assert_eq!(l, [0.0, NINF], "{isa}: log_softmax([MAX, -MAX])");
        k.logsumexp(&[m, -m], &mut s, 2).unwrap();
        assert_eq!(s, [m], "{isa}: logsumexp([MAX, -MAX])");
        // [MAX, MAX] -> [0.5, 0.5]; logsumexp MAX + ln 2, which rounds to MAX (ulp 2^104).
        k.softmax(&[m, m], &mut p, 2).unwrap();
        assert_eq!(p, [0.5, 0.5], "{isa}: softmax([MAX, MAX])");
        k.logsumexp(&[m, m], &mut s, 2).unwrap();
        assert_eq!(s, [m], "{isa}: logsumexp([MAX, MAX])");
        k.softmax(&[-m, -m], &mut p, 2).unwrap();
        assert_eq!(p, [0.5, 0.5], "{isa}: softmax([-MAX, -MAX])");
        k.logsumexp(&[-m, -m], &mut s, 2).unwrap();
        assert_eq!(s, [-m], "{isa}: logsumexp([-MAX, -MAX])");
        // [1e30, -1e30] -> [1, 0]; [1e30, 1e30] -> [1/2, 1/2].
        k.softmax(&[1e30, -1e30], &mut p, 2).unwrap();
        assert_eq!(p, [1.0, 0.0], "{isa}: softmax([1e30, -1e30])");
        k.log_softmax(&[1e30, -1e30], &mut l, 2).unwrap();
        assert_eq!(l, [0.0, -2e30], "{isa}: log_softmax([1e30, -1e30])");
        k.softmax(&[1e30, 1e30], &mut p, 2).unwrap();
        assert_eq!(p, [0.5, 0.5], "{isa}: softmax([1e30, 1e30])");
        k.log_softmax(&[1e30, 1e30], &mut l, 2).unwrap();
        let ln_half = (0.5f64).ln();
        for v in l {
            assert!(
                (v as f64 - ln_half).abs() <= 2e-6,
                "{isa}: log_softmax([1e30, 1e30]) = {l:?}"
            );
        }
    }
}

/// Subnormal logits and signed zeros behave as the tiny numbers they are: an almost uniform
/// row.
#[test]
fn subnormal_and_negative_zero_logits() {
    let sub = f32::from_bits(1); // the smallest subnormal
    let big_sub = f32::from_bits(0x007F_FFFF); // the largest subnormal
    let mut rng = common::rng(5000);
    for cols in short_cols().into_iter().chain([1000, LONG]) {
        let mut x = Vec::new();
        for kind in 0..4 {
            x.extend((0..cols).map(|i| match kind {
                0 => {
                    if i % 2 == 0 {
                        -0.0
                    } else {
                        0.0
                    }
                }
                1 => f32::from_bits(rng.gen_range(1..0x0080_0000)),
                2 => -f32::from_bits(rng.gen_range(1..0x0080_0000)),
                _ => [sub, -sub, big_sub, -big_sub, 0.0, -0.0][rng.gen_range(0..6)],
            }));
        }
        let uniform = 1.0 / cols as f64;
        let want = oracle(&x, cols);
        for k in common::tiers() {
            for f in forward_both(k, &x, cols, &want, "subnormal logits") {
                let ctx = format!("tier {} cols {cols}", k.isa());
                // exp of a subnormal is 1 to f32 precision: all outputs 1/C within the contract.
                for &p in &f.softmax {
                    assert!(
                        (p as f64 - uniform).abs() <= 1e-6 * uniform,
                        "{ctx}: softmax {p:e} vs 1/C"
                    );
                }
                let ln_c = (cols as f64).ln();
                for &v in &f.log_softmax {
                    assert!(
                        (v as f64 + ln_c).abs() <= 2e-6 * ln_c.max(1.0),
                        "{ctx}: {v}"
                    );
                }
                for &v in &f.lse {
                    assert!(
                        (v as f64 - ln_c).abs() <= 1e-6 * ln_c.max(1.0),
                        "{ctx}: {v}"
                    );
                }
            }
        }
    }
    // [-0.0, 0.0] -> [1/2, 1/2] exactly (both exps are exactly 1).
    for k in common::tiers() {
        let mut p = [9.0f32; 2];
        k.softmax(&[-0.0, 0.0], &mut p, 2).unwrap();
        assert_eq!(p, [0.5, 0.5], "{}", k.isa());
        k.softmax(&[0.0, -0.0], &mut p, 2).unwrap();
        assert_eq!(p, [0.5, 0.5], "{}", k.isa());
    }
}

/// A uniform row gives 1/C. The exact result is 1/C; the kernels' only roundings are the sum of
/// C equal terms (exact while C < 2^24 when each term is exp(0) = 1, and at worst a few
/// roundings of identical terms otherwise), the reciprocal and one product, so the result is
/// within 2 ulp of f32(1/C) — 4x tighter than the contract's 1e-6 relative (~8 ulp).
#[test]
fn uniform_rows_give_one_over_c() {
    let mut lens: Vec<usize> = (1..=70).collect();
    lens.extend([1000, 4097, ONLINE_MIN_COLS, LONG, 128256]);
    for k in common::tiers() {
        for &cols in &lens {
            for value in [0.0f32, 5.0, -17.25, -200.0, 1e30] {
                let x = vec![value; 2 * cols];
                let want = (1.0 / cols as f64) as f32;
                let tol = 2.0 * common::ulp(want);
                let mut p = vec![0.0f32; 2 * cols];
                k.softmax(&x, &mut p, cols).unwrap();
                let bad = p.iter().position(|&v| (v - want).abs() > tol);
                assert!(
                    bad.is_none(),
                    "tier {} cols {cols} value {value}: p[{}] = {:e}, want {want:e} within {tol:e}",
                    k.isa(),
                    bad.unwrap_or(0),
                    p[bad.unwrap_or(0)]
                );
                // log_softmax = -ln C, logsumexp = value + ln C.
                let ln_c = (cols as f64).ln();
                let mut l = vec![0.0f32; 2 * cols];
                k.log_softmax(&x, &mut l, cols).unwrap();
                for &v in &l {
                    assert!(
                        (v as f64 + ln_c).abs() <= 2e-6 * ln_c.max(1.0),
                        "tier {} cols {cols}: log_softmax {v} vs -ln C",
                        k.isa()
                    );
                }
                let mut s = vec![0.0f32; 2];
                k.logsumexp(&x, &mut s, cols).unwrap();
                let lse = value as f64 + ln_c;
                for &v in &s {
                    assert!(
                        (v as f64 - lse).abs() <= 1e-6 * lse.abs().max(1.0),
                        "tier {} cols {cols} value {value}: logsumexp {v} vs {lse}",
                        k.isa()
                    );
                }
            }
        }
    }
}

/// `[0, ln 2]` -> `[1/3, 2/3]` (and `ln` of those); logsumexp of C zeros is `ln C`.
#[test]
fn hand_derived_values() {
    let ln2 = std::f32::consts::LN_2;
    for k in common::tiers() {
        let isa = k.isa();
        let mut p = [0.0f32; 2];
        k.softmax(&[0.0, ln2], &mut p, 2).unwrap();
        // f32(ln 2) differs from ln 2 by < 2^-25, which moves the exact result by < 1e-8
        // relative; the contract gives 1e-6 + 2^-23 * ln 2.
        let tol = 1e-6 + o::Z_ROUND * 0.7;
        assert!(((p[0] as f64) * 3.0 - 1.0).abs() <= tol, "{isa}: {p:?}");
        assert!(((p[1] as f64) * 1.5 - 1.0).abs() <= tol, "{isa}: {p:?}");
        let mut l = [0.0f32; 2];
        k.log_softmax(&[0.0, ln2], &mut l, 2).unwrap();
        assert!(
            (l[0] as f64 - (1.0f64 / 3.0).ln()).abs() <= 2e-6 * 1.1,
            "{isa}: {l:?}"
        );
        assert!(
            (l[1] as f64 - (2.0f64 / 3.0).ln()).abs() <= 2e-6,
            "{isa}: {l:?}"
        );
        let mut s = [0.0f32; 1];
        k.logsumexp(&[0.0, ln2], &mut s, 2).unwrap();
        assert!(
            (s[0] as f64 - 3.0f64.ln()).abs() <= 1.1e-6 * 1.1,
            "{isa}: {s:?}"
        );

        // Three classes: [ln 1, ln 2, ln 5] -> [1/8, 2/8, 5/8]. Rounding ln 2 and ln 5 to f32
        // (< 1e-7 each) moves the exact result by < 2e-7 relative, hence 1.2e-6.
        let x = [0.0f32, 2.0f32.ln(), 5.0f32.ln()];
        let mut p = [0.0f32; 3];
        k.softmax(&x, &mut p, 3).unwrap();
        for (v, w) in p.iter().zip([0.125f64, 0.25, 0.625]) {
            assert!(
                (*v as f64 - w).abs() <= (1.2e-6 + o::Z_ROUND * 1.7) * w,
                "{isa}: {p:?}"
            );
        }

        // logsumexp of C zeros is ln C.
        for cols in [1usize, 2, 3, 10, 64, 65, 1000, LONG] {
            let x = vec![0.0f32; cols];
            let mut s = [9.0f32; 1];
            k.logsumexp(&x, &mut s, cols).unwrap();
            let want = (cols as f64).ln();
            assert!(
                (s[0] as f64 - want).abs() <= 1e-6 * want.max(1.0),
                "{isa}: logsumexp of {cols} zeros = {}, want ln C = {want}",
                s[0]
            );
        }
        // One class: softmax 1, log_softmax 0, logsumexp the logit itself.
        for v in [0.0f32, -3.5, 1e30, -f32::MAX, 7.0] {
            let mut p = [9.0f32; 1];
            k.softmax(&[v], &mut p, 1).unwrap();
            assert_eq!(p, [1.0], "{isa}: softmax([{v}])");
            k.log_softmax(&[v], &mut p, 1).unwrap();
            assert_eq!(p, [0.0], "{isa}: log_softmax([{v}])");
            k.logsumexp(&[v], &mut p, 1).unwrap();
            assert_eq!(p, [v], "{isa}: logsumexp([{v}])");
        }
    }
}

/// Backward passes by hand, with every intermediate exactly representable, so the result is
/// exact in any evaluation order.
#[test]
fn backward_hand_examples() {
    for k in common::tiers() {
        let isa = k.isa();
        // y = [1/4, 1/4, 1/2], dy = [1, 2, 3]: <dy, y> = 1/4 + 1/2 + 3/2 = 9/4;
        // dx = [1/4 (1 - 9/4), 1/4 (2 - 9/4), 1/2 (3 - 9/4)] = [-5/16, -1/16, 3/8].
        let mut dx = [9.0f32; 6];
        k.softmax_backward(
            &[0.25, 0.25, 0.5, 1.0, 0.0, 0.0],
            &[1.0, 2.0, 3.0, 4.0, -8.0, 0.5],
            &mut dx,
            3,
        )
        .unwrap();
        // Row 2: y = [1, 0, 0], dy = [4, -8, 0.5]: dot = 4, dx = [0, 0, 0].
        assert_eq!(dx, [-0.3125, -0.0625, 0.375, 0.0, 0.0, 0.0], "{isa}");
        // log_softmax backward: y = [0, -inf, -inf] (log of [1, 0, 0]), dy = [1, 2, 3]:
        // sum(dy) = 6, dx = dy - exp(y) * 6 = [-5, 2, 3].
        let mut dx = [9.0f32; 3];
        k.log_softmax_backward(&[0.0, NINF, NINF], &[1.0, 2.0, 3.0], &mut dx, 3)
            .unwrap();
        assert_eq!(dx, [-5.0, 2.0, 3.0], "{isa}");
        // y = ln [1/2, 1/2], dy = [1, 0]: dx = [1 - 1/2, 0 - 1/2] (exp within 2 ulp).
        let h = 0.5f32.ln();
        k.log_softmax_backward(&[h, h], &[1.0, 0.0], &mut dx[..2], 2)
            .unwrap();
        assert!(
            (dx[0] - 0.5).abs() <= 1e-6 && (dx[1] + 0.5).abs() <= 1e-6,
            "{isa}: {dx:?}"
        );
    }
}

/// Backward passes propagate NaN and infinities by IEEE rules: the pattern must equal the f64
/// formula's.
#[test]
fn backward_special_values() {
    for cols in [1usize, 3, 8, 17, 40, 1000] {
        let mut rng = common::rng(6000 + cols as u64);
        let mut ys = Vec::new();
        let mut ls = Vec::new();
        let mut dys = Vec::new();
        let specials = [f32::NAN, PINF, NINF];
        for r in 0..10 {
            let x = common::logits(&mut rng, cols, 3.0);
            let mut y = vec![0.0f32; cols];
            softmax_kernels::reference::softmax(&x, &mut y, cols).unwrap();
            let mut l = vec![0.0f32; cols];
            softmax_kernels::reference::log_softmax(&x, &mut l, cols).unwrap();
            let mut dy = common::logits(&mut rng, cols, 1.0);
            let at = rng.gen_range(0..cols);
            match r % 5 {
                0 => dy[at] = specials[r / 5 % 3],
                1 => y[at] = f32::NAN,
                2 => {
                    dy[at] = PINF;
                    dy[(at + 1) % cols] = NINF;
                }
                3 => {
                    // A zero probability (log-probability -inf) next to an infinite gradient.
                    y[at] = 0.0;
                    l[at] = NINF;
                    dy[(at + cols / 2) % cols] = PINF;
                }
                _ => {}
            }
            ys.extend_from_slice(&y);
            ls.extend_from_slice(&l);
            dys.extend_from_slice(&dy);
        }
        let (sx, st) = o::softmax_backward(&ys, &dys, cols);
        let (lx, lt) = o::log_softmax_backward(&ls, &dys, cols);
        for k in common::tiers() {
            let ctx = format!("tier {} cols {cols}", k.isa());
            let mut dx = vec![0.0f32; ys.len()];
            k.softmax_backward(&ys, &dys, &mut dx, cols).unwrap();
            ok(
                &ctx,
                o::check_backward("softmax_backward", cols, &dx, &sx, &st),
            );
            k.log_softmax_backward(&ls, &dys, &mut dx, cols).unwrap();
            ok(
                &ctx,
                o::check_backward("log_softmax_backward", cols, &dx, &lx, &lt),
            );
        }
    }
}
