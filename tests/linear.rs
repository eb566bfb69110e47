//! The output-layer family (`softmax_kernels::linear`) on every available tier, against naive
//! f64 loops:
//!
//! * `rank1_update`, `rank_k_update`, `weight_grad` (both the streaming rank-k path and the
//!   sgemm path, `beta` = 0 / 1 / 0.5), `bias_grad`, `linear_forward`, `linear_backward_input`
//!   on `C, D` in {1, 7, 8, 9, 15, 16, 17, 33} (around the 8- and 16-lane vector widths) and on
//!   10 x 784 and 1000 x 2048, with batch sizes on both sides of the rank-k crossover;
//! * strided W (`ld > D`): the padding is never touched, and the slice without the last row's
//!   padding is accepted; guard regions around every buffer catch any access past a slice;
//! * BLAS conventions: `beta == 0` overwrites NaN, `alpha == 0` / `B == 0` give `beta * dW`;
//! * SGD: `sgd_step` against a gradient then an update, and `Sgd` (momentum, dampening,
//!   Nesterov, weight decay) against PyTorch's recurrence written out here, over several steps;
//! * bit-identical results in rayon pools of 1, 2, 3 and 8 threads;
//! * every error variant;
//! * a linear softmax classifier on separable data, whose loss must fall.
//!
//! **Tolerances.** A dot product of `k` terms accumulated in f32 (one rounding per fused
//! multiply-add, any order, as sgemm and the rank-k kernel do) is within
//! `(k - 1) u sum_i |d_i a_i|` of the exact value (`u = 2^-24`, the unit roundoff; Higham,
//! *Accuracy and Stability of Numerical Algorithms*, 3.1); the epilogue (`alpha * acc`, then
//! `+ beta * w`) adds at most 3 more roundings of terms bounded by the same magnitudes. So the
//! tests accept `|got - exact| <= (k + 3) 2^-23 (|alpha| sum_i |d_i a_i| + |beta w|) + 1e-30`:
//! the bound with a factor 2 of slack (`2^-23 = 2u`) for the roundings of `alpha * x` and the
//! like. The reference tier computes in f64 and rounds once, so it meets this with room to spare.

mod common;

use std::collections::BTreeSet;

use common::{rng, Guarded};
use rand::rngs::StdRng;
use rand::Rng;
use softmax_kernels::{Error, Isa, Kernels, MatrixLayout, Sgd, SgdOptions};

/// The padding between rows of a strided W (and the initial value of unwritten outputs where it
/// matters): a quiet NaN with a payload no kernel produces.
const PAD: f32 = f32::from_bits(0x7FC0_0BAD);

/// `C` and `D` around the vector widths.
const SIZES: [usize; 8] = [1, 7, 8, 9, 15, 16, 17, 33];

fn uniform(r: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| r.gen_range(-scale..scale)).collect()
}

/// A `[rows, cols]` matrix with leading dimension `ld`, padding set to [`PAD`]; `trim` leaves
/// the last row's padding out of the slice.
fn strided(r: &mut StdRng, rows: usize, cols: usize, ld: usize, trim: bool) -> Vec<f32> {
    let len = if trim && rows > 0 {
        (rows - 1) * ld + cols
    } else {
        rows * ld
    };
    let mut w = vec![PAD; len];
    for i in 0..rows {
        for j in 0..cols {
            w[i * ld + j] = r.gen_range(-1.0..1.0);
        }
    }
    w
}

/// Checks every element of the `[rows, cols]` (stride `ld`) result `got` against `exact` (dense
/// `[rows, cols]`) within `tol` (dense, per element), and that the padding is bit-for-bit
/// [`PAD`].
fn check_matrix(
    ctx: &str,
    got: &[f32],
    lay: MatrixLayout,
    exact: &[f64],
    tol: &[f64],
) -> Result<(), String> {
    for (i, &g) in got.iter().enumerate() {
        let (r, j) = (i / lay.ld, i % lay.ld);
        if j >= lay.cols {
            if g.to_bits() != PAD.to_bits() {
                return Err(format!("{ctx}: padding at [{r}, {j}] was written: {g}"));
            }
            continue;
        }
        let (e, t) = (exact[r * lay.cols + j], tol[r * lay.cols + j]);
        let err = (g as f64 - e).abs();
        if err.is_nan() || err > t {
            return Err(format!(
                "{ctx}: element [{r}, {j}] is {g}, expected {e} (tolerance {t:e}, error {err:e})"
            ));
        }
    }
    Ok(())
}

fn ok(ctx: impl std::fmt::Display, r: Result<(), String>) {
    if let Err(e) = r {
        panic!("{ctx}\n{e}");
    }
}

/// The `(k + 3) 2^-23` factor of the module docs.
fn gamma(k: usize) -> f64 {
    (k as f64 + 3.0) * 2f64.powi(-23)
}

/// Exact (f64) `beta * w + alpha * delta^T A` and its tolerance, dense `[c, d]`.
#[allow(clippy::too_many_arguments)]
fn oracle_wgrad(
    alpha: f32,
    delta: &[f32],
    a: &[f32],
    beta: f32,
    w: &[f32],
    lay: MatrixLayout,
    b: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (c, d) = (lay.rows, lay.cols);
    let mut exact = vec![0.0; c * d];
    let mut tol = vec![0.0; c * d];
    for r in 0..c {
        for j in 0..d {
            let (mut s, mut m) = (0.0f64, 0.0f64);
            for i in 0..b {
                let t = delta[i * c + r] as f64 * a[i * d + j] as f64;
                s += t;
                m += t.abs();
            }
            let old = if beta == 0.0 {
                0.0
            } else {
                beta as f64 * w[r * lay.ld + j] as f64
            };
            exact[r * d + j] = alpha as f64 * s + old;
            tol[r * d + j] = gamma(b) * (alpha.abs() as f64 * m + old.abs()) + 1e-30;
        }
    }
    (exact, tol)
}

#[test]
fn rank1_update_matches_f64() {
    let mut r = rng(1);
    for k in common::tiers() {
        let mut shapes: Vec<(usize, usize)> = Vec::new();
        for &c in &SIZES {
            for &d in &SIZES {
                shapes.push((c, d));
            }
        }
        shapes.extend([(10, 784), (1000, 2048), (0, 5), (5, 0)]);
        for (i, &(c, d)) in shapes.iter().enumerate() {
            let ld = d + [0, 3, 16][i % 3];
            let trim = i % 2 == 1;
            let x = Guarded::from_slice(&uniform(&mut r, c, 2.0), i % 16);
            let y = Guarded::from_slice(&uniform(&mut r, d, 2.0), (i + 5) % 16);
            let w0 = strided(&mut r, c, d, ld, trim);
            let mut w = Guarded::from_slice(&w0, (i + 9) % 16);
            let alpha = -0.75f32;
            k.rank1_update(
                alpha,
                x.slice(),
                y.slice(),
                w.slice_mut(),
                MatrixLayout::new(c, d).with_ld(ld),
            )
            .unwrap();
            let lay = MatrixLayout::new(c, d).with_ld(ld);
            let (x, y) = (x.slice(), y.slice());
            // One product rounded (alpha * x[c]) and one fused multiply-add: 2 roundings, so
            // 2^-23 (|alpha x y| + |w|) bounds the error (gamma(0) is 3 * 2^-23: slack).
            let mut exact = vec![0.0; c * d];
            let mut tol = vec![0.0; c * d];
            for rr in 0..c {
                for j in 0..d {
                    let p = alpha as f64 * x[rr] as f64 * y[j] as f64;
                    let old = w0[rr * ld + j] as f64;
                    exact[rr * d + j] = old + p;
                    tol[rr * d + j] = gamma(0) * (p.abs() + old.abs()) + 1e-30;
                }
            }
            let ctx = format!("{} rank1 C {c} D {d} ld {ld} trim {trim}", k.isa());
            ok(&ctx, check_matrix(&ctx, w.slice(), lay, &exact, &tol));
            w.assert_guards(&ctx);
        }
    }
}

/// `weight_grad` (and `rank_k_update` when `beta == 1`) on one shape, checked against f64.
#[allow(clippy::too_many_arguments)]
fn check_wgrad(
    k: &Kernels,
    r: &mut StdRng,
    b: usize,
    c: usize,
    d: usize,
    ld: usize,
    trim: bool,
    alpha: f32,
    beta: f32,
    misalign: usize,
) {
    let delta = Guarded::from_slice(&uniform(r, b * c, 1.0), misalign % 16);
    let a = Guarded::from_slice(&uniform(r, b * d, 2.0), (misalign + 3) % 16);
    let mut w0 = strided(r, c, d, ld, trim);
    if beta == 0.0 {
        // beta == 0 must overwrite, never read: NaN in W disappears.
        for rr in 0..c {
            w0[rr * ld..rr * ld + d].fill(f32::NAN);
        }
    }
    let lay = MatrixLayout::new(c, d).with_ld(ld);
    let (exact, tol) = oracle_wgrad(alpha, delta.slice(), a.slice(), beta, &w0, lay, b);
    let ctx = format!(
        "{} weight_grad B {b} C {c} D {d} ld {ld} trim {trim} alpha {alpha} beta {beta} \
         (rank-k up to B = {})",
        k.isa(),
        k.rank_k_max()
    );
    let mut w = Guarded::from_slice(&w0, (misalign + 7) % 16);
    k.weight_grad(alpha, delta.slice(), a.slice(), beta, w.slice_mut(), lay)
        .unwrap();
    ok(&ctx, check_matrix(&ctx, w.slice(), lay, &exact, &tol));
    w.assert_guards(&ctx);
    if beta == 1.0 {
        let ctx = format!("{ctx} (rank_k_update)");
        let mut w = Guarded::from_slice(&w0, (misalign + 11) % 16);
        k.rank_k_update(alpha, delta.slice(), a.slice(), w.slice_mut(), lay)
            .unwrap();
        ok(&ctx, check_matrix(&ctx, w.slice(), lay, &exact, &tol));
        w.assert_guards(&ctx);
    }
}

#[test]
fn weight_grad_small_shapes_match_f64() {
    let mut r = rng(2);
    for k in common::tiers() {
        let mut n = 0;
        for &c in &SIZES {
            for &d in &SIZES {
                for &b in &[1usize, 2, 3, 5, 8, 9, 17, 40] {
                    let beta = [1.0, 0.0, 0.5][n % 3];
                    let ld = d + [0, 1, 5][n % 3];
                    check_wgrad(k, &mut r, b, c, d, ld, n % 2 == 0, 0.5, beta, n);
                    n += 1;
                }
            }
        }
    }
}

#[test]
fn weight_grad_large_shapes_match_f64() {
    let mut r = rng(3);
    for k in common::tiers() {
        // 10 x 784 (MNIST-like) on both sides of the crossover, then sgemm with many tiles.
        for (i, &b) in [1usize, 4, 8, 9, 16, 64, 300].iter().enumerate() {
            check_wgrad(
                k,
                &mut r,
                b,
                10,
                784,
                784 + (i % 2) * 9,
                i % 2 == 1,
                -0.25,
                1.0,
                i,
            );
            check_wgrad(k, &mut r, b, 10, 784, 784, false, 1.0, 0.0, i);
        }
        // 1000 x 2048 (many row blocks, column tiles) for a streaming and a GEMM batch size;
        // the scalar tier computes f64 dot products (slow): a smaller GEMM batch there.
        let big = if k.isa() == Isa::Scalar { 12 } else { 48 };
        for (i, &b) in [3usize, big].iter().enumerate() {
            check_wgrad(
                k,
                &mut r,
                b,
                1000,
                2048,
                2048 + 16 * i,
                i == 1,
                0.125,
                0.5,
                i,
            );
        }
        // Few rows, wide rows: the sgemm path splits the columns.
        check_wgrad(k, &mut r, 70, 33, 3000, 3001, true, 1.0, 1.0, 4);
    }
}

#[test]
fn bias_grad_matches_f64() {
    let mut r = rng(4);
    for k in common::tiers() {
        let mut n = 0;
        for &c in SIZES.iter().chain(&[100, 1000, 2500]) {
            for &b in &[0usize, 1, 2, 31, 32, 33, 100, 257] {
                let beta = [1.0f32, 0.0, -2.0][n % 3];
                let alpha = 0.5f32;
                let delta = Guarded::from_slice(&uniform(&mut r, b * c, 1.0), n % 16);
                let db0: Vec<f32> = if beta == 0.0 {
                    vec![f32::NAN; c]
                } else {
                    uniform(&mut r, c, 1.0)
                };
                let mut db = Guarded::from_slice(&db0, (n + 3) % 16);
                k.bias_grad(alpha, delta.slice(), beta, db.slice_mut())
                    .unwrap();
                let ctx = format!("{} bias_grad B {b} C {c} beta {beta}", k.isa());
                let delta = delta.slice();
                for (j, &g) in db.slice().iter().enumerate() {
                    let (s, m) = (0..b).fold((0.0f64, 0.0f64), |(s, m), i| {
                        let v = delta[i * c + j] as f64;
                        (s + v, m + v.abs())
                    });
                    let old = if beta == 0.0 {
                        0.0
                    } else {
                        beta as f64 * db0[j] as f64
                    };
                    let e = alpha as f64 * s + old;
                    // f32 sums over blocks of 32 rows (31 roundings at most), f64 beyond.
                    let t = gamma(32) * (alpha as f64 * m + old.abs()) + 1e-30;
                    assert!(
                        (g as f64 - e).abs() <= t,
                        "{ctx}: db[{j}] = {g}, expected {e} (tolerance {t:e})"
                    );
                }
                db.assert_guards(&ctx);
                n += 1;
            }
        }
    }
}

#[test]
fn linear_forward_and_backward_match_f64() {
    let mut r = rng(5);
    for k in common::tiers() {
        let mut shapes = Vec::new();
        for &c in &SIZES {
            for &d in &SIZES {
                shapes.push((3usize, c, d));
            }
        }
        shapes.extend([
            (64, 10, 784),
            (1, 1000, 2048),
            (5, 1000, 2048),
            (300, 37, 130),
            // The streaming kernels (batches up to 64): a partial second panel of rows, class
            // tiles with a tail, a second inner block of one element, column tails.
            (33, 301, 257),
            (17, 50, 40),
            (48, 530, 300),
        ]);
        shapes.extend([(0, 4, 4), (4, 0, 4), (4, 4, 0)]);
        for (n, &(b, c, d)) in shapes.iter().enumerate() {
            let ld = d + [0, 2, 16][n % 3];
            let w = Guarded::from_slice(&strided(&mut r, c, d, ld, n % 2 == 0), n % 16);
            let lay = MatrixLayout::new(c, d).with_ld(ld);
            let a = Guarded::from_slice(&uniform(&mut r, b * d, 1.0), (n + 1) % 16);
            let bias = uniform(&mut r, c, 1.0);
            let with_bias = n % 2 == 1;
            let mut z = Guarded::filled(b * c, PAD, (n + 2) % 16);
            let bref = with_bias.then_some(&bias[..]);
            k.linear_forward(a.slice(), w.slice(), lay, bref, z.slice_mut())
                .unwrap();
            let ctx = format!("{} linear_forward B {b} C {c} D {d} ld {ld}", k.isa());
            let (wv, av) = (w.slice(), a.slice());
            let mut exact = vec![0.0; b * c];
            let mut tol = vec![0.0; b * c];
            for i in 0..b {
                for j in 0..c {
                    let (mut s, mut m) = (0.0f64, 0.0f64);
                    for l in 0..d {
                        let t = av[i * d + l] as f64 * wv[j * ld + l] as f64;
                        s += t;
                        m += t.abs();
                    }
                    let bj = if with_bias { bias[j] as f64 } else { 0.0 };
                    exact[i * c + j] = s + bj;
                    tol[i * c + j] = gamma(d) * (m + bj.abs()) + 1e-30;
                }
            }
            ok(
                &ctx,
                check_matrix(&ctx, z.slice(), MatrixLayout::new(b, c), &exact, &tol),
            );
            z.assert_guards(&ctx);

            // Backward: dA = delta W.
            let delta = Guarded::from_slice(&uniform(&mut r, b * c, 1.0), (n + 4) % 16);
            let mut da = Guarded::filled(b * d, PAD, (n + 6) % 16);
            k.linear_backward_input(delta.slice(), w.slice(), lay, da.slice_mut())
                .unwrap();
            let ctx = format!(
                "{} linear_backward_input B {b} C {c} D {d} ld {ld}",
                k.isa()
            );
            let dv = delta.slice();
            let mut exact = vec![0.0; b * d];
            let mut tol = vec![0.0; b * d];
            for i in 0..b {
                for l in 0..d {
                    let (mut s, mut m) = (0.0f64, 0.0f64);
                    for j in 0..c {
                        let t = dv[i * c + j] as f64 * wv[j * ld + l] as f64;
                        s += t;
                        m += t.abs();
                    }
                    exact[i * d + l] = s;
                    tol[i * d + l] = gamma(c) * m + 1e-30;
                }
            }
            ok(
                &ctx,
                check_matrix(&ctx, da.slice(), MatrixLayout::new(b, d), &exact, &tol),
            );
            da.assert_guards(&ctx);
        }
    }
}

/// `linear_forward` and `linear_backward_input` take the streaming kernels for batches of up
/// to 64 rows and sgemm above (on the SIMD tiers): an element of the output must have the same
/// bits either way, so that a chunk of rows (as the fused linear cross-entropy forms) sees the
/// logits of the whole batch. Batches of 70 to 130 rows against each of their rows alone and
/// against chunks of 16, 32 and 64 rows, with several inner blocks (`D`, `C` > 256), strided W
/// and bias on and off, and (third shape) NaN, infinite, huge and subnormal entries (NaN
/// compared as NaN: which payload survives depends on operand order).
#[test]
fn streaming_and_sgemm_give_the_same_bits() {
    let mut r = rng(21);
    for k in common::tiers() {
        for (n, &(b, c, d)) in [(70usize, 37usize, 600usize), (130, 530, 300), (65, 300, 17)]
            .iter()
            .enumerate()
        {
            let ld = d + [0, 3, 16][n % 3];
            let w = strided(&mut r, c, d, ld, n % 2 == 1);
            let lay = MatrixLayout::new(c, d).with_ld(ld);
            let mut a = uniform(&mut r, b * d, 1.0);
            let mut delta = uniform(&mut r, b * c, 1.0);
            let mut w = w;
            if n == 2 {
                // Special values, as sgemm meets them: NaN, infinities, huge and subnormal
                // entries in A, W and delta (the outputs they touch must agree too).
                let specials = [f32::NAN, f32::INFINITY, -f32::INFINITY, 3e38, -1e-40, 1e30];
                for (i, &v) in specials.iter().enumerate() {
                    a[(i * 97 + 5) % (b * d)] = v;
                    w[((i * 31 + 2) % c) * ld + (i * 7) % d] = v;
                    delta[(i * 53 + 11) % (b * c)] = v;
                }
            }
            let same = |x: &f32, y: &f32| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
            let bias = uniform(&mut r, c, 1.0);
            for with_bias in [false, true] {
                let bref = with_bias.then_some(&bias[..]);
                let mut z = vec![0.0f32; b * c];
                k.linear_forward(&a, &w, lay, bref, &mut z).unwrap();
                let mut da = vec![0.0f32; b * d];
                k.linear_backward_input(&delta, &w, lay, &mut da).unwrap();
                for rows in [1usize, 16, 32, 64] {
                    let mut r0 = 0;
                    while r0 < b {
                        let m = rows.min(b - r0);
                        let ctx = format!(
                            "{} B {b} C {c} D {d} ld {ld} bias {with_bias}: rows {r0}+{m}",
                            k.isa()
                        );
                        let mut zc = vec![0.0f32; m * c];
                        k.linear_forward(&a[r0 * d..(r0 + m) * d], &w, lay, bref, &mut zc)
                            .unwrap();
                        let want = &z[r0 * c..(r0 + m) * c];
                        assert!(
                            zc.iter().zip(want).all(|(x, y)| same(x, y)),
                            "forward {ctx}"
                        );
                        let mut dac = vec![0.0f32; m * d];
                        let dc = &delta[r0 * c..(r0 + m) * c];
                        k.linear_backward_input(dc, &w, lay, &mut dac).unwrap();
                        let want = &da[r0 * d..(r0 + m) * d];
                        assert!(
                            dac.iter()
                                .zip(want)
                                .all(|(x, y)| x.to_bits() == y.to_bits()),
                            "backward input {ctx}"
                        );
                        r0 += m;
                    }
                }
            }
        }
    }
}

/// A one-row W with a leading dimension near `isize::MAX / 4` (valid: the slice holds the row
/// alone). The kernels prefetch rows ahead of the one they read; those addresses must be
/// formed without overflow (a `cargo fuzz` run with overflow checks caught `16 * ld`
/// overflowing in the streaming `dA` kernel; `cargo test` without `--release` checks it here).
#[test]
fn huge_leading_dimension_one_row() {
    let ld = isize::MAX as usize / 4;
    let (b, d) = (3usize, 5usize);
    let lay = MatrixLayout::new(1, d).with_ld(ld);
    let w = [0.5f32, -1.0, 2.0, 0.25, 1.5];
    let a: Vec<f32> = (0..b * d).map(|i| i as f32 * 0.5 - 2.0).collect();
    let delta = [1.0f32, -2.0, 0.5];
    for k in common::tiers() {
        let ctx = k.isa();
        let mut da = vec![f32::NAN; b * d];
        k.linear_backward_input(&delta, &w, lay, &mut da).unwrap();
        for i in 0..b {
            for l in 0..d {
                assert_eq!(da[i * d + l], delta[i] * w[l], "{ctx} dA[{i}, {l}]");
            }
        }
        let mut dw = [f32::NAN; 5];
        k.weight_grad(1.0, &delta, &a, 0.0, &mut dw, lay).unwrap();
        for l in 0..d {
            let want: f64 = (0..b).map(|i| delta[i] as f64 * a[i * d + l] as f64).sum();
            assert!(
                (dw[l] as f64 - want).abs() <= 1e-5,
                "{ctx} dW[{l}] {} vs {want}",
                dw[l]
            );
        }
        let mut z = [f32::NAN; 3];
        k.linear_forward(&a, &w, lay, Some(&[0.5]), &mut z).unwrap();
        for i in 0..b {
            let want: f64 = 0.5
                + (0..d)
                    .map(|l| a[i * d + l] as f64 * w[l] as f64)
                    .sum::<f64>();
            assert!(
                (z[i] as f64 - want).abs() <= 1e-5,
                "{ctx} z[{i}] {} vs {want}",
                z[i]
            );
        }
    }
}

/// Every function once on small odd shapes with a strided, trimmed W in guarded buffers: the
/// quick pass (also meant for Miri: `cargo +nightly miri test --test linear small_strided`).
#[test]
fn small_strided_all_functions() {
    let mut r = rng(12);
    for k in common::tiers() {
        for (n, &(b, c, d)) in [(3usize, 5usize, 7usize), (10, 3, 17), (1, 9, 1)]
            .iter()
            .enumerate()
        {
            let ld = d + 3;
            let lay = MatrixLayout::new(c, d).with_ld(ld);
            let ctx = format!("{} B {b} C {c} D {d}", k.isa());
            let delta = Guarded::from_slice(&uniform(&mut r, b * c, 1.0), n + 1);
            let a = Guarded::from_slice(&uniform(&mut r, b * d, 1.0), n + 2);
            let w0 = strided(&mut r, c, d, ld, true);
            let mut w = Guarded::from_slice(&w0, n + 3);
            k.rank1_update(
                0.5,
                &delta.slice()[..c],
                &a.slice()[..d],
                w.slice_mut(),
                MatrixLayout::new(c, d).with_ld(ld),
            )
            .unwrap();
            k.rank_k_update(0.5, delta.slice(), a.slice(), w.slice_mut(), lay)
                .unwrap();
            k.weight_grad(0.5, delta.slice(), a.slice(), 0.5, w.slice_mut(), lay)
                .unwrap();
            k.sgd_step(0.1, delta.slice(), a.slice(), w.slice_mut(), lay, None)
                .unwrap();
            let mut opt = k.sgd(SgdOptions::new(0.1).momentum(0.9)).unwrap();
            let mut bias = Guarded::from_slice(&uniform(&mut r, c, 1.0), n + 4);
            opt.step(
                delta.slice(),
                a.slice(),
                w.slice_mut(),
                lay,
                Some(bias.slice_mut()),
            )
            .unwrap();
            k.bias_grad(1.0, delta.slice(), 1.0, bias.slice_mut())
                .unwrap();
            let mut z = Guarded::filled(b * c, PAD, n + 5);
            k.linear_forward(a.slice(), w.slice(), lay, Some(bias.slice()), z.slice_mut())
                .unwrap();
            let mut da = Guarded::filled(b * d, PAD, n + 6);
            k.linear_backward_input(delta.slice(), w.slice(), lay, da.slice_mut())
                .unwrap();
            for (name, g) in [("w", &w), ("bias", &bias), ("z", &z), ("da", &da)] {
                g.assert_guards(&format!("{ctx} {name}"));
            }
            assert!(
                z.slice().iter().chain(da.slice()).all(|v| v.is_finite()),
                "{ctx}"
            );
            for (i, v) in w.slice().iter().enumerate() {
                assert!(
                    if i % ld >= d {
                        v.to_bits() == PAD.to_bits()
                    } else {
                        v.is_finite()
                    },
                    "{ctx}: w[{i}] = {v}"
                );
            }
        }
    }
}

#[test]
fn blas_conventions() {
    let mut r = rng(6);
    for k in common::tiers() {
        let lay = MatrixLayout::new(5, 19).with_ld(21);
        // Batches on both sides of the crossover.
        for b in [2usize, 40] {
            let delta = uniform(&mut r, b * 5, 1.0);
            let a = uniform(&mut r, b * 19, 1.0);
            let w0 = strided(&mut r, 5, 19, 21, false);
            let scaled = |beta: f32| -> Vec<f32> {
                (0..w0.len())
                    .map(|i| {
                        if i % 21 >= 19 {
                            PAD
                        } else if beta == 0.0 {
                            0.0
                        } else {
                            w0[i] * beta
                        }
                    })
                    .collect()
            };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            // alpha == 0: dW = beta dW; delta and A are not read (NaN there is harmless).
            let nan_delta = vec![f32::NAN; b * 5];
            for beta in [0.0f32, 1.0, 0.5] {
                let mut w = w0.clone();
                k.weight_grad(0.0, &nan_delta, &a, beta, &mut w, lay)
                    .unwrap();
                assert_eq!(
                    bits(&w),
                    bits(&scaled(beta)),
                    "{} alpha 0 beta {beta}",
                    k.isa()
                );
            }
            // beta == 0 overwrites NaN.
            let mut w = vec![f32::NAN; w0.len()];
            k.weight_grad(1.0, &delta, &a, 0.0, &mut w, lay).unwrap();
            for (i, v) in w.iter().enumerate() {
                assert!(i % 21 >= 19 || v.is_finite(), "{} beta 0 left NaN", k.isa());
            }
        }
        // B == 0: dW = beta dW.
        let w0 = strided(&mut r, 5, 19, 21, true);
        let mut w = w0.clone();
        k.weight_grad(1.0, &[], &[], 2.0, &mut w, lay).unwrap();
        for (i, (x, y)) in w.iter().zip(&w0).enumerate() {
            if i % 21 < 19 {
                assert_eq!(*x, 2.0 * y);
            } else {
                assert_eq!(x.to_bits(), PAD.to_bits());
            }
        }
        let mut w = w0.clone();
        k.rank_k_update(1.0, &[], &[], &mut w, lay).unwrap();
        k.sgd_step(0.1, &[], &[], &mut w, lay, None).unwrap();
        assert_eq!(
            w.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            w0.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        // alpha == 0 in rank1 returns at once; an empty W is fine.
        let mut w = w0.clone();
        k.rank1_update(
            0.0,
            &[f32::NAN; 5],
            &[1.0; 19],
            &mut w,
            MatrixLayout::new(5, 19).with_ld(21),
        )
        .unwrap();
        assert_eq!(w[0].to_bits(), w0[0].to_bits());
        k.rank1_update(1.0, &[], &[1.0; 3], &mut [], MatrixLayout::new(0, 3))
            .unwrap();
        // B == 0 for the bias: db = beta db.
        let mut db = [1.0f32, f32::NAN];
        k.bias_grad(1.0, &[], 0.0, &mut db).unwrap();
        assert_eq!(db, [0.0, 0.0]);
    }
}

#[test]
fn sgd_step_equals_gradient_then_update() {
    let mut r = rng(7);
    for k in common::tiers() {
        for &(b, c, d, ld) in &[
            (1usize, 10usize, 784usize, 784usize),
            (5, 17, 33, 40),
            (64, 10, 784, 800),
        ] {
            let delta = uniform(&mut r, b * c, 1.0);
            let a = uniform(&mut r, b * d, 1.0);
            let lay = MatrixLayout::new(c, d).with_ld(ld);
            let w0 = strided(&mut r, c, d, ld, false);
            let b0 = uniform(&mut r, c, 1.0);
            let lr = 0.3f32;
            let (mut w, mut bias) = (w0.clone(), b0.clone());
            k.sgd_step(lr, &delta, &a, &mut w, lay, Some(&mut bias))
                .unwrap();
            // Two separate steps: the mean gradient, then w -= lr * g.
            let mut g = vec![0.0f32; c * d];
            k.weight_grad(
                1.0 / b as f32,
                &delta,
                &a,
                0.0,
                &mut g,
                MatrixLayout::new(c, d),
            )
            .unwrap();
            let mut gb = vec![0.0f32; c];
            k.bias_grad(1.0 / b as f32, &delta, 0.0, &mut gb).unwrap();
            let ctx = format!("{} sgd_step B {b} C {c} D {d}", k.isa());
            for rr in 0..c {
                for j in 0..d {
                    let two = w0[rr * ld + j] - lr * g[rr * d + j];
                    let got = w[rr * ld + j];
                    // Both are within gamma(b) of the exact step: compare with twice that.
                    let m: f64 = (0..b)
                        .map(|i| (delta[i * c + rr] as f64 * a[i * d + j] as f64).abs())
                        .sum::<f64>()
                        * lr as f64
                        / b as f64;
                    let t = 2.0 * gamma(b) * (m + w0[rr * ld + j].abs() as f64) + 1e-30;
                    assert!(
                        ((got - two) as f64).abs() <= t,
                        "{ctx}: w[{rr}, {j}] = {got}, two-step {two} (tolerance {t:e})"
                    );
                }
                let two = b0[rr] - lr * gb[rr];
                assert!(
                    (bias[rr] - two).abs() <= 1e-6 * (1.0 + two.abs()),
                    "{ctx}: bias[{rr}] {} vs {two}",
                    bias[rr]
                );
                for j in d..ld {
                    assert_eq!(w[rr * ld + j].to_bits(), PAD.to_bits());
                }
            }
        }
    }
}

/// PyTorch's `torch.optim.SGD` step for one tensor, written out (f64 state).
fn torch_sgd(o: &SgdOptions, w: &mut [f64], grad: &[f64], buf: &mut Option<Vec<f64>>) {
    let (lr, mom, damp, wd) = (
        o.lr as f64,
        o.momentum as f64,
        o.dampening as f64,
        o.weight_decay as f64,
    );
    let mut d: Vec<f64> = grad
        .iter()
        .zip(w.iter())
        .map(|(g, w)| if wd != 0.0 { g + wd * w } else { *g })
        .collect();
    if mom != 0.0 {
        let b = match buf.take() {
            None => d.clone(),
            Some(mut b) => {
                for (b, d) in b.iter_mut().zip(&d) {
                    *b = mom * *b + (1.0 - damp) * d;
                }
                b
            }
        };
        if o.nesterov {
            for (d, b) in d.iter_mut().zip(&b) {
                *d += mom * b;
            }
        } else {
            d = b.clone();
        }
        *buf = Some(b);
    }
    for (w, d) in w.iter_mut().zip(&d) {
        *w -= lr * d;
    }
}

#[test]
fn sgd_optimizer_matches_pytorch_recurrence() {
    let options = [
        SgdOptions::new(0.1),
        SgdOptions::new(0.1).weight_decay(0.01),
        SgdOptions::new(0.05).momentum(0.9),
        SgdOptions::new(0.05).momentum(0.9).dampening(0.3),
        SgdOptions::new(0.05).momentum(0.9).nesterov(true),
        SgdOptions::new(0.05)
            .momentum(0.8)
            .nesterov(true)
            .weight_decay(0.02),
        SgdOptions::new(0.05)
            .momentum(0.5)
            .dampening(0.5)
            .weight_decay(0.1),
    ];
    let mut r = rng(8);
    for k in common::tiers() {
        for (n, o) in options.iter().enumerate() {
            let (b, c, d, ld) = ([3usize, 12][n % 2], 9usize, 21usize, 24usize);
            let lay = MatrixLayout::new(c, d).with_ld(ld);
            let mut w = strided(&mut r, c, d, ld, false);
            let mut bias = uniform(&mut r, c, 1.0);
            let mut tw: Vec<f64> = (0..c * d).map(|i| w[i / d * ld + i % d] as f64).collect();
            let mut tb: Vec<f64> = bias.iter().map(|&v| v as f64).collect();
            let (mut tbuf, mut tbbuf) = (None, None);
            let mut opt = k.sgd(*o).unwrap();
            // The same recurrence through apply_grad with the f64 gradient rounded to f32.
            let mut w2 = w.clone();
            let mut bias2 = bias.clone();
            let mut opt2 = k.sgd(*o).unwrap();
            for step in 0..6 {
                let delta = uniform(&mut r, b * c, 1.0);
                let a = uniform(&mut r, b * d, 1.0);
                let mut g = vec![0.0f64; c * d];
                for rr in 0..c {
                    for j in 0..d {
                        g[rr * d + j] = (0..b)
                            .map(|i| delta[i * c + rr] as f64 * a[i * d + j] as f64)
                            .sum::<f64>()
                            / b as f64;
                    }
                }
                let gb: Vec<f64> = (0..c)
                    .map(|rr| (0..b).map(|i| delta[i * c + rr] as f64).sum::<f64>() / b as f64)
                    .collect();
                opt.step(&delta, &a, &mut w, lay, Some(&mut bias)).unwrap();
                let g32: Vec<f32> = g.iter().map(|&v| v as f32).collect();
                let gb32: Vec<f32> = gb.iter().map(|&v| v as f32).collect();
                opt2.apply_grad(&mut w2, lay, &g32).unwrap();
                opt2.apply_bias_grad(&mut bias2, &gb32).unwrap();
                torch_sgd(o, &mut tw, &g, &mut tbuf);
                torch_sgd(o, &mut tb, &gb, &mut tbbuf);
                // Each step rounds a handful of f32 operations on values of order 1 (weights,
                // gradients, velocities up to 1 / (1 - momentum) = 10 gradients): errors of a
                // few 1e-7 per step that add up over 6 steps.
                let ctx = format!("{} {o:?} step {step}", k.isa());
                for (i, &t) in tw.iter().enumerate() {
                    let idx = i / d * ld + i % d;
                    for (name, got) in [("step", w[idx]), ("apply_grad", w2[idx])] {
                        assert!(
                            (got as f64 - t).abs() <= 2e-5 * (1.0 + t.abs()),
                            "{ctx} {name}: w[{i}] = {got}, PyTorch {t}"
                        );
                    }
                }
                for i in 0..c {
                    for (name, got) in [("step", bias[i]), ("apply_bias_grad", bias2[i])] {
                        assert!(
                            (got as f64 - tb[i]).abs() <= 2e-5 * (1.0 + tb[i].abs()),
                            "{ctx} {name}: bias[{i}] = {got}, PyTorch {}",
                            tb[i]
                        );
                    }
                }
                for i in 0..w.len() {
                    if i % ld >= d {
                        assert_eq!(w[i].to_bits(), PAD.to_bits(), "{ctx}: padding written");
                        assert_eq!(w2[i].to_bits(), PAD.to_bits(), "{ctx}: padding written");
                    }
                }
            }
            assert_eq!(opt.steps(), 6);
            assert_eq!(opt.velocity().is_some(), o.momentum != 0.0);
        }
    }
}

#[test]
fn sgd_state_rules() {
    let k = Kernels::best();
    let mut opt = k.sgd(SgdOptions::new(0.1).momentum(0.9)).unwrap();
    let lay = MatrixLayout::new(2, 3);
    let mut w = [0.0f32; 6];
    let mut bias = [0.0f32; 2];
    opt.step(&[1.0, 1.0], &[1.0; 3], &mut w, lay, Some(&mut bias))
        .unwrap();
    assert!(opt.velocity().is_some() && opt.bias_velocity().is_some());
    // Another shape: an error naming the parameter, until reset().
    let mut w3 = [0.0f32; 9];
    let e = opt
        .step(&[1.0; 3], &[1.0; 3], &mut w3, MatrixLayout::new(3, 3), None)
        .unwrap_err();
    assert_eq!(
        e,
        Error::StateShape {
            arg: "w",
            expected: (2, 3),
            actual: (3, 3)
        }
    );
    assert!(e.to_string().contains("reset()"));
    let e = opt.apply_bias_grad(&mut [0.0; 3], &[1.0; 3]).unwrap_err();
    assert!(matches!(e, Error::StateShape { arg: "bias", .. }));
    opt.reset();
    assert!(opt.velocity().is_none());
    opt.step(&[1.0; 3], &[1.0; 3], &mut w3, MatrixLayout::new(3, 3), None)
        .unwrap();
    assert_eq!(opt.steps(), 1);
    // An empty batch is a zero gradient: weight decay still acts.
    let mut opt = Sgd::new(SgdOptions::new(0.5).weight_decay(1.0)).unwrap();
    let mut w = [2.0f32];
    opt.step(&[], &[], &mut w, MatrixLayout::new(1, 1), None)
        .unwrap();
    assert_eq!(w, [1.0]);
    // set_lr checks its value.
    assert!(opt.set_lr(-1.0).is_err());
    opt.set_lr(0.25).unwrap();
    assert_eq!(opt.options().lr, 0.25);
}

/// Runs `f` in rayon pools of 1, 2, 3 and 8 threads and asserts the outputs are bit-identical.
fn same_bits_in_pools(what: &str, f: impl Fn() -> Vec<f32> + Sync) {
    let mut first: Option<Vec<u32>> = None;
    for threads in [1usize, 2, 3, 8] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let out: Vec<u32> = pool.install(&f).iter().map(|v| v.to_bits()).collect();
        match &first {
            None => first = Some(out),
            Some(f1) => assert!(
                *f1 == out,
                "{what}: {threads} threads differ from 1 thread at {} elements",
                f1.iter().zip(&out).filter(|(a, b)| a != b).count()
            ),
        }
    }
}

#[test]
fn bit_identical_for_any_thread_count() {
    let mut r = rng(9);
    // Big enough for every function to split its work into many blocks.
    let (c, d, ld) = (300usize, 1100usize, 1104usize);
    let lay = MatrixLayout::new(c, d).with_ld(ld);
    let w0 = strided(&mut r, c, d, ld, false);
    let x = uniform(&mut r, c, 1.0);
    let y = uniform(&mut r, d, 1.0);
    for k in common::tiers() {
        let isa = k.isa();
        same_bits_in_pools(&format!("{isa} rank1_update"), || {
            let mut w = w0.clone();
            k.rank1_update(
                0.5,
                &x,
                &y,
                &mut w,
                MatrixLayout::new(x.len(), y.len()).with_ld(ld),
            )
            .unwrap();
            w
        });
        for b in [4usize, 64] {
            if isa == Isa::Scalar && b > 4 {
                continue; // the f64 oracle is the same loop whatever the threads; keep it short
            }
            let delta = uniform(&mut r, b * c, 1.0);
            let a = uniform(&mut r, b * d, 1.0);
            same_bits_in_pools(&format!("{isa} weight_grad B {b}"), || {
                let mut w = w0.clone();
                k.weight_grad(0.5, &delta, &a, 0.5, &mut w, lay).unwrap();
                w
            });
            same_bits_in_pools(&format!("{isa} sgd_step B {b}"), || {
                let mut w = w0.clone();
                let mut bias = x.clone();
                k.sgd_step(0.1, &delta, &a, &mut w, lay, Some(&mut bias))
                    .unwrap();
                w.extend(bias);
                w
            });
            same_bits_in_pools(&format!("{isa} Sgd momentum B {b}"), || {
                let mut opt = k.sgd(SgdOptions::new(0.1).momentum(0.9)).unwrap();
                let mut w = w0.clone();
                for _ in 0..2 {
                    opt.step(&delta, &a, &mut w, lay, None).unwrap();
                }
                w
            });
            same_bits_in_pools(&format!("{isa} forward B {b}"), || {
                let mut z = vec![0.0f32; b * c];
                k.linear_forward(&a, &w0, lay, Some(&x), &mut z).unwrap();
                z
            });
            same_bits_in_pools(&format!("{isa} backward B {b}"), || {
                let mut da = vec![0.0f32; b * d];
                k.linear_backward_input(&delta, &w0, lay, &mut da).unwrap();
                da
            });
        }
        let delta = uniform(&mut r, 200 * 3000, 1.0);
        same_bits_in_pools(&format!("{isa} bias_grad"), || {
            let mut db = vec![1.0f32; 3000];
            k.bias_grad(0.5, &delta, 1.0, &mut db).unwrap();
            db
        });
    }
}

#[test]
fn every_error_variant() {
    for k in common::tiers() {
        let lay = MatrixLayout::new(2, 3);
        let mut w = [0.0f32; 6];
        // ld < cols.
        let e = k
            .rank1_update(
                1.0,
                &[1.0; 2],
                &[1.0; 3],
                &mut w,
                MatrixLayout::new(2, 3).with_ld(2),
            )
            .unwrap_err();
        assert_eq!(
            e,
            Error::LeadingDim {
                arg: "w",
                ld: 2,
                cols: 3
            }
        );
        assert!(e.to_string().contains("leading dimension 2"));
        let e = k
            .weight_grad(1.0, &[1.0; 2], &[1.0; 3], 0.0, &mut w, lay.with_ld(1))
            .unwrap_err();
        assert!(matches!(e, Error::LeadingDim { arg: "dw", .. }));
        // A slice that is neither rows * ld nor (rows - 1) * ld + cols.
        let e = k
            .rank1_update(
                1.0,
                &[1.0; 2],
                &[1.0; 3],
                &mut w[..5],
                MatrixLayout::new(2, 3),
            )
            .unwrap_err();
        assert_eq!(
            e,
            Error::MatrixLength {
                arg: "w",
                rows: 2,
                cols: 3,
                ld: 3,
                actual: 5
            }
        );
        assert!(e.to_string().contains("needs 6 floats"), "{e}");
        let mut w9 = [0.0f32; 9];
        let e = k
            .rank1_update(
                1.0,
                &[1.0; 2],
                &[1.0; 3],
                &mut w9,
                MatrixLayout::new(2, 3).with_ld(4),
            )
            .unwrap_err();
        assert!(matches!(e, Error::MatrixLength { actual: 9, .. }));
        // ... and both accepted lengths (rows * ld, and without the last padding) work.
        k.rank1_update(
            1.0,
            &[1.0; 2],
            &[1.0; 3],
            &mut w9[..8],
            MatrixLayout::new(2, 3).with_ld(4),
        )
        .unwrap();
        k.rank1_update(
            1.0,
            &[1.0; 2],
            &[1.0; 3],
            &mut w9[..7],
            MatrixLayout::new(2, 3).with_ld(4),
        )
        .unwrap();
        // delta not a whole number of rows.
        let e = k
            .weight_grad(1.0, &[1.0; 3], &[1.0; 3], 0.0, &mut w, lay)
            .unwrap_err();
        assert_eq!(
            e,
            Error::NotMultiple {
                arg: "delta",
                len: 3,
                cols: 2
            }
        );
        // a with the wrong batch.
        let e = k
            .weight_grad(1.0, &[1.0; 4], &[1.0; 3], 0.0, &mut w, lay)
            .unwrap_err();
        assert_eq!(
            e,
            Error::LengthMismatch {
                arg: "a",
                expected: 6,
                actual: 3
            }
        );
        let e = k.bias_grad(1.0, &[1.0; 3], 0.0, &mut [0.0; 2]).unwrap_err();
        assert!(matches!(e, Error::NotMultiple { arg: "delta", .. }));
        let e = k.bias_grad(1.0, &[1.0; 3], 0.0, &mut []).unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { arg: "delta", .. }));
        let e = k
            .sgd_step(0.1, &[1.0; 2], &[1.0; 3], &mut w, lay, Some(&mut [0.0; 3]))
            .unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { arg: "bias", .. }));
        let e = k
            .linear_forward(&[1.0; 3], &w, lay, Some(&[0.0; 3]), &mut [0.0; 2])
            .unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { arg: "b", .. }));
        let e = k
            .linear_forward(&[1.0; 3], &w, lay, None, &mut [0.0; 3])
            .unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { arg: "z", .. }));
        let e = k
            .linear_forward(&[1.0; 4], &w, lay, None, &mut [0.0; 2])
            .unwrap_err();
        assert!(matches!(e, Error::NotMultiple { arg: "a", .. }));
        let e = k
            .linear_backward_input(&[1.0; 2], &w, lay, &mut [0.0; 4])
            .unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { arg: "da", .. }));
        // Overflowing sizes: rows * ld, and ld beyond isize::MAX.
        let e = k
            .rank_k_update(1.0, &[], &[], &mut [], MatrixLayout::new(usize::MAX / 2, 3))
            .unwrap_err();
        assert_eq!(e, Error::SizeOverflow { arg: "w" });
        assert!(e.to_string().contains("overflows"));
        let e = k
            .rank1_update(
                1.0,
                &[1.0],
                &[1.0],
                &mut [0.0],
                MatrixLayout::new(1, 1).with_ld(usize::MAX),
            )
            .unwrap_err();
        assert_eq!(e, Error::SizeOverflow { arg: "w" });
        // Bad options.
        let e = k
            .sgd_step(-0.1, &[1.0; 2], &[1.0; 3], &mut w, lay, None)
            .unwrap_err();
        assert!(matches!(e, Error::InvalidOption { name: "lr", .. }));
        assert!(e.to_string().contains("lr"));
        for (o, name) in [
            (SgdOptions::new(f32::NAN), "lr"),
            (SgdOptions::new(0.1).momentum(-0.5), "momentum"),
            (SgdOptions::new(0.1).dampening(f32::INFINITY), "dampening"),
            (SgdOptions::new(0.1).weight_decay(-1.0), "weight_decay"),
            (SgdOptions::new(0.1).nesterov(true), "nesterov"),
            (
                SgdOptions::new(0.1)
                    .momentum(0.9)
                    .dampening(0.1)
                    .nesterov(true),
                "nesterov",
            ),
        ] {
            let e = Sgd::new(o).unwrap_err();
            assert!(
                matches!(e, Error::InvalidOption { name: n, .. } if n == name),
                "{o:?}: {e}"
            );
        }
        // Nothing was written by the failed calls.
        assert_eq!(w, [0.0; 6]);
    }
}

/// A linear softmax classifier on separable data: 4 classes, 32 features, class means far
/// apart; the mean cross-entropy must fall from ln 4 to well below it, with `sgd_step` and with
/// `Sgd` (momentum).
#[test]
fn training_loop_loss_falls() {
    let (c, d, n) = (4usize, 32usize, 256usize);
    let mut r = rng(10);
    let means: Vec<f32> = uniform(&mut r, c * d, 1.0);
    let labels: Vec<usize> = (0..n).map(|i| i % c).collect();
    let data: Vec<f32> = (0..n * d)
        .map(|i| means[labels[i / d] * d + i % d] + r.gen_range(-0.5f32..0.5))
        .collect();
    let lay = MatrixLayout::new(c, d);
    let batch = 32;
    for k in common::tiers() {
        for momentum in [0.0f32, 0.9] {
            let mut w = vec![0.0f32; c * d];
            let mut bias = vec![0.0f32; c];
            let mut opt = k.sgd(SgdOptions::new(0.1).momentum(momentum)).unwrap();
            let mut z = vec![0.0f32; batch * c];
            let mut p = vec![0.0f32; batch * c];
            let mut losses = Vec::new();
            for epoch in 0..10 {
                let mut total = 0.0f64;
                for s in (0..n).step_by(batch) {
                    let a = &data[s * d..(s + batch) * d];
                    k.linear_forward(a, &w, lay, Some(&bias), &mut z).unwrap();
                    k.softmax(&z, &mut p, c).unwrap();
                    for i in 0..batch {
                        let t = labels[s + i];
                        total -= (p[i * c + t] as f64).ln();
                        p[i * c + t] -= 1.0; // delta = softmax(z) - onehot
                    }
                    if momentum == 0.0 {
                        k.sgd_step(0.1, &p, a, &mut w, lay, Some(&mut bias))
                            .unwrap();
                    } else {
                        opt.step(&p, a, &mut w, lay, Some(&mut bias)).unwrap();
                    }
                }
                losses.push(total / n as f64);
                let _ = epoch;
            }
            let (first, last) = (losses[0], *losses.last().unwrap());
            assert!(
                first < 4f64.ln() + 1e-3 && last < 0.2 * first && last < 0.25,
                "{} momentum {momentum}: loss did not fall: {losses:?}",
                k.isa()
            );
        }
    }
}

/// Enforces `SOFTMAX_KERNELS_REQUIRE=avx512,avx2,...`: each named tier must be available and
/// must have run in this test binary.
#[test]
fn required_tiers_ran() {
    let mut ran_here = BTreeSet::new();
    let mut r = rng(11);
    for k in common::tiers() {
        check_wgrad(k, &mut r, 20, 17, 33, 35, true, 1.0, 0.5, 3);
        ran_here.insert(k.isa());
    }
    let Ok(req) = std::env::var("SOFTMAX_KERNELS_REQUIRE") else {
        return;
    };
    for name in req.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let isa: Isa = name
            .parse()
            .unwrap_or_else(|e| panic!("SOFTMAX_KERNELS_REQUIRE names {name:?}: {e}"));
        assert!(
            isa.is_available() && ran_here.contains(&isa),
            "SOFTMAX_KERNELS_REQUIRE requires tier {isa}, but it did not run here \
             (available: {:?})",
            Isa::available()
        );
    }
}
