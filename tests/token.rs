//! Token log-probs and entropy (`softmax_kernels::token`) on every tier: against an f64 oracle
//! written here from the formulas (with an error bound derived per element), against central
//! finite differences of the crate's own forward, against hand-derived values, special values,
//! in place against out of place (bit for bit), thread counts (bit for bit), and the errors.

#[macro_use]
mod common;

use common::Guarded;
use rand::Rng;
use softmax_kernels::{
    Error, Isa, Kernels, TokenGrads, TokenLogprobOptions, TokenLogprobOutputs, TokenSaved,
};

const IGN: i64 = -100;
/// `2^-21`: the relative error unit of the bounds below (f32 rounding is `2^-24`; the kernels
/// round `d = (z - m) / T`, the exp (2 ULP), the f32 lane sums and the outputs).
const U: f64 = 1.0 / (1u64 << 21) as f64;

/// The f64 oracle of one row: outputs, gradient and a bound for each.
struct Row {
    logp: f64,
    h: f64,
    lse: f64,
    /// Bounds of the absolute errors of logp, H, lse.
    b_logp: f64,
    b_h: f64,
    b_lse: f64,
    grad: Vec<f64>,
    b_grad: Vec<f64>,
}

/// The oracle for row `x`, token `t` (None: ignored), temperature `temp`, cap, upstream
/// gradients `gl`, `gh`.
fn oracle(x: &[f32], t: Option<usize>, temp: f32, cap: Option<f32>, gl: f64, gh: f64) -> Row {
    let n = x.len();
    let it = (1.0 / temp) as f64;
    let capf = |v: f32| match cap {
        Some(c) => c as f64 * (v as f64 / c as f64).tanh(),
        None => v as f64,
    };
    let z: Vec<f64> = x.iter().map(|&v| capf(v)).collect();
    let Some(t) = t else {
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|&v| ((v - m) * it).exp()).sum();
        return Row {
            logp: 0.0,
            h: 0.0,
            lse: m * it + s.ln(),
            b_logp: 0.0,
            b_h: 0.0,
            b_lse: (m.abs() * it + 16.0) * U,
            grad: vec![0.0; n],
            b_grad: vec![0.0; n],
        };
    };
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if z.iter().any(|v| v.is_nan()) || !m.is_finite() {
        return Row {
            logp: f64::NAN,
            h: f64::NAN,
            lse: f64::NAN,
            b_logp: 0.0,
            b_h: 0.0,
            b_lse: 0.0,
            grad: vec![f64::NAN; n],
            b_grad: vec![0.0; n],
        };
    }
    let d: Vec<f64> = z.iter().map(|&v| (v - m) * it).collect();
    let s: f64 = d.iter().map(|v| v.exp()).sum();
    let ls = s.ln();
    let p: Vec<f64> = d.iter().map(|&v| (v - ls).exp()).collect();
    let h: f64 = p
        .iter()
        .zip(&d)
        .map(|(&pk, &dk)| if pk == 0.0 { 0.0 } else { -pk * (dk - ls) })
        .sum();
    // The cap's own error (a few ULP of the cap) moves each d by up to `cap * 2^-21 / T`.
    let dc = cap.map_or(0.0, |c| c as f64 * it);
    let mean_abs_d: f64 = p
        .iter()
        .zip(&d)
        .map(|(&pk, &dk)| if pk == 0.0 { 0.0 } else { pk * dk.abs() })
        .sum();
    let mut grad = vec![0.0; n];
    let mut b_grad = vec![0.0; n];
    for k in 0..n {
        let chain = cap.map_or(1.0, |c| 1.0 - (z[k] / c as f64).powi(2));
        let u = d[k] - ls;
        let inner = gl + gh * (u + h);
        let term = if p[k] == 0.0 { 0.0 } else { p[k] * inner };
        let mut g = -term;
        if k == t {
            g += gl;
        }
        grad[k] = g * it * chain;
        // p_k's relative error grows with |d_k| and |ls| (each rounded in f32), the inner
        // factor's absolute error with |u| and |H|.
        let rel_p = (d[k].abs() + ls + dc + 16.0) * U;
        let inner_err = gh.abs() * (u.abs() + h + mean_abs_d + dc + 16.0) * U;
        let p_part = if p[k] == 0.0 {
            0.0
        } else {
            p[k] * (inner.abs() * rel_p + inner_err)
        };
        b_grad[k] = (p_part + gl.abs() * U) * it + (gl.abs() + gh.abs()) * it * 1e-30;
    }
    Row {
        logp: d[t] - ls,
        h,
        lse: m * it + ls,
        b_logp: (d[t].abs() + ls + dc + 16.0) * U,
        b_h: (ls + mean_abs_d + h + dc + 16.0) * U,
        b_lse: (m.abs() * it + ls + dc + 16.0) * U,
        grad,
        b_grad,
    }
}

/// `|got - want| <= bound`, with NaN matching NaN and infinities matching exactly.
fn close(got: f32, want: f64, bound: f64) -> bool {
    let g = got as f64;
    if want.is_nan() {
        return g.is_nan();
    }
    if want.is_infinite() {
        return g == want;
    }
    (g - want).abs() <= bound
}

struct Case {
    rows: usize,
    cols: usize,
    temp: f32,
    cap: Option<f32>,
    seed: u64,
}

/// Logits for a case: uniform in [-8, 8) with a few rows ignored, a few masked (`-inf`)
/// entries, and an offset row (logits near 1e3).
fn make(c: &Case) -> (Vec<f32>, Vec<i64>, Vec<f32>, Vec<f32>) {
    let mut g = common::rng(c.seed);
    let mut x = common::logits(&mut g, c.rows * c.cols, 8.0);
    let mut tokens: Vec<i64> = (0..c.rows).map(|_| g.gen_range(0..c.cols) as i64).collect();
    for r in 0..c.rows {
        let row = &mut x[r * c.cols..(r + 1) * c.cols];
        match r % 5 {
            1 => tokens[r] = IGN,
            2 if c.cols > 2 => {
                // Mask a third of the classes, never the token.
                for (k, v) in row.iter_mut().enumerate() {
                    if k % 3 == 1 && k as i64 != tokens[r] {
                        *v = f32::NEG_INFINITY;
                    }
                }
            }
            3 => row.iter_mut().for_each(|v| *v += 1000.0),
            _ => {}
        }
    }
    let gl: Vec<f32> = (0..c.rows).map(|_| g.gen_range(-2.0..2.0)).collect();
    let gh: Vec<f32> = (0..c.rows).map(|_| g.gen_range(-1.0..1.0)).collect();
    (x, tokens, gl, gh)
}

fn opts(c: &Case) -> TokenLogprobOptions {
    let o = TokenLogprobOptions::default().temperature(c.temp);
    match c.cap {
        Some(cap) => o.softcap(cap),
        None => o,
    }
}

/// Checks the forward, the fused forward+backward and the backward of `k` on case `c`
/// against the oracle, with every buffer guarded.
fn check_case(k: &Kernels, c: &Case) {
    let (x, tokens, gl, gh) = make(c);
    let o = opts(c);
    let ctx = format!(
        "{} {}x{} T={} cap={:?}",
        k.isa(),
        c.rows,
        c.cols,
        c.temp,
        c.cap
    );
    let xg = Guarded::from_slice(&x, 3);
    let (mut lp, mut h, mut lse) = (
        Guarded::filled(c.rows, 7.0, 1),
        Guarded::filled(c.rows, 7.0, 2),
        Guarded::filled(c.rows, 7.0, 5),
    );
    k.token_logprobs(
        xg.slice(),
        &tokens,
        c.cols,
        &o,
        TokenLogprobOutputs::new(lp.slice_mut())
            .entropy(h.slice_mut())
            .lse(lse.slice_mut()),
    )
    .unwrap();
    for g in [&lp, &h, &lse] {
        g.assert_guards(&ctx);
    }
    let grads = TokenGrads {
        logp: Some(&gl),
        entropy: Some(&gh),
    };
    // Fused forward+backward.
    let mut dz = Guarded::filled(x.len(), 7.0, 7);
    let (mut lp2, mut h2) = (vec![0.0f32; c.rows], vec![0.0f32; c.rows]);
    k.token_logprobs_fwd_bwd(
        xg.slice(),
        &tokens,
        c.cols,
        &o,
        grads,
        TokenLogprobOutputs::new(&mut lp2).entropy(&mut h2),
        dz.slice_mut(),
    )
    .unwrap();
    dz.assert_guards(&ctx);
    // Backward from the saved forward.
    let mut db = Guarded::filled(x.len(), 7.0, 0);
    k.token_logprobs_backward(
        xg.slice(),
        &tokens,
        c.cols,
        &o,
        TokenSaved {
            lse: lse.slice(),
            entropy: Some(h.slice()),
        },
        grads,
        db.slice_mut(),
    )
    .unwrap();
    db.assert_guards(&ctx);
    xg.assert_guards(&ctx);
    for r in 0..c.rows {
        let row = &x[r * c.cols..(r + 1) * c.cols];
        let t = (tokens[r] != IGN).then_some(tokens[r] as usize);
        let e = oracle(row, t, c.temp, c.cap, gl[r] as f64, gh[r] as f64);
        let rc = format!("{ctx} row {r} token {:?}", t);
        assert!(
            close(lp.slice()[r], e.logp, e.b_logp),
            "{rc}: logp {} vs {} (bound {:e})",
            lp.slice()[r],
            e.logp,
            e.b_logp
        );
        assert!(
            close(h.slice()[r], e.h, e.b_h),
            "{rc}: entropy {} vs {} (bound {:e})",
            h.slice()[r],
            e.h,
            e.b_h
        );
        assert!(
            close(lse.slice()[r], e.lse, e.b_lse),
            "{rc}: lse {} vs {} (bound {:e})",
            lse.slice()[r],
            e.lse,
            e.b_lse
        );
        assert_eq!(
            lp2[r].to_bits(),
            lp.slice()[r].to_bits(),
            "{rc}: fused logp"
        );
        assert_eq!(
            h2[r].to_bits(),
            h.slice()[r].to_bits(),
            "{rc}: fused entropy"
        );
        for (name, got) in [("fused", dz.slice()), ("backward", db.slice())] {
            for kk in 0..c.cols {
                let v = got[r * c.cols + kk];
                // The backward from a saved f32 lse: p's relative error grows by the lse's
                // rounding, `|lse| 2^-24`.
                let extra = if name == "backward" {
                    e.grad[kk].abs() * (e.lse.abs() + 1.0) * U
                } else {
                    0.0
                };
                assert!(
                    close(v, e.grad[kk], e.b_grad[kk] + extra),
                    "{rc}: {name} grad[{kk}] {v} vs {} (bound {:e})",
                    e.grad[kk],
                    e.b_grad[kk] + extra
                );
            }
        }
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut seed = 1;
    for &(rows, cols) in &[
        (1usize, 1usize),
        (3, 2),
        (6, 7),
        (5, 33),
        (6, 100),
        (3, 1000),
        (2, 4099),
    ] {
        for &temp in &[0.5f32, 1.0, 2.0] {
            for cap in [None, Some(6.0f32)] {
                seed += 1;
                v.push(Case {
                    rows,
                    cols,
                    temp,
                    cap,
                    seed,
                });
            }
        }
    }
    v
}

per_tier! {
    against_f64 => |k: &Kernels| {
        for c in cases() {
            check_case(k, &c);
        }
    },
    in_place_is_out_of_place => |k: &Kernels| {
        for c in cases().into_iter().step_by(3) {
            let (x, tokens, gl, gh) = make(&c);
            let o = opts(&c);
            for with_h in [false, true] {
                let grads = TokenGrads {
                    logp: Some(&gl),
                    entropy: with_h.then_some(&gh[..]),
                };
                let (mut lp, mut dz) = (vec![0.0f32; c.rows], vec![0.0f32; x.len()]);
                k.token_logprobs_fwd_bwd(&x, &tokens, c.cols, &o, grads,
                    TokenLogprobOutputs::new(&mut lp), &mut dz).unwrap();
                let (mut lp2, mut z) = (vec![0.0f32; c.rows], x.clone());
                k.token_logprobs_fwd_bwd_inplace(&mut z, &tokens, c.cols, &o, grads,
                    TokenLogprobOutputs::new(&mut lp2)).unwrap();
                common::ok("fwd_bwd in place", common::oracle::check_bits("grad", &z, &dz));
                common::ok("fwd_bwd in place", common::oracle::check_bits("logp", &lp2, &lp));

                let (mut lse, mut h) = (vec![0.0f32; c.rows], vec![0.0f32; c.rows]);
                k.token_logprobs(&x, &tokens, c.cols, &o,
                    TokenLogprobOutputs::new(&mut lp).entropy(&mut h).lse(&mut lse)).unwrap();
                let saved = TokenSaved { lse: &lse, entropy: Some(&h) };
                k.token_logprobs_backward(&x, &tokens, c.cols, &o, saved, grads, &mut dz)
                    .unwrap();
                let mut z = x.clone();
                k.token_logprobs_backward_inplace(&mut z, &tokens, c.cols, &o, saved, grads)
                    .unwrap();
                common::ok("backward in place", common::oracle::check_bits("grad", &z, &dz));
            }
        }
    },
    hand_values => |k: &Kernels| {
        let o = TokenLogprobOptions::default();
        // Uniform rows: logp = -ln C, H = ln C, lse = ln C (+ the common value).
        for &c in &[1usize, 5, 32, 1000] {
            let z = vec![3.0f32; 2 * c];
            let (mut lp, mut h, mut lse) = ([0.0f32; 2], [0.0f32; 2], [0.0f32; 2]);
            k.token_logprobs(&z, &[0i64, (c - 1) as i64], c, &o,
                TokenLogprobOutputs::new(&mut lp).entropy(&mut h).lse(&mut lse)).unwrap();
            let lc = (c as f64).ln();
            for r in 0..2 {
                assert!((lp[r] as f64 + lc).abs() < 2e-6 * (1.0 + lc), "{} C={c}", k.isa());
                assert!((h[r] as f64 - lc).abs() < 2e-6 * (1.0 + lc), "{} C={c}", k.isa());
                assert!((lse[r] as f64 - 3.0 - lc).abs() < 4e-6 * (1.0 + lc), "{} C={c}", k.isa());
            }
            // The entropy's gradient vanishes on a uniform row (log p_k + H = 0).
            let mut dz = vec![1.0f32; 2 * c];
            k.token_logprobs_fwd_bwd(&z, &[0i64, 0], c, &o,
                TokenGrads { logp: None, entropy: Some(&[1.0, -3.0]) },
                TokenLogprobOutputs::new(&mut lp), &mut dz).unwrap();
            assert!(dz.iter().all(|v| v.abs() < 1e-6 / c as f32 + 1e-7), "{} C={c}: {dz:?}",
                k.isa());
        }
        // One class far ahead: logp ~ 0 and H ~ 0.
        let mut z = vec![-50.0f32; 64];
        z[9] = 50.0;
        let (mut lp, mut h) = ([0.0f32], [0.0f32]);
        k.token_logprobs(&z, &[9u32], 64, &o, TokenLogprobOutputs::new(&mut lp).entropy(&mut h))
            .unwrap();
        assert!(lp[0].abs() < 1e-30 && (0.0..1e-30).contains(&h[0]), "{} {lp:?} {h:?}", k.isa());
        // Two classes at temperature T: logp_0 = -ln(1 + e^{-(z0 - z1) / T}), by hand.
        for &temp in &[0.25f32, 1.0, 3.0] {
            let z = [1.5f32, -0.5];
            let ot = TokenLogprobOptions::default().temperature(temp);
            let mut lp = [0.0f32];
            k.token_logprobs(&z, &[0u8], 2, &ot, TokenLogprobOutputs::new(&mut lp)).unwrap();
            let want = -(1.0 + (-2.0 / temp as f64).exp()).ln();
            assert!((lp[0] as f64 - want).abs() < 1e-6, "{} T={temp}", k.isa());
            // dlogp_0/dz = (1 - p0, -p1) / T, p1 = 1 / (1 + e^{2/T}).
            let mut dz = [0.0f32; 2];
            k.token_logprobs_fwd_bwd(&z, &[0u8], 2, &ot,
                TokenGrads { logp: Some(&[1.0]), entropy: None },
                TokenLogprobOutputs::new(&mut lp), &mut dz).unwrap();
            let p1 = 1.0 / (1.0 + (2.0 / temp as f64).exp());
            let it = 1.0 / temp as f64;
            assert!((dz[0] as f64 - p1 * it).abs() < 1e-6 * it, "{} T={temp} {dz:?}", k.isa());
            assert!((dz[1] as f64 + p1 * it).abs() < 1e-6 * it, "{} T={temp} {dz:?}", k.isa());
        }
    },
    special_values => |k: &Kernels| {
        let o = TokenLogprobOptions::default();
        let grads = TokenGrads { logp: Some(&[1.0; 4]), entropy: Some(&[0.5; 4]) };
        let cols = 37;
        let mut z = vec![0.25f32; 4 * cols];
        z[3] = f32::NAN; // row 0: NaN
        z[cols + 5] = f32::INFINITY; // row 1: +inf
        z[2 * cols..3 * cols].fill(f32::NEG_INFINITY); // row 2: all -inf
        z[3 * cols + 2] = f32::NEG_INFINITY; // row 3: -inf at the token
        let tokens = [1i64, 1, 1, 2];
        let (mut lp, mut h, mut lse) = ([0.0f32; 4], [0.0f32; 4], [0.0f32; 4]);
        let mut dz = vec![0.0f32; z.len()];
        k.token_logprobs_fwd_bwd(&z, &tokens, cols, &o, grads,
            TokenLogprobOutputs::new(&mut lp).entropy(&mut h).lse(&mut lse), &mut dz).unwrap();
        for r in 0..3 {
            assert!(lp[r].is_nan() && h[r].is_nan() && lse[r].is_nan(), "{} row {r}", k.isa());
            assert!(dz[r * cols..(r + 1) * cols].iter().all(|v| v.is_nan()), "{} row {r}", k.isa());
        }
        assert_eq!(lp[3], f32::NEG_INFINITY, "{}", k.isa());
        let c = (cols - 1) as f64;
        assert!((h[3] as f64 - c.ln()).abs() < 4e-6, "{} {}", k.isa(), h[3]);
        let row3 = &dz[3 * cols..];
        // p = 1/36 on the others, 0 at the masked token: the masked entry's gradient is the
        // one-hot term alone (1), the others -1/36 (the entropy term vanishes: uniform).
        assert!((row3[2] - 1.0).abs() < 1e-6, "{} {}", k.isa(), row3[2]);
        for (j, &v) in row3.iter().enumerate().filter(|&(j, _)| j != 2) {
            assert!((v as f64 + 1.0 / c).abs() < 1e-6, "{} [{j}] {v}", k.isa());
        }
        // The backward from the saved NaN lse of the bad rows gives NaN there too.
        let mut db = vec![0.0f32; z.len()];
        k.token_logprobs_backward(&z, &tokens, cols, &o,
            TokenSaved { lse: &lse, entropy: Some(&h) }, grads, &mut db).unwrap();
        for r in 0..3 {
            assert!(db[r * cols..(r + 1) * cols].iter().all(|v| v.is_nan()), "{} row {r}", k.isa());
        }
        for (j, (&a, &b)) in db[3 * cols..].iter().zip(row3).enumerate() {
            assert!((a - b).abs() < 1e-6, "{} [{j}] {a} vs {b}", k.isa());
        }
        // An ignored row full of NaN: zero outputs, zero gradient.
        let zi = vec![f32::NAN; cols];
        let mut lpi = [1.0f32];
        let mut dzi = vec![1.0f32; cols];
        k.token_logprobs_fwd_bwd(&zi, &[IGN], cols, &o,
            TokenGrads { logp: Some(&[1.0]), entropy: Some(&[1.0]) },
            TokenLogprobOutputs::new(&mut lpi), &mut dzi).unwrap();
        assert_eq!(lpi[0], 0.0);
        assert!(dzi.iter().all(|&v| v == 0.0), "{}", k.isa());
    },
    finite_differences => |k: &Kernels| {
        // L = sum_b gl_b logp_b + gh_b H_b through the scalar reference's forward (f64 inside,
        // f32 out), central differences with step 1e-2 on logits of unit scale.
        let r = Kernels::for_isa(Isa::Scalar).unwrap();
        for (temp, cap) in [(1.0f32, None), (0.5, None), (2.0, Some(3.0f32))] {
            let (rows, cols) = (3usize, 9usize);
            let mut g = common::rng(77);
            let x = common::logits(&mut g, rows * cols, 1.5);
            let tokens = [4i64, 0, 8];
            let (gl, gh) = ([1.0f32, -0.5, 2.0], [0.3f32, 1.0, -0.7]);
            let o = match cap {
                Some(c) => TokenLogprobOptions::default().temperature(temp).softcap(c),
                None => TokenLogprobOptions::default().temperature(temp),
            };
            let loss = |x: &[f32]| {
                let (mut lp, mut h) = ([0.0f32; 3], [0.0f32; 3]);
                r.token_logprobs(x, &tokens, cols, &o,
                    TokenLogprobOutputs::new(&mut lp).entropy(&mut h)).unwrap();
                (0..rows).map(|b| gl[b] as f64 * lp[b] as f64 + gh[b] as f64 * h[b] as f64)
                    .sum::<f64>()
            };
            let mut lp = [0.0f32; 3];
            let mut dz = vec![0.0f32; x.len()];
            k.token_logprobs_fwd_bwd(&x, &tokens, cols, &o,
                TokenGrads { logp: Some(&gl), entropy: Some(&gh) },
                TokenLogprobOutputs::new(&mut lp), &mut dz).unwrap();
            let step = 1e-2f32;
            for i in 0..x.len() {
                let (mut a, mut b) = (x.clone(), x.clone());
                a[i] += step;
                b[i] -= step;
                let fd = (loss(&a) - loss(&b)) / (a[i] - b[i]) as f64;
                assert!((dz[i] as f64 - fd).abs() < 2e-3,
                    "{} T={temp} cap={cap:?} [{i}]: {} vs fd {fd}", k.isa(), dz[i]);
            }
        }
    },
}

#[test]
fn threads_give_the_same_bits() {
    let c = Case {
        rows: 64,
        cols: 3000,
        temp: 0.7,
        cap: None,
        seed: 5,
    };
    let (x, tokens, gl, gh) = make(&c);
    let o = opts(&c);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (mut lp, mut h) = (vec![0.0f32; c.rows], vec![0.0f32; c.rows]);
            let mut dz = vec![0.0f32; x.len()];
            Kernels::best()
                .token_logprobs_fwd_bwd(
                    &x,
                    &tokens,
                    c.cols,
                    &o,
                    TokenGrads {
                        logp: Some(&gl),
                        entropy: Some(&gh),
                    },
                    TokenLogprobOutputs::new(&mut lp).entropy(&mut h),
                    &mut dz,
                )
                .unwrap();
            (lp, h, dz)
        })
    };
    let one = run(1);
    for t in [2, 3, 8] {
        let other = run(t);
        common::ok("logp", common::oracle::check_bits("logp", &other.0, &one.0));
        common::ok(
            "entropy",
            common::oracle::check_bits("entropy", &other.1, &one.1),
        );
        common::ok("grad", common::oracle::check_bits("grad", &other.2, &one.2));
    }
}

#[test]
fn errors_write_nothing() {
    let k = Kernels::best();
    let z = [0.0f32; 6];
    let o = TokenLogprobOptions::default();
    let mut lp = [9.0f32; 2];
    let bad_opts = [
        TokenLogprobOptions::default().temperature(0.0),
        TokenLogprobOptions::default().temperature(-1.0),
        TokenLogprobOptions::default().temperature(f32::NAN),
        TokenLogprobOptions::default().temperature(f32::INFINITY),
        TokenLogprobOptions::default().softcap(0.0),
        TokenLogprobOptions::default().softcap(f32::NAN),
    ];
    for bo in bad_opts {
        let e = k
            .token_logprobs(&z, &[0i64, 1], 3, &bo, TokenLogprobOutputs::new(&mut lp))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidOption { .. }), "{bo:?}: {e:?}");
    }
    let e = k
        .token_logprobs(&z, &[0i64, 3], 3, &o, TokenLogprobOutputs::new(&mut lp))
        .unwrap_err();
    assert_eq!(
        e,
        Error::BadLabel {
            row: 1,
            label: 3,
            classes: 3
        }
    );
    let e = k
        .token_logprobs(
            &z,
            &[0i64, -100],
            3,
            &o.ignore_index(None),
            TokenLogprobOutputs::new(&mut lp),
        )
        .unwrap_err();
    assert!(matches!(e, Error::BadLabel { row: 1, .. }), "{e:?}");
    let e = k
        .token_logprobs(&z, &[0i64], 3, &o, TokenLogprobOutputs::new(&mut lp))
        .unwrap_err();
    assert!(
        matches!(e, Error::LengthMismatch { arg: "tokens", .. }),
        "{e:?}"
    );
    let e = k
        .token_logprobs(&z, &[0i64, 1], 4, &o, TokenLogprobOutputs::new(&mut lp))
        .unwrap_err();
    assert!(matches!(e, Error::NotMultiple { .. }), "{e:?}");
    let e = k
        .token_logprobs(&z, &[0i64, 1], 0, &o, TokenLogprobOutputs::new(&mut lp))
        .unwrap_err();
    assert!(matches!(e, Error::ZeroDim { .. }), "{e:?}");
    let mut h1 = [0.0f32; 1];
    let e = k
        .token_logprobs(
            &z,
            &[0i64, 1],
            3,
            &o,
            TokenLogprobOutputs::new(&mut lp).entropy(&mut h1),
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::LengthMismatch { arg: "entropy", .. }),
        "{e:?}"
    );
    assert_eq!(lp, [9.0; 2], "an error wrote an output");
    let mut dz = [9.0f32; 6];
    let e = k
        .token_logprobs_backward(
            &z,
            &[0i64, 1],
            3,
            &o,
            TokenSaved {
                lse: &[0.0; 2],
                entropy: None,
            },
            TokenGrads {
                logp: None,
                entropy: Some(&[1.0; 2]),
            },
            &mut dz,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::MissingOutput {
                arg: "saved.entropy",
                ..
            }
        ),
        "{e:?}"
    );
    let e = k
        .token_logprobs_backward(
            &z,
            &[0i64, 1],
            3,
            &o,
            TokenSaved {
                lse: &[0.0; 1],
                entropy: None,
            },
            TokenGrads::default(),
            &mut dz,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LengthMismatch {
                arg: "saved.lse",
                ..
            }
        ),
        "{e:?}"
    );
    let e = k
        .token_logprobs_fwd_bwd(
            &z,
            &[0i64, 1],
            3,
            &o,
            TokenGrads {
                logp: Some(&[1.0; 3]),
                entropy: None,
            },
            TokenLogprobOutputs::new(&mut lp),
            &mut dz,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LengthMismatch {
                arg: "grads.logp",
                ..
            }
        ),
        "{e:?}"
    );
    let e = k
        .token_logprobs_fwd_bwd(
            &z,
            &[0i64, 1],
            3,
            &o,
            TokenGrads::default(),
            TokenLogprobOutputs::new(&mut lp),
            &mut dz[..5],
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::LengthMismatch { arg: "dlogits", .. }),
        "{e:?}"
    );
    assert_eq!(dz, [9.0; 6], "an error wrote the gradient");
    assert_eq!(lp, [9.0; 2], "an error wrote an output");
}

#[test]
fn zero_rows_is_fine() {
    let k = Kernels::best();
    let mut lp: [f32; 0] = [];
    k.token_logprobs(
        &[],
        &[] as &[i64],
        5,
        &TokenLogprobOptions::default(),
        TokenLogprobOutputs::new(&mut lp),
    )
    .unwrap();
}

/// Rows `ld` floats apart in a buffer filled with `guard` between them.
fn spread(x: &[f32], cols: usize, ld: usize, guard: f32) -> Vec<f32> {
    let rows = x.len() / cols;
    let mut b = vec![guard; rows.saturating_sub(1) * ld + cols];
    for r in 0..rows {
        b[r * ld..r * ld + cols].copy_from_slice(&x[r * cols..(r + 1) * cols]);
    }
    b
}

per_tier! {
    strided_is_contiguous => |k: &Kernels| {
        use softmax_kernels::{MatMut, MatRef};
        for c in cases().into_iter().step_by(2) {
            let (x, tokens, gl, gh) = make(&c);
            let o = opts(&c);
            let grads = TokenGrads { logp: Some(&gl), entropy: Some(&gh) };
            let n = c.rows;
            // Contiguous results.
            let (mut lp, mut h, mut lse) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
            let mut dz = vec![0.0f32; x.len()];
            k.token_logprobs_fwd_bwd(&x, &tokens, c.cols, &o, grads,
                TokenLogprobOutputs::new(&mut lp).entropy(&mut h).lse(&mut lse), &mut dz)
                .unwrap();
            let saved = TokenSaved { lse: &lse, entropy: Some(&h) };
            let mut db = vec![0.0f32; x.len()];
            k.token_logprobs_backward(&x, &tokens, c.cols, &o, saved, grads, &mut db).unwrap();
            for ld in [c.cols, c.cols + 1, c.cols + 17, 2 * c.cols] {
                let ctx = format!("{} {}x{} ld {ld}", k.isa(), c.rows, c.cols);
                let xs = spread(&x, c.cols, ld, 1e30);
                let g = -7.5f32;
                let lg = c.cols + 3;
                // Forward only.
                let mut lp2 = vec![0.0f32; n];
                let xv = MatRef::new(&xs, n, c.cols, ld).unwrap();
                k.token_logprobs_strided(xv, &tokens, &o, TokenLogprobOutputs::new(&mut lp2))
                    .unwrap();
                common::ok(&ctx, common::oracle::check_bits("logp", &lp2, &lp));
                // Fused, the gradient with its own stride.
                let mut gs = vec![g; n.saturating_sub(1) * lg + c.cols];
                let (mut lp3, mut h3) = (vec![0.0f32; n], vec![0.0f32; n]);
                k.token_logprobs_fwd_bwd_strided(xv, &tokens, &o, grads,
                    TokenLogprobOutputs::new(&mut lp3).entropy(&mut h3),
                    MatMut::new(&mut gs, n, c.cols, lg).unwrap()).unwrap();
                common::ok(&ctx, common::oracle::check_bits("fused logp", &lp3, &lp));
                common::ok(&ctx, common::oracle::check_bits("fused entropy", &h3, &h));
                for r in 0..n {
                    common::ok(&ctx, common::oracle::check_bits("fused grad",
                        &gs[r * lg..r * lg + c.cols], &dz[r * c.cols..(r + 1) * c.cols]));
                    if r + 1 < n {
                        assert!(gs[r * lg + c.cols..(r + 1) * lg].iter().all(|&v| v == g),
                            "{ctx}: a float between gradient rows was written");
                    }
                }
                // Backward, separate and in place.
                let mut gs = vec![g; n.saturating_sub(1) * lg + c.cols];
                k.token_logprobs_backward_strided(xv, &tokens, &o, saved, grads,
                    MatMut::new(&mut gs, n, c.cols, lg).unwrap()).unwrap();
                let mut xi = xs.clone();
                k.token_logprobs_backward_strided_inplace(
                    MatMut::new(&mut xi, n, c.cols, ld).unwrap(), &tokens, &o, saved, grads)
                    .unwrap();
                let mut xf = xs.clone();
                let mut lp4 = vec![0.0f32; n];
                k.token_logprobs_fwd_bwd_strided_inplace(
                    MatMut::new(&mut xf, n, c.cols, ld).unwrap(), &tokens, &o, grads,
                    TokenLogprobOutputs::new(&mut lp4)).unwrap();
                common::ok(&ctx, common::oracle::check_bits("in-place logp", &lp4, &lp));
                for r in 0..n {
                    let want = &db[r * c.cols..(r + 1) * c.cols];
                    common::ok(&ctx, common::oracle::check_bits("backward",
                        &gs[r * lg..r * lg + c.cols], want));
                    common::ok(&ctx, common::oracle::check_bits("backward in place",
                        &xi[r * ld..r * ld + c.cols], want));
                    common::ok(&ctx, common::oracle::check_bits("fused in place",
                        &xf[r * ld..r * ld + c.cols], &dz[r * c.cols..(r + 1) * c.cols]));
                    if r + 1 < n {
                        for (buf, name) in [(&xi, "backward in place"), (&xf, "fused in place")] {
                            assert!(buf[r * ld + c.cols..(r + 1) * ld].iter().all(|&v| v == 1e30),
                                "{ctx}: {name} wrote between rows");
                        }
                    }
                }
            }
        }
    },
}

#[test]
fn strided_shape_mismatch() {
    use softmax_kernels::{MatMut, MatRef};
    let x = [0.0f32; 6];
    let mut g = [0.0f32; 8];
    let e = Kernels::best()
        .token_logprobs_backward_strided(
            MatRef::new(&x, 2, 3, 3).unwrap(),
            &[0i64, 1],
            &TokenLogprobOptions::default(),
            TokenSaved {
                lse: &[0.0; 2],
                entropy: None,
            },
            TokenGrads::default(),
            MatMut::new(&mut g, 2, 4, 4).unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::ShapeMismatch { arg: "dlogits", .. }),
        "{e:?}"
    );
    assert_eq!(g, [0.0; 8]);
}

// ---- vocabulary shards (`softmax_kernels::shard`) ----

use softmax_kernels::{finalize_states, merge_states, RowState, Shard};

/// Random shard boundaries of `cols` classes into `k` ranges (some empty, some of one class).
fn split(g: &mut rand::rngs::StdRng, cols: usize, k: usize) -> Vec<(usize, usize)> {
    let mut cuts: Vec<usize> = (0..k - 1)
        .map(|i| match i % 4 {
            0 => g.gen_range(0..=cols),
            1 => g.gen_range(0..=cols.min(1)),
            _ => g.gen_range(0..=cols),
        })
        .collect();
    cuts.push(0);
    cuts.push(cols);
    cuts.sort_unstable();
    cuts.windows(2).map(|w| (w[0], w[1])).collect()
}

/// The sharded pipeline on tier `k`: per-shard states and kept values, a merge in the order
/// `order` (pairwise tree when `tree`), finalize, per-shard backward; returns (logp, H, lse,
/// full gradient assembled from the shards).
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn sharded(
    k: &Kernels,
    x: &[f32],
    cols: usize,
    tokens: &[i64],
    o: &TokenLogprobOptions,
    ranges: &[(usize, usize)],
    order: &[usize],
    tree: bool,
    grads: TokenGrads<'_>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = tokens.len();
    let mut parts = Vec::new();
    for &(a, b) in ranges {
        let w = b - a;
        let xs: Vec<f32> = (0..rows)
            .flat_map(|r| x[r * cols + a..r * cols + b].iter().copied())
            .collect();
        let mut st = vec![RowState::EMPTY; rows];
        let mut keep = vec![0.0f32; xs.len()];
        k.token_shard_states(&xs, w, Shard::new(a, cols), tokens, o, &mut st, &mut keep)
            .unwrap();
        parts.push((xs, st, keep));
    }
    // Merge.
    let mut acc: Vec<Vec<RowState>> = order.iter().map(|&i| parts[i].1.clone()).collect();
    if tree {
        while acc.len() > 1 {
            let mut next = Vec::new();
            for pair in acc.chunks(2) {
                let mut m = pair[0].clone();
                if pair.len() == 2 {
                    merge_states(&mut m, &pair[1]).unwrap();
                }
                next.push(m);
            }
            acc = next;
        }
    } else {
        let first = acc[0].clone();
        acc = vec![acc[1..].iter().fold(first, |mut m, s| {
            merge_states(&mut m, s).unwrap();
            m
        })];
    }
    let merged = &acc[0];
    let (mut lp, mut h, mut lse) = (vec![0.0f32; rows], vec![0.0f32; rows], vec![0.0f32; rows]);
    finalize_states(
        merged,
        tokens,
        cols,
        o,
        TokenLogprobOutputs::new(&mut lp)
            .entropy(&mut h)
            .lse(&mut lse),
    )
    .unwrap();
    let mut full = vec![0.0f32; x.len()];
    for (&(a, b), (xs, st, keep)) in ranges.iter().zip(parts) {
        let mut d = keep;
        k.token_shard_backward(
            &xs,
            b - a,
            Shard::new(a, cols),
            tokens,
            o,
            &st,
            TokenSaved {
                lse: &lse,
                entropy: Some(&h),
            },
            grads,
            &mut d,
        )
        .unwrap();
        for r in 0..rows {
            full[r * cols + a..r * cols + b].copy_from_slice(&d[r * (b - a)..(r + 1) * (b - a)]);
        }
    }
    (lp, h, lse, full)
}

per_tier! {
    shards_match_the_oracle => |k: &Kernels| {
        let mut seed = 500;
        for &(rows, cols) in &[(6usize, 10usize), (4, 1000), (2, 32000), (1, 128_256)] {
            for temp in [1.0f32, 0.5] {
                for cap in [None, Some(6.0f32)] {
                    seed += 1;
                    let c = Case { rows, cols, temp, cap, seed };
                    let (x, tokens, gl, gh) = make(&c);
                    let o = opts(&c);
                    let grads = TokenGrads { logp: Some(&gl), entropy: Some(&gh) };
                    let mut g = common::rng(seed);
                    for nshards in [1usize, 2, 3, 5, 8] {
                        let ranges = split(&mut g, cols, nshards);
                        let mut order: Vec<usize> = (0..ranges.len()).collect();
                        // A random order.
                        for i in (1..order.len()).rev() {
                            order.swap(i, g.gen_range(0..=i));
                        }
                        let tree = nshards % 2 == 1;
                        let (lp, h, lse, dz) =
                            sharded(k, &x, cols, &tokens, &o, &ranges, &order, tree, grads);
                        let ctx = format!("{} {rows}x{cols} T={temp} cap={cap:?} shards {ranges:?}",
                            k.isa());
                        for r in 0..rows {
                            let row = &x[r * cols..(r + 1) * cols];
                            let t = (tokens[r] != IGN).then_some(tokens[r] as usize);
                            let e = oracle(row, t, temp, cap, gl[r] as f64, gh[r] as f64);
                            assert!(close(lp[r], e.logp, e.b_logp), "{ctx} row {r}: logp {} vs {}",
                                lp[r], e.logp);
                            assert!(close(h[r], e.h, e.b_h), "{ctx} row {r}: H {} vs {}", h[r], e.h);
                            // (An ignored row has no state: its lse is NaN.)
                            let want_lse = if t.is_some() { e.lse } else { f64::NAN };
                            assert!(close(lse[r], want_lse, e.b_lse),
                                "{ctx} row {r}: lse {} vs {want_lse}", lse[r]);
                            for kk in 0..cols {
                                let v = dz[r * cols + kk];
                                // As the backward from a saved f32 lse.
                                let b = e.b_grad[kk] + e.grad[kk].abs() * (e.lse.abs() + 1.0) * U;
                                assert!(close(v, e.grad[kk], b),
                                    "{ctx} row {r}: grad[{kk}] {v} vs {} (bound {b:e})", e.grad[kk]);
                            }
                        }
                    }
                }
            }
        }
    },
}

#[test]
fn shards_fixed_split_same_bits_any_threads() {
    let c = Case {
        rows: 40,
        cols: 5000,
        temp: 0.8,
        cap: None,
        seed: 9,
    };
    let (x, tokens, gl, gh) = make(&c);
    let o = opts(&c);
    let grads = TokenGrads {
        logp: Some(&gl),
        entropy: Some(&gh),
    };
    let ranges = [(0, 1234), (1234, 1234), (1234, 4000), (4000, 5000)];
    let order = [2, 0, 3, 1];
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                sharded(
                    Kernels::best(),
                    &x,
                    c.cols,
                    &tokens,
                    &o,
                    &ranges,
                    &order,
                    false,
                    grads,
                )
            })
    };
    let one = run(1);
    for t in [2, 4] {
        let other = run(t);
        common::ok("logp", common::oracle::check_bits("logp", &other.0, &one.0));
        common::ok("H", common::oracle::check_bits("H", &other.1, &one.1));
        common::ok("grad", common::oracle::check_bits("grad", &other.3, &one.3));
    }
}

#[test]
fn shard_states_special_values_and_merge_rules() {
    let k = Kernels::best();
    let o = TokenLogprobOptions::default();
    let cols = 6;
    let ninf = f32::NEG_INFINITY;
    // Row 0: a NaN in the second shard. Row 1: the first shard all -inf (it holds the
    // token: logp = -inf). Row 2: every logit -inf. Row 3: +inf in the first shard.
    let x = [
        0.0,
        1.0,
        2.0,
        f32::NAN,
        0.0,
        0.0, //
        ninf,
        ninf,
        ninf,
        1.0,
        2.0,
        3.0, //
        ninf,
        ninf,
        ninf,
        ninf,
        ninf,
        ninf, //
        f32::INFINITY,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ];
    let tokens = [0i64, 1, 4, 5];
    let ranges = [(0usize, 3usize), (3, 6)];
    let grads = TokenGrads {
        logp: Some(&[1.0; 4]),
        entropy: Some(&[1.0; 4]),
    };
    let (lp, h, lse, dz) = sharded(k, &x, cols, &tokens, &o, &ranges, &[1, 0], false, grads);
    for r in [0, 2, 3] {
        assert!(
            lp[r].is_nan() && h[r].is_nan() && lse[r].is_nan(),
            "row {r}"
        );
        assert!(
            dz[r * cols..(r + 1) * cols].iter().all(|v| v.is_nan()),
            "row {r}: {:?}",
            &dz[r * cols..(r + 1) * cols]
        );
    }
    assert_eq!(lp[1], f32::NEG_INFINITY);
    // The unsharded row 1 for comparison.
    let mut want = vec![0.0f32; cols];
    let mut wl = [0.0f32];
    let (mut wh, mut wlse) = ([0.0f32], [0.0f32]);
    k.token_logprobs_fwd_bwd(
        &x[cols..2 * cols],
        &[1i64],
        cols,
        &o,
        TokenGrads {
            logp: Some(&[1.0]),
            entropy: Some(&[1.0]),
        },
        TokenLogprobOutputs::new(&mut wl)
            .entropy(&mut wh)
            .lse(&mut wlse),
        &mut want,
    )
    .unwrap();
    assert!((h[1] - wh[0]).abs() < 1e-6 && (lse[1] - wlse[0]).abs() < 1e-6);
    for (j, (&a, &b)) in dz[cols..2 * cols].iter().zip(&want).enumerate() {
        assert!((a - b).abs() < 1e-6, "[{j}] {a} vs {b}");
    }
    // The merge rules by hand: EMPTY is the identity, merging is commutative.
    let a = RowState {
        max: 1.0,
        sum: 2.0,
        dot: -0.5,
        target: 0.75,
        has_target: 1.0,
        wdot: -2.0,
        wsum: 3.0,
        target_weight: 0.5,
    };
    let b = RowState {
        max: -3.0,
        sum: 1.5,
        dot: -0.25,
        target: 0.0,
        has_target: 0.0,
        wdot: -1.0,
        wsum: 2.0,
        target_weight: 0.0,
    };
    assert_eq!(a.merge(RowState::EMPTY), a);
    assert_eq!(a.merge(b), b.merge(a));
    let m = a.merge(b);
    let f = (-4.0f64).exp();
    assert_eq!(m.max, 1.0);
    assert!((m.sum - (2.0 + 1.5 * f)).abs() < 1e-15);
    assert!((m.dot - (-0.5 + f * (-0.25 - 4.0 * 1.5))).abs() < 1e-15);
    assert_eq!((m.target, m.has_target), (0.75, 1.0));
    // sum w (z - 1) = -2 + (-1 + (-3 - 1) 2); the weight sums and target weights add.
    assert_eq!(m.wdot, -11.0);
    assert_eq!((m.wsum, m.target_weight), (5.0, 0.5));
}

#[test]
fn shard_errors() {
    let k = Kernels::best();
    let o = TokenLogprobOptions::default();
    let x = [0.0f32; 4];
    let mut st = [RowState::EMPTY; 2];
    let mut keep = [0.0f32; 4];
    // finalize_states checks the options and the class count as the kernels do.
    let mut lp = [0.0f32; 2];
    let bad_t = TokenLogprobOptions::default().temperature(0.0);
    let e = finalize_states(
        &st,
        &[0i64, 1],
        4,
        &bad_t,
        TokenLogprobOutputs::new(&mut lp),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidOption {
                name: "temperature",
                ..
            }
        ),
        "{e:?}"
    );
    let e = finalize_states(
        &st,
        &[0i64, 1],
        usize::MAX,
        &o,
        TokenLogprobOutputs::new(&mut lp),
    )
    .unwrap_err();
    assert!(matches!(e, Error::TooManyClasses { .. }), "{e:?}");
    // The shard's classes leave the vocabulary.
    let e = k
        .token_shard_states(&x, 2, Shard::new(3, 4), &[0i64, 1], &o, &mut st, &mut keep)
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidOption { name: "shard", .. }),
        "{e:?}"
    );
    // A token outside the global vocabulary.
    let e = k
        .token_shard_states(&x, 2, Shard::new(0, 4), &[0i64, 4], &o, &mut st, &mut keep)
        .unwrap_err();
    assert_eq!(
        e,
        Error::BadLabel {
            row: 1,
            label: 4,
            classes: 4
        }
    );
    // States of the wrong length.
    let e = k
        .token_shard_states(
            &x,
            2,
            Shard::new(0, 4),
            &[0i64, 1],
            &o,
            &mut st[..1],
            &mut keep,
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::LengthMismatch { arg: "states", .. }),
        "{e:?}"
    );
    // A missing shard: row 1's token (3) is in 2..4, which was never merged.
    k.token_shard_states(&x, 2, Shard::new(0, 4), &[0i64, 3], &o, &mut st, &mut keep)
        .unwrap();
    let mut lp = [9.0f32; 2];
    let e = finalize_states(&st, &[0i64, 3], 4, &o, TokenLogprobOutputs::new(&mut lp)).unwrap_err();
    assert!(
        matches!(e, Error::InvalidOption { name: "states", .. }),
        "{e:?}"
    );
    assert_eq!(lp, [9.0; 2], "an error wrote an output");
    // Merged twice: the token counted twice.
    let twice: Vec<RowState> = st.iter().map(|s| s.merge(*s)).collect();
    let e = finalize_states(
        &twice,
        &[0i64, -100],
        4,
        &o,
        TokenLogprobOutputs::new(&mut lp),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::InvalidOption { name: "states", .. }),
        "{e:?}"
    );
    // An empty shard is fine.
    let mut st0 = [RowState {
        max: 7.0,
        ..RowState::EMPTY
    }; 2];
    k.token_shard_states(&[], 0, Shard::new(4, 4), &[0i64, 1], &o, &mut st0, &mut [])
        .unwrap();
    assert_eq!(st0, [RowState::EMPTY; 2]);
}

// ---- top-k ----

per_tier! {
    top_k_against_the_oracle => |k: &Kernels| {
        for &(rows, cols) in &[(4usize, 3usize), (5, 70), (3, 1000), (2, 5000)] {
            for kk in [1usize, 5, 64] {
                for cap in [None, Some(4.0f32)] {
                    let c = Case { rows, cols, temp: 0.8, cap, seed: (rows * cols + kk) as u64 };
                    let (mut x, tokens, gl, _) = make(&c);
                    // Ties: copy a few values within each row.
                    for r in 0..rows {
                        for j in (0..cols.saturating_sub(1)).step_by(7) {
                            x[r * cols + j + 1] = x[r * cols + j];
                        }
                    }
                    let o = opts(&c);
                    let (mut lp, mut lse) = (vec![0.0f32; rows], vec![0.0f32; rows]);
                    let (mut tv, mut ti) = (vec![7.0f32; rows * kk], vec![7u32; rows * kk]);
                    k.token_logprobs(&x, &tokens, cols, &o,
                        TokenLogprobOutputs::new(&mut lp).lse(&mut lse).top_k(&mut tv, &mut ti))
                        .unwrap();
                    // The fused call in place gives the same top k.
                    let (mut tv2, mut ti2) = (vec![0.0f32; rows * kk], vec![0u32; rows * kk]);
                    let mut xi = x.clone();
                    k.token_logprobs_fwd_bwd_inplace(&mut xi, &tokens, cols, &o,
                        TokenGrads { logp: Some(&gl), entropy: None },
                        TokenLogprobOutputs::new(&mut lp).top_k(&mut tv2, &mut ti2)).unwrap();
                    common::ok("top_k in place", common::oracle::check_bits("top_k", &tv2, &tv));
                    assert_eq!(ti2, ti);
                    for r in 0..rows {
                        let ctx = format!("{} {rows}x{cols} k={kk} cap={cap:?} row {r}", k.isa());
                        let (v, ix) = (&tv[r * kk..(r + 1) * kk], &ti[r * kk..(r + 1) * kk]);
                        if tokens[r] == IGN {
                            assert!(v.iter().all(|&q| q == f32::NEG_INFINITY), "{ctx}");
                            assert!(ix.iter().all(|&q| q == u32::MAX), "{ctx}");
                            continue;
                        }
                        let row = &x[r * cols..(r + 1) * cols];
                        let it = (1.0 / c.temp) as f64;
                        let zc = |j: usize| match cap {
                            Some(cp) => cp as f64 * (row[j] as f64 / cp as f64).tanh(),
                            None => row[j] as f64,
                        };
                        let e = oracle(row, Some(tokens[r] as usize), c.temp, cap, 0.0, 0.0);
                        let mut all: Vec<(f64, u32)> = (0..cols).map(|j| (zc(j), j as u32)).collect();
                        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                        for q in 0..kk {
                            if q >= cols {
                                assert_eq!((v[q], ix[q]), (f32::NEG_INFINITY, u32::MAX), "{ctx} [{q}]");
                                continue;
                            }
                            let want = all[q].0 * it - e.lse;
                            let bound = e.b_logp + (all[q].0 * it).abs() * 4.0 * U
                                + cap.map_or(0.0, |cp| cp as f64 * it * 8.0 * U);
                            assert!(close(v[q], want, bound), "{ctx} [{q}]: {} vs {want}", v[q]);
                            if cap.is_none() {
                                assert_eq!(ix[q], all[q].1, "{ctx} [{q}]: index");
                            } else {
                                // With a cap the tier ranks its f32 capped values: the index
                                // must name a class of (nearly) that log-probability.
                                let own = zc(ix[q] as usize) * it - e.lse;
                                assert!(close(v[q], own, bound), "{ctx} [{q}]: index {}", ix[q]);
                            }
                            if q > 0 {
                                assert!(v[q] <= v[q - 1], "{ctx}: not sorted at {q}");
                            }
                        }
                    }
                }
            }
        }
    },
}

per_tier! {
    // Rows long enough for the scan's floor (the k-th largest of the vector maxima) to be
    // active, where it must not lose a candidate: all equal (the smallest indices win), a few
    // finite values among -inf (fewer than k above -inf), the k-th value tied many times, and
    // the largest values at the end of the row. Against the scalar reference tier.
    top_k_floor_edge_rows => |k: &Kernels| {
        let r = Kernels::for_isa(softmax_kernels::Isa::Scalar).unwrap();
        let cols = 1027usize;
        let mut x = vec![0.0f32; 4 * cols];
        for (j, v) in x[cols..2 * cols].iter_mut().enumerate() {
            *v = if j % 101 == 5 { j as f32 * 1e-3 } else { f32::NEG_INFINITY };
        }
        for (j, v) in x[2 * cols..3 * cols].iter_mut().enumerate() {
            *v = if j % 3 == 0 { 1.0 } else { (j % 7) as f32 * 0.1 };
        }
        for (j, v) in x[3 * cols..].iter_mut().enumerate() {
            *v = j as f32 * 1e-2;
        }
        let tokens = [3i64, 5, 0, 1026];
        let o = TokenLogprobOptions::default();
        for kk in [1usize, 17, 64] {
            let mut lp = [0.0f32; 4];
            let (mut v, mut i) = (vec![0.0f32; 4 * kk], vec![0u32; 4 * kk]);
            k.token_logprobs(&x, &tokens, cols, &o,
                TokenLogprobOutputs::new(&mut lp).top_k(&mut v, &mut i)).unwrap();
            let (mut v2, mut i2) = (vec![0.0f32; 4 * kk], vec![0u32; 4 * kk]);
            r.token_logprobs(&x, &tokens, cols, &o,
                TokenLogprobOutputs::new(&mut lp).top_k(&mut v2, &mut i2)).unwrap();
            assert_eq!(i, i2, "{} k={kk}: indices", k.isa());
            for (a, b) in v.iter().zip(&v2) {
                assert!(a == b || (a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{} k={kk}: {a} vs {b}", k.isa());
            }
            // All equal: indices 0..k.
            assert!(i[..kk].iter().enumerate().all(|(q, &j)| j == q as u32), "{:?}", &i[..kk]);
        }
    },
}

per_tier! {
    // Found by the `shard` fuzz target: a NaN beside finite logits (the lanes' maximum skips
    // it) in a block the top-k scan skipped, so fewer than k candidates were found and the
    // rest was filled with -inf. A NaN row's top-k values are all NaN, on every tier.
    top_k_of_a_nan_row_is_nan => |k: &Kernels| {
        let mut x = vec![0.5f32; 64];
        x[40] = 1.998_377_3;
        x[56] = f32::NAN;
        for kk in [1usize, 4, 64] {
            let mut lp = [0.0f32];
            let (mut v, mut i) = (vec![0.0f32; kk], vec![0u32; kk]);
            k.token_logprobs(&x, &[0i64], 64, &TokenLogprobOptions::default(),
                TokenLogprobOutputs::new(&mut lp).top_k(&mut v, &mut i)).unwrap();
            assert!(lp[0].is_nan(), "{} k={kk}", k.isa());
            assert!(v.iter().all(|q| q.is_nan()), "{} k={kk}: {v:?}", k.isa());
        }
    },
}

#[test]
fn top_k_errors_and_special_rows() {
    let k = Kernels::best();
    let o = TokenLogprobOptions::default();
    let z = [0.0f32, f32::NAN, 1.0, 2.0, 3.0, 4.0];
    let mut lp = [0.0f32; 2];
    // k = 65 per row is too many; lengths not a multiple of the rows.
    for (n, m) in [(130usize, 130usize), (3, 3), (4, 3)] {
        let (mut v, mut i) = (vec![0.0f32; n], vec![0u32; m]);
        let e = k
            .token_logprobs(
                &z,
                &[0i64, 1],
                3,
                &o,
                TokenLogprobOutputs::new(&mut lp).top_k(&mut v, &mut i),
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidOption { name: "top_k", .. } | Error::LengthMismatch { .. }
            ),
            "{n} {m}: {e:?}"
        );
    }
    // A NaN row: NaN log-probabilities; a normal row beside it.
    let (mut v, mut i) = ([0.0f32; 4], [0u32; 4]);
    k.token_logprobs(
        &z,
        &[0i64, 1],
        3,
        &o,
        TokenLogprobOutputs::new(&mut lp).top_k(&mut v, &mut i),
    )
    .unwrap();
    assert!(v[0].is_nan() && v[1].is_nan(), "{v:?}");
    assert_eq!(&i[2..], &[2, 1]);
    let s = (2f64.exp() + 3f64.exp() + 4f64.exp()).ln();
    assert!((v[2] as f64 - (4.0 - s)).abs() < 1e-6 && (v[3] as f64 - (3.0 - s)).abs() < 1e-6);
}

#[test]
fn shard_of_nan_and_neg_inf_alone_is_nan() {
    // A shard whose logits are NaN and -inf only: the row is NaN, as unsharded (the lanes'
    // maxima can drop the NaN and look like a shard of no finite logit).
    for k in common::tiers() {
        let ninf = f32::NEG_INFINITY;
        let x = [1.0f32, 2.0, f32::NAN, ninf, f32::NAN, ninf, ninf, f32::NAN];
        let o = TokenLogprobOptions::default();
        let (lp, h, lse, dz) = sharded(
            k,
            &x,
            8,
            &[0i64],
            &o,
            &[(0, 2), (2, 8)],
            &[0, 1],
            false,
            TokenGrads {
                logp: Some(&[1.0]),
                entropy: None,
            },
        );
        assert!(
            lp[0].is_nan() && h[0].is_nan() && lse[0].is_nan(),
            "{}",
            k.isa()
        );
        assert!(dz.iter().all(|v| v.is_nan()), "{}: {dz:?}", k.isa());
        let mut whole = [0.0f32];
        k.token_logprobs(&x, &[0i64], 8, &o, TokenLogprobOutputs::new(&mut whole))
            .unwrap();
        assert!(whole[0].is_nan(), "{}", k.isa());
    }
}
