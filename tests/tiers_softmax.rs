//! Every available tier against the f64 oracle and against the scalar reference, on many
//! shapes: every row length 1..=70 (around every vector width and the short-row limits of 32 and
//! 64 classes), 127..129, 1000, 4097, 32000, the online threshold (65535, 65536), an odd length
//! past it (69633 = 65536 + 4097) and 128256 (an LM vocabulary); 0, 1, 2, 3 and 17 rows; logits
//! at scales 1, 30 and 1e4, rows shifted by 0, -200, +150 or -3000; inputs and outputs misaligned by 0..=15 floats from a 64-byte
//! boundary, with guard regions around every buffer.
//!
//! Functions: softmax, log_softmax (out of place, in place, with options), logsumexp,
//! softmax_backward and log_softmax_backward.
//!
//! The last test, `required_tiers_ran`, enforces `SOFTMAX_KERNELS_REQUIRE=avx512,avx2,...`.

#[macro_use]
mod common;

use std::collections::BTreeSet;

use common::oracle::{self as o, REF_SLACK};
use common::{ok, Guarded};
use rand::Rng;
use softmax_kernels::{reference, Isa, Kernels, MaskedRows, SoftmaxOptions};

/// Output buffers start out as this quiet NaN, so an element a kernel forgets to write fails
/// the NaN-pattern check.
const UNWRITTEN: f32 = f32::from_bits(0x7FC0_BEEF);

#[derive(Clone, Copy, Debug)]
struct Case {
    rows: usize,
    cols: usize,
    scale: f32,
    /// Misalignment (floats past a 64-byte boundary) of the input; outputs use others.
    misalign: usize,
    seed: u64,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rows {} cols {} scale {} misalign {} seed {}",
            self.rows, self.cols, self.scale, self.misalign, self.seed
        )
    }
}

const SCALES: [f32; 3] = [1.0, 30.0, 1e4];

fn cases(cols: &[usize], rows: &[usize]) -> Vec<Case> {
    let mut v = Vec::new();
    for &c in cols {
        for &r in rows {
            for &scale in &SCALES {
                let i = v.len();
                v.push(Case {
                    rows: r,
                    cols: c,
                    scale,
                    // Cycles through 1..=15 (and 0 every 16th case, the aligned baseline).
                    misalign: (i * 7 + 1) % 16,
                    seed: 0x5EED_0000 + (c as u64) * 1000 + (r as u64) * 10 + i as u64,
                });
            }
        }
    }
    v
}

/// What the reference computed for a case, and the oracle's values.
struct Expected {
    x: Vec<f32>,
    softmax: Vec<f64>,
    log_softmax: Vec<f64>,
    lse: Vec<f64>,
    ref_softmax: Vec<f32>,
    ref_log_softmax: Vec<f32>,
    ref_lse: Vec<f32>,
    /// Backward inputs: softmax output and its upstream gradient.
    sb_y: Vec<f32>,
    sb_dy: Vec<f32>,
    sb_dx: Vec<f64>,
    sb_tol: Vec<f64>,
    ref_sb: Vec<f32>,
    /// Backward inputs: log_softmax output and its upstream gradient.
    lb_y: Vec<f32>,
    lb_dy: Vec<f32>,
    lb_dx: Vec<f64>,
    lb_tol: Vec<f64>,
    ref_lb: Vec<f32>,
}

fn expected(c: &Case) -> Expected {
    let mut rng = common::rng(c.seed);
    let n = c.rows * c.cols;
    let mut x = common::logits(&mut rng, n, c.scale);
    // Shift whole rows (results are shift-invariant, the kernels' intermediate values are not):
    // all-negative rows far below 0, all-positive rows, and unshifted ones.
    for (r, row) in x.chunks_mut(c.cols).enumerate() {
        let offset = [0.0f32, -200.0, 150.0, -3000.0][(r + c.seed as usize) % 4];
        row.iter_mut().for_each(|v| *v += offset);
    }
    let ctx = format!("reference vs oracle, {c}");

    let softmax = o::softmax(&x, c.cols, false);
    let log_softmax = o::log_softmax(&x, c.cols, false);
    let lse = o::logsumexp(&x, c.cols);

    // The reference must itself satisfy the contract against the oracle.
    let mut ref_softmax = vec![UNWRITTEN; n];
    reference::softmax(&x, &mut ref_softmax, c.cols).unwrap();
    ok(
        &ctx,
        o::check_softmax(&x, c.cols, &ref_softmax, &softmax, 0.0),
    );
    let mut ref_log_softmax = vec![UNWRITTEN; n];
    reference::log_softmax(&x, &mut ref_log_softmax, c.cols).unwrap();
    ok(
        &ctx,
        o::check_log_softmax(&x, c.cols, &ref_log_softmax, &log_softmax, 0.0),
    );
    let mut ref_lse = vec![UNWRITTEN; c.rows];
    reference::logsumexp(&x, &mut ref_lse, c.cols).unwrap();
    ok(&ctx, o::check_logsumexp(&ref_lse, &lse, 0.0));

    // Backward inputs: the forward outputs (as a training step would pass them) and an
    // upstream gradient of mixed signs and magnitudes.
    let sb_y = ref_softmax.clone();
    let sb_dy: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
    let (sb_dx, sb_tol) = o::softmax_backward(&sb_y, &sb_dy, c.cols);
    let mut ref_sb = vec![UNWRITTEN; n];
    reference::softmax_backward(&sb_y, &sb_dy, &mut ref_sb, c.cols).unwrap();
    ok(
        &ctx,
        o::check_backward("softmax_backward", c.cols, &ref_sb, &sb_dx, &sb_tol),
    );

    let lb_y = ref_log_softmax.clone();
    let lb_dy: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
    let (lb_dx, lb_tol) = o::log_softmax_backward(&lb_y, &lb_dy, c.cols);
    let mut ref_lb = vec![UNWRITTEN; n];
    reference::log_softmax_backward(&lb_y, &lb_dy, &mut ref_lb, c.cols).unwrap();
    ok(
        &ctx,
        o::check_backward("log_softmax_backward", c.cols, &ref_lb, &lb_dx, &lb_tol),
    );

    Expected {
        x,
        softmax,
        log_softmax,
        lse,
        ref_softmax,
        ref_log_softmax,
        ref_lse,
        sb_y,
        sb_dy,
        sb_dx,
        sb_tol,
        ref_sb,
        lb_y,
        lb_dy,
        lb_dx,
        lb_tol,
        ref_lb,
    }
}

/// Checks that a guarded input still holds exactly `orig` and that its guards are intact.
fn input_intact(ctx: &str, g: &Guarded, orig: &[f32]) {
    g.assert_guards(ctx);
    ok(ctx, o::check_bits("input was modified", g.slice(), orig));
}

/// Tolerances for comparing with the reference's backward result instead of the exact one.
fn ref_tol(tol: &[f64], r: &[f32]) -> Vec<f64> {
    tol.iter()
        .zip(r)
        .map(|(&t, &v)| t + REF_SLACK * (v as f64).abs())
        .collect()
}

/// Runs every function of tier `k` on case `c` and checks everything.
fn check_tier(k: &Kernels, c: &Case, e: &Expected) {
    let isa = k.isa();
    let (n, cols) = (c.rows * c.cols, c.cols);
    let mis = c.misalign;
    let mis_out = (mis + 5) % 16;
    let zero = SoftmaxOptions::default().masked_rows(MaskedRows::Zero);
    let ctx = |what: &str| format!("tier {isa}, {what}, {c}");

    // ---- softmax, out of place.
    let xin = Guarded::from_slice(&e.x, mis);
    let mut y = Guarded::filled(n, UNWRITTEN, mis_out);
    k.softmax(xin.slice(), y.slice_mut(), cols).unwrap();
    let cx = ctx("softmax");
    y.assert_guards(&cx);
    input_intact(&cx, &xin, &e.x);
    ok(
        &cx,
        o::check_softmax(&e.x, cols, y.slice(), &e.softmax, 0.0),
    );
    ok(
        format!("{cx} (vs reference)"),
        o::check_softmax(&e.x, cols, y.slice(), &o::widen(&e.ref_softmax), REF_SLACK),
    );
    if isa == Isa::Scalar {
        ok(
            &cx,
            o::check_bits(
                "scalar tier vs reference::softmax",
                y.slice(),
                &e.ref_softmax,
            ),
        );
    }
    let sm = y.to_vec();

    // softmax in place: bit-identical to out of place.
    let mut xi = Guarded::from_slice(&e.x, mis_out);
    k.softmax_inplace(xi.slice_mut(), cols).unwrap();
    let cx = ctx("softmax_inplace");
    xi.assert_guards(&cx);
    ok(
        &cx,
        o::check_bits("in place vs out of place", xi.slice(), &sm),
    );

    // With MaskedRows::Zero: no row here is fully masked, so the same bits.
    let mut y = Guarded::filled(n, UNWRITTEN, (mis + 3) % 16);
    k.softmax_with(xin.slice(), y.slice_mut(), cols, zero)
        .unwrap();
    let cx = ctx("softmax_with(Zero)");
    y.assert_guards(&cx);
    input_intact(&cx, &xin, &e.x);
    ok(&cx, o::check_bits("options vs default", y.slice(), &sm));
    let mut xi = Guarded::from_slice(&e.x, (mis + 9) % 16);
    k.softmax_inplace_with(xi.slice_mut(), cols, zero).unwrap();
    let cx = ctx("softmax_inplace_with(Zero)");
    xi.assert_guards(&cx);
    ok(
        &cx,
        o::check_bits("in place with options vs out of place", xi.slice(), &sm),
    );

    // ---- log_softmax.
    let mut y = Guarded::filled(n, UNWRITTEN, mis_out);
    k.log_softmax(xin.slice(), y.slice_mut(), cols).unwrap();
    let cx = ctx("log_softmax");
    y.assert_guards(&cx);
    input_intact(&cx, &xin, &e.x);
    ok(
        &cx,
        o::check_log_softmax(&e.x, cols, y.slice(), &e.log_softmax, 0.0),
    );
    ok(
        format!("{cx} (vs reference)"),
        o::check_log_softmax(
            &e.x,
            cols,
            y.slice(),
            &o::widen(&e.ref_log_softmax),
            REF_SLACK,
        ),
    );
    if isa == Isa::Scalar {
        ok(
            &cx,
            o::check_bits(
                "scalar tier vs reference::log_softmax",
                y.slice(),
                &e.ref_log_softmax,
            ),
        );
    }
    let lsm = y.to_vec();

    let mut xi = Guarded::from_slice(&e.x, mis_out);
    k.log_softmax_inplace(xi.slice_mut(), cols).unwrap();
    let cx = ctx("log_softmax_inplace");
    xi.assert_guards(&cx);
    ok(
        &cx,
        o::check_bits("in place vs out of place", xi.slice(), &lsm),
    );

    let mut y = Guarded::filled(n, UNWRITTEN, (mis + 3) % 16);
    k.log_softmax_with(xin.slice(), y.slice_mut(), cols, zero)
        .unwrap();
    let cx = ctx("log_softmax_with(Zero)");
    y.assert_guards(&cx);
    ok(&cx, o::check_bits("options vs default", y.slice(), &lsm));
    let mut xi = Guarded::from_slice(&e.x, (mis + 9) % 16);
    k.log_softmax_inplace_with(xi.slice_mut(), cols, zero)
        .unwrap();
    let cx = ctx("log_softmax_inplace_with(Zero)");
    xi.assert_guards(&cx);
    ok(
        &cx,
        o::check_bits("in place with options vs out of place", xi.slice(), &lsm),
    );

    // ---- logsumexp.
    let mut out = Guarded::filled(c.rows, UNWRITTEN, mis_out);
    k.logsumexp(xin.slice(), out.slice_mut(), cols).unwrap();
    let cx = ctx("logsumexp");
    out.assert_guards(&cx);
    input_intact(&cx, &xin, &e.x);
    ok(&cx, o::check_logsumexp(out.slice(), &e.lse, 0.0));
    ok(
        format!("{cx} (vs reference)"),
        o::check_logsumexp(out.slice(), &o::widen(&e.ref_lse), REF_SLACK),
    );
    if isa == Isa::Scalar {
        ok(
            &cx,
            o::check_bits(
                "scalar tier vs reference::logsumexp",
                out.slice(),
                &e.ref_lse,
            ),
        );
    }

    // ---- softmax_backward.
    let yg = Guarded::from_slice(&e.sb_y, mis);
    let dyg = Guarded::from_slice(&e.sb_dy, (mis + 11) % 16);
    let mut dx = Guarded::filled(n, UNWRITTEN, mis_out);
    k.softmax_backward(yg.slice(), dyg.slice(), dx.slice_mut(), cols)
        .unwrap();
    let cx = ctx("softmax_backward");
    dx.assert_guards(&cx);
    input_intact(&cx, &yg, &e.sb_y);
    input_intact(&cx, &dyg, &e.sb_dy);
    ok(
        &cx,
        o::check_backward("softmax_backward", cols, dx.slice(), &e.sb_dx, &e.sb_tol),
    );
    ok(
        format!("{cx} (vs reference)"),
        o::check_backward(
            "softmax_backward",
            cols,
            dx.slice(),
            &o::widen(&e.ref_sb),
            &ref_tol(&e.sb_tol, &e.ref_sb),
        ),
    );
    if isa == Isa::Scalar {
        ok(
            &cx,
            o::check_bits("scalar tier vs reference", dx.slice(), &e.ref_sb),
        );
    }

    // ---- log_softmax_backward.
    let yg = Guarded::from_slice(&e.lb_y, mis);
    let dyg = Guarded::from_slice(&e.lb_dy, (mis + 11) % 16);
    let mut dx = Guarded::filled(n, UNWRITTEN, mis_out);
    k.log_softmax_backward(yg.slice(), dyg.slice(), dx.slice_mut(), cols)
        .unwrap();
    let cx = ctx("log_softmax_backward");
    dx.assert_guards(&cx);
    input_intact(&cx, &yg, &e.lb_y);
    input_intact(&cx, &dyg, &e.lb_dy);
    ok(
        &cx,
        o::check_backward(
            "log_softmax_backward",
            cols,
            dx.slice(),
            &e.lb_dx,
            &e.lb_tol,
        ),
    );
    ok(
        format!("{cx} (vs reference)"),
        o::check_backward(
            "log_softmax_backward",
            cols,
            dx.slice(),
            &o::widen(&e.ref_lb),
            &ref_tol(&e.lb_tol, &e.ref_lb),
        ),
    );
    if isa == Isa::Scalar {
        ok(
            &cx,
            o::check_bits("scalar tier vs reference", dx.slice(), &e.ref_lb),
        );
    }
}

/// Every case on tier `k`.
fn run(k: &Kernels, cases: &[Case]) {
    for c in cases {
        check_tier(k, c, &expected(c));
    }
}

// One test per tier and family of shapes (`tiers_softmax::short_rows_1_to_70::avx2`, ...).
per_tier!(
    short_rows_1_to_70 => |k| {
        let cols: Vec<usize> = (1..=70).collect();
        run(k, &cases(&cols, &[0, 1, 2, 3, 17]));
    },
    medium_rows => |k| run(k, &cases(&[127, 128, 129, 1000, 4097], &[0, 1, 2, 3, 17])),
    rows_of_32000 => |k| run(k, &cases(&[32000], &[0, 1, 2, 3])),
    // One below the threshold (three-pass path on the SIMD tiers) and exactly at it (online
    // path, 16 full chunks).
    rows_at_the_online_threshold => |k| run(k, &cases(&[65535, 65536], &[1, 2])),
    // 65536 + 4097: online path with 17 full chunks and a 1-float last chunk.
    long_rows_online_odd => |k| run(k, &cases(&[69633], &[0, 1, 2, 3])),
    long_rows_128256 => |k| run(k, &cases(&[128256], &[0, 1, 2])),
);

/// The free functions run `Kernels::active()` (or fail the same way it does).
#[test]
fn free_functions_match_active_tier() {
    let active = Kernels::active();
    for (rows, cols) in [(3usize, 10usize), (2, 1000), (1, 69633)] {
        let mut rng = common::rng(7 + cols as u64);
        let x = common::logits(&mut rng, rows * cols, 20.0);
        let dy = common::logits(&mut rng, rows * cols, 1.0);
        let mut a = vec![0.0f32; rows * cols];
        let mut b = vec![0.0f32; rows * cols];
        let r = softmax_kernels::softmax(&x, &mut a, cols);
        let k = match &active {
            Ok(k) => *k,
            Err(e) => {
                assert_eq!(r, Err(e.clone()));
                return;
            }
        };
        r.unwrap();
        k.softmax(&x, &mut b, cols).unwrap();
        ok("free softmax", o::check_bits("free vs active", &a, &b));

        softmax_kernels::log_softmax(&x, &mut a, cols).unwrap();
        k.log_softmax(&x, &mut b, cols).unwrap();
        ok("free log_softmax", o::check_bits("free vs active", &a, &b));

        let mut la = vec![0.0f32; rows];
        let mut lb = vec![0.0f32; rows];
        softmax_kernels::logsumexp(&x, &mut la, cols).unwrap();
        k.logsumexp(&x, &mut lb, cols).unwrap();
        ok("free logsumexp", o::check_bits("free vs active", &la, &lb));

        let mut xa = x.clone();
        softmax_kernels::softmax_inplace(&mut xa, cols).unwrap();
        k.softmax(&x, &mut b, cols).unwrap();
        ok(
            "free softmax_inplace",
            o::check_bits("free vs active", &xa, &b),
        );
        let mut xa = x.clone();
        softmax_kernels::log_softmax_inplace(&mut xa, cols).unwrap();
        k.log_softmax(&x, &mut b, cols).unwrap();
        ok(
            "free log_softmax_inplace",
            o::check_bits("free vs active", &xa, &b),
        );

        let y = b.clone();
        softmax_kernels::softmax_backward(&y, &dy, &mut a, cols).unwrap();
        k.softmax_backward(&y, &dy, &mut b, cols).unwrap();
        ok(
            "free softmax_backward",
            o::check_bits("free vs active", &a, &b),
        );
        softmax_kernels::log_softmax_backward(&y, &dy, &mut a, cols).unwrap();
        k.log_softmax_backward(&y, &dy, &mut b, cols).unwrap();
        ok(
            "free log_softmax_backward",
            o::check_bits("free vs active", &a, &b),
        );
    }
}

/// The checks can fail: outputs perturbed just past the contract are rejected, outputs
/// perturbed well inside it are accepted.
#[test]
fn oracle_checks_reject_perturbed_outputs() {
    let cols = 8;
    let x: Vec<f32> = vec![0.5, -1.0, 2.0, 0.0, -3.5, 1.25, -0.75, 3.0];
    let e = o::softmax(&x, cols, false);
    let p: Vec<f32> = e.iter().map(|&v| v as f32).collect();
    ok("exact softmax", o::check_softmax(&x, cols, &p, &e, 0.0));

    // Row sums to 1 within cols * 2^-24 = 4.8e-7; elements within 1e-6 + 2^-23 |z - m|.
    let scaled = |f: f64| -> Vec<f32> { e.iter().map(|&v| (v * f) as f32).collect() };
    ok(
        "tiny scale",
        o::check_softmax(&x, cols, &scaled(1.0 + 1e-7), &e, 0.0),
    );
    // 3e-7 per element passes the element bound but the sum is 3e-7 off... still inside
    // 8 * 2^-24 = 4.8e-7.
    ok(
        "3e-7 scale",
        o::check_softmax(&x, cols, &scaled(1.0 + 3e-7), &e, 0.0),
    );
    // 6e-7 relative on every element: inside the element bound, outside the sum bound.
    let r = o::check_softmax(&x, cols, &scaled(1.0 + 6e-7), &e, 0.0);
    assert!(
        r.is_err() && r.unwrap_err().contains("sums to"),
        "sum check"
    );
    // One element off by 3e-6 relative (the max element, |z - m| = 0): element check.
    let mut q = p.clone();
    q[7] = (e[7] * (1.0 + 3e-6)) as f32;
    assert!(
        o::check_softmax(&x, cols, &q, &e, 0.0).is_err(),
        "element check"
    );
    // NaN, infinity, negative value, nonzero for a -inf logit.
    let mut q = p.clone();
    q[2] = f32::NAN;
    assert!(o::check_softmax(&x, cols, &q, &e, 0.0).is_err(), "NaN");
    let mut q = p.clone();
    q[2] = f32::INFINITY;
    assert!(o::check_softmax(&x, cols, &q, &e, 0.0).is_err(), "inf");
    let mut xm = x.clone();
    xm[4] = f32::NEG_INFINITY;
    let em = o::softmax(&xm, cols, false);
    let mut q: Vec<f32> = em.iter().map(|&v| v as f32).collect();
    ok("-inf logit", o::check_softmax(&xm, cols, &q, &em, 0.0));
    q[4] = 1e-40;
    assert!(
        o::check_softmax(&xm, cols, &q, &em, 0.0).is_err(),
        "-inf gives exactly 0"
    );
    // The tolerance grows with |z - max|: at |z - m| = 1e4 it is 1e-6 + 1.2e-3.
    let xs: Vec<f32> = vec![0.0, -10.0];
    let es = o::softmax(&xs, 2, false);
    let mut q: Vec<f32> = es.iter().map(|&v| v as f32).collect();
    q[1] = (es[1] * (1.0 + 1.1e-6)) as f32; // 1e-6 + 10 * 2^-23 = 2.2e-6 allowed
    ok("z-round term", o::check_softmax(&xs, 2, &q, &es, 0.0));
    q[1] = (es[1] * (1.0 + 2.5e-6)) as f32;
    assert!(
        o::check_softmax(&xs, 2, &q, &es, 0.0).is_err(),
        "past z-round term"
    );
    // Outputs below 1e-30: absolute 1e-30.
    let xt: Vec<f32> = vec![0.0, -80.0];
    let et = o::softmax(&xt, 2, false);
    let mut q: Vec<f32> = et.iter().map(|&v| v as f32).collect();
    q[1] = 0.0;
    ok(
        "tiny output flushed",
        o::check_softmax(&xt, 2, &q, &et, 0.0),
    );
    q[1] = 2e-30;
    assert!(
        o::check_softmax(&xt, 2, &q, &et, 0.0).is_err(),
        "tiny absolute"
    );

    // log_softmax: 2e-6 * max(1, |v|).
    let l = o::log_softmax(&x, cols, false);
    let lq: Vec<f32> = l.iter().map(|&v| v as f32).collect();
    ok(
        "exact log_softmax",
        o::check_log_softmax(&x, cols, &lq, &l, 0.0),
    );
    let mut q = lq.clone();
    q[0] += 1e-6 * (l[0].abs().max(1.0) as f32);
    ok(
        "log_softmax inside",
        o::check_log_softmax(&x, cols, &q, &l, 0.0),
    );
    let mut q = lq.clone();
    q[0] += 3e-6 * (l[0].abs().max(1.0) as f32);
    assert!(
        o::check_log_softmax(&x, cols, &q, &l, 0.0).is_err(),
        "log_softmax"
    );
    let mut q = lq.clone();
    q[3] = f32::NEG_INFINITY;
    assert!(
        o::check_log_softmax(&x, cols, &q, &l, 0.0).is_err(),
        "spurious -inf"
    );
    // An exact value that overflows f32 must be an infinity.
    let xo = vec![f32::MAX, -f32::MAX];
    let lo = o::log_softmax(&xo, 2, false);
    ok(
        "overflow",
        o::check_log_softmax(&xo, 2, &[0.0, f32::NEG_INFINITY], &lo, 0.0),
    );
    assert!(o::check_log_softmax(&xo, 2, &[0.0, -f32::MAX], &lo, 0.0).is_err());

    // logsumexp: 1e-6 * max(1, |lse|).
    let s = o::logsumexp(&x, cols);
    let g = s[0] as f32;
    ok("exact lse", o::check_logsumexp(&[g], &s, 0.0));
    let m = s[0].abs().max(1.0);
    ok(
        "lse inside",
        o::check_logsumexp(&[(s[0] + 5e-7 * m) as f32], &s, 0.0),
    );
    assert!(o::check_logsumexp(&[(s[0] + 2e-6 * m) as f32], &s, 0.0).is_err());
    assert!(o::check_logsumexp(&[f32::NAN], &s, 0.0).is_err());
    assert!(o::check_logsumexp(&[0.0], &[f64::NAN], 0.0).is_err());
    assert!(o::check_logsumexp(&[f32::MAX], &[f64::INFINITY], 0.0).is_err());

    // Backward.
    let y: Vec<f32> = p.clone();
    let dy: Vec<f32> = vec![1.0, -2.0, 0.5, 0.25, -1.0, 2.0, 0.0, 1.5];
    let (bx, bt) = o::softmax_backward(&y, &dy, cols);
    let bq: Vec<f32> = bx.iter().map(|&v| v as f32).collect();
    ok(
        "exact backward",
        o::check_backward("sb", cols, &bq, &bx, &bt),
    );
    let mut q = bq.clone();
    q[2] = (bx[2] + 3.0 * bt[2]) as f32;
    assert!(o::check_backward("sb", cols, &q, &bx, &bt).is_err());
    let (lx, lt) = o::log_softmax_backward(&lq, &dy, cols);
    let lbq: Vec<f32> = lx.iter().map(|&v| v as f32).collect();
    ok(
        "exact log backward",
        o::check_backward("lb", cols, &lbq, &lx, &lt),
    );
    let mut q = lbq.clone();
    q[5] = (lx[5] + 3.0 * lt[5]) as f32;
    assert!(o::check_backward("lb", cols, &q, &lx, &lt).is_err());

    // Guards catch a write one past the end and one before the start.
    let mut g = Guarded::filled(10, 0.0, 3);
    g.assert_guards("fresh");
    let p = g.slice_mut().as_mut_ptr();
    // SAFETY: the guard region after the slice belongs to the same allocation.
    unsafe { *p.add(10) = 1.0 };
    assert!(g.check_guards().is_err());
    let mut g = Guarded::filled(10, 0.0, 0);
    let p = g.slice_mut().as_mut_ptr();
    // SAFETY: the guard region before the slice belongs to the same allocation.
    unsafe { *p.sub(1) = 1.0 };
    assert!(g.check_guards().is_err());

    // Bit comparison distinguishes -0.0 and NaN payloads.
    assert!(o::check_bits("z", &[0.0], &[-0.0]).is_err());
    assert!(o::check_bits("n", &[f32::NAN], &[f32::from_bits(0x7FC0_0001)]).is_err());
}

/// Enforces `SOFTMAX_KERNELS_REQUIRE=avx512,avx2,portable` (comma list): each named tier must be
/// available on this CPU and must have run the tier tests. This test runs every tier through a
/// quick softmax/log_softmax/logsumexp comparison itself (tests of one binary may run in any
/// order), records which ran, then checks the list.
/// Short softmax rows skip the row maximum when the unshifted sum `sum exp(z)` lands in
/// `[2^-26, 2^60]` (`generic::softmax::exp_unshifted`), and fall back to the shifted path
/// otherwise. Rows built around the edges of that window, on every tier, against the f64
/// oracle: a maximum just below and above `60 ln 2 = 41.59`, at and past the clamp (64, 100,
/// 1e30), just above and below `-26 ln 2 = -18.02`, with entries whose `exp` is subnormal or 0,
/// `-inf` entries, all `-inf`, NaN; single rows, pairs and odd counts (the pairwise path and the
/// one-row path), in place and out of place.
#[test]
fn short_softmax_unshifted_window_edges() {
    let maxima = [
        0.0f32, 41.5, 41.58, 41.6, 41.7, 63.9, 64.0, 64.1, 100.0, 1e30, -17.9, -18.0, -18.1, -30.0,
        -90.0,
    ];
    let mut rng = common::rng(0x0E_D6E5);
    for k in common::tiers() {
        for &cols in &[1usize, 2, 7, 10, 16, 17, 33, 64] {
            let mut x = Vec::new();
            for (i, &m) in maxima.iter().enumerate() {
                let mut row: Vec<f32> = (0..cols)
                    .map(|j| match (i + j) % 5 {
                        0 => m - rng.gen_range(0.0f32..3.0),
                        1 => m - rng.gen_range(0.0f32..30.0),
                        2 => -87.5,
                        3 => f32::NEG_INFINITY,
                        _ => m - 200.0,
                    })
                    .collect();
                row[(i * 7) % cols] = m;
                x.extend(row);
                // The same maximum behind a first entry inside the window: the row tries the
                // unshifted sum, which must reject it past 41.6 (arguments past 64 are clamped).
                if cols > 1 && m > 40.0 {
                    let mut row = vec![-1.0f32; cols];
                    row[0] = 0.0;
                    row[cols - 1] = m;
                    if cols > 2 {
                        row[cols - 2] = m - 0.5;
                    }
                    x.extend(row);
                }
            }
            // All -inf, and a NaN next to a huge entry.
            x.extend(std::iter::repeat_n(f32::NEG_INFINITY, cols));
            let mut nan_row = vec![1.0f32; cols];
            nan_row[cols - 1] = f32::NAN;
            x.extend(nan_row);
            let rows = x.len() / cols;
            let want = o::softmax(&x, cols, false);
            for take in [1usize, 2, 3, rows] {
                let n = take * cols;
                let ctx = format!("{:?} cols {cols} rows {take}", k.isa());
                for r0 in (0..rows).step_by(take) {
                    let end = ((r0 + take) * cols).min(x.len());
                    let xs = &x[r0 * cols..end];
                    let mut y = vec![UNWRITTEN; xs.len()];
                    k.softmax(xs, &mut y, cols).unwrap();
                    ok(
                        &ctx,
                        o::check_softmax(xs, cols, &y, &want[r0 * cols..end], 0.0),
                    );
                    let mut z = xs.to_vec();
                    k.softmax_inplace(&mut z, cols).unwrap();
                    ok(&ctx, o::check_bits("in place", &z, &y));
                }
                let _ = n;
            }
        }
    }
}

#[test]
fn required_tiers_ran() {
    let mut ran_here = BTreeSet::new();
    for k in common::tiers() {
        for &(rows, cols) in &[(3usize, 37usize), (2, 1000), (1, 69633)] {
            let c = Case {
                rows,
                cols,
                scale: 30.0,
                misalign: 5,
                seed: 99 + cols as u64,
            };
            let e = expected(&c);
            check_tier(k, &c, &e);
        }
        common::record_ran(k.isa());
        ran_here.insert(k.isa());
    }
    let all_ran = common::ran();
    let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
    eprintln!(
        "tiers that ran: {:?}",
        ran_here.iter().map(|i| i.name()).collect::<Vec<_>>()
    );

    let Ok(req) = std::env::var("SOFTMAX_KERNELS_REQUIRE") else {
        return;
    };
    for name in req.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let isa: Isa = name.parse().unwrap_or_else(|e| {
            panic!("SOFTMAX_KERNELS_REQUIRE names {name:?}, which is not a tier ({names:?}): {e}")
        });
        assert!(
            isa.is_available(),
            "SOFTMAX_KERNELS_REQUIRE requires tier {isa}, but it is not available on this CPU \
             (available: {:?})",
            Isa::available()
        );
        assert!(
            ran_here.contains(&isa) && all_ran.contains(&isa),
            "SOFTMAX_KERNELS_REQUIRE requires tier {isa}, but it did not run (ran: {ran_here:?})"
        );
    }
}

/// logsumexp on short rows (at most 4 vectors: 32 classes on portable/avx2, 64 on avx512),
/// with `out` exactly `rows` floats long. Natively this checks values and guards; its real
/// purpose is Miri, which flags any pointer formed past `out`'s allocation:
///
/// ```text
/// cargo +nightly miri test --test tiers_softmax logsumexp_short_rows_out_pointer_in_bounds
/// ```
///
/// (Under Miri only the scalar and portable tiers are available.)
#[test]
fn logsumexp_short_rows_out_pointer_in_bounds() {
    for k in common::tiers() {
        for (rows, cols) in [(3usize, 10usize), (2, 31), (4, 2)] {
            let mut rng = common::rng(cols as u64);
            let x = common::logits(&mut rng, rows * cols, 5.0);
            // A plain Vec of exactly `rows` floats: its allocation ends at the last result.
            let mut out = vec![UNWRITTEN; rows];
            k.logsumexp(&x, &mut out, cols).unwrap();
            ok(
                format!("tier {} logsumexp {rows}x{cols}", k.isa()),
                o::check_logsumexp(&out, &o::logsumexp(&x, cols), 0.0),
            );
        }
    }
}

/// Long rows built so that summing in f32 over the whole row loses accuracy: one dominant
/// logit (exp 1) and every other term about 2^-25.6, below half an ulp of 1. A lane that adds
/// all its terms in f32 after the dominant one drops each of them: for 128256 classes that is
/// ~2000 x 2e-8 = 4e-5 of the sum, far outside the contract (1e-6). The documented design (f32
/// lanes over short blocks, f64 across blocks) loses at most a block's worth (~1e-7).
/// The backward passes get the same shape: a dominant y (or dy) and many tiny terms.
#[test]
fn long_row_sums_stay_accurate_adversarial() {
    let tiers = common::tiers();
    for cols in [4097usize, 32000, 69633, 128256] {
        let mut rng = common::rng(cols as u64 ^ 0xADD);
        let small = -25.6f32 * std::f32::consts::LN_2; // exp = 2^-25.6 ~ 2e-8
        for dominant in [0usize, 1, 15, cols / 2, cols - 1] {
            let mut x: Vec<f32> = (0..cols)
                .map(|_| small + rng.gen_range(-0.05f32..0.05))
                .collect();
            x[dominant] = 0.0;
            let ctx = format!("cols {cols}, dominant logit at {dominant}");
            let sm = o::softmax(&x, cols, false);
            let lsm = o::log_softmax(&x, cols, false);
            let lse = o::logsumexp(&x, cols);
            // Backward: y with one dominant entry and tiny others, dy ~ 1 (softmax_backward's
            // dot); y = log-probabilities and dy with one dominant entry (the sum of dy).
            let y: Vec<f32> = x.iter().map(|&v| v.exp()).collect();
            let dy: Vec<f32> = (0..cols).map(|_| rng.gen_range(0.9f32..1.1)).collect();
            let (sbx, sbt) = o::softmax_backward(&y, &dy, cols);
            let mut dy2: Vec<f32> = y.iter().map(|&v| v * rng.gen_range(0.9f32..1.1)).collect();
            dy2[dominant] = 1.0;
            let (lbx, lbt) = o::log_softmax_backward(&x, &dy2, cols);
            for &k in &tiers {
                let cx = format!("tier {}, {ctx}", k.isa());
                let mut out = vec![UNWRITTEN; cols];
                k.softmax(&x, &mut out, cols).unwrap();
                ok(
                    format!("{cx}: softmax"),
                    o::check_softmax(&x, cols, &out, &sm, 0.0),
                );
                k.log_softmax(&x, &mut out, cols).unwrap();
                ok(
                    format!("{cx}: log_softmax"),
                    o::check_log_softmax(&x, cols, &out, &lsm, 0.0),
                );
                let mut s = [UNWRITTEN; 1];
                k.logsumexp(&x, &mut s, cols).unwrap();
                ok(
                    format!("{cx}: logsumexp"),
                    o::check_logsumexp(&s, &lse, 0.0),
                );
                k.softmax_backward(&y, &dy, &mut out, cols).unwrap();
                ok(
                    format!("{cx}: softmax_backward"),
                    o::check_backward("softmax_backward", cols, &out, &sbx, &sbt),
                );
                k.log_softmax_backward(&x, &dy2, &mut out, cols).unwrap();
                ok(
                    format!("{cx}: log_softmax_backward"),
                    o::check_backward("log_softmax_backward", cols, &out, &lbx, &lbt),
                );
            }
        }
    }
}

/// In place, short rows whose length is not a multiple of the lanes go through a stack buffer a
/// chunk of rows at a time (`512 / cols` rows). Many rows across several chunk boundaries:
/// the in-place softmax and log_softmax must equal the out-of-place ones bit for bit, on every
/// tier, and leave the guard regions around the buffer alone.
#[test]
fn inplace_short_rows_across_chunks_match_out_of_place() {
    type OutOfPlace = dyn Fn(&Kernels, &[f32], &mut [f32], usize);
    type InPlace = dyn Fn(&Kernels, &mut [f32], usize);
    let fns: [(&str, &OutOfPlace, &InPlace); 2] = [
        (
            "softmax",
            &|k, x, y, c| k.softmax(x, y, c).unwrap(),
            &|k, z, c| k.softmax_inplace(z, c).unwrap(),
        ),
        (
            "log_softmax",
            &|k, x, y, c| k.log_softmax(x, y, c).unwrap(),
            &|k, z, c| k.log_softmax_inplace(z, c).unwrap(),
        ),
    ];
    let mut g = common::rng(0x5eed_0018);
    for k in common::tiers() {
        for &cols in &[1usize, 3, 7, 10, 17, 31, 33, 63] {
            for &rows in &[2usize, 101, 102, 103, 341, 342, 1025] {
                let x = common::logits(&mut g, rows * cols, 30.0);
                for (misalign, (name, out_of_place, in_place)) in fns.iter().enumerate() {
                    let ctx = format!("{:?} {rows}x{cols} {name}", k.isa());
                    let mut want = vec![0.0f32; rows * cols];
                    out_of_place(k, &x, &mut want, cols);
                    let mut z = Guarded::from_slice(&x, 3 + 2 * misalign);
                    in_place(k, z.slice_mut(), cols);
                    z.assert_guards(&ctx);
                    assert!(
                        z.to_vec()
                            .iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{ctx}: in place differs from out of place"
                    );
                }
            }
        }
    }
}
